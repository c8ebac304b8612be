//! The ledger's view of checkpoint signing: C2SP signed notes over tlog checkpoints.
//!
//! Interim implementation of the few note operations the ledger needs (Ed25519 signing key in
//! Go's `PRIVATE+KEY+` encoding, one signature line, verification under one pinned key).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use kling_audit_merkle::Hash;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const ALG_ED25519: u8 = 0x01;

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let h = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update([b'\n', ALG_ED25519])
        .chain_update(public)
        .finalize();
    [h[0], h[1], h[2], h[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// An Ed25519 checkpoint signer whose key name is the ledger's origin.
pub struct Signer {
    name: String,
    key: SigningKey,
}

impl Signer {
    pub fn generate(origin: &str) -> Result<Self, String> {
        if !valid_name(origin) {
            return Err(format!(
                "{origin:?} is not a valid key name (no spaces or '+')"
            ));
        }
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Ok(Signer {
            name: origin.to_owned(),
            key,
        })
    }

    pub fn from_encoded(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.splitn(5, '+').collect();
        let [p, k, name, id, blob] = parts[..] else {
            return Err("expected PRIVATE+KEY+<name>+<id>+<base64>".into());
        };
        if p != "PRIVATE" || k != "KEY" || !valid_name(name) {
            return Err("expected PRIVATE+KEY+<name>+<id>+<base64>".into());
        }
        let raw = Zeroizing::new(B64.decode(blob).map_err(|e| format!("bad base64: {e}"))?);
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err("not an Ed25519 signer key".into());
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&raw[1..]);
        let key = SigningKey::from_bytes(&seed);
        if hex::encode(key_id(name, key.verifying_key().as_bytes())) != id {
            return Err("key id does not match the key".into());
        }
        Ok(Signer {
            name: name.to_owned(),
            key,
        })
    }

    pub fn encode(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(vec![ALG_ED25519]);
        raw.extend_from_slice(self.key.as_bytes());
        let id = key_id(&self.name, self.key.verifying_key().as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(id),
            B64.encode(&*raw)
        ))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier_key(&self) -> String {
        let public = self.key.verifying_key();
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(public.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(key_id(&self.name, public.as_bytes())),
            B64.encode(raw)
        )
    }

    /// Signs the checkpoint `origin / size / root` and returns the signed note.
    pub fn sign_checkpoint(&self, size: u64, root: &Hash) -> Result<String, String> {
        let text = format!("{}\n{size}\n{}\n", self.name, B64.encode(root));
        let sig = self.key.sign(text.as_bytes());
        let mut blob = key_id(&self.name, self.key.verifying_key().as_bytes()).to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// The signed content of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBody {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

/// Why a stored checkpoint was not accepted.
#[derive(Debug, Clone)]
pub struct CheckpointProblem {
    pub kind: crate::verify::FaultKind,
    pub message: String,
}

struct PinnedKey {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

fn parse_verifier(text: &str) -> Result<PinnedKey, String> {
    let parts: Vec<&str> = text.trim().splitn(3, '+').collect();
    let [name, id, blob] = parts[..] else {
        return Err("expected <name>+<id>+<base64>".into());
    };
    let raw = B64.decode(blob).map_err(|e| format!("bad base64: {e}"))?;
    if raw.len() != 33 || raw[0] != ALG_ED25519 {
        return Err("not an Ed25519 verifier key".into());
    }
    let public: [u8; 32] = raw[1..]
        .try_into()
        .map_err(|_| "bad key length".to_owned())?;
    let key = VerifyingKey::from_bytes(&public).map_err(|e| format!("bad public key: {e}"))?;
    let kid = key_id(name, &public);
    if hex::encode(kid) != id {
        return Err("key id does not match the key".into());
    }
    Ok(PinnedKey {
        name: name.to_owned(),
        id: kid,
        key,
    })
}

/// Parses a checkpoint note; with a verifier key, also checks its signature and origin.
pub fn open_checkpoint(
    note: &str,
    verifier_key: Option<&str>,
) -> Result<CheckpointBody, CheckpointProblem> {
    use crate::verify::FaultKind;
    let problem = |kind, message: String| CheckpointProblem { kind, message };
    let Some(split) = note.rfind("\n\n") else {
        return Err(problem(
            FaultKind::BadCheckpoint,
            "not a signed note: no blank line before signatures".into(),
        ));
    };
    let text = &note[..split + 1];
    let sigs = &note[split + 2..];
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() < 3 {
        return Err(problem(
            FaultKind::BadCheckpoint,
            "not a checkpoint: fewer than 3 lines".into(),
        ));
    }
    let size: u64 = lines[1]
        .parse()
        .ok()
        .filter(|_| lines[1] == "0" || !lines[1].starts_with('0'))
        .ok_or_else(|| {
            problem(
                FaultKind::BadCheckpoint,
                "not a checkpoint: bad tree size".into(),
            )
        })?;
    let root: Hash = B64
        .decode(lines[2])
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or_else(|| {
            problem(
                FaultKind::BadCheckpoint,
                "not a checkpoint: bad root hash".into(),
            )
        })?;
    let body = CheckpointBody {
        origin: lines[0].to_owned(),
        size,
        root,
    };
    let Some(vk) = verifier_key else {
        return Ok(body);
    };
    let pinned = parse_verifier(vk).map_err(|e| {
        problem(
            FaultKind::BadSignature,
            format!("the verifier key is malformed: {e}"),
        )
    })?;
    let mut verified = false;
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            return Err(problem(
                FaultKind::BadCheckpoint,
                "malformed signature line".into(),
            ));
        };
        let Some((name, b64)) = rest.split_once(' ') else {
            return Err(problem(
                FaultKind::BadCheckpoint,
                "malformed signature line".into(),
            ));
        };
        let Ok(blob) = B64.decode(b64) else { continue };
        if name != pinned.name || blob.len() != 68 || blob[..4] != pinned.id {
            continue;
        }
        let sig = ed25519_dalek::Signature::from_slice(&blob[4..])
            .map_err(|_| problem(FaultKind::BadSignature, "malformed signature".into()))?;
        if pinned.key.verify_strict(text.as_bytes(), &sig).is_err() {
            return Err(problem(
                FaultKind::BadSignature,
                format!("checkpoint of size {size} has a signature that does not verify"),
            ));
        }
        verified = true;
    }
    if !verified {
        return Err(problem(
            FaultKind::UnknownKey,
            format!(
                "checkpoint of size {size} is not signed by the pinned key {}",
                pinned.name
            ),
        ));
    }
    if body.origin != pinned.name {
        return Err(problem(
            FaultKind::UnknownKey,
            format!(
                "checkpoint origin {:?} is not the key's log {:?}",
                body.origin, pinned.name
            ),
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_sumdb_note_vector_key_round_trips() {
        let enc = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        let s = Signer::from_encoded(enc).unwrap();
        assert_eq!(&*s.encode(), enc);
        assert_eq!(
            s.verifier_key(),
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        );
    }

    #[test]
    fn checkpoint_vector_from_the_reference() {
        let s = Signer::from_encoded(
            "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        )
        .unwrap();
        let root: Hash = B64
            .decode("XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=")
            .unwrap()
            .try_into()
            .unwrap();
        let note = s.sign_checkpoint(8, &root).unwrap();
        assert!(note.ends_with("\u{2014} PeterNeumann x08gozdSgLMzAnw63LH1RGViJhUfW60EUGKY7Kmr004fQNOSqfrcd1hIk3BCtdcLWIqvGtX67sL24VN+44uTlxMnbAA=\n"), "{note}");
        let body = open_checkpoint(&note, Some(&s.verifier_key())).unwrap();
        assert_eq!((body.size, body.root), (8, root));
        let forged = note.replace("\n8\n", "\n9\n");
        assert!(open_checkpoint(&forged, Some(&s.verifier_key())).is_err());
        let other = Signer::generate("PeterNeumann").unwrap();
        assert!(open_checkpoint(&note, Some(&other.verifier_key())).is_err());
    }
}
