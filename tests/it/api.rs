//! The Sessions API end to end: the real application on ephemeral ports, a real SQLite file or
//! a fresh PostgreSQL database per test, requests over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::common::api::{
    JWT_SECRET, Seed, T0, admin, api_config, reseller, reseller_view_all, seed, seed_closed_bulk,
    seed_tables, token,
};
use crate::common::{self, Backend, TestApp, TestDb};
use radacctd::api::auth::{Role, SESSIONS_VIEW};
use radacctd::api::params::FIELDS;
use radacctd::api::scope::ScopeCache;
use radacctd::api::{ApiDeps, ApiState};
use radacctd::sessions::SessionIndex;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

both_stores!(
    seed_error_tables_are_answered_with_their_status_and_message,
    invalid_parameters_are_400_naming_the_parameter,
    session_objects_have_the_seed_fields,
    reseller_tree_scopes_list_count_get_and_export,
    bad_tokens_are_401,
    injection_strings_are_rejected_or_match_nothing,
    pagination_edges,
    search_from_and_to_match_in_the_index_and_the_database,
    export_has_the_seed_header_and_quotes_fields,
    export_cap_is_413_just_above_and_200_at_the_cap,
    export_client_disconnect_frees_the_export_slot,
    rate_limit_answers_request_301_with_429,
    forwarded_for_is_honoured_only_from_trusted_proxies,
    openapi_documents_every_served_route,
    health_and_readiness,
    count_follows_ingest_and_scope_refresh,
    every_sessions_route_is_503_while_the_index_is_not_ready,
    export_ignores_page_and_limit_and_keeps_filters_and_order,
);

async fn seeded(backend: Backend, rows: &[Seed]) -> Option<(TestDb, Vec<i64>)> {
    let db = TestDb::new(backend).await?;
    let ids = seed(&db, rows).await;
    Some((db, ids))
}

async fn seed_error_tables_are_answered_with_their_status_and_message(backend: Backend) {
    let Some((db, ids)) = seeded(backend, &[Seed::open("alice", 1), Seed::closed("bob", 2)]).await
    else {
        return;
    };
    seed_tables(
        &db,
        &[(1, None), (2, None)],
        &[("alice", 1), ("bob", 2)],
        &[],
    )
    .await;
    let mut config = api_config(&db);
    config.api.export_max_rows = 1;
    let app = TestApp::start(config).await;
    let no_perm = token(Role::Admin, None, &["subscribers.disconnect"]);
    let admin = admin();

    // GET /api/sessions
    app.expect_error(
        "/api/sessions?status=bogus",
        Some(&admin),
        400,
        "invalid status, must be active/closed/all",
    )
    .await;
    app.expect_error("/api/sessions", Some(&no_perm), 403, "sessions.view denied")
        .await;
    // GET /api/sessions/count
    app.expect_error(
        "/api/sessions/count",
        Some(&no_perm),
        403,
        "sessions.view denied",
    )
    .await;
    // GET /api/sessions/{radacctid}
    app.expect_error(
        "/api/sessions/999999",
        Some(&admin),
        404,
        "session not found",
    )
    .await;
    app.expect_error(
        &format!("/api/sessions/{}", ids[0]),
        Some(&reseller(2)),
        403,
        "not authorized",
    )
    .await;
    app.expect_error(
        &format!("/api/sessions/{}", ids[1]),
        Some(&reseller(1)),
        403,
        "not authorized",
    )
    .await;
    app.expect_error(
        &format!("/api/sessions/{}", ids[0]),
        Some(&no_perm),
        403,
        "sessions.view denied",
    )
    .await;
    // GET /api/sessions/export
    app.expect_error(
        "/api/sessions/export?status=all",
        Some(&admin),
        413,
        "too many rows, narrow date range",
    )
    .await;
    app.expect_error(
        "/api/sessions/export",
        Some(&no_perm),
        403,
        "sessions.view denied",
    )
    .await;
    // The general table: 400, 401 (missing / expired), 403, 404, 413.
    app.expect_error(
        "/api/sessions?limit=0",
        Some(&admin),
        400,
        "invalid limit, must be between 1 and 500",
    )
    .await;
    app.expect_error("/api/sessions", None, 401, "missing token")
        .await;
    let expired = {
        use radacctd::api::auth::{Claims, SigningKey, issue_token};
        use radacctd::clock::now_secs;
        let cfg = radacctd::config::ApiConfig {
            jwt_secret: radacctd::config::Secret::new(JWT_SECRET),
            ..Default::default()
        };
        let c = Claims {
            sub: None,
            exp: now_secs() as u64 - 600,
            role: Role::Admin,
            reseller_id: None,
            permissions: vec![SESSIONS_VIEW.into()],
        };
        issue_token(&cfg, &c, SigningKey::ConfiguredSecret).expect("token")
    };
    app.expect_error("/api/sessions", Some(&expired), 401, "token expired")
        .await;
    let r = app.get("/api/sessions", None).await;
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );

    // The successes the tables stand next to.
    let (s, body) = app
        .json(&format!("/api/sessions/{}", ids[0]), Some(&reseller(1)))
        .await;
    assert_eq!((s, body["success"].as_bool()), (200, Some(true)));
    let (s, body) = app.json("/api/sessions/count", Some(&admin)).await;
    assert_eq!((s, body["count"].as_i64()), (200, Some(1)), "{body}");
    app.stop().await;
}

