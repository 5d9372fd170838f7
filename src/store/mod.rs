//! All SQL lives here: PostgreSQL (production, FreeRADIUS's shared `radacct`) and SQLite (the
//! embedded default) behind one `Store` / `Tx` interface, so everything above is store-blind.
//!
//! Callers never build SQL; identifiers come from fixed lists in this module only.
//!
//! # Two dialects, one way
//!
//! Each database has one file that holds all of its SQL: `postgres.rs` (`PgStore`) and
//! `sqlite.rs` (`SqliteStore`). Each implements [`Dialect`]: the statement texts and fragments
//! that differ between them. Logic both share is written once, here and in `jobs.rs` and
//! `query.rs`, and asks the dialect for its SQL; [`each_store!`] compiles such a body once per
//! database (sqlx's types differ per database, so the body is monomorphic in each arm).
//! Logic that itself differs (PostgreSQL's batched array writes against SQLite's statement per
//! row, the archive move, building indexes) stays in the database's file. Rows of `radacct`
//! are read by one reader, [`read_row`], over the column table of `sessions::row`.

mod actions;
mod attribution;
mod events;
mod jobs;
mod postgres;
mod query;
mod sqlite;
mod usage;

use std::collections::HashMap;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::Row as _;

use crate::sessions::{
    Column, Columns, OwnedValue, ResellerResolver, Row, RowVersion, Session, Text,
};

pub use actions::{
    ACTION_LOCK_CLASS, ActionLock, ActionRecord, METHOD_NOT_SENT, StoredAction, action_lock_key,
};
pub use attribution::{AuditRecord, StoredAudit};
pub use events::{EVENTS_CHANNEL, EVENTS_SEQUENCER_LOCK, Sequenced};
pub use jobs::{ArchivableRow, StaleRow};
pub use postgres::{
    CHANGES_CHANNEL, ChangeListener, ChangeNotice, Consequences, DEFAULT_RADACCT_FILLFACTOR,
    ENSURE_INDEXES_LOCK, GuardedWrite, JOBS_LEADER_LOCK, LockConnection, PREPARE_LOCK, PgStore,
};
pub use query::{ExportStart, SessionQuery};
pub use sqlite::SqliteStore;
pub use usage::{Throttle, UsageBucket, UsageTotal};

/// The SQL that differs between the databases: implemented by [`PgStore`] (postgres.rs) and
/// [`SqliteStore`] (sqlite.rs), used by the logic both share.
pub(crate) trait Dialect {
    type Db: sqlx::Database;

