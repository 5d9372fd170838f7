//! `Row`: one radacct row with every FreeRADIUS 3.2 column, and `Session`: the part of an open
//! row the live index keeps. Times are whole seconds since the Unix epoch (UTC).

use std::net::IpAddr;

use compact_str::CompactString;

use super::ResellerResolver;

/// A radacct row as radacctd reads and writes it. Column names are FreeRADIUS's, lower-case.
/// Addresses are kept as text in PostgreSQL's `inet` output form (`host()` for addresses, the
/// `addr/len` form for prefixes), so both stores round-trip them unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    /// `None` until the row has been inserted.
    pub radacctid: Option<i64>,
    pub acctsessionid: String,
    pub acctuniqueid: String,
    pub username: Option<String>,
    pub realm: Option<String>,
    pub nasipaddress: String,
    pub nasportid: Option<String>,
    pub nasporttype: Option<String>,
    pub acctstarttime: Option<i64>,
    pub acctupdatetime: Option<i64>,
    pub acctstoptime: Option<i64>,
    pub acctinterval: Option<i64>,
    pub acctsessiontime: Option<i64>,
    pub acctauthentic: Option<String>,
    pub connectinfo_start: Option<String>,
    pub connectinfo_stop: Option<String>,
    pub acctinputoctets: Option<i64>,
    pub acctoutputoctets: Option<i64>,
    pub calledstationid: Option<String>,
    pub callingstationid: Option<String>,
    pub acctterminatecause: Option<String>,
    pub servicetype: Option<String>,
    pub framedprotocol: Option<String>,
    pub framedipaddress: Option<String>,
    pub framedipv6address: Option<String>,
    pub framedipv6prefix: Option<String>,
    pub framedinterfaceid: Option<String>,
    pub delegatedipv6prefix: Option<String>,
    pub class: Option<String>,
}

impl Row {
    /// An open row has no stop time.
    pub fn is_open(&self) -> bool {
        self.acctstoptime.is_none()
    }
}

/// Text as the index keeps it: up to 24 bytes inline (user names, session ids, addresses, port
/// ids and MACs fit), longer text on the heap. A million open sessions are a million of each.
pub type Text = CompactString;

/// An open session as the live index holds it: what the Sessions API lists, filters and sorts
/// on, plus the scope key (`reseller_id`). Built from a committed [`Row`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `None` only for sessions that exist solely in the journal (DESIGN §10).
    pub radacctid: Option<i64>,
    pub acctuniqueid: Text,
    pub username: Text,
    pub acctsessionid: Text,
    pub nasipaddress: Text,
    pub nasportid: Option<Text>,
    pub framedipaddress: Option<Text>,
    pub callingstationid: Option<Text>,
    pub acctstarttime: Option<i64>,
    pub acctupdatetime: Option<i64>,
    pub acctinputoctets: Option<i64>,
    pub acctoutputoctets: Option<i64>,
    pub acctsessiontime: Option<i64>,
    /// The reseller that owns the subscriber, resolved when the session enters the index.
    pub reseller_id: Option<i64>,
    /// The PostgreSQL row version (`xmin`) that radacctd's own write of this row produced, when
    /// known: while the row still has it, nobody else changed it, so its next write needs no
    /// lookup (the ingest writer's index-fed update). `None`: look the row up first.
    pub row_version: Option<u32>,
}

impl Session {
    /// The index entry for an open row.
    pub fn from_row(row: &Row, reseller_id: Option<i64>) -> Session {
        Session {
            radacctid: row.radacctid,
            acctuniqueid: Text::new(&row.acctuniqueid),
            username: row.username.as_deref().map(Text::new).unwrap_or_default(),
            acctsessionid: Text::new(&row.acctsessionid),
            nasipaddress: Text::new(&row.nasipaddress),
            nasportid: row.nasportid.as_deref().map(Text::new),
            framedipaddress: row.framedipaddress.as_deref().map(Text::new),
            callingstationid: row.callingstationid.as_deref().map(Text::new),
            acctstarttime: row.acctstarttime,
            acctupdatetime: row.acctupdatetime,
            acctinputoctets: row.acctinputoctets,
            acctoutputoctets: row.acctoutputoctets,
            acctsessiontime: row.acctsessiontime,
            reseller_id,
            row_version: None,
        }
    }

    /// The index entry for an open row at row version `version`, owned by the reseller that
    /// `resolver` finds for its user.
    pub fn indexed(row: &Row, resolver: &dyn ResellerResolver, version: Option<u32>) -> Session {
        let reseller = row
            .username
            .as_deref()
            .and_then(|u| resolver.reseller_of(u));
        Session {
            row_version: version,
            ..Session::from_row(row, reseller)
        }
    }

    /// Whether both hold the same values, whatever their row versions.
    pub fn same_values(&self, other: &Session) -> bool {
        Session {
            row_version: other.row_version,
            ..self.clone()
        } == *other
    }

    /// The NAS address parsed, when it is one (it always is for rows we wrote).
    pub fn nas_ip(&self) -> Option<IpAddr> {
        self.nasipaddress.parse().ok()
    }
}
