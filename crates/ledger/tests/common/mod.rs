//! Helpers shared by the ledger's integration tests.
#![allow(dead_code)]

use kling_audit_ledger::segment::read_segment;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kling_audit_ledger::{Details, Entry, Ledger, LedgerOptions};
use time::OffsetDateTime;

pub fn entry(i: usize) -> Entry {
    let details = serde_json::json!({
        "i": i,
        "model": "kling-v2-master",
        "prompt_hmac": "3f1c2a7b0b6c4c399d0e6a8e1f0e9e113f1c2a7b0b6c4c399d0e6a8e1f0e9e11",
        "note": "ünïcode 🎬"
    });
    Entry::new(
        "task.submitted",
        format!("actor-{}", i % 3),
        Details::from_value(&details).unwrap(),
    )
    .unwrap()
}

pub fn options(dir: &Path) -> LedgerOptions {
    let mut o = LedgerOptions::new(dir.join("ledger"));
    o.keys_dir = Some(dir.join("keys"));
    o
}

pub fn ledger_dir(dir: &Path) -> PathBuf {
    dir.join("ledger")
}

pub fn open(opts: LedgerOptions) -> Ledger {
    Ledger::open(opts).unwrap().0
}

/// A clock that returns whatever the test sets.
#[derive(Clone)]
pub struct FakeClock(pub Arc<Mutex<OffsetDateTime>>);

impl FakeClock {
    pub fn at(t: OffsetDateTime) -> Self {
        FakeClock(Arc::new(Mutex::new(t)))
    }
    pub fn set(&self, t: OffsetDateTime) {
        *self.0.lock().unwrap() = t;
    }
    pub fn clock(&self) -> kling_audit_ledger::Clock {
        let c = self.0.clone();
        Arc::new(move || *c.lock().unwrap())
    }
}

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    v.sort();
    v
}

pub fn all_lines(dir: &Path) -> Vec<String> {
    segments(dir)
        .iter()
        .flat_map(|p| {
            String::from_utf8(read_segment(p).unwrap())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}
