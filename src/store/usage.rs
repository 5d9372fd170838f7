//! The usage ledger (`usage_hourly`, `usage_daily`; migrations `0008_usage.sql`) and the
//! fair-use throttle state (`fair_use_throttles`).
//!
//! The ledger is only ever added to, by the ingest writer, in the transaction (on
//! PostgreSQL's optimistic path: the one statement) that writes the radacct rows the amounts
//! come from; the optimistic statement adds only the amounts of the sessions whose rows it
//! actually wrote, so a refused row (another writer changed it) adds nothing until it is redone
//! under locks from the row as it really is.

use std::collections::HashMap;

use sqlx::Row as _;

use super::{Dialect, Result, Store, Tx, each_store};
use crate::events::{EventType, NewEvent, rfc3339};
use crate::usage::{DAY, Entry};

/// The upserts that add the rows of CTE `l` (`username, hour, i, o`) to both ledger tables,
/// as CTEs (PostgreSQL). Each groups its rows and takes them in key order, so concurrent
/// writers (several commits in flight, several nodes) lock bucket rows in one order.
fn pg_upsert_ctes() -> String {
    format!(
        "lh AS (INSERT INTO usage_hourly AS t (username, hour, input_octets, output_octets) \
         SELECT username, hour, sum(i)::int8, sum(o)::int8 FROM l GROUP BY username, hour \
         ORDER BY username, hour \
         ON CONFLICT (username, hour) DO UPDATE SET \
         input_octets = t.input_octets + excluded.input_octets, \
         output_octets = t.output_octets + excluded.output_octets), \
         ld AS (INSERT INTO usage_daily AS t (day, username, input_octets, output_octets) \
         SELECT hour - mod(hour, {DAY}), username, sum(i)::int8, sum(o)::int8 FROM l \
         GROUP BY 1, 2 ORDER BY 1, 2 \
         ON CONFLICT (day, username) DO UPDATE SET \
         input_octets = t.input_octets + excluded.input_octets, \
         output_octets = t.output_octets + excluded.output_octets)"
    )
}

/// The ledger CTEs of the optimistic path's guarded statement, parameters from `$first`
/// (six arrays: key, id, username, hour, input, output). `keys` and `ids` select what the
/// statement's inserts and updates wrote: only those sessions' amounts are added.
pub(super) fn pg_guarded_ledger(first: usize, keys: &[String], ids: &[String]) -> String {
    let p: Vec<String> = (first..first + 6).map(|n| format!("${n}")).collect();
    let mut written = Vec::new();
    if !keys.is_empty() {
        written.push(format!("u.key IN ({})", keys.join(" UNION ALL ")));
    }
    if !ids.is_empty() {
        written.push(format!("u.id IN ({})", ids.join(" UNION ALL ")));
    }
    let written = if written.is_empty() {
        "false".to_owned()
    } else {
        written.join(" OR ")
    };
    format!(
        "l AS (SELECT u.username, u.hour, u.i, u.o FROM unnest({}::text[], {}::int8[], \
         {}::text[], {}::int8[], {}::int8[], {}::int8[]) AS u(key, id, username, hour, i, o) \
         WHERE {written}), {}",
        p[0],
        p[1],
        p[2],
        p[3],
        p[4],
        p[5],
        pg_upsert_ctes()
    )
}

/// Binds [`pg_guarded_ledger`]'s six arrays.
pub(super) fn bind_guarded_ledger<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ledger: &[Entry],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let keys: Vec<String> = ledger.iter().map(|e| e.key.clone()).collect();
    let ids: Vec<Option<i64>> = ledger.iter().map(|e| e.id).collect();
    let (users, hours, inputs, outputs) = columns(ledger);
    q.bind(keys)
        .bind(ids)
        .bind(users)
        .bind(hours)
        .bind(inputs)
        .bind(outputs)
}

type Columns4 = (Vec<String>, Vec<i64>, Vec<i64>, Vec<i64>);

fn columns(ledger: &[Entry]) -> Columns4 {
    (
        ledger.iter().map(|e| e.username.clone()).collect(),
        ledger.iter().map(|e| e.hour).collect(),
        ledger.iter().map(|e| e.input).collect(),
        ledger.iter().map(|e| e.output).collect(),
    )
}

/// The locked path's ledger statement (PostgreSQL): every entry is of a row this transaction
/// wrote.
fn pg_tx_ledger() -> String {
    format!(
        "WITH l AS (SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) \
         AS u(username, hour, i, o)), {} SELECT 1",
        pg_upsert_ctes()
    )
}

