//! Accounting-Responses: building and sending them, and the reply cache that recognises
//! retransmissions (same source address and port, identifier and Request Authenticator within
//! the window), so that a retransmission has no second effect and gets the same answer.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::codec::{Code, PacketBuilder};
use super::dictionary as d;
use super::mmsg;
use crate::metrics::Stats;

/// Where and how to answer one request.
#[derive(Clone)]
pub struct Reply {
    pub peer: SocketAddr,
    pub identifier: u8,
    pub authenticator: [u8; 16],
    pub secret: Arc<[u8]>,
    /// Proxy-State values, copied into the response in order (RFC 2865 §5.33).
    pub proxy_state: Vec<Box<[u8]>>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("peer", &self.peer)
            .field("identifier", &self.identifier)
            .finish_non_exhaustive()
    }
}

impl Reply {
    fn key(&self) -> CacheKey {
        (self.peer, self.identifier, self.authenticator)
    }

    /// The signed Accounting-Response (RFC 2866 §3).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut b = PacketBuilder::new(Code::AccountingResponse, self.identifier);
        for ps in &self.proxy_state {
            b.attr(d::PROXY_STATE, ps).ok()?;
        }
        b.encode_response(&self.authenticator, &self.secret).ok()
    }
}

type CacheKey = (SocketAddr, u8, [u8; 16]);

#[derive(Debug, Clone)]
enum Entry {
    InFlight(Instant),
    Answered(Instant, Arc<[u8]>),
}

impl Entry {
    fn at(&self) -> Instant {
        match self {
            Entry::InFlight(t) | Entry::Answered(t, _) => *t,
        }
    }
}

/// What the cache knows about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// First time (or the earlier copy expired): process it.
    New,
    /// A copy is being processed: drop this one.
    InFlight,
    /// Already answered: send this response again.
    Answered(Arc<[u8]>),
}

/// Recent requests and their answers.
#[derive(Debug)]
pub struct ReplyCache {
    map: DashMap<CacheKey, Entry>,
    window: Duration,
}

impl ReplyCache {
    pub fn new(window: Duration) -> Self {
        ReplyCache {
            map: DashMap::with_shard_amount(64),
            window,
        }
    }

    /// Looks the request up and, when it is new, marks it in flight (atomically).
    pub fn begin(&self, reply: &Reply) -> Seen {
        let now = Instant::now();
        match self.map.entry(reply.key()) {
            dashmap::Entry::Vacant(v) => {
                v.insert(Entry::InFlight(now));
                Seen::New
            }
            dashmap::Entry::Occupied(mut o) => {
                if now.duration_since(o.get().at()) > self.window {
                    o.insert(Entry::InFlight(now));
                    return Seen::New;
                }
                match o.get() {
                    Entry::InFlight(_) => Seen::InFlight,
                    Entry::Answered(_, bytes) => Seen::Answered(bytes.clone()),
                }
            }
        }
    }

    fn answered(&self, reply: &Reply, bytes: Arc<[u8]>) {
        self.map
            .insert(reply.key(), Entry::Answered(Instant::now(), bytes));
    }

    /// The request was not recorded: let a retransmission be processed afresh.
    pub fn forget(&self, reply: &Reply) {
        self.map.remove(&reply.key());
    }

