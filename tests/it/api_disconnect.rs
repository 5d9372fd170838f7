//! `POST /api/sessions/{radacctid}/disconnect` over HTTP, against the real application: its own
//! disconnect service reads the NAS from the `nas` table and talks to a test NAS that speaks
//! RFC 5176 on loopback (and to a real FreeRADIUS playing the NAS).

use crate::common::api::{api_config, token};
use crate::common::fake_nas::{FakeNas, NasMode};
use crate::common::freeradius::{FreeRadiusNas, NasAnswer, freeradius_nas_unavailable_reason};
use crate::common::{self, Backend, Nas, TestApp, TestDb, now, open_session, scrape, value};
use radacctd::api::auth::{Role, SESSIONS_VIEW};
use radacctd::store::Store;
use serde_json::Value;

const DISCONNECT: &str = "subscribers.disconnect";

both_stores!(
    disconnect_over_http_follows_the_seed,
    silent_nas_without_api_credentials_is_503_and_the_row_stays_open,
    nak_with_an_error_cause_is_503_saying_what_the_nas_answered,
    already_closed_answered_by_the_api_is_counted,
    real_freeradius_as_the_nas_acks_the_disconnect_request,
);

/// A database with the schema and one NAS row (127.0.0.1, CoA at the test NAS's port).
pub(crate) async fn db_with_nas(backend: Backend, coa_port: u16) -> Option<TestDb> {
    let db = TestDb::new(backend).await?;
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    store.close().await;
    db.exec(&format!(
        "INSERT INTO nas (nasname, shortname, secret, coa_port) VALUES ('127.0.0.1', 'bng', '{}', {coa_port})",
        common::SECRET
    ))
    .await;
    Some(db)
}

/// A private FreeRADIUS playing the NAS 127.0.0.1 (the test secret, answering as `answer` says)
/// and a database with that NAS row; `None`, and the test skips, where FreeRADIUS is not
/// installed or the store is not available.
pub(crate) async fn freeradius_nas_and_db(
    backend: Backend,
    answer: NasAnswer,
) -> Option<(FreeRadiusNas, TestDb)> {
    if !common::require(
        freeradius_nas_unavailable_reason().is_none(),
        "freeradius (Debian freeradius, freeradius-config)",
    ) {
        return None;
    }
    let fr =
        tokio::task::spawn_blocking(move || FreeRadiusNas::start_answering(common::SECRET, answer))
            .await
            .expect("join")
            .expect("FreeRADIUS starts as a NAS");
    let db = db_with_nas(backend, fr.coa_addr.port()).await?;
    Some((fr, db))
}

async fn post(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = app.http.post(format!("http://{}{path}", app.api_addr));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

async fn disconnect_over_http_follows_the_seed(backend: Backend) {
    let coa = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let (s, id) = open_session(&app, 1).await;
    let path = format!("/api/sessions/{id}/disconnect");
    let allowed = token(Role::Admin, None, &[DISCONNECT]);

    // 401 without a token, 403 without the permission.
    assert_eq!(post(&app, &path, None).await.0, 401);
    let (st, body) = post(
        &app,
        &path,
        Some(&token(Role::Admin, None, &[SESSIONS_VIEW])),
    )
    .await;
    assert_eq!(
        (st, body["message"].as_str()),
        (403, Some("subscribers.disconnect denied"))
    );
    // 404 for an id that does not exist.
    let (st, body) = post(&app, "/api/sessions/999999/disconnect", Some(&allowed)).await;
    assert_eq!(
        (st, body["message"].as_str()),
        (404, Some("session not found"))
    );
    // 403 outside the caller's scope: a reseller with no subscribers.
    db.exec("INSERT INTO resellers (id, name) VALUES (5, 'r5')")
        .await;
    let outsider = token(Role::Reseller, Some(5), &[DISCONNECT]);
    let (st, body) = post(&app, &path, Some(&outsider)).await;
    assert_eq!(
        (st, body["message"].as_str()),
        (403, Some("not authorized"))
    );
    assert_eq!(coa.count(), 0, "nothing sent to the NAS yet");

    // The NAS acknowledges: method coa, the row is closed as Admin-Reset.
    let (st, body) = post(&app, &path, Some(&allowed)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["success"], Value::Bool(true));
    assert_eq!(body["method"], "coa");
    assert_eq!(body["message"], "disconnect request sent");
    assert_eq!(coa.count(), 1);
    let row = app
        .store
        .row_by_key(&s.key())
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.acctterminatecause.as_deref(), Some("Admin-Reset"));
    assert!(!app.index.contains(&s.key()));

    // Idempotent: repeat calls answer already_closed, nothing more is sent.
    for _ in 0..2 {
        let (st, body) = post(&app, &path, Some(&allowed)).await;
        assert_eq!((st, body["method"].as_str()), (200, Some("already_closed")));
    }
    assert_eq!(coa.count(), 1);
    let _: &Store = &app.store;
    app.stop().await;
}

