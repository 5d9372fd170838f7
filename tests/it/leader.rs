//! The jobs leader with two daemons on one PostgreSQL database (different ports): exactly one
//! leads, another takes over when it stops or loses its lock connection, their runs of a job
//! (the `job_runs` table) never overlap, and the new leader sweeps. Migrations and
//! EnsureIndexes run by two nodes at once on a fresh database.

use std::time::{Duration, Instant};

use radacctd::config::Config;
use radacctd::jobs::Election;
use radacctd::store::{ENSURE_INDEXES_LOCK, PREPARE_LOCK, Store};
use sqlx::PgPool;

use crate::common::{Backend, TestApp, TestDb, now, scrape, test_config, value};

/// The takeover time the tests run with.
const TAKEOVER: Duration = Duration::from_secs(2);

/// A node `name` on `db` sweeping every second, closing sessions silent for 1800 s.
fn node(db: &TestDb, name: &str) -> Config {
    let mut c = test_config(db);
    c.node.name = name.into();
    c.jobs.leader_takeover_secs = TAKEOVER.as_secs();
    c.jobs.sweep_enabled = true;
    c.jobs.sweep_interval_secs = 1;
    c.jobs.stale_after_secs = 1800;
    c
}

/// Polls `f` until it holds, at most `limit`; whether it did.
async fn within<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pool on the test database, for the test's own queries.
async fn pg(db: &TestDb) -> PgPool {
    match db.open_store().await {
        Store::Postgres(s) => s.pool().clone(),
        Store::Sqlite(_) => panic!("a PostgreSQL test database"),
    }
}

/// `radacctd_jobs_leader` as the node's `/metrics` shows it.
async fn leads(app: &TestApp) -> bool {
    let addr = app.metrics_addr.expect("metrics enabled");
    value(&scrape(addr).await, "radacctd_jobs_leader") == 1.0
}

