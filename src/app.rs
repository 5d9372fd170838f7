//! The composition root: configuration → store → migrations → index rebuild → sockets → tasks
//! → shutdown. The only module that knows every other one. Tests and benches build the same
//! `Application` on port 0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::scope::ScopeCache;
use crate::api::{self, ApiDeps, ApiState};
use crate::config::{ClientConfig, Config, Secret};
use crate::disconnect::Disconnector;
use crate::ingest::journal::Journal;
use crate::ingest::{self, Writer, WriterHealth, WriterOptions};
use crate::jobs::{Archiver, Sweeper};
use crate::metrics::Stats;
use crate::radius::clients::{Client, ClientAddr, ClientTable};
use crate::radius::listener::{self, Listener, SharedClients};
use crate::radius::reply::{ReplyCache, Responder};
use crate::sessions::{ResellerResolver, SessionIndex};
use crate::store::{Store, StoreOptions};

/// Prints a line on standard output for a one-shot command. A reader that went away
/// (`radacctd check-config | head -1`) ends the process quietly with status 0, as SIGPIPE
/// would, instead of a panic; any other write error is reported and exits 1.
pub fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("radacctd: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` for one-shot commands, through [`print_line`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::app::print_line(format_args!($($arg)*))
    };
}

/// The client configured when radacctd runs without a config file (FreeRADIUS's convention).
pub fn quickstart_client() -> ClientConfig {
    ClientConfig {
        address: ClientAddr {
            addr: [127, 0, 0, 1].into(),
            prefix: 32,
        },
        secret: Secret::new("testing123"),
        name: Some("localhost (quick start)".into()),
    }
}

/// Opens the store the configuration names.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let opts = StoreOptions {
        max_connections: config.database.max_connections,
        acquire_timeout: Duration::from_secs(config.database.acquire_timeout_secs.max(1)),
        write_statement_timeout: Some(write_statement_timeout(config.commit_timeout())),
    };
    Store::open(config.database.url.expose(), &opts)
        .await
        .context("opening the database")
}

/// The writer's server-side statement and lock timeout: just under the commit deadline, so the
/// server gives up on a statement about when the writer does.
fn write_statement_timeout(commit_timeout: Duration) -> Duration {
    commit_timeout
        .saturating_sub(Duration::from_millis(250))
        .max(Duration::from_millis(500))
}

