//! The group-commit writer: takes whatever is queued (up to a batch), folds the events of each
//! session in arrival order, writes the batch in one transaction, and only after COMMIT updates
//! the live index and sends the Accounting-Responses (invariant A: no response before the
//! record is durable).
//!
//! Without a journal, a batch whose transaction fails on a statement is retried in halves until
//! the failing event is isolated; that one gets no response, the others are committed and
//! answered, and a database that is unreachable fails the whole batch (the NAS retransmits).
//!
//! With the journal (DESIGN §10 "Durability"), a batch that cannot be committed is appended to
//! it and fsynced instead, and only then answered; while the journal holds anything, every new
//! batch goes there too (first in, first out), the index follows the journaled changes, and
//! the journal is replayed into the database as soon as it answers again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::journal::{Journal, JournalEntry, JournalError};
use super::semantics::{self, Effect};
use super::{CloseRequest, Drift, IngestReceiver, Item};
use crate::metrics::{DropReason, Stats};
use crate::radius::accounting::EventKind;
use crate::radius::reply::Responder;
use crate::sessions::{ResellerResolver, Row, RowVersion, Session, SessionIndex, Text};
use crate::store::{Store, StoreError};

/// Writer tuning.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Most events committed in one transaction.
    pub max_batch: usize,
    /// A transaction that takes longer than this is abandoned (journaled when the journal is
    /// enabled, else not answered).
    pub commit_timeout: Duration,
    /// How often, while the journal holds entries, the database is probed and replay retried.
    pub replay_interval: Duration,
    /// `database.radacct_fillfactor`, applied with migrations deferred from start-up.
    pub radacct_fillfactor: Option<u8>,
}

/// What the writer tells the rest of the daemon about the database: whether commits go
/// through. `/readyz` reads it (a database that answers a ping can still not commit: a locked
/// table, a commit waiting for a synchronous replica).
#[derive(Debug, Default)]
pub struct WriterHealth {
    /// The last commit failed on an outage, or changes are going to the journal: the database
    /// is not taking the writer's commits.
    not_committing: AtomicBool,
}

impl WriterHealth {
    /// Whether the writer's commits currently go through to the database.
    pub fn committing(&self) -> bool {
        !self.not_committing.load(Ordering::Relaxed)
    }

    fn set_committing(&self, ok: bool) {
        self.not_committing.store(!ok, Ordering::Relaxed);
    }
}

/// A change to the live index, applied after the transaction committed.
#[derive(Debug)]
enum IndexChange {
    /// The row as written, and its new version when the store reports one.
    Upsert(Box<Row>, Option<RowVersion>),
    Remove(String),
    /// The table refused a write from the index: another writer changed the row. The next
    /// write of this session reads the row first (unless this batch's redo wrote it again).
    ForgetVersion(String),
}

/// The journal shared with blocking tasks.
pub type SharedJournal = Arc<Mutex<Journal>>;

/// The single writer.
pub struct Writer {
    store: Store,
    index: Arc<SessionIndex>,
    resolver: Arc<dyn ResellerResolver>,
    responder: Option<Responder>,
    stats: Arc<Stats>,
    opts: WriterOptions,
    journal: Option<SharedJournal>,
    /// True while the journal holds entries: new batches go there, in order.
    spooling: bool,
    /// Set by the prober when the database answers again.
    db_up: Arc<AtomicBool>,
    /// False until the index reflects the database (start-up with the database unreachable).
    ready: Arc<AtomicBool>,
    /// Migrations still have to run before replay (the database was down at start-up).
    needs_migrate: bool,
    /// Failed replay attempts of the entry at the replay position.
    poison_attempts: u32,
    /// Whether commits go through (read by `/readyz`).
    health: Arc<WriterHealth>,
    /// Notified when the database is back after start-up without it (clients, scope reload).
    on_ready: Option<Arc<tokio::sync::Notify>>,
    /// Log lines about refused journal appends, at most one per [`REFUSED_LOG_EVERY`].
    refused_log: LogLimiter,
}

