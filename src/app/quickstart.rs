//! The quick start's API secret: without a config file there is no `api.jwt_secret`, so the
//! daemon and `radacctd token` share a random one kept in a file beside the SQLite database
//! (`radacctd.jwt-secret` next to `radacctd.db`), created once with mode 0600 and reused after.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::{Config, Secret};

/// What [`quickstart_api_secret`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuickstartApi {
    /// The environment configured the API's key: nothing generated.
    Configured,
    /// `api.jwt_secret` is now the secret kept in `path` (`created`: by this call).
    Generated { path: PathBuf, created: bool },
    /// `api.listen` is not a loopback address: no secret is generated for it, so no token
    /// verifies (a reachable API needs a config file with a secret of its own).
    NotLoopback,
    /// `database.url` names no SQLite file to keep the secret beside (PostgreSQL, or an
    /// in-memory SQLite): no secret is generated.
    NotSqlite,
}

/// Without a config file: gives `config.api` the quick start's secret (see the module), unless
/// the environment set a key or the API listens beyond loopback.
pub fn quickstart_api_secret(config: &mut Config) -> anyhow::Result<QuickstartApi> {
    if !config.api.jwt_secret.expose().is_empty() || config.api.jwt_public_key.is_some() {
        return Ok(QuickstartApi::Configured);
    }
    if !config.api.listen.ip().is_loopback() {
        return Ok(QuickstartApi::NotLoopback);
    }
    let Some(path) = quickstart_secret_path(config) else {
        return Ok(QuickstartApi::NotSqlite);
    };
    let (secret, created) = quickstart_secret(&path)?;
    config.api.jwt_secret = secret;
    Ok(QuickstartApi::Generated { path, created })
}

/// Where the quick start's secret lives: beside the SQLite file of `database.url`, with the
/// extension `jwt-secret`; `None` when the URL names no SQLite file.
pub fn quickstart_secret_path(config: &Config) -> Option<PathBuf> {
    let url = config.database.url.expose();
    let file = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .filter(|p| !p.is_empty() && *p != ":memory:");
    file.map(|db| Path::new(db).with_extension("jwt-secret"))
}

/// Reads the quick start's secret at `path`, creating it (32 random bytes, hex, mode 0600)
/// when it does not exist. Returns the secret and whether this call created the file.
pub fn quickstart_secret(path: &Path) -> anyhow::Result<(Secret, bool)> {
    let created = match create_secret(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let secret = text.trim();
    anyhow::ensure!(
        secret.len() >= 32,
        "{} holds no usable secret: delete it and start again",
        path.display()
    );
    Ok((Secret::new(secret), created))
}

fn create_secret(path: &Path) -> std::io::Result<()> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let written = file
        .write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_sits_beside_the_sqlite_file() {
        let mut c = Config::default();
        let path = |c: &Config| quickstart_secret_path(c);
        assert_eq!(path(&c).as_deref(), Some(Path::new("radacctd.jwt-secret")));
        c.database.url = Secret::new("sqlite:///var/lib/x/acct.sqlite?mode=rwc");
        assert_eq!(
            path(&c).as_deref(),
            Some(Path::new("/var/lib/x/acct.jwt-secret"))
        );
        c.database.url = Secret::new("sqlite::memory:");
        assert_eq!(path(&c), None);
        c.database.url = Secret::new("postgres://u@h/db");
        assert_eq!(path(&c), None);
    }

    #[test]
    fn created_once_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("radacctd.jwt-secret");
        let (first, created) = quickstart_secret(&path).expect("created");
        assert!(created);
        assert_eq!(first.expose().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, created) = quickstart_secret(&path).expect("read");
        assert!(!created);
        assert_eq!(first, again);
    }
}
