//! The traffic engine: one worker per UDP socket, each owning a disjoint share of the sessions
//! (session `i` belongs to worker `i % workers`), so the per-session order Start → Interim →
//! Stop never depends on another socket. A worker keeps up to its window of requests in flight
//! with identifiers from a FIFO pool, retransmits the same bytes after the timeout like a NAS,
//! verifies every Response Authenticator and records latency from the first send.
//!
//! With several targets (two RADIUS hosts, as a NAS with two `/radius` entries has) a worker
//! sends from one unconnected socket and picks each transmission's target with
//! [`target_index`]; with one target its socket is connected, as it always was, so the
//! benchmarked single-server path is unchanged.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use radacctd::radius::codec::{Code, Packet};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::sim::{self, Event, Kind, Model};

/// Identifiers are one octet (RFC 2865 §3): at most 256 requests in flight per socket.
pub const IDS_PER_SOCKET: usize = 256;

/// Free identifiers, handed out oldest-released first, so an identifier is reused as late as
/// possible and a late answer to its previous request can still be told apart.
#[derive(Debug, Clone)]
pub struct IdPool {
    free: VecDeque<u8>,
}

impl Default for IdPool {
    fn default() -> Self {
        IdPool {
            free: (0..=255u8).collect(),
        }
    }
}

impl IdPool {
    pub fn alloc(&mut self) -> Option<u8> {
        self.free.pop_front()
    }

    pub fn release(&mut self, id: u8) {
        debug_assert!(!self.free.contains(&id), "identifier {id} released twice");
        self.free.push_back(id);
    }
}

/// Sockets to use for a window when not given: enough that at most 128 requests are in flight
/// per socket, leaving half of the identifier space as a quarantine between two uses of an
/// identifier (a retransmission's late duplicate answer can then never match a new request).
pub fn default_sockets(window: usize) -> usize {
    window.div_ceil(IDS_PER_SOCKET / 2).max(1)
}

/// Splits the global window over the sockets as evenly as possible.
pub fn split_window(window: usize, sockets: usize) -> Vec<usize> {
    let sockets = sockets.max(1);
    (0..sockets)
        .map(|k| window / sockets + usize::from(k < window % sockets))
        .collect()
}

/// Nearest-rank percentile of an ascending slice: the smallest value with at least `p` % of
/// the values at or below it. `None` for an empty slice.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// How requests are spread over several targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Spread {
    /// The k-th packet of session i goes to target (i + k) mod T: each session's packets
    /// land on the servers in turn, the worst case for servers that share one database.
    Alternate,
    /// Every new request goes to the first target; one that times out goes to the next, as
    /// RouterOS does with a second `/radius` entry.
    Failover,
}

impl Spread {
    pub fn as_str(self) -> &'static str {
        match self {
            Spread::Alternate => "alternate",
            Spread::Failover => "failover",
        }
    }
}

/// The target of one transmission: session `session`'s `packet`-th request (0-based, counted
/// over the run), transmission `send` (0 = the first, 1 = the first retransmission, …), with
/// `targets` servers. A retransmission after a timeout always moves on to the next target.
pub fn target_index(spread: Spread, targets: usize, session: u32, packet: u32, send: u32) -> usize {
    if targets <= 1 {
        return 0;
    }
    let t = targets as u64;
    let first = match spread {
        Spread::Alternate => (u64::from(session) + u64::from(packet)) % t,
        Spread::Failover => 0,
    };
    ((first + u64::from(send)) % t) as usize
}

/// Counters of one phase (of one worker, or merged).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Distinct requests sent (retransmissions not counted).
    pub requests: u64,
    /// Requests answered by a verified Accounting-Response.
    pub answered: u64,
    /// Requests without an answer after all retransmissions.
    pub lost: u64,
    /// Retransmissions sent.
    pub retransmits: u64,
    /// Datagrams that were not a valid Accounting-Response to an outstanding request
    /// (undecodable, wrong code, or failing the Response Authenticator).
    pub bad: u64,
    /// Valid answers to a request that had already been answered or given up.
    pub duplicates: u64,
    /// Socket errors (e.g. ICMP port unreachable reported on the connected socket).
    pub errors: u64,
    /// Distinct requests by Acct-Status-Type: Start, Interim-Update, Stop.
    pub by_kind: [u64; 3],
    /// First send → verified answer, microseconds, one per answered request.
    pub latencies_us: Vec<u32>,
    /// Verified answers by the target that sent them (index into the targets).
    pub answered_by: Vec<u64>,
}

impl Stats {
    pub fn merge(&mut self, o: Stats) {
        self.requests += o.requests;
        self.answered += o.answered;
        self.lost += o.lost;
        self.retransmits += o.retransmits;
        self.bad += o.bad;
        self.duplicates += o.duplicates;
        self.errors += o.errors;
        for (a, b) in self.by_kind.iter_mut().zip(o.by_kind) {
            *a += b;
        }
        self.latencies_us.extend(o.latencies_us);
        for (t, n) in o.answered_by.into_iter().enumerate() {
            self.answer_from(t, n);
        }
    }

    /// Empty counters with room for `targets` answer counts (none allocated per answer).
    pub fn for_targets(targets: usize) -> Stats {
        Stats {
            answered_by: vec![0; targets.max(1)],
            ..Stats::default()
        }
    }

    /// Counts `n` answers from target `t`.
    pub fn answer_from(&mut self, t: usize, n: u64) {
        if self.answered_by.len() <= t {
            self.answered_by.resize(t + 1, 0);
        }
        self.answered_by[t] += n;
    }
}

