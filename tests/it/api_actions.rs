//! `GET /api/sessions/{radacctid}/actions` over HTTP, against the real application and a test
//! NAS speaking RFC 5176: the rows the disconnects wrote, oldest first, with the permission,
//! scope and errors of `GET /api/sessions/{radacctid}`.

use crate::api_disconnect::db_with_nas;
use crate::common::api::{api_config, archive_session, token, token_for};
use crate::common::fake_nas::{FakeNas, NasMode};
use crate::common::{self, Backend, Sess, TestApp, TestDb, now, open_session};
use radacctd::api::auth::{Role, SESSIONS_VIEW};
use serde_json::{Value, json};

const DISCONNECT: &str = "subscribers.disconnect";

both_stores!(
    actions_list_the_disconnects_of_a_session_oldest_first,
    a_refusal_is_listed_with_its_error_cause_by_name,
    actions_have_the_permission_scope_and_errors_of_the_session,
);

/// The application on `db`, named `host1`.
async fn app(db: &TestDb) -> TestApp {
    let mut config = api_config(db);
    config.node.name = "host1".into();
    TestApp::start(config).await
}

async fn disconnect(app: &TestApp, id: i64, token: &str) -> (u16, Value) {
    let r = app
        .http
        .post(app.url(&format!("/api/sessions/{id}/disconnect")))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

/// The `data` of a 200 answer.
async fn actions(app: &TestApp, id: i64, token: &str) -> Vec<Value> {
    let (st, body) = app
        .json(&format!("/api/sessions/{id}/actions"), Some(token))
        .await;
    assert_eq!((st, &body["success"]), (200, &json!(true)), "{body}");
    body["data"].as_array().expect("data").clone()
}

/// An RFC 3339 UTC time with `Z`, as epoch seconds.
fn utc(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("time: {v}"));
    assert!(text.ends_with('Z'), "{text}");
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .timestamp()
}

