//! The usage ledger and fair-use throttling against the real application, on both stores: the
//! ledger equals the rows' octets whatever the delivery, usage splits across hours, days and
//! months in the requested time zone, the usage API's errors and scope, and a fair-use crossing
//! that sends exactly one CoA per open session to a test NAS, survives a restart and is undone
//! by the period's reset.

use std::time::Duration;

use crate::api_disconnect::db_with_nas;
use crate::common::api::{admin, api_config, reseller, token};
use crate::common::fake_nas::{COA_REQUEST, FakeNas, NasMode, Received};
use crate::common::{
    self, Backend, Nas, Sess, TestApp, TestDb, eventually, interims_on_two_nodes, now, rows_redone,
};
use radacctd::api::auth::Role;
use radacctd::config::{Config, FairUsePolicy, PeriodKind};
use radacctd::radius::dictionary as d;
use serde_json::Value;

both_stores!(
    the_ledger_equals_the_rows_octets_through_retransmits_repeats_and_reorders,
    usage_splits_across_a_month_boundary_and_counts_in_the_requested_zone,
    a_local_day_across_a_dst_change_holds_25_hours_of_usage,
    the_usage_api_checks_parameters_permission_and_scope,
    crossing_a_threshold_throttles_each_open_session_once_and_the_reset_restores,
    a_throttling_coa_the_nas_did_not_answer_is_sent_again_on_the_next_interim,
);

/// docs/HA.md: two nodes on one PostgreSQL commit interims of the same sessions, at once and
/// alternately (each node's index is a commit behind the other's, so its guarded writes are
/// refused and redone under locks): the ledger still adds each row change exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_committing_one_sessions_interims_count_each_change_once() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let node = |name: &str| {
        let mut c = config(&db);
        c.node.name = name.into();
        c
    };
    let a = TestApp::start(node("a")).await;
    let b = TestApp::start(node("b")).await;
    let sessions: Vec<Sess> = (20..30).map(Sess::new).collect();
    let t0 = now() - 7200;
    interims_on_two_nodes(a.radius_addr, b.radius_addr, &sessions, t0).await;
    let rows = db.rows().await;
    let input: i64 = rows.iter().map(|r| r.acctinputoctets.unwrap_or(0)).sum();
    let output: i64 = rows.iter().map(|r| r.acctoutputoctets.unwrap_or(0)).sum();
    assert_eq!(input, 10 * 12 * 1_000_003);
    assert_eq!(ledger_sums(&db).await, (input, output, input, output));
    // The case under test happened: writes refused because the other node changed the row,
    // redone under locks.
    assert!(
        rows_redone(&[&a, &b]) > 0,
        "no write was refused and redone"
    );
    a.stop().await;
    b.stop().await;
}

/// Timestamps months in the past are accepted as sent (these tests replay past periods).
fn config(db: &TestDb) -> Config {
    let mut c = api_config(db);
    c.radius.max_clock_skew_secs = 400 * 86_400;
    c
}

fn at(s: &str) -> u32 {
    s.parse::<jiff::Timestamp>().expect("time").as_second() as u32
}

/// Sums of the ledger tables: (hourly input, hourly output, daily input, daily output).
async fn ledger_sums(db: &TestDb) -> (i64, i64, i64, i64) {
    (
        db.count("SELECT CAST(COALESCE(SUM(input_octets), 0) AS BIGINT) FROM usage_hourly")
            .await,
        db.count("SELECT CAST(COALESCE(SUM(output_octets), 0) AS BIGINT) FROM usage_hourly")
            .await,
        db.count("SELECT CAST(COALESCE(SUM(input_octets), 0) AS BIGINT) FROM usage_daily")
            .await,
        db.count("SELECT CAST(COALESCE(SUM(output_octets), 0) AS BIGINT) FROM usage_daily")
            .await,
    )
}

