//! The composition root: configuration → store → migrations → index rebuild → sockets → tasks
//! → shutdown. The only module that knows every other one. Tests and benches build the same
//! `Application` on port 0.
//!
//! [`startup`] holds the start-up steps, [`reload`] what keeps clients and caches current,
//! [`ingest_runtime`] where the listener, the writer and the sender run, [`live`] what
//! `/metrics` reads at a scrape, and [`stages`] the shutdown order; this file wires them.

mod ingest_runtime;
mod live;
mod quickstart;
mod reload;
mod stages;
mod startup;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::ingest_runtime::{BusyMeter, IngestRuntime};
use self::live::AppLive;
use self::reload::{Reloader, configured_clients, housekeeping};
use self::stages::Stage;
use self::startup::{is_permanent, load_index, open_journal, prepare_database};
use crate::api::scope::ScopeCache;
use crate::api::{self, ApiDeps, ApiState};
use crate::config::{ClientConfig, Config, Secret};
use crate::disconnect::Disconnector;
use crate::http::HttpLimits;
use crate::ingest::changes::ChangeFeed;
use crate::ingest::{self, ChangesReceiver, ChangesSender, Writer, WriterHealth, WriterOptions};
use crate::jobs::{self, JobStats};
use crate::metrics::Stats;
use crate::metrics::server::MetricsSource;
use crate::net::ClientAddr;
use crate::node::Node;
use crate::queue::{self, IngestReceiver, IngestSender};
use crate::radius::listener::{self, Listener, SharedClients};
use crate::radius::reply::{ReplyCache, Responder};
use crate::sessions::{ResellerResolver, SessionIndex};
use crate::store::ChangeListener;
use crate::store::Store;
use crate::systemd::{self, NotifyState};

pub use self::quickstart::{
    QuickstartApi, quickstart_api_secret, quickstart_secret, quickstart_secret_path,
};
pub use self::reload::load_clients;
pub(crate) use self::startup::explain_migration_error;
pub use self::startup::{open_store, rebuild_index};

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

