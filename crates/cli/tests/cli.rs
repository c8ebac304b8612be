//! The command line as users meet it: outputs, exit codes and error texts (golden).

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kling-audit");

fn run(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    run_command(Command::new(BIN), dir, args, stdin)
}

/// `run` under a file size limit (`ulimit -f`) of `limit` bytes: a write that would make a
/// file larger fails with EFBIG, as a write on a full disk fails with ENOSPC.
fn run_limited(limit: u64, dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--fsize={limit}:unlimited")).arg(BIN);
    run_command(cmd, dir, args, stdin)
}

fn run_command(
    mut cmd: Command,
    dir: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut child = cmd
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("KLING_AUDIT_DIR")
        // Golden stderr texts assume the default log filter.
        .env_remove("KLING_AUDIT_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8], dir: &std::path::Path) -> String {
    String::from_utf8_lossy(b).replace(&dir.display().to_string(), "<DIR>")
}

#[test]
fn log_prints_seq_and_hash_and_verify_says_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let out = run(
        &dir,
        &[
            "log",
            "--type",
            "task.submitted",
            "--actor",
            "alice",
            "--details",
            r#"{"n": 1e21}"#,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr, &dir));
    let ack: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ack["seq"], 0);
    assert_eq!(ack["hash"].as_str().unwrap().len(), 64);
    let out = run(&dir, &["log", "--type", "t", "--actor", "bob"], None);
    let ack: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The second process first seals the epoch the first one left open (seq 1).
    assert_eq!(ack["seq"], 2);
    let out = run(&dir, &["verify", "--format", "json"], None);
    assert_eq!(out.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["intact"], true);
    assert_eq!(r["records"], 3);
    assert_eq!(r["last_seq"], 2);
}

#[test]
fn log_stdin_acks_each_good_line_and_names_bad_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let input = concat!(
        "{\"type\":\"a\",\"actor\":\"x\",\"details\":{\"k\":1}}\n",
        "{\"type\":\"b\",\"actor\":\"x\",\"details\":[1]}\n",
        "not json\n",
        "{\"type\":\"c\",\"actor\":\"x\"}\n",
    );
    let out = run(&dir, &["log", "--stdin"], Some(input));
    assert_eq!(out.status.code(), Some(1));
    let acks: Vec<serde_json::Value> = text(&out.stdout, &dir)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(acks.len(), 2);
    assert_eq!(acks[1]["seq"], 1);
    let err = text(&out.stderr, &dir);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error: line")).collect::<Vec<_>>(),
        vec![
            "error: line 2: details must be a JSON object, got an array; this line was not recorded",
            "error: line 3: expected a JSON object with `type`, `actor` and optional `details`: expected ident at line 1 column 2; this line was not recorded",
        ]
    );
}

#[test]
fn golden_error_for_verify_of_a_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nowhere");
    let out = run(&dir, &["verify"], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr, &dir),
        "error: no ledger directory at <DIR>; check --dir (or KLING_AUDIT_DIR), or create a \
         ledger with `kling-audit init`\n"
    );
}

#[test]
fn golden_error_for_details_that_are_not_an_object() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let out = run(
        &dir,
        &["log", "--type", "t", "--actor", "a", "--details", "[1,2]"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr, &dir),
        "error: --details is not usable\n  caused by: details must be a JSON object, got an array\n"
    );
    assert!(!dir.exists(), "a refused record must not create the ledger");
}

#[test]
fn golden_error_for_a_second_writer_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let (_held, _) =
        kling_audit_ledger::Ledger::open(kling_audit_ledger::LedgerOptions::new(&dir)).unwrap();
    let out = run(&dir, &["log", "--type", "t", "--actor", "a"], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr, &dir),
        format!(
            "error: ledger directory <DIR> is locked by another writer (pid {}); stop that process first, or use a different --dir\n",
            std::process::id()
        )
    );
}

#[test]
fn verify_exit_code_is_one_on_a_fault_and_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    for i in 0..3 {
        let d = format!("{{\"i\":{i}}}");
        assert!(run(
            &dir,
            &["log", "--type", "t", "--actor", "a", "--details", &d],
            None
        )
        .status
        .success());
    }
    let seg = segment_files(&dir).remove(0);
    let data = std::fs::read_to_string(&seg)
        .unwrap()
        .replacen("\"i\":1", "\"i\":7", 1);
    std::fs::write(&seg, data).unwrap();
    let out = run(&dir, &["verify"], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout, &dir);
    assert!(stdout.starts_with("ALTERED_RECORD"), "{stdout}");
    // Records 0, 2 and 4 were logged; 1 and 3 are the seals of each process's epoch.
    assert!(stdout.contains("line=3 seq=2"), "{stdout}");
    assert!(stdout.contains("FAULTY"), "{stdout}");
}

