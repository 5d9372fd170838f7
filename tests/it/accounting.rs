//! The accounting core end to end: real UDP, the real application, a real SQLite file or a
//! fresh PostgreSQL database per test.

use std::time::Duration;

use crate::common::{
    self, Attr, Backend, Nas, Sess, TestApp, TestDb, TestWriter, eventually, nas_onoff, now,
    test_config,
};
use radacctd::metrics::{DropReason, Stats};
use radacctd::radius::dictionary as d;
use radacctd::sessions::Row;

both_stores!(
    start_interim_stop_write_the_expected_rows,
    rejected_packets_get_no_response_and_are_counted,
    retransmission_has_one_effect_and_the_same_response,
    repeat_with_new_identifier_changes_nothing,
    interim_without_start_backdates_start,
    stop_without_start_inserts_closed_row,
    stop_twice_and_interim_after_stop,
    interim_after_sweeper_close_reopens_the_row,
    accounting_on_closes_only_that_nas,
    gigawords_give_64_bit_totals,
    index_after_restart_equals_open_rows,
    failed_transaction_gets_no_response_then_recovers,
    proxy_state_is_echoed_in_order,
    ignored_status_types_are_answered_without_a_row,
    close_requests_close_only_due_rows_through_the_writer,
    large_batches_commit_in_parts_keeping_each_sessions_order,
    pipelined_batches_keep_each_sessions_order,
);

async fn setup(backend: Backend) -> Option<(TestDb, TestApp, Nas)> {
    let db = TestDb::new(backend).await?;
    let app = TestApp::start(test_config(&db)).await;
    let nas = Nas::new(app.radius_addr).await;
    Some((db, app, nas))
}

fn row_for<'a>(rows: &'a [Row], s: &Sess) -> &'a Row {
    rows.iter()
        .find(|r| r.acctuniqueid == s.key())
        .unwrap_or_else(|| panic!("no row for {}", s.user))
}

async fn start_interim_stop_write_the_expected_rows(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let t0 = now() - 1000;
    let sessions: Vec<Sess> = (1..=3).map(Sess::new).collect();
    for s in &sessions {
        assert!(nas.send(&s.start(t0)).await.is_some(), "start answered");
    }
    assert_eq!(app.index.len(), 3);
    for s in &sessions {
        assert!(
            nas.send(&s.interim(t0 + 300, 300, 1000, 2000))
                .await
                .is_some()
        );
    }
    let s = &sessions[0];
    assert!(
        nas.send(&s.stop(t0 + 400, 400, 1500, 2500, 1))
            .await
            .is_some()
    );

    let rows = db.rows().await;
    assert_eq!(rows.len(), 3);
    let r = row_for(&rows, s);
    assert_eq!(r.username.as_deref(), Some(s.user.as_str()));
    assert_eq!(r.acctsessionid, s.session_id);
    assert_eq!(r.nasipaddress, "192.0.2.10");
    assert_eq!(r.nasportid.as_deref(), Some(s.port_id.as_str()));
    assert_eq!(r.nasporttype.as_deref(), Some("Ethernet"));
    assert_eq!(r.servicetype.as_deref(), Some("Framed-User"));
    assert_eq!(r.framedprotocol.as_deref(), Some("PPP"));
    assert_eq!(r.acctauthentic.as_deref(), Some("RADIUS"));
    assert_eq!(r.callingstationid.as_deref(), Some(s.mac.as_str()));
    assert_eq!(r.framedipaddress, Some(s.framed_ip.to_string()));
    assert_eq!(r.acctstarttime, Some(i64::from(t0)));
    assert_eq!(r.acctstoptime, Some(i64::from(t0 + 400)));
    assert_eq!(r.acctupdatetime, Some(i64::from(t0 + 400)));
    assert_eq!(r.acctinterval, Some(300));
    assert_eq!(r.acctsessiontime, Some(400));
    assert_eq!(r.acctinputoctets, Some(1500));
    assert_eq!(r.acctoutputoctets, Some(2500));
    assert_eq!(r.acctterminatecause.as_deref(), Some("User-Request"));
    assert_eq!(r.connectinfo_start.as_deref(), Some(""));
    assert_eq!(r.connectinfo_stop.as_deref(), Some(""));
    assert_eq!(r.realm, None);

    let open = row_for(&rows, &sessions[1]);
    assert!(open.is_open());
    assert_eq!(open.acctinputoctets, Some(1000));
    assert_eq!(open.acctsessiontime, Some(300));
    assert_eq!(app.index.len(), 2);
    assert!(app.index.get(&s.key()).is_none());
    let live = app.index.get(&sessions[1].key()).expect("in index");
    assert_eq!(live.radacctid, open.radacctid);
    assert_eq!(live.acctinputoctets, Some(1000));
    assert_eq!(
        app.stats
            .received_count(radacctd::metrics::PacketType::Start),
        3
    );
    assert_eq!(Stats::get(&app.stats.responses), 7);
    app.stop().await;
}

async fn rejected_packets_get_no_response_and_are_counted(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let s = Sess::new(1);
    let short = Duration::from_millis(700);

    // Wrong secret.
    let mut wrong = Nas::with_secret(app.radius_addr, "not-the-secret").await;
    let req = wrong.request(&s.start(now()));
    assert_eq!(wrong.exchange(&req, short).await, None);

    // Malformed: truncated, lying length, attribute length 1, garbage.
    let good = nas.request(&s.start(now()));
    let mut lying = good.clone();
    lying[2..4].copy_from_slice(&(good.len() as u16 + 10).to_be_bytes());
    let mut bad_attr = good.clone();
    bad_attr[21] = 1;
    for bytes in [&good[..15], &lying[..], &bad_attr[..], &[0xff; 64][..]] {
        assert_eq!(nas.exchange(bytes, short).await, None);
    }

    // Not an Accounting-Request (an Access-Request).
    let mut access = good.clone();
    access[0] = 1;
    assert_eq!(nas.exchange(&access, short).await, None);

    assert!(eventually(|| app.stats.dropped_count(DropReason::Malformed) == 4).await);
    assert_eq!(app.stats.dropped_count(DropReason::BadAuthenticator), 1);
    assert_eq!(app.stats.dropped_count(DropReason::NotAccounting), 1);
    assert!(db.rows().await.is_empty(), "nothing written");

    // Unknown client: the same packet from a source address no client matches. Bind a
    // socket on another loopback address when the system allows it.
    if let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.2:0").await {
        sock.send_to(&good, app.radius_addr).await.expect("send");
        let mut buf = [0u8; 100];
        let got = tokio::time::timeout(short, sock.recv_from(&mut buf)).await;
        assert!(got.is_err(), "no response to an unknown client");
        assert!(eventually(|| app.stats.dropped_count(DropReason::UnknownClient) == 1).await);
    }

    // A well-formed packet right after is answered.
    assert!(nas.send_bytes(&good).await.is_some());
    assert_eq!(db.rows().await.len(), 1);
    app.stop().await;
}

