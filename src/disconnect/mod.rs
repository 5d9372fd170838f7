//! Disconnecting a subscriber (docs/ARCHITECTURE.md#disconnect): an RFC 5176 Disconnect-Request
//! first ([`coa`]), the MikroTik RouterOS API as the fallback ([`mikrotik`]), and the row closed
//! through the single writer once the NAS has proved the session gone. It never writes SQL or
//! touches the index itself: every change goes through the writer's queue
//! (docs/ARCHITECTURE.md#invariants).
//!
//! Outcomes:
//! - Disconnect-ACK → close (`Admin-Reset`, stop = now), method `coa`.
//! - Disconnect-NAK with Error-Cause 503, or no such `/ppp/active` entry on the router → the
//!   row is a ghost: close it, method `already_closed`. A ghost's stop time is its last
//!   update (else its start), the last evidence that it lived, as the stale sweeper does; its
//!   cause is [`GHOST_CAUSE`] (`Admin-Reset`: the close was an administrator's decision).
//! - Timeout or another NAK → the RouterOS API when the NAS has API credentials: removed →
//!   close as for an ACK, method `api`.
//! - Both fail → [`DisconnectError::Refused`] when the NAS answered with a NAK (the API says
//!   which Error-Cause), else [`DisconnectError::Unreachable`]; the row stays open for the
//!   sweeper.
//!
//! Concurrent calls for one session share one attempt (one Disconnect-Request), which runs in
//! its own task so that a caller going away never leaves a NAS-confirmed disconnect unrecorded.
//! With a store attached ([`Disconnector::set_action_log`]) every attempt is written to the
//! action log, and on PostgreSQL concurrent calls on different nodes share one attempt too
//! ([`cluster`]).

mod change;
mod cluster;
pub mod coa;
pub mod confirm;
pub mod mikrotik;
pub mod stats;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;

use crate::clock::now_secs;
use crate::config::ClientConfig;
pub use crate::config::DisconnectConfig;
use crate::metrics::Stats;
use crate::net::{AddrTable, ClientAddr};
use crate::queue::{CloseRequest, IngestSender, Item};
use crate::radius::dictionary::ERROR_CAUSE;
use crate::sessions::{Session, SessionIndex};
use crate::store::{NasRow, Store, StoreError};

pub use change::{Change, ChangeError, Changed, change_refusal_message};
pub use coa::{
    AttrValue, ChangeAttr, CoaClient, CoaConfig, CoaError, CoaOutcome, CoaReply, DisconnectRequest,
};
pub use mikrotik::{ApiCredentials, ApiOutcome, ApiTimeouts, ApiTransport};
pub use stats::{
    CoaIgnoreReason, DisconnectAttempt, DisconnectMethod, DisconnectResult, DisconnectStats,
    RoundTrips,
};

/// Terminate cause of a row closed after the NAS confirmed the disconnect.
pub const CLOSE_CAUSE: &str = "Admin-Reset";
/// Terminate cause of a ghost row (the NAS says the session does not exist).
pub const GHOST_CAUSE: &str = "Admin-Reset";

/// The CoA client settings these values give.
pub fn coa_config(config: &DisconnectConfig) -> CoaConfig {
    CoaConfig {
        budget: Duration::from_millis(config.coa_timeout_ms),
        retry_interval: Duration::from_millis(config.coa_retry_interval_ms),
        sockets: config.coa_sockets,
        bind: config.coa_bind,
        ..CoaConfig::default()
    }
}

/// The RouterOS API deadlines these values give.
pub fn api_timeouts(config: &DisconnectConfig) -> ApiTimeouts {
    ApiTimeouts {
        connect: Duration::from_millis(config.api_connect_timeout_ms),
        reply: Duration::from_millis(config.api_reply_timeout_ms),
        total: Duration::from_millis(config.api_timeout_ms),
    }
}

/// How a disconnect succeeded: the `method` of the HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The NAS acknowledged the Disconnect-Request.
    Coa,
    /// The RouterOS API removed the session.
    Api,
    /// The session was already gone (not in the index, NAK 503, or not on the router).
    AlreadyClosed,
}

impl Method {
    /// `"coa"`, `"api"` or `"already_closed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Coa => "coa",
            Method::Api => "api",
            Method::AlreadyClosed => "already_closed",
        }
    }
}

/// A successful disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected {
    pub method: Method,
    /// Whether this disconnect closed the row. False when it was closed meanwhile (the NAS's
    /// own Stop came first), when the session was not open, or when the close could not be
    /// committed (logged; the NAS's Stop or the sweeper closes it later).
    pub row_closed: bool,
    /// From the call to the outcome.
    pub elapsed: Duration,
}

