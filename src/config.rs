//! Typed configuration: a TOML file (optional) with `RADACCTD__SECTION__KEY` environment
//! overrides, defaults for everything, unknown keys rejected, secrets hidden from `Debug`.
//! Every key is documented in `config.toml.example`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{FixedOffset, NaiveTime};
use serde::Deserialize;

use crate::net::ClientAddr;

/// Environment variables with this prefix override file values: `RADACCTD__DATABASE__URL`.
pub const ENV_PREFIX: &str = "RADACCTD__";

/// A secret string: usable, never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub radius: RadiusConfig,
    pub api: ApiConfig,
    pub jobs: JobsConfig,
    pub journal: JournalConfig,
    pub metrics: MetricsConfig,
    pub disconnect: DisconnectConfig,
    pub reconcile: ReconcileConfig,
    pub log: LogConfig,
    pub node: NodeConfig,
    pub usage: UsageConfig,
    pub events: EventsConfig,
}

/// The `[usage]` section: the calendar the usage ledger is counted in, and the fair-use
/// policies. Policies live here rather than in a table: they are a handful of product
/// definitions that change with the price list, not per subscriber, and a file is reviewed,
/// versioned and checked by `check-config` before it takes effect. What changes per subscriber
/// (who is throttled since when) is state, and lives in the `fair_use_throttles` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// The time zone days and billing months are counted in (the API's default `tz`): `UTC`,
    /// `local`, an offset like `+03:00`, or an IANA name such as `Europe/Berlin`.
    pub time_zone: String,
    /// The day of the month (1 to 28) billing months start on, at local midnight.
    pub billing_day: u8,
    /// Milliseconds the fair-use enforcer gathers committed changes before it checks them
    /// (one query per batch of subscribers).
    pub check_interval_ms: u64,
    /// Seconds between the jobs leader's looks for periods that ended (the reset that restores
    /// the rate).
    pub reset_interval_secs: u64,
    /// The fair-use policies, first match wins.
    pub policies: Vec<FairUsePolicy>,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            time_zone: "UTC".into(),
            billing_day: 1,
            check_interval_ms: 1000,
            reset_interval_secs: 60,
            policies: Vec::new(),
        }
    }
}

/// The `[events]` section: the session events outbox, its Server-Sent Events stream and its
/// webhooks (docs/EVENTS.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Write events at all. Off: nothing is added to the outbox (the stream and webhooks serve
    /// what is retained).
    pub enabled: bool,
    /// Also an event for every Interim-Update that changed a row (`session.interim`).
    pub interims: bool,
    /// Events numbered longer ago than this many days are deleted by the jobs leader.
    pub retention_days: u64,
    /// At most this many events are retained (the oldest are deleted first).
    pub max_events: u64,
    /// Seconds between the heartbeats (SSE comments) of an idle stream.
    pub heartbeat_secs: u64,
    /// Open `GET /api/events` streams per node; more are answered 503.
    pub max_clients: usize,
    /// Events a stream may fall behind the newest before it is ended (the client resumes with
    /// `Last-Event-ID`): a slow client never makes the node buffer without bound.
    pub client_buffer: usize,
    /// Milliseconds between two looks for events numbered by another node or left in the
    /// queue by a process that stopped (the local writer's commits wake the sequencer at once).
    pub poll_interval_ms: u64,
    /// Webhook endpoints.
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            enabled: true,
            interims: false,
            retention_days: 7,
            max_events: 1_000_000,
            heartbeat_secs: 15,
            max_clients: 256,
            client_buffer: 10_000,
            poll_interval_ms: 250,
            webhooks: Vec::new(),
        }
    }
}

impl EventsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.retention_days == 0 || self.max_events == 0 {
            return Err("events.retention_days and events.max_events must be at least 1".into());
        }
        if self.heartbeat_secs == 0 || self.poll_interval_ms == 0 {
            return Err(
                "events.heartbeat_secs and events.poll_interval_ms must be at least 1".into(),
            );
        }
        if self.max_clients == 0 || self.client_buffer == 0 {
            return Err("events.max_clients and events.client_buffer must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for w in &self.webhooks {
            w.validate()?;
            if !names.insert(w.name.as_str()) {
                return Err(format!(
                    "events.webhooks: the name {:?} is used twice",
                    w.name
                ));
            }
        }
        Ok(())
    }
}