async fn retransmission_has_one_effect_and_the_same_response(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let s = Sess::new(1);
    let t = now() - 100;
    nas.send(&s.start(t - 300)).await.expect("start");
    let interim = nas.request(&s.interim(t, 300, 10, 20));
    let first = nas.send_bytes(&interim).await.expect("answered");
    let before = db.rows().await;
    let second = nas.send_bytes(&interim).await.expect("answered again");
    assert_eq!(first, second, "identical response");
    assert_eq!(
        Stats::get(&app.stats.responses_resent),
        1,
        "responses {} dup {}",
        Stats::get(&app.stats.responses),
        app.stats.dropped_count(DropReason::Duplicate)
    );
    assert_eq!(db.rows().await, before, "no second effect");
    assert_eq!(before[0].acctinterval, Some(300));
    app.stop().await;
}

async fn repeat_with_new_identifier_changes_nothing(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let s = Sess::new(1);
    let t = now() - 100;
    nas.send(&s.start(t - 300)).await.expect("start");
    let mut interim = s.interim(t, 300, 10, 20);
    nas.send(&interim).await.expect("interim");
    let before = db.rows().await;
    // The NAS re-sends with a new identifier and a bumped Acct-Delay-Time.
    interim.push(Attr::U32(d::ACCT_DELAY_TIME, 5));
    nas.send(&interim).await.expect("answered");
    let stop = s.stop(t + 10, 310, 15, 25, 1);
    nas.send(&stop).await.expect("stop");
    let after_stop = db.rows().await;
    let mut stop_again = stop.clone();
    stop_again.push(Attr::U32(d::ACCT_DELAY_TIME, 3));
    nas.send(&stop_again).await.expect("answered");
    assert_eq!(db.rows().await, after_stop);
    assert_eq!(before[0].acctinterval, Some(300));
    assert_eq!(
        after_stop[0].acctinterval,
        Some(300),
        "the repeat did not reset the interval"
    );
    assert!(Stats::get(&app.stats.unchanged) >= 2);
    app.stop().await;
}

async fn interim_without_start_backdates_start(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let s = Sess::new(1);
    let t = now() - 50;
    nas.send(&s.interim(t, 100, (2 << 32) + 5, 7))
        .await
        .expect("answered");
    let rows = db.rows().await;
    let r = row_for(&rows, &s);
    assert!(r.is_open());
    assert_eq!(r.acctstarttime, Some(i64::from(t) - 100), "deviation 2");
    assert_eq!(r.acctupdatetime, Some(i64::from(t)));
    assert_eq!(r.acctsessiontime, Some(100));
    assert_eq!(r.acctinputoctets, Some(8_589_934_597));
    assert_eq!(r.acctinterval, None);
    assert_eq!(r.acctterminatecause, None);
    assert!(app.index.contains(&s.key()));
    app.stop().await;
}

async fn stop_without_start_inserts_closed_row(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let s = Sess::new(1);
    let t = now() - 50;
    nas.send(&s.stop(t, 100, 0, 0, 2)).await.expect("answered");
    let rows = db.rows().await;
    let r = row_for(&rows, &s);
    assert_eq!(r.acctstarttime, Some(i64::from(t) - 100));
    assert_eq!(r.acctstoptime, Some(i64::from(t)));
    assert_eq!(r.acctupdatetime, Some(i64::from(t)));
    assert_eq!(r.acctsessiontime, Some(100));
    assert_eq!(r.acctterminatecause.as_deref(), Some("Lost-Carrier"));
    assert_eq!(r.connectinfo_stop, None);
    assert!(app.index.is_empty());
    app.stop().await;
}

async fn stop_twice_and_interim_after_stop(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    // E3 of the reference: start −400, stop −100 (300 s), stop again −90 (310 s), interim −80.
    let s = Sess::new(1);
    let n = now();
    nas.send(&s.start(n - 400)).await.expect("start");
    nas.send(&s.stop(n - 100, 300, 0, 0, 1))
        .await
        .expect("stop");
    nas.send(&s.stop(n - 90, 310, 0, 0, 4))
        .await
        .expect("second stop answered");
    nas.send(&s.interim(n - 80, 320, 0, 0))
        .await
        .expect("late interim answered");
    let rows = db.rows().await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.acctstarttime, Some(i64::from(n) - 400));
    assert_eq!(r.acctstoptime, Some(i64::from(n) - 90));
    assert_eq!(r.acctsessiontime, Some(310));
    assert_eq!(r.acctterminatecause.as_deref(), Some("Idle-Timeout"));
    assert!(
        app.index.is_empty(),
        "a late interim does not reopen a stopped session"
    );
    // A late Start for the closed row changes nothing (deviation 4).
    nas.send(&s.start(n - 50))
        .await
        .expect("late start answered");
    assert_eq!(db.rows().await, rows);
    app.stop().await;
}

async fn interim_after_sweeper_close_reopens_the_row(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let s = Sess::new(1);
    let n = now();
    nas.send(&s.start(n - 4000)).await.expect("start");
    // What the stale sweeper does: close at the last update with NAS-Idle-Timeout.
    let stop_sql = match backend {
        Backend::Postgres => "acctstoptime = acctupdatetime",
        Backend::Sqlite => "acctstoptime = acctupdatetime",
    };
    db.exec(&format!(
        "UPDATE radacct SET {stop_sql}, acctterminatecause = 'NAS-Idle-Timeout'"
    ))
    .await;
    nas.send(&s.interim(n - 100, 3900, 100, 200))
        .await
        .expect("interim");
    let rows = db.rows().await;
    assert_eq!(rows.len(), 1, "the same row, not a second one");
    let r = &rows[0];
    assert!(r.is_open(), "reopened");
    assert_eq!(r.acctterminatecause, None);
    assert_eq!(r.acctsessiontime, Some(3900));
    assert!(app.index.contains(&s.key()));
    nas.send(&s.stop(n - 50, 3950, 150, 250, 1))
        .await
        .expect("stop");
    let r = &db.rows().await[0];
    assert_eq!(r.acctstoptime, Some(i64::from(n) - 50));
    assert_eq!(r.acctterminatecause.as_deref(), Some("User-Request"));
    assert!(!app.index.contains(&s.key()));
    app.stop().await;
}

