//! Changing a live session without dropping it (docs/ARCHITECTURE.md#session-control): an
//! RFC 5176 CoA-Request to the session's NAS carrying the new rate, timeout, filter or address
//! list, sent through the same sockets, secrets and budget as a Disconnect-Request, and one
//! action log row per attempt.
//!
//! Concurrent calls for one session are serialized, and identical ones share one request: a
//! call that finds the same change of the same session in flight joins it (one CoA-Request on
//! the wire, every caller answered), a call with a different change waits for the one in
//! flight and then sends its own, so the NAS never has two changes of one session in flight.
//! On PostgreSQL the attempt runs under the session's action lock (see [`super::cluster`]):
//! another node's attempt is waited for, and when it sent the same change while this call
//! waited, its recorded outcome is the answer. A session the database says is closed answers
//! [`ChangeError::Closed`] without contacting the NAS.
//!
//! A CoA-NAK never closes the row, not even Session-Context-Not-Found: a change is not a
//! disconnect, and the sweeper and the NAS's own accounting settle whether the session lives.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::cluster::Call;
use super::coa::{ChangeAttr, CoaOutcome};
use super::stats::CoaResult;
use super::{Disconnector, Inner, identification};
use crate::sessions::Session;
use crate::store::{ActionLock, ActionRecord, METHOD_NOT_SENT, StoredAction};

/// The `action` of a CoA change's action log row.
pub(super) const ACTION: &str = "coa";

/// A validated change: the attributes a CoA-Request sets, in order, at least one, each
/// attribute once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    attrs: Vec<ChangeAttr>,
    /// [`Change::request_json`], made once.
    request: String,
}

impl Change {
    /// `Err` names what is wrong: no attribute, or one given twice.
    pub fn new(attrs: Vec<ChangeAttr>) -> Result<Change, String> {
        if attrs.is_empty() {
            return Err("nothing to change".into());
        }
        for (i, a) in attrs.iter().enumerate() {
            if attrs[..i].iter().any(|b| b.def == a.def) {
                return Err(format!("{} given twice", a.def.name));
            }
        }
        let map: Map<String, Value> = attrs
            .iter()
            .map(|a| (a.def.name.to_owned(), a.json_value()))
            .collect();
        let request = Value::Object(map).to_string();
        Ok(Change { attrs, request })
    }

    pub fn attrs(&self) -> &[ChangeAttr] {
        &self.attrs
    }

    /// The attributes as a JSON object `{dictionary name: value}`, names sorted: the action
    /// log's `request`, and what makes two calls "the same change".
    pub fn request_json(&self) -> &str {
        &self.request
    }
}

/// The NAS applied the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    /// From the first send of the CoA-Request to the CoA-ACK (or, when another node's
    /// identical change answered, that node's round trip).
    pub round_trip: Duration,
}

/// A change that was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The session is not open (HTTP 409 `session is closed`).
    #[error("session is closed")]
    Closed,
    /// CoA-NAK (HTTP 422 with [`change_refusal_message`]).
    #[error("{}: {detail}", change_refusal_message(*error_cause))]
    Refused {
        error_cause: Option<u32>,
        detail: String,
    },
    /// No answer within the budget, or nothing could be sent (no secret known for the NAS):
    /// HTTP 503 `NAS unreachable`. `detail` is for logs.
    #[error("NAS unreachable: {detail}")]
    Unreachable { detail: String },
    /// The change task ended without a result (a bug). HTTP: 500.
    #[error("change failed: {0}")]
    Internal(String),
}

/// What the API tells a client whose change the NAS refused, e.g.
/// `NAS refused the change: Error-Cause 401 (Unsupported-Attribute)`.
pub fn change_refusal_message(error_cause: Option<u32>) -> String {
    super::nak_message("change", "CoA-NAK", error_cause)
}

type Outcome = Result<Changed, ChangeError>;
type Shared = Option<Outcome>;

/// A change in flight: the change it sends, and where its outcome appears.
pub(super) struct InFlight {
    request: String,
    done: watch::Receiver<Shared>,
}

