//! One client's event stream (docs/EVENTS.md#the-stream): a task that sends its backfill (from
//! the hub's memory or the database), then the hub's live events, through a small channel the
//! HTTP body reads, with a heartbeat while idle. Events the client may not or does not want to
//! see are skipped here; ids that were trimmed before they were read are announced as one
//! `events.lost` frame.
//!
//! Nothing buffers without bound: the channel holds a few frames, the hub's broadcast
//! `events.client_buffer` events. A client that falls further behind than that (it reads too
//! slowly, or not at all, so the channel stays full while the hub publishes) is ended as
//! [`EndReason::Slow`]; it resumes with `Last-Event-ID`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::hub::{Backfill, Hub, HubEvent, PAGE, Subscription};
use super::sse;
use super::stats::EndReason;
use crate::events::StoredEvent;

/// Frames waiting for the HTTP body, per stream: enough to keep the socket busy, small
/// enough that a stalled client holds next to nothing.
const CHANNEL_FRAMES: usize = 32;

/// Which events a stream sends: the request's filters and the caller's scope.
pub type Filter = Box<dyn Fn(&StoredEvent) -> bool + Send + Sync>;

/// What ended the stream, as an error to return early with.
type Step<T = ()> = Result<T, EndReason>;

/// The frames of a stream, as the HTTP body reads them.
#[derive(Debug)]
pub struct Frames {
    rx: mpsc::Receiver<Bytes>,
}

impl futures_util::Stream for Frames {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// One stream's task.
pub struct Feed {
    hub: Hub,
    sub: Subscription,
    filter: Filter,
    out: mpsc::Sender<Bytes>,
    /// The last id accounted for: sent, skipped by the filter, or announced lost.
    seen: i64,
    heartbeat: Duration,
    /// Events behind the newest at which the stream is ended while its client does not read.
    buffer: usize,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// The stream of `sub` through `filter`, and the frames its HTTP body reads.
    pub fn new(hub: Hub, sub: Subscription, filter: Filter) -> (Feed, Frames) {
        let (out, rx) = mpsc::channel(CHANNEL_FRAMES);
        let options = hub.options();
        let feed = Feed {
            seen: sub.from,
            hub,
            sub,
            filter,
            out,
            heartbeat: options.heartbeat,
            buffer: options.buffer,
        };
        (feed, Frames { rx })
    }

    /// Sends until the client goes, falls too far behind, or `stop`; counts the end.
    pub async fn run(mut self, stop: CancellationToken) -> EndReason {
        let reason = match self.serve(&stop).await {
            Ok(never) => match never {},
            Err(reason) => reason,
        };
        self.hub.stats().ended(reason);
        reason
    }

    async fn serve(&mut self, stop: &CancellationToken) -> Step<Infallible> {
        match std::mem::replace(&mut self.sub.backfill, Backfill::Nothing) {
            Backfill::Nothing => {}
            Backfill::Ring(events) => {
                for e in events {
                    self.deliver(&e, stop).await?;
                }
            }
            Backfill::Database { until } => self.backfill(until, stop).await?,
        }
        self.follow(stop).await
    }

    /// The events after `seen` up to `until`, from the database, a page at a time.
    async fn backfill(&mut self, until: i64, stop: &CancellationToken) -> Step {
        while self.seen < until {
            let page = tokio::select! {
                _ = stop.cancelled() => return Err(EndReason::Closed),
                page = self.hub.read_after(self.seen, PAGE) => page.map_err(|e| {
                    tracing::warn!(error = %e, "event stream: reading the outbox failed; ending the stream");
                    EndReason::Closed
                })?,
            };
            if page.is_empty() {
                // Everything up to `until` was trimmed meanwhile.
                self.send(sse::lost_frame(self.seen + 1, until), stop)
                    .await?;
                self.seen = until;
                break;
            }
            for e in page {
                if e.event.id > until {
                    // The live channel brings it.
                    return Ok(());
                }
                self.deliver(&e, stop).await?;
            }
        }
        Ok(())
    }

    /// The live events, with a heartbeat after each quiet `events.heartbeat_secs`.
    async fn follow(&mut self, stop: &CancellationToken) -> Step<Infallible> {
        let mut beat = tokio::time::Instant::now() + self.heartbeat;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Err(EndReason::Closed),
                _ = self.out.closed() => return Err(EndReason::Closed),
                r = self.sub.live.recv() => match r {
                    Ok(e) => {
                        if self.deliver(&e, stop).await? {
                            beat = tokio::time::Instant::now() + self.heartbeat;
                        }
                    }
                    Err(RecvError::Lagged(_)) => return Err(EndReason::Slow),
                    Err(RecvError::Closed) => return Err(EndReason::Closed),
                },
                _ = tokio::time::sleep_until(beat) => {
                    // A full channel needs no heartbeat: the connection is busy.
                    if let Err(TrySendError::Closed(_)) =
                        self.out.try_send(Bytes::from_static(sse::HEARTBEAT))
                    {
                        return Err(EndReason::Closed);
                    }
                    beat = tokio::time::Instant::now() + self.heartbeat;
                }
            }
        }
    }

    /// Accounts for `e`: announces the ids missing before it, then sends it when it passes the
    /// filter. Whether anything was sent.
    async fn deliver(&mut self, e: &Arc<HubEvent>, stop: &CancellationToken) -> Step<bool> {
        let id = e.event.id;
        if id <= self.seen {
            return Ok(false);
        }
        let mut sent = false;
        if id > self.seen + 1 {
            self.send(sse::lost_frame(self.seen + 1, id - 1), stop)
                .await?;
            sent = true;
        }
        self.seen = id;
        if (self.filter)(&e.event) {
            self.send(e.frame.clone(), stop).await?;
            sent = true;
        }
        Ok(sent)
    }

    /// Hands `frame` to the HTTP body; while the body is full, ends the stream once the hub has
    /// published more than `events.client_buffer` events it has not taken.
    async fn send(&mut self, frame: Bytes, stop: &CancellationToken) -> Step {
        let frame = match self.out.try_send(frame) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(EndReason::Closed),
            Err(TrySendError::Full(frame)) => frame,
        };
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Err(EndReason::Closed),
                permit = self.out.reserve() => {
                    permit.map_err(|_| EndReason::Closed)?.send(frame);
                    return Ok(());
                }
                changed = self.sub.published.changed() => {
                    if changed.is_err() {
                        return Err(EndReason::Closed);
                    }
                    if self.sub.live.len() > self.buffer {
                        return Err(EndReason::Slow);
                    }
                }
            }
        }
    }
}
