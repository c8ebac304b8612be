//! Fuzzes the offline verifier end to end on untrusted directory contents: the input becomes
//! one segment file and a checkpoint log (split at the first NUL byte), verified with and
//! without pinned keys. It must never panic, and an intact verdict must mean every line is a
//! record whose stored hash matches its bytes.
#![no_main]

use std::sync::OnceLock;

use kling_audit_ledger::record::parse_line;
use kling_audit_ledger::verify::{verify, VerifyOptions};
use kling_audit_note::Signer;
use libfuzzer_sys::fuzz_target;

const SEGMENT: &str = "seg-00000000000000000000-20260101.jsonl";

struct Fixture {
    dir: tempfile::TempDir,
    verifier_key: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let signer = Signer::from_seed("fuzz.example/log", &[0x42; 32]).expect("valid name");
        Fixture {
            dir: tempfile::tempdir().expect("a temporary directory"),
            verifier_key: signer.verifier().encode(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let dir = f.dir.path();
    let (segment, checkpoints) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    std::fs::write(dir.join(SEGMENT), segment).expect("write the segment");
    std::fs::write(dir.join("checkpoints.jsonl"), checkpoints).expect("write the checkpoints");
    let options = [
        VerifyOptions::default(),
        VerifyOptions {
            verifier_key: Some(f.verifier_key.clone()),
            mac_root: Some([9; 32]),
            ..Default::default()
        },
    ];
    for opts in &options {
        let report = verify(dir, opts).expect("the directory is readable");
        assert!(report.faults_total >= report.faults.len() as u64);
        assert_eq!(report.intact, report.faults_total == 0);
        if report.intact {
            for line in segment.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v = parse_line(line).expect("an intact ledger has only records");
                assert!(v.hash_ok(), "an intact ledger has an altered record");
            }
        }
    }
});
