//! Runs `kling-audit sim` as a child process for the CLI tests: reads the bound address from
//! the first line of its output, keeps its standard error, and stops it with SIGTERM.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct SimProcess {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl SimProcess {
    /// Starts the simulator on an ephemeral loopback port. `KLING_ACCESS_KEY` and
    /// `KLING_SECRET_KEY` are removed from its environment, then `env` is applied.
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with_args(&[], env)
    }

    /// [`SimProcess::start`] with more arguments for `sim` (`--config <file>`).
    pub fn start_with_args(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kling-audit"));
        cmd.args(["sim", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("KLING_ACCESS_KEY")
            .env_remove("KLING_SECRET_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("cannot start kling-audit sim");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut first = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut first).unwrap();
        let addr: SocketAddr = first.trim().parse().unwrap_or_else(|_| {
            panic!(
                "first line of `kling-audit sim` is not an address: {first:?}; stderr: {}",
                stderr.lock().unwrap()
            )
        });
        // Keep draining standard output so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = out.read_to_end(&mut rest);
        });
        Self {
            child,
            addr,
            stderr,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Standard error once it contains `needle` (it is read by a thread, so it may lag the
    /// address line); panics with what was read after 30 s.
    pub fn stderr_containing(&self, needle: &str) -> String {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < give_up,
                "stderr never said {needle:?}: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit (killing it after 30 s so a hung child cannot
    /// outlive the test).
    pub fn stop(self) -> ExitStatus {
        self.terminate();
        self.wait()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "could not signal the simulator");
    }

    /// Waits for the exit (killing it after 30 s so a hung child cannot outlive the test).
    pub fn wait(mut self) -> ExitStatus {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > give_up {
                let _ = self.child.kill();
                panic!("the simulator did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
