//! PostgreSQL store: FreeRADIUS's `radacct` in production. Batches bind one array per column
//! and `unnest` them, so a whole batch is one statement per kind of change and the planner
//! drives the `acctuniqueid` / primary-key indexes (docs/reference/postgres-writes.md).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row as _, Transaction};

use super::actions::ACTION_TABLE_COLUMNS;
use super::events::Outbox;
use super::jobs::session_span;
use super::{Dialect, Result, StoreError, StoreOptions, read_row, select_list};
use crate::sessions::{Column, ColumnKind, Columns, Row, RowVersion, Value};

mod coordination;
mod fillfactor;
mod guarded;
mod indexes;

pub use coordination::{
    ActionLock, CHANGES_CHANNEL, ChangeListener, ChangeNotice, ENSURE_INDEXES_LOCK,
    JOBS_LEADER_LOCK, LockConnection, ORIGIN_SETTING, PREPARE_LOCK,
};
pub use fillfactor::DEFAULT_RADACCT_FILLFACTOR;
pub(super) use fillfactor::Fillfactor;
pub use guarded::{Consequences, GuardedWrite};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Dialect for PgStore {
    type Db = Postgres;

    fn param(n: usize) -> String {
        format!("${n}")
    }

    /// Seconds come from `date_part`, a double: `extract` gives the same whole seconds through
    /// `numeric`, at twice the cost (measured on a million rows: 0.38 s against 0.76 s for two
    /// columns).
    fn read_back(c: &Column) -> String {
        let name = c.name;
        match c.kind {
            ColumnKind::Text | ColumnKind::Int => name.to_owned(),
            ColumnKind::Time => Self::epoch(name),
            ColumnKind::Addr => format!("host({name})"),
            ColumnKind::Prefix => format!("{name}::text"),
        }
    }

    fn timestamp(p: &str) -> String {
        format!("to_timestamp({p})")
    }

    fn epoch(expr: &str) -> String {
        format!("floor(date_part('epoch', {expr}))::int8")
    }

    fn nas_is(p: &str) -> String {
        format!("nasipaddress = {p}::inet")
    }

    fn lower(expr: &str) -> String {
        const UPPER: &str = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ'";
        const LOWER: &str = "'abcdefghijklmnopqrstuvwxyz'";
        format!("translate({expr}, {UPPER}, {LOWER})")
    }

    fn contains(hay: &str, needle: &str) -> String {
        format!("strpos({hay}, {needle}) > 0")
    }

    fn starts_with(hay: &str, needle: &str) -> String {
        format!("starts_with({hay}, {needle})")
    }

    fn owned_by_resellers(p: &str) -> String {
        format!(
            "username IN (SELECT username FROM subscribers WHERE reseller_id = ANY({p}::int8[]))"
        )
    }

    /// Through the span the attribution GiST indexes hold (`jobs::session_span!`), then
    /// exactly.
    fn open_during(from: &str, to: &str) -> String {
        format!(
            "({}) && tstzrange(to_timestamp({from}), to_timestamp({to}), '[]') \
             AND acctstarttime <= to_timestamp({to}) \
             AND (acctstoptime IS NULL OR acctstoptime >= to_timestamp({from}))",
            session_span!()
        )
    }

    fn overlaps(column: &str, p: &str, _host_v4: bool) -> Option<String> {
        Some(format!("{column} && {p}::inet"))
    }

    fn bind_ids<'q>(
        q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
        ids: Vec<i64>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        q.bind(ids)
    }

    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

    fn open_rows() -> &'static str {
        &OPEN_ROWS_SQL
    }

    const VERSIONED: bool = true;

    const STALE_OPEN_ROWS: &'static str = "SELECT radacctid, acctuniqueid, username, host(nasipaddress), \
         floor(date_part('epoch', COALESCE(acctupdatetime, acctstarttime)))::int8 \
         FROM radacct WHERE acctstoptime IS NULL \
         AND COALESCE(acctupdatetime, acctstarttime) < to_timestamp($1) \
         ORDER BY COALESCE(acctupdatetime, acctstarttime), radacctid LIMIT $2";

    const MARK_ONLINE: &'static str = "UPDATE subscribers s SET is_online = true WHERE NOT s.is_online AND EXISTS \
         (SELECT 1 FROM radacct r WHERE r.username = s.username AND r.acctstoptime IS NULL)";

    const MARK_OFFLINE: &'static str = "UPDATE subscribers s SET is_online = false WHERE s.is_online AND NOT EXISTS \
         (SELECT 1 FROM radacct r WHERE r.username = s.username AND r.acctstoptime IS NULL)";

    const COUNT_ARCHIVABLE: &'static str = "SELECT count(*) FROM radacct WHERE acctstoptime IS NOT NULL \
         AND acctstoptime < to_timestamp($1)";

    const ARCHIVABLE_ROWS: &'static str = "SELECT radacctid, username, floor(date_part('epoch', acctstoptime))::int8 \
         FROM radacct WHERE acctstoptime IS NOT NULL AND acctstoptime < to_timestamp($1) \
         ORDER BY acctstoptime, radacctid LIMIT $2";

    const NAS_ROWS: &'static str = "SELECT id::int8, nasname, shortname, secret, coa_port::int8, api_port::int8, \
         api_username, api_password, api_tls, api_tls_name FROM nas ORDER BY id";

    fn close_nas() -> &'static str {
        &CLOSE_NAS_SQL
    }

    const JOB_RUN_START: &'static str = "INSERT INTO job_runs (job, node, started_at) \
         VALUES ($1, $2, clock_timestamp()) RETURNING id";

    const JOB_RUN_FINISH: &'static str = "UPDATE job_runs SET finished_at = clock_timestamp(), \
         rows = $2, error = $3 WHERE id = $1";

    const TRIM_JOB_RUNS: &'static str = "DELETE FROM job_runs WHERE started_at < to_timestamp($1)";
}

