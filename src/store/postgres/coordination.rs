//! PostgreSQL's part in coordinating several radacctd nodes (docs/HA.md): the change
//! notifications every node listens to, the connections that hold session-level advisory locks
//! (the jobs leader, migrations, EnsureIndexes), and a session's action lock for disconnects.

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{Postgres, Row as _, Transaction};

use super::PgStore;
use crate::sessions::{Columns, Row, RowVersion};
use crate::store::actions::{
    ACTION_LOCK_CLASS, ActionRecord, StoredAction, action_columns, action_lock_key, bind_action,
    insert_action_sql, read_action,
};
use crate::store::events::Outbox;
use crate::store::{Dialect as _, Result, StoreError, read_row, select_list};

/// The channel the change-notification trigger (migration 0003) notifies on.
pub const CHANGES_CHANNEL: &str = "radacctd_changes";

/// The connection setting the trigger reads the writer's origin from.
pub const ORIGIN_SETTING: &str = "radacctd.origin";

/// One change notification: which rows one statement of a committed transaction changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeNotice {
    /// The writing connection's `radacctd.origin` (empty: another writer than radacctd).
    pub origin: String,
    /// When the statement ran, microseconds since 1970 (the database server's clock).
    pub at_micros: i64,
    /// `radacctid`s of the rows inserted, updated, or deleted while open.
    pub ids: Vec<i64>,
}

impl ChangeNotice {
    /// Parses `<origin>|<µs>|<id>,<id>,…`; `None` for anything else (the channel is public:
    /// anyone may NOTIFY on it).
    pub fn parse(payload: &str) -> Option<ChangeNotice> {
        let (rest, ids) = payload.rsplit_once('|')?;
        let (origin, at) = rest.rsplit_once('|')?;
        let ids = ids
            .split(',')
            .map(|id| id.parse::<i64>().ok())
            .collect::<Option<Vec<i64>>>()?;
        Some(ChangeNotice {
            origin: origin.to_owned(),
            at_micros: at.parse().ok()?,
            ids,
        })
    }
}

/// A connection listening on [`CHANGES_CHANNEL`] (or on the events' channel,
/// `store::EVENTS_CHANNEL`). Created listening; once [`Self::next`] reports the connection
/// lost, notifications may have been missed: drop it and make a new one.
pub struct ChangeListener {
    inner: sqlx::postgres::PgListener,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeListener").finish_non_exhaustive()
    }
}

impl ChangeListener {
    /// The next notification's payload; `Ok(None)`: the connection was lost.
    pub async fn next(&mut self) -> Result<Option<String>> {
        Ok(self.inner.try_recv().await?.map(|n| n.payload().to_owned()))
    }

    /// A notification already received, without waiting.
    pub fn next_buffered(&mut self) -> Option<String> {
        self.inner.next_buffered().map(|n| n.payload().to_owned())
    }

    /// A round trip on the listening connection: fails when it is gone, even silently.
    pub async fn ping(&mut self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&mut self.inner).await?;
        Ok(())
    }
}

/// Index columns, version and openness of rows by id (the change listener's refresh).
static ROWS_BY_ID_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, xmin::text, acctstoptime IS NULL FROM radacct WHERE radacctid = ANY($1)",
        select_list(Columns::Index, PgStore::read_back)
    )
});

/// The advisory lock whose holder is the jobs leader (`jobs::leader`), held for as long as it
/// leads: the bytes of `radacctL`. In `pg_locks` a 64-bit key shows as `classid` (high half,
/// 1918985313) and `objid` (low half, 1667462220) with `objsubid` 1.
pub const JOBS_LEADER_LOCK: i64 = 0x7261_6461_6363_744c;

/// The advisory lock EnsureIndexes runs under (`radacctI`: objid 1667462217).
pub const ENSURE_INDEXES_LOCK: i64 = 0x7261_6461_6363_7449;

/// The advisory lock migrations and the fillfactor change run under (`radacctM`: objid
/// 1667462221).
pub const PREPARE_LOCK: i64 = 0x7261_6461_6363_744d;

/// How often a node waiting for [`PREPARE_LOCK`] or [`ENSURE_INDEXES_LOCK`] asks again.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether this session holds the advisory lock `$1` (high half) `$2` (low half).
const HOLDS_LOCK_SQL: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
     AND pid = pg_backend_pid() AND granted AND classid::int8 = $1 AND objid::int8 = $2 \
     AND objsubid = 1)";

/// A database connection of its own, outside the pools, for session-level advisory locks: they
/// last as long as the session, so they must not go back to a pool with it, and the session
/// ends (releasing them) when this is closed or dropped, or when the server ends it.
pub struct LockConnection {
    pub(super) conn: PgConnection,
}

impl std::fmt::Debug for LockConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockConnection").finish_non_exhaustive()
    }
}

