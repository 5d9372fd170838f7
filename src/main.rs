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
    /// Print an API bearer token signed with `api.jwt_secret` (or a private key given by --key);
    /// without a config file, with the secret the quick start keeps beside the SQLite file.
    Token(TokenArgs),
    /// Close stale sessions now (one sweep), then sync `subscribers.is_online`.
    Sweep {
        /// Print what would be closed (count and the first rows); change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move old closed sessions to `radacct_archive` now (one run).
    Archive {
        /// Print what would be moved (count and the first rows); change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the journal's entries, or retry the entries replay rejected (safe while the daemon
    /// runs: the live journal file is never changed).
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
}

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// Print the journal's entries (key, kind, time) and a count.
    Inspect {
        /// Print the entries moved to `<journal>.rejected` instead, with their errors.
        #[arg(long)]
        rejected: bool,
    },
    /// Apply the entries of `<journal>.rejected` to the database again, one by one; those that
    /// succeed leave the file, the others stay with their new error. Exits 1 if any remain.
    Retry,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// `admin` (sees every reseller) or `reseller` (sees its subtree). Required with a config
    /// file; without one (quick start) it defaults to `admin`.
    #[arg(long, value_parser = ["admin", "reseller"])]
    role: Option<String>,
    /// The reseller's id (`resellers.id`); required with `--role reseller`.
    #[arg(long)]
    reseller_id: Option<i64>,
    /// A permission such as `sessions.view`; repeat, or separate with commas. Without a config
    /// file and without --role, `sessions.view` when none is given.
    #[arg(long = "perm")]
    permissions: Vec<String>,
    /// Lifetime: seconds, or with a unit (`15m`, `12h`, `7d`).
    #[arg(long, default_value = "1h", value_parser = radacctd::api::auth::parse_ttl)]
    ttl: u64,
    /// The `sub` claim.
    #[arg(long)]
    sub: Option<String>,
    /// A PEM private key to sign with instead of the HS256 secret (with --alg RS256 or ES256).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The algorithm for --key.
    #[arg(long, value_parser = ["RS256", "ES256"], requires = "key")]
    alg: Option<String>,
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
        radacctd::outln!("configuration OK");
        radacctd::outln!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    if let Command::Token(args) = &cli.command {
        return token(config, args, quickstart);
    }
    if quickstart {
        tracing::warn!(
            "no config file: accepting accounting from 127.0.0.1 with secret \"testing123\" (quick start)"
        );
    }
    if quickstart && matches!(cli.command, Command::Serve) {
        use radacctd::app::{QuickstartApi, quickstart_api_secret};
        match quickstart_api_secret(&mut config) {
            Ok(QuickstartApi::Generated { path, created }) => tracing::warn!(
                "QUICK START: no config file, so API tokens are signed with the secret {} in {} \
                 (keep it private; configure api.jwt_secret for real use). Get a token with: \
                 radacctd token   (an admin token with sessions.view, valid 1 h), then \
                 curl -H \"Authorization: Bearer $TOKEN\" http://{}/api/sessions",
                if created { "just generated" } else { "kept" },
                path.display(),
                config.api.listen
            ),
            Ok(QuickstartApi::NotLoopback) => tracing::warn!(
                "no config file and api.listen {} is not a loopback address: no quick-start API \
                 secret is generated, so every API request is refused; configure api.jwt_secret",
                config.api.listen
            ),
            Ok(QuickstartApi::Configured) => {}
            Err(e) => {
                eprintln!("radacctd: quick-start API secret: {e:#}");
                return ExitCode::FAILURE;
            }
        }
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
            Command::Migrate => radacctd::cli::migrate(config).await,
            Command::Sweep { dry_run } => radacctd::cli::sweep(config, dry_run).await,
            Command::Archive { dry_run } => radacctd::cli::archive(config, dry_run).await,
            Command::Journal { command } => {
                use radacctd::cli::journal::{JournalAction, journal_command};
                let action = match command {
                    JournalCommand::Inspect { rejected } => JournalAction::Inspect { rejected },
                    JournalCommand::Retry => JournalAction::Retry,
                };
                journal_command(config, action).await
            }
            Command::CheckConfig | Command::Token(_) => Ok(()),
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

fn token(mut config: Config, args: &TokenArgs, quickstart: bool) -> ExitCode {
    use radacctd::api::auth::{Role, TokenRequest, token_for};
    use radacctd::app::{QuickstartApi, quickstart_api_secret};
    use radacctd::config::JwtAlgorithm;
    let mut permissions = args.permissions.clone();
    let role = match args.role.as_deref() {
        Some("admin") => Role::Admin,
        Some(_) => Role::Reseller,
        None if quickstart => {
            if permissions.is_empty() {
                permissions.push("sessions.view".into());
            }
            Role::Admin
        }
        None => {
            eprintln!("radacctd: token needs --role admin or --role reseller");
            return ExitCode::from(2);
        }
    };
    if quickstart && args.key.is_none() {
        match quickstart_api_secret(&mut config) {
            Ok(QuickstartApi::Generated { .. } | QuickstartApi::Configured) => {}
            Ok(QuickstartApi::NotLoopback) => {
                eprintln!(
                    "radacctd: no config file and api.listen {} is not a loopback address: the \
                     quick start has no API secret there; configure api.jwt_secret",
                    config.api.listen
                );
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("radacctd: quick-start API secret: {e:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let key = args.key.clone().map(|path| {
        let alg = match args.alg.as_deref() {
            Some("ES256") => JwtAlgorithm::ES256,
            Some("RS256") => JwtAlgorithm::RS256,
            _ => config.api.jwt_algorithm,
        };
        (path, alg)
    });
    let request = TokenRequest {
        role,
        reseller_id: args.reseller_id,
        permissions,
        ttl_secs: args.ttl,
        subject: args.sub.clone(),
        key,
    };
    match token_for(&config.api, &request) {
        Ok(t) => {
            radacctd::outln!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("radacctd: {e:#}");
            ExitCode::from(2)
        }
    }
}
