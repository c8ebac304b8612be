//! The ledger's view of checkpoint signing: C2SP signed notes over tlog checkpoints.
//!
//! A thin adapter over `kling_audit_note`, which owns the byte formats. It keeps the small API
//! the writer, the verifier and the proof bundles use (one Ed25519 key whose name is the
//! ledger's origin, one pinned verifier key) and maps note failures onto the verifier's fault
//! kinds: an unreadable note is `bad_checkpoint`, a failing signature by the pinned key is
//! `bad_signature`, and a note without the pinned key's signature, or naming another log, is
//! `unknown_key`.

use kling_audit_merkle::Hash;
use kling_audit_note::{Checkpoint, Note, NoteError, Verifier};
use zeroize::Zeroizing;

use crate::verify::FaultKind;

/// An Ed25519 checkpoint signer whose key name is the ledger's origin.
#[derive(Clone)]
pub struct Signer {
    inner: kling_audit_note::Signer,
}

impl Signer {
    /// A fresh key for `origin` from the operating system's random source.
    pub fn generate(origin: &str) -> Result<Self, String> {
        kling_audit_note::Signer::generate(origin)
            .map(|inner| Signer { inner })
            .map_err(|e| format!("cannot make a key named {origin:?}: {e}"))
    }

    /// Decodes Go's `PRIVATE+KEY+<name>+<id>+<base64>`; the error never echoes the key.
    pub fn from_encoded(text: &str) -> Result<Self, String> {
        kling_audit_note::Signer::from_encoded(text)
            .map(|inner| Signer { inner })
            .map_err(|e| format!("not a checkpoint signer key: {e}"))
    }

    /// The private key string; a secret, never to be logged.
    pub fn encode(&self) -> Zeroizing<String> {
        self.inner.encode()
    }

    /// The key name, which is the ledger's origin.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// The public verifier key, `<origin>+<id>+<base64>`.
    pub fn verifier_key(&self) -> String {
        self.inner.verifier().encode()
    }

    /// Signs the checkpoint `origin / size / root` and returns the signed note.
    pub fn sign_checkpoint(&self, size: u64, root: &Hash) -> Result<String, String> {
        let cp = Checkpoint::new(self.inner.name(), size, *root)
            .map_err(|e| format!("cannot form checkpoint of size {size}: {e}"))?;
        let note = kling_audit_note::sign_checkpoint(&cp, &self.inner)
            .map_err(|e| format!("cannot sign checkpoint of size {size}: {e}"))?;
        // A signed note holds only validated UTF-8; the lossy path is never taken.
        Ok(String::from_utf8_lossy(&note.to_bytes()).into_owned())
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
    pub kind: FaultKind,
    pub message: String,
}

impl std::fmt::Display for CheckpointProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for CheckpointProblem {}

fn problem(kind: FaultKind, message: String) -> CheckpointProblem {
    CheckpointProblem { kind, message }
}

/// Parses a signed note and its checkpoint text, checking no signature.
pub fn parse_checkpoint_note(note: &str) -> Result<(Note, CheckpointBody), CheckpointProblem> {
    let parsed = Note::parse(note.as_bytes())
        .map_err(|e| problem(FaultKind::BadCheckpoint, format!("not a signed note: {e}")))?;
    let cp = Checkpoint::from_note(&parsed)
        .map_err(|e| problem(FaultKind::BadCheckpoint, format!("not a checkpoint: {e}")))?;
    let body = CheckpointBody {
        origin: cp.origin,
        size: cp.size,
        root: cp.root,
    };
    Ok((parsed, body))
}

/// Parses a checkpoint note; with a verifier key, also checks its signature and origin.
///
/// Signatures by other keys (for example witness cosignatures) are ignored, as
/// c2sp.org/signed-note requires.
pub fn open_checkpoint(
    note: &str,
    verifier_key: Option<&str>,
) -> Result<CheckpointBody, CheckpointProblem> {
    let (parsed, body) = parse_checkpoint_note(note)?;
    let Some(vk) = verifier_key else {
        return Ok(body);
    };
    let pinned = Verifier::from_encoded(vk.trim()).map_err(|e| {
        problem(
            FaultKind::BadSignature,
            format!("the verifier key is malformed: {e}"),
        )
    })?;
    let size = body.size;
    match parsed.verify(std::slice::from_ref(&pinned)) {
        Ok(_) => {}
        Err(NoteError::NoTrustedSignature { .. }) => {
            return Err(problem(
                FaultKind::UnknownKey,
                format!(
                    "checkpoint of size {size} is not signed by the pinned key {}",
                    pinned.name()
                ),
            ))
        }
        Err(e) => {
            return Err(problem(
                FaultKind::BadSignature,
                format!("checkpoint of size {size}: {e}"),
            ))
        }
    }
    if body.origin != pinned.name() {
        return Err(problem(
            FaultKind::UnknownKey,
            format!(
                "checkpoint origin {:?} is not the key's log {:?}",
                body.origin,
                pinned.name()
            ),
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;

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

    #[test]
    fn failures_map_to_the_documented_fault_kinds() {
        let s = Signer::generate("example.test/log").unwrap();
        let key = s.verifier_key();
        let note = s.sign_checkpoint(3, &[7; 32]).unwrap();
        let kind = |n: &str, k: Option<&str>| open_checkpoint(n, k).map(|_| ()).map_err(|p| p.kind);
        assert_eq!(kind(&note, Some(&key)), Ok(()));
        // The pinned key's signature over altered text fails: bad_signature.
        let forged = note.replace("\n3\n", "\n4\n");
        assert_eq!(kind(&forged, Some(&key)), Err(FaultKind::BadSignature));
        // No signature by the pinned key at all: unknown_key.
        let other = Signer::generate("example.test/log").unwrap();
        assert_eq!(
            kind(&note, Some(&other.verifier_key())),
            Err(FaultKind::UnknownKey)
        );
        // A key whose name is not the origin, signing the origin's text: unknown_key.
        let stranger = Signer::generate("example.test/other").unwrap();
        let text = note.split("\n\n").next().unwrap().to_owned() + "\n";
        let mut n = Note::new(text).unwrap();
        n.sign(&kling_audit_note::Signer::from_encoded(&stranger.encode()).unwrap())
            .unwrap();
        let n = String::from_utf8(n.to_bytes()).unwrap();
        assert_eq!(
            kind(&n, Some(&stranger.verifier_key())),
            Err(FaultKind::UnknownKey)
        );
        // Unparsable: bad_checkpoint, with or without a key.
        for bad in ["", "x\n\n", "o\n01\nAAAA\n\n— o AAAAAAA=\n"] {
            assert_eq!(kind(bad, None), Err(FaultKind::BadCheckpoint), "{bad:?}");
            assert_eq!(
                kind(bad, Some(&key)),
                Err(FaultKind::BadCheckpoint),
                "{bad:?}"
            );
        }
    }
}
