//! Checks the FreeRADIUS harness itself: a private FreeRADIUS with stock rlm_sql writes the
//! radacct row that docs/reference/freeradius.md §4 describes for a Start, Interim-Update, Stop;
//! and a private FreeRADIUS playing a NAS ACKs radclient's CoA-Request and Disconnect-Request and
//! records the attributes it received.
//!
//! Needs `freeradius`, `freeradius-postgresql`, `freeradius-utils` and a PostgreSQL reachable
//! at `RADACCTD_TEST_DATABASE_URL` (an admin URL allowed to CREATE DATABASE; default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Skipped when one is missing, unless
//! `CI=true`, where that is a failure.

use std::str::FromStr as _;
use std::time::Duration;

use crate::common::freeradius;
use crate::common::{in_ci, pg_admin_url};
use anyhow::Context as _;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// Skips the test (returns true) with a reason, or panics in CI.
fn skip(reason: &str) -> bool {
    if in_ci() {
        panic!("CI=true, so this test must run, but: {reason}");
    }
    eprintln!("SKIPPED freeradius_writes_rows_for_radclient_packets: {reason}");
    true
}

fn unique_suffix() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}

async fn connect(opts: &PgConnectOptions) -> anyhow::Result<PgConnection> {
    tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(opts))
        .await
        .context("timed out connecting to PostgreSQL")?
        .context("connecting to PostgreSQL")
}

/// A database created for one test and dropped (WITH (FORCE)) at the end.
struct HarnessDb {
    admin: PgConnectOptions,
    name: String,
    opts: PgConnectOptions,
}

impl HarnessDb {
    async fn create(admin: &PgConnectOptions, prefix: &str) -> anyhow::Result<HarnessDb> {
        let name = format!("{prefix}_{}", unique_suffix());
        let mut conn = connect(admin).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        conn.close().await.ok();
        Ok(HarnessDb {
            admin: admin.clone(),
            opts: admin.clone().database(&name),
            name,
        })
    }

    async fn drop_db(self) -> anyhow::Result<()> {
        let mut conn = connect(&self.admin).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .with_context(|| format!("DROP DATABASE {}", self.name))?;
        conn.close().await.ok();
        Ok(())
    }
}

#[tokio::test]
async fn freeradius_writes_rows_for_radclient_packets() {
    if let Some(reason) = freeradius::freeradius_unavailable_reason() {
        skip(&reason);
        return;
    }
    if !freeradius::radclient_available() {
        skip("radclient is not installed (Debian package freeradius-utils)");
        return;
    }
    let url = pg_admin_url();
    let admin = match PgConnectOptions::from_str(&url) {
        Ok(o) => o,
        Err(e) => panic!("RADACCTD_TEST_DATABASE_URL {url:?} is not a valid URL: {e}"),
    };
    let target = freeradius::PgTarget::from_url(&url).expect("parse admin URL");
    match connect(&admin).await {
        Ok(conn) => {
            conn.close().await.ok();
        }
        Err(e) => {
            skip(&format!("PostgreSQL at {url} is not reachable: {e:#}"));
            return;
        }
    }

    let db = HarnessDb::create(&admin, "fr_harness")
        .await
        .expect("create test database");
    let result = run_scenario(&db, &target.with_dbname(&db.name)).await;
    let dropped = db.drop_db().await;
    if let Err(e) = result {
        panic!("{e:?}");
    }
    dropped.expect("drop test database");
}

/// The radacct columns the test checks, plus the acctuniqueid FreeRADIUS should have computed.
#[derive(Debug, sqlx::FromRow)]
struct AcctRow {
    acctinputoctets: Option<i64>,
    acctterminatecause: Option<String>,
    acctuniqueid: String,
    expected_uniqueid: String,
    nasipaddress: String,
    acctsessiontime: Option<i64>,
    stopped: bool,
}

