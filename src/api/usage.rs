//! `GET /api/subscribers/{username}/usage` (a subscriber's usage by hour, day or month, with
//! its fair-use state) and `GET /api/usage/top` (the heaviest subscribers of a period), from
//! the usage ledger. Permission `sessions.view`; a reseller sees its subtree's subscribers only.
//! Times are counted in `usage.time_zone` unless the request gives `tz`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde_json::{Value, json};

use super::ApiState;
use super::auth::{Caller, SESSIONS_VIEW};
use super::error::ApiError;
use super::params::{Query, parse_time, positive};
use crate::config::PeriodKind;
use crate::sessions::ResellerResolver;
use crate::sessions::filter::Scope;
use crate::store::UsageBucket;
use crate::usage::{Granularity, HOUR, Period, UsageZone, hour_of};

/// The longest `from`–`to` span one usage request may cover.
pub const MAX_SPAN_DAYS: i64 = 400;
/// The most subscribers `GET /api/usage/top` lists.
pub const MAX_TOP: u64 = 1000;
/// The periods `GET /api/usage/top` knows.
pub const TOP_PERIODS: [&str; 4] = ["today", "yesterday", "this_month", "last_month"];

/// `GET /api/subscribers/{username}/usage`.
pub async fn subscriber(
    State(state): State<ApiState>,
    caller: Caller,
    Path(username): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    let q = Query::parse(raw.as_deref())?;
    let zone = zone(&state, &q)?;
    let granularity = match q.get("granularity")? {
        None => Granularity::Day,
        Some(g) => Granularity::parse(g).ok_or_else(|| {
            ApiError::bad_request("invalid granularity, must be hour, day or month")
        })?,
    };
    let billing_day = state.usage().billing_day();
    let now = crate::clock::now_secs();
    let default_from = Period::at(PeriodKind::Month, &zone, billing_day, now).start;
    let (from, to) = span(&q, &zone, default_from, now)?;
    let scope = state.scope().scope_for(&caller);
    if !scope.contains(state.scope().reseller_of(&username)) {
        return Err(ApiError::Forbidden("not authorized".into()));
    }
    let _permit = state.query_permit().await?;
    let hours = state.store().usage_hours(&username, from, to).await?;
    let buckets = group(&hours, granularity, &zone, billing_day);
    let (input, output) = hours
        .iter()
        .fold((0, 0), |(i, o), b| (i + b.input, o + b.output));
    let fair_use = fair_use(&state, &username, now, &zone).await?;
    Ok(Json(json!({
        "success": true,
        "data": {
            "username": username,
            "tz": zone.name(),
            "granularity": match granularity {
                Granularity::Hour => "hour",
                Granularity::Day => "day",
                Granularity::Month => "month",
            },
            "from": zone.rfc3339(from),
            "to": zone.rfc3339(to),
            "total": octets(input, output),
            "buckets": buckets
                .iter()
                .map(|b| {
                    let mut v = octets(b.input, b.output);
                    v["start"] = json!(zone.rfc3339(b.start));
                    v
                })
                .collect::<Vec<_>>(),
            "fair_use": fair_use,
        }
    })))
}

/// `GET /api/usage/top`.
pub async fn top(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    caller.require(SESSIONS_VIEW)?;
    let q = Query::parse(raw.as_deref())?;
    let zone = zone(&state, &q)?;
    let period = q.get("period")?.unwrap_or("this_month");
    let limit = positive(
        &q,
        "limit",
        10,
        MAX_TOP,
        &format!("must be between 1 and {MAX_TOP}"),
    )?;
    let billing_day = state.usage().billing_day();
    let now = crate::clock::now_secs();
    let span = top_period(period, &zone, billing_day, now).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid period, must be one of {}",
            TOP_PERIODS.join(", ")
        ))
    })?;
    // The ledger counts whole UTC hours.
    let (from, to) = (hour_of(span.start), hour_of(span.end + HOUR - 1));
    let resellers = match state.scope().scope_for(&caller) {
        Scope::All => None,
        Scope::Resellers(ids) => Some(ids.to_vec()),
    };
    let _permit = state.query_permit().await?;
    let rows = state
        .store()
        .usage_top(from, to, limit as i64, resellers.as_deref())
        .await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = octets(r.input, r.output);
            v["username"] = json!(r.username);
            v
        })
        .collect();
    Ok(Json(json!({
        "success": true,
        "data": {
            "period": period,
            "tz": zone.name(),
            "from": zone.rfc3339(from),
            "to": zone.rfc3339(to),
            "subscribers": list,
        }
    })))
}

