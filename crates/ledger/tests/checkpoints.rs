//! The checkpoint thread: the order in which checkpoints and the signed head are stored, what
//! flush and close promise, a checkpoint that cannot be stored, crashes while checkpoints are
//! being stored, and verification while they are.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use kling_audit_ledger::cpstore::{read_checkpoints, CHECKPOINTS_FILE};
use kling_audit_ledger::keys::{load_mac_root, load_signed_head, VERIFIER_FILE};
use kling_audit_ledger::verify::{verify, FaultKind, VerifyOptions};
use kling_audit_ledger::{AppendError, Ledger, LedgerOptions, SignedCheckpoint};
use kling_audit_merkle::Hash;

fn keys_dir(root: &Path) -> PathBuf {
    root.join("keys")
}

/// The sizes in the checkpoint log, in file order; every line must be readable.
fn logged_sizes(dir: &Path) -> Vec<u64> {
    let (cps, bad) = read_checkpoints(dir).unwrap();
    assert!(bad.is_empty(), "unreadable checkpoint lines: {bad:?}");
    cps.iter().map(|c| c.size).collect()
}

/// [`logged_sizes`] while a writer runs: the last line may still be being written (a read can
/// end inside it), and is left out, as `verify` leaves it out of a live ledger. Every whole
/// line must be readable.
fn live_logged_sizes(dir: &Path) -> Vec<u64> {
    let mut log = std::fs::read(dir.join(CHECKPOINTS_FILE)).unwrap_or_default();
    log.truncate(log.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1));
    let (cps, bad) = kling_audit_ledger::cpstore::parse_lines(&log);
    assert!(bad.is_empty(), "unreadable checkpoint lines: {bad:?}");
    cps.iter().map(|c| c.size).collect()
}

fn signed_head_size(root: &Path) -> Option<u64> {
    load_signed_head(&keys_dir(root)).unwrap().map(|(s, _)| s)
}

/// The leaf hashes of the records written so far, in order; stops at a line still being
/// written.
fn leaves(dir: &Path) -> Vec<Hash> {
    let mut out = Vec::new();
    for line in all_lines(dir) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            break;
        };
        let hash = hex::decode(v["hash"].as_str().unwrap()).unwrap();
        out.push(hash.try_into().unwrap());
    }
    out
}

/// Everything the keys directory lets the operator check: signatures, MACs, the signed head.
fn full_options(root: &Path) -> VerifyOptions {
    let keys = keys_dir(root);
    VerifyOptions {
        verifier_key: Some(
            std::fs::read_to_string(keys.join(VERIFIER_FILE))
                .unwrap()
                .trim()
                .to_owned(),
        ),
        mac_root: load_mac_root(&keys).unwrap(),
        signed_head: load_signed_head(&keys).unwrap(),
        ..VerifyOptions::default()
    }
}

fn intact_with_keys(root: &Path) {
    let r = verify(&ledger_dir(root), &full_options(root)).unwrap();
    assert!(r.intact, "expected intact, got {:#?}", r.faults);
}

fn strictly_increasing(sizes: &[u64]) -> bool {
    sizes.windows(2).all(|w| w[0] < w[1])
}

/// Every acknowledged record is on disk with the hash it was acknowledged with.
fn all_present(dir: &Path, acked: &BTreeMap<u64, Hash>) {
    let on_disk = leaves(dir);
    for (seq, hash) in acked {
        assert_eq!(
            on_disk.get(*seq as usize),
            Some(hash),
            "acknowledged record {seq} is missing or changed"
        );
    }
}

