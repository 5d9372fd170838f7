//! Counters the daemon keeps about itself. Each application instance owns one `Stats`
//! (tests read it directly); metric names for the Prometheus exposition are defined here too.
//!
//! Labels only come from the bounded enums below, never from packet contents.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::radius::accounting::EventKind;

/// Why a datagram was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The source address is not a configured client nor in the `nas` table.
    UnknownClient,
    /// The Request Authenticator does not match the client's secret.
    BadAuthenticator,
    /// A Message-Authenticator is present and wrong.
    BadMessageAuthenticator,
    /// The datagram is not a well-formed RADIUS packet.
    Malformed,
    /// A well-formed packet that is not an Accounting-Request.
    NotAccounting,
    /// A retransmission of a request still being processed.
    Duplicate,
    /// The ingest queue is full; the NAS will retransmit.
    QueueFull,
    /// The write of the event failed; no response, the NAS will retransmit.
    WriteFailed,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::UnknownClient,
        DropReason::BadAuthenticator,
        DropReason::BadMessageAuthenticator,
        DropReason::Malformed,
        DropReason::NotAccounting,
        DropReason::Duplicate,
        DropReason::QueueFull,
        DropReason::WriteFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownClient => "unknown_client",
            DropReason::BadAuthenticator => "bad_authenticator",
            DropReason::BadMessageAuthenticator => "bad_message_authenticator",
            DropReason::Malformed => "malformed",
            DropReason::NotAccounting => "not_accounting",
            DropReason::Duplicate => "duplicate",
            DropReason::QueueFull => "queue_full",
            DropReason::WriteFailed => "write_failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const KINDS: usize = 6;

fn kind_index(kind: Option<EventKind>) -> usize {
    match kind {
        Some(EventKind::Start) => 0,
        Some(EventKind::InterimUpdate) => 1,
        Some(EventKind::Stop) => 2,
        Some(EventKind::AccountingOn) => 3,
        Some(EventKind::AccountingOff) => 4,
        None => 5,
    }
}

/// Packet-type labels, in the order of the per-type counters.
pub const PACKET_TYPES: [&str; KINDS] = [
    "start",
    "interim_update",
    "stop",
    "accounting_on",
    "accounting_off",
    "other",
];

/// Ingest and listener counters.
#[derive(Debug, Default)]
pub struct Stats {
    received: [AtomicU64; KINDS],
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Accounting-Responses sent (first answers).
    pub responses: AtomicU64,
    /// Accounting-Responses re-sent from the reply cache for a retransmission.
    pub responses_resent: AtomicU64,
    /// Events that changed nothing (repeats, interims after a Stop, ignored status types).
    pub unchanged: AtomicU64,
    /// Event-Timestamps replaced because they were too far from the receive time.
    pub clock_skew: AtomicU64,
    /// Batches committed, events in them, and transactions that failed.
    pub batches: AtomicU64,
    pub batch_events: AtomicU64,
    pub batch_failures: AtomicU64,
}

impl Stats {
    pub fn received(&self, kind: Option<EventKind>) {
        self.received[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn received_count(&self, kind: Option<EventKind>) -> u64 {
        self.received[kind_index(kind)].load(Ordering::Relaxed)
    }

    pub fn dropped(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
