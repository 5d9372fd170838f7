//! The NAS's own Accounting Stop after a disconnect (docs/ARCHITECTURE.md#disconnect): an ACKed
//! disconnect closes the row first (`Admin-Reset`, stop = now), and the Stop the NAS sends
//! next, through the accounting socket as a NAS sends it, still records its final stop time,
//! session time, counters and cause on the row, before or after that close commits.
//! `?wait=N` answers `confirmed` by whether that Stop reached the row.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::api_disconnect::db_with_nas;
use crate::common::api::{api_config, token};
use crate::common::fake_nas::{FakeNas, NasMode};
use crate::common::{self, Backend, Nas, Sess, TestApp, now, wait_until};
use radacctd::api::auth::Role;
use radacctd::metrics::ROW_SOURCES;
use radacctd::sessions::Row;
use serde_json::Value;

const DISCONNECT: &str = "subscribers.disconnect";
const USER_REQUEST: u32 = 1;
const ADMIN_RESET: u32 = 6;

both_stores!(
    the_nas_stop_after_a_disconnect_keeps_its_final_usage,
    wait_confirms_the_nas_stop_that_follows_the_ack,
    wait_without_a_stop_is_unconfirmed_after_the_wait,
    a_stop_before_the_close_commits_keeps_its_usage_and_confirms,
);

/// The usage the interim reports, and the larger final usage of the Stop (both past 4 GiB, so
/// the Gigawords count).
const INTERIM: (u32, u64, u64) = (300, (4 << 32) + 1_000, (5 << 32) + 2_000);
const FINAL: (u32, u64, u64) = (610, (6 << 32) + 3_000, (7 << 32) + 4_000);

/// Opens session `n` on the NAS 127.0.0.1 (started 600 s ago, one interim); its radacctid.
async fn open_with_interim(app: &TestApp, s: &Sess) -> i64 {
    let mut nas = Nas::new(app.radius_addr).await;
    let t = now();
    nas.send(&s.start(t - 600)).await.expect("start");
    let (st, input, output) = INTERIM;
    nas.send(&s.interim(t - 300, st, input, output))
        .await
        .expect("interim");
    app.index
        .get(&s.key())
        .expect("open")
        .radacctid
        .expect("id")
}

/// The NAS's Stop with the final usage, at `at`, answered.
async fn send_stop(radius: std::net::SocketAddr, s: &Sess, at: u32, cause: u32) {
    let (st, input, output) = FINAL;
    let mut nas = Nas::new(radius).await;
    nas.send(&s.stop(at, st, input, output, cause))
        .await
        .expect("the Stop is answered");
}

