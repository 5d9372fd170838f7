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
use hashbrown::HashTable;

use super::row::{Session, Text};

/// Shards for the maps: full scans with dashmap's default shard count starve the writer at a
/// million entries (docs/ARCHITECTURE.md#index). A power of two.
const SHARDS: usize = 256;

/// `acctuniqueid` → session, in shards behind locks of their own. A full scan takes each
/// shard's read lock once and walks its sessions; dashmap's iterator clones an `Arc` for every
/// entry, which was most of a list request's time at a million sessions.
#[derive(Debug)]
struct Shards {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
}

/// One shard: its sessions packed in a vector (a scan reads them in order, with no empty
/// slots in between), and a hash table of positions in it, found by the session's own
/// `acctuniqueid`, so the key is not stored twice and an empty slot costs 4 bytes.
#[derive(Debug, Default)]
struct Shard {
    slots: HashTable<u32>,
    sessions: Vec<Session>,
}

type ShardGuard<'a> = std::sync::RwLockReadGuard<'a, Shard>;
type ShardGuardMut<'a> = std::sync::RwLockWriteGuard<'a, Shard>;

impl Shard {
    fn with_capacity(n: usize) -> Shard {
        Shard {
            slots: HashTable::with_capacity(n),
            sessions: Vec::with_capacity(n),
        }
    }

    fn find(&self, hash: u64, is: impl Fn(&Session) -> bool) -> Option<usize> {
        let sessions = &self.sessions;
        self.slots
            .find(hash, |&i| is(&sessions[i as usize]))
            .map(|&i| i as usize)
    }
}

