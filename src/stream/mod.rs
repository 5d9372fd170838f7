//! The session events' way out (docs/EVENTS.md): the [`sequencer`] that numbers what the
//! writers appended to the outbox, and the readers of what it numbered.

pub mod sequencer;
pub mod webhooks;

pub use sequencer::{Numbered, Sequencer};
pub use webhooks::Webhooks;
