//! Shared helpers for the audited client's tests: a simulator on loopback, a real ledger in a
//! temporary directory, and a reader of the records it holds.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use kling_api::client::{ClientConfig, PollOptions, RetryPolicy};
use kling_api::SecretString;
use kling_audit_client::AuditedClient;
use kling_audit_ledger::record::parse_line;
use kling_audit_ledger::segment::list_segments;
use kling_audit_ledger::{Ledger, LedgerOptions};
use kling_sim::{KeyPair, RunningSim, SimConfig};
use serde_json::Value;
use tempfile::TempDir;

/// The key pair the simulator accepts in these tests.
pub const ACCESS_KEY: &str = "client-test-access-key-7f3a";
pub const SECRET_KEY: &str = "client-test-secret-key-9c41e0d2b8";

/// A simulator with fast lifecycles and the test key pair.
pub fn sim_config() -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.keys.push(KeyPair::new(ACCESS_KEY, SECRET_KEY));
    cfg.lifecycle.to_processing_ms = 50;
    cfg.lifecycle.to_final_ms = 150;
    cfg
}

/// A polling schedule suited to the fast lifecycle.
pub fn fast_poll() -> PollOptions {
    PollOptions {
        initial_interval: Duration::from_millis(20),
        backoff: 1.0,
        max_interval: Duration::from_millis(20),
        deadline: Duration::from_secs(30),
    }
}

pub struct Fixture {
    pub sim: RunningSim,
    pub ledger: Ledger,
    pub ledger_dir: PathBuf,
    _tmp: TempDir,
}

impl Fixture {
    pub async fn start(cfg: SimConfig) -> Self {
        let sim = kling_sim::spawn(cfg).await.unwrap();
        let tmp = TempDir::new().unwrap();
        let ledger_dir = tmp.path().join("audit");
        let mut opts = LedgerOptions::new(&ledger_dir);
        opts.keys_dir = Some(tmp.path().join("keys"));
        let (ledger, _) = Ledger::open(opts).unwrap();
        Self {
            sim,
            ledger,
            ledger_dir,
            _tmp: tmp,
        }
    }

    pub fn config(&self, secret: &str) -> ClientConfig {
        let mut cfg = ClientConfig::new(self.sim.base_url(), ACCESS_KEY, SecretString::new(secret));
        cfg.retry = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        cfg.timeout = Duration::from_secs(10);
        cfg
    }

    pub fn client(&self) -> AuditedClient {
        AuditedClient::new(self.config(SECRET_KEY), self.ledger.clone(), "test:client").unwrap()
    }

    pub fn records(&self) -> Vec<Rec> {
        read_records(&self.ledger_dir)
    }

    /// Closes the ledger and the simulator; the returned directory keeps the files alive.
    pub async fn close(self) -> TempDir {
        self.ledger.close_async().await.unwrap();
        self.sim.shutdown().await.unwrap();
        self._tmp
    }
}

/// One record as read back from the segment files.
#[derive(Debug, Clone)]
pub struct Rec {
    pub seq: u64,
    pub kind: String,
    pub actor: String,
    pub details: Value,
}

impl Rec {
    pub fn corr(&self) -> &str {
        self.details["corr"].as_str().unwrap_or_default()
    }
}

/// Every record in the ledger directory, in `seq` order.
pub fn read_records(dir: &Path) -> Vec<Rec> {
    let (segments, _) = list_segments(dir).unwrap();
    let mut out = Vec::new();
    for seg in segments {
        let bytes = kling_audit_ledger::segment::read_segment(&seg.path).unwrap();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let view = parse_line(line).unwrap();
            out.push(Rec {
                seq: view.seq,
                kind: view.kind_str(),
                actor: view.actor_str(),
                details: serde_json::from_str(view.details.get()).unwrap(),
            });
        }
    }
    out.sort_by_key(|r| r.seq);
    out
}

/// The records of one correlation id, in order.
pub fn of_corr(records: &[Rec], corr: &str) -> Vec<Rec> {
    records
        .iter()
        .filter(|r| r.corr() == corr)
        .cloned()
        .collect()
}

/// The record types of a list, in order.
pub fn kinds(records: &[Rec]) -> Vec<&str> {
    records.iter().map(|r| r.kind.as_str()).collect()
}
