//! The session events' way out (docs/EVENTS.md): the [`sequencer`] that numbers what the
//! writers appended to the outbox, and the readers of what it numbered: the [`hub`] that tails
//! the outbox on each node and the [`feed`]s that send it to `GET /api/events` clients in the
//! [`sse`] wire format. [`stats`] holds their counters.

pub mod feed;
pub mod hub;
pub mod sequencer;
pub mod sse;
pub mod stats;
pub mod webhooks;

pub use feed::{Feed, Filter, Frames};
pub use hub::{Hub, HubOptions, Refused, Start, Subscription};
pub use sequencer::{Numbered, Sequencer};
pub use stats::{EndReason, EventStats};
pub use webhooks::Webhooks;
