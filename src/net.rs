//! IP addresses and CIDR blocks: [`ClientAddr`] (what the configuration, the `nas` table and
//! the API's trusted proxies name) and [`AddrTable`], the lookup by source address that the
//! RADIUS client table and the disconnect directory share. Pure data, no I/O; depends on
//! nothing of ours.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address as PostgreSQL writes an `inet` (`host()`): Rust's RFC 5952 form, except that an
/// IPv6 address whose first 96 bits are zero and whose last 32 are not an address of
/// `::/112` (an IPv4-compatible address, RFC 4291 §2.5.5.1) is written `::a.b.c.d`, where Rust
/// writes `::a00:1`. The text radacctd stores and `search` compares must be PostgreSQL's, so
/// that a row reads back as it was written and a term matches on both databases alike.
pub fn ip_text(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => ipv4_text(a),
        IpAddr::V6(a) => ipv6_text(a),
    }
}

/// An IPv4 address in dotted decimal, as `Display` writes it, without `fmt` (the listener
/// writes one or two per packet).
pub fn ipv4_text(addr: Ipv4Addr) -> String {
    let mut s = String::with_capacity(15);
    let mut digits = [0u8; 10];
    for (i, octet) in addr.octets().into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        s.extend(
            decimal(u32::from(octet), &mut digits)
                .iter()
                .map(|&d| char::from(d)),
        );
    }
    s
}

/// `v` in decimal (as `{v}` formats it), written at the end of `buf`.
pub fn decimal(mut v: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut start = buf.len();
    // Ten digits at most (u32::MAX is 4294967295), so `start` stays in the buffer.
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        start -= 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[start..]
}

/// [`ip_text`] of an IPv6 address.
pub fn ipv6_text(addr: Ipv6Addr) -> String {
    let words = addr.segments();
    if words[..6] == [0; 6] && words[6] != 0 {
        let low = u32::from(words[6]) << 16 | u32::from(words[7]);
        format!("::{}", Ipv4Addr::from(low))
    } else {
        addr.to_string()
    }
}

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

    /// The single address `addr` (a /32 or /128).
    pub fn host(addr: IpAddr) -> ClientAddr {
        ClientAddr {
            addr,
            prefix: Self::max_prefix(addr),
        }
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

    /// Whether the two blocks share an address: one contains the other (blocks of different
    /// families never do). PostgreSQL's `inet && inet`.
    pub fn overlaps(&self, other: &ClientAddr) -> bool {
        if self.prefix <= other.prefix {
            self.contains(other.addr)
        } else {
            other.contains(self.addr)
        }
    }

    /// The block with its host bits cleared (`2001:db8::1/64` is `2001:db8::/64`).
    pub fn network(&self) -> ClientAddr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        ClientAddr {
            addr,
            prefix: self.prefix,
        }
    }

    /// An IPv4-mapped IPv6 block (`::ffff:100.64.3.7`, `::ffff:100.64.3.0/120`) as the IPv4
    /// block it stands for; any other block unchanged.
    pub fn unmapped(&self) -> ClientAddr {
        match self.addr {
            IpAddr::V6(a) if self.prefix >= 96 => match a.to_ipv4_mapped() {
                Some(v4) => ClientAddr {
                    addr: IpAddr::V4(v4),
                    prefix: self.prefix - 96,
                },
                None => *self,
            },
            _ => *self,
        }
    }

    /// The block in PostgreSQL's `inet` text form: `addr/len` always, even for a host.
    pub fn cidr_text(&self) -> String {
        format!("{}/{}", ip_text(self.addr), self.prefix)
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
            write!(f, "{}", ip_text(self.addr))
        } else {
            write!(f, "{}/{}", ip_text(self.addr), self.prefix)
        }
    }
}

/// Addresses and CIDR blocks to values: an exact address first, then the narrowest block.
#[derive(Debug, Clone)]
pub struct AddrTable<T> {
    exact: HashMap<IpAddr, T>,
    /// CIDR blocks, narrowest first.
    nets: Vec<(ClientAddr, T)>,
}

impl<T> Default for AddrTable<T> {
    fn default() -> Self {
        AddrTable {
            exact: HashMap::new(),
            nets: Vec::new(),
        }
    }
}

impl<T> AddrTable<T> {
    /// Adds a value; an earlier entry for the same address or block wins.
    pub fn add(&mut self, addr: ClientAddr, value: T) {
        if addr.is_host() {
            self.exact.entry(addr.addr).or_insert(value);
        } else if !self.nets.iter().any(|(a, _)| *a == addr) {
            self.nets.push((addr, value));
            self.nets.sort_by_key(|(a, _)| std::cmp::Reverse(a.prefix));
        }
    }

