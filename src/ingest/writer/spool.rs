//! The journal side of the writer: appending batches (answered after the fsync), the replay
//! that runs beside the writer until the journal is drained, and the index view of journaled
//! changes. Refused appends are counted and logged at a bounded rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::commit::timed_commit;
use super::fold::still_due;
use super::{EventOptions, SharedJournal, Writer};
use crate::ingest::journal::{Journal, JournalEntry, JournalError};
use crate::ingest::semantics::{self};
use crate::ingest::{CloseRequest, IngestReceiver, Item};
use crate::metrics::{DropReason, Stats};
use crate::radius::accounting::EventKind;
use crate::sessions::{ResellerResolver, Session, SessionIndex};
use crate::store::{Store, StoreError};

/// A journal that refuses appends (full, disk full, I/O error) is logged at most this often,
/// with the count of batches refused meanwhile: a NAS retransmitting into a full journal must
/// not turn every packet into an ERROR line.
pub(super) const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Lets a repeated log line through at most once per period, counting the others.
#[derive(Debug, Default)]
pub(super) struct LogLimiter {
    pub(super) last: Option<tokio::time::Instant>,
    pub(super) suppressed: u64,
}

impl LogLimiter {
    /// `Some(lines suppressed since the last one)` when a line may be logged now.
    pub(super) fn allow(&mut self, every: Duration) -> Option<u64> {
        self.allow_at(tokio::time::Instant::now(), every)
    }

    pub(super) fn allow_at(&mut self, now: tokio::time::Instant, every: Duration) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A journaled entry that keeps failing with a statement error (not an outage) this many
/// times is moved to `<journal>.rejected` so it cannot block everything behind it.
pub(super) const POISON_ATTEMPTS: u32 = 5;

/// The journal's replay as the writer drives it: the task running (at most one), the token
/// that stops it at shutdown, and whether the next one may start (after a failed or stuck
/// replay it waits for the tick).
pub(super) struct Replay {
    task: Option<tokio::task::JoinHandle<ReplayRun>>,
    stop: tokio_util::sync::CancellationToken,
    due: bool,
    tick: tokio::time::Interval,
}

impl Replay {
    pub(super) fn new(every: Duration) -> Replay {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Replay {
            task: None,
            stop: tokio_util::sync::CancellationToken::new(),
            due: true,
            tick,
        }
    }

    /// Shutdown: a running replay stops after its current chunk (what it replayed is marked;
    /// the rest is replayed at the next start).
    pub(super) async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

impl Writer {
    /// One step while journaling: a batch from the queue goes to the journal (and is
    /// answered), a replay that ended is handled, the tick makes the next replay due; a replay
    /// starts whenever none runs, one is due and the database answers. The replay runs in a
    /// task of its own, so batches are journaled and answered while it waits on a slow or
    /// locked database. False once the queue is closed and drained.
    pub(super) async fn spool_next(
        &mut self,
        rx: &mut IngestReceiver,
        changes: &mut Option<super::ChangesReceiver>,
        batch: &mut Vec<Item>,
        replay: &mut Replay,
    ) -> bool {
        let Replay {
            task,
            stop,
            due,
            tick,
        } = replay;
        if task.is_none() && *due && self.db_up.load(Ordering::Relaxed) {
            *task = Some(self.spawn_replay(stop.child_token()));
        }
        let max = self.opts.max_batch.max(1);
        tokio::select! {
            n = rx.recv_many(batch, max) => {
                if n == 0 {
                    return false;
                }
                self.process(std::mem::take(batch)).await;
                batch.reserve(max);
            }
            run = async { task.as_mut().expect("checked").await }, if task.is_some() => {
                *task = None;
                *due = self.replay_landed(run).await;
            }
            _ = tick.tick() => *due = true,
            // Re-reads while journaling are dropped: the replay ends with a full
            // reconciliation.
            change = super::next_change(changes), if changes.is_some() => {
                if change.is_none() {
                    *changes = None;
                }
            }
        }
        true
    }

