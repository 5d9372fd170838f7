//! Sessions API test support: the real application with its HTTP API on port 0, tokens, and
//! rows seeded straight into the tables with SQL (open rows must be seeded before the
//! application starts: it loads them into the index at start).

use radacctd::api::auth::{
    Claims, Role, SESSIONS_VIEW, SESSIONS_VIEW_ALL, SigningKey, issue_token,
};
use radacctd::config::{ApiConfig, Config, Secret};
use radacctd::store::Store;
use serde_json::Value;

use crate::common::{TestApp, TestDb, test_config};

pub const JWT_SECRET: &str = "api-test-secret-0123456789abcdef-0123";

/// The test configuration with the API on an ephemeral port and a known token secret.
pub fn api_config(db: &TestDb) -> Config {
    let mut c = test_config(db);
    c.api.listen = "127.0.0.1:0".parse().expect("addr");
    c.api.jwt_secret = Secret::new(JWT_SECRET);
    // Not under test here (`operations` covers /metrics): one listener fewer.
    c.metrics.enabled = false;
    c
}

/// Requests to the application's API.
impl TestApp {
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.api_addr, path_and_query)
    }

    /// `GET` with an optional bearer token.
    pub async fn get(&self, path_and_query: &str, token: Option<&str>) -> reqwest::Response {
        let mut rq = self.http.get(self.url(path_and_query));
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        rq.send().await.expect("request")
    }

    /// `GET` and the JSON body (which every API answer has, errors included).
    pub async fn json(&self, path_and_query: &str, token: Option<&str>) -> (u16, Value) {
        let r = self.get(path_and_query, token).await;
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = r.text().await.expect("body");
        assert!(
            ct.starts_with("application/json"),
            "{path_and_query}: {status} {ct} {text}"
        );
        (status, serde_json::from_str(&text).expect("JSON body"))
    }

    /// Asserts an error answer: status and exact message.
    pub async fn expect_error(
        &self,
        path_and_query: &str,
        token: Option<&str>,
        status: u16,
        message: &str,
    ) {
        let (s, body) = self.json(path_and_query, token).await;
        assert_eq!(
            (s, body["success"].clone(), body["message"].as_str()),
            (status, Value::Bool(false), Some(message)),
            "{path_and_query}: {body}"
        );
    }

    /// The `radacctid`s of a list answer, in order, and `pagination.total`.
    pub async fn list_ids(&self, path_and_query: &str, token: &str) -> (Vec<i64>, u64) {
        let (s, body) = self.json(path_and_query, Some(token)).await;
        assert_eq!(s, 200, "{path_and_query}: {body}");
        let ids = body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|o| o["radacctid"].as_i64().expect("id"))
            .collect();
        (ids, body["pagination"]["total"].as_u64().expect("total"))
    }

    /// The usernames of a list answer, sorted.
    pub async fn list_users(&self, path_and_query: &str, token: &str) -> Vec<String> {
        let (s, body) = self.json(path_and_query, Some(token)).await;
        assert_eq!(s, 200, "{path_and_query}: {body}");
        let mut v: Vec<String> = body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|o| o["username"].as_str().unwrap_or_default().to_owned())
            .collect();
        v.sort();
        v
    }

    pub async fn count(&self, token: &str) -> i64 {
        let (s, body) = self.json("/api/sessions/count", Some(token)).await;
        assert_eq!(s, 200, "{body}");
        body["count"].as_i64().expect("count")
    }
}

/// A token signed with the test secret (subject `test`).
pub fn token(role: Role, reseller_id: Option<i64>, permissions: &[&str]) -> String {
    token_for("test", role, reseller_id, permissions)
}

/// A token signed with the test secret, for subject `sub`.
pub fn token_for(sub: &str, role: Role, reseller_id: Option<i64>, permissions: &[&str]) -> String {
    let cfg = ApiConfig {
        jwt_secret: Secret::new(JWT_SECRET),
        ..ApiConfig::default()
    };
    let claims = Claims {
        sub: Some(sub.into()),
        exp: radacctd::clock::now_secs() as u64 + 3600,
        role,
        reseller_id,
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
    };
    issue_token(&cfg, &claims, SigningKey::ConfiguredSecret).expect("token")
}

pub fn admin() -> String {
    token(Role::Admin, None, &[SESSIONS_VIEW])
}

pub fn reseller(id: i64) -> String {
    token(Role::Reseller, Some(id), &[SESSIONS_VIEW])
}

pub fn reseller_view_all(id: i64) -> String {
    token(
        Role::Reseller,
        Some(id),
        &[SESSIONS_VIEW, SESSIONS_VIEW_ALL],
    )
}