#[test]
fn a_closed_stdout_ends_the_command_quietly_instead_of_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    assert!(run(&dir, &["log", "--type", "t", "--actor", "a"], None)
        .status
        .success());
    let mut child = Command::new(BIN)
        .arg("--dir")
        .arg(&dir)
        .args(["verify", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_malformed_verifier_key_is_a_usage_error_not_a_ledger_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    assert!(run(&dir, &["log", "--type", "t", "--actor", "a"], None)
        .status
        .success());
    let out = run(&dir, &["verify", "--key", "garbage"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr, &dir);
    assert!(
        err.starts_with("error: the verifier key is malformed"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no fault list for a usage error");
}

#[test]
fn init_refuses_a_directory_that_already_holds_a_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    assert!(run(&dir, &["log", "--type", "t", "--actor", "a"], None)
        .status
        .success());
    let out = run(
        &dir,
        &[
            "--keys-dir",
            tmp.path().join("other.keys").to_str().unwrap(),
            "init",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr, &dir).contains("already holds a ledger"),
        "{}",
        text(&out.stderr, &dir)
    );
    assert!(!tmp.path().join("other.keys").exists());
}

#[test]
fn an_exported_checkpoint_catches_a_rollback_to_an_earlier_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let key_file = tmp.path().join("audit.keys/checkpoint.pub");
    let log = |i: usize| {
        let d = format!("{{\"i\":{i}}}");
        assert!(run(
            &dir,
            &["log", "--type", "t", "--actor", "a", "--details", &d],
            None
        )
        .status
        .success());
    };
    log(0);
    // An older copy of the whole directory, kept by an intruder.
    let copy = tmp.path().join("old");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
    }
    log(1);
    log(2);
    let trusted = tmp.path().join("trusted.note");
    assert!(run(
        &dir,
        &["checkpoint", "--out", trusted.to_str().unwrap()],
        None
    )
    .status
    .success());
    // Roll back: the old copy verifies on its own, but not against the kept checkpoint.
    for e in std::fs::read_dir(&copy).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let key = format!("@{}", key_file.display());
    // An auditor's copy of the directory, without the keys directory beside it.
    let elsewhere = tmp.path().join("no.keys");
    let alone = run(
        &dir,
        &[
            "--keys-dir",
            elsewhere.to_str().unwrap(),
            "verify",
            "--key",
            &key,
        ],
        None,
    );
    assert_eq!(
        alone.status.code(),
        Some(0),
        "{}",
        text(&alone.stdout, &dir)
    );
    let out = run(
        &dir,
        &[
            "verify",
            "--key",
            &key,
            "--trusted-checkpoint",
            trusted.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout, &dir).contains("TRUNCATED"),
        "{}",
        text(&out.stdout, &dir)
    );
}

#[test]
fn report_refuses_a_ledger_rewritten_without_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    for who in ["alice", "bob"] {
        assert!(run(
            &dir,
            &["log", "--type", "gateway.request", "--actor", who],
            None
        )
        .status
        .success());
    }
    assert_eq!(run(&dir, &["report"], None).status.code(), Some(0));
    // Rewrite alice into mallory, recompute every hash and drop the checkpoints.
    let seg = segment_files(&dir).remove(0);
    let mut prev = "0".repeat(64);
    let mut out = String::new();
    for line in std::fs::read_to_string(&seg).unwrap().lines() {
        let line = line.replace("\"alice\"", "\"mallory\"");
        let body = &line[..line.rfind(",\"hash\":\"").unwrap()];
        let body = format!(
            "{}\"prev\":\"{prev}\"{}",
            &body[..body.find("\"prev\":\"").unwrap()],
            &body[body.find("\"prev\":\"").unwrap() + 72..]
        );
        let h = hex::encode(kling_audit_merkle::leaf_hash(body.as_bytes()));
        out.push_str(&format!("{body},\"hash\":\"{h}\"}}\n"));
        prev = h;
    }
    std::fs::write(&seg, out).unwrap();
    std::fs::write(dir.join("checkpoints.jsonl"), b"").unwrap();
    let r = run(&dir, &["report"], None);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        text(&r.stderr, &dir).contains("did not verify"),
        "{}",
        text(&r.stderr, &dir)
    );
}

#[test]
fn log_stdin_skips_an_endless_line_without_holding_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let mut input = "x".repeat(3 * 1024 * 1024);
    input.push('\n');
    input.push_str("{\"type\":\"t\",\"actor\":\"a\"}\n");
    let out = run(&dir, &["log", "--stdin"], Some(&input));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr, &dir).contains("error: line 1: longer than"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "line 2 is still recorded"
    );
}

#[test]
fn a_tiny_segment_limit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let out = run(
        &dir,
        &[
            "log",
            "--type",
            "t",
            "--actor",
            "a",
            "--max-segment-bytes",
            "10",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_gateway_that_cannot_open_its_ledger_never_prints_an_address() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let (_held, _) =
        kling_audit_ledger::Ledger::open(kling_audit_ledger::LedgerOptions::new(&dir)).unwrap();
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(&dir)
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:9",
        ])
        .env("KLING_ACCESS_KEY", "ak")
        .env("KLING_SECRET_KEY", "sk")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by another writer"));
}

/// `init` with a fixed origin; returns the verifier key and the MAC root key it printed.
fn init(dir: &std::path::Path) -> (String, String) {
    let out = run(dir, &["init", "--origin", "example.test/kling-audit"], None);
    assert!(out.status.success(), "{}", text(&out.stderr, dir));
    let stdout = text(&out.stdout, dir);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    (field("verifier key:"), field("MAC root key:"))
}

/// The segment files of `dir`, in order; none when `dir` does not exist (yet).
fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    segs.sort();
    segs
}

/// Copies the files of `from` (no subdirectories) into a new directory `to`.
fn copy_flat(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn verify_finds_a_rollback_behind_what_the_keys_directory_saw_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    init(&dir);
    let older = tmp.path().join("older");
    copy_flat(&dir, &older);
    assert!(run(&dir, &["log", "--type", "t", "--actor", "a"], None)
        .status
        .success());
    // The ledger directory goes back to its older, validly signed copy; the keys stay.
    std::fs::remove_dir_all(&dir).unwrap();
    copy_flat(&older, &dir);

    // A writer refuses it and says to run `verify`, which must then not call it intact.
    let out = run(&dir, &["log", "--type", "t", "--actor", "b"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr, &dir).contains("rolled back"));
    let out = run(&dir, &["verify"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout, &dir));
    assert!(
        text(&out.stdout, &dir).starts_with(
            "TRUNCATED            seq=1  the ledger holds 1 record but its keys signed a checkpoint \
             of size 3 (the keys directory's signed-head): records are gone, or the ledger was \
             rolled back to an older copy\n"
        ),
        "{}",
        text(&out.stdout, &dir)
    );
    assert_eq!(run(&dir, &["report"], None).status.code(), Some(2));
}

