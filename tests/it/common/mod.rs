//! Test support: a fresh database per test (a SQLite file or a new PostgreSQL database), the
//! real application on port 0, and a small NAS that speaks RADIUS over real UDP.

pub mod api;
pub mod fake_nas;
pub mod fake_routeros;
pub mod freeradius;
pub mod proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use radacctd::app::Application;
use radacctd::config::{ClientConfig, Config, Secret};
use radacctd::metrics::Stats;
use radacctd::radius::codec::{Code, Packet, PacketBuilder};
use radacctd::radius::dictionary as d;
use radacctd::sessions::{Row, SessionIndex};
use radacctd::store::Store;
use sqlx::Connection;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "testing123";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The admin URL tests create their databases from (`RADACCTD_TEST_DATABASE_URL`; unset or
/// empty: the local default).
pub fn pg_admin_url() -> String {
    std::env::var("RADACCTD_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns false) on a developer machine without `what`; fails under CI.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if in_ci() {
        panic!("{what} is required when CI=true");
    }
    eprintln!("skipping: {what} is not available (set CI=true to make this a failure)");
    false
}

/// Replaces the database name of a PostgreSQL URL (keeps any `?host=` socket parameter).
pub fn pg_url_with_db(admin: &str, db: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut url = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database of its own for one test, dropped afterwards.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// `None` when the backend is unavailable outside CI.
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("radacctd.db").display());
                Some(TestDb {
                    backend,
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let admin = pg_admin_url();
                let conn = tokio::time::timeout(
                    Duration::from_secs(10),
                    sqlx::PgConnection::connect(&admin),
                )
                .await;
                let mut conn = match conn {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        require(false, &format!("PostgreSQL at {admin} ({e})"));
                        return None;
                    }
                    Err(_) => {
                        require(false, &format!("PostgreSQL at {admin} (timeout)"));
                        return None;
                    }
                };
                let name = format!(
                    "radacctd_t_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.subsec_nanos())
                        .unwrap_or(0)
                );
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                Some(TestDb {
                    backend,
                    url: pg_url_with_db(&admin, &name),
                    pg_name: Some(name),
                    _dir: None,
                })
            }
        }
    }

    /// Runs SQL text (several statements allowed) on this database.
    pub async fn exec(&self, sql: &str) {
        let store = self.open_store().await;
        match &store {
            Store::Postgres(s) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(s.pool())
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Store::Sqlite(s) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(s.pool())
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
        store.close().await;
    }

    /// The single integer `sql` (a `SELECT count(*) …`) answers.
    pub async fn count(&self, sql: &str) -> i64 {
        let store = self.open_store().await;
        let n = match &store {
            Store::Postgres(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(s.pool())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Store::Sqlite(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(s.pool())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        };
        store.close().await;
        n
    }

    /// A store on this database (a separate pool from the application's).
    pub async fn open_store(&self) -> Store {
        open_store(&self.url, 2, Duration::from_secs(5)).await
    }

    /// Every radacct row, by key.
    pub async fn rows(&self) -> Vec<Row> {
        let store = self.open_store().await;
        let keys: Vec<String> = match &store {
            Store::Postgres(s) => {
                sqlx::query_scalar("SELECT acctuniqueid FROM radacct ORDER BY radacctid")
                    .fetch_all(s.pool())
                    .await
                    .expect("keys")
            }
            Store::Sqlite(s) => {
                sqlx::query_scalar("SELECT acctuniqueid FROM radacct ORDER BY radacctid")
                    .fetch_all(s.pool())
                    .await
                    .expect("keys")
            }
        };
        let mut out = Vec::new();
        for k in keys {
            out.push(store.row_by_key(&k).await.expect("row").expect("exists"));
        }
        store.close().await;
        out
    }

    /// The open rows as the database has them, sorted by key.
    pub async fn open_rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self.rows().await.into_iter().filter(Row::is_open).collect();
        rows.sort_by(|a, b| a.acctuniqueid.cmp(&b.acctuniqueid));
        rows
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let admin = pg_admin_url();
        // Drop runs inside the test's runtime; use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                }
            });
        })
        .join();
    }
}