async fn accounting_on_closes_only_that_nas(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let n = now();
    let a: Vec<Sess> = (1..=3).map(|i| Sess::new(i).on_nas("192.0.2.20")).collect();
    let b: Vec<Sess> = (4..=5).map(|i| Sess::new(i).on_nas("192.0.2.21")).collect();
    for s in a.iter().chain(&b) {
        nas.send(&s.start(n - 500)).await.expect("start");
    }
    // One session of NAS a started after the reboot event: it stays open.
    let late = Sess::new(6).on_nas("192.0.2.20");
    nas.send(&late.start(n - 5)).await.expect("start");
    nas.send(&nas_onoff("192.0.2.20", d::STATUS_ACCOUNTING_ON, n - 10))
        .await
        .expect("accounting-on answered");
    let rows = db.rows().await;
    for s in &a {
        let r = row_for(&rows, s);
        assert_eq!(r.acctstoptime, Some(i64::from(n) - 10));
        assert_eq!(r.acctupdatetime, Some(i64::from(n) - 10));
        assert_eq!(r.acctsessiontime, Some(490));
        assert_eq!(r.acctterminatecause.as_deref(), Some("NAS-Reboot"));
    }
    for s in b.iter().chain([&late]) {
        assert!(row_for(&rows, s).is_open());
    }
    assert_eq!(app.index.len(), 3);
    assert_eq!(app.index.count_for_nas("192.0.2.20"), 1);
    assert_eq!(app.index.count_for_nas("192.0.2.21"), 2);
    // Accounting-Off with its own cause.
    let mut off = nas_onoff("192.0.2.21", d::STATUS_ACCOUNTING_OFF, n);
    off.push(Attr::U32(d::ACCT_TERMINATE_CAUSE, 7));
    nas.send(&off).await.expect("accounting-off answered");
    let rows = db.rows().await;
    for s in &b {
        assert_eq!(
            row_for(&rows, s).acctterminatecause.as_deref(),
            Some("Admin-Reboot")
        );
    }
    assert_eq!(app.index.len(), 1);
    app.stop().await;
}

async fn gigawords_give_64_bit_totals(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let s = Sess::new(1);
    let n = now();
    nas.send(&s.start(n - 600)).await.expect("start");
    let input = (3u64 << 32) + 123;
    let output = (70u64 << 32) + 4_000_000_000;
    nas.send(&s.interim(n - 300, 300, input, output))
        .await
        .expect("interim");
    let r = &db.rows().await[0];
    assert_eq!(r.acctinputoctets, Some(input as i64));
    assert_eq!(r.acctoutputoctets, Some(output as i64));
    assert_eq!(
        app.index.get(&s.key()).expect("open").acctoutputoctets,
        Some(output as i64)
    );
    app.stop().await;
}

