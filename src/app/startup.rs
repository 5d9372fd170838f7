//! Start-up steps of [`super::Application::build`]: opening the store, migrations and the first
//! round trip, replaying a journal left by the previous run, loading the index. Each is a
//! function of its inputs; the order lives in `build`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::api::scope::ScopeCache;
use crate::config::Config;
use crate::ingest::journal::Journal;
use crate::ingest::{self, SharedJournal};
use crate::sessions::{ResellerResolver, SessionIndex};
use crate::store::{Store, StoreOptions};

/// Opens the store the configuration names; `origin` marks the changes this process writes
/// (the daemon's node origin; `None` for one-shot commands, whose changes every daemon
/// applies).
pub async fn open_store(config: &Config, origin: Option<&str>) -> anyhow::Result<Store> {
    let opts = StoreOptions {
        max_connections: config.database.max_connections,
        acquire_timeout: Duration::from_secs(config.database.acquire_timeout_secs.max(1)),
        write_statement_timeout: Some(write_statement_timeout(config.commit_timeout())),
        origin: origin.map(str::to_owned),
        events: config.events.enabled,
    };
    Store::open(config.database.url.expose(), &opts)
        .await
        .context("opening the database")
}

/// The journal, when enabled.
pub(super) fn open_journal(config: &Config) -> anyhow::Result<Option<SharedJournal>> {
    if !config.journal.enabled {
        return Ok(None);
    }
    let journal = Journal::open(&config.journal.path, config.journal.max_bytes)
        .with_context(|| format!("opening the journal {}", config.journal.path.display()))?;
    Ok(Some(Arc::new(std::sync::Mutex::new(journal))))
}

/// The index and the scope cache as start-up leaves them.
pub(super) struct Loaded {
    pub(super) index: Arc<SessionIndex>,
    pub(super) scope: Arc<ScopeCache>,
    /// How long the index rebuild took (zero when the database was down).
    pub(super) rebuild_took: Duration,
}

/// Loads the reseller cache, replays a journal left by the previous run and rebuilds the index
/// from the database (when it is up), then adds what the journal still holds to the index.
pub(super) async fn load_index(
    store: &Store,
    journal: Option<&SharedJournal>,
    config: &Config,
    database_up: bool,
) -> anyhow::Result<Loaded> {
    let index = Arc::new(SessionIndex::new());
    let scope = Arc::new(ScopeCache::new());
    if database_up && let Err(e) = scope.refresh(store, &index).await {
        tracing::warn!(
            error = %e,
            "reseller and nas tables not readable yet; resellers see nothing until a refresh succeeds"
        );
    }
    let resolver: &dyn ResellerResolver = scope.as_ref();
    let mut rebuild_took = Duration::ZERO;
    if database_up {
        if let Some(j) = journal {
            replay_journal_at_start(store, j, config).await;
        }
        let started = std::time::Instant::now();
        rebuild_index(store, &index, resolver)
            .await
            .context("loading open sessions")?;
        rebuild_took = started.elapsed();
    }
    if let Some(j) = journal {
        // What the journal still holds shows in the index (replayed later).
        let pending = ingest::writer_lock(j)
            .all_pending()
            .context("reading the journal")?;
        for entry in &pending {
            ingest::apply_offline(&index, resolver, entry);
        }
    }
    Ok(Loaded {
        index,
        scope,
        rebuild_took,
    })
}

/// The writer's server-side statement and lock timeout: just under the commit deadline, so the
/// server gives up on a statement about when the writer does.
fn write_statement_timeout(commit_timeout: Duration) -> Duration {
    commit_timeout
        .saturating_sub(Duration::from_millis(250))
        .max(Duration::from_millis(500))
}

/// How long start-up waits for the database when there is a journal to answer into: a
/// database that does not answer by then is treated as down (the writer catches up when it
/// answers), instead of holding every answer for the pool's acquire timeouts.
const STARTUP_PROBE: Duration = Duration::from_secs(1);

/// Migrations (when configured) and a round trip: the database can take our writes. With a
/// journal, a database that does not answer a first round trip within [`STARTUP_PROBE`] is
/// down for now.
pub(super) async fn prepare_database(
    store: &Store,
    config: &Config,
    journal: bool,
) -> anyhow::Result<()> {
    if journal {
        match tokio::time::timeout(STARTUP_PROBE, store.ping()).await {
            Ok(r) => r.context("reaching the database")?,
            Err(_) => anyhow::bail!("reaching the database: no answer within {STARTUP_PROBE:?}"),
        }
    }
    if config.database.migrate_on_start {
        store
            .prepare(config.database.radacct_fillfactor)
            .await
            .map_err(explain_migration_error)?;
    }
    store.ping().await.context("reaching the database")?;
    Ok(())
}

/// Lacking DDL rights is not an outage: say which grant is missing.
pub(crate) fn explain_migration_error(e: crate::store::StoreError) -> anyhow::Error {
    let text = e.to_string();
    if text.contains("permission denied") || text.contains("must be owner") {
        anyhow::anyhow!(
            "running migrations: {text}. The database role needs to create radacctd's tables \
             and indexes (CREATE on the schema, or ownership of radacct/nas), or run \
             `radacctd migrate` once as an owner and set database.migrate_on_start = false; \
             at run time radacctd needs SELECT, INSERT, UPDATE, DELETE on radacct and \
             radacct_archive, SELECT on nas, resellers and subscribers, and UPDATE (is_online) \
             on subscribers"
        )
    } else {
        anyhow::Error::new(e).context("running migrations")
    }
}

/// Errors that waiting will not fix (bad credentials, missing rights): exit, do not spool.
pub(super) fn is_permanent(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    [
        "permission denied",
        "must be owner",
        "password authentication failed",
        "role \"",
        "database \"",
    ]
    .iter()
    .any(|p| text.contains(p))
}

/// Replays a journal left by the previous run before anything is answered.
async fn replay_journal_at_start(store: &Store, journal: &ingest::SharedJournal, config: &Config) {
    let pending = ingest::writer_lock(journal).pending();
    if pending == 0 {
        return;
    }
    tracing::info!(
        entries = pending,
        "replaying the journal left by the previous run"
    );
    let mut attempts = 0;
    loop {
        match ingest::replay_chunk(
            store,
            journal,
            config.radius.max_batch,
            config.commit_timeout(),
            super::writer_options(config).events,
            &mut attempts,
        )
        .await
        {
            Ok(ingest::ReplayStep::Replayed(_)) => {}
            Ok(ingest::ReplayStep::Drained) => {
                if let Err(e) = ingest::writer_lock(journal).truncate() {
                    tracing::error!(error = %e, "could not truncate the replayed journal");
                }
                tracing::info!("journal replayed");
                return;
            }
            Ok(ingest::ReplayStep::Stuck) | Err(_) => {
                tracing::warn!("journal replay incomplete at start-up; the writer goes on with it");
                return;
            }
        }
    }
}

/// Replaces the index with the open rows of the database (start-up, invariant B).
pub async fn rebuild_index(
    store: &Store,
    index: &SessionIndex,
    resolver: &dyn ResellerResolver,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut sessions = Vec::new();
    store
        .for_each_open_session(resolver, |session| sessions.push(session))
        .await?;
    let n = sessions.len();
    index.replace_all(sessions);
    tracing::info!(
        open_sessions = n,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "index rebuilt"
    );
    Ok(())
}
