//! Housekeeping jobs (docs/ARCHITECTURE.md#jobs): the stale sweeper with the online-flag sync,
//! the archiver, the index reconciliation, and EnsureIndexes. Each job has `run_once` (one
//! step, what tests and the CLI call) and `run` (the cancellable loop; all waiting through
//! `tokio::time`; the leader-only jobs' loop is [`Leader::run_scheduled`]). A failing run is
//! logged and retried at the next interval; it never stops the daemon.
//!
//! With several nodes on one PostgreSQL, the sweeper and the archiver run only on the jobs
//! leader ([`leader`]), and each of their runs is recorded in the `job_runs` table; every node
//! reconciles its own index ([`reconcile`]) and may start EnsureIndexes (which takes turns
//! through a lock of its own).

pub mod archiver;
pub mod events;
pub mod fair_use;
pub mod indexes;
pub mod leader;
pub mod reconcile;
pub mod routers;
pub mod sweeper;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Duration as ChronoDuration, Local, NaiveTime, TimeZone, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use archiver::{ArchiveReport, Archiver};
pub use events::{EventRetention, RetentionStats};
pub use leader::{Election, JobRun, Leader, OnCut, Ran};
pub use reconcile::Reconciler;
pub use routers::{RouterReconciler, RouterReport};
pub use sweeper::{SweepReport, Sweeper};

pub use crate::config::{JobTimeZone, JobsConfig};
use crate::metrics::{
    Collect, Exposition, JOB_FAILURES, JOB_LAST_DURATION, JOB_LAST_SUCCESS, JOB_ROWS, JOB_RUNS,
    Stats, label,
};
use crate::queue::IngestSender;
use crate::store::Store;

/// Starts EnsureIndexes (once, in the background: queries work meanwhile, only slower), the
/// index reconciliation with the sweep interval, and the jobs leader election, which runs the
/// stale sweeper and the archiver, as configured, while this node ([`Stats::node`]) leads. All
/// run on `tasks` and stop when `cancel` is cancelled, which releases their handles on the
/// ingest queue (and the leadership). `leader_jobs` adds the reconciliation with the routers'
/// `/ppp/active` and the fair-use reset, when configured, and the events' retention, on the
/// jobs leader too.
pub fn start(
    config: &JobsConfig,
    store: &Store,
    ingest: IngestSender,
    stats: &Arc<Stats>,
    leader_jobs: LeaderJobs,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) {
    if config.ensure_indexes {
        tasks.spawn(indexes::ensure_indexes(store.clone(), cancel.clone()));
    }
    if config.sweep_enabled {
        let every = Duration::from_secs(config.sweep_interval_secs);
        tasks.spawn(Reconciler::new(ingest.clone(), every).run(cancel.clone()));
    }
    let sweeper = config
        .sweep_enabled
        .then(|| Sweeper::new(store.clone(), ingest, config.clone(), stats.clone()));
    let archiver = config
        .archive_enabled
        .then(|| Archiver::new(store.clone(), config.clone(), stats.clone()));
    // Leading with no job to run still says which node would run them.
    let election = Election::new(
        store.clone(),
        stats.node().clone(),
        Duration::from_secs(config.leader_takeover_secs),
    );
    tasks.spawn(election.run(cancel, move |leader, term| {
        if let Some(sweeper) = &sweeper {
            term.spawn(sweeper.clone().run(leader.clone()));
        }
        if let Some(archiver) = &archiver {
            term.spawn(archiver.clone().run(leader.clone()));
        }
        let LeaderJobs {
            routers,
            fair_use,
            others,
            events,
        } = &leader_jobs;
        if let Some(routers) = routers {
            term.spawn(routers.clone().run(leader.clone()));
        }
        if let Some(fair_use) = fair_use {
            term.spawn(fair_use::run_resets(fair_use.clone(), leader.clone()));
        }
        if let Some(events) = events {
            term.spawn(events.clone().run(leader.clone()));
        }
        for task in others {
            (task.spawn)(leader, term);
        }
    }));
}

/// The jobs the leader runs besides the sweeper and the archiver, when configured.
#[derive(Debug, Clone, Default)]
pub struct LeaderJobs {
    /// The reconciliation with the routers' `/ppp/active`.
    pub routers: Option<RouterReconciler>,
    /// The fair-use period reset.
    pub fair_use: Option<crate::fairuse::FairUse>,
    /// The session events' retention.
    pub events: Option<EventRetention>,
    /// Leader-only work of the modules above this one (the webhooks' delivery).
    pub others: Vec<LeaderTask>,
}

/// What starts a [`LeaderTask`]'s tasks on a term.
type SpawnOnTerm = Arc<dyn Fn(&Leader, &TaskTracker) + Send + Sync>;

