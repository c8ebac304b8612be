//! Error types of proof generation, proof verification and frontier restoration.

use crate::Hash;

/// Why a proof could not be built or did not verify.
///
/// Every variant carries the sizes or hashes involved so that a caller can report which check
/// failed without re-running it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// A leaf index at or beyond the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size it was checked against.
        size: u64,
    },
    /// A tree size larger than the leaves the source holds.
    #[error("tree size {size} exceeds the {available} leaves available")]
    SizeExceedsSource {
        /// The requested tree size.
        size: u64,
        /// How many leaves the source holds.
        available: u64,
    },
    /// A consistency proof asked to go from a larger tree to a smaller one.
    #[error("consistency from size {old_size} to smaller size {new_size} is impossible")]
    OldSizeExceedsNewSize {
        /// The first (older) tree size.
        old_size: u64,
        /// The second (newer) tree size.
        new_size: u64,
    },
    /// A proof whose number of hashes does not match the sizes it claims to cover.
    #[error("proof has {actual} hashes but sizes {size_a} and {size_b} need {expected}")]
    WrongProofLength {
        /// The hash count the sizes imply.
        expected: usize,
        /// The hash count received.
        actual: usize,
        /// For inclusion the leaf index; for consistency the old size.
        size_a: u64,
        /// For inclusion the tree size; for consistency the new size.
        size_b: u64,
    },
    /// The root recomputed from an inclusion proof is not the expected root.
    #[error(
        "inclusion proof yields root {} but the expected root is {}",
        hex(computed),
        hex(expected)
    )]
    RootMismatch {
        /// The root the caller trusts.
        expected: Hash,
        /// The root recomputed from the proof.
        computed: Hash,
    },
    /// The old-tree root recomputed from a consistency proof is not the trusted old root.
    #[error(
        "consistency proof yields old root {} but the old root is {}",
        hex(computed),
        hex(expected)
    )]
    OldRootMismatch {
        /// The old root the caller trusts.
        expected: Hash,
        /// The old root recomputed from the proof.
        computed: Hash,
    },
    /// The new-tree root recomputed from a consistency proof is not the claimed new root.
    #[error(
        "consistency proof yields new root {} but the new root is {}",
        hex(computed),
        hex(expected)
    )]
    NewRootMismatch {
        /// The new root the caller was given.
        expected: Hash,
        /// The new root recomputed from the proof.
        computed: Hash,
    },
}

/// Why a [`Frontier`](crate::Frontier) could not be rebuilt from saved parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontierError {
    /// The number of subtree roots does not match the number of one bits in the size.
    #[error("a tree of size {size} has {expected} perfect subtrees, got {actual}")]
    SubtreeCount {
        /// The saved tree size.
        size: u64,
        /// `size.count_ones()`.
        expected: usize,
        /// How many roots were supplied.
        actual: usize,
    },
}

/// Lower-case hex of a hash, for messages only.
fn hex(h: &Hash) -> String {
    use std::fmt::Write;
    h.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
