//! `POST /api/sessions/{radacctid}/coa` over HTTP, against the real application: its CoA client
//! reads the NAS from the `nas` table and talks to a test NAS that speaks RFC 5176 on loopback
//! (or to a real FreeRADIUS playing the NAS). Every case checks what reached the NAS, the HTTP
//! answer, and the session's action log.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::api_disconnect::{db_with_nas, freeradius_nas_and_db};
use crate::cluster_disconnect::{HeldLock, learn, node};
use crate::common::api::{api_config, token_for};
use crate::common::fake_nas::{self, FakeNas, NasMode, Received};
use crate::common::freeradius::NasAnswer;
use crate::common::{self, Backend, Nas, Sess, TestApp, TestDb, now, open_session, scrape, value};
use radacctd::api::auth::{Role, SESSIONS_VIEW};
use radacctd::config::Config;
use radacctd::radius::dictionary as d;
use radacctd::store::StoredAction;
use serde_json::{Value, json};

const COA: &str = "subscribers.coa";
/// The token subject every allowed request is made as (the action log's actor).
const ACTOR: &str = "support-desk-7";
const MIKROTIK: u32 = d::VENDOR_MIKROTIK;

both_stores!(
    ack_sends_the_changes_and_the_session_identification,
    listed_attributes_are_sent_typed_by_the_dictionary,
    nak_is_422_naming_the_error_cause,
    silent_nas_is_503_nas_unreachable,
    answer_with_a_bad_authenticator_is_ignored_and_counted,
    nas_with_another_secret_drops_the_request,
    closed_session_is_409_and_logged_as_already_closed,
    nas_without_a_known_secret_is_503_and_logged_as_error,
    reseller_scope_and_permission_are_checked_before_anything_is_sent,
    bad_bodies_are_400_naming_the_field,
    coa_outcomes_and_round_trips_are_on_the_metrics_endpoint,
    identical_concurrent_coas_send_one_request,
    different_concurrent_coas_are_sent_one_after_the_other,
    coa_rows_are_listed_by_the_actions_endpoint_with_the_disconnect,
    real_freeradius_as_the_nas_acks_and_logs_what_was_sent,
    real_freeradius_nak_is_422_with_its_error_cause,
);

// --- the lab -------------------------------------------------------------------------------

/// The application with its API, a test NAS registered in the `nas` table, and one open session.
struct Lab {
    app: TestApp,
    nas: FakeNas,
    /// The open session and its radacctid.
    sess: Sess,
    id: i64,
    /// Holds the database for the test's length.
    db: TestDb,
}

/// Short CoA budgets (so that silence costs 600 ms) and `Idle-Timeout` allowed in `attributes`.
fn coa_config(db: &TestDb) -> Config {
    let mut config = api_config(db);
    config.disconnect.coa_timeout_ms = 600;
    config.disconnect.coa_retry_interval_ms = 200;
    config.disconnect.coa_attributes = vec!["Idle-Timeout".into()];
    config
}

async fn lab_with(backend: Backend, nas: FakeNas, tweak: impl FnOnce(&mut Config)) -> Option<Lab> {
    lab_seeded(backend, nas, "", tweak).await
}

/// [`lab_with`], running `sql` (e.g. resellers and subscribers) before the application starts
/// and loads them.
async fn lab_seeded(
    backend: Backend,
    nas: FakeNas,
    sql: &str,
    tweak: impl FnOnce(&mut Config),
) -> Option<Lab> {
    let db = db_with_nas(backend, nas.addr.port()).await?;
    if !sql.is_empty() {
        db.exec(sql).await;
    }
    let mut config = coa_config(&db);
    tweak(&mut config);
    let app = TestApp::start(config).await;
    let (sess, id) = open_session(&app, 1).await;
    Some(Lab {
        app,
        nas,
        sess,
        id,
        db,
    })
}

async fn lab(backend: Backend, mode: NasMode) -> Option<Lab> {
    let nas = FakeNas::start(common::SECRET, mode).await;
    lab_with(backend, nas, |_| {}).await
}

/// A token with the CoA permission, for [`ACTOR`].
fn allowed() -> String {
    token_for(ACTOR, Role::Admin, None, &[COA])
}

/// `POST /api/sessions/{id}/coa` to `app` with `body` as the JSON text; a future that owns what
/// it needs, so that it can be spawned.
fn post_coa(
    app: &TestApp,
    id: i64,
    token: Option<&str>,
    body: &str,
) -> impl Future<Output = (u16, Value)> + Send + 'static {
    let mut req = app
        .http
        .post(app.url(&format!("/api/sessions/{id}/coa")))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    async move {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status}: not a JSON body ({e}): {text}"));
        (status, body)
    }
}

impl Lab {
    /// `POST /api/sessions/{id}/coa` with `body` as the JSON text.
    async fn coa_raw(&self, id: i64, token: Option<&str>, body: &str) -> (u16, Value) {
        post_coa(&self.app, id, token, body).await
    }

    /// A CoA for the lab's session, as [`ACTOR`].
    async fn coa(&self, body: Value) -> (u16, Value) {
        self.coa_raw(self.id, Some(&allowed()), &body.to_string())
            .await
    }

    async fn actions(&self) -> Vec<StoredAction> {
        self.app
            .store
            .session_actions(self.id)
            .await
            .expect("read the action log")
    }