/// Polls until `app` leads, at most `within`; returns how long it took.
async fn until_leads(app: &TestApp, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= within {
        if leads(app).await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Samples both nodes' metric for `during`: never both leading. Returns (samples with `a`
/// leading, with `b` leading).
async fn never_both(a: &TestApp, b: &TestApp, during: Duration) -> (u32, u32) {
    let start = Instant::now();
    let (mut seen_a, mut seen_b) = (0, 0);
    while start.elapsed() < during {
        let (la, lb) = (leads(a).await, leads(b).await);
        assert!(!(la && lb), "both nodes say they lead");
        seen_a += u32::from(la);
        seen_b += u32::from(lb);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (seen_a, seen_b)
}

/// Runs of one job by two nodes whose times overlap (a run in progress lasts until now).
async fn overlapping_runs(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM job_runs a JOIN job_runs b ON a.job = b.job AND a.node <> b.node \
         AND a.id < b.id \
         AND a.started_at < coalesce(b.finished_at, 'infinity') \
         AND b.started_at < coalesce(a.finished_at, 'infinity')",
    )
    .fetch_one(pool)
    .await
    .expect("overlaps")
}

/// Sweeper runs recorded for `node`.
async fn sweeps_by(pool: &PgPool, node: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE job = 'sweeper' AND node = $1")
        .bind(node)
        .fetch_one(pool)
        .await
        .expect("runs")
}

/// Waits (up to `within`) until `node` has recorded a finished sweep.
async fn until_swept_by(pool: &PgPool, node: &str, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() <= within {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM job_runs WHERE job = 'sweeper' AND node = $1 \
             AND finished_at IS NOT NULL AND error IS NULL",
        )
        .bind(node)
        .fetch_one(pool)
        .await
        .expect("runs");
        if done > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The application names of the sessions holding the jobs leader's lock.
async fn lock_holders(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1918985313 \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND l.objid = 1667462220 AND l.objsubid = 1",
    )
    .fetch_all(pool)
    .await
    .expect("holders")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_leads_and_the_other_takes_over_when_it_stops_and_sweeps() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let pool = pg(&db).await;
    let a = TestApp::start(node(&db, "node-a")).await;
    assert!(
        until_leads(&a, TAKEOVER).await.is_some(),
        "the first node takes the leadership"
    );
    let b = TestApp::start(node(&db, "node-b")).await;
    // A sweeps (every second), B only follows.
    assert!(until_swept_by(&pool, "node-a", Duration::from_secs(10)).await);
    let (seen_a, seen_b) = never_both(&a, &b, Duration::from_secs(2)).await;
    assert!(
        seen_a > 0 && seen_b == 0,
        "a leads throughout: {seen_a} {seen_b}"
    );
    assert_eq!(lock_holders(&pool).await, ["radacctd jobs leader node-a"]);
    assert_eq!(sweeps_by(&pool, "node-b").await, 0);

    a.stop().await;
    let took = until_leads(&b, TAKEOVER).await;
    assert!(took.is_some(), "b leads within {TAKEOVER:?} of a's stop");
    assert_eq!(lock_holders(&pool).await, ["radacctd jobs leader node-b"]);
    // A session silent for over an hour, written by another writer after a left: the new
    // leader closes it.
    let n = i64::from(now());
    db.exec(&format!(
        "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, \
         acctupdatetime) VALUES ('s1', 'stale-after-takeover', 'u1', '192.0.2.1', \
         to_timestamp({}), to_timestamp({}))",
        n - 7200,
        n - 3700
    ))
    .await;
    let closed = within(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT acctterminatecause FROM radacct WHERE acctuniqueid = 'stale-after-takeover'",
        )
        .fetch_one(&pool)
        .await
        .expect("row")
            == Some("NAS-Idle-Timeout".to_owned())
    })
    .await;
    assert!(closed, "the new leader swept the stale session");
    // The run's record is completed just after the close commits.
    let recorded = within(Duration::from_secs(5), || async {
        let by_b: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM job_runs WHERE job = 'sweeper' AND node = 'node-b' \
             AND rows = 1 AND error IS NULL AND finished_at IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .expect("runs");
        by_b == 1
    })
    .await;
    assert!(recorded, "b's run that closed it is recorded");
    assert_eq!(overlapping_runs(&pool).await, 0);
    b.stop().await;
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lock_connection_moves_the_leadership_or_keeps_it_never_both() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let pool = pg(&db).await;
    let a = TestApp::start(node(&db, "node-a")).await;
    assert!(until_leads(&a, TAKEOVER).await.is_some());
    let b = TestApp::start(node(&db, "node-b")).await;
    assert!(until_swept_by(&pool, "node-a", Duration::from_secs(10)).await);
    for round in 0..3 {
        let leader = if leads(&a).await { "node-a" } else { "node-b" };
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()",
        )
        .bind(Election::application_name(leader))
        .fetch_all(&pool)
        .await
        .expect("terminate");
        assert_eq!(
            killed,
            [true],
            "round {round}: the leader's lock connection"
        );
        // Within the takeover time one node leads again, and never both meanwhile.
        let (seen_a, seen_b) = never_both(&a, &b, TAKEOVER + TAKEOVER / 2).await;
        assert!(seen_a + seen_b > 0, "round {round}: someone leads again");
        let now_leads = match (leads(&a).await, leads(&b).await) {
            (true, false) => "node-a",
            (false, true) => "node-b",
            other => panic!("round {round}: exactly one leader, got {other:?}"),
        };
        assert_eq!(
            lock_holders(&pool).await,
            [Election::application_name(now_leads)],
            "round {round}"
        );
    }
    // Both nodes' sweeps over the rounds, none overlapping another node's.
    let last = if leads(&a).await { "node-a" } else { "node-b" };
    assert!(until_swept_by(&pool, last, Duration::from_secs(10)).await);
    assert_eq!(overlapping_runs(&pool).await, 0);
    a.stop().await;
    b.stop().await;
    assert_eq!(overlapping_runs(&pool).await, 0);
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE finished_at IS NULL")
            .fetch_one(&pool)
            .await
            .expect("runs");
    assert_eq!(unfinished, 0, "every run, cancelled ones too, is completed");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_sqlite_node_always_leads_and_records_its_sweeps() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let app = TestApp::start(node(&db, "solo")).await;
    assert!(leads(&app).await, "the only node leads from the start");
    let store = db.open_store().await;
    let Store::Sqlite(s) = &store else {
        panic!("sqlite");
    };
    let recorded = within(Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM job_runs WHERE job = 'sweeper' AND node = 'solo' \
             AND finished_at IS NOT NULL AND error IS NULL AND started_at <= finished_at",
        )
        .fetch_one(s.pool())
        .await
        .expect("runs");
        n > 0
    })
    .await;
    assert!(recorded, "sweeps are recorded in job_runs");
    app.stop().await;
    store.close().await;
}

