//! Attribution: `GET /api/attribution`, its audit (`GET /api/attribution/audit`), the same
//! answer from `radacctd attribution`, and on PostgreSQL the index lookup behind it. Rows are
//! seeded with SQL, some moved to `radacct_archive`, on both stores.

use radacctd::api::auth::{Role, SESSIONS_ATTRIBUTION, SESSIONS_VIEW};
use radacctd::sessions::attribution::{AttributionQuery, Target, Window};
use radacctd::sessions::filter::Scope;
use serde_json::Value;

use radacctd::radius::dictionary as d;

use crate::common::api::{Seed, T0, api_config, seed, seed_tables, token};
use crate::common::{Attr, Backend, Nas, Sess, TestApp, TestDb, now};

both_stores!(
    boundaries_reused_addresses_archive_and_time_zones,
    ipv6_addresses_and_prefixes_of_different_lengths,
    resellers_see_their_own_and_every_query_is_audited,
    invalid_parameters_name_themselves,
    the_cli_prints_the_api_answer,
    ipv6_from_radius_reads_alike_in_the_index_and_the_database,
);

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// An admin allowed to ask.
fn asker() -> String {
    token(Role::Admin, None, &[SESSIONS_ATTRIBUTION])
}

/// A session of `user` on 192.0.2.10 holding `ip` from `start` to `stop` (open: `None`).
fn held(user: &str, n: u32, ip: &str, start: i64, stop: Option<i64>) -> Seed {
    let mut s = Seed::open(user, n);
    s.framedipaddress = Some(ip.to_owned());
    s.acctstarttime = Some(start);
    s.acctupdatetime = Some(stop.unwrap_or(start));
    s.acctstoptime = stop;
    s.acctsessiontime = stop.map(|t| t - start);
    s.acctterminatecause = stop.map(|_| "User-Request".to_owned());
    s
}

/// Moves these rows from radacct to radacct_archive, as the archiver does.
async fn archive(db: &TestDb, ids: &[i64]) {
    let cols = "radacctid, acctsessionid, acctuniqueid, username, nasipaddress, nasportid, \
                acctstarttime, acctupdatetime, acctstoptime, acctsessiontime, acctinputoctets, \
                acctoutputoctets, callingstationid, acctterminatecause, framedipaddress, \
                framedipv6address, framedipv6prefix, delegatedipv6prefix";
    let list = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    db.exec(&format!(
        "INSERT INTO radacct_archive ({cols}) SELECT {cols} FROM radacct WHERE radacctid IN ({list});\n\
         DELETE FROM radacct WHERE radacctid IN ({list});"
    ))
    .await;
}

/// `at` as RFC 3339 in UTC.
fn utc(t: i64) -> String {
    radacctd::api::sessions::rfc3339(t).expect("time")
}

