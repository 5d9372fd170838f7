//! Attribution, "who had this address at that time?" (docs/ARCHITECTURE.md#attribution): the
//! address or block asked about, the moment with its allowance for clock skew, and which
//! column of a row holds the address. Pure rules; the SQL that finds the rows, in `radacct`
//! and `radacct_archive`, is `store::attribution`, and both stores pass their rows through
//! [`matched_column`], so they answer alike.

use crate::net::ClientAddr;

use super::filter::Scope;
use super::row::{Columns, Row, Value};

/// The columns an IPv4 target is compared with.
pub const IPV4_COLUMNS: [&str; 1] = ["framedipaddress"];
/// The columns an IPv6 target is compared with, in table order.
pub const IPV6_COLUMNS: [&str; 3] = [
    "framedipv6address",
    "framedipv6prefix",
    "delegatedipv6prefix",
];

/// The address or block asked about: host bits cleared, an IPv4-mapped IPv6 address
/// (`::ffff:100.64.3.7`, what a dual-stack server logs for an IPv4 client) taken as the IPv4
/// address it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target(ClientAddr);

impl Target {
    /// An address (`100.64.3.7`, `2001:db8::1`) or a block (`2001:db8:12::/56`); `None` for
    /// anything else.
    pub fn parse(text: &str) -> Option<Target> {
        if text.trim() != text || text.is_empty() {
            return None;
        }
        let block: ClientAddr = text.parse().ok()?;
        Some(Target(block.unmapped().network()))
    }

    /// The block, host bits cleared.
    pub fn block(&self) -> ClientAddr {
        self.0
    }

    pub fn is_ipv4(&self) -> bool {
        self.0.addr.is_ipv4()
    }

    /// The columns compared: [`IPV4_COLUMNS`] or [`IPV6_COLUMNS`].
    pub fn columns(&self) -> &'static [&'static str] {
        if self.is_ipv4() {
            &IPV4_COLUMNS
        } else {
            &IPV6_COLUMNS
        }
    }

    /// `addr/len`, the `inet` text the SQL binds.
    pub fn cidr_text(&self) -> String {
        self.0.cidr_text()
    }
}

impl std::fmt::Display for Target {
    /// The address alone for a host, else `addr/len`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The stretch of time a session must have been open in: `at` ± the skew window, in whole
/// seconds (a session time is whole seconds, so the second `at` falls in counts in full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `at` − window: the session must not have stopped before.
    pub from: i64,
    /// `at` + window: the session must have started by then.
    pub to: i64,
}

impl Window {
    /// `at` (epoch seconds) widened by `skew` seconds on each side.
    pub fn around(at: i64, skew: i64) -> Window {
        Window {
            from: at.saturating_sub(skew),
            to: at.saturating_add(skew),
        }
    }

    /// Whether a session with these start and stop times was open at some moment of the
    /// window: started by its end, and still open or stopped at or after its start. A session
    /// without a start time is never attributed.
    pub fn holds(&self, start: Option<i64>, stop: Option<i64>) -> bool {
        start.is_some_and(|s| s <= self.to) && stop.is_none_or(|s| s >= self.from)
    }
}

/// An attribution query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributionQuery {
    pub target: Target,
    pub window: Window,
    /// Whose sessions the caller may see.
    pub scope: Scope,
    /// At most this many sessions (the answer says when there were more).
    pub limit: usize,
}

/// Where a row lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// `radacct`: open, or closed and not archived yet.
    Live,
    /// `radacct_archive`.
    Archive,
}

impl Location {
    pub fn as_str(self) -> &'static str {
        match self {
            Location::Live => "live",
            Location::Archive => "archive",
        }
    }

    /// The location named `text` (what the SQL selects as the row's source).
    pub fn parse(text: &str) -> Option<Location> {
        match text {
            "live" => Some(Location::Live),
            "archive" => Some(Location::Archive),
            _ => None,
        }
    }
}

/// A session attribution found: its whole row, where it lives, and the column that holds the
/// address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributed {
    pub row: Row,
    pub location: Location,
    pub matched: &'static str,
}

