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

    /// One more writer session of `records` records; it signs its own checkpoints.
    fn append_session(&self, records: usize) {
        let ledger = open(options(self._tmp.path()));
        for i in 0..records {
            ledger.append(entry(i)).unwrap();
        }
        ledger.close().unwrap();
    }

    fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints.jsonl")
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

// 1. Checkpoints that are gone are not passed off as a crash.

#[test]
fn a_deleted_checkpoint_file_is_reported_as_deleted_not_as_a_crash() {
    let b = build(20);
    std::fs::remove_file(b.checkpoints()).unwrap();
    for opts in [b.auditor(), b.operator()] {
        let r = check(&b.dir, &opts);
        assert_eq!(kinds(&r), [FaultKind::UnsealedTail]);
        let msg = &r.faults[0].message;
        assert!(msg.contains("checkpoints.jsonl is missing"), "{msg}");
        assert!(msg.contains("No crash explains this"), "{msg}");
        assert!(!msg.contains("After a crash this is expected"), "{msg}");
    }
}

#[test]
fn an_emptied_checkpoint_file_is_not_passed_off_as_a_crash_when_the_keys_directory_signed_more() {
    let b = build(20);
    std::fs::write(b.checkpoints(), b"").unwrap();
    let r = check(&b.dir, &b.operator());
    assert_eq!(kinds(&r), [FaultKind::UnsealedTail]);
    let msg = &r.faults[0].message;
    assert!(
        msg.contains("a checkpoint of size 20 was signed") && msg.contains("No crash explains"),
        "{msg}"
    );
    // The keys directory is the operator's own record: it counts without --key too.
    let opts = VerifyOptions {
        verifier_key: None,
        ..b.operator()
    };
    assert_eq!(kinds(&check(&b.dir, &opts)), [FaultKind::UnsealedTail]);
}

#[test]
fn an_emptied_checkpoint_file_says_that_only_a_crash_of_every_writer_before_its_first_checkpoint_explains_it(
) {
    let b = build(20);
    std::fs::write(b.checkpoints(), b"").unwrap();
    let r = check(&b.dir, &b.auditor());
    assert_eq!(kinds(&r), [FaultKind::UnsealedTail]);
    let msg = &r.faults[0].message;
    assert!(msg.contains("holds no checkpoint at all"), "{msg}");
    assert!(msg.contains("only if every writer"), "{msg}");
    assert!(msg.contains("checkpoints.jsonl was emptied"), "{msg}");
    assert!(!msg.contains("After a crash this is expected"), "{msg}");
}

#[test]
fn checkpoints_cut_from_the_file_are_named_when_the_keys_directory_signed_them() {
    let b = build(20);
    b.append_session(5);
    // Keep the first session's checkpoints only.
    let text = std::fs::read_to_string(b.checkpoints()).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| l.starts_with("{\"size\":20,"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!kept.is_empty() && kept.len() < text.len());
    std::fs::write(b.checkpoints(), kept).unwrap();
    let r = check(&b.dir, &b.operator());
    assert_eq!(kinds(&r), [FaultKind::UnsealedTail]);
    let msg = &r.faults[0].message;
    assert!(
        msg.starts_with(
            "6 records after the last signed checkpoint (size 20): the keys \
             directory's signed-head shows that a checkpoint of size 26 was signed, but \
             checkpoints.jsonl holds none beyond size 20. No crash explains this"
        ),
        "{msg}"
    );
    // Without the keys directory nothing shows that more was signed: a crash could leave this.
    let r = check(&b.dir, &b.auditor());
    assert_eq!(kinds(&r), [FaultKind::UnsealedTail]);
    assert!(r.faults[0]
        .message
        .contains("After a crash this is expected"));
}

