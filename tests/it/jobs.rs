//! Housekeeping jobs against real stores: the stale sweeper (through the real writer), the
//! online flag sync, the archiver, EnsureIndexes and the one-shot CLI commands.

use crate::common::{self, Backend, Nas, Sess, TestApp, TestDb, now, test_config};
use radacctd::jobs::{Archiver, JobsConfig, Reconciler, Sweeper};
use radacctd::store::ActionRecord;

both_stores!(
    sweeper_closes_exactly_the_stale_rows_and_syncs_online_flags,
    late_interim_after_a_sweep_reopens_the_same_row,
    a_sweep_closes_at_most_sweep_limit_sessions_the_longest_silent_first,
    every_node_reconciles_the_index_with_other_writers,
    archiver_moves_exactly_the_eligible_rows,
    archiver_moves_action_rows_with_their_sessions,
    interrupted_archive_batch_leaves_both_tables_consistent,
    dry_runs_change_nothing,
    ensure_indexes_creates_what_is_missing_once,
    ensure_indexes_drops_the_indexes_it_replaced,
);

fn jobs() -> JobsConfig {
    JobsConfig {
        stale_after_secs: 1800,
        archive_after_days: 90,
        archive_batch: 3,
        ..JobsConfig::default()
    }
}

fn sweeper(app: &TestApp) -> Sweeper {
    Sweeper::new(
        app.store.clone(),
        app.ingest.clone(),
        jobs(),
        app.stats.clone(),
    )
}

fn ts(backend: Backend, secs: i64) -> String {
    match backend {
        Backend::Postgres => format!("to_timestamp({secs})"),
        Backend::Sqlite => format!("datetime({secs}, 'unixepoch')"),
    }
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.count(sql).await
}

async fn online(db: &TestDb, user: &str) -> bool {
    count(
        db,
        &format!("SELECT count(*) FROM subscribers WHERE username = '{user}' AND is_online"),
    )
    .await
        == 1
}

async fn sweeper_closes_exactly_the_stale_rows_and_syncs_online_flags(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let n = now();
    let a = Sess::new(1); // stale: last interim 3700 s ago
    let b = Sess::new(2); // stale: started 2000 s ago, never updated
    let c = Sess::new(3); // fresh: interim a minute ago
    nas.send(&a.start(n - 4000)).await.expect("start");
    nas.send(&a.interim(n - 3700, 300, 10, 10))
        .await
        .expect("interim");
    nas.send(&b.start(n - 2000)).await.expect("start");
    nas.send(&c.start(n - 4000)).await.expect("start");
    nas.send(&c.interim(n - 60, 3940, 10, 10))
        .await
        .expect("interim");
    let online_literal = if backend == Backend::Postgres {
        "true"
    } else {
        "1"
    };
    let offline_literal = if backend == Backend::Postgres {
        "false"
    } else {
        "0"
    };
    db.exec(&format!(
        "INSERT INTO subscribers (username, is_online) VALUES ('{}', {online_literal}), \
         ('{}', {offline_literal}), ('{}', {offline_literal}), ('ghost@example.lb', {online_literal})",
        a.user, b.user, c.user
    ))
    .await;

    let report = sweeper(&app).run_once().await.expect("sweep");
    assert_eq!((report.candidates, report.closed), (2, 2));
    let rows = db.rows().await;
    let row = |s: &Sess| {
        rows.iter()
            .find(|r| r.acctuniqueid == s.key())
            .expect("row")
            .clone()
    };
    let (ra, rb, rc) = (row(&a), row(&b), row(&c));
    assert_eq!(
        ra.acctstoptime,
        Some(i64::from(n) - 3700),
        "stopped at the last update"
    );
    assert_eq!(ra.acctsessiontime, Some(300));
    assert_eq!(ra.acctterminatecause.as_deref(), Some("NAS-Idle-Timeout"));
    assert_eq!(
        rb.acctstoptime,
        Some(i64::from(n) - 2000),
        "no update: the start"
    );
    assert_eq!(rb.acctsessiontime, Some(0));
    assert!(rc.is_open(), "fresh sessions are left alone");
    assert_eq!(app.index.len(), 1);
    assert!(app.index.contains(&c.key()));
    assert!(!online(&db, &a.user).await);
    assert!(!online(&db, &b.user).await);
    assert!(online(&db, &c.user).await, "open session: online");
    assert!(
        !online(&db, "ghost@example.lb").await,
        "no open session: offline"
    );
    assert_eq!((report.marked_online, report.marked_offline), (1, 2));
    // A second sweep finds nothing.
    let again = sweeper(&app).run_once().await.expect("sweep");
    assert_eq!((again.candidates, again.closed), (0, 0));
    app.stop().await;
}

