//! Fuzzes the JWT handling of `kling_api::auth`: `verify_jwt`, `peek_issuer`, `looks_like_jwt`
//! and `bearer_token` on arbitrary strings. A token that verifies must name the issuer that
//! `peek_issuer` reads, and a token signed for any access key must verify to that key.
#![no_main]

use kling_api::auth::{bearer_token, looks_like_jwt, peek_issuer, sign_jwt, verify_jwt};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-key";
const NOW: i64 = 1_780_000_000;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let peeked = peek_issuer(&s);
    let shaped = looks_like_jwt(&s);
    for (leeway, max) in [(0, None), (5, Some(1800))] {
        if let Ok(claims) = verify_jwt(&s, SECRET, NOW, leeway, max) {
            assert!(shaped);
            assert_eq!(peeked.as_deref(), Ok(claims.iss.as_str()));
            assert!(verify_jwt(&s, "another-secret", NOW, leeway, max).is_err());
        }
    }
    let _ = verify_jwt(&s, "", NOW, 0, None);
    if let Ok(token) = bearer_token(Some(&s)) {
        assert!(!token.is_empty());
        assert!(!token.chars().any(char::is_whitespace));
        assert!(s.ends_with(token));
    }

    // Round trip: whatever the access key, the signed token verifies to it.
    let ttl = 1 + (data.len() as i64 % 3600);
    if let Ok(token) = sign_jwt(&s, SECRET, NOW, ttl) {
        let claims = verify_jwt(&token, SECRET, NOW, 0, None).expect("own token must verify");
        assert_eq!(claims.iss, s);
        assert_eq!(claims.exp, Some(NOW + ttl));
        assert_eq!(peek_issuer(&token).as_deref(), Ok(&*s));
        assert!(verify_jwt(&token, SECRET, NOW + ttl + 1, 0, None).is_err());
    }
});
