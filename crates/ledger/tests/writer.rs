//! The writer: continuity, concurrency, locking, recovery and poisoning.

mod common;

use std::io::Write;

use common::*;
use kling_audit_ledger::verify::{verify, FaultKind, VerifyOptions};
use kling_audit_ledger::{Details, Entry, Ledger, OpenError};
use time::macros::datetime;

fn intact(dir: &std::path::Path) -> kling_audit_ledger::verify::Report {
    let r = verify(dir, &VerifyOptions::default()).unwrap();
    assert!(r.intact, "expected intact, got {:#?}", r.faults);
    r
}

#[test]
fn chain_continues_across_restarts_instead_of_restarting_at_genesis() {
    let tmp = tempfile::tempdir().unwrap();
    let mut next = 0;
    for round in 0..3u64 {
        let l = open(options(tmp.path()));
        for i in 0..10 {
            let r = l.append(entry(i)).unwrap();
            // Each later process first seals the epoch its predecessor left open.
            let expected = next + u64::from(round > 0 && i == 0);
            assert_eq!(r.seq, expected);
            next = r.seq + 1;
        }
        l.close().unwrap();
    }
    let r = intact(&ledger_dir(tmp.path()));
    assert_eq!(r.records, 32, "30 records and 2 epoch seals");
    let genesis = all_lines(&ledger_dir(tmp.path()))
        .iter()
        .filter(|l| l.contains(&format!("\"prev\":\"{}\"", "0".repeat(64))))
        .count();
    assert_eq!(genesis, 1, "only seq 0 may link to the genesis value");
}

#[test]
fn chain_runs_unbroken_across_utc_midnight_into_a_new_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = FakeClock::at(datetime!(2026-12-04 23:59:59.999 UTC));
    let mut opts = options(tmp.path());
    opts.clock = clock.clock();
    let l = open(opts.clone());
    l.append(entry(0)).unwrap();
    clock.set(datetime!(2026-12-05 00:00:00.000001 UTC));
    let r = l.append(entry(1)).unwrap();
    assert_eq!(r.ts, "2026-12-05T00:00:00.000001Z");
    l.close().unwrap();
    let segs = segments(&ledger_dir(tmp.path()));
    assert_eq!(segs.len(), 2);
    assert!(segs[0].to_string_lossy().ends_with("-20261204.jsonl"));
    assert!(segs[1].to_string_lossy().ends_with("-20261205.jsonl"));
    // The timestamp that is hashed is the one stored: the line carries exactly the receipt's.
    let last = std::fs::read_to_string(&segs[1]).unwrap();
    assert!(last.contains("\"ts\":\"2026-12-05T00:00:00.000001Z\""));
    intact(&ledger_dir(tmp.path()));
}

#[test]
fn segments_rotate_at_the_size_limit_and_chain_across() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(tmp.path());
    opts.max_segment_bytes = 2000;
    let l = open(opts);
    for i in 0..40 {
        l.append(entry(i)).unwrap();
    }
    l.close().unwrap();
    let segs = segments(&ledger_dir(tmp.path()));
    assert!(segs.len() >= 5, "{} segments", segs.len());
    for s in &segs {
        assert!(std::fs::metadata(s).unwrap().len() <= 2000);
    }
    assert_eq!(intact(&ledger_dir(tmp.path())).records, 40);
}

#[test]
fn sixteen_threads_append_sixteen_thousand_contiguous_records() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    let handles: Vec<_> = (0..16)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                (0..1000)
                    .map(|i| l.append(entry(t * 1000 + i)).unwrap().seq)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..16_000).collect::<Vec<u64>>());
    l.close().unwrap();
    assert_eq!(intact(&ledger_dir(tmp.path())).records, 16_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_tasks_share_syncs_and_all_get_durable_receipts() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let l = l.clone();
            tokio::spawn(async move { l.append_async(entry(i)).await.unwrap().seq })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..500).collect::<Vec<u64>>());
    l.close_async().await.unwrap();
}