/// A built, not yet running daemon: sockets bound, database migrated, index loaded.
pub struct Application {
    config: Config,
    store: Store,
    index: Arc<SessionIndex>,
    stats: Arc<Stats>,
    clients: SharedClients,
    radius_socket: Arc<tokio::net::UdpSocket>,
    radius_addr: SocketAddr,
    cache: Arc<ReplyCache>,
    resolver: Arc<dyn ResellerResolver>,
    /// The reseller tree, subscriber owners and `nas` ids the API scopes by (also `resolver`).
    scope: Arc<ScopeCache>,
    api_listener: tokio::net::TcpListener,
    api_addr: SocketAddr,
    ingest_tx: ingest::IngestSender,
    ingest_rx: ingest::IngestReceiver,
    /// The durable spool, when enabled.
    journal: Option<ingest::SharedJournal>,
    /// False while the index does not reflect the database (start-up with it unreachable).
    ready: Arc<AtomicBool>,
    metrics_listener: Option<tokio::net::TcpListener>,
    metrics_addr: Option<SocketAddr>,
    index_rebuild: Duration,
    /// Notified on SIGHUP: re-read the `nas` table and the reseller cache now.
    reload: Arc<tokio::sync::Notify>,
    /// CoA + RouterOS API disconnects; closes rows through the writer.
    disconnector: Disconnector,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("store", &self.store.kind())
            .field("radius_addr", &self.radius_addr)
            .field("api_addr", &self.api_addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the store, migrates, rebuilds the index and binds the listener. The listener does
    /// not answer anything before the index holds every open session.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let store = open_store(&config).await?;
        let journal = match config.journal.enabled {
            true => Some(Arc::new(std::sync::Mutex::new(
                Journal::open(&config.journal.path, config.journal.max_bytes).with_context(
                    || format!("opening the journal {}", config.journal.path.display()),
                )?,
            ))),
            false => None,
        };
        let ready = Arc::new(AtomicBool::new(true));
        let database = prepare_database(&store, &config, journal.is_some()).await;
        if let Err(e) = &database {
            if journal.is_none() || is_permanent(e) {
                return Err(anyhow::anyhow!("{e:#}"));
            }
            tracing::warn!(
                error = format!("{e:#}"),
                "database unavailable at start-up: answering into the journal; the API reports \
                 `index not ready` until the database is back"
            );
            ready.store(false, Ordering::Relaxed);
        }
        let index = Arc::new(SessionIndex::new());
        let scope = Arc::new(ScopeCache::new());
        if database.is_ok()
            && let Err(e) = scope.refresh(&store, &index).await
        {
            tracing::warn!(
                error = %e,
                "reseller and nas tables not readable yet; resellers see nothing until a refresh succeeds"
            );
        }
        let resolver: Arc<dyn ResellerResolver> = scope.clone();
        let mut index_rebuild = Duration::ZERO;
        if database.is_ok() {
            if let Some(j) = &journal {
                replay_journal_at_start(&store, j, &config).await;
            }
            let started = std::time::Instant::now();
            rebuild_index(&store, &index, resolver.as_ref())
                .await
                .context("loading open sessions")?;
            index_rebuild = started.elapsed();
        }
        if let Some(j) = &journal {
            // What the journal still holds shows in the index (replayed later).
            let pending = ingest::writer_lock(j)
                .all_pending()
                .context("reading the journal")?;
            for entry in &pending {
                ingest::apply_offline(&index, resolver.as_ref(), entry);
            }
        }
        // With the database down, the `nas` table's clients come when it is back (the writer
        // then triggers a reload); the configured ones answer at once.
        let clients = Arc::new(RwLock::new(Arc::new(match database {
            Ok(()) => load_clients(&config.radius.clients, &store).await,
            Err(_) => configured_clients(&config.radius.clients),
        })));
        let socket = listener::bind(config.radius.listen, config.radius.recv_buffer_bytes)
            .with_context(|| format!("binding RADIUS accounting on {}", config.radius.listen))?;
        let radius_addr = socket.local_addr()?;
        let api_listener = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("binding the API on {}", config.api.listen))?;
        let api_addr = api_listener.local_addr()?;
        tracing::info!(
            address = %radius_addr,
            store = store.kind(),
            open_sessions = index.len(),
            "accounting listener bound"
        );
        tracing::info!(address = %api_addr, "API listener bound");
        let metrics_listener = match config.metrics.enabled {
            true => Some(
                tokio::net::TcpListener::bind(config.metrics.listen)
                    .await
                    .with_context(|| format!("binding /metrics on {}", config.metrics.listen))?,
            ),
            false => None,
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let (ingest_tx, ingest_rx) = ingest::queue(config.radius.queue_capacity);
        let stats = Arc::new(Stats::default());
        let disconnector = Disconnector::new(
            config.disconnect.clone(),
            &ingest_tx,
            index.clone(),
            stats.clone(),
        )
        .await
        .context("binding the CoA client sockets")?;
        disconnector.set_clients(&config.radius.clients);
        if database.is_ok()
            && let Err(e) = disconnector.reload_nas(&store).await
        {
            tracing::warn!(error = %e, "nas table not readable for disconnects yet");
        }
        Ok(Application {
            disconnector,
            journal,
            ready,
            metrics_listener,
            metrics_addr,
            index_rebuild,
            reload: Arc::new(tokio::sync::Notify::new()),
            ingest_tx,
            ingest_rx,
            cache: Arc::new(ReplyCache::new(Duration::from_secs(
                config.radius.dedup_window_secs,
            ))),
            config,
            store,
            index,
            stats,
            clients,
            radius_socket: Arc::new(socket),
            radius_addr,
            resolver,
            scope,
            api_listener,
            api_addr,
        })
    }