async fn a_sweep_closes_at_most_sweep_limit_sessions_the_longest_silent_first(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let n = now();
    // Three stale sessions, silent for 4000, 3000 and 2000 s.
    let sessions: Vec<Sess> = (1..=3).map(Sess::new).collect();
    for (s, age) in sessions.iter().zip([4000, 3000, 2000]) {
        nas.send(&s.start(n - age)).await.expect("start");
    }
    let capped = Sweeper::new(
        app.store.clone(),
        app.ingest.clone(),
        JobsConfig {
            sweep_limit: 2,
            ..jobs()
        },
        app.stats.clone(),
    );
    let report = capped.run_once().await.expect("sweep");
    assert_eq!((report.candidates, report.closed), (2, 2));
    let open: Vec<String> = db
        .rows()
        .await
        .into_iter()
        .filter(|r| r.is_open())
        .map(|r| r.acctuniqueid)
        .collect();
    assert_eq!(open, vec![sessions[2].key()], "the most recent one waits");
    let report = capped.run_once().await.expect("sweep");
    assert_eq!((report.candidates, report.closed), (1, 1));
    assert!(app.index.is_empty());
    // The sweeper holds a sender of the writer's queue: the writer drains only without it.
    drop(capped);
    app.stop().await;
}

async fn late_interim_after_a_sweep_reopens_the_same_row(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let n = now();
    let s = Sess::new(1);
    nas.send(&s.start(n - 4000)).await.expect("start");
    assert_eq!(sweeper(&app).run_once().await.expect("sweep").closed, 1);
    assert!(app.index.is_empty());
    nas.send(&s.interim(n - 30, 3970, 500, 600))
        .await
        .expect("interim");
    let rows = db.rows().await;
    assert_eq!(rows.len(), 1, "no second row");
    assert!(rows[0].is_open());
    assert_eq!(rows[0].acctinputoctets, Some(500));
    assert!(app.index.contains(&s.key()));
    nas.send(&s.stop(n - 5, 3995, 700, 800, 1))
        .await
        .expect("stop");
    let rows = db.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].acctterminatecause.as_deref(), Some("User-Request"));
    assert_eq!(rows[0].acctstoptime, Some(i64::from(n) - 5));
    assert!(app.index.is_empty());
    app.stop().await;
}

async fn every_node_reconciles_the_index_with_other_writers(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let n = i64::from(now());
    let s = Sess::new(1);
    nas.send(&s.start(now() - 100)).await.expect("start");
    // Another writer (FreeRADIUS for another NAS) opens one session and closes ours, and the
    // change notifications of both reach no one: on PostgreSQL they carry this node's own
    // origin, which its change listener skips (as if it had been cut off meanwhile).
    let unseen = match backend {
        Backend::Postgres => format!("SET radacctd.origin = '{}'; ", app.stats.node().origin()),
        Backend::Sqlite => String::new(),
    };
    db.exec(&format!(
        "{unseen}INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, acctupdatetime) \
         VALUES ('x1', 'other-writer-key', 'elsewhere', '198.51.100.1', {t}, {t})",
        t = ts(backend, n - 60)
    ))
    .await;
    db.exec(&format!(
        "{unseen}UPDATE radacct SET acctstoptime = {}, acctterminatecause = 'User-Request' WHERE acctuniqueid = '{}'",
        ts(backend, n - 10),
        s.key()
    ))
    .await;
    let drift = Reconciler::new(app.ingest.clone(), std::time::Duration::from_secs(300))
        .run_once()
        .await
        .expect("reconcile");
    assert_eq!((drift.added, drift.removed), (1, 1));
    assert!(app.index.contains("other-writer-key"));
    assert!(!app.index.contains(&s.key()));
    assert_eq!(app.index.count_for_nas("198.51.100.1"), 1);
    app.stop().await;
}

