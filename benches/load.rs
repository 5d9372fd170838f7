//! End-to-end load benchmark: the real daemon, in this process, on a fresh PostgreSQL database
//! (or a temporary SQLite file), driven over UDP by the `radacctd-bench` load generator.
//!
//! For every window: N sessions × (Start, Interim-Update, Stop) on a fresh database, every
//! session's final row verified by `radacctd-bench --verify-db`. Then a steady phase on another
//! fresh database: N sessions started and kept open, Interim-Updates at the rate a 5-minute
//! interval gives (N/300 per second) plus 2 % churn per interval, while an API client measures
//! `GET /api/sessions/count`, `GET /api/sessions?limit=50&sort=acctinputoctets` and
//! `GET /api/sessions/{id}`. Prints one table. Measures and prints; asserts nothing about time.
//!
//! ```text
//! cargo bench --bench load [-- --sessions 25000 --windows 64,256,1024 --store pg|sqlite
//!                              --steady 30 --api-interval-ms 10]
//! ```
//!
//! PostgreSQL: the admin URL comes from `RADACCTD_BENCH_DATABASE_URL`, else
//! `RADACCTD_TEST_DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/postgres`; a database
//! `radacctd_load_<pid>_<n>` is created per run and dropped afterwards. The daemon runs with the
//! shipped defaults (group commit up to 1,024 events, 8 connections, jobs and EnsureIndexes on)
//! except: listeners on loopback port 0, the journal in a temporary directory, the API rate limit
//! lifted for the API client, and one RADIUS client 127.0.0.1 / testing123.
//!
//! The load generator is the `radacctd-bench` binary of this package, which Cargo builds for
//! benchmarks (`CARGO_BIN_EXE_radacctd-bench`); `--bench-bin PATH` overrides it.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use radacctd::app::Application;
use radacctd::config::{ClientConfig, Config, Secret};
use sqlx::Connection as _;
use support::{
    StoreKind, TICKS_PER_SEC, admin_url, parse_flags, pg_admin, pg_url_with_db, postgres_ticks,
    proc_ticks, rss_bytes,
};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "testing123";
const JWT_SECRET: &str = "load-bench-jwt-secret-0123456789abcdef-0123456789";

#[derive(Debug, Clone)]
struct Args {
    sessions: u32,
    windows: Vec<usize>,
    store: StoreKind,
    steady: f64,
    steady_window: usize,
    api_interval: Duration,
    bench_bin: Option<PathBuf>,
}

const USAGE: &str = "cargo bench --bench load -- [--sessions N] [--windows 64,256,1024] \
                     [--store pg|sqlite] [--steady SECONDS (0: skip)] [--steady-window W] \
                     [--api-interval-ms MS] [--bench-bin PATH]";

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        sessions: 25_000,
        windows: vec![256],
        store: StoreKind::Postgres,
        steady: 30.0,
        steady_window: 64,
        api_interval: Duration::from_millis(10),
        bench_bin: None,
    };
    parse_flags(USAGE, |flag, value| {
        match flag {
            "--sessions" => a.sessions = value()?.replace('_', "").parse()?,
            "--windows" | "--window" => {
                a.windows = value()?
                    .split(',')
                    .map(|w| w.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?;
            }
            "--store" => a.store = StoreKind::parse(&value()?)?,
            "--steady" => a.steady = value()?.parse()?,
            "--steady-window" => a.steady_window = value()?.parse()?,
            "--api-interval-ms" => a.api_interval = Duration::from_millis(value()?.parse()?),
            "--bench-bin" => a.bench_bin = Some(PathBuf::from(value()?)),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    anyhow::ensure!(a.sessions >= 1, "--sessions must be at least 1");
    anyhow::ensure!(
        !a.windows.is_empty() && a.windows.iter().all(|&w| w >= 1),
        "--windows: one or more positive numbers"
    );
    anyhow::ensure!(a.steady >= 0.0 && a.steady.is_finite(), "--steady SECONDS");
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a load test does not belong there: only compile-check.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("load benchmark: run it with `cargo bench --bench load`");
        return Ok(());
    }
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc (USER_HZ is 100 on Linux).

/// Busy ticks of all CPUs together (user, nice, system, irq, softirq, steal).
fn machine_busy_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_owned();
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            Some(
                [0, 1, 2, 5, 6, 7]
                    .iter()
                    .map(|&i| v.get(i).copied().unwrap_or(0))
                    .sum(),
            )
        })
        .unwrap_or(0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: Instant,
    own: u64,
    children: u64,
    postgres: u64,
    machine: u64,
}

impl CpuSample {
    fn now() -> CpuSample {
        let (own, children) = proc_ticks(Path::new("/proc/self/stat")).unwrap_or((0, 0));
        CpuSample {
            at: Instant::now(),
            own,
            children,
            postgres: postgres_ticks(),
            machine: machine_busy_ticks(),
        }
    }
}

/// CPU seconds between two samples: (wall, daemon = this process, bench = waited children,
/// postgres, everything else on the machine).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    wall: f64,
    daemon: f64,
    bench: f64,
    postgres: f64,
    rest: f64,
}

