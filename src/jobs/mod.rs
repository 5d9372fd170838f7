//! Housekeeping jobs (DESIGN §6): the stale-session sweeper with the online-flag sync and index
//! reconciliation, the archiver, and EnsureIndexes. Each job has `run_once` (one step, what
//! tests and the CLI call) and `run` (the cancellable loop; all waiting through `tokio::time`).
//! A failing run is logged and retried at the next interval; it never stops the daemon.

pub mod archiver;
pub mod sweeper;

use std::sync::atomic::{AtomicI64, AtomicU64};

use chrono::{DateTime, Duration as ChronoDuration, FixedOffset, Local, NaiveTime, TimeZone, Utc};
use serde::Deserialize;

pub use archiver::{ArchiveReport, Archiver};
pub use sweeper::{SweepReport, Sweeper};

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

/// Time until the next `at` (wall clock in `tz`) strictly after `now`.
pub fn until_next(now: DateTime<Utc>, at: NaiveTime, tz: JobTimeZone) -> std::time::Duration {
    fn next<Tz: TimeZone>(now: DateTime<Utc>, at: NaiveTime, tz: &Tz) -> DateTime<Utc> {
        let local = now.with_timezone(tz);
        let mut day = local.date_naive();
        for _ in 0..3 {
            // earliest(): on a DST fold take the first; a skipped time falls through to the
            // next day.
            if let Some(t) = tz.from_local_datetime(&day.and_time(at)).earliest() {
                let t = t.with_timezone(&Utc);
                if t > now {
                    return t;
                }
            }
            day = day.succ_opt().unwrap_or(day);
        }
        now + ChronoDuration::days(1)
    }
    let t = match tz {
        JobTimeZone::Local => next(now, at, &Local),
        JobTimeZone::Fixed(off) => next(now, at, &off),
    };
    (t - now)
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(1))
}

/// Counters of one job, for logs and metrics.
#[derive(Debug, Default)]
pub struct JobStats {
    pub runs: AtomicU64,
    pub failures: AtomicU64,
    /// Rows closed (sweeper) or moved (archiver), in total.
    pub rows: AtomicU64,
    /// Unix time of the last successful run, 0 before the first.
    pub last_success: AtomicI64,
    /// Duration of the last run, in milliseconds.
    pub last_duration_ms: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn next_run_is_later_today_or_tomorrow() {
        let at = NaiveTime::from_hms_opt(3, 0, 0).expect("time");
        let utc0 = JobTimeZone::Fixed(FixedOffset::east_opt(0).expect("0"));
        assert_eq!(
            until_next(utc("2026-11-27T01:00:00Z"), at, utc0).as_secs(),
            2 * 3600
        );
        assert_eq!(
            until_next(utc("2026-11-27T03:00:00Z"), at, utc0).as_secs(),
            24 * 3600
        );
        let plus3 = JobTimeZone::Fixed("+03:00".parse().expect("offset"));
        // 03:00 at +03:00 is 00:00 UTC.
        assert_eq!(
            until_next(utc("2026-11-27T23:00:00Z"), at, plus3).as_secs(),
            3600
        );
    }

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
