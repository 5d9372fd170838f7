//! `GET /api/attribution` and `GET /api/attribution/audit` (docs/ARCHITECTURE.md#attribution):
//! who had an address or block at a moment, over live and archived sessions, and the audit of
//! those questions. Permission `sessions.attribution` (every role needs it in its token); the
//! answer is limited to the caller's scope like every session answer; the audit list is for
//! admins.
//!
//! [`answer`] is shared with `radacctd attribution`, which prints the same document. No answer
//! is given without its audit row: when the row cannot be written, the request fails.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::auth::{Caller, Role, SESSIONS_ATTRIBUTION};
use super::error::ApiError;
use super::params::{AttributionParams, Query, parse_page};
use super::sessions::{SessionJson, rfc3339};
use crate::clock::now_secs;
use crate::sessions::Columns;
use crate::sessions::attribution::{Attributed, AttributionQuery, Window};
use crate::store::{AuditRecord, Store, StoreError, StoredAudit};

/// Who is asking, for the audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    pub actor: Option<String>,
    /// `admin`, `reseller` or `cli`.
    pub role: String,
    pub reseller_id: Option<i64>,
    /// `api` or `cli`.
    pub via: String,
    pub node: Option<String>,
}

/// Runs `query` (asked as `at` ± `window` seconds), writes its audit row, and returns the
/// answer document: `query` (what was asked, as understood), `data` (the sessions, by start
/// time) and `truncated`. `nas` names the `nas` row (id, `shortname`) of a NAS address.
pub async fn answer(
    store: &Store,
    nas: impl Fn(&str) -> Option<(i64, String)>,
    query: &AttributionQuery,
    at: i64,
    window: i64,
    asker: Asker,
) -> Result<Value, StoreError> {
    let (found, truncated) = store.attribute(query).await?;
    let record = AuditRecord {
        actor: asker.actor,
        role: asker.role,
        reseller_id: asker.reseller_id,
        via: asker.via,
        ip: query.target.to_string(),
        at,
        window_secs: window,
        results: found.len() as i64,
        truncated,
        radacctids: found.iter().filter_map(|a| a.row.radacctid).collect(),
        node: asker.node,
        requested_at: now_secs(),
    };
    store.record_attribution(&record).await?;
    let data: Vec<Value> = found.iter().map(|a| session_json(a, &nas)).collect();
    Ok(json!({
        "success": true,
        "query": { "ip": record.ip, "at": rfc3339(at), "window": window },
        "data": data,
        "truncated": truncated,
    }))
}

/// A session of the answer: the session object of the sessions list, the IPv6 columns, the
/// NAS's name, where the row lives (`live`, `archive`) and the column that held the address.
fn session_json(a: &Attributed, nas: &impl Fn(&str) -> Option<(i64, String)>) -> Value {
    let row = &a.row;
    let found = nas(&row.nasipaddress);
    let session = SessionJson {
        row: row.clone().only(Columns::Api).api_view(),
        nas_id: found.as_ref().map(|(id, _)| *id),
    };
    let mut object = match serde_json::to_value(&session) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    object.insert("framedipv6address".into(), json!(row.framedipv6address));
    object.insert("framedipv6prefix".into(), json!(row.framedipv6prefix));
    object.insert("delegatedipv6prefix".into(), json!(row.delegatedipv6prefix));
    object.insert("nas_name".into(), json!(found.map(|(_, name)| name)));
    object.insert("source".into(), json!(a.location.as_str()));
    object.insert("matched".into(), json!(a.matched));
    Value::Object(object)
}

/// `GET /api/attribution?ip=ADDR&at=TIME[&window=S][&limit=N]`.
pub async fn attribution(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require(SESSIONS_ATTRIBUTION)?;
    // The scope (reseller tree) is loaded with the index.
    state.ensure_index_ready()?;
    let p = AttributionParams::parse(&Query::parse(raw.as_deref())?)?;
    let query = AttributionQuery {
        target: p.ip,
        window: Window::around(p.at, p.window),
        scope: state.scope().scope_for(&caller),
        limit: p.limit,
    };
    let asker = Asker {
        actor: caller.subject.clone(),
        role: caller.role.as_str().to_owned(),
        reseller_id: caller.reseller_id,
        via: "api".into(),
        node: Some(state.node_name()).filter(|n| !n.is_empty()),
    };
    let _permit = state.query_permit().await?;
    let nas = state.scope().nas_names();
    Ok(Json(
        answer(state.store(), nas, &query, p.at, p.window, asker).await?,
    ))
}

/// `GET /api/attribution/audit?page=&limit=`: the audit rows, newest first, paged like the
/// sessions list. Admins holding `sessions.attribution` only.
pub async fn audit(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require(SESSIONS_ATTRIBUTION)?;
    if caller.role != Role::Admin {
        return Err(ApiError::Forbidden(
            "attribution audit is for admins".into(),
        ));
    }
    let page = parse_page(&Query::parse(raw.as_deref())?)?;
    let _permit = state.query_permit().await?;
    let (rows, total) = state.store().attribution_audit(page).await?;
    let data: Vec<Value> = rows.iter().map(audit_json).collect();
    Ok(Json(json!({
        "success": true,
        "data": data,
        "pagination": { "page": page.page, "limit": page.limit, "total": total },
    })))
}

/// An audit row as the API shows it.
fn audit_json(a: &StoredAudit) -> Value {
    let r = &a.record;
    json!({
        "id": a.id,
        "actor": r.actor,
        "role": r.role,
        "reseller_id": r.reseller_id,
        "via": r.via,
        "ip": r.ip,
        "at": rfc3339(r.at),
        "window": r.window_secs,
        "results": r.results,
        "truncated": r.truncated,
        "radacctids": r.radacctids,
        "node": r.node,
        "requested_at": rfc3339(r.requested_at),
    })
}