/// One webhook endpoint (`[[events.webhooks]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint's name: its cursor in `webhook_cursors` and its `endpoint` metric label.
    /// Renaming it starts it afresh from the newest event.
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// The HMAC-SHA256 key the batches are signed with.
    pub secret: Secret,
    /// Event types to deliver (`session.started`, …); empty: every type.
    #[serde(default)]
    pub types: Vec<String>,
    /// Events per POST, at most.
    #[serde(default = "WebhookConfig::default_batch_size")]
    pub batch_size: usize,
    /// Seconds a POST may take before it counts as failed.
    #[serde(default = "WebhookConfig::default_timeout_secs")]
    pub timeout_secs: u64,
    /// The longest pause, in seconds, between retries of a failing endpoint.
    #[serde(default = "WebhookConfig::default_max_backoff_secs")]
    pub max_backoff_secs: u64,
    /// PEM bundle of the CAs trusted for an `https` URL's certificate (read at start-up).
    #[serde(default = "WebhookConfig::default_ca_file")]
    pub ca_file: PathBuf,
}

impl WebhookConfig {
    fn default_batch_size() -> usize {
        100
    }
    fn default_timeout_secs() -> u64 {
        10
    }
    fn default_max_backoff_secs() -> u64 {
        300
    }
    fn default_ca_file() -> PathBuf {
        PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
    }

    pub fn validate(&self) -> Result<(), String> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 63 || name.chars().any(|c| c.is_control()) {
            return Err(format!(
                "events.webhooks: name must be 1 to 63 characters without control characters (got {:?})",
                self.name
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "events.webhooks {name:?}: url must start with http:// or https:// (got {:?})",
                self.url
            ));
        }
        if self.secret.expose().len() < 16 {
            return Err(format!(
                "events.webhooks {name:?}: secret must be at least 16 characters"
            ));
        }
        for t in &self.types {
            if crate::events::EventType::parse(t).is_none() {
                return Err(format!(
                    "events.webhooks {name:?}: unknown event type {t:?} (known: {})",
                    crate::events::EventType::ALL.map(|t| t.name()).join(", ")
                ));
            }
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return Err(format!(
                "events.webhooks {name:?}: batch_size must be between 1 and 10000"
            ));
        }
        if self.timeout_secs == 0 || self.max_backoff_secs == 0 {
            return Err(format!(
                "events.webhooks {name:?}: timeout_secs and max_backoff_secs must be at least 1"
            ));
        }
        Ok(())
    }
}

/// How long a fair-use period lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// A local day.
    Day,
    /// A billing month: from local midnight of the billing day to the same day next month.
    Month,
}

/// One fair-use policy (`[[usage.policies]]`): a plan, its allowance per period, and the
/// rates to apply past it and to restore at the period's reset.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FairUsePolicy {
    /// The policy's name (in the action log's detail, the throttle state and the API).
    pub name: String,
    /// The plan: the RADIUS `Class` values (radacct.class, as FreeRADIUS's reply sets it for
    /// the plan's group) this policy applies to. Empty: every subscriber.
    #[serde(default)]
    pub classes: Vec<String>,
    /// `day` or `month`.
    pub period: PeriodKind,
    /// Input + output octets allowed per period; more throttles the subscriber.
    pub threshold_bytes: u64,
    /// The `Mikrotik-Rate-Limit` to apply while over the threshold, e.g. `1M/2M`.
    pub rate: String,
    /// The `Mikrotik-Rate-Limit` to restore at the period's reset, e.g. `50M/100M`.
    pub restore_rate: String,
}

