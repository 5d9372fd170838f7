//! What one accounting event does to a radacct row: FreeRADIUS 3.2's PostgreSQL `queries.conf`
//! semantics, with the deviations docs/reference/freeradius.md §7 lists (and the README documents).
//!
//! Pure: the writer loads the rows of a batch, folds every event through [`apply`] in arrival
//! order, and writes only the rows that changed. The same code serves both stores.

use std::net::IpAddr;

use crate::net::ipv4_text;
use crate::radius::accounting::{AccountingEvent, EventKind};
use crate::sessions::Row;

/// The cause the stale sweeper writes; a later Interim reopens such a row (deviation 5).
pub const SWEEPER_CAUSE: &str = "NAS-Idle-Timeout";

/// What an event did to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A new row.
    Inserted,
    /// An existing row changed.
    Updated,
    /// A row the sweeper had closed was opened again by an Interim.
    Reopened,
    /// Nothing to write (a repeat, a stale interim, a late start, an interim after a Stop).
    Unchanged,
}

/// Applies `ev` to the current state of its row (`None`: no row with that key yet).
pub fn apply(row: &mut Option<Row>, ev: &AccountingEvent) -> Effect {
    let Some(r) = row.as_mut() else {
        return match ev.kind {
            EventKind::Start | EventKind::InterimUpdate | EventKind::Stop => {
                *row = Some(new_row(ev));
                Effect::Inserted
            }
            // Bulk closes are not per-row events; the writer runs them as barriers.
            EventKind::AccountingOn | EventKind::AccountingOff => Effect::Unchanged,
        };
    };
    let before = r.clone();
    let mut reopened = false;
    match ev.kind {
        EventKind::Start => start(r, ev),
        EventKind::InterimUpdate => {
            if !r.is_open() && r.acctterminatecause.as_deref() == Some(SWEEPER_CAUSE) {
                // The session was alive after all: reopen the same row.
                r.acctstoptime = None;
                r.acctterminatecause = None;
                r.connectinfo_stop = None;
                reopened = true;
            }
            if r.is_open() {
                interim(r, ev);
            }
        }
        EventKind::Stop => stop(r, ev),
        EventKind::AccountingOn | EventKind::AccountingOff => {}
    }
    if *r == before {
        // A reopening always changes the stop time, so this cannot hide one.
        Effect::Unchanged
    } else if reopened {
        Effect::Reopened
    } else {
        Effect::Updated
    }
}

/// Closes an open row by decision of radacctd itself (sweeper, disconnect): stop at `stop_time`,
/// session time from the start. Returns false when the row was already closed.
pub fn close(r: &mut Row, stop_time: i64, cause: &str) -> bool {
    if !r.is_open() {
        return false;
    }
    r.acctstoptime = Some(stop_time);
    r.acctupdatetime = Some(r.acctupdatetime.map_or(stop_time, |u| u.max(stop_time)));
    if let Some(start) = r.acctstarttime {
        r.acctsessiontime = Some((stop_time - start).max(0));
    }
    r.acctterminatecause = Some(cause.to_owned());
    true
}

/// The columns every insert takes from the packet (FreeRADIUS's `column_list`).
fn new_row(ev: &AccountingEvent) -> Row {
    let t = ev.time;
    let mut r = Row {
        radacctid: None,
        acctsessionid: ev.acctsessionid.clone(),
        acctuniqueid: ev.acctuniqueid.clone(),
        username: Some(ev.username.clone()),
        realm: None,
        nasipaddress: match ev.nasipaddress {
            IpAddr::V4(a) => ipv4_text(a),
            a => a.to_string(),
        },
        nasportid: ev.nasportid.clone(),
        nasporttype: Some(ev.nasporttype.clone()),
        acctstarttime: Some(t),
        acctupdatetime: Some(t),
        acctstoptime: None,
        acctinterval: None,
        acctsessiontime: Some(0),
        acctauthentic: Some(ev.acctauthentic.clone()),
        connectinfo_start: Some(ev.connectinfo.clone()),
        connectinfo_stop: None,
        acctinputoctets: Some(0),
        acctoutputoctets: Some(0),
        calledstationid: Some(ev.calledstationid.clone()),
        callingstationid: Some(ev.callingstationid.clone()),
        acctterminatecause: None,
        servicetype: Some(ev.servicetype.clone()),
        framedprotocol: Some(ev.framedprotocol.clone()),
        framedipaddress: ev.framedipaddress.clone(),
        framedipv6address: ev.framedipv6address.clone(),
        framedipv6prefix: ev.framedipv6prefix.clone(),
        framedinterfaceid: ev.framedinterfaceid.clone(),
        delegatedipv6prefix: ev.delegatedipv6prefix.clone(),
        // Deviation 7: FreeRADIUS leaves `class` NULL unless configured.
        class: ev.class.clone(),
    };
    match ev.kind {
        EventKind::InterimUpdate => {
            // Deviation 2: the session started Acct-Session-Time before this interim.
            r.acctstarttime = Some(t - ev.sessiontime.unwrap_or(0));
            r.acctsessiontime = ev.sessiontime;
            r.acctinputoctets = Some(ev.inputoctets);
            r.acctoutputoctets = Some(ev.outputoctets);
        }
        EventKind::Stop => {
            r.acctstarttime = Some(t - ev.sessiontime.unwrap_or(0));
            r.acctstoptime = Some(t);
            r.acctsessiontime = ev.sessiontime;
            r.acctinputoctets = Some(ev.inputoctets);
            r.acctoutputoctets = Some(ev.outputoctets);
            r.acctterminatecause = Some(ev.terminatecause.clone().unwrap_or_default());
        }
        _ => {}
    }
    r
}