#[test]
fn help_or_version_that_cannot_be_written_exits_2() {
    for args in [&["--help"][..], &["--version"], &["verify", "--help"]] {
        let out = Command::new(BIN)
            .args(args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .starts_with("error: cannot write to standard output"),
            "{args:?}: {out:?}"
        );
        let shown = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(shown.status.code(), Some(0), "{args:?}: {shown:?}");
        assert!(!shown.stdout.is_empty());
    }
}

#[test]
fn an_output_that_cannot_be_written_ends_a_command_with_exit_2_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    init(&dir);
    let full = || std::fs::File::create("/dev/full").unwrap();
    for args in [
        &["verify"][..],
        &["verify", "--format", "json"],
        &["report"],
        &["keys", "show"],
        &["checkpoint"],
    ] {
        let out = Command::new(BIN)
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .env_remove("KLING_AUDIT_LOG")
            .stdout(full())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(
            text(&out.stderr, &dir),
            "error: cannot write to standard output (No space left on device (os error 28)); \
             run the command again with an output that can be written\n",
            "{args:?}"
        );
    }
    // Nor when stderr cannot be written either: the error is lost, the exit code is not.
    for args in [
        &["log", "--type", "t", "--actor", "a"][..],
        &["verify", "--key", "x"],
    ] {
        let status = Command::new(BIN)
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdout(full())
            .stderr(full())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn a_freshly_initialised_ledger_verifies_as_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let (key, mac) = init(&dir);

    let out = run(&dir, &["verify", "--key", &key, "--mac-key", &mac], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout, &dir));
    let stdout = text(&out.stdout, &dir);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(
        lines[0],
        "INTACT: 1 record in 1 segment (seq 0..=0), 1 checkpoint up to size 1 \
         (signatures checked), MACs checked"
    );
    assert!(lines[1].starts_with("head "), "{stdout}");
    // Without the keys too: the directory alone says intact.
    let out = run(&dir, &["verify"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout, &dir));

    // Record 0 names the origin; its signed checkpoint can be kept from the start.
    let segs = segment_files(&dir);
    assert_eq!(segs.len(), 1);
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&segs[0])
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["seq"], 0);
    assert_eq!(first["type"], "ledger.init");
    assert_eq!(first["actor"], "kling-audit");
    assert_eq!(
        first["details"],
        serde_json::json!({"origin": "example.test/kling-audit"})
    );
    let out = run(&dir, &["checkpoint"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr, &dir));
    assert!(text(&out.stdout, &dir).starts_with("example.test/kling-audit\n1\n"));

    // Logging continues the chain: the new process seals epoch 0 (seq 1) first.
    let out = run(&dir, &["log", "--type", "t", "--actor", "a"], None);
    assert!(out.status.success(), "{}", text(&out.stderr, &dir));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr, &dir));
    let ack: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ack["seq"], 2);
    let out = run(&dir, &["verify", "--key", &key, "--mac-key", &mac], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout, &dir));
}

#[test]
fn an_initialised_ledger_emptied_by_an_attacker_is_faulty() {
    let tmp = tempfile::tempdir().unwrap();
    for logged in [0, 2] {
        let dir = tmp.path().join(format!("audit{logged}"));
        let (key, mac) = init(&dir);
        for _ in 0..logged {
            assert!(run(&dir, &["log", "--type", "t", "--actor", "a"], None)
                .status
                .success());
        }
        // The segments alone: the checkpoints still say how many records there were.
        let kept = tmp.path().join(format!("kept{logged}"));
        std::fs::create_dir(&kept).unwrap();
        for seg in segment_files(&dir) {
            std::fs::rename(&seg, kept.join(seg.file_name().unwrap())).unwrap();
        }
        let out = run(&dir, &["verify", "--key", &key, "--mac-key", &mac], None);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout, &dir));
        assert!(
            text(&out.stdout, &dir).starts_with("TRUNCATED"),
            "{}",
            text(&out.stdout, &dir)
        );
        // Everything: no checkpoint is left to say so, yet an empty directory is not a ledger,
        // and the keys directory knows what its keys signed.
        for e in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        let out = run(&dir, &["verify", "--key", &key, "--mac-key", &mac], None);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout, &dir));
        let signed = logged * 2 + 1;
        assert_eq!(
            text(&out.stdout, &dir),
            format!(
                "TRUNCATED            seq=0  the ledger holds 0 records but its keys signed a \
                 checkpoint of size {signed} (the keys directory's signed-head): records are gone, \
                 or the ledger was rolled back to an older copy\n"
            ) + "TRUNCATED             the directory holds no records and no signed checkpoint: a \
             ledger starts with a record (`init` writes `ledger.init`), so this one was wiped or \
             never written\n\
             FAULTY: 0 records in 0 segments (no records), 0 checkpoints up to size 0 \
             (signatures checked), MACs checked\n\
             2 faults found\n"
        );
        // Nor does the writer start a new chain in it: its keys signed the old one.
        let out = run(&dir, &["log", "--type", "t", "--actor", "a"], None);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out.stderr, &dir).contains("the ledger was truncated or rolled back"),
            "{}",
            text(&out.stderr, &dir)
        );
    }
}

#[test]
fn a_recovered_torn_tail_is_reported_once_on_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    init(&dir);
    assert!(run(&dir, &["log", "--type", "t", "--actor", "a"], None)
        .status
        .success());
    // A crash mid-write: a partial record after the last newline, then the zero-filled
    // reserve the writer keeps ahead of its records.
    let seg = segment_files(&dir).pop().unwrap();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let offset = std::fs::metadata(&seg).unwrap().len();
    let torn = br#"{"v":1,"seq":3,"ts":"2026-"#;
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(torn).unwrap();
    f.write_all(&[0u8; 4096]).unwrap();
    drop(f);

    let out = run(&dir, &["log", "--type", "t", "--actor", "a"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr, &dir));
    assert_eq!(
        text(&out.stderr, &dir),
        format!(
            "warning: cut a torn tail of {} bytes from {name} at offset {offset} into \
             quarantine/{name}.{offset}.bin (recorded as a ledger.recovery record)\n",
            torn.len()
        )
    );
    let out = run(&dir, &["verify"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout, &dir));
}

