//! Session events (docs/EVENTS.md) against the real stores: the outbox's numbering.

use std::time::Duration;

use crate::common::{Backend, TestDb};
use radacctd::events::{EventType, NewEvent};
use radacctd::store::Store;
use radacctd::stream::Sequencer;

both_stores!(
    the_sequencer_numbers_committed_events_in_order_without_gaps,
    trimming_and_webhook_cursors,
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
    add(&store, 0..100).await;
    store.sequence_events(1_000, 1_000).await.expect("round");
    add(&store, 100..150).await;
    store.sequence_events(1_000, 2_000).await.expect("round");
    // By age: the first 100 were numbered at 1,000.
    assert_eq!(store.trim_events(1_500, 0, 30).await.expect("trim"), 30);
    assert_eq!(store.trim_events(1_500, 0, 1_000).await.expect("trim"), 70);
    // By count: keep the newest 20 (ids 131..150).
    assert_eq!(store.trim_events(0, 130, 1_000).await.expect("trim"), 30);
    assert_eq!(
        store.event_bounds().await.expect("bounds"),
        (Some(131), 150)
    );
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
}
