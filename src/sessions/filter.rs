//! The Sessions API's matching, sorting and paging rules as pure functions over [`Session`], so
//! that the live index answers exactly what the SQL in `store::query` answers
//! (docs/ARCHITECTURE.md#index): ASCII-only case folding, NULLs last in both orders, ties broken by
//! `radacctid` ascending. No I/O here; the SQL twin of every rule sits next to its name in
//! `store::query`.

use std::cmp::Ordering;
use std::sync::Arc;

use super::index::SessionIndex;
use super::row::Session;
use crate::net::ipv6_text;

/// Which sessions a list or export covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// Open sessions (`acctstoptime IS NULL`): the live index.
    #[default]
    Active,
    /// Closed sessions: the database.
    Closed,
    /// Both: the database.
    All,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "active" => Some(Status::Active),
            "closed" => Some(Status::Closed),
            "all" => Some(Status::All),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Closed => "closed",
            Status::All => "all",
        }
    }
}

/// The columns a list may be sorted by (the contract's allow-list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    AcctStartTime,
    AcctInputOctets,
    AcctOutputOctets,
    AcctSessionTime,
}

impl SortKey {
    pub const ALL: [SortKey; 4] = [
        SortKey::AcctStartTime,
        SortKey::AcctInputOctets,
        SortKey::AcctOutputOctets,
        SortKey::AcctSessionTime,
    ];

    pub fn parse(s: &str) -> Option<SortKey> {
        SortKey::ALL.into_iter().find(|k| k.column() == s)
    }