/// What the worker last sent for a session slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing sent in this run.
    Unknown,
    Open,
    Stopped,
}

#[derive(Debug, Clone)]
struct SessState {
    inc: u32,
    start_ts: u32,
    last_st: u32,
    last_in: u64,
    last_out: u64,
    status: Status,
    /// A request for this session is queued or in flight (steady mode keeps one at a time).
    busy: bool,
    /// Requests sent for this session slot in this run (picks the target in alternate mode).
    packets: u32,
}

/// The row a session (incarnation) should have in radacct at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub session: u32,
    pub inc: u32,
    pub stopped: bool,
    pub input: u64,
    pub output: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    Start,
    /// Start of a new incarnation after a churn Stop.
    Restart,
    /// Interim-Update; `Some(r)` is bulk round r (1-based), `None` a real-time one.
    Interim(Option<u32>),
    Stop,
    /// Stop followed by a Restart (steady churn).
    ChurnStop,
}

#[derive(Debug, Clone, Copy)]
struct Job {
    local: u32,
    kind: JobKind,
}

#[derive(Debug)]
struct InFlight {
    job: Job,
    /// The session's packet number ([`target_index`]).
    packet: u32,
    auth: [u8; 16],
    first_sent: Instant,
    sends: u32,
    generation: u64,
}

/// What a phase asks of every worker.
#[derive(Debug, Clone, Copy)]
pub enum Plan {
    /// `rounds` passes over all sessions, each pass finished (answered or lost) before the next.
    Bulk { kind: Kind, rounds: u32 },
    /// Interim-Updates at `sessions / interval` per second plus churn (`churn · sessions` Stop +
    /// Start pairs per interval) for `duration`.
    Steady {
        duration: Duration,
        interval: u32,
        churn: f64,
    },
}

#[derive(Debug)]
struct Steady {
    start: Instant,
    end: Instant,
    interim_rate: f64,
    churn_rate: f64,
    interims: u64,
    churns: u64,
    cursor: u32,
    rng: u64,
    queue: VecDeque<Job>,
}

#[derive(Debug)]
enum Feed {
    Bulk {
        kind: Kind,
        rounds: u32,
        round: u32,
        next: u32,
        owned: u32,
    },
    Steady(Steady),
}

impl Feed {
    fn new(plan: &Plan, owned: u32, seed: u64, now: Instant) -> Feed {
        match *plan {
            Plan::Bulk { kind, rounds } => Feed::Bulk {
                kind,
                rounds: rounds.max(1),
                round: 1,
                next: 0,
                owned,
            },
            Plan::Steady {
                duration,
                interval,
                churn,
            } => {
                let per_sec = f64::from(owned) / f64::from(interval.max(1));
                Feed::Steady(Steady {
                    start: now,
                    end: now + duration,
                    interim_rate: per_sec,
                    churn_rate: per_sec * churn.max(0.0),
                    interims: 0,
                    churns: 0,
                    cursor: 0,
                    rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                    queue: VecDeque::new(),
                })
            }
        }
    }

    /// The next job to send now, if any.
    fn next(&mut self, now: Instant, sessions: &mut [SessState]) -> Option<Job> {
        match self {
            Feed::Bulk {
                kind,
                round,
                next,
                owned,
                ..
            } => {
                if *next >= *owned {
                    return None;
                }
                let local = *next;
                *next += 1;
                let kind = match kind {
                    Kind::Start => JobKind::Start,
                    Kind::Interim => JobKind::Interim(Some(*round)),
                    Kind::Stop => JobKind::Stop,
                };
                Some(Job { local, kind })
            }
            Feed::Steady(s) => {
                s.schedule(now, sessions);
                s.queue.pop_front()
            }
        }
    }

    /// When the feed will have something new to send (steady pacing), if ever.
    fn wakeup(&self, now: Instant) -> Option<Instant> {
        match self {
            Feed::Bulk { .. } => None,
            Feed::Steady(s) => {
                if !s.queue.is_empty() {
                    return Some(now);
                }
                if now >= s.end {
                    return None;
                }
                let due = |rate: f64, done: u64| {
                    (rate > 0.0)
                        .then(|| s.start + Duration::from_secs_f64((done + 1) as f64 / rate))
                };
                [
                    due(s.interim_rate, s.interims),
                    due(s.churn_rate, s.churns),
                    Some(s.end),
                ]
                .into_iter()
                .flatten()
                .min()
            }
        }
    }

    /// Called when nothing is in flight and `next` returned `None`: true when the phase is
    /// over (a bulk feed moves on to its next round otherwise).
    fn finished(&mut self, now: Instant) -> bool {
        match self {
            Feed::Bulk {
                rounds,
                round,
                next,
                ..
            } => {
                if *round < *rounds {
                    *round += 1;
                    *next = 0;
                    false
                } else {
                    true
                }
            }
            Feed::Steady(s) => now >= s.end && s.queue.is_empty(),
        }
    }

    /// A request was answered or given up.
    fn done(&mut self, job: Job, sessions: &mut [SessState]) {
        if let (Feed::Steady(s), JobKind::ChurnStop) = (self, job.kind) {
            if let Some(st) = sessions.get_mut(job.local as usize) {
                st.busy = true;
            }
            s.queue.push_front(Job {
                local: job.local,
                kind: JobKind::Restart,
            });
        }
    }
}