/// What an attempt did, for its action log row.
struct Sent {
    outcome: Outcome,
    /// Whether a CoA-Request went out.
    sent: bool,
    round_trip: Option<Duration>,
}

/// Removes a session's in-flight change when its task ends, panics included.
struct Entry {
    inner: Arc<Inner>,
    key: String,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.inner
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

impl Disconnector {
    /// Sends `change` to the NAS of `session` on behalf of `actor` (the API token's subject),
    /// who is named in the action log (see the module documentation for concurrent calls).
    pub async fn change_as(
        &self,
        session: &Session,
        change: &Change,
        actor: Option<&str>,
    ) -> Result<Changed, ChangeError> {
        let key = session.acctuniqueid.to_string();
        let request = change.request_json();
        loop {
            let found = {
                let mut changes = self.inner.changes.lock().unwrap_or_else(|e| e.into_inner());
                match changes.get(&key) {
                    Some(f) => {
                        let same = f.request == request;
                        if same {
                            self.inner
                                .stats
                                .coa_coalesced
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        Some((same, f.done.clone()))
                    }
                    None => match self.inner.index.get(&key) {
                        None => None,
                        Some(current) => {
                            let (tx, rx) = watch::channel(None);
                            changes.insert(
                                key.clone(),
                                InFlight {
                                    request: request.to_owned(),
                                    done: rx.clone(),
                                },
                            );
                            let entry = Entry {
                                inner: self.inner.clone(),
                                key: key.clone(),
                            };
                            let inner = self.inner.clone();
                            let change = change.clone();
                            let call = Call::new(actor.map(str::to_owned));
                            tokio::spawn(async move {
                                let outcome =
                                    inner.coordinated_change(&current, &change, &call).await;
                                drop(entry);
                                tx.send_replace(Some(outcome));
                            });
                            Some((true, rx))
                        }
                    },
                }
            };
            let Some((joined, mut rx)) = found else {
                // Not open: nothing to send (the row, if any, is closed).
                let call = Call::new(actor.map(str::to_owned));
                self.inner.log_closed(session, change, call).await;
                return Err(ChangeError::Closed);
            };
            let outcome = match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone(),
                Err(_) => None,
            };
            if joined {
                return outcome.unwrap_or_else(|| {
                    Err(ChangeError::Internal(
                        "the change task ended without a result".into(),
                    ))
                });
            }
            // Another change of this session was in flight: it is done, now this one.
        }
    }
}

impl Inner {
    /// The attempt, under the session's action lock where there is one, and its row.
    async fn coordinated_change(&self, s: &Session, change: &Change, call: &Call) -> Outcome {
        let (Some(store), Some(radacctid)) = (self.actions.get(), s.radacctid) else {
            return self.send_change(s, change).await.outcome;
        };
        let lock = match self.lock(store, radacctid, ACTION).await {
            Ok(lock) => lock,
            Err(reason) => {
                tracing::warn!(
                    radacctid, acctuniqueid = %s.acctuniqueid, %reason,
                    "CoA not coordinated with the other nodes (database); sending it from this \
                     node alone"
                );
                None
            }
        };
        let sent = match &lock {
            Some(l) => {
                if let Some(answer) = answered_by_another_node(l, change) {
                    self.stats
                        .coa_coalesced_cluster
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(l) = lock
                        && let Err(e) = l.release().await
                    {
                        tracing::debug!(error = %e, "releasing the CoA lock");
                    }
                    return answer;
                }
                if l.row_open() == Some(false) {
                    Sent {
                        outcome: Err(ChangeError::Closed),
                        sent: false,
                        round_trip: None,
                    }
                } else {
                    self.send_change(s, change).await
                }
            }
            None => self.send_change(s, change).await,
        };
        let record = change_record(s, radacctid, change, &sent, call, &self.node);
        let written = match lock {
            Some(l) => l.finish(&record).await,
            None => store.record_action(&record).await,
        };
        if let Err(e) = written {
            tracing::warn!(radacctid, error = %e, "CoA outcome not written to session_actions");
        }
        sent.outcome
    }

