//! The reconciliation with the routers (docs/ARCHITECTURE.md#router-reconciliation): every
//! `reconcile.interval_secs`, on the jobs leader, each NAS with RouterOS API credentials is
//! asked for its whole `/ppp/active` (streamed, [`crate::disconnect::mikrotik::print_ppp_active`])
//! and compared with the index's open sessions of that NAS ([`crate::nas::compare`]).
//!
//! - A ghost (open here, absent on the router) is closed through the writer with cause
//!   `Lost-Service`, stop time = its last update (never after the router's answer), on the
//!   condition that the row has not been updated since it was looked at; the close carries its
//!   action log row (`reconcile`, `api`, `ghost_closed` — or `ghost_skipped` when that
//!   condition failed and the row was left as it was —, the evidence in `detail`).
//! - A zombie (on the router, not open here) and a mismatch (another framed IP or MAC) are
//!   reported: `GET /api/nas/{id}`, `/metrics`, the log; with `reconcile.zombies =
//!   "disconnect"` the listed zombies are also removed from the router.
//!
//! Nothing is ever closed unless the router's answer was complete: a connect or login that
//! fails, a `!trap`, a `!fatal`, a reply past its deadline or a connection dropped before the
//! `!done` change nothing. It never writes SQL itself.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use serde_json::json;
use tokio::sync::Semaphore;

use super::leader::{Leader, OnCut, Ran};
use super::{JobStats, Schedule};
use crate::clock::now_secs;
use crate::config::{ReconcileConfig, ZombiePolicy};
use crate::disconnect::mikrotik::{self, ApiError, PppSession};
use crate::disconnect::{ApiOutcome, ApiRouter, Disconnector};
use crate::metrics::Stats;
use crate::nas::compare::{self, Before, Findings, Ghost, RouterEntry, RouterTable, Rules};
use crate::nas::{NasHealth, Reconciliation};
use crate::queue::{CloseRequest, IngestSender, Item};
use crate::sessions::SessionIndex;
use crate::store::ActionRecord;

/// Terminate cause of a ghost closed by reconciliation: the router lost the session without
/// its Stop reaching us.
pub const GHOST_CAUSE: &str = "Lost-Service";

/// The action log outcome of a ghost this run closed.
pub const GHOST_CLOSED: &str = "ghost_closed";
/// The action log outcome of a ghost whose close changed nothing: the writer found its row
/// updated since the comparison (an interim or a Stop came first) and left it as it was.
pub const GHOST_SKIPPED: &str = "ghost_skipped";

/// What one reconciliation with one router found and did.
#[derive(Debug, Clone)]
pub struct RouterReport {
    pub nas_id: i64,
    pub name: String,
    pub nas_ip: IpAddr,
    /// Entries in the router's `/ppp/active`.
    pub router_sessions: u64,
    /// When the router's answer was complete (epoch seconds).
    pub answered_at: i64,
    pub findings: Findings,
    /// Ghosts whose row this run closed (a ghost updated meanwhile is not closed).
    pub ghosts_closed: u64,
    pub zombies_disconnected: u64,
    pub dry_run: bool,
    /// Milliseconds from the connect to the end of the closes.
    pub took_ms: u64,
}

/// The reconciler; cheap to clone.
#[derive(Clone)]
pub struct RouterReconciler {
    disconnector: Disconnector,
    index: Arc<SessionIndex>,
    ingest: IngestSender,
    health: Arc<NasHealth>,
    stats: Arc<JobStats>,
    config: ReconcileConfig,
    node: String,
}

impl std::fmt::Debug for RouterReconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterReconciler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RouterReconciler {
    /// Reconciles the routers of `disconnector`'s NAS directory with `index`, closing ghosts
    /// through `ingest`; figures go to `stats`' NAS health.
    pub fn new(
        disconnector: Disconnector,
        index: Arc<SessionIndex>,
        ingest: IngestSender,
        stats: &Stats,
        config: ReconcileConfig,
    ) -> RouterReconciler {
        RouterReconciler {
            disconnector,
            index,
            ingest,
            health: NasHealth::of(stats),
            stats: JobStats::of(stats, "reconcile"),
            node: stats.node().name().to_owned(),
            config,
        }
    }

