//! Reliability: database outages (a TCP proxy the test cuts), the journal and its replay,
//! restarts with a non-empty journal, the journal's size cap, `kill -9` under load, and a
//! flood of garbage next to valid traffic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::freeradius::PgTarget;
use crate::common::proxy::TcpProxy;
use crate::common::{
    self, Backend, Nas, SECRET, Sess, TestApp, TestDb, now, require, scrape, test_config, value,
};
use radacctd::config::Config;
use radacctd::metrics::{DropReason, Stats};

/// A fresh PostgreSQL database reached through a proxy the test can cut.
pub(crate) async fn pg_behind_proxy() -> Option<(TestDb, TcpProxy, String)> {
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

pub(crate) fn journaled_config(db: &TestDb, url: &str, dir: &std::path::Path) -> Config {
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
async fn wait_for(what: &str, f: impl FnMut() -> bool) {
    assert!(
        crate::common::wait_until(Duration::from_secs(30), f).await,
        "timed out waiting for {what}"
    );
}

pub(crate) fn replayed_all(app: &TestApp) -> bool {
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
    let mut nas = Nas::new(app.radius_addr).await;
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
    // The usage ledger is written with the replayed rows, each change once.
    let input: i64 = rows.iter().map(|r| r.acctinputoctets.unwrap_or(0)).sum();
    let output: i64 = rows.iter().map(|r| r.acctoutputoctets.unwrap_or(0)).sum();
    assert_eq!((input, output), (5 * 5000 + 3 * 7000, 5 * 6000 + 3 * 8000));
    for (column, total) in [("input_octets", input), ("output_octets", output)] {
        let sql = format!("SELECT CAST(COALESCE(SUM({column}), 0) AS BIGINT) FROM usage_hourly");
        assert_eq!(db.count(&sql).await, total, "{column}");
    }
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
    let mut nas = Nas::new(app.radius_addr).await;
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

/// Start-up with the database down answers at once (not after the pool's acquire timeouts),
/// and once the database is back the deferred work is done: migrations with the configured
/// fillfactor, and EnsureIndexes, which failed while it was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_with_the_database_down_answers_into_the_journal() {
    let Some((db, proxy, url)) = pg_behind_proxy().await else {
        return;
    };
    // Create the schema first, as a previous run would have.
    db.open_store().await.migrate().await.expect("migrate");
    let dir = tempfile::tempdir().expect("dir");
    let mut config = journaled_config(&db, &url, dir.path());
    // Long enough that waiting for it (twice, as start-up did) cannot pass for "at once".
    config.database.acquire_timeout_secs = 30;
    config.database.radacct_fillfactor = Some(70);
    config.jobs.ensure_indexes = true;
    proxy.cut();
    let started = std::time::Instant::now();
    let app = TestApp::start(config).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let s = Sess::new(1);
    nas.send(&s.start(now() - 10))
        .await
        .expect("answered into the journal");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "answered only after {:?}: start-up waited for the database",
        started.elapsed()
    );
    assert_eq!(app.index.get(&s.key()).expect("listed").radacctid, None);
    proxy.restore();
    wait_for("the journal to be replayed", || replayed_all(&app)).await;
    assert_eq!(db.rows().await.len(), 1);
    let mut c = pg_connect(&db.url).await;
    let options: Option<Vec<String>> =
        sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = 'radacct'::regclass")
            .fetch_one(&mut c)
            .await
            .expect("reloptions");
    assert_eq!(options, Some(vec!["fillfactor=70".to_string()]));
    let mut indexes = 0;
    for _ in 0..300 {
        indexes = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indisvalid AND c.relname IN ('radacct_active_session_idx', \
             'radacct_bulk_close', 'radacct_start_user_idx', 'radacct_username_stop_idx', \
             'radacct_stop_idx')",
        )
        .fetch_one(&mut c)
        .await
        .expect("count indexes");
        if indexes == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(indexes, 5, "EnsureIndexes ran once the database was back");
    app.stop().await;
}

async fn pg_connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.expect("connect")
}

