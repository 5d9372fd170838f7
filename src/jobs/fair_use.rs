//! The fair-use reset on the jobs leader: one node restores the rates of subscribers whose
//! throttled period ended (`fairuse::FairUse::reset`), recorded in `job_runs` as
//! `fair_use_reset`.

use crate::clock::now_secs;
use crate::fairuse::FairUse;

use super::leader::Leader;

/// Runs the reset every `usage.reset_interval_secs` while `leader` leads.
pub async fn run_resets(fair_use: FairUse, leader: Leader) {
    let mut tick = tokio::time::interval(fair_use.reset_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = leader.ended().clone();
    loop {
        tokio::select! {
            _ = ended.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(run) = leader.begin("fair_use_reset").await else {
            return;
        };
        let result = tokio::select! {
            _ = ended.cancelled() => return,
            r = fair_use.reset(now_secs()) => r,
        };
        let error = result.as_ref().err().map(|e| anyhow::anyhow!("{e}"));
        let restored = result.as_ref().map_or(0, |r| r.restored.len() as u64);
        run.finish(restored, error.as_ref()).await;
        if let Some(e) = error {
            tracing::warn!(error = %e, "fair-use reset failed; retrying next interval");
        }
    }
}
