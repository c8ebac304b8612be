//! The fixed keys and the small honest ledger the fuzz targets and the seed writer share.
//!
//! Everything is deterministic: the fuzzers cannot forge signatures under the fixed key, so
//! any input they get accepted must carry one of the honest checkpoints signed here.
#![allow(dead_code)]

use kling_audit_ledger::record::{encode, mac_state, Stamp, GENESIS_PREV};
use kling_audit_ledger::{Details, Entry};
use kling_audit_merkle::{root, Hash};
use kling_audit_note::{sign_checkpoint, Checkpoint, Signer};

pub const ORIGIN: &str = "fuzz.example/log";
pub const SIGNER_SEED: [u8; 32] = [0x42; 32];
pub const MAC_ROOT: [u8; 32] = [9; 32];
pub const SEGMENT: &str = "seg-00000000000000000000-20260101.jsonl";

pub fn signer() -> Signer {
    Signer::from_seed(ORIGIN, &SIGNER_SEED).expect("valid key name")
}

/// The pinned verifier key, `<name>+<id>+<base64>`.
pub fn verifier_key() -> String {
    signer().verifier().encode()
}

/// The honest ledger: record lines (each with its newline) and their leaf hashes.
pub fn records() -> (Vec<Vec<u8>>, Vec<Hash>) {
    let details = [
        r#"{"model":"kling-v2-master","prompt_hmac":"3f1c","n":1e21,"neg":-0.0}"#,
        r#"{"nested":{"a":[1,2,{"b":null}]},"text":"ünïcode 🎬 \"quoted\" \\ \u0001"}"#,
        r#"{"hash":"x","mac":"y","empty":{}}"#,
    ];
    let mac = mac_state(&MAC_ROOT);
    let mut prev = GENESIS_PREV;
    let mut lines = Vec::new();
    let mut leaves = Vec::new();
    for (i, d) in details.iter().enumerate() {
        let entry = Entry::new(
            "task.submitted",
            format!("actor-{i}"),
            Details::parse(d).expect("valid details"),
        )
        .expect("valid entry");
        let id = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + i as u128);
        let ts = format!("2026-01-01T00:00:0{i}.000000Z");
        let stamp = Stamp {
            seq: i as u64,
            ts: &ts,
            id: &id,
            prev: &prev,
            epoch: 0,
            mac: &mac,
        };
        let mut out = Vec::new();
        prev = encode(&mut out, &stamp, &entry).expect("a record");
        leaves.push(prev);
        lines.push(out);
    }
    (lines, leaves)
}

/// Signed checkpoints of the honest ledger at every size from 1 up.
pub fn checkpoints(leaves: &[Hash]) -> Vec<(u64, String)> {
    let s = signer();
    (1..=leaves.len())
        .map(|n| {
            let cp = Checkpoint::new(ORIGIN, n as u64, root(&leaves[..n])).expect("checkpoint");
            let note = sign_checkpoint(&cp, &s).expect("signed").to_bytes();
            (n as u64, String::from_utf8(note).expect("UTF-8"))
        })
        .collect()
}

/// The honest ledger's `checkpoints.jsonl`.
pub fn checkpoint_log(leaves: &[Hash]) -> String {
    checkpoints(leaves)
        .into_iter()
        .map(|(size, note)| format!("{}\n", serde_json::json!({"size": size, "note": note})))
        .collect()
}