async fn invalid_parameters_are_400_naming_the_parameter(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let t = admin();
    for (q, message) in [
        ("status=Active", "invalid status, must be active/closed/all"),
        ("page=0", "invalid page, must be an integer >= 1"),
        ("page=1.5", "invalid page, must be an integer >= 1"),
        ("limit=501", "invalid limit, must be between 1 and 500"),
        ("nas_id=x", "invalid nas_id, must be an integer"),
        (
            "from=12%2F05%2F2026",
            "invalid from, must be an RFC 3339 date-time or a YYYY-MM-DD date",
        ),
        (
            "to=tomorrow",
            "invalid to, must be an RFC 3339 date-time or a YYYY-MM-DD date",
        ),
        (
            "from=2026-05-12&to=2026-05-11T23:59:59Z",
            "invalid to, must not be earlier than from",
        ),
        (
            "sort=username",
            "invalid sort, must be acctstarttime/acctinputoctets/acctoutputoctets/acctsessiontime",
        ),
        ("order=ascending", "invalid order, must be asc/desc"),
        (
            "order=asc&order=desc",
            "invalid order, given more than once",
        ),
    ] {
        for path in ["/api/sessions", "/api/sessions/export"] {
            if path.ends_with("export") && (q.starts_with("page") || q.starts_with("limit")) {
                continue; // the export ignores paging
            }
            app.expect_error(&format!("{path}?{q}"), Some(&t), 400, message)
                .await;
        }
    }
    app.expect_error(
        "/api/sessions/export?format=xlsx",
        Some(&t),
        400,
        "invalid format, xlsx is not supported yet (use csv)",
    )
    .await;
    app.expect_error(
        "/api/sessions/export?format=pdf",
        Some(&t),
        400,
        "invalid format, must be csv",
    )
    .await;
    app.expect_error(
        "/api/sessions/abc",
        Some(&t),
        400,
        "invalid radacctid, must be an integer",
    )
    .await;
    // Unknown parameters are ignored; so are empty values.
    let (s, _) = app
        .json("/api/sessions?frobnicate=1&search=&status=", Some(&t))
        .await;
    assert_eq!(s, 200);
    // Every error is JSON, including the router's own.
    app.expect_error("/api/nothing-here", Some(&t), 404, "not found")
        .await;
    let r = app
        .http
        .post(app.url("/api/sessions"))
        .bearer_auth(&t)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 405);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["success"], Value::Bool(false));
    let long = format!("/api/sessions?search={}", "a".repeat(10_000));
    app.expect_error(&long, Some(&t), 414, "URI too long").await;
    app.stop().await;
}

async fn session_objects_have_the_seed_fields(backend: Backend) {
    let mut open = Seed::open("user1@example.lb", 1);
    open.acctinputoctets = Some(1_234_567_890);
    open.acctoutputoctets = Some(9_876_543_210);
    let mut other_nas = Seed::closed("user2@example.lb", 2);
    other_nas.nasipaddress = "198.51.100.1".into();
    let Some((db, ids)) = seeded(backend, &[open, other_nas]).await else {
        return;
    };
    seed_tables(
        &db,
        &[],
        &[],
        &[(2, "192.0.2.10"), (5, "192.0.2.10"), (3, "203.0.113.0/24")],
    )
    .await;
    let app = TestApp::start(api_config(&db)).await;
    let t = admin();
    let (s, body) = app
        .json(&format!("/api/sessions/{}", ids[0]), Some(&t))
        .await;
    assert_eq!(s, 200, "{body}");
    let o = body["data"].as_object().expect("object");
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort();
    let mut want = FIELDS.to_vec();
    want.sort();
    assert_eq!(keys, want);
    assert_eq!(o["radacctid"], ids[0]);
    assert_eq!(o["username"], "user1@example.lb");
    assert_eq!(o["nasipaddress"], "192.0.2.10");
    assert_eq!(o["nas_id"], 2, "lowest nas id whose nasname is the address");
    assert_eq!(o["framedipaddress"], "10.64.0.1");
    assert_eq!(o["callingstationid"], "AA:BB:CC:DD:00:01");
    assert_eq!(o["acctstarttime"], "2026-05-12T08:01:00Z");
    assert_eq!(o["acctupdatetime"], "2026-05-12T08:06:00Z");
    assert_eq!(o["acctstoptime"], Value::Null);
    assert_eq!(o["acctinputoctets"], 1_234_567_890i64);
    assert_eq!(o["acctoutputoctets"], 9_876_543_210i64);
    assert_eq!(o["acctterminatecause"], Value::Null);
    // Closed, from the database; a NAS without a `nas` row has a null nas_id.
    let (s, body) = app
        .json(&format!("/api/sessions/{}", ids[1]), Some(&t))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["data"]["nas_id"], Value::Null);
    assert_eq!(body["data"]["acctstoptime"], "2026-05-12T09:02:00Z");
    assert_eq!(body["data"]["acctterminatecause"], "User-Request");
    // nas_id filters both paths.
    let (ids_active, _) = app.list_ids("/api/sessions?nas_id=2", &t).await;
    assert_eq!(ids_active, vec![ids[0]]);
    let (none, total) = app.list_ids("/api/sessions?nas_id=5&status=all", &t).await;
    assert_eq!(
        (none.len(), total),
        (0, 0),
        "nas 5 is not the nas_id of that address"
    );
    let (none, _) = app.list_ids("/api/sessions?nas_id=3", &t).await;
    assert!(none.is_empty());
    // The list answer's shape.
    let (_, body) = app.json("/api/sessions?status=all", Some(&t)).await;
    assert_eq!(body["success"], true);
    assert_eq!(
        body["pagination"],
        serde_json::json!({ "page": 1, "limit": 50, "total": 2 })
    );
    app.stop().await;
}

/// Resellers: 1 → 2 → 3 (three levels) and 4 on its own.
async fn reseller_tree_scopes_list_count_get_and_export(backend: Backend) {
    let users = ["top", "mid", "leaf", "other", "nobody"];
    let mut rows = Vec::new();
    for (i, u) in users.iter().enumerate() {
        rows.push(Seed::open(u, 10 + i as u32));
        rows.push(Seed::closed(u, 20 + i as u32));
    }
    let Some((db, ids)) = seeded(backend, &rows).await else {
        return;
    };
    seed_tables(
        &db,
        &[(1, None), (2, Some(1)), (3, Some(2)), (4, None)],
        &[("top", 1), ("mid", 2), ("leaf", 3), ("other", 4)],
        &[],
    )
    .await;
    let app = TestApp::start(api_config(&db)).await;
    let id_of = |user: &str, open: bool| {
        let i = users.iter().position(|u| *u == user).expect("user");
        ids[2 * i + usize::from(!open)]
    };
    let cases: Vec<(String, Vec<&str>)> = vec![
        (reseller(1), vec!["leaf", "mid", "top"]),
        (reseller(2), vec!["leaf", "mid"]),
        (reseller(3), vec!["leaf"]),
        (reseller(4), vec!["other"]),
        (reseller(99), vec![]),
        (
            reseller_view_all(3),
            vec!["leaf", "mid", "nobody", "other", "top"],
        ),
        (admin(), vec!["leaf", "mid", "nobody", "other", "top"]),
    ];
    for (t, visible) in &cases {
        let visible: Vec<String> = visible.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            app.list_users("/api/sessions", t).await,
            visible,
            "active list"
        );
        assert_eq!(
            app.list_users("/api/sessions?status=closed", t).await,
            visible,
            "closed list"
        );
        let mut twice: Vec<String> = visible
            .iter()
            .flat_map(|u| [u.clone(), u.clone()])
            .collect();
        twice.sort();
        assert_eq!(
            app.list_users("/api/sessions?status=all", t).await,
            twice,
            "all list"
        );
        assert_eq!(app.count(t).await, visible.len() as i64, "count");
        for u in users {
            for open in [true, false] {
                let (s, _) = app
                    .json(&format!("/api/sessions/{}", id_of(u, open)), Some(t))
                    .await;
                let want = if visible.iter().any(|v| v == u) {
                    200
                } else {
                    403
                };
                assert_eq!(s, want, "get {u} open={open}");
            }
        }
        let csv = app
            .get("/api/sessions/export?status=all&columns=username", Some(t))
            .await;
        assert_eq!(csv.status().as_u16(), 200);
        let text = csv.text().await.expect("csv");
        let mut exported: Vec<String> = text.lines().skip(1).map(str::to_owned).collect();
        exported.sort();
        assert_eq!(exported, twice, "export");
    }
    app.stop().await;
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

