//! Index coherence across nodes (docs/HA.md#index-coherence): listens for the change
//! notifications PostgreSQL sends when any writer commits radacct changes (migration 0003's
//! trigger), and has the writer re-read the rows other writers changed, so that this node's
//! live index equals SQL within a second of another node's commit.
//!
//! The order that makes it safe: LISTEN first, then a full reconciliation (at start-up: the
//! index's load), and only then is the index called coherent; anything committed between the
//! two is seen by the reconciliation or notified after it. A lost listening connection (database restart, failover, a killed
//! backend, a silent network) may have missed notifications: the node is not coherent
//! (`/readyz` 503) until it listens again and has reconciled again.
//!
//! Notified ids are collected for [`COALESCE`] and sent to the writer as one
//! [`Reconcile::Rows`] on a channel of their own, which the writer takes ahead of its queue
//! (so a long queue does not delay coherence); it applies them once its commits in flight have
//! landed, so no commit of this node races the re-read.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ChangesSender;
use crate::node::Node;
use crate::queue::{IngestSender, Item, Reconcile};
use crate::store::{ChangeListener, ChangeNotice, Store};

/// How long notified ids are collected before the writer re-reads them.
pub const COALESCE: Duration = Duration::from_millis(20);

/// Most ids in one re-read.
const MAX_IDS: usize = 4096;

/// With no notification for this long, the listening connection is checked with a round trip.
const PING_EVERY: Duration = Duration::from_secs(5);

/// A round trip on the listening connection that takes longer means the connection is gone.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait between two attempts to listen again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How the listening went.
enum Ended {
    Cancelled,
    /// The connection was lost (or never made): listen again.
    Lost(String),
}

/// The change listener of one node.
#[derive(Debug)]
pub struct ChangeFeed {
    store: Store,
    /// Its origin in notifications ([`Node::origin`]) marks this process's own changes, which
    /// are skipped.
    node: Arc<Node>,
    ingest: IngestSender,
    /// Re-reads go to the writer here, ahead of its queue.
    rows: ChangesSender,
    /// A listener opened before the index was loaded: followed first, with no
    /// reconciliation (the load saw everything committed before it listened).
    listening: Option<ChangeListener>,
}

impl ChangeFeed {
    pub fn new(
        store: Store,
        node: Arc<Node>,
        ingest: IngestSender,
        rows: ChangesSender,
        listening: Option<ChangeListener>,
    ) -> Self {
        ChangeFeed {
            store,
            node,
            ingest,
            rows,
            listening,
        }
    }

