//! `kling-audit witness` and `kling-audit log --witness` as real processes on 127.0.0.1: a
//! witnessed ledger verifies with `verify --witness-key`, and a ledger rolled back to an older
//! copy is caught twice: the witness refuses to cosign its new history, and the verifier, given
//! the cosignatures made before the rollback, reports the truncation and the fork.

use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kling-audit");
const ORIGIN: &str = "example.test/witnessed-audit";
const WITNESS_NAME: &str = "witness.example.test";

/// A `kling-audit witness` child process, killed when dropped.
struct WitnessProcess {
    child: Child,
    url: String,
}

impl WitnessProcess {
    fn start(config: &Path, stderr: Stdio) -> Self {
        let mut child = Command::new(BIN)
            .args(["witness", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first.trim();
        assert!(addr.starts_with("127.0.0.1:"), "first line: {first:?}");
        Self {
            child,
            url: format!("http://{addr}/wit/add-checkpoint"),
        }
    }

    /// Stops the process and returns what it wrote to standard error, if that was piped.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).unwrap();
        }
        err
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `init` and return the ledger's verifier key.
fn init_ledger(dir: &Path) -> String {
    let out = run(&["init", "--origin", ORIGIN], dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("verifier key:"))
        .map(|k| k.trim().to_owned())
        .expect("init prints the verifier key")
}

/// `witness keygen` into `dir/witness.key` and return the verifier key.
fn keygen(dir: &Path, name: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new(BIN)
        .args(["witness", "keygen", "--name", name, "--out"])
        .arg(dir.join("witness.key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_owned();
    assert!(key.starts_with(&format!("{name}+")), "{key}");
    key
}

fn write_config(wdir: &Path, ledger_key: &str) -> PathBuf {
    let path = wdir.join("witness.toml");
    std::fs::write(
        &path,
        format!(
            "key_file = \"witness.key\"\nstate_dir = \"state\"\nprefix = \"/wit\"\n\n\
             [[log]]\norigin = \"{ORIGIN}\"\nkeys = [\"{ledger_key}\"]\n"
        ),
    )
    .unwrap();
    path
}

fn log_witnessed(dir: &Path, witness: &str, i: usize) -> Output {
    run(
        &[
            "log",
            "--type",
            "test.event",
            "--actor",
            "tester",
            "--details",
            &format!("{{\"i\":{i}}}"),
            "--witness",
            witness,
        ],
        dir,
    )
}

fn verify_json(dir: &Path, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["verify", "--format", "json"];
    all.extend_from_slice(args);
    let out = run(&all, dir);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), report)
}

fn fault_kinds(report: &Value) -> Vec<String> {
    report["faults"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn cosignature_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("cosignatures.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn witnessed_ledger_verifies_and_a_rollback_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("audit");
    let wdir = tmp.path().join("witness");
    let ledger_key = init_ledger(&ledger);
    let witness_key = keygen(&wdir, WITNESS_NAME);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(wdir.join("witness.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let config = write_config(&wdir, &ledger_key);
    let witness = WitnessProcess::start(&config, Stdio::null());
    let spec = format!("{}={witness_key}", witness.url);

    let backup = tmp.path().join("backup");
    for i in 0..3 {
        let out = log_witnessed(&ledger, &spec, i);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(&format!("witness {WITNESS_NAME} cosigned")),
            "{}",
            text(&out.stderr)
        );
        if i == 1 {
            copy_files(&ledger, &backup);
        }
    }

    let key_args = ["--key", &ledger_key, "--witness-key", &witness_key];
    let (code, report) = verify_json(&ledger, &key_args);
    assert_eq!(code, Some(0), "{report}");
    // `init`'s record, three records, and the seals of the epochs each process found open.
    assert_eq!(report["checkpoints"]["witnessed_size"], 7);

    // A witness that never saw this ledger: `unwitnessed`.
    let stranger = keygen(&tmp.path().join("stranger"), "stranger.example.test");
    let (code, report) = verify_json(&ledger, &["--key", &ledger_key, "--witness-key", &stranger]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(fault_kinds(&report), ["unwitnessed"]);
    // Witness keys without the log's key cannot be checked: exit 2.
    let out = run(&["verify", "--witness-key", &witness_key], &ledger);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));

    // Roll the directory back to the copy made at size 5 (`init`'s, two records, two seals).
    let newer_cosignatures = std::fs::read(ledger.join("cosignatures.jsonl")).unwrap();
    std::fs::remove_dir_all(&ledger).unwrap();
    copy_files(&backup, &ledger);
    let old_cosignatures = std::fs::read(ledger.join("cosignatures.jsonl")).unwrap();

    // With the cosignatures the witness gave before the rollback: truncated.
    std::fs::write(ledger.join("cosignatures.jsonl"), &newer_cosignatures).unwrap();
    let (code, report) = verify_json(&ledger, &key_args);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        fault_kinds(&report).contains(&"truncated".to_owned()),
        "{report}"
    );
    assert_eq!(report["checkpoints"]["witnessed_size"], 7);

    // A thorough attacker rolls the cosignatures back too, and deletes the writer's memory of
    // what it signed (which `verify` and every writer would otherwise hold against the
    // rolled-back ledger); the directory alone then looks fine, which is why the witness keeps
    // its own state.
    std::fs::write(ledger.join("cosignatures.jsonl"), &old_cosignatures).unwrap();
    std::fs::remove_file(tmp.path().join("audit.keys/signed-head")).unwrap();
    let (code, report) = verify_json(&ledger, &key_args);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["checkpoints"]["witnessed_size"], 5);

    // A fresh append after the rollback: the witness has seen size 7 with another root and
    // refuses, so the new history is never cosigned.
    let before = cosignature_lines(&ledger);
    let out = log_witnessed(&ledger, &spec, 99);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(cosignature_lines(&ledger), before);
    let out = log_witnessed(&ledger, &spec, 100);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(cosignature_lines(&ledger), before);
    let state = std::fs::read_to_string(wdir.join("state/witness-state.json")).unwrap();
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["logs"][0]["size"], 7, "{state}");

    // The rewritten history against what the witness cosigned: forked.
    std::fs::write(ledger.join("cosignatures.jsonl"), &newer_cosignatures).unwrap();
    let (code, report) = verify_json(&ledger, &key_args);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        fault_kinds(&report).contains(&"forked".to_owned()),
        "{report}"
    );
    drop(witness);
}

