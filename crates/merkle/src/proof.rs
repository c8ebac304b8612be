//! Building inclusion and consistency proofs (RFC 6962 §2.1.1 and §2.1.2).
//!
//! Proofs are built from any [`LeafSource`]: a slice of leaf hashes in memory, or a ledger that
//! reads leaves from disk and may answer whole subtrees from a cache of stored node hashes.

use crate::{node_hash, split_point, Hash, ProofError};

/// Random access to the leaf hashes of a log, optionally with cached subtree roots.
pub trait LeafSource {
    /// How many leaves the source holds.
    fn len(&self) -> u64;

    /// Whether the source holds no leaf.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leaf hash at `index`; called only with `index < self.len()`.
    fn leaf(&self, index: u64) -> Hash;

    /// The root of the perfect subtree of height `level` whose leftmost leaf is
    /// `index << level`, if the source has it stored.
    ///
    /// Called only for subtrees that lie entirely within `self.len()`. The default stores
    /// nothing, so every subtree is hashed from its leaves; a source with a node cache (for
    /// instance tiles) returns the stored hash and turns proof building into O(log n) reads.
    fn cached_subtree(&self, level: u32, index: u64) -> Option<Hash> {
        let _ = (level, index);
        None
    }
}

impl LeafSource for [Hash] {
    fn len(&self) -> u64 {
        <[Hash]>::len(self) as u64
    }

    fn leaf(&self, index: u64) -> Hash {
        self[index as usize]
    }
}

impl LeafSource for Vec<Hash> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn leaf(&self, index: u64) -> Hash {
        self[index as usize]
    }
}