/// A failed disconnect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectError {
    /// No answer to the Disconnect-Request (or none could be sent), and the RouterOS API did
    /// not disconnect the session either; the row stays open. HTTP: 503 `NAS unreachable`.
    /// `detail` is for logs, not for clients.
    #[error("NAS unreachable: {detail}")]
    Unreachable { detail: String },
    /// The NAS answered the Disconnect-Request with a Disconnect-NAK (other than Error-Cause
    /// 503), and the RouterOS API, if the NAS has credentials, did not disconnect the session
    /// either; the row stays open. HTTP: 503 with [`refusal_message`]. `detail` is for logs.
    #[error("{}: {detail}", refusal_message(*error_cause))]
    Refused {
        /// The NAK's Error-Cause, if it carried one.
        error_cause: Option<u32>,
        detail: String,
    },
    /// The disconnect task ended without a result (a bug). HTTP: 500.
    #[error("disconnect failed: {0}")]
    Internal(String),
}

/// What the API tells a client whose disconnect the NAS refused: the Error-Cause the NAS
/// answered, by number and FreeRADIUS dictionary name, e.g.
/// `NAS refused the disconnect: Error-Cause 402 (Missing-Attribute)`.
pub fn refusal_message(error_cause: Option<u32>) -> String {
    nak_message("disconnect", "Disconnect-NAK", error_cause)
}

/// `NAS refused the <what>: Error-Cause <n> (<name>)`, or `… <nak> without Error-Cause`: the
/// message of a refused disconnect or CoA change.
fn nak_message(what: &str, nak: &str, error_cause: Option<u32>) -> String {
    match error_cause {
        Some(c) => match crate::radius::dictionary::value_name(ERROR_CAUSE, c) {
            Some(name) => format!("NAS refused the {what}: Error-Cause {c} ({name})"),
            None => format!("NAS refused the {what}: Error-Cause {c}"),
        },
        None => format!("NAS refused the {what}: {nak} without Error-Cause"),
    }
}

/// What gave an attempt's outcome: the action log's `method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The Disconnect-Request (also when it could not be sent and there was no fallback).
    Coa,
    /// The RouterOS API (it was tried last).
    Api,
    /// Nothing was sent.
    None,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Coa => "coa",
            Via::Api => "api",
            Via::None => "none",
        }
    }
}

/// The close a disconnect outcome asks the writer for.
struct Close {
    method: Method,
    /// What gave the outcome (the action log's `method`).
    via: Via,
    /// `None`: the row's last update (a ghost's last evidence of life).
    stop_time: Option<i64>,
    cause: &'static str,
}

impl Close {
    fn new(method: Method, via: Via, stop_time: Option<i64>, cause: &'static str) -> Close {
        Close {
            method,
            via,
            stop_time,
            cause,
        }
    }
}

/// A NAS as the disconnect paths need it.
#[derive(Clone)]
struct NasInfo {
    /// The `nas` row's id.
    id: i64,
    name: String,
    secret: Option<Arc<[u8]>>,
    coa_port: Option<u16>,
    api_port: Option<u16>,
    api: Option<ApiCredentials>,
    /// API-SSL, with the name the certificate must carry (`None`: the address).
    tls: Option<Option<String>>,
}

/// A router whose RouterOS API radacctd may use: a `nas` row with API credentials and one
/// address (a row naming a CIDR block is no router to log in to).
#[derive(Debug, Clone)]
pub struct ApiRouter {
    /// The `nas` row's id.
    pub nas_id: i64,
    /// Its `shortname`.
    pub name: String,
    /// The NAS's address: what its sessions carry as NAS-IP-Address.
    pub nas_ip: IpAddr,
    /// Where its API listens.
    pub addr: SocketAddr,
    pub creds: ApiCredentials,
    /// Plain or TLS; `Err`: why API-SSL cannot be used (never a fall back to plaintext).
    pub transport: Result<ApiTransport, String>,
}

/// Everything known to disconnect a session of one NAS address.
struct Target {
    name: String,
    secret: Option<Arc<[u8]>>,
    coa: SocketAddr,
    /// Address, login and transport (`Err`: why API-SSL cannot be used).
    api: Option<(SocketAddr, ApiCredentials, Result<ApiTransport, String>)>,
}

type Shared = Option<Result<Disconnected, DisconnectError>>;

/// An attempt's outcome, what gave it, and whether its action log row is taken care of (the
/// writer records it with the close it asked for).
struct Attempt {
    result: Result<Disconnected, DisconnectError>,
    via: Via,
    logged: bool,
}

