//! The `radacctd` command: parses the command line and calls into the library, nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use radacctd::config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "radacctd",
    version,
    about = "RADIUS accounting daemon for ISPs"
)]
struct Cli {
    /// Configuration file (TOML). Without one, defaults apply: SQLite `radacctd.db`, RADIUS on
    /// 0.0.0.0:1813 and a loopback client 127.0.0.1 with secret `testing123`.
    #[arg(long, short, global = true, env = "RADACCTD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check the configuration and explain any problem.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("radacctd: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let quickstart = cli.config.is_none() && config.radius.clients.is_empty();
    if quickstart {
        config
            .radius
            .clients
            .push(radacctd::app::quickstart_client());
    }
    if let Command::CheckConfig = cli.command {
        println!("configuration OK");
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    if quickstart {
        tracing::warn!(
            "no config file: accepting accounting from 127.0.0.1 with secret \"testing123\" (quick start)"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("radacctd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => radacctd::app::serve(config).await,
            Command::Migrate => radacctd::app::migrate(config).await,
            Command::CheckConfig => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("radacctd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.log.level.clone()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