/// A time zone as `usage.time_zone` and the usage API's `tz` name it: `UTC`, `local`, a fixed
/// offset `+HH[:MM]` (at most 14 hours), or an IANA name such as `Europe/Berlin`.
pub fn parse_time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    use jiff::tz::TimeZone;
    let offset = |s: &str| -> Option<TimeZone> {
        let sign = if s.starts_with('-') { -1 } else { 1 };
        let (h, m) = s[1..].split_once(':').unwrap_or((&s[1..], "0"));
        let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
        if h > 14 || m > 59 {
            return None;
        }
        let offset = jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()?;
        Some(TimeZone::fixed(offset))
    };
    match name {
        "UTC" | "utc" | "Z" => Some(TimeZone::UTC),
        "local" | "Local" => Some(TimeZone::system()),
        other if other.starts_with('+') || other.starts_with('-') => offset(other),
        other => TimeZone::get(other).ok(),
    }
    .ok_or_else(|| {
        format!("unknown time zone {name:?} (use UTC, local, +HH:MM or an IANA name such as Europe/Berlin)")
    })
}

impl UsageConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        parse_time_zone(&self.time_zone).map_err(|e| format!("usage.time_zone: {e}"))?;
        if !(1..=28).contains(&self.billing_day) {
            return Err(format!(
                "usage.billing_day must be between 1 and 28 (got {})",
                self.billing_day
            ));
        }
        if self.check_interval_ms == 0 || self.reset_interval_secs == 0 {
            return Err(
                "usage.check_interval_ms and usage.reset_interval_secs must be at least 1".into(),
            );
        }
        for (i, p) in self.policies.iter().enumerate() {
            let at = format!("usage.policies[{i}]");
            if p.name.trim().is_empty() || self.policies[..i].iter().any(|o| o.name == p.name) {
                return Err(format!("{at}.name must be set and unique"));
            }
            if p.threshold_bytes == 0 || p.threshold_bytes > i64::MAX as u64 {
                return Err(format!("{at}.threshold_bytes must be at least 1"));
            }
            for (field, rate) in [("rate", &p.rate), ("restore_rate", &p.restore_rate)] {
                if rate.is_empty() || rate.len() > 247 || rate.chars().any(char::is_control) {
                    return Err(format!(
                        "{at}.{field} must be a Mikrotik-Rate-Limit of 1 to 247 bytes, e.g. \"1M/2M\""
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The `[node]` section: this daemon's identity among several on one database.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's name in `/metrics`, `/readyz`, logs and the job and action tables; empty:
    /// the host name.
    pub name: String,
}

impl NodeConfig {
    /// The configured name, else the host name, else `radacctd`.
    pub fn resolved_name(&self) -> String {
        let configured = self.name.trim();
        if !configured.is_empty() {
            return configured.to_owned();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "radacctd".to_owned())
    }

    pub fn validate(&self) -> Result<(), String> {
        let name = self.name.trim();
        if name.len() > 63 || name.chars().any(|c| c.is_control() || c == '|') {
            return Err(format!(
                "node.name must be at most 63 characters, without control characters or '|' (got {name:?})"
            ));
        }
        Ok(())
    }
}

/// The `[jobs]` configuration section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Run the stale sweeper in `serve`.
    pub sweep_enabled: bool,
    /// Seconds between sweeps.
    pub sweep_interval_secs: u64,
    /// An open session with no update for this many seconds is closed as `NAS-Idle-Timeout`.
    pub stale_after_secs: u64,
    /// Most rows one sweep closes (the rest wait for the next sweep).
    pub sweep_limit: i64,
    /// Run the archiver in `serve`.
    pub archive_enabled: bool,
    /// Local time of day of the daily archiver run, `HH:MM`.
    pub archive_at: String,
    /// Time zone of `archive_at`: `local` (the host's), `UTC`, or an offset like `+03:00`.
    pub archive_time_zone: String,
    /// Closed sessions whose stop time is older than this many days move to `radacct_archive`.
    pub archive_after_days: u64,
    /// Rows per archive transaction.
    pub archive_batch: i64,
    /// Create missing indexes (`CREATE INDEX CONCURRENTLY` on PostgreSQL) when `serve` starts.
    pub ensure_indexes: bool,
    /// PostgreSQL: once the jobs leader dies, hangs or loses its database connection, another
    /// node takes the leadership (the sweeper and the archiver) within this many seconds.
    pub leader_takeover_secs: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            sweep_enabled: true,
            sweep_interval_secs: 300,
            stale_after_secs: 1800,
            sweep_limit: 100_000,
            archive_enabled: true,
            archive_at: "03:00".into(),
            archive_time_zone: "local".into(),
            archive_after_days: 90,
            archive_batch: 10_000,
            ensure_indexes: true,
            leader_takeover_secs: 15,
        }
    }
}

impl JobsConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.archive_time()?;
        self.time_zone()?;
        if self.archive_batch < 1 || self.sweep_limit < 1 {
            return Err("jobs.archive_batch and jobs.sweep_limit must be at least 1".into());
        }
        if self.sweep_interval_secs == 0 {
            return Err("jobs.sweep_interval_secs must be at least 1".into());
        }
        if !(1..=3600).contains(&self.leader_takeover_secs) {
            return Err(format!(
                "jobs.leader_takeover_secs must be between 1 and 3600 (got {})",
                self.leader_takeover_secs
            ));
        }
        Ok(())
    }

    pub fn archive_time(&self) -> Result<NaiveTime, String> {
        NaiveTime::parse_from_str(&self.archive_at, "%H:%M")
            .map_err(|_| format!("jobs.archive_at must be HH:MM (got {:?})", self.archive_at))
    }

    pub fn time_zone(&self) -> Result<JobTimeZone, String> {
        match self.archive_time_zone.as_str() {
            "local" | "Local" => Ok(JobTimeZone::Local),
            "UTC" | "utc" | "Z" => Ok(JobTimeZone::Fixed(FixedOffset::east_opt(0).expect("0"))),
            other => other
                .parse::<FixedOffset>()
                .map(JobTimeZone::Fixed)
                .map_err(|_| {
                    format!(
                        "jobs.archive_time_zone must be local, UTC or an offset like +03:00 (got {other:?})"
                    )
                }),
        }
    }
}