/// The configuration tests run the daemon with.
pub fn test_config(db: &TestDb) -> Config {
    let mut c = Config::default();
    c.database.url = Secret::new(db.url.clone());
    c.radius.listen = "127.0.0.1:0".parse().expect("addr");
    c.radius.recv_buffer_bytes = 1 << 20;
    c.radius.commit_timeout_secs = 5;
    c.api.listen = "127.0.0.1:0".parse().expect("addr");
    c.metrics.listen = "127.0.0.1:0".parse().expect("addr");
    // Jobs run only where a test drives them (`run_once`), so nothing races the assertions.
    c.jobs.sweep_enabled = false;
    c.jobs.archive_enabled = false;
    c.jobs.ensure_indexes = false;
    c.reconcile.enabled = false;
    // The accounting-core tests check that a failed commit gets no answer; the reliability
    // tests turn the journal on (in a temp dir) where they need it.
    c.journal.enabled = false;
    c.radius.clients = vec![ClientConfig {
        address: "127.0.0.1".parse().expect("addr"),
        secret: Secret::new(SECRET),
        name: Some("test-nas".into()),
    }];
    c
}

/// A running application: its listeners' addresses, its state, and an HTTP client for its API
/// (the request helpers are in `api.rs`).
pub struct TestApp {
    /// The RADIUS accounting listener.
    pub radius_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// `/metrics`, when the configuration enables it (`api::api_config` does not).
    pub metrics_addr: Option<SocketAddr>,
    pub stats: Arc<Stats>,
    pub index: Arc<SessionIndex>,
    pub store: Store,
    /// A sender into the writer's queue; dropped first on `stop`.
    pub ingest: radacctd::ingest::IngestSender,
    /// The last event id this node's sequencer gave or learned.
    pub events_numbered: radacctd::stream::Numbered,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub async fn start(config: Config) -> TestApp {
        let app = Application::build(config)
            .await
            .expect("application builds");
        let shutdown = CancellationToken::new();
        TestApp {
            radius_addr: app.radius_addr(),
            api_addr: app.api_addr(),
            metrics_addr: app.metrics_addr(),
            stats: app.stats(),
            index: app.index(),
            store: app.store(),
            ingest: app.ingest(),
            events_numbered: app.events_numbered(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            task: tokio::spawn(app.run_until_stopped(shutdown.clone())),
            shutdown,
        }
    }

    /// Graceful stop; panics if the daemon failed or took more than 30 s.
    pub async fn stop(self) {
        let TestApp {
            ingest,
            shutdown,
            task,
            ..
        } = self;
        drop(ingest);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("stops in time")
            .expect("task joins")
            .expect("daemon exits cleanly");
    }
}

/// A free UDP port on 127.0.0.1 (bound to port 0 and released).
pub fn free_port_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port()
}

/// A free TCP port on 127.0.0.1 (bound to port 0 and released).
pub fn free_port_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port()
}

/// The real binary, `radacctd serve` on these ports (the API on an ephemeral one), jobs and the
/// journal off; killed when dropped. Later `.env` calls override these settings.
pub fn daemon(db: &TestDb, radius: u16, metrics: u16) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_radacctd"));
    cmd.arg("serve")
        .env("RADACCTD__DATABASE__URL", &db.url)
        .env("RADACCTD__RADIUS__LISTEN", format!("127.0.0.1:{radius}"))
        .env("RADACCTD__API__LISTEN", "127.0.0.1:0")
        .env("RADACCTD__METRICS__LISTEN", format!("127.0.0.1:{metrics}"))
        .env("RADACCTD__JOURNAL__ENABLED", "false")
        .env("RADACCTD__JOBS__SWEEP_ENABLED", "false")
        .env("RADACCTD__JOBS__ARCHIVE_ENABLED", "false")
        .env("RADACCTD__LOG__LEVEL", "warn")
        .kill_on_drop(true);
    cmd
}

/// Sends `kill -<sig>` to a process (the daemon a test started).
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A NAS on a real UDP socket.
pub struct Nas {
    pub socket: UdpSocket,
    pub server: SocketAddr,
    pub secret: Vec<u8>,
    next_id: u8,
}

impl Nas {
    pub async fn new(server: SocketAddr) -> Nas {
        Nas::with_secret(server, SECRET).await
    }

    pub async fn with_secret(server: SocketAddr, secret: &str) -> Nas {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        Nas {
            socket,
            server,
            secret: secret.as_bytes().to_vec(),
            next_id: 0,
        }
    }

    /// Signs an Accounting-Request with the next identifier.
    pub fn request(&mut self, attrs: &[Attr]) -> Vec<u8> {
        self.next_id = self.next_id.wrapping_add(1);
        build_request(self.next_id, &self.secret, attrs)
    }

