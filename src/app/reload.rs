//! Keeping the client list, the reseller cache and the disconnect directory current while the
//! daemon runs: the periodic `nas` reload and reply-cache purge, and the reload on SIGHUP.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::scope::ScopeCache;
use crate::config::ClientConfig;
use crate::disconnect::Disconnector;
use crate::net::ClientAddr;
use crate::radius::clients::{Client, ClientTable};
use crate::radius::listener::SharedClients;
use crate::radius::reply::ReplyCache;
use crate::sessions::SessionIndex;
use crate::store::Store;
use crate::systemd::{self, NotifyState};

/// The clients of the configuration file alone.
pub(super) fn configured_clients(configured: &[ClientConfig]) -> ClientTable {
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
                            table.add(ClientAddr::host(a.ip()), client.clone());
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

/// Purges the reply cache every 5 s and reloads the clients every `reload_every`.
pub(super) async fn housekeeping(
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

/// What SIGHUP (or [`Application::reload_handle`]) reloads: the `nas` table into the client
/// list and the disconnect directory, and the reseller cache, without stopping anything.
pub(super) struct Reloader {
    pub(super) clients: SharedClients,
    pub(super) configured: Vec<ClientConfig>,
    pub(super) store: Store,
    pub(super) scope: Arc<ScopeCache>,
    pub(super) index: Arc<SessionIndex>,
    pub(super) disconnector: Disconnector,
}

impl Reloader {
    pub(super) async fn run(self, cancel: CancellationToken, reload: Arc<tokio::sync::Notify>) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = reload.notified() => {}
            }
            systemd::notify(&[NotifyState::Reloading]);
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
            systemd::notify(&[NotifyState::Ready]);
        }
    }
}
