//! Ed25519 witness cosignatures (c2sp.org/tlog-cosignature, `cosignature/v1`).
//!
//! A cosignature is one more signature line on a checkpoint. Its key ID uses type byte 0x04,
//! so one Ed25519 key has different IDs as a note signer and as a cosigner. The signature
//! bytes are `u64 big-endian timestamp || Ed25519 signature` over
//!
//! ```text
//! cosignature/v1
//! time <timestamp>
//! <checkpoint text, final newline included>
//! ```
//!
//! Key encodings: we write `<name>+<0x04 key ID>+<base64(0x04 || public key)>` and the
//! matching `PRIVATE+KEY+...` form, as Go's `transparency-dev/formats/note` does in
//! `VKeyToCosignatureV1`. When reading, type 0x01 keys are also accepted and used as cosigner
//! keys, as that package's `NewVerifierForCosignatureV1` and `NewSignerForCosignatureV1` do; unlike
//! those functions we check the key ID against the type byte written in the key.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::checkpoint::Checkpoint;
use crate::keys::{
    encode_signer_key, encode_verifier_key, is_valid_key_name, key_id, split_blob,
    split_signer_key, split_verifier_key, KEY_TYPE_ED25519,
};
use crate::note::{NoteSignature, NoteVerifier};
use crate::{CosignatureError, KeyError};

/// Signature type byte of an Ed25519 `cosignature/v1`.
const KEY_TYPE_COSIGNATURE_V1: u8 = 0x04;

/// The largest timestamp a cosignature may carry, 2^63 - 1 seconds.
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// The message a cosigner signs for `checkpoint_text` at `timestamp`.
pub fn cosignature_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}").into_bytes()
}

/// Checks the cosigned text is a checkpoint, so a cosigner never vouches for something else.
fn check_cosigned(checkpoint_text: &str, timestamp: u64) -> Result<(), CosignatureError> {
    if timestamp > MAX_TIMESTAMP {
        return Err(CosignatureError::TimestampTooLarge { timestamp });
    }
    Checkpoint::parse(checkpoint_text)?;
    Ok(())
}

/// Decodes a cosigner key blob of type 0x01 or 0x04, checking the encoded key ID against the
/// ID that type gives, and returns the 0x04 key ID.
fn cosigner_id(name: &str, encoded_id: u32, ty: u8, public: &[u8; 32]) -> Result<u32, KeyError> {
    let computed = key_id(name, ty, public);
    if computed != encoded_id {
        return Err(KeyError::KeyIdMismatch {
            encoded: encoded_id,
            computed,
        });
    }
    Ok(key_id(name, KEY_TYPE_COSIGNATURE_V1, public))
}

/// A witness's Ed25519 cosigning key. The seed is zeroized on drop; `Debug` hides it.
#[derive(Clone)]
pub struct CosignerKey {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl CosignerKey {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        Self::from_signing_key(name, SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Builds a cosigner key from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        Self::from_signing_key(name, SigningKey::from_bytes(seed))
    }

    fn from_signing_key(name: &str, key: SigningKey) -> Result<Self, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::InvalidName { name: name.into() });
        }
        Ok(Self {
            name: name.into(),
            key_id: key_id(
                name,
                KEY_TYPE_COSIGNATURE_V1,
                key.verifying_key().as_bytes(),
            ),
            key,
        })
    }

    /// Decodes `PRIVATE+KEY+<name>+<key ID>+<base64(type || seed)>` with type 0x04 or 0x01.
    pub fn from_encoded(encoded: &str) -> Result<Self, KeyError> {
        let (name, encoded_id, blob) = split_signer_key(encoded)?;
        let (ty, seed) = split_blob(&blob, &[KEY_TYPE_COSIGNATURE_V1, KEY_TYPE_ED25519])?;
        let key = Self::from_seed(name, seed)?;
        cosigner_id(name, encoded_id, ty, key.key.verifying_key().as_bytes())?;
        Ok(key)
    }

    /// The private key string with type 0x04; a secret, never to be logged.
    pub fn encode(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.key.to_bytes());
        encode_signer_key(&self.name, self.key_id, KEY_TYPE_COSIGNATURE_V1, &seed)
    }

    /// The matching verifier.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The cosigner name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 0x04 key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Cosigns a checkpoint text at `timestamp` (POSIX seconds); `to_line` on the result gives
    /// the line to append to the checkpoint note.
    pub fn sign(
        &self,
        checkpoint_text: &str,
        timestamp: u64,
    ) -> Result<NoteSignature, CosignatureError> {
        check_cosigned(checkpoint_text, timestamp)?;
        let msg = cosignature_message(checkpoint_text, timestamp);
        let mut sig = Vec::with_capacity(72);
        sig.extend_from_slice(&timestamp.to_be_bytes());
        sig.extend_from_slice(&self.key.sign(&msg).to_bytes());
        Ok(NoteSignature::from_parts_unchecked(
            self.name.clone(),
            self.key_id,
            sig,
        ))
    }
}

