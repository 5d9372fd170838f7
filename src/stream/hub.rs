//! The event hub (docs/EVENTS.md#the-stream): one per node. Its task tails the outbox's
//! `events` table whenever the sequencer numbered events (this node's, or another's heard
//! through PostgreSQL's `LISTEN`), and every `events.poll_interval_ms` in any case; it keeps
//! the newest `events.client_buffer` events in memory and fans each one out, once, to every
//! stream ([`Feed`](super::Feed)). It only reads the outbox, and knows nothing of HTTP.
//!
//! Every node reads the same table, so every node serves every event, whichever node's writer
//! appended it and whichever node's sequencer numbered it.
//!
//! A stream starts from a [`Subscription`]: taken under the lock that also publishes, it holds
//! the live channel from the next event on and, for the events between the client's
//! `Last-Event-ID` and the last one published, either a copy of them from memory or the
//! bounds to read them from the database. Each event therefore reaches a stream exactly once,
//! in id order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::EventStats;
use super::sequencer::Numbered;
use super::sse;
use crate::config::EventsConfig;
use crate::events::StoredEvent;
use crate::store::{ChangeListener, Store, StoreError};

/// Events read from the outbox per query, by the hub and by a stream's backfill.
pub const PAGE: i64 = 1_000;

/// Pages read for streams' backfills at once: a reconnect storm never takes the pool's
/// connections from ingest.
const BACKFILL_READS: usize = 2;

/// How often the `LISTEN` connection is checked while it is quiet: a connection that died
/// without a word would otherwise leave the hub on its poll until the next restart.
const LISTEN_PING_EVERY: Duration = Duration::from_secs(30);
const LISTEN_PING_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed attempt to listen, the next one waits this long (the poll serves meanwhile).
const LISTEN_RETRY: Duration = Duration::from_secs(5);

/// An event as the hub holds it: the stored event and its SSE frame, built once.
#[derive(Debug)]
pub struct HubEvent {
    pub event: StoredEvent,
    pub frame: Bytes,
}

impl HubEvent {
    pub fn new(event: StoredEvent) -> HubEvent {
        HubEvent {
            frame: sse::event_frame(&event),
            event,
        }
    }
}

/// The hub's settings, from `[events]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubOptions {
    /// Events kept in memory, and how far a stream may fall behind before it is ended.
    pub buffer: usize,
    /// Streams open at once.
    pub max_clients: usize,
    /// Between two reads of the outbox when nothing woke the hub.
    pub poll: Duration,
    /// Between two heartbeats of an idle stream.
    pub heartbeat: Duration,
}

impl HubOptions {
    pub fn from_config(c: &EventsConfig) -> HubOptions {
        HubOptions {
            buffer: c.client_buffer.max(1),
            max_clients: c.max_clients.max(1),
            poll: Duration::from_millis(c.poll_interval_ms.max(1)),
            heartbeat: Duration::from_secs(c.heartbeat_secs.max(1)),
        }
    }
}

/// The newest events, with consecutive ids.
#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<HubEvent>>,
    capacity: usize,
}

impl Ring {
    fn new(capacity: usize) -> Ring {
        Ring {
            events: VecDeque::new(),
            capacity,
        }
    }

    /// Appends `e`. After a gap (events trimmed before the hub read them) the older ones are
    /// dropped: what the ring holds stays consecutive, so a position is an id.
    fn push(&mut self, e: Arc<HubEvent>) {
        if self
            .events
            .back()
            .is_some_and(|b| b.event.id + 1 != e.event.id)
        {
            self.events.clear();
        }
        self.events.push_back(e);
        while self.events.len() > self.capacity {
            self.events.pop_front();
        }
    }

    /// Every event after `from` up to the newest, when the ring holds them all.
    fn after(&self, from: i64) -> Option<Vec<Arc<HubEvent>>> {
        let front = self.events.front()?.event.id;
        if from + 1 < front {
            return None;
        }
        let skip = usize::try_from(from + 1 - front).unwrap_or(usize::MAX);
        Some(self.events.iter().skip(skip).cloned().collect())
    }
}

/// What the hub publishes under one lock.
#[derive(Debug)]
struct State {
    ring: Ring,
    /// The last id read; `None` until the hub has read the outbox once (streams are refused
    /// meanwhile: a resume could not be told from what it must skip).
    last: Option<i64>,
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next event (no `Last-Event-ID`).
    Newest,
    /// After this id (the client's `Last-Event-ID`).
    After(i64),
}

