//! The `radacctd` command: parses the command line and calls into the library, nothing else.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser as _};
use radacctd::config::{Config, LogFormat};

#[path = "cli/args.rs"]
mod args;

/// jemalloc rather than glibc's malloc: the daemon allocates and frees on every packet across
/// the runtime's threads, where glibc's arenas spent about 29 % of its CPU (BENCHMARKS.md,
/// "Where the time goes"); jemalloc takes about a fifth less CPU per packet without adding to
/// the answer latency.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use args::{Cli, Command, JournalCommand, TokenArgs};

/// `radacctd.1`, rendered from [`Cli`] by `build.rs`.
const MAN_PAGE: &str = include_str!(concat!(env!("OUT_DIR"), "/radacctd.1"));

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Completions { shell } => return completions(shell),
        Command::Man => {
            radacctd::outln!("{}", MAN_PAGE.trim_end());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
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
        for hook in &config.events.webhooks {
            if let Err(e) = radacctd::stream::webhooks::check(hook) {
                eprintln!(
                    "radacctd: invalid configuration: events.webhooks {:?}: {e}",
                    hook.name
                );
                return ExitCode::from(2);
            }
        }
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
            Ok(QuickstartApi::NotSqlite) => tracing::warn!(
                "no config file and database.url is not a SQLite file: no quick-start API secret \
                 is generated, so every API request is refused; configure api.jwt_secret"
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
            Command::Reconcile { nas, dry_run } => {
                radacctd::cli::reconcile(config, nas, dry_run).await
            }
            Command::Archive { dry_run } => radacctd::cli::archive(config, dry_run).await,
            Command::Attribution {
                ip,
                at,
                window,
                limit,
                explain,
            } => {
                let ask = radacctd::cli::AttributionAsk {
                    ip,
                    at,
                    window,
                    limit,
                    explain,
                };
                radacctd::cli::attribution(config, &ask).await
            }
            Command::Journal { command } => {
                use radacctd::cli::journal::{JournalAction, journal_command};
                let action = match command {
                    JournalCommand::Inspect { rejected } => JournalAction::Inspect { rejected },
                    JournalCommand::Retry => JournalAction::Retry,
                };
                journal_command(config, action).await
            }
            Command::CheckConfig
            | Command::Token(_)
            | Command::Completions { .. }
            | Command::Man => Ok(()),
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
    use tracing_subscriber::fmt::format;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.log.level.clone()));
    let node = config.node.resolved_name();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder
            .event_format(WithNode {
                node,
                inner: format().json(),
            })
            .init(),
        LogFormat::Text => builder
            .event_format(WithNode {
                node,
                inner: format(),
            })
            .init(),
    }
}

/// Every log line names the node (`node.name`): a `"node"` field first in JSON, ` node=…` at
/// the end of a text line, so that the logs of several nodes can be told apart when merged.
struct WithNode<F> {
    node: String,
    inner: F,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithNode<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        let body = line.strip_suffix('\n').unwrap_or(&line);
        match body.strip_prefix('{') {
            Some(fields) => {
                let node = serde_json::to_string(&self.node).map_err(|_| std::fmt::Error)?;
                writeln!(writer, "{{\"node\":{node},{fields}")
            }
            None => writeln!(writer, "{body} node={}", self.node),
        }
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
            Ok(QuickstartApi::NotSqlite) => {
                eprintln!(
                    "radacctd: no config file and database.url is not a SQLite file: the quick \
                     start keeps no API secret; configure api.jwt_secret"
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

/// `radacctd completions SHELL`: the completion script on standard output.
fn completions(shell: &str) -> ExitCode {
    use clap_complete::Shell;
    let shell = match shell {
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        _ => Shell::Bash,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "radacctd", &mut out);
    radacctd::outln!("{}", String::from_utf8_lossy(&out).trim_end());
    ExitCode::SUCCESS
}
