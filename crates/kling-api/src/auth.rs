//! Kling request authentication: signing JWTs from an access/secret key pair, caching them,
//! and the server side of the same scheme (bearer parsing and verification).
//!
//! Kling's legacy API takes `Authorization: Bearer <JWT>` where the JWT is HS256-signed with
//! the secret key and carries `iss` = access key, `exp` and `nbf` (kling-api.md 4.1). Since
//! 2026 a plain API key is accepted too (4.2), so a server must tell the two apart
//! ([`looks_like_jwt`]) without ever logging either. The rejection codes 1001 to 1004 live in
//! [`TokenRejection`] so the simulator and the gateway answer exactly as Kling documents.
//!
//! Times are Unix seconds passed in by the caller: nothing here reads the system clock except
//! through [`crate::clock::Clock`], which keeps expiry logic testable.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::clock::{Clock, SystemClock};
use crate::codes;
use crate::secret::SecretString;

/// Lifetime Kling's samples and every examined client give a token.
pub const DEFAULT_TOKEN_TTL_SECS: i64 = 1800;
/// The cached token is replaced once less than this much of its life remains (npm `kling-api`).
pub const DEFAULT_RENEW_BEFORE_SECS: i64 = 300;
/// `nbf` is set this far in the past to absorb a server clock that runs slightly behind ours.
pub const DEFAULT_NOT_BEFORE_MARGIN_SECS: i64 = 5;

/// Failure to produce a token. Verification failures are [`TokenRejection`]s instead.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The access key (the JWT `iss`) is empty.
    #[error("access key is empty")]
    EmptyAccessKey,
    /// The secret key is empty; an HMAC key of zero bytes would sign anything.
    #[error("secret key is empty")]
    EmptySecretKey,
    /// A lifetime that is zero or negative makes a token that is born expired.
    #[error("token lifetime must be positive, got {ttl_secs} s")]
    InvalidLifetime {
        /// The lifetime asked for.
        ttl_secs: i64,
    },
    /// `now + ttl` does not fit in an i64.
    #[error("token expiry overflows: now {now_unix} + ttl {ttl_secs}")]
    TimeOverflow {
        /// The issue time asked for.
        now_unix: i64,
        /// The lifetime asked for.
        ttl_secs: i64,
    },
    /// The JWT library refused to encode the token.
    #[error("encoding the JWT failed")]
    Encode(#[source] jsonwebtoken::errors::Error),
}

/// Why a bearer credential was refused, with Kling's business code for each case (11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenRejection {
    /// No `Authorization` header, or an empty one: code 1001.
    Missing,
    /// Malformed header or token, bad signature, wrong algorithm, unknown issuer: code 1002.
    Invalid,
    /// `nbf` is in the future beyond the allowed skew: code 1003.
    NotYetValid,
    /// `exp` has passed beyond the allowed skew: code 1004.
    Expired,
}

impl TokenRejection {
    /// Kling's business code for this rejection (HTTP status is always 401).
    pub fn code(&self) -> i64 {
        match self {
            Self::Missing => codes::AUTH_EMPTY,
            Self::Invalid => codes::AUTH_INVALID,
            Self::NotYetValid => codes::AUTH_NOT_YET_VALID,
            Self::Expired => codes::AUTH_EXPIRED,
        }
    }

    /// The explanation text of Kling's error page for this code.
    pub fn message(&self) -> &'static str {
        codes::default_message(self.code())
    }
}

impl fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.code())
    }
}

impl std::error::Error for TokenRejection {}

/// The claims of a verified token that matter for auditing (credential use, 1003/1004 causes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The access key that issued the token.
    pub iss: String,
    /// Expiry, Unix seconds.
    pub exp: Option<i64>,
    /// Not-before, Unix seconds.
    pub nbf: Option<i64>,
    /// Issued-at, Unix seconds, when the client sent one.
    pub iat: Option<i64>,
}

