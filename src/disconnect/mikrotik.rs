//! A MikroTik RouterOS API client (TCP 8728), our own: the word and sentence encoding (pure
//! functions, no I/O), a tagged connection with a deadline on every read and write, the
//! version-agnostic login, and the `/ppp/active` print-then-remove used as the disconnect
//! fallback (DESIGN §5, `reference/routeros-api.md`). It must not know about sessions or the
//! database, and must never wait without a deadline.
//!
//! API-SSL (8729) is the same protocol inside TLS ([`ApiTransport::Tls`]): the router's
//! certificate must chain to a configured CA bundle and name the address (or the configured
//! name) we connect to. RouterOS's certificate-less API-SSL (anonymous Diffie-Hellman) is
//! refused: it authenticates nobody.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

/// Longest word accepted from a router. The protocol allows 2³²−1 octets; a `/ppp/active`
/// reply never comes close, and a bound keeps a broken peer from exhausting memory.
pub const MAX_WORD_LEN: usize = 16 << 20;

/// Why the API exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The TLS handshake failed: most often the router's certificate is not trusted or does not
    /// name the address; the reason says which.
    #[error("TLS handshake with {addr}: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    #[error("no reply within the deadline")]
    Timeout,
    #[error("connection closed by the router")]
    Closed,
    #[error("i/o error: {0}")]
    Io(String),
    /// Bytes that are not a RouterOS sentence (control byte, oversized word, unknown reply).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// `!fatal`: the router closed the session, with its reason.
    #[error("router sent !fatal: {0}")]
    Fatal(String),
    #[error("login refused: {0}")]
    LoginFailed(String),
    /// `!trap` on a command, with the router's message.
    #[error("router trapped: {0}")]
    Trap(String),
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ApiError::Closed
        } else {
            ApiError::Io(e.to_string())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Words and sentences (pure)
// ---------------------------------------------------------------------------------------------

/// Appends the length prefix of a `len`-octet word: 1 to 5 octets, big-endian, the first octet
/// saying how many follow (MikroTik manual "API", word length table).
pub fn encode_length(len: u32, out: &mut Vec<u8>) {
    match len {
        0..0x80 => out.push(len as u8),
        0x80..0x4000 => out.extend_from_slice(&((len | 0x8000) as u16).to_be_bytes()),
        0x4000..0x20_0000 => out.extend_from_slice(&(len | 0xC0_0000).to_be_bytes()[1..]),
        0x20_0000..0x1000_0000 => out.extend_from_slice(&(len | 0xE000_0000).to_be_bytes()),
        _ => {
            out.push(0xF0);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// Decodes a length prefix at the start of `buf`: `Ok(None)` when more octets are needed,
/// else the length and the prefix size. A first octet ≥ 0xF8 is a reserved control byte and
/// 0xF1..=0xF7 is no valid prefix: both are errors (a client cannot go on parsing).
pub fn decode_length(buf: &[u8]) -> Result<Option<(u32, usize)>, ApiError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let (size, mask): (usize, u32) = match first {
        0x00..=0x7F => (1, 0x7F),
        0x80..=0xBF => (2, 0x3FFF),
        0xC0..=0xDF => (3, 0x1F_FFFF),
        0xE0..=0xEF => (4, 0x0FFF_FFFF),
        0xF0 => (5, u32::MAX),
        _ => {
            return Err(ApiError::Protocol(format!(
                "invalid word length prefix 0x{first:02X}"
            )));
        }
    };
    let Some(prefix) = buf.get(..size) else {
        return Ok(None);
    };
    let len = if size == 5 {
        u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]])
    } else {
        prefix
            .iter()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
            & mask
    };
    Ok(Some((len, size)))
}

/// Appends one sentence: each word length-prefixed (byte length, not characters), then the
/// empty word.
pub fn encode_sentence<W: AsRef<[u8]>>(words: &[W], out: &mut Vec<u8>) -> Result<(), ApiError> {
    for w in words {
        let w = w.as_ref();
        let len = u32::try_from(w.len())
            .map_err(|_| ApiError::Protocol("word longer than 4 GiB".into()))?;
        encode_length(len, out);
        out.extend_from_slice(w);
    }
    out.push(0);
    Ok(())
}

/// The words of one sentence, without the terminating empty word.
pub type Sentence = Vec<Vec<u8>>;

