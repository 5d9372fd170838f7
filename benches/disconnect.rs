//! Disconnect benchmarks (harness = false; prints its figures):
//! 1. round trip of one Disconnect-Request against a loopback test NAS, sequentially (p50/p99);
//! 2. 1,000 Disconnect-Requests issued at once through the CoA client: all answered, none sent
//!    twice (counted at the NAS);
//! 3. 1,000 `Disconnector::change_as` calls at once (a CoA-Request each, distinct sessions),
//!    then 1,000 `Disconnector::disconnect` calls at once, against the real application
//!    (SQLite, and PostgreSQL when reachable) with the action log on: every attempt is a
//!    `session_actions` row, a disconnect's written in its close's transaction.
//!
//! `cargo bench --bench disconnect`

// The integration tests' support code; this benchmark uses a small part of it.
#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_nas::{FakeNas, NasMode};
use common::{Backend, Nas, SECRET, Sess, TestApp, TestDb, now, test_config};
use radacctd::disconnect::{
    AttrValue, Change, ChangeAttr, CoaClient, CoaConfig, CoaOutcome, DisconnectConfig,
    DisconnectRequest, Disconnector, Method,
};
use radacctd::metrics::Stats;
use radacctd::radius::dictionary as d;
use radacctd::store::NasRow;

const SEQUENTIAL: usize = 2000;
const CONCURRENT: usize = 1000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Every request reached the NAS exactly once.
fn assert_each_sent_once(nas: &FakeNas, expected: usize) {
    assert_each_of_code_sent_once(nas, 40, expected);
}

/// Every session was sent exactly one request of this code (40 Disconnect-, 43 CoA-Request).
fn assert_each_of_code_sent_once(nas: &FakeNas, code: u8, expected: usize) {
    let mut per_sid: HashMap<String, usize> = HashMap::new();
    for r in nas.received().into_iter().filter(|r| r.code == code) {
        assert!(r.authenticator_ok, "request authenticator verifies");
        *per_sid
            .entry(r.attr_str(d::ACCT_SESSION_ID).expect("Acct-Session-Id"))
            .or_default() += 1;
    }
    assert_eq!(per_sid.len(), expected, "every request arrived");
    let twice = per_sid.values().filter(|&&n| n > 1).count();
    assert_eq!(twice, 0, "{twice} requests were sent more than once");
}

async fn coa_round_trip() {
    let nas = FakeNas::start(SECRET, NasMode::Ack).await;
    let client = CoaClient::bind(
        CoaConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ..CoaConfig::default()
        },
        Arc::new(Stats::default()),
    )
    .await
    .expect("bind");
    let framed = Some(Ipv4Addr::new(100, 64, 0, 1));
    let nas_ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    // Warm-up.
    for i in 0..100 {
        let sid = format!("w{i:07x}");
        let req = DisconnectRequest {
            user_name: "warmup",
            acct_session_id: &sid,
            framed_ip: framed,
            nas_ip,
        };
        client
            .disconnect(nas.addr, SECRET.as_bytes(), &req)
            .await
            .expect("sent");
    }
    let mut rtts = Vec::with_capacity(SEQUENTIAL);
    for i in 0..SEQUENTIAL {
        let user = format!("user{i}");
        let sid = format!("{i:08x}");
        let req = DisconnectRequest {
            user_name: &user,
            acct_session_id: &sid,
            framed_ip: framed,
            nas_ip,
        };
        let t = Instant::now();
        let reply = client
            .disconnect(nas.addr, SECRET.as_bytes(), &req)
            .await
            .expect("sent");
        rtts.push(t.elapsed());
        assert_eq!(reply.outcome, CoaOutcome::Ack);
        assert_eq!(reply.sends, 1);
    }
    rtts.sort();
    let mean = rtts.iter().sum::<Duration>() / rtts.len() as u32;
    println!(
        "coa round trip, {SEQUENTIAL} sequential Disconnect-Requests (loopback NAS, ACK): \
         p50 {} · p99 {} · max {} · mean {}",
        us(percentile(&rtts, 0.50)),
        us(percentile(&rtts, 0.99)),
        us(*rtts.last().expect("some")),
        us(mean),
    );
}

async fn coa_concurrent() {
    let nas = FakeNas::start(SECRET, NasMode::Ack).await;
    let stats = Arc::new(Stats::default());
    let client = CoaClient::bind(
        CoaConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ..CoaConfig::default()
        },
        stats.clone(),
    )
    .await
    .expect("bind");
    let t = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let client = client.clone();
            let addr = nas.addr;
            tokio::spawn(async move {
                let user = format!("user{i}");
                let sid = format!("{i:08x}");
                let req = DisconnectRequest {
                    user_name: &user,
                    acct_session_id: &sid,
                    framed_ip: Some(Ipv4Addr::from(0x6440_0000 + i as u32)),
                    nas_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                };
                client.disconnect(addr, SECRET.as_bytes(), &req).await
            })
        })
        .collect();
    let mut rtts = Vec::with_capacity(CONCURRENT);
    for task in tasks {
        let reply = task.await.expect("joined").expect("sent");
        assert_eq!(reply.outcome, CoaOutcome::Ack);
        rtts.push(reply.round_trip);
    }
    let wall = t.elapsed();
    assert_each_sent_once(&nas, CONCURRENT);
    rtts.sort();
    println!(
        "coa client, {CONCURRENT} Disconnect-Requests at once (16 sockets): all ACKed, \
         {} datagrams at the NAS, retransmits {}; wall {:.1} ms · per-request p50 {} · p99 {}",
        nas.count(),
        Stats::get(&radacctd::disconnect::DisconnectStats::of(&stats).coa_retransmits),
        wall.as_secs_f64() * 1e3,
        us(percentile(&rtts, 0.50)),
        us(percentile(&rtts, 0.99)),
    );
}

