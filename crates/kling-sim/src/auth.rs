//! Bearer authentication as Kling answers it (reference sections 4 and 16.7): a JWT signed
//! with a configured secret key, or a configured opaque API key. Token parsing and checking
//! live in `kling_api::auth`; this module only picks the key and maps refusals to answers.

use axum::http::HeaderValue;
use kling_api::auth::{bearer_token, looks_like_jwt, peek_issuer, verify_jwt, TokenRejection};

use crate::config::SimConfig;
use crate::reply::ApiError;

/// Who made a call: `ak:<access key>` or `api_key:<position in the config>`. Used for
/// per-key concurrency pools; never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller(pub String);

fn refuse(rejection: TokenRejection) -> ApiError {
    ApiError::new(rejection.code(), rejection.message())
}

/// Checks the `Authorization` header at `now_unix`.
pub(crate) fn authenticate(
    header: Option<&HeaderValue>,
    cfg: &SimConfig,
    now_unix: i64,
) -> Result<Caller, ApiError> {
    let text = match header {
        None => None,
        // A header that is not visible ASCII cannot hold a valid credential.
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| refuse(TokenRejection::Invalid))?,
        ),
    };
    let token = bearer_token(text).map_err(refuse)?;
    if looks_like_jwt(token) {
        let issuer = peek_issuer(token).map_err(refuse)?;
        let pair = cfg
            .keys
            .iter()
            .find(|k| k.access_key == issuer)
            .ok_or_else(|| refuse(TokenRejection::Invalid))?;
        verify_jwt(
            token,
            pair.secret_key.expose(),
            now_unix,
            cfg.auth.leeway_secs,
            cfg.auth.max_lifetime_secs,
        )
        .map_err(refuse)?;
        return Ok(Caller(format!("ak:{issuer}")));
    }
    cfg.api_keys
        .iter()
        .position(|k| constant_time_eq(k.expose().as_bytes(), token.as_bytes()))
        .map(|i| Caller(format!("api_key:{i}")))
        .ok_or_else(|| refuse(TokenRejection::Invalid))
}

/// Compares without an early exit on the first differing byte, so response timing does not
/// reveal how much of a guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SecretText, TEST_ACCESS_KEY, TEST_SECRET_KEY};

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn cfg() -> SimConfig {
        let mut cfg = SimConfig::for_tests();
        cfg.api_keys.push(SecretText::new("opaque-key-1"));
        cfg
    }

    #[test]
    fn accepts_a_fresh_jwt_and_a_configured_api_key() {
        let now = 1_800_000_000;
        let token = kling_api::auth::sign_jwt(TEST_ACCESS_KEY, TEST_SECRET_KEY, now, 1800).unwrap();
        let caller = authenticate(Some(&header(&format!("Bearer {token}"))), &cfg(), now).unwrap();
        assert_eq!(caller.0, format!("ak:{TEST_ACCESS_KEY}"));
        let caller = authenticate(Some(&header("Bearer opaque-key-1")), &cfg(), now).unwrap();
        assert_eq!(caller.0, "api_key:0");
    }

    #[test]
    fn maps_each_refusal_to_its_code() {
        let now = 1_800_000_000;
        let code = |h: Option<&str>, at: i64| {
            let value = h.map(header);
            authenticate(value.as_ref(), &cfg(), at).unwrap_err().code
        };
        assert_eq!(code(None, now), 1001);
        assert_eq!(code(Some("Bearer opaque-key-2"), now), 1002);
        let unknown = kling_api::auth::sign_jwt("other-ak", TEST_SECRET_KEY, now, 1800).unwrap();
        assert_eq!(code(Some(&format!("Bearer {unknown}")), now), 1002);
        let token = kling_api::auth::sign_jwt(TEST_ACCESS_KEY, TEST_SECRET_KEY, now, 1800).unwrap();
        assert_eq!(code(Some(&format!("Bearer {token}")), now - 3600), 1003);
        assert_eq!(code(Some(&format!("Bearer {token}")), now + 3600), 1004);
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
