//! Rate limit per client IP (docs/ARCHITECTURE.md#sessions-api): GCRA with a burst of
//! `api.rate_limit_burst`, then one request per `api.rate_limit_period_ms`, over every route. The
//! client is the TCP peer, unless the peer is a configured trusted proxy: then `X-Forwarded-For` is
//! read from the right, and the first address that is not a trusted proxy is the client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use tokio_util::sync::CancellationToken;
use tower_governor::GovernorError;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;

use super::error::error_body;
use crate::config::ApiConfig;
use crate::net::ClientAddr;

/// The rate-limit key: the client's IP address.
#[derive(Debug, Clone)]
pub struct ClientIp {
    trusted: Arc<[ClientAddr]>,
}

impl ClientIp {
    pub fn new(trusted: &[ClientAddr]) -> ClientIp {
        ClientIp {
            trusted: trusted.into(),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|t| t.contains(ip))
    }

    /// The client behind `peer` given the request's headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.is_trusted(client) {
            return client;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // Unreadable: the last hop we could read is the best we know.
                break;
            };
            client = ip.to_canonical();
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }
}

impl KeyExtractor for ClientIp {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or(GovernorError::UnableToExtractKey)?;
        Ok(self.client(peer, req.headers()))
    }
}

/// The 429 (and other limiter errors) as the API's JSON error body.
fn limit_response(e: GovernorError) -> Response<Body> {
    match e {
        GovernorError::TooManyRequests { wait_time, .. } => {
            let mut r = error_body(StatusCode::TOO_MANY_REQUESTS, "too many requests");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait_time.max(1)));
            r
        }
        GovernorError::UnableToExtractKey => {
            tracing::error!("rate limit: no peer address on the request");
            error_body(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
        GovernorError::Other { code, .. } => error_body(code, "request refused"),
    }
}

/// `router` behind the rate limit, plus a task that forgets idle clients (ends on `cancel`).
pub fn apply<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    config: &ApiConfig,
    cancel: CancellationToken,
) -> anyhow::Result<axum::Router<S>> {
    let gov = GovernorConfigBuilder::default()
        .per_millisecond(config.rate_limit_period_ms)
        .burst_size(config.rate_limit_burst)
        .key_extractor(ClientIp::new(&config.trusted_proxies))
        .finish()
        .ok_or_else(|| anyhow::anyhow!("api.rate_limit_* must be at least 1"))?;
    let limiter = gov.limiter().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => limiter.retain_recent(),
            }
        }
    });
    Ok(router.layer(GovernorLayer::new(gov).error_handler(limit_response)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let proxy: ClientAddr = "10.0.0.0/8".parse().expect("cidr");
        let ips = ClientIp::new(&[proxy]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.7, 10.1.1.1"),
        );
        let peer: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(
            ips.client(peer, &h),
            "198.51.100.7".parse::<IpAddr>().expect("ip")
        );
        let stranger: IpAddr = "203.0.113.9".parse().expect("ip");
        assert_eq!(ips.client(stranger, &h), stranger);
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("junk, 10.1.1.1"),
        );
        assert_eq!(
            ips.client(peer, &h),
            "10.1.1.1".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(ips.client(peer, &HeaderMap::new()), peer);
    }
}