    /// The value of `ip`'s exact entry, else of the narrowest block holding it. An IPv4
    /// address seen through a dual-stack socket (`::ffff:a.b.c.d`) is looked up as IPv4.
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        let ip = ip.to_canonical();
        self.exact.get(&ip).or_else(|| {
            self.nets
                .iter()
                .find(|(net, _)| net.contains(ip))
                .map(|(_, v)| v)
        })
    }

    /// The exact addresses and their values (blocks left out), in no particular order.
    pub fn hosts(&self) -> impl Iterator<Item = (IpAddr, &T)> {
        self.exact.iter().map(|(ip, v)| (*ip, v))
    }

    /// Entries: addresses plus blocks.
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

    #[test]
    fn ipv4_text_and_decimal_write_what_display_writes() {
        let mut buf = [0u8; 10];
        for v in [
            0,
            7,
            10,
            255,
            4_095,
            65_535,
            1_000_000,
            u32::MAX - 1,
            u32::MAX,
        ] {
            assert_eq!(decimal(v, &mut buf), v.to_string().as_bytes(), "{v}");
        }
        for v in (0..=u32::MAX)
            .step_by(65_521)
            .chain([u32::MAX, 0x0a00_0001])
        {
            let a = Ipv4Addr::from(v);
            assert_eq!(ipv4_text(a), a.to_string());
            assert_eq!(ip_text(IpAddr::V4(a)), a.to_string());
        }
    }

    fn block(s: &str) -> ClientAddr {
        s.parse().expect(s)
    }

    #[test]
    fn addresses_are_written_as_postgresql_writes_them() {
        // Each pair: an address, and PostgreSQL 15's `host(address::inet)` of it.
        for (addr, postgres) in [
            ("::a00:1", "::10.0.0.1"),
            ("::1:0", "::0.1.0.0"),
            ("::1:1", "::0.1.0.1"),
            ("::1", "::1"),
            ("::2", "::2"),
            ("::100", "::100"),
            ("::", "::"),
            ("::ffff:a00:1", "::ffff:10.0.0.1"),
            ("::ffff:0:0", "::ffff:0.0.0.0"),
            ("::ffff:0:0:1", "::ffff:0:0:1"),
            ("0:0:0:0:0:1::", "::1:0:0"),
            ("::1:0:0:1", "::1:0:0:1"),
            ("64:ff9b::a00:1", "64:ff9b::a00:1"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:DB8:0:1::5", "2001:db8:0:1::5"),
            ("100.64.3.7", "100.64.3.7"),
        ] {
            let ip: IpAddr = addr.parse().expect(addr);
            assert_eq!(ip_text(ip), postgres, "{addr}");
        }
        assert_eq!(block("::a00:0/120").to_string(), "::10.0.0.0/120");
        assert_eq!(block("::a00:1").cidr_text(), "::10.0.0.1/128");
    }

    #[test]
    fn blocks_overlap_when_one_contains_the_other() {
        assert!(block("2001:db8:12::/56").overlaps(&block("2001:db8:12:ff::1")));
        assert!(block("2001:db8:12:ff::1").overlaps(&block("2001:db8:12::/56")));
        assert!(block("2001:db8::/32").overlaps(&block("2001:db8:12::/56")));
        assert!(!block("2001:db8:13::/56").overlaps(&block("2001:db8:12::/56")));
        assert!(block("100.64.3.7").overlaps(&block("100.64.3.0/24")));
        assert!(!block("100.64.3.7").overlaps(&block("100.64.3.8")));
        assert!(!block("::ffff:100.64.3.7").overlaps(&block("100.64.3.7")));
        assert!(block("0.0.0.0/0").overlaps(&block("198.51.100.1")));
        assert!(!block("::/0").overlaps(&block("198.51.100.1")));
    }

    #[test]
    fn networks_clear_host_bits_and_mapped_blocks_unmap() {
        assert_eq!(
            block("2001:db8:12:3456::9/56").network(),
            block("2001:db8:12:3400::/56")
        );
        assert_eq!(block("100.64.3.7/0").network(), block("0.0.0.0/0"));
        assert_eq!(block("::ffff:100.64.3.7").unmapped(), block("100.64.3.7"));
        assert_eq!(
            block("::ffff:100.64.3.0/120").unmapped(),
            block("100.64.3.0/24")
        );
        assert_eq!(block("::ffff:0:0/80").unmapped(), block("::ffff:0:0/80"));
        assert_eq!(block("2001:db8::1").unmapped(), block("2001:db8::1"));
        assert_eq!(block("100.64.3.7").cidr_text(), "100.64.3.7/32");
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
        assert_eq!(
            ClientAddr::host("2001:db8::1".parse().expect("ip")).to_string(),
            "2001:db8::1"
        );
    }

    #[test]
    fn exact_beats_narrowest_block_and_first_entry_wins() {
        let mut t = AddrTable::default();
        t.add("10.0.0.0/8".parse().expect("a"), "wide");
        t.add("10.1.0.0/16".parse().expect("a"), "narrow");
        t.add("10.1.0.5".parse().expect("a"), "host");
        t.add("10.1.0.5".parse().expect("a"), "second");
        t.add("10.1.0.0/16".parse().expect("a"), "second");
        let at = |ip: &str| t.lookup(ip.parse().expect("ip")).copied();
        assert_eq!(at("10.1.0.5"), Some("host"));
        assert_eq!(at("10.1.0.6"), Some("narrow"));
        assert_eq!(at("10.2.0.6"), Some("wide"));
        assert_eq!(at("192.0.2.1"), None);
        assert_eq!(at("::ffff:10.1.0.5"), Some("host"));
        assert_eq!(t.len(), 3);
    }
}
