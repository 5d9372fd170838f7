//! Counters the daemon keeps about itself, and their Prometheus exposition. Each application
//! instance owns one `Stats` (tests read it directly) with its own `metrics-exporter-prometheus`
//! recorder: counters are plain atomics on the hot path and are copied into the recorder when
//! `/metrics` is scraped; histograms are recorded as they happen. No global recorder, so
//! several instances (tests) never mix their numbers.
//!
//! Metric names are the constants below (`radacctd_` prefix, Prometheus conventions). Labels
//! only come from bounded sets (packet type, drop reason, NAS address from the client table,
//! route template, method, outcome), never from packet contents.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

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
    /// The database was unavailable and the journal append failed (disk full, I/O error); no
    /// response.
    JournalFailed,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
        DropReason::UnknownClient,
        DropReason::BadAuthenticator,
        DropReason::BadMessageAuthenticator,
        DropReason::Malformed,
        DropReason::NotAccounting,
        DropReason::Duplicate,
        DropReason::QueueFull,
        DropReason::WriteFailed,
        DropReason::JournalFull,
        DropReason::JournalFailed,
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
            DropReason::JournalFailed => "journal_failed",
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

/// Where the writer took a session's row from (the `source` label of
/// `radacctd_write_sessions_total`): the live index (no read), none (a new row, inserted
/// without a read), a read of the table, or a read under locks after the table refused the
/// write (another writer had changed the row, or it already existed).
pub const ROW_SOURCES: [&str; 4] = ["index", "new", "read", "redone"];

// Metric names.
pub const PACKETS_RECEIVED: &str = "radacctd_packets_received_total";
pub const PACKETS_DROPPED: &str = "radacctd_packets_dropped_total";
pub const RESPONSES_SENT: &str = "radacctd_responses_sent_total";
pub const RESPONSES_RESENT: &str = "radacctd_responses_resent_total";
pub const EVENTS_UNCHANGED: &str = "radacctd_events_unchanged_total";
pub const CLOCK_SKEW: &str = "radacctd_event_timestamp_skew_total";
pub const WRITE_BATCHES: &str = "radacctd_write_batches_total";
pub const WRITE_BATCHES_PAIRED: &str = "radacctd_write_batches_paired_total";
pub const WRITE_SESSIONS: &str = "radacctd_write_sessions_total";
pub const WRITE_BATCH_FAILURES: &str = "radacctd_write_batch_failures_total";
pub const WRITE_BATCH_SIZE: &str = "radacctd_write_batch_size";
pub const COMMIT_DURATION: &str = "radacctd_commit_duration_seconds";
pub const QUEUE_DEPTH: &str = "radacctd_ingest_queue_depth";
pub const ACTIVE_SESSIONS: &str = "radacctd_active_sessions";
pub const ACTIVE_SESSIONS_BY_NAS: &str = "radacctd_active_sessions_by_nas";
pub const INDEX_REBUILD: &str = "radacctd_index_rebuild_duration_seconds";
pub const INDEX_DRIFT: &str = "radacctd_index_drift_total";
pub const JOURNAL_ENTRIES: &str = "radacctd_journal_entries";
pub const JOURNAL_BYTES: &str = "radacctd_journal_bytes";
pub const JOURNAL_OLDEST_AGE: &str = "radacctd_journal_oldest_entry_age_seconds";
pub const JOURNAL_APPENDED: &str = "radacctd_journal_appended_total";
pub const JOURNAL_REPLAYED: &str = "radacctd_journal_replayed_total";
pub const JOURNAL_CORRUPT_REGIONS: &str = "radacctd_journal_corrupt_regions_total";
pub const JOURNAL_CORRUPT_BYTES: &str = "radacctd_journal_corrupt_bytes_total";
pub const JOURNAL_REJECTED: &str = "radacctd_journal_rejected_total";
pub const JOURNAL_REJECTED_ENTRIES: &str = "radacctd_journal_rejected_entries";
pub const API_REQUESTS: &str = "radacctd_api_requests_total";
pub const API_DURATION: &str = "radacctd_api_request_duration_seconds";
pub const DB_POOL: &str = "radacctd_db_pool_connections";
pub const BUILD_INFO: &str = "radacctd_build_info";
pub const JOB_RUNS: &str = "radacctd_job_runs_total";
pub const JOB_FAILURES: &str = "radacctd_job_failures_total";
pub const JOB_ROWS: &str = "radacctd_job_rows_total";
pub const JOB_LAST_SUCCESS: &str = "radacctd_job_last_success_timestamp_seconds";
pub const JOB_LAST_DURATION: &str = "radacctd_job_last_run_duration_seconds";