/// A radacct row to seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub username: Option<String>,
    pub acctsessionid: String,
    pub acctuniqueid: String,
    pub nasipaddress: String,
    pub nasportid: Option<String>,
    pub framedipaddress: Option<String>,
    pub callingstationid: Option<String>,
    pub acctstarttime: Option<i64>,
    pub acctstoptime: Option<i64>,
    pub acctupdatetime: Option<i64>,
    pub acctinputoctets: Option<i64>,
    pub acctoutputoctets: Option<i64>,
    pub acctsessiontime: Option<i64>,
    pub acctterminatecause: Option<String>,
    pub framedipv6address: Option<String>,
    pub framedipv6prefix: Option<String>,
    pub delegatedipv6prefix: Option<String>,
}

/// 2026-05-12T08:00:00Z.
pub const T0: i64 = 1_778_572_800;

impl Seed {
    /// An open session of `user` numbered `n` (distinct keys, addresses and MACs).
    pub fn open(user: &str, n: u32) -> Seed {
        Seed {
            username: Some(user.to_owned()),
            acctsessionid: format!("{:08x}", 0x8a3f_0000u32 + n),
            acctuniqueid: format!("key-{user}-{n}"),
            nasipaddress: "192.0.2.10".into(),
            nasportid: Some(format!("ether{}", 2 + n % 4)),
            framedipaddress: Some(format!("10.64.{}.{}", (n >> 8) & 0xff, n & 0xff)),
            callingstationid: Some(format!(
                "AA:BB:CC:DD:{:02X}:{:02X}",
                (n >> 8) & 0xff,
                n & 0xff
            )),
            acctstarttime: Some(T0 + i64::from(n) * 60),
            acctstoptime: None,
            acctupdatetime: Some(T0 + i64::from(n) * 60 + 300),
            acctinputoctets: Some(1000 * i64::from(n)),
            acctoutputoctets: Some(2000 * i64::from(n)),
            acctsessiontime: Some(300),
            acctterminatecause: None,
            framedipv6address: None,
            framedipv6prefix: None,
            delegatedipv6prefix: None,
        }
    }

    /// The same, closed an hour after its start.
    pub fn closed(user: &str, n: u32) -> Seed {
        let mut s = Seed::open(user, n);
        s.acctstoptime = s.acctstarttime.map(|t| t + 3600);
        s.acctupdatetime = s.acctstoptime;
        s.acctsessiontime = Some(3600);
        s.acctterminatecause = Some("User-Request".into());
        s
    }
}

const INSERT_PG: &str = "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, nasportid, \
     framedipaddress, callingstationid, acctstarttime, acctstoptime, acctupdatetime, acctinputoctets, \
     acctoutputoctets, acctsessiontime, acctterminatecause, framedipv6address, framedipv6prefix, \
     delegatedipv6prefix) VALUES ($1, $2, $3, $4::inet, $5, $6::inet, $7, \
     to_timestamp($8), to_timestamp($9), to_timestamp($10), $11, $12, $13, $14, $15::inet, $16::inet, \
     $17::inet) RETURNING radacctid";
const INSERT_SQLITE: &str = "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, nasportid, \
     framedipaddress, callingstationid, acctstarttime, acctstoptime, acctupdatetime, acctinputoctets, \
     acctoutputoctets, acctsessiontime, acctterminatecause, framedipv6address, framedipv6prefix, \
     delegatedipv6prefix) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, \
     datetime(?8, 'unixepoch'), datetime(?9, 'unixepoch'), datetime(?10, 'unixepoch'), ?11, ?12, ?13, ?14, \
     ?15, ?16, ?17) RETURNING radacctid";

macro_rules! bind_seed {
    ($q:expr, $s:expr) => {
        $q.bind($s.acctsessionid.clone())
            .bind($s.acctuniqueid.clone())
            .bind($s.username.clone())
            .bind($s.nasipaddress.clone())
            .bind($s.nasportid.clone())
            .bind($s.framedipaddress.clone())
            .bind($s.callingstationid.clone())
            .bind($s.acctstarttime)
            .bind($s.acctstoptime)
            .bind($s.acctupdatetime)
            .bind($s.acctinputoctets)
            .bind($s.acctoutputoctets)
            .bind($s.acctsessiontime)
            .bind($s.acctterminatecause.clone())
            .bind($s.framedipv6address.clone())
            .bind($s.framedipv6prefix.clone())
            .bind($s.delegatedipv6prefix.clone())
    };
}

