//! Fair-use throttling (docs/ARCHITECTURE.md#fair-use): acts on the usage ledger as commits
//! change it. It never writes the ledger, and it changes sessions only through the session
//! control path (`Disconnector::change_as`, actor [`ACTOR`]), so every CoA it sends is in the
//! action log.
//!
//! - **Crossing.** The ingest writer reports the subscribers of every committed row write
//!   (`usage::Touches`). Every `usage.check_interval_ms` the enforcer takes them, finds each
//!   one's policy (by the `Class` of its sessions), sums its usage in the policy's current
//!   period, and for those at or over the threshold inserts the throttle row. Inserting it is
//!   the claim: of several nodes seeing one crossing exactly one inserts it, and only that one
//!   sends the rate to each open session of the subscriber.
//! - **Start while over.** A session new to radacctd whose subscriber has a throttle row gets
//!   the rate right after its Start was committed. A session whose NAS did not answer the
//!   throttling CoA is sent it again on its next commit (this node remembers it).
//! - **Reset.** On the jobs leader, every `usage.reset_interval_secs`, each throttle row whose
//!   period ended gets the restore rate sent to the subscriber's open sessions; the row is
//!   removed once every session took it (or is gone, or its NAS refused it); a NAS that did not
//!   answer is retried at the next look.
//!
//! The state is the `fair_use_throttles` table, so a restart (or a takeover by another node)
//! keeps who is throttled and resets on time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use crate::clock::now_secs;
use crate::config::FairUsePolicy;
use crate::disconnect::{AttrValue, Change, ChangeAttr, ChangeError, Disconnector};
use crate::sessions::{Session, SessionIndex};
use crate::store::{Store, StoreError, Throttle};
use crate::usage::{Policies, Touch, Touches};

/// The actor the action log names for fair-use CoAs.
pub const ACTOR: &str = "fair-use";

/// The fair-use enforcer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FairUse {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    index: Arc<SessionIndex>,
    disconnector: Disconnector,
    policies: Policies,
    touches: Arc<Touches>,
    node: String,
    check_every: Duration,
    reset_every: Duration,
    /// The class last seen per subscriber: rows rebuilt from the live index do not carry it,
    /// and the subscriber's plan rarely changes between two sessions.
    classes: Mutex<HashMap<String, Option<String>>>,
    /// Sessions (key → user name) whose throttling CoA their NAS did not answer: sent again on
    /// the session's next commit while its subscriber is throttled.
    retry: Mutex<HashMap<String, String>>,
}

/// What one check did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Subscribers that crossed their threshold (throttle rows this node inserted).
    pub crossed: Vec<String>,
    /// CoAs sent (crossings and starts while over), by outcome.
    pub sent: usize,
    pub failed: usize,
}

/// What one reset look did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// Subscribers whose rate was restored and throttle row removed.
    pub restored: Vec<String>,
    /// Subscribers left for the next look (a NAS did not answer).
    pub retry: Vec<String>,
}

/// The CoA change that sets `rate` as the session's `Mikrotik-Rate-Limit`.
pub fn rate_change(rate: &str) -> Result<Change, String> {
    let def = crate::radius::dictionary::change_attribute("Mikrotik-Rate-Limit")
        .ok_or("Mikrotik-Rate-Limit is not in the dictionary")?;
    Change::new(vec![ChangeAttr::new(
        def,
        AttrValue::Text(rate.to_owned()),
    )?])
}