struct Inner {
    coa: CoaClient,
    /// Weak, so that a disconnect in progress never keeps the writer from shutting down.
    ingest: tokio::sync::mpsc::WeakSender<Item>,
    /// Read to answer `already_closed` for sessions no longer open, so a repeat call never
    /// sends a second Disconnect-Request.
    index: Arc<SessionIndex>,
    /// `nas` rows: secret, ports, API credentials. Replaced whole on reload.
    nas: RwLock<Arc<AddrTable<Arc<NasInfo>>>>,
    /// Secrets of configured clients, used when a NAS has no `nas` row.
    clients: RwLock<Arc<AddrTable<Arc<[u8]>>>>,
    /// API-SSL client (trusting `api_tls_ca_file`), or why there is none. Loaded with the
    /// `nas` rows when one of them has `api_tls`.
    tls: RwLock<Option<Result<TlsConnector, String>>>,
    /// Disconnects in flight by acctuniqueid; guards no `.await`.
    inflight: Mutex<HashMap<String, watch::Receiver<Shared>>>,
    /// CoA changes in flight by acctuniqueid, with the change they send; guards no `.await`.
    changes: Mutex<HashMap<String, change::InFlight>>,
    /// The store the action log is written to (and, on PostgreSQL, attempts are coordinated
    /// through); unset: neither.
    actions: OnceLock<Store>,
    /// This node's name, for the action log.
    node: String,
    config: DisconnectConfig,
    stats: Arc<DisconnectStats>,
    /// Whether each NAS's RouterOS API answered.
    health: Arc<crate::nas::NasHealth>,
}

/// Disconnects sessions; cheap to clone and share (an `Arc` inside).
#[derive(Clone)]
pub struct Disconnector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Disconnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disconnector")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Removes a session's in-flight entry when its task ends, panics included.
struct InflightEntry {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for InflightEntry {
    fn drop(&mut self) {
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl Disconnector {
    /// Binds the CoA sockets. `ingest` is the writer's queue (kept as a weak handle), `index`
    /// the live index, `stats` where attempts are counted. The NAS directory starts empty:
    /// call [`Disconnector::set_nas`] / [`Disconnector::reload_nas`] and
    /// [`Disconnector::set_clients`].
    pub async fn new(
        config: DisconnectConfig,
        ingest: &IngestSender,
        index: Arc<SessionIndex>,
        stats: Arc<Stats>,
    ) -> std::io::Result<Disconnector> {
        let coa = CoaClient::bind(coa_config(&config), stats.clone()).await?;
        let node = stats.node().name().to_owned();
        let health = crate::nas::NasHealth::of(&stats);
        let stats = DisconnectStats::of(&stats);
        Ok(Disconnector {
            inner: Arc::new(Inner {
                coa,
                ingest: ingest.downgrade(),
                index,
                nas: RwLock::new(Arc::new(AddrTable::default())),
                clients: RwLock::new(Arc::new(AddrTable::default())),
                tls: RwLock::new(None),
                inflight: Mutex::new(HashMap::new()),
                changes: Mutex::new(HashMap::new()),
                actions: OnceLock::new(),
                node,
                config,
                stats,
                health,
            }),
        })
    }

    /// Writes every attempt to `store`'s action log (`session_actions`) from now on and, on
    /// PostgreSQL, coordinates attempts with the other nodes sharing the database
    /// (docs/ARCHITECTURE.md#disconnect). Only the first call takes effect.
    pub fn set_action_log(&self, store: Store) {
        if self.inner.actions.set(store).is_err() {
            tracing::debug!("the disconnect action log was already set");
        }
    }

    /// The dictionary attributes a CoA change may carry in its `attributes` list
    /// (`disconnect.coa_attributes`).
    pub fn coa_attributes(&self) -> &[String] {
        &self.inner.config.coa_attributes
    }

    /// The CoA client (its socket addresses, for tests and logs).
    pub fn coa_client(&self) -> &CoaClient {
        &self.inner.coa
    }

    /// Replaces the NAS directory with these `nas` rows. A row whose `nasname` is neither an
    /// address nor a CIDR block is skipped (use [`Disconnector::reload_nas`] to resolve names).
    pub fn set_nas(&self, rows: &[NasRow]) {
        self.install_nas(rows, &HashMap::new());
    }

    /// Re-reads the `nas` table, resolving host names, and replaces the directory.
    pub async fn reload_nas(&self, store: &Store) -> Result<(), StoreError> {
        let rows = store.nas_rows().await?;
        let mut resolved = HashMap::new();
        for row in &rows {
            if row.nasname.parse::<ClientAddr>().is_ok() {
                continue;
            }
            match tokio::net::lookup_host((row.nasname.as_str(), 0)).await {
                Ok(addrs) => {
                    resolved.insert(row.nasname.clone(), addrs.map(|a| a.ip()).collect());
                }
                Err(e) => tracing::warn!(
                    nas = %row.nasname,
                    error = %e,
                    "nas row not usable for disconnect: not an address, block or resolvable name"
                ),
            }
        }
        self.install_nas(&rows, &resolved);
        Ok(())
    }

    /// The routers with RouterOS API credentials in the directory (one per address), by
    /// `nas` id then address.
    pub fn api_routers(&self) -> Vec<ApiRouter> {
        let table = self
            .inner
            .nas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut routers: Vec<ApiRouter> = table
            .hosts()
            .filter_map(|(nas_ip, info)| {
                let target = self.inner.target(nas_ip);
                let (api_addr, creds, transport) = target.api?;
                Some(ApiRouter {
                    nas_id: info.id,
                    name: info.name.clone(),
                    nas_ip,
                    addr: api_addr,
                    creds,
                    transport,
                })
            })
            .collect();
        routers.sort_by_key(|r| (r.nas_id, r.nas_ip));
        routers
    }

    /// The RouterOS API deadlines (`[disconnect]`), which reconciliation uses too.
    pub fn api_timeouts(&self) -> ApiTimeouts {
        api_timeouts(&self.inner.config)
    }

    /// Secrets of the configured clients, for NASes without a `nas` row.
    pub fn set_clients(&self, clients: &[ClientConfig]) {
        let mut table = AddrTable::default();
        for c in clients {
            table.add(c.address, Arc::from(c.secret.expose().as_bytes()));
        }
        *self
            .inner
            .clients
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    /// Reloads the `nas` table every `every` until `cancel` (failures are logged and the
    /// previous directory kept).
    pub async fn run_refresh(self, store: Store, every: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.reload_nas(&store).await {
                        tracing::warn!(error = %e, "could not reload the nas table for disconnect");
                    }
                }
            }
        }
    }

