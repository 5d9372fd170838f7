//! The session events outbox (`event_batches`, `event_sequence`, `webhook_cursors`; migrations
//! `0009_events.sql` and `0010_event_batches.sql`, docs/EVENTS.md).
//!
//! Writers append a batch of event lines ([`line`], at most [`BATCH_MAX`] per batch) in the
//! transaction (on PostgreSQL's optimistic path: the statement) of the change that caused the
//! events. [`Store::sequence_events`] numbers committed batches where they lie, in `seq`
//! order, from `event_sequence.last + 1`, in one transaction that holds
//! [`EVENTS_SEQUENCER_LOCK`] (PostgreSQL) until it commits: of several nodes one numbers at a
//! time, so ids are given in commit order and without gaps, and a reader that has read up to id
//! N has read every event up to N for good. Readers see numbered batches only.

use std::sync::{Arc, LazyLock};

use sqlx::Row as _;
use tokio::sync::Notify;

use super::{Dialect, Result, Store, StoreError, Tx, each_store};
use crate::events::{BATCH_MAX, NewEvent, StoredEvent, line};

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
    /// Batches numbered in this round.
    pub batches: u64,
    /// Events numbered in this round.
    pub moved: u64,
    /// The last id given so far (this round's or an earlier one's).
    pub last_id: i64,
}

/// The columns of a numbered batch, for [`read_batch`].
const BATCH_COLUMNS: &str = "first_id, count, created, lines";

/// PostgreSQL: the events' four arrays from `$first` ([`bind_queue_arrays`]) as rows `u`
/// (`acctuniqueid`, `radacctid`, the line's `head` and `tail`), numbered by `u.ord` in array
/// order.
fn pg_unnest_queue(first: usize) -> String {
    format!(
        "unnest(${}::text[], ${}::int8[], ${}::text[], ${}::text[]) WITH ORDINALITY \
         AS u(acctuniqueid, radacctid, head, tail, ord)",
        first,
        first + 1,
        first + 2,
        first + 3
    )
}

/// PostgreSQL: the batches of the events of rows `u` that pass `filter`, with the id `id`:
/// their lines in array order, [`BATCH_MAX`] at most per batch, appended in that order.
fn pg_append_batches(first: usize, id: &str, from: &str, filter: &str) -> String {
    format!(
        "INSERT INTO event_batches (count, lines) \
         SELECT count(*), string_agg(u.head || COALESCE(({id})::text, 'null') || u.tail, \
         E'\\n' ORDER BY u.ord) \
         FROM {}{from} WHERE {filter} GROUP BY (u.ord - 1) / {BATCH_MAX} \
         ORDER BY (u.ord - 1) / {BATCH_MAX}",
        pg_unnest_queue(first)
    )
}

/// PostgreSQL: appends the events' arrays (`$1`…`$4`, [`bind_queue_arrays`]) in array order.
pub(super) static PG_QUEUE_INSERT: LazyLock<String> =
    LazyLock::new(|| pg_append_batches(1, "u.radacctid", "", "true"));

/// The events CTE of the optimistic path's guarded statement (PostgreSQL), parameters from
/// `$first` (the four arrays of [`bind_queue_arrays`]): appends, in array order, only the
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
    format!("e AS ({})", pg_append_batches(first, id, &join, &written))
}

/// The four arrays of `events`: keys, ids, and the heads and tails of their lines
/// ([`line`]).
pub(super) type QueueArrays = (Vec<String>, Vec<Option<i64>>, Vec<String>, Vec<String>);

/// `events` as the queue's arrays ([`pg_unnest_queue`]).
pub(super) fn queue_arrays(events: &[NewEvent]) -> QueueArrays {
    (
        events.iter().map(|e| e.acctuniqueid.clone()).collect(),
        events.iter().map(|e| e.radacctid).collect(),
        events.iter().map(line::head).collect(),
        events.iter().map(line::tail).collect(),
    )
}