async fn run_scenario(db: &HarnessDb, target: &freeradius::PgTarget) -> anyhow::Result<()> {
    let schema_path = freeradius::freeradius_pg_schema_path();
    let schema = std::fs::read_to_string(&schema_path)
        .with_context(|| format!("reading {}", schema_path.display()))?;
    let mut conn = connect(&db.opts).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
        .execute(&mut conn)
        .await
        .context("loading FreeRADIUS schema.sql")?;

    let target = target.clone();
    let fr = tokio::task::spawn_blocking(move || freeradius::FreeRadius::start(&target))
        .await?
        .context("starting FreeRADIUS")?;

    let common = "User-Name = \"bob\"\n\
                  Acct-Session-Id = \"S1\"\n\
                  NAS-IP-Address = 192.0.2.10\n\
                  NAS-Identifier = \"bng-1\"\n\
                  NAS-Port-Id = \"eth0.100\"\n\
                  NAS-Port = 7\n\
                  NAS-Port-Type = Ethernet\n\
                  Service-Type = Framed-User\n\
                  Framed-Protocol = PPP\n\
                  Framed-IP-Address = 10.0.0.5\n\
                  Calling-Station-Id = \"00:11:22:33:44:55\"\n";
    let packets = format!(
        "{common}Acct-Status-Type = Start\n\
         \n\
         {common}Acct-Status-Type = Interim-Update\n\
         Acct-Session-Time = 60\n\
         Acct-Input-Gigawords = 2\n\
         Acct-Input-Octets = 5\n\
         Acct-Output-Octets = 1000\n\
         \n\
         {common}Acct-Status-Type = Stop\n\
         Acct-Session-Time = 120\n\
         Acct-Input-Gigawords = 2\n\
         Acct-Input-Octets = 5\n\
         Acct-Output-Octets = 2000\n\
         Acct-Terminate-Cause = User-Request\n"
    );
    let (addr, secret) = (fr.acct_addr, fr.secret.clone());
    let (ok, output) =
        tokio::task::spawn_blocking(move || freeradius::radclient(addr, &secret, &packets))
            .await??;
    // Shown only when the test fails or runs with --nocapture.
    eprintln!("--- radclient ---\n{output}");
    let responses = freeradius::radclient_responses(&output);
    anyhow::ensure!(
        ok && responses == 3,
        "radclient: success={ok}, {responses} Accounting-Responses (want 3)\n{output}\n{}",
        fr.diagnostics()
    );

    let rows: Vec<AcctRow> = sqlx::query_as(
        "SELECT acctinputoctets, acctterminatecause, acctuniqueid, \
                md5('bob,S1,192.0.2.10,bng-1,eth0.100,7') AS expected_uniqueid, \
                host(nasipaddress) AS nasipaddress, acctsessiontime, \
                acctstoptime IS NOT NULL AS stopped \
         FROM radacct WHERE acctsessionid = 'S1'",
    )
    .fetch_all(&mut conn)
    .await?;
    let diag = || format!("rows: {rows:#?}\n{}", fr.diagnostics());
    anyhow::ensure!(rows.len() == 1, "want one radacct row; {}", diag());
    let row = &rows[0];
    anyhow::ensure!(
        row.acctinputoctets == Some(8_589_934_597),
        "acctinputoctets; {}",
        diag()
    );
    anyhow::ensure!(
        row.acctterminatecause.as_deref() == Some("User-Request"),
        "acctterminatecause; {}",
        diag()
    );
    // acctuniqueid =
    // md5("User-Name,Acct-Session-Id,NAS-IP-Address,NAS-Identifier,NAS-Port-Id,NAS-Port")
    anyhow::ensure!(
        row.acctuniqueid == row.expected_uniqueid,
        "acctuniqueid; {}",
        diag()
    );
    anyhow::ensure!(
        row.acctuniqueid.len() == 32 && row.acctuniqueid.bytes().all(|b| b.is_ascii_hexdigit()),
        "acctuniqueid is not 32 hex digits; {}",
        diag()
    );
    anyhow::ensure!(row.nasipaddress == "192.0.2.10", "nasipaddress; {}", diag());
    anyhow::ensure!(
        row.acctsessiontime == Some(120),
        "acctsessiontime; {}",
        diag()
    );
    anyhow::ensure!(row.stopped, "acctstoptime is NULL; {}", diag());

    // A late Interim after the Stop changes no row: rlm_sql returns noop, which the site turns
    // into ok (as detail does in the stock site), so it is answered and the row is unchanged.
    let late = format!(
        "{common}Acct-Status-Type = Interim-Update\n\
         Acct-Session-Time = 180\n\
         Acct-Input-Octets = 1\n"
    );
    let (addr, secret) = (fr.acct_addr, fr.secret.clone());
    let (ok, output) =
        tokio::task::spawn_blocking(move || freeradius::radclient(addr, &secret, &late)).await??;
    eprintln!("--- radclient (late interim) ---\n{output}");
    anyhow::ensure!(
        ok && freeradius::radclient_responses(&output) == 1,
        "late Interim-Update was not answered\n{output}\n{}",
        fr.diagnostics()
    );
    let after: (i64, Option<i64>) = sqlx::query_as(
        "SELECT acctinputoctets, acctsessiontime FROM radacct WHERE acctsessionid = 'S1'",
    )
    .fetch_one(&mut conn)
    .await?;
    anyhow::ensure!(
        after == (8_589_934_597, Some(120)),
        "late Interim-Update changed the closed row: {after:?}"
    );

    eprintln!("{}", fr.diagnostics());
    conn.close().await.ok();
    drop(fr);
    Ok(())
}