async fn index_after_restart_equals_open_rows(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(test_config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let n = now();
    for i in 1..=20 {
        let s = Sess::new(i);
        nas.send(&s.start(n - 1000)).await.expect("start");
        if i % 3 == 0 {
            nas.send(&s.stop(n - 10, 990, 5, 5, 1)).await.expect("stop");
        } else if i % 3 == 1 {
            nas.send(&s.interim(n - 500, 500, 9, 9))
                .await
                .expect("interim");
        }
    }
    let before: Vec<_> = sorted_index(&app);
    app.stop().await;

    let app = TestApp::start(test_config(&db)).await;
    let open = db.open_rows().await;
    let after = sorted_index(&app);
    assert_eq!(open.len(), 14);
    assert_eq!(after.len(), open.len());
    for (s, r) in after.iter().zip(&open) {
        let unversioned = radacctd::sessions::Session {
            row_version: None,
            ..s.clone()
        };
        assert_eq!(unversioned, radacctd::sessions::Session::from_row(r, None));
    }
    if matches!(backend, Backend::Postgres) {
        // The versions the writer recorded are the rows' `xmin`s the rebuild reads (the
        // equality below), so the next write of each needs no lookup.
        assert!(before.iter().all(|s| s.row_version.is_some()));
    }
    assert_eq!(
        before, after,
        "the rebuilt index equals the one before the restart"
    );
    app.stop().await;
}

fn sorted_index(app: &TestApp) -> Vec<radacctd::sessions::Session> {
    let mut v = app.index.collect(|_| true);
    v.sort_by(|a, b| a.acctuniqueid.cmp(&b.acctuniqueid));
    v
}

async fn failed_transaction_gets_no_response_then_recovers(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let s = Sess::new(1);
    let n = now();
    nas.send(&s.start(n - 100)).await.expect("start");
    db.exec("ALTER TABLE radacct RENAME TO radacct_gone").await;
    let stop = nas.request(&s.stop(n - 10, 90, 1, 1, 1));
    assert_eq!(
        nas.exchange(&stop, Duration::from_millis(1500)).await,
        None,
        "no response while the table is gone"
    );
    assert!(eventually(|| app.stats.dropped_count(DropReason::WriteFailed) >= 1).await);
    assert!(app.index.contains(&s.key()), "the index did not change");
    db.exec("ALTER TABLE radacct_gone RENAME TO radacct").await;
    // The NAS retransmits the same packet: now it is recorded and answered.
    nas.send_bytes(&stop)
        .await
        .expect("answered once the table is back");
    let r = &db.rows().await[0];
    assert_eq!(r.acctstoptime, Some(i64::from(n) - 10));
    assert!(!app.index.contains(&s.key()));
    app.stop().await;
}

async fn proxy_state_is_echoed_in_order(backend: Backend) {
    let Some((_db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let mut attrs = Sess::new(1).start(now());
    attrs.push(Attr::Raw(d::PROXY_STATE, b"first".to_vec()));
    attrs.push(Attr::Raw(d::PROXY_STATE, b"second".to_vec()));
    let resp = nas.send(&attrs).await.expect("answered");
    let p = radacctd::radius::codec::Packet::decode(&resp).expect("decodes");
    let states: Vec<&[u8]> = p
        .attributes()
        .filter(|a| a.typ == d::PROXY_STATE)
        .map(|a| a.value)
        .collect();
    assert_eq!(states, vec![&b"first"[..], &b"second"[..]]);
    app.stop().await;
}

async fn ignored_status_types_are_answered_without_a_row(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let mut attrs = Sess::new(1).start(now());
    attrs[0] = Attr::U32(d::ACCT_STATUS_TYPE, 15); // Failed
    nas.send(&attrs).await.expect("answered");
    attrs.remove(0); // no Acct-Status-Type at all
    nas.send(&attrs).await.expect("answered");
    assert!(db.rows().await.is_empty());
    assert_eq!(
        app.stats
            .received_count(radacctd::metrics::PacketType::Other),
        2
    );
    app.stop().await;
}

async fn close_requests_close_only_due_rows_through_the_writer(backend: Backend) {
    let Some((db, app, mut nas)) = setup(backend).await else {
        return;
    };
    let n = now();
    let stale = Sess::new(1);
    let fresh = Sess::new(2);
    nas.send(&stale.start(n - 4000)).await.expect("start");
    nas.send(&stale.interim(n - 3700, 300, 10, 10))
        .await
        .expect("interim");
    nas.send(&fresh.start(n - 10)).await.expect("start");
    let cutoff = Some(i64::from(n) - 1800);
    let mut outcomes = Vec::new();
    for key in [stale.key(), fresh.key(), "no-such-key".to_owned()] {
        let (req, rx) = radacctd::ingest::CloseRequest::new(key, None, "NAS-Idle-Timeout", cutoff);
        app.ingest
            .send(radacctd::ingest::Item::Close(req))
            .await
            .expect("queued");
        outcomes.push(rx.await.expect("committed"));
    }
    assert_eq!(outcomes, vec![true, false, false]);
    let rows = db.rows().await;
    let r = row_for(&rows, &stale);
    assert_eq!(
        r.acctstoptime,
        Some(i64::from(n) - 3700),
        "stopped at the last update"
    );
    assert_eq!(r.acctsessiontime, Some(300));
    assert_eq!(r.acctterminatecause.as_deref(), Some("NAS-Idle-Timeout"));
    assert!(row_for(&rows, &fresh).is_open());
    assert!(!app.index.contains(&stale.key()));
    assert!(app.index.contains(&fresh.key()));
    app.stop().await;
}

/// The optimistic PostgreSQL write only updates rows whose version is still the one read; a
/// row another writer changed in between is reported, not overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_write_refuses_rows_changed_by_another_writer() {
    let Some((db, app, mut nas)) = setup(Backend::Postgres).await else {
        return;
    };
    let (a, b) = (Sess::new(1), Sess::new(2));
    nas.send(&a.start(now() - 100)).await.expect("start");
    nas.send(&b.start(now() - 100)).await.expect("start");
    let radacctd::store::Store::Postgres(pg) = &app.store else {
        unreachable!("a PostgreSQL test")
    };
    let (rows, versions) = pg
        .load_versions(&[a.key().as_str(), b.key().as_str()])
        .await
        .expect("load");
    // Another writer touches row a.
    db.exec(&format!(
        "UPDATE radacct SET acctinputoctets = 42 WHERE acctuniqueid = '{}'",
        a.key()
    ))
    .await;
    let mut updates: Vec<Row> = [a.key(), b.key()]
        .iter()
        .map(|k| {
            let mut r = rows[k].clone();
            r.acctoutputoctets = Some(7);
            r
        })
        .collect();
    updates.sort_by(|x, y| x.acctuniqueid.cmp(&y.acctuniqueid));
    // Each session's usage goes with its row: only the written row's amount is added.
    let ledger: Vec<radacctd::usage::Entry> = updates
        .iter()
        .map(|r| radacctd::usage::Entry {
            key: r.acctuniqueid.clone(),
            id: r.radacctid,
            username: r.username.clone().expect("user"),
            hour: 3600,
            input: 0,
            output: 7,
        })
        .collect();
    // And so does each session's event: only the written row's is appended.
    let events: Vec<radacctd::events::NewEvent> = updates
        .iter()
        .map(|r| {
            radacctd::sessions::event::session_event(
                radacctd::events::EventType::SessionInterim,
                now() as i64,
                r,
                None,
            )
        })
        .collect();
    let consequences = radacctd::store::Consequences {
        ledger: &ledger,
        events: &events,
    };
    let written = pg
        .write_guarded(&mut [], &updates, &[], &[], &versions, consequences)
        .await
        .expect("write");
    // Every event appended, numbered or not, from the outbox's lines (docs/EVENTS.md#storage).
    let interims = "SELECT e.l::json->>4 AS acctuniqueid, (e.l::json->>5)::bigint AS radacctid \
         FROM event_batches, regexp_split_to_table(lines, E'\\n') AS e(l) \
         WHERE e.l::json->>0 = 'session.interim'";
    assert_eq!(
        db.count(&format!("SELECT COUNT(*) FROM ({interims}) AS e"))
            .await,
        1,
        "the refused row's event is not appended"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM ({interims}) AS e WHERE acctuniqueid = '{}' AND radacctid = {}",
            b.key(),
            rows[&b.key()].radacctid.expect("id")
        ))
        .await,
        1
    );
    assert_eq!(
        db.count("SELECT CAST(COALESCE(SUM(output_octets), 0) AS BIGINT) FROM usage_hourly")
            .await,
        7,
        "the refused row's usage is not added"
    );
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM usage_hourly WHERE username = '{}'",
            b.user
        ))
        .await,
        1
    );
    assert_eq!(
        written.refused.into_iter().collect::<Vec<_>>(),
        vec![a.key()]
    );
    assert_eq!(
        written.versions.keys().collect::<Vec<_>>(),
        vec![&b.key()],
        "a new version for the row written"
    );
    // Rows with nothing to write are only checked: b still has the version just written, a
    // does not have the one read before the other writer changed it.
    let mut now_versions = versions.clone();
    now_versions.insert(b.key(), written.versions[&b.key()]);
    let checked = pg
        .write_guarded(
            &mut [],
            &[],
            &[],
            &updates,
            &now_versions,
            Default::default(),
        )
        .await
        .expect("check");
    assert_eq!(
        checked.refused.into_iter().collect::<Vec<_>>(),
        vec![a.key()],
        "a changed since; b did not"
    );
    let after = db.rows().await;
    let ra = after.iter().find(|r| r.acctuniqueid == a.key()).expect("a");
    let rb = after.iter().find(|r| r.acctuniqueid == b.key()).expect("b");
    assert_eq!(
        (ra.acctinputoctets, ra.acctoutputoctets),
        (Some(42), Some(0)),
        "not overwritten"
    );
    assert_eq!(
        rb.acctoutputoctets,
        Some(7),
        "the unchanged row was written"
    );
    app.stop().await;
}