fn start(r: &mut Row, ev: &AccountingEvent) {
    // Deviation 4: a late Start for a closed row changes nothing.
    if !r.is_open() {
        return;
    }
    r.acctstarttime = Some(ev.time);
    // A repeated Start arriving after interims must not move the update time backwards.
    r.acctupdatetime = Some(r.acctupdatetime.map_or(ev.time, |u| u.max(ev.time)));
    r.connectinfo_start = Some(ev.connectinfo.clone());
}

fn interim(r: &mut Row, ev: &AccountingEvent) {
    let last = r.acctupdatetime.or(r.acctstarttime);
    if let Some(last) = last {
        // An interim older than what the row already holds is stale (reordered delivery).
        if ev.time < last {
            return;
        }
        // The same interim again (a NAS that re-sent it with a new identifier): no change.
        if ev.time == last
            && r.acctsessiontime == ev.sessiontime
            && r.acctinputoctets == Some(ev.inputoctets)
            && r.acctoutputoctets == Some(ev.outputoctets)
        {
            return;
        }
    }
    keep_or_set_framed(r, ev);
    r.acctsessiontime = ev.sessiontime;
    r.acctinterval = last.map(|l| ev.time - l);
    r.acctupdatetime = Some(ev.time);
    r.acctinputoctets = Some(ev.inputoctets);
    r.acctoutputoctets = Some(ev.outputoctets);
}

fn stop(r: &mut Row, ev: &AccountingEvent) {
    // FreeRADIUS's second stop query has no `AcctStopTime IS NULL`: a duplicate or late Stop
    // overwrites the closed row's stop (E3); a real Stop also replaces a sweeper's close.
    let t = ev.time;
    r.acctstoptime = Some(t);
    r.acctupdatetime = Some(t);
    r.acctsessiontime = match ev.sessiontime {
        Some(s) => Some(s),
        None => r.acctstarttime.map(|start| t - start),
    };
    r.acctinputoctets = Some(ev.inputoctets);
    r.acctoutputoctets = Some(ev.outputoctets);
    r.acctterminatecause = Some(ev.terminatecause.clone().unwrap_or_default());
    keep_or_set_framed(r, ev);
    r.connectinfo_stop = Some(ev.connectinfo.clone());
}

