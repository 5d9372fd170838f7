//! The `[usage]` and `[events]` sections: the usage ledger's calendar and the fair-use
//! policies, the session events' outbox, stream and webhooks.

use std::path::PathBuf;

use serde::Deserialize;

use super::Secret;

/// The `[usage]` section: the calendar the usage ledger is counted in, and the fair-use
/// policies. Policies live here rather than in a table: they are a handful of product
/// definitions that change with the price list, not per subscriber, and a file is reviewed,
/// versioned and checked by `check-config` before it takes effect. What changes per subscriber
/// (who is throttled since when) is state, and lives in the `fair_use_throttles` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// The time zone days and billing months are counted in (the API's default `tz`): `UTC`,
    /// `local`, an offset like `+03:00`, or an IANA name such as `Europe/Berlin`.
    pub time_zone: String,
    /// The day of the month (1 to 28) billing months start on, at local midnight.
    pub billing_day: u8,
    /// Milliseconds the fair-use enforcer gathers committed changes before it checks them
    /// (one query per batch of subscribers).
    pub check_interval_ms: u64,
    /// Seconds between the jobs leader's looks for periods that ended (the reset that restores
    /// the rate).
    pub reset_interval_secs: u64,
    /// The fair-use policies, first match wins.
    pub policies: Vec<FairUsePolicy>,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            time_zone: "UTC".into(),
            billing_day: 1,
            check_interval_ms: 1000,
            reset_interval_secs: 60,
            policies: Vec::new(),
        }
    }
}

/// The `[events]` section: the session events outbox, its Server-Sent Events stream and its
/// webhooks (docs/EVENTS.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Write events at all. Off: nothing is added to the outbox (the stream and webhooks serve
    /// what is retained).
    pub enabled: bool,
    /// Also an event for every Interim-Update that changed a row (`session.interim`).
    pub interims: bool,
    /// Events numbered longer ago than this many days are deleted by the jobs leader.
    pub retention_days: u64,
    /// At most this many events are retained (the oldest are deleted first).
    pub max_events: u64,
    /// Seconds between the heartbeats (SSE comments) of an idle stream.
    pub heartbeat_secs: u64,
    /// Open `GET /api/events` streams per node; more are answered 503.
    pub max_clients: usize,
    /// Events a stream may fall behind the newest before it is ended (the client resumes with
    /// `Last-Event-ID`): a slow client never makes the node buffer without bound.
    pub client_buffer: usize,
    /// Milliseconds between two looks for events numbered by another node or left in the
    /// queue by a process that stopped (the local writer's commits wake the sequencer at once).
    pub poll_interval_ms: u64,
    /// Webhook endpoints.
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            enabled: true,
            interims: false,
            retention_days: 7,
            max_events: 1_000_000,
            heartbeat_secs: 15,
            max_clients: 256,
            client_buffer: 10_000,
            poll_interval_ms: 250,
            webhooks: Vec::new(),
        }
    }
}

impl EventsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.retention_days == 0 || self.max_events == 0 {
            return Err("events.retention_days and events.max_events must be at least 1".into());
        }
        if self.heartbeat_secs == 0 || self.poll_interval_ms == 0 {
            return Err(
                "events.heartbeat_secs and events.poll_interval_ms must be at least 1".into(),
            );
        }
        if self.max_clients == 0 || self.client_buffer == 0 {
            return Err("events.max_clients and events.client_buffer must be at least 1".into());
        }
        let mut names = std::collections::HashSet::new();
        for w in &self.webhooks {
            w.validate()?;
            if !names.insert(w.name.as_str()) {
                return Err(format!(
                    "events.webhooks: the name {:?} is used twice",
                    w.name
                ));
            }
        }
        Ok(())
    }
}

/// One webhook endpoint (`[[events.webhooks]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The endpoint's name: its cursor in `webhook_cursors` and its `endpoint` metric label.
    /// Renaming it starts it afresh from the newest event.
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// The HMAC-SHA256 key the batches are signed with.
    pub secret: Secret,
    /// Event types to deliver (`session.started`, …); empty: every type.
    #[serde(default)]
    pub types: Vec<String>,
    /// Events per POST, at most.
    #[serde(default = "WebhookConfig::default_batch_size")]
    pub batch_size: usize,
    /// Seconds a POST may take before it counts as failed.
    #[serde(default = "WebhookConfig::default_timeout_secs")]
    pub timeout_secs: u64,
    /// The longest pause, in seconds, between retries of a failing endpoint.
    #[serde(default = "WebhookConfig::default_max_backoff_secs")]
    pub max_backoff_secs: u64,
    /// PEM bundle of the CAs trusted for an `https` URL's certificate (read at start-up).
    #[serde(default = "WebhookConfig::default_ca_file")]
    pub ca_file: PathBuf,
}

impl WebhookConfig {
    fn default_batch_size() -> usize {
        100
    }
    fn default_timeout_secs() -> u64 {
        10
    }
    fn default_max_backoff_secs() -> u64 {
        300
    }
    fn default_ca_file() -> PathBuf {
        PathBuf::from("/etc/ssl/certs/ca-certificates.crt")
    }

    pub fn validate(&self) -> Result<(), String> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 63 || name.chars().any(|c| c.is_control()) {
            return Err(format!(
                "events.webhooks: name must be 1 to 63 characters without control characters (got {:?})",
                self.name
            ));
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "events.webhooks {name:?}: url must start with http:// or https:// (got {:?})",
                self.url
            ));
        }
        if self.secret.expose().len() < 16 {
            return Err(format!(
                "events.webhooks {name:?}: secret must be at least 16 characters"
            ));
        }
        for t in &self.types {
            if crate::events::EventType::parse(t).is_none() {
                return Err(format!(
                    "events.webhooks {name:?}: unknown event type {t:?} (known: {})",
                    crate::events::EventType::ALL.map(|t| t.name()).join(", ")
                ));
            }
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return Err(format!(
                "events.webhooks {name:?}: batch_size must be between 1 and 10000"
            ));
        }
        if self.timeout_secs == 0 || self.max_backoff_secs == 0 {
            return Err(format!(
                "events.webhooks {name:?}: timeout_secs and max_backoff_secs must be at least 1"
            ));
        }
        Ok(())
    }
}