    /// Logs a change asked for a session that is not open (nothing is sent).
    async fn log_closed(&self, s: &Session, change: &Change, call: Call) {
        let (Some(store), Some(radacctid)) = (self.actions.get(), s.radacctid) else {
            return;
        };
        let sent = Sent {
            outcome: Err(ChangeError::Closed),
            sent: false,
            round_trip: None,
        };
        let record = change_record(s, radacctid, change, &sent, &call, &self.node);
        if let Err(e) = store.record_action(&record).await {
            tracing::warn!(radacctid, error = %e, "CoA outcome not written to session_actions");
        }
    }

    /// One CoA-Request, logged and counted.
    async fn send_change(&self, s: &Session, change: &Change) -> Sent {
        let not_sent = |detail: String| {
            self.stats.coa_request(CoaResult::Error, None);
            tracing::warn!(
                acctuniqueid = %s.acctuniqueid, username = %s.username, %detail,
                "CoA not sent"
            );
            Sent {
                outcome: Err(ChangeError::Unreachable { detail }),
                sent: false,
                round_trip: None,
            }
        };
        let Some(nas_ip) = s.nas_ip() else {
            return not_sent(format!(
                "NAS address {:?} is not an IP address",
                s.nasipaddress
            ));
        };
        let target = self.target(nas_ip);
        let Some(secret) = &target.secret else {
            return not_sent("no secret known for the NAS (no nas row, no client)".into());
        };
        let request = identification(s, nas_ip);
        let reply = match self
            .coa
            .change(target.coa, secret, &request, change.attrs())
            .await
        {
            Ok(reply) => reply,
            Err(e) => return not_sent(e.to_string()),
        };
        let (result, outcome) = match reply.outcome {
            CoaOutcome::Ack => (
                CoaResult::Ack,
                Ok(Changed {
                    round_trip: reply.round_trip,
                }),
            ),
            CoaOutcome::Nak(error_cause) => (
                CoaResult::Nak,
                Err(ChangeError::Refused {
                    error_cause,
                    detail: "CoA-NAK".into(),
                }),
            ),
            CoaOutcome::Timeout => (
                CoaResult::Timeout,
                Err(ChangeError::Unreachable {
                    detail: "no answer to the CoA-Request".into(),
                }),
            ),
        };
        self.stats.coa_request(result, Some(reply.round_trip));
        let error_cause = match reply.outcome {
            CoaOutcome::Nak(c) => c,
            _ => None,
        };
        tracing::info!(
            nas = %target.coa, nas_name = %target.name, outcome = result.as_str(), error_cause,
            round_trip_ms = reply.round_trip.as_millis() as u64, sends = reply.sends,
            acctuniqueid = %s.acctuniqueid, username = %s.username,
            request = %change.request_json(),
            "CoA attempt"
        );
        Sent {
            outcome,
            sent: true,
            round_trip: Some(reply.round_trip),
        }
    }
}

/// The outcome another node recorded for the same change of this session while this call
/// waited for the lock, as this call's answer.
fn answered_by_another_node(lock: &ActionLock, change: &Change) -> Option<Outcome> {
    let previous = lock.newer()?;
    let same = previous
        .request
        .as_deref()
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        == serde_json::from_str::<Value>(change.request_json()).ok();
    if !same {
        return None;
    }
    let answer = answer_of(previous)?;
    tracing::info!(
        radacctid = previous.radacctid, node = %previous.node, outcome = %previous.outcome,
        "CoA answered with the outcome another node recorded"
    );
    Some(answer)
}

/// The answer a recorded CoA row gives; `None` for an outcome that is no answer to repeat.
fn answer_of(previous: &StoredAction) -> Option<Outcome> {
    let why = format!("answered by node {:?}", previous.node);
    Some(match previous.outcome.as_str() {
        "ack" => Ok(Changed {
            round_trip: Duration::from_millis(
                previous.rtt_ms.and_then(|ms| u64::try_from(ms).ok())?,
            ),
        }),
        "nak" => Err(ChangeError::Refused {
            error_cause: previous.error_cause.and_then(|c| u32::try_from(c).ok()),
            detail: why,
        }),
        "timeout" | "error" => Err(ChangeError::Unreachable { detail: why }),
        "already_closed" => Err(ChangeError::Closed),
        _ => return None,
    })
}

/// The action log row of a change attempt.
fn change_record(
    s: &Session,
    radacctid: i64,
    change: &Change,
    sent: &Sent,
    call: &Call,
    node: &str,
) -> ActionRecord {
    let (outcome, error_cause, detail) = match &sent.outcome {
        Ok(_) => ("ack", None, None),
        Err(ChangeError::Refused { error_cause, .. }) => ("nak", *error_cause, None),
        Err(ChangeError::Closed) => ("already_closed", None, None),
        Err(ChangeError::Unreachable { detail }) if sent.sent => {
            ("timeout", None, Some(detail.as_str()))
        }
        Err(ChangeError::Unreachable { detail } | ChangeError::Internal(detail)) => {
            ("error", None, Some(detail.as_str()))
        }
    };
    ActionRecord {
        radacctid,
        acctuniqueid: s.acctuniqueid.to_string(),
        username: Some(s.username.to_string()),
        nasipaddress: s.nasipaddress.to_string(),
        action: ACTION.into(),
        method: if sent.sent { "coa" } else { METHOD_NOT_SENT }.into(),
        outcome: outcome.into(),
        outcome_if_unchanged: None,
        detail: detail.map(|d| json!({ "detail": d }).to_string()),
        request: Some(change.request_json().to_owned()),
        error_cause: error_cause.map(i64::from),
        actor: call.actor().map(str::to_owned),
        node: node.to_owned(),
        rtt_ms: sent
            .round_trip
            .map(|rtt| i64::try_from(rtt.as_millis()).unwrap_or(i64::MAX)),
        requested_at: call.requested_at(),
        finished_at: crate::clock::now_secs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disconnect::coa::AttrValue;
    use crate::radius::dictionary::change_attribute;

    fn attr(name: &str, value: AttrValue) -> ChangeAttr {
        ChangeAttr::new(change_attribute(name).expect("known"), value).expect("fits")
    }

    #[test]
    fn a_change_has_each_attribute_once_and_reads_as_json() {
        assert!(Change::new(vec![]).unwrap_err().contains("nothing"));
        let rate = attr("Mikrotik-Rate-Limit", AttrValue::Text("10M/20M".into()));
        let twice = Change::new(vec![rate.clone(), rate.clone()]).unwrap_err();
        assert!(twice.contains("Mikrotik-Rate-Limit given twice"), "{twice}");
        let c = Change::new(vec![
            rate,
            attr("Session-Timeout", AttrValue::Integer(3600)),
        ])
        .unwrap();
        assert_eq!(
            c.request_json(),
            r#"{"Mikrotik-Rate-Limit":"10M/20M","Session-Timeout":3600}"#
        );
    }

    #[test]
    fn refusals_name_the_error_cause() {
        assert_eq!(
            change_refusal_message(Some(401)),
            "NAS refused the change: Error-Cause 401 (Unsupported-Attribute)"
        );
        assert_eq!(
            change_refusal_message(None),
            "NAS refused the change: CoA-NAK without Error-Cause"
        );
    }

    #[test]
    fn recorded_outcomes_answer_the_same() {
        let row = |outcome: &str| StoredAction {
            id: 1,
            radacctid: 7,
            action: ACTION.into(),
            method: "coa".into(),
            outcome: outcome.into(),
            detail: None,
            actor: None,
            node: "a".into(),
            rtt_ms: Some(12),
            request: Some("{}".into()),
            error_cause: Some(401),
            requested_at: 1,
            finished_at: 2,
        };
        assert_eq!(
            answer_of(&row("ack")),
            Some(Ok(Changed {
                round_trip: Duration::from_millis(12)
            }))
        );
        assert!(matches!(
            answer_of(&row("nak")),
            Some(Err(ChangeError::Refused {
                error_cause: Some(401),
                ..
            }))
        ));
        assert!(matches!(
            answer_of(&row("timeout")),
            Some(Err(ChangeError::Unreachable { .. }))
        ));
        assert_eq!(
            answer_of(&row("already_closed")),
            Some(Err(ChangeError::Closed))
        );
        assert_eq!(answer_of(&row("later_outcome")), None);
    }
}
