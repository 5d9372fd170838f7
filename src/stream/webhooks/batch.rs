//! An endpoint's reading of `events`: pages read ahead after its cursor, the events of its
//! types kept in order, and batches taken from the front. The cursor a batch moves to passes
//! the events of other types too, so a filtered endpoint moves through the table once.

use std::collections::VecDeque;

use crate::events::StoredEvent;
use crate::store::{Store, StoreError};

/// The events of one POST, and the id through which the cursor moves once they are
/// acknowledged (past the skipped events of other types too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub events: Vec<StoredEvent>,
    pub through: i64,
}

/// What an endpoint has read and not yet delivered.
#[derive(Debug)]
pub struct Reader {
    /// The endpoint's name, for the log.
    endpoint: String,
    /// Event types delivered; empty: all.
    types: Vec<String>,
    batch_size: usize,
    /// Events per read of `events`.
    page: usize,
    /// The wanted events read and not yet in a batch, in id order.
    ahead: VecDeque<StoredEvent>,
    /// Every event up to this id is in `ahead`, in a batch taken, or not wanted.
    read_through: i64,
}

impl Reader {
    /// A reader starting after `cursor`. A filtered endpoint reads pages of at least `scan`
    /// events, so that one wanting a rare type moves through the others in few queries.
    pub fn new(
        endpoint: &str,
        types: Vec<String>,
        batch_size: usize,
        scan: usize,
        cursor: i64,
    ) -> Reader {
        let batch_size = batch_size.max(1);
        Reader {
            endpoint: endpoint.to_owned(),
            page: match types.is_empty() {
                true => batch_size,
                false => batch_size.max(scan),
            },
            types,
            batch_size,
            ahead: VecDeque::new(),
            read_through: cursor,
        }
    }

    /// The next batch: reads from `store` until a batch is full or nothing more is numbered.
    /// An empty batch means caught up (its `through` is the last id read).
    pub async fn next(&mut self, store: &Store) -> Result<Batch, StoreError> {
        let mut more = true;
        while more && self.ahead.len() < self.batch_size {
            let page = store
                .events_after(self.read_through, self.page as i64)
                .await?;
            more = self.add(page);
        }
        Ok(self.take())
    }

    /// Takes one page read after `read_through`; whether it was full (there may be more).
    fn add(&mut self, page: Vec<StoredEvent>) -> bool {
        let full = page.len() >= self.page;
        for e in page {
            self.note_gap(e.id);
            self.read_through = e.id;
            if self.wants(&e) {
                self.ahead.push_back(e);
            }
        }
        full
    }

    /// Up to `batch_size` events from the front; the cursor after them is the last one's id
    /// while more wanted events wait, else everything read.
    fn take(&mut self) -> Batch {
        let n = self.ahead.len().min(self.batch_size);
        let events: Vec<StoredEvent> = self.ahead.drain(..n).collect();
        let through = match (self.ahead.is_empty(), events.last()) {
            (false, Some(last)) => last.id,
            _ => self.read_through,
        };
        Batch { events, through }
    }

    /// Ids have no gaps; one here means retention deleted events before they were delivered
    /// (the endpoint was failing for longer than `events.retention_days`, or behind by more
    /// than `events.max_events`). Said, since it is a loss.
    fn note_gap(&self, id: i64) {
        if id > self.read_through + 1 {
            tracing::warn!(
                endpoint = %self.endpoint,
                first = self.read_through + 1,
                last = id - 1,
                "webhook: events were deleted by retention before they were delivered"
            );
        }
    }

    fn wants(&self, e: &StoredEvent) -> bool {
        self.types.is_empty() || self.types.contains(&e.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, kind: &str) -> StoredEvent {
        StoredEvent {
            id,
            kind: kind.into(),
            time: 0,
            username: String::new(),
            nasipaddress: String::new(),
            acctuniqueid: String::new(),
            radacctid: None,
            data: "{}".into(),
            created: 0,
        }
    }

    fn ids(b: &Batch) -> Vec<i64> {
        b.events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn batches_pass_over_other_types_and_stop_at_their_last_event_while_more_wait() {
        let mut r = Reader::new("test", vec!["nas.rebooted".into()], 2, 6, 10);
        assert_eq!(r.page, 6);
        let page = [
            (11, "nas.rebooted"),
            (12, "nas.rebooted"),
            (13, "session.started"),
            (14, "nas.rebooted"),
            (15, "nas.rebooted"),
            (16, "nas.rebooted"),
        ];
        assert!(
            r.add(page.iter().map(|(id, k)| event(*id, k)).collect()),
            "a full page"
        );
        let b = r.take();
        assert_eq!((ids(&b), b.through), (vec![11, 12], 12));
        let b = r.take();
        assert_eq!((ids(&b), b.through), (vec![14, 15], 15));
        let b = r.take();
        assert_eq!((ids(&b), b.through), (vec![16], 16));
        let b = r.take();
        assert_eq!((ids(&b), b.through), (vec![], 16));
    }

    #[test]
    fn skipped_events_at_the_end_move_the_cursor_past_them() {
        let mut r = Reader::new("test", vec!["session.stopped".into()], 10, 100, 0);
        let full = r.add(vec![
            event(1, "session.stopped"),
            event(2, "session.started"),
            event(3, "session.started"),
        ]);
        assert!(!full, "a short page: caught up");
        let b = r.take();
        assert_eq!((ids(&b), b.through), (vec![1], 3));
        r.add(vec![event(4, "session.started")]);
        assert_eq!(
            r.take(),
            Batch {
                events: vec![],
                through: 4
            }
        );
    }

    #[test]
    fn an_unfiltered_endpoint_reads_a_batch_per_page() {
        let mut r = Reader::new("test", vec![], 3, 1_000, 0);
        assert_eq!(r.page, 3);
        r.add((1..4).map(|id| event(id, "session.started")).collect());
        let b = r.take();
        assert_eq!((ids(&b), b.through), (vec![1, 2, 3], 3));
    }
}
