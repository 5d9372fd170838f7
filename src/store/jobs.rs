//! The housekeeping jobs' reads and writes: finding stale open rows, syncing
//! `subscribers.is_online`, moving old closed rows to `radacct_archive`, the `job_runs` record,
//! and EnsureIndexes.
//! Closing rows is not here: that goes through the ingest writer like every other change to
//! open sessions. The SQL is the dialects'; the archive move and index builds differ by
//! database and live in its file.

use sqlx::Row as _;

use super::{Dialect, Result, Store, each_store};
use crate::sessions::Columns;

/// An open row the sweeper considers stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRow {
    pub radacctid: i64,
    pub acctuniqueid: String,
    pub username: Option<String>,
    pub nasipaddress: String,
    /// The last update (else the start): when the session was last seen alive.
    pub last_seen: Option<i64>,
}

/// A closed row the archiver would move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivableRow {
    pub radacctid: i64,
    pub username: Option<String>,
    pub acctstoptime: Option<i64>,
}

/// An index radacctd's queries rely on: its name, its definition (after `ON`) and the
/// databases it is built on.
pub(super) struct IndexDef {
    pub name: &'static str,
    pub on: &'static str,
    pub only: Option<Engine>,
}

/// One of the two databases, for the indexes only one of them has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Engine {
    Postgres,
    Sqlite,
}

impl IndexDef {
    /// Whether `engine` builds this index.
    pub fn on_engine(&self, engine: Engine) -> bool {
        self.only.is_none_or(|e| e == engine)
    }

    /// The table it indexes (the first word of its definition).
    pub fn table(&self) -> &'static str {
        self.on.split_whitespace().next().unwrap_or_default()
    }
}

/// The span of a session as a `tstzrange`, for attribution's GiST indexes and the query that
/// uses them (`Dialect::open_during`, PostgreSQL). Inclusive at both ends; an open session's
/// span has no upper bound. A row whose stop precedes its start (a NAS with a wrong clock)
/// spans its start alone instead of making the expression fail; the query's exact conditions
/// decide about such rows.
macro_rules! session_span {
    () => {
        "tstzrange(acctstarttime, CASE WHEN acctstoptime < acctstarttime THEN acctstarttime \
         ELSE acctstoptime END, '[]')"
    };
}
pub(super) use session_span;

/// A PostgreSQL GiST index for attribution on `$table`'s address column `$column`: the
/// address (`inet_ops`: `&&`, `<<=`, `=`) and the session's span together, so that a lookup
/// reads the sessions that held the address around the moment asked about, not every session
/// that ever held it. Partial: rows without the address (IPv6 columns of an IPv4-only ISP)
/// cost nothing.
macro_rules! attribution_index {
    ($name:literal, $table:literal, $column:literal) => {
        IndexDef {
            name: $name,
            on: concat!(
                $table,
                " USING gist (",
                $column,
                " inet_ops, (",
                session_span!(),
                ")) WHERE ",
                $column,
                " IS NOT NULL"
            ),
            only: Some(Engine::Postgres),
        }
    };
}