/// Checkpoints asked for often (every millisecond and at each of many small segments) while
/// several threads append and one flushes: each checkpoint is logged in increasing size, is in
/// the log and the signed head by the time the hook hears of it, covers records that are in
/// the segments with the root they have, and the signed head, read before the log, is never
/// beyond the log's newest checkpoint.
#[test]
fn checkpoints_are_logged_in_increasing_size_and_the_signed_head_never_runs_ahead() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let dir = ledger_dir(&root);
    let problems = Arc::new(Mutex::new(Vec::<String>::new()));
    let heard = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut o = options(&root);
    o.checkpoint_interval = Duration::from_millis(1);
    o.max_segment_bytes = 8 << 10;
    o.on_checkpoint = Some(Arc::new({
        let (problems, heard, dir, root) =
            (problems.clone(), heard.clone(), dir.clone(), root.clone());
        move |cp: &SignedCheckpoint| {
            let mut p = problems.lock().unwrap();
            let logged = logged_sizes(&dir);
            if logged.last() != Some(&cp.size) {
                p.push(format!(
                    "hook for {} but the log ends at {:?}",
                    cp.size,
                    logged.last()
                ));
            }
            if signed_head_size(&root) != Some(cp.size) {
                p.push(format!(
                    "hook for {} but the signed head is {:?}",
                    cp.size,
                    signed_head_size(&root)
                ));
            }
            let leaves = leaves(&dir);
            let n = cp.size as usize;
            if leaves.len() < n {
                p.push(format!(
                    "checkpoint {} covers records not written ({})",
                    cp.size,
                    leaves.len()
                ));
            } else if kling_audit_merkle::root(&leaves[..n]) != cp.root {
                p.push(format!(
                    "checkpoint {} has a root the records do not have",
                    cp.size
                ));
            }
            heard.lock().unwrap().push(cp.size);
        }
    }));
    let l = open(o);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (l, stop, problems, dir, root) = (
            l.clone(),
            stop.clone(),
            problems.clone(),
            dir.clone(),
            root.clone(),
        );
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let head = l.head();
                let signed = signed_head_size(&root).unwrap_or(0);
                // Read after the head and the signed head: it holds every checkpoint they name.
                let logged = live_logged_sizes(&dir);
                let newest = logged.last().copied().unwrap_or(0);
                let mut p = problems.lock().unwrap();
                if !strictly_increasing(&logged) {
                    p.push(format!("checkpoint sizes out of order: {logged:?}"));
                }
                if signed > newest {
                    p.push(format!(
                        "signed head {signed} ahead of the log's newest {newest}"
                    ));
                }
                if head.checkpoint_size > newest || head.checkpoint_size > head.size {
                    p.push(format!("head {head:?} ahead of the log's newest {newest}"));
                }
                rounds += 1;
            }
            rounds
        })
    };
    let appenders: Vec<_> = (0..4)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    l.append(entry(t * 1000 + i)).unwrap();
                }
            })
        })
        .collect();
    let flusher = {
        let l = l.clone();
        std::thread::spawn(move || {
            for _ in 0..30 {
                let h = l.flush().unwrap();
                assert_eq!(
                    h.checkpoint_size, h.size,
                    "a flush left records unsigned: {h:?}"
                );
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    for a in appenders {
        a.join().unwrap();
    }
    flusher.join().unwrap();
    let head = l.close().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(watcher.join().unwrap() > 0);
    let problems = problems.lock().unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let logged = logged_sizes(&dir);
    assert!(strictly_increasing(&logged), "{logged:?}");
    assert!(
        logged.len() > 10,
        "too few checkpoints to prove anything: {logged:?}"
    );
    assert_eq!(logged.last(), Some(&head.size));
    assert_eq!(
        *heard.lock().unwrap(),
        logged,
        "the hook hears of every checkpoint, in order"
    );
    assert_eq!(
        load_signed_head(&keys_dir(&root)).unwrap(),
        Some((head.size, head.root))
    );
    intact_with_keys(&root);
}

/// A slow checkpoint store (the hook holds the thread, as slow syncs would): after `flush` and
/// `close` return, every record is covered by a checkpoint in the log and by the signed head,
/// and the ledger reopens at once after `close`, sync or async.
#[test]
fn after_flush_or_close_every_record_is_checkpointed_and_the_ledger_reopens_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let dir = ledger_dir(&root);
    let mut o = options(&root);
    o.checkpoint_interval = Duration::from_millis(2);
    o.on_checkpoint = Some(Arc::new(|_: &SignedCheckpoint| {
        std::thread::sleep(Duration::from_millis(5));
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..12usize {
        // Must not be refused as locked: the previous round's close has returned.
        let l = open(o.clone());
        for i in 0..10 {
            l.append(entry(round * 100 + i)).unwrap();
        }
        let pending: Vec<_> = (10..40)
            .map(|i| l.submit(entry(round * 100 + i)).unwrap())
            .collect();
        for p in pending {
            p.wait().unwrap();
        }
        let flushed = l.flush().unwrap();
        assert_eq!(flushed.checkpoint_size, flushed.size);
        let head = l.head();
        assert_eq!(
            (head.size, head.checkpoint_size),
            (flushed.size, flushed.size)
        );
        assert_eq!(logged_sizes(&dir).last(), Some(&flushed.size));
        assert_eq!(signed_head_size(&root), Some(flushed.size));
        // Queued right before the close: they are written and covered by its checkpoint.
        let pending: Vec<_> = (40..60)
            .map(|i| l.submit(entry(round * 100 + i)).unwrap())
            .collect();
        let closed = if round % 2 == 0 {
            l.close().unwrap()
        } else {
            rt.block_on(l.close_async()).unwrap()
        };
        for p in pending {
            p.wait().unwrap();
        }
        assert_eq!(closed.checkpoint_size, closed.size);
        assert_eq!(l.head().checkpoint_size, closed.size);
        assert_eq!(logged_sizes(&dir).last(), Some(&closed.size));
        assert_eq!(
            load_signed_head(&keys_dir(&root)).unwrap(),
            Some((closed.size, closed.root))
        );
    }
    assert!(strictly_increasing(&logged_sizes(&dir)));
    intact_with_keys(&root);
}

/// Appends until one is refused; returns the receipts acknowledged and the refusal's cause.
fn append_until_refused(l: &Ledger, acked: &mut BTreeMap<u64, Hash>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        assert!(Instant::now() < deadline, "no append was refused");
        match l.append(entry(i)) {
            Ok(r) => {
                acked.insert(r.seq, r.hash);
            }
            Err(AppendError::Poisoned { cause }) => return cause,
            Err(e) => panic!("unexpected refusal: {e}"),
        }
        i += 1;
    }
}

/// Once the writer refused an append, it refuses every later one, flush and close too, and
/// says why in its head.
fn stays_poisoned(l: &Ledger, cause: &str) {
    for i in 0..5 {
        assert!(
            matches!(l.append(entry(i)), Err(AppendError::Poisoned { .. })),
            "an append was acknowledged after the writer stopped"
        );
    }
    assert_eq!(l.head().poisoned.as_deref(), Some(cause));
    assert!(l.flush().is_err());
    assert!(l.close().is_err());
}

/// The keys directory refuses the signed head (its temporary file's name is taken by a
/// directory): the writer stops acknowledging, says why, releases the directory at close, and
/// the next writer finds every acknowledged record and verifies intact.
#[test]
fn a_signed_head_that_cannot_be_stored_stops_acknowledgements_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let dir = ledger_dir(&root);
    let mut o = options(&root);
    o.checkpoint_interval = Duration::from_millis(1);
    let l = open(o.clone());
    let mut acked = BTreeMap::new();
    for i in 0..5 {
        let r = l.append(entry(i)).unwrap();
        acked.insert(r.seq, r.hash);
    }
    l.flush().unwrap();
    let blocker = keys_dir(&root).join("signed-head.tmp");
    std::fs::create_dir(&blocker).unwrap();
    let cause = append_until_refused(&l, &mut acked);
    assert!(cause.contains("signed head"), "{cause}");
    stays_poisoned(&l, &cause);
    std::fs::remove_dir(&blocker).unwrap();
    let l = open(o);
    let head = l.close().unwrap();
    assert_eq!(head.checkpoint_size, head.size);
    all_present(&dir, &acked);
    intact_with_keys(&root);
}

/// Set in the child process of the test below, to the directory it works in.
const CPLOG_FSIZE_CHILD: &str = "KLING_AUDIT_LEDGER_TEST_CPLOG_FSIZE_CHILD";

/// The checkpoint log cannot grow (the process's file size limit, a real `EFBIG`, reached by
/// the checkpoint log while every segment stays below it): the writer stops acknowledging and
/// says why; everything acknowledged is in the ledger. The limit applies to the whole process,
/// so the writer runs in a child process.
#[test]
fn a_checkpoint_log_that_cannot_grow_stops_acknowledgements_and_loses_nothing() {
    if let Some(root) = std::env::var_os(CPLOG_FSIZE_CHILD) {
        fill_the_checkpoint_log_past_a_limit(Path::new(&root));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_checkpoint_log_that_cannot_grow_stops_acknowledgements_and_loses_nothing",
            "--nocapture",
        ])
        .env(CPLOG_FSIZE_CHILD, &root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acked: BTreeMap<u64, Hash> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ack "))
        .map(|l| {
            let (seq, hash) = l.split_once(' ').unwrap();
            (
                seq.parse().unwrap(),
                hex::decode(hash).unwrap().try_into().unwrap(),
            )
        })
        .collect();
    assert!(!acked.is_empty());
    let dir = ledger_dir(&root);
    // As the failed writer left it: its acknowledged records are there, and the log holds
    // whole checkpoint lines only.
    all_present(&dir, &acked);
    let raw = std::fs::read(dir.join(CHECKPOINTS_FILE)).unwrap();
    assert!(
        raw.ends_with(b"\n"),
        "a failed append left a partial checkpoint line"
    );
    let r = verify(&dir, &full_options(&root)).unwrap();
    assert!(
        r.faults.iter().all(|f| f.kind == FaultKind::UnsealedTail),
        "{:#?}",
        r.faults
    );
    let l = open(options(&root));
    l.close().unwrap();
    all_present(&dir, &acked);
    intact_with_keys(&root);
}

fn fill_the_checkpoint_log_past_a_limit(root: &Path) {
    let mut o = options(root);
    o.checkpoint_interval = Duration::from_millis(1);
    // Every segment change brings a checkpoint; every segment stays far below the limit.
    o.max_segment_bytes = 4096;
    let l = open(o);
    l.append(entry(0)).unwrap();
    l.flush().unwrap();
    let limit = 12_000;
    // SAFETY: only changes this process's signal disposition and its own resource limit.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let mut acked = BTreeMap::new();
    let cause = append_until_refused(&l, &mut acked);
    let mut out = std::io::stdout().lock();
    for (seq, hash) in &acked {
        writeln!(out, "ack {seq} {}", hex::encode(hash)).unwrap();
    }
    drop(out);
    assert!(cause.contains(CHECKPOINTS_FILE), "{cause}");
    stays_poisoned(&l, &cause);
    assert!(
        std::fs::metadata(ledger_dir(root).join(CHECKPOINTS_FILE))
            .unwrap()
            .len()
            <= limit
    );
}

/// Set in the child process of the test below, to the directory it works in.
const CRASH_CHILD: &str = "KLING_AUDIT_LEDGER_TEST_CHECKPOINT_CRASH_CHILD";

/// A writer storing checkpoints all the time (every millisecond, at every small segment) is
/// killed with SIGKILL at random moments. Each time, before any writer reopens it: the log's
/// checkpoints are in increasing size and the signed head is not beyond them, and the
/// verifier finds nothing but what a crash leaves (a torn last checkpoint line, which the next
/// writer cuts). At the end every acknowledged record is there and the ledger is intact.
#[test]
fn sigkill_while_checkpoints_are_stored_leaves_only_what_recovery_allows() {
    if let Some(root) = std::env::var_os(CRASH_CHILD) {
        append_forever(Path::new(&root));
        return;
    }
    use rand::{Rng, SeedableRng};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let dir = ledger_dir(&root);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x636b7074);
    let mut acked: BTreeMap<u64, Hash> = BTreeMap::new();
    for round in 0..30 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_while_checkpoints_are_stored_leaves_only_what_recovery_allows",
                "--nocapture",
            ])
            .env(CRASH_CHILD, &root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(ack) = line.strip_prefix("ack ") else {
                    continue;
                };
                let (seq, hash) = ack.split_once(' ').unwrap();
                let hash: Hash = hex::decode(hash).unwrap().try_into().unwrap();
                got.push((seq.parse::<u64>().unwrap(), hash));
                if got.len() == 1 {
                    let _ = first_tx.send(());
                }
            }
            got
        });
        let _ = first_rx.recv_timeout(Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..60)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        acked.extend(reader.join().unwrap());

        let raw = std::fs::read(dir.join(CHECKPOINTS_FILE)).unwrap();
        let torn = !raw.is_empty() && !raw.ends_with(b"\n");
        let (cps, bad) = read_checkpoints(&dir).unwrap();
        let sizes: Vec<u64> = cps.iter().map(|c| c.size).collect();
        assert!(strictly_increasing(&sizes), "round {round}: {sizes:?}");
        assert!(bad.len() <= usize::from(torn), "round {round}: {bad:?}");
        let signed = signed_head_size(&root).unwrap_or(0);
        assert!(
            signed <= sizes.last().copied().unwrap_or(0),
            "round {round}: signed head {signed} beyond the log {sizes:?}"
        );
        let r = verify(&dir, &full_options(&root)).unwrap();
        for f in &r.faults {
            // The unsealed tails a crash explains (docs/format.md), never one it cannot.
            let crash = f.message.contains("After a crash this is expected")
                || f.message.contains("A crash explains this only if");
            let allowed = f.kind == FaultKind::UnsealedTail && crash
                || f.kind == FaultKind::BadCheckpoint && torn;
            assert!(allowed, "round {round}: {f:#?}");
        }
    }
    assert!(acked.len() > 100, "only {} acknowledged", acked.len());
    let (l, _) = Ledger::open(options(&root)).unwrap();
    l.close().unwrap();
    all_present(&dir, &acked);
    intact_with_keys(&root);
}

