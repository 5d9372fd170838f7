//! Folding a run of per-session events over their rows, in arrival order, into the rows to
//! write and the index changes; and the locked transaction's load-fold-write step.

use std::collections::HashMap;

use super::IndexChange;
use super::commit::Outcome;
use crate::ingest::semantics::{self, Effect};
use crate::ingest::{CloseRequest, Item};
use crate::sessions::{Row, RowVersion};
use crate::store::StoreError;

/// The keys of a run of items, in first-seen order (so writes are deterministic).
pub(super) fn unique_keys<'a>(items: &[&'a Item], range: std::ops::Range<usize>) -> Vec<&'a str> {
    let mut seen = std::collections::HashSet::new();
    items[range]
        .iter()
        .map(|i| i.key())
        .filter(|k| seen.insert(*k))
        .collect()
}

/// Rows to write after folding a run of items.
pub(super) struct Folded {
    pub(super) inserts: Vec<Row>,
    pub(super) updates: Vec<Row>,
}

/// Folds a run of per-session items, in order, over the rows loaded for their keys.
pub(super) fn fold(
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
pub(super) fn record(folded: Folded, out: &mut Outcome, versions: &HashMap<String, RowVersion>) {
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
pub(super) async fn fold_and_write(
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

/// Whether a close conditioned on `if_updated_before` still applies to the row as it is now:
/// its last update (else start) is older than the cutoff, or there is no condition.
pub(super) fn still_due(r: &Row, if_updated_before: Option<i64>) -> bool {
    match (if_updated_before, r.acctupdatetime.or(r.acctstarttime)) {
        (Some(cutoff), Some(last)) => last < cutoff,
        _ => true,
    }
}

/// Applies a close request to the row as it is now.
pub(super) fn close_if_due(r: &mut Row, c: &CloseRequest) -> bool {
    if !still_due(r, c.if_updated_before) {
        return false;
    }
    let last = r.acctupdatetime.or(r.acctstarttime);
    let Some(stop) = c.stop_time.or(last) else {
        return false;
    };
    semantics::close(r, stop, &c.cause)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radius::accounting::{AccountingEvent, EventKind};

    fn event(kind: EventKind, key: &str, time: i64) -> Item {
        let mut ev = AccountingEvent::sample(kind, key, time);
        ev.sessiontime = Some(time - 1000);
        ev.inputoctets = time;
        Item::Event {
            event: Box::new(ev),
            reply: None,
        }
    }

    #[test]
    fn unique_keys_lists_each_key_once_in_first_seen_order() {
        let items = [
            event(EventKind::Start, "b", 1),
            event(EventKind::Start, "a", 2),
            event(EventKind::InterimUpdate, "b", 3),
            event(EventKind::Start, "c", 4),
        ];
        let refs: Vec<&Item> = items.iter().collect();
        assert_eq!(unique_keys(&refs, 0..4), vec!["b", "a", "c"]);
        assert_eq!(unique_keys(&refs, 2..4), vec!["b", "c"]);
    }

    #[test]
    fn fold_inserts_new_rows_updates_loaded_ones_and_marks_what_changed_nothing() {
        let items = [
            event(EventKind::Start, "new", 1000),
            event(EventKind::InterimUpdate, "new", 1300),
            // A repeat of the same interim changes nothing.
            event(EventKind::InterimUpdate, "new", 1300),
            event(EventKind::Stop, "old", 1600),
        ];
        let refs: Vec<&Item> = items.iter().collect();
        let mut old = None;
        let Item::Event { event: start, .. } = event(EventKind::Start, "old", 1000) else {
            unreachable!()
        };
        semantics::apply(&mut old, &start);
        let loaded = HashMap::from([("old".to_string(), old.expect("row"))]);
        let mut out = Outcome::new(items.len());
        let mut unchanged = vec![false; items.len()];
        let folded = fold(&refs, 0..items.len(), loaded, &mut out, &mut unchanged);
        assert_eq!(unchanged, vec![false, false, true, false]);
        assert_eq!(folded.inserts.len(), 1);
        assert_eq!(folded.inserts[0].acctuniqueid, "new");
        assert!(folded.inserts[0].is_open());
        assert_eq!(folded.inserts[0].acctinputoctets, Some(1300));
        assert_eq!(folded.updates.len(), 1);
        assert_eq!(folded.updates[0].acctuniqueid, "old");
        assert!(!folded.updates[0].is_open(), "the Stop closed it");
    }

    #[test]
    fn a_close_request_closes_only_a_row_silent_since_its_cutoff() {
        let mut row = None;
        let Item::Event { event: start, .. } = event(EventKind::Start, "k", 1000) else {
            unreachable!()
        };
        semantics::apply(&mut row, &start);
        let mut row = row.expect("row");
        let (recent, _rx) = CloseRequest::new("k".into(), None, "NAS-Idle-Timeout", Some(900));
        assert!(!close_if_due(&mut row, &recent), "updated after the cutoff");
        assert!(row.is_open());
        let (stale, _rx) = CloseRequest::new("k".into(), None, "NAS-Idle-Timeout", Some(1001));
        assert!(close_if_due(&mut row, &stale));
        assert_eq!(
            row.acctstoptime,
            Some(1000),
            "stopped at its last sign of life"
        );
        assert_eq!(row.acctterminatecause.as_deref(), Some("NAS-Idle-Timeout"));
    }
}
