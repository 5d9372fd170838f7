//! All SQL lives here: PostgreSQL (production, FreeRADIUS's shared `radacct`) and SQLite (the
//! embedded default) behind one `Store` / `Tx` interface, so everything above is store-blind.
//!
//! Callers never build SQL; identifiers come from fixed lists in this module only.

mod jobs;
mod postgres;
mod query;
mod sqlite;

use std::collections::HashMap;
use std::time::Duration;

use crate::sessions::{ResellerResolver, Row, Session};

pub use jobs::{ArchivableRow, StaleRow};
pub use postgres::{GuardedWrite, PgStore};
pub use query::{ExportStart, SessionQuery, SessionRecord};
pub use sqlite::SqliteStore;

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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            write_statement_timeout: None,
        }
    }
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

    /// Runs pending migrations (`migrations/postgres` or `migrations/sqlite`).
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Postgres(s) => s.migrate().await,
            Store::Sqlite(s) => s.migrate().await,
        }
    }

    /// PostgreSQL: sets radacct's `fillfactor` when it differs; returns whether it changed.
    /// SQLite has no such setting: `Ok(false)`.
    /// Pending migrations, then the configured `radacct` fillfactor (PostgreSQL only; ignored
    /// with a warning on SQLite). What `serve` runs at start-up, or later, once the database
    /// is back, when it was down at start-up.
    pub async fn prepare(&self, radacct_fillfactor: Option<u8>) -> Result<()> {
        self.migrate().await?;
        if let Some(ff) = radacct_fillfactor {
            if self.set_radacct_fillfactor(ff).await? {
                tracing::info!(fillfactor = ff, "radacct fillfactor set");
            } else if !matches!(self, Store::Postgres(_)) {
                tracing::warn!("database.radacct_fillfactor only applies to PostgreSQL; ignored");
            }
        }
        Ok(())
    }

    pub async fn set_radacct_fillfactor(&self, fillfactor: u8) -> Result<bool> {
        match self {
            Store::Postgres(s) => s.set_radacct_fillfactor(fillfactor).await,
            Store::Sqlite(_) => Ok(false),
        }
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        match self {
            Store::Postgres(s) => s.ping().await,
            Store::Sqlite(s) => s.ping().await,
        }
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
        let mut g = |row: Row, version| f(Session::indexed(&row, resolver, version));
        match self {
            Store::Postgres(s) => s.for_each_open_row(&mut g).await,
            Store::Sqlite(s) => s.for_each_open_row(&mut g).await,
        }
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
        match self {
            Store::Postgres(s) => s.nas_rows().await,
            Store::Sqlite(s) => s.nas_rows().await,
        }
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
    pub fn concurrent_writes(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    pub fn max_connections(&self) -> u32 {
        match self {
            Store::Postgres(s) => s.pool().options().get_max_connections(),
            Store::Sqlite(s) => s.pool().options().get_max_connections(),
        }
    }

    /// (connections open, of which idle), for metrics.
    pub fn pool_stats(&self) -> (u32, u32) {
        match self {
            Store::Postgres(s) => s.pool_stats(),
            Store::Sqlite(s) => (s.pool().size(), s.pool().num_idle() as u32),
        }
    }

    pub async fn close(&self) {
        match self {
            Store::Postgres(s) => s.close().await,
            Store::Sqlite(s) => s.close().await,
        }
    }
}

impl Tx {
    /// The rows with these keys, locked for this transaction where the store can.
    pub async fn load(&mut self, keys: &[&str]) -> Result<HashMap<String, Row>> {
        match self {
            Tx::Postgres(t) => t.load(keys).await,
            Tx::Sqlite(t) => t.load(keys).await,
        }
    }

    /// Inserts new rows and fills in their `radacctid`.
    pub async fn insert(&mut self, rows: &mut [Row]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        match self {
            Tx::Postgres(t) => t.insert(rows).await,
            Tx::Sqlite(t) => t.insert(rows).await,
        }
    }

    /// Writes every column of existing rows (matched by `radacctid`).
    pub async fn update(&mut self, rows: &[Row]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        match self {
            Tx::Postgres(t) => t.update(rows).await,
            Tx::Sqlite(t) => t.update(rows).await,
        }
    }

    /// Accounting-On/Off: closes the open rows of `nas` started at or before `time`, session
    /// time recomputed from the start, with `cause`. Returns the keys it closed.
    pub async fn close_nas(&mut self, nas: &str, time: i64, cause: &str) -> Result<Vec<String>> {
        match self {
            Tx::Postgres(t) => t.close_nas(nas, time, cause).await,
            Tx::Sqlite(t) => t.close_nas(nas, time, cause).await,
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            Tx::Postgres(t) => t.commit().await,
            Tx::Sqlite(t) => t.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<()> {
        match self {
            Tx::Postgres(t) => t.rollback().await,
            Tx::Sqlite(t) => t.rollback().await,
        }
    }
}

/// The radacct columns radacctd writes, in one fixed order (all but `radacctid`).
pub(crate) const WRITE_COLUMNS: [&str; 28] = [
    "acctsessionid",
    "acctuniqueid",
    "username",
    "realm",
    "nasipaddress",
    "nasportid",
    "nasporttype",
    "acctstarttime",
    "acctupdatetime",
    "acctstoptime",
    "acctinterval",
    "acctsessiontime",
    "acctauthentic",
    "connectinfo_start",
    "connectinfo_stop",
    "acctinputoctets",
    "acctoutputoctets",
    "calledstationid",
    "callingstationid",
    "acctterminatecause",
    "servicetype",
    "framedprotocol",
    "framedipaddress",
    "framedipv6address",
    "framedipv6prefix",
    "framedinterfaceid",
    "delegatedipv6prefix",
    "class",
];

/// How a column is stored, for the per-store SQL that converts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Text,
    Int,
    Time,
    /// `inet` in PostgreSQL: an address (read back with `host()`).
    Addr,
    /// `inet` holding a prefix (read back with `::text`, which keeps the length).
    Prefix,
}

pub(crate) fn column_kind(name: &str) -> ColumnKind {
    match name {
        "acctstarttime" | "acctupdatetime" | "acctstoptime" => ColumnKind::Time,
        "acctinterval" | "acctsessiontime" | "acctinputoctets" | "acctoutputoctets" => {
            ColumnKind::Int
        }
        "nasipaddress" | "framedipaddress" | "framedipv6address" => ColumnKind::Addr,
        "framedipv6prefix" | "delegatedipv6prefix" => ColumnKind::Prefix,
        _ => ColumnKind::Text,
    }
}

/// A column value of a row, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
}

/// The value of write column `i` of `row` (same order as [`WRITE_COLUMNS`]).
pub(crate) fn column_value(row: &Row, i: usize) -> Value<'_> {
    fn t(v: &Option<String>) -> Option<&str> {
        v.as_deref()
    }
    match i {
        0 => Value::Text(Some(&row.acctsessionid)),
        1 => Value::Text(Some(&row.acctuniqueid)),
        2 => Value::Text(t(&row.username)),
        3 => Value::Text(t(&row.realm)),
        4 => Value::Text(Some(&row.nasipaddress)),
        5 => Value::Text(t(&row.nasportid)),
        6 => Value::Text(t(&row.nasporttype)),
        7 => Value::Int(row.acctstarttime),
        8 => Value::Int(row.acctupdatetime),
        9 => Value::Int(row.acctstoptime),
        10 => Value::Int(row.acctinterval),
        11 => Value::Int(row.acctsessiontime),
        12 => Value::Text(t(&row.acctauthentic)),
        13 => Value::Text(t(&row.connectinfo_start)),
        14 => Value::Text(t(&row.connectinfo_stop)),
        15 => Value::Int(row.acctinputoctets),
        16 => Value::Int(row.acctoutputoctets),
        17 => Value::Text(t(&row.calledstationid)),
        18 => Value::Text(t(&row.callingstationid)),
        19 => Value::Text(t(&row.acctterminatecause)),
        20 => Value::Text(t(&row.servicetype)),
        21 => Value::Text(t(&row.framedprotocol)),
        22 => Value::Text(t(&row.framedipaddress)),
        23 => Value::Text(t(&row.framedipv6address)),
        24 => Value::Text(t(&row.framedipv6prefix)),
        25 => Value::Text(t(&row.framedinterfaceid)),
        26 => Value::Text(t(&row.delegatedipv6prefix)),
        _ => Value::Text(t(&row.class)),
    }
}

