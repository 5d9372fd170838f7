//! The OpenAPI 3 document served at `/api/openapi.json`, written by hand from the same
//! constants the handlers use (fields, columns, limits). A test checks that every route in
//! [`super::ROUTES`] is described here.

use serde_json::{Map, Value, json};

use super::params::{
    DEFAULT_ATTRIBUTION_LIMIT, DEFAULT_COLUMNS, DEFAULT_LIMIT, FIELDS, Field,
    MAX_ATTRIBUTION_LIMIT, MAX_LIMIT, MAX_PAGE, MAX_SEARCH_CHARS, MAX_WAIT_SECS, MAX_WINDOW_SECS,
    SESSION_FIELDS, search_pattern,
};
use super::usage::{MAX_SPAN_DAYS, MAX_TOP, TOP_PERIODS};
use crate::sessions::ColumnKind;
use crate::sessions::filter::SortKey;

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn common_errors(with_400: bool) -> Map<String, Value> {
    let mut m = Map::new();
    if with_400 {
        m.insert(
            "400".into(),
            error_response("Invalid query parameter; the message names it (e.g. `invalid status, must be active/closed/all`)"),
        );
    }
    m.insert(
        "401".into(),
        error_response("Missing, malformed, badly signed, expired or not yet valid token (`missing token`, `malformed token`, `invalid token`, `token expired`, `token not yet valid`: `nbf` ahead of the clock by more than `api.jwt_leeway_secs`)"),
    );
    m.insert(
        "403".into(),
        error_response("`sessions.view denied`: the token lacks the permission"),
    );
    m.insert(
        "429".into(),
        error_response("`too many requests`: rate limit per client IP; see `Retry-After`"),
    );
    m.insert(
        "503".into(),
        error_response("`database unavailable`, `index not ready` or `request timed out`"),
    );
    m.insert(
        "500".into(),
        error_response("`internal error` (details are logged, never returned)"),
    );
    m
}

fn bad_radacctid() -> Value {
    error_response(
        "`invalid radacctid, must be an integer`: the path's id is not a signed 64-bit integer",
    )
}

/// A query parameter. Every parameter may be given empty (`?limit=`), which is the same as
/// leaving it out: `allowEmptyValue` says so.
fn param(name: &str, description: &str, schema: Value) -> Value {
    json!({
        "name": name,
        "in": "query",
        "required": false,
        "allowEmptyValue": true,
        "description": description,
        "schema": schema
    })
}