fn append_forever(root: &Path) {
    let mut o: LedgerOptions = options(root);
    o.checkpoint_interval = Duration::from_millis(1);
    o.max_segment_bytes = 4096;
    let l = open(o);
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (l, out) = (l.clone(), out.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    let r = l.append(entry(t * 1_000_000 + i)).unwrap();
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ack {} {}", r.seq, hex::encode(r.hash)).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Verifying, with every key and the signed head, over and over while records pour in and
/// checkpoints are stored every millisecond and at every small segment: no fault, ever.
#[test]
fn verify_with_every_key_while_checkpoints_pour_in_finds_no_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let dir = ledger_dir(&root);
    let mut o = options(&root);
    o.checkpoint_interval = Duration::from_millis(1);
    o.max_segment_bytes = 8 << 10;
    let l = open(o);
    l.append(entry(0)).unwrap();
    l.flush().unwrap();
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                for i in 0..1500 {
                    l.append(entry(t * 10_000 + i)).unwrap();
                }
            })
        })
        .collect();
    let mut runs = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        let r = verify(&dir, &full_options(&root)).unwrap();
        assert!(r.intact, "run {runs}: {:#?}", r.faults);
        runs += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    assert!(runs > 3, "only {runs} verifications ran");
    l.close().unwrap();
    intact_with_keys(&root);
}