    /// Appends items to the journal (fsync), updates the index from them, answers them.
    pub(super) async fn spool(&mut self, items: &[Item]) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        let mut entries = Vec::with_capacity(items.len());
        let mut accepted = Vec::with_capacity(items.len());
        for item in items {
            let entry = match item {
                Item::Event { event, .. } => Some(JournalEntry::Event(event.clone())),
                Item::Close(c) => c.stop_time.map(|stop_time| JournalEntry::Close {
                    acctuniqueid: c.acctuniqueid.clone(),
                    stop_time,
                    cause: c.cause.clone(),
                    if_updated_before: c.if_updated_before,
                    action: c.action.clone(),
                }),
                Item::Reconcile(_) => None,
            };
            match entry {
                Some(e) => {
                    entries.push(e);
                    accepted.push(item);
                }
                // A close that needs the row to decide (the sweeper's) waits for the database.
                None => self.abandon(item),
            }
        }
        if entries.is_empty() {
            return;
        }
        let appended = {
            let entries = entries.clone();
            tokio::task::spawn_blocking(move || lock(&journal).append(&entries)).await
        };
        match appended {
            Ok(Ok(())) => {
                Stats::add(&self.stats.journal_appended, entries.len() as u64);
                for entry in &entries {
                    self.apply_offline(entry);
                }
                for item in accepted {
                    self.answer(item, true);
                }
            }
            Ok(Err(e)) => {
                let reason = match e {
                    JournalError::Full { .. } => DropReason::JournalFull,
                    JournalError::Io(_) | JournalError::Encode(_) => DropReason::JournalFailed,
                };
                self.refused(&e, reason, &accepted);
            }
            Err(e) => self.refused(&e, DropReason::JournalFailed, &accepted),
        }
    }

    /// The journal refused `items` (full, disk full, I/O error): counted by `reason`, left
    /// unanswered (the NAS retransmits), logged at most once per [`REFUSED_LOG_EVERY`].
    pub(super) fn refused(
        &mut self,
        error: &dyn std::fmt::Display,
        reason: DropReason,
        items: &[&Item],
    ) {
        for item in items {
            if let Item::Event { .. } = item {
                self.stats.dropped(reason);
            }
            self.release(item);
        }
        if let Some(suppressed) = self.refused_log.allow(REFUSED_LOG_EVERY) {
            tracing::error!(
                error = %error,
                events = items.len(),
                refusals_not_logged = suppressed,
                "not journaled; no responses (the NAS retransmits)"
            );
        }
    }

    pub(super) fn apply_offline(&self, entry: &JournalEntry) {
        apply_offline(&self.index, self.resolver.as_ref(), entry);
    }