#[test]
fn a_second_writer_is_refused_with_the_directory_and_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let _l = open(options(tmp.path()));
    match Ledger::open(options(tmp.path())) {
        Err(e @ OpenError::Locked { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&ledger_dir(tmp.path()).display().to_string()),
                "{text}"
            );
            assert!(
                text.contains(&format!("pid {}", std::process::id())),
                "{text}"
            );
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a second writer was let in"),
    }
}

/// Dropping the last handle without `close` used to leave the writer thread to seal the ledger
/// and release the directory lock in the background, so an open right after the drop was
/// refused as locked by this very process. The drop now waits for that.
#[test]
fn a_ledger_dropped_without_close_can_be_reopened_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..20usize {
        let l = match Ledger::open(options(tmp.path())) {
            Ok((l, _)) => l,
            Err(e) => panic!("round {round}: reopening after a drop failed: {e}"),
        };
        let other = l.clone();
        l.append(entry(round)).unwrap();
        drop(l);
        // Only the last handle waits.
        other.append(entry(round + 100)).unwrap();
        drop(other);
    }
    let l = open(options(tmp.path()));
    let head = l.close().unwrap();
    // Each round seals the epoch the previous one left open, then writes two records.
    assert_eq!(head.size, 20 * 2 + 19 + 1);
    assert_eq!(head.checkpoint_size, head.size);
    intact(&ledger_dir(tmp.path()));
}

/// Appends `tail` to the newest segment of a closed ledger and reopens it, which must cut it.
fn append_and_reopen(
    root: &std::path::Path,
    tail: &[u8],
) -> (u64, kling_audit_ledger::TornTail, std::path::PathBuf) {
    let dir = ledger_dir(root);
    let (_, before) = append_to_newest(root, tail);
    let (l, report) = Ledger::open(options(root)).unwrap();
    let torn = report.torn_tail.expect("the tail must be reported");
    l.close().unwrap();
    (before, torn, dir)
}

/// Appends `bytes` to the newest segment; returns it and its length before.
fn append_to_newest(root: &std::path::Path, bytes: &[u8]) -> (std::path::PathBuf, u64) {
    let seg = segments(&ledger_dir(root)).pop().unwrap();
    let before = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(bytes)
        .unwrap();
    (seg, before)
}

/// Five records, then the writer goes away without a close (no final checkpoint, only the
/// periodic ones), as in a crash.
fn five_records_then_crash(root: &std::path::Path) {
    let l = open(options(root));
    for i in 0..5 {
        l.append(entry(i)).unwrap();
    }
    drop(l);
    std::thread::sleep(std::time::Duration::from_millis(50));
}

/// Five records, a crash, then `tail` at the end of the newest segment.
fn crash_with_tail(
    root: &std::path::Path,
    tail: &[u8],
) -> (u64, kling_audit_ledger::TornTail, std::path::PathBuf) {
    five_records_then_crash(root);
    append_and_reopen(root, tail)
}

fn torn_tail_case(tail: &[u8]) {
    let tmp = tempfile::tempdir().unwrap();
    five_records_then_crash(tmp.path());
    let (_, before) = append_to_newest(tmp.path(), tail);
    let (l, report) = Ledger::open(options(tmp.path())).unwrap();
    let torn = report.torn_tail.expect("the tail must be reported");
    assert_eq!(torn.offset, before);
    assert_eq!(torn.len, tail.len() as u64);
    let q = std::fs::read(ledger_dir(tmp.path()).join(&torn.quarantine)).unwrap();
    assert_eq!(q, tail, "the cut bytes are kept in quarantine");
    let r = l.append(entry(99)).unwrap();
    assert_eq!(
        r.seq, 7,
        "seq 5 seals the crashed process's epoch, seq 6 records the recovery"
    );
    l.close().unwrap();
    let lines = all_lines(&ledger_dir(tmp.path()));
    assert!(lines[5].contains("\"type\":\"ledger.epoch_end\""));
    assert!(lines[6].contains("\"type\":\"ledger.recovery\""));
    assert!(lines[6].contains(&format!("\"offset\":{before}")));
    intact(&ledger_dir(tmp.path()));
}

