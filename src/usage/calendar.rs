//! The calendar usage is counted in: a time zone (an IANA name such as `Europe/Berlin`, `UTC`,
//! a fixed offset, or the host's), local days and billing months that start on a configured day
//! of the month at local midnight. DST changes make a local day 23 or 25 hours long; the
//! ledger's UTC hours fall into the local day their start is in.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

pub use crate::config::PeriodKind;

/// A time zone usage is counted in.
#[derive(Debug, Clone)]
pub struct UsageZone {
    tz: TimeZone,
    name: String,
}

impl PartialEq for UsageZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl UsageZone {
    /// `UTC`, `local` (the host's zone), an offset like `+03:00`, or an IANA name
    /// (`America/Sao_Paulo`). `Err` says what is accepted.
    pub fn parse(name: &str) -> Result<UsageZone, String> {
        let tz = crate::config::parse_time_zone(name)?;
        Ok(UsageZone {
            tz,
            name: name.to_owned(),
        })
    }

    /// UTC.
    pub fn utc() -> UsageZone {
        UsageZone {
            tz: TimeZone::UTC,
            name: "UTC".into(),
        }
    }

    /// The name it was given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The local date at `t` (epoch seconds).
    pub fn date(&self, t: i64) -> Date {
        Timestamp::from_second(t)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone())
            .date()
    }

    /// Local midnight starting `date` (the first instant of the day when midnight itself is
    /// skipped by a DST change).
    pub fn midnight(&self, date: Date) -> i64 {
        date.to_zoned(self.tz.clone())
            .map(|z| z.timestamp().as_second())
            .unwrap_or_else(|_| date_utc(date))
    }

    /// The offset from UTC at `t`, in seconds.
    pub fn offset_secs(&self, t: i64) -> i32 {
        self.tz
            .to_offset(Timestamp::from_second(t).unwrap_or(Timestamp::UNIX_EPOCH))
            .seconds()
    }

    /// `t` as RFC 3339 with this zone's offset, whole seconds.
    pub fn rfc3339(&self, t: i64) -> String {
        let z = Timestamp::from_second(t)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone());
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

fn date_utc(date: Date) -> i64 {
    date.to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp().as_second())
        .unwrap_or(0)
}

/// A span of time `[start, end)` in epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

impl Period {
    /// The period of `kind` holding `t`. `billing_day` (1 to 28) is the day months start on.
    pub fn at(kind: PeriodKind, zone: &UsageZone, billing_day: u8, t: i64) -> Period {
        let d = zone.date(t);
        let (first, next) = match kind {
            PeriodKind::Day => (d, d.tomorrow().unwrap_or(d)),
            PeriodKind::Month => {
                let first = billing_month_start(d, billing_day);
                (first, first.checked_add(1.month()).unwrap_or(first))
            }
        };
        Period {
            start: zone.midnight(first),
            end: zone.midnight(next),
        }
    }

    /// The period of the same kind just before this one.
    pub fn previous(self, kind: PeriodKind, zone: &UsageZone, billing_day: u8) -> Period {
        Period::at(kind, zone, billing_day, self.start - 1)
    }
}

/// The first day of the billing month holding `d`.
fn billing_month_start(d: Date, billing_day: u8) -> Date {
    let day = billing_day.clamp(1, 28) as i8;
    let this = Date::new(d.year(), d.month(), day).unwrap_or(d);
    if d.day() >= day {
        this
    } else {
        this.checked_sub(1.month()).unwrap_or(this)
    }
}

/// The buckets the usage API answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// The ledger's own UTC hours.
    Hour,
    /// Local days.
    Day,
    /// Billing months (calendar months when the billing day is 1).
    Month,
}

impl Granularity {
    /// `hour`, `day` or `month`.
    pub fn parse(s: &str) -> Option<Granularity> {
        match s {
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            "month" => Some(Granularity::Month),
            _ => None,
        }
    }