/// Inserts a closed row stopped `age` seconds ago and returns nothing.
async fn insert_closed(db: &TestDb, backend: Backend, key: &str, age: i64) {
    let n = i64::from(now());
    db.exec(&format!(
        "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, \
         acctupdatetime, acctstoptime, acctsessiontime, acctterminatecause) \
         VALUES ('s', '{key}', 'u-{key}', '192.0.2.1', {start}, {stop}, {stop}, 100, 'User-Request')",
        start = ts(backend, n - age - 100),
        stop = ts(backend, n - age),
    ))
    .await;
}

async fn insert_open(db: &TestDb, backend: Backend, key: &str, age: i64) {
    let n = i64::from(now());
    db.exec(&format!(
        "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, acctupdatetime) \
         VALUES ('s', '{key}', 'u-{key}', '192.0.2.1', {t}, {t})",
        t = ts(backend, n - age)
    ))
    .await;
}

const DAY: i64 = 86_400;

async fn archiver_moves_exactly_the_eligible_rows(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    for i in 0..7 {
        insert_closed(&db, backend, &format!("old{i}"), 91 * DAY + i).await;
    }
    for i in 0..2 {
        insert_closed(&db, backend, &format!("recent{i}"), 89 * DAY + i).await;
    }
    // An open session that started long ago never moves.
    insert_open(&db, backend, "open-ancient", 200 * DAY).await;
    let before = db.rows().await;
    let archiver = Archiver::new(app.store.clone(), jobs(), app.stats.clone());
    let report = archiver.run_once().await.expect("archive");
    assert_eq!(report.moved, 7);
    assert_eq!(report.batches, 3, "batches of 3");
    let left: Vec<String> = db
        .rows()
        .await
        .into_iter()
        .map(|r| r.acctuniqueid)
        .collect();
    assert_eq!(left.len(), 3);
    assert!(
        left.iter()
            .all(|k| k.starts_with("recent") || k == "open-ancient")
    );
    assert_eq!(count(&db, "SELECT count(*) FROM radacct_archive").await, 7);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM radacct_archive WHERE acctuniqueid LIKE 'old%'"
        )
        .await,
        7
    );
    // Ids and values moved unchanged.
    let moved_id = before
        .iter()
        .find(|r| r.acctuniqueid == "old3")
        .expect("row")
        .radacctid;
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM radacct_archive WHERE radacctid = {} AND acctsessiontime = 100 \
                 AND acctterminatecause = 'User-Request' AND username = 'u-old3'",
                moved_id.expect("id")
            )
        )
        .await,
        1
    );
    assert_eq!(archiver.run_once().await.expect("again").moved, 0);
    app.stop().await;
}

/// The id of the row with key `key`.
async fn radacctid_of(db: &TestDb, key: &str) -> i64 {
    db.rows()
        .await
        .into_iter()
        .find(|r| r.acctuniqueid == key)
        .and_then(|r| r.radacctid)
        .expect("row")
}

