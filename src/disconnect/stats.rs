//! The disconnect service's counters (docs/ARCHITECTURE.md#disconnect: every attempt is counted):
//! attempts by method and outcome, results, ignored CoA answers, round trips; and those of the
//! CoA changes it sends (docs/ARCHITECTURE.md#session-control). Registered with the
//! application's [`Stats`] (one set per instance) and rendered by `/metrics` under the names in
//! [`crate::metrics`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::{
    COA_COALESCED, COA_REQUESTS, COA_ROUND_TRIP_BUCKET, COA_ROUND_TRIP_COUNT, Collect,
    DISCONNECT_ATTEMPTS, DISCONNECT_COA_IGNORED, DISCONNECT_COA_RETRANSMITS, DISCONNECT_COALESCED,
    DISCONNECT_RESULTS, DISCONNECT_ROUND_TRIP_BUCKET, DISCONNECT_ROUND_TRIP_COUNT, Exposition,
    Label, Stats, label,
};

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

/// How a CoA-Request that changes a session ended (label `outcome` of
/// `radacctd_coa_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoaResult {
    /// CoA-ACK.
    Ack,
    /// CoA-NAK (any Error-Cause).
    Nak,
    /// No valid answer within the budget.
    Timeout,
    /// Not sent: no secret for the NAS, no IP address, an unencodable attribute.
    Error,
}

impl CoaResult {
    pub const ALL: [CoaResult; 4] = [
        CoaResult::Ack,
        CoaResult::Nak,
        CoaResult::Timeout,
        CoaResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CoaResult::Ack => "ack",
            CoaResult::Nak => "nak",
            CoaResult::Timeout => "timeout",
            CoaResult::Error => "error",
        }
    }
}

/// Why a datagram that reached the CoA client was not taken as an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoaIgnoreReason {
    Malformed,
    /// Not an answer to the request waiting on its identifier: neither Disconnect-ACK/NAK
    /// (to a Disconnect-Request) nor CoA-ACK/NAK (to a CoA-Request).
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

/// Disconnect counters (docs/ARCHITECTURE.md#disconnect: every attempt is counted).
#[derive(Debug, Default)]
pub struct DisconnectStats {
    attempts: [AtomicU64; DisconnectAttempt::ALL.len()],
    results: [AtomicU64; DisconnectResult::ALL.len()],
    ignored: [AtomicU64; CoaIgnoreReason::ALL.len()],
    /// Per [`DisconnectMethod`]: from the first send / connect to the outcome.
    round_trips: [RoundTrips; DisconnectMethod::ALL.len()],
    /// Disconnect-Requests sent again after a retry interval without an answer.
    pub coa_retransmits: AtomicU64,
    /// Calls that joined a disconnect of the same session already in flight in this process
    /// (`scope="node"`).
    pub coalesced: AtomicU64,
    /// Disconnects answered with the outcome another node recorded for the session while this
    /// one waited for its lock, nothing sent (`scope="cluster"`).
    pub coalesced_cluster: AtomicU64,
    /// CoA-Requests sent to change a session, by [`CoaResult`].
    coa_requests: [AtomicU64; CoaResult::ALL.len()],
    /// From the first send of a CoA-Request to its answer (or the end of the budget).
    coa_round_trips: RoundTrips,
    /// CoA calls that joined the same change of the same session in flight in this process
    /// (`scope="node"`), or were answered by the outcome another node recorded (`"cluster"`).
    pub coa_coalesced: AtomicU64,
    pub coa_coalesced_cluster: AtomicU64,
}

