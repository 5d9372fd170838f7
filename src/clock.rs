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

impl Rfc3339 {
    /// The 20 ASCII bytes, each field's digits put in place (the events write two or three
    /// of these per session start and stop, on the writer's path).
    fn bytes(&self) -> [u8; 20] {
        fn put(b: &mut [u8], mut v: u32) {
            for d in b.iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        let d = &self.0;
        let mut b = *b"0000-00-00T00:00:00Z";
        // 0 to 9999 (`Rfc3339::at`).
        put(&mut b[0..4], d.year().unsigned_abs());
        put(&mut b[5..7], d.month());
        put(&mut b[8..10], d.day());
        put(&mut b[11..13], d.hour());
        put(&mut b[14..16], d.minute());
        put(&mut b[17..19], d.second());
        b
    }
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes();
        f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.bytes();
        s.serialize_str(std::str::from_utf8(&b).map_err(serde::ser::Error::custom)?)
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
        // Every field's digits, across the whole range (years 0 to 9999).
        let first = -62_167_219_200; // 0000-01-01T00:00:00Z
        for t in (first..=253_402_300_799).step_by(3_000_017).chain([first]) {
            let r = Rfc3339::at(t).expect("in range");
            assert_eq!(Some(r.to_string()), rfc3339(t), "epoch {t}");
            assert_eq!(
                serde_json::to_string(&r).ok(),
                rfc3339(t).map(|s| format!("\"{s}\"")),
                "epoch {t}"
            );
        }
        assert!(Rfc3339::at(first - 1).is_none(), "year -1");
        assert!(Rfc3339::at(253_402_300_800).is_none(), "year 10000");
        assert!(Rfc3339::at(i64::MAX).is_none());
    }
}
