//! Checking inclusion and consistency proofs exactly as RFC 9162 §2.1.3.2 and §2.1.4.2 state.
//!
//! The RFC loops are kept step for step so they can be read against the text. Before running
//! them, the proof length implied by the sizes is checked, which rejects nothing the loops would
//! accept but lets the error say what length was expected. Neither function allocates.

use crate::{empty_root, node_hash, Hash, ProofError};

/// Checks that `leaf` is the leaf at `index` in the tree of `size` leaves with root `root`.
///
/// The tree size is not bound by the proof alone: like every RFC 6962 verifier, this trusts
/// `size` and `root` to come together from one signed checkpoint.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            expected,
            actual: proof.len(),
            size_a: index,
            size_b: size,
        });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(wrong_length(expected, proof.len(), index, size));
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(wrong_length(expected, proof.len(), index, size));
    }
    if r != *root {
        return Err(ProofError::RootMismatch {
            expected: *root,
            computed: r,
        });
    }
    Ok(())
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of
/// `old_size` leaves with root `old_root`.
///
/// Beyond the RFC's `0 < old_size < new_size` case: equal sizes need an empty proof and equal
/// roots; `old_size == 0` needs an empty proof and the empty-tree root as `old_root` (a size-0
/// checkpoint with any other root is malformed); `old_size > new_size` is always rejected.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OldSizeExceedsNewSize { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(wrong_length(0, proof.len(), old_size, new_size));
        }
        if old_size == 0 {
            let empty = empty_root();
            if *old_root != empty {
                return Err(ProofError::OldRootMismatch {
                    expected: *old_root,
                    computed: empty,
                });
            }
            return Ok(());
        }
        if old_root != new_root {
            return Err(ProofError::NewRootMismatch {
                expected: *new_root,
                computed: *old_root,
            });
        }
        return Ok(());
    }

    let expected = consistency_len(old_size, new_size);
    if proof.len() != expected {
        return Err(wrong_length(expected, proof.len(), old_size, new_size));
    }
    // Step 1: a power-of-two old tree is a complete subtree of the new one, so its root is the
    // proof's implicit first element; taking it as the seed avoids allocating a prepended copy.
    let (seed, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(wrong_length(expected, 0, old_size, new_size)),
        }
    };
    // Step 2.
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 3.
    let (mut fr, mut sr) = (seed, seed);
    for c in rest {
        if snode == 0 {
            return Err(wrong_length(expected, proof.len(), old_size, new_size));
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 4.
    if snode != 0 {
        return Err(wrong_length(expected, proof.len(), old_size, new_size));
    }
    if fr != *old_root {
        return Err(ProofError::OldRootMismatch {
            expected: *old_root,
            computed: fr,
        });
    }
    if sr != *new_root {
        return Err(ProofError::NewRootMismatch {
            expected: *new_root,
            computed: sr,
        });
    }
    Ok(())
}

fn wrong_length(expected: usize, actual: usize, size_a: u64, size_b: u64) -> ProofError {
    ProofError::WrongProofLength {
        expected,
        actual,
        size_a,
        size_b,
    }
}

/// How many times the RFC loop consumes a proof element before `sn` reaches zero, starting
/// from `fn = fnode`, `sn = snode`. Mirrors the loop's index arithmetic without hashing.
fn path_steps(mut fnode: u64, mut snode: u64) -> usize {
    let mut steps = 0;
    while snode != 0 {
        if fnode & 1 == 0 && fnode == snode {
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        }
        fnode >>= 1;
        snode >>= 1;
        steps += 1;
    }
    steps
}

/// The inclusion proof length for `index < size`.
fn inclusion_len(index: u64, size: u64) -> usize {
    path_steps(index, size - 1)
}

/// The consistency proof length for `0 < old_size < new_size`.
fn consistency_len(old_size: u64, new_size: u64) -> usize {
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let after_seed = path_steps(fnode, snode);
    // The seed is the first proof element unless the old root stands in for it.
    if old_size.is_power_of_two() {
        after_seed
    } else {
        after_seed + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{consistency_proof, inclusion_proof, leaf_hash};

    #[test]
    fn computed_lengths_match_generated_proofs() -> Result<(), ProofError> {
        let leaves: Vec<Hash> = (0u32..130).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=130u64 {
            for i in 0..n {
                assert_eq!(inclusion_proof(i, n, &leaves)?.len(), inclusion_len(i, n));
            }
            for m in 1..n {
                let p = consistency_proof(m, n, &leaves)?;
                assert_eq!(p.len(), consistency_len(m, n), "m={m} n={n}");
            }
        }
        Ok(())
    }

    #[test]
    fn lengths_at_extreme_sizes_stay_within_64() {
        assert_eq!(inclusion_len(0, u64::MAX), 64);
        // The last leaf of 2^64 - 1 sits alone beside 63 perfect subtrees, as leaf 6 of 7 sits
        // beside two.
        assert_eq!(inclusion_len(6, 7), 2);
        assert_eq!(inclusion_len(u64::MAX - 1, u64::MAX), 63);
        assert!(consistency_len(1, u64::MAX) <= 64);
        assert!(consistency_len(u64::MAX - 1, u64::MAX) <= 65);
    }
}
