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
    /// The database was unavailable and the journal is at its size cap; no response.
    JournalFull,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::UnknownClient,
        DropReason::BadAuthenticator,
        DropReason::BadMessageAuthenticator,
        DropReason::Malformed,
        DropReason::NotAccounting,
        DropReason::Duplicate,
        DropReason::QueueFull,
        DropReason::WriteFailed,
        DropReason::JournalFull,
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
            DropReason::JournalFull => "journal_full",
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
    /// Index entries fixed by reconciliation with SQL (changes made by other writers).
    pub drift: AtomicU64,
    /// Entries appended to the journal, and entries replayed from it into the database.
    pub journal_appended: AtomicU64,
    pub journal_replayed: AtomicU64,
    /// The stale sweeper's and the archiver's runs.
    pub sweeper: crate::jobs::JobStats,
    pub archiver: crate::jobs::JobStats,
    /// Disconnect attempts, results and round trips.
    pub disconnect: DisconnectStats,
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

/// Prometheus names of the disconnect counters ([`DisconnectStats`]).
pub const DISCONNECT_ATTEMPTS: &str = "radacctd_disconnect_attempts_total";
pub const DISCONNECT_RESULTS: &str = "radacctd_disconnect_results_total";
pub const DISCONNECT_ROUND_TRIP: &str = "radacctd_disconnect_round_trip_seconds";
pub const DISCONNECT_COA_RETRANSMITS: &str = "radacctd_disconnect_coa_retransmits_total";
pub const DISCONNECT_COA_IGNORED: &str = "radacctd_disconnect_coa_responses_ignored_total";
pub const DISCONNECT_COALESCED: &str = "radacctd_disconnect_coalesced_total";

/// A disconnect method (the `method` label of attempts and round trips).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectMethod {
    /// RFC 5176 Disconnect-Request.
    Coa,
    /// MikroTik RouterOS API fallback.
    Api,
}

impl DisconnectMethod {
    pub const ALL: [DisconnectMethod; 2] = [DisconnectMethod::Coa, DisconnectMethod::Api];

    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectMethod::Coa => "coa",
            DisconnectMethod::Api => "api",
        }
    }
}

/// How one disconnect attempt ended (labels `method` and `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectAttempt {
    CoaAck,
    /// Disconnect-NAK with Error-Cause 503 (Session-Context-Not-Found).
    CoaNakSessionNotFound,
    /// Any other Disconnect-NAK.
    CoaNak,
    /// No valid answer within the budget.
    CoaTimeout,
    /// Not sent: no secret for the NAS, an unencodable attribute, a wrong address family.
    CoaError,
    ApiRemoved,
    /// The router has no such active session.
    ApiNotFound,
    ApiFailed,
}

impl DisconnectAttempt {
    pub const ALL: [DisconnectAttempt; 8] = [
        DisconnectAttempt::CoaAck,
        DisconnectAttempt::CoaNakSessionNotFound,
        DisconnectAttempt::CoaNak,
        DisconnectAttempt::CoaTimeout,
        DisconnectAttempt::CoaError,
        DisconnectAttempt::ApiRemoved,
        DisconnectAttempt::ApiNotFound,
        DisconnectAttempt::ApiFailed,
    ];

    pub fn method(self) -> DisconnectMethod {
        match self {
            DisconnectAttempt::CoaAck
            | DisconnectAttempt::CoaNakSessionNotFound
            | DisconnectAttempt::CoaNak
            | DisconnectAttempt::CoaTimeout
            | DisconnectAttempt::CoaError => DisconnectMethod::Coa,
            DisconnectAttempt::ApiRemoved
            | DisconnectAttempt::ApiNotFound
            | DisconnectAttempt::ApiFailed => DisconnectMethod::Api,
        }
    }