    /// The bound address of `/metrics`, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Notify it to reload clients and the reseller cache now (what SIGHUP does).
    pub fn reload_handle(&self) -> Arc<tokio::sync::Notify> {
        self.reload.clone()
    }

    /// The disconnect service (what `POST /api/sessions/{id}/disconnect` uses).
    pub fn disconnector(&self) -> Disconnector {
        self.disconnector.clone()
    }

    /// The bound address of the HTTP API.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn radius_addr(&self) -> SocketAddr {
        self.radius_addr
    }

    pub fn index(&self) -> Arc<SessionIndex> {
        self.index.clone()
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// A sender into the writer's queue (for close requests). Drop it before shutdown: the
    /// writer drains and stops once every sender is gone.
    pub fn ingest(&self) -> ingest::IngestSender {
        self.ingest_tx.clone()
    }

    /// Runs until `shutdown` is cancelled or a core task fails. On shutdown the listener stops
    /// first, then the writer commits and answers everything already accepted.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (tx, rx) = (self.ingest_tx, self.ingest_rx);
        let jobs_ingest = tx.clone();
        let tx_for_metrics = tx.clone();
        // Responses leave from a task of their own, off the writer's path; it ends after the
        // writer and the listener (the responder's holders), having sent everything.
        let (responder, sender_task) = Responder::with_sender(
            self.radius_socket.clone(),
            self.cache.clone(),
            self.stats.clone(),
        );
        let writer_health = Arc::new(WriterHealth::default());
        let writer = Writer::new(
            self.store.clone(),
            self.index.clone(),
            self.resolver.clone(),
            Some(responder.clone()),
            self.stats.clone(),
            writer_options(&self.config),
        )
        .with_health(writer_health.clone())
        .on_ready(self.reload.clone());
        let writer = match &self.journal {
            Some(j) => writer.with_journal(j.clone(), self.ready.clone()),
            None => writer,
        };
        let listener = Listener::new(
            self.radius_socket.clone(),
            self.clients.clone(),
            responder,
            tx,
            self.stats.clone(),
            self.config.radius.max_clock_skew_secs as i64,
        );
        let stop_listener = shutdown.child_token();
        let mut listener_task: JoinHandle<std::io::Result<()>> =
            tokio::spawn(listener.run(stop_listener.clone()));
        let writer_alive = Arc::new(AtomicBool::new(true));
        let mut writer_task = tokio::spawn({
            let alive = writer_alive.clone();
            async move {
                writer.run(rx).await;
                alive.store(false, Ordering::Relaxed);
            }
        });
        let stop_jobs = shutdown.child_token();
        let jobs = spawn_jobs(
            &self.config,
            &self.store,
            jobs_ingest,
            &self.stats,
            stop_jobs.clone(),
        );
        let background = shutdown.child_token();
        let stop_api = shutdown.child_token();
        let api_state = ApiState::new(
            &self.config.api,
            ApiDeps {
                store: self.store.clone(),
                index: self.index.clone(),
                scope: self.scope.clone(),
                index_ready: self.ready.clone(),
                writer_health: Some(writer_health),
                disconnector: Some(self.disconnector.clone()),
                stats: Some(self.stats.clone()),
                queue_timeout: Duration::from_secs(
                    self.config.database.acquire_timeout_secs.max(1),
                ),
            },
            stop_api.clone(),
        )
        .context("configuring the API")?;
        let router = api::router(api_state, &self.config.api, background.clone())
            .context("configuring the API")?;
        let stop_api_serve = stop_api.clone();
        let api_config = self.config.api.clone();
        let mut api_task = tokio::spawn(async move {
            api::serve(self.api_listener, router, &api_config, stop_api_serve).await
        });
        let scope_refresh = tokio::spawn(self.scope.clone().run(
            self.store.clone(),
            self.index.clone(),
            Duration::from_secs(self.config.api.scope_refresh_secs.max(1)),
            background.clone(),
        ));
        let housekeeping = tokio::spawn(housekeeping(
            background.clone(),
            self.cache.clone(),
            self.clients.clone(),
            self.config.radius.clients.clone(),
            self.store.clone(),
            Duration::from_secs(self.config.radius.nas_reload_secs.max(1)),
        ));
        let nas_refresh = tokio::spawn(self.disconnector.clone().run_refresh(
            self.store.clone(),
            Duration::from_secs(self.config.radius.nas_reload_secs.max(1)),
            background.clone(),
        ));
        let reloader = tokio::spawn(
            Reloader {
                clients: self.clients.clone(),
                configured: self.config.radius.clients.clone(),
                store: self.store.clone(),
                scope: self.scope.clone(),
                index: self.index.clone(),
                disconnector: self.disconnector.clone(),
            }
            .run(background.clone(), self.reload.clone()),
        );
        let stop_metrics = CancellationToken::new();
        let metrics_task = self.metrics_listener.map(|l| {
            tokio::spawn(serve_metrics(
                l,
                MetricsSource {
                    stats: self.stats.clone(),
                    index: self.index.clone(),
                    queue: tx_for_metrics,
                    journal: self.journal.clone(),
                    store: self.store.clone(),
                    index_rebuild: self.index_rebuild,
                },
                crate::api::server::HttpLimits {
                    max_connections: self.config.metrics.max_connections,
                    header_read_timeout: Duration::from_secs(
                        self.config.api.header_read_timeout_secs,
                    ),
                },
                stop_metrics.clone(),
            ))
        });
        let watchdog = tokio::spawn(systemd_watchdog(writer_alive.clone(), background.clone()));
        // Migrations, index rebuild and socket binds are done, every task runs.
        notify_systemd(&[sd_notify::NotifyState::Ready]);

        let mut failure: Option<anyhow::Error> = None;
        let mut writer_done = false;
        let mut listener_done = false;
        let mut api_done = false;
        // Biased: once shutdown is requested the listener and writer end on purpose, which must
        // not be mistaken for a failure.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {}
            r = &mut listener_task => {
                listener_done = true;
                failure = Some(match r {
                    Ok(Ok(())) => anyhow::anyhow!("accounting listener stopped"),
                    Ok(Err(e)) => anyhow::Error::new(e).context("accounting listener failed"),
                    Err(e) => anyhow::Error::new(e).context("accounting listener panicked"),
                });
            }
            r = &mut writer_task => {
                writer_done = true;
                failure = Some(match r {
                    Ok(()) => anyhow::anyhow!("ingest writer stopped"),
                    Err(e) => anyhow::Error::new(e).context("ingest writer panicked"),
                });
            }
            r = &mut api_task => {
                api_done = true;
                failure = Some(match r {
                    Ok(Ok(())) => anyhow::anyhow!("API server stopped"),
                    Ok(Err(e)) => anyhow::Error::new(e).context("API server failed"),
                    Err(e) => anyhow::Error::new(e).context("API server panicked"),
                });
            }
        }
        tracing::info!("shutting down: draining accepted accounting");
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        stop_listener.cancel();
        stop_api.cancel();
        background.cancel();
        if !api_done {
            // Requests in flight get a moment to finish; exports stop at once (they watch
            // `stop_api`). Past that the connections are dropped.
            if tokio::time::timeout(Duration::from_secs(10), &mut api_task)
                .await
                .is_err()
            {
                tracing::warn!("API connections still open after 10 s; closing them");
                api_task.abort();
            }
        }
        let _ = scope_refresh.await;
        if !listener_done {
            let _ = listener_task.await;
        }
        // /metrics (for the queue depth) and the jobs hold senders into the writer's queue: they
        // go first, then the writer drains.
        stop_metrics.cancel();
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        stop_jobs.cancel();
        for job in jobs {
            let _ = job.await;
        }
        if !writer_done {
            let _ = writer_task.await;
        }
        // The writer and the listener are gone: the sender task drains and ends.
        let _ = sender_task.await;
        let _ = watchdog.await;
        let _ = housekeeping.await;
        let _ = reloader.await;
        let _ = nas_refresh.await;
        self.store.close().await;
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