async fn bad_tokens_are_401(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use radacctd::clock::now_secs;
    let claims = serde_json::json!({ "sub": "x", "exp": now_secs() + 600, "role": "admin", "permissions": [SESSIONS_VIEW] });
    let sign = |alg: Algorithm, secret: &str, claims: &Value| {
        encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    let good = sign(Algorithm::HS256, JWT_SECRET, &claims);
    let (s, _) = app.json("/api/sessions/count", Some(&good)).await;
    assert_eq!(s, 200, "the control token works");

    let payload = b64(claims.to_string().as_bytes());
    let alg_none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
    let mut no_exp = claims.clone();
    no_exp.as_object_mut().expect("obj").remove("exp");
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    let reseller_without_id = serde_json::json!({ "exp": now_secs() + 600, "role": "reseller", "permissions": [SESSIONS_VIEW] });
    let unknown_role = serde_json::json!({ "exp": now_secs() + 600, "role": "root", "permissions": [SESSIONS_VIEW] });
    let expired = serde_json::json!({ "exp": now_secs() - 3600, "role": "admin", "permissions": [SESSIONS_VIEW] });
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "missing token"),
        (
            "not bearer",
            Some(format!("Basic {good}")),
            "malformed token",
        ),
        ("empty bearer", Some("Bearer ".into()), "malformed token"),
        ("garbage", Some("Bearer not-a-jwt".into()), "invalid token"),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, JWT_SECRET, &expired)
            )),
            "token expired",
        ),
        (
            "wrong key",
            Some(format!(
                "Bearer {}",
                sign(
                    Algorithm::HS256,
                    "another-secret-of-enough-length!!",
                    &claims
                )
            )),
            "invalid token",
        ),
        (
            "bad signature",
            Some(format!("Bearer {tampered}")),
            "invalid token",
        ),
        (
            "alg none",
            Some(format!("Bearer {alg_none}")),
            "invalid token",
        ),
        (
            "HS512",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS512, JWT_SECRET, &claims)
            )),
            "invalid token",
        ),
        (
            "HS384",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS384, JWT_SECRET, &claims)
            )),
            "invalid token",
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, JWT_SECRET, &no_exp)
            )),
            "invalid token",
        ),
        (
            "reseller without id",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, JWT_SECRET, &reseller_without_id)
            )),
            "invalid token",
        ),
        (
            "unknown role",
            Some(format!(
                "Bearer {}",
                sign(Algorithm::HS256, JWT_SECRET, &unknown_role)
            )),
            "invalid token",
        ),
    ];
    for path in [
        "/api/sessions",
        "/api/sessions/count",
        "/api/sessions/1",
        "/api/sessions/export",
    ] {
        for (what, header, message) in &cases {
            let mut rq = app.http.get(app.url(path));
            if let Some(h) = header {
                rq = rq.header("authorization", h);
            }
            let r = rq.send().await.expect("request");
            assert_eq!(r.status().as_u16(), 401, "{what} on {path}");
            let body: Value = r.json().await.expect("json");
            assert_eq!(body["message"], *message, "{what} on {path}");
            assert_eq!(body["success"], false);
        }
    }
    app.stop().await;
}

async fn injection_strings_are_rejected_or_match_nothing(backend: Backend) {
    let rows: Vec<Seed> = (1..=3)
        .flat_map(|n| {
            [
                Seed::open(&format!("user{n}"), n),
                Seed::closed(&format!("user{n}"), 10 + n),
            ]
        })
        .collect();
    let Some((db, _)) = seeded(backend, &rows).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let t = admin();
    let evil = [
        "' OR '1'='1",
        "'; DROP TABLE radacct; --",
        "%",
        "_",
        "\\",
        "%' --",
        "\") OR 1=1 --",
        "*/ SELECT 1 /*",
        "user1' UNION SELECT * FROM nas --",
        "$1",
        "?1",
    ];
    for e in evil {
        let enc: String = e.bytes().map(|b| format!("%{b:02X}")).collect();
        for status in ["active", "closed", "all"] {
            let (ids, total) = app
                .list_ids(&format!("/api/sessions?status={status}&search={enc}"), &t)
                .await;
            assert_eq!((ids.len(), total), (0, 0), "search {e:?} status {status}");
        }
        let r = app
            .get(
                &format!("/api/sessions/export?status=all&search={enc}"),
                Some(&t),
            )
            .await;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.text().await.expect("csv").lines().count(),
            1,
            "header only for {e:?}"
        );
        for param in [
            "sort", "order", "columns", "status", "nas_id", "from", "page", "limit",
        ] {
            let path = if param == "columns" {
                "/api/sessions/export"
            } else {
                "/api/sessions"
            };
            let (s, body) = app.json(&format!("{path}?{param}={enc}"), Some(&t)).await;
            assert_eq!(s, 400, "{param}={e:?}: {body}");
            assert!(
                body["message"].as_str().unwrap_or_default().contains(param),
                "{body}"
            );
        }
        let (s, _) = app.json(&format!("/api/sessions/{enc}"), Some(&t)).await;
        assert!(s == 400 || s == 404, "id {e:?} gave {s}");
    }
    // Nothing changed.
    let (_, total) = app.list_ids("/api/sessions?status=all", &t).await;
    assert_eq!(total, 6);
    assert_eq!(app.count(&t).await, 3);
    app.stop().await;
}

