//! The session events a change of a radacct row gives (docs/EVENTS.md): built from the row as
//! the change left it.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Row;
use crate::clock::Rfc3339;
use crate::events::{EventType, NewEvent};

/// An event about the session whose row is now `row`, with the row's fields as its data
/// (see [`SessionData`]) plus `extra`.
pub fn session_event(
    kind: EventType,
    time: i64,
    row: &Row,
    extra: Option<&Map<String, Value>>,
) -> NewEvent {
    let data = SessionData::new(row, extra);
    // Serializing plain strings, numbers and an already valid map cannot fail.
    let data = serde_json::to_string(&data).unwrap_or_else(|_| "{}".to_owned());
    NewEvent {
        kind,
        time,
        username: row.username.clone().unwrap_or_default(),
        nasipaddress: row.nasipaddress.clone(),
        acctuniqueid: row.acctuniqueid.clone(),
        radacctid: row.radacctid,
        data,
    }
}

/// The session fields an event about a session carries, from its row as the change left it:
/// identification, addresses (the IPv6 ones only when the row has them), start/stop, counters
/// (octets with gigawords folded in) and cause; empty text is `null`, times are RFC 3339 UTC.
/// Borrowed from the row and written straight into the event's JSON: events are built on the
/// writer's path, once per session start and stop.
#[derive(Serialize)]
struct SessionData<'a> {
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
    acctstarttime: Option<Rfc3339>,
    acctupdatetime: Option<Rfc3339>,
    acctstoptime: Option<Rfc3339>,
    acctsessiontime: Option<i64>,
    acctinputoctets: Option<i64>,
    acctoutputoctets: Option<i64>,
    acctterminatecause: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<&'a Map<String, Value>>,
}

impl<'a> SessionData<'a> {
    fn new(row: &'a Row, extra: Option<&'a Map<String, Value>>) -> Self {
        let text = |t: &'a Option<String>| t.as_deref().filter(|s| !s.is_empty());
        SessionData {
            acctsessionid: &row.acctsessionid,
            framedipaddress: text(&row.framedipaddress),
            callingstationid: text(&row.callingstationid),
            nasportid: text(&row.nasportid),
            framedipv6address: text(&row.framedipv6address),
            framedipv6prefix: text(&row.framedipv6prefix),
            delegatedipv6prefix: text(&row.delegatedipv6prefix),
            acctstarttime: row.acctstarttime.and_then(Rfc3339::at),
            acctupdatetime: row.acctupdatetime.and_then(Rfc3339::at),
            acctstoptime: row.acctstoptime.and_then(Rfc3339::at),
            acctsessiontime: row.acctsessiontime,
            acctinputoctets: row.acctinputoctets,
            acctoutputoctets: row.acctoutputoctets,
            acctterminatecause: text(&row.acctterminatecause),
            extra,
        }
    }
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
