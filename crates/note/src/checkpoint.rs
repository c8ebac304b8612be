//! Checkpoints (c2sp.org/tlog-checkpoint): the signed statement "log `origin` has `size`
//! leaves with root `root`".
//!
//! ```text
//! <origin>
//! <size: ASCII decimal, no leading zeros>
//! <root: base64 of the 32-byte RFC 6962 root>
//! [extension lines, each non-empty]
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::keys::Signer;
use crate::note::Note;
use crate::{CheckpointError, Hash};

/// A checkpoint body. Fields are public; [`Checkpoint::validate`] says whether they format to a
/// checkpoint that [`Checkpoint::parse`] accepts, and [`sign_checkpoint`] checks before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name; by convention a schema-less URL and equal to the log key's name.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The RFC 6962 root at `size`.
    pub root: Hash,
    /// Extra lines after the root; the specification advises against them.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines, checking the origin.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        let cp = Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        };
        cp.validate()?;
        Ok(cp)
    }

    /// Checks that the origin and extension lines are non-empty single lines without control
    /// characters, so that the text round-trips through [`Checkpoint::parse`].
    pub fn validate(&self) -> Result<(), CheckpointError> {
        if self.origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        check_line(&self.origin, 1)?;
        for (i, ext) in self.extensions.iter().enumerate() {
            if ext.is_empty() {
                return Err(CheckpointError::EmptyExtension { line: i + 4 });
            }
            check_line(ext, i + 4)?;
        }
        Ok(())
    }

    /// The checkpoint text, final newline included: the bytes a log signs.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for ext in &self.extensions {
            out.push_str(ext);
            out.push('\n');
        }
        out
    }

    /// Parses a checkpoint body strictly: canonical decimal size, canonical base64 root of
    /// exactly 32 bytes, non-empty origin and extension lines, a final newline.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::NotNewlineTerminated)?;
        let lines: Vec<&str> = body.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            check_line(line, i + 1)?;
        }
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::TooFewLines { lines: lines.len() });
        };
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        let size = parse_decimal(size).map_err(|reason| CheckpointError::InvalidSize { reason })?;
        let root = parse_hash(root).ok_or(CheckpointError::InvalidRoot)?;
        for (i, ext) in extensions.iter().enumerate() {
            if ext.is_empty() {
                return Err(CheckpointError::EmptyExtension { line: i + 4 });
            }
        }
        Ok(Self {
            origin: (*origin).into(),
            size,
            root,
            extensions: extensions.iter().map(|s| (*s).into()).collect(),
        })
    }

    /// Parses the text of a signed note as a checkpoint.
    pub fn from_note(note: &Note) -> Result<Self, CheckpointError> {
        Self::parse(note.text())
    }
}

/// Formats and signs a checkpoint as a one-signature note.
///
/// The signer's name should equal the origin; that is a convention the caller owns.
pub fn sign_checkpoint(checkpoint: &Checkpoint, signer: &Signer) -> Result<Note, CheckpointError> {
    checkpoint.validate()?;
    let mut note = Note::new(checkpoint.to_text())?;
    note.sign(signer)?;
    Ok(note)
}

/// Rejects control characters (DEL included) inside one line.
fn check_line(line: &str, line_no: usize) -> Result<(), CheckpointError> {
    if line.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(CheckpointError::ControlCharacter { line: line_no });
    }
    Ok(())
}

/// Canonical ASCII decimal: digits only, no sign, no leading zero except "0" itself.
pub(crate) fn parse_decimal(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not all ASCII digits");
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err("leading zero");
    }
    s.parse().map_err(|_| "does not fit in 64 bits")
}

/// Canonical padded base64 of exactly 32 bytes.
pub(crate) fn parse_hash(s: &str) -> Option<Hash> {
    // 32 bytes always encode to 44 characters; checking first bounds the decode work.
    if s.len() != 44 {
        return None;
    }
    STANDARD.decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_rules() {
        assert_eq!(parse_decimal("0"), Ok(0));
        assert_eq!(parse_decimal("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_decimal("18446744073709551616").is_err());
        assert!(parse_decimal("01").is_err());
        assert!(parse_decimal("00").is_err());
        assert!(parse_decimal("+1").is_err());
        assert!(parse_decimal("-1").is_err());
        assert!(parse_decimal(" 1").is_err());
        assert!(parse_decimal("1_000").is_err());
        assert!(parse_decimal("١").is_err());
        assert!(parse_decimal("").is_err());
    }

    #[test]
    fn validate_catches_what_parse_would_reject() {
        let mut cp = Checkpoint {
            origin: "o".into(),
            size: 1,
            root: [0; 32],
            extensions: vec!["ext".into()],
        };
        assert_eq!(cp.validate(), Ok(()));
        assert_eq!(Checkpoint::parse(&cp.to_text()), Ok(cp.clone()));
        cp.extensions.push(String::new());
        assert_eq!(
            cp.validate(),
            Err(CheckpointError::EmptyExtension { line: 5 })
        );
        cp.extensions.clear();
        cp.origin = "a\nb".into();
        assert_eq!(
            cp.validate(),
            Err(CheckpointError::ControlCharacter { line: 1 })
        );
        assert!(Checkpoint::new("", 0, [0; 32]).is_err());
    }
}