/// A batch of 500 events reaches the writer at once: Starts of 100 new sessions, and an
/// Interim-Update and a Stop for those and for 100 sessions opened before (so the batch both
/// inserts and updates). On PostgreSQL it is split by session into parts committed
/// concurrently; on SQLite it stays whole. Either way every session's events apply in order:
/// all rows closed with the Stop's counters, nothing left in the index.
async fn large_batches_commit_in_parts_keeping_each_sessions_order(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let w = migrated_writer(&db).await;
    let (store, index, stats) = (&w.store, &w.index, &w.stats);
    let run = |packets: Vec<Vec<Attr>>| {
        w.run(
            common::queued_events(&packets),
            1024,
            Duration::from_secs(30),
        )
    };
    let t = now() - 600;
    let sessions: Vec<Sess> = (0..200).map(|n| Sess::new(9000 + n)).collect();
    run(sessions[..100].iter().map(|s| s.start(t)).collect()).await;
    assert_eq!(index.len(), 100);
    let paired_before = stats
        .paired_batches
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(paired_before, 0, "100 events are one batch");

    let mut packets: Vec<Vec<Attr>> = sessions[100..].iter().map(|s| s.start(t)).collect();
    for (i, s) in sessions.iter().enumerate() {
        packets.push(s.interim(t + 300, 300, 1000 + i as u64, 2000));
        packets.push(s.stop(t + 400, 400, 5000 + i as u64, 6000, 1));
    }
    run(packets).await;

    let paired = stats
        .paired_batches
        .load(std::sync::atomic::Ordering::Relaxed);
    match backend {
        Backend::Postgres => assert_eq!(
            paired, 2,
            "500 events in 3 concurrent parts: two started while another ran"
        ),
        Backend::Sqlite => assert_eq!(paired, 0, "SQLite commits the batch whole"),
    }
    let rows = db.rows().await;
    assert_eq!(rows.len(), 200);
    for (i, s) in sessions.iter().enumerate() {
        let r = row_for(&rows, s);
        assert_eq!(r.acctstarttime, Some(i64::from(t)), "{}", s.user);
        assert_eq!(r.acctstoptime, Some(i64::from(t + 400)), "{}", s.user);
        assert_eq!(r.acctinputoctets, Some(5000 + i as i64));
        assert_eq!(r.acctsessiontime, Some(400));
        assert_eq!(r.acctterminatecause.as_deref(), Some("User-Request"));
    }
    assert!(index.is_empty(), "every session closed");
    store.close().await;
}

/// `database.radacct_fillfactor` is applied when migrations run, and a restart with the same
/// value changes nothing; out-of-range values are refused by the configuration check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_fillfactor_is_set_on_radacct() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let mut config = test_config(&db);
    config.database.radacct_fillfactor = Some(60);
    assert!(config.validate().is_ok());
    let app = TestApp::start(config.clone()).await;
    let store = db.open_store().await;
    let radacctd::store::Store::Postgres(pg) = &store else {
        unreachable!("a PostgreSQL test")
    };
    let options: Option<Vec<String>> =
        sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = 'radacct'::regclass")
            .fetch_one(pg.pool())
            .await
            .expect("reloptions");
    assert_eq!(options, Some(vec!["fillfactor=60".to_owned()]));
    assert!(
        !store.set_radacct_fillfactor(60).await.expect("set"),
        "already 60: nothing to change"
    );
    assert!(store.set_radacct_fillfactor(70).await.expect("set"));
    app.stop().await;
    store.close().await;

    for bad in [0u8, 9, 101] {
        config.database.radacct_fillfactor = Some(bad);
        let err = config.validate().expect_err("out of range");
        assert!(err.contains("radacct_fillfactor"), "{err}");
    }
}

/// radacct's fillfactor as the table's options have it.
async fn radacct_options(store: &radacctd::store::Store) -> Option<Vec<String>> {
    let radacctd::store::Store::Postgres(pg) = store else {
        unreachable!("a PostgreSQL test")
    };
    sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = 'radacct'::regclass")
        .fetch_one(pg.pool())
        .await
        .expect("reloptions")
}

/// Unset, `database.radacct_fillfactor` gives radacct the default (60) when the table has no
/// fillfactor of its own, leaves one the operator set, and, for a role that may not alter the
/// table (not its owner), leaves the table as it is without failing start-up; a configured
/// value that cannot be set is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unset_fillfactor_defaults_to_60_unless_the_table_has_its_own() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    assert_eq!(radacct_options(&store).await, None, "migrations alone");
    store.prepare(None).await.expect("prepare");
    assert_eq!(
        radacct_options(&store).await,
        Some(vec![format!(
            "fillfactor={}",
            radacctd::store::DEFAULT_RADACCT_FILLFACTOR
        )])
    );
    db.exec("ALTER TABLE radacct SET (fillfactor = 90)").await;
    store.prepare(None).await.expect("prepare");
    assert_eq!(
        radacct_options(&store).await,
        Some(vec!["fillfactor=90".to_owned()]),
        "the operator's own value stays"
    );
    db.exec("ALTER TABLE radacct RESET (fillfactor)").await;

    // The same database as a role that does not own radacct (set for every connection through
    // the startup options, so no password or pg_hba.conf entry is needed for it).
    let role = format!("{}_nonowner", db.pg_name.as_deref().expect("PostgreSQL"));
    db.exec(&format!(
        "CREATE ROLE {role} NOLOGIN; GRANT USAGE, CREATE ON SCHEMA public TO {role}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; \
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"
    ))
    .await;
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}options=-c%20role%3D{role}", db.url);
    let other = crate::common::open_store(&url, 2, Duration::from_secs(5)).await;
    other
        .prepare(None)
        .await
        .expect("a role that may not alter radacct still starts");
    assert_eq!(radacct_options(&store).await, None, "left as it is");
    other
        .prepare(Some(100))
        .await
        .expect("100, what the warning suggests, is what the table has already");
    assert_eq!(radacct_options(&store).await, None);
    let err = other
        .prepare(Some(70))
        .await
        .expect_err("a configured fillfactor it may not set");
    assert!(err.to_string().contains("owner"), "{err}");
    other.close().await;
    store.close().await;
    db.exec(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await;
}

