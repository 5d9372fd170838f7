//! The router's truth (docs/ARCHITECTURE.md#router-reconciliation, #nas-health): the real
//! application (both stores) with sessions opened by real Accounting-Requests, the test RouterOS
//! serving `/ppp/active` with session ids, MACs and uptimes, and the reconciliation run the way
//! the jobs leader runs it (`RouterReconciler::reconcile`). Plus the NAS health figures and API
//! against the traffic the test sent.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::api::{api_config, token};
use crate::common::fake_routeros::{Active, FakeRouterOs, PrintHold, RosConfig};
use crate::common::{
    Backend, Nas, SECRET, Sess, TestApp, TestDb, build_request, free_port_tcp, now, scrape,
    test_config, value,
};
use radacctd::api::auth::Role;
use radacctd::config::{ReconcileConfig, ZombiePolicy};
use radacctd::disconnect::{DisconnectConfig, Disconnector};
use radacctd::ingest::Item;
use radacctd::jobs::RouterReconciler;
use radacctd::radius::accounting::{Parsed, parse};
use radacctd::radius::codec::Packet;
use radacctd::store::NasRow;

const NAS_IP: &str = "127.0.0.1";

both_stores!(
    ghost_is_closed_with_lost_service_and_logged,
    zombie_and_mismatch_are_reported_and_nothing_is_closed,
    unreachable_router_changes_nothing,
    router_dropping_the_connection_midway_changes_nothing,
    trapped_print_changes_nothing,
    ten_thousand_sessions_per_router,
    nas_health_answers_what_the_traffic_sent,
    cli_dry_run_lists_and_changes_nothing,
    cli_without_dry_run_closes_ghosts_through_its_own_writer,
    cli_ghost_close_loses_to_an_interim_committed_meanwhile,
    zombies_disconnect_removes_them_from_the_router,
    sessions_opened_or_closed_during_the_print_are_neither_ghosts_nor_zombies,
    zombies_are_kept_when_most_of_the_router_is_zombies,
);

struct Lab {
    db: TestDb,
    app: TestApp,
    nas: Nas,
    /// Kept so that the router serves until the test ends.
    _ros: FakeRouterOs,
    reconciler: RouterReconciler,
}

fn sess(n: u32) -> Sess {
    Sess::new(n).on_nas(NAS_IP)
}

/// Session `n` as the router lists it: RouterOS prints the Acct-Session-Id as `0x` and
/// upper-case hex.
fn on_router(n: u32) -> Active {
    let s = sess(n);
    Active::ppp(
        &s.user,
        &s.framed_ip.to_string(),
        &format!("0x{}", s.session_id.to_uppercase()),
        &s.mac,
        "1h2m3s",
    )
}

fn nas_row(api_port: u16) -> NasRow {
    NasRow {
        id: 1,
        nasname: NAS_IP.into(),
        shortname: "lab-bng".into(),
        secret: SECRET.into(),
        coa_port: None,
        api_port: Some(i64::from(api_port)),
        api_username: Some("api".into()),
        api_password: Some("pw".into()),
        api_tls: false,
        api_tls_name: None,
    }
}

async fn lab_with(backend: Backend, router: RosConfig) -> Option<Lab> {
    let reconcile = ReconcileConfig {
        timeout_secs: 20,
        ..ReconcileConfig::default()
    };
    lab_configured(backend, router, reconcile).await
}

async fn lab_configured(
    backend: Backend,
    router: RosConfig,
    reconcile: ReconcileConfig,
) -> Option<Lab> {
    let db = TestDb::new(backend).await?;
    let app = TestApp::start(test_config(&db)).await;
    let nas = Nas::new(app.radius_addr).await;
    let ros = FakeRouterOs::start(router).await;
    let disc = Disconnector::new(
        DisconnectConfig {
            api_connect_timeout_ms: 1000,
            api_reply_timeout_ms: 1000,
            ..DisconnectConfig::default()
        },
        &app.ingest,
        app.index.clone(),
        app.stats.clone(),
    )
    .await
    .expect("CoA sockets bind");
    disc.set_nas(&[nas_row(ros.addr.port())]);
    let reconciler = RouterReconciler::new(
        disc,
        app.index.clone(),
        app.ingest.clone(),
        &app.stats,
        reconcile,
    );
    Some(Lab {
        db,
        app,
        nas,
        _ros: ros,
        reconciler,
    })
}

