//! Two radacctd nodes on one PostgreSQL (docs/HA.md): each node's live index follows the other
//! node's commits, and any other writer's, within a second (the change notifications of
//! migration 0003 and the listener in `ingest::changes`); rows stay right when a session's
//! packets alternate between the nodes; a lost listener reconciles before the node calls
//! itself ready again.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::api::{admin, api_config};
use crate::common::{Nas, Sess, TestApp, TestDb, now, wait_until};

/// The bound the issue sets: another node's commit is in this node's index within a second.
const COHERENCE: Duration = Duration::from_secs(1);

async fn two_nodes(db: &TestDb) -> (TestApp, TestApp) {
    let config = |name: &str| {
        let mut c = api_config(db);
        c.node.name = name.into();
        c
    };
    let a = TestApp::start(config("a")).await;
    let b = TestApp::start(config("b")).await;
    for app in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(10), || app.stats.node().coherent()).await,
            "node {} listens and has reconciled",
            app.stats.node().name()
        );
    }
    (a, b)
}

/// The keys of the open rows in SQL.
async fn open_keys(db: &TestDb) -> BTreeSet<String> {
    db.open_rows()
        .await
        .into_iter()
        .map(|r| r.acctuniqueid.to_string())
        .collect()
}

fn index_keys(app: &TestApp) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    app.index.for_each(|s| {
        keys.insert(s.acctuniqueid.to_string());
    });
    keys
}

/// Both nodes' indexes hold exactly SQL's open rows, with SQL's values, within [`COHERENCE`]
/// of now; panics with the differences otherwise.
async fn assert_both_equal_sql(db: &TestDb, nodes: [&TestApp; 2], what: &str) {
    let sql = db.open_rows().await;
    let keys: BTreeSet<String> = sql.iter().map(|r| r.acctuniqueid.to_string()).collect();
    for node in nodes {
        let agrees = || {
            index_keys(node) == keys
                && sql.iter().all(|r| {
                    node.index.get(&r.acctuniqueid).is_some_and(|s| {
                        s.acctinputoctets == r.acctinputoctets
                            && s.acctsessiontime == r.acctsessiontime
                    })
                })
        };
        assert!(
            wait_until(COHERENCE, agrees).await,
            "{what}: node {}'s index {:?} differs from SQL's open rows {keys:?}",
            node.stats.node().name(),
            index_keys(node)
        );
    }
}

async fn a_stop_on_b_closes_the_session_on_a_within_a_second(db: TestDb) {
    let (a, b) = two_nodes(&db).await;
    let s = Sess::new(1);
    let t = now() - 600;
    let mut to_a = Nas::new(a.radius_addr).await;
    let mut to_b = Nas::new(b.radius_addr).await;
    assert!(
        to_a.send(&s.start(t)).await.is_some(),
        "A answers the Start"
    );
    assert_both_equal_sql(&db, [&a, &b], "after a Start on A").await;
    assert_eq!(b.count(&admin()).await, 1, "B's API counts A's session");

    assert!(
        to_b.send(&s.stop(t + 300, 300, 1_000, 2_000, 1))
            .await
            .is_some(),
        "B answers the Stop"
    );
    let answered = Instant::now();
    assert!(
        wait_until(COHERENCE, || a.index.is_empty()).await,
        "A's index dropped the session B closed within {COHERENCE:?}"
    );
    assert_eq!(
        a.count(&admin()).await,
        0,
        "A's API counts no active session"
    );
    let (ids, total) = a.list_ids("/api/sessions?status=active", &admin()).await;
    assert!(ids.is_empty() && total == 0, "A lists no active session");
    println!("closed on A {:?} after B's answer", answered.elapsed());
    a.stop().await;
    b.stop().await;
}

