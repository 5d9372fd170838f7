//! How each NAS is doing (docs/ARCHITECTURE.md#nas-health), kept in memory per NAS address:
//! packets by type (in total and over the last minute), the last packet, the observed interim
//! cadence, the last Accounting-On/Off, Request Authenticators that did not verify (a wrong
//! secret), Disconnect/CoA round trips and failures, whether the RouterOS API answered, and the
//! last reconciliation with the router ([`compare`]). The listener, the CoA client and the
//! router reconciliation feed it; the API and `/metrics` read it. It holds nothing per session.
//!
//! Bounded: only addresses the caller has matched to a known client (a configured client or a
//! `nas` row) are recorded, at most [`MAX_TRACKED`] of them, so `/metrics`' `nas` label stays a
//! small set even when a client is a wide CIDR block.

pub mod compare;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;

use crate::clock::now_secs;
use crate::metrics::{
    Collect, Exposition, NAS_API_UP, NAS_BAD_AUTHENTICATOR, NAS_COA_FAILURES, NAS_COA_REQUESTS,
    NAS_COA_RTT, NAS_INTERIM_INTERVAL, NAS_LAST_ACCOUNTING_ONOFF, NAS_LAST_PACKET, NAS_PACKETS,
    NAS_RECONCILE_GHOSTS, NAS_RECONCILE_LAST, NAS_RECONCILE_MISMATCHES, NAS_RECONCILE_RUNS,
    NAS_RECONCILE_ZOMBIES, PACKET_TYPES, PacketType, Stats, label,
};

pub use compare::{Findings, Ghost, Mismatch, Zombie};

/// The most NAS addresses tracked; more are not recorded (logged once).
pub const MAX_TRACKED: usize = 1024;
/// Interim intervals and round trips kept per NAS for the median and percentiles.
const SAMPLES: usize = 256;
/// The sliding window of "packets per minute", in one-second buckets.
const WINDOW_SECS: usize = 60;

/// The health figures of every tracked NAS; one per application, registered with its
/// [`Stats`] ([`NasHealth::of`]) so every component that counts finds the same one.
#[derive(Debug, Default)]
pub struct NasHealth {
    /// Addresses → figures. The map's lock is taken for reading on every packet and for
    /// writing only when a NAS is seen for the first time; each NAS's figures have their own
    /// lock, never held across `.await`.
    nases: RwLock<HashMap<IpAddr, Arc<Mutex<Figures>>>>,
    /// Whether the [`MAX_TRACKED`] warning was logged.
    warned_full: AtomicBool,
}

/// What is known of one NAS.
#[derive(Debug)]
struct Figures {
    last_packet: Option<i64>,
    packets: [u64; PacketType::ALL.len()],
    /// Packets per type in each of the last [`WINDOW_SECS`] seconds, by `second % WINDOW_SECS`,
    /// with the second each bucket holds.
    window: [[u32; PacketType::ALL.len()]; WINDOW_SECS],
    window_at: [i64; WINDOW_SECS],
    bad_authenticator: u64,
    interims: VecDeque<u32>,
    last_on: Option<i64>,
    last_off: Option<i64>,
    coa_requests: u64,
    coa_failures: u64,
    /// Round trips of answered requests, in microseconds.
    coa_rtt: VecDeque<u32>,
    api: Option<ApiReach>,
    reconcile: Option<Arc<Reconciliation>>,
    reconcile_runs: u64,
    reconcile_failures: u64,
    ghosts_closed: u64,
}

impl Default for Figures {
    fn default() -> Self {
        Figures {
            last_packet: None,
            packets: [0; PacketType::ALL.len()],
            window: [[0; PacketType::ALL.len()]; WINDOW_SECS],
            window_at: [i64::MIN; WINDOW_SECS],
            bad_authenticator: 0,
            interims: VecDeque::new(),
            last_on: None,
            last_off: None,
            coa_requests: 0,
            coa_failures: 0,
            coa_rtt: VecDeque::new(),
            api: None,
            reconcile: None,
            reconcile_runs: 0,
            reconcile_failures: 0,
            ghosts_closed: 0,
        }
    }
}

/// The last contact with the router's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiReach {
    /// Whether login and print (or remove) went through.
    pub reachable: bool,
    /// Epoch seconds.
    pub at: i64,
    /// Why not, when not.
    pub error: Option<String>,
}

