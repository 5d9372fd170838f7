//! SQL for the housekeeping jobs: finding stale open rows, syncing `subscribers.is_online`,
//! moving old closed rows to `radacct_archive`, and EnsureIndexes. Closing rows is not here:
//! that goes through the ingest writer like every other change to open sessions.

use sqlx::Row as _;

use super::{Result, Store, StoreError, WRITE_COLUMNS};

/// An open row the sweeper considers stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRow {
    pub radacctid: i64,
    pub acctuniqueid: String,
    pub username: Option<String>,
    pub nasipaddress: String,
    /// The last update (else the start): when the session was last seen alive.
    pub last_seen: Option<i64>,
}

/// A closed row the archiver would move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivableRow {
    pub radacctid: i64,
    pub username: Option<String>,
    pub acctstoptime: Option<i64>,
}

/// An index radacctd's queries rely on: name and definition (after `ON`), per store.
struct IndexDef {
    name: &'static str,
    postgres: &'static str,
    sqlite: &'static str,
}

/// Every index the daemon's queries rely on (DESIGN §6). The first three are FreeRADIUS's own.
const INDEXES: &[IndexDef] = &[
    IndexDef {
        name: "radacct_active_session_idx",
        postgres: "radacct (acctuniqueid) WHERE acctstoptime IS NULL",
        sqlite: "radacct (acctuniqueid) WHERE acctstoptime IS NULL",
    },
    IndexDef {
        name: "radacct_bulk_close",
        postgres: "radacct (nasipaddress, acctstarttime) WHERE acctstoptime IS NULL",
        sqlite: "radacct (nasipaddress, acctstarttime) WHERE acctstoptime IS NULL",
    },
    IndexDef {
        name: "radacct_start_user_idx",
        postgres: "radacct (acctstarttime, username)",
        sqlite: "radacct (acctstarttime, username)",
    },
    // No index on the last update time for the sweeper: every Interim-Update changes
    // acctupdatetime, and an index on it makes every interim a non-HOT update that rewrites
    // all of radacct's indexes (measured: 0 of 50,000 updates HOT with it, against 45% for
    // FreeRADIUS's own index set). The sweeper scans the open rows every 5 minutes instead.
    // The online-flag sync: open rows by user name.
    IndexDef {
        name: "radacct_open_username_idx",
        postgres: "radacct (username) WHERE acctstoptime IS NULL",
        sqlite: "radacct (username) WHERE acctstoptime IS NULL",
    },
    // The archiver and closed-session export ranges.
    IndexDef {
        name: "radacct_stop_idx",
        postgres: "radacct (acctstoptime) WHERE acctstoptime IS NOT NULL",
        sqlite: "radacct (acctstoptime) WHERE acctstoptime IS NOT NULL",
    },
    // Listing closed/all sessions of one NAS by start time.
    IndexDef {
        name: "radacct_nas_start_idx",
        postgres: "radacct (nasipaddress, acctstarttime)",
        sqlite: "radacct (nasipaddress, acctstarttime)",
    },
    // Username search and scope filters on closed sessions.
    IndexDef {
        name: "radacct_username_idx",
        postgres: "radacct (username)",
        sqlite: "radacct (username)",
    },
];

fn archive_columns() -> String {
    let mut cols = vec!["radacctid"];
    cols.extend(WRITE_COLUMNS);
    cols.join(", ")
}

impl Store {
    /// Open rows last seen before `cutoff` (seconds), oldest first, at most `limit`.
    pub async fn stale_open_rows(&self, cutoff: i64, limit: i64) -> Result<Vec<StaleRow>> {
        let read = |r: &dyn RowGet| -> Result<StaleRow> {
            Ok(StaleRow {
                radacctid: r.i64(0)?,
                acctuniqueid: r.string(1)?.unwrap_or_default(),
                username: r.string(2)?,
                nasipaddress: r.string(3)?.unwrap_or_default(),
                last_seen: r.opt_i64(4)?,
            })
        };
        match self {
            Store::Postgres(s) => sqlx::query(
                "SELECT radacctid, acctuniqueid, username, host(nasipaddress), \
                 floor(date_part('epoch', COALESCE(acctupdatetime, acctstarttime)))::int8 \
                 FROM radacct WHERE acctstoptime IS NULL \
                 AND COALESCE(acctupdatetime, acctstarttime) < to_timestamp($1) \
                 ORDER BY COALESCE(acctupdatetime, acctstarttime), radacctid LIMIT $2",
            )
            .bind(cutoff)
            .bind(limit)
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(|r| read(r))
            .collect(),
            Store::Sqlite(s) => sqlx::query(
                "SELECT radacctid, acctuniqueid, username, nasipaddress, \
                 CAST(strftime('%s', COALESCE(acctupdatetime, acctstarttime)) AS INTEGER) \
                 FROM radacct WHERE acctstoptime IS NULL \
                 AND COALESCE(acctupdatetime, acctstarttime) < datetime(?1, 'unixepoch') \
                 ORDER BY COALESCE(acctupdatetime, acctstarttime), radacctid LIMIT ?2",
            )
            .bind(cutoff)
            .bind(limit)
            .fetch_all(s.pool())
            .await?
            .iter()
            .map(|r| read(r))
            .collect(),
        }
    }