/// `radacct` locked past the commit deadline (a long `LOCK TABLE`, a COMMIT waiting for a
/// synchronous replica): the first batch waits for the deadline and is journaled; after that
/// every packet is answered from the journal at once while the replay keeps failing, the
/// server ends each of the writer's statements at the deadline (no backend of ours is left
/// queueing on the lock), and `/readyz` says the database is not committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_keeps_answers_flowing_through_the_journal() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let app = TestApp::start(journaled_config(&db, &db.url, dir.path())).await;
    let readyz = format!("http://{}/readyz", app.api_addr);
    let mut nas = Nas::new(app.radius_addr).await;
    let n = now();
    nas.send(&Sess::new(1).start(n - 60))
        .await
        .expect("committed");
    let mut locker = pg_connect(&db.url).await;
    sqlx::raw_sql("BEGIN; LOCK TABLE radacct IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock");
    let req = nas.request(&Sess::new(2).start(n - 50));
    assert!(
        nas.exchange(&req, Duration::from_secs(8)).await.is_some(),
        "journaled after the commit deadline"
    );
    let r = reqwest::get(&readyz).await.expect("readyz");
    assert_eq!(r.status(), 503);
    assert!(r.text().await.expect("body").contains("not committing"));
    let mut watch = pg_connect(&db.url).await;
    let mut late = Vec::new();
    let mut most_waiting = 0;
    let mut next = 3;
    // Three commit deadlines (2 s each) of replays failing on the lock.
    let until = std::time::Instant::now() + Duration::from_secs(7);
    while std::time::Instant::now() < until {
        let req = nas.request(&Sess::new(next).start(n - 40));
        match nas.exchange(&req, Duration::from_millis(1500)).await {
            Some(resp) if resp[1] == req[1] => {}
            _ => late.push(next),
        }
        next += 1;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'radacctd writer' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watch)
        .await
        .expect("pg_stat_activity");
        most_waiting = most_waiting.max(waiting);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        late.is_empty(),
        "sessions {late:?} not answered within 1.5 s while replay failed"
    );
    assert!(
        most_waiting <= 1,
        "{most_waiting} writer statements queued on the lock at once"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("unlock");
    wait_for("the journal to be replayed", || replayed_all(&app)).await;
    assert_eq!(db.rows().await.len() as u32, next - 1);
    let mut ready = false;
    for _ in 0..100 {
        if reqwest::get(&readyz).await.expect("readyz").status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz is 200 again once commits go through");
    assert_index_equals_open_rows(&app, &db.open_rows().await);
    app.stop().await;
}

/// A small tmpfs the test mounts (root only; unmounted on drop).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(kib: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("dir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        require(mounted, "mounting a tmpfs (root) for a full disk").then_some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A journal on a full disk (ENOSPC): the packets it cannot take are not answered and are
/// counted as `journal_failed`; what it took is replayed, and the NAS's retransmissions of
/// the rest are stored once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_journal_is_counted_and_recovers() {
    let Some((db, proxy, url)) = pg_behind_proxy().await else {
        return;
    };
    let Some(disk) = Tmpfs::mount(16) else {
        return;
    };
    let app = TestApp::start(journaled_config(&db, &url, disk.dir.path())).await;
    let mut nas = Nas::new(app.radius_addr).await;
    proxy.cut();
    let n = now();
    let mut answered = 0;
    let mut refused = Vec::new();
    for i in 1..=60 {
        let req = nas.request(&Sess::new(i).start(n - 100));
        // The first waits for the commit deadline (2 s); the journal answers the next at once.
        let wait = Duration::from_millis(if i == 1 { 5000 } else { 500 });
        match nas.exchange(&req, wait).await {
            Some(resp) if resp[1] == req[1] => answered += 1,
            _ => refused.push(req),
        }
    }
    assert!(answered > 0, "the journal took some");
    assert!(!refused.is_empty(), "the full disk refused the rest");
    assert!(
        app.stats.dropped_count(DropReason::JournalFailed) >= refused.len() as u64,
        "{} refused, {} counted as journal_failed",
        refused.len(),
        app.stats.dropped_count(DropReason::JournalFailed)
    );
    assert_eq!(app.stats.dropped_count(DropReason::JournalFull), 0);
    proxy.restore();
    wait_for("the journal to be replayed", || replayed_all(&app)).await;
    assert_eq!(
        db.rows().await.len(),
        answered,
        "what was answered is stored"
    );
    for req in &refused {
        nas.send_bytes(req).await.expect("answered after recovery");
    }
    assert_eq!(db.rows().await.len(), 60);
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
    let mut nas = Nas::new(app.radius_addr).await;
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
    let target = app.radius_addr;
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
    let mut nas = Nas::new(app.radius_addr).await;
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

/// The `radacctd_journal_entries` gauge (entries not yet replayed), from `/metrics`.
async fn journal_entries(metrics: SocketAddr) -> f64 {
    value(&scrape(metrics).await, "radacctd_journal_entries")
}

/// Backends of the test's database other than `mine`, waiting on a lock while running a
/// statement `LIKE pattern`, and blocked by `blocker` when given.
async fn lock_waiters(
    watch: &mut sqlx::PgConnection,
    mine: &[i32],
    pattern: &str,
    blocker: Option<i32>,
) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND NOT pid = ANY($1) AND wait_event_type = 'Lock' AND query LIKE $2 \
         AND ($3::int4 IS NULL OR $3 = ANY(pg_blocking_pids(pid)))",
    )
    .bind(mine)
    .bind(pattern)
    .bind(blocker)
    .fetch_one(&mut *watch)
    .await
    .expect("pg_stat_activity")
}