async fn lab(backend: Backend, active: Vec<Active>) -> Option<Lab> {
    lab_with(
        backend,
        RosConfig {
            active,
            ..RosConfig::default()
        },
    )
    .await
}

impl Lab {
    /// Opens session `n`: a Start ten minutes ago and an Interim-Update five minutes ago.
    async fn open(&mut self, n: u32) -> Sess {
        let s = sess(n);
        let t = now();
        self.nas
            .send(&s.start(t - 600))
            .await
            .expect("Start answered");
        self.nas
            .send(&s.interim(t - 300, 300, 1_000, 2_000))
            .await
            .expect("Interim answered");
        s
    }

    async fn reconcile(&self) -> anyhow::Result<radacctd::jobs::RouterReport> {
        let router = self.reconciler.routers().pop().expect("the lab router");
        self.reconciler.reconcile(&router, false).await
    }

    /// The lab router as a `nas` row in the database, for the `radacctd reconcile` command.
    async fn insert_nas_row(&self) {
        self.db
            .exec(&format!(
                "INSERT INTO nas (id, nasname, shortname, type, secret, api_port, api_username, api_password) \
                 VALUES (1, '{NAS_IP}', 'lab-bng', 'other', '{SECRET}', {}, 'api', 'pw')",
                self._ros.addr.port()
            ))
            .await;
    }

    /// The action log of session `n`'s row.
    async fn actions(&self, n: u32) -> Vec<radacctd::store::StoredAction> {
        let key = sess(n).key();
        let row = self
            .db
            .rows()
            .await
            .into_iter()
            .find(|r| r.acctuniqueid == key)
            .expect("the session's row");
        self.app
            .store
            .session_actions(row.radacctid.expect("radacctid"))
            .await
            .expect("action log")
    }

    fn open_keys(&self) -> usize {
        self.app.index.len()
    }

    async fn stop(self) {
        drop(self.reconciler);
        self.app.stop().await;
    }
}

async fn ghost_is_closed_with_lost_service_and_logged(backend: Backend) {
    let Some(mut lab) = lab(backend, vec![on_router(1), on_router(2)]).await else {
        return;
    };
    let t = now();
    for n in 1..=3 {
        lab.open(n).await;
    }
    let report = lab.reconcile().await.expect("complete answer");
    assert_eq!(report.router_sessions, 2);
    assert_eq!(report.findings.ghosts.len(), 1);
    assert_eq!(report.ghosts_closed, 1);
    assert_eq!(report.findings.zombie_count, 0);
    assert_eq!(
        report.findings.mismatch_count, 0,
        "0x81… matches 8a3f…, MACs match"
    );
    let ghost = sess(3).key();
    assert!(lab.app.index.get(&ghost).is_none(), "left the index");
    assert_eq!(lab.open_keys(), 2);
    let rows = lab.db.rows().await;
    let row = rows
        .iter()
        .find(|r| r.acctuniqueid == ghost)
        .expect("ghost row");
    assert_eq!(row.acctterminatecause.as_deref(), Some("Lost-Service"));
    let stop = row.acctstoptime.expect("closed");
    assert!(
        (i64::from(t) - 301..=i64::from(t) - 299).contains(&stop),
        "stop time = the last interim ({stop} vs {t})"
    );
    assert_eq!(row.acctsessiontime, Some(300));
    let actions = lab
        .app
        .store
        .session_actions(row.radacctid.expect("radacctid"))
        .await
        .expect("action log");
    assert_eq!(actions.len(), 1);
    let a = &actions[0];
    assert_eq!(
        (a.action.as_str(), a.method.as_str(), a.outcome.as_str()),
        ("reconcile", "api", "ghost_closed")
    );
    let detail: Value = serde_json::from_str(a.detail.as_deref().expect("detail")).expect("json");
    assert_eq!(detail["router_sessions"], 2);
    assert_eq!(detail["stop_time"], stop);
    assert_eq!(detail["row_closed"], true);
    assert_eq!(detail["acctsessionid"], sess(3).session_id);
    // A second run finds nothing more to do.
    let again = lab.reconcile().await.expect("complete answer");
    assert!(again.findings.ghosts.is_empty());
    lab.stop().await;
}

