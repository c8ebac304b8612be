//! Signed notes (c2sp.org/signed-note): a UTF-8 text, an empty line, then signature lines.
//!
//! ```text
//! <text, one or more lines, each ending in a newline>
//!
//! — <key name> <base64(4-byte key ID || signature)>
//! ```
//!
//! The text ends at the last empty line, so it may itself hold empty lines. Parsing keeps every
//! signature line in order, so a parsed note serializes back to the same bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::keys::{is_valid_key_name, Signer};
use crate::NoteError;

/// The most signature lines a note may carry here (Go's `sumdb/note` uses the same cap).
///
/// The specification requires accepting at least 16; the cap bounds the work a hostile note
/// can cause.
pub const MAX_SIGNATURES: usize = 100;

/// Em dash (U+2014) and a space: the start of every signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// A key that can check note signatures: plain Ed25519 signers, cosigners, or anything else
/// with a name and key ID.
pub trait NoteVerifier {
    /// The key name as it appears on signature lines.
    fn name(&self) -> &str;
    /// The 4-byte key ID as it appears in front of the signature.
    fn key_id(&self) -> u32;
    /// Whether `signature` (the bytes after the key ID) signs `text`.
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool;
}

impl<T: NoteVerifier + ?Sized> NoteVerifier for &T {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn key_id(&self) -> u32 {
        (**self).key_id()
    }
    fn verify(&self, text: &[u8], signature: &[u8]) -> bool {
        (**self).verify(text, signature)
    }
}

/// One signature line: key name, key ID and the signature bytes after the ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    name: String,
    key_id: u32,
    signature: Vec<u8>,
}

impl NoteSignature {
    /// Builds a signature line, checking the name and that the signature is non-empty.
    pub fn new(
        name: impl Into<String>,
        key_id: u32,
        signature: Vec<u8>,
    ) -> Result<Self, NoteError> {
        let name = name.into();
        if !is_valid_key_name(&name) {
            return Err(NoteError::InvalidKeyName { name });
        }
        if signature.is_empty() {
            return Err(NoteError::EmptySignature { name });
        }
        Ok(Self {
            name,
            key_id,
            signature,
        })
    }

    /// For signers whose name was validated when the key was made.
    pub(crate) fn from_parts_unchecked(name: String, key_id: u32, signature: Vec<u8>) -> Self {
        debug_assert!(is_valid_key_name(&name) && !signature.is_empty());
        Self {
            name,
            key_id,
            signature,
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

    /// The signature bytes, without the key ID.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The line as it appears in a note, newline included.
    pub fn to_line(&self) -> String {
        let mut blob = Vec::with_capacity(4 + self.signature.len());
        blob.extend_from_slice(&self.key_id.to_be_bytes());
        blob.extend_from_slice(&self.signature);
        format!("{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(blob))
    }

    /// Parses one signature line, without its newline, as a witness returns them.
    pub fn from_line(line: &str) -> Result<Self, NoteError> {
        Self::parse_line(line, 1)
    }

    /// Parses one signature line without its newline; `line_no` is only for errors.
    fn parse_line(line: &str, line_no: usize) -> Result<Self, NoteError> {
        let bad = |reason| NoteError::MalformedSignatureLine {
            line: line_no,
            reason,
        };
        let rest = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(bad("does not start with an em dash and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(bad("no space between key name and signature"))?;
        if !is_valid_key_name(name) {
            return Err(bad("invalid key name"));
        }
        if b64.is_empty() {
            return Err(bad("empty signature"));
        }
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| bad("signature is not canonical padded base64"))?;
        let (id, signature) = match blob.split_first_chunk::<4>() {
            Some((id, sig)) if !sig.is_empty() => (u32::from_be_bytes(*id), sig.to_vec()),
            _ => return Err(bad("signature shorter than a key ID and one byte")),
        };
        Ok(Self {
            name: name.into(),
            key_id: id,
            signature,
        })
    }
}

/// A signed note: its text and signature lines, none of them checked yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// An unsigned note, checking that the text is non-empty, ends with a newline and holds no
    /// control character but newline.
    pub fn new(text: impl Into<String>) -> Result<Self, NoteError> {
        let text = text.into();
        check_characters(text.as_bytes())?;
        if !text.ends_with('\n') {
            return Err(NoteError::TextNotNewlineTerminated);
        }
        Ok(Self {
            text,
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note without verifying any signature.
    ///
    /// Stricter than Go in one way: base64 with non-zero padding bits is rejected, so that every
    /// accepted note has exactly one encoding and [`Note::to_bytes`] gives back the input.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        let s = check_characters(bytes)?;
        let split = s.rfind("\n\n").ok_or(NoteError::MissingSignatureBlock)?;
        let (text, sigs) = (&s[..split + 1], &s[split + 2..]);
        let sigs = sigs
            .strip_suffix('\n')
            .ok_or(NoteError::UnterminatedSignatureBlock)?;
        let mut signatures = Vec::new();
        for (i, line) in sigs.split('\n').enumerate() {
            if i == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures {
                    max: MAX_SIGNATURES,
                });
            }
            signatures.push(NoteSignature::parse_line(line, i + 1)?);
        }
        Ok(Self {
            text: text.into(),
            signatures,
        })
    }

    /// The text, final newline included: the bytes every signature covers.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature line, replacing one with the same name and key ID.
    pub fn add_signature(&mut self, sig: NoteSignature) -> Result<(), NoteError> {
        if let Some(old) = self
            .signatures
            .iter_mut()
            .find(|s| s.name == sig.name && s.key_id == sig.key_id)
        {
            *old = sig;
            return Ok(());
        }
        if self.signatures.len() == MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                max: MAX_SIGNATURES,
            });
        }
        self.signatures.push(sig);
        Ok(())
    }

