//! The wall clock in whole seconds since the Unix epoch: receive times, job cut-offs, token
//! expiry, journal ages (and in microseconds, for the index's coherence lag), and such times
//! written as RFC 3339. The one place that reads `SystemTime`; depends on nothing of ours.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

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

/// A time as [`rfc3339`] writes it (`2026-12-07T11:48:30Z`), but written straight into a
/// formatter or serializer without an intermediate string: what the session events use on the
/// writer's path. Years 0 to 9999 only.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(DateTime<Utc>);

impl Rfc3339 {
    /// `secs` (epoch seconds); `None` outside years 0 to 9999.
    pub fn at(secs: i64) -> Option<Rfc3339> {
        DateTime::from_timestamp(secs, 0)
            .filter(|d| (0..=9999).contains(&d.year()))
            .map(Rfc3339)
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        )
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_writers_write_the_same_times() {
        for t in [
            0,
            59,
            951_782_400,
            1_796_644_110,
            4_102_444_799,
            253_402_300_799,
        ] {
            assert_eq!(
                Rfc3339::at(t).map(|r| r.to_string()),
                rfc3339(t),
                "epoch {t}"
            );
        }
        assert!(Rfc3339::at(253_402_300_800).is_none(), "year 10000");
        assert!(Rfc3339::at(i64::MAX).is_none());
    }
}
