//! SQLite store: the embedded default (`sqlite://radacctd.db`). WAL with `synchronous=FULL`, so
//! a commit is durable before the writer answers. One prepared statement per row; SQLite runs
//! in-process, so a batch of them in one transaction costs little. All of SQLite's SQL is here.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, Transaction};

use super::actions::ACTION_TABLE_COLUMNS;
use super::events::Outbox;
use super::jobs::{Engine, INDEXES, RETIRED_INDEXES};
use super::{Dialect, Result, StoreError, StoreOptions, read_row, select_list};
use crate::sessions::{Column, ColumnKind, Columns, Row, Value};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl Dialect for SqliteStore {
    type Db = Sqlite;

    fn param(n: usize) -> String {
        format!("?{n}")
    }

    fn read_back(c: &Column) -> String {
        match c.kind {
            ColumnKind::Time => Self::epoch(c.name),
            ColumnKind::Text | ColumnKind::Int | ColumnKind::Addr | ColumnKind::Prefix => {
                c.name.to_owned()
            }
        }
    }

    fn timestamp(p: &str) -> String {
        format!("datetime({p}, 'unixepoch')")
    }

    fn epoch(expr: &str) -> String {
        format!("CAST(strftime('%s', {expr}) AS INTEGER)")
    }

    fn nas_is(p: &str) -> String {
        format!("nasipaddress = {p}")
    }

    fn lower(expr: &str) -> String {
        format!("lower({expr})")
    }

    fn contains(hay: &str, needle: &str) -> String {
        format!("instr({hay}, {needle}) > 0")
    }

    fn starts_with(hay: &str, needle: &str) -> String {
        format!("substr({hay}, 1, length({needle})) = {needle}")
    }

    /// SQLite has no arrays: the ids travel as a JSON array (see [`Self::bind_ids`]).
    fn owned_by_resellers(p: &str) -> String {
        format!(
            "username IN (SELECT username FROM subscribers WHERE reseller_id IN \
             (SELECT value FROM json_each({p})))"
        )
    }

    fn open_during(from: &str, to: &str) -> String {
        format!(
            "acctstarttime <= datetime({to}, 'unixepoch') \
             AND (acctstoptime IS NULL OR acctstoptime >= datetime({from}, 'unixepoch'))"
        )
    }

    /// SQLite has no address type: an IPv4 address (kept in its one text form) is compared by
    /// equality; blocks and IPv6 addresses, whose prefixes and texts vary, are left to the
    /// caller.
    fn overlaps(column: &str, p: &str, host_v4: bool) -> Option<String> {
        (host_v4 && column == "framedipaddress").then(|| format!("{column} = {p}"))
    }

    fn bind_ids<'q>(
        q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
        ids: Vec<i64>,
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
        let json = format!(
            "[{}]",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        );
        q.bind(json)
    }

    const BEGIN_SNAPSHOT: &'static str = "BEGIN DEFERRED";

    fn open_rows() -> &'static str {
        &OPEN_ROWS_SQL
    }

    const VERSIONED: bool = false;

    const STALE_OPEN_ROWS: &'static str = "SELECT radacctid, acctuniqueid, username, nasipaddress, \
         CAST(strftime('%s', COALESCE(acctupdatetime, acctstarttime)) AS INTEGER) \
         FROM radacct WHERE acctstoptime IS NULL \
         AND COALESCE(acctupdatetime, acctstarttime) < datetime(?1, 'unixepoch') \
         ORDER BY COALESCE(acctupdatetime, acctstarttime), radacctid LIMIT ?2";

    const MARK_ONLINE: &'static str = "UPDATE subscribers SET is_online = 1 WHERE NOT is_online AND EXISTS \
         (SELECT 1 FROM radacct r WHERE r.username = subscribers.username AND r.acctstoptime IS NULL)";

    const MARK_OFFLINE: &'static str = "UPDATE subscribers SET is_online = 0 WHERE is_online AND NOT EXISTS \
         (SELECT 1 FROM radacct r WHERE r.username = subscribers.username AND r.acctstoptime IS NULL)";

    const COUNT_ARCHIVABLE: &'static str = "SELECT count(*) FROM radacct WHERE acctstoptime IS NOT NULL \
         AND acctstoptime < datetime(?1, 'unixepoch')";

    const ARCHIVABLE_ROWS: &'static str = "SELECT radacctid, username, CAST(strftime('%s', acctstoptime) AS INTEGER) \
         FROM radacct WHERE acctstoptime IS NOT NULL AND acctstoptime < datetime(?1, 'unixepoch') \
         ORDER BY acctstoptime, radacctid LIMIT ?2";

    const NAS_ROWS: &'static str = "SELECT id, nasname, shortname, secret, coa_port, api_port, api_username, \
         api_password, api_tls, api_tls_name FROM nas ORDER BY id";

    fn close_nas() -> &'static str {
        &CLOSE_NAS_SQL
    }

    const JOB_RUN_START: &'static str = "INSERT INTO job_runs (job, node, started_at) \
         VALUES (?1, ?2, strftime('%Y-%m-%d %H:%M:%f', 'now')) RETURNING id";

    const JOB_RUN_FINISH: &'static str = "UPDATE job_runs SET \
         finished_at = strftime('%Y-%m-%d %H:%M:%f', 'now'), rows = ?2, error = ?3 WHERE id = ?1";

    const TRIM_JOB_RUNS: &'static str =
        "DELETE FROM job_runs WHERE started_at < datetime(?1, 'unixepoch')";
}