/// Parses one complete sentence from the start of `buf`: `Ok(None)` when it is not complete
/// yet, else its words (the terminating empty word excluded) and the octets it took. Empty
/// sentences are returned as an empty list (callers skip them).
pub fn decode_sentence(buf: &[u8]) -> Result<Option<(Sentence, usize)>, ApiError> {
    let mut words = Vec::new();
    let mut at = 0;
    loop {
        let Some((len, size)) = decode_length(buf.get(at..).unwrap_or_default())? else {
            return Ok(None);
        };
        let len = len as usize;
        if len > MAX_WORD_LEN {
            return Err(ApiError::Protocol(format!(
                "word of {len} octets exceeds the {MAX_WORD_LEN}-octet limit"
            )));
        }
        at += size;
        if len == 0 {
            return Ok(Some((words, at)));
        }
        let Some(word) = buf.get(at..at + len) else {
            return Ok(None);
        };
        words.push(word.to_vec());
        at += len;
    }
}

/// The kind of a reply sentence (its first word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// `!re`: one item of data.
    Re,
    /// `!done`: the last reply to a command (may carry `=ret=`).
    Done,
    /// `!trap`: an error; a `!done` still follows.
    Trap,
    /// `!fatal`: the router closes the connection; no `!done` follows.
    Fatal,
    /// `!empty`: no data (RouterOS 7.18+); a `!done` follows.
    Empty,
}

/// One reply sentence: attributes (`=name=value`) in order, the `.tag` API attribute apart,
/// and for `!fatal` its raw text word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub attrs: Vec<(String, String)>,
    pub tag: Option<String>,
    /// `!fatal`'s second word, which is raw text, not an attribute.
    pub text: Option<String>,
}

impl Reply {
    /// Parses a reply sentence. An unknown first word is a protocol error; words other than
    /// `=…` and `.tag=…` are ignored.
    pub fn parse(words: &[Vec<u8>]) -> Result<Reply, ApiError> {
        let Some((first, rest)) = words.split_first() else {
            return Err(ApiError::Protocol("empty reply sentence".into()));
        };
        let kind = match first.as_slice() {
            b"!re" => ReplyKind::Re,
            b"!done" => ReplyKind::Done,
            b"!trap" => ReplyKind::Trap,
            b"!fatal" => ReplyKind::Fatal,
            b"!empty" => ReplyKind::Empty,
            other => {
                return Err(ApiError::Protocol(format!(
                    "unexpected reply word {:?}",
                    String::from_utf8_lossy(other)
                )));
            }
        };
        let mut reply = Reply {
            kind,
            attrs: Vec::new(),
            tag: None,
            text: None,
        };
        for w in rest {
            let w = String::from_utf8_lossy(w);
            if let Some(attr) = w.strip_prefix('=') {
                // `=name=value`: the value may be empty or contain `=`; split at the first `=`.
                let (name, value) = attr.split_once('=').unwrap_or((attr, ""));
                reply.attrs.push((name.to_owned(), value.to_owned()));
            } else if let Some(tag) = w.strip_prefix(".tag=") {
                reply.tag = Some(tag.to_owned());
            } else if kind == ReplyKind::Fatal && reply.text.is_none() {
                reply.text = Some(w.into_owned());
            }
        }
        Ok(reply)
    }

    /// The first attribute of that name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `=message=` of a `!trap` (or the text of a `!fatal`), for errors and logs.
    pub fn message(&self) -> String {
        self.attr("message")
            .or(self.text.as_deref())
            .unwrap_or("(no message)")
            .to_owned()
    }
}

/// The replies to one command: its `!re` items, its `!trap`s, and the final `!done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub items: Vec<Reply>,
    pub traps: Vec<Reply>,
    /// Whether an `!empty` came before the `!done`.
    pub empty: bool,
    pub done: Reply,
}

impl Response {
    /// `Err(Trap)` with the first trap's message when the command trapped.
    pub fn ok(self) -> Result<Response, ApiError> {
        match self.traps.first() {
            Some(t) => Err(ApiError::Trap(t.message())),
            None => Ok(self),
        }
    }
}

/// The pre-6.43 challenge answer: `00` + hex(MD5(0x00 ‖ password ‖ unhex(challenge))).
pub fn challenge_response(password: &str, challenge_hex: &str) -> Result<String, ApiError> {
    let challenge = unhex(challenge_hex)
        .ok_or_else(|| ApiError::LoginFailed(format!("bad challenge {challenge_hex:?}")))?;
    let mut md5 = Md5::new();
    md5.update([0u8]);
    md5.update(password.as_bytes());
    md5.update(&challenge);
    let digest: [u8; 16] = md5.finalize().into();
    let mut out = String::with_capacity(34);
    out.push_str("00");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Connection (I/O)
// ---------------------------------------------------------------------------------------------

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

    /// `/ppp/active/remove =.id=<id,id,…>`.
    pub async fn remove_ppp_active(&mut self, ids: &[String]) -> Result<(), ApiError> {
        let id = format!("=.id={}", ids.join(","));
        self.call(&["/ppp/active/remove", &id]).await?.ok()?;
        Ok(())
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

/// What the API fallback achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiOutcome {
    /// The session was found and removed.
    Removed,
    /// The router has no such active session: it is already gone.
    NotFound,
    /// Connect, login, print or remove failed.
    Failed(String),
}

impl ApiOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            ApiOutcome::Removed => "removed",
            ApiOutcome::NotFound => "not_found",
            ApiOutcome::Failed(_) => "failed",
        }
    }
}