/// Histogram buckets for durations (seconds) and batch sizes.
const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Values only the application knows at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub active_sessions: i64,
    pub active_by_nas: Vec<(String, i64)>,
    pub queue_depth: usize,
    /// (entries, bytes, age of the oldest entry in seconds) when the journal is enabled.
    pub journal: Option<(u64, u64, Option<i64>)>,
    /// (connections open, of which idle).
    pub pool: (u32, u32),
    pub index_rebuild: Duration,
    /// Corruption found in the journal and entries it rejected, when it is enabled.
    pub journal_health: Option<crate::ingest::journal::JournalHealth>,
}

/// The per-instance Prometheus recorder.
struct Exporter {
    recorder: PrometheusRecorder,
    commit_duration: Histogram,
    batch_size: Histogram,
    /// NAS labels rendered last time, so that a NAS with no sessions left drops to 0.
    nas_seen: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Default for Exporter {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(WRITE_BATCH_SIZE.into()), &BATCH_BUCKETS)
            })
            .map(PrometheusBuilder::build_recorder)
            // Only an empty bucket list fails, and ours are constants.
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let commit_duration = histogram(&recorder, COMMIT_DURATION, vec![]);
        let batch_size = histogram(&recorder, WRITE_BATCH_SIZE, vec![]);
        Exporter {
            recorder,
            commit_duration,
            batch_size,
            nas_seen: Mutex::default(),
        }
    }
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

fn key(name: &'static str, labels: Vec<Label>) -> Key {
    Key::from_parts(name, labels)
}

fn histogram(r: &PrometheusRecorder, name: &'static str, labels: Vec<Label>) -> Histogram {
    r.register_histogram(&key(name, labels), &METADATA)
}

fn label(k: &'static str, v: impl Into<String>) -> Label {
    Label::new(k, v.into())
}

/// Ingest and listener counters.
#[derive(Debug, Default)]
pub struct Stats {
    exporter: Exporter,
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
    /// Commits started while another commit of the writer was still running (pipelined batches
    /// and parts of split batches; counted when they commit).
    pub paired_batches: AtomicU64,
    /// Sessions in committed batches by where the writer took their row from, in
    /// [`ROW_SOURCES`] order.
    pub row_sources: [AtomicU64; ROW_SOURCES.len()],
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

    /// A committed write: its duration and how many events it held.
    pub fn observe_commit(&self, elapsed: Duration, events: usize) {
        self.exporter.commit_duration.record(elapsed.as_secs_f64());
        self.exporter.batch_size.record(events as f64);
    }

