//! `Row`: one radacct row with every FreeRADIUS 3.2 column, and `Session`: the part of an open
//! row the live index keeps. Times are whole seconds since the Unix epoch (UTC).
//!
//! # The column table
//!
//! The radacct columns are described once, in the `radacct_columns!` invocation below: each
//! column's name, Rust type, storage kind and the lists it belongs to. The macro generates both
//! [`Row`] (one field per column) and [`COLUMNS`] (one [`Column`] per field, in the same order,
//! with accessors into the field), so neither can miss a column of the other; it also checks
//! at compile time that each kind matches its field's type. Every other list is derived from
//! the table: what the stores write, read back and convert ([`Columns`]), what an index entry
//! is built from ([`Columns::Index`]), and the fields of the Sessions API and their order
//! ([`Lists::api`], [`Lists::export`]). A macro rather than a hand-written table because the
//! accessors must name the struct's fields, and a table written beside the struct by hand
//! could drift from it; SQL text stays in `store`, which only walks the table.
//!
//! The table order is the order the stores write and read columns in (their SQL text depends
//! on it); it is FreeRADIUS's column order with `radacctid` first.

use std::net::IpAddr;

use compact_str::CompactString;

use super::ResellerResolver;

/// How a column is stored, for the per-store SQL that converts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    Int,
    /// A timestamp in the table, seconds since the epoch in a [`Row`].
    Time,
    /// `inet` in PostgreSQL: an address (read back with `host()`).
    Addr,
    /// `inet` holding a prefix (read back with `::text`, which keeps the length).
    Prefix,
}

impl ColumnKind {
    /// Whether the column is an integer in a [`Row`] (`Option<i64>`), else text.
    pub const fn is_int(self) -> bool {
        matches!(self, ColumnKind::Int | ColumnKind::Time)
    }
}

/// A column's value in a [`Row`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
}

/// A column's value as read from the database, to store into a [`Row`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedValue {
    Text(Option<String>),
    Int(Option<i64>),
}

/// The lists a column belongs to, besides [`COLUMNS`] (every column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lists {
    /// Written by radacctd: every column but `radacctid`, which the database assigns.
    pub write: bool,
    /// Read into an index entry ([`Session::from_row`]).
    pub index: bool,
    /// The column's position in the Sessions API's session object (its JSON keys, the CSV
    /// columns an export may ask for), when the API shows it.
    pub api: Option<usize>,
    /// The column's position among the export's default columns, when it is one.
    pub export: Option<usize>,
}

impl Lists {
    /// In no list.
    const NONE: Lists = Lists {
        write: false,
        index: false,
        api: None,
        export: None,
    };
    /// A column radacctd writes (and no other list yet).
    const WRITE: Lists = Lists {
        write: true,
        ..Lists::NONE
    };

    const fn index(self) -> Lists {
        Lists {
            index: true,
            ..self
        }
    }

    const fn api(self, position: usize) -> Lists {
        Lists {
            api: Some(position),
            ..self
        }
    }

    const fn export(self, position: usize) -> Lists {
        Lists {
            export: Some(position),
            ..self
        }
    }
}

/// One radacct column: its name, kind, lists, and its field in [`Row`].
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// FreeRADIUS's name, lower-case: the SQL identifier and the [`Row`] field.
    pub name: &'static str,
    pub kind: ColumnKind,
    /// Never NULL in rows radacctd writes (a `String` field rather than an `Option`).
    pub required: bool,
    pub lists: Lists,
    get: for<'r> fn(&'r Row) -> Value<'r>,
    set: fn(&mut Row, OwnedValue),
}

impl Column {
    /// The column's value in `row`.
    pub fn get<'r>(&self, row: &'r Row) -> Value<'r> {
        (self.get)(row)
    }

    /// Stores `value` in `row` (a `NULL` required column becomes empty text). A value of the
    /// other kind is ignored: readers read each column by its kind.
    pub fn set(&self, row: &mut Row, value: OwnedValue) {
        (self.set)(row, value)
    }

    /// Empties the column in `row` (`None`, or empty text for a required column).
    pub fn clear(&self, row: &mut Row) {
        let empty = if self.kind.is_int() {
            OwnedValue::Int(None)
        } else {
            OwnedValue::Text(None)
        };
        self.set(row, empty)
    }
}