/// A reader can find a live writer's checkpoint line half written (a write is not atomic to a
/// reader once it crosses a page: seen about once in 30,000 reads of a log that grew every
/// millisecond). While a writer holds the ledger that half line is not a fault; at rest it
/// still is, as what a crash leaves until the next writer cuts it.
#[test]
fn a_checkpoint_line_half_written_by_a_live_writer_is_not_a_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let dir = ledger_dir(&root);
    let mut o = options(&root);
    // Only the close stores a checkpoint, however slowly the appends go on a busy machine.
    o.checkpoint_interval = Duration::from_secs(3600);
    let l = open(o);
    for i in 0..3 {
        l.append(entry(i)).unwrap();
    }
    l.close().unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(CHECKPOINTS_FILE))
        .unwrap();
    log.write_all(b"{\"size\":4,\"note\":\"kling-audit/")
        .unwrap();
    {
        let _writer = kling_audit_ledger::lock::DirLock::acquire(&dir).unwrap();
        let r = verify(&dir, &full_options(&root)).unwrap();
        assert!(r.intact, "{:#?}", r.faults);
        assert_eq!(r.checkpoints.count, 1);
    }
    let r = verify(&dir, &full_options(&root)).unwrap();
    let kinds: Vec<_> = r.faults.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FaultKind::BadCheckpoint]);
}

