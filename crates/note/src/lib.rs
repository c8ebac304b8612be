//! C2SP signed notes, tlog checkpoints, Ed25519 cosignatures and witness request bodies.
//!
//! This crate owns every byte format that leaves kling-audit to be checked by someone else: the
//! signed checkpoints the ledger publishes, the cosignatures witnesses return, and the evidence
//! of a log that signed two incompatible histories. The formats follow c2sp.org/signed-note,
//! c2sp.org/tlog-checkpoint, c2sp.org/tlog-cosignature and c2sp.org/tlog-witness, and are
//! byte-compatible with Go's `golang.org/x/mod/sumdb/note` and `transparency-dev/formats/note`,
//! so their verifiers and witnesses can check our output and we can check theirs.
//!
//! Every parser here reads untrusted bytes and is total: malformed input returns an error,
//! never a panic. Where Go is lenient and the specifications are strict (non-canonical base64,
//! DEL characters), this crate is strict and says so where the rule lives.

mod checkpoint;
mod cosignature;
mod equivocation;
mod error;
mod keys;
mod note;
mod witness;

pub use checkpoint::{sign_checkpoint, Checkpoint};
pub use cosignature::{cosignature_message, CosignatureVerifier, CosignerKey, MAX_TIMESTAMP};
pub use equivocation::{Equivocation, EquivocationKind};
pub use error::{
    CheckpointError, CosignatureError, EquivocationError, KeyError, NoteError, WitnessBodyError,
};
pub use keys::{is_valid_key_name, key_id, Signer, Verifier, KEY_TYPE_ED25519};
pub use note::{open, Note, NoteSignature, NoteVerifier, VerifiedNote, MAX_SIGNATURES};
pub use witness::{AddCheckpointRequest, MAX_PROOF_LINES};

/// A Merkle tree hash, as carried in checkpoints and proofs.
pub use kling_audit_merkle::Hash;