/// The last reconciliation with the router that got a complete answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// When the router's answer was complete (epoch seconds).
    pub at: i64,
    /// Whether it only looked (`radacctd reconcile --dry-run`).
    pub dry_run: bool,
    /// Entries in the router's `/ppp/active`.
    pub router_sessions: u64,
    /// Open sessions of the NAS here when compared.
    pub open_sessions: u64,
    /// Ghosts found, and how many of them this run closed.
    pub ghosts: u64,
    pub ghosts_closed: u64,
    pub zombies: u64,
    /// Zombies the router was asked to remove (`reconcile.zombies = "disconnect"`).
    pub zombies_disconnected: u64,
    pub mismatches: u64,
    /// Milliseconds from the connect to the end of the comparison.
    pub took_ms: u64,
    /// The first [`compare::MAX_LISTED`] of each.
    pub ghost_list: Vec<Ghost>,
    pub zombie_list: Vec<Zombie>,
    pub mismatch_list: Vec<Mismatch>,
}

/// One NAS's figures at a moment, as the API answers them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NasFigures {
    /// Epoch seconds of the last verified Accounting-Request.
    pub last_packet: Option<i64>,
    /// Verified Accounting-Requests by status type since start-up.
    pub packets: HashMap<&'static str, u64>,
    /// The same over the last 60 seconds.
    pub packets_per_minute: HashMap<&'static str, u64>,
    /// Median of the intervals between a session's consecutive updates seen in Interim-Updates
    /// (the last 256), in seconds.
    pub interim_interval_secs: Option<u32>,
    pub last_accounting_on: Option<i64>,
    pub last_accounting_off: Option<i64>,
    /// Requests whose Request Authenticator did not verify with the NAS's secret.
    pub bad_authenticator: u64,
    /// Disconnect and CoA requests sent, and those that got no answer (or could not be sent).
    pub coa_requests: u64,
    pub coa_failures: u64,
    /// Round-trip percentiles of the answered ones (the last 256), in milliseconds.
    pub coa_rtt_p50_ms: Option<f64>,
    pub coa_rtt_p99_ms: Option<f64>,
    pub api: Option<ApiReach>,
    pub reconcile: Option<Reconciliation>,
}

impl NasHealth {
    /// The figures registered with `stats` (created on first use).
    pub fn of(stats: &Stats) -> Arc<NasHealth> {
        stats.component("nas_health", NasHealth::default)
    }

    /// `f` on the figures of `nas`, created when under the cap. `None`: not tracked.
    fn with<T>(&self, nas: IpAddr, f: impl FnOnce(&mut Figures) -> T) -> Option<T> {
        let nas = nas.to_canonical();
        let (found, full) = {
            let map = self.nases.read().unwrap_or_else(|e| e.into_inner());
            (map.get(&nas).cloned(), map.len() >= MAX_TRACKED)
        };
        let figures = match found {
            Some(f) => f,
            // A full table stays full (nothing is removed): an untracked address never takes
            // the write lock, which every other packet's read would wait for.
            None if full => return self.untracked(nas),
            None => {
                let mut map = self.nases.write().unwrap_or_else(|e| e.into_inner());
                if map.len() >= MAX_TRACKED && !map.contains_key(&nas) {
                    return self.untracked(nas);
                }
                map.entry(nas).or_default().clone()
            }
        };
        let mut guard = figures.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(&mut guard))
    }

    /// An address past [`MAX_TRACKED`]: not tracked, warned about once.
    fn untracked<T>(&self, nas: IpAddr) -> Option<T> {
        if !self.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %nas,
                limit = MAX_TRACKED,
                "NAS health: too many NAS addresses; new ones are not tracked"
            );
        }
        None
    }

    /// A verified Accounting-Request of `kind` from `nas`, received at `now` (epoch seconds).
    pub fn packet(&self, nas: IpAddr, kind: PacketType, now: i64) {
        self.with(nas, |f| {
            let k = kind as usize;
            f.last_packet = Some(now);
            f.packets[k] += 1;
            let slot = now.rem_euclid(WINDOW_SECS as i64) as usize;
            if f.window_at[slot] != now {
                f.window_at[slot] = now;
                f.window[slot] = [0; PacketType::ALL.len()];
            }
            f.window[slot][k] = f.window[slot][k].saturating_add(1);
            match kind {
                PacketType::AccountingOn => f.last_on = Some(now),
                PacketType::AccountingOff => f.last_off = Some(now),
                _ => {}
            }
        });
    }

    /// An Interim-Update `interval` seconds after the session's previous update.
    pub fn interim_interval(&self, nas: IpAddr, interval: i64) {
        let Ok(interval) = u32::try_from(interval) else {
            return;
        };
        if interval == 0 {
            // A repeated interim (a retransmission with a new identifier) says nothing.
            return;
        }
        self.with(nas, |f| push(&mut f.interims, interval));
    }

    /// A request from `nas` whose Request Authenticator did not verify.
    pub fn bad_authenticator(&self, nas: IpAddr) {
        self.with(nas, |f| f.bad_authenticator += 1);
    }

    /// A Disconnect or CoA request to `nas`: answered after `round_trip`, or `None` when no
    /// answer came (or nothing could be sent).
    pub fn coa(&self, nas: IpAddr, round_trip: Option<Duration>) {
        self.with(nas, |f| {
            f.coa_requests += 1;
            match round_trip {
                Some(rtt) => push(
                    &mut f.coa_rtt,
                    u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX),
                ),
                None => f.coa_failures += 1,
            }
        });
    }

    /// The RouterOS API of `nas` answered (`None`) or failed with this error.
    pub fn api(&self, nas: IpAddr, error: Option<String>) {
        self.with(nas, |f| {
            f.api = Some(ApiReach {
                reachable: error.is_none(),
                at: now_secs(),
                error,
            })
        });
    }

    /// A reconciliation with the router of `nas`: its summary when the router's answer was
    /// complete, else `None` (a failed run changes nothing but the failure count).
    pub fn reconciled(&self, nas: IpAddr, summary: Option<Reconciliation>) {
        self.with(nas, |f| {
            f.reconcile_runs += 1;
            match summary {
                Some(s) => {
                    f.ghosts_closed += s.ghosts_closed;
                    f.reconcile = Some(Arc::new(s));
                }
                None => f.reconcile_failures += 1,
            }
        });
    }

    /// The addresses tracked.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .nases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        v.sort();
        v
    }

    /// The figures of `nas` now; `None` when nothing was recorded for it.
    pub fn figures(&self, nas: IpAddr) -> Option<NasFigures> {
        let figures = self
            .nases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&nas.to_canonical())
            .cloned()?;
        let f = figures.lock().unwrap_or_else(|e| e.into_inner());
        Some(f.snapshot(now_secs()))
    }
}

