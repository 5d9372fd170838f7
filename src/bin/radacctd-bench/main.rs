//! `radacctd-bench`: a load generator that plays a MikroTik BNG against any RADIUS accounting
//! server (radacctd, FreeRADIUS, …).
//!
//! N subscriber sessions with distinct usernames, MACs, framed IPs and NAS ports, spread over
//! several NASes (NAS-IP-Address 192.0.2.10 …; all packets leave from local UDP sockets), go
//! through the phases `start` (one Start each), `interim` (K rounds of Interim-Updates with
//! growing counters, every 10th session past 4 GiB so gigawords are used), an optional
//! `--steady` period (interims at the rate a 5-minute interval gives, plus churn) and `stop`
//! (User-Request with final counters). A window of requests is kept in flight over
//! ⌈W/128⌉ sockets; requests are retransmitted after the timeout with the same identifier and
//! bytes, every Response Authenticator is verified, and each phase reports packets/s, losses,
//! retransmissions, bad responses and latency percentiles. `--verify-db` then reads every
//! session's final radacct row back and exits non-zero on any difference.
//!
//! Several `--target`s play a NAS with a primary and a backup RADIUS host (`--spread
//! failover`: a request that times out goes to the next server) or two hosts sharing the
//! sessions packet by packet (`--spread alternate`); the report then counts the answers of
//! each server.

mod engine;
mod sim;
mod verify;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use radacctd::radius::codec::{Code, Packet, PacketBuilder};
use tokio::net::UdpSocket;

use engine::{Plan, Settings, Spread, Stats, Worker};
use sim::{Kind, Model};

/// Load generator for RADIUS accounting servers: plays a MikroTik BNG with N PPPoE sessions.
#[derive(Debug, Parser)]
#[command(name = "radacctd-bench", version)]
struct Cli {
    /// Accounting server to load (HOST:PORT). Give it more than once, or comma-separated, for
    /// several servers sharing one database (two RADIUS hosts): --spread says how requests
    /// are spread over them, and a request that times out is retransmitted to the next one.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:1813",
        value_name = "HOST:PORT"
    )]
    target: Vec<String>,
    /// With several --target: `failover` sends every new request to the first and one that
    /// times out to the next, as a NAS with a primary and a backup RADIUS server does;
    /// `alternate` sends the k-th packet of session i to target (i + k) mod T, so each
    /// session's Start, Interims and Stop land on the servers in turn.
    #[arg(long, value_enum, default_value_t = Spread::Failover)]
    spread: Spread,
    /// Shared secret of the client (127.0.0.1 by default) on the server.
    #[arg(
        long,
        default_value = "testing123",
        env = "RADACCTD_BENCH_SECRET",
        hide_env_values = true
    )]
    secret: String,
    /// Number of subscriber sessions.
    #[arg(long, default_value_t = 25_000)]
    sessions: u32,
    /// Number of NASes the sessions are spread over (NAS-IP-Address 192.0.2.10, .11, …).
    #[arg(long, default_value_t = 4)]
    nases: u32,
    /// Requests kept in flight in total.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// UDP sockets to spread the window over (default ⌈window/128⌉; at least ⌈window/256⌉,
    /// since the identifier is one octet).
    #[arg(long)]
    sockets: Option<usize>,
    /// Retransmit a request that has no answer after this many milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    timeout_ms: u64,
    /// Retransmissions before a request counts as lost.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Phases to run, in this order: start, interim, stop (the --steady period runs between
    /// interim and stop).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "start,interim,stop",
        value_name = "LIST"
    )]
    phases: Vec<PhaseName>,
    /// Interim-Update rounds in the interim phase (each round: one per session).
    #[arg(long, default_value_t = 1)]
    interims: u32,
    /// Interim interval of the simulated NASes, seconds (sets the steady interim rate,
    /// sessions/interval per second, and the simulated timeline).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    interim_interval: u32,
    /// After start/interim: keep the sessions open for this many seconds, sending interims at
    /// sessions/interval per second plus churn.
    #[arg(long, value_name = "SECONDS")]
    steady: Option<f64>,
    /// Churn during --steady: the fraction of sessions that stop and start again (new
    /// Acct-Session-Id) per interim interval.
    #[arg(long, default_value_t = 0.02, value_name = "FRACTION")]
    churn: f64,
    /// Usernames are <prefix><7 digits>@bng.example.
    #[arg(long, default_value = "bench")]
    user_prefix: String,
    /// First Acct-Session-Id (hex); session i gets base+i. Use a fresh database, or another
    /// base, for each run.
    #[arg(long, default_value = "81a00000", value_parser = parse_hex_u32, value_name = "HEX")]
    sid_base: u32,
    /// Local address to send from (default: loopback for a loopback target, else any).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Runtime worker threads (default: min(sockets, CPUs)).
    #[arg(long)]
    threads: Option<usize>,
    /// SO_RCVBUF / SO_SNDBUF of each socket, bytes.
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    socket_buffer: usize,
    /// After the run, check every session's final radacct row in this database
    /// (postgres://… or sqlite://…); exit 1 on any mismatch.
    #[arg(long, value_name = "URL")]
    verify_db: Option<String>,
    /// Also write a JSON summary to PATH; without PATH (or with -) the JSON goes to stdout and
    /// the table to stderr.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// Instead of a benchmark, run a null accounting server on ADDR that answers every valid
    /// Accounting-Request at once (measures the generator's own ceiling).
    #[arg(long, value_name = "ADDR")]
    null_server: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PhaseName {
    Start,
    Interim,
    Stop,
}