    pub fn outcome(self) -> &'static str {
        match self {
            DisconnectAttempt::CoaAck => "ack",
            DisconnectAttempt::CoaNakSessionNotFound => "nak_session_not_found",
            DisconnectAttempt::CoaNak => "nak",
            DisconnectAttempt::CoaTimeout => "timeout",
            DisconnectAttempt::CoaError => "error",
            DisconnectAttempt::ApiRemoved => "removed",
            DisconnectAttempt::ApiNotFound => "not_found",
            DisconnectAttempt::ApiFailed => "failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a disconnect call answered (label `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectResult {
    Coa,
    Api,
    AlreadyClosed,
    Unreachable,
}

impl DisconnectResult {
    pub const ALL: [DisconnectResult; 4] = [
        DisconnectResult::Coa,
        DisconnectResult::Api,
        DisconnectResult::AlreadyClosed,
        DisconnectResult::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectResult::Coa => "coa",
            DisconnectResult::Api => "api",
            DisconnectResult::AlreadyClosed => "already_closed",
            DisconnectResult::Unreachable => "unreachable",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a datagram that reached the CoA client was not taken as an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoaIgnoreReason {
    Malformed,
    /// Not a Disconnect-ACK or Disconnect-NAK.
    UnexpectedCode,
    /// No request is waiting on that identifier.
    UnknownIdentifier,
    /// Not from the address and port the request went to.
    WrongSource,
    BadAuthenticator,
    BadMessageAuthenticator,
    /// A second valid answer to a request already answered.
    Duplicate,
}

impl CoaIgnoreReason {
    pub const ALL: [CoaIgnoreReason; 7] = [
        CoaIgnoreReason::Malformed,
        CoaIgnoreReason::UnexpectedCode,
        CoaIgnoreReason::UnknownIdentifier,
        CoaIgnoreReason::WrongSource,
        CoaIgnoreReason::BadAuthenticator,
        CoaIgnoreReason::BadMessageAuthenticator,
        CoaIgnoreReason::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CoaIgnoreReason::Malformed => "malformed",
            CoaIgnoreReason::UnexpectedCode => "unexpected_code",
            CoaIgnoreReason::UnknownIdentifier => "unknown_identifier",
            CoaIgnoreReason::WrongSource => "wrong_source",
            CoaIgnoreReason::BadAuthenticator => "bad_authenticator",
            CoaIgnoreReason::BadMessageAuthenticator => "bad_message_authenticator",
            CoaIgnoreReason::Duplicate => "duplicate",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (seconds) of the round-trip histogram buckets; a last `+Inf` bucket is implied.
pub const ROUND_TRIP_BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0, 10.0,
];

/// A round-trip histogram: cumulative-ready bucket counts, a count and a sum.
#[derive(Debug, Default)]
pub struct RoundTrips {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; ROUND_TRIP_BOUNDS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl RoundTrips {
    pub fn record(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let i = ROUND_TRIP_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(ROUND_TRIP_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Total of all recorded round trips.
    pub fn sum(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.sum_micros.load(Ordering::Relaxed))
    }

    /// Cumulative counts for each bound of [`ROUND_TRIP_BOUNDS`], then `+Inf`.
    pub fn cumulative(&self) -> [u64; ROUND_TRIP_BOUNDS.len() + 1] {
        let mut out = [0; ROUND_TRIP_BOUNDS.len() + 1];
        let mut acc = 0;
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            acc += b.load(Ordering::Relaxed);
            *o = acc;
        }
        out
    }
}

/// Disconnect counters (DESIGN §5: every attempt is counted).
#[derive(Debug, Default)]
pub struct DisconnectStats {
    attempts: [AtomicU64; DisconnectAttempt::ALL.len()],
    results: [AtomicU64; DisconnectResult::ALL.len()],
    ignored: [AtomicU64; CoaIgnoreReason::ALL.len()],
    /// Per [`DisconnectMethod`]: from the first send / connect to the outcome.
    round_trips: [RoundTrips; DisconnectMethod::ALL.len()],
    /// Disconnect-Requests sent again after a retry interval without an answer.
    pub coa_retransmits: AtomicU64,
    /// Calls that joined a disconnect of the same session already in flight.
    pub coalesced: AtomicU64,
}

impl DisconnectStats {
    pub fn attempt(&self, a: DisconnectAttempt, elapsed: std::time::Duration) {
        self.attempts[a.index()].fetch_add(1, Ordering::Relaxed);
        self.round_trips[a.method() as usize].record(elapsed);
    }

    pub fn attempt_count(&self, a: DisconnectAttempt) -> u64 {
        self.attempts[a.index()].load(Ordering::Relaxed)
    }

    pub fn result(&self, r: DisconnectResult) {
        self.results[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn result_count(&self, r: DisconnectResult) -> u64 {
        self.results[r.index()].load(Ordering::Relaxed)
    }

    pub fn ignored(&self, r: CoaIgnoreReason) {
        self.ignored[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn ignored_count(&self, r: CoaIgnoreReason) -> u64 {
        self.ignored[r.index()].load(Ordering::Relaxed)
    }

    pub fn round_trips(&self, m: DisconnectMethod) -> &RoundTrips {
        &self.round_trips[m as usize]
    }
}
