//! `POST /api/sessions/{radacctid}/coa` (docs/ARCHITECTURE.md#session-control): change a live
//! session's rate, timeout, filter or address list with an RFC 5176 CoA-Request, without
//! dropping it. Permission `subscribers.coa`, scope as for disconnect.
//!
//! The body is a JSON object with any of `rate_limit` (RouterOS rate-limit syntax, sent as
//! `Mikrotik-Rate-Limit`), `session_timeout` (seconds, `Session-Timeout`), `filter_id`
//! (`Filter-Id`), `address_list` (`Mikrotik-Address-List`) and `attributes` (a list of
//! `{"name", "value"}` restricted to `disconnect.coa_attributes`, typed by the dictionary).
//! A bad body is a 400 whose message starts with the field. Answers: 200
//! `{"success":true,"result":"ack","rtt_ms":…}`; CoA-NAK → 422 naming the Error-Cause; no
//! answer → 503 `NAS unreachable`; a closed session → 409 `session is closed`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::sessions::{parse_radacctid, stored_session_in_scope};
use crate::disconnect::{AttrValue, Change, ChangeAttr, ChangeError, change_refusal_message};
use crate::radius::dictionary::{self as d, AttrDef, ValueType, change_attribute};
use crate::radius::rate_limit;
use crate::sessions::Session;

/// The permission the contract names for changing a live session.
pub const SUBSCRIBERS_COA: &str = "subscribers.coa";

/// The body's fields; anything else is refused (a typo must not be a silent no-op).
const FIELDS: [&str; 5] = [
    "rate_limit",
    "session_timeout",
    "filter_id",
    "address_list",
    "attributes",
];

pub async fn coa(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(SUBSCRIBERS_COA)?;
    state.ensure_index_ready()?;
    let id = parse_radacctid(&id)?;
    let Some(disconnector) = state.disconnector() else {
        return Err(ApiError::Unavailable {
            message: "NAS unreachable",
            retry_after_secs: None,
        });
    };
    let change = parse_change(&body, disconnector.coa_attributes())?;
    let scope = state.scope().scope_for(&caller);
    let session = match state.index().get_by_id(id) {
        Some(s) => {
            if !scope.contains(s.reseller_id) {
                return Err(ApiError::Forbidden("not authorized".into()));
            }
            s
        }
        // Not open (or never existed): the database says which; the change of a closed
        // session is refused (and logged) by the service.
        None => {
            let row = stored_session_in_scope(&state, &scope, id).await?;
            let mut session = Session::from_row(&row, None);
            // The API's view of a stored row leaves the key out; the action log row needs it.
            if let Some(key) = state.store().session_key(id).await? {
                session.acctuniqueid = key.into();
            }
            session
        }
    };
    match disconnector
        .change_as(&session, &change, caller.subject.as_deref())
        .await
    {
        Ok(changed) => Ok(Json(json!({
            "success": true,
            "result": "ack",
            "rtt_ms": changed.round_trip.as_millis() as u64,
        }))),
        Err(ChangeError::Closed) => Err(ApiError::Conflict("session is closed")),
        Err(ChangeError::Refused {
            error_cause,
            detail,
        }) => {
            tracing::warn!(radacctid = id, nas = %session.nasipaddress, error_cause, %detail, "CoA refused by the NAS");
            Err(ApiError::ChangeRefused {
                message: change_refusal_message(error_cause),
                error_cause: error_cause.and_then(|c| d::value_name(d::ERROR_CAUSE, c)),
            })
        }
        Err(ChangeError::Unreachable { detail }) => {
            tracing::warn!(radacctid = id, nas = %session.nasipaddress, %detail, "CoA failed: NAS unreachable");
            Err(ApiError::Unavailable {
                message: "NAS unreachable",
                retry_after_secs: None,
            })
        }
        Err(ChangeError::Internal(e)) => Err(ApiError::Internal(anyhow::anyhow!(e))),
    }
}

