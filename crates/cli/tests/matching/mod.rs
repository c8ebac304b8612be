//! Running the `match-prompt` and `match-path` commands on a ledger in tests.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `kling-audit --dir DIR ARGS…`, with no keys directory or commit key from the
/// environment, and returns its output whatever its exit status.
pub fn kling_audit(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kling-audit"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("KLING_AUDIT_KEYS_DIR")
        .env_remove("KLING_AUDIT_COMMIT_KEY")
        .output()
        .unwrap()
}

/// The command's standard output as JSON; fails the test, showing both outputs, if it is not.
pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The one match of a `--format json` run for `what` that must find something: fails the test
/// unless the command exited 0 and reported exactly one match.
pub fn the_one_match(out: &Output, what: &str) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json_of(out);
    assert_eq!(doc["found"], true, "{what}: {doc}");
    let matches = doc["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1, "{what}: {doc}");
    matches[0].clone()
}