/// `radacctid` then every write column, converted to text / seconds.
static SELECT_LIST: LazyLock<String> =
    LazyLock::new(|| select_list(Columns::All, PgStore::read_back));

static LOAD_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM radacct WHERE acctuniqueid = ANY($1::text[]) FOR UPDATE",
        *SELECT_LIST
    )
});

/// Accounting-On/Off's bulk close, returning the rows it closed.
static CLOSE_NAS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE radacct SET acctstoptime = to_timestamp($2), \
         acctupdatetime = to_timestamp($2), \
         acctsessiontime = $2 - floor(date_part('epoch', acctstarttime))::int8, \
         acctterminatecause = $3 \
         WHERE acctstoptime IS NULL AND nasipaddress = $1::inet AND acctstarttime <= to_timestamp($2) \
         RETURNING {}",
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

/// `INSERT … SELECT … FROM unnest(<one array per write column>) RETURNING radacctid,
/// acctuniqueid`, parameters numbered from `$first`.
fn insert_statement(first: usize) -> String {
    format!("{} RETURNING radacctid, acctuniqueid", insert_core(first))
}

/// `INSERT … SELECT … FROM unnest(<one array per write column>)`, parameters from `$first`.
fn insert_core(first: usize) -> String {
    let params: Vec<String> = Columns::Write
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", first + i, array_type(c.kind)))
        .collect();
    let aliases: Vec<String> = (1..=Columns::Write.count())
        .map(|i| format!("c{i}"))
        .collect();
    let exprs: Vec<String> = Columns::Write
        .iter()
        .enumerate()
        .map(|(i, c)| from_unnested(c.kind, &format!("c{}", i + 1)))
        .collect();
    let names: Vec<&str> = Columns::Write.iter().map(|c| c.name).collect();
    format!(
        "INSERT INTO radacct ({}) SELECT {} FROM unnest({}) AS u({})",
        names.join(", "),
        exprs.join(", "),
        params.join(", "),
        aliases.join(", ")
    )
}

/// `UPDATE radacct AS r SET … FROM unnest(ids, [versions,] <one array per write column>)`
/// matched on `radacctid`, and when `guarded` only where the row's `xmin` is the version read;
/// parameters numbered from `$first`.
fn update_statement(first: usize, guarded: bool) -> String {
    let all: Vec<&Column> = Columns::Write.iter().collect();
    update_core(first, guarded, &all, &[])
}

