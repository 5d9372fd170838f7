//! The stale-session sweeper: closes open rows with no sign of life for `stale_after_secs`
//! (cause `NAS-Idle-Timeout`, stop time = the last update, the last evidence the session
//! lived), then syncs `subscribers.is_online`. Only the jobs leader sweeps (`leader`); every
//! node reconciles its own index with SQL (`reconcile`).
//!
//! It never writes radacct itself: each close is a request to the ingest writer, which re-checks
//! the row inside its transaction, so an interim that arrived meanwhile wins.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::leader::{Leader, OnCut, Ran};
use super::{JobStats, JobsConfig, Schedule};
use crate::clock::now_secs;
use crate::ingest::semantics::SWEEPER_CAUSE;
use crate::metrics::Stats;
use crate::queue::{CloseRequest, IngestSender, Item};
use crate::store::{StaleRow, Store};

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Stale rows found.
    pub candidates: u64,
    /// Rows closed (a candidate that got an interim meanwhile is not closed).
    pub closed: u64,
    /// Subscribers marked online / offline.
    pub marked_online: u64,
    pub marked_offline: u64,
}

/// The sweeper.
#[derive(Debug, Clone)]
pub struct Sweeper {
    store: Store,
    ingest: IngestSender,
    config: JobsConfig,
    stats: Arc<JobStats>,
}

impl Sweeper {
    pub fn new(store: Store, ingest: IngestSender, config: JobsConfig, stats: Arc<Stats>) -> Self {
        Sweeper {
            store,
            ingest,
            config,
            stats: JobStats::of(&stats, "sweeper"),
        }
    }

    fn cutoff(&self) -> i64 {
        now_secs() - self.config.stale_after_secs as i64
    }

    /// The rows a sweep would close now (at most `limit`), changing nothing.
    pub async fn dry_run(&self, limit: i64) -> anyhow::Result<Vec<StaleRow>> {
        self.store
            .stale_open_rows(self.cutoff(), limit)
            .await
            .context("finding stale sessions")
    }

    /// One sweep.
    pub async fn run_once(&self) -> anyhow::Result<SweepReport> {
        let started = Instant::now();
        let result = self.sweep().await;
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_duration_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match &result {
            Ok(report) => {
                self.stats.rows.fetch_add(report.closed, Ordering::Relaxed);
                self.stats.last_success.store(now_secs(), Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    async fn sweep(&self) -> anyhow::Result<SweepReport> {
        let cutoff = self.cutoff();
        let stale = self
            .store
            .stale_open_rows(cutoff, self.config.sweep_limit)
            .await
            .context("finding stale sessions")?;
        let mut report = SweepReport {
            candidates: stale.len() as u64,
            ..SweepReport::default()
        };
        let mut pending = Vec::with_capacity(stale.len());
        for row in stale {
            let (req, rx) = CloseRequest::new(row.acctuniqueid, None, SWEEPER_CAUSE, Some(cutoff));
            self.ingest
                .send(Item::Close(req))
                .await
                .context("the ingest writer has stopped")?;
            pending.push(rx);
        }
        for rx in pending {
            // A closed channel means the write failed; the next sweep tries again.
            if rx.await.unwrap_or(false) {
                report.closed += 1;
            }
        }
        let (on, off) = self
            .store
            .sync_online_flags()
            .await
            .context("syncing subscribers.is_online")?;
        report.marked_online = on;
        report.marked_offline = off;
        if report.closed > 0 || report.marked_online > 0 || report.marked_offline > 0 {
            tracing::info!(
                closed = report.closed,
                candidates = report.candidates,
                online = report.marked_online,
                offline = report.marked_offline,
                "stale sweep"
            );
        }
        Ok(report)
    }

    /// Sweeps every `sweep_interval_secs` for as long as `leader`'s term lasts, each run
    /// confirmed and recorded in `job_runs` ([`Leader::run_scheduled`]).
    pub async fn run(self, leader: Leader) {
        let every = Duration::from_secs(self.config.sweep_interval_secs.max(1));
        let ended = leader.ended();
        // The first sweep comes one interval after start-up (or a takeover): the NASes get a
        // chance to send interims for sessions that were open while no one swept.
        // Cancellation mid-sweep is fine: each close is its own committed request.
        leader
            .run_scheduled(
                "sweeper",
                Schedule::EveryAfterOne(every),
                OnCut::RecordStopped,
                || async { Ran::of(self.run_once().await, |r| r.closed) },
                |ran| {
                    if let Some(e) = ran.error
                        && !ended.is_cancelled()
                    {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "stale sweep failed; retrying next interval"
                        );
                    }
                },
            )
            .await;
    }
}
