//! Webhooks (docs/WEBHOOKS.md): the numbered events POSTed in signed JSON batches to each
//! `[[events.webhooks]]` endpoint, in id order, at least once. Each endpoint has a task of its
//! own, on the jobs leader only (one node delivers, whichever leads), and a cursor in
//! `webhook_cursors`: the last id it acknowledged with a 2xx. A failing endpoint gets the same
//! batch again after an exponential, fully jittered pause, for as long as it takes; it never
//! skips an event, and it slows nothing else: the tasks only read `events`, so ingest and the
//! other endpoints do not wait for it.
//!
//! - `signature`: the signature (pure) and [`verify`], the receiver's check.
//! - `batch`: the reading of `events` into batches (filtered by type).
//! - `client`: the HTTP/1.1 client, one connection per endpoint.
//! - `stats`: the per-endpoint metrics.

mod batch;
mod client;
mod signature;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::batch::{Batch, Reader};
pub use self::client::Failure;
use self::client::{Client, Post};
pub use self::signature::{
    DEFAULT_TOLERANCE, EVENT_IDS_HEADER, SCHEME, SIGNATURE_HEADER, Signer, TIMESTAMP_HEADER,
    VerifyError, verify,
};
pub use self::stats::{EndpointStats, OUTCOMES, WebhookStats};
use crate::config::{EventsConfig, WebhookConfig};
use crate::events::StoredEvent;
use crate::metrics::Stats;
use crate::store::{Store, StoreError};
use crate::stream::Numbered;

/// A filtered endpoint reads `events` in pages of at least this many, so that one wanting a
/// rare type moves through the others in few queries.
const SCAN_PAGE: usize = 1_000;

/// How often an idle endpoint looks at `events` even without news of a new id (a safety net:
/// the sequencer's [`Numbered`] normally wakes it).
const RECHECK: Duration = Duration::from_secs(5);

/// The delivery to every configured endpoint.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    endpoints: Vec<Endpoint>,
}

impl Webhooks {
    /// The endpoints of `config`, reading from `store` and woken by `numbered`; their metrics
    /// are registered with `stats`. Fails on an endpoint that cannot be used (a URL the client
    /// cannot parse, an `https` URL whose CA bundle cannot be read).
    pub fn new(
        config: &EventsConfig,
        store: &Store,
        numbered: &Numbered,
        stats: &Stats,
    ) -> Result<Webhooks, String> {
        let names: Vec<&str> = config.webhooks.iter().map(|w| w.name.as_str()).collect();
        let all = stats.component("webhooks", || WebhookStats::new(&names, numbered.clone()));
        let endpoints = config
            .webhooks
            .iter()
            .map(|w| {
                let stats = all
                    .endpoint(&w.name)
                    .ok_or_else(|| format!("events.webhooks {:?}: no metrics", w.name))?;
                Endpoint::new(w, store.clone(), numbered.clone(), stats)
                    .map_err(|e| format!("events.webhooks {:?}: {e}", w.name))
            })
            .collect::<Result<_, String>>()?;
        Ok(Webhooks { endpoints })
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Starts one delivery task per endpoint on `tasks`; they stop when `stop` is cancelled
    /// (the leadership term ends, or the daemon stops). A POST in flight then is abandoned:
    /// its batch is sent again by whoever delivers next.
    pub fn spawn(&self, tasks: &TaskTracker, stop: &CancellationToken) {
        for e in &self.endpoints {
            tasks.spawn(e.clone().run(stop.clone()));
        }
    }
}

/// One endpoint: what its task needs.
#[derive(Debug, Clone)]
struct Endpoint {
    inner: Arc<EndpointInner>,
}

#[derive(Debug)]
struct EndpointInner {
    name: String,
    /// Event types delivered; empty: all.
    types: Vec<String>,
    batch_size: usize,
    max_backoff: Duration,
    signer: Signer,
    /// The client as configured; each task run uses its own connection.
    client: Client,
    store: Store,
    numbered: Numbered,
    stats: Arc<EndpointStats>,
}

/// What start-up checks of an endpoint beyond its configuration's syntax: that its secret keys
/// HMAC-SHA256 and, for an `https` URL, that its CA bundle reads. `radacctd check-config` runs it
/// so that a configuration it accepts does not then fail at start-up.
pub fn check(config: &WebhookConfig) -> Result<(), String> {
    signer_and_client(config).map(|_| ())
}

/// The endpoint's signer and client, as start-up builds them (and [`check`] tries).
fn signer_and_client(config: &WebhookConfig) -> Result<(Signer, Client), String> {
    let signer = Signer::new(config.secret.expose().as_bytes())
        .ok_or_else(|| "the secret cannot key HMAC-SHA256".to_owned())?;
    Ok((signer, Client::new(config)?))
}

impl Endpoint {
    fn new(
        config: &WebhookConfig,
        store: Store,
        numbered: Numbered,
        stats: Arc<EndpointStats>,
    ) -> Result<Endpoint, String> {
        let (signer, client) = signer_and_client(config)?;
        Ok(Endpoint {
            inner: Arc::new(EndpointInner {
                name: config.name.clone(),
                types: config.types.clone(),
                batch_size: config.batch_size.max(1),
                max_backoff: Duration::from_secs(config.max_backoff_secs.max(1)),
                signer,
                client,
                store,
                numbered,
                stats,
            }),
        })
    }