async fn pagination_edges(backend: Backend) {
    let mut rows: Vec<Seed> = (1..=7).map(|n| Seed::open(&format!("o{n}"), n)).collect();
    rows.extend((1..=7).map(|n| Seed::closed(&format!("c{n}"), 100 + n)));
    let Some((db, ids)) = seeded(backend, &rows).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let t = admin();
    for (status, mut want) in [("active", ids[..7].to_vec()), ("closed", ids[7..].to_vec())] {
        want.sort_by_key(|id| std::cmp::Reverse(*id)); // start times grow with the id; default desc
        let mut got = Vec::new();
        for page in 1..=3 {
            let (p, total) = app
                .list_ids(
                    &format!("/api/sessions?status={status}&limit=3&page={page}"),
                    &t,
                )
                .await;
            assert_eq!(total, 7);
            assert_eq!(
                p.len(),
                if page == 3 { 1 } else { 3 },
                "{status} page {page}"
            );
            got.extend(p);
        }
        assert_eq!(got, want, "{status}: pages in order, no repeats");
        let (past, total) = app
            .list_ids(&format!("/api/sessions?status={status}&limit=3&page=4"), &t)
            .await;
        assert_eq!((past.len(), total), (0, 7), "{status}: page past the end");
        let (far, total) = app
            .list_ids(
                &format!("/api/sessions?status={status}&limit=500&page=1000000"),
                &t,
            )
            .await;
        assert_eq!((far.len(), total), (0, 7));
        let (all, _) = app
            .list_ids(&format!("/api/sessions?status={status}&limit=500"), &t)
            .await;
        assert_eq!(all, want, "limit 500");
        app.expect_error(
            &format!("/api/sessions?status={status}&limit=501"),
            Some(&t),
            400,
            "invalid limit, must be between 1 and 500",
        )
        .await;
        let (_, body) = app
            .json(
                &format!("/api/sessions?status={status}&limit=3&page=3"),
                Some(&t),
            )
            .await;
        assert_eq!(
            body["pagination"],
            serde_json::json!({ "page": 3, "limit": 3, "total": 7 })
        );
    }
    let (all, total) = app
        .list_ids("/api/sessions?status=all&limit=500&order=asc", &t)
        .await;
    assert_eq!((all.len(), total), (14, 14));
    app.stop().await;
}

async fn search_from_and_to_match_in_the_index_and_the_database(backend: Backend) {
    let mut rows = Vec::new();
    for (n, user, mac, ip) in [
        (1u32, "Alice@Example.lb", "AA:BB:CC:DD:EE:01", "10.1.2.3"),
        (2, "bob@example.lb", "aa-bb-cc-dd-ee-02", "10.1.20.3"),
        (3, "carol@other.lb", "aabb.ccdd.ee03", "192.168.1.3"),
        (4, "ÉMILE@example.lb", "", "10.9.9.9"),
    ] {
        for open in [true, false] {
            let mut s = if open {
                Seed::open(user, n)
            } else {
                Seed::closed(user, n + 10)
            };
            s.callingstationid = Some(mac.to_owned()).filter(|m| !m.is_empty());
            s.framedipaddress = Some(ip.to_owned());
            rows.push(s);
        }
    }
    let Some((db, _)) = seeded(backend, &rows).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let t = admin();
    let cases: &[(&str, &[&str])] = &[
        ("ALICE", &["Alice@Example.lb"]),
        (
            "example.LB",
            &["Alice@Example.lb", "bob@example.lb", "ÉMILE@example.lb"],
        ),
        ("émile", &[]), // ASCII-only folding: É is not é
        ("ÉMILE", &["ÉMILE@example.lb"]),
        ("10.1.2", &["Alice@Example.lb", "bob@example.lb"]),
        ("1.2.3", &[]), // framed IP is a prefix match
        ("AA:BB:CC:DD:EE:02", &["bob@example.lb"]),
        ("aabb.ccdd.ee01", &["Alice@Example.lb"]),
        ("aa-bb-cc-dd-ee-03", &["carol@other.lb"]),
        (
            "dd-ee",
            &["Alice@Example.lb", "bob@example.lb", "carol@other.lb"],
        ),
    ];
    for (term, want) in cases {
        let enc: String = term.bytes().map(|b| format!("%{b:02X}")).collect();
        let want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
        let mut sorted = want.clone();
        sorted.sort();
        for status in ["active", "closed"] {
            assert_eq!(
                app.list_users(&format!("/api/sessions?status={status}&search={enc}"), &t)
                    .await,
                sorted,
                "{term} {status}"
            );
        }
    }
    // Starts: open n at T0 + n min; closed n+10 at T0 + (n+10) min.
    let at = |min: i64| {
        chrono::DateTime::from_timestamp(T0 + min * 60, 0)
            .expect("t")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let (ids, _) = app
        .list_ids(&format!("/api/sessions?from={}&to={}", at(2), at(3)), &t)
        .await;
    assert_eq!(ids.len(), 2, "inclusive bounds");
    let (_, total) = app
        .list_ids(&format!("/api/sessions?status=closed&from={}", at(12)), &t)
        .await;
    assert_eq!(total, 3);
    let (_, total) = app
        .list_ids("/api/sessions?status=all&from=2026-05-12&to=2026-05-12", &t)
        .await;
    assert_eq!(
        total, 0,
        "a bare date is UTC midnight; everything starts after 08:00"
    );
    let (_, total) = app
        .list_ids("/api/sessions?status=all&from=2026-05-12&to=2026-05-13", &t)
        .await;
    assert_eq!(total, 8);
    let (_, total) = app
        .list_ids(
            "/api/sessions?status=all&from=2026-05-12T10:00:00%2B02:00",
            &t,
        )
        .await;
    assert_eq!(total, 8, "offsets are converted to UTC");
    app.stop().await;
}

async fn export_has_the_seed_header_and_quotes_fields(backend: Backend) {
    let users = [
        "plain",
        "comma,user",
        "quote\"user",
        "new\nline",
        "both,\"\r\nall",
    ];
    let rows: Vec<Seed> = users
        .iter()
        .enumerate()
        .map(|(i, u)| Seed::closed(u, i as u32 + 1))
        .collect();
    let Some((db, _)) = seeded(backend, &rows).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let t = admin();
    let r = app
        .get("/api/sessions/export?status=closed&order=asc", Some(&t))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let cd = r.headers()["content-disposition"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        cd.starts_with("attachment; filename=\"sessions-closed-") && cd.ends_with(".csv\""),
        "{cd}"
    );
    assert_eq!(r.headers()["x-total-count"], "5");
    let body = r.text().await.expect("csv");
    assert!(body.starts_with(
        "radacctid,username,nasipaddress,framedipaddress,acctstarttime,acctstoptime,acctsessiontime,acctinputoctets,acctoutputoctets,acctterminatecause\r\n"
    ));
    assert!(body.contains("\"comma,user\""), "{body}");
    assert!(body.contains("\"quote\"\"user\""), "{body}");
    assert!(body.contains("\"new\nline\""), "{body}");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let got: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.expect("record").iter().map(str::to_owned).collect())
        .collect();
    assert_eq!(got.len(), 5);
    for (row, user) in got.iter().zip(users) {
        assert_eq!(row[1], user);
        assert_eq!(row[2], "192.0.2.10");
        assert!(row[4].ends_with('Z') && row[5].ends_with('Z'));
        assert_eq!(row[9], "User-Request");
    }
    // Chosen columns, in the order asked.
    let r = app
        .get(
            "/api/sessions/export?status=closed&order=asc&columns=nas_id,username,acctupdatetime",
            Some(&t),
        )
        .await;
    let body = r.text().await.expect("csv");
    assert!(
        body.starts_with("nas_id,username,acctupdatetime\r\n,plain,2026-05-12T09:01:00Z\r\n"),
        "{body}"
    );
    app.expect_error("/api/sessions/export?columns=username,secret", Some(&t), 400, "invalid columns, unknown column \"secret\" (allowed: radacctid, username, acctsessionid, nasipaddress, nas_id, nasportid, framedipaddress, callingstationid, acctstarttime, acctstoptime, acctupdatetime, acctinputoctets, acctoutputoctets, acctsessiontime, acctterminatecause)").await;
    app.stop().await;
}

