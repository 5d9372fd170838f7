//! EnsureIndexes in the background: a database that was down at start-up (or a table that
//! migrations deferred to later have not created yet) gets its indexes once it is back.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// EnsureIndexes until it succeeds: a database that was down at start-up (or a table that
/// migrations deferred to later have not created yet) gets its indexes once it is back.
/// Retries back off from 1 s to 5 min; the first failure is a warning, later ones debug lines.
pub async fn ensure_indexes(store: Store, cancel: CancellationToken) {
    let mut wait = Duration::from_secs(1);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = store.ensure_indexes() => match r {
                Ok(created) if created.is_empty() => {
                    tracing::debug!("all indexes present");
                    return;
                }
                Ok(created) => {
                    tracing::info!(indexes = ?created, "EnsureIndexes created missing indexes");
                    return;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, retry_in = ?wait, "EnsureIndexes failed; queries still work, slower; retrying");
                    } else {
                        tracing::debug!(error = %e, failures, retry_in = ?wait, "EnsureIndexes failed again");
                    }
                }
            },
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(300));
    }
}