/// The events a stream sends before the live ones: those after its start up to the last one
/// published when it subscribed.
#[derive(Debug)]
pub enum Backfill {
    Nothing,
    /// From memory.
    Ring(Vec<Arc<HubEvent>>),
    /// From the database, up to this id (the ring no longer holds the first ones).
    Database {
        until: i64,
    },
}

/// Why a stream cannot start.
#[derive(Debug)]
pub enum Refused {
    /// The hub has not read the outbox yet (the database was unreachable at start-up).
    NotReady,
    /// `events.max_clients` streams are open.
    Full,
    /// The start is after the last id given (`last`): not an id of this outbox.
    Ahead { last: i64 },
    /// Checking the start against the database failed.
    Database(StoreError),
}

/// A stream's place: one of `events.max_clients`, counted in `radacctd_events_sse_clients`
/// while it lives.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<EventStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats
            .clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a stream starts from ([`Hub::subscribe`]).
#[derive(Debug)]
pub struct Subscription {
    /// The id the stream starts after.
    pub from: i64,
    pub backfill: Backfill,
    /// Every event published after the subscription, in id order.
    pub live: broadcast::Receiver<Arc<HubEvent>>,
    /// The last id published; changes wake a stream waiting for its client, which then checks
    /// how far behind it is.
    pub published: watch::Receiver<i64>,
    pub slot: Slot,
}

/// The hub. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    options: HubOptions,
    /// The ring and the last id, changed together with each send on `live`, so that a
    /// subscriber sees each event once: from its backfill or from the channel.
    state: Mutex<State>,
    live: broadcast::Sender<Arc<HubEvent>>,
    published: watch::Sender<i64>,
    slots: Arc<Semaphore>,
    backfills: Semaphore,
    stats: Arc<EventStats>,
}