async fn the_ledger_equals_the_rows_octets_through_retransmits_repeats_and_reorders(
    backend: Backend,
) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let s = Sess::new(1);
    let t0 = now() - 4000;
    let big = 5u64 << 32; // past 2^32: gigawords
    nas.send(&s.start(t0)).await.expect("start");
    nas.send(&s.interim(t0 + 600, 600, 1_000, 2_000))
        .await
        .expect("interim");
    // A retransmit (same identifier and authenticator) and a repeat (new identifier).
    let second = nas.request(&s.interim(t0 + 1200, 1200, big + 7, 9_000));
    nas.send_bytes(&second).await.expect("interim 2");
    nas.send_bytes(&second).await.expect("retransmit");
    nas.send(&s.interim(t0 + 1200, 1200, big + 7, 9_000))
        .await
        .expect("repeat");
    // A late interim older than what the row holds.
    nas.send(&s.interim(t0 + 900, 900, 5_000, 5_000))
        .await
        .expect("stale");
    nas.send(&s.stop(t0 + 1800, 1800, big + 70_000, 12_345, 1))
        .await
        .expect("stop");
    // Another session closed by an Accounting-Off: the close adds nothing.
    let other = Sess::new(2);
    nas.send(&other.start(t0)).await.expect("start 2");
    nas.send(&other.interim(t0 + 300, 300, 400, 500))
        .await
        .expect("interim 2");
    nas.send(&common::nas_onoff(
        "192.0.2.10",
        d::STATUS_ACCOUNTING_OFF,
        t0 + 3000,
    ))
    .await
    .expect("accounting-off");
    let rows = db.rows().await;
    let (mut input, mut output) = (0, 0);
    for r in &rows {
        input += r.acctinputoctets.unwrap_or(0);
        output += r.acctoutputoctets.unwrap_or(0);
    }
    assert_eq!(input, (big + 70_000 + 400) as i64);
    assert_eq!(output, 12_345 + 500);
    assert_eq!(ledger_sums(&db).await, (input, output, input, output));
    // The subscriber's own total through the API.
    let (st, body) = app
        .json(
            &format!(
                "/api/subscribers/{}/usage?granularity=hour&from={}",
                s.user,
                radacctd::api::sessions::rfc3339(i64::from(t0) - 3600).expect("time")
            ),
            Some(&admin()),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["data"]["total"]["input_octets"], (big + 70_000) as i64);
    assert_eq!(
        body["data"]["total"]["octets"],
        (big + 70_000 + 12_345) as i64
    );
    app.stop().await;
}

