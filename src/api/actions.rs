//! `GET /api/sessions/{radacctid}/actions`: a session's action log (docs/ARCHITECTURE.md#disconnect),
//! oldest first, from `session_actions` and `session_actions_archive`. Permission, scope and
//! errors are exactly those of `GET /api/sessions/{radacctid}` (a session only in
//! `radacct_archive` is 404 there, so here too). Read only: it never writes the log.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::sessions::{rfc3339, viewable_session};
use crate::radius::dictionary::{ERROR_CAUSE, value_name};
use crate::store::StoredAction;

/// `GET /api/sessions/{radacctid}/actions`.
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let session = viewable_session(&state, &caller, &id).await?;
    // A session the index holds only from the journal has no id, and so no log yet.
    let Some(radacctid) = session.radacctid else {
        return Ok(Json(json!({ "success": true, "data": [] })));
    };
    let _permit = state.query_permit().await?;
    let rows = state.store().session_actions(radacctid).await?;
    let data: Vec<Value> = rows.iter().map(action_json).collect();
    Ok(Json(json!({ "success": true, "data": data })))
}

/// One row as the API answers it: `request` and `detail` parsed (null when absent or not
/// JSON), the Error-Cause also by its dictionary name, times in RFC 3339 UTC.
pub fn action_json(a: &StoredAction) -> Value {
    let error_cause_name = a
        .error_cause
        .and_then(|c| u32::try_from(c).ok())
        .and_then(|c| value_name(ERROR_CAUSE, c));
    json!({
        "id": a.id,
        "radacctid": a.radacctid,
        "action": a.action,
        "method": a.method,
        "outcome": a.outcome,
        "error_cause": a.error_cause,
        "error_cause_name": error_cause_name,
        "request": parsed(a.request.as_deref()),
        "detail": parsed(a.detail.as_deref()),
        "actor": a.actor,
        "node": a.node,
        "rtt_ms": a.rtt_ms,
        "requested_at": rfc3339(a.requested_at),
        "finished_at": rfc3339(a.finished_at),
    })
}

/// JSON text as a value; `null` when absent or not JSON.
fn parsed(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> StoredAction {
        StoredAction {
            id: 1,
            radacctid: 5,
            action: "disconnect".into(),
            method: "coa".into(),
            outcome: "nak".into(),
            detail: Some(r#"{"error_cause":402,"detail":"NAK"}"#.into()),
            actor: Some("alice".into()),
            node: "host1".into(),
            rtt_ms: Some(12),
            request: Some("not json".into()),
            error_cause: Some(402),
            requested_at: 1_796_605_323,
            finished_at: 1_796_605_324,
        }
    }

    #[test]
    fn rows_are_answered_with_parsed_json_named_causes_and_utc_times() {
        let v = action_json(&stored());
        assert_eq!(v["error_cause"], 402);
        assert_eq!(v["error_cause_name"], "Missing-Attribute");
        assert_eq!(v["detail"]["error_cause"], 402);
        assert_eq!(v["request"], Value::Null, "not JSON: null");
        assert_eq!(v["requested_at"], "2026-12-07T01:02:03Z");
        assert_eq!(v["finished_at"], "2026-12-07T01:02:04Z");
        assert_eq!(
            (&v["actor"], &v["node"], &v["rtt_ms"]),
            (&json!("alice"), &json!("host1"), &json!(12))
        );
        let mut ack = stored();
        ack.error_cause = None;
        ack.detail = None;
        ack.rtt_ms = None;
        let v = action_json(&ack);
        assert_eq!(
            (
                &v["error_cause"],
                &v["error_cause_name"],
                &v["detail"],
                &v["rtt_ms"]
            ),
            (&Value::Null, &Value::Null, &Value::Null, &Value::Null)
        );
        let mut unknown = stored();
        unknown.error_cause = Some(999);
        assert_eq!(action_json(&unknown)["error_cause_name"], Value::Null);
    }
}
