//! The webhooks' HTTP client: one HTTP/1.1 connection per endpoint (plain, or TLS through
//! tokio-rustls with ring, trusting the endpoint's CA bundle), kept open between POSTs and
//! opened again after any failure. It sends one POST at a time and says how it went; retries
//! and backoff are the delivery loop's, and it never follows redirects.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::config::WebhookConfig;

/// Response bodies are read (so the connection can be used again) up to this size; a longer
/// one is dropped with its connection.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Where an endpoint's POSTs go, from its URL.
#[derive(Debug, Clone)]
struct Target {
    /// Host name or address, without an IPv6 literal's brackets.
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority.
    authority: HeaderValue,
    /// The request target: path and query.
    path: String,
    /// `Some` for `https`: the name the certificate must carry.
    tls_name: Option<ServerName<'static>>,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("url {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("url {url:?}: the scheme must be http or https")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("url {url:?}: no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "url {url:?}: credentials in the URL are not supported (the signature \
                 authenticates radacctd; put a token in the path or query if the receiver wants one)"
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls_name = match https {
            true => {
                Some(ServerName::try_from(host.clone()).map_err(|e| format!("url {url:?}: {e}"))?)
            }
            false => None,
        };
        Ok(Target {
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|e| format!("url {url:?}: {e}"))?,
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            host,
            tls_name,
        })
    }
}

/// Why a POST failed (the `outcome` label of the deliveries counter, with details for the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The endpoint answered, but not 2xx.
    #[error("answered HTTP {0}")]
    Http(u16),
    /// No complete answer within `timeout_secs` (connecting included).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, the TLS handshake, or the exchange failed.
    #[error("{0}")]
    Connect(String),
}

impl Failure {
    /// The `outcome` label.
    pub fn outcome(&self) -> &'static str {
        match self {
            Failure::Http(_) => "http_error",
            Failure::Timeout(_) => "timeout",
            Failure::Connect(_) => "connect_error",
        }
    }
}

/// One POST: the headers besides `Host`, `Content-Type`, `User-Agent` and `Content-Length`,
/// and the body.
#[derive(Debug, Clone)]
pub struct Post {
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// An endpoint's connection, opened when needed.
pub struct Client {
    target: Target,
    tls: Option<TlsConnector>,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("target", &self.target)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The client of `endpoint`. An `https` URL reads the CA bundle `ca_file` now, so a
    /// missing or unreadable bundle fails start-up rather than every delivery.
    pub fn new(endpoint: &WebhookConfig) -> Result<Client, String> {
        let target = Target::parse(&endpoint.url)?;
        let tls = match target.tls_name {
            Some(_) => Some(crate::disconnect::mikrotik::tls_connector(
                &endpoint.ca_file,
            )?),
            None => None,
        };
        Ok(Client {
            target,
            tls,
            timeout: Duration::from_secs(endpoint.timeout_secs),
            conn: None,
        })
    }

    /// The same client without its connection (each delivery task opens its own).
    pub fn unconnected(&self) -> Client {
        Client {
            target: self.target.clone(),
            tls: self.tls.clone(),
            timeout: self.timeout,
            conn: None,
        }
    }

