//! One commit of a batch: within its deadline, the optimistic path on PostgreSQL, else one
//! locked transaction; and what a committed write did ([`Outcome`]).

use std::time::Duration;

use super::events::{self, Derived, Emit};
use super::fold::{fold_and_write, unique_keys};
use super::optimistic::{SOURCE_READ, commit_optimistic};
use super::{EventOptions, IndexChange};
use crate::ingest::Item;
use crate::radius::accounting::EventKind;
use crate::sessions::SessionIndex;
use crate::store::{Store, StoreError, Tx};

/// What a committed write did.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) changes: Vec<IndexChange>,
    /// Events that changed nothing.
    pub(super) unchanged: u64,
    /// Per item: whether a close request closed its row.
    pub(super) closed: Vec<bool>,
    /// Sessions by where their row came from (`metrics::ROW_SOURCES` order).
    pub(super) sources: [u64; 4],
    /// Per item: not written after all (its redo under locks failed after the rest of the
    /// batch had committed). The writer treats these as a failed commit of their own.
    pub(super) unfinished: Vec<bool>,
    /// The subscribers whose rows were written (for the fair-use enforcer).
    pub(super) touches: Vec<crate::usage::Touch>,
}

impl Outcome {
    pub(super) fn new(items: usize) -> Outcome {
        Outcome {
            changes: Vec::new(),
            unchanged: 0,
            closed: vec![false; items],
            sources: [0; 4],
            unfinished: vec![false; items],
            touches: Vec::new(),
        }
    }
}

/// Writes `items`. On PostgreSQL a batch without Accounting-On/Off takes the optimistic path
/// (one guarded statement that inserts and updates, preceded by a read only for sessions the
/// index cannot vouch for); anything else, and any batch whose optimistic write fails before
/// it commits, takes the locked transaction path.
/// Either way, each change's session events (`events`) are appended in its transaction.
pub(super) async fn commit(
    store: &Store,
    index: Option<&SessionIndex>,
    items: &[Item],
    deadline: tokio::time::Instant,
    events: EventOptions,
) -> Result<Outcome, StoreError> {
    let refs: Vec<&Item> = items.iter().collect();
    let emit = Emit::now(events);
    if let Store::Postgres(pg) = store
        && !refs.iter().any(|i| is_barrier(i) || records_an_action(i))
    {
        match commit_optimistic(pg, store, index, &refs, deadline, emit).await {
            Ok(out) => return Ok(out),
            Err(e) if e.is_unavailable() => return Err(e),
            // A conflicting insert by another writer, a statement error: the locked path
            // either succeeds or isolates the culprit.
            Err(e) => tracing::debug!(error = %e, "optimistic write failed; using a transaction"),
        }
    }
    commit_locked(store, &refs, emit).await
}

/// [`commit`] within `timeout`, and how long it took.
pub(super) async fn timed_commit(
    store: &Store,
    index: Option<&SessionIndex>,
    items: &[Item],
    timeout: Duration,
    events: EventOptions,
) -> (
    Result<Result<Outcome, StoreError>, tokio::time::error::Elapsed>,
    Duration,
) {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let result = tokio::time::timeout_at(
        deadline + DEADLINE_GRACE,
        commit(store, index, items, deadline, events),
    )
    .await;
    (result, started.elapsed())
}

/// How long after a commit's deadline the whole commit is abandoned. Within the deadline, a
/// redo under locks that follows a committed guarded write gives up on its own (its events are
/// left unfinished, the rest is answered); the grace keeps the outer timeout from firing first.
pub(super) const DEADLINE_GRACE: Duration = Duration::from_millis(250);

/// A close that writes its disconnect's action log row: the optimistic path writes radacct
/// rows only, so such a batch takes the transaction.
fn records_an_action(item: &Item) -> bool {
    matches!(item, Item::Close(c) if c.action.is_some())
}

pub(super) fn is_barrier(item: &Item) -> bool {
    matches!(item, Item::Event { event, .. }
        if matches!(event.kind, EventKind::AccountingOn | EventKind::AccountingOff))
}

/// One transaction, rows locked as they are read (`FOR UPDATE`).
pub(super) async fn commit_locked(
    store: &Store,
    items: &[&Item],
    emit: Emit,
) -> Result<Outcome, StoreError> {
    let mut tx = store.begin().await?;
    let mut out = Outcome::new(items.len());
    let mut unchanged = vec![false; items.len()];
    let mut derived = Derived::default();
    let mut run_start = 0;
    for (i, item) in items.iter().enumerate() {
        let Item::Event { event: ev, .. } = item else {
            continue;
        };
        if matches!(ev.kind, EventKind::AccountingOn | EventKind::AccountingOff) {
            // A barrier: everything queued before it is applied first.
            fold_and_write(
                &mut tx,
                items,
                run_start..i,
                &mut out,
                &mut unchanged,
                emit,
                &mut derived,
            )
            .await?;
            run_start = i + 1;
            let cause = ev.terminatecause.as_deref().unwrap_or("NAS-Reboot");
            let closed = tx
                .close_nas(&ev.nasipaddress.to_string(), ev.time, cause)
                .await?;
            if emit.options.enabled {
                for e in events::of_nas_close(ev, cause, &closed) {
                    derived.push(i, e);
                }
            }
            out.changes.extend(
                closed
                    .into_iter()
                    .map(|r| IndexChange::Remove(r.acctuniqueid)),
            );
        }
    }
    fold_and_write(
        &mut tx,
        items,
        run_start..items.len(),
        &mut out,
        &mut unchanged,
        emit,
        &mut derived,
    )
    .await?;
    append_in_order(&mut tx, items, &out.closed, &derived).await?;
    tx.commit().await?;
    out.unchanged = unchanged.iter().filter(|u| **u).count() as u64;
    out.sources[SOURCE_READ] = unique_keys(items, 0..items.len()).len() as u64;
    Ok(out)
}

/// Appends the batch's events and its closes' action log rows (each of which may append an
/// event of its own, `Tx::record_action`) in item order. The commit wakes the sequencer when
/// any was appended (`Tx::commit`).
async fn append_in_order(
    tx: &mut Tx,
    items: &[&Item],
    closed: &[bool],
    derived: &Derived,
) -> Result<(), StoreError> {
    let mut appended = 0;
    for (i, item) in items.iter().enumerate() {
        if let Item::Close(c) = item
            && let Some(record) = &c.action
        {
            let upto = derived.up_to(i);
            tx.add_events(&derived.events[appended..upto]).await?;
            appended = upto;
            tx.record_action(&record.with_row_closed(closed[i])).await?;
        }
    }
    tx.add_events(&derived.events[appended..]).await
}