    /// The routers it would reconcile: the `nas` rows with API credentials.
    pub fn routers(&self) -> Vec<ApiRouter> {
        self.disconnector.api_routers()
    }

    /// Every router once, `reconcile.concurrency` at a time; one result per router.
    pub async fn run_once(&self, dry_run: bool) -> Vec<(ApiRouter, anyhow::Result<RouterReport>)> {
        let started = Instant::now();
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut runs = tokio::task::JoinSet::new();
        for router in self.routers() {
            let (this, permits) = (self.clone(), permits.clone());
            runs.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let result = this.reconcile(&router, dry_run).await;
                (router, result)
            });
        }
        let mut out = Vec::new();
        while let Some(done) = runs.join_next().await {
            match done {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!(error = %e, "a router reconciliation task failed"),
            }
        }
        out.sort_by_key(|(r, _)| (r.nas_id, r.nas_ip));
        self.count(&out, started.elapsed());
        out
    }

    fn count(&self, out: &[(ApiRouter, anyhow::Result<RouterReport>)], took: Duration) {
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_duration_ms
            .store(took.as_millis() as u64, Ordering::Relaxed);
        let closed: u64 = out
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .map(|r| r.ghosts_closed)
            .sum();
        self.stats.rows.fetch_add(closed, Ordering::Relaxed);
        if out.iter().any(|(_, r)| r.is_err()) {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.last_success.store(now_secs(), Ordering::Relaxed);
        }
    }

    /// One reconciliation with one router (see the module documentation). `Err` when the
    /// router's answer was not complete: then nothing was changed.
    pub async fn reconcile(
        &self,
        router: &ApiRouter,
        dry_run: bool,
    ) -> anyhow::Result<RouterReport> {
        let result = self.reconcile_inner(router, dry_run).await;
        match &result {
            Ok(report) => {
                log_report(report);
                self.health.reconciled(router.nas_ip, Some(summary(report)));
            }
            Err(e) => {
                tracing::warn!(
                    nas = %router.nas_ip, nas_id = router.nas_id, router = %router.name,
                    error = format!("{e:#}"),
                    "router reconciliation: no complete answer, nothing changed"
                );
                self.health.reconciled(router.nas_ip, None);
            }
        }
        result
    }

    async fn reconcile_inner(
        &self,
        router: &ApiRouter,
        dry_run: bool,
    ) -> anyhow::Result<RouterReport> {
        let nas = router.nas_ip.to_string();
        let transport = router.transport.as_ref().map_err(|e| {
            self.health.api(router.nas_ip, Some(e.clone()));
            anyhow!("{e}")
        })?;
        // Taken before the print: only these can be ghosts (docs: the race with the print).
        let mut before = Before::default();
        self.index.for_each(|s| {
            if s.nasipaddress == nas {
                before.add(s);
            }
        });
        let requested_at = now_secs();
        let started = Instant::now();
        let mut table = RouterTable::default();
        let printed = mikrotik::print_ppp_active(
            router.addr,
            transport,
            &router.creds,
            &self.disconnector.api_timeouts(),
            Duration::from_secs(self.config.timeout_secs),
            |p| table.push(entry(p)),
        )
        .await;
        if let Err(e) = printed {
            let partial = table.len();
            self.health.api(router.nas_ip, Some(e.to_string()));
            return Err(anyhow!(incomplete(&e, partial)));
        }
        let answered_at = now_secs();
        self.health.api(router.nas_ip, None);
        let rules = Rules {
            answered_at,
            zombie_grace_secs: self.config.zombie_grace_secs,
        };
        let findings = compare::compare(&table, &before, rules, |f| {
            self.index.for_each(|s| {
                if s.nasipaddress == nas {
                    f(s);
                }
            })
        });
        let router_sessions = table.len() as u64;
        drop(table);
        let mut report = RouterReport {
            nas_id: router.nas_id,
            name: router.name.clone(),
            nas_ip: router.nas_ip,
            router_sessions,
            answered_at,
            findings,
            ghosts_closed: 0,
            zombies_disconnected: 0,
            dry_run,
            took_ms: 0,
        };
        if !dry_run {
            let evidence = Evidence {
                router,
                router_sessions,
                requested_at,
                answered_at,
                rtt_ms: started.elapsed().as_millis() as i64,
            };
            report.ghosts_closed = self
                .close_ghosts(&report.findings.ghosts, &evidence)
                .await?;
            if self.config.zombies == ZombiePolicy::Disconnect {
                report.zombies_disconnected = self.disconnect_zombies(router, &report).await;
            }
        }
        report.took_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Asks the writer to close each ghost (with its action log row) and counts the rows
    /// closed.
    async fn close_ghosts(&self, ghosts: &[Ghost], evidence: &Evidence<'_>) -> anyhow::Result<u64> {
        let mut pending = Vec::with_capacity(ghosts.len());
        for g in ghosts {
            let (request, done) = CloseRequest::new(
                g.acctuniqueid.clone(),
                Some(g.stop_time),
                GHOST_CAUSE,
                // Only while the row is as it was compared: an interim since then wins.
                g.last_seen.map(|l| l + 1),
            );
            let request = request.with_action(Some(evidence.record(g, &self.node)));
            self.ingest
                .send(Item::Close(request))
                .await
                .context("the ingest writer has stopped")?;
            pending.push(done);
        }
        let mut closed = 0;
        for done in pending {
            // A closed channel means the write failed; the next run finds the ghost again.
            if done.await.unwrap_or(false) {
                closed += 1;
            }
        }
        Ok(closed)
    }

    /// `reconcile.zombies = "disconnect"`: removes the listed zombies (the first
    /// [`compare::MAX_LISTED`]; the next run finds the rest) from the router, each by its user
    /// name and address. One without a name or an address is only reported: removing by name
    /// alone would also remove the user's other, live logins.
    async fn disconnect_zombies(&self, router: &ApiRouter, report: &RouterReport) -> u64 {
        let Ok(transport) = &router.transport else {
            return 0;
        };
        if looks_misconfigured(report.findings.zombie_count, report.router_sessions) {
            tracing::warn!(
                nas = %router.nas_ip, router = %router.name, zombies = report.findings.zombie_count,
                router_sessions = report.router_sessions,
                "router reconciliation: most of the router's sessions have no open row here; \
                 that is a configuration mismatch (the NAS-IP-Address its accounting carries is \
                 not the nas row's address?) rather than lost Starts: no zombie is removed"
            );
            return 0;
        }
        let mut removed = 0;
        for z in &report.findings.zombies {
            let (Some(name), Some(address)) = (z.name.as_deref(), z.address.as_deref()) else {
                tracing::info!(
                    nas = %router.nas_ip, username = z.name.as_deref().unwrap_or(""),
                    "router reconciliation: a zombie without a name or an address is left on the router"
                );
                continue;
            };
            let outcome = mikrotik::disconnect_ppp(
                router.addr,
                transport,
                &router.creds,
                name,
                Some(address),
                &self.disconnector.api_timeouts(),
            )
            .await;
            tracing::info!(
                nas = %router.nas_ip, username = name, outcome = outcome.label(),
                "router reconciliation: zombie removed from the router"
            );
            if outcome == ApiOutcome::Removed {
                removed += 1;
            }
        }
        removed
    }

    /// Reconciles every `reconcile.interval_secs` for as long as `leader`'s term lasts, each
    /// run confirmed and recorded in `job_runs` ([`Leader::run_scheduled`]).
    pub async fn run(self, leader: Leader) {
        let every = Duration::from_secs(self.config.interval_secs.max(1));
        // The first run one interval after start-up: sessions open across a restart get their
        // interims (and the index its rebuild) first.
        leader
            .run_scheduled(
                "reconcile",
                Schedule::EveryAfterOne(every),
                OnCut::RecordStopped,
                || async {
                    let results = self.run_once(false).await;
                    let closed = results
                        .iter()
                        .filter_map(|(_, r)| r.as_ref().ok())
                        .map(|r| r.ghosts_closed)
                        .sum();
                    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
                    let error = (failed > 0).then(|| {
                        anyhow!(
                            "{failed} of {} router(s) gave no complete answer",
                            results.len()
                        )
                    });
                    Ran {
                        rows: closed,
                        error,
                    }
                },
                // Each router's failure is logged where it happens.
                |_| {},
            )
            .await;
    }
}

