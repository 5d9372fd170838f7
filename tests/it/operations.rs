//! Operations: the Prometheus exposition after a scripted workload, the systemd notify protocol
//! (a fake NOTIFY_SOCKET), SIGTERM in the middle of a burst, SIGHUP picking up a new NAS, the
//! unit file (`systemd-analyze verify`), and the Grafana dashboard's and the alert rules'
//! queries.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::{
    self, Attr, Backend, Nas, Sess, TestApp, TestDb, daemon, free_port_tcp, free_port_udp, now,
    require, scrape, signal, test_config, value,
};
use radacctd::radius::dictionary as d;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_what_was_sent() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let mut config = test_config(&db);
    config.journal.enabled = true;
    let dir = tempfile::tempdir().expect("dir");
    config.journal.path = dir.path().join("j");
    let app = TestApp::start(config).await;
    let metrics = app.metrics_addr.expect("metrics enabled");
    let mut nas = Nas::new(app.radius_addr).await;
    let n = now();
    for i in 1..=3 {
        nas.send(&Sess::new(i).start(n - 100)).await.expect("start");
    }
    nas.send(&Sess::new(1).interim(n - 50, 50, 10, 10))
        .await
        .expect("interim");
    let interim = nas.request(&Sess::new(2).interim(n - 50, 50, 10, 10));
    nas.send_bytes(&interim).await.expect("interim");
    nas.send_bytes(&interim)
        .await
        .expect("retransmission answered from cache");
    nas.send(&Sess::new(3).stop(n - 10, 90, 20, 20, 1))
        .await
        .expect("stop");
    let garbage = [0u8; 10];
    assert!(
        nas.exchange(&garbage, Duration::from_millis(300))
            .await
            .is_none()
    );
    let mut wrong = Nas::with_secret(app.radius_addr, "wrong").await;
    let req = wrong.request(&Sess::new(9).start(n));
    assert!(
        wrong
            .exchange(&req, Duration::from_millis(300))
            .await
            .is_none()
    );

    let m = scrape(metrics).await;
    assert_eq!(
        value(&m, "radacctd_packets_received_total{type=\"start\"}"),
        3.0
    );
    assert_eq!(
        value(
            &m,
            "radacctd_packets_received_total{type=\"interim_update\"}"
        ),
        2.0
    );
    assert_eq!(
        value(&m, "radacctd_packets_received_total{type=\"stop\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "radacctd_packets_dropped_total{reason=\"malformed\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "radacctd_packets_dropped_total{reason=\"bad_authenticator\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "radacctd_packets_dropped_total{reason=\"unknown_client\"}"
        ),
        0.0
    );
    assert_eq!(value(&m, "radacctd_responses_sent_total"), 6.0);
    assert_eq!(value(&m, "radacctd_responses_resent_total"), 1.0);
    assert_eq!(value(&m, "radacctd_active_sessions"), 2.0);
    assert_eq!(
        value(&m, "radacctd_active_sessions_by_nas{nas=\"192.0.2.10\"}"),
        2.0
    );
    assert_eq!(value(&m, "radacctd_ingest_queue_depth"), 0.0);
    assert_eq!(
        value(&m, "radacctd_commit_duration_seconds_count"),
        value(&m, "radacctd_write_batches_total")
    );
    assert_eq!(
        value(&m, "radacctd_write_batch_size_sum"),
        6.0,
        "events committed"
    );
    assert_eq!(value(&m, "radacctd_journal_entries"), 0.0);
    assert_eq!(value(&m, "radacctd_journal_bytes"), 0.0);
    let node = radacctd::config::NodeConfig::default().resolved_name();
    assert_eq!(
        value(
            &m,
            &format!("radacctd_build_info{{version=\"0.1.0\",node=\"{node}\"}}")
        ),
        1.0
    );
    assert!(m.contains_key("radacctd_index_rebuild_duration_seconds"));
    // The packets were received, written and answered on the ingest thread.
    let busy = value(&m, "radacctd_ingest_thread_busy_seconds");
    assert!(busy > 0.0 && busy < 60.0, "ingest thread busy {busy} s");
    assert!(m.contains_key("radacctd_db_pool_connections{state=\"idle\"}"));
    assert!(m.contains_key("radacctd_job_last_success_timestamp_seconds{job=\"sweeper\"}"));
    assert!(m.contains_key("radacctd_job_rows_total{job=\"archiver\"}"));
    assert!(m.contains_key("radacctd_disconnect_attempts_total{method=\"coa\",outcome=\"ack\"}"));
    // No label carries a user name or a session id.
    assert!(m.keys().all(|k| !k.contains("example.lb")));
    app.stop().await;
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana-dashboard.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    assert!(exprs.len() >= 8, "the dashboard has panels with queries");
    let exported = exported_names();
    for e in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "query without a radacctd metric: {e}");
        for name in names {
            assert!(exported.contains(&name), "{name} (in {e}) is not exported");
        }
    }
}

