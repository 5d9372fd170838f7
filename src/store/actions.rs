//! The session action log, `session_actions` (migrations `0005_session_actions.sql`,
//! docs/ARCHITECTURE.md#disconnect): one row per disconnect attempt, written by the node that
//! made it once the outcome is known. The archiver moves the rows of the sessions it archives
//! to `session_actions_archive` (migrations `0006`), ids kept; a session's log is read from
//! both. On PostgreSQL it is also how nodes sharing the database
//! disconnect a session once: the attempt runs under a transaction-level advisory lock keyed by
//! the session ([`ActionLock`], taken by [`Store::lock_session_actions`]), and its row is
//! inserted in that same transaction, so the outcome becomes visible exactly when the lock is
//! released. A node that waited for the lock finds the row and answers from it.
//!
//! The insert is written once for both databases; the lock is PostgreSQL's (postgres.rs).

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row as _;

pub use super::postgres::ActionLock;
use super::{Dialect, Result, Store, Tx, each_store};
use crate::events::{EventType, NewEvent};
use crate::radius::dictionary::{ERROR_CAUSE, value_name};

/// The first key of every session action lock (`pg_advisory_xact_lock(int4, int4)`): "RADS" in
/// ASCII, so that these locks never meet another application's single-key or two-key locks
/// with a different class in `pg_locks`.
pub const ACTION_LOCK_CLASS: i32 = 0x5241_4453;

/// The `method` of an action row whose request was never sent (the session was already
/// closed, or no request could be sent).
pub const METHOD_NOT_SENT: &str = "none";

/// The second key of a session's action lock: its radacctid folded to 32 bits (the high half
/// XORed into the low half). Two sessions whose ids fold to the same key only wait for each
/// other's disconnect; whether another node already answered is decided by the radacctid in
/// the row, never by the key.
pub fn action_lock_key(radacctid: i64) -> i32 {
    let id = radacctid as u64;
    (id ^ (id >> 32)) as u32 as i32
}

/// A row to append to the action log. Serializable: a disconnect's close journaled during a
/// database outage carries its row, written with the close when the journal is replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub radacctid: i64,
    pub acctuniqueid: String,
    pub username: Option<String>,
    pub nasipaddress: String,
    /// `disconnect` or `coa`.
    pub action: Cow<'static, str>,
    /// `coa` (a Disconnect-Request or CoA-Request), `api` (the RouterOS API) or `none`
    /// (nothing was sent).
    pub method: Cow<'static, str>,
    /// What the attempt ended with: `ack`, `nak` (see `error_cause`), `timeout` (no answer),
    /// `removed` (the RouterOS API removed the session), `already_closed`, or `error`
    /// (nothing could be sent); for the router reconciliation, `ghost_closed`.
    pub outcome: Cow<'static, str>,
    /// The outcome recorded instead when the close this row goes with changes nothing (the
    /// writer found the row updated since, or closed): a reconciliation's `ghost_skipped`.
    /// `None`: `outcome` either way (a disconnect's outcome is the NAS's answer, whatever the
    /// row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_if_unchanged: Option<Cow<'static, str>>,
    /// JSON with what reproduces the answer.
    pub detail: Option<String>,
    /// JSON object of the attributes sent beyond the session's identification (a CoA's
    /// changes); `None` for a disconnect.
    pub request: Option<String>,
    /// The Error-Cause of a NAK, when it carried one.
    pub error_cause: Option<i64>,
    /// The API token's subject.
    pub actor: Option<String>,
    /// The node that made the attempt (`node.name`).
    pub node: String,
    /// Milliseconds from the start of the attempt to its outcome; `None` when nothing was sent.
    pub rtt_ms: Option<i64>,
    /// Epoch seconds.
    pub requested_at: i64,
    /// Epoch seconds.
    pub finished_at: i64,
}

/// A row of the action log as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAction {
    pub id: i64,
    pub radacctid: i64,
    pub action: String,
    pub method: String,
    pub outcome: String,
    pub detail: Option<String>,
    pub actor: Option<String>,
    pub node: String,
    pub rtt_ms: Option<i64>,
    pub request: Option<String>,
    pub error_cause: Option<i64>,
    /// Epoch seconds.
    pub requested_at: i64,
    /// Epoch seconds.
    pub finished_at: i64,
}

/// Every column of `session_actions`, as `session_actions_archive` has them too: what the
/// archiver copies from one to the other.
pub(super) const ACTION_TABLE_COLUMNS: &str = "id, radacctid, acctuniqueid, username, \
     nasipaddress, action, method, outcome, detail, actor, node, rtt_ms, requested_at, \
     finished_at, request, error_cause";

