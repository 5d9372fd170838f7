//! The Sessions API's reads: list, count, get and export over `radacct`, and the sources of the
//! API's caches (reseller tree, subscriber owners). Both stores implement the rules of
//! `sessions::filter` in SQL, so the database answers what the live index answers.
//!
//! SQL text is assembled here only from the fixed fragments below and the dialects' (columns
//! from allow-lists); every value from a request is a bound parameter. A session is read as
//! a [`Row`] holding the [`Columns::Api`] columns ([`Row::api_view`]).

use futures_util::TryStreamExt;
use sqlx::{AssertSqlSafe, Row as _};
use tokio::sync::mpsc;

use super::{Dialect, Result, Store, StoreError, each_store, read_row, select_list};
use crate::sessions::filter::{NasMatch, Order, Page, SessionFilter, Sort, Status};
use crate::sessions::{Columns, Row};

/// What a list or export selects: status, filter and order.
#[derive(Debug, Clone, Copy)]
pub struct SessionQuery<'a> {
    pub status: Status,
    pub filter: &'a SessionFilter,
    pub sort: Sort,
}

/// The start of an export: either too many rows (decided before any row is read) or a bounded
/// channel of rows (each a [`Row::api_view`]) fed by a task that holds one connection (in one
/// read snapshot) until the rows end or the receiver is dropped.
#[derive(Debug)]
pub enum ExportStart {
    TooMany(u64),
    Rows {
        total: u64,
        rows: mpsc::Receiver<Result<Row>>,
    },
}

/// Rows buffered between the database and the CSV writer: enough to keep both busy, small
/// enough that memory does not depend on the export's size.
const EXPORT_CHANNEL_ROWS: usize = 512;

#[derive(Debug, Clone)]
pub(super) enum Bind {
    Int(i64),
    Text(String),
    /// Bound by [`Dialect::bind_ids`].
    Ids(Vec<i64>),
}

/// SQL text plus its bound values.
#[derive(Debug, Default)]
pub(super) struct Sql {
    pub(super) text: String,
    pub(super) binds: Vec<Bind>,
}

impl Sql {
    /// Adds a value and returns its placeholder.
    pub(super) fn param<D: Dialect>(&mut self, b: Bind) -> String {
        self.binds.push(b);
        D::param(self.binds.len())
    }
}

/// The IPv6 columns `search` matches (`Search::matches_ipv6`), in its order.
const IPV6_COLUMNS: [&str; 3] = [
    "framedipv6address",
    "framedipv6prefix",
    "delegatedipv6prefix",
];

