//! `--verify-db`: after the run, every session's final radacct row is read back (by the
//! `acctuniqueid` the bench computes itself) and compared with the last values sent, so a fast
//! wrong answer cannot pass as speed. Works on radacctd's database and on FreeRADIUS's
//! (same table, same `acctuniqueid` formula).

use std::collections::HashMap;
use std::str::FromStr as _;

use anyhow::Context as _;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

use crate::sim::CAUSE_USER_REQUEST_TEXT;

/// What one session's row must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub key: String,
    pub user: String,
    pub sid: String,
    pub stopped: bool,
    pub input: u64,
    pub output: u64,
}

/// The columns read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub stopped: bool,
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub cause: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub key: String,
    pub user: String,
    pub sid: String,
    pub problem: String,
}

/// Compares every expectation with the row found under its key.
pub fn compare(expect: &[Expect], found: &HashMap<String, Found>) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for e in expect {
        let mut problems = Vec::new();
        match found.get(&e.key) {
            None => problems.push("no row with this acctuniqueid".to_owned()),
            Some(f) => {
                if f.stopped != e.stopped {
                    problems.push(if e.stopped {
                        "acctstoptime is NULL (expected stopped)".to_owned()
                    } else {
                        "acctstoptime is set (expected open)".to_owned()
                    });
                }
                let want_in = i64::try_from(e.input).ok();
                if f.input != want_in {
                    problems.push(format!(
                        "acctinputoctets {} (sent {})",
                        show(f.input),
                        e.input
                    ));
                }
                let want_out = i64::try_from(e.output).ok();
                if f.output != want_out {
                    problems.push(format!(
                        "acctoutputoctets {} (sent {})",
                        show(f.output),
                        e.output
                    ));
                }
                if e.stopped && f.cause.as_deref() != Some(CAUSE_USER_REQUEST_TEXT) {
                    problems.push(format!(
                        "acctterminatecause {:?} (expected {CAUSE_USER_REQUEST_TEXT:?})",
                        f.cause
                    ));
                }
            }
        }
        if !problems.is_empty() {
            out.push(Mismatch {
                key: e.key.clone(),
                user: e.user.clone(),
                sid: e.sid.clone(),
                problem: problems.join("; "),
            });
        }
    }
    out
}

fn show(v: Option<i64>) -> String {
    v.map_or_else(|| "NULL".to_owned(), |v| v.to_string())
}

/// A read connection to radacctd's or FreeRADIUS's database.
#[derive(Debug)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

const CHUNK: usize = 5_000;

/// An octet column as read (NULL possible).
type Counter = Option<i64>;