async fn export_cap_is_413_just_above_and_200_at_the_cap(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    seed_closed_bulk(&db, "bulk", 11).await;
    let mut config = api_config(&db);
    config.api.export_max_rows = 10;
    let app = TestApp::start(config).await;
    let t = admin();
    app.expect_error(
        "/api/sessions/export?status=closed",
        Some(&t),
        413,
        "too many rows, narrow date range",
    )
    .await;
    // Narrowed to exactly the cap: rows 2..=11 start at T0 + 2 min onwards.
    let from = chrono::DateTime::from_timestamp(T0 + 120, 0)
        .expect("t")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = app
        .get(
            &format!("/api/sessions/export?status=closed&from={from}"),
            Some(&t),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.text().await.expect("csv").lines().count(),
        11,
        "header + 10 rows"
    );
    app.stop().await;
}

async fn export_client_disconnect_frees_the_export_slot(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    seed_closed_bulk(&db, "bulk", 60_000).await;
    let mut config = api_config(&db);
    config.api.export_concurrency = 1;
    let app = TestApp::start(config).await;
    let t = admin();
    let mut r = app
        .get("/api/sessions/export?status=closed", Some(&t))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let first = r.chunk().await.expect("chunk").expect("some bytes");
    assert!(!first.is_empty());
    // The only slot is taken while that body is open.
    app.expect_error(
        "/api/sessions/export?status=closed&limit=1",
        Some(&t),
        503,
        "too many exports in progress, try again later",
    )
    .await;
    drop(r);
    // The server notices the disconnect and frees the slot (and its connection) promptly.
    let mut freed = false;
    for _ in 0..100 {
        let r = app
            .get(
                "/api/sessions/export?status=closed&from=2030-01-01",
                Some(&t),
            )
            .await;
        if r.status().as_u16() == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(freed, "export slot freed after the client went away");
    // Other endpoints kept working throughout.
    let (s, _) = app
        .json("/api/sessions?status=closed&limit=1", Some(&t))
        .await;
    assert_eq!(s, 200);
    app.stop().await;
}

async fn rate_limit_answers_request_301_with_429(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let mut config = api_config(&db);
    // The production burst, refilled only once a minute: request 301 cannot be saved by the
    // refill however slow the test machine is.
    config.api.rate_limit_burst = 300;
    config.api.rate_limit_period_ms = 60_000;
    let app = TestApp::start(config).await;
    for i in 1..=300 {
        let r = app.get("/healthz", None).await;
        assert_eq!(r.status().as_u16(), 200, "request {i}");
    }
    let r = app.get("/api/sessions/count", Some(&admin())).await;
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({ "success": false, "message": "too many requests" })
    );
    app.stop().await;
}

async fn forwarded_for_is_honoured_only_from_trusted_proxies(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    for trusted in [false, true] {
        let mut config = api_config(&db);
        config.api.rate_limit_burst = 3;
        config.api.rate_limit_period_ms = 60_000;
        if trusted {
            config.api.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr")];
        }
        let app = TestApp::start(config).await;
        let send = |xff: &'static str| {
            let rq = app
                .http
                .get(app.url("/healthz"))
                .header("x-forwarded-for", xff);
            async move { rq.send().await.expect("request").status().as_u16() }
        };
        for _ in 0..3 {
            assert_eq!(send("198.51.100.1").await, 200);
        }
        assert_eq!(send("198.51.100.1").await, 429);
        // Another client behind the proxy: its own bucket only when the proxy is trusted.
        let other = send("127.0.0.5, 198.51.100.2").await;
        assert_eq!(other, if trusted { 200 } else { 429 }, "trusted={trusted}");
        app.stop().await;
    }
}

