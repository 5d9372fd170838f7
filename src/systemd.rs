//! systemd integration (`Type=notify`, `WatchdogSec=`): state notifications and the watchdog
//! ping. Every call is a no-op when systemd did not start us (`NOTIFY_SOCKET` unset).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use sd_notify::NotifyState;

/// Tells systemd about a state change.
pub fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// `WATCHDOG=1` at half the watchdog interval while `alive` (the ingest writer runs) — also
/// while the database is down (a locked table must not make systemd kill us in a loop).
/// Returns at once when the watchdog is not enabled.
pub async fn watchdog(alive: Arc<AtomicBool>, cancel: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if alive.load(Ordering::Relaxed) {
            notify(&[NotifyState::Watchdog]);
        }
    }
}