#[test]
fn tampered_cosignatures_are_faults() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("audit");
    let wdir = tmp.path().join("witness");
    let ledger_key = init_ledger(&ledger);
    let witness_key = keygen(&wdir, WITNESS_NAME);
    let witness = WitnessProcess::start(&write_config(&wdir, &ledger_key), Stdio::null());
    let spec = format!("{}={witness_key}", witness.url);
    let out = log_witnessed(&ledger, &spec, 0);
    assert!(out.status.success(), "{}", text(&out.stderr));
    drop(witness);

    let path = ledger.join("cosignatures.jsonl");
    let original = std::fs::read_to_string(&path).unwrap();
    let mut line: Value = serde_json::from_str(original.lines().next().unwrap()).unwrap();
    let note = line["note"].as_str().unwrap().to_owned();
    let key_args = ["--key", &ledger_key, "--witness-key", &witness_key];

    // Flip one character of the cosignature: it no longer verifies under the witness key.
    let cosig_line = note.lines().last().unwrap();
    let b64_start = cosig_line.rfind(' ').unwrap() + 1;
    let mut broken = cosig_line.to_owned();
    let c = if &broken[b64_start + 20..b64_start + 21] == "A" {
        "B"
    } else {
        "A"
    };
    broken.replace_range(b64_start + 20..b64_start + 21, c);
    line["note"] = Value::from(note.replace(cosig_line, &broken));
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let (code, report) = verify_json(&ledger, &key_args);
    assert_eq!(code, Some(1), "{report}");
    let kinds = fault_kinds(&report);
    assert!(kinds.contains(&"bad_signature".to_owned()), "{report}");
    assert!(kinds.contains(&"unwitnessed".to_owned()), "{report}");

    // A line whose size field disagrees with its note.
    let mut line: Value = serde_json::from_str(original.lines().next().unwrap()).unwrap();
    line["size"] = Value::from(7);
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let (code, report) = verify_json(&ledger, &key_args);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        fault_kinds(&report).contains(&"bad_checkpoint".to_owned()),
        "{report}"
    );

    // Restored, it verifies again.
    std::fs::write(&path, &original).unwrap();
    let (code, report) = verify_json(&ledger, &key_args);
    assert_eq!(code, Some(0), "{report}");
}

#[cfg(unix)]
#[test]
fn a_witness_key_readable_by_others_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let wdir = tmp.path().join("witness");
    keygen(&wdir, WITNESS_NAME);
    let key = wdir.join("witness.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ledger_key = init_ledger(&tmp.path().join("audit"));
    let witness = WitnessProcess::start(&write_config(&wdir, &ledger_key), Stdio::piped());
    let stderr = witness.stop();
    assert!(stderr.contains("mode 0644"), "{stderr}");
    assert!(!stderr.contains("PRIVATE"), "{stderr}");
}