impl Shards {
    fn new() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The hash of a key: it picks the shard (low bits) and the slot within it.
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[hash as usize & (SHARDS - 1)]
    }

    // A panic while a shard is locked cannot leave it half-changed (nothing below can panic
    // between the two structures' updates but allocation failure, which aborts), so a
    // poisoned lock is taken over.
    fn read(lock: &RwLock<Shard>) -> ShardGuard<'_> {
        lock.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(lock: &RwLock<Shard>) -> ShardGuardMut<'_> {
        lock.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Inserts or replaces the session under its `acctuniqueid`; returns the one replaced.
    fn insert(&self, hash: u64, session: Session) -> Option<Session> {
        let mut guard = Self::write(self.shard(hash));
        if let Some(i) = guard.find(hash, |s| s.acctuniqueid == session.acctuniqueid) {
            return Some(std::mem::replace(&mut guard.sessions[i], session));
        }
        let Shard { slots, sessions } = &mut *guard;
        let at = u32::try_from(sessions.len()).expect("fewer than 2^32 sessions per shard");
        sessions.push(session);
        slots.insert_unique(hash, at, |&i| self.hash(&sessions[i as usize].acctuniqueid));
        None
    }

    /// Removes the session; the shard's last session moves into its place.
    fn remove(&self, hash: u64, key: &str) -> Option<Session> {
        let mut guard = Self::write(self.shard(hash));
        let Shard { slots, sessions } = &mut *guard;
        let entry = slots
            .find_entry(hash, |&i| sessions[i as usize].acctuniqueid == key)
            .ok()?;
        let (at, _) = entry.remove();
        let last = sessions.len() - 1;
        if at as usize != last {
            let moved = self.hash(&sessions[last].acctuniqueid);
            if let Some(slot) = slots.find_mut(moved, |&i| i as usize == last) {
                *slot = at;
            }
        }
        let removed = sessions.swap_remove(at as usize);
        // Give memory back after a mass close (a NAS reboot), keeping room to grow again.
        if sessions.capacity() > 64 && sessions.len() < sessions.capacity() / 4 {
            sessions.shrink_to(sessions.len() * 2);
        }
        Some(removed)
    }

    fn clear_version(&self, hash: u64, key: &str) {
        let mut guard = Self::write(self.shard(hash));
        if let Some(i) = guard.find(hash, |s| s.acctuniqueid == key) {
            guard.sessions[i].row_version = None;
        }
    }

    /// A copy of the session that `is` picks among those whose key has this hash.
    fn get(&self, hash: u64, is: impl Fn(&Session) -> bool) -> Option<Session> {
        let guard = Self::read(self.shard(hash));
        guard.find(hash, is).map(|i| guard.sessions[i].clone())
    }

    /// `f` of the session with this key, without copying it.
    fn peek<T>(&self, hash: u64, key: &str, f: impl FnOnce(&Session) -> T) -> Option<T> {
        let guard = Self::read(self.shard(hash));
        guard
            .find(hash, |s| s.acctuniqueid == key)
            .map(|i| f(&guard.sessions[i]))
    }

    fn contains(&self, hash: u64, key: &str) -> bool {
        Self::read(self.shard(hash))
            .find(hash, |s| s.acctuniqueid == key)
            .is_some()
    }

    /// Empties every shard, leaving room for `expected` sessions in all (spread evenly by the
    /// hash), so a rebuild does not grow the tables step by step.
    fn clear(&self, expected: usize) {
        let per_shard = expected.div_ceil(SHARDS);
        let per_shard = per_shard + per_shard / 8;
        for shard in &*self.shards {
            *Self::write(shard) = Shard::with_capacity(per_shard);
        }
    }

    fn for_each(&self, mut f: impl FnMut(&Session)) {
        for shard in &*self.shards {
            Self::read(shard).sessions.iter().for_each(&mut f);
        }
    }

    fn for_each_mut(&self, mut f: impl FnMut(&mut Session)) {
        for shard in &*self.shards {
            Self::write(shard).sessions.iter_mut().for_each(&mut f);
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
    per_nas: HashMap<Text, i64>,
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
    /// `radacctid` → the hash of the session's key, which finds it in `by_key`.
    by_id: DashMap<i64, u64>,
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
        let hash = self.by_key.hash(&session.acctuniqueid);
        let new_id = session.radacctid;
        if let Some(id) = new_id {
            self.by_id.insert(id, hash);
        }
        let mut counters = self.counters();
        counters.add(&session, 1);
        match self.by_key.insert(hash, session) {
            Some(old) => {
                counters.add(&old, -1);
                if let Some(id) = old.radacctid.filter(|id| Some(*id) != new_id) {
                    self.by_id.remove_if(&id, |_, h| *h == hash);
                }
            }
            None => {
                self.total.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes the session; returns it if it was there.
    pub fn remove(&self, acctuniqueid: &str) -> Option<Session> {
        let hash = self.by_key.hash(acctuniqueid);
        let mut counters = self.counters();
        let old = self.by_key.remove(hash, acctuniqueid)?;
        counters.add(&old, -1);
        self.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(id) = old.radacctid {
            self.by_id.remove_if(&id, |_, h| *h == hash);
        }
        Some(old)
    }

    /// Replaces the whole content (start-up rebuild).
    pub fn replace_all(&self, sessions: impl IntoIterator<Item = Session>) {
        let sessions = sessions.into_iter();
        let mut counters = self.counters();
        self.by_key.clear(sessions.size_hint().0);
        self.by_id.clear();
        *counters = Counters::default();
        let mut total = 0;
        for s in sessions {
            counters.add(&s, 1);
            let hash = self.by_key.hash(&s.acctuniqueid);
            if let Some(id) = s.radacctid {
                self.by_id.insert(id, hash);
            }
            if let Some(old) = self.by_key.insert(hash, s) {
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
        self.by_key
            .clear_version(self.by_key.hash(acctuniqueid), acctuniqueid);
    }

    pub fn get(&self, acctuniqueid: &str) -> Option<Session> {
        self.by_key.get(self.by_key.hash(acctuniqueid), |s| {
            s.acctuniqueid == acctuniqueid
        })
    }

    pub fn get_by_id(&self, radacctid: i64) -> Option<Session> {
        let hash = *self.by_id.get(&radacctid)?;
        self.by_key.get(hash, |s| s.radacctid == Some(radacctid))
    }

    /// The session's last update (else its start), the last evidence that it lived, without
    /// copying the session: what the listener measures interim cadence against.
    pub fn last_seen(&self, acctuniqueid: &str) -> Option<i64> {
        self.by_key
            .peek(self.by_key.hash(acctuniqueid), acctuniqueid, |s| {
                s.acctupdatetime.or(s.acctstarttime)
            })
            .flatten()
    }

    pub fn contains(&self, acctuniqueid: &str) -> bool {
        self.by_key
            .contains(self.by_key.hash(acctuniqueid), acctuniqueid)
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
            per_nas: c
                .per_nas
                .iter()
                .map(|(nas, n)| (nas.to_string(), *n))
                .collect(),
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
            username: format!("user-{key}").into(),
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
            ipv6: None,
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

    #[test]
    fn every_session_stays_findable_by_key_and_id_as_the_tables_grow_and_shrink() {
        let idx = SessionIndex::new();
        let n = 20_000;
        for i in 0..n {
            idx.upsert(session(&format!("{i:032x}"), i, "10.0.0.1", None));
        }
        // A session that moves to another row id: the old id no longer finds it.
        idx.upsert(session(&format!("{:032x}", 7), n + 7, "10.0.0.1", None));
        assert_eq!(idx.get_by_id(7), None);
        assert_eq!(idx.get_by_id(n + 7).map(|s| s.radacctid), Some(Some(n + 7)));
        for i in (0..n).step_by(2) {
            assert!(idx.remove(&format!("{i:032x}")).is_some(), "remove {i}");
        }
        assert_eq!(idx.len(), n as usize / 2);
        for i in 0..n {
            let key = format!("{i:032x}");
            let id = if i == 7 { n + 7 } else { i };
            let by_key = idx.get(&key);
            assert_eq!(idx.contains(&key), i % 2 == 1, "contains {i}");
            assert_eq!(
                by_key.as_ref().map(|s| s.acctuniqueid.as_str()),
                (i % 2 == 1).then_some(key.as_str())
            );
            assert_eq!(idx.get_by_id(id), by_key, "by id {id}");
        }
        let mut seen = 0;
        idx.for_each(|s| {
            assert_eq!(s.radacctid.unwrap() % 2, 1);
            seen += 1;
        });
        assert_eq!(seen, n / 2);
        let one = format!("{:032x}", 1);
        idx.upsert(Session {
            row_version: Some(5.into()),
            ..session(&one, 1, "10.0.0.1", None)
        });
        assert_eq!(idx.get(&one).and_then(|s| s.row_version), Some(5.into()));
        idx.clear_version(&one);
        assert_eq!(idx.get(&one).map(|s| s.row_version), Some(None));
        assert_eq!(idx.count_for_nas("10.0.0.1"), n / 2);
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
