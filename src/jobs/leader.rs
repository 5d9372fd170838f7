//! The jobs leader (docs/ARCHITECTURE.md#jobs-leadership): of several nodes on one PostgreSQL,
//! only the one holding the advisory lock [`JOBS_LEADER_LOCK`] runs the sweeper's closes and
//! online-flag sync and the archiver. The lock lives on a connection of its own (outside the
//! pools), so it is held exactly as long as that session lives; PostgreSQL itself decides who
//! leads, and nothing else is needed between the nodes.
//!
//! - A follower tries `pg_try_advisory_lock` every [`Timing::retry`].
//! - The leader checks its connection (and that it still holds the lock) every
//!   [`Timing::ping`], and before each job run ([`Leader::begin`]). A check that fails or takes
//!   longer than [`Timing::ping_timeout`] is the loss of the leadership, at once: the leader's
//!   jobs are cancelled, the node says it does not lead, and it starts over as a follower on a
//!   new connection.
//! - A leader that stops without closing its connection (SIGSTOP, a hung host) loses the lock
//!   when the server ends its idle session ([`Timing::idle_session_timeout`]): a follower then
//!   takes over within `jobs.leader_takeover_secs`. One that exits or shuts down closes the
//!   connection, and a follower takes over within [`Timing::retry`].
//! - A node that takes the lock says it leads (`Node::set_leader`, the `radacctd_jobs_leader`
//!   metric) and starts its jobs [`Timing::quiet`] later: a former leader whose connection the
//!   server ended has noticed by then and stopped its jobs, so two nodes neither say they lead
//!   nor run one job at once. (A leader frozen in the middle of a run, SIGSTOP, finishes the
//!   step it was in when it resumes: each sweeper close is re-checked by the writer and the
//!   archiver's batches skip locked rows, so such a step changes nothing twice.)
//!
//! SQLite has one node: it always leads, without a lock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Schedule;
use crate::node::Node;
pub use crate::store::JOBS_LEADER_LOCK;
use crate::store::{LockConnection, Store};

/// The intervals of the election, all derived from `jobs.leader_takeover_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often a follower asks for the lock.
    pub retry: Duration,
    /// How often the leader checks its lock connection.
    pub ping: Duration,
    /// A check slower than this counts as a lost connection.
    pub ping_timeout: Duration,
    /// The server ends a lock connection idle this long (PostgreSQL ≥ 14), releasing the lock of
    /// a leader that hangs. Well above [`Timing::ping`], so a live leader is never idle so long.
    pub idle_session_timeout: Duration,
    /// How long a new leader waits before running its jobs.
    pub quiet: Duration,
}

impl Timing {
    /// The timing for a takeover within `takeover` (T): a hung leader's session ends 2/5 T
    /// after its last check, a follower asks every 1/5 T and then waits 3/10 T: 9/10 T in all.
    pub fn new(takeover: Duration) -> Timing {
        let takeover = takeover.max(Duration::from_secs(1));
        let fifth = takeover / 5;
        Timing {
            retry: fifth,
            ping: fifth,
            ping_timeout: fifth,
            idle_session_timeout: fifth * 2,
            // A former leader whose session the server ended checks within `ping` and finds
            // it gone at once; the rest is margin for stopping its jobs.
            quiet: fifth + takeover / 10,
        }
    }
}

/// What a leader-only job holds while its node leads: the cancellation of its leadership term,
/// and the check it makes before each run.
#[derive(Clone, Debug)]
pub struct Leader {
    inner: Arc<Term>,
}

#[derive(Debug)]
struct Term {
    store: Store,
    node: Arc<Node>,
    /// The connection holding the lock; `None` on SQLite.
    lock: Option<Mutex<LockConnection>>,
    /// Cancelled when the term ends: the leadership was lost, or the daemon stops.
    ended: CancellationToken,
    ping_timeout: Duration,
}

impl Leader {
    /// A term on `store` for `node`, ending with `ended`; `lock` is the connection holding the
    /// leadership (`None`: a single node, always leading).
    fn new(
        store: Store,
        node: Arc<Node>,
        lock: Option<LockConnection>,
        ended: CancellationToken,
        ping_timeout: Duration,
    ) -> Leader {
        Leader {
            inner: Arc::new(Term {
                store,
                node,
                lock: lock.map(Mutex::new),
                ended,
                ping_timeout,
            }),
        }
    }