    /// The radacct column, which is also the query parameter value.
    pub fn column(self) -> &'static str {
        match self {
            SortKey::AcctStartTime => "acctstarttime",
            SortKey::AcctInputOctets => "acctinputoctets",
            SortKey::AcctOutputOctets => "acctoutputoctets",
            SortKey::AcctSessionTime => "acctsessiontime",
        }
    }

    /// The session's value for this key.
    pub fn value(self, s: &Session) -> Option<i64> {
        match self {
            SortKey::AcctStartTime => s.acctstarttime,
            SortKey::AcctInputOctets => s.acctinputoctets,
            SortKey::AcctOutputOctets => s.acctoutputoctets,
            SortKey::AcctSessionTime => s.acctsessiontime,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

impl Order {
    pub fn parse(s: &str) -> Option<Order> {
        match s {
            "asc" => Some(Order::Asc),
            "desc" => Some(Order::Desc),
            _ => None,
        }
    }
}

/// Sort column and direction. NULLs come last in both directions; ties by `radacctid` asc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sort {
    pub key: SortKey,
    pub order: Order,
}

impl Sort {
    /// Compares two sessions by `(sort value, radacctid)`.
    pub fn compare(self, a: (Option<i64>, Option<i64>), b: (Option<i64>, Option<i64>)) -> Ordering {
        let primary = match (a.0, b.0) {
            (Some(x), Some(y)) => match self.order {
                Order::Asc => x.cmp(&y),
                Order::Desc => y.cmp(&x),
            },
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        primary.then_with(|| nulls_last(a.1, b.1))
    }
}

fn nulls_last(a: Option<i64>, b: Option<i64>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// A `search` term: a case-insensitive substring of `username`, a prefix of `framedipaddress`,
/// or — when the term is a MAC fragment (hex digits once separators are removed) — a substring
/// of `callingstationid` once MAC separators are removed from both sides; or — when the term
/// has a `:` — a prefix of `framedipv6address`, `framedipv6prefix` or `delegatedipv6prefix`
/// (their `inet` text, lower case), a whole address or `addr/len` being compared in its
/// canonical form, PostgreSQL's `inet` text (`2001:DB8:0::1` as `2001:db8::1`, `::a00:1` as
/// `::10.0.0.1`: `net::ipv6_text`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    text: String,
    mac: String,
    ipv6: String,
}

impl Search {
    /// `None` for an empty term (no filter).
    pub fn new(raw: &str) -> Option<Search> {
        if raw.is_empty() {
            return None;
        }
        let mac = normalise_mac(raw);
        Some(Search {
            text: raw.to_ascii_lowercase(),
            mac: if mac.bytes().all(|b| b.is_ascii_hexdigit()) {
                mac
            } else {
                String::new()
            },
            ipv6: ipv6_term(raw),
        })
    }

    /// What the IPv6 columns must start with (ASCII case folded): the canonical form
    /// (`net::ipv6_text`) of a whole address or `addr/len`, else the term lower-cased; empty (the IPv6 branch matches
    /// nothing) when the term has no `:`, which every IPv6 text has within its first five
    /// characters.
    pub fn ipv6(&self) -> &str {
        &self.ipv6
    }

    /// Whether one of the IPv6 columns (`framedipv6address`, `framedipv6prefix`,
    /// `delegatedipv6prefix`) starts with [`Search::ipv6`].
    pub fn matches_ipv6(&self, values: [Option<&str>; 3]) -> bool {
        !self.ipv6.is_empty()
            && values
                .into_iter()
                .flatten()
                .any(|v| starts_with_ascii_ci(v, &self.ipv6))
    }

    /// The term, ASCII-lower-cased.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The term without MAC separators, ASCII-lower-cased; empty when nothing is left or the
    /// term is not a MAC fragment, in which case the `callingstationid` branch matches nothing.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    pub fn matches(
        &self,
        username: Option<&str>,
        framedipaddress: Option<&str>,
        callingstationid: Option<&str>,
    ) -> bool {
        username.is_some_and(|u| contains_ascii_ci(u, &self.text))
            || framedipaddress.is_some_and(|f| starts_with_ascii_ci(f, &self.text))
            || (!self.mac.is_empty()
                && callingstationid.is_some_and(|c| mac_contains(c, &self.mac)))
    }
}

/// The IPv6 part of a search term (see [`Search::ipv6`]).
fn ipv6_term(raw: &str) -> String {
    if !raw.contains(':') {
        return String::new();
    }
    if let Ok(a) = raw.parse::<std::net::Ipv6Addr>() {
        return ipv6_text(a);
    }
    // The length as PostgreSQL writes it: no sign, no leading zero.
    if let Some((a, len_text)) = raw.split_once('/')
        && let (Ok(a), Ok(len)) = (a.parse::<std::net::Ipv6Addr>(), len_text.parse::<u8>())
        && len <= 128
        && len.to_string() == len_text
    {
        return format!("{}/{len}", ipv6_text(a));
    }
    raw.to_ascii_lowercase()
}

/// Whether `hay` starts with `needle` (already ASCII-lower-case), folding ASCII letters only.
fn starts_with_ascii_ci(hay: &str, needle: &str) -> bool {
    hay.len() >= needle.len()
        && hay.as_bytes()[..needle.len()].eq_ignore_ascii_case(needle.as_bytes())
}

/// MAC separators `:`, `-` and `.` removed, ASCII letters lower-cased: `AA:BB:CC:DD:EE:01`,
/// `aa-bb-cc-dd-ee-01` and `aabb.ccdd.ee01` all become `aabbccddee01`.
pub fn normalise_mac(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether `mac` (normalised) occurs in `hay` once `hay` is normalised, without allocating for
/// the usual short values.
fn mac_contains(hay: &str, mac: &str) -> bool {
    let mut buf = [0u8; 64];
    let mut n = 0;
    for b in hay.bytes().filter(|b| !matches!(b, b':' | b'-' | b'.')) {
        if n == buf.len() {
            return normalise_mac(hay).contains(mac);
        }
        buf[n] = b.to_ascii_lowercase();
        n += 1;
    }
    contains_ascii_ci_bytes(&buf[..n], mac.as_bytes())
}

fn contains_ascii_ci_bytes(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let Some(last_start) = hay.len().checked_sub(needle.len()) else {
        return false;
    };
    // Candidates are the positions of the first byte in either case (memchr's SIMD scan);
    // only those are compared in full.
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let mut from = 0;
    while let Some(p) = memchr::memchr2(lower, upper, &hay[from..=last_start]) {
        let at = from + p;
        if hay[at + 1..at + needle.len()].eq_ignore_ascii_case(rest) {
            return true;
        }
        from = at + 1;
    }
    false
}

/// Whether `needle` (already ASCII-lower-case) occurs in `hay`, folding ASCII letters only.
/// Byte windows are enough: UTF-8 never matches in the middle of a character.
fn contains_ascii_ci(hay: &str, needle: &str) -> bool {
    contains_ascii_ci_bytes(hay.as_bytes(), needle.as_bytes())
}

/// Whose sessions a caller sees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// Everything (admin, or `sessions.view_all`).
    #[default]
    All,
    /// Sessions whose username belongs to a subscriber of one of these resellers (sorted,
    /// without duplicates): a reseller's subtree.
    Resellers(Arc<[i64]>),
}

impl Scope {
    /// A scope over these resellers (sorted and deduplicated here).
    pub fn resellers(mut ids: Vec<i64>) -> Scope {
        ids.sort_unstable();
        ids.dedup();
        Scope::Resellers(ids.into())
    }

    pub fn contains(&self, reseller_id: Option<i64>) -> bool {
        match self {
            Scope::All => true,
            Scope::Resellers(ids) => reseller_id.is_some_and(|r| ids.binary_search(&r).is_ok()),
        }
    }
}

/// The `nas_id` filter, resolved against the `nas` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NasMatch {
    /// Sessions whose `nasipaddress` is this address (the `nas` row's `nasname`).
    Address(String),
    /// The id names no `nas` row with an address: nothing matches.
    Nothing,
}