    fn name(&self) -> &str {
        &self.inner.name
    }

    /// Delivers until `stop`.
    async fn run(self, stop: CancellationToken) {
        let stats = self.inner.stats.clone();
        stats.set_delivering(true);
        if let Some(cursor) = self.start(&stop).await {
            stats.set_cursor(cursor);
            self.deliver_from(cursor, &stop).await;
        }
        stats.set_delivering(false);
    }

    /// The cursor to start from (retrying while the database fails); `None`: stopped first.
    async fn start(&self, stop: &CancellationToken) -> Option<i64> {
        let mut trouble = Trouble::new(self.inner.max_backoff);
        loop {
            match self.load_cursor().await {
                Ok(cursor) => return Some(cursor),
                Err(e) => {
                    let wait = trouble.failed();
                    if trouble.failures == 1 {
                        tracing::warn!(endpoint = self.name(), error = %e, "webhook: cannot read the cursor; retrying");
                    }
                    if !pause(wait, stop).await {
                        return None;
                    }
                }
            }
        }
    }

    /// The stored cursor; an endpoint without one starts after the newest event (it gets the
    /// events numbered from now on), and that is stored at once, so a restart before its first
    /// delivery does not skip what came meanwhile.
    async fn load_cursor(&self) -> Result<i64, StoreError> {
        let store = &self.inner.store;
        if let Some(cursor) = store.webhook_cursor(self.name()).await? {
            return Ok(cursor);
        }
        let (_, last) = store.event_bounds().await?;
        store
            .set_webhook_cursor(self.name(), last, crate::clock::now_secs())
            .await?;
        tracing::info!(
            endpoint = self.name(),
            after = last,
            "webhook: a new endpoint; delivering the events numbered from now on"
        );
        Ok(last)
    }

