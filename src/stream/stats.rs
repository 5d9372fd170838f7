//! The session events' counters (docs/EVENTS.md#metrics): one set per application, shared by
//! the sequencer, the hub and the streams, and copied into `/metrics` at each scrape (the
//! retention job counts in `jobs::events::RetentionStats`). Only atomics: nothing here waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::metrics::{
    Collect, EVENTS_BACKFILL_READS, EVENTS_LAST_ID, EVENTS_QUEUED, EVENTS_SSE_CLIENTS,
    EVENTS_SSE_ENDED, Exposition, Stats, label,
};

/// Why an event stream ended (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The client fell more than `events.client_buffer` events behind: disconnected.
    Slow,
    /// The client went away, a read of the outbox failed, or the node stops.
    Closed,
}

impl EndReason {
    pub const ALL: [EndReason; 2] = [EndReason::Slow, EndReason::Closed];

    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Slow => "slow",
            EndReason::Closed => "closed",
        }
    }
}

/// The counters.
#[derive(Debug, Default)]
pub struct EventStats {
    /// The last id the hub has read (0 before it read the outbox).
    pub last_id: AtomicI64,
    /// Queue rows waiting to be numbered, at the sequencer's last count.
    pub queued: AtomicI64,
    /// Streams open now.
    pub clients: AtomicU64,
    ended: [AtomicU64; EndReason::ALL.len()],
    /// Pages read from the database for streams' backfills.
    pub backfill_reads: AtomicU64,
}

impl EventStats {
    /// The counters in `stats` (registered on first use).
    pub fn of(stats: &Stats) -> Arc<EventStats> {
        stats.component("events", EventStats::default)
    }

    pub fn ended(&self, reason: EndReason) {
        self.ended[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Streams ended for `reason` so far.
    pub fn ended_count(&self, reason: EndReason) -> u64 {
        self.ended[reason as usize].load(Ordering::Relaxed)
    }
}

impl Collect for EventStats {
    fn collect(&self, out: &Exposition<'_>) {
        out.gauge(
            EVENTS_LAST_ID,
            vec![],
            self.last_id.load(Ordering::Relaxed) as f64,
        );
        out.gauge(
            EVENTS_QUEUED,
            vec![],
            self.queued.load(Ordering::Relaxed) as f64,
        );
        out.gauge(
            EVENTS_SSE_CLIENTS,
            vec![],
            self.clients.load(Ordering::Relaxed) as f64,
        );
        for r in EndReason::ALL {
            out.counter(
                EVENTS_SSE_ENDED,
                vec![label("reason", r.as_str())],
                self.ended_count(r),
            );
        }
        out.counter(
            EVENTS_BACKFILL_READS,
            vec![],
            self.backfill_reads.load(Ordering::Relaxed),
        );
    }
}