async fn silent_nas_without_api_credentials_is_503_and_the_row_stays_open(backend: Backend) {
    let coa = FakeNas::start(common::SECRET, NasMode::Silent).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    let mut config = api_config(&db);
    config.disconnect.coa_timeout_ms = 600;
    config.disconnect.coa_retry_interval_ms = 200;
    let app = TestApp::start(config).await;
    let (s, id) = open_session(&app, 2).await;
    let (st, body) = post(
        &app,
        &format!("/api/sessions/{id}/disconnect"),
        Some(&token(Role::Admin, None, &[DISCONNECT])),
    )
    .await;
    assert_eq!(
        (st, body["message"].as_str()),
        (503, Some("NAS unreachable"))
    );
    assert_eq!(body["success"], Value::Bool(false));
    assert!(
        coa.count() >= 1,
        "the Disconnect-Request was sent (and retransmitted)"
    );
    let row = app
        .store
        .row_by_key(&s.key())
        .await
        .expect("read")
        .expect("row");
    assert!(row.is_open(), "left open for the stale sweeper");
    assert!(app.index.contains(&s.key()));
    app.stop().await;
}

async fn nak_with_an_error_cause_is_503_saying_what_the_nas_answered(backend: Backend) {
    // 402 Missing-Attribute: the NAS answered, and refused; no RouterOS API to fall back on.
    let coa = FakeNas::start(common::SECRET, NasMode::Nak(Some(402))).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let (s, id) = open_session(&app, 3).await;
    let (st, body) = post(
        &app,
        &format!("/api/sessions/{id}/disconnect"),
        Some(&token(Role::Admin, None, &[DISCONNECT])),
    )
    .await;
    assert_eq!(
        (st, body["success"].as_bool(), body["message"].as_str()),
        (
            503,
            Some(false),
            Some("NAS refused the disconnect: Error-Cause 402 (Missing-Attribute)")
        ),
        "{body}"
    );
    assert_eq!(coa.count(), 1, "answered at once: no retransmission");
    let row = app
        .store
        .row_by_key(&s.key())
        .await
        .expect("read")
        .expect("row");
    assert!(row.is_open(), "a refusal closes nothing");
    assert!(app.index.contains(&s.key()));
    app.stop().await;
}

async fn already_closed_answered_by_the_api_is_counted(backend: Backend) {
    let coa = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    let mut config = api_config(&db);
    config.metrics.enabled = true;
    let app = TestApp::start(config).await;
    let metrics = app.metrics_addr.expect("metrics listener");
    let series = r#"radacctd_disconnect_results_total{result="already_closed"}"#;
    // A session the NAS itself stopped: closed in the database, gone from the index.
    let (s, id) = open_session(&app, 4).await;
    let mut nas = Nas::new(app.radius_addr).await;
    nas.send(&s.stop(now() - 1, 59, 100, 200, 1))
        .await
        .expect("stop");
    assert!(!app.index.contains(&s.key()));
    assert_eq!(value(&scrape(metrics).await, series), 0.0);
    let path = format!("/api/sessions/{id}/disconnect");
    let allowed = token(Role::Admin, None, &[DISCONNECT]);
    for n in 1..=2 {
        let (st, body) = post(&app, &path, Some(&allowed)).await;
        assert_eq!((st, body["method"].as_str()), (200, Some("already_closed")));
        assert_eq!(value(&scrape(metrics).await, series), f64::from(n));
    }
    assert_eq!(coa.count(), 0, "no NAS was asked");
    // A 404 is not a disconnect result.
    let (st, _) = post(&app, "/api/sessions/999999/disconnect", Some(&allowed)).await;
    assert_eq!(st, 404);
    assert_eq!(value(&scrape(metrics).await, series), 2.0);
    app.stop().await;
}

async fn real_freeradius_as_the_nas_acks_the_disconnect_request(backend: Backend) {
    let Some((fr, db)) = freeradius_nas_and_db(backend, NasAnswer::Ack).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let (s, id) = open_session(&app, 5).await;
    let (st, body) = post(
        &app,
        &format!("/api/sessions/{id}/disconnect"),
        Some(&token(Role::Admin, None, &[DISCONNECT])),
    )
    .await;
    assert_eq!(
        (st, body["method"].as_str()),
        (200, Some("coa")),
        "{body}\n{}",
        fr.diagnostics()
    );
    let got = fr.received();
    assert_eq!(got.len(), 1, "{}", fr.diagnostics());
    let framed = s.framed_ip.to_string();
    for (name, want) in [
        ("Packet-Type", "Disconnect-Request"),
        ("User-Name", s.user.as_str()),
        ("Acct-Session-Id", s.session_id.as_str()),
        ("Framed-IP-Address", framed.as_str()),
        ("NAS-IP-Address", "127.0.0.1"),
    ] {
        assert_eq!(got[0].get(name), Some(want), "{name}\n{}", fr.diagnostics());
    }
    let row = app
        .store
        .row_by_key(&s.key())
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.acctterminatecause.as_deref(), Some("Admin-Reset"));
    app.stop().await;
    drop(fr);
}