    /// Reads, POSTs and moves the cursor, batch after batch, until `stop`.
    async fn deliver_from(&self, mut cursor: i64, stop: &CancellationToken) {
        let stats = &self.inner.stats;
        let inner = &self.inner;
        let mut client = inner.client.unconnected();
        let mut reader = Reader::new(
            self.name(),
            inner.types.clone(),
            inner.batch_size,
            SCAN_PAGE,
            cursor,
        );
        let mut reads = Trouble::new(inner.max_backoff);
        loop {
            // What this node knew before the read: if the read finds nothing newer, wait for
            // more than this.
            let seen = *self.inner.numbered.borrow();
            let batch = match reader.next(&inner.store).await {
                Ok(b) => {
                    if reads.recovered() > 0 {
                        tracing::info!(endpoint = self.name(), "webhook: reading events again");
                    }
                    b
                }
                Err(e) => {
                    let wait = reads.failed();
                    if reads.failures == 1 {
                        tracing::warn!(endpoint = self.name(), error = %e, "webhook: cannot read events; retrying");
                    }
                    if !pause(wait, stop).await {
                        return;
                    }
                    continue;
                }
            };
            let Some(first) = batch.events.first() else {
                if batch.through > cursor {
                    cursor = batch.through;
                    self.save_cursor(cursor).await;
                }
                stats.set_pending(None);
                if !self.wait_for_events(seen.max(cursor), stop).await {
                    return;
                }
                continue;
            };
            stats.set_pending(Some(first.created));
            if !self
                .post_until_acknowledged(&mut client, &batch, stop)
                .await
            {
                return;
            }
            cursor = batch.through;
            self.save_cursor(cursor).await;
            stats.set_pending(None);
        }
    }

    /// Until this node learns of an id above `known`, or [`RECHECK`]; false when stopped.
    async fn wait_for_events(&self, known: i64, stop: &CancellationToken) -> bool {
        let mut numbered = self.inner.numbered.clone();
        let newer = async move { numbered.wait_for(|last| *last > known).await.is_ok() };
        tokio::select! {
            _ = stop.cancelled() => false,
            alive = newer => match alive {
                true => true,
                // The sequencer is gone (the daemon stops): only the recheck is left.
                false => pause(RECHECK, stop).await,
            },
            _ = tokio::time::sleep(RECHECK) => true,
        }
    }

