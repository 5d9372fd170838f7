//! PostgreSQL store: FreeRADIUS's `radacct` in production. Batches bind one array per column
//! and `unnest` them, so a whole batch is one statement per kind of change and the planner
//! drives the `acctuniqueid` / primary-key indexes (reference/postgres-write-notes.md).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

use futures_util::TryStreamExt;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row as _, Transaction};

use super::{
    ColumnKind, NasRow, Result, RowReader, StoreOptions, Value, WRITE_COLUMNS, column_kind,
    column_value,
};
use crate::sessions::Row;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// `radacctid` then every write column, converted to text / seconds.
static SELECT_LIST: LazyLock<String> = LazyLock::new(|| {
    let mut cols = vec!["radacctid".to_owned()];
    cols.extend(WRITE_COLUMNS.iter().map(|c| match column_kind(c) {
        ColumnKind::Text | ColumnKind::Int => (*c).to_owned(),
        ColumnKind::Time => format!("floor(extract(epoch from {c}))::int8"),
        ColumnKind::Addr => format!("host({c})"),
        ColumnKind::Prefix => format!("{c}::text"),
    }));
    cols.join(", ")
});

static LOAD_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM radacct WHERE acctuniqueid = ANY($1::text[]) FOR UPDATE",
        *SELECT_LIST
    )
});

/// The batch lookup without locks, with each row's version (`xmin`) for the guarded write.
static LOAD_VERSIONS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, xmin::text FROM radacct WHERE acctuniqueid = ANY($1::text[])",
        *SELECT_LIST
    )
});

/// One statement: insert the new rows, update the changed ones whose version is still the one
/// read; returns what it did (`0` inserted with its key, `1` updated). For batches with both.
static WRITE_GUARDED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH ins AS ({}), upd AS ({} RETURNING r.radacctid) \
         SELECT 0, radacctid, acctuniqueid FROM ins UNION ALL SELECT 1, radacctid, NULL FROM upd",
        insert_statement(1),
        update_statement(WRITE_COLUMNS.len() + 1, true),
    )
});

/// The guarded update alone (batches without new rows: interims and stops).
static UPDATE_GUARDED_SQL: LazyLock<String> =
    LazyLock::new(|| format!("{} RETURNING r.radacctid", update_statement(1, true)));

/// `INSERT … SELECT … FROM unnest(<one array per write column>) RETURNING radacctid,
/// acctuniqueid`, parameters numbered from `$first`.
fn insert_statement(first: usize) -> String {
    let params: Vec<String> = WRITE_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", first + i, array_type(column_kind(c))))
        .collect();
    let aliases: Vec<String> = (1..=WRITE_COLUMNS.len()).map(|i| format!("c{i}")).collect();
    let exprs: Vec<String> = WRITE_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| from_unnested(column_kind(c), &format!("c{}", i + 1)))
        .collect();
    format!(
        "INSERT INTO radacct ({}) SELECT {} FROM unnest({}) AS u({}) RETURNING radacctid, acctuniqueid",
        WRITE_COLUMNS.join(", "),
        exprs.join(", "),
        params.join(", "),
        aliases.join(", ")
    )
}

/// `UPDATE radacct AS r SET … FROM unnest(ids, [versions,] <one array per write column>)`
/// matched on `radacctid`, and when `guarded` only where the row's `xmin` is the version read;
/// parameters numbered from `$first`.
fn update_statement(first: usize, guarded: bool) -> String {
    let mut params = vec![format!("${first}::int8[]")];
    let mut aliases = vec!["id".to_owned()];
    if guarded {
        params.push(format!("${}::text[]", first + 1));
        aliases.push("version".to_owned());
    }
    let columns_from = first + params.len();
    let mut sets = Vec::new();
    for (i, c) in WRITE_COLUMNS.iter().enumerate() {
        let kind = column_kind(c);
        params.push(format!("${}::{}", columns_from + i, array_type(kind)));
        aliases.push(format!("c{}", i + 1));
        if *c != "acctuniqueid" {
            sets.push(format!(
                "{c} = {}",
                from_unnested(kind, &format!("u.c{}", i + 1))
            ));
        }
    }
    let guard = if guarded {
        " AND r.xmin::text = u.version"
    } else {
        ""
    };
    format!(
        "UPDATE radacct AS r SET {} FROM unnest({}) AS u({}) WHERE r.radacctid = u.id{guard}",
        sets.join(", "),
        params.join(", "),
        aliases.join(", ")
    )
}

static OPEN_ROWS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM radacct WHERE acctstoptime IS NULL",
        *SELECT_LIST
    )
});

fn array_type(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Int | ColumnKind::Time => "int8[]",
        _ => "text[]",
    }
}