fn cpu_between(a: CpuSample, b: CpuSample) -> Cpu {
    let s = |x: u64, y: u64| y.saturating_sub(x) as f64 / TICKS_PER_SEC;
    let (daemon, bench, postgres) = (
        s(a.own, b.own),
        s(a.children, b.children),
        s(a.postgres, b.postgres),
    );
    Cpu {
        wall: b.at.duration_since(a.at).as_secs_f64(),
        daemon,
        bench,
        postgres,
        rest: (s(a.machine, b.machine) - daemon - bench - postgres).max(0.0),
    }
}

// ---------------------------------------------------------------------------------------------
// Databases.

/// A fresh database for one run; PostgreSQL ones are dropped by [`BenchDb::drop_now`].
#[derive(Debug)]
struct BenchDb {
    url: String,
    pg_name: Option<String>,
    dir: tempfile::TempDir,
}

impl BenchDb {
    async fn create(kind: StoreKind, n: u32) -> anyhow::Result<BenchDb> {
        let dir = tempfile::Builder::new()
            .prefix("radacctd-load-")
            .tempdir()?;
        match kind {
            StoreKind::Sqlite => Ok(BenchDb {
                url: format!("sqlite://{}", dir.path().join("radacctd.db").display()),
                pg_name: None,
                dir,
            }),
            StoreKind::Postgres => {
                let name = format!("radacctd_load_{}_{n}", std::process::id());
                pg_admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
                pg_admin(format!("CREATE DATABASE {name}")).await?;
                Ok(BenchDb {
                    url: pg_url_with_db(&admin_url(), &name),
                    pg_name: Some(name),
                    dir,
                })
            }
        }
    }

    async fn drop_now(self) {
        if let Some(name) = &self.pg_name {
            let _ = pg_admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        }
    }
}