async fn packets_alternating_between_nodes_keep_the_newest_row(db: TestDb) {
    let (a, b) = two_nodes(&db).await;
    let s = Sess::new(7);
    let t = now() - 3600;
    let mut nas = [Nas::new(a.radius_addr).await, Nas::new(b.radius_addr).await];
    let mut steps = vec![s.start(t)];
    for k in 1..=6u32 {
        steps.push(s.interim(
            t + 60 * k,
            60 * k,
            1_000 * u64::from(k),
            2_000 * u64::from(k),
        ));
    }
    for (i, packet) in steps.iter().enumerate() {
        assert!(
            nas[i % 2].send(packet).await.is_some(),
            "packet {i} answered by node {}",
            ["a", "b"][i % 2]
        );
        // Each write on one node is guarded by the row version the other node's write left;
        // the index-fed write must never write over it.
        assert_both_equal_sql(&db, [&a, &b], &format!("after packet {i}")).await;
    }
    // A late retransmission of an old interim, through the other node, moves nothing back.
    assert!(
        nas[1].send(&steps[2]).await.is_some(),
        "old interim answered"
    );
    let row = db.rows().await.pop().expect("one row");
    assert_eq!(row.acctinputoctets, Some(6_000), "the newest counters stay");
    assert_eq!(row.acctsessiontime, Some(360));
    assert_both_equal_sql(&db, [&a, &b], "after the late interim").await;
    assert!(
        nas[0]
            .send(&s.stop(t + 420, 420, 7_000, 14_000, 1))
            .await
            .is_some()
    );
    let row = db.rows().await.pop().expect("one row");
    assert!(row.acctstoptime.is_some(), "closed");
    assert_eq!(row.acctinputoctets, Some(7_000));
    assert_both_equal_sql(&db, [&a, &b], "after the Stop").await;
    a.stop().await;
    b.stop().await;
}

async fn another_writers_changes_reach_every_index(db: TestDb) {
    let (a, b) = two_nodes(&db).await;
    // An operator's psql, or FreeRADIUS serving other NASes: plain SQL on radacct.
    db.exec(
        "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, \
         acctupdatetime, acctinputoctets, acctoutputoctets, acctsessiontime) VALUES \
         ('s1', 'other-1', 'u1', '198.51.100.1', now(), now(), 0, 0, 0), \
         ('s2', 'other-2', 'u2', '198.51.100.1', now(), now(), 0, 0, 0)",
    )
    .await;
    assert_both_equal_sql(&db, [&a, &b], "after another writer's INSERT").await;
    db.exec(
        "UPDATE radacct SET acctinputoctets = 5000, acctsessiontime = 60 \
         WHERE acctuniqueid = 'other-1'",
    )
    .await;
    assert_both_equal_sql(&db, [&a, &b], "after another writer's UPDATE").await;
    db.exec("UPDATE radacct SET acctstoptime = now() WHERE acctuniqueid = 'other-1'")
        .await;
    db.exec("DELETE FROM radacct WHERE acctuniqueid = 'other-2'")
        .await;
    assert_both_equal_sql(&db, [&a, &b], "after another writer's close and DELETE").await;
    assert!(a.index.is_empty() && b.index.is_empty());
    a.stop().await;
    b.stop().await;
}

async fn a_lost_listener_reconciles_before_the_node_is_ready_again(db: TestDb) {
    let (a, b) = two_nodes(&db).await;
    let s = Sess::new(3);
    let mut nas = Nas::new(a.radius_addr).await;
    assert!(nas.send(&s.start(now() - 60)).await.is_some());
    assert_both_equal_sql(&db, [&a, &b], "after the Start").await;
    // A change no notification reports (the trigger off, as if the notification was lost
    // with the connection): only a reconciliation can bring it.
    db.exec("ALTER TABLE radacct DISABLE TRIGGER radacctd_changes_update")
        .await;
    db.exec("UPDATE radacct SET acctstoptime = now(), acctterminatecause = 'Admin-Reset'")
        .await;
    db.exec("ALTER TABLE radacct ENABLE TRIGGER radacctd_changes_update")
        .await;
    assert!(
        !wait_until(Duration::from_millis(300), || b.index.is_empty()).await,
        "precondition: without a notification B's index still holds the closed session"
    );
    assert_eq!(open_keys(&db).await.len(), 0);

    db.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'radacctd listener' AND datname = current_database()",
    )
    .await;
    // /readyz says so until the node listens again and has reconciled.
    let mut saw_resync = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (status, body) = b.json("/readyz", None).await;
        if status == 503 {
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("index resynchronising")),
                "{body}"
            );
            saw_resync = true;
        } else if saw_resync {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["node"], "b", "{body}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(saw_resync, "B's /readyz reported the resynchronisation");
    assert!(b.stats.node().coherent(), "B is coherent again");
    // A's listener was killed too; it recovers on its own schedule.
    assert!(wait_until(Duration::from_secs(10), || a.stats.node().coherent()).await);
    assert!(
        b.index.is_empty() && a.index.is_empty(),
        "the reconciliation after the loss removed the session closed meanwhile"
    );
    a.stop().await;
    b.stop().await;
}

