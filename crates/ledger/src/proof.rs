//! Self-contained evidence bundles: one record, its RFC 6962 inclusion proof and a signed
//! checkpoint, checkable offline with nothing but the auditor's pinned verifier key.
//!
//! A bundle is one JSON object:
//!
//! ```json
//! {"format":"kling-audit-proof/1","origin":"…","seq":42,"record":"<the stored line>",
//!  "tree_size":1000,"inclusion_proof":["<base64 hash>",…],"checkpoint":"<signed note>",
//!  "verifier_key":"<name+id+base64>"}
//! ```
//!
//! Checking goes in the order the known verifier bugs teach: the checkpoint signature under
//! the *pinned* key (never the key the bundle carries), then every field the bundle repeats
//! from a signed source (`origin` and `tree_size` from the checkpoint, `verifier_key` from the
//! pinned key), then the leaf hash recomputed from the record's bytes, and only then the
//! inclusion proof against the signed root. Consistency bundles (`kling-audit-consistency/1`)
//! carry two signed checkpoints and the RFC 6962 consistency proof between them; their
//! `origin` and `verifier_key` are checked the same way.
//!
//! A bundle whose copied field disagrees with its signed source is refused even when the proof
//! itself holds: a reader of the bundle (a person, or a tool that shows its fields) must never
//! be shown an unsigned value as if it were evidence.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kling_audit_merkle::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion, Hash,
};
use serde::{Deserialize, Serialize};

use crate::cpstore::read_checkpoints;
use crate::record::parse_line;
use crate::segment::list_segments;
use crate::sign::{open_checkpoint, CheckpointBody};

pub const INCLUSION_FORMAT: &str = "kling-audit-proof/1";
pub const CONSISTENCY_FORMAT: &str = "kling-audit-consistency/1";

/// An inclusion bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionBundle {
    pub format: String,
    pub origin: String,
    pub seq: u64,
    pub record: String,
    pub tree_size: u64,
    pub inclusion_proof: Vec<String>,
    pub checkpoint: String,
    pub verifier_key: String,
}

/// A consistency bundle: the log at `new` extends the log at `old`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyBundle {
    pub format: String,
    pub origin: String,
    pub old_checkpoint: String,
    pub new_checkpoint: String,
    pub consistency_proof: Vec<String>,
    pub verifier_key: String,
}

/// Why a bundle could not be made or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum ProofBundleError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the bundle is not valid JSON of a known format: {0}")]
    Malformed(String),
    #[error("unknown bundle format {0:?}")]
    UnknownFormat(String),
    #[error("the checkpoint does not verify under the pinned key: {0}")]
    Checkpoint(String),
    /// A field the bundle repeats from a signed source says something else than that source.
    #[error("the bundle's {field} {bundle} differs from {source_name}'s {signed}")]
    FieldMismatch {
        /// The bundle's JSON field.
        field: &'static str,
        /// Its value in the bundle, as JSON.
        bundle: String,
        /// The signed value, as JSON.
        signed: String,
        /// Where the signed value comes from.
        source_name: &'static str,
    },
    #[error("the record line is not a well-formed record: {0}")]
    Record(String),
    #[error("the record's stored hash {stored} does not match its bytes ({computed})")]
    RecordHash { stored: String, computed: String },
    #[error("the bundle claims seq {claimed} but the record is seq {actual}")]
    SeqMismatch { claimed: u64, actual: u64 },
    #[error("proof hash {index} is not base64 of 32 bytes")]
    ProofEncoding { index: usize },
    #[error("the proof does not verify: {0}")]
    Proof(#[from] kling_audit_merkle::ProofError),
    #[error("seq {seq} is not covered by any signed checkpoint yet (newest covers {covered}); try again in a second")]
    NotCovered { seq: u64, covered: u64 },
    #[error("the ledger has no record with seq {0}")]
    NoSuchRecord(u64),
    #[error("there is no seq {seq}: {}", past_end(*records))]
    PastEnd { seq: u64, records: u64 },
    #[error("no signed checkpoint of size {0} in this ledger; the sizes it signed are the `size` fields of its checkpoints.jsonl")]
    NoSuchCheckpoint(u64),
    #[error("the ledger's records do not match its own checkpoint of size {0}; run `kling-audit verify`")]
    LedgerMismatch(u64),
}

