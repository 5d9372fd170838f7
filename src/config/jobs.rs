//! The sections of the jobs and the router tasks: `[node]`, `[jobs]`, `[disconnect]` and
//! `[reconcile]`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use chrono::{FixedOffset, NaiveTime};
use serde::Deserialize;

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
}
