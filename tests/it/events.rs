//! Session events (docs/EVENTS.md) against the real stores: the outbox's numbering, the
//! `GET /api/events` stream (every event once and in order, resumption, scope, filters, the
//! loss of trimmed events, slow clients, several nodes) and the retention job.

use std::time::Duration;

use crate::common::{Backend, TestDb};
use radacctd::events::{EventType, NewEvent};
use radacctd::store::Store;
use radacctd::stream::Sequencer;

both_stores!(
    the_sequencer_numbers_committed_events_in_order_without_gaps,
    trimming_and_webhook_cursors,
    the_per_event_outbox_carries_over_into_batches,
    a_client_receives_every_event_in_id_order,
    resuming_misses_nothing_and_repeats_nothing,
    resuming_from_the_database_when_memory_no_longer_holds_the_events,
    resuming_after_no_stream_was_open_reads_the_database,
    each_caller_sees_its_scope_and_its_filters,
    bad_requests_name_the_parameter,
    resuming_from_a_trimmed_id_reports_the_loss_first,
    a_client_that_does_not_read_is_disconnected_and_counted,
    an_idle_stream_beats_and_the_streams_per_node_are_capped,
    retention_trims_by_age_and_count,
);

fn event(n: i64) -> NewEvent {
    NewEvent {
        kind: EventType::SessionStarted,
        time: 1_700_000_000 + n,
        username: format!("u{n}"),
        nasipaddress: "10.0.0.1".into(),
        acctuniqueid: format!("k{n}"),
        radacctid: Some(n),
        data: format!(r#"{{"n":{n}}}"#),
    }
}

async fn add(store: &Store, range: std::ops::Range<i64>) {
    let events: Vec<NewEvent> = range.map(event).collect();
    store.add_events(&events).await.expect("add events");
}

async fn the_sequencer_numbers_committed_events_in_order_without_gaps(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    let seq = Sequencer::new(store.clone(), Duration::from_secs(1));
    let mut numbered = seq.numbered();
    assert_eq!(seq.drain().await.expect("empty round"), 0);
    add(&store, 0..3).await;
    // A rolled-back transaction leaves nothing to number.
    let mut tx = store.begin().await.expect("begin");
    tx.add_events(&[event(99)]).await.expect("add");
    tx.rollback().await.expect("rollback");
    add(&store, 3..6_000).await;
    assert_eq!(store.queued_events().await.expect("queued"), 5_997 + 3);
    // One batch per write, split at BATCH_MAX: 3, then 1,000 × 5 + 997.
    assert_eq!(
        db.count("SELECT COUNT(*) FROM event_batches").await,
        1 + (5_997 + 999) / radacctd::events::BATCH_MAX as i64
    );
    assert_eq!(seq.drain().await.expect("drain"), 6_000);
    assert!(numbered.has_changed().expect("sender alive"));
    assert_eq!(*numbered.borrow_and_update(), 6_000);
    assert_eq!(store.queued_events().await.expect("queued"), 0);
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events_after(after, 1_000).await.expect("read");
        let Some(last) = page.last() else { break };
        after = last.id;
        all.extend(page);
    }
    assert_eq!(all.len(), 6_000);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.id, i as i64 + 1, "ids from 1 without gaps");
        assert_eq!(e.radacctid, Some(i as i64), "queue order kept");
        assert_eq!(e.kind, "session.started");
        assert_eq!(e.data, format!(r#"{{"n":{i}}}"#));
    }
    assert_eq!(
        store.event_bounds().await.expect("bounds"),
        (Some(1), 6_000)
    );
    // Numbering goes on from the last id.
    add(&store, 6_000..6_002).await;
    assert_eq!(seq.drain().await.expect("drain"), 6_002);
    if backend == Backend::Postgres {
        // An event committed after a later one is numbered after it: ids follow commits.
        let mut early = store.begin().await.expect("begin");
        early.add_events(&[event(7_000)]).await.expect("add");
        add(&store, 7_001..7_002).await;
        assert_eq!(seq.drain().await.expect("drain"), 6_003);
        early.commit().await.expect("commit");
        assert_eq!(seq.drain().await.expect("drain"), 6_004);
        let tail = store.events_after(6_002, 10).await.expect("read");
        let order: Vec<Option<i64>> = tail.iter().map(|e| e.radacctid).collect();
        assert_eq!(order, vec![Some(7_001), Some(7_000)]);
    }
}