#[test]
fn prometheus_alerts_use_only_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus-alerts.yml");
    let text = std::fs::read_to_string(&path).expect("alert rules");
    let alerts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.contains(&"RadacctdJournalRejected"), "{alerts:?}");
    assert!(alerts.contains(&"RadacctdJournalCorrupt"), "{alerts:?}");
    let exprs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect();
    assert_eq!(exprs.len(), alerts.len(), "one expression per alert");
    let exported = exported_names();
    for e in exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "rule without a radacctd metric: {e}");
        for name in names {
            assert!(exported.contains(&name), "{name} (in {e}) is not exported");
        }
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "expr" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_owned());
                    }
                } else {
                    collect_exprs(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("radacctd_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// Every series name a running daemon exposes (histograms with their `_bucket`, `_sum`,
/// `_count` series), from a scrape of a real instance after a little traffic.
fn exported_names() -> std::collections::BTreeSet<String> {
    common::runtime().block_on(async {
        let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
        let mut config = test_config(&db);
        config.journal.enabled = true;
        let dir = tempfile::tempdir().expect("dir");
        config.journal.path = dir.path().join("j");
        // A webhook endpoint, for its series (nothing listens there).
        config.events.webhooks = vec![radacctd::config::WebhookConfig {
            name: "metrics".into(),
            url: format!("http://127.0.0.1:{}/", free_port_tcp()),
            secret: radacctd::config::Secret::new("a-secret-of-16-chars"),
            types: Vec::new(),
            batch_size: 100,
            timeout_secs: 1,
            max_backoff_secs: 1,
            ca_file: "/nonexistent".into(),
        }];
        let app = TestApp::start(config).await;
        let mut nas = Nas::new(app.radius_addr).await;
        nas.send(&Sess::new(1).start(now())).await.expect("start");
        let _ = reqwest::get(format!("http://{}/healthz", app.api_addr)).await;
        let m = scrape(app.metrics_addr.expect("metrics")).await;
        app.stop().await;
        m.keys()
            .map(|k| k.split('{').next().unwrap_or(k).to_owned())
            .collect()
    })
}

#[test]
fn systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/radacctd.service");
    let text = std::fs::read_to_string(&unit).expect("unit file");
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "User=radacctd",
        "StateDirectory=",
        "ConfigurationDirectory=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
    ] {
        assert!(text.contains(needed), "unit has {needed}");
    }
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !require(analyze.exists(), "systemd-analyze (package systemd)") {
        return;
    }
    // Verify a copy whose ExecStart points at the binary just built.
    let dir = tempfile::tempdir().expect("dir");
    let copy = dir.path().join("radacctd.service");
    std::fs::write(
        &copy,
        text.replace("/usr/bin/radacctd", env!("CARGO_BIN_EXE_radacctd")),
    )
    .expect("write");
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    assert!(
        !stderr.lines().any(|l| l.contains("radacctd.service")),
        "warnings about the unit: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_socket_gets_ready_then_watchdog_then_stopping() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    // One open session in the database before start: READY must come after it is indexed.
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    store.close().await;
    db.exec(
        "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, acctupdatetime) \
         VALUES ('s', 'open-before-start', 'u', '192.0.2.1', datetime('now'), datetime('now'))",
    )
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let sock_path = dir.path().join("notify");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).expect("notify socket");
    let (radius, metrics) = (free_port_udp(), free_port_tcp());
    let mut child = daemon(&db, radius, metrics)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .spawn()
        .expect("spawn");
    let pid = child.id().expect("pid");
    let recv = || async {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(20), sock.recv(&mut buf))
            .await
            .expect("a notification in time")
            .expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv().await;
    assert!(first.contains("READY=1"), "first message is READY: {first}");
    // At READY the index is loaded and the listener answers.
    let m = scrape(format!("127.0.0.1:{metrics}").parse().expect("addr")).await;
    assert_eq!(value(&m, "radacctd_active_sessions"), 1.0);
    let mut nas = Nas::new(format!("127.0.0.1:{radius}").parse().expect("addr")).await;
    nas.send(&Sess::new(1).start(now()))
        .await
        .expect("answered right after READY");
    let mut watchdogs = 0;
    while watchdogs < 3 {
        let msg = recv().await;
        if msg.contains("WATCHDOG=1") {
            watchdogs += 1;
        }
    }
    signal(pid, "TERM");
    let mut stopping = false;
    for _ in 0..50 {
        if recv().await.contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 on SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
}

both_stores!(sigterm_in_a_burst_keeps_every_answered_packet);

async fn sigterm_in_a_burst_keeps_every_answered_packet(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (radius, metrics) = (free_port_udp(), free_port_tcp());
    let mut child = daemon(&db, radius, metrics).spawn().expect("spawn");
    let addr: SocketAddr = format!("127.0.0.1:{radius}").parse().expect("addr");
    let mut probe = Nas::new(addr).await;
    let mut up = false;
    for _ in 0..100 {
        let req = probe.request(&Sess::new(999_999).start(now()));
        if probe
            .exchange(&req, Duration::from_millis(200))
            .await
            .is_some()
        {
            up = true;
            break;
        }
    }
    assert!(up, "daemon answers");
    // 8 sockets × 200 packets with distinct identifiers, sent without waiting.
    let n = now();
    let mut nases = Vec::new();
    for s in 0..8u32 {
        let nas = Nas::new(addr).await;
        let mut packets = Vec::new();
        for i in 0..200u32 {
            let sess = Sess::new(s * 1000 + i);
            packets.push((
                sess.clone(),
                common::build_request(i as u8, &nas.secret, &sess.start(n - 5)),
            ));
        }
        nases.push((nas, packets));
    }
    for (nas, packets) in &nases {
        for (_, p) in packets {
            nas.socket.send_to(p, addr).await.expect("send");
        }
    }
    signal(child.id().expect("pid"), "TERM");
    let mut answered = Vec::new();
    for (nas, packets) in &nases {
        let mut buf = [0u8; 4096];
        while let Ok(Ok((len, _))) =
            tokio::time::timeout(Duration::from_millis(1500), nas.socket.recv_from(&mut buf)).await
        {
            let resp = radacctd::radius::codec::Packet::decode(&buf[..len]).expect("response");
            let (sess, req) = &packets[resp.identifier() as usize];
            let rq = radacctd::radius::codec::Packet::decode(req).expect("request");
            assert!(resp.verify_response_authenticator(rq.authenticator(), &nas.secret));
            answered.push(sess.key());
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    let rows: std::collections::BTreeSet<String> = db
        .rows()
        .await
        .into_iter()
        .map(|r| r.acctuniqueid)
        .collect();
    for key in &answered {
        assert!(rows.contains(key), "an answered packet is in the database");
    }
    eprintln!("{} of 1600 answered before exit", answered.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_picks_up_a_new_nas() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let (radius, metrics) = (free_port_udp(), free_port_tcp());
    let mut child = daemon(&db, radius, metrics).spawn().expect("spawn");
    let addr: SocketAddr = format!("127.0.0.1:{radius}").parse().expect("addr");
    let mut probe = Nas::new(addr).await;
    for _ in 0..100 {
        let req = probe.request(&Sess::new(1).start(now()));
        if probe
            .exchange(&req, Duration::from_millis(200))
            .await
            .is_some()
        {
            break;
        }
    }
    // A NAS on another loopback address, known only to the nas table.
    let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.3:0").await else {
        eprintln!("skipping: cannot bind 127.0.0.3");
        return;
    };
    let mut attrs = Sess::new(2).start(now());
    attrs.push(Attr::U32(d::NAS_PORT, 3));
    let req = common::build_request(7, b"bng-3-secret", &attrs);
    let try_once = || async {
        sock.send_to(&req, addr).await.expect("send");
        let mut buf = [0u8; 512];
        tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
            .await
            .is_ok()
    };
    assert!(!try_once().await, "unknown before the reload");
    db.exec(
        "INSERT INTO nas (nasname, shortname, secret) VALUES ('127.0.0.3', 'bng-3', 'bng-3-secret')",
    )
    .await;
    assert!(
        !try_once().await,
        "still unknown: the table is re-read on SIGHUP or every 60 s"
    );
    signal(child.id().expect("pid"), "HUP");
    let mut accepted = false;
    for _ in 0..20 {
        if try_once().await {
            accepted = true;
            break;
        }
    }
    assert!(accepted, "accepted after SIGHUP");
    signal(child.id().expect("pid"), "TERM");
    let status = child.wait().await.expect("status");
    assert!(status.success());
}

/// Both HTTP listeners close a connection whose request headers do not arrive within
/// `api.header_read_timeout_secs` (one that sends nothing, or half a request), and serve at
/// most `max_connections` at once: a further connection waits until a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http_connections_are_closed_and_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let mut config = test_config(&db);
    config.api.max_connections = 2;
    config.metrics.max_connections = 2;
    config.api.header_read_timeout_secs = 1;
    let app = TestApp::start(config).await;
    let servers = [
        (app.api_addr, "/healthz"),
        (app.metrics_addr.expect("metrics"), "/metrics"),
    ];
    for (addr, path) in servers {
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "{path}: a connection that sends nothing is never closed"
        );
        let mut holders = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("half a request");
            holders.push(c);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut third = TcpStream::connect(addr)
            .await
            .expect("connect (kernel queue)");
        third
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("request");
        assert!(
            tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf))
                .await
                .is_err(),
            "{path}: a third connection was served while two held the slots"
        );
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
            .await
            .expect("served once the half requests time out")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        drop(holders);
    }
    app.stop().await;
}

