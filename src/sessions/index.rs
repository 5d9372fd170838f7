//! `SessionIndex`: the committed set of open sessions, keyed by `acctuniqueid`, with a
//! `radacctid` lookup and counters (total, per NAS, per reseller) kept current on every change,
//! so that counts never scan the sessions.
//!
//! Guards from the maps are never returned to callers, so none can be held across `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};

use dashmap::DashMap;

use super::row::Session;

/// Shards for the maps: full scans with dashmap's default shard count starve the writer at a
/// million entries (DESIGN §9). A power of two.
const SHARDS: usize = 256;

/// `acctuniqueid` → session, in shards behind locks of their own. A full scan takes each
/// shard's read lock once and walks its map; dashmap's iterator clones an `Arc` for every
/// entry, which was most of a list request's time at a million sessions.
#[derive(Debug)]
struct Shards {
    shards: Box<[RwLock<HashMap<String, Session>>]>,
    hasher: RandomState,
}

type ShardGuard<'a> = std::sync::RwLockReadGuard<'a, HashMap<String, Session>>;
type ShardGuardMut<'a> = std::sync::RwLockWriteGuard<'a, HashMap<String, Session>>;

impl Shards {
    fn new() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> &RwLock<HashMap<String, Session>> {
        &self.shards[self.hasher.hash_one(key) as usize & (SHARDS - 1)]
    }

    // A panic while a shard is locked cannot leave a map half-changed (std's HashMap
    // operations are panic-safe), so a poisoned lock is taken over.
    fn read(lock: &RwLock<HashMap<String, Session>>) -> ShardGuard<'_> {
        lock.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(lock: &RwLock<HashMap<String, Session>>) -> ShardGuardMut<'_> {
        lock.write().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, key: String, session: Session) -> Option<Session> {
        Self::write(self.shard(&key)).insert(key, session)
    }

    fn remove(&self, key: &str) -> Option<Session> {
        Self::write(self.shard(key)).remove(key)
    }

    fn clear_version(&self, key: &str) {
        if let Some(s) = Self::write(self.shard(key)).get_mut(key) {
            s.row_version = None;
        }
    }

    fn get(&self, key: &str) -> Option<Session> {
        Self::read(self.shard(key)).get(key).cloned()
    }

    fn contains(&self, key: &str) -> bool {
        Self::read(self.shard(key)).contains_key(key)
    }

    fn clear(&self) {
        for shard in &*self.shards {
            Self::write(shard).clear();
        }
    }

    fn for_each(&self, mut f: impl FnMut(&Session)) {
        for shard in &*self.shards {
            Self::read(shard).values().for_each(&mut f);
        }
    }

    fn for_each_mut(&self, mut f: impl FnMut(&mut Session)) {
        for shard in &*self.shards {
            Self::write(shard).values_mut().for_each(&mut f);
        }
    }
}

/// Maps a username to the reseller that owns it (the panel's `subscribers.reseller_id`).
pub trait ResellerResolver: Send + Sync {
    fn reseller_of(&self, username: &str) -> Option<i64>;
}

/// Resolves nobody: every session is unowned (the default until the reseller cache is loaded).
impl ResellerResolver for () {
    fn reseller_of(&self, _username: &str) -> Option<i64> {
        None
    }
}

/// A consistent copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexCounts {
    pub total: i64,
    pub per_nas: HashMap<String, i64>,
    /// `None` counts the sessions whose username belongs to no reseller.
    pub per_reseller: HashMap<Option<i64>, i64>,
}

#[derive(Debug, Default)]
struct Counters {
    per_nas: HashMap<String, i64>,
    per_reseller: HashMap<Option<i64>, i64>,
}

impl Counters {
    fn add(&mut self, s: &Session, delta: i64) {
        bump(&mut self.per_nas, s.nasipaddress.clone(), delta);
        bump(&mut self.per_reseller, s.reseller_id, delta);
    }
}

fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, i64>, key: K, delta: i64) {
    let v = map.entry(key).or_insert(0);
    *v += delta;
    if *v == 0 {
        map.retain(|_, n| *n != 0);
    }
}

/// The live index. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SessionIndex {
    by_key: Shards,
    by_id: DashMap<i64, String>,
    total: AtomicI64,
    /// Per-NAS and per-reseller counts change together with `by_key`; one small mutex keeps the
    /// pair consistent for readers (the writer is the only one that takes it for writing).
    counters: Mutex<Counters>,
}

impl Default for SessionIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionIndex {
    pub fn new() -> Self {
        SessionIndex {
            by_key: Shards::new(),
            by_id: DashMap::with_shard_amount(SHARDS),
            total: AtomicI64::new(0),
            counters: Mutex::new(Counters::default()),
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        // A panic while holding the lock cannot leave the counters half-updated in a way that
        // matters more than stopping the daemon would, so a poisoned lock is simply taken over.
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts or replaces the session with this `acctuniqueid`.
    pub fn upsert(&self, session: Session) {
        let key = session.acctuniqueid.clone();
        let new_id = session.radacctid;
        if let Some(id) = new_id {
            self.by_id.insert(id, key.clone());
        }
        let mut counters = self.counters();
        counters.add(&session, 1);
        match self.by_key.insert(key, session) {
            Some(old) => {
                counters.add(&old, -1);
                if let Some(id) = old.radacctid.filter(|id| Some(*id) != new_id) {
                    self.by_id.remove(&id);
                }
            }
            None => {
                self.total.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes the session; returns it if it was there.
    pub fn remove(&self, acctuniqueid: &str) -> Option<Session> {
        let mut counters = self.counters();
        let old = self.by_key.remove(acctuniqueid)?;
        counters.add(&old, -1);
        self.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(id) = old.radacctid {
            self.by_id.remove_if(&id, |_, k| k == acctuniqueid);
        }
        Some(old)
    }

    /// Replaces the whole content (start-up rebuild).
    pub fn replace_all(&self, sessions: impl IntoIterator<Item = Session>) {
        let mut counters = self.counters();
        self.by_key.clear();
        self.by_id.clear();
        *counters = Counters::default();
        let mut total = 0;
        for s in sessions {
            counters.add(&s, 1);
            if let Some(id) = s.radacctid {
                self.by_id.insert(id, s.acctuniqueid.clone());
            }
            if let Some(old) = self.by_key.insert(s.acctuniqueid.clone(), s) {
                counters.add(&old, -1);
            } else {
                total += 1;
            }
        }
        self.total.store(total, Ordering::Relaxed);
    }

    /// Forgets the session's row version (in place: nothing else about it changes), so the
    /// writer reads its row before the next write.
    pub fn clear_version(&self, acctuniqueid: &str) {
        self.by_key.clear_version(acctuniqueid);
    }

    pub fn get(&self, acctuniqueid: &str) -> Option<Session> {
        self.by_key.get(acctuniqueid)
    }

    pub fn get_by_id(&self, radacctid: i64) -> Option<Session> {
        let key = self.by_id.get(&radacctid).map(|k| k.clone())?;
        self.get(&key)
    }

    pub fn contains(&self, acctuniqueid: &str) -> bool {
        self.by_key.contains(acctuniqueid)
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed).max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open sessions owned by any of these resellers: O(resellers given).
    pub fn count_for_resellers(&self, resellers: &[i64]) -> i64 {
        let c = self.counters();
        resellers
            .iter()
            .map(|r| c.per_reseller.get(&Some(*r)).copied().unwrap_or(0))
            .sum()
    }

    /// Open sessions on one NAS address.
    pub fn count_for_nas(&self, nasipaddress: &str) -> i64 {
        self.counters()
            .per_nas
            .get(nasipaddress)
            .copied()
            .unwrap_or(0)
    }

    pub fn counts(&self) -> IndexCounts {
        let c = self.counters();
        IndexCounts {
            total: self.total.load(Ordering::Relaxed),
            per_nas: c.per_nas.clone(),
            per_reseller: c.per_reseller.clone(),
        }
    }

    /// Visits every session (a shard at a time; never hold on to anything across `.await`).
    pub fn for_each(&self, f: impl FnMut(&Session)) {
        self.by_key.for_each(f);
    }

    /// Copies out the sessions that pass `keep`.
    pub fn collect(&self, mut keep: impl FnMut(&Session) -> bool) -> Vec<Session> {
        let mut out = Vec::new();
        self.for_each(|s| {
            if keep(s) {
                out.push(s.clone());
            }
        });
        out
    }

    /// Re-resolves every session's reseller (after the reseller cache changed).
    pub fn reassign_resellers(&self, resolver: &dyn ResellerResolver) {
        let mut counters = self.counters();
        self.by_key.for_each_mut(|entry| {
            let new = resolver.reseller_of(&entry.username);
            if new != entry.reseller_id {
                counters.add(entry, -1);
                entry.reseller_id = new;
                counters.add(entry, 1);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(key: &str, id: i64, nas: &str, reseller: Option<i64>) -> Session {
        Session {
            radacctid: Some(id),
            acctuniqueid: key.into(),
            username: format!("user-{key}"),
            acctsessionid: "s".into(),
            nasipaddress: nas.into(),
            nasportid: None,
            framedipaddress: None,
            callingstationid: None,
            acctstarttime: Some(1),
            acctupdatetime: Some(1),
            acctinputoctets: Some(0),
            acctoutputoctets: Some(0),
            acctsessiontime: Some(0),
            reseller_id: reseller,
            row_version: None,
        }
    }

    #[test]
    fn counters_follow_upserts_and_removes() {
        let idx = SessionIndex::new();
        idx.upsert(session("a", 1, "10.0.0.1", Some(7)));
        idx.upsert(session("b", 2, "10.0.0.1", Some(8)));
        idx.upsert(session("c", 3, "10.0.0.2", None));
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.count_for_nas("10.0.0.1"), 2);
        assert_eq!(idx.count_for_resellers(&[7, 8]), 2);
        // Replacing an entry moves its counts.
        idx.upsert(session("b", 2, "10.0.0.2", Some(7)));
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.count_for_nas("10.0.0.1"), 1);
        assert_eq!(idx.count_for_resellers(&[7]), 2);
        assert_eq!(idx.count_for_resellers(&[8]), 0);
        assert_eq!(
            idx.get_by_id(2).map(|s| s.nasipaddress),
            Some("10.0.0.2".into())
        );
        assert!(idx.remove("b").is_some());
        assert!(idx.remove("b").is_none());
        assert_eq!(idx.get_by_id(2), None);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.counts().per_nas.get("10.0.0.2"), Some(&1));
    }

    #[test]
    fn replace_all_resets_everything() {
        let idx = SessionIndex::new();
        idx.upsert(session("a", 1, "10.0.0.1", Some(7)));
        idx.replace_all(vec![session("x", 9, "10.0.0.9", None)]);
        assert_eq!(idx.len(), 1);
        assert!(idx.get("a").is_none());
        assert_eq!(idx.get_by_id(1), None);
        assert_eq!(idx.count_for_nas("10.0.0.1"), 0);
        assert_eq!(idx.counts().per_reseller.get(&None), Some(&1));
    }

    struct Fixed;
    impl ResellerResolver for Fixed {
        fn reseller_of(&self, _username: &str) -> Option<i64> {
            Some(42)
        }
    }

    #[test]
    fn reassigning_resellers_moves_counts() {
        let idx = SessionIndex::new();
        idx.upsert(session("a", 1, "n", None));
        idx.upsert(session("b", 2, "n", Some(3)));
        idx.reassign_resellers(&Fixed);
        assert_eq!(idx.count_for_resellers(&[42]), 2);
        assert_eq!(idx.count_for_resellers(&[3]), 0);
    }
}
