//! The group-commit writer: takes whatever is queued (up to a batch), folds the events of each
//! session in arrival order, writes the batch in one transaction, and only after COMMIT updates
//! the live index and sends the Accounting-Responses (invariant A: no response before the
//! record is durable).
//!
//! A batch whose transaction fails on a statement is retried in halves until the failing event
//! is isolated; that one gets no response, the others are committed and answered. A database
//! that is unreachable fails the whole batch: nothing is answered and the NAS retransmits.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::semantics::{self, Effect};
use super::{CloseRequest, Drift, IngestReceiver, Item};
use crate::metrics::{DropReason, Stats};
use crate::radius::accounting::EventKind;
use crate::radius::reply::Responder;
use crate::sessions::{ResellerResolver, Row, Session, SessionIndex};
use crate::store::{Store, StoreError};

/// Writer tuning.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Most events committed in one transaction.
    pub max_batch: usize,
    /// A transaction that takes longer than this is abandoned (no responses).
    pub commit_timeout: Duration,
}

/// A change to the live index, applied after the transaction committed.
#[derive(Debug)]
enum IndexChange {
    Upsert(Row),
    Remove(String),
}

/// The single writer.
pub struct Writer {
    store: Store,
    index: Arc<SessionIndex>,
    resolver: Arc<dyn ResellerResolver>,
    responder: Option<Responder>,
    stats: Arc<Stats>,
    opts: WriterOptions,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("store", &self.store.kind())
            .field("opts", &self.opts)
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
        }
    }

    /// Runs until every sender is gone and the queue is drained: on shutdown the listener
    /// stops first, so everything already accepted is committed and answered (or not answered).
    pub async fn run(self, mut rx: IngestReceiver) {
        let max = self.opts.max_batch.max(1);
        let mut batch = Vec::with_capacity(max);
        while rx.recv_many(&mut batch, max).await > 0 {
            self.process(std::mem::take(&mut batch)).await;
            batch.reserve(max);
        }
        tracing::debug!("ingest writer drained");
    }

    /// Commits one batch in order; a reconciliation request splits it.
    pub async fn process(&self, items: Vec<Item>) {
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
                match self.reconcile().await {
                    Ok(drift) => {
                        let _ = done.send(drift);
                    }
                    Err(e) => tracing::warn!(error = %e, "index reconciliation failed"),
                }
            }
        }
    }

    /// Makes the index equal the open rows in SQL; returns the differences it fixed.
    async fn reconcile(&self) -> Result<Drift, StoreError> {
        let mut open: HashMap<String, Session> = HashMap::new();
        self.store
            .for_each_open_row(|row| {
                let reseller = row
                    .username
                    .as_deref()
                    .and_then(|u| self.resolver.reseller_of(u));
                open.insert(row.acctuniqueid.clone(), Session::from_row(&row, reseller));
            })
            .await?;
        let mut drift = Drift::default();
        let stale: Vec<String> = self
            .index
            .collect(|s| !open.contains_key(&s.acctuniqueid))
            .into_iter()
            .map(|s| s.acctuniqueid)
            .collect();
        for key in stale {
            self.index.remove(&key);
            drift.removed += 1;
        }
        for (key, session) in open {
            if self.index.get(&key).as_ref() != Some(&session) {
                self.index.upsert(session);
                drift.added += 1;
            }
        }
        if drift != Drift::default() {
            tracing::info!(added = drift.added, removed = drift.removed, "index reconciled with SQL");
        }
        Stats::add(&self.stats.drift, drift.added + drift.removed);
        Ok(drift)
    }

    /// Commits items, splitting them on statement failures, and answers what committed.
    async fn process_range(&self, items: &[Item]) {
        if items.is_empty() {
            return;
        }
        // Ranges still to try, last = next; halves are pushed second-half first to keep order.
        let mut todo = vec![0..items.len()];
        while let Some(range) = todo.pop() {
            let part = &items[range.clone()];
            let result = tokio::time::timeout(self.opts.commit_timeout, self.commit(part)).await;
            let error = match result {
                Ok(Ok(outcome)) => {
                    self.apply_to_index(outcome.changes);
                    Stats::add(&self.stats.batches, 1);
                    Stats::add(&self.stats.batch_events, part.len() as u64);
                    Stats::add(&self.stats.unchanged, outcome.unchanged);
                    for (item, closed) in part.iter().zip(outcome.closed) {
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
                    continue;
                }
                Ok(Err(e)) => e,
                Err(_) => StoreError::Config(format!(
                    "commit took longer than {:?}",
                    self.opts.commit_timeout
                )),
            };
            Stats::add(&self.stats.batch_failures, 1);
            let splittable = !error.is_unavailable() && !matches!(error, StoreError::Config(_));
            if splittable && part.len() > 1 {
                let mid = range.start + part.len() / 2;
                todo.push(mid..range.end);
                todo.push(range.start..mid);
                continue;
            }
            if part.len() == 1 {
                let kind = match &part[0] {
                    Item::Event { event, .. } => event.kind.as_str(),
                    Item::Close(_) => "close",
                    Item::Reconcile(_) => "reconcile",
                };
                tracing::error!(
                    error = %error,
                    kind,
                    acctuniqueid = %part[0].key(),
                    "accounting change not recorded; no response"
                );
            } else {
                tracing::error!(error = %error, events = part.len(), "batch not recorded; no responses");
            }
            for item in part {
                match item {
                    Item::Event { reply, .. } => {
                        self.stats.dropped(DropReason::WriteFailed);
                        if let (Some(reply), Some(r)) = (reply, &self.responder) {
                            r.abandon(reply);
                        }
                    }
                    // Dropping the sender tells the requester the close did not happen.
                    Item::Close(c) => c.abandon(),
                    Item::Reconcile(_) => {}
                }
            }
        }
    }

    /// One transaction for `items`.
    async fn commit(&self, items: &[Item]) -> Result<Outcome, StoreError> {
        let mut tx = self.store.begin().await?;
        let mut out = Outcome {
            changes: Vec::new(),
            unchanged: 0,
            closed: vec![false; items.len()],
        };
        let mut run_start = 0;
        for (i, item) in items.iter().enumerate() {
            let Item::Event { event: ev, .. } = item else {
                continue;
            };
            if matches!(ev.kind, EventKind::AccountingOn | EventKind::AccountingOff) {
                // A barrier: everything queued before it is applied first.
                fold_and_write(&mut tx, items, run_start..i, &mut out).await?;
                run_start = i + 1;
                let cause = ev.terminatecause.as_deref().unwrap_or("NAS-Reboot");
                let closed = tx
                    .close_nas(&ev.nasipaddress.to_string(), ev.time, cause)
                    .await?;
                out.changes
                    .extend(closed.into_iter().map(IndexChange::Remove));
            }
        }
        fold_and_write(&mut tx, items, run_start..items.len(), &mut out).await?;
        tx.commit().await?;
        Ok(out)
    }

    fn apply_to_index(&self, changes: Vec<IndexChange>) {
        for change in changes {
            match change {
                IndexChange::Upsert(row) => {
                    let reseller = row
                        .username
                        .as_deref()
                        .and_then(|u| self.resolver.reseller_of(u));
                    self.index.upsert(Session::from_row(&row, reseller));
                }
                IndexChange::Remove(key) => {
                    self.index.remove(&key);
                }
            }
        }
    }
}

