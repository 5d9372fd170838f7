//! The sections of the listeners and the store: `[metrics]`, `[journal]`, `[database]`,
//! `[radius]`, `[api]` and `[log]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::Secret;
use crate::net::ClientAddr;

/// The Prometheus endpoint, on a listener of its own.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// TCP address of the metrics listener.
    pub listen: SocketAddr,
    /// Connections open at once on `/metrics`; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9813)),
            max_connections: 32,
        }
    }
}

/// The durable spool used while the database cannot take commits (docs/ARCHITECTURE.md#durability).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// Journal accepted accounting when the database is unreachable or a commit fails or is
    /// too slow, and answer after the fsync. Disabled: such packets get no answer.
    pub enabled: bool,
    /// The journal file (systemd: under the StateDirectory).
    pub path: std::path::PathBuf,
    /// Past this size, packets are not answered (the NAS retransmits) and an error is logged.
    pub max_bytes: u64,
    /// While the journal holds entries, how often the database is probed and replay retried.
    pub replay_interval_ms: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            enabled: true,
            path: "radacctd.journal".into(),
            max_bytes: 1 << 30,
            replay_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://radacctd.db` (embedded) or `postgres://user:pass@host/db`.
    pub url: Secret,
    pub max_connections: u32,
    /// Seconds to wait for a connection from the pool.
    pub acquire_timeout_secs: u64,
    /// Run pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// PostgreSQL: the `fillfactor` radacct gets when migrations run. `None`:
    /// `store::DEFAULT_RADACCT_FILLFACTOR` (60) if the table has no fillfactor of its own, else
    /// left as it is (docs/ARCHITECTURE.md#radacct-fillfactor). Below 100, pages keep room for
    /// the new row version of an Interim-Update, which can then be a HOT update (no index
    /// entries written).
    pub radacct_fillfactor: Option<u8>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RadiusConfig {
    /// UDP address the accounting listener binds.
    pub listen: SocketAddr,
    /// SO_RCVBUF for the listener socket: bursts overflow the kernel default.
    pub recv_buffer_bytes: usize,
    /// Accepted events waiting for the writer; past this, packets are dropped (NAS retransmits).
    pub queue_capacity: usize,
    /// Most events committed in one transaction.
    pub max_batch: usize,
    /// A commit slower than this is abandoned: no responses, the NAS retransmits.
    pub commit_timeout_secs: u64,
    /// How long a request is remembered to recognise retransmissions.
    pub dedup_window_secs: u64,
    /// Event-Timestamps further than this from the receive time are not trusted.
    pub max_clock_skew_secs: u64,
    /// How often the `nas` table is re-read for clients.
    pub nas_reload_secs: u64,
    /// The listener, the writer and the response sender on one thread of their own (`true`),
    /// or on the main runtime's threads with the API and the jobs (docs/ARCHITECTURE.md#tasks).
    pub ingest_thread: bool,
    /// Clients besides the `nas` table rows.
    pub clients: Vec<ClientConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// An IP address or a CIDR block (`192.0.2.0/24`).
    pub address: ClientAddr,
    pub secret: Secret,
    #[serde(default)]
    pub name: Option<String>,
}

/// The Sessions API (docs/ARCHITECTURE.md#sessions-api).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// TCP address of the HTTP API.
    pub listen: SocketAddr,
    /// HS256 secret the panel signs its bearer tokens with. Empty: no HS256 token verifies
    /// (every authenticated call is 401) and `radacctd token` needs `--key`.
    pub jwt_secret: Secret,
    /// `HS256` (with `jwt_secret`), `RS256` or `ES256` (with `jwt_public_key`). Tokens signed
    /// with any other algorithm, `none` included, are refused.
    pub jwt_algorithm: JwtAlgorithm,
    /// PEM public key file for RS256 / ES256 tokens.
    pub jwt_public_key: Option<PathBuf>,
    /// When set, tokens must carry this `aud`.
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// Rate limit per client IP (GCRA): this many requests at once...
    pub rate_limit_burst: u32,
    /// ...then one more every this many milliseconds (300 and 200: 300 requests/min).
    pub rate_limit_period_ms: u64,
    /// Peers (addresses or CIDR blocks) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ClientAddr>,
    /// A request without a response after this many seconds gets 503 (an export's body may
    /// stream for longer).
    pub request_timeout_secs: u64,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Longest request target (path and query) accepted.
    pub max_uri_bytes: usize,
    /// Most rows one CSV export may hold; more is 413 (narrow the date range).
    pub export_max_rows: u64,
    /// Exports running at once; each holds one database connection while it streams.
    pub export_concurrency: u32,
    /// List and get requests answered from the database at once (the index path is unlimited).
    pub query_concurrency: u32,
    /// How often the reseller tree, subscriber owners and `nas` ids are re-read, in seconds.
    pub scope_refresh_secs: u64,
    /// Connections open at once on the API; more wait to be accepted (the kernel queues them).
    pub max_connections: usize,
    /// A request's headers must arrive within this many seconds of the connection opening or
    /// going idle after a response; else the connection is closed (also on `/metrics`).
    pub header_read_timeout_secs: u64,
}

/// Token signature algorithms the API can be pinned to.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (journald adds timestamps) or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `radacctd=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: Secret::new("sqlite://radacctd.db"),
            max_connections: 8,
            acquire_timeout_secs: 5,
            migrate_on_start: true,
            radacct_fillfactor: None,
        }
    }
}

impl Default for RadiusConfig {
    fn default() -> Self {
        RadiusConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 1813)),
            recv_buffer_bytes: 8 << 20,
            queue_capacity: 65_536,
            max_batch: 1024,
            commit_timeout_secs: 10,
            dedup_window_secs: 30,
            max_clock_skew_secs: 86_400,
            nas_reload_secs: 60,
            ingest_thread: true,
            clients: Vec::new(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            jwt_secret: Secret::new(""),
            jwt_algorithm: JwtAlgorithm::HS256,
            jwt_public_key: None,
            jwt_audience: None,
            jwt_leeway_secs: 30,
            rate_limit_burst: 300,
            rate_limit_period_ms: 200,
            trusted_proxies: Vec::new(),
            request_timeout_secs: 30,
            max_body_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
            export_max_rows: 500_000,
            export_concurrency: 2,
            query_concurrency: 4,
            scope_refresh_secs: 60,
            max_connections: 512,
            header_read_timeout_secs: 10,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}
