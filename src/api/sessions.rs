//! `GET /api/sessions`, `/api/sessions/count` and `/api/sessions/{radacctid}`: `status=active`
//! from the live index, `closed`/`all` from the database, with the same filter either way.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::{Caller, SESSIONS_VIEW};
use super::error::ApiError;
use super::params::{FieldValue, ListParams, Query, SESSION_FIELDS};
use crate::sessions::filter::{self, SessionFilter, Status};
use crate::sessions::{ResellerResolver, Row, Session};
use crate::store::SessionQuery;

/// Above this many open sessions the index scan runs on the blocking pool, so a large scan
/// does not hold up the runtime's other tasks.
const INLINE_SCAN_MAX: usize = 50_000;

/// A session as the API returns it: the contract's 15 fields ([`SESSION_FIELDS`]), in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionJson {
    /// The session's [`Columns::Api`](crate::sessions::Columns) columns.
    pub row: Row,
    pub nas_id: Option<i64>,
}

impl Serialize for SessionJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_struct("Session", SESSION_FIELDS.len())?;
        for field in SESSION_FIELDS {
            let name = field.name();
            match field.value(&self.row, || self.nas_id) {
                FieldValue::Int(n) => out.serialize_field(name, &n)?,
                FieldValue::Text(t) => out.serialize_field(name, &t)?,
                FieldValue::Time(t) => out.serialize_field(name, &t.and_then(rfc3339))?,
            }
        }
        out.end()
    }
}

/// RFC 3339 in UTC with `Z`, whole seconds.
pub use crate::clock::rfc3339;

impl ApiState {
    /// The caller's scope plus the request's filters.
    pub(crate) fn filter_for(&self, caller: &Caller, p: &ListParams) -> SessionFilter {
        SessionFilter {
            search: p.search.clone(),
            nas: p.nas_id.map(|id| self.scope().nas_match(id)),
            from: p.from,
            to: p.to,
            scope: self.scope().scope_for(caller),
        }
    }

    fn to_json(&self, rows: Vec<Row>) -> Vec<SessionJson> {
        let nas = self.scope().nas_lookup();
        rows.into_iter()
            .map(|row| SessionJson {
                nas_id: nas(&row.nasipaddress),
                row,
            })
            .collect()
    }
}

/// One page of open sessions from the index.
async fn index_page(
    state: &ApiState,
    filter: SessionFilter,
    p: &ListParams,
) -> Result<(Vec<Row>, u64), ApiError> {
    let index = state.index();
    let (sort, page) = (p.sort, p.page);
    let scan = move || {
        let (sessions, total) = filter::select_page(&index, &filter, sort, page);
        let records = sessions.iter().map(Row::from_session).collect();
        (records, total)
    };
    if state.index().len() <= INLINE_SCAN_MAX {
        Ok(scan())
    } else {
        tokio::task::spawn_blocking(scan)
            .await
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e)))
    }
}

/// `GET /api/sessions`.
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    state.ensure_index_ready()?;
    let p = ListParams::parse(&Query::parse(raw.as_deref())?)?;
    let filter = state.filter_for(&caller, &p);
    let (records, total) = match p.status {
        Status::Active => index_page(&state, filter, &p).await?,
        status => {
            let _permit = state.query_permit().await?;
            let q = SessionQuery {
                status,
                filter: &filter,
                sort: p.sort,
            };
            state.store().list_sessions(&q, p.page).await?
        }
    };
    Ok(Json(json!({
        "success": true,
        "data": state.to_json(records),
        "pagination": { "page": p.page.page, "limit": p.page.limit, "total": total },
    })))
}

/// `GET /api/sessions/count`: open sessions in the caller's scope, from the index counters in
/// O(resellers in scope).
pub async fn count(State(state): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    state.ensure_index_ready()?;
    let index = state.index();
    let n = match state.scope().scope_for(&caller) {
        filter::Scope::All => index.len() as i64,
        filter::Scope::Resellers(ids) => index.count_for_resellers(&ids),
    };
    Ok(Json(json!({ "success": true, "count": n })))
}

/// `GET /api/sessions/{radacctid}`: the index first, then the database (closed sessions; the
/// archive is not consulted). Out of scope: 403 `not authorized`.
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = viewable_session(&state, &caller, &id).await?;
    let mut data = state.to_json(vec![record]);
    Ok(Json(json!({ "success": true, "data": data.pop() })))
}

/// The session `GET /api/sessions/{radacctid}` answers for the path segment `id`, with its
/// checks in order: `sessions.view` (403), the index loaded (503), the id (400), then the
/// index or the database (404 `session not found`; 403 `not authorized` out of scope).
pub(crate) async fn viewable_session(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<Row, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    // Without the index an open session would be looked up in SQL alone, and the scope
    // (reseller tree) may not be loaded either.
    state.ensure_index_ready()?;
    let id = parse_radacctid(id)?;
    let scope = state.scope().scope_for(caller);
    let live: Option<Session> = state.index().get_by_id(id);
    match live {
        Some(s) => {
            if !scope.contains(s.reseller_id) {
                return Err(ApiError::Forbidden("not authorized".into()));
            }
            Ok(Row::from_session(&s))
        }
        None => stored_session_in_scope(state, &scope, id).await,
    }
}

/// The `{radacctid}` path segment.
pub(crate) fn parse_radacctid(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request("invalid radacctid, must be an integer"))
}

/// A session that is not open, from the database: 404 `session not found` when there is no
/// such row, 403 `not authorized` when its subscriber is outside `scope`.
pub(crate) async fn stored_session_in_scope(
    state: &ApiState,
    scope: &crate::sessions::filter::Scope,
    id: i64,
) -> Result<Row, ApiError> {
    let _permit = state.query_permit().await?;
    let Some(r) = state.store().session_by_id(id).await? else {
        return Err(ApiError::NotFound);
    };
    let owner = r
        .username
        .as_deref()
        .and_then(|u| state.scope().reseller_of(u));
    if !scope.contains(owner) {
        return Err(ApiError::Forbidden("not authorized".into()));
    }
    Ok(r)
}
