//! Disconnect end to end (docs/ARCHITECTURE.md#disconnect): the real application (both stores),
//! sessions opened by real Accounting-Requests, a test NAS answering RFC 5176 Disconnect-Requests
//! over UDP and a test RouterOS API server over TCP. Plus the peers' own fidelity checks
//! (`radclient`, radius-rs) and the RouterOS wire protocol against the test router.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::common::fake_nas::{self, FakeNas, NasMode};
use crate::common::fake_routeros::{Active, FakeRouterOs, RosConfig};
use crate::common::{self, Backend, Nas, SECRET, Sess, TestApp, TestDb, new_ca, now, test_config};
use radacctd::disconnect::mikrotik::{ApiConnection, ApiError, disconnect_ppp};
use radacctd::disconnect::{
    ApiCredentials, ApiOutcome, ApiTimeouts, ApiTransport, CoaClient, CoaConfig, CoaIgnoreReason,
    CoaOutcome, DisconnectAttempt, DisconnectConfig, DisconnectError, DisconnectRequest,
    DisconnectStats, Disconnector, Method,
};
use radacctd::metrics::Stats;
use radacctd::radius::dictionary as d;
use radacctd::sessions::{Row, Session};
use radacctd::store::NasRow;

const NAS_IP: &str = "127.0.0.1";

both_stores!(
    ack_closes_the_row_with_admin_reset_and_method_coa,
    silence_falls_back_to_api_print_then_remove,
    nak_503_closes_the_ghost_row_as_already_closed,
    other_nak_falls_back_to_the_api,
    both_paths_down_is_unreachable_and_the_row_stays_open,
    bad_response_authenticator_is_ignored_as_silence,
    bad_message_authenticator_is_ignored_as_silence,
    answer_from_another_port_is_ignored_as_silence,
    concurrent_disconnects_send_one_request,
    repeat_call_is_already_closed_without_a_second_request,
    legacy_challenge_login_removes_the_session,
    trap_on_remove_is_a_failure,
    session_missing_on_the_router_closes_the_ghost_row,
    configured_client_secret_is_used_without_nas_row,
    api_ssl_fallback_verifies_the_router_and_removes_the_session,
);

// --- the lab -------------------------------------------------------------------------------

/// Short budgets so that the fallback tests run fast.
fn fast_config() -> DisconnectConfig {
    DisconnectConfig {
        coa_timeout_ms: 600,
        coa_retry_interval_ms: 200,
        coa_sockets: 2,
        coa_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        api_connect_timeout_ms: 1000,
        api_reply_timeout_ms: 1000,
        api_timeout_ms: 3000,
        ..DisconnectConfig::default()
    }
}

struct Lab {
    db: TestDb,
    app: TestApp,
    nas: Nas,
    coa: FakeNas,
    ros: FakeRouterOs,
    disc: Disconnector,
}

fn nas_row(coa_port: u16, api_port: u16) -> NasRow {
    NasRow {
        api_tls: false,
        api_tls_name: None,
        id: 1,
        nasname: NAS_IP.into(),
        shortname: "lab-bng".into(),
        secret: SECRET.into(),
        coa_port: Some(i64::from(coa_port)),
        api_port: Some(i64::from(api_port)),
        api_username: Some("api".into()),
        api_password: Some("pw".into()),
    }
}

async fn lab_with(
    backend: Backend,
    mode: NasMode,
    ros: RosConfig,
    config: DisconnectConfig,
) -> Option<Lab> {
    let db = TestDb::new(backend).await?;
    let app = TestApp::start(test_config(&db)).await;
    let nas = Nas::new(app.radius_addr).await;
    let coa = FakeNas::start(SECRET, mode).await;
    let ros = FakeRouterOs::start(ros).await;
    let disc = Disconnector::new(config, &app.ingest, app.index.clone(), app.stats.clone())
        .await
        .expect("CoA sockets bind");
    disc.set_nas(&[nas_row(coa.addr.port(), ros.addr.port())]);
    Some(Lab {
        db,
        app,
        nas,
        coa,
        ros,
        disc,
    })
}

async fn lab(backend: Backend, mode: NasMode, ros: RosConfig) -> Option<Lab> {
    lab_with(backend, mode, ros, fast_config()).await
}

/// A router that has the lab session `n` (and another subscriber) active.
fn router_with(n: u32) -> RosConfig {
    let s = sess(n);
    RosConfig {
        active: vec![
            Active::new("*80000001", "someone-else", "10.9.9.9"),
            Active::new("*800002A3", &s.user, &s.framed_ip.to_string()),
        ],
        ..RosConfig::default()
    }
}

fn sess(n: u32) -> Sess {
    Sess::new(n).on_nas(NAS_IP)
}

impl Lab {
    /// Opens session `n` with a Start (a minute ago) and returns it as the index has it.
    async fn open(&mut self, n: u32) -> (Sess, Session) {
        let s = sess(n);
        self.nas
            .send(&s.start(now() - 60))
            .await
            .expect("Start answered");
        let session = self.app.index.get(&s.key()).expect("session indexed");
        (s, session)
    }

    async fn row(&self, s: &Sess) -> Row {
        self.app
            .store
            .row_by_key(&s.key())
            .await
            .expect("read")
            .expect("row exists")
    }

    /// The disconnect counters of the application.
    fn stats(&self) -> Arc<DisconnectStats> {
        DisconnectStats::of(&self.app.stats)
    }

    async fn finish(self) {
        let Lab { app, disc, db, .. } = self;
        drop(disc);
        app.stop().await;
        drop(db);
    }
}

fn assert_closed_at_about_now(r: &Row, cause: &str) {
    assert_eq!(r.acctterminatecause.as_deref(), Some(cause));
    let stop = r.acctstoptime.expect("row closed");
    assert!(
        (i64::from(now()) - stop).abs() <= 5,
        "stop time {stop} is now"
    );
}