/// A directory listing is no snapshot: while it runs, a live writer may create segments, and
/// on ext4 (which lists in hash order) it can return a segment without the ones created just
/// before it, which read as missing records. Verified over and over while a writer makes
/// segments of a few records each, in a directory of thousands, the ledger is always intact.
#[test]
fn verify_while_segments_are_created_by_the_thousand_finds_no_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let dir = ledger_dir(&root);
    let mut o = options(&root);
    o.max_segment_bytes = 1024;
    let l = open(o);
    let fill = |l: &Ledger, from: usize, n: usize| {
        let pending: Vec<_> = (from..from + n)
            .map(|i| l.submit(entry(i)).unwrap())
            .collect();
        for p in pending {
            p.wait().unwrap();
        }
    };
    fill(&l, 0, 3000);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (l, stop) = (l.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 3000;
            while !stop.load(Ordering::Relaxed) {
                l.append(entry(i)).unwrap();
                i += 1;
            }
        })
    };
    let started = Instant::now();
    let mut runs = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let r = verify(&dir, &VerifyOptions::default()).unwrap();
        if !r.intact {
            stop.store(true, Ordering::Relaxed);
            panic!("run {runs}: {:#?}", r.faults);
        }
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    l.close().unwrap();
    intact_with_keys(&root);
}

