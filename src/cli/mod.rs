//! The one-shot commands (`migrate`, `sweep`, `reconcile`, `archive`, `journal …`): each opens what it
//! needs, does one thing, prints a report on standard output and returns. `main.rs` parses the
//! command line and calls these; the daemon itself is [`crate::app`].

pub mod journal;

use std::sync::Arc;

use anyhow::Context as _;

use crate::app::{explain_migration_error, open_store, rebuild_index, writer_options};
use crate::config::Config;
use crate::disconnect::Disconnector;
use crate::ingest::{self, Writer};
use crate::jobs::{Archiver, RouterReconciler, RouterReport, Sweeper};
use crate::metrics::Stats;
use crate::sessions::SessionIndex;

/// Prints a line on standard output for a one-shot command. A reader that went away
/// (`radacctd check-config | head -1`) ends the process quietly with status 0, as SIGPIPE
/// would, instead of a panic; any other write error is reported and exits 1.
pub fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("radacctd: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` for one-shot commands, through [`print_line`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::print_line(format_args!($($arg)*))
    };
}

/// `radacctd migrate`: applies pending migrations and exits.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config, None).await?;
    store
        .prepare(config.database.radacct_fillfactor)
        .await
        .map_err(explain_migration_error)?;
    crate::outln!("migrations applied ({})", store.kind());
    store.close().await;
    Ok(())
}

/// `radacctd sweep [--dry-run]`: one sweep now, through a writer of its own (the running
/// daemon's index catches up at its next reconciliation with SQL).
pub async fn sweep(config: Config, dry_run: bool) -> anyhow::Result<()> {
    let store = open_store(&config, None).await?;
    let stats = Arc::new(Stats::default());
    let (tx, rx) = ingest::queue(4096);
    let sweeper = Sweeper::new(store.clone(), tx, config.jobs.clone(), stats.clone());
    if dry_run {
        let rows = sweeper.dry_run(config.jobs.sweep_limit).await?;
        crate::outln!(
            "dry run: {} open session(s) with no update for {} s would be closed as NAS-Idle-Timeout",
            rows.len(),
            config.jobs.stale_after_secs
        );
        for r in rows.iter().take(20) {
            crate::outln!(
                "  radacctid={} username={} nas={} last_seen={}",
                r.radacctid,
                r.username.as_deref().unwrap_or(""),
                r.nasipaddress,
                r.last_seen.map(format_time).unwrap_or_default()
            );
        }
        store.close().await;
        return Ok(());
    }
    let writer = Writer::new(
        store.clone(),
        Arc::new(SessionIndex::new()),
        Arc::new(()),
        None,
        stats,
        writer_options(&config),
    );
    let writer = tokio::spawn(writer.run(rx));
    let report = sweeper.run_once().await;
    drop(sweeper);
    let _ = writer.await;
    store.close().await;
    let report = report?;
    crate::outln!(
        "closed {} of {} stale session(s); marked {} subscriber(s) online, {} offline",
        report.closed,
        report.candidates,
        report.marked_online,
        report.marked_offline
    );
    Ok(())
}

/// `radacctd reconcile --nas ID [--dry-run]`: one reconciliation with that router now, against
/// the open rows in the database (loaded as the daemon's index would be), through a writer of
/// its own; the running daemon's index catches up at its next reconciliation with SQL.
pub async fn reconcile(config: Config, nas_id: i64, dry_run: bool) -> anyhow::Result<()> {
    let store = open_store(&config, None).await?;
    let stats = Arc::new(Stats::default());
    let index = Arc::new(SessionIndex::new());
    rebuild_index(&store, &index, &()).await?;
    let (tx, rx) = ingest::queue(4096);
    let disconnect = crate::config::DisconnectConfig {
        coa_sockets: 1,
        ..config.disconnect.clone()
    };
    let disconnector = Disconnector::new(disconnect, &tx, index.clone(), stats.clone())
        .await
        .context("binding a CoA socket")?;
    disconnector.reload_nas(&store).await?;
    let reconciler = RouterReconciler::new(
        disconnector,
        index.clone(),
        tx,
        &stats,
        config.reconcile.clone(),
    );
    let routers: Vec<_> = reconciler
        .routers()
        .into_iter()
        .filter(|r| r.nas_id == nas_id)
        .collect();
    if routers.is_empty() {
        store.close().await;
        anyhow::bail!(
            "nas {nas_id}: no such nas row with RouterOS API credentials (api_username, api_password) and an address"
        );
    }
    let writer = Writer::new(
        store.clone(),
        index,
        Arc::new(()),
        None,
        stats,
        writer_options(&config),
    );
    let writer = tokio::spawn(writer.run(rx));
    let mut failed = None;
    for router in &routers {
        match reconciler.reconcile(router, dry_run).await {
            Ok(report) => print_report(&report),
            Err(e) => failed = Some(e.context(format!("router {} ({})", router.name, router.addr))),
        }
    }
    drop(reconciler);
    let _ = writer.await;
    store.close().await;
    failed.map_or(Ok(()), Err)
}

