//! `kling-audit verify` against a `log --stdin` writer whose checkpoints are stored all the time
//! (a small segment limit brings one at every segment change): while it writes, and after it
//! is killed with SIGKILL at random moments.

mod log_stdin;
mod run_ok;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use log_stdin::spawn_log_stdin;
use rand::{Rng, SeedableRng};
use run_ok::run_ok;

const BIN: &str = env!("CARGO_BIN_EXE_kling-audit");

/// `log --stdin` with 4 KiB segments, fed records until its stdin closes.
fn spawn_writer(dir: &Path, tag: &str) -> (Child, std::thread::JoinHandle<()>) {
    let tag = tag.to_owned();
    spawn_log_stdin(dir, &["--max-segment-bytes", "4096"], move |i| {
        format!("{{\"type\":\"live.test\",\"actor\":\"{tag}\",\"details\":{{\"i\":{i}}}}}\n")
    })
}

/// `kling-audit verify --format json` with the keys directory's verifier key pinned.
fn verify(dir: &Path) -> (Output, serde_json::Value) {
    let key = format!("@{}", keys_dir(dir).join("checkpoint.pub").display());
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .args(["verify", "--format", "json", "--key", &key])
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, report)
}

fn keys_dir(dir: &Path) -> std::path::PathBuf {
    dir.with_file_name(format!(
        "{}.keys",
        dir.file_name().unwrap().to_string_lossy()
    ))
}

#[test]
fn verify_while_log_stores_checkpoints_finds_no_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let (mut child, feeder) = spawn_writer(&dir, "live");
    let mut acks = BufReader::new(child.stdout.take().unwrap()).lines();
    // The keys and the first records exist before the first verification.
    acks.next().unwrap().unwrap();
    let drain = std::thread::spawn(move || acks.count());
    let started = Instant::now();
    let mut runs = 0;
    while started.elapsed() < Duration::from_secs(8) {
        let (out, report) = verify(&dir);
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {runs}: {report:#}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        runs += 1;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = feeder.join();
    let acked = drain.join().unwrap();
    assert!(runs >= 3 && acked > 100, "{runs} runs, {acked} records");
}

#[test]
fn sigkill_while_log_stores_checkpoints_leaves_only_what_recovery_allows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6c6f6763);
    for round in 0..20 {
        let (mut child, feeder) = spawn_writer(&dir, &format!("round-{round}"));
        let mut acks = BufReader::new(child.stdout.take().unwrap()).lines();
        let _ = acks.next();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..80)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let _ = feeder.join();
        // Before any writer reopens it: only what a crash leaves (docs/format.md), an unsealed
        // tail a crash explains or a torn last checkpoint line, which the next writer cuts.
        let log = std::fs::read(dir.join("checkpoints.jsonl")).unwrap();
        let torn = !log.is_empty() && !log.ends_with(b"\n");
        let (out, report) = verify(&dir);
        let faults = report["faults"].as_array().cloned().unwrap_or_default();
        for f in &faults {
            let message = f["message"].as_str().unwrap_or_default();
            let crash = message.contains("After a crash this is expected")
                || message.contains("A crash explains this only if");
            let allowed =
                f["kind"] == "unsealed_tail" && crash || f["kind"] == "bad_checkpoint" && torn;
            assert!(
                allowed,
                "round {round}: {f:#}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    // The next writer recovers and signs; then the ledger is intact.
    run_ok(&dir, &["log", "--type", "t", "--actor", "after"]);
    let (out, report) = verify(&dir);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
}