    /// The `n`th bound parameter (from 1).
    fn param(n: usize) -> String;
    /// A column as read back into a [`Row`]: text, or whole seconds for times.
    fn read_back(c: &Column) -> String;
    /// A parameter `p` of epoch seconds, as a timestamp.
    fn timestamp(p: &str) -> String;
    /// A timestamp expression as whole epoch seconds (int8).
    fn epoch(expr: &str) -> String;
    /// The condition: the NAS address is the text parameter `p`.
    fn nas_is(p: &str) -> String;
    /// `expr` lower-cased, ASCII letters only (PostgreSQL's `lower()` folds by locale;
    /// SQLite's is ASCII-only).
    fn lower(expr: &str) -> String;
    /// The condition: text `hay` contains text `needle`.
    fn contains(hay: &str, needle: &str) -> String;
    /// The condition: text `hay` starts with text `needle`.
    fn starts_with(hay: &str, needle: &str) -> String;
    /// The condition: the user belongs to one of the resellers bound by [`Dialect::bind_ids`]
    /// as parameter `p`.
    fn owned_by_resellers(p: &str) -> String;
    /// The condition: the row's session was open at some moment from `from` to `to` (epoch
    /// second parameters), i.e. started by `to` and not stopped before `from`
    /// (`sessions::attribution::Window::holds`).
    fn open_during(from: &str, to: &str) -> String;
    /// The condition: the address column `column` overlaps the address or block in the text
    /// parameter `p` (`host_v4`: an IPv4 address). `None` when the database cannot say, and
    /// the caller compares the rows it reads (`sessions::attribution::matched_column`).
    fn overlaps(column: &str, p: &str, host_v4: bool) -> Option<String>;
    /// Binds a list of ids as one parameter.
    fn bind_ids<'q>(
        q: sqlx::query::Query<'q, Self::Db, <Self::Db as sqlx::Database>::Arguments>,
        ids: Vec<i64>,
    ) -> sqlx::query::Query<'q, Self::Db, <Self::Db as sqlx::Database>::Arguments>;
    /// Starts the read-only transaction of an export: one snapshot for its count and rows.
    const BEGIN_SNAPSHOT: &'static str;

    /// Every open row's [`Columns::Index`] columns, then its version where the store has
    /// them (see [`Dialect::VERSIONED`]).
    fn open_rows() -> &'static str;
    /// Whether [`Dialect::OPEN_ROWS`] ends with the row version (PostgreSQL's `xmin`).
    const VERSIONED: bool;
    /// Open rows last seen before `$1`, oldest first, at most `$2`: `radacctid, acctuniqueid,
    /// username, nasipaddress, last seen`.
    const STALE_OPEN_ROWS: &'static str;
    /// Marks online the subscribers with an open row.
    const MARK_ONLINE: &'static str;
    /// Marks offline the subscribers without one.
    const MARK_OFFLINE: &'static str;
    /// How many closed rows stopped before `$1`.
    const COUNT_ARCHIVABLE: &'static str;
    /// The first `$2` rows stopped before `$1`: `radacctid, username, acctstoptime`.
    const ARCHIVABLE_ROWS: &'static str;
    /// Every row of the `nas` table: `id, nasname, shortname, secret, coa_port, api_port,
    /// api_username, api_password, api_tls, api_tls_name`.
    const NAS_ROWS: &'static str;
    /// Accounting-On/Off: closes the open rows of NAS `$1` started at or before `$2` with
    /// cause `$3`, returning each closed row as [`read_row`] reads [`Columns::All`] (the
    /// `session.stopped` events carry them).
    fn close_nas() -> &'static str;
    /// A run of job `$1` by node `$2` starts now: inserts its `job_runs` row, returning its id.
    const JOB_RUN_START: &'static str;
    /// Run `$1` ended now having done `$2` rows, with error `$3` (NULL: it succeeded).
    const JOB_RUN_FINISH: &'static str;
    /// Deletes the `job_runs` rows started before `$1` (epoch seconds).
    const TRIM_JOB_RUNS: &'static str;
}

/// Runs a body written once against whichever store `$value` (a [`Store`] or [`Tx`]) is:
/// `$s` is the `PgStore`/`PgTx` or `SqliteStore`/`SqliteTx`, and `$d` (when named) the
/// [`Dialect`].
macro_rules! each_store {
    ($enum:ident, $value:expr, $s:ident => $body:expr) => {
        match $value {
            $enum::Postgres($s) => $body,
            $enum::Sqlite($s) => $body,
        }
    };
    ($enum:ident, $value:expr, $s:ident: $d:ident => $body:expr) => {
        match $value {
            $enum::Postgres($s) => {
                type $d = $crate::store::PgStore;
                $body
            }
            $enum::Sqlite($s) => {
                type $d = $crate::store::SqliteStore;
                $body
            }
        }
    };
}
pub(crate) use each_store;

/// Reads a row selected with `columns` (`radacctid` first and the others in table order,
/// each through [`Dialect::read_back`]): the columns left out stay empty. Any further
/// selected values start at index `columns.len()`.
pub(crate) fn read_row<'r, R>(r: &'r R, columns: Columns) -> Result<Row>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut row = Row::default();
    for (i, c) in columns.iter().enumerate() {
        let v = if c.kind.is_int() {
            OwnedValue::Int(r.try_get(i)?)
        } else {
            OwnedValue::Text(r.try_get(i)?)
        };
        c.set(&mut row, v);
    }
    Ok(row)
}

/// The select list of `columns`, each through `read_back` (the dialect's).
pub(crate) fn select_list(columns: Columns, read_back: fn(&Column) -> String) -> String {
    columns.iter().map(read_back).collect::<Vec<_>>().join(", ")
}