    /// The only row of the action log.
    async fn only_action(&self) -> StoredAction {
        let rows = self.actions().await;
        assert_eq!(rows.len(), 1, "{rows:#?}");
        rows.into_iter().next().expect("one row")
    }

    async fn assert_row_open(&self) {
        let row = self
            .app
            .store
            .row_by_key(&self.sess.key())
            .await
            .expect("read")
            .expect("row");
        assert!(row.is_open(), "a CoA never closes the row");
        assert!(self.app.index.contains(&self.sess.key()));
    }

    async fn finish(self) {
        self.app.stop().await;
    }
}

/// The distinct requests among the datagrams, in order of first arrival: a retransmission is
/// the same request (same identifier and authenticator), sent again.
fn distinct(got: &[Received]) -> Vec<Received> {
    let mut out: Vec<Received> = Vec::new();
    for r in got {
        if !out.iter().any(|o| o.bytes == r.bytes) {
            out.push(r.clone());
        }
    }
    out
}

/// The CoA-Request carries the session's identification as the Disconnect-Request does, and
/// verifies with the NAS's secret.
fn assert_identifies(rx: &Received, s: &Sess) {
    assert_eq!(rx.code, fake_nas::COA_REQUEST);
    assert!(rx.authenticator_ok, "Request Authenticator verifies");
    assert_eq!(rx.message_authenticator_ok, Some(true), "has a valid MA");
    assert_eq!(rx.attr_str(d::USER_NAME), Some(s.user.clone()));
    assert_eq!(rx.attr_str(d::ACCT_SESSION_ID), Some(s.session_id.clone()));
    assert_eq!(rx.attr_ipv4(d::FRAMED_IP_ADDRESS), Some(s.framed_ip));
    assert_eq!(rx.attr_ipv4(d::NAS_IP_ADDRESS), Some(Ipv4Addr::LOCALHOST));
}

fn request_json(a: &StoredAction) -> Value {
    let text = a.request.as_deref().expect("the row says what was sent");
    serde_json::from_str(text).expect("request is JSON")
}

/// A row for a CoA that reached the NAS.
fn assert_sent_row(a: &StoredAction, outcome: &str, error_cause: Option<i64>) {
    assert_eq!(
        (a.action.as_str(), a.method.as_str(), a.outcome.as_str()),
        ("coa", "coa", outcome),
        "{a:#?}"
    );
    assert_eq!(a.error_cause, error_cause, "{a:#?}");
    assert_eq!(a.actor.as_deref(), Some(ACTOR));
    assert!(a.rtt_ms.is_some(), "rtt_ms is set when sent: {a:#?}");
    assert!(a.finished_at >= a.requested_at);
}

// --- the answers -----------------------------------------------------------------------------

async fn ack_sends_the_changes_and_the_session_identification(backend: Backend) {
    let Some(lab) = lab(backend, NasMode::Ack).await else {
        return;
    };
    let (st, body) = lab
        .coa(json!({
            "rate_limit": "10M/20M",
            "session_timeout": 3600,
            "filter_id": "throttled",
            "address_list": "fair-use",
        }))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["success"], Value::Bool(true), "{body}");
    assert_eq!(body["result"], "ack", "{body}");
    assert!(body["rtt_ms"].is_u64(), "{body}");

    let got = lab.nas.received();
    assert_eq!(got.len(), 1, "answered at once: sent once");
    let rx = &got[0];
    assert_identifies(rx, &lab.sess);
    assert_eq!(
        rx.vsa_str(MIKROTIK, d::MIKROTIK_RATE_LIMIT).as_deref(),
        Some("10M/20M")
    );
    assert_eq!(rx.attr_u32(d::SESSION_TIMEOUT), Some(3600));
    assert_eq!(rx.attr_str(d::FILTER_ID).as_deref(), Some("throttled"));
    assert_eq!(
        rx.vsa_str(MIKROTIK, d::MIKROTIK_ADDRESS_LIST).as_deref(),
        Some("fair-use")
    );
    // Nothing else: the identification, the four changes (two of them Vendor-Specific, each
    // in its own attribute) and the Message-Authenticator.
    let mut types: Vec<u8> = rx.attrs.iter().map(|(t, _)| *t).collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            d::USER_NAME,
            d::NAS_IP_ADDRESS,
            d::FRAMED_IP_ADDRESS,
            d::FILTER_ID,
            26,
            26,
            d::SESSION_TIMEOUT,
            d::ACCT_SESSION_ID,
            80
        ],
        "{:?}",
        rx.attrs
    );
    lab.assert_row_open().await;

    let a = lab.only_action().await;
    assert_sent_row(&a, "ack", None);
    assert_eq!(
        request_json(&a),
        json!({
            "Mikrotik-Rate-Limit": "10M/20M",
            "Session-Timeout": 3600,
            "Filter-Id": "throttled",
            "Mikrotik-Address-List": "fair-use",
        })
    );
    lab.finish().await;
}