async fn trimming_and_webhook_cursors(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    append(&store, 0..100, 10).await;
    store.sequence_events(1_000, 1_000).await.expect("round");
    append(&store, 100..150, 10).await;
    store.sequence_events(1_000, 2_000).await.expect("round");
    // By age, whole batches: the first 100 were numbered at 1,000.
    assert_eq!(store.trim_events(1_500, 0, 3).await.expect("trim"), (3, 30));
    assert_eq!(
        store.trim_events(1_500, 0, 1_000).await.expect("trim"),
        (7, 70)
    );
    // By count: a batch goes only when all of its ids are at most the bound, so bounds of
    // 125 and 130 both keep the newest 20 (ids 131..150), the batch 121..130 going at 130.
    assert_eq!(
        store.trim_events(0, 125, 1_000).await.expect("trim"),
        (2, 20)
    );
    assert_eq!(
        store.trim_events(0, 130, 1_000).await.expect("trim"),
        (1, 10)
    );
    assert_eq!(
        store.event_bounds().await.expect("bounds"),
        (Some(131), 150)
    );
    // A reader from before what is retained starts at the oldest retained, also mid-batch.
    let ids = |page: Vec<radacctd::events::StoredEvent>| -> Vec<i64> {
        page.iter().map(|e| e.id).collect()
    };
    assert_eq!(
        ids(store.events_after(0, 3).await.expect("read")),
        vec![131, 132, 133]
    );
    assert_eq!(
        ids(store.events_after(133, 9).await.expect("read")),
        (134..=142).collect::<Vec<_>>()
    );
    assert_eq!(
        ids(store.events_after(148, 100).await.expect("read")),
        vec![149, 150]
    );
    assert!(store.events_after(150, 100).await.expect("read").is_empty());
    assert_eq!(store.webhook_cursor("billing").await.expect("cursor"), None);
    store
        .set_webhook_cursor("billing", 140, 5)
        .await
        .expect("set");
    store
        .set_webhook_cursor("billing", 150, 6)
        .await
        .expect("set");
    assert_eq!(
        store.webhook_cursor("billing").await.expect("cursor"),
        Some(150)
    );
    // A late acknowledgement of an older batch (a former leader's) keeps the newer cursor.
    store
        .set_webhook_cursor("billing", 145, 7)
        .await
        .expect("set");
    assert_eq!(
        store.webhook_cursor("billing").await.expect("cursor"),
        Some(150)
    );
}