/// Leader-only work that a module above `jobs` brings: `spawn` starts its tasks on the term's
/// tracker, and they must end when the term's [`Leader::ended`] is cancelled.
#[derive(Clone)]
pub struct LeaderTask {
    name: &'static str,
    spawn: SpawnOnTerm,
}

impl LeaderTask {
    pub fn new(
        name: &'static str,
        spawn: impl Fn(&Leader, &TaskTracker) + Send + Sync + 'static,
    ) -> LeaderTask {
        LeaderTask {
            name,
            spawn: Arc::new(spawn),
        }
    }
}

impl std::fmt::Debug for LeaderTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LeaderTask").field(&self.name).finish()
    }
}

/// When a leader-only job runs ([`Leader::run_scheduled`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every interval, the first run at once.
    Every(Duration),
    /// Every interval, the first run one interval after the term starts.
    EveryAfterOne(Duration),
    /// Daily at a wall-clock time in a time zone ([`until_next`]).
    Daily(NaiveTime, JobTimeZone),
}

impl Schedule {
    /// The times of this schedule, from now.
    fn start(self) -> Ticks {
        let interval = |mut tick: tokio::time::Interval| {
            // A run longer than the interval delays the next one; missed runs are not caught up.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Ticks::Interval(tick)
        };
        match self {
            Schedule::Every(every) => interval(tokio::time::interval(every)),
            Schedule::EveryAfterOne(every) => interval(tokio::time::interval_at(
                tokio::time::Instant::now() + every,
                every,
            )),
            Schedule::Daily(at, tz) => Ticks::Daily(at, tz),
        }
    }
}

/// A [`Schedule`] under way.
enum Ticks {
    /// Every interval.
    Interval(tokio::time::Interval),
    /// Daily at a wall-clock time.
    Daily(NaiveTime, JobTimeZone),
}

impl Ticks {
    /// Waits until the next run is due.
    async fn next(&mut self) {
        match self {
            Ticks::Interval(tick) => {
                tick.tick().await;
            }
            Ticks::Daily(at, tz) => {
                tokio::time::sleep(until_next(Utc::now(), *at, *tz)).await;
            }
        }
    }
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

/// Counters of one job, for logs and metrics; registered with the application's [`Stats`]
/// under the job's name (one set per job and instance).
#[derive(Debug)]
pub struct JobStats {
    /// The `job` label: `sweeper`, `archiver` or `reconcile` (with the routers).
    job: &'static str,
    pub runs: AtomicU64,
    pub failures: AtomicU64,
    /// Rows closed (sweeper, reconcile) or moved (archiver), in total.
    pub rows: AtomicU64,
    /// Unix time of the last successful run, 0 before the first.
    pub last_success: AtomicI64,
    /// Duration of the last run, in milliseconds.
    pub last_duration_ms: AtomicU64,
}

impl JobStats {
    /// The counters of `job` in `stats` (registered on first use).
    pub fn of(stats: &Stats, job: &'static str) -> Arc<JobStats> {
        stats.component(job, || JobStats {
            job,
            runs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            last_success: AtomicI64::new(0),
            last_duration_ms: AtomicU64::new(0),
        })
    }

    /// Registers the counters of every job (and the events' retention's), so that `/metrics`
    /// shows them before a first run (and when a job is disabled).
    pub fn register_all(stats: &Stats) {
        for job in ["sweeper", "archiver", "reconcile"] {
            JobStats::of(stats, job);
        }
        RetentionStats::of(stats);
    }
}

impl Collect for JobStats {
    fn collect(&self, out: &Exposition<'_>) {
        let l = || vec![label("job", self.job)];
        out.counter(JOB_RUNS, l(), self.runs.load(Ordering::Relaxed));
        out.counter(JOB_FAILURES, l(), self.failures.load(Ordering::Relaxed));
        out.counter(JOB_ROWS, l(), self.rows.load(Ordering::Relaxed));
        out.gauge(
            JOB_LAST_SUCCESS,
            l(),
            self.last_success.load(Ordering::Relaxed) as f64,
        );
        out.gauge(
            JOB_LAST_DURATION,
            l(),
            self.last_duration_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use chrono::FixedOffset;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[tokio::test]
    async fn an_interval_schedule_runs_first_at_once_or_one_interval_in() {
        let hour = Duration::from_secs(3600);
        let soon = Duration::from_millis(50);
        let mut at_once = Schedule::Every(hour).start();
        assert!(tokio::time::timeout(soon, at_once.next()).await.is_ok());
        assert!(tokio::time::timeout(soon, at_once.next()).await.is_err());
        let mut later = Schedule::EveryAfterOne(hour).start();
        assert!(tokio::time::timeout(soon, later.next()).await.is_err());
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
}
