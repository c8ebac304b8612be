//! Ledger benchmark, run side by side with the reference Python recipe:
//! `cargo bench -p kling-audit-ledger --bench ledger`.
//!
//! Measures durable append throughput with 1, 8 and 64 concurrent appenders (~300-byte
//! records), acknowledgement latency at 10,000 records/s offered, and verify throughput, then
//! prints ratios against the recipe measured in the same run. Set `KLING_BENCH_QUICK=1` for a
//! short run. The recipe is looked up at `../shared/reference/python_recipe.py` from the
//! workspace root, or at `$KLING_RECIPE`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kling_audit_ledger::verify::{verify, VerifyOptions};
use kling_audit_ledger::{Details, Durability, Entry, Ledger, LedgerOptions};

fn entry(i: usize) -> Entry {
    // The record format's fixed fields (seq, ts, id, prev, epoch, mac, hash) take about 330
    // bytes; with these details a line is about 400 bytes.
    let details = serde_json::json!({"op": "text2video.create", "model": "kling-v2-1", "i": i});
    Entry::new(
        "gateway.request",
        "actor-7",
        Details::from_value(&details).unwrap(),
    )
    .unwrap()
}

fn open(dir: &Path, durability: Durability) -> Ledger {
    let mut o = LedgerOptions::new(dir.join("ledger"));
    o.keys_dir = Some(dir.join("keys"));
    o.durability = durability;
    // `KLING_BENCH_QUEUED=1` measures without inline appends (every record queued).
    o.inline_appends = std::env::var_os("KLING_BENCH_QUEUED").is_none();
    Ledger::open(o).unwrap().0
}

