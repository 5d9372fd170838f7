//! `POST /api/sessions/{radacctid}/disconnect` (the contract's "Terminate a live session",
//! docs/ARCHITECTURE.md#disconnect): permission, scope, then the disconnect service (CoA, RouterOS
//! API fallback). A session that is already closed answers `already_closed`, so the call is
//! idempotent (and is counted in `radacctd_disconnect_results_total{result="already_closed"}` like
//! the service's own). Failures are 503: `NAS unreachable` without an answer, or what the NAS
//! answered when it refused (`NAS refused the disconnect: Error-Cause 402 (Missing-Attribute)`).
//! An `already_closed` answered here, without the service, is written to the action log too
//! (method `none`); the service logs its own attempts. `?wait=N` (0–10 s) adds `confirmed`:
//! whether the NAS's own Accounting Stop reached the row (`disconnect::confirm`).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::params::{Query, wait_secs};
use super::sessions::{parse_radacctid, stored_session_in_scope};
use crate::clock::now_secs;
use crate::disconnect::confirm::wait_for_nas_stop;
use crate::disconnect::{DisconnectError, DisconnectResult, Method, refusal_message};
use crate::sessions::Row;
use crate::store::ActionRecord;

/// The permission the contract names for disconnects.
pub const SUBSCRIBERS_DISCONNECT: &str = "subscribers.disconnect";

/// `POST /api/sessions/{radacctid}/disconnect[?wait=N]`. With `wait`, the answer also says
/// whether the NAS's own Accounting Stop is on the row (`confirmed`): waited for up to N
/// seconds after a `coa` or `api` disconnect, looked up once for `already_closed`.
pub async fn disconnect(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require(SUBSCRIBERS_DISCONNECT)?;
    // Before the index is loaded an open session is missing from it: it would be answered
    // `already_closed` without any NAS being asked.
    state.ensure_index_ready()?;
    let id = parse_radacctid(&id)?;
    let wait = wait_secs(&Query::parse(raw.as_deref())?)?;
    let scope = state.scope().scope_for(&caller);
    let Some(session) = state.index().get_by_id(id) else {
        // Not open (or never existed): the database says which.
        let row = stored_session_in_scope(&state, &scope, id).await?;
        state.count_disconnect(DisconnectResult::AlreadyClosed);
        let key = log_already_closed(&state, id, &row, caller.subject.as_deref()).await;
        let mut answer = already_closed();
        if wait.is_some() {
            let confirmed = match key {
                Some(key) => wait_for_nas_stop(state.store(), &key, Duration::ZERO).await,
                None => false,
            };
            answer["confirmed"] = json!(confirmed);
        }
        return Ok(Json(answer));
    };
    if !scope.contains(session.reseller_id) {
        return Err(ApiError::Forbidden("not authorized".into()));
    }
    let Some(disconnector) = state.disconnector() else {
        return Err(ApiError::Unavailable {
            message: "NAS unreachable",
            retry_after_secs: None,
        });
    };
    match disconnector
        .disconnect_as(&session, caller.subject.as_deref())
        .await
    {
        Ok(done) => {
            let mut answer = match done.method {
                Method::AlreadyClosed => already_closed(),
                m => json!({
                    "success": true,
                    "method": m.as_str(),
                    "message": "disconnect request sent",
                }),
            };
            if let Some(secs) = wait {
                let wait = match done.method {
                    Method::AlreadyClosed => Duration::ZERO,
                    Method::Coa | Method::Api => Duration::from_secs(secs),
                };
                let key = session.acctuniqueid.to_string();
                answer["confirmed"] = json!(wait_for_nas_stop(state.store(), &key, wait).await);
            }
            Ok(Json(answer))
        }
        Err(DisconnectError::Unreachable { detail }) => {
            tracing::warn!(radacctid = id, nas = %session.nasipaddress, %detail, "disconnect failed: NAS unreachable");
            Err(ApiError::Unavailable {
                message: "NAS unreachable",
                retry_after_secs: None,
            })
        }
        Err(DisconnectError::Refused {
            error_cause,
            detail,
        }) => {
            tracing::warn!(radacctid = id, nas = %session.nasipaddress, error_cause, %detail, "disconnect failed: the NAS refused it");
            Err(ApiError::NasRefused(refusal_message(error_cause)))
        }
        Err(DisconnectError::Internal(e)) => Err(ApiError::Internal(anyhow::anyhow!(e))),
    }
}

/// Appends the action log row of an `already_closed` answered without asking any NAS (method
/// `none`, no round trip). A failure is logged; the answer stands. Returns the session's key
/// (`None` when it could not be read).
async fn log_already_closed(
    state: &ApiState,
    radacctid: i64,
    row: &Row,
    actor: Option<&str>,
) -> Option<String> {
    let now = now_secs();
    // The API's view of a stored row leaves the key out.
    let acctuniqueid = match state.store().session_key(radacctid).await {
        Ok(key) => key?,
        Err(e) => {
            tracing::warn!(radacctid, error = %e, "already_closed not written to session_actions");
            return None;
        }
    };
    let record = ActionRecord {
        radacctid,
        acctuniqueid: acctuniqueid.clone(),
        username: row.username.clone(),
        nasipaddress: row.nasipaddress.clone(),
        action: "disconnect".into(),
        method: "none".into(),
        outcome: "already_closed".into(),
        outcome_if_unchanged: None,
        // What the service writes for this answer (`disconnect::cluster`).
        detail: Some(json!({ "row_closed": false }).to_string()),
        request: None,
        error_cause: None,
        actor: actor.map(str::to_owned),
        node: state.node_name(),
        rtt_ms: None,
        requested_at: now,
        finished_at: now,
    };
    if let Err(e) = state.store().record_action(&record).await {
        tracing::warn!(radacctid, error = %e, "already_closed not written to session_actions");
    }
    Some(acctuniqueid)
}

fn already_closed() -> Value {
    json!({
        "success": true,
        "method": "already_closed",
        "message": "session already closed",
    })
}
