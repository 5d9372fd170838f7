//! EnsureIndexes on PostgreSQL (docs/ARCHITECTURE.md#jobs): the indexes radacctd's queries
//! rely on, built `CONCURRENTLY` under [`ENSURE_INDEXES_LOCK`], and the ones earlier versions
//! built that are now replaced, dropped once their replacement is there.

use sqlx::PgConnection;

use super::PgStore;
use super::coordination::ENSURE_INDEXES_LOCK;
use crate::store::Result;
use crate::store::jobs::{Engine, INDEXES, RETIRED_INDEXES};

impl PgStore {
    /// Creates the missing [`INDEXES`] `CONCURRENTLY` (a live FreeRADIUS database keeps
    /// writing), rebuilding any left INVALID by an interrupted build, then drops the
    /// [`RETIRED_INDEXES`] they replace; returns the names of those it created. Runs
    /// holding [`ENSURE_INDEXES_LOCK`]: an index another node is building is INVALID until it is
    /// done, and must not be taken for the remains of an interrupted build.
    pub(in crate::store) async fn ensure_indexes(&self) -> Result<Vec<String>> {
        let mut lock = self
            .wait_for_lock(
                ENSURE_INDEXES_LOCK,
                "radacctd ensure-indexes",
                "EnsureIndexes",
            )
            .await?;
        let result = async {
            let created = Self::build_indexes(&mut lock.conn).await?;
            retire_indexes(&mut lock.conn).await?;
            Ok(created)
        }
        .await;
        lock.close().await;
        result
    }

    /// The work of [`Self::ensure_indexes`], on the connection holding its lock.
    async fn build_indexes(conn: &mut PgConnection) -> Result<Vec<String>> {
        let mut created = Vec::new();
        for ix in INDEXES.iter().filter(|ix| ix.on_engine(Engine::Postgres)) {
            // A FreeRADIUS database radacctd has not migrated has no radacct_archive yet; its
            // indexes come with the EnsureIndexes after the migration.
            if !relation_exists(conn, ix.table()).await? {
                tracing::debug!(index = ix.name, table = ix.table(), "no such table yet");
                continue;
            }
            let valid: Option<bool> = sqlx::query_scalar(
                "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
            )
            .bind(ix.name)
            .fetch_optional(&mut *conn)
            .await?;
            match valid {
                Some(true) => continue,
                Some(false) => {
                    tracing::warn!(index = ix.name, "index is INVALID; rebuilding it");
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP INDEX CONCURRENTLY IF EXISTS {}",
                        ix.name
                    )))
                    .execute(&mut *conn)
                    .await?;
                }
                None => {}
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {}",
                ix.name, ix.on
            )))
            .execute(&mut *conn)
            .await?;
            created.push(ix.name.to_owned());
        }
        Ok(created)
    }
}

/// Drops the [`RETIRED_INDEXES`] that exist. Called once every index of [`INDEXES`] is built,
/// so what replaces them is there.
async fn retire_indexes(conn: &mut PgConnection) -> Result<()> {
    for name in RETIRED_INDEXES {
        if !relation_exists(conn, name).await? {
            continue;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {name}"
        )))
        .execute(&mut *conn)
        .await?;
        tracing::info!(index = name, "dropped an index radacctd no longer uses");
    }
    Ok(())
}

/// Whether a table or an index of this name exists (on the search path).
async fn relation_exists(conn: &mut PgConnection, name: &str) -> Result<bool> {
    let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    Ok(found.is_some())
}