async fn zombie_and_mismatch_are_reported_and_nothing_is_closed(backend: Backend) {
    let mut moved = on_router(1);
    moved.address = "10.200.0.1".into();
    let mut young = on_router(8);
    young.uptime = Some("40s".into());
    let Some(mut lab) = lab(backend, vec![moved, on_router(9), young]).await else {
        return;
    };
    lab.open(1).await;
    let report = lab.reconcile().await.expect("complete answer");
    let f = &report.findings;
    assert!(f.ghosts.is_empty());
    assert_eq!(
        f.zombie_count, 1,
        "the 40 s old session may still have its Start in flight"
    );
    assert_eq!(f.zombies[0].name.as_deref(), Some(sess(9).user.as_str()));
    assert_eq!(f.zombies[0].uptime_secs, Some(3_723));
    assert_eq!(f.mismatch_count, 1);
    let ip = f.mismatches[0]
        .framed_ip
        .as_ref()
        .expect("framed IP differs");
    assert_eq!(ip.router, "10.200.0.1");
    assert!(f.mismatches[0].mac.is_none());
    assert_eq!(lab.open_keys(), 1, "nothing closed");
    let health = radacctd::nas::NasHealth::of(&lab.app.stats)
        .figures(NAS_IP.parse().expect("ip"))
        .expect("figures");
    let r = health.reconcile.expect("last reconciliation");
    assert_eq!((r.zombies, r.mismatches, r.ghosts), (1, 1, 0));
    assert!(health.api.expect("api").reachable);
    lab.stop().await;
}

async fn unreachable_router_changes_nothing(backend: Backend) {
    let Some(mut lab) = lab(backend, vec![]).await else {
        return;
    };
    lab.open(1).await;
    // Nothing listens on the router's API port any more.
    let dead = free_port_tcp();
    let disc = Disconnector::new(
        DisconnectConfig {
            api_connect_timeout_ms: 500,
            ..DisconnectConfig::default()
        },
        &lab.app.ingest,
        lab.app.index.clone(),
        lab.app.stats.clone(),
    )
    .await
    .expect("bind");
    disc.set_nas(&[nas_row(dead)]);
    lab.reconciler = RouterReconciler::new(
        disc,
        lab.app.index.clone(),
        lab.app.ingest.clone(),
        &lab.app.stats,
        ReconcileConfig::default(),
    );
    let err = lab.reconcile().await.expect_err("no answer");
    assert!(format!("{err:#}").contains("connect"), "{err:#}");
    assert_eq!(
        lab.open_keys(),
        1,
        "an empty answer that never came closes nothing"
    );
    assert_eq!(lab.db.open_rows().await.len(), 1);
    let health = radacctd::nas::NasHealth::of(&lab.app.stats)
        .figures(NAS_IP.parse().expect("ip"))
        .expect("figures");
    assert!(!health.api.expect("api").reachable);
    assert!(health.reconcile.is_none());
    lab.stop().await;
}

async fn router_dropping_the_connection_midway_changes_nothing(backend: Backend) {
    let router = RosConfig {
        active: vec![on_router(1), on_router(2), on_router(3)],
        drop_print_after: Some(1),
        ..RosConfig::default()
    };
    let Some(mut lab) = lab_with(backend, router).await else {
        return;
    };
    for n in 1..=3 {
        lab.open(n).await;
    }
    let err = lab.reconcile().await.expect_err("incomplete answer");
    assert!(format!("{err:#}").contains("after 1 entries"), "{err:#}");
    assert_eq!(
        lab.open_keys(),
        3,
        "two sessions missing from half an answer stay open"
    );
    assert_eq!(lab.db.open_rows().await.len(), 3);
    lab.stop().await;
}