    /// Disconnects `session` (docs/ARCHITECTURE.md#disconnect; see the module documentation for the
    /// outcomes). A session no longer in the index answers `already_closed` without contacting the
    /// NAS; concurrent calls for the same `acctuniqueid` share one attempt and one result.
    pub async fn disconnect(&self, session: &Session) -> Result<Disconnected, DisconnectError> {
        self.disconnect_as(session, None).await
    }

    /// [`Disconnector::disconnect`] on behalf of `actor` (the API token's subject), who is
    /// named in the action log when this call makes the attempt (a call that joins an attempt
    /// in flight is not logged separately).
    pub async fn disconnect_as(
        &self,
        session: &Session,
        actor: Option<&str>,
    ) -> Result<Disconnected, DisconnectError> {
        let started = Instant::now();
        let key = session.acctuniqueid.to_string();
        let mut rx = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(rx) = inflight.get(&key) {
                self.inner.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                rx.clone()
            } else {
                // Checked under the in-flight lock: an attempt that closed the row removed
                // its entry only after the index changed, so this cannot miss it.
                let Some(current) = self.inner.index.get(&key) else {
                    drop(inflight);
                    self.inner.stats.result(DisconnectResult::AlreadyClosed);
                    return Ok(Disconnected {
                        method: Method::AlreadyClosed,
                        row_closed: false,
                        elapsed: started.elapsed(),
                    });
                };
                let (tx, rx) = watch::channel(None);
                inflight.insert(key.clone(), rx.clone());
                let entry = InflightEntry {
                    inner: self.inner.clone(),
                    key,
                };
                let inner = self.inner.clone();
                let actor = actor.map(str::to_owned);
                tokio::spawn(async move {
                    let (result, answered) = inner.coordinated(&current, actor).await;
                    // Counted once in the cluster: by the node that made the attempt.
                    if answered == cluster::Answered::Here {
                        inner.stats.result(match &result {
                            Ok(d) => match d.method {
                                Method::Coa => DisconnectResult::Coa,
                                Method::Api => DisconnectResult::Api,
                                Method::AlreadyClosed => DisconnectResult::AlreadyClosed,
                            },
                            Err(_) => DisconnectResult::Unreachable,
                        });
                    }
                    // Leave the in-flight map first: a later call then finds the index
                    // already changed (or, after a failure, tries again).
                    drop(entry);
                    tx.send_replace(Some(result));
                });
                rx
            }
        };
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| {
            Err(DisconnectError::Internal(
                "the disconnect task ended without a result".into(),
            ))
        })
    }

    fn install_nas(&self, rows: &[NasRow], resolved: &HashMap<String, Vec<IpAddr>>) {
        if rows.iter().any(|r| r.api_tls) {
            // Re-read each time, so a renewed CA bundle takes effect with the next reload.
            let ca = &self.inner.config.api_tls_ca_file;
            let tls = mikrotik::tls_connector(ca);
            let mut current = self.inner.tls.write().unwrap_or_else(|e| e.into_inner());
            match (tls, current.as_ref()) {
                // A bundle briefly unreadable (a package upgrade rewriting it) must not turn
                // API-SSL off: the last good one stays.
                (Err(e), Some(Ok(_))) => tracing::warn!(
                    error = %e,
                    "CA bundle not re-read; API-SSL keeps the one loaded before"
                ),
                (Err(e), _) => {
                    tracing::warn!(error = %e, "API-SSL disabled: the CA bundle is not usable");
                    *current = Some(Err(e));
                }
                (Ok(c), _) => *current = Some(Ok(c)),
            }
        }
        let mut table = AddrTable::default();
        for row in rows {
            let info = Arc::new(nas_info(row));
            if let Ok(addr) = row.nasname.parse::<ClientAddr>() {
                table.add(addr, info);
            } else if let Some(ips) = resolved.get(&row.nasname) {
                for ip in ips {
                    table.add(ClientAddr::host(*ip), info.clone());
                }
            } else {
                tracing::debug!(nas = %row.nasname, "nas row without an address skipped");
            }
        }
        *self.inner.nas.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }
}

