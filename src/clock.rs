//! The wall clock in whole seconds since the Unix epoch: receive times, job cut-offs, token
//! expiry, journal ages (and in microseconds, for the index's coherence lag), and such times
//! written as RFC 3339. The one place that reads `SystemTime`; depends on nothing of ours.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now (0 if the system clock is before 1970).
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch, now (0 if the system clock is before 1970).
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// `t` (epoch seconds) as RFC 3339 in UTC with `Z`, whole seconds (`2026-12-07T11:48:30Z`), as
/// the API and the events write times; `None` outside chrono's range.
pub fn rfc3339(t: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
