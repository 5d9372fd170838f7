//! Whether the NAS confirmed a disconnect with its own Accounting Stop
//! (`POST /api/sessions/{radacctid}/disconnect?wait=N`, docs/ARCHITECTURE.md#disconnect): the
//! session's row is read by its key every [`POLL_EVERY`] until it holds a Stop or the wait is
//! over. It reads the database, not the index, so a Stop that reached another node sharing
//! the database counts too. It never writes.
//!
//! The marker is `connectinfo_stop IS NOT NULL`, which holds for exactly the rows whose NAS
//! sent a Stop:
//! - every Stop for an existing row sets it (`ingest::semantics::stop`:
//!   `Some(ev.connectinfo)`, an empty string when the packet had no Connect-Info), and so does
//!   FreeRADIUS's own stop query (`'%{Connect-Info}'`) on a shared database;
//! - radacctd's own closes never touch it: `semantics::close` (the disconnect's close and the
//!   stale sweeper's) and the Accounting-On/Off bulk close (`Dialect::close_nas`);
//! - the Interim-Update that reopens a row the sweeper closed clears it;
//! - a Stop that creates its row (no Start or Interim before) leaves it NULL
//!   (`semantics::new_row`), but a disconnected session always had its row already.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::store::Store;

/// How often the row is read while waiting.
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// The longest one read may take past the end of the wait (a read never stops short of this,
/// so that a wait of 0 still reads the row once).
const READ_LIMIT: Duration = Duration::from_secs(1);

/// Waits up to `wait` for the row with key `acctuniqueid` to hold its NAS's Accounting Stop
/// (see the module documentation); true as soon as it does. The row is read at once, then
/// every [`POLL_EVERY`]; a failed read is logged and the next one tried. False when the wait
/// ended first.
pub async fn wait_for_nas_stop(store: &Store, acctuniqueid: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let limit = deadline.max(Instant::now() + READ_LIMIT);
        match tokio::time::timeout_at(limit, store.nas_stop_recorded(acctuniqueid)).await {
            Ok(Ok(Some(true))) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(acctuniqueid, error = %e, "reading the row for the NAS's Stop")
            }
            Err(_) => tracing::debug!(acctuniqueid, "reading the row for the NAS's Stop timed out"),
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}
