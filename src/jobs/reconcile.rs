//! The periodic reconciliation of this node's live index with SQL, every
//! `sweep_interval_secs`, on every node whether it leads the jobs or not: the index is each
//! node's own, and a change that reached no node's change listener (another writer while this
//! node was cut off, a notification lost) shows up here at the latest.
//!
//! The writer does the work ([`Reconcile::Full`]), between its own commits, so no commit of this
//! node races the re-read.

use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::queue::{Drift, IngestSender, Item, Reconcile};

/// The reconciliation of one node's index.
#[derive(Debug, Clone)]
pub struct Reconciler {
    ingest: IngestSender,
    every: Duration,
}

impl Reconciler {
    /// Reconciles through the writer behind `ingest`, every `every`.
    pub fn new(ingest: IngestSender, every: Duration) -> Self {
        Reconciler {
            ingest,
            every: every.max(Duration::from_secs(1)),
        }
    }

    /// One full reconciliation: what the index lacked or held wrongly.
    pub async fn run_once(&self) -> anyhow::Result<Drift> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ingest
            .send(Item::Reconcile(Reconcile::Full(tx)))
            .await
            .context("the ingest writer has stopped")?;
        rx.await.context("index reconciliation failed")
    }

    /// Reconciles every interval (the first one interval after start-up, which loaded the
    /// index) until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.run_once() => r,
            };
            if let Err(e) = result {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "index reconciliation failed; retrying next interval"
                );
            }
        }
    }
}