/// How long start-up waits for the database when there is a journal to answer into: a
/// database that does not answer by then is treated as down (the writer catches up when it
/// answers), instead of holding every answer for the pool's acquire timeouts.
const STARTUP_PROBE: Duration = Duration::from_secs(1);

/// Migrations (when configured) and a round trip: the database can take our writes. With a
/// journal, a database that does not answer a first round trip within [`STARTUP_PROBE`] is
/// down for now.
async fn prepare_database(store: &Store, config: &Config, journal: bool) -> anyhow::Result<()> {
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

/// The writer's settings from the configuration.
fn writer_options(config: &Config) -> WriterOptions {
    WriterOptions {
        max_batch: config.radius.max_batch,
        commit_timeout: config.commit_timeout(),
        replay_interval: Duration::from_millis(config.journal.replay_interval_ms.max(10)),
        radacct_fillfactor: config.database.radacct_fillfactor,
    }
}

/// Lacking DDL rights is not an outage: say which grant is missing.
fn explain_migration_error(e: crate::store::StoreError) -> anyhow::Error {
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
fn is_permanent(e: &anyhow::Error) -> bool {
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

/// Starts EnsureIndexes (once, in the background: queries work meanwhile, only slower), the
/// stale sweeper and the archiver, as configured. They stop when `cancel` is cancelled, which
/// releases their handles on the ingest queue.
fn spawn_jobs(
    config: &Config,
    store: &Store,
    ingest: ingest::IngestSender,
    stats: &Arc<Stats>,
    cancel: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if config.jobs.ensure_indexes {
        tasks.push(tokio::spawn(ensure_indexes(store.clone(), cancel.clone())));
    }
    if config.jobs.sweep_enabled {
        let sweeper = Sweeper::new(store.clone(), ingest, config.jobs.clone(), stats.clone());
        tasks.push(tokio::spawn(sweeper.run(cancel.clone())));
    }
    if config.jobs.archive_enabled {
        let archiver = Archiver::new(store.clone(), config.jobs.clone(), stats.clone());
        tasks.push(tokio::spawn(archiver.run(cancel)));
    }
    tasks
}

/// EnsureIndexes until it succeeds: a database that was down at start-up (or a table that
/// migrations deferred to later have not created yet) gets its indexes once it is back.
/// Retries back off from 1 s to 5 min; the first failure is a warning, later ones debug lines.
async fn ensure_indexes(store: Store, cancel: CancellationToken) {
    let mut wait = Duration::from_secs(1);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = store.ensure_indexes() => match r {
                Ok(created) if created.is_empty() => {
                    tracing::debug!("all indexes present");
                    return;
                }
                Ok(created) => {
                    tracing::info!(indexes = ?created, "EnsureIndexes created missing indexes");
                    return;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, retry_in = ?wait, "EnsureIndexes failed; queries still work, slower; retrying");
                    } else {
                        tracing::debug!(error = %e, failures, retry_in = ?wait, "EnsureIndexes failed again");
                    }
                }
            },
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(300));
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

/// The clients of the configuration file alone.
fn configured_clients(configured: &[ClientConfig]) -> ClientTable {
    let mut table = ClientTable::default();
    for c in configured {
        table.add(
            c.address,
            Client {
                name: c.name.clone().unwrap_or_else(|| c.address.to_string()),
                secret: Arc::from(c.secret.expose().as_bytes()),
                nas_id: None,
            },
        );
    }
    table
}

/// Configured clients first (they win), then the `nas` table. A `nas` row whose name is a
/// hostname is resolved now; one that cannot be read is skipped with a warning.
pub async fn load_clients(configured: &[ClientConfig], store: &Store) -> ClientTable {
    let mut table = configured_clients(configured);
    match store.nas_rows().await {
        Ok(rows) => {
            for row in rows {
                let client = Client {
                    name: row.shortname.clone(),
                    secret: Arc::from(row.secret.as_bytes()),
                    nas_id: Some(row.id),
                };
                if let Ok(addr) = row.nasname.parse::<ClientAddr>() {
                    table.add(addr, client);
                    continue;
                }
                match tokio::net::lookup_host((row.nasname.as_str(), 0)).await {
                    Ok(addrs) => {
                        for a in addrs {
                            let addr = ClientAddr {
                                addr: a.ip(),
                                prefix: if a.is_ipv4() { 32 } else { 128 },
                            };
                            table.add(addr, client.clone());
                        }
                    }
                    Err(e) => tracing::warn!(
                        nas = %row.nasname,
                        error = %e,
                        "nas row skipped: not an address, block or resolvable name"
                    ),
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the nas table; keeping configured clients")
        }
    }
    table
}

async fn housekeeping(
    cancel: CancellationToken,
    cache: Arc<ReplyCache>,
    clients: SharedClients,
    configured: Vec<ClientConfig>,
    store: Store,
    reload_every: Duration,
) {
    let mut purge = tokio::time::interval(Duration::from_secs(5));
    let mut reload = tokio::time::interval(reload_every);
    reload.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = purge.tick() => cache.purge(),
            _ = reload.tick() => {
                let table = load_clients(&configured, &store).await;
                *clients.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
            }
        }
    }
}

/// `radacctd serve`: builds the application and runs it until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    let reload = app.reload_handle();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading clients and the reseller cache");
            reload.notify_one();
        }
    });
    app.run_until_stopped(shutdown).await
}