/// The items that are this session: `name` matched by the query; when the session's
/// Framed-IP-Address is known, an item showing another address is a different (newer) login
/// of the same user and is left alone.
fn select(items: Vec<PppActive>, username: &str, framed_ip: Option<&str>) -> Vec<String> {
    items
        .into_iter()
        .filter(|i| i.name.as_deref().is_none_or(|n| n == username))
        .filter(|i| match (framed_ip, i.address.as_deref()) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        })
        .map(|i| i.id)
        .collect()
}

/// Logs in at `addr` (over `transport`), finds the user's `/ppp/active` entry and removes it,
/// all within `timeouts.total`. A remove that traps is re-checked with a second print: if the entry has
/// vanished meanwhile (the subscriber's own disconnect), that is [`ApiOutcome::NotFound`].
pub async fn disconnect_ppp(
    addr: SocketAddr,
    transport: &ApiTransport,
    creds: &ApiCredentials,
    username: &str,
    framed_ip: Option<&str>,
    timeouts: &ApiTimeouts,
) -> ApiOutcome {
    if username.is_empty() {
        // `?name=` would select by an empty name: never what is meant.
        return ApiOutcome::Failed("the session has no User-Name to look up".into());
    }
    let work = async {
        match transport {
            ApiTransport::Plain => {
                let conn = ApiConnection::connect(addr, timeouts).await?;
                remove_session(conn, addr, creds, username, framed_ip).await
            }
            ApiTransport::Tls {
                connector,
                server_name,
            } => {
                let conn =
                    ApiConnection::connect_tls(addr, connector, server_name.clone(), timeouts)
                        .await?;
                remove_session(conn, addr, creds, username, framed_ip).await
            }
        }
    };
    match tokio::time::timeout(timeouts.total, work).await {
        Err(_) => ApiOutcome::Failed(format!(
            "no result within the {:?} API budget",
            timeouts.total
        )),
        Ok(Err(e)) => ApiOutcome::Failed(e.to_string()),
        Ok(Ok(o)) => o,
    }
}

