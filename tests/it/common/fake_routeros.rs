//! A test MikroTik RouterOS API server on a real TCP socket, with its own implementation of
//! the wire protocol (all five word-length forms, tags, `!re`/`!done`/`!trap`/`!fatal`/`!empty`,
//! plaintext and challenge login) and a `/ppp/active` table. It records every sentence it got.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// One `/ppp/active` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub id: String,
    pub name: String,
    pub address: String,
    /// `session-id` (`0x81A00007`), `caller-id` and `uptime`, printed when set.
    pub session_id: Option<String>,
    pub caller_id: Option<String>,
    pub uptime: Option<String>,
}

impl Active {
    pub fn new(id: &str, name: &str, address: &str) -> Active {
        Active {
            id: id.into(),
            name: name.into(),
            address: address.into(),
            session_id: None,
            caller_id: None,
            uptime: None,
        }
    }

    /// A PPPoE session as RouterOS shows it, with its session id, MAC and uptime.
    pub fn ppp(
        name: &str,
        address: &str,
        session_id: &str,
        caller_id: &str,
        uptime: &str,
    ) -> Active {
        Active {
            session_id: Some(session_id.into()),
            caller_id: Some(caller_id.into()),
            uptime: Some(uptime.into()),
            ..Active::new(
                &format!("*{}", session_id.trim_start_matches("0x")),
                name,
                address,
            )
        }
    }
}

/// How the router behaves.
#[derive(Debug, Clone)]
pub struct RosConfig {
    pub user: String,
    pub password: String,
    /// Pre-6.43: `/login` answers `!done =ret=<challenge>`; only `=response=` logs in.
    pub legacy_login: bool,
    pub active: Vec<Active>,
    /// `/ppp/active/remove` traps (`failure: …`) and removes nothing.
    pub trap_on_remove: bool,
    /// `/ppp/active/remove` traps `no such item (4)` but the entries are gone (the subscriber
    /// disconnected meanwhile).
    pub vanish_on_remove: bool,
    /// RouterOS 7.18+: `!empty` before `!done` when a print finds nothing.
    pub empty_reply: bool,
    /// Before each answer, send a `!re` tagged for another command.
    pub foreign_tag_noise: bool,
    /// Write replies a few bytes at a time.
    pub split_writes: bool,
    /// Never answer a print.
    pub hang_on_print: bool,
    /// Send this many `!re` of a print, then drop the connection (no `!done`).
    pub drop_print_after: Option<usize>,
    /// A print answers `!trap` (then `!done`) after its entries.
    pub trap_on_print: bool,
    /// A print sends its entries, then holds its `!done` until the test releases it.
    pub hold_print_done: Option<PrintHold>,
}

/// Holds a print's `!done`: [`PrintHold::sent`] returns once the entries are on the wire,
/// [`PrintHold::release`] lets the `!done` go.
#[derive(Debug, Clone, Default)]
pub struct PrintHold {
    sent: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

impl PrintHold {
    /// Waits until a print's entries have been written.
    pub async fn sent(&self) {
        self.sent.notified().await
    }

    /// Lets the held `!done` go.
    pub fn release(&self) {
        self.release.notify_one()
    }
}

impl Default for RosConfig {
    fn default() -> Self {
        RosConfig {
            user: "api".into(),
            password: "pw".into(),
            legacy_login: false,
            active: Vec::new(),
            trap_on_remove: false,
            vanish_on_remove: false,
            empty_reply: false,
            foreign_tag_noise: false,
            split_writes: false,
            hang_on_print: false,
            drop_print_after: None,
            trap_on_print: false,
            hold_print_done: None,
        }
    }
}

#[derive(Debug)]
struct State {
    config: RosConfig,
    sentences: Vec<Vec<String>>,
    connections: usize,
    tls_failures: usize,
}

/// A test router on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct FakeRouterOs {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeRouterOs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRouterOs {
    pub async fn start(config: RosConfig) -> FakeRouterOs {
        FakeRouterOs::start_with(config, None).await
    }

    /// An API-SSL router: every connection is TLS, with `acceptor`'s certificate. Failed
    /// handshakes are counted in [`FakeRouterOs::tls_failures`].
    pub async fn start_tls(config: RosConfig, acceptor: TlsAcceptor) -> FakeRouterOs {
        FakeRouterOs::start_with(config, Some(acceptor)).await
    }