#[test]
fn freeradius_nas_acks_radclient_coa_and_records_what_it_received() {
    use freeradius::{
        FreeRadiusNas, NasAnswer, RadclientOpts, radclient_count_received, radclient_with,
    };
    if !crate::common::require(
        freeradius::freeradius_nas_unavailable_reason().is_none(),
        "freeradius (Debian freeradius, freeradius-config)",
    ) || !crate::common::require(
        freeradius::radclient_available(),
        "radclient (Debian freeradius-utils)",
    ) {
        return;
    }
    let nas = FreeRadiusNas::start("nas-s3cret").expect("FreeRADIUS starts as a NAS");
    let opts = |command: &str| RadclientOpts {
        command: command.into(),
        retries: 1,
        timeout_secs: 1,
        ..RadclientOpts::default()
    };
    let coa = "User-Name = \"alice\"\nAcct-Session-Id = \"81a00007\"\n\
               Framed-IP-Address = 100.64.0.7\nNAS-IP-Address = 127.0.0.1\n\
               Mikrotik-Rate-Limit = \"2M/4M 4M/8M 1M/2M 16/16 8 1M/2M\"\n\
               Session-Timeout = 3600\nFilter-Id = \"blocked \\\"page\\\"\"\n\
               Mikrotik-Address-List = \"unpaid\"\nMessage-Authenticator = 0x00\n";
    let (ok, out) = radclient_with(nas.coa_addr, &nas.secret, coa, &opts("coa")).expect("runs");
    assert!(ok, "{out}\n{}", nas.diagnostics());
    assert_eq!(radclient_count_received(&out, "CoA-ACK"), 1, "{out}");

    let (ok, out) = radclient_with(
        nas.coa_addr,
        &nas.secret,
        "User-Name = \"bob\"\nAcct-Session-Id = \"81a00008\"\n",
        &opts("disconnect"),
    )
    .expect("runs");
    assert!(ok, "{out}\n{}", nas.diagnostics());
    assert_eq!(radclient_count_received(&out, "Disconnect-ACK"), 1, "{out}");

    // A request signed with another secret is dropped unanswered, and not recorded.
    let (ok, out) = radclient_with(nas.coa_addr, "wrong", coa, &opts("coa")).expect("runs");
    assert!(!ok, "{out}");
    assert_eq!(radclient_count_received(&out, "CoA-"), 0, "{out}");

    let got = nas.received();
    assert_eq!(got.len(), 2, "{}", nas.diagnostics());
    let c = &got[0];
    assert_eq!(c.packet_type(), Some("CoA-Request"));
    assert_eq!(c.get("User-Name"), Some("alice"));
    assert_eq!(c.get("Acct-Session-Id"), Some("81a00007"));
    assert_eq!(c.get("Framed-IP-Address"), Some("100.64.0.7"));
    assert_eq!(c.get("NAS-IP-Address"), Some("127.0.0.1"));
    assert_eq!(
        c.get("Mikrotik-Rate-Limit"),
        Some("2M/4M 4M/8M 1M/2M 16/16 8 1M/2M")
    );
    assert_eq!(c.get("Session-Timeout"), Some("3600"));
    assert_eq!(c.get("Filter-Id"), Some("blocked \"page\""));
    assert_eq!(c.get("Mikrotik-Address-List"), Some("unpaid"));
    assert!(c.get("Message-Authenticator").is_some());
    assert_eq!(got[1].packet_type(), Some("Disconnect-Request"));
    assert_eq!(got[1].get("User-Name"), Some("bob"));
    assert!(
        nas.log().contains("Shared secret is incorrect"),
        "{}",
        nas.diagnostics()
    );

    // Told to refuse, it answers a CoA-NAK with the Error-Cause, and still records the request.
    let refusing = FreeRadiusNas::start_answering("nas-s3cret", NasAnswer::Nak(401))
        .expect("FreeRADIUS starts as a refusing NAS");
    let (ok, out) =
        radclient_with(refusing.coa_addr, &refusing.secret, coa, &opts("coa")).expect("runs");
    assert!(!ok, "radclient expected a CoA-ACK:\n{out}");
    assert_eq!(radclient_count_received(&out, "CoA-NAK"), 1, "{out}");
    assert!(out.contains("Error-Cause = Unsupported-Attribute"), "{out}");
    assert_eq!(refusing.received().len(), 1, "{}", refusing.diagnostics());
}