#[test]
fn init_shows_the_mac_root_key_before_it_writes_the_first_record() {
    // The MAC root key is kept nowhere: an init killed while writing the ledger's first record
    // must already have shown it, or it is lost and a second init refuses.
    for round in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let mut child = Command::new(BIN)
            .arg("--dir")
            .arg(&dir)
            .arg("init")
            .env_remove("KLING_AUDIT_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        let has_segment = || !segment_files(&dir).is_empty();
        while !has_segment() && start.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        assert!(has_segment(), "round {round}: init wrote no segment");
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("MAC root key:"),
            "round {round}: the first record's segment existed before the key was shown: {stdout:?}"
        );
    }
}

#[test]
fn sigterm_right_after_the_address_line_still_seals_the_ledger() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    assert!(run(&dir, &["init"], None).status.success());
    // The address is the cue scripts wait for; a SIGTERM sent at once must drain and seal,
    // so the handler has to be in place before the address is printed.
    for round in 0..20 {
        let mut child = Command::new(BIN)
            .arg("--dir")
            .arg(&dir)
            .args(["gateway", "--listen", "127.0.0.1:0"])
            .args(["--upstream", "http://127.0.0.1:9"])
            .env_remove("KLING_AUDIT_LOG")
            .env("KLING_ACCESS_KEY", "org-ak-sigterm")
            .env("KLING_SECRET_KEY", "org-sk-sigterm-0123456789abcdef")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(!line.trim().is_empty(), "round {round}: no address");
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: the pid is our own child's, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: the gateway died of SIGTERM instead of sealing ({status})"
        );
    }
    assert_eq!(run(&dir, &["verify"], None).status.code(), Some(0));
}

#[test]
fn log_stdin_without_a_valid_line_leaves_no_empty_ledger_behind() {
    // An empty ledger cannot be told from a wiped one, so `verify` calls it faulty; input with
    // nothing to record must therefore create nothing.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let empty = run(&dir, &["log", "--stdin"], Some(""));
    assert_eq!(empty.status.code(), Some(0), "{empty:?}");
    let bad = run(&dir, &["log", "--stdin"], Some("not json\n\n"));
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(!dir.exists(), "a ledger was created with no record in it");
    assert!(!tmp.path().join("audit.keys").exists());
    let good = run(
        &dir,
        &["log", "--stdin"],
        Some("{\"type\":\"t\",\"actor\":\"a\"}\n"),
    );
    assert_eq!(good.status.code(), Some(0), "{good:?}");
    assert_eq!(run(&dir, &["verify"], None).status.code(), Some(0));
}

#[test]
fn demo_and_the_commands_it_prints_write_nothing_outside_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(cwd)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let out = Command::new(BIN)
        .arg("demo")
        .current_dir(cwd)
        .env_remove("KLING_AUDIT_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // A demo that went well warns of nothing: an operator's warning there only puzzles.
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "the demo wrote to stderr"
    );
    let announced = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("kling-audit demo: everything runs on 127.0.0.1; the ledger goes to ")
        })
        .unwrap();
    let announced = std::path::Path::new(announced);
    assert!(announced.is_absolute(), "{announced:?}");
    let demo_dir = announced
        .parent()
        .and_then(|d| d.file_name())
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(listing(), vec![demo_dir.clone()]);
    // The follow-up commands, run as a user pastes them, from another directory: they name
    // the demo's directory in full and write nothing where they run.
    let elsewhere = tempfile::tempdir().unwrap();
    let commands: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != "Look further:")
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with('('))
        .collect();
    assert_eq!(commands.len(), 4, "{stdout}");
    for command in commands {
        let out = Command::new("sh")
            .args(["-c", command])
            .current_dir(elsewhere.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(listing(), vec![demo_dir.clone()]);
    assert!(cwd.join(&demo_dir).join("proof.json").is_file());
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn a_storage_failure_is_reported_once_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    init(&dir);
    // A limit of the segment's present size: the next record cannot be written.
    let seg = segment_files(&dir).pop().unwrap();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let limit = std::fs::metadata(&seg).unwrap().len();
    let cause = format!("write to segment {name}: File too large (os error 27)");
    let fix = "Fix the storage (free space, or raise the file size limit)";

    let out = run_limited(limit, &dir, &["log", "--type", "t", "--actor", "a"], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout, &dir), "");
    assert_eq!(
        text(&out.stderr, &dir),
        format!("error: the record was not written: {cause}. {fix}, then run the command again\n")
    );

    let lines = "{\"type\":\"t\",\"actor\":\"a\"}\n".repeat(3);
    let out = run_limited(limit, &dir, &["log", "--stdin"], Some(&lines));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout, &dir), "");
    assert_eq!(
        text(&out.stderr, &dir),
        format!(
            "error: line 1: not recorded: {cause}\n\
             error: input lines 1 to 3 were not recorded (the lines after 1 only if they were \
             valid); lines before 1 were, as their acknowledgements show. {fix}, then send lines \
             1 to 3 again\n"
        )
    );
    assert_eq!(run(&dir, &["verify"], None).status.code(), Some(0));
}

/// Each record with `"actor":"fill"` in the ledger, by its `details.i`.
fn fill_records(dir: &std::path::Path) -> Vec<u64> {
    let mut found = Vec::new();
    for seg in segment_files(dir) {
        for line in std::fs::read_to_string(seg).unwrap().lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim_matches('\0')) else {
                continue;
            };
            if v["actor"] == "fill" {
                found.push(v["details"]["i"].as_u64().unwrap());
            }
        }
    }
    found
}

