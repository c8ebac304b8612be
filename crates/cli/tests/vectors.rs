//! The committed test vectors of docs/format.md still verify, by both verifiers, and their
//! hashes and MACs are what the document says.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kling-audit");
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/ledger-v1");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/verify_ledger.py");

fn keys() -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(format!("{VECTORS}/KEYS"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn vector_ledger_verifies_with_its_keys_in_rust() {
    let k = keys();
    // Verify a copy: a verifier never writes, but the copy keeps the vectors pristine anyway.
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(VECTORS).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(tmp.path())
        .args([
            "verify",
            "--format",
            "json",
            "--key",
            &k["verifier-key"],
            "--mac-key",
            &k["mac-root-key"],
        ])
        .output()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(r["records"].as_u64().unwrap().to_string(), k["records"]);
    assert_eq!(r["head"].as_str().unwrap(), k["head"]);
    assert_eq!(r["root"].as_str().unwrap(), k["root"]);
    assert_eq!(r["segments"], 3);
}

#[test]
fn vector_ledger_verifies_in_python() {
    let k = keys();
    let out = Command::new("python3")
        .arg(SCRIPT)
        .arg(VECTORS)
        .arg(&k["mac-root-key"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "intact: {} records, head {}",
            k["records"], k["head"]
        )),
        "{stdout}"
    );
}

#[test]
fn first_vector_record_matches_the_worked_example() {
    let line = std::fs::read(format!("{VECTORS}/seg-00000000000000000000-20261204.jsonl")).unwrap();
    let line = &line[..line.iter().position(|b| *b == b'\n').unwrap()];
    let v = kling_audit_ledger::record::parse_line(line).unwrap();
    assert_eq!(line.len(), 437);
    assert_eq!(
        hex::encode(v.leaf),
        "38bc72468e5fedac84287e41f5029099baf42ab8fe9302cdfe0f509e4461b966"
    );
    assert!(v.hash_ok());
    assert_eq!(v.mac_input.len(), 289);
    let mut root = [0u8; 32];
    hex::decode_to_slice(&keys()["mac-root-key"], &mut root).unwrap();
    assert!(v.mac_ok(&root));
    assert_eq!(
        hex::encode(v.mac),
        "23bf94db1d294f61e5393c0c68d79300349fce7deb893b3b68517bae6b19f149"
    );
}