#[test]
fn pg_target_parses_urls() {
    use freeradius::PgTarget;
    let t = PgTarget::from_url("postgres://radacctd_test:radacctd_test@127.0.0.1:5432/postgres")
        .unwrap();
    assert_eq!(
        t,
        PgTarget {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "radacctd_test".into(),
            password: Some("radacctd_test".into()),
            dbname: "postgres".into(),
        }
    );
    let t = PgTarget::from_url("postgres://postgres@127.0.0.1/postgres").unwrap();
    assert_eq!((t.port, t.password), (5432, None));

    let t = PgTarget::from_url(
        "postgres://radacctd_test:radacctd_test@localhost/postgres?host=/var/run/postgresql",
    )
    .unwrap();
    assert_eq!(t.host, "/var/run/postgresql");
    assert!(t.is_socket());
    assert_eq!(t.dbname, "postgres");

    let t =
        PgTarget::from_url("postgresql://u%40x:p%3Aw%2F@[::1]:5433/d%20b?sslmode=disable").unwrap();
    assert_eq!(t.user, "u@x");
    assert_eq!(t.password.as_deref(), Some("p:w/"));
    assert_eq!((t.host.as_str(), t.port), ("::1", 5433));
    assert_eq!(t.dbname, "d b");

    // to_url round-trips, sockets included.
    for url in [
        "postgres://a:b@127.0.0.1:5439/x",
        "postgres://a@localhost:5432/x?host=/var/run/postgresql",
        "postgres://a:%2F@[::1]:5432/x",
    ] {
        let t = PgTarget::from_url(url).unwrap();
        assert_eq!(PgTarget::from_url(&t.to_url()).unwrap(), t, "{url}");
    }
    assert!(PgTarget::from_url("mysql://x@y/z").is_err());
    assert!(PgTarget::from_url("postgres://x@y:notaport/z").is_err());
}
