//! Cross-checks against an independent, deliberately naive implementation written straight
//! from the recursive definitions of RFC 6962 §2.1 (MTH, PATH, PROOF/SUBPROOF), plus property
//! tests that proofs verify and that any single-bit change is caught.

use std::cell::RefCell;
use std::collections::HashMap;

use kling_audit_merkle::{
    consistency_proof, inclusion_proof, leaf_hash, node_hash, root, verify_consistency,
    verify_inclusion, Frontier, Hash, LeafSource,
};
use proptest::prelude::*;

/// The recursive definitions over a list of leaf hashes. Only `mth` is memoised, keyed by the
/// exact range, so the cache cannot change any answer.
struct Reference<'a> {
    leaves: &'a [Hash],
    memo: RefCell<HashMap<(usize, usize), Hash>>,
}

impl<'a> Reference<'a> {
    fn new(leaves: &'a [Hash]) -> Self {
        Self {
            leaves,
            memo: RefCell::new(HashMap::new()),
        }
    }

    /// The largest power of two strictly less than n, found by counting up.
    fn k(n: u64) -> u64 {
        let mut k: u128 = 1;
        while k * 2 < u128::from(n) {
            k *= 2;
        }
        k as u64
    }

    fn mth(&self, lo: usize, hi: usize) -> Hash {
        if let Some(h) = self.memo.borrow().get(&(lo, hi)) {
            return *h;
        }
        let n = hi - lo;
        let h = match n {
            0 => {
                use sha2::Digest;
                sha2::Sha256::digest([]).into()
            }
            1 => self.leaves[lo],
            _ => {
                let k = Self::k(n as u64) as usize;
                node_hash(&self.mth(lo, lo + k), &self.mth(lo + k, hi))
            }
        };
        self.memo.borrow_mut().insert((lo, hi), h);
        h
    }

    fn path(&self, m: usize, lo: usize, hi: usize) -> Vec<Hash> {
        let n = hi - lo;
        if n == 1 {
            return vec![];
        }
        let k = Self::k(n as u64) as usize;
        if m < k {
            let mut p = self.path(m, lo, lo + k);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.path(m - k, lo + k, hi);
            p.push(self.mth(lo, lo + k));
            p
        }
    }

    fn proof(&self, m: usize, n: usize) -> Vec<Hash> {
        if m == 0 || m == n {
            return vec![];
        }
        self.subproof(m, 0, n, true)
    }

    fn subproof(&self, m: usize, lo: usize, hi: usize, b: bool) -> Vec<Hash> {
        let n = hi - lo;
        if m == n {
            return if b { vec![] } else { vec![self.mth(lo, hi)] };
        }
        let k = Self::k(n as u64) as usize;
        if m <= k {
            let mut p = self.subproof(m, lo, lo + k, b);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.subproof(m - k, lo + k, hi, false);
            p.push(self.mth(lo, lo + k));
            p
        }
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u64).map(|i| leaf_hash(&i.to_le_bytes())).collect()
}

/// Leaves plus every aligned perfect subtree, hashed pairwise level by level, so that the
/// 4096-size sweep builds each proof from O(log n) hashes instead of rehashing the tree.
struct Levels(Vec<Vec<Hash>>);

impl Levels {
    fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(top) = levels.last().filter(|l| l.len() > 1) {
            let next = top
                .chunks_exact(2)
                .map(|p| node_hash(&p[0], &p[1]))
                .collect();
            levels.push(next);
        }
        Self(levels)
    }
}

impl LeafSource for Levels {
    fn len(&self) -> u64 {
        self.0[0].len() as u64
    }
    fn leaf(&self, index: u64) -> Hash {
        self.0[0][index as usize]
    }
    fn cached_subtree(&self, level: u32, index: u64) -> Option<Hash> {
        self.0.get(level as usize)?.get(index as usize).copied()
    }
}