/// Where the daily schedule's wall clock lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobTimeZone {
    Local,
    Fixed(FixedOffset),
}

/// The `[disconnect]` section of the configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DisconnectConfig {
    /// Total time for one Disconnect-Request, retransmissions included, in milliseconds.
    pub coa_timeout_ms: u64,
    /// The same Disconnect-Request is sent again after this many milliseconds without answer.
    pub coa_retry_interval_ms: u64,
    /// CoA port of a NAS whose `nas` row has no `coa_port` (MikroTik's `/radius incoming`).
    pub coa_port: u16,
    /// UDP sockets for Disconnect-Requests; each carries 256 requests in flight.
    pub coa_sockets: usize,
    /// Source address of Disconnect-Requests (a MikroTik accepts them only from a configured
    /// `/radius` server address). `::` gives dual-stack sockets.
    pub coa_bind: IpAddr,
    /// RouterOS API port of a NAS whose `nas` row has no `api_port` (the plain API, 8728).
    pub api_port: u16,
    /// RouterOS API-SSL port of a NAS with `api_tls` and no `api_port` (8729).
    pub api_tls_port: u16,
    /// PEM bundle of the CAs trusted for routers' API-SSL certificates (read at start-up and
    /// on every `nas` reload; only needed when a NAS has `api_tls`).
    pub api_tls_ca_file: PathBuf,
    /// Deadline of the API's TCP connect, in milliseconds.
    pub api_connect_timeout_ms: u64,
    /// Deadline of each API reply (and write), in milliseconds.
    pub api_reply_timeout_ms: u64,
    /// Deadline of the whole API exchange (connect, login, print, remove), in milliseconds.
    pub api_timeout_ms: u64,
    /// How long to wait for the writer to commit the close, in milliseconds.
    pub close_timeout_ms: u64,
    /// The dictionary attributes `POST /api/sessions/{id}/coa` accepts in its `attributes`
    /// list (e.g. `["Idle-Timeout", "Mikrotik-Total-Limit"]`); its named fields
    /// (`rate_limit`, `session_timeout`, `filter_id`, `address_list`) are always accepted.
    /// Empty by default: nothing beyond the named fields.
    pub coa_attributes: Vec<String>,
}