    /// POSTs `post` and reads the answer, all within the endpoint's timeout. `Ok`: a 2xx
    /// status. On any failure the connection is dropped, so the next POST starts afresh.
    pub async fn post(&mut self, post: &Post) -> Result<u16, Failure> {
        let result = match tokio::time::timeout(self.timeout, self.exchange(post)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout(self.timeout)),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Sends on the open connection when there is one; a connection the server closed while
    /// idle (keep-alive ended) is not a failure of the endpoint, so the POST goes once more on
    /// a new connection. Delivery is at least once: a receiver that did get the first try
    /// sees the batch twice.
    async fn exchange(&mut self, post: &Post) -> Result<u16, Failure> {
        if let Some(mut conn) = self.conn.take()
            && conn.ready().await.is_ok()
        {
            match self.send(&mut conn, post).await {
                Ok(status) => return self.finish(conn, status),
                Err(Sent::Answered(f)) => return Err(f),
                Err(Sent::NoAnswer(e)) => {
                    tracing::debug!(error = %e, "webhook: the kept connection failed; opening a new one");
                }
            }
        }
        let mut conn = self.connect().await?;
        match self.send(&mut conn, post).await {
            Ok(status) => self.finish(conn, status),
            Err(Sent::Answered(f)) => Err(f),
            Err(Sent::NoAnswer(e)) => Err(Failure::Connect(e)),
        }
    }

    /// Keeps the connection for the next POST; a 2xx is `Ok`.
    fn finish(&mut self, conn: SendRequest<Full<Bytes>>, status: Keep) -> Result<u16, Failure> {
        if status.reusable {
            self.conn = Some(conn);
        }
        match status.code {
            200..=299 => Ok(status.code),
            code => Err(Failure::Http(code)),
        }
    }

    /// One request on `conn`, and its answer read.
    async fn send(&self, conn: &mut SendRequest<Full<Bytes>>, post: &Post) -> Result<Keep, Sent> {
        let request = self.request(post).map_err(Sent::Answered)?;
        let response = conn
            .send_request(request)
            .await
            .map_err(|e| Sent::NoAnswer(e.to_string()))?;
        let code = response.status().as_u16();
        // The body is read so the connection can carry the next POST; a body too long or
        // broken only costs the connection.
        let reusable = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
            .is_ok();
        Ok(Keep { code, reusable })
    }

    fn request(&self, post: &Post) -> Result<Request<Full<Bytes>>, Failure> {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(self.target.path.as_str())
            .header(HOST, self.target.authority.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("radacctd/", env!("CARGO_PKG_VERSION")));
        for (name, value) in &post.headers {
            b = b.header(*name, value.as_str());
        }
        b.body(Full::new(post.body.clone()))
            .map_err(|e| Failure::Connect(format!("building the request: {e}")))
    }

    /// A new connection: TCP, TLS for `https`, the HTTP/1.1 handshake.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let t = &self.target;
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| Failure::Connect(format!("connecting to {}:{}: {e}", t.host, t.port)))?;
        let _ = tcp.set_nodelay(true);
        match (&self.tls, &t.tls_name) {
            (Some(tls), Some(name)) => {
                let stream = tls
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Failure::Connect(format!("TLS with {}: {e}", t.host)))?;
                handshake(TokioIo::new(stream)).await
            }
            _ => handshake(TokioIo::new(tcp)).await,
        }
    }
}

/// A status, and whether its connection may carry the next request.
struct Keep {
    code: u16,
    reusable: bool,
}

/// How a request on a connection failed.
enum Sent {
    /// Before any answer: the connection may have been closed under us.
    NoAnswer(String),
    /// A failure that a new connection would not change.
    Answered(Failure),
}

async fn handshake<I>(io: I) -> Result<SendRequest<Full<Bytes>>, Failure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    // Header names as the documentation spells them (`X-Radacctd-Signature`), for receivers
    // that look them up by case.
    let (sender, connection) = http1::Builder::new()
        .title_case_headers(true)
        .handshake(io)
        .await
        .map_err(|e| Failure::Connect(format!("HTTP handshake: {e}")))?;
    // The connection's I/O runs beside the sender and ends when the sender is dropped (after
    // a failure, or when the delivery task stops).
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "webhook connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_path_and_tls_name() {
        let t = Target::parse("https://hooks.example.net/radacctd?token=a").expect("url");
        assert_eq!((t.host.as_str(), t.port), ("hooks.example.net", 443));
        assert_eq!(t.path, "/radacctd?token=a");
        assert_eq!(t.authority, "hooks.example.net");
        assert!(t.tls_name.is_some());
        let t = Target::parse("http://[::1]:8080").expect("url");
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(t.authority, "[::1]:8080");
        assert!(t.tls_name.is_none());
        let t = Target::parse("https://10.0.0.5:8443/in").expect("url");
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", 8443));
    }

    #[test]
    fn unusable_urls_are_refused_with_a_reason() {
        for (url, why) in [
            ("ftp://h/x", "scheme"),
            ("http://user:pw@h/x", "credentials"),
            ("/relative", "scheme"),
            ("http://exa mple/", "url"),
        ] {
            let e = Target::parse(url).expect_err(url);
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
