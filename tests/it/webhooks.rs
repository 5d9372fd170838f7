//! Webhooks (docs/WEBHOOKS.md) against real stores and a receiver on a loopback port: every
//! event delivered in id order through failures, timeouts, restarts and kill -9; duplicates
//! only of batches the receiver did not acknowledge; types filtering; endpoints independent;
//! the signature as a receiver checks it; https with the endpoint's CA bundle.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use radacctd::config::{Config, Secret, WebhookConfig};
use radacctd::events::{EventType, NewEvent};
use radacctd::store::Store;
use radacctd::stream::webhooks::{DEFAULT_TOLERANCE, VerifyError, verify};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::common::{
    Backend, TestApp, TestDb, daemon, free_port_tcp, free_port_udp, new_ca, scrape, signal,
    test_config, value, wait_until,
};

both_stores!(
    a_receiver_that_fails_times_out_and_recovers_gets_every_batch_in_order,
    types_are_filtered_and_a_dead_endpoint_does_not_hold_up_another,
    the_cursor_survives_a_restart_and_a_new_endpoint_starts_from_now,
    events_committed_before_a_kill_9_are_delivered_after_the_restart,
);

const SECRET: &str = "a-webhook-secret-of-some-length";

/// What the receiver answers to one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// 200.
    Ok,
    /// This status, at once.
    Status(u16),
    /// 200, but only after this long (past radacctd's timeout).
    Hang(Duration),
}

impl Reply {
    fn acknowledges(self) -> bool {
        match self {
            Reply::Ok => true,
            Reply::Status(s) => (200..300).contains(&s),
            Reply::Hang(_) => false,
        }
    }
}

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    timestamp: String,
    signature: String,
    event_ids: String,
    content_type: String,
    body: Bytes,
    /// Whether the receiver answered it with a 2xx in time.
    acknowledged: bool,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn ids(&self) -> Vec<i64> {
        self.json()["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["id"].as_i64().expect("id"))
            .collect()
    }

    fn types(&self) -> Vec<String> {
        self.json()["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["type"].as_str().expect("type").to_owned())
            .collect()
    }

    fn verify(&self, secret: &str, now: i64) -> Result<(), VerifyError> {
        verify(
            secret.as_bytes(),
            &self.timestamp,
            &self.signature,
            &self.body,
            now,
            DEFAULT_TOLERANCE,
        )
    }
}

#[derive(Debug)]
struct Script {
    /// Answers for the next requests, in order; then `otherwise`.
    replies: VecDeque<Reply>,
    otherwise: Reply,
    received: Vec<Received>,
}

/// An HTTP (or HTTPS) receiver recording raw bodies and headers, answering from a script.
struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    accept: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Receiver {
    async fn start(replies: &[Reply], otherwise: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Receiver::serve(listener, None, replies, otherwise)
    }

    fn serve(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        replies: &[Reply],
        otherwise: Reply,
    ) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let script = Arc::new(Mutex::new(Script {
            replies: replies.iter().copied().collect(),
            otherwise,
            received: Vec::new(),
        }));
        let shared = script.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (script, tls) = (shared.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(tcp).await {
                                serve_connection(TokioIo::new(stream), script).await;
                            }
                        }
                        None => serve_connection(TokioIo::new(tcp), script).await,
                    }
                });
            }
        });
        Receiver {
            addr,
            script,
            accept,
        }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/hooks/radacctd?token=t", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().expect("lock").received.clone()
    }

    /// The ids of the acknowledged batches, in the order received.
    fn acknowledged_ids(&self) -> Vec<i64> {
        self.received()
            .iter()
            .filter(|r| r.acknowledged)
            .flat_map(Received::ids)
            .collect()
    }
}

