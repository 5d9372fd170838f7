//! The session events' retention (docs/EVENTS.md#retention), on the jobs leader: every minute
//! it deletes the events numbered more than `events.retention_days` ago and those beyond the
//! newest `events.max_events`, oldest first, in bounded batches (each its own statement), and
//! records each run in `job_runs` as `events_retention`.
//!
//! Webhook cursors do not hold events back: an endpoint down for longer than the retention
//! finds its oldest events gone (docs/EVENTS.md says how to size it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Schedule;
use super::leader::{Leader, OnCut, Ran};
use crate::clock::now_secs;
use crate::config::EventsConfig;
use crate::metrics::{Collect, EVENTS_TRIMMED, Exposition, Stats};
use crate::store::{Store, StoreError};

/// How often the leader trims.
pub const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Outbox batches deleted per statement at most (each holds up to `events::BATCH_MAX` events).
pub const TRIM_BATCH: i64 = 1_000;

/// The retention job's counter (docs/EVENTS.md#metrics), registered with the application's
/// [`Stats`] and copied into `/metrics` at each scrape.
#[derive(Debug, Default)]
pub struct RetentionStats {
    /// Events the retention job deleted.
    pub trimmed: AtomicU64,
}

impl RetentionStats {
    /// The counter in `stats` (registered on first use).
    pub fn of(stats: &Stats) -> Arc<RetentionStats> {
        stats.component("events_retention", RetentionStats::default)
    }
}

impl Collect for RetentionStats {
    fn collect(&self, out: &Exposition<'_>) {
        out.counter(EVENTS_TRIMMED, vec![], self.trimmed.load(Ordering::Relaxed));
    }
}

/// The retention job.
#[derive(Debug, Clone)]
pub struct EventRetention {
    store: Store,
    retention_days: u64,
    max_events: u64,
    stats: Arc<RetentionStats>,
}

impl EventRetention {
    pub fn new(store: Store, config: &EventsConfig, stats: Arc<RetentionStats>) -> EventRetention {
        EventRetention {
            store,
            retention_days: config.retention_days,
            max_events: config.max_events,
            stats,
        }
    }

    /// One run at `now` (epoch seconds): deletes by age and by count until nothing is left to
    /// delete. Returns how many it deleted (also when a batch fails: what went stays gone).
    pub async fn run_once(&self, now: i64) -> Result<u64, StoreError> {
        let (_, last) = self.store.event_bounds().await?;
        let created_before = now.saturating_sub(
            i64::try_from(self.retention_days.saturating_mul(86_400)).unwrap_or(i64::MAX),
        );
        let id_at_most = last.saturating_sub(i64::try_from(self.max_events).unwrap_or(i64::MAX));
        let mut trimmed = 0;
        loop {
            let (batches, n) = self
                .store
                .trim_events(created_before, id_at_most, TRIM_BATCH)
                .await?;
            trimmed += n;
            self.stats.trimmed.fetch_add(n, Ordering::Relaxed);
            if batches < TRIM_BATCH as u64 {
                return Ok(trimmed);
            }
            // The writer and the API get the database between batches.
            tokio::task::yield_now().await;
        }
    }

    /// Trims every [`TRIM_EVERY`] while `leader` leads.
    pub async fn run(self, leader: Leader) {
        leader
            .run_scheduled(
                "events_retention",
                Schedule::Every(TRIM_EVERY),
                OnCut::LeaveOpen,
                || async {
                    let result = self.run_once(now_secs()).await;
                    Ran::of(result.map_err(|e| anyhow::anyhow!("{e}")), |n| *n)
                },
                |ran| match ran.error {
                    Some(e) => {
                        tracing::warn!(error = %e, "events retention failed; retrying next minute")
                    }
                    None if ran.rows > 0 => tracing::debug!(trimmed = ran.rows, "events trimmed"),
                    None => {}
                },
            )
            .await;
    }
}
