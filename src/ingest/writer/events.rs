//! The session events a batch's row changes give (docs/EVENTS.md), derived from the change the
//! semantics made to each row, never from the packet: a retransmit, a repeat with a new
//! identifier, anything that changed nothing gives no event. Pure: the fold calls it per
//! changed item; the commit appends what it gives in the transaction of the change.

use serde_json::{Map, Value, json};

use crate::events::{EventType, NewEvent};
use crate::ingest::CloseRequest;
use crate::radius::accounting::{AccountingEvent, EventKind};
use crate::sessions::Row;
use crate::sessions::event::session_event;

/// Which row changes the writer appends session events for (`[events]`, docs/EVENTS.md): each
/// in the transaction (on PostgreSQL's optimistic path, the statement) that writes the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOptions {
    /// `events.enabled`: off, the writer builds and appends none.
    pub enabled: bool,
    /// `events.interims`: also `session.interim`, for every Interim-Update that changed an
    /// open row (off, those are not even built: they are most of the traffic).
    pub interims: bool,
}

impl Default for EventOptions {
    /// The configuration's defaults: events on, interims off.
    fn default() -> Self {
        EventOptions {
            enabled: true,
            interims: false,
        }
    }
}

/// What a commit derives events for, and when radacctd itself decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Emit {
    pub(super) options: EventOptions,
    /// Epoch seconds: the time of a close radacctd decided on its own (the sweeper's).
    pub(super) now: i64,
}

impl Emit {
    /// `options`, deciding now.
    pub(super) fn now(options: EventOptions) -> Emit {
        Emit {
            options,
            now: crate::clock::now_secs(),
        }
    }
}

/// A batch's events in item order, each with the index of the item that caused it.
#[derive(Debug, Default)]
pub(super) struct Derived {
    pub(super) at: Vec<usize>,
    pub(super) events: Vec<NewEvent>,
}

impl Derived {
    pub(super) fn with_capacity(n: usize) -> Derived {
        Derived {
            at: Vec::with_capacity(n),
            events: Vec::with_capacity(n),
        }
    }

    pub(super) fn push(&mut self, item: usize, event: NewEvent) {
        self.at.push(item);
        self.events.push(event);
    }

    pub(super) fn extend(&mut self, other: Derived) {
        self.at.extend(other.at);
        self.events.extend(other.events);
    }

    /// The events of rows inserted in this transaction take their new ids: the fold ran
    /// before the insert gave them one.
    pub(super) fn fill_ids(&mut self, inserted: &[Row]) {
        if inserted.is_empty() {
            return;
        }
        let ids: foldhash::HashMap<&str, i64> = inserted
            .iter()
            .filter_map(|r| Some((r.acctuniqueid.as_str(), r.radacctid?)))
            .collect();
        for e in self.events.iter_mut().filter(|e| e.radacctid.is_none()) {
            e.radacctid = ids.get(e.acctuniqueid.as_str()).copied();
        }
    }

    /// How many events are of items before `item` or of `item` itself.
    pub(super) fn up_to(&self, item: usize) -> usize {
        self.at.partition_point(|at| *at <= item)
    }
}

/// The event of an accounting packet that changed its row, from whether the row was open
/// before (`None`: there was none) and the row after:
/// - no row → open: `session.started`; no row → closed (a lone Stop): `session.stopped`;
/// - closed → open: `session.reopened`;
/// - open → open: `session.interim`, only with `events.interims`;
/// - → closed by a Stop: `session.stopped`, also for a row radacctd had closed first (after a
///   disconnect, a ghost close), whose final counters only the NAS's Stop brings.
pub(super) fn of_accounting(
    ev: &AccountingEvent,
    was_open: Option<bool>,
    row: &Row,
    options: EventOptions,
) -> Option<NewEvent> {
    let kind = match (was_open, row.is_open()) {
        (None, true) => EventType::SessionStarted,
        (None, false) => EventType::SessionStopped,
        (Some(false), true) => EventType::SessionReopened,
        (Some(true), true) if options.interims => EventType::SessionInterim,
        (Some(true), true) => return None,
        (Some(_), false) if ev.kind == EventKind::Stop => EventType::SessionStopped,
        (Some(_), false) => return None,
    };
    Some(session_event(kind, ev.time, row, None))
}

/// The event of a close that closed its row, by who asked for it:
/// - the router reconciliation (its action row `reconcile`): `session.ghost_closed` with
///   `"by": "reconcile"` and the action's `detail` (the evidence), at the time it was decided;
/// - the stale sweeper (no action row, closing only a row silent since its cutoff):
///   `session.ghost_closed` with `"by": "sweeper"`, now;
/// - a disconnect: none here; its action row gives `session.disconnected` with the NAS's
///   answer (`store::ActionRecord::event`).
pub(super) fn of_close(c: &CloseRequest, row: &Row, now: i64) -> Option<NewEvent> {
    let mut extra = Map::new();
    extra.insert("cause".into(), json!(c.cause));
    let time = match c.action.as_deref() {
        Some(a) if a.action == "reconcile" => {
            extra.insert("by".into(), json!("reconcile"));
            let detail: Value = a
                .detail
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or(Value::Null);
            extra.insert("detail".into(), detail);
            a.finished_at
        }
        Some(_) => return None,
        None if c.if_updated_before.is_some() => {
            extra.insert("by".into(), json!("sweeper"));
            now
        }
        // A disconnect's close recorded without an action log: no one to say what the NAS
        // answered.
        None => return None,
    };
    Some(session_event(
        EventType::SessionGhostClosed,
        time,
        row,
        Some(&extra),
    ))
}