/// The update of [`update_statement`] for the write columns `set` (set from the arrays) and
/// `kept` (set from the arrays where those hold a value, else left as they are), bound in that
/// order after the ids (and versions); `acctuniqueid` is never set.
fn update_core(first: usize, guarded: bool, set: &[&Column], kept: &[&Column]) -> String {
    let mut params = vec![format!("${first}::int8[]")];
    let mut aliases = vec!["id".to_owned()];
    if guarded {
        params.push(format!("${}::text[]", first + 1));
        aliases.push("version".to_owned());
    }
    let mut sets = Vec::new();
    for (n, column) in set.iter().chain(kept).enumerate() {
        let (c, kind) = (column.name, column.kind);
        params.push(format!("${}::{}", first + aliases.len(), array_type(kind)));
        let alias = format!("c{}", n + 1);
        let value = from_unnested(kind, &format!("u.{alias}"));
        aliases.push(alias);
        if c == "acctuniqueid" {
            continue;
        }
        if n < set.len() {
            sets.push(format!("{c} = {value}"));
        } else {
            sets.push(format!("{c} = COALESCE({value}, r.{c})"));
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

/// The open rows' index columns and versions.
static OPEN_ROWS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, xmin::text FROM radacct WHERE acctstoptime IS NULL",
        select_list(Columns::Index, PgStore::read_back)
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

/// Binds one array per write column, in table order.
fn bind_columns<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    rows: &'q [Row],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    bind_some_columns(q, rows, Columns::Write.iter())
}

/// Binds one array per column of `columns`, in order. (A value of the other kind cannot
/// occur: each column's kind matches its field, checked where the columns are declared.)
fn bind_some_columns<'q, 'c>(
    mut q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    rows: &'q [Row],
    columns: impl IntoIterator<Item = &'c Column>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    for c in columns {
        if c.kind.is_int() {
            let col: Vec<Option<i64>> = rows
                .iter()
                .map(|r| match c.get(r) {
                    Value::Int(v) => v,
                    Value::Text(_) => None,
                })
                .collect();
            q = q.bind(col);
        } else {
            // Borrowed: the text is copied once, into the statement's arguments.
            let col: Vec<Option<&'q str>> = rows
                .iter()
                .map(|r| match c.get(r) {
                    Value::Text(v) => v,
                    Value::Int(_) => None,
                })
                .collect();
            q = q.bind(col);
        }
    }
    q
}

/// PostgreSQL connection pools.
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Everything but the writer: API queries and exports, jobs, migrations, index rebuilds.
    /// No server-side statement timeout (an export streams for minutes, `CREATE INDEX
    /// CONCURRENTLY` runs for as long as it takes).
    pool: PgPool,
    /// The ingest writer's reads, writes and transactions, with the server-side statement and
    /// lock timeouts of [`StoreOptions::write_statement_timeout`].
    write_pool: PgPool,
    /// Whether `radacct.acctuniqueid` has a unique index (looked up once, on first use).
    unique_key: std::sync::Arc<tokio::sync::OnceCell<bool>>,
    /// The listeners' connections (outside the other pools: each is held for as long as its
    /// listener runs): the change feed's, and the event hub's.
    listen_pool: PgPool,
    /// How [`LockConnection`]s connect (the pools' settings; each gets its own
    /// `application_name`).
    lock_connect: std::sync::Arc<PgConnectOptions>,
    /// How long a lock connection may take to connect.
    connect_timeout: std::time::Duration,
    /// Disconnects' action locks: each attempt in progress holds a transaction for its
    /// duration (seconds when a NAS does not answer), so they have connections of their own
    /// and a mass disconnect never starves the API and the jobs of theirs.
    action_pool: PgPool,
    /// Whether events are appended, and the signal of commits that appended some.
    pub(super) outbox: Outbox,
}

impl PgStore {
    pub(super) fn open(url: &str, opts: &StoreOptions) -> Result<PgStore> {
        // Custom plans for every execution: sqlx prepares statements, and a generic plan
        // cached while radacct was small (or never analyzed) keeps a sequential scan for the
        // batch lookup `acctuniqueid = ANY($1)` for the life of the connection (measured: 4x
        // slower interims). The writer's connections are the exception (`write_connect`).
        let mut connect = sqlx::postgres::PgConnectOptions::from_str(url)?
            .application_name("radacctd")
            .options([("plan_cache_mode", "force_custom_plan")]);
        if let Some(origin) = &opts.origin {
            connect = connect.options([(ORIGIN_SETTING, origin.as_str())]);
        }
        let pool_of = |connect| {
            PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_lazy_with(connect)
        };
        // The writer's guarded statements (`guarded.rs`) take longer to plan than a small batch
        // takes to run, so their connections keep generic plans (`auto`: after five custom
        // ones, as long as the generic one is no costlier), with sequential scans priced out:
        // every statement of the writer finds its rows by a key, and a generic plan made while
        // radacct was empty must not scan it once it is large (PostgreSQL also plans again
        // after each ANALYZE). Its transactions (the locked path) and key lookups are planned
        // afresh as elsewhere (`PgStore::begin`, `persistent(false)`).
        let connect_writer = connect
            .clone()
            .options([("plan_cache_mode", "auto"), ("enable_seqscan", "off")]);
        let write_connect = match opts.write_statement_timeout {
            Some(t) => {
                let ms = t.as_millis().max(1).to_string();
                connect_writer
                    .application_name("radacctd writer")
                    .options([("statement_timeout", ms.as_str()), ("lock_timeout", &ms)])
            }
            None => connect_writer.application_name("radacctd writer"),
        };
        let listen_connect = connect.clone().application_name("radacctd listener");
        let action_connect = connect.clone().application_name("radacctd disconnect");
        Ok(PgStore {
            // Opened only while disconnects run (idle connections close after 10 minutes).
            action_pool: PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_lazy_with(action_connect),
            listen_pool: PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(opts.acquire_timeout)
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_lazy_with(listen_connect),
            lock_connect: std::sync::Arc::new(connect.clone()),
            connect_timeout: opts.acquire_timeout,
            pool: pool_of(connect),
            write_pool: pool_of(write_connect),
            unique_key: Default::default(),
            outbox: Outbox::new(opts.events),
        })
    }