async fn serve_connection<I>(io: I, script: Arc<Mutex<Script>>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let script = script.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(req, &script).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    script: &Mutex<Script>,
) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (timestamp, signature, event_ids, content_type) = (
        header("X-Radacctd-Timestamp"),
        header("X-Radacctd-Signature"),
        header("X-Radacctd-Event-Ids"),
        header("Content-Type"),
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = {
        let mut s = script.lock().expect("lock");
        let reply = s.replies.pop_front().unwrap_or(s.otherwise);
        s.received.push(Received {
            timestamp,
            signature,
            event_ids,
            content_type,
            body,
            acknowledged: reply.acknowledges(),
        });
        reply
    };
    let status = match reply {
        Reply::Ok => 200,
        Reply::Status(s) => s,
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            200
        }
    };
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("response")
}

fn hook(name: &str, url: &str) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url: url.into(),
        secret: Secret::new(SECRET),
        types: Vec::new(),
        batch_size: 10,
        timeout_secs: 1,
        max_backoff_secs: 1,
        // Read for https URLs only; the TLS test names its own.
        ca_file: PathBuf::from("/nonexistent/ca.pem"),
    }
}

fn config(db: &TestDb, hooks: Vec<WebhookConfig>) -> Config {
    let mut c = test_config(db);
    c.events.poll_interval_ms = 100;
    // The jobs leader (who delivers) starts its jobs 3/10 of this after taking the lock.
    c.jobs.leader_takeover_secs = 1;
    c.events.webhooks = hooks;
    c
}

const TYPES: [EventType; 4] = [
    EventType::SessionStarted,
    EventType::SessionStopped,
    EventType::NasRebooted,
    EventType::SessionCoa,
];