/// A database migrated before the outbox held batches (migration 0009: one row per event in
/// `events` and `event_queue`) keeps its events: numbered ones keep their ids, queued ones are
/// numbered next.
async fn the_per_event_outbox_carries_over_into_batches(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    match backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
            sqlx::migrate!("./migrations/postgres")
                .run_to(9, &pool)
                .await
                .expect("migrate to 0009");
            pool.close().await;
        }
        Backend::Sqlite => {
            let options =
                <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&db.url)
                    .expect("url")
                    .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options)
                .await
                .expect("connect");
            sqlx::migrate!("./migrations/sqlite")
                .run_to(9, &pool)
                .await
                .expect("migrate to 0009");
            pool.close().await;
        }
    }
    db.exec(
        r#"INSERT INTO events (id, type, time, username, nasipaddress, acctuniqueid, radacctid,
             data, created)
           VALUES (1, 'session.started', 1700000000, 'alice', '10.0.0.1', 'k1', 7, '{"n":1}',
             1700000005),
           (2, 'nas.rebooted', 1700000001, '', '10.0.0.1', '', NULL, '{"closed":3}', 1700000006);
           UPDATE event_sequence SET last = 2;
           INSERT INTO event_queue (type, time, username, nasipaddress, acctuniqueid, radacctid,
             data)
           VALUES ('session.stopped', 1700000002, 'bob "b"', '10.0.0.2', 'k2', 8,
             '{"cause":"User-Request","octets":[1,2]}');"#,
    )
    .await;
    let store = db.open_store().await;
    store.migrate().await.expect("migrate to batches");
    assert_eq!(store.event_bounds().await.expect("bounds"), (Some(1), 2));
    assert_eq!(store.queued_events().await.expect("queued"), 1);
    let seq = Sequencer::new(store.clone(), Duration::from_secs(1));
    assert_eq!(seq.drain().await.expect("drain"), 3);
    let all = store.events_after(0, 10).await.expect("read");
    let stored = |id, kind: &str, time, user: &str, nas: &str, key: &str, row, data: &str| {
        radacctd::events::StoredEvent {
            id,
            kind: kind.into(),
            time,
            username: user.into(),
            nasipaddress: nas.into(),
            acctuniqueid: key.into(),
            radacctid: row,
            data: data.into(),
            created: 0,
        }
    };
    let expected = [
        stored(
            1,
            "session.started",
            1_700_000_000,
            "alice",
            "10.0.0.1",
            "k1",
            Some(7),
            r#"{"n":1}"#,
        ),
        stored(
            2,
            "nas.rebooted",
            1_700_000_001,
            "",
            "10.0.0.1",
            "",
            None,
            r#"{"closed":3}"#,
        ),
        stored(
            3,
            "session.stopped",
            1_700_000_002,
            r#"bob "b""#,
            "10.0.0.2",
            "k2",
            Some(8),
            r#"{"cause":"User-Request","octets":[1,2]}"#,
        ),
    ];
    assert_eq!(all.len(), 3);
    for (got, want) in all.iter().zip(expected) {
        assert_eq!(
            radacctd::events::StoredEvent {
                created: 0,
                ..got.clone()
            },
            want
        );
    }
    assert_eq!(
        (all[0].created, all[1].created),
        (1_700_000_005, 1_700_000_006)
    );
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// GET /api/events

use radacctd::api::auth::{EVENTS_VIEW, Role, SESSIONS_VIEW, SESSIONS_VIEW_ALL};
use radacctd::config::Config;
use radacctd::stream::{EndReason, EventStats};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::TestApp;
use crate::common::api::{api_config, seed_tables, token};

/// The stream's events arrive within this long in these tests.
const WAIT: Duration = Duration::from_secs(20);

/// The test configuration, the sequencer also looking at the queue every 20 ms (besides the
/// wake every commit that appends gives it).
fn events_config(db: &TestDb) -> Config {
    let mut c = api_config(db);
    c.events.poll_interval_ms = 20;
    c
}

fn viewer() -> String {
    token(Role::Admin, None, &[EVENTS_VIEW])
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    id: Option<i64>,
    event: String,
    data: String,
}

impl Frame {
    fn id(&self) -> i64 {
        self.id.expect("an id")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("data is JSON")
    }
}

/// A `text/event-stream` read frame by frame.
struct Sse {
    response: reqwest::Response,
    buf: String,
}

/// `GET /api/events` with these headers.
async fn events_request(
    app: &TestApp,
    query: &str,
    token: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    // Not the app's client: its timeout covers the whole body, and a stream has no end.
    let mut rq = reqwest::Client::new()
        .get(app.url(&format!("/api/events{query}")))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        rq = rq.header("Last-Event-ID", id);
    }
    rq.send().await.expect("request")
}

impl Sse {
    /// Opens the stream; it is subscribed once this returns (the answer's headers are sent
    /// after the subscription).
    async fn open(app: &TestApp, query: &str, token: &str, last_event_id: Option<i64>) -> Sse {
        let id = last_event_id.map(|i| i.to_string());
        let r = events_request(app, query, token, id.as_deref()).await;
        assert_eq!(r.status(), 200, "{query}");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Sse {
            response: r,
            buf: String::new(),
        }
    }

    /// The next event (comments skipped); panics after [`WAIT`] without one.
    async fn next(&mut self) -> Frame {
        tokio::time::timeout(WAIT, self.next_or_end())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
    }