    async fn start_with(config: RosConfig, tls: Option<TlsAcceptor>) -> FakeRouterOs {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind API");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            config,
            sentences: Vec::new(),
            connections: 0,
            tls_failures: 0,
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut n = 0u32;
            while let Ok((stream, _)) = listener.accept().await {
                n += 1;
                st.lock().unwrap_or_else(|e| e.into_inner()).connections += 1;
                match &tls {
                    None => {
                        tokio::spawn(connection(stream, st.clone(), n));
                    }
                    Some(acceptor) => {
                        let (acceptor, st) = (acceptor.clone(), st.clone());
                        tokio::spawn(async move {
                            match acceptor.accept(stream).await {
                                Ok(tls) => connection(tls, st, n).await,
                                Err(_) => {
                                    st.lock().unwrap_or_else(|e| e.into_inner()).tls_failures += 1;
                                }
                            }
                        });
                    }
                }
            }
        });
        FakeRouterOs { addr, state, task }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every sentence received, all connections, in order.
    pub fn sentences(&self) -> Vec<Vec<String>> {
        self.state().sentences.clone()
    }

    /// The command words received, in order.
    pub fn commands(&self) -> Vec<String> {
        self.sentences()
            .iter()
            .filter_map(|s| s.first().cloned())
            .collect()
    }

    pub fn active(&self) -> Vec<Active> {
        self.state().config.active.clone()
    }

    pub fn connections(&self) -> usize {
        self.state().connections
    }

    /// TLS handshakes that failed (API-SSL routers only).
    pub fn tls_failures(&self) -> usize {
        self.state().tls_failures
    }

    pub fn configure(&self, f: impl FnOnce(&mut RosConfig)) {
        f(&mut self.state().config)
    }
}

// --- the wire protocol, written independently of radacctd's client -------------------------

pub fn put_len(n: usize, out: &mut Vec<u8>) {
    let n = n as u64;
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x4000 {
        out.push(((n >> 8) as u8) | 0x80);
        out.push(n as u8);
    } else if n < 0x20_0000 {
        out.push(((n >> 16) as u8) | 0xC0);
        out.push((n >> 8) as u8);
        out.push(n as u8);
    } else if n < 0x1000_0000 {
        out.push(((n >> 24) as u8) | 0xE0);
        out.push((n >> 16) as u8);
        out.push((n >> 8) as u8);
        out.push(n as u8);
    } else {
        out.push(0xF0);
        out.push((n >> 24) as u8);
        out.push((n >> 16) as u8);
        out.push((n >> 8) as u8);
        out.push(n as u8);
    }
}

async fn get_len<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<usize> {
    let b0 = s.read_u8().await?;
    let (extra, first) = if b0 & 0x80 == 0 {
        (0, b0)
    } else if b0 & 0xC0 == 0x80 {
        (1, b0 & 0x3F)
    } else if b0 & 0xE0 == 0xC0 {
        (2, b0 & 0x1F)
    } else if b0 & 0xF0 == 0xE0 {
        (3, b0 & 0x0F)
    } else if b0 == 0xF0 {
        (4, 0)
    } else {
        return Err(std::io::Error::other("control byte"));
    };
    let mut n = usize::from(first);
    for _ in 0..extra {
        n = (n << 8) | usize::from(s.read_u8().await?);
    }
    Ok(n)
}

async fn read_sentence<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<String>> {
    let mut words = Vec::new();
    loop {
        let n = get_len(s).await?;
        if n == 0 {
            return Ok(words);
        }
        let mut w = vec![0u8; n];
        s.read_exact(&mut w).await?;
        words.push(String::from_utf8_lossy(&w).into_owned());
    }
}

fn sentence(words: &[String], tag: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    for w in words {
        put_len(w.len(), &mut out);
        out.extend_from_slice(w.as_bytes());
    }
    if let Some(t) = tag {
        let w = format!(".tag={t}");
        put_len(w.len(), &mut out);
        out.extend_from_slice(w.as_bytes());
    }
    out.push(0);
    out
}

async fn write_all<S: AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    split: bool,
) -> std::io::Result<()> {
    if split {
        for chunk in bytes.chunks(3) {
            s.write_all(chunk).await?;
            s.flush().await?;
            tokio::task::yield_now().await;
        }
        Ok(())
    } else {
        s.write_all(bytes).await?;
        s.flush().await
    }
}

