//! The comparison of a router's `/ppp/active` table with the index's open sessions of that NAS
//! (docs/ARCHITECTURE.md#router-reconciliation): pure, no I/O. It decides what is a ghost (open
//! here, absent on the router), a zombie (on the router, not open here) and a mismatch (the same
//! session with another framed IP or MAC), and a ghost's stop time. It never closes anything.
//!
//! Matching is by session id, exactly: the router's `session-id` (`0x81A00007`) is the
//! Acct-Session-Id it sent (`81a00007`) with `0x` in front, so both are compared without the
//! prefix and with ASCII case folded (docs/reference/routeros-api.md §8). A router entry without
//! a `session-id` falls back to its user name, one entry for one open session. An entry that has a
//! session id is never matched by name: a user's second, live login must not hide a ghost of
//! his first.
//!
//! The race between the print and the index: a session is only a ghost candidate if it was
//! already open here before the print was sent ([`Before`]); one opened after it (its Start
//! came while the router was answering) is left for the next run. Likewise a router entry whose
//! session was open here before the print (its Stop came meanwhile) or that is younger than the
//! zombie grace (its Start may still be on its way) is no zombie.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::sessions::Session;

/// The most findings of each kind kept for the API; counts are always complete.
pub const MAX_LISTED: usize = 100;

/// A session id in the form both sides are compared in: without a `0x` prefix, ASCII
/// lower-case.
pub fn normalize_session_id(id: &str) -> String {
    let id = id.trim();
    let id = id
        .strip_prefix("0x")
        .or_else(|| id.strip_prefix("0X"))
        .unwrap_or(id);
    id.to_ascii_lowercase()
}

/// A MAC address in any notation (`AA:BB:…`, `aa-bb-…`, `aabb.ccdd.eeff`) as 12 lower-case hex
/// digits; other text (a PPTP caller's IP address) as itself, trimmed and lower-cased.
pub fn normalize_mac(mac: &str) -> String {
    let hex: String = mac
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let separators_only = mac
        .chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '-' | '.'));
    if hex.len() == 12 && separators_only {
        hex
    } else {
        mac.trim().to_ascii_lowercase()
    }
}

/// A RouterOS duration (`3w4d12h23m12s`, `51s`, `1h`, or `hh:mm:ss`) in seconds.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.contains(':') {
        let mut secs = 0u64;
        for part in text.split(':') {
            secs = secs.checked_mul(60)?.checked_add(part.parse().ok()?)?;
        }
        return Some(secs);
    }
    let mut total = 0u64;
    let mut number = String::new();
    let mut any = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'w' => 604_800,
            'd' => 86_400,
            'h' => 3_600,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0
            }
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        any = true;
    }
    if !number.is_empty() {
        return None;
    }
    any.then_some(total)
}

/// A ghost's stop time: its last evidence of life (the last interim, else the start), never
/// later than the moment the router answered without it. `now − (time since the last interim)`
/// is the last interim; the router's answer bounds it when the NAS's clock runs ahead of ours.
pub fn ghost_stop_time(last_seen: i64, answered_at: i64) -> i64 {
    last_seen.min(answered_at)
}

/// One `/ppp/active` entry as the comparison needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterEntry {
    /// [`normalize_session_id`] of the `session-id` property.
    pub session_id: Option<String>,
    pub name: Option<String>,
    pub address: Option<String>,
    pub caller_id: Option<String>,
    /// Seconds the session has been up, when the router said.
    pub uptime: Option<u64>,
}

/// A router's table as it streams in: its entries, and lookups by session id and, for
/// entries without one, by name.
#[derive(Debug, Default)]
pub struct RouterTable {
    entries: Vec<RouterEntry>,
    by_id: HashMap<String, u32>,
    by_name_without_id: HashMap<String, Vec<u32>>,
}

impl RouterTable {
    /// Adds one entry.
    pub fn push(&mut self, entry: RouterEntry) {
        let at = self.entries.len() as u32;
        match (&entry.session_id, &entry.name) {
            (Some(id), _) => {
                self.by_id.insert(id.clone(), at);
            }
            (None, Some(name)) => self
                .by_name_without_id
                .entry(name.clone())
                .or_default()
                .push(at),
            (None, None) => {}
        }
        self.entries.push(entry);
    }

    /// Entries received.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the router has no session at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What was open here on the NAS before the router was asked: the keys of its sessions and
/// their session ids.
#[derive(Debug, Default)]
pub struct Before {
    keys: HashSet<String>,
    session_ids: HashSet<String>,
}

impl Before {
    /// Notes one session open before the print.
    pub fn add(&mut self, s: &Session) {
        self.keys.insert(s.acctuniqueid.to_string());
        self.session_ids
            .insert(normalize_session_id(&s.acctsessionid));
    }