/// Zombies above this many, and more than half the router's table, are not removed.
const MISCONFIGURED_ZOMBIES: u64 = 10;

/// Whether so many of the router's sessions are zombies that removing them would more likely
/// disconnect every subscriber of a NAS whose accounting radacctd files under another address
/// than heal a few lost Starts.
fn looks_misconfigured(zombies: u64, router_sessions: u64) -> bool {
    zombies > MISCONFIGURED_ZOMBIES && zombies * 2 > router_sessions
}

/// What a ghost's action log row says about the router's answer.
struct Evidence<'a> {
    router: &'a ApiRouter,
    router_sessions: u64,
    requested_at: i64,
    answered_at: i64,
    rtt_ms: i64,
}

impl Evidence<'_> {
    fn record(&self, g: &Ghost, node: &str) -> ActionRecord {
        let detail = json!({
            "evidence": "absent from the router's /ppp/active",
            "router": self.router.name,
            "router_api": self.router.addr.to_string(),
            "router_sessions": self.router_sessions,
            "answered_at": self.answered_at,
            "acctsessionid": g.acctsessionid,
            "framedipaddress": g.framedipaddress,
            "last_seen": g.last_seen,
            "stop_time": g.stop_time,
            "cause": GHOST_CAUSE,
        });
        ActionRecord {
            radacctid: g.radacctid,
            acctuniqueid: g.acctuniqueid.clone(),
            username: Some(g.username.clone()),
            nasipaddress: self.router.nas_ip.to_string(),
            action: "reconcile".into(),
            method: "api".into(),
            outcome: GHOST_CLOSED.into(),
            outcome_if_unchanged: Some(GHOST_SKIPPED.into()),
            detail: Some(detail.to_string()),
            request: None,
            error_cause: None,
            actor: None,
            node: node.to_owned(),
            rtt_ms: Some(self.rtt_ms),
            requested_at: self.requested_at,
            finished_at: self.answered_at,
        }
    }
}

