//! The request body of the witness `add-checkpoint` call (c2sp.org/tlog-witness).
//!
//! ```text
//! old <size the witness last cosigned, or 0>
//! <zero to 63 lines: base64 consistency-proof hashes>
//! <empty line>
//! <signed checkpoint note>
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::checkpoint::{parse_decimal, parse_hash};
use crate::{Hash, WitnessBodyError};

/// The most proof lines a body may carry; 63 hashes cover any tree below 2^64 leaves.
pub const MAX_PROOF_LINES: usize = 63;

/// A parsed `add-checkpoint` body. The checkpoint note is kept as raw bytes for the witness
/// to open against its trusted keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpointRequest {
    /// The size the caller believes the witness last cosigned for this log.
    pub old_size: u64,
    /// The consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub checkpoint: Vec<u8>,
}

impl AddCheckpointRequest {
    /// Parses a body. The checkpoint bytes are only checked to be non-empty.
    pub fn parse(body: &[u8]) -> Result<Self, WitnessBodyError> {
        let (first, mut rest) = split_line(body).ok_or(WitnessBodyError::MissingOldLine)?;
        let old = first
            .strip_prefix(b"old ")
            .ok_or(WitnessBodyError::MissingOldLine)?;
        let old_size = std::str::from_utf8(old)
            .ok()
            .and_then(|s| parse_decimal(s).ok())
            .ok_or(WitnessBodyError::InvalidOldSize)?;
        let mut proof = Vec::new();
        loop {
            let (line, after) = split_line(rest).ok_or(WitnessBodyError::MissingSeparator)?;
            rest = after;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(WitnessBodyError::TooManyProofLines {
                    max: MAX_PROOF_LINES,
                });
            }
            let hash = std::str::from_utf8(line).ok().and_then(parse_hash).ok_or(
                WitnessBodyError::InvalidProofLine {
                    line: proof.len() + 1,
                },
            )?;
            proof.push(hash);
        }
        if rest.is_empty() {
            return Err(WitnessBodyError::MissingCheckpoint);
        }
        Ok(Self {
            old_size,
            proof,
            checkpoint: rest.to_vec(),
        })
    }

    /// The body bytes.
    ///
    /// Formatting does not enforce [`MAX_PROOF_LINES`]; a longer proof formats but no witness
    /// will parse it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size).into_bytes();
        for h in &self.proof {
            out.extend_from_slice(STANDARD.encode(h).as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.checkpoint);
        out
    }
}

/// Splits off one newline-terminated line, without its newline.
fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == b'\n')?;
    Some((&bytes[..i], &bytes[i + 1..]))
}
