//! Attribution's SQL (docs/ARCHITECTURE.md#attribution): the sessions of `radacct` and
//! `radacct_archive` that held an address or block during a window, and the audit table
//! `attribution_audit` (migration `0007_attribution_audit.sql`) that records every query.
//!
//! PostgreSQL answers with its `inet` operators through the GiST indexes EnsureIndexes builds
//! (`jobs::INDEXES`); SQLite, which has neither, selects by time (and an IPv4 address by
//! equality) and leaves the address comparison to `sessions::attribution::matched_column`,
//! which both stores' rows pass through, so that they answer alike.

use futures_util::TryStreamExt;
use sqlx::{AssertSqlSafe, Row as _};

use super::query::{Bind, Sql, query_of};
use super::{Dialect, Result, Store, each_store, read_row, select_list};
use crate::sessions::attribution::{Attributed, AttributionQuery, Location, matched_column};
use crate::sessions::filter::{Page, Scope};
use crate::sessions::{Columns, Row};

/// A row to append to the audit table: who asked what, and how much they were told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The API token's `sub`, or `cli:<user>` for `radacctd attribution`.
    pub actor: Option<String>,
    /// `admin`, `reseller` or `cli`.
    pub role: String,
    pub reseller_id: Option<i64>,
    /// `api` or `cli`.
    pub via: String,
    /// The address or block asked about, as the query used it (`sessions::attribution::Target`).
    pub ip: String,
    /// The moment asked about (epoch seconds) and the skew window (seconds).
    pub at: i64,
    pub window_secs: i64,
    /// Sessions in the answer, and whether more were left out.
    pub results: i64,
    pub truncated: bool,
    /// Their `radacctid`s, in the answer's order.
    pub radacctids: Vec<i64>,
    /// `node.name` of the daemon that answered (none for the CLI).
    pub node: Option<String>,
    /// Epoch seconds.
    pub requested_at: i64,
}

/// A row of the audit table as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAudit {
    pub id: i64,
    pub record: AuditRecord,
}

/// The statement of a query: both tables' matches, by start time (then `radacctid`), and
/// whether the SQL decides the address match alone (then it also applies the limit).
fn attribution_sql<D: Dialect>(q: &AttributionQuery) -> (Sql, bool) {
    let mut sql = Sql::default();
    let target = sql.param::<D>(Bind::Text(q.target.to_string()));
    let from = sql.param::<D>(Bind::Int(q.window.from));
    let to = sql.param::<D>(Bind::Int(q.window.to));
    let scope = match &q.scope {
        Scope::All => None,
        Scope::Resellers(ids) => Some(D::owned_by_resellers(
            &sql.param::<D>(Bind::Ids(ids.to_vec())),
        )),
    };
    let host_v4 = q.target.is_ipv4() && q.target.block().is_host();
    let mut exact = true;
    let address: Vec<String> = q
        .target
        .columns()
        .iter()
        .map(|c| {
            D::overlaps(c, &target, host_v4).unwrap_or_else(|| {
                exact = false;
                format!("{c} IS NOT NULL")
            })
        })
        .collect();
    let select = select_list(Columns::All, D::read_back);
    let branch = |table: &str, location: Location| {
        let mut conds = vec![
            D::open_during(&from, &to),
            format!("({})", address.join(" OR ")),
        ];
        conds.extend(scope.clone());
        format!(
            "SELECT {select}, '{}' AS source, acctstarttime AS o_start, radacctid AS o_id \
             FROM {table} WHERE {}",
            location.as_str(),
            conds.join(" AND ")
        )
    };
    let mut text = format!(
        "{} UNION ALL {} ORDER BY o_start, o_id, source DESC",
        branch("radacct", Location::Live),
        branch("radacct_archive", Location::Archive)
    );
    if exact {
        let limit = sql.param::<D>(Bind::Int(i64::try_from(q.limit).unwrap_or(i64::MAX) + 1));
        text.push_str(&format!(" LIMIT {limit}"));
    }
    sql.text = text;
    (sql, exact)
}

/// The columns [`read_audit`] reads, in its order.
fn audit_columns<D: Dialect>() -> String {
    format!(
        "id, actor, role, reseller_id, via, query_ip, {}, window_secs, results, truncated, \
         radacctids, node, {}",
        D::epoch("query_at"),
        D::epoch("requested_at")
    )
}

/// Reads a row selected with [`audit_columns`].
fn read_audit<'r, R>(r: &'r R) -> Result<StoredAudit>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let ids: String = r.try_get(10)?;
    Ok(StoredAudit {
        id: r.try_get(0)?,
        record: AuditRecord {
            actor: r.try_get(1)?,
            role: r.try_get(2)?,
            reseller_id: r.try_get(3)?,
            via: r.try_get(4)?,
            ip: r.try_get(5)?,
            at: r.try_get(6)?,
            window_secs: r.try_get(7)?,
            results: r.try_get(8)?,
            truncated: r.try_get(9)?,
            radacctids: serde_json::from_str(&ids).unwrap_or_default(),
            node: r.try_get(11)?,
            requested_at: r.try_get(12)?,
        },
    })
}

impl Store {
    /// The sessions that held `q.target` during `q.window`, live and archived, in the caller's
    /// scope, by start time: at most `q.limit`, and whether there were more.
    pub async fn attribute(&self, q: &AttributionQuery) -> Result<(Vec<Attributed>, bool)> {
        let mut found = Vec::new();
        each_store!(Store, self, s: D => {
            let (sql, _exact) = attribution_sql::<D>(q);
            let mut rows = query_of!(sql, D).fetch(s.pool());
            let n = Columns::All.count();
            while let Some(r) = rows.try_next().await? {
                let row: Row = read_row(&r, Columns::All)?;
                let source: String = r.try_get(n)?;
                let (Some(location), Some(matched)) =
                    (Location::parse(&source), matched_column(&q.target, &row))
                else {
                    continue;
                };
                if !q.window.holds(row.acctstarttime, row.acctstoptime) {
                    continue;
                }
                found.push(Attributed { row, location, matched });
                if found.len() > q.limit {
                    break;
                }
            }
        });
        let truncated = found.len() > q.limit;
        found.truncate(q.limit);
        Ok((found, truncated))
    }