    /// Sessions noted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none was open.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A session open here that the router does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ghost {
    pub radacctid: i64,
    pub acctuniqueid: String,
    pub username: String,
    pub acctsessionid: String,
    pub framedipaddress: Option<String>,
    /// The row's last update, else its start (epoch seconds).
    pub last_seen: Option<i64>,
    /// The stop time it is closed with ([`ghost_stop_time`]).
    pub stop_time: i64,
}

/// A router session with no open row here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Zombie {
    pub name: Option<String>,
    /// As the router prints it (`0x…`) would be lost; this is the normalized id.
    pub session_id: Option<String>,
    pub address: Option<String>,
    pub caller_id: Option<String>,
    pub uptime_secs: Option<u64>,
}

/// One differing value: ours (the row) and the router's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub ours: String,
    pub router: String,
}

/// The same session, with another framed IP or MAC on the router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub radacctid: Option<i64>,
    pub acctuniqueid: String,
    pub username: String,
    pub acctsessionid: String,
    pub framed_ip: Option<Difference>,
    pub mac: Option<Difference>,
}

/// The outcome of one comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    pub ghosts: Vec<Ghost>,
    pub zombies: Vec<Zombie>,
    /// Zombies found, when more than [`MAX_LISTED`] (the list keeps the first).
    pub zombie_count: u64,
    pub mismatches: Vec<Mismatch>,
    /// Mismatches found (the list keeps the first [`MAX_LISTED`]).
    pub mismatch_count: u64,
    /// Open sessions here that the router has.
    pub matched: u64,
    /// Open sessions here when compared.
    pub open: u64,
    /// Open sessions here, absent on the router, but opened after the print was sent (or
    /// known only from the journal): left for the next run.
    pub too_new: u64,
}

/// How the comparison is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// When the router's answer was complete (epoch seconds): a ghost's stop time is never
    /// later.
    pub answered_at: i64,
    /// A router session up for less than this is not a zombie yet (its Start may be on its
    /// way).
    pub zombie_grace_secs: u64,
}

/// Compares the router's table with the sessions `sessions` visits (the index's open sessions
/// of that NAS now), given what was open before the print.
pub fn compare(
    router: &RouterTable,
    before: &Before,
    rules: Rules,
    sessions: impl FnOnce(&mut dyn FnMut(&Session)),
) -> Findings {
    let mut matched = vec![false; router.entries.len()];
    let mut name_cursor: HashMap<&str, usize> = HashMap::new();
    let mut out = Findings::default();
    sessions(&mut |s: &Session| {
        out.open += 1;
        let id = normalize_session_id(&s.acctsessionid);
        let at = match router.by_id.get(&id) {
            Some(&at) if !matched[at as usize] => Some(at as usize),
            _ => by_name(router, &matched, &mut name_cursor, &s.username),
        };
        match at {
            Some(at) => {
                matched[at] = true;
                out.matched += 1;
                if let Some(m) = mismatch(s, &router.entries[at]) {
                    out.mismatch_count += 1;
                    if out.mismatches.len() < MAX_LISTED {
                        out.mismatches.push(m);
                    }
                }
            }
            None => match s.radacctid {
                Some(radacctid) if before.keys.contains(s.acctuniqueid.as_str()) => {
                    out.ghosts.push(ghost(s, radacctid, rules.answered_at))
                }
                _ => out.too_new += 1,
            },
        }
    });
    for (entry, _) in router.entries.iter().zip(&matched).filter(|(_, m)| !**m) {
        if is_zombie(entry, before, rules) {
            out.zombie_count += 1;
            if out.zombies.len() < MAX_LISTED {
                out.zombies.push(zombie(entry));
            }
        }
    }
    out
}

/// The next unmatched entry without a session id that carries this user name.
fn by_name<'r>(
    router: &'r RouterTable,
    matched: &[bool],
    cursor: &mut HashMap<&'r str, usize>,
    username: &str,
) -> Option<usize> {
    let (key, list) = router.by_name_without_id.get_key_value(username)?;
    let next = cursor.entry(key.as_str()).or_insert(0);
    while let Some(&at) = list.get(*next) {
        *next += 1;
        if !matched[at as usize] {
            return Some(at as usize);
        }
    }
    None
}

fn is_zombie(entry: &RouterEntry, before: &Before, rules: Rules) -> bool {
    let was_open_here = entry
        .session_id
        .as_ref()
        .is_some_and(|id| before.session_ids.contains(id));
    let young = entry.uptime.is_none_or(|u| u < rules.zombie_grace_secs);
    !was_open_here && !young
}