/// Inserts the rows (in order) on `store`; returns their `radacctid`s.
pub async fn seed_on(store: &Store, rows: &[Seed]) -> Vec<i64> {
    let mut ids = Vec::with_capacity(rows.len());
    match store {
        Store::Postgres(s) => {
            let mut tx = s.pool().begin().await.expect("begin");
            for r in rows {
                let id: i64 = bind_seed!(sqlx::query_scalar(INSERT_PG), r)
                    .fetch_one(&mut *tx)
                    .await
                    .expect("insert");
                ids.push(id);
            }
            tx.commit().await.expect("commit");
        }
        Store::Sqlite(s) => {
            let mut tx = s.pool().begin().await.expect("begin");
            for r in rows {
                let id: i64 = bind_seed!(sqlx::query_scalar(INSERT_SQLITE), r)
                    .fetch_one(&mut *tx)
                    .await
                    .expect("insert");
                ids.push(id);
            }
            tx.commit().await.expect("commit");
        }
    }
    ids
}

/// Migrates `db` (so rows can be seeded before the application starts) and inserts the rows.
pub async fn seed(db: &TestDb, rows: &[Seed]) -> Vec<i64> {
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    let ids = seed_on(&store, rows).await;
    store.close().await;
    ids
}

/// Resellers `(id, parent)`, subscribers `(username, reseller)` and `nas` rows `(id, nasname)`.
pub async fn seed_tables(
    db: &TestDb,
    resellers: &[(i64, Option<i64>)],
    subscribers: &[(&str, i64)],
    nas: &[(i64, &str)],
) {
    let mut sql = String::new();
    for (id, parent) in resellers {
        let parent = parent.map_or("NULL".to_owned(), |p| p.to_string());
        sql.push_str(&format!(
            "INSERT INTO resellers (id, parent_id, name) VALUES ({id}, {parent}, 'r{id}');\n"
        ));
    }
    for (user, r) in subscribers {
        sql.push_str(&format!(
            "INSERT INTO subscribers (username, reseller_id) VALUES ('{}', {r});\n",
            user.replace('\'', "''")
        ));
    }
    for (id, name) in nas {
        sql.push_str(&format!(
            "INSERT INTO nas (id, nasname, shortname, secret) VALUES ({id}, '{name}', 'nas{id}', 'testing123');\n"
        ));
    }
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    store.close().await;
    if !sql.is_empty() {
        db.exec(&sql).await;
    }
}

/// `n` closed rows for `user` (fast: one statement), starting at `T0` a minute apart.
pub async fn seed_closed_bulk(db: &TestDb, user: &str, n: u64) {
    let store = db.open_store().await;
    store.migrate().await.expect("migrate");
    store.close().await;
    let sql = match db.backend {
        crate::common::Backend::Postgres => format!(
            "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, framedipaddress, \
             callingstationid, acctstarttime, acctstoptime, acctupdatetime, acctinputoctets, acctoutputoctets, \
             acctsessiontime, acctterminatecause) \
             SELECT to_hex(g), 'bulk-' || g, '{user}', '192.0.2.10'::inet, '10.65.0.1'::inet, 'AA:BB:CC:00:00:01', \
             to_timestamp({T0} + g * 60), to_timestamp({T0} + g * 60 + 3600), to_timestamp({T0} + g * 60 + 3600), \
             g * 1000, g * 2000, 3600, 'User-Request' FROM generate_series(1, {n}) AS g"
        ),
        crate::common::Backend::Sqlite => format!(
            "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {n}) \
             INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, framedipaddress, \
             callingstationid, acctstarttime, acctstoptime, acctupdatetime, acctinputoctets, acctoutputoctets, \
             acctsessiontime, acctterminatecause) \
             SELECT printf('%x', x), 'bulk-' || x, '{user}', '192.0.2.10', '10.65.0.1', 'AA:BB:CC:00:00:01', \
             datetime({T0} + x * 60, 'unixepoch'), datetime({T0} + x * 60 + 3600, 'unixepoch'), \
             datetime({T0} + x * 60 + 3600, 'unixepoch'), x * 1000, x * 2000, 3600, 'User-Request' FROM g"
        ),
    };
    db.exec(&sql).await;
}

/// Moves session `radacctid` to the archive: its row is backdated to 2000 (stopped a day after
/// it started) and the archiver, keeping a day, runs once. Its report.
pub async fn archive_session(
    db: &TestDb,
    app: &TestApp,
    radacctid: i64,
) -> radacctd::jobs::ArchiveReport {
    db.exec(&format!(
        "UPDATE radacct SET acctstarttime = '2000-01-01 00:00:00', \
         acctstoptime = '2000-01-02 00:00:00' WHERE radacctid = {radacctid}"
    ))
    .await;
    let mut jobs = api_config(db).jobs;
    jobs.archive_after_days = 1;
    radacctd::jobs::Archiver::new(app.store.clone(), jobs, app.stats.clone())
        .run_once()
        .await
        .expect("archive")
}