/// Everything a list, export or count filters on, except the open/closed status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionFilter {
    pub search: Option<Search>,
    pub nas: Option<NasMatch>,
    /// `acctstarttime >= from` (epoch seconds).
    pub from: Option<i64>,
    /// `acctstarttime <= to` (epoch seconds).
    pub to: Option<i64>,
    pub scope: Scope,
}

impl SessionFilter {
    /// Whether an open session passes (scope by its resolved `reseller_id`).
    pub fn matches(&self, s: &Session) -> bool {
        if !self.scope.contains(s.reseller_id) {
            return false;
        }
        match &self.nas {
            Some(NasMatch::Nothing) => return false,
            Some(NasMatch::Address(a)) if *a != s.nasipaddress => return false,
            _ => {}
        }
        if let Some(from) = self.from
            && s.acctstarttime.is_none_or(|t| t < from)
        {
            return false;
        }
        if let Some(to) = self.to
            && s.acctstarttime.is_none_or(|t| t > to)
        {
            return false;
        }
        match &self.search {
            Some(search) => {
                search.matches(
                    Some(s.username.as_str()).filter(|u| !u.is_empty()),
                    s.framedipaddress.as_deref(),
                    s.callingstationid.as_deref(),
                ) || search.matches_ipv6(s.ipv6().values())
            }
            None => true,
        }
    }
}

/// A 1-based page of `limit` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u64,
    pub limit: u64,
}

impl Page {
    /// Rows before this page (saturating: a page past any real data is simply empty).
    pub fn offset(self) -> u64 {
        self.page.saturating_sub(1).saturating_mul(self.limit)
    }
}

/// Pages ending at most this far into the matches are picked with a bounded heap during the
/// scan (memory and work in the page's depth, not in the number of matches); deeper pages copy
/// every match's sort key and select.
const TOP_K_MAX: u64 = 10_000;

