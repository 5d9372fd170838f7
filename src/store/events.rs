//! The session events outbox (`event_queue`, `events`, `event_sequence`, `webhook_cursors`;
//! migrations `0009_events.sql`, docs/EVENTS.md).
//!
//! Writers append to `event_queue` in the transaction (on PostgreSQL's optimistic path: the
//! statement) of the change that caused the event. [`Store::sequence_events`] moves committed
//! queue rows into `events`, numbering them from `event_sequence.last + 1` in queue order, in
//! one transaction that holds [`EVENTS_SEQUENCER_LOCK`] (PostgreSQL) until it commits: of
//! several nodes one numbers at a time, so ids are given in commit order and without gaps, and a
//! reader that has read up to id N has read every event up to N for good. Readers see only
//! `events`.

use std::sync::{Arc, LazyLock};

use sqlx::Row as _;
use tokio::sync::Notify;

use super::{Dialect, Result, Store, Tx, each_store};
use crate::events::{NewEvent, StoredEvent};

/// A store's side of the outbox: whether it appends events at all, and the signal its commits
/// that appended some give. Every writer of events (the ingest writer's transactions and
/// guarded statements, the action log, the fair-use claims, a journal replay) goes through the
/// store, so one signal here wakes the sequencer after each of them, rather than each caller
/// having to remember to.
#[derive(Debug, Clone)]
pub(super) struct Outbox {
    /// [`super::StoreOptions::events`].
    pub(super) enabled: bool,
    /// Shared by the store's clones and its transactions ([`Store::events_appended`]).
    appended: Arc<Notify>,
}

impl Outbox {
    pub(super) fn new(enabled: bool) -> Outbox {
        Outbox {
            enabled,
            appended: Arc::new(Notify::new()),
        }
    }

    /// Says that a commit appended events: the sequencer's next round starts at once (a
    /// permit is kept when it is busy, so none is missed).
    pub(super) fn committed(&self) {
        self.appended.notify_one();
    }
}

/// The advisory lock the sequencer's transaction holds (`pg_advisory_xact_lock(int8)`):
/// "radacctE" in ASCII.
pub const EVENTS_SEQUENCER_LOCK: i64 = 0x7261_6461_6363_7445;

/// The channel the sequencer notifies, with the last id it gave, when it numbered events: the
/// other nodes' streams read them at once instead of at their next poll.
pub const EVENTS_CHANNEL: &str = "radacctd_events";

/// What one round of the sequencer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sequenced {
    /// Events numbered in this round.
    pub moved: u64,
    /// The last id given so far (this round's or an earlier one's).
    pub last_id: i64,
}

/// The columns of an event as `events` holds them, for [`read_event`].
const EVENT_COLUMNS: &str =
    "id, type, time, username, nasipaddress, acctuniqueid, radacctid, data, created";

/// The columns the writers fill in `event_queue`, in their bind order.
const QUEUE_COLUMNS: &str = "type, time, username, nasipaddress, acctuniqueid, radacctid, data";

/// PostgreSQL: the queue's seven arrays from `$first` ([`bind_queue_arrays`]) as rows `u` in
/// [`QUEUE_COLUMNS`] order, numbered by `u.ord` in array order (which the inserts keep, so
/// the queue's `seq` follows the events' order).
fn pg_unnest_queue(first: usize) -> String {
    let p: Vec<String> = (first..first + 7).map(|n| format!("${n}")).collect();
    format!(
        "unnest({}::text[], {}::int8[], {}::text[], {}::text[], {}::text[], {}::int8[], \
         {}::text[]) WITH ORDINALITY AS u(type, time, username, nasipaddress, acctuniqueid, \
         radacctid, data, ord)",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    )
}

/// PostgreSQL: appends the queue's arrays (`$1`…`$7`, [`bind_queue_arrays`]) in array order.
pub(super) static PG_QUEUE_INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO event_queue ({QUEUE_COLUMNS}) \
         SELECT u.type, u.time, u.username, u.nasipaddress, u.acctuniqueid, u.radacctid, u.data \
         FROM {} ORDER BY u.ord",
        pg_unnest_queue(1)
    )
});