fn filter_params(with_paging: bool) -> Vec<Value> {
    let sort_keys: Vec<&str> = SortKey::ALL.iter().map(|k| k.column()).collect();
    let mut v = vec![param(
        "status",
        "active (open sessions, answered from the live index), closed or all (from the database)",
        json!({ "type": "string", "enum": ["active", "closed", "all"], "default": "active" }),
    )];
    if with_paging {
        v.push(param(
            "page",
            "1-indexed page",
            json!({ "type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_PAGE, "default": 1 }),
        ));
        v.push(param(
            "limit",
            "Rows per page",
            json!({ "type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT }),
        ));
    }
    v.extend([
        param(
            "search",
            "Case-insensitive (ASCII) substring of username, prefix of framedipaddress, or - for a MAC fragment (hex digits once : - . are removed) - substring of callingstationid with those separators ignored (AA:BB:CC:DD:EE:01 = aa-bb-cc-dd-ee-01 = aabb.ccdd.ee01), or - for a term with a `:` - prefix of framedipv6address, framedipv6prefix or delegatedipv6prefix (their canonical text: lower case, leading zeros dropped, the longest run of zero groups as ::, PostgreSQL's ::a.b.c.d for an IPv4-compatible address; a whole address or addr/len is put in that form first, so 2001:DB8:0::1 finds 2001:db8::1 and ::a00:1 finds ::10.0.0.1)",
            json!({ "type": "string", "maxLength": MAX_SEARCH_CHARS, "pattern": search_pattern() }),
        ),
        param(
            "nas_id",
            "Only sessions of the NAS with this `nas.id` (a signed 64-bit integer)",
            json!({ "type": "integer", "format": "int64" }),
        ),
        param(
            "from",
            "Sessions started at or after this instant: RFC 3339, or YYYY-MM-DD (UTC midnight); empty is the same as absent",
            time_schema(),
        ),
        param(
            "to",
            "Sessions started at or before this instant: RFC 3339, or YYYY-MM-DD (UTC midnight); empty is the same as absent. Must not be earlier than `from` when both are given (400 `invalid to, must not be earlier than from`)",
            time_schema(),
        ),
        param(
            "sort",
            "Sort column; NULLs last in both orders, ties by radacctid ascending",
            json!({ "type": "string", "enum": sort_keys, "default": "acctstarttime" }),
        ),
        param("order", "Sort direction", json!({ "type": "string", "enum": ["asc", "desc"], "default": "desc" })),
    ]);
    v
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// The document.
pub fn document() -> Value {
    let mut session_props = Map::new();
    for f in SESSION_FIELDS {
        let schema = match f {
            Field::NasId => json!({ "type": ["integer", "null"], "format": "int64" }),
            Field::Column(c) => match (c.kind, c.required) {
                (ColumnKind::Time, _) => {
                    json!({ "type": ["string", "null"], "format": "date-time", "description": "RFC 3339, UTC, `Z`" })
                }
                (ColumnKind::Int, _) => json!({ "type": ["integer", "null"], "format": "int64" }),
                (ColumnKind::Text | ColumnKind::Addr | ColumnKind::Prefix, true) => {
                    json!({ "type": "string" })
                }
                (ColumnKind::Text | ColumnKind::Addr | ColumnKind::Prefix, false) => {
                    json!({ "type": ["string", "null"] })
                }
            },
        };
        session_props.insert(f.name().into(), schema);
    }

    let mut list_responses = common_errors(true);
    list_responses.insert(
        "200".into(),
        ok_json(
            "One page of sessions",
            json!({
                "type": "object",
                "required": ["success", "data", "pagination"],
                "properties": {
                    "success": { "const": true },
                    "data": { "type": "array", "items": { "$ref": "#/components/schemas/Session" } },
                    "pagination": { "$ref": "#/components/schemas/Pagination" }
                }
            }),
        ),
    );

    let mut count_responses = common_errors(false);
    count_responses.insert(
        "200".into(),
        ok_json(
            "Open sessions in the caller's scope (from the live index)",
            json!({
                "type": "object",
                "required": ["success", "count"],
                "properties": { "success": { "const": true }, "count": { "type": "integer" } }
            }),
        ),
    );

    let mut get_responses = common_errors(true);
    get_responses.insert(
        "200".into(),
        ok_json(
            "The session",
            json!({
                "type": "object",
                "required": ["success", "data"],
                "properties": { "success": { "const": true }, "data": { "$ref": "#/components/schemas/Session" } }
            }),
        ),
    );
    get_responses.insert("400".into(), bad_radacctid());
    get_responses.insert("403".into(), error_response("`sessions.view denied`, or `not authorized`: the session is outside the caller's scope"));
    let mut disconnect_responses = common_errors(true);
    disconnect_responses.insert(
        "200".into(),
        ok_json(
            "Disconnected (`coa`: the NAS acknowledged the Disconnect-Request; `api`: the MikroTik API removed the session), or `already_closed` (idempotent: closed earlier, or the NAS had no such session, in which case the ghost row is closed now)",
            json!({
                "type": "object",
                "required": ["success", "method", "message"],
                "properties": {
                    "success": { "const": true },
                    "method": { "type": "string", "enum": ["coa", "api", "already_closed"] },
                    "message": { "type": "string" },
                    "confirmed": { "type": "boolean", "description": "Only with `wait`: whether the NAS's own Accounting Stop is recorded on the row (it carries the final counters, session time and cause). After `coa` or `api`, waited for up to `wait` seconds (true as soon as it arrives, through any node sharing the database); with `already_closed`, whether the row already holds one (no waiting)" }
                }
            }),
        ),
    );
    disconnect_responses.insert(
        "400".into(),
        error_response(&format!("`invalid radacctid, must be an integer`: the path's id is not a signed 64-bit integer; `invalid wait, must be an integer between 0 and {MAX_WAIT_SECS} (seconds)`")),
    );
    disconnect_responses.insert("403".into(), error_response("`subscribers.disconnect denied`, or `not authorized`: the session is outside the caller's scope"));
    disconnect_responses.insert(
        "404".into(),
        error_response("`session not found`: no session with that radacctid"),
    );
    disconnect_responses.insert("503".into(), error_response("`NAS unreachable`: no answer to the Disconnect-Request, and the MikroTik API failed too (or the NAS has no API credentials); `NAS refused the disconnect: Error-Cause <n> (<name>)`: the NAS answered with a Disconnect-NAK (e.g. `Error-Cause 402 (Missing-Attribute)`) and the MikroTik API did not remove the session either. Either way the row stays open for the stale sweeper. Also `index not ready` (see `Retry-After`), `database unavailable` or `request timed out`"));
    let coa_responses = coa_responses();
    get_responses.insert(
        "404".into(),
        error_response("`session not found` (the archive is not searched)"),
    );
    let mut actions_responses = get_responses.clone();
    actions_responses.insert(
        "200".into(),
        ok_json(
            "The session's action log, oldest first (rows of archived sessions' logs included)",
            json!({
                "type": "object",
                "required": ["success", "data"],
                "properties": {
                    "success": { "const": true },
                    "data": { "type": "array", "items": { "$ref": "#/components/schemas/Action" } }
                }
            }),
        ),
    );

    let mut export_params = filter_params(false);
    export_params.push(param(
        "format",
        "csv only (xlsx is reserved: 400 `invalid format, xlsx is not supported yet (use csv)`)",
        json!({ "type": "string", "enum": ["csv"], "default": "csv" }),
    ));
    let mut columns = param(
        "columns",
        "Comma-separated columns, in the order wanted, each at most once; any of the session fields",
        json!({
            "type": "array",
            "items": { "type": "string", "enum": FIELDS },
            "minItems": 1,
            "uniqueItems": true,
            "default": DEFAULT_COLUMNS,
        }),
    );
    // `columns=a,b`: one comma-separated value (OpenAPI 3 `form`, not exploded).
    columns["style"] = json!("form");
    columns["explode"] = json!(false);
    export_params.push(columns);
    let mut export_responses = common_errors(true);
    export_responses.insert(
        "200".into(),
        json!({
            "description": "CSV (RFC 4180, header row, CRLF), streamed. `Content-Disposition: attachment`; `X-Total-Count` gives the row count.",
            "content": { "text/csv": { "schema": { "type": "string" } } }
        }),
    );
    export_responses.insert(
        "413".into(),
        error_response("`too many rows, narrow date range`: more matches than `api.export_max_rows` (default 500,000); decided before any byte is sent"),
    );
    export_responses.insert(
        "503".into(),
        error_response("`too many exports in progress, try again later` (see `Retry-After`), `index not ready` (see `Retry-After`), `database unavailable` or `request timed out`"),
    );

    let health = |description: &str| {
        json!({
            "get": {
                "summary": description,
                "security": [],
                "responses": {
                    "200": ok_json("OK", json!({ "type": "object", "properties": { "success": { "const": true }, "status": { "type": "string" } } })),
                    "429": error_response("`too many requests`"),
                    "503": error_response("Not ready: `database unreachable` or `index not ready`")
                }
            }
        })
    };

    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "radacctd Sessions API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Open and closed RADIUS accounting sessions (FreeRADIUS radacct). Errors are always {\"success\": false, \"message\": ...}. Rate limit: 300 requests/min per client IP by default (429 with Retry-After)."
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/api/sessions": {
                "get": {
                    "summary": "List sessions (permission sessions.view; resellers see their subtree unless sessions.view_all)",
                    "parameters": filter_params(true),
                    "responses": list_responses
                }
            },
            "/api/sessions/count": {
                "get": {
                    "summary": "Number of open sessions in the caller's scope (permission sessions.view)",
                    "responses": count_responses
                }
            },
            "/api/sessions/export": {
                "get": {
                    "summary": "Export sessions as CSV (permission sessions.view); page and limit are ignored",
                    "parameters": export_params,
                    "responses": export_responses
                }
            },
            "/api/sessions/{radacctid}": {
                "get": {
                    "summary": "One session by radacctid (permission sessions.view)",
                    "parameters": [ { "name": "radacctid", "in": "path", "required": true, "schema": { "type": "integer", "format": "int64" } } ],
                    "responses": get_responses
                }
            },
            "/api/sessions/{radacctid}/actions": {
                "get": {
                    "summary": "A session's action log: every disconnect (and CoA) asked for it, who asked, what was sent and what the NAS answered (permission sessions.view, scope as for the session)",
                    "parameters": [ { "name": "radacctid", "in": "path", "required": true, "schema": { "type": "integer", "format": "int64" } } ],
                    "responses": actions_responses
                }
            },
            "/api/sessions/{radacctid}/disconnect": {
                "post": {
                    "summary": "Disconnect a live session: RFC 5176 Disconnect-Request to the NAS, MikroTik RouterOS API fallback (permission subscribers.disconnect)",
                    "parameters": [
                        { "name": "radacctid", "in": "path", "required": true, "schema": { "type": "integer", "format": "int64" } },
                        param("wait", "Seconds to wait, after a successful disconnect, for the NAS's own Accounting Stop; the answer then has `confirmed`. Absent: no waiting and no `confirmed`", json!({ "type": "integer", "minimum": 0, "maximum": MAX_WAIT_SECS }))
                    ],
                    "responses": disconnect_responses
                }
            },
            "/api/sessions/{radacctid}/coa": {
                "post": {
                    "summary": "Change a live session without dropping it: RFC 5176 CoA-Request to the NAS with a new rate limit, session timeout, filter, address list or allow-listed attributes (permission subscribers.coa); every attempt is in the session's action log",
                    "parameters": [ { "name": "radacctid", "in": "path", "required": true, "schema": { "type": "integer", "format": "int64" } } ],
                    "requestBody": { "required": true, "content": { "application/json": { "schema": coa_body() } } },
                    "responses": coa_responses
                }
            },
            "/api/subscribers/{username}/usage": {
                "get": {
                    "summary": "A subscriber's usage from the usage ledger, by hour, local day or billing month, with its fair-use state (permission sessions.view; resellers: their subscribers only)",
                    "parameters": usage_params(),
                    "responses": usage_responses()
                }
            },
            "/api/usage/top": {
                "get": {
                    "summary": "The subscribers with the most octets (input + output) in a period, most first (permission sessions.view; resellers: their subscribers only)",
                    "parameters": top_params(),
                    "responses": top_responses()
                }
            },
            "/api/nas": {
                "get": {
                    "summary": "Every NAS's health (permission nas.view, for resellers too): the nas rows, then the addresses this node has figures for that no row names (id null)",
                    "responses": nas_responses(false)
                }
            },
            "/api/nas/{id}": {
                "get": {
                    "summary": "One nas row's health (permission nas.view)",
                    "parameters": [ { "name": "id", "in": "path", "required": true, "schema": { "type": "integer", "format": "int64" } } ],
                    "responses": nas_responses(true)
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": { "200": ok_json("OpenAPI 3 document", json!({ "type": "object" })) }
                }
            },
            "/healthz": health("Liveness: the process answers"),
            "/readyz": health("Readiness: index loaded and following SQL (on PostgreSQL: the change listener connected and reconciled), commits going through, database reachable; the body names the node")
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "HS256 (or the configured RS256/ES256); exp required; nbf, when present, must not be in the future (both with api.jwt_leeway_secs of leeway). Claims: sub, exp, role (admin | reseller), reseller_id (resellers), permissions (list)."
                }
            },
            "schemas": {
                "Session": { "type": "object", "required": FIELDS, "properties": session_props },
                "Action": action_schema(),
                "Nas": nas_schema(),
                "AttributedSession": attributed_session_schema(&session_props),
                "Octets": {
                    "type": "object",
                    "required": ["input_octets", "output_octets", "octets"],
                    "properties": {
                        "input_octets": { "type": "integer", "format": "int64" },
                        "output_octets": { "type": "integer", "format": "int64" },
                        "octets": { "type": "integer", "format": "int64", "description": "input + output" }
                    }
                },
                "Pagination": {
                    "type": "object",
                    "required": ["page", "limit", "total"],
                    "properties": {
                        "page": { "type": "integer" },
                        "limit": { "type": "integer" },
                        "total": { "type": "integer", "description": "Number of matches" }
                    }
                },
                "Error": {
                    "type": "object",
                    "required": ["success", "message"],
                    "properties": { "success": { "const": false }, "message": { "type": "string" } }
                }
            }
        }
    });
    doc["paths"]["/api/attribution"] = attribution_path();
    doc["paths"]["/api/attribution/audit"] = attribution_audit_path();
    doc["paths"]["/api/events"] = events_path();
    doc["components"]["schemas"]["Event"] = event_schema();
    doc
}