// --- scenarios through Disconnector with the real application -------------------------------

async fn ack_closes_the_row_with_admin_reset_and_method_coa(backend: Backend) {
    let Some(mut lab) = lab(backend, NasMode::Ack, RosConfig::default()).await else {
        return;
    };
    let (s, session) = lab.open(1).await;
    let d = lab.disc.disconnect(&session).await.expect("disconnected");
    assert_eq!(d.method, Method::Coa);
    assert!(d.row_closed);
    assert_eq!(d.method.as_str(), "coa");

    let got = lab.coa.received();
    assert_eq!(got.len(), 1, "one Disconnect-Request");
    let r = &got[0];
    assert_eq!(r.code, fake_nas::DISCONNECT_REQUEST);
    assert!(r.authenticator_ok, "Request Authenticator verifies");
    assert_eq!(
        r.message_authenticator_ok,
        Some(true),
        "Message-Authenticator"
    );
    assert_eq!(r.attr_str(d::USER_NAME), Some(s.user.clone()));
    assert_eq!(r.attr_str(d::ACCT_SESSION_ID), Some(s.session_id.clone()));
    assert_eq!(r.attr_ipv4(d::FRAMED_IP_ADDRESS), Some(s.framed_ip));
    assert_eq!(r.attr_ipv4(d::NAS_IP_ADDRESS), Some(s.nas_ip));

    let row = lab.row(&s).await;
    assert_closed_at_about_now(&row, "Admin-Reset");
    assert!(!lab.app.index.contains(&s.key()), "gone from the index");
    assert!(lab.ros.sentences().is_empty(), "the API was not needed");
    let st = &lab.stats();
    assert_eq!(st.attempt_count(DisconnectAttempt::CoaAck), 1);
    assert_eq!(
        st.round_trips(radacctd::disconnect::DisconnectMethod::Coa)
            .count(),
        1
    );
    lab.finish().await;
}

async fn silence_falls_back_to_api_print_then_remove(backend: Backend) {
    let Some(mut lab) = lab(backend, NasMode::Silent, router_with(2)).await else {
        return;
    };
    let (s, session) = lab.open(2).await;
    let d = lab.disc.disconnect(&session).await.expect("disconnected");
    assert_eq!(d.method, Method::Api);
    assert!(d.row_closed);
    assert!(
        lab.coa.count() >= 2,
        "the Disconnect-Request was retransmitted"
    );

    let sentences = lab.ros.sentences();
    let cmds: Vec<&str> = sentences.iter().map(|s| s[0].as_str()).collect();
    assert_eq!(
        cmds,
        ["/login", "/ppp/active/print", "/ppp/active/remove"],
        "{sentences:?}"
    );
    let print = &sentences[1];
    assert!(print.contains(&format!("?name={}", s.user)), "{print:?}");
    assert!(print.contains(&"=.proplist=.id,name,address".to_owned()));
    assert!(print.iter().any(|w| w.starts_with(".tag=")), "tagged");
    let remove = &sentences[2];
    assert!(remove.contains(&"=.id=*800002A3".to_owned()), "{remove:?}");
    assert_eq!(
        lab.ros.active(),
        vec![Active::new("*80000001", "someone-else", "10.9.9.9")],
        "only that subscriber was removed"
    );

    assert_closed_at_about_now(&lab.row(&s).await, "Admin-Reset");
    assert!(!lab.app.index.contains(&s.key()));
    let st = &lab.stats();
    assert_eq!(st.attempt_count(DisconnectAttempt::CoaTimeout), 1);
    assert_eq!(st.attempt_count(DisconnectAttempt::ApiRemoved), 1);
    lab.finish().await;
}

async fn nak_503_closes_the_ghost_row_as_already_closed(backend: Backend) {
    let Some(mut lab) = lab(backend, NasMode::Nak(Some(503)), router_with(3)).await else {
        return;
    };
    let (s, session) = lab.open(3).await;
    let d = lab.disc.disconnect(&session).await.expect("answered");
    assert_eq!(d.method, Method::AlreadyClosed);
    assert_eq!(d.method.as_str(), "already_closed");
    assert!(d.row_closed);
    let row = lab.row(&s).await;
    assert_eq!(row.acctterminatecause.as_deref(), Some("Admin-Reset"));
    assert_eq!(
        row.acctstoptime, row.acctstarttime,
        "a ghost stops at its last evidence of life (here its start)"
    );
    assert!(!lab.app.index.contains(&s.key()));
    assert!(lab.ros.sentences().is_empty(), "no fallback after NAK 503");
    lab.finish().await;
}

async fn other_nak_falls_back_to_the_api(backend: Backend) {
    let Some(mut lab) = lab(backend, NasMode::Nak(Some(504)), router_with(4)).await else {
        return;
    };
    let (s, session) = lab.open(4).await;
    let d = lab.disc.disconnect(&session).await.expect("disconnected");
    assert_eq!(d.method, Method::Api);
    assert_eq!(lab.coa.count(), 1, "a NAK is an answer: no retransmission");
    assert_eq!(lab.stats().attempt_count(DisconnectAttempt::CoaNak), 1);
    assert!(!lab.row(&s).await.is_open());
    lab.finish().await;
}