/// A cheap deterministic spread of sample points in 0..n, always including both ends.
fn samples(n: usize, seed: usize) -> Vec<usize> {
    if n == 0 {
        return vec![];
    }
    let mut v = vec![0, n - 1, (seed * 7919 + 13) % n, n / 2];
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn roots_and_proofs_match_reference_for_every_size_up_to_4096() {
    const MAX: usize = 4096;
    let all = leaves(MAX);
    let reference = Reference::new(&all);
    let cached = Levels::new(all.clone());
    let mut frontier = Frontier::new();
    for n in 0..=MAX {
        let expected = reference.mth(0, n);
        assert_eq!(frontier.root(), expected, "frontier root, size {n}");
        // `root` rehashes every leaf, so it is checked on a sample of sizes only.
        if n % 97 == 0 || n.is_power_of_two() || (n + 1).is_power_of_two() {
            assert_eq!(root(&all[..n]), expected, "root(), size {n}");
        }
        for i in samples(n, n) {
            let p = inclusion_proof(i as u64, n as u64, &cached).expect("valid arguments");
            assert_eq!(p, reference.path(i, 0, n), "inclusion {i} of {n}");
            verify_inclusion(&all[i], i as u64, n as u64, &p, &expected)
                .unwrap_or_else(|e| panic!("inclusion {i} of {n}: {e}"));
        }
        for m in samples(n + 1, n + 1) {
            let p = consistency_proof(m as u64, n as u64, &cached).expect("valid arguments");
            assert_eq!(p, reference.proof(m, n), "consistency {m} -> {n}");
            verify_consistency(m as u64, n as u64, &reference.mth(0, m), &expected, &p)
                .unwrap_or_else(|e| panic!("consistency {m} -> {n}: {e}"));
        }
        if n < MAX {
            frontier.push(all[n]);
        }
    }
}

#[test]
fn every_index_and_old_size_matches_reference_up_to_140() {
    let all = leaves(140);
    let reference = Reference::new(&all);
    for n in 1..=140 {
        let r = reference.mth(0, n);
        for i in 0..n {
            let p = inclusion_proof(i as u64, n as u64, &all).expect("valid arguments");
            assert_eq!(p, reference.path(i, 0, n), "inclusion {i} of {n}");
            assert_eq!(
                verify_inclusion(&all[i], i as u64, n as u64, &p, &r),
                Ok(())
            );
        }
        for m in 0..=n {
            let p = consistency_proof(m as u64, n as u64, &all).expect("valid arguments");
            assert_eq!(p, reference.proof(m, n), "consistency {m} -> {n}");
            let rm = reference.mth(0, m);
            assert_eq!(verify_consistency(m as u64, n as u64, &rm, &r, &p), Ok(()));
        }
    }
}

/// The left/right pattern of an audit path, from the recursive PATH definition: `true` where
/// the sibling sits on the right. Two (index, size) pairs with the same pattern fold a proof
/// identically, so only the root can tell them apart.
fn path_shape(m: u64, n: u64) -> Vec<bool> {
    if n == 1 {
        return vec![];
    }
    let k = Reference::k(n);
    if m < k {
        let mut s = path_shape(m, k);
        s.push(true);
        s
    } else {
        let mut s = path_shape(m - k, n - k);
        s.push(false);
        s
    }
}

/// How a consistency proof is folded, from the recursive SUBPROOF definition: whether the old
/// root is the implicit first element, then for each further element whether it joins as a
/// right sibling (new root only) or a left sibling (both roots).
fn consistency_shape(m: u64, n: u64) -> (bool, Vec<bool>) {
    fn sub(m: u64, n: u64, whole: bool) -> (bool, Vec<bool>) {
        if m == n {
            return (whole, vec![]);
        }
        let k = Reference::k(n);
        if m <= k {
            let (seed, mut s) = sub(m, k, whole);
            s.push(true);
            (seed, s)
        } else {
            let (seed, mut s) = sub(m - k, n - k, false);
            s.push(false);
            (seed, s)
        }
    }
    sub(m, n, true)
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut out = *h;
    out[(bit / 8) % 32] ^= 1 << (bit % 8);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_inclusion_proofs_verify_and_single_bit_changes_fail(
        n in 1usize..600,
        index_seed in any::<u64>(),
        bit in 0usize..256,
        which in 0usize..64,
        salt in any::<u64>(),
    ) {
        let all: Vec<Hash> = (0..n as u64)
            .map(|i| leaf_hash(&[i.to_le_bytes(), salt.to_le_bytes()].concat()))
            .collect();
        let index = index_seed % n as u64;
        let size = n as u64;
        let r = root(&all);
        let leaf = all[index as usize];
        let proof = inclusion_proof(index, size, &all).expect("valid arguments");
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &r), Ok(()));

        prop_assert!(verify_inclusion(&flip(&leaf, bit), index, size, &proof, &r).is_err());
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&r, bit)).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let j = which % bad.len();
            bad[j] = flip(&bad[j], bit);
            prop_assert!(verify_inclusion(&leaf, index, size, &bad, &r).is_err());
        }
        let ibit = which % 64;
        let bad_index = index ^ (1 << ibit);
        prop_assert!(verify_inclusion(&leaf, bad_index, size, &proof, &r).is_err());
        // A flipped size is caught unless it leaves the path's shape unchanged; that residue
        // is inherent to RFC 6962 and is why size and root must come from one signed checkpoint.
        let bad_size = size ^ (1 << ibit);
        let accepted = verify_inclusion(&leaf, index, bad_size, &proof, &r).is_ok();
        let same_shape = index < bad_size && path_shape(index, bad_size) == path_shape(index, size);
        prop_assert_eq!(accepted, same_shape);
    }

    #[test]
    fn random_consistency_proofs_verify_and_single_bit_changes_fail(
        n in 1usize..600,
        m_seed in any::<u64>(),
        bit in 0usize..256,
        which in 0usize..64,
    ) {
        let all = leaves(n);
        let new_size = n as u64;
        let old_size = m_seed % (new_size + 1);
        let old_root = root(&all[..old_size as usize]);
        let new_root = root(&all);
        let proof = consistency_proof(old_size, new_size, &all).expect("valid arguments");
        prop_assert_eq!(
            verify_consistency(old_size, new_size, &old_root, &new_root, &proof),
            Ok(())
        );
        prop_assert!(
            verify_consistency(old_size, new_size, &flip(&old_root, bit), &new_root, &proof)
                .is_err()
        );
        // The empty tree is a prefix of every tree, so an old size of 0 constrains nothing new.
        if old_size != 0 {
            prop_assert!(
                verify_consistency(old_size, new_size, &old_root, &flip(&new_root, bit), &proof)
                    .is_err()
            );
        }
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let j = which % bad.len();
            bad[j] = flip(&bad[j], bit);
            prop_assert!(verify_consistency(old_size, new_size, &old_root, &new_root, &bad).is_err());
        }
        // As with inclusion, a flipped size passes exactly when it leaves the proof's shape
        // unchanged; an old size of 0 binds nothing, so it is skipped.
        if old_size != 0 {
            let sbit = which % 64;
            let original = consistency_shape(old_size, new_size);
            for (m2, n2) in [(old_size ^ (1 << sbit), new_size), (old_size, new_size ^ (1 << sbit))] {
                if m2 == 0 {
                    continue;
                }
                let accepted = verify_consistency(m2, n2, &old_root, &new_root, &proof).is_ok();
                let same_shape = m2 <= n2 && consistency_shape(m2, n2) == original;
                prop_assert_eq!(accepted, same_shape, "sizes {} -> {}", m2, n2);
            }
        }
    }
}
