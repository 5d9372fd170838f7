//! RouterOS's rate-limit syntax, as `Mikrotik-Rate-Limit` carries it (checked before a CoA
//! sends it, so that a typo is a 400 and not a CoA-NAK or, worse, a rate the router reads
//! differently):
//!
//! ```text
//! rx-rate[/tx-rate] [rx-burst-rate[/tx-burst-rate] [rx-burst-threshold[/tx-burst-threshold]
//!   [rx-burst-time[/tx-burst-time] [priority] [rx-rate-min[/tx-rate-min]]]]]
//! ```
//!
//! Rates are whole numbers of bits per second with an optional multiplier `k` (10³), `M` (10⁶)
//! or `G` (10⁹), in either case; `0` means unlimited. Burst times are whole seconds, optionally
//! followed by `s`. The priority is 1 (highest) to 8. A minimum rate may not exceed its rate
//! (RouterOS refuses it). "rx" is what the router receives from the subscriber (upload).

/// Why a rate-limit string is not valid RouterOS syntax; the message names the field.
pub type Error = String;

/// The fields in order, for messages: `(rx name, tx name)`; the priority has one value.
const GROUPS: [&str; 6] = [
    "rate",
    "burst-rate",
    "burst-threshold",
    "burst-time",
    "priority",
    "rate-min",
];

/// Checks `s`; `Err` says which field is wrong and why.
pub fn check(s: &str) -> Result<(), Error> {
    if s.len() > 253 {
        return Err("longer than a RADIUS attribute (253 bytes)".into());
    }
    let groups: Vec<&str> = s.split_ascii_whitespace().collect();
    if groups.is_empty() {
        return Err("empty: expected rx-rate[/tx-rate], e.g. \"10M/20M\"".into());
    }
    if groups.len() > GROUPS.len() {
        return Err(format!(
            "{} fields where at most {} are allowed (rate, burst-rate, burst-threshold, \
             burst-time, priority, rate-min)",
            groups.len(),
            GROUPS.len()
        ));
    }
    let mut rate = (0, 0);
    for (i, group) in groups.iter().enumerate() {
        let name = GROUPS[i];
        if name == "priority" {
            match group.parse::<u8>() {
                Ok(1..=8) => continue,
                _ => return Err(format!("priority {group:?} is not a number from 1 to 8")),
            }
        }
        let mut halves = group.split('/');
        let rx = halves.next().unwrap_or_default();
        let tx = halves.next();
        if halves.next().is_some() {
            return Err(format!("{name} {group:?} has more than one '/'"));
        }
        let value = |v: &str, side: &str| {
            if name == "burst-time" {
                seconds(v).ok_or_else(|| {
                    format!("{side}-{name} {v:?} is not a whole number of seconds (e.g. 8 or 8s)")
                })
            } else {
                bits(v).ok_or_else(|| {
                    format!("{side}-{name} {v:?} is not a rate (digits with an optional k, M or G)")
                })
            }
        };
        let rx_v = value(rx, "rx")?;
        // Without tx, RouterOS uses the rx value for both directions.
        let tx_v = tx.map(|t| value(t, "tx")).transpose()?.unwrap_or(rx_v);
        match name {
            "rate" => rate = (rx_v, tx_v),
            "rate-min" => {
                for (side, min, max) in [("rx", rx_v, rate.0), ("tx", tx_v, rate.1)] {
                    if max != 0 && min > max {
                        return Err(format!(
                            "{side}-rate-min exceeds {side}-rate ({min} > {max} bits/s)"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A rate: digits with an optional multiplier, in bits per second.
fn bits(v: &str) -> Option<u64> {
    let (digits, mult) = match v.char_indices().last()? {
        (i, 'k' | 'K') => (&v[..i], 1_000),
        (i, 'm' | 'M') => (&v[..i], 1_000_000),
        (i, 'g' | 'G') => (&v[..i], 1_000_000_000),
        _ => (v, 1),
    };
    number(digits)?.checked_mul(mult)
}

/// Whole seconds, optionally followed by `s`.
fn seconds(v: &str) -> Option<u64> {
    number(v.strip_suffix('s').unwrap_or(v))
}

fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routeros_examples_are_accepted() {
        for ok in [
            "10M/20M",
            "10M",
            "512k/2M",
            "0/0",
            "1G/1G",
            "2M/4M 4M/8M",
            "2M/4M 4M/8M 1M/2M",
            "2M/4M 4M/8M 1M/2M 16/16",
            "2M/4M 4M/8M 1M/2M 16s/16s 8",
            "2M/4M 4M/8M 1M/2M 16/16 8 1M/2M",
            "  10M/20M  ",
            "10000000/20000000",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("", "empty"),
            ("10Q/20M", "rx-rate \"10Q\""),
            ("10M/x", "tx-rate \"x\""),
            ("10M/20M/30M", "more than one '/'"),
            ("/20M", "rx-rate \"\""),
            ("10M/20M 4M/", "tx-burst-rate \"\""),
            ("1M 2M 1M 1.5/2", "rx-burst-time \"1.5\""),
            ("1M 2M 1M 8 9", "priority \"9\""),
            ("1M 2M 1M 8 0", "priority \"0\""),
            ("1M/2M 2M 1M 8 8 2M/1M", "rx-rate-min exceeds rx-rate"),
            ("1M/2M 2M 1M 8 8 1M/3M", "tx-rate-min exceeds tx-rate"),
            ("1M 2M 1M 8 8 1M 1M", "7 fields"),
            ("-1M", "rx-rate \"-1M\""),
            ("99999999999999999999G", "is not a rate"),
            ("M", "rx-rate \"M\""),
        ];
        for (bad, want) in cases {
            let e = check(bad).expect_err(bad);
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        assert!(check(&"1".repeat(254)).unwrap_err().contains("253"));
    }

    #[test]
    fn an_unlimited_rate_takes_any_minimum() {
        assert_eq!(check("0/0 0/0 0/0 1/1 8 5M/5M"), Ok(()));
    }
}