/// The columns [`read_action`] reads, in its order.
pub(super) fn action_columns<D: Dialect>() -> String {
    format!(
        "id, radacctid, action, method, outcome, detail, actor, node, rtt_ms, request, \
         CAST(error_cause AS BIGINT), {}, {}",
        D::epoch("requested_at"),
        D::epoch("finished_at")
    )
}

/// The rows of one session (parameter 1) in both action tables, by id.
fn session_actions_sql<D: Dialect>() -> String {
    let (cols, id) = (action_columns::<D>(), D::param(1));
    format!(
        "SELECT {cols} FROM session_actions WHERE radacctid = {id} \
         UNION ALL SELECT {cols} FROM session_actions_archive WHERE radacctid = {id} \
         ORDER BY id"
    )
}

/// The insert of one [`ActionRecord`], returning its id; bound by [`bind_action!`].
pub(super) fn insert_action_sql<D: Dialect>() -> String {
    let p: Vec<String> = (1..=15).map(D::param).collect();
    format!(
        "INSERT INTO session_actions (radacctid, acctuniqueid, username, nasipaddress, action, \
         method, outcome, detail, actor, node, rtt_ms, requested_at, finished_at, request, \
         error_cause) VALUES ({}, {}, {}, {}) RETURNING id",
        p[..11].join(", "),
        D::timestamp(&p[11]),
        D::timestamp(&p[12]),
        p[13..].join(", "),
    )
}

/// Binds an [`ActionRecord`] to [`insert_action_sql`]'s statement (a macro: sqlx's query type
/// differs per database).
macro_rules! bind_action {
    ($q:expr, $r:expr) => {{
        let r: &$crate::store::ActionRecord = $r;
        $q.bind(r.radacctid)
            .bind(r.acctuniqueid.as_str())
            .bind(r.username.as_deref())
            .bind(r.nasipaddress.as_str())
            .bind(r.action.as_ref())
            .bind(r.method.as_ref())
            .bind(r.outcome.as_ref())
            .bind(r.detail.as_deref())
            .bind(r.actor.as_deref())
            .bind(r.node.as_str())
            .bind(r.rtt_ms)
            .bind(r.requested_at)
            .bind(r.finished_at)
            .bind(r.request.as_deref())
            .bind(r.error_cause)
    }};
}
pub(super) use bind_action;

/// Reads a row selected with [`action_columns`].
pub(super) fn read_action<'r, R>(r: &'r R) -> Result<StoredAction>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredAction {
        id: r.try_get(0)?,
        radacctid: r.try_get(1)?,
        action: r.try_get(2)?,
        method: r.try_get(3)?,
        outcome: r.try_get(4)?,
        detail: r.try_get(5)?,
        actor: r.try_get(6)?,
        node: r.try_get(7)?,
        rtt_ms: r.try_get(8)?,
        request: r.try_get(9)?,
        error_cause: r.try_get(10)?,
        requested_at: r.try_get(11)?,
        finished_at: r.try_get(12)?,
    })
}

impl ActionRecord {
    /// The session event this row gives, appended in its transaction (docs/EVENTS.md):
    /// - `coa` whose CoA-Request was sent: `session.coa`, whatever the NAS answered
    ///   (`outcome` `ack`, `nak`, `timeout` or `error`, `error_cause` and `error_cause_name`, the
    ///   `request`'s attributes, `rtt_ms`, `actor`, `method`);
    /// - `disconnect` the NAS confirmed (`ack`, or `removed` by the RouterOS API):
    ///   `session.disconnected` (`outcome`, `method`, `actor`, `rtt_ms`);
    /// - anything else none: a change or disconnect never sent (method `none`: the session was
    ///   already closed, or nothing could be sent) did nothing to the session, an unconfirmed
    ///   disconnect changed nothing that is known, and a reconciliation's close gives its
    ///   `session.ghost_closed` with the row it closed.
    pub fn event(&self) -> Option<NewEvent> {
        let (kind, data) = match (self.action.as_ref(), self.outcome.as_ref()) {
            ("coa", _) if self.method != METHOD_NOT_SENT => {
                let name = self
                    .error_cause
                    .and_then(|c| u32::try_from(c).ok())
                    .and_then(|c| value_name(ERROR_CAUSE, c));
                let request: Value = self
                    .request
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok())
                    .unwrap_or(Value::Null);
                let data = json!({
                    "outcome": self.outcome,
                    "error_cause": self.error_cause,
                    "error_cause_name": name,
                    "request": request,
                    "rtt_ms": self.rtt_ms,
                    "actor": self.actor,
                    "method": self.method,
                });
                (EventType::SessionCoa, data)
            }
            ("disconnect", "ack" | "removed") => {
                let data = json!({
                    "outcome": self.outcome,
                    "method": self.method,
                    "actor": self.actor,
                    "rtt_ms": self.rtt_ms,
                });
                (EventType::SessionDisconnected, data)
            }
            _ => return None,
        };
        Some(NewEvent {
            kind,
            time: self.finished_at,
            username: self.username.clone().unwrap_or_default(),
            nasipaddress: self.nasipaddress.clone(),
            acctuniqueid: self.acctuniqueid.clone(),
            radacctid: Some(self.radacctid),
            data: data.to_string(),
        })
    }

    /// This record with `row_closed` set in its `detail` (a JSON object), and its outcome
    /// `outcome_if_unchanged` when given and the close changed nothing: what the writer learns
    /// only as it applies the close the record goes with.
    pub fn with_row_closed(&self, row_closed: bool) -> ActionRecord {
        let mut detail: serde_json::Value = self
            .detail
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        detail["row_closed"] = serde_json::Value::Bool(row_closed);
        let outcome = match &self.outcome_if_unchanged {
            Some(unchanged) if !row_closed => unchanged.clone(),
            _ => self.outcome.clone(),
        };
        ActionRecord {
            outcome,
            detail: Some(detail.to_string()),
            ..self.clone()
        }
    }
}

