//! The short Python verifier of docs/format.md checks ledgers written by the Rust writer,
//! including details that a re-serializing verifier would get wrong.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kling-audit");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/verify_ledger.py");

fn python(dir: &std::path::Path, mac_root: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT).arg(dir);
    if let Some(k) = mac_root {
        cmd.arg(k);
    }
    let out = cmd
        .output()
        .expect("python3 is needed for this test (see README)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn python_verifier_accepts_rust_ledgers_and_finds_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let deep = format!(
        "{}{}",
        "{\"d\":".repeat(60),
        "\"bottom\"".to_owned() + &"}".repeat(60)
    );
    let lines = [
        r#"{"type":"t","actor":"zoë","details":{"text":"日本語 ünïcode","emoji":"🎬🦀"}}"#.to_owned(),
        r#"{"type":"t","actor":"a","details":{"big":1e21,"negzero":-0.0,"float":1.0,"huge":123456789012345678901234567890}}"#.to_owned(),
        r#"{"type":"t","actor":"a","details":{"esc":"quote \" back \\ nl \n tab \t \u00e9 \ud83c\udfac","hash":"not the field","mac":"x"}}"#.to_owned(),
        format!(r#"{{"type":"t","actor":"a","details":{deep}}}"#),
        r#"{"type":"t","actor":"a","details":{ "spaced" : [ 1 , 2 ] , "k" : { } }}"#.to_owned(),
    ];
    let mut child = Command::new(BIN)
        .arg("--dir")
        .arg(&dir)
        .args(["log", "--stdin", "--max-segment-bytes", "4096"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for _ in 0..4 {
        for l in &lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 20);
    let segs = std::fs::read_dir(&dir).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("seg-")
    });
    assert!(segs.count() > 2, "the test needs several segments");

    let root = std::fs::read_to_string(tmp.path().join("audit.keys/mac-root.key")).unwrap();
    let (code, stdout) = python(&dir, Some(root.trim()));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("intact: 20 records"), "{stdout}");

    // Numbers are kept exactly as written, so the stored bytes are what was sent.
    let all: String = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(all.contains(
        r#""big":1e21,"negzero":-0.0,"float":1.0,"huge":123456789012345678901234567890"#
    ));
    assert!(all.contains("🎬🦀"));

    // A wrong MAC root key is noticed.
    let (code, stdout) = python(&dir, Some(&"00".repeat(32)));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("bad MAC"), "{stdout}");

    // An edit is noticed.
    let seg = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .min()
        .unwrap();
    let text = std::fs::read_to_string(&seg)
        .unwrap()
        .replacen("zoë", "zoe", 1);
    std::fs::write(&seg, text).unwrap();
    let (code, stdout) = python(&dir, None);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("altered record"), "{stdout}");
}

#[test]
fn python_verifier_accepts_an_initialised_ledger_and_refuses_an_emptied_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let out = Command::new(BIN)
        .arg("--dir")
        .arg(&dir)
        .args(["init", "--origin", "example.test/kling-audit"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mac = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MAC root key:"))
        .unwrap()
        .trim();
    let (code, stdout) = python(&dir, Some(mac));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("intact: 1 record,"), "{stdout}");

    for e in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let (code, stdout) = python(&dir, Some(mac));
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(
        stdout,
        "FAULT: no records: the ledger was wiped, or never written\n"
    );
}