/// A built, not yet running daemon: sockets bound, database migrated, index loaded.
pub struct Application {
    config: Config,
    store: Store,
    index: Arc<SessionIndex>,
    stats: Arc<Stats>,
    clients: SharedClients,
    /// Taken when the listener starts, on the ingest runtime.
    radius_socket: Option<std::net::UdpSocket>,
    radius_addr: SocketAddr,
    cache: Arc<ReplyCache>,
    resolver: Arc<dyn ResellerResolver>,
    /// The reseller tree, subscriber owners and `nas` ids the API scopes by (also `resolver`).
    scope: Arc<ScopeCache>,
    /// Taken when the API starts serving.
    api_listener: Option<tokio::net::TcpListener>,
    api_addr: SocketAddr,
    ingest_tx: IngestSender,
    /// Taken by the writer when it starts.
    ingest_rx: Option<IngestReceiver>,
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
    /// Listening for other writers' changes since before the index was loaded (taken by the
    /// change feed).
    changes: Option<ChangeListener>,
    /// The fair-use policies and the usage calendar (the API's too).
    policies: crate::usage::Policies,
    /// The fair-use enforcer; with policies, the writer reports to its touches.
    fair_use: crate::fairuse::FairUse,
    touches: Arc<crate::usage::Touches>,
    /// Numbers the events the writers append (taken when the background tasks start).
    sequencer: Option<crate::stream::Sequencer>,
    /// The last event id given, for the events stream and the webhooks.
    events_numbered: crate::stream::Numbered,
    /// The webhooks' delivery (run by the jobs leader).
    webhooks: crate::stream::Webhooks,
    /// Tails the outbox for `GET /api/events` (its task starts with the background tasks).
    hub: crate::stream::Hub,
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
        let node = Arc::new(Node::new(config.node.resolved_name()));
        tracing::info!(node = node.name(), "starting");
        let store = open_store(&config, Some(node.origin())).await?;
        let journal = open_journal(&config)?;
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
        // LISTEN before the index is loaded: a commit of another node after this point is
        // notified, one before it is in the load. (Without it, the change feed listens and
        // runs a full reconciliation once the node runs.)
        let changes = match &database {
            Ok(()) => store.listen_changes().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot listen for change notifications yet");
                None
            }),
            Err(_) => None,
        };
        let loaded = load_index(&store, journal.as_ref(), &config, database.is_ok()).await?;
        let (index, scope) = (loaded.index, loaded.scope);
        let resolver: Arc<dyn ResellerResolver> = scope.clone();
        // With the database down, the `nas` table's clients come when it is back (the writer
        // then triggers a reload); the configured ones answer at once.
        let clients = Arc::new(RwLock::new(Arc::new(match database {
            Ok(()) => load_clients(&config.radius.clients, &store).await,
            Err(_) => configured_clients(&config.radius.clients),
        })));
        let sockets = Sockets::bind(&config, &store, &index).await?;
        let (ingest_tx, ingest_rx) = queue::queue(config.radius.queue_capacity);
        let stats = Arc::new(Stats::for_node(node));
        JobStats::register_all(&stats);
        let disconnector = Disconnector::new(
            config.disconnect.clone(),
            &ingest_tx,
            index.clone(),
            stats.clone(),
        )
        .await
        .context("binding the CoA client sockets")?;
        disconnector.set_clients(&config.radius.clients);
        disconnector.set_action_log(store.clone());
        if database.is_ok()
            && let Err(e) = disconnector.reload_nas(&store).await
        {
            tracing::warn!(error = %e, "nas table not readable for disconnects yet");
        }
        let policies =
            crate::usage::Policies::from_config(&config.usage).map_err(anyhow::Error::msg)?;
        let touches = Arc::new(crate::usage::Touches::new());
        // Built without policies too: throttles recorded before the policies were removed from
        // the configuration are still restored at their period's end.
        let fair_use = crate::fairuse::FairUse::new(
            store.clone(),
            index.clone(),
            disconnector.clone(),
            policies.clone(),
            touches.clone(),
            &config.usage,
            stats.node().name().to_owned(),
        )
        .map_err(anyhow::Error::msg)?;
        let event_stats = crate::stream::EventStats::of(&stats);
        let sequencer = crate::stream::Sequencer::new(
            store.clone(),
            Duration::from_millis(config.events.poll_interval_ms),
        )
        .with_stats(event_stats.clone());
        let hub = crate::stream::Hub::new(
            store.clone(),
            crate::stream::HubOptions::from_config(&config.events),
            event_stats,
        );
        let webhooks =
            crate::stream::Webhooks::new(&config.events, &store, &sequencer.numbered(), &stats)
                .map_err(anyhow::Error::msg)?;
        // Read now, so that the stream serves from the first request; with the database down
        // the hub's task reads it once it is back.
        if database.is_ok()
            && let Err(e) = hub.load().await
        {
            tracing::warn!(error = %e, "events outbox not readable yet");
        }
        Ok(Application {
            webhooks,
            hub,
            events_numbered: sequencer.numbered(),
            sequencer: Some(sequencer),
            policies,
            fair_use,
            touches,
            changes,
            disconnector,
            journal,
            ready,
            metrics_listener: sockets.metrics,
            metrics_addr: sockets.metrics_addr,
            index_rebuild: loaded.rebuild_took,
            reload: Arc::new(tokio::sync::Notify::new()),
            ingest_tx,
            ingest_rx: Some(ingest_rx),
            cache: Arc::new(ReplyCache::new(Duration::from_secs(
                config.radius.dedup_window_secs,
            ))),
            config,
            store,
            index,
            stats,
            clients,
            radius_socket: Some(sockets.radius),
            radius_addr: sockets.radius_addr,
            resolver,
            scope,
            api_listener: Some(sockets.api),
            api_addr: sockets.api_addr,
        })
    }

    /// The bound address of `/metrics`, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The last event id given, as this node knows it (waits on it see new events).
    pub fn events_numbered(&self) -> crate::stream::Numbered {
        self.events_numbered.clone()
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
    pub fn ingest(&self) -> IngestSender {
        self.ingest_tx.clone()
    }

    /// Runs until `shutdown` is cancelled or a core task (listener, writer, API) fails. Then
    /// it stops by stages ([`Running::stop`]): whatever the listener accepted is committed and
    /// answered before this returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let store = self.store.clone();
        let mut running = self.start(&shutdown)?;
        // Migrations, index rebuild and socket binds are done, every task runs.
        systemd::notify(&[NotifyState::Ready]);
        let failure = running.wait(&shutdown).await;
        tracing::info!("shutting down: draining accepted accounting");
        systemd::notify(&[NotifyState::Stopping]);
        let ingest = running.stop().await;
        store.close().await;
        drop(ingest);
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }

    /// Builds the API router, then spawns every task, each in its shutdown stage.
    fn start(mut self, shutdown: &CancellationToken) -> anyhow::Result<Running> {
        // Cancelled as shutdown begins: the listener, the API, the jobs and the refreshers
        // stop at once. `/metrics` has a token of its own and stops after the API.
        let stopping = shutdown.child_token();
        let stages = Stages {
            listener: Stage::new("accounting listener", stopping.child_token()),
            api: Stage::new("API", stopping.child_token()),
            background: Stage::new("jobs, refreshers and /metrics", CancellationToken::new()),
            writer: Stage::new("ingest writer", CancellationToken::new()),
            sender: Stage::new("response sender", CancellationToken::new()),
            stopping,
        };
        let writer_health = Arc::new(WriterHealth::default());
        // What can fail is done before any task runs.
        let router = self.api_router(&stages.api.stop, writer_health.clone())?;
        let api_listener = self
            .api_listener
            .take()
            .context("the API listener is already serving")?;
        // The listener, the writer and the sender: on a thread of their own by default.
        let ingest = IngestRuntime::start(self.config.radius.ingest_thread)?;
        let radius_socket = ingest
            .udp_socket(
                self.radius_socket
                    .take()
                    .context("the accounting listener is already running")?,
            )
            .context("registering the accounting socket")?;
        // Responses leave from a task of their own, off the writer's path; it ends after the
        // writer and the listener (the responder's holders), having sent everything.
        let (responder, sender_task) = {
            let _on = ingest.handle().enter();
            Responder::with_sender(
                radius_socket.clone(),
                self.cache.clone(),
                self.stats.clone(),
            )
        };
        stages.sender.tasks.spawn_on(
            async move {
                let _ = sender_task.await;
            },
            ingest.handle(),
        );
        let writer_alive = Arc::new(AtomicBool::new(true));
        // The change feed's re-reads, which the writer takes ahead of its queue.
        let (changes_tx, changes_rx) = ingest::changes_channel();
        let writer = self.spawn_writer(
            &stages.writer,
            ingest.handle(),
            &responder,
            &writer_health,
            &writer_alive,
            changes_rx,
        );
        let listener = Listener::new(
            radius_socket,
            self.clients.clone(),
            responder,
            self.ingest_tx.clone(),
            self.stats.clone(),
            self.config.radius.max_clock_skew_secs as i64,
        )
        .with_index(self.index.clone());
        let listener = stages
            .listener
            .tasks
            .spawn_on(listener.run(stages.listener.stop.clone()), ingest.handle());
        self.spawn_background(&stages, writer_alive, changes_tx, ingest.busy_meter());
        let (config, stop) = (self.config.api.clone(), stages.api.stop.clone());
        let api = stages
            .api
            .tasks
            .spawn(async move { api::serve(api_listener, router, &config, stop).await });
        // Dropped here: the writer drains and stops once the listener, the jobs and /metrics
        // have dropped theirs.
        drop(self.ingest_tx);
        Ok(Running {
            stages,
            listener,
            writer,
            api,
            ingest,
        })
    }

    /// The ingest writer, on `stage` and `runtime`; `alive` turns false when it ends.
    fn spawn_writer(
        &mut self,
        stage: &Stage,
        runtime: &tokio::runtime::Handle,
        responder: &Responder,
        health: &Arc<WriterHealth>,
        alive: &Arc<AtomicBool>,
        changes: ChangesReceiver,
    ) -> JoinHandle<()> {
        let writer = Writer::new(
            self.store.clone(),
            self.index.clone(),
            self.resolver.clone(),
            Some(responder.clone()),
            self.stats.clone(),
            writer_options(&self.config),
        )
        .with_health(health.clone())
        .on_ready(self.reload.clone())
        .with_changes(changes);
        let writer = if self.policies.is_empty() {
            writer
        } else {
            writer.with_touches(self.touches.clone())
        };
        let writer = match &self.journal {
            Some(j) => writer.with_journal(j.clone(), self.ready.clone()),
            None => writer,
        };
        let (rx, alive) = (self.ingest_rx.take(), alive.clone());
        stage.tasks.spawn_on(
            async move {
                if let Some(rx) = rx {
                    writer.run(rx).await;
                }
                alive.store(false, Ordering::Relaxed);
            },
            runtime,
        )
    }

    /// The HTTP API's router; `stop` also ends exports in progress and the rate limiter's
    /// upkeep.
    fn api_router(
        &self,
        stop: &CancellationToken,
        writer_health: Arc<WriterHealth>,
    ) -> anyhow::Result<axum::Router> {
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
            stop.clone(),
        )
        .context("configuring the API")?
        .with_usage(self.policies.clone())
        .with_events(self.hub.clone());
        api::router(api_state, &self.config.api, stop.clone()).context("configuring the API")
    }

    /// Jobs, /metrics, the reseller-cache and `nas` refreshers, SIGHUP reloads and the systemd
    /// watchdog, on the background stage; the change feed sends its re-reads to `changes`.
    fn spawn_background(
        &mut self,
        stages: &Stages,
        writer_alive: Arc<AtomicBool>,
        changes: ChangesSender,
        ingest: Option<BusyMeter>,
    ) {
        let (tasks, stopping) = (&stages.background.tasks, &stages.stopping);
        let routers = self.config.reconcile.enabled.then(|| {
            jobs::RouterReconciler::new(
                self.disconnector.clone(),
                self.index.clone(),
                self.ingest_tx.clone(),
                &self.stats,
                self.config.reconcile.clone(),
            )
        });
        jobs::start(
            &self.config.jobs,
            &self.store,
            self.ingest_tx.clone(),
            &self.stats,
            jobs::LeaderJobs {
                routers,
                fair_use: Some(self.fair_use.clone()),
                events: Some(jobs::EventRetention::new(
                    self.store.clone(),
                    &self.config.events,
                    jobs::RetentionStats::of(&self.stats),
                )),
                others: webhook_delivery(&self.webhooks),
            },
            tasks,
            stopping.child_token(),
        );
        if !self.policies.is_empty() {
            tasks.spawn(self.fair_use.clone().run(stopping.child_token()));
        }
        if let Some(sequencer) = self.sequencer.take() {
            tasks.spawn(sequencer.run(stopping.child_token()));
        }
        tasks.spawn(
            self.hub
                .clone()
                .run(self.events_numbered.clone(), stopping.child_token()),
        );
        let feed = ChangeFeed::new(
            self.store.clone(),
            self.stats.node().clone(),
            self.ingest_tx.clone(),
            changes,
            self.changes.take(),
        );
        tasks.spawn(feed.run(stopping.child_token()));
        let reload_every = Duration::from_secs(self.config.radius.nas_reload_secs.max(1));
        tasks.spawn(self.scope.clone().run(
            self.store.clone(),
            self.index.clone(),
            Duration::from_secs(self.config.api.scope_refresh_secs.max(1)),
            stopping.child_token(),
        ));
        tasks.spawn(housekeeping(
            stopping.child_token(),
            self.cache.clone(),
            self.clients.clone(),
            self.config.radius.clients.clone(),
            self.store.clone(),
            reload_every,
        ));
        tasks.spawn(self.disconnector.clone().run_refresh(
            self.store.clone(),
            reload_every,
            stopping.child_token(),
        ));
        let reloader = Reloader {
            clients: self.clients.clone(),
            configured: self.config.radius.clients.clone(),
            store: self.store.clone(),
            scope: self.scope.clone(),
            index: self.index.clone(),
            disconnector: self.disconnector.clone(),
        };
        tasks.spawn(reloader.run(stopping.child_token(), self.reload.clone()));
        if let Some(listener) = self.metrics_listener.take() {
            let live = AppLive {
                index: self.index.clone(),
                queue: self.ingest_tx.clone(),
                journal: self.journal.clone(),
                store: self.store.clone(),
                index_rebuild: self.index_rebuild,
                ingest,
            };
            let limits = HttpLimits {
                max_connections: self.config.metrics.max_connections,
                header_read_timeout: Duration::from_secs(self.config.api.header_read_timeout_secs),
            };
            tasks.spawn(crate::metrics::server::serve(
                listener,
                MetricsSource::new(self.stats.clone(), live),
                limits,
                stages.background.stop.clone(),
            ));
        }
        tasks.spawn(systemd::watchdog(writer_alive, stopping.child_token()));
    }
}