/// Polls an async condition every 20 ms for up to 30 s; panics with `what` if it never holds.
macro_rules! poll_until {
    ($what:expr, $cond:expr) => {{
        let mut held = false;
        for _ in 0..1500 {
            if $cond {
                held = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(held, "timed out waiting for {}", $what);
    }};
}

async fn backend_pid(c: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(c)
        .await
        .expect("pid")
}

/// A row's input octets, update time and class, read without locks.
async fn plain_row(url: &str, key: &str) -> (i64, Option<i64>, Option<String>) {
    use sqlx::Connection;
    let mut c = pg_connect(url).await;
    let row = sqlx::query_as(
        "SELECT acctinputoctets, extract(epoch FROM acctupdatetime)::int8, class FROM radacct \
         WHERE acctuniqueid = $1",
    )
    .bind(key)
    .fetch_one(&mut c)
    .await
    .expect("row");
    let _ = c.close().await;
    row
}

/// Journal replay marks entries replayed only up to the first one left unfinished (its redo
/// under locks missed the commit deadline after the rest of the chunk had committed); that
/// entry and every one behind it stay in the journal and are replayed again later.
///
/// The journal holds Interim-Updates of c, a and b, in that order. While it is replayed,
/// another writer changes a's row between the replay's read and its guarded write, then keeps
/// the row locked: the guarded write refuses a and commits c and b, and a's redo under locks
/// blocks past the deadline. Only c's entry may be marked replayed then: a's stays, and so
/// does b's behind it, although b is in the table. Once the lock is gone, both are replayed:
/// a's interim lands, b's second replay changes nothing, the other writer's column is kept,
/// and the index equals the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_marks_the_journal_only_up_to_the_first_unfinished_entry() {
    use sqlx::Connection;
    /// The replay's guarded write (rows read from the table, updated where their version is
    /// still the one read; these interims add usage, so the update is the first CTE of a
    /// statement that also adds to the usage ledger, while the redo's locked update is a bare
    /// `UPDATE`) and its redo under locks (`SELECT … FOR UPDATE`, the only `SELECT` of the
    /// writer that waits for a row lock).
    const GUARDED_WRITE: &str = "WITH w0 AS (UPDATE radacct AS r SET %";
    const REDO_READ: &str = "SELECT %";

    let Some((db, proxy, url)) = pg_behind_proxy().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut config = journaled_config(&db, &url, dir.path());
    // Room to line up the locks below within the first replay attempt's deadline.
    config.radius.commit_timeout_secs = 5;
    let app = TestApp::start(config).await;
    let metrics = app.metrics_addr.expect("metrics enabled");
    let mut nas = Nas::new(app.radius_addr).await;
    let (a, b, c) = (Sess::new(1), Sess::new(2), Sess::new(3));
    let t = now() - 1000;
    nas.send(&a.start(t)).await.expect("a's start committed");
    nas.send(&b.start(t)).await.expect("b's start committed");
    nas.send(&c.start(t)).await.expect("c's start committed");
    assert!(
        app.index
            .get(&a.key())
            .expect("a open")
            .row_version
            .is_some(),
        "a's row version is indexed"
    );
    proxy.cut();
    nas.send(&c.interim(t + 300, 300, 5000, 6000))
        .await
        .expect("c's interim answered from the journal");
    nas.send(&a.interim(t + 300, 300, 1000, 2000))
        .await
        .expect("a's interim answered from the journal");
    nas.send(&b.interim(t + 300, 300, 3000, 4000))
        .await
        .expect("b's interim answered from the journal");
    assert_eq!(Stats::get(&app.stats.journal_appended), 3);
    assert_eq!(journal_entries(metrics).await, 3.0);

    // The test's connections go straight to the database, not through the proxy.
    let mut watch = pg_connect(&db.url).await;
    let mut changer = pg_connect(&db.url).await;
    let mut holder = pg_connect(&db.url).await;
    let changer_pid = backend_pid(&mut changer).await;
    let holder_pid = backend_pid(&mut holder).await;
    let mine = [changer_pid, holder_pid];

    // The other writer changes a's row (uncommitted) and takes a SHARE lock on the table: the
    // replay's plain read still sees a's old version, its guarded write waits for the table.
    let mut change = changer.begin().await.expect("begin");
    sqlx::query("UPDATE radacct SET class = 'panel' WHERE acctuniqueid = $1")
        .bind(a.key())
        .execute(&mut *change)
        .await
        .expect("change a");
    sqlx::query("LOCK TABLE radacct IN SHARE MODE")
        .execute(&mut *change)
        .await
        .expect("lock the table");
    proxy.restore();
    poll_until!(
        "the replay's guarded write to wait for the other writer",
        lock_waiters(&mut watch, &mine, GUARDED_WRITE, Some(changer_pid)).await == 1
    );
    assert_eq!(Stats::get(&app.stats.journal_replayed), 0);

    // A second transaction queues for a's row lock behind the change, so that it holds the row
    // as soon as the change commits, before the writer's redo can ask for it.
    let (locked_tx, locked) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let key = a.key();
    let holding = tokio::spawn(async move {
        let mut tx = holder.begin().await.expect("begin");
        sqlx::query("SELECT 1 FROM radacct WHERE acctuniqueid = $1 FOR UPDATE")
            .bind(key)
            .execute(&mut *tx)
            .await
            .expect("lock a");
        let _ = locked_tx.send(());
        let _ = released.await;
        tx.rollback().await.expect("release a");
    });
    poll_until!(
        "the row lock to queue behind the change",
        sqlx::query_scalar::<_, bool>("SELECT $2 = ANY(pg_blocking_pids($1))")
            .bind(holder_pid)
            .bind(changer_pid)
            .fetch_one(&mut watch)
            .await
            .expect("pg_blocking_pids")
    );
    change.commit().await.expect("the change commits");
    tokio::time::timeout(Duration::from_secs(30), locked)
        .await
        .expect("a's row locked in time")
        .expect("lock task alive");

    // The guarded write saw a's new version: it refused a and committed c and b. a's redo
    // under locks waits for the row lock (until the deadline, then a is left unfinished).
    poll_until!(
        "b's journaled interim to be committed by the replay",
        plain_row(&db.url, &b.key()).await.0 == 3000
    );
    assert_eq!(plain_row(&db.url, &c.key()).await.0, 5000, "c committed");
    poll_until!(
        "a's redo under locks to wait for the row lock",
        lock_waiters(&mut watch, &mine, REDO_READ, Some(holder_pid)).await == 1
    );
    let (a_input, a_updated, a_class) = plain_row(&db.url, &a.key()).await;
    assert_eq!(
        a_input, 0,
        "a's interim is not in the table while its row is locked"
    );
    assert_ne!(a_updated, Some(i64::from(t) + 300));
    assert_eq!(a_class.as_deref(), Some("panel"));
    let observer = db.open_store().await;
    let b_committed = observer
        .row_by_key(&b.key())
        .await
        .expect("b")
        .expect("b exists");

    // That attempt ends at its deadline with a unfinished. The replay tries again (its guarded
    // write now waits for a's row): by then the attempt has been accounted for. Only c's entry,
    // before a's, is marked replayed; b's, although b is committed, stays behind a's.
    poll_until!(
        "the replay to try again, or to mark more entries replayed",
        Stats::get(&app.stats.journal_replayed) > 1
            || journal_entries(metrics).await < 2.0
            || lock_waiters(&mut watch, &mine, GUARDED_WRITE, None).await > 0
    );
    assert_eq!(
        Stats::get(&app.stats.journal_replayed),
        1,
        "marked replayed: c's entry, up to a's, the first one left unfinished"
    );
    assert_eq!(
        journal_entries(metrics).await,
        2.0,
        "the journal still holds a's entry and b's behind it"
    );
    assert_eq!(plain_row(&db.url, &a.key()).await.0, 0, "a still waits");

    // The other writer lets go: the journal drains.
    let _ = release.send(());
    holding.await.expect("lock task");
    wait_for("the journal to be replayed", || replayed_all(&app)).await;
    let journal_file = dir.path().join("radacctd.journal");
    wait_for("the journal to be truncated", || {
        std::fs::metadata(&journal_file).is_ok_and(|m| m.len() == 0)
    })
    .await;
    assert_eq!(
        Stats::get(&app.stats.journal_replayed),
        3,
        "each entry marked replayed once"
    );
    assert_eq!(journal_entries(metrics).await, 0.0);

    let rows = db.rows().await;
    assert_eq!(rows.len(), 3, "each session exactly once");
    let by_key: BTreeMap<_, _> = rows.iter().map(|r| (r.acctuniqueid.clone(), r)).collect();
    let ra = by_key[&a.key()];
    assert_eq!(ra.acctupdatetime, Some(i64::from(t) + 300));
    assert_eq!(ra.acctsessiontime, Some(300));
    assert_eq!(ra.acctinputoctets, Some(1000));
    assert_eq!(ra.acctoutputoctets, Some(2000));
    assert_eq!(
        ra.class.as_deref(),
        Some("panel"),
        "the other writer's change kept"
    );
    let rb = by_key[&b.key()];
    assert_eq!(rb.acctinputoctets, Some(3000));
    assert_eq!(rb.acctoutputoctets, Some(4000));
    assert_eq!(
        *rb, b_committed,
        "b's entry, replayed again behind a's, changed nothing"
    );
    let rc = by_key[&c.key()];
    assert_eq!(rc.acctinputoctets, Some(5000));
    assert_eq!(rc.acctoutputoctets, Some(6000));
    assert_index_equals_open_rows(&app, &db.open_rows().await);

    // Direct commits again: the Stops are not journaled, and close each row once.
    nas.send(&a.stop(t + 600, 600, 1500, 2500, 1))
        .await
        .expect("a's stop answered");
    nas.send(&b.stop(t + 600, 600, 3500, 4500, 1))
        .await
        .expect("b's stop answered");
    nas.send(&c.stop(t + 600, 600, 5500, 6500, 1))
        .await
        .expect("c's stop answered");
    assert_eq!(Stats::get(&app.stats.journal_appended), 3);
    let rows = db.rows().await;
    assert_eq!(rows.len(), 3);
    for (r, input) in rows.iter().zip([1500, 3500, 5500]) {
        assert_eq!(r.acctstoptime, Some(i64::from(t) + 600));
        assert_eq!(r.acctinputoctets, Some(input));
    }
    assert!(app.index.is_empty());
    observer.close().await;
    let _ = watch.close().await;
    app.stop().await;
}

/// The journal's records start with this (see `radacctd::ingest::journal`).
const JOURNAL_MAGIC: [u8; 4] = [0xFE, b'R', b'J', b'1'];

/// Answered records survive a damaged byte in the middle of the journal: the daemon stops with
/// a journal of answered Starts, one byte in the middle of the file is flipped, and the restart
/// replays every record but the damaged one, whose bytes are in `<journal>.corrupt`, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_byte_in_the_journal_loses_only_its_record_after_a_restart() {
    let Some((db, proxy, url)) = pg_behind_proxy().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let config = journaled_config(&db, &url, dir.path());
    let app = TestApp::start(config.clone()).await;
    let mut nas = Nas::new(app.radius_addr).await;
    proxy.cut();
    let sessions: Vec<Sess> = (1..=30).map(Sess::new).collect();
    let t = now() - 100;
    for s in &sessions {
        nas.send(&s.start(t))
            .await
            .expect("answered from the journal");
    }
    app.stop().await;

    let path = dir.path().join("radacctd.journal");
    let mut bytes = std::fs::read(&path).expect("journal");
    let starts: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == JOURNAL_MAGIC)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(starts.len(), 30, "one record per answered Start");
    let at = bytes.len() / 2;
    let hit = starts.iter().rposition(|s| *s <= at).expect("record");
    let end = starts.get(hit + 1).copied().unwrap_or(bytes.len());
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).expect("flip a byte");

    proxy.restore();
    let app = TestApp::start(config).await;
    let keys: std::collections::BTreeSet<String> = db
        .rows()
        .await
        .into_iter()
        .map(|r| r.acctuniqueid)
        .collect();
    assert_eq!(keys.len(), 29, "every answered record but the damaged one");
    let lost: Vec<&Sess> = sessions
        .iter()
        .filter(|s| !keys.contains(&s.key()))
        .collect();
    assert_eq!(lost.len(), 1);
    let side = std::fs::read(dir.path().join("radacctd.journal.corrupt")).expect("side file");
    assert!(
        side.windows(end - starts[hit])
            .any(|w| w == &bytes[starts[hit]..end]),
        "the damaged record's bytes are in the side file"
    );
    let m = scrape(app.metrics_addr.expect("metrics")).await;
    assert_eq!(value(&m, "radacctd_journal_corrupt_regions_total"), 1.0);
    assert_eq!(
        value(&m, "radacctd_journal_corrupt_bytes_total"),
        (end - starts[hit]) as f64
    );
    app.stop().await;
}

