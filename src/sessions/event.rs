//! The session events a change of a radacct row gives (docs/EVENTS.md): built from the row as
//! the change left it.

use serde_json::{Map, Value, json};

use super::Row;
use crate::events::{EventType, NewEvent, rfc3339};

/// An event about the session whose row is now `row`, with the row's fields as its data
/// (see [`session_data`]) plus `extra`.
pub fn session_event(
    kind: EventType,
    time: i64,
    row: &Row,
    extra: Option<Map<String, Value>>,
) -> NewEvent {
    let mut data = session_data(row);
    if let Some(extra) = extra {
        data.extend(extra);
    }
    NewEvent {
        kind,
        time,
        username: row.username.clone().unwrap_or_default(),
        nasipaddress: row.nasipaddress.clone(),
        acctuniqueid: row.acctuniqueid.clone(),
        radacctid: row.radacctid,
        data: Value::Object(data).to_string(),
    }
}

/// The session fields an event about a session carries, from its row as the change left it:
/// identification, addresses, start/stop, counters (octets with gigawords folded in) and cause.
pub fn session_data(row: &Row) -> Map<String, Value> {
    let text = |t: Option<&str>| t.filter(|s| !s.is_empty()).map(str::to_owned);
    let mut m = Map::new();
    m.insert("acctsessionid".into(), json!(row.acctsessionid));
    m.insert(
        "framedipaddress".into(),
        json!(text(row.framedipaddress.as_deref())),
    );
    m.insert(
        "callingstationid".into(),
        json!(text(row.callingstationid.as_deref())),
    );
    m.insert("nasportid".into(), json!(text(row.nasportid.as_deref())));
    for (name, v) in [
        ("framedipv6address", &row.framedipv6address),
        ("framedipv6prefix", &row.framedipv6prefix),
        ("delegatedipv6prefix", &row.delegatedipv6prefix),
    ] {
        if let Some(v) = text(v.as_deref()) {
            m.insert(name.into(), json!(v));
        }
    }
    m.insert(
        "acctstarttime".into(),
        json!(row.acctstarttime.and_then(rfc3339)),
    );
    m.insert(
        "acctupdatetime".into(),
        json!(row.acctupdatetime.and_then(rfc3339)),
    );
    m.insert(
        "acctstoptime".into(),
        json!(row.acctstoptime.and_then(rfc3339)),
    );
    m.insert("acctsessiontime".into(), json!(row.acctsessiontime));
    m.insert("acctinputoctets".into(), json!(row.acctinputoctets));
    m.insert("acctoutputoctets".into(), json!(row.acctoutputoctets));
    m.insert(
        "acctterminatecause".into(),
        json!(text(row.acctterminatecause.as_deref())),
    );
    m
}