#[test]
fn lines_reported_as_not_recorded_after_a_failed_write_are_not_in_the_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    init(&dir);
    // Room for a few records only: the write of the batch that reaches the limit fails part
    // way, after some of its lines are complete in the file.
    let seg = segment_files(&dir).pop().unwrap();
    let limit = std::fs::metadata(&seg).unwrap().len() + 3000;
    let line =
        |i: usize| format!("{{\"type\":\"t\",\"actor\":\"fill\",\"details\":{{\"i\":{i}}}}}\n");
    let input: String = (1..=300).map(line).collect();
    let out = run_limited(limit, &dir, &["log", "--stdin"], Some(&input));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr, &dir));
    let acked = text(&out.stdout, &dir).lines().count();
    let stderr = text(&out.stderr, &dir);
    let first_failed = acked + 1;
    assert!(
        stderr.contains(&format!("then send lines {first_failed} to 300 again")),
        "{stderr}"
    );
    // What the message says is true: exactly the acknowledged lines are in the ledger.
    assert_eq!(fill_records(&dir), (1..=acked as u64).collect::<Vec<_>>());

    // Following the advice records every line exactly once.
    let again: String = (first_failed..=300).map(line).collect();
    let out = run(&dir, &["log", "--stdin"], Some(&again));
    assert!(out.status.success(), "{}", text(&out.stderr, &dir));
    assert_eq!(fill_records(&dir), (1..=300).collect::<Vec<_>>());
    assert_eq!(run(&dir, &["verify"], None).status.code(), Some(0));
}