/// A journal that refuses appends (full, disk full, I/O error) is logged at most this often,
/// with the count of batches refused meanwhile: a NAS retransmitting into a full journal must
/// not turn every packet into an ERROR line.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Lets a repeated log line through at most once per period, counting the others.
#[derive(Debug, Default)]
struct LogLimiter {
    last: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(lines suppressed since the last one)` when a line may be logged now.
    fn allow(&mut self, every: Duration) -> Option<u64> {
        self.allow_at(tokio::time::Instant::now(), every)
    }

    fn allow_at(&mut self, now: tokio::time::Instant, every: Duration) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("store", &self.store.kind())
            .field("opts", &self.opts)
            .field("spooling", &self.spooling)
            .finish_non_exhaustive()
    }
}

/// A journaled entry that keeps failing with a statement error (not an outage) this many
/// times is moved to `<journal>.rejected` so it cannot block everything behind it.
const POISON_ATTEMPTS: u32 = 5;

/// On PostgreSQL the writer keeps up to [`MAX_FLIGHTS`] commits in flight, each a transaction
/// on its own connection: a new batch is committed while earlier ones are still running,
/// provided it shares no session with them and holds no Accounting-On/Off or reconciliation
/// (those wait until everything in flight has landed). A batch of at least `2 × PART_MIN`
/// events is also split by session key into parts of at least `PART_MIN` events. Smaller
/// batches stay whole: splitting them only multiplies the fixed cost per batch.
const PART_MIN: usize = 128;
/// Most commits in flight at once (connections the writer uses at once; never more than the
/// pool's size minus one).
const MAX_FLIGHTS: usize = 4;

/// A commit in flight that ended: its items, the result, how long it took, and whether it was
/// started while another commit was in flight.
struct Landed {
    items: Vec<Item>,
    result: Result<Result<Outcome, StoreError>, tokio::time::error::Elapsed>,
    elapsed: Duration,
    overlapped: bool,
}

/// The commits in flight, in launch order, and the sessions they hold. Each commit runs in a
/// task of its own, so it progresses (and its deadline means what it says) while the writer
/// is busy with something else: landing another commit, a retry, a journal fsync.
#[derive(Default)]
struct Flights {
    running: futures_util::stream::FuturesOrdered<tokio::task::JoinHandle<Landed>>,
    /// The keys of each commit in `running`, in the same order.
    flight_keys: std::collections::VecDeque<Vec<String>>,
    keys: std::collections::HashSet<String>,
}

impl Flights {
    fn len(&self) -> usize {
        self.running.len()
    }

    fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Whether a session of `items` is in a commit in flight.
    fn overlaps(&self, items: &[Item]) -> bool {
        !self.keys.is_empty() && items.iter().any(|i| self.keys.contains(i.key()))
    }

    fn launch(
        &mut self,
        store: &Store,
        index: &Arc<SessionIndex>,
        items: Vec<Item>,
        timeout: Duration,
    ) {
        let keys: Vec<String> = items.iter().map(|i| i.key().to_owned()).collect();
        self.keys.extend(keys.iter().cloned());
        self.flight_keys.push_back(keys);
        let overlapped = !self.running.is_empty();
        let store = store.clone();
        let index = index.clone();
        self.running.push_back(tokio::spawn(async move {
            let (result, elapsed) = timed_commit(&store, Some(&index), &items, timeout).await;
            Landed {
                items,
                result,
                elapsed,
                overlapped,
            }
        }));
    }

    /// The oldest commit in flight, once it ended (`None` when nothing is in flight); its
    /// sessions are no longer in flight. `Err`: the task panicked, and its items with it.
    async fn next(&mut self) -> Option<Result<Landed, tokio::task::JoinError>> {
        use futures_util::StreamExt;
        let landed = self.running.next().await?;
        for key in self.flight_keys.pop_front().unwrap_or_default() {
            self.keys.remove(&key);
        }
        Some(landed)
    }
}

impl Writer {
    pub fn new(
        store: Store,
        index: Arc<SessionIndex>,
        resolver: Arc<dyn ResellerResolver>,
        responder: Option<Responder>,
        stats: Arc<Stats>,
        opts: WriterOptions,
    ) -> Self {
        Writer {
            store,
            index,
            resolver,
            responder,
            stats,
            opts,
            journal: None,
            spooling: false,
            db_up: Arc::new(AtomicBool::new(true)),
            ready: Arc::new(AtomicBool::new(true)),
            needs_migrate: false,
            poison_attempts: 0,
            health: Arc::new(WriterHealth::default()),
            on_ready: None,
            refused_log: LogLimiter::default(),
        }
    }

    /// Shares the writer's view of the database with `/readyz`.
    pub fn with_health(mut self, health: Arc<WriterHealth>) -> Self {
        self.health = health;
        self
    }

    /// `notify` is told when the database is back after a start-up without it.
    pub fn on_ready(mut self, notify: Arc<tokio::sync::Notify>) -> Self {
        self.on_ready = Some(notify);
        self
    }

    /// Enables the journal. `ready` is the flag the API reads; when it is false (the database
    /// was unreachable at start-up) the writer runs migrations, replays the journal and
    /// reloads the index as soon as the database answers, then sets it.
    pub fn with_journal(mut self, journal: SharedJournal, ready: Arc<AtomicBool>) -> Self {
        let pending = lock(&journal).pending();
        self.spooling = pending > 0 || !ready.load(Ordering::Relaxed);
        self.needs_migrate = !ready.load(Ordering::Relaxed);
        self.db_up.store(!self.spooling, Ordering::Relaxed);
        self.health.set_committing(!self.spooling);
        self.journal = Some(journal);
        self.ready = ready;
        self
    }

    /// Runs until every sender is gone and the queue is drained: on shutdown the listener
    /// stops first, so everything already accepted is committed (or journaled) and answered, or
    /// not answered at all.
    pub async fn run(mut self, mut rx: IngestReceiver) {
        let max = self.opts.max_batch.max(1);
        let mut batch = Vec::with_capacity(max);
        let prober = self.journal.as_ref().map(|_| {
            tokio::spawn(probe(
                self.store.clone(),
                self.db_up.clone(),
                self.opts.replay_interval,
            ))
        });
        let mut replay_tick = tokio::time::interval(self.opts.replay_interval);
        replay_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Leave a connection of the pool to the API and the jobs. SQLite has one writer at a
        // time: nothing runs concurrently there.
        let pool_share = (self.store.max_connections() as usize).saturating_sub(1);
        let max_flights = match self.store {
            Store::Postgres(_) => MAX_FLIGHTS.min(pool_share).max(1),
            Store::Sqlite(_) => 1,
        };
        let mut flights = Flights::default();
        // The replay of the journal runs in a task of its own, so that new batches are
        // journaled and answered while it waits on a slow or locked database.
        let mut replay: Option<tokio::task::JoinHandle<ReplayRun>> = None;
        let stop_replay = tokio_util::sync::CancellationToken::new();
        // After a failed or stuck replay, the next one waits for the replay tick.
        let mut replay_due = true;
        loop {
            if self.spooling {
                // Everything goes to the journal, in order: nothing may still be in flight.
                self.land_all(&mut flights).await;
                if replay.is_none() && replay_due && self.db_up.load(Ordering::Relaxed) {
                    replay = Some(self.spawn_replay(stop_replay.child_token()));
                }
                let got = tokio::select! {
                    n = rx.recv_many(&mut batch, max) => n,
                    run = async { replay.as_mut().expect("checked").await }, if replay.is_some() => {
                        replay = None;
                        replay_due = self.replay_landed(run).await;
                        continue;
                    }
                    _ = replay_tick.tick() => {
                        replay_due = true;
                        continue;
                    }
                };
                if got == 0 {
                    break;
                }
                self.process(std::mem::take(&mut batch)).await;
                batch.reserve(max);
                continue;
            }
            let got = if flights.is_empty() {
                rx.recv_many(&mut batch, max).await
            } else if flights.len() >= max_flights {
                self.land_next(&mut flights).await;
                continue;
            } else {
                tokio::select! {
                    biased;
                    landed = flights.next() => {
                        self.land(landed).await;
                        continue;
                    }
                    n = rx.recv_many(&mut batch, max) => n,
                }
            };
            if got == 0 {
                self.land_all(&mut flights).await;
                break;
            }
            let items = std::mem::take(&mut batch);
            batch.reserve(max);
            let concurrent = max_flights > 1 && splittable(&items);
            if !concurrent || flights.overlaps(&items) {
                // In order after everything in flight: a bulk close or a reconciliation, a
                // session already in flight, or a store without concurrency.
                self.land_all(&mut flights).await;
                if !concurrent {
                    self.process(items).await;
                    continue;
                }
            }
            let parts = (items.len() / PART_MIN).clamp(1, max_flights);
            while flights.len() + parts > max_flights {
                self.land_next(&mut flights).await;
            }
            if self.spooling {
                // A landing just switched to the journal: this batch follows it there.
                self.process(items).await;
                continue;
            }
            let parts = if parts > 1 {
                split_by_key(items, parts)
            } else {
                vec![items]
            };
            for part in parts {
                flights.launch(&self.store, &self.index, part, self.opts.commit_timeout);
            }
        }
        if let Some(run) = replay.take() {
            // Shutdown: the replay stops after its current chunk (what it replayed is marked;
            // the rest is replayed at the next start).
            stop_replay.cancel();
            let _ = run.await;
        }
        if let Some(p) = prober {
            p.abort();
        }
        tracing::debug!("ingest writer drained");
    }

    /// Waits for the oldest commit in flight and handles its outcome.
    async fn land_next(&mut self, flights: &mut Flights) {
        let landed = flights.next().await;
        self.land(landed).await;
    }

    /// Lands every commit in flight, oldest first.
    async fn land_all(&mut self, flights: &mut Flights) {
        while !flights.is_empty() {
            self.land_next(flights).await;
        }
    }

    /// A commit in flight ended: committed → indexed and answered; failed on an outage
    /// (unreachable, timed out) → journaled when there is a journal, else unanswered, as a
    /// whole batch would be, without a retry against the dead database; failed on a statement
    /// → redone alone through [`Writer::process`] (retry in halves). Commits in flight hold
    /// different sessions, so the order in which they land does not matter.
    async fn land(&mut self, landed: Option<Result<Landed, tokio::task::JoinError>>) {
        let landed = match landed {
            None => return,
            Some(Ok(landed)) => landed,
            Some(Err(e)) => {
                // A bug: the batch's items went with the task. Their requests stay unanswered
                // (the NAS retransmits once the reply cache forgets them).
                Stats::add(&self.stats.batch_failures, 1);
                tracing::error!(error = %e, "a commit task failed; its events are not answered");
                return;
            }
        };
        let error = match landed.result {
            Ok(Ok(outcome)) => {
                if landed.overlapped {
                    Stats::add(&self.stats.paired_batches, 1);
                }
                self.committed(&landed.items, outcome, landed.elapsed);
                return;
            }
            Ok(Err(e)) => e,
            Err(_) => StoreError::Timeout(self.opts.commit_timeout),
        };
        let items = landed.items;
        Stats::add(&self.stats.batch_failures, 1);
        if !error.is_outage() {
            tracing::debug!(error = %error, events = items.len(), "concurrent commit failed; retrying it alone");
            self.process(items).await;
        } else if self.journal.is_some() {
            if !self.spooling {
                self.start_journaling(&error, items.len());
            }
            self.spool(&items).await;
        } else {
            self.not_recorded(&error, &items);
        }
    }

    /// A commit failed and the journal takes over: every batch goes there, in order, until it
    /// is replayed.
    fn start_journaling(&mut self, error: &StoreError, events: usize) {
        tracing::warn!(error = %error, events, "commit failed; journaling");
        self.spooling = true;
        self.db_up.store(false, Ordering::Relaxed);
        self.health.set_committing(false);
    }

    /// Items that could not be recorded: logged, then released unanswered.
    fn not_recorded(&self, error: &StoreError, items: &[Item]) {
        if error.is_outage() {
            self.health.set_committing(false);
        }
        if let [item] = items {
            let kind = match item {
                Item::Event { event, .. } => event.kind.as_str(),
                Item::Close(_) => "close",
                Item::Reconcile(_) => "reconcile",
            };
            tracing::error!(
                error = %error,
                kind,
                acctuniqueid = %item.key(),
                "accounting change not recorded; no response"
            );
        } else {
            tracing::error!(error = %error, events = items.len(), "batch not recorded; no responses");
        }
        for item in items {
            self.abandon(item);
        }
    }

    /// Commits one batch in order; a reconciliation request splits it.
    pub async fn process(&mut self, items: Vec<Item>) {
        let mut start = 0;
        for (i, item) in items.iter().enumerate() {
            if let Item::Reconcile(_) = item {
                self.process_range(&items[start..i]).await;
                start = i + 1;
            }
        }
        self.process_range(&items[start..]).await;
        for item in items {
            if let Item::Reconcile(done) = item {
                if self.spooling {
                    // The database view is incomplete until the journal is replayed.
                    continue;
                }
                match self.reconcile().await {
                    Ok(drift) => {
                        let _ = done.send(drift);
                    }
                    Err(e) => tracing::warn!(error = %e, "index reconciliation failed"),
                }
            }
        }
    }

    /// A committed batch: metrics, the index, then the answers.
    /// Items left unfinished (see `Outcome::unfinished`) are released unanswered, as after a
    /// failed commit: the NAS retransmits them.
    fn committed(&mut self, part: &[Item], outcome: Outcome, elapsed: Duration) {
        self.health.set_committing(true);
        self.stats.observe_commit(elapsed, part.len());
        self.apply_to_index(outcome.changes);
        Stats::add(&self.stats.batches, 1);
        Stats::add(&self.stats.batch_events, part.len() as u64);
        Stats::add(&self.stats.unchanged, outcome.unchanged);
        for (counter, n) in self.stats.row_sources.iter().zip(outcome.sources) {
            Stats::add(counter, n);
        }
        if !outcome.unfinished.contains(&true) {
            self.answer_all(part, &outcome.closed);
            return;
        }
        let mut done = Vec::with_capacity(part.len());
        let mut closed = Vec::with_capacity(part.len());
        for (i, item) in part.iter().enumerate() {
            if outcome.unfinished[i] {
                self.abandon(item);
            } else {
                done.push(item);
                closed.push(outcome.closed[i]);
            }
        }
        self.answer_all(&done, &closed);
    }

    /// Makes the index equal the open rows in SQL; returns the differences it fixed.
    async fn reconcile(&self) -> Result<Drift, StoreError> {
        let mut open: HashMap<Text, Session> = HashMap::new();
        self.store
            .for_each_open_session(self.resolver.as_ref(), |session| {
                open.insert(session.acctuniqueid.clone(), session);
            })
            .await?;
        let mut drift = Drift::default();
        let mut stale: Vec<Text> = Vec::new();
        self.index.for_each(|s| {
            if !open.contains_key(&s.acctuniqueid) {
                stale.push(s.acctuniqueid.clone());
            }
        });
        for key in stale {
            self.index.remove(&key);
            drift.removed += 1;
        }
        for (key, session) in open {
            match self.index.get(&key) {
                Some(known) if known == session => {}
                // The same values under another version (another writer rewrote the row
                // unchanged): not drift, but the index takes the version the row has now.
                Some(known) if known.same_values(&session) => {
                    self.index.upsert(session);
                }
                _ => {
                    self.index.upsert(session);
                    drift.added += 1;
                }
            }
        }
        if drift != Drift::default() {
            tracing::info!(
                added = drift.added,
                removed = drift.removed,
                "index reconciled with SQL"
            );
        }
        Stats::add(&self.stats.drift, drift.added + drift.removed);
        Ok(drift)
    }

    /// Commits items, splitting them on statement failures, and answers what committed.
    async fn process_range(&mut self, items: &[Item]) {
        if items.is_empty() {
            return;
        }
        if self.spooling {
            return self.spool(items).await;
        }
        // Ranges still to try, last = next; halves are pushed second-half first to keep order.
        let mut todo: Vec<std::ops::Range<usize>> = Vec::with_capacity(8);
        todo.push(0..items.len());
        while let Some(range) = todo.pop() {
            let part = &items[range.clone()];
            let (result, elapsed) = timed_commit(
                &self.store,
                Some(&self.index),
                part,
                self.opts.commit_timeout,
            )
            .await;
            let error = match result {
                Ok(Ok(outcome)) => {
                    self.committed(part, outcome, elapsed);
                    continue;
                }
                Ok(Err(e)) => e,
                Err(_) => StoreError::Timeout(self.opts.commit_timeout),
            };
            Stats::add(&self.stats.batch_failures, 1);
            if self.journal.is_some() {
                self.start_journaling(&error, part.len());
                // Nothing is split when journaling, so this range runs to the end: everything
                // not yet committed goes to the journal, in order.
                return self.spool(&items[range.start..]).await;
            }
            if !error.is_outage() && part.len() > 1 {
                let mid = range.start + part.len() / 2;
                todo.push(mid..range.end);
                todo.push(range.start..mid);
                continue;
            }
            self.not_recorded(&error, part);
        }
    }

    /// Answers committed items: the RADIUS responses in one hand-off to the responder.
    fn answer_all<I: std::borrow::Borrow<Item>>(&self, items: &[I], closed: &[bool]) {
        let replies = items.iter().filter_map(|item| match item.borrow() {
            Item::Event {
                reply: Some(reply), ..
            } => Some(reply),
            _ => None,
        });
        if let Some(r) = &self.responder {
            r.answer_all(replies);
        }
        for (item, closed) in items.iter().zip(closed) {
            if let Item::Close(c) = item.borrow() {
                c.answer(*closed);
            }
        }
    }

    fn answer(&self, item: &Item, closed: bool) {
        match item {
            Item::Event {
                reply: Some(reply), ..
            } => {
                if let Some(r) = &self.responder {
                    r.answer(reply);
                }
            }
            Item::Event { reply: None, .. } | Item::Reconcile(_) => {}
            Item::Close(c) => c.answer(closed),
        }
    }

    /// The write failed: counted as `write_failed`, then released unanswered.
    fn abandon(&self, item: &Item) {
        if let Item::Event { .. } = item {
            self.stats.dropped(DropReason::WriteFailed);
        }
        self.release(item);
    }

    /// No answer: a retransmission of the request is processed afresh, and a close requester
    /// sees its channel closed.
    fn release(&self, item: &Item) {
        match item {
            Item::Event { reply, .. } => {
                if let (Some(reply), Some(r)) = (reply, &self.responder) {
                    r.abandon(reply);
                }
            }
            Item::Close(c) => c.abandon(),
            Item::Reconcile(_) => {}
        }
    }

    /// Appends items to the journal (fsync), updates the index from them, answers them.
    async fn spool(&mut self, items: &[Item]) {
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
    fn refused(&mut self, error: &dyn std::fmt::Display, reason: DropReason, items: &[&Item]) {
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

    fn apply_offline(&self, entry: &JournalEntry) {
        apply_offline(&self.index, self.resolver.as_ref(), entry);
    }

    /// Starts replaying the journal off the writer's path: migrations first when they were
    /// deferred, then chunk after chunk until the journal is drained, a chunk is stuck, the
    /// database fails, or `stop` is cancelled.
    fn spawn_replay(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<ReplayRun> {
        let store = self.store.clone();
        let journal = self.journal.clone();
        let stats = self.stats.clone();
        let (max, timeout) = (self.opts.max_batch, self.opts.commit_timeout);
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
                match replay_chunk(&store, &journal, max, timeout, &mut poison_attempts).await {
                    Ok(ReplayStep::Replayed(n)) => Stats::add(&stats.journal_replayed, n),
                    other => return ReplayRun::ended(other, poison_attempts, true),
                }
            }
        })
    }

    /// A replay run ended. Drained, and nothing journaled since: the journal is truncated, the
    /// index reloaded from the database, and the writer goes back to direct commits. Returns
    /// whether the next replay may start at once (else it waits for the replay tick).
    async fn replay_landed(&mut self, run: Result<ReplayRun, tokio::task::JoinError>) -> bool {
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

    fn apply_to_index(&self, changes: Vec<IndexChange>) {
        for change in changes {
            match change {
                IndexChange::Upsert(row, version) => {
                    self.index
                        .upsert(Session::indexed(&row, self.resolver.as_ref(), version));
                }
                IndexChange::Remove(key) => {
                    self.index.remove(&key);
                }
                IndexChange::ForgetVersion(key) => self.index.clear_version(&key),
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
    let mut row = index.get(key).map(|s| row_from_session(&s));
    match entry {
        JournalEntry::Event(ev) => {
            semantics::apply(&mut row, ev);
        }
        JournalEntry::Close {
            stop_time, cause, ..
        } => {
            if let Some(r) = row.as_mut() {
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

fn lock(j: &SharedJournal) -> std::sync::MutexGuard<'_, Journal> {
    j.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets `up` whenever the database answers a ping (checked every `every`).
async fn probe(store: Store, up: Arc<AtomicBool>, every: Duration) {
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
struct ReplayRun {
    /// The last step: `Drained`, `Stuck` (also: stopped for shutdown), or the database error.
    result: Result<ReplayStep, StoreError>,
    /// Failed attempts of the entry at the replay position, for the next run.
    poison_attempts: u32,
    /// Deferred migrations ran (or none were due).
    migrated: bool,
}

impl ReplayRun {
    fn ended(result: Result<ReplayStep, StoreError>, poison_attempts: u32, migrated: bool) -> Self {
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
    match timed_commit(store, None, &items, commit_timeout).await.0 {
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
        match timed_commit(store, None, std::slice::from_ref(item), commit_timeout)
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
                    rejected = %super::journal::rejected_path(j.path()).display(),
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
) -> Result<(), StoreError> {
    let item = entry_item(entry);
    match timed_commit(store, None, std::slice::from_ref(&item), commit_timeout)
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
fn entry_item(e: &JournalEntry) -> Item {
    match e {
        JournalEntry::Event(ev) => Item::Event {
            event: ev.clone(),
            reply: None,
        },
        JournalEntry::Close {
            acctuniqueid,
            stop_time,
            cause,
        } => Item::Close(
            CloseRequest::new(acctuniqueid.clone(), Some(*stop_time), cause.clone(), None).0,
        ),
    }
}

/// What the index knows of a row, as a row (for journaled changes while the database is away).
fn row_from_session(s: &Session) -> Row {
    Row {
        radacctid: s.radacctid,
        acctsessionid: s.acctsessionid.to_string(),
        acctuniqueid: s.acctuniqueid.to_string(),
        username: Some(s.username.to_string()),
        nasipaddress: s.nasipaddress.to_string(),
        nasportid: s.nasportid.as_deref().map(String::from),
        framedipaddress: s.framedipaddress.as_deref().map(String::from),
        callingstationid: s.callingstationid.as_deref().map(String::from),
        acctstarttime: s.acctstarttime,
        acctupdatetime: s.acctupdatetime,
        acctinputoctets: s.acctinputoctets,
        acctoutputoctets: s.acctoutputoctets,
        acctsessiontime: s.acctsessiontime,
        ..Row::default()
    }
}

/// What a committed write did.
#[derive(Debug)]
struct Outcome {
    changes: Vec<IndexChange>,
    /// Events that changed nothing.
    unchanged: u64,
    /// Per item: whether a close request closed its row.
    closed: Vec<bool>,
    /// Sessions by where their row came from (`metrics::ROW_SOURCES` order).
    sources: [u64; 4],
    /// Per item: not written after all (its redo under locks failed after the rest of the
    /// batch had committed). The writer treats these as a failed commit of their own.
    unfinished: Vec<bool>,
}

impl Outcome {
    fn new(items: usize) -> Outcome {
        Outcome {
            changes: Vec::new(),
            unchanged: 0,
            closed: vec![false; items],
            sources: [0; 4],
            unfinished: vec![false; items],
        }
    }
}

/// Writes `items`. On PostgreSQL a batch without Accounting-On/Off takes the optimistic path
/// (one guarded statement that inserts and updates, preceded by a read only for sessions the
/// index cannot vouch for); anything else, and any batch whose optimistic write fails before
/// it commits, takes the locked transaction path.
async fn commit(
    store: &Store,
    index: Option<&SessionIndex>,
    items: &[Item],
    deadline: tokio::time::Instant,
) -> Result<Outcome, StoreError> {
    let refs: Vec<&Item> = items.iter().collect();
    if let Store::Postgres(pg) = store
        && !refs.iter().any(|i| is_barrier(i))
    {
        match commit_optimistic(pg, store, index, &refs, deadline).await {
            Ok(out) => return Ok(out),
            Err(e) if e.is_unavailable() => return Err(e),
            // A conflicting insert by another writer, a statement error: the locked path
            // either succeeds or isolates the culprit.
            Err(e) => tracing::debug!(error = %e, "optimistic write failed; using a transaction"),
        }
    }
    commit_locked(store, &refs).await
}

/// Whether a batch may be split by session: no bulk close (Accounting-On/Off closes sessions
/// of any key, so everything must keep its order around it) and no reconciliation request.
fn splittable(items: &[Item]) -> bool {
    !items
        .iter()
        .any(|i| is_barrier(i) || matches!(i, Item::Reconcile(_)))
}

/// `n` parts by a hash of the session key, each in arrival order: every event of a session
/// lands in the same part, so the parts can commit in any order.
fn split_by_key(items: Vec<Item>, n: usize) -> Vec<Vec<Item>> {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut parts: Vec<Vec<Item>> = (0..n)
        .map(|_| Vec::with_capacity(items.len() / n + 16))
        .collect();
    for item in items {
        parts[(hasher.hash_one(item.key()) % n as u64) as usize].push(item);
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// [`commit`] within `timeout`, and how long it took.
async fn timed_commit(
    store: &Store,
    index: Option<&SessionIndex>,
    items: &[Item],
    timeout: Duration,
) -> (
    Result<Result<Outcome, StoreError>, tokio::time::error::Elapsed>,
    Duration,
) {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let result = tokio::time::timeout_at(
        deadline + DEADLINE_GRACE,
        commit(store, index, items, deadline),
    )
    .await;
    (result, started.elapsed())
}

/// How long after a commit's deadline the whole commit is abandoned. Within the deadline, a
/// redo under locks that follows a committed guarded write gives up on its own (its events are
/// left unfinished, the rest is answered); the grace keeps the outer timeout from firing first.
const DEADLINE_GRACE: Duration = Duration::from_millis(250);

fn is_barrier(item: &Item) -> bool {
    matches!(item, Item::Event { event, .. }
        if matches!(event.kind, EventKind::AccountingOn | EventKind::AccountingOff))
}

/// Where the optimistic path takes a session's row from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The live index: the row as radacctd last wrote it, with its version. Only for runs of
    /// Interim-Updates, Stops and closes (a Start would set `connectinfo_start`, which the
    /// index does not hold; it is rare on an open session).
    Index,
    /// None: the index has no open session with this key, and its items are Starts,
    /// Interim-Updates and Stops, which create a row when there is none. The insert finds out
    /// when there is one (`ON CONFLICT DO NOTHING`), and the key is redone under locks.
    New,
    /// Read from the table.
    Table,
}

impl Source {
    /// Its index in `Outcome::sources` (`metrics::ROW_SOURCES`).
    fn metric(self) -> usize {
        match self {
            Source::Index => 0,
            Source::New => 1,
            Source::Table => SOURCE_READ,
        }
    }
}

/// Indexes into `Outcome::sources` (`metrics::ROW_SOURCES`) of the other two sources.
const SOURCE_READ: usize = 2;
const SOURCE_REDONE: usize = 3;

/// The sessions of a batch and where their rows come from.
struct Sources<'a> {
    /// The keys, in first-seen order.
    keys: Vec<&'a str>,
    of: HashMap<&'a str, Source>,
    /// The index's sessions of the keys whose source is [`Source::Index`].
    fed: Vec<(&'a str, Session)>,
}

/// The source of each key of `items`.
fn sources<'a>(
    items: &[&'a Item],
    index: Option<&SessionIndex>,
    new_without_lookup: bool,
) -> Sources<'a> {
    let keys = unique_keys(items, 0..items.len());
    // Per key: whether every item allows the index as the source, and a new row; and whether
    // a close is followed by something else (a close followed by an Interim-Update can reopen
    // the row, a sweeper close, which clears columns the index does not hold: the index-fed
    // update could only keep them).
    #[derive(Clone, Copy)]
    struct Allowed {
        from_index: bool,
        new: bool,
        closed: bool,
        after_close: bool,
    }
    let mut allowed: HashMap<&str, Allowed> = HashMap::with_capacity(keys.len());
    for item in items {
        let (from_index, new) = match item {
            Item::Event { event, .. } => match event.kind {
                EventKind::InterimUpdate | EventKind::Stop => (true, true),
                EventKind::Start => (false, true),
                EventKind::AccountingOn | EventKind::AccountingOff => (false, false),
            },
            Item::Close(_) => (true, false),
            Item::Reconcile(_) => (false, false),
        };
        let a = allowed.entry(item.key()).or_insert(Allowed {
            from_index: true,
            new: true,
            closed: false,
            after_close: false,
        });
        a.from_index &= from_index;
        a.new &= new;
        a.after_close |= a.closed;
        a.closed |= matches!(item, Item::Close(_));
    }
    let mut out = HashMap::with_capacity(keys.len());
    let mut fed = Vec::new();
    for k in &keys {
        let a = allowed[k];
        let (from_index, new) = (a.from_index && !a.after_close, a.new);
        let source = match index {
            None => Source::Table,
            Some(ix) => match ix.get(k) {
                Some(s)
                    if from_index
                        && s.radacctid.is_some()
                        && s.row_version.is_some()
                        && (s.acctstarttime.is_some() || s.acctupdatetime.is_some()) =>
                {
                    fed.push((*k, s));
                    Source::Index
                }
                None if new && new_without_lookup => Source::New,
                _ => Source::Table,
            },
        };
        out.insert(*k, source);
    }
    Sources { keys, of: out, fed }
}

/// Without locks: each session's row comes from the index when it holds the row radacctd last
/// wrote, is assumed absent when the index has no open session with its key and its events
/// would create one, and is read from the table otherwise (see [`Source`]). Then fold, and one
/// statement inserts the new rows and updates the changed ones, each only where its row
/// version (`xmin`) is still the one known; the same statement checks the version of index-fed
/// sessions whose events changed nothing. Rows another writer changed, and keys that turned
/// out to exist, are redone under locks. In steady state (Interim-Updates and Stops of open
/// sessions, Starts of new ones) a batch is one statement and reads nothing.
async fn commit_optimistic(
    pg: &crate::store::PgStore,
    store: &Store,
    index: Option<&SessionIndex>,
    items: &[&Item],
    deadline: tokio::time::Instant,
) -> Result<Outcome, StoreError> {
    let new_without_lookup = index.is_some() && pg.key_is_unique().await?;
    let Sources {
        keys,
        of: sources,
        fed: fed_sessions,
    } = sources(items, index, new_without_lookup);
    let mut rows: HashMap<String, Row> = HashMap::with_capacity(keys.len());
    let mut versions: HashMap<String, RowVersion> = HashMap::with_capacity(keys.len());
    // The index-fed rows as they were before folding.
    let mut fed: HashMap<String, Row> = HashMap::new();
    for (k, session) in fed_sessions {
        let row = row_from_session(&session);
        if let Some(v) = session.row_version {
            versions.insert(k.to_owned(), v);
        }
        rows.insert(k.to_owned(), row.clone());
        fed.insert(k.to_owned(), row);
    }
    let lookup: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| sources[k] == Source::Table)
        .collect();
    if !lookup.is_empty() {
        let (loaded, loaded_versions) = pg.load_versions(&lookup).await?;
        rows.extend(loaded);
        versions.extend(loaded_versions);
    }
    let mut out = Outcome::new(items.len());
    for source in sources.values() {
        out.sources[source.metric()] += 1;
    }
    let mut unchanged = vec![false; items.len()];
    let mut folded = fold(items, 0..items.len(), rows, &mut out, &mut unchanged);
    let mut redo: std::collections::HashSet<String> = Default::default();
    let (mut index_fed, updates): (Vec<Row>, Vec<Row>) = std::mem::take(&mut folded.updates)
        .into_iter()
        .partition(|r| fed.contains_key(&r.acctuniqueid));
    index_fed.retain(|r| {
        let exact = crate::store::index_fed_write_is_exact(&fed[&r.acctuniqueid], r);
        if !exact {
            redo.insert(r.acctuniqueid.clone());
        }
        exact
    });
    // An index-fed session whose items changed nothing was judged on the index's copy, which
    // is right only while the row still has its version: the same statement checks that, and
    // a session whose row changed is redone under locks like a refused write.
    let changed: std::collections::HashSet<&str> =
        index_fed.iter().map(|r| r.acctuniqueid.as_str()).collect();
    let judged_unchanged: Vec<Row> = fed
        .iter()
        .filter(|(k, _)| !changed.contains(k.as_str()) && !redo.contains(*k))
        .map(|(_, r)| r.clone())
        .collect();
    let written = pg
        .write_guarded(
            &mut folded.inserts,
            &updates,
            &index_fed,
            &judged_unchanged,
            &versions,
        )
        .await?;
    redo.extend(written.refused);
    folded.updates = updates;
    folded.updates.extend(index_fed);
    if !redo.is_empty() {
        tracing::debug!(
            rows = redo.len(),
            "rows changed by another writer, or already there; redoing them"
        );
        folded.inserts.retain(|r| !redo.contains(&r.acctuniqueid));
        folded.updates.retain(|r| !redo.contains(&r.acctuniqueid));
    }
    record(folded, &mut out, &written.versions);
    if redo.is_empty() {
        out.unchanged = unchanged.iter().filter(|u| **u).count() as u64;
        return Ok(out);
    }
    let again_at: Vec<usize> = (0..items.len())
        .filter(|i| redo.contains(items[*i].key()))
        .collect();
    let again_items: Vec<&Item> = again_at.iter().map(|i| items[*i]).collect();
    let redo_started = std::time::Instant::now();
    let redone = match tokio::time::timeout_at(deadline, commit_locked(store, &again_items)).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout(redo_started.elapsed())),
    };
    let again = match redone {
        Ok(again) => again,
        Err(e) => {
            // The rest of the batch has committed; redoing the whole batch now would apply
            // its events twice. These few are left unanswered (the NAS retransmits them).
            tracing::warn!(
                error = %e,
                events = again_at.len(),
                "events redone under locks failed after their batch committed; not answered"
            );
            for i in &again_at {
                out.unfinished[*i] = true;
                out.closed[*i] = false;
                unchanged[*i] = false;
            }
            out.changes
                .extend(redo.into_iter().map(IndexChange::ForgetVersion));
            out.unchanged = unchanged.iter().filter(|u| **u).count() as u64;
            return Ok(out);
        }
    };
    for key in &redo {
        if let Some(source) = sources.get(key.as_str()) {
            out.sources[source.metric()] -= 1;
        }
    }
    out.sources[SOURCE_REDONE] += redo.len() as u64;
    out.changes
        .extend(redo.into_iter().map(IndexChange::ForgetVersion));
    out.changes.extend(again.changes);
    for (j, i) in again_at.iter().enumerate() {
        out.closed[*i] = again.closed[j];
        unchanged[*i] = false;
    }
    out.unchanged = unchanged.iter().filter(|u| **u).count() as u64 + again.unchanged;
    Ok(out)
}

/// One transaction, rows locked as they are read (`FOR UPDATE`).
async fn commit_locked(store: &Store, items: &[&Item]) -> Result<Outcome, StoreError> {
    let mut tx = store.begin().await?;
    let mut out = Outcome::new(items.len());
    let mut unchanged = vec![false; items.len()];
    let mut run_start = 0;
    for (i, item) in items.iter().enumerate() {
        let Item::Event { event: ev, .. } = item else {
            continue;
        };
        if matches!(ev.kind, EventKind::AccountingOn | EventKind::AccountingOff) {
            // A barrier: everything queued before it is applied first.
            fold_and_write(&mut tx, items, run_start..i, &mut out, &mut unchanged).await?;
            run_start = i + 1;
            let cause = ev.terminatecause.as_deref().unwrap_or("NAS-Reboot");
            let closed = tx
                .close_nas(&ev.nasipaddress.to_string(), ev.time, cause)
                .await?;
            out.changes
                .extend(closed.into_iter().map(IndexChange::Remove));
        }
    }
    fold_and_write(
        &mut tx,
        items,
        run_start..items.len(),
        &mut out,
        &mut unchanged,
    )
    .await?;
    tx.commit().await?;
    out.unchanged = unchanged.iter().filter(|u| **u).count() as u64;
    out.sources[SOURCE_READ] = unique_keys(items, 0..items.len()).len() as u64;
    Ok(out)
}

/// The keys of a run of items, in first-seen order (so writes are deterministic).
fn unique_keys<'a>(items: &[&'a Item], range: std::ops::Range<usize>) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::new();
    items[range]
        .iter()
        .map(|i| i.key())
        .filter(|k| seen.insert(*k))
        .collect()
}

/// Rows to write after folding a run of items.
struct Folded {
    inserts: Vec<Row>,
    updates: Vec<Row>,
}

/// Folds a run of per-session items, in order, over the rows loaded for their keys.
fn fold(
    items: &[&Item],
    range: std::ops::Range<usize>,
    mut loaded: HashMap<String, Row>,
    out: &mut Outcome,
    unchanged: &mut [bool],
) -> Folded {
    let order = unique_keys(items, range.clone());
    let mut state: HashMap<&str, (bool, Option<Row>, bool)> = HashMap::with_capacity(order.len());
    for k in &order {
        let row = loaded.remove(*k);
        state.insert(k, (row.is_some(), row, false));
    }
    for i in range {
        let item = items[i];
        let Some((_, row, dirty)) = state.get_mut(item.key()) else {
            continue;
        };
        let changed = match item {
            Item::Event { event, .. } => semantics::apply(row, event) != Effect::Unchanged,
            Item::Close(c) => {
                let closed = row.as_mut().is_some_and(|r| close_if_due(r, c));
                out.closed[i] = closed;
                closed
            }
            Item::Reconcile(_) => false,
        };
        if changed {
            *dirty = true;
        } else {
            unchanged[i] = true;
        }
    }
    let mut folded = Folded {
        inserts: Vec::new(),
        updates: Vec::new(),
    };
    for k in &order {
        if let Some((existed, Some(row), true)) = state.remove(*k) {
            if existed {
                folded.updates.push(row);
            } else {
                folded.inserts.push(row);
            }
        }
    }
    folded
}

/// The index changes of rows that were written, with their new versions where known.
fn record(folded: Folded, out: &mut Outcome, versions: &HashMap<String, RowVersion>) {
    for row in folded.inserts.into_iter().chain(folded.updates) {
        if row.is_open() {
            let version = versions.get(&row.acctuniqueid).copied();
            out.changes
                .push(IndexChange::Upsert(Box::new(row), version));
        } else {
            out.changes.push(IndexChange::Remove(row.acctuniqueid));
        }
    }
}

/// Loads (locked), folds and writes a run of per-session items inside a transaction.
async fn fold_and_write(
    tx: &mut crate::store::Tx,
    items: &[&Item],
    range: std::ops::Range<usize>,
    out: &mut Outcome,
    unchanged: &mut [bool],
) -> Result<(), StoreError> {
    if range.is_empty() {
        return Ok(());
    }
    let keys = unique_keys(items, range.clone());
    let loaded = tx.load(&keys).await?;
    let mut folded = fold(items, range, loaded, out, unchanged);
    tx.insert(&mut folded.inserts).await?;
    tx.update(&folded.updates).await?;
    record(folded, out, &HashMap::new());
    Ok(())
}

/// Applies a close request to the row as it is now.
fn close_if_due(r: &mut Row, c: &CloseRequest) -> bool {
    let last = r.acctupdatetime.or(r.acctstarttime);
    if let (Some(cutoff), Some(last)) = (c.if_updated_before, last)
        && last >= cutoff
    {
        return false;
    }
    let Some(stop) = c.stop_time.or(last) else {
        return false;
    };
    semantics::close(r, stop, &c.cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_limiter_lets_one_line_through_per_period_and_counts_the_rest() {
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
