//! Test harness: a real, private FreeRADIUS 3.2, either with stock rlm_sql PostgreSQL
//! accounting ([`FreeRadius`]) or as the RFC 5176 side of a NAS ([`FreeRadiusNas`]), and a
//! `radclient` driver.
//!
//! Nothing from the FreeRADIUS packages is copied into the repository: the server runs on a
//! private copy of the installed `/etc/freeradius/3.0`, made in a temporary directory at test
//! time, and the schema is read from the installed package.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The installed FreeRADIUS configuration directory (Debian's `freeradius-config`).
pub const FREERADIUS_CONF_DIR: &str = "/etc/freeradius/3.0";
/// The FreeRADIUS server binary (Debian's `freeradius`).
pub const FREERADIUS_BIN: &str = "/usr/sbin/freeradius";
/// The rlm_sql PostgreSQL driver (Debian's `freeradius-postgresql`).
pub const RLM_SQL_POSTGRESQL: &str = "/usr/lib/freeradius/rlm_sql_postgresql.so";
/// The shared secret of the private server's only client, `127.0.0.1` (FreeRADIUS's convention).
pub const TEST_SECRET: &str = "testing123";
/// How long [`FreeRadius::start`] waits for "Ready to process requests".
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a PostgreSQL database is, in the terms FreeRADIUS's sql module uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// A host name or address, or a Unix socket directory (starts with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
}

impl PgTarget {
    /// Parses `postgres://user[:pass]@host[:port]/db[?host=/socket/dir&port=..&user=..&password=..&dbname=..]`
    /// (also `postgresql://`). Percent-escapes are decoded. Missing parts get libpq's defaults:
    /// host = `/var/run/postgresql`, port = 5432, user = `$USER` (else `postgres`),
    /// dbname = user. Other query parameters (`sslmode`, ...) are ignored.
    pub fn from_url(url: &str) -> anyhow::Result<PgTarget> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .with_context(|| format!("not a postgres:// URL: {url:?}"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (mut user, mut password) = (None, None);
        if let Some(userinfo) = userinfo {
            match userinfo.split_once(':') {
                Some((u, p)) => {
                    user = Some(percent_decode(u)?);
                    password = Some(percent_decode(p)?);
                }
                None => user = Some(percent_decode(userinfo)?),
            }
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .with_context(|| format!("unterminated [IPv6] host in {url:?}"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => bail!("bad host:port {hostport:?} in {url:?}"),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h)?, Some(p)),
                None => (percent_decode(hostport)?, None),
            }
        };
        let mut host = (!host.is_empty()).then_some(host);
        let mut port = match port {
            Some(p) if !p.is_empty() => Some(
                p.parse::<u16>()
                    .with_context(|| format!("bad port {p:?} in {url:?}"))?,
            ),
            _ => None,
        };
        let mut dbname = (!path.is_empty())
            .then(|| percent_decode(path))
            .transpose()?;
        for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v)?;
            match k {
                "host" => host = Some(v),
                "port" => {
                    port = Some(
                        v.parse()
                            .with_context(|| format!("bad port {v:?} in {url:?}"))?,
                    )
                }
                "user" => user = Some(v),
                "password" => password = Some(v),
                "dbname" => dbname = Some(v),
                _ => {}
            }
        }
        let user = user
            .filter(|u| !u.is_empty())
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "postgres".to_string());
        Ok(PgTarget {
            host: host.unwrap_or_else(|| "/var/run/postgresql".to_string()),
            port: port.unwrap_or(5432),
            dbname: dbname.unwrap_or_else(|| user.clone()),
            user,
            password,
        })
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, dbname: &str) -> PgTarget {
        PgTarget {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }

    /// True when `host` is a Unix socket directory.
    pub fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// A URL for this target that sqlx (and libpq) accept; a socket directory goes into `?host=`.
    pub fn to_url(&self) -> String {
        let mut url = String::from("postgres://");
        url.push_str(&percent_encode(&self.user));
        if let Some(password) = &self.password {
            url.push(':');
            url.push_str(&percent_encode(password));
        }
        url.push('@');
        if self.is_socket() {
            let _ = write!(
                url,
                "localhost:{}/{}?host={}",
                self.port,
                percent_encode(&self.dbname),
                percent_encode(&self.host)
            );
        } else if self.host.contains(':') {
            let _ = write!(
                url,
                "[{}]:{}/{}",
                self.host,
                self.port,
                percent_encode(&self.dbname)
            );
        } else {
            let _ = write!(
                url,
                "{}:{}/{}",
                self.host,
                self.port,
                percent_encode(&self.dbname)
            );
        }
        url
    }
}

