//! Counters the daemon keeps about itself, and their Prometheus exposition. Each application
//! instance owns one `Stats` (tests read it directly) with its own `metrics-exporter-prometheus`
//! recorder: counters are plain atomics on the hot path and are copied into the recorder when
//! `/metrics` is scraped; histograms are recorded as they happen. No global recorder, so
//! several instances (tests) never mix their numbers.
//!
//! `Stats` holds the accounting path's counters (listener, responder and writer share the drop
//! reasons and `unchanged`) and the API's. Other components own theirs (the disconnect
//! service, the jobs) and register them with [`Stats::component`] as a [`Collect`], so this
//! module depends on nothing of ours; [`server`] serves `/metrics`.
//!
//! Metric names are the constants below (`radacctd_` prefix, Prometheus conventions). Labels
//! only come from bounded sets (packet type, drop reason, NAS address from the client table,
//! route template, method, outcome), never from packet contents.

pub mod server;

use std::any::{Any, TypeId};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::node::Node;
use metrics::{Counter, Gauge, Histogram, Key, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

pub use metrics::Label;

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

/// The `type` label of received Accounting-Requests: their Acct-Status-Type, or `other` for
/// the statuses that are answered and not recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Start,
    InterimUpdate,
    Stop,
    AccountingOn,
    AccountingOff,
    Other,
}

impl PacketType {
    pub const ALL: [PacketType; 6] = [
        PacketType::Start,
        PacketType::InterimUpdate,
        PacketType::Stop,
        PacketType::AccountingOn,
        PacketType::AccountingOff,
        PacketType::Other,
    ];

    pub fn as_str(self) -> &'static str {
        PACKET_TYPES[self as usize]
    }
}

/// Packet-type labels, in [`PacketType`] order.
pub const PACKET_TYPES: [&str; PacketType::ALL.len()] = [
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
/// Seconds the ingest thread has spent running tasks since start-up, wall-clock (time it waited
/// for a CPU while busy counts too): its rate is the share of the thread in use.
pub const INGEST_THREAD_BUSY: &str = "radacctd_ingest_thread_busy_seconds";
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
/// 1 while this node holds the jobs leadership (runs the sweeper and the archiver), else 0.
pub const JOBS_LEADER: &str = "radacctd_jobs_leader";
/// Index entries changed by other writers' commits, applied from their change notifications.
pub const REMOTE_CHANGES: &str = "radacctd_index_remote_changes_total";
/// From another writer's statement to its application to this node's index.
pub const COHERENCE_LAG: &str = "radacctd_index_coherence_lag_seconds";
/// 1 while the live index is known to follow every writer's committed changes (the change
/// listener is connected and has reconciled), else 0.
pub const INDEX_COHERENT: &str = "radacctd_index_coherent";
pub const JOB_RUNS: &str = "radacctd_job_runs_total";
pub const JOB_FAILURES: &str = "radacctd_job_failures_total";
pub const JOB_ROWS: &str = "radacctd_job_rows_total";
pub const JOB_LAST_SUCCESS: &str = "radacctd_job_last_success_timestamp_seconds";
pub const JOB_LAST_DURATION: &str = "radacctd_job_last_run_duration_seconds";

/// Verified Accounting-Requests per NAS address (`nas`) and status type (`type`).
pub const NAS_PACKETS: &str = "radacctd_nas_packets_total";
/// Requests from a known NAS whose Request Authenticator did not verify (a wrong secret).
pub const NAS_BAD_AUTHENTICATOR: &str = "radacctd_nas_bad_authenticator_total";
/// Epoch seconds of a NAS's last verified Accounting-Request.
pub const NAS_LAST_PACKET: &str = "radacctd_nas_last_packet_timestamp_seconds";
/// The median interval between a session's updates seen in a NAS's Interim-Updates (0 until
/// one was seen).
pub const NAS_INTERIM_INTERVAL: &str = "radacctd_nas_interim_interval_seconds";
/// Epoch seconds of a NAS's last Accounting-On (`type="on"`) and Accounting-Off (`"off"`).
pub const NAS_LAST_ACCOUNTING_ONOFF: &str = "radacctd_nas_last_accounting_onoff_timestamp_seconds";
/// Disconnect and CoA requests sent to a NAS.
pub const NAS_COA_REQUESTS: &str = "radacctd_nas_coa_requests_total";
/// Disconnect and CoA requests to a NAS that got no answer or could not be sent.
pub const NAS_COA_FAILURES: &str = "radacctd_nas_coa_failures_total";
/// Round-trip percentiles (`quantile` 0.5 and 0.99) of a NAS's answered Disconnect/CoA
/// requests, over the last 256 (NaN before the first answer).
pub const NAS_COA_RTT: &str = "radacctd_nas_coa_round_trip_seconds";
/// 1 when the NAS's RouterOS API answered at the last contact, 0 when it failed, NaN before
/// any contact.
pub const NAS_API_UP: &str = "radacctd_nas_api_up";
/// Reconciliations with a router by `outcome` (`ok`: a complete answer; `failed`).
pub const NAS_RECONCILE_RUNS: &str = "radacctd_nas_reconcile_runs_total";
/// Ghost sessions closed by the reconciliation with a router.
pub const NAS_RECONCILE_GHOSTS: &str = "radacctd_nas_reconcile_ghosts_total";
/// Zombie sessions (on the router, not open here) found by the last reconciliation.
pub const NAS_RECONCILE_ZOMBIES: &str = "radacctd_nas_reconcile_zombies";
/// Sessions with another framed IP or MAC on the router, at the last reconciliation.
pub const NAS_RECONCILE_MISMATCHES: &str = "radacctd_nas_reconcile_mismatches";
/// Epoch seconds of the last reconciliation with a complete answer from the router.
pub const NAS_RECONCILE_LAST: &str = "radacctd_nas_reconcile_last_success_timestamp_seconds";

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
    /// The journal's state, when it is enabled.
    pub journal: Option<LiveJournal>,
    /// (connections open, of which idle).
    pub pool: (u32, u32),
    pub index_rebuild: Duration,
    /// How long the ingest thread has run tasks, when it has a thread of its own
    /// (`radius.ingest_thread`).
    pub ingest_busy: Option<Duration>,
}

