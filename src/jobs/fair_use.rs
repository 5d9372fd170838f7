//! The fair-use reset on the jobs leader: one node restores the rates of subscribers whose
//! throttled period ended (`fairuse::FairUse::reset`), recorded in `job_runs` as
//! `fair_use_reset`.

use crate::clock::now_secs;
use crate::fairuse::FairUse;

use super::Schedule;
use super::leader::{Leader, OnCut, Ran};

/// Runs the reset every `usage.reset_interval_secs` while `leader` leads.
pub async fn run_resets(fair_use: FairUse, leader: Leader) {
    leader
        .run_scheduled(
            "fair_use_reset",
            Schedule::Every(fair_use.reset_every()),
            OnCut::LeaveOpen,
            || async {
                let result = fair_use.reset(now_secs()).await;
                Ran::of(result.map_err(|e| anyhow::anyhow!("{e}")), |r| {
                    r.restored.len() as u64
                })
            },
            |ran| {
                if let Some(e) = ran.error {
                    tracing::warn!(error = %e, "fair-use reset failed; retrying next interval");
                }
            },
        )
        .await;
}