/// An action log row of the session `radacctid` (key `key`), every column set.
fn action(radacctid: i64, key: &str, outcome: &'static str, at: i64) -> ActionRecord {
    ActionRecord {
        radacctid,
        acctuniqueid: key.to_owned(),
        username: Some(format!("u-{key}")),
        nasipaddress: "192.0.2.1".into(),
        action: "disconnect".into(),
        method: "coa".into(),
        outcome: outcome.into(),
        outcome_if_unchanged: None,
        detail: Some(r#"{"error_cause":402}"#.into()),
        request: Some(r#"{"Session-Timeout":60}"#.into()),
        error_cause: Some(402),
        actor: Some("alice".into()),
        node: "host1".into(),
        rtt_ms: Some(12),
        requested_at: at,
        finished_at: at + 1,
    }
}

async fn archiver_moves_action_rows_with_their_sessions(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    insert_closed(&db, backend, "old", 91 * DAY).await;
    insert_closed(&db, backend, "recent", DAY).await;
    let (old, recent) = (
        radacctid_of(&db, "old").await,
        radacctid_of(&db, "recent").await,
    );
    let t = i64::from(now()) - 91 * DAY;
    for (outcome, at) in [("nak", t), ("ack", t + 5)] {
        app.store
            .record_action(&action(old, "old", outcome, at))
            .await
            .expect("record");
    }
    app.store
        .record_action(&action(recent, "recent", "ack", t))
        .await
        .expect("record");
    let before = app.store.session_actions(old).await.expect("log");
    assert_eq!(before.len(), 2);

    let report = Archiver::new(app.store.clone(), jobs(), app.stats.clone())
        .run_once()
        .await
        .expect("archive");
    assert_eq!(report.moved, 1);
    let live = format!("SELECT count(*) FROM session_actions WHERE radacctid = {old}");
    let archived = format!("SELECT count(*) FROM session_actions_archive WHERE radacctid = {old}");
    assert_eq!(count(&db, &live).await, 0, "gone from session_actions");
    assert_eq!(count(&db, &archived).await, 2, "in session_actions_archive");
    // Same ids and values, the columns StoredAction does not read included.
    assert_eq!(app.store.session_actions(old).await.expect("log"), before);
    let exact = format!(
        "SELECT count(*) FROM session_actions_archive WHERE id IN ({}, {}) \
         AND acctuniqueid = 'old' AND username = 'u-old' AND nasipaddress = '192.0.2.1'",
        before[0].id, before[1].id
    );
    assert_eq!(count(&db, &exact).await, 2);
    // The other session's row stays where it was.
    let kept = format!("SELECT count(*) FROM session_actions WHERE radacctid = {recent}");
    assert_eq!(count(&db, &kept).await, 1);
    assert_eq!(
        app.store.session_actions(recent).await.expect("log").len(),
        1
    );
    app.stop().await;
}

async fn interrupted_archive_batch_leaves_both_tables_consistent(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    for i in 0..8 {
        insert_closed(&db, backend, &format!("old{i}"), 100 * DAY - i).await;
    }
    // A forced error on the 5th oldest row: its batch (rows 4..6) fails as a whole.
    let victim = "old3";
    let victim_id = radacctid_of(&db, victim).await;
    app.store
        .record_action(&action(
            victim_id,
            victim,
            "ack",
            i64::from(now()) - 100 * DAY,
        ))
        .await
        .expect("record");
    let victim_actions =
        |table: &str| format!("SELECT count(*) FROM {table} WHERE radacctid = {victim_id}");
    match backend {
        Backend::Postgres => {
            db.exec(&format!(
                "CREATE FUNCTION fail_archive() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.acctuniqueid = '{victim}' THEN RAISE EXCEPTION 'forced archive failure'; END IF; \
                 RETURN NEW; END $$; \
                 CREATE TRIGGER fail_archive BEFORE INSERT ON radacct_archive FOR EACH ROW EXECUTE FUNCTION fail_archive();"
            ))
            .await
        }
        Backend::Sqlite => {
            db.exec(&format!(
                "CREATE TRIGGER fail_archive BEFORE INSERT ON radacct_archive \
                 WHEN NEW.acctuniqueid = '{victim}' BEGIN SELECT RAISE(ABORT, 'forced archive failure'); END;"
            ))
            .await
        }
    }
    let archiver = Archiver::new(app.store.clone(), jobs(), app.stats.clone());
    let err = archiver.run_once().await.expect_err("forced failure");
    assert!(format!("{err:#}").contains("moved 3 rows"), "{err:#}");
    let live = count(&db, "SELECT count(*) FROM radacct").await;
    let archived = count(&db, "SELECT count(*) FROM radacct_archive").await;
    assert_eq!(
        (live, archived),
        (5, 3),
        "the first batch moved, the failed one did not"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM radacct r JOIN radacct_archive a ON a.radacctid = r.radacctid"
        )
        .await,
        0,
        "no row in both tables"
    );
    assert_eq!(
        (
            count(&db, &victim_actions("session_actions")).await,
            count(&db, &victim_actions("session_actions_archive")).await
        ),
        (1, 0),
        "the failed batch's action rows stayed too"
    );
    // Once the cause is gone, the next run finishes the job.
    db.exec(match backend {
        Backend::Postgres => "DROP TRIGGER fail_archive ON radacct_archive",
        Backend::Sqlite => "DROP TRIGGER fail_archive",
    })
    .await;
    let report = archiver.run_once().await.expect("archive");
    assert_eq!(report.moved, 5);
    assert_eq!(count(&db, "SELECT count(*) FROM radacct_archive").await, 8);
    assert_eq!(
        count(&db, &victim_actions("session_actions_archive")).await,
        1
    );
    app.stop().await;
}

async fn dry_runs_change_nothing(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let s = Sess::new(1);
    nas.send(&s.start(now() - 4000)).await.expect("start");
    insert_closed(&db, backend, "old", 100 * DAY).await;
    let before = db.rows().await;
    let stale = sweeper(&app).dry_run(10).await.expect("dry run");
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].acctuniqueid, s.key());
    let archiver = Archiver::new(app.store.clone(), jobs(), app.stats.clone());
    let (n, rows) = archiver.dry_run(10).await.expect("dry run");
    assert_eq!((n, rows.len()), (1, 1));
    assert_eq!(db.rows().await, before);
    assert_eq!(count(&db, "SELECT count(*) FROM radacct_archive").await, 0);
    assert!(app.index.contains(&s.key()));

    // The CLI's --dry-run says the same and changes nothing either.
    for (cmd, expect) in [
        ("sweep", "1 open session(s)"),
        ("archive", "dry run: 1 closed"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_radacctd"))
            .args([cmd, "--dry-run"])
            .env("RADACCTD__DATABASE__URL", &db.url)
            .output()
            .expect("runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(expect), "{cmd}: {stdout}");
    }
    assert_eq!(db.rows().await, before);
    app.stop().await;
}

/// A database where an earlier version built the two user-name indexes: EnsureIndexes builds
/// the one that replaces them, then drops them, and leaves an index of the operator's alone.
/// The new index serves the online-flag sync's probe of a user's open rows.
async fn ensure_indexes_drops_the_indexes_it_replaced(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    db.exec(
        "CREATE INDEX radacct_open_username_idx ON radacct (username) WHERE acctstoptime IS NULL; \
         CREATE INDEX radacct_username_idx ON radacct (username); \
         CREATE INDEX operators_username_idx ON radacct (username, nasipaddress)",
    )
    .await;
    let index_count = |name: &str| {
        let sql = match backend {
            Backend::Postgres => {
                format!("SELECT count(*) FROM pg_indexes WHERE indexname = '{name}'")
            }
            Backend::Sqlite => {
                format!(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = '{name}'"
                )
            }
        };
        let db = &db;
        async move { db.count(&sql).await }
    };
    let created = store.ensure_indexes().await.expect("ensure");
    assert!(
        created.iter().any(|c| c == "radacct_username_stop_idx"),
        "{created:?}"
    );
    assert_eq!(index_count("radacct_username_stop_idx").await, 1);
    assert_eq!(index_count("radacct_open_username_idx").await, 0, "retired");
    assert_eq!(index_count("radacct_username_idx").await, 0, "retired");
    assert_eq!(
        index_count("operators_username_idx").await,
        1,
        "not radacctd's"
    );
    // Nothing left to do the second time.
    assert_eq!(
        store.ensure_indexes().await.expect("again"),
        Vec::<String>::new()
    );
    if let radacctd::store::Store::Postgres(pg) = &store {
        let mut tx = pg.pool().begin().await.expect("begin");
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await
            .expect("set");
        sqlx::query("DROP INDEX operators_username_idx")
            .execute(&mut *tx)
            .await
            .expect("drop");
        // 20,000 sessions of 2,000 users, a tenth of them open: the planner's choice means
        // something only on a table of some size.
        sqlx::raw_sql(
            "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, \
             acctstarttime, acctstoptime) \
             SELECT 's' || i, 'u' || i, 'user' || (i % 2000), '192.0.2.1', \
             now() - interval '1 day', CASE WHEN i % 10 = 0 THEN NULL ELSE now() END \
             FROM generate_series(1, 20000) i; ANALYZE radacct",
        )
        .execute(&mut *tx)
        .await
        .expect("rows");
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN SELECT 1 FROM radacct WHERE username = 'user7' AND acctstoptime IS NULL",
        )
        .fetch_all(&mut *tx)
        .await
        .expect("explain");
        let plan = plan.join("\n");
        assert!(
            plan.contains("radacct_username_stop_idx") && plan.contains("Index Cond"),
            "{plan}"
        );
        tx.rollback().await.expect("rollback");
    }
    store.close().await;
}