#[derive(Serialize)]
struct OutgoingClaims<'a> {
    iss: &'a str,
    exp: i64,
    nbf: i64,
    iat: i64,
}

/// Signs a Kling JWT: header `{"typ":"JWT","alg":"HS256"}`, claims `iss` = access key,
/// `exp` = now + ttl, `nbf` = now − 5, `iat` = now.
///
/// # Errors
/// Empty keys, a non-positive lifetime, time overflow, or an encoder failure.
pub fn sign_jwt(
    access_key: &str,
    secret_key: &str,
    now_unix: i64,
    ttl_secs: i64,
) -> Result<String, AuthError> {
    sign_jwt_with_margin(
        access_key,
        secret_key,
        now_unix,
        ttl_secs,
        DEFAULT_NOT_BEFORE_MARGIN_SECS,
    )
}

/// [`sign_jwt`] with a chosen `nbf` margin (seconds before `now_unix`).
///
/// # Errors
/// As [`sign_jwt`].
pub fn sign_jwt_with_margin(
    access_key: &str,
    secret_key: &str,
    now_unix: i64,
    ttl_secs: i64,
    not_before_margin_secs: i64,
) -> Result<String, AuthError> {
    if access_key.is_empty() {
        return Err(AuthError::EmptyAccessKey);
    }
    if secret_key.is_empty() {
        return Err(AuthError::EmptySecretKey);
    }
    if ttl_secs <= 0 {
        return Err(AuthError::InvalidLifetime { ttl_secs });
    }
    let exp = now_unix
        .checked_add(ttl_secs)
        .ok_or(AuthError::TimeOverflow { now_unix, ttl_secs })?;
    let nbf = now_unix.saturating_sub(not_before_margin_secs.max(0));
    let claims = OutgoingClaims {
        iss: access_key,
        exp,
        nbf,
        iat: now_unix,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret_key.as_bytes()),
    )
    .map_err(AuthError::Encode)
}

/// Extracts the credential from an `Authorization` header value.
///
/// The scheme word `Bearer` is matched case-insensitively and must be followed by exactly one
/// space. An absent, blank or credential-less header is [`TokenRejection::Missing`]; any other
/// shape (another scheme, two spaces, whitespace inside the credential) is `Invalid`.
///
/// # Errors
/// [`TokenRejection::Missing`] or [`TokenRejection::Invalid`] as above.
pub fn bearer_token(authorization_header: Option<&str>) -> Result<&str, TokenRejection> {
    let header = match authorization_header {
        None => return Err(TokenRejection::Missing),
        Some(h) if h.trim().is_empty() => return Err(TokenRejection::Missing),
        Some(h) => h,
    };
    let scheme = header.get(..6).ok_or(TokenRejection::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenRejection::Invalid);
    }
    let rest = &header[6..];
    let token = match rest.strip_prefix(' ') {
        Some(t) => t,
        None if rest.trim().is_empty() => return Err(TokenRejection::Missing),
        None => return Err(TokenRejection::Invalid),
    };
    if token.trim().is_empty() {
        return Err(TokenRejection::Missing);
    }
    // Header values are ASCII; scanning bytes spares decoding every character of the token on
    // every call. `char::is_whitespace` also counts the vertical tab and form feed.
    let has_space = if token.is_ascii() {
        token
            .bytes()
            .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r'))
    } else {
        token.chars().any(char::is_whitespace)
    };
    if has_space {
        return Err(TokenRejection::Invalid);
    }
    Ok(token)
}

fn is_base64url_part(part: &str) -> bool {
    part.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a bearer credential has JWT shape (three dot-separated base64url parts, the first
/// two non-empty) rather than being an opaque API key. Says nothing about validity.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    // An empty signature is kept as "JWT-shaped" so that `alg: none` tokens are rejected as
    // invalid JWTs instead of being looked up as API keys.
    !h.is_empty()
        && !p.is_empty()
        && is_base64url_part(h)
        && is_base64url_part(p)
        && is_base64url_part(s)
}

fn decode_payload(token: &str) -> Result<Map<String, Value>, TokenRejection> {
    if !looks_like_jwt(token) {
        return Err(TokenRejection::Invalid);
    }
    let payload = token.split('.').nth(1).ok_or(TokenRejection::Invalid)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenRejection::Invalid)?;
    serde_json::from_slice::<Map<String, Value>>(&bytes).map_err(|_| TokenRejection::Invalid)
}