async fn openapi_documents_every_served_route(backend: Backend) {
    let Some((db, ids)) = seeded(backend, &[Seed::open("alice", 1)]).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let (s, doc) = app.json("/api/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    for r in radacctd::api::ROUTES {
        assert!(
            paths.get(r.path).and_then(|p| p.get(r.method)).is_some(),
            "{} {} is not documented",
            r.method,
            r.path
        );
    }
    // Every documented operation is served (not a 404/405 from the router).
    let t = token(
        Role::Admin,
        None,
        &[
            SESSIONS_VIEW,
            radacctd::api::auth::SESSIONS_ATTRIBUTION,
            radacctd::api::auth::EVENTS_VIEW,
        ],
    );
    for (path, ops) in paths {
        for method in ops.as_object().expect("ops").keys() {
            if method == "post" {
                // The disconnect action is exercised by `api_disconnect`; here only its
                // documented answers.
                for code in ["200", "401", "403", "404", "503"] {
                    assert!(
                        ops["post"]["responses"].get(code).is_some(),
                        "{path} documents {code}"
                    );
                }
                continue;
            }
            assert_eq!(method, "get");
            if path.starts_with("/api/nas") {
                // No nas row here: the handler's own 404 proves the route is served.
                let nas_view = token(Role::Admin, None, &["nas.view"]);
                let (s, body) = app.json(&path.replace("{id}", "1"), Some(&nas_view)).await;
                let served = s == 200 || body["message"] == "nas not found";
                assert!(served, "{path}: {s} {body}");
                continue;
            }
            let mut concrete = path.replace("{radacctid}", &ids[0].to_string());
            if path == "/api/attribution" {
                concrete.push_str("?ip=10.64.0.1&at=2026-05-12T08:00:00Z");
            }
            let r = app.get(&concrete, Some(&t)).await;
            let s = r.status().as_u16();
            assert!(s == 200, "{path}: {s}");
            for code in ["200", "401", "429"] {
                if path.starts_with("/api/sessions") {
                    assert!(
                        ops["get"]["responses"].get(code).is_some(),
                        "{path} documents {code}"
                    );
                }
            }
        }
    }
    let session = &doc["components"]["schemas"]["Session"]["properties"];
    for f in FIELDS {
        assert!(session.get(f).is_some(), "{f}");
    }
    app.stop().await;
}

async fn health_and_readiness(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let (s, body) = app.json("/healthz", None).await;
    assert_eq!((s, body["success"].as_bool()), (200, Some(true)));
    let (s, body) = app.json("/readyz", None).await;
    assert_eq!((s, body["status"].as_str()), (200, Some("ready")));
    let r = app.get("/healthz", None).await;
    assert!(
        r.headers().get("x-request-id").is_some(),
        "request ids are propagated"
    );
    app.stop().await;
}