/// `GET /api/events` (api::events): a `text/event-stream`.
fn events_path() -> Value {
    use crate::api::events::{LAST_EVENT_ID, LAST_EVENT_ID_PARAM};
    use crate::events::EventType;
    let types: Vec<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
    let mut responses = common_errors(true);
    responses.insert(
        "400".into(),
        error_response("The message names the parameter: `invalid types, unknown event type \"x\" (allowed: …)`, `invalid nas_id, must be an integer`, `invalid Last-Event-ID, must be an event id (an integer >= 0)`, `invalid Last-Event-ID, after the last event id (N)` (`invalid last_event_id, …` when the query parameter carried it)"),
    );
    responses.insert(
        "403".into(),
        error_response("`events.view denied`: the token lacks the permission"),
    );
    responses.insert(
        "503".into(),
        error_response("`event stream not ready` (the node has not read the outbox yet; `Retry-After: 5`), `too many event streams, try again later` (`events.max_clients` streams open on this node; `Retry-After: 5`), `database unavailable`"),
    );
    responses.insert(
        "200".into(),
        json!({
            "description": "Server-Sent Events, until the client goes. Each event: `id: <id>`, `event: <type>`, `data: <Event as JSON, one line>`, then a blank line. `event: events.lost` with `data: {\"from\": a, \"to\": b}` and `id: b` says the events a to b were deleted before this stream could send them. A `: heartbeat` comment every `events.heartbeat_secs` while idle. A client more than `events.client_buffer` events behind is disconnected; it resumes with `Last-Event-ID`. docs/EVENTS.md",
            "content": { "text/event-stream": { "schema": { "type": "string" } } }
        }),
    );
    json!({
        "get": {
            "summary": "The session events as Server-Sent Events (permission events.view; a reseller sees its subtree's subscribers' events and no nas.rebooted)",
            "parameters": [
                {
                    "name": LAST_EVENT_ID,
                    "in": "header",
                    "required": false,
                    "description": "Resume after this event id (what an EventSource sends when it reconnects). Without it (and without last_event_id) the stream starts with the next event. An id older than the oldest retained starts with `events.lost`",
                    "schema": { "type": "integer", "format": "int64", "minimum": 0 }
                },
                param(LAST_EVENT_ID_PARAM, "The same as the Last-Event-ID header, for clients that cannot set headers; the header wins when both are given", json!({ "type": "integer", "format": "int64", "minimum": 0 })),
                param("types", "Only these event types, comma-separated", json!({ "type": "string", "description": format!("Comma-separated, each one of: {}", types.join(", ")) })),
                param("nas_id", "Only events of the NAS with this `nas.id` (an id that names no NAS matches nothing)", json!({ "type": "integer", "format": "int64" })),
            ],
            "responses": responses
        }
    })
}