impl Db {
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .context("connecting to PostgreSQL")?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .context("parsing the SQLite URL")?
                .read_only(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await
                .context("opening the SQLite database")?;
            Ok(Db::Sqlite(pool))
        } else {
            anyhow::bail!("--verify-db must be a postgres:// or sqlite: URL")
        }
    }

    /// The rows under these keys.
    pub async fn fetch(&self, keys: &[String]) -> anyhow::Result<HashMap<String, Found>> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            match self {
                Db::Postgres(pool) => {
                    let rows: Vec<(String, bool, Counter, Counter, Option<String>)> =
                        sqlx::query_as(
                            "SELECT acctuniqueid, acctstoptime IS NOT NULL, acctinputoctets, \
                             acctoutputoctets, acctterminatecause \
                             FROM radacct WHERE acctuniqueid = ANY($1)",
                        )
                        .bind(chunk)
                        .fetch_all(pool)
                        .await
                        .context("reading radacct")?;
                    for (k, stopped, input, output, cause) in rows {
                        out.insert(
                            k,
                            Found {
                                stopped,
                                input,
                                output,
                                cause,
                            },
                        );
                    }
                }
                Db::Sqlite(pool) => {
                    let json = serde_json::to_string(chunk)?;
                    let rows: Vec<(String, i64, Counter, Counter, Option<String>)> =
                        sqlx::query_as(
                            "SELECT acctuniqueid, acctstoptime IS NOT NULL, acctinputoctets, \
                             acctoutputoctets, acctterminatecause \
                             FROM radacct WHERE acctuniqueid IN (SELECT value FROM json_each(?1))",
                        )
                        .bind(json)
                        .fetch_all(pool)
                        .await
                        .context("reading radacct")?;
                    for (k, stopped, input, output, cause) in rows {
                        out.insert(
                            k,
                            Found {
                                stopped: stopped != 0,
                                input,
                                output,
                                cause,
                            },
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    /// For a missing key: the acctuniqueid(s) stored for that username and session id, which
    /// tells a different `acctuniqueid` formula from a lost packet.
    pub async fn keys_of(&self, user: &str, sid: &str) -> anyhow::Result<Vec<String>> {
        const SQL_PG: &str =
            "SELECT acctuniqueid FROM radacct WHERE acctsessionid = $1 AND username = $2";
        const SQL_LITE: &str =
            "SELECT acctuniqueid FROM radacct WHERE acctsessionid = ?1 AND username = ?2";
        Ok(match self {
            Db::Postgres(pool) => {
                sqlx::query_scalar(SQL_PG)
                    .bind(sid)
                    .bind(user)
                    .fetch_all(pool)
                    .await?
            }
            Db::Sqlite(pool) => {
                sqlx::query_scalar(SQL_LITE)
                    .bind(sid)
                    .bind(user)
                    .fetch_all(pool)
                    .await?
            }
        })
    }

    pub async fn close(self) {
        match self {
            Db::Postgres(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(key: &str, stopped: bool, input: u64, output: u64) -> Expect {
        Expect {
            key: key.into(),
            user: "u".into(),
            sid: "s".into(),
            stopped,
            input,
            output,
        }
    }

    fn found(stopped: bool, input: i64, output: i64, cause: Option<&str>) -> Found {
        Found {
            stopped,
            input: Some(input),
            output: Some(output),
            cause: cause.map(Into::into),
        }
    }

    #[test]
    fn compare_reports_each_difference() {
        let big = 9_000_000_000u64;
        let exp = vec![
            expect("ok", true, 1, big),
            expect("open-ok", false, 5, 6),
            expect("missing", true, 1, 1),
            expect("not-stopped", true, 1, 1),
            expect("counters", true, 1, 2),
            expect("cause", true, 1, 1),
            expect("reopened", false, 1, 1),
        ];
        let mut rows = HashMap::new();
        rows.insert(
            "ok".into(),
            found(true, 1, big as i64, Some("User-Request")),
        );
        rows.insert("open-ok".into(), found(false, 5, 6, Some("")));
        rows.insert("not-stopped".into(), found(false, 1, 1, None));
        rows.insert(
            "counters".into(),
            found(true, 1, 2 + (1 << 32), Some("User-Request")),
        );
        rows.insert("cause".into(), found(true, 1, 1, Some("Lost-Carrier")));
        rows.insert("reopened".into(), found(true, 1, 1, Some("User-Request")));
        let m = compare(&exp, &rows);
        let keys: Vec<&str> = m.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["missing", "not-stopped", "counters", "cause", "reopened"]
        );
        assert!(m[0].problem.contains("no row"));
        assert!(m[1].problem.contains("NULL"));
        assert!(
            m[2].problem
                .contains("acctoutputoctets 4294967298 (sent 2)")
        );
        assert!(m[3].problem.contains("Lost-Carrier"));
        assert!(m[4].problem.contains("expected open"));
        let mut null = found(true, 1, 1, None);
        null.input = None;
        let mut rows = HashMap::new();
        rows.insert("k".into(), null);
        let m = compare(&[expect("k", true, 1, 1)], &rows);
        assert!(m[0].problem.contains("acctinputoctets NULL"));
        assert!(m[0].problem.contains("acctterminatecause None"));
    }
}