impl Tx {
    /// Appends a row to the action log in this transaction (with the row change it records),
    /// and its session event ([`ActionRecord::event`]), inside a savepoint: a failing insert
    /// (a damaged or missing table) is logged and undone, both of them, without failing the
    /// transaction, since the change it records (a disconnect's close) matters more than its
    /// log. A lost connection fails the transaction as usual.
    pub async fn record_action(&mut self, record: &ActionRecord) -> Result<()> {
        self.execute("SAVEPOINT radacctd_action").await?;
        match self.insert_action(record).await {
            Ok(()) => self.execute("RELEASE SAVEPOINT radacctd_action").await,
            Err(e) if e.is_unavailable() => Err(e),
            Err(e) => {
                tracing::warn!(
                    radacctid = record.radacctid, error = %e,
                    "action log row not written; the close it records is"
                );
                self.execute("ROLLBACK TO SAVEPOINT radacctd_action").await
            }
        }
    }

    /// The action row and its event.
    async fn insert_action(&mut self, record: &ActionRecord) -> Result<()> {
        each_store!(Tx, self, t: D => {
            let sql = insert_action_sql::<D>();
            bind_action!(sqlx::query(sqlx::AssertSqlSafe(sql)), record)
                .fetch_one(t.conn())
                .await?;
        });
        if let Some(event) = record.event() {
            self.add_events(&[event]).await?;
        }
        Ok(())
    }

    /// A statement without parameters or results (savepoints).
    async fn execute(&mut self, sql: &'static str) -> Result<()> {
        each_store!(Tx, self, t => {
            sqlx::query(sql).execute(t.conn()).await?;
        });
        Ok(())
    }
}

impl Store {
    /// Appends a row to the action log, without any lock (SQLite, and the fallback when the
    /// PostgreSQL coordination failed), with its session event ([`ActionRecord::event`]) in
    /// the same transaction. Returns its id.
    pub async fn record_action(&self, record: &ActionRecord) -> Result<i64> {
        let event = record.event().filter(|_| self.events_enabled());
        each_store!(Store, self, s: D => {
            let mut tx = s.pool().begin().await?;
            let sql = insert_action_sql::<D>();
            let q = bind_action!(sqlx::query(sqlx::AssertSqlSafe(sql)), record);
            let id: i64 = q.fetch_one(&mut *tx).await?.try_get(0)?;
            if let Some(event) = &event {
                D::append_events(&mut tx, std::slice::from_ref(event)).await?;
            }
            tx.commit().await?;
            if event.is_some() {
                s.outbox.committed();
            }
            Ok(id)
        })
    }

    /// The action log of one session, oldest first: its rows in `session_actions` and, once
    /// the archiver moved the session, in `session_actions_archive`.
    pub async fn session_actions(&self, radacctid: i64) -> Result<Vec<StoredAction>> {
        each_store!(Store, self, s: D => {
            let sql = session_actions_sql::<D>();
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(radacctid)
                .fetch_all(s.pool())
                .await?;
            rows.iter().map(read_action).collect()
        })
    }