/// The events CTE of the optimistic path's guarded statement (PostgreSQL), parameters from
/// `$first` (the seven arrays of [`bind_queue_arrays`]): appends, in array order, only the
/// events of the sessions the statement wrote. `inserted` names the CTE of its inserts (whose
/// `RETURNING` gives `radacctid` and `acctuniqueid`): an event of a new row, which has no id
/// yet, matches it by key and takes its id from it. `updated` selects the ids its updates
/// wrote.
pub(super) fn pg_guarded_events(
    first: usize,
    inserted: Option<&str>,
    updated: &[String],
) -> String {
    let mut written = Vec::new();
    let (join, id) = match inserted {
        Some(w) => {
            written.push("i.radacctid IS NOT NULL".to_owned());
            (
                format!(" LEFT JOIN {w} AS i ON i.acctuniqueid = u.acctuniqueid"),
                "COALESCE(u.radacctid, i.radacctid)",
            )
        }
        None => (String::new(), "u.radacctid"),
    };
    if !updated.is_empty() {
        written.push(format!("u.radacctid IN ({})", updated.join(" UNION ALL ")));
    }
    let written = if written.is_empty() {
        "false".to_owned()
    } else {
        written.join(" OR ")
    };
    format!(
        "e AS (INSERT INTO event_queue ({QUEUE_COLUMNS}) \
         SELECT u.type, u.time, u.username, u.nasipaddress, u.acctuniqueid, {id}, u.data \
         FROM {}{join} WHERE {written} ORDER BY u.ord)",
        pg_unnest_queue(first)
    )
}

/// The seven arrays of `events`, in [`QUEUE_COLUMNS`] order.
pub(super) type QueueArrays = (
    Vec<&'static str>,
    Vec<i64>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<Option<i64>>,
    Vec<String>,
);

/// `events` as the queue's arrays ([`pg_unnest_queue`]).
pub(super) fn queue_arrays(events: &[NewEvent]) -> QueueArrays {
    (
        events.iter().map(|e| e.kind.name()).collect(),
        events.iter().map(|e| e.time).collect(),
        events.iter().map(|e| e.username.clone()).collect(),
        events.iter().map(|e| e.nasipaddress.clone()).collect(),
        events.iter().map(|e| e.acctuniqueid.clone()).collect(),
        events.iter().map(|e| e.radacctid).collect(),
        events.iter().map(|e| e.data.clone()).collect(),
    )
}

/// Binds [`queue_arrays`] to a statement that unnests them ([`pg_unnest_queue`]).
pub(super) fn bind_queue_arrays<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    events: &[NewEvent],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let (t, time, user, nas, key, id, data) = queue_arrays(events);
    q.bind(t)
        .bind(time)
        .bind(user)
        .bind(nas)
        .bind(key)
        .bind(id)
        .bind(data)
}

const SQLITE_QUEUE_INSERT: &str = "INSERT INTO event_queue (type, time, username, nasipaddress, \
     acctuniqueid, radacctid, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// PostgreSQL's round of the sequencer, after the lock (`$1`: at most this many, `$2`: now).
const PG_SEQUENCE: &str = "WITH s AS (SELECT last FROM event_sequence), \
     q AS (SELECT seq, type, time, username, nasipaddress, acctuniqueid, radacctid, data, \
       row_number() OVER (ORDER BY seq) AS n FROM event_queue ORDER BY seq LIMIT $1), \
     d AS (DELETE FROM event_queue WHERE seq IN (SELECT seq FROM q)), \
     i AS (INSERT INTO events (id, type, time, username, nasipaddress, acctuniqueid, \
       radacctid, data, created) \
       SELECT s.last + q.n, q.type, q.time, q.username, q.nasipaddress, q.acctuniqueid, \
       q.radacctid, q.data, $2 FROM q, s ORDER BY q.n), \
     c AS (SELECT count(*) AS moved FROM q), \
     u AS (UPDATE event_sequence SET last = last + (SELECT moved FROM c) \
       WHERE (SELECT moved FROM c) > 0) \
     SELECT (SELECT moved FROM c), (SELECT last FROM s) + (SELECT moved FROM c)";

/// The shared statements, in each dialect.
fn events_after_sql<D: Dialect>() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id > {} ORDER BY id LIMIT {}",
        D::param(1),
        D::param(2)
    )
}

fn trim_sql<D: Dialect>() -> String {
    format!(
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE created < {} OR id <= {} \
         ORDER BY id LIMIT {})",
        D::param(1),
        D::param(2),
        D::param(3)
    )
}

fn set_cursor_sql<D: Dialect>() -> String {
    format!(
        "INSERT INTO webhook_cursors (endpoint, last_id, updated) VALUES ({}, {}, {}) \
         ON CONFLICT (endpoint) DO UPDATE SET last_id = CASE \
         WHEN excluded.last_id > webhook_cursors.last_id THEN excluded.last_id \
         ELSE webhook_cursors.last_id END, updated = excluded.updated",
        D::param(1),
        D::param(2),
        D::param(3)
    )
}