/// The attributes that identify `s` to its NAS at `nas_ip`.
fn identification(s: &Session, nas_ip: IpAddr) -> DisconnectRequest<'_> {
    DisconnectRequest {
        user_name: &s.username,
        acct_session_id: &s.acctsessionid,
        framed_ip: s
            .framedipaddress
            .as_deref()
            .and_then(|f| f.parse::<Ipv4Addr>().ok()),
        nas_ip: Some(nas_ip),
    }
}

fn nas_info(row: &NasRow) -> NasInfo {
    let port = |p: Option<i64>, what: &str| {
        p.and_then(|p| match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                tracing::warn!(nas = %row.nasname, port = p, "nas.{what} out of range; using the default");
                None
            }
        })
    };
    let api = match (&row.api_username, &row.api_password) {
        (Some(u), Some(p)) if !u.is_empty() => Some(ApiCredentials {
            username: u.clone(),
            password: p.clone(),
        }),
        _ => None,
    };
    NasInfo {
        id: row.id,
        name: row.shortname.clone(),
        secret: (!row.secret.is_empty()).then(|| Arc::from(row.secret.as_bytes())),
        coa_port: port(row.coa_port, "coa_port"),
        api_port: port(row.api_port, "api_port"),
        api,
        tls: row.api_tls.then(|| {
            row.api_tls_name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
        }),
    }
}

impl Inner {
    fn target(&self, nas_ip: IpAddr) -> Target {
        let nas = self
            .nas
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(nas_ip)
            .cloned();
        let secret = nas.as_ref().and_then(|n| n.secret.clone()).or_else(|| {
            self.clients
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .lookup(nas_ip)
                .cloned()
        });
        let coa_port = nas
            .as_ref()
            .and_then(|n| n.coa_port)
            .unwrap_or(self.config.coa_port);
        let api = nas.as_ref().and_then(|n| {
            let default_port = if n.tls.is_some() {
                self.config.api_tls_port
            } else {
                self.config.api_port
            };
            let port = n.api_port.unwrap_or(default_port);
            n.api
                .clone()
                .map(|c| (SocketAddr::new(nas_ip, port), c, self.transport(n, nas_ip)))
        });
        Target {
            name: nas.map(|n| n.name.clone()).unwrap_or_default(),
            secret,
            coa: SocketAddr::new(nas_ip, coa_port),
            api,
        }
    }