    /// Open and idle connections, the pools together.
    pub(super) fn pool_stats(&self) -> (u32, u32) {
        let pools = [&self.pool, &self.write_pool, &self.action_pool];
        (
            pools.iter().map(|p| p.size()).sum(),
            pools.iter().map(|p| p.num_idle() as u32).sum(),
        )
    }

    /// The pool, for code in this module's siblings that needs raw access (tests, jobs).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// How the writer's statements are planned: `plan_cache_mode` and `enable_seqscan` on a
    /// connection of its pool, then within one of its transactions (see [`PgStore::open`]).
    pub async fn writer_planning(&self) -> Result<[String; 4]> {
        const SHOW: &str = "SELECT current_setting('plan_cache_mode'), \
                            current_setting('enable_seqscan')";
        let (mode, seqscan): (String, String) = sqlx::query_as(SHOW)
            .persistent(false)
            .fetch_one(&self.write_pool)
            .await?;
        let mut tx = self.begin().await?;
        let (tx_mode, tx_seqscan): (String, String) = sqlx::query_as(SHOW)
            .persistent(false)
            .fetch_one(&mut *tx.tx)
            .await?;
        tx.tx.rollback().await?;
        Ok([mode, seqscan, tx_mode, tx_seqscan])
    }

    /// Pending migrations, then `radacct`'s fillfactor when given, on a connection of their own
    /// holding [`PREPARE_LOCK`]: of several nodes starting together one migrates and the others
    /// then find nothing pending. (sqlx's migrator also takes an advisory lock, but waits for
    /// it blocked in a statement, and leaves it held on the connection when a migration fails;
    /// on a connection of its own, closed after, nothing outlives the call.) Returns the
    /// fillfactor set, if it changed.
    pub(super) async fn prepare(&self, fillfactor: Fillfactor) -> Result<Option<u8>> {
        let mut lock = self
            .wait_for_lock(PREPARE_LOCK, "radacctd migrations", "migrations")
            .await?;
        let result = async {
            // `run` takes an `Acquire`, whose future is not `Send` for a borrowed connection;
            // `run_direct` is what it calls, with the migrator's own locking as configured.
            MIGRATOR.run_direct(None, &mut lock.conn, false).await?;
            fillfactor::apply(&mut lock.conn, fillfactor).await
        }
        .await;
        lock.close().await;
        result
    }