impl Default for DisconnectConfig {
    fn default() -> Self {
        DisconnectConfig {
            coa_timeout_ms: 3000,
            coa_retry_interval_ms: 1000,
            coa_port: 1700,
            coa_sockets: 16,
            coa_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            api_port: 8728,
            api_tls_port: 8729,
            api_tls_ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            api_connect_timeout_ms: 3000,
            api_reply_timeout_ms: 3000,
            api_timeout_ms: 10_000,
            close_timeout_ms: 10_000,
            coa_attributes: Vec::new(),
        }
    }
}

impl DisconnectConfig {
    /// Explains the first invalid value, for `check-config`.
    pub fn check(&self) -> Result<(), String> {
        if self.coa_timeout_ms == 0 {
            return Err("disconnect.coa_timeout_ms must be above 0".into());
        }
        if self.coa_retry_interval_ms == 0 {
            return Err("disconnect.coa_retry_interval_ms must be above 0".into());
        }
        if !(1..=1024).contains(&self.coa_sockets) {
            return Err("disconnect.coa_sockets must be between 1 and 1024".into());
        }
        if let Some(unknown) = self
            .coa_attributes
            .iter()
            .find(|a| crate::radius::dictionary::change_attribute(a).is_none())
        {
            let known: Vec<&str> = crate::radius::dictionary::CHANGE_ATTRIBUTES
                .iter()
                .map(|a| a.name)
                .collect();
            return Err(format!(
                "disconnect.coa_attributes: {unknown:?} is not an attribute a CoA may change \
                 (known: {})",
                known.join(", ")
            ));
        }
        if self.coa_port == 0 || self.api_port == 0 || self.api_tls_port == 0 {
            return Err(
                "disconnect.coa_port, disconnect.api_port and disconnect.api_tls_port must not be 0"
                    .into(),
            );
        }
        if self.api_connect_timeout_ms == 0
            || self.api_reply_timeout_ms == 0
            || self.api_timeout_ms == 0
            || self.close_timeout_ms == 0
        {
            return Err("disconnect API and close timeouts must be above 0".into());
        }
        Ok(())
    }
}

/// What the reconciliation with a router does with a zombie: a session the router has and
/// radacctd has no open row for.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ZombiePolicy {
    /// Report it (API, metric, log) and leave it.
    #[default]
    Report,
    /// Also remove it from the router's `/ppp/active`: the subscriber reconnects and the
    /// router sends a fresh Start.
    Disconnect,
}

/// The `[reconcile]` section: comparing each router's `/ppp/active` with the open sessions
/// (docs/ARCHITECTURE.md#router-reconciliation).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Reconcile every NAS that has RouterOS API credentials in `serve` (on the jobs leader).
    pub enabled: bool,
    /// Seconds between two reconciliations of the routers.
    pub interval_secs: u64,
    /// Routers reconciled at once.
    pub concurrency: usize,
    /// The whole exchange with one router (connect, login, the print of its whole
    /// `/ppp/active`), in seconds; each reply still has `disconnect.api_reply_timeout_ms`.
    pub timeout_secs: u64,
    /// A router session up for less than this many seconds is not called a zombie yet: its
    /// Start may still be on its way.
    pub zombie_grace_secs: u64,
    /// `report` or `disconnect`.
    pub zombies: ZombiePolicy,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            enabled: true,
            interval_secs: 300,
            concurrency: 4,
            timeout_secs: 60,
            zombie_grace_secs: 120,
            zombies: ZombiePolicy::Report,
        }
    }
}