/// Every index the daemon's queries rely on (docs/ARCHITECTURE.md#jobs). The first three are
/// FreeRADIUS's own.
pub(super) const INDEXES: &[IndexDef] = &[
    IndexDef {
        name: "radacct_active_session_idx",
        on: "radacct (acctuniqueid) WHERE acctstoptime IS NULL",
        only: None,
    },
    IndexDef {
        name: "radacct_bulk_close",
        on: "radacct (nasipaddress, acctstarttime) WHERE acctstoptime IS NULL",
        only: None,
    },
    IndexDef {
        name: "radacct_start_user_idx",
        on: "radacct (acctstarttime, username)",
        only: None,
    },
    // No index on the last update time for the sweeper: every Interim-Update changes
    // acctupdatetime, and an index on it makes every interim a non-HOT update that rewrites
    // all of radacct's indexes (measured: 0 of 50,000 updates HOT with it, against 45% for
    // FreeRADIUS's own index set). The sweeper scans the open rows every 5 minutes instead.

    // By user name, with the stop time beside it: the online-flag sync's probe for a user's
    // open rows (`username = ? AND acctstoptime IS NULL`) and the API's scope filter
    // (`username IN (...)`), open and closed rows alike. One index for both: every Start
    // writes an entry into one index fewer than with a partial index on open rows beside a
    // plain one (`RETIRED_INDEXES`).
    IndexDef {
        name: "radacct_username_stop_idx",
        on: "radacct (username, acctstoptime)",
        only: None,
    },
    // The archiver and closed-session export ranges.
    IndexDef {
        name: "radacct_stop_idx",
        on: "radacct (acctstoptime) WHERE acctstoptime IS NOT NULL",
        only: None,
    },
    // Listing closed/all sessions of one NAS by start time.
    IndexDef {
        name: "radacct_nas_start_idx",
        on: "radacct (nasipaddress, acctstarttime)",
        only: None,
    },
    // Attribution (`Store::attribute`): who held an address at a moment, live and archived.
    attribution_index!("radacct_framedipaddress_gist", "radacct", "framedipaddress"),
    attribution_index!(
        "radacct_framedipv6address_gist",
        "radacct",
        "framedipv6address"
    ),
    attribution_index!(
        "radacct_framedipv6prefix_gist",
        "radacct",
        "framedipv6prefix"
    ),
    attribution_index!(
        "radacct_delegatedipv6prefix_gist",
        "radacct",
        "delegatedipv6prefix"
    ),
    attribution_index!(
        "radacct_archive_framedipaddress_gist",
        "radacct_archive",
        "framedipaddress"
    ),
    attribution_index!(
        "radacct_archive_framedipv6address_gist",
        "radacct_archive",
        "framedipv6address"
    ),
    attribution_index!(
        "radacct_archive_framedipv6prefix_gist",
        "radacct_archive",
        "framedipv6prefix"
    ),
    attribution_index!(
        "radacct_archive_delegatedipv6prefix_gist",
        "radacct_archive",
        "delegatedipv6prefix"
    ),
    // SQLite has no GiST: an IPv4 address is found by equality, the rest by the time
    // conditions (see `SqliteStore`'s `may_overlap`).
    IndexDef {
        name: "radacct_framedipaddress_idx",
        on: "radacct (framedipaddress)",
        only: Some(Engine::Sqlite),
    },
    IndexDef {
        name: "radacct_archive_framedipaddress_idx",
        on: "radacct_archive (framedipaddress)",
        only: Some(Engine::Sqlite),
    },
];

/// Indexes earlier versions built that [`INDEXES`] no longer holds: EnsureIndexes drops them
/// once it has built every index of [`INDEXES`]. Both were replaced by
/// `radacct_username_stop_idx` (measured: BENCHMARKS.md, "radacctd alone").
pub(super) const RETIRED_INDEXES: &[&str] = &["radacct_open_username_idx", "radacct_username_idx"];

/// The columns an archived row keeps: all of them.
fn archive_columns() -> String {
    let names: Vec<&str> = Columns::All.iter().map(|c| c.name).collect();
    names.join(", ")
}