/// The write columns the live index holds exactly (see [`crate::sessions::Session`]): an
/// index-fed update (a row rebuilt from the index, DESIGN §2) sets them from the folded row.
pub(crate) const INDEX_HELD: [&str; 6] = [
    "acctstarttime",
    "acctupdatetime",
    "acctsessiontime",
    "acctinputoctets",
    "acctoutputoctets",
    "framedipaddress",
];

/// The write columns the index does not hold that folding an Interim-Update, a Stop or a
/// close can set on an open row. An index-fed row starts with them unknown (`None`); the
/// update sets the ones the fold gave a value and keeps the others as they are in the table.
pub(crate) const INDEX_KEPT_UNLESS_SET: [&str; 8] = [
    "acctstoptime",
    "acctinterval",
    "connectinfo_stop",
    "acctterminatecause",
    "framedipv6address",
    "framedipv6prefix",
    "framedinterfaceid",
    "delegatedipv6prefix",
];

/// Whether an index-fed row, folded from `before` to `after`, can be written by the
/// index-fed update: no column outside [`INDEX_HELD`] and [`INDEX_KEPT_UNLESS_SET`] changed.
/// (The kept columns start unknown, `None`, and the update keeps the table's value where the
/// fold left `None`; the one fold that sets them back to `None`, reopening a row the sweeper
/// closed, needs a close followed by an Interim-Update of the session in one batch, and the
/// writer reads such sessions first.)
pub(crate) fn index_fed_write_is_exact(before: &Row, after: &Row) -> bool {
    WRITE_COLUMNS.iter().enumerate().all(|(i, c)| {
        INDEX_HELD.contains(c)
            || INDEX_KEPT_UNLESS_SET.contains(c)
            || match (column_value(before, i), column_value(after, i)) {
                (Value::Text(x), Value::Text(y)) => x == y,
                (Value::Int(x), Value::Int(y)) => x == y,
                _ => false,
            }
    })
}

