//! radacctd: a RADIUS accounting daemon for ISPs running PPPoE with FreeRADIUS.
//!
//! # Layout
//! - [`radius`]: the packet codec (pure), dictionary, client table, accounting semantics of a
//!   packet, the UDP listener and the reply cache.
//! - [`ingest`]: the bounded queue and the single group-commit writer; row semantics.
//! - [`sessions`]: the live index of open sessions and the radacct row model (no I/O).
//! - [`store`]: all SQL, PostgreSQL and SQLite behind one interface.
//! - [`api`]: the Sessions API (axum): auth, scope, list/count/get/export, rate limit.
//! - [`disconnect`]: RFC 5176 Disconnect-Request client, RouterOS API fallback, `Disconnector`.
//! - [`config`], [`metrics`], and [`app`], the composition root that wires them.

pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod disconnect;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod net;
pub mod queue;
pub mod radius;
pub mod sessions;
pub mod store;
pub mod systemd;