async fn both_paths_down_is_unreachable_and_the_row_stays_open(backend: Backend) {
    let Some(mut lab) = lab(backend, NasMode::Silent, RosConfig::default()).await else {
        return;
    };
    // Nothing listens on the API port.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_port = closed.local_addr().expect("addr").port();
    drop(closed);
    lab.disc.set_nas(&[nas_row(lab.coa.addr.port(), dead_port)]);
    let (s, session) = lab.open(5).await;
    let started = std::time::Instant::now();
    let err = lab
        .disc
        .disconnect(&session)
        .await
        .expect_err("unreachable");
    assert!(matches!(err, DisconnectError::Unreachable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(lab.row(&s).await.is_open(), "left for the sweeper");
    assert!(lab.app.index.contains(&s.key()));
    let st = &lab.stats();
    assert_eq!(st.attempt_count(DisconnectAttempt::CoaTimeout), 1);
    assert_eq!(st.attempt_count(DisconnectAttempt::ApiFailed), 1);
    assert_eq!(
        st.result_count(radacctd::disconnect::DisconnectResult::Unreachable),
        1
    );
    lab.finish().await;
}

async fn ignored_answer_falls_back(backend: Backend, mode: NasMode, reason: CoaIgnoreReason) {
    let Some(mut lab) = lab(backend, mode, router_with(6)).await else {
        return;
    };
    let (s, session) = lab.open(6).await;
    let d = lab.disc.disconnect(&session).await.expect("disconnected");
    assert_eq!(d.method, Method::Api, "the answer counted as silence");
    let st = &lab.stats();
    assert!(st.ignored_count(reason) >= 1, "{reason:?} counted");
    assert_eq!(st.attempt_count(DisconnectAttempt::CoaTimeout), 1);
    assert!(!lab.row(&s).await.is_open());
    lab.finish().await;
}

async fn bad_response_authenticator_is_ignored_as_silence(backend: Backend) {
    ignored_answer_falls_back(
        backend,
        NasMode::BadAuthenticator,
        CoaIgnoreReason::BadAuthenticator,
    )
    .await;
}

async fn bad_message_authenticator_is_ignored_as_silence(backend: Backend) {
    ignored_answer_falls_back(
        backend,
        NasMode::BadMessageAuthenticator,
        CoaIgnoreReason::BadMessageAuthenticator,
    )
    .await;
}

async fn answer_from_another_port_is_ignored_as_silence(backend: Backend) {
    ignored_answer_falls_back(backend, NasMode::WrongPort, CoaIgnoreReason::WrongSource).await;
}

async fn concurrent_disconnects_send_one_request(backend: Backend) {
    let config = DisconnectConfig {
        coa_retry_interval_ms: 1000,
        coa_timeout_ms: 3000,
        ..fast_config()
    };
    let Some(mut lab) = lab_with(backend, NasMode::Ack, RosConfig::default(), config).await else {
        return;
    };
    // A slow NAS keeps the first attempt in flight while the others arrive.
    lab.coa.set_delay(Duration::from_millis(300));
    let (s, session) = lab.open(7).await;
    let calls = (0..8).map(|_| lab.disc.disconnect(&session));
    let results = futures_util::future::join_all(calls).await;
    for r in results {
        let d = r.expect("disconnected");
        assert_eq!(d.method, Method::Coa, "every caller sees the one outcome");
    }
    assert_eq!(lab.coa.count(), 1, "one Disconnect-Request");
    assert_eq!(radacctd::metrics::Stats::get(&lab.stats().coalesced), 7);
    assert!(!lab.row(&s).await.is_open());
    lab.finish().await;
}

async fn repeat_call_is_already_closed_without_a_second_request(backend: Backend) {
    let Some(mut lab) = lab(backend, NasMode::Ack, RosConfig::default()).await else {
        return;
    };
    let (s, session) = lab.open(8).await;
    let first = lab.disc.disconnect(&session).await.expect("first");
    assert_eq!(first.method, Method::Coa);
    let before = lab.row(&s).await;
    for _ in 0..2 {
        let again = lab.disc.disconnect(&session).await.expect("repeat");
        assert_eq!(again.method, Method::AlreadyClosed);
        assert!(!again.row_closed);
    }
    assert_eq!(lab.coa.count(), 1, "no second Disconnect-Request");
    assert_eq!(lab.row(&s).await, before, "the row is unchanged");
    lab.finish().await;
}

async fn legacy_challenge_login_removes_the_session(backend: Backend) {
    let ros = RosConfig {
        legacy_login: true,
        ..router_with(9)
    };
    let Some(mut lab) = lab(backend, NasMode::Silent, ros).await else {
        return;
    };
    let (s, session) = lab.open(9).await;
    let d = lab.disc.disconnect(&session).await.expect("disconnected");
    assert_eq!(d.method, Method::Api);
    let sentences = lab.ros.sentences();
    assert_eq!(sentences[0][0], "/login");
    assert_eq!(sentences[1][0], "/login");
    assert!(
        sentences[1]
            .iter()
            .any(|w| w.starts_with("=response=00") && w.len() == "=response=00".len() + 32),
        "{:?}",
        sentences[1]
    );
    assert_eq!(sentences[2][0], "/ppp/active/print");
    assert_eq!(sentences[3][0], "/ppp/active/remove");
    assert!(!lab.row(&s).await.is_open());
    lab.finish().await;
}

async fn trap_on_remove_is_a_failure(backend: Backend) {
    let ros = RosConfig {
        trap_on_remove: true,
        ..router_with(10)
    };
    let Some(mut lab) = lab(backend, NasMode::Silent, ros).await else {
        return;
    };
    let (s, session) = lab.open(10).await;
    let err = lab.disc.disconnect(&session).await.expect_err("failed");
    let DisconnectError::Unreachable { detail } = &err else {
        panic!("{err:?}");
    };
    assert!(detail.contains("cannot remove"), "{detail}");
    // After the trap the client re-checked with a second print before giving up.
    assert_eq!(
        lab.ros.commands(),
        [
            "/login",
            "/ppp/active/print",
            "/ppp/active/remove",
            "/ppp/active/print"
        ]
    );
    assert!(lab.row(&s).await.is_open());
    assert_eq!(lab.stats().attempt_count(DisconnectAttempt::ApiFailed), 1);
    lab.finish().await;
}

async fn session_missing_on_the_router_closes_the_ghost_row(backend: Backend) {
    let ros = RosConfig {
        empty_reply: true,
        active: vec![Active::new("*1", "someone-else", "10.9.9.9")],
        ..RosConfig::default()
    };
    let Some(mut lab) = lab(backend, NasMode::Silent, ros).await else {
        return;
    };
    let (s, session) = lab.open(11).await;
    let d = lab.disc.disconnect(&session).await.expect("answered");
    assert_eq!(d.method, Method::AlreadyClosed);
    assert_eq!(lab.ros.commands(), ["/login", "/ppp/active/print"]);
    let row = lab.row(&s).await;
    assert!(!row.is_open());
    assert_eq!(row.acctstoptime, row.acctstarttime);
    assert_eq!(lab.stats().attempt_count(DisconnectAttempt::ApiNotFound), 1);
    lab.finish().await;
}

async fn configured_client_secret_is_used_without_nas_row(backend: Backend) {
    let db = match TestDb::new(backend).await {
        Some(db) => db,
        None => return,
    };
    let config = test_config(&db);
    let clients = config.radius.clients.clone();
    let app = TestApp::start(config).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let coa = FakeNas::start(SECRET, NasMode::Ack).await;
    let disc = Disconnector::new(
        DisconnectConfig {
            coa_port: coa.addr.port(),
            ..fast_config()
        },
        &app.ingest,
        app.index.clone(),
        app.stats.clone(),
    )
    .await
    .expect("bind");
    disc.set_clients(&clients);
    let s = sess(12);
    nas.send(&s.start(now() - 60)).await.expect("start");
    let session = app.index.get(&s.key()).expect("indexed");
    let d = disc.disconnect(&session).await.expect("disconnected");
    assert_eq!(d.method, Method::Coa);
    assert!(coa.received()[0].authenticator_ok);
    drop(disc);
    app.stop().await;
}

// --- the CoA client alone -----------------------------------------------------------------

async fn coa_client(budget_ms: u64, retry_ms: u64, sockets: usize) -> CoaClient {
    CoaClient::bind(
        CoaConfig {
            budget: Duration::from_millis(budget_ms),
            retry_interval: Duration::from_millis(retry_ms),
            sockets,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ..CoaConfig::default()
        },
        Arc::new(Stats::default()),
    )
    .await
    .expect("bind")
}

fn request<'a>(user: &'a str, sid: &'a str) -> DisconnectRequest<'a> {
    DisconnectRequest {
        user_name: user,
        acct_session_id: sid,
        framed_ip: Some(Ipv4Addr::new(100, 64, 1, 2)),
        nas_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    }
}

#[tokio::test]
async fn retransmits_the_same_packet_until_answered() {
    let nas = FakeNas::start(SECRET, NasMode::Ack).await;
    nas.drop_next(2);
    let client = coa_client(2000, 150, 1).await;
    let reply = client
        .disconnect(nas.addr, SECRET.as_bytes(), &request("alice", "81a00001"))
        .await
        .expect("sent");
    assert_eq!(reply.outcome, CoaOutcome::Ack);
    // Two lost, the third answered (a fourth only if that answer took over 150 ms).
    assert!(reply.sends >= 3, "{reply:?}");
    let got = nas.received();
    assert_eq!(got.len(), reply.sends as usize);
    assert!(
        got.iter().all(|r| r.bytes == got[0].bytes),
        "a retransmission is the same packet (same identifier and authenticator)"
    );
}

#[tokio::test]
async fn silence_times_out_within_the_budget() {
    let nas = FakeNas::start(SECRET, NasMode::Silent).await;
    let client = coa_client(500, 150, 1).await;
    let t = std::time::Instant::now();
    let reply = client
        .disconnect(nas.addr, SECRET.as_bytes(), &request("bob", "81a00002"))
        .await
        .expect("sent");
    let elapsed = t.elapsed();
    assert_eq!(reply.outcome, CoaOutcome::Timeout);
    assert!(
        elapsed >= Duration::from_millis(480) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    // At 0, 150, 300 and 450 ms; a late timer under load may skip the last one.
    assert!((3..=4).contains(&reply.sends), "{reply:?}");
    assert_eq!(nas.count(), reply.sends as usize);
}

#[tokio::test]
async fn nak_carries_its_error_cause() {
    let nas = FakeNas::start(SECRET, NasMode::Nak(Some(503))).await;
    let client = coa_client(1000, 300, 1).await;
    let reply = client
        .disconnect(nas.addr, SECRET.as_bytes(), &request("carol", "81a00003"))
        .await
        .expect("sent");
    assert_eq!(reply.outcome, CoaOutcome::Nak(Some(503)));
    nas.set_mode(NasMode::Nak(None));
    let reply = client
        .disconnect(nas.addr, SECRET.as_bytes(), &request("carol", "81a00003"))
        .await
        .expect("sent");
    assert_eq!(reply.outcome, CoaOutcome::Nak(None));
}

#[tokio::test]
async fn wrong_secret_gets_no_answer() {
    let nas = FakeNas::start("another-secret", NasMode::Ack).await;
    let client = coa_client(300, 100, 1).await;
    let reply = client
        .disconnect(nas.addr, SECRET.as_bytes(), &request("dave", "81a00004"))
        .await
        .expect("sent");
    assert_eq!(reply.outcome, CoaOutcome::Timeout);
    assert!(nas.received().iter().all(|r| !r.authenticator_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_requests_than_identifiers_all_complete_each_sent_once() {
    // 2 sockets = 512 identifiers for 1,200 concurrent requests: the rest wait for a free one.
    let nas = FakeNas::start(SECRET, NasMode::Ack).await;
    let client = coa_client(10_000, 5_000, 2).await;
    let tasks = (0..1200u32).map(|i| {
        let client = client.clone();
        let addr = nas.addr;
        tokio::spawn(async move {
            let user = format!("user{i}");
            let sid = format!("{i:08x}");
            client
                .disconnect(addr, SECRET.as_bytes(), &request(&user, &sid))
                .await
        })
    });
    for r in futures_util::future::join_all(tasks).await {
        let reply = r.expect("joined").expect("sent");
        assert_eq!(reply.outcome, CoaOutcome::Ack);
        assert_eq!(reply.sends, 1);
    }
    let got = nas.received();
    assert_eq!(got.len(), 1200);
    let mut sids: Vec<String> = got
        .iter()
        .map(|r| r.attr_str(d::ACCT_SESSION_ID).expect("sid"))
        .collect();
    sids.sort();
    sids.dedup();
    assert_eq!(sids.len(), 1200, "none sent twice");
    assert!(got.iter().all(|r| r.authenticator_ok));
}

// --- fidelity of the test NAS and of the codec, against independent implementations ------

#[test]
fn radclient_disconnect_is_acked_by_the_test_nas() {
    use common::freeradius::{RadclientOpts, radclient_available, radclient_with};
    if !common::require(radclient_available(), "radclient (Debian freeradius-utils)") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let nas = rt.block_on(FakeNas::start(SECRET, NasMode::Ack));
    let addr = nas.addr;
    let packet = "User-Name = \"alice\"\nAcct-Session-Id = \"81a00007\"\n\
                  Framed-IP-Address = 100.64.0.7\nNAS-IP-Address = 127.0.0.1\n\
                  Message-Authenticator = 0x00\n";
    let opts = RadclientOpts {
        command: "disconnect".into(),
        retries: 1,
        timeout_secs: 1,
        ..RadclientOpts::default()
    };
    let (ok, out) = radclient_with(addr, SECRET, packet, &opts).expect("radclient runs");
    assert!(ok, "radclient accepted the test NAS's answer:\n{out}");
    assert_eq!(
        common::freeradius::radclient_count_received(&out, "Disconnect-ACK"),
        1,
        "{out}"
    );
    let got = nas.received();
    assert_eq!(got.len(), 1);
    assert!(
        got[0].authenticator_ok,
        "radclient's Request Authenticator verifies at the test NAS"
    );
    assert_eq!(
        got[0].message_authenticator_ok,
        Some(true),
        "radclient's Message-Authenticator verifies at the test NAS"
    );
    assert_eq!(got[0].attr_str(d::USER_NAME).as_deref(), Some("alice"));

    // And radclient rejects what the test NAS signs wrongly, so its acceptance above means
    // something.
    nas.set_mode(NasMode::BadAuthenticator);
    let (ok, out) = radclient_with(addr, SECRET, packet, &opts).expect("radclient runs");
    assert!(
        !ok,
        "radclient must reject a bad Response Authenticator:\n{out}"
    );
    drop(rt);
}

#[test]
fn radclient_coa_is_acked_by_the_test_nas_which_reads_its_vsa() {
    use common::freeradius::{RadclientOpts, radclient_available, radclient_with};
    if !common::require(radclient_available(), "radclient (Debian freeradius-utils)") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let nas = rt.block_on(FakeNas::start(SECRET, NasMode::Ack));
    let addr = nas.addr;
    let packet = "User-Name = \"alice\"\nAcct-Session-Id = \"81a00008\"\n\
                  Framed-IP-Address = 100.64.0.8\nNAS-IP-Address = 127.0.0.1\n\
                  Mikrotik-Rate-Limit = \"10M/20M\"\nSession-Timeout = 3600\n\
                  Message-Authenticator = 0x00\n";
    let opts = RadclientOpts {
        command: "coa".into(),
        retries: 1,
        timeout_secs: 1,
        ..RadclientOpts::default()
    };
    let (ok, out) = radclient_with(addr, SECRET, packet, &opts).expect("radclient runs");
    assert!(ok, "radclient accepted the test NAS's CoA-ACK:\n{out}");
    assert_eq!(
        common::freeradius::radclient_count_received(&out, "CoA-ACK"),
        1,
        "{out}"
    );
    let got = nas.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].code, fake_nas::COA_REQUEST);
    assert!(
        got[0].authenticator_ok,
        "radclient's CoA Request Authenticator verifies at the test NAS"
    );
    assert_eq!(got[0].message_authenticator_ok, Some(true));
    assert_eq!(got[0].attr_str(d::USER_NAME).as_deref(), Some("alice"));
    assert_eq!(got[0].attr_u32(27), Some(3600), "Session-Timeout");
    assert_eq!(
        got[0].vsa_str(14988, 8).as_deref(),
        Some("10M/20M"),
        "Mikrotik-Rate-Limit (vendor 14988, type 8) as radclient encodes it"
    );
    assert_eq!(
        got[0].vsa(14988, 19),
        None,
        "no Mikrotik-Address-List was sent"
    );

    // A NAK is a CoA-NAK carrying the Error-Cause, which radclient reads.
    nas.set_mode(NasMode::Nak(Some(401)));
    let (_, out) = radclient_with(addr, SECRET, packet, &opts).expect("radclient runs");
    assert_eq!(
        common::freeradius::radclient_count_received(&out, "CoA-NAK"),
        1,
        "{out}"
    );
    assert!(out.contains("Unsupported-Attribute"), "{out}");

    // radclient rejects a CoA-ACK the test NAS signs wrongly.
    nas.set_mode(NasMode::BadAuthenticator);
    let (ok, out) = radclient_with(addr, SECRET, packet, &opts).expect("radclient runs");
    assert!(
        !ok,
        "radclient must reject a bad Response Authenticator:\n{out}"
    );
    assert_eq!(
        common::freeradius::radclient_count_received(&out, "CoA-ACK"),
        0,
        "{out}"
    );
    drop(rt);
}

#[test]
fn radius_rs_accepts_our_disconnect_request_and_we_accept_its_ack() {
    use radacctd::radius::codec::Packet;
    use radius::core::code::Code as RrCode;
    use radius::core::packet::Packet as RrPacket;
    use radius::core::{rfc2865, rfc2866};

    let secret = b"s3cr3t-shared";
    let req = request("alice", "81a00009");
    let bytes = req
        .builder(77)
        .expect("fits")
        .encode_request(secret)
        .expect("encodes");
    assert!(
        RrPacket::is_authentic_request(&bytes, secret),
        "radius-rs verifies the Disconnect-Request's Request Authenticator (code 40)"
    );
    assert!(!RrPacket::is_authentic_request(&bytes, b"other"));
    let p = RrPacket::decode(&bytes, secret).expect("radius-rs decodes");
    assert_eq!(p.get_code(), RrCode::DisconnectRequest);
    assert_eq!(p.get_identifier(), 77);
    assert_eq!(
        rfc2865::lookup_user_name(&p)
            .expect("present")
            .expect("text"),
        "alice"
    );
    assert_eq!(
        rfc2866::lookup_acct_session_id(&p)
            .expect("present")
            .expect("text"),
        "81a00009"
    );
    assert_eq!(
        rfc2865::lookup_framed_ip_address(&p)
            .expect("present")
            .expect("ip"),
        Ipv4Addr::new(100, 64, 1, 2)
    );
    assert_eq!(
        rfc2865::lookup_nas_ip_address(&p)
            .expect("present")
            .expect("ip"),
        Ipv4Addr::LOCALHOST
    );
    // radius-rs signs a Disconnect-ACK; our response check accepts it.
    let ack = p
        .make_response_packet(RrCode::DisconnectACK)
        .encode()
        .expect("encodes");
    let ours = Packet::decode(&bytes).expect("decodes");
    let theirs = Packet::decode(&ack).expect("decodes");
    assert!(theirs.verify_response_authenticator(ours.authenticator(), secret));
    assert!(!theirs.verify_response_authenticator(&[0; 16], secret));
}

// --- the RouterOS API client against the test router -------------------------------------

fn creds() -> ApiCredentials {
    ApiCredentials {
        username: "api".into(),
        password: "pw".into(),
    }
}

fn api_timeouts() -> ApiTimeouts {
    ApiTimeouts {
        connect: Duration::from_secs(1),
        reply: Duration::from_millis(500),
        total: Duration::from_secs(3),
    }
}

/// The RouterOS fallback over plaintext API, with the test credentials and timeouts.
async fn plain_disconnect(addr: SocketAddr, user: &str, framed_ip: Option<&str>) -> ApiOutcome {
    disconnect_ppp(
        addr,
        &ApiTransport::Plain,
        &creds(),
        user,
        framed_ip,
        &api_timeouts(),
    )
    .await
}

async fn connected(ros: &FakeRouterOs) -> ApiConnection<tokio::net::TcpStream> {
    let mut c = ApiConnection::connect(ros.addr, &api_timeouts())
        .await
        .expect("connects");
    c.login(&creds()).await.expect("logs in");
    c
}

#[tokio::test]
async fn words_over_127_and_16383_bytes_cross_the_wire_both_ways() {
    let medium = format!("m{}", "e".repeat(199)); // 200 bytes: 2-byte length prefix
    let long = format!("l{}", "o".repeat(19_999)); // 20,000 bytes: 3-byte length prefix
    let ros = FakeRouterOs::start(RosConfig {
        active: vec![
            Active::new("*A1", &medium, "10.0.0.1"),
            Active::new("*A2", &long, "10.0.0.2"),
        ],
        ..RosConfig::default()
    })
    .await;
    let mut c = connected(&ros).await;
    for (name, id) in [(&medium, "*A1"), (&long, "*A2")] {
        let found = c.ppp_active(name).await.expect("print");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, id);
        assert_eq!(
            found[0].name.as_deref(),
            Some(name.as_str()),
            "received whole"
        );
    }
    let sentences = ros.sentences();
    let query = sentences
        .iter()
        .flatten()
        .find(|w| w.starts_with("?name=l"))
        .expect("long query received");
    assert_eq!(query.len(), "?name=".len() + 20_000, "sent whole");
    c.remove_ppp_active(&["*A2".to_owned()])
        .await
        .expect("removed");
    assert_eq!(ros.active().len(), 1);
}

#[tokio::test]
async fn replies_tagged_for_another_command_are_skipped() {
    let ros = FakeRouterOs::start(RosConfig {
        foreign_tag_noise: true,
        split_writes: true,
        ..router_with(20)
    })
    .await;
    let s = sess(20);
    let mut c = connected(&ros).await;
    let found = c.ppp_active(&s.user).await.expect("print");
    assert_eq!(found.len(), 1, "the noise (*DEAD) was not taken: {found:?}");
    assert_eq!(found[0].id, "*800002A3");
    // Tags differ per command.
    let tags: Vec<String> = ros
        .sentences()
        .iter()
        .filter_map(|s| s.iter().find(|w| w.starts_with(".tag=")).cloned())
        .collect();
    assert_eq!(tags.len(), 2);
    assert_ne!(tags[0], tags[1]);
}

#[tokio::test]
async fn command_before_login_gets_fatal() {
    let ros = FakeRouterOs::start(RosConfig::default()).await;
    let mut c = ApiConnection::connect(ros.addr, &api_timeouts())
        .await
        .expect("connects");
    let err = c.call(&["/ppp/active/print"]).await.expect_err("fatal");
    assert_eq!(err, ApiError::Fatal("not logged in".into()));
}

#[tokio::test]
async fn wrong_password_fails_login_for_both_login_styles() {
    for legacy_login in [false, true] {
        let ros = FakeRouterOs::start(RosConfig {
            legacy_login,
            ..RosConfig::default()
        })
        .await;
        let mut c = ApiConnection::connect(ros.addr, &api_timeouts())
            .await
            .expect("connects");
        let err = c
            .login(&ApiCredentials {
                username: "api".into(),
                password: "wrong".into(),
            })
            .await
            .expect_err("refused");
        assert!(matches!(err, ApiError::LoginFailed(_)), "{err:?}");
        // The `!done` after the trap was consumed: the next command's replies line up.
        c.login(&creds()).await.expect("right password works");
    }
}

#[tokio::test]
async fn unknown_command_traps_and_the_connection_stays_in_step() {
    let ros = FakeRouterOs::start(router_with(21)).await;
    let mut c = connected(&ros).await;
    let r = c.call(&["/no/such/thing"]).await.expect("answered");
    assert_eq!(r.traps.len(), 1);
    assert!(r.traps[0].message().contains("no such command"));
    assert!(matches!(r.ok(), Err(ApiError::Trap(_))));
    let found = c.ppp_active(&sess(21).user).await.expect("still in step");
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn hanging_router_hits_the_reply_deadline() {
    let ros = FakeRouterOs::start(RosConfig {
        hang_on_print: true,
        ..router_with(22)
    })
    .await;
    let t = std::time::Instant::now();
    let outcome = plain_disconnect(ros.addr, &sess(22).user, None).await;
    assert!(
        matches!(outcome, ApiOutcome::Failed(ref r) if r.contains("deadline")),
        "{outcome:?}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn entry_vanishing_during_remove_is_not_found() {
    let ros = FakeRouterOs::start(RosConfig {
        vanish_on_remove: true,
        ..router_with(23)
    })
    .await;
    let outcome = plain_disconnect(ros.addr, &sess(23).user, None).await;
    assert_eq!(outcome, ApiOutcome::NotFound);
    assert_eq!(
        ros.commands(),
        [
            "/login",
            "/ppp/active/print",
            "/ppp/active/remove",
            "/ppp/active/print"
        ]
    );
}

#[tokio::test]
async fn only_the_sessions_own_entry_is_removed_when_the_user_has_two() {
    let ros = FakeRouterOs::start(RosConfig {
        active: vec![
            Active::new("*1", "alice", "10.0.0.1"),
            Active::new("*2", "alice", "10.0.0.2"),
        ],
        ..RosConfig::default()
    })
    .await;
    let outcome = plain_disconnect(ros.addr, "alice", Some("10.0.0.2")).await;
    assert_eq!(outcome, ApiOutcome::Removed);
    assert_eq!(ros.active(), vec![Active::new("*1", "alice", "10.0.0.1")]);
    // Without a known address every entry of the user goes, in one remove.
    let outcome = plain_disconnect(ros.addr, "alice", None).await;
    assert_eq!(outcome, ApiOutcome::Removed);
    assert!(ros.active().is_empty());
}

#[tokio::test]
async fn refused_connection_is_a_failure() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = closed.local_addr().expect("addr");
    drop(closed);
    let outcome = plain_disconnect(addr, "alice", None).await;
    assert!(matches!(outcome, ApiOutcome::Failed(_)), "{outcome:?}");
}

// --- RouterOS API-SSL (8729) -----------------------------------------------------------------

/// A test CA and a router certificate it signed, for `router.lab.example` and 127.0.0.1, as an
/// operator makes them for `/ip service set api-ssl certificate=…`.
struct Pki {
    _dir: tempfile::TempDir,
    /// The CA's certificate (PEM), what `disconnect.api_tls_ca_file` names.
    ca_file: std::path::PathBuf,
    /// A CA that signed nothing the router has.
    other_ca_file: std::path::PathBuf,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key_der: Vec<u8>,
}

fn pki() -> Pki {
    let ca = new_ca("radacctd test CA");
    let other = new_ca("some other CA");
    let key = rcgen::KeyPair::generate().expect("router key");
    let mut params =
        rcgen::CertificateParams::new(vec!["router.lab.example".to_owned()]).expect("params");
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let leaf = params.signed_by(&key, &*ca).expect("router certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    let other_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    std::fs::write(&other_ca_file, other.pem()).expect("write CA");
    Pki {
        _dir: dir,
        ca_file,
        other_ca_file,
        chain: vec![leaf.der().clone(), ca.der().clone()],
        key_der: key.serialize_der(),
    }
}

impl Pki {
    /// The router's TLS side; `tls12_only` as RouterOS 6 offers.
    fn acceptor(&self, tls12_only: bool) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider);
        let builder = if tls12_only {
            builder.with_protocol_versions(&[&rustls::version::TLS12])
        } else {
            builder.with_safe_default_protocol_versions()
        }
        .expect("protocol versions");
        let config = builder
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .expect("server certificate");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

use tokio_rustls::rustls;

/// A lab whose router speaks only API-SSL, and whose NAS ignores Disconnect-Requests so that
/// every disconnect goes to the API. `ca_file` is what radacctd trusts.
async fn tls_lab(
    backend: Backend,
    pki: &Pki,
    ca_file: &std::path::Path,
    tls_name: Option<&str>,
    n: u32,
) -> Option<Lab> {
    let config = DisconnectConfig {
        api_tls_ca_file: ca_file.to_owned(),
        ..fast_config()
    };
    let mut lab = lab_with(backend, NasMode::Silent, RosConfig::default(), config).await?;
    lab.ros = FakeRouterOs::start_tls(router_with(n), pki.acceptor(false)).await;
    lab.disc.set_nas(&[NasRow {
        api_tls: true,
        api_tls_name: tls_name.map(str::to_owned),
        ..nas_row(lab.coa.addr.port(), lab.ros.addr.port())
    }]);
    Some(lab)
}

async fn api_ssl_fallback_verifies_the_router_and_removes_the_session(backend: Backend) {
    let pki = pki();
    let Some(mut lab) = tls_lab(backend, &pki, &pki.ca_file, None, 60).await else {
        return;
    };
    let (s, session) = lab.open(60).await;
    let d = lab.disc.disconnect(&session).await.expect("disconnected");
    assert_eq!(d.method, Method::Api);
    let cmds = lab.ros.commands();
    assert_eq!(
        cmds,
        ["/login", "/ppp/active/print", "/ppp/active/remove"],
        "the commands arrived inside TLS"
    );
    assert_eq!(lab.ros.tls_failures(), 0);
    assert_closed_at_about_now(&lab.row(&s).await, "Admin-Reset");
    assert!(!lab.app.index.contains(&s.key()));
    lab.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_ssl_with_an_untrusted_certificate_is_unreachable_and_sends_nothing() {
    let pki = pki();
    let Some(mut lab) = tls_lab(Backend::Sqlite, &pki, &pki.other_ca_file, None, 61).await else {
        return;
    };
    let (s, session) = lab.open(61).await;
    let err = lab.disc.disconnect(&session).await.expect_err("refused");
    let DisconnectError::Unreachable { detail } = &err else {
        panic!("{err:?}");
    };
    assert!(
        detail.contains("TLS handshake") && detail.contains("certificate"),
        "{detail}"
    );
    // The router notices the refused handshake when our alert arrives.
    for _ in 0..200 {
        if lab.ros.tls_failures() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lab.ros.tls_failures(), 1, "the handshake was refused");
    assert!(lab.ros.sentences().is_empty(), "no credentials were sent");
    assert!(lab.row(&s).await.is_open(), "left for the sweeper");
    assert_eq!(lab.stats().attempt_count(DisconnectAttempt::ApiFailed), 1);
    lab.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_ssl_checks_the_configured_certificate_name() {
    let pki = pki();
    // The router's certificate names router.lab.example: that name passes…
    let Some(mut lab) = tls_lab(
        Backend::Sqlite,
        &pki,
        &pki.ca_file,
        Some("router.lab.example"),
        62,
    )
    .await
    else {
        return;
    };
    let (_, session) = lab.open(62).await;
    let d = lab.disc.disconnect(&session).await.expect("disconnected");
    assert_eq!(d.method, Method::Api);

    // …and another name fails, although the CA is trusted.
    lab.ros.configure(|c| *c = router_with(63));
    lab.disc.set_nas(&[NasRow {
        api_tls: true,
        api_tls_name: Some("core.lab.example".into()),
        ..nas_row(lab.coa.addr.port(), lab.ros.addr.port())
    }]);
    let (s, session) = lab.open(63).await;
    let err = lab.disc.disconnect(&session).await.expect_err("wrong name");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    assert!(lab.row(&s).await.is_open());
    lab.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_ssl_without_a_usable_ca_bundle_never_falls_back_to_plaintext() {
    let pki = pki();
    let missing = pki.ca_file.with_file_name("missing.pem");
    let Some(mut lab) = tls_lab(Backend::Sqlite, &pki, &missing, None, 64).await else {
        return;
    };
    let (s, session) = lab.open(64).await;
    let err = lab.disc.disconnect(&session).await.expect_err("no CA");
    let DisconnectError::Unreachable { detail } = &err else {
        panic!("{err:?}");
    };
    assert!(detail.contains("missing.pem"), "names the file: {detail}");
    assert_eq!(lab.ros.connections(), 0, "not even a TCP connection");
    assert!(lab.row(&s).await.is_open());
    lab.finish().await;
}

#[tokio::test]
async fn api_ssl_client_speaks_tls12_to_a_routeros6_style_router() {
    let pki = pki();
    let ros = FakeRouterOs::start_tls(
        RosConfig {
            active: vec![Active::new("*7", "alice", "10.0.0.7")],
            ..RosConfig::default()
        },
        pki.acceptor(true),
    )
    .await;
    let transport = ApiTransport::Tls {
        connector: radacctd::disconnect::mikrotik::tls_connector(&pki.ca_file).expect("CA"),
        server_name: rustls::pki_types::ServerName::IpAddress(
            IpAddr::V4(Ipv4Addr::LOCALHOST).into(),
        ),
    };
    let outcome = disconnect_ppp(
        ros.addr,
        &transport,
        &creds(),
        "alice",
        Some("10.0.0.7"),
        &api_timeouts(),
    )
    .await;
    assert_eq!(outcome, ApiOutcome::Removed);
    assert!(ros.active().is_empty());
    // A plaintext client against the TLS service gets an error, not a hang.
    let plain = plain_disconnect(ros.addr, "alice", None).await;
    assert!(matches!(plain, ApiOutcome::Failed(_)), "{plain:?}");
}

#[test]
fn tls_connector_rejects_a_file_without_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("empty.pem");
    std::fs::write(&path, "not a certificate\n").expect("write");
    let Err(err) = radacctd::disconnect::mikrotik::tls_connector(&path) else {
        panic!("a file without certificates was accepted");
    };
    assert!(err.contains("empty.pem"), "{err}");
}
