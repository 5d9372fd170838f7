//! Typed configuration: a TOML file (optional) with `RADACCTD__SECTION__KEY` environment
//! overrides, defaults for everything, unknown keys rejected, secrets hidden from `Debug`.
//! Every key is documented in `config.toml.example`.

mod events;
mod jobs;
mod service;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use events::{
    EventsConfig, FairUsePolicy, PeriodKind, UsageConfig, WebhookConfig, parse_time_zone,
};
pub use jobs::{
    DisconnectConfig, JobTimeZone, JobsConfig, NodeConfig, ReconcileConfig, ZombiePolicy,
};
pub use service::{
    ApiConfig, ClientConfig, DatabaseConfig, JournalConfig, JwtAlgorithm, LogConfig, LogFormat,
    MetricsConfig, RadiusConfig,
};

/// Environment variables with this prefix override file values: `RADACCTD__DATABASE__URL`.
pub const ENV_PREFIX: &str = "RADACCTD__";

/// A secret string: usable, never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    pub radius: RadiusConfig,
    pub api: ApiConfig,
    pub jobs: JobsConfig,
    pub journal: JournalConfig,
    pub metrics: MetricsConfig,
    pub disconnect: DisconnectConfig,
    pub reconcile: ReconcileConfig,
    pub log: LogConfig,
    pub node: NodeConfig,
    pub usage: UsageConfig,
    pub events: EventsConfig,
}

/// A configuration problem, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Config {
    /// Loads `path` (or nothing) and applies the environment overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                        origin: p.display().to_string(),
                        message: e.to_string(),
                    })?;
                (table, p.display().to_string())
            }
            None => (toml::Table::new(), "configuration".to_owned()),
        };
        let mut overridden = Vec::new();
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::Invalid {
                    origin: key.clone(),
                    message: "expected RADACCTD__SECTION__KEY".into(),
                });
            }
            set_path(&mut table, &path, env_value(&raw));
            overridden.push(key);
        }
        let origin = if overridden.is_empty() {
            origin
        } else {
            format!("{origin} (with {})", overridden.join(", "))
        };
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    origin: origin.clone(),
                    message: e.message().to_owned(),
                })?;
        config
            .validate()
            .map_err(|message| ConfigError::Invalid { origin, message })?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.jobs.validate()?;
        self.node.validate()?;
        self.usage.validate()?;
        self.events.validate()?;
        self.disconnect.check()?;
        self.reconcile.check()?;
        let url = self.database.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err("database.url must start with sqlite: or postgres://".into());
        }
        if let Some(ff) = self.database.radacct_fillfactor
            && !(10..=100).contains(&ff)
        {
            return Err("database.radacct_fillfactor must be between 10 and 100".into());
        }
        if self.database.max_connections == 0 {
            return Err("database.max_connections must be at least 1".into());
        }
        if self.radius.max_batch == 0 || self.radius.queue_capacity == 0 {
            return Err("radius.max_batch and radius.queue_capacity must be at least 1".into());
        }
        for (i, c) in self.radius.clients.iter().enumerate() {
            if c.secret.expose().is_empty() {
                return Err(format!("radius.clients[{i}].secret must not be empty"));
            }
        }
        let api = &self.api;
        if api.jwt_algorithm != JwtAlgorithm::HS256 && api.jwt_public_key.is_none() {
            return Err("api.jwt_algorithm RS256/ES256 needs api.jwt_public_key".into());
        }
        if api.rate_limit_burst == 0 || api.rate_limit_period_ms == 0 {
            return Err(
                "api.rate_limit_burst and api.rate_limit_period_ms must be at least 1".into(),
            );
        }
        if api.export_concurrency == 0 || api.query_concurrency == 0 {
            return Err(
                "api.export_concurrency and api.query_concurrency must be at least 1".into(),
            );
        }
        if api.export_concurrency + api.query_concurrency >= self.database.max_connections {
            return Err(format!(
                "api.export_concurrency + api.query_concurrency ({}) must be below \
                 database.max_connections ({}), so that ingest always has a connection",
                api.export_concurrency + api.query_concurrency,
                self.database.max_connections
            ));
        }
        if api.max_connections == 0 || self.metrics.max_connections == 0 {
            return Err(
                "api.max_connections and metrics.max_connections must be at least 1".into(),
            );
        }
        if api.header_read_timeout_secs == 0 {
            return Err("api.header_read_timeout_secs must be at least 1".into());
        }
        if api.request_timeout_secs == 0 || api.scope_refresh_secs == 0 {
            return Err(
                "api.request_timeout_secs and api.scope_refresh_secs must be at least 1".into(),
            );
        }
        Ok(())
    }

    pub fn commit_timeout(&self) -> Duration {
        Duration::from_secs(self.radius.commit_timeout_secs.max(1))
    }
}

/// An environment value as TOML when it parses as a TOML value, else as a string.
fn env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        t = next;
    }
    t.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::load(None, env(&[])).expect("loads");
        assert_eq!(c.database.url.expose(), "sqlite://radacctd.db");
        assert_eq!(c.radius.listen.port(), 1813);
        assert!(c.radius.clients.is_empty());
    }

    #[test]
    fn env_overrides_file_values() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[radius]\nlisten = \"127.0.0.1:1813\"\n[[radius.clients]]\naddress = \"10.0.0.0/8\"\nsecret = \"s\"\n",
        )
        .expect("write");
        let c = Config::load(
            Some(&p),
            env(&[
                ("RADACCTD__RADIUS__LISTEN", "127.0.0.1:9999"),
                ("RADACCTD__DATABASE__URL", "postgres://u@h/db"),
                ("RADACCTD__RADIUS__MAX_BATCH", "7"),
                ("OTHER", "x"),
            ]),
        )
        .expect("loads");
        assert_eq!(c.radius.listen.port(), 9999);
        assert_eq!(c.radius.max_batch, 7);
        assert_eq!(c.database.url.expose(), "postgres://u@h/db");
        assert_eq!(c.radius.clients.len(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_explained() {
        let err =
            Config::load(None, env(&[("RADACCTD__RADIUS__LISTN", "x")])).expect_err("unknown key");
        let msg = err.to_string();
        assert!(
            msg.contains("listn") && msg.contains("RADACCTD__RADIUS__LISTN"),
            "{msg}"
        );
        let err = Config::load(None, env(&[("RADACCTD__DATABASE__URL", "mysql://x")]))
            .expect_err("bad url");
        assert!(err.to_string().contains("database.url"), "{err}");
    }

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
        let c = Config::load(Some(&path), env(&[])).expect("example parses");
        assert_eq!(
            c,
            Config::default(),
            "config.toml.example documents the defaults"
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = Config::load(
            None,
            env(&[("RADACCTD__DATABASE__URL", "postgres://u:pw@h/d")]),
        )
        .expect("loads");
        assert!(!format!("{c:?}").contains("pw"));
    }
}