/// Reads `iss` from a JWT **without verifying it**, so a server can pick the secret to verify
/// with. Never trust the result before [`verify_jwt`] succeeds.
///
/// # Errors
/// [`TokenRejection::Invalid`] when the token is malformed or has no string `iss`.
pub fn peek_issuer(token: &str) -> Result<String, TokenRejection> {
    let claims = decode_payload(token)?;
    match claims.get("iss") {
        Some(Value::String(iss)) if !iss.is_empty() => Ok(iss.clone()),
        _ => Err(TokenRejection::Invalid),
    }
}

/// Reads a NumericDate claim. Whole seconds are expected, but some JWT libraries write
/// fractional seconds, which are truncated rather than refused.
fn numeric_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenRejection> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    // Casting a finite f64 inside the i64 range cannot wrap.
                    Some(f) if f.is_finite() && f.abs() < 9.0e18 => Ok(Some(f.trunc() as i64)),
                    _ => Err(TokenRejection::Invalid),
                }
            }
        }
        Some(_) => Err(TokenRejection::Invalid),
    }
}

/// Verifies a Kling JWT as a server would.
///
/// Rules (kling-api.md 16.7): HS256 only (`alg: none` or any other algorithm is invalid);
/// `typ` optional; `iss`, `exp` and `nbf` required; extra claims ignored; `nbf` later than
/// `now + leeway` is [`TokenRejection::NotYetValid`]; `exp` earlier than `now − leeway` is
/// [`TokenRejection::Expired`]. With `max_lifetime_secs`, a token whose `exp` lies more than
/// that (plus leeway) ahead of `now` is refused as invalid, since Kling documents no code for
/// an over-long token.
///
/// # Errors
/// The [`TokenRejection`] that applies; a signature is checked before any time rule.
pub fn verify_jwt(
    token: &str,
    secret_key: &str,
    now_unix: i64,
    leeway_secs: i64,
    max_lifetime_secs: Option<i64>,
) -> Result<TokenClaims, TokenRejection> {
    if secret_key.is_empty() || !looks_like_jwt(token) {
        return Err(TokenRejection::Invalid);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    // Time and audience rules are applied below with the caller's clock; the library would
    // read the system clock and insist on claims Kling does not use.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Map<String, Value>>(
        token,
        &DecodingKey::from_secret(secret_key.as_bytes()),
        &validation,
    )
    .map_err(|_| TokenRejection::Invalid)?;
    let claims = data.claims;
    let iss = match claims.get("iss") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(TokenRejection::Invalid),
    };
    let exp = numeric_claim(&claims, "exp")?.ok_or(TokenRejection::Invalid)?;
    let nbf = numeric_claim(&claims, "nbf")?.ok_or(TokenRejection::Invalid)?;
    let iat = numeric_claim(&claims, "iat")?;
    let claims = TokenClaims {
        iss,
        exp: Some(exp),
        nbf: Some(nbf),
        iat,
    };
    check_token_times(&claims, now_unix, leeway_secs, max_lifetime_secs)?;
    Ok(claims)
}