fn past_end(records: u64) -> String {
    match records {
        0 => "the ledger holds no records".to_owned(),
        1 => "the ledger holds one record, seq 0".to_owned(),
        n => format!("the ledger's records run from seq 0 to {}", n - 1),
    }
}

/// What a verified inclusion bundle proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InclusionVerdict {
    pub origin: String,
    pub seq: u64,
    pub tree_size: u64,
    pub record_type: String,
    pub actor: String,
    pub ts: String,
    pub leaf_hash: String,
}

/// What a verified consistency bundle proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsistencyVerdict {
    pub origin: String,
    pub old_size: u64,
    pub new_size: u64,
}

/// The leaf hashes and lines of a ledger, read once.
struct Leaves {
    hashes: Vec<Hash>,
}

fn read_leaves(
    dir: &Path,
    upto: u64,
    want_line: Option<u64>,
) -> Result<(Leaves, Option<String>), ProofBundleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProofBundleError::Io { path, source }
    };
    let (segments, _) = list_segments(dir).map_err(io(dir))?;
    let mut hashes = Vec::new();
    let mut line_out = None;
    'outer: for seg in segments {
        let data = crate::segment::read_segment(&seg.path).map_err(io(&seg.path))?;
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if hashes.len() as u64 >= upto {
                break 'outer;
            }
            let v = parse_line(line).map_err(|e| ProofBundleError::Record(e.to_string()))?;
            if v.seq != hashes.len() as u64 {
                return Err(ProofBundleError::LedgerMismatch(upto));
            }
            if Some(v.seq) == want_line {
                line_out = Some(String::from_utf8_lossy(line).into_owned());
            }
            hashes.push(v.leaf);
        }
    }
    Ok((Leaves { hashes }, line_out))
}

