//! One disconnect across nodes, and the action log (docs/ARCHITECTURE.md#disconnect).
//!
//! The in-process flight leader of a disconnect (see [`super::Disconnector::disconnect`]) runs
//! [`Inner::coordinated`]. On PostgreSQL it first takes the session's action lock
//! (`store::ActionLock`: a transaction-level advisory lock, after reading the latest action id
//! of the session as a watermark), waiting at most as long as an attempt may last. Once it holds
//! the lock:
//!
//! - an action row newer than the watermark means another node finished a disconnect of this
//!   session while this one waited: its outcome is the answer (the same HTTP answer), nothing
//!   is sent, and `radacctd_disconnect_coalesced_total{scope="cluster"}` counts it;
//! - a radacct row already closed (this node's index had not caught up) answers
//!   `already_closed` without contacting the NAS;
//! - otherwise the attempt runs as on one node, and its row is inserted in the lock's
//!   transaction, whose commit publishes the outcome and releases the lock at once.
//!
//! SQLite is one node: the attempt runs unlocked and its row is appended afterwards. When the
//! coordination itself fails (the database is away, the pool is exhausted, the lock was not
//! granted in time) the attempt runs unlocked as well, with a warning: a database problem must
//! not make disconnects impossible, at the price of a possible second Disconnect-Request from
//! another node (harmless to the NAS: it answers NAK 503 and the row is closed once).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Attempt, DisconnectError, Disconnected, Inner, Method, Via};
use crate::clock::now_secs;
use crate::sessions::Session;
use crate::store::{ActionLock, ActionRecord, Store, StoredAction};

/// The `action` of a disconnect's row.
const ACTION: &str = "disconnect";

/// Time allowed, beyond the lock wait, for the pool to hand out a connection and the
/// statements around the lock to run.
const LOCK_GRACE: Duration = Duration::from_secs(5);

type Outcome = Result<Disconnected, DisconnectError>;

/// Who produced a disconnect's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answered {
    /// This node (an attempt of its own, or the database said the row was closed).
    Here,
    /// Another node's recorded outcome.
    ByAnotherNode,
}

/// The leader's call, as the action log records it.
pub(super) struct Call {
    requested_at: i64,
    started: Instant,
    actor: Option<String>,
}

impl Call {
    /// A call made now on behalf of `actor`.
    pub(super) fn new(actor: Option<String>) -> Call {
        Call {
            requested_at: now_secs(),
            started: Instant::now(),
            actor,
        }
    }

    pub(super) fn requested_at(&self) -> i64 {
        self.requested_at
    }

    pub(super) fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }
}

/// What an attempt needs to log itself: the session's radacctid and the call.
pub(super) type LogTo<'a> = Option<(i64, &'a Call)>;

impl Inner {
    /// The attempt for `s`, coordinated with the other nodes and logged when an action log is
    /// set (see the module documentation).
    pub(super) async fn coordinated(
        &self,
        s: &Session,
        actor: Option<String>,
    ) -> (Outcome, Answered) {
        // A session without a radacctid is held by the journal only: no row to log against,
        // and no other node can know it.
        let (Some(store), Some(radacctid)) = (self.actions.get(), s.radacctid) else {
            return (self.attempt(s, None).await.result, Answered::Here);
        };
        let call = Call::new(actor);
        match self.lock(store, radacctid, ACTION).await {
            Ok(Some(lock)) => self.locked(s, radacctid, lock, &call).await,
            Ok(None) => (
                self.unlocked(store, s, radacctid, &call).await,
                Answered::Here,
            ),
            Err(reason) => {
                tracing::warn!(
                    radacctid, acctuniqueid = %s.acctuniqueid, %reason,
                    "disconnect not coordinated with the other nodes (database); disconnecting \
                     from this node alone"
                );
                (
                    self.unlocked(store, s, radacctid, &call).await,
                    Answered::Here,
                )
            }
        }
    }

    /// The longest an attempt may hold the lock: the CoA budget, the API's, and the close's.
    fn lock_wait(&self) -> Duration {
        let c = &self.config;
        Duration::from_millis(c.coa_timeout_ms + c.api_timeout_ms + c.close_timeout_ms)
    }