async fn ensure_indexes_creates_what_is_missing_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.open_store().await;
    if backend == Backend::Postgres {
        // A bare FreeRADIUS database: its own schema.sql, no radacctd migration.
        let path = common::freeradius::freeradius_pg_schema_path();
        if !common::require(path.exists(), "FreeRADIUS's schema.sql (freeradius-config)") {
            return;
        }
        db.exec(&std::fs::read_to_string(path).expect("schema"))
            .await;
    } else {
        store.migrate().await.expect("migrate");
    }
    let created = store.ensure_indexes().await.expect("ensure");
    for ix in [
        "radacct_username_stop_idx",
        "radacct_stop_idx",
        "radacct_nas_start_idx",
    ] {
        assert!(created.iter().any(|c| c == ix), "{ix} created: {created:?}");
    }
    assert!(
        !created.iter().any(|c| c == "radacct_active_session_idx"),
        "FreeRADIUS's own index already existed"
    );
    // Attribution's: GiST (address and session span) on PostgreSQL, the IPv4 address on SQLite.
    let attribution = match backend {
        Backend::Postgres => [
            "radacct_framedipaddress_gist",
            "radacct_framedipv6address_gist",
            "radacct_framedipv6prefix_gist",
            "radacct_delegatedipv6prefix_gist",
        ]
        .as_slice(),
        Backend::Sqlite => [
            "radacct_framedipaddress_idx",
            "radacct_archive_framedipaddress_idx",
        ]
        .as_slice(),
    };
    for ix in attribution {
        assert!(created.iter().any(|c| c == ix), "{ix} created: {created:?}");
    }
    assert_eq!(
        store.ensure_indexes().await.expect("again"),
        Vec::<String>::new()
    );
    if backend == Backend::Postgres {
        // The FreeRADIUS database had no radacct_archive: its indexes come after the migration
        // that creates it.
        store.migrate().await.expect("migrate");
        let mut archive = store.ensure_indexes().await.expect("after migrating");
        archive.sort();
        assert_eq!(
            archive,
            [
                "radacct_archive_delegatedipv6prefix_gist",
                "radacct_archive_framedipaddress_gist",
                "radacct_archive_framedipv6address_gist",
                "radacct_archive_framedipv6prefix_gist",
            ]
        );
    }
    if backend == Backend::Postgres {
        // An INVALID index (an interrupted CREATE INDEX CONCURRENTLY) is rebuilt.
        db.exec("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'radacct_stop_idx'::regclass")
            .await;
        assert_eq!(
            store.ensure_indexes().await.expect("rebuild"),
            vec!["radacct_stop_idx"]
        );
        assert_eq!(
            count(
                &db,
                "SELECT count(*) FROM pg_index WHERE indexrelid = 'radacct_stop_idx'::regclass AND indisvalid"
            )
            .await,
            1
        );
    }
    store.close().await;
}
