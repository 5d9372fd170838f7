//! Session events (docs/EVENTS.md): what the outbox holds and how an event reads on the wire.
//! Pure, and a leaf (`config` checks webhook types against it): the writer, the action log
//! and the fair-use enforcer build [`NewEvent`]s, `store` writes them in the transaction of
//! the change that caused them, and `stream` (the sequencer, the Server-Sent Events hub and
//! the webhooks) reads them back as [`StoredEvent`]s.

use serde_json::{Value, json};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// A session's row was created open (its Start, or a first Interim-Update).
    SessionStarted,
    /// A Stop changed a session's row: its final counters, session time and cause. Also each
    /// session an Accounting-On/Off closed (cause `NAS-Reboot` unless the packet said), and a
    /// Stop arriving for a row radacctd closed first (after a disconnect or a ghost close),
    /// which brings the NAS's own final counters.
    SessionStopped,
    /// A closed row was opened again by accounting for it (an Interim-Update after a Stop, or
    /// after a ghost close).
    SessionReopened,
    /// An Interim-Update changed an open row (only with `events.interims = true`).
    SessionInterim,
    /// radacctd closed a session it found dead: the stale sweeper, or the reconciliation with
    /// the router's `/ppp/active`.
    SessionGhostClosed,
    /// A disconnect the NAS (or its RouterOS API) confirmed.
    SessionDisconnected,
    /// A CoA-Request was sent for a session, with its outcome.
    SessionCoa,
    /// Accounting-On or Accounting-Off from a NAS, with the number of sessions it closed.
    NasRebooted,
    /// A subscriber crossed a fair-use threshold.
    UsageThresholdCrossed,
}

impl EventType {
    pub const ALL: [EventType; 9] = [
        EventType::SessionStarted,
        EventType::SessionStopped,
        EventType::SessionReopened,
        EventType::SessionInterim,
        EventType::SessionGhostClosed,
        EventType::SessionDisconnected,
        EventType::SessionCoa,
        EventType::NasRebooted,
        EventType::UsageThresholdCrossed,
    ];

    /// The name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            EventType::SessionStarted => "session.started",
            EventType::SessionStopped => "session.stopped",
            EventType::SessionReopened => "session.reopened",
            EventType::SessionInterim => "session.interim",
            EventType::SessionGhostClosed => "session.ghost_closed",
            EventType::SessionDisconnected => "session.disconnected",
            EventType::SessionCoa => "session.coa",
            EventType::NasRebooted => "nas.rebooted",
            EventType::UsageThresholdCrossed => "usage.threshold_crossed",
        }
    }

    /// The type named `name`.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the event concerns one subscriber (and is scoped by its owner); `nas.rebooted`
    /// concerns a NAS.
    pub const fn has_subscriber(self) -> bool {
        !matches!(self, EventType::NasRebooted)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An event to append to the outbox, in the transaction of the change that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventType,
    /// Epoch seconds: when the change happened (the event time of the packet that caused it,
    /// or the time radacctd decided).
    pub time: i64,
    /// Empty when the event concerns no subscriber.
    pub username: String,
    /// Empty when the event concerns no NAS.
    pub nasipaddress: String,
    /// The session's key; empty for events of no session.
    pub acctuniqueid: String,
    /// The session's row id where known when the event is built; for a row the same write
    /// inserts, the write fills it in (the locked transaction after its insert, the guarded
    /// statement from its `RETURNING`).
    pub radacctid: Option<i64>,
    /// A JSON object: the type's own fields (docs/EVENTS.md#types).
    pub data: String,
}

/// RFC 3339 in UTC with `Z`, whole seconds.
pub use crate::clock::rfc3339;

/// The most events one outbox batch holds: a write with more appends several batches. Readers
/// rely on it to find the batch holding an id by a bounded index range.
pub const BATCH_MAX: usize = 1_000;

/// How an event is stored in the outbox (docs/EVENTS.md#storage): a batch's `lines` hold one
/// line per event, in order, separated by `\n`, each a JSON array
/// `[type, time, username, nasipaddress, acctuniqueid, radacctid, data]`. A line is written as a
/// head (up to and including the comma before `radacctid`) and a tail (from the comma after it),
/// so that PostgreSQL's guarded statement can put in the id of a row it inserts itself.
pub mod line {
    use serde_json::value::RawValue;

    use super::{NewEvent, StoredEvent};

    /// `event`'s line up to `radacctid`: `["type",time,"username","nas","key",`.
    pub fn head(event: &NewEvent) -> String {
        // A five-element array with its closing bracket turned into the comma before the id.
        let mut s = serde_json::to_string(&(
            event.kind.name(),
            event.time,
            &event.username,
            &event.nasipaddress,
            &event.acctuniqueid,
        ))
        .expect("strings and integers serialize");
        s.pop();
        s.push(',');
        s
    }

    /// `event`'s line after `radacctid`: `,data]`.
    pub fn tail(event: &NewEvent) -> String {
        let mut s = String::with_capacity(event.data.len() + 2);
        s.push(',');
        s.push_str(&event.data);
        s.push(']');
        s
    }