#[test]
fn torn_partial_line_is_cut_into_quarantine_and_recorded() {
    torn_tail_case(b"{\"v\":1,\"seq\":5,\"ts\":\"2026-");
}

#[test]
fn torn_line_followed_by_zeros_is_cut_without_the_zeros() {
    let mut tail = b"{\"v\":1,\"seq\":5,\"ts\":\"2026-".to_vec();
    let cut = tail.clone();
    tail.extend_from_slice(&[0u8; 4096]);
    let tmp = tempfile::tempdir().unwrap();
    let (before, torn, dir) = crash_with_tail(tmp.path(), &tail);
    assert_eq!(torn.offset, before);
    assert_eq!(
        torn.len,
        cut.len() as u64,
        "the zeros hold nothing and are not counted"
    );
    let q = std::fs::read(dir.join(&torn.quarantine)).unwrap();
    assert_eq!(q, cut);
    intact(&dir);
}

#[test]
fn records_after_a_zero_filled_hole_are_cut_as_never_acknowledged() {
    // Power loss: a later block of an unsynced batch reached the disk, an earlier one did not.
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(tmp.path());
    five_records_then_crash(tmp.path());
    let lines = all_lines(&dir);
    let mut tail = vec![0u8; 512];
    tail.extend_from_slice(b"seq\":9}\n");
    tail.extend_from_slice(lines[2].as_bytes());
    tail.push(b'\n');
    let (before, torn, dir) = append_and_reopen(tmp.path(), &tail);
    assert_eq!(torn.offset, before);
    assert_eq!(torn.len, tail.len() as u64);
    intact(&dir);
}

#[test]
fn zero_filled_reserve_after_a_crash_is_not_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(tmp.path());
    five_records_then_crash(tmp.path());
    let (seg, before) = append_to_newest(tmp.path(), &[0u8; 8192]);
    intact(&dir);
    let (l, report) = Ledger::open(options(tmp.path())).unwrap();
    assert!(
        report.torn_tail.is_none(),
        "zeros are the writer's reserve, not damage"
    );
    let r = l.append(entry(99)).unwrap();
    assert_eq!(
        r.seq, 6,
        "seq 5 seals the crashed process's epoch; no recovery record"
    );
    l.close().unwrap();
    assert!(!dir.join("quarantine").exists());
    let data = std::fs::read(&seg).unwrap();
    assert!(data.len() as u64 > before);
    assert!(
        data.ends_with(b"\n"),
        "a closed ledger ends with its last record"
    );
    intact(&dir);
}

#[test]
fn an_open_writer_keeps_a_durable_reserve_that_readers_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(tmp.path());
    let l = open(options(tmp.path()));
    for i in 0..5 {
        l.append(entry(i)).unwrap();
    }
    let seg = segments(&dir).pop().unwrap();
    // The zeros are written by a thread of their own, after the first batch.
    let mut data = std::fs::read(&seg).unwrap();
    for _ in 0..200 {
        if data.len() > kling_audit_ledger::segment::without_reserve(&data).len() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        data = std::fs::read(&seg).unwrap();
    }
    let records = kling_audit_ledger::segment::without_reserve(&data).len();
    assert!(
        data.len() > records,
        "the segment is written ahead with zeros"
    );
    assert!(data[records..].iter().all(|b| *b == 0));
    let r = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(r.intact, "{:#?}", r.faults);
    assert_eq!(r.records, 5);
    l.close().unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), records as u64);
}

