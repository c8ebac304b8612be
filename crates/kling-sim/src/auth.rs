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

/// Which credentials a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepts {
    /// Legacy routes: a JWT or an API key.
    JwtOrApiKey,
    /// New-standard routes: API keys only (reference section 4.2).
    ApiKeyOnly,
}

/// Checks the `Authorization` header at `now_unix`.
pub(crate) fn authenticate(
    header: Option<&HeaderValue>,
    cfg: &SimConfig,
    now_unix: i64,
    accepts: Accepts,
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
        if accepts == Accepts::ApiKeyOnly {
            // Even a valid JWT is refused here; 1002 is the natural code (section 4.4).
            return Err(ApiError::new(
                kling_api::codes::AUTH_INVALID,
                "Authorization is invalid: this API accepts API keys only",
            ));
        }
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
        let caller = authenticate(
            Some(&header(&format!("Bearer {token}"))),
            &cfg(),
            now,
            Accepts::JwtOrApiKey,
        )
        .unwrap();
        assert_eq!(caller.0, format!("ak:{TEST_ACCESS_KEY}"));
        for accepts in [Accepts::JwtOrApiKey, Accepts::ApiKeyOnly] {
            let caller = authenticate(Some(&header("Bearer opaque-key-1")), &cfg(), now, accepts);
            assert_eq!(caller.unwrap().0, "api_key:0");
        }
    }

    #[test]
    fn api_key_only_routes_refuse_even_a_valid_jwt() {
        let now = 1_800_000_000;
        let token = kling_api::auth::sign_jwt(TEST_ACCESS_KEY, TEST_SECRET_KEY, now, 1800).unwrap();
        let value = header(&format!("Bearer {token}"));
        let err = authenticate(Some(&value), &cfg(), now, Accepts::ApiKeyOnly).unwrap_err();
        assert_eq!(err.code, 1002);
    }

    #[test]
    fn maps_each_refusal_to_its_code() {
        let now = 1_800_000_000;
        let code = |h: Option<&str>, at: i64| {
            let value = h.map(header);
            authenticate(value.as_ref(), &cfg(), at, Accepts::JwtOrApiKey)
                .unwrap_err()
                .code
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