impl ReconcileConfig {
    /// Explains the first invalid value, for `check-config`.
    pub fn check(&self) -> Result<(), String> {
        if self.interval_secs == 0 {
            return Err("reconcile.interval_secs must be above 0".into());
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err("reconcile.concurrency must be between 1 and 64".into());
        }
        if self.timeout_secs == 0 {
            return Err("reconcile.timeout_secs must be above 0".into());
        }
        Ok(())
    }
}

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
    /// PostgreSQL: the `fillfactor` radacct gets when migrations run (`None`: left as it is).
    /// Below 100, pages keep room for the new row version of an Interim-Update, which can then
    /// be a HOT update (no index entries written).
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

/// A configuration problem, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Config {
    /// Loads `path` (or nothing) and applies the environment overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                        origin: p.display().to_string(),
                        message: e.to_string(),
                    })?;
                (table, p.display().to_string())
            }
            None => (toml::Table::new(), "configuration".to_owned()),
        };
        let mut overridden = Vec::new();
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Invalid {
                    origin: key.clone(),
                    message: "expected RADACCTD__SECTION__KEY".into(),
                });
            }
            set_path(&mut table, &path, env_value(&raw));
            overridden.push(key);
        }
        let origin = if overridden.is_empty() {
            origin
        } else {
            format!("{origin} (with {})", overridden.join(", "))
        };
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    origin: origin.clone(),
                    message: e.message().to_owned(),
                })?;
        config
            .validate()
            .map_err(|message| ConfigError::Invalid { origin, message })?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.jobs.validate()?;
        self.node.validate()?;
        self.usage.validate()?;
        self.events.validate()?;
        self.disconnect.check()?;
        self.reconcile.check()?;
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err("database.url must start with sqlite: or postgres://".into());
        }
        if let Some(ff) = self.database.radacct_fillfactor
            && !(10..=100).contains(&ff)
        {
            return Err("database.radacct_fillfactor must be between 10 and 100".into());
        }
        if self.database.max_connections == 0 {
            return Err("database.max_connections must be at least 1".into());
        }
        if self.radius.max_batch == 0 || self.radius.queue_capacity == 0 {
            return Err("radius.max_batch and radius.queue_capacity must be at least 1".into());
        }
        for (i, c) in self.radius.clients.iter().enumerate() {
            if c.secret.expose().is_empty() {
                return Err(format!("radius.clients[{i}].secret must not be empty"));
            }
        }
        let api = &self.api;
        if api.jwt_algorithm != JwtAlgorithm::HS256 && api.jwt_public_key.is_none() {
            return Err("api.jwt_algorithm RS256/ES256 needs api.jwt_public_key".into());
        }
        if api.rate_limit_burst == 0 || api.rate_limit_period_ms == 0 {
            return Err(
                "api.rate_limit_burst and api.rate_limit_period_ms must be at least 1".into(),
            );
        }
        if api.export_concurrency == 0 || api.query_concurrency == 0 {
            return Err(
                "api.export_concurrency and api.query_concurrency must be at least 1".into(),
            );
        }
        if api.export_concurrency + api.query_concurrency >= self.database.max_connections {
            return Err(format!(
                "api.export_concurrency + api.query_concurrency ({}) must be below \
                 database.max_connections ({}), so that ingest always has a connection",
                api.export_concurrency + api.query_concurrency,
                self.database.max_connections
            ));
        }
        if api.max_connections == 0 || self.metrics.max_connections == 0 {
            return Err(
                "api.max_connections and metrics.max_connections must be at least 1".into(),
            );
        }
        if api.header_read_timeout_secs == 0 {
            return Err("api.header_read_timeout_secs must be at least 1".into());
        }
        if api.request_timeout_secs == 0 || api.scope_refresh_secs == 0 {
            return Err(
                "api.request_timeout_secs and api.scope_refresh_secs must be at least 1".into(),
            );
        }
        Ok(())
    }

    pub fn commit_timeout(&self) -> Duration {
        Duration::from_secs(self.radius.commit_timeout_secs.max(1))
    }
}