/// `WHERE …` for a query (empty when nothing filters). The twin of `SessionFilter::matches`.
fn where_clause<D: Dialect>(sql: &mut Sql, status: Status, f: &SessionFilter) -> String {
    let mut conds: Vec<String> = Vec::new();
    match status {
        Status::Active => conds.push("acctstoptime IS NULL".into()),
        Status::Closed => conds.push("acctstoptime IS NOT NULL".into()),
        Status::All => {}
    }
    if let Some(from) = f.from {
        let t = D::timestamp(&sql.param::<D>(Bind::Int(from)));
        conds.push(format!("acctstarttime >= {t}"));
    }
    if let Some(to) = f.to {
        let t = D::timestamp(&sql.param::<D>(Bind::Int(to)));
        conds.push(format!("acctstarttime <= {t}"));
    }
    match &f.nas {
        None => {}
        Some(NasMatch::Nothing) => conds.push("1 = 0".into()),
        Some(NasMatch::Address(a)) => {
            let p = sql.param::<D>(Bind::Text(a.clone()));
            conds.push(D::nas_is(&p));
        }
    }
    if let Some(search) = &f.search {
        let t = sql.param::<D>(Bind::Text(search.text().to_owned()));
        // The address as text: what the index compares (`host()` on PostgreSQL).
        let framed = D::read_back(
            Columns::Api
                .find("framedipaddress")
                .expect("framedipaddress is a radacct column"),
        );
        let mut alts = vec![
            D::contains(&D::lower("username"), &t),
            D::starts_with(&D::lower(&framed), &t),
        ];
        if !search.mac().is_empty() {
            let m = sql.param::<D>(Bind::Text(search.mac().to_owned()));
            let mac = format!(
                "replace(replace(replace({}, ':', ''), '-', ''), '.', '')",
                D::lower("callingstationid")
            );
            alts.push(D::contains(&mac, &m));
        }
        if !search.ipv6().is_empty() {
            let p = sql.param::<D>(Bind::Text(search.ipv6().to_owned()));
            for name in IPV6_COLUMNS {
                let column = Columns::All.find(name).expect("an IPv6 radacct column");
                alts.push(D::starts_with(&D::lower(&D::read_back(column)), &p));
            }
        }
        conds.push(format!("({})", alts.join(" OR ")));
    }
    if let crate::sessions::filter::Scope::Resellers(ids) = &f.scope {
        let p = sql.param::<D>(Bind::Ids(ids.to_vec()));
        conds.push(D::owned_by_resellers(&p));
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

fn count_sql<D: Dialect>(status: Status, f: &SessionFilter) -> Sql {
    let mut sql = Sql::default();
    let w = where_clause::<D>(&mut sql, status, f);
    sql.text = format!("SELECT COUNT(*) FROM radacct{w}");
    sql
}

fn rows_sql<D: Dialect>(q: &SessionQuery<'_>, page: Option<Page>) -> Sql {
    let mut sql = Sql::default();
    let w = where_clause::<D>(&mut sql, q.status, q.filter);
    let mut text = format!(
        "SELECT {} FROM radacct{w}{}",
        select_list(Columns::Api, D::read_back),
        order_by(q.sort)
    );
    if let Some(p) = page {
        let limit = sql.param::<D>(Bind::Int(i64::try_from(p.limit).unwrap_or(i64::MAX)));
        let offset = sql.param::<D>(Bind::Int(i64::try_from(p.offset()).unwrap_or(i64::MAX)));
        text.push_str(&format!(" LIMIT {limit} OFFSET {offset}"));
    }
    sql.text = text;
    sql
}

fn by_id_sql<D: Dialect>() -> String {
    format!(
        "SELECT {} FROM radacct WHERE radacctid = {}",
        select_list(Columns::Api, D::read_back),
        D::param(1)
    )
}

/// `sqlx::query` of `$sql` with its values bound, for dialect `$d`.
macro_rules! query_of {
    ($sql:expr, $d:ty) => {{
        let Sql { text, binds } = $sql;
        let mut q = sqlx::query(AssertSqlSafe(text));
        for b in binds {
            q = match b {
                Bind::Int(v) => q.bind(v),
                Bind::Text(v) => q.bind(v),
                Bind::Ids(v) => <$d>::bind_ids(q, v),
            };
        }
        q
    }};
}
pub(super) use query_of;

/// A session as the API reads it from `radacct` (see [`rows_sql`]).
fn read_session<R: sqlx::Row>(r: &R) -> Result<Row>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(read_row(r, Columns::Api)?.api_view())
}

impl Store {
    /// One page of matching rows and the number of matches.
    pub async fn list_sessions(&self, q: &SessionQuery<'_>, page: Page) -> Result<(Vec<Row>, u64)> {
        each_store!(Store, self, s: D => {
            let total: i64 = query_of!(count_sql::<D>(q.status, q.filter), D)
                .fetch_one(s.pool())
                .await?
                .try_get(0)?;
            let found = query_of!(rows_sql::<D>(q, Some(page)), D)
                .fetch_all(s.pool())
                .await?;
            let rows = found.iter().map(read_session).collect::<Result<_>>()?;
            Ok((rows, total.max(0) as u64))
        })
    }

    /// The row with this `radacctid`, open or closed (the archive is not consulted).
    pub async fn session_by_id(&self, radacctid: i64) -> Result<Option<Row>> {
        each_store!(Store, self, s: D => {
            sqlx::query(AssertSqlSafe(by_id_sql::<D>()))
                .bind(radacctid)
                .fetch_optional(s.pool())
                .await?
                .as_ref()
                .map(read_session)
                .transpose()
        })
    }

    /// The `acctuniqueid` of the row with this `radacctid` (the archive is not consulted).
    pub async fn session_key(&self, radacctid: i64) -> Result<Option<String>> {
        each_store!(Store, self, s: D => {
            let sql = format!("SELECT acctuniqueid FROM radacct WHERE radacctid = {}", D::param(1));
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(radacctid)
                .fetch_optional(s.pool())
                .await?;
            Ok(row.map(|r| r.try_get(0)).transpose()?)
        })
    }

    /// Whether the row with this key holds its NAS's Accounting Stop: `connectinfo_stop` is set
    /// by every Stop and by nothing radacctd closes itself (see
    /// `disconnect::confirm::wait_for_nas_stop`). `None` when there is no such row. A plain
    /// read on the general pool, cheap enough to poll: no lock, nothing of the writer's.
    pub async fn nas_stop_recorded(&self, acctuniqueid: &str) -> Result<Option<bool>> {
        each_store!(Store, self, s: D => {
            let sql = format!(
                "SELECT connectinfo_stop IS NOT NULL FROM radacct WHERE acctuniqueid = {}",
                D::param(1)
            );
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(acctuniqueid)
                .fetch_optional(s.pool())
                .await?;
            Ok(row.map(|r| r.try_get(0)).transpose()?)
        })
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
        let (tx, rx) = mpsc::channel(EXPORT_CHANNEL_ROWS);
        each_store!(Store, self, s: D => {
            let rows = rows_sql::<D>(q, None);
            let mut db = s.pool().begin_with(D::BEGIN_SNAPSHOT).await?;
            let total: i64 = query_of!(count_sql::<D>(q.status, q.filter), D)
                .fetch_one(&mut *db)
                .await?
                .try_get(0)?;
            let total = total.max(0) as u64;
            if total > max_rows {
                return Ok(ExportStart::TooMany(total));
            }
            tokio::spawn(async move {
                let mut stream = query_of!(rows, D).fetch(&mut *db);
                pump(&tx, &mut stream).await;
                drop(stream);
                let _ = db.rollback().await;
            });
            Ok(ExportStart::Rows { total, rows: rx })
        })
    }

    /// `(id, parent_id)` of every reseller.
    pub async fn reseller_parents(&self) -> Result<Vec<(i64, Option<i64>)>> {
        const SQL: &str = "SELECT id, parent_id FROM resellers";
        each_store!(Store, self, s => {
            sqlx::query(SQL)
                .fetch_all(s.pool())
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    /// `(username, reseller_id)` of every subscriber that belongs to a reseller.
    pub async fn subscriber_resellers(&self) -> Result<Vec<(String, i64)>> {
        const SQL: &str =
            "SELECT username, reseller_id FROM subscribers WHERE reseller_id IS NOT NULL";
        each_store!(Store, self, s => {
            sqlx::query(SQL)
                .fetch_all(s.pool())
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }
}

/// Moves rows from `next` into `tx` until the rows end, a read fails (the error is sent on),
/// or the receiver is gone (a client that disconnected): then it returns at once.
async fn pump<R, S>(tx: &mpsc::Sender<Result<Row>>, rows: &mut S)
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
            Ok(Some(r)) => read_session(&r),
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
    use crate::store::{PgStore, SqliteStore};

    fn request_text_is_bound_never_spliced_in<D: Dialect>() {
        let evil = "x'); DROP TABLE radacct; --";
        let f = SessionFilter {
            search: Search::new(evil),
            nas: Some(NasMatch::Address("192.0.2.1".into())),
            from: Some(1),
            to: Some(2),
            scope: Scope::resellers(vec![3, 1]),
        };
        let q = SessionQuery {
            status: Status::Closed,
            filter: &f,
            sort: Sort {
                key: SortKey::AcctInputOctets,
                order: Order::Asc,
            },
        };
        let sql = rows_sql::<D>(&q, Some(Page { page: 2, limit: 50 }));
        assert!(!sql.text.contains("DROP"), "{}", sql.text);
        assert!(!sql.text.contains("192.0.2.1"), "{}", sql.text);
        assert!(
            sql.text.ends_with(&format!(
                "ORDER BY acctinputoctets ASC NULLS LAST, radacctid ASC LIMIT {} OFFSET {}",
                D::param(6),
                D::param(7)
            )),
            "{}",
            sql.text
        );
        assert_eq!(sql.binds.len(), 7, "no MAC clause: the term is not hex");
    }

    #[test]
    fn request_text_is_bound_never_spliced() {
        request_text_is_bound_never_spliced_in::<PgStore>();
        request_text_is_bound_never_spliced_in::<SqliteStore>();
    }
}