/// The time rules of [`verify_jwt`] alone, for claims whose signature was checked before:
/// `nbf` and `exp` against `now_unix` with `leeway_secs`, and the remaining lifetime against
/// `max_lifetime_secs`. Claims without `nbf` or `exp` are refused.
pub fn check_token_times(
    claims: &TokenClaims,
    now_unix: i64,
    leeway_secs: i64,
    max_lifetime_secs: Option<i64>,
) -> Result<(), TokenRejection> {
    let (Some(nbf), Some(exp)) = (claims.nbf, claims.exp) else {
        return Err(TokenRejection::Invalid);
    };
    let leeway = leeway_secs.max(0);
    if nbf > now_unix.saturating_add(leeway) {
        return Err(TokenRejection::NotYetValid);
    }
    if exp < now_unix.saturating_sub(leeway) {
        return Err(TokenRejection::Expired);
    }
    if let Some(max) = max_lifetime_secs {
        if exp.saturating_sub(now_unix) > max.saturating_add(leeway) {
            return Err(TokenRejection::Invalid);
        }
    }
    Ok(())
}

/// A keyed, non-reversible fingerprint of a credential (access key, API key, token) for logs
/// and audit records: the first 16 bytes of HMAC-SHA256(`fingerprint_key`, credential), hex.
/// The key keeps fingerprints of low-entropy values from being brute-forced offline.
pub fn key_fingerprint(fingerprint_key: &[u8], credential: &str) -> String {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(fingerprint_key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(credential.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// How the [`TokenCache`] sizes and renews tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Lifetime of each token (`exp − iat`).
    pub ttl_secs: i64,
    /// Renew when less than this remains.
    pub renew_before_secs: i64,
    /// `nbf = iat − margin`, absorbing a server clock behind ours (code 1003 otherwise).
    pub not_before_margin_secs: i64,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            ttl_secs: DEFAULT_TOKEN_TTL_SECS,
            renew_before_secs: DEFAULT_RENEW_BEFORE_SECS,
            not_before_margin_secs: DEFAULT_NOT_BEFORE_MARGIN_SECS,
        }
    }
}

/// A token handed out by the cache, with its timing so callers can record credential use.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT itself; never log it.
    pub token: SecretString,
    /// `iat`.
    pub issued_at: i64,
    /// `nbf`.
    pub not_before: i64,
    /// `exp`.
    pub expires_at: i64,
    /// True when this call signed a new token rather than reusing the cached one.
    pub newly_issued: bool,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &self.token)
            .field("issued_at", &self.issued_at)
            .field("not_before", &self.not_before)
            .field("expires_at", &self.expires_at)
            .field("newly_issued", &self.newly_issued)
            .finish()
    }
}

#[derive(Default)]
struct CacheState {
    current: Option<IssuedToken>,
    last_call_issued: bool,
    issued_count: u64,
    /// Added to the policy's `nbf` margin after the server reported 1003 (our clock ahead).
    extra_margin: i64,
}

/// Hands out a cached JWT for one access/secret key pair, signing a new one when the cached
/// token has less than `renew_before_secs` of life left or was invalidated. Thread-safe.
pub struct TokenCache {
    access_key: String,
    secret_key: SecretString,
    policy: TokenPolicy,
    clock: Arc<dyn Clock>,
    state: Mutex<CacheState>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The access key is the JWT `iss` and identifies the account: keep it out of logs too.
        f.debug_struct("TokenCache")
            .field("access_key", &"<redacted>")
            .field("secret_key", &self.secret_key)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache on the system clock.
    ///
    /// # Errors
    /// Empty keys or a policy whose lifetime is not positive.
    pub fn new(
        access_key: impl Into<String>,
        secret_key: SecretString,
        policy: TokenPolicy,
    ) -> Result<Self, AuthError> {
        Self::with_clock(access_key, secret_key, policy, Arc::new(SystemClock))
    }

