//! `ScopeCache`: the reseller tree (`resellers.parent_id`), the owner of each subscriber
//! username (`subscribers.reseller_id`) and the `nas` ids by address, read from the database
//! at start and every `api.scope_refresh_secs`, so that active-path requests never query it.
//!
//! It is also the live index's [`ResellerResolver`]: after a refresh that changed owners the
//! index's per-reseller counters are reassigned.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::auth::Caller;
use crate::sessions::filter::{NasMatch, Scope};
use crate::sessions::{ResellerResolver, SessionIndex};
use crate::store::{Store, StoreError};

/// One consistent reading of the tables.
#[derive(Debug, Default, PartialEq, Eq)]
struct Snapshot {
    children: HashMap<i64, Vec<i64>>,
    owners: HashMap<String, i64>,
    /// Canonical address → lowest `nas.id` with that `nasname`.
    nas_by_addr: HashMap<String, i64>,
    /// The reverse of `nas_by_addr`.
    addr_by_nas: HashMap<i64, String>,
    /// The `shortname` of the row `nas_by_addr` names.
    name_by_nas: HashMap<i64, String>,
}

/// The cached tables. Readers clone an `Arc` under a short read lock; a refresh swaps it.
#[derive(Debug, Default)]
pub struct ScopeCache {
    snapshot: RwLock<Arc<Snapshot>>,
}

impl ScopeCache {
    /// An empty cache (no reseller owns anything) until [`ScopeCache::refresh`] succeeds.
    pub fn new() -> ScopeCache {
        ScopeCache::default()
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn load(store: &Store) -> Result<Snapshot, StoreError> {
        let mut snap = Snapshot::default();
        for (id, parent) in store.reseller_parents().await? {
            if let Some(p) = parent {
                snap.children.entry(p).or_default().push(id);
            }
        }
        snap.owners = store.subscriber_resellers().await?.into_iter().collect();
        let nas_rows = store.nas_rows().await?;
        for nas in &nas_rows {
            // `nas_id` is the row whose nasname equals the session's address; names that are
            // blocks or hostnames never equal one.
            let Ok(ip) = nas.nasname.trim().parse::<IpAddr>() else {
                continue;
            };
            let addr = ip.to_string();
            let id = snap.nas_by_addr.entry(addr).or_insert(nas.id);
            *id = (*id).min(nas.id);
        }
        snap.addr_by_nas = snap
            .nas_by_addr
            .iter()
            .map(|(a, id)| (*id, a.clone()))
            .collect();
        snap.name_by_nas = nas_rows
            .into_iter()
            .filter(|n| snap.addr_by_nas.contains_key(&n.id))
            .map(|n| (n.id, n.shortname))
            .collect();
        Ok(snap)
    }

    /// Re-reads the tables; when subscriber owners changed, moves the index's counters.
    pub async fn refresh(&self, store: &Store, index: &SessionIndex) -> Result<(), StoreError> {
        let fresh = Arc::new(ScopeCache::load(store).await?);
        let owners_changed = {
            let mut guard = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
            let changed = guard.owners != fresh.owners;
            *guard = fresh;
            changed
        };
        if owners_changed {
            index.reassign_resellers(self);
        }
        Ok(())
    }

    /// Refreshes every `every` until cancelled; a failed refresh keeps the previous tables.
    pub async fn run(
        self: Arc<Self>,
        store: Store,
        index: Arc<SessionIndex>,
        every: Duration,
        cancel: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = self.refresh(&store, &index).await {
                        tracing::warn!(error = %e, "reseller and nas cache not refreshed; keeping the previous one");
                    }
                }
            }
        }
    }

    /// `root` and every reseller below it (a cycle in the table cannot loop).
    pub fn subtree(&self, root: i64) -> Vec<i64> {
        let snap = self.current();
        let mut seen = HashSet::from([root]);
        let mut queue = VecDeque::from([root]);
        while let Some(r) = queue.pop_front() {
            for c in snap.children.get(&r).into_iter().flatten() {
                if seen.insert(*c) {
                    queue.push_back(*c);
                }
            }
        }
        seen.into_iter().collect()
    }

    /// What `caller` may see: everything, or its reseller subtree.
    pub fn scope_for(&self, caller: &Caller) -> Scope {
        match caller.reseller_id {
            _ if caller.sees_everything() => Scope::All,
            Some(r) => Scope::resellers(self.subtree(r)),
            // Unreachable for verified tokens (resellers must carry an id); see nothing.
            None => Scope::resellers(Vec::new()),
        }
    }

    /// The `nas` row whose name is this address.
    pub fn nas_id(&self, nasipaddress: &str) -> Option<i64> {
        self.current().nas_by_addr.get(nasipaddress).copied()
    }

    /// The `nas_id` filter: the address of that `nas` row, or nothing.
    pub fn nas_match(&self, nas_id: i64) -> NasMatch {
        match self.current().addr_by_nas.get(&nas_id) {
            Some(a) => NasMatch::Address(a.clone()),
            None => NasMatch::Nothing,
        }
    }

    /// A lookup of the `nas` row (id and `shortname`) of NAS addresses, for many rows (one
    /// snapshot, no lock per row).
    pub fn nas_names(&self) -> impl Fn(&str) -> Option<(i64, String)> + Send + Sync + 'static {
        let snap = self.current();
        move |addr| {
            let id = *snap.nas_by_addr.get(addr)?;
            Some((id, snap.name_by_nas.get(&id).cloned().unwrap_or_default()))
        }
    }

    /// A lookup function for many rows (one snapshot, no lock per row).
    pub fn nas_lookup(&self) -> impl Fn(&str) -> Option<i64> + Send + Sync + 'static {
        let snap = self.current();
        move |addr| snap.nas_by_addr.get(addr).copied()
    }
}

impl ResellerResolver for ScopeCache {
    fn reseller_of(&self, username: &str) -> Option<i64> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .owners
            .get(username)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::Role;

    fn cache(edges: &[(i64, i64)]) -> ScopeCache {
        let mut snap = Snapshot::default();
        for (parent, child) in edges {
            snap.children.entry(*parent).or_default().push(*child);
        }
        ScopeCache {
            snapshot: RwLock::new(Arc::new(snap)),
        }
    }

    #[test]
    fn subtrees_follow_parents_and_survive_cycles() {
        let c = cache(&[(1, 2), (2, 3), (1, 4), (3, 1)]);
        let mut t = c.subtree(2);
        t.sort();
        assert_eq!(t, vec![1, 2, 3, 4]);
        let c = cache(&[(1, 2), (2, 3), (1, 4)]);
        let mut t = c.subtree(2);
        t.sort();
        assert_eq!(t, vec![2, 3]);
        assert_eq!(c.subtree(9), vec![9]);
        let reseller = Caller {
            subject: None,
            role: Role::Reseller,
            reseller_id: Some(2),
            permissions: vec!["sessions.view".into()],
        };
        assert_eq!(c.scope_for(&reseller), Scope::resellers(vec![2, 3]));
        let wide = Caller {
            permissions: vec!["sessions.view".into(), "sessions.view_all".into()],
            ..reseller
        };
        assert_eq!(c.scope_for(&wide), Scope::All);
    }
}