async fn listed_attributes_are_sent_typed_by_the_dictionary(backend: Backend) {
    let Some(lab) = lab(backend, NasMode::Ack).await else {
        return;
    };
    let (st, body) = lab
        .coa(json!({
            "rate_limit": "2M/4M 4M/8M 1M/2M 16/16 8 1M/2M",
            "attributes": [{"name": "Idle-Timeout", "value": 600}],
        }))
        .await;
    assert_eq!(st, 200, "{body}");
    let got = lab.nas.received();
    assert_eq!(got.len(), 1);
    assert_identifies(&got[0], &lab.sess);
    assert_eq!(
        got[0].attr_u32(28),
        Some(600),
        "Idle-Timeout as a 32-bit integer"
    );
    assert_eq!(
        got[0].vsa_str(MIKROTIK, d::MIKROTIK_RATE_LIMIT).as_deref(),
        Some("2M/4M 4M/8M 1M/2M 16/16 8 1M/2M"),
        "the burst fields go through as written"
    );
    let a = lab.only_action().await;
    assert_sent_row(&a, "ack", None);
    assert_eq!(
        request_json(&a),
        json!({
            "Mikrotik-Rate-Limit": "2M/4M 4M/8M 1M/2M 16/16 8 1M/2M",
            "Idle-Timeout": 600,
        })
    );
    lab.finish().await;
}

async fn nak_is_422_naming_the_error_cause(backend: Backend) {
    let Some(lab) = lab(backend, NasMode::Nak(Some(401))).await else {
        return;
    };
    // RFC 5176 §3.5's Error-Cause values (with the RFC 3576 names FreeRADIUS prints), written
    // out here rather than read from radacctd's dictionary, so that a wrong name there fails.
    let named: [(u32, &str); 17] = [
        (201, "Residual-Context-Removed"),
        (202, "Invalid-EAP-Packet"),
        (401, "Unsupported-Attribute"),
        (402, "Missing-Attribute"),
        (403, "NAS-Identification-Mismatch"),
        (404, "Invalid-Request"),
        (405, "Unsupported-Service"),
        (406, "Unsupported-Extension"),
        (407, "Invalid-Attribute-Value"),
        (501, "Administratively-Prohibited"),
        (502, "Proxy-Request-Not-Routable"),
        (503, "Session-Context-Not-Found"),
        (504, "Session-Context-Not-Removable"),
        (505, "Proxy-Processing-Error"),
        (506, "Resources-Unavailable"),
        (507, "Request-Initiated"),
        (508, "Multiple-Session-Selection-Unsupported"),
    ];
    let mut cases: Vec<(Option<u32>, String, Value)> = named
        .iter()
        .map(|&(c, name)| (Some(c), format!("Error-Cause {c} ({name})"), json!(name)))
        .collect();
    // A number no dictionary names is reported as a number.
    cases.push((Some(999), "Error-Cause 999".into(), Value::Null));
    cases.push((None, "CoA-NAK without Error-Cause".into(), Value::Null));
    for (n, (cause, said, name)) in cases.iter().enumerate() {
        lab.nas.set_mode(NasMode::Nak(*cause));
        let (st, body) = lab.coa(json!({"rate_limit": "1M/1M"})).await;
        assert_eq!(
            (st, body["success"].clone(), body["message"].as_str()),
            (
                422,
                Value::Bool(false),
                Some(format!("NAS refused the change: {said}").as_str())
            ),
            "{body}"
        );
        assert_eq!(body["error_cause"], *name, "{body}");
        assert_eq!(
            lab.nas.count(),
            n + 1,
            "a NAK is an answer: no retransmission"
        );
        let rows = lab.actions().await;
        assert_eq!(rows.len(), n + 1);
        assert_sent_row(&rows[n], "nak", cause.map(i64::from));
        assert_eq!(
            request_json(&rows[n]),
            json!({"Mikrotik-Rate-Limit": "1M/1M"})
        );
        // Even Session-Context-Not-Found leaves the row alone: only a disconnect closes rows.
        lab.assert_row_open().await;
    }
    lab.finish().await;
}

async fn silent_nas_is_503_nas_unreachable(backend: Backend) {
    let Some(lab) = lab(backend, NasMode::Silent).await else {
        return;
    };
    let started = std::time::Instant::now();
    let (st, body) = lab.coa(json!({"session_timeout": 60})).await;
    assert_eq!(
        (st, body["success"].clone(), body["message"].as_str()),
        (503, Value::Bool(false), Some("NAS unreachable")),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered within the budget, not hung: {:?}",
        started.elapsed()
    );
    let got = lab.nas.received();
    assert!(
        got.len() >= 2,
        "retransmitted within the budget: {}",
        got.len()
    );
    assert!(
        got.windows(2).all(|w| w[0].bytes == w[1].bytes),
        "a retransmission is the same packet"
    );
    lab.assert_row_open().await;
    let a = lab.only_action().await;
    assert_sent_row(&a, "timeout", None);
    assert_eq!(request_json(&a), json!({"Session-Timeout": 60}));
    lab.finish().await;
}