/// The journal at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveJournal {
    pub entries: u64,
    pub bytes: u64,
    /// Age of the oldest entry in seconds, if any.
    pub oldest_age: Option<i64>,
    /// Unreadable ranges found when it was opened, and their bytes.
    pub corrupt_regions: u64,
    pub corrupt_bytes: u64,
    /// Entries this process moved to `<journal>.rejected`, and entries in that file now.
    pub rejected: u64,
    pub rejected_entries: u64,
}

/// Counters a component owns and registers with [`Stats::component`]; copied into the
/// exposition at every scrape.
pub trait Collect: Any + Send + Sync {
    fn collect(&self, out: &Exposition<'_>);
}

/// Where a [`Collect`] writes its values at scrape time.
#[derive(Debug)]
pub struct Exposition<'a> {
    stats: &'a Stats,
}

impl Exposition<'_> {
    /// Sets a counter to `value` (the component counts; the exposition copies).
    pub fn counter(&self, name: &'static str, labels: Vec<Label>, value: u64) {
        self.stats.counter(name, labels).absolute(value);
    }

    pub fn gauge(&self, name: &'static str, labels: Vec<Label>, value: f64) {
        self.stats.gauge(name, labels).set(value);
    }
}

/// A registered component: its type and key, and its counters.
struct Component {
    type_id: TypeId,
    key: &'static str,
    collect: Arc<dyn Collect>,
}