impl Figures {
    fn snapshot(&self, now: i64) -> NasFigures {
        let mut per_minute = [0u64; PacketType::ALL.len()];
        for (slot, at) in self.window_at.iter().enumerate() {
            if *at <= now && now.saturating_sub(*at) < WINDOW_SECS as i64 {
                for (k, n) in self.window[slot].iter().enumerate() {
                    per_minute[k] += u64::from(*n);
                }
            }
        }
        let by_type = |values: &[u64]| -> HashMap<&'static str, u64> {
            PACKET_TYPES
                .iter()
                .copied()
                .zip(values.iter().copied())
                .collect()
        };
        NasFigures {
            last_packet: self.last_packet,
            packets: by_type(&self.packets),
            packets_per_minute: by_type(&per_minute),
            interim_interval_secs: percentile(&self.interims, 0.5),
            last_accounting_on: self.last_on,
            last_accounting_off: self.last_off,
            bad_authenticator: self.bad_authenticator,
            coa_requests: self.coa_requests,
            coa_failures: self.coa_failures,
            coa_rtt_p50_ms: percentile(&self.coa_rtt, 0.5).map(|us| f64::from(us) / 1000.0),
            coa_rtt_p99_ms: percentile(&self.coa_rtt, 0.99).map(|us| f64::from(us) / 1000.0),
            api: self.api.clone(),
            reconcile: self.reconcile.as_deref().cloned(),
        }
    }
}

/// Keeps the last [`SAMPLES`] values.
fn push(ring: &mut VecDeque<u32>, value: u32) {
    if ring.len() == SAMPLES {
        ring.pop_front();
    }
    ring.push_back(value);
}

/// The nearest-rank percentile `q` (0 < q ≤ 1) of the samples; `None` without any.
fn percentile(samples: &VecDeque<u32>, q: f64) -> Option<u32> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted: Vec<u32> = samples.iter().copied().collect();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl Collect for NasHealth {
    fn collect(&self, out: &Exposition<'_>) {
        let nases: Vec<(IpAddr, Arc<Mutex<Figures>>)> = self
            .nases
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(ip, f)| (*ip, f.clone()))
            .collect();
        let now = now_secs();
        for (ip, figures) in nases {
            let (raw, snap) = {
                let f = figures.lock().unwrap_or_else(|e| e.into_inner());
                (
                    (
                        f.packets,
                        f.reconcile_runs,
                        f.reconcile_failures,
                        f.ghosts_closed,
                    ),
                    f.snapshot(now),
                )
            };
            collect_one(out, &ip.to_string(), raw, &snap);
        }
    }
}