    /// Sends raw bytes and waits up to `wait` for a response.
    pub async fn exchange(&self, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
        self.socket.send_to(bytes, self.server).await.expect("send");
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// Sends a request and returns the verified Accounting-Response, if any.
    pub async fn send(&mut self, attrs: &[Attr]) -> Option<Vec<u8>> {
        let req = self.request(attrs);
        self.send_bytes(&req).await
    }

    pub async fn send_bytes(&self, req: &[u8]) -> Option<Vec<u8>> {
        let resp = self.exchange(req, Duration::from_secs(3)).await?;
        let p = Packet::decode(&resp).expect("response decodes");
        let rq = Packet::decode(req).expect("request decodes");
        assert_eq!(p.code(), Code::AccountingResponse);
        assert_eq!(p.identifier(), rq.identifier());
        assert!(
            p.verify_response_authenticator(rq.authenticator(), &self.secret),
            "response authenticator verifies"
        );
        Some(resp)
    }
}

/// An attribute for a test packet.
#[derive(Debug, Clone)]
pub enum Attr {
    Str(u8, String),
    U32(u8, u32),
    Ip(u8, std::net::Ipv4Addr),
    Raw(u8, Vec<u8>),
}

pub fn build_request(id: u8, secret: &[u8], attrs: &[Attr]) -> Vec<u8> {
    let mut b = PacketBuilder::new(Code::AccountingRequest, id);
    for a in attrs {
        match a {
            Attr::Str(t, v) => b.attr(*t, v.as_bytes()),
            Attr::U32(t, v) => b.attr_u32(*t, *v),
            Attr::Ip(t, v) => b.attr_ipv4(*t, *v),
            Attr::Raw(t, v) => b.attr(*t, v),
        }
        .expect("attribute fits");
    }
    b.encode_request(secret).expect("encodes")
}

/// A store with its own pool on `url` (lazy: nothing connects until it is used).
pub async fn open_store(url: &str, max_connections: u32, acquire_timeout: Duration) -> Store {
    Store::open(
        url,
        &radacctd::store::StoreOptions {
            max_connections,
            acquire_timeout,
            ..Default::default()
        },
    )
    .await
    .expect("open store")
}

/// The writer's queue holding these Accounting-Requests, parsed as if received from the lab
/// NAS 192.0.2.10, and closed behind them (so the writer stops once it has done them all).
pub fn queued_events(packets: &[Vec<Attr>]) -> radacctd::ingest::IngestReceiver {
    let steps: Vec<Queued> = packets.iter().cloned().map(Queued::Packet).collect();
    queued(&steps)
}

/// One item for the writer's queue.
#[derive(Debug, Clone)]
pub enum Queued {
    /// An Accounting-Request (see [`queued_events`]).
    Packet(Vec<Attr>),
    /// radacctd's own close (the stale sweeper's when `if_updated_before` is set).
    Close {
        key: String,
        stop_time: Option<i64>,
        cause: String,
        if_updated_before: Option<i64>,
    },
}

/// The writer's queue holding these items in order, closed behind them.
pub fn queued(steps: &[Queued]) -> radacctd::ingest::IngestReceiver {
    use radacctd::radius::accounting::{Parsed, parse};
    let (tx, rx) = radacctd::ingest::queue(steps.len().max(1));
    for (id, step) in steps.iter().enumerate() {
        let item = match step {
            Queued::Packet(attrs) => {
                let bytes = build_request(id as u8, SECRET.as_bytes(), attrs);
                let packet = Packet::decode(&bytes).expect("decodes");
                let nas = "192.0.2.10".parse().expect("ip");
                let Parsed::Event(event) = parse(&packet, nas, i64::from(now()), 86_400) else {
                    panic!("an accounting event");
                };
                radacctd::ingest::Item::Event { event, reply: None }
            }
            Queued::Close {
                key,
                stop_time,
                cause,
                if_updated_before,
            } => radacctd::ingest::Item::Close(
                radacctd::ingest::CloseRequest::new(
                    key.clone(),
                    *stop_time,
                    cause.clone(),
                    *if_updated_before,
                )
                .0,
            ),
        };
        tx.try_send(item).expect("queued");
    }
    rx
}

/// What a test needs to drive the ingest writer directly: a store, its live index and the
/// writer's stats, kept across runs so that a test can look at them in between.
pub struct TestWriter {
    pub store: Store,
    pub index: Arc<SessionIndex>,
    pub stats: Arc<Stats>,
}

impl TestWriter {
    /// An empty index and fresh stats over `store`.
    pub fn new(store: Store) -> TestWriter {
        TestWriter {
            store,
            index: Arc::new(SessionIndex::new()),
            stats: Arc::new(Stats::default()),
        }
    }

