//! Usage API latency over real HTTP on loopback, the real application in this process, on
//! SQLite and, when reachable, on PostgreSQL: `GET /api/subscribers/{username}/usage` for a
//! month of hourly buckets (720), the same month by local day in Europe/Berlin, and
//! `GET /api/usage/top` for a billing month.
//!
//! The ledger is seeded with `USAGE_BENCH_SUBSCRIBERS` subscribers (100000), each with the
//! last `USAGE_BENCH_HOURS` hours (48) of November 2026, and every `USAGE_BENCH_FULL_EVERY`th
//! (100) with the whole month: the requests ask for those. `USAGE_BENCH_REQUESTS` (1000)
//! sequential requests per line; `RADACCTD_BENCH_DATABASE_URL` or `RADACCTD_TEST_DATABASE_URL`
//! (PostgreSQL admin URL).
//!
//! `cargo bench --bench usage` (release).

#[allow(dead_code)]
mod support;

use std::time::Instant;

use radacctd::config::{FairUsePolicy, PeriodKind};
use radacctd::store::Store;
use support::{InProcessApi, api_bench_config, env_u64, open_migrated, run_on_both_stores};

/// 2026-11-01T00:00:00Z.
const MONTH: i64 = 1_793_491_200;
const HOURS_IN_MONTH: u64 = 720;

/// The seed: every subscriber's last `hours` hours of the month, the whole month for every
/// `full_every`th, then the daily sums. Rows are inserted hour by hour, all subscribers of an
/// hour together, as ingest writes them: on PostgreSQL a subscriber's hours then lie on
/// different heap pages, as in production.
fn seed_sql(pg: bool, subscribers: u64, hours: u64, full_every: u64) -> Vec<String> {
    let first_recent = HOURS_IN_MONTH - hours;
    let user = |u: &str| format!("'user' || {u} || '@example.lb'");
    let value = |u: &str, h: &str, p: u64| format!("(({u} * {p} + {h} * 31) % 1000003) * 1000");
    if pg {
        vec![
            format!(
                "INSERT INTO usage_hourly (username, hour, input_octets, output_octets) \
                 SELECT {}, {MONTH} + h * 3600, {}, {} \
                 FROM generate_series(1::int8, {subscribers}) AS u, \
                 generate_series({first_recent}::int8, {}) AS h ORDER BY h, u",
                user("u"),
                value("u", "h", 7919),
                value("u", "h", 104_729),
                HOURS_IN_MONTH - 1
            ),
            format!(
                "INSERT INTO usage_hourly (username, hour, input_octets, output_octets) \
                 SELECT {}, {MONTH} + h * 3600, {}, {} \
                 FROM generate_series({full_every}::int8, {subscribers}, {full_every}) AS u, \
                 generate_series(0::int8, {}) AS h ORDER BY h, u",
                user("u"),
                value("u", "h", 7919),
                value("u", "h", 104_729),
                first_recent.saturating_sub(1)
            ),
            "INSERT INTO usage_daily (day, username, input_octets, output_octets) \
             SELECT hour - mod(hour, 86400), username, sum(input_octets), sum(output_octets) \
             FROM usage_hourly GROUP BY 1, 2"
                .into(),
            "ANALYZE usage_hourly".into(),
            "ANALYZE usage_daily".into(),
        ]
    } else {
        vec![
            format!(
                "WITH RECURSIVE u(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM u WHERE x < {subscribers}), \
                 h(y) AS (SELECT {first_recent} UNION ALL SELECT y + 1 FROM h WHERE y < {}) \
                 INSERT INTO usage_hourly (username, hour, input_octets, output_octets) \
                 SELECT {}, {MONTH} + y * 3600, {}, {} FROM h, u",
                HOURS_IN_MONTH - 1,
                user("x"),
                value("x", "y", 7919),
                value("x", "y", 104_729)
            ),
            format!(
                "WITH RECURSIVE u(x) AS (SELECT {full_every} UNION ALL SELECT x + {full_every} FROM u WHERE x + {full_every} <= {subscribers}), \
                 h(y) AS (SELECT 0 UNION ALL SELECT y + 1 FROM h WHERE y + 1 < {first_recent}) \
                 INSERT INTO usage_hourly (username, hour, input_octets, output_octets) \
                 SELECT {}, {MONTH} + y * 3600, {}, {} FROM h, u",
                user("x"),
                value("x", "y", 7919),
                value("x", "y", 104_729)
            ),
            "INSERT INTO usage_daily (day, username, input_octets, output_octets) \
             SELECT hour - (hour % 86400), username, sum(input_octets), sum(output_octets) \
             FROM usage_hourly GROUP BY 1, 2"
                .into(),
            "ANALYZE".into(),
        ]
    }
}