    /// Sets `subscribers.is_online` to exactly "has an open radacct row", in two set-based
    /// statements. Returns (marked online, marked offline).
    pub async fn sync_online_flags(&self) -> Result<(u64, u64)> {
        match self {
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                let on = sqlx::query(
                    "UPDATE subscribers s SET is_online = true WHERE NOT s.is_online AND EXISTS \
                     (SELECT 1 FROM radacct r WHERE r.username = s.username AND r.acctstoptime IS NULL)",
                )
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let off = sqlx::query(
                    "UPDATE subscribers s SET is_online = false WHERE s.is_online AND NOT EXISTS \
                     (SELECT 1 FROM radacct r WHERE r.username = s.username AND r.acctstoptime IS NULL)",
                )
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok((on, off))
            }
            Store::Sqlite(s) => {
                let mut tx = s.pool().begin().await?;
                let on = sqlx::query(
                    "UPDATE subscribers SET is_online = 1 WHERE NOT is_online AND EXISTS \
                     (SELECT 1 FROM radacct r WHERE r.username = subscribers.username AND r.acctstoptime IS NULL)",
                )
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let off = sqlx::query(
                    "UPDATE subscribers SET is_online = 0 WHERE is_online AND NOT EXISTS \
                     (SELECT 1 FROM radacct r WHERE r.username = subscribers.username AND r.acctstoptime IS NULL)",
                )
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok((on, off))
            }
        }
    }

    /// How many closed rows stopped before `cutoff`, and the first `limit` of them (oldest).
    pub async fn archivable_rows(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> Result<(i64, Vec<ArchivableRow>)> {
        let read = |r: &dyn RowGet| -> Result<ArchivableRow> {
            Ok(ArchivableRow {
                radacctid: r.i64(0)?,
                username: r.string(1)?,
                acctstoptime: r.opt_i64(2)?,
            })
        };
        match self {
            Store::Postgres(s) => {
                let count: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM radacct WHERE acctstoptime IS NOT NULL \
                     AND acctstoptime < to_timestamp($1)",
                )
                .bind(cutoff)
                .fetch_one(s.pool())
                .await?;
                let rows = sqlx::query(
                    "SELECT radacctid, username, floor(date_part('epoch', acctstoptime))::int8 \
                     FROM radacct WHERE acctstoptime IS NOT NULL AND acctstoptime < to_timestamp($1) \
                     ORDER BY acctstoptime, radacctid LIMIT $2",
                )
                .bind(cutoff)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
                Ok((count, rows.iter().map(|r| read(r)).collect::<Result<_>>()?))
            }
            Store::Sqlite(s) => {
                let count: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM radacct WHERE acctstoptime IS NOT NULL \
                     AND acctstoptime < datetime(?1, 'unixepoch')",
                )
                .bind(cutoff)
                .fetch_one(s.pool())
                .await?;
                let rows = sqlx::query(
                    "SELECT radacctid, username, CAST(strftime('%s', acctstoptime) AS INTEGER) \
                     FROM radacct WHERE acctstoptime IS NOT NULL AND acctstoptime < datetime(?1, 'unixepoch') \
                     ORDER BY acctstoptime, radacctid LIMIT ?2",
                )
                .bind(cutoff)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
                Ok((count, rows.iter().map(|r| read(r)).collect::<Result<_>>()?))
            }
        }
    }

    /// Moves up to `batch` closed rows stopped before `cutoff` (oldest first) to
    /// `radacct_archive`, in one transaction: the same rows are inserted there and deleted
    /// here, or nothing happens. Returns how many moved (0: nothing left).
    ///
    /// On PostgreSQL the rows are picked `FOR UPDATE SKIP LOCKED`, so a batch never waits for
    /// (or blocks for long) the ingest writer.
    pub async fn archive_batch(&self, cutoff: i64, batch: i64) -> Result<u64> {
        let cols = archive_columns();
        match self {
            Store::Postgres(s) => {
                let sql = format!(
                    "WITH batch AS (SELECT radacctid FROM radacct WHERE acctstoptime IS NOT NULL \
                     AND acctstoptime < to_timestamp($1) ORDER BY acctstoptime LIMIT $2 \
                     FOR UPDATE SKIP LOCKED), \
                     moved AS (DELETE FROM radacct r USING batch b WHERE r.radacctid = b.radacctid \
                     RETURNING r.*) \
                     INSERT INTO radacct_archive ({cols}) SELECT {cols} FROM moved"
                );
                let n = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(cutoff)
                    .bind(batch)
                    .execute(s.pool())
                    .await?
                    .rows_affected();
                Ok(n)
            }
            Store::Sqlite(s) => {
                let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
                let ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT radacctid FROM radacct WHERE acctstoptime IS NOT NULL \
                     AND acctstoptime < datetime(?1, 'unixepoch') ORDER BY acctstoptime LIMIT ?2",
                )
                .bind(cutoff)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
                if ids.is_empty() {
                    tx.rollback().await?;
                    return Ok(0);
                }
                let json = serde_json::to_string(&ids)
                    .map_err(|e| StoreError::Config(format!("encoding ids: {e}")))?;
                let insert = format!(
                    "INSERT INTO radacct_archive ({cols}) SELECT {cols} FROM radacct \
                     WHERE radacctid IN (SELECT value FROM json_each(?1))"
                );
                let inserted = sqlx::query(sqlx::AssertSqlSafe(insert))
                    .bind(&json)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let deleted = sqlx::query(
                    "DELETE FROM radacct WHERE radacctid IN (SELECT value FROM json_each(?1))",
                )
                .bind(&json)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted != deleted {
                    tx.rollback().await?;
                    return Err(StoreError::Config(format!(
                        "archive batch inserted {inserted} but deleted {deleted} rows; rolled back"
                    )));
                }
                tx.commit().await?;
                Ok(deleted)
            }
        }
    }

    /// EnsureIndexes: creates every index the queries rely on that is missing, and rebuilds
    /// any PostgreSQL left INVALID by an interrupted `CREATE INDEX CONCURRENTLY`. On PostgreSQL
    /// indexes are built `CONCURRENTLY`, so a live FreeRADIUS database keeps writing. Returns
    /// the names it created or rebuilt.
    pub async fn ensure_indexes(&self) -> Result<Vec<String>> {
        let mut created = Vec::new();
        match self {
            Store::Postgres(s) => {
                for ix in INDEXES {
                    let valid: Option<bool> = sqlx::query_scalar(
                        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
                    )
                    .bind(ix.name)
                    .fetch_optional(s.pool())
                    .await?;
                    match valid {
                        Some(true) => continue,
                        Some(false) => {
                            tracing::warn!(index = ix.name, "index is INVALID; rebuilding it");
                            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                                "DROP INDEX CONCURRENTLY IF EXISTS {}",
                                ix.name
                            )))
                            .execute(s.pool())
                            .await?;
                        }
                        None => {}
                    }
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {}",
                        ix.name, ix.postgres
                    )))
                    .execute(s.pool())
                    .await?;
                    created.push(ix.name.to_owned());
                }
            }
            Store::Sqlite(s) => {
                for ix in INDEXES {
                    let exists: Option<i64> = sqlx::query_scalar(
                        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1",
                    )
                    .bind(ix.name)
                    .fetch_optional(s.pool())
                    .await?;
                    if exists.is_some() {
                        continue;
                    }
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "CREATE INDEX IF NOT EXISTS {} ON {}",
                        ix.name, ix.sqlite
                    )))
                    .execute(s.pool())
                    .await?;
                    created.push(ix.name.to_owned());
                }
            }
        }
        Ok(created)
    }
}

/// Column access shared by both stores' rows, so one closure reads either.
trait RowGet {
    fn i64(&self, i: usize) -> Result<i64>;
    fn opt_i64(&self, i: usize) -> Result<Option<i64>>;
    fn string(&self, i: usize) -> Result<Option<String>>;
}

impl RowGet for sqlx::postgres::PgRow {
    fn i64(&self, i: usize) -> Result<i64> {
        Ok(self.try_get(i)?)
    }
    fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.try_get(i)?)
    }
    fn string(&self, i: usize) -> Result<Option<String>> {
        Ok(self.try_get(i)?)
    }
}

impl RowGet for sqlx::sqlite::SqliteRow {
    fn i64(&self, i: usize) -> Result<i64> {
        Ok(self.try_get(i)?)
    }
    fn opt_i64(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.try_get(i)?)
    }
    fn string(&self, i: usize) -> Result<Option<String>> {
        Ok(self.try_get(i)?)
    }
}
