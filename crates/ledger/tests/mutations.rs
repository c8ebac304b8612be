//! Property test: every single mutation of a ledger is reported; clean ledgers never are.

mod common;

use std::path::Path;

use common::*;
use kling_audit_ledger::verify::{verify, VerifyOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Mutation {
    FlipByte { at: usize, bit: u8 },
    DeleteLine { at: usize },
    InsertLine { from: usize, to: usize },
    SwapLines { a: usize, b: usize },
    DuplicateLine { at: usize },
    TruncateTail { lines: usize },
    DeleteSegment { at: usize },
    RenameSegment { at: usize, shift: u64 },
    SwapSegments { a: usize, b: usize },
    EditAndRehash { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let i = any::<prop::sample::Index>().prop_map(|x| x.index(1 << 20));
    prop_oneof![
        (i.clone(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipByte { at, bit }),
        i.clone().prop_map(|at| Mutation::DeleteLine { at }),
        (i.clone(), i.clone()).prop_map(|(from, to)| Mutation::InsertLine { from, to }),
        (i.clone(), i.clone()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        i.clone().prop_map(|at| Mutation::DuplicateLine { at }),
        (1usize..5).prop_map(|lines| Mutation::TruncateTail { lines }),
        i.clone().prop_map(|at| Mutation::DeleteSegment { at }),
        (i.clone(), 1u64..5).prop_map(|(at, shift)| Mutation::RenameSegment { at, shift }),
        (i.clone(), i.clone()).prop_map(|(a, b)| Mutation::SwapSegments { a, b }),
        i.prop_map(|at| Mutation::EditAndRehash { at }),
    ]
}

/// All lines of all segments, with the segment each belongs to.
fn load(dir: &Path) -> Vec<(std::path::PathBuf, Vec<Vec<u8>>)> {
    segments(dir)
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            let lines = data
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            (p, lines)
        })
        .collect()
}

fn store(segs: &[(std::path::PathBuf, Vec<Vec<u8>>)]) {
    for (p, lines) in segs {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        std::fs::write(p, out).unwrap();
    }
}

/// Applies the mutation; returns false when it would change nothing (e.g. swapping a line with
/// itself), in which case the case is skipped.
fn apply(dir: &Path, m: &Mutation) -> bool {
    let mut segs = load(dir);
    let n_lines: usize = segs.iter().map(|s| s.1.len()).sum();
    let locate = |segs: &Vec<(std::path::PathBuf, Vec<Vec<u8>>)>, k: usize| {
        let mut k = k % n_lines;
        for (si, s) in segs.iter().enumerate() {
            if k < s.1.len() {
                return (si, k);
            }
            k -= s.1.len();
        }
        unreachable!()
    };
    match *m {
        Mutation::FlipByte { at, bit } => {
            let (si, li) = locate(&segs, at);
            let line = &mut segs[si].1[li];
            let pos = at % line.len();
            line[pos] ^= 1 << bit;
            if line[pos] == b'\n' {
                return false;
            }
        }
        Mutation::DeleteLine { at } => {
            let (si, li) = locate(&segs, at);
            segs[si].1.remove(li);
        }
        Mutation::InsertLine { from, to } => {
            let (fs, fl) = locate(&segs, from);
            let line = segs[fs].1[fl].clone();
            let (ts, tl) = locate(&segs, to);
            if (ts, tl) == (fs, fl) || (ts, tl) == (fs, fl + 1) {
                return false;
            }
            segs[ts].1.insert(tl, line);
        }
        Mutation::SwapLines { a, b } => {
            let (sa, la) = locate(&segs, a);
            let (sb, lb) = locate(&segs, b);
            if (sa, la) == (sb, lb) {
                return false;
            }
            let x = segs[sa].1[la].clone();
            segs[sa].1[la] = segs[sb].1[lb].clone();
            segs[sb].1[lb] = x;
        }
        Mutation::DuplicateLine { at } => {
            let (si, li) = locate(&segs, at);
            let line = segs[si].1[li].clone();
            segs[si].1.insert(li, line);
        }
        Mutation::TruncateTail { lines } => {
            let last = segs.last_mut().unwrap();
            let keep = last.1.len().saturating_sub(lines);
            last.1.truncate(keep);
        }
        Mutation::DeleteSegment { at } => {
            let i = at % segs.len();
            std::fs::remove_file(&segs[i].0).unwrap();
            segs.remove(i);
        }
        Mutation::RenameSegment { at, shift } => {
            let i = at % segs.len();
            let p = &segs[i].0;
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let seq: u64 = name[4..24].parse().unwrap();
            let new = format!("seg-{:020}{}", seq + shift, &name[24..]);
            std::fs::rename(p, p.with_file_name(new)).unwrap();
            return true;
        }
        Mutation::SwapSegments { a, b } => {
            let (a, b) = (a % segs.len(), b % segs.len());
            if a == b {
                return false;
            }
            let x = segs[a].1.clone();
            segs[a].1 = segs[b].1.clone();
            segs[b].1 = x;
        }
        Mutation::EditAndRehash { at } => {
            let (si, li) = locate(&segs, at);
            let line = String::from_utf8(segs[si].1[li].clone()).unwrap();
            let edited = line.replacen("\"actor\":\"actor-", "\"actor\":\"mallory-", 1);
            segs[si].1[li] = rehash(&edited).into_bytes();
        }
    }
    store(&segs);
    true
}

/// Recomputes the stored hash of an edited line, as an attacker without keys would.
fn rehash(line: &str) -> String {
    let i = line.rfind(",\"hash\":\"").unwrap();
    let body = &line[..i];
    let h = kling_audit_merkle::leaf_hash(body.as_bytes());
    format!("{body},\"hash\":\"{}\"}}", hex::encode(h))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn every_single_mutation_is_reported(records in 8usize..40, seg_bytes in 1500u64..6000, m in mutation()) {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = options(tmp.path());
        opts.max_segment_bytes = seg_bytes;
        let l = open(opts);
        for i in 0..records {
            l.append(entry(i)).unwrap();
        }
        l.close().unwrap();
        let dir = ledger_dir(tmp.path());
        let clean = verify(&dir, &VerifyOptions::default()).unwrap();
        prop_assert!(clean.intact, "false alarm on a clean ledger: {:#?}", clean.faults);
        if apply(&dir, &m) {
            let r = verify(&dir, &VerifyOptions::default()).unwrap();
            prop_assert!(!r.intact, "{m:?} went unreported");
            prop_assert!(!r.faults.is_empty());
        }
    }
}