    /// POSTs `batch` until a 2xx (true) or `stop` (false). Each try is signed afresh (a new
    /// timestamp) over the same body: the same events, in the same order.
    async fn post_until_acknowledged(
        &self,
        client: &mut Client,
        batch: &Batch,
        stop: &CancellationToken,
    ) -> bool {
        let inner = &self.inner;
        let body = batch_body(self.name(), &batch.events);
        let ids = match (batch.events.first(), batch.events.last()) {
            (Some(a), Some(b)) => format!("{}-{}", a.id, b.id),
            _ => return true,
        };
        let mut trouble = Trouble::new(inner.max_backoff);
        loop {
            let timestamp = crate::clock::now_secs();
            let post = Post {
                headers: vec![
                    (TIMESTAMP_HEADER, timestamp.to_string()),
                    (SIGNATURE_HEADER, inner.signer.sign(timestamp, &body)),
                    (EVENT_IDS_HEADER, ids.clone()),
                ],
                body: body.clone(),
            };
            let result = tokio::select! {
                _ = stop.cancelled() => return false,
                r = client.post(&post) => r,
            };
            match result {
                Ok(_) => {
                    inner.stats.delivered("ok");
                    let failures = trouble.recovered();
                    if failures > 0 {
                        tracing::info!(endpoint = self.name(), failures, events = %ids, "webhook: the endpoint accepts batches again");
                    }
                    return true;
                }
                Err(f) => {
                    inner.stats.delivered(f.outcome());
                    let wait = trouble.failed();
                    if trouble.failures == 1 {
                        tracing::warn!(endpoint = self.name(), events = %ids, error = %f, retry_in = ?wait, "webhook: delivery failed; retrying the same batch until it is accepted");
                    } else {
                        tracing::debug!(endpoint = self.name(), events = %ids, error = %f, failures = trouble.failures, retry_in = ?wait, "webhook: delivery failed again");
                    }
                    if !pause(wait, stop).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Records the cursor. A write that fails is said and left to the next one: the worst it
    /// costs is a batch delivered twice after a restart.
    async fn save_cursor(&self, cursor: i64) {
        let inner = &self.inner;
        inner.stats.set_cursor(cursor);
        if let Err(e) = inner
            .store
            .set_webhook_cursor(self.name(), cursor, crate::clock::now_secs())
            .await
        {
            tracing::warn!(endpoint = self.name(), cursor, error = %e, "webhook: cannot record the cursor");
        }
    }
}

/// The POST body: `{"endpoint": <name>, "events": [<event>, …]}`, each event as
/// [`StoredEvent::to_json`] gives it.
fn batch_body(endpoint: &str, events: &[StoredEvent]) -> Bytes {
    let mut s = String::with_capacity(64 + events.len() * 320);
    s.push_str(r#"{"endpoint":"#);
    s.push_str(&serde_json::Value::from(endpoint).to_string());
    s.push_str(r#","events":["#);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&e.to_json());
    }
    s.push_str("]}");
    Bytes::from(s)
}

/// Consecutive failures of one step, for its backoff and so that only the first is a warning.
#[derive(Debug)]
struct Trouble {
    failures: u32,
    max: Duration,
}

impl Trouble {
    fn new(max: Duration) -> Trouble {
        Trouble { failures: 0, max }
    }

    /// One more failure: how long to wait before the next try.
    fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        // Without randomness the middle of the range still spreads retries out.
        let random = getrandom::u64().unwrap_or(u64::MAX / 2);
        backoff(self.failures, self.max, random)
    }

    /// A success: how many failures it ends.
    fn recovered(&mut self) -> u32 {
        std::mem::take(&mut self.failures)
    }
}

/// The pause after the `failures`-th failure in a row: "full jitter", uniform between 0 and
/// a cap that starts at 1 s and doubles with each failure up to `max`. Full jitter keeps many
/// radacctd nodes (or endpoints) that failed together from retrying together.
fn backoff(failures: u32, max: Duration, random: u64) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    let cap = Duration::from_secs(1u64 << doublings).min(max);
    let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX - 1);
    Duration::from_millis(random % (ms + 1))
}

/// Sleeps `wait` unless `stop` comes first (false).
async fn pause(wait: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_a_second_up_to_the_maximum_with_full_jitter() {
        let max = Duration::from_secs(300);
        let top = u64::MAX;
        let caps: Vec<u64> = (1..=11)
            .map(|n| backoff(n, max, top).as_millis() as u64)
            .collect();
        // `u64::MAX % (ms + 1)` is not ms itself; the cap is what a random value just under a
        // multiple of ms + 1 gives.
        let cap = |n: u32| {
            let ms = Duration::from_secs(1u64 << (n - 1)).min(max).as_millis() as u64;
            backoff(n, max, ms)
        };
        assert_eq!(cap(1), Duration::from_secs(1));
        assert_eq!(cap(2), Duration::from_secs(2));
        assert_eq!(cap(5), Duration::from_secs(16));
        assert_eq!(cap(9), Duration::from_secs(256));
        assert_eq!(cap(10), Duration::from_secs(300));
        assert_eq!(cap(64), Duration::from_secs(300));
        assert!(caps.iter().all(|ms| *ms <= 300_000));
        // Full jitter: anything from nothing up to the cap.
        assert_eq!(backoff(3, max, 0), Duration::ZERO);
        assert_eq!(backoff(3, max, 4_001), Duration::ZERO);
        assert_eq!(backoff(3, max, 4_002), Duration::from_millis(1));
        assert_eq!(
            backoff(1, Duration::from_secs(1), 1_000),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn the_body_is_the_endpoint_and_the_events_in_order() {
        let event = |id: i64| StoredEvent {
            id,
            kind: "session.started".into(),
            time: 1_700_000_000,
            username: "alice".into(),
            nasipaddress: "10.0.0.1".into(),
            acctuniqueid: format!("k{id}"),
            radacctid: Some(id),
            data: "{}".into(),
            created: 1_700_000_001,
        };
        let body = batch_body("bill\"ing", &[event(7), event(8)]);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["endpoint"], "bill\"ing");
        let ids: Vec<i64> = v["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["id"].as_i64().expect("id"))
            .collect();
        assert_eq!(ids, vec![7, 8]);
        assert_eq!(v["events"][0]["acctuniqueid"], "k7");
    }
}