/// The per-instance Prometheus recorder.
struct Exporter {
    recorder: PrometheusRecorder,
    commit_duration: Histogram,
    batch_size: Histogram,
    coherence_lag: Histogram,
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
        let coherence_lag = histogram(&recorder, COHERENCE_LAG, vec![]);
        Exporter {
            recorder,
            commit_duration,
            batch_size,
            coherence_lag,
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

/// A metric label.
pub fn label(k: &'static str, v: impl Into<String>) -> Label {
    Label::new(k, v.into())
}

/// The accounting path's counters, the API's, and the components registered with
/// [`Stats::component`].
#[derive(Default)]
pub struct Stats {
    exporter: Exporter,
    received: [AtomicU64; PacketType::ALL.len()],
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
    /// Index entries changed by other writers' notified commits (docs/HA.md).
    pub remote_changes: AtomicU64,
    /// Entries appended to the journal, and entries replayed from it into the database.
    pub journal_appended: AtomicU64,
    pub journal_replayed: AtomicU64,
    /// Counters owned by other components (the disconnect service, the jobs), in the order
    /// they registered.
    components: Mutex<Vec<Component>>,
    /// This node's name and standing (`build_info`'s `node` label, the leader and coherence
    /// gauges).
    node: Arc<Node>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats").finish_non_exhaustive()
    }
}

impl Stats {
    /// Counters for the node `node`.
    pub fn for_node(node: Arc<Node>) -> Stats {
        Stats {
            node,
            ..Stats::default()
        }
    }

