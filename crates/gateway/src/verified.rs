//! Tokens whose signature the gateway has already checked.
//!
//! Kling clients sign one JWT and reuse it until shortly before it expires, so most requests
//! carry a token the gateway has seen. Remembering the verified claims turns an HMAC, two
//! base64 decodes and a JSON parse into one map lookup. The time rules are applied again on
//! every use, and an entry only counts for the actor index it was verified against, so a
//! reloaded store (a new secret, a removed actor) is never bypassed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use kling_api::auth::TokenClaims;
use serde_json::{json, Value};

use crate::actors::ActorIndex;

/// Entries kept at most; the map is emptied when it is full, which only costs re-verification.
const CAPACITY: usize = 8192;

/// A token whose signature verified, with what every request carrying it needs.
#[derive(Debug, PartialEq)]
pub struct Verified {
    pub claims: TokenClaims,
    /// The keyed fingerprint of the access key.
    pub key_fp: String,
    /// The `credential` field of the token's request records, made once per token rather
    /// than once per request.
    pub credential: Arc<Value>,
}

impl Verified {
    pub fn new(claims: TokenClaims, key_fp: String) -> Self {
        let credential = Arc::new(json!({
            "kind": "jwt", "key_fp": key_fp, "verified": true,
            "iat": claims.iat, "nbf": claims.nbf, "exp": claims.exp,
        }));
        Verified {
            claims,
            key_fp,
            credential,
        }
    }
}

struct Entry {
    /// The index the signature was checked against. A `Weak` keeps its address from being
    /// reused by a later index while the entry exists.
    index: Weak<ActorIndex>,
    verified: Arc<Verified>,
}

/// Verified tokens, by their full text (signature included).
#[derive(Default)]
pub struct VerifiedTokens {
    map: Mutex<HashMap<String, Entry>>,
}

impl VerifiedTokens {
    /// What `token` verified to, if it was verified against `index`.
    pub fn get(&self, token: &str, index: &Arc<ActorIndex>) -> Option<Arc<Verified>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let e = map.get(token)?;
        // Compared by address, without making a `Weak` of `index`: that would bump its shared
        // count twice on every call.
        std::ptr::eq(e.index.as_ptr(), Arc::as_ptr(index)).then(|| Arc::clone(&e.verified))
    }

    /// Remembers a token whose signature verified against `index`.
    pub fn insert(&self, token: &str, index: &Arc<ActorIndex>, verified: Arc<Verified>) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(
            token.to_owned(),
            Entry {
                index: Arc::downgrade(index),
                verified,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> TokenClaims {
        TokenClaims {
            iss: "ak".into(),
            exp: Some(2_000),
            nbf: Some(1_000),
            iat: None,
        }
    }

    #[test]
    fn a_token_counts_only_for_the_index_it_was_verified_against() {
        let cache = VerifiedTokens::default();
        let old = Arc::new(ActorIndex::default());
        let verified = Arc::new(Verified::new(claims(), "fp".into()));
        cache.insert("t", &old, Arc::clone(&verified));
        assert_eq!(cache.get("t", &old), Some(verified));
        assert_eq!(cache.get("other", &old), None);
        let reloaded = Arc::new(ActorIndex::default());
        assert_eq!(
            cache.get("t", &reloaded),
            None,
            "a reloaded store verifies again"
        );
        drop(old);
        let again = Arc::new(ActorIndex::default());
        assert_eq!(
            cache.get("t", &again),
            None,
            "a freed index's address is never matched"
        );
    }

    #[test]
    fn a_full_cache_starts_over_instead_of_growing() {
        let cache = VerifiedTokens::default();
        let index = Arc::new(ActorIndex::default());
        for i in 0..=CAPACITY {
            let verified = Arc::new(Verified::new(claims(), String::new()));
            cache.insert(&format!("t{i}"), &index, verified);
        }
        let len = cache.map.lock().unwrap().len();
        assert!(len <= CAPACITY, "{len}");
        assert!(cache.get(&format!("t{CAPACITY}"), &index).is_some());
    }
}