/// Binds [`queue_arrays`] to a statement that unnests them ([`pg_unnest_queue`]).
pub(super) fn bind_queue_arrays<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    events: &[NewEvent],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let (key, id, head, tail) = queue_arrays(events);
    q.bind(key).bind(id).bind(head).bind(tail)
}

const SQLITE_QUEUE_INSERT: &str = "INSERT INTO event_batches (count, lines) VALUES (?1, ?2)";

/// PostgreSQL's round of the sequencer, after the lock (`$1`: at most this many batches, `$2`:
/// now): numbers the oldest unnumbered batches in `seq` order where they lie.
const PG_SEQUENCE: &str = "WITH s AS (SELECT last FROM event_sequence), \
     q AS (SELECT seq, count, sum(count) OVER (ORDER BY seq) AS upto \
       FROM (SELECT seq, count FROM event_batches WHERE first_id IS NULL ORDER BY seq LIMIT $1) \
       AS w), \
     n AS (UPDATE event_batches AS b SET first_id = s.last + q.upto - q.count + 1, created = $2 \
       FROM q, s WHERE b.seq = q.seq), \
     c AS (SELECT count(*) AS batches, COALESCE(sum(count), 0)::int8 AS moved FROM q), \
     u AS (UPDATE event_sequence SET last = last + (SELECT moved FROM c) \
       WHERE (SELECT moved FROM c) > 0) \
     SELECT (SELECT batches FROM c), (SELECT moved FROM c), (SELECT last FROM s) + \
     (SELECT moved FROM c)";

/// The numbered batches that hold ids `$1 + 1` … `$1 + $2`, by id: a batch holding `$1 + 1`
/// starts after `$1 + 1 - BATCH_MAX`, which bounds the index range read.
fn batches_after_sql<D: Dialect>() -> String {
    format!(
        "SELECT {BATCH_COLUMNS} FROM event_batches WHERE first_id > {a} - {BATCH_MAX} \
         AND first_id <= {a} + {l} AND first_id + count > {a} + 1 ORDER BY first_id",
        a = D::param(1),
        l = D::param(2),
    )
}