fn from_unnested(kind: ColumnKind, v: &str) -> String {
    match kind {
        ColumnKind::Text | ColumnKind::Int => v.to_owned(),
        ColumnKind::Time => format!("to_timestamp({v})"),
        ColumnKind::Addr | ColumnKind::Prefix => format!("{v}::inet"),
    }
}

static INSERT_SQL: LazyLock<String> = LazyLock::new(|| insert_statement(1));

static UPDATE_SQL: LazyLock<String> = LazyLock::new(|| update_statement(1, false));

const CLOSE_NAS_SQL: &str = "UPDATE radacct SET acctstoptime = to_timestamp($2), \
     acctupdatetime = to_timestamp($2), \
     acctsessiontime = $2 - floor(extract(epoch from acctstarttime))::int8, \
     acctterminatecause = $3 \
     WHERE acctstoptime IS NULL AND nasipaddress = $1::inet AND acctstarttime <= to_timestamp($2) \
     RETURNING acctuniqueid";

fn read_row(r: &PgRow) -> Result<Row> {
    let mut texts = Vec::with_capacity(WRITE_COLUMNS.len());
    let mut ints = Vec::with_capacity(8);
    for (i, c) in WRITE_COLUMNS.iter().enumerate() {
        match column_kind(c) {
            ColumnKind::Int | ColumnKind::Time => ints.push(r.try_get::<Option<i64>, _>(i + 1)?),
            _ => texts.push(r.try_get::<Option<String>, _>(i + 1)?),
        }
    }
    Ok(RowReader { texts, ints }.into_row(r.try_get(0)?))
}

/// Binds one array per write column, in [`WRITE_COLUMNS`] order.
fn bind_columns<'q>(
    mut q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    rows: &[Row],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    for i in 0..WRITE_COLUMNS.len() {
        match column_value(&Row::default(), i) {
            Value::Int(_) => {
                let col: Vec<Option<i64>> = rows
                    .iter()
                    .map(|r| match column_value(r, i) {
                        Value::Int(v) => v,
                        Value::Text(_) => None,
                    })
                    .collect();
                q = q.bind(col);
            }
            Value::Text(_) => {
                let col: Vec<Option<String>> = rows
                    .iter()
                    .map(|r| match column_value(r, i) {
                        Value::Text(v) => v.map(str::to_owned),
                        Value::Int(_) => None,
                    })
                    .collect();
                q = q.bind(col);
            }
        }
    }
    q
}

