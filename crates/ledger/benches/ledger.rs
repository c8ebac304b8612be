//! Ledger benchmark, run side by side with the reference Python recipe:
//! `cargo bench -p kling-audit-ledger --bench ledger`.
//!
//! Measures durable append throughput with 1, 8 and 64 concurrent appenders (~300-byte
//! records), acknowledgement latency at 10,000 records/s offered, and verify throughput, then
//! prints ratios against the recipe measured in the same run. Set `KLING_BENCH_QUICK=1` for a
//! short run. The recipe is looked up at `../shared/reference/python_recipe.py` from the
//! workspace root, or at `$KLING_RECIPE`.

use std::path::{Path, PathBuf};
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
    let (p50, p99, p999) = latency(10_000, if quick { 2 } else { 5 });
    println!(
        "ack latency at 10,000/s offered: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
        ms(p50),
        ms(p99),
        ms(p999)
    );
    let vrate = verify_rate(400_000 * scale);
    println!("verify: {vrate:>12.0} records/s");
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
