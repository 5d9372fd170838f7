//! `POST /api/sessions/{radacctid}/disconnect` (the contract's "Terminate a live session",
//! docs/ARCHITECTURE.md#disconnect): permission, scope, then the disconnect service (CoA, RouterOS
//! API fallback). A session that is already closed answers `already_closed`, so the call is
//! idempotent (and is counted in `radacctd_disconnect_results_total{result="already_closed"}` like
//! the service's own). Failures are 503: `NAS unreachable` without an answer, or what the NAS
//! answered when it refused (`NAS refused the disconnect: Error-Cause 402 (Missing-Attribute)`).

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::sessions::{parse_radacctid, stored_session_in_scope};
use crate::disconnect::{DisconnectError, DisconnectResult, Method, refusal_message};

/// The permission the contract names for disconnects.
pub const SUBSCRIBERS_DISCONNECT: &str = "subscribers.disconnect";

pub async fn disconnect(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(SUBSCRIBERS_DISCONNECT)?;
    // Before the index is loaded an open session is missing from it: it would be answered
    // `already_closed` without any NAS being asked.
    state.ensure_index_ready()?;
    let id = parse_radacctid(&id)?;
    let scope = state.scope().scope_for(&caller);
    let Some(session) = state.index().get_by_id(id) else {
        // Not open (or never existed): the database says which.
        stored_session_in_scope(&state, &scope, id).await?;
        state.count_disconnect(DisconnectResult::AlreadyClosed);
        return Ok(Json(already_closed()));
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
        Ok(done) => Ok(Json(match done.method {
            Method::AlreadyClosed => already_closed(),
            m => json!({
                "success": true,
                "method": m.as_str(),
                "message": "disconnect request sent",
            }),
        })),
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

fn already_closed() -> Value {
    json!({
        "success": true,
        "method": "already_closed",
        "message": "session already closed",
    })
}