/// The first of the target's columns whose value overlaps the target (PostgreSQL's `inet &&`:
/// one contains the other), or `None`. A value that is not an address or block (text a tool
/// wrote into a SQLite file) matches nothing.
pub fn matched_column(target: &Target, row: &Row) -> Option<&'static str> {
    target.columns().iter().copied().find(|name| {
        let Some(column) = Columns::All.find(name) else {
            return false;
        };
        let Value::Text(Some(text)) = column.get(row) else {
            return false;
        };
        text.parse::<ClientAddr>()
            .is_ok_and(|held| held.overlaps(&target.block()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Target {
        Target::parse(s).expect(s)
    }

    #[test]
    fn targets_are_addresses_or_blocks() {
        assert_eq!(target("100.64.3.7").to_string(), "100.64.3.7");
        assert_eq!(target("100.64.3.7").cidr_text(), "100.64.3.7/32");
        assert_eq!(target("::ffff:100.64.3.7").to_string(), "100.64.3.7");
        assert_eq!(target("::FFFF:100.64.3.7").columns(), &IPV4_COLUMNS);
        assert_eq!(
            target("2001:db8:12:3456::1/56").to_string(),
            "2001:db8:12:3400::/56"
        );
        assert_eq!(target("2001:DB8::1").columns(), &IPV6_COLUMNS);
        for bad in [
            "",
            " 10.0.0.1",
            "10.0.0.1/33",
            "2001:db8::/129",
            "host.example",
            "10.0.0",
        ] {
            assert_eq!(Target::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn windows_hold_sessions_open_at_some_moment_of_them() {
        let at = Window::around(1_000, 0);
        assert!(at.holds(Some(1_000), Some(1_000)), "start = stop = at");
        assert!(at.holds(Some(900), None), "still open");
        assert!(at.holds(Some(1_000), None), "started at at");
        assert!(at.holds(Some(900), Some(1_000)), "stopped at at");
        assert!(!at.holds(Some(1_001), None), "started after");
        assert!(!at.holds(Some(900), Some(999)), "stopped before");
        assert!(!at.holds(None, None), "no start");
        let skew = Window::around(1_000, 5);
        assert!(skew.holds(Some(1_005), None));
        assert!(skew.holds(Some(900), Some(995)));
        assert!(!skew.holds(Some(1_006), None));
        assert!(!skew.holds(Some(900), Some(994)));
    }

    #[test]
    fn the_matched_column_is_the_first_that_overlaps() {
        let row = Row {
            framedipaddress: Some("100.64.3.7".into()),
            framedipv6address: Some("2001:db8:12:3400::1".into()),
            framedipv6prefix: Some("2001:db8:12:3400::/64".into()),
            delegatedipv6prefix: Some("2001:db8:12:3500::/56".into()),
            ..Row::default()
        };
        let m = |t: &str| matched_column(&target(t), &row);
        assert_eq!(m("100.64.3.7"), Some("framedipaddress"));
        assert_eq!(m("::ffff:100.64.3.7"), Some("framedipaddress"));
        assert_eq!(m("100.64.3.0/24"), Some("framedipaddress"));
        assert_eq!(m("100.64.3.8"), None);
        assert_eq!(m("2001:db8:12:3400::1"), Some("framedipv6address"));
        assert_eq!(m("2001:db8:12:3400::2"), Some("framedipv6prefix"));
        assert_eq!(m("2001:db8:12:3400::/56"), Some("framedipv6address"));
        assert_eq!(m("2001:db8:12:35ff::9"), Some("delegatedipv6prefix"));
        assert_eq!(m("2001:db8:12:3500::/60"), Some("delegatedipv6prefix"));
        assert_eq!(m("2001:db8:12:3600::/56"), None);
        assert_eq!(m("2001:db8::/32"), Some("framedipv6address"));
        let junk = Row {
            framedipaddress: Some("not an address".into()),
            ..Row::default()
        };
        assert_eq!(matched_column(&target("100.64.3.7"), &junk), None);
    }
}