impl DisconnectStats {
    /// Counts an attempt; `round_trip` is `None` when nothing was sent (no secret, say).
    pub fn attempt(&self, a: DisconnectAttempt, round_trip: Option<std::time::Duration>) {
        self.attempts[a.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(rtt) = round_trip {
            self.round_trips[a.method() as usize].record(rtt);
        }
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

    /// Counts a CoA-Request; `round_trip` is `None` when nothing was sent.
    pub fn coa_request(&self, r: CoaResult, round_trip: Option<std::time::Duration>) {
        self.coa_requests[r as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(rtt) = round_trip {
            self.coa_round_trips.record(rtt);
        }
    }

    pub fn coa_request_count(&self, r: CoaResult) -> u64 {
        self.coa_requests[r as usize].load(Ordering::Relaxed)
    }

    pub fn coa_round_trips(&self) -> &RoundTrips {
        &self.coa_round_trips
    }

    pub fn round_trips(&self, m: DisconnectMethod) -> &RoundTrips {
        &self.round_trips[m as usize]
    }

    /// The disconnect counters of this `Stats` (registered on first use).
    pub fn of(stats: &Stats) -> Arc<DisconnectStats> {
        stats.component("disconnect", DisconnectStats::default)
    }
}

impl Collect for DisconnectStats {
    fn collect(&self, out: &Exposition<'_>) {
        let abs = |name, labels, value| out.counter(name, labels, value);
        for a in DisconnectAttempt::ALL {
            abs(
                DISCONNECT_ATTEMPTS,
                vec![
                    label("method", a.method().as_str()),
                    label("outcome", a.outcome()),
                ],
                self.attempt_count(a),
            );
        }
        for r in DisconnectResult::ALL {
            abs(
                DISCONNECT_RESULTS,
                vec![label("result", r.as_str())],
                self.result_count(r),
            );
        }
        for r in CoaIgnoreReason::ALL {
            abs(
                DISCONNECT_COA_IGNORED,
                vec![label("reason", r.as_str())],
                self.ignored_count(r),
            );
        }
        abs(
            DISCONNECT_COA_RETRANSMITS,
            vec![],
            self.coa_retransmits.load(Ordering::Relaxed),
        );
        abs(
            DISCONNECT_COALESCED,
            vec![label("scope", "node")],
            self.coalesced.load(Ordering::Relaxed),
        );
        abs(
            DISCONNECT_COALESCED,
            vec![label("scope", "cluster")],
            self.coalesced_cluster.load(Ordering::Relaxed),
        );
        // The round-trip histogram is kept as bucket counts; expose them as one counter per
        // bucket bound (`le`), plus count, per method.
        for m in DisconnectMethod::ALL {
            let method = || vec![label("method", m.as_str())];
            histogram(
                out,
                self.round_trips(m),
                (DISCONNECT_ROUND_TRIP_BUCKET, DISCONNECT_ROUND_TRIP_COUNT),
                method,
            );
        }
        for r in CoaResult::ALL {
            abs(
                COA_REQUESTS,
                vec![label("outcome", r.as_str())],
                self.coa_request_count(r),
            );
        }
        histogram(
            out,
            &self.coa_round_trips,
            (COA_ROUND_TRIP_BUCKET, COA_ROUND_TRIP_COUNT),
            Vec::new,
        );
        abs(
            COA_COALESCED,
            vec![label("scope", "node")],
            self.coa_coalesced.load(Ordering::Relaxed),
        );
        abs(
            COA_COALESCED,
            vec![label("scope", "cluster")],
            self.coa_coalesced_cluster.load(Ordering::Relaxed),
        );
    }
}

/// One round-trip histogram: a counter per bucket bound (`le`, cumulative) and the count, each
/// with the labels `labels` gives.
fn histogram(
    out: &Exposition<'_>,
    rt: &RoundTrips,
    (bucket, count): (&'static str, &'static str),
    labels: impl Fn() -> Vec<Label>,
) {
    for (bound, n) in ROUND_TRIP_BOUNDS
        .iter()
        .map(|b| b.to_string())
        .chain(std::iter::once("+Inf".to_owned()))
        .zip(rt.cumulative())
    {
        let mut l = labels();
        l.push(label("le", bound));
        out.counter(bucket, l, n);
    }
    out.counter(count, labels(), rt.count());
}
