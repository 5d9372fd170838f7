//! The group-commit writer: takes whatever is queued (up to a batch), folds the events of each
//! session in arrival order, writes the batch in one transaction, and only after COMMIT updates
//! the live index and sends the Accounting-Responses (invariant A: no response before the
//! record is durable).
//!
//! Without a journal, a batch whose transaction fails on a statement is retried in halves until
//! the failing event is isolated; that one gets no response, the others are committed and
//! answered, and a database that is unreachable fails the whole batch (the NAS retransmits).
//!
//! With the journal (docs/ARCHITECTURE.md#durability), a batch that cannot be committed is appended
//! to it and fsynced instead, and only then answered; while the journal holds anything, every new
//! batch goes there too (first in, first out), the index follows the journaled changes, and the
//! journal is replayed into the database as soon as it answers again.
//!
//! The parts: [`flights`] (commits in flight and how a batch is split among them), [`commit`]
//! (one commit with its deadline, the locked transaction path), [`optimistic`] (PostgreSQL's
//! path without reads), [`fold`] (events folded over rows, pure), [`events`] (the session
//! events the row changes give, pure), and [`spool`] (the journal: appends, the replay beside
//! the writer, the index view of journaled changes).

mod commit;
mod events;
mod flights;
mod fold;
mod optimistic;
mod spool;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::journal::Journal;
use super::{Drift, IngestReceiver, Item};
use crate::metrics::{DropReason, Stats};
use crate::queue::Reconcile;
use crate::radius::reply::Responder;
use crate::sessions::{ResellerResolver, Row, RowVersion, Session, SessionIndex, Text};
use crate::store::{ChangedRow, Store, StoreError};

use commit::{Outcome, timed_commit};
pub use events::EventOptions;
use flights::{Flights, Landed, MAX_FLIGHTS, PART_MIN, split_by_key, splittable};
use spool::{LogLimiter, Replay, lock, probe};
pub use spool::{ReplayStep, apply_offline, replay_chunk, replay_entry, writer_lock};

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
    /// Which row changes append session events to the outbox.
    pub events: EventOptions,
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
    /// Rows other writers changed (the change feed's re-reads): taken ahead of the queue, so
    /// that how long the queue is does not delay the index's coherence.
    changes: Option<ChangesReceiver>,
    /// Where committed row writes are reported for the fair-use enforcer (none without
    /// fair-use policies).
    touches: Option<Arc<crate::usage::Touches>>,
}

/// How many open sessions [`Writer::reconcile`] compares between two yields.
const RECONCILE_YIELD_EVERY: usize = 1024;

/// Where the change feed sends its re-reads (`Reconcile::Rows`) to the writer.
pub type ChangesSender = tokio::sync::mpsc::Sender<Reconcile>;
/// The writer's end of [`ChangesSender`].
pub type ChangesReceiver = tokio::sync::mpsc::Receiver<Reconcile>;

/// A channel for the change feed's re-reads (a few per second at most).
pub fn changes_channel() -> (ChangesSender, ChangesReceiver) {
    tokio::sync::mpsc::channel(16)
}

