//! Signing and verifying Kling callbacks with the Standard Webhooks scheme (kling-api.md 10.5).
//!
//! Signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`; the key is the base64
//! secret after an optional `whsec_` prefix; the signature header holds one or more
//! space-separated `v1,<base64 HMAC-SHA256>` entries (several during a secret rotation), and
//! any one match passes. Comparison is constant-time and stale timestamps are refused so a
//! captured callback cannot be replayed later.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header names (lower case; HTTP header names are case-insensitive).
pub const HEADER_ID: &str = "webhook-id";
/// Unix seconds when the callback was generated.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// `v1,<base64>` entries, space-separated.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// The tolerance Kling's docs give between the timestamp and local time.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
/// The prefix Kling's console puts on webhook secrets.
pub const SECRET_PREFIX: &str = "whsec_";

type HmacSha256 = Hmac<Sha256>;

/// Why a callback signature was not produced or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The secret is not base64 (after removing `whsec_`) or decodes to nothing.
    #[error("webhook secret is not valid base64 (after the optional whsec_ prefix)")]
    InvalidSecret,
    /// `webhook-timestamp` is not an integer number of seconds.
    #[error("webhook-timestamp {value:?} is not an integer")]
    InvalidTimestamp {
        /// The header value, truncated to 32 characters.
        value: String,
    },
    /// The timestamp is further from local time than the tolerance allows.
    #[error("webhook-timestamp {timestamp} is {skew_secs} s from local time {now_unix} (tolerance {tolerance_secs} s)")]
    StaleTimestamp {
        /// The header's time.
        timestamp: i64,
        /// Local time at verification.
        now_unix: i64,
        /// `now − timestamp` (negative when the timestamp is in the future).
        skew_secs: i64,
        /// The allowed distance.
        tolerance_secs: i64,
    },
    /// The signature header holds no `v1,` entry.
    #[error("webhook-signature holds no v1 signature")]
    NoSignature,
    /// No `v1,` entry matches the body under this secret.
    #[error("no webhook signature matches ({entries} v1 entries checked)")]
    Mismatch {
        /// How many `v1` entries were compared.
        entries: usize,
    },
}

/// Decodes a webhook secret: `whsec_<base64>` or bare base64.
///
/// # Errors
/// [`WebhookError::InvalidSecret`] when the remainder is not non-empty base64.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, WebhookError> {
    let encoded = secret
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .unwrap_or(secret.trim());
    match STANDARD.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(WebhookError::InvalidSecret),
    }
}