    /// A leader that always leads, without a lock: SQLite's single node, and tests that drive
    /// the jobs' loops directly. Its term ends with `ended`.
    pub fn single(store: Store, node: Arc<Node>, ended: CancellationToken) -> Leader {
        Leader::new(store, node, None, ended, Duration::from_secs(5))
    }

    /// Cancelled when this term ends: the job stops.
    pub fn ended(&self) -> &CancellationToken {
        &self.inner.ended
    }

    /// The node's name, for the runs' records.
    pub fn node(&self) -> &str {
        self.inner.node.name()
    }

    /// Whether the lock connection is alive and holds the lock (always, without one). On any
    /// failure the term ends at once.
    async fn confirm(&self) -> bool {
        let Some(lock) = &self.inner.lock else {
            return !self.inner.ended.is_cancelled();
        };
        let held = {
            let mut conn = lock.lock().await;
            tokio::time::timeout(self.inner.ping_timeout, conn.holds(JOBS_LEADER_LOCK)).await
        };
        let why = match held {
            Ok(Ok(true)) => return !self.inner.ended.is_cancelled(),
            Ok(Ok(false)) => "the lock connection no longer holds the lock".to_owned(),
            Ok(Err(e)) => format!("the lock connection failed: {e}"),
            Err(_) => format!(
                "the lock connection did not answer within {:?}",
                self.inner.ping_timeout
            ),
        };
        if !self.inner.ended.is_cancelled() {
            tracing::warn!(node = self.node(), reason = %why, "jobs leadership check failed");
        }
        self.inner.ended.cancel();
        false
    }

    /// Before a run of `job`: confirms the leadership, then records the run's start in
    /// `job_runs`. `None`: this node no longer leads (its term has ended); do not run. A run
    /// whose record cannot be written still runs (the record is for operators), with a warning.
    pub async fn begin(&self, job: &'static str) -> Option<JobRun> {
        if !self.confirm().await {
            return None;
        }
        let id = match self.inner.store.job_run_start(job, self.node()).await {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(job, error = %e, "cannot record the job run in job_runs");
                None
            }
        };
        Some(JobRun {
            id,
            job,
            store: self.inner.store.clone(),
        })
    }
}

/// One job run being recorded in `job_runs`; [`JobRun::finish`] completes its row.
#[derive(Debug)]
pub struct JobRun {
    id: Option<i64>,
    job: &'static str,
    store: Store,
}

/// How long the completion of a run's record may take (it must not hold up a shutdown).
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

impl JobRun {
    /// Completes the record: `rows` done, and the failure when there was one.
    pub async fn finish(self, rows: u64, error: Option<&anyhow::Error>) {
        let Some(id) = self.id else {
            return;
        };
        let error = error.map(|e| format!("{e:#}"));
        let done = tokio::time::timeout(
            FINISH_TIMEOUT,
            self.store.job_run_finish(id, rows, error.as_deref()),
        )
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(job = self.job, id, error = %e, "cannot complete the job run in job_runs")
            }
            Err(_) => tracing::warn!(
                job = self.job,
                id,
                "completing the job run in job_runs timed out"
            ),
        }
    }
}

/// What the record of a run says when the end of its term cuts the run short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCut {
    /// Completed as a failure: no rows, [`STOPPED`] as the error.
    RecordStopped,
    /// Left as begun, not completed.
    LeaveOpen,
}

/// The failure recorded for a run that the end of its term cut short ([`OnCut::RecordStopped`]).
pub const STOPPED: &str = "stopped: the jobs leadership ended or the daemon stops";

/// What one run of a scheduled job did, for its record in `job_runs` and its log line.
#[derive(Debug, Default)]
pub struct Ran {
    /// The rows it closed, moved or deleted.
    pub rows: u64,
    /// Why it failed, when it did (a run may fail after some of its work: `rows` counts that).
    pub error: Option<anyhow::Error>,
}

impl Ran {
    /// The run that returned `result`: a success counts `rows` of its report, a failure none.
    pub fn of<T>(result: anyhow::Result<T>, rows: impl FnOnce(&T) -> u64) -> Ran {
        match result {
            Ok(report) => Ran {
                rows: rows(&report),
                error: None,
            },
            Err(e) => Ran {
                rows: 0,
                error: Some(e),
            },
        }
    }
}