fn parse_hex_u32(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0x").trim_start_matches("0X");
    u32::from_str_radix(t, 16).map_err(|e| format!("not a 32-bit hex number: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = check_args(&cli) {
        eprintln!("radacctd-bench: {e}");
        return ExitCode::from(2);
    }
    let sockets = cli
        .sockets
        .unwrap_or_else(|| engine::default_sockets(cli.window))
        .min(cli.window)
        .max(1);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cli.threads.unwrap_or(sockets.min(cpus)).max(1);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("radacctd-bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = rt.block_on(async {
        match cli.null_server {
            Some(addr) => null_server(addr, cli.secret.as_bytes(), cli.socket_buffer).await,
            None => run(&cli, sockets, threads).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("radacctd-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn check_args(cli: &Cli) -> anyhow::Result<()> {
    anyhow::ensure!(cli.sessions >= 1, "--sessions must be at least 1");
    anyhow::ensure!(
        (1..=Model::MAX_NASES).contains(&cli.nases),
        "--nases must be 1..={}",
        Model::MAX_NASES
    );
    anyhow::ensure!(cli.window >= 1, "--window must be at least 1");
    if let Some(s) = cli.sockets {
        let need = cli.window.div_ceil(engine::IDS_PER_SOCKET);
        anyhow::ensure!(
            s >= need,
            "--sockets {s} is too few for --window {}: at most 256 requests fit in flight \
             per socket (one-octet identifier), so at least {need}",
            cli.window
        );
    }
    anyhow::ensure!(cli.timeout_ms >= 1, "--timeout-ms must be at least 1");
    anyhow::ensure!(
        cli.interim_interval >= 1,
        "--interim-interval must be at least 1"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&cli.churn),
        "--churn is a fraction of the sessions per interval, 0..=1"
    );
    if let Some(s) = cli.steady {
        anyhow::ensure!(
            s.is_finite() && s > 0.0,
            "--steady must be a positive number of seconds"
        );
    }
    anyhow::ensure!(!cli.secret.is_empty(), "--secret must not be empty");
    Ok(())
}

/// One row of the report.
#[derive(Debug)]
struct PhaseReport {
    name: &'static str,
    elapsed: Duration,
    /// Latencies sorted.
    stats: Stats,
}

impl PhaseReport {
    fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.stats.answered as f64 / s
        } else {
            0.0
        }
    }

    fn ms(&self, p: f64) -> Option<f64> {
        engine::percentile(&self.stats.latencies_us, p).map(|us| f64::from(us) / 1000.0)
    }

    fn max_ms(&self) -> Option<f64> {
        self.stats
            .latencies_us
            .last()
            .map(|&us| f64::from(us) / 1000.0)
    }
}

/// The phases in run order.
fn plans(cli: &Cli) -> Vec<(&'static str, Plan)> {
    let mut out = Vec::new();
    let has = |p| cli.phases.contains(&p);
    if has(PhaseName::Start) {
        out.push((
            "start",
            Plan::Bulk {
                kind: Kind::Start,
                rounds: 1,
            },
        ));
    }
    if has(PhaseName::Interim) && cli.interims > 0 {
        out.push((
            "interim",
            Plan::Bulk {
                kind: Kind::Interim,
                rounds: cli.interims,
            },
        ));
    }
    if let Some(secs) = cli.steady {
        out.push((
            "steady",
            Plan::Steady {
                duration: Duration::from_secs_f64(secs),
                interval: cli.interim_interval,
                churn: cli.churn,
            },
        ));
    }
    if has(PhaseName::Stop) {
        out.push((
            "stop",
            Plan::Bulk {
                kind: Kind::Stop,
                rounds: 1,
            },
        ));
    }
    out
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// The local address to send from: `--bind`, else loopback when every target is on
/// loopback, else any address of the targets' family (which must be the same for all, since
/// one socket sends to all of them).
fn bind_addr(bind: Option<IpAddr>, targets: &[SocketAddr]) -> anyhow::Result<SocketAddr> {
    if let Some(ip) = bind {
        return Ok(SocketAddr::new(ip, 0));
    }
    let first = targets.first().context("no --target")?;
    anyhow::ensure!(
        targets.iter().all(|t| t.is_ipv4() == first.is_ipv4()),
        "the targets mix IPv4 and IPv6 addresses ({}): one socket sends to all of them, give          targets of one family",
        list(targets)
    );
    let loopback = targets.iter().all(|t| t.ip().is_loopback());
    let ip = match (first.ip(), loopback) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    Ok(SocketAddr::new(ip, 0))
}

/// `a, b, c`.
fn list(targets: &[SocketAddr]) -> String {
    targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves each `--target` to its first address, in order; the same server twice is an
/// error (answers are told apart by the address they come from).
async fn resolve_targets(names: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        let addr = tokio::net::lookup_host(name)
            .await
            .with_context(|| format!("resolving --target {name}"))?
            .next()
            .with_context(|| format!("--target {name} resolves to no address"))?;
        anyhow::ensure!(
            !out.contains(&addr),
            "--target {addr} is given twice ({name})"
        );
        out.push(addr);
    }
    anyhow::ensure!(!out.is_empty(), "no --target");
    Ok(out)
}

fn udp_socket(
    bind: SocketAddr,
    peer: Option<SocketAddr>,
    buffer: usize,
) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = s.set_recv_buffer_size(buffer);
    let _ = s.set_send_buffer_size(buffer);
    s.set_nonblocking(true)?;
    s.bind(&bind.into())
        .with_context(|| format!("binding {bind}"))?;
    if let Some(peer) = peer {
        s.connect(&peer.into())
            .with_context(|| format!("connecting to {peer}"))?;
    }
    Ok(UdpSocket::from_std(s.into())?)
}

async fn run(cli: &Cli, sockets: usize, threads: usize) -> anyhow::Result<ExitCode> {
    let targets = resolve_targets(&cli.target).await?;
    let bind = bind_addr(cli.bind, &targets)?;
    // One target: connected sockets, as a single-server benchmark always had.
    let peer = match targets.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let plans = plans(cli);
    anyhow::ensure!(!plans.is_empty(), "nothing to do: no phase selected");

    // The simulated timeline ends before now: Starts at t0 … t0+59, interims every interval,
    // the Stops half an interval after the last interim.
    let rounds = if cli.phases.contains(&PhaseName::Interim) {
        cli.interims
    } else {
        0
    };
    let span = u64::from(cli.interim_interval) * (u64::from(rounds) + 1) + 60;
    let model = Arc::new(Model {
        sessions: cli.sessions,
        nases: cli.nases,
        user_prefix: cli.user_prefix.clone(),
        sid_base: cli.sid_base,
        interval: cli.interim_interval,
        t0: u64::from(unix_now()).saturating_sub(span) as u32,
    });
    let settings = Settings {
        model: model.clone(),
        secret: Arc::from(cli.secret.as_bytes()),
        timeout: Duration::from_millis(cli.timeout_ms),
        retries: cli.retries,
        targets: Arc::from(targets.as_slice()),
        spread: cli.spread,
    };
    let windows = engine::split_window(cli.window, sockets);
    let mut workers = Vec::with_capacity(sockets);
    for (k, w) in windows.iter().enumerate() {
        let socket = udp_socket(bind, peer, cli.socket_buffer)?;
        workers.push(Worker::new(
            k as u32,
            sockets as u32,
            socket,
            settings.clone(),
            *w,
        ));
    }

    let json_to_stdout = cli.json.as_deref() == Some("-");
    let target_text = match peer {
        Some(one) => format!("target {one}"),
        None => format!("targets {} ({})", list(&targets), cli.spread.as_str()),
    };
    let header = format!(
        "radacctd-bench {}: {target_text}, {} sessions on {} NASes, window {} over {sockets} \
         socket(s) from {bind}, timeout {} ms, {} retries, {threads} thread(s)",
        env!("CARGO_PKG_VERSION"),
        cli.sessions,
        cli.nases,
        cli.window,
        cli.timeout_ms,
        cli.retries,
    );
    eprintln!("{header}");

    let mut reports = Vec::new();
    for (name, plan) in &plans {
        let what = match plan {
            Plan::Bulk { rounds, .. } => {
                format!("{} requests", u64::from(cli.sessions) * u64::from(*rounds))
            }
            Plan::Steady { duration, .. } => format!("{:.0} s", duration.as_secs_f64()),
        };
        eprintln!("  {name}: {what} …");
        let started = Instant::now();
        let handles: Vec<_> = workers
            .drain(..)
            .map(|mut w| {
                let plan = *plan;
                tokio::spawn(async move {
                    w.run(plan).await;
                    w
                })
            })
            .collect();
        for h in handles {
            workers.push(h.await.context("worker task failed")?);
        }
        let elapsed = started.elapsed();
        let mut stats = Stats::for_targets(targets.len());
        for w in &mut workers {
            stats.merge(w.take_stats());
        }
        stats.latencies_us.sort_unstable();
        let report = PhaseReport {
            name,
            elapsed,
            stats,
        };
        eprintln!(
            "  {name}: {} answered in {:.2} s ({:.0}/s), {} lost",
            report.stats.answered,
            elapsed.as_secs_f64(),
            report.rate(),
            report.stats.lost
        );
        reports.push(report);
    }

    let mut text = String::new();
    let _ = writeln!(text, "{header}");
    text.push_str(&table(&reports));
    if targets.len() > 1 {
        text.push_str(&target_table(&reports, &targets));
    }
    if let Some(r) = reports.iter().find(|r| r.name == "steady") {
        let per_sec = f64::from(cli.sessions) / f64::from(cli.interim_interval);
        let _ = writeln!(
            text,
            "steady: {} Interim-Update, {} Stop + {} Start (churn); target {:.1} interims/s + \
             {:.2} churn/s",
            r.stats.by_kind[1],
            r.stats.by_kind[2],
            r.stats.by_kind[0],
            per_sec,
            per_sec * cli.churn
        );
    }

    let mut verdict = None;
    if let Some(url) = &cli.verify_db {
        let expected: Vec<engine::Expected> = workers.iter().flat_map(Worker::expected).collect();
        let v = verify_db(url, &model, &expected).await?;
        text.push_str(&v.text);
        verdict = Some(v);
    }

    if json_to_stdout {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    if let Some(dest) = &cli.json {
        let j = json_summary(cli, &targets, sockets, threads, &reports, verdict.as_ref());
        let s = serde_json::to_string_pretty(&j)?;
        if json_to_stdout {
            println!("{s}");
        } else {
            std::fs::write(dest, s + "\n").with_context(|| format!("writing {dest}"))?;
        }
    }
    Ok(match verdict {
        Some(v) if v.mismatches > 0 => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// The human-readable table, one row per phase and a total.
fn table(reports: &[PhaseReport]) -> String {
    let mut total = Stats::default();
    let mut elapsed = Duration::ZERO;
    for r in reports {
        total.merge(r.stats.clone());
        elapsed += r.elapsed;
    }
    total.latencies_us.sort_unstable();
    let total = PhaseReport {
        name: "total",
        elapsed,
        stats: total,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>9} {:>9} {:>9} {:>6} {:>7} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "phase",
        "requests",
        "answered",
        "pkts/s",
        "lost",
        "retrans",
        "bad",
        "dup",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "time s"
    );
    let rows = reports.iter().chain(if reports.len() > 1 {
        Some(&total)
    } else {
        None
    });
    for r in rows {
        let s = &r.stats;
        let _ = writeln!(
            out,
            "{:<8} {:>9} {:>9} {:>9.0} {:>6} {:>7} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8.2}",
            r.name,
            s.requests,
            s.answered,
            r.rate(),
            s.lost,
            s.retransmits,
            s.bad,
            s.duplicates,
            fmt_ms(r.ms(50.0)),
            fmt_ms(r.ms(90.0)),
            fmt_ms(r.ms(99.0)),
            fmt_ms(r.max_ms()),
            r.elapsed.as_secs_f64()
        );
    }
    let errors: u64 = reports.iter().map(|r| r.stats.errors).sum();
    if errors > 0 {
        let _ = writeln!(
            out,
            "socket errors: {errors} (e.g. ICMP port unreachable: is the server running?)"
        );
    }
    out
}

/// Verified answers per target and phase (several targets only).
fn target_table(reports: &[PhaseReport], targets: &[SocketAddr]) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<24}", "answered by target");
    for r in reports {
        let _ = write!(out, " {:>9}", r.name);
    }
    let _ = writeln!(out, " {:>9}", "total");
    for (t, addr) in targets.iter().enumerate() {
        let _ = write!(out, "{:<24}", addr.to_string());
        let mut total = 0;
        for r in reports {
            let n = r.stats.answered_by.get(t).copied().unwrap_or(0);
            total += n;
            let _ = write!(out, " {n:>9}");
        }
        let _ = writeln!(out, " {total:>9}");
    }
    out
}

fn json_summary(
    cli: &Cli,
    targets: &[SocketAddr],
    sockets: usize,
    threads: usize,
    reports: &[PhaseReport],
    verdict: Option<&Verdict>,
) -> serde_json::Value {
    let phases: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let s = &r.stats;
            serde_json::json!({
                "phase": r.name,
                "requests": s.requests,
                "answered": s.answered,
                "packets_per_second": r.rate(),
                "lost": s.lost,
                "retransmits": s.retransmits,
                "bad_responses": s.bad,
                "duplicate_responses": s.duplicates,
                "socket_errors": s.errors,
                "requests_by_type": {
                    "start": s.by_kind[0],
                    "interim_update": s.by_kind[1],
                    "stop": s.by_kind[2],
                },
                "latency_ms": {
                    "p50": r.ms(50.0),
                    "p90": r.ms(90.0),
                    "p99": r.ms(99.0),
                    "max": r.max_ms(),
                },
                "elapsed_seconds": r.elapsed.as_secs_f64(),
                "answered_by_target": targets
                    .iter()
                    .enumerate()
                    .map(|(t, a)| {
                        let n = s.answered_by.get(t).copied().unwrap_or(0);
                        (a.to_string(), serde_json::Value::from(n))
                    })
                    .collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    serde_json::json!({
        "target": targets.first().map(ToString::to_string),
        "targets": targets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "spread": cli.spread.as_str(),
        "sessions": cli.sessions,
        "nases": cli.nases,
        "window": cli.window,
        "sockets": sockets,
        "threads": threads,
        "timeout_ms": cli.timeout_ms,
        "retries": cli.retries,
        "interims": cli.interims,
        "steady_seconds": cli.steady,
        "churn": cli.churn,
        "phases": phases,
        "verify_db": verdict.map(|v| serde_json::json!({
            "checked": v.checked,
            "mismatches": v.mismatches,
        })),
    })
}

#[derive(Debug)]
struct Verdict {
    checked: usize,
    mismatches: usize,
    text: String,
}

async fn verify_db(
    url: &str,
    model: &Model,
    expected: &[engine::Expected],
) -> anyhow::Result<Verdict> {
    let started = Instant::now();
    let expect: Vec<verify::Expect> = expected
        .iter()
        .map(|e| {
            let id = model.identity(e.session, e.inc);
            verify::Expect {
                key: id.acct_unique_id(),
                user: id.user,
                sid: id.sid,
                stopped: e.stopped,
                input: e.input,
                output: e.output,
            }
        })
        .collect();
    let db = verify::Db::connect(url).await?;
    let keys: Vec<String> = expect.iter().map(|e| e.key.clone()).collect();
    let found = db.fetch(&keys).await?;
    let mismatches = verify::compare(&expect, &found);
    let stopped = expect.iter().filter(|e| e.stopped).count();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "verify-db: {} sessions ({} stopped, {} open) checked in {:.2} s: {} rows found under \
         acctuniqueid = md5(\"user,sid,nasip,nasid,portid,port\"), {} mismatch(es)",
        expect.len(),
        stopped,
        expect.len() - stopped,
        started.elapsed().as_secs_f64(),
        found.len(),
        mismatches.len()
    );
    for m in mismatches.iter().take(20) {
        let _ = write!(
            text,
            "  MISMATCH {} {} {}: {}",
            m.user, m.sid, m.key, m.problem
        );
        if m.problem.starts_with("no row") {
            match db.keys_of(&m.user, &m.sid).await {
                Ok(k) if !k.is_empty() => {
                    let _ = write!(text, " (stored under acctuniqueid {})", k.join(", "));
                }
                _ => {}
            }
        }
        text.push('\n');
    }
    if mismatches.len() > 20 {
        let _ = writeln!(text, "  … and {} more", mismatches.len() - 20);
    }
    db.close().await;
    Ok(Verdict {
        checked: expect.len(),
        mismatches: mismatches.len(),
        text,
    })
}

/// Answers every Accounting-Request signed with `secret` immediately (no storage).
async fn null_server(addr: SocketAddr, secret: &[u8], buffer: usize) -> anyhow::Result<ExitCode> {
    let socket = udp_socket(addr, None, buffer)?;
    eprintln!(
        "radacctd-bench: null accounting server on {} (answers every valid Accounting-Request; \
         Ctrl-C to stop)",
        socket.local_addr()?
    );
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(64);
    let (mut answered, mut dropped) = (0u64, 0u64);
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            _ = tokio::signal::ctrl_c() => break,
        };
        let Ok(p) = Packet::decode(buf.get(..n).unwrap_or_default()) else {
            dropped += 1;
            continue;
        };
        if p.code() != Code::AccountingRequest || !p.verify_request_authenticator(secret) {
            dropped += 1;
            continue;
        }
        let b = PacketBuilder::new(Code::AccountingResponse, p.identifier());
        if b.encode_response_into(p.authenticator(), secret, &mut out)
            .is_ok()
            && socket.send_to(&out, peer).await.is_ok()
        {
            answered += 1;
        }
    }
    eprintln!("radacctd-bench: null server answered {answered}, dropped {dropped}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("radacctd-bench").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_and_phase_selection() {
        let c = cli(&[]);
        assert_eq!(c.target, ["127.0.0.1:1813"]);
        assert_eq!(c.spread, Spread::Failover);
        assert_eq!(c.secret, "testing123");
        assert_eq!((c.sessions, c.nases, c.window), (25_000, 4, 64));
        assert_eq!((c.timeout_ms, c.retries, c.interims), (1000, 3, 1));
        assert_eq!(c.sid_base, 0x81a0_0000);
        let names: Vec<&str> = plans(&c).iter().map(|p| p.0).collect();
        assert_eq!(names, ["start", "interim", "stop"]);
        let c = cli(&["--phases", "stop,start", "--steady", "30"]);
        let names: Vec<&str> = plans(&c).iter().map(|p| p.0).collect();
        assert_eq!(names, ["start", "steady", "stop"], "fixed order");
        let c = cli(&["--phases", "interim", "--interims", "0"]);
        assert!(plans(&c).is_empty());
        assert!(Cli::try_parse_from(["x", "--phases", "bogus"]).is_err());
        assert_eq!(parse_hex_u32("0x10"), Ok(16));
        assert!(parse_hex_u32("xyz").is_err());
        let c = cli(&["--json"]);
        assert_eq!(c.json.as_deref(), Some("-"));
        let c = cli(&["--json", "out.json"]);
        assert_eq!(c.json.as_deref(), Some("out.json"));
    }

    #[test]
    fn several_targets() {
        let c = cli(&[
            "--target",
            "127.0.0.1:1813,127.0.0.1:1814",
            "--spread",
            "alternate",
        ]);
        assert_eq!(c.target, ["127.0.0.1:1813", "127.0.0.1:1814"]);
        assert_eq!(c.spread, Spread::Alternate);
        let c = cli(&["--target", "127.0.0.1:1813", "--target", "127.0.0.1:1814"]);
        assert_eq!(c.target, ["127.0.0.1:1813", "127.0.0.1:1814"]);
        assert!(Cli::try_parse_from(["x", "--spread", "random"]).is_err());

        let a: SocketAddr = "127.0.0.1:1813".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1814".parse().unwrap();
        let far: SocketAddr = "192.0.2.1:1813".parse().unwrap();
        let v6: SocketAddr = "[::1]:1813".parse().unwrap();
        let ip = |t: &[SocketAddr]| bind_addr(None, t).unwrap().ip().to_string();
        assert_eq!(ip(&[a, b]), "127.0.0.1");
        assert_eq!(ip(&[a, far]), "0.0.0.0", "not all on loopback");
        assert_eq!(ip(&[v6]), "::1");
        let err = bind_addr(None, &[a, v6]).unwrap_err().to_string();
        assert!(err.contains("mix IPv4 and IPv6"), "{err}");
        let given = bind_addr(Some("10.0.0.1".parse().unwrap()), &[a, v6]).unwrap();
        assert_eq!(given.to_string(), "10.0.0.1:0", "--bind wins");

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let r = rt.block_on(resolve_targets(&names(&[
            "127.0.0.1:1813",
            " 127.0.0.1:1814",
        ])));
        assert_eq!(r.unwrap(), [a, b]);
        let err = rt
            .block_on(resolve_targets(&names(&[
                "127.0.0.1:1813",
                "127.0.0.1:1813",
            ])))
            .unwrap_err()
            .to_string();
        assert!(err.contains("given twice"), "{err}");
        assert!(rt.block_on(resolve_targets(&names(&["nonsense"]))).is_err());
    }

    #[test]
    fn target_table_counts_answers_per_target_and_phase() {
        let mk = |name, by: Vec<u64>| PhaseReport {
            name,
            elapsed: Duration::from_secs(1),
            stats: Stats {
                answered_by: by,
                ..Stats::default()
            },
        };
        let targets: Vec<SocketAddr> = vec![
            "127.0.0.1:1813".parse().unwrap(),
            "127.0.0.1:1814".parse().unwrap(),
        ];
        let t = target_table(&[mk("start", vec![3, 4]), mk("stop", vec![5])], &targets);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines,
            [
                vec!["answered", "by", "target", "start", "stop", "total"],
                vec!["127.0.0.1:1813", "3", "5", "8"],
                vec!["127.0.0.1:1814", "4", "0", "4"],
            ]
        );
    }

    #[test]
    fn argument_checks() {
        assert!(check_args(&cli(&[])).is_ok());
        assert!(check_args(&cli(&["--window", "1024", "--sockets", "3"])).is_err());
        assert!(check_args(&cli(&["--window", "1024", "--sockets", "4"])).is_ok());
        assert!(check_args(&cli(&["--nases", "0"])).is_err());
        assert!(check_args(&cli(&["--churn", "2"])).is_err());
        assert!(check_args(&cli(&["--steady", "0"])).is_err());
    }

    #[test]
    fn table_has_a_row_per_phase_and_a_total() {
        let mk = |name, answered: u64, lat: Vec<u32>| PhaseReport {
            name,
            elapsed: Duration::from_secs(2),
            stats: Stats {
                requests: answered,
                answered,
                latencies_us: lat,
                ..Stats::default()
            },
        };
        let t = table(&[
            mk("start", 100, vec![1000, 2000, 3000]),
            mk("stop", 50, vec![500]),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[1].starts_with("start") && lines[1].contains("50 "));
        assert!(lines[3].starts_with("total") && lines[3].contains(" 150 "));
        assert!(lines[3].contains("3.00"), "max over all phases: {t}");
    }
}
