//! This daemon's identity and standing among several radacctd nodes sharing one PostgreSQL
//! (docs/HA.md): its name, whether its live index is known to equal SQL (the change listener
//! is connected and has reconciled), and whether it leads the jobs. Shared, lock-free; read by
//! `/readyz`, `/metrics` and the jobs.

use std::sync::atomic::{AtomicBool, Ordering};

/// One node's identity and standing.
#[derive(Debug)]
pub struct Node {
    name: String,
    /// Unique to this process (name, pid and a random number): the origin its database
    /// connections give their changes, so that its change listener skips them.
    origin: String,
    /// False while the index may miss other writers' changes: the change listener is not
    /// connected, or it reconnected and the full reconciliation has not finished yet.
    coherent: AtomicBool,
    /// True while this node holds the jobs leadership.
    leader: AtomicBool,
}

impl Node {
    /// A node named `name`, coherent (a single node needs nothing more) and not leading.
    pub fn new(name: impl Into<String>) -> Node {
        use std::hash::{BuildHasher as _, Hasher as _};
        let name = name.into();
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Node {
            origin: format!("{name}:{}:{random:016x}", std::process::id()),
            name,
            coherent: AtomicBool::new(true),
            leader: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// This process's origin in the database's change notifications.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether the index is known to follow every writer's committed changes.
    pub fn coherent(&self) -> bool {
        self.coherent.load(Ordering::Acquire)
    }

    pub fn set_coherent(&self, yes: bool) {
        self.coherent.store(yes, Ordering::Release);
    }

    /// Whether this node runs the sweeper and the archiver now.
    pub fn leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    pub fn set_leader(&self, yes: bool) {
        self.leader.store(yes, Ordering::Release);
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new("radacctd")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_processes_of_one_name_have_different_origins() {
        let (a, b) = (Node::new("host"), Node::new("host"));
        assert_eq!(a.name(), b.name());
        assert_ne!(a.origin(), b.origin());
        assert!(a.origin().starts_with("host:"));
    }
}