/// The write columns an index entry is built from ([`Session::from_row`]): all that the
/// start-up rebuild and the sweeper's reconciliation read of each open row.
pub(crate) const SESSION_COLUMNS: [&str; 12] = [
    "acctsessionid",
    "acctuniqueid",
    "username",
    "nasipaddress",
    "nasportid",
    "acctstarttime",
    "acctupdatetime",
    "acctsessiontime",
    "acctinputoctets",
    "acctoutputoctets",
    "callingstationid",
    "framedipaddress",
];

/// Whether write column `c` is one an index entry is built from.
pub(crate) fn is_session_column(c: &str) -> bool {
    SESSION_COLUMNS.contains(&c)
}

/// The select list: `radacctid`, then the write columns `selected` keeps, in [`WRITE_COLUMNS`]
/// order, each through `convert` (the store's conversion to text or seconds).
pub(crate) fn read_list(selected: fn(&str) -> bool, convert: impl Fn(&str) -> String) -> String {
    let mut cols = vec!["radacctid".to_owned()];
    cols.extend(
        WRITE_COLUMNS
            .iter()
            .filter(|c| selected(c))
            .map(|c| convert(c)),
    );
    cols.join(", ")
}

/// Reads a row selected by [`read_list`] with the same `selected`: the columns it left out
/// stay empty.
pub(crate) fn read_row<'r, R>(r: &'r R, selected: fn(&str) -> bool) -> Result<Row>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut texts = Vec::with_capacity(WRITE_COLUMNS.len());
    let mut ints = Vec::with_capacity(8);
    let mut next = 1;
    for c in WRITE_COLUMNS {
        let int = matches!(column_kind(c), ColumnKind::Int | ColumnKind::Time);
        if !selected(c) {
            if int {
                ints.push(None)
            } else {
                texts.push(None)
            }
            continue;
        }
        if int {
            ints.push(r.try_get::<Option<i64>, _>(next)?);
        } else {
            texts.push(r.try_get::<Option<String>, _>(next)?);
        }
        next += 1;
    }
    Ok(RowReader { texts, ints }.into_row(r.try_get(0)?))
}

