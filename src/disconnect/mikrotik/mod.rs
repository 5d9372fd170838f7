//! A MikroTik RouterOS API client (TCP 8728), our own, and the `/ppp/active` print-then-remove
//! used as the disconnect fallback (docs/ARCHITECTURE.md#disconnect,
//! docs/reference/routeros-api.md): the policy lives here, the pure word and sentence encoding
//! in [`wire`], the tagged connection with a deadline on every read and write and the
//! version-agnostic login in [`connection`]. It must not know about sessions or the database,
//! and must never wait without a deadline.
//!
//! API-SSL (8729) is the same protocol inside TLS ([`ApiTransport::Tls`]): the router's
//! certificate must chain to a configured CA bundle and name the address (or the configured
//! name) we connect to. RouterOS's certificate-less API-SSL (anonymous Diffie-Hellman) is
//! refused: it authenticates nobody.

pub mod connection;
pub mod wire;

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

pub use connection::{
    ApiConnection, ApiCredentials, ApiTimeouts, ApiTransport, PppActive, PppSession, tls_connector,
};
pub use wire::{
    MAX_WORD_LEN, Reply, ReplyKind, Response, Sentence, challenge_response, decode_length,
    decode_sentence, encode_length, encode_sentence,
};

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

/// Logs in at `addr` (over `transport`) and streams the router's whole `/ppp/active` table to
/// `each` ([`ApiConnection::stream_ppp_active`]), all within `budget` (each reply within
/// `timeouts.reply`). `Ok` with the number of entries only when the table came complete, up
/// to its `!done`; after any error the entries handed over are a partial answer.
pub async fn print_ppp_active(
    addr: SocketAddr,
    transport: &ApiTransport,
    creds: &ApiCredentials,
    timeouts: &ApiTimeouts,
    budget: std::time::Duration,
    each: impl FnMut(PppSession),
) -> Result<u64, ApiError> {
    let work = async {
        match transport {
            ApiTransport::Plain => {
                let mut conn = ApiConnection::connect(addr, timeouts).await?;
                conn.login(creds).await?;
                conn.stream_ppp_active(each).await
            }
            ApiTransport::Tls {
                connector,
                server_name,
            } => {
                let mut conn =
                    ApiConnection::connect_tls(addr, connector, server_name.clone(), timeouts)
                        .await?;
                conn.login(creds).await?;
                conn.stream_ppp_active(each).await
            }
        }
    };
    tokio::time::timeout(budget, work)
        .await
        .unwrap_or(Err(ApiError::Timeout))
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
