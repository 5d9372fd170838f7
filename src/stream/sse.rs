//! The Server-Sent Events wire format of the event stream (docs/EVENTS.md#the-stream), as the
//! WHATWG HTML standard's `text/event-stream` defines it: `field: value` lines, a blank line
//! ending each event, `:` starting a comment. Pure: building frames, no I/O.
//!
//! A frame is built once per event per node and shared by every stream that sends it.

use std::fmt::Write as _;

use axum::body::Bytes;

use crate::events::StoredEvent;

/// The `event:` of the frame that says events were lost (trimmed before they were read).
pub const LOST: &str = "events.lost";

/// The comment an idle stream sends every `events.heartbeat_secs`.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// `id: <id>`, `event: <type>`, `data: <StoredEvent::to_json>`. The JSON is one line (serde
/// escapes every control character inside strings); a type name holding a line break (only a
/// row written to the table by hand can) has it replaced, so it cannot end the field early.
pub fn event_frame(e: &StoredEvent) -> Bytes {
    let json = e.to_json();
    let kind: std::borrow::Cow<'_, str> = if e.kind.contains(['\r', '\n']) {
        e.kind.replace(['\r', '\n'], " ").into()
    } else {
        e.kind.as_str().into()
    };
    let mut s = String::with_capacity(json.len() + kind.len() + 40);
    // Writing to a String cannot fail.
    let _ = write!(s, "id: {}\nevent: {kind}\ndata: {json}\n\n", e.id);
    Bytes::from(s)
}

/// The frame that says the events `from..=to` are gone: `data: {"from": a, "to": b}`, with
/// `id: <to>` so that a client resuming after it does not hear of the same loss again.
pub fn lost_frame(from: i64, to: i64) -> Bytes {
    Bytes::from(format!(
        "id: {to}\nevent: {LOST}\ndata: {{\"from\":{from},\"to\":{to}}}\n\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> StoredEvent {
        StoredEvent {
            id: 12,
            kind: kind.into(),
            time: 1_700_000_000,
            username: "alice".into(),
            nasipaddress: "10.0.0.1".into(),
            acctuniqueid: "k\n1".into(),
            radacctid: Some(3),
            data: r#"{"cause":"User-Request\nx"}"#.into(),
            created: 1_700_000_001,
        }
    }

    #[test]
    fn an_event_is_three_fields_and_a_blank_line() {
        let f = event_frame(&event("session.stopped"));
        let text = std::str::from_utf8(&f).expect("utf-8");
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 5, "{text:?}");
        assert_eq!(lines[0], "id: 12");
        assert_eq!(lines[1], "event: session.stopped");
        let data = lines[2].strip_prefix("data: ").expect("data field");
        let v: serde_json::Value = serde_json::from_str(data).expect("JSON");
        assert_eq!(v["acctuniqueid"], "k\n1");
        assert_eq!(v["data"]["cause"], "User-Request\nx");
        assert_eq!((lines[3], lines[4]), ("", ""));
    }

    #[test]
    fn a_line_break_in_a_type_cannot_start_a_field() {
        let f = event_frame(&event("x\ndata: forged"));
        let text = std::str::from_utf8(&f).expect("utf-8");
        assert!(
            text.starts_with("id: 12\nevent: x data: forged\ndata: {"),
            "{text:?}"
        );
    }

    #[test]
    fn the_loss_names_its_ids() {
        assert_eq!(
            &lost_frame(11, 40)[..],
            b"id: 40\nevent: events.lost\ndata: {\"from\":11,\"to\":40}\n\n"
        );
    }
}
