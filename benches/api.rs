//! Sessions API latency over real HTTP on loopback: the real application with 25,000 open
//! sessions (and 500,000 closed ones for the export), on SQLite and, when reachable, on
//! PostgreSQL. Prints p50/p99 for count, a list page (limit 50, sorted by acctinputoctets)
//! with and without a search, and get; then the export's time, rows/s and the process's peak
//! RSS growth.
//!
//! `cargo bench --bench api` (release). Knobs: `API_BENCH_ACTIVE` (25000),
//! `API_BENCH_EXPORT_ROWS` (500000), `API_BENCH_REQUESTS` (2000 per endpoint),
//! `RADACCTD_BENCH_DATABASE_URL` or `RADACCTD_TEST_DATABASE_URL` (PostgreSQL admin URL, as the
//! tests use).

#[allow(dead_code)]
mod support;

use std::time::Instant;

use radacctd::store::Store;
use support::{
    InProcessApi, api_bench_config, env_u64, open_migrated, rss_bytes, run_on_both_stores,
};

const T0: i64 = 1_778_572_800;

fn seed_sql(pg: bool, active: u64, closed: u64) -> String {
    if pg {
        format!(
            "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, framedipaddress, \
             callingstationid, acctstarttime, acctstoptime, acctupdatetime, acctinputoctets, acctoutputoctets, \
             acctsessiontime, acctterminatecause) \
             SELECT to_hex(g), 'b-' || g, 'user' || g || '@example.lb', '192.0.2.10'::inet, \
             ('10.64.0.0'::inet + g), 'AA:BB:CC:' || to_hex(g), to_timestamp({T0} + g), \
             CASE WHEN g > {active} THEN to_timestamp({T0} + g + 3600) END, to_timestamp({T0} + g + 300), \
             (g * 7919) % 1000003, (g * 104729) % 1000003, 300, \
             CASE WHEN g > {active} THEN 'User-Request' END \
             FROM generate_series(1::int8, {}) AS g",
            active + closed
        )
    } else {
        format!(
            "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {}) \
             INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, framedipaddress, \
             callingstationid, acctstarttime, acctstoptime, acctupdatetime, acctinputoctets, acctoutputoctets, \
             acctsessiontime, acctterminatecause) \
             SELECT printf('%x', x), 'b-' || x, 'user' || x || '@example.lb', '192.0.2.10', \
             '10.' || (64 + x / 65536) || '.' || ((x / 256) % 256) || '.' || (x % 256), \
             printf('AA:BB:CC:%06X', x), datetime({T0} + x, 'unixepoch'), \
             CASE WHEN x > {active} THEN datetime({T0} + x + 3600, 'unixepoch') END, \
             datetime({T0} + x + 300, 'unixepoch'), (x * 7919) % 1000003, (x * 104729) % 1000003, 300, \
             CASE WHEN x > {active} THEN 'User-Request' END FROM g",
            active + closed
        )
    }
}

async fn seed(url: &str, pg: bool, active: u64, closed: u64) -> anyhow::Result<()> {
    let store = open_migrated(url).await?;
    let sql = sqlx::AssertSqlSafe(seed_sql(pg, active, closed));
    match &store {
        Store::Postgres(s) => {
            sqlx::raw_sql(sql).execute(s.pool()).await?;
            sqlx::raw_sql("ANALYZE radacct").execute(s.pool()).await?;
        }
        Store::Sqlite(s) => {
            sqlx::raw_sql(sql).execute(s.pool()).await?;
        }
    }
    store.close().await;
    Ok(())
}

async fn run(label: &str, url: String, pg: bool) -> anyhow::Result<()> {
    let active = env_u64("API_BENCH_ACTIVE", 25_000);
    let closed = env_u64("API_BENCH_EXPORT_ROWS", 500_000);
    let requests = env_u64("API_BENCH_REQUESTS", 2_000);
    let t = Instant::now();
    seed(&url, pg, active, closed).await?;
    eprintln!(
        "[{label}] seeded {active} open + {closed} closed rows in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut config = api_bench_config(url)?;
    config.api.export_max_rows = closed.max(1);
    let app = InProcessApi::start(config).await?;
    let (base, token) = (&app.base, &app.token);
    let client = reqwest::Client::new();
    let get_id = active / 2;
    println!("\n{label}: {active} active sessions, {requests} sequential requests each (ms)");
    println!("{:<60} {:>8} {:>8}", "endpoint", "p50", "p99");
    for (name, path) in [
        ("count", "/api/sessions/count".to_owned()),
        (
            "list page (limit 50, sort acctinputoctets)",
            "/api/sessions?limit=50&sort=acctinputoctets".to_owned(),
        ),
        (
            "list page + search (username substring)",
            "/api/sessions?limit=50&sort=acctinputoctets&search=ser12".to_owned(),
        ),
        (
            "get (active, from the index)",
            format!("/api/sessions/{get_id}"),
        ),
        (
            "get (closed, from the database)",
            format!("/api/sessions/{}", active + 7),
        ),
        (
            "list page, status=closed (database)",
            "/api/sessions?status=closed&limit=50&sort=acctinputoctets".to_owned(),
        ),
    ] {
        // The database-path list sorts hundreds of thousands of closed rows per request.
        let n = if path.contains("status=closed") {
            requests.min(50)
        } else {
            requests
        };
        let (p50, p99) = app.measure(&client, 50, n, |_| path.clone()).await;
        println!("{name:<60} {p50:>8.3} {p99:>8.3}");
    }

    if closed > 0 {
        let rss0 = rss_bytes("self");
        let t = Instant::now();
        let mut r = client
            .get(format!("{base}/api/sessions/export?status=closed"))
            .bearer_auth(token)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "export: {}", r.status());
        let (mut bytes, mut lines, mut peak) = (0u64, 0u64, rss0);
        while let Some(chunk) = r.chunk().await? {
            bytes += chunk.len() as u64;
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            if lines % 50_000 < 500 {
                peak = peak.max(rss_bytes("self"));
            }
        }
        peak = peak.max(rss_bytes("self"));
        let secs = t.elapsed().as_secs_f64();
        println!(
            "export {} closed rows: {:.2} s, {:.0} rows/s, {:.1} MiB CSV, RSS growth {:.1} MiB (process peak {:.0} MiB)",
            lines.saturating_sub(1),
            secs,
            lines.saturating_sub(1) as f64 / secs,
            bytes as f64 / f64::from(1 << 20),
            peak.saturating_sub(rss0) as f64 / f64::from(1 << 20),
            peak as f64 / f64::from(1 << 20),
        );
    }
    app.stop().await
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and the figures need a release build and a quiet machine: only compile-check there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("api benchmark: run it with `cargo bench --bench api`");
        return;
    }
    run_on_both_stores("api", false, run);
}
