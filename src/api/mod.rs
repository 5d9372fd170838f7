//! The Sessions API (docs/ARCHITECTURE.md#sessions-api): an axum router over the live index (open
//! sessions) and the store (closed ones, exports), behind bearer-token auth, a per-IP rate limit, a
//! request timeout and body/URI limits. Every error is `{"success": false, "message": …}`.
//!
//! - [`auth`]: JWT verification, permissions, `radacctd token`.
//! - [`scope`]: the cached reseller tree / subscriber owners / `nas` ids (and the index's
//!   reseller resolver).
//! - [`params`]: query parameters; [`sessions`]: list, count, get; [`export`]: CSV;
//!   [`actions`]: a session's action log; [`disconnect`]; [`nas`]: each NAS's health.
//! - [`attribution`]: who had an address at a moment, and the audit of those questions.
//! - [`events`]: the session events as Server-Sent Events (from `stream::Hub`).
//! - [`ratelimit`], [`openapi`], [`error`].
//!
//! Handlers never build SQL; they call `store` with a `sessions::filter::SessionFilter`.
//!
//! "The contract" in this module's documentation is the panel's description of this API, which
//! the README's API section and, field by field, the OpenAPI document ([`openapi`]) restate.

pub mod actions;
pub mod attribution;
pub mod auth;
pub mod coa;
pub mod disconnect;
pub mod error;
pub mod events;
pub mod export;
pub mod nas;
pub mod openapi;
pub mod params;
pub mod ratelimit;
pub mod scope;
pub mod sessions;
pub mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use self::auth::Authenticator;
use self::error::{ApiError, error_body};
use self::scope::ScopeCache;
use crate::config::ApiConfig;
use crate::http::{self, HttpLimits, OnShutdown};
use crate::sessions::SessionIndex;
use crate::store::Store;

/// A served route: its method (lowercase, as OpenAPI spells it), its path template, and the
/// handler that serves it.
#[derive(Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    handler: fn() -> MethodRouter<ApiState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Every route the API serves: the router is built from this list, `/metrics` labels requests
/// by it, and the OpenAPI test checks each is documented. A new endpoint is one entry here.
/// Literal paths (`count`, `export`) come before the `{radacctid}` one.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/api/sessions",
        handler: || get(sessions::list),
    },
    Route {
        method: "get",
        path: "/api/sessions/count",
        handler: || get(sessions::count),
    },
    Route {
        method: "get",
        path: "/api/sessions/export",
        handler: || get(export::export),
    },
    Route {
        method: "get",
        path: "/api/sessions/{radacctid}",
        handler: || get(sessions::get),
    },
    Route {
        method: "get",
        path: "/api/sessions/{radacctid}/actions",
        handler: || get(actions::list),
    },
    Route {
        method: "post",
        path: "/api/sessions/{radacctid}/disconnect",
        handler: || post(disconnect::disconnect),
    },
    Route {
        method: "post",
        path: "/api/sessions/{radacctid}/coa",
        handler: || post(coa::coa),
    },
    Route {
        method: "get",
        path: "/api/subscribers/{username}/usage",
        handler: || get(usage::subscriber),
    },
    Route {
        method: "get",
        path: "/api/usage/top",
        handler: || get(usage::top),
    },
    Route {
        method: "get",
        path: "/api/nas",
        handler: || get(nas::list),
    },
    Route {
        method: "get",
        path: "/api/nas/{id}",
        handler: || get(nas::get),
    },
    Route {
        method: "get",
        path: "/api/attribution",
        handler: || get(attribution::attribution),
    },
    Route {
        method: "get",
        path: "/api/attribution/audit",
        handler: || get(attribution::audit),
    },
    Route {
        method: "get",
        path: "/api/events",
        handler: || get(events::stream),
    },
    Route {
        method: "get",
        path: "/api/openapi.json",
        handler: || get(openapi_json),
    },
    Route {
        method: "get",
        path: "/healthz",
        handler: || get(healthz),
    },
    Route {
        method: "get",
        path: "/readyz",
        handler: || get(readyz),
    },
];