/// The next re-read, or `None` once the feed is gone; never ready without a channel.
async fn next_change(changes: &mut Option<ChangesReceiver>) -> Option<Reconcile> {
    match changes {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
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
            changes: None,
            touches: None,
        }
    }

    /// Reports the subscribers of every committed row write to `touches`.
    pub fn with_touches(mut self, touches: Arc<crate::usage::Touches>) -> Self {
        self.touches = Some(touches);
        self
    }

    /// Takes re-reads of rows other writers changed from `changes`, ahead of the queue.
    pub fn with_changes(mut self, changes: ChangesReceiver) -> Self {
        self.changes = Some(changes);
        self
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
        let mut replay = Replay::new(self.opts.replay_interval);
        let max_flights = self.max_flights();
        let mut flights = Flights::default();
        let mut changes = self.changes.take();
        loop {
            let more = if self.spooling {
                // Everything goes to the journal, in order: nothing may still be in flight.
                self.land_all(&mut flights).await;
                self.spool_next(&mut rx, &mut changes, &mut batch, &mut replay)
                    .await
            } else {
                self.commit_next(&mut rx, &mut changes, &mut batch, &mut flights, max_flights)
                    .await
            };
            if !more {
                break;
            }
        }
        replay.stop().await;
        if let Some(p) = prober {
            p.abort();
        }
        tracing::debug!("ingest writer drained");
    }

    /// Commits in flight at once: leave a connection of the pool to the API and the jobs; a
    /// store with one writer at a time (SQLite) runs nothing concurrently.
    fn max_flights(&self) -> usize {
        if !self.store.concurrent_writes() {
            return 1;
        }
        let pool_share = (self.store.max_connections() as usize).saturating_sub(1);
        MAX_FLIGHTS.min(pool_share).max(1)
    }

    /// One step of direct commits: lands a commit in flight, or takes a batch from the queue
    /// and commits it. False once the queue is closed and drained.
    async fn commit_next(
        &mut self,
        rx: &mut IngestReceiver,
        changes: &mut Option<ChangesReceiver>,
        batch: &mut Vec<Item>,
        flights: &mut Flights,
        max_flights: usize,
    ) -> bool {
        let max = self.opts.max_batch.max(1);
        let got = if flights.is_empty() {
            tokio::select! {
                biased;
                change = next_change(changes), if changes.is_some() => {
                    self.take_change(change, changes, flights).await;
                    return true;
                }
                n = rx.recv_many(batch, max) => n,
            }
        } else if flights.len() >= max_flights {
            self.land_next(flights).await;
            return true;
        } else {
            tokio::select! {
                biased;
                landed = flights.next() => {
                    self.land(landed).await;
                    return true;
                }
                change = next_change(changes), if changes.is_some() => {
                    self.take_change(change, changes, flights).await;
                    return true;
                }
                n = rx.recv_many(batch, max) => n,
            }
        };
        if got == 0 {
            self.land_all(flights).await;
            return false;
        }
        let items = std::mem::take(batch);
        batch.reserve(max);
        self.commit_batch(items, flights, max_flights).await;
        true
    }

    /// Commits a batch: in flight beside the commits already running (split by session when
    /// large) when it may, else in order after all of them.
    async fn commit_batch(&mut self, items: Vec<Item>, flights: &mut Flights, max_flights: usize) {
        let concurrent = max_flights > 1 && splittable(&items);
        if !concurrent || flights.overlaps(&items) {
            // In order after everything in flight: a bulk close or a reconciliation, a
            // session already in flight, or a store without concurrency.
            self.land_all(flights).await;
            if !concurrent {
                return self.process(items).await;
            }
        }
        let parts = (items.len() / PART_MIN).clamp(1, max_flights);
        while flights.len() + parts > max_flights {
            self.land_next(flights).await;
        }
        if self.spooling {
            // A landing just switched to the journal: this batch follows it there.
            return self.process(items).await;
        }
        let parts = if parts > 1 {
            split_by_key(items, parts)
        } else {
            vec![items]
        };
        for part in parts {
            flights.launch(&self.store, &self.index, part, &self.opts);
        }
    }

    /// A re-read of rows other writers changed: after every commit in flight has landed, so
    /// that none of this node's own commits races it. `None`: the feed is gone.
    async fn take_change(
        &mut self,
        change: Option<Reconcile>,
        changes: &mut Option<ChangesReceiver>,
        flights: &mut Flights,
    ) {
        match change {
            Some(request) => {
                self.land_all(flights).await;
                self.process(vec![Item::Reconcile(request)]).await;
            }
            None => *changes = None,
        }
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
            if let Item::Reconcile(request) = item {
                if self.spooling {
                    // The database view is incomplete until the journal is replayed, which
                    // ends with a full reconciliation; a requester of one sees its channel
                    // closed and asks again.
                    continue;
                }
                match request {
                    Reconcile::Full(done) => match self.reconcile().await {
                        Ok(drift) => {
                            let _ = done.send(drift);
                        }
                        Err(e) => tracing::warn!(error = %e, "index reconciliation failed"),
                    },
                    Reconcile::Rows { ids, since_micros } => {
                        if let Err(e) = self.refresh(&ids, since_micros).await {
                            // The listener's next loss or the next periodic reconciliation
                            // repairs what this missed.
                            tracing::warn!(error = %e, rows = ids.len(), "re-reading rows another writer changed failed");
                        }
                    }
                }
            }
        }
    }

    /// Applies another writer's committed changes to these rows to the index: open rows are
    /// held as they are now, closed or deleted ones are not held.
    async fn refresh(&self, ids: &[i64], since_micros: i64) -> Result<(), StoreError> {
        let rows = self.store.changed_rows(ids, self.resolver.as_ref()).await?;
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        let mut changed = 0u64;
        for row in rows {
            match row {
                ChangedRow::Open(session) => {
                    seen.extend(session.radacctid);
                    if self.index.get(&session.acctuniqueid).as_ref() != Some(&*session) {
                        self.index.upsert(*session);
                        changed += 1;
                    }
                }
                ChangedRow::Closed {
                    radacctid,
                    acctuniqueid,
                } => {
                    seen.insert(radacctid);
                    if self.index.remove(&acctuniqueid).is_some() {
                        changed += 1;
                    }
                }
            }
        }
        // Deleted while open (an operator's DELETE): gone from the table, gone from the index.
        for id in ids.iter().filter(|id| !seen.contains(id)) {
            if let Some(s) = self.index.get_by_id(*id) {
                self.index.remove(&s.acctuniqueid);
                changed += 1;
            }
        }
        Stats::add(&self.stats.remote_changes, changed);
        self.stats
            .observe_coherence_lag(crate::clock::now_micros() - since_micros);
        Ok(())
    }

    /// A committed batch: metrics, the index, then the answers.
    /// Items left unfinished (see `Outcome::unfinished`) are released unanswered, as after a
    /// failed commit: the NAS retransmits them.
    fn committed(&mut self, part: &[Item], outcome: Outcome, elapsed: Duration) {
        self.health.set_committing(true);
        self.stats.observe_commit(elapsed, part.len());
        self.apply_to_index(outcome.changes);
        if let Some(touches) = &self.touches {
            touches.add(outcome.touches);
        }
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

    /// Makes the index equal the open rows in SQL; returns the differences it fixed. Yields
    /// every [`RECONCILE_YIELD_EVERY`] sessions it compares.
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
        for (n, (key, session)) in open.into_iter().enumerate() {
            // The writer shares its thread with the listener (`radius.ingest_thread`): over
            // hundreds of thousands of open sessions this loop is long, and the socket must
            // still be read meanwhile. The index only changes here and in commits, which wait
            // for this to end.
            if n % RECONCILE_YIELD_EVERY == RECONCILE_YIELD_EVERY - 1 {
                tokio::task::yield_now().await;
            }
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
                self.opts.events,
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

    /// Applies a committed batch's changes to the live index.
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