impl LockConnection {
    /// `pg_try_advisory_lock(key)`: takes the lock if no other session holds it (at once,
    /// without waiting); whether this session holds it now.
    pub async fn try_lock(&mut self, key: i64) -> Result<bool> {
        Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut self.conn)
            .await?)
    }

    /// A round trip that fails when the connection is gone, and answers whether this session
    /// still holds `key`.
    pub async fn holds(&mut self, key: i64) -> Result<bool> {
        let (high, low) = lock_halves(key);
        Ok(sqlx::query_scalar(HOLDS_LOCK_SQL)
            .bind(high)
            .bind(low)
            .fetch_one(&mut self.conn)
            .await?)
    }

    /// Releases `key` (once); whether this session held it.
    pub async fn unlock(&mut self, key: i64) -> Result<bool> {
        Ok(sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .fetch_one(&mut self.conn)
            .await?)
    }

    /// Ends the session, releasing every lock it holds.
    pub async fn close(self) {
        use sqlx::Connection as _;
        let _ = self.conn.close().await;
    }
}

/// A 64-bit advisory lock key as `pg_locks` shows it: `classid` (the high 32 bits) and `objid`
/// (the low 32 bits), both unsigned.
fn lock_halves(key: i64) -> (i64, i64) {
    let key = key as u64;
    ((key >> 32) as i64, (key & 0xffff_ffff) as i64)
}

impl PgStore {
    /// A connection of its own, outside the pools, for session-level advisory locks, named
    /// `application_name` in `pg_stat_activity`. With `idle_session_timeout` the server ends the
    /// session (releasing its locks) once it has been idle that long: a holder that stops
    /// (SIGSTOP, a hung host) loses its locks then. PostgreSQL before 14 has no such setting: a
    /// warning says so, and such a holder keeps its locks until TCP keepalives (set here to
    /// about the same time) find its host gone.
    pub async fn lock_connection(
        &self,
        application_name: &str,
        idle_session_timeout: Option<std::time::Duration>,
    ) -> Result<LockConnection> {
        let options = (*self.lock_connect)
            .clone()
            .application_name(application_name);
        let mut conn = tokio::time::timeout(
            self.connect_timeout,
            <PgConnection as sqlx::Connection>::connect_with(&options),
        )
        .await
        .map_err(|_| StoreError::Timeout(self.connect_timeout))??;
        if let Some(t) = idle_session_timeout {
            let secs = t.as_secs().max(1);
            // Server-side keepalives of this session's socket (ignored on a Unix socket).
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET tcp_keepalives_idle = {secs}; SET tcp_keepalives_interval = {}; \
                 SET tcp_keepalives_count = 3",
                (secs / 3).max(1)
            )))
            .execute(&mut conn)
            .await?;
            let ms = t.as_millis().max(1);
            let set = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET idle_session_timeout = {ms}"
            )))
            .execute(&mut conn)
            .await;
            match set {
                Ok(_) => {}
                // 42704 undefined_object: an unknown setting (PostgreSQL before 14).
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42704") => {
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        tracing::warn!(
                            "this PostgreSQL has no idle_session_timeout (it came in 14): a jobs \
                             leader that hangs without closing its connection keeps the \
                             leadership until TCP keepalives find it gone"
                        );
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(LockConnection { conn })
    }

    /// A [`LockConnection`] holding the advisory lock `key`, once no other session holds it:
    /// asked every [`LOCK_POLL`] with `pg_try_advisory_lock`, not waited for in
    /// `pg_advisory_lock`. A session blocked in `pg_advisory_lock` holds a snapshot, and
    /// `CREATE INDEX CONCURRENTLY` waits for every older snapshot to go, so a node waiting
    /// that way for the lock of another node's index build deadlocks with it (PostgreSQL then
    /// aborts one of them). `what` names the work in the log line while it waits.
    pub(super) async fn wait_for_lock(
        &self,
        key: i64,
        application_name: &str,
        what: &str,
    ) -> Result<LockConnection> {
        let mut lock = self.lock_connection(application_name, None).await?;
        let mut waiting = false;
        while !lock.try_lock(key).await? {
            if !waiting {
                tracing::info!(
                    what,
                    "another radacctd node holds the lock of this work; waiting"
                );
                waiting = true;
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
        Ok(lock)
    }

    /// Starts listening for change notifications on a connection of its own.
    pub async fn listen_changes(&self) -> Result<ChangeListener> {
        self.listen_on(CHANGES_CHANNEL).await
    }

    /// Starts listening on `channel` on a connection of its own (the change feed's channel,
    /// or the events sequencer's `store::EVENTS_CHANNEL`).
    pub(crate) async fn listen_on(&self, channel: &str) -> Result<ChangeListener> {
        let mut inner = sqlx::postgres::PgListener::connect_with(&self.listen_pool).await?;
        inner.eager_reconnect(false);
        inner.ignore_pool_close_event(true);
        inner.listen(channel).await?;
        Ok(ChangeListener { inner })
    }

    /// The rows with these ids as the index holds them (index columns and version), and
    /// whether each is open. Ids without a row are absent.
    pub async fn rows_by_ids(&self, ids: &[i64]) -> Result<Vec<(Row, Option<RowVersion>, bool)>> {
        let rows = sqlx::query(ROWS_BY_ID_SQL.as_str())
            .persistent(false)
            .bind(ids)
            .fetch_all(&self.write_pool)
            .await?;
        let n = Columns::Index.count();
        rows.iter()
            .map(|r| {
                let row = read_row(r, Columns::Index)?;
                let version = RowVersion::parse(r.try_get(n)?);
                Ok((row, version, r.try_get::<bool, _>(n + 1)?))
            })
            .collect()
    }
}

/// A session's action lock (see `store::actions`): a transaction on the general pool holding
/// `pg_advisory_xact_lock(ACTION_LOCK_CLASS, action_lock_key(radacctid))`, with what was found
/// once it was taken. [`ActionLock::finish`] writes the attempt's row and commits;
/// [`ActionLock::release`] (or dropping it) rolls back. Either releases the lock.
#[derive(Debug)]
pub struct ActionLock {
    tx: Transaction<'static, Postgres>,
    newer: Option<StoredAction>,
    row_open: Option<bool>,
    /// Whether the attempt's row appends its session event (`StoreOptions::events`), and the
    /// signal of the commit that did.
    outbox: Outbox,
}

impl ActionLock {
    /// The action of the locked kind another node finished for this session while this one
    /// waited (the newest such action row after the watermark read before the lock).
    pub fn newer(&self) -> Option<&StoredAction> {
        self.newer.as_ref()
    }

    /// Whether the session's radacct row is open now: `None` when there is no such row.
    pub fn row_open(&self) -> Option<bool> {
        self.row_open
    }

    /// Appends the attempt's row, and its session event (`ActionRecord::event`), and commits:
    /// the row becomes visible as the lock is released.
    pub async fn finish(mut self, record: &ActionRecord) -> Result<i64> {
        let q = bind_action!(sqlx::query(INSERT_ACTION_SQL.as_str()), record);
        let id: i64 = q.fetch_one(&mut *self.tx).await?.try_get(0)?;
        let event = record.event().filter(|_| self.outbox.enabled);
        if let Some(event) = &event {
            PgStore::append_events(&mut self.tx, std::slice::from_ref(event)).await?;
        }
        self.tx.commit().await?;
        if event.is_some() {
            self.outbox.committed();
        }
        Ok(id)
    }

    /// Rolls back, releasing the lock.
    pub async fn release(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

static INSERT_ACTION_SQL: LazyLock<String> = LazyLock::new(insert_action_sql::<PgStore>);

static NEWER_ACTION_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM session_actions WHERE radacctid = $1 AND id > $2 \
         AND action = $3 ORDER BY id DESC LIMIT 1",
        action_columns::<PgStore>()
    )
});

