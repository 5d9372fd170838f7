//! Event stream fan-out benchmark (docs/EVENTS.md): the real `radacctd` binary on a fresh
//! database, N clients on `GET /api/events`, events appended through the store at a steady
//! rate. Prints the delivery latency from numbering to each client's receipt (PostgreSQL: the
//! bench hears the sequencer's `NOTIFY` as the daemon does), from the append's commit to
//! receipt (which adds the sequencer's poll: appends from another process do not wake it as
//! the daemon's own writer does), the daemon's and PostgreSQL's CPU, the daemon's memory, and
//! whether every client got every event in order. Measures and prints; asserts nothing about
//! time.
//!
//! ```text
//! cargo bench --bench events [-- --clients 100 --rate 1000 --seconds 20 --batch 10
//!                               --store pg|sqlite --poll-ms 10]
//! ```
//!
//! PostgreSQL: the admin URL comes from `RADACCTD_BENCH_DATABASE_URL`, else
//! `RADACCTD_TEST_DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/postgres`; a database
//! `radacctd_events_<pid>` is created for the run and dropped afterwards.

#[allow(dead_code)]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use radacctd::api::auth::{Claims, Role, SigningKey, issue_token};
use radacctd::config::{ApiConfig, Secret};
use radacctd::events::{EventType, NewEvent};
use support::{
    StoreKind, TICKS_PER_SEC, open_store, parse_flags, postgres_ticks, proc_ticks, rss_bytes,
    with_pg_database,
};

const JWT_SECRET: &str = "events-bench-jwt-secret-0123456789abcdef-0123456789";

#[derive(Debug, Clone)]
struct Args {
    clients: usize,
    rate: u64,
    seconds: u64,
    batch: u64,
    store: StoreKind,
    poll_ms: u64,
}