/// The change a body asks for; `allowed` are the names its `attributes` may use.
pub fn parse_change(body: &[u8], allowed: &[String]) -> Result<Change, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("body: not valid JSON ({e})")))?;
    let Value::Object(fields) = value else {
        return Err(bad(format!(
            "body: expected a JSON object with {}",
            FIELDS.join(", ")
        )));
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "body: unknown field {unknown:?} (expected {})",
            FIELDS.join(", ")
        )));
    }
    let mut attrs = Vec::new();
    if let Some(v) = present(&fields, "rate_limit") {
        let text = v
            .as_str()
            .ok_or_else(|| bad("rate_limit: must be a string, e.g. \"10M/20M\"".into()))?;
        rate_limit::check(text).map_err(|e| bad(format!("rate_limit: {e}")))?;
        // Sent as RouterOS prints it: the fields separated by single spaces.
        let normal = Value::from(text.split_ascii_whitespace().collect::<Vec<_>>().join(" "));
        attrs.push(named("rate_limit", "Mikrotik-Rate-Limit", &normal)?);
    }
    if let Some(v) = present(&fields, "session_timeout") {
        attrs.push(named("session_timeout", "Session-Timeout", v)?);
    }
    if let Some(v) = present(&fields, "filter_id") {
        attrs.push(named("filter_id", "Filter-Id", v)?);
    }
    if let Some(v) = present(&fields, "address_list") {
        attrs.push(named("address_list", "Mikrotik-Address-List", v)?);
    }
    if let Some(list) = present(&fields, "attributes") {
        let list = list
            .as_array()
            .ok_or_else(|| bad("attributes: must be a list of {\"name\", \"value\"}".into()))?;
        for (i, item) in list.iter().enumerate() {
            attrs.push(listed(i, item, allowed)?);
        }
    }
    if attrs.is_empty() {
        return Err(bad(format!(
            "body: nothing to change: give {}",
            FIELDS.join(", ")
        )));
    }
    Change::new(attrs).map_err(|e| bad(format!("attributes: {e}")))
}

/// A field given with a value (`null` counts as absent).
fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

/// One of the named fields, as its dictionary attribute.
fn named(field: &str, attribute: &str, v: &Value) -> Result<ChangeAttr, ApiError> {
    let def = change_attribute(attribute).expect("the named fields are in the dictionary");
    typed(def, v).map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))
}

/// Entry `i` of `attributes`.
fn listed(i: usize, item: &Value, allowed: &[String]) -> Result<ChangeAttr, ApiError> {
    let field = |f: &str, m: String| ApiError::BadRequest(format!("attributes[{i}].{f}: {m}"));
    let Some(obj) = item.as_object() else {
        return Err(ApiError::BadRequest(format!(
            "attributes[{i}]: must be an object {{\"name\", \"value\"}}"
        )));
    };
    if let Some(k) = obj.keys().find(|k| *k != "name" && *k != "value") {
        return Err(field(k, "unknown field (expected name and value)".into()));
    }
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| field("name", "must be a string".into()))?;
    let def = change_attribute(name)
        .filter(|def| allowed.iter().any(|a| a.eq_ignore_ascii_case(def.name)))
        .ok_or_else(|| {
            field(
                "name",
                format!(
                    "{name:?} is not allowed (disconnect.coa_attributes: {})",
                    if allowed.is_empty() {
                        "empty".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                ),
            )
        })?;
    let value = obj
        .get("value")
        .filter(|v| !v.is_null())
        .ok_or_else(|| field("value", "missing".into()))?;
    typed(def, value).map_err(|e| field("value", e))
}

