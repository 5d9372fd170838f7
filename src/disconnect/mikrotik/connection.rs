//! One RouterOS API session over TCP (8728) or TLS (API-SSL, 8729): connecting, tagged
//! commands with a deadline on every read and write, the version-agnostic login, and the
//! `/ppp/active` print and remove. It never waits without a deadline; the bytes are
//! [`super::wire`]'s.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

use super::ApiError;
use super::wire::{
    MAX_WORD_LEN, Reply, ReplyKind, Response, Sentence, challenge_response, decode_sentence,
    encode_sentence,
};

/// Deadlines of an API exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiTimeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Each reply sentence and each write.
    pub reply: Duration,
    /// The whole exchange: connect, login, print, remove.
    pub total: Duration,
}

impl Default for ApiTimeouts {
    fn default() -> Self {
        ApiTimeouts {
            connect: Duration::from_secs(3),
            reply: Duration::from_secs(3),
            total: Duration::from_secs(10),
        }
    }
}

/// Login of a dedicated API user (policies `api`, `read`, `write`).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiCredentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// One API session over any byte stream. Every command carries a `.tag`, and replies with
/// another tag (left over from an abandoned command) are skipped, so replies can never be
/// matched to the wrong command.
#[derive(Debug)]
pub struct ApiConnection<S> {
    stream: S,
    buf: Vec<u8>,
    next_tag: u32,
    reply_timeout: Duration,
}

/// How the API is reached: plain TCP (RouterOS service `api`, 8728) or TLS (`api-ssl`, 8729).
#[derive(Clone)]
pub enum ApiTransport {
    Plain,
    /// TLS with the router's certificate verified against `connector`'s roots for
    /// `server_name` (an IP address or a DNS name).
    Tls {
        connector: TlsConnector,
        server_name: ServerName<'static>,
    },
}

impl fmt::Debug for ApiTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiTransport::Plain => f.write_str("Plain"),
            ApiTransport::Tls { server_name, .. } => f
                .debug_struct("Tls")
                .field("server_name", server_name)
                .finish_non_exhaustive(),
        }
    }
}