/// A checkpoint hook that panics (a bug in a witness pusher, say) stops the writer with the
/// panic's message as the cause; it used to end the checkpoint thread, and the writer, which
/// kept acknowledging until it next asked for a checkpoint, then said only that the thread
/// stopped. Nothing acknowledged is lost.
#[test]
fn a_panicking_checkpoint_hook_stops_the_writer_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let mut o = options(&root);
    // Long enough that only the flush below asks for a checkpoint while appends go on.
    o.checkpoint_interval = Duration::from_secs(3600);
    o.on_checkpoint = Some(Arc::new(|cp: &SignedCheckpoint| {
        if cp.size > 1 {
            panic!("hook bug at size {}", cp.size);
        }
    }));
    let l = open(o.clone());
    let mut acked = BTreeMap::new();
    let r = l.append(entry(0)).unwrap();
    acked.insert(r.seq, r.hash);
    l.flush().unwrap();
    let r = l.append(entry(1)).unwrap();
    acked.insert(r.seq, r.hash);
    let Err(AppendError::Poisoned { cause }) = l.flush() else {
        panic!("a flush whose hook panicked succeeded");
    };
    assert!(cause.contains("hook bug at size 2"), "{cause}");
    stays_poisoned(&l, &cause);
    o.on_checkpoint = None;
    let l = open(o);
    l.close().unwrap();
    all_present(&ledger_dir(&root), &acked);
    intact_with_keys(&root);
}

/// What a checkpoint hook got back from calls into its own ledger.
#[derive(Debug, Default)]
struct HookCalls {
    flush: Option<Result<(), AppendError>>,
    append: Option<Result<(), AppendError>>,
    close: Option<Result<(), AppendError>>,
    head_size: Option<u64>,
}