    pub(super) async fn set_radacct_fillfactor(&self, fillfactor: u8) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        fillfactor::set_radacct_fillfactor(&mut conn, fillfactor).await
    }

    /// Whether `radacct.acctuniqueid` has a valid, non-deferrable unique index (FreeRADIUS's
    /// schema declares it `UNIQUE`). Only then can a new row be inserted without looking for
    /// its key first: the insert itself finds an existing row (`ON CONFLICT DO NOTHING` needs
    /// an immediate arbiter). Checked once per process.
    pub async fn key_is_unique(&self) -> Result<bool> {
        self.unique_key
            .get_or_try_init(|| async {
                let unique: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
                     ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                     WHERE i.indrelid = 'radacct'::regclass AND i.indisunique AND i.indisvalid \
                     AND i.indimmediate AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL \
                     AND a.attname = 'acctuniqueid')",
                )
                .fetch_one(&self.pool)
                .await?;
                if !unique {
                    tracing::warn!(
                        "radacct.acctuniqueid has no unique index (FreeRADIUS's schema declares \
                         it UNIQUE): every new session is looked up before it is inserted"
                    );
                }
                Ok::<_, StoreError>(unique)
            })
            .await
            .copied()
    }

    /// The rows with these keys (no locks) and their row versions.
    pub async fn load_versions(
        &self,
        keys: &[&str],
    ) -> Result<(HashMap<String, Row>, HashMap<String, RowVersion>)> {
        let rows = sqlx::query(LOAD_VERSIONS_SQL.as_str())
            .persistent(false)
            .bind(keys)
            .fetch_all(&self.write_pool)
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        let mut versions = HashMap::with_capacity(rows.len());
        for r in &rows {
            let row = read_row(r, Columns::All)?;
            if let Some(v) = RowVersion::parse(r.try_get(Columns::All.count())?) {
                versions.insert(row.acctuniqueid.clone(), v);
            }
            out.insert(row.acctuniqueid.clone(), row);
        }
        Ok((out, versions))
    }

    pub(super) async fn begin(&self) -> Result<PgTx> {
        let mut tx = self.write_pool.begin().await?;
        // The locked path's statements, unlike the guarded ones, plan afresh (see `open`).
        sqlx::raw_sql(
            "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL enable_seqscan = on",
        )
        .execute(&mut *tx)
        .await?;
        Ok(PgTx {
            tx,
            outbox: self.outbox.clone(),
            appended: false,
        })
    }

    pub(super) async fn close(&self) {
        self.write_pool.close().await;
        self.action_pool.close().await;
        self.pool.close().await;
    }

    /// Moves up to `batch` closed rows stopped before `cutoff` (oldest first) to
    /// `radacct_archive` in one statement, the rows picked `FOR UPDATE SKIP LOCKED` so a batch
    /// never waits for (or blocks for long) the ingest writer. `cols`: the columns moved. The
    /// moved sessions' action log rows move to `session_actions_archive` (every column, ids
    /// kept) in the same statement.
    pub(super) async fn archive_batch(&self, cutoff: i64, batch: i64, cols: &str) -> Result<u64> {
        let acols = ACTION_TABLE_COLUMNS;
        // Every data-modifying CTE runs, referenced or not, in the statement's one snapshot.
        let sql = format!(
            "WITH batch AS (SELECT radacctid FROM radacct WHERE acctstoptime IS NOT NULL \
             AND acctstoptime < to_timestamp($1) ORDER BY acctstoptime LIMIT $2 \
             FOR UPDATE SKIP LOCKED), \
             moved AS (DELETE FROM radacct r USING batch b WHERE r.radacctid = b.radacctid \
             RETURNING r.*), \
             actions AS (DELETE FROM session_actions a USING moved m \
             WHERE a.radacctid = m.radacctid RETURNING a.*), \
             kept AS (INSERT INTO session_actions_archive ({acols}) SELECT {acols} FROM actions) \
             INSERT INTO radacct_archive ({cols}) SELECT {cols} FROM moved"
        );
        let n = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cutoff)
            .bind(batch)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }
}

/// A PostgreSQL transaction.
#[derive(Debug)]
pub struct PgTx {
    tx: Transaction<'static, Postgres>,
    /// The store's outbox.
    pub(super) outbox: Outbox,
    /// Whether this transaction appended events (its commit says so to the outbox).
    pub(super) appended: bool,
}

impl PgTx {
    pub(super) async fn load(&mut self, keys: &[&str]) -> Result<HashMap<String, Row>> {
        let rows = sqlx::query(LOAD_SQL.as_str())
            .bind(keys)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in &rows {
            let row = read_row(r, Columns::All)?;
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

    /// The transaction's connection.
    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub(super) fn into_inner(self) -> Transaction<'static, Postgres> {
        self.tx
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    /// The write path's statements as PostgreSQL receives them are pinned: a changed text is
    /// a new statement to the server (its plans, `pg_stat_statements`), so it must be a
    /// deliberate change of `testdata/postgres_write.sql`.
    #[test]
    fn the_write_path_sends_the_pinned_statements() {
        let mut sent = vec![
            ("pg load".to_owned(), LOAD_SQL.as_str()),
            ("pg load_versions".to_owned(), LOAD_VERSIONS_SQL.as_str()),
            ("pg insert".to_owned(), INSERT_SQL.as_str()),
            ("pg update".to_owned(), UPDATE_SQL.as_str()),
            ("pg open_rows".to_owned(), PgStore::open_rows()),
            ("pg close_nas".to_owned(), PgStore::close_nas()),
        ];
        for (parts, sql) in guarded::WRITE_GUARDED_SQL.iter().enumerate().skip(1) {
            sent.push((format!("pg write_guarded {parts}"), sql.as_str()));
        }
        sent.push((
            "pg event_batches insert".to_owned(),
            super::super::events::PG_QUEUE_INSERT.as_str(),
        ));
        let mut text = String::new();
        for (name, sql) in sent {
            let _ = writeln!(text, "-- {name}\n{sql}");
        }
        assert_eq!(text, include_str!("../testdata/postgres_write.sql"));
    }
}
