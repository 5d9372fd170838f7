//! The usage ledger's arithmetic (pure, no I/O): how much a committed row change added to its
//! subscriber's usage, how that amount splits across the hours it was used in, and the
//! calendar (local days, billing months, time zones) the API and the fair-use policies count in.
//!
//! The ingest writer derives every delta from the row change the semantics decided
//! (`ingest::semantics`), never from the packet: a retransmit, a repeat, a stale interim or a
//! close changes no octets and so adds nothing. The store writes the hourly amounts in the
//! transaction that writes the rows (`store::usage`).

pub mod calendar;
pub mod policy;

pub use calendar::{Granularity, Period, PeriodKind, UsageZone};
pub use policy::Policies;

use std::collections::HashMap;
use std::sync::Mutex;

use crate::sessions::Row;

/// Seconds in an hour, the ledger's bucket.
pub const HOUR: i64 = 3600;
/// Seconds in a UTC day (the `usage_daily` bucket).
pub const DAY: i64 = 86_400;

/// What one row change added to a counter: `new − old`, or `new` when the counter went
/// backwards (a NAS that rebooted without a Stop, a row reopened with fresh counters): a
/// counter that restarts is counted from zero, never as a negative amount.
pub fn counter_delta(old: i64, new: i64) -> i64 {
    if new >= old { new - old } else { new.max(0) }
}

/// The usage one committed change of a row added, with the time span it was used in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The session key (`acctuniqueid`).
    pub key: String,
    /// The row's id when it existed before (an update); `None` for a new row.
    pub id: Option<i64>,
    pub username: String,
    /// The row's previous update time (else its start): where the span begins.
    pub from: i64,
    /// The row's new update time: where the span ends.
    pub to: i64,
    pub input: i64,
    pub output: i64,
}

/// What [`step`] needs of a row before its change: its id, counters and last update time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    id: Option<i64>,
    input: i64,
    output: i64,
    time: Option<i64>,
}

impl Mark {
    /// `row` as it is now.
    pub fn of(row: &Row) -> Mark {
        Mark {
            id: row.radacctid,
            input: row.acctinputoctets.unwrap_or(0),
            output: row.acctoutputoctets.unwrap_or(0),
            time: row.acctupdatetime.or(row.acctstarttime),
        }
    }
}

/// The usage of changing the row marked `before` (`None`: no row yet) into `after`, or `None`
/// when no octets were added or the row has no user name. A new row counts its octets from
/// zero over the time since its start.
pub fn step(before: Option<Mark>, after: &Row) -> Option<Step> {
    let username = after.username.as_deref().filter(|u| !u.is_empty())?;
    let (old_in, old_out, from) = match before {
        Some(b) => (b.input, b.output, b.time),
        None => (0, 0, after.acctstarttime),
    };
    let input = counter_delta(old_in, after.acctinputoctets.unwrap_or(0));
    let output = counter_delta(old_out, after.acctoutputoctets.unwrap_or(0));
    if input == 0 && output == 0 {
        return None;
    }
    let to = after
        .acctupdatetime
        .or(after.acctstoptime)
        .or(after.acctstarttime)
        .unwrap_or(0);
    Some(Step {
        key: after.acctuniqueid.clone(),
        id: before.and_then(|b| b.id),
        username: username.to_owned(),
        from: from.unwrap_or(to),
        to,
        input,
        output,
    })
}

/// The start of the UTC hour holding `t`.
pub fn hour_of(t: i64) -> i64 {
    t.div_euclid(HOUR) * HOUR
}

/// Splits `amount` over the hours of `[from, to)` in proportion to the seconds of the span in
/// each (linear interpolation between two updates: the NAS reports totals, not when within the
/// interval the bytes moved). The parts sum to `amount` exactly. A span that is empty or runs
/// backwards puts everything in the hour of `to`.
pub fn split_hours(from: i64, to: i64, amount: i64) -> Vec<(i64, i64)> {
    if to <= from || amount == 0 {
        return vec![(hour_of(to), amount)];
    }
    let span = i128::from(to - from);
    // Cumulative share at `t`, rounded down: consecutive differences sum to `amount`.
    let upto = |t: i64| (i128::from(amount) * i128::from(t - from) / span) as i64;
    let mut out = Vec::with_capacity(((to - from) / HOUR + 2) as usize);
    let mut start = from;
    while start < to {
        let end = (hour_of(start) + HOUR).min(to);
        let part = upto(end) - upto(start);
        if part != 0 {
            out.push((hour_of(start), part));
        }
        start = end;
    }
    out
}