async fn count_follows_ingest_and_scope_refresh(backend: Backend) {
    let Some((db, _)) = seeded(backend, &[Seed::open("user1@example.lb", 1)]).await else {
        return;
    };
    seed_tables(
        &db,
        &[(1, None), (2, None)],
        &[("user1@example.lb", 1)],
        &[],
    )
    .await;
    let mut config = api_config(&db);
    config.api.scope_refresh_secs = 1;
    let app = TestApp::start(config).await;
    let (t, r1, r2) = (admin(), reseller(1), reseller(2));
    assert_eq!(
        (
            app.count(&t).await,
            app.count(&r1).await,
            app.count(&r2).await
        ),
        (1, 1, 0)
    );
    // A Start over RADIUS: counted at once, no restart.
    let mut nas = common::Nas::new(app.radius_addr).await;
    let s = common::Sess::new(2);
    assert!(nas.send(&s.start(common::now())).await.is_some());
    assert_eq!(app.count(&t).await, 2);
    // The new subscriber belongs to reseller 2 once the cache is refreshed.
    db.exec(&format!(
        "INSERT INTO subscribers (username, reseller_id) VALUES ('{}', 2)",
        s.user
    ))
    .await;
    let mut moved = false;
    for _ in 0..100 {
        if app.count(&r2).await == 1 {
            moved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(moved, "scope refresh reassigns the index's counters");
    assert_eq!(
        app.list_users("/api/sessions", &r2).await,
        vec![s.user.clone()]
    );
    assert_eq!(app.count(&r1).await, 1);
    app.stop().await;
}

/// Property: for any open sessions and any filter, sort and page, the live index answers what
/// the database answers for its open rows (same rows, same order, same total).
mod index_matches_database {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use proptest::prelude::*;
    use radacctd::sessions::Row;
    use radacctd::sessions::filter::{
        NasMatch, Order, Page, Scope, Search, SessionFilter, Sort, SortKey, Status, select_page,
    };
    use radacctd::sessions::{Ipv6Columns, Session, SessionIndex};
    use radacctd::store::{SessionQuery, Store};

    use crate::common::api::{Seed, T0, seed_on, seed_tables};
    use crate::common::{self, Backend, TestDb};

    const USERS: [&str; 8] = [
        "alice", "Alice", "BOB", "bob-x", "ÉMILE", "émile", "carol", "",
    ];
    const OWNERS: [(&str, i64); 4] = [("alice", 1), ("Alice", 2), ("BOB", 3), ("carol", 1)];
    const IPS: [&str; 4] = ["10.0.0.1", "10.0.0.12", "10.1.0.1", "192.168.1.1"];
    const MACS: [&str; 4] = [
        "AA:BB:CC:DD:EE:01",
        "aa-bb-cc-dd-ee-02",
        "aabb.ccdd.ee01",
        "x:y",
    ];
    const NASES: [&str; 2] = ["192.0.2.1", "192.0.2.2"];
    const TERMS: [&str; 27] = [
        "a",
        "ALI",
        "bob",
        "é",
        "É",
        "10.0",
        "10.0.0.1",
        "ee01",
        "EE-0",
        ":",
        "x",
        "%",
        "_",
        "B",
        "2001:db8:",
        "2001:DB8::1",
        "2001:0db8:12:3400::/56",
        "2001:db8:12:34",
        "2a02:",
        "::ffff:10",
        "::FFFF:10.0.0.1",
        "2001:db8:0:1:0::5",
        "2001:0DB8:0000:0001:0000:0000:0000:0005",
        "2A02:0001:0002::/48",
        "::a00:1",
        "0:0:0:0:0:0:A00:1",
        "::10.0",
    ];
    /// IPv6 values in their `inet` text (PostgreSQL reads them back unchanged; radacctd
    /// writes the same text, `net::ipv6_text`), an IPv4-mapped and an IPv4-compatible one
    /// included.
    const V6_ADDRESSES: [&str; 4] = [
        "2001:db8::1",
        "2001:db8:0:1::5",
        "::ffff:10.0.0.1",
        "::10.0.0.1",
    ];
    const V6_PREFIXES: [&str; 3] = [
        "2001:db8:12:3400::/56",
        "2001:db8:12:3400::/64",
        "2a02:1:2::/48",
    ];

    #[derive(Debug, Clone)]
    struct Gen {
        user: Option<usize>,
        ip: Option<usize>,
        mac: Option<usize>,
        nas: usize,
        start: Option<i64>,
        input: Option<i64>,
        output: Option<i64>,
        time: Option<i64>,
        open: bool,
        /// framedipv6address, framedipv6prefix, delegatedipv6prefix.
        v6: (Option<usize>, Option<usize>, Option<usize>),
    }

    fn gen_row() -> impl Strategy<Value = Gen> {
        (
            (
                proptest::option::weighted(0.9, 0..USERS.len()),
                proptest::option::of(0..IPS.len()),
            ),
            (proptest::option::of(0..MACS.len()), 0..NASES.len()),
            (
                proptest::option::weighted(0.8, 0i64..5),
                proptest::option::weighted(0.8, 0i64..4),
                proptest::option::weighted(0.8, 0i64..4),
                proptest::option::weighted(0.8, 0i64..4),
            ),
            proptest::bool::weighted(0.7),
            (
                proptest::option::weighted(0.4, 0..V6_ADDRESSES.len()),
                proptest::option::weighted(0.4, 0..V6_PREFIXES.len()),
                proptest::option::weighted(0.4, 0..V6_PREFIXES.len()),
            ),
        )
            .prop_map(
                |((user, ip), (mac, nas), (start, input, output, time), open, v6)| Gen {
                    user,
                    ip,
                    mac,
                    nas,
                    start: start.map(|m| T0 + m * 60),
                    input,
                    output,
                    time,
                    open,
                    v6,
                },
            )
    }

    #[derive(Debug, Clone)]
    struct Ask {
        filter: SessionFilter,
        sort: Sort,
        page: Page,
    }

    fn gen_ask() -> impl Strategy<Value = Ask> {
        let scope = prop_oneof![
            Just(Scope::All),
            proptest::collection::vec(1i64..5, 0..3).prop_map(Scope::resellers),
        ];
        let nas = proptest::option::of(prop_oneof![
            (0..NASES.len()).prop_map(|i| NasMatch::Address(NASES[i].to_owned())),
            Just(NasMatch::Nothing),
        ]);
        (
            (proptest::option::of(0..TERMS.len()), nas, scope),
            (proptest::option::of(0i64..5), proptest::option::of(0i64..5)),
            (0..4usize, any::<bool>(), 1u64..4, 1u64..6),
        )
            .prop_map(
                |((term, nas, scope), (from, to), (key, asc, page, limit))| Ask {
                    filter: SessionFilter {
                        search: term.and_then(|t| Search::new(TERMS[t])),
                        nas,
                        from: from.map(|m| T0 + m * 60),
                        to: to.map(|m| T0 + m * 60),
                        scope,
                    },
                    sort: Sort {
                        key: SortKey::ALL[key],
                        order: if asc { Order::Asc } else { Order::Desc },
                    },
                    page: Page { page, limit },
                },
            )
    }

    fn seed_of(i: usize, g: &Gen) -> Seed {
        Seed {
            username: g.user.map(|u| USERS[u].to_owned()),
            acctsessionid: format!("s{i}"),
            acctuniqueid: format!("u{i}"),
            nasipaddress: NASES[g.nas].to_owned(),
            nasportid: None,
            framedipaddress: g.ip.map(|i| IPS[i].to_owned()),
            callingstationid: g.mac.map(|m| MACS[m].to_owned()),
            acctstarttime: g.start,
            acctstoptime: if g.open { None } else { Some(T0 + 3600) },
            acctupdatetime: g.start,
            acctinputoctets: g.input,
            acctoutputoctets: g.output,
            acctsessiontime: g.time,
            acctterminatecause: None,
            framedipv6address: g.v6.0.map(|i| V6_ADDRESSES[i].to_owned()),
            framedipv6prefix: g.v6.1.map(|i| V6_PREFIXES[i].to_owned()),
            delegatedipv6prefix: g.v6.2.map(|i| V6_PREFIXES[i].to_owned()),
        }
    }

    async fn clear(store: &Store) {
        match store {
            Store::Postgres(s) => {
                sqlx::query("DELETE FROM radacct")
                    .execute(s.pool())
                    .await
                    .expect("delete");
            }
            Store::Sqlite(s) => {
                sqlx::query("DELETE FROM radacct")
                    .execute(s.pool())
                    .await
                    .expect("delete");
            }
        }
    }

    fn run(backend: Backend) {
        let rt = common::runtime();
        let Some(db) = rt.block_on(TestDb::new(backend)) else {
            return;
        };
        rt.block_on(seed_tables(
            &db,
            &[(1, None), (2, Some(1)), (3, None), (4, None)],
            &OWNERS,
            &[],
        ));
        let store = rt.block_on(db.open_store());
        let owners: HashMap<&str, i64> = OWNERS.into_iter().collect();
        let mut runner = common::property_runner(40);
        let ipv6_hits = AtomicUsize::new(0);
        let strategy = (
            proptest::collection::vec(gen_row(), 0..24),
            proptest::collection::vec(gen_ask(), 1..6),
        );
        runner
            .run(&strategy, |(rows, asks)| {
                rt.block_on(async {
                    clear(&store).await;
                    let seeds: Vec<Seed> = rows
                        .iter()
                        .enumerate()
                        .map(|(i, g)| seed_of(i, g))
                        .collect();
                    let ids = seed_on(&store, &seeds).await;
                    let index = SessionIndex::new();
                    index.replace_all(
                        seeds
                            .iter()
                            .zip(&ids)
                            .filter(|(s, _)| s.acctstoptime.is_none())
                            .map(|(s, id)| {
                                let username = s.username.clone().unwrap_or_default();
                                Session {
                                    radacctid: Some(*id),
                                    acctuniqueid: s.acctuniqueid.as_str().into(),
                                    reseller_id: owners.get(username.as_str()).copied(),
                                    username: username.into(),
                                    acctsessionid: s.acctsessionid.as_str().into(),
                                    nasipaddress: s.nasipaddress.as_str().into(),
                                    nasportid: s.nasportid.as_deref().map(Into::into),
                                    framedipaddress: s.framedipaddress.as_deref().map(Into::into),
                                    callingstationid: s.callingstationid.as_deref().map(Into::into),
                                    acctstarttime: s.acctstarttime,
                                    acctupdatetime: s.acctupdatetime,
                                    acctinputoctets: s.acctinputoctets,
                                    acctoutputoctets: s.acctoutputoctets,
                                    acctsessiontime: s.acctsessiontime,
                                    ipv6: Ipv6Columns::of(&Row {
                                        framedipv6address: s.framedipv6address.clone(),
                                        framedipv6prefix: s.framedipv6prefix.clone(),
                                        delegatedipv6prefix: s.delegatedipv6prefix.clone(),
                                        ..Row::default()
                                    }),
                                    row_version: None,
                                }
                            }),
                    );
                    for ask in &asks {
                        let (live, live_total) =
                            select_page(&index, &ask.filter, ask.sort, ask.page);
                        let live: Vec<Row> = live.iter().map(Row::from_session).collect();
                        let q = SessionQuery {
                            status: Status::Active,
                            filter: &ask.filter,
                            sort: ask.sort,
                        };
                        let (db_rows, db_total) =
                            store.list_sessions(&q, ask.page).await.expect("query");
                        prop_assert_eq!(live_total, db_total, "total for {:?}", ask);
                        prop_assert_eq!(&live, &db_rows, "page for {:?}", ask);
                        let by_ipv6 = ask.filter.search.as_ref().is_some_and(|t| {
                            seeds.iter().any(|s| {
                                s.acctstoptime.is_none()
                                    && t.matches_ipv6([
                                        s.framedipv6address.as_deref(),
                                        s.framedipv6prefix.as_deref(),
                                        s.delegatedipv6prefix.as_deref(),
                                    ])
                            })
                        });
                        if by_ipv6 {
                            ipv6_hits.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        // The IPv6 branch was exercised: some IPv6 terms found rows that have IPv6 columns.
        assert!(
            ipv6_hits.load(Ordering::Relaxed) > 0,
            "no IPv6 search found a row"
        );
        rt.block_on(store.close());
    }

    crate::both_stores_sync!(run);
}

/// The API alone over `db`, with its index not ready, as while the database was unreachable
/// at start-up: the index is empty and the flag false (no disconnect service: nothing may
/// reach a NAS anyway). Stopped by cancelling the token.
async fn api_with_index_not_ready(db: &TestDb) -> (SocketAddr, CancellationToken) {
    let config = api_config(db);
    let shutdown = CancellationToken::new();
    let state = ApiState::new(
        &config.api,
        ApiDeps {
            store: db.open_store().await,
            index: Arc::new(SessionIndex::new()),
            scope: Arc::new(ScopeCache::new()),
            index_ready: Arc::new(AtomicBool::new(false)),
            writer_health: None,
            queue_timeout: Duration::from_secs(5),
            disconnector: None,
            stats: None,
        },
        shutdown.clone(),
    )
    .expect("API state");
    let router = radacctd::api::router(state, &config.api, shutdown.clone()).expect("API router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = shutdown.clone();
    tokio::spawn(async move { radacctd::api::serve(listener, router, &config.api, token).await });
    (addr, shutdown)
}

async fn every_sessions_route_is_503_while_the_index_is_not_ready(backend: Backend) {
    // Rows the database holds (one open, one closed): answering from them while the index is
    // not loaded would be wrong (an open row is not "already closed").
    let Some((db, ids)) = seeded(backend, &[Seed::open("alice", 1), Seed::closed("bob", 2)]).await
    else {
        return;
    };
    let (addr, shutdown) = api_with_index_not_ready(&db).await;
    let http = reqwest::Client::new();
    let t = token(
        Role::Admin,
        None,
        &[SESSIONS_VIEW, "subscribers.disconnect"],
    );
    let mut requests = vec![
        ("GET", "/api/sessions".to_owned()),
        ("GET", "/api/sessions?status=closed".to_owned()),
        ("GET", "/api/sessions/count".to_owned()),
        ("GET", "/api/sessions/export?status=all".to_owned()),
    ];
    for id in &ids {
        requests.push(("GET", format!("/api/sessions/{id}")));
        requests.push(("POST", format!("/api/sessions/{id}/disconnect")));
    }
    for (method, path) in requests {
        let url = format!("http://{addr}{path}");
        let rq = match method {
            "GET" => http.get(url),
            _ => http.post(url),
        };
        let r = rq.bearer_auth(&t).send().await.expect("request");
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body: Value = r.json().await.expect("JSON body");
        assert_eq!(
            (status, body["message"].as_str()),
            (503, Some("index not ready")),
            "{method} {path}: {body}"
        );
        assert_eq!(retry_after.as_deref(), Some("5"), "{method} {path}");
    }
    // Permission checks still come first.
    let r = http
        .get(format!("http://{addr}/api/sessions/{}", ids[0]))
        .bearer_auth(token(Role::Admin, None, &["subscribers.disconnect"]))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 403);
    shutdown.cancel();
}

async fn export_ignores_page_and_limit_and_keeps_filters_and_order(backend: Backend) {
    let rows = [
        Seed::closed("alice", 1),
        Seed::closed("bob", 2),
        Seed::closed("alice", 3),
        Seed::closed("alice", 4),
    ];
    let Some((db, ids)) = seeded(backend, &rows).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let t = admin();
    let alice_by_start_desc = vec![ids[3].to_string(), ids[2].to_string(), ids[0].to_string()];
    // Any page/limit, even out of range, garbage or repeated, changes nothing.
    for paging in [
        "",
        "&limit=1000",
        "&limit=1",
        "&page=2&limit=1",
        "&page=0&limit=0",
        "&page=abc&limit=-5",
        "&limit=1&limit=2&page=1&page=9",
    ] {
        let path = format!(
            "/api/sessions/export?status=closed&search=alice&sort=acctstarttime&order=desc&columns=radacctid{paging}"
        );
        let r = app.get(&path, Some(&t)).await;
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert_eq!(r.headers()["x-total-count"], "3", "{path}");
        let body = r.text().await.expect("csv");
        let got: Vec<String> = body.lines().skip(1).map(str::to_owned).collect();
        assert_eq!(got, alice_by_start_desc, "{path}");
    }
    // The filters and order still go through the same validation as the list's.
    app.expect_error(
        "/api/sessions/export?limit=1000&order=up",
        Some(&t),
        400,
        "invalid order, must be asc/desc",
    )
    .await;
    app.expect_error(
        "/api/sessions/export?page=0&status=open",
        Some(&t),
        400,
        "invalid status, must be active/closed/all",
    )
    .await;
    app.stop().await;
}