/// A subset of [`COLUMNS`], in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// Every column: a whole row.
    All,
    /// The columns radacctd writes ([`Lists::write`]).
    Write,
    /// The columns an index entry is built from ([`Lists::index`]).
    Index,
    /// The columns the Sessions API shows ([`Lists::api`]).
    Api,
}

impl Columns {
    pub fn contains(self, c: &Column) -> bool {
        match self {
            Columns::All => true,
            Columns::Write => c.lists.write,
            Columns::Index => c.lists.index,
            Columns::Api => c.lists.api.is_some(),
        }
    }

    /// The columns of the set, in table order.
    pub fn iter(self) -> impl Iterator<Item = &'static Column> {
        COLUMNS.iter().filter(move |c| self.contains(c))
    }

    /// How many columns the set has.
    pub fn count(self) -> usize {
        self.iter().count()
    }

    /// The column named `name`, if it is in the set.
    pub fn find(self, name: &str) -> Option<&'static Column> {
        self.iter().find(|c| c.name == name)
    }
}

/// The Rust types a column's field can have.
trait Field {
    /// `Option<i64>`: an integer column.
    const INT: bool;
    /// Not an `Option`.
    const REQUIRED: bool;
    fn value(&self) -> Value<'_>;
    fn put(&mut self, v: OwnedValue);
}

// In `put`, a value of the other kind is left out: `radacct_columns!` checks at compile time
// that each column's kind matches its field, and readers read each column by its kind.
impl Field for String {
    const INT: bool = false;
    const REQUIRED: bool = true;
    fn value(&self) -> Value<'_> {
        Value::Text(Some(self))
    }
    fn put(&mut self, v: OwnedValue) {
        if let OwnedValue::Text(t) = v {
            *self = t.unwrap_or_default();
        }
    }
}

impl Field for Option<String> {
    const INT: bool = false;
    const REQUIRED: bool = false;
    fn value(&self) -> Value<'_> {
        Value::Text(self.as_deref())
    }
    fn put(&mut self, v: OwnedValue) {
        if let OwnedValue::Text(t) = v {
            *self = t;
        }
    }
}

impl Field for Option<i64> {
    const INT: bool = true;
    const REQUIRED: bool = false;
    fn value(&self) -> Value<'_> {
        Value::Int(*self)
    }
    fn put(&mut self, v: OwnedValue) {
        if let OwnedValue::Int(n) = v {
            *self = n;
        }
    }
}