/// `radacctd check-config | head -1`: a reader that went away ends the command quietly.
#[test]
fn check_config_into_a_closed_pipe_exits_quietly() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_radacctd"))
        .arg("check-config")
        .env_remove("RADACCTD_CONFIG")
        .stdout(writer)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

/// `check-config` checks what start-up would: an `https` webhook whose CA bundle cannot be
/// read is refused, naming the endpoint and the file; the same endpoint with a readable bundle
/// (or over `http`) passes.
#[test]
fn check_config_reads_each_https_webhooks_ca_bundle() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = dir.path().join("missing-ca.pem");
    let check = |url: &str, ca_file: &std::path::Path| {
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            format!(
                "[[events.webhooks]]\nname = \"billing\"\nurl = \"{url}\"\n\
                 secret = \"0123456789abcdef0123\"\nca_file = \"{}\"\n",
                ca_file.display()
            ),
        )
        .expect("config");
        std::process::Command::new(env!("CARGO_BIN_EXE_radacctd"))
            .args(["check-config", "--config"])
            .arg(&path)
            .env_remove("RADACCTD_CONFIG")
            .output()
            .expect("runs")
    };
    let refused = check("https://billing.example/hook", &missing);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"billing\""), "{stderr}");
    assert!(stderr.contains("missing-ca.pem"), "{stderr}");

    let bundle = dir.path().join("ca.pem");
    let ca = rcgen::generate_simple_self_signed(vec!["billing.example".to_owned()])
        .expect("certificate");
    std::fs::write(&bundle, ca.cert.pem()).expect("bundle");
    for (url, ca_file) in [
        ("https://billing.example/hook", bundle.as_path()),
        ("http://127.0.0.1:9/hook", missing.as_path()),
    ] {
        let out = check(url, ca_file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{url}: {stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("configuration OK"),
            "{url}"
        );
    }
}

