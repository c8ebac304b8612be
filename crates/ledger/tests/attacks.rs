mod common;
use common::*;
use kling_audit_ledger::verify::{verify, VerifyOptions};
use std::time::Instant;
#[test]
fn probe() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(tmp.path());
    opts.max_segment_bytes = 3000;
    opts.epoch_max_records = 7;
    opts.checkpoint_interval = std::time::Duration::from_secs(3600);
    let t = Instant::now();
    let (l, rep) = kling_audit_ledger::Ledger::open(opts).unwrap();
    let s = rep.created_keys.unwrap();
    for i in 0..40 {
        l.append(entry(i)).unwrap();
    }
    l.close().unwrap();
    eprintln!("build {:?}", t.elapsed());
    let dir = ledger_dir(tmp.path());
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap();
        eprintln!("{:?} {}", f.file_name(), f.metadata().unwrap().len());
    }
    let mut root = [0u8; 32];
    hex::decode_to_slice(&*s.mac_root_hex, &mut root).unwrap();
    let o = VerifyOptions {
        verifier_key: Some(s.verifier_key.clone()),
        mac_root: Some(root),
        ..Default::default()
    };
    let t = Instant::now();
    for _ in 0..50 {
        let r = verify(&dir, &o).unwrap();
        assert!(r.intact, "{:?}", r.faults);
    }
    eprintln!("verify x50 {:?}", t.elapsed());
    let o2 = VerifyOptions {
        verifier_key: None,
        mac_root: Some(root),
        ..Default::default()
    };
    let t = Instant::now();
    for _ in 0..50 {
        let r = verify(&dir, &o2).unwrap();
        assert!(r.intact || true);
    }
    eprintln!("verify nokey x50 {:?}", t.elapsed());
    let t = Instant::now();
    for _ in 0..50 {
        let d = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap();
            if f.file_type().unwrap().is_file() {
                std::fs::copy(f.path(), d.path().join(f.file_name())).unwrap();
            }
        }
    }
    eprintln!("copy x50 {:?}", t.elapsed());
}