/// One event as the stream's `data:` (and a webhook batch) carries it
/// (`events::StoredEvent::to_json`).
fn event_schema() -> Value {
    use crate::events::EventType;
    let types: Vec<&str> = EventType::ALL.iter().map(|t| t.name()).collect();
    json!({
        "type": "object",
        "required": ["id", "type", "time", "username", "nas", "radacctid", "acctuniqueid", "data"],
        "properties": {
            "id": { "type": "integer", "format": "int64", "description": "Monotonic without gaps, in commit order; the SSE id" },
            "type": { "type": "string", "enum": types },
            "time": { "type": ["string", "null"], "format": "date-time", "description": "When the change happened (RFC 3339, UTC)" },
            "username": { "type": ["string", "null"] },
            "nas": { "type": ["string", "null"], "description": "The NAS address" },
            "radacctid": { "type": ["integer", "null"], "format": "int64" },
            "acctuniqueid": { "type": ["string", "null"] },
            "data": { "type": "object", "description": "The type's own fields (docs/EVENTS.md#types)" }
        }
    })
}

/// A required query parameter.
fn required_param(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": true, "description": description, "schema": schema })
}

/// `GET /api/attribution` (api::attribution).
fn attribution_path() -> Value {
    let mut responses = common_errors(true);
    responses.insert(
        "403".into(),
        error_response("`sessions.attribution denied`: the token lacks the permission"),
    );
    responses.insert(
        "200".into(),
        ok_json(
            "The sessions that held the address (or a block overlapping the one asked about) at some moment of `at` ± `window`, live and archived, in the caller's scope, by start time. The query is in the audit before this answer is sent.",
            json!({
                "type": "object",
                "required": ["success", "query", "data", "truncated"],
                "properties": {
                    "success": { "const": true },
                    "query": {
                        "type": "object",
                        "description": "What was asked, as understood: `ip` with host bits cleared (an IPv4-mapped IPv6 address as its IPv4 address), `at` in UTC",
                        "properties": {
                            "ip": { "type": "string" },
                            "at": { "type": "string", "format": "date-time" },
                            "window": { "type": "integer" }
                        }
                    },
                    "data": { "type": "array", "items": { "$ref": "#/components/schemas/AttributedSession" } },
                    "truncated": { "type": "boolean", "description": "More sessions matched than `limit`" }
                }
            }),
        ),
    );
    json!({
        "get": {
            "summary": "Who had this address at that time? Sessions in radacct and radacct_archive whose framedipaddress (IPv4) or framedipv6address / framedipv6prefix / delegatedipv6prefix (IPv6) overlaps `ip`, open at `at` (start <= at + window, and stop >= at - window or still open). Permission sessions.attribution; resellers see their subtree unless sessions.view_all. Every query is audited.",
            "parameters": [
                required_param("ip", "An IPv4 or IPv6 address, or a block addr/len (a block matches sessions whose address or prefix overlaps it); `::ffff:a.b.c.d` is the IPv4 address a.b.c.d", json!({ "type": "string" })),
                required_param("at", "The moment: RFC 3339 with its offset (`Z` or `+03:00`; a `+` sent unencoded is accepted); fractions of a second are dropped", json!({ "type": "string", "format": "date-time" })),
                param("window", "Seconds of clock skew allowed on each side of `at`", json!({ "type": "integer", "minimum": 0, "maximum": MAX_WINDOW_SECS, "default": 0 })),
                param("limit", "Most sessions in the answer", json!({ "type": "integer", "minimum": 1, "maximum": MAX_ATTRIBUTION_LIMIT, "default": DEFAULT_ATTRIBUTION_LIMIT })),
            ],
            "responses": responses
        }
    })
}

