//! Known RADIUS clients (NASes): configured ones plus rows of the `nas` table, looked up by the
//! datagram's source address (an exact address first, then the narrowest CIDR block).

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

/// An IP address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl ClientAddr {
    fn max_prefix(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    pub fn is_host(&self) -> bool {
        self.prefix == Self::max_prefix(self.addr)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for ClientAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = Self::max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?} has an invalid prefix length")),
            },
        };
        Ok(ClientAddr { addr, prefix })
    }
}

impl<'de> serde::Deserialize<'de> for ClientAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

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
    exact: HashMap<IpAddr, Arc<Client>>,
    /// CIDR blocks, narrowest first.
    nets: Vec<(ClientAddr, Arc<Client>)>,
}

impl ClientTable {
    /// Adds a client; an earlier entry for the same address wins (configured clients are added
    /// before `nas` rows, so the file overrides the table).
    pub fn add(&mut self, addr: ClientAddr, client: Client) {
        let client = Arc::new(client);
        if addr.is_host() {
            self.exact.entry(addr.addr).or_insert(client);
        } else if !self.nets.iter().any(|(a, _)| *a == addr) {
            self.nets.push((addr, client));
            self.nets.sort_by_key(|(a, _)| std::cmp::Reverse(a.prefix));
        }
    }

    pub fn lookup(&self, ip: IpAddr) -> Option<&Arc<Client>> {
        let ip = match ip {
            // A v4 client seen through a dual-stack socket.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.exact.get(&ip).or_else(|| {
            self.nets
                .iter()
                .find(|(net, _)| net.contains(ip))
                .map(|(_, c)| c)
        })
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.nets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn parses_and_matches_cidr() {
        let net: ClientAddr = "10.1.0.0/16".parse().expect("cidr");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        let all: ClientAddr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        let v6: ClientAddr = "2001:db8::/32".parse().expect("cidr");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<ClientAddr>().is_err());
        assert!("bng-1".parse::<ClientAddr>().is_err());
        assert_eq!(net.to_string(), "10.1.0.0/16");
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
