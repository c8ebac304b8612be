//! Attack harness: an attacker with write access to the ledger directory, but without the
//! checkpoint signing key and without past epoch keys, rewrites the ledger in the ways of
//! integrity.md section 1.2 and must be caught every time, while clean ledgers verify intact.
//!
//! The attacker reads everything in the ledger directory, may make fresh keys of their own
//! (`KeySet::create`, `Signer::generate`) and, in attack (f) only, holds the epoch key file as
//! it was at one moment T (host compromise at T). The real keys directory is otherwise off
//! limits. The auditor holds the pinned verifier key, the MAC root key and, where an attack
//! needs it, a checkpoint saved earlier (trusted state).
//!
//! A few base ledgers are written once by the product (several segments, several epochs,
//! three writer sessions each, with a snapshot after each session); every case copies one into
//! a scratch directory, verifies the clean copy, applies one randomly parameterised attack and
//! verifies again. Every attack keeps the plain hash chain valid (no chain-level fault may be
//! reported), so detection rests on the keyed defences. The RNG is seeded: set `ATTACK_SEED`
//! to explore other cases; a failure prints the seed, the case and the attack.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use common::entry;
use kling_audit_ledger::epoch::EpochKey;
use kling_audit_ledger::record::{mac, parse_line, GENESIS_PREV};
use kling_audit_ledger::segment::segment_name;
use kling_audit_ledger::sign::{open_checkpoint, Signer};
use kling_audit_ledger::verify::{verify, FaultKind, Report, VerifyOptions};
use kling_audit_ledger::{Durability, Ledger, LedgerOptions};
use kling_audit_merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion, Hash,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEFAULT_SEED: u64 = 0x6b6c_696e_6721;
const BASES: usize = 3;
const STAGES: usize = 3;

// Cases per attack; 10,400 in total.
const CASES_EDIT: usize = 2200;
const CASES_RELOG: usize = 200;
const CASES_TRUNCATE: usize = 1900;
const CASES_DELETE_SEGMENT: usize = 1900;
const CASES_ROLLBACK: usize = 1700;
const CASES_RESEAL: usize = 2200;
const CASES_REARRANGE_CHECKPOINTS: usize = 300;

fn master_seed() -> u64 {
    std::env::var("ATTACK_SEED")
        .ok()
        .and_then(|s| {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => s.parse().ok(),
            }
        })
        .unwrap_or(DEFAULT_SEED)
}