    /// One API request, by route template (a bounded set) and status.
    pub fn api_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.counter(
            API_REQUESTS,
            vec![label("route", route), label("status", status.to_string())],
        )
        .increment(1);
        histogram(
            &self.exporter.recorder,
            API_DURATION,
            vec![label("route", route)],
        )
        .record(elapsed.as_secs_f64());
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.exporter
            .recorder
            .register_counter(&key(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.exporter
            .recorder
            .register_gauge(&key(name, labels), &METADATA)
    }

    /// The Prometheus text exposition (format 0.0.4) of everything.
    pub fn render(&self, live: &Live) -> String {
        let abs = |name: &'static str, labels: Vec<Label>, v: u64| {
            self.counter(name, labels).absolute(v);
        };
        for (i, t) in PACKET_TYPES.iter().enumerate() {
            abs(
                PACKETS_RECEIVED,
                vec![label("type", *t)],
                self.received[i].load(Ordering::Relaxed),
            );
        }
        for r in DropReason::ALL {
            abs(
                PACKETS_DROPPED,
                vec![label("reason", r.as_str())],
                self.dropped_count(r),
            );
        }
        abs(RESPONSES_SENT, vec![], Self::get(&self.responses));
        abs(RESPONSES_RESENT, vec![], Self::get(&self.responses_resent));
        abs(EVENTS_UNCHANGED, vec![], Self::get(&self.unchanged));
        abs(CLOCK_SKEW, vec![], Self::get(&self.clock_skew));
        abs(WRITE_BATCHES, vec![], Self::get(&self.batches));
        abs(
            WRITE_BATCHES_PAIRED,
            vec![],
            Self::get(&self.paired_batches),
        );
        for (i, source) in ROW_SOURCES.iter().enumerate() {
            abs(
                WRITE_SESSIONS,
                vec![label("source", *source)],
                Self::get(&self.row_sources[i]),
            );
        }
        abs(
            WRITE_BATCH_FAILURES,
            vec![],
            Self::get(&self.batch_failures),
        );
        abs(INDEX_DRIFT, vec![], Self::get(&self.drift));
        abs(JOURNAL_APPENDED, vec![], Self::get(&self.journal_appended));
        abs(JOURNAL_REPLAYED, vec![], Self::get(&self.journal_replayed));
        for (job, st) in [("sweeper", &self.sweeper), ("archiver", &self.archiver)] {
            let l = || vec![label("job", job)];
            abs(JOB_RUNS, l(), st.runs.load(Ordering::Relaxed));
            abs(JOB_FAILURES, l(), st.failures.load(Ordering::Relaxed));
            abs(JOB_ROWS, l(), st.rows.load(Ordering::Relaxed));
            self.gauge(JOB_LAST_SUCCESS, l())
                .set(st.last_success.load(Ordering::Relaxed) as f64);
            self.gauge(JOB_LAST_DURATION, l())
                .set(st.last_duration_ms.load(Ordering::Relaxed) as f64 / 1000.0);
        }
        self.disconnect
            .render(&|name, labels, v| abs(name, labels, v));

        self.gauge(ACTIVE_SESSIONS, vec![])
            .set(live.active_sessions as f64);
        {
            let mut seen = self
                .exporter
                .nas_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now: HashSet<String> = live.active_by_nas.iter().map(|(n, _)| n.clone()).collect();
            for gone in seen.difference(&now) {
                self.gauge(ACTIVE_SESSIONS_BY_NAS, vec![label("nas", gone.clone())])
                    .set(0.0);
            }
            for (nas, n) in &live.active_by_nas {
                self.gauge(ACTIVE_SESSIONS_BY_NAS, vec![label("nas", nas.clone())])
                    .set(*n as f64);
            }
            seen.extend(now);
        }
        self.gauge(QUEUE_DEPTH, vec![]).set(live.queue_depth as f64);
        if let Some((entries, bytes, age)) = live.journal {
            self.gauge(JOURNAL_ENTRIES, vec![]).set(entries as f64);
            self.gauge(JOURNAL_BYTES, vec![]).set(bytes as f64);
            self.gauge(JOURNAL_OLDEST_AGE, vec![])
                .set(age.unwrap_or(0) as f64);
        }
        if let Some(h) = live.journal_health {
            abs(JOURNAL_CORRUPT_REGIONS, vec![], h.corrupt_regions);
            abs(JOURNAL_CORRUPT_BYTES, vec![], h.corrupt_bytes);
            abs(JOURNAL_REJECTED, vec![], h.rejected);
            self.gauge(JOURNAL_REJECTED_ENTRIES, vec![])
                .set(h.rejected_entries as f64);
        }
        let (open, idle) = live.pool;
        self.gauge(DB_POOL, vec![label("state", "idle")])
            .set(f64::from(idle));
        self.gauge(DB_POOL, vec![label("state", "in_use")])
            .set(f64::from(open.saturating_sub(idle)));
        self.gauge(INDEX_REBUILD, vec![])
            .set(live.index_rebuild.as_secs_f64());
        self.gauge(
            BUILD_INFO,
            vec![label("version", env!("CARGO_PKG_VERSION"))],
        )
        .set(1.0);
        let handle = self.exporter.recorder.handle();
        handle.run_upkeep();
        handle.render()
    }
}

/// Prometheus names of the disconnect counters ([`DisconnectStats`]).
pub const DISCONNECT_ATTEMPTS: &str = "radacctd_disconnect_attempts_total";
pub const DISCONNECT_RESULTS: &str = "radacctd_disconnect_results_total";
pub const DISCONNECT_ROUND_TRIP: &str = "radacctd_disconnect_round_trip_seconds";
/// The round-trip histogram's buckets and count, as Prometheus spells a histogram's series.
pub const DISCONNECT_ROUND_TRIP_BUCKET: &str = "radacctd_disconnect_round_trip_seconds_bucket";
pub const DISCONNECT_ROUND_TRIP_COUNT: &str = "radacctd_disconnect_round_trip_seconds_count";
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

    pub fn round_trips(&self, m: DisconnectMethod) -> &RoundTrips {
        &self.round_trips[m as usize]
    }

    /// Copies the counters into the exposition (`abs(name, labels, value)`).
    fn render(&self, abs: &dyn Fn(&'static str, Vec<Label>, u64)) {
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
            vec![],
            self.coalesced.load(Ordering::Relaxed),
        );
        // The round-trip histogram is kept as bucket counts; expose them as one counter per
        // bucket bound (`le`), plus count and sum, per method.
        for m in DisconnectMethod::ALL {
            let rt = self.round_trips(m);
            for (bound, n) in ROUND_TRIP_BOUNDS
                .iter()
                .map(|b| b.to_string())
                .chain(std::iter::once("+Inf".to_owned()))
                .zip(rt.cumulative())
            {
                abs(
                    DISCONNECT_ROUND_TRIP_BUCKET,
                    vec![label("method", m.as_str()), label("le", bound)],
                    n,
                );
            }
            abs(
                DISCONNECT_ROUND_TRIP_COUNT,
                vec![label("method", m.as_str())],
                rt.count(),
            );
        }
    }
}