static LOAD_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM radacct WHERE acctuniqueid = ?1",
        select_list(Columns::All, SqliteStore::read_back)
    )
});

/// Accounting-On/Off's bulk close, returning the rows it closed.
static CLOSE_NAS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE radacct SET acctstoptime = datetime(?2, 'unixepoch'), \
         acctupdatetime = datetime(?2, 'unixepoch'), \
         acctsessiontime = ?2 - CAST(strftime('%s', acctstarttime) AS INTEGER), \
         acctterminatecause = ?3 \
         WHERE acctstoptime IS NULL AND nasipaddress = ?1 AND acctstarttime <= datetime(?2, 'unixepoch') \
         RETURNING {}",
        select_list(Columns::All, SqliteStore::read_back)
    )
});

static OPEN_ROWS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM radacct WHERE acctstoptime IS NULL",
        select_list(Columns::Index, SqliteStore::read_back)
    )
});

/// The value of write column `c`, parameter `n`.
fn placeholder(c: &Column, n: usize) -> String {
    match c.kind {
        ColumnKind::Time => format!("datetime(?{n}, 'unixepoch')"),
        ColumnKind::Text | ColumnKind::Int | ColumnKind::Addr | ColumnKind::Prefix => {
            format!("?{n}")
        }
    }
}

static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = Columns::Write.iter().map(|c| c.name).collect();
    let values: Vec<String> = Columns::Write
        .iter()
        .enumerate()
        .map(|(i, c)| placeholder(c, i + 1))
        .collect();
    format!(
        "INSERT INTO radacct ({}) VALUES ({}) RETURNING radacctid",
        names.join(", "),
        values.join(", ")
    )
});

static UPDATE_SQL: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = Columns::Write
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = {}", c.name, placeholder(c, i + 1)))
        .collect();
    format!(
        "UPDATE radacct SET {} WHERE radacctid = ?{}",
        sets.join(", "),
        Columns::Write.count() + 1
    )
});

/// Binds the write columns of `row`, in table order.
fn bind_row<'q>(
    mut q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    row: &Row,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    for c in Columns::Write.iter() {
        q = match c.get(row) {
            Value::Int(v) => q.bind(v),
            Value::Text(v) => q.bind(v.map(str::to_owned)),
        };
    }
    q
}

/// SQLite connection pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Whether events are appended, and the signal of commits that appended some.
    pub(super) outbox: Outbox,
}