/// How long a fair-use period lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// A local day.
    Day,
    /// A billing month: from local midnight of the billing day to the same day next month.
    Month,
}

/// One fair-use policy (`[[usage.policies]]`): a plan, its allowance per period, and the
/// rates to apply past it and to restore at the period's reset.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FairUsePolicy {
    /// The policy's name (in the action log's detail, the throttle state and the API).
    pub name: String,
    /// The plan: the RADIUS `Class` values (radacct.class, as FreeRADIUS's reply sets it for
    /// the plan's group) this policy applies to. Empty: every subscriber.
    #[serde(default)]
    pub classes: Vec<String>,
    /// `day` or `month`.
    pub period: PeriodKind,
    /// Input + output octets allowed per period; more throttles the subscriber.
    pub threshold_bytes: u64,
    /// The `Mikrotik-Rate-Limit` to apply while over the threshold, e.g. `1M/2M`.
    pub rate: String,
    /// The `Mikrotik-Rate-Limit` to restore at the period's reset, e.g. `50M/100M`.
    pub restore_rate: String,
}

/// A time zone as `usage.time_zone` and the usage API's `tz` name it: `UTC`, `local`, a fixed
/// offset `+HH[:MM]` (at most 14 hours), or an IANA name such as `Europe/Berlin`.
pub fn parse_time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    use jiff::tz::TimeZone;
    let offset = |s: &str| -> Option<TimeZone> {
        let sign = if s.starts_with('-') { -1 } else { 1 };
        let (h, m) = s[1..].split_once(':').unwrap_or((&s[1..], "0"));
        let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
        if h > 14 || m > 59 {
            return None;
        }
        let offset = jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()?;
        Some(TimeZone::fixed(offset))
    };
    match name {
        "UTC" | "utc" | "Z" => Some(TimeZone::UTC),
        "local" | "Local" => Some(TimeZone::system()),
        other if other.starts_with('+') || other.starts_with('-') => offset(other),
        other => TimeZone::get(other).ok(),
    }
    .ok_or_else(|| {
        format!("unknown time zone {name:?} (use UTC, local, +HH:MM or an IANA name such as Europe/Berlin)")
    })
}

impl UsageConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        parse_time_zone(&self.time_zone).map_err(|e| format!("usage.time_zone: {e}"))?;
        if !(1..=28).contains(&self.billing_day) {
            return Err(format!(
                "usage.billing_day must be between 1 and 28 (got {})",
                self.billing_day
            ));
        }
        if self.check_interval_ms == 0 || self.reset_interval_secs == 0 {
            return Err(
                "usage.check_interval_ms and usage.reset_interval_secs must be at least 1".into(),
            );
        }
        for (i, p) in self.policies.iter().enumerate() {
            let at = format!("usage.policies[{i}]");
            if p.name.trim().is_empty() || self.policies[..i].iter().any(|o| o.name == p.name) {
                return Err(format!("{at}.name must be set and unique"));
            }
            if p.threshold_bytes == 0 || p.threshold_bytes > i64::MAX as u64 {
                return Err(format!("{at}.threshold_bytes must be at least 1"));
            }
            for (field, rate) in [("rate", &p.rate), ("restore_rate", &p.restore_rate)] {
                if rate.is_empty() || rate.len() > 247 || rate.chars().any(char::is_control) {
                    return Err(format!(
                        "{at}.{field} must be a Mikrotik-Rate-Limit of 1 to 247 bytes, e.g. \"1M/2M\""
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn usage_policies_are_checked_in_words() {
        let policy = FairUsePolicy {
            name: "home".into(),
            classes: vec![],
            period: PeriodKind::Month,
            threshold_bytes: 1,
            rate: "1M/1M".into(),
            restore_rate: "10M/10M".into(),
        };
        let ok = UsageConfig {
            time_zone: "Europe/Berlin".into(),
            policies: vec![policy.clone()],
            ..UsageConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        type Case = (fn(&mut UsageConfig), &'static str);
        let cases: [Case; 5] = [
            (
                |c| c.time_zone = "Mars/Olympus".into(),
                "usage.time_zone: unknown time zone",
            ),
            (
                |c| c.billing_day = 29,
                "usage.billing_day must be between 1 and 28",
            ),
            (
                |c| c.policies.push(c.policies[0].clone()),
                "usage.policies[1].name must be set and unique",
            ),
            (
                |c| c.policies[0].threshold_bytes = 0,
                "usage.policies[0].threshold_bytes",
            ),
            (
                |c| c.policies[0].rate = String::new(),
                "usage.policies[0].rate must be",
            ),
        ];
        for (change, message) in cases {
            let mut c = ok.clone();
            change(&mut c);
            let e = c.validate().expect_err(message);
            assert!(e.starts_with(message), "{e}");
        }
        let from_toml: Config = toml::from_str(
            "[usage]\ntime_zone = \"UTC\"\n[[usage.policies]]\nname = \"a\"\nperiod = \"day\"\n\
             threshold_bytes = 5\nrate = \"1M/1M\"\nrestore_rate = \"2M/2M\"\n",
        )
        .expect("parses");
        assert_eq!(from_toml.usage.policies[0].period, PeriodKind::Day);
        assert!(from_toml.usage.policies[0].classes.is_empty());
    }
}