/// The writer's connections keep generic plans for its guarded statements, with sequential
/// scans priced out; its transactions (the locked path) and the other pools plan afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_writers_guarded_statements_keep_generic_plans() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    let radacctd::store::Store::Postgres(pg) = &store else {
        unreachable!("a PostgreSQL test")
    };
    assert_eq!(
        pg.writer_planning().await.expect("settings"),
        ["auto", "off", "force_custom_plan", "on"]
    );
    let other: String = sqlx::query_scalar("SELECT current_setting('plan_cache_mode')")
        .fetch_one(pg.pool())
        .await
        .expect("setting");
    assert_eq!(other, "force_custom_plan");
    store.close().await;
}

/// Batches of at most 100 events: Starts of sessions 0–99, Starts of 100–199 (no session in
/// common: committed while the first is still in flight, on PostgreSQL), then Interim-Updates
/// and Stops of all 200, whose batches hold sessions that may still be in flight (they wait).
/// Every row ends closed with its Stop's counters, whatever overlapped.
async fn pipelined_batches_keep_each_sessions_order(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let w = migrated_writer(&db).await;
    let (store, index, stats) = (&w.store, &w.index, &w.stats);
    let t = now() - 600;
    let sessions: Vec<Sess> = (0..200).map(|n| Sess::new(7000 + n)).collect();
    let mut packets: Vec<Vec<Attr>> = sessions.iter().map(|s| s.start(t)).collect();
    for (i, s) in sessions.iter().enumerate() {
        packets.push(s.interim(t + 300, 300, 1000 + i as u64, 2000));
    }
    for (i, s) in sessions.iter().enumerate() {
        packets.push(s.stop(t + 400, 400, 5000 + i as u64, 6000, 1));
    }
    w.run(
        common::queued_events(&packets),
        100,
        Duration::from_secs(30),
    )
    .await;

    let paired = stats
        .paired_batches
        .load(std::sync::atomic::Ordering::Relaxed);
    match backend {
        Backend::Postgres => assert!(paired >= 1, "the second batch ran beside the first"),
        Backend::Sqlite => assert_eq!(paired, 0, "SQLite commits one batch at a time"),
    }
    assert_eq!(Stats::get(&stats.batch_events), 600);
    let rows = db.rows().await;
    assert_eq!(rows.len(), 200);
    for (i, s) in sessions.iter().enumerate() {
        let r = row_for(&rows, s);
        assert_eq!(r.acctstoptime, Some(i64::from(t + 400)), "{}", s.user);
        assert_eq!(r.acctinputoctets, Some(5000 + i as i64));
        assert_eq!(r.acctterminatecause.as_deref(), Some("User-Request"));
    }
    assert!(index.is_empty(), "every session closed");
    store.close().await;
}

/// A writer's parts on `db`, migrated, with the daemon's default pool (8 connections: the
/// writer may take up to 4).
async fn migrated_writer(db: &TestDb) -> TestWriter {
    let store = common::open_store(&db.url, 8, Duration::from_secs(5)).await;
    store.migrate().await.expect("migrate");
    TestWriter::new(store)
}

/// Runs each writer once over `steps` (until they are all done).
async fn run_writers(writers: &[TestWriter], steps: &[common::Queued]) {
    for w in writers {
        run_writer(w, steps, Duration::from_secs(30)).await;
    }
}

/// Runs a writer (batches of up to 64, no journal) over `steps` until they are all done.
async fn run_writer(w: &TestWriter, steps: &[common::Queued], commit_timeout: Duration) {
    w.run(common::queued(steps), 64, commit_timeout).await;
}

/// A redo under locks that cannot finish by the commit's deadline (another writer changed a
/// row, then kept it locked) leaves only that session's events unanswered: the rest of the
/// batch committed, so it is answered and indexed, not failed with it (which would also apply
/// it again when the NAS retransmits). Once the lock is gone, the retransmission is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redo_past_the_deadline_leaves_only_its_own_events_unanswered() {
    use common::Queued::Packet;
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let w = migrated_writer(&db).await;
    let store = &w.store;
    let (a, b) = (Sess::new(8101), Sess::new(8102));
    let t = now() - 1000;
    run_writers(
        std::slice::from_ref(&w),
        &[Packet(a.start(t)), Packet(b.start(t))],
    )
    .await;
    db.exec(&format!(
        "UPDATE radacct SET class = 'panel' WHERE acctuniqueid = '{}'",
        a.key()
    ))
    .await;
    let radacctd::store::Store::Postgres(pg) = store else {
        unreachable!("a PostgreSQL test")
    };
    let mut other = pg.pool().begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM radacct WHERE acctuniqueid = $1 FOR UPDATE")
        .bind(a.key())
        .execute(&mut *other)
        .await
        .expect("lock");
    let interims = [
        Packet(a.interim(t + 300, 300, 1000, 2000)),
        Packet(b.interim(t + 300, 300, 3000, 4000)),
    ];
    run_writer(&w, &interims, Duration::from_secs(1)).await;
    let failed = || w.stats.dropped_count(DropReason::WriteFailed);
    assert_eq!(failed(), 1, "only a's interim is unanswered");
    // Read without locks: a's row is still locked by the other writer.
    let input = |key: String| async move {
        sqlx::query_scalar::<_, i64>("SELECT acctinputoctets FROM radacct WHERE acctuniqueid = $1")
            .bind(key)
            .fetch_one(pg.pool())
            .await
            .expect("row")
    };
    assert_eq!(input(b.key()).await, 3000);
    assert_eq!(
        w.index.get(&b.key()).expect("b open").acctinputoctets,
        Some(3000),
        "b's committed interim is indexed"
    );
    assert_eq!(input(a.key()).await, 0, "a waits");
    other.rollback().await.expect("rollback");
    // The NAS retransmits a's interim.
    run_writer(&w, &interims[..1], Duration::from_secs(5)).await;
    let rows = db.rows().await;
    let ra = row_for(&rows, &a);
    assert_eq!(ra.acctinputoctets, Some(1000));
    assert_eq!(
        ra.class.as_deref(),
        Some("panel"),
        "the other writer's change kept"
    );
    assert_eq!(
        w.index.get(&a.key()).expect("a open").acctinputoctets,
        Some(1000)
    );
    assert_eq!(failed(), 1);
    store.close().await;
}

/// A small deterministic generator for the differential test (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Where one generated session stands.
struct Gen {
    sess: Sess,
    start: u32,
    at: u32,
    input: u64,
    last: Option<Vec<Attr>>,
}