/// One hourly amount of one session, as the store writes it: the store adds it to
/// `(username, hour)` only if the session's row change committed (matched by `key` for a new
/// row, by `id` for an update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub id: Option<i64>,
    pub username: String,
    /// The start of the UTC hour (epoch seconds).
    pub hour: i64,
    pub input: i64,
    pub output: i64,
}

/// The hourly entries of `steps`, one per session and hour (amounts of one session in one
/// hour added together), sorted by user name and hour so that concurrent writers take the
/// bucket rows' locks in one order.
pub fn entries(steps: &[Step]) -> Vec<Entry> {
    let mut by: foldhash::HashMap<(&str, i64), Entry> =
        foldhash::HashMapExt::with_capacity(steps.len());
    for s in steps {
        let inputs = split_hours(s.from, s.to, s.input);
        let outputs = split_hours(s.from, s.to, s.output);
        for (hour, input, output) in merge(&inputs, &outputs) {
            let e = by.entry((s.key.as_str(), hour)).or_insert_with(|| Entry {
                key: s.key.clone(),
                id: s.id,
                username: s.username.clone(),
                hour,
                input: 0,
                output: 0,
            });
            e.input += input;
            e.output += output;
        }
    }
    let mut out: Vec<Entry> = by.into_values().collect();
    out.sort_by(|a, b| (&a.username, a.hour, &a.key).cmp(&(&b.username, b.hour, &b.key)));
    out
}

/// Two per-hour splits side by side: `(hour, input, output)`.
fn merge(inputs: &[(i64, i64)], outputs: &[(i64, i64)]) -> Vec<(i64, i64, i64)> {
    let mut m: Vec<(i64, i64, i64)> = inputs.iter().map(|(h, v)| (*h, *v, 0)).collect();
    for (h, v) in outputs {
        match m.iter_mut().find(|e| e.0 == *h) {
            Some(e) => e.2 += v,
            None => m.push((*h, 0, *v)),
        }
    }
    m
}

/// A subscriber whose usage a commit changed, or who has a new session: what the fair-use
/// enforcer looks at next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    pub username: String,
    /// The session whose row was written.
    pub key: String,
    /// The row's `Class` when the writer knew it (rows rebuilt from the live index do not
    /// carry it).
    pub class: Option<String>,
    /// The row was inserted (a session new to radacctd) and is open.
    pub started: bool,
}

/// The touches committed since the enforcer last took them. The writer adds (never blocks
/// for long: a short lock, no await), the enforcer takes them all at once; by subscriber, so
/// the set stays as small as the number of subscribers however far behind the enforcer is.
#[derive(Debug, Default)]
pub struct Touches {
    pending: Mutex<HashMap<String, Vec<Touch>>>,
    notify: tokio::sync::Notify,
}

/// At most this many touches are kept per subscriber between two takes (its sessions): more
/// would only repeat them.
const TOUCHES_PER_USER: usize = 16;

impl Touches {
    /// An empty set.
    pub fn new() -> Touches {
        Touches::default()
    }