/// A crash leaves records after the last checkpoint: the copy taken while the writer still
/// runs, with its keys directory as it was then, is what the next writer would find.
#[test]
fn a_tail_a_crash_left_keeps_the_crash_explanation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(tmp.path());
    opts.checkpoint_interval = std::time::Duration::from_secs(3600);
    let keys = opts.keys_dir.clone().unwrap();
    let (ledger, report) = Ledger::open(opts).unwrap();
    let secrets = report.created_keys.unwrap();
    for i in 0..5 {
        ledger.append(entry(i)).unwrap();
    }
    ledger.flush().unwrap();
    for i in 5..9 {
        ledger.append(entry(i)).unwrap();
    }
    let crashed = tmp.path().join("crashed");
    let crashed_keys = tmp.path().join("crashed.keys");
    for (from, to) in [(ledger_dir(tmp.path()), &crashed), (keys, &crashed_keys)] {
        std::fs::create_dir(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    ledger.close().unwrap();
    let mut mac_root = [0u8; 32];
    hex::decode_to_slice(&*secrets.mac_root_hex, &mut mac_root).unwrap();
    let opts = VerifyOptions {
        verifier_key: Some(secrets.verifier_key.clone()),
        mac_root: Some(mac_root),
        signed_head: load_signed_head(&crashed_keys).unwrap(),
        ..Default::default()
    };
    let r = check(&crashed, &opts);
    assert_eq!(kinds(&r), [FaultKind::UnsealedTail]);
    let msg = &r.faults[0].message;
    assert!(
        msg.starts_with("4 records after the last signed checkpoint (size 5)"),
        "{msg}"
    );
    assert!(msg.contains("After a crash this is expected"), "{msg}");
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

// 5. Checkpoint lines: a writer appends each size once, in increasing size.

/// A ledger of three writer sessions, so that `checkpoints.jsonl` holds several lines.
fn build_with_checkpoints() -> (Built, Vec<String>) {
    let b = build(20);
    b.append_session(5);
    b.append_session(5);
    let lines = cp_lines(&b);
    assert!(lines.len() >= 3, "{lines:?}");
    (b, lines)
}

fn cp_lines(b: &Built) -> Vec<String> {
    std::fs::read_to_string(b.checkpoints())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn store_cps(b: &Built, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(b.checkpoints(), text).unwrap();
}

fn cp_size(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["size"].as_u64().unwrap()
}

/// The auditor's and the operator's view, and the view without any key.
fn every_view(b: &Built) -> [VerifyOptions; 3] {
    [b.auditor(), b.operator(), VerifyOptions::default()]
}

#[test]
fn two_swapped_checkpoint_lines_are_one_order_fault_naming_both_sizes() {
    let (b, mut lines) = build_with_checkpoints();
    let n = lines.len();
    let (small, large) = (cp_size(&lines[n - 2]), cp_size(&lines[n - 1]));
    lines.swap(n - 2, n - 1);
    store_cps(&b, &lines);
    for opts in every_view(&b) {
        let r = check(&b.dir, &opts);
        assert_eq!(kinds(&r), [FaultKind::CheckpointOrder], "{:#?}", r.faults);
        let f = &r.faults[0];
        assert_eq!(f.segment.as_deref(), Some("checkpoints.jsonl"));
        assert_eq!(f.line, Some(n as u64));
        let expected = format!(
            "line {n} has size {small}, below size {large} on line {}; expected a size above \
             {large}",
            n - 1
        );
        assert!(f.message.starts_with(&expected), "{}", f.message);
    }
}

#[test]
fn a_checkpoint_line_moved_up_is_one_order_fault() {
    let (b, mut lines) = build_with_checkpoints();
    let last = lines.pop().unwrap();
    lines.insert(0, last);
    store_cps(&b, &lines);
    let r = check(&b.dir, &b.operator());
    assert_eq!(kinds(&r), [FaultKind::CheckpointOrder], "{:#?}", r.faults);
    assert_eq!(r.faults[0].line, Some(2));
}

#[test]
fn a_copied_checkpoint_line_is_a_repeat_naming_the_original_line() {
    let (b, mut lines) = build_with_checkpoints();
    let size = cp_size(&lines[0]);
    lines.push(lines[0].clone());
    store_cps(&b, &lines);
    for opts in every_view(&b) {
        let r = check(&b.dir, &opts);
        assert_eq!(kinds(&r), [FaultKind::CheckpointOrder], "{:#?}", r.faults);
        let f = &r.faults[0];
        assert_eq!(f.line, Some(lines.len() as u64));
        let expected = format!(
            "line {} repeats the checkpoint of size {size} on line 1",
            lines.len()
        );
        assert!(f.message.starts_with(&expected), "{}", f.message);
    }
    // Right after itself (`sed -i '1p'`) too.
    lines.pop();
    lines.insert(1, lines[0].clone());
    store_cps(&b, &lines);
    let r = check(&b.dir, &b.auditor());
    assert_eq!(kinds(&r), [FaultKind::CheckpointOrder], "{:#?}", r.faults);
    assert_eq!(r.faults[0].line, Some(2));
}

/// Sizes grow by no fixed step, so nothing shows a line is missing; the records must still
/// match every checkpoint left, so the removal hides nothing (docs/format.md).
#[test]
fn a_checkpoint_line_removed_from_the_middle_is_not_a_fault() {
    let (b, mut lines) = build_with_checkpoints();
    lines.remove(lines.len() / 2);
    store_cps(&b, &lines);
    for opts in every_view(&b) {
        let r = verify(&b.dir, &opts).unwrap();
        assert!(r.intact, "{:#?}", r.faults);
    }
}

/// The signing key used twice for one size: the strongest evidence of tampering, reported
/// as a fork with both roots and both lines, and kept as evidence of equivocation.
#[test]
fn two_checkpoints_of_one_size_with_different_roots_are_a_fork_naming_both_lines() {
    let (b, mut lines) = build_with_checkpoints();
    let text = std::fs::read_to_string(b.keys.join(kling_audit_ledger::keys::SIGNER_FILE)).unwrap();
    let signer = kling_audit_ledger::sign::Signer::from_encoded(text.trim()).unwrap();
    let size = cp_size(&lines[1]);
    let note = signer.sign_checkpoint(size, &[7; 32]).unwrap();
    lines.insert(
        2,
        serde_json::json!({"size": size, "note": note}).to_string(),
    );
    store_cps(&b, &lines);
    for opts in every_view(&b) {
        let r = check(&b.dir, &opts);
        assert_eq!(kinds(&r), [FaultKind::Forked], "{:#?}", r.faults);
        let f = &r.faults[0];
        assert_eq!(f.line, Some(3));
        let m = &f.message;
        assert!(
            m.starts_with(&format!(
                "two checkpoints of size {size} have different roots: line 2"
            )),
            "{m}"
        );
        assert!(
            m.contains(&format!("line 3 signs root {}", hex::encode([7; 32]))),
            "{m}"
        );
        assert_eq!(r.equivocation.is_some(), opts.verifier_key.is_some());
    }
}

/// Line numbers count every line of the file, unreadable ones too.
#[test]
fn checkpoint_faults_name_file_lines_past_an_unreadable_line() {
    let (b, mut lines) = build_with_checkpoints();
    lines.insert(0, "not a checkpoint".into());
    lines.push(lines[1].clone());
    store_cps(&b, &lines);
    let r = check(&b.dir, &b.auditor());
    assert_eq!(
        kinds(&r),
        [FaultKind::BadCheckpoint, FaultKind::CheckpointOrder],
        "{:#?}",
        r.faults
    );
    assert_eq!(r.faults[0].line, Some(1));
    let n = lines.len();
    assert_eq!(r.faults[1].line, Some(n as u64));
    assert!(
        r.faults[1]
            .message
            .starts_with(&format!("line {n} repeats the checkpoint of size")),
        "{}",
        r.faults[1].message
    );
    assert!(r.faults[1].message.contains("on line 2"));
}