/// `radacctd migrate`: applies pending migrations and exits.
pub async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    store
        .prepare(config.database.radacct_fillfactor)
        .await
        .map_err(explain_migration_error)?;
    crate::outln!("migrations applied ({})", store.kind());
    store.close().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// `radacctd sweep [--dry-run]`: one sweep now, through a writer of its own (the running
/// daemon's index catches up at its next sweep, which reconciles with SQL).
pub async fn sweep_command(config: Config, dry_run: bool) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let stats = Arc::new(Stats::default());
    let (tx, rx) = ingest::queue(4096);
    let sweeper = Sweeper::new(store.clone(), tx, config.jobs.clone(), stats.clone());
    if dry_run {
        let rows = sweeper.dry_run(config.jobs.sweep_limit).await?;
        crate::outln!(
            "dry run: {} open session(s) with no update for {} s would be closed as NAS-Idle-Timeout",
            rows.len(),
            config.jobs.stale_after_secs
        );
        for r in rows.iter().take(20) {
            crate::outln!(
                "  radacctid={} username={} nas={} last_seen={}",
                r.radacctid,
                r.username.as_deref().unwrap_or(""),
                r.nasipaddress,
                r.last_seen.map(format_time).unwrap_or_default()
            );
        }
        store.close().await;
        return Ok(());
    }
    let writer = Writer::new(
        store.clone(),
        Arc::new(SessionIndex::new()),
        Arc::new(()),
        None,
        stats,
        writer_options(&config),
    );
    let writer = tokio::spawn(writer.run(rx));
    let report = sweeper.run_once().await;
    drop(sweeper);
    let _ = writer.await;
    store.close().await;
    let report = report?;
    crate::outln!(
        "closed {} of {} stale session(s); marked {} subscriber(s) online, {} offline",
        report.closed,
        report.candidates,
        report.marked_online,
        report.marked_offline
    );
    Ok(())
}

