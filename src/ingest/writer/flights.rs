//! Commits in flight: on PostgreSQL the writer commits a new batch while earlier ones are still
//! running, provided they share no session; a large batch is split by session key. No I/O of
//! its own: each commit runs in a task.

use std::sync::Arc;
use std::time::Duration;

use super::WriterOptions;
use super::commit::{Outcome, is_barrier, timed_commit};
use crate::ingest::Item;
use crate::sessions::SessionIndex;
use crate::store::{Store, StoreError};

/// On PostgreSQL the writer keeps up to [`MAX_FLIGHTS`] commits in flight, each a transaction
/// on its own connection: a new batch is committed while earlier ones are still running,
/// provided it shares no session with them and holds no Accounting-On/Off or reconciliation
/// (those wait until everything in flight has landed). A batch of at least `2 × PART_MIN`
/// events is also split by session key into parts of at least `PART_MIN` events. Smaller
/// batches stay whole: splitting them only multiplies the fixed cost per batch.
pub(super) const PART_MIN: usize = 128;
/// Most commits in flight at once (connections the writer uses at once; never more than the
/// pool's size minus one).
pub(super) const MAX_FLIGHTS: usize = 4;

/// A commit in flight that ended: its items, the result, how long it took, and whether it was
/// started while another commit was in flight.
pub(super) struct Landed {
    pub(super) items: Vec<Item>,
    pub(super) result: Result<Result<Outcome, StoreError>, tokio::time::error::Elapsed>,
    pub(super) elapsed: Duration,
    pub(super) overlapped: bool,
}

/// The commits in flight, in launch order, and the sessions they hold. Each commit runs in a
/// task of its own, so it progresses (and its deadline means what it says) while the writer
/// is busy with something else: landing another commit, a retry, a journal fsync.
#[derive(Default)]
pub(super) struct Flights {
    running: futures_util::stream::FuturesOrdered<tokio::task::JoinHandle<Landed>>,
    /// The keys of each commit in `running`, in the same order.
    flight_keys: std::collections::VecDeque<Vec<String>>,
    keys: std::collections::HashSet<String>,
}

impl Flights {
    pub(super) fn len(&self) -> usize {
        self.running.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Whether a session of `items` is in a commit in flight.
    pub(super) fn overlaps(&self, items: &[Item]) -> bool {
        !self.keys.is_empty() && items.iter().any(|i| self.keys.contains(i.key()))
    }

    pub(super) fn launch(
        &mut self,
        store: &Store,
        index: &Arc<SessionIndex>,
        items: Vec<Item>,
        opts: &WriterOptions,
    ) {
        let (timeout, events) = (opts.commit_timeout, opts.events);
        let keys: Vec<String> = items.iter().map(|i| i.key().to_owned()).collect();
        self.keys.extend(keys.iter().cloned());
        self.flight_keys.push_back(keys);
        let overlapped = !self.running.is_empty();
        let store = store.clone();
        let index = index.clone();
        // Boxed: the commit's state machine is large, and the task would otherwise copy all
        // of it at every move (spawning, and each change of the task's stage).
        self.running.push_back(tokio::spawn(Box::pin(async move {
            let (result, elapsed) =
                timed_commit(&store, Some(&index), &items, timeout, events).await;
            Landed {
                items,
                result,
                elapsed,
                overlapped,
            }
        })));
    }

    /// The oldest commit in flight, once it ended (`None` when nothing is in flight); its
    /// sessions are no longer in flight. `Err`: the task panicked, and its items with it.
    pub(super) async fn next(&mut self) -> Option<Result<Landed, tokio::task::JoinError>> {
        use futures_util::StreamExt;
        let landed = self.running.next().await?;
        for key in self.flight_keys.pop_front().unwrap_or_default() {
            self.keys.remove(&key);
        }
        Some(landed)
    }
}

/// Whether a batch may be split by session: no bulk close (Accounting-On/Off closes sessions
/// of any key, so everything must keep its order around it) and no reconciliation request.
pub(super) fn splittable(items: &[Item]) -> bool {
    !items
        .iter()
        .any(|i| is_barrier(i) || matches!(i, Item::Reconcile(_)))
}

/// `n` parts by a hash of the session key, each in arrival order: every event of a session
/// lands in the same part, so the parts can commit in any order.
pub(super) fn split_by_key(items: Vec<Item>, n: usize) -> Vec<Vec<Item>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::accounting::{AccountingEvent, EventKind};

    fn event(kind: EventKind, key: &str, time: i64) -> Item {
        Item::Event {
            event: Box::new(AccountingEvent::sample(kind, key, time)),
            reply: None,
        }
    }

    #[test]
    fn split_by_key_keeps_every_session_in_one_part_in_arrival_order() {
        let mut items = Vec::new();
        for round in 0..5 {
            for k in 0..40 {
                items.push(event(EventKind::InterimUpdate, &format!("k{k}"), round));
            }
        }
        let parts = split_by_key(items, 3);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 200);
        let mut part_of = std::collections::HashMap::new();
        for (p, part) in parts.iter().enumerate() {
            let mut last_time = std::collections::HashMap::new();
            for item in part {
                assert_eq!(*part_of.entry(item.key().to_owned()).or_insert(p), p);
                let Item::Event { event, .. } = item else {
                    unreachable!("only events were split")
                };
                let before = last_time.insert(item.key().to_owned(), event.time);
                assert!(before.is_none_or(|t| t < event.time), "order kept");
            }
        }
    }

    #[test]
    fn a_bulk_close_or_a_reconciliation_keeps_a_batch_whole() {
        let plain = vec![
            event(EventKind::Start, "a", 1),
            event(EventKind::Stop, "b", 2),
        ];
        assert!(splittable(&plain));
        let with_on = vec![
            event(EventKind::Start, "a", 1),
            event(EventKind::AccountingOn, "", 2),
        ];
        assert!(!splittable(&with_on));
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let with_reconcile = vec![
            event(EventKind::Start, "a", 1),
            Item::Reconcile(crate::queue::Reconcile::Full(tx)),
        ];
        assert!(!splittable(&with_reconcile));
    }
}
