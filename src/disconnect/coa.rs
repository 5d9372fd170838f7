//! RFC 5176 client (Disconnect-Request and CoA-Request) over a small pool of UDP sockets. Each
//! socket owns a 256-identifier space and one dispatcher task that routes answers to the
//! waiting request by identifier, after checking that the answer's code fits the request
//! (Disconnect-ACK/NAK for a Disconnect-Request, CoA-ACK/NAK for a CoA-Request), the source
//! address, the Response Authenticator and any Message-Authenticator. Anything else is ignored
//! (counted), so a forged or stray answer is indistinguishable from silence.
//!
//! It must not know about sessions or the database; no lock is held across an `.await`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::stats::{CoaIgnoreReason, DisconnectStats};
use crate::metrics::Stats;
use crate::radius::codec::{Code, EncodeError, Packet, PacketBuilder};
use crate::radius::dictionary::{self as d, AttrDef, ValueType};

/// Error-Cause 503, Session-Context-Not-Found (RFC 5176 §3.6).
pub const SESSION_CONTEXT_NOT_FOUND: u32 = 503;

/// Identifiers per socket (the one-octet Identifier field).
const IDS_PER_SOCKET: usize = 256;

/// Settings of the CoA client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoaConfig {
    /// Total time for one Disconnect-Request, retransmissions included.
    pub budget: Duration,
    /// Without an answer after this long, the same packet is sent again.
    pub retry_interval: Duration,
    /// UDP sockets in the pool; each allows 256 requests in flight.
    pub sockets: usize,
    /// Source address of the requests. A MikroTik accepts Disconnect-Requests only from the
    /// address of a configured `/radius` server, so this may need to be that address. An IPv6
    /// unspecified address (`::`) gives dual-stack sockets that reach IPv4 NASes too.
    pub bind: IpAddr,
    /// SO_RCVBUF of each socket: a burst of answers must not overflow the kernel default.
    pub recv_buffer_bytes: usize,
}

impl Default for CoaConfig {
    fn default() -> Self {
        CoaConfig {
            budget: Duration::from_secs(3),
            retry_interval: Duration::from_secs(1),
            sockets: 16,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            recv_buffer_bytes: 1 << 20,
        }
    }
}

/// The attributes that identify the session to the NAS (RFC 5176 §3), in a Disconnect-Request
/// and in a CoA-Request alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisconnectRequest<'a> {
    pub user_name: &'a str,
    pub acct_session_id: &'a str,
    /// Framed-IP-Address, when known.
    pub framed_ip: Option<Ipv4Addr>,
    /// NAS-IP-Address (or NAS-IPv6-Address) as the NAS reported it in accounting.
    pub nas_ip: Option<IpAddr>,
}

impl DisconnectRequest<'_> {
    /// The Disconnect-Request with identifier `id`: User-Name, Acct-Session-Id,
    /// Framed-IP-Address, NAS-IP-Address, and a Message-Authenticator (RFC 5176 §3).
    pub fn builder(&self, id: u8) -> Result<PacketBuilder, EncodeError> {
        let mut b = self.identify(Code::DisconnectRequest, id)?;
        b.message_authenticator();
        Ok(b)
    }

    /// The CoA-Request with identifier `id`: the same identification, then `changes` in
    /// order, and a Message-Authenticator (RFC 5176 §3.1).
    pub fn coa_builder(
        &self,
        id: u8,
        changes: &[ChangeAttr],
    ) -> Result<PacketBuilder, EncodeError> {
        let mut b = self.identify(Code::CoaRequest, id)?;
        for c in changes {
            c.encode(&mut b)?;
        }
        b.message_authenticator();
        Ok(b)
    }

    fn identify(&self, code: Code, id: u8) -> Result<PacketBuilder, EncodeError> {
        let mut b = PacketBuilder::new(code, id);
        b.attr(d::USER_NAME, self.user_name.as_bytes())?;
        b.attr(d::ACCT_SESSION_ID, self.acct_session_id.as_bytes())?;
        if let Some(ip) = self.framed_ip {
            b.attr_ipv4(d::FRAMED_IP_ADDRESS, ip)?;
        }
        match self.nas_ip {
            Some(IpAddr::V4(ip)) => {
                b.attr_ipv4(d::NAS_IP_ADDRESS, ip)?;
            }
            Some(IpAddr::V6(ip)) => {
                b.attr_ipv6(d::NAS_IPV6_ADDRESS, ip)?;
            }
            None => {}
        }
        Ok(b)
    }
}

