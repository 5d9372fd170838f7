//! The Sessions API's reads: list, count, get and export over `radacct`, and the sources of the
//! API's caches (reseller tree, subscriber owners). Both stores implement the rules of
//! `sessions::filter` in SQL, so the database answers what the live index answers.
//!
//! SQL text is assembled here only from the fixed fragments below (columns from allow-lists);
//! every value from a request is a bound parameter.

use futures_util::TryStreamExt;
use sqlx::{AssertSqlSafe, Row as _};
use tokio::sync::mpsc;

use super::{Result, Store, StoreError};
use crate::sessions::Session;
use crate::sessions::filter::{NasMatch, Order, Page, SessionFilter, Sort, Status};

/// A radacct row as the Sessions API shows it (the seed's fields but `nas_id`, which comes
/// from the `nas` cache). Times are epoch seconds; an empty username reads as `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// `None` only for journal-only sessions (DESIGN §10).
    pub radacctid: Option<i64>,
    pub username: Option<String>,
    pub acctsessionid: String,
    pub nasipaddress: String,
    pub nasportid: Option<String>,
    pub framedipaddress: Option<String>,
    pub callingstationid: Option<String>,
    pub acctstarttime: Option<i64>,
    pub acctstoptime: Option<i64>,
    pub acctupdatetime: Option<i64>,
    pub acctinputoctets: Option<i64>,
    pub acctoutputoctets: Option<i64>,
    pub acctsessiontime: Option<i64>,
    pub acctterminatecause: Option<String>,
}

impl SessionRecord {
    /// An open session from the live index.
    pub fn from_session(s: &Session) -> SessionRecord {
        SessionRecord {
            radacctid: s.radacctid,
            username: Some(s.username.to_string()).filter(|u| !u.is_empty()),
            acctsessionid: s.acctsessionid.to_string(),
            nasipaddress: s.nasipaddress.to_string(),
            nasportid: s.nasportid.as_deref().map(String::from),
            framedipaddress: s.framedipaddress.as_deref().map(String::from),
            callingstationid: s.callingstationid.as_deref().map(String::from),
            acctstarttime: s.acctstarttime,
            acctstoptime: None,
            acctupdatetime: s.acctupdatetime,
            acctinputoctets: s.acctinputoctets,
            acctoutputoctets: s.acctoutputoctets,
            acctsessiontime: s.acctsessiontime,
            acctterminatecause: None,
        }
    }
}

/// What a list or export selects: status, filter and order.
#[derive(Debug, Clone, Copy)]
pub struct SessionQuery<'a> {
    pub status: Status,
    pub filter: &'a SessionFilter,
    pub sort: Sort,
}

/// The start of an export: either too many rows (decided before any row is read) or a bounded
/// channel of rows fed by a task that holds one connection (in one read snapshot) until the
/// rows end or the receiver is dropped.
#[derive(Debug)]
pub enum ExportStart {
    TooMany(u64),
    Rows {
        total: u64,
        rows: mpsc::Receiver<Result<SessionRecord>>,
    },
}

/// Rows buffered between the database and the CSV writer: enough to keep both busy, small
/// enough that memory does not depend on the export's size.
const EXPORT_CHANNEL_ROWS: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    Sqlite,
}

#[derive(Debug, Clone)]
enum Bind {
    Int(i64),
    Text(String),
    Ints(Vec<i64>),
}

/// SQL text plus its bound values, numbered for the dialect.
#[derive(Debug)]
struct Sql {
    dialect: Dialect,
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    fn new(dialect: Dialect) -> Sql {
        Sql {
            dialect,
            text: String::new(),
            binds: Vec::new(),
        }
    }

    /// Adds a value and returns its placeholder.
    fn param(&mut self, b: Bind) -> String {
        self.binds.push(b);
        match self.dialect {
            Dialect::Postgres => format!("${}", self.binds.len()),
            Dialect::Sqlite => format!("?{}", self.binds.len()),
        }
    }
}

const UPPER: &str = "'ABCDEFGHIJKLMNOPQRSTUVWXYZ'";
const LOWER: &str = "'abcdefghijklmnopqrstuvwxyz'";

/// ASCII-only lower-casing (PostgreSQL's `lower()` folds by locale; SQLite's is ASCII-only).
fn ascii_lower(d: Dialect, expr: &str) -> String {
    match d {
        Dialect::Postgres => format!("translate({expr}, {UPPER}, {LOWER})"),
        Dialect::Sqlite => format!("lower({expr})"),
    }
}

