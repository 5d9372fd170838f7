//! The integration tests, one binary: one module per area (`accounting`, `api`, `reliability`,
//! …), so a test's full path is `area::test`, and the support code in `common` is compiled once.
//!
//! Everything here shares one process, so no test may change process-wide state (environment
//! variables, signal dispositions, the current directory, a global tracing subscriber) or
//! measure it: a test that runs the daemon under a signal or samples its memory runs the real
//! binary (`CARGO_BIN_EXE_radacctd`) as a child process and looks at that process.

#[macro_use]
mod common;

mod accounting;
mod api;
mod api_actions;
mod api_coa;
mod api_disconnect;
mod api_export_memory;
mod attribution;
mod cluster;
mod cluster_disconnect;
mod codec_oracle;
mod disconnect;
mod disconnect_confirm;
mod event_writes;
mod events;
mod freeradius_harness;
mod freeradius_parity;
mod fuzz_corpus;
mod jobs;
mod leader;
mod operations;
mod reliability;
mod routers;
mod two_nodes;
mod usage;
mod webhooks;