fn checkpoint_covering(
    dir: &Path,
    min_size: u64,
    exact: Option<u64>,
) -> Result<(String, CheckpointBody), ProofBundleError> {
    let (cps, _) = read_checkpoints(dir).map_err(|source| ProofBundleError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut best: Option<(String, CheckpointBody)> = None;
    for cp in cps {
        let Ok(body) = open_checkpoint(&cp.note, None) else {
            continue;
        };
        let fits = match exact {
            Some(n) => body.size == n,
            None => body.size >= min_size,
        };
        if fits && best.as_ref().is_none_or(|(_, b)| body.size > b.size) {
            best = Some((cp.note, body));
        }
    }
    best.ok_or(match exact {
        Some(n) => ProofBundleError::NoSuchCheckpoint(n),
        None => ProofBundleError::NotCovered {
            seq: min_size.saturating_sub(1),
            covered: 0,
        },
    })
}

/// Builds the inclusion bundle of record `seq` under the newest checkpoint covering it.
///
/// Reads the leaf hashes of the whole tree up to the checkpoint: fine for ledgers of many
/// millions of records; a tile cache of subtree hashes would make it logarithmic.
pub fn make_inclusion_bundle(
    dir: &Path,
    seq: u64,
    verifier_key: &str,
) -> Result<InclusionBundle, ProofBundleError> {
    let (note, body) = checkpoint_covering(dir, seq + 1, None).map_err(|e| match e {
        ProofBundleError::NotCovered { .. } => {
            // Only on this error path: count the records, to tell "not yet" from "never".
            if let Ok((all, _)) = read_leaves(dir, u64::MAX, None) {
                let records = all.hashes.len() as u64;
                if seq >= records {
                    return ProofBundleError::PastEnd { seq, records };
                }
            }
            let covered = read_checkpoints(dir)
                .map(|(c, _)| c.iter().map(|c| c.size).max().unwrap_or(0))
                .unwrap_or(0);
            ProofBundleError::NotCovered { seq, covered }
        }
        other => other,
    })?;
    let (leaves, line) = read_leaves(dir, body.size, Some(seq))?;
    if (leaves.hashes.len() as u64) < body.size {
        return Err(ProofBundleError::NoSuchRecord(seq));
    }
    if kling_audit_merkle::root(&leaves.hashes) != body.root {
        return Err(ProofBundleError::LedgerMismatch(body.size));
    }
    let record = line.ok_or(ProofBundleError::NoSuchRecord(seq))?;
    let proof = inclusion_proof(seq, body.size, &leaves.hashes)?;
    Ok(InclusionBundle {
        format: INCLUSION_FORMAT.to_owned(),
        origin: body.origin,
        seq,
        record,
        tree_size: body.size,
        inclusion_proof: proof.iter().map(|h| B64.encode(h)).collect(),
        checkpoint: note,
        verifier_key: verifier_key.to_owned(),
    })
}

/// Builds a consistency bundle between two of the ledger's signed checkpoints.
pub fn make_consistency_bundle(
    dir: &Path,
    old_size: u64,
    new_size: Option<u64>,
    verifier_key: &str,
) -> Result<ConsistencyBundle, ProofBundleError> {
    let (new_note, new_body) = match new_size {
        Some(n) => checkpoint_covering(dir, n, Some(n))?,
        None => checkpoint_covering(dir, old_size, None)?,
    };
    let (old_note, old_body) = checkpoint_covering(dir, old_size, Some(old_size))?;
    let (leaves, _) = read_leaves(dir, new_body.size, None)?;
    if kling_audit_merkle::root(&leaves.hashes) != new_body.root {
        return Err(ProofBundleError::LedgerMismatch(new_body.size));
    }
    let proof = consistency_proof(old_body.size, new_body.size, &leaves.hashes)?;
    Ok(ConsistencyBundle {
        format: CONSISTENCY_FORMAT.to_owned(),
        origin: new_body.origin,
        old_checkpoint: old_note,
        new_checkpoint: new_note,
        consistency_proof: proof.iter().map(|h| B64.encode(h)).collect(),
        verifier_key: verifier_key.to_owned(),
    })
}

fn decode_proof(items: &[String]) -> Result<Vec<Hash>, ProofBundleError> {
    items
        .iter()
        .enumerate()
        .map(|(index, s)| {
            B64.decode(s)
                .ok()
                .and_then(|v| <Hash>::try_from(v).ok())
                .ok_or(ProofBundleError::ProofEncoding { index })
        })
        .collect()
}

/// Either kind of verified bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Inclusion(InclusionVerdict),
    Consistency(ConsistencyVerdict),
}

/// Verifies a bundle of either kind against the auditor's pinned verifier key.
pub fn verify_bundle(bytes: &[u8], pinned_key: &str) -> Result<Verdict, ProofBundleError> {
    #[derive(Deserialize)]
    struct Head {
        format: String,
    }
    let head: Head =
        serde_json::from_slice(bytes).map_err(|e| ProofBundleError::Malformed(e.to_string()))?;
    match head.format.as_str() {
        INCLUSION_FORMAT => {
            let b: InclusionBundle = serde_json::from_slice(bytes)
                .map_err(|e| ProofBundleError::Malformed(e.to_string()))?;
            verify_inclusion_bundle(&b, pinned_key).map(Verdict::Inclusion)
        }
        CONSISTENCY_FORMAT => {
            let b: ConsistencyBundle = serde_json::from_slice(bytes)
                .map_err(|e| ProofBundleError::Malformed(e.to_string()))?;
            verify_consistency_bundle(&b, pinned_key).map(Verdict::Consistency)
        }
        other => Err(ProofBundleError::UnknownFormat(other.to_owned())),
    }
}

/// Where the signed values a bundle repeats come from, for [`ProofBundleError::FieldMismatch`].
const FROM_CHECKPOINT: &str = "the signed checkpoint";
const FROM_NEW_CHECKPOINT: &str = "the new signed checkpoint";
const FROM_PINNED_KEY: &str = "the pinned verifier key";