impl Steady {
    fn random(&mut self) -> u64 {
        // xorshift64
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Queues the interims and churn Stops that are due by `now` (never past the end).
    fn schedule(&mut self, now: Instant, sessions: &mut [SessState]) {
        let n = sessions.len() as u32;
        if n == 0 {
            return;
        }
        let elapsed = now.min(self.end).saturating_duration_since(self.start);
        let t = elapsed.as_secs_f64();
        let due_interims = (t * self.interim_rate) as u64;
        while self.interims < due_interims {
            self.interims += 1;
            let local = self.cursor;
            self.cursor = (self.cursor + 1) % n;
            let st = &mut sessions[local as usize];
            // A session whose Stop/Start is under way skips this interim, as a NAS would.
            if !st.busy && st.status != Status::Stopped {
                st.busy = true;
                self.queue.push_back(Job {
                    local,
                    kind: JobKind::Interim(None),
                });
            }
        }
        let due_churns = (t * self.churn_rate) as u64;
        while self.churns < due_churns {
            self.churns += 1;
            for _ in 0..16 {
                let local = (self.random() % u64::from(n)) as u32;
                let st = &mut sessions[local as usize];
                if !st.busy && st.status != Status::Stopped {
                    st.busy = true;
                    self.queue.push_back(Job {
                        local,
                        kind: JobKind::ChurnStop,
                    });
                    break;
                }
            }
        }
    }
}

/// Static settings shared by all workers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub model: Arc<Model>,
    pub secret: Arc<[u8]>,
    pub timeout: Duration,
    pub retries: u32,
    /// The servers. With one, the workers' sockets are connected to it.
    pub targets: Arc<[SocketAddr]>,
    pub spread: Spread,
}

/// One UDP socket and the sessions it owns.
#[derive(Debug)]
pub struct Worker {
    index: u32,
    workers: u32,
    socket: UdpSocket,
    settings: Settings,
    /// One target and the socket is connected to it: `send`/`recv`, no address per datagram.
    connected: bool,
    window: usize,
    ids: IdPool,
    slots: Vec<Option<InFlight>>,
    bufs: Vec<Vec<u8>>,
    /// Request Authenticator of the previous request that used each identifier.
    prev_auth: Vec<Option<[u8; 16]>>,
    /// (deadline, identifier, generation), in deadline order (all timeouts are equal).
    timers: VecDeque<(Instant, u8, u64)>,
    generation: u64,
    inflight: usize,
    sessions: Vec<SessState>,
    closed: Vec<Expected>,
    realtime: bool,
    rbuf: Vec<u8>,
    stats: Stats,
}