    /// `event`'s whole line (its own `radacctid`).
    pub fn whole(event: &NewEvent) -> String {
        let mut s = head(event);
        match event.radacctid {
            Some(id) => s.push_str(&id.to_string()),
            None => s.push_str("null"),
        }
        s.push_str(&tail(event));
        s
    }

    /// A line read back: the event numbered `id`, numbered at `created`.
    pub fn parse(line: &str, id: i64, created: i64) -> Result<StoredEvent, serde_json::Error> {
        type Fields<'a> = (
            String,
            i64,
            String,
            String,
            String,
            Option<i64>,
            &'a RawValue,
        );
        let (kind, time, username, nasipaddress, acctuniqueid, radacctid, data): Fields<'_> =
            serde_json::from_str(line)?;
        Ok(StoredEvent {
            id,
            kind,
            time,
            username,
            nasipaddress,
            acctuniqueid,
            radacctid,
            data: data.get().to_owned(),
            created,
        })
    }
}

/// An event as the outbox holds it once numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Monotonic, without gaps: the SSE `id` and the webhook cursor.
    pub id: i64,
    /// The type's name ([`EventType::name`]; a name this build does not know is passed on).
    pub kind: String,
    pub time: i64,
    pub username: String,
    pub nasipaddress: String,
    pub acctuniqueid: String,
    pub radacctid: Option<i64>,
    /// The JSON object of the type's fields, as written.
    pub data: String,
    /// Epoch seconds: when it was numbered.
    pub created: i64,
}

impl StoredEvent {
    /// The event as the SSE `data:` line and the webhook batch carry it: one JSON object,
    /// `{"id", "type", "time", "username", "nas", "radacctid", "acctuniqueid", "data"}`.
    pub fn to_json(&self) -> String {
        let data: Value = serde_json::from_str(&self.data).unwrap_or(Value::Null);
        let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        json!({
            "id": self.id,
            "type": self.kind,
            "time": rfc3339(self.time),
            "username": text(&self.username),
            "nas": text(&self.nasipaddress),
            "radacctid": self.radacctid,
            "acctuniqueid": text(&self.acctuniqueid),
            "data": data,
        })
        .to_string()
    }

    /// The type, when this build knows it.
    pub fn event_type(&self) -> Option<EventType> {
        EventType::parse(&self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_back_from_its_name() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.name()), Some(t));
        }
        assert_eq!(EventType::parse("session.start"), None);
    }

    #[test]
    fn a_stored_event_reads_as_one_json_object() {
        let e = StoredEvent {
            id: 7,
            kind: "session.stopped".into(),
            time: 1_700_000_000,
            username: "alice".into(),
            nasipaddress: "10.0.0.1".into(),
            acctuniqueid: "k1".into(),
            radacctid: Some(42),
            data: r#"{"acctinputoctets":5}"#.into(),
            created: 1_700_000_001,
        };
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["type"], "session.stopped");
        assert_eq!(v["time"], "2023-11-14T22:13:20Z");
        assert_eq!(v["nas"], "10.0.0.1");
        assert_eq!(v["radacctid"], 42);
        assert_eq!(v["data"]["acctinputoctets"], 5);
    }

    fn new_event(username: &str, radacctid: Option<i64>) -> NewEvent {
        NewEvent {
            kind: EventType::SessionStopped,
            time: 1_700_000_000,
            username: username.into(),
            nasipaddress: "10.0.0.1".into(),
            acctuniqueid: "k\"1".into(),
            radacctid,
            data: r#"{"acctinputoctets":5,"cause":"User-Request"}"#.into(),
        }
    }

    #[test]
    fn a_line_reads_back_as_the_event_it_was_written_from() {
        for (user, id) in [
            ("alice", Some(42)),
            ("bob\n\t\u{1}é\\", None),
            ("", Some(-1)),
        ] {
            let e = new_event(user, id);
            let line = line::whole(&e);
            assert!(!line.contains('\n'), "one line: {line}");
            let back = line::parse(&line, 9, 1_700_000_005).unwrap();
            assert_eq!(
                back,
                StoredEvent {
                    id: 9,
                    kind: e.kind.name().to_owned(),
                    time: e.time,
                    username: e.username.clone(),
                    nasipaddress: e.nasipaddress.clone(),
                    acctuniqueid: e.acctuniqueid.clone(),
                    radacctid: id,
                    data: e.data.clone(),
                    created: 1_700_000_005,
                }
            );
            // The head and the tail around the id are the whole line.
            let id_text = id.map_or("null".to_owned(), |n| n.to_string());
            assert_eq!(
                format!("{}{id_text}{}", line::head(&e), line::tail(&e)),
                line
            );
        }
    }

    #[test]
    fn a_line_that_is_not_an_event_is_an_error() {
        for bad in [
            "",
            "[]",
            "[\"a\",1,\"u\",\"n\",\"k\",null]",
            "{\"type\":1}",
            "[\"a\",\"x\",\"u\",\"n\",\"k\",null,{}]",
        ] {
            assert!(line::parse(bad, 1, 1).is_err(), "{bad}");
        }
    }
}