fn percent_decode(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .with_context(|| format!("truncated %-escape in {s:?}"))?;
            out.push(
                u8::from_str_radix(hex, 16).with_context(|| format!("bad %-escape in {s:?}"))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).with_context(|| format!("%-escapes in {s:?} are not UTF-8"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Path of the installed FreeRADIUS PostgreSQL `schema.sql`. Load it from the package at test
/// time; never copy it into the repository. Note that it creates its indexes without
/// `IF NOT EXISTS`, so load it once per (fresh) database.
pub fn freeradius_pg_schema_path() -> PathBuf {
    Path::new(FREERADIUS_CONF_DIR).join("mods-config/sql/main/postgresql/schema.sql")
}

/// Path of the installed FreeRADIUS PostgreSQL `queries.conf` (what the private server runs).
pub fn freeradius_pg_queries_path() -> PathBuf {
    Path::new(FREERADIUS_CONF_DIR).join("mods-config/sql/main/postgresql/queries.conf")
}

/// Why a real FreeRADIUS cannot run here, or `None` when it can: the `freeradius` binary, the
/// `rlm_sql_postgresql` driver, and the configuration with the PostgreSQL schema and queries.
pub fn freeradius_unavailable_reason() -> Option<String> {
    let needed = [
        (PathBuf::from(FREERADIUS_BIN), "freeradius"),
        (PathBuf::from(RLM_SQL_POSTGRESQL), "freeradius-postgresql"),
        (
            Path::new(FREERADIUS_CONF_DIR).join("radiusd.conf"),
            "freeradius-config",
        ),
        (freeradius_pg_schema_path(), "freeradius-config"),
        (freeradius_pg_queries_path(), "freeradius-config"),
    ];
    let missing: Vec<String> = needed
        .iter()
        .filter(|(path, _)| !path.is_file())
        .map(|(path, pkg)| format!("{} (Debian package {pkg})", path.display()))
        .collect();
    (!missing.is_empty()).then(|| format!("missing {}", missing.join(", ")))
}

/// True when the `freeradius` binary, the `rlm_sql_postgresql` module and the schema are present.
pub fn freeradius_available() -> bool {
    freeradius_unavailable_reason().is_none()
}

/// The `radclient` binary (Debian's `freeradius-utils`), if installed.
pub fn radclient_path() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("radclient"))
            .find(|p| p.is_file())
    });
    from_path.or_else(|| {
        ["/usr/bin/radclient", "/usr/local/bin/radclient"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

/// True when `radclient` is installed.
pub fn radclient_available() -> bool {
    radclient_path().is_some()
}

/// A free UDP port on 127.0.0.1: bind port 0 and release it. Another process may take it before
/// it is used again; that is unlikely enough for tests.
pub fn free_udp_port() -> anyhow::Result<u16> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a UDP socket")?;
    Ok(socket.local_addr()?.port())
}

/// Why a private FreeRADIUS cannot play a NAS here, or `None` when it can: the `freeradius`
/// binary and the configuration with the `always` and `detail` modules (no SQL driver is
/// needed).
pub fn freeradius_nas_unavailable_reason() -> Option<String> {
    let needed = [
        (PathBuf::from(FREERADIUS_BIN), "freeradius"),
        (
            Path::new(FREERADIUS_CONF_DIR).join("radiusd.conf"),
            "freeradius-config",
        ),
        (
            Path::new(FREERADIUS_CONF_DIR).join("mods-available/always"),
            "freeradius-config",
        ),
        (
            Path::new(FREERADIUS_CONF_DIR).join("mods-available/detail"),
            "freeradius-config",
        ),
    ];
    let missing: Vec<String> = needed
        .iter()
        .filter(|(path, _)| !path.is_file())
        .map(|(path, pkg)| format!("{} (Debian package {pkg})", path.display()))
        .collect();
    (!missing.is_empty()).then(|| format!("missing {}", missing.join(", ")))
}

/// A running private FreeRADIUS (`freeradius -f`) that writes accounting to PostgreSQL through
/// the stock rlm_sql `queries.conf`. Killed when dropped.
#[derive(Debug)]
pub struct FreeRadius {
    /// Where it listens for Accounting-Requests (127.0.0.1, a free port).
    pub acct_addr: SocketAddr,
    /// The secret of its only client, 127.0.0.1.
    pub secret: String,
    server: Server,
}

impl FreeRadius {
    /// Starts `freeradius -f` (foreground, not `-X`) on a private copy of `/etc/freeradius/3.0`,
    /// listening for accounting on 127.0.0.1:<free port>, writing to `pg` with the stock
    /// PostgreSQL queries. Returns once the log says "Ready to process requests", or fails with
    /// the log when that does not happen within [`START_TIMEOUT`].
    ///
    /// If the port turns out to be taken between choosing and binding, it retries with another.
    pub fn start(pg: &PgTarget) -> anyhow::Result<FreeRadius> {
        if let Some(reason) = freeradius_unavailable_reason() {
            bail!("FreeRADIUS is not available: {reason}");
        }
        on_a_free_port(|port| Self::start_on(pg, port))
    }

    /// Like [`FreeRadius::start`], on the given UDP port.
    pub fn start_on(pg: &PgTarget, port: u16) -> anyhow::Result<FreeRadius> {
        let dirs = PrivateDirs::new()?;
        write_private_raddb(&dirs, TEST_SECRET)?;
        write_acct_modules_and_site(&dirs.raddb, pg, port)?;
        Ok(FreeRadius {
            acct_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            secret: TEST_SECRET.to_string(),
            server: Server::spawn(dirs)?,
        })
    }

    /// The server's log and console output, for failure messages.
    pub fn diagnostics(&self) -> String {
        self.server.diagnostics()
    }
}

/// How a [`FreeRadiusNas`] answers the requests that verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NasAnswer {
    /// CoA-ACK to a CoA-Request, Disconnect-ACK to a Disconnect-Request.
    Ack,
    /// CoA-NAK or Disconnect-NAK carrying this Error-Cause (its `recv-coa` rejects).
    Nak(u32),
}

/// A running private FreeRADIUS (`freeradius -f`) playing the RFC 5176 side of a NAS: a
/// `listen { type = coa }` virtual server on 127.0.0.1 that writes every request that verifies
/// to a `detail` file ([`FreeRadiusNas::received`]) and answers it as its [`NasAnswer`] says.
/// Requests that do not verify with the secret are dropped unanswered, and its log says so.
/// Killed when dropped.
#[derive(Debug)]
pub struct FreeRadiusNas {
    /// Where it listens for CoA-Requests and Disconnect-Requests (127.0.0.1, a free port).
    pub coa_addr: SocketAddr,
    /// The secret of its only client, 127.0.0.1.
    pub secret: String,
    /// What rlm_detail writes, one entry per request received.
    detail_file: PathBuf,
    server: Server,
}

impl FreeRadiusNas {
    /// Starts it on a private copy of `/etc/freeradius/3.0` on 127.0.0.1:<free port>, with
    /// `secret` for its only client, 127.0.0.1, ACKing every request. Returns once the log says
    /// "Ready to process requests", or fails with the log when that does not happen within
    /// [`START_TIMEOUT`].
    pub fn start(secret: &str) -> anyhow::Result<FreeRadiusNas> {
        Self::start_answering(secret, NasAnswer::Ack)
    }

    /// Like [`FreeRadiusNas::start`], answering every request with `answer`.
    pub fn start_answering(secret: &str, answer: NasAnswer) -> anyhow::Result<FreeRadiusNas> {
        if let Some(reason) = freeradius_nas_unavailable_reason() {
            bail!("FreeRADIUS is not available: {reason}");
        }
        on_a_free_port(|port| Self::start_on(secret, answer, port))
    }

    /// Like [`FreeRadiusNas::start_answering`], on the given UDP port.
    pub fn start_on(secret: &str, answer: NasAnswer, port: u16) -> anyhow::Result<FreeRadiusNas> {
        let dirs = PrivateDirs::new()?;
        write_private_raddb(&dirs, secret)?;
        let detail_file = dirs.log_dir.join("coa.detail");
        write_coa_modules_and_site(&dirs.raddb, &detail_file, answer, port)?;
        Ok(FreeRadiusNas {
            coa_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            secret: secret.to_string(),
            detail_file,
            server: Server::spawn(dirs)?,
        })
    }

    /// The requests it has received and verified so far, oldest first. Each is written before
    /// it is answered, so a request whose ACK came back is here.
    pub fn received(&self) -> Vec<DetailEntry> {
        parse_detail(&std::fs::read_to_string(&self.detail_file).unwrap_or_default())
    }

    /// The detail file as written, for failure messages.
    pub fn detail_text(&self) -> String {
        std::fs::read_to_string(&self.detail_file).unwrap_or_default()
    }

    /// The server's log (radius.log) so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// The server's log, console output and detail file, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "{}--- {} ---\n{}",
            self.server.diagnostics(),
            self.detail_file.display(),
            self.detail_text()
        )
    }
}

