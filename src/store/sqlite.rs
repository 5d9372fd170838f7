//! SQLite store: the embedded default (`sqlite://radacctd.db`). WAL with `synchronous=FULL`, so
//! a commit is durable before the writer answers. One prepared statement per row; SQLite runs
//! in-process, so a batch of them in one transaction costs little.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

use futures_util::TryStreamExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, Transaction};

use super::{
    ColumnKind, NasRow, Result, StoreOptions, Value, WRITE_COLUMNS, all_columns, column_kind,
    column_value, is_session_column, read_list, read_row,
};
use crate::sessions::Row;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A radacct column as read back: text or seconds.
pub(super) fn read_back(c: &str) -> String {
    match column_kind(c) {
        ColumnKind::Time => format!("CAST(strftime('%s', {c}) AS INTEGER)"),
        _ => c.to_owned(),
    }
}

static SELECT_LIST: LazyLock<String> = LazyLock::new(|| read_list(all_columns, read_back));

static LOAD_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM radacct WHERE acctuniqueid = ?1",
        *SELECT_LIST
    )
});

static OPEN_ROWS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM radacct WHERE acctstoptime IS NULL",
        read_list(is_session_column, read_back)
    )
});

fn placeholder(kind: ColumnKind, n: usize) -> String {
    match kind {
        ColumnKind::Time => format!("datetime(?{n}, 'unixepoch')"),
        _ => format!("?{n}"),
    }
}

static INSERT_SQL: LazyLock<String> = LazyLock::new(|| {
    let values: Vec<String> = WRITE_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| placeholder(column_kind(c), i + 1))
        .collect();
    format!(
        "INSERT INTO radacct ({}) VALUES ({}) RETURNING radacctid",
        WRITE_COLUMNS.join(", "),
        values.join(", ")
    )
});

static UPDATE_SQL: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = WRITE_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = {}", placeholder(column_kind(c), i + 1)))
        .collect();
    format!(
        "UPDATE radacct SET {} WHERE radacctid = ?{}",
        sets.join(", "),
        WRITE_COLUMNS.len() + 1
    )
});

const CLOSE_NAS_SQL: &str = "UPDATE radacct SET acctstoptime = datetime(?2, 'unixepoch'), \
     acctupdatetime = datetime(?2, 'unixepoch'), \
     acctsessiontime = ?2 - CAST(strftime('%s', acctstarttime) AS INTEGER), \
     acctterminatecause = ?3 \
     WHERE acctstoptime IS NULL AND nasipaddress = ?1 AND acctstarttime <= datetime(?2, 'unixepoch') \
     RETURNING acctuniqueid";

fn bind_row<'q>(
    mut q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    row: &Row,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    for i in 0..WRITE_COLUMNS.len() {
        q = match column_value(row, i) {
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
        Ok(SqliteStore { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(super) async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn for_each_open_row(
        &self,
        mut f: impl FnMut(Row, Option<u32>) + Send,
    ) -> Result<()> {
        let mut stream = sqlx::query(OPEN_ROWS_SQL.as_str()).fetch(&self.pool);
        while let Some(r) = stream.try_next().await? {
            f(read_row(&r, is_session_column)?, None);
        }
        Ok(())
    }

    pub(super) async fn nas_rows(&self) -> Result<Vec<NasRow>> {
        let rows = sqlx::query(
            "SELECT id, nasname, shortname, secret, coa_port, api_port, api_username, \
             api_password, api_tls, api_tls_name FROM nas ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NasRow {
                    id: r.try_get(0)?,
                    nasname: r.try_get(1)?,
                    shortname: r.try_get(2)?,
                    secret: r.try_get(3)?,
                    coa_port: r.try_get(4)?,
                    api_port: r.try_get(5)?,
                    api_username: r.try_get(6)?,
                    api_password: r.try_get(7)?,
                    api_tls: r.try_get(8)?,
                    api_tls_name: r.try_get(9)?,
                })
            })
            .collect()
    }

    pub(super) async fn begin(&self) -> Result<SqliteTx> {
        // IMMEDIATE takes the write lock up front, so a batch never fails half-way on a lock
        // upgrade (SQLITE_BUSY_SNAPSHOT) after reading.
        Ok(SqliteTx {
            tx: self.pool.begin_with("BEGIN IMMEDIATE").await?,
        })
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

/// A SQLite transaction.
#[derive(Debug)]
pub struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
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
                let row = read_row(&r, all_columns)?;
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

    pub(super) async fn close_nas(
        &mut self,
        nas: &str,
        time: i64,
        cause: &str,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query(CLOSE_NAS_SQL)
            .bind(nas)
            .bind(time)
            .bind(cause)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    pub(super) async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }

    pub(super) async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}
