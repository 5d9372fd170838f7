//! Housekeeping jobs at scale, on PostgreSQL (`cargo bench --bench jobs`):
//! 1. the stale sweeper closing 25,000 stale sessions among 1,000,000 open ones (and the index
//!    rebuild of those 1,000,000 at start-up);
//! 2. the archiver moving 1,000,000 eligible closed rows, while a NAS keeps sending
//!    Interim-Updates: the writer's response latency during the run.
//!
//! Knobs: `JOBS_BENCH_OPEN` (1000000), `JOBS_BENCH_STALE` (25000), `JOBS_BENCH_ARCHIVE`
//! (1000000). The database comes from `RADACCTD_TEST_DATABASE_URL` (an admin URL; default
//! `postgres://postgres@127.0.0.1:5432/postgres`); a fresh database is created and dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use radacctd::app::Application;
use radacctd::config::{Config, Secret};
use radacctd::jobs::{Archiver, JobsConfig, Sweeper};
use radacctd::radius::codec::{Code, Packet, PacketBuilder};
use radacctd::radius::dictionary as d;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

fn knob(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn with_db(admin: &str, db: &str) -> String {
    match admin.rsplit_once('/') {
        Some((base, rest)) => match rest.split_once('?') {
            Some((_, q)) => format!("{base}/{db}?{q}"),
            None => format!("{base}/{db}"),
        },
        None => admin.to_owned(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Interim-Updates for `sessions` sessions, one request at a time, until `stop`; returns the
/// response latencies in milliseconds.
async fn interim_client(target: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Vec<f64> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut lat = Vec::new();
    let mut id: u8 = 0;
    let mut n: u32 = 0;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0)
    };
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_add(1);
        id = id.wrapping_add(1);
        let mut b = PacketBuilder::new(Code::AccountingRequest, id);
        let user = format!("live{}@bench", n % 500);
        b.attr_u32(d::ACCT_STATUS_TYPE, d::STATUS_INTERIM_UPDATE)
            .expect("fits");
        b.attr(d::USER_NAME, user.as_bytes()).expect("fits");
        b.attr(d::ACCT_SESSION_ID, format!("{:08x}", n % 500).as_bytes())
            .expect("fits");
        b.attr_ipv4(d::NAS_IP_ADDRESS, [192, 0, 2, 2].into())
            .expect("fits");
        b.attr_u32(d::ACCT_SESSION_TIME, n).expect("fits");
        b.attr_u32(d::ACCT_INPUT_OCTETS, n).expect("fits");
        b.attr_u32(d::EVENT_TIMESTAMP, now()).expect("fits");
        let req = b.encode_request(b"testing123").expect("encodes");
        let started = Instant::now();
        sock.send_to(&req, target).await.expect("send");
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await {
            Ok(Ok((len, _))) if Packet::decode(&buf[..len]).is_ok() => {
                lat.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            _ => lat.push(5000.0),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lat
}

async fn run(admin: &str) -> anyhow::Result<()> {
    let open = knob("JOBS_BENCH_OPEN", 1_000_000);
    let stale = knob("JOBS_BENCH_STALE", 25_000);
    let archive = knob("JOBS_BENCH_ARCHIVE", 1_000_000);
    let name = format!("radacctd_bench_jobs_{}", std::process::id());
    let mut admin_conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin_conn)
        .await?;
    let url = with_db(admin, &name);
    let result = async {
        let mut config = Config::default();
        config.database.url = Secret::new(url.clone());
        config.radius.listen = "127.0.0.1:0".parse()?;
        config.api.listen = "127.0.0.1:0".parse()?;
        config.metrics.enabled = false;
        config.journal.enabled = false;
        config.jobs.sweep_enabled = false;
        config.jobs.archive_enabled = false;
        config.jobs.ensure_indexes = false;
        config.radius.clients = vec![radacctd::app::quickstart_client()];

        // Schema and EnsureIndexes first, then the rows.
        let store = radacctd::app::open_store(&config, None).await?;
        store.migrate().await?;
        store.ensure_indexes().await?;
        let radacctd::store::Store::Postgres(pg) = &store else {
            anyhow::bail!("PostgreSQL only");
        };
        let t = Instant::now();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, \
             acctupdatetime, acctsessiontime, acctinputoctets, acctoutputoctets, framedipaddress, callingstationid) \
             SELECT lpad(to_hex(g), 8, '0'), md5('open' || g), 'user' || g || '@bench', '192.0.2.1', \
             now() - interval '3 hours', \
             CASE WHEN g <= {stale} THEN now() - interval '1 hour' ELSE now() - interval '1 minute' END, \
             3600, g, g, '100.64.0.0'::inet + g, 'AA:BB:CC:DD:EE:FF' FROM generate_series(1, {open}) g; \
             INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, \
             acctupdatetime, acctstoptime, acctsessiontime, acctinputoctets, acctoutputoctets, acctterminatecause) \
             SELECT lpad(to_hex(g), 8, '0'), md5('old' || g), 'user' || g || '@bench', '192.0.2.1', \
             now() - interval '100 days' - interval '1 hour', now() - interval '100 days', \
             now() - interval '100 days', 3600, g, g, 'User-Request' FROM generate_series(1, {archive}) g; \
             ANALYZE radacct;"
        )))
        .execute(pg.pool())
        .await?;
        println!(
            "seeded {open} open ({stale} stale) and {archive} archivable closed rows in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        store.close().await;

        let t = Instant::now();
        let app = Application::build(config).await?;
        println!(
            "start-up with {} open sessions (migrations + index rebuild): {:.2} s",
            app.index().len(),
            t.elapsed().as_secs_f64()
        );
        let target = app.radius_addr();
        let stats = app.stats();
        let ingest = app.ingest();
        let store = app.store();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));

        let jobs = JobsConfig::default();
        let sweeper = Sweeper::new(store.clone(), ingest, jobs.clone(), stats.clone());
        let t = Instant::now();
        let report = sweeper.run_once().await?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "sweep: closed {} of {} stale among {open} open in {secs:.2} s ({:.0} rows/s; includes the online-flag sync and the index reconciliation)",
            report.closed,
            report.candidates,
            report.closed as f64 / secs
        );
        drop(sweeper);

        // Baseline latency, then the same client while the archiver runs.
        let stop = Arc::new(AtomicBool::new(false));
        let client = tokio::spawn(interim_client(target, stop.clone()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.store(true, Ordering::Relaxed);
        let mut base = client.await?;
        base.sort_by(f64::total_cmp);

        let stop = Arc::new(AtomicBool::new(false));
        let client = tokio::spawn(interim_client(target, stop.clone()));
        let archiver = Archiver::new(store.clone(), jobs, stats.clone());
        let t = Instant::now();
        let report = archiver.run_once().await?;
        let secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let mut during = client.await?;
        during.sort_by(f64::total_cmp);
        println!(
            "archive: moved {} rows in {} batches in {secs:.1} s ({:.0} rows/s)",
            report.moved,
            report.batches,
            report.moved as f64 / secs
        );
        println!(
            "ingest latency (Interim-Update round trip, ms)  p50      p99      max     n\n  \
             idle                                      {:>7.2} {:>8.2} {:>8.2} {:>6}\n  \
             while the archiver runs                   {:>7.2} {:>8.2} {:>8.2} {:>6}",
            percentile(&base, 0.5),
            percentile(&base, 0.99),
            base.last().copied().unwrap_or(f64::NAN),
            base.len(),
            percentile(&during, 0.5),
            percentile(&during, 0.99),
            during.last().copied().unwrap_or(f64::NAN),
            during.len()
        );
        shutdown.cancel();
        task.await??;
        anyhow::Ok(())
    }
    .await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin_conn)
    .await?;
    result
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it:
    // only compile-check there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("jobs benchmark: run it with `cargo bench --bench jobs`");
        return Ok(());
    }
    let admin = std::env::var("RADACCTD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(&admin))
}