/// A match's place in the order: its sort value and `radacctid`, and its key when it has no
/// `radacctid` (journal-only sessions cannot be found by id).
struct Ranked {
    key: Option<i64>,
    id: Option<i64>,
    uid: Option<String>,
    sort: Sort,
}

impl Ranked {
    fn new(s: &Session, sort: Sort) -> Ranked {
        Ranked {
            key: sort.key.value(s),
            id: s.radacctid,
            uid: s.radacctid.is_none().then(|| s.acctuniqueid.to_string()),
            sort,
        }
    }

    fn cmp_key(&self, key: Option<i64>, id: Option<i64>) -> Ordering {
        self.sort.compare((self.key, self.id), (key, id))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_key(other.key, other.id)
            .then_with(|| self.uid.cmp(&other.uid))
    }
}

/// One page of open sessions from the index and the number of matches. Only the sort keys of
/// the matches are kept during the scan; the page's sessions are fetched afterwards (one that
/// closed in between is left out of the page).
pub fn select_page(
    index: &SessionIndex,
    filter: &SessionFilter,
    sort: Sort,
    page: Page,
) -> (Vec<Session>, u64) {
    let offset = page.offset();
    let depth = offset.saturating_add(page.limit);
    let (window, total) = if depth <= TOP_K_MAX {
        top_k(index, filter, sort, depth as usize, offset as usize)
    } else {
        select_all(index, filter, sort, page)
    };
    let sessions = window
        .iter()
        .filter_map(|e| match (e.id, &e.uid) {
            (Some(id), _) => index.get_by_id(id),
            (None, Some(uid)) => index.get(uid),
            (None, None) => None,
        })
        .collect();
    (sessions, total)
}

/// The first `depth` matches in order, from a max-heap of the best so far; returns the ones
/// from `offset` on and the number of matches.
fn top_k(
    index: &SessionIndex,
    filter: &SessionFilter,
    sort: Sort,
    depth: usize,
    offset: usize,
) -> (Vec<Ranked>, u64) {
    let mut heap: std::collections::BinaryHeap<Ranked> =
        std::collections::BinaryHeap::with_capacity(depth.min(1024) + 1);
    let mut total = 0u64;
    index.for_each(|s| {
        if !filter.matches(s) {
            return;
        }
        total += 1;
        if depth == 0 {
            return;
        }
        if heap.len() < depth {
            heap.push(Ranked::new(s, sort));
            return;
        }
        if let Some(mut worst) = heap.peek_mut() {
            let better = match worst.cmp_key(sort.key.value(s), s.radacctid) {
                Ordering::Greater => true,
                // Equal (sort value, radacctid) only among journal-only sessions: by key.
                Ordering::Equal => {
                    s.radacctid.is_none() && worst.uid.as_deref() > Some(&*s.acctuniqueid)
                }
                Ordering::Less => false,
            };
            if better {
                *worst = Ranked::new(s, sort);
            }
        }
    });
    let mut sorted = heap.into_sorted_vec();
    let window = sorted.split_off(offset.min(sorted.len()));
    (window, total)
}