async fn trapped_print_changes_nothing(backend: Backend) {
    let router = RosConfig {
        active: vec![on_router(1)],
        trap_on_print: true,
        ..RosConfig::default()
    };
    let Some(mut lab) = lab_with(backend, router).await else {
        return;
    };
    lab.open(1).await;
    lab.open(2).await;
    let err = lab.reconcile().await.expect_err("trapped");
    assert!(format!("{err:#}").contains("trapped"), "{err:#}");
    assert_eq!(lab.db.open_rows().await.len(), 2);
    lab.stop().await;
}

/// 10,000 open sessions on one NAS and 9,990 of them on its router: the ten others are closed,
/// in one streamed print.
async fn ten_thousand_sessions_per_router(backend: Backend) {
    const N: u32 = 10_000;
    const GHOSTS: u32 = 10;
    let active: Vec<Active> = (0..N - GHOSTS).map(on_router).collect();
    let Some(lab) = lab(backend, active).await else {
        return;
    };
    let t = now();
    let nas: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for n in 0..N {
        let bytes = build_request((n % 256) as u8, SECRET.as_bytes(), &sess(n).start(t - 600));
        let packet = Packet::decode(&bytes).expect("decodes");
        let Parsed::Event(event) = parse(&packet, nas, i64::from(t), 86_400) else {
            panic!("an accounting event");
        };
        lab.app
            .ingest
            .send(Item::Event { event, reply: None })
            .await
            .expect("queued");
    }
    assert!(
        crate::common::wait_until(Duration::from_secs(120), || lab.app.index.len()
            == N as usize)
        .await,
        "all {N} sessions open ({} so far)",
        lab.app.index.len()
    );
    let started = Instant::now();
    let report = lab.reconcile().await.expect("complete answer");
    let took = started.elapsed();
    assert_eq!(report.router_sessions, u64::from(N - GHOSTS));
    assert_eq!(report.findings.open, u64::from(N));
    assert_eq!(report.findings.matched, u64::from(N - GHOSTS));
    assert_eq!(report.ghosts_closed, u64::from(GHOSTS));
    assert_eq!(report.findings.zombie_count, 0);
    assert_eq!(lab.app.index.len(), (N - GHOSTS) as usize);
    for n in N - GHOSTS..N {
        assert!(lab.app.index.get(&sess(n).key()).is_none());
    }
    assert!(took < Duration::from_secs(30), "took {took:?}");
    eprintln!("10,000 sessions reconciled in {took:?}");
    lab.stop().await;
}

