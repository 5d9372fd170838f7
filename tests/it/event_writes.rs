//! The outbox's writers against the real application, on both stores (docs/EVENTS.md): each
//! row change the accounting semantics made gives its session event exactly once, in the
//! transaction of the change (a retransmit, a repeat, a late packet that changed nothing gives
//! none); a NAS's Accounting-On, the stale sweeper, a confirmed disconnect, a CoA and a
//! fair-use crossing give theirs; with `events.enabled = false` nothing is appended.

use std::time::Duration;

use crate::api_disconnect::db_with_nas;
use crate::common::api::{api_config, token_for};
use crate::common::fake_nas::{FakeNas, NasMode};
use crate::common::{
    self, Backend, Nas, Sess, TestApp, TestDb, interims_on_two_nodes, nas_onoff, now, open_session,
    rows_redone, test_config,
};
use radacctd::api::auth::Role;
use radacctd::config::Config;
use radacctd::events::StoredEvent;
use radacctd::jobs::{JobsConfig, Sweeper};
use radacctd::radius::dictionary as d;
use radacctd::store::{ActionRecord, Store, StoreOptions, Throttle};
use radacctd::stream::Sequencer;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

both_stores!(
    a_sessions_packets_give_one_event_per_row_change,
    with_interims_each_changing_interim_is_an_event_once,
    nothing_is_appended_with_events_disabled,
    an_accounting_on_reports_the_nas_and_each_session_it_closed,
    the_sweepers_close_is_a_ghost_close_and_a_late_interim_reopens,
    a_coa_and_a_confirmed_disconnect_are_events_beside_their_action_rows,
    a_claimed_crossing_is_one_event,
    every_commit_that_appends_wakes_the_sequencer,
    the_writers_and_the_action_logs_events_are_numbered_without_a_poll,
    a_locked_batch_gives_new_rows_events_their_ids_in_item_order,
);

/// Numbers what is queued (the application's own sequencer may have numbered some already)
/// and reads every event, by id.
async fn all_events(store: &Store) -> Vec<StoredEvent> {
    Sequencer::new(store.clone(), Duration::from_secs(1))
        .drain()
        .await
        .expect("drain");
    store.events_after(0, 100_000).await.expect("read events")
}

