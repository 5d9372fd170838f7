//! Reliability: database outages (a TCP proxy the test cuts), the journal and its replay,
//! restarts with a non-empty journal, the journal's size cap, `kill -9` under load, and a
//! flood of garbage next to valid traffic.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::freeradius::PgTarget;
use common::proxy::TcpProxy;
use common::{Backend, Nas, SECRET, Sess, TestApp, TestDb, now, require, test_config};
use radacctd::config::Config;
use radacctd::metrics::{DropReason, Stats};

/// A fresh PostgreSQL database reached through a proxy the test can cut.
async fn pg_behind_proxy() -> Option<(TestDb, TcpProxy, String)> {
    let db = TestDb::new(Backend::Postgres).await?;
    let target = PgTarget::from_url(&db.url).expect("url");
    if !require(
        !target.is_socket(),
        "PostgreSQL over TCP (for the outage proxy)",
    ) {
        return None;
    }
    let host = if target.host == "localhost" {
        "127.0.0.1"
    } else {
        target.host.as_str()
    };
    let upstream: SocketAddr = format!("{host}:{}", target.port).parse().expect("upstream");
    let proxy = TcpProxy::start(upstream).await;
    let url = PgTarget {
        host: "127.0.0.1".into(),
        port: proxy.addr.port(),
        ..target
    }
    .to_url();
    Some((db, proxy, url))
}

fn journaled_config(db: &TestDb, url: &str, dir: &std::path::Path) -> Config {
    let mut c = test_config(db);
    c.database.url = radacctd::config::Secret::new(url);
    c.database.acquire_timeout_secs = 1;
    c.radius.commit_timeout_secs = 2;
    c.journal.enabled = true;
    c.journal.path = dir.join("radacctd.journal");
    c.journal.replay_interval_ms = 100;
    c
}

/// Waits up to 30 s for `f`.
async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn replayed_all(app: &TestApp) -> bool {
    let appended = Stats::get(&app.stats.journal_appended);
    appended > 0
        && Stats::get(&app.stats.journal_replayed) == appended
        && app.index.collect(|s| s.radacctid.is_none()).is_empty()
}