async fn seed(
    url: &str,
    pg: bool,
    subscribers: u64,
    hours: u64,
    full_every: u64,
) -> anyhow::Result<u64> {
    let store = open_migrated(url).await?;
    for sql in seed_sql(pg, subscribers, hours, full_every) {
        let sql = sqlx::AssertSqlSafe(sql);
        match &store {
            Store::Postgres(s) => {
                sqlx::raw_sql(sql).execute(s.pool()).await?;
            }
            Store::Sqlite(s) => {
                sqlx::raw_sql(sql).execute(s.pool()).await?;
            }
        }
    }
    let rows: i64 = match &store {
        Store::Postgres(s) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM usage_hourly")
                .fetch_one(s.pool())
                .await?
        }
        Store::Sqlite(s) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM usage_hourly")
                .fetch_one(s.pool())
                .await?
        }
    };
    store.close().await;
    Ok(rows as u64)
}

/// The path of request `i` of a line.
type PathOf = Box<dyn Fn(u64) -> String>;

async fn run(label: &str, url: String, pg: bool) -> anyhow::Result<()> {
    let subscribers = env_u64("USAGE_BENCH_SUBSCRIBERS", 100_000);
    let hours = env_u64("USAGE_BENCH_HOURS", 48).clamp(1, HOURS_IN_MONTH);
    let full_every = env_u64("USAGE_BENCH_FULL_EVERY", 100).max(1);
    let requests = env_u64("USAGE_BENCH_REQUESTS", 1_000);
    let t = Instant::now();
    let rows = seed(&url, pg, subscribers, hours, full_every).await?;
    eprintln!(
        "[{label}] seeded {rows} hourly rows ({subscribers} subscribers) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let mut config = api_bench_config(url)?;
    // A policy, so each answer also looks the subscriber's fair-use state up.
    config.usage.policies = vec![FairUsePolicy {
        name: "home".into(),
        classes: vec![],
        period: PeriodKind::Month,
        threshold_bytes: 500_000_000_000,
        rate: "2M/2M".into(),
        restore_rate: "100M/100M".into(),
    }];
    let app = InProcessApi::start(config).await?;
    let client = reqwest::Client::new();
    let full = (subscribers / full_every).max(1);
    // Spread over the subscribers with a whole month (a stride coprime with most counts).
    let user = move |i: u64| ((i * 7919) % full + 1) * full_every;
    println!(
        "\n{label}: {rows} hourly rows, {subscribers} subscribers, {requests} sequential requests per line (ms)"
    );
    println!("{:<64} {:>8} {:>8}", "request", "p50", "p99");
    let lines: [(&str, PathOf, u64); 3] = [
        (
            "usage, a month of hourly buckets (720, UTC)",
            Box::new(move |i| {
                format!(
                    "/api/subscribers/user{}@example.lb/usage?granularity=hour&from=2026-11-01&to=2026-12-01&tz=UTC",
                    user(i)
                )
            }),
            requests,
        ),
        (
            "usage, the same month by local day (Europe/Berlin)",
            Box::new(move |i| {
                format!(
                    "/api/subscribers/user{}@example.lb/usage?granularity=day&from=2026-11-01&to=2026-12-01&tz=Europe/Berlin",
                    user(i)
                )
            }),
            requests,
        ),
        (
            "top 10 of a billing month (last_month, UTC)",
            Box::new(|_| "/api/usage/top?period=last_month&limit=10&tz=UTC".to_owned()),
            requests.min(20),
        ),
    ];
    for (name, path, n) in lines {
        let (p50, p99) = app.measure(&client, 20, n, path).await;
        println!("{name:<64} {p50:>8.3} {p99:>8.3}");
    }
    app.stop().await
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it:
    // only compile-check there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("usage benchmark: run it with `cargo bench --bench usage`");
        return;
    }
    let skip_sqlite = std::env::var("USAGE_BENCH_SKIP_SQLITE").is_ok();
    run_on_both_stores("usage", skip_sqlite, run);
}