/// Shared state of the handlers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    index: Arc<SessionIndex>,
    scope: Arc<ScopeCache>,
    auth: Authenticator,
    export_max_rows: u64,
    /// Database-backed list/get requests at once: with `exports`, a bounded share of the pool
    /// so that ingest always finds a connection.
    queries: Arc<Semaphore>,
    exports: Arc<Semaphore>,
    /// How long a database-backed request waits for its turn.
    queue_timeout: Duration,
    /// False while the index is not loaded (the API then answers 503 `index not ready`).
    index_ready: Arc<AtomicBool>,
    /// Whether the ingest writer's commits go through (`/readyz`).
    writer_health: Option<Arc<crate::ingest::WriterHealth>>,
    /// Cancelled at shutdown: running exports stop.
    shutdown: CancellationToken,
    /// The disconnect service (absent in API-only test setups).
    disconnector: Option<crate::disconnect::Disconnector>,
    /// Request counts and latencies by route and status.
    stats: Option<Arc<crate::metrics::Stats>>,
    /// The usage calendar (default `tz`, billing day) and the fair-use policies.
    usage: crate::usage::Policies,
    /// The node's event hub (absent in API-only test setups: `GET /api/events` answers 503).
    events: Option<crate::stream::Hub>,
}

/// What the API needs from the rest of the daemon.
#[derive(Debug, Clone)]
pub struct ApiDeps {
    pub store: Store,
    pub index: Arc<SessionIndex>,
    pub scope: Arc<ScopeCache>,
    pub index_ready: Arc<AtomicBool>,
    /// Whether the ingest writer's commits go through (absent in API-only test setups).
    pub writer_health: Option<Arc<crate::ingest::WriterHealth>>,
    /// How long a request waits for a database slot (the pool's acquire timeout).
    pub queue_timeout: Duration,
    pub disconnector: Option<crate::disconnect::Disconnector>,
    pub stats: Option<Arc<crate::metrics::Stats>>,
}

impl ApiState {
    pub fn new(
        config: &ApiConfig,
        deps: ApiDeps,
        shutdown: CancellationToken,
    ) -> anyhow::Result<ApiState> {
        Ok(ApiState {
            inner: Arc::new(Inner {
                store: deps.store,
                index: deps.index,
                scope: deps.scope,
                auth: Authenticator::from_config(config)?,
                export_max_rows: config.export_max_rows,
                queries: Arc::new(Semaphore::new(config.query_concurrency as usize)),
                exports: Arc::new(Semaphore::new(config.export_concurrency as usize)),
                queue_timeout: deps.queue_timeout,
                index_ready: deps.index_ready,
                writer_health: deps.writer_health,
                shutdown,
                disconnector: deps.disconnector,
                stats: deps.stats,
                usage: crate::usage::Policies::from_config(&crate::config::UsageConfig::default())
                    .map_err(anyhow::Error::msg)?,
                events: None,
            }),
        })
    }

    /// Counts usage in `policies`' calendar and shows their fair-use state (default: UTC, no
    /// policies). Call before the state is shared.
    pub fn with_usage(mut self, policies: crate::usage::Policies) -> ApiState {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.usage = policies;
        }
        self
    }

    /// Serves `GET /api/events` from `hub`. Call before the state is shared.
    pub fn with_events(mut self, hub: crate::stream::Hub) -> ApiState {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.events = Some(hub);
        }
        self
    }

    pub(crate) fn events(&self) -> Option<&crate::stream::Hub> {
        self.inner.events.as_ref()
    }

    pub(crate) fn usage(&self) -> &crate::usage::Policies {
        &self.inner.usage
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn index(&self) -> Arc<SessionIndex> {
        self.inner.index.clone()
    }

    pub(crate) fn scope(&self) -> &ScopeCache {
        &self.inner.scope
    }

    pub(crate) fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    pub(crate) fn export_max_rows(&self) -> u64 {
        self.inner.export_max_rows
    }

    /// This node's name (`node.name`; empty in API-only test setups without stats).
    pub(crate) fn node_name(&self) -> String {
        self.inner
            .stats
            .as_ref()
            .map(|s| s.node().name().to_owned())
            .unwrap_or_default()
    }

    /// The NAS health figures (absent in API-only test setups without stats).
    pub(crate) fn nas_health(&self) -> Option<Arc<crate::nas::NasHealth>> {
        self.inner.stats.as_deref().map(crate::nas::NasHealth::of)
    }

    pub(crate) fn disconnector(&self) -> Option<&crate::disconnect::Disconnector> {
        self.inner.disconnector.as_ref()
    }

    /// Counts a disconnect answered by the API itself (without the disconnect service).
    pub(crate) fn count_disconnect(&self, result: crate::disconnect::DisconnectResult) {
        if let Some(stats) = &self.inner.stats {
            crate::disconnect::DisconnectStats::of(stats).result(result);
        }
    }

    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.inner.shutdown.clone()
    }

    pub(crate) fn ensure_index_ready(&self) -> Result<(), ApiError> {
        if self.inner.index_ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(ApiError::Unavailable {
                message: "index not ready",
                retry_after_secs: Some(5),
            })
        }
    }

    /// A turn for a database-backed request (waits up to the pool's acquire timeout).
    pub(crate) async fn query_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        let sem = self.inner.queries.clone();
        match tokio::time::timeout(self.inner.queue_timeout, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(ApiError::Unavailable {
                message: "database busy, try again later",
                retry_after_secs: Some(1),
            }),
        }
    }

    /// A slot for an export, or 503 at once when all are taken.
    pub(crate) fn export_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.inner
            .exports
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Unavailable {
                message: "too many exports in progress, try again later",
                retry_after_secs: Some(5),
            })
    }
}

