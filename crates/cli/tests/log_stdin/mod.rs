//! A `kling-audit log --stdin` writer fed without end, for tests that kill it or stop feeding.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

/// Starts `kling-audit --dir DIR log --stdin EXTRA…`, its acknowledgements on a piped stdout,
/// and a thread writing `line(0)`, `line(1)`, … to it until its stdin closes.
pub fn spawn_log_stdin(
    dir: &Path,
    extra: &[&str],
    line: impl Fn(usize) -> String + Send + 'static,
) -> (Child, JoinHandle<()>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kling-audit"))
        .arg("--dir")
        .arg(dir)
        .args(["log", "--stdin"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0.. {
            if stdin.write_all(line(i).as_bytes()).is_err() {
                break;
            }
        }
    });
    (child, feeder)
}
