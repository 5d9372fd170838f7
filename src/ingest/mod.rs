//! The ingest path between the listener and the store: a bounded queue and the single
//! group-commit writer (DESIGN §2 step 4). Every change to open sessions goes through the
//! writer, so SQL and the live index change in the same order.

pub mod semantics;
mod writer;

use crate::radius::accounting::AccountingEvent;
use crate::radius::reply::Reply;

pub use writer::{Writer, WriterOptions};

/// One accepted accounting event and who to answer once it is durable.
#[derive(Debug)]
pub struct Item {
    pub event: Box<AccountingEvent>,
    /// `None` for events that need no answer (tests, tools).
    pub reply: Option<Reply>,
}

/// The sending half of the ingest queue.
pub type IngestSender = tokio::sync::mpsc::Sender<Item>;
/// The receiving half, owned by the writer.
pub type IngestReceiver = tokio::sync::mpsc::Receiver<Item>;

/// A bounded ingest queue of `capacity` events.
pub fn queue(capacity: usize) -> (IngestSender, IngestReceiver) {
    tokio::sync::mpsc::channel(capacity.max(1))
}