fn print_report(r: &RouterReport) {
    let f = &r.findings;
    crate::outln!(
        "{}nas {} {} ({}): {} session(s) on the router, {} open here, {} matched",
        if r.dry_run { "dry run: " } else { "" },
        r.nas_id,
        r.name,
        r.nas_ip,
        r.router_sessions,
        f.open,
        f.matched
    );
    let verb = if r.dry_run {
        "would be closed"
    } else {
        "closed"
    };
    crate::outln!(
        "ghosts ({}, {} {verb} as Lost-Service):",
        f.ghosts.len(),
        if r.dry_run {
            f.ghosts.len() as u64
        } else {
            r.ghosts_closed
        }
    );
    for g in &f.ghosts {
        crate::outln!(
            "  radacctid={} username={} acctsessionid={} last_seen={} stop_time={}",
            g.radacctid,
            g.username,
            g.acctsessionid,
            g.last_seen.map(format_time).unwrap_or_default(),
            format_time(g.stop_time)
        );
    }
    crate::outln!("zombies ({}):", f.zombie_count);
    for z in &f.zombies {
        crate::outln!(
            "  name={} session-id={} address={} caller-id={} uptime={}s",
            z.name.as_deref().unwrap_or(""),
            z.session_id.as_deref().unwrap_or(""),
            z.address.as_deref().unwrap_or(""),
            z.caller_id.as_deref().unwrap_or(""),
            z.uptime_secs.unwrap_or(0)
        );
    }
    crate::outln!("mismatches ({}):", f.mismatch_count);
    for m in &f.mismatches {
        let diff = |d: &Option<crate::nas::compare::Difference>| {
            d.as_ref()
                .map(|d| format!("{} here, {} on the router", d.ours, d.router))
                .unwrap_or_else(|| "same".into())
        };
        crate::outln!(
            "  username={} acctsessionid={} framed_ip: {}; mac: {}",
            m.username,
            m.acctsessionid,
            diff(&m.framed_ip),
            diff(&m.mac)
        );
    }
}

/// `radacctd archive [--dry-run]`: one archiver run now.
pub async fn archive(config: Config, dry_run: bool) -> anyhow::Result<()> {
    let store = open_store(&config, None).await?;
    let archiver = Archiver::new(
        store.clone(),
        config.jobs.clone(),
        Arc::new(Stats::default()),
    );
    let result = if dry_run {
        archiver.dry_run(20).await.map(|(count, rows)| {
            crate::outln!(
                "dry run: {count} closed session(s) stopped more than {} days ago would move to radacct_archive",
                config.jobs.archive_after_days
            );
            for r in rows {
                crate::outln!(
                    "  radacctid={} username={} stopped={}",
                    r.radacctid,
                    r.username.as_deref().unwrap_or(""),
                    r.acctstoptime.map(format_time).unwrap_or_default()
                );
            }
        })
    } else {
        archiver.run_once().await.map(|r| {
            crate::outln!(
                "moved {} session(s) to radacct_archive in {} batch(es)",
                r.moved,
                r.batches
            );
        })
    };
    store.close().await;
    result
}

/// What `radacctd attribution` was asked.
#[derive(Debug, Clone)]
pub struct AttributionAsk {
    pub ip: String,
    pub at: String,
    pub window: u64,
    pub limit: u64,
    /// Print the database's plan instead of the answer.
    pub explain: bool,
}

/// `radacctd attribution --ip ADDR --at TIME [--window S] [--limit N] [--explain]`: the answer
/// of `GET /api/attribution` for an operator (every session, whatever its reseller), printed as
/// JSON, and the query's row in the attribution audit (actor `cli:<user>`). With `--explain`,
/// the plan instead, and no audit row (no session is shown).
pub async fn attribution(config: Config, ask: &AttributionAsk) -> anyhow::Result<()> {
    use crate::api::attribution::{Asker, answer};
    use crate::api::params::{AttributionParams, Query};
    use crate::sessions::attribution::{AttributionQuery, Window};
    use crate::sessions::filter::Scope;

    let pairs = [
        ("ip", ask.ip.clone()),
        ("at", ask.at.clone()),
        ("window", ask.window.to_string()),
        ("limit", ask.limit.to_string()),
    ];
    let query = Query::from_pairs(pairs.map(|(k, v)| (k.to_owned(), v)).to_vec());
    let p = AttributionParams::parse(&query).map_err(|e| anyhow::anyhow!("{e}"))?;
    let q = AttributionQuery {
        target: p.ip,
        window: Window::around(p.at, p.window),
        scope: Scope::All,
        limit: p.limit,
    };
    /// What is printed.
    enum Output {
        Plan(Vec<String>),
        Answer(serde_json::Value),
    }
    let store = open_store(&config, None).await?;
    let nas = crate::api::scope::ScopeCache::new();
    let result = async {
        if ask.explain {
            return Ok(Output::Plan(store.explain_attribution(&q).await?));
        }
        nas.refresh(&store, &SessionIndex::new())
            .await
            .context("reading the nas table")?;
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let asker = Asker {
            actor: Some(format!("cli:{user}")),
            role: "cli".into(),
            reseller_id: None,
            via: "cli".into(),
            node: None,
        };
        answer(&store, nas.nas_names(), &q, p.at, p.window, asker)
            .await
            .map(Output::Answer)
            .context("attribution query (is the database migrated? radacctd migrate)")
    }
    .await;
    store.close().await;
    match result? {
        Output::Plan(lines) => {
            for line in lines {
                crate::outln!("{line}");
            }
        }
        Output::Answer(doc) => crate::outln!("{}", serde_json::to_string_pretty(&doc)?),
    }
    Ok(())
}

fn format_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}
