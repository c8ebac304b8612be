//! What the verifier says about a fault: each mutation below is reported as the one fault it
//! is, without follow-on faults the mutation did not cause, and with the facts that explain
//! it (a crash, a deletion, the first rewritten record).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kling_audit_ledger::keys::load_signed_head;
use kling_audit_ledger::verify::{verify, FaultKind, Report, VerifyOptions};
use kling_audit_ledger::Ledger;

/// A closed ledger written by the library, with the auditor's keys.
struct Built {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    keys: PathBuf,
    verifier_key: String,
    mac_root: [u8; 32],
}

impl Built {
    /// The auditor's view: verifier key and MAC root, no keys directory.
    fn auditor(&self) -> VerifyOptions {
        VerifyOptions {
            verifier_key: Some(self.verifier_key.clone()),
            mac_root: Some(self.mac_root),
            ..Default::default()
        }
    }

    /// The operator's view: the auditor's, plus the keys directory's signed-head, as
    /// `kling-audit verify` reads it.
    fn operator(&self) -> VerifyOptions {
        VerifyOptions {
            signed_head: load_signed_head(&self.keys).unwrap(),
            ..self.auditor()
        }
    }

    fn segment(&self) -> PathBuf {
        let segs = segments(&self.dir);
        assert_eq!(segs.len(), 1, "these tests edit a one-segment ledger");
        segs.into_iter().next().unwrap()
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.segment())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn store(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(self.segment(), text).unwrap();
    }
}

fn build(records: usize) -> Built {
    let tmp = tempfile::tempdir().unwrap();
    let opts = options(tmp.path());
    let keys = opts.keys_dir.clone().unwrap();
    let (ledger, report) = Ledger::open(opts).unwrap();
    let secrets = report.created_keys.unwrap();
    for i in 0..records {
        ledger.append(entry(i)).unwrap();
    }
    ledger.close().unwrap();
    let mut mac_root = [0u8; 32];
    hex::decode_to_slice(&*secrets.mac_root_hex, &mut mac_root).unwrap();
    let built = Built {
        dir: ledger_dir(tmp.path()),
        _tmp: tmp,
        keys,
        verifier_key: secrets.verifier_key.clone(),
        mac_root,
    };
    let r = verify(&built.dir, &built.operator()).unwrap();
    assert!(r.intact, "false alarm on the clean ledger: {:#?}", r.faults);
    built
}

fn kinds(r: &Report) -> Vec<FaultKind> {
    r.faults.iter().map(|f| f.kind).collect()
}

fn check(dir: &Path, opts: &VerifyOptions) -> Report {
    let r = verify(dir, opts).unwrap();
    assert!(!r.intact);
    assert_eq!(r.faults_total, r.faults.len() as u64);
    r
}

/// The stored hash of a line recomputed from its bytes, as an attacker without keys can.
fn rehash(line: &str) -> String {
    let body = &line[..line.rfind(",\"hash\":\"").unwrap()];
    let h = kling_audit_merkle::leaf_hash(body.as_bytes());
    format!("{body},\"hash\":\"{}\"}}", hex::encode(h))
}

fn hash_of(line: &str) -> String {
    let at = line.rfind(",\"hash\":\"").unwrap() + 9;
    line[at..at + 64].to_owned()
}

fn with_prev(line: &str, prev: &str) -> String {
    let at = line.find("\"prev\":\"").unwrap() + 8;
    format!("{}{prev}{}", &line[..at], &line[at + 64..])
}

// 2. A duplicated line is one fault, and the records are counted once.

#[test]
fn a_duplicated_line_is_the_only_fault_and_its_record_is_counted_once() {
    let b = build(20);
    let mut lines = b.lines();
    lines.insert(3, lines[2].clone()); // sed -i '3p'
    b.store(&lines);
    let r = check(&b.dir, &b.operator());
    assert_eq!(kinds(&r), [FaultKind::Duplicate]);
    assert_eq!((r.faults[0].line, r.faults[0].seq), (Some(4), Some(2)));
    assert_eq!(
        (r.records, r.first_seq, r.last_seq),
        (20, Some(0), Some(19))
    );
}