/// Number of sessions `i < total` with `i % workers == index`.
pub fn owned_count(total: u32, workers: u32, index: u32) -> u32 {
    if index >= total {
        0
    } else {
        (total - index).div_ceil(workers.max(1))
    }
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

impl Worker {
    pub fn new(
        index: u32,
        workers: u32,
        socket: UdpSocket,
        settings: Settings,
        window: usize,
    ) -> Worker {
        let owned = owned_count(settings.model.sessions, workers, index);
        let sessions = (0..owned)
            .map(|local| SessState {
                inc: 0,
                start_ts: settings.model.first_start_ts(index + local * workers),
                last_st: 0,
                last_in: 0,
                last_out: 0,
                status: Status::Unknown,
                busy: false,
                packets: 0,
            })
            .collect();
        let targets = settings.targets.len();
        Worker {
            index,
            workers,
            socket,
            connected: targets <= 1,
            settings,
            window: window.clamp(1, IDS_PER_SOCKET),
            ids: IdPool::default(),
            slots: (0..IDS_PER_SOCKET).map(|_| None).collect(),
            bufs: (0..IDS_PER_SOCKET)
                .map(|_| Vec::with_capacity(320))
                .collect(),
            prev_auth: vec![None; IDS_PER_SOCKET],
            timers: VecDeque::with_capacity(IDS_PER_SOCKET * 2),
            generation: 0,
            inflight: 0,
            sessions,
            closed: Vec::new(),
            realtime: false,
            rbuf: vec![0; 4096],
            stats: Stats::for_targets(targets),
        }
    }

    fn global(&self, local: u32) -> u32 {
        self.index + local * self.workers
    }

    /// Takes the counters of the phase just run.
    pub fn take_stats(&mut self) -> Stats {
        let fresh = Stats::for_targets(self.settings.targets.len());
        std::mem::replace(&mut self.stats, fresh)
    }

    /// What the database should hold for this worker's sessions at the end of the run.
    pub fn expected(&self) -> Vec<Expected> {
        let mut out = self.closed.clone();
        for (local, st) in self.sessions.iter().enumerate() {
            if st.status != Status::Unknown {
                out.push(Expected {
                    session: self.global(local as u32),
                    inc: st.inc,
                    stopped: st.status == Status::Stopped,
                    input: st.last_in,
                    output: st.last_out,
                });
            }
        }
        out
    }

    /// Runs one phase to completion: everything sent, answered or given up.
    pub async fn run(&mut self, plan: Plan) {
        if matches!(plan, Plan::Steady { .. }) {
            self.realtime = true;
        }
        let mut feed = Feed::new(
            &plan,
            self.sessions.len() as u32,
            u64::from(self.index) + 1,
            Instant::now(),
        );
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.expire(now, &mut feed).await;
            while self.inflight < self.window {
                let Some(job) = feed.next(now, &mut self.sessions) else {
                    break;
                };
                self.send_new(job, now).await;
            }
            if self.inflight == 0 && feed.finished(now) {
                break;
            }
            if self.inflight == 0 && matches!(feed, Feed::Bulk { .. }) {
                continue; // next round
            }
            let feed_wake = if self.inflight < self.window {
                feed.wakeup(now)
            } else {
                None
            };
            let wake = [self.timers.front().map(|t| t.0), feed_wake]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            if armed != Some(wake) {
                sleep.as_mut().reset(wake);
                armed = Some(wake);
            }
            let received = tokio::select! {
                biased;
                r = Self::recv(&self.socket, self.connected, &mut self.rbuf) => Some(r),
                () = &mut sleep => {
                    armed = None;
                    None
                }
            };
            if let Some(r) = received {
                let now = Instant::now();
                self.on_recv(r, now, &mut feed);
                for _ in 0..IDS_PER_SOCKET {
                    let r = self.try_recv();
                    if matches!(&r, Err(e) if e.kind() == ErrorKind::WouldBlock) {
                        break;
                    }
                    self.on_recv(r, now, &mut feed);
                }
            }
        }
    }

    /// Waits for a datagram: its length and where it came from.
    async fn recv(
        socket: &UdpSocket,
        connected: bool,
        buf: &mut [u8],
    ) -> std::io::Result<(usize, Option<SocketAddr>)> {
        if connected {
            socket.recv(buf).await.map(|n| (n, None))
        } else {
            socket.recv_from(buf).await.map(|(n, a)| (n, Some(a)))
        }
    }

    /// A datagram that is already there, without waiting.
    fn try_recv(&mut self) -> std::io::Result<(usize, Option<SocketAddr>)> {
        if self.connected {
            self.socket.try_recv(&mut self.rbuf).map(|n| (n, None))
        } else {
            self.socket
                .try_recv_from(&mut self.rbuf)
                .map(|(n, a)| (n, Some(a)))
        }
    }

    /// Sends the request under identifier `id` to target `target`.
    async fn transmit(&mut self, id: u8, target: usize) {
        let buf = &self.bufs[usize::from(id)];
        let sent = if self.connected {
            self.socket.send(buf).await
        } else {
            match self.settings.targets.get(target) {
                Some(&to) => self.socket.send_to(buf, to).await,
                None => Err(ErrorKind::InvalidInput.into()),
            }
        };
        if sent.is_err() {
            self.stats.errors += 1;
        }
    }

    fn on_recv(
        &mut self,
        r: std::io::Result<(usize, Option<SocketAddr>)>,
        now: Instant,
        feed: &mut Feed,
    ) {
        match r {
            Ok((n, from)) => {
                // A connected socket only receives from its one target.
                let target = match from {
                    None => 0,
                    Some(a) => match self.settings.targets.iter().position(|t| *t == a) {
                        Some(t) => t,
                        None => {
                            self.stats.bad += 1; // not from a target
                            return;
                        }
                    },
                };
                let buf = std::mem::take(&mut self.rbuf);
                self.on_datagram(buf.get(..n).unwrap_or_default(), target, now, feed);
                self.rbuf = buf;
            }
            Err(_) => self.stats.errors += 1,
        }
    }

    fn on_datagram(&mut self, data: &[u8], target: usize, now: Instant, feed: &mut Feed) {
        let secret = &*self.settings.secret;
        let Ok(p) = Packet::decode(data) else {
            self.stats.bad += 1;
            return;
        };
        if p.code() != Code::AccountingResponse {
            self.stats.bad += 1;
            return;
        }
        let id = p.identifier();
        let slot = &mut self.slots[usize::from(id)];
        if let Some(f) = slot.as_ref()
            && p.verify_response_authenticator(&f.auth, secret)
        {
            let Some(f) = slot.take() else { return };
            let us = now.saturating_duration_since(f.first_sent).as_micros();
            self.stats
                .latencies_us
                .push(u32::try_from(us).unwrap_or(u32::MAX));
            self.stats.answered += 1;
            self.stats.answer_from(target, 1);
            self.finish(id, f, feed);
        } else if self.prev_auth[usize::from(id)]
            .is_some_and(|a| p.verify_response_authenticator(&a, secret))
        {
            self.stats.duplicates += 1;
        } else {
            self.stats.bad += 1;
        }
    }

    fn finish(&mut self, id: u8, f: InFlight, feed: &mut Feed) {
        self.prev_auth[usize::from(id)] = Some(f.auth);
        self.ids.release(id);
        self.inflight -= 1;
        if let Some(st) = self.sessions.get_mut(f.job.local as usize) {
            st.busy = false;
        }
        feed.done(f.job, &mut self.sessions);
    }

    /// Retransmits or gives up the requests whose timeout has passed.
    async fn expire(&mut self, now: Instant, feed: &mut Feed) {
        while let Some(&(deadline, id, generation)) = self.timers.front() {
            if deadline > now {
                break;
            }
            self.timers.pop_front();
            let slot = &mut self.slots[usize::from(id)];
            let Some(f) = slot.as_mut().filter(|f| f.generation == generation) else {
                continue; // answered meanwhile
            };
            if f.sends <= self.settings.retries {
                // The same bytes again, to the next target in turn.
                let target = target_index(
                    self.settings.spread,
                    self.settings.targets.len(),
                    self.index + f.job.local * self.workers,
                    f.packet,
                    f.sends,
                );
                f.sends += 1;
                self.stats.retransmits += 1;
                self.timers
                    .push_back((now + self.settings.timeout, id, generation));
                self.transmit(id, target).await;
            } else if let Some(f) = slot.take() {
                self.stats.lost += 1;
                self.finish(id, f, feed);
            }
        }
    }

    /// Updates the session's state for `job`, encodes the request under a fresh identifier
    /// and sends it.
    async fn send_new(&mut self, job: Job, now: Instant) {
        let Some(id) = self.ids.alloc() else {
            return; // cannot happen: the window is at most 256
        };
        let i = self.global(job.local);
        let model: &Model = &self.settings.model;
        let realtime = self.realtime;
        let st = &mut self.sessions[job.local as usize];
        let unix = unix_now();
        let live_time = |st: &SessState| unix.saturating_sub(st.start_ts).max(st.last_st + 1);
        let (kind, session_time) = match job.kind {
            JobKind::Start => {
                st.start_ts = model.first_start_ts(i);
                (Kind::Start, 0)
            }
            JobKind::Restart => {
                if st.status != Status::Unknown {
                    self.closed.push(Expected {
                        session: i,
                        inc: st.inc,
                        stopped: st.status == Status::Stopped,
                        input: st.last_in,
                        output: st.last_out,
                    });
                }
                st.inc += 1;
                st.start_ts = unix;
                (Kind::Start, 0)
            }
            JobKind::Interim(Some(round)) => (Kind::Interim, round * model.interval),
            JobKind::Interim(None) => (Kind::Interim, live_time(st)),
            JobKind::Stop | JobKind::ChurnStop => {
                let t = if realtime {
                    live_time(st)
                } else {
                    st.last_st + (model.interval / 2).max(1)
                };
                (Kind::Stop, t)
            }
        };
        let usage = Model::usage(i, session_time);
        st.last_st = session_time;
        st.last_in = usage.input;
        st.last_out = usage.output;
        st.status = if kind == Kind::Stop {
            Status::Stopped
        } else {
            Status::Open
        };
        st.busy = true;
        let packet = st.packets;
        st.packets = st.packets.wrapping_add(1);
        let event = Event {
            kind,
            event_timestamp: st.start_ts.wrapping_add(session_time),
            usage,
        };
        let identity = model.identity(i, st.inc);
        let buf = &mut self.bufs[usize::from(id)];
        if sim::encode_request(&identity, i, &event, id, &self.settings.secret, buf).is_err() {
            // Cannot happen for these sizes; count it and give the identifier back.
            self.stats.errors += 1;
            self.ids.release(id);
            st.busy = false;
            return;
        }
        let mut auth = [0u8; 16];
        auth.copy_from_slice(buf.get(4..20).unwrap_or(&[0; 16]));
        self.generation += 1;
        self.slots[usize::from(id)] = Some(InFlight {
            job,
            packet,
            auth,
            first_sent: now,
            sends: 1,
            generation: self.generation,
        });
        self.inflight += 1;
        self.stats.requests += 1;
        self.stats.by_kind[kind.index()] += 1;
        self.timers
            .push_back((now + self.settings.timeout, id, self.generation));
        let target = target_index(
            self.settings.spread,
            self.settings.targets.len(),
            i,
            packet,
            0,
        );
        self.transmit(id, target).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn percentiles_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        let v: Vec<u32> = (1..=10).collect();
        assert_eq!(percentile(&v, 99.0), Some(10));
        assert_eq!(percentile(&v, 50.0), Some(5));
        assert_eq!(percentile(&v, 55.0), Some(6));
        let v = [1, 1, 1, 1000];
        assert_eq!(percentile(&v, 75.0), Some(1));
        assert_eq!(percentile(&v, 76.0), Some(1000));
    }

    #[test]
    fn id_pool_is_fifo_and_never_double_allocates() {
        let mut pool = IdPool::default();
        let mut out = HashSet::new();
        for _ in 0..256 {
            assert!(out.insert(pool.alloc().unwrap()));
        }
        assert_eq!(pool.alloc(), None);
        assert!(pool.free.is_empty());
        pool.release(200);
        pool.release(3);
        assert_eq!(pool.alloc(), Some(200));
        assert_eq!(pool.alloc(), Some(3));
        // With 128 in flight, a released identifier comes back only after the other 128.
        let mut pool = IdPool::default();
        let held: Vec<u8> = (0..128).map(|_| pool.alloc().unwrap()).collect();
        pool.release(held[0]);
        let next: Vec<u8> = (0..128).map(|_| pool.alloc().unwrap()).collect();
        assert!(!next.contains(&held[0]));
        assert_eq!(pool.alloc(), Some(held[0]));
    }

    #[test]
    fn window_split_respects_identifier_space() {
        assert_eq!(default_sockets(1), 1);
        assert_eq!(default_sockets(64), 1);
        assert_eq!(default_sockets(128), 1);
        assert_eq!(default_sockets(129), 2);
        assert_eq!(default_sockets(256), 2);
        assert_eq!(default_sockets(1024), 8);
        for w in [1usize, 63, 64, 256, 257, 1000, 1024, 4096] {
            let s = default_sockets(w);
            let split = split_window(w, s);
            assert_eq!(split.iter().sum::<usize>(), w);
            assert!(
                split.iter().all(|x| (1..=IDS_PER_SOCKET / 2).contains(x)),
                "{w}: {split:?}"
            );
            let (lo, hi) = (split.iter().min().unwrap(), split.iter().max().unwrap());
            assert!(hi - lo <= 1);
        }
        assert_eq!(split_window(10, 3), vec![4, 3, 3]);
    }

    #[test]
    fn sessions_are_partitioned_over_workers() {
        for (total, workers) in [(25_000u32, 1u32), (25_000, 8), (10, 3), (2, 4)] {
            let sum: u32 = (0..workers).map(|k| owned_count(total, workers, k)).sum();
            assert_eq!(sum, total);
        }
        assert_eq!(owned_count(10, 3, 0), 4); // 0 3 6 9
        assert_eq!(owned_count(10, 3, 2), 3); // 2 5 8
        assert_eq!(owned_count(2, 4, 3), 0);
    }

    fn sessions(n: usize) -> Vec<SessState> {
        vec![
            SessState {
                inc: 0,
                start_ts: 0,
                last_st: 0,
                last_in: 0,
                last_out: 0,
                status: Status::Open,
                busy: false,
                packets: 0,
            };
            n
        ]
    }

    #[test]
    fn bulk_feed_runs_rounds_in_order() {
        let now = Instant::now();
        let mut s = sessions(3);
        let mut feed = Feed::new(
            &Plan::Bulk {
                kind: Kind::Interim,
                rounds: 2,
            },
            3,
            1,
            now,
        );
        let mut seen = Vec::new();
        loop {
            while let Some(j) = feed.next(now, &mut s) {
                seen.push((j.local, j.kind));
            }
            if feed.finished(now) {
                break;
            }
        }
        let r = |k| JobKind::Interim(Some(k));
        assert_eq!(
            seen,
            vec![
                (0, r(1)),
                (1, r(1)),
                (2, r(1)),
                (0, r(2)),
                (1, r(2)),
                (2, r(2))
            ]
        );
    }

    #[test]
    fn steady_feed_paces_interims_and_churn() {
        let start = Instant::now();
        let mut s = sessions(3000);
        // 3000 sessions / 300 s = 10 interims/s; churn 0.5 → 5 churn stops/s.
        let mut feed = Feed::new(
            &Plan::Steady {
                duration: Duration::from_secs(10),
                interval: 300,
                churn: 0.5,
            },
            3000,
            7,
            start,
        );
        let at = start + Duration::from_millis(2_050);
        let mut interims = 0;
        let mut stops = Vec::new();
        while let Some(j) = feed.next(at, &mut s) {
            match j.kind {
                JobKind::Interim(None) => interims += 1,
                JobKind::ChurnStop => stops.push(j.local),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(interims, 20);
        assert_eq!(stops.len(), 10);
        assert!(s.iter().filter(|x| x.busy).count() >= 20);
        assert!(!feed.finished(at));
        // The next interim is due at 2.1 s.
        let wake = feed.wakeup(at).unwrap();
        let expect = start + Duration::from_millis(2_100);
        assert!(
            wake.max(expect) - wake.min(expect) < Duration::from_millis(1),
            "{wake:?}"
        );
        // A finished churn Stop queues the Restart of that session first.
        let job = Job {
            local: stops[0],
            kind: JobKind::ChurnStop,
        };
        s[stops[0] as usize].busy = false;
        feed.done(job, &mut s);
        let j = feed.next(at, &mut s).unwrap();
        assert_eq!((j.local, j.kind), (stops[0], JobKind::Restart));
        // Nothing is scheduled past the end.
        let end = start + Duration::from_secs(60);
        let mut total = 0;
        while feed.next(end, &mut s).is_some() {
            total += 1;
        }
        assert!(total <= 100 + 50, "{total}");
        assert!(feed.finished(end));
        assert_eq!(feed.wakeup(end), None);
    }

    async fn loopback_pair() -> (UdpSocket, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(server.local_addr().unwrap()).await.unwrap();
        (client, server)
    }

    fn settings(sessions: u32) -> Settings {
        settings_for(
            sessions,
            &["127.0.0.1:9".parse().unwrap()],
            Spread::Failover,
        )
    }

    fn settings_for(sessions: u32, targets: &[SocketAddr], spread: Spread) -> Settings {
        Settings {
            model: Arc::new(Model {
                sessions,
                nases: 2,
                user_prefix: "t".into(),
                sid_base: 1,
                interval: 300,
                t0: 1_700_000_000,
            }),
            secret: Arc::from(&b"testing123"[..]),
            timeout: Duration::from_millis(50),
            retries: 2,
            targets: Arc::from(targets),
            spread,
        }
    }

    /// Answers every valid request; drops the first copy of every `drop_every`-th request, and
    /// sends a corrupted response plus a duplicate for some.
    async fn responder(server: UdpSocket, drop_every: u32) {
        let mut seen = std::collections::HashMap::new();
        let mut buf = vec![0u8; 4096];
        let mut n_req = 0u32;
        loop {
            let (n, peer) = server.recv_from(&mut buf).await.unwrap();
            let p = Packet::decode(&buf[..n]).unwrap();
            assert!(p.verify_request_authenticator(b"testing123"));
            let key = *p.authenticator();
            let copies = seen.entry(key).or_insert(0u32);
            *copies += 1;
            if *copies == 1 {
                n_req += 1;
                if drop_every > 0 && n_req.is_multiple_of(drop_every) {
                    continue;
                }
            }
            let b = radacctd::radius::codec::PacketBuilder::new(
                Code::AccountingResponse,
                p.identifier(),
            );
            let out = b.encode_response(p.authenticator(), b"testing123").unwrap();
            if n_req.is_multiple_of(7) {
                let mut bad = out.clone();
                bad[5] ^= 1;
                server.send_to(&bad, peer).await.unwrap();
            }
            server.send_to(&out, peer).await.unwrap();
            if n_req.is_multiple_of(11) {
                server.send_to(&out, peer).await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn worker_retransmits_verifies_and_counts() {
        let (client, server) = loopback_pair().await;
        let task = tokio::spawn(responder(server, 5));
        let mut w = Worker::new(0, 1, client, settings(300), 16);
        w.run(Plan::Bulk {
            kind: Kind::Start,
            rounds: 1,
        })
        .await;
        let s = w.take_stats();
        assert_eq!(s.requests, 300);
        assert_eq!(s.answered, 300, "{s:?}");
        assert_eq!(s.lost, 0);
        assert!(s.retransmits >= 60, "every 5th first copy dropped: {s:?}");
        assert!(s.bad > 0, "corrupted responses are counted");
        assert!(s.duplicates > 0, "duplicate answers are counted");
        assert_eq!(s.latencies_us.len(), 300);
        w.run(Plan::Bulk {
            kind: Kind::Stop,
            rounds: 1,
        })
        .await;
        let s = w.take_stats();
        assert_eq!((s.answered, s.by_kind), (300, [0, 0, 300]));
        let exp = w.expected();
        assert_eq!(exp.len(), 300);
        assert!(exp.iter().all(|e| e.stopped && e.output > 0));
        task.abort();
    }

    #[tokio::test]
    async fn worker_gives_up_after_retries() {
        let (client, server) = loopback_pair().await;
        // Nobody answers.
        let mut w = Worker::new(0, 1, client, settings(5), 4);
        let t = std::time::Instant::now();
        w.run(Plan::Bulk {
            kind: Kind::Start,
            rounds: 1,
        })
        .await;
        let s = w.take_stats();
        assert_eq!(
            (s.requests, s.answered, s.lost, s.retransmits),
            (5, 0, 5, 10)
        );
        // 2 rounds of 4+1 requests, each 3 × 50 ms.
        assert!(t.elapsed() >= Duration::from_millis(300));
        drop(server);
    }

    #[test]
    fn target_choice() {
        use Spread::{Alternate, Failover};
        // One target: always it.
        for spread in [Alternate, Failover] {
            for (i, k, r) in [(0, 0, 0), (7, 3, 2), (u32::MAX, u32::MAX, u32::MAX)] {
                assert_eq!(target_index(spread, 1, i, k, r), 0);
                assert_eq!(target_index(spread, 0, i, k, r), 0);
            }
        }
        // Alternate: Start on A, Interim on B, Stop on A for session 0; the other way for 1.
        let firsts: Vec<usize> = (0..3)
            .map(|k| target_index(Alternate, 2, 0, k, 0))
            .collect();
        assert_eq!(firsts, [0, 1, 0]);
        let firsts: Vec<usize> = (0..3)
            .map(|k| target_index(Alternate, 2, 1, k, 0))
            .collect();
        assert_eq!(firsts, [1, 0, 1]);
        assert_eq!(target_index(Alternate, 3, 4, 1, 0), 2);
        // No overflow at the ends of the ranges.
        assert_eq!(target_index(Alternate, 2, u32::MAX, u32::MAX, 0), 0);
        // A retransmission moves on to the next target in turn.
        assert_eq!(target_index(Alternate, 2, 0, 0, 1), 1);
        assert_eq!(target_index(Alternate, 2, 1, 0, 1), 0);
        assert_eq!(target_index(Alternate, 3, 0, 2, 1), 0);
        // Failover: every new request to the first; retransmissions to the next, wrapping.
        for i in [0, 1, 2, 1000] {
            for k in [0, 1, 5] {
                assert_eq!(target_index(Failover, 2, i, k, 0), 0);
                assert_eq!(target_index(Failover, 2, i, k, 1), 1);
                assert_eq!(target_index(Failover, 2, i, k, 2), 0);
                assert_eq!(target_index(Failover, 3, i, k, 2), 2);
            }
        }
    }

    #[test]
    fn answer_counts_merge_by_target() {
        let mut a = Stats::for_targets(2);
        a.answer_from(1, 3);
        let mut b = Stats::default();
        b.answer_from(0, 2);
        b.answer_from(2, 1);
        a.merge(b);
        assert_eq!(a.answered_by, [2, 3, 1]);
    }

    /// What a recording server saw: (Acct-Session-Id, Acct-Status-Type) of every first copy.
    type Seen = Arc<std::sync::Mutex<Vec<(String, u32)>>>;

    /// Answers every valid request (`answer`) or none, recording what it received.
    async fn recording_server(server: UdpSocket, answer: bool, seen: Seen) {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = server.recv_from(&mut buf).await.unwrap();
            let p = Packet::decode(&buf[..n]).unwrap();
            assert!(p.verify_request_authenticator(b"testing123"));
            let sid = String::from_utf8_lossy(
                p.attr(radacctd::radius::dictionary::ACCT_SESSION_ID)
                    .unwrap(),
            )
            .into_owned();
            let status = p
                .attr_u32(radacctd::radius::dictionary::ACCT_STATUS_TYPE)
                .unwrap();
            seen.lock().unwrap().push((sid, status));
            if answer {
                let b = radacctd::radius::codec::PacketBuilder::new(
                    Code::AccountingResponse,
                    p.identifier(),
                );
                let out = b.encode_response(p.authenticator(), b"testing123").unwrap();
                server.send_to(&out, peer).await.unwrap();
            }
        }
    }

    /// Two servers on loopback and an unconnected client socket.
    async fn two_servers() -> (UdpSocket, [UdpSocket; 2], [SocketAddr; 2]) {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addrs = [a.local_addr().unwrap(), b.local_addr().unwrap()];
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (client, [a, b], addrs)
    }

    async fn phase(w: &mut Worker, kind: Kind) -> Stats {
        w.run(Plan::Bulk { kind, rounds: 1 }).await;
        w.take_stats()
    }

    #[tokio::test]
    async fn failover_moves_timed_out_requests_to_the_next_target() {
        let (client, [a, b], addrs) = two_servers().await;
        let (seen_a, seen_b) = (Seen::default(), Seen::default());
        // A receives everything and answers nothing; B answers.
        let ta = tokio::spawn(recording_server(a, false, seen_a.clone()));
        let tb = tokio::spawn(recording_server(b, true, seen_b.clone()));
        let mut w = Worker::new(0, 1, client, settings_for(40, &addrs, Spread::Failover), 8);
        let s = phase(&mut w, Kind::Start).await;
        assert_eq!((s.requests, s.answered, s.lost), (40, 40, 0), "{s:?}");
        assert_eq!(s.answered_by, [0, 40], "all answered by B after failover");
        assert_eq!(s.retransmits, 40, "one retransmission each");
        assert_eq!(s.bad, 0);
        let s = phase(&mut w, Kind::Stop).await;
        assert_eq!((s.answered, s.answered_by.as_slice()), (40, &[0, 40][..]));
        // Every request went to A first, then the same request to B.
        let (seen_a, seen_b) = (seen_a.lock().unwrap(), seen_b.lock().unwrap());
        assert_eq!(seen_a.len(), 80);
        assert_eq!(
            *seen_a, *seen_b,
            "B got the same requests, in the same order"
        );
        ta.abort();
        tb.abort();
    }

    #[tokio::test]
    async fn alternate_sends_each_sessions_packets_to_the_targets_in_turn() {
        let (client, [a, b], addrs) = two_servers().await;
        let (seen_a, seen_b) = (Seen::default(), Seen::default());
        let ta = tokio::spawn(recording_server(a, true, seen_a.clone()));
        let tb = tokio::spawn(recording_server(b, true, seen_b.clone()));
        let settings = settings_for(10, &addrs, Spread::Alternate);
        let model = settings.model.clone();
        let mut w = Worker::new(0, 1, client, settings, 4);
        let mut by_target = [0u64; 2];
        for kind in [Kind::Start, Kind::Interim, Kind::Stop] {
            let s = phase(&mut w, kind).await;
            assert_eq!((s.answered, s.retransmits, s.bad), (10, 0, 0), "{s:?}");
            assert_eq!(s.answered_by, [5, 5]);
            by_target[0] += s.answered_by[0];
            by_target[1] += s.answered_by[1];
        }
        assert_eq!(by_target, [15, 15]);
        let (seen_a, seen_b) = (seen_a.lock().unwrap(), seen_b.lock().unwrap());
        let statuses = [
            radacctd::radius::dictionary::STATUS_START,
            radacctd::radius::dictionary::STATUS_INTERIM_UPDATE,
            radacctd::radius::dictionary::STATUS_STOP,
        ];
        for i in 0..10u32 {
            let sid = model.session_id(i, 0);
            for (k, status) in statuses.into_iter().enumerate() {
                let (on, off) = if (i as usize + k).is_multiple_of(2) {
                    (&seen_a, &seen_b)
                } else {
                    (&seen_b, &seen_a)
                };
                let packet = (sid.clone(), status);
                assert!(on.contains(&packet), "session {i} packet {k}");
                assert!(!off.contains(&packet), "session {i} packet {k}");
            }
        }
        ta.abort();
        tb.abort();
    }

    #[tokio::test]
    async fn alternate_fails_over_too() {
        let (client, [a, b], addrs) = two_servers().await;
        // B is silent: packets meant for B are retransmitted to A.
        let ta = tokio::spawn(recording_server(a, true, Seen::default()));
        let tb = tokio::spawn(recording_server(b, false, Seen::default()));
        let mut w = Worker::new(0, 1, client, settings_for(20, &addrs, Spread::Alternate), 8);
        let s = phase(&mut w, Kind::Start).await;
        assert_eq!((s.answered, s.lost, s.retransmits), (20, 0, 10), "{s:?}");
        assert_eq!(s.answered_by, [20, 0]);
        ta.abort();
        tb.abort();
    }

    #[tokio::test]
    async fn answers_from_elsewhere_are_not_counted() {
        let (client, [a, b], addrs) = two_servers().await;
        let client_addr = client.local_addr().unwrap();
        // A third party answers everything A receives; A and B stay silent.
        let imposter = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, _) = a.recv_from(&mut buf).await.unwrap();
                let p = Packet::decode(&buf[..n]).unwrap();
                let b = radacctd::radius::codec::PacketBuilder::new(
                    Code::AccountingResponse,
                    p.identifier(),
                );
                let out = b.encode_response(p.authenticator(), b"testing123").unwrap();
                imposter.send_to(&out, client_addr).await.unwrap();
            }
        });
        let mut w = Worker::new(0, 1, client, settings_for(3, &addrs, Spread::Failover), 3);
        let s = phase(&mut w, Kind::Start).await;
        assert_eq!((s.answered, s.lost), (0, 3), "{s:?}");
        assert!(s.bad >= 3, "{s:?}");
        task.abort();
        drop(b);
    }
}