    /// Drops entries older than the window.
    pub fn purge(&self) {
        let now = Instant::now();
        self.map
            .retain(|_, e| now.duration_since(e.at()) <= self.window);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Encoded responses and where they go, handed to the sender task together.
type Outgoing = Vec<(SocketAddr, Arc<[u8]>)>;

/// Sends `datagrams` in `sendmmsg` calls, waiting while the socket buffer is full. A datagram
/// the kernel refuses is skipped (logged at debug): the NAS retransmits and the cache answers.
async fn send_all(socket: &UdpSocket, mut datagrams: &[(SocketAddr, &[u8])]) {
    let fd = socket.as_raw_fd();
    while !datagrams.is_empty() {
        match socket
            .async_io(Interest::WRITABLE, || mmsg::send_batch(fd, datagrams))
            .await
        {
            Ok(n) => datagrams = &datagrams[n.max(1).min(datagrams.len())..],
            Err(e) => {
                tracing::debug!(peer = %datagrams[0].0, error = %e, "response not sent");
                datagrams = &datagrams[1..];
            }
        }
    }
}

/// Sends Accounting-Responses on the listener's socket and records them in the cache.
///
/// With a sender task ([`Responder::with_sender`]) the caller only encodes and caches the
/// responses; the sends happen in that task, one `sendmmsg` per batch ([`mmsg`]), so the
/// writer starts its next batch at once.
#[derive(Debug, Clone)]
pub struct Responder {
    socket: Arc<UdpSocket>,
    cache: Arc<ReplyCache>,
    stats: Arc<Stats>,
    outbox: Option<mpsc::UnboundedSender<Outgoing>>,
}

impl Responder {
    /// A responder that sends in the caller's task.
    pub fn new(socket: Arc<UdpSocket>, cache: Arc<ReplyCache>, stats: Arc<Stats>) -> Self {
        Responder {
            socket,
            cache,
            stats,
            outbox: None,
        }
    }

    /// A responder whose sends happen in a task of their own. The task ends once every clone
    /// of the responder is dropped and everything handed to it is sent: await it on shutdown so
    /// that no answer to a committed request is lost. The channel is unbounded: a send
    /// takes microseconds, far less than a commit, so it holds at most a few batches' responses.
    pub fn with_sender(
        socket: Arc<UdpSocket>,
        cache: Arc<ReplyCache>,
        stats: Arc<Stats>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let sock = socket.clone();
        let task = tokio::spawn(async move {
            let mut batches = Vec::with_capacity(64);
            while rx.recv_many(&mut batches, 64).await > 0 {
                let out: Vec<(SocketAddr, &[u8])> = batches
                    .iter()
                    .flatten()
                    .map(|(peer, bytes)| (*peer, &bytes[..]))
                    .collect();
                send_all(&sock, &out).await;
                drop(out);
                batches.clear();
            }
        });
        let responder = Responder {
            socket,
            cache,
            stats,
            outbox: Some(tx),
        };
        (responder, task)
    }

    pub fn cache(&self) -> &ReplyCache {
        &self.cache
    }

    /// Answers a request whose event is durable (or needed no write).
    pub fn answer(&self, reply: &Reply) {
        self.answer_all(std::iter::once(reply));
    }

    /// Answers requests whose events are durable, in order.
    pub fn answer_all<'a>(&self, replies: impl IntoIterator<Item = &'a Reply>) {
        let mut out: Outgoing = Vec::new();
        for reply in replies {
            let Some(bytes) = reply.encode() else {
                // Only an oversized Proxy-State list can fail to encode; the NAS will
                // retransmit.
                tracing::warn!(peer = %reply.peer, "response could not be encoded");
                self.cache.forget(reply);
                continue;
            };
            let bytes: Arc<[u8]> = bytes.into();
            // Cache first: a retransmission racing the send must find the answer, not "in
            // flight".
            self.cache.answered(reply, bytes.clone());
            out.push((reply.peer, bytes));
        }
        if out.is_empty() {
            return;
        }
        Stats::add(&self.stats.responses, out.len() as u64);
        if let Some(outbox) = &self.outbox {
            match outbox.send(out) {
                Ok(()) => return,
                // The sender task is gone (shutdown): send here instead.
                Err(mpsc::error::SendError(back)) => out = back,
            }
        }
        for (peer, bytes) in &out {
            self.send(*peer, bytes);
        }
    }

    /// Sends a cached response again.
    pub fn resend(&self, peer: SocketAddr, bytes: &[u8]) {
        // Counted before it leaves: whoever receives it sees it counted.
        Stats::add(&self.stats.responses_resent, 1);
        self.send(peer, bytes);
    }

    /// The event was not recorded: no answer (RFC 2866 §2), and a retransmission is processed.
    pub fn abandon(&self, reply: &Reply) {
        self.cache.forget(reply);
    }

    fn send(&self, peer: SocketAddr, bytes: &[u8]) {
        // A full socket buffer drops the answer; the NAS retransmits and the cache answers.
        if let Err(e) = self.socket.try_send_to(bytes, peer) {
            tracing::debug!(%peer, error = %e, "response not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(peer: &str, identifier: u8, authenticator: [u8; 16]) -> Reply {
        Reply {
            peer: peer.parse().expect("address"),
            identifier,
            authenticator,
            secret: Arc::from(&b"s"[..]),
            proxy_state: Vec::new(),
        }
    }

    #[test]
    fn the_cache_key_tells_apart_everything_a_retransmission_keeps() {
        let base = reply("192.0.2.1:1812", 7, [1; 16]);
        assert_eq!(base.key(), reply("192.0.2.1:1812", 7, [1; 16]).key());
        let others = [
            reply("192.0.2.2:1812", 7, [1; 16]),
            reply("192.0.2.1:1813", 7, [1; 16]),
            reply("192.0.2.1:1812", 8, [1; 16]),
            reply("192.0.2.1:1812", 7, [2; 16]),
            // The same address in IPv4-mapped form on an IPv6 socket is another peer.
            reply("[::ffff:192.0.2.1]:1812", 7, [1; 16]),
            reply("[fe80::1%2]:1812", 7, [1; 16]),
        ];
        for other in &others {
            assert_ne!(base.key(), other.key(), "{other:?}");
        }
        assert_ne!(others[5].key(), reply("[fe80::1%3]:1812", 7, [1; 16]).key());
    }

    #[tokio::test]
    async fn a_request_is_new_then_in_flight_then_answered_with_its_bytes() {
        let cache = ReplyCache::new(Duration::from_secs(30));
        let r = reply("[2001:db8::1]:3799", 1, [9; 16]);
        assert_eq!(cache.begin(&r), Seen::New);
        assert_eq!(cache.begin(&r), Seen::InFlight);
        let bytes: Arc<[u8]> = Arc::from(&b"answer"[..]);
        cache.answered(&r, bytes.clone());
        assert_eq!(cache.begin(&r), Seen::Answered(bytes));
        assert_eq!(
            cache.begin(&reply("[2001:db8::1]:3799", 2, [9; 16])),
            Seen::New
        );
        cache.forget(&r);
        assert_eq!(cache.begin(&r), Seen::New);
        assert_eq!(cache.len(), 2);
    }
}