/// Without a config file, `serve` generates the API secret beside the SQLite file (0600) and
/// `radacctd token` signs with the same one, found without flags; a restart reuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_token_reaches_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = free_port_tcp();
    let env = [
        (
            "RADACCTD__RADIUS__LISTEN",
            format!("127.0.0.1:{}", free_port_udp()),
        ),
        ("RADACCTD__API__LISTEN", format!("127.0.0.1:{api}")),
        (
            "RADACCTD__METRICS__LISTEN",
            format!("127.0.0.1:{}", free_port_tcp()),
        ),
        ("RADACCTD__JOBS__SWEEP_ENABLED", "false".into()),
        ("RADACCTD__JOBS__ARCHIVE_ENABLED", "false".into()),
        ("RADACCTD__LOG__LEVEL", "warn".into()),
    ];
    let serve = || {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_radacctd"));
        cmd.arg("serve")
            .current_dir(dir.path())
            .env_remove("RADACCTD_CONFIG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true);
        cmd.spawn().expect("spawn")
    };
    let token = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_radacctd"))
            .args(["token", "--role", "admin", "--perm", "sessions.view"])
            .current_dir(dir.path())
            .env_remove("RADACCTD_CONFIG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("token runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    };
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{api}/api/sessions");
    let get = |bearer: String| {
        let req = http.get(&url).bearer_auth(bearer);
        async move { req.send().await.map(|r| r.status().as_u16()) }
    };
    let wait_ready = || async {
        for _ in 0..100 {
            if let Ok(code) = get("x".into()).await {
                return code;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the API never answered");
    };

    let mut child = serve();
    assert_eq!(wait_ready().await, 401);
    let secret_path = dir.path().join("radacctd.jwt-secret");
    let secret = std::fs::read_to_string(&secret_path).expect("secret file");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secret_path)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let good = token();
    assert_eq!(get(good.clone()).await.expect("answer"), 200);
    // The same claims under another signature (a character inside it changed).
    let mut wrong = good.clone().into_bytes();
    let i = wrong.len() - 8;
    wrong[i] = if wrong[i] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).expect("ascii");
    assert_eq!(get(wrong).await.expect("answer"), 401);
    signal(child.id().expect("pid"), "TERM");
    assert!(child.wait().await.expect("status").success());

    let mut child = serve();
    wait_ready().await;
    assert_eq!(std::fs::read_to_string(&secret_path).expect("kept"), secret);
    assert_eq!(get(good).await.expect("answer"), 200, "the same secret");
    signal(child.id().expect("pid"), "TERM");
    assert!(child.wait().await.expect("status").success());
}