/// The webhooks' delivery as a leader-only job (none without endpoints).
fn webhook_delivery(webhooks: &crate::stream::Webhooks) -> Vec<jobs::LeaderTask> {
    if webhooks.is_empty() {
        return Vec::new();
    }
    let webhooks = webhooks.clone();
    vec![jobs::LeaderTask::new("webhooks", move |leader, term| {
        webhooks.spawn(term, leader.ended());
    })]
}

/// The listening sockets, bound before anything runs (a port in use fails start-up).
struct Sockets {
    radius: std::net::UdpSocket,
    radius_addr: SocketAddr,
    api: tokio::net::TcpListener,
    api_addr: SocketAddr,
    metrics: Option<tokio::net::TcpListener>,
    metrics_addr: Option<SocketAddr>,
}

impl Sockets {
    /// Binds RADIUS accounting, the API and (when enabled) /metrics. `store` and `index` are
    /// for the log line only.
    async fn bind(config: &Config, store: &Store, index: &SessionIndex) -> anyhow::Result<Sockets> {
        let radius = listener::bind(config.radius.listen, config.radius.recv_buffer_bytes)
            .with_context(|| format!("binding RADIUS accounting on {}", config.radius.listen))?;
        let radius_addr = radius.local_addr()?;
        let api = tokio::net::TcpListener::bind(config.api.listen)
            .await
            .with_context(|| format!("binding the API on {}", config.api.listen))?;
        let api_addr = api.local_addr()?;
        tracing::info!(
            address = %radius_addr,
            store = store.kind(),
            open_sessions = index.len(),
            "accounting listener bound"
        );
        tracing::info!(address = %api_addr, "API listener bound");
        let metrics = match config.metrics.enabled {
            true => Some(
                tokio::net::TcpListener::bind(config.metrics.listen)
                    .await
                    .with_context(|| format!("binding /metrics on {}", config.metrics.listen))?,
            ),
            false => None,
        };
        let metrics_addr = metrics.as_ref().map(|l| l.local_addr()).transpose()?;
        Ok(Sockets {
            radius,
            radius_addr,
            api,
            api_addr,
            metrics,
            metrics_addr,
        })
    }
}