/// A per-case seed that depends only on the master seed, the attack and the case number.
fn case_seed(master: u64, attack: &str, case: usize) -> u64 {
    let h = leaf_hash(format!("{master}/{attack}/{case}").as_bytes());
    u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

// ---------------------------------------------------------------------------------------------
// Directory snapshots and the auditor's keys.

/// The regular files of a ledger directory, by name (the writer's LOCK file left out).
type Snapshot = BTreeMap<String, Vec<u8>>;

fn snapshot(dir: &Path) -> Snapshot {
    let mut files = Snapshot::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_file() && name != "LOCK" {
            files.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    files
}

/// Replaces the contents of `dir` with `files`.
fn materialize(dir: &Path, files: &Snapshot) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The epoch key file as an attacker found it at moment T, with the ledger size then.
#[derive(Clone, Debug)]
struct Captured {
    size_at_t: usize,
    epoch: u64,
    key: [u8; 32],
}

/// The ledger directory after one writer session, and the checkpoint the auditor saved then.
struct Stage {
    files: Snapshot,
    /// The attacker's parse of `files`, kept so that cases only clone it.
    model: Model,
    size: usize,
    trusted: String,
}

struct Base {
    stages: Vec<Stage>,
    verifier_key: String,
    mac_root: [u8; 32],
    origin: String,
    captured: Vec<Captured>,
}

impl Base {
    fn last(&self) -> &Stage {
        self.stages.last().unwrap()
    }
}

fn read_epoch_file(keys: &Path) -> (u64, [u8; 32]) {
    let text = std::fs::read_to_string(keys.join(kling_audit_ledger::keys::EPOCH_FILE)).unwrap();
    let mut lines = text.lines().skip(1);
    let epoch = lines.next().unwrap().parse().unwrap();
    let mut key = [0u8; 32];
    hex::decode_to_slice(lines.next().unwrap(), &mut key).unwrap();
    (epoch, key)
}

fn last_note(files: &Snapshot) -> String {
    let cps = std::str::from_utf8(&files["checkpoints.jsonl"]).unwrap();
    let line = cps.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["note"].as_str().unwrap().to_owned()
}

/// Writes one base ledger with the product: three sessions, small segments, short epochs.
fn build_base(seed: u64) -> Base {
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let keys = tmp.path().join("ledger.keys");
    // Records are about 520 bytes: segments of 4 to 8 records. Every segment start is also
    // a checkpoint, and each checkpoint costs a signature check per verification, so
    // segments are not made smaller than the attacks need.
    let seg_bytes = rng.gen_range(2200..4200);
    let epoch_records = rng.gen_range(2..6);
    let mut stages = Vec::new();
    let mut secrets = None;
    let mut captured = Vec::new();
    let mut n = 0usize;
    for _ in 0..STAGES {
        let mut o = LedgerOptions::new(&dir);
        o.keys_dir = Some(keys.clone());
        o.max_segment_bytes = seg_bytes;
        o.epoch_max_records = epoch_records;
        // Epoch and checkpoint timing by records and segments only, so the base's structure
        // follows from the seed.
        o.epoch_max_age = Duration::from_secs(3600);
        o.checkpoint_interval = Duration::from_secs(3600);
        o.durability = Durability::Buffered;
        let (ledger, report) = Ledger::open(o).unwrap();
        if let Some(s) = report.created_keys {
            secrets = Some(s);
        }
        let count = rng.gen_range(6..12);
        let capture_at = rng.gen_range(0..count);
        for i in 0..count {
            // Epoch seals are records too, so the size comes from the receipts.
            n = ledger.append(entry(n)).unwrap().seq as usize + 1;
            if i == capture_at {
                let (epoch, key) = read_epoch_file(&keys);
                captured.push(Captured {
                    size_at_t: n,
                    epoch,
                    key,
                });
            }
        }
        n = ledger.close().unwrap().size as usize;
        let files = snapshot(&dir);
        let trusted = last_note(&files);
        stages.push(Stage {
            model: Model::load(&files),
            files,
            size: n,
            trusted,
        });
    }
    let secrets = secrets.unwrap();
    let mut mac_root = [0u8; 32];
    hex::decode_to_slice(&*secrets.mac_root_hex, &mut mac_root).unwrap();
    let origin = stages[0].trusted.lines().next().unwrap().to_owned();
    Base {
        stages,
        verifier_key: secrets.verifier_key.clone(),
        mac_root,
        origin,
        captured,
    }
}

fn bases() -> &'static [Base] {
    static BASES_CELL: OnceLock<Vec<Base>> = OnceLock::new();
    BASES_CELL.get_or_init(|| {
        let master = master_seed();
        (0..BASES)
            .map(|i| build_base(case_seed(master, "base", i)))
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// The attacker's model of a ledger: records re-encoded byte for byte from the format document.

#[derive(Clone, Debug)]
struct Rec {
    seq: u64,
    ts: String,
    id: String,
    prev: Hash,
    kind: String,
    actor: String,
    details: String,
    epoch: u64,
    mac: Hash,
}

impl Rec {
    fn parse(line: &[u8]) -> Rec {
        let v = parse_line(line).unwrap();
        Rec {
            seq: v.seq,
            ts: v.ts.to_owned(),
            id: v.id.to_owned(),
            prev: v.prev,
            kind: v.kind.get().to_owned(),
            actor: v.actor.get().to_owned(),
            details: v.details.get().to_owned(),
            epoch: v.epoch,
            mac: v.mac,
        }
    }

    fn mac_input(&self) -> String {
        format!(
            "{{\"v\":1,\"seq\":{},\"ts\":\"{}\",\"id\":\"{}\",\"prev\":\"{}\",\"type\":{},\"actor\":{},\"details\":{},\"epoch\":{}",
            self.seq,
            self.ts,
            self.id,
            hex::encode(self.prev),
            self.kind,
            self.actor,
            self.details,
            self.epoch
        )
    }

    fn body(&self) -> String {
        format!("{},\"mac\":\"{}\"", self.mac_input(), hex::encode(self.mac))
    }

    fn hash(&self) -> Hash {
        leaf_hash(self.body().as_bytes())
    }

    fn line(&self) -> String {
        format!(
            "{},\"hash\":\"{}\"}}\n",
            self.body(),
            hex::encode(self.hash())
        )
    }
}

/// How the attacker re-MACs a record whose MAC input changed.
#[derive(Clone, Debug)]
enum MacPolicy {
    /// Leave the old MAC (no key).
    Stale,
    /// MAC under a key of their own.
    Own([u8; 32]),
    /// The epoch key stolen at T: MACs correctly for that epoch and any later one (keys only
    /// ratchet forward), and must leave older epochs stale.
    Stolen { epoch: u64, key: [u8; 32] },
}

impl MacPolicy {
    fn apply(&self, r: &mut Rec) {
        match self {
            MacPolicy::Stale => {}
            MacPolicy::Own(k) => r.mac = mac(k, r.mac_input().as_bytes()),
            MacPolicy::Stolen { epoch, key } => {
                if r.epoch >= *epoch {
                    let mut k = EpochKey::at(*epoch, *key);
                    k.advance_to(r.epoch);
                    r.mac = mac(k.key(), r.mac_input().as_bytes());
                }
            }
        }
    }
}

/// What the attacker does to `checkpoints.jsonl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CpPolicy {
    /// Leave it alone.
    Keep,
    /// Drop every checkpoint larger than the first changed record's index (nothing re-signed).
    DropCovering,
    /// Drop those and sign replacements with a fresh key under the same origin.
    ReplaceOwn,
    /// Delete the file.
    DropAll,
}

impl CpPolicy {
    fn pick(rng: &mut StdRng, allow_own: bool) -> CpPolicy {
        let all = [
            CpPolicy::Keep,
            CpPolicy::DropCovering,
            CpPolicy::ReplaceOwn,
            CpPolicy::DropAll,
        ];
        loop {
            let p = all[rng.gen_range(0..all.len())];
            if allow_own || p != CpPolicy::ReplaceOwn {
                return p;
            }
        }
    }

    /// Whether only outside (trusted) state can catch the result: the attacker removed the
    /// signed checkpoints that cover the change without signing anything.
    fn needs_trusted(self) -> bool {
        matches!(self, CpPolicy::DropCovering | CpPolicy::DropAll)
    }
}

#[derive(Clone)]
struct Seg {
    day: String,
    recs: Vec<Rec>,
}

#[derive(Clone)]
struct Model {
    segs: Vec<Seg>,
    /// Raw lines of `checkpoints.jsonl`.
    cps: Vec<String>,
    /// Other files, kept as they are.
    other: Snapshot,
}

fn cp_size(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["size"].as_u64().unwrap()
}

impl Model {
    fn load(files: &Snapshot) -> Model {
        let mut segs = Vec::new();
        let mut cps = Vec::new();
        let mut other = Snapshot::new();
        for (name, bytes) in files {
            if let Some((_, day)) = kling_audit_ledger::segment::parse_segment_name(name) {
                let recs = bytes
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(Rec::parse)
                    .collect();
                segs.push(Seg { day, recs });
            } else if name == "checkpoints.jsonl" {
                cps = std::str::from_utf8(bytes)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect();
            } else {
                other.insert(name.clone(), bytes.clone());
            }
        }
        // Snapshot names sort by first seq (20 digits), so segments are already in order.
        Model { segs, cps, other }
    }

    fn store(&self) -> Snapshot {
        let mut files = self.other.clone();
        for s in &self.segs {
            if s.recs.is_empty() {
                continue;
            }
            let mut text = String::new();
            for r in &s.recs {
                text.push_str(&r.line());
            }
            files.insert(segment_name(s.recs[0].seq, &s.day), text.into_bytes());
        }
        if !self.cps.is_empty() {
            let mut text = self.cps.join("\n");
            text.push('\n');
            files.insert("checkpoints.jsonl".into(), text.into_bytes());
        }
        files
    }

    fn len(&self) -> usize {
        self.segs.iter().map(|s| s.recs.len()).sum()
    }

    fn recs(&self) -> impl Iterator<Item = &Rec> {
        self.segs.iter().flat_map(|s| s.recs.iter())
    }

    fn recs_mut(&mut self) -> impl Iterator<Item = &mut Rec> {
        self.segs.iter_mut().flat_map(|s| s.recs.iter_mut())
    }

    fn rec_mut(&mut self, index: usize) -> &mut Rec {
        self.recs_mut().nth(index).unwrap()
    }

    fn leaves(&self) -> Vec<Hash> {
        self.recs().map(Rec::hash).collect()
    }

    /// Renumbers and relinks every record from `from` on, re-MACing each changed record the
    /// way `policy` allows: the plain chain verifies afterwards.
    fn rechain(&mut self, from: usize, policy: &MacPolicy) {
        let mut prev = GENESIS_PREV;
        for (i, r) in self.recs_mut().enumerate() {
            let seq = i as u64;
            if i >= from && (r.seq != seq || r.prev != prev || i == from) {
                r.seq = seq;
                r.prev = prev;
                policy.apply(r);
            }
            prev = r.hash();
        }
        self.segs.retain(|s| !s.recs.is_empty());
    }

    /// Applies a checkpoint policy after records from index `changed` on were rewritten.
    fn checkpoints(&mut self, policy: CpPolicy, changed: usize, origin: &str) {
        match policy {
            CpPolicy::Keep => {}
            CpPolicy::DropAll => self.cps.clear(),
            CpPolicy::DropCovering | CpPolicy::ReplaceOwn => {
                let old: Vec<u64> = self.cps.iter().map(|l| cp_size(l)).collect();
                self.cps.retain(|l| cp_size(l) <= changed as u64);
                if policy == CpPolicy::ReplaceOwn {
                    let signer = Signer::generate(origin).unwrap();
                    let leaves = self.leaves();
                    let mut sizes: BTreeSet<u64> = old
                        .into_iter()
                        .filter(|s| *s > changed as u64 && *s <= leaves.len() as u64)
                        .collect();
                    sizes.insert(leaves.len() as u64);
                    for size in sizes {
                        let note = signer
                            .sign_checkpoint(size, &root(&leaves[..size as usize]))
                            .unwrap();
                        self.cps
                            .push(serde_json::json!({"size": size, "note": note}).to_string());
                    }
                }
            }
        }
    }

    /// A record the attacker makes up, to extend a chain.
    fn forged(&self, rng: &mut StdRng) -> Rec {
        let last = self.recs().last().cloned();
        let (ts, epoch) = last
            .map(|r| (r.ts, r.epoch))
            .unwrap_or_else(|| ("2026-01-01T00:00:00.000000Z".into(), 0));
        Rec {
            seq: 0,
            ts,
            id: uuid_from(rng),
            prev: GENESIS_PREV,
            kind: "\"task.submitted\"".into(),
            actor: serde_json::to_string(&format!("mallory-{}", rng.gen::<u16>())).unwrap(),
            details: format!("{{\"forged\":{}}}", rng.gen::<u32>()),
            epoch,
            mac: [0; 32],
        }
    }
}

fn uuid_from(rng: &mut StdRng) -> String {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// Changes what a record says, never leaving it as it was.
fn edit_content(r: &mut Rec, rng: &mut StdRng) {
    let before = (r.kind.clone(), r.actor.clone(), r.details.clone());
    loop {
        match rng.gen_range(0..3) {
            0 => {
                r.actor = serde_json::to_string(&format!("mallory-{}", rng.gen::<u16>())).unwrap();
            }
            1 => {
                r.details = format!(
                    "{{\"i\":{},\"model\":\"kling-v1\",\"note\":\"edited\"}}",
                    rng.gen::<u32>()
                );
            }
            _ => {
                let kinds = [
                    "task.cancelled",
                    "task.failed",
                    "key.rotated",
                    "billing.refund",
                ];
                r.kind = format!("\"{}\"", kinds[rng.gen_range(0..kinds.len())]);
            }
        }
        if (r.kind.clone(), r.actor.clone(), r.details.clone()) != before {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running cases.

/// Fault kinds that a keyless hash chain would raise: every attack here avoids them, so a
/// detection never rests on attacker sloppiness.
const CHAIN_KINDS: [FaultKind; 11] = [
    FaultKind::AlteredRecord,
    FaultKind::BrokenLink,
    FaultKind::Gap,
    FaultKind::Duplicate,
    FaultKind::Reordered,
    FaultKind::SecondGenesis,
    FaultKind::MalformedLine,
    FaultKind::TornTail,
    FaultKind::MissingSegment,
    FaultKind::ForeignSegment,
    FaultKind::ClockRegression,
];

/// The auditor's choice of trust roots for one case.
struct Audit {
    mac: bool,
    trusted: Option<String>,
}

impl Audit {
    fn options(&self, base: &Base) -> VerifyOptions {
        VerifyOptions {
            verifier_key: Some(base.verifier_key.clone()),
            mac_root: self.mac.then_some(base.mac_root),
            trusted_checkpoint: self.trusted.clone(),
            ..Default::default()
        }
    }
}

/// Tallies of one attack run.
#[derive(Default)]
struct Tally {
    cases: usize,
    kinds: BTreeMap<String, usize>,
}

impl Tally {
    fn summary(&self, attack: &str) -> String {
        let mut s = format!(
            "{attack}: {} cases, all detected; first faults:",
            self.cases
        );
        for (k, n) in &self.kinds {
            let _ = write!(s, " {k}={n}");
        }
        s
    }
}

fn fault_list(r: &Report) -> String {
    r.faults
        .iter()
        .map(|f| format!("{:?}@{:?}: {}", f.kind, f.seq, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

struct Case<'a> {
    master: u64,
    attack: &'a str,
    index: usize,
    seed: u64,
}

impl Case<'_> {
    fn id(&self) -> String {
        format!(
            "ATTACK_SEED={:#x} attack {} case {} (case seed {:#x})",
            self.master, self.attack, self.index, self.seed
        )
    }
}

/// Verifies the clean directory, then the attacked one, with the same trust roots.
#[allow(clippy::too_many_arguments)]
fn check(
    scratch: &Path,
    case: &Case<'_>,
    base: &Base,
    clean: &Snapshot,
    attacked: &Snapshot,
    audit: &Audit,
    what: &dyn std::fmt::Debug,
    tally: &mut Tally,
) {
    let opts = audit.options(base);
    materialize(scratch, clean);
    let r = verify(scratch, &opts).unwrap();
    assert!(
        r.intact && r.faults.is_empty(),
        "false alarm on the clean ledger before {}: {what:?}: {}",
        case.id(),
        fault_list(&r)
    );
    assert_ne!(clean, attacked, "{}: the attack changed nothing", case.id());
    materialize(scratch, attacked);
    let r = verify(scratch, &opts).unwrap();
    assert!(
        !r.intact && !r.faults.is_empty(),
        "undetected: {} {what:?} (mac root given: {}, trusted checkpoint given: {})",
        case.id(),
        audit.mac,
        audit.trusted.is_some()
    );
    let sloppy: Vec<_> = r
        .faults
        .iter()
        .filter(|f| CHAIN_KINDS.contains(&f.kind))
        .collect();
    assert!(
        sloppy.is_empty(),
        "{} {what:?}: the attack left chain-level faults, so it does not test the keyed \
         defences: {sloppy:?}",
        case.id()
    );
    tally.cases += 1;
    *tally
        .kinds
        .entry(r.faults[0].kind.code().to_ascii_lowercase())
        .or_default() += 1;
}

/// Runs `cases` cases of one attack; `make` returns the base, the clean and attacked
/// directories, the auditor's trust roots and a description of the attack.
fn run<F>(attack: &str, cases: usize, mut make: F)
where
    F: FnMut(&mut StdRng) -> (usize, Snapshot, Snapshot, Audit, Box<dyn std::fmt::Debug>),
{
    let master = master_seed();
    let bases = bases();
    let scratch = tempfile::tempdir().unwrap();
    let mut tally = Tally::default();
    for index in 0..cases {
        let seed = case_seed(master, attack, index);
        let mut rng = StdRng::seed_from_u64(seed);
        let (b, clean, attacked, audit, what) = make(&mut rng);
        let case = Case {
            master,
            attack,
            index,
            seed,
        };
        check(
            scratch.path(),
            &case,
            &bases[b],
            &clean,
            &attacked,
            &audit,
            &what,
            &mut tally,
        );
    }
    assert_eq!(tally.cases, cases);
    eprintln!("{}", tally.summary(attack));
}

fn pick_base(rng: &mut StdRng) -> usize {
    rng.gen_range(0..BASES)
}

/// The auditor's roots: the MAC root by coin flip; the trusted checkpoint when the attack
/// needs it, else by coin flip.
fn audit(rng: &mut StdRng, mac: Option<bool>, trusted: &str, needs_trusted: bool) -> Audit {
    let mac = mac.unwrap_or_else(|| rng.gen_bool(0.5));
    let give = needs_trusted || rng.gen_bool(0.5);
    Audit {
        mac,
        trusted: give.then(|| trusted.to_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// Sanity: the attacker's encoder reproduces the writer's bytes, so "clean" and "attacked"
// differ only by the attack.

#[test]
fn attacker_model_reproduces_the_writer_bytes() {
    for base in bases() {
        for stage in &base.stages {
            let model = Model::load(&stage.files);
            assert_eq!(model.len(), stage.size);
            assert_eq!(model.store(), stage.files);
        }
        // The bases exercise what the attacks need.
        let model = Model::load(&base.last().files);
        let epochs: BTreeSet<u64> = model.recs().map(|r| r.epoch).collect();
        assert!(epochs.len() >= 3, "the base must span several epochs");
        assert!(model.segs.len() >= 3, "the base must have several segments");
        assert!(
            model.cps.len() >= 3,
            "the base must have several checkpoints"
        );
        assert!(base.captured.iter().any(|c| c.epoch > 0));
    }
}

// ---------------------------------------------------------------------------------------------
// (a) Edit a record's content, then recompute every later hash and link.

#[derive(Debug)]
#[allow(dead_code)]
struct EditRehash {
    base: usize,
    record: usize,
    mac: MacPolicy,
    checkpoints: CpPolicy,
}

#[test]
fn a_edit_and_rehash_is_detected() {
    run("edit-rehash", CASES_EDIT, |rng| {
        let b = pick_base(rng);
        let base = &bases()[b];
        let clean = &base.last().files;
        let mut m = base.last().model.clone();
        let j = rng.gen_range(0..m.len());
        let policy = if rng.gen_bool(0.5) {
            MacPolicy::Stale
        } else {
            MacPolicy::Own(rng.gen())
        };
        edit_content(m.rec_mut(j), rng);
        m.rechain(j, &policy);
        let cp = CpPolicy::pick(rng, true);
        m.checkpoints(cp, j, &base.origin);
        let audit = audit(rng, None, &base.last().trusted, false);
        let what = EditRehash {
            base: b,
            record: j,
            mac: policy,
            checkpoints: cp,
        };
        (b, clean.clone(), m.store(), audit, Box::new(what))
    });
}

// ---------------------------------------------------------------------------------------------
// (b) Re-log a whole forged history with the product itself under fresh keys.

#[derive(Debug)]
#[allow(dead_code)]
struct Relog {
    base: usize,
    forged_records: usize,
    checkpoints: &'static str,
}

#[test]
fn b_relogged_forged_history_is_detected() {
    let work = tempfile::tempdir().unwrap();
    let mut n = 0usize;
    run("relog", CASES_RELOG, |rng| {
        let b = pick_base(rng);
        let base = &bases()[b];
        let clean = &base.last().files;
        n += 1;
        let dir = work.path().join(format!("forged-{n}"));
        let mut o = LedgerOptions::new(&dir);
        o.keys_dir = Some(work.path().join(format!("forged-{n}.keys")));
        o.origin = Some(base.origin.clone());
        o.max_segment_bytes = rng.gen_range(1200..4000);
        o.durability = Durability::Buffered;
        let (ledger, _) = Ledger::open(o).unwrap();
        let count = rng.gen_range(1..2 * base.last().size);
        for i in 0..count {
            ledger.append(entry(i)).unwrap();
        }
        ledger.close().unwrap();
        let forged = snapshot(&dir);
        let mut attacked: Snapshot = clean
            .iter()
            .filter(|(name, _)| !name.starts_with("seg-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let how = match rng.gen_range(0..3) {
            0 => "forged checkpoints",
            1 => "real checkpoints",
            _ => "real then forged checkpoints",
        };
        for (name, bytes) in &forged {
            match (name.as_str(), how) {
                ("checkpoints.jsonl", "forged checkpoints") => {
                    attacked.insert(name.clone(), bytes.clone());
                }
                ("checkpoints.jsonl", "real then forged checkpoints") => {
                    attacked
                        .get_mut(name)
                        .unwrap()
                        .extend_from_slice(bytes.as_slice());
                }
                ("checkpoints.jsonl", _) => {}
                _ => {
                    attacked.insert(name.clone(), bytes.clone());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        let audit = audit(rng, None, &base.last().trusted, false);
        let what = Relog {
            base: b,
            forged_records: count,
            checkpoints: how,
        };
        (b, clean.clone(), attacked, audit, Box::new(what))
    });
}

// ---------------------------------------------------------------------------------------------
// (c) Truncate the tail.

#[derive(Debug)]
#[allow(dead_code)]
struct Truncate {
    base: usize,
    keep: usize,
    checkpoints: CpPolicy,
}

#[test]
fn c_truncated_tail_is_detected() {
    run("truncate", CASES_TRUNCATE, |rng| {
        let b = pick_base(rng);
        let base = &bases()[b];
        let clean = &base.last().files;
        let mut m = base.last().model.clone();
        let n = m.len();
        // Half the cuts land exactly on a signed size, where nothing is left unsealed.
        let sizes: Vec<usize> = m
            .cps
            .iter()
            .map(|l| cp_size(l) as usize)
            .filter(|s| *s < n)
            .collect();
        let keep = if rng.gen_bool(0.5) && !sizes.is_empty() {
            sizes[rng.gen_range(0..sizes.len())]
        } else {
            rng.gen_range(0..n)
        };
        let mut left = keep;
        for s in &mut m.segs {
            let k = left.min(s.recs.len());
            s.recs.truncate(k);
            left -= k;
        }
        m.segs.retain(|s| !s.recs.is_empty());
        // Re-sign nothing: keep or drop checkpoints.
        let cp = CpPolicy::pick(rng, false);
        m.checkpoints(cp, keep, &base.origin);
        let audit = audit(rng, None, &base.last().trusted, cp.needs_trusted());
        let what = Truncate {
            base: b,
            keep,
            checkpoints: cp,
        };
        (b, clean.clone(), m.store(), audit, Box::new(what))
    });
}

// ---------------------------------------------------------------------------------------------
// (d) Delete a segment and renumber the rest.

#[derive(Debug)]
#[allow(dead_code)]
struct DeleteSegment {
    base: usize,
    segment: usize,
    first_seq: usize,
    records: usize,
    mac: MacPolicy,
    checkpoints: CpPolicy,
}

#[test]
fn d_deleted_and_renumbered_segment_is_detected() {
    run("delete-segment", CASES_DELETE_SEGMENT, |rng| {
        let b = pick_base(rng);
        let base = &bases()[b];
        let clean = &base.last().files;
        let mut m = base.last().model.clone();
        let i = rng.gen_range(0..m.segs.len());
        let first: usize = m.segs[..i].iter().map(|s| s.recs.len()).sum();
        let removed = m.segs.remove(i).recs.len();
        let policy = if rng.gen_bool(0.5) {
            MacPolicy::Stale
        } else {
            MacPolicy::Own(rng.gen())
        };
        m.rechain(first, &policy);
        let cp = CpPolicy::pick(rng, true);
        m.checkpoints(cp, first, &base.origin);
        let audit = audit(rng, None, &base.last().trusted, cp.needs_trusted());
        let what = DeleteSegment {
            base: b,
            segment: i,
            first_seq: first,
            records: removed,
            mac: policy,
            checkpoints: cp,
        };
        (b, clean.clone(), m.store(), audit, Box::new(what))
    });
}

// ---------------------------------------------------------------------------------------------
// (e) Roll back to an older copy of the whole directory.

#[derive(Debug)]
#[allow(dead_code)]
struct Rollback {
    base: usize,
    restored_stage: usize,
    trusted_stage: usize,
    variant: &'static str,
    forged_records: usize,
}

#[test]
fn e_rollback_to_an_older_copy_is_detected() {
    run("rollback", CASES_ROLLBACK, |rng| {
        let b = pick_base(rng);
        let base = &bases()[b];
        let clean = &base.last().files;
        let old = rng.gen_range(0..STAGES - 1);
        let trusted_stage = rng.gen_range(old + 1..STAGES);
        let trusted = &base.stages[trusted_stage];
        let restored = &base.stages[old].files;
        let mut forged_records = 0;
        let (variant, attacked) = match rng.gen_range(0..4) {
            0 => ("restore the old copy", restored.clone()),
            1 => {
                // Old segments, current checkpoint log.
                let mut a = restored.clone();
                a.insert(
                    "checkpoints.jsonl".into(),
                    clean["checkpoints.jsonl"].clone(),
                );
                ("restore old segments only", a)
            }
            v => {
                // Restore, then grow past the trusted size with forged records under a key of
                // one's own, so the size alone no longer gives the rollback away.
                let mut m = base.stages[old].model.clone();
                let from = m.len();
                let target = trusted.size + rng.gen_range(0..6);
                let own = MacPolicy::Own(rng.gen());
                while m.len() < target {
                    let r = m.forged(rng);
                    m.segs.last_mut().unwrap().recs.push(r);
                }
                m.rechain(from, &own);
                forged_records = m.len() - from;
                let cp = if v == 2 {
                    CpPolicy::ReplaceOwn
                } else {
                    CpPolicy::Keep
                };
                m.checkpoints(cp, from, &base.origin);
                (
                    if v == 2 {
                        "restore, extend, sign with own key"
                    } else {
                        "restore, extend, keep old checkpoints"
                    },
                    m.store(),
                )
            }
        };
        let audit = audit(rng, None, &trusted.trusted, true);
        let what = Rollback {
            base: b,
            restored_stage: old,
            trusted_stage,
            variant,
            forged_records,
        };
        (b, clean.clone(), attacked, audit, Box::new(what))
    });
}

// ---------------------------------------------------------------------------------------------
// (f) Re-seal old records with a newer epoch key (the CVE-2023-31439 pattern).

#[derive(Debug)]
#[allow(dead_code)]
struct Reseal {
    base: usize,
    captured: Captured,
    record: usize,
    record_epoch: u64,
    variant: &'static str,
    edited: bool,
    checkpoints: CpPolicy,
}

/// Re-seals record `j`, from before the moment T at which the epoch key was stolen, and
/// relinks everything after it, re-MACing with the stolen key (ratcheted forward) wherever
/// that key can make a valid MAC. Returns the variant's name and whether content changed.
fn reseal(m: &mut Model, cap: &Captured, j: usize, rng: &mut StdRng) -> (&'static str, bool) {
    let stolen = MacPolicy::Stolen {
        epoch: cap.epoch,
        key: cap.key,
    };
    let edited = rng.gen_bool(0.5);
    if edited {
        edit_content(m.rec_mut(j), rng);
    }
    match rng.gen_range(0..4) {
        0 => {
            let r = m.rec_mut(j);
            r.mac = mac(&cap.key, r.mac_input().as_bytes());
            m.rechain(j + 1, &stolen);
            ("keep the epoch, MAC with the stolen key", edited)
        }
        1 => {
            m.rec_mut(j).epoch = cap.epoch;
            m.rechain(j, &stolen);
            ("claim the stolen epoch for one record", edited)
        }
        2 => {
            // Claim the stolen epoch for everything from j up to T, so that epochs never go
            // back and every MAC verifies: only signed checkpoints stand in the way.
            for k in j..cap.size_at_t {
                let r = m.rec_mut(k);
                r.epoch = r.epoch.max(cap.epoch);
            }
            m.rechain(j, &stolen);
            ("claim the stolen epoch from the record up to T", edited)
        }
        _ => {
            let r = m.rec_mut(j);
            r.epoch = rng.gen_range(r.epoch..cap.epoch + 3);
            let own: [u8; 32] = rng.gen();
            r.mac = mac(&own, r.mac_input().as_bytes());
            m.rechain(j + 1, &stolen);
            (
                "claim an epoch of one's own, MAC with one's own key",
                edited,
            )
        }
    }
}

#[test]
fn f_resealing_with_a_newer_epoch_key_is_detected() {
    run("reseal", CASES_RESEAL, |rng| loop {
        let b = pick_base(rng);
        let base = &bases()[b];
        let cap = base.captured[rng.gen_range(0..base.captured.len())].clone();
        let clean = &base.last().files;
        let mut m = base.last().model.clone();
        let older: Vec<usize> = m
            .recs()
            .take(cap.size_at_t)
            .enumerate()
            .filter(|(_, r)| r.epoch < cap.epoch)
            .map(|(i, _)| i)
            .collect();
        if older.is_empty() {
            continue;
        }
        let j = older[rng.gen_range(0..older.len())];
        let record_epoch = m.recs().nth(j).unwrap().epoch;
        let (variant, edited) = reseal(&mut m, &cap, j, rng);
        let cp = CpPolicy::pick(rng, true);
        m.checkpoints(cp, j, &base.origin);
        // Whatever the attacker does to the checkpoints, the records after j are no longer
        // under a checkpoint the pinned key signed, so no trusted state is needed.
        let audit = audit(rng, Some(true), &base.last().trusted, false);
        let what = Reseal {
            base: b,
            captured: cap,
            record: j,
            record_epoch,
            variant,
            edited,
            checkpoints: cp,
        };
        return (b, clean.clone(), m.store(), audit, Box::new(what));
    });
}

// ---------------------------------------------------------------------------------------------
// (g) Rearrange the lines of checkpoints.jsonl, every one still validly signed, records untouched.

#[derive(Debug)]
#[allow(dead_code)]
struct RearrangeCheckpoints {
    base: usize,
    variant: &'static str,
    from: usize,
    to: usize,
    lines: usize,
}

#[test]
fn g_rearranged_checkpoint_lines_are_detected() {
    run(
        "rearrange-checkpoints",
        CASES_REARRANGE_CHECKPOINTS,
        |rng| {
            let b = pick_base(rng);
            let base = &bases()[b];
            let clean = &base.last().files;
            let mut m = base.last().model.clone();
            let n = m.cps.len();
            let from = rng.gen_range(0..n);
            let mut to = rng.gen_range(0..n - 1);
            if to >= from {
                to += 1;
            }
            let variant = match rng.gen_range(0..3) {
                0 => {
                    m.cps.swap(from, to);
                    "swap two lines"
                }
                1 => {
                    let line = m.cps.remove(from);
                    m.cps.insert(to, line);
                    "move one line"
                }
                _ => {
                    // Anywhere, next to itself included.
                    let at = rng.gen_range(0..=n);
                    m.cps.insert(at, m.cps[from].clone());
                    to = at;
                    "copy one line"
                }
            };
            let audit = audit(rng, None, &base.last().trusted, false);
            let what = RearrangeCheckpoints {
                base: b,
                variant,
                from,
                to,
                lines: n,
            };
            (b, clean.clone(), m.store(), audit, Box::new(what))
        },
    );
}

/// A known gap, kept as a failing test until it is closed: an attacker holding the epoch key
/// stolen at T relabels the records written shortly before T (within the verifier's 61 s
/// epoch-span allowance) as belonging to the stolen epoch, re-MACs them and everything after,
/// and drops the checkpoints that cover them. MACs, epoch order and the plain chain all
/// verify, so an auditor holding only the MAC root key (no pinned checkpoint key, no trusted
/// state) sees an intact ledger. Closing it needs the end of each epoch to be committed under
/// that epoch's own key (a seal record MACed before the key is wiped).
#[test]
fn mac_root_alone_catches_records_resealed_into_the_stolen_epoch() {
    let base = &bases()[0];
    let (cap, j) = base
        .captured
        .iter()
        .find_map(|cap| {
            let m = &base.last().model;
            let j = m
                .recs()
                .take(cap.size_at_t)
                .position(|r| r.epoch + 1 == cap.epoch)?;
            Some((cap.clone(), j))
        })
        .expect("a capture with an older epoch before it");
    let mut m = base.last().model.clone();
    let stolen = MacPolicy::Stolen {
        epoch: cap.epoch,
        key: cap.key,
    };
    edit_content(m.rec_mut(j), &mut StdRng::seed_from_u64(1));
    for k in j..cap.size_at_t {
        let r = m.rec_mut(k);
        r.epoch = r.epoch.max(cap.epoch);
    }
    m.rechain(j, &stolen);
    m.checkpoints(CpPolicy::DropCovering, j, &base.origin);
    let scratch = tempfile::tempdir().unwrap();
    let opts = VerifyOptions {
        mac_root: Some(base.mac_root),
        ..Default::default()
    };
    materialize(scratch.path(), &base.last().files);
    assert!(verify(scratch.path(), &opts).unwrap().intact);
    materialize(scratch.path(), &m.store());
    let r = verify(scratch.path(), &opts).unwrap();
    assert!(
        !r.intact,
        "record {j} re-sealed into stolen epoch {} passed MAC-only verification",
        cap.epoch
    );
}

/// Regression: a record numbered `u64::MAX` made the verifier overflow computing the next
/// expected number (a panic in debug builds). It must be reported as a gap instead.
#[test]
fn a_record_numbered_u64_max_is_a_gap_not_a_panic() {
    let base = &bases()[0];
    let mut m = base.last().model.clone();
    let last = m.len() - 1;
    m.rec_mut(last).seq = u64::MAX;
    let scratch = tempfile::tempdir().unwrap();
    materialize(scratch.path(), &m.store());
    let r = verify(scratch.path(), &VerifyOptions::default()).unwrap();
    assert!(r
        .faults
        .iter()
        .any(|f| f.kind == FaultKind::Gap && f.seq == Some(u64::MAX)));
}

/// A known bug, kept as an ignored test until it is fixed (it does not finish today): a record
/// claiming an absurd epoch makes a verifier holding the MAC root derive every epoch key up to
/// it, one hash per epoch, so one edited number stops `verify --mac-key` for good. An epoch
/// that far ahead of the previous one should be reported without deriving its key.
#[test]
fn a_huge_epoch_number_is_reported_without_deriving_its_key() {
    let base = &bases()[0];
    let mut m = base.last().model.clone();
    let last = m.len() - 1;
    m.rec_mut(last).epoch = u64::MAX - 1;
    m.rechain(last, &MacPolicy::Stale);
    let scratch = tempfile::tempdir().unwrap();
    materialize(scratch.path(), &m.store());
    let opts = VerifyOptions {
        mac_root: Some(base.mac_root),
        ..Default::default()
    };
    let r = verify(scratch.path(), &opts).unwrap();
    assert!(r
        .faults
        .iter()
        .any(|f| f.kind == FaultKind::EpochKeyMismatch && f.seq == Some(last as u64)));
}

// ---------------------------------------------------------------------------------------------
// GHSA-672p-m5jq-mrh8 (immudb): a client accepted a proof whose parts were each valid but did
// not belong together. Every mixture of a valid proof with a wrong leaf, index, tree size or
// root must be rejected, and a proof checked against a signed checkpoint must use that
// checkpoint's size and root together.

/// Leaf hashes of a test log.
fn test_leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(format!("record {i}").as_bytes()))
        .collect()
}

#[test]
fn ghsa_672p_inclusion_proofs_bind_leaf_index_and_size() {
    const N: usize = 48;
    let leaves = test_leaves(N);
    let roots: Vec<Hash> = (0..=N).map(|n| root(&leaves[..n])).collect();
    // A second log with different records, for roots of another tree of the same size.
    let others: Vec<Hash> = (0..N)
        .map(|i| leaf_hash(format!("other {i}").as_bytes()))
        .collect();
    // proofs[n][i]: the honest proof of leaf i in the tree of size n.
    let proofs: Vec<Vec<Vec<Hash>>> = (0..=N as u64)
        .map(|n| {
            (0..n)
                .map(|i| inclusion_proof(i, n, &leaves).unwrap())
                .collect()
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(master_seed() ^ 0x672f);
    let mut rejected = 0usize;
    for n in 1..=N {
        for i in 0..n {
            let proof = &proofs[n][i];
            let leaf = leaves[i];
            let (iu, nu) = (i as u64, n as u64);
            assert_eq!(verify_inclusion(&leaf, iu, nu, proof, &roots[n]), Ok(()));
            // The proof of (i, n) offered for other indices and every tree size, with that
            // size's honest root (what a client holding that size's signed checkpoint
            // uses): accepted only where it is the honest proof for the claim.
            for n2 in 1..=N {
                for i2 in [0, i.saturating_sub(1), i, i + 1, n2 - 1] {
                    if i2 >= n2 || (i2, n2) == (i, n) {
                        continue;
                    }
                    let ok = verify_inclusion(&leaves[i2], i2 as u64, n2 as u64, proof, &roots[n2])
                        .is_ok();
                    assert_eq!(
                        ok,
                        proofs[n2][i2] == *proof,
                        "proof of ({i}, {n}) offered as ({i2}, {n2})"
                    );
                    rejected += usize::from(!ok);
                }
            }
            // The valid proof with a wrong leaf.
            let other = rng.gen_range(0..N);
            if other != i {
                assert!(verify_inclusion(&leaves[other], iu, nu, proof, &roots[n]).is_err());
                rejected += 1;
            }
            // One flipped bit anywhere, one hash too few or too many.
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let k = rng.gen_range(0..bad.len());
                bad[k][rng.gen_range(0..32)] ^= 1 << rng.gen_range(0..8);
                assert!(verify_inclusion(&leaf, iu, nu, &bad, &roots[n]).is_err());
                assert!(verify_inclusion(&leaf, iu, nu, &proof[1..], &roots[n]).is_err());
                rejected += 2;
            }
            let mut longer = proof.clone();
            longer.push(rng.gen());
            assert!(verify_inclusion(&leaf, iu, nu, &longer, &roots[n]).is_err());
            // The root of another log of the same size.
            assert!(verify_inclusion(&leaf, iu, nu, proof, &root(&others[..n])).is_err());
            rejected += 2;
        }
    }
    assert!(
        rejected > 10_000,
        "only {rejected} forged proofs were tried"
    );
}

#[test]
fn ghsa_672p_consistency_proofs_bind_both_sizes_and_roots() {
    const N: usize = 40;
    let leaves = test_leaves(N);
    let roots: Vec<Hash> = (0..=N).map(|n| root(&leaves[..n])).collect();
    // A fork that rewrote record 11.
    const FORKED: u64 = 11;
    let forked = {
        let mut l = leaves.clone();
        l[FORKED as usize] = leaf_hash(b"forged");
        l
    };
    for n in 1..=N as u64 {
        for m in 1..=n {
            let proof = consistency_proof(m, n, &leaves).unwrap();
            let (rm, rn) = (&roots[m as usize], &roots[n as usize]);
            assert_eq!(verify_consistency(m, n, rm, rn, &proof), Ok(()));
            for (m2, n2) in [(m - 1, n), (m + 1, n), (m, n - 1), (m, n + 1), (n, m)] {
                if m2 > N as u64 || n2 > N as u64 || m2 > n2 || (m2, n2) == (m, n) {
                    continue;
                }
                let honest = consistency_proof(m2, n2, &leaves).unwrap();
                let ok =
                    verify_consistency(m2, n2, &roots[m2 as usize], &roots[n2 as usize], &proof)
                        .is_ok();
                assert_eq!(
                    ok,
                    honest == proof,
                    "proof of {m}->{n} offered as {m2}->{n2}"
                );
            }
            // The fork's root with the honest proof, or with the fork's own proof: rejected
            // whenever the fork rewrote a record the old tree covers. (A record at or above
            // `m` may differ: that is a different extension, which only a later checkpoint
            // of the honest log can expose.)
            let fork_root = root(&forked[..n as usize]);
            if FORKED < n {
                assert!(verify_consistency(m, n, rm, &fork_root, &proof).is_err());
            }
            if FORKED < m {
                let fork_proof = consistency_proof(m, n, &forked).unwrap();
                assert!(verify_consistency(m, n, rm, &fork_root, &fork_proof).is_err());
            }
        }
    }
}

/// A proof bundle as a client would check it: a checkpoint signed by the pinned key, the
/// consistency proof from the client's trusted checkpoint to it, and the inclusion proof of a
/// record under it, all against the one size and root the signed checkpoint states.
fn check_bundle(
    verifier_key: &str,
    trusted: (u64, Hash),
    note: &str,
    consistency: &[Hash],
    record: &[u8],
    index: u64,
    inclusion: &[Hash],
) -> bool {
    let Ok(cp) = open_checkpoint(note, Some(verifier_key)) else {
        return false;
    };
    verify_consistency(trusted.0, cp.size, &trusted.1, &cp.root, consistency).is_ok()
        && verify_inclusion(&leaf_hash(record), index, cp.size, inclusion, &cp.root).is_ok()
}

#[test]
fn ghsa_672p_bundles_mixing_two_trees_are_rejected() {
    let log = Signer::generate("example.test/log").unwrap();
    let key = log.verifier_key();
    let records: Vec<Vec<u8>> = (0..33)
        .map(|i| format!("record {i}").into_bytes())
        .collect();
    let leaves: Vec<Hash> = records.iter().map(|r| leaf_hash(r)).collect();
    // The malicious server's fork: record 5 rewritten. The client trusts a size above 5.
    const FORKED: u64 = 5;
    let mut forged_records = records.clone();
    forged_records[FORKED as usize] = b"record 5, rewritten".to_vec();
    let forged: Vec<Hash> = forged_records.iter().map(|r| leaf_hash(r)).collect();
    let mut rng = StdRng::seed_from_u64(master_seed() ^ 0x6d72);
    let mut tried = 0;
    for _ in 0..400 {
        let m = rng.gen_range(FORKED + 1..=20);
        let n = rng.gen_range(21..=33u64);
        let i = rng.gen_range(0..n);
        let trusted = (m, root(&leaves[..m as usize]));
        let honest_note = log
            .sign_checkpoint(n, &root(&leaves[..n as usize]))
            .unwrap();
        let cons = consistency_proof(m, n, &leaves).unwrap();
        let incl = inclusion_proof(i, n, &leaves).unwrap();
        let rec = &records[i as usize];
        assert!(check_bundle(
            &key,
            trusted,
            &honest_note,
            &cons,
            rec,
            i,
            &incl
        ));

        // The fork, signed by the log (a malicious operator), with its own valid proofs: the
        // consistency proof from the client's trusted state must fail.
        let fork_note = log
            .sign_checkpoint(n, &root(&forged[..n as usize]))
            .unwrap();
        let fork_cons = consistency_proof(m, n, &forged).unwrap();
        let fork_incl = inclusion_proof(FORKED, n, &forged).unwrap();
        let honest_incl = inclusion_proof(FORKED, n, &leaves).unwrap();
        let fake = &forged_records[FORKED as usize];
        // Each part valid somewhere, mixed: fork checkpoint with honest consistency proof,
        // honest checkpoint with the fork's inclusion proof, and so on.
        let mixes: [(&str, &[Hash], &[Hash]); 4] = [
            (&fork_note, &cons, &fork_incl),
            (&fork_note, &fork_cons, &fork_incl),
            (&honest_note, &cons, &fork_incl),
            (&honest_note, &cons, &honest_incl),
        ];
        for (k, (note, c, p)) in mixes.iter().enumerate() {
            assert!(
                !check_bundle(&key, trusted, note, c, fake, FORKED, p),
                "mix {k} accepted (m={m} n={n})"
            );
            tried += 1;
        }
        // A valid inclusion proof for another tree size, under the honest checkpoint.
        let n2 = rng.gen_range(i + 1..=33);
        if n2 != n {
            let p2 = inclusion_proof(i, n2, &leaves).unwrap();
            assert!(!check_bundle(
                &key,
                trusted,
                &honest_note,
                &cons,
                rec,
                i,
                &p2
            ));
            tried += 1;
        }
        // The checkpoint's size edited to fit another proof: the signature fails.
        let resized = honest_note.replacen(&format!("\n{n}\n"), &format!("\n{}\n", n + 1), 1);
        let p3 = inclusion_proof(i, n + 1, &leaves[..]).ok();
        if let Some(p3) = p3 {
            let c3 = consistency_proof(m, n + 1, &leaves).unwrap();
            assert!(!check_bundle(&key, trusted, &resized, &c3, rec, i, &p3));
            tried += 1;
        }
    }
    assert!(tried >= 1600);
}