    /// A writer over these (no responder, no reseller resolver).
    pub fn writer(
        &self,
        max_batch: usize,
        commit_timeout: Duration,
        replay_interval: Duration,
    ) -> radacctd::ingest::Writer {
        radacctd::ingest::Writer::new(
            self.store.clone(),
            self.index.clone(),
            Arc::new(()),
            None,
            self.stats.clone(),
            radacctd::ingest::WriterOptions {
                max_batch,
                commit_timeout,
                replay_interval,
                radacct_fillfactor: None,
                events: Default::default(),
            },
        )
    }

    /// Runs a writer (no journal) until `queue` is drained.
    pub async fn run(
        &self,
        queue: radacctd::ingest::IngestReceiver,
        max_batch: usize,
        commit_timeout: Duration,
    ) {
        self.writer(max_batch, commit_timeout, Duration::from_secs(1))
            .run(queue)
            .await;
    }
}

/// A subscriber session as a MikroTik BNG reports it.
#[derive(Debug, Clone)]
pub struct Sess {
    pub user: String,
    pub session_id: String,
    pub nas_ip: std::net::Ipv4Addr,
    pub nas_identifier: String,
    pub port_id: String,
    pub framed_ip: std::net::Ipv4Addr,
    pub mac: String,
}

impl Sess {
    pub fn new(n: u32) -> Sess {
        Sess {
            user: format!("user{n}@example.lb"),
            session_id: format!("{:08x}", 0x8a3f_0000 + n),
            nas_ip: "192.0.2.10".parse().expect("ip"),
            nas_identifier: "bng-lab-1".into(),
            port_id: format!("ether{}", 2 + n % 4),
            framed_ip: std::net::Ipv4Addr::from(0x0a40_0000 + n),
            mac: format!("AA:BB:CC:DD:{:02X}:{:02X}", (n >> 8) & 0xff, n & 0xff),
        }
    }

    pub fn on_nas(mut self, ip: &str) -> Sess {
        self.nas_ip = ip.parse().expect("ip");
        self
    }

    /// The acctuniqueid FreeRADIUS computes for this session.
    pub fn key(&self) -> String {
        use md5::Digest;
        let s = format!(
            "{},{},{},{},{},",
            self.user, self.session_id, self.nas_ip, self.nas_identifier, self.port_id
        );
        radacctd::radius::accounting::hex(&md5::Md5::digest(s.as_bytes()))
    }

    fn base(&self, status: u32) -> Vec<Attr> {
        vec![
            Attr::U32(d::ACCT_STATUS_TYPE, status),
            Attr::Str(d::USER_NAME, self.user.clone()),
            Attr::Str(d::ACCT_SESSION_ID, self.session_id.clone()),
            Attr::Ip(d::NAS_IP_ADDRESS, self.nas_ip),
            Attr::Str(d::NAS_IDENTIFIER, self.nas_identifier.clone()),
            Attr::Str(d::NAS_PORT_ID, self.port_id.clone()),
            Attr::U32(d::NAS_PORT_TYPE, 15),
            Attr::U32(d::SERVICE_TYPE, 2),
            Attr::U32(d::FRAMED_PROTOCOL, 1),
            Attr::Str(d::CALLING_STATION_ID, self.mac.clone()),
            Attr::Str(d::CALLED_STATION_ID, "pppoe-service".into()),
            Attr::U32(d::ACCT_AUTHENTIC, 1),
            Attr::Ip(d::FRAMED_IP_ADDRESS, self.framed_ip),
        ]
    }

    pub fn start(&self, at: u32) -> Vec<Attr> {
        let mut a = self.base(d::STATUS_START);
        a.push(Attr::U32(d::EVENT_TIMESTAMP, at));
        a
    }

    pub fn interim(&self, at: u32, session_time: u32, input: u64, output: u64) -> Vec<Attr> {
        let mut a = self.base(d::STATUS_INTERIM_UPDATE);
        a.push(Attr::U32(d::EVENT_TIMESTAMP, at));
        a.extend(counters(session_time, input, output));
        a
    }