async fn actions_list_the_disconnects_of_a_session_oldest_first(backend: Backend) {
    let coa = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    let app = app(&db).await;
    let (_, id) = open_session(&app, 1).await;
    let viewer = token(Role::Admin, None, &[SESSIONS_VIEW]);
    assert!(actions(&app, id, &viewer).await.is_empty(), "nothing yet");

    let before = i64::from(now());
    let alice = token_for("alice", Role::Admin, None, &[DISCONNECT]);
    let (st, body) = disconnect(&app, id, &alice).await;
    assert_eq!((st, body["method"].as_str()), (200, Some("coa")), "{body}");
    // Closed now: the API answers already_closed itself, and logs that too.
    let bob = token_for("bob", Role::Admin, None, &[DISCONNECT]);
    let (st, body) = disconnect(&app, id, &bob).await;
    assert_eq!(
        (st, body["method"].as_str()),
        (200, Some("already_closed")),
        "{body}"
    );
    assert_eq!(coa.count(), 1);

    let rows = actions(&app, id, &viewer).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (ack, closed) = (&rows[0], &rows[1]);
    assert!(ack["id"].as_i64() < closed["id"].as_i64(), "oldest first");
    assert_eq!(
        (
            &ack["radacctid"],
            &ack["action"],
            &ack["method"],
            &ack["outcome"],
            &ack["actor"],
            &ack["node"]
        ),
        (
            &json!(id),
            &json!("disconnect"),
            &json!("coa"),
            &json!("ack"),
            &json!("alice"),
            &json!("host1")
        )
    );
    assert_eq!(ack["detail"], json!({ "row_closed": true }), "parsed JSON");
    assert_eq!(
        (
            &ack["request"],
            &ack["error_cause"],
            &ack["error_cause_name"]
        ),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert!(ack["rtt_ms"].as_i64().is_some_and(|ms| ms >= 0), "{ack}");
    let (asked, done) = (utc(&ack["requested_at"]), utc(&ack["finished_at"]));
    assert!(
        before <= asked && asked <= done && done <= i64::from(now()),
        "{ack}"
    );

    assert_eq!(
        (
            &closed["method"],
            &closed["outcome"],
            &closed["actor"],
            &closed["rtt_ms"],
            &closed["node"]
        ),
        (
            &json!("none"),
            &json!("already_closed"),
            &json!("bob"),
            &Value::Null,
            &json!("host1")
        )
    );
    let stored = app.store.session_actions(id).await.expect("log");
    assert_eq!(stored[1].outcome, "already_closed");
    app.stop().await;
}

async fn a_refusal_is_listed_with_its_error_cause_by_name(backend: Backend) {
    let coa = FakeNas::start(common::SECRET, NasMode::Nak(Some(402))).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    let app = app(&db).await;
    let (_, id) = open_session(&app, 2).await;
    let (st, _) = disconnect(&app, id, &token(Role::Admin, None, &[DISCONNECT])).await;
    assert_eq!(st, 503);
    let rows = actions(&app, id, &token(Role::Admin, None, &[SESSIONS_VIEW])).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let nak = &rows[0];
    assert_eq!(
        (
            &nak["outcome"],
            &nak["error_cause"],
            &nak["error_cause_name"],
            &nak["actor"]
        ),
        (
            &json!("nak"),
            &json!(402),
            &json!("Missing-Attribute"),
            &json!("test")
        )
    );
    assert_eq!(nak["detail"]["error_cause"], json!(402), "{nak}");
    app.stop().await;
}

async fn actions_have_the_permission_scope_and_errors_of_the_session(backend: Backend) {
    let coa = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    // Reseller 6 owns user3's subscriber; reseller 5 owns nobody.
    let user = Sess::new(3).user;
    db.exec(&format!(
        "INSERT INTO resellers (id, name) VALUES (5, 'r5'); \
         INSERT INTO resellers (id, name) VALUES (6, 'r6'); \
         INSERT INTO subscribers (username, reseller_id) VALUES ('{user}', 6);"
    ))
    .await;
    let app = app(&db).await;
    let (_, id) = open_session(&app, 3).await;
    let path = format!("/api/sessions/{id}/actions");
    let owner = token(Role::Reseller, Some(6), &[SESSIONS_VIEW]);
    let outsider = token(Role::Reseller, Some(5), &[SESSIONS_VIEW]);
    let no_view = token(Role::Admin, None, &[DISCONNECT]);
    let admin = token(Role::Admin, None, &[SESSIONS_VIEW]);

    // Open (answered from the index) and then closed (from the database): the same answers
    // as GET /api/sessions/{id}.
    for round in ["open", "closed"] {
        if round == "closed" {
            let (st, _) = disconnect(&app, id, &token(Role::Admin, None, &[DISCONNECT])).await;
            assert_eq!(st, 200);
            assert!(app.index.get_by_id(id).is_none());
        }
        for base in [format!("/api/sessions/{id}"), path.clone()] {
            app.expect_error(&base, None, 401, "missing token").await;
            app.expect_error(&base, Some(&no_view), 403, "sessions.view denied")
                .await;
            app.expect_error(&base, Some(&outsider), 403, "not authorized")
                .await;
            let (st, body) = app.json(&base, Some(&owner)).await;
            assert_eq!(st, 200, "{round} {base}: {body}");
        }
    }
    assert_eq!(actions(&app, id, &owner).await.len(), 1);
    app.expect_error(
        "/api/sessions/999999/actions",
        Some(&admin),
        404,
        "session not found",
    )
    .await;
    app.expect_error(
        "/api/sessions/abc/actions",
        Some(&admin),
        400,
        "invalid radacctid, must be an integer",
    )
    .await;

    // Archived: GET /api/sessions/{id} does not search the archive, so neither does this;
    // the rows themselves moved with the session.
    let report = archive_session(&db, &app, id).await;
    assert_eq!(report.moved, 1);
    for base in [format!("/api/sessions/{id}"), path.clone()] {
        app.expect_error(&base, Some(&admin), 404, "session not found")
            .await;
    }
    assert_eq!(app.store.session_actions(id).await.expect("log").len(), 1);
    app.stop().await;
}
