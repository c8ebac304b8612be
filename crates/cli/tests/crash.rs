//! Crash safety of the real binary: `kling-audit log --stdin` killed with SIGKILL at random
//! moments, over and over. After each kill the ledger must reopen, keep every acknowledged
//! record, and verify intact.

mod log_stdin;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use kling_audit_ledger::verify::{verify, VerifyOptions};
use kling_audit_ledger::{Ledger, LedgerOptions};
use log_stdin::spawn_log_stdin;
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_kling-audit");

#[test]
fn sigkill_at_random_moments_never_loses_an_acknowledged_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b6c696e67);
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    for round in 0..100 {
        let (mut child, feeder) = spawn_log_stdin(&dir, &[], move |i| {
            format!(
                "{{\"type\":\"crash.test\",\"actor\":\"round-{round}\",\"details\":{{\"i\":{i},\"pad\":\"{}\"}}}}\n",
                "x".repeat(i % 200)
            )
        });
        let stdout = child.stdout.take().unwrap();
        let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                got.push((
                    v["seq"].as_u64().unwrap(),
                    v["hash"].as_str().unwrap().to_owned(),
                ));
                if got.len() == 1 {
                    let _ = first_tx.send(());
                }
            }
            got
        });
        if round % 2 == 0 {
            // Any moment, start-up (key creation, recovery) included.
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..150)));
        } else {
            // Mid-stream: after the first acknowledgement, however slow the machine is.
            let _ = first_rx.recv_timeout(Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..40)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let _ = feeder.join();
        for (seq, hash) in reader.join().unwrap() {
            acked.insert(seq, hash);
        }
    }
    assert!(
        acked.len() > 100,
        "the child acknowledged only {} records: too little to prove anything",
        acked.len()
    );
    // Reopen once more (recovering any torn tail), then check every acknowledgement.
    let (ledger, _) = Ledger::open(LedgerOptions::new(&dir)).unwrap();
    ledger.close().unwrap();
    let mut on_disk = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if !p.file_name().unwrap().to_string_lossy().starts_with("seg-") {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            on_disk.insert(
                v["seq"].as_u64().unwrap(),
                v["hash"].as_str().unwrap().to_owned(),
            );
        }
    }
    for (seq, hash) in &acked {
        assert_eq!(
            on_disk.get(seq),
            Some(hash),
            "acknowledged record {seq} is missing or changed"
        );
    }
    let report = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(report.intact, "{:#?}", report.faults);
}

/// A write that fails (here: the file-size limit, a real EFBIG from the kernel) poisons the
/// writer: nothing is acknowledged after it, everything acknowledged before it survives, and
/// the next writer recovers the ledger.
#[test]
fn a_failed_write_stops_all_acknowledgements_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    // Create the keys first, without a limit.
    assert!(Command::new(BIN)
        .arg("--dir")
        .arg(&dir)
        .args(["log", "--type", "t", "--actor", "setup"])
        .status()
        .unwrap()
        .success());
    let input = padded_lines(300);
    // SIGXFSZ is ignored so that the write returns EFBIG instead of killing the process.
    let script = format!("trap '' XFSZ; exec prlimit --fsize=30000 {BIN} --dir \"$0\" log --stdin");
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Lines arrive a few at a time, so that some batches are durable before the limit is hit.
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for line in input.lines() {
            if writeln!(stdin, "{line}").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the writer must fail: {stderr}");
    assert_eq!(stderr.matches("File too large").count(), 1, "{stderr}");
    assert!(stderr.contains("were not recorded"), "{stderr}");
    let acked: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        !acked.is_empty() && acked.len() < 300,
        "{} acknowledged",
        acked.len()
    );
    // Seq 0 is the setup record and seq 1 the seal of its epoch.
    assert_eq!(
        acked,
        (2..2 + acked.len() as u64).collect::<Vec<_>>(),
        "acks are contiguous"
    );
    // Without the limit, the ledger reopens, keeps every acknowledged record, and verifies.
    let (ledger, _) = Ledger::open(LedgerOptions::new(&dir)).unwrap();
    let head = ledger.close().unwrap();
    assert!(head.size > *acked.last().unwrap());
    let report = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(report.intact, "{:#?}", report.faults);
}

#[test]
fn a_file_size_limit_stops_the_writer_with_an_error_instead_of_killing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let input = padded_lines(3000);
    // SIGXFSZ keeps its default action (kill) here: the binary must not let it fire.
    let mut child = Command::new("prlimit")
        .arg("--fsize=400000")
        .arg(BIN)
        .arg("--dir")
        .arg(&dir)
        .args(["log", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Paced, so that records are acknowledged in small batches before the limit is reached:
    // all 3,000 lines in one batch would cross the limit together and none would be
    // acknowledged, which is correct but leaves nothing to check.
    let feeder = std::thread::spawn(move || {
        let lines: Vec<&str> = input.split_inclusive('\n').collect();
        for part in lines.chunks(20) {
            if stdin.write_all(part.concat().as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "killed or wrong exit: {stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    let acked = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(acked > 0 && acked < 3000, "{acked} acknowledged");
    let (ledger, _) = Ledger::open(LedgerOptions::new(&dir)).unwrap();
    let head = ledger.close().unwrap();
    assert!(head.size >= acked as u64);
    let report = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(report.intact, "{:#?}", report.faults);
}

/// `n` input lines for `log --stdin`, about 150 bytes each.
fn padded_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"type\":\"t\",\"actor\":\"a\",\"details\":{{\"i\":{i},\"pad\":\"{}\"}}}}\n",
                "y".repeat(100)
            )
        })
        .collect()
}