/// The shutdown stages, stopped in field order by [`Running::stop`].
struct Stages {
    /// Stops receiving accounting; its queue sender goes with it.
    listener: Stage,
    /// Requests in flight get a moment to finish; exports stop at once.
    api: Stage,
    /// /metrics (for the queue depth) and the jobs hold senders into the writer's queue: they
    /// go before the writer.
    background: Stage,
    /// Drains: commits and answers everything queued, then ends (every sender is gone).
    writer: Stage,
    /// Sends the last answers, then ends (the writer and the listener are gone).
    sender: Stage,
    /// Cancelled as shutdown begins (parent of the listener's, the API's, the jobs' and the
    /// refreshers' tokens).
    stopping: CancellationToken,
}

/// A running daemon: its stages and the core tasks whose end is a failure.
struct Running {
    stages: Stages,
    listener: JoinHandle<std::io::Result<()>>,
    writer: JoinHandle<()>,
    api: JoinHandle<std::io::Result<()>>,
    /// Where the listener, the writer and the sender run.
    ingest: IngestRuntime,
}

/// How long API requests in flight may take to finish at shutdown.
const API_GRACE: Duration = Duration::from_secs(10);

impl Running {
    /// Until `shutdown` is cancelled (`None`) or a core task ends (its failure).
    async fn wait(&mut self, shutdown: &CancellationToken) -> Option<anyhow::Error> {
        // Biased: once shutdown is requested the listener and writer end on purpose, which must
        // not be mistaken for a failure.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            r = &mut self.listener => Some(match r {
                Ok(Ok(())) => anyhow::anyhow!("accounting listener stopped"),
                Ok(Err(e)) => anyhow::Error::new(e).context("accounting listener failed"),
                Err(e) => anyhow::Error::new(e).context("accounting listener panicked"),
            }),
            r = &mut self.writer => Some(match r {
                Ok(()) => anyhow::anyhow!("ingest writer stopped"),
                Err(e) => anyhow::Error::new(e).context("ingest writer panicked"),
            }),
            r = &mut self.api => Some(match r {
                Ok(Ok(())) => anyhow::anyhow!("API server stopped"),
                Ok(Err(e)) => anyhow::Error::new(e).context("API server failed"),
                Err(e) => anyhow::Error::new(e).context("API server panicked"),
            }),
        }
    }

    /// Stops stage by stage: listener → API → jobs, refreshers and /metrics → writer →
    /// sender. Everything accepted is committed and answered before this returns. The ingest
    /// runtime is returned to be dropped once the store is closed: the writer's connections
    /// are registered with it.
    async fn stop(self) -> IngestRuntime {
        let Running {
            stages,
            api,
            ingest,
            ..
        } = self;
        stages.stopping.cancel();
        stages.listener.stop().await;
        if !stages.api.stop_within(API_GRACE).await {
            tracing::warn!("API connections still open after 10 s; closing them");
            api.abort();
            stages.api.stop().await;
        }
        stages.background.stop().await;
        stages.writer.stop().await;
        stages.sender.stop().await;
        ingest
    }
}

/// The writer's settings from the configuration.
pub(crate) fn writer_options(config: &Config) -> WriterOptions {
    WriterOptions {
        max_batch: config.radius.max_batch,
        commit_timeout: config.commit_timeout(),
        replay_interval: Duration::from_millis(config.journal.replay_interval_ms.max(10)),
        radacct_fillfactor: config.database.radacct_fillfactor,
        events: ingest::EventOptions {
            enabled: config.events.enabled,
            interims: config.events.interims,
        },
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