async fn usage_splits_across_a_month_boundary_and_counts_in_the_requested_zone(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let s = Sess::new(3);
    // 22:30 to 23:30 UTC on 30 November: November in UTC, but 23:30–00:30 in Berlin (UTC+1),
    // half November and half December there. 3600 bytes over the hour: 1 per second.
    let t0 = at("2026-11-30T22:30:00Z");
    nas.send(&s.start(t0)).await.expect("start");
    nas.send(&s.interim(t0 + 3600, 3600, 3600, 0))
        .await
        .expect("interim");
    let hours = app
        .json(
            &format!(
                "/api/subscribers/{}/usage?granularity=hour&from=2026-11-30&to=2026-12-02&tz=UTC",
                s.user
            ),
            Some(&admin()),
        )
        .await
        .1;
    let buckets: Vec<(String, i64)> = hours["data"]["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| {
            (
                b["start"].as_str().expect("start").to_owned(),
                b["input_octets"].as_i64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        buckets,
        vec![
            ("2026-11-30T22:00:00+00:00".into(), 1800),
            ("2026-11-30T23:00:00+00:00".into(), 1800)
        ],
        "interpolated linearly between the two updates"
    );
    let months = |tz: &'static str| {
        let path = format!(
            "/api/subscribers/{}/usage?granularity=month&from=2026-11-01&to=2026-12-31&tz={tz}",
            s.user
        );
        let app = &app;
        async move {
            let (st, body) = app.json(&path, Some(&admin())).await;
            assert_eq!(st, 200, "{body}");
            body["data"]["buckets"]
                .as_array()
                .expect("buckets")
                .iter()
                .map(|b| {
                    (
                        b["start"].as_str().expect("start").to_owned(),
                        b["octets"].as_i64().expect("n"),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        months("UTC").await,
        vec![("2026-11-01T00:00:00+00:00".into(), 3600)]
    );
    assert_eq!(
        months("Europe/Berlin").await,
        vec![
            ("2026-11-01T00:00:00+01:00".into(), 1800),
            ("2026-12-01T00:00:00+01:00".into(), 1800)
        ]
    );
    app.stop().await;
}

async fn a_local_day_across_a_dst_change_holds_25_hours_of_usage(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let s = Sess::new(4);
    // Hourly interims of 1000 bytes each from local midnight of 25 October 2026 in Berlin
    // (22:00 UTC the day before) for 26 hours; that day is 25 hours long.
    let t0 = at("2026-10-24T22:00:00Z");
    nas.send(&s.start(t0)).await.expect("start");
    for h in 1..=26u32 {
        nas.send(&s.interim(t0 + h * 3600, h * 3600, u64::from(h) * 1000, 0))
            .await
            .expect("interim");
    }
    let path = format!(
        "/api/subscribers/{}/usage?granularity=day&from=2026-10-25&to=2026-10-27&tz=Europe/Berlin",
        s.user
    );
    let (st, body) = app.json(&path, Some(&admin())).await;
    assert_eq!(st, 200, "{body}");
    let days: Vec<(String, i64)> = body["data"]["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| {
            (
                b["start"].as_str().expect("start").to_owned(),
                b["octets"].as_i64().expect("n"),
            )
        })
        .collect();
    assert_eq!(
        days,
        vec![
            ("2026-10-25T00:00:00+02:00".into(), 25_000),
            ("2026-10-26T00:00:00+01:00".into(), 1_000)
        ]
    );
    app.stop().await;
}

async fn the_usage_api_checks_parameters_permission_and_scope(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    store.close().await;
    let (mine, theirs) = (Sess::new(5), Sess::new(6));
    db.exec(&format!(
        "INSERT INTO resellers (id, name) VALUES (5, 'r5'), (6, 'r6'); \
         INSERT INTO subscribers (username, reseller_id) VALUES ('{}', 5), ('{}', 6);",
        mine.user, theirs.user
    ))
    .await;
    let app = TestApp::start(config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    // Within today, so that `period=today` below holds all their traffic.
    let t0 = common::within_today(600);
    for (s, bytes) in [(&mine, 100u64), (&theirs, 900)] {
        nas.send(&s.start(t0)).await.expect("start");
        nas.send(&s.interim(t0 + 300, 300, bytes, 0))
            .await
            .expect("interim");
    }
    let usage = |u: &str, q: &str| format!("/api/subscribers/{u}/usage{q}");
    for (query, message) in [
        (
            "?granularity=week",
            "invalid granularity, must be hour, day or month",
        ),
        (
            "?tz=Mars/Olympus",
            "invalid tz, unknown time zone \"Mars/Olympus\"",
        ),
        ("?from=yesterday", "invalid from"),
        (
            "?from=2026-12-02&to=2026-12-01",
            "invalid to, must be later than from",
        ),
        (
            "?from=2020-01-01&to=2026-01-01",
            "invalid to, at most 400 days after from",
        ),
    ] {
        let (st, body) = app.json(&usage(&mine.user, query), Some(&admin())).await;
        assert_eq!(st, 400, "{query}: {body}");
        assert_eq!(body["success"], false);
        let m = body["message"].as_str().expect("message");
        assert!(m.starts_with(message), "{query}: {m}");
    }
    for (query, message) in [
        (
            "?period=forever",
            "invalid period, must be one of today, yesterday, this_month, last_month",
        ),
        ("?limit=0", "invalid limit, must be between 1 and 1000"),
        ("?limit=10&limit=11", "invalid limit, given more than once"),
    ] {
        let (st, body) = app
            .json(&format!("/api/usage/top{query}"), Some(&admin()))
            .await;
        assert_eq!(st, 400, "{query}: {body}");
        assert_eq!(body["message"], message);
    }
    // Permission.
    let no_view = token(Role::Admin, None, &["subscribers.coa"]);
    let (st, body) = app.json(&usage(&mine.user, ""), Some(&no_view)).await;
    assert_eq!(
        (st, body["message"].as_str()),
        (403, Some("sessions.view denied"))
    );
    assert_eq!(app.json("/api/usage/top", Some(&no_view)).await.0, 403);
    assert_eq!(app.json("/api/usage/top", None).await.0, 401);
    // Scope: reseller 5 sees its subscriber, not reseller 6's, in both endpoints.
    assert_eq!(
        app.json(&usage(&mine.user, ""), Some(&reseller(5))).await.0,
        200
    );
    let (st, body) = app.json(&usage(&theirs.user, ""), Some(&reseller(5))).await;
    assert_eq!(
        (st, body["message"].as_str()),
        (403, Some("not authorized"))
    );
    let names = |v: &Value| -> Vec<String> {
        v["data"]["subscribers"]
            .as_array()
            .expect("list")
            .iter()
            .map(|s| s["username"].as_str().expect("name").to_owned())
            .collect()
    };
    let (st, all) = app
        .json("/api/usage/top?period=today&tz=UTC", Some(&admin()))
        .await;
    assert_eq!(st, 200, "{all}");
    assert_eq!(
        names(&all),
        vec![theirs.user.clone(), mine.user.clone()],
        "most first"
    );
    assert_eq!(all["data"]["subscribers"][0]["octets"], 900);
    let scoped = app
        .json("/api/usage/top?period=today&tz=UTC", Some(&reseller(5)))
        .await
        .1;
    assert_eq!(names(&scoped), vec![mine.user.clone()]);
    let one = app
        .json("/api/usage/top?period=today&limit=1", Some(&admin()))
        .await
        .1;
    assert_eq!(names(&one), vec![theirs.user.clone()]);
    app.stop().await;
}

/// The fair-use lab's policy: 10 kB a day, then 1M/1M until the reset restores 10M/10M.
fn fair_use_config(db: &TestDb) -> Config {
    let mut c = config(db);
    c.disconnect.coa_timeout_ms = 600;
    c.disconnect.coa_retry_interval_ms = 200;
    c.usage.check_interval_ms = 50;
    c.usage.reset_interval_secs = 1;
    c.usage.policies = vec![FairUsePolicy {
        name: "home-basic".into(),
        classes: vec![],
        period: PeriodKind::Day,
        threshold_bytes: 10_000,
        rate: "1M/1M".into(),
        restore_rate: "10M/10M".into(),
    }];
    c
}

/// The distinct CoA-Requests received (a retransmission is the same request again), as
/// (Acct-Session-Id, Mikrotik-Rate-Limit).
fn coas(got: &[Received]) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for r in got.iter().filter(|r| r.code == COA_REQUEST) {
        if seen.contains(&(r.identifier, r.authenticator)) {
            continue;
        }
        seen.push((r.identifier, r.authenticator));
        out.push((
            r.attr_str(d::ACCT_SESSION_ID).unwrap_or_default(),
            r.vsa_str(d::VENDOR_MIKROTIK, d::MIKROTIK_RATE_LIMIT)
                .unwrap_or_default(),
        ));
    }
    out.sort();
    out
}

async fn crossing_a_threshold_throttles_each_open_session_once_and_the_reset_restores(
    backend: Backend,
) {
    let nas_coa = FakeNas::start(common::SECRET, NasMode::Ack).await;
    let Some(db) = db_with_nas(backend, nas_coa.addr.port()).await else {
        return;
    };
    let app = TestApp::start(fair_use_config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    // One subscriber, two open sessions on the NAS 127.0.0.1.
    let a = Sess::new(7).on_nas("127.0.0.1");
    let mut b = Sess::new(8).on_nas("127.0.0.1");
    b.user = a.user.clone();
    // Within today: the policy's period is the day.
    let t0 = common::within_today(120);
    for s in [&a, &b] {
        nas.send(&s.start(t0)).await.expect("start");
    }
    nas.send(&a.interim(t0 + 60, 60, 4_000, 0))
        .await
        .expect("below");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(coas(&nas_coa.received()).is_empty(), "below the threshold");
    nas.send(&b.interim(t0 + 60, 60, 3_000, 4_000))
        .await
        .expect("crossing");
    assert!(
        eventually(|| coas(&nas_coa.received()).len() >= 2).await,
        "{:?}",
        nas_coa.received()
    );
    // More usage while throttled sends nothing more.
    nas.send(&a.interim(t0 + 90, 90, 9_000, 0))
        .await
        .expect("more");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let throttled = vec![
        (a.session_id.clone(), "1M/1M".to_owned()),
        (b.session_id.clone(), "1M/1M".to_owned()),
    ];
    assert_eq!(
        coas(&nas_coa.received()),
        throttled,
        "one CoA per open session"
    );
    let id_a = app
        .index
        .get(&a.key())
        .and_then(|s| s.radacctid)
        .expect("id");
    let log = app.store.session_actions(id_a).await.expect("log");
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(
        (log[0].actor.as_deref(), log[0].outcome.as_str()),
        (Some("fair-use"), "ack")
    );
    assert_eq!(
        log[0].request.as_deref(),
        Some(r#"{"Mikrotik-Rate-Limit":"1M/1M"}"#)
    );

    // A restart keeps the state: the API still shows it, and a new session gets the rate.
    app.stop().await;
    let app = TestApp::start(fair_use_config(&db)).await;
    let path = format!("/api/subscribers/{}/usage", a.user);
    let (st, body) = app.json(&path, Some(&admin())).await;
    assert_eq!(st, 200, "{body}");
    let fu = &body["data"]["fair_use"];
    assert_eq!(fu["policy"], "home-basic");
    assert_eq!(fu["throttled"], true);
    assert_eq!(fu["threshold_bytes"], 10_000);
    assert_eq!(fu["used_bytes"], 9_000 + 3_000 + 4_000);
    assert_eq!(fu["rate"], "1M/1M");
    assert!(fu["throttled_since"].is_string());
    let mut c = Sess::new(9).on_nas("127.0.0.1");
    c.user = a.user.clone();
    let mut nas = Nas::new(app.radius_addr).await;
    nas.send(&c.start(now())).await.expect("start while over");
    assert!(eventually(|| coas(&nas_coa.received()).len() >= 3).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut expected = throttled.clone();
    expected.push((c.session_id.clone(), "1M/1M".to_owned()));
    expected.sort();
    assert_eq!(coas(&nas_coa.received()), expected);

    // The period ends (moved into the past here): the jobs leader restores every open
    // session's rate and removes the throttle.
    db.exec(&format!(
        "UPDATE fair_use_throttles SET period_end = {} WHERE username = '{}'",
        now() - 1,
        a.user
    ))
    .await;
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            coas(&nas_coa.received())
                .iter()
                .filter(|c| c.1 == "10M/10M")
                .count()
                >= 3
        })
        .await,
        "{:?}",
        coas(&nas_coa.received())
    );
    let mut restored: Vec<String> = coas(&nas_coa.received())
        .into_iter()
        .filter(|c| c.1 == "10M/10M")
        .map(|c| c.0)
        .collect();
    restored.sort();
    let mut ids = vec![
        a.session_id.clone(),
        b.session_id.clone(),
        c.session_id.clone(),
    ];
    ids.sort();
    assert_eq!(restored, ids);
    let mut gone = false;
    for _ in 0..100 {
        if db.count("SELECT COUNT(*) FROM fair_use_throttles").await == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the throttle row is removed after the restore");
    let (_, body) = app.json(&path, Some(&admin())).await;
    assert_eq!(body["data"]["fair_use"]["throttled"], false);
    app.stop().await;
}

async fn a_throttling_coa_the_nas_did_not_answer_is_sent_again_on_the_next_interim(
    backend: Backend,
) {
    let nas_coa = FakeNas::start(common::SECRET, NasMode::Silent).await;
    let Some(db) = db_with_nas(backend, nas_coa.addr.port()).await else {
        return;
    };
    let app = TestApp::start(fair_use_config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let s = Sess::new(10).on_nas("127.0.0.1");
    // Within today: the policy's period is the day.
    let t0 = common::within_today(120);
    nas.send(&s.start(t0)).await.expect("start");
    nas.send(&s.interim(t0 + 60, 60, 20_000, 0))
        .await
        .expect("crossing");
    // The NAS stays silent through the attempt (600 ms with its retransmissions).
    assert!(eventually(|| !coas(&nas_coa.received()).is_empty()).await);
    let id = app
        .index
        .get(&s.key())
        .and_then(|x| x.radacctid)
        .expect("id");
    let mut timed_out = false;
    for _ in 0..100 {
        let log = app.store.session_actions(id).await.expect("log");
        if log.iter().any(|a| a.outcome == "timeout") {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(timed_out, "the unanswered attempt is logged");
    nas_coa.set_mode(NasMode::Ack);
    nas.send(&s.interim(t0 + 90, 90, 21_000, 0))
        .await
        .expect("next interim");
    let mut acked = false;
    for _ in 0..100 {
        let log = app.store.session_actions(id).await.expect("log");
        if log
            .iter()
            .any(|a| a.outcome == "ack" && a.actor.as_deref() == Some("fair-use"))
        {
            acked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(acked, "the second attempt is sent and acknowledged");
    // Once applied, later interims send nothing more.
    nas.send(&s.interim(t0 + 100, 100, 22_000, 0))
        .await
        .expect("later interim");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let log = app.store.session_actions(id).await.expect("log");
    let outcomes: Vec<&str> = log.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["timeout", "ack"]);
    app.stop().await;
}