async fn answer_with_a_bad_authenticator_is_ignored_and_counted(backend: Backend) {
    let nas = FakeNas::start(common::SECRET, NasMode::BadAuthenticator).await;
    let Some(lab) = lab_with(backend, nas, |c| c.metrics.enabled = true).await else {
        return;
    };
    let metrics = lab.app.metrics_addr.expect("metrics listener");
    let cases = [
        (NasMode::BadAuthenticator, "bad_authenticator"),
        (
            NasMode::BadMessageAuthenticator,
            "bad_message_authenticator",
        ),
        (NasMode::WrongPort, "wrong_source"),
    ];
    for (n, (mode, reason)) in cases.into_iter().enumerate() {
        let series =
            format!(r#"radacctd_disconnect_coa_responses_ignored_total{{reason="{reason}"}}"#);
        assert_eq!(value(&scrape(metrics).await, &series), 0.0);
        lab.nas.set_mode(mode);
        let (st, body) = lab.coa(json!({"filter_id": "blocked"})).await;
        assert_eq!(
            (st, body["message"].as_str()),
            (503, Some("NAS unreachable")),
            "{mode:?}: an answer that does not verify is no answer: {body}"
        );
        let ignored = value(&scrape(metrics).await, &series);
        assert!(ignored >= 1.0, "{mode:?}: {series} = {ignored}");
        let rows = lab.actions().await;
        assert_eq!(rows.len(), n + 1);
        assert_sent_row(&rows[n], "timeout", None);
    }
    lab.assert_row_open().await;
    lab.finish().await;
}

async fn nas_with_another_secret_drops_the_request(backend: Backend) {
    // The NAS row says `common::SECRET`; this NAS was configured with another secret.
    let nas = FakeNas::start("not-the-nas-table-secret", NasMode::Ack).await;
    let Some(lab) = lab_with(backend, nas, |_| {}).await else {
        return;
    };
    let (st, body) = lab.coa(json!({"rate_limit": "5M/5M"})).await;
    assert_eq!(
        (st, body["message"].as_str()),
        (503, Some("NAS unreachable")),
        "{body}"
    );
    let got = lab.nas.received();
    assert!(!got.is_empty(), "the request reached the NAS");
    assert!(
        got.iter().all(|r| !r.authenticator_ok),
        "and did not verify there, so it went unanswered"
    );
    assert_sent_row(&lab.only_action().await, "timeout", None);
    lab.assert_row_open().await;
    lab.finish().await;
}

async fn closed_session_is_409_and_logged_as_already_closed(backend: Backend) {
    let Some(lab) = lab(backend, NasMode::Ack).await else {
        return;
    };
    let mut radius = Nas::new(lab.app.radius_addr).await;
    radius
        .send(&lab.sess.stop(now() - 1, 59, 100, 200, 1))
        .await
        .expect("stop");
    assert!(!lab.app.index.contains(&lab.sess.key()));
    for n in 1..=2 {
        let (st, body) = lab.coa(json!({"rate_limit": "10M/20M"})).await;
        assert_eq!(
            (st, body["success"].clone(), body["message"].as_str()),
            (409, Value::Bool(false), Some("session is closed")),
            "{body}"
        );
        let rows = lab.actions().await;
        assert_eq!(rows.len(), n, "{rows:#?}");
        let a = &rows[n - 1];
        assert_eq!(
            (a.action.as_str(), a.method.as_str(), a.outcome.as_str()),
            ("coa", "none", "already_closed")
        );
        assert_eq!(a.actor.as_deref(), Some(ACTOR));
        assert_eq!(a.rtt_ms, None, "nothing was sent");
    }
    // Scope is checked before the state: an outsider learns nothing, and nothing is logged.
    let outsider = token_for(ACTOR, Role::Reseller, Some(5), &[COA]);
    let (st, body) = lab
        .coa_raw(lab.id, Some(&outsider), r#"{"rate_limit": "10M/20M"}"#)
        .await;
    assert_eq!(
        (st, body["message"].as_str()),
        (403, Some("not authorized")),
        "{body}"
    );
    assert_eq!(lab.actions().await.len(), 2);
    assert_eq!(lab.nas.count(), 0, "no NAS was asked");
    // The rows name the session by its key, which the API's view of a stored row leaves out.
    let keyed = lab
        .db
        .count(&format!(
            "SELECT count(*) FROM session_actions WHERE acctuniqueid = '{}'",
            lab.sess.key()
        ))
        .await;
    assert_eq!(keyed, 2);
    lab.finish().await;
}

async fn nas_without_a_known_secret_is_503_and_logged_as_error(backend: Backend) {
    let nas = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(lab) = lab_with(backend, nas, |c| c.metrics.enabled = true).await else {
        return;
    };
    // A session whose NAS-IP-Address has no `nas` row and is no configured client: there is no
    // secret to sign a CoA-Request with.
    let s = Sess::new(2).on_nas("127.0.0.2");
    let mut radius = Nas::new(lab.app.radius_addr).await;
    radius.send(&s.start(now() - 60)).await.expect("start");
    let id = lab
        .app
        .index
        .get(&s.key())
        .expect("open")
        .radacctid
        .expect("id");
    let (st, body) = lab
        .coa_raw(id, Some(&allowed()), r#"{"rate_limit": "10M/20M"}"#)
        .await;
    assert_eq!(
        (st, body["message"].as_str()),
        (503, Some("NAS unreachable")),
        "{body}"
    );
    assert_eq!(lab.nas.count(), 0, "nothing could be sent");
    let rows = lab.app.store.session_actions(id).await.expect("read");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let a = &rows[0];
    assert_eq!(
        (a.action.as_str(), a.method.as_str(), a.outcome.as_str()),
        ("coa", "none", "error"),
        "{a:#?}"
    );
    assert_eq!((a.rtt_ms, a.error_cause), (None, None));
    assert_eq!(a.actor.as_deref(), Some(ACTOR));
    assert!(
        a.detail.as_deref().is_some_and(|d| d.contains("secret")),
        "the row says why: {a:#?}"
    );
    assert_eq!(request_json(a), json!({"Mikrotik-Rate-Limit": "10M/20M"}));
    let m = scrape(lab.app.metrics_addr.expect("metrics")).await;
    assert_eq!(
        value(&m, r#"radacctd_coa_requests_total{outcome="error"}"#),
        1.0
    );
    lab.finish().await;
}

// --- refused before the session ----------------------------------------------------------------

async fn reseller_scope_and_permission_are_checked_before_anything_is_sent(backend: Backend) {
    // Reseller 6 owns the lab's subscriber (session 1's user); reseller 5 owns nobody.
    let owners = format!(
        "INSERT INTO resellers (id, name) VALUES (5, 'r5'), (6, 'r6');\n\
         INSERT INTO subscribers (username, reseller_id) VALUES ('{}', 6);",
        Sess::new(1).user
    );
    let nas = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(lab) = lab_seeded(backend, nas, &owners, |_| {}).await else {
        return;
    };
    let body = r#"{"rate_limit": "10M/20M"}"#;

    assert_eq!(lab.coa_raw(lab.id, None, body).await.0, 401);
    // The disconnect permission is not the CoA permission.
    let other = token_for(
        ACTOR,
        Role::Admin,
        None,
        &[SESSIONS_VIEW, "subscribers.disconnect"],
    );
    let (st, reply) = lab.coa_raw(lab.id, Some(&other), body).await;
    assert_eq!(
        (st, reply["message"].as_str()),
        (403, Some("subscribers.coa denied")),
        "{reply}"
    );
    let (st, reply) = lab.coa_raw(999_999, Some(&allowed()), body).await;
    assert_eq!(
        (st, reply["message"].as_str()),
        (404, Some("session not found")),
        "{reply}"
    );
    let outsider = token_for(ACTOR, Role::Reseller, Some(5), &[COA]);
    let (st, reply) = lab.coa_raw(lab.id, Some(&outsider), body).await;
    assert_eq!(
        (st, reply["message"].as_str()),
        (403, Some("not authorized")),
        "{reply}"
    );
    assert_eq!(lab.nas.count(), 0, "nothing sent");
    assert!(lab.actions().await.is_empty(), "refusals write no row");

    // The reseller that owns the subscriber may.
    let owner = token_for("reseller-6-desk", Role::Reseller, Some(6), &[COA]);
    let (st, reply) = lab.coa_raw(lab.id, Some(&owner), body).await;
    assert_eq!(
        (st, reply["result"].as_str()),
        (200, Some("ack")),
        "{reply}"
    );
    assert_eq!(lab.nas.count(), 1);
    let a = lab.only_action().await;
    assert_eq!(a.actor.as_deref(), Some("reseller-6-desk"));
    lab.finish().await;
}

async fn bad_bodies_are_400_naming_the_field(backend: Backend) {
    let Some(lab) = lab(backend, NasMode::Ack).await else {
        return;
    };
    let long = "x".repeat(254);
    let cases: Vec<(String, &str)> = vec![
        (r#"{"rate_limit": "10Q/20M"}"#.into(), "rate_limit: "),
        (r#"{"rate_limit": ""}"#.into(), "rate_limit: "),
        (
            r#"{"rate_limit": "1M/1M 2M/2M 1M/1M 8 9"}"#.into(),
            "rate_limit: ",
        ),
        (r#"{"rate_limit": 10}"#.into(), "rate_limit: "),
        (r#"{"session_timeout": -1}"#.into(), "session_timeout: "),
        (r#"{"session_timeout": "soon"}"#.into(), "session_timeout: "),
        (r#"{"session_timeout": 1.5}"#.into(), "session_timeout: "),
        (
            r#"{"session_timeout": 4294967296}"#.into(),
            "session_timeout: ",
        ),
        (r#"{"filter_id": ""}"#.into(), "filter_id: "),
        (format!(r#"{{"filter_id": "{long}"}}"#), "filter_id: "),
        (r#"{"address_list": ""}"#.into(), "address_list: "),
        (format!(r#"{{"address_list": "{long}"}}"#), "address_list: "),
        (
            r#"{"attributes": [{"name": "Reply-Message", "value": "hi"}]}"#.into(),
            "attributes[0].name: ",
        ),
        (
            r#"{"attributes": [{"name": "No-Such-Attribute", "value": 1}]}"#.into(),
            "attributes[0].name: ",
        ),
        (
            r#"{"attributes": [{"name": "Idle-Timeout", "value": "ten"}]}"#.into(),
            "attributes[0].value: ",
        ),
        (
            r#"{"attributes": [{"name": "Idle-Timeout", "value": -5}]}"#.into(),
            "attributes[0].value: ",
        ),
        ("{}".into(), "body: "),
        (r#"{"attributes": []}"#.into(), "body: "),
        ("not json".into(), "body: "),
        (
            r#"{"rate_limit": "10M/20M", "colour": "red"}"#.into(),
            "body: ",
        ),
        ("[]".into(), "body: "),
        (
            r#"{"attributes": [{"name": "User-Name", "value": "mallory"}]}"#.into(),
            "attributes[0].name: ",
        ),
        (r#"{"filter_id": 7}"#.into(), "filter_id: "),
    ];
    for (body, field) in &cases {
        let (st, reply) = lab.coa_raw(lab.id, Some(&allowed()), body).await;
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(
            st == 400 && reply["success"] == Value::Bool(false) && message.starts_with(field),
            "{body} → {st} {reply}: expected 400 starting with {field:?}"
        );
        assert!(
            message.len() > field.len(),
            "{body}: the message says why, not only where: {message:?}"
        );
    }
    // Larger than the API takes (`api.max_body_bytes`, 16 KiB): refused before it is read.
    let huge = format!(r#"{{"filter_id": "{}"}}"#, "x".repeat(17 * 1024));
    let (st, reply) = lab.coa_raw(lab.id, Some(&allowed()), &huge).await;
    assert_eq!(
        (st, reply["success"].clone()),
        (413, Value::Bool(false)),
        "{reply}"
    );
    assert_eq!(lab.nas.count(), 0, "nothing sent");
    assert!(lab.actions().await.is_empty(), "bad bodies write no row");
    lab.finish().await;
}

// --- metrics and single flight ------------------------------------------------------------------

async fn coa_outcomes_and_round_trips_are_on_the_metrics_endpoint(backend: Backend) {
    let nas = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(lab) = lab_with(backend, nas, |c| c.metrics.enabled = true).await else {
        return;
    };
    let metrics = lab.app.metrics_addr.expect("metrics listener");
    let outcome = |o: &str| format!(r#"radacctd_coa_requests_total{{outcome="{o}"}}"#);
    let count = "radacctd_coa_round_trip_seconds_count";
    let m = scrape(metrics).await;
    for o in ["ack", "nak", "timeout", "error"] {
        assert_eq!(value(&m, &outcome(o)), 0.0, "{o}");
    }
    assert_eq!(value(&m, count), 0.0);

    let ok = |(st, body): (u16, Value), want: u16| assert_eq!(st, want, "{body}");
    ok(lab.coa(json!({"rate_limit": "1M/1M"})).await, 200);
    ok(lab.coa(json!({"rate_limit": "2M/2M"})).await, 200);
    lab.nas.set_mode(NasMode::Nak(Some(401)));
    ok(lab.coa(json!({"rate_limit": "3M/3M"})).await, 422);
    lab.nas.set_mode(NasMode::Silent);
    ok(lab.coa(json!({"rate_limit": "4M/4M"})).await, 503);
    // A bad body is not a CoA request.
    ok(lab.coa(json!({"rate_limit": "fast"})).await, 400);

    let m = scrape(metrics).await;
    assert_eq!(value(&m, &outcome("ack")), 2.0);
    assert_eq!(value(&m, &outcome("nak")), 1.0);
    assert_eq!(value(&m, &outcome("timeout")), 1.0);
    assert_eq!(value(&m, &outcome("error")), 0.0);
    // One observation per request sent, the unanswered one included (at its budget).
    assert_eq!(value(&m, count), 4.0);
    assert_eq!(
        value(&m, r#"radacctd_coa_round_trip_seconds_bucket{le="+Inf"}"#),
        4.0
    );
    assert_eq!(
        value(&m, r#"radacctd_coa_round_trip_seconds_bucket{le="0.5"}"#),
        3.0,
        "the silent one took its 600 ms budget"
    );
    lab.finish().await;
}

/// How long the NAS of the single-flight tests waits before it answers (within a 3 s budget):
/// the window in which a second call meets the first one in flight.
const NAS_PAUSE: Duration = Duration::from_millis(800);

/// A lab whose NAS answers after [`NAS_PAUSE`].
async fn slow_nas_lab(backend: Backend) -> Option<Lab> {
    let nas = FakeNas::start(common::SECRET, NasMode::Ack).await;
    nas.set_delay(NAS_PAUSE);
    lab_with(backend, nas, |c| {
        c.disconnect.coa_timeout_ms = 3000;
        c.metrics.enabled = true;
    })
    .await
}

/// Starts a CoA of the lab's session in a task; returns once the NAS holds its request (and
/// pauses before answering), so that a call made next overlaps it whatever the scheduling.
async fn coa_in_flight(lab: &Lab, body: Value) -> tokio::task::JoinHandle<(u16, Value)> {
    let seen = distinct(&lab.nas.received()).len();
    let call = tokio::spawn(post_coa(
        &lab.app,
        lab.id,
        Some(&allowed()),
        &body.to_string(),
    ));
    assert!(
        common::eventually(|| distinct(&lab.nas.received()).len() > seen).await,
        "the CoA-Request reached the NAS"
    );
    call
}

async fn identical_concurrent_coas_send_one_request(backend: Backend) {
    let Some(lab) = slow_nas_lab(backend).await else {
        return;
    };
    let change = json!({"rate_limit": "10M/20M", "session_timeout": 600});
    let first = coa_in_flight(&lab, change.clone()).await;
    let (st, body) = lab.coa(change).await;
    assert_eq!((st, body["result"].as_str()), (200, Some("ack")), "{body}");
    let (st, body) = first.await.expect("first call");
    assert_eq!((st, body["result"].as_str()), (200, Some("ack")), "{body}");
    let got = lab.nas.received();
    assert_eq!(
        distinct(&got).len(),
        1,
        "one CoA-Request on the wire (retransmitted while the NAS pauses: {} datagrams)",
        got.len()
    );
    let rows = lab.actions().await;
    assert_eq!(rows.len(), 1, "one attempt, one row: {rows:#?}");
    assert_sent_row(&rows[0], "ack", None);
    let m = scrape(lab.app.metrics_addr.expect("metrics")).await;
    assert_eq!(
        value(&m, r#"radacctd_coa_coalesced_total{scope="node"}"#),
        1.0
    );
    assert_eq!(
        value(&m, r#"radacctd_coa_requests_total{outcome="ack"}"#),
        1.0
    );
    lab.finish().await;
}

async fn different_concurrent_coas_are_sent_one_after_the_other(backend: Backend) {
    let Some(lab) = slow_nas_lab(backend).await else {
        return;
    };
    let first = coa_in_flight(&lab, json!({"rate_limit": "10M/20M"})).await;
    let (st, body) = lab.coa(json!({"filter_id": "blocked"})).await;
    assert_eq!((st, body["result"].as_str()), (200, Some("ack")), "{body}");
    let (st, body) = first.await.expect("first call");
    assert_eq!((st, body["result"].as_str()), (200, Some("ack")), "{body}");

    let got = distinct(&lab.nas.received());
    assert_eq!(got.len(), 2, "two changes, two requests");
    assert_eq!(
        got[0].vsa_str(MIKROTIK, d::MIKROTIK_RATE_LIMIT).as_deref(),
        Some("10M/20M")
    );
    assert_eq!(
        got[0].attr(d::FILTER_ID),
        None,
        "each carries only its own change"
    );
    assert_eq!(got[1].attr_str(d::FILTER_ID).as_deref(), Some("blocked"));
    assert_eq!(got[1].vsa(MIKROTIK, d::MIKROTIK_RATE_LIMIT), None);
    let apart = got[1].at.duration_since(got[0].at);
    assert!(
        apart >= NAS_PAUSE,
        "the second was sent once the first was answered, not alongside it: {apart:?} apart"
    );
    let rows = lab.actions().await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in &rows {
        assert_sent_row(r, "ack", None);
    }
    assert_eq!(
        request_json(&rows[0]),
        json!({"Mikrotik-Rate-Limit": "10M/20M"})
    );
    assert_eq!(request_json(&rows[1]), json!({"Filter-Id": "blocked"}));
    let m = scrape(lab.app.metrics_addr.expect("metrics")).await;
    assert_eq!(
        value(&m, r#"radacctd_coa_coalesced_total{scope="node"}"#),
        0.0
    );
    assert_eq!(
        value(&m, r#"radacctd_coa_requests_total{outcome="ack"}"#),
        2.0
    );
    lab.finish().await;
}

async fn coa_rows_are_listed_by_the_actions_endpoint_with_the_disconnect(backend: Backend) {
    let Some(lab) = lab(backend, NasMode::Ack).await else {
        return;
    };
    let (st, body) = lab
        .coa(json!({"rate_limit": "10M/20M", "session_timeout": 3600}))
        .await;
    assert_eq!(st, 200, "{body}");
    lab.nas.set_mode(NasMode::Nak(Some(401)));
    let (st, body) = lab.coa(json!({"address_list": "overdue"})).await;
    assert_eq!(st, 422, "{body}");
    lab.nas.set_mode(NasMode::Ack);
    let r = lab
        .app
        .http
        .post(lab.app.url(&format!("/api/sessions/{}/disconnect", lab.id)))
        .bearer_auth(token_for(
            "noc",
            Role::Admin,
            None,
            &["subscribers.disconnect"],
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let (st, body) = lab.coa(json!({"filter_id": "late"})).await;
    assert_eq!(st, 409, "{body}");

    let viewer = token_for("auditor", Role::Admin, None, &[SESSIONS_VIEW]);
    let (st, body) = lab
        .app
        .json(&format!("/api/sessions/{}/actions", lab.id), Some(&viewer))
        .await;
    assert_eq!(st, 200, "{body}");
    let rows = body["data"].as_array().expect("data");
    let summary: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default(),
                r["method"].as_str().unwrap_or_default(),
                r["outcome"].as_str().unwrap_or_default(),
                r["actor"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("coa", "coa", "ack", ACTOR),
            ("coa", "coa", "nak", ACTOR),
            ("disconnect", "coa", "ack", "noc"),
            ("coa", "none", "already_closed", ACTOR),
        ],
        "oldest first: {body}"
    );
    assert_eq!(
        rows[0]["request"],
        json!({"Mikrotik-Rate-Limit": "10M/20M", "Session-Timeout": 3600})
    );
    assert!(rows[0]["rtt_ms"].is_i64() || rows[0]["rtt_ms"].is_u64());
    assert_eq!(
        (&rows[1]["error_cause"], &rows[1]["error_cause_name"]),
        (&json!(401), &json!("Unsupported-Attribute"))
    );
    assert_eq!(
        rows[1]["request"],
        json!({"Mikrotik-Address-List": "overdue"})
    );
    assert_eq!(rows[3]["request"], json!({"Filter-Id": "late"}));
    assert_eq!(rows[3]["rtt_ms"], Value::Null);
    lab.finish().await;
}

// --- two nodes on one PostgreSQL database ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_send_one_request_for_the_same_change() {
    two_nodes_change_one_session(
        r#"{"rate_limit": "10M/20M"}"#,
        r#"{"rate_limit": "10M/20M"}"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_send_different_changes_one_after_the_other() {
    two_nodes_change_one_session(
        r#"{"rate_limit": "10M/20M"}"#,
        r#"{"filter_id": "blocked"}"#,
    )
    .await;
}

/// Node A asks for `change_a` and node B for `change_b` of one session at once (both made to
/// wait for the session's action lock, held by the test, so that they overlap whatever the
/// scheduling). The same change is one CoA-Request, answered to both and logged once; different
/// changes are two, the second sent once the first is answered.
async fn two_nodes_change_one_session(change_a: &str, change_b: &str) {
    let same = change_a == change_b;
    let nas = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let delay = Duration::from_millis(300);
    nas.set_delay(delay);
    let Some(db) = db_with_nas(Backend::Postgres, nas.addr.port()).await else {
        return;
    };
    let a = node(&db, "node-a").await;
    let b = node(&db, "node-b").await;
    let (_, id) = open_session(&a, 1).await;
    learn(&b, id).await;

    let mut held = HeldLock::take(&db, id).await;
    let token = allowed();
    let (call_a, call_b) = (
        post_coa(&a, id, Some(&token), change_a),
        post_coa(&b, id, Some(&token), change_b),
    );
    let calls = tokio::spawn(async move { tokio::join!(call_a, call_b) });
    held.until_waiting(id, 2).await;
    assert_eq!(
        nas.count(),
        0,
        "nothing is sent while another holds the lock"
    );
    held.release().await;
    let (from_a, from_b) = calls.await.expect("calls");
    for (st, body) in [&from_a, &from_b] {
        assert_eq!((*st, body["result"].as_str()), (200, Some("ack")), "{body}");
    }

    let got = distinct(&nas.received());
    let rows = a.store.session_actions(id).await.expect("read");
    let coalesced: f64 = {
        let series = r#"radacctd_coa_coalesced_total{scope="cluster"}"#;
        let ma = scrape(a.metrics_addr.expect("metrics")).await;
        let mb = scrape(b.metrics_addr.expect("metrics")).await;
        value(&ma, series) + value(&mb, series)
    };
    if same {
        assert_eq!(got.len(), 1, "one CoA-Request for two calls");
        assert_eq!(rows.len(), 1, "one attempt, one row: {rows:#?}");
        assert_eq!(
            coalesced, 1.0,
            "the second node answered from the first's row"
        );
    } else {
        assert_eq!(got.len(), 2, "two changes, two CoA-Requests");
        assert!(
            got[1].at.duration_since(got[0].at) >= delay - Duration::from_millis(20),
            "the second was sent once the first was answered: {:?} apart",
            got[1].at.duration_since(got[0].at)
        );
        assert_eq!(rows.len(), 2, "{rows:#?}");
        assert_ne!(
            rows[0].node, rows[1].node,
            "each node logged its own: {rows:#?}"
        );
        assert_eq!(coalesced, 0.0);
    }
    for r in &rows {
        assert_sent_row(r, "ack", None);
    }
    a.stop().await;
    b.stop().await;
}

// --- a real FreeRADIUS as the NAS ------------------------------------------------------------

async fn real_freeradius_as_the_nas_acks_and_logs_what_was_sent(backend: Backend) {
    let Some((fr, db)) = freeradius_nas_and_db(backend, NasAnswer::Ack).await else {
        return;
    };
    let app = TestApp::start(coa_config(&db)).await;
    let (s, id) = open_session(&app, 1).await;
    let rate = "2M/4M 4M/8M 1M/2M 16/16 8 1M/2M";
    let change = json!({
        "rate_limit": rate,
        "session_timeout": 7200,
        "filter_id": "plan-gold",
        "address_list": "gold",
        "attributes": [{"name": "Idle-Timeout", "value": 900}],
    });
    let (st, body) = post_coa(&app, id, Some(&allowed()), &change.to_string()).await;
    assert_eq!(st, 200, "{body}\n{}", fr.diagnostics());
    assert_eq!(body["result"], "ack", "{body}");

    let got = fr.received();
    assert_eq!(got.len(), 1, "{}", fr.diagnostics());
    let rx = &got[0];
    let framed = s.framed_ip.to_string();
    for (name, want) in [
        ("Packet-Type", "CoA-Request"),
        ("User-Name", s.user.as_str()),
        ("Acct-Session-Id", s.session_id.as_str()),
        ("Framed-IP-Address", framed.as_str()),
        ("NAS-IP-Address", "127.0.0.1"),
        ("Mikrotik-Rate-Limit", rate),
        ("Session-Timeout", "7200"),
        ("Filter-Id", "plan-gold"),
        ("Mikrotik-Address-List", "gold"),
        ("Idle-Timeout", "900"),
    ] {
        assert_eq!(rx.get(name), Some(want), "{name}\n{}", fr.diagnostics());
    }
    assert!(rx.get("Message-Authenticator").is_some());
    let rows = app.store.session_actions(id).await.expect("read");
    assert_eq!(rows.len(), 1);
    assert_sent_row(&rows[0], "ack", None);
    app.stop().await;
    drop(fr);
}

async fn real_freeradius_nak_is_422_with_its_error_cause(backend: Backend) {
    let Some((fr, db)) = freeradius_nas_and_db(backend, NasAnswer::Nak(503)).await else {
        return;
    };
    let app = TestApp::start(coa_config(&db)).await;
    let (s, id) = open_session(&app, 1).await;
    let (st, body) = post_coa(&app, id, Some(&allowed()), r#"{"filter_id": "blocked"}"#).await;
    assert_eq!(
        (st, body["message"].as_str(), body["error_cause"].as_str()),
        (
            422,
            Some("NAS refused the change: Error-Cause 503 (Session-Context-Not-Found)"),
            Some("Session-Context-Not-Found")
        ),
        "{body}\n{}",
        fr.diagnostics()
    );
    assert_eq!(fr.received().len(), 1, "{}", fr.diagnostics());
    let rows = app.store.session_actions(id).await.expect("read");
    assert_eq!(rows.len(), 1);
    assert_sent_row(&rows[0], "nak", Some(503));
    assert!(
        app.index.contains(&s.key()),
        "a refused change closes nothing"
    );
    app.stop().await;
    drop(fr);
}