    /// Starts replaying the journal off the writer's path: migrations first when they were
    /// deferred, then chunk after chunk until the journal is drained, a chunk is stuck, the
    /// database fails, or `stop` is cancelled.
    pub(super) fn spawn_replay(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<ReplayRun> {
        let store = self.store.clone();
        let journal = self.journal.clone();
        let stats = self.stats.clone();
        let (max, timeout) = (self.opts.max_batch, self.opts.commit_timeout);
        let events = self.opts.events;
        let fillfactor = self.opts.radacct_fillfactor;
        let migrate = self.needs_migrate;
        let mut poison_attempts = self.poison_attempts;
        tokio::spawn(async move {
            let Some(journal) = journal else {
                return ReplayRun::ended(Ok(ReplayStep::Stuck), poison_attempts, false);
            };
            if migrate && let Err(e) = store.prepare(fillfactor).await {
                return ReplayRun::ended(Err(e), poison_attempts, false);
            }
            loop {
                if stop.is_cancelled() {
                    return ReplayRun::ended(Ok(ReplayStep::Stuck), poison_attempts, true);
                }
                match replay_chunk(&store, &journal, max, timeout, events, &mut poison_attempts)
                    .await
                {
                    Ok(ReplayStep::Replayed(n)) => Stats::add(&stats.journal_replayed, n),
                    other => return ReplayRun::ended(other, poison_attempts, true),
                }
            }
        })
    }

    /// A replay run ended. Drained, and nothing journaled since: the journal is truncated, the
    /// index reloaded from the database, and the writer goes back to direct commits. Returns
    /// whether the next replay may start at once (else it waits for the replay tick).
    pub(super) async fn replay_landed(
        &mut self,
        run: Result<ReplayRun, tokio::task::JoinError>,
    ) -> bool {
        let run = match run {
            Ok(run) => run,
            Err(e) => {
                tracing::error!(error = %e, "journal replay task failed; retrying later");
                return false;
            }
        };
        self.poison_attempts = run.poison_attempts;
        if run.migrated {
            self.needs_migrate = false;
        }
        let Some(journal) = self.journal.clone() else {
            return false;
        };
        match run.result {
            Ok(ReplayStep::Drained) => {}
            Ok(ReplayStep::Replayed(_)) => return true,
            Ok(ReplayStep::Stuck) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "journal replay paused: database unavailable, or a row locked past the commit deadline");
                self.db_up.store(false, Ordering::Relaxed);
                return false;
            }
        }
        if lock(&journal).pending() > 0 {
            // Batches were journaled while the last chunk was replayed: replay them next.
            return true;
        }
        let truncated = {
            let j = journal.clone();
            tokio::task::spawn_blocking(move || lock(&j).truncate()).await
        };
        if !matches!(truncated, Ok(Ok(()))) {
            tracing::error!("journal could not be truncated; will retry");
            return false;
        }
        match self.reconcile().await {
            Ok(_) => {
                self.spooling = false;
                self.health.set_committing(true);
                if !self.ready.swap(true, Ordering::Relaxed)
                    && let Some(n) = &self.on_ready
                {
                    n.notify_one();
                }
                tracing::info!("journal replayed; back to direct commits");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "index reload after replay failed; will retry");
                self.db_up.store(false, Ordering::Relaxed);
                false
            }
        }
    }
}

/// The index view of a journaled change, before the database has it: the same semantics
/// applied to what the index knows of the row. Sessions only in the journal have no
/// `radacctid` until replayed. Also used at start-up to show what the journal holds.
pub fn apply_offline(index: &SessionIndex, resolver: &dyn ResellerResolver, entry: &JournalEntry) {
    if let JournalEntry::Event(ev) = entry
        && matches!(ev.kind, EventKind::AccountingOn | EventKind::AccountingOff)
    {
        let nas = ev.nasipaddress.to_string();
        for s in index
            .collect(|s| s.nasipaddress == nas && s.acctstarttime.is_some_and(|t| t <= ev.time))
        {
            index.remove(&s.acctuniqueid);
        }
        return;
    }
    let key = entry.key();
    let mut row = index.get(key).map(|s| s.to_row());
    match entry {
        JournalEntry::Event(ev) => {
            semantics::apply(&mut row, ev);
        }
        JournalEntry::Close {
            stop_time,
            cause,
            if_updated_before,
            ..
        } => {
            if let Some(r) = row.as_mut()
                && still_due(r, *if_updated_before)
            {
                semantics::close(r, *stop_time, cause);
            }
        }
    }
    match row {
        Some(r) if r.is_open() => {
            index.upsert(Session::indexed(&r, resolver, None));
        }
        _ => {
            index.remove(key);
        }
    }
}

/// Locks the journal (a poisoned lock is taken over: the file is still consistent).
pub fn writer_lock(j: &SharedJournal) -> std::sync::MutexGuard<'_, Journal> {
    lock(j)
}

pub(super) fn lock(j: &SharedJournal) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets `up` whenever the database answers a ping (checked every `every`).
pub(super) async fn probe(store: Store, up: Arc<AtomicBool>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if up.load(Ordering::Relaxed) {
            continue;
        }
        if let Ok(Ok(())) =
            tokio::time::timeout(every.max(Duration::from_millis(500)), store.ping()).await
        {
            up.store(true, Ordering::Relaxed);
        }
    }
}

