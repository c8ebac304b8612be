//! Fuzzes `verify_inclusion` and `verify_consistency` with arbitrary sizes, indices, roots and
//! proof bytes: they must never panic, and over a small honest log they must accept a proof
//! only if it is exactly the honest proof for the claim (so no forged or mixed-up proof passes,
//! as in GHSA-672p-m5jq-mrh8).
//!
//! Layout: byte 0 mode, bytes 1..33 four little-endian u64 (sizes, indices, selectors), the
//! rest 32-byte hashes.
#![no_main]

use std::sync::OnceLock;

use kling_audit_merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion, Hash,
};
use libfuzzer_sys::fuzz_target;

const MAX_LEAVES: u64 = 70;

fn leaves() -> &'static [Hash] {
    static LEAVES: OnceLock<Vec<Hash>> = OnceLock::new();
    LEAVES.get_or_init(|| {
        (0..MAX_LEAVES)
            .map(|i| leaf_hash(&i.to_le_bytes()))
            .collect()
    })
}

/// A candidate proof: the honest one with some hashes swapped for fuzzer hashes, or only
/// fuzzer hashes, and possibly cut short or extended.
fn candidate(honest: &[Hash], select: u64, extra: &[Hash]) -> Vec<Hash> {
    let mut proof: Vec<Hash> = if select & 1 == 1 {
        extra.to_vec()
    } else {
        honest
            .iter()
            .enumerate()
            .map(|(k, h)| {
                if !extra.is_empty() && (select >> (k % 60 + 2)) & 1 == 1 {
                    extra[k % extra.len()]
                } else {
                    *h
                }
            })
            .collect()
    };
    match (select >> 62) & 3 {
        1 if !proof.is_empty() => {
            proof.pop();
        }
        2 => proof.push(extra.first().copied().unwrap_or([0; 32])),
        _ => {}
    }
    proof
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 33 {
        return;
    }
    let word = |k: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[1 + 8 * k..9 + 8 * k]);
        u64::from_le_bytes(b)
    };
    let (a, b, c, d) = (word(0), word(1), word(2), word(3));
    let extra: Vec<Hash> = data[33..]
        .chunks_exact(32)
        .map(|h| {
            let mut x = [0u8; 32];
            x.copy_from_slice(h);
            x
        })
        .collect();
    let zero = [0u8; 32];
    if data[0] & 1 == 0 {
        // Arbitrary numbers, including the extremes: never panic.
        let r1 = extra.first().unwrap_or(&zero);
        let r2 = extra.get(1).unwrap_or(&zero);
        let _ = verify_inclusion(&leaf_hash(&data[..9]), a, b, &extra, r1);
        let _ = verify_consistency(a, b, r1, r2, &extra);
        let _ = verify_consistency(c, d, r1, r2, &extra[extra.len().min(2)..]);
        return;
    }

    let all = leaves();
    let size = a % (MAX_LEAVES + 1);
    let tree = &all[..size as usize];
    let size_root = root(tree);
    if size > 0 {
        let index = b % size;
        // Usually the right leaf; sometimes another one.
        let claimed = if d & 1 == 1 {
            (index + d % size) % size
        } else {
            index
        };
        let honest = inclusion_proof(index, size, tree).expect("index is in range");
        let proof = candidate(&honest, c, &extra);
        if verify_inclusion(&all[claimed as usize], index, size, &proof, &size_root).is_ok() {
            assert_eq!(claimed, index, "accepted the wrong leaf");
            assert_eq!(proof, honest, "accepted a proof that is not the honest one");
        }
    }
    let old = d % (size + 1);
    let honest = consistency_proof(old, size, tree).expect("old <= size");
    let proof = candidate(&honest, c.rotate_left(17), &extra);
    let old_root = root(&tree[..old as usize]);
    if verify_consistency(old, size, &old_root, &size_root, &proof).is_ok() {
        assert_eq!(
            proof, honest,
            "accepted a consistency proof that is not the honest one"
        );
    }
    // The honest proof between other sizes, offered for these.
    if size > 1 {
        let other = consistency_proof(old.saturating_sub(1), size - 1, tree).expect("in range");
        if verify_consistency(old, size, &old_root, &size_root, &other).is_ok() {
            assert_eq!(other, honest);
        }
    }
});