#[test]
fn zeros_at_the_end_of_an_older_segment_are_a_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(tmp.path());
    let mut o = options(tmp.path());
    o.max_segment_bytes = 4096;
    let l = open(o);
    for i in 0..40 {
        l.append(entry(i)).unwrap();
    }
    l.close().unwrap();
    let segs = segments(&dir);
    assert!(segs.len() > 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&segs[0])
        .unwrap()
        .write_all(&[0u8; 100])
        .unwrap();
    let r = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(!r.intact);
    assert!(r
        .faults
        .iter()
        .any(|f| f.segment.as_deref() == Some(&*segs[0].file_name().unwrap().to_string_lossy())));
}

#[test]
fn garbage_tail_with_newlines_is_cut() {
    torn_tail_case(b"garbage\nmore garbage\n\x01\x02");
}

#[test]
fn damage_before_the_tail_is_never_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    for i in 0..5 {
        l.append(entry(i)).unwrap();
    }
    l.close().unwrap();
    let seg = segments(&ledger_dir(tmp.path())).pop().unwrap();
    let original = std::fs::read_to_string(&seg).unwrap();
    let damaged = original.replacen("actor-1", "actor-7", 1);
    std::fs::write(&seg, &damaged).unwrap();
    match Ledger::open(options(tmp.path())) {
        Err(e @ OpenError::Damaged { .. }) => assert!(e.to_string().contains("kling-audit verify")),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a damaged ledger was opened for writing"),
    }
    assert_eq!(
        std::fs::read_to_string(&seg).unwrap(),
        damaged,
        "nothing may be changed"
    );
}

#[test]
fn a_cut_tail_covered_by_a_checkpoint_is_not_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    for i in 0..5 {
        l.append(entry(i)).unwrap();
    }
    l.close().unwrap();
    let seg = segments(&ledger_dir(tmp.path())).pop().unwrap();
    let data = std::fs::read(&seg).unwrap();
    // Tear the last signed record in half.
    std::fs::write(&seg, &data[..data.len() - 40]).unwrap();
    assert!(matches!(
        Ledger::open(options(tmp.path())),
        Err(OpenError::Damaged { .. })
    ));
}

#[test]
fn invalid_entries_are_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let e = Entry::new("t", "a", Details::parse(&big).unwrap()).unwrap();
    assert!(l.append(e).is_err());
    let r = l.append(entry(0)).unwrap();
    assert_eq!(r.seq, 0, "a refused entry takes no seq");
    l.close().unwrap();
    intact(&ledger_dir(tmp.path()));
}

#[test]
fn verify_reports_nothing_on_clean_ledgers_and_names_truncation() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    for i in 0..10 {
        l.append(entry(i)).unwrap();
    }
    l.close().unwrap();
    let dir = ledger_dir(tmp.path());
    intact(&dir);
    let seg = segments(&dir).pop().unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    let kept: Vec<&str> = text.lines().take(7).collect();
    std::fs::write(&seg, kept.join("\n") + "\n").unwrap();
    let r = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(!r.intact);
    assert!(
        r.faults.iter().any(|f| f.kind == FaultKind::Truncated),
        "{:#?}",
        r.faults
    );
}

#[test]
fn an_emptied_segment_is_not_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    for i in 0..3 {
        l.append(entry(i)).unwrap();
    }
    l.close().unwrap();
    let dir = ledger_dir(tmp.path());
    std::fs::write(segments(&dir).pop().unwrap(), b"").unwrap();
    let r = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(!r.intact);
}

#[test]
fn a_wiped_ledger_directory_is_not_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    l.append(entry(0)).unwrap();
    l.close().unwrap();
    let dir = ledger_dir(tmp.path());
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::remove_file(p).unwrap();
        }
    }
    let r = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(!r.intact);
    assert!(r.faults.iter().any(|f| f.kind == FaultKind::Truncated));
}

#[test]
fn a_segment_renamed_to_another_day_is_a_foreign_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    for i in 0..3 {
        l.append(entry(i)).unwrap();
    }
    l.close().unwrap();
    let dir = ledger_dir(tmp.path());
    let seg = segments(&dir).pop().unwrap();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let renamed = format!("{}19991231.jsonl", &name[..name.len() - 14]);
    std::fs::rename(&seg, dir.join(renamed)).unwrap();
    let r = verify(&dir, &VerifyOptions::default()).unwrap();
    let day_faults: Vec<_> = r
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::ForeignSegment)
        .collect();
    assert_eq!(day_faults.len(), 1, "{:#?}", r.faults);
}