/// How a replay task ended.
pub(super) struct ReplayRun {
    /// The last step: `Drained`, `Stuck` (also: stopped for shutdown), or the database error.
    pub(super) result: Result<ReplayStep, StoreError>,
    /// Failed attempts of the entry at the replay position, for the next run.
    pub(super) poison_attempts: u32,
    /// Deferred migrations ran (or none were due).
    pub(super) migrated: bool,
}

impl ReplayRun {
    pub(super) fn ended(
        result: Result<ReplayStep, StoreError>,
        poison_attempts: u32,
        migrated: bool,
    ) -> Self {
        ReplayRun {
            result,
            poison_attempts,
            migrated,
        }
    }
}

/// What one replay step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStep {
    /// This many entries are now in the database.
    Replayed(u64),
    /// Nothing left.
    Drained,
    /// The entry at the replay position fails on a statement; it is retried later (and
    /// rejected to `<journal>.rejected` after repeated failures).
    Stuck,
}

/// Replays up to `max` journal entries in one transaction (or, when that fails on a statement,
/// one at a time). `Err` only when the database is unavailable.
pub async fn replay_chunk(
    store: &Store,
    journal: &SharedJournal,
    max: usize,
    commit_timeout: Duration,
    events: EventOptions,
    poison_attempts: &mut u32,
) -> Result<ReplayStep, StoreError> {
    let chunk = {
        let j = journal.clone();
        tokio::task::spawn_blocking(move || lock(&j).read_pending(max.max(1)))
            .await
            .map_err(|e| StoreError::Config(format!("journal task: {e}")))?
            .map_err(|e| StoreError::Config(format!("reading the journal: {e}")))?
    };
    let Some(&(_, last_offset)) = chunk.last() else {
        return Ok(ReplayStep::Drained);
    };
    let items: Vec<Item> = chunk.iter().map(|(e, _)| entry_item(e)).collect();
    match timed_commit(store, None, &items, commit_timeout, events)
        .await
        .0
    {
        Ok(Ok(outcome)) => {
            // Entries are replayed in order: up to the first one left unfinished (its redo
            // failed after the rest committed); that one and the rest are retried later.
            let done = outcome
                .unfinished
                .iter()
                .position(|u| *u)
                .unwrap_or(items.len());
            if done == 0 {
                return Err(StoreError::Timeout(commit_timeout));
            }
            let offset = if done == items.len() {
                last_offset
            } else {
                chunk[done - 1].1
            };
            lock(journal).mark_replayed(offset, done as u64);
            *poison_attempts = 0;
            return Ok(ReplayStep::Replayed(done as u64));
        }
        Ok(Err(e)) if e.is_unavailable() => return Err(e),
        Err(_) => return Err(StoreError::Timeout(commit_timeout)),
        Ok(Err(_)) => {}
    }
    // A statement failed: go one by one up to the failing entry.
    let mut done = 0;
    for ((entry, offset), item) in chunk.iter().zip(&items) {
        match timed_commit(
            store,
            None,
            std::slice::from_ref(item),
            commit_timeout,
            events,
        )
        .await
        .0
        {
            Ok(Ok(outcome)) if outcome.unfinished.contains(&true) => {
                return if done > 0 {
                    Ok(ReplayStep::Replayed(done))
                } else {
                    Err(StoreError::Timeout(commit_timeout))
                };
            }
            Ok(Ok(_)) => {
                lock(journal).mark_replayed(*offset, 1);
                *poison_attempts = 0;
                done += 1;
            }
            Ok(Err(e)) if e.is_unavailable() => return Err(e),
            Err(_) => return Err(StoreError::Timeout(commit_timeout)),
            Ok(Err(e)) => {
                *poison_attempts += 1;
                if *poison_attempts < POISON_ATTEMPTS {
                    tracing::warn!(error = %e, attempt = *poison_attempts, "journal entry failed; retrying later");
                    return Ok(if done > 0 {
                        ReplayStep::Replayed(done)
                    } else {
                        ReplayStep::Stuck
                    });
                }
                let mut j = lock(journal);
                if let Err(io) = j.reject(entry, &e.to_string()) {
                    tracing::error!(error = %io, "could not write the rejected entry; retrying later");
                    return Ok(ReplayStep::Stuck);
                }
                tracing::error!(
                    error = %e,
                    key = entry.key(),
                    rejected = %crate::ingest::journal::rejected_path(j.path()).display(),
                    "journal entry rejected after repeated failures: answered but NOT in the \
                     database; kept in the rejected file (`radacctd journal retry` applies it \
                     once the cause is fixed)"
                );
                j.mark_replayed(*offset, 1);
                *poison_attempts = 0;
                done += 1;
            }
        }
    }
    Ok(ReplayStep::Replayed(done))
}

