//! A disconnect across two nodes on one PostgreSQL database (docs/ARCHITECTURE.md#disconnect):
//! two applications with different node names and ports share the database and the NAS (whose
//! CoA port is a test NAS speaking RFC 5176 over UDP). Calls through both nodes' APIs at once
//! send one Disconnect-Request and get the same answer; the attempt is in `session_actions`.
//! Also the action log on both stores, and the archiver taking it along.

use std::time::Duration;

use crate::api_disconnect::db_with_nas;
use crate::common::api::{api_config, archive_session, token};
use crate::common::fake_nas::{FakeNas, NasMode};
use crate::common::{self, Backend, TestApp, TestDb, open_session, scrape, value};
use radacctd::api::auth::Role;
use radacctd::queue::{Item, Reconcile};
use radacctd::store::{ACTION_LOCK_CLASS, Store, StoredAction, action_lock_key};
use serde_json::Value;
use sqlx::Connection as _;

const DISCONNECT: &str = "subscribers.disconnect";

both_stores!(action_log_rows_go_with_archived_sessions,);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_send_one_disconnect_request_and_answer_alike() {
    two_nodes_one_request(NasMode::Ack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_answer_a_refusal_alike_with_one_request() {
    two_nodes_one_request(NasMode::Nak(Some(402))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_waiting_on_a_silent_nas_leave_the_api_its_connections() {
    let coa = FakeNas::start(common::SECRET, NasMode::Silent).await;
    let Some(db) = db_with_nas(Backend::Postgres, coa.addr.port()).await else {
        return;
    };
    let mut config = api_config(&db);
    config.database.max_connections = 3;
    config.database.acquire_timeout_secs = 1;
    let app = TestApp::start(config).await;
    let mut ids = Vec::new();
    for n in 1..=4 {
        ids.push(open_session(&app, n).await.1);
    }
    // More disconnects than the pool has connections, each waiting seconds on a silent NAS.
    let calls: Vec<_> = ids
        .iter()
        .map(|id| {
            let (http, url) = (
                app.http.clone(),
                format!("http://{}/api/sessions/{id}/disconnect", app.api_addr),
            );
            tokio::spawn(async move {
                http.post(url)
                    .bearer_auth(token(Role::Admin, None, &[DISCONNECT]))
                    .send()
                    .await
                    .expect("request")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while coa.count() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the NAS got the requests"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Meanwhile a query the database answers still gets a connection at once.
    let (status, body) = app
        .json(
            "/api/sessions?status=closed",
            Some(&crate::common::api::admin()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for call in calls {
        assert_eq!(call.await.expect("call"), 503, "a silent NAS: 503");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordination_failure_still_disconnects() {
    coordination_failure_still_disconnects().await;
}

/// A node named `name` on `db`, with `/metrics` (its own ports: every listener binds port 0).
pub(crate) async fn node(db: &TestDb, name: &str) -> TestApp {
    let mut config = api_config(db);
    config.node.name = name.into();
    config.metrics.enabled = true;
    TestApp::start(config).await
}

async fn post(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .http
        .post(format!("http://{}{path}", app.api_addr))
        .bearer_auth(token(Role::Admin, None, &[DISCONNECT]))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

/// Makes `app`'s index hold `radacctid`, written by another node: a full reconciliation with
/// SQL through its writer (what the sweeper asks for), repeated until it is there.
pub(crate) async fn learn(app: &TestApp, radacctid: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.index.get_by_id(radacctid).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node never learned session {radacctid}"
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        app.ingest
            .send(Item::Reconcile(Reconcile::Full(tx)))
            .await
            .expect("writer runs");
        rx.await.expect("reconciled");
    }
}

/// Holds the session's action lock from a connection of the test's own until both nodes wait
/// for it, so that both calls are in flight together whatever the scheduling.
pub(crate) struct HeldLock(sqlx::PgConnection);

impl HeldLock {
    pub(crate) async fn take(db: &TestDb, radacctid: i64) -> HeldLock {
        let mut c = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(ACTION_LOCK_CLASS)
            .bind(action_lock_key(radacctid))
            .execute(&mut c)
            .await
            .expect("lock");
        HeldLock(c)
    }

    /// Waits (with a deadline) until `n` other sessions wait for the lock.
    pub(crate) async fn until_waiting(&mut self, radacctid: i64, n: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND classid::int8 = $1 AND objid::int8 = $2 AND objsubid = 2",
            )
            .bind(i64::from(ACTION_LOCK_CLASS as u32))
            .bind(i64::from(action_lock_key(radacctid) as u32))
            .fetch_one(&mut self.0)
            .await
            .expect("pg_locks");
            if waiting >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{waiting} of {n} nodes wait for the lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn release(mut self) {
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut self.0)
            .await
            .expect("unlock");
        let _ = self.0.close().await;
    }
}

fn coalesced(m: &std::collections::BTreeMap<String, f64>, scope: &str) -> f64 {
    value(
        m,
        &format!("radacctd_disconnect_coalesced_total{{scope=\"{scope}\"}}"),
    )
}

async fn actions(store: &Store, radacctid: i64) -> Vec<StoredAction> {
    store.session_actions(radacctid).await.expect("action log")
}

async fn two_nodes_one_request(mode: NasMode) {
    let coa = FakeNas::start(common::SECRET, mode).await;
    let Some(db) = db_with_nas(Backend::Postgres, coa.addr.port()).await else {
        return;
    };
    let a = node(&db, "node-a").await;
    let b = node(&db, "node-b").await;
    let (_, id) = open_session(&a, 1).await;
    learn(&b, id).await;
    let path = format!("/api/sessions/{id}/disconnect");

    let mut held = HeldLock::take(&db, id).await;
    let calls = tokio::spawn({
        let (a_http, b_http) = (a.http.clone(), b.http.clone());
        let (a_url, b_url) = (
            format!("http://{}{path}", a.api_addr),
            format!("http://{}{path}", b.api_addr),
        );
        async move {
            let call = |http: reqwest::Client, url: String| async move {
                let r = http
                    .post(url)
                    .bearer_auth(token(Role::Admin, None, &[DISCONNECT]))
                    .send()
                    .await
                    .expect("request");
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.expect("JSON body"))
            };
            tokio::join!(call(a_http, a_url), call(b_http, b_url))
        }
    });
    held.until_waiting(id, 2).await;
    assert_eq!(
        coa.count(),
        0,
        "nothing is sent while another holds the lock"
    );
    held.release().await;
    let (from_a, from_b) = calls.await.expect("calls");

    assert_eq!(from_a, from_b, "both nodes answer alike");
    match mode {
        NasMode::Ack => {
            assert_eq!(from_a.0, 200, "{from_a:?}");
            assert_eq!(from_a.1["method"], "coa");
        }
        _ => assert_eq!(
            (from_a.0, from_a.1["message"].as_str()),
            (
                503,
                Some("NAS refused the disconnect: Error-Cause 402 (Missing-Attribute)")
            )
        ),
    }
    assert_eq!(coa.count(), 1, "one Disconnect-Request for two calls");

    // The one attempt is logged, by the node that made it; the other answered from it.
    let log = actions(&a.store, id).await;
    assert_eq!(log.len(), 1, "{log:?}");
    let row = &log[0];
    assert!(row.node == "node-a" || row.node == "node-b", "{row:?}");
    assert_eq!(
        (row.action.as_str(), row.method.as_str()),
        ("disconnect", "coa")
    );
    let outcome = if mode == NasMode::Ack { "ack" } else { "nak" };
    assert_eq!(row.outcome, outcome);
    assert_eq!(row.actor.as_deref(), Some("test"));
    assert!(row.rtt_ms.is_some_and(|ms| ms >= 0), "{row:?}");
    let (ma, mb) = (
        scrape(a.metrics_addr.expect("metrics")).await,
        scrape(b.metrics_addr.expect("metrics")).await,
    );
    assert_eq!(coalesced(&ma, "cluster") + coalesced(&mb, "cluster"), 1.0);
    assert_eq!(coalesced(&ma, "node") + coalesced(&mb, "node"), 0.0);

    if mode == NasMode::Ack {
        // Later calls, through either node, are the documented repeat: `already_closed`,
        // nothing sent. A node whose index still holds the session learns from SQL.
        for app in [&a, &b, &a, &b] {
            let (st, body) = post(app, &path).await;
            assert_eq!(
                (st, body["method"].as_str(), body["message"].as_str()),
                (200, Some("already_closed"), Some("session already closed")),
                "{body}"
            );
        }
        assert_eq!(coa.count(), 1, "no second Disconnect-Request");
        let (st, body) = post(&b, "/api/sessions/999999/disconnect").await;
        assert_eq!(
            (st, body["message"].as_str()),
            (404, Some("session not found"))
        );
    } else {
        // A refusal leaves the session open: the next call tries again, as on one node.
        let (st, _) = post(&b, &path).await;
        assert_eq!(st, 503);
        assert_eq!(
            coa.count(),
            2,
            "a new call after a failure is a new attempt"
        );
        assert_eq!(actions(&a.store, id).await.len(), 2);
    }
    a.stop().await;
    b.stop().await;
}

async fn coordination_failure_still_disconnects() {
    let coa = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(Backend::Postgres, coa.addr.port()).await else {
        return;
    };
    let a = node(&db, "node-a").await;
    let (_, id) = open_session(&a, 2).await;
    // Coordination reads the action log first: without the table it fails, and the
    // disconnect goes ahead from this node alone.
    db.exec("DROP TABLE session_actions").await;
    let (st, body) = post(&a, &format!("/api/sessions/{id}/disconnect")).await;
    assert_eq!((st, body["method"].as_str()), (200, Some("coa")), "{body}");
    assert_eq!(coa.count(), 1);
    assert!(a.index.get_by_id(id).is_none(), "the row was closed");
    a.stop().await;
}

async fn action_log_rows_go_with_archived_sessions(backend: Backend) {
    let coa = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    let a = node(&db, "solo").await;
    let (_, gone) = open_session(&a, 3).await;
    let (_, kept) = open_session(&a, 4).await;
    for id in [gone, kept] {
        let (st, body) = post(&a, &format!("/api/sessions/{id}/disconnect")).await;
        assert_eq!((st, body["method"].as_str()), (200, Some("coa")), "{body}");
    }
    let row = &actions(&a.store, gone).await[0];
    assert_eq!(
        (row.node.as_str(), row.method.as_str(), row.outcome.as_str()),
        ("solo", "coa", "ack")
    );
    let before = actions(&a.store, gone).await;
    // One session stopped long ago: the archiver moves it, and its log rows go along, to
    // session_actions_archive.
    let report = archive_session(&db, &a, gone).await;
    assert_eq!(report.moved, 1);
    let db = &db;
    let in_table = |table: &str, id: i64| {
        let sql = format!("SELECT count(*) FROM {table} WHERE radacctid = {id}");
        async move { db.count(&sql).await }
    };
    assert_eq!(in_table("session_actions", gone).await, 0);
    assert_eq!(in_table("session_actions_archive", gone).await, 1);
    assert_eq!(
        actions(&a.store, gone).await,
        before,
        "the log still reads the same"
    );
    assert_eq!(in_table("session_actions", kept).await, 1, "others stay");
    assert_eq!(in_table("session_actions_archive", kept).await, 0);
    a.stop().await;
}