#[test]
fn verifying_while_a_writer_runs_treats_its_unsealed_tail_as_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let mut opts = options(tmp.path());
    opts.checkpoint_interval = std::time::Duration::from_secs(3600);
    let l = open(opts);
    l.append(entry(0)).unwrap();
    l.flush().unwrap();
    l.append(entry(1)).unwrap();
    let key = std::fs::read_to_string(keys.join("checkpoint.pub")).unwrap();
    let vo = VerifyOptions {
        verifier_key: Some(key.trim().to_owned()),
        ..Default::default()
    };
    let live = verify(&ledger_dir(tmp.path()), &vo).unwrap();
    assert!(live.intact, "{:#?}", live.faults);
    assert!(live
        .warnings
        .iter()
        .any(|w| w.contains("a writer holds the ledger")));
    l.close().unwrap();
}

#[test]
fn a_key_set_cut_short_by_a_crash_is_created_again() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    // What a kill during key creation leaves: some files, but not the signer.
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("checkpoint.pub"), "half\n").unwrap();
    std::fs::write(keys.join("commit.key"), "00\n").unwrap();
    let l = open(options(tmp.path()));
    l.append(entry(0)).unwrap();
    l.close().unwrap();
    let key = std::fs::read_to_string(keys.join("checkpoint.pub")).unwrap();
    let vo = VerifyOptions {
        verifier_key: Some(key.trim().to_owned()),
        ..Default::default()
    };
    assert!(verify(&ledger_dir(tmp.path()), &vo).unwrap().intact);
}

#[test]
fn a_writer_refuses_a_ledger_rolled_back_behind_its_own_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    l.append(entry(0)).unwrap();
    l.close().unwrap();
    let dir = ledger_dir(tmp.path());
    let old = tmp.path().join("old");
    std::fs::create_dir(&old).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, old.join(p.file_name().unwrap())).unwrap();
        }
    }
    let l = open(options(tmp.path()));
    l.append(entry(1)).unwrap();
    l.close().unwrap();
    // Put the older, validly signed copy back.
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && p.file_name().unwrap() != "LOCK" {
            std::fs::remove_file(&p).unwrap();
        }
    }
    for e in std::fs::read_dir(&old).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    match Ledger::open(options(tmp.path())) {
        Err(e @ OpenError::Damaged { .. }) => assert!(e.to_string().contains("rolled back"), "{e}"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a rolled-back ledger was opened for writing"),
    }
}

fn verify_with_mac(
    dir: &std::path::Path,
    mac_root_hex: &str,
) -> kling_audit_ledger::verify::Report {
    let mut mac_root = [0u8; 32];
    hex::decode_to_slice(mac_root_hex, &mut mac_root).unwrap();
    let opts = VerifyOptions {
        mac_root: Some(mac_root),
        ..VerifyOptions::default()
    };
    verify(dir, &opts).unwrap()
}

#[test]
fn an_idle_writer_seals_its_epoch_when_the_epoch_ages() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = options(tmp.path());
    o.epoch_max_age = std::time::Duration::from_millis(300);
    let (l, report) = Ledger::open(o).unwrap();
    let secrets = report.created_keys.expect("new keys");
    l.append(entry(0)).unwrap();
    let epoch = l.head().epoch;
    let mut sealed = false;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        if l.head().epoch > epoch {
            sealed = true;
            break;
        }
    }
    assert!(
        sealed,
        "no new record arrived, yet the epoch key must move on"
    );
    assert_eq!(l.head().size, 2, "the record and its epoch's seal");
    l.close().unwrap();
    let lines = all_lines(&ledger_dir(tmp.path()));
    assert!(lines[1].contains("\"type\":\"ledger.epoch_end\""));
    let r = verify_with_mac(&ledger_dir(tmp.path()), &secrets.mac_root_hex);
    assert!(r.intact, "{:#?}", r.faults);
}