impl fmt::Debug for CosignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CosignerKey")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

/// A witness's public cosigning key.
#[derive(Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// Builds a verifier from a name and a 32-byte public key.
    pub fn from_public_key(name: &str, public_key: &[u8; 32]) -> Result<Self, KeyError> {
        if !is_valid_key_name(name) {
            return Err(KeyError::InvalidName { name: name.into() });
        }
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| KeyError::InvalidPublicKey)?;
        Ok(Self {
            name: name.into(),
            key_id: key_id(name, KEY_TYPE_COSIGNATURE_V1, public_key),
            key,
        })
    }

    /// Decodes `<name>+<key ID>+<base64(type || public key)>` with type 0x04 or 0x01.
    pub fn from_encoded(encoded: &str) -> Result<Self, KeyError> {
        let (name, encoded_id, blob) = split_verifier_key(encoded)?;
        let (ty, public) = split_blob(&blob, &[KEY_TYPE_COSIGNATURE_V1, KEY_TYPE_ED25519])?;
        let v = Self::from_public_key(name, public)?;
        cosigner_id(name, encoded_id, ty, public)?;
        Ok(v)
    }

    /// The verifier key string with type 0x04.
    pub fn encode(&self) -> String {
        encode_verifier_key(
            &self.name,
            self.key_id,
            KEY_TYPE_COSIGNATURE_V1,
            self.key.as_bytes(),
        )
    }

    /// The cosigner name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 0x04 key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Checks `sig` cosigns `checkpoint_text`, returning its timestamp.
    ///
    /// Whether the timestamp is recent enough is the caller's policy.
    pub fn verify(
        &self,
        checkpoint_text: &str,
        sig: &NoteSignature,
    ) -> Result<u64, CosignatureError> {
        if sig.name() != self.name || sig.key_id() != self.key_id {
            return Err(CosignatureError::WrongKey {
                name: sig.name().into(),
                key_id: sig.key_id(),
            });
        }
        let bytes = sig.signature();
        let Some((ts, ed)) = bytes.split_first_chunk::<8>() else {
            return Err(CosignatureError::WrongLength {
                actual: bytes.len(),
            });
        };
        let ed = ed25519_dalek::Signature::from_slice(ed).map_err(|_| {
            CosignatureError::WrongLength {
                actual: bytes.len(),
            }
        })?;
        let timestamp = u64::from_be_bytes(*ts);
        check_cosigned(checkpoint_text, timestamp)?;
        let msg = cosignature_message(checkpoint_text, timestamp);
        use ed25519_dalek::Verifier as _;
        self.key
            .verify(&msg, &ed)
            .map_err(|_| CosignatureError::BadSignature {
                name: self.name.clone(),
            })?;
        Ok(timestamp)
    }
}

impl fmt::Debug for CosignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CosignatureVerifier")
            .field(&self.encode())
            .finish()
    }
}

impl NoteVerifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(text) else {
            return false;
        };
        if signature.is_empty() {
            return false;
        }
        let sig =
            NoteSignature::from_parts_unchecked(self.name.clone(), self.key_id, signature.to_vec());
        CosignatureVerifier::verify(self, text, &sig).is_ok()
    }
}