/// SQLite's two upserts, one entry per statement (summed first, so each bucket once).
const SQLITE_HOURLY: &str = "INSERT INTO usage_hourly (username, hour, input_octets, \
     output_octets) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (username, hour) DO UPDATE SET \
     input_octets = input_octets + excluded.input_octets, \
     output_octets = output_octets + excluded.output_octets";
const SQLITE_DAILY: &str = "INSERT INTO usage_daily (day, username, input_octets, \
     output_octets) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (day, username) DO UPDATE SET \
     input_octets = input_octets + excluded.input_octets, \
     output_octets = output_octets + excluded.output_octets";

/// `ledger` summed per `(username, bucket)`, where `bucket` maps an hour to its bucket.
fn summed(ledger: &[Entry], bucket: impl Fn(i64) -> i64) -> Vec<(String, i64, i64, i64)> {
    let mut by: HashMap<(&str, i64), (i64, i64)> = HashMap::new();
    for e in ledger {
        let s = by.entry((&e.username, bucket(e.hour))).or_default();
        s.0 += e.input;
        s.1 += e.output;
    }
    let mut out: Vec<(String, i64, i64, i64)> = by
        .into_iter()
        .map(|((u, b), (i, o))| (u.to_owned(), b, i, o))
        .collect();
    out.sort();
    out
}

impl Tx {
    /// Adds `ledger` (amounts of rows this transaction wrote) to the usage ledger.
    pub async fn add_usage(&mut self, ledger: &[Entry]) -> Result<()> {
        if ledger.is_empty() {
            return Ok(());
        }
        match self {
            Tx::Postgres(t) => {
                let (users, hours, inputs, outputs) = columns(ledger);
                sqlx::query(sqlx::AssertSqlSafe(pg_tx_ledger()))
                    .bind(users)
                    .bind(hours)
                    .bind(inputs)
                    .bind(outputs)
                    .execute(t.conn())
                    .await?;
            }
            Tx::Sqlite(t) => {
                for (user, hour, i, o) in summed(ledger, |h| h) {
                    sqlx::query(SQLITE_HOURLY)
                        .bind(&user)
                        .bind(hour)
                        .bind(i)
                        .bind(o)
                        .execute(t.conn())
                        .await?;
                }
                for (user, day, i, o) in summed(ledger, |h| h - h.rem_euclid(DAY)) {
                    sqlx::query(SQLITE_DAILY)
                        .bind(day)
                        .bind(&user)
                        .bind(i)
                        .bind(o)
                        .execute(t.conn())
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// One bucket of a subscriber's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageBucket {
    /// Epoch seconds: the start of the UTC hour (or of the bucket it was summed into).
    pub start: i64,
    pub input: i64,
    pub output: i64,
}

/// A subscriber's total over a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTotal {
    pub username: String,
    pub input: i64,
    pub output: i64,
}

/// A subscriber over a fair-use threshold (`fair_use_throttles`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    pub username: String,
    pub policy: String,
    pub period_start: i64,
    pub period_end: i64,
    pub threshold_bytes: i64,
    pub used_bytes: i64,
    pub rate: String,
    pub restore_rate: String,
    pub throttled_since: i64,
    pub node: String,
}

const THROTTLE_COLUMNS: &str = "username, policy, period_start, period_end, threshold_bytes, \
     used_bytes, rate, restore_rate, throttled_since, node";

fn read_throttle<'r, R>(r: &'r R) -> Result<Throttle>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Throttle {
        username: r.try_get(0)?,
        policy: r.try_get(1)?,
        period_start: r.try_get(2)?,
        period_end: r.try_get(3)?,
        threshold_bytes: r.try_get(4)?,
        used_bytes: r.try_get(5)?,
        rate: r.try_get(6)?,
        restore_rate: r.try_get(7)?,
        throttled_since: r.try_get(8)?,
        node: r.try_get(9)?,
    })
}

/// The subscriber scope of a usage query: everyone, or the subscribers of these resellers.
fn scope_clause<D: Dialect>(resellers: Option<&[i64]>, p: usize) -> String {
    match resellers {
        None => String::new(),
        Some(_) => format!(" AND {}", D::owned_by_resellers(&D::param(p))),
    }
}