async fn post(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .http
        .post(app.url(path))
        .bearer_auth(token(Role::Admin, None, &[DISCONNECT]))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

async fn row(app: &TestApp, s: &Sess) -> Row {
    app.store
        .row_by_key(&s.key())
        .await
        .expect("read")
        .expect("row")
}

/// The row holds the Stop's final usage, cause and stop time, and the Stop's marker.
fn assert_final(r: &Row, stop_at: u32, cause: &str) {
    let (st, input, output) = FINAL;
    assert_eq!(r.acctstoptime, Some(i64::from(stop_at)), "stop time");
    assert_eq!(r.acctsessiontime, Some(i64::from(st)), "session time");
    assert_eq!(
        (r.acctinputoctets, r.acctoutputoctets),
        (Some(input as i64), Some(output as i64)),
        "counters with gigawords"
    );
    assert_eq!(r.acctterminatecause.as_deref(), Some(cause));
    assert_eq!(
        r.connectinfo_stop.as_deref(),
        Some(""),
        "a Stop was recorded"
    );
}

fn redone(app: &TestApp) -> u64 {
    let i = ROW_SOURCES
        .iter()
        .position(|s| *s == "redone")
        .expect("redone");
    app.stats.row_sources[i].load(Ordering::Relaxed)
}

async fn the_nas_stop_after_a_disconnect_keeps_its_final_usage(backend: Backend) {
    let coa = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    // The NAS's clock a little ahead of the close, and a little behind it: the Stop wins
    // either way.
    for (n, cause, name, skew) in [
        (1, USER_REQUEST, "User-Request", 2),
        (2, ADMIN_RESET, "Admin-Reset", -1),
    ] {
        let s = Sess::new(n).on_nas("127.0.0.1");
        let id = open_with_interim(&app, &s).await;
        let (st, body) = post(&app, &format!("/api/sessions/{id}/disconnect")).await;
        assert_eq!((st, body["method"].as_str()), (200, Some("coa")), "{body}");
        assert!(body.get("confirmed").is_none(), "no wait, no confirmed");
        // radacctd's close: Admin-Reset at now, the interim's counters, no Stop yet.
        let closed = row(&app, &s).await;
        assert_eq!(closed.acctterminatecause.as_deref(), Some("Admin-Reset"));
        assert_eq!(closed.acctinputoctets, Some(INTERIM.1 as i64));
        assert_eq!(closed.connectinfo_stop, None);
        let close_time = closed.acctstoptime.expect("closed");
        assert!(!app.index.contains(&s.key()));

        let redone_before = redone(&app);
        let stop_at = u32::try_from(close_time + skew).expect("time");
        send_stop(app.radius_addr, &s, stop_at, cause).await;
        assert_final(&row(&app, &s).await, stop_at, name);
        if backend == Backend::Postgres {
            // The closed row is not in the index: the optimistic insert meets it, and the
            // Stop is redone under locks on the row read from the table.
            assert_eq!(redone(&app), redone_before + 1, "{name}");
        }
        assert!(!app.index.contains(&s.key()), "still closed");
    }
    assert_eq!(coa.count(), 2);
    app.stop().await;
}

async fn wait_confirms_the_nas_stop_that_follows_the_ack(backend: Backend) {
    let coa = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let s = Sess::new(3).on_nas("127.0.0.1");
    let id = open_with_interim(&app, &s).await;
    // The NAS: once the ACK is in (the close committed, the index let the session go), its
    // Stop follows 300 ms later.
    let (index, radius, key, stop_at) = (app.index.clone(), app.radius_addr, s.key(), now());
    let nas_session = s.clone();
    let sender = tokio::spawn(async move {
        assert!(wait_until(Duration::from_secs(5), || !index.contains(&key)).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_stop(radius, &nas_session, stop_at, USER_REQUEST).await;
    });
    let started = Instant::now();
    let (st, body) = post(&app, &format!("/api/sessions/{id}/disconnect?wait=3")).await;
    let took = started.elapsed();
    assert_eq!(
        (st, body["method"].as_str(), body["confirmed"].as_bool()),
        (200, Some("coa"), Some(true)),
        "{body}"
    );
    assert!(
        took < Duration::from_secs(3),
        "answered once the Stop was in: {took:?}"
    );
    sender.await.expect("the NAS sent its Stop");
    assert_final(&row(&app, &s).await, stop_at, "User-Request");
    app.stop().await;
}

async fn wait_without_a_stop_is_unconfirmed_after_the_wait(backend: Backend) {
    let coa = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let s = Sess::new(4).on_nas("127.0.0.1");
    let id = open_with_interim(&app, &s).await;
    let path = format!("/api/sessions/{id}/disconnect");

    // A bad wait is refused before any NAS is asked.
    for bad in ["11", "-1", "1.5", "soon"] {
        let (st, body) = post(&app, &format!("{path}?wait={bad}")).await;
        assert_eq!(
            (st, body["message"].as_str()),
            (
                400,
                Some("invalid wait, must be an integer between 0 and 10 (seconds)")
            ),
            "{bad}"
        );
    }
    assert_eq!(coa.count(), 0);

    let started = Instant::now();
    let (st, body) = post(&app, &format!("{path}?wait=1")).await;
    let took = started.elapsed();
    assert_eq!(
        (st, body["method"].as_str(), body["confirmed"].as_bool()),
        (200, Some("coa"), Some(false)),
        "{body}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(2500),
        "waited about 1 s: {took:?}"
    );
    assert_eq!(coa.count(), 1);

    // Closed by radacctd, not by the NAS: already_closed, not confirmed (no waiting).
    let started = Instant::now();
    let (st, body) = post(&app, &format!("{path}?wait=5")).await;
    assert_eq!(
        (st, body["method"].as_str(), body["confirmed"].as_bool()),
        (200, Some("already_closed"), Some(false)),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "no waiting");
    // Once the NAS's Stop is in, already_closed is confirmed.
    send_stop(app.radius_addr, &s, now(), USER_REQUEST).await;
    let (st, body) = post(&app, &format!("{path}?wait=0")).await;
    assert_eq!(
        (st, body["method"].as_str(), body["confirmed"].as_bool()),
        (200, Some("already_closed"), Some(true)),
        "{body}"
    );
    let (_, body) = post(&app, &path).await;
    assert!(
        body.get("confirmed").is_none(),
        "no wait, no confirmed: {body}"
    );
    assert_eq!(coa.count(), 1, "only the first call asked the NAS");
    app.stop().await;
}

async fn a_stop_before_the_close_commits_keeps_its_usage_and_confirms(backend: Backend) {
    let coa = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, coa.addr.port()).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let s = Sess::new(5).on_nas("127.0.0.1");
    let id = open_with_interim(&app, &s).await;
    // The NAS ends the session and sends its Stop before it answers the Disconnect-Request.
    coa.set_delay(Duration::from_millis(800));
    let request = app
        .http
        .post(app.url(&format!("/api/sessions/{id}/disconnect?wait=3")))
        .bearer_auth(token(Role::Admin, None, &[DISCONNECT]))
        .send();
    let call = tokio::spawn(async move {
        let r = request.await.expect("request");
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.expect("JSON body"))
    });
    assert!(wait_until(Duration::from_secs(5), || coa.count() == 1).await);
    let stop_at = now();
    send_stop(app.radius_addr, &s, stop_at, USER_REQUEST).await;
    assert!(!app.index.contains(&s.key()), "the Stop closed it");

    let (st, body) = call.await.expect("answered");
    assert_eq!(
        (st, body["method"].as_str(), body["confirmed"].as_bool()),
        (200, Some("coa"), Some(true)),
        "{body}"
    );
    // The close after the ACK found the row closed and left it alone.
    assert_final(&row(&app, &s).await, stop_at, "User-Request");
    let log = app.store.session_actions(id).await.expect("log");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, "ack");
    assert_eq!(
        log[0].detail.as_deref(),
        Some(r#"{"row_closed":false}"#),
        "this disconnect closed nothing"
    );
    app.stop().await;
}