impl SqliteStore {
    pub(super) async fn open(url: &str, opts: &StoreOptions) -> Result<SqliteStore> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(opts.acquire_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect)
            .await?;
        Ok(SqliteStore {
            pool,
            outbox: Outbox::new(opts.events),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(super) async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn begin(&self) -> Result<SqliteTx> {
        // IMMEDIATE takes the write lock up front, so a batch never fails half-way on a lock
        // upgrade (SQLITE_BUSY_SNAPSHOT) after reading.
        Ok(SqliteTx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
            outbox: self.outbox.clone(),
            appended: false,
        })
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }

    /// Moves up to `batch` closed rows stopped before `cutoff` (oldest first) to
    /// `radacct_archive` in one write transaction: the ids first, then the copy and the delete
    /// of the same ids, and the same for their action log rows (to `session_actions_archive`,
    /// ids kept). `cols`: the columns moved.
    pub(super) async fn archive_batch(&self, cutoff: i64, batch: i64, cols: &str) -> Result<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        let deleted =
            sqlx::query("DELETE FROM radacct WHERE radacctid IN (SELECT value FROM json_each(?1))")
                .bind(&json)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let actions = format!(
            "INSERT INTO session_actions_archive ({ACTION_TABLE_COLUMNS}) \
             SELECT {ACTION_TABLE_COLUMNS} FROM session_actions \
             WHERE radacctid IN (SELECT value FROM json_each(?1))"
        );
        let actions_kept = sqlx::query(sqlx::AssertSqlSafe(actions))
            .bind(&json)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let actions_deleted = sqlx::query(
            "DELETE FROM session_actions WHERE radacctid IN (SELECT value FROM json_each(?1))",
        )
        .bind(&json)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted != deleted || actions_kept != actions_deleted {
            tx.rollback().await?;
            return Err(StoreError::Config(format!(
                "archive batch inserted {inserted} but deleted {deleted} rows (action log: \
                 {actions_kept} and {actions_deleted}); rolled back"
            )));
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Creates the missing [`INDEXES`], then drops the [`RETIRED_INDEXES`] they replace;
    /// returns the names of those it created.
    pub(super) async fn ensure_indexes(&self) -> Result<Vec<String>> {
        let mut created = Vec::new();
        for ix in INDEXES.iter().filter(|ix| ix.on_engine(Engine::Sqlite)) {
            if self.has_index(ix.name).await? {
                continue;
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE INDEX IF NOT EXISTS {} ON {}",
                ix.name, ix.on
            )))
            .execute(&self.pool)
            .await?;
            created.push(ix.name.to_owned());
        }
        for name in RETIRED_INDEXES {
            if self.has_index(name).await? {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX IF EXISTS {name}")))
                    .execute(&self.pool)
                    .await?;
                tracing::info!(index = name, "dropped an index radacctd no longer uses");
            }
        }
        Ok(created)
    }

    async fn has_index(&self, name: &str) -> Result<bool> {
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(exists.is_some())
    }
}

/// A SQLite transaction.
#[derive(Debug)]
pub struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
    /// The store's outbox.
    pub(super) outbox: Outbox,
    /// Whether this transaction appended events (its commit says so to the outbox).
    pub(super) appended: bool,
}

impl SqliteTx {
    pub(super) async fn load(&mut self, keys: &[&str]) -> Result<HashMap<String, Row>> {
        let mut out = HashMap::with_capacity(keys.len());
        for key in keys {
            if let Some(r) = sqlx::query(LOAD_SQL.as_str())
                .bind(*key)
                .fetch_optional(&mut *self.tx)
                .await?
            {
                let row = read_row(&r, Columns::All)?;
                out.insert(row.acctuniqueid.clone(), row);
            }
        }
        Ok(out)
    }

    pub(super) async fn insert(&mut self, rows: &mut [Row]) -> Result<()> {
        for row in rows.iter_mut() {
            let r = bind_row(sqlx::query(INSERT_SQL.as_str()), row)
                .fetch_one(&mut *self.tx)
                .await?;
            row.radacctid = Some(r.try_get(0)?);
        }
        Ok(())
    }

    pub(super) async fn update(&mut self, rows: &[Row]) -> Result<()> {
        for row in rows {
            bind_row(sqlx::query(UPDATE_SQL.as_str()), row)
                .bind(row.radacctid)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// The transaction's connection.
    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    pub(super) fn into_inner(self) -> Transaction<'static, Sqlite> {
        self.tx
    }
}
