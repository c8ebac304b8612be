//! Portable evidence that a log signed two incompatible checkpoints for one origin.
//!
//! Two validly signed checkpoints that cannot both be prefixes of one append-only history prove
//! the log forked or rewrote itself (integrity.md threat 9). The evidence is the two notes as
//! signed, so anyone holding the log's public key can re-check it without trusting us.
//!
//! JSON is written by hand to keep this crate free of serde; the schema is small and fixed:
//!
//! ```text
//! {"type":"kling-audit/equivocation/v1","origin":<string>,
//!  "kind":"same_size_different_root"|"inconsistent_proof",
//!  "first":{"size":<int>,"root":<base64>,"note":<string>},
//!  "second":{"size":<int>,"root":<base64>,"note":<string>},
//!  "proof":[<base64>,...]}
//! ```
//!
//! `proof` is present only for `inconsistent_proof`; `note` holds the exact signed note bytes.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kling_audit_merkle::verify_consistency;

use crate::checkpoint::Checkpoint;
use crate::note::{Note, NoteVerifier};
use crate::{EquivocationError, Hash};

/// What makes the two checkpoints incompatible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EquivocationKind {
    /// Both have the same size but different roots.
    SameSizeDifferentRoot,
    /// The consistency proof from the smaller to the larger fails.
    ///
    /// This convinces a third party only to the extent it trusts that the log itself served
    /// the proof; the same-size case needs no such trust.
    InconsistentProof {
        /// The proof that failed.
        proof: Vec<Hash>,
    },
}

/// Two signed checkpoints of one origin that cannot both be honest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivocation {
    first: (Note, Checkpoint),
    second: (Note, Checkpoint),
    kind: EquivocationKind,
}

fn open_checkpoint<V: NoteVerifier>(
    bytes: &[u8],
    known: &[V],
    which: &'static str,
) -> Result<(Note, Checkpoint), EquivocationError> {
    let verified = crate::note::open(bytes, known)
        .map_err(|source| EquivocationError::Note { which, source })?;
    let cp = Checkpoint::parse(verified.text())
        .map_err(|source| EquivocationError::Checkpoint { which, source })?;
    Ok((verified.into_note(), cp))
}

impl Equivocation {
    /// Evidence from two checkpoints of equal size with different roots, each verified
    /// against `known` log keys.
    pub fn same_size<V: NoteVerifier>(
        first: &[u8],
        second: &[u8],
        known: &[V],
    ) -> Result<Self, EquivocationError> {
        let a = open_checkpoint(first, known, "first")?;
        let b = open_checkpoint(second, known, "second")?;
        if a.1.origin != b.1.origin {
            return Err(EquivocationError::DifferentOrigins);
        }
        if a.1.size != b.1.size {
            return Err(EquivocationError::SizeMismatch {
                first_size: a.1.size,
                second_size: b.1.size,
            });
        }
        if a.1.root == b.1.root {
            return Err(EquivocationError::Consistent {
                first_size: a.1.size,
                second_size: b.1.size,
            });
        }
        Ok(Self {
            first: a,
            second: b,
            kind: EquivocationKind::SameSizeDifferentRoot,
        })
    }

    /// Evidence from a smaller and a larger checkpoint and the consistency proof between them
    /// that fails, each note verified against `known` log keys.
    pub fn inconsistent<V: NoteVerifier>(
        smaller: &[u8],
        larger: &[u8],
        proof: Vec<Hash>,
        known: &[V],
    ) -> Result<Self, EquivocationError> {
        let a = open_checkpoint(smaller, known, "first")?;
        let b = open_checkpoint(larger, known, "second")?;
        if a.1.origin != b.1.origin {
            return Err(EquivocationError::DifferentOrigins);
        }
        if a.1.size >= b.1.size {
            return Err(EquivocationError::SizeMismatch {
                first_size: a.1.size,
                second_size: b.1.size,
            });
        }
        if verify_consistency(a.1.size, b.1.size, &a.1.root, &b.1.root, &proof).is_ok() {
            return Err(EquivocationError::Consistent {
                first_size: a.1.size,
                second_size: b.1.size,
            });
        }
        Ok(Self {
            first: a,
            second: b,
            kind: EquivocationKind::InconsistentProof { proof },
        })
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.first.1.origin
    }

    /// The first (for the proof case, smaller) signed checkpoint.
    pub fn first(&self) -> (&Note, &Checkpoint) {
        (&self.first.0, &self.first.1)
    }

    /// The second (for the proof case, larger) signed checkpoint.
    pub fn second(&self) -> (&Note, &Checkpoint) {
        (&self.second.0, &self.second.1)
    }

    /// What makes them incompatible.
    pub fn kind(&self) -> &EquivocationKind {
        &self.kind
    }

    /// The evidence as one JSON object (schema in the module documentation).
    pub fn to_json_string(&self) -> String {
        let mut out = String::from("{\"type\":\"kling-audit/equivocation/v1\",\"origin\":");
        push_json_string(&mut out, self.origin());
        let kind = match self.kind {
            EquivocationKind::SameSizeDifferentRoot => "same_size_different_root",
            EquivocationKind::InconsistentProof { .. } => "inconsistent_proof",
        };
        let _ = write!(out, ",\"kind\":\"{kind}\"");
        for (label, (note, cp)) in [("first", &self.first), ("second", &self.second)] {
            let _ = write!(
                out,
                ",\"{label}\":{{\"size\":{},\"root\":\"{}\",\"note\":",
                cp.size,
                STANDARD.encode(cp.root)
            );
            // Notes are valid UTF-8 by construction, so the lossy conversion never replaces.
            push_json_string(&mut out, &String::from_utf8_lossy(&note.to_bytes()));
            out.push('}');
        }
        if let EquivocationKind::InconsistentProof { proof } = &self.kind {
            out.push_str(",\"proof\":[");
            for (i, h) in proof.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "\"{}\"", STANDARD.encode(h));
            }
            out.push(']');
        }
        out.push('}');
        out
    }
}

/// Appends `s` as a JSON string literal (RFC 8259 escaping).
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_string(&mut s, "a\"b\\c\nd\u{1}e—");
        assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001e—\"");
    }
}
