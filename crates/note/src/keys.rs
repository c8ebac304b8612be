//! Ed25519 note keys and their text encodings, as Go's `sumdb/note` writes them.
//!
//! A verifier key is `<name>+<8 hex key ID>+<base64(type || public key)>`; a signer key is
//! `PRIVATE+KEY+<name>+<key ID>+<base64(type || 32-byte seed)>`. Base64 may itself contain `+`,
//! so keys split into at most 3 or 5 parts. The key ID is the first four bytes of
//! `SHA-256(name || "\n" || type || public key)`, read big-endian.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::note::{NoteSignature, NoteVerifier};
use crate::KeyError;

/// Signature type byte of a plain Ed25519 note signature.
pub const KEY_TYPE_ED25519: u8 = 0x01;

/// Whether `name` may name a note key: non-empty, no Unicode white space, no `+`.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

/// The key ID: `SHA-256(name || 0x0A || key_type || public_key)[..4]`, big-endian.
pub fn key_id(name: &str, key_type: u8, public_key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([key_type]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Parses the 8-hex-digit key ID field. Go accepts either letter case; so do we.
pub(crate) fn parse_key_id(s: &str) -> Result<u32, KeyError> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyError::MalformedKeyId);
    }
    u32::from_str_radix(s, 16).map_err(|_| KeyError::MalformedKeyId)
}

/// Splits a verifier key into name, key ID and decoded `type || key` blob.
pub(crate) fn split_verifier_key(s: &str) -> Result<(&str, u32, Vec<u8>), KeyError> {
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::WrongPartCount {
            kind: "verifier",
            expected: 3,
        });
    };
    if !is_valid_key_name(name) {
        return Err(KeyError::InvalidName { name: name.into() });
    }
    let id = parse_key_id(id)?;
    let blob = STANDARD.decode(b64).map_err(|_| KeyError::InvalidBase64)?;
    Ok((name, id, blob))
}

/// Splits a signer key into name, key ID and decoded `type || seed` blob (zeroized on drop).
pub(crate) fn split_signer_key(s: &str) -> Result<(&str, u32, Zeroizing<Vec<u8>>), KeyError> {
    let mut parts = s.splitn(5, '+');
    let (Some(p1), Some(p2), Some(name), Some(id), Some(b64)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(KeyError::WrongPartCount {
            kind: "signer",
            expected: 5,
        });
    };
    if p1 != "PRIVATE" || p2 != "KEY" {
        return Err(KeyError::NotPrivateKey);
    }
    if !is_valid_key_name(name) {
        return Err(KeyError::InvalidName { name: name.into() });
    }
    let id = parse_key_id(id)?;
    let blob = Zeroizing::new(STANDARD.decode(b64).map_err(|_| KeyError::InvalidBase64)?);
    Ok((name, id, blob))
}

/// Splits `type || 32 bytes` into its parts, checking the type is one of `allowed`.
pub(crate) fn split_blob<'a>(
    blob: &'a [u8],
    allowed: &[u8],
) -> Result<(u8, &'a [u8; 32]), KeyError> {
    let Some((&ty, key)) = blob.split_first() else {
        return Err(KeyError::WrongKeyLength {
            expected: 32,
            actual: 0,
        });
    };
    if !allowed.contains(&ty) {
        return Err(KeyError::UnsupportedKeyType { found: ty });
    }
    let key: &[u8; 32] = key.try_into().map_err(|_| KeyError::WrongKeyLength {
        expected: 32,
        actual: key.len(),
    })?;
    Ok((ty, key))
}

pub(crate) fn encode_verifier_key(name: &str, id: u32, ty: u8, public: &[u8; 32]) -> String {
    let mut blob = [0u8; 33];
    blob[0] = ty;
    blob[1..].copy_from_slice(public);
    format!("{name}+{id:08x}+{}", STANDARD.encode(blob))
}

pub(crate) fn encode_signer_key(name: &str, id: u32, ty: u8, seed: &[u8; 32]) -> Zeroizing<String> {
    let mut blob = Zeroizing::new([0u8; 33]);
    blob[0] = ty;
    blob[1..].copy_from_slice(seed);
    let b64 = Zeroizing::new(STANDARD.encode(blob.as_slice()));
    Zeroizing::new(format!("PRIVATE+KEY+{name}+{id:08x}+{}", b64.as_str()))
}

