//! Known RADIUS clients (NASes): configured ones plus rows of the `nas` table, looked up by the
//! datagram's source address (an exact address first, then the narrowest CIDR block).

use std::net::IpAddr;
use std::sync::Arc;

use crate::net::{AddrTable, ClientAddr};

/// One client: its shared secret and, for `nas` rows, the row id.
#[derive(Clone)]
pub struct Client {
    pub name: String,
    pub secret: Arc<[u8]>,
    pub nas_id: Option<i64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("nas_id", &self.nas_id)
            .finish_non_exhaustive()
    }
}

/// The client table the listener consults for every datagram.
#[derive(Debug, Default, Clone)]
pub struct ClientTable {
    clients: AddrTable<Arc<Client>>,
}

impl ClientTable {
    /// Adds a client; an earlier entry for the same address wins (configured clients are added
    /// before `nas` rows, so the file overrides the table).
    pub fn add(&mut self, addr: ClientAddr, client: Client) {
        self.clients.add(addr, Arc::new(client));
    }

    /// The client of a source address: an exact entry, else the narrowest block (an IPv4
    /// client seen through a dual-stack socket is found by its IPv4 address).
    pub fn lookup(&self, ip: IpAddr) -> Option<&Arc<Client>> {
        self.clients.lookup(ip)
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> Client {
        Client {
            name: name.into(),
            secret: Arc::from(&b"x"[..]),
            nas_id: None,
        }
    }

    #[test]
    fn exact_beats_narrowest_net() {
        let mut t = ClientTable::default();
        t.add("10.0.0.0/8".parse().expect("a"), client("wide"));
        t.add("10.1.0.0/16".parse().expect("a"), client("narrow"));
        t.add("10.1.0.5".parse().expect("a"), client("host"));
        let name = |ip: &str| t.lookup(ip.parse().expect("ip")).map(|c| c.name.clone());
        assert_eq!(name("10.1.0.5").as_deref(), Some("host"));
        assert_eq!(name("10.1.0.6").as_deref(), Some("narrow"));
        assert_eq!(name("10.2.0.6").as_deref(), Some("wide"));
        assert_eq!(name("192.0.2.1"), None);
        assert_eq!(name("::ffff:10.1.0.5").as_deref(), Some("host"));
    }
}