fn kinds(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn data(e: &StoredEvent) -> Value {
    serde_json::from_str(&e.data).expect("data is JSON")
}

/// Start, a retransmit of it, an Interim-Update, a repeat of it with a new identifier, a Stop,
/// and a late Interim-Update after the Stop, for one session; then its events and its row.
async fn one_sessions_life(
    backend: Backend,
    tweak: impl FnOnce(&mut Config),
) -> Option<(Vec<StoredEvent>, radacctd::sessions::Row, Sess)> {
    let db = TestDb::new(backend).await?;
    let mut config = test_config(&db);
    tweak(&mut config);
    let app = TestApp::start(config).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let s = Sess::new(1);
    let t0 = now() - 600;
    let start = nas.request(&s.start(t0));
    nas.send_bytes(&start).await.expect("start");
    nas.send_bytes(&start).await.expect("retransmit");
    for _ in 0..2 {
        nas.send(&s.interim(t0 + 300, 300, 1_000, 2_000))
            .await
            .expect("interim");
    }
    nas.send(&s.stop(t0 + 400, 400, 1_500, 2_500, 1))
        .await
        .expect("stop");
    nas.send(&s.interim(t0 + 500, 500, 1_600, 2_600))
        .await
        .expect("late interim");
    let events = all_events(&app.store).await;
    let row = app
        .store
        .row_by_key(&s.key())
        .await
        .expect("read")
        .expect("row");
    app.stop().await;
    Some((events, row, s))
}

/// Every event of the session names it, its row and its NAS.
fn assert_about(events: &[StoredEvent], row: &radacctd::sessions::Row, s: &Sess) {
    for e in events {
        assert_eq!(e.radacctid, row.radacctid, "{e:?}");
        assert!(e.radacctid.is_some());
        assert_eq!(e.acctuniqueid, s.key());
        assert_eq!(e.username, s.user);
        assert_eq!(e.nasipaddress, s.nas_ip.to_string());
    }
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(ids, expected, "numbered in order, without gaps");
}

async fn a_sessions_packets_give_one_event_per_row_change(backend: Backend) {
    let Some((events, row, s)) = one_sessions_life(backend, |_| {}).await else {
        return;
    };
    assert_eq!(kinds(&events), vec!["session.started", "session.stopped"]);
    assert_about(&events, &row, &s);
    let started = data(&events[0]);
    assert_eq!(started["acctsessionid"], s.session_id.as_str());
    assert_eq!(started["framedipaddress"], s.framed_ip.to_string());
    assert_eq!(started["acctstoptime"], Value::Null);
    let stopped = data(&events[1]);
    assert_eq!(stopped["acctinputoctets"], 1_500);
    assert_eq!(stopped["acctoutputoctets"], 2_500);
    assert_eq!(stopped["acctsessiontime"], 400);
    assert_eq!(stopped["acctterminatecause"], "User-Request");
    assert!(stopped["acctstoptime"].is_string());
    assert_eq!(events[1].time, row.acctstoptime.expect("stopped"));
}

async fn with_interims_each_changing_interim_is_an_event_once(backend: Backend) {
    let Some((events, row, s)) = one_sessions_life(backend, |c| c.events.interims = true).await
    else {
        return;
    };
    assert_eq!(
        kinds(&events),
        vec!["session.started", "session.interim", "session.stopped"]
    );
    assert_about(&events, &row, &s);
    assert_eq!(data(&events[1])["acctinputoctets"], 1_000);
}

async fn nothing_is_appended_with_events_disabled(backend: Backend) {
    let Some((events, _, _)) = one_sessions_life(backend, |c| {
        c.events.enabled = false;
        c.events.interims = true;
    })
    .await
    else {
        return;
    };
    assert_eq!(kinds(&events), Vec::<&str>::new());
    // Nor do the changes the store writes on its own account.
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let opts = StoreOptions {
        events: false,
        ..Default::default()
    };
    let store = Store::open(&db.url, &opts).await.expect("open");
    store.migrate().await.expect("migrate");
    store
        .record_action(&coa_record(1, "ack"))
        .await
        .expect("action");
    assert!(store.claim_throttle(&throttle("u")).await.expect("claim"));
    assert_eq!(all_events(&store).await.len(), 0);
    assert_eq!(store.session_actions(1).await.expect("actions").len(), 1);
}

async fn an_accounting_on_reports_the_nas_and_each_session_it_closed(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let t0 = now() - 600;
    let on_nas: Vec<Sess> = (1..=3).map(Sess::new).collect();
    let elsewhere = Sess::new(4).on_nas("192.0.2.20");
    for s in on_nas.iter().chain([&elsewhere]) {
        nas.send(&s.start(t0)).await.expect("start");
    }
    nas.send(&nas_onoff("192.0.2.10", d::STATUS_ACCOUNTING_ON, t0 + 100))
        .await
        .expect("accounting-on");
    let events = all_events(&app.store).await;
    assert_eq!(
        kinds(&events),
        vec![
            "session.started",
            "session.started",
            "session.started",
            "session.started",
            "nas.rebooted",
            "session.stopped",
            "session.stopped",
            "session.stopped",
        ]
    );
    let rebooted = &events[4];
    assert_eq!(rebooted.nasipaddress, "192.0.2.10");
    assert_eq!((rebooted.username.as_str(), rebooted.radacctid), ("", None));
    assert_eq!(rebooted.time, i64::from(t0 + 100));
    assert_eq!(
        data(rebooted),
        json!({"status": "on", "closed": 3, "cause": "NAS-Reboot"})
    );
    let rows = db.rows().await;
    for (stopped, s) in events[5..].iter().zip(&on_nas) {
        let row = rows
            .iter()
            .find(|r| r.acctuniqueid == s.key())
            .expect("row");
        assert_eq!(stopped.radacctid, row.radacctid);
        assert_eq!(stopped.acctuniqueid, s.key());
        assert_eq!(data(stopped)["acctterminatecause"], "NAS-Reboot");
        assert_eq!(data(stopped)["acctsessiontime"], 100);
    }
    app.stop().await;
}

async fn the_sweepers_close_is_a_ghost_close_and_a_late_interim_reopens(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let s = Sess::new(1);
    let t0 = now() - 4_000;
    nas.send(&s.start(t0)).await.expect("start");
    let jobs = JobsConfig {
        stale_after_secs: 1_800,
        ..JobsConfig::default()
    };
    let sweeper = Sweeper::new(
        app.store.clone(),
        app.ingest.clone(),
        jobs,
        app.stats.clone(),
    );
    assert_eq!(sweeper.run_once().await.expect("sweep").closed, 1);
    // Nothing left to close: the second sweep gives no event.
    assert_eq!(sweeper.run_once().await.expect("sweep").closed, 0);
    // It holds a sender into the writer's queue, which must close for the application to stop.
    drop(sweeper);
    nas.send(&s.interim(now() - 10, 3_990, 10, 20))
        .await
        .expect("late interim");
    let events = all_events(&app.store).await;
    assert_eq!(
        kinds(&events),
        vec![
            "session.started",
            "session.ghost_closed",
            "session.reopened"
        ]
    );
    let closed = data(&events[1]);
    assert_eq!(closed["by"], "sweeper");
    assert_eq!(closed["cause"], "NAS-Idle-Timeout");
    assert_eq!(
        closed["acctstoptime"],
        radacctd::events::rfc3339(i64::from(t0)).expect("time")
    );
    let row = db.rows().await.remove(0);
    assert!(row.is_open());
    assert!(events.iter().all(|e| e.radacctid == row.radacctid));
    app.stop().await;
}

/// The CoA permission and the disconnect permission.
const COA: &str = "subscribers.coa";
const DISCONNECT: &str = "subscribers.disconnect";

async fn a_coa_and_a_confirmed_disconnect_are_events_beside_their_action_rows(backend: Backend) {
    let fake = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, fake.addr.port()).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let (s, id) = open_session(&app, 1).await;
    let token = token_for("support-desk-7", Role::Admin, None, &[COA, DISCONNECT]);
    let coa = app
        .http
        .post(app.url(&format!("/api/sessions/{id}/coa")))
        .bearer_auth(&token)
        .json(&json!({ "rate_limit": "10M/20M" }))
        .send()
        .await
        .expect("coa");
    assert_eq!(coa.status().as_u16(), 200);
    let disconnect = app
        .http
        .post(app.url(&format!("/api/sessions/{id}/disconnect")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("disconnect");
    assert_eq!(disconnect.status().as_u16(), 200);
    let events = all_events(&app.store).await;
    assert_eq!(
        kinds(&events),
        vec!["session.started", "session.coa", "session.disconnected"]
    );
    for e in &events {
        assert_eq!(
            (e.radacctid, e.acctuniqueid.as_str()),
            (Some(id), s.key().as_str())
        );
        assert_eq!(e.username, s.user);
    }
    let coa = data(&events[1]);
    assert_eq!(coa["outcome"], "ack");
    assert_eq!(coa["method"], "coa");
    assert_eq!(coa["actor"], "support-desk-7");
    assert_eq!(coa["request"], json!({"Mikrotik-Rate-Limit": "10M/20M"}));
    assert_eq!(coa["error_cause"], Value::Null);
    assert!(coa["rtt_ms"].is_i64(), "{coa}");
    let disconnected = data(&events[2]);
    assert_eq!(disconnected["outcome"], "ack");
    assert_eq!(disconnected["method"], "coa");
    assert_eq!(disconnected["actor"], "support-desk-7");
    // The action rows the events go with.
    let actions = app.store.session_actions(id).await.expect("actions");
    let logged: Vec<(&str, &str)> = actions
        .iter()
        .map(|a| (a.action.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(logged, vec![("coa", "ack"), ("disconnect", "ack")]);
    assert_eq!(events[2].time, actions[1].finished_at);
    app.stop().await;
}

fn coa_record(radacctid: i64, outcome: &'static str) -> ActionRecord {
    ActionRecord {
        radacctid,
        acctuniqueid: "k".into(),
        username: Some("u".into()),
        nasipaddress: "192.0.2.1".into(),
        action: "coa".into(),
        method: "coa".into(),
        outcome: outcome.into(),
        outcome_if_unchanged: None,
        detail: None,
        request: Some(r#"{"rate_limit":"1M/1M"}"#.into()),
        error_cause: (outcome == "nak").then_some(503),
        actor: Some("ops".into()),
        node: "a".into(),
        rtt_ms: Some(4),
        requested_at: 1_700_000_000,
        finished_at: 1_700_000_001,
    }
}

fn throttle(user: &str) -> Throttle {
    Throttle {
        username: user.into(),
        policy: "fup".into(),
        period_start: 1_700_000_000,
        period_end: 1_702_592_000,
        threshold_bytes: 1_000,
        used_bytes: 1_500,
        rate: "1M/1M".into(),
        restore_rate: "10M/10M".into(),
        throttled_since: 1_700_100_000,
        node: "a".into(),
    }
}

async fn a_claimed_crossing_is_one_event(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    assert!(store.claim_throttle(&throttle("u")).await.expect("claim"));
    // Another node seeing the same crossing claims nothing, and appends nothing.
    assert!(!store.claim_throttle(&throttle("u")).await.expect("claim"));
    // An action row without a session's lock (SQLite, or when coordination failed).
    store
        .record_action(&coa_record(9, "nak"))
        .await
        .expect("action");
    let events = all_events(&store).await;
    assert_eq!(
        kinds(&events),
        vec!["usage.threshold_crossed", "session.coa"]
    );
    let crossed = &events[0];
    assert_eq!(
        (crossed.username.as_str(), crossed.time),
        ("u", 1_700_100_000)
    );
    assert_eq!(
        data(crossed),
        json!({
            "policy": "fup",
            "period_start": "2023-11-14T22:13:20Z",
            "period_end": "2023-12-14T22:13:20Z",
            "threshold_bytes": 1_000,
            "used_bytes": 1_500,
            "rate": "1M/1M",
        })
    );
    let coa = data(&events[1]);
    assert_eq!(coa["error_cause"], 503);
    assert_eq!(coa["error_cause_name"], "Session-Context-Not-Found");
    assert_eq!(events[1].radacctid, Some(9));
}

/// Waits until the outbox has numbered at least `n` events (the sequencer's work, seen in the
/// database), for at most 30 s: far less than the poll the tests below configure, so only a
/// wake can have numbered them.
async fn wait_numbered(store: &Store, n: i64) {
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while store.event_bounds().await.expect("bounds").1 < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{n} events not numbered without a poll");
}

/// A poll far longer than any test: events are numbered only when a commit wakes the sequencer.
const NO_POLL: Duration = Duration::from_secs(3_600);

/// Whoever appends in a transaction of the store's (the action log without a lock, a fair-use
/// claim, any `Tx`) wakes the sequencer on commit, not only the ingest writer.
async fn every_commit_that_appends_wakes_the_sequencer(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    let stop = CancellationToken::new();
    let sequencer = tokio::spawn(Sequencer::new(store.clone(), NO_POLL).run(stop.clone()));
    store
        .record_action(&coa_record(9, "ack"))
        .await
        .expect("action");
    // Numbered by the sequencer's first round or by the wake: from here on, only wakes.
    wait_numbered(&store, 1).await;
    assert!(store.claim_throttle(&throttle("u")).await.expect("claim"));
    wait_numbered(&store, 2).await;
    let mut tx = store.begin().await.expect("begin");
    tx.add_events(&[radacctd::sessions::event::session_event(
        radacctd::events::EventType::SessionStarted,
        1_700_000_000,
        &radacctd::sessions::Row::default(),
        None,
    )])
    .await
    .expect("append");
    tx.commit().await.expect("commit");
    wait_numbered(&store, 3).await;
    stop.cancel();
    sequencer.await.expect("sequencer");
}

/// In the application, with no poll to fall back on: a Start (the ingest writer's commit, the
/// guarded statement on PostgreSQL) and a CoA (its action row) are numbered at once.
async fn the_writers_and_the_action_logs_events_are_numbered_without_a_poll(backend: Backend) {
    let fake = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, fake.addr.port()).await else {
        return;
    };
    let mut config = api_config(&db);
    config.events.poll_interval_ms = NO_POLL.as_millis() as u64;
    let app = TestApp::start(config).await;
    let (_, id) = open_session(&app, 1).await;
    wait_numbered(&app.store, 1).await;
    let token = token_for("support-desk-7", Role::Admin, None, &[COA]);
    let coa = app
        .http
        .post(app.url(&format!("/api/sessions/{id}/coa")))
        .bearer_auth(&token)
        .json(&json!({ "rate_limit": "10M/20M" }))
        .send()
        .await
        .expect("coa");
    assert_eq!(coa.status().as_u16(), 200);
    wait_numbered(&app.store, 2).await;
    app.stop().await;
}

/// One batch with an Accounting-On in it takes the locked transaction on both stores: the
/// events of rows it inserts (before and after the barrier) carry the ids the insert gave, and
/// every event stands in item order, the NAS's own between the runs it separates.
async fn a_locked_batch_gives_new_rows_events_their_ids_in_item_order(backend: Backend) {
    use common::Queued::Packet;
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    let w = common::TestWriter::new(store);
    let (a, b, c) = (
        Sess::new(1),
        Sess::new(2),
        Sess::new(3).on_nas("192.0.2.20"),
    );
    let t0 = now() - 600;
    let steps = [
        Packet(a.start(t0)),
        Packet(b.stop(t0 + 50, 50, 10, 20, 1)),
        Packet(nas_onoff("192.0.2.20", d::STATUS_ACCOUNTING_ON, t0 + 60)),
        Packet(c.start(t0 + 100)),
        Packet(a.stop(t0 + 200, 200, 30, 40, 1)),
    ];
    w.run(common::queued(&steps), 64, Duration::from_secs(30))
        .await;
    let events = all_events(&w.store).await;
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.acctuniqueid.as_str()))
        .collect();
    let (ka, kb, kc) = (a.key(), b.key(), c.key());
    assert_eq!(
        seen,
        vec![
            ("session.started", ka.as_str()),
            ("session.stopped", kb.as_str()),
            ("nas.rebooted", ""),
            ("session.started", kc.as_str()),
            ("session.stopped", ka.as_str()),
        ]
    );
    let rows = db.rows().await;
    for e in events.iter().filter(|e| !e.acctuniqueid.is_empty()) {
        let row = rows
            .iter()
            .find(|r| r.acctuniqueid == e.acctuniqueid)
            .expect("row");
        assert_eq!(e.radacctid, row.radacctid, "{e:?}");
        assert!(e.radacctid.is_some());
    }
}

/// docs/HA.md: two nodes on one PostgreSQL commit interims of the same sessions, at once and
/// alternately, so that guarded writes are refused and redone under locks: with
/// `events.interims = true`, every write of a row gives exactly one event (a refused write
/// none, its redo one if it changed the row), counted against a trigger that logs each row
/// write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_committing_one_sessions_give_one_event_per_row_write() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let node = |name: &str| {
        let mut c = test_config(&db);
        c.node.name = name.into();
        c.events.interims = true;
        c
    };
    let a = TestApp::start(node("a")).await;
    db.exec(
        "CREATE TABLE row_writes (acctuniqueid text NOT NULL, op text NOT NULL); \
         CREATE FUNCTION log_row_write() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN INSERT INTO row_writes VALUES (NEW.acctuniqueid, TG_OP); RETURN NULL; END $$; \
         CREATE TRIGGER log_row_write AFTER INSERT OR UPDATE ON radacct \
         FOR EACH ROW EXECUTE FUNCTION log_row_write();",
    )
    .await;
    let b = TestApp::start(node("b")).await;
    let sessions: Vec<Sess> = (20..30).map(Sess::new).collect();
    let t0 = now() - 7200;
    interims_on_two_nodes(a.radius_addr, b.radius_addr, &sessions, t0).await;
    let events = all_events(&a.store).await;
    for s in &sessions {
        let key = s.key();
        let mine: Vec<&StoredEvent> = events.iter().filter(|e| e.acctuniqueid == key).collect();
        let writes = db
            .count(&format!(
                "SELECT count(*) FROM row_writes WHERE acctuniqueid = '{key}'"
            ))
            .await;
        assert_eq!(
            mine.len() as i64,
            writes,
            "one event per row write of {key}"
        );
        assert_eq!(mine[0].kind, "session.started");
        assert!(mine[1..].iter().all(|e| e.kind == "session.interim"));
        // Each event is a change of its own: the update times only move forward.
        let times: Vec<i64> = mine.iter().map(|e| e.time).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        let row = db
            .rows()
            .await
            .into_iter()
            .find(|r| r.acctuniqueid == key)
            .expect("row");
        assert!(mine.iter().all(|e| e.radacctid == row.radacctid));
        let last = data(mine[mine.len() - 1]);
        assert_eq!(
            last["acctinputoctets"],
            row.acctinputoctets.expect("octets")
        );
    }
    assert!(
        rows_redone(&[&a, &b]) > 0,
        "no write was refused and redone"
    );
    a.stop().await;
    b.stop().await;
}
