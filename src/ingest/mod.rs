//! The ingest path between the listener and the store: the single group-commit writer that drains
//! the bounded [`crate::queue`] (docs/ARCHITECTURE.md#write-path). Every change to open sessions
//! goes through the writer, so SQL and the live index change in the same order.

pub mod changes;
pub mod journal;
pub mod semantics;
mod writer;

pub use crate::queue::{CloseRequest, Drift, IngestReceiver, IngestSender, Item, queue};
pub use writer::replay_entry;
pub use writer::{
    ChangesReceiver, ChangesSender, EventOptions, ReplayStep, SharedJournal, Writer, WriterHealth,
    WriterOptions, apply_offline, changes_channel, replay_chunk, writer_lock,
};