/// What a committed transaction did.
#[derive(Debug)]
struct Outcome {
    changes: Vec<IndexChange>,
    /// Events that changed nothing.
    unchanged: u64,
    /// Per item: whether a close request closed its row.
    closed: Vec<bool>,
}

/// Loads the rows of a run of per-session items, folds them in order, writes the rows that
/// changed.
async fn fold_and_write(
    tx: &mut crate::store::Tx,
    items: &[Item],
    range: std::ops::Range<usize>,
    out: &mut Outcome,
) -> Result<(), StoreError> {
    if range.is_empty() {
        return Ok(());
    }
    // Keys in first-seen order, so writes are deterministic.
    let mut order: Vec<&str> = Vec::new();
    let mut state: HashMap<&str, (bool, Option<Row>, bool)> = HashMap::new();
    for item in &items[range.clone()] {
        let k = item.key();
        if !state.contains_key(k) {
            state.insert(k, (false, None, false));
            order.push(k);
        }
    }
    let mut loaded = tx.load(&order).await?;
    for k in &order {
        if let Some(row) = loaded.remove(*k) {
            state.insert(k, (true, Some(row), false));
        }
    }
    for i in range {
        let item = &items[i];
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
            out.unchanged += 1;
        }
    }
    let mut inserts = Vec::new();
    let mut updates = Vec::new();
    for k in &order {
        if let Some((existed, Some(row), true)) = state.remove(*k) {
            if existed {
                updates.push(row);
            } else {
                inserts.push(row);
            }
        }
    }
    tx.insert(&mut inserts).await?;
    tx.update(&updates).await?;
    for row in inserts.into_iter().chain(updates) {
        if row.is_open() {
            out.changes.push(IndexChange::Upsert(row));
        } else {
            out.changes.push(IndexChange::Remove(row.acctuniqueid));
        }
    }
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