    /// The next event, or `None` at the end of the stream.
    async fn next_or_end(&mut self) -> Option<Frame> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut frame = Frame {
                    id: None,
                    event: String::new(),
                    data: String::new(),
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        frame.id = Some(v.parse().expect("numeric id"));
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        frame.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        frame.data = v.to_owned();
                    }
                }
                if !frame.event.is_empty() {
                    return Some(frame);
                }
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream"));
        }
    }

    /// The next comment line (`: …`), skipping events; panics after [`WAIT`] without one.
    async fn next_comment(&mut self) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                while let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    if let Some(c) = block.lines().find_map(|l| l.strip_prefix(": ")) {
                        return c.to_owned();
                    }
                }
                let chunk = self.response.chunk().await.expect("chunk").expect("more");
                self.buf
                    .push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream"));
            }
        })
        .await
        .expect("a comment in time")
    }

    /// Events until (and with) the one whose id is `last`.
    async fn until(&mut self, last: i64) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            let f = self.next().await;
            let id = f.id();
            out.push(f);
            if id >= last {
                return out;
            }
        }
    }
}

/// Waits until the node's hub has read up to `id`: a stream opened then has every event up to
/// it to backfill, none of them arriving live in a burst larger than `events.client_buffer`
/// (which would end it as slow).
async fn hub_read(app: &TestApp, id: i64) {
    let stats = EventStats::of(&app.stats);
    assert!(
        crate::common::wait_until(WAIT, || {
            stats.last_id.load(std::sync::atomic::Ordering::Relaxed) >= id
        })
        .await,
        "the hub reads up to {id}"
    );
}

fn ids(frames: &[Frame]) -> Vec<i64> {
    frames.iter().map(Frame::id).collect()
}

/// A `session.started` of `user` on `nas`, its data naming `n`.
fn user_event(kind: EventType, user: &str, nas: &str, n: i64) -> NewEvent {
    NewEvent {
        kind,
        time: 1_700_000_000 + n,
        username: user.into(),
        nasipaddress: nas.into(),
        acctuniqueid: format!("k{n}"),
        radacctid: Some(n),
        data: format!(r#"{{"n":{n}}}"#),
    }
}

/// Appends `range` (as [`event`]) in transactions of `per_tx`.
async fn append(store: &Store, range: std::ops::Range<i64>, per_tx: i64) {
    let mut start = range.start;
    while start < range.end {
        let end = (start + per_tx).min(range.end);
        add(store, start..end).await;
        start = end;
    }
}

async fn a_client_receives_every_event_in_id_order(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(events_config(&db)).await;
    let mut sse = Sse::open(&app, "", &viewer(), None).await;
    // Appended while the client listens, in 50 transactions, by another task.
    let store = app.store.clone();
    let writer = tokio::spawn(async move { append(&store, 0..5_000, 100).await });
    let frames = sse.until(5_000).await;
    writer.await.expect("appended");
    assert_eq!(ids(&frames), (1..=5_000).collect::<Vec<i64>>());
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.event, "session.started");
        let v = f.json();
        assert_eq!(v["id"], f.id());
        assert_eq!(v["type"], "session.started");
        assert_eq!(v["username"], format!("u{i}"));
        assert_eq!(v["nas"], "10.0.0.1");
        assert_eq!(v["data"]["n"], i);
    }
    let stats = EventStats::of(&app.stats);
    assert_eq!(
        stats.last_id.load(std::sync::atomic::Ordering::Relaxed),
        5_000
    );
    assert_eq!(stats.clients.load(std::sync::atomic::Ordering::Relaxed), 1);
    drop(sse);
    app.stop().await;
}