/// Every command's help ends with an example, `completions` prints a script for each shell,
/// and `man` prints the page the package installs.
#[test]
fn help_examples_completions_and_man_page() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_radacctd"))
            .args(args)
            .env_remove("RADACCTD_CONFIG")
            .output()
            .expect("runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    for command in [
        &[][..],
        &["serve"],
        &["migrate"],
        &["check-config"],
        &["token"],
        &["sweep"],
        &["archive"],
        &["journal"],
        &["journal", "inspect"],
        &["journal", "retry"],
        &["completions"],
    ] {
        let help = run(&[command, &["--help"]].concat());
        assert!(help.contains("Example: radacctd"), "{command:?}: {help}");
    }
    for shell in ["bash", "zsh", "fish"] {
        assert!(run(&["completions", shell]).contains("radacctd"), "{shell}");
    }
    let man = run(&["man"]);
    assert!(man.contains(".SH NAME"), "{man}");
    assert!(man.contains("radacctd"), "{man}");
}

/// Every log line names the node: a `"node"` field in JSON, ` node=…` at the end of a text line
/// (the logs of several nodes merged stay apart).
#[test]
fn every_log_line_names_the_node() {
    for format in ["json", "text"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_radacctd"))
            .arg("serve")
            .env_remove("RADACCTD_CONFIG")
            .env_remove("RUST_LOG")
            .env("RADACCTD__NODE__NAME", "node-x")
            .env("RADACCTD__LOG__FORMAT", format)
            .env("RADACCTD__LOG__LEVEL", "info")
            .env(
                "RADACCTD__API__JWT_SECRET",
                "log-test-secret-0123456789abcdef-0123456789",
            )
            // Start-up fails at once: a log line or two, then the exit.
            .env(
                "RADACCTD__DATABASE__URL",
                "sqlite:///nonexistent-radacctd-dir/radacctd.db",
            )
            .output()
            .expect("runs");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let logged: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("radacctd: "))
            .collect();
        assert!(logged.len() >= 2, "{format}: {stderr}");
        for line in logged {
            if format == "json" {
                let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                assert_eq!(v["node"], "node-x", "{line}");
            } else {
                assert!(line.ends_with(" node=node-x"), "{line}");
            }
        }
    }
}