impl Hub {
    pub fn new(store: Store, options: HubOptions, stats: Arc<EventStats>) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                store,
                state: Mutex::new(State {
                    ring: Ring::new(options.buffer),
                    last: None,
                }),
                live: broadcast::Sender::new(options.buffer),
                published: watch::Sender::new(0),
                slots: Arc::new(Semaphore::new(options.max_clients)),
                backfills: Semaphore::new(BACKFILL_READS),
                options,
                stats,
            }),
        }
    }

    pub fn options(&self) -> HubOptions {
        self.inner.options
    }

    pub(crate) fn stats(&self) -> &Arc<EventStats> {
        &self.inner.stats
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last id read (`None` before the first read).
    pub fn last(&self) -> Option<i64> {
        self.state().last
    }

    /// The first read: the newest `buffer` events into memory, and the last id given. Until
    /// it succeeds streams are refused ([`Refused::NotReady`]).
    pub async fn load(&self) -> Result<(), StoreError> {
        let (_, given) = self.inner.store.event_bounds().await?;
        let mut after = (given - self.inner.options.buffer as i64).max(0);
        let mut ring = Ring::new(self.inner.options.buffer);
        loop {
            let page = self.inner.store.events_after(after, PAGE).await?;
            let n = page.len() as i64;
            for e in page {
                after = e.id;
                ring.push(Arc::new(HubEvent::new(e)));
            }
            if n < PAGE {
                break;
            }
        }
        let last = given.max(after);
        {
            let mut state = self.state();
            if state.last.is_some() {
                return Ok(());
            }
            state.ring = ring;
            state.last = Some(last);
        }
        self.announce(last);
        Ok(())
    }

    /// Publishes `page` (events read after the last id), in order.
    fn publish(&self, page: Vec<StoredEvent>) {
        // Frames are built before the lock is taken.
        let events: Vec<Arc<HubEvent>> = page
            .into_iter()
            .map(|e| Arc::new(HubEvent::new(e)))
            .collect();
        let last = {
            let mut state = self.state();
            let Some(mut last) = state.last else {
                return;
            };
            for e in events {
                if e.event.id <= last {
                    continue;
                }
                last = e.event.id;
                state.ring.push(e.clone());
                // No receiver is not an error: no stream is open.
                let _ = self.inner.live.send(e);
            }
            state.last = Some(last);
            last
        };
        self.announce(last);
    }

    fn announce(&self, last: i64) {
        self.inner.published.send_if_modified(|p| {
            let newer = *p != last;
            *p = last;
            newer
        });
        self.inner
            .stats
            .last_id
            .store(last, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reads and publishes every event after the last id read. With no stream open it reads
    /// none: it only learns the last id given (`told`, else from the database) and forgets what
    /// memory held, so that a stream opened later resumes from the database (see [`Hub::skip`]).
    pub async fn catch_up(&self, told: Option<i64>) -> Result<(), StoreError> {
        loop {
            let Some(after) = self.last() else {
                return self.load().await;
            };
            if self.streams() == 0 {
                let given = match told {
                    Some(id) => id,
                    None => self.inner.store.event_bounds().await?.1,
                };
                if self.skip(given) {
                    return Ok(());
                }
            }
            let page = self.inner.store.events_after(after, PAGE).await?;
            let n = page.len() as i64;
            self.publish(page);
            if n < PAGE {
                return Ok(());
            }
            tokio::task::yield_now().await;
        }
    }

    /// How many streams are open (each holds one of `events.max_clients` places).
    fn streams(&self) -> usize {
        self.inner.options.max_clients - self.inner.slots.available_permits()
    }

    /// With no stream open, takes `given` as the last id read without reading the events up to
    /// it, and empties memory (what it holds is no longer the newest events). Returns false,
    /// changing nothing, when a stream has opened meanwhile: the events must then be read and
    /// sent to it. Decided under the state lock, which [`Hub::subscribe`] takes only after its
    /// place: a stream either counts here or subscribes after the new last id, with whatever
    /// it asks for before it read from the database.
    fn skip(&self, given: i64) -> bool {
        let last = {
            let mut state = self.state();
            if self.streams() > 0 {
                return false;
            }
            let Some(last) = state.last else {
                return false;
            };
            if given <= last {
                return true;
            }
            state.ring = Ring::new(self.inner.options.buffer);
            state.last = Some(given);
            given
        };
        self.announce(last);
        true
    }

    /// A stream's start: its place among `events.max_clients`, the live channel, and what to
    /// send before it.
    pub async fn subscribe(&self, start: Start) -> Result<Subscription, Refused> {
        let permit = self
            .inner
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        self.inner
            .stats
            .clients
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = Slot {
            _permit: permit,
            stats: self.inner.stats.clone(),
        };
        let (from, last, backfill, live, published) = {
            let state = self.state();
            let last = state.last.ok_or(Refused::NotReady)?;
            let from = match start {
                Start::Newest => last,
                Start::After(id) => id,
            };
            let backfill = if from >= last {
                Backfill::Nothing
            } else {
                match state.ring.after(from) {
                    Some(events) => Backfill::Ring(events),
                    None => Backfill::Database { until: last },
                }
            };
            (
                from,
                last,
                backfill,
                self.inner.live.subscribe(),
                self.inner.published.subscribe(),
            )
        };
        if from > last {
            // Perhaps numbered by another node a moment ago: the database knows.
            let (_, given) = self
                .inner
                .store
                .event_bounds()
                .await
                .map_err(Refused::Database)?;
            if from > given {
                return Err(Refused::Ahead { last: given });
            }
        }
        Ok(Subscription {
            from,
            backfill,
            live,
            published,
            slot,
        })
    }

    /// Up to `limit` events after `after` from the database, for a stream's backfill (at most
    /// [`BACKFILL_READS`] such reads at once on this node).
    pub async fn read_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Arc<HubEvent>>, StoreError> {
        let _turn = self.inner.backfills.acquire().await;
        let page = self.inner.store.events_after(after, limit).await?;
        self.inner
            .stats
            .backfill_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(page
            .into_iter()
            .map(|e| Arc::new(HubEvent::new(e)))
            .collect())
    }

    /// Tails the outbox until `cancel`: after every change of `numbered` (this node's
    /// sequencer), every notification on PostgreSQL's events channel (any node's sequencer),
    /// and every `events.poll_interval_ms` in any case. A failing read is retried at the next
    /// wake, the listener made again when it is lost.
    pub async fn run(self, mut numbered: Numbered, cancel: CancellationToken) {
        let mut listen = Listen::default();
        let mut failing = false;
        let mut numbered_alive = true;
        let mut told = None;
        loop {
            listen.connect(&self.inner.store).await;
            match self.catch_up(told).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("event hub: the outbox can be read again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "event hub: reading the outbox failed; retrying");
                }
                Err(_) => {}
            }
            let fallback = tokio::time::Instant::now() + self.inner.options.poll;
            // Wakes that bring nothing new (this node's own notifications, mostly) read
            // nothing.
            told = loop {
                let told = tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = numbered.changed(), if numbered_alive => match changed {
                        Ok(()) => Some(*numbered.borrow_and_update()),
                        Err(_) => {
                            numbered_alive = false;
                            continue;
                        }
                    },
                    told = listen.next() => told,
                    _ = tokio::time::sleep_until(fallback) => {
                        listen.check().await;
                        None
                    }
                };
                let known = self.last();
                match (told, known) {
                    (Some(id), Some(last)) if id <= last => continue,
                    _ => break told,
                }
            };
        }
    }
}