/// Reads `n` events, disconnects, lets `more` be appended, resumes with the last id read:
/// the rest arrives once, in order, then live events.
/// A stream reads 20 events and goes; 300 more are appended; a second resumes after 20. With
/// `watcher`, another stream stays open throughout, so the hub goes on reading the events into
/// memory; without, no stream is open while they are appended, so the hub reads none of them
/// and the resume is served from the database. `from_database`: whether the resume must have
/// read the database (else memory served it).
async fn resume_case(app: &TestApp, resume_with_param: bool, watcher: bool, from_database: bool) {
    let t = viewer();
    let watcher = if watcher {
        Some(Sse::open(app, "", &t, None).await)
    } else {
        None
    };
    let mut first = Sse::open(app, "", &t, None).await;
    append(&app.store, 0..20, 10).await;
    let got = first.until(20).await;
    assert_eq!(ids(&got), (1..=20).collect::<Vec<i64>>());
    // Gone mid-run.
    drop(first);
    append(&app.store, 20..320, 10).await;
    hub_read(app, 320).await;
    let mut second = if resume_with_param {
        Sse::open(app, "?last_event_id=20", &t, None).await
    } else {
        Sse::open(app, "", &t, Some(20)).await
    };
    let mut got = second.until(320).await;
    let reads = EventStats::of(&app.stats)
        .backfill_reads
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        reads > 0,
        from_database,
        "the resume read {reads} page(s) from the database"
    );
    // And on, live, in batches it keeps up with.
    for start in (320..380).step_by(10) {
        append(&app.store, start..start + 10, 10).await;
        got.extend(second.until(start + 10).await);
    }
    assert_eq!(ids(&got), (21..=380).collect::<Vec<i64>>());
    assert!(got.iter().all(|f| f.event == "session.started"));
    // (Behind a memory of 50 the watcher, never read meanwhile, may have been ended as slow.)
    if let Some(mut w) = watcher.filter(|_| !from_database) {
        assert_eq!(ids(&w.until(380).await), (1..=380).collect::<Vec<i64>>());
    }
}

async fn resuming_misses_nothing_and_repeats_nothing(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    // The hub's memory holds every event of the run: a stream stays open throughout.
    let app = TestApp::start(events_config(&db)).await;
    resume_case(&app, false, true, false).await;
    app.stop().await;
}

async fn resuming_from_the_database_when_memory_no_longer_holds_the_events(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    // 50 in memory: the resume at 20 after 300 more is read from the database.
    let mut c = events_config(&db);
    c.events.client_buffer = 50;
    let app = TestApp::start(c).await;
    resume_case(&app, true, true, true).await;
    app.stop().await;
}

async fn resuming_after_no_stream_was_open_reads_the_database(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    // No stream is open while the 300 are appended: the hub only learns the last id, and the
    // resume reads them from the database however large its memory.
    let app = TestApp::start(events_config(&db)).await;
    resume_case(&app, false, false, true).await;
    app.stop().await;
}