impl Gen {
    /// The next 0–3 events of this session: repeated Starts, Interim-Updates (advancing, some
    /// with IPv6 attributes or a new framed address, repeated unchanged, out of date), Stops
    /// with and without Acct-Session-Time, the sweeper's and a disconnect's closes, and
    /// whatever follows them (an Interim-Update after a sweeper close reopens the row).
    fn events(&mut self, rng: &mut Rng) -> Vec<common::Queued> {
        let mut out = Vec::new();
        for _ in 0..rng.below(4) {
            let ev = match rng.below(12) {
                10 => {
                    out.push(common::Queued::Close {
                        key: self.sess.key(),
                        stop_time: None,
                        cause: radacctd::ingest::semantics::SWEEPER_CAUSE.into(),
                        if_updated_before: Some(i64::from(self.at) + 1 - rng.below(2) as i64),
                    });
                    continue;
                }
                11 => {
                    out.push(common::Queued::Close {
                        key: self.sess.key(),
                        stop_time: Some(i64::from(self.at) + 5),
                        cause: "Admin-Reset".into(),
                        if_updated_before: None,
                    });
                    continue;
                }
                0 => self.sess.start(self.start),
                1..=3 => {
                    self.at += 60 + rng.below(240) as u32;
                    self.input += rng.below(1 << 33);
                    let mut a = self.sess.interim(
                        self.at,
                        self.at - self.start,
                        self.input,
                        self.input / 3,
                    );
                    if rng.below(3) == 0 {
                        let n = rng.below(250) as u8;
                        let mut prefix = vec![0, 56, 0x20, 0x01, 0x0d, 0xb8, 0, n, 0];
                        prefix.truncate(9);
                        a.push(Attr::Raw(d::DELEGATED_IPV6_PREFIX, prefix));
                        let mut addr = vec![0x20, 0x01, 0x0d, 0xb8, 0, 1];
                        addr.extend([0; 9]);
                        addr.push(n);
                        a.push(Attr::Raw(d::FRAMED_IPV6_ADDRESS, addr));
                    }
                    if rng.below(8) == 0 {
                        a.retain(|x| !matches!(x, Attr::Ip(t, _) if *t == d::FRAMED_IP_ADDRESS));
                        a.push(Attr::Ip(
                            d::FRAMED_IP_ADDRESS,
                            std::net::Ipv4Addr::new(10, 77, 0, rng.below(250) as u8),
                        ));
                    }
                    self.last = Some(a.clone());
                    a
                }
                4 => match &self.last {
                    Some(a) => a.clone(),
                    None => continue,
                },
                5 => self.sess.interim(self.at.saturating_sub(900), 5, 1, 1),
                6 => {
                    // An Interim-Update that changes nothing but its time.
                    self.at += 1;
                    self.sess
                        .interim(self.at, self.at - self.start, self.input, self.input / 3)
                }
                7 if rng.below(3) == 0 => {
                    self.at += 30;
                    let mut a = self.sess.stop(
                        self.at,
                        self.at - self.start,
                        self.input + 5,
                        self.input / 3,
                        1 + rng.below(4) as u32,
                    );
                    if rng.below(2) == 0 {
                        a.retain(|x| !matches!(x, Attr::U32(t, _) if *t == d::ACCT_SESSION_TIME));
                    }
                    a
                }
                _ => continue,
            };
            out.push(common::Queued::Packet(ev));
        }
        out
    }
}