impl FairUse {
    /// An enforcer of `policies`, fed by `touches` (which the ingest writer fills).
    pub fn new(
        store: Store,
        index: Arc<SessionIndex>,
        disconnector: Disconnector,
        policies: Policies,
        touches: Arc<Touches>,
        config: &crate::config::UsageConfig,
        node: String,
    ) -> Result<FairUse, String> {
        for p in &config.policies {
            rate_change(&p.rate).map_err(|e| format!("usage.policies {}: rate: {e}", p.name))?;
            rate_change(&p.restore_rate)
                .map_err(|e| format!("usage.policies {}: restore_rate: {e}", p.name))?;
        }
        Ok(FairUse {
            inner: Arc::new(Inner {
                store,
                index,
                disconnector,
                policies,
                touches,
                node,
                check_every: Duration::from_millis(config.check_interval_ms.max(1)),
                reset_every: Duration::from_secs(config.reset_interval_secs.max(1)),
                classes: Mutex::new(HashMap::new()),
                retry: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The policies it enforces.
    pub fn policies(&self) -> &Policies {
        &self.inner.policies
    }

    /// Checks what commits touched, at most every `usage.check_interval_ms`, until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.inner.touches.wait() => {}
            }
            // Gather what the next commits bring too: one query for many subscribers.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.inner.check_every) => {}
            }
            let touched = self.inner.touches.take();
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.check(touched, now_secs()) => r,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "fair-use check failed; the next commits of these subscribers check again");
            }
        }
    }

    /// Checks the touched subscribers at time `now`: throttles those that crossed their
    /// threshold, and sends the rate to new sessions of subscribers already throttled.
    pub async fn check(
        &self,
        touched: HashMap<String, Vec<Touch>>,
        now: i64,
    ) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        if touched.is_empty() || self.inner.policies.is_empty() {
            return Ok(report);
        }
        let policies = self.policies_of(&touched).await?;
        let crossed = self.crossings(&policies, now).await?;
        // Sessions that get the rate because their subscriber crossed now: a Start of theirs
        // in the same batch is one of them, not a second CoA.
        let mut done: HashSet<String> = HashSet::new();
        let mut sends = Vec::new();
        if !crossed.is_empty() {
            let users: HashSet<&str> = crossed.iter().map(|t| t.username.as_str()).collect();
            let sessions = self.open_sessions(&users);
            for t in &crossed {
                tracing::info!(
                    username = %t.username, policy = %t.policy, used = t.used_bytes,
                    threshold = t.threshold_bytes, "fair-use threshold crossed; throttling"
                );
                for s in sessions.get(t.username.as_str()).into_iter().flatten() {
                    done.insert(s.acctuniqueid.to_string());
                    sends.push((s.clone(), t.rate.clone()));
                }
                report.crossed.push(t.username.clone());
            }
        }
        // Sessions that need the rate although their subscriber crossed earlier: new ones, and
        // those whose NAS did not answer the throttling CoA (asked again on their next commit).
        let pending = self.pending_keys();
        let needs = |t: &Touch| t.started || pending.contains(&t.key);
        let users: Vec<String> = touched
            .iter()
            .filter(|(_, list)| list.iter().any(needs))
            .map(|(u, _)| u.clone())
            .collect();
        if !users.is_empty() {
            let throttled = self.inner.store.throttles(Some(&users)).await?;
            for t in &throttled {
                for touch in touched.get(&t.username).into_iter().flatten() {
                    if !needs(touch) || done.contains(&touch.key) {
                        continue;
                    }
                    if let Some(s) = self.inner.index.get(&touch.key) {
                        done.insert(touch.key.clone());
                        sends.push((s, t.rate.clone()));
                    }
                }
            }
            // A retry whose subscriber is no longer throttled (reset meanwhile) is dropped.
            let still: HashSet<&str> = throttled.iter().map(|t| t.username.as_str()).collect();
            let asked: HashSet<&str> = users.iter().map(String::as_str).collect();
            let mut retry = self.inner.retry.lock().unwrap_or_else(|e| e.into_inner());
            retry.retain(|_, user| still.contains(user.as_str()) || !asked.contains(user.as_str()));
        }
        let (ok, failed) = self.send_all(sends).await;
        report.sent = ok;
        report.failed = failed;
        Ok(report)
    }

    /// The policy of each touched subscriber (those without one are left out).
    async fn policies_of(
        &self,
        touched: &HashMap<String, Vec<Touch>>,
    ) -> Result<HashMap<String, FairUsePolicy>, StoreError> {
        let p = &self.inner.policies;
        let mut class: HashMap<String, Option<String>> = HashMap::new();
        if p.by_class() {
            let mut unknown_keys = Vec::new();
            {
                let mut cache = self.inner.classes.lock().unwrap_or_else(|e| e.into_inner());
                for (user, list) in touched {
                    if let Some(c) = list.iter().find_map(|t| t.class.clone()) {
                        cache.insert(user.clone(), Some(c.clone()));
                        class.insert(user.clone(), Some(c));
                    } else if let Some(c) = cache.get(user) {
                        class.insert(user.clone(), c.clone());
                    } else {
                        unknown_keys.extend(list.iter().map(|t| t.key.clone()));
                    }
                }
            }
            if !unknown_keys.is_empty() {
                let found = self.inner.store.classes_of(&unknown_keys).await?;
                let mut cache = self.inner.classes.lock().unwrap_or_else(|e| e.into_inner());
                for (user, list) in touched {
                    if class.contains_key(user) {
                        continue;
                    }
                    let c = list.iter().find_map(|t| found.get(&t.key).cloned());
                    cache.insert(user.clone(), c.clone());
                    class.insert(user.clone(), c);
                }
            }
        }
        Ok(touched
            .keys()
            .filter_map(|u| {
                let c = class.get(u).cloned().flatten();
                p.for_class(c.as_deref())
                    .map(|pol| (u.clone(), pol.clone()))
            })
            .collect())
    }

    /// Throttle rows inserted for the subscribers of `policies` over their threshold now.
    async fn crossings(
        &self,
        policies: &HashMap<String, FairUsePolicy>,
        now: i64,
    ) -> Result<Vec<Throttle>, StoreError> {
        // One query per policy (its period start is shared by its subscribers).
        let mut by_policy: HashMap<&str, (&FairUsePolicy, Vec<String>)> = HashMap::new();
        for (user, pol) in policies {
            by_policy
                .entry(pol.name.as_str())
                .or_insert_with(|| (pol, Vec::new()))
                .1
                .push(user.clone());
        }
        let mut claimed = Vec::new();
        for (pol, users) in by_policy.into_values() {
            let period = self.inner.policies.period(pol, now);
            let used = self.inner.store.usage_since(&users, period.start).await?;
            for (user, bytes) in used {
                if bytes < pol.threshold_bytes as i64 {
                    continue;
                }
                let t = Throttle {
                    username: user,
                    policy: pol.name.clone(),
                    period_start: period.start,
                    period_end: period.end,
                    threshold_bytes: pol.threshold_bytes as i64,
                    used_bytes: bytes,
                    rate: pol.rate.clone(),
                    restore_rate: pol.restore_rate.clone(),
                    throttled_since: now,
                    node: self.inner.node.clone(),
                };
                if self.inner.store.claim_throttle(&t).await? {
                    claimed.push(t);
                }
            }
        }
        claimed.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(claimed)
    }

    /// The open sessions of `users`, by user name (one pass over the index).
    fn open_sessions(&self, users: &HashSet<&str>) -> HashMap<String, Vec<Session>> {
        let mut out: HashMap<String, Vec<Session>> = HashMap::new();
        self.inner.index.for_each(|s| {
            if users.contains(s.username.as_str()) {
                out.entry(s.username.to_string())
                    .or_default()
                    .push(s.clone());
            }
        });
        out
    }

    /// Sends each `(session, rate)` at once; returns (applied, not applied). A session whose
    /// NAS did not answer is remembered, and asked again on its next commit.
    async fn send_all(&self, sends: Vec<(Session, String)>) -> (usize, usize) {
        let results = join_all(sends.iter().map(|(s, rate)| self.send(s, rate))).await;
        let mut retry = self.inner.retry.lock().unwrap_or_else(|e| e.into_inner());
        for ((s, _), r) in sends.iter().zip(&results) {
            let key = s.acctuniqueid.to_string();
            if matches!(r, Err(ChangeError::Unreachable { .. })) {
                retry.insert(key, s.username.to_string());
            } else {
                retry.remove(&key);
            }
        }
        // Sessions that closed meanwhile need nothing.
        retry.retain(|key, _| self.inner.index.contains(key));
        let ok = results.iter().filter(|r| r.is_ok()).count();
        (ok, results.len() - ok)
    }

    /// The sessions whose throttling CoA went unanswered.
    fn pending_keys(&self) -> HashSet<String> {
        let retry = self.inner.retry.lock().unwrap_or_else(|e| e.into_inner());
        retry.keys().cloned().collect()
    }

    async fn send(&self, session: &Session, rate: &str) -> Result<(), ChangeError> {
        let change = rate_change(rate).map_err(ChangeError::Internal)?;
        let result = self
            .inner
            .disconnector
            .change_as(session, &change, Some(ACTOR))
            .await;
        if let Err(e) = &result {
            tracing::warn!(
                username = %session.username, acctuniqueid = %session.acctuniqueid, error = %e,
                "fair-use rate change not applied"
            );
        }
        result.map(|_| ())
    }

    /// One reset look at `now`: restores the rate of every subscriber whose throttled period
    /// ended, and removes its throttle row once every open session took it.
    pub async fn reset(&self, now: i64) -> Result<ResetReport, StoreError> {
        let mut report = ResetReport::default();
        let due = self.inner.store.throttles_due(now).await?;
        if due.is_empty() {
            return Ok(report);
        }
        let users: HashSet<&str> = due.iter().map(|t| t.username.as_str()).collect();
        let sessions = self.open_sessions(&users);
        for t in &due {
            let list = sessions.get(&t.username).cloned().unwrap_or_default();
            let results = join_all(list.iter().map(|s| self.send(s, &t.restore_rate))).await;
            // A NAS that refused (or a session that closed meanwhile) will not change its mind;
            // one that did not answer is asked again at the next look.
            let unanswered = results.iter().any(|r| {
                matches!(
                    r,
                    Err(ChangeError::Unreachable { .. } | ChangeError::Internal(_))
                )
            });
            if unanswered {
                report.retry.push(t.username.clone());
                continue;
            }
            if self
                .inner
                .store
                .release_throttle(&t.username, t.period_end)
                .await?
            {
                tracing::info!(username = %t.username, policy = %t.policy, "fair-use period ended; rate restored");
                report.restored.push(t.username.clone());
            }
        }
        Ok(report)
    }

    /// How often the jobs leader looks for periods that ended (`usage.reset_interval_secs`).
    pub fn reset_every(&self) -> Duration {
        self.inner.reset_every
    }
}