/// A store failure, split by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or gave up the connection: retrying the same work later
    /// may succeed; splitting a batch will not help.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The statement itself failed (constraint, missing table, bad value, lock timeout).
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
    /// The work took longer than its deadline (a locked table, an overloaded server).
    #[error("database did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Config(String),
    /// What the database holds cannot be read (an outbox batch whose lines do not parse).
    #[error("unreadable data in the database: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// The database is away or did not answer in time: retrying the same work at once (or
    /// in smaller pieces) will not help.
    pub fn is_outage(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => StoreError::Unavailable(e),
            E::Database(db) => match db.code().as_deref() {
                // Class 08 connection exception, 57P0x operator intervention (shutdown),
                // 53xxx insufficient resources; 55P03 lock_not_available and 57014
                // query_canceled: the writer's server-side lock or statement timeout fired (a
                // locked table, a commit waiting for a replica). The same work may succeed
                // later; splitting it will not help.
                Some(c)
                    if c.starts_with("08")
                        || c.starts_with("57P")
                        || c.starts_with("53")
                        || c == "55P03"
                        || c == "57014" =>
                {
                    StoreError::Unavailable(e)
                }
                _ => StoreError::Query(e),
            },
            _ => StoreError::Query(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A row of the `nas` table (FreeRADIUS's columns that matter here, plus radacctd's).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct NasRow {
    pub id: i64,
    pub nasname: String,
    pub shortname: String,
    pub secret: String,
    pub coa_port: Option<i64>,
    pub api_port: Option<i64>,
    pub api_username: Option<String>,
    pub api_password: Option<String>,
    /// RouterOS API-SSL instead of the plain API.
    pub api_tls: bool,
    /// The name the router's certificate must carry; `None`: the NAS's IP address.
    pub api_tls_name: Option<String>,
}

impl std::fmt::Debug for NasRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NasRow")
            .field("id", &self.id)
            .field("nasname", &self.nasname)
            .field("shortname", &self.shortname)
            .field("secret", &"***")
            .field("coa_port", &self.coa_port)
            .field("api_port", &self.api_port)
            .field("api_username", &self.api_username)
            .field("api_tls", &self.api_tls)
            .field("api_tls_name", &self.api_tls_name)
            .finish_non_exhaustive()
    }
}

/// Connection settings the stores share.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// PostgreSQL: the server-side `statement_timeout` and `lock_timeout` of the writer's
    /// connections (the ingest writer's reads, writes and transactions). Set just under the
    /// commit deadline, so that a statement the writer gave up on does not go on waiting on the
    /// server (for a lock, a synchronous replica) and keep its connection. `None`: no limit.
    pub write_statement_timeout: Option<Duration>,
    /// PostgreSQL: this process's `radacctd.origin` setting on every connection, which the
    /// change-notification trigger puts in each notification so that the process can skip its
    /// own changes (docs/HA.md#index-coherence). `None`: notifications carry no origin.
    pub origin: Option<String>,
    /// `events.enabled`: whether the changes the store writes on its own account (action log
    /// rows, fair-use crossings) append their session events, and whether [`Tx::add_events`]
    /// and [`Store::add_events`] append anything at all.
    pub events: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            write_statement_timeout: None,
            origin: None,
            events: true,
        }
    }
}

/// A row another writer changed, as [`Store::changed_rows`] found it.
#[derive(Debug, Clone)]
pub enum ChangedRow {
    /// Open: the index holds it as this.
    Open(Box<Session>),
    /// Closed: the index must not hold it.
    Closed { radacctid: i64, acctuniqueid: Text },
}

/// The database behind radacctd.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// One transaction on either store.
#[derive(Debug)]
pub enum Tx {
    Postgres(postgres::PgTx),
    Sqlite(sqlite::SqliteTx),
}