async fn each_caller_sees_its_scope_and_its_filters(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    // Reseller 3 is below 1; dave belongs to no one.
    seed_tables(
        &db,
        &[(1, None), (2, None), (3, Some(1))],
        &[("alice", 1), ("bob", 2), ("carol", 3)],
        &[(7, "192.0.2.10"), (8, "192.0.2.20")],
    )
    .await;
    let app = TestApp::start(events_config(&db)).await;
    let r1 = token(Role::Reseller, Some(1), &[EVENTS_VIEW]);
    let r2 = token(Role::Reseller, Some(2), &[EVENTS_VIEW, SESSIONS_VIEW]);
    let wide = token(Role::Reseller, Some(2), &[EVENTS_VIEW, SESSIONS_VIEW_ALL]);
    // Live streams, open before the events.
    let mut live1 = Sse::open(&app, "", &r1, None).await;
    let mut live2 = Sse::open(&app, "", &r2, None).await;
    let (ten, twenty) = ("192.0.2.10", "192.0.2.20");
    let reboot = NewEvent {
        kind: EventType::NasRebooted,
        time: 1_700_000_004,
        username: String::new(),
        nasipaddress: ten.into(),
        acctuniqueid: String::new(),
        radacctid: None,
        data: r#"{"closed":2}"#.into(),
    };
    let events = vec![
        user_event(EventType::SessionStarted, "alice", ten, 1),
        user_event(EventType::SessionStarted, "bob", twenty, 2),
        user_event(EventType::SessionStarted, "carol", ten, 3),
        reboot,
        user_event(EventType::SessionStarted, "dave", twenty, 5),
        // The last event each reseller may see: everything before it was sent or withheld.
        user_event(EventType::SessionStopped, "alice", twenty, 6),
        user_event(EventType::SessionStopped, "bob", ten, 7),
    ];
    app.store.add_events(&events).await.expect("add");
    assert_eq!(ids(&live1.until(6).await), vec![1, 3, 6]);
    assert_eq!(ids(&live2.until(7).await), vec![2, 7]);
    // From memory, after the fact.
    for (t, query, want) in [
        (&r1, "", vec![1, 3, 6]),
        (&wide, "", vec![1, 2, 3, 4, 5, 6, 7]),
        (&viewer(), "", vec![1, 2, 3, 4, 5, 6, 7]),
        (&viewer(), "?types=session.stopped", vec![6, 7]),
        (
            &viewer(),
            "?types=nas.rebooted,session.stopped",
            vec![4, 6, 7],
        ),
        (&viewer(), "?nas_id=7", vec![1, 3, 4, 7]),
        (&r1, "?nas_id=8&types=session.stopped", vec![6]),
    ] {
        let mut sse = Sse::open(&app, query, t, Some(0)).await;
        let want_last = *want.last().expect("some");
        assert_eq!(ids(&sse.until(want_last).await), want, "{query}");
    }
    let mut sse = Sse::open(&app, "?types=nas.rebooted", &viewer(), Some(0)).await;
    let f = sse.next().await;
    assert_eq!((f.id(), f.event.as_str()), (4, "nas.rebooted"));
    assert_eq!(f.json()["nas"], ten);
    assert_eq!(f.json()["username"], serde_json::Value::Null);
    assert_eq!(f.json()["data"]["closed"], 2);
    // A nas_id that names no NAS matches nothing, as the sessions list answers it.
    let _nothing = Sse::open(&app, "?nas_id=999", &viewer(), Some(0)).await;
    app.stop().await;
}

async fn bad_requests_name_the_parameter(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(events_config(&db)).await;
    add(&app.store, 0..3).await;
    let t = viewer();
    let _ = Sse::open(&app, "", &t, Some(0)).await.until(3).await;
    app.expect_error(
        "/api/events",
        Some(&token(Role::Admin, None, &[SESSIONS_VIEW])),
        403,
        "events.view denied",
    )
    .await;
    app.expect_error("/api/events", None, 401, "missing token")
        .await;
    let allowed = EventType::ALL.map(EventType::name).join(", ");
    app.expect_error(
        "/api/events?types=session.started,session.ended",
        Some(&t),
        400,
        &format!("invalid types, unknown event type \"session.ended\" (allowed: {allowed})"),
    )
    .await;
    app.expect_error(
        "/api/events?nas_id=x",
        Some(&t),
        400,
        "invalid nas_id, must be an integer",
    )
    .await;
    app.expect_error(
        "/api/events?last_event_id=4",
        Some(&t),
        400,
        "invalid last_event_id, after the last event id (3)",
    )
    .await;
    app.expect_error(
        "/api/events?last_event_id=x",
        Some(&t),
        400,
        "invalid last_event_id, must be an event id (an integer >= 0)",
    )
    .await;
    for (header, message) in [
        (
            "abc",
            "invalid Last-Event-ID, must be an event id (an integer >= 0)",
        ),
        ("4", "invalid Last-Event-ID, after the last event id (3)"),
    ] {
        let r = events_request(&app, "", &t, Some(header)).await;
        assert_eq!(r.status(), 400);
        let body: serde_json::Value = r.json().await.expect("JSON");
        assert_eq!(body["success"], false);
        assert_eq!(body["message"], message);
    }
    // The last id itself is a valid place to resume from.
    let _ = Sse::open(&app, "", &t, Some(3)).await;
    app.stop().await;
}