/// The inclusion proof (audit path) of leaf `index` in the tree of the first `size` leaves.
///
/// Hashes are ordered from the leaf's sibling up to the root's other child, as RFC 6962 lists
/// them and as [`verify_inclusion`](crate::verify_inclusion) consumes them.
pub fn inclusion_proof<S: LeafSource + ?Sized>(
    index: u64,
    size: u64,
    src: &S,
) -> Result<Vec<Hash>, ProofError> {
    check_size(size, src)?;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // Walk down from the root, collecting the sibling of each subtree holding the leaf; the
    // RFC lists them bottom-up, so reverse at the end.
    let (mut lo, mut hi) = (0u64, size);
    let mut proof = Vec::with_capacity(64);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            proof.push(range_root(src, lo + k, hi));
            hi = lo + k;
        } else {
            proof.push(range_root(src, lo, lo + k));
            lo += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof from the tree of the first `old_size` leaves to that of the first
/// `new_size` leaves.
///
/// Empty when `old_size` is 0 or equals `new_size`, as RFC 9162 defines.
pub fn consistency_proof<S: LeafSource + ?Sized>(
    old_size: u64,
    new_size: u64,
    src: &S,
) -> Result<Vec<Hash>, ProofError> {
    check_size(new_size, src)?;
    if old_size > new_size {
        return Err(ProofError::OldSizeExceedsNewSize { old_size, new_size });
    }
    let mut proof = Vec::with_capacity(64);
    if old_size == 0 || old_size == new_size {
        return Ok(proof);
    }
    // SUBPROOF(m, D[lo:hi], whole) unrolled: `m` counts old leaves inside [lo, hi), and `whole`
    // is true while the old tree is still a prefix of the subtree being described.
    let (mut lo, mut hi, mut m, mut whole) = (0u64, new_size, old_size, true);
    loop {
        if m == hi - lo {
            if !whole {
                proof.push(range_root(src, lo, hi));
            }
            break;
        }
        let k = split_point(hi - lo);
        if m <= k {
            proof.push(range_root(src, lo + k, hi));
            hi = lo + k;
        } else {
            proof.push(range_root(src, lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

fn check_size<S: LeafSource + ?Sized>(size: u64, src: &S) -> Result<(), ProofError> {
    let available = src.len();
    if size > available {
        return Err(ProofError::SizeExceedsSource { size, available });
    }
    Ok(())
}

/// `MTH(D[lo:hi])` for a range that starts on a multiple of a power of two at least as large as
/// the range, which is every range the RFC recursions visit.
///
/// Such a range splits into aligned perfect subtrees of strictly decreasing size, whose roots
/// fold from the right exactly as the RFC's recursive split would combine them.
fn range_root<S: LeafSource + ?Sized>(src: &S, lo: u64, hi: u64) -> Hash {
    debug_assert!(lo < hi);
    let mut parts = [[0u8; 32]; 64];
    let mut count = 0;
    let mut pos = lo;
    while pos < hi {
        let fits = 63 - (hi - pos).leading_zeros();
        let level = pos.trailing_zeros().min(fits);
        parts[count] = perfect_root(src, level, pos >> level);
        count += 1;
        pos += 1u64 << level;
    }
    let mut acc = parts[count - 1];
    for left in parts[..count - 1].iter().rev() {
        acc = node_hash(left, &acc);
    }
    acc
}

/// The root of the perfect subtree of height `level` starting at leaf `index << level`.
fn perfect_root<S: LeafSource + ?Sized>(src: &S, level: u32, index: u64) -> Hash {
    if level == 0 {
        return src.leaf(index);
    }
    if let Some(h) = src.cached_subtree(level, index) {
        return h;
    }
    let left = perfect_root(src, level - 1, 2 * index);
    let right = perfect_root(src, level - 1, 2 * index + 1);
    node_hash(&left, &right)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{leaf_hash, root};
    use std::cell::Cell;
    use std::collections::HashMap;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// A source that caches every perfect subtree and counts leaf reads.
    struct Cached {
        leaves: Vec<Hash>,
        nodes: HashMap<(u32, u64), Hash>,
        leaf_reads: Cell<u64>,
    }

    impl Cached {
        fn new(leaves: Vec<Hash>) -> Self {
            let mut nodes = HashMap::new();
            let mut level_hashes = leaves.clone();
            let mut level = 0;
            while level_hashes.len() > 1 {
                level += 1;
                level_hashes = level_hashes
                    .chunks_exact(2)
                    .map(|p| node_hash(&p[0], &p[1]))
                    .collect();
                for (i, h) in level_hashes.iter().enumerate() {
                    nodes.insert((level, i as u64), *h);
                }
            }
            Self {
                leaves,
                nodes,
                leaf_reads: Cell::new(0),
            }
        }
    }

    impl LeafSource for Cached {
        fn len(&self) -> u64 {
            self.leaves.len() as u64
        }
        fn leaf(&self, index: u64) -> Hash {
            self.leaf_reads.set(self.leaf_reads.get() + 1);
            self.leaves[index as usize]
        }
        fn cached_subtree(&self, level: u32, index: u64) -> Option<Hash> {
            self.nodes.get(&(level, index)).copied()
        }
    }

    #[test]
    fn range_root_of_whole_tree_is_the_root() {
        for n in 1..200u64 {
            let l = leaves(n);
            assert_eq!(range_root(l.as_slice(), 0, n), root(&l), "n={n}");
        }
    }

    #[test]
    fn cached_source_gives_same_proofs_with_few_leaf_reads() -> Result<(), ProofError> {
        let l = leaves(1000);
        let cached = Cached::new(l.clone());
        for (index, size) in [(0, 1000), (513, 1000), (999, 1000), (7, 9)] {
            cached.leaf_reads.set(0);
            assert_eq!(
                inclusion_proof(index, size, &cached)?,
                inclusion_proof(index, size, &l)?
            );
            assert!(
                cached.leaf_reads.get() <= 2 * 64,
                "{}",
                cached.leaf_reads.get()
            );
        }
        for (m, n) in [(1, 1000), (500, 1000), (999, 1000), (3, 9)] {
            assert_eq!(
                consistency_proof(m, n, &cached)?,
                consistency_proof(m, n, &l)?
            );
        }
        Ok(())
    }

    #[test]
    fn generation_rejects_bad_arguments() {
        let l = leaves(5);
        assert_eq!(
            inclusion_proof(5, 5, &l),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            inclusion_proof(0, 6, &l),
            Err(ProofError::SizeExceedsSource {
                size: 6,
                available: 5
            })
        );
        assert_eq!(
            consistency_proof(4, 3, &l),
            Err(ProofError::OldSizeExceedsNewSize {
                old_size: 4,
                new_size: 3
            })
        );
        assert_eq!(consistency_proof(0, 5, &l), Ok(vec![]));
        assert_eq!(consistency_proof(5, 5, &l), Ok(vec![]));
    }
}