async fn describe_store(kind: StoreKind) -> String {
    match kind {
        StoreKind::Sqlite => "SQLite (temporary file)".into(),
        StoreKind::Postgres => {
            let admin = admin_url();
            let Ok(mut c) = sqlx::PgConnection::connect(&admin).await else {
                return format!("PostgreSQL at {admin}");
            };
            let v: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut c)
                .await
                .unwrap_or_default();
            let sc: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(&mut c)
                .await
                .unwrap_or_default();
            let _ = c.close().await;
            format!("PostgreSQL {v} (fresh database per run, synchronous_commit={sc})")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon, in-process.

struct Daemon {
    radius: std::net::SocketAddr,
    api: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn config(db: &BenchDb, journal_dir: &Path) -> anyhow::Result<Config> {
    let mut c = Config::default();
    c.database.url = Secret::new(db.url.clone());
    c.radius.listen = "127.0.0.1:0".parse()?;
    c.api.listen = "127.0.0.1:0".parse()?;
    c.metrics.listen = "127.0.0.1:0".parse()?;
    c.api.jwt_secret = Secret::new(JWT_SECRET);
    // The API client measures latency, not the rate limiter.
    c.api.rate_limit_burst = 1_000_000;
    c.api.rate_limit_period_ms = 1;
    c.journal.path = journal_dir.join("radacctd.journal");
    c.radius.clients = vec![ClientConfig {
        address: "127.0.0.1"
            .parse()
            .map_err(|e| anyhow::anyhow!("client address: {e:?}"))?,
        secret: Secret::new(SECRET),
        name: Some("radacctd-bench".into()),
    }];
    Ok(c)
}

impl Daemon {
    async fn start(db: &BenchDb) -> anyhow::Result<Daemon> {
        let app = Application::build(config(db, db.dir.path())?)
            .await
            .context("starting radacctd")?;
        let radius = app.radius_addr();
        let api = app.api_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Ok(Daemon {
            radius,
            api,
            shutdown,
            task,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .context("radacctd did not stop within 60 s")??
    }
}

// ---------------------------------------------------------------------------------------------
// The load generator.

fn bench_binary(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.bench_bin {
        return Ok(p.clone());
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_radacctd-bench") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
    }
    // target/release/deps/load-… → target/release/radacctd-bench
    let exe = std::env::current_exe()?;
    if let Some(p) = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("radacctd-bench"))
        && p.is_file()
    {
        return Ok(p);
    }
    bail!("radacctd-bench not found: run `cargo build --release --bin radacctd-bench` first")
}

#[derive(Debug, Default)]
struct Phase {
    name: String,
    answered: u64,
    lost: u64,
    retransmits: u64,
    rate: f64,
    p50: Option<f64>,
    p99: Option<f64>,
}

#[derive(Debug, Default)]
struct BenchRun {
    phases: Vec<Phase>,
    checked: u64,
    mismatches: u64,
    exit_ok: bool,
    cpu: Cpu,
}

impl BenchRun {
    fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }
}

fn parse_summary(json: &str) -> anyhow::Result<BenchRun> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("radacctd-bench --json output")?;
    let mut run = BenchRun::default();
    for p in v["phases"].as_array().into_iter().flatten() {
        run.phases.push(Phase {
            name: p["phase"].as_str().unwrap_or("?").to_owned(),
            answered: p["answered"].as_u64().unwrap_or(0),
            lost: p["lost"].as_u64().unwrap_or(0),
            retransmits: p["retransmits"].as_u64().unwrap_or(0),
            rate: p["packets_per_second"].as_f64().unwrap_or(0.0),
            p50: p["latency_ms"]["p50"].as_f64(),
            p99: p["latency_ms"]["p99"].as_f64(),
        });
    }
    run.checked = v["verify_db"]["checked"].as_u64().unwrap_or(0);
    run.mismatches = v["verify_db"]["mismatches"].as_u64().unwrap_or(u64::MAX);
    Ok(run)
}

/// Markers in radacctd-bench's progress output (stderr) around the steady phase.
#[derive(Debug, Default)]
struct SteadySignals {
    started: AtomicBool,
    ended: AtomicBool,
    notify: tokio::sync::Notify,
}

/// Runs radacctd-bench to completion; its progress goes to our stderr.
async fn run_bench(
    bin: &Path,
    target: std::net::SocketAddr,
    db_url: &str,
    extra: &[String],
    signals: Option<Arc<SteadySignals>>,
) -> anyhow::Result<BenchRun> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--target")
        .arg(target.to_string())
        .arg("--secret")
        .arg(SECRET)
        .args(extra)
        .arg("--verify-db")
        .arg(db_url)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let before = CpuSample::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let progress = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(s) = &signals {
                let t = line.trim_start();
                if t.starts_with("steady:") {
                    let flag = if t.contains("answered") {
                        &s.ended
                    } else {
                        &s.started
                    };
                    flag.store(true, Ordering::SeqCst);
                    s.notify.notify_waiters();
                }
            }
            eprintln!("    | {line}");
        }
        if let Some(s) = &signals {
            s.started.store(true, Ordering::SeqCst);
            s.ended.store(true, Ordering::SeqCst);
            s.notify.notify_waiters();
        }
    });
    let mut json = String::new();
    stdout.read_to_string(&mut json).await?;
    let status = child.wait().await?;
    let _ = progress.await;
    let after = CpuSample::now();
    let mut run =
        parse_summary(&json).with_context(|| format!("radacctd-bench exited {status}"))?;
    run.exit_ok = status.success();
    run.cpu = cpu_between(before, after);
    Ok(run)
}