/// Login, print, remove (and the re-check after a trapped remove) on an open connection.
async fn remove_session<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: ApiConnection<S>,
    addr: SocketAddr,
    creds: &ApiCredentials,
    username: &str,
    framed_ip: Option<&str>,
) -> Result<ApiOutcome, ApiError> {
    conn.login(creds).await?;
    let ids = select(conn.ppp_active(username).await?, username, framed_ip);
    if ids.is_empty() {
        return Ok(ApiOutcome::NotFound);
    }
    tracing::debug!(%addr, username, ?ids, "removing /ppp/active entries");
    match conn.remove_ppp_active(&ids).await {
        Ok(()) => Ok(ApiOutcome::Removed),
        Err(ApiError::Trap(msg)) => {
            let again = select(conn.ppp_active(username).await?, username, framed_ip);
            if again.is_empty() {
                Ok(ApiOutcome::NotFound)
            } else {
                Err(ApiError::Trap(msg))
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(len: u32) -> Vec<u8> {
        let mut v = Vec::new();
        encode_length(len, &mut v);
        v
    }

    #[test]
    fn length_boundaries_encode() {
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (0x7F, &[0x7F]),
            (0x80, &[0x80, 0x80]),
            (0x3FFF, &[0xBF, 0xFF]),
            (0x4000, &[0xC0, 0x40, 0x00]),
            (0x1F_FFFF, &[0xDF, 0xFF, 0xFF]),
            (0x20_0000, &[0xE0, 0x20, 0x00, 0x00]),
            (0x0FFF_FFFF, &[0xEF, 0xFF, 0xFF, 0xFF]),
            (0x1000_0000, &[0xF0, 0x10, 0x00, 0x00, 0x00]),
            (u32::MAX, &[0xF0, 0xFF, 0xFF, 0xFF, 0xFF]),
        ];
        for (len, want) in cases {
            assert_eq!(enc(*len), *want, "length {len:#x}");
        }
    }

    #[test]
    fn length_boundaries_decode_both_ways() {
        for len in [
            0,
            1,
            0x7F,
            0x80,
            0x3FFF,
            0x4000,
            0x1F_FFFF,
            0x20_0000,
            0x0FFF_FFFF,
            0x1000_0000,
            u32::MAX,
        ] {
            let bytes = enc(len);
            assert_eq!(
                decode_length(&bytes).unwrap(),
                Some((len, bytes.len())),
                "{len:#x}"
            );
            // Every strict prefix asks for more octets.
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode_length(&bytes[..cut]).unwrap(),
                    None,
                    "{len:#x} cut {cut}"
                );
            }
        }
        // Masking: the marker bits never leak into the length.
        assert_eq!(decode_length(&[0xBF, 0xFF]).unwrap(), Some((0x3FFF, 2)));
        assert_eq!(
            decode_length(&[0xDF, 0xFF, 0xFF]).unwrap(),
            Some((0x1F_FFFF, 3))
        );
    }

    #[test]
    fn control_bytes_are_errors() {
        for b in 0xF1..=0xFF {
            assert!(decode_length(&[b, 0, 0, 0, 0]).is_err(), "{b:#x}");
        }
    }

    #[test]
    fn sentence_round_trip_and_partial_input() {
        let long = "x".repeat(20_000);
        let words = ["/ppp/active/print", "=.proplist=.id,name", &long, "?name=ü"];
        let mut out = Vec::new();
        encode_sentence(&words, &mut out).unwrap();
        // UTF-8: the length is in bytes.
        assert!(out.ends_with(&[8, b'?', b'n', b'a', b'm', b'e', b'=', 0xC3, 0xBC, 0]));
        for cut in 0..out.len() {
            assert_eq!(decode_sentence(&out[..cut]).unwrap(), None, "cut {cut}");
        }
        let mut two = out.clone();
        two.extend_from_slice(&out);
        let (got, used) = decode_sentence(&two).unwrap().unwrap();
        assert_eq!(used, out.len());
        let got: Vec<String> = got
            .into_iter()
            .map(|w| String::from_utf8(w).unwrap())
            .collect();
        assert_eq!(got, words);
        assert_eq!(decode_sentence(&[0]).unwrap(), Some((vec![], 1)));
    }

    #[test]
    fn reply_parsing() {
        let w = |s: &[&str]| s.iter().map(|x| x.as_bytes().to_vec()).collect::<Vec<_>>();
        let r = Reply::parse(&w(&[
            "!re",
            "=.id=*80000123",
            "=comment=a=b",
            "=x=",
            ".tag=7",
        ]))
        .unwrap();
        assert_eq!(r.kind, ReplyKind::Re);
        assert_eq!(r.attr(".id"), Some("*80000123"));
        assert_eq!(r.attr("comment"), Some("a=b"));
        assert_eq!(r.attr("x"), Some(""));
        assert_eq!(r.tag.as_deref(), Some("7"));
        assert_eq!(r.attr("tag"), None, ".tag is not an attribute");
        let f = Reply::parse(&w(&["!fatal", "session terminated on request"])).unwrap();
        assert_eq!(f.kind, ReplyKind::Fatal);
        assert_eq!(f.message(), "session terminated on request");
        assert!(f.attrs.is_empty());
        let t = Reply::parse(&w(&["!trap", "=category=0", "=message=no such item (4)"])).unwrap();
        assert_eq!(t.message(), "no such item (4)");
        assert_eq!(
            Reply::parse(&w(&["!empty"])).unwrap().kind,
            ReplyKind::Empty
        );
        assert!(Reply::parse(&w(&["!bogus"])).is_err());
    }

    #[test]
    fn challenge_response_formula() {
        // md5(0x00 ‖ "secret" ‖ unhex(challenge)) computed independently.
        let challenge = "9f1e1c5e6a0b2b3c4d5e6f708192a3b4";
        let mut raw = vec![0u8];
        raw.extend_from_slice(b"secret");
        raw.extend_from_slice(&unhex(challenge).unwrap());
        let want: [u8; 16] = Md5::digest(&raw).into();
        let want_hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            challenge_response("secret", challenge).unwrap(),
            format!("00{want_hex}")
        );
        assert!(challenge_response("x", "abc").is_err());
        assert!(challenge_response("x", "zz").is_err());
    }

    #[test]
    fn selection_keeps_other_logins_of_the_user() {
        let item = |id: &str, addr: Option<&str>| PppActive {
            id: id.into(),
            name: Some("alice".into()),
            address: addr.map(str::to_owned),
        };
        let items = vec![
            item("*1", Some("10.0.0.1")),
            item("*2", Some("10.0.0.2")),
            item("*3", None),
        ];
        assert_eq!(
            select(items.clone(), "alice", Some("10.0.0.1")),
            vec!["*1", "*3"]
        );
        assert_eq!(select(items, "alice", None), vec!["*1", "*2", "*3"]);
    }
}