fn event(n: i64, kind: EventType) -> NewEvent {
    NewEvent {
        kind,
        time: 1_700_000_000 + n,
        username: format!("u{n}"),
        nasipaddress: "10.0.0.1".into(),
        acctuniqueid: format!("k{n}"),
        radacctid: Some(n),
        data: format!(r#"{{"n":{n}}}"#),
    }
}

/// Appends events `range` (types in turn from `TYPES`) in transactions of `per_commit`.
async fn append(store: &Store, range: std::ops::Range<i64>, per_commit: usize) {
    let events: Vec<NewEvent> = range
        .map(|n| event(n, TYPES[n as usize % TYPES.len()]))
        .collect();
    for chunk in events.chunks(per_commit) {
        store.add_events(chunk).await.expect("add events");
    }
}

/// Until the endpoint has its cursor (its task started); then events appended are its.
async fn wait_for_cursor(store: &Store, name: &str) -> i64 {
    for _ in 0..300 {
        // Errors too until the daemon has created the tables.
        if let Ok(Some(c)) = store.webhook_cursor(name).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the endpoint {name} never started");
}

/// Until the receiver acknowledged `n` events (at most `limit`).
async fn wait_for_acknowledged(receiver: &Receiver, n: usize, limit: Duration) {
    let done = wait_until(limit, || receiver.acknowledged_ids().len() >= n).await;
    assert!(
        done,
        "acknowledged {} of {n} events: {:?}",
        receiver.acknowledged_ids().len(),
        receiver
            .received()
            .iter()
            .map(|r| (r.event_ids.clone(), r.acknowledged))
            .collect::<Vec<_>>()
    );
}

/// The receiver's view of one endpoint's stream: every request signed and labelled, the
/// acknowledged batches exactly `expected` in order, and every other request a repeat of the
/// batch before it (a retry of what was not acknowledged).
fn assert_delivered_in_order(receiver: &Receiver, expected: &[i64]) {
    let received = receiver.received();
    let now = radacctd::clock::now_secs();
    for r in &received {
        assert_eq!(
            r.verify(SECRET, now),
            Ok(()),
            "signature of {}",
            r.event_ids
        );
        assert_eq!(r.content_type, "application/json");
        let ids = r.ids();
        assert_eq!(
            r.event_ids,
            format!("{}-{}", ids[0], ids[ids.len() - 1]),
            "X-Radacctd-Event-Ids"
        );
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order: {ids:?}");
    }
    assert_eq!(receiver.acknowledged_ids(), expected);
    // Every request carries the events that follow the last acknowledged ones; one that was
    // not acknowledged is sent again as it was.
    let mut next = 0;
    for (i, r) in received.iter().enumerate() {
        let ids = r.ids();
        assert_eq!(
            ids,
            expected[next..next + ids.len()],
            "request {i}: the events after the acknowledged ones"
        );
        match r.acknowledged {
            true => next += ids.len(),
            false => {
                if let Some(retry) = received.get(i + 1) {
                    assert_eq!(retry.body, r.body, "request {i}: a retry is the same batch");
                }
            }
        }
    }
}

async fn a_receiver_that_fails_times_out_and_recovers_gets_every_batch_in_order(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let hang = Reply::Hang(Duration::from_secs(3));
    let receiver = Receiver::start(
        &[
            Reply::Status(500),
            Reply::Status(503),
            Reply::Status(404),
            hang,
            hang,
        ],
        Reply::Ok,
    )
    .await;
    let app = TestApp::start(config(&db, vec![hook("billing", &receiver.url("http"))])).await;
    assert_eq!(wait_for_cursor(&app.store, "billing").await, 0);
    append(&app.store, 0..95, 7).await;
    wait_for_acknowledged(&receiver, 95, Duration::from_secs(60)).await;
    assert_delivered_in_order(&receiver, &(1..=95).collect::<Vec<_>>());
    let received = receiver.received();
    assert!(received.len() >= 10 + 5, "{} requests", received.len());
    assert_eq!(
        received[0].json()["endpoint"],
        "billing",
        "the body names the endpoint"
    );
    assert!(
        cursor_reaches(&app.store, "billing", 95, Duration::from_secs(5)).await,
        "the cursor is the last id acknowledged"
    );
    let m = scrape(app.metrics_addr.expect("metrics")).await;
    let deliveries = |outcome: &str| {
        value(
            &m,
            &format!(
                "radacctd_webhook_deliveries_total{{endpoint=\"billing\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(deliveries("http_error"), 3.0);
    assert_eq!(deliveries("timeout"), 2.0);
    assert_eq!(deliveries("connect_error"), 0.0);
    let acknowledged = received.iter().filter(|r| r.acknowledged).count();
    assert_eq!(deliveries("ok"), acknowledged as f64);
    assert_eq!(
        value(&m, "radacctd_webhook_cursor{endpoint=\"billing\"}"),
        95.0
    );
    assert_eq!(
        value(&m, "radacctd_webhook_backlog_events{endpoint=\"billing\"}"),
        0.0
    );
    assert_eq!(
        value(&m, "radacctd_webhook_lag_seconds{endpoint=\"billing\"}"),
        0.0
    );
    app.stop().await;
}

/// Until the endpoint's stored cursor is `want` (at most `limit`); whether it got there.
async fn cursor_reaches(store: &Store, name: &str, want: i64, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if store.webhook_cursor(name).await.expect("cursor") == Some(want) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn types_are_filtered_and_a_dead_endpoint_does_not_hold_up_another(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    // The dead endpoint accepts connections and never answers within its 30 s timeout; the
    // other must not wait for it.
    let dead = Receiver::start(&[], Reply::Hang(Duration::from_secs(3600))).await;
    let live = Receiver::start(&[], Reply::Ok).await;
    let mut dead_hook = hook("dead", &dead.url("http"));
    dead_hook.timeout_secs = 30;
    let mut live_hook = hook("stops", &live.url("http"));
    live_hook.types = vec!["session.stopped".into(), "nas.rebooted".into()];
    live_hook.batch_size = 4;
    let app = TestApp::start(config(&db, vec![dead_hook, live_hook])).await;
    wait_for_cursor(&app.store, "dead").await;
    wait_for_cursor(&app.store, "stops").await;
    // 3,000 events, mostly of other types: the filtered endpoint reads past them in pages.
    append(&app.store, 0..3_000, 500).await;
    // Events n = 1, 2 (mod 4) are stopped and nas.rebooted; id = n + 1.
    let wanted: Vec<i64> = (0..3_000i64)
        .filter(|n| matches!(n % 4, 1 | 2))
        .map(|n| n + 1)
        .collect();
    wait_for_acknowledged(&live, wanted.len(), Duration::from_secs(20)).await;
    assert_delivered_in_order(&live, &wanted);
    for r in live.received() {
        assert!(r.ids().len() <= 4, "batch_size");
        assert!(
            r.types()
                .iter()
                .all(|t| t == "session.stopped" || t == "nas.rebooted"),
            "{:?}",
            r.types()
        );
    }
    // The last event (id 3,000, a CoA) is not the endpoint's, but its cursor passes it.
    assert!(
        cursor_reaches(&app.store, "stops", 3_000, Duration::from_secs(10)).await,
        "the cursor passes skipped events"
    );
    // All the while the dead endpoint has had its first batch, unanswered.
    assert!(wait_until(Duration::from_secs(5), || !dead.received().is_empty()).await);
    assert_eq!(
        dead.received().len(),
        1,
        "one try, still waiting for its answer"
    );
    assert_eq!(dead.received()[0].ids(), (1..=10).collect::<Vec<_>>());
    assert_eq!(
        app.store.webhook_cursor("dead").await.expect("cursor"),
        Some(0)
    );
    let m = scrape(app.metrics_addr.expect("metrics")).await;
    assert_eq!(
        value(&m, "radacctd_webhook_backlog_events{endpoint=\"dead\"}"),
        3_000.0
    );
    assert!(value(&m, "radacctd_webhook_lag_seconds{endpoint=\"dead\"}") >= 0.0);
    assert_eq!(
        value(&m, "radacctd_webhook_backlog_events{endpoint=\"stops\"}"),
        0.0
    );
    app.stop().await;
}

async fn the_cursor_survives_a_restart_and_a_new_endpoint_starts_from_now(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let receiver = Receiver::start(&[], Reply::Ok).await;
    let c = config(&db, vec![hook("billing", &receiver.url("http"))]);
    // Events numbered before the endpoint existed are not its.
    {
        let store = db.open_store().await;
        store.migrate().await.expect("migrate");
        append(&store, 0..3, 3).await;
        store
            .sequence_events(100, radacctd::clock::now_secs())
            .await
            .expect("number");
    }
    let app = TestApp::start(c.clone()).await;
    assert_eq!(wait_for_cursor(&app.store, "billing").await, 3);
    append(&app.store, 3..23, 5).await;
    wait_for_acknowledged(&receiver, 20, Duration::from_secs(20)).await;
    app.stop().await;
    let store = db.open_store().await;
    assert_eq!(
        store.webhook_cursor("billing").await.expect("cursor"),
        Some(23)
    );
    let before = receiver.received().len();
    let app = TestApp::start(c).await;
    append(&app.store, 23..28, 5).await;
    wait_for_acknowledged(&receiver, 25, Duration::from_secs(20)).await;
    assert_delivered_in_order(&receiver, &(4..=28).collect::<Vec<_>>());
    assert!(
        receiver.received()[before..]
            .iter()
            .all(|r| r.ids()[0] > 23),
        "nothing acknowledged is sent again after a clean restart"
    );
    app.stop().await;
}

async fn events_committed_before_a_kill_9_are_delivered_after_the_restart(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    // The receiver's port, with nothing listening on it until after the kill.
    let port = free_port_tcp();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let hooks = format!(
        r#"[{{name = "billing", url = "{url}", secret = "{SECRET}", timeout_secs = 1, max_backoff_secs = 1}}]"#
    );
    let start = || {
        let mut cmd = daemon(&db, free_port_udp(), free_port_tcp());
        cmd.env("RADACCTD__EVENTS__WEBHOOKS", &hooks)
            .env("RADACCTD__EVENTS__POLL_INTERVAL_MS", "100")
            .env("RADACCTD__JOBS__LEADER_TAKEOVER_SECS", "1")
            .env("RADACCTD__JOBS__ENSURE_INDEXES", "false");
        cmd.spawn().expect("daemon starts")
    };
    let mut first = start();
    let store = db.open_store().await;
    assert_eq!(wait_for_cursor(&store, "billing").await, 0);
    append(&store, 0..40, 8).await;
    // Numbered by the daemon and offered to the endpoint, which is down.
    let mut numbered = false;
    for _ in 0..500 {
        numbered = store.event_bounds().await.expect("bounds").1 == 40;
        if numbered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(numbered, "the daemon numbers the events");
    signal(first.id().expect("pid"), "KILL");
    first.wait().await.expect("killed");
    // Committed while no daemon runs: still in the queue, not numbered.
    append(&store, 40..50, 5).await;
    assert_eq!(store.queued_events().await.expect("queued"), 10);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let receiver = Receiver::serve(listener, None, &[], Reply::Ok);
    let mut second = start();
    wait_for_acknowledged(&receiver, 50, Duration::from_secs(30)).await;
    assert_delivered_in_order(&receiver, &(1..=50).collect::<Vec<_>>());
    signal(second.id().expect("pid"), "TERM");
    let _ = tokio::time::timeout(Duration::from_secs(30), second.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_request_verifies_and_a_tampered_or_replayed_one_does_not() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let receiver = Receiver::start(&[], Reply::Ok).await;
    let app = TestApp::start(config(&db, vec![hook("billing", &receiver.url("http"))])).await;
    wait_for_cursor(&app.store, "billing").await;
    append(&app.store, 0..3, 3).await;
    wait_for_acknowledged(&receiver, 3, Duration::from_secs(20)).await;
    app.stop().await;
    let r = receiver.received().remove(0);
    let now = radacctd::clock::now_secs();
    assert_eq!(r.verify(SECRET, now), Ok(()));
    assert_eq!(
        r.verify("not-the-webhook-secret-at-all", now),
        Err(VerifyError::Mismatch)
    );
    let mut changed = r.clone();
    changed.body = Bytes::from(
        String::from_utf8(r.body.to_vec())
            .expect("utf-8")
            .replace("\"u0\"", "\"u9\""),
    );
    assert_ne!(changed.body, r.body);
    assert_eq!(changed.verify(SECRET, now), Err(VerifyError::Mismatch));
    // The same request replayed six minutes later.
    let sent: i64 = r.timestamp.parse().expect("timestamp");
    assert!(matches!(
        r.verify(SECRET, sent + 360),
        Err(VerifyError::OutsideTolerance { skew: 360 })
    ));
    // A replay with a fresh timestamp and the old signature.
    let mut fresh = r.clone();
    fresh.timestamp = (sent + 360).to_string();
    assert_eq!(fresh.verify(SECRET, sent + 360), Err(VerifyError::Mismatch));
    let mut malformed = r.clone();
    malformed.signature = r.signature.replace("v1=", "sha256=");
    assert_eq!(
        malformed.verify(SECRET, now),
        Err(VerifyError::MalformedSignature)
    );
    malformed.signature = format!("v1={}", &r.signature[3..40]);
    assert_eq!(
        malformed.verify(SECRET, now),
        Err(VerifyError::MalformedSignature)
    );
    let mut malformed = r.clone();
    malformed.timestamp = format!("{sent}.5");
    assert_eq!(
        malformed.verify(SECRET, now),
        Err(VerifyError::MalformedTimestamp)
    );
}

/// A CA and a certificate it signed for 127.0.0.1, served by `acceptor`; in `dir`, `ca.pem`
/// (that CA) and `other-ca.pem` (one that signed nothing here).
struct Pki {
    dir: tempfile::TempDir,
    acceptor: TlsAcceptor,
}

fn pki() -> Pki {
    use tokio_rustls::rustls;
    let ca = new_ca("webhook test CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names.push(rcgen::SanType::IpAddress(
        std::net::Ipv4Addr::LOCALHOST.into(),
    ));
    let leaf = params.signed_by(&key, &*ca).expect("certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
    std::fs::write(dir.path().join("other-ca.pem"), new_ca("other CA").pem()).expect("write CA");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone(), ca.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("server certificate");
    Pki {
        dir,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_is_trusted_through_its_ca_file() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let receiver = Receiver::serve(listener, Some(pki.acceptor.clone()), &[], Reply::Ok);
    // The same server, but radacctd trusts another CA there.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let untrusted = Receiver::serve(listener, Some(pki.acceptor.clone()), &[], Reply::Ok);
    let mut trusted = hook("tls", &receiver.url("https"));
    trusted.ca_file = pki.dir.path().join("ca.pem");
    let mut other = hook("other-ca", &untrusted.url("https"));
    other.ca_file = pki.dir.path().join("other-ca.pem");
    let app = TestApp::start(config(&db, vec![trusted, other])).await;
    wait_for_cursor(&app.store, "tls").await;
    wait_for_cursor(&app.store, "other-ca").await;
    append(&app.store, 0..12, 4).await;
    wait_for_acknowledged(&receiver, 12, Duration::from_secs(20)).await;
    assert_delivered_in_order(&receiver, &(1..=12).collect::<Vec<_>>());
    let m = scrape(app.metrics_addr.expect("metrics")).await;
    assert!(
        value(
            &m,
            "radacctd_webhook_deliveries_total{endpoint=\"other-ca\",outcome=\"connect_error\"}"
        ) >= 1.0,
        "a certificate from an untrusted CA is a connection failure"
    );
    assert!(untrusted.received().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_with_an_unreadable_ca_file_fails_start_up() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let mut h = hook("tls", "https://127.0.0.1:9/hooks");
    h.ca_file = PathBuf::from("/nonexistent/ca.pem");
    let err = radacctd::app::Application::build(config(&db, vec![h]))
        .await
        .expect_err("start-up fails");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("events.webhooks \"tls\"") && msg.contains("/nonexistent/ca.pem"),
        "{msg}"
    );
}

/// Two nodes on one PostgreSQL: only the jobs leader delivers; when it stops, the other takes
/// over from the cursor, and the receiver gets every event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_jobs_leader_delivers_and_the_next_one_resumes_from_the_cursor() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let receiver = Receiver::start(&[], Reply::Ok).await;
    let node = |name: &str| {
        let mut c = config(&db, vec![hook("billing", &receiver.url("http"))]);
        c.node.name = name.into();
        c
    };
    let a = TestApp::start(node("a")).await;
    wait_for_cursor(&a.store, "billing").await;
    let b = TestApp::start(node("b")).await;
    append(&a.store, 0..30, 6).await;
    wait_for_acknowledged(&receiver, 30, Duration::from_secs(20)).await;
    let deliveries = |m: &std::collections::BTreeMap<String, f64>| {
        value(
            m,
            "radacctd_webhook_deliveries_total{endpoint=\"billing\",outcome=\"ok\"}",
        )
    };
    let (ma, mb) = (
        scrape(a.metrics_addr.expect("metrics")).await,
        scrape(b.metrics_addr.expect("metrics")).await,
    );
    assert!(deliveries(&ma) >= 1.0, "the leader delivers");
    assert_eq!(deliveries(&mb), 0.0, "the follower does not");
    a.stop().await;
    append(&b.store, 30..60, 6).await;
    wait_for_acknowledged(&receiver, 60, Duration::from_secs(20)).await;
    assert_delivered_in_order(&receiver, &(1..=60).collect::<Vec<_>>());
    let acknowledged = receiver
        .received()
        .iter()
        .filter(|r| r.acknowledged)
        .count();
    assert_eq!(
        receiver.received().len(),
        acknowledged,
        "a clean handover sends nothing twice"
    );
    let mb = scrape(b.metrics_addr.expect("metrics")).await;
    assert!(deliveries(&mb) >= 1.0, "the new leader delivers");
    b.stop().await;
}