/// An environment value as TOML when it parses as a TOML value, else as a string.
fn env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        t = next;
    }
    t.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated_in_words() {
        let mut c = JobsConfig::default();
        assert!(c.validate().is_ok());
        c.archive_at = "3pm".into();
        assert!(c.validate().unwrap_err().contains("archive_at"));
        c = JobsConfig {
            archive_time_zone: "Mars/Olympus".into(),
            ..JobsConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("archive_time_zone"));
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::load(None, env(&[])).expect("loads");
        assert_eq!(c.database.url.expose(), "sqlite://radacctd.db");
        assert_eq!(c.radius.listen.port(), 1813);
        assert!(c.radius.clients.is_empty());
    }

    #[test]
    fn env_overrides_file_values() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[radius]\nlisten = \"127.0.0.1:1813\"\n[[radius.clients]]\naddress = \"10.0.0.0/8\"\nsecret = \"s\"\n",
        )
        .expect("write");
        let c = Config::load(
            Some(&p),
            env(&[
                ("RADACCTD__RADIUS__LISTEN", "127.0.0.1:9999"),
                ("RADACCTD__DATABASE__URL", "postgres://u@h/db"),
                ("RADACCTD__RADIUS__MAX_BATCH", "7"),
                ("OTHER", "x"),
            ]),
        )
        .expect("loads");
        assert_eq!(c.radius.listen.port(), 9999);
        assert_eq!(c.radius.max_batch, 7);
        assert_eq!(c.database.url.expose(), "postgres://u@h/db");
        assert_eq!(c.radius.clients.len(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_explained() {
        let err =
            Config::load(None, env(&[("RADACCTD__RADIUS__LISTN", "x")])).expect_err("unknown key");
        let msg = err.to_string();
        assert!(
            msg.contains("listn") && msg.contains("RADACCTD__RADIUS__LISTN"),
            "{msg}"
        );
        let err = Config::load(None, env(&[("RADACCTD__DATABASE__URL", "mysql://x")]))
            .expect_err("bad url");
        assert!(err.to_string().contains("database.url"), "{err}");
    }

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
        let c = Config::load(Some(&path), env(&[])).expect("example parses");
        assert_eq!(
            c,
            Config::default(),
            "config.toml.example documents the defaults"
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = Config::load(
            None,
            env(&[("RADACCTD__DATABASE__URL", "postgres://u:pw@h/d")]),
        )
        .expect("loads");
        assert!(!format!("{c:?}").contains("pw"));
    }

    #[test]
    fn usage_policies_are_checked_in_words() {
        let policy = FairUsePolicy {
            name: "home".into(),
            classes: vec![],
            period: PeriodKind::Month,
            threshold_bytes: 1,
            rate: "1M/1M".into(),
            restore_rate: "10M/10M".into(),
        };
        let ok = UsageConfig {
            time_zone: "Europe/Berlin".into(),
            policies: vec![policy.clone()],
            ..UsageConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        type Case = (fn(&mut UsageConfig), &'static str);
        let cases: [Case; 5] = [
            (
                |c| c.time_zone = "Mars/Olympus".into(),
                "usage.time_zone: unknown time zone",
            ),
            (
                |c| c.billing_day = 29,
                "usage.billing_day must be between 1 and 28",
            ),
            (
                |c| c.policies.push(c.policies[0].clone()),
                "usage.policies[1].name must be set and unique",
            ),
            (
                |c| c.policies[0].threshold_bytes = 0,
                "usage.policies[0].threshold_bytes",
            ),
            (
                |c| c.policies[0].rate = String::new(),
                "usage.policies[0].rate must be",
            ),
        ];
        for (change, message) in cases {
            let mut c = ok.clone();
            change(&mut c);
            let e = c.validate().expect_err(message);
            assert!(e.starts_with(message), "{e}");
        }
        let from_toml: Config = toml::from_str(
            "[usage]\ntime_zone = \"UTC\"\n[[usage.policies]]\nname = \"a\"\nperiod = \"day\"\n\
             threshold_bytes = 5\nrate = \"1M/1M\"\nrestore_rate = \"2M/2M\"\n",
        )
        .expect("parses");
        assert_eq!(from_toml.usage.policies[0].period, PeriodKind::Day);
        assert!(from_toml.usage.policies[0].classes.is_empty());
    }
}