/// Runs `kling-audit --dir DIR ARGS` with `input` on stdin and stdout on `stdout`.
fn run_with_stdout(
    dir: &std::path::Path,
    args: &[&str],
    input: &str,
    stdout: Stdio,
) -> std::process::ExitStatus {
    let mut child = Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("KLING_AUDIT_LOG")
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(std::fs::File::create(dir.with_extension("stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The command may stop reading early; what it did not read is its to report.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    child.wait().unwrap()
}

#[test]
fn a_record_whose_acknowledgement_cannot_be_printed_is_named_as_durable_and_sealed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    init(&dir);
    let full = || Stdio::from(std::fs::File::create("/dev/full").unwrap());
    let status = run_with_stdout(&dir, &["log", "--type", "t", "--actor", "fill"], "", full());
    assert_eq!(status.code(), Some(2));
    let stderr = std::fs::read_to_string(dir.with_extension("stderr")).unwrap();
    let written = std::fs::read_to_string(segment_files(&dir).pop().unwrap()).unwrap();
    let last: serde_json::Value = serde_json::from_str(written.lines().last().unwrap()).unwrap();
    assert_eq!(last["actor"], "fill");
    assert_eq!(
        stderr,
        format!(
            "error: record seq {} (hash {}) is durable and must not be written again, but its \
             acknowledgement could not be written to standard output: No space left on device \
             (os error 28)\n",
            last["seq"],
            last["hash"].as_str().unwrap()
        )
    );
    // Closed all the same: its checkpoint is signed.
    assert_eq!(run(&dir, &["verify"], None).status.code(), Some(0));
}

#[test]
fn log_stdin_says_which_lines_are_durable_when_acknowledgements_cannot_be_printed() {
    let line =
        |i: usize| format!("{{\"type\":\"t\",\"actor\":\"fill\",\"details\":{{\"i\":{i}}}}}\n");
    let input: String = (1..=3000).map(line).collect();
    // stdout on /dev/full, then on a pipe nobody reads (which without care kills the writer
    // with SIGPIPE between a durable record and its close).
    type MakeStdout = fn() -> Stdio;
    let outputs: [(&str, MakeStdout); 2] = [
        ("No space left on device (os error 28)", || {
            Stdio::from(std::fs::File::create("/dev/full").unwrap())
        }),
        ("Broken pipe (os error 32)", || {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            Stdio::from(writer)
        }),
    ];
    for (cause, stdout) in outputs {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        init(&dir);
        let status = run_with_stdout(&dir, &["log", "--stdin"], &input, stdout());
        assert_eq!(status.code(), Some(2), "{cause}");
        let stderr = std::fs::read_to_string(dir.with_extension("stderr")).unwrap();
        let recorded = fill_records(&dir);
        let last = *recorded.last().unwrap() as usize;
        assert_eq!(recorded, (1..=last as u64).collect::<Vec<_>>());
        assert!(
            stderr.starts_with(&format!(
                "error: acknowledgements could not be written to standard output from line 1 on \
                 ({cause}); the records of lines 1 to {last} are durable nonetheless"
            )),
            "{stderr}"
        );
        assert!(
            stderr.ends_with(&format!(
                "Input after line {last} was not recorded: send it again with an output that \
                 can be written\n"
            )),
            "{stderr}"
        );
        assert_eq!(run(&dir, &["verify"], None).status.code(), Some(0));
        // Following the advice records every line exactly once.
        let again: String = (last + 1..=3000).map(line).collect();
        assert!(run(&dir, &["log", "--stdin"], Some(&again))
            .status
            .success());
        assert_eq!(fill_records(&dir), (1..=3000).collect::<Vec<_>>());
    }
}

#[test]
fn a_failed_close_still_acknowledges_the_durable_record_and_says_not_to_retry_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    // Every writer adds a signed checkpoint line to checkpoints.jsonl, while no segment grows
    // past 4096 bytes. Once the checkpoint log is larger, a file size limit of its size lets
    // records through and fails the checkpoint that closing writes.
    let checkpoint_log = dir.join("checkpoints.jsonl");
    let log_size = || std::fs::metadata(&checkpoint_log).map_or(0, |m| m.len());
    for _ in 0..100 {
        if log_size() > 4096 {
            break;
        }
        let out = run(
            &dir,
            &[
                "log",
                "--max-segment-bytes",
                "4096",
                "--type",
                "t",
                "--actor",
                "setup",
            ],
            None,
        );
        assert!(out.status.success(), "{}", text(&out.stderr, &dir));
    }
    let limit = log_size();
    assert!(limit > 4096);
    let then = |acked: &str| {
        format!(
            "error: {acked} durable and must not be written again, but closing the ledger then \
             failed: append to <DIR>/checkpoints.jsonl: File too large (os error 27), so no \
             signed checkpoint covers the newest records yet. Fix the storage (free space, or \
             raise the file size limit); the next command that writes to this ledger signs one\n"
        )
    };
    let acks = |out: &Output| -> Vec<(u64, String)> {
        text(&out.stdout, &dir)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["seq"].as_u64().unwrap(),
                    v["hash"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };

    let out = run_limited(
        limit,
        &dir,
        &[
            "log",
            "--max-segment-bytes",
            "4096",
            "--type",
            "t",
            "--actor",
            "once",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let mut acked = acks(&out);
    assert_eq!(acked.len(), 1);
    assert_eq!(
        text(&out.stderr, &dir),
        then(&format!("record seq {} is", acked[0].0))
    );

    let lines = "{\"type\":\"t\",\"actor\":\"once\"}\n".repeat(2);
    let out = run_limited(
        limit,
        &dir,
        &["log", "--max-segment-bytes", "4096", "--stdin"],
        Some(&lines),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(acks(&out).len(), 2);
    assert_eq!(
        text(&out.stderr, &dir),
        then("every record acknowledged above is")
    );
    acked.extend(acks(&out));

    // Each acknowledged record is in the ledger, once; the next writer signs it.
    assert!(run(&dir, &["log", "--type", "t", "--actor", "after"], None)
        .status
        .success());
    let mut once = Vec::new();
    for seg in segment_files(&dir) {
        for line in std::fs::read_to_string(seg).unwrap().lines() {
            let v: serde_json::Value = match serde_json::from_str(line.trim_matches('\0')) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v["actor"] == "once" {
                once.push((
                    v["seq"].as_u64().unwrap(),
                    v["hash"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    assert_eq!(once, acked);
    assert_eq!(run(&dir, &["verify"], None).status.code(), Some(0));
}

#[test]
fn init_acknowledges_its_first_record_before_a_close_that_fails() {
    let tmp = tempfile::tempdir().unwrap();
    // A checkpoint line names the origin twice (as origin and as its key's name), the first
    // record once: with a long origin, a limit between the two sizes lets the record through
    // and fails the checkpoint that closing writes. A first init measures both.
    let origin = format!("example.test/{}", "o".repeat(400));
    let probe = tmp.path().join("probe");
    assert!(run(&probe, &["init", "--origin", &origin], None)
        .status
        .success());
    let segment = std::fs::metadata(&segment_files(&probe)[0]).unwrap().len();
    let checkpoint = std::fs::metadata(probe.join("checkpoints.jsonl"))
        .unwrap()
        .len();
    assert!(segment + 100 < checkpoint, "{segment} {checkpoint}");

    let dir = tmp.path().join("audit");
    let out = run_limited(
        (segment + checkpoint) / 2,
        &dir,
        &["init", "--origin", &origin],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout, &dir);
    let ack: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(ack["seq"], 0);
    assert!(stdout.contains("MAC root key:"), "{stdout}");
    let stderr = text(&out.stderr, &dir);
    assert!(
        stderr.starts_with(
            "error: record seq 0 is durable and must not be written again, but closing the \
             ledger then failed: append to <DIR>/checkpoints.jsonl: File too large"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // The next writer cuts the torn checkpoint line and signs the record.
    assert!(run(&dir, &["log", "--type", "t", "--actor", "a"], None)
        .status
        .success());
    assert_eq!(run(&dir, &["verify"], None).status.code(), Some(0));
}

#[test]
fn init_that_cannot_show_the_mac_root_key_writes_no_record_and_says_to_start_again() {
    // stdout on /dev/full: every write fails with ENOSPC, so the MAC root key is never shown.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(&dir)
        .arg("init")
        .env_remove("KLING_AUDIT_LOG")
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let keys = format!("{}.keys", dir.display());
    assert_eq!(
        text(&out.stderr, tmp.path()),
        "error: cannot write the keys to standard output (No space left on device (os error \
         28)), so the MAC root key was not shown and is lost. No record was written: delete \
         <DIR>/audit.keys and run `kling-audit init` again with an output that can be written\n"
    );
    assert!(segment_files(&dir).is_empty(), "a record was written");
    // Following the advice works.
    std::fs::remove_dir_all(&keys).unwrap();
    let again = run(&dir, &["init"], None);
    assert_eq!(again.status.code(), Some(0), "{again:?}");
}

#[test]
fn init_that_cannot_write_its_keys_says_what_to_do_once_and_leaves_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let out = run_limited(0, &dir, &["init"], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout, tmp.path()), "");
    // The I/O error's text is in the message, and not repeated on a "caused by" line.
    assert_eq!(
        text(&out.stderr, tmp.path()),
        "error: cannot access key file <DIR>/audit.keys/checkpoint.pub: File too large (os \
         error 27). No key was shown and no record written: fix the cause (free space, \
         permissions, the file size limit), delete <DIR>/audit.keys if it exists, and run \
         `kling-audit init` again\n"
    );
    let keys = tmp.path().join("audit.keys");
    let left: Vec<_> = std::fs::read_dir(&keys)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")),
        "{left:?}"
    );
    std::fs::remove_dir_all(&keys).unwrap();
    assert_eq!(run(&dir, &["init"], None).status.code(), Some(0));
}

#[test]
fn golden_error_for_keys_in_or_inside_the_ledger_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let keys_inside = dir.join("keys");
    let cases: [(&[&str], &str, &str); 4] = [
        (&["init"], dir.to_str().unwrap(), "is"),
        (&["init"], keys_inside.to_str().unwrap(), "is inside"),
        (
            &["log", "--type", "t", "--actor", "a"],
            dir.to_str().unwrap(),
            "is",
        ),
        (
            &["log", "--type", "t", "--actor", "a"],
            keys_inside.to_str().unwrap(),
            "is inside",
        ),
    ];
    for (args, keys_dir, verb) in cases {
        let mut all = vec!["--keys-dir", keys_dir];
        all.extend_from_slice(args);
        let out = run(&dir, &all, None);
        assert_eq!(out.status.code(), Some(2), "{args:?} {keys_dir}");
        let shown_keys = keys_dir.replace(&dir.display().to_string(), "<DIR>");
        assert_eq!(
            text(&out.stderr, &dir),
            format!(
                "error: the keys directory {shown_keys} {verb} the ledger directory <DIR>: keys \
                 there would be copied and shipped with the ledger, and whoever can change the \
                 ledger could sign it anew. Nothing was written; pass a --keys-dir outside the \
                 ledger directory (by default the keys go beside it, in <DIR>.keys)\n"
            )
        );
        assert!(out.stdout.is_empty(), "no key may be shown");
        assert!(!dir.exists(), "{args:?} {keys_dir}: nothing may be created");
    }
}

#[test]
fn relative_keys_directories_inside_the_ledger_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (dir, keys_dir) in [
        ("same", "same"),
        ("in1", "in1/keys"),
        ("in2", "./x/../in2/k"),
    ] {
        let out = Command::new(BIN)
            .current_dir(tmp.path())
            .args(["--dir", dir, "--keys-dir", keys_dir, "init"])
            .env_remove("KLING_AUDIT_DIR")
            .env_remove("KLING_AUDIT_KEYS_DIR")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{dir} {keys_dir}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!("error: the keys directory {keys_dir} is")),
            "{err}"
        );
        assert!(!tmp.path().join(dir).exists());
    }
}

#[test]
fn config_check_and_the_gateway_refuse_an_actors_file_inside_the_ledger_directory() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["config", "check"][..],
        &["gateway", "--listen", "127.0.0.1:0"][..],
    ] {
        let out = Command::new(BIN)
            .current_dir(tmp.path())
            .args(args)
            .env_remove("KLING_AUDIT_DIR")
            .env_remove("KLING_AUDIT_KEYS_DIR")
            .env_remove("KLING_AUDIT_CONFIG")
            .env("KLING_ACCESS_KEY", "org-ak")
            .env("KLING_SECRET_KEY", "org-sk-0123456789")
            .env("KLING_AUDIT_AUTH_ACTORS_FILE", "audit/actors.json")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "error: gateway configuration (flags and environment)\n  caused by: \
         auth.actors_file (KLING_AUDIT_AUTH_ACTORS_FILE): audit/actors.json is inside the ledger \
         directory ./audit: the actor store holds the actors' secret keys, which would be copied \
         and shipped with the ledger. Name a file outside the ledger directory, or leave the \
         setting out to keep the store in the keys directory\n",
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?} must not start");
        assert!(!tmp.path().join("audit").exists());
    }
}

#[test]
fn log_and_the_gateway_on_a_ledger_without_its_keys_say_to_pass_them_not_to_init() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    init(&dir);
    let elsewhere = tmp.path().join("elsewhere.keys");
    let expected = format!(
        "error: ledger <DIR> already holds records, but there are no keys in {}: pass the keys \
         directory it was written with via --keys-dir (or KLING_AUDIT_KEYS_DIR). If those keys \
         are lost, the ledger can still be verified with its verifier key but not written any \
         more; start a new ledger with another --dir\n",
        elsewhere.display()
    );
    let keys = elsewhere.to_str().unwrap();
    let out = run(
        &dir,
        &["--keys-dir", keys, "log", "--type", "t", "--actor", "a"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr, &dir), expected);
    assert!(
        !elsewhere.exists(),
        "no keys may be made for a ledger with records"
    );
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(&dir)
        .args(["--keys-dir", keys, "gateway", "--listen", "127.0.0.1:0"])
        .args(["--upstream", "http://127.0.0.1:9"])
        .env("KLING_ACCESS_KEY", "ak")
        .env("KLING_SECRET_KEY", "sk")
        .env_remove("KLING_AUDIT_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "a gateway that cannot audit never starts"
    );
    assert_eq!(
        text(&out.stderr, &dir),
        expected.replace("error: ", "error: cannot open the audit ledger: ")
    );
    let out = run(&dir, &["--keys-dir", keys, "keys", "show"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr, &dir).starts_with(&format!(
            "error: no verifier key at {}, but <DIR> holds a ledger: pass the keys directory it \
             was written with via --keys-dir\n",
            elsewhere.join("checkpoint.pub").display()
        )),
        "{}",
        text(&out.stderr, &dir)
    );
}

#[test]
fn golden_error_for_a_dir_that_is_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("afile");
    std::fs::write(&file, "not a ledger\n").unwrap();
    let commands: [&[&str]; 5] = [
        &["verify"],
        &["log", "--type", "t", "--actor", "a"],
        &["checkpoint"],
        &["prove", "--seq", "0"],
        &["report"],
    ];
    for args in commands {
        let out = run(&file, args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(
            text(&out.stderr, &file),
            "error: <DIR> is a file, not a directory; check --dir (or KLING_AUDIT_DIR): it must \
             name the ledger directory\n",
            "{args:?}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a ledger\n");
}

#[test]
fn golden_error_for_a_malformed_mac_key_or_commit_key_value() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    init(&dir);
    let out = run(&dir, &["verify", "--mac-key", "zz"], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr, &dir),
        "error: the value of --mac-key is malformed: give the MAC root key as 64 hex digits, as \
         `kling-audit init` printed it, or as @FILE naming a file that holds them; found 2 \
         characters, not all of them hex digits\n"
    );
    let file = tmp.path().join("mac.hex");
    std::fs::write(&file, "abcd\n").unwrap();
    let arg = format!("@{}", file.display());
    let out = run(&dir, &["report", "--mac-key", &arg], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr, &dir).replace(&file.display().to_string(), "<FILE>"),
        "error: the MAC root key in <FILE> (from --mac-key) is malformed: it must be 64 hex \
         digits, as `kling-audit init` printed it; found 4 hex digits\n"
    );
    let out = run(
        &dir,
        &["match-prompt", "--commit-key", "12", "--prompt", "x"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr, &dir),
        "error: the value of --commit-key is malformed: give the commit key as 64 hex digits, as \
         the keys directory's commit.key holds it, or as @FILE naming a file that holds them; \
         found 2 hex digits\n"
    );
}