/// Runs `radacctd journal …` against `journal` and the database at `db_url`: (success, stdout).
async fn journal_cli(db_url: &str, journal: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_radacctd"))
        .arg("journal")
        .args(args)
        .env("RADACCTD__DATABASE__URL", db_url)
        .env("RADACCTD__JOURNAL__PATH", journal)
        .env("RADACCTD__LOG__LEVEL", "warn")
        .output()
        .await
        .expect("radacctd journal runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "radacctd journal {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), stdout)
}

/// A journaled event the database keeps refusing (a trigger the test adds) is answered, then
/// rejected after repeated replays: counted in `/metrics`, listed by `journal inspect
/// --rejected`, kept by `journal retry` while the cause is there, and applied by it (while the
/// daemon runs) once the trigger is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_entry_is_counted_listed_and_applied_by_journal_retry() {
    let Some((db, proxy, url)) = pg_behind_proxy().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let journal = dir.path().join("radacctd.journal");
    let app = TestApp::start(journaled_config(&db, &url, dir.path())).await;
    let metrics = app.metrics_addr.expect("metrics");
    let mut nas = Nas::new(app.radius_addr).await;
    let (poison, fine) = (Sess::new(1), Sess::new(2));
    proxy.cut();
    let t = now() - 100;
    nas.send(&poison.start(t))
        .await
        .expect("answered from the journal");
    nas.send(&fine.start(t))
        .await
        .expect("answered from the journal");
    db.exec(&format!(
        "CREATE FUNCTION poison_test() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.acctuniqueid = '{}' THEN RAISE EXCEPTION 'poisoned by the test'; END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER poison_test BEFORE INSERT OR UPDATE ON radacct \
           FOR EACH ROW EXECUTE FUNCTION poison_test();",
        poison.key()
    ))
    .await;
    proxy.restore();
    poll_until!(
        "the poison entry to be rejected",
        value(&scrape(metrics).await, "radacctd_journal_rejected_total") == 1.0
    );
    poll_until!(
        "the journal to be replayed",
        journal_entries(metrics).await == 0.0
    );
    let m = scrape(metrics).await;
    assert_eq!(value(&m, "radacctd_journal_rejected_entries"), 1.0);
    let keys: Vec<String> = db
        .rows()
        .await
        .into_iter()
        .map(|r| r.acctuniqueid)
        .collect();
    assert_eq!(keys, vec![fine.key()], "the entry behind it was replayed");

    let (ok, out) = journal_cli(&db.url, &journal, &["inspect", "--rejected"]).await;
    assert!(ok);
    assert!(
        out.contains(&format!("key={} kind=start", poison.key())),
        "{out}"
    );
    assert!(out.contains("poisoned by the test"), "{out}");
    assert!(out.contains("1 rejected entry"), "{out}");

    // The cause is still there: the entry stays, with its new error, and the exit status says so.
    let (ok, out) = journal_cli(&db.url, &journal, &["retry"]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("0 applied and removed, 1 still failing"),
        "{out}"
    );
    let (_, listed) = journal_cli(&db.url, &journal, &["inspect", "--rejected"]).await;
    assert!(listed.contains("1 rejected entry"), "{listed}");

    db.exec("DROP TRIGGER poison_test ON radacct; DROP FUNCTION poison_test();")
        .await;
    let (ok, out) = journal_cli(&db.url, &journal, &["retry"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("1 applied and removed"), "{out}");
    let rows = db.rows().await;
    assert_eq!(rows.len(), 2);
    let applied = rows
        .iter()
        .find(|r| r.acctuniqueid == poison.key())
        .expect("the rejected Start is in radacct");
    assert_eq!(applied.acctstarttime, Some(i64::from(t)));
    let (_, listed) = journal_cli(&db.url, &journal, &["inspect", "--rejected"]).await;
    assert!(listed.contains("0 rejected entries"), "{listed}");
    // The running daemon sees the file emptied; the counter keeps what happened.
    let m = scrape(metrics).await;
    assert_eq!(value(&m, "radacctd_journal_rejected_entries"), 0.0);
    assert_eq!(value(&m, "radacctd_journal_rejected_total"), 1.0);
    // The live journal was left alone.
    let (ok, out) = journal_cli(&db.url, &journal, &["inspect"]).await;
    assert!(ok && out.contains("0 entries"), "{out}");
    app.stop().await;
}

