//! Support code the benchmarks share: knobs from the environment, latency percentiles, a fresh
//! PostgreSQL database per run, CPU and memory readings from /proc, and the application in this
//! process behind its API.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use radacctd::api::auth::{Claims, Role, SESSIONS_VIEW, SigningKey, issue_token};
use radacctd::app::Application;
use radacctd::clock::now_secs;
use radacctd::config::{Config, Secret};
use radacctd::store::{Store, StoreOptions};
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

/// A numeric knob from the environment, `default` when it is unset or not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` quantile (0 to 1) of sorted latencies, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// Command lines.

/// The store a benchmark runs on (`--store pg|sqlite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Postgres,
    Sqlite,
}

impl StoreKind {
    /// The value of `--store`.
    pub fn parse(value: &str) -> anyhow::Result<StoreKind> {
        match value {
            "pg" | "postgres" | "postgresql" => Ok(StoreKind::Postgres),
            "sqlite" => Ok(StoreKind::Sqlite),
            other => anyhow::bail!("--store {other}: pg or sqlite"),
        }
    }
}

/// Reads the command line's `--flag value` and `--flag=value` arguments: `flag(name, value)`
/// takes the benchmark's own (calling `value()` for the value) and returns whether it knew the
/// flag. `--bench` (which `cargo bench` passes to every benchmark binary) and name filters
/// (`cargo bench -- load`: nothing to filter) are passed over; `-h`/`--help` prints `usage`
/// and exits; anything else is an error.
pub fn parse_flags(
    usage: &str,
    mut flag: impl FnMut(&str, &mut dyn FnMut() -> anyhow::Result<String>) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> anyhow::Result<String> {
            inline
                .clone()
                .or_else(|| it.next())
                .with_context(|| format!("{name} needs a value\nusage: {usage}"))
        };
        match name.as_str() {
            "--bench" => {}
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other if !other.starts_with('-') => {}
            other => {
                if !flag(other, &mut value)? {
                    anyhow::bail!("unknown argument {other}\nusage: {usage}");
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL.

/// The PostgreSQL admin URL runs create their databases from: `RADACCTD_BENCH_DATABASE_URL`,
/// else `RADACCTD_TEST_DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn admin_url() -> String {
    std::env::var("RADACCTD_BENCH_DATABASE_URL")
        .or_else(|_| std::env::var("RADACCTD_TEST_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Replaces the database name of a PostgreSQL URL (keeps any `?host=` parameter).
pub fn pg_url_with_db(admin: &str, db: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| i + scheme_end);
    let mut url = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// Runs one statement (`CREATE DATABASE`, `DROP DATABASE`) on a connection to [`admin_url`].
pub async fn pg_admin(sql: String) -> anyhow::Result<()> {
    let admin = admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {admin}"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await?;
    let _ = conn.close().await;
    Ok(())
}

/// Runs `run` with the URL of a fresh PostgreSQL database `name` (made from [`admin_url`]),
/// dropped afterwards whatever `run` returned.
pub async fn with_pg_database<F, Fut>(name: &str, run: F) -> anyhow::Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    pg_admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    pg_admin(format!("CREATE DATABASE {name}")).await?;
    let result = run(pg_url_with_db(&admin_url(), name)).await;
    let _ = pg_admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    result
}

/// A store of the benchmark's own on `url`, beside the daemon's: two connections.
pub async fn open_store(url: &str, acquire_timeout: Duration) -> anyhow::Result<Store> {
    Ok(Store::open(
        url,
        &StoreOptions {
            max_connections: 2,
            acquire_timeout,
            ..Default::default()
        },
    )
    .await?)
}

/// A store on `url` for seeding (a generous acquire timeout), migrated.
pub async fn open_migrated(url: &str) -> anyhow::Result<Store> {
    let store = open_store(url, Duration::from_secs(30)).await?;
    store.migrate().await?;
    Ok(store)
}

/// Runs `run(label, url, pg)` on a temporary SQLite file (unless `skip_sqlite`) and then, on a
/// database `radacctd_bench_<name>_<pid>`, on PostgreSQL, in a runtime of its own; a run that
/// fails is reported and the next one still runs.
pub fn run_on_both_stores<F, Fut>(name: &str, skip_sqlite: bool, run: F)
where
    F: Fn(&'static str, String, bool) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
        if !skip_sqlite && let Err(e) = run("SQLite", sqlite, false).await {
            eprintln!("SQLite run failed: {e:#}");
        }
        let db = format!("radacctd_bench_{name}_{}", std::process::id());
        if let Err(e) = with_pg_database(&db, |url| run("PostgreSQL", url, true)).await {
            eprintln!("PostgreSQL run failed: {e:#}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// CPU and memory from /proc (USER_HZ is 100 on Linux).

/// Clock ticks per second of the /proc CPU counters.
pub const TICKS_PER_SEC: f64 = 100.0;

/// utime+stime and cutime+cstime of a /proc/<pid>/stat, in ticks.
pub fn proc_ticks(stat_path: &Path) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // rest[0] is field 3 (state); utime is field 14.
    let get = |field: usize| f.get(field - 3).copied().unwrap_or(0);
    Some((get(14) + get(15), get(16) + get(17)))
}

/// CPU ticks of every process named `postgres` on the machine.
pub fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .filter_map(|e| proc_ticks(&e.path().join("stat")).map(|t| t.0))
        .sum()
}

/// The resident memory of a process (`self` or a pid), in bytes; 0 when unreadable.
pub fn rss_bytes(process: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

// ---------------------------------------------------------------------------------------------
// The API benchmarks' application, in this process.

/// The JWT secret of [`api_bench_config`].
pub const API_JWT_SECRET: &str = "bench-secret-0123456789abcdef-0123456789";

/// The configuration the API benchmarks run the application with: the database at `url`,
/// listeners on loopback port 0, the rate limit out of the way, no journal or metrics, and the
/// sweeper and archiver off (seeded rows are old: they would close or move them mid-run).
pub fn api_bench_config(url: String) -> anyhow::Result<Config> {
    let mut config = Config::default();
    config.database.url = Secret::new(url);
    config.radius.listen = "127.0.0.1:0".parse()?;
    config.api.listen = "127.0.0.1:0".parse()?;
    config.api.jwt_secret = Secret::new(API_JWT_SECRET);
    config.api.rate_limit_burst = 10_000_000;
    config.journal.enabled = false;
    config.metrics.enabled = false;
    config.jobs.sweep_enabled = false;
    config.jobs.archive_enabled = false;
    Ok(config)
}

/// The application running in this process, with an admin token (`sessions.view`) for its API.
#[derive(Debug)]
pub struct InProcessApi {
    /// `http://<API address>`.
    pub base: String,
    pub token: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessApi {
    pub async fn start(config: Config) -> anyhow::Result<InProcessApi> {
        let app = Application::build(config.clone()).await?;
        let base = format!("http://{}", app.api_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let token = issue_token(
            &config.api,
            &Claims {
                sub: None,
                exp: now_secs() as u64 + 3600,
                role: Role::Admin,
                reseller_id: None,
                permissions: vec![SESSIONS_VIEW.into()],
            },
            SigningKey::ConfiguredSecret,
        )?;
        Ok(InProcessApi {
            base,
            token,
            shutdown,
            task,
        })
    }

    /// Stops the application and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }

    /// p50 and p99 (ms) of `n` sequential GETs, request `i` to `path(i)`, after up to `warmup`
    /// unmeasured ones that must answer 200.
    pub async fn measure(
        &self,
        client: &reqwest::Client,
        warmup: u64,
        n: u64,
        path: impl Fn(u64) -> String,
    ) -> (f64, f64) {
        for i in 0..n.min(warmup) {
            let url = format!("{}{}", self.base, path(i));
            let r = client
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("request");
            assert_eq!(r.status().as_u16(), 200, "{url}");
            let _ = r.bytes().await;
        }
        let mut times = Vec::with_capacity(n as usize);
        for i in 0..n {
            let url = format!("{}{}", self.base, path(i));
            let t = Instant::now();
            let r = client
                .get(url)
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("request");
            let _ = r.bytes().await.expect("body");
            times.push(t.elapsed());
        }
        times.sort();
        (percentile_ms(&times, 0.5), percentile_ms(&times, 0.99))
    }
}