/// A value of a [`ChangeAttr`], of its attribute's [`ValueType`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    Text(String),
    Integer(u32),
    Ipv4(Ipv4Addr),
}

/// One attribute a CoA-Request sets (a dictionary attribute with a value of its type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeAttr {
    pub def: &'static AttrDef,
    pub value: AttrValue,
}

impl ChangeAttr {
    /// `value` as `def` types it; `Err` says why it does not fit (for a 400 naming the field).
    pub fn new(def: &'static AttrDef, value: AttrValue) -> Result<ChangeAttr, String> {
        let fits = matches!(
            (def.value, &value),
            (ValueType::Text, AttrValue::Text(_))
                | (ValueType::Integer, AttrValue::Integer(_))
                | (ValueType::Ipv4Addr, AttrValue::Ipv4(_))
        );
        if !fits {
            return Err(format!(
                "{} takes {}",
                def.name,
                match def.value {
                    ValueType::Text => "text",
                    ValueType::Integer => "a whole number from 0 to 4294967295",
                    ValueType::Ipv4Addr => "an IPv4 address",
                }
            ));
        }
        if let AttrValue::Text(t) = &value {
            let max = if def.vendor.is_some() { 247 } else { 253 };
            if t.is_empty() || t.len() > max {
                return Err(format!("{} takes 1 to {max} bytes of text", def.name));
            }
            if t.chars().any(char::is_control) {
                return Err(format!("{} may not contain control characters", def.name));
            }
        }
        Ok(ChangeAttr { def, value })
    }

    /// The value as JSON (the action log's `request`).
    pub fn json_value(&self) -> serde_json::Value {
        match &self.value {
            AttrValue::Text(t) => serde_json::Value::from(t.as_str()),
            AttrValue::Integer(n) => serde_json::Value::from(*n),
            AttrValue::Ipv4(ip) => serde_json::Value::from(ip.to_string()),
        }
    }

    fn encode(&self, b: &mut PacketBuilder) -> Result<(), EncodeError> {
        let bytes: Vec<u8> = match &self.value {
            AttrValue::Text(t) => t.as_bytes().to_vec(),
            AttrValue::Integer(n) => n.to_be_bytes().to_vec(),
            AttrValue::Ipv4(ip) => ip.octets().to_vec(),
        };
        match self.def.vendor {
            Some(vendor) => b.vendor_attr(vendor, self.def.typ, &bytes)?,
            None => b.attr(self.def.typ, &bytes)?,
        };
        Ok(())
    }
}

/// Which request is waiting, hence which answers it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Disconnect,
    Coa,
}

/// How the NAS answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoaOutcome {
    /// Disconnect-ACK (the session is gone) or CoA-ACK (the change is applied).
    Ack,
    /// Disconnect-NAK or CoA-NAK with its (first) Error-Cause.
    Nak(Option<u32>),
    /// No acceptable answer within the budget.
    Timeout,
}

impl CoaOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            CoaOutcome::Ack => "ack",
            CoaOutcome::Nak(Some(SESSION_CONTEXT_NOT_FOUND)) => "nak_session_not_found",
            CoaOutcome::Nak(_) => "nak",
            CoaOutcome::Timeout => "timeout",
        }
    }
}

/// The outcome of one Disconnect-Request with its timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoaReply {
    pub outcome: CoaOutcome,
    /// From the call to the answer (or to the end of the budget).
    pub round_trip: Duration,
    /// Datagrams sent (1 + retransmissions).
    pub sends: u32,
}

/// Why a request could not be sent at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoaError {
    #[error("cannot encode the request: {0}")]
    Encode(#[from] EncodeError),
    #[error("NAS {nas} cannot be reached from sockets bound to {bind}")]
    AddressFamily { nas: SocketAddr, bind: IpAddr },
}

/// What the dispatcher hands a waiting request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Ack,
    Nak(Option<u32>),
}

