//! `GET /api/nas` and `GET /api/nas/{id}` (permission `nas.view`): how each NAS is doing
//! (docs/ARCHITECTURE.md#nas-health): every `nas` row with its open sessions (from the index)
//! and this node's health figures for its address, then the addresses this node has figures
//! for that no `nas` row names (configured clients, members of a `nas` block) with `id` null.
//! Read only.

use std::collections::HashSet;
use std::net::IpAddr;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::ApiState;
use super::auth::{Caller, NAS_VIEW};
use super::error::ApiError;
use crate::net::ClientAddr;
use crate::store::NasRow;

/// `GET /api/nas`.
pub async fn list(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(NAS_VIEW)?;
    let rows = nas_rows(&state).await?;
    let mut named = HashSet::new();
    let mut data: Vec<Value> = rows
        .iter()
        .map(|row| {
            if let Some(ip) = host(row) {
                named.insert(ip);
            }
            row_json(&state, row)
        })
        .collect();
    if let Some(health) = state.nas_health() {
        for ip in health.addresses() {
            if !named.contains(&ip) {
                data.push(entry_json(&state, None, None, &ip.to_string(), Some(ip)));
            }
        }
    }
    Ok(Json(json!({ "success": true, "data": data })))
}

/// `GET /api/nas/{id}`: one `nas` row's entry; 400 for an id that is not an integer, 404 `nas
/// not found`.
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(NAS_VIEW)?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest("invalid nas id, must be an integer".into()))?;
    let rows = nas_rows(&state).await?;
    let row = rows
        .iter()
        .find(|r| r.id == id)
        .ok_or(ApiError::NasNotFound)?;
    Ok(Json(
        json!({ "success": true, "data": row_json(&state, row) }),
    ))
}

async fn nas_rows(state: &ApiState) -> Result<Vec<NasRow>, ApiError> {
    let _permit = state.query_permit().await?;
    let mut rows = state.store().nas_rows().await?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// The single address a `nas` row names (`None` for a block or a host name).
fn host(row: &NasRow) -> Option<IpAddr> {
    row.nasname
        .parse::<ClientAddr>()
        .ok()
        .filter(ClientAddr::is_host)
        .map(|a| a.addr)
}

fn row_json(state: &ApiState, row: &NasRow) -> Value {
    entry_json(state, Some(row.id), Some(row), &row.nasname, host(row))
}

/// One entry: the row's identity (never its secret or API password), open sessions and the
/// health figures of its address.
fn entry_json(
    state: &ApiState,
    id: Option<i64>,
    row: Option<&NasRow>,
    nasname: &str,
    address: Option<IpAddr>,
) -> Value {
    let figures = address.and_then(|ip| state.nas_health().and_then(|h| h.figures(ip)));
    let open = address.map(|ip| state.index().count_for_nas(&ip.to_string()));
    json!({
        "id": id,
        "nasname": nasname,
        "shortname": row.map(|r| r.shortname.clone()),
        "address": address.map(|ip| ip.to_string()),
        "api_configured": row.is_some_and(|r| r.api_username.as_deref().is_some_and(|u| !u.is_empty()) && r.api_password.is_some()),
        "api_tls": row.is_some_and(|r| r.api_tls),
        "open_sessions": open,
        "health": figures,
    })
}