/// The columns of [`SessionRecord`], in its field order.
fn select_list(d: Dialect) -> String {
    let read_back = match d {
        Dialect::Postgres => super::postgres::read_back,
        Dialect::Sqlite => super::sqlite::read_back,
    };
    [
        "radacctid",
        "username",
        "acctsessionid",
        "nasipaddress",
        "nasportid",
        "framedipaddress",
        "callingstationid",
        "acctstarttime",
        "acctstoptime",
        "acctupdatetime",
        "acctinputoctets",
        "acctoutputoctets",
        "acctsessiontime",
        "acctterminatecause",
    ]
    .map(read_back)
    .join(", ")
}

/// `WHERE …` for a query (empty when nothing filters). The twin of `SessionFilter::matches`.
fn where_clause(sql: &mut Sql, status: Status, f: &SessionFilter) -> String {
    let d = sql.dialect;
    let mut conds: Vec<String> = Vec::new();
    match status {
        Status::Active => conds.push("acctstoptime IS NULL".into()),
        Status::Closed => conds.push("acctstoptime IS NOT NULL".into()),
        Status::All => {}
    }
    let at = |sql: &mut Sql, t: i64| {
        let p = sql.param(Bind::Int(t));
        match d {
            Dialect::Postgres => format!("to_timestamp({p})"),
            Dialect::Sqlite => format!("datetime({p}, 'unixepoch')"),
        }
    };
    if let Some(from) = f.from {
        let t = at(sql, from);
        conds.push(format!("acctstarttime >= {t}"));
    }
    if let Some(to) = f.to {
        let t = at(sql, to);
        conds.push(format!("acctstarttime <= {t}"));
    }
    match &f.nas {
        None => {}
        Some(NasMatch::Nothing) => conds.push("1 = 0".into()),
        Some(NasMatch::Address(a)) => {
            let p = sql.param(Bind::Text(a.clone()));
            conds.push(match d {
                Dialect::Postgres => format!("nasipaddress = {p}::inet"),
                Dialect::Sqlite => format!("nasipaddress = {p}"),
            });
        }
    }
    if let Some(search) = &f.search {
        let t = sql.param(Bind::Text(search.text().to_owned()));
        let user = ascii_lower(d, "username");
        let mut alts = match d {
            Dialect::Postgres => vec![
                format!("strpos({user}, {t}) > 0"),
                format!(
                    "starts_with({}, {t})",
                    ascii_lower(d, "host(framedipaddress)")
                ),
            ],
            Dialect::Sqlite => vec![
                format!("instr({user}, {t}) > 0"),
                format!(
                    "substr({}, 1, length({t})) = {t}",
                    ascii_lower(d, "framedipaddress")
                ),
            ],
        };
        if !search.mac().is_empty() {
            let m = sql.param(Bind::Text(search.mac().to_owned()));
            let mac = format!(
                "replace(replace(replace({}, ':', ''), '-', ''), '.', '')",
                ascii_lower(d, "callingstationid")
            );
            alts.push(match d {
                Dialect::Postgres => format!("strpos({mac}, {m}) > 0"),
                Dialect::Sqlite => format!("instr({mac}, {m}) > 0"),
            });
        }
        conds.push(format!("({})", alts.join(" OR ")));
    }
    if let crate::sessions::filter::Scope::Resellers(ids) = &f.scope {
        let ids = ids.to_vec();
        conds.push(match d {
            Dialect::Postgres => {
                let p = sql.param(Bind::Ints(ids));
                format!(
                    "username IN (SELECT username FROM subscribers WHERE reseller_id = ANY({p}::int8[]))"
                )
            }
            Dialect::Sqlite => {
                let json = format!(
                    "[{}]",
                    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
                );
                let p = sql.param(Bind::Text(json));
                format!(
                    "username IN (SELECT username FROM subscribers WHERE reseller_id IN \
                     (SELECT value FROM json_each({p})))"
                )
            }
        });
    }
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

fn order_by(sort: Sort) -> String {
    let dir = match sort.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    format!(
        " ORDER BY {} {dir} NULLS LAST, radacctid ASC",
        sort.key.column()
    )
}

fn count_sql(d: Dialect, status: Status, f: &SessionFilter) -> Sql {
    let mut sql = Sql::new(d);
    let w = where_clause(&mut sql, status, f);
    sql.text = format!("SELECT COUNT(*) FROM radacct{w}");
    sql
}

fn rows_sql(d: Dialect, q: &SessionQuery<'_>, page: Option<Page>) -> Sql {
    let mut sql = Sql::new(d);
    let w = where_clause(&mut sql, q.status, q.filter);
    let mut text = format!(
        "SELECT {} FROM radacct{w}{}",
        select_list(d),
        order_by(q.sort)
    );
    if let Some(p) = page {
        let limit = sql.param(Bind::Int(i64::try_from(p.limit).unwrap_or(i64::MAX)));
        let offset = sql.param(Bind::Int(i64::try_from(p.offset()).unwrap_or(i64::MAX)));
        text.push_str(&format!(" LIMIT {limit} OFFSET {offset}"));
    }
    sql.text = text;
    sql
}

fn by_id_sql(d: Dialect) -> String {
    let p = match d {
        Dialect::Postgres => "$1",
        Dialect::Sqlite => "?1",
    };
    format!(
        "SELECT {} FROM radacct WHERE radacctid = {p}",
        select_list(d)
    )
}

macro_rules! bind_all {
    ($q:expr, $binds:expr, sqlite) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Int(v) => q.bind(v),
                Bind::Text(v) => q.bind(v),
                // SQLite has no arrays; scope ids travel as JSON text (see `where_clause`).
                Bind::Ints(v) => q.bind(format!("{v:?}")),
            };
        }
        q
    }};
    ($q:expr, $binds:expr, postgres) => {{
        let mut q = $q;
        for b in $binds {
            q = match b {
                Bind::Int(v) => q.bind(v),
                Bind::Text(v) => q.bind(v),
                Bind::Ints(v) => q.bind(v),
            };
        }
        q
    }};
}