/// `{input_octets, output_octets, octets}`.
fn octets(input: i64, output: i64) -> Value {
    json!({
        "input_octets": input,
        "output_octets": output,
        "octets": input + output,
    })
}

/// The request's `tz`, else `usage.time_zone`.
fn zone(state: &ApiState, q: &Query) -> Result<UsageZone, ApiError> {
    match q.get("tz")? {
        None => Ok(state.usage().zone().clone()),
        Some(tz) => {
            UsageZone::parse(tz).map_err(|e| ApiError::bad_request(format!("invalid tz, {e}")))
        }
    }
}

/// `from` and `to` (RFC 3339, or a date: local midnight in `zone`), widened to whole hours;
/// `from` defaults to `default_from`, `to` to `now`.
fn span(q: &Query, zone: &UsageZone, default_from: i64, now: i64) -> Result<(i64, i64), ApiError> {
    let time = |name: &str, default: i64| -> Result<i64, ApiError> {
        match q.get(name)? {
            None => Ok(default),
            Some(v) => local_date(v, zone)
                .or_else(|| parse_time(v, name == "from"))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid {name}, must be an RFC 3339 date-time or a YYYY-MM-DD date"
                    ))
                }),
        }
    };
    let from = hour_of(time("from", default_from)?);
    let to = hour_of(time("to", now)? + HOUR - 1);
    if to <= from {
        return Err(ApiError::bad_request("invalid to, must be later than from"));
    }
    if to - from > MAX_SPAN_DAYS * 86_400 {
        return Err(ApiError::bad_request(format!(
            "invalid to, at most {MAX_SPAN_DAYS} days after from"
        )));
    }
    Ok((from, to))
}

/// A bare `YYYY-MM-DD` as local midnight in `zone`.
fn local_date(v: &str, zone: &UsageZone) -> Option<i64> {
    if v.len() != 10 {
        return None;
    }
    let date: jiff::civil::Date = v.parse().ok()?;
    Some(zone.midnight(date))
}

/// The span of a named period at `now`.
pub fn top_period(name: &str, zone: &UsageZone, billing_day: u8, now: i64) -> Option<Period> {
    let day = Period::at(PeriodKind::Day, zone, billing_day, now);
    let month = Period::at(PeriodKind::Month, zone, billing_day, now);
    match name {
        "today" => Some(day),
        "yesterday" => Some(day.previous(PeriodKind::Day, zone, billing_day)),
        "this_month" => Some(month),
        "last_month" => Some(month.previous(PeriodKind::Month, zone, billing_day)),
        _ => None,
    }
}

/// The ledger hours summed into buckets of `granularity` (only buckets with usage).
pub fn group(
    hours: &[UsageBucket],
    granularity: Granularity,
    zone: &UsageZone,
    billing_day: u8,
) -> Vec<UsageBucket> {
    let mut by: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    // Hours are in order, so consecutive hours mostly share a bucket: compute it once per day.
    let mut cache: Option<(i64, i64, i64)> = None; // (day start UTC, day end UTC, bucket)
    for h in hours {
        let bucket = match (granularity, cache) {
            (Granularity::Hour, _) => h.start,
            (_, Some((s, e, b))) if h.start >= s && h.start < e => b,
            _ => {
                let day = Period::at(PeriodKind::Day, zone, billing_day, h.start);
                let b = granularity.bucket(zone, billing_day, h.start);
                cache = Some((day.start, day.end, b));
                b
            }
        };
        let e = by.entry(bucket).or_default();
        e.0 += h.input;
        e.1 += h.output;
    }
    by.into_iter()
        .map(|(start, (input, output))| UsageBucket {
            start,
            input,
            output,
        })
        .collect()
}

