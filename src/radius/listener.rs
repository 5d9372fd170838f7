//! The accounting listener: receives datagrams, checks client, authenticators and
//! retransmissions, turns accepted requests into events and queues them for the writer.
//!
//! One bad datagram never disturbs the loop: every rejection is counted and dropped silently
//! (RFC 2865 §3, RFC 2866 §2). Nothing here writes to the database or answers before commit.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, RwLock};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::accounting::{self, EventKind, Parsed};
use super::clients::ClientTable;
use super::codec::{Code, Packet};
use super::dictionary as d;
use super::mmsg;
use super::reply::{Reply, Responder, Seen};
use crate::clock::now_secs;
use crate::metrics::{DropReason, PacketType, Stats};
use crate::nas::NasHealth;
use crate::queue::{IngestSender, Item};
use crate::sessions::SessionIndex;

/// The client table, swapped whole when clients are reloaded.
pub type SharedClients = Arc<RwLock<Arc<ClientTable>>>;

/// Binds the accounting socket with a large receive buffer (bursts overflow the default). It is
/// non-blocking, for `tokio::net::UdpSocket::from_std` on the runtime that will serve it.
pub fn bind(addr: SocketAddr, recv_buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(recv_buffer_bytes) {
        tracing::warn!(error = %e, "could not set the UDP receive buffer size");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The accounting listener.
#[derive(Debug)]
pub struct Listener {
    socket: Arc<UdpSocket>,
    clients: SharedClients,
    responder: Responder,
    queue: IngestSender,
    stats: Arc<Stats>,
    max_clock_skew: i64,
    /// Per-NAS figures: packets, bad authenticators, interim cadence.
    health: Arc<NasHealth>,
    /// Read (never changed) for the previous update of a session an Interim-Update continues,
    /// to measure the NAS's interim cadence; without it the cadence is not measured.
    index: Option<Arc<SessionIndex>>,
}

impl Listener {
    pub fn new(
        socket: Arc<UdpSocket>,
        clients: SharedClients,
        responder: Responder,
        queue: IngestSender,
        stats: Arc<Stats>,
        max_clock_skew: i64,
    ) -> Self {
        Listener {
            socket,
            clients,
            responder,
            queue,
            health: NasHealth::of(&stats),
            stats,
            max_clock_skew,
            index: None,
        }
    }

    /// Measures each NAS's interim cadence against the sessions' last updates in `index`.
    pub fn with_index(mut self, index: Arc<SessionIndex>) -> Self {
        self.index = Some(index);
        self
    }

    /// Receives until cancelled, up to [`mmsg::RECV_BATCH`] datagrams per system call.
    /// Dropping `self` at the end releases the queue sender, which lets the writer drain and
    /// stop.
    pub async fn run(self, cancel: CancellationToken) -> std::io::Result<()> {
        let fd = self.socket.as_raw_fd();
        let mut buffers = mmsg::RecvBuffers::default();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = self.socket.readable() => r?,
            }
            match self
                .socket
                .try_io(Interest::READABLE, || mmsg::recv_batch(fd, &mut buffers))
            {
                Ok(_) => {}
                // Readiness was stale (cleared by try_io) or ICMP errors from earlier sends
                // surfaced here; neither is fatal.
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(e),
            }
            for (datagram, peer) in buffers.datagrams() {
                match peer {
                    Some(peer) => self.handle(datagram, peer),
                    None => self.stats.dropped(DropReason::Malformed),
                }
            }
            // A flood never starves the runtime's other tasks on this worker.
            tokio::task::consume_budget().await;
        }
    }

    fn handle(&self, datagram: &[u8], peer: SocketAddr) {
        let packet = match Packet::decode(datagram) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%peer, reason = e.reason(), "malformed datagram dropped");
                return self.stats.dropped(DropReason::Malformed);
            }
        };
        let client = {
            let table = self.clients.read().unwrap_or_else(|e| e.into_inner());
            table.lookup(peer.ip()).cloned()
        };
        let Some(client) = client else {
            tracing::debug!(%peer, "packet from unknown client dropped");
            return self.stats.dropped(DropReason::UnknownClient);
        };
        if packet.code() != Code::AccountingRequest {
            return self.stats.dropped(DropReason::NotAccounting);
        }
        if !packet.verify_request_authenticator(&client.secret) {
            tracing::debug!(%peer, client = %client.name, "bad request authenticator");
            self.health.bad_authenticator(peer.ip());
            return self.stats.dropped(DropReason::BadAuthenticator);
        }
        if packet.verify_message_authenticator(&client.secret, None) == Some(false) {
            return self.stats.dropped(DropReason::BadMessageAuthenticator);
        }
        let reply = Reply {
            peer,
            identifier: packet.identifier(),
            authenticator: *packet.authenticator(),
            secret: client.secret.clone(),
            proxy_state: packet
                .attributes()
                .filter(|a| a.typ == d::PROXY_STATE)
                .map(|a| Box::from(a.value))
                .collect(),
        };
        match self.responder.cache().begin(&reply) {
            Seen::New => {}
            Seen::InFlight => return self.stats.dropped(DropReason::Duplicate),
            Seen::Answered(bytes) => return self.responder.resend(peer, &bytes),
        }
        let now = now_secs();
        let event = match accounting::parse(&packet, peer.ip(), now, self.max_clock_skew) {
            Parsed::Event(ev) => ev,
            Parsed::Ignored { status } => {
                tracing::debug!(%peer, ?status, "accounting status not recorded; answered");
                self.stats.received(PacketType::Other);
                self.health.packet(peer.ip(), PacketType::Other, now);
                Stats::add(&self.stats.unchanged, 1);
                return self.responder.answer(&reply);
            }
        };
        self.stats.received(packet_type(event.kind));
        self.health.packet(peer.ip(), packet_type(event.kind), now);
        if event.kind == EventKind::InterimUpdate
            && let Some(last) = self
                .index
                .as_ref()
                .and_then(|i| i.last_seen(&event.acctuniqueid))
        {
            self.health.interim_interval(peer.ip(), event.time - last);
        }
        if event.clock_skewed {
            Stats::add(&self.stats.clock_skew, 1);
        }
        let item = Item::Event {
            event,
            reply: Some(reply),
        };
        if let Err(e) = self.queue.try_send(item) {
            let item = match e {
                TrySendError::Full(item) => {
                    self.stats.dropped(DropReason::QueueFull);
                    item
                }
                TrySendError::Closed(item) => item,
            };
            if let Item::Event {
                reply: Some(reply), ..
            } = &item
            {
                self.responder.abandon(reply);
            }
        }
    }
}

/// The `type` label an event is counted under.
fn packet_type(kind: EventKind) -> PacketType {
    match kind {
        EventKind::Start => PacketType::Start,
        EventKind::InterimUpdate => PacketType::InterimUpdate,
        EventKind::Stop => PacketType::Stop,
        EventKind::AccountingOn => PacketType::AccountingOn,
        EventKind::AccountingOff => PacketType::AccountingOff,
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused | K::ConnectionReset | K::Interrupted | K::WouldBlock
    )
}