    /// The session's action lock (`None` on SQLite), telling what `action` another node
    /// finished meanwhile; `Err` says why coordination failed.
    pub(super) async fn lock(
        &self,
        store: &Store,
        radacctid: i64,
        action: &str,
    ) -> Result<Option<ActionLock>, String> {
        let wait = self.lock_wait();
        match tokio::time::timeout(
            wait + LOCK_GRACE,
            store.lock_session_actions(radacctid, action, wait),
        )
        .await
        {
            Ok(Ok(lock)) => Ok(lock),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the lock was not granted within {:?}",
                wait + LOCK_GRACE
            )),
        }
    }

    /// Holding the lock: another node's outcome, or `already_closed`, or an attempt of its own.
    async fn locked(
        &self,
        s: &Session,
        radacctid: i64,
        lock: ActionLock,
        call: &Call,
    ) -> (Outcome, Answered) {
        if let Some(previous) = lock.newer() {
            if let Some(answer) = answer_of(previous, call.started) {
                self.stats.coalesced_cluster.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    radacctid, acctuniqueid = %s.acctuniqueid, node = %previous.node,
                    outcome = %previous.outcome,
                    "disconnect answered with the outcome another node recorded"
                );
                if let Err(e) = lock.release().await {
                    tracing::debug!(error = %e, "releasing the disconnect lock");
                }
                return (answer, Answered::ByAnotherNode);
            }
            tracing::warn!(
                radacctid, outcome = %previous.outcome, node = %previous.node,
                "session_actions row with an outcome this version does not know; disconnecting"
            );
        }
        let attempt = if lock.row_open() == Some(false) {
            let done = Disconnected {
                method: Method::AlreadyClosed,
                row_closed: false,
                elapsed: call.started.elapsed(),
            };
            Attempt {
                result: Ok(done),
                via: Via::None,
                logged: false,
            }
        } else {
            self.attempt(s, Some((radacctid, call))).await
        };
        let written = if attempt.logged {
            // The writer committed the row with the close, before this rollback releases
            // the lock: a node waiting for it finds the row.
            lock.release().await.map(|_| ())
        } else {
            let record = self.record(s, radacctid, &attempt.result, attempt.via, call);
            lock.finish(&record).await.map(|_| ())
        };
        if let Err(e) = written {
            tracing::warn!(
                radacctid, error = %e,
                "disconnect outcome not written to session_actions (or its lock not released)"
            );
        }
        (attempt.result, Answered::Here)
    }

    /// Without the lock: the attempt, then its row appended unless the writer wrote it with
    /// the close (logged when that fails too).
    async fn unlocked(&self, store: &Store, s: &Session, radacctid: i64, call: &Call) -> Outcome {
        let attempt = self.attempt(s, Some((radacctid, call))).await;
        if !attempt.logged {
            let record = self.record(s, radacctid, &attempt.result, attempt.via, call);
            if let Err(e) = store.record_action(&record).await {
                tracing::warn!(
                    radacctid, error = %e,
                    "disconnect outcome not written to session_actions"
                );
            }
        }
        attempt.result
    }

    /// The action log row of an attempt.
    pub(super) fn record(
        &self,
        s: &Session,
        radacctid: i64,
        result: &Outcome,
        via: Via,
        call: &Call,
    ) -> ActionRecord {
        let (outcome, detail) = outcome_of(result, via);
        let error_cause = match result {
            Err(DisconnectError::Refused { error_cause, .. }) => error_cause.map(i64::from),
            _ => None,
        };
        ActionRecord {
            radacctid,
            acctuniqueid: s.acctuniqueid.to_string(),
            username: Some(s.username.to_string()),
            nasipaddress: s.nasipaddress.to_string(),
            action: ACTION.into(),
            method: via.as_str().into(),
            outcome: outcome.into(),
            outcome_if_unchanged: None,
            detail: Some(detail.to_string()),
            request: None,
            error_cause,
            actor: call.actor.clone(),
            node: self.node.clone(),
            rtt_ms: (via != Via::None)
                .then(|| i64::try_from(call.started.elapsed().as_millis()).unwrap_or(i64::MAX)),
            requested_at: call.requested_at,
            finished_at: now_secs(),
        }
    }
}