    /// This node's name and standing.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub fn received(&self, packet_type: PacketType) {
        self.received[packet_type as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn received_count(&self, packet_type: PacketType) -> u64 {
        self.received[packet_type as usize].load(Ordering::Relaxed)
    }

    /// The counters of type `T` registered under `key`, registered now (made by `make`) if
    /// none are: every holder of this `Stats` shares them, and `/metrics` renders them.
    pub fn component<T: Collect>(&self, key: &'static str, make: impl FnOnce() -> T) -> Arc<T> {
        let mut components = self.components.lock().unwrap_or_else(|e| e.into_inner());
        let found = components
            .iter()
            .filter(|c| c.type_id == TypeId::of::<T>() && c.key == key)
            .find_map(|c| {
                let any: Arc<dyn Any + Send + Sync> = c.collect.clone();
                any.downcast::<T>().ok()
            });
        if let Some(found) = found {
            return found;
        }
        let made = Arc::new(make());
        components.push(Component {
            type_id: TypeId::of::<T>(),
            key,
            collect: made.clone(),
        });
        made
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

    /// Another writer's statement reached the index this many microseconds after it ran
    /// (database clock to this host's: skew between them shows here too).
    pub fn observe_coherence_lag(&self, micros: i64) {
        self.exporter
            .coherence_lag
            .record(micros.max(0) as f64 / 1_000_000.0);
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
        abs(REMOTE_CHANGES, vec![], Self::get(&self.remote_changes));
        abs(JOURNAL_APPENDED, vec![], Self::get(&self.journal_appended));
        abs(JOURNAL_REPLAYED, vec![], Self::get(&self.journal_replayed));
        let components: Vec<Arc<dyn Collect>> = self
            .components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|c| c.collect.clone())
            .collect();
        let out = Exposition { stats: self };
        for c in components {
            c.collect(&out);
        }

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
        if let Some(j) = live.journal {
            self.gauge(JOURNAL_ENTRIES, vec![]).set(j.entries as f64);
            self.gauge(JOURNAL_BYTES, vec![]).set(j.bytes as f64);
            self.gauge(JOURNAL_OLDEST_AGE, vec![])
                .set(j.oldest_age.unwrap_or(0) as f64);
            abs(JOURNAL_CORRUPT_REGIONS, vec![], j.corrupt_regions);
            abs(JOURNAL_CORRUPT_BYTES, vec![], j.corrupt_bytes);
            abs(JOURNAL_REJECTED, vec![], j.rejected);
            self.gauge(JOURNAL_REJECTED_ENTRIES, vec![])
                .set(j.rejected_entries as f64);
        }
        let (open, idle) = live.pool;
        self.gauge(DB_POOL, vec![label("state", "idle")])
            .set(f64::from(idle));
        self.gauge(DB_POOL, vec![label("state", "in_use")])
            .set(f64::from(open.saturating_sub(idle)));
        self.gauge(INDEX_REBUILD, vec![])
            .set(live.index_rebuild.as_secs_f64());
        if let Some(busy) = live.ingest_busy {
            self.gauge(INGEST_THREAD_BUSY, vec![])
                .set(busy.as_secs_f64());
        }
        self.gauge(
            BUILD_INFO,
            vec![
                label("version", env!("CARGO_PKG_VERSION")),
                label("node", self.node.name()),
            ],
        )
        .set(1.0);
        self.gauge(JOBS_LEADER, vec![])
            .set(if self.node.leader() { 1.0 } else { 0.0 });
        self.gauge(INDEX_COHERENT, vec![])
            .set(if self.node.coherent() { 1.0 } else { 0.0 });
        let handle = self.exporter.recorder.handle();
        handle.run_upkeep();
        handle.render()
    }
}

/// Prometheus names of the disconnect counters (`disconnect::DisconnectStats`).
pub const DISCONNECT_ATTEMPTS: &str = "radacctd_disconnect_attempts_total";
pub const DISCONNECT_RESULTS: &str = "radacctd_disconnect_results_total";
pub const DISCONNECT_ROUND_TRIP: &str = "radacctd_disconnect_round_trip_seconds";
/// The round-trip histogram's buckets and count, as Prometheus spells a histogram's series.
pub const DISCONNECT_ROUND_TRIP_BUCKET: &str = "radacctd_disconnect_round_trip_seconds_bucket";
pub const DISCONNECT_ROUND_TRIP_COUNT: &str = "radacctd_disconnect_round_trip_seconds_count";
pub const DISCONNECT_COA_RETRANSMITS: &str = "radacctd_disconnect_coa_retransmits_total";
pub const DISCONNECT_COA_IGNORED: &str = "radacctd_disconnect_coa_responses_ignored_total";
pub const DISCONNECT_COALESCED: &str = "radacctd_disconnect_coalesced_total";
/// Prometheus names of the CoA change counters (also `disconnect::DisconnectStats`).
pub const COA_REQUESTS: &str = "radacctd_coa_requests_total";
pub const COA_ROUND_TRIP: &str = "radacctd_coa_round_trip_seconds";
pub const COA_ROUND_TRIP_BUCKET: &str = "radacctd_coa_round_trip_seconds_bucket";
pub const COA_ROUND_TRIP_COUNT: &str = "radacctd_coa_round_trip_seconds_count";
pub const COA_COALESCED: &str = "radacctd_coa_coalesced_total";

/// Prometheus names of the webhooks' metrics (`stream::webhooks`), by `endpoint` (its configured
/// name): POSTs by `outcome` (`ok`, `http_error`, `timeout`, `connect_error`); events numbered
/// after the endpoint's cursor; the age of its oldest undelivered event (0 when none); its
/// cursor. Only the node delivering (the jobs leader) reports a backlog and a lag.
pub const WEBHOOK_DELIVERIES: &str = "radacctd_webhook_deliveries_total";
pub const WEBHOOK_BACKLOG: &str = "radacctd_webhook_backlog_events";
pub const WEBHOOK_LAG: &str = "radacctd_webhook_lag_seconds";
pub const WEBHOOK_CURSOR: &str = "radacctd_webhook_cursor";
/// Prometheus names of the session events' counters (`stream::EventStats`, and
/// `jobs::events::RetentionStats` for the events trimmed; docs/EVENTS.md).
/// The last event id this node has read from the outbox and serves.
pub const EVENTS_LAST_ID: &str = "radacctd_events_last_id";
/// Events committed to the outbox and not yet numbered, at the sequencer's last look.
pub const EVENTS_QUEUED: &str = "radacctd_events_queued";
/// `GET /api/events` streams open on this node.
pub const EVENTS_SSE_CLIENTS: &str = "radacctd_events_sse_clients";
/// Event streams ended, by `reason`: `slow` (the client fell too far behind and was
/// disconnected) or `closed` (the client went away, or the node stopped).
pub const EVENTS_SSE_ENDED: &str = "radacctd_events_sse_ended_total";
/// Events deleted by the retention job (age or count).
pub const EVENTS_TRIMMED: &str = "radacctd_events_trimmed_total";
/// Pages of events read from the database for streams that resumed from ids the hub's memory
/// did not hold.
pub const EVENTS_BACKFILL_READS: &str = "radacctd_events_backfill_reads_total";
