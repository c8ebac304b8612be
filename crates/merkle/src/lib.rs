//! RFC 6962 / RFC 9162 Merkle tree hashing, proof generation and proof verification.
//!
//! This crate owns the tree arithmetic that every other part of kling-audit trusts: the ledger
//! writer keeps a [`Frontier`] to know the root after each append, the exporter builds proofs
//! through [`LeafSource`], and verifiers (ours and anyone else's) check them with
//! [`verify_inclusion`] and [`verify_consistency`]. It performs no I/O and depends only on
//! `sha2`, so it can be audited on its own.
//!
//! The tree shape is RFC 6962's: the left subtree is the largest power of two strictly smaller
//! than the size, so no node is ever duplicated (the flaw behind CVE-2012-2459), and leaves and
//! interior nodes carry distinct one-byte prefixes so one cannot pass for the other.

mod error;
mod frontier;
mod proof;
mod verify;

pub use error::{FrontierError, ProofError};
pub use frontier::Frontier;
pub use proof::{consistency_proof, inclusion_proof, LeafSource};
pub use verify::{verify_consistency, verify_inclusion};

use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Domain-separation prefix of a leaf hash (RFC 6962 §2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash (RFC 6962 §2.1).
const NODE_PREFIX: u8 = 0x01;

/// The leaf hash of one entry: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of zero bytes.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The Merkle tree hash (RFC 6962 `MTH`) over already-hashed leaves.
///
/// Runs in O(n) time and O(log n) memory.
pub fn root(leaves: &[Hash]) -> Hash {
    Frontier::from_leaves(leaves.iter().copied()).root()
}

/// The largest power of two strictly smaller than `n`, the split point `k` of RFC 6962.
///
/// Callers guarantee `n >= 2`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_largest_power_of_two_below_n() {
        for n in 2u64..2000 {
            let k = split_point(n);
            assert!(k.is_power_of_two());
            assert!(k < n && n <= 2 * k, "n={n} k={k}");
        }
        assert_eq!(split_point(u64::MAX), 1 << 63);
        assert_eq!(split_point((1 << 63) + 1), 1 << 63);
        assert_eq!(split_point(1 << 63), 1 << 62);
    }

    #[test]
    fn leaf_and_node_hashes_are_domain_separated() {
        let l = leaf_hash(b"x");
        let r = leaf_hash(b"y");
        let mut concat = Vec::new();
        concat.extend_from_slice(&l);
        concat.extend_from_slice(&r);
        assert_ne!(node_hash(&l, &r), leaf_hash(&concat));
    }
}