async fn resuming_from_a_trimmed_id_reports_the_loss_first(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let mut c = events_config(&db);
    c.events.client_buffer = 20;
    let app = TestApp::start(c).await;
    append(&app.store, 0..100, 10).await;
    hub_read(&app, 100).await;
    let t = viewer();
    let _ = Sse::open(&app, "", &t, Some(0)).await.until(100).await;
    // 1 to 40 are gone.
    assert_eq!(
        app.store.trim_events(0, 40, 1_000).await.expect("trim"),
        (4, 40)
    );
    let mut sse = Sse::open(&app, "", &t, Some(10)).await;
    let lost = sse.next().await;
    assert_eq!((lost.event.as_str(), lost.id()), ("events.lost", 40));
    assert_eq!(lost.json(), serde_json::json!({ "from": 11, "to": 40 }));
    let rest = sse.until(100).await;
    assert_eq!(ids(&rest), (41..=100).collect::<Vec<i64>>());
    assert!(rest.iter().all(|f| f.event == "session.started"));
    // Resuming after the loss: nothing lost any more.
    let mut sse = Sse::open(&app, "", &t, Some(40)).await;
    assert_eq!(sse.next().await.id(), 41);
    // Everything gone: the loss up to the last id (71 to 80 are not in memory either, which
    // holds the newest 20; memory would answer a resume from 80 on).
    assert_eq!(
        app.store.trim_events(0, 100, 1_000).await.expect("trim"),
        (6, 60)
    );
    let mut sse = Sse::open(&app, "", &t, Some(70)).await;
    let lost = sse.next().await;
    assert_eq!(lost.json(), serde_json::json!({ "from": 71, "to": 100 }));
    append(&app.store, 100..101, 1).await;
    assert_eq!(sse.next().await.id(), 101);
    app.stop().await;
}

async fn a_client_that_does_not_read_is_disconnected_and_counted(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let mut c = events_config(&db);
    c.events.client_buffer = 64;
    let app = TestApp::start(c).await;
    let stats = EventStats::of(&app.stats);
    let t = viewer();
    // A client that reads the answer's head, then nothing, with a small receive window.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let mut stalled = socket.connect(app.api_addr).await.expect("connect");
    stalled
        .write_all(
            format!(
                "GET /api/events HTTP/1.1\r\nHost: radacctd\r\nAuthorization: Bearer {t}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("request");
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut b = [0u8; 1];
        stalled.read_exact(&mut b).await.expect("head");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // A client that reads gets every event: batches of 20 are well within its buffer.
    let mut reader = Sse::open(&app, "", &t, None).await;
    let pad = "x".repeat(16 * 1024);
    let mut n = 0;
    while stats.ended_count(EndReason::Slow) == 0 {
        assert!(n < 2_000, "the stalled client was never ended");
        let batch: Vec<NewEvent> = (n..n + 20)
            .map(|i| NewEvent {
                data: format!(r#"{{"n":{i},"pad":"{pad}"}}"#),
                ..event(i)
            })
            .collect();
        app.store.add_events(&batch).await.expect("add");
        n += 20;

        let got = reader.until(n).await;
        assert_eq!(ids(&got), (n - 19..=n).collect::<Vec<i64>>());
    }
    assert_eq!(stats.ended_count(EndReason::Slow), 1);
    assert!(
        crate::common::eventually(|| stats.clients.load(std::sync::atomic::Ordering::Relaxed) == 1)
            .await,
        "only the reader's stream is left"
    );
    // Its connection is closed: what the kernel held drains, then the end, without the last
    // chunk of a body that ended (which would leave the connection open for a next request).
    let tail = tokio::time::timeout(WAIT, async {
        let mut tail = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return tail,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    let keep = tail.len().saturating_sub(16);
                    tail.drain(..keep);
                }
            }
        }
    })
    .await
    .expect("the stalled client's connection was closed");
    assert!(
        !tail.ends_with(b"\r\n0\r\n\r\n"),
        "the stream was cut, not ended"
    );
    let text = app.stats.render(&Default::default());
    assert!(
        text.contains("radacctd_events_sse_ended_total{reason=\"slow\"} 1"),
        "{text}"
    );
    assert!(text.contains("radacctd_events_sse_clients 1"), "{text}");
    // The retention's counter is there too, under the same name.
    assert!(text.contains("radacctd_events_trimmed_total "), "{text}");
    // The reader goes on.
    add(&app.store, n..n + 1).await;
    assert_eq!(reader.next().await.id(), n + 1);
    app.stop().await;
}

