//! `radacct`'s fillfactor (docs/ARCHITECTURE.md#radacct-fillfactor): the configured value, or
//! the default for a table without one of its own, set under the migrations' lock by
//! [`super::PgStore::prepare`].

use sqlx::PgConnection;

use crate::store::Result;

/// The fillfactor `radacct` gets when the configuration names none and the table has none of
/// its own: room on each page for the new versions of the rows a batch of Interim-Updates
/// rewrites, so that they are HOT updates (docs/ARCHITECTURE.md#radacct-fillfactor).
pub const DEFAULT_RADACCT_FILLFACTOR: u8 = 60;

/// What [`super::PgStore::prepare`] does to `radacct`'s fillfactor after the migrations.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) enum Fillfactor {
    /// Nothing (migrations alone).
    Leave,
    /// `database.radacct_fillfactor`: that value, or, unset, [`DEFAULT_RADACCT_FILLFACTOR`]
    /// for a table without a fillfactor of its own.
    Configured(Option<u8>),
}

/// `radacct`'s own fillfactor, if it has one.
async fn radacct_fillfactor(conn: &mut PgConnection) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT option_value FROM pg_class c, pg_options_to_table(c.reloptions) \
         WHERE c.oid = 'radacct'::regclass AND option_name = 'fillfactor'",
    )
    .fetch_optional(&mut *conn)
    .await?)
}

async fn alter_radacct_fillfactor(conn: &mut PgConnection, fillfactor: u8) -> sqlx::Result<()> {
    // SHARE UPDATE EXCLUSIVE: writers are not blocked. Only pages written from now on
    // follow it.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE radacct SET (fillfactor = {})",
        fillfactor.clamp(10, 100)
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What `fillfactor` asks for, on `conn` (the migrations' connection): returns the fillfactor
/// set, if it changed.
pub(super) async fn apply(conn: &mut PgConnection, fillfactor: Fillfactor) -> Result<Option<u8>> {
    Ok(match fillfactor {
        Fillfactor::Leave => None,
        Fillfactor::Configured(Some(ff)) => set_radacct_fillfactor(conn, ff).await?.then_some(ff),
        Fillfactor::Configured(None) => default_radacct_fillfactor(conn)
            .await?
            .then_some(DEFAULT_RADACCT_FILLFACTOR),
    })
}

/// Sets `radacct`'s fillfactor on `conn` when it differs; returns whether it changed. A table
/// without a fillfactor of its own has PostgreSQL's 100 already.
pub(super) async fn set_radacct_fillfactor(
    conn: &mut PgConnection,
    fillfactor: u8,
) -> Result<bool> {
    let current = radacct_fillfactor(conn).await?;
    let current = current.as_deref().unwrap_or("100");
    if current == fillfactor.to_string() {
        return Ok(false);
    }
    alter_radacct_fillfactor(conn, fillfactor).await?;
    Ok(true)
}

/// [`DEFAULT_RADACCT_FILLFACTOR`] for a `radacct` without a fillfactor of its own; one the
/// operator gave it is left as it is. A role that may not alter the table (it is not the
/// owner, as when FreeRADIUS's role created it) gets a warning naming the statement to run,
/// and radacctd runs on with the table as it is. Returns whether it changed.
async fn default_radacct_fillfactor(conn: &mut PgConnection) -> Result<bool> {
    if radacct_fillfactor(conn).await?.is_some() {
        return Ok(false);
    }
    match alter_radacct_fillfactor(conn, DEFAULT_RADACCT_FILLFACTOR).await {
        Ok(()) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
            tracing::warn!(
                error = %e,
                "radacct keeps PostgreSQL's default fillfactor (100): this role may not alter \
                 the table. Interim-Updates then rewrite every index of radacct; as the \
                 table's owner run: ALTER TABLE radacct SET (fillfactor = {DEFAULT_RADACCT_FILLFACTOR}) \
                 (or set database.radacct_fillfactor = 100 to silence this)"
            );
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