fn cursor_sql<D: Dialect>() -> String {
    format!(
        "SELECT last_id FROM webhook_cursors WHERE endpoint = {}",
        D::param(1)
    )
}

/// Reads a row selected with [`EVENT_COLUMNS`].
fn read_event<'r, R>(r: &'r R) -> Result<StoredEvent>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredEvent {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        time: r.try_get(2)?,
        username: r.try_get(3)?,
        nasipaddress: r.try_get(4)?,
        acctuniqueid: r.try_get(5)?,
        radacctid: r.try_get(6)?,
        data: r.try_get(7)?,
        created: r.try_get(8)?,
    })
}

impl super::PgStore {
    /// Appends `events` to the queue on `conn`, in order, in one statement (the caller's
    /// transaction).
    pub(super) async fn append_events(
        conn: &mut sqlx::PgConnection,
        events: &[NewEvent],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        bind_queue_arrays(sqlx::query(PG_QUEUE_INSERT.as_str()), events)
            .execute(conn)
            .await?;
        Ok(())
    }
}

impl super::SqliteStore {
    /// Appends `events` to the queue on `conn`, in order (the caller's transaction).
    pub(super) async fn append_events(
        conn: &mut sqlx::SqliteConnection,
        events: &[NewEvent],
    ) -> Result<()> {
        for e in events {
            sqlx::query(SQLITE_QUEUE_INSERT)
                .bind(e.kind.name())
                .bind(e.time)
                .bind(&e.username)
                .bind(&e.nasipaddress)
                .bind(&e.acctuniqueid)
                .bind(e.radacctid)
                .bind(&e.data)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

impl Tx {
    /// Appends `events` to the outbox in this transaction, in order (nothing when the store
    /// was opened without events, [`super::StoreOptions::events`]); its commit wakes the
    /// sequencer ([`Store::events_appended`]).
    pub async fn add_events(&mut self, events: &[NewEvent]) -> Result<()> {
        if events.is_empty() || !self.events_enabled() {
            return Ok(());
        }
        each_store!(Tx, self, t: D => {
            D::append_events(t.conn(), events).await?;
            t.appended = true;
            Ok(())
        })
    }
}

impl Store {
    /// Notified after every commit that appended events to the outbox, whoever wrote them:
    /// the sequencer's wake (`stream::Sequencer`). Other nodes' appends are not
    /// seen here; the sequencer polls for those.
    pub fn events_appended(&self) -> Arc<Notify> {
        each_store!(Store, self, s => s.outbox.appended.clone())
    }

    /// Appends `events` to the outbox in a transaction of their own, for a change that
    /// writes nothing else; nothing when the store was opened without events.
    pub async fn add_events(&self, events: &[NewEvent]) -> Result<()> {
        if events.is_empty() || !self.events_enabled() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        tx.add_events(events).await?;
        tx.commit().await
    }

    /// One round of the sequencer: numbers up to `max` committed queue rows, oldest first,
    /// and moves them into `events` (created = `now`). On PostgreSQL the transaction holds
    /// [`EVENTS_SEQUENCER_LOCK`] and, when it numbered any, notifies [`EVENTS_CHANNEL`] on
    /// commit. SQLite has one writer at a time, which serializes rounds by itself.
    pub async fn sequence_events(&self, max: i64, now: i64) -> Result<Sequenced> {
        match self {
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                // JIT off for this transaction: the planner's guess for the tiny, rarely
                // analyzed `event_sequence` puts the round far above `jit_above_cost`, and
                // compiling it took 0.6 s of every round (measured on PostgreSQL 15), so the
                // numbering fell a second behind the commits at 1,000 events/s.
                sqlx::query("SELECT pg_advisory_xact_lock($1), set_config('jit', 'off', true)")
                    .bind(EVENTS_SEQUENCER_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let r = sqlx::query(PG_SEQUENCE)
                    .bind(max)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                let (moved, last_id): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
                if moved > 0 {
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(EVENTS_CHANNEL)
                        .bind(last_id.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(Sequenced {
                    moved: moved as u64,
                    last_id,
                })
            }
            Store::Sqlite(s) => {
                // IMMEDIATE: the write lock up front. A deferred transaction that read `last`
                // fails at once (SQLITE_BUSY, no busy wait) when it then writes after another
                // writer (the ingest writer appending to the queue) committed meanwhile.
                let mut tx = s.pool().begin_with("BEGIN IMMEDIATE").await?;
                let last: i64 = sqlx::query("SELECT last FROM event_sequence")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                let moved = sqlx::query(
                    "INSERT INTO events (id, type, time, username, nasipaddress, acctuniqueid, \
                     radacctid, data, created) \
                     SELECT ?1 + row_number() OVER (ORDER BY seq), type, time, username, \
                     nasipaddress, acctuniqueid, radacctid, data, ?3 \
                     FROM (SELECT * FROM event_queue ORDER BY seq LIMIT ?2) ORDER BY seq",
                )
                .bind(last)
                .bind(max)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected() as i64;
                if moved > 0 {
                    sqlx::query(
                        "DELETE FROM event_queue WHERE seq IN \
                         (SELECT seq FROM event_queue ORDER BY seq LIMIT ?1)",
                    )
                    .bind(moved)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE event_sequence SET last = ?1")
                        .bind(last + moved)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(Sequenced {
                    moved: moved as u64,
                    last_id: last + moved,
                })
            }
        }
    }

    /// PostgreSQL: a connection listening on [`EVENTS_CHANNEL`], whose payloads are the last id
    /// the sequencer of some node gave. SQLite: `None` (one process numbers its events).
    pub async fn listen_events(&self) -> Result<Option<super::ChangeListener>> {
        match self {
            Store::Postgres(pg) => pg.listen_on(EVENTS_CHANNEL).await.map(Some),
            Store::Sqlite(_) => Ok(None),
        }
    }

    /// Up to `limit` numbered events after id `after`, by id.
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>> {
        each_store!(Store, self, s: D => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(events_after_sql::<D>()))
                .bind(after)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
            rows.iter().map(read_event).collect()
        })
    }

    /// The oldest id still retained (`None`: none is) and the last id given.
    pub async fn event_bounds(&self) -> Result<(Option<i64>, i64)> {
        each_store!(Store, self, s => {
            let oldest: Option<i64> = sqlx::query("SELECT min(id) FROM events")
                .fetch_one(s.pool())
                .await?
                .try_get(0)?;
            let last: i64 = sqlx::query("SELECT last FROM event_sequence")
                .fetch_one(s.pool())
                .await?
                .try_get(0)?;
            Ok((oldest, last))
        })
    }

    /// How many events wait in the queue to be numbered.
    pub async fn queued_events(&self) -> Result<i64> {
        each_store!(Store, self, s => {
            Ok(sqlx::query("SELECT count(*) FROM event_queue")
                .fetch_one(s.pool())
                .await?
                .try_get(0)?)
        })
    }

    /// Deletes up to `limit` of the oldest events that were numbered before `created_before`
    /// (epoch seconds) or whose id is at most `id_at_most`. Returns how many.
    pub async fn trim_events(
        &self,
        created_before: i64,
        id_at_most: i64,
        limit: i64,
    ) -> Result<u64> {
        each_store!(Store, self, s: D => {
            Ok(sqlx::query(sqlx::AssertSqlSafe(trim_sql::<D>()))
                .bind(created_before)
                .bind(id_at_most)
                .bind(limit)
                .execute(s.pool())
                .await?
                .rows_affected())
        })
    }

    /// The last event id webhook endpoint `endpoint` acknowledged (`None`: it has no cursor
    /// yet).
    pub async fn webhook_cursor(&self, endpoint: &str) -> Result<Option<i64>> {
        each_store!(Store, self, s: D => {
            let row = sqlx::query(sqlx::AssertSqlSafe(cursor_sql::<D>()))
                .bind(endpoint)
                .fetch_optional(s.pool())
                .await?;
            row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
        })
    }

    /// Records that `endpoint` acknowledged every event up to `last_id` (at `now`). The cursor
    /// only moves forward: a former jobs leader's acknowledgement that lands after the new
    /// leader's (of an older batch, sent before it knew it no longer leads) keeps the newer one.
    pub async fn set_webhook_cursor(&self, endpoint: &str, last_id: i64, now: i64) -> Result<()> {
        each_store!(Store, self, s: D => {
            sqlx::query(sqlx::AssertSqlSafe(set_cursor_sql::<D>()))
                .bind(endpoint)
                .bind(last_id)
                .bind(now)
                .execute(s.pool())
                .await?;
            Ok(())
        })
    }
}