/// The hook runs on the thread that stores checkpoints, and a flush, a close or an append waits
/// for the writer, which may itself be waiting for that thread (a flush always is): such a call
/// from the hook used to hang both threads for good. It is refused at once, with an error that
/// says so; reading the head still works, and the ledger goes on as before.
#[test]
fn a_checkpoint_hook_calling_its_own_ledger_is_refused_instead_of_deadlocking() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let mut o = options(&root);
    // Only flushes ask for checkpoints.
    o.checkpoint_interval = Duration::from_secs(3600);
    let slot: Arc<Mutex<Option<Ledger>>> = Arc::default();
    let calls: Arc<Mutex<HookCalls>> = Arc::default();
    o.on_checkpoint = Some(Arc::new({
        let (slot, calls) = (slot.clone(), calls.clone());
        move |_: &SignedCheckpoint| {
            let Some(l) = slot.lock().unwrap().clone() else {
                return;
            };
            let mut c = calls.lock().unwrap();
            if c.flush.is_none() {
                c.head_size = Some(l.head().size);
                c.flush = Some(l.flush().map(drop));
                c.append = Some(l.append(entry(99)).map(drop));
                c.close = Some(l.close().map(drop));
            }
        }
    }));
    let l = open(o);
    *slot.lock().unwrap() = Some(l.clone());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn({
        let l = l.clone();
        move || {
            l.append(entry(0)).unwrap();
            let _ = done_tx.send(l.flush().map(|h| h.size));
        }
    });
    let flushed = done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a flush whose checkpoint hook calls its own ledger hung");
    worker.join().unwrap();
    assert_eq!(flushed.unwrap(), 1);
    let c = std::mem::take(&mut *calls.lock().unwrap());
    assert_eq!(c.head_size, Some(1), "{c:?}");
    for (call, result) in [("flush", c.flush), ("append", c.append), ("close", c.close)] {
        match result {
            Some(Err(e @ AppendError::InsideCheckpointHook { .. })) => {
                let text = e.to_string();
                assert!(
                    text.contains(call) && text.contains("checkpoint hook"),
                    "{text}"
                );
            }
            other => panic!("{call} from the hook: {other:?}"),
        }
    }
    // The hook's handle goes, and the ledger is as good as before.
    slot.lock().unwrap().take();
    l.append(entry(1)).unwrap();
    assert_eq!(l.flush().unwrap().checkpoint_size, 2);
    assert_eq!(l.close().unwrap().size, 2);
    intact_with_keys(&root);
}

/// A hook may hold the last handle and drop it. The drop must not wait for the writer to seal
/// the ledger, as a drop elsewhere does: sealing stores a checkpoint, which waits for the hook.
#[test]
fn a_checkpoint_hook_dropping_the_last_handle_does_not_wait_for_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let mut o = options(&root);
    o.checkpoint_interval = Duration::from_millis(10);
    let slot: Arc<Mutex<Option<Ledger>>> = Arc::default();
    let dropped_in: Arc<Mutex<Option<Duration>>> = Arc::default();
    o.on_checkpoint = Some(Arc::new({
        let (slot, dropped_in) = (slot.clone(), dropped_in.clone());
        move |_: &SignedCheckpoint| {
            let last = slot.lock().unwrap().take();
            if let Some(l) = last {
                let started = Instant::now();
                drop(l);
                *dropped_in.lock().unwrap() = Some(started.elapsed());
            }
        }
    }));
    let l = open(o.clone());
    l.append(entry(0)).unwrap();
    *slot.lock().unwrap() = Some(l.clone());
    drop(l);
    // The ledger is sealed and its lock released once the hook has let go.
    let give_up = Instant::now() + Duration::from_secs(30);
    let l = loop {
        match Ledger::open(o.clone()) {
            Ok((l, _)) => break l,
            Err(kling_audit_ledger::OpenError::Locked { .. }) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let took = dropped_in
        .lock()
        .unwrap()
        .expect("the hook never dropped the handle");
    assert!(
        took < Duration::from_secs(2),
        "the drop in the hook took {took:?}"
    );
    slot.lock().unwrap().take();
    l.close().unwrap();
    intact_with_keys(&root);
}
