//! The archiver: once a day (at `archive_at` in `archive_time_zone`) closed rows whose stop
//! time is older than `archive_after_days` move to `radacct_archive`, in bounded batches, each
//! one transaction (insert there + delete here), so a crash between batches loses and
//! duplicates nothing. Open sessions never move. The action log rows (`session_actions`) of
//! the sessions moved go to `session_actions_archive` (ids kept) in the same transaction, so
//! each action table covers what its radacct table holds.
//! Each run also deletes the `job_runs` records older than [`JOB_RUNS_KEPT_DAYS`]. Only the
//! jobs leader archives (`leader`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context as _;

use super::leader::{Leader, OnCut, Ran};
use super::{JobStats, JobsConfig, Schedule};
use crate::clock::now_secs;
use crate::metrics::Stats;
use crate::store::{ArchivableRow, Store};

/// How long the records of job runs are kept.
pub const JOB_RUNS_KEPT_DAYS: i64 = 30;

/// What one archiver run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    pub moved: u64,
    pub batches: u64,
}

/// The archiver.
#[derive(Debug, Clone)]
pub struct Archiver {
    store: Store,
    config: JobsConfig,
    stats: Arc<JobStats>,
}

impl Archiver {
    pub fn new(store: Store, config: JobsConfig, stats: Arc<Stats>) -> Self {
        Archiver {
            store,
            config,
            stats: JobStats::of(&stats, "archiver"),
        }
    }

    fn cutoff(&self) -> i64 {
        now_secs() - self.config.archive_after_days as i64 * 86_400
    }

    /// How many rows a run would move now, and the first `limit` of them; changes nothing.
    pub async fn dry_run(&self, limit: i64) -> anyhow::Result<(i64, Vec<ArchivableRow>)> {
        self.store
            .archivable_rows(self.cutoff(), limit)
            .await
            .context("finding archivable sessions")
    }

    /// One run: batches until nothing is left (or a batch fails: what moved stays moved).
    pub async fn run_once(&self) -> anyhow::Result<ArchiveReport> {
        let started = Instant::now();
        let cutoff = self.cutoff();
        let mut report = ArchiveReport::default();
        if let Err(e) = self
            .store
            .trim_job_runs(now_secs() - JOB_RUNS_KEPT_DAYS * 86_400)
            .await
        {
            tracing::warn!(error = %e, "cannot delete old job_runs records");
        }
        let result = loop {
            match self
                .store
                .archive_batch(cutoff, self.config.archive_batch)
                .await
            {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    report.moved += n;
                    report.batches += 1;
                    self.stats.rows.fetch_add(n, Ordering::Relaxed);
                    // Let the writer and the API have the database between batches.
                    tokio::task::yield_now().await;
                }
                Err(e) => break Err(e),
            }
        };
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_duration_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.stats.last_success.store(now_secs(), Ordering::Relaxed);
                if report.moved > 0 {
                    tracing::info!(
                        moved = report.moved,
                        batches = report.batches,
                        "archived closed sessions"
                    );
                }
                Ok(report)
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                Err(anyhow::Error::new(e).context(format!(
                    "archiving (moved {} rows in {} batches before the failure)",
                    report.moved, report.batches
                )))
            }
        }
    }

    /// Runs daily at the configured time for as long as `leader`'s term lasts, each run
    /// confirmed and recorded in `job_runs` ([`Leader::run_scheduled`]).
    pub async fn run(self, leader: Leader) {
        let (Ok(at), Ok(tz)) = (self.config.archive_time(), self.config.time_zone()) else {
            tracing::error!("archiver schedule is invalid; archiver not running");
            return;
        };
        let ended = leader.ended();
        leader
            .run_scheduled(
                "archiver",
                Schedule::Daily(at, tz),
                OnCut::RecordStopped,
                || async { Ran::of(self.run_once().await, |r| r.moved) },
                |ran| {
                    if let Some(e) = ran.error
                        && !ended.is_cancelled()
                    {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "archiver run failed; retrying tomorrow"
                        );
                    }
                },
            )
            .await;
    }
}