/// `radacctd archive [--dry-run]`: one archiver run now.
pub async fn archive_command(config: Config, dry_run: bool) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let archiver = Archiver::new(
        store.clone(),
        config.jobs.clone(),
        Arc::new(Stats::default()),
    );
    let result = if dry_run {
        archiver.dry_run(20).await.map(|(count, rows)| {
            crate::outln!(
                "dry run: {count} closed session(s) stopped more than {} days ago would move to radacct_archive",
                config.jobs.archive_after_days
            );
            for r in rows {
                crate::outln!(
                    "  radacctid={} username={} stopped={}",
                    r.radacctid,
                    r.username.as_deref().unwrap_or(""),
                    r.acctstoptime.map(format_time).unwrap_or_default()
                );
            }
        })
    } else {
        archiver.run_once().await.map(|r| {
            crate::outln!(
                "moved {} session(s) to radacct_archive in {} batch(es)",
                r.moved,
                r.batches
            );
        })
    };
    store.close().await;
    result
}

fn format_time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// What `/metrics` reads at scrape time.
struct MetricsSource {
    stats: Arc<Stats>,
    index: Arc<SessionIndex>,
    queue: ingest::IngestSender,
    journal: Option<ingest::SharedJournal>,
    store: Store,
    index_rebuild: Duration,
}