/// Clears the immutable attribute it set, even when the test fails, so the directory can be
/// removed.
struct Immutable(std::path::PathBuf);

impl Immutable {
    /// `chattr +i path`, or `None` where that is not possible (not root, a file system without
    /// attributes).
    fn set(path: &std::path::Path) -> Option<Immutable> {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn log_on_a_ledger_it_cannot_write_says_what_to_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    init(&dir);
    let Some(_immutable) = Immutable::set(&dir.join("LOCK")) else {
        eprintln!("skipped: cannot set the immutable attribute here");
        return;
    };
    let out = run(&dir, &["log", "--type", "t", "--actor", "a"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr, &dir);
    assert!(
        err.starts_with("error: cannot use <DIR>/LOCK of the ledger: ")
            && err.ends_with(
                ". Writing needs a ledger directory this user can write: run the command as a \
                 user that can, or check the permissions of the directory and its files, their \
                 immutable or append-only attributes (lsattr) and whether the file system is \
                 mounted read-only\n"
            ),
        "{err}"
    );
}

#[test]
fn counts_of_one_are_singular_in_command_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    init(&dir);
    // The freshly initialised ledger holds one record.
    let out = run(&dir, &["report"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr, &dir));
    let stdout = text(&out.stdout, &dir);
    assert!(stdout.starts_with("verified: 1 record, "), "{stdout}");
    let out = run(&dir, &["match-prompt", "--prompt", "never said"], None);
    assert_eq!(
        text(&out.stdout, &dir),
        "no record holds this text's commitment (1 record scanned)\n"
    );
    // A torn tail of one byte.
    let seg = segment_files(&dir).pop().unwrap();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let offset = std::fs::metadata(&seg).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(b"{").unwrap();
    drop(f);
    let out = run(&dir, &["verify"], None);
    let stdout = text(&out.stdout, &dir);
    assert!(
        stdout.contains("  1 byte without a final newline\n"),
        "{stdout}"
    );
    let out = run(&dir, &["log", "--type", "t", "--actor", "a"], None);
    assert_eq!(
        text(&out.stderr, &dir),
        format!(
            "warning: cut a torn tail of 1 byte from {name} at offset {offset} into \
             quarantine/{name}.{offset}.bin (recorded as a ledger.recovery record)\n"
        )
    );
}

/// The seqs acknowledged on `stdout`, one `{"seq":N,...}` line each.
fn acked_seqs(stdout: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with("{\"seq\":"))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[test]
fn readme_example_proves_a_seq_that_its_own_commands_acknowledged() {
    let readme = include_str!("../../../README.md");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let mut acked = Vec::new();
    let mut proved = None;
    for line in readme.lines() {
        let out = if line == "kling-audit init" {
            run(&dir, &["init"], None)
        } else if line.starts_with("kling-audit log --type ") {
            let words = shlex::split(line).unwrap();
            let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            run(&dir, &args, None)
        } else if let Some(input) = line
            .strip_prefix("printf '%s\\n' ")
            .and_then(|l| l.strip_suffix(" | kling-audit log --stdin"))
        {
            let input = shlex::split(input).unwrap().join("\n") + "\n";
            run(&dir, &["log", "--stdin"], Some(&input))
        } else {
            if let Some(rest) = line.strip_prefix("kling-audit prove --seq ") {
                proved = rest.split_whitespace().next().map(str::to_owned);
            }
            continue;
        };
        assert!(out.status.success(), "{line}: {}", text(&out.stderr, &dir));
        acked.extend(acked_seqs(&out.stdout));
    }
    // What the README's comments say these commands print.
    assert_eq!(acked, [0, 2, 4]);
    let proved = proved.expect("the README proves a record");
    assert!(
        acked.contains(&proved.parse().unwrap()),
        "the README proves seq {proved}, which none of its acknowledgements printed"
    );
}

#[test]
fn demo_refuses_dir_and_keys_dir_and_points_at_out() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["--dir", "mine", "demo"][..],
        &["demo", "--dir=mine"][..],
        &["demo", "--keys-dir", "k"][..],
    ] {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(tmp.path())
            .env_remove("KLING_AUDIT_DIR")
            .env_remove("KLING_AUDIT_KEYS_DIR")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let flag = if args.contains(&"--keys-dir") {
            "--keys-dir"
        } else {
            "--dir"
        };
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "error: demo does not take {flag}: it writes its ledger and keys into a new \
                 directory of its own, kling-audit-demo-<time> in the current directory; pass \
                 --out DIR to choose that directory instead\n"
            ),
            "{args:?}"
        );
        assert!(out.stdout.is_empty());
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "{args:?}"
        );
    }
}

#[test]
fn report_counts_both_spellings_of_success_as_one_final_status() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let finals = [
        r#"{"task_id":"t1","from":"processing","to":"succeed","final":true}"#,
        r#"{"task_id":"t2","from":"processing","to":"succeeded","final":true}"#,
        r#"{"task_id":"t3","from":"processing","to":"failed","final":true}"#,
    ];
    for details in finals {
        let out = run(
            &dir,
            &[
                "log",
                "--type",
                "task.status",
                "--actor",
                "app",
                "--details",
                details,
            ],
            None,
        );
        assert!(out.status.success(), "{}", text(&out.stderr, &dir));
    }
    let out = run(&dir, &["report"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr, &dir));
    let report = text(&out.stdout, &dir);
    let section: Vec<&str> = report
        .lines()
        .skip_while(|l| *l != "tasks by final status:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    let words: Vec<Vec<&str>> = section
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        words,
        vec![vec!["failed", "1"], vec!["succeeded", "2"]],
        "{report}"
    );
}