impl Store {
    /// Opens a pool for `url` (`postgres://…` or `sqlite://…`). PostgreSQL connects lazily, so
    /// a daemon can start while the database is down; SQLite creates the file when missing.
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::open(url, opts)?))
        } else if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::open(url, opts).await?))
        } else {
            Err(StoreError::Config(format!(
                "database.url must start with postgres:// or sqlite: (got {:?})",
                url.split(':').next().unwrap_or_default()
            )))
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Runs pending migrations (`migrations/postgres` or `migrations/sqlite`); on PostgreSQL
    /// under an advisory lock, so that nodes starting together migrate one after the other.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Postgres(s) => s.prepare(postgres::Fillfactor::Leave).await.map(|_| ()),
            Store::Sqlite(s) => s.migrate().await,
        }
    }

    /// Pending migrations, then the configured `radacct` fillfactor (PostgreSQL only; ignored
    /// with a warning on SQLite; unset: [`DEFAULT_RADACCT_FILLFACTOR`] for a table without a
    /// fillfactor of its own). What `serve` runs at start-up, or later, once the database
    /// is back, when it was down at start-up. On PostgreSQL both run under one advisory lock
    /// ([`PREPARE_LOCK`]): two nodes preparing at once take turns.
    pub async fn prepare(&self, radacct_fillfactor: Option<u8>) -> Result<()> {
        let changed = match self {
            Store::Postgres(s) => {
                s.prepare(postgres::Fillfactor::Configured(radacct_fillfactor))
                    .await?
            }
            Store::Sqlite(s) => {
                s.migrate().await?;
                if radacct_fillfactor.is_some() {
                    tracing::warn!(
                        "database.radacct_fillfactor only applies to PostgreSQL; ignored"
                    );
                }
                None
            }
        };
        if let Some(ff) = changed {
            tracing::info!(fillfactor = ff, "radacct fillfactor set");
        }
        Ok(())
    }

    /// PostgreSQL: a connection of its own for session-level advisory locks (see
    /// [`PgStore::lock_connection`]). SQLite: `None` (one node; nothing to coordinate).
    pub async fn lock_connection(
        &self,
        application_name: &str,
        idle_session_timeout: Option<Duration>,
    ) -> Result<Option<LockConnection>> {
        match self {
            Store::Postgres(s) => s
                .lock_connection(application_name, idle_session_timeout)
                .await
                .map(Some),
            Store::Sqlite(_) => Ok(None),
        }
    }

    /// PostgreSQL: sets radacct's `fillfactor` when it differs; returns whether it changed.
    /// SQLite has no such setting: `Ok(false)`.
    pub async fn set_radacct_fillfactor(&self, fillfactor: u8) -> Result<bool> {
        match self {
            Store::Postgres(s) => s.set_radacct_fillfactor(fillfactor).await,
            Store::Sqlite(_) => Ok(false),
        }
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        each_store!(Store, self, s => {
            sqlx::query("SELECT 1").execute(s.pool()).await?;
            Ok(())
        })
    }

    /// The index entry of every open row (`acctstoptime IS NULL`), streamed to `f` (the index
    /// rebuild, the sweeper's reconciliation): owned by the reseller `resolver` finds, with its
    /// row version on PostgreSQL (`xmin`, read with the row; see `Session::row_version`). Only
    /// the columns an entry holds are read.
    pub async fn for_each_open_session(
        &self,
        resolver: &dyn ResellerResolver,
        mut f: impl FnMut(Session) + Send,
    ) -> Result<()> {
        each_store!(Store, self, s: D => {
            let mut stream = sqlx::query(D::open_rows()).fetch(s.pool());
            while let Some(r) = stream.try_next().await? {
                let version = if D::VERSIONED {
                    RowVersion::parse(&r.try_get::<String, _>(Columns::Index.count())?)
                } else {
                    None
                };
                f(Session::indexed(&read_row(&r, Columns::Index)?, resolver, version));
            }
            Ok(())
        })
    }

    /// The row with this key, if any (tests, tools).
    pub async fn row_by_key(&self, acctuniqueid: &str) -> Result<Option<Row>> {
        let mut tx = self.begin().await?;
        let mut rows = tx.load(&[acctuniqueid]).await?;
        tx.rollback().await?;
        Ok(rows.remove(acctuniqueid))
    }

    /// All rows of the `nas` table.
    pub async fn nas_rows(&self) -> Result<Vec<NasRow>> {
        each_store!(Store, self, s: D => {
            let rows = sqlx::query(D::NAS_ROWS).fetch_all(s.pool()).await?;
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
        })
    }

    /// Whether events are appended ([`StoreOptions::events`]).
    pub fn events_enabled(&self) -> bool {
        each_store!(Store, self, s => s.outbox.enabled)
    }

    pub async fn begin(&self) -> Result<Tx> {
        match self {
            Store::Postgres(s) => Ok(Tx::Postgres(s.begin().await?)),
            Store::Sqlite(s) => Ok(Tx::Sqlite(s.begin().await?)),
        }
    }

    /// The pool's size limit (`database.max_connections`).
    /// Whether commits of different sessions may run at once (PostgreSQL); SQLite has one
    /// writer at a time.
    /// PostgreSQL: a connection listening for the change notifications of every writer's
    /// committed radacct changes. SQLite: `None` (one process writes it).
    pub async fn listen_changes(&self) -> Result<Option<ChangeListener>> {
        match self {
            Store::Postgres(pg) => pg.listen_changes().await.map(Some),
            Store::Sqlite(_) => Ok(None),
        }
    }

    /// The rows with these ids, for the live index: open rows as sessions, closed rows by
    /// key. Ids without a row are absent. (SQLite: nothing; no one else writes it.)
    pub async fn changed_rows(
        &self,
        ids: &[i64],
        resolver: &dyn ResellerResolver,
    ) -> Result<Vec<ChangedRow>> {
        let Store::Postgres(pg) = self else {
            return Ok(Vec::new());
        };
        Ok(pg
            .rows_by_ids(ids)
            .await?
            .into_iter()
            .map(|(row, version, open)| {
                if open {
                    ChangedRow::Open(Box::new(Session::indexed(&row, resolver, version)))
                } else {
                    ChangedRow::Closed {
                        radacctid: row.radacctid.unwrap_or_default(),
                        acctuniqueid: row.acctuniqueid.as_str().into(),
                    }
                }
            })
            .collect())
    }

    pub fn concurrent_writes(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    pub fn max_connections(&self) -> u32 {
        each_store!(Store, self, s => s.pool().options().get_max_connections())
    }

    /// (connections open, of which idle), for metrics.
    pub fn pool_stats(&self) -> (u32, u32) {
        match self {
            Store::Postgres(s) => s.pool_stats(),
            Store::Sqlite(s) => (s.pool().size(), s.pool().num_idle() as u32),
        }
    }

    pub async fn close(&self) {
        each_store!(Store, self, s => s.close().await)
    }
}