/// `appenders` concurrent async tasks, each appending and awaiting durability in a loop, as
/// the gateway's request handlers do.
fn throughput(appenders: usize, total: usize) -> (f64, f64) {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = open(tmp.path(), Durability::Sync);
    let per = total / appenders;
    let template = entry(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..appenders)
            .map(|_| {
                let l = ledger.clone();
                let e = template.clone();
                tokio::spawn(async move {
                    for _ in 0..per {
                        l.append_async(e.clone()).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let secs = start.elapsed().as_secs_f64();
    ledger.close().unwrap();
    let bytes: u64 = std::fs::read_dir(tmp.path().join("ledger"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    (
        (per * appenders) as f64 / secs,
        bytes as f64 / (per * appenders) as f64,
    )
}

/// `producers` threads that each keep up to `window` appends in flight (submit now, wait
/// later), as `kling-audit log --stdin` does. Every record is still acknowledged only once durable.
fn pipelined(producers: usize, window: usize, total: usize) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = open(tmp.path(), Durability::Sync);
    let per = total / producers;
    let template = entry(0);
    let start = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|_| {
            let l = ledger.clone();
            let e = template.clone();
            std::thread::spawn(move || {
                let mut inflight = std::collections::VecDeque::with_capacity(window);
                for _ in 0..per {
                    if inflight.len() == window {
                        let p: kling_audit_ledger::PendingAppend = inflight.pop_front().unwrap();
                        p.wait().unwrap();
                    }
                    inflight.push_back(l.submit(e.clone()).unwrap());
                }
                for p in inflight {
                    p.wait().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let rate = (per * producers) as f64 / start.elapsed().as_secs_f64();
    ledger.close().unwrap();
    rate
}

fn latency(rate: u64, seconds: u64) -> (Duration, Duration, Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = open(tmp.path(), Durability::Sync);
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, kling_audit_ledger::PendingAppend)>();
    let waiter = std::thread::spawn(move || {
        let mut lat: Vec<Duration> = Vec::new();
        for (sent, p) in rx {
            p.wait().unwrap();
            lat.push(sent.elapsed());
        }
        lat
    });
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        // Latency is measured from the scheduled time, so a stalled sender is not hidden.
        let p = ledger.submit(entry(i as usize)).unwrap();
        tx.send((due, p)).unwrap();
    }
    drop(tx);
    let mut lat = waiter.join().unwrap();
    ledger.close().unwrap();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (pct(0.50), pct(0.99), pct(0.999))
}

fn verify_rate(records: usize) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = open(tmp.path(), Durability::Buffered);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let l = ledger.clone();
            std::thread::spawn(move || {
                let mut pending = std::collections::VecDeque::new();
                for i in 0..records / 8 {
                    pending.push_back(l.submit(entry(t * records + i)).unwrap());
                    if pending.len() > 2048 {
                        pending.pop_front().unwrap().wait().unwrap();
                    }
                }
                for p in pending {
                    p.wait().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    ledger.close().unwrap();
    let dir = tmp.path().join("ledger");
    // Warm the page cache once so the measurement is of the verifier, not the disk.
    let _ = verify(&dir, &VerifyOptions::default()).unwrap();
    let start = Instant::now();
    let report = verify(&dir, &VerifyOptions::default()).unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(report.intact);
    report.records as f64 / secs
}

/// Time from a record's acknowledgement to the first signed checkpoint covering it, at
/// 10,000 records/s offered.
fn checkpoint_latency(seconds: u64) -> (Duration, Duration, Duration) {
    use std::sync::Mutex;
    let tmp = tempfile::tempdir().unwrap();
    let seen: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let mut o = LedgerOptions::new(tmp.path().join("ledger"));
    o.keys_dir = Some(tmp.path().join("keys"));
    let hook_seen = seen.clone();
    o.on_checkpoint = Some(Arc::new(
        move |cp: &kling_audit_ledger::SignedCheckpoint| {
            hook_seen.lock().unwrap().push((cp.size, Instant::now()));
        },
    ));
    let ledger = Ledger::open(o).unwrap().0;
    let (tx, rx) = std::sync::mpsc::channel::<kling_audit_ledger::PendingAppend>();
    let waiter = std::thread::spawn(move || {
        rx.into_iter()
            .map(|p| (p.wait().unwrap().seq, Instant::now()))
            .collect::<Vec<_>>()
    });
    let rate = 10_000u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    for i in 0..rate * seconds {
        let due = start + interval * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        tx.send(ledger.submit(entry(i as usize)).unwrap()).unwrap();
    }
    drop(tx);
    let acks = waiter.join().unwrap();
    // Let the idle writer sign the tail, as it does within its interval.
    std::thread::sleep(Duration::from_millis(1500));
    let cps = seen.lock().unwrap().clone();
    ledger.close().unwrap();
    let mut lat: Vec<Duration> = acks
        .iter()
        .map(|(seq, acked)| {
            let (_, at) = cps
                .iter()
                .find(|(size, _)| *size > *seq)
                .expect("every record gets covered");
            at.saturating_duration_since(*acked)
        })
        .collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (pct(0.5), pct(0.99), *lat.last().unwrap())
}

/// Size and verification time of an inclusion proof in a 10^9-leaf tree. The tree is built
/// from identical leaves, whose perfect subtrees can be hashed once per level, so the proof is
/// made without a billion leaf hashes; its shape and length are those of any 10^9-leaf tree.
fn billion_leaf_proof() -> (usize, Duration) {
    use kling_audit_merkle::{
        inclusion_proof, leaf_hash, node_hash, verify_inclusion, Hash, LeafSource,
    };
    struct Uniform {
        n: u64,
        levels: Vec<Hash>,
    }
    impl LeafSource for Uniform {
        fn len(&self) -> u64 {
            self.n
        }
        fn leaf(&self, _: u64) -> Hash {
            self.levels[0]
        }
        fn cached_subtree(&self, level: u32, _: u64) -> Option<Hash> {
            self.levels.get(level as usize).copied()
        }
    }
    fn mth(n: u64, levels: &[Hash]) -> Hash {
        if n.is_power_of_two() {
            return levels[n.trailing_zeros() as usize];
        }
        let k = 1u64 << (63 - (n - 1).leading_zeros());
        node_hash(&levels[k.trailing_zeros() as usize], &mth(n - k, levels))
    }
    let n = 1_000_000_000u64;
    let mut levels = vec![leaf_hash(b"a 300-byte record stands here")];
    for i in 0..40 {
        let h = levels[i];
        levels.push(node_hash(&h, &h));
    }
    let src = Uniform { n, levels };
    let root = mth(n, &src.levels);
    let index = 123_456_789;
    let proof = inclusion_proof(index, n, &src).unwrap();
    let leaf = src.levels[0];
    let rounds = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        verify_inclusion(std::hint::black_box(&leaf), index, n, &proof, &root).unwrap();
    }
    (proof.len() * 32, start.elapsed() / rounds)
}

/// Cost of the per-record MAC, measured on the writer's own code path.
fn mac_cost() -> Duration {
    let state = kling_audit_ledger::record::mac_state(&[7u8; 32]);
    let data = vec![b'x'; 300];
    let rounds = 200_000;
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(kling_audit_ledger::record::mac_with(
            &state,
            std::hint::black_box(&data),
        ));
    }
    start.elapsed() / rounds
}

fn recipe(n: usize) -> Option<serde_json::Value> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let recipe = std::env::var("KLING_RECIPE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/reference/python_recipe.py"));
    if !recipe.exists() {
        eprintln!(
            "recipe not found at {}; skipping the side-by-side run",
            recipe.display()
        );
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("python3")
        .arg(root.join("bench/recipe_bench.py"))
        .arg(&recipe)
        .arg(tmp.path())
        .arg(n.to_string())
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Prints the acknowledgement latency at 10,000 records/s offered.
fn ack_latency(quick: bool) {
    let (p50, p99, p999) = latency(10_000, if quick { 2 } else { 5 });
    println!(
        "ack latency at 10,000/s offered: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
        ms(p50),
        ms(p99),
        ms(p999)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let quick = std::env::var_os("KLING_BENCH_QUICK").is_some();
    let scale = if quick { 1 } else { 5 };
    println!(
        "# kling-audit ledger benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let only = std::env::var("KLING_BENCH_ONLY").unwrap_or_default();
    if only == "pipelined" {
        println!(
            "pipelined: {:>12.0} records/s",
            pipelined(4, 1024, 400_000 * scale)
        );
        return;
    }
    if only == "verify" {
        println!("verify: {:>12.0} records/s", verify_rate(400_000 * scale));
        return;
    }
    if let Some(n) = only.strip_prefix("append") {
        let appenders = n.parse().unwrap_or(64);
        let (rate, _) = throughput(appenders, 3_000 * scale * appenders.min(64));
        println!("durable append, {appenders:>2} appenders: {rate:>12.0} records/s");
        return;
    }
    if only == "latency" {
        ack_latency(quick);
        return;
    }
    let py = recipe(100_000 * scale / 5);
    let mut rows = Vec::new();
    for appenders in [1usize, 8, 64] {
        let total = match appenders {
            1 => 3_000 * scale,
            8 => 30_000 * scale,
            _ => 200_000 * scale,
        };
        let (rate, bytes) = throughput(appenders, total);
        println!("durable append, {appenders:>2} appenders: {rate:>12.0} records/s  ({bytes:.0} B/record)");
        rows.push((appenders, rate));
    }
    let prate = pipelined(4, 1024, 400_000 * scale);
    println!("durable append, 4 producers x 1024 in flight: {prate:>12.0} records/s");
    ack_latency(quick);
    let vrate = verify_rate(400_000 * scale);
    println!("verify: {vrate:>12.0} records/s");
    let (c50, c99, cmax) = checkpoint_latency(if quick { 2 } else { 5 });
    println!(
        "ack to signed checkpoint at 10,000/s: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(c50),
        ms(c99),
        ms(cmax)
    );
    let (bytes, per) = billion_leaf_proof();
    println!(
        "inclusion proof, 10^9 leaves: {bytes} bytes, verified in {:.2} us",
        per.as_secs_f64() * 1e6
    );
    let mac = mac_cost();
    let best = rows.iter().map(|r| r.1).fold(prate, f64::max);
    println!(
        "MAC per record: {:.0} ns = {:.1}% of a record's time at {best:.0} durable records/s",
        mac.as_secs_f64() * 1e9,
        mac.as_secs_f64() * best * 100.0
    );
    if let Some(py) = py {
        let pa = py["appends_per_s"].as_f64().unwrap_or(f64::NAN);
        let pv = py["verified_per_s"].as_f64().unwrap_or(f64::NAN);
        println!("python recipe: {pa:.0} appends/s (no fsync), {pv:.0} verified/s");
        for (a, r) in &rows {
            println!(
                "ratio: durable append with {a} appenders / recipe append (not durable) = {:.2}x",
                r / pa
            );
        }
        println!(
            "ratio: pipelined durable append / recipe append (not durable) = {:.2}x",
            prate / pa
        );
        println!("ratio: verify / recipe verify = {:.1}x", vrate / pv);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