    /// The start of the bucket holding the ledger hour starting at `hour`.
    pub fn bucket(self, zone: &UsageZone, billing_day: u8, hour: i64) -> i64 {
        match self {
            Granularity::Hour => hour,
            Granularity::Day => Period::at(PeriodKind::Day, zone, billing_day, hour).start,
            Granularity::Month => Period::at(PeriodKind::Month, zone, billing_day, hour).start,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().expect("a timestamp").as_second()
    }

    #[test]
    fn zones_parse_by_name_offset_or_utc_and_refuse_the_rest() {
        assert!(UsageZone::parse("Europe/Berlin").is_ok());
        assert_eq!(
            UsageZone::parse("+03:00").expect("offset").offset_secs(0),
            10_800
        );
        assert_eq!(
            UsageZone::parse("-05:30").expect("offset").offset_secs(0),
            -19_800
        );
        assert_eq!(UsageZone::parse("UTC").expect("utc").offset_secs(0), 0);
        let e = UsageZone::parse("Mars/Olympus").expect_err("unknown");
        assert!(e.contains("Mars/Olympus"), "{e}");
        assert!(UsageZone::parse("+25:00").is_err());
    }

    #[test]
    fn a_local_day_across_a_dst_change_lasts_23_or_25_hours() {
        let berlin = UsageZone::parse("Europe/Berlin").expect("zone");
        // 2026-03-29: clocks go from 02:00 to 03:00 in Berlin.
        let spring = Period::at(PeriodKind::Day, &berlin, 1, at("2026-03-29T12:00:00Z"));
        assert_eq!(spring.start, at("2026-03-28T23:00:00Z"));
        assert_eq!(spring.end - spring.start, 23 * 3600);
        // 2026-10-25: from 03:00 back to 02:00.
        let autumn = Period::at(PeriodKind::Day, &berlin, 1, at("2026-10-25T12:00:00Z"));
        assert_eq!(autumn.start, at("2026-10-24T22:00:00Z"));
        assert_eq!(autumn.end - autumn.start, 25 * 3600);
    }

    #[test]
    fn billing_months_start_on_the_billing_day_at_local_midnight() {
        let sp = UsageZone::parse("America/Sao_Paulo").expect("zone");
        // 2026-12-01 01:00 UTC is still 30 November in São Paulo (UTC−3).
        let t = at("2026-12-01T01:00:00Z");
        let calendar = Period::at(PeriodKind::Month, &sp, 1, t);
        assert_eq!(calendar.start, at("2026-11-01T03:00:00Z"));
        assert_eq!(calendar.end, at("2026-12-01T03:00:00Z"));
        let fifteenth = Period::at(PeriodKind::Month, &sp, 15, t);
        assert_eq!(fifteenth.start, at("2026-11-15T03:00:00Z"));
        assert_eq!(fifteenth.end, at("2026-12-15T03:00:00Z"));
        let before = Period::at(PeriodKind::Month, &sp, 15, at("2026-01-10T12:00:00Z"));
        assert_eq!(before.start, at("2025-12-15T03:00:00Z"), "across a year");
        assert_eq!(
            calendar.previous(PeriodKind::Month, &sp, 1).end,
            calendar.start
        );
        let utc = UsageZone::utc();
        assert_eq!(
            Period::at(PeriodKind::Month, &utc, 1, t).start,
            at("2026-12-01T00:00:00Z")
        );
    }

    #[test]
    fn hours_fall_into_the_local_day_and_month_their_start_is_in() {
        let berlin = UsageZone::parse("Europe/Berlin").expect("zone");
        let hour = at("2026-10-31T23:00:00Z"); // 00:00 on 1 November in Berlin (CET).
        assert_eq!(
            Granularity::Day.bucket(&berlin, 1, hour),
            at("2026-10-31T23:00:00Z")
        );
        assert_eq!(
            Granularity::Month.bucket(&berlin, 1, hour),
            at("2026-10-31T23:00:00Z")
        );
        assert_eq!(
            Granularity::Month.bucket(&berlin, 1, hour - 3600),
            at("2026-09-30T22:00:00Z"),
            "October started in summer time"
        );
        assert_eq!(Granularity::Hour.bucket(&berlin, 1, hour), hour);
        assert_eq!(berlin.rfc3339(hour), "2026-11-01T00:00:00+01:00");
    }
}