    /// Listens until cancelled, reconnecting and reconciling after every loss. Does nothing on
    /// a store without notifications (SQLite).
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut first = self.listening.take();
        if first.is_none() && self.store.concurrent_writes() {
            // The index was loaded without listening first: another node's commit may have
            // gone unseen, so not coherent until the first reconciliation after listening.
            self.node.set_coherent(false);
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let ended = match first.take() {
                Some(mut listener) => self.follow(&mut listener, &cancel).await,
                None => self.listen_once(&cancel, &mut backoff).await,
            };
            self.node.set_coherent(false);
            match ended {
                Ended::Cancelled => return,
                Ended::Lost(why) => {
                    tracing::warn!(
                        node = self.node.name(),
                        reason = %why,
                        retry_in = ?backoff,
                        "change listener lost: the index may miss other writers' changes until it listens and reconciles again"
                    );
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection's life: listen, reconcile, then apply notifications until it is lost.
    async fn listen_once(&self, cancel: &CancellationToken, backoff: &mut Duration) -> Ended {
        let mut listener = tokio::select! {
            _ = cancel.cancelled() => return Ended::Cancelled,
            l = self.store.listen_changes() => match l {
                Ok(Some(l)) => l,
                Ok(None) => {
                    // Nothing else writes this store: the index is coherent by construction.
                    cancel.cancelled().await;
                    return Ended::Cancelled;
                }
                Err(e) => return Ended::Lost(format!("listening: {e}")),
            },
        };
        match self.reconcile(cancel).await {
            Some(()) => {}
            None => return Ended::Cancelled,
        }
        self.node.set_coherent(true);
        *backoff = Duration::from_millis(100);
        tracing::info!(
            node = self.node.name(),
            "change listener connected; index reconciled with SQL"
        );
        self.follow(&mut listener, cancel).await
    }

    /// A full reconciliation through the writer, asked again until it is done (the writer
    /// skips it while it journals). `None` when cancelled.
    async fn reconcile(&self, cancel: &CancellationToken) -> Option<()> {
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sent = tokio::select! {
                _ = cancel.cancelled() => return None,
                r = self.ingest.send(Item::Reconcile(Reconcile::Full(tx))) => r,
            };
            if sent.is_err() {
                // The writer has stopped: shutdown.
                cancel.cancelled().await;
                return None;
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                r = rx => if r.is_ok() { return Some(()) },
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Applies notifications until the connection is lost or `cancel`.
    async fn follow(&self, listener: &mut ChangeListener, cancel: &CancellationToken) -> Ended {
        let mut batch = Batch::default();
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return Ended::Cancelled,
                n = tokio::time::timeout(PING_EVERY, listener.next()) => n,
            };
            match next {
                Ok(Ok(Some(payload))) => batch.add(&payload, self.node.origin()),
                Ok(Ok(None)) => return Ended::Lost("connection closed".into()),
                Ok(Err(e)) => return Ended::Lost(e.to_string()),
                Err(_) => match tokio::time::timeout(PING_TIMEOUT, listener.ping()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => return Ended::Lost(format!("ping: {e}")),
                    Err(_) => return Ended::Lost("ping timed out".into()),
                },
            }
            if batch.ids.is_empty() {
                continue;
            }
            // Collect what the next few milliseconds bring, then one re-read.
            let until = tokio::time::Instant::now() + COALESCE;
            while batch.ids.len() < MAX_IDS {
                while let Some(payload) = listener.next_buffered() {
                    batch.add(&payload, self.node.origin());
                }
                let more = tokio::select! {
                    _ = cancel.cancelled() => return Ended::Cancelled,
                    _ = tokio::time::sleep_until(until) => break,
                    n = listener.next() => n,
                };
                match more {
                    Ok(Some(payload)) => batch.add(&payload, self.node.origin()),
                    Ok(None) => return Ended::Lost("connection closed".into()),
                    Err(e) => return Ended::Lost(e.to_string()),
                }
            }
            let (ids, since_micros) = batch.take();
            let request = Reconcile::Rows { ids, since_micros };
            if self.rows.send(request).await.is_err() {
                cancel.cancelled().await;
                return Ended::Cancelled;
            }
        }
    }
}

/// Ids collected from notifications of other origins.
#[derive(Debug, Default)]
struct Batch {
    ids: HashSet<i64>,
    /// The oldest statement time among them (µs since 1970).
    since_micros: Option<i64>,
}

impl Batch {
    /// Adds a notification's ids unless it is this process's own; malformed payloads (anyone
    /// may NOTIFY on the channel) are logged and skipped.
    fn add(&mut self, payload: &str, own_origin: &str) {
        // Most notifications a busy node reads are its own: skipped before parsing the ids.
        // (An origin holds no '|': `node.name` may not.)
        if payload
            .strip_prefix(own_origin)
            .is_some_and(|rest| rest.starts_with('|'))
        {
            return;
        }
        let Some(notice) = ChangeNotice::parse(payload) else {
            tracing::debug!(payload, "ignoring a malformed change notification");
            return;
        };
        if notice.origin == own_origin {
            return;
        }
        self.ids.extend(notice.ids);
        self.since_micros = Some(
            self.since_micros
                .map_or(notice.at_micros, |t| t.min(notice.at_micros)),
        );
    }

    fn take(&mut self) -> (Vec<i64>, i64) {
        let ids = self.ids.drain().collect();
        (ids, self.since_micros.take().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_and_malformed_notifications_are_skipped() {
        let mut b = Batch::default();
        b.add("me:1|100|1,2", "me:1");
        assert!(b.ids.is_empty());
        b.add("garbage", "me:1");
        b.add("x|notatime|1", "me:1");
        b.add("x|5|1,,2", "me:1");
        assert!(b.ids.is_empty());
        b.add("other:2|300|3,4", "me:1");
        b.add("|200|4,5", "me:1");
        let (mut ids, since) = b.take();
        ids.sort_unstable();
        assert_eq!(ids, vec![3, 4, 5]);
        assert_eq!(since, 200);
        assert!(b.ids.is_empty() && b.since_micros.is_none());
    }

    #[test]
    fn an_origin_may_contain_the_separator() {
        // The origin is whatever the other writer set; the time and ids are the last fields.
        let n = ChangeNotice::parse("a|b|42|7").expect("parsed");
        assert_eq!(n.origin, "a|b");
        assert_eq!(n.at_micros, 42);
        assert_eq!(n.ids, vec![7]);
    }
}