impl Store {
    /// Open rows last seen before `cutoff` (seconds), oldest first, at most `limit`.
    pub async fn stale_open_rows(&self, cutoff: i64, limit: i64) -> Result<Vec<StaleRow>> {
        each_store!(Store, self, s: D => {
            let rows = sqlx::query(D::STALE_OPEN_ROWS)
                .bind(cutoff)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(StaleRow {
                        radacctid: r.try_get(0)?,
                        acctuniqueid: r.try_get::<Option<String>, _>(1)?.unwrap_or_default(),
                        username: r.try_get(2)?,
                        nasipaddress: r.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                        last_seen: r.try_get(4)?,
                    })
                })
                .collect()
        })
    }

    /// Sets `subscribers.is_online` to exactly "has an open radacct row", in two set-based
    /// statements. Returns (marked online, marked offline).
    pub async fn sync_online_flags(&self) -> Result<(u64, u64)> {
        each_store!(Store, self, s: D => {
            let mut tx = s.pool().begin().await?;
            let on = sqlx::query(D::MARK_ONLINE)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let off = sqlx::query(D::MARK_OFFLINE)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok((on, off))
        })
    }

    /// How many closed rows stopped before `cutoff`, and the first `limit` of them (oldest).
    pub async fn archivable_rows(
        &self,
        cutoff: i64,
        limit: i64,
    ) -> Result<(i64, Vec<ArchivableRow>)> {
        each_store!(Store, self, s: D => {
            let count: i64 = sqlx::query(D::COUNT_ARCHIVABLE)
                .bind(cutoff)
                .fetch_one(s.pool())
                .await?
                .try_get(0)?;
            let rows = sqlx::query(D::ARCHIVABLE_ROWS)
                .bind(cutoff)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
            let rows = rows
                .iter()
                .map(|r| {
                    Ok(ArchivableRow {
                        radacctid: r.try_get(0)?,
                        username: r.try_get(1)?,
                        acctstoptime: r.try_get(2)?,
                    })
                })
                .collect::<Result<_>>()?;
            Ok((count, rows))
        })
    }

    /// Moves up to `batch` closed rows stopped before `cutoff` (oldest first) to
    /// `radacct_archive`, in one transaction: the same rows are inserted there and deleted
    /// here, or nothing happens. Returns how many moved (0: nothing left). The sessions'
    /// rows in the action log (`session_actions`) move to `session_actions_archive` (every
    /// column, ids kept) in the same transaction.
    ///
    /// On PostgreSQL the rows are picked `FOR UPDATE SKIP LOCKED`, so a batch never waits for
    /// (or blocks for long) the ingest writer.
    pub async fn archive_batch(&self, cutoff: i64, batch: i64) -> Result<u64> {
        let cols = archive_columns();
        each_store!(Store, self, s => s.archive_batch(cutoff, batch, &cols).await)
    }

    /// Records that node `node` starts a run of `job` (a `job_runs` row); returns its id.
    pub async fn job_run_start(&self, job: &str, node: &str) -> Result<i64> {
        each_store!(Store, self, s: D => {
            Ok(sqlx::query(D::JOB_RUN_START)
                .bind(job)
                .bind(node)
                .fetch_one(s.pool())
                .await?
                .try_get(0)?)
        })
    }

    /// Completes the `job_runs` row `id`: the run ended having done `rows`, with `error` when
    /// it failed.
    pub async fn job_run_finish(&self, id: i64, rows: u64, error: Option<&str>) -> Result<()> {
        let rows = i64::try_from(rows).unwrap_or(i64::MAX);
        each_store!(Store, self, s: D => {
            sqlx::query(D::JOB_RUN_FINISH)
                .bind(id)
                .bind(rows)
                .bind(error)
                .execute(s.pool())
                .await?;
            Ok(())
        })
    }

    /// Deletes the `job_runs` rows of runs started before `cutoff` (seconds); returns how many.
    pub async fn trim_job_runs(&self, cutoff: i64) -> Result<u64> {
        each_store!(Store, self, s: D => {
            Ok(sqlx::query(D::TRIM_JOB_RUNS)
                .bind(cutoff)
                .execute(s.pool())
                .await?
                .rows_affected())
        })
    }

    /// EnsureIndexes: creates every index the queries rely on that is missing, and rebuilds
    /// any PostgreSQL left INVALID by an interrupted `CREATE INDEX CONCURRENTLY`. On PostgreSQL
    /// indexes are built `CONCURRENTLY`, so a live FreeRADIUS database keeps writing, and under
    /// the advisory lock [`super::ENSURE_INDEXES_LOCK`], so that of several nodes starting
    /// together one builds and the others then find the indexes present (instead of taking an
    /// index another node is still building for an interrupted build, and dropping it). Returns
    /// the names it created or rebuilt.
    pub async fn ensure_indexes(&self) -> Result<Vec<String>> {
        each_store!(Store, self, s => s.ensure_indexes().await)
    }
}