/// A request waiting on an identifier.
struct Waiter {
    kind: Kind,
    peer: SocketAddr,
    /// `None` until the packet is signed; no answer is accepted before.
    authenticator: Option<[u8; 16]>,
    secret: Arc<[u8]>,
    /// Taken by the first acceptable answer.
    tx: Option<oneshot::Sender<Answer>>,
}

struct IdTable {
    slots: Vec<Option<Waiter>>,
    /// Where the search for a free identifier starts: identifiers rotate, so a late answer to
    /// a finished request rarely meets a new request on the same identifier (and if it does,
    /// the Response Authenticator differs).
    next: usize,
    in_use: usize,
}

struct SocketShared {
    socket: UdpSocket,
    /// Guards only in-memory bookkeeping, never held across `.await`.
    table: Mutex<IdTable>,
}

impl SocketShared {
    fn table(&self) -> std::sync::MutexGuard<'_, IdTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes one datagram to its request, or says why it was ignored.
    fn deliver(&self, datagram: &[u8], from: SocketAddr) -> Result<(), CoaIgnoreReason> {
        let p = Packet::decode(datagram).map_err(|_| CoaIgnoreReason::Malformed)?;
        let (kind, answer) = match p.code() {
            Code::DisconnectAck => (Kind::Disconnect, Answer::Ack),
            Code::DisconnectNak => (Kind::Disconnect, Answer::Nak(p.attr_u32(d::ERROR_CAUSE))),
            Code::CoaAck => (Kind::Coa, Answer::Ack),
            Code::CoaNak => (Kind::Coa, Answer::Nak(p.attr_u32(d::ERROR_CAUSE))),
            _ => return Err(CoaIgnoreReason::UnexpectedCode),
        };
        let tx = {
            let mut table = self.table();
            let waiter = table
                .slots
                .get_mut(usize::from(p.identifier()))
                .and_then(Option::as_mut)
                .ok_or(CoaIgnoreReason::UnknownIdentifier)?;
            let auth = waiter
                .authenticator
                .ok_or(CoaIgnoreReason::UnknownIdentifier)?;
            if waiter.peer != from {
                return Err(CoaIgnoreReason::WrongSource);
            }
            if waiter.kind != kind {
                // A CoA-ACK to a Disconnect-Request (or the reverse) answers nothing asked.
                return Err(CoaIgnoreReason::UnexpectedCode);
            }
            if !p.verify_response_authenticator(&auth, &waiter.secret) {
                return Err(CoaIgnoreReason::BadAuthenticator);
            }
            if p.verify_message_authenticator(&waiter.secret, Some(&auth)) == Some(false) {
                return Err(CoaIgnoreReason::BadMessageAuthenticator);
            }
            waiter.tx.take().ok_or(CoaIgnoreReason::Duplicate)?
        };
        let _ = tx.send(answer);
        Ok(())
    }
}

