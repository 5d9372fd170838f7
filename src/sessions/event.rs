//! The session events a change of a radacct row gives (docs/EVENTS.md): built from the row as
//! the change left it.

use serde_json::{Map, Value};

use super::Row;
use crate::clock::Rfc3339;
use crate::events::{EventType, NewEvent};

/// An event about the session whose row is now `row`, with the row's fields as its data
/// (see [`data_json`]) plus `extra`.
pub fn session_event(
    kind: EventType,
    time: i64,
    row: &Row,
    extra: Option<&Map<String, Value>>,
) -> NewEvent {
    NewEvent {
        kind,
        time,
        username: row.username.clone().unwrap_or_default(),
        nasipaddress: row.nasipaddress.clone(),
        acctuniqueid: row.acctuniqueid.clone(),
        radacctid: row.radacctid,
        data: data_json(row, extra),
    }
}

/// The session fields an event about a session carries, as a JSON object, from its row as the
/// change left it: identification, addresses (the IPv6 ones only when the row has them),
/// start/stop, counters (octets with gigawords folded in) and cause; empty text is `null`,
/// times are RFC 3339 UTC; then `extra`'s entries. Events are built on the writer's path, once
/// per session start and stop, so the object is written straight into one string (what
/// serde_json writes for the same fields, byte for byte; the tests hold the two together).
fn data_json(row: &Row, extra: Option<&Map<String, Value>>) -> String {
    let mut o = Object::with_capacity(384);
    o.text("acctsessionid", Some(&row.acctsessionid));
    o.text("framedipaddress", text(&row.framedipaddress));
    o.text("callingstationid", text(&row.callingstationid));
    o.text("nasportid", text(&row.nasportid));
    for (key, value) in [
        ("framedipv6address", &row.framedipv6address),
        ("framedipv6prefix", &row.framedipv6prefix),
        ("delegatedipv6prefix", &row.delegatedipv6prefix),
    ] {
        if let Some(v) = text(value) {
            o.text(key, Some(v));
        }
    }
    o.time("acctstarttime", row.acctstarttime);
    o.time("acctupdatetime", row.acctupdatetime);
    o.time("acctstoptime", row.acctstoptime);
    o.int("acctsessiontime", row.acctsessiontime);
    o.int("acctinputoctets", row.acctinputoctets);
    o.int("acctoutputoctets", row.acctoutputoctets);
    o.text("acctterminatecause", text(&row.acctterminatecause));
    for (key, value) in extra.into_iter().flatten() {
        o.any_key(key);
        // A `Value` always serializes.
        o.0.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned()));
    }
    o.0.push('}');
    o.0
}

/// Text as the events carry it: empty is `null`.
fn text(t: &Option<String>) -> Option<&str> {
    t.as_deref().filter(|s| !s.is_empty())
}

/// A JSON object being written, compact as serde_json writes it: `{` and the members so far.
struct Object(String);

impl Object {
    fn with_capacity(n: usize) -> Object {
        let mut s = String::with_capacity(n);
        s.push('{');
        Object(s)
    }

    /// A key of ours: plain ASCII letters, written as they are.
    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    /// Any other key, escaped.
    fn any_key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        escaped(&mut self.0, key);
        self.0.push(':');
    }

    fn text(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        match value {
            Some(v) => escaped(&mut self.0, v),
            None => self.0.push_str("null"),
        }
    }

    fn int(&mut self, key: &str, value: Option<i64>) {
        self.key(key);
        match value {
            Some(v) => self.0.push_str(itoa::Buffer::new().format(v)),
            None => self.0.push_str("null"),
        }
    }

    /// A time as [`Rfc3339`] writes it, `null` outside years 0 to 9999 as when absent.
    fn time(&mut self, key: &str, value: Option<i64>) {
        self.key(key);
        match value.and_then(Rfc3339::at) {
            Some(t) => {
                self.0.push('"');
                self.0.push_str(t.as_str());
                self.0.push('"');
            }
            None => self.0.push_str("null"),
        }
    }
}