impl Leader {
    /// Runs `job` at the times of `schedule` for as long as this term lasts, each run
    /// confirmed and recorded in `job_runs` ([`Leader::begin`]): `run` makes one run, and
    /// `report` logs it once its record is complete. A run that the end of the term cuts short
    /// is dropped, and its record completed as `on_cut` says.
    pub async fn run_scheduled<Fut>(
        &self,
        job: &'static str,
        schedule: Schedule,
        on_cut: OnCut,
        mut run: impl FnMut() -> Fut,
        mut report: impl FnMut(Ran),
    ) where
        Fut: Future<Output = Ran>,
    {
        let mut ticks = schedule.start();
        let ended = self.ended();
        loop {
            tokio::select! {
                _ = ended.cancelled() => return,
                _ = ticks.next() => {}
            }
            let Some(record) = self.begin(job).await else {
                return;
            };
            let ran = tokio::select! {
                _ = ended.cancelled() => None,
                ran = run() => Some(ran),
            };
            let Some(ran) = ran else {
                if on_cut == OnCut::RecordStopped {
                    record.finish(0, Some(&anyhow::anyhow!(STOPPED))).await;
                }
                return;
            };
            record.finish(ran.rows, ran.error.as_ref()).await;
            report(ran);
            // The term ended during the run: there is no next one.
            if ended.is_cancelled() {
                return;
            }
        }
    }
}

/// The election of one node: runs until cancelled, and while this node leads, the jobs that
/// `spawn` starts (given the term and a tracker to spawn them on; they must end when the
/// term's [`Leader::ended`] is cancelled).
pub struct Election {
    store: Store,
    node: Arc<Node>,
    timing: Timing,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("node", &self.node.name())
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

/// Why a term ended.
enum TermEnd {
    /// The daemon stops: the lock connection is closed, releasing the lock at once.
    Shutdown(LockConnection),
    /// The connection or the lock was lost.
    Lost,
}

impl Election {
    pub fn new(store: Store, node: Arc<Node>, takeover: Duration) -> Election {
        Election {
            store,
            node,
            timing: Timing::new(takeover),
        }
    }

    /// The `application_name` of this node's lock connection (how an operator finds it in
    /// `pg_stat_activity`).
    pub fn application_name(node: &str) -> String {
        format!("radacctd jobs leader {node}")
    }

    /// Follows, leads, loses and follows again until `cancel`; on SQLite, leads until `cancel`.
    pub async fn run(self, cancel: CancellationToken, spawn: impl Fn(&Leader, &TaskTracker)) {
        if !self.store.concurrent_writes() {
            self.lead_alone(cancel, spawn).await;
            return;
        }
        let mut lock = None;
        loop {
            let Some(held) = self.follow(&cancel, &mut lock).await else {
                if let Some(conn) = lock.take() {
                    conn.close().await;
                }
                return;
            };
            match self.lead(held, &cancel, &spawn).await {
                TermEnd::Shutdown(conn) => {
                    conn.close().await;
                    tracing::info!(
                        node = self.node.name(),
                        "jobs leadership released (stopping)"
                    );
                    return;
                }
                TermEnd::Lost => {
                    tracing::info!(
                        node = self.node.name(),
                        "jobs leadership lost: leader-only jobs stopped; trying to take it again"
                    );
                }
            }
        }
    }

    /// SQLite: the only node, leading from start to stop.
    async fn lead_alone(&self, cancel: CancellationToken, spawn: impl Fn(&Leader, &TaskTracker)) {
        self.node.set_leader(true);
        let term = TaskTracker::new();
        let leader = Leader::single(self.store.clone(), self.node.clone(), cancel.child_token());
        spawn(&leader, &term);
        term.close();
        cancel.cancelled().await;
        term.wait().await;
    }

