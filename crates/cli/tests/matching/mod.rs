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