/// `s` as a JSON string, escaped as serde_json escapes it: `"` and `\` with a backslash,
/// the control characters with their short escapes (`\n`) or `\u00XX` (lower-case hex),
/// everything else as it is.
fn escaped(out: &mut String, s: &str) {
    out.push('"');
    let mut rest = s;
    // Each byte found is ASCII, so the slices around it fall on character boundaries.
    while let Some(i) = rest
        .bytes()
        .position(|b| b < 0x20 || b == b'"' || b == b'\\')
    {
        out.push_str(&rest[..i]);
        let b = rest.as_bytes()[i];
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn full_row() -> Row {
        Row {
            radacctid: Some(7),
            acctsessionid: "8a3f\"0001".into(),
            acctuniqueid: "k".into(),
            username: Some("u".into()),
            nasipaddress: "192.0.2.1".into(),
            nasportid: Some(String::new()),
            framedipaddress: Some("10.64.0.1".into()),
            callingstationid: Some("AA:BB:CC:DD:EE:FF".into()),
            framedipv6prefix: Some("2001:db8:1::/64".into()),
            delegatedipv6prefix: Some(String::new()),
            acctstarttime: Some(1_796_644_110),
            acctupdatetime: Some(1_796_644_410),
            acctstoptime: None,
            acctsessiontime: Some(300),
            acctinputoctets: Some(5_000_000_000),
            acctoutputoctets: Some(12),
            acctterminatecause: None,
            ..Row::default()
        }
    }

    /// What the data was serialized from before it was written by hand: serde_json's output
    /// for these fields is what `data_json` must write, byte for byte.
    #[derive(serde::Serialize)]
    struct Oracle<'a> {
        acctsessionid: &'a str,
        framedipaddress: Option<&'a str>,
        callingstationid: Option<&'a str>,
        nasportid: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        framedipv6address: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        framedipv6prefix: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        delegatedipv6prefix: Option<&'a str>,
        acctstarttime: Option<String>,
        acctupdatetime: Option<String>,
        acctstoptime: Option<String>,
        acctsessiontime: Option<i64>,
        acctinputoctets: Option<i64>,
        acctoutputoctets: Option<i64>,
        acctterminatecause: Option<&'a str>,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        extra: Option<&'a Map<String, Value>>,
    }

    fn oracle(row: &Row, extra: Option<&Map<String, Value>>) -> String {
        let time = |t: Option<i64>| t.and_then(Rfc3339::at).map(|t| t.to_string());
        serde_json::to_string(&Oracle {
            acctsessionid: &row.acctsessionid,
            framedipaddress: text(&row.framedipaddress),
            callingstationid: text(&row.callingstationid),
            nasportid: text(&row.nasportid),
            framedipv6address: text(&row.framedipv6address),
            framedipv6prefix: text(&row.framedipv6prefix),
            delegatedipv6prefix: text(&row.delegatedipv6prefix),
            acctstarttime: time(row.acctstarttime),
            acctupdatetime: time(row.acctupdatetime),
            acctstoptime: time(row.acctstoptime),
            acctsessiontime: row.acctsessiontime,
            acctinputoctets: row.acctinputoctets,
            acctoutputoctets: row.acctoutputoctets,
            acctterminatecause: text(&row.acctterminatecause),
            extra,
        })
        .expect("serializes")
    }

    #[test]
    fn the_data_is_what_serde_json_writes_for_the_same_fields() {
        use proptest::prelude::*;
        // Text with every escape: quotes, backslashes, control characters, DEL, non-ASCII.
        let text = || {
            proptest::option::of(
                proptest::string::string_regex("[a-z\"\\\\\u{0}-\u{1f}\u{7f}é€😀 :/.-]{0,12}")
                    .expect("regex"),
            )
        };
        let time = || {
            proptest::option::of(prop_oneof![
                -62_167_219_300i64..-62_167_219_100,
                0i64..4_102_444_800,
                253_402_300_700i64..253_402_300_900,
                Just(i64::MIN),
                Just(i64::MAX),
            ])
        };
        let int = || proptest::option::of(any::<i64>());
        let extra = proptest::option::of(proptest::collection::btree_map(
            "[a-z\"\u{1}]{1,6}",
            prop_oneof![
                Just(Value::Null),
                any::<i64>().prop_map(Value::from),
                "[a-z\"\\\\\u{2}]{0,6}".prop_map(Value::from),
            ],
            0..3,
        ));
        let row = (
            (
                text(),
                text(),
                text(),
                text(),
                text(),
                text(),
                text(),
                text(),
            ),
            (time(), time(), time(), int(), int(), int()),
        );
        proptest!(ProptestConfig::with_cases(2_000), |(
            ((session, ip, calling, port, v6, v6prefix, delegated, cause), (start, update, stop, secs, input, output)) in row,
            extra in extra,
        )| {
            let row = Row {
                acctsessionid: session.unwrap_or_default(),
                framedipaddress: ip,
                callingstationid: calling,
                nasportid: port,
                framedipv6address: v6,
                framedipv6prefix: v6prefix,
                delegatedipv6prefix: delegated,
                acctterminatecause: cause,
                acctstarttime: start,
                acctupdatetime: update,
                acctstoptime: stop,
                acctsessiontime: secs,
                acctinputoctets: input,
                acctoutputoctets: output,
                ..Row::default()
            };
            let extra: Option<Map<String, Value>> = extra.map(|m| m.into_iter().collect());
            prop_assert_eq!(data_json(&row, extra.as_ref()), oracle(&row, extra.as_ref()));
        });
    }

    fn data(e: &NewEvent) -> Value {
        serde_json::from_str(&e.data).expect("json")
    }

    #[test]
    fn a_session_event_carries_the_row_as_the_change_left_it() {
        let e = session_event(EventType::SessionStarted, 9, &full_row(), None);
        assert_eq!(
            (e.username.as_str(), e.acctuniqueid.as_str(), e.radacctid),
            ("u", "k", Some(7))
        );
        assert_eq!(
            data(&e),
            json!({
                "acctsessionid": "8a3f\"0001",
                "framedipaddress": "10.64.0.1",
                "callingstationid": "AA:BB:CC:DD:EE:FF",
                "nasportid": null,
                "framedipv6prefix": "2001:db8:1::/64",
                "acctstarttime": "2026-12-07T11:48:30Z",
                "acctupdatetime": "2026-12-07T11:53:30Z",
                "acctstoptime": null,
                "acctsessiontime": 300,
                "acctinputoctets": 5_000_000_000_i64,
                "acctoutputoctets": 12,
                "acctterminatecause": null,
            })
        );
    }

    #[test]
    fn extra_fields_follow_the_sessions_fields() {
        let mut extra = Map::new();
        extra.insert("cause".into(), json!("Lost-Carrier"));
        extra.insert("detail".into(), json!({"evidence": "absent"}));
        let e = session_event(EventType::SessionGhostClosed, 9, &full_row(), Some(&extra));
        let d = data(&e);
        assert_eq!(d["cause"], "Lost-Carrier");
        assert_eq!(d["detail"]["evidence"], "absent");
        assert_eq!(d["acctsessionid"], "8a3f\"0001");
    }
}
