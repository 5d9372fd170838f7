//! The wall clock in whole seconds since the Unix epoch: receive times, job cut-offs, token
//! expiry, journal ages (and in microseconds, for the index's coherence lag), and such times
//! written as RFC 3339. The one place that reads `SystemTime`; depends on nothing of ours.

use std::fmt;
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

/// A time as [`rfc3339`] writes it (`2026-12-07T11:48:30Z`), but computed and written digit
/// by digit, without chrono or `fmt`: what the session events use on the writer's path. Years
/// 0 to 9999 only.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339([u8; 20]);

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z in epoch seconds.
const RFC3339_RANGE: std::ops::RangeInclusive<i64> = -62_167_219_200..=253_402_300_799;

impl Rfc3339 {
    /// `secs` (epoch seconds); `None` outside years 0 to 9999.
    pub fn at(secs: i64) -> Option<Rfc3339> {
        if !RFC3339_RANGE.contains(&secs) {
            return None;
        }
        let (days, second) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        let mut b = *b"0000-00-00T00:00:00Z";
        put(&mut b[0..4], year);
        put(&mut b[5..7], month);
        put(&mut b[8..10], day);
        put(&mut b[11..13], second / 3600);
        put(&mut b[14..16], second / 60 % 60);
        put(&mut b[17..19], second % 60);
        Some(Rfc3339(b))
    }

    /// The time's 20 characters.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever put in.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// `v`'s last `b.len()` decimal digits into `b`.
fn put(b: &mut [u8], v: i64) {
    let mut v = v.unsigned_abs();
    for d in b.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01, for years 0 to
/// 9999: the days are counted in 400-year eras that start on 1 March, so that the leap day is
/// the last day of its year.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153; // March is 0
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
            assert_eq!(Some(r.as_str()), rfc3339(t).as_deref(), "epoch {t}");
        }
        assert!(Rfc3339::at(first - 1).is_none(), "year -1");
        assert!(Rfc3339::at(253_402_300_800).is_none(), "year 10000");
        assert!(Rfc3339::at(i64::MAX).is_none());
        assert!(Rfc3339::at(i64::MIN).is_none());
        // Day by day from the start of years 0, 2000, 2100 and 9996, 800 days each: leap days
        // (and 2100 without one), month and year ends.
        for year_start in [
            -62_167_219_200i64,
            946_684_800,
            4_102_444_800,
            253_276_070_400,
        ] {
            for day in 0..800 {
                let t = year_start + day * 86_400 + 86_399;
                assert_eq!(
                    Rfc3339::at(t).map(|r| r.to_string()),
                    rfc3339(t),
                    "epoch {t}"
                );
            }
        }
    }
}