    /// A cache on the given clock (tests use [`crate::clock::ManualClock`]).
    ///
    /// # Errors
    /// As [`TokenCache::new`].
    pub fn with_clock(
        access_key: impl Into<String>,
        secret_key: SecretString,
        policy: TokenPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, AuthError> {
        let access_key = access_key.into();
        if access_key.is_empty() {
            return Err(AuthError::EmptyAccessKey);
        }
        if secret_key.is_empty() {
            return Err(AuthError::EmptySecretKey);
        }
        if policy.ttl_secs <= 0 {
            return Err(AuthError::InvalidLifetime {
                ttl_secs: policy.ttl_secs,
            });
        }
        Ok(Self {
            access_key,
            secret_key,
            policy,
            clock,
            state: Mutex::new(CacheState::default()),
        })
    }

    /// The access key (JWT `iss`), e.g. to compute a [`key_fingerprint`].
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The renewal policy in force.
    pub fn policy(&self) -> TokenPolicy {
        self.policy
    }

    /// Returns the cached token, or signs a new one when it is missing, invalidated, or has
    /// less than `renew_before_secs` left (or the clock moved back before its `nbf`).
    ///
    /// # Errors
    /// Signing failures ([`AuthError`]).
    pub fn token(&self) -> Result<IssuedToken, AuthError> {
        self.with_token(IssuedToken::clone)
    }

    /// Like [`TokenCache::token`], but lends the token to `f` instead of copying it: a
    /// caller on a hot path can keep what it derives from the token (a header, say) for as
    /// long as the token stays the same.
    ///
    /// # Errors
    /// Signing failures ([`AuthError`]).
    pub fn with_token<R>(&self, f: impl FnOnce(&IssuedToken) -> R) -> Result<R, AuthError> {
        let now = self.clock.now_unix();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = state.current.as_mut().filter(|current| {
            let remaining = current.expires_at.saturating_sub(now);
            remaining >= self.policy.renew_before_secs.max(0)
                && remaining > 0
                && now >= current.issued_at
        });
        if let Some(current) = fresh {
            current.newly_issued = false;
            let lent = f(current);
            state.last_call_issued = false;
            return Ok(lent);
        }
        let margin = self
            .policy
            .not_before_margin_secs
            .max(0)
            .saturating_add(state.extra_margin);
        let token = sign_jwt_with_margin(
            &self.access_key,
            self.secret_key.expose(),
            now,
            self.policy.ttl_secs,
            margin,
        )?;
        let issued = IssuedToken {
            token: SecretString::new(token),
            issued_at: now,
            not_before: now.saturating_sub(margin),
            expires_at: now.saturating_add(self.policy.ttl_secs),
            newly_issued: true,
        };
        let lent = f(&issued);
        state.current = Some(IssuedToken {
            newly_issued: false,
            ..issued
        });
        state.last_call_issued = true;
        state.issued_count = state.issued_count.saturating_add(1);
        Ok(lent)
    }

    /// Drops the cached token so the next [`TokenCache::token`] signs a new one (used after a
    /// 1003/1004 answer).
    pub fn invalidate(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.current = None;
    }

    /// Widens the `nbf` margin by `secs` (capped at half the lifetime) and drops the cached
    /// token: the reaction to 1003, which means the server's clock is behind ours.
    pub fn widen_not_before(&self, secs: i64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let cap = self.policy.ttl_secs / 2;
        state.extra_margin = state.extra_margin.saturating_add(secs.max(0)).min(cap);
        state.current = None;
    }

    /// The current clock reading of this cache, Unix seconds.
    pub fn now_unix(&self) -> i64 {
        self.clock.now_unix()
    }

    /// Whether the most recent [`TokenCache::token`] call signed a new token.
    pub fn last_call_issued(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_call_issued
    }

    /// How many tokens this cache has signed so far.
    pub fn issued_count(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .issued_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const AK: &str = "ak-test-0001";
    const SK: &str = "sk-test-secret-0001";
    const NOW: i64 = 1_774_711_071;

    fn b64json(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn hs256(secret: &str, header: &Value, claims: &Value) -> String {
        let signing_input = format!("{}.{}", b64json(header), b64json(claims));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn signed_token_has_documented_header_and_claims() {
        let token = sign_jwt(AK, SK, NOW, 1800).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "HS256", "typ": "JWT"}));
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"iss": AK, "exp": NOW + 1800, "nbf": NOW - 5, "iat": NOW})
        );
        // The signature is an independent HMAC over the first two parts.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SK.as_bytes()).unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        assert_eq!(
            parts[2],
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn sign_rejects_bad_inputs() {
        assert!(matches!(
            sign_jwt("", SK, NOW, 1800),
            Err(AuthError::EmptyAccessKey)
        ));
        assert!(matches!(
            sign_jwt(AK, "", NOW, 1800),
            Err(AuthError::EmptySecretKey)
        ));
        assert!(matches!(
            sign_jwt(AK, SK, NOW, 0),
            Err(AuthError::InvalidLifetime { .. })
        ));
        assert!(matches!(
            sign_jwt(AK, SK, i64::MAX, 10),
            Err(AuthError::TimeOverflow { .. })
        ));
    }

    #[test]
    fn round_trip_verifies_and_reports_claims() {
        let token = sign_jwt(AK, SK, NOW, 1800).unwrap();
        let claims = verify_jwt(&token, SK, NOW, 10, None).unwrap();
        assert_eq!(
            claims,
            TokenClaims {
                iss: AK.into(),
                exp: Some(NOW + 1800),
                nbf: Some(NOW - 5),
                iat: Some(NOW)
            }
        );
        assert_eq!(peek_issuer(&token).unwrap(), AK);
    }

    #[test]
    fn wrong_secret_is_invalid() {
        let token = sign_jwt(AK, SK, NOW, 1800).unwrap();
        assert_eq!(
            verify_jwt(&token, "other", NOW, 10, None),
            Err(TokenRejection::Invalid)
        );
        assert_eq!(
            verify_jwt(&token, "", NOW, 10, None),
            Err(TokenRejection::Invalid)
        );
    }

    #[test]
    fn tampered_payload_is_invalid() {
        let token = sign_jwt(AK, SK, NOW, 1800).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged = b64json(&serde_json::json!({"iss": AK, "exp": NOW + 99_999, "nbf": NOW - 5}));
        let bad = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(
            verify_jwt(&bad, SK, NOW, 10, None),
            Err(TokenRejection::Invalid)
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_invalid() {
        let claims = serde_json::json!({"iss": AK, "exp": NOW + 100, "nbf": NOW - 5});
        let none = format!(
            "{}.{}.",
            b64json(&serde_json::json!({"alg": "none"})),
            b64json(&claims)
        );
        assert!(looks_like_jwt(&none));
        assert_eq!(
            verify_jwt(&none, SK, NOW, 10, None),
            Err(TokenRejection::Invalid)
        );
        let hs512 = hs256(
            SK,
            &serde_json::json!({"alg": "HS512", "typ": "JWT"}),
            &claims,
        );
        assert_eq!(
            verify_jwt(&hs512, SK, NOW, 10, None),
            Err(TokenRejection::Invalid)
        );
    }

    #[test]
    fn typ_is_optional_and_extra_claims_are_ignored() {
        let claims = serde_json::json!({
            "iss": AK, "exp": NOW + 100, "nbf": NOW - 5, "aud": "someone", "sub": "x", "foo": [1]
        });
        let token = hs256(SK, &serde_json::json!({"alg": "HS256"}), &claims);
        let got = verify_jwt(&token, SK, NOW, 10, None).unwrap();
        assert_eq!(got.iat, None);
        assert_eq!(got.exp, Some(NOW + 100));
    }

    #[test]
    fn required_claims_are_enforced() {
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        for claims in [
            serde_json::json!({"exp": NOW + 100, "nbf": NOW - 5}),
            serde_json::json!({"iss": AK, "nbf": NOW - 5}),
            serde_json::json!({"iss": AK, "exp": NOW + 100}),
            serde_json::json!({"iss": 7, "exp": NOW + 100, "nbf": NOW - 5}),
            serde_json::json!({"iss": AK, "exp": "soon", "nbf": NOW - 5}),
        ] {
            let token = hs256(SK, &header, &claims);
            assert_eq!(
                verify_jwt(&token, SK, NOW, 10, None),
                Err(TokenRejection::Invalid),
                "{claims}"
            );
        }
    }

    #[test]
    fn time_rules_with_leeway() {
        let token = sign_jwt(AK, SK, NOW, 1800).unwrap(); // nbf = NOW-5, exp = NOW+1800
                                                          // Server clock 14 s behind: nbf is 9 s ahead, inside a 10 s leeway.
        assert!(verify_jwt(&token, SK, NOW - 14, 10, None).is_ok());
        assert_eq!(
            verify_jwt(&token, SK, NOW - 16, 10, None),
            Err(TokenRejection::NotYetValid)
        );
        assert!(verify_jwt(&token, SK, NOW + 1810, 10, None).is_ok());
        assert_eq!(
            verify_jwt(&token, SK, NOW + 1811, 10, None),
            Err(TokenRejection::Expired)
        );
        assert_eq!(
            verify_jwt(&token, SK, NOW + 1801, 0, None),
            Err(TokenRejection::Expired)
        );
    }

    #[test]
    fn max_lifetime_is_optional() {
        let token = sign_jwt(AK, SK, NOW, 7200).unwrap();
        assert!(verify_jwt(&token, SK, NOW, 10, None).is_ok());
        assert_eq!(
            verify_jwt(&token, SK, NOW, 10, Some(1800)),
            Err(TokenRejection::Invalid)
        );
        let ok = sign_jwt(AK, SK, NOW, 1800).unwrap();
        assert!(verify_jwt(&ok, SK, NOW, 10, Some(1800)).is_ok());
    }

    #[test]
    fn a_credential_with_any_whitespace_inside_is_invalid_ascii_or_not() {
        for c in (0u8..128)
            .map(char::from)
            .chain(['\u{a0}', '\u{2003}', '\u{3000}', 'é'])
        {
            let header = format!("Bearer ab{c}cd");
            let expected = if c.is_whitespace() {
                Err(TokenRejection::Invalid)
            } else {
                Ok(&header[7..])
            };
            assert_eq!(bearer_token(Some(&header)), expected, "{c:?}");
        }
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(None), Err(TokenRejection::Missing));
        assert_eq!(bearer_token(Some("")), Err(TokenRejection::Missing));
        assert_eq!(bearer_token(Some("   ")), Err(TokenRejection::Missing));
        assert_eq!(bearer_token(Some("Bearer")), Err(TokenRejection::Missing));
        assert_eq!(bearer_token(Some("Bearer ")), Err(TokenRejection::Missing));
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("BEARER a.b.c")), Ok("a.b.c"));
        assert_eq!(
            bearer_token(Some("Bearer  abc")),
            Err(TokenRejection::Invalid)
        );
        assert_eq!(
            bearer_token(Some("Bearer\tabc")),
            Err(TokenRejection::Invalid)
        );
        assert_eq!(
            bearer_token(Some("Basic abc")),
            Err(TokenRejection::Invalid)
        );
        assert_eq!(
            bearer_token(Some("Bearerabc")),
            Err(TokenRejection::Invalid)
        );
        assert_eq!(
            bearer_token(Some("Bearer a b")),
            Err(TokenRejection::Invalid)
        );
        assert_eq!(bearer_token(Some("Bé")), Err(TokenRejection::Invalid));
    }

    #[test]
    fn jwt_shape_detection() {
        assert!(looks_like_jwt(&sign_jwt(AK, SK, NOW, 1800).unwrap()));
        assert!(!looks_like_jwt("sk-live-0123456789abcdef"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt(".b.c"));
        assert!(!looks_like_jwt("a+b.c.d"));
        assert!(!looks_like_jwt(""));
    }

    #[test]
    fn peek_issuer_rejects_garbage() {
        assert_eq!(peek_issuer("opaque-key"), Err(TokenRejection::Invalid));
        assert_eq!(peek_issuer("eyJ.!!!.x"), Err(TokenRejection::Invalid));
        let no_iss = format!(
            "{}.{}.sig",
            b64json(&serde_json::json!({"alg":"HS256"})),
            b64json(&serde_json::json!({"exp": 1}))
        );
        assert_eq!(peek_issuer(&no_iss), Err(TokenRejection::Invalid));
    }

    #[test]
    fn rejection_codes_and_messages() {
        assert_eq!(TokenRejection::Missing.code(), 1001);
        assert_eq!(TokenRejection::Invalid.code(), 1002);
        assert_eq!(TokenRejection::NotYetValid.code(), 1003);
        assert_eq!(TokenRejection::Expired.code(), 1004);
        assert_eq!(TokenRejection::Missing.message(), "Authorization is empty");
        assert_eq!(
            TokenRejection::Invalid.message(),
            "Authorization is invalid"
        );
        assert_eq!(
            TokenRejection::NotYetValid.message(),
            "Authorization is not yet valid"
        );
        assert_eq!(
            TokenRejection::Expired.message(),
            "Authorization has expired"
        );
    }

    #[test]
    fn fingerprint_is_keyed_and_stable() {
        let a = key_fingerprint(b"k1", AK);
        assert_eq!(a.len(), 32);
        assert_eq!(a, key_fingerprint(b"k1", AK));
        assert_ne!(a, key_fingerprint(b"k2", AK));
        assert_ne!(a, key_fingerprint(b"k1", "other"));
    }

    #[test]
    fn cache_reuses_then_renews_before_expiry() {
        let clock = Arc::new(ManualClock::new(NOW));
        let cache =
            TokenCache::with_clock(AK, SK.into(), TokenPolicy::default(), clock.clone()).unwrap();
        let first = cache.token().unwrap();
        assert!(first.newly_issued && cache.last_call_issued());
        assert_eq!(
            (first.issued_at, first.not_before, first.expires_at),
            (NOW, NOW - 5, NOW + 1800)
        );
        clock.advance(1500); // 300 s left: still usable
        let second = cache.token().unwrap();
        assert!(!second.newly_issued && !cache.last_call_issued());
        assert_eq!(second.token, first.token);
        clock.advance(1); // 299 s left: renew
        let third = cache.token().unwrap();
        assert!(third.newly_issued && cache.last_call_issued());
        assert_ne!(third.token, first.token);
        assert_eq!(third.issued_at, NOW + 1501);
        assert_eq!(cache.issued_count(), 2);
        assert!(verify_jwt(third.token.expose(), SK, NOW + 1501, 0, None).is_ok());
    }

    #[test]
    fn cache_invalidate_and_clock_going_back() {
        let clock = Arc::new(ManualClock::new(NOW));
        let policy = TokenPolicy {
            not_before_margin_secs: 30,
            ..TokenPolicy::default()
        };
        let cache = TokenCache::with_clock(AK, SK.into(), policy, clock.clone()).unwrap();
        assert_eq!(cache.token().unwrap().not_before, NOW - 30);
        cache.invalidate();
        assert!(cache.token().unwrap().newly_issued);
        clock.advance(-60);
        assert!(
            cache.token().unwrap().newly_issued,
            "a token from the future is not reused"
        );
        assert_eq!(cache.issued_count(), 3);
        cache.widen_not_before(45);
        let wide = cache.token().unwrap();
        assert!(wide.newly_issued);
        assert_eq!(wide.not_before, wide.issued_at - 75);
        cache.widen_not_before(10_000);
        assert_eq!(
            cache.token().unwrap().not_before,
            NOW - 60 - 30 - 900,
            "capped at ttl/2"
        );
        assert!(!format!("{cache:?}").contains(SK));
        assert!(!format!("{cache:?}").contains(AK));
    }

    #[test]
    fn cache_is_shared_across_threads() {
        let clock = Arc::new(ManualClock::new(NOW));
        let cache =
            Arc::new(TokenCache::with_clock(AK, SK.into(), TokenPolicy::default(), clock).unwrap());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || cache.token().unwrap().token)
            })
            .collect();
        let tokens: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(tokens.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(cache.issued_count(), 1);
    }
}