async fn nas_health_answers_what_the_traffic_sent(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let mut config = api_config(&db);
    config.metrics.enabled = true;
    config.metrics.listen = "127.0.0.1:0".parse().expect("addr");
    let app = TestApp::start(config).await;
    db.exec(&format!(
        "INSERT INTO nas (id, nasname, shortname, type, secret, api_port, api_username, api_password) \
         VALUES (1, '{NAS_IP}', 'lab-bng', 'other', '{SECRET}', 1, 'api', 'pw')"
    ))
    .await;
    let mut nas = Nas::new(app.radius_addr).await;
    let t = now() - 900;
    for n in 1..=2 {
        let s = sess(n);
        nas.send(&s.start(t)).await.expect("Start");
        nas.send(&s.interim(t + 300, 300, 10, 20))
            .await
            .expect("Interim");
    }
    nas.send(&sess(1).interim(t + 600, 600, 30, 40))
        .await
        .expect("Interim");
    nas.send(&sess(2).stop(t + 620, 620, 50, 60, 1))
        .await
        .expect("Stop");
    let mut wrong = Nas::with_secret(app.radius_addr, "not-the-secret").await;
    let req = wrong.request(&sess(3).start(t));
    assert!(
        wrong
            .exchange(&req, Duration::from_millis(500))
            .await
            .is_none(),
        "a wrong secret gets no answer"
    );

    let admin = token(Role::Admin, None, &["nas.view"]);
    let (status, body) = app.json("/api/nas", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let entry = &body["data"][0];
    assert_eq!(entry["id"], 1);
    assert_eq!(entry["shortname"], "lab-bng");
    assert_eq!(entry["open_sessions"], 1);
    assert_eq!(entry["api_configured"], true);
    assert!(entry.get("secret").is_none() && entry.get("api_password").is_none());
    let h = &entry["health"];
    assert_eq!(h["packets"]["start"], 2);
    assert_eq!(h["packets"]["interim_update"], 3);
    assert_eq!(h["packets"]["stop"], 1);
    assert_eq!(h["packets_per_minute"]["interim_update"], 3);
    assert_eq!(h["interim_interval_secs"], 300);
    assert_eq!(h["bad_authenticator"], 1);
    assert!(h["last_packet"].as_i64().expect("last packet") >= i64::from(now()) - 60);
    let (status, one) = app.json("/api/nas/1", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(one["data"], *entry);

    app.expect_error("/api/nas/2", Some(&admin), 404, "nas not found")
        .await;
    app.expect_error(
        "/api/nas/x",
        Some(&admin),
        400,
        "invalid nas id, must be an integer",
    )
    .await;
    let reseller = token(Role::Reseller, Some(7), &["sessions.view"]);
    app.expect_error("/api/nas", Some(&reseller), 403, "nas.view denied")
        .await;
    let granted = token(Role::Reseller, Some(7), &["nas.view"]);
    assert_eq!(app.json("/api/nas", Some(&granted)).await.0, 200);

    let metrics = scrape(app.metrics_addr.expect("metrics")).await;
    let nas_label = format!("nas=\"{NAS_IP}\"");
    assert_eq!(
        value(
            &metrics,
            &format!("radacctd_nas_bad_authenticator_total{{{nas_label}}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("radacctd_nas_packets_total{{{nas_label},type=\"interim_update\"}}")
        ),
        3.0
    );
    assert_eq!(
        value(
            &metrics,
            &format!("radacctd_nas_interim_interval_seconds{{{nas_label}}}")
        ),
        300.0
    );
    app.stop().await;
}

async fn cli_dry_run_lists_and_changes_nothing(backend: Backend) {
    let Some(mut lab) = lab(backend, vec![on_router(1)]).await else {
        return;
    };
    lab.open(1).await;
    lab.open(2).await;
    lab.insert_nas_row().await;
    radacctd::cli::reconcile(test_config(&lab.db), 1, true)
        .await
        .expect("dry run");
    assert_eq!(
        lab.db.open_rows().await.len(),
        2,
        "a dry run closes nothing"
    );
    let err = radacctd::cli::reconcile(test_config(&lab.db), 2, true)
        .await
        .expect_err("no such nas");
    assert!(err.to_string().contains("nas 2"), "{err}");
    lab.stop().await;
}

/// `radacctd reconcile --nas 1` (no `--dry-run`) loads the open rows itself and closes the
/// ghost through a writer of its own, with its action log row; a second run finds nothing.
async fn cli_without_dry_run_closes_ghosts_through_its_own_writer(backend: Backend) {
    let Some(mut lab) = lab(backend, vec![on_router(1)]).await else {
        return;
    };
    let t = i64::from(now());
    lab.open(1).await;
    lab.open(2).await;
    lab.insert_nas_row().await;
    radacctd::cli::reconcile(test_config(&lab.db), 1, false)
        .await
        .expect("reconciled");
    let open: Vec<String> = lab
        .db
        .open_rows()
        .await
        .into_iter()
        .map(|r| r.acctuniqueid)
        .collect();
    assert_eq!(open, vec![sess(1).key()], "only the ghost was closed");
    let ghost = lab
        .db
        .rows()
        .await
        .into_iter()
        .find(|r| r.acctuniqueid == sess(2).key())
        .expect("ghost row");
    assert_eq!(ghost.acctterminatecause.as_deref(), Some("Lost-Service"));
    let stop = ghost.acctstoptime.expect("closed");
    assert!(
        (t - 301..=t - 299).contains(&stop),
        "stop time = the last interim ({stop} vs {t})"
    );
    let actions = lab.actions(2).await;
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (actions[0].action.as_str(), actions[0].outcome.as_str()),
        ("reconcile", "ghost_closed")
    );
    let detail: Value =
        serde_json::from_str(actions[0].detail.as_deref().expect("detail")).expect("json");
    assert_eq!(detail["row_closed"], true);
    assert!(lab.actions(1).await.is_empty());

    radacctd::cli::reconcile(test_config(&lab.db), 1, false)
        .await
        .expect("second run");
    assert_eq!(lab.actions(2).await.len(), 1, "nothing more to close");
    assert_eq!(lab.db.open_rows().await.len(), 1);
    lab.stop().await;
}

/// The command's index is loaded once, before the print. An interim the daemon commits for the
/// ghost while the router is answering makes the writer leave the row open; the action log
/// says so (`ghost_skipped`, `row_closed: false`) instead of claiming a close.
async fn cli_ghost_close_loses_to_an_interim_committed_meanwhile(backend: Backend) {
    let hold = PrintHold::default();
    let router = RosConfig {
        active: vec![on_router(1)],
        hold_print_done: Some(hold.clone()),
        ..RosConfig::default()
    };
    let Some(mut lab) = lab_with(backend, router).await else {
        return;
    };
    lab.open(1).await;
    lab.open(2).await;
    lab.insert_nas_row().await;
    let config = test_config(&lab.db);
    let cli = tokio::spawn(radacctd::cli::reconcile(config, 1, false));
    tokio::time::timeout(Duration::from_secs(20), hold.sent())
        .await
        .expect("the command printed /ppp/active");
    let t = now();
    lab.nas
        .send(&sess(2).interim(t - 5, 595, 5_000, 6_000))
        .await
        .expect("Interim answered");
    hold.release();
    cli.await.expect("joined").expect("reconciled");
    assert_eq!(lab.db.open_rows().await.len(), 2, "the interim won");
    let actions = lab.actions(2).await;
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].outcome, "ghost_skipped");
    let detail: Value =
        serde_json::from_str(actions[0].detail.as_deref().expect("detail")).expect("json");
    assert_eq!(detail["row_closed"], false);
    lab.stop().await;
}

/// `reconcile.zombies = "disconnect"`: the zombies are removed from the router (a dry run
/// removes nothing); the matched session, another login of the same user listed as a zombie
/// aside, and a session younger than the grace stay.
async fn zombies_disconnect_removes_them_from_the_router(backend: Backend) {
    let mut young = on_router(8);
    young.uptime = Some("40s".into());
    let mut second_login = on_router(1);
    second_login.id = "*DEAD0001".into();
    second_login.session_id = Some("0xDEAD0001".into());
    second_login.address = "10.200.0.9".into();
    let router = RosConfig {
        active: vec![on_router(1), second_login, on_router(9), young],
        ..RosConfig::default()
    };
    let reconcile = ReconcileConfig {
        timeout_secs: 20,
        zombies: ZombiePolicy::Disconnect,
        ..ReconcileConfig::default()
    };
    let Some(mut lab) = lab_configured(backend, router, reconcile).await else {
        return;
    };
    lab.open(1).await;
    let router = lab.reconciler.routers().pop().expect("the lab router");
    let dry = lab
        .reconciler
        .reconcile(&router, true)
        .await
        .expect("dry run");
    assert_eq!(dry.findings.zombie_count, 2);
    assert_eq!(dry.zombies_disconnected, 0);
    assert_eq!(lab._ros.active().len(), 4, "a dry run removes nothing");

    let report = lab.reconcile().await.expect("complete answer");
    assert_eq!(report.findings.zombie_count, 2);
    assert_eq!(report.zombies_disconnected, 2);
    let mut left: Vec<String> = lab._ros.active().into_iter().map(|a| a.id).collect();
    left.sort();
    let mut want = vec![on_router(1).id, on_router(8).id];
    want.sort();
    assert_eq!(left, want);
    assert_eq!(lab.open_keys(), 1, "nothing closed here");
    let health = radacctd::nas::NasHealth::of(&lab.app.stats)
        .figures(NAS_IP.parse().expect("ip"))
        .expect("figures");
    assert_eq!(health.reconcile.expect("last").zombies_disconnected, 2);

    let again = lab.reconcile().await.expect("complete answer");
    assert_eq!(again.findings.zombie_count, 0);
    lab.stop().await;
}

/// The race with the print, end to end: the test router sends its table and holds the `!done`
/// while a new session is opened and a listed one is stopped through the accounting socket.
/// The new session (absent from the table) is no ghost, the stopped one (present) no zombie;
/// the session that was open before the print and is absent is the one ghost.
async fn sessions_opened_or_closed_during_the_print_are_neither_ghosts_nor_zombies(
    backend: Backend,
) {
    let hold = PrintHold::default();
    let router = RosConfig {
        active: vec![on_router(2)],
        hold_print_done: Some(hold.clone()),
        ..RosConfig::default()
    };
    let Some(mut lab) = lab_with(backend, router).await else {
        return;
    };
    lab.open(1).await;
    lab.open(2).await;
    let reconciler = lab.reconciler.clone();
    let router = reconciler.routers().pop().expect("the lab router");
    let run = tokio::spawn(async move { reconciler.reconcile(&router, false).await });
    tokio::time::timeout(Duration::from_secs(20), hold.sent())
        .await
        .expect("the print's entries were sent");
    lab.open(3).await;
    let t = now();
    lab.nas
        .send(&sess(2).stop(t, 600, 3_000, 4_000, 1))
        .await
        .expect("Stop answered");
    assert!(lab.app.index.get(&sess(3).key()).is_some());
    assert!(lab.app.index.get(&sess(2).key()).is_none());
    hold.release();
    let report = run.await.expect("joined").expect("complete answer");
    let f = &report.findings;
    let ghosts: Vec<&str> = f.ghosts.iter().map(|g| g.acctuniqueid.as_str()).collect();
    assert_eq!(ghosts, vec![sess(1).key().as_str()]);
    assert_eq!(report.ghosts_closed, 1);
    assert_eq!(f.too_new, 1, "session 3 is left for the next run");
    assert_eq!(
        f.zombie_count, 0,
        "session 2 was open here before the print"
    );
    let open: Vec<String> = lab
        .db
        .open_rows()
        .await
        .into_iter()
        .map(|r| r.acctuniqueid)
        .collect();
    assert_eq!(open, vec![sess(3).key()]);
    lab.stop().await;
}

/// A router whose sessions are nearly all unknown here (its accounting is filed under another
/// NAS address): `zombies = "disconnect"` removes none of them.
async fn zombies_are_kept_when_most_of_the_router_is_zombies(backend: Backend) {
    let router = RosConfig {
        active: (1..=12).map(on_router).collect(),
        ..RosConfig::default()
    };
    let reconcile = ReconcileConfig {
        timeout_secs: 20,
        zombies: ZombiePolicy::Disconnect,
        ..ReconcileConfig::default()
    };
    let Some(mut lab) = lab_configured(backend, router, reconcile).await else {
        return;
    };
    lab.open(1).await;
    let report = lab.reconcile().await.expect("complete answer");
    assert_eq!(report.findings.zombie_count, 11);
    assert_eq!(report.zombies_disconnected, 0);
    assert_eq!(lab._ros.active().len(), 12);
    assert!(
        !lab._ros
            .commands()
            .iter()
            .any(|c| c == "/ppp/active/remove"),
        "nothing was removed"
    );
    lab.stop().await;
}