// ---------------------------------------------------------------------------------------------
// The API client.

#[derive(Debug, Default, Clone)]
struct Latencies {
    us: Vec<u64>,
    errors: u64,
}

impl Latencies {
    fn pct(&self, p: f64) -> Option<f64> {
        if self.us.is_empty() {
            return None;
        }
        let mut v = self.us.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1] as f64 / 1000.0)
    }
}

fn mint_token() -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        exp: u64,
        role: &'a str,
        permissions: [&'a str; 1],
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let claims = Claims {
        sub: "load-bench",
        exp,
        role: "admin",
        permissions: ["sessions.view"],
    };
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )?)
}

const ENDPOINTS: [&str; 3] = [
    "GET /api/sessions/count",
    "GET /api/sessions?limit=50&sort=acctinputoctets",
    "GET /api/sessions/{id}",
];

struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    fn new(api: std::net::SocketAddr) -> anyhow::Result<ApiClient> {
        Ok(ApiClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base: format!("http://{api}"),
            token: mint_token()?,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<(serde_json::Value, u64)> {
        let t = Instant::now();
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let us = t.elapsed().as_micros() as u64;
        anyhow::ensure!(
            status.is_success(),
            "{path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok((serde_json::from_slice(&body)?, us))
    }

    /// Open sessions' ids from a few list pages (not measured).
    async fn ids(&self) -> anyhow::Result<Vec<i64>> {
        let mut ids = Vec::new();
        for page in 1..=20 {
            let (v, _) = self
                .get(&format!("/api/sessions?limit=50&page={page}"))
                .await?;
            let before = ids.len();
            ids.extend(
                v["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["radacctid"].as_i64()),
            );
            if ids.len() == before {
                break;
            }
        }
        Ok(ids)
    }

    /// Round-robin over the three endpoints, one request at a time with `pause` between
    /// requests, until `signals.ended`.
    async fn measure(
        &self,
        signals: &SteadySignals,
        pause: Duration,
    ) -> anyhow::Result<[Latencies; 3]> {
        let ids = self.ids().await?;
        anyhow::ensure!(!ids.is_empty(), "the API lists no open session");
        let mut out: [Latencies; 3] = Default::default();
        let mut k = 0usize;
        while !signals.ended.load(Ordering::SeqCst) {
            let which = k % 3;
            let path = match which {
                0 => "/api/sessions/count".to_owned(),
                1 => "/api/sessions?limit=50&sort=acctinputoctets".to_owned(),
                _ => format!("/api/sessions/{}", ids[(k / 3) % ids.len()]),
            };
            match self.get(&path).await {
                Ok((_, us)) => out[which].us.push(us),
                Err(e) => {
                    if out[which].errors == 0 {
                        eprintln!("    API error: {e:#}");
                    }
                    out[which].errors += 1;
                }
            }
            k += 1;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------

struct WindowResult {
    window: usize,
    run: BenchRun,
}

struct SteadyResult {
    run: BenchRun,
    api: [Latencies; 3],
    open_after: Option<i64>,
    rss_after: u64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bin = bench_binary(&args)?;
    let store = describe_store(args.store).await;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_start = load_average();
    eprintln!(
        "load bench: {store}; {} sessions; windows {:?}; steady {} s; load generator {}",
        args.sessions,
        args.windows,
        args.steady,
        bin.display()
    );
    let sessions = args.sessions.to_string();
    let mut n = 0;
    let mut windows = Vec::new();
    for &w in &args.windows {
        n += 1;
        eprintln!(
            "\n== window {w}: {} sessions × (Start, Interim-Update, Stop) (load average {})",
            args.sessions,
            load_average()
        );
        let db = BenchDb::create(args.store, n).await?;
        let daemon = Daemon::start(&db).await?;
        let extra = vec![
            "--sessions".to_owned(),
            sessions.clone(),
            "--window".to_owned(),
            w.to_string(),
        ];
        let result = run_bench(&bin, daemon.radius, &db.url, &extra, None).await;
        daemon.stop().await?;
        db.drop_now().await;
        windows.push(WindowResult {
            window: w,
            run: result?,
        });
    }

    let mut steady = None;
    if args.steady > 0.0 {
        n += 1;
        eprintln!(
            "\n== steady: {} sessions started and kept open, then {} s of Interim-Updates at \
             {:.1}/s plus churn, with the API client (load average {})",
            args.sessions,
            args.steady,
            f64::from(args.sessions) / 300.0,
            load_average()
        );
        let db = BenchDb::create(args.store, n).await?;
        let daemon = Daemon::start(&db).await?;
        let signals = Arc::new(SteadySignals::default());
        let extra = vec![
            "--sessions".to_owned(),
            sessions.clone(),
            "--window".to_owned(),
            args.steady_window.to_string(),
            "--phases".to_owned(),
            "start".to_owned(),
            "--steady".to_owned(),
            args.steady.to_string(),
        ];
        let client = ApiClient::new(daemon.api)?;
        let sig = signals.clone();
        let pause = args.api_interval;
        let api_task = tokio::spawn(async move {
            loop {
                let notified = sig.notify.notified();
                if sig.started.load(Ordering::SeqCst) {
                    break;
                }
                notified.await;
            }
            let r = client.measure(&sig, pause).await;
            let open = client
                .get("/api/sessions/count")
                .await
                .ok()
                .and_then(|(v, _)| v["count"].as_i64());
            r.map(|r| (r, open))
        });
        let result = run_bench(&bin, daemon.radius, &db.url, &extra, Some(signals)).await;
        let api = api_task.await?;
        let rss_after = rss_bytes("self");
        daemon.stop().await?;
        db.drop_now().await;
        let (api, open_after) = api?;
        steady = Some(SteadyResult {
            run: result?,
            api,
            open_after,
            rss_after,
        });
    }

    print_table(&args, &store, cpus, &load_start, &windows, steady.as_ref());
    let bad = windows
        .iter()
        .map(|w| &w.run)
        .chain(steady.as_ref().map(|s| &s.run))
        .any(|r| !r.exit_ok || r.mismatches != 0);
    if bad {
        bail!("a run lost requests or failed verification (see above)");
    }
    Ok(())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

fn print_table(
    args: &Args,
    store: &str,
    cpus: usize,
    load_start: &str,
    windows: &[WindowResult],
    steady: Option<&SteadyResult>,
) {
    let rate = |r: &BenchRun, p: &str| r.phase(p).map_or(0.0, |p| p.rate);
    println!();
    println!(
        "radacctd load bench — {store}; {} sessions; {cpus} CPUs; load average {load_start} at \
         start, {} at end",
        args.sessions,
        load_average()
    );
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>12} {:>12} {:>11} {:>11}",
        "run",
        "start/s",
        "interim/s",
        "stop/s",
        "total/s",
        "p50 ms",
        "p99 ms",
        "lost/re",
        "verified",
        "radacctd CPU",
        "postgres CPU",
        "bench CPU",
        "other CPU"
    );
    let cpu = |c: &Cpu, v: f64| format!("{v:.1}s {:>3.0}%", 100.0 * v / c.wall.max(1e-9));
    for w in windows {
        let r = &w.run;
        let total = r.phase("total");
        let lost: u64 = r.phases.iter().map(|p| p.lost).sum();
        let retrans: u64 = r.phases.iter().map(|p| p.retransmits).sum();
        let answered: u64 = r.phases.iter().map(|p| p.answered).sum();
        // Without a "total" row (one phase), the only phase is the total.
        let (t_rate, p50, p99) = match total {
            Some(t) => (t.rate, t.p50, t.p99),
            None => {
                let secs: f64 = r
                    .phases
                    .iter()
                    .map(|p| p.answered as f64 / p.rate.max(1e-9))
                    .sum();
                (
                    answered as f64 / secs.max(1e-9),
                    r.phases.first().and_then(|p| p.p50),
                    r.phases.first().and_then(|p| p.p99),
                )
            }
        };
        println!(
            "{:<16} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>12} {:>12} {:>11} {:>11}",
            format!("window {}", w.window),
            rate(r, "start"),
            rate(r, "interim"),
            rate(r, "stop"),
            t_rate,
            ms(p50),
            ms(p99),
            format!("{lost}/{retrans}"),
            if r.mismatches == 0 && r.exit_ok {
                format!("{} ok", r.checked)
            } else {
                format!("{} BAD", r.mismatches)
            },
            cpu(&r.cpu, r.cpu.daemon),
            cpu(&r.cpu, r.cpu.postgres),
            cpu(&r.cpu, r.cpu.bench),
            cpu(&r.cpu, r.cpu.rest),
        );
    }
    if let Some(s) = steady {
        let r = &s.run;
        if let Some(p) = r.phase("steady") {
            println!(
                "{:<16} {:>9} {:>9.1} {:>9} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>12} {:>12} {:>11} {:>11}",
                format!("steady {} s", args.steady),
                "-",
                f64::from(args.sessions) / 300.0,
                "-",
                p.rate,
                ms(p.p50),
                ms(p.p99),
                format!("{}/{}", p.lost, p.retransmits),
                if r.mismatches == 0 && r.exit_ok {
                    format!("{} ok", r.checked)
                } else {
                    format!("{} BAD", r.mismatches)
                },
                cpu(&r.cpu, r.cpu.daemon),
                cpu(&r.cpu, r.cpu.postgres),
                cpu(&r.cpu, r.cpu.bench),
                cpu(&r.cpu, r.cpu.rest),
            );
        }
        println!(
            "  steady: {} open sessions at the end (API count), daemon process RSS {:.0} MiB; \
             interim/s column = target rate (sessions/300 s), total/s = all requests answered \
             in the steady period incl. churn Stop+Start; CPU columns cover start + steady",
            s.open_after.map_or("?".into(), |n| n.to_string()),
            s.rss_after as f64 / (1024.0 * 1024.0)
        );
        println!(
            "{:<50} {:>9} {:>8} {:>8} {:>8} {:>7}",
            "API during steady (one client, sequential)",
            "requests",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors"
        );
        for (name, l) in ENDPOINTS.iter().zip(&s.api) {
            println!(
                "{:<50} {:>9} {:>8} {:>8} {:>8} {:>7}",
                name,
                l.us.len(),
                ms(l.pct(50.0)),
                ms(l.pct(99.0)),
                ms(l.pct(100.0)),
                l.errors
            );
        }
    }
    println!(
        "CPU: radacctd = this process (the daemon runs in it), bench = the radacctd-bench child, \
         postgres = all postgres processes on the machine, other = the rest of the machine; \
         seconds and % of one core over the run; lost/re = requests lost / retransmissions"
    );
}