async fn disconnector_concurrent(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        println!("disconnector ({backend:?}): skipped, store unavailable");
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    let nas = FakeNas::start(SECRET, NasMode::Ack).await;
    let disc = Disconnector::new(
        DisconnectConfig {
            coa_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ..DisconnectConfig::default()
        },
        &app.ingest,
        app.index.clone(),
        app.stats.clone(),
    )
    .await
    .expect("bind");
    disc.set_nas(&[NasRow {
        id: 1,
        nasname: "127.0.0.1".into(),
        shortname: "bench".into(),
        secret: SECRET.into(),
        coa_port: Some(i64::from(nas.addr.port())),
        api_port: None,
        ..NasRow::default()
    }]);
    disc.set_action_log(app.store.clone());

    // Open the sessions, 10 NASes sending in parallel.
    let start_at = now() - 600;
    let senders: Vec<_> = (0..10u32)
        .map(|k| {
            let addr = app.radius_addr;
            tokio::spawn(async move {
                let mut nas = Nas::new(addr).await;
                for n in (k..CONCURRENT as u32).step_by(10) {
                    let s = Sess::new(n).on_nas("127.0.0.1");
                    nas.send(&s.start(start_at)).await.expect("Start answered");
                }
            })
        })
        .collect();
    for s in senders {
        s.await.expect("joined");
    }
    assert_eq!(app.index.len(), CONCURRENT);
    let sessions: Vec<_> = (0..CONCURRENT as u32)
        .map(|n| {
            app.index
                .get(&Sess::new(n).on_nas("127.0.0.1").key())
                .expect("indexed")
        })
        .collect();

    let rate = d::change_attribute("Mikrotik-Rate-Limit").expect("known");
    let change = Change::new(vec![
        ChangeAttr::new(rate, AttrValue::Text("2M/4M".into())).expect("fits"),
    ])
    .expect("change");
    let t = Instant::now();
    let tasks: Vec<_> = sessions
        .iter()
        .cloned()
        .map(|s| {
            let disc = disc.clone();
            let change = change.clone();
            tokio::spawn(async move { disc.change_as(&s, &change, Some("bench")).await })
        })
        .collect();
    let mut rtts = Vec::with_capacity(CONCURRENT);
    for task in tasks {
        rtts.push(task.await.expect("joined").expect("acked").round_trip);
    }
    let wall = t.elapsed();
    assert_each_of_code_sent_once(&nas, 43, CONCURRENT);
    rtts.sort();
    println!(
        "disconnector ({backend:?}), {CONCURRENT} CoA changes at once: all ACKed, each logged; \
         wall {:.1} ms · per-request round trip p50 {} · p99 {}",
        wall.as_secs_f64() * 1e3,
        us(percentile(&rtts, 0.50)),
        us(percentile(&rtts, 0.99)),
    );

    let t = Instant::now();
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            let disc = disc.clone();
            tokio::spawn(async move { disc.disconnect(&s).await })
        })
        .collect();
    let mut elapsed = Vec::with_capacity(CONCURRENT);
    for task in tasks {
        let d = task.await.expect("joined").expect("disconnected");
        assert_eq!(d.method, Method::Coa);
        assert!(d.row_closed);
        elapsed.push(d.elapsed);
    }
    let wall = t.elapsed();
    assert_each_sent_once(&nas, CONCURRENT);
    assert!(app.index.is_empty(), "every session left the index");
    let open = db.open_rows().await.len();
    assert_eq!(open, 0, "every row closed");
    assert_eq!(
        db.count("SELECT count(*) FROM session_actions").await,
        2 * CONCURRENT as i64,
        "one action row per attempt"
    );
    elapsed.sort();
    println!(
        "disconnector ({backend:?}), {CONCURRENT} disconnects at once: all `coa`, rows closed \
         through the writer, {} requests at the NAS in all; wall {:.1} ms · per-call p50 {} \
         · p99 {}",
        nas.count(),
        wall.as_secs_f64() * 1e3,
        us(percentile(&elapsed, 0.50)),
        us(percentile(&elapsed, 0.99)),
    );
    drop(disc);
    app.stop().await;
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it:
    // only compile-check there.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("disconnect benchmark: run it with `cargo bench --bench disconnect`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        coa_round_trip().await;
        coa_concurrent().await;
        disconnector_concurrent(Backend::Sqlite).await;
        disconnector_concurrent(Backend::Postgres).await;
    });
}