/// Index-fed writes (on PostgreSQL a session's row is rebuilt from the live index and written
/// without reading it, guarded by its row version) leave exactly the rows that reading every
/// row first leaves (SQLite's writer always reads). The same rounds of generated events (see
/// [`Gen::events`]) go through a PostgreSQL and a SQLite writer, one round per run; between
/// rounds "another writer" moves update times back, closes rows, readdresses and tags some, and
/// leaves a terminate cause and Connect-Info on open ones, in both databases (the indexes are
/// not told); at the end, such rows are closed and reopened in one batch, and Interim-Updates
/// are repeated after their rows' update times were moved back. Every column of every row must
/// be equal, and the PostgreSQL writer must have taken rows from the index, inserted new ones
/// without a read, and redone the rows the other writer changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_from_the_index_equal_rows_written_after_reading() {
    use radacctd::metrics::ROW_SOURCES;
    use std::sync::atomic::Ordering;

    let Some(pg_db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let lite_db = TestDb::new(Backend::Sqlite).await.expect("SQLite");
    let writers = [
        migrated_writer(&pg_db).await,
        migrated_writer(&lite_db).await,
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let t0 = now() - 30_000;
    let mut gens: Vec<Gen> = (0..120)
        .map(|n| Gen {
            sess: Sess::new(7000 + n),
            start: t0,
            at: t0,
            input: 0,
            last: None,
        })
        .collect();
    for round in 0..8 {
        let mut packets = Vec::new();
        for g in gens.iter_mut() {
            if round == 0 && g.sess.user.ends_with("3@example.lb") {
                continue; // some sessions begin with an Interim-Update
            }
            if round == 0 {
                packets.push(common::Queued::Packet(g.sess.start(g.start)));
            }
            packets.extend(g.events(&mut rng));
        }
        run_writers(&writers, &packets).await;
        // Another writer (FreeRADIUS, a panel job) changes some rows in both databases.
        let pick = |m: u64| -> Vec<String> {
            gens.iter()
                .enumerate()
                .filter(|(i, _)| (*i as u64 + 9 * m + round).is_multiple_of(29))
                .map(|(_, g)| format!("'{}'", g.sess.key()))
                .collect()
        };
        let (a, b, c, e) = (pick(1), pick(2), pick(3), pick(4));
        for db in [&pg_db, &lite_db] {
            db.exec(&format!(
                "UPDATE radacct SET acctupdatetime = acctstarttime WHERE acctuniqueid IN ({})",
                a.join(",")
            ))
            .await;
            db.exec(&format!(
                "UPDATE radacct SET framedipaddress = '10.99.0.{round}', class = 'panel' \
                 WHERE acctuniqueid IN ({})",
                b.join(",")
            ))
            .await;
            db.exec(&format!(
                "UPDATE radacct SET acctterminatecause = 'Lost-Carrier', \
                 connectinfo_stop = 'left by another writer' \
                 WHERE acctstoptime IS NULL AND acctuniqueid IN ({})",
                e.join(",")
            ))
            .await;
            db.exec(&format!(
                "UPDATE radacct SET acctstoptime = acctupdatetime, \
                 acctterminatecause = 'Admin-Reset' \
                 WHERE acctstoptime IS NULL AND acctuniqueid IN ({})",
                c.join(",")
            ))
            .await;
        }
    }
    // Open rows another writer left with a terminate cause and Connect-Info, written twice
    // more (refused and redone under locks, then read and written: now the index holds their
    // version again), then closed by the sweeper and reopened
    // by a late Interim-Update in one batch: reopening clears both columns.
    let open: std::collections::HashSet<String> = pg_db
        .open_rows()
        .await
        .into_iter()
        .map(|r| r.acctuniqueid)
        .collect();
    let late: Vec<&mut Gen> = gens
        .iter_mut()
        .filter(|g| open.contains(&g.sess.key()))
        .take(10)
        .collect();
    assert!(late.len() >= 5, "{} sessions still open", late.len());
    let keys: Vec<String> = late.iter().map(|g| format!("'{}'", g.sess.key())).collect();
    for db in [&pg_db, &lite_db] {
        db.exec(&format!(
            "UPDATE radacct SET acctterminatecause = 'Lost-Carrier', connectinfo_stop = 'left' \
             WHERE acctuniqueid IN ({})",
            keys.join(",")
        ))
        .await;
    }
    let mut again = [Vec::new(), Vec::new()];
    let mut reopen = Vec::new();
    for g in late {
        for n in 1..=2 {
            g.at += 300;
            again[n as usize - 1].push(common::Queued::Packet(g.sess.interim(
                g.at,
                g.at - g.start,
                g.input + n,
                n,
            )));
        }
        reopen.push(common::Queued::Close {
            key: g.sess.key(),
            stop_time: None,
            cause: radacctd::ingest::semantics::SWEEPER_CAUSE.into(),
            if_updated_before: Some(i64::from(g.at) + 10),
        });
        g.at += 400;
        reopen.push(common::Queued::Packet(g.sess.interim(
            g.at,
            g.at - g.start,
            g.input + 3,
            3,
        )));
    }
    run_writers(&writers, &again[0]).await;
    run_writers(&writers, &again[1]).await;
    run_writers(&writers, &reopen).await;
    // An Interim-Update repeated (a NAS that bumped Acct-Delay-Time) after another writer moved
    // the row's update time back: on the index's copy it changes nothing, on the row it does.
    let repeat: Vec<&mut Gen> = gens
        .iter_mut()
        .filter(|g| open.contains(&g.sess.key()))
        .skip(10)
        .take(10)
        .collect();
    assert!(repeat.len() >= 5, "{} sessions still open", repeat.len());
    let keys: Vec<String> = repeat
        .iter()
        .map(|g| format!("'{}'", g.sess.key()))
        .collect();
    let mut interims = Vec::new();
    for g in repeat {
        g.at += 300;
        interims.push(common::Queued::Packet(g.sess.interim(
            g.at,
            g.at - g.start,
            g.input + 5,
            5,
        )));
    }
    run_writers(&writers, &interims).await;
    for db in [&pg_db, &lite_db] {
        db.exec(&format!(
            "UPDATE radacct SET acctupdatetime = acctstarttime WHERE acctuniqueid IN ({})",
            keys.join(",")
        ))
        .await;
    }
    run_writers(&writers, &interims).await;
    let normalized = |mut rows: Vec<Row>| {
        for r in &mut rows {
            r.radacctid = None;
        }
        rows.sort_by(|a, b| a.acctuniqueid.cmp(&b.acctuniqueid));
        rows
    };
    let (pg_rows, lite_rows) = (
        normalized(pg_db.rows().await),
        normalized(lite_db.rows().await),
    );
    assert_eq!(pg_rows.len(), 120);
    for (p, l) in pg_rows.iter().zip(&lite_rows) {
        assert_eq!(p, l, "the same row from both writers");
    }
    assert_eq!(pg_rows, lite_rows);
    let source = |name: &str| {
        let i = ROW_SOURCES.iter().position(|s| *s == name).expect("source");
        writers[0].stats.row_sources[i].load(Ordering::Relaxed)
    };
    eprintln!(
        "PostgreSQL writer's sessions by source: {:?}",
        ROW_SOURCES.map(source)
    );
    assert!(
        source("index") > 100,
        "rows from the index: {}",
        source("index")
    );
    assert!(
        source("new") > 50,
        "new rows without a read: {}",
        source("new")
    );
    assert!(
        source("redone") > 0,
        "rows another writer changed were redone"
    );
    for w in writers {
        w.store.close().await;
    }
}

/// Whatever the listener accepted before shutdown is committed and answered before the daemon
/// exits: the listener stops first, the writer drains the queue, the sender sends the last
/// answers. A lock on radacct holds the writer so that shutdown begins with events queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_and_answers_everything_accepted() {
    shutdown_drains(true).await;
}

/// The same with the ingest tasks on the main runtime (`radius.ingest_thread = false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_with_the_ingest_path_on_the_main_runtime() {
    shutdown_drains(false).await;
}

async fn shutdown_drains(ingest_thread: bool) {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let mut config = test_config(&db);
    config.radius.ingest_thread = ingest_thread;
    let app = TestApp::start(config).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let locker = db.open_store().await;
    let radacctd::store::Store::Postgres(pg) = &locker else {
        unreachable!("a PostgreSQL test")
    };
    let mut lock = pg.pool().begin().await.expect("begin");
    sqlx::query("LOCK TABLE radacct IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    // Distinct identifiers: 200 requests in flight at once from one port.
    let n = 200;
    let t0 = now();
    for i in 0..n {
        let req = nas.request(&Sess::new(i).start(t0));
        nas.socket.send_to(&req, nas.server).await.expect("send");
    }
    let start = radacctd::metrics::PacketType::Start;
    assert!(eventually(|| app.stats.received_count(start) == u64::from(n)).await);
    assert_eq!(Stats::get(&app.stats.responses), 0, "the writer is held");
    let stats = app.stats.clone();
    let stopped = tokio::spawn(app.stop());
    // Shutdown begins while the writer waits for the lock; then the lock goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.commit().await.expect("unlock");
    stopped.await.expect("stops cleanly");
    assert_eq!(
        db.rows().await.len(),
        n as usize,
        "every accepted Start committed"
    );
    assert_eq!(Stats::get(&stats.responses), u64::from(n));
    let mut answered = 0;
    let mut buf = [0u8; 4096];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_secs(1), nas.socket.recv_from(&mut buf)).await
    {
        answered += 1;
    }
    assert_eq!(answered, n, "every accepted Start answered");
    locker.close().await;
}