/// The subscriber's fair-use state: its policy, the current period's usage against the
/// threshold, and since when it is throttled (`null` without a policy).
async fn fair_use(
    state: &ApiState,
    username: &str,
    now: i64,
    zone: &UsageZone,
) -> Result<Value, ApiError> {
    let policies = state.usage();
    let store = state.store();
    let user = [username.to_owned()];
    let throttle = store.throttles(Some(&user)).await?.pop();
    let policy = match &throttle {
        Some(t) => policies.named(&t.policy),
        None if policies.by_class() => {
            // The plan is the Class of the subscriber's sessions: look at its open ones.
            let keys: Vec<String> = state
                .index()
                .collect(|s| s.username == username)
                .into_iter()
                .map(|s| s.acctuniqueid.to_string())
                .collect();
            let classes = if keys.is_empty() {
                Default::default()
            } else {
                store.classes_of(&keys).await?
            };
            let class = keys.iter().find_map(|k| classes.get(k));
            policies.for_class(class.map(String::as_str))
        }
        None => policies.for_class(None),
    };
    let Some(policy) = policy else {
        // Throttled under a policy no longer configured: the reset still restores it.
        return Ok(throttle.map_or(Value::Null, |t| {
            json!({
                "policy": t.policy,
                "period": Value::Null,
                "period_start": zone.rfc3339(t.period_start),
                "period_end": zone.rfc3339(t.period_end),
                "used_bytes": t.used_bytes,
                "threshold_bytes": t.threshold_bytes,
                "throttled": true,
                "throttled_since": zone.rfc3339(t.throttled_since),
                "throttled_period_end": zone.rfc3339(t.period_end),
                "rate": t.rate,
                "restore_rate": t.restore_rate,
            })
        }));
    };
    let period = policies.period(policy, now);
    let used = store
        .usage_since(&user, period.start)
        .await?
        .get(username)
        .copied()
        .unwrap_or(0);
    Ok(json!({
        "policy": policy.name,
        "period": match policy.period { PeriodKind::Day => "day", PeriodKind::Month => "month" },
        "period_start": zone.rfc3339(period.start),
        "period_end": zone.rfc3339(period.end),
        "used_bytes": used,
        "threshold_bytes": policy.threshold_bytes,
        "throttled": throttle.is_some(),
        "throttled_since": throttle.as_ref().map(|t| zone.rfc3339(t.throttled_since)),
        "throttled_period_end": throttle.as_ref().map(|t| zone.rfc3339(t.period_end)),
        "rate": throttle.as_ref().map(|t| t.rate.clone()),
        "restore_rate": policy.restore_rate,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().expect("time").as_second()
    }

    #[test]
    fn hours_group_into_local_days_across_a_dst_change() {
        let berlin = UsageZone::parse("Europe/Berlin").expect("zone");
        // 24 hourly buckets from 2026-10-24T22:00Z: the local day of 25 October is 25 hours.
        let start = at("2026-10-24T22:00:00Z");
        let hours: Vec<UsageBucket> = (0..26)
            .map(|i| UsageBucket {
                start: start + i * HOUR,
                input: 1,
                output: 0,
            })
            .collect();
        let days = group(&hours, Granularity::Day, &berlin, 1);
        assert_eq!(days.len(), 2);
        assert_eq!((days[0].start, days[0].input), (start, 25));
        assert_eq!(days[1].start, at("2026-10-25T23:00:00Z"));
        assert_eq!(days[1].input, 1);
        let same = group(&hours, Granularity::Hour, &berlin, 1);
        assert_eq!(same.len(), 26);
    }

    #[test]
    fn named_periods_and_spans() {
        let utc = UsageZone::utc();
        let now = at("2026-12-07T10:30:00Z");
        let y = top_period("yesterday", &utc, 1, now).expect("known");
        assert_eq!(
            (y.start, y.end),
            (at("2026-12-06T00:00:00Z"), at("2026-12-07T00:00:00Z"))
        );
        let lm = top_period("last_month", &utc, 1, now).expect("known");
        assert_eq!(lm.start, at("2026-11-01T00:00:00Z"));
        assert!(top_period("forever", &utc, 1, now).is_none());
        let q = Query::parse(Some("from=2026-12-01&to=2026-12-01T05:10:00Z")).expect("query");
        let berlin = UsageZone::parse("Europe/Berlin").expect("zone");
        let (from, to) = span(&q, &berlin, 0, now).expect("valid");
        assert_eq!(from, at("2026-11-30T23:00:00Z"), "local midnight");
        assert_eq!(to, at("2026-12-01T06:00:00Z"), "rounded up to the hour");
        let bad = Query::parse(Some("from=2026-12-02&to=2026-12-01")).expect("query");
        assert!(span(&bad, &utc, 0, now).is_err());
        let long = Query::parse(Some("from=2020-01-01&to=2026-12-01")).expect("query");
        assert!(span(&long, &utc, 0, now).is_err());
    }
}