/// A TLS client that trusts the certificates of `ca_file` (PEM; a CA bundle such as Debian's
/// `/etc/ssl/certs/ca-certificates.crt`, or the operator's own CA for router certificates).
/// TLS 1.2 and 1.3 (RouterOS 6 speaks 1.2), ring as the crypto provider.
pub fn tls_connector(ca_file: &Path) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| format!("CA file {}: {e}", ca_file.display()))?;
    let mut bad = 0usize;
    for cert in certs {
        let cert = cert.map_err(|e| format!("CA file {}: {e}", ca_file.display()))?;
        if roots.add(cert).is_err() {
            bad += 1;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "CA file {}: no usable certificate ({bad} rejected)",
            ca_file.display()
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The TCP connection, within `timeouts.connect`.
async fn tcp_connect(addr: SocketAddr, timeouts: &ApiTimeouts) -> Result<TcpStream, ApiError> {
    let stream = match tokio::time::timeout(timeouts.connect, TcpStream::connect(addr)).await {
        Err(_) => return Err(ApiError::ConnectTimeout(addr)),
        Ok(Err(e)) => {
            return Err(ApiError::Connect {
                addr,
                reason: e.to_string(),
            });
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl ApiConnection<TcpStream> {
    /// Connects over plain TCP within `timeouts.connect`.
    pub async fn connect(addr: SocketAddr, timeouts: &ApiTimeouts) -> Result<Self, ApiError> {
        Ok(ApiConnection::new(
            tcp_connect(addr, timeouts).await?,
            timeouts.reply,
        ))
    }
}

impl ApiConnection<tokio_rustls::client::TlsStream<TcpStream>> {
    /// Connects and completes the TLS handshake (certificate verified for `server_name`), the
    /// TCP connect within `timeouts.connect` and the handshake within another
    /// `timeouts.connect`.
    pub async fn connect_tls(
        addr: SocketAddr,
        connector: &TlsConnector,
        server_name: ServerName<'static>,
        timeouts: &ApiTimeouts,
    ) -> Result<Self, ApiError> {
        let tcp = tcp_connect(addr, timeouts).await?;
        let stream =
            match tokio::time::timeout(timeouts.connect, connector.connect(server_name, tcp)).await
            {
                Err(_) => {
                    return Err(ApiError::Tls {
                        addr,
                        reason: "no handshake within the connect deadline".into(),
                    });
                }
                Ok(Err(e)) => {
                    return Err(ApiError::Tls {
                        addr,
                        reason: e.to_string(),
                    });
                }
                Ok(Ok(s)) => s,
            };
        Ok(ApiConnection::new(stream, timeouts.reply))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ApiConnection<S> {
    /// Wraps an established stream (plain TCP, or TLS for API-SSL).
    pub fn new(stream: S, reply_timeout: Duration) -> Self {
        ApiConnection {
            stream,
            buf: Vec::with_capacity(4096),
            next_tag: 1,
            reply_timeout,
        }
    }

    /// Writes one sentence within the reply deadline.
    pub async fn send<W: AsRef<[u8]>>(&mut self, words: &[W]) -> Result<(), ApiError> {
        let mut out = Vec::new();
        encode_sentence(words, &mut out)?;
        let deadline = Instant::now() + self.reply_timeout;
        match timeout_at(deadline, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        })
        .await
        {
            Err(_) => Err(ApiError::Timeout),
            Ok(r) => r.map_err(ApiError::from),
        }
    }

    /// Reads the next non-empty sentence within the reply deadline.
    pub async fn read_sentence(&mut self) -> Result<Sentence, ApiError> {
        let deadline = Instant::now() + self.reply_timeout;
        loop {
            if let Some((words, used)) = decode_sentence(&self.buf)? {
                self.buf.drain(..used);
                if words.is_empty() {
                    continue;
                }
                return Ok(words);
            }
            if self.buf.len() > MAX_WORD_LEN + 5 {
                return Err(ApiError::Protocol("sentence too long".into()));
            }
            let mut chunk = [0u8; 8192];
            let n = match timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(ApiError::Timeout),
                Ok(r) => r?,
            };
            if n == 0 {
                return Err(ApiError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a command (a `.tag` is added) and collects its replies up to the `!done`, skipping
    /// sentences tagged for another command. `!fatal` is an error; `!trap`s are returned in the
    /// [`Response`] (use [`Response::ok`] to turn them into an error).
    pub async fn call<W: AsRef<[u8]>>(&mut self, words: &[W]) -> Result<Response, ApiError> {
        let tag = self.next_tag.to_string();
        self.next_tag = self.next_tag.wrapping_add(1);
        let mut sentence: Vec<&[u8]> = words.iter().map(AsRef::as_ref).collect();
        let tag_word = format!(".tag={tag}");
        sentence.push(tag_word.as_bytes());
        self.send(&sentence).await?;
        let mut items = Vec::new();
        let mut traps = Vec::new();
        let mut empty = false;
        loop {
            let reply = Reply::parse(&self.read_sentence().await?)?;
            if reply.kind == ReplyKind::Fatal {
                return Err(ApiError::Fatal(reply.message()));
            }
            if reply.tag.as_deref() != Some(tag.as_str()) {
                tracing::debug!(?reply.tag, expected = %tag, "skipping a reply for another tag");
                continue;
            }
            match reply.kind {
                ReplyKind::Re => items.push(reply),
                ReplyKind::Trap => traps.push(reply),
                ReplyKind::Empty => empty = true,
                ReplyKind::Done => {
                    return Ok(Response {
                        items,
                        traps,
                        empty,
                        done: reply,
                    });
                }
                ReplyKind::Fatal => unreachable!("handled above"),
            }
        }
    }

    /// Logs in: the 6.43+ plaintext form first; when the `!done` carries `=ret=` (a pre-6.43
    /// router ignoring the password), the MD5 challenge answer. A `!done` with `=ret=` is never
    /// taken as success.
    pub async fn login(&mut self, creds: &ApiCredentials) -> Result<(), ApiError> {
        let name = format!("=name={}", creds.username);
        let password = format!("=password={}", creds.password);
        let first = self.call(&["/login", &name, &password]).await?;
        if let Some(t) = first.traps.first() {
            return Err(ApiError::LoginFailed(t.message()));
        }
        let Some(challenge) = first.done.attr("ret") else {
            return Ok(());
        };
        let response = format!(
            "=response={}",
            challenge_response(&creds.password, challenge)?
        );
        let second = self.call(&["/login", &name, &response]).await?;
        if let Some(t) = second.traps.first() {
            return Err(ApiError::LoginFailed(t.message()));
        }
        if second.done.attr("ret").is_some() {
            return Err(ApiError::LoginFailed(
                "router answered the challenge response with another challenge".into(),
            ));
        }
        Ok(())
    }

    /// `/ppp/active/print =.proplist=.id,name,address ?name=<username>`: the matching items.
    pub async fn ppp_active(&mut self, username: &str) -> Result<Vec<PppActive>, ApiError> {
        let query = format!("?name={username}");
        let r = self
            .call(&["/ppp/active/print", "=.proplist=.id,name,address", &query])
            .await?
            .ok()?;
        Ok(r.items
            .iter()
            .filter_map(|re| {
                Some(PppActive {
                    id: re.attr(".id")?.to_owned(),
                    name: re.attr("name").map(str::to_owned),
                    address: re.attr("address").map(str::to_owned),
                })
            })
            .collect())
    }

    /// `/ppp/active/print =.proplist=name,address,caller-id,session-id,uptime`, every entry of
    /// the table handed to `each` as its `!re` arrives, so that nothing but the caller's own
    /// copy is held however long the table. `Ok` only once the `!done` came without a `!trap`:
    /// a trap, a `!fatal`, a closed connection or a reply past its deadline is an error, and the
    /// entries already handed over must then be taken as an incomplete answer.
    pub async fn stream_ppp_active(
        &mut self,
        mut each: impl FnMut(PppSession),
    ) -> Result<u64, ApiError> {
        let tag = self.next_tag.to_string();
        self.next_tag = self.next_tag.wrapping_add(1);
        let tag_word = format!(".tag={tag}");
        self.send(&[
            "/ppp/active/print",
            "=.proplist=name,address,caller-id,session-id,uptime",
            tag_word.as_str(),
        ])
        .await?;
        let mut count = 0u64;
        let mut trap: Option<String> = None;
        loop {
            let reply = Reply::parse(&self.read_sentence().await?)?;
            if reply.kind == ReplyKind::Fatal {
                return Err(ApiError::Fatal(reply.message()));
            }
            if reply.tag.as_deref() != Some(tag.as_str()) {
                continue;
            }
            match reply.kind {
                ReplyKind::Re => {
                    count += 1;
                    each(PppSession::from_reply(reply));
                }
                ReplyKind::Trap => {
                    trap.get_or_insert_with(|| reply.message());
                }
                ReplyKind::Empty | ReplyKind::Fatal => {}
                ReplyKind::Done => {
                    return match trap {
                        Some(message) => Err(ApiError::Trap(message)),
                        None => Ok(count),
                    };
                }
            }
        }
    }

    /// `/ppp/active/remove =.id=<id,id,…>`.
    pub async fn remove_ppp_active(&mut self, ids: &[String]) -> Result<(), ApiError> {
        let id = format!("=.id={}", ids.join(","));
        self.call(&["/ppp/active/remove", &id]).await?.ok()?;
        Ok(())
    }
}

/// One `/ppp/active` entry as printed with `.proplist=name,address,caller-id,session-id,uptime`
/// (a property the entry lacks is `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PppSession {
    /// The PPP user name (RADIUS User-Name).
    pub name: Option<String>,
    /// The address given to the client (RADIUS Framed-IP-Address).
    pub address: Option<String>,
    /// The client's MAC for PPPoE (RADIUS Calling-Station-Id).
    pub caller_id: Option<String>,
    /// `0x` and hex digits: the session's RADIUS Acct-Session-Id
    /// (docs/reference/routeros-api.md §8).
    pub session_id: Option<String>,
    /// RouterOS duration text (`3w4d12h23m12s`).
    pub uptime: Option<String>,
}

impl PppSession {
    fn from_reply(reply: Reply) -> PppSession {
        let mut s = PppSession::default();
        for (name, value) in reply.attrs {
            let slot = match name.as_str() {
                "name" => &mut s.name,
                "address" => &mut s.address,
                "caller-id" => &mut s.caller_id,
                "session-id" => &mut s.session_id,
                "uptime" => &mut s.uptime,
                _ => continue,
            };
            *slot = Some(value);
        }
        s
    }
}

/// One `/ppp/active` item as printed with `.proplist=.id,name,address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PppActive {
    /// Opaque (`*80000123`), new on every reconnect: never cached, never parsed.
    pub id: String,
    pub name: Option<String>,
    pub address: Option<String>,
}