/// An identifier held by one request; freed when dropped (also when the request's future is).
struct Lease {
    shared: Arc<SocketShared>,
    id: u8,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn set_authenticator(&self, auth: [u8; 16]) {
        if let Some(Some(w)) = self.shared.table().slots.get_mut(usize::from(self.id)) {
            w.authenticator = Some(auth);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut t = self.shared.table();
        if let Some(slot) = t.slots.get_mut(usize::from(self.id))
            && slot.take().is_some()
        {
            t.in_use -= 1;
        }
    }
}

struct ClientInner {
    sockets: Vec<Arc<SocketShared>>,
    /// One permit per identifier in the pool: a request past the pool's capacity waits here
    /// (within its budget) instead of failing.
    permits: Arc<Semaphore>,
    next_socket: AtomicUsize,
    config: CoaConfig,
    stats: Arc<DisconnectStats>,
    /// Round trips and failures per NAS.
    health: Arc<crate::nas::NasHealth>,
    /// Stops the dispatchers when the last handle is dropped.
    _stop: DropGuard,
}

/// The Disconnect-Request client; cheap to clone, all clones share the sockets.
#[derive(Clone)]
pub struct CoaClient {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for CoaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoaClient")
            .field("sockets", &self.inner.sockets.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl CoaClient {
    /// Binds `config.sockets` UDP sockets on `config.bind` (ephemeral ports) and starts one
    /// dispatcher per socket.
    pub async fn bind(config: CoaConfig, stats: Arc<Stats>) -> std::io::Result<CoaClient> {
        let health = crate::nas::NasHealth::of(&stats);
        let stats = DisconnectStats::of(&stats);
        let n = config.sockets.max(1);
        let stop = CancellationToken::new();
        let mut sockets = Vec::with_capacity(n);
        for _ in 0..n {
            let socket = bind_socket(config.bind, config.recv_buffer_bytes)?;
            let shared = Arc::new(SocketShared {
                socket,
                table: Mutex::new(IdTable {
                    slots: (0..IDS_PER_SOCKET).map(|_| None).collect(),
                    next: 0,
                    in_use: 0,
                }),
            });
            tokio::spawn(dispatch(shared.clone(), stats.clone(), stop.clone()));
            sockets.push(shared);
        }
        Ok(CoaClient {
            inner: Arc::new(ClientInner {
                permits: Arc::new(Semaphore::new(n * IDS_PER_SOCKET)),
                sockets,
                next_socket: AtomicUsize::new(0),
                config,
                stats,
                health,
                _stop: stop.drop_guard(),
            }),
        })
    }

    pub fn config(&self) -> &CoaConfig {
        &self.inner.config
    }

    /// The local addresses of the pool's sockets (tests, logs).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner
            .sockets
            .iter()
            .filter_map(|s| s.socket.local_addr().ok())
            .collect()
    }

    /// Sends a Disconnect-Request to `nas` signed with `secret` and waits for a verified
    /// Disconnect-ACK/NAK from exactly that address and port, resending the same packet every
    /// `retry_interval` until the budget is spent. Waiting for a free identifier counts
    /// against the budget.
    pub async fn disconnect(
        &self,
        nas: SocketAddr,
        secret: &[u8],
        request: &DisconnectRequest<'_>,
    ) -> Result<CoaReply, CoaError> {
        let reply = self
            .send(nas, secret, Kind::Disconnect, |id| request.builder(id))
            .await;
        self.count(nas, &reply);
        reply
    }

    /// Sends a CoA-Request identifying the session as `request` does and carrying `changes`,
    /// and waits for a verified CoA-ACK/NAK, as [`CoaClient::disconnect`] does.
    pub async fn change(
        &self,
        nas: SocketAddr,
        secret: &[u8],
        request: &DisconnectRequest<'_>,
        changes: &[ChangeAttr],
    ) -> Result<CoaReply, CoaError> {
        let reply = self
            .send(nas, secret, Kind::Coa, |id| {
                request.coa_builder(id, changes)
            })
            .await;
        self.count(nas, &reply);
        reply
    }

    /// The NAS's health figures: an answer's round trip, or a failure.
    fn count(&self, nas: SocketAddr, reply: &Result<CoaReply, CoaError>) {
        let answered = match reply {
            Ok(r) if r.outcome != CoaOutcome::Timeout => Some(r.round_trip),
            _ => None,
        };
        self.inner.health.coa(nas.ip(), answered);
    }

    async fn send(
        &self,
        nas: SocketAddr,
        secret: &[u8],
        kind: Kind,
        build: impl Fn(u8) -> Result<PacketBuilder, EncodeError>,
    ) -> Result<CoaReply, CoaError> {
        let started = Instant::now();
        let deadline = started + self.inner.config.budget;
        let dest = self.destination(nas)?;
        // Refuse unencodable requests before taking an identifier.
        build(0)?;
        let timeout = |sends| CoaReply {
            outcome: CoaOutcome::Timeout,
            round_trip: started.elapsed(),
            sends,
        };
        let permit = match timeout_at(deadline, self.inner.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => return Ok(timeout(0)),
        };
        let (lease, mut rx) = self.lease(permit, kind, canonical(dest), secret);
        let packet = build(lease.id)?.encode_request(secret)?;
        let mut auth = [0u8; 16];
        auth.copy_from_slice(packet.get(4..20).unwrap_or(&[0; 16]));
        lease.set_authenticator(auth);

        let mut sends = 0u32;
        loop {
            if sends > 0 {
                self.inner
                    .stats
                    .coa_retransmits
                    .fetch_add(1, Ordering::Relaxed);
            }
            sends += 1;
            if let Err(e) = lease.shared.socket.send_to(&packet, dest).await {
                tracing::debug!(%nas, error = %e, ?kind, "sending an RFC 5176 request failed");
            }
            let wake = (Instant::now() + self.inner.config.retry_interval).min(deadline);
            match timeout_at(wake, &mut rx).await {
                Ok(Ok(answer)) => {
                    return Ok(CoaReply {
                        outcome: match answer {
                            Answer::Ack => CoaOutcome::Ack,
                            Answer::Nak(cause) => CoaOutcome::Nak(cause),
                        },
                        round_trip: started.elapsed(),
                        sends,
                    });
                }
                // The dispatcher is gone (client shutting down).
                Ok(Err(_)) => return Ok(timeout(sends)),
                Err(_) if Instant::now() >= deadline => return Ok(timeout(sends)),
                Err(_) => {}
            }
        }
    }

    /// Where to send: an IPv4 NAS through dual-stack IPv6 sockets is addressed v4-mapped.
    fn destination(&self, nas: SocketAddr) -> Result<SocketAddr, CoaError> {
        let bind = self.inner.config.bind;
        match (bind, nas.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => Ok(nas),
            (IpAddr::V6(b), IpAddr::V4(ip)) if b.is_unspecified() => {
                Ok(SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), nas.port()))
            }
            _ => Err(CoaError::AddressFamily { nas, bind }),
        }
    }