async fn an_idle_stream_beats_and_the_streams_per_node_are_capped(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let mut c = events_config(&db);
    c.events.heartbeat_secs = 1;
    c.events.max_clients = 1;
    let app = TestApp::start(c).await;
    let t = viewer();
    let mut sse = Sse::open(&app, "", &t, None).await;
    assert_eq!(sse.next_comment().await, "heartbeat");
    app.expect_error(
        "/api/events",
        Some(&t),
        503,
        "too many event streams, try again later",
    )
    .await;
    let r = events_request(&app, "", &t, None).await;
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    // The place is given back when the client goes.
    drop(sse);
    drop(r);
    let stats = EventStats::of(&app.stats);
    assert!(
        crate::common::eventually(|| stats.clients.load(std::sync::atomic::Ordering::Relaxed) == 0)
            .await
    );
    assert_eq!(stats.ended_count(EndReason::Closed), 1);
    add(&app.store, 0..1).await;
    let mut sse = Sse::open(&app, "", &t, Some(0)).await;
    assert_eq!(sse.next().await.id(), 1);
    app.stop().await;
}

/// On PostgreSQL, node B serves the events node A's sequencer numbered, told by the
/// notification: B's own poll is a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_events_are_served_at_once() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let mut a = events_config(&db);
    a.node.name = "a".into();
    let mut b = events_config(&db);
    b.node.name = "b".into();
    b.events.poll_interval_ms = 60_000;
    let a = TestApp::start(a).await;
    // One event numbered before B starts: B's sequencer has made its first round (its last
    // until a minute later) once it has learned of it.
    append(&a.store, 0..1, 1).await;
    hub_read(&a, 1).await;
    let b = TestApp::start(b).await;
    let mut numbered = b.events_numbered.clone();
    tokio::time::timeout(WAIT, numbered.wait_for(|id| *id == 1))
        .await
        .expect("B's first round in time")
        .expect("B's sequencer runs");
    let mut sse = Sse::open(&b, "", &viewer(), None).await;
    let started = std::time::Instant::now();
    append(&a.store, 1..51, 10).await;
    let got = sse.until(51).await;
    assert_eq!(ids(&got), (2..=51).collect::<Vec<i64>>());
    assert_eq!(*numbered.borrow(), 1, "B's sequencer has not looked again");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "served before B's own poll"
    );
    // And A serves them too.
    let mut on_a = Sse::open(&a, "", &viewer(), Some(46)).await;
    assert_eq!(ids(&on_a.until(51).await), vec![47, 48, 49, 50, 51]);
    b.stop().await;
    a.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Retention

async fn retention_trims_by_age_and_count(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    let now = 1_800_000_000;
    // 100 numbered two days ago, 50 now.
    append(&store, 0..100, 10).await;
    store
        .sequence_events(1_000, now - 2 * 86_400)
        .await
        .expect("round");
    append(&store, 100..150, 10).await;
    store.sequence_events(1_000, now).await.expect("round");
    let stats = std::sync::Arc::new(radacctd::jobs::RetentionStats::default());
    let config = radacctd::config::EventsConfig {
        retention_days: 1,
        max_events: 30,
        ..Default::default()
    };
    let job = radacctd::jobs::EventRetention::new(store.clone(), &config, stats.clone());
    assert_eq!(job.run_once(now).await.expect("run"), 120);
    assert_eq!(
        store.event_bounds().await.expect("bounds"),
        (Some(121), 150)
    );
    assert_eq!(
        stats.trimmed.load(std::sync::atomic::Ordering::Relaxed),
        120
    );
    // Nothing more to do; by age alone a day later everything goes.
    assert_eq!(job.run_once(now).await.expect("run"), 0);
    let long = radacctd::config::EventsConfig {
        retention_days: 1,
        max_events: 1_000_000,
        ..Default::default()
    };
    let job = radacctd::jobs::EventRetention::new(store.clone(), &long, stats.clone());
    assert_eq!(job.run_once(now + 86_401).await.expect("run"), 30);
    assert_eq!(store.event_bounds().await.expect("bounds"), (None, 150));
    store.close().await;
}
