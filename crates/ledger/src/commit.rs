//! Keyed commitments: how prompts, credentials and other sensitive values enter records.
//!
//! A commitment is `hex(HMAC-SHA256(commit key, label || 0x00 || value))`. Without the
//! deployment's commit key nobody can test a guess against it (an unkeyed SHA-256 of a
//! templated prompt can be guessed back); with it, an auditor can check whether a given prompt
//! was submitted (`kling-audit match-prompt`), or whether a given path or query was requested
//! (`kling-audit match-path`). The label keeps commitments of different kinds of values apart.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use zeroize::Zeroizing;

/// Label for prompts and other free text.
pub const LABEL_TEXT: &str = "text";
/// Label for access keys and other credential identifiers.
pub const LABEL_KEY: &str = "key";
/// Label for request paths, which may carry caller data (ids, names, tokens).
pub const LABEL_PATH: &str = "path";
/// Label for request query strings, which may carry caller data in values a record omits.
pub const LABEL_QUERY: &str = "query";

/// Computes commitments under one deployment's commit key.
#[derive(Clone)]
pub struct Commitments {
    key: Arc<Zeroizing<[u8; 32]>>,
}

impl Commitments {
    pub fn new(key: [u8; 32]) -> Self {
        Commitments {
            key: Arc::new(Zeroizing::new(key)),
        }
    }

    /// The commitment of `value` under `label`.
    pub fn commit(&self, label: &str, value: &[u8]) -> String {
        let mut m =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(&**self.key).expect("HMAC takes any key");
        m.update(label.as_bytes());
        m.update(&[0]);
        m.update(value);
        hex::encode(m.finalize().into_bytes())
    }

    /// Commitment of free text such as a prompt.
    pub fn text(&self, value: &str) -> String {
        self.commit(LABEL_TEXT, value.as_bytes())
    }

    /// Commitment of a request path, exactly as sent (escapes kept, without the query).
    pub fn path(&self, path: &str) -> String {
        self.commit(LABEL_PATH, path.as_bytes())
    }

    /// Commitment of a request's query string, exactly as sent (escapes kept, without the `?`).
    pub fn query(&self, query: &str) -> String {
        self.commit(LABEL_QUERY, query.as_bytes())
    }

    /// A short, stable fingerprint of a credential identifier (an access key, a JWT `iss`):
    /// the first 16 hex digits of its commitment, prefixed `kf_`.
    pub fn key_fingerprint(&self, access_key: &str) -> String {
        format!(
            "kf_{}",
            &self.commit(LABEL_KEY, access_key.as_bytes())[..16]
        )
    }
}

impl std::fmt::Debug for Commitments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Commitments(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_keys_separate_commitments() {
        let a = Commitments::new([1; 32]);
        let b = Commitments::new([2; 32]);
        assert_ne!(a.text("x"), b.text("x"));
        assert_ne!(a.commit(LABEL_TEXT, b"x"), a.commit(LABEL_KEY, b"x"));
        assert_ne!(a.text("/v1/x"), a.path("/v1/x"));
        assert_eq!(a.path("/v1/x"), a.commit(LABEL_PATH, b"/v1/x"));
        assert_ne!(a.query("x=1"), a.path("x=1"));
        assert_ne!(a.query("x=1"), a.text("x=1"));
        assert_eq!(a.query("x=1"), a.commit(LABEL_QUERY, b"x=1"));
        assert_eq!(a.text("a cat"), a.text("a cat"));
        assert!(a.key_fingerprint("AK123").starts_with("kf_"));
        assert_eq!(a.key_fingerprint("AK123").len(), 19);
    }
}