    /// Plain, or TLS verified for the NAS's `api_tls_name` or else its address. A NAS whose
    /// TLS cannot be set up gets an `Err` transport that fails the API attempt with the reason
    /// (never a silent fall back to plaintext).
    fn transport(&self, nas: &NasInfo, nas_ip: IpAddr) -> Result<ApiTransport, String> {
        let Some(name) = &nas.tls else {
            return Ok(ApiTransport::Plain);
        };
        let connector = match &*self.tls.read().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(c)) => c.clone(),
            Some(Err(e)) => return Err(format!("API-SSL: {e}")),
            None => return Err("API-SSL: no CA bundle loaded".into()),
        };
        let server_name = match name {
            Some(n) => ServerName::try_from(n.clone())
                .map_err(|_| format!("API-SSL: nas.api_tls_name {n:?} is not a valid name"))?,
            None => ServerName::IpAddress(nas_ip.into()),
        };
        Ok(ApiTransport::Tls {
            connector,
            server_name,
        })
    }

    /// CoA, then the API, then the close, and which of them gave the outcome. Runs in its own
    /// task. With `log`, a close carries the attempt's action log row to the writer.
    async fn attempt(&self, s: &Session, log: cluster::LogTo<'_>) -> Attempt {
        let Some(nas_ip) = s.nas_ip() else {
            let detail = format!("NAS address {:?} is not an IP address", s.nasipaddress);
            return Attempt {
                result: Err(DisconnectError::Unreachable { detail }),
                via: Via::None,
                logged: false,
            };
        };
        let mut via = Via::Coa;
        let mut logged = false;
        let result = self.attempt_on(s, nas_ip, &mut via, log, &mut logged).await;
        Attempt {
            result,
            via,
            logged,
        }
    }

    /// [`Inner::attempt`] for a NAS with an IP address; sets `via` to the API once it is tried,
    /// and `logged` when a close took the action log row.
    async fn attempt_on(
        &self,
        s: &Session,
        nas_ip: IpAddr,
        via: &mut Via,
        log: cluster::LogTo<'_>,
        logged: &mut bool,
    ) -> Result<Disconnected, DisconnectError> {
        let target = self.target(nas_ip);
        let started = Instant::now();
        // The NAS's own answer, when it refused: what the client is told if the API fallback
        // does not succeed either.
        let mut refused: Option<Option<u32>> = None;
        let coa_note = match self.try_coa(s, nas_ip, &target).await {
            Ok(CoaOutcome::Ack) => {
                let close = Close::new(Method::Coa, Via::Coa, Some(now_secs()), CLOSE_CAUSE);
                return Ok(self.close(s, close, started, log, logged).await);
            }
            Ok(CoaOutcome::Nak(Some(coa::SESSION_CONTEXT_NOT_FOUND))) => {
                let close = Close::new(Method::AlreadyClosed, Via::Coa, None, GHOST_CAUSE);
                return Ok(self.close(s, close, started, log, logged).await);
            }
            Ok(CoaOutcome::Nak(cause)) => {
                refused = Some(cause);
                format!("Disconnect-NAK (Error-Cause {cause:?})")
            }
            Ok(CoaOutcome::Timeout) => "no answer to the Disconnect-Request".to_owned(),
            Err(e) => e,
        };
        let failed = |detail: String| match refused {
            Some(error_cause) => DisconnectError::Refused {
                error_cause,
                detail,
            },
            None => DisconnectError::Unreachable { detail },
        };
        let Some((addr, creds, transport)) = &target.api else {
            return Err(failed(format!(
                "{coa_note}; no RouterOS API credentials for the NAS"
            )));
        };
        *via = Via::Api;
        let t0 = Instant::now();
        let outcome = match transport {
            Ok(transport) => {
                mikrotik::disconnect_ppp(
                    *addr,
                    transport,
                    creds,
                    &s.username,
                    s.framedipaddress.as_deref(),
                    &api_timeouts(&self.config),
                )
                .await
            }
            Err(reason) => ApiOutcome::Failed(reason.clone()),
        };
        let rtt = t0.elapsed();
        let attempt = match &outcome {
            ApiOutcome::Removed => DisconnectAttempt::ApiRemoved,
            ApiOutcome::NotFound => DisconnectAttempt::ApiNotFound,
            ApiOutcome::Failed(_) => DisconnectAttempt::ApiFailed,
        };
        self.stats.attempt(attempt, Some(rtt));
        let api_error = match &outcome {
            ApiOutcome::Failed(reason) => Some(reason.clone()),
            _ => None,
        };
        self.health.api(nas_ip, api_error);
        match &outcome {
            ApiOutcome::Failed(reason) => tracing::warn!(
                nas = %addr, nas_name = %target.name, method = "api", outcome = outcome.label(),
                reason = %reason, round_trip_ms = rtt.as_millis() as u64,
                acctuniqueid = %s.acctuniqueid, username = %s.username,
                "disconnect attempt"
            ),
            _ => tracing::info!(
                nas = %addr, nas_name = %target.name, method = "api", outcome = outcome.label(),
                round_trip_ms = rtt.as_millis() as u64,
                acctuniqueid = %s.acctuniqueid, username = %s.username,
                "disconnect attempt"
            ),
        }
        match outcome {
            ApiOutcome::Removed => {
                let close = Close::new(Method::Api, Via::Api, Some(now_secs()), CLOSE_CAUSE);
                Ok(self.close(s, close, started, log, logged).await)
            }
            ApiOutcome::NotFound => {
                let close = Close::new(Method::AlreadyClosed, Via::Api, None, GHOST_CAUSE);
                Ok(self.close(s, close, started, log, logged).await)
            }
            ApiOutcome::Failed(reason) => {
                Err(failed(format!("{coa_note}; RouterOS API: {reason}")))
            }
        }
    }

    /// One Disconnect-Request, logged and counted. `Err` describes why none was sent.
    async fn try_coa(
        &self,
        s: &Session,
        nas_ip: IpAddr,
        target: &Target,
    ) -> Result<CoaOutcome, String> {
        let Some(secret) = &target.secret else {
            self.stats.attempt(DisconnectAttempt::CoaError, None);
            tracing::warn!(
                nas = %target.coa, method = "coa", outcome = "error",
                acctuniqueid = %s.acctuniqueid, username = %s.username,
                "disconnect attempt: no secret known for the NAS (no nas row, no client)"
            );
            return Err("no secret known for the NAS".into());
        };
        let request = identification(s, nas_ip);
        match self.coa.disconnect(target.coa, secret, &request).await {
            Ok(reply) => {
                let attempt = match reply.outcome {
                    CoaOutcome::Ack => DisconnectAttempt::CoaAck,
                    CoaOutcome::Nak(Some(coa::SESSION_CONTEXT_NOT_FOUND)) => {
                        DisconnectAttempt::CoaNakSessionNotFound
                    }
                    CoaOutcome::Nak(_) => DisconnectAttempt::CoaNak,
                    CoaOutcome::Timeout => DisconnectAttempt::CoaTimeout,
                };
                self.stats.attempt(attempt, Some(reply.round_trip));
                let error_cause = match reply.outcome {
                    CoaOutcome::Nak(Some(c)) => Some(c),
                    _ => None,
                };
                tracing::info!(
                    nas = %target.coa, nas_name = %target.name, method = "coa",
                    outcome = reply.outcome.label(), error_cause,
                    round_trip_ms = reply.round_trip.as_millis() as u64, sends = reply.sends,
                    acctuniqueid = %s.acctuniqueid, username = %s.username,
                    "disconnect attempt"
                );
                Ok(reply.outcome)
            }
            Err(e) => {
                self.stats.attempt(DisconnectAttempt::CoaError, None);
                tracing::warn!(
                    nas = %target.coa, method = "coa", outcome = "error", error = %e,
                    acctuniqueid = %s.acctuniqueid, username = %s.username,
                    "disconnect attempt"
                );
                Err(e.to_string())
            }
        }
    }

    /// Closes the row through the writer and waits for the commit. With `log`, the writer
    /// records the attempt's action log row in the close's transaction (or journals it with
    /// the close); `logged` says whether the writer has it: also when the commit is only
    /// late, as it still lands with the close.
    async fn close(
        &self,
        s: &Session,
        close: Close,
        started: Instant,
        log: cluster::LogTo<'_>,
        logged: &mut bool,
    ) -> Disconnected {
        let method = close.method;
        let deadline = Instant::now() + Duration::from_millis(self.config.close_timeout_ms);
        let action = log.map(|(radacctid, call)| {
            let done = Ok(Disconnected {
                method,
                row_closed: true,
                elapsed: started.elapsed(),
            });
            self.record(s, radacctid, &done, close.via, call)
        });
        let with_action = action.is_some();
        let (request, done) = CloseRequest::new(
            s.acctuniqueid.to_string(),
            close.stop_time,
            close.cause,
            None,
        );
        let request = request.with_action(action);
        let closed = match self.ingest.upgrade() {
            None => Err("the writer is shutting down"),
            Some(tx) => {
                match tokio::time::timeout_at(deadline, tx.send(Item::Close(request))).await {
                    Err(_) => Err("the writer's queue stayed full"),
                    Ok(Err(_)) => Err("the writer has stopped"),
                    Ok(Ok(())) => match tokio::time::timeout_at(deadline, done).await {
                        Err(_) => {
                            *logged = with_action;
                            Err("the close was not committed in time")
                        }
                        Ok(Err(_)) => Err("the close could not be written"),
                        Ok(Ok(closed)) => {
                            *logged = with_action;
                            Ok(closed)
                        }
                    },
                }
            }
        };
        let row_closed = closed.unwrap_or_else(|reason| {
            tracing::warn!(
                acctuniqueid = %s.acctuniqueid, method = method.as_str(), reason,
                "session disconnected but its row was not closed; the NAS's Stop or the sweeper will close it"
            );
            false
        });
        Disconnected {
            method,
            row_closed,
            elapsed: started.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(nasname: &str, secret: &str) -> NasRow {
        NasRow {
            id: 1,
            nasname: nasname.into(),
            shortname: "bng".into(),
            secret: secret.into(),
            coa_port: Some(3799),
            api_port: None,
            api_username: Some("api".into()),
            api_password: Some("pw".into()),
            ..NasRow::default()
        }
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: DisconnectConfig = toml::from_str("").unwrap();
        assert_eq!(c, DisconnectConfig::default());
        assert_eq!(coa_config(&c).budget, Duration::from_secs(3));
        assert_eq!(c.coa_port, 1700);
        assert_eq!(c.api_port, 8728);
        assert_eq!(c.api_tls_port, 8729);
        assert!(c.check().is_ok());
        let c: DisconnectConfig =
            toml::from_str("coa_timeout_ms = 500\ncoa_bind = \"::\"").unwrap();
        assert_eq!(c.coa_timeout_ms, 500);
        assert!(c.coa_bind.is_ipv6());
        assert!(toml::from_str::<DisconnectConfig>("coa_timeout = 5").is_err());
        let bad = DisconnectConfig {
            coa_retry_interval_ms: 0,
            ..DisconnectConfig::default()
        };
        assert!(bad.check().unwrap_err().contains("retry"));
        let c: DisconnectConfig =
            toml::from_str("coa_attributes = [\"Idle-Timeout\", \"mikrotik-total-limit\"]")
                .unwrap();
        assert!(c.check().is_ok(), "names match case-insensitively");
        let c: DisconnectConfig = toml::from_str("coa_attributes = [\"User-Name\"]").unwrap();
        let e = c.check().unwrap_err();
        assert!(
            e.contains("\"User-Name\" is not an attribute a CoA may change")
                && e.contains("Idle-Timeout"),
            "{e}"
        );
    }

    #[test]
    fn nas_rows_and_blocks() {
        let mut t = AddrTable::default();
        t.add(
            "10.0.0.0/8".parse().unwrap(),
            Arc::new(nas_info(&row("10.0.0.0/8", "wide"))),
        );
        t.add(
            "10.1.2.3".parse().unwrap(),
            Arc::new(nas_info(&row("10.1.2.3", "host"))),
        );
        let secret = |ip: &str| {
            t.lookup(ip.parse().unwrap())
                .and_then(|n| n.secret.clone())
                .map(|s| s.to_vec())
        };
        assert_eq!(secret("10.1.2.3"), Some(b"host".to_vec()));
        assert_eq!(secret("::ffff:10.1.2.3"), Some(b"host".to_vec()));
        assert_eq!(secret("10.9.9.9"), Some(b"wide".to_vec()));
        assert_eq!(secret("192.0.2.1"), None);
        let mut r = row("x", "");
        r.coa_port = Some(70000);
        r.api_username = None;
        let info = nas_info(&r);
        assert!(info.secret.is_none() && info.coa_port.is_none() && info.api.is_none());
        assert_eq!(info.tls, None, "plain API unless api_tls");
    }

    #[test]
    fn refusals_name_the_error_cause() {
        assert_eq!(
            refusal_message(Some(402)),
            "NAS refused the disconnect: Error-Cause 402 (Missing-Attribute)"
        );
        assert_eq!(
            refusal_message(Some(999)),
            "NAS refused the disconnect: Error-Cause 999"
        );
        assert_eq!(
            refusal_message(None),
            "NAS refused the disconnect: Disconnect-NAK without Error-Cause"
        );
    }

    #[test]
    fn api_tls_name_defaults_to_the_address() {
        let mut r = row("10.1.2.3", "s");
        r.api_tls = true;
        assert_eq!(nas_info(&r).tls, Some(None));
        r.api_tls_name = Some("  ".into());
        assert_eq!(nas_info(&r).tls, Some(None), "a blank name is no name");
        r.api_tls_name = Some("bng1.isp.example".into());
        assert_eq!(nas_info(&r).tls, Some(Some("bng1.isp.example".into())));
    }
}