    /// Adds committed touches and wakes the enforcer.
    pub fn add(&self, touches: impl IntoIterator<Item = Touch>) {
        let mut any = false;
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for t in touches {
                any = true;
                let list = p.entry(t.username.clone()).or_default();
                if let Some(o) = list.iter_mut().find(|o| o.key == t.key) {
                    o.started |= t.started;
                    if t.class.is_some() {
                        o.class = t.class;
                    }
                } else if list.len() < TOUCHES_PER_USER || t.started {
                    list.push(t);
                }
            }
        }
        if any {
            self.notify.notify_one();
        }
    }

    /// Everything added since the last take, by subscriber.
    pub fn take(&self) -> HashMap<String, Vec<Touch>> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits until something was added (returns at once if something was added since the
    /// last wait).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, update: i64, input: i64, output: i64) -> Row {
        Row {
            radacctid: Some(7),
            acctuniqueid: key.into(),
            username: Some("alice".into()),
            acctstarttime: Some(0),
            acctupdatetime: Some(update),
            acctinputoctets: Some(input),
            acctoutputoctets: Some(output),
            ..Row::default()
        }
    }

    #[test]
    fn a_delta_is_new_minus_stored_and_a_counter_that_goes_back_counts_from_zero() {
        assert_eq!(counter_delta(100, 250), 150);
        assert_eq!(counter_delta(100, 100), 0);
        assert_eq!(counter_delta(5_000, 40), 40, "restarted counter");
        let s = step(
            Some(Mark::of(&row("k", 300, 100, 10))),
            &row("k", 600, 400, 5),
        )
        .expect("a step");
        assert_eq!((s.input, s.output, s.from, s.to), (300, 5, 300, 600));
        assert_eq!(s.id, Some(7));
        assert_eq!(
            step(Some(Mark::of(&row("k", 300, 1, 1))), &row("k", 600, 1, 1)),
            None
        );
    }

    #[test]
    fn a_new_row_counts_from_zero_since_its_start_and_rows_without_a_user_count_nothing() {
        let mut r = row("k", 900, 1_000, 0);
        r.acctstarttime = Some(600);
        let s = step(None, &r).expect("a step");
        assert_eq!((s.from, s.to, s.input, s.id), (600, 900, 1_000, None));
        r.username = Some(String::new());
        assert_eq!(step(None, &r), None);
    }

    #[test]
    fn a_span_splits_across_hours_in_proportion_and_sums_exactly() {
        // 15 minutes before and 45 after an hour boundary.
        let parts = split_hours(3 * HOUR - 900, 3 * HOUR + 2700, 1000);
        assert_eq!(parts, vec![(2 * HOUR, 250), (3 * HOUR, 750)]);
        let odd = split_hours(10, 5 * HOUR + 7, 1_000_003);
        assert_eq!(odd.iter().map(|p| p.1).sum::<i64>(), 1_000_003);
        assert_eq!(odd.len(), 6);
        assert_eq!(split_hours(500, 500, 9), vec![(0, 9)], "empty span");
        assert_eq!(split_hours(HOUR + 5, 10, 9), vec![(0, 9)], "backwards");
    }

    #[test]
    fn entries_merge_a_sessions_amounts_per_hour_and_sort_by_user_and_hour() {
        let steps = [
            Step {
                key: "b".into(),
                id: None,
                username: "zed".into(),
                from: 0,
                to: 100,
                input: 5,
                output: 0,
            },
            Step {
                key: "a".into(),
                id: Some(1),
                username: "amy".into(),
                from: HOUR - 100,
                to: HOUR + 100,
                input: 10,
                output: 20,
            },
            Step {
                key: "a".into(),
                id: Some(1),
                username: "amy".into(),
                from: HOUR + 100,
                to: HOUR + 200,
                input: 1,
                output: 1,
            },
        ];
        let e = entries(&steps);
        let view: Vec<(&str, i64, i64, i64)> = e
            .iter()
            .map(|e| (e.username.as_str(), e.hour, e.input, e.output))
            .collect();
        assert_eq!(
            view,
            vec![("amy", 0, 5, 10), ("amy", HOUR, 6, 11), ("zed", 0, 5, 0)]
        );
    }

    #[test]
    fn touches_coalesce_per_session_and_keep_starts() {
        let t = Touches::new();
        let touch = |key: &str, started| Touch {
            username: "u".into(),
            key: key.into(),
            class: None,
            started,
        };
        t.add([touch("a", false), touch("a", true), touch("b", false)]);
        let taken = t.take();
        assert_eq!(taken["u"].len(), 2);
        assert!(taken["u"][0].started);
        assert!(t.take().is_empty());
    }
}