#[test]
fn a_line_copied_further_down_is_one_duplicate_without_gaps() {
    let b = build(20);
    let mut lines = b.lines();
    lines.insert(12, lines[4].clone());
    b.store(&lines);
    let r = check(&b.dir, &b.operator());
    assert_eq!(kinds(&r), [FaultKind::Duplicate]);
    assert_eq!((r.faults[0].line, r.faults[0].seq), (Some(13), Some(4)));
    assert!(r.faults[0].message.contains("line 5"), "{:?}", r.faults);
    assert_eq!(r.records, 20);
}

#[test]
fn a_line_copied_further_up_is_one_duplicate_without_gaps() {
    let b = build(20);
    let mut lines = b.lines();
    lines.insert(4, lines[12].clone());
    b.store(&lines);
    let r = check(&b.dir, &b.operator());
    assert_eq!(kinds(&r), [FaultKind::Duplicate]);
    assert_eq!((r.faults[0].line, r.faults[0].seq), (Some(5), Some(12)));
    assert_eq!(r.records, 20);
}

// 3. Records that trade places are one reordering.

#[test]
fn two_swapped_adjacent_lines_are_one_reordering_not_gaps() {
    let b = build(20);
    let mut lines = b.lines();
    lines.swap(2, 3);
    b.store(&lines);
    let r = check(&b.dir, &b.operator());
    assert_eq!(kinds(&r), [FaultKind::Reordered]);
    let f = &r.faults[0];
    assert_eq!((f.line, f.seq), (Some(3), Some(3)));
    assert_eq!(
        f.message,
        "seq 3 (line 3) and seq 2 (line 4) are in swapped order"
    );
    assert_eq!(r.records, 20);
}

#[test]
fn two_swapped_lines_further_apart_are_one_reordering() {
    let b = build(20);
    let mut lines = b.lines();
    lines.swap(2, 9);
    b.store(&lines);
    let r = check(&b.dir, &b.operator());
    assert_eq!(kinds(&r), [FaultKind::Reordered]);
    assert_eq!(
        r.faults[0].message,
        "lines 3..=10 hold seqs 2..=9 out of order: seq 9 at line 3, seq 2 at line 10"
    );
}

// 4. A record rewritten with the chain rehashed after it: the first bad MAC leads.

#[test]
fn an_edit_with_the_chain_rehashed_after_it_names_the_edited_record_first() {
    let b = build(40);
    let mut lines = b.lines();
    let mut prev = hash_of(&lines[11]);
    for (i, line) in lines.iter_mut().enumerate().skip(12) {
        let mut l = with_prev(line, &prev);
        if i == 12 {
            l = l.replacen("\"actor\":\"actor-", "\"actor\":\"mallory-", 1);
            assert_ne!(&l, line);
        }
        *line = rehash(&l);
        prev = hash_of(line);
    }
    b.store(&lines);
    let r = check(&b.dir, &b.operator());
    assert_eq!(
        kinds(&r),
        [
            FaultKind::BadMac,
            FaultKind::BadMac,
            FaultKind::CheckpointMismatch
        ]
    );
    let (first, rest) = (&r.faults[0], &r.faults[1]);
    assert_eq!((first.line, first.seq), (Some(13), Some(12)));
    assert!(
        first.message.contains(
            "the first of 28 records in a row whose MAC fails: the likely point of tampering"
        ),
        "{}",
        first.message
    );
    assert_eq!((rest.line, rest.seq), (Some(14), Some(13)));
    assert!(
        rest.message
            .starts_with("and 27 later records (seq 13..=39, to line 40) fail their MAC too"),
        "{}",
        rest.message
    );
    assert!(rest.message.contains("seq 12 is where to look"));
}
