//! What `/metrics` reads from the running application at each scrape.

use std::sync::Arc;
use std::time::Duration;

use super::ingest_runtime::BusyMeter;
use crate::ingest;
use crate::metrics::server::LiveSource;
use crate::metrics::{Live, LiveJournal};
use crate::queue::IngestSender;
use crate::sessions::SessionIndex;
use crate::store::Store;

/// What `/metrics` reads from the application at scrape time.
pub(super) struct AppLive {
    pub(super) index: Arc<SessionIndex>,
    pub(super) queue: IngestSender,
    pub(super) journal: Option<ingest::SharedJournal>,
    pub(super) store: Store,
    pub(super) index_rebuild: Duration,
    /// The ingest thread, when it has a runtime of its own.
    pub(super) ingest: Option<BusyMeter>,
}

impl LiveSource for AppLive {
    fn live(&self) -> Live {
        let counts = self.index.counts();
        let mut by_nas: Vec<(String, i64)> = counts.per_nas.into_iter().collect();
        by_nas.sort();
        let journal = self.journal.as_ref().map(|j| {
            let mut j = ingest::writer_lock(j);
            let health = j.health();
            LiveJournal {
                entries: j.pending(),
                bytes: j.bytes(),
                oldest_age: j.oldest_age(crate::clock::now_secs()),
                corrupt_regions: health.corrupt_regions,
                corrupt_bytes: health.corrupt_bytes,
                rejected: health.rejected,
                rejected_entries: health.rejected_entries,
            }
        });
        Live {
            active_sessions: counts.total,
            active_by_nas: by_nas,
            queue_depth: self.queue.max_capacity() - self.queue.capacity(),
            journal,
            pool: self.store.pool_stats(),
            index_rebuild: self.index_rebuild,
            ingest_busy: self.ingest.as_ref().map(BusyMeter::busy),
        }
    }
}