/// The indexes EnsureIndexes keeps (`store::jobs::INDEXES`).
const INDEXES: [&str; 14] = [
    "radacct_active_session_idx",
    "radacct_bulk_close",
    "radacct_start_user_idx",
    "radacct_username_stop_idx",
    "radacct_stop_idx",
    "radacct_nas_start_idx",
    "radacct_framedipaddress_gist",
    "radacct_framedipv6address_gist",
    "radacct_framedipv6prefix_gist",
    "radacct_delegatedipv6prefix_gist",
    "radacct_archive_framedipaddress_gist",
    "radacct_archive_framedipv6address_gist",
    "radacct_archive_framedipv6prefix_gist",
    "radacct_archive_delegatedipv6prefix_gist",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_prepare_and_ensure_indexes_together_on_a_fresh_database() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let (a, b) = (db.open_store().await, db.open_store().await);
    let (ra, rb) = tokio::join!(a.prepare(Some(60)), b.prepare(Some(60)));
    ra.expect("a prepares");
    rb.expect("b prepares");
    // FreeRADIUS's indexes come with the migrations; drop them so that both nodes find
    // all seven missing. Rows enough that each build takes a while: the two nodes' work
    // would interleave.
    db.exec(
        "DROP INDEX radacct_active_session_idx; DROP INDEX radacct_bulk_close; \
         DROP INDEX radacct_start_user_idx; \
         INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime) \
         SELECT 's' || i, 'k' || i, 'u' || (i % 1000), '192.0.2.1', now() \
         FROM generate_series(1, 100000) AS i",
    )
    .await;
    // B starts once A is building an index (the moment B would take A's unfinished index
    // for the remains of an interrupted build, or build it again).
    let first = tokio::spawn({
        let a = a.clone();
        async move { a.ensure_indexes().await }
    });
    let pool = pg(&db).await;
    let building = within(Duration::from_secs(20), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_progress_create_index WHERE datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .expect("progress");
        n > 0
    })
    .await;
    assert!(building, "a builds an index");
    let cb = b.ensure_indexes().await.expect("b ensures");
    let ca = first.await.expect("joins").expect("a ensures");
    // A built each index once; B waited for A and found them all present.
    assert_eq!(ca, INDEXES, "a built them");
    assert!(cb.is_empty(), "b built {cb:?} again");
    let valid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE c.relname = ANY($1) AND i.indisvalid AND i.indisready",
    )
    .bind(INDEXES)
    .fetch_one(&pool)
    .await
    .expect("indexes");
    assert_eq!(valid, INDEXES.len() as i64);
    let fillfactor: Vec<String> =
        sqlx::query_scalar("SELECT unnest(reloptions) FROM pg_class WHERE relname = 'radacct'")
            .fetch_all(&pool)
            .await
            .expect("reloptions");
    assert_eq!(fillfactor, ["fillfactor=60"]);
    let migrations: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("migrations");
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("migrations directory")
        .count() as i64;
    assert_eq!(
        migrations,
        (1..=shipped).collect::<Vec<i64>>(),
        "each migration once"
    );
    pool.close().await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_and_ensure_indexes_wait_for_the_node_holding_their_lock() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let store = db.open_store().await;
    store.prepare(None).await.expect("migrations");
    db.exec("DROP INDEX radacct_start_user_idx").await;
    for key in [PREPARE_LOCK, ENSURE_INDEXES_LOCK] {
        let mut other = store
            .lock_connection("another node", None)
            .await
            .expect("connects")
            .expect("postgres");
        assert!(other.try_lock(key).await.expect("lock"));
        let waiting = {
            let store = store.clone();
            tokio::spawn(async move {
                if key == PREPARE_LOCK {
                    store.prepare(Some(70)).await.map(|()| Vec::new())
                } else {
                    store.ensure_indexes().await
                }
            })
        };
        // Still waiting while the other node holds the lock (it asks every 200 ms).
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!waiting.is_finished(), "runs only once the lock is free");
        assert!(other.unlock(key).await.expect("unlock"));
        let done = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("proceeds once the lock is free")
            .expect("joins")
            .expect("succeeds");
        if key == ENSURE_INDEXES_LOCK {
            // What the migrations do not create, and the one dropped.
            assert_eq!(done, INDEXES[2..]);
        }
        other.close().await;
    }
    store.close().await;
}