/// The page by copying every match's sort key and selecting (deep pages).
fn select_all(
    index: &SessionIndex,
    filter: &SessionFilter,
    sort: Sort,
    page: Page,
) -> (Vec<Ranked>, u64) {
    let mut entries = Vec::new();
    index.for_each(|s| {
        if filter.matches(s) {
            entries.push(Ranked::new(s, sort));
        }
    });
    let total = entries.len() as u64;
    let offset = page.offset();
    if offset >= total {
        return (Vec::new(), total);
    }
    let offset = offset as usize;
    let end = (offset as u64).saturating_add(page.limit).min(total) as usize;
    if end < entries.len() {
        entries.select_nth_unstable(end);
    }
    entries.truncate(end);
    if offset > 0 {
        entries.select_nth_unstable(offset);
    }
    let mut window = entries.split_off(offset);
    window.sort_unstable();
    (window, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: i64, user: &str, start: Option<i64>, input: Option<i64>) -> Session {
        Session {
            radacctid: Some(id),
            acctuniqueid: format!("k{id}").into(),
            username: user.into(),
            acctsessionid: "s".into(),
            nasipaddress: "192.0.2.1".into(),
            nasportid: None,
            framedipaddress: Some(format!("10.0.0.{id}").into()),
            callingstationid: Some("AA:BB:CC:DD:EE:01".into()),
            acctstarttime: start,
            acctupdatetime: start,
            acctinputoctets: input,
            acctoutputoctets: None,
            acctsessiontime: None,
            ipv6: None,
            reseller_id: Some(id % 3),
            row_version: None,
        }
    }

    #[test]
    fn search_folds_ascii_only_and_normalises_macs() {
        let s = Search::new("USER").expect("term");
        assert!(s.matches(Some("a-user-b"), None, None));
        assert!(!Search::new("É").expect("t").matches(Some("é"), None, None));
        assert!(
            Search::new("10.0.")
                .expect("t")
                .matches(None, Some("10.0.0.1"), None)
        );
        assert!(
            !Search::new("0.0.1")
                .expect("t")
                .matches(None, Some("10.0.0.1"), None)
        );
        for term in [
            "aa-bb-cc-dd-ee-01",
            "aabb.ccdd.ee01",
            "AA:BB:CC:DD:EE:01",
            "ee:01",
        ] {
            let s = Search::new(term).expect("t");
            assert!(s.matches(None, None, Some("aa:bb:cc:dd:ee:01")), "{term}");
        }
        // Not hex: the MAC branch is off; long values are still normalised.
        assert!(
            !Search::new("x:y")
                .expect("t")
                .matches(None, None, Some("x:y"))
        );
        let long = format!("{}:01", "ab:".repeat(40));
        assert!(
            Search::new("AB-01")
                .expect("t")
                .matches(None, None, Some(&long))
        );
        // Only separators left: the MAC branch matches nothing.
        assert!(
            !Search::new("::")
                .expect("t")
                .matches(None, None, Some("aa:bb"))
        );
        assert_eq!(Search::new(""), None);
    }

    #[test]
    fn search_matches_ipv6_columns_by_canonical_prefix() {
        let v6 = [
            Some("2001:db8::1"),
            Some("2001:db8:12:3400::/56"),
            Some("2a02:1:2::/48"),
        ];
        for term in [
            "2001:DB8::1",
            "2001:0db8:0000::1",
            "2001:db8:",
            "2001:db8:12:3400::/56",
            "2001:db8:0012:3400:0::/56",
            "2A02:",
        ] {
            assert!(Search::new(term).expect("t").matches_ipv6(v6), "{term}");
        }
        // An IPv4-compatible address, in any of its forms, as PostgreSQL writes it.
        let compatible = [Some("::10.0.0.1"), None, None];
        for term in ["::a00:1", "0:0:0:0:0:0:A00:1", "::10.0.0.1", "::10.0"] {
            assert!(
                Search::new(term).expect("t").matches_ipv6(compatible),
                "{term}"
            );
        }
        for term in [
            "2001",
            "2001:db8:12:3400::5",
            "2001:db8:12:3400::/64",
            "2a02:1:3",
        ] {
            assert!(!Search::new(term).expect("t").matches_ipv6(v6), "{term}");
        }
        assert_eq!(
            Search::new("2001:db8::/+56").expect("t").ipv6(),
            "2001:db8::/+56"
        );
        assert_eq!(Search::new("bob").expect("t").ipv6(), "");
        assert!(!Search::new("2001:").expect("t").matches_ipv6([None; 3]));
    }

    #[test]
    fn nulls_come_last_in_both_orders_and_ties_go_by_id() {
        let mut v = vec![
            (None, Some(1)),
            (Some(5), Some(3)),
            (Some(5), Some(2)),
            (Some(9), Some(4)),
        ];
        let asc = Sort {
            key: SortKey::AcctStartTime,
            order: Order::Asc,
        };
        v.sort_by(|a, b| asc.compare(*a, *b));
        assert_eq!(
            v,
            vec![
                (Some(5), Some(2)),
                (Some(5), Some(3)),
                (Some(9), Some(4)),
                (None, Some(1))
            ]
        );
        let desc = Sort {
            order: Order::Desc,
            ..asc
        };
        v.sort_by(|a, b| desc.compare(*a, *b));
        assert_eq!(
            v,
            vec![
                (Some(9), Some(4)),
                (Some(5), Some(2)),
                (Some(5), Some(3)),
                (None, Some(1))
            ]
        );
    }

    #[test]
    fn pages_come_out_in_order_with_the_total() {
        let index = SessionIndex::new();
        for id in 1..=10 {
            let start = if id == 4 { None } else { Some(100 + (id % 4)) };
            index.upsert(session(id, &format!("u{id}"), start, Some(id)));
        }
        let sort = Sort {
            key: SortKey::AcctStartTime,
            order: Order::Asc,
        };
        let all: Vec<i64> = (1..=4)
            .flat_map(|p| {
                let (s, total) = select_page(
                    &index,
                    &SessionFilter::default(),
                    sort,
                    Page { page: p, limit: 3 },
                );
                assert_eq!(total, 10);
                s.into_iter()
                    .filter_map(|s| s.radacctid)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(all, vec![8, 1, 5, 9, 2, 6, 10, 3, 7, 4]);
        let (past, total) = select_page(
            &index,
            &SessionFilter::default(),
            sort,
            Page { page: 5, limit: 3 },
        );
        assert!(past.is_empty());
        assert_eq!(total, 10);
    }

    #[test]
    fn heap_and_full_selection_give_the_same_pages() {
        let index = SessionIndex::new();
        for id in 1..=300i64 {
            // Many ties and NULLs; every seventh session is journal-only (no radacctid).
            let input = (id % 11 != 0).then_some((id * 37) % 23);
            let mut s = session(id, &format!("u{id}"), Some(100 + id % 5), input);
            if id % 7 == 0 {
                s.radacctid = None;
            }
            index.upsert(s);
        }
        let ids = |v: Vec<Ranked>| -> Vec<(Option<i64>, Option<String>)> {
            v.into_iter().map(|r| (r.id, r.uid)).collect()
        };
        let filter = SessionFilter::default();
        for key in SortKey::ALL {
            for order in [Order::Asc, Order::Desc] {
                let sort = Sort { key, order };
                for limit in [1u64, 7, 50, 500] {
                    for p in [1u64, 2, 3, 5, 40, 301] {
                        let page = Page { page: p, limit };
                        let depth = page.offset().saturating_add(limit) as usize;
                        let (heap, t1) =
                            top_k(&index, &filter, sort, depth, page.offset() as usize);
                        let (full, t2) = select_all(&index, &filter, sort, page);
                        assert_eq!(t1, 300);
                        assert_eq!(t2, 300);
                        assert_eq!(ids(heap), ids(full), "{sort:?} {page:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn filter_applies_scope_nas_and_time_window() {
        let s = session(4, "bob", Some(100), None);
        let mut f = SessionFilter {
            scope: Scope::resellers(vec![2, 1, 1]),
            ..SessionFilter::default()
        };
        assert!(f.matches(&s));
        f.scope = Scope::resellers(vec![0]);
        assert!(!f.matches(&s));
        f.scope = Scope::All;
        f.from = Some(100);
        f.to = Some(100);
        assert!(f.matches(&s));
        f.to = Some(99);
        assert!(!f.matches(&s));
        f.to = None;
        f.nas = Some(NasMatch::Address("192.0.2.1".into()));
        assert!(f.matches(&s));
        f.nas = Some(NasMatch::Nothing);
        assert!(!f.matches(&s));
    }
}