    /// Until this node holds the lock (`Some`, its connection) or `cancel` (`None`). `lock` is
    /// the follower's connection, kept between tries.
    async fn follow(
        &self,
        cancel: &CancellationToken,
        lock: &mut Option<LockConnection>,
    ) -> Option<LockConnection> {
        let mut failures = 0u32;
        loop {
            match self.try_take(lock).await {
                Ok(true) => return lock.take(),
                Ok(false) => failures = 0,
                Err(e) => {
                    // A fresh connection next time.
                    if let Some(conn) = lock.take() {
                        conn.close().await;
                    }
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(node = self.node.name(), error = %e, "cannot ask for the jobs leadership; retrying");
                    } else {
                        tracing::debug!(node = self.node.name(), error = %e, failures, "cannot ask for the jobs leadership");
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(self.timing.retry) => {}
            }
        }
    }

    /// One try: connects when there is no connection, then `pg_try_advisory_lock`.
    async fn try_take(&self, lock: &mut Option<LockConnection>) -> anyhow::Result<bool> {
        let conn = match lock {
            Some(conn) => conn,
            None => lock.insert(
                self.store
                    .lock_connection(
                        &Election::application_name(self.node.name()),
                        Some(self.timing.idle_session_timeout),
                    )
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("this store has no advisory locks"))?,
            ),
        };
        let taken = tokio::time::timeout(self.timing.ping_timeout, conn.try_lock(JOBS_LEADER_LOCK))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.timing.ping_timeout))??;
        Ok(taken)
    }

    /// One term: from [`Timing::quiet`] after taking the lock, the node says it leads and its
    /// jobs run, while the lock is confirmed every [`Timing::ping`]; ends on shutdown or loss,
    /// once the jobs have stopped.
    async fn lead(
        &self,
        conn: LockConnection,
        cancel: &CancellationToken,
        spawn: &impl Fn(&Leader, &TaskTracker),
    ) -> TermEnd {
        let ended = cancel.child_token();
        let leader = Leader::new(
            self.store.clone(),
            self.node.clone(),
            Some(conn),
            ended.clone(),
            self.timing.ping_timeout,
        );
        let term = TaskTracker::new();
        let mut started = false;
        let quiet_until = tokio::time::Instant::now() + self.timing.quiet;
        loop {
            let wake = if started {
                tokio::time::Instant::now() + self.timing.ping
            } else {
                quiet_until.min(tokio::time::Instant::now() + self.timing.ping)
            };
            tokio::select! {
                _ = ended.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            if !leader.confirm().await {
                break;
            }
            if !started && tokio::time::Instant::now() >= quiet_until {
                // Only now: a former leader has stopped by then, so no two nodes say they lead.
                self.node.set_leader(true);
                tracing::info!(node = self.node.name(), "jobs leadership gained");
                spawn(&leader, &term);
                started = true;
            }
        }
        // Lost, or stopping: the jobs stop before anything else.
        ended.cancel();
        term.close();
        term.wait().await;
        self.node.set_leader(false);
        let shutdown = cancel.is_cancelled();
        let conn = Arc::try_unwrap(leader.inner)
            .ok()
            .and_then(|t| t.lock)
            .map(Mutex::into_inner);
        match (shutdown, conn) {
            (true, Some(conn)) => TermEnd::Shutdown(conn),
            (_, conn) => {
                if let Some(conn) = conn {
                    // A connection that may still hold the lock is closed before the next try.
                    conn.close().await;
                }
                TermEnd::Lost
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hung_leader_is_replaced_within_the_takeover_time() {
        for secs in [1, 2, 15, 60, 3600] {
            let takeover = Duration::from_secs(secs);
            let t = Timing::new(takeover);
            // The server ends a hung leader's session, a follower asks within `retry` and
            // starts after `quiet`.
            assert!(
                t.idle_session_timeout + t.retry + t.quiet < takeover,
                "{t:?}"
            );
            // A live leader is never idle long enough for the server to end its session: it
            // checks every `ping`, and a runtime as late again still makes it.
            assert!(t.ping * 2 <= t.idle_session_timeout, "{t:?}");
            // A leader cut off from the server notices (a check that times out) before the
            // server ends its session.
            assert!(t.ping + t.ping_timeout <= t.idle_session_timeout, "{t:?}");
            // A leader whose session the server ended finds out at its next check, before a
            // new leader starts.
            assert!(t.quiet > t.ping, "{t:?}");
        }
    }

    #[test]
    fn the_default_timing() {
        let t = Timing::new(Duration::from_secs(15));
        assert_eq!(t.retry, Duration::from_secs(3));
        assert_eq!(t.ping, Duration::from_secs(3));
        assert_eq!(t.idle_session_timeout, Duration::from_secs(6));
        assert_eq!(t.quiet, Duration::from_millis(4500));
        // Below a second is not a takeover time the election can keep.
        assert_eq!(
            Timing::new(Duration::ZERO),
            Timing::new(Duration::from_secs(1))
        );
    }

    #[test]
    fn the_lock_connection_is_named_by_the_node() {
        assert_eq!(
            Election::application_name("rad-a"),
            "radacctd jobs leader rad-a"
        );
    }
}