/// A streamed `/ppp/active` entry as the comparison takes it.
fn entry(p: PppSession) -> RouterEntry {
    RouterEntry {
        session_id: p.session_id.as_deref().map(compare::normalize_session_id),
        name: p.name,
        address: p.address,
        caller_id: p.caller_id,
        uptime: p.uptime.as_deref().and_then(compare::parse_uptime),
    }
}

/// Why the answer is not to be trusted, with how much of it had come.
fn incomplete(e: &ApiError, entries: usize) -> String {
    match e {
        ApiError::Trap(m) => format!("the router trapped the print ({m}) after {entries} entries"),
        other => format!("{other} (after {entries} entries, before the !done)"),
    }
}

fn summary(r: &RouterReport) -> Reconciliation {
    let f = &r.findings;
    Reconciliation {
        at: r.answered_at,
        dry_run: r.dry_run,
        router_sessions: r.router_sessions,
        open_sessions: f.open,
        ghosts: f.ghosts.len() as u64,
        ghosts_closed: r.ghosts_closed,
        zombies: f.zombie_count,
        zombies_disconnected: r.zombies_disconnected,
        mismatches: f.mismatch_count,
        took_ms: r.took_ms,
        ghost_list: f.ghosts.iter().take(compare::MAX_LISTED).cloned().collect(),
        zombie_list: f.zombies.clone(),
        mismatch_list: f.mismatches.clone(),
    }
}

fn log_report(r: &RouterReport) {
    let f = &r.findings;
    if f.ghosts.is_empty() && f.zombie_count == 0 && f.mismatch_count == 0 {
        tracing::debug!(nas = %r.nas_ip, router_sessions = r.router_sessions, open = f.open, "router reconciliation: in agreement");
        return;
    }
    tracing::info!(
        nas = %r.nas_ip, nas_id = r.nas_id, router = %r.name, dry_run = r.dry_run,
        router_sessions = r.router_sessions, open = f.open, ghosts = f.ghosts.len(),
        ghosts_closed = r.ghosts_closed, zombies = f.zombie_count, mismatches = f.mismatch_count,
        "router reconciliation"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_router_mostly_made_of_zombies_is_left_alone() {
        assert!(!looks_misconfigured(2, 4), "a few lost Starts");
        assert!(!looks_misconfigured(10, 10), "a small router");
        assert!(!looks_misconfigured(40, 100));
        assert!(looks_misconfigured(60, 100));
        assert!(
            looks_misconfigured(5_000, 5_000),
            "no session of the NAS is known here"
        );
    }
}
