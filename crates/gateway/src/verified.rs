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

use crate::actors::ActorIndex;

/// Entries kept at most; the map is emptied when it is full, which only costs re-verification.
const CAPACITY: usize = 8192;

struct Verified {
    /// The index the signature was checked against. A `Weak` keeps its address from being
    /// reused by a later index while the entry exists.
    index: Weak<ActorIndex>,
    claims: TokenClaims,
    key_fp: String,
}

/// Verified tokens, by their full text (signature included).
#[derive(Default)]
pub struct VerifiedTokens {
    map: Mutex<HashMap<String, Verified>>,
}

impl VerifiedTokens {
    /// The claims and key fingerprint of `token` if it was verified against `index`.
    pub fn get(&self, token: &str, index: &Arc<ActorIndex>) -> Option<(TokenClaims, String)> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let v = map.get(token)?;
        Weak::ptr_eq(&v.index, &Arc::downgrade(index)).then(|| (v.claims.clone(), v.key_fp.clone()))
    }

    /// Remembers a token whose signature verified against `index`.
    pub fn insert(
        &self,
        token: &str,
        index: &Arc<ActorIndex>,
        claims: TokenClaims,
        key_fp: String,
    ) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(
            token.to_owned(),
            Verified {
                index: Arc::downgrade(index),
                claims,
                key_fp,
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
        cache.insert("t", &old, claims(), "fp".into());
        assert_eq!(cache.get("t", &old), Some((claims(), "fp".to_owned())));
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
            cache.insert(&format!("t{i}"), &index, claims(), String::new());
        }
        let len = cache.map.lock().unwrap().len();
        assert!(len <= CAPACITY, "{len}");
        assert!(cache.get(&format!("t{CAPACITY}"), &index).is_some());
    }
}
