//! The ingest queue: the bounded channel from the listener, the sweeper and disconnects to
//! the single writer, and what travels on it. Only the types: it knows nothing of the writer,
//! so producers depend on this module and not on `ingest`.

use crate::radius::accounting::AccountingEvent;
use crate::radius::reply::Reply;

/// One unit of work for the writer.
#[derive(Debug)]
pub enum Item {
    /// An accepted accounting event and who to answer once it is durable.
    Event {
        event: Box<AccountingEvent>,
        /// `None` for events that need no answer (tests, tools).
        reply: Option<Reply>,
    },
    /// radacctd's own decision to close a session (stale sweeper, disconnect).
    Close(CloseRequest),
    /// Re-read rows and make the index equal them (other writers exist: other radacctd nodes,
    /// FreeRADIUS for other NASes, old panel jobs). Done by the writer, between two batches, so
    /// no commit of ours can race it.
    Reconcile(Reconcile),
}

/// Which rows a reconciliation re-reads.
#[derive(Debug)]
pub enum Reconcile {
    /// Every open row; the sender is told what differed.
    Full(tokio::sync::oneshot::Sender<Drift>),
    /// The rows with these `radacctid`s, changed by another writer's committed statements,
    /// the oldest of which ran at `since_micros` (µs since 1970, the database's clock).
    Rows { ids: Vec<i64>, since_micros: i64 },
}

/// What a reconciliation found: sessions the index lacked or held wrongly (added or
/// replaced), and sessions it held that are no longer open in SQL (removed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drift {
    pub added: u64,
    pub removed: u64,
}

impl Item {
    /// The session key this item changes (`acctuniqueid`).
    pub fn key(&self) -> &str {
        match self {
            Item::Event { event, .. } => &event.acctuniqueid,
            Item::Close(c) => &c.acctuniqueid,
            Item::Reconcile(_) => "",
        }
    }
}

/// Close an open session, re-checked inside the writer's transaction so that it never
/// overrides accounting that arrived in the meantime.
#[derive(Debug)]
pub struct CloseRequest {
    pub acctuniqueid: String,
    /// The stop time; `None` means the row's last update (else its start): the last evidence
    /// that the session lived.
    pub stop_time: Option<i64>,
    pub cause: String,
    /// Close only when the row's last update (else start) is older than this (the sweeper's
    /// condition, evaluated on the row as it is when the writer gets to it).
    pub if_updated_before: Option<i64>,
    /// The action log row of the disconnect that asked for this close: written in the same
    /// transaction, its `detail` saying whether this close changed the row
    /// ([`crate::store::ActionRecord::with_row_closed`]); journaled with the close during an
    /// outage.
    pub action: Option<Box<crate::store::ActionRecord>>,
    /// Told after commit whether the row was closed by this request; dropped unanswered when
    /// the write failed.
    done: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<bool>>>,
}

impl CloseRequest {
    /// A request and the receiver of its outcome.
    pub fn new(
        acctuniqueid: String,
        stop_time: Option<i64>,
        cause: impl Into<String>,
        if_updated_before: Option<i64>,
    ) -> (CloseRequest, tokio::sync::oneshot::Receiver<bool>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            CloseRequest {
                acctuniqueid,
                stop_time,
                cause: cause.into(),
                if_updated_before,
                action: None,
                done: std::sync::Mutex::new(Some(tx)),
            },
            rx,
        )
    }

    /// This request, recording `action` with the close.
    pub fn with_action(mut self, action: Option<crate::store::ActionRecord>) -> CloseRequest {
        self.action = action.map(Box::new);
        self
    }

    /// Reports the outcome (after commit).
    pub(crate) fn answer(&self, closed: bool) {
        if let Some(tx) = self.take_done() {
            let _ = tx.send(closed);
        }
    }

    /// The write failed: the requester sees the channel closed.
    pub(crate) fn abandon(&self) {
        drop(self.take_done());
    }

    fn take_done(&self) -> Option<tokio::sync::oneshot::Sender<bool>> {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The sending half of the ingest queue.
pub type IngestSender = tokio::sync::mpsc::Sender<Item>;
/// The receiving half, owned by the writer.
pub type IngestReceiver = tokio::sync::mpsc::Receiver<Item>;

/// A bounded ingest queue of `capacity` events.
pub fn queue(capacity: usize) -> (IngestSender, IngestReceiver) {
    tokio::sync::mpsc::channel(capacity.max(1))
}