    /// Signs the text with `signer` and adds the signature line.
    pub fn sign(&mut self, signer: &Signer) -> Result<(), NoteError> {
        let sig = signer.sign(self.text.as_bytes());
        self.add_signature(sig)
    }

    /// The note's bytes: text, empty line, signature lines.
    ///
    /// A note without signatures serializes to its text and an empty line, which is not a
    /// parseable signed note; sign it first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.text.len() + 1 + 100 * self.signatures.len());
        out.push_str(&self.text);
        out.push('\n');
        for sig in &self.signatures {
            out.push_str(&sig.to_line());
        }
        out.into_bytes()
    }

    /// Checks the signatures against trusted keys, following c2sp.org/signed-note:
    ///
    /// - a signature whose name and key ID do not both match one trusted key is ignored;
    /// - a signature from a trusted key that does not verify rejects the note;
    /// - a repeated signature by the same trusted key is skipped, as Go does;
    /// - a note with no verified signature is rejected.
    pub fn verify<V: NoteVerifier>(self, known: &[V]) -> Result<VerifiedNote, NoteError> {
        let mut verified: Vec<usize> = Vec::new();
        for (i, sig) in self.signatures.iter().enumerate() {
            let mut matching = known
                .iter()
                .filter(|v| v.name() == sig.name && v.key_id() == sig.key_id);
            let Some(v) = matching.next() else {
                continue;
            };
            if matching.next().is_some() {
                return Err(NoteError::AmbiguousVerifier {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            let seen = verified.iter().any(|&j| {
                let prev = &self.signatures[j];
                prev.name == sig.name && prev.key_id == sig.key_id
            });
            if seen {
                continue;
            }
            if !v.verify(self.text.as_bytes(), &sig.signature) {
                return Err(NoteError::InvalidSignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            verified.push(i);
        }
        if verified.is_empty() {
            return Err(NoteError::NoTrustedSignature {
                signatures: self.signatures.len(),
            });
        }
        Ok(VerifiedNote {
            note: self,
            verified,
        })
    }
}

/// Parses `bytes` as a signed note and verifies it against `known` keys (see [`Note::verify`]).
pub fn open<V: NoteVerifier>(bytes: &[u8], known: &[V]) -> Result<VerifiedNote, NoteError> {
    Note::parse(bytes)?.verify(known)
}

/// A note with at least one signature verified by a trusted key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNote {
    note: Note,
    verified: Vec<usize>,
}

impl VerifiedNote {
    /// The verified text.
    pub fn text(&self) -> &str {
        &self.note.text
    }

    /// The whole note, including signatures from unknown keys.
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// The signatures that verified under trusted keys.
    pub fn verified_signatures(&self) -> impl Iterator<Item = &NoteSignature> {
        self.verified.iter().map(|&i| &self.note.signatures[i])
    }

    /// The signatures from keys that were not trusted; none of them was checked.
    pub fn unverified_signatures(&self) -> impl Iterator<Item = &NoteSignature> {
        let verified = &self.verified;
        let sigs = &self.note.signatures;
        sigs.iter().filter(move |s| {
            !verified
                .iter()
                .any(|&j| sigs[j].name == s.name && sigs[j].key_id == s.key_id)
        })
    }

    /// Gives back the note.
    pub fn into_note(self) -> Note {
        self.note
    }
}

/// Checks UTF-8 and the control-character rule over the whole note.
///
/// DEL (0x7f) is rejected as the ASCII control character it is; Go lets it through, but no
/// conforming signer emits it.
fn check_characters(bytes: &[u8]) -> Result<&str, NoteError> {
    let s = std::str::from_utf8(bytes).map_err(|e| NoteError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    // Every byte of a multi-byte UTF-8 sequence is >= 0x80, so a byte scan is exact.
    if let Some(offset) = bytes
        .iter()
        .position(|&b| (b < 0x20 && b != b'\n') || b == 0x7f)
    {
        return Err(NoteError::ControlCharacter {
            offset,
            byte: bytes[offset],
        });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_may_contain_empty_lines_and_ends_at_the_last_one() -> Result<(), NoteError> {
        let signer = Signer::from_seed("k", &[1; 32]).expect("valid name");
        let mut n = Note::new("a\n\nb\n")?;
        n.sign(&signer)?;
        let parsed = Note::parse(&n.to_bytes())?;
        assert_eq!(parsed.text(), "a\n\nb\n");
        assert_eq!(parsed, n);
        Ok(())
    }

    #[test]
    fn add_signature_replaces_same_key_and_caps_count() -> Result<(), NoteError> {
        let mut n = Note::new("t\n")?;
        n.add_signature(NoteSignature::new("a", 1, vec![1])?)?;
        n.add_signature(NoteSignature::new("a", 1, vec![2])?)?;
        assert_eq!(n.signatures().len(), 1);
        assert_eq!(n.signatures()[0].signature(), &[2]);
        for i in 1..MAX_SIGNATURES as u32 {
            n.add_signature(NoteSignature::new("a", 1 + i, vec![1])?)?;
        }
        assert_eq!(
            n.add_signature(NoteSignature::new("b", 0, vec![1])?),
            Err(NoteError::TooManySignatures {
                max: MAX_SIGNATURES
            })
        );
        Ok(())
    }
}