/// Generates [`Row`] and [`COLUMNS`] from one list of `name: Type = Kind, lists;`.
macro_rules! radacct_columns {
    ($( $(#[$doc:meta])* $name:ident: $ty:ty = $kind:ident, $lists:expr; )*) => {
        /// A radacct row as radacctd reads and writes it. Column names are FreeRADIUS's,
        /// lower-case. Addresses are kept as text in PostgreSQL's `inet` output form (`host()`
        /// for addresses, the `addr/len` form for prefixes), so both stores round-trip them
        /// unchanged. A row read for a subset of [`Columns`] leaves the others empty.
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct Row {
            $( $(#[$doc])* pub $name: $ty, )*
        }

        /// Every radacct column, in table order (see the module documentation).
        pub static COLUMNS: [Column; [$(stringify!($name)),*].len()] = [
            $( Column {
                name: stringify!($name),
                kind: ColumnKind::$kind,
                required: <$ty as Field>::REQUIRED,
                lists: $lists,
                get: |r| Field::value(&r.$name),
                set: |r, v| Field::put(&mut r.$name, v),
            }, )*
        ];

        $( const _: () = assert!(
            <$ty as Field>::INT == ColumnKind::$kind.is_int(),
            concat!("radacct column ", stringify!($name), ": its kind does not match its type"),
        ); )*
    };
}

radacct_columns! {
    /// `None` until the row has been inserted.
    radacctid: Option<i64> = Int, Lists::NONE.index().api(0).export(0);
    acctsessionid: String = Text, Lists::WRITE.index().api(2);
    acctuniqueid: String = Text, Lists::WRITE.index();
    username: Option<String> = Text, Lists::WRITE.index().api(1).export(1);
    realm: Option<String> = Text, Lists::WRITE;
    nasipaddress: String = Addr, Lists::WRITE.index().api(3).export(2);
    nasportid: Option<String> = Text, Lists::WRITE.index().api(5);
    nasporttype: Option<String> = Text, Lists::WRITE;
    acctstarttime: Option<i64> = Time, Lists::WRITE.index().api(8).export(4);
    acctupdatetime: Option<i64> = Time, Lists::WRITE.index().api(10);
    acctstoptime: Option<i64> = Time, Lists::WRITE.api(9).export(5);
    acctinterval: Option<i64> = Int, Lists::WRITE;
    acctsessiontime: Option<i64> = Int, Lists::WRITE.index().api(13).export(6);
    acctauthentic: Option<String> = Text, Lists::WRITE;
    connectinfo_start: Option<String> = Text, Lists::WRITE;
    connectinfo_stop: Option<String> = Text, Lists::WRITE;
    acctinputoctets: Option<i64> = Int, Lists::WRITE.index().api(11).export(7);
    acctoutputoctets: Option<i64> = Int, Lists::WRITE.index().api(12).export(8);
    calledstationid: Option<String> = Text, Lists::WRITE;
    callingstationid: Option<String> = Text, Lists::WRITE.index().api(7);
    acctterminatecause: Option<String> = Text, Lists::WRITE.api(14).export(9);
    servicetype: Option<String> = Text, Lists::WRITE;
    framedprotocol: Option<String> = Text, Lists::WRITE;
    framedipaddress: Option<String> = Addr, Lists::WRITE.index().api(6).export(3);
    framedipv6address: Option<String> = Addr, Lists::WRITE.index();
    framedipv6prefix: Option<String> = Prefix, Lists::WRITE.index();
    framedinterfaceid: Option<String> = Text, Lists::WRITE;
    delegatedipv6prefix: Option<String> = Prefix, Lists::WRITE.index();
    class: Option<String> = Text, Lists::WRITE;
}

impl Session {
    /// What the index knows of its row, as a row: the index's columns, the others empty.
    pub fn to_row(&self) -> Row {
        Row {
            radacctid: self.radacctid,
            acctsessionid: self.acctsessionid.to_string(),
            acctuniqueid: self.acctuniqueid.to_string(),
            username: Some(self.username.to_string()),
            nasipaddress: self.nasipaddress.to_string(),
            nasportid: self.nasportid.as_deref().map(String::from),
            framedipaddress: self.framedipaddress.as_deref().map(String::from),
            callingstationid: self.callingstationid.as_deref().map(String::from),
            acctstarttime: self.acctstarttime,
            acctupdatetime: self.acctupdatetime,
            acctinputoctets: self.acctinputoctets,
            acctoutputoctets: self.acctoutputoctets,
            acctsessiontime: self.acctsessiontime,
            framedipv6address: self.ipv6().framedipv6address.as_deref().map(String::from),
            framedipv6prefix: self.ipv6().framedipv6prefix.as_deref().map(String::from),
            delegatedipv6prefix: self.ipv6().delegatedipv6prefix.as_deref().map(String::from),
            ..Row::default()
        }
    }

    /// The session's IPv6 columns (all `None` for an IPv4-only session).
    pub fn ipv6(&self) -> &Ipv6Columns {
        static NONE: Ipv6Columns = Ipv6Columns {
            framedipv6address: None,
            framedipv6prefix: None,
            delegatedipv6prefix: None,
        };
        self.ipv6.as_deref().unwrap_or(&NONE)
    }
}

impl Row {
    /// An open row has no stop time.
    pub fn is_open(&self) -> bool {
        self.acctstoptime.is_none()
    }

    /// The row with only the columns of `set` kept, the others emptied.
    pub fn only(mut self, set: Columns) -> Row {
        for c in COLUMNS.iter().filter(|c| !set.contains(c)) {
            c.clear(&mut self);
        }
        self
    }

    /// An open session as the Sessions API shows it: the [`Columns::Api`] columns of the
    /// index entry, as the store reads them for the API (see [`Row::api_view`]).
    pub fn from_session(s: &Session) -> Row {
        s.to_row().only(Columns::Api).api_view()
    }
    /// The row as the Sessions API shows it: an empty user name reads as `None`.
    pub fn api_view(mut self) -> Row {
        self.username = self.username.filter(|u| !u.is_empty());
        self
    }
}

/// A PostgreSQL row version (`xmin`, a 32-bit transaction id), as read with the row and
/// returned by radacctd's own writes. While a row still has the version radacctd last wrote,
/// nobody else changed it. SQLite has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowVersion(u32);

impl RowVersion {
    /// The version from PostgreSQL's text form of `xmin`; `None` when it is not one.
    pub fn parse(text: &str) -> Option<RowVersion> {
        text.parse().ok().map(RowVersion)
    }
}

impl From<u32> for RowVersion {
    fn from(xid: u32) -> Self {
        RowVersion(xid)
    }
}

impl std::fmt::Display for RowVersion {
    /// PostgreSQL's text form (`xmin::text`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The write columns the live index holds exactly (see [`Session`]): an index-fed update (a
/// row the writer rebuilt from the index instead of reading it) sets them from the folded row.
pub const INDEX_HELD: [&str; 6] = [
    "acctstarttime",
    "acctupdatetime",
    "acctsessiontime",
    "acctinputoctets",
    "acctoutputoctets",
    "framedipaddress",
];

/// The write columns outside [`INDEX_HELD`] that folding an Interim-Update, a Stop or a close
/// can set on an open row. An index-fed row starts with them unknown (`None`), or, for the
/// IPv6 columns, which the index holds for `search`, as the index has them; the update sets
/// the ones the row has a value for and keeps the others as they are in the table (a Stop
/// without the IPv6 attributes keeps the stored ones, as it does without Framed-IP-Address).
pub const INDEX_KEPT_UNLESS_SET: [&str; 8] = [
    "acctstoptime",
    "acctinterval",
    "connectinfo_stop",
    "acctterminatecause",
    "framedipv6address",
    "framedipv6prefix",
    "framedinterfaceid",
    "delegatedipv6prefix",
];

/// Text as the index keeps it: up to 24 bytes inline (user names, session ids, addresses, port
/// ids and MACs fit), longer text on the heap. A million open sessions are a million of each.
pub type Text = CompactString;

/// The IPv6 columns of an open session, as its row holds them (PostgreSQL's `inet` text:
/// `host()` for the address, `addr/len` for the prefixes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ipv6Columns {
    pub framedipv6address: Option<Text>,
    pub framedipv6prefix: Option<Text>,
    pub delegatedipv6prefix: Option<Text>,
}

impl Ipv6Columns {
    /// The row's IPv6 columns, `None` when it has none.
    pub fn of(row: &Row) -> Option<Box<Ipv6Columns>> {
        let v6 = Ipv6Columns {
            framedipv6address: row.framedipv6address.as_deref().map(Text::new),
            framedipv6prefix: row.framedipv6prefix.as_deref().map(Text::new),
            delegatedipv6prefix: row.delegatedipv6prefix.as_deref().map(Text::new),
        };
        (v6 != Ipv6Columns::default()).then(|| Box::new(v6))
    }

    /// The three values, in table order.
    pub fn values(&self) -> [Option<&str>; 3] {
        [
            self.framedipv6address.as_deref(),
            self.framedipv6prefix.as_deref(),
            self.delegatedipv6prefix.as_deref(),
        ]
    }
}

/// An open session as the live index holds it: what the Sessions API lists, filters and sorts
/// on, plus the scope key (`reseller_id`). Built from a committed [`Row`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `None` only for sessions that exist solely in the journal (docs/ARCHITECTURE.md#invariants).
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
    /// `framedipv6address`, `framedipv6prefix` and `delegatedipv6prefix` (what `search` matches
    /// besides the IPv4 address); `None` when all three are, which keeps an IPv4-only session
    /// one pointer larger, not three strings.
    pub ipv6: Option<Box<Ipv6Columns>>,
    /// The reseller that owns the subscriber, resolved when the session enters the index.
    pub reseller_id: Option<i64>,
    /// The PostgreSQL row version (`xmin`) that radacctd's own write of this row produced, when
    /// known: while the row still has it, nobody else changed it, so its next write needs no
    /// lookup (the ingest writer's index-fed update). `None`: look the row up first.
    pub row_version: Option<RowVersion>,
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
            ipv6: Ipv6Columns::of(row),
            reseller_id,
            row_version: None,
        }
    }

    /// The index entry for an open row at row version `version`, owned by the reseller that
    /// `resolver` finds for its user.
    pub fn indexed(
        row: &Row,
        resolver: &dyn ResellerResolver,
        version: Option<RowVersion>,
    ) -> Session {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A row with every column set, each to a value of its own.
    fn full_row() -> Row {
        let mut row = Row::default();
        for (i, c) in COLUMNS.iter().enumerate() {
            let v = if c.kind.is_int() {
                OwnedValue::Int(Some(i as i64 + 1))
            } else {
                OwnedValue::Text(Some(format!("{}-{i}", c.name)))
            };
            c.set(&mut row, v);
        }
        row
    }

    #[test]
    fn every_column_reads_back_what_was_set() {
        let row = full_row();
        for (i, c) in COLUMNS.iter().enumerate() {
            let want = format!("{}-{i}", c.name);
            let expected = if c.kind.is_int() {
                Value::Int(Some(i as i64 + 1))
            } else {
                Value::Text(Some(&want))
            };
            assert_eq!(c.get(&row), expected, "{}", c.name);
        }
        let empty = row.only(Columns::Write).only(Columns::Api);
        assert_eq!(
            empty,
            Row {
                acctsessionid: full_row().acctsessionid,
                username: full_row().username,
                nasipaddress: full_row().nasipaddress,
                nasportid: full_row().nasportid,
                acctstarttime: full_row().acctstarttime,
                acctupdatetime: full_row().acctupdatetime,
                acctstoptime: full_row().acctstoptime,
                acctsessiontime: full_row().acctsessiontime,
                acctinputoctets: full_row().acctinputoctets,
                acctoutputoctets: full_row().acctoutputoctets,
                callingstationid: full_row().callingstationid,
                acctterminatecause: full_row().acctterminatecause,
                framedipaddress: full_row().framedipaddress,
                ..Row::default()
            }
        );
    }

    #[test]
    fn an_index_entry_is_built_from_the_index_columns_alone() {
        let row = full_row();
        assert_eq!(
            Session::from_row(&row, Some(1)),
            Session::from_row(&row.clone().only(Columns::Index), Some(1))
        );
    }

    #[test]
    fn an_open_session_shows_the_api_columns_of_its_row() {
        let row = Row {
            acctstoptime: None,
            acctterminatecause: None,
            ..full_row()
        };
        let shown = Row::from_session(&Session::from_row(&row, None));
        assert_eq!(shown, row.only(Columns::Api));
        let unnamed = Row {
            username: Some(String::new()),
            ..Row::default()
        };
        assert_eq!(
            Row::from_session(&Session::from_row(&unnamed, None)).username,
            None
        );
    }

    #[test]
    fn the_write_columns_are_all_but_the_key() {
        assert_eq!(Columns::Write.count(), COLUMNS.len() - 1);
        assert_eq!(Columns::Index.count(), 16);
        assert_eq!(Columns::Api.count(), 14);
        assert!(!COLUMNS[0].lists.write);
        assert_eq!(COLUMNS[0].name, "radacctid");
    }

    #[test]
    fn row_versions_round_trip_through_their_text_form() {
        let v = RowVersion::parse("4294967295").expect("an xid");
        assert_eq!(v.to_string(), "4294967295");
        assert_eq!(RowVersion::parse("-1"), None);
        assert_eq!(RowVersion::parse(""), None);
    }

    #[test]
    fn the_index_fed_columns_are_write_columns() {
        for name in INDEX_HELD.iter().chain(&INDEX_KEPT_UNLESS_SET) {
            assert!(Columns::Write.find(name).is_some(), "{name}");
        }
    }
}