fn ghost(s: &Session, radacctid: i64, answered_at: i64) -> Ghost {
    let last_seen = s.acctupdatetime.or(s.acctstarttime);
    Ghost {
        radacctid,
        acctuniqueid: s.acctuniqueid.to_string(),
        username: s.username.to_string(),
        acctsessionid: s.acctsessionid.to_string(),
        framedipaddress: s.framedipaddress.as_ref().map(ToString::to_string),
        last_seen,
        stop_time: ghost_stop_time(last_seen.unwrap_or(answered_at), answered_at),
    }
}

fn zombie(entry: &RouterEntry) -> Zombie {
    Zombie {
        name: entry.name.clone(),
        session_id: entry.session_id.clone(),
        address: entry.address.clone(),
        caller_id: entry.caller_id.clone(),
        uptime_secs: entry.uptime,
    }
}

/// The framed IP and MAC differences, when both sides have a value.
fn mismatch(s: &Session, entry: &RouterEntry) -> Option<Mismatch> {
    let framed_ip = match (s.framedipaddress.as_deref(), entry.address.as_deref()) {
        (Some(ours), Some(router)) if !same_ip(ours, router) => Some(Difference {
            ours: ours.to_owned(),
            router: router.to_owned(),
        }),
        _ => None,
    };
    let mac = match (s.callingstationid.as_deref(), entry.caller_id.as_deref()) {
        (Some(ours), Some(router))
            if !ours.is_empty() && normalize_mac(ours) != normalize_mac(router) =>
        {
            Some(Difference {
                ours: ours.to_owned(),
                router: router.to_owned(),
            })
        }
        _ => None,
    };
    (framed_ip.is_some() || mac.is_some()).then(|| Mismatch {
        radacctid: s.radacctid,
        acctuniqueid: s.acctuniqueid.to_string(),
        username: s.username.to_string(),
        acctsessionid: s.acctsessionid.to_string(),
        framed_ip,
        mac,
    })
}

