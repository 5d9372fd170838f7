//! Serves HTTP/1.1 on a TCP listener with the limits a listening port needs: a cap on open
//! connections, and a header-read timeout that also ends idle keep-alive connections (a
//! client that connects and sends nothing, or too slowly, holds a file descriptor and a slot
//! for that long at most). Used by the API and `/metrics`; knows nothing of routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Limits of one HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections open at once; past it, new ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A request's headers must arrive within this long after the connection opens or goes
    /// idle between two requests; else the connection is closed.
    pub header_read_timeout: Duration,
}

/// What happens to open connections when `shutdown` is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnShutdown {
    /// Requests in progress finish, idle connections close.
    Finish,
    /// Every connection is closed at once.
    Close,
}

/// How often reaching the connection cap is logged at most.
const CAP_LOG_EVERY: Duration = Duration::from_secs(60);
/// After a failed accept (out of file descriptors), the next one waits this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Closes the connection a request came on, at once, whatever it is writing: a request
/// extension (absent when a router is called without [`serve`]). A long response whose client
/// stopped reading (an event stream) uses it: hyper stops asking for the body once the socket
/// is full, so ending the body alone would leave the connection open for as long as the client
/// likes.
#[derive(Debug, Clone)]
pub struct Hangup(CancellationToken);

impl Hangup {
    /// Closes the connection (the socket is dropped; what was not sent is lost).
    pub fn now(&self) {
        self.0.cancel();
    }
}

/// Serves `router` on `listener` until `shutdown`; requests see the peer as
/// `ConnectInfo<SocketAddr>` and may close their connection through [`Hangup`]. Dropping the
/// returned future closes every connection.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    on_shutdown: OnShutdown,
    name: &'static str,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // A JoinSet: its connections end when this future is dropped (a hard stop).
    let mut connections = JoinSet::new();
    let mut cap_logged: Option<tokio::time::Instant> = None;
    loop {
        while connections.try_join_next().is_some() {}
        if slots.available_permits() == 0 && cap_logged.is_none_or(|t| t.elapsed() >= CAP_LOG_EVERY)
        {
            cap_logged = Some(tokio::time::Instant::now());
            tracing::warn!(
                server = name,
                max_connections = limits.max_connections,
                "HTTP connection limit reached; new connections wait"
            );
        }
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(server = name, error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            serve_connection(stream, peer, router, limits, shutdown, on_shutdown).await;
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
    on_shutdown: OnShutdown,
) {
    let hangup = CancellationToken::new();
    let handle = Hangup(hangup.clone());
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(handle.clone());
            tower::ServiceExt::oneshot(router.clone(), req)
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        _ = hangup.cancelled() => return,
        _ = shutdown.cancelled() => match on_shutdown {
            OnShutdown::Close => return,
            OnShutdown::Finish => {
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    r = connection => r,
                    _ = hangup.cancelled() => return,
                }
            }
        },
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}
