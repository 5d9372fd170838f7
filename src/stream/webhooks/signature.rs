//! The webhook signature (docs/WEBHOOKS.md#signature), pure: what radacctd puts in
//! `X-Radacctd-Timestamp` and `X-Radacctd-Signature`, and the check a receiver makes. No I/O and
//! no clock: the caller passes the time, so the check is the same in tests and receivers.
//!
//! The signature is `v1=` and the lowercase hex of HMAC-SHA256(secret, `"<timestamp>.<body>"`),
//! where the timestamp is the header's text (Unix seconds) and the body the raw bytes sent.
//! Signing the timestamp with the body is what lets a receiver refuse a replayed request: an old
//! request cannot be given a fresh timestamp without the secret.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::radius::accounting::hex;

/// Unix seconds when the request was signed (the text that was signed).
pub const TIMESTAMP_HEADER: &str = "x-radacctd-timestamp";
/// `v1=<64 lowercase hex digits>`.
pub const SIGNATURE_HEADER: &str = "x-radacctd-signature";
/// `<first id>-<last id>` of the events in the batch.
pub const EVENT_IDS_HEADER: &str = "x-radacctd-event-ids";
/// The one signature scheme so far.
pub const SCHEME: &str = "v1";
/// How far a request's timestamp may be from the receiver's clock, as the README's examples
/// check: replays older than this fail.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The timestamp header is not Unix seconds.
    #[error("the timestamp header is not a number of seconds")]
    MalformedTimestamp,
    /// The signature header holds no `v1=` followed by 64 hex digits.
    #[error("the signature header is not v1=<64 hex digits>")]
    MalformedSignature,
    /// The signature is not the body's and timestamp's under this secret (a wrong secret, or a
    /// changed body or timestamp).
    #[error("the signature does not match")]
    Mismatch,
    /// The signature matches but the timestamp is too far from now: a replayed (or very late)
    /// request. `skew` is now − timestamp, in seconds.
    #[error("the timestamp is {skew} s from now, outside the tolerance")]
    OutsideTolerance { skew: i64 },
}

/// Signs batches for one endpoint: the HMAC keyed once with its secret.
#[derive(Clone)]
pub struct Signer {
    keyed: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer with `secret` as the key. `None` cannot happen with HMAC (it takes a key of any
    /// length), but the type says it might.
    pub fn new(secret: &[u8]) -> Option<Signer> {
        Some(Signer {
            keyed: <HmacSha256 as KeyInit>::new_from_slice(secret).ok()?,
        })
    }

    /// The `X-Radacctd-Signature` value for `body` sent with the timestamp `timestamp`.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let mac = signed(self.keyed.clone(), &timestamp.to_string(), body);
        format!("{SCHEME}={}", hex(&mac.finalize().into_bytes()))
    }
}

/// The MAC over `"<timestamp>.<body>"`.
fn signed(mut mac: HmacSha256, timestamp: &str, body: &[u8]) -> HmacSha256 {
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a webhook request as a receiver must: `timestamp_header` and `signature_header` are
/// the raw header values, `body` the raw body bytes (before any JSON parsing), `now` the
/// receiver's clock in Unix seconds. The MAC is compared in constant time; a signature that
/// matches is still refused when its timestamp is more than `tolerance` from `now`
/// ([`DEFAULT_TOLERANCE`]: 5 minutes), which is what stops a captured request from being
/// replayed later. Delivery is at least once, so a receiver also ignores event ids it has
/// already processed.
///
/// The signature header may list several comma-separated signatures (`v1=…, v1=…`); one
/// matching is enough, and schemes other than `v1` are ignored.
pub fn verify(
    secret: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let timestamp = parse_timestamp(timestamp_header)?;
    let candidates = parse_signatures(signature_header)?;
    let Ok(keyed) = <HmacSha256 as KeyInit>::new_from_slice(secret) else {
        // HMAC takes a key of any length; kept as a refusal rather than a panic.
        return Err(VerifyError::Mismatch);
    };
    let mac = signed(keyed, timestamp_header.trim(), body);
    // `verify_slice` compares in constant time; each candidate gets its own copy of the MAC.
    if !candidates
        .iter()
        .any(|c| mac.clone().verify_slice(c).is_ok())
    {
        return Err(VerifyError::Mismatch);
    }
    let skew = now.saturating_sub(timestamp);
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(VerifyError::OutsideTolerance { skew });
    }
    Ok(())
}