fn tz_param() -> Value {
    param(
        "tz",
        "Time zone days and months are counted in: an IANA name (Europe/Berlin), UTC, local or +HH:MM. Default: usage.time_zone. Times in the answer carry this zone's offset",
        json!({ "type": "string" }),
    )
}

fn usage_params() -> Vec<Value> {
    vec![
        json!({ "name": "username", "in": "path", "required": true, "schema": { "type": "string" } }),
        param(
            "from",
            "Start: RFC 3339, or YYYY-MM-DD (local midnight in tz); rounded down to the hour. Default: the start of the current billing month",
            json!({ "type": "string" }),
        ),
        param(
            "to",
            &format!(
                "End (exclusive): RFC 3339 or YYYY-MM-DD; rounded up to the hour; at most {MAX_SPAN_DAYS} days after from. Default: now"
            ),
            json!({ "type": "string" }),
        ),
        param(
            "granularity",
            "hour (the ledger's UTC hours), day (local days: 23 or 25 hours across a DST change) or month (billing months from usage.billing_day)",
            json!({ "type": "string", "enum": ["hour", "day", "month"], "default": "day" }),
        ),
        tz_param(),
    ]
}

fn top_params() -> Vec<Value> {
    vec![
        param(
            "period",
            "today and yesterday (local days), this_month and last_month (billing months)",
            json!({ "type": "string", "enum": TOP_PERIODS, "default": "this_month" }),
        ),
        param(
            "limit",
            "How many subscribers",
            json!({ "type": "integer", "minimum": 1, "maximum": MAX_TOP, "default": 10 }),
        ),
        tz_param(),
    ]
}

fn usage_errors() -> Map<String, Value> {
    let mut m = common_errors(true);
    m.insert(
        "400".into(),
        error_response("Invalid query parameter; the message names it (e.g. `invalid granularity, must be hour, day or month`, `invalid tz, unknown time zone …`)"),
    );
    m
}

fn usage_responses() -> Map<String, Value> {
    let mut m = usage_errors();
    m.insert(
        "403".into(),
        error_response("`sessions.view denied`, or `not authorized`: the subscriber is outside the caller's scope"),
    );
    let octets = json!({ "$ref": "#/components/schemas/Octets" });
    let bucket = json!({
        "allOf": [octets, { "type": "object", "required": ["start"], "properties": { "start": { "type": "string", "format": "date-time" } } }]
    });
    let fair_use = json!({
        "type": ["object", "null"],
        "description": "null when no fair-use policy applies",
        "properties": {
            "policy": { "type": "string" },
            "period": { "type": "string", "enum": ["day", "month"] },
            "period_start": { "type": "string", "format": "date-time" },
            "period_end": { "type": "string", "format": "date-time" },
            "used_bytes": { "type": "integer", "format": "int64", "description": "Input + output octets in the current period" },
            "threshold_bytes": { "type": "integer", "format": "int64" },
            "throttled": { "type": "boolean" },
            "throttled_since": { "type": ["string", "null"], "format": "date-time" },
            "throttled_period_end": { "type": ["string", "null"], "format": "date-time", "description": "When the reset restores the rate" },
            "rate": { "type": ["string", "null"], "description": "The Mikrotik-Rate-Limit applied while throttled" },
            "restore_rate": { "type": "string" }
        }
    });
    m.insert(
        "200".into(),
        ok_json(
            "OK; buckets without usage are left out",
            json!({ "type": "object", "properties": { "success": { "const": true }, "data": {
                "type": "object",
                "properties": {
                    "username": { "type": "string" },
                    "tz": { "type": "string" },
                    "granularity": { "type": "string" },
                    "from": { "type": "string", "format": "date-time" },
                    "to": { "type": "string", "format": "date-time" },
                    "total": octets,
                    "buckets": { "type": "array", "items": bucket },
                    "fair_use": fair_use
                }
            } } }),
        ),
    );
    m
}

fn top_responses() -> Map<String, Value> {
    let mut m = usage_errors();
    let row = json!({
        "allOf": [{ "$ref": "#/components/schemas/Octets" }, { "type": "object", "required": ["username"], "properties": { "username": { "type": "string" } } }]
    });
    m.insert(
        "200".into(),
        ok_json(
            "OK",
            json!({ "type": "object", "properties": { "success": { "const": true }, "data": {
                "type": "object",
                "properties": {
                    "period": { "type": "string" },
                    "tz": { "type": "string" },
                    "from": { "type": "string", "format": "date-time" },
                    "to": { "type": "string", "format": "date-time" },
                    "subscribers": { "type": "array", "items": row }
                }
            } } }),
        ),
    );
    m
}

