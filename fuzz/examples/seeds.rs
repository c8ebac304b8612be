//! Writes the seed inputs in `fuzz/seeds/<target>/`: a few valid inputs per target, so that
//! the fuzzers start behind the framing and signature checks instead of having to discover a
//! valid record line or signed note by chance. Deterministic; rerun after a format change:
//! `cargo run --example seeds` in the fuzz directory.

#[path = "../fuzz_targets/fixture.rs"]
mod fixture;

use std::path::Path;

use kling_audit_ledger::proof::{make_consistency_bundle, make_inclusion_bundle};
use kling_audit_merkle::{consistency_proof, inclusion_proof, leaf_hash, Hash};
use kling_audit_note::{AddCheckpointRequest, Checkpoint, Note};

/// Must match the targets' constants.
const JWT_SECRET: &str = "fuzz-secret-key";
const NOW: i64 = 1_780_000_000;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let key = fixture::verifier_key();
    let (lines, leaves) = fixture::records();
    let checkpoints = fixture::checkpoints(&leaves);
    let cp_log = fixture::checkpoint_log(&leaves);
    let (_, note) = checkpoints.last().expect("checkpoints").clone();

    for (i, l) in lines.iter().enumerate() {
        write("record_line", &format!("record-{i}"), &l[..l.len() - 1]);
    }

    write(
        "details",
        "typical",
        br#"{"model":"kling-v1-6","duration":"5","n":1}"#,
    );
    write(
        "details",
        "numbers",
        b"{ \"a\" : 1e21 , \"b\" : -0.0, \"c\": 123456789012345678901234567890 }",
    );
    write(
        "details",
        "nested",
        br#"{"a":{"b":[{"c":[[],{}]}]},"s":"\ud83c\udfac \u00e9"}"#,
    );

    let with_mode = |mode: u8, body: &[u8]| [&[mode][..], body].concat();
    let cp = Checkpoint::from_note(&Note::parse(note.as_bytes()).expect("a note"))
        .expect("a checkpoint");
    write(
        "checkpoint_note",
        "signed-note",
        &with_mode(0, note.as_bytes()),
    );
    write(
        "checkpoint_note",
        "checkpoint-text",
        &with_mode(1, cp.to_text().as_bytes()),
    );
    let ext = format!("{}extension line\n", cp.to_text());
    write(
        "checkpoint_note",
        "checkpoint-ext",
        &with_mode(1, ext.as_bytes()),
    );
    write(
        "checkpoint_note",
        "verifier-key",
        &with_mode(2, key.as_bytes()),
    );
    let body = AddCheckpointRequest {
        old_size: 1,
        proof: consistency_proof(1, leaves.len() as u64, &leaves).expect("proof"),
        checkpoint: note.clone().into_bytes(),
    }
    .to_bytes();
    write("checkpoint_note", "witness-body", &with_mode(0, &body));

    // merkle_proof: mode, four u64, then hashes.
    let numbers = |mode: u8, w: [u64; 4], hashes: &[Hash]| {
        let mut v = vec![mode];
        for x in w {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for h in hashes {
            v.extend_from_slice(h);
        }
        v
    };
    let many: Vec<Hash> = (0u32..40).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let proof = inclusion_proof(5, 13, &many).expect("proof");
    write(
        "merkle_proof",
        "honest-small",
        &numbers(1, [13, 5, 0, 7], &proof),
    );
    write(
        "merkle_proof",
        "replaced",
        &numbers(1, [37, 20, u64::MAX - 1, 11], &proof),
    );
    write(
        "merkle_proof",
        "extremes",
        &numbers(0, [u64::MAX, u64::MAX - 1, 1 << 63, 0], &proof),
    );

    write(
        "kling_callback",
        "legacy",
        br#"{"task_id":"1","task_status":"succeed","task_status_msg":"","created_at":1722769557708,"updated_at":1722769557708,"final_unit_deduction":"2","final_balance_deduction":{"quota":"0.1","list_price":"0.2"},"task_info":{"parent_video":{"id":"p","url":"u","duration":"5"},"external_task_id":"e"},"task_result":{"images":[{"index":0,"url":"https://i"}],"videos":[{"id":"v","url":"https://v","duration":"5"}]}}"#,
    );
    write(
        "kling_callback",
        "new-standard",
        br#"{"id":"913827032734642185","status":"submitted","outputs":[],"message":"","create_time":1785901861504,"update_time":1785901861504}"#,
    );
    write(
        "kling_callback",
        "enveloped",
        br#"{"code":0,"message":"SUCCEED","data":{"task_id":"1","task_status":"failed","task_status_msg":"no face"}}"#,
    );
    write(
        "kling_callback",
        "webhook",
        b"msg_1\xff1780000000\xffv1,AAAA\xff{\"task_id\":\"1\",\"task_status\":\"submitted\"}",
    );

    let token = kling_api::auth::sign_jwt("ak-fuzz", JWT_SECRET, NOW, 1800).expect("token");
    kling_api::auth::verify_jwt(&token, JWT_SECRET, NOW, 0, None).expect("the token verifies");
    write("jwt", "token", token.as_bytes());
    write("jwt", "bearer", format!("Bearer {token}").as_bytes());

    let mut ledger = lines.concat();
    ledger.push(0);
    ledger.extend_from_slice(cp_log.as_bytes());
    write("ledger_verify", "intact", &ledger);
    // Regression: the verifier once overflowed computing the seq after u64::MAX.
    let last_seq = String::from_utf8(lines[0].clone())
        .expect("UTF-8")
        .replacen("\"seq\":0,", &format!("\"seq\":{},", u64::MAX), 1);
    write("ledger_verify", "regression-max-seq", last_seq.as_bytes());

    // The same ledger on disk: it must verify intact under the targets' keys, and gives the
    // proof bundles.
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join(fixture::SEGMENT), lines.concat()).expect("write");
    std::fs::write(dir.path().join("checkpoints.jsonl"), &cp_log).expect("write");
    let opts = kling_audit_ledger::verify::VerifyOptions {
        verifier_key: Some(key.clone()),
        mac_root: Some(fixture::MAC_ROOT),
        ..Default::default()
    };
    let report = kling_audit_ledger::verify::verify(dir.path(), &opts).expect("verify runs");
    assert!(
        report.intact,
        "the ledger seed is not intact: {:?}",
        report.faults
    );
    for seq in 0..leaves.len() as u64 {
        let b = make_inclusion_bundle(dir.path(), seq, &key).expect("an inclusion bundle");
        let json = serde_json::to_vec(&b).expect("JSON");
        kling_audit_ledger::proof::verify_bundle(&json, &key).expect("the bundle verifies");
        write("proof_bundle", &format!("inclusion-{seq}"), &json);
    }
    let b = make_consistency_bundle(dir.path(), 1, Some(leaves.len() as u64), &key)
        .expect("a consistency bundle");
    let json = serde_json::to_vec(&b).expect("JSON");
    kling_audit_ledger::proof::verify_bundle(&json, &key).expect("the bundle verifies");
    write("proof_bundle", "consistency", &json);
}