/// Deletes up to `$3` of the oldest numbered batches that were numbered before `$1` or whose
/// events all have ids of at most `$2`, returning their counts.
fn trim_sql<D: Dialect>() -> String {
    format!(
        "DELETE FROM event_batches WHERE seq IN (SELECT seq FROM event_batches \
         WHERE first_id IS NOT NULL AND (created < {} OR first_id + count - 1 <= {}) \
         ORDER BY first_id LIMIT {}) RETURNING CAST(count AS BIGINT)",
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

/// Appends the events of a batch selected with [`BATCH_COLUMNS`] whose ids are in
/// `after + 1 ..= upto` to `out`, in id order.
fn read_batch<'r, R>(r: &'r R, after: i64, upto: i64, out: &mut Vec<StoredEvent>) -> Result<()>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let first: i64 = r.try_get(0)?;
    let count: i32 = r.try_get(1)?;
    let created: i64 = r.try_get(2)?;
    let lines: &str = r.try_get(3)?;
    let mut n = 0;
    for (id, text) in (first..).zip(lines.split('\n')) {
        n += 1;
        if id <= after || id > upto {
            continue;
        }
        let event = line::parse(text, id, created)
            .map_err(|e| StoreError::Corrupt(format!("event {id} (batch from {first}): {e}")))?;
        out.push(event);
    }
    if n != count {
        return Err(StoreError::Corrupt(format!(
            "the event batch from {first} holds {n} lines for a count of {count}"
        )));
    }
    Ok(())
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
    /// Appends `events` to the queue on `conn`, in order, in batches of [`BATCH_MAX`] at most
    /// (the caller's transaction).
    pub(super) async fn append_events(
        conn: &mut sqlx::SqliteConnection,
        events: &[NewEvent],
    ) -> Result<()> {
        for batch in events.chunks(BATCH_MAX) {
            let lines: Vec<String> = batch.iter().map(line::whole).collect();
            sqlx::query(SQLITE_QUEUE_INSERT)
                .bind(batch.len() as i64)
                .bind(lines.join("\n"))
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

    /// One round of the sequencer: numbers up to `max` committed batches of the queue, oldest
    /// first, where they lie (created = `now`). On PostgreSQL the transaction holds
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
                let (batches, moved, last_id): (i64, i64, i64) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                if moved > 0 {
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(EVENTS_CHANNEL)
                        .bind(last_id.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(Sequenced {
                    batches: batches as u64,
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
                let queued: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT seq, count FROM event_batches WHERE first_id IS NULL \
                     ORDER BY seq LIMIT ?1",
                )
                .bind(max)
                .fetch_all(&mut *tx)
                .await?;
                let mut given = last;
                for (seq, count) in &queued {
                    sqlx::query(
                        "UPDATE event_batches SET first_id = ?1, created = ?2 WHERE seq = ?3",
                    )
                    .bind(given + 1)
                    .bind(now)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                    given += count;
                }
                if given > last {
                    sqlx::query("UPDATE event_sequence SET last = ?1")
                        .bind(given)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(Sequenced {
                    batches: queued.len() as u64,
                    moved: (given - last) as u64,
                    last_id: given,
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

    /// Up to `limit` numbered events after id `after`, by id. When `after` is older than
    /// what is retained, they start at the oldest retained.
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>> {
        let mut after = after;
        loop {
            let upto = after.saturating_add(limit);
            let mut out = Vec::new();
            each_store!(Store, self, s: D => {
                let rows = sqlx::query(sqlx::AssertSqlSafe(batches_after_sql::<D>()))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(s.pool())
                    .await?;
                for r in &rows {
                    read_batch(r, after, upto, &mut out)?;
                }
            });
            if !out.is_empty() || limit <= 0 {
                return Ok(out);
            }
            // Nothing in the range: either nothing is numbered after `after` yet, or `after`
            // lies before the oldest retained batch (trimmed), which is where reading resumes.
            let next: Option<i64> = each_store!(Store, self, s: D => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT min(first_id) FROM event_batches WHERE first_id > {}",
                    D::param(1)
                )))
                .bind(after)
                    .fetch_one(s.pool())
                    .await?
                    .try_get(0)?
            });
            match next {
                Some(first) if first > after + 1 => after = first - 1,
                _ => return Ok(out),
            }
        }
    }

    /// The oldest id still retained (`None`: none is) and the last id given.
    pub async fn event_bounds(&self) -> Result<(Option<i64>, i64)> {
        each_store!(Store, self, s => {
            let oldest: Option<i64> = sqlx::query("SELECT min(first_id) FROM event_batches")
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
            Ok(sqlx::query(
                "SELECT CAST(COALESCE(sum(count), 0) AS BIGINT) FROM event_batches \
                 WHERE first_id IS NULL",
            )
            .fetch_one(s.pool())
            .await?
            .try_get(0)?)
        })
    }

    /// Deletes up to `limit` of the oldest numbered batches that were numbered before
    /// `created_before` (epoch seconds) or whose events all have ids of at most `id_at_most`
    /// (a batch goes whole: by count, up to [`BATCH_MAX`]` - 1` more events than asked may
    /// stay). Returns how many batches and how many events.
    pub async fn trim_events(
        &self,
        created_before: i64,
        id_at_most: i64,
        limit: i64,
    ) -> Result<(u64, u64)> {
        each_store!(Store, self, s: D => {
            let counts: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(trim_sql::<D>()))
                .bind(created_before)
                .bind(id_at_most)
                .bind(limit)
                .fetch_all(s.pool())
                .await?;
            Ok((counts.len() as u64, counts.iter().sum::<i64>() as u64))
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