impl Tx {
    /// The rows with these keys, locked for this transaction where the store can.
    pub async fn load(&mut self, keys: &[&str]) -> Result<HashMap<String, Row>> {
        each_store!(Tx, self, t => t.load(keys).await)
    }

    /// Inserts new rows and fills in their `radacctid`.
    pub async fn insert(&mut self, rows: &mut [Row]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        each_store!(Tx, self, t => t.insert(rows).await)
    }

    /// Writes every column of existing rows (matched by `radacctid`).
    pub async fn update(&mut self, rows: &[Row]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        each_store!(Tx, self, t => t.update(rows).await)
    }

    /// Accounting-On/Off: closes the open rows of `nas` started at or before `time`, session
    /// time recomputed from the start, with `cause`. Returns the rows it closed, as closed,
    /// by id.
    pub async fn close_nas(&mut self, nas: &str, time: i64, cause: &str) -> Result<Vec<Row>> {
        each_store!(Tx, self, t: D => {
            let rows = sqlx::query(D::close_nas())
                .bind(nas)
                .bind(time)
                .bind(cause)
                .fetch_all(t.conn())
                .await?;
            let mut closed = rows
                .iter()
                .map(|r| read_row(r, Columns::All))
                .collect::<Result<Vec<Row>>>()?;
            closed.sort_by_key(|r| r.radacctid);
            Ok(closed)
        })
    }

    /// Whether this transaction appends events (the store's [`StoreOptions::events`]).
    pub fn events_enabled(&self) -> bool {
        each_store!(Tx, self, t => t.outbox.enabled)
    }

    /// Commits; a transaction that appended events then wakes the sequencer
    /// ([`Store::events_appended`]).
    pub async fn commit(self) -> Result<()> {
        each_store!(Tx, self, t => {
            let (outbox, appended) = (t.outbox.clone(), t.appended);
            t.into_inner().commit().await?;
            if appended {
                outbox.committed();
            }
            Ok(())
        })
    }

    pub async fn rollback(self) -> Result<()> {
        each_store!(Tx, self, t => Ok(t.into_inner().rollback().await?))
    }
}
