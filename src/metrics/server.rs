//! Serves `GET /metrics` (Prometheus text format 0.0.4) on a listener of its own: the
//! [`Stats`] of the instance plus the [`Live`] values its owner reads at scrape time. Knows
//! nothing of where those come from.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Live, Stats};
use crate::http::{self, HttpLimits, OnShutdown};

/// Reads the values only the application knows (index size, queue depth, journal, pool) at
/// scrape time.
pub trait LiveSource: Send + Sync + 'static {
    fn live(&self) -> Live;
}

/// What `/metrics` renders.
pub struct MetricsSource {
    stats: Arc<Stats>,
    live: Box<dyn LiveSource>,
}

impl std::fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSource").finish_non_exhaustive()
    }
}

impl MetricsSource {
    pub fn new(stats: Arc<Stats>, live: impl LiveSource) -> MetricsSource {
        MetricsSource {
            stats,
            live: Box::new(live),
        }
    }

    /// The exposition, now.
    pub fn render(&self) -> String {
        self.stats.render(&self.live.live())
    }
}

/// Serves `GET /metrics` until `stop`. A scrape in progress is simply cut at shutdown:
/// Prometheus retries.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: MetricsSource,
    limits: HttpLimits,
    stop: CancellationToken,
) {
    use axum::routing::get;
    let source = Arc::new(source);
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let source = source.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    source.render(),
                )
            }
        }),
    );
    if let Err(e) = http::serve(listener, router, limits, stop, OnShutdown::Close, "metrics").await
    {
        tracing::error!(error = %e, "/metrics listener failed");
    }
}