    /// How the database runs `q` (PostgreSQL's `EXPLAIN (ANALYZE, BUFFERS)`, which runs it,
    /// with the time and pages each node took; SQLite's `EXPLAIN QUERY PLAN`), a line per plan
    /// node: the proof that a lookup is an index lookup (`radacctd attribution --explain`,
    /// tests, benchmarks).
    pub async fn explain_attribution(&self, q: &AttributionQuery) -> Result<Vec<String>> {
        match self {
            Store::Postgres(s) => {
                let (mut sql, _) = attribution_sql::<super::PgStore>(q);
                sql.text = format!("EXPLAIN (ANALYZE, BUFFERS) {}", sql.text);
                let rows = query_of!(sql, super::PgStore).fetch_all(s.pool()).await?;
                rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
            }
            Store::Sqlite(s) => {
                let (mut sql, _) = attribution_sql::<super::SqliteStore>(q);
                sql.text = format!("EXPLAIN QUERY PLAN {}", sql.text);
                let rows = query_of!(sql, super::SqliteStore)
                    .fetch_all(s.pool())
                    .await?;
                rows.iter().map(|r| Ok(r.try_get(3)?)).collect()
            }
        }
    }

    /// Appends a row to the audit table; returns its id.
    pub async fn record_attribution(&self, r: &AuditRecord) -> Result<i64> {
        let ids = serde_json::to_string(&r.radacctids).unwrap_or_else(|_| "[]".into());
        each_store!(Store, self, s: D => {
            let p: Vec<String> = (1..=12).map(D::param).collect();
            let sql = format!(
                "INSERT INTO attribution_audit (actor, role, reseller_id, via, query_ip, query_at, \
                 window_secs, results, truncated, radacctids, node, requested_at) \
                 VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}) RETURNING id",
                p[0], p[1], p[2], p[3], p[4], D::timestamp(&p[5]), p[6], p[7], p[8], p[9], p[10],
                D::timestamp(&p[11]),
            );
            Ok(sqlx::query(AssertSqlSafe(sql))
                .bind(r.actor.as_deref())
                .bind(r.role.as_str())
                .bind(r.reseller_id)
                .bind(r.via.as_str())
                .bind(r.ip.as_str())
                .bind(r.at)
                .bind(r.window_secs)
                .bind(r.results)
                .bind(r.truncated)
                .bind(ids.as_str())
                .bind(r.node.as_deref())
                .bind(r.requested_at)
                .fetch_one(s.pool())
                .await?
                .try_get(0)?)
        })
    }

    /// One page of the audit table, newest first, and its number of rows.
    pub async fn attribution_audit(&self, page: Page) -> Result<(Vec<StoredAudit>, u64)> {
        each_store!(Store, self, s: D => {
            let total: i64 = sqlx::query("SELECT COUNT(*) FROM attribution_audit")
                .fetch_one(s.pool())
                .await?
                .try_get(0)?;
            let sql = format!(
                "SELECT {} FROM attribution_audit ORDER BY id DESC LIMIT {} OFFSET {}",
                audit_columns::<D>(),
                D::param(1),
                D::param(2)
            );
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(i64::try_from(page.limit).unwrap_or(i64::MAX))
                .bind(i64::try_from(page.offset()).unwrap_or(i64::MAX))
                .fetch_all(s.pool())
                .await?;
            let rows = rows.iter().map(read_audit).collect::<Result<_>>()?;
            Ok((rows, total.max(0) as u64))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::attribution::{Target, Window};
    use crate::store::{PgStore, SqliteStore};

    fn query(ip: &str) -> AttributionQuery {
        AttributionQuery {
            target: Target::parse(ip).expect("target"),
            window: Window::around(1_000, 5),
            scope: Scope::resellers(vec![2]),
            limit: 10,
        }
    }

    #[test]
    fn postgres_compares_addresses_in_sql_through_the_indexed_span() {
        let (sql, exact) = attribution_sql::<PgStore>(&query("2001:db8::/56"));
        assert!(exact);
        for column in [
            "framedipv6address",
            "framedipv6prefix",
            "delegatedipv6prefix",
        ] {
            assert!(
                sql.text.contains(&format!("{column} && $1::inet")),
                "{}",
                sql.text
            );
        }
        assert!(
            sql.text.contains(super::super::jobs::session_span!()),
            "{}",
            sql.text
        );
        assert!(sql.text.ends_with("LIMIT $5"), "{}", sql.text);
        assert_eq!(sql.binds.len(), 5);
    }

    #[test]
    fn sqlite_finds_ipv4_hosts_by_equality_and_the_rest_by_time() {
        let (sql, exact) = attribution_sql::<SqliteStore>(&query("100.64.3.7"));
        assert!(exact);
        assert!(sql.text.contains("framedipaddress = ?1"), "{}", sql.text);
        let (sql, exact) = attribution_sql::<SqliteStore>(&query("100.64.3.0/24"));
        assert!(!exact);
        assert!(
            sql.text.contains("framedipaddress IS NOT NULL"),
            "{}",
            sql.text
        );
        assert!(!sql.text.contains("LIMIT"), "{}", sql.text);
    }
}