/// The answers of `GET /api/nas` (a list) and `GET /api/nas/{id}` (one, with its 400 and 404).
fn nas_responses(one: bool) -> Map<String, Value> {
    let mut m = common_errors(false);
    m.insert(
        "403".into(),
        error_response("`nas.view denied`: the token lacks the permission"),
    );
    let data = if one {
        json!({ "$ref": "#/components/schemas/Nas" })
    } else {
        json!({ "type": "array", "items": { "$ref": "#/components/schemas/Nas" } })
    };
    m.insert(
        "200".into(),
        ok_json(
            "OK",
            json!({ "type": "object", "properties": { "success": { "const": true }, "data": data } }),
        ),
    );
    if one {
        m.insert(
            "400".into(),
            error_response("`invalid nas id, must be an integer`"),
        );
        m.insert("404".into(), error_response("`nas not found`"));
    }
    m
}

/// One NAS as `api::nas` answers it; `health` is `nas::NasFigures`.
fn nas_schema() -> Value {
    let epoch = |d: &str| json!({ "type": ["integer", "null"], "description": d });
    let by_type = json!({ "type": "object", "description": "By status type: start, interim_update, stop, accounting_on, accounting_off, other", "additionalProperties": { "type": "integer" } });
    json!({
        "type": "object",
        "required": ["id", "nasname", "shortname", "address", "api_configured", "api_tls", "open_sessions", "health"],
        "properties": {
            "id": { "type": ["integer", "null"], "description": "The nas row's id; null for an address no row names" },
            "nasname": { "type": "string" },
            "shortname": { "type": ["string", "null"] },
            "address": { "type": ["string", "null"], "description": "The single address the row names; null for a block or a host name" },
            "api_configured": { "type": "boolean", "description": "The row has RouterOS API credentials (reconciliation and the disconnect fallback use them)" },
            "api_tls": { "type": "boolean" },
            "open_sessions": { "type": ["integer", "null"], "description": "Open sessions of the address, from the live index" },
            "health": {
                "type": ["object", "null"],
                "description": "This node's figures since its start; null when it has none for the address",
                "properties": {
                    "last_packet": epoch("Epoch seconds of the last verified Accounting-Request"),
                    "packets": by_type,
                    "packets_per_minute": by_type,
                    "interim_interval_secs": { "type": ["integer", "null"], "description": "Median interval between a session's updates seen in Interim-Updates (last 256)" },
                    "last_accounting_on": epoch("Epoch seconds"),
                    "last_accounting_off": epoch("Epoch seconds"),
                    "bad_authenticator": { "type": "integer", "description": "Requests whose Request Authenticator did not verify: a wrong secret" },
                    "coa_requests": { "type": "integer" },
                    "coa_failures": { "type": "integer", "description": "Disconnect/CoA requests without an answer" },
                    "coa_rtt_p50_ms": { "type": ["number", "null"] },
                    "coa_rtt_p99_ms": { "type": ["number", "null"] },
                    "api": { "type": ["object", "null"], "description": "The last contact with the RouterOS API: reachable, at, error" },
                    "reconcile": { "type": ["object", "null"], "description": "This node's last reconciliation with a complete answer (only the jobs leader reconciles; a follower shows null, or its last run from when it led): at, dry_run, router_sessions, open_sessions, ghosts, ghosts_closed, zombies, zombies_disconnected, mismatches, took_ms, ghost_list, zombie_list, mismatch_list (first 100 each)" }
                }
            }
        }
    })
}

/// One row of a session's action log (`api::actions::action_json`).
fn action_schema() -> Value {
    let time =
        json!({ "type": "string", "format": "date-time", "description": "RFC 3339, UTC, `Z`" });
    json!({
        "type": "object",
        "required": ["id", "radacctid", "action", "method", "outcome", "error_cause", "error_cause_name", "request", "detail", "actor", "node", "rtt_ms", "requested_at", "finished_at"],
        "properties": {
            "id": { "type": "integer", "format": "int64" },
            "radacctid": { "type": "integer", "format": "int64" },
            "action": { "type": "string", "description": "`disconnect`, `coa`, or `reconcile` (a session absent from the router's `/ppp/active`: see `outcome`)" },
            "method": { "type": "string", "description": "`coa` (a Disconnect-Request or CoA-Request), `api` (the RouterOS API) or `none` (nothing was sent)" },
            "outcome": { "type": "string", "description": "`ack`, `nak` (see `error_cause`), `timeout` (no answer), `removed` (the RouterOS API removed the session), `already_closed`, `error` (nothing could be sent), `ghost_closed` (reconciliation closed the ghost: `detail` holds the router's evidence, the stop time and `row_closed` true), `ghost_skipped` (reconciliation found a ghost but an interim or Stop reached the row first and it was left as it was: `row_closed` false)" },
            "error_cause": { "type": ["integer", "null"], "description": "The Error-Cause of a NAK, when it carried one" },
            "error_cause_name": { "type": ["string", "null"], "description": "Its dictionary name (e.g. `Missing-Attribute`); null when unknown" },
            "request": { "description": "JSON object of the attributes sent beyond the session's identification (a CoA's changes); null for a disconnect" },
            "detail": { "description": "JSON with what reproduces the answer; null when absent" },
            "actor": { "type": ["string", "null"], "description": "The API token's `sub`" },
            "node": { "type": "string", "description": "`node.name` of the node that made the attempt" },
            "rtt_ms": { "type": ["integer", "null"], "description": "Milliseconds from the start of the attempt to its outcome; null when nothing was sent" },
            "requested_at": time,
            "finished_at": time
        }
    })
}