/// The hub's `LISTEN` connection on PostgreSQL.
#[derive(Debug, Default)]
struct Listen {
    listener: Option<ChangeListener>,
    /// The store has no notifications (SQLite): never ask again.
    unsupported: bool,
    /// The last attempt failed (logged once until one succeeds), and when to try again.
    failing: bool,
    retry_at: Option<tokio::time::Instant>,
    checked: Option<tokio::time::Instant>,
}

impl Listen {
    /// Listens, when not listening yet.
    async fn connect(&mut self, store: &Store) {
        let now = tokio::time::Instant::now();
        if self.unsupported || self.listener.is_some() || self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        match store.listen_events().await {
            Ok(Some(l)) => {
                if self.failing {
                    tracing::info!("event hub: listening for other nodes' events again");
                }
                self.failing = false;
                self.listener = Some(l);
                self.checked = Some(tokio::time::Instant::now());
            }
            Ok(None) => self.unsupported = true,
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, "event hub: cannot listen for other nodes' events; polling meanwhile");
                }
                self.failing = true;
                self.retry_at = Some(tokio::time::Instant::now() + LISTEN_RETRY);
            }
        }
    }

    /// The id the next notification carries (`None`: unreadable, or the connection was lost,
    /// which is dropped to be made again). Pending forever without a listener.
    async fn next(&mut self) -> Option<i64> {
        let Some(l) = self.listener.as_mut() else {
            return std::future::pending().await;
        };
        match l.next().await {
            Ok(Some(payload)) => payload.trim().parse().ok(),
            Ok(None) | Err(_) => {
                self.listener = None;
                None
            }
        }
    }

    /// A round trip on a quiet listener now and then; one that fails is dropped.
    async fn check(&mut self) {
        let now = tokio::time::Instant::now();
        if self
            .checked
            .is_some_and(|t| now.duration_since(t) < LISTEN_PING_EVERY)
        {
            return;
        }
        let Some(l) = self.listener.as_mut() else {
            return;
        };
        self.checked = Some(now);
        if !matches!(
            tokio::time::timeout(LISTEN_PING_TIMEOUT, l.ping()).await,
            Ok(Ok(()))
        ) {
            self.listener = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: i64) -> Arc<HubEvent> {
        Arc::new(HubEvent::new(StoredEvent {
            id,
            kind: "session.started".into(),
            time: 0,
            username: String::new(),
            nasipaddress: String::new(),
            acctuniqueid: String::new(),
            radacctid: None,
            data: "{}".into(),
            created: 0,
        }))
    }

    fn ids(v: Option<Vec<Arc<HubEvent>>>) -> Option<Vec<i64>> {
        v.map(|v| v.iter().map(|e| e.event.id).collect())
    }

    #[test]
    fn the_ring_keeps_the_newest_and_answers_only_what_it_holds_entirely() {
        let mut r = Ring::new(3);
        assert_eq!(ids(r.after(0)), None);
        for id in 1..=5 {
            r.push(ev(id));
        }
        assert_eq!(ids(r.after(1)), None, "2 is gone");
        assert_eq!(ids(r.after(2)), Some(vec![3, 4, 5]));
        assert_eq!(ids(r.after(4)), Some(vec![5]));
        assert_eq!(ids(r.after(5)), Some(vec![]));
        assert_eq!(ids(r.after(9)), Some(vec![]));
    }

    #[test]
    fn after_a_gap_the_ring_starts_again() {
        let mut r = Ring::new(10);
        for id in [1, 2, 3, 7, 8] {
            r.push(ev(id));
        }
        assert_eq!(ids(r.after(6)), Some(vec![7, 8]));
        assert_eq!(ids(r.after(3)), None, "4 to 6 were never read");
    }
}