impl MetricsSource {
    fn render(&self) -> String {
        let counts = self.index.counts();
        let mut by_nas: Vec<(String, i64)> = counts.per_nas.into_iter().collect();
        by_nas.sort();
        let journal = self.journal.as_ref().map(|j| {
            let j = ingest::writer_lock(j);
            (j.pending(), j.bytes(), j.oldest_age(listener::now_secs()))
        });
        let journal_health = self
            .journal
            .as_ref()
            .map(|j| ingest::writer_lock(j).health());
        self.stats.render(&crate::metrics::Live {
            active_sessions: counts.total,
            active_by_nas: by_nas,
            queue_depth: self.queue.max_capacity() - self.queue.capacity(),
            journal,
            pool: self.store.pool_stats(),
            index_rebuild: self.index_rebuild,
            journal_health,
        })
    }
}

/// Serves `GET /metrics` (Prometheus text format) until `stop`.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    source: MetricsSource,
    limits: crate::api::server::HttpLimits,
    stop: CancellationToken,
) {
    use axum::routing::get;
    let source = Arc::new(source);
    let router = axum::Router::new().route(
        "/metrics",
        get(move || {
            let source = source.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    source.render(),
                )
            }
        }),
    );
    // A scrape can simply be cut at shutdown: Prometheus retries.
    if let Err(e) = crate::api::server::serve(
        listener,
        router,
        limits,
        stop,
        crate::api::server::OnShutdown::Close,
        "metrics",
    )
    .await
    {
        tracing::error!(error = %e, "/metrics listener failed");
    }
}

/// Tells systemd about state changes when started by it (`NOTIFY_SOCKET` set); a no-op else.
fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// `WATCHDOG=1` at half the watchdog interval while the ingest writer runs — also while the
/// database is down (a locked table must not make systemd kill us in a loop).
async fn systemd_watchdog(writer_alive: Arc<AtomicBool>, cancel: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if writer_alive.load(Ordering::Relaxed) {
            notify_systemd(&[sd_notify::NotifyState::Watchdog]);
        }
    }
}

/// What SIGHUP (or [`Application::reload_handle`]) reloads: the `nas` table into the client
/// list and the disconnect directory, and the reseller cache, without stopping anything.
struct Reloader {
    clients: SharedClients,
    configured: Vec<ClientConfig>,
    store: Store,
    scope: Arc<ScopeCache>,
    index: Arc<SessionIndex>,
    disconnector: Disconnector,
}

impl Reloader {
    async fn run(self, cancel: CancellationToken, reload: Arc<tokio::sync::Notify>) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = reload.notified() => {}
            }
            notify_systemd(&[sd_notify::NotifyState::Reloading]);
            let table = load_clients(&self.configured, &self.store).await;
            let n = table.len();
            *self.clients.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
            if let Err(e) = self.scope.refresh(&self.store, &self.index).await {
                tracing::warn!(error = %e, "reseller cache refresh failed");
            }
            if let Err(e) = self.disconnector.reload_nas(&self.store).await {
                tracing::warn!(error = %e, "nas table refresh for disconnects failed");
            }
            tracing::info!(clients = n, "reloaded clients and reseller cache");
            notify_systemd(&[sd_notify::NotifyState::Ready]);
        }
    }
}