/// Unix seconds: ASCII digits only (no sign, no fraction), at most 18 of them.
fn parse_timestamp(header: &str) -> Result<i64, VerifyError> {
    let t = header.trim();
    if t.is_empty() || t.len() > 18 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::MalformedTimestamp);
    }
    t.parse().map_err(|_| VerifyError::MalformedTimestamp)
}

/// The `v1` signatures of the header, decoded; a `v1=` that is not 64 hex digits, or no `v1`
/// at all, is malformed.
fn parse_signatures(header: &str) -> Result<Vec<[u8; 32]>, VerifyError> {
    let mut found = Vec::new();
    for part in header.split(',') {
        let Some((scheme, value)) = part.trim().split_once('=') else {
            return Err(VerifyError::MalformedSignature);
        };
        if scheme != SCHEME {
            continue;
        }
        found.push(unhex32(value).ok_or(VerifyError::MalformedSignature)?);
    }
    if found.is_empty() {
        return Err(VerifyError::MalformedSignature);
    }
    Ok(found)
}

/// 64 hex digits (either case) as 32 bytes.
fn unhex32(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-secret";
    const BODY: &[u8] = br#"{"endpoint":"billing","events":[{"id":1}]}"#;
    const T: i64 = 1_700_000_000;

    fn signed_now() -> (String, String) {
        let signer = Signer::new(SECRET).expect("signer");
        (T.to_string(), signer.sign(T, BODY))
    }

    #[test]
    fn a_signed_request_verifies_within_the_tolerance() {
        let (ts, sig) = signed_now();
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        assert_eq!(sig, sig.to_lowercase());
        for now in [T, T + 300, T - 300] {
            assert_eq!(
                verify(SECRET, &ts, &sig, BODY, now, DEFAULT_TOLERANCE),
                Ok(())
            );
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // The key and message of RFC 4231's test case 2, behind the timestamp "1" and a dot;
        // the value is `printf '1.what do ya want for nothing?' | openssl dgst -sha256 -hmac Jefe`.
        let signer = Signer::new(b"Jefe").expect("signer");
        assert_eq!(
            signer.sign(1, b"what do ya want for nothing?"),
            "v1=a9049465ce89cfb8e9aac62333abda66f80e3403f51f57f6bae3c3a4485eca38"
        );
    }

    #[test]
    fn a_wrong_secret_or_a_changed_body_or_timestamp_is_a_mismatch() {
        let (ts, sig) = signed_now();
        let check = |secret: &[u8], ts: &str, body: &[u8]| {
            verify(secret, ts, &sig, body, T, DEFAULT_TOLERANCE)
        };
        assert_eq!(
            check(b"another secret of length", &ts, BODY),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(
                SECRET,
                &ts,
                br#"{"endpoint":"billing","events":[{"id":2}]}"#
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            check(SECRET, &(T + 1).to_string(), BODY),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_replayed_request_fails_on_its_timestamp() {
        let (ts, sig) = signed_now();
        assert_eq!(
            verify(SECRET, &ts, &sig, BODY, T + 301, DEFAULT_TOLERANCE),
            Err(VerifyError::OutsideTolerance { skew: 301 })
        );
        assert_eq!(
            verify(SECRET, &ts, &sig, BODY, T - 301, DEFAULT_TOLERANCE),
            Err(VerifyError::OutsideTolerance { skew: -301 })
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let (ts, sig) = signed_now();
        for bad in ["", "-1", "1.5", "abc", "17000000000000000000000"] {
            assert_eq!(
                verify(SECRET, bad, &sig, BODY, T, DEFAULT_TOLERANCE),
                Err(VerifyError::MalformedTimestamp),
                "{bad:?}"
            );
        }
        let short = &sig[..sig.len() - 2];
        let not_hex = format!("v1={}", "zz".repeat(32));
        for bad in ["", "v1", "v0=abc", short, not_hex.as_str(), &sig[3..]] {
            assert_eq!(
                verify(SECRET, &ts, bad, BODY, T, DEFAULT_TOLERANCE),
                Err(VerifyError::MalformedSignature),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn one_matching_signature_of_several_is_enough() {
        let (ts, sig) = signed_now();
        let other = Signer::new(b"the previous secret!")
            .expect("signer")
            .sign(T, BODY);
        let header = format!("{other}, {sig}, v2=whatever");
        assert_eq!(
            verify(SECRET, &ts, &header, BODY, T, DEFAULT_TOLERANCE),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, &ts, &other, BODY, T, DEFAULT_TOLERANCE),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(
                SECRET,
                &ts,
                &sig.to_uppercase().replacen("V1", "v1", 1),
                BODY,
                T,
                DEFAULT_TOLERANCE
            ),
            Ok(())
        );
    }
}