impl Store {
    /// The ledger hours of `username` in `[from, to)`, oldest first.
    pub async fn usage_hours(
        &self,
        username: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<UsageBucket>> {
        each_store!(Store, self, s: D => {
            let sql = format!(
                "SELECT hour, input_octets, output_octets FROM usage_hourly \
                 WHERE username = {} AND hour >= {} AND hour < {} ORDER BY hour",
                D::param(1), D::param(2), D::param(3)
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(username)
                .bind(from)
                .bind(to)
                .fetch_all(s.pool())
                .await?;
            rows.iter()
                .map(|r| Ok(UsageBucket { start: r.try_get(0)?, input: r.try_get(1)?, output: r.try_get(2)? }))
                .collect()
        })
    }

    /// The `limit` subscribers with the most octets (input + output) in `[from, to)`, both
    /// whole hours, most first; `resellers`: only their subscribers. Whole UTC days inside the
    /// span are read from `usage_daily`, the hours at its edges from `usage_hourly`.
    pub async fn usage_top(
        &self,
        from: i64,
        to: i64,
        limit: i64,
        resellers: Option<&[i64]>,
    ) -> Result<Vec<UsageTotal>> {
        let d0 = from + (DAY - from.rem_euclid(DAY)) % DAY;
        let d1 = to - to.rem_euclid(DAY);
        let (d0, d1) = if d0 < d1 { (d0, d1) } else { (to, to) };
        each_store!(Store, self, s: D => {
            let p = |n| D::param(n);
            let sql = format!(
                "SELECT username, CAST(SUM(i) AS BIGINT), CAST(SUM(o) AS BIGINT) FROM ( \
                 SELECT username, input_octets AS i, output_octets AS o FROM usage_daily \
                 WHERE day >= {d0} AND day < {d1}{sd} \
                 UNION ALL SELECT username, input_octets, output_octets FROM usage_hourly \
                 WHERE ((hour >= {from} AND hour < {d0}) OR (hour >= {d1} AND hour < {to})){sh} \
                 ) AS x GROUP BY username ORDER BY SUM(i) + SUM(o) DESC, username LIMIT {limit}",
                d0 = p(1), d1 = p(2), from = p(3), to = p(4), limit = p(5),
                sd = scope_clause::<D>(resellers, 6),
                sh = scope_clause::<D>(resellers, 6),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(d0).bind(d1).bind(from).bind(to).bind(limit);
            if let Some(ids) = resellers {
                q = D::bind_ids(q, ids.to_vec());
            }
            let rows = q.fetch_all(s.pool()).await?;
            rows.iter()
                .map(|r| {
                    Ok(UsageTotal {
                        username: r.try_get(0)?,
                        input: sum_of(r, 1)?,
                        output: sum_of(r, 2)?,
                    })
                })
                .collect()
        })
    }

    /// Input + output octets of each of `usernames` since `since` (epoch seconds, an hour
    /// start): the usage of a period that has not ended. Subscribers with none are absent.
    pub async fn usage_since(
        &self,
        usernames: &[String],
        since: i64,
    ) -> Result<HashMap<String, i64>> {
        let mut out = HashMap::with_capacity(usernames.len());
        for chunk in usernames.chunks(500) {
            each_store!(Store, self, s: D => {
                let list: Vec<String> = (0..chunk.len()).map(|i| D::param(i + 2)).collect();
                let sql = format!(
                    "SELECT username, CAST(SUM(input_octets + output_octets) AS BIGINT) FROM usage_hourly \
                     WHERE hour >= {} AND username IN ({}) GROUP BY username",
                    D::param(1),
                    list.join(", ")
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(since);
                for u in chunk {
                    q = q.bind(u.as_str());
                }
                for r in q.fetch_all(s.pool()).await? {
                    out.insert(r.try_get::<String, _>(0)?, sum_of(&r, 1)?);
                }
            });
        }
        Ok(out)
    }

    /// The `Class` of the rows with these keys (absent: no row, or no class).
    pub async fn classes_of(&self, keys: &[String]) -> Result<HashMap<String, String>> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            each_store!(Store, self, s: D => {
                let list: Vec<String> = (0..chunk.len()).map(|i| D::param(i + 1)).collect();
                let sql = format!(
                    "SELECT acctuniqueid, class FROM radacct WHERE acctuniqueid IN ({}) \
                     AND class IS NOT NULL",
                    list.join(", ")
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for k in chunk {
                    q = q.bind(k.as_str());
                }
                for r in q.fetch_all(s.pool()).await? {
                    out.insert(r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?);
                }
            });
        }
        Ok(out)
    }

    /// Records a crossing unless the subscriber already has a throttle row. Returns whether
    /// this call inserted it (of several nodes seeing the same crossing, exactly one does);
    /// the one that does appends its `usage.threshold_crossed` event ([`crossing_event`]) in
    /// the same transaction.
    pub async fn claim_throttle(&self, t: &Throttle) -> Result<bool> {
        let events = self.events_enabled();
        each_store!(Store, self, s: D => {
            let p: Vec<String> = (1..=10).map(D::param).collect();
            let sql = format!(
                "INSERT INTO fair_use_throttles ({THROTTLE_COLUMNS}) VALUES ({}) \
                 ON CONFLICT (username) DO NOTHING",
                p.join(", ")
            );
            let mut tx = s.pool().begin().await?;
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&t.username)
                .bind(&t.policy)
                .bind(t.period_start)
                .bind(t.period_end)
                .bind(t.threshold_bytes)
                .bind(t.used_bytes)
                .bind(&t.rate)
                .bind(&t.restore_rate)
                .bind(t.throttled_since)
                .bind(&t.node)
                .execute(&mut *tx)
                .await?;
            let claimed = done.rows_affected() == 1;
            if claimed && events {
                D::append_events(&mut tx, &[crossing_event(t)]).await?;
            }
            tx.commit().await?;
            if claimed && events {
                s.outbox.committed();
            }
            Ok(claimed)
        })
    }

    /// The throttle rows of `usernames` (all of them when `None`).
    pub async fn throttles(&self, usernames: Option<&[String]>) -> Result<Vec<Throttle>> {
        let mut out = Vec::new();
        let all = [String::new()];
        let chunks: Vec<&[String]> = match usernames {
            None => vec![&all[..0]],
            Some(u) => u.chunks(500).collect(),
        };
        for chunk in chunks {
            if usernames.is_some() && chunk.is_empty() {
                continue;
            }
            each_store!(Store, self, s: D => {
                let filter = if usernames.is_some() {
                    let list: Vec<String> = (0..chunk.len()).map(|i| D::param(i + 1)).collect();
                    format!(" WHERE username IN ({})", list.join(", "))
                } else {
                    String::new()
                };
                let sql = format!("SELECT {THROTTLE_COLUMNS} FROM fair_use_throttles{filter} ORDER BY username");
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for u in chunk {
                    q = q.bind(u.as_str());
                }
                for r in q.fetch_all(s.pool()).await? {
                    out.push(read_throttle(&r)?);
                }
            });
        }
        Ok(out)
    }

    /// The throttle rows whose period ended at or before `now`: due for the reset.
    pub async fn throttles_due(&self, now: i64) -> Result<Vec<Throttle>> {
        each_store!(Store, self, s: D => {
            let sql = format!(
                "SELECT {THROTTLE_COLUMNS} FROM fair_use_throttles WHERE period_end <= {} \
                 ORDER BY period_end, username",
                D::param(1)
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).fetch_all(s.pool()).await?;
            rows.iter().map(read_throttle).collect()
        })
    }

    /// Removes a throttle row once its rate is restored (only the row of that period, so a
    /// newer crossing recorded meanwhile stays).
    pub async fn release_throttle(&self, username: &str, period_end: i64) -> Result<bool> {
        each_store!(Store, self, s: D => {
            let sql = format!(
                "DELETE FROM fair_use_throttles WHERE username = {} AND period_end = {}",
                D::param(1), D::param(2)
            );
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(username)
                .bind(period_end)
                .execute(s.pool())
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }
}

/// The event of a claimed crossing: `usage.threshold_crossed` for the subscriber, at the
/// time it was found (`policy`, the period's `period_start` and `period_end` in RFC 3339,
/// `threshold_bytes`, `used_bytes`, the `rate` it is throttled to).
fn crossing_event(t: &Throttle) -> NewEvent {
    let data = serde_json::json!({
        "policy": t.policy,
        "period_start": rfc3339(t.period_start),
        "period_end": rfc3339(t.period_end),
        "threshold_bytes": t.threshold_bytes,
        "used_bytes": t.used_bytes,
        "rate": t.rate,
    });
    NewEvent {
        kind: EventType::UsageThresholdCrossed,
        time: t.throttled_since,
        username: t.username.clone(),
        nasipaddress: String::new(),
        acctuniqueid: String::new(),
        radacctid: None,
        data: data.to_string(),
    }
}

/// A `SUM` cast to a bigint (NULL: nothing summed).
fn sum_of<'r, R>(r: &'r R, i: usize) -> Result<i64>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(r.try_get::<Option<i64>, _>(i)?.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_sums_entries_per_bucket_before_writing() {
        let e = |u: &str, hour, input| Entry {
            key: "k".into(),
            id: None,
            username: u.into(),
            hour,
            input,
            output: 1,
        };
        let ledger = [
            e("b", 3600, 5),
            e("a", 7200, 1),
            e("a", 3600, 2),
            e("a", 3600, 3),
        ];
        assert_eq!(
            summed(&ledger, |h| h),
            vec![
                ("a".into(), 3600, 5, 2),
                ("a".into(), 7200, 1, 1),
                ("b".into(), 3600, 5, 1)
            ]
        );
        assert_eq!(
            summed(&ledger, |h| h - h.rem_euclid(DAY)),
            vec![("a".into(), 0, 6, 3), ("b".into(), 0, 5, 1)]
        );
    }
}