const USAGE: &str = "cargo bench --bench events -- [--clients N] [--rate EVENTS_PER_S] \
                     [--seconds S] [--batch EVENTS_PER_COMMIT] [--store pg|sqlite] [--poll-ms MS]";

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        clients: 100,
        rate: 1_000,
        seconds: 20,
        batch: 10,
        store: StoreKind::Postgres,
        poll_ms: 10,
    };
    parse_flags(USAGE, |flag, value| {
        match flag {
            "--clients" => a.clients = value()?.parse()?,
            "--rate" => a.rate = value()?.replace('_', "").parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--poll-ms" => a.poll_ms = value()?.parse()?,
            "--store" => a.store = StoreKind::parse(&value()?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    anyhow::ensure!(
        a.clients >= 1 && a.rate >= 1 && a.seconds >= 1 && a.batch >= 1 && a.poll_ms >= 1,
        "every number must be at least 1"
    );
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs this binary without `--bench`: only compile-check.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("events benchmark: run it with `cargo bench --bench events`");
        return Ok(());
    }
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

// ---------------------------------------------------------------------------------------------
// The daemon.

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `radacctd serve` on `url`, its API on `api`; killed when dropped.
fn spawn_daemon(url: &str, api: u16, poll_ms: u64) -> anyhow::Result<tokio::process::Child> {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_radacctd"))
        .arg("serve")
        .env("RADACCTD__DATABASE__URL", url)
        .env(
            "RADACCTD__RADIUS__LISTEN",
            format!("127.0.0.1:{}", free_udp_port()?),
        )
        .env("RADACCTD__API__LISTEN", format!("127.0.0.1:{api}"))
        .env("RADACCTD__API__JWT_SECRET", JWT_SECRET)
        .env("RADACCTD__METRICS__ENABLED", "false")
        .env("RADACCTD__JOURNAL__ENABLED", "false")
        .env("RADACCTD__JOBS__SWEEP_ENABLED", "false")
        .env("RADACCTD__JOBS__ARCHIVE_ENABLED", "false")
        .env("RADACCTD__EVENTS__POLL_INTERVAL_MS", poll_ms.to_string())
        .env("RADACCTD__LOG__LEVEL", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("starting radacctd")
}

fn token() -> anyhow::Result<String> {
    let config = ApiConfig {
        jwt_secret: Secret::new(JWT_SECRET),
        ..ApiConfig::default()
    };
    let claims = Claims {
        sub: Some("events-bench".into()),
        exp: radacctd::clock::now_secs() as u64 + 86_400,
        role: Role::Admin,
        reseller_id: None,
        permissions: vec![radacctd::api::auth::EVENTS_VIEW.into()],
    };
    issue_token(&config, &claims, SigningKey::ConfiguredSecret)
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Nanoseconds since the run's start at which each event id was committed and numbered (0:
/// not yet), indexed by id.
struct Clock {
    start: Instant,
    committed: Vec<AtomicU64>,
    numbered: Vec<AtomicU64>,
}

impl Clock {
    fn new(events: usize) -> Clock {
        Clock {
            start: Instant::now(),
            committed: (0..=events).map(|_| AtomicU64::new(0)).collect(),
            numbered: (0..=events).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn mark(slots: &[AtomicU64], ids: std::ops::RangeInclusive<usize>, at: u64) {
        for id in ids {
            if let Some(s) = slots.get(id) {
                let _ = s.compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

/// A realistic `session.stopped`: the session's fields, about 500 bytes on the wire.
fn stopped(n: u64) -> NewEvent {
    let data = serde_json::json!({
        "acctsessionid": format!("{:08x}", 0x8a3f_0000 + n),
        "framedipaddress": format!("10.64.{}.{}", (n >> 8) & 0xff, n & 0xff),
        "callingstationid": format!("AA:BB:CC:DD:{:02X}:{:02X}", (n >> 8) & 0xff, n & 0xff),
        "nasportid": format!("ether{}", 2 + n % 4),
        "acctstarttime": "2026-05-12T08:00:00Z",
        "acctupdatetime": "2026-05-12T09:00:00Z",
        "acctstoptime": "2026-05-12T09:00:00Z",
        "acctsessiontime": 3600,
        "acctinputoctets": 1_000 * n,
        "acctoutputoctets": 2_000 * n,
        "acctterminatecause": "User-Request",
    });
    NewEvent {
        kind: EventType::SessionStopped,
        time: radacctd::clock::now_secs(),
        username: format!("user{n}@example.lb"),
        nasipaddress: "192.0.2.10".into(),
        acctuniqueid: format!("{n:032x}"),
        radacctid: Some(n as i64),
        data: data.to_string(),
    }
}

/// What one client saw: receipt times by id (ns since start), and whether ids came in order
/// without gaps.
#[derive(Debug, Default)]
struct Seen {
    received: Vec<(u64, u64)>,
    in_order: bool,
}

/// One client: reads the stream until it has `last`, noting when each event arrived.
async fn client(
    url: String,
    token: String,
    last: u64,
    clock: Arc<Clock>,
    subscribed: Arc<AtomicU64>,
) -> anyhow::Result<Seen> {
    let mut r = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "GET /api/events: {}", r.status());
    // The answer's head comes once the stream has subscribed.
    subscribed.fetch_add(1, Ordering::Relaxed);
    let mut seen = Seen {
        received: Vec::with_capacity(last as usize),
        in_order: true,
    };
    let mut expect = 1u64;
    let mut buf = String::new();
    while let Some(chunk) = r.chunk().await? {
        let at = clock.now();
        buf.push_str(std::str::from_utf8(&chunk)?);
        while let Some(end) = buf.find("\n\n") {
            let id = buf[..end]
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|v| v.parse::<u64>().ok());
            buf.drain(..end + 2);
            let Some(id) = id else { continue };
            seen.in_order &= id == expect;
            expect = id + 1;
            seen.received.push((id, at));
            if id >= last {
                return Ok(seen);
            }
        }
    }
    bail!("the stream ended at {}", expect - 1)
}

/// PostgreSQL: hears the sequencer's notifications (the last id it gave) and notes when each
/// id was numbered.
async fn listen_numbering(url: String, clock: Arc<Clock>) -> anyhow::Result<()> {
    let mut l = sqlx::postgres::PgListener::connect(&url).await?;
    l.listen(radacctd::store::EVENTS_CHANNEL).await?;
    let mut done = 0usize;
    loop {
        let n = l.recv().await?;
        let at = clock.now();
        let Ok(last) = n.payload().trim().parse::<usize>() else {
            continue;
        };
        if last > done {
            Clock::mark(&clock.numbered, done + 1..=last, at);
            done = last;
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e6
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("radacctd-events-")
        .tempdir()?;
    let pg_name = format!("radacctd_events_{}", std::process::id());
    match args.store {
        StoreKind::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("radacctd.db").display());
            measure(&args, &url).await
        }
        StoreKind::Postgres => {
            with_pg_database(&pg_name, |url| async move { measure(&args, &url).await }).await
        }
    }
}

async fn measure(args: &Args, url: &str) -> anyhow::Result<()> {
    let api = free_port()?;
    let mut daemon = spawn_daemon(url, api, args.poll_ms)?;
    let pid = daemon.id().context("daemon pid")?;
    let base = format!("http://127.0.0.1:{api}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "radacctd not ready within 60 s");
        if let Some(status) = daemon.try_wait()? {
            bail!("radacctd exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = open_store(url, Duration::from_secs(10)).await?;
    let total = args.rate * args.seconds;
    let clock = Arc::new(Clock::new(total as usize));
    let listening = (args.store == StoreKind::Postgres).then(|| {
        let (u, c) = (url.to_owned(), clock.clone());
        tokio::spawn(async move {
            if let Err(e) = listen_numbering(u, c).await {
                eprintln!("listening for the numbering failed: {e:#}");
            }
        })
    });
    let token = token()?;
    let subscribed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(tokio::spawn(client(
            format!("{base}/api/events"),
            token.clone(),
            total,
            clock.clone(),
            subscribed.clone(),
        )));
    }
    // Every client subscribed before the first event.
    let open = Instant::now();
    while subscribed.load(Ordering::Relaxed) < args.clients as u64 {
        anyhow::ensure!(
            open.elapsed() < Duration::from_secs(30),
            "{} of {} clients subscribed within 30 s",
            subscribed.load(Ordering::Relaxed),
            args.clients
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_daemon = proc_ticks(Path::new(&format!("/proc/{pid}/stat"))).map_or(0, |t| t.0);
    let cpu_pg = postgres_ticks();
    let cpu_bench = proc_ticks(Path::new("/proc/self/stat")).map_or(0, |t| t.0);
    let started = Instant::now();
    // The appends: `batch` events per commit, `rate / batch` commits a second.
    let every = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0u64;
    while n < total {
        tick.tick().await;
        let end = (n + args.batch).min(total);
        let batch: Vec<NewEvent> = (n..end).map(stopped).collect();
        store.add_events(&batch).await?;
        Clock::mark(
            &clock.committed,
            (n as usize + 1)..=(end as usize),
            clock.now(),
        );
        n = end;
    }
    let appended = started.elapsed();
    let mut seen = Vec::new();
    for c in clients {
        seen.push(
            tokio::time::timeout(Duration::from_secs(120), c)
                .await
                .context("a client did not get every event within 120 s")???,
        );
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = |a: u64, b: u64| b.saturating_sub(a) as f64 / TICKS_PER_SEC;
    let daemon_cpu = cpu(
        cpu_daemon,
        proc_ticks(Path::new(&format!("/proc/{pid}/stat"))).map_or(0, |t| t.0),
    );
    let pg_cpu = cpu(cpu_pg, postgres_ticks());
    let bench_cpu = cpu(
        cpu_bench,
        proc_ticks(Path::new("/proc/self/stat")).map_or(0, |t| t.0),
    );
    let rss = rss_bytes(&pid.to_string()) as f64 / f64::from(1 << 20);
    let _ = daemon.start_kill();
    if let Some(l) = listening {
        l.abort();
    }
    store.close().await;

    let mut from_numbering = Vec::new();
    let mut from_commit = Vec::new();
    let mut in_order = 0;
    let mut complete = 0;
    for s in &seen {
        in_order += usize::from(s.in_order);
        complete += usize::from(s.received.len() as u64 == total);
        for &(id, at) in &s.received {
            let numbered = clock.numbered[id as usize].load(Ordering::Relaxed);
            if numbered > 0 {
                from_numbering.push(at.saturating_sub(numbered));
            }
            let committed = clock.committed[id as usize].load(Ordering::Relaxed);
            if committed > 0 {
                from_commit.push(at.saturating_sub(committed));
            }
        }
    }
    from_numbering.sort_unstable();
    from_commit.sort_unstable();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    println!(
        "radacctd events fan-out — {}; {} clients; {} events at {} events/s ({} per commit) in \
         {:.1} s; sequencer poll {} ms; {cpus} CPUs; load average {load}",
        match args.store {
            StoreKind::Postgres => "PostgreSQL",
            StoreKind::Sqlite => "SQLite",
        },
        args.clients,
        total,
        args.rate,
        args.batch,
        appended.as_secs_f64(),
        args.poll_ms,
    );
    println!(
        "clients complete and in order: {complete}/{} and {in_order}/{}; deliveries {}",
        seen.len(),
        seen.len(),
        seen.iter().map(|s| s.received.len()).sum::<usize>()
    );
    let line = |what: &str, v: &[u64]| {
        println!(
            "{what:<28} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms   ({} samples)",
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 1.0),
            v.len()
        );
    };
    if !from_numbering.is_empty() {
        line("numbering → client receipt", &from_numbering);
    }
    line("commit → client receipt", &from_commit);
    println!(
        "CPU over {wall:.1} s: daemon {daemon_cpu:.1} s ({:.0} % of one core), PostgreSQL \
         {pg_cpu:.1} s, bench (clients and appends) {bench_cpu:.1} s; daemon RSS {rss:.0} MiB",
        100.0 * daemon_cpu / wall
    );
    Ok(())
}
