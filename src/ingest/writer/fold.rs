//! Folding a run of per-session events over their rows, in arrival order, into the rows to
//! write, the index changes, the usage and the session events; and the locked transaction's
//! load-fold-write step.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use super::IndexChange;
use super::commit::Outcome;
use super::events::{self, Derived, Emit};
use crate::ingest::semantics::{self, Effect};
use crate::ingest::{CloseRequest, Item};
use crate::sessions::{Row, RowVersion};
use crate::store::StoreError;
use crate::usage::{self, Mark, Step, Touch};

/// The keys of a run of items, in first-seen order (so writes are deterministic).
pub(super) fn unique_keys<'a>(items: &[&'a Item], range: std::ops::Range<usize>) -> Vec<&'a str> {
    let mut seen = HashSet::with_capacity(range.len());
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
    /// The usage each changed event added (`usage::step` of the row before and after it).
    pub(super) usage: Vec<Step>,
    /// The session events of the changes, in item order (`events::of_accounting`,
    /// `events::of_close`); those of new rows have no `radacctid` yet.
    pub(super) events: Derived,
}

/// Folds a run of per-session items, in order, over the rows loaded for their keys.
pub(super) fn fold(
    items: &[&Item],
    range: std::ops::Range<usize>,
    mut loaded: HashMap<String, Row>,
    out: &mut Outcome,
    unchanged: &mut [bool],
    emit: Emit,
) -> Folded {
    let order = unique_keys(items, range.clone());
    let mut state: HashMap<&str, (bool, Option<Row>, bool)> = HashMap::with_capacity(order.len());
    for k in &order {
        let row = loaded.remove(*k);
        state.insert(k, (row.is_some(), row, false));
    }
    let mut usage = Vec::with_capacity(range.len());
    let derive = emit.options.enabled;
    let mut derived = Derived::with_capacity(if derive { range.len() } else { 0 });
    for i in range {
        let item = items[i];
        let Some((_, row, dirty)) = state.get_mut(item.key()) else {
            continue;
        };
        let changed = match item {
            Item::Event { event, .. } => {
                let before = row.as_ref().map(Mark::of);
                let was_open = row.as_ref().map(Row::is_open);
                let changed = semantics::apply(row, event) != Effect::Unchanged;
                // The delta and the event come from the row change the semantics decided,
                // never from the packet: an event that changed nothing adds nothing.
                if changed && let Some(r) = row.as_ref() {
                    if let Some(s) = usage::step(before, r) {
                        usage.push(s);
                    }
                    if derive
                        && let Some(e) = events::of_accounting(event, was_open, r, emit.options)
                    {
                        derived.push(i, e);
                    }
                }
                changed
            }
            Item::Close(c) => {
                let closed = row.as_mut().is_some_and(|r| close_if_due(r, c));
                out.closed[i] = closed;
                if closed
                    && derive
                    && let Some(e) = row.as_ref().and_then(|r| events::of_close(c, r, emit.now))
                {
                    derived.push(i, e);
                }
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
    let (mut new, mut existing) = (0, 0);
    for (existed, row, dirty) in state.values() {
        if row.is_some() && *dirty {
            if *existed {
                existing += 1;
            } else {
                new += 1;
            }
        }
    }
    let mut folded = Folded {
        inserts: Vec::with_capacity(new),
        updates: Vec::with_capacity(existing),
        usage,
        events: derived,
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

/// The index changes of rows that were written, with their new versions where known, and
/// the subscribers they touched (for the fair-use enforcer).
pub(super) fn record(folded: Folded, out: &mut Outcome, versions: &HashMap<String, RowVersion>) {
    let inserted = folded.inserts.len();
    for (i, row) in folded.inserts.iter().chain(&folded.updates).enumerate() {
        if let Some(username) = row.username.as_deref().filter(|u| !u.is_empty()) {
            out.touches.push(Touch {
                username: username.to_owned(),
                key: row.acctuniqueid.clone(),
                class: row.class.clone(),
                started: i < inserted && row.is_open(),
            });
        }
    }
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

/// Loads (locked), folds and writes a run of per-session items inside a transaction. Their
/// events, ids filled in, are added to `derived` for the caller to append (in item order with
/// the action log rows, `commit::append_in_order`).
pub(super) async fn fold_and_write(
    tx: &mut crate::store::Tx,
    items: &[&Item],
    range: std::ops::Range<usize>,
    out: &mut Outcome,
    unchanged: &mut [bool],
    emit: Emit,
    derived: &mut Derived,
) -> Result<(), StoreError> {
    if range.is_empty() {
        return Ok(());
    }
    let keys = unique_keys(items, range.clone());
    let loaded = tx.load(&keys).await?.into_iter().collect();
    let mut folded = fold(items, range, loaded, out, unchanged, emit);
    tx.insert(&mut folded.inserts).await?;
    tx.update(&folded.updates).await?;
    tx.add_usage(&usage::entries(&folded.usage)).await?;
    let mut events = std::mem::take(&mut folded.events);
    events.fill_ids(&folded.inserts);
    derived.extend(events);
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
    use crate::ingest::EventOptions;
    use crate::ingest::semantics::SWEEPER_CAUSE;
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

    fn emit() -> Emit {
        Emit {
            options: EventOptions::default(),
            now: 9_000,
        }
    }

    /// The row of `key` after `kind` at `time`.
    fn loaded(key: &str, kind: EventKind, time: i64) -> Row {
        let mut row = None;
        let Item::Event { event: ev, .. } = event(kind, key, time) else {
            unreachable!()
        };
        semantics::apply(&mut row, &ev);
        Row {
            radacctid: Some(time),
            ..row.expect("row")
        }
    }

    /// Every transition of the derivation, in one batch: what each item did to its row decides
    /// its event, never the packet.
    #[test]
    fn fold_derives_each_changes_event_from_its_row_before_and_after() {
        let (sweep, _rx) = CloseRequest::new("c".into(), None, SWEEPER_CAUSE, Some(5_000));
        let items = [
            event(EventKind::Start, "a", 1000),
            // A retransmit, then a repeat of the interim with a new identifier: no change.
            event(EventKind::Start, "a", 1000),
            event(EventKind::InterimUpdate, "a", 1300),
            event(EventKind::InterimUpdate, "a", 1300),
            // A lone Stop creates a closed row.
            event(EventKind::Stop, "b", 1500),
            event(EventKind::Stop, "a", 1600),
            // An interim after the Stop changes nothing.
            event(EventKind::InterimUpdate, "a", 1700),
            Item::Close(sweep),
            // The session the sweeper closed was alive after all.
            event(EventKind::InterimUpdate, "c", 2300),
            // The NAS's Stop for a row radacctd closed (a disconnect) brings its counters.
            event(EventKind::Stop, "d", 2400),
            // A Stop for an open row, and the same Stop again.
            event(EventKind::Stop, "e", 2500),
            event(EventKind::Stop, "e", 2500),
        ];
        let mut disconnected = loaded("d", EventKind::Start, 1000);
        assert!(semantics::close(&mut disconnected, 2000, "Admin-Reset"));
        let rows = || {
            HashMap::from_iter([
                ("c".to_string(), loaded("c", EventKind::InterimUpdate, 2000)),
                ("d".to_string(), disconnected.clone()),
                ("e".to_string(), loaded("e", EventKind::Start, 1000)),
            ])
        };
        let refs: Vec<&Item> = items.iter().collect();
        let derive = |options: EventOptions| {
            let mut out = Outcome::new(items.len());
            let mut unchanged = vec![false; items.len()];
            let emit = Emit {
                options,
                now: 9_000,
            };
            let folded = fold(
                &refs,
                0..items.len(),
                rows(),
                &mut out,
                &mut unchanged,
                emit,
            );
            let Derived { at, events } = folded.events;
            at.into_iter()
                .zip(events)
                .map(|(i, e)| (i, e.kind.name(), e.acctuniqueid, e.radacctid))
                .collect::<Vec<_>>()
        };
        let plain = EventOptions::default();
        assert_eq!(
            derive(plain),
            vec![
                (0, "session.started", "a".into(), None),
                (4, "session.stopped", "b".into(), None),
                (5, "session.stopped", "a".into(), None),
                (7, "session.ghost_closed", "c".into(), Some(2000)),
                (8, "session.reopened", "c".into(), Some(2000)),
                (9, "session.stopped", "d".into(), Some(1000)),
                (10, "session.stopped", "e".into(), Some(1000)),
            ]
        );
        let with_interims = derive(EventOptions {
            interims: true,
            ..plain
        });
        let interims: Vec<usize> = with_interims
            .iter()
            .filter(|e| e.1 == "session.interim")
            .map(|e| e.0)
            .collect();
        assert_eq!(interims, vec![2], "once: the repeat changed nothing");
        assert_eq!(with_interims.len(), 8);
        let off = derive(EventOptions {
            enabled: false,
            interims: true,
        });
        assert!(off.is_empty());
    }

    #[test]
    fn the_events_of_a_stop_and_a_ghost_close_carry_the_row_as_it_was_left() {
        let (sweep, _rx) = CloseRequest::new("c".into(), None, SWEEPER_CAUSE, Some(5_000));
        let items = [Item::Close(sweep), event(EventKind::Stop, "e", 2500)];
        let refs: Vec<&Item> = items.iter().collect();
        let rows = HashMap::from_iter([
            ("c".to_string(), loaded("c", EventKind::InterimUpdate, 2000)),
            ("e".to_string(), loaded("e", EventKind::Start, 1000)),
        ]);
        let mut out = Outcome::new(items.len());
        let mut unchanged = vec![false; items.len()];
        let folded = fold(&refs, 0..2, rows, &mut out, &mut unchanged, emit());
        let data: Vec<serde_json::Value> = folded
            .events
            .events
            .iter()
            .map(|e| serde_json::from_str(&e.data).expect("json"))
            .collect();
        assert_eq!(folded.events.events[0].time, 9_000, "decided now");
        assert_eq!(data[0]["by"], "sweeper");
        assert_eq!(data[0]["cause"], SWEEPER_CAUSE);
        assert_eq!(data[0]["acctstoptime"], "1970-01-01T00:33:20Z");
        assert_eq!(folded.events.events[1].time, 2500);
        assert_eq!(data[1]["acctinputoctets"], 2500);
        assert_eq!(data[1]["acctsessiontime"], 1500);
        assert_eq!(data[1]["acctstoptime"], "1970-01-01T00:41:40Z");
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
        let loaded = HashMap::from_iter([("old".to_string(), old.expect("row"))]);
        let mut out = Outcome::new(items.len());
        let mut unchanged = vec![false; items.len()];
        let folded = fold(
            &refs,
            0..items.len(),
            loaded,
            &mut out,
            &mut unchanged,
            emit(),
        );
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

    /// The usage ledger's invariant: whatever the delivery (retransmits, repeats with a new
    /// identifier, reordering, batches of any size, a sweeper close and the reopening
    /// interim, an Accounting-Off's close), the usage the folds add up to is exactly the row's
    /// final octets, because each delta is taken from the change the semantics made to the
    /// row, and a change is made once.
    mod ledger {
        use proptest::prelude::*;

        use super::super::*;
        use crate::ingest::semantics::SWEEPER_CAUSE;
        use crate::radius::accounting::{AccountingEvent, EventKind};

        /// One thing the writer receives, in delivery order.
        #[derive(Debug, Clone)]
        enum Delivered {
            Event(usize),
            Close(&'static str),
        }

        /// The session as the NAS lived it: Start, interims, maybe a Stop; counters that only
        /// grow (64-bit, gigawords included: increments cross 2^32).
        fn timeline(increments: &[(u64, u64)], stop: bool) -> Vec<AccountingEvent> {
            let mut out = Vec::new();
            out.push(AccountingEvent::sample(EventKind::Start, "s", 1_000));
            let (mut i, mut o) = (0i64, 0i64);
            for (n, (di, d_o)) in increments.iter().enumerate() {
                i += *di as i64;
                o += *d_o as i64;
                let t = 1_000 + 1_000 * (n as i64 + 1);
                let last = stop && n + 1 == increments.len();
                let kind = if last {
                    EventKind::Stop
                } else {
                    EventKind::InterimUpdate
                };
                let mut ev = AccountingEvent::sample(kind, "s", t);
                ev.sessiontime = Some(t - 1_000);
                ev.inputoctets = i;
                ev.outputoctets = o;
                out.push(ev);
            }
            out
        }

        /// Delivery: every event once, some twice (a retransmit or a repeat), each moved by up
        /// to `jitter` places; closes of radacctd's own at given places.
        fn delivery(
            events: usize,
            twice: &[bool],
            jitter: &[u8],
            closes: &[(usize, bool)],
        ) -> Vec<Delivered> {
            let mut keyed: Vec<(usize, usize, Delivered)> = Vec::new();
            let mut seq = 0;
            for e in 0..events {
                let copies = if twice.get(e).copied().unwrap_or(false) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let j = jitter.get(seq % jitter.len().max(1)).copied().unwrap_or(0) as usize;
                    keyed.push((e * 4 + j, seq, Delivered::Event(e)));
                    seq += 1;
                }
            }
            for (at, sweeper) in closes {
                let cause = if *sweeper {
                    SWEEPER_CAUSE
                } else {
                    "NAS-Reboot"
                };
                keyed.push(((at % events.max(1)) * 4 + 2, seq, Delivered::Close(cause)));
                seq += 1;
            }
            keyed.sort_by_key(|(pos, seq, _)| (*pos, *seq));
            keyed.into_iter().map(|(_, _, d)| d).collect()
        }

        /// Folds `delivered` in batches cut at `cuts`; returns the final row and the usage the
        /// folds added (input, output).
        fn run(
            events: &[AccountingEvent],
            delivered: &[Delivered],
            cuts: &[usize],
        ) -> (Option<Row>, i64, i64) {
            let mut row: Option<Row> = None;
            let (mut input, mut output) = (0, 0);
            let mut start = 0;
            let mut bounds: Vec<usize> = cuts
                .iter()
                .map(|c| c % (delivered.len() + 1))
                .chain([delivered.len()])
                .collect();
            bounds.sort_unstable();
            for end in bounds {
                if end <= start {
                    continue;
                }
                let items: Vec<Item> = delivered[start..end]
                    .iter()
                    .map(|d| match d {
                        Delivered::Event(e) => Item::Event {
                            event: Box::new(events[*e].clone()),
                            reply: None,
                        },
                        Delivered::Close(cause) => {
                            Item::Close(CloseRequest::new("s".into(), None, *cause, None).0)
                        }
                    })
                    .collect();
                let refs: Vec<&Item> = items.iter().collect();
                let loaded: HashMap<String, Row> = row
                    .clone()
                    .map(|r| ("s".to_string(), r))
                    .into_iter()
                    .collect();
                let mut out = Outcome::new(refs.len());
                let mut unchanged = vec![false; refs.len()];
                let folded = fold(
                    &refs,
                    0..refs.len(),
                    loaded,
                    &mut out,
                    &mut unchanged,
                    super::emit(),
                );
                for e in usage::entries(&folded.usage) {
                    input += e.input;
                    output += e.output;
                }
                if let Some(r) = folded.inserts.into_iter().chain(folded.updates).next() {
                    // A written row gets its id, as the store gives it.
                    row = Some(Row {
                        radacctid: Some(1),
                        ..r
                    });
                }
                start = end;
            }
            (row, input, output)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn the_ledger_sums_to_the_rows_final_octets_under_any_delivery(
                increments in prop::collection::vec((0u64..3_000_000_000, 0u64..6_000_000_000), 1..8),
                stop in any::<bool>(),
                twice in prop::collection::vec(any::<bool>(), 0..9),
                jitter in prop::collection::vec(0u8..9, 1..9),
                closes in prop::collection::vec((0usize..9, any::<bool>()), 0..3),
                cuts in prop::collection::vec(0usize..24, 0..5),
            ) {
                let events = timeline(&increments, stop);
                let delivered = delivery(events.len(), &twice, &jitter, &closes);
                let (row, input, output) = run(&events, &delivered, &cuts);
                let row = row.expect("every delivery creates the row");
                prop_assert_eq!(input, row.acctinputoctets.unwrap_or(0));
                prop_assert_eq!(output, row.acctoutputoctets.unwrap_or(0));
            }

            #[test]
            fn a_counter_that_restarts_counts_again_from_zero(
                before in prop::collection::vec(1u64..5_000_000_000, 1..5),
                after in prop::collection::vec(1u64..1_000, 1..5),
                cuts in prop::collection::vec(0usize..12, 0..4),
            ) {
                // The NAS rebooted without a Stop and kept the session key: its counters start
                // again near zero. Usage = the total before the restart + the total after.
                let incs: Vec<(u64, u64)> = before.iter().map(|b| (*b, 0)).collect();
                let reached: u64 = before.iter().sum();
                let mut events = timeline(&incs, false);
                let mut total = 0;
                for (n, a) in after.iter().enumerate() {
                    total += *a as i64;
                    let t = 100_000 + 1_000 * n as i64;
                    let mut ev = AccountingEvent::sample(EventKind::InterimUpdate, "s", t);
                    ev.inputoctets = total;
                    events.push(ev);
                }
                prop_assume!((total as u64) < reached);
                let delivered: Vec<Delivered> = (0..events.len()).map(Delivered::Event).collect();
                let (row, input, _) = run(&events, &delivered, &cuts);
                prop_assert_eq!(row.and_then(|r| r.acctinputoctets), Some(total));
                prop_assert_eq!(input, reached as i64 + total);
            }
        }
    }
}