/// `GET /api/attribution/audit` (api::attribution).
fn attribution_audit_path() -> Value {
    let mut responses = common_errors(true);
    responses.insert(
        "403".into(),
        error_response("`sessions.attribution denied`, or `attribution audit is for admins`: the token's role is not admin"),
    );
    responses.insert(
        "200".into(),
        ok_json(
            "One page of the audit, newest first",
            json!({
                "type": "object",
                "required": ["success", "data", "pagination"],
                "properties": {
                    "success": { "const": true },
                    "data": { "type": "array", "items": {
                        "type": "object",
                        "properties": {
                            "id": { "type": "integer" },
                            "actor": { "type": ["string", "null"], "description": "The token's sub, or cli:<user>" },
                            "role": { "type": "string", "enum": ["admin", "reseller", "cli"] },
                            "reseller_id": { "type": ["integer", "null"] },
                            "via": { "type": "string", "enum": ["api", "cli"] },
                            "ip": { "type": "string" },
                            "at": { "type": "string", "format": "date-time" },
                            "window": { "type": "integer" },
                            "results": { "type": "integer" },
                            "truncated": { "type": "boolean" },
                            "radacctids": { "type": "array", "items": { "type": "integer" } },
                            "node": { "type": ["string", "null"] },
                            "requested_at": { "type": "string", "format": "date-time" }
                        }
                    } },
                    "pagination": { "$ref": "#/components/schemas/Pagination" }
                }
            }),
        ),
    );
    json!({
        "get": {
            "summary": "The attribution audit: every attribution query, who asked, what, and how many sessions were answered (admins holding sessions.attribution)",
            "parameters": [
                param("page", "1-indexed page", json!({ "type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_PAGE, "default": 1 })),
                param("limit", "Rows per page", json!({ "type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT })),
            ],
            "responses": responses
        }
    })
}

/// A session of an attribution answer: the session object plus the IPv6 columns, the NAS's
/// name, where the row lives and which column held the address.
fn attributed_session_schema(session_props: &Map<String, Value>) -> Value {
    let mut props = session_props.clone();
    for name in [
        "framedipv6address",
        "framedipv6prefix",
        "delegatedipv6prefix",
        "nas_name",
    ] {
        props.insert(name.into(), json!({ "type": ["string", "null"] }));
    }
    props.insert(
        "source".into(),
        json!({ "type": "string", "enum": ["live", "archive"], "description": "radacct or radacct_archive" }),
    );
    props.insert(
        "matched".into(),
        json!({ "type": "string", "enum": ["framedipaddress", "framedipv6address", "framedipv6prefix", "delegatedipv6prefix"] }),
    );
    json!({ "type": "object", "properties": props })
}

/// The body of `POST /api/sessions/{radacctid}/coa` (api::coa).
fn coa_body() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "minProperties": 1,
        "properties": {
            "rate_limit": { "type": "string", "description": "RouterOS rate-limit syntax, sent as Mikrotik-Rate-Limit: `rx[/tx] [burst-rx[/tx] [threshold-rx[/tx] [burst-time-rx[/tx] [priority] [min-rx[/tx]]]]]`, rates with k, M or G, e.g. `10M/20M` or `2M/4M 4M/8M 1M/2M 16/16 8 1M/2M`", "example": "10M/20M" },
            "session_timeout": { "type": "integer", "minimum": 0, "maximum": 4294967295_u64, "description": "Seconds, sent as Session-Timeout" },
            "filter_id": { "type": "string", "minLength": 1, "maxLength": 253, "description": "Sent as Filter-Id" },
            "address_list": { "type": "string", "minLength": 1, "maxLength": 247, "description": "Sent as Mikrotik-Address-List" },
            "attributes": {
                "type": "array",
                "description": "Further attributes by FreeRADIUS dictionary name; only those listed in the configuration's disconnect.coa_attributes. Integer attributes take numbers (or strings of digits), text attributes strings.",
                "items": {
                    "type": "object",
                    "required": ["name", "value"],
                    "additionalProperties": false,
                    "properties": {
                        "name": { "type": "string", "example": "Idle-Timeout" },
                        "value": { "oneOf": [ { "type": "string" }, { "type": "integer", "minimum": 0 } ] }
                    }
                }
            }
        }
    })
}

/// The answers of `POST /api/sessions/{radacctid}/coa`.
fn coa_responses() -> Map<String, Value> {
    let mut r = common_errors(true);
    r.insert(
        "200".into(),
        ok_json(
            "The NAS acknowledged the change (CoA-ACK); `rtt_ms` is the round trip",
            json!({
                "type": "object",
                "required": ["success", "result", "rtt_ms"],
                "properties": {
                    "success": { "const": true },
                    "result": { "const": "ack" },
                    "rtt_ms": { "type": "integer", "minimum": 0 }
                }
            }),
        ),
    );
    r.insert("400".into(), error_response("`invalid radacctid, must be an integer`, or a bad body: the message starts with the field (`rate_limit: …`, `session_timeout: …`, `filter_id: …`, `address_list: …`, `attributes[0].name: …`, `attributes[0].value: …`, `body: …` for invalid JSON, an unknown field or nothing to change)"));
    r.insert("403".into(), error_response("`subscribers.coa denied`, or `not authorized`: the session is outside the caller's scope"));
    r.insert(
        "404".into(),
        error_response("`session not found`: no session with that radacctid"),
    );
    r.insert(
        "409".into(),
        error_response("`session is closed`: nothing was sent"),
    );
    r.insert(
        "422".into(),
        json!({
            "description": "The NAS refused the change (CoA-NAK): `NAS refused the change: Error-Cause 401 (Unsupported-Attribute)`; `error_cause` is the Error-Cause's dictionary name (null when the NAK carried none or an unknown number). The session stays open.",
            "content": { "application/json": { "schema": {
                "type": "object",
                "required": ["success", "message", "error_cause"],
                "properties": {
                    "success": { "const": false },
                    "message": { "type": "string" },
                    "error_cause": { "type": ["string", "null"], "example": "Session-Context-Not-Found" }
                }
            } } }
        }),
    );
    r.insert("503".into(), error_response("`NAS unreachable`: no valid answer to the CoA-Request within the budget (retransmissions included), or no secret known for the NAS. Also `index not ready` (see `Retry-After`), `database unavailable` or `request timed out`"));
    r
}

/// `from` and `to`: an RFC 3339 instant, a bare date (UTC midnight), or empty (absent, as
/// every empty query parameter is).
fn time_schema() -> Value {
    json!({
        "type": "string",
        "anyOf": [
            { "format": "date-time" },
            { "format": "date" },
            { "maxLength": 0 }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::params::{FIELDS, SEARCH_FORBIDDEN, forbidden_in_search};

    /// The schema of query parameter `name` of `GET path`.
    fn schema<'a>(doc: &'a Value, path: &str, name: &str) -> &'a Value {
        param_of(doc, path, name)
            .map(|p| &p["schema"])
            .unwrap_or_else(|| panic!("{path} has no parameter {name}"))
    }

    fn param_of<'a>(doc: &'a Value, path: &str, name: &str) -> Option<&'a Value> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == name)
    }

    #[test]
    fn parameters_carry_the_validators_constraints() {
        let doc = document();
        for path in ["/api/sessions", "/api/sessions/export"] {
            let search = schema(&doc, path, "search");
            assert_eq!(search["maxLength"], json!(MAX_SEARCH_CHARS), "{path}");
            assert_eq!(search["pattern"], json!(search_pattern()), "{path}");
            let nas_id = schema(&doc, path, "nas_id");
            assert_eq!(
                (&nas_id["type"], &nas_id["format"]),
                (&json!("integer"), &json!("int64")),
                "{path}"
            );
            let to = &param_of(&doc, path, "to").expect("to")["description"];
            assert!(
                to.as_str()
                    .expect("text")
                    .contains("Must not be earlier than `from`"),
                "{path}: {to}"
            );
            let sort = schema(&doc, path, "sort");
            let keys: Vec<&str> = SortKey::ALL.iter().map(|k| k.column()).collect();
            assert_eq!(sort["enum"], json!(keys), "{path}");
        }
        let page = schema(&doc, "/api/sessions", "page");
        assert_eq!(
            (&page["minimum"], &page["maximum"]),
            (&json!(1), &json!(MAX_PAGE))
        );
        let limit = schema(&doc, "/api/sessions", "limit");
        assert_eq!(
            (&limit["minimum"], &limit["maximum"]),
            (&json!(1), &json!(MAX_LIMIT))
        );
        // The export ignores page and limit: they are not among its parameters.
        for name in ["page", "limit"] {
            assert!(
                param_of(&doc, "/api/sessions/export", name).is_none(),
                "{name}"
            );
        }
        let columns = param_of(&doc, "/api/sessions/export", "columns").expect("columns");
        assert_eq!(
            (&columns["style"], &columns["explode"]),
            (&json!("form"), &json!(false))
        );
        assert_eq!(columns["schema"]["type"], json!("array"));
        assert_eq!(columns["schema"]["items"]["enum"], json!(FIELDS));
        assert_eq!(columns["schema"]["uniqueItems"], json!(true));
        assert_eq!(columns["schema"]["default"], json!(DEFAULT_COLUMNS));
        for path in [
            "/api/sessions/{radacctid}",
            "/api/sessions/{radacctid}/actions",
            "/api/sessions/{radacctid}/disconnect",
            "/api/sessions/{radacctid}/coa",
        ] {
            let op = doc["paths"][path]
                .as_object()
                .and_then(|o| o.values().next())
                .expect("operation");
            assert_eq!(op["parameters"][0]["schema"]["format"], json!("int64"));
            assert!(
                op["responses"]["400"]["description"]
                    .as_str()
                    .expect("400")
                    .contains("invalid radacctid")
            );
        }
    }

    #[test]
    fn disconnect_documents_wait_and_confirmed() {
        let doc = document();
        let op = &doc["paths"]["/api/sessions/{radacctid}/disconnect"]["post"];
        let wait = op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "wait")
            .expect("wait");
        assert_eq!(wait["in"], json!("query"));
        assert_eq!(
            (&wait["schema"]["minimum"], &wait["schema"]["maximum"]),
            (&json!(0), &json!(MAX_WAIT_SECS))
        );
        let ok = &op["responses"]["200"]["content"]["application/json"]["schema"];
        assert_eq!(ok["properties"]["confirmed"]["type"], json!("boolean"));
        assert!(
            !ok["required"]
                .as_array()
                .expect("required")
                .contains(&json!("confirmed")),
            "only with wait"
        );
        assert!(
            op["responses"]["400"]["description"]
                .as_str()
                .expect("400")
                .contains("invalid wait")
        );
    }

    #[test]
    fn search_pattern_names_every_forbidden_range() {
        let pattern = search_pattern();
        for (first, last) in SEARCH_FORBIDDEN {
            assert!(forbidden_in_search(first) && forbidden_in_search(last));
            let range = format!("\\u{:04X}-\\u{:04X}", u32::from(first), u32::from(last));
            assert!(pattern.contains(&range), "{pattern} lacks {range}");
        }
        assert!(pattern.starts_with("^[^") && pattern.ends_with("]*$"));
    }
}