/// Every write column: [`read_list`] and [`read_row`] of whole rows.
pub(crate) fn all_columns(_: &str) -> bool {
    true
}

/// Builds a `Row` from values read in `radacctid` + [`WRITE_COLUMNS`] order.
pub(crate) struct RowReader {
    pub texts: Vec<Option<String>>,
    pub ints: Vec<Option<i64>>,
}

impl RowReader {
    /// `texts` and `ints` hold the text and integer columns in [`WRITE_COLUMNS`] order.
    pub(crate) fn into_row(self, radacctid: i64) -> Row {
        let mut texts = self.texts.into_iter();
        let mut ints = self.ints.into_iter();
        let mut t = || texts.next().flatten();
        let mut n = || ints.next().flatten();
        Row {
            radacctid: Some(radacctid),
            acctsessionid: t().unwrap_or_default(),
            acctuniqueid: t().unwrap_or_default(),
            username: t(),
            realm: t(),
            nasipaddress: t().unwrap_or_default(),
            nasportid: t(),
            nasporttype: t(),
            acctstarttime: n(),
            acctupdatetime: n(),
            acctstoptime: n(),
            acctinterval: n(),
            acctsessiontime: n(),
            acctauthentic: t(),
            connectinfo_start: t(),
            connectinfo_stop: t(),
            acctinputoctets: n(),
            acctoutputoctets: n(),
            calledstationid: t(),
            callingstationid: t(),
            acctterminatecause: t(),
            servicetype: t(),
            framedprotocol: t(),
            framedipaddress: t(),
            framedipv6address: t(),
            framedipv6prefix: t(),
            framedinterfaceid: t(),
            delegatedipv6prefix: t(),
            class: t(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_values_round_trip_through_the_reader() {
        let row = Row {
            radacctid: Some(7),
            acctsessionid: "s".into(),
            acctuniqueid: "u".into(),
            username: Some("bob".into()),
            nasipaddress: "192.0.2.1".into(),
            acctstarttime: Some(10),
            acctinputoctets: Some(99),
            class: Some("0x01".into()),
            framedipv6prefix: Some("2001:db8::/64".into()),
            ..Row::default()
        };
        let mut texts = Vec::new();
        let mut ints = Vec::new();
        for i in 0..WRITE_COLUMNS.len() {
            match column_value(&row, i) {
                Value::Text(v) => texts.push(v.map(str::to_owned)),
                Value::Int(v) => ints.push(v),
            }
        }
        assert_eq!(RowReader { texts, ints }.into_row(7), row);
    }

    #[test]
    fn index_fed_writes_are_exact_only_for_the_columns_they_set() {
        let before = Row {
            acctuniqueid: "k".into(),
            username: Some("u".into()),
            acctstarttime: Some(100),
            ..Row::default()
        };
        let mut after = before.clone();
        after.acctupdatetime = Some(400);
        after.acctinputoctets = Some(7);
        after.acctinterval = Some(300);
        after.acctstoptime = Some(400);
        after.acctterminatecause = Some("User-Request".into());
        after.framedipv6prefix = Some("2001:db8::/56".into());
        assert!(index_fed_write_is_exact(&before, &after));
        let changes: [fn(&mut Row); 4] = [
            |r| r.nasporttype = Some("Virtual".into()),
            |r| r.connectinfo_start = Some("1G".into()),
            |r| r.username = None,
            |r| r.class = Some("c".into()),
        ];
        for change in changes {
            let mut inexact = after.clone();
            change(&mut inexact);
            assert!(!index_fed_write_is_exact(&before, &inexact), "{inexact:?}");
        }
    }

    #[test]
    fn column_kinds_match_values() {
        let row = Row::default();
        for (i, name) in WRITE_COLUMNS.iter().enumerate() {
            let is_int = matches!(column_value(&row, i), Value::Int(_));
            let kind = column_kind(name);
            assert_eq!(
                is_int,
                matches!(kind, ColumnKind::Int | ColumnKind::Time),
                "{name}"
            );
        }
    }
}
