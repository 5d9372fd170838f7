//! The sequencer: moves committed rows of `event_queue` into `events`, numbering them
//! (`Store::sequence_events`, which holds the cluster-wide lock on PostgreSQL). It runs on
//! every node: woken at once after any local commit that appended events (the store signals
//! them, whoever wrote: the ingest writer, the action log, the fair-use claims), and every
//! `events.poll_interval_ms` for events another node (or a process killed after its commit)
//! left in the queue, and to learn the ids others gave. What it learns is published as
//! [`Numbered`]: the last id given, which the stream and the webhooks wait on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Batches numbered per round at most (one transaction each).
pub const ROUND: i64 = 1_000;

/// How long a woken sequencer waits before its round, so that the commits of a burst are
/// numbered together: one sequencer transaction (and its WAL flush) per this interval at most
/// under load, rather than one per writer commit. Each round costs PostgreSQL a transaction of
/// its own whatever it numbers; at 20 ms the rounds took about 5 % of PostgreSQL's CPU at
/// 10,000 packets/s (measured with the sequencer off), so events wait up to this long to be
/// numbered instead.
pub const GATHER: Duration = Duration::from_millis(100);

/// The last event id given, as this node last learned it; changes wake its readers.
pub type Numbered = watch::Receiver<i64>;

/// The sequencer task and the handles to it.
#[derive(Debug)]
pub struct Sequencer {
    store: Store,
    wake: Arc<Notify>,
    numbered: watch::Sender<i64>,
    poll: Duration,
    /// Where the queue's length is reported (`radacctd_events_queued`), when counted.
    stats: Option<Arc<super::EventStats>>,
}

impl Sequencer {
    /// Woken by every commit of `store` that appended events (`Store::events_appended`).
    pub fn new(store: Store, poll: Duration) -> Sequencer {
        Sequencer {
            wake: store.events_appended(),
            store,
            numbered: watch::Sender::new(0),
            poll,
            stats: None,
        }
    }

    /// Counts the queue rows left waiting into `stats`, once per poll interval at most (a
    /// count of a table that is nearly always empty).
    pub fn with_stats(mut self, stats: Arc<super::EventStats>) -> Sequencer {
        self.stats = Some(stats);
        self
    }

    /// Counts the rows waiting in the queue, into the stats.
    async fn count_queue(&self) {
        let Some(stats) = &self.stats else { return };
        match self.store.queued_events().await {
            Ok(n) => stats.queued.store(n, std::sync::atomic::Ordering::Relaxed),
            Err(e) => tracing::debug!(error = %e, "event sequencer: counting the queue failed"),
        }
    }

    /// What wakes it: the store's commits that appended events notify it, and so may anyone
    /// else who knows of new events; the next round starts at once.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The last id given, for readers to wait on.
    pub fn numbered(&self) -> Numbered {
        self.numbered.subscribe()
    }

    /// Numbers everything queued now (several rounds if need be); returns the last id given.
    pub async fn drain(&self) -> Result<i64, crate::store::StoreError> {
        loop {
            let s = self
                .store
                .sequence_events(ROUND, crate::clock::now_secs())
                .await?;
            self.numbered.send_if_modified(|last| {
                let newer = s.last_id > *last;
                if newer {
                    *last = s.last_id;
                }
                newer
            });
            if s.batches < ROUND as u64 {
                return Ok(s.last_id);
            }
        }
    }

    /// Runs until `cancel`, then numbers what is left once more (so what the writer committed
    /// before shutdown is numbered by this process when the database allows).
    pub async fn run(self, cancel: CancellationToken) {
        let mut failing = false;
        // Counted on a clock of its own: under load the writer's wakes come before every timer.
        let mut counted = tokio::time::Instant::now();
        self.count_queue().await;
        loop {
            match self.drain().await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("event sequencer: the database answers again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "event sequencer: numbering events failed; retrying");
                }
                Err(_) => {}
            }
            if counted.elapsed() >= self.poll {
                counted = tokio::time::Instant::now();
                self.count_queue().await;
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(GATHER) => {}
                    }
                }
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
        if let Err(e) = self.drain().await {
            tracing::debug!(error = %e, "event sequencer: last round at shutdown failed");
        }
    }
}
