//! Fuzzes `kling_audit_ledger::proof::verify_bundle`, the offline check of inclusion and
//! consistency bundles, under a fixed pinned key. Besides never panicking: the fuzzer cannot
//! sign, so every bundle it gets accepted carries honest checkpoints of the fixture ledger,
//! and then it must prove only the honest record at its honest position, or only an honest
//! extension (no forged or mixed-up proof passes, as in GHSA-672p-m5jq-mrh8).
#![no_main]

mod fixture;

use std::sync::OnceLock;

use kling_audit_ledger::proof::{verify_bundle, Verdict};
use kling_audit_merkle::Hash;
use libfuzzer_sys::fuzz_target;

struct Honest {
    key: String,
    leaves: Vec<Hash>,
}

fn honest() -> &'static Honest {
    static HONEST: OnceLock<Honest> = OnceLock::new();
    HONEST.get_or_init(|| Honest {
        key: fixture::verifier_key(),
        leaves: fixture::records().1,
    })
}

fuzz_target!(|data: &[u8]| {
    let h = honest();
    match verify_bundle(data, &h.key) {
        Ok(Verdict::Inclusion(v)) => {
            assert_eq!(v.origin, fixture::ORIGIN);
            assert!(
                v.tree_size as usize <= h.leaves.len(),
                "unsigned size {v:?}"
            );
            assert!(v.seq < v.tree_size);
            assert_eq!(
                v.leaf_hash,
                hex::encode(h.leaves[v.seq as usize]),
                "a record that is not in the log was proven"
            );
        }
        Ok(Verdict::Consistency(v)) => {
            assert_eq!(v.origin, fixture::ORIGIN);
            assert!(v.old_size <= v.new_size);
            assert!(v.new_size as usize <= h.leaves.len());
        }
        Err(_) => {}
    }
});