#[test]
fn a_seal_written_long_after_a_crash_is_not_an_epoch_span_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = FakeClock::at(datetime!(2026-12-04 10:00:00 UTC));
    let mut o = options(tmp.path());
    o.clock = clock.clock();
    let (l, report) = Ledger::open(o).unwrap();
    let secrets = report.created_keys.expect("new keys");
    l.append(entry(0)).unwrap();
    l.append(entry(1)).unwrap();
    drop(l);
    std::thread::sleep(std::time::Duration::from_millis(50));
    // The next writer starts ten minutes later and seals the epoch the first one left open.
    clock.set(datetime!(2026-12-04 10:10:00 UTC));
    let mut o = options(tmp.path());
    o.clock = clock.clock();
    let l = open(o);
    l.append(entry(2)).unwrap();
    l.close().unwrap();
    let r = verify_with_mac(&ledger_dir(tmp.path()), &secrets.mac_root_hex);
    assert!(r.intact, "{:#?}", r.faults);
    assert_eq!(r.records, 4);
}

#[test]
fn a_live_writer_filling_its_reserve_is_not_reported_as_a_gap() {
    // What a reader can see while a writer works: records, a stretch still read as zeros,
    // then records written after that stretch was read.
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(tmp.path());
    let l = open(options(tmp.path()));
    for i in 0..6 {
        l.append(entry(i)).unwrap();
    }
    l.close().unwrap();
    let seg = segments(&dir).pop().unwrap();
    let text = std::fs::read_to_string(&seg).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut snapshot = lines[..3].join("\n").into_bytes();
    snapshot.push(b'\n');
    snapshot.extend_from_slice(&vec![0u8; lines[3].len() + 1]);
    for l in &lines[4..] {
        snapshot.extend_from_slice(l.as_bytes());
        snapshot.push(b'\n');
    }
    snapshot.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&seg, &snapshot).unwrap();
    // A live reader never sees a signed checkpoint beyond what it can read (checkpoints cover
    // durable records only, and are read first); drop the ones this closed ledger signed.
    std::fs::write(dir.join("checkpoints.jsonl"), b"").unwrap();
    {
        let _writer = kling_audit_ledger::lock::DirLock::acquire(&dir).unwrap();
        let r = verify(&dir, &VerifyOptions::default()).unwrap();
        assert!(r.intact, "{:#?}", r.faults);
        assert_eq!(r.records, 3, "the snapshot ends at the first zero byte");
    }
    let r = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(!r.intact, "at rest, zeros between records are damage");
}

#[test]
fn verify_while_records_pour_in_finds_no_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(tmp.path());
    let l = open(options(tmp.path()));
    let writer = {
        let l = l.clone();
        std::thread::spawn(move || {
            for round in 0..40 {
                let pending: Vec<_> = (0..500)
                    .map(|i| l.submit(entry(round * 500 + i)).unwrap())
                    .collect();
                for p in pending {
                    p.wait().unwrap();
                }
            }
        })
    };
    while !writer.is_finished() {
        let r = verify(&dir, &VerifyOptions::default()).unwrap();
        assert!(r.intact, "{:#?}", r.faults);
    }
    writer.join().unwrap();
    l.close().unwrap();
    intact(&dir);
}

#[test]
fn an_append_after_close_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    l.append(entry(0)).unwrap();
    let head = l.close().unwrap();
    // An idle writer takes appends inline; a closed one must take none, by either path.
    for i in 1..4 {
        assert!(matches!(
            l.append(entry(i)),
            Err(kling_audit_ledger::AppendError::Closed)
        ));
    }
    assert_eq!(intact(&ledger_dir(tmp.path())).records, head.size);
}