    /// PostgreSQL: opens a transaction, reads the session's latest action id, then takes the
    /// session's advisory lock, waiting at most `wait` (the server's `lock_timeout`: an
    /// `Unavailable` error when it fires). The returned lock says what action of kind `action`
    /// (`disconnect`, `coa`) another node finished meanwhile. `None` on SQLite, which is one
    /// node and needs no lock.
    pub async fn lock_session_actions(
        &self,
        radacctid: i64,
        action: &str,
        wait: Duration,
    ) -> Result<Option<ActionLock>> {
        match self {
            Store::Postgres(s) => Ok(Some(s.lock_session_actions(radacctid, action, wait).await?)),
            Store::Sqlite(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_fold_the_id() {
        assert_eq!(action_lock_key(0), 0);
        assert_eq!(action_lock_key(12_345_678), 12_345_678);
        // The high half is folded in, so ids 2^32 apart differ.
        assert_eq!(action_lock_key(1 << 32), 1);
        assert_ne!(action_lock_key((1 << 32) + 5), action_lock_key(5));
        assert_eq!(action_lock_key(i64::from(u32::MAX)), -1);
        assert_eq!(&ACTION_LOCK_CLASS.to_be_bytes(), b"RADS");
    }

    #[test]
    fn an_unchanged_row_takes_the_alternative_outcome_only_when_one_is_given() {
        let record = ActionRecord {
            radacctid: 1,
            acctuniqueid: "k".into(),
            username: None,
            nasipaddress: "192.0.2.1".into(),
            action: "reconcile".into(),
            method: "api".into(),
            outcome: "ghost_closed".into(),
            outcome_if_unchanged: Some("ghost_skipped".into()),
            detail: Some(r#"{"evidence":"x"}"#.into()),
            request: None,
            error_cause: None,
            actor: None,
            node: "a".into(),
            rtt_ms: None,
            requested_at: 1,
            finished_at: 2,
        };
        let closed = record.with_row_closed(true);
        assert_eq!(closed.outcome, "ghost_closed");
        assert_eq!(
            closed.detail.as_deref(),
            Some(r#"{"evidence":"x","row_closed":true}"#)
        );
        let kept = record.with_row_closed(false);
        assert_eq!(kept.outcome, "ghost_skipped");
        assert!(
            kept.detail
                .as_deref()
                .is_some_and(|d| d.contains(r#""row_closed":false"#))
        );
        let disconnect = ActionRecord {
            outcome: "ack".into(),
            outcome_if_unchanged: None,
            ..record
        };
        assert_eq!(disconnect.with_row_closed(false).outcome, "ack");
    }

    #[test]
    fn a_coa_sent_is_an_event_whatever_the_answer_a_disconnect_only_when_confirmed() {
        let record = |action: &'static str, outcome: &'static str| ActionRecord {
            radacctid: 5,
            acctuniqueid: "k".into(),
            username: Some("u".into()),
            nasipaddress: "192.0.2.1".into(),
            action: action.into(),
            method: "api".into(),
            outcome: outcome.into(),
            outcome_if_unchanged: None,
            detail: None,
            request: Some(r#"{"Session-Timeout":60}"#.into()),
            error_cause: Some(402),
            actor: Some("ops".into()),
            node: "a".into(),
            rtt_ms: Some(9),
            requested_at: 10,
            finished_at: 12,
        };
        let coa = record("coa", "nak").event().expect("an event");
        assert_eq!(
            (coa.kind, coa.time, coa.radacctid),
            (EventType::SessionCoa, 12, Some(5))
        );
        let data: Value = serde_json::from_str(&coa.data).expect("json");
        assert_eq!(data["error_cause_name"], "Missing-Attribute");
        assert_eq!(data["request"]["Session-Timeout"], 60);
        assert_eq!(data["actor"], "ops");
        for outcome in ["ack", "removed"] {
            let e = record("disconnect", outcome).event().expect("an event");
            assert_eq!(e.kind, EventType::SessionDisconnected);
            let data: Value = serde_json::from_str(&e.data).expect("json");
            assert_eq!(
                data,
                json!({"outcome": outcome, "method": "api", "actor": "ops", "rtt_ms": 9})
            );
        }
        let not_sent = |outcome: &'static str| ActionRecord {
            method: METHOD_NOT_SENT.into(),
            rtt_ms: None,
            ..record("coa", outcome)
        };
        assert_eq!(not_sent("already_closed").event(), None);
        assert_eq!(not_sent("error").event(), None);
        assert!(
            record("coa", "timeout").event().is_some(),
            "sent, unanswered"
        );
        for (action, outcome) in [
            ("disconnect", "nak"),
            ("disconnect", "timeout"),
            ("disconnect", "already_closed"),
            ("reconcile", "ghost_closed"),
        ] {
            assert_eq!(record(action, outcome).event(), None, "{action} {outcome}");
        }
    }

    #[test]
    fn the_insert_binds_fifteen_values() {
        let pg = insert_action_sql::<crate::store::PgStore>();
        assert!(
            pg.contains("$11, to_timestamp($12), to_timestamp($13), $14, $15)"),
            "{pg}"
        );
        let lite = insert_action_sql::<crate::store::SqliteStore>();
        assert!(
            lite.contains("datetime(?13, 'unixepoch'), ?14, ?15)"),
            "{lite}"
        );
    }
}