/// The events of an Accounting-On/Off that closed `closed` (the rows as closed): one
/// `nas.rebooted` (`status` `on`/`off`, `closed` = how many, `cause`), then a
/// `session.stopped` for each.
pub(super) fn of_nas_close(ev: &AccountingEvent, cause: &str, closed: &[Row]) -> Vec<NewEvent> {
    let status = if ev.kind == EventKind::AccountingOn {
        "on"
    } else {
        "off"
    };
    let data = json!({ "status": status, "closed": closed.len(), "cause": cause });
    let mut out = Vec::with_capacity(closed.len() + 1);
    out.push(NewEvent {
        kind: EventType::NasRebooted,
        time: ev.time,
        username: String::new(),
        nasipaddress: ev.nasipaddress.to_string(),
        acctuniqueid: String::new(),
        radacctid: None,
        data: data.to_string(),
    });
    out.extend(
        closed
            .iter()
            .map(|r| session_event(EventType::SessionStopped, ev.time, r, None)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ActionRecord;

    fn row(open: bool) -> Row {
        Row {
            radacctid: Some(7),
            acctuniqueid: "k".into(),
            username: Some("u".into()),
            nasipaddress: "192.0.2.1".into(),
            acctstarttime: Some(1_000),
            acctstoptime: (!open).then_some(2_000),
            acctterminatecause: (!open).then(|| "Lost-Service".into()),
            ..Row::default()
        }
    }

    fn data(e: &NewEvent) -> Value {
        serde_json::from_str(&e.data).expect("json")
    }

    #[test]
    fn a_sweeper_close_and_a_reconciliation_are_ghost_closes_a_disconnect_is_not() {
        let (sweep, _rx) = CloseRequest::new("k".into(), None, "NAS-Idle-Timeout", Some(900));
        let e = of_close(&sweep, &row(false), 5_000).expect("event");
        assert_eq!((e.kind, e.time), (EventType::SessionGhostClosed, 5_000));
        assert_eq!(data(&e)["by"], "sweeper");
        assert_eq!(data(&e)["cause"], "NAS-Idle-Timeout");
        let record = |action: &'static str| ActionRecord {
            radacctid: 7,
            acctuniqueid: "k".into(),
            username: Some("u".into()),
            nasipaddress: "192.0.2.1".into(),
            action: action.into(),
            method: "api".into(),
            outcome: "ghost_closed".into(),
            outcome_if_unchanged: None,
            detail: Some(r#"{"evidence":"absent"}"#.into()),
            request: None,
            error_cause: None,
            actor: None,
            node: "a".into(),
            rtt_ms: Some(3),
            requested_at: 4_000,
            finished_at: 4_001,
        };
        let (reconcile, _rx) = CloseRequest::new("k".into(), Some(1_500), "Lost-Carrier", None);
        let reconcile = reconcile.with_action(Some(record("reconcile")));
        let e = of_close(&reconcile, &row(false), 5_000).expect("event");
        assert_eq!(e.time, 4_001, "when the reconciliation decided");
        assert_eq!(data(&e)["by"], "reconcile");
        assert_eq!(data(&e)["detail"]["evidence"], "absent");
        assert_eq!(e.radacctid, Some(7));
        let (disconnect, _rx) = CloseRequest::new("k".into(), None, "Admin-Reset", None);
        let logged = disconnect.with_action(Some(record("disconnect")));
        assert_eq!(of_close(&logged, &row(false), 5_000), None);
        let (unlogged, _rx) = CloseRequest::new("k".into(), None, "Admin-Reset", None);
        assert_eq!(of_close(&unlogged, &row(false), 5_000), None);
    }

    #[test]
    fn an_accounting_on_reports_the_nas_then_each_session_it_closed() {
        let ev = AccountingEvent::sample(EventKind::AccountingOn, "", 3_000);
        let events = of_nas_close(&ev, "NAS-Reboot", &[row(false), row(false)]);
        let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                EventType::NasRebooted,
                EventType::SessionStopped,
                EventType::SessionStopped
            ]
        );
        let nas = &events[0];
        assert_eq!(nas.nasipaddress, ev.nasipaddress.to_string());
        assert_eq!((nas.username.as_str(), nas.radacctid), ("", None));
        assert_eq!(
            data(nas),
            json!({"status": "on", "closed": 2, "cause": "NAS-Reboot"})
        );
        assert_eq!(events[1].radacctid, Some(7));
        let off = AccountingEvent::sample(EventKind::AccountingOff, "", 3_000);
        assert_eq!(
            data(&of_nas_close(&off, "NAS-Reboot", &[])[0])["status"],
            "off"
        );
    }
}