impl TestApp {
    /// The usernames an attribution query answers, in its order, with where each row lives.
    async fn attributed(&self, query: &str, token: &str) -> Vec<(String, String)> {
        let (status, body) = self
            .json(&format!("/api/attribution?{query}"), Some(token))
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|s| {
                (
                    s["username"].as_str().unwrap_or_default().to_owned(),
                    s["source"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The users alone.
    async fn users_at(&self, ip: &str, at: &str, token: &str) -> Vec<String> {
        let q = format!("ip={}&at={}", enc(ip), enc(at));
        self.attributed(&q, token)
            .await
            .into_iter()
            .map(|(u, _)| u)
            .collect()
    }
}

/// Percent-encodes what a query value must not carry raw (`+`, `:`, `/`).
fn enc(v: &str) -> String {
    v.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
        .replace('/', "%2F")
}

async fn boundaries_reused_addresses_archive_and_time_zones(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let ip = "100.64.3.7";
    // One address, four subscribers in turn: alice, then bob from the second alice stopped,
    // then carol (still online); dave held it the day before (archived). erin holds another.
    let ids = seed(
        &db,
        &[
            held("alice", 1, ip, T0, Some(T0 + HOUR)),
            held("bob", 2, ip, T0 + HOUR, Some(T0 + 2 * HOUR)),
            held("carol", 3, ip, T0 + 2 * HOUR + 90, None),
            held("dave", 4, ip, T0 - DAY, Some(T0 - DAY + HOUR)),
            held("erin", 5, "100.64.3.8", T0, None),
        ],
    )
    .await;
    archive(&db, &ids[3..4]).await;
    seed_tables(&db, &[], &[], &[(7, "192.0.2.10")]).await;
    let app = TestApp::start(api_config(&db)).await;
    let t = asker();
    let at = |secs: i64| utc(T0 + secs);
    assert_eq!(app.users_at(ip, &at(1800), &t).await, ["alice"]);
    assert_eq!(app.users_at(ip, &at(0), &t).await, ["alice"], "at = start");
    assert_eq!(
        app.users_at(ip, &at(HOUR), &t).await,
        ["alice", "bob"],
        "at = alice's stop = bob's start: both held it in that second"
    );
    assert_eq!(
        app.users_at(ip, &at(2 * HOUR + 30), &t).await,
        Vec::<String>::new()
    );
    assert_eq!(
        app.users_at(ip, &at(30 * DAY), &t).await,
        ["carol"],
        "still open"
    );
    assert_eq!(
        app.attributed(&format!("ip={ip}&at={}", enc(&at(-DAY + 60))), &t)
            .await,
        [("dave".to_owned(), "archive".to_owned())]
    );
    assert_eq!(
        app.users_at(ip, &at(-2 * DAY), &t).await,
        Vec::<String>::new()
    );
    // Clock skew: 30 s after bob's stop is nobody's; with a 30 s window, bob's (and not yet
    // carol's, who came 90 s after it); with 60 s, both.
    let gap = format!("ip={ip}&at={}", enc(&at(2 * HOUR + 30)));
    assert!(app.attributed(&gap, &t).await.is_empty());
    assert_eq!(
        app.attributed(&format!("{gap}&window=30"), &t).await,
        [("bob".to_owned(), "live".to_owned())]
    );
    assert_eq!(
        app.attributed(&format!("{gap}&window=60"), &t).await.len(),
        2
    );
    // The same moment in three offsets, and a fraction of a second.
    for moment in [
        "2026-05-12T08:30:00Z",
        "2026-05-12T11:30:00+03:00",
        "2026-05-12T03:30:00-05:00",
        "2026-05-12T08:30:00.999Z",
    ] {
        assert_eq!(app.users_at(ip, moment, &t).await, ["alice"], "{moment}");
    }
    // IPv4-mapped IPv6, and an IPv4 block.
    assert_eq!(
        app.users_at("::ffff:100.64.3.7", &at(1800), &t).await,
        ["alice"]
    );
    assert_eq!(
        app.users_at("100.64.3.0/24", &at(1800), &t).await,
        ["alice", "erin"]
    );
    // The answer: the session object, the NAS's name, where the row lives, what matched.
    let (_, body) = app
        .json(
            &format!("/api/attribution?ip={ip}&at={}", enc(&at(1800))),
            Some(&t),
        )
        .await;
    let s = &body["data"][0];
    assert_eq!(s["radacctid"], ids[0]);
    assert_eq!(s["nas_id"], 7);
    assert_eq!(s["nas_name"], "nas7");
    assert_eq!(s["source"], "live");
    assert_eq!(s["matched"], "framedipaddress");
    assert_eq!(s["framedipaddress"], ip);
    assert_eq!(s["acctstarttime"], "2026-05-12T08:00:00Z");
    assert_eq!(s["acctstoptime"], "2026-05-12T09:00:00Z");
    assert_eq!(body["query"]["ip"], ip);
    assert_eq!(body["query"]["at"], "2026-05-12T08:30:00Z");
    assert_eq!(body["truncated"], false);
    let (_, two) = app
        .json(
            &format!("/api/attribution?ip={ip}&at={}&limit=1", enc(&at(HOUR))),
            Some(&t),
        )
        .await;
    assert_eq!(two["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(two["truncated"], true);
    app.stop().await;
}

async fn ipv6_addresses_and_prefixes_of_different_lengths(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let mut erin = held("erin", 1, "100.64.9.1", T0, None);
    erin.framedipv6address = Some("2001:db8:1:1::2".into());
    erin.framedipv6prefix = Some("2001:db8:1:1::/64".into());
    erin.delegatedipv6prefix = Some("2001:db8:1:100::/56".into());
    let mut frank = held("frank", 2, "100.64.9.2", T0 - DAY, Some(T0 - DAY + HOUR));
    frank.delegatedipv6prefix = Some("2001:db8:2::/48".into());
    let mut gina = held("gina", 3, "100.64.9.3", T0, Some(T0 + HOUR));
    gina.delegatedipv6prefix = Some("2001:db8:1:200::/56".into());
    let ids = seed(&db, &[erin, frank, gina]).await;
    archive(&db, &ids[1..2]).await;
    let app = TestApp::start(api_config(&db)).await;
    let t = asker();
    let now = utc(T0 + 1800);
    let matched = |ip: &'static str, at: String| {
        let app = &app;
        let t = t.clone();
        async move {
            let (status, body) = app
                .json(
                    &format!("/api/attribution?ip={}&at={}", enc(ip), enc(&at)),
                    Some(&t),
                )
                .await;
            assert_eq!(status, 200, "{ip}: {body}");
            body["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|s| {
                    format!(
                        "{} {} {}",
                        s["username"].as_str().unwrap_or_default(),
                        s["matched"].as_str().unwrap_or_default(),
                        s["source"].as_str().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        matched("2001:db8:1:1::2", now.clone()).await,
        ["erin framedipv6address live"]
    );
    assert_eq!(
        matched("2001:DB8:1:1:0:0:0:2", now.clone()).await,
        ["erin framedipv6address live"]
    );
    assert_eq!(
        matched("2001:db8:1:1::99", now.clone()).await,
        ["erin framedipv6prefix live"]
    );
    assert_eq!(
        matched("2001:db8:1:1ff:abcd::1", now.clone()).await,
        ["erin delegatedipv6prefix live"]
    );
    // Blocks: /48 holds erin's and gina's prefixes; a /60 inside gina's /56; a /56 beside both.
    assert_eq!(
        matched("2001:db8:1::/48", now.clone()).await,
        [
            "erin framedipv6address live",
            "gina delegatedipv6prefix live"
        ]
    );
    assert_eq!(
        matched("2001:db8:1:210::/60", now.clone()).await,
        ["gina delegatedipv6prefix live"]
    );
    assert!(matched("2001:db8:1:300::/56", now.clone()).await.is_empty());
    assert!(matched("2001:db8:3::1", now.clone()).await.is_empty());
    // The archive, at its time only.
    assert_eq!(
        matched("2001:db8:2:5::1", utc(T0 - DAY + 60)).await,
        ["frank delegatedipv6prefix archive"]
    );
    assert!(matched("2001:db8:2:5::1", now.clone()).await.is_empty());
    // An IPv6 block is compared with the IPv6 columns only, an IPv4 one with the IPv4 address.
    assert_eq!(
        matched("::/0", utc(T0 - DAY + 60)).await,
        ["frank delegatedipv6prefix archive"]
    );
    assert_eq!(
        matched("0.0.0.0/0", utc(T0 - DAY + 60)).await,
        ["frank framedipaddress archive"]
    );
    app.stop().await;
}

async fn resellers_see_their_own_and_every_query_is_audited(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let ip = "100.64.3.7";
    seed(
        &db,
        &[
            held("alice", 1, ip, T0, Some(T0 + HOUR)),
            held("bob", 2, ip, T0 + HOUR, Some(T0 + 2 * HOUR)),
        ],
    )
    .await;
    seed_tables(
        &db,
        &[(1, None), (2, None), (3, Some(1))],
        &[("alice", 3), ("bob", 2)],
        &[],
    )
    .await;
    let app = TestApp::start(api_config(&db)).await;
    let at = enc(&utc(T0 + HOUR));
    let q = format!("/api/attribution?ip={ip}&at={at}");
    let r1 = token(Role::Reseller, Some(1), &[SESSIONS_ATTRIBUTION]);
    let r2 = token(Role::Reseller, Some(2), &[SESSIONS_ATTRIBUTION]);
    assert_eq!(app.users_at(ip, &utc(T0 + HOUR), &r1).await, ["alice"]);
    assert_eq!(app.users_at(ip, &utc(T0 + HOUR), &r2).await, ["bob"]);
    assert_eq!(
        app.users_at(ip, &utc(T0 + 1800), &r2).await,
        Vec::<String>::new()
    );
    assert_eq!(
        app.users_at(ip, &utc(T0 + HOUR), &asker()).await,
        ["alice", "bob"]
    );
    // The permission is needed by every role; sessions.view does not grant it.
    for denied in [
        token(Role::Admin, None, &[SESSIONS_VIEW]),
        token(Role::Reseller, Some(1), &[SESSIONS_VIEW]),
    ] {
        app.expect_error(&q, Some(&denied), 403, "sessions.attribution denied")
            .await;
    }
    app.expect_error(&q, None, 401, "missing token").await;

    // Four answered queries, newest first; refused ones are not queries.
    let audit = "/api/attribution/audit";
    app.expect_error(audit, Some(&r1), 403, "attribution audit is for admins")
        .await;
    app.expect_error(
        audit,
        Some(&token(Role::Admin, None, &[SESSIONS_VIEW])),
        403,
        "sessions.attribution denied",
    )
    .await;
    let (status, body) = app.json(audit, Some(&asker())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pagination"]["total"], 4);
    let rows = body["data"].as_array().expect("data");
    let summary: Vec<(Value, Value, Value, Value)> = rows
        .iter()
        .map(|r| {
            (
                r["role"].clone(),
                r["reseller_id"].clone(),
                r["results"].clone(),
                r["at"].clone(),
            )
        })
        .collect();
    let (t_hour, t_half) = (utc(T0 + HOUR), utc(T0 + 1800));
    assert_eq!(
        summary,
        [
            ("admin".into(), Value::Null, 2.into(), t_hour.clone().into()),
            ("reseller".into(), 2.into(), 0.into(), t_half.into()),
            ("reseller".into(), 2.into(), 1.into(), t_hour.clone().into()),
            ("reseller".into(), 1.into(), 1.into(), t_hour.into()),
        ]
    );
    let newest = &rows[0];
    assert_eq!(newest["actor"], "test");
    assert_eq!(newest["via"], "api");
    assert_eq!(newest["ip"], ip);
    assert_eq!(newest["window"], 0);
    assert_eq!(newest["truncated"], false);
    assert_eq!(newest["radacctids"].as_array().map(Vec::len), Some(2));
    assert!(
        newest["requested_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    // Paged like the sessions list.
    let (_, page) = app
        .json(&format!("{audit}?limit=1&page=4"), Some(&asker()))
        .await;
    assert_eq!(page["data"][0]["reseller_id"], 1);
    assert_eq!(page["pagination"]["total"], 4);
    app.expect_error(
        &format!("{audit}?limit=501"),
        Some(&asker()),
        400,
        "invalid limit, must be between 1 and 500",
    )
    .await;
    app.stop().await;
}

async fn invalid_parameters_name_themselves(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let t = asker();
    for (query, message) in [
        (
            "at=2026-05-12T08:00:00Z",
            "missing ip, must be an IPv4 or IPv6 address, or a block addr/len",
        ),
        (
            "ip=100.64.3.7/33&at=2026-05-12T08:00:00Z",
            "invalid ip, must be an IPv4 or IPv6 address, or a block addr/len",
        ),
        (
            "ip=100.64.3.7&at=2026-05-12",
            "invalid at, must be an RFC 3339 date-time with an offset (2026-03-02T14:03:11Z, 2026-03-02T17:03:11+03:00)",
        ),
        (
            "ip=100.64.3.7&at=2026-05-12T08:00:00Z&window=90000",
            "invalid window, must be an integer from 0 to 86400 (seconds)",
        ),
    ] {
        app.expect_error(&format!("/api/attribution?{query}"), Some(&t), 400, message)
            .await;
    }
    let (_, audit) = app.json("/api/attribution/audit", Some(&t)).await;
    assert_eq!(
        audit["pagination"]["total"], 0,
        "refused requests are not queries"
    );
    app.stop().await;
}

async fn the_cli_prints_the_api_answer(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let mut s = held("alice", 1, "100.64.3.7", T0, None);
    s.delegatedipv6prefix = Some("2001:db8:7::/48".into());
    seed(&db, &[s]).await;
    seed_tables(&db, &[], &[], &[(3, "192.0.2.10")]).await;
    let app = TestApp::start(api_config(&db)).await;
    for (ip, at) in [
        ("100.64.3.7", "2026-05-12T11:00:00+03:00"),
        ("2001:db8:7:1::1", "2026-05-12T08:00:00Z"),
    ] {
        let (_, api) = app
            .json(
                &format!("/api/attribution?ip={}&at={}&window=5", enc(ip), enc(at)),
                Some(&asker()),
            )
            .await;
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_radacctd"))
            .args(["attribution", "--ip", ip, "--at", at, "--window", "5"])
            .env("RADACCTD__DATABASE__URL", &db.url)
            .output()
            .await
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        assert_eq!(cli, api, "{ip}");
        assert_eq!(cli["data"].as_array().map(Vec::len), Some(1), "{ip}");
    }
    let (_, audit) = app.json("/api/attribution/audit", Some(&asker())).await;
    assert_eq!(audit["pagination"]["total"], 4);
    let newest = &audit["data"][0];
    assert_eq!(
        (&newest["via"], &newest["role"]),
        (&"cli".into(), &"cli".into())
    );
    assert!(
        newest["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("cli:"))
    );
    app.stop().await;
}

/// IPv6 attributes received over RADIUS are stored in PostgreSQL's `inet` text, so that a
/// `search` answered by the live index (open sessions) and one answered by the database
/// (closed sessions) agree, on both stores, whatever form the term is written in; an
/// IPv4-compatible address (`::a00:1`, which PostgreSQL writes `::10.0.0.1`) included.
async fn ipv6_from_radius_reads_alike_in_the_index_and_the_database(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let app = TestApp::start(api_config(&db)).await;
    let mut nas = Nas::new(app.radius_addr).await;
    let s = Sess::new(1);
    let t0 = now() - 60;
    let v6 = |a: &str| {
        a.parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .octets()
            .to_vec()
    };
    let mut delegated = vec![0, 56];
    delegated.extend(&v6("2001:db8:77::")[..7]);
    let mut start = s.start(t0);
    start.push(Attr::Raw(d::FRAMED_IPV6_ADDRESS, v6("::a00:1")));
    start.push(Attr::Raw(d::DELEGATED_IPV6_PREFIX, delegated));
    assert!(nas.send(&start).await.is_some());
    let admin = token(Role::Admin, None, &[SESSIONS_VIEW, SESSIONS_ATTRIBUTION]);
    let terms = [
        "::a00:1",
        "::10.0.0.1",
        "0:0:0:0:0:0:A00:1",
        "::10.0",
        "2001:DB8:77::/56",
        "2001:0db8:0077:0000::/56",
        "2001:db8:77:",
    ];
    let found = |status: &'static str| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let mut users = Vec::new();
            for term in terms {
                let path = format!("/api/sessions?status={status}&search={}", enc(term));
                users.push((term, app.list_users(&path, &admin).await));
            }
            users
        }
    };
    let every = |users: Vec<String>| terms.map(|t| (t, users.clone())).to_vec();
    assert_eq!(found("active").await, every(vec![s.user.clone()]), "index");
    assert_eq!(
        app.attributed(
            &format!("ip={}&at={}", enc("::a00:1"), enc(&utc(i64::from(t0)))),
            &admin
        )
        .await,
        [(s.user.clone(), "live".to_owned())]
    );
    assert!(nas.send(&s.stop(t0 + 30, 30, 1, 2, 1)).await.is_some());
    assert_eq!(found("active").await, every(Vec::new()));
    assert_eq!(
        found("closed").await,
        every(vec![s.user.clone()]),
        "database"
    );
    let (_, body) = app
        .json(
            &format!(
                "/api/attribution?ip={}&at={}",
                enc("::10.0.0.1"),
                enc(&utc(i64::from(t0) + 30))
            ),
            Some(&admin),
        )
        .await;
    assert_eq!(body["data"][0]["framedipv6address"], "::10.0.0.1", "{body}");
    assert_eq!(body["data"][0]["delegatedipv6prefix"], "2001:db8:77::/56");
    assert_eq!(body["data"][0]["matched"], "framedipv6address");
    assert_eq!(body["query"]["ip"], "::10.0.0.1");
    app.stop().await;
}

/// On PostgreSQL the lookup reads the attribution GiST indexes of both tables, for IPv4 and
/// IPv6 alike (EnsureIndexes built them; 20,000 sessions make a scan the costlier plan), on a
/// database FreeRADIUS created (its own schema.sql) that radacctd then migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_answers_from_the_gist_indexes() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let schema = crate::common::freeradius::freeradius_pg_schema_path();
    if !crate::common::require(
        schema.exists(),
        "FreeRADIUS's schema.sql (freeradius-config)",
    ) {
        return;
    }
    db.exec(&std::fs::read_to_string(schema).expect("schema"))
        .await;
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    for table in ["radacct", "radacct_archive"] {
        db.exec(&format!(
            "INSERT INTO {table} (radacctid, acctsessionid, acctuniqueid, username, nasipaddress, \
             framedipaddress, delegatedipv6prefix, acctstarttime, acctstoptime) \
             SELECT g, to_hex(g), '{table}-' || g, 'user' || (g % 5000), '192.0.2.10', \
             ('100.64.0.0'::inet + (g % 4096)), \
             ('2001:db8:' || to_hex(g % 5000) || '::/56')::inet, \
             to_timestamp({T0} + (g % 100000) * 30), to_timestamp({T0} + (g % 100000) * 30 + 3600) \
             FROM generate_series(CASE WHEN '{table}' = 'radacct' THEN 1 ELSE 100001 END, \
             CASE WHEN '{table}' = 'radacct' THEN 20000 ELSE 120000 END) AS g;\n\
             ANALYZE {table};"
        ))
        .await;
    }
    store.ensure_indexes().await.expect("indexes");
    db.exec("ANALYZE radacct; ANALYZE radacct_archive;").await;
    // Each held at that moment (rows 13212 to 13335 and 113212 to 113335 were open then):
    // 100.64.4.7 by row 13319, 2001:db8:ce4::/56 by rows 13300 and 113300.
    for ip in ["100.64.4.7", "2001:db8:ce4:1::1", "2001:db8:c00::/40"] {
        let q = AttributionQuery {
            target: Target::parse(ip).expect("ip"),
            window: Window::around(T0 + 400_000, 60),
            scope: Scope::All,
            limit: 100,
        };
        let plan = store
            .explain_attribution(&q)
            .await
            .expect("explain")
            .join("\n");
        let column = if ip.contains(':') {
            "delegatedipv6prefix"
        } else {
            "framedipaddress"
        };
        for table in ["radacct", "radacct_archive"] {
            let index = format!("{table}_{column}_gist");
            assert!(plan.contains(&index), "{ip}: {index} not used:\n{plan}");
        }
        assert!(!plan.contains("Seq Scan"), "{ip}:\n{plan}");
        let (found, _) = store.attribute(&q).await.expect("attribute");
        assert!(
            !found.is_empty(),
            "{ip}: the sample has sessions at that moment"
        );
    }
    store.close().await;
}

/// radacctd writes an IPv6 address as PostgreSQL's `host()` does (`net::ip_text`), for
/// addresses dense in the zero runs and IPv4-like tails where the two could part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_text_is_postgresql_text() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let store = db.open_store().await;
    let radacctd::store::Store::Postgres(pg) = &store else {
        panic!("a PostgreSQL store");
    };
    const WORDS: [u16; 6] = [0, 0, 0, 1, 0xa00, 0xffff];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let addrs: Vec<std::net::Ipv6Addr> = (0..5_000)
        .map(|_| {
            let mut words = [0u16; 8];
            for w in &mut words {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                *w = WORDS[(seed >> 33) as usize % WORDS.len()];
            }
            words.into()
        })
        .collect();
    let texts: Vec<String> = addrs.iter().map(|a| format!("{a:?}")).collect();
    let postgres: Vec<String> = sqlx::query_scalar(
        "SELECT host(a::inet) FROM unnest($1::text[]) WITH ORDINALITY AS t(a, n) ORDER BY n",
    )
    .bind(&texts)
    .fetch_all(pg.pool())
    .await
    .expect("host()");
    assert_eq!(postgres.len(), addrs.len());
    let mut compatible = 0;
    for (a, pg_text) in addrs.iter().zip(&postgres) {
        assert_eq!(&radacctd::net::ipv6_text(*a), pg_text, "{a:?}");
        compatible += usize::from(pg_text.starts_with("::") && pg_text.contains('.'));
    }
    assert!(compatible > 0, "the sample holds ::a.b.c.d forms");
    store.close().await;
}

/// Property: for any sessions, live or archived, and any address or block, moment, window,
/// scope and limit, each store answers what the pure rules (`Window::holds`,
/// `matched_column`, by start time then `radacctid`) select from the seeded rows: so SQLite and
/// PostgreSQL answer the same rows in the same order, with the same `truncated`.
mod attribution_follows_the_rules {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use proptest::prelude::*;
    use radacctd::sessions::Row;
    use radacctd::sessions::attribution::{
        AttributionQuery, Location, Target, Window, matched_column,
    };
    use radacctd::sessions::filter::Scope;

    use super::{archive, held};
    use crate::common::api::{Seed, T0, seed_on, seed_tables};
    use crate::common::{self, Backend, TestDb};

    const USERS: [&str; 3] = ["alice", "bob", "carol"];
    const OWNERS: [(&str, i64); 2] = [("alice", 1), ("bob", 2)];
    const V4: [&str; 3] = ["100.64.3.7", "100.64.3.8", "100.64.4.1"];
    /// In PostgreSQL's `inet` text, as radacctd writes them.
    const V6_ADDRESSES: [&str; 3] = ["2001:db8:1:1::2", "::10.0.0.1", "::ffff:100.64.3.7"];
    const V6_PREFIXES: [&str; 4] = [
        "2001:db8:1:1::/64",
        "2001:db8:1::/48",
        "2001:db8:1:100::/56",
        "2001:db8:2::/48",
    ];
    const TARGETS: [&str; 14] = [
        "100.64.3.7",
        "100.64.3.0/24",
        "::ffff:100.64.3.7",
        "::FFFF:100.64.3.0/120",
        "2001:db8:1:1::2",
        "2001:DB8:1:1:0:0:0:99",
        "2001:db8:1::/48",
        "2001:db8:1:1ab::/60",
        "2001:db8::/32",
        "::10.0.0.1",
        "::a00:1",
        "0.0.0.0/0",
        "::/0",
        "2001:db8:3::1",
    ];

    #[derive(Debug, Clone)]
    struct Held {
        user: usize,
        v4: Option<usize>,
        v6: (Option<usize>, Option<usize>, Option<usize>),
        /// Start and length in steps of 10 minutes; `None`: still open.
        start: i64,
        length: Option<i64>,
        archived: bool,
    }

    fn gen_held() -> impl Strategy<Value = Held> {
        (
            (0..USERS.len(), proptest::option::of(0..V4.len())),
            (
                proptest::option::of(0..V6_ADDRESSES.len()),
                proptest::option::of(0..V6_PREFIXES.len()),
                proptest::option::of(0..V6_PREFIXES.len()),
            ),
            (
                0i64..6,
                proptest::option::weighted(0.7, 0i64..4),
                any::<bool>(),
            ),
        )
            .prop_map(|((user, v4), v6, (start, length, archived))| Held {
                user,
                v4,
                v6,
                start,
                length,
                archived,
            })
    }

    fn gen_query() -> impl Strategy<Value = AttributionQuery> {
        (
            0..TARGETS.len(),
            // Moments on the session edges and between them (steps of 5 minutes).
            (
                -1i64..14,
                prop_oneof![Just(0i64), Just(60), Just(300), Just(900)],
            ),
            prop_oneof![
                Just(Scope::All),
                Just(Scope::resellers(vec![1])),
                Just(Scope::resellers(vec![2])),
            ],
            prop_oneof![1usize..4, Just(100)],
        )
            .prop_map(|(t, (at, skew), scope, limit)| AttributionQuery {
                target: Target::parse(TARGETS[t]).expect("target"),
                window: Window::around(T0 + at * 300, skew),
                scope,
                limit,
            })
    }

    fn seed_of(i: usize, h: &Held) -> Seed {
        let start = T0 + h.start * 600;
        let mut s = held(
            USERS[h.user],
            i as u32,
            "",
            start,
            h.length.map(|l| start + l * 600),
        );
        s.framedipaddress = h.v4.map(|i| V4[i].to_owned());
        s.framedipv6address = h.v6.0.map(|i| V6_ADDRESSES[i].to_owned());
        s.framedipv6prefix = h.v6.1.map(|i| V6_PREFIXES[i].to_owned());
        s.delegatedipv6prefix = h.v6.2.map(|i| V6_PREFIXES[i].to_owned());
        s
    }

    /// What the rules select: `(radacctid, location, matched)` by start then id, and whether
    /// more than `limit` matched.
    fn expected(
        q: &AttributionQuery,
        rows: &[(i64, &Held, &Seed)],
        owners: &HashMap<&str, i64>,
    ) -> (Vec<(i64, Location, &'static str)>, bool) {
        let mut found: Vec<(i64, i64, Location, &'static str)> = rows
            .iter()
            .filter(|(_, _, s)| match &q.scope {
                Scope::All => true,
                Scope::Resellers(ids) => s
                    .username
                    .as_deref()
                    .and_then(|u| owners.get(u))
                    .is_some_and(|r| ids.contains(r)),
            })
            .filter(|(_, _, s)| q.window.holds(s.acctstarttime, s.acctstoptime))
            .filter_map(|(id, h, s)| {
                let row = Row {
                    framedipaddress: s.framedipaddress.clone(),
                    framedipv6address: s.framedipv6address.clone(),
                    framedipv6prefix: s.framedipv6prefix.clone(),
                    delegatedipv6prefix: s.delegatedipv6prefix.clone(),
                    ..Row::default()
                };
                let location = if h.archived {
                    Location::Archive
                } else {
                    Location::Live
                };
                let matched = matched_column(&q.target, &row)?;
                Some((s.acctstarttime.unwrap_or_default(), *id, location, matched))
            })
            .collect();
        found.sort_by_key(|(start, id, _, _)| (*start, *id));
        let truncated = found.len() > q.limit;
        found.truncate(q.limit);
        (
            found.into_iter().map(|(_, id, l, m)| (id, l, m)).collect(),
            truncated,
        )
    }

    fn run(backend: Backend) {
        let rt = common::runtime();
        let Some(db) = rt.block_on(TestDb::new(backend)) else {
            return;
        };
        rt.block_on(seed_tables(&db, &[(1, None), (2, None)], &OWNERS, &[]));
        let store = rt.block_on(db.open_store());
        let owners: HashMap<&str, i64> = OWNERS.into_iter().collect();
        let mut runner = common::property_runner(40);
        let strategy = (
            proptest::collection::vec(gen_held(), 0..16),
            proptest::collection::vec(gen_query(), 1..8),
        );
        // Sessions found: live IPv4, archived IPv4, live IPv6, archived IPv6.
        let seen: [AtomicUsize; 4] = Default::default();
        runner
            .run(&strategy, |(helds, queries)| {
                rt.block_on(async {
                    db.exec("DELETE FROM radacct; DELETE FROM radacct_archive;")
                        .await;
                    let seeds: Vec<Seed> = helds
                        .iter()
                        .enumerate()
                        .map(|(i, h)| seed_of(i, h))
                        .collect();
                    let ids = seed_on(&store, &seeds).await;
                    let archived: Vec<i64> = ids
                        .iter()
                        .zip(&helds)
                        .filter(|(_, h)| h.archived)
                        .map(|(id, _)| *id)
                        .collect();
                    if !archived.is_empty() {
                        archive(&db, &archived).await;
                    }
                    let rows: Vec<(i64, &Held, &Seed)> = ids
                        .iter()
                        .zip(&helds)
                        .zip(&seeds)
                        .map(|((id, h), s)| (*id, h, s))
                        .collect();
                    for q in &queries {
                        let (found, truncated) = store.attribute(q).await.expect("attribute");
                        let got: Vec<(i64, Location, &'static str)> = found
                            .iter()
                            .map(|a| (a.row.radacctid.unwrap_or_default(), a.location, a.matched))
                            .collect();
                        let (want, want_truncated) = expected(q, &rows, &owners);
                        prop_assert_eq!(&got, &want, "{:?}", q);
                        prop_assert_eq!(truncated, want_truncated, "truncated for {:?}", q);
                        for (_, location, matched) in &got {
                            let kind = usize::from(*location == Location::Archive)
                                + 2 * usize::from(*matched != "framedipaddress");
                            seen[kind].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(())
                })
            })
            .unwrap_or_else(|e| panic!("{backend:?}: {e}"));
        // The property was not vacuous: each kind of answer came up.
        for (kind, n) in seen.iter().enumerate() {
            assert!(n.load(Ordering::Relaxed) > 0, "no answer of kind {kind}");
        }
        rt.block_on(store.close());
    }

    crate::both_stores_sync!(run);
}