/// Applies one journal entry on its own, as replay does once a chunk failed on a statement
/// (`radacctd journal retry`). An entry left unfinished (its redo under locks missed the
/// deadline) is an error.
pub async fn replay_entry(
    store: &Store,
    entry: &JournalEntry,
    commit_timeout: Duration,
    events: EventOptions,
) -> Result<(), StoreError> {
    let item = entry_item(entry);
    match timed_commit(
        store,
        None,
        std::slice::from_ref(&item),
        commit_timeout,
        events,
    )
    .await
    .0
    {
        Ok(Ok(outcome)) if outcome.unfinished.contains(&true) => {
            Err(StoreError::Timeout(commit_timeout))
        }
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(StoreError::Timeout(commit_timeout)),
    }
}

/// The writer item that replays a journal entry (no one to answer).
pub(super) fn entry_item(e: &JournalEntry) -> Item {
    match e {
        JournalEntry::Event(ev) => Item::Event {
            event: ev.clone(),
            reply: None,
        },
        JournalEntry::Close {
            acctuniqueid,
            stop_time,
            cause,
            if_updated_before,
            action,
        } => Item::Close(
            CloseRequest::new(
                acctuniqueid.clone(),
                Some(*stop_time),
                cause.clone(),
                *if_updated_before,
            )
            .0
            .with_action(action.as_deref().cloned()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journaled_close_keeps_its_condition_on_replay() {
        let (request, _rx) =
            CloseRequest::new("k".into(), Some(1_300), "Lost-Service", Some(1_301));
        let Item::Close(request) = entry_item(&JournalEntry::Close {
            acctuniqueid: request.acctuniqueid.clone(),
            stop_time: 1_300,
            cause: request.cause.clone(),
            if_updated_before: request.if_updated_before,
            action: None,
        }) else {
            panic!("a close");
        };
        assert_eq!(request.if_updated_before, Some(1_301));
        // A journal written before the field existed reads as unconditional.
        let old: JournalEntry = serde_json::from_str(
            r#"{"Close":{"acctuniqueid":"k","stop_time":5,"cause":"Admin-Reset"}}"#,
        )
        .expect("old entry");
        let JournalEntry::Close {
            if_updated_before, ..
        } = old
        else {
            panic!("a close");
        };
        assert_eq!(if_updated_before, None);
    }

    #[test]
    pub(super) fn the_log_limiter_lets_one_line_through_per_period_and_counts_the_rest() {
        let mut limiter = LogLimiter::default();
        let t0 = tokio::time::Instant::now();
        let every = Duration::from_secs(10);
        assert_eq!(limiter.allow_at(t0, every), Some(0));
        assert_eq!(limiter.allow_at(t0 + Duration::from_secs(1), every), None);
        assert_eq!(limiter.allow_at(t0 + Duration::from_secs(9), every), None);
        assert_eq!(
            limiter.allow_at(t0 + Duration::from_secs(10), every),
            Some(2)
        );
        assert_eq!(limiter.allow_at(t0 + Duration::from_secs(11), every), None);
        assert_eq!(
            limiter.allow_at(t0 + Duration::from_secs(25), every),
            Some(1)
        );
    }
}