    pub fn stop(
        &self,
        at: u32,
        session_time: u32,
        input: u64,
        output: u64,
        cause: u32,
    ) -> Vec<Attr> {
        let mut a = self.base(d::STATUS_STOP);
        a.push(Attr::U32(d::EVENT_TIMESTAMP, at));
        a.extend(counters(session_time, input, output));
        a.push(Attr::U32(d::ACCT_TERMINATE_CAUSE, cause));
        a
    }
}

fn counters(session_time: u32, input: u64, output: u64) -> Vec<Attr> {
    vec![
        Attr::U32(d::ACCT_SESSION_TIME, session_time),
        Attr::U32(d::ACCT_INPUT_OCTETS, input as u32),
        Attr::U32(d::ACCT_INPUT_GIGAWORDS, (input >> 32) as u32),
        Attr::U32(d::ACCT_OUTPUT_OCTETS, output as u32),
        Attr::U32(d::ACCT_OUTPUT_GIGAWORDS, (output >> 32) as u32),
    ]
}

/// An Accounting-On/Off for a NAS.
pub fn nas_onoff(nas_ip: &str, status: u32, at: u32) -> Vec<Attr> {
    vec![
        Attr::U32(d::ACCT_STATUS_TYPE, status),
        Attr::Ip(d::NAS_IP_ADDRESS, nas_ip.parse().expect("ip")),
        Attr::Str(d::ACCT_SESSION_ID, "00000000".into()),
        Attr::U32(d::EVENT_TIMESTAMP, at),
    ]
}

/// Seconds since the epoch, now.
pub fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// `secs` seconds ago, but not before today's first second (UTC): traffic a test sends from
/// there to now falls within today, also when it runs just after midnight (usage by `today`,
/// fair-use by the day). The test configurations allow the later timestamps this can give.
pub fn within_today(secs: u32) -> u32 {
    let now = now();
    (now - secs).max(now - now % 86_400 + 1)
}

/// Polls `f` every 10 ms until it holds or `limit` has passed; returns whether it held.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (up to 5 s) until `f` holds; returns whether it did.
pub async fn eventually(f: impl FnMut() -> bool) -> bool {
    wait_until(Duration::from_secs(5), f).await
}

/// Opens `sessions` on node `a`, then has both nodes (`a` and `b`) receive 12 interims of each,
/// at once and alternately: each node gets every interim (a NAS failing over, retrying the
/// other), and the node that sends first alternates. The interims start 5 minutes after `t0`
/// and are 5 minutes apart; interim `step` carries `step × 1,000,003` input octets and half
/// that output.
pub async fn interims_on_two_nodes(a: SocketAddr, b: SocketAddr, sessions: &[Sess], t0: u32) {
    let mut to_a = Nas::new(a).await;
    for s in sessions {
        to_a.send(&s.start(t0)).await.expect("start");
    }
    let mut tasks = Vec::new();
    for (n, addr) in [a, b].into_iter().enumerate() {
        let sessions = sessions.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut nas = Nas::new(addr).await;
            for step in 1..=12u32 {
                for s in &sessions {
                    if (step + n as u32).is_multiple_of(2) {
                        tokio::task::yield_now().await;
                    }
                    let t = t0 + step * 300;
                    let bytes = u64::from(step) * 1_000_003;
                    nas.send(&s.interim(t, step * 300, bytes, bytes / 2)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
}

/// How many row writes these nodes had refused (another node had changed the row) and redid
/// under locks (`metrics::ROW_SOURCES`: index, new, read, redone).
pub fn rows_redone(nodes: &[&TestApp]) -> u64 {
    nodes
        .iter()
        .map(|n| n.stats.row_sources[3].load(Ordering::Relaxed))
        .sum()
}

/// Opens session `n` on the NAS 127.0.0.1 by a real Accounting-Request to `app`; the session
/// and its radacctid.
pub async fn open_session(app: &TestApp, n: u32) -> (Sess, i64) {
    let mut nas = Nas::new(app.radius_addr).await;
    let s = Sess::new(n).on_nas("127.0.0.1");
    nas.send(&s.start(now() - 60)).await.expect("start");
    let id = app
        .index
        .get(&s.key())
        .expect("open")
        .radacctid
        .expect("id");
    (s, id)
}

/// A self-signed CA named `name`, to sign test certificates with.
pub fn new_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("CA key"))
        .expect("CA certificate")
}

/// The runtime of a synchronous test that drives the application (a property test's cases):
/// multi-threaded with two workers, as `#[tokio::test]`s here run.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A property-test runner for `cases` cases, persisting no failures to files.
pub fn property_runner(cases: u32) -> proptest::test_runner::TestRunner {
    proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })
}

/// Runs a test body once per store.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}

/// Runs a synchronous test body, `fn run(backend: Backend)` in the calling module, once per
/// store: tests `sqlite` and `postgres`.
#[macro_export]
macro_rules! both_stores_sync {
    ($run:ident) => {
        #[test]
        fn sqlite() {
            $run($crate::common::Backend::Sqlite);
        }

        #[test]
        fn postgres() {
            $run($crate::common::Backend::Postgres);
        }
    };
}

/// Scrapes `/metrics` into `series (name{labels}) → value`.
pub async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    parse_exposition(&text)
}

pub fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// One series of a scrape; panics, listing what there is, when it is missing.
pub fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| {
        panic!(
            "{series} missing from /metrics: {:?}",
            m.keys().collect::<Vec<_>>()
        )
    })
}