/// An Ed25519 note signing key with its name. The seed is zeroized on drop.
///
/// `Debug` prints the name and key ID only.
#[derive(Clone)]
pub struct Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl Signer {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_signing_key(name, key)
    }

    /// Builds a signer from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        Self::from_signing_key(name, SigningKey::from_bytes(seed))
    }

    fn from_signing_key(name: &str, key: SigningKey) -> Result<Self, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::InvalidName { name: name.into() });
        }
        let key_id = key_id(name, KEY_TYPE_ED25519, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.into(),
            key_id,
            key,
        })
    }

    /// Decodes `PRIVATE+KEY+<name>+<key ID>+<base64(0x01 || seed)>`, checking the key ID
    /// against the derived public key as Go does.
    pub fn from_encoded(encoded: &str) -> Result<Self, KeyError> {
        let (name, encoded_id, blob) = split_signer_key(encoded)?;
        let (_, seed) = split_blob(&blob, &[KEY_TYPE_ED25519])?;
        let signer = Self::from_seed(name, seed)?;
        if signer.key_id != encoded_id {
            return Err(KeyError::KeyIdMismatch {
                encoded: encoded_id,
                computed: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// The private key string; a secret, never to be logged.
    pub fn encode(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.key.to_bytes());
        encode_signer_key(&self.name, self.key_id, KEY_TYPE_ED25519, &seed)
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Signs `text` (the whole note text, final newline included).
    pub fn sign(&self, text: &[u8]) -> NoteSignature {
        let sig = self.key.sign(text).to_bytes().to_vec();
        NoteSignature::from_parts_unchecked(self.name.clone(), self.key_id, sig)
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

/// An Ed25519 note verifier key with its name.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl Verifier {
    /// Builds a verifier from a name and a 32-byte public key.
    pub fn from_public_key(name: &str, public_key: &[u8; 32]) -> Result<Self, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::InvalidName { name: name.into() });
        }
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| KeyError::InvalidPublicKey)?;
        Ok(Self {
            name: name.into(),
            key_id: key_id(name, KEY_TYPE_ED25519, public_key),
            key,
        })
    }

    /// Decodes `<name>+<key ID>+<base64(0x01 || public key)>`, checking the key ID.
    pub fn from_encoded(encoded: &str) -> Result<Self, KeyError> {
        let (name, encoded_id, blob) = split_verifier_key(encoded)?;
        let (_, public) = split_blob(&blob, &[KEY_TYPE_ED25519])?;
        let v = Self::from_public_key(name, public)?;
        if v.key_id != encoded_id {
            return Err(KeyError::KeyIdMismatch {
                encoded: encoded_id,
                computed: v.key_id,
            });
        }
        Ok(v)
    }

    /// The verifier key string.
    pub fn encode(&self) -> String {
        encode_verifier_key(
            &self.name,
            self.key_id,
            KEY_TYPE_ED25519,
            self.key.as_bytes(),
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Verifier").field(&self.encode()).finish()
    }
}

impl NoteVerifier for Verifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        use ed25519_dalek::Verifier as _;
        // Go's ed25519.Verify is the cofactorless RFC 8032 check that dalek's `verify` does.
        ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|sig| self.key.verify(text, &sig).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_follow_note_rules() {
        assert!(is_valid_key_name("example.com/log"));
        assert!(is_valid_key_name("PeterNeumann"));
        assert!(!is_valid_key_name(""));
        assert!(!is_valid_key_name("a b"));
        assert!(!is_valid_key_name("a+b"));
        assert!(!is_valid_key_name("a\u{a0}b"));
        assert!(!is_valid_key_name("a\u{3000}b"));
        assert!(!is_valid_key_name("a\tb"));
    }

    #[test]
    fn signer_debug_hides_the_seed() -> Result<(), KeyError> {
        let s = Signer::from_seed("log", &[7; 32])?;
        let debug = format!("{s:?}");
        let encoded = s.encode();
        let b64 = encoded.rsplit('+').next().unwrap_or_default();
        assert!(debug.contains("log"));
        assert!(!debug.contains(b64), "{debug}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        Ok(())
    }

    #[test]
    fn generated_keys_round_trip_through_encodings() -> Result<(), KeyError> {
        let s = Signer::generate("example.com/log")?;
        let again = Signer::from_encoded(&s.encode())?;
        assert_eq!(again.encode(), s.encode());
        assert_eq!(
            Verifier::from_encoded(&s.verifier().encode())?,
            s.verifier()
        );
        Ok(())
    }

    #[test]
    fn malformed_keys_are_rejected() {
        let good = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        assert!(Verifier::from_encoded(good).is_ok());
        let cases: &[(&str, KeyError)] = &[
            (
                "PeterNeumann+c74f20a3",
                KeyError::WrongPartCount {
                    kind: "verifier",
                    expected: 3,
                },
            ),
            (
                "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                KeyError::InvalidName {
                    name: "Peter Neumann".into(),
                },
            ),
            (
                "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                KeyError::MalformedKeyId,
            ),
            (
                "PeterNeumann+c74f20ag+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                KeyError::MalformedKeyId,
            ),
            (
                "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
                KeyError::InvalidBase64,
            ),
            (
                "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                KeyError::KeyIdMismatch {
                    encoded: 0xc74f20a4,
                    computed: 0xc74f20a3,
                },
            ),
            (
                "PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                KeyError::UnsupportedKeyType { found: 0x02 },
            ),
            (
                "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy",
                KeyError::WrongKeyLength {
                    expected: 32,
                    actual: 29,
                },
            ),
            (
                "PeterNeumann+c74f20a3+",
                KeyError::WrongKeyLength {
                    expected: 32,
                    actual: 0,
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                Verifier::from_encoded(input).as_ref(),
                Err(expected),
                "{input}"
            );
        }
        let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        assert!(Signer::from_encoded(skey).is_ok());
        assert_eq!(
            Signer::from_encoded(&skey.replace("PRIVATE", "PUBLIC")).map(|_| ()),
            Err(KeyError::NotPrivateKey)
        );
        assert_eq!(
            Signer::from_encoded(&skey.replace("c74f20a3", "c74f20a2")).map(|_| ()),
            Err(KeyError::KeyIdMismatch {
                encoded: 0xc74f20a2,
                computed: 0xc74f20a3
            })
        );
        assert_eq!(
            Signer::from_encoded("PRIVATE+KEY+x").map(|_| ()),
            Err(KeyError::WrongPartCount {
                kind: "signer",
                expected: 5
            })
        );
    }
}
