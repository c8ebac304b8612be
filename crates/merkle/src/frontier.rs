//! The compact range of a growing tree: the roots of its perfect subtrees.
//!
//! A tree of size `n` splits into one perfect subtree per one bit of `n`, largest on the left.
//! Keeping only those roots (at most 64 hashes) lets the ledger writer know the root after every
//! append without holding or re-reading the leaves.

use crate::{empty_root, node_hash, FrontierError, Hash};

/// The perfect-subtree roots of a tree that only grows on the right.
///
/// `push` costs amortised O(1) and at worst O(log n) hashes; `root` costs O(log n) hashes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of the perfect subtrees, leftmost (largest) first; one per one bit of `size`.
    subtrees: Vec<Hash>,
}

// By hand for `clone_from`, which reuses the roots' buffer: the ledger writer copies its
// frontier after every sync.
impl Clone for Frontier {
    fn clone(&self) -> Self {
        Frontier {
            size: self.size,
            subtrees: self.subtrees.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.size = source.size;
        self.subtrees.clone_from(&source.subtrees);
    }
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the frontier of the tree over these leaf hashes, in order.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut f = Self::new();
        for leaf in leaves {
            f.push(leaf);
        }
        f
    }

    /// Restores a frontier saved with [`Frontier::size`] and [`Frontier::subtrees`].
    ///
    /// Only the shape is checked: the roots themselves cannot be verified without the leaves.
    pub fn from_subtrees(size: u64, subtrees: Vec<Hash>) -> Result<Self, FrontierError> {
        let expected = size.count_ones() as usize;
        if subtrees.len() != expected {
            return Err(FrontierError::SubtreeCount {
                size,
                expected,
                actual: subtrees.len(),
            });
        }
        Ok(Self { size, subtrees })
    }

    /// Appends one leaf hash.
    ///
    /// # Panics
    ///
    /// Panics if the tree already holds `u64::MAX` leaves, which no real log reaches.
    pub fn push(&mut self, leaf: Hash) {
        let mut carry = leaf;
        // Adding one to the size merges equal-sized subtrees exactly like a binary carry.
        let mut bits = self.size;
        while bits & 1 == 1 {
            let left = self
                .subtrees
                .pop()
                .expect("one subtree root is stored per one bit of size");
            carry = node_hash(&left, &carry);
            bits >>= 1;
        }
        self.subtrees.push(carry);
        self.size = self.size.checked_add(1).expect("tree size overflows u64");
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, leftmost (largest) first.
    pub fn subtrees(&self) -> &[Hash] {
        &self.subtrees
    }

    /// The RFC 6962 root of the tree so far.
    pub fn root(&self) -> Hash {
        // The right spine of an RFC 6962 tree folds the subtrees from the smallest upward.
        let mut iter = self.subtrees.iter().rev();
        let Some(mut acc) = iter.next().copied() else {
            return empty_root();
        };
        for left in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf_hash;

    #[test]
    fn a_frontier_copied_over_another_equals_its_source() {
        let big = Frontier::from_leaves((0u32..13).map(|i| leaf_hash(&i.to_le_bytes())));
        let small = Frontier::from_leaves((0u32..4).map(|i| leaf_hash(&i.to_le_bytes())));
        let mut copy = big.clone();
        copy.clone_from(&small);
        assert_eq!(copy, small);
        assert_eq!(copy.root(), small.root());
        copy.clone_from(&big);
        assert_eq!(copy, big);
    }

    #[test]
    fn subtree_count_matches_one_bits() {
        let mut f = Frontier::new();
        for i in 0u64..300 {
            assert_eq!(f.subtrees().len(), i.count_ones() as usize);
            f.push(leaf_hash(&i.to_be_bytes()));
        }
    }

    #[test]
    fn restored_frontier_continues_like_the_original() -> Result<(), FrontierError> {
        let leaves: Vec<Hash> = (0u32..77).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut a = Frontier::from_leaves(leaves[..50].iter().copied());
        let mut b = Frontier::from_subtrees(a.size(), a.subtrees().to_vec())?;
        for l in &leaves[50..] {
            a.push(*l);
            b.push(*l);
        }
        assert_eq!(a.root(), b.root());
        assert_eq!(a, Frontier::from_leaves(leaves.iter().copied()));
        Ok(())
    }

    #[test]
    fn restore_rejects_wrong_subtree_count() {
        let err = Frontier::from_subtrees(5, vec![[0; 32]]);
        assert_eq!(
            err,
            Err(FrontierError::SubtreeCount {
                size: 5,
                expected: 2,
                actual: 1
            })
        );
    }
}