/// The `outcome` and `detail` (JSON) an answer is recorded as; [`answer_of`] reads them back.
/// A refusal is `nak`; no answer from either path is `timeout`, or `error` when nothing could
/// be sent (`via` is [`Via::None`]).
fn outcome_of(result: &Outcome, via: Via) -> (&'static str, Value) {
    match result {
        Ok(d) => {
            let outcome = match d.method {
                Method::Coa => "ack",
                Method::Api => "removed",
                Method::AlreadyClosed => "already_closed",
            };
            (outcome, json!({ "row_closed": d.row_closed }))
        }
        Err(DisconnectError::Refused {
            error_cause,
            detail,
        }) => (
            "nak",
            json!({ "error_cause": error_cause, "detail": detail }),
        ),
        Err(DisconnectError::Unreachable { detail }) => {
            let outcome = if via == Via::None { "error" } else { "timeout" };
            (outcome, json!({ "detail": detail }))
        }
        Err(DisconnectError::Internal(detail)) => ("internal", json!({ "detail": detail })),
    }
}

/// The answer another node's row gives: the same method or error as that node answered.
/// `None` for an outcome that is not an answer to repeat (`internal`, or one a later version
/// added): the caller then disconnects itself.
fn answer_of(previous: &StoredAction, started: Instant) -> Option<Outcome> {
    let detail: Value = previous
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null);
    let done = |method| {
        Ok(Disconnected {
            method,
            row_closed: detail["row_closed"].as_bool().unwrap_or(false),
            elapsed: started.elapsed(),
        })
    };
    let why = format!(
        "answered by node {:?}: {}",
        previous.node,
        detail["detail"].as_str().unwrap_or_default()
    );
    Some(match previous.outcome.as_str() {
        "ack" => done(Method::Coa),
        "removed" => done(Method::Api),
        "already_closed" => done(Method::AlreadyClosed),
        // `refused` and `unreachable`: what rows written before `nak`, `timeout` and `error`
        // say.
        "nak" | "refused" => Err(DisconnectError::Refused {
            error_cause: detail["error_cause"]
                .as_u64()
                .and_then(|c| u32::try_from(c).ok()),
            detail: why,
        }),
        "timeout" | "error" | "unreachable" => Err(DisconnectError::Unreachable { detail: why }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(result: &Outcome) -> StoredAction {
        let (outcome, detail) = outcome_of(result, Via::Coa);
        StoredAction {
            id: 1,
            radacctid: 7,
            action: ACTION.into(),
            method: "coa".into(),
            outcome: outcome.into(),
            detail: Some(detail.to_string()),
            actor: None,
            node: "a".into(),
            rtt_ms: Some(12),
            request: None,
            error_cause: None,
            requested_at: 1,
            finished_at: 2,
        }
    }

    /// What one node records, another answers the same: method and row_closed, or the error
    /// with its Error-Cause (the HTTP answer depends on nothing else).
    #[test]
    fn a_recorded_outcome_gives_the_same_answer() {
        let now = Instant::now();
        for method in [Method::Coa, Method::Api, Method::AlreadyClosed] {
            for row_closed in [true, false] {
                let ok = Ok(Disconnected {
                    method,
                    row_closed,
                    elapsed: Duration::from_millis(5),
                });
                let back = answer_of(&stored(&ok), now).expect("known").expect("ok");
                assert_eq!((back.method, back.row_closed), (method, row_closed));
            }
        }
        for cause in [Some(402), None] {
            let refused = Err(DisconnectError::Refused {
                error_cause: cause,
                detail: "NAK".into(),
            });
            match answer_of(&stored(&refused), now) {
                Some(Err(DisconnectError::Refused { error_cause, .. })) => {
                    assert_eq!(error_cause, cause)
                }
                other => panic!("{other:?}"),
            }
        }
        let silent = Err(DisconnectError::Unreachable {
            detail: "no answer".into(),
        });
        match answer_of(&stored(&silent), now) {
            Some(Err(DisconnectError::Unreachable { detail })) => {
                assert!(
                    detail.contains("node \"a\"") && detail.contains("no answer"),
                    "{detail}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_outcomes_are_not_answers() {
        let internal = Err(DisconnectError::Internal("bug".into()));
        assert!(answer_of(&stored(&internal), Instant::now()).is_none());
        let mut later = stored(&internal);
        later.outcome = "coa_changed".into();
        later.detail = Some("not json".into());
        assert!(answer_of(&later, Instant::now()).is_none());
    }
}