impl PgStore {
    /// See [`super::Store::lock_session_actions`].
    pub(in crate::store) async fn lock_session_actions(
        &self,
        radacctid: i64,
        action: &str,
        wait: Duration,
    ) -> Result<ActionLock> {
        let mut tx = self.action_pool.begin().await?;
        // Only this transaction waits this long; the pool's other users keep the default.
        let ms = format!("{}ms", wait.as_millis().clamp(1, i32::MAX as u128));
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(ms)
            .execute(&mut *tx)
            .await?;
        let watermark: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(id), 0)::int8 FROM session_actions WHERE radacctid = $1",
        )
        .bind(radacctid)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(ACTION_LOCK_CLASS)
            .bind(action_lock_key(radacctid))
            .execute(&mut *tx)
            .await?;
        // Read committed: each statement from here sees what committed before the lock was
        // granted, the row of whoever held it included.
        let newer = sqlx::query(NEWER_ACTION_SQL.as_str())
            .bind(radacctid)
            .bind(watermark)
            .bind(action)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| read_action(&r))
            .transpose()?;
        let row_open: Option<bool> =
            sqlx::query_scalar("SELECT acctstoptime IS NULL FROM radacct WHERE radacctid = $1")
                .bind(radacctid)
                .fetch_optional(&mut *tx)
                .await?;
        Ok(ActionLock {
            tx,
            newer,
            row_open,
            outbox: self.outbox.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_distinct_and_split_as_pg_locks_shows_them() {
        assert_eq!(
            lock_halves(JOBS_LEADER_LOCK),
            (0x7261_6461, 0x6363_744c),
            "radacctL"
        );
        assert_eq!(
            lock_halves(JOBS_LEADER_LOCK),
            (1_918_985_313, 1_667_462_220)
        );
        assert_eq!(lock_halves(ENSURE_INDEXES_LOCK).1, 1_667_462_217);
        assert_eq!(lock_halves(PREPARE_LOCK).1, 1_667_462_221);
        assert_eq!(lock_halves(-1), (0xffff_ffff, 0xffff_ffff));
        let keys = [JOBS_LEADER_LOCK, ENSURE_INDEXES_LOCK, PREPARE_LOCK];
        assert_eq!(
            keys.iter().collect::<std::collections::HashSet<_>>().len(),
            3
        );
    }
}