fn mac_for(
    key: &[u8],
    webhook_id: &str,
    timestamp: &str,
    body: &[u8],
) -> Result<HmacSha256, WebhookError> {
    // HMAC accepts keys of any length, so this error path exists only for the type system.
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| WebhookError::InvalidSecret)?;
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// Signs a callback: returns the `webhook-signature` value `v1,<base64>`.
///
/// # Errors
/// [`WebhookError::InvalidSecret`] for an undecodable secret.
pub fn sign(
    secret: &str,
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, WebhookError> {
    let key = decode_secret(secret)?;
    let tag = mac_for(&key, webhook_id, &timestamp.to_string(), body)?
        .finalize()
        .into_bytes();
    Ok(format!("v1,{}", STANDARD.encode(tag)))
}

/// Verifies a callback's headers against its raw body.
///
/// The timestamp is checked first (within `tolerance_secs` of `now_unix` either way), then
/// every `v1,` entry in `webhook_signature` is compared in constant time; entries of other
/// versions are skipped. The timestamp is used exactly as received, since it is part of the
/// signed content.
///
/// # Errors
/// The [`WebhookError`] describing the first failed check.
pub fn verify(
    secret: &str,
    webhook_id: &str,
    webhook_timestamp: &str,
    webhook_signature: &str,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), WebhookError> {
    let key = decode_secret(secret)?;
    let timestamp: i64 =
        webhook_timestamp
            .trim()
            .parse()
            .map_err(|_| WebhookError::InvalidTimestamp {
                value: webhook_timestamp.chars().take(32).collect(),
            })?;
    let skew_secs = now_unix.saturating_sub(timestamp);
    if skew_secs.saturating_abs() > tolerance_secs.max(0) {
        return Err(WebhookError::StaleTimestamp {
            timestamp,
            now_unix,
            skew_secs,
            tolerance_secs,
        });
    }
    let expected = mac_for(&key, webhook_id, webhook_timestamp.trim(), body)?;
    let mut entries = 0usize;
    for entry in webhook_signature.split_whitespace() {
        let Some(encoded) = entry.strip_prefix("v1,") else {
            continue;
        };
        entries += 1;
        let Ok(candidate) = STANDARD.decode(encoded) else {
            continue;
        };
        // `verify_slice` compares in constant time.
        if expected.clone().verify_slice(&candidate).is_ok() {
            return Ok(());
        }
    }
    if entries == 0 {
        Err(WebhookError::NoSignature)
    } else {
        Err(WebhookError::Mismatch { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vector computed independently with Python's `hmac` module:
    // key = base64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), content = id.ts.body.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "8674665223082153551";
    const TS: i64 = 1_781_080_794;
    const BODY: &[u8] = br#"{"id":"913827032734642185","status":"submitted","outputs":[],"message":"","create_time":1785901861504,"update_time":1785901861504}"#;
    const EXPECTED: &str = "v1,R6ymIo8QiZYr+V9CskCOyBBSoNRJhq0zD5RB5ZsK7v4=";

    #[test]
    fn sign_matches_independent_vector() {
        assert_eq!(sign(SECRET, ID, TS, BODY).unwrap(), EXPECTED);
        // Bare base64 secrets sign the same way.
        assert_eq!(
            sign(&SECRET[SECRET_PREFIX.len()..], ID, TS, BODY).unwrap(),
            EXPECTED
        );
    }

    #[test]
    fn verify_accepts_own_signature_within_tolerance() {
        let sig = sign(SECRET, ID, TS, BODY).unwrap();
        let ts = TS.to_string();
        assert_eq!(verify(SECRET, ID, &ts, &sig, BODY, TS, 300), Ok(()));
        assert_eq!(verify(SECRET, ID, &ts, &sig, BODY, TS + 300, 300), Ok(()));
        assert_eq!(verify(SECRET, ID, &ts, &sig, BODY, TS - 300, 300), Ok(()));
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let sig = sign(SECRET, ID, TS, BODY).unwrap();
        let ts = TS.to_string();
        assert!(matches!(
            verify(SECRET, ID, &ts, &sig, BODY, TS + 301, 300),
            Err(WebhookError::StaleTimestamp { skew_secs: 301, .. })
        ));
        assert!(matches!(
            verify(SECRET, ID, &ts, &sig, BODY, TS - 301, 300),
            Err(WebhookError::StaleTimestamp {
                skew_secs: -301,
                ..
            })
        ));
        assert!(matches!(
            verify(SECRET, ID, "soon", &sig, BODY, TS, 300),
            Err(WebhookError::InvalidTimestamp { .. })
        ));
    }

    #[test]
    fn any_tampering_breaks_the_signature() {
        let sig = sign(SECRET, ID, TS, BODY).unwrap();
        let ts = TS.to_string();
        let mismatch = Err(WebhookError::Mismatch { entries: 1 });
        assert_eq!(
            verify(SECRET, "other-id", &ts, &sig, BODY, TS, 300),
            mismatch
        );
        assert_eq!(
            verify(SECRET, ID, &(TS + 1).to_string(), &sig, BODY, TS, 300),
            mismatch
        );
        let mut body = BODY.to_vec();
        body[10] ^= 1;
        assert_eq!(verify(SECRET, ID, &ts, &sig, &body, TS, 300), mismatch);
        let other = format!("whsec_{}", STANDARD.encode(b"another secret key"));
        assert_eq!(verify(&other, ID, &ts, &sig, BODY, TS, 300), mismatch);
    }

    #[test]
    fn rotation_header_with_two_signatures() {
        let old = format!("whsec_{}", STANDARD.encode(b"old secret bytes"));
        let new = format!("whsec_{}", STANDARD.encode(b"new secret bytes"));
        let header = format!(
            "{} {}",
            sign(&new, ID, TS, BODY).unwrap(),
            sign(&old, ID, TS, BODY).unwrap()
        );
        let ts = TS.to_string();
        assert_eq!(verify(&old, ID, &ts, &header, BODY, TS, 300), Ok(()));
        assert_eq!(verify(&new, ID, &ts, &header, BODY, TS, 300), Ok(()));
        let third = format!("whsec_{}", STANDARD.encode(b"third"));
        assert_eq!(
            verify(&third, ID, &ts, &header, BODY, TS, 300),
            Err(WebhookError::Mismatch { entries: 2 })
        );
    }

    #[test]
    fn malformed_headers_and_secrets() {
        let ts = TS.to_string();
        assert_eq!(
            verify(SECRET, ID, &ts, "", BODY, TS, 300),
            Err(WebhookError::NoSignature)
        );
        assert_eq!(
            verify(SECRET, ID, &ts, "v2,abc v1a,xyz", BODY, TS, 300),
            Err(WebhookError::NoSignature)
        );
        assert_eq!(
            verify(SECRET, ID, &ts, "v1,!!notbase64!! v1,", BODY, TS, 300),
            Err(WebhookError::Mismatch { entries: 2 })
        );
        // A valid signature among junk and unknown versions still passes.
        let good = sign(SECRET, ID, TS, BODY).unwrap();
        let mixed = format!("v0,zzz  v1,@@ {good}");
        assert_eq!(verify(SECRET, ID, &ts, &mixed, BODY, TS, 300), Ok(()));
        assert_eq!(
            sign("whsec_***", ID, TS, BODY),
            Err(WebhookError::InvalidSecret)
        );
        assert_eq!(
            sign("whsec_", ID, TS, BODY),
            Err(WebhookError::InvalidSecret)
        );
        assert_eq!(
            verify("not base64!", ID, &ts, &good, BODY, TS, 300),
            Err(WebhookError::InvalidSecret)
        );
    }
}