fn read_record<R: sqlx::Row>(r: &R) -> Result<SessionRecord>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SessionRecord {
        radacctid: Some(r.try_get(0)?),
        username: r.try_get::<Option<String>, _>(1)?.filter(|u| !u.is_empty()),
        acctsessionid: r.try_get(2)?,
        nasipaddress: r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
        nasportid: r.try_get(4)?,
        framedipaddress: r.try_get(5)?,
        callingstationid: r.try_get(6)?,
        acctstarttime: r.try_get(7)?,
        acctstoptime: r.try_get(8)?,
        acctupdatetime: r.try_get(9)?,
        acctinputoctets: r.try_get(10)?,
        acctoutputoctets: r.try_get(11)?,
        acctsessiontime: r.try_get(12)?,
        acctterminatecause: r.try_get(13)?,
    })
}

impl Store {
    fn dialect(&self) -> Dialect {
        match self {
            Store::Postgres(_) => Dialect::Postgres,
            Store::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// One page of matching rows and the number of matches.
    pub async fn list_sessions(
        &self,
        q: &SessionQuery<'_>,
        page: Page,
    ) -> Result<(Vec<SessionRecord>, u64)> {
        let d = self.dialect();
        let count = count_sql(d, q.status, q.filter);
        let rows = rows_sql(d, q, Some(page));
        match self {
            Store::Postgres(s) => {
                let total: i64 = bind_all!(
                    sqlx::query_scalar(AssertSqlSafe(count.text)),
                    count.binds,
                    postgres
                )
                .fetch_one(s.pool())
                .await?;
                let found = bind_all!(sqlx::query(AssertSqlSafe(rows.text)), rows.binds, postgres)
                    .fetch_all(s.pool())
                    .await?;
                let recs = found.iter().map(read_record).collect::<Result<_>>()?;
                Ok((recs, total.max(0) as u64))
            }
            Store::Sqlite(s) => {
                let total: i64 = bind_all!(
                    sqlx::query_scalar(AssertSqlSafe(count.text)),
                    count.binds,
                    sqlite
                )
                .fetch_one(s.pool())
                .await?;
                let found = bind_all!(sqlx::query(AssertSqlSafe(rows.text)), rows.binds, sqlite)
                    .fetch_all(s.pool())
                    .await?;
                let recs = found.iter().map(read_record).collect::<Result<_>>()?;
                Ok((recs, total.max(0) as u64))
            }
        }
    }

    /// The row with this `radacctid`, open or closed (the archive is not consulted).
    pub async fn session_by_id(&self, radacctid: i64) -> Result<Option<SessionRecord>> {
        let sql = by_id_sql(self.dialect());
        match self {
            Store::Postgres(s) => sqlx::query(AssertSqlSafe(sql))
                .bind(radacctid)
                .fetch_optional(s.pool())
                .await?
                .as_ref()
                .map(read_record)
                .transpose(),
            Store::Sqlite(s) => sqlx::query(AssertSqlSafe(sql))
                .bind(radacctid)
                .fetch_optional(s.pool())
                .await?
                .as_ref()
                .map(read_record)
                .transpose(),
        }
    }

    /// Starts an export: counts the matches and, when there are at most `max_rows`, streams
    /// them in order from the same read snapshot (PostgreSQL `REPEATABLE READ`, a SQLite read
    /// transaction), so the count and the rows agree. The task ends, releasing its connection,
    /// as soon as the receiver is dropped.
    pub async fn export_sessions(
        &self,
        q: &SessionQuery<'_>,
        max_rows: u64,
    ) -> Result<ExportStart> {
        let d = self.dialect();
        let count = count_sql(d, q.status, q.filter);
        let rows = rows_sql(d, q, None);
        let (tx, rx) = mpsc::channel(EXPORT_CHANNEL_ROWS);
        match self {
            Store::Postgres(s) => {
                let mut db = s
                    .pool()
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?;
                let total: i64 = bind_all!(
                    sqlx::query_scalar(AssertSqlSafe(count.text)),
                    count.binds,
                    postgres
                )
                .fetch_one(&mut *db)
                .await?;
                let total = total.max(0) as u64;
                if total > max_rows {
                    return Ok(ExportStart::TooMany(total));
                }
                tokio::spawn(async move {
                    let mut stream =
                        bind_all!(sqlx::query(AssertSqlSafe(rows.text)), rows.binds, postgres)
                            .fetch(&mut *db);
                    pump(&tx, &mut stream).await;
                    drop(stream);
                    let _ = db.rollback().await;
                });
                Ok(ExportStart::Rows { total, rows: rx })
            }
            Store::Sqlite(s) => {
                let mut db = s.pool().begin_with("BEGIN DEFERRED").await?;
                let total: i64 = bind_all!(
                    sqlx::query_scalar(AssertSqlSafe(count.text)),
                    count.binds,
                    sqlite
                )
                .fetch_one(&mut *db)
                .await?;
                let total = total.max(0) as u64;
                if total > max_rows {
                    return Ok(ExportStart::TooMany(total));
                }
                tokio::spawn(async move {
                    let mut stream =
                        bind_all!(sqlx::query(AssertSqlSafe(rows.text)), rows.binds, sqlite)
                            .fetch(&mut *db);
                    pump(&tx, &mut stream).await;
                    drop(stream);
                    let _ = db.rollback().await;
                });
                Ok(ExportStart::Rows { total, rows: rx })
            }
        }
    }

    /// `(id, parent_id)` of every reseller.
    pub async fn reseller_parents(&self) -> Result<Vec<(i64, Option<i64>)>> {
        const SQL: &str = "SELECT id, parent_id FROM resellers";
        let rows = match self {
            Store::Postgres(s) => sqlx::query(SQL)
                .fetch_all(s.pool())
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?,
            Store::Sqlite(s) => sqlx::query(SQL)
                .fetch_all(s.pool())
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?,
        };
        Ok(rows)
    }

    /// `(username, reseller_id)` of every subscriber that belongs to a reseller.
    pub async fn subscriber_resellers(&self) -> Result<Vec<(String, i64)>> {
        const SQL: &str =
            "SELECT username, reseller_id FROM subscribers WHERE reseller_id IS NOT NULL";
        let rows = match self {
            Store::Postgres(s) => sqlx::query(SQL)
                .fetch_all(s.pool())
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?,
            Store::Sqlite(s) => sqlx::query(SQL)
                .fetch_all(s.pool())
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?,
        };
        Ok(rows)
    }
}

/// Moves rows from `next` into `tx` until the rows end, a read fails (the error is sent on),
/// or the receiver is gone (a client that disconnected): then it returns at once.
async fn pump<R, S>(tx: &mpsc::Sender<Result<SessionRecord>>, rows: &mut S)
where
    R: sqlx::Row,
    S: futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    loop {
        let row = tokio::select! {
            _ = tx.closed() => return,
            r = rows.try_next() => r,
        };
        let item = match row {
            Ok(Some(r)) => read_record(&r),
            Ok(None) => return,
            Err(e) => Err(StoreError::from(e)),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::filter::{Scope, Search, SortKey};

    #[test]
    fn request_text_is_bound_never_spliced() {
        let evil = "x'); DROP TABLE radacct; --";
        let f = SessionFilter {
            search: Search::new(evil),
            nas: Some(NasMatch::Address("192.0.2.1".into())),
            from: Some(1),
            to: Some(2),
            scope: Scope::resellers(vec![3, 1]),
        };
        for d in [Dialect::Postgres, Dialect::Sqlite] {
            let q = SessionQuery {
                status: Status::Closed,
                filter: &f,
                sort: Sort {
                    key: SortKey::AcctInputOctets,
                    order: Order::Asc,
                },
            };
            let sql = rows_sql(d, &q, Some(Page { page: 2, limit: 50 }));
            assert!(!sql.text.contains("DROP"), "{}", sql.text);
            assert!(!sql.text.contains("192.0.2.1"), "{}", sql.text);
            assert!(
                sql.text.ends_with(
                    "ORDER BY acctinputoctets ASC NULLS LAST, radacctid ASC LIMIT $6 OFFSET $7"
                ) || sql.text.ends_with(
                    "ORDER BY acctinputoctets ASC NULLS LAST, radacctid ASC LIMIT ?6 OFFSET ?7"
                ),
                "{}",
                sql.text
            );
            assert_eq!(sql.binds.len(), 7, "no MAC clause: the term is not hex");
        }
    }
}