/// A disconnect the NAS acknowledges while the database is away: the close is journaled
/// together with its action log row, and the replay writes both in one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_during_an_outage_is_journaled_with_its_action_row() {
    use crate::common::api::{api_config, token};
    use crate::common::fake_nas::{FakeNas, NasMode};
    use radacctd::api::auth::Role;

    let coa = FakeNas::start(SECRET, NasMode::Ack).await;
    let Some((db, proxy, url)) = pg_behind_proxy().await else {
        return;
    };
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    db.exec(&format!(
        "INSERT INTO nas (nasname, shortname, secret, coa_port) VALUES ('127.0.0.1', 'bng', \
         '{SECRET}', {})",
        coa.addr.port()
    ))
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let mut config = journaled_config(&db, &url, dir.path());
    config.api = api_config(&db).api;
    let app = TestApp::start(config).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let s = Sess::new(1).on_nas("127.0.0.1");
    nas.send(&s.start(now() - 60)).await.expect("start");
    let id = app
        .index
        .get(&s.key())
        .and_then(|s| s.radacctid)
        .expect("committed");

    proxy.cut();
    let (st, body) = {
        let r = app
            .http
            .post(app.url(&format!("/api/sessions/{id}/disconnect")))
            .bearer_auth(token(Role::Admin, None, &["subscribers.disconnect"]))
            .send()
            .await
            .expect("request");
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.expect("json"),
        )
    };
    assert_eq!((st, body["method"].as_str()), (200, Some("coa")), "{body}");
    assert_eq!(coa.count(), 1);
    assert!(app.index.get(&s.key()).is_none(), "closed in the index");
    assert!(
        store.session_actions(id).await.expect("read").is_empty(),
        "nothing written while the database is away"
    );

    proxy.restore();
    wait_for("the journal to be replayed", || replayed_all(&app)).await;
    let row = store
        .row_by_key(&s.key())
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.acctterminatecause.as_deref(), Some("Admin-Reset"));
    assert!(!row.is_open());
    let log = store.session_actions(id).await.expect("read");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (
            log[0].action.as_str(),
            log[0].method.as_str(),
            log[0].outcome.as_str(),
            log[0].actor.as_deref()
        ),
        ("disconnect", "coa", "ack", Some("test"))
    );
    let detail: serde_json::Value =
        serde_json::from_str(log[0].detail.as_deref().expect("detail")).expect("json");
    assert_eq!(
        detail["row_closed"],
        serde_json::Value::Bool(true),
        "{detail}"
    );
    store.close().await;
    app.stop().await;
}