async fn replay_after_a_cut_never_moves_back_what_the_other_node_advanced() {
    // Node A reaches the database through a proxy the test cuts; node B directly.
    let Some((db, proxy, url)) = crate::reliability::pg_behind_proxy().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut config_a = crate::reliability::journaled_config(&db, &url, dir.path());
    config_a.node.name = "a".into();
    let a = TestApp::start(config_a).await;
    let mut config_b = api_config(&db);
    config_b.node.name = "b".into();
    let b = TestApp::start(config_b).await;
    assert!(wait_until(Duration::from_secs(10), || a.stats.node().coherent()).await);
    let (s1, s2) = (Sess::new(1), Sess::new(2));
    let t = now() - 3600;
    let mut to_a = Nas::new(a.radius_addr).await;
    let mut to_b = Nas::new(b.radius_addr).await;
    for s in [&s1, &s2] {
        assert!(to_b.send(&s.start(t)).await.is_some());
    }

    proxy.cut();
    // A is cut off: it journals and answers what reaches it, older than what B then writes.
    for s in [&s1, &s2] {
        assert!(
            to_a.send(&s.interim(t + 60, 60, 1_000, 1_000))
                .await
                .is_some(),
            "A answers from its journal"
        );
    }
    assert!(
        to_b.send(&s1.stop(t + 180, 180, 3_000, 3_000, 1))
            .await
            .is_some()
    );
    assert!(
        to_b.send(&s2.interim(t + 120, 120, 2_000, 2_000))
            .await
            .is_some()
    );

    proxy.restore();
    assert!(
        wait_until(Duration::from_secs(30), || {
            crate::reliability::replayed_all(&a) && a.stats.node().coherent()
        })
        .await,
        "A replays its journal and listens again"
    );
    let (r1, r2) = (
        b.store
            .row_by_key(&s1.key())
            .await
            .expect("read")
            .expect("row"),
        b.store
            .row_by_key(&s2.key())
            .await
            .expect("read")
            .expect("row"),
    );
    assert_eq!(r1.acctstoptime, Some(i64::from(t) + 180), "B's Stop stays");
    assert_eq!(r1.acctinputoctets, Some(3_000), "B's final counters stay");
    assert!(r2.acctstoptime.is_none());
    assert_eq!(r2.acctinputoctets, Some(2_000), "B's newer interim stays");
    assert_eq!(r2.acctupdatetime, Some(i64::from(t) + 120));
    assert_both_equal_sql(&db, [&a, &b], "after A's replay").await;
    a.stop().await;
    b.stop().await;
}

/// PostgreSQL only: SQLite has one writer process and no notifications.
macro_rules! postgres_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(db) = TestDb::new(Backend::Postgres).await else { return };
                super::$name(db).await
            }
        )*
    };
}

mod postgres {
    use crate::common::{Backend, TestDb};
    postgres_tests!(
        a_stop_on_b_closes_the_session_on_a_within_a_second,
        packets_alternating_between_nodes_keep_the_newest_row,
        another_writers_changes_reach_every_index,
        a_lost_listener_reconciles_before_the_node_is_ready_again,
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_after_a_cut_never_moves_back_what_the_other_node_advanced() {
        super::replay_after_a_cut_never_moves_back_what_the_other_node_advanced().await
    }
}