#[test]
fn inline_and_queued_appends_share_one_contiguous_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    let mut seqs = Vec::new();
    // Sequential appends find the writer idle and write inline; concurrent ones queue.
    for i in 0..50 {
        seqs.push(l.append(entry(i)).unwrap().seq);
    }
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| l.append(entry(t * 1000 + i)).unwrap().seq)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        seqs.extend(h.join().unwrap());
    }
    for i in 0..50 {
        seqs.push(l.append(entry(i)).unwrap().seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let head = l.close().unwrap();
    assert_eq!(head.size, seqs.len() as u64);
    assert_eq!(intact(&ledger_dir(tmp.path())).records, head.size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_written_in_order_and_every_record_is_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    // Alone (inline), queued, and racing other appenders: each group's records keep their
    // order, and all of them are acknowledged.
    let alone = l
        .append_group_async((0..3).map(entry).collect())
        .await
        .into_iter()
        .map(|r| r.unwrap().seq)
        .collect::<Vec<_>>();
    assert_eq!(alone, vec![0, 1, 2]);
    let queued = l
        .append_group_async_queued((3..5).map(entry).collect())
        .await
        .into_iter()
        .map(|r| r.unwrap().seq)
        .collect::<Vec<_>>();
    assert_eq!(queued, vec![3, 4]);
    assert!(l.append_group_async(Vec::new()).await.is_empty());
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let l = l.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..20 {
                    let group = vec![entry(t * 1000 + i), entry(t * 1000 + i + 500)];
                    let got = if i % 2 == 0 {
                        l.append_group_async(group).await
                    } else {
                        l.append_group_async_queued(group).await
                    };
                    let got: Vec<u64> = got.into_iter().map(|r| r.unwrap().seq).collect();
                    assert_eq!(got.len(), 2);
                    assert!(got[0] < got[1], "a group's records out of order: {got:?}");
                    seqs.extend(got);
                }
                seqs
            })
        })
        .collect();
    let mut seqs: Vec<u64> = alone.into_iter().chain(queued).collect();
    for t in tasks {
        seqs.extend(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let head = l.close_async().await.unwrap();
    assert_eq!(head.size, seqs.len() as u64);
    assert_eq!(intact(&ledger_dir(tmp.path())).records, head.size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_appended_after_close_is_refused_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let l = open(options(tmp.path()));
    l.append_async(entry(0)).await.unwrap();
    l.clone().close_async().await.unwrap();
    let results = l.append_group_async((1..4).map(entry).collect()).await;
    assert_eq!(results.len(), 3);
    assert!(results
        .iter()
        .all(|r| matches!(r, Err(kling_audit_ledger::AppendError::Closed))));
    assert_eq!(intact(&ledger_dir(tmp.path())).records, 1);
}

/// Set in the child process of the test below, to the directory it works in.
const FSIZE_CHILD: &str = "KLING_AUDIT_LEDGER_TEST_FSIZE_CHILD";

/// A batch whose write fails part way may hold records made durable earlier in the same batch
/// (an epoch seal is written with a sync): those stay in the ledger, so they are acknowledged,
/// and every record refused is absent. The file size limit (`ulimit -f`) applies to a whole
/// process, so the test runs its body again in a child process of its own.
#[test]
fn after_a_failed_write_exactly_the_acknowledged_records_are_in_the_ledger() {
    if let Some(root) = std::env::var_os(FSIZE_CHILD) {
        fill_past_a_file_size_limit(std::path::Path::new(&root));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "after_a_failed_write_exactly_the_acknowledged_records_are_in_the_ledger",
            "--nocapture",
        ])
        .env(FSIZE_CHILD, tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fill_past_a_file_size_limit(root: &std::path::Path) {
    let mut o = options(root);
    // A seal every two records: every batch of several records holds one.
    o.epoch_max_records = 2;
    let ledger = open(o);
    ledger.append(entry(0)).unwrap();
    let dir = ledger_dir(root);
    let used = std::fs::metadata(&segments(&dir)[0]).unwrap().len();
    // SAFETY: only changes this process's signal disposition and its own resource limit.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: used + 20_000,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let pending: Vec<_> = (1..400).map(|i| ledger.submit(entry(i)).unwrap()).collect();
    let mut acked = vec![0];
    let mut refused = 0;
    for (i, p) in (1..).zip(pending) {
        match p.wait() {
            Ok(_) => acked.push(i),
            Err(_) => refused += 1,
        }
    }
    let _ = ledger.close();
    assert!(refused > 0, "the limit was never reached");
    let in_ledger: Vec<u64> = all_lines(&dir)
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["type"] == "task.submitted")
        .map(|r| r["details"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(in_ledger, acked);
}

#[test]
fn a_writer_refuses_keys_in_or_inside_its_ledger_directory_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ledger_dir(tmp.path());
    for (keys_dir, same) in [
        (dir.clone(), true),
        (dir.join("keys"), false),
        (tmp.path().join("elsewhere/../ledger/./keys"), false),
    ] {
        let mut o = options(tmp.path());
        o.keys_dir = Some(keys_dir.clone());
        match Ledger::open(o) {
            Err(OpenError::KeysInsideLedger { same: s, .. }) => assert_eq!(s, same, "{keys_dir:?}"),
            Err(e) => panic!("{keys_dir:?}: {e}"),
            Ok(_) => panic!("{keys_dir:?} was accepted"),
        }
        assert!(!dir.exists(), "a refused open must create nothing");
    }
    // Beside the ledger, as by default, is fine.
    let l = open(options(tmp.path()));
    l.close().unwrap();
}

#[test]
fn appends_are_acknowledged_while_a_checkpoint_is_being_stored() {
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let tmp = tempfile::tempdir().unwrap();
    let (entered_tx, entered) = mpsc::channel::<u64>();
    let (release, released) = mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let mut opts = options(tmp.path());
    opts.checkpoint_interval = Duration::from_millis(5);
    // The hook runs once a checkpoint is stored; holding it here holds the checkpoint thread,
    // as a slow checkpoint sync would.
    opts.on_checkpoint = Some(Arc::new(
        move |cp: &kling_audit_ledger::SignedCheckpoint| {
            let _ = entered_tx.send(cp.size);
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        },
    ));
    let l = open(opts);
    l.append(entry(0)).unwrap();
    let held_at = entered
        .recv_timeout(Duration::from_secs(10))
        .expect("a checkpoint is signed within the interval");
    // The checkpoint thread is stuck in the hook: appends must still be acknowledged.
    let (done_tx, done) = mpsc::channel();
    let appender = {
        let l = l.clone();
        std::thread::spawn(move || {
            for i in 1..50 {
                l.append(entry(i)).unwrap();
            }
            let _ = done_tx.send(());
        })
    };
    done.recv_timeout(Duration::from_secs(10))
        .expect("appends were held up by a checkpoint being stored");
    appender.join().unwrap();
    assert!(l.head().checkpoint_size <= held_at.max(1));
    // A flush waits for the checkpoints asked before it, and covers everything.
    for _ in 0..100 {
        let _ = release.send(());
    }
    let head = l.flush().unwrap();
    assert_eq!(head.checkpoint_size, head.size);
    l.close().unwrap();
    intact(&ledger_dir(tmp.path()));
}

#[test]
fn head_counts_every_acknowledged_record_once_appenders_are_done() {
    // Appenders that meet have their batches synced by the sync thread, which does not wake
    // the writer; the head must still show them as soon as they are acknowledged.
    let tmp = tempfile::tempdir().unwrap();
    let l = std::sync::Arc::new(open(options(tmp.path())));
    for round in 1..=5u64 {
        std::thread::scope(|s| {
            for t in 0..8 {
                let l = std::sync::Arc::clone(&l);
                s.spawn(move || {
                    for i in 0..50 {
                        l.append(entry(t * 1000 + i)).unwrap();
                    }
                });
            }
        });
        let head = l.head();
        assert_eq!(head.size, round * 400, "round {round}");
    }
}