async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi::document())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "success": true, "status": "ok" }))
}

/// Ready: the index is loaded and follows SQL, commits go through and the database answers
/// (within 2 s). The body names the node.
async fn readyz(State(state): State<ApiState>) -> Response {
    if state.ensure_index_ready().is_err() {
        return error_body(StatusCode::SERVICE_UNAVAILABLE, "index not ready");
    }
    // A database can answer a ping and still not commit (a locked table, a commit waiting for
    // a synchronous replica): the writer knows.
    if state
        .inner
        .writer_health
        .as_ref()
        .is_some_and(|h| !h.committing())
    {
        return error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "database not committing: accounting goes to the journal or is not answered",
        );
    }
    let node = state.inner.stats.as_ref().map(|s| s.node().clone());
    // Behind several nodes, an index that may miss another node's commits is not ready: the
    // change listener was lost and the full reconciliation after it has not finished.
    if node.as_ref().is_some_and(|n| !n.coherent()) {
        return error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "index resynchronising: the database change listener reconnected and the index is \
             being reconciled with SQL",
        );
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store().ping()).await {
        Ok(Ok(())) => Json(json!({
            "success": true,
            "status": "ready",
            "node": node.as_ref().map(|n| n.name()),
        }))
        .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            error_body(StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
        Err(_) => error_body(StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}

/// Error responses made by layers or the router itself (404, 405, 413, timeout) get the JSON
/// error body too.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "not found",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large",
        StatusCode::URI_TOO_LONG => "URI too long",
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => "request timed out",
        s if s.is_server_error() => "internal error",
        _ => "bad request",
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = json!({ "success": false, "message": message }).to_string();
    Response::from_parts(parts, Body::from(body))
}

/// The router with every layer (outermost first: JSON errors, request id, trace, URI limit,
/// rate limit, timeout, body limit). Spawns the rate limiter's upkeep, ended by `cancel`.
pub fn router(
    state: ApiState,
    config: &ApiConfig,
    cancel: CancellationToken,
) -> anyhow::Result<Router> {
    let mut routes = Router::new();
    for r in ROUTES {
        routes = routes.route(r.path, (r.handler)());
    }
    let stats = state.inner.stats.clone();
    let routes = routes
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(config.request_timeout_secs.max(1)),
        ))
        .with_state(state);
    let routes = ratelimit::apply(routes, config, cancel)?;
    let max_uri = config.max_uri_bytes;
    Ok(routes
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| async move {
                let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
                if len > max_uri {
                    return error_body(StatusCode::URI_TOO_LONG, "URI too long");
                }
                next.run(req).await
            },
        ))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let stats = stats.clone();
                async move { record_request(stats, req, next).await }
            },
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::from_fn(json_errors)))
}

/// Counts the request by route template (a bounded set: unknown paths are `other`) and status.
async fn record_request(
    stats: Option<Arc<crate::metrics::Stats>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(stats) = stats else {
        return next.run(req).await;
    };
    let route = route_of(req.method().as_str(), req.uri().path());
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    stats.api_request(route, response.status().as_u16(), started.elapsed());
    response
}

/// The route template a path matches (segments in braces match anything), else `other`.
fn route_of(method: &str, path: &str) -> &'static str {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    for r in ROUTES {
        if !r.method.eq_ignore_ascii_case(method) {
            continue;
        }
        let want: Vec<&str> = r.path.split('/').collect();
        if want.len() == segs.len()
            && want
                .iter()
                .zip(&segs)
                .all(|(w, s)| w.starts_with('{') || w == s)
        {
            // Literal routes (count, export) win over the `{radacctid}` one: ROUTES lists them
            // first.
            return r.path;
        }
    }
    "other"
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets requests in flight
/// finish (running exports are stopped through the state's shutdown token).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    config: &ApiConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = HttpLimits {
        max_connections: config.max_connections,
        header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
    };
    http::serve(
        listener,
        router,
        limits,
        shutdown,
        OnShutdown::Finish,
        "api",
    )
    .await
}