fn assert_index_equals_open_rows(app: &TestApp, open: &[radacctd::sessions::Row]) {
    // Row versions are the writer's business (which writes need a lookup), not the index's
    // content.
    let mut index: Vec<_> = app
        .index
        .collect(|_| true)
        .into_iter()
        .map(|s| radacctd::sessions::Session {
            row_version: None,
            ..s
        })
        .collect();
    index.sort_by(|a, b| a.acctuniqueid.cmp(&b.acctuniqueid));
    let expected: Vec<_> = open
        .iter()
        .map(|r| radacctd::sessions::Session::from_row(r, None))
        .collect();
    assert_eq!(index, expected, "index = open rows in SQL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_is_journaled_then_replayed_exactly_once() {
    let Some((db, proxy, url)) = pg_behind_proxy().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let app = TestApp::start(journaled_config(&db, &url, dir.path())).await;
    let mut nas = Nas::new(app.addr).await;
    let n = now();
    let sessions: Vec<Sess> = (1..=12).map(Sess::new).collect();
    for s in &sessions[..10] {
        nas.send(&s.start(n - 1000)).await.expect("start committed");
    }
    proxy.cut();
    // During the outage every packet is journaled, fsynced and answered.
    for s in &sessions[..5] {
        nas.send(&s.interim(n - 500, 500, 5000, 6000))
            .await
            .expect("answered from the journal");
    }
    for s in &sessions[5..8] {
        nas.send(&s.stop(n - 400, 600, 7000, 8000, 1))
            .await
            .expect("answered");
    }
    for s in &sessions[10..] {
        nas.send(&s.start(n - 300)).await.expect("answered");
    }
    assert_eq!(Stats::get(&app.stats.journal_appended), 10);
    // The index follows the journal: stops gone, journal-only sessions without an id.
    assert_eq!(app.index.len(), 9);
    for s in &sessions[10..] {
        assert_eq!(app.index.get(&s.key()).expect("listed").radacctid, None);
    }
    assert_eq!(
        app.index
            .get(&sessions[0].key())
            .expect("open")
            .acctinputoctets,
        Some(5000)
    );
    proxy.restore();
    wait_for("the journal to be replayed", || replayed_all(&app)).await;

    let rows = db.rows().await;
    let by_key: BTreeMap<_, _> = rows.iter().map(|r| (r.acctuniqueid.clone(), r)).collect();
    assert_eq!(rows.len(), 12, "every session exactly once");
    for s in &sessions[..5] {
        let r = by_key[&s.key()];
        assert!(r.is_open());
        assert_eq!(r.acctinputoctets, Some(5000));
        assert_eq!(r.acctupdatetime, Some(i64::from(n) - 500));
    }
    for s in &sessions[5..8] {
        let r = by_key[&s.key()];
        assert_eq!(r.acctstoptime, Some(i64::from(n) - 400));
        assert_eq!(r.acctoutputoctets, Some(8000));
    }
    for s in &sessions[10..] {
        assert!(by_key[&s.key()].is_open());
    }
    assert_index_equals_open_rows(&app, &db.open_rows().await);
    // Direct commits again.
    let s = Sess::new(99);
    nas.send(&s.start(n)).await.expect("answered");
    assert!(app.index.get(&s.key()).expect("open").radacctid.is_some());
    assert_eq!(
        std::fs::metadata(dir.path().join("radacctd.journal"))
            .expect("journal")
            .len(),
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_a_non_empty_journal_replays_it_before_answering() {
    let Some((db, proxy, url)) = pg_behind_proxy().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let config = journaled_config(&db, &url, dir.path());
    let app = TestApp::start(config.clone()).await;
    let mut nas = Nas::new(app.addr).await;
    proxy.cut();
    let n = now();
    for i in 1..=3 {
        nas.send(&Sess::new(i).start(n - 100))
            .await
            .expect("journaled");
    }
    app.stop().await;
    assert!(
        std::fs::metadata(dir.path().join("radacctd.journal"))
            .expect("journal")
            .len()
            > 0
    );
    assert!(db.rows().await.is_empty());

    proxy.restore();
    let app = TestApp::start(config).await;
    // Nothing has been sent to the new process: the rows are there because start-up replayed
    // the journal before the listener answered anything.
    let rows = db.rows().await;
    assert_eq!(rows.len(), 3);
    assert_eq!(
        std::fs::metadata(dir.path().join("radacctd.journal"))
            .expect("journal")
            .len(),
        0
    );
    assert_index_equals_open_rows(&app, &db.open_rows().await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_with_the_database_down_answers_into_the_journal() {
    let Some((db, proxy, url)) = pg_behind_proxy().await else {
        return;
    };
    // Create the schema first, as a previous run would have.
    db.open_store().await.migrate().await.expect("migrate");
    let dir = tempfile::tempdir().expect("dir");
    proxy.cut();
    let app = TestApp::start(journaled_config(&db, &url, dir.path())).await;
    let mut nas = Nas::new(app.addr).await;
    let s = Sess::new(1);
    nas.send(&s.start(now() - 10))
        .await
        .expect("answered into the journal");
    assert_eq!(app.index.get(&s.key()).expect("listed").radacctid, None);
    proxy.restore();
    wait_for("the journal to be replayed", || replayed_all(&app)).await;
    assert_eq!(db.rows().await.len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_refuses_answers_then_recovers() {
    let Some((db, proxy, url)) = pg_behind_proxy().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut config = journaled_config(&db, &url, dir.path());
    config.journal.max_bytes = 3000; // a few entries
    let app = TestApp::start(config).await;
    let mut nas = Nas::new(app.addr).await;
    proxy.cut();
    let n = now();
    let mut answered = Vec::new();
    let mut refused = Vec::new();
    for i in 1..=12 {
        let s = Sess::new(i);
        let req = nas.request(&s.start(n - 100));
        match nas.exchange(&req, Duration::from_millis(2500)).await {
            Some(_) => answered.push(s),
            None => refused.push((s, req)),
        }
    }
    assert!(!answered.is_empty(), "the journal took some");
    assert!(!refused.is_empty(), "the cap refused the rest");
    assert!(refused.len() as u64 <= app.stats.dropped_count(DropReason::JournalFull));
    proxy.restore();
    wait_for("the journal to be replayed", || replayed_all(&app)).await;
    assert_eq!(
        db.rows().await.len(),
        answered.len(),
        "what was answered is stored, once"
    );
    // The NAS retransmits what was not answered: now it is stored and answered.
    for (_, req) in &refused {
        nas.send_bytes(req).await.expect("answered after recovery");
    }
    assert_eq!(db.rows().await.len(), 12);
    assert_index_equals_open_rows(&app, &db.open_rows().await);
    app.stop().await;
}

both_stores!(kill_9_under_load_loses_no_answered_packet);

/// Starts the real binary on `port`; returns once it answers.
async fn spawn_daemon(db_url: &str, port: u16, journal: &std::path::Path) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_radacctd"))
        .arg("serve")
        .env("RADACCTD__DATABASE__URL", db_url)
        .env("RADACCTD__RADIUS__LISTEN", format!("127.0.0.1:{port}"))
        .env("RADACCTD__API__LISTEN", "127.0.0.1:0")
        .env("RADACCTD__METRICS__LISTEN", "127.0.0.1:0")
        .env("RADACCTD__JOURNAL__PATH", journal)
        .env("RADACCTD__JOBS__SWEEP_ENABLED", "false")
        .env("RADACCTD__JOBS__ARCHIVE_ENABLED", "false")
        .env("RADACCTD__JOBS__ENSURE_INDEXES", "false")
        .env("RADACCTD__LOG__LEVEL", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("daemon starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut probe = Nas::new(addr).await;
    for _ in 0..100 {
        let req = probe.request(&Sess::new(999_999).start(now()));
        if probe
            .exchange(&req, Duration::from_millis(300))
            .await
            .is_some()
        {
            return child;
        }
    }
    panic!("the daemon did not answer");
}

async fn kill_9_under_load_loses_no_answered_packet(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let journal = dir.path().join("radacctd.journal");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let mut daemon = spawn_daemon(&db.url, port, &journal).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let n = now();
    // 16 NASes, each sending Start then Stop for its sessions, one request at a time.
    let answered = Arc::new(std::sync::Mutex::new(Vec::<(u32, bool)>::new()));
    let mut tasks = Vec::new();
    for t in 0..16u32 {
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let mut nas = Nas::new(addr).await;
            for i in 0..10_000u32 {
                let s = Sess::new(t * 10_000 + i);
                let start = nas.request(&s.start(n - 100));
                if nas
                    .exchange(&start, Duration::from_millis(500))
                    .await
                    .is_none()
                {
                    return;
                }
                answered.lock().expect("lock").push((t * 10_000 + i, false));
                let stop = nas.request(&s.stop(n - 10, 90, 100, 200, 1));
                if nas
                    .exchange(&stop, Duration::from_millis(500))
                    .await
                    .is_none()
                {
                    return;
                }
                answered.lock().expect("lock").push((t * 10_000 + i, true));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.start_kill().expect("SIGKILL");
    daemon.wait().await.expect("dead");
    for t in tasks {
        let _ = t.await;
    }
    let answered = answered.lock().expect("lock").clone();
    assert!(
        answered.len() > 50,
        "load was running ({} answers)",
        answered.len()
    );

    // Restart: whatever the journal holds is replayed; then compare.
    let mut daemon = spawn_daemon(&db.url, port, &journal).await;
    daemon.start_kill().expect("stop");
    daemon.wait().await.expect("dead");
    let rows = db.rows().await;
    let by_key: BTreeMap<_, _> = rows.iter().map(|r| (r.acctuniqueid.clone(), r)).collect();
    for (i, stopped) in &answered {
        let s = Sess::new(*i);
        let r = by_key
            .get(&s.key())
            .unwrap_or_else(|| panic!("answered Start of session {i} missing"));
        if *stopped {
            assert_eq!(
                r.acctstoptime,
                Some(i64::from(n) - 10),
                "answered Stop of {i} missing"
            );
        }
    }
    let keys: std::collections::BTreeSet<_> = rows.iter().map(|r| &r.acctuniqueid).collect();
    assert_eq!(keys.len(), rows.len(), "nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_flood_does_not_stop_valid_packets() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    let target = app.addr;
    let flood = tokio::spawn(async move {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut wrong = Nas::with_secret(target, "wrong-secret").await;
        let mut x: u32 = 0x1234_5678;
        let mut sent = 0u64;
        for i in 0..30_000u32 {
            // xorshift: cheap, reproducible garbage of varying length.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = 1 + (x % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|k| (x >> (k % 24)) as u8).collect();
            let _ = sock.send_to(&bytes, target).await;
            sent += 1;
            if i % 4 == 0 {
                let req = wrong.request(&Sess::new(i).start(now()));
                let _ = wrong.socket.send_to(&req, target).await;
            }
        }
        sent
    });
    let mut nas = Nas::new(app.addr).await;
    let n = now();
    for i in 0..200 {
        let req = nas.request(&Sess::new(i).start(n - 10));
        // Like a NAS: retransmit the same request until answered (at most 5 tries).
        let mut ok = false;
        for _ in 0..5 {
            if nas
                .exchange(&req, Duration::from_millis(1000))
                .await
                .is_some()
            {
                ok = true;
                break;
            }
        }
        assert!(ok, "valid packet {i} answered during the flood");
    }
    flood.await.expect("flood");
    assert_eq!(db.rows().await.len(), 200);
    assert!(app.stats.dropped_count(DropReason::Malformed) > 1000);
    assert!(app.stats.dropped_count(DropReason::BadAuthenticator) > 100);
    let _ = SECRET;
    app.stop().await;
}

/// A large batch whose concurrent parts all fail because the database is unreachable goes to
/// the journal at once, every event of it, in one pass: no part is retried alone against the
/// dead database first (each retry would cost another connect or commit timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_batch_during_an_outage_goes_straight_to_the_journal() {
    use std::sync::atomic::AtomicBool;

    // Nothing listens here: every connection attempt is refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("postgres://postgres@127.0.0.1:{dead}/nowhere");
    let store = common::open_store(&url, 8, Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = Arc::new(std::sync::Mutex::new(
        radacctd::ingest::journal::Journal::open(&dir.path().join("j"), 1 << 30).expect("journal"),
    ));
    let w = common::TestWriter::new(store.clone());
    let (stats, index) = (&w.stats, &w.index);
    let writer = w
        .writer(1024, Duration::from_secs(10), Duration::from_secs(60))
        .with_journal(journal.clone(), Arc::new(AtomicBool::new(true)));
    let t = now() - 60;
    let starts: Vec<_> = (0..300u32).map(|n| Sess::new(n).start(t)).collect();
    writer.run(common::queued_events(&starts)).await;

    assert_eq!(
        Stats::get(&stats.journal_appended),
        300,
        "every event journaled"
    );
    assert_eq!(
        Stats::get(&stats.batch_failures),
        2,
        "both parts failed once, and neither was retried alone"
    );
    assert_eq!(Stats::get(&stats.paired_batches), 0, "nothing committed");
    assert_eq!(
        journal.lock().expect("journal").pending(),
        300,
        "the journal holds the batch"
    );
    assert_eq!(index.len(), 300, "the index follows the journal");
    store.close().await;
}
