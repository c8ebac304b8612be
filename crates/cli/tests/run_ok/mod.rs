//! Running the `kling-audit` binary on a ledger directory in tests, where it must succeed.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `kling-audit --dir DIR ARGS…` and returns its output; fails the test, with the
/// command's stderr, unless it succeeded.
pub fn run_ok(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kling-audit"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kling-audit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