fn w(s: &str) -> String {
    s.to_owned()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `=name=value` attributes and the `.tag` of a command.
fn attrs(words: &[String]) -> (Vec<(String, String)>, Option<String>, Vec<String>) {
    let mut attrs = Vec::new();
    let mut tag = None;
    let mut queries = Vec::new();
    for word in words.iter().skip(1) {
        if let Some(a) = word.strip_prefix('=') {
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            attrs.push((k.to_owned(), v.to_owned()));
        } else if let Some(t) = word.strip_prefix(".tag=") {
            tag = Some(t.to_owned());
        } else if let Some(q) = word.strip_prefix('?') {
            queries.push(q.to_owned());
        }
    }
    (attrs, tag, queries)
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    state: Arc<Mutex<State>>,
    conn_no: u32,
) {
    let mut logged_in = false;
    let challenge: [u8; 16] = Md5::digest(format!("challenge-{conn_no}").as_bytes()).into();
    loop {
        let Ok(words) = read_sentence(&mut s).await else {
            return;
        };
        if words.is_empty() {
            continue;
        }
        let config = {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            st.sentences.push(words.clone());
            st.config.clone()
        };
        let (attrs, tag, queries) = attrs(&words);
        let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut replies: Vec<Vec<String>> = Vec::new();
        let mut fatal = false;
        let cmd = words[0].as_str();
        match cmd {
            "/login" => {
                let ok = if config.legacy_login {
                    match get("response") {
                        None => {
                            replies.push(vec![w("!done"), format!("=ret={}", hex(&challenge))]);
                            None
                        }
                        Some(resp) => {
                            let mut h = Md5::new();
                            h.update([0u8]);
                            h.update(config.password.as_bytes());
                            h.update(challenge);
                            let want = format!("00{}", hex(&h.finalize()));
                            Some(get("name").as_deref() == Some(&config.user) && resp == want)
                        }
                    }
                } else {
                    Some(
                        get("name").as_deref() == Some(&config.user)
                            && get("password").as_deref() == Some(&config.password),
                    )
                };
                match ok {
                    None => {}
                    Some(true) => {
                        logged_in = true;
                        replies.push(vec![w("!done")]);
                    }
                    Some(false) => {
                        let msg = if config.legacy_login {
                            "=message=cannot log in"
                        } else {
                            "=message=invalid user name or password (6)"
                        };
                        replies.push(vec![w("!trap"), w(msg)]);
                        replies.push(vec![w("!done")]);
                    }
                }
            }
            "/quit" => {
                replies.push(vec![w("!fatal"), w("session terminated on request")]);
                fatal = true;
            }
            _ if !logged_in => {
                replies.push(vec![w("!fatal"), w("not logged in")]);
                fatal = true;
            }
            "/ppp/active/print" => {
                if config.hang_on_print {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let name = queries
                    .iter()
                    .find_map(|q| q.strip_prefix("name=").or_else(|| q.strip_prefix("=name=")))
                    .map(str::to_owned);
                let props: Option<Vec<String>> =
                    get(".proplist").map(|p| p.split(',').map(str::to_owned).collect());
                let want = |p: &str| props.as_ref().is_none_or(|ps| ps.iter().any(|x| x == p));
                let matches: Vec<&Active> = config
                    .active
                    .iter()
                    .filter(|a| name.as_ref().is_none_or(|n| *n == a.name))
                    .collect();
                for a in &matches {
                    let mut re = vec![w("!re")];
                    if want(".id") {
                        re.push(format!("=.id={}", a.id));
                    }
                    if want("name") {
                        re.push(format!("=name={}", a.name));
                    }
                    if want("address") {
                        re.push(format!("=address={}", a.address));
                    }
                    for (prop, value) in [
                        ("session-id", &a.session_id),
                        ("caller-id", &a.caller_id),
                        ("uptime", &a.uptime),
                    ] {
                        if let Some(v) = value.as_ref().filter(|_| want(prop)) {
                            re.push(format!("={prop}={v}"));
                        }
                    }
                    replies.push(re);
                }
                if let Some(hold) = &config.hold_print_done {
                    let entries: Vec<u8> = replies
                        .drain(..)
                        .flat_map(|r| sentence(&r, tag.as_deref()))
                        .collect();
                    if write_all(&mut s, &entries, config.split_writes)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    hold.sent.notify_one();
                    hold.release.notified().await;
                }
                if let Some(n) = config.drop_print_after {
                    replies.truncate(n);
                    fatal = true;
                } else {
                    if config.trap_on_print {
                        replies.push(vec![
                            w("!trap"),
                            w("=message=failure: not enough permissions (9)"),
                        ]);
                    }
                    if matches.is_empty() && config.empty_reply {
                        replies.push(vec![w("!empty")]);
                    }
                    replies.push(vec![w("!done")]);
                }
            }
            "/ppp/active/remove" => match get(".id") {
                None => {
                    replies.push(vec![w("!trap"), w("=message=missing =.id=")]);
                    replies.push(vec![w("!done")]);
                }
                Some(ids) => {
                    let ids: Vec<String> = ids.split(',').map(str::to_owned).collect();
                    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                    let table = &mut st.config.active;
                    let all_known = ids.iter().all(|id| table.iter().any(|a| a.id == *id));
                    if config.trap_on_remove {
                        replies.push(vec![
                            w("!trap"),
                            w("=category=4"),
                            w("=message=failure: cannot remove active connection"),
                        ]);
                    } else if config.vanish_on_remove || !all_known {
                        table.retain(|a| !ids.contains(&a.id));
                        replies.push(vec![w("!trap"), w("=message=no such item (4)")]);
                    } else {
                        table.retain(|a| !ids.contains(&a.id));
                    }
                    replies.push(vec![w("!done")]);
                }
            },
            other => {
                let part = other
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or("");
                replies.push(vec![
                    w("!trap"),
                    w("=category=0"),
                    format!("=message=no such command or directory ({part})"),
                ]);
                replies.push(vec![w("!done")]);
            }
        }
        let mut out = Vec::new();
        if config.foreign_tag_noise && !fatal {
            out.extend(sentence(&[w("!re"), w("=.id=*DEAD")], Some("999999")));
        }
        for r in &replies {
            // `!fatal` carries no tag; everything else echoes the command's.
            let t = if r[0] == "!fatal" {
                None
            } else {
                tag.as_deref()
            };
            out.extend(sentence(r, t));
        }
        if write_all(&mut s, &out, config.split_writes).await.is_err() || fatal {
            let _ = s.shutdown().await;
            return;
        }
    }
}
