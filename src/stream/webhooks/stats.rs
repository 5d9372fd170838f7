//! The webhooks' counters, per endpoint, and their exposition (names in `metrics`). The
//! delivery tasks write them; `/metrics` reads them at scrape time, when the backlog and the
//! lag are worked out from the last id given and the clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crate::metrics::{
    Collect, Exposition, WEBHOOK_BACKLOG, WEBHOOK_CURSOR, WEBHOOK_DELIVERIES, WEBHOOK_LAG, label,
};
use crate::stream::Numbered;

/// The `outcome` labels of the deliveries counter, in [`EndpointStats::deliveries`] order.
pub const OUTCOMES: [&str; 4] = ["ok", "http_error", "timeout", "connect_error"];

/// One endpoint's counters.
#[derive(Debug)]
pub struct EndpointStats {
    name: String,
    /// POSTs by outcome, in [`OUTCOMES`] order.
    deliveries: [AtomicU64; OUTCOMES.len()],
    /// The last id the endpoint acknowledged (or skipped past), as this node knows it.
    cursor: AtomicI64,
    /// `created` (epoch seconds) of the oldest event being delivered, 0 when none waits.
    oldest_pending: AtomicI64,
    /// True while this node delivers to the endpoint (the jobs leader): only then are the
    /// backlog and the lag its to report; other nodes say 0, so an alert on the maximum
    /// over the nodes sees the leader's figures.
    delivering: AtomicBool,
}

impl EndpointStats {
    fn new(name: &str) -> EndpointStats {
        EndpointStats {
            name: name.to_owned(),
            deliveries: Default::default(),
            cursor: AtomicI64::new(0),
            oldest_pending: AtomicI64::new(0),
            delivering: AtomicBool::new(false),
        }
    }

    /// A POST ended with `outcome` (one of [`OUTCOMES`]).
    pub fn delivered(&self, outcome: &str) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.deliveries[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// POSTs that ended with `outcome` so far.
    pub fn deliveries(&self, outcome: &str) -> u64 {
        OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .map_or(0, |i| self.deliveries[i].load(Ordering::Relaxed))
    }

    pub fn set_cursor(&self, cursor: i64) {
        self.cursor.store(cursor, Ordering::Relaxed);
    }

    pub fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Relaxed)
    }

    /// The oldest undelivered event was numbered at `created` (`None`: nothing waits).
    pub fn set_pending(&self, created: Option<i64>) {
        self.oldest_pending
            .store(created.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn set_delivering(&self, on: bool) {
        self.delivering.store(on, Ordering::Relaxed);
        if !on {
            self.set_pending(None);
        }
    }

    /// Events numbered after the cursor (0 where this node does not deliver).
    fn backlog(&self, last_id: i64) -> i64 {
        match self.delivering.load(Ordering::Relaxed) {
            true => (last_id - self.cursor()).max(0),
            false => 0,
        }
    }

    /// Seconds since the oldest undelivered event was numbered (0 when none waits, and where
    /// this node does not deliver).
    fn lag(&self, now: i64) -> i64 {
        match self.oldest_pending.load(Ordering::Relaxed) {
            _ if !self.delivering.load(Ordering::Relaxed) => 0,
            0 => 0,
            created => (now - created).max(0),
        }
    }
}

/// Every endpoint's counters, registered with `Stats` as one component.
#[derive(Debug)]
pub struct WebhookStats {
    endpoints: Vec<Arc<EndpointStats>>,
    /// The last id given, for the backlogs.
    numbered: Numbered,
}

impl WebhookStats {
    pub fn new(names: &[&str], numbered: Numbered) -> WebhookStats {
        WebhookStats {
            endpoints: names
                .iter()
                .map(|n| Arc::new(EndpointStats::new(n)))
                .collect(),
            numbered,
        }
    }

    /// The counters of the endpoint named `name`.
    pub fn endpoint(&self, name: &str) -> Option<Arc<EndpointStats>> {
        self.endpoints.iter().find(|e| e.name == name).cloned()
    }
}

impl Collect for WebhookStats {
    fn collect(&self, out: &Exposition<'_>) {
        let last_id = *self.numbered.borrow();
        let now = crate::clock::now_secs();
        for e in &self.endpoints {
            let l = || vec![label("endpoint", e.name.clone())];
            for outcome in OUTCOMES {
                let mut labels = l();
                labels.push(label("outcome", outcome));
                out.counter(WEBHOOK_DELIVERIES, labels, e.deliveries(outcome));
            }
            out.gauge(WEBHOOK_BACKLOG, l(), e.backlog(last_id) as f64);
            out.gauge(WEBHOOK_LAG, l(), e.lag(now) as f64);
            out.gauge(WEBHOOK_CURSOR, l(), e.cursor() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_and_lag_are_the_delivering_nodes_only() {
        let e = EndpointStats::new("billing");
        e.set_cursor(90);
        e.set_pending(Some(1_000));
        assert_eq!((e.backlog(100), e.lag(1_030)), (0, 0));
        e.set_delivering(true);
        e.set_pending(Some(1_000));
        assert_eq!((e.backlog(100), e.lag(1_030)), (10, 30));
        e.set_pending(None);
        assert_eq!(e.lag(1_030), 0);
        e.set_delivering(false);
        assert_eq!(e.backlog(100), 0);
        e.delivered("timeout");
        e.delivered("timeout");
        e.delivered("ok");
        assert_eq!((e.deliveries("timeout"), e.deliveries("ok")), (2, 1));
    }
}