/// Deviation 3: an address the packet does not carry keeps its stored value.
fn keep_or_set_framed(r: &mut Row, ev: &AccountingEvent) {
    let set = |dst: &mut Option<String>, src: &Option<String>| {
        if src.is_some() {
            dst.clone_from(src);
        }
    };
    set(&mut r.framedipaddress, &ev.framedipaddress);
    set(&mut r.framedipv6address, &ev.framedipv6address);
    set(&mut r.framedipv6prefix, &ev.framedipv6prefix);
    set(&mut r.framedinterfaceid, &ev.framedinterfaceid);
    set(&mut r.delegatedipv6prefix, &ev.delegatedipv6prefix);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, time: i64) -> AccountingEvent {
        AccountingEvent::sample(kind, "k", time)
    }

    fn with(mut e: AccountingEvent, f: impl FnOnce(&mut AccountingEvent)) -> AccountingEvent {
        f(&mut e);
        e
    }

    #[test]
    fn start_interim_stop() {
        let mut row = None;
        assert_eq!(
            apply(&mut row, &ev(EventKind::Start, 1000)),
            Effect::Inserted
        );
        let interim = with(ev(EventKind::InterimUpdate, 1300), |e| {
            e.sessiontime = Some(300);
            e.inputoctets = 10;
            e.framedipaddress = None;
        });
        assert_eq!(apply(&mut row, &interim), Effect::Updated);
        let r = row.clone().expect("row");
        assert_eq!(r.acctinterval, Some(300));
        assert_eq!(
            r.framedipaddress.as_deref(),
            Some("10.0.0.1"),
            "deviation 3"
        );
        // The same interim again changes nothing.
        assert_eq!(apply(&mut row, &interim), Effect::Unchanged);
        let stop = with(ev(EventKind::Stop, 1400), |e| {
            e.terminatecause = Some("User-Request".into());
            e.inputoctets = 20;
        });
        assert_eq!(apply(&mut row, &stop), Effect::Updated);
        let r = row.clone().expect("row");
        assert_eq!(r.acctstoptime, Some(1400));
        assert_eq!(
            r.acctsessiontime,
            Some(400),
            "computed from the start when absent"
        );
        assert_eq!(r.acctinputoctets, Some(20));
        assert_eq!(r.connectinfo_stop.as_deref(), Some(""));
        // Interim after Stop, late Start: nothing.
        assert_eq!(apply(&mut row, &interim), Effect::Unchanged);
        assert_eq!(
            apply(&mut row, &ev(EventKind::Start, 900)),
            Effect::Unchanged
        );
        // Stop again: the same values, nothing to write.
        assert_eq!(apply(&mut row, &stop), Effect::Unchanged);
    }

    #[test]
    fn interim_without_start_backdates_the_start() {
        let mut row = None;
        let e = with(ev(EventKind::InterimUpdate, 1000), |e| {
            e.sessiontime = Some(100);
            e.inputoctets = (2 << 32) + 5;
        });
        assert_eq!(apply(&mut row, &e), Effect::Inserted);
        let r = row.expect("row");
        assert_eq!(r.acctstarttime, Some(900));
        assert_eq!(r.acctsessiontime, Some(100));
        assert_eq!(r.acctinputoctets, Some(8_589_934_597));
        assert_eq!(r.acctinterval, None);
        assert!(r.is_open());
    }

    #[test]
    fn stop_without_start_inserts_closed_row() {
        let mut row = None;
        let e = with(ev(EventKind::Stop, 1000), |e| {
            e.sessiontime = Some(100);
            e.terminatecause = Some("Lost-Carrier".into());
        });
        assert_eq!(apply(&mut row, &e), Effect::Inserted);
        let r = row.expect("row");
        assert_eq!((r.acctstarttime, r.acctstoptime), (Some(900), Some(1000)));
        assert_eq!(r.acctterminatecause.as_deref(), Some("Lost-Carrier"));
        assert_eq!(r.connectinfo_stop, None);
    }

    #[test]
    fn interim_after_sweeper_close_reopens() {
        let mut row = None;
        apply(&mut row, &ev(EventKind::Start, 1000));
        let r = row.as_mut().expect("row");
        assert!(close(r, 1000, SWEEPER_CAUSE));
        assert!(!close(r, 1000, SWEEPER_CAUSE));
        let e = with(ev(EventKind::InterimUpdate, 4000), |e| {
            e.sessiontime = Some(3000)
        });
        assert_eq!(apply(&mut row, &e), Effect::Reopened);
        let r = row.clone().expect("row");
        assert!(r.is_open());
        assert_eq!(r.acctterminatecause, None);
        assert_eq!(r.acctsessiontime, Some(3000));
        // After a real Stop, an interim does not reopen.
        apply(&mut row, &ev(EventKind::Stop, 5000));
        assert_eq!(apply(&mut row, &e), Effect::Unchanged);
    }

    #[test]
    fn stale_interim_is_ignored() {
        let mut row = None;
        apply(&mut row, &ev(EventKind::Start, 1000));
        apply(
            &mut row,
            &with(ev(EventKind::InterimUpdate, 1600), |e| e.inputoctets = 9),
        );
        let older = with(ev(EventKind::InterimUpdate, 1300), |e| e.inputoctets = 5);
        assert_eq!(apply(&mut row, &older), Effect::Unchanged);
        assert_eq!(row.expect("row").acctinputoctets, Some(9));
    }

    #[test]
    fn repeated_start_after_interim_keeps_update_time() {
        let mut row = None;
        apply(&mut row, &ev(EventKind::Start, 1000));
        apply(&mut row, &ev(EventKind::InterimUpdate, 1300));
        assert_eq!(
            apply(&mut row, &ev(EventKind::Start, 1000)),
            Effect::Unchanged
        );
        assert_eq!(row.expect("row").acctupdatetime, Some(1300));
    }
}