    /// Takes a free identifier on some socket (one exists: the permit guarantees it).
    fn lease(
        &self,
        permit: OwnedSemaphorePermit,
        kind: Kind,
        peer: SocketAddr,
        secret: &[u8],
    ) -> (Lease, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        let mut waiter = Some(Waiter {
            kind,
            peer,
            authenticator: None,
            secret: Arc::from(secret),
            tx: Some(tx),
        });
        let n = self.inner.sockets.len();
        let first = self.inner.next_socket.fetch_add(1, Ordering::Relaxed);
        // Identifiers in use never exceed permits held (taken after the permit, freed before
        // it), so while we hold one a free identifier exists at every instant; but it may
        // appear on a socket this scan has already passed, hence the scan goes round again.
        for k in 0.. {
            let shared = &self.inner.sockets[(first + k) % n];
            let mut t = shared.table();
            if t.in_use >= IDS_PER_SOCKET {
                continue;
            }
            let start = t.next;
            let Some(id) = (0..IDS_PER_SOCKET)
                .map(|i| (start + i) % IDS_PER_SOCKET)
                .find(|&i| t.slots[i].is_none())
            else {
                continue;
            };
            t.slots[id] = waiter.take();
            t.in_use += 1;
            t.next = (id + 1) % IDS_PER_SOCKET;
            drop(t);
            let lease = Lease {
                shared: shared.clone(),
                id: id as u8,
                _permit: permit,
            };
            return (lease, rx);
        }
        unreachable!("the scan only ends by finding a free identifier")
    }
}