fn same_ip(a: &str, b: &str) -> bool {
    match (
        a.trim().parse::<std::net::IpAddr>(),
        b.trim().parse::<std::net::IpAddr>(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.trim() == b.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u32, id: &str) -> Session {
        Session {
            radacctid: Some(i64::from(n)),
            acctuniqueid: format!("key{n}").into(),
            username: format!("user{n}").into(),
            acctsessionid: id.into(),
            nasipaddress: "192.0.2.1".into(),
            framedipaddress: Some(format!("10.0.0.{n}").into()),
            callingstationid: Some(format!("AA:BB:CC:DD:EE:{n:02X}").into()),
            nasportid: None,
            acctstarttime: Some(1_000),
            acctupdatetime: Some(1_300),
            acctinputoctets: None,
            acctoutputoctets: None,
            acctsessiontime: None,
            ipv6: None,
            reseller_id: None,
            row_version: None,
        }
    }

    fn entry(n: u32, id: Option<&str>) -> RouterEntry {
        RouterEntry {
            session_id: id.map(normalize_session_id),
            name: Some(format!("user{n}")),
            address: Some(format!("10.0.0.{n}")),
            caller_id: Some(format!("aa-bb-cc-dd-ee-{n:02x}")),
            uptime: Some(3_600),
        }
    }

    const RULES: Rules = Rules {
        answered_at: 2_000,
        zombie_grace_secs: 120,
    };

    fn run(router: &[RouterEntry], before: &[Session], now: &[Session]) -> Findings {
        let mut table = RouterTable::default();
        router.iter().cloned().for_each(|e| table.push(e));
        let mut b = Before::default();
        before.iter().for_each(|s| b.add(s));
        compare(&table, &b, RULES, |f| now.iter().for_each(f))
    }

    #[test]
    fn session_ids_match_without_the_prefix_and_case() {
        assert_eq!(normalize_session_id("0x81A00007"), "81a00007");
        assert_eq!(normalize_session_id("81a00007"), "81a00007");
        assert_eq!(normalize_session_id("0X81a00007"), "81a00007");
        let s = session(7, "81a00007");
        let f = run(
            &[entry(7, Some("0x81A00007"))],
            std::slice::from_ref(&s),
            std::slice::from_ref(&s),
        );
        assert_eq!((f.matched, f.ghosts.len(), f.zombie_count), (1, 0, 0));
    }

    #[test]
    fn absent_on_the_router_is_a_ghost_stopped_at_its_last_update() {
        let (a, b) = (session(1, "81a00001"), session(2, "81a00002"));
        let f = run(
            &[entry(1, Some("0x81A00001"))],
            &[a.clone(), b.clone()],
            &[a, b],
        );
        assert_eq!(f.ghosts.len(), 1);
        assert_eq!(f.ghosts[0].acctuniqueid, "key2");
        assert_eq!(f.ghosts[0].stop_time, 1_300, "the last interim");
        assert_eq!(f.ghosts[0].last_seen, Some(1_300));
    }

    #[test]
    fn stop_time_is_never_after_the_answer() {
        assert_eq!(ghost_stop_time(1_300, 2_000), 1_300);
        assert_eq!(ghost_stop_time(2_500, 2_000), 2_000, "a NAS clock ahead");
        let mut s = session(3, "81a00003");
        s.acctupdatetime = None;
        let f = run(&[], std::slice::from_ref(&s), std::slice::from_ref(&s));
        assert_eq!(f.ghosts[0].stop_time, 1_000, "no interim: the start");
    }

    #[test]
    fn a_session_opened_after_the_print_is_never_a_ghost() {
        let old = session(1, "81a00001");
        let new = session(2, "81a00002");
        // The router answered before the Start of session 2 reached the index.
        let f = run(
            &[entry(1, Some("0x81a00001"))],
            std::slice::from_ref(&old),
            &[old.clone(), new],
        );
        assert!(f.ghosts.is_empty());
        assert_eq!(f.too_new, 1);
    }

    #[test]
    fn sessions_known_only_from_the_journal_are_not_ghosts() {
        let mut s = session(4, "81a00004");
        s.radacctid = None;
        let f = run(&[], std::slice::from_ref(&s), std::slice::from_ref(&s));
        assert!(f.ghosts.is_empty());
        assert_eq!(f.too_new, 1);
    }

    #[test]
    fn zombies_exclude_young_entries_and_sessions_closed_meanwhile() {
        let closed = session(5, "81a00005");
        let mut young = entry(6, Some("0x81a00006"));
        young.uptime = Some(30);
        let f = run(
            &[
                entry(5, Some("0x81a00005")),
                young,
                entry(9, Some("0x81a00009")),
            ],
            &[closed],
            &[],
        );
        assert_eq!(f.zombie_count, 1);
        assert_eq!(f.zombies[0].session_id.as_deref(), Some("81a00009"));
    }

    #[test]
    fn mismatches_compare_ip_and_mac_in_any_notation() {
        let s = session(1, "81a00001");
        let same = run(
            &[entry(1, Some("0x81a00001"))],
            std::slice::from_ref(&s),
            std::slice::from_ref(&s),
        );
        assert_eq!(same.mismatch_count, 0, "aa-bb-… equals AA:BB:…");
        let mut moved = entry(1, Some("0x81a00001"));
        moved.address = Some("10.9.9.9".into());
        moved.caller_id = Some("aabb.ccdd.ee99".into());
        let f = run(&[moved], std::slice::from_ref(&s), std::slice::from_ref(&s));
        assert_eq!(f.mismatch_count, 1);
        let m = &f.mismatches[0];
        assert_eq!(
            m.framed_ip.as_ref().map(|d| d.router.as_str()),
            Some("10.9.9.9")
        );
        assert_eq!(
            m.mac.as_ref().map(|d| d.router.as_str()),
            Some("aabb.ccdd.ee99")
        );
    }

    #[test]
    fn name_fallback_only_for_entries_without_a_session_id() {
        // The user's first login is a ghost; his second, live one has another session id.
        let first = session(1, "81a00001");
        let mut second = session(1, "81a00002");
        second.acctuniqueid = "key1b".into();
        second.radacctid = Some(11);
        let live = entry(1, Some("0x81a00002"));
        let f = run(
            &[live],
            &[first.clone(), second.clone()],
            &[first.clone(), second.clone()],
        );
        assert_eq!(f.ghosts.len(), 1, "the live login does not hide the ghost");
        assert_eq!(f.ghosts[0].acctsessionid, "81a00001");
        // Without session ids (another kind of router), one entry matches one session.
        let f = run(
            &[entry(1, None)],
            &[first.clone(), second.clone()],
            &[first, second],
        );
        assert_eq!((f.matched, f.ghosts.len()), (1, 1));
    }

    #[test]
    fn uptimes_parse() {
        assert_eq!(
            parse_uptime("3w4d12h23m12s"),
            Some(3 * 604_800 + 4 * 86_400 + 12 * 3_600 + 23 * 60 + 12)
        );
        assert_eq!(parse_uptime("51s"), Some(51));
        assert_eq!(parse_uptime("1h"), Some(3_600));
        assert_eq!(parse_uptime("00:05:10"), Some(310));
        assert_eq!(parse_uptime("1h2m3s40ms"), Some(3_723));
        assert_eq!(parse_uptime("soon"), None);
        assert_eq!(parse_uptime("12"), None);
    }

    #[test]
    fn macs_normalize() {
        assert_eq!(normalize_mac("AA:BB:CC:DD:EE:01"), "aabbccddee01");
        assert_eq!(normalize_mac("aabb.ccdd.ee01"), "aabbccddee01");
        assert_eq!(normalize_mac("10.1.2.3"), "10.1.2.3");
    }
}