/// The series of one NAS.
fn collect_one(
    out: &Exposition<'_>,
    nas: &str,
    (packets, runs, failures, ghosts): ([u64; PacketType::ALL.len()], u64, u64, u64),
    f: &NasFigures,
) {
    let l = || vec![label("nas", nas)];
    let with = |k: &'static str, v: &str| vec![label("nas", nas), label(k, v)];
    for (t, n) in PACKET_TYPES.iter().zip(packets) {
        out.counter(NAS_PACKETS, with("type", t), n);
    }
    out.counter(NAS_BAD_AUTHENTICATOR, l(), f.bad_authenticator);
    out.gauge(NAS_LAST_PACKET, l(), f.last_packet.unwrap_or(0) as f64);
    out.gauge(
        NAS_INTERIM_INTERVAL,
        l(),
        f64::from(f.interim_interval_secs.unwrap_or(0)),
    );
    out.gauge(
        NAS_LAST_ACCOUNTING_ONOFF,
        with("type", "on"),
        f.last_accounting_on.unwrap_or(0) as f64,
    );
    out.gauge(
        NAS_LAST_ACCOUNTING_ONOFF,
        with("type", "off"),
        f.last_accounting_off.unwrap_or(0) as f64,
    );
    out.counter(NAS_COA_REQUESTS, l(), f.coa_requests);
    out.counter(NAS_COA_FAILURES, l(), f.coa_failures);
    // NaN until known: no answer measured yet, the API never contacted.
    let ms = |v: Option<f64>| v.map_or(f64::NAN, |ms| ms / 1000.0);
    out.gauge(NAS_COA_RTT, with("quantile", "0.5"), ms(f.coa_rtt_p50_ms));
    out.gauge(NAS_COA_RTT, with("quantile", "0.99"), ms(f.coa_rtt_p99_ms));
    let up = f
        .api
        .as_ref()
        .map_or(f64::NAN, |a| if a.reachable { 1.0 } else { 0.0 });
    out.gauge(NAS_API_UP, l(), up);
    out.counter(NAS_RECONCILE_RUNS, with("outcome", "ok"), runs - failures);
    out.counter(NAS_RECONCILE_RUNS, with("outcome", "failed"), failures);
    out.counter(NAS_RECONCILE_GHOSTS, l(), ghosts);
    // NaN (0 for the time) before this node's first complete reconciliation with the router.
    let r = f.reconcile.as_ref();
    out.gauge(
        NAS_RECONCILE_ZOMBIES,
        l(),
        r.map_or(f64::NAN, |r| r.zombies as f64),
    );
    out.gauge(
        NAS_RECONCILE_MISMATCHES,
        l(),
        r.map_or(f64::NAN, |r| r.mismatches as f64),
    );
    out.gauge(NAS_RECONCILE_LAST, l(), r.map_or(0.0, |r| r.at as f64));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn packets_count_in_total_and_over_the_last_minute() {
        let h = NasHealth::default();
        let nas = ip("192.0.2.1");
        h.packet(nas, PacketType::Start, 1_000);
        h.packet(nas, PacketType::InterimUpdate, 1_010);
        h.packet(nas, PacketType::InterimUpdate, 1_070);
        h.packet(nas, PacketType::AccountingOn, 1_071);
        let f = h.with(nas, |f| f.snapshot(1_071)).expect("tracked");
        assert_eq!(f.packets["interim_update"], 2);
        assert_eq!(
            f.packets_per_minute["interim_update"], 1,
            "1_010 is older than 60 s"
        );
        assert_eq!(f.packets_per_minute["start"], 0);
        assert_eq!(f.last_accounting_on, Some(1_071));
        assert_eq!(f.last_packet, Some(1_071));
    }

    #[test]
    fn cadence_is_the_median_and_round_trips_the_percentiles() {
        let h = NasHealth::default();
        let nas = ip("::ffff:192.0.2.1");
        for i in [300, 300, 600, 300, 0, 299] {
            h.interim_interval(nas, i);
        }
        for ms in 1..=100u64 {
            h.coa(nas, Some(Duration::from_millis(ms)));
        }
        h.coa(nas, None);
        let f = h.figures(ip("192.0.2.1")).expect("the same NAS, mapped");
        assert_eq!(f.interim_interval_secs, Some(300));
        assert_eq!((f.coa_requests, f.coa_failures), (101, 1));
        assert_eq!(f.coa_rtt_p50_ms, Some(50.0));
        assert_eq!(f.coa_rtt_p99_ms, Some(99.0));
    }

    #[test]
    fn tracking_is_bounded() {
        let h = NasHealth::default();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            h.bad_authenticator(IpAddr::V4(i.into()));
        }
        assert_eq!(h.addresses().len(), MAX_TRACKED);
    }
}