/// `v` as `def`'s type: text from a string, a number from a whole number (or a string of
/// digits), an address from a string.
fn typed(def: &'static AttrDef, v: &Value) -> Result<ChangeAttr, String> {
    let value =
        match def.value {
            ValueType::Text => AttrValue::Text(
                v.as_str()
                    .ok_or_else(|| format!("{} takes text", def.name))?
                    .to_owned(),
            ),
            ValueType::Integer => {
                let n = match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                AttrValue::Integer(n.and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                    format!("{} takes a whole number from 0 to 4294967295", def.name)
                })?)
            }
            ValueType::Ipv4Addr => AttrValue::Ipv4(
                v.as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("{} takes an IPv4 address", def.name))?,
            ),
        };
    ChangeAttr::new(def, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, allowed: &[&str]) -> Result<Change, String> {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        parse_change(body.as_bytes(), &allowed).map_err(|e| e.to_string())
    }

    #[test]
    fn named_fields_become_their_attributes() {
        let c = parse(
            r#"{"rate_limit":"10M/20M","session_timeout":3600,"filter_id":"blocked",
                "address_list":"overdue"}"#,
            &[],
        )
        .unwrap();
        assert_eq!(
            c.request_json(),
            r#"{"Filter-Id":"blocked","Mikrotik-Address-List":"overdue","Mikrotik-Rate-Limit":"10M/20M","Session-Timeout":3600}"#
        );
        let c = parse(r#"{"rate_limit":"  2M/4M   4M/8M "}"#, &[]).unwrap();
        assert_eq!(c.request_json(), r#"{"Mikrotik-Rate-Limit":"2M/4M 4M/8M"}"#);
        let c = parse(
            r#"{"attributes":[{"name":"idle-timeout","value":"600"}]}"#,
            &["Idle-Timeout"],
        )
        .unwrap();
        assert_eq!(c.request_json(), r#"{"Idle-Timeout":600}"#);
    }

    #[test]
    fn errors_start_with_the_field() {
        let cases: &[(&str, &str)] = &[
            ("not json", "body: not valid JSON"),
            ("[1]", "body: expected a JSON object"),
            (r#"{"rate":"1M"}"#, "body: unknown field \"rate\""),
            ("{}", "body: nothing to change"),
            (r#"{"rate_limit":null}"#, "body: nothing to change"),
            (r#"{"rate_limit":"10Q"}"#, "rate_limit: rx-rate \"10Q\""),
            (r#"{"rate_limit":10}"#, "rate_limit: must be a string"),
            (
                r#"{"session_timeout":-1}"#,
                "session_timeout: Session-Timeout takes a whole",
            ),
            (r#"{"session_timeout":4294967296}"#, "session_timeout:"),
            (r#"{"session_timeout":1.5}"#, "session_timeout:"),
            (
                r#"{"filter_id":""}"#,
                "filter_id: Filter-Id takes 1 to 253 bytes",
            ),
            (r#"{"filter_id":7}"#, "filter_id: Filter-Id takes text"),
            (
                r#"{"address_list":"a\nb"}"#,
                "address_list: Mikrotik-Address-List may not",
            ),
            (r#"{"attributes":{}}"#, "attributes: must be a list"),
            (r#"{"attributes":[1]}"#, "attributes[0]: must be an object"),
            (
                r#"{"attributes":[{"name":"Reply-Message","value":"x"}]}"#,
                "attributes[0].name: \"Reply-Message\" is not allowed",
            ),
            (
                r#"{"attributes":[{"name":"User-Name","value":"x"}]}"#,
                "attributes[0].name:",
            ),
            (
                r#"{"attributes":[{"name":"Idle-Timeout"}]}"#,
                "attributes[0].value: missing",
            ),
            (
                r#"{"attributes":[{"name":"Idle-Timeout","value":"soon"}]}"#,
                "attributes[0].value: Idle-Timeout takes a whole number",
            ),
            (
                r#"{"attributes":[{"name":"Idle-Timeout","value":1,"x":2}]}"#,
                "attributes[0].x: unknown field",
            ),
            (
                r#"{"session_timeout":5,"attributes":[{"name":"Session-Timeout","value":6}]}"#,
                "attributes: Session-Timeout given twice",
            ),
        ];
        for (body, want) in cases {
            let e = parse(body, &["Idle-Timeout", "Session-Timeout"]).expect_err(body);
            assert!(e.starts_with(want), "{body}: {e}");
        }
    }
}
