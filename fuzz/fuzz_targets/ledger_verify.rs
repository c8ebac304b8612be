//! Fuzzes the offline verifier end to end on untrusted directory contents: the input becomes
//! one segment file and a checkpoint log (split at the first NUL byte), verified with and
//! without pinned keys. It must never panic, and an intact verdict must mean every line is a
//! record whose stored hash matches its bytes.
#![no_main]

mod fixture;

use std::sync::OnceLock;

use kling_audit_ledger::record::parse_line;
use kling_audit_ledger::verify::{verify, VerifyOptions};
use libfuzzer_sys::fuzz_target;

struct State {
    dir: tempfile::TempDir,
    verifier_key: String,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        // One worker thread, warmed up on the honest ledger: rayon's workers register
        // thread-local destructors on first use, which LeakSanitizer would otherwise blame
        // on whichever input happened to run first on a fresh worker.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build_global();
        let state = State {
            dir: tempfile::tempdir().expect("a temporary directory"),
            verifier_key: fixture::verifier_key(),
        };
        let (lines, leaves) = fixture::records();
        let dir = state.dir.path();
        std::fs::write(dir.join(fixture::SEGMENT), lines.concat()).expect("write the segment");
        std::fs::write(
            dir.join("checkpoints.jsonl"),
            fixture::checkpoint_log(&leaves),
        )
        .expect("write the checkpoints");
        let opts = VerifyOptions {
            verifier_key: Some(state.verifier_key.clone()),
            mac_root: Some(fixture::MAC_ROOT),
            ..Default::default()
        };
        let report = verify(dir, &opts).expect("the directory is readable");
        assert!(
            report.intact,
            "the fixture ledger must verify: {:?}",
            report.faults
        );
        state
    })
}

fuzz_target!(|data: &[u8]| {
    let f = state();
    let dir = f.dir.path();
    let (segment, checkpoints) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    std::fs::write(dir.join(fixture::SEGMENT), segment).expect("write the segment");
    std::fs::write(dir.join("checkpoints.jsonl"), checkpoints).expect("write the checkpoints");
    let options = [
        VerifyOptions::default(),
        VerifyOptions {
            verifier_key: Some(f.verifier_key.clone()),
            mac_root: Some(fixture::MAC_ROOT),
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
