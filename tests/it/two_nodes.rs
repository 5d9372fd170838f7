//! Two radacctd nodes ("a" and "b", in this process, on their own ports) on one fresh
//! PostgreSQL database, driven over real UDP by the `radacctd-bench` binary playing a NAS with
//! two `/radius` entries: every final row right (`--verify-db`), every request answered, and
//! after the last answer BOTH nodes' Sessions API (the open-session list, all pages, and the
//! count, answered from each node's live index) equals SQL's open rows within 1 s, whichever
//! node wrote them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use radacctd::config::Config;
use radacctd::metrics::Stats;
use radacctd::store::Store;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::common::api::{admin, api_config};
use crate::common::{Backend, TestApp, TestDb};

/// Sessions per generator run.
const SESSIONS: u32 = 2_000;

/// How long after the last answer every node's API must equal SQL.
const COHERENCE: Duration = Duration::from_secs(1);

/// Node `name`'s configuration; its RADIUS listener on `radius` (else an ephemeral port).
fn node_config(db: &TestDb, name: &str, radius: Option<SocketAddr>) -> Config {
    let mut c = api_config(db);
    c.node.name = name.to_owned();
    if let Some(addr) = radius {
        c.radius.listen = addr;
    }
    // The checks page through every open session of both nodes, several times a second.
    c.api.rate_limit_burst = 100_000;
    c
}