/// Compares source addresses as the kernel reports them (v4-mapped → v4).
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn bind_socket(ip: IpAddr, recv_buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if let IpAddr::V6(v6) = ip
        && v6.is_unspecified()
    {
        socket.set_only_v6(false)?;
    }
    if recv_buffer > 0
        && let Err(e) = socket.set_recv_buffer_size(recv_buffer)
    {
        tracing::warn!(error = %e, "cannot set SO_RCVBUF on a CoA socket");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    UdpSocket::from_std(socket.into())
}

/// One per socket: reads answers until the client is dropped. A bad datagram never stops it.
async fn dispatch(shared: Arc<SocketShared>, stats: Arc<DisconnectStats>, stop: CancellationToken) {
    let mut buf = vec![0u8; crate::radius::codec::MAX_PACKET_LEN + 1];
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            r = shared.socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((n, from)) => {
                let datagram = buf.get(..n).unwrap_or_default();
                if let Err(reason) = shared.deliver(datagram, canonical(from)) {
                    stats.ignored(reason);
                    tracing::debug!(%from, reason = reason.as_str(), "CoA datagram ignored");
                }
            }
            Err(e) => {
                // E.g. ICMP errors surfaced on some platforms; never a reason to stop.
                tracing::debug!(error = %e, "CoA socket receive error");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_attributes_and_authenticators() {
        let req = DisconnectRequest {
            user_name: "alice",
            acct_session_id: "81a00003",
            framed_ip: Some(Ipv4Addr::new(100, 64, 0, 9)),
            nas_ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        };
        let out = req.builder(7).unwrap().encode_request(b"s3cret").unwrap();
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.code(), Code::DisconnectRequest);
        assert_eq!(p.identifier(), 7);
        assert_eq!(p.attr(d::USER_NAME), Some(&b"alice"[..]));
        assert_eq!(p.attr(d::ACCT_SESSION_ID), Some(&b"81a00003"[..]));
        assert_eq!(
            p.attr_ipv4(d::FRAMED_IP_ADDRESS),
            Some(Ipv4Addr::new(100, 64, 0, 9))
        );
        assert_eq!(
            p.attr_ipv4(d::NAS_IP_ADDRESS),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert!(p.verify_request_authenticator(b"s3cret"));
        assert_eq!(p.verify_message_authenticator(b"s3cret", None), Some(true));

        let v6 = DisconnectRequest {
            framed_ip: None,
            nas_ip: Some("2001:db8::1".parse().unwrap()),
            ..req
        };
        let out = v6.builder(1).unwrap().encode_request(b"x").unwrap();
        let p = Packet::decode(&out).unwrap();
        assert_eq!(p.attr(d::FRAMED_IP_ADDRESS), None);
        assert_eq!(p.attr(d::NAS_IP_ADDRESS), None);
        assert_eq!(
            p.attr_ipv6(d::NAS_IPV6_ADDRESS),
            v6.nas_ip.and_then(|ip| match ip {
                IpAddr::V6(v) => Some(v),
                IpAddr::V4(_) => None,
            })
        );
    }

    #[test]
    fn outcome_labels() {
        assert_eq!(CoaOutcome::Nak(Some(503)).label(), "nak_session_not_found");
        assert_eq!(CoaOutcome::Nak(Some(404)).label(), "nak");
        assert_eq!(CoaOutcome::Nak(None).label(), "nak");
    }

    #[tokio::test]
    async fn identifiers_are_freed_and_the_pool_waits_when_full() {
        let stats = Arc::new(Stats::default());
        let client = CoaClient::bind(
            CoaConfig {
                sockets: 1,
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                ..CoaConfig::default()
            },
            stats,
        )
        .await
        .unwrap();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut leases = Vec::new();
        for _ in 0..IDS_PER_SOCKET {
            let permit = client.inner.permits.clone().try_acquire_owned().unwrap();
            leases.push(client.lease(permit, Kind::Disconnect, peer, b"x").0);
        }
        let mut ids: Vec<u8> = leases.iter().map(|l| l.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), IDS_PER_SOCKET, "256 distinct identifiers");
        assert!(client.inner.permits.clone().try_acquire_owned().is_err());
        leases.truncate(10);
        assert_eq!(client.inner.sockets[0].table().in_use, 10);
        assert_eq!(
            client.inner.permits.available_permits(),
            IDS_PER_SOCKET - 10
        );
        drop(leases);
        assert_eq!(client.inner.sockets[0].table().in_use, 0);
    }

    #[tokio::test]
    async fn address_family_mismatch_is_an_error() {
        let client = CoaClient::bind(
            CoaConfig {
                sockets: 1,
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                ..CoaConfig::default()
            },
            Arc::new(Stats::default()),
        )
        .await
        .unwrap();
        let req = DisconnectRequest {
            user_name: "a",
            acct_session_id: "1",
            framed_ip: None,
            nas_ip: None,
        };
        let err = client
            .disconnect("[2001:db8::1]:1700".parse().unwrap(), b"x", &req)
            .await
            .unwrap_err();
        assert!(matches!(err, CoaError::AddressFamily { .. }));
        let long = "u".repeat(300);
        let err = client
            .disconnect(
                "127.0.0.1:9".parse().unwrap(),
                b"x",
                &DisconnectRequest {
                    user_name: &long,
                    ..req
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err, CoaError::Encode(EncodeError::AttributeTooLong));
    }
}