/// `Err(FieldMismatch)` unless the bundle's `field` equals the signed value.
fn same_as_signed<T: PartialEq + Serialize>(
    field: &'static str,
    bundle: &T,
    signed: &T,
    source_name: &'static str,
) -> Result<(), ProofBundleError> {
    if bundle == signed {
        return Ok(());
    }
    // JSON, so that a string shows quoted and escaped, as it stands in the bundle.
    let json = |v: &T| serde_json::to_string(v).unwrap_or_default();
    Err(ProofBundleError::FieldMismatch {
        field,
        bundle: json(bundle),
        signed: json(signed),
        source_name,
    })
}

/// The bundle's `verifier_key` must name the pinned key: the same text, or another spelling of
/// the same key (Go accepts key IDs in either letter case).
fn same_verifier_key(bundle: &str, pinned: &str) -> Result<(), ProofBundleError> {
    let pinned = pinned.trim();
    let parse = kling_audit_note::Verifier::from_encoded;
    let same =
        bundle == pinned || matches!((parse(bundle), parse(pinned)), (Ok(a), Ok(b)) if a == b);
    if same {
        return Ok(());
    }
    same_as_signed(
        "verifier_key",
        &bundle.to_owned(),
        &pinned.to_owned(),
        FROM_PINNED_KEY,
    )
}

fn verify_inclusion_bundle(
    b: &InclusionBundle,
    pinned_key: &str,
) -> Result<InclusionVerdict, ProofBundleError> {
    let cp = open_checkpoint(&b.checkpoint, Some(pinned_key))
        .map_err(|p| ProofBundleError::Checkpoint(p.message))?;
    same_as_signed("origin", &b.origin, &cp.origin, FROM_CHECKPOINT)?;
    same_as_signed("tree_size", &b.tree_size, &cp.size, FROM_CHECKPOINT)?;
    same_verifier_key(&b.verifier_key, pinned_key)?;
    let v = parse_line(b.record.as_bytes()).map_err(|e| ProofBundleError::Record(e.to_string()))?;
    if !v.hash_ok() {
        return Err(ProofBundleError::RecordHash {
            stored: hex::encode(v.hash),
            computed: hex::encode(v.leaf),
        });
    }
    if v.seq != b.seq {
        return Err(ProofBundleError::SeqMismatch {
            claimed: b.seq,
            actual: v.seq,
        });
    }
    let proof = decode_proof(&b.inclusion_proof)?;
    verify_inclusion(&v.leaf, v.seq, cp.size, &proof, &cp.root)?;
    Ok(InclusionVerdict {
        origin: cp.origin,
        seq: v.seq,
        tree_size: cp.size,
        record_type: v.kind_str(),
        actor: v.actor_str(),
        ts: v.ts.to_owned(),
        leaf_hash: hex::encode(v.leaf),
    })
}

fn verify_consistency_bundle(
    b: &ConsistencyBundle,
    pinned_key: &str,
) -> Result<ConsistencyVerdict, ProofBundleError> {
    let old = open_checkpoint(&b.old_checkpoint, Some(pinned_key))
        .map_err(|p| ProofBundleError::Checkpoint(p.message))?;
    let new = open_checkpoint(&b.new_checkpoint, Some(pinned_key))
        .map_err(|p| ProofBundleError::Checkpoint(p.message))?;
    // Both checkpoints verified under the pinned key, whose name is their origin, so the new
    // one's origin stands for both.
    same_as_signed("origin", &b.origin, &new.origin, FROM_NEW_CHECKPOINT)?;
    same_verifier_key(&b.verifier_key, pinned_key)?;
    let proof = decode_proof(&b.consistency_proof)?;
    verify_consistency(old.size, new.size, &old.root, &new.root, &proof)?;
    Ok(ConsistencyVerdict {
        origin: new.origin,
        old_size: old.size,
        new_size: new.size,
    })
}