/// One request as FreeRADIUS's `detail` module wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetailEntry {
    /// `(name, value)` in the order written; string values without their quotes.
    pub attrs: Vec<(String, String)>,
}

impl DetailEntry {
    /// The first value of attribute `name` (a dictionary name such as `Mikrotik-Rate-Limit`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `CoA-Request` or `Disconnect-Request` (the `Packet-Type` line).
    pub fn packet_type(&self) -> Option<&str> {
        self.get("Packet-Type")
    }
}

/// Splits a detail file into entries: a header line (the time), then one tab-indented
/// `Name = value` line per attribute, then a blank line.
pub fn parse_detail(text: &str) -> Vec<DetailEntry> {
    let mut entries = Vec::new();
    let mut attrs = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !attrs.is_empty() {
                entries.push(DetailEntry {
                    attrs: std::mem::take(&mut attrs),
                });
            }
            continue;
        }
        if !line.starts_with('\t') {
            continue; // the entry's header line
        }
        if let Some((name, value)) = line.trim().split_once(" = ") {
            attrs.push((name.to_string(), unquote_detail(value)));
        }
    }
    if !attrs.is_empty() {
        entries.push(DetailEntry { attrs });
    }
    entries
}

/// A detail value as text: a quoted string loses its quotes and its `\"` / `\\` escapes.
fn unquote_detail(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('"' | '\\'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// Runs `start` on a free port, again (up to three times) when the port was taken between
/// choosing and binding it.
fn on_a_free_port<T>(mut start: impl FnMut(u16) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut last_err = None;
    for _ in 0..3 {
        let port = free_udp_port()?;
        match start(port) {
            Ok(server) => return Ok(server),
            Err(e) if format!("{e:#}").contains("Address already in use") => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.expect("loop ran"))
}

/// A temporary directory holding a private raddb, the logs and the pid file.
struct PrivateDirs {
    raddb: PathBuf,
    log_dir: PathBuf,
    run_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl PrivateDirs {
    fn new() -> anyhow::Result<PrivateDirs> {
        let dir = tempfile::Builder::new()
            .prefix("freeradius-test-")
            .tempdir()
            .context("creating a temporary directory")?;
        let log_dir = dir.path().join("log");
        let run_dir = dir.path().join("run");
        std::fs::create_dir_all(&log_dir)?;
        std::fs::create_dir_all(&run_dir)?;
        Ok(PrivateDirs {
            raddb: dir.path().join("raddb"),
            log_dir,
            run_dir,
            dir,
        })
    }
}

/// A `freeradius -f` child process on a private raddb; killed when dropped.
#[derive(Debug)]
struct Server {
    child: Option<Child>,
    /// radius.log (the server's own log).
    log_file: PathBuf,
    /// The child's stdout and stderr.
    console_file: PathBuf,
    /// Holds the private raddb, the logs and the pid file.
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `freeradius -f -d <raddb>` and waits until it is ready.
    fn spawn(dirs: PrivateDirs) -> anyhow::Result<Server> {
        let log_file = dirs.log_dir.join("radius.log");
        let console_file = dirs.dir.path().join("console.log");
        let console = std::fs::File::create(&console_file)?;
        let child = Command::new(FREERADIUS_BIN)
            .arg("-f")
            .arg("-d")
            .arg(&dirs.raddb)
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .spawn()
            .with_context(|| format!("spawning {FREERADIUS_BIN}"))?;
        let mut server = Server {
            child: Some(child),
            log_file,
            console_file,
            _dir: dirs.dir,
        };
        server.wait_ready(START_TIMEOUT)?;
        Ok(server)
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains("Ready to process requests") {
                return Ok(());
            }
            let child = self.child.as_mut().expect("child present until drop");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "freeradius exited with {status} before it was ready\n{}",
                    self.diagnostics()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "freeradius was not ready after {timeout:?}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    fn diagnostics(&self) -> String {
        let console = std::fs::read_to_string(&self.console_file).unwrap_or_default();
        format!(
            "--- {} ---\n{}--- freeradius stdout/stderr ---\n{}",
            self.log_file.display(),
            self.log(),
            console
        )
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Quotes a value as a FreeRADIUS configuration double-quoted string.
fn conf_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' | '$' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Makes `dirs.raddb` a private copy of the installed configuration, then replaces what must
/// differ: paths and privileges in radiusd.conf, and clients.conf (only 127.0.0.1, with
/// `secret`). mods-enabled/ and sites-enabled/ are left empty for the caller to fill.
fn write_private_raddb(dirs: &PrivateDirs, secret: &str) -> anyhow::Result<()> {
    let raddb = &dirs.raddb;
    // `cp -a` keeps the relative symlinks (hints, huntgroups, users, mods-enabled/*) working.
    let out = Command::new("cp")
        .arg("-a")
        .arg(FREERADIUS_CONF_DIR)
        .arg(raddb)
        .output()
        .context("running cp -a")?;
    if !out.status.success() {
        bail!(
            "cp -a {FREERADIUS_CONF_DIR} {} failed: {}",
            raddb.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // radiusd.conf: the stock file, with its paths moved into the temp dir, no user/group
    // (run as the invoking user, root in CI, without dropping privileges) and no proxying.
    let conf_path = raddb.join("radiusd.conf");
    let stock = std::fs::read_to_string(&conf_path)
        .with_context(|| format!("reading {}", conf_path.display()))?;
    let conf = rewrite_radiusd_conf(&stock, raddb, &dirs.log_dir, &dirs.run_dir)?;
    std::fs::write(&conf_path, conf)?;

    // clients.conf: only 127.0.0.1.
    std::fs::write(
        raddb.join("clients.conf"),
        format!(
            "# radacctd test harness: the only client.\n\
             client localhost {{\n\
             \tipaddr = 127.0.0.1\n\
             \tproto = *\n\
             \tsecret = {}\n\
             \trequire_message_authenticator = no\n\
             \tnas_type = other\n\
             }}\n",
            conf_quote(secret)
        ),
    )?;

    for dir in ["mods-enabled", "sites-enabled"] {
        std::fs::remove_dir_all(raddb.join(dir))?;
        std::fs::create_dir(raddb.join(dir))?;
    }
    Ok(())
}

/// The accounting server's modules and its only virtual server.
fn write_acct_modules_and_site(raddb: &Path, pg: &PgTarget, port: u16) -> anyhow::Result<()> {
    // mods-enabled: preprocess, always (for `ok`), expr (%{tolower:} in queries.conf,
    // %{md5:} in acct_unique) and sql; nothing else (no eap, detail,
    // unix, exec, realm... so that it starts quickly and writes only through rlm_sql).
    let mods_enabled = raddb.join("mods-enabled");
    for module in ["always", "expr", "preprocess"] {
        std::os::unix::fs::symlink(
            Path::new("../mods-available").join(module),
            mods_enabled.join(module),
        )?;
    }
    std::fs::write(mods_enabled.join("sql"), sql_module_conf(pg))?;
    // sites-enabled: one accounting-only virtual server.
    std::fs::write(raddb.join("sites-enabled/acct"), acct_site_conf(port))?;
    Ok(())
}

/// The NAS side's modules (always, for `ok`, and a `detail` instance writing to
/// `detail_file`) and its only virtual server.
fn write_coa_modules_and_site(
    raddb: &Path,
    detail_file: &Path,
    answer: NasAnswer,
    port: u16,
) -> anyhow::Result<()> {
    std::os::unix::fs::symlink(
        "../mods-available/always",
        raddb.join("mods-enabled/always"),
    )?;
    std::fs::write(
        raddb.join("mods-enabled/coa_detail"),
        coa_detail_module_conf(detail_file),
    )?;
    std::fs::write(raddb.join("sites-enabled/coa"), coa_site_conf(answer, port))?;
    Ok(())
}

/// Rewrites the stock radiusd.conf: `raddbdir`, `logdir`, `run_dir` into the temp dir (the pid
/// file is `${run_dir}/${name}.pid`), `user`/`group` commented out, `proxy_requests = no`,
/// `colourise = no`. Fails if a setting it must change is not found, so that a changed stock
/// file is noticed rather than silently misused.
fn rewrite_radiusd_conf(
    stock: &str,
    raddb: &Path,
    log_dir: &Path,
    run_dir: &Path,
) -> anyhow::Result<String> {
    let mut out = String::with_capacity(stock.len() + 256);
    let mut seen = std::collections::BTreeSet::new();
    out.push_str("# Private copy for the radacctd test harness (tests/it/common/freeradius.rs).\n");
    for line in stock.lines() {
        let trimmed = line.trim_start();
        let key = trimmed
            .split(|c: char| c.is_whitespace() || c == '=')
            .next()
            .unwrap_or("");
        let is_setting =
            !trimmed.starts_with('#') && trimmed[key.len()..].trim_start().starts_with('=');
        let replacement = if is_setting {
            match key {
                "raddbdir" => Some(format!("raddbdir = {}", raddb.display())),
                "logdir" => Some(format!("logdir = {}", log_dir.display())),
                "run_dir" => Some(format!("run_dir = {}", run_dir.display())),
                "user" | "group" => Some(format!("#\t{trimmed}\t# harness: run as the caller")),
                "proxy_requests" => Some("proxy_requests = no".to_string()),
                "colourise" => Some("\tcolourise = no".to_string()),
                _ => None,
            }
        } else {
            None
        };
        match replacement {
            Some(r) => {
                seen.insert(key.to_string());
                out.push_str(&r);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for key in ["raddbdir", "logdir", "run_dir", "proxy_requests"] {
        if !seen.contains(key) {
            bail!("stock radiusd.conf has no `{key} = ...` line to rewrite");
        }
    }
    Ok(out)
}

/// The sql module: rlm_sql_postgresql with the stock `queries.conf` of the installed package.
fn sql_module_conf(pg: &PgTarget) -> String {
    let password = match &pg.password {
        Some(p) => format!("\tpassword = {}\n", conf_quote(p)),
        None => String::new(),
    };
    format!(
        "# radacctd test harness: stock rlm_sql + PostgreSQL queries.conf.\n\
         sql {{\n\
         \tdialect = \"postgresql\"\n\
         \tdriver = \"rlm_sql_${{dialect}}\"\n\
         \tpostgresql {{\n\
         \t\tsend_application_name = yes\n\
         \t}}\n\
         \tserver = {server}\n\
         \tport = {port}\n\
         \tlogin = {login}\n\
         {password}\
         \tradius_db = {db}\n\
         \tacct_table1 = \"radacct\"\n\
         \tacct_table2 = \"radacct\"\n\
         \tpostauth_table = \"radpostauth\"\n\
         \tauthcheck_table = \"radcheck\"\n\
         \tgroupcheck_table = \"radgroupcheck\"\n\
         \tauthreply_table = \"radreply\"\n\
         \tgroupreply_table = \"radgroupreply\"\n\
         \tusergroup_table = \"radusergroup\"\n\
         \tdelete_stale_sessions = yes\n\
         \tpool {{\n\
         \t\tstart = 2\n\
         \t\tmin = 1\n\
         \t\tmax = ${{thread[pool].max_servers}}\n\
         \t\tspare = ${{thread[pool].max_spare_servers}}\n\
         \t\tuses = 0\n\
         \t\tretry_delay = 1\n\
         \t\tlifetime = 0\n\
         \t\tidle_timeout = 60\n\
         \t}}\n\
         \tread_clients = no\n\
         \tclient_table = \"nas\"\n\
         \tgroup_attribute = \"SQL-Group\"\n\
         \t$INCLUDE ${{modconfdir}}/${{.:name}}/main/${{dialect}}/queries.conf\n\
         }}\n",
        server = conf_quote(&pg.host),
        port = pg.port,
        login = conf_quote(&pg.user),
        db = conf_quote(&pg.dbname),
    )
}

/// The only virtual server: accounting on 127.0.0.1:<port>, realms off.
fn acct_site_conf(port: u16) -> String {
    format!(
        "# radacctd test harness: accounting only, realms off.\n\
         server default {{\n\
         listen {{\n\
         \ttype = acct\n\
         \tipaddr = 127.0.0.1\n\
         \tport = {port}\n\
         }}\n\
         \n\
         preacct {{\n\
         \tpreprocess\n\
         \tacct_unique\n\
         }}\n\
         \n\
         accounting {{\n\
         \tsql\n\
         \t# rlm_sql returns noop when its queries change no row (an Interim after the Stop,\n\
         \t# a status with no query such as Failed) and FreeRADIUS answers only ok/updated.\n\
         \t# In the stock `default` site (accounting {{ detail unix -sql exec ... }}) detail\n\
         \t# has already returned ok, so such a packet is answered; this line gives the same\n\
         \t# answers without detail. An sql fail (database down) still gets no answer.\n\
         \tif (noop) {{\n\
         \t\tok\n\
         \t}}\n\
         }}\n\
         }}\n"
    )
}

/// rlm_detail writing every request it sees, with its packet type, to `detail_file`.
fn coa_detail_module_conf(detail_file: &Path) -> String {
    format!(
        "# radacctd test harness: what the NAS side received.\n\
         detail coa_detail {{\n\
         \tfilename = {}\n\
         \tescape_filenames = no\n\
         \tpermissions = 0600\n\
         \theader = \"%t\"\n\
         \tlog_packet_header = yes\n\
         }}\n",
        conf_quote(&detail_file.display().to_string())
    )
}

/// The only virtual server: RFC 5176 on 127.0.0.1:<port>. `recv-coa` handles both
/// CoA-Request and Disconnect-Request; `ok` makes the answer an ACK of the request's kind,
/// `reject` a NAK (with the Error-Cause put in the reply).
fn coa_site_conf(answer: NasAnswer, port: u16) -> String {
    let verdict = match answer {
        NasAnswer::Ack => "\tok\n".to_string(),
        NasAnswer::Nak(cause) => format!(
            "\tupdate reply {{\n\
             \t\t&Error-Cause := {cause}\n\
             \t}}\n\
             \treject\n"
        ),
    };
    format!(
        "# radacctd test harness: the RFC 5176 side of a NAS.\n\
         server coa {{\n\
         listen {{\n\
         \ttype = coa\n\
         \tipaddr = 127.0.0.1\n\
         \tport = {port}\n\
         }}\n\
         \n\
         recv-coa {{\n\
         \tcoa_detail\n\
         {verdict}\
         }}\n\
         \n\
         send-coa {{\n\
         \tok\n\
         }}\n\
         }}\n"
    )
}

/// Options for [`radclient_with`].
#[derive(Debug, Clone)]
pub struct RadclientOpts {
    /// `-r`: retries after a timeout.
    pub retries: u32,
    /// `-t`: seconds to wait before retrying.
    pub timeout_secs: u32,
    /// `-p`: packets in flight. 1 (the default here) sends them one after another, in order.
    pub parallel: u32,
    /// `-c`: how many times each packet is sent.
    pub count: u32,
    /// The command: `acct`, `status`, `coa`, `disconnect`, `auth` or `auto`.
    pub command: String,
}

impl Default for RadclientOpts {
    fn default() -> Self {
        RadclientOpts {
            retries: 1,
            timeout_secs: 3,
            parallel: 1,
            count: 1,
            command: "acct".to_string(),
        }
    }
}

/// Runs `radclient -x -r 1 -t 3 -c 1 -p 1 <addr> acct <secret>` with `packets` on stdin
/// (radclient's attribute-list format: `Attr = value` lines, packets separated by a blank line)
/// and returns (exit status success, stdout and stderr interleaved). `-p 1` sends the packets
/// in order, each after the previous one is answered or given up. Success means every packet
/// was answered. Count answers with [`radclient_responses`].
pub fn radclient(addr: SocketAddr, secret: &str, packets: &str) -> anyhow::Result<(bool, String)> {
    radclient_with(addr, secret, packets, &RadclientOpts::default())
}

/// [`radclient`] with other options.
pub fn radclient_with(
    addr: SocketAddr,
    secret: &str,
    packets: &str,
    opts: &RadclientOpts,
) -> anyhow::Result<(bool, String)> {
    let bin = radclient_path().context("radclient is not installed (freeradius-utils)")?;
    let out_file = tempfile::NamedTempFile::new()?;
    let out = out_file.reopen()?;
    let mut child = Command::new(&bin)
        .arg("-x")
        .args(["-r", &opts.retries.to_string()])
        .args(["-t", &opts.timeout_secs.to_string()])
        .args(["-c", &opts.count.to_string()])
        .args(["-p", &opts.parallel.to_string()])
        .arg(addr.to_string())
        .arg(&opts.command)
        .arg(secret)
        .stdin(Stdio::piped())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut input = packets.to_string();
        if !input.ends_with('\n') {
            input.push('\n');
        }
        // radclient reads all of stdin before sending, so this cannot deadlock.
        stdin
            .write_all(input.as_bytes())
            .context("writing packets to radclient")?;
    }
    // Generous bound: every packet lost, with all its retries.
    let n_packets = packets
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .count()
        .max(1) as u64;
    let per_packet = u64::from(opts.timeout_secs.max(1)) * u64::from(opts.retries + 1);
    let limit = Duration::from_secs(
        30 + n_packets * per_packet * u64::from(opts.count.max(1))
            / u64::from(opts.parallel.max(1)),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    let mut raw = Vec::new();
    std::fs::File::open(out_file.path())?.read_to_end(&mut raw)?;
    output.push_str(&String::from_utf8_lossy(&raw));
    match status {
        Some(status) => Ok((status.success(), output)),
        None => bail!("radclient did not finish within {limit:?}; output so far:\n{output}"),
    }
}

/// How many responses of `code` (e.g. `Accounting-Response`) a `radclient -x` output shows.
pub fn radclient_count_received(output: &str, code: &str) -> usize {
    output
        .lines()
        .filter(|l| {
            l.trim_start()
                .strip_prefix("Received ")
                .is_some_and(|rest| rest.starts_with(code))
        })
        .count()
}

/// How many Accounting-Responses a `radclient -x` output shows.
pub fn radclient_responses(output: &str) -> usize {
    radclient_count_received(output, "Accounting-Response")
}