/// PostgreSQL connection pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub(super) fn open(url: &str, opts: &StoreOptions) -> Result<PgStore> {
        // Custom plans for every execution: sqlx prepares statements, and a generic plan
        // cached while radacct was small (or never analyzed) keeps a sequential scan for the
        // batch lookup `acctuniqueid = ANY($1)` for the life of the connection (measured: 4x
        // slower interims). Planning these statements is cheap next to executing them.
        let connect = sqlx::postgres::PgConnectOptions::from_str(url)?
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_lazy_with(connect);
        Ok(PgStore { pool })
    }

    /// The pool, for code in this module's siblings that needs raw access (tests, jobs).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn set_radacct_fillfactor(&self, fillfactor: u8) -> Result<bool> {
        let current: Option<String> = sqlx::query_scalar(
            "SELECT option_value FROM pg_class c, pg_options_to_table(c.reloptions) \
             WHERE c.oid = 'radacct'::regclass AND option_name = 'fillfactor'",
        )
        .fetch_optional(&self.pool)
        .await?;
        if current.as_deref() == Some(fillfactor.to_string().as_str()) {
            return Ok(false);
        }
        // SHARE UPDATE EXCLUSIVE: writers are not blocked. Only pages written from now on
        // follow it.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE radacct SET (fillfactor = {})",
            fillfactor.clamp(10, 100)
        )))
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    pub(super) async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn for_each_open_row(&self, mut f: impl FnMut(Row) + Send) -> Result<()> {
        let mut stream = sqlx::query(OPEN_ROWS_SQL.as_str()).fetch(&self.pool);
        while let Some(r) = stream.try_next().await? {
            f(read_row(&r)?);
        }
        Ok(())
    }

    pub(super) async fn nas_rows(&self) -> Result<Vec<NasRow>> {
        let rows = sqlx::query(
            "SELECT id::int8, nasname, shortname, secret, coa_port::int8, api_port::int8, \
             api_username, api_password, api_tls, api_tls_name FROM nas ORDER BY id",
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

    /// The rows with these keys (no locks) and their row versions.
    pub async fn load_versions(
        &self,
        keys: &[&str],
    ) -> Result<(HashMap<String, Row>, HashMap<String, String>)> {
        let rows = sqlx::query(LOAD_VERSIONS_SQL.as_str())
            .bind(keys)
            .fetch_all(&self.pool)
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        let mut versions = HashMap::with_capacity(rows.len());
        for r in &rows {
            let row = read_row(r)?;
            versions.insert(
                row.acctuniqueid.clone(),
                r.try_get::<String, _>(WRITE_COLUMNS.len() + 1)?,
            );
            out.insert(row.acctuniqueid.clone(), row);
        }
        Ok((out, versions))
    }

    /// Inserts `inserts` (filling their ids) and updates `updates` where each row's version
    /// is still `versions[key]`, in one statement (one implicit transaction). Returns the keys
    /// of updates that did not apply because another writer changed the row.
    pub async fn write_guarded(
        &self,
        inserts: &mut [Row],
        updates: &[Row],
        versions: &HashMap<String, String>,
    ) -> Result<std::collections::HashSet<String>> {
        if inserts.is_empty() && updates.is_empty() {
            return Ok(Default::default());
        }
        let ids: Vec<Option<i64>> = updates.iter().map(|r| r.radacctid).collect();
        let vers: Vec<Option<String>> = updates
            .iter()
            .map(|r| versions.get(&r.acctuniqueid).cloned())
            .collect();
        let mut inserted: HashMap<String, i64> = HashMap::with_capacity(inserts.len());
        let mut updated = std::collections::HashSet::with_capacity(updates.len());
        // The smallest statement that does the job: every statement is planned afresh for its
        // parameters (`force_custom_plan`), and planning the combined one costs as much as
        // planning both halves, although most batches only insert (Starts) or only update.
        if updates.is_empty() {
            let q = bind_columns(sqlx::query(INSERT_SQL.as_str()), inserts);
            for r in &q.fetch_all(&self.pool).await? {
                inserted.insert(r.try_get(1)?, r.try_get(0)?);
            }
        } else if inserts.is_empty() {
            let q = sqlx::query(UPDATE_GUARDED_SQL.as_str());
            let q = bind_columns(q.bind(ids).bind(vers), updates);
            for r in &q.fetch_all(&self.pool).await? {
                updated.insert(r.try_get::<i64, _>(0)?);
            }
        } else {
            let q = bind_columns(sqlx::query(WRITE_GUARDED_SQL.as_str()), inserts);
            let q = bind_columns(q.bind(ids).bind(vers), updates);
            for r in &q.fetch_all(&self.pool).await? {
                let kind: i32 = r.try_get(0)?;
                let id: i64 = r.try_get(1)?;
                if kind == 0 {
                    inserted.insert(r.try_get::<String, _>(2)?, id);
                } else {
                    updated.insert(id);
                }
            }
        }
        for row in inserts.iter_mut() {
            row.radacctid = inserted.get(&row.acctuniqueid).copied();
        }
        Ok(updates
            .iter()
            .filter(|r| !r.radacctid.is_some_and(|id| updated.contains(&id)))
            .map(|r| r.acctuniqueid.clone())
            .collect())
    }

    pub(super) async fn begin(&self) -> Result<PgTx> {
        Ok(PgTx {
            tx: self.pool.begin().await?,
        })
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

/// A PostgreSQL transaction.
#[derive(Debug)]
pub struct PgTx {
    tx: Transaction<'static, Postgres>,
}

impl PgTx {
    pub(super) async fn load(&mut self, keys: &[&str]) -> Result<HashMap<String, Row>> {
        let rows = sqlx::query(LOAD_SQL.as_str())
            .bind(keys)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in &rows {
            let row = read_row(r)?;
            out.insert(row.acctuniqueid.clone(), row);
        }
        Ok(out)
    }

    pub(super) async fn insert(&mut self, rows: &mut [Row]) -> Result<()> {
        let q = bind_columns(sqlx::query(INSERT_SQL.as_str()), rows);
        let ids = q.fetch_all(&mut *self.tx).await?;
        let mut by_key: HashMap<String, i64> = HashMap::with_capacity(ids.len());
        for r in &ids {
            by_key.insert(r.try_get(1)?, r.try_get(0)?);
        }
        for row in rows.iter_mut() {
            row.radacctid = by_key.get(&row.acctuniqueid).copied();
        }
        Ok(())
    }

    pub(super) async fn update(&mut self, rows: &[Row]) -> Result<()> {
        let ids: Vec<Option<i64>> = rows.iter().map(|r| r.radacctid).collect();
        let q = bind_columns(sqlx::query(UPDATE_SQL.as_str()).bind(ids), rows);
        q.execute(&mut *self.tx).await?;
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