/// Starts node `name` on `radius`, waiting (up to 10 s) for the port a stopped node held.
async fn start_on(db: &TestDb, name: &str, radius: SocketAddr) -> TestApp {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind(radius).is_err() {
        assert!(Instant::now() < deadline, "{radius} still taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    TestApp::start(node_config(db, name, Some(radius))).await
}

/// The two nodes, started one after the other (each migrates the database at start).
async fn two_nodes(db: &TestDb) -> (TestApp, TestApp) {
    let a = TestApp::start(node_config(db, "a", None)).await;
    let b = TestApp::start(node_config(db, "b", None)).await;
    (a, b)
}

/// A running `radacctd-bench`: its progress lines are echoed to the test's output and watched
/// for the end of its last phase, the moment of its last answer.
struct Generator {
    label: &'static str,
    child: tokio::process::Child,
    last_answer: watch::Receiver<Option<Instant>>,
    log: tokio::task::JoinHandle<String>,
}

impl Generator {
    /// `radacctd-bench` with `args` plus the database to verify and the JSON summary on stdout;
    /// `last_phase` is the name of the last phase it runs.
    fn spawn(label: &'static str, db: &TestDb, last_phase: &str, args: &[String]) -> Generator {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_radacctd-bench"))
            .args(args)
            .args(["--verify-db", &db.url, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("radacctd-bench starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, last_answer) = watch::channel(None);
        let done = format!("  {last_phase}: ");
        let log = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut log = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with(&done) && line.contains(" answered in ") {
                    let _ = tx.send(Some(Instant::now()));
                }
                eprintln!("[{label}] {line}");
                log.push_str(&line);
                log.push('\n');
            }
            log
        });
        Generator {
            label,
            child,
            last_answer,
            log,
        }
    }

    /// When its last phase ended (every request answered or given up); panics if it exits
    /// before, or takes more than 5 minutes.
    async fn last_answer(&mut self) -> Instant {
        let waited = tokio::time::timeout(
            Duration::from_secs(300),
            self.last_answer.wait_for(Option::is_some),
        )
        .await;
        match waited {
            Ok(Ok(at)) => at.expect("set"),
            _ => panic!("{}: the last phase did not end", self.label),
        }
    }

    /// Whether it is still running.
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it to exit; its JSON summary after checking that it exited 0 (the database
    /// verification passed), that every request was answered and that nothing was malformed.
    async fn finish(self) -> Value {
        let Generator {
            label, child, log, ..
        } = self;
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("{label}: did not exit"))
            .expect("radacctd-bench output");
        let log = log.await.expect("log task");
        assert!(
            out.status.success(),
            "{label}: radacctd-bench exited {} (1: --verify-db found differences):\n{log}",
            out.status
        );
        let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
        for p in summary["phases"].as_array().expect("phases") {
            let requests = p["requests"].as_u64().expect("requests");
            assert!(requests > 0, "{label}: {p}");
            assert_eq!(
                p["answered"].as_u64(),
                Some(requests),
                "{label}: {p}\n{log}"
            );
            assert_eq!(p["lost"].as_u64(), Some(0), "{label}: {p}");
            assert_eq!(p["bad_responses"].as_u64(), Some(0), "{label}: {p}");
            let by_target: u64 = p["answered_by_target"]
                .as_object()
                .expect("answered_by_target")
                .values()
                .map(|n| n.as_u64().expect("count"))
                .sum();
            assert_eq!(by_target, requests, "{label}: {p}");
        }
        let verify = &summary["verify_db"];
        assert_eq!(verify["mismatches"].as_u64(), Some(0), "{label}: {verify}");
        assert_eq!(
            verify["checked"].as_u64(),
            Some(u64::from(SESSIONS)),
            "{label}: {verify}"
        );
        summary
    }
}

/// Answers of `target` in phase `phase` of a summary.
fn answered_by(summary: &Value, phase: &str, target: SocketAddr) -> u64 {
    summary["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .find(|p| p["phase"] == phase)
        .and_then(|p| p["answered_by_target"][target.to_string()].as_u64())
        .unwrap_or_else(|| panic!("no {phase} answers for {target}: {summary}"))
}

/// What the list shows of an open session and the writes to it change: a node that missed
/// another node's Interim-Update shows old counters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Open {
    username: String,
    input: i64,
    output: i64,
    session_time: i64,
}

/// The open rows as SQL has them, by radacctid.
async fn open_in_sql(store: &Store) -> BTreeMap<i64, Open> {
    let Store::Postgres(pg) = store else {
        unreachable!("a PostgreSQL test")
    };
    type SqlRow = (i64, Option<String>, Option<i64>, Option<i64>, Option<i64>);
    let rows: Vec<SqlRow> = sqlx::query_as(
        "SELECT radacctid, username, acctinputoctets, acctoutputoctets, acctsessiontime \
         FROM radacct WHERE acctstoptime IS NULL",
    )
    .fetch_all(pg.pool())
    .await
    .expect("open rows");
    rows.into_iter()
        .map(|(id, user, input, output, time)| {
            let open = Open {
                username: user.unwrap_or_default(),
                input: input.unwrap_or(0),
                output: output.unwrap_or(0),
                session_time: time.unwrap_or(0),
            };
            (id, open)
        })
        .collect()
}

/// A node's `GET /api/sessions?status=active`, every page (the first, then the others at
/// once, so the whole list is read in as short a time as possible), by radacctid.
async fn open_in_api(node: &TestApp, token: &str) -> BTreeMap<i64, Open> {
    const LIMIT: u64 = 500;
    let page = |n: u64| async move {
        let path = format!(
            "/api/sessions?status=active&limit={LIMIT}&page={n}&sort=acctstarttime&order=asc"
        );
        let (status, body) = node.json(&path, Some(token)).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let first = page(1).await;
    let total = first["pagination"]["total"].as_u64().expect("total");
    let rest = futures_util::future::join_all((2..=total.div_ceil(LIMIT)).map(page)).await;
    let mut out = BTreeMap::new();
    for body in std::iter::once(first).chain(rest) {
        for o in body["data"].as_array().expect("data") {
            let open = Open {
                username: o["username"].as_str().unwrap_or_default().to_owned(),
                input: o["acctinputoctets"].as_i64().unwrap_or(0),
                output: o["acctoutputoctets"].as_i64().unwrap_or(0),
                session_time: o["acctsessiontime"].as_i64().unwrap_or(0),
            };
            out.insert(o["radacctid"].as_i64().expect("radacctid"), open);
        }
    }
    out
}

/// The differences between SQL and one node's answers, at most 10 named.
fn differences(
    node: &str,
    sql: &BTreeMap<i64, Open>,
    api: &BTreeMap<i64, Open>,
    count: i64,
) -> Vec<String> {
    let mut out = Vec::new();
    if count != sql.len() as i64 {
        out.push(format!(
            "node {node}: /api/sessions/count {count}, SQL {}",
            sql.len()
        ));
    }
    if api.len() != sql.len() {
        out.push(format!(
            "node {node}: {} active sessions listed, SQL {} open rows",
            api.len(),
            sql.len()
        ));
    }
    let mut named = 0;
    for (id, row) in sql {
        let problem = match api.get(id) {
            None => format!("node {node}: open row {id} {row:?} not listed"),
            Some(seen) if seen != row => {
                format!("node {node}: row {id} listed as {seen:?}, SQL has {row:?}")
            }
            Some(_) => continue,
        };
        if named < 10 {
            out.push(problem);
        }
        named += 1;
    }
    for (id, seen) in api {
        if !sql.contains_key(id) {
            if named < 10 {
                out.push(format!(
                    "node {node}: {id} {seen:?} listed, not open in SQL"
                ));
            }
            named += 1;
        }
    }
    if named > 10 {
        out.push(format!("node {node}: … {} more", named - 10));
    }
    out
}

/// Polls until every node's count and list equal SQL's open rows; fails, printing the
/// differences, when no check that began by `last_answer` + 1 s found them equal. A check
/// reads the counts first (cheap) and the lists, which take longer, only once the counts
/// agree. Returns the number of open rows.
async fn assert_nodes_equal_sql(
    store: &Store,
    nodes: &[(&str, &TestApp)],
    last_answer: Instant,
) -> usize {
    let token = admin();
    let deadline = last_answer + COHERENCE;
    for attempt in 1.. {
        let began = last_answer.elapsed().as_millis();
        let counts =
            futures_util::future::join_all(nodes.iter().map(|(_, node)| node.count(&token))).await;
        let sql = open_in_sql(store).await;
        let counts_agree = counts.iter().all(|&c| c == sql.len() as i64);
        let problems = if counts_agree || Instant::now() >= deadline {
            compare_lists(&sql, nodes, &counts, &token).await
        } else {
            vec![format!("counts {counts:?}, SQL {}", sql.len())]
        };
        if problems.is_empty() {
            eprintln!(
                "both nodes equal SQL ({} open rows): check {attempt}, began {began} ms after the \
                 last answer, done after {} ms",
                sql.len(),
                last_answer.elapsed().as_millis()
            );
            return sql.len();
        }
        assert!(
            Instant::now() < deadline,
            "{} ms after the last answer (check {attempt} began after {began} ms) the nodes' API \
             still differs from SQL:\n{}",
            last_answer.elapsed().as_millis(),
            problems.join("\n")
        );
        eprintln!(
            "check {attempt} ({began} ms after the last answer): {} difference(s), e.g. {}",
            problems.len(),
            problems[0]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!("the loop returns or fails")
}

/// Every node's list (both at once) against SQL's open rows, with the counts read before.
async fn compare_lists(
    sql: &BTreeMap<i64, Open>,
    nodes: &[(&str, &TestApp)],
    counts: &[i64],
    token: &str,
) -> Vec<String> {
    let lists =
        futures_util::future::join_all(nodes.iter().map(|(_, node)| open_in_api(node, token)))
            .await;
    let mut problems = Vec::new();
    for (((name, _), list), count) in nodes.iter().zip(&lists).zip(counts) {
        problems.extend(differences(name, sql, list, *count));
    }
    problems
}

/// The generator's arguments common to every run here.
fn bench_args(
    targets: &[SocketAddr],
    spread: &str,
    phases: &str,
    run: (&str, &str),
) -> Vec<String> {
    let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
    [
        "--target",
        &targets.join(","),
        "--spread",
        spread,
        "--sessions",
        &SESSIONS.to_string(),
        "--phases",
        phases,
        "--user-prefix",
        run.0,
        "--sid-base",
        run.1,
        "--window",
        "64",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Each session's packets alternate between the nodes (Start on one, Interim on the other,
/// …): one run that closes every session, one that leaves them open after two Interim-Updates.
/// Every row is right, and both nodes list exactly SQL's open rows with SQL's counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternating_packets_land_right() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let (a, b) = two_nodes(&db).await;
    let targets = [a.radius_addr, b.radius_addr];
    let store = db.open_store().await;

    for (run, phases, last_phase, open_after) in [
        (("closed", "a0000000"), "start,interim,stop", "stop", 0),
        (
            ("open", "b0000000"),
            "start,interim",
            "interim",
            SESSIONS as usize,
        ),
    ] {
        let mut args = bench_args(&targets, "alternate", phases, run);
        args.extend([
            "--interims".into(),
            "2".into(),
            "--timeout-ms".into(),
            "2000".into(),
        ]);
        let mut generator = Generator::spawn(run.0, &db, last_phase, &args);
        let last_answer = generator.last_answer().await;
        let open = assert_nodes_equal_sql(&store, &[("a", &a), ("b", &b)], last_answer).await;
        assert_eq!(open, open_after, "{} run", run.0);
        let summary = generator.finish().await;
        // Start of session i on target i mod 2: half each, unless a timeout moved some.
        let starts = [
            answered_by(&summary, "start", targets[0]),
            answered_by(&summary, "start", targets[1]),
        ];
        assert!(starts.iter().all(|&n| n > 0), "{summary}");
        if summary["phases"][0]["retransmits"] == 0 {
            assert_eq!(starts, [1_000, 1_000], "{summary}");
        }
        assert!(
            answered_by(&summary, "interim", targets[1]) > 0,
            "{summary}"
        );
    }
    let stats = [&a.stats, &b.stats].map(|s| Stats::get(&s.responses));
    assert!(
        stats.iter().all(|&n| n >= 5_000),
        "both nodes answered a share: {stats:?}"
    );
    store.close().await;
    a.stop().await;
    b.stop().await;
}

/// A NAS with A as primary and B as backup: A is shut down in the middle of the Interim-Updates
/// (it stops answering), the requests that time out are retransmitted to B, then A comes back
/// on the same port and takes the traffic again. Two generators at once: one closes its
/// sessions, one leaves them open. Every request is answered, every row is right, and both
/// nodes list exactly SQL's open rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_mid_run_loses_nothing() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let (a, b) = two_nodes(&db).await;
    let targets = [a.radius_addr, b.radius_addr];
    let store = db.open_store().await;

    let failover = |phases, run| {
        let mut args = bench_args(&targets, "failover", phases, run);
        args.extend([
            "--interims".into(),
            "3".into(),
            "--timeout-ms".into(),
            "300".into(),
            "--retries".into(),
            "5".into(),
        ]);
        args
    };
    let mut closing = Generator::spawn(
        "closing",
        &db,
        "stop",
        &failover("start,interim,stop", ("fclosed", "c0000000")),
    );
    let mut leaving = Generator::spawn(
        "open",
        &db,
        "interim",
        &failover("start,interim", ("fopen", "d0000000")),
    );

    // Both runs' Starts (2 × 2,000) and some of their Interim-Updates answered by A, then A
    // goes away.
    wait_for(
        "A answers 5,000 requests",
        &a.stats,
        5_000,
        &mut [&mut closing, &mut leaving],
    )
    .await;
    let b_before = Stats::get(&b.stats.responses);
    a.stop().await;
    eprintln!("node a stopped");
    wait_for(
        "B answers 500 requests A timed out on",
        &b.stats,
        b_before + 500,
        &mut [&mut closing, &mut leaving],
    )
    .await;
    let a = start_on(&db, "a", targets[0]).await;
    eprintln!("node a back on {}", targets[0]);

    let last_answer = closing.last_answer().await.max(leaving.last_answer().await);
    let open = assert_nodes_equal_sql(&store, &[("a", &a), ("b", &b)], last_answer).await;
    assert_eq!(
        open, SESSIONS as usize,
        "the second run's sessions stay open"
    );
    let mut by_b = 0;
    for summary in [closing.finish().await, leaving.finish().await] {
        by_b += answered_by(&summary, "interim", targets[1]);
        let interims = answered_by(&summary, "interim", targets[0]);
        assert!(
            interims > 0,
            "A answered interims before and after: {summary}"
        );
    }
    assert!(by_b >= 500, "B took over: {by_b} interims answered by B");
    assert!(
        Stats::get(&a.stats.responses) > 0,
        "the restarted A took the traffic back"
    );
    store.close().await;
    a.stop().await;
    b.stop().await;
}

/// Waits (up to 2 minutes) until a node has sent `responses` answers; fails early if a
/// generator exits meanwhile (it would never get there).
async fn wait_for(what: &str, stats: &Stats, responses: u64, generators: &mut [&mut Generator]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Stats::get(&stats.responses) < responses {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        for g in generators.iter_mut() {
            assert!(g.running(), "{} exited while waiting: {what}", g.label);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
