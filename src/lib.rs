//! radacctd: a RADIUS accounting daemon for ISPs running PPPoE with FreeRADIUS.
//!
//! # Layout
//! - [`radius`]: the packet codec (pure), dictionary, client table, accounting semantics of a
//!   packet, the UDP listener and the reply cache.
//! - [`queue`]: the bounded ingest queue and what travels on it (types only).
//! - [`ingest`]: the single group-commit writer, the journal, row semantics.
//! - [`sessions`]: the live index of open sessions and the radacct row model (no I/O).
//! - [`store`]: all SQL, PostgreSQL and SQLite behind one interface.
//! - [`api`]: the Sessions API (axum): auth, scope, list/count/get/export, attribution, rate
//!   limit.
//! - [`disconnect`]: RFC 5176 Disconnect-Request client, RouterOS API fallback, `Disconnector`.
//! - [`events`]: session events as the outbox holds them and the wire carries them (pure).
//! - [`stream`]: the events' sequencer, the Server-Sent Events hub and the webhooks.
//! - [`usage`]: the usage ledger's arithmetic, its calendar and the fair-use policies (pure).
//! - [`fairuse`]: fair-use throttling through session control: crossings, starts while over,
//!   the period reset.
//! - [`jobs`]: the stale sweeper, the archiver, EnsureIndexes, the reconciliation with the
//!   routers' `/ppp/active`.
//! - [`nas`]: how each NAS is doing (packets, cadence, secrets, CoA round trips, API reach,
//!   the last reconciliation with its router) and the pure router-vs-index comparison.
//! - [`metrics`]: metric names, the per-instance `Stats`, the `/metrics` server.
//! - [`config`]; the leaves [`node`] (this daemon's name and standing among several),
//!   [`clock`] (one `now_secs`), [`net`] (addresses, CIDR blocks and the
//!   table keyed by them), [`http`] (an HTTP listener with connection limits), [`systemd`].
//! - [`app`], the composition root that wires them, and [`cli`], the one-shot commands.
//! - `module_graph` (test code only): the check that the dependencies below point one way.
//!
//! Dependencies point one way, from the top of this list to the bottom; a module uses only
//! those below it:
//!
//! ```text
//! cli → app → api → stream → jobs → fairuse → disconnect → ingest → radius::listener → queue
//!   → radius::{reply, accounting, clients} → radius::{codec, dictionary}
//!   → nas → store → usage → sessions → metrics → config → events, node, http, net, clock, systemd
//! ```
//!
//! `radius` counts as its parts (the queue carries `radius::accounting`'s events and the
//! listener feeds the queue). Components own their counters and register them with
//! `metrics::Stats`, so `metrics` names none of them. `module_graph`'s test fails on a cycle.
//!
//! How the parts work together (a packet's way, invariants, tasks, the write path and the
//! journal): docs/ARCHITECTURE.md.

pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod disconnect;
pub mod events;
pub mod fairuse;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod metrics;
#[cfg(test)]
mod module_graph;
pub mod nas;
pub mod net;
pub mod node;
pub mod queue;
pub mod radius;
pub mod sessions;
pub mod store;
pub mod stream;
pub mod systemd;
pub mod usage;
