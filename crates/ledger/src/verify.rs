//! The offline verifier.
//!
//! It reads a ledger directory without writing to it and reports every fault it can locate:
//! altered records, broken links, gaps, duplicates, reordering, second geneses, malformed lines,
//! torn tails, missing and foreign segments; with the auditor's keys also bad or unknown
//! checkpoint signatures, bad MACs, epoch-key misuse, truncation below a checkpoint, forks and
//! unsealed tails; with witness keys also rollbacks and forks that a witness saw through (see
//! [`COSIGNATURES_FILE`]). Segments are read one at a time (memory is bounded by the segment size) and
//! lines are parsed and hashed on all cores; only the link checks run in order.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use kling_audit_merkle::{leaf_hash, Frontier, Hash};
use kling_audit_note::CosignatureVerifier;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::epoch::EpochKey;
use crate::record::{
    mac_matches, mac_state, parse_line, MacState, GENESIS_PREV, HASH_SUFFIX_LEN, MAC_SUFFIX_LEN,
};
use crate::segment::{list_segments, SegmentFile};
use crate::sign::{open_checkpoint, parse_checkpoint_note, CheckpointBody};

/// The longest time one epoch may span, by record timestamps. Writers use at most 60 s.
pub const MAX_EPOCH_SPAN_SECS: i64 = 61;
/// The most records one epoch may hold. Writers use at most this many.
pub const MAX_EPOCH_RECORDS: u64 = 1_000_000;
/// Faults kept in the report; later ones are only counted.
pub const DEFAULT_MAX_FAULTS: usize = 1000;

/// The kind of a fault. Stable names; documented in docs/format.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    AlteredRecord,
    BrokenLink,
    Gap,
    Duplicate,
    Reordered,
    SecondGenesis,
    MalformedLine,
    TornTail,
    MissingSegment,
    ForeignSegment,
    ClockRegression,
    BadMac,
    EpochKeyMismatch,
    BadCheckpoint,
    BadSignature,
    UnknownKey,
    CheckpointMismatch,
    /// A checkpoint line repeats or goes below the one before it in `checkpoints.jsonl`.
    CheckpointOrder,
    Truncated,
    Forked,
    UnsealedTail,
    /// A witness key was given but no checkpoint in the directory carries its cosignature.
    Unwitnessed,
}

impl FaultKind {
    /// The upper-case code used in text output.
    pub fn code(self) -> String {
        let json = serde_json::to_string(&self).unwrap_or_default();
        json.trim_matches('"').to_ascii_uppercase()
    }
}

/// One located finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub segment: Option<String>,
    pub line: Option<u64>,
    pub seq: Option<u64>,
    pub message: String,
}

/// What was checked about checkpoints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointSummary {
    pub count: usize,
    pub largest_size: u64,
    pub signatures_checked: bool,
    pub trusted_size: Option<u64>,
    /// The largest checkpoint size cosigned by one of the given witness keys; `None` when no
    /// witness key was given or none cosigned.
    pub witnessed_size: Option<u64>,
}

/// The verifier's result. Serialized as the stable JSON schema of `verify --format json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub intact: bool,
    /// Records of the chain as rebuilt: a repeated or stray line is reported, not counted.
    pub records: u64,
    pub segments: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Hash of the last record, hex.
    pub head: Option<String>,
    /// RFC 6962 root over the well-formed records of the rebuilt chain, in `seq` order, hex.
    pub root: String,
    pub checkpoints: CheckpointSummary,
    pub macs_checked: bool,
    pub faults: Vec<Fault>,
    pub faults_total: u64,
    pub warnings: Vec<String>,
    /// Two validly signed, inconsistent checkpoints, when found.
    pub equivocation: Option<Equivocation>,
}

/// Portable proof that the log signed two inconsistent views.
#[derive(Debug, Clone, Serialize)]
pub struct Equivocation {
    pub origin: String,
    pub size: u64,
    pub note_a: String,
    pub note_b: String,
}

/// Progress callback: bytes read so far, total bytes.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// What to verify and with which trust roots.
#[derive(Clone, Default)]
pub struct VerifyOptions {
    /// The auditor's pinned checkpoint verifier key, `<name>+<id>+<base64>`.
    pub verifier_key: Option<String>,
    /// The epoch-0 MAC key.
    pub mac_root: Option<[u8; 32]>,
    /// A signed checkpoint the auditor kept from earlier.
    pub trusted_checkpoint: Option<String>,
    /// The size and root of the newest checkpoint the writer's keys signed, as the keys
    /// directory records it (`signed-head`): a writer refuses a ledger rolled back behind it,
    /// and so does the verifier.
    pub signed_head: Option<(u64, Hash)>,
    pub max_faults: Option<usize>,
    pub progress: Option<Progress>,
    /// Witness cosigner verifier keys, `<name>+<id>+<base64>`; each must have cosigned at least
    /// one checkpoint in [`COSIGNATURES_FILE`]. Requires `verifier_key`.
    pub witness_keys: Vec<String>,
}

/// Cosigned checkpoints kept beside the segments, one JSON object per line (see
/// [`StoredCosignature`]); written by the witness pusher, read by the verifier.
pub const COSIGNATURES_FILE: &str = "cosignatures.jsonl";

/// One line of [`COSIGNATURES_FILE`]: a checkpoint the log signed, with one witness's
/// cosignature line added to its note. `witness`, `size` and `root` are for people and tools;
/// the verifier trusts only what the note's signatures prove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCosignature {
    /// The witness's key name.
    pub witness: String,
    pub size: u64,
    /// Standard base64 of the RFC 6962 root, as in the checkpoint text.
    pub root: String,
    /// The signed checkpoint note including the witness's cosignature line.
    pub note: String,
}

/// Why verification could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no ledger directory at {0}; check --dir (or KLING_AUDIT_DIR), or create a ledger with `kling-audit init`")]
    NoDirectory(PathBuf),
    #[error("{0} is a file, not a directory; check --dir (or KLING_AUDIT_DIR): it must name the ledger directory")]
    NotADirectory(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the trusted checkpoint is unusable: {0}")]
    TrustedCheckpoint(String),
    #[error("a trusted checkpoint can only be checked with the verifier key (--key)")]
    TrustedNeedsKey,
    #[error("the verifier key is malformed ({0}); it looks like <origin>+<8 hex digits>+<base64>, as `kling-audit init` printed it")]
    BadVerifierKey(String),
    #[error("witness cosignatures can only be checked with the verifier key (--key)")]
    WitnessNeedsKey,
    #[error("witness key {index} is not a cosigner verifier key: {reason}")]
    WitnessKey { index: usize, reason: String },
}

struct Faults {
    list: Vec<Fault>,
    total: u64,
    max: usize,
}

impl Faults {
    fn push(
        &mut self,
        kind: FaultKind,
        seg: Option<&str>,
        line: Option<u64>,
        seq: Option<u64>,
        message: String,
    ) {
        self.push_at(None, kind, seg, line, seq, message);
    }

    /// Counts a fault and keeps it right after the kept fault `after` (else at the end), when
    /// it falls within the first `max` kept; returns where it was kept.
    fn push_at(
        &mut self,
        after: Option<usize>,
        kind: FaultKind,
        seg: Option<&str>,
        line: Option<u64>,
        seq: Option<u64>,
        message: String,
    ) -> Option<usize> {
        self.total += 1;
        let at = after
            .map_or(self.list.len(), |i| i + 1)
            .min(self.list.len());
        if at >= self.max {
            return None;
        }
        self.list.insert(
            at,
            Fault {
                kind,
                segment: seg.map(str::to_owned),
                line,
                seq,
                message,
            },
        );
        // The fault it displaced from the list is still counted in `total`.
        self.list.truncate(self.max);
        Some(at)
    }
}

/// A run of consecutive records whose MAC fails. Rewriting one record without the key and
/// rehashing the chain after it changes every later record's `prev`, so every later MAC fails
/// too: the run is reported as its first record, the likely point of tampering, and one fault
/// that sums up the rest.
struct BadMacRun {
    /// Where the first record's fault was kept in the list, if it was.
    first_fault: Option<usize>,
    first_seq: u64,
    records: u64,
    /// The second record of the run, where the summing-up fault points.
    second: Option<(String, u64, u64)>,
    /// The last record of the run: segment, line and seq.
    last: (String, u64, u64),
}

impl BadMacRun {
    /// Rewords the first record's fault and adds the summing-up one, when the run has more
    /// than one record.
    fn report(self, faults: &mut Faults) {
        let Some((seg, line, seq)) = &self.second else {
            return;
        };
        let later = self.records - 1;
        if let Some(f) = self.first_fault.and_then(|i| faults.list.get_mut(i)) {
            f.message.push_str(&format!(
                "; the first of {} records in a row whose MAC fails: the likely point of \
                 tampering",
                self.records
            ));
        }
        let (last_seg, last_line, last_seq) = &self.last;
        let to = if last_seg == seg {
            format!("line {last_line}")
        } else {
            format!("segment {last_seg} line {last_line}")
        };
        let msg = format!(
            "and {} (seq {seq}..={last_seq}, to {to}) fail their MAC too. A record rewritten \
             without the key, with the hash chain recomputed after it, makes every later MAC \
             fail: seq {} is where to look",
            crate::count(later, "later record"),
            self.first_seq
        );
        faults.push_at(
            self.first_fault,
            FaultKind::BadMac,
            Some(seg),
            Some(*line),
            Some(*seq),
            msg,
        );
    }
}

/// `,"mac":"…","hash":"…"}`: the bytes after the MAC input of a well-formed line.
const RECORD_TAIL_LEN: usize = MAC_SUFFIX_LEN + HASH_SUFFIX_LEN;

struct Parsed {
    seq: u64,
    prev: Hash,
    hash: Hash,
    leaf: Hash,
    ts: Ts,
    epoch: u64,
    /// The MAC written in the line.
    stored_mac: Hash,
    /// Whether it verified, when a key was given.
    mac: Option<bool>,
    /// For an epoch seal, the epoch its details name.
    seal: Option<u64>,
}

/// The `type` of the record that closes an epoch.
pub const EPOCH_SEAL_TYPE: &str = "ledger.epoch_end";

/// An epoch may skip at most this many numbers between two records before the verifier stops
/// deriving keys for it (a forged epoch of 2^63 would otherwise make it hash forever).
pub const MAX_EPOCH_JUMP: u64 = 1;

/// Most epoch keys derived between two records of one ledger.
const MAX_KEY_STEPS_BETWEEN_RECORDS: u64 = 1024;
/// Most epoch keys derived to reach the first record (a ledger whose early segments were
/// archived starts at a later epoch).
const MAX_KEY_STEPS_AT_START: u64 = 10_000_000;

/// Whether a record is an epoch seal.
pub fn is_epoch_seal(v: &crate::record::RecordView<'_>) -> bool {
    v.kind.get().len() == EPOCH_SEAL_TYPE.len() + 2
        && v.kind.get()[1..].starts_with(EPOCH_SEAL_TYPE)
}

/// The epoch a seal names; `u64::MAX` when its details are malformed.
fn seal_epoch(v: &crate::record::RecordView<'_>) -> u64 {
    seal_epoch_of(v.details.get().as_bytes())
}

/// [`seal_epoch`] of raw `details` JSON.
fn seal_epoch_of(details: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Seal {
        epoch: u64,
    }
    serde_json::from_slice::<Seal>(details).map_or(u64::MAX, |s| s.epoch)
}

/// A record timestamp, kept inline: `YYYY-MM-DDTHH:MM:SS.ffffffZ` orders as bytes.
type Ts = [u8; 27];

fn ts_of(b: &[u8]) -> Ts {
    let mut t = [0u8; 27];
    let n = b.len().min(27);
    t[..n].copy_from_slice(&b[..n]);
    t
}

fn ts_str(t: &Ts) -> &str {
    std::str::from_utf8(t).unwrap_or("?")
}

/// Whether `dir` can be a ledger directory: it exists and is a directory. Commands that read a
/// ledger check this first, so that a mistyped --dir is named as such.
pub fn check_ledger_dir(dir: &Path) -> Result<(), VerifyError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(VerifyError::NotADirectory(dir.to_path_buf())),
        Err(_) => Err(VerifyError::NoDirectory(dir.to_path_buf())),
    }
}

/// Verifies the ledger in `dir`.
pub fn verify(dir: &Path, opts: &VerifyOptions) -> Result<Report, VerifyError> {
    check_ledger_dir(dir)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VerifyError::Io { path, source }
    };
    if let Some(key) = &opts.verifier_key {
        kling_audit_note::Verifier::from_encoded(key.trim())
            .map_err(|e| VerifyError::BadVerifierKey(e.to_string()))?;
    }
    let mut faults = Faults {
        list: Vec::new(),
        total: 0,
        max: opts.max_faults.unwrap_or(DEFAULT_MAX_FAULTS),
    };
    let mut warnings = Vec::new();
    // Read before the segments are listed: a writer that stops while they are read has still
    // been writing into them.
    let live = writer_active(dir);
    // Checkpoints are read before the segments are listed too: a live writer checkpoints only
    // records already in its segments, so every checkpoint read here covers records that the
    // listing below finds. Read after it, a checkpoint could cover records of a segment made
    // in between.
    let checkpoints_path = dir.join(crate::cpstore::CHECKPOINTS_FILE);
    let checkpoints_missing = matches!(
        fs::symlink_metadata(&checkpoints_path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    );
    let mut log = crate::cpstore::read_log(dir).map_err(io(dir))?;
    if !log.is_empty() && !log.ends_with(b"\n") && (live || writer_active(dir)) {
        // A live writer may be appending a checkpoint: a read can end inside its line (a write
        // is not atomic to a reader once it crosses a page). That checkpoint is not there yet.
        log.truncate(log.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1));
    }
    let (stored, bad_lines) = crate::cpstore::parse_numbered_lines(&log);
    let (mut segments, strays) = list_segments(dir).map_err(io(dir))?;
    if let Some(newest) = segments.last().map(|s| s.first_seq) {
        if live || writer_active(dir) {
            // A listing is no snapshot: a live writer may create segments while it runs, and
            // it can return one without those created just before it (ext4 lists in hash
            // order). A second listing holds every segment that existed when it began: all
            // up to the newest of the first, since the writer creates them in order.
            let (again, _) = list_segments(dir).map_err(io(dir))?;
            segments = again
                .into_iter()
                .filter(|s| s.first_seq <= newest)
                .collect();
        }
    }
    for stray in &strays {
        let name = stray.file_name().map(|n| n.to_string_lossy().into_owned());
        faults.push(
            FaultKind::ForeignSegment,
            name.as_deref(),
            None,
            None,
            "file name is not a segment name of this ledger".into(),
        );
    }

    // Checkpoints: signatures first, so only trusted roots are compared with records.
    let checkpoint_lines = stored.len() + bad_lines.len();
    for b in bad_lines {
        faults.push(
            FaultKind::BadCheckpoint,
            Some(crate::cpstore::CHECKPOINTS_FILE),
            Some(b.line as u64),
            None,
            format!("unreadable checkpoint line: {}", b.reason),
        );
    }
    let mut expected: BTreeMap<u64, (Hash, String)> = BTreeMap::new();
    // The line each size was first signed on, for findings that name both lines.
    let mut first_line: BTreeMap<u64, usize> = BTreeMap::new();
    // The previous checkpoint in file order, as (line, size).
    let mut previous: Option<(usize, u64)> = None;
    let mut summary = CheckpointSummary {
        signatures_checked: opts.verifier_key.is_some(),
        ..Default::default()
    };
    let mut equivocation = None;
    for (n, cp) in &stored {
        let n = *n;
        let line = Some(n as u64);
        let body = match open_checkpoint(&cp.note, opts.verifier_key.as_deref()) {
            Ok(body) => body,
            Err(e) => {
                faults.push(
                    e.kind,
                    Some(crate::cpstore::CHECKPOINTS_FILE),
                    line,
                    None,
                    e.message,
                );
                continue;
            }
        };
        if body.size != cp.size {
            faults.push(
                FaultKind::BadCheckpoint,
                Some(crate::cpstore::CHECKPOINTS_FILE),
                line,
                None,
                format!("line says size {} but the note says {}", cp.size, body.size),
            );
            continue;
        }
        summary.count += 1;
        summary.largest_size = summary.largest_size.max(body.size);
        let size = body.size;
        // A writer signs only sizes above the largest already in the file, this process's
        // or an earlier one's (a torn last line is cut before it reads them): so along the
        // file sizes strictly increase, and no size is signed twice.
        if let Some((root, note)) = expected.get(&size) {
            let first = first_line.get(&size).copied().unwrap_or(0);
            if *root != body.root {
                faults.push(
                    FaultKind::Forked,
                    Some(crate::cpstore::CHECKPOINTS_FILE),
                    line,
                    None,
                    format!(
                        "two checkpoints of size {size} have different roots: line {first} \
                         signs root {} and line {n} signs root {}; the log was forked",
                        hex::encode(root),
                        hex::encode(body.root)
                    ),
                );
                if opts.verifier_key.is_some() && equivocation.is_none() {
                    equivocation = Some(Equivocation {
                        origin: body.origin.clone(),
                        size,
                        note_a: note.clone(),
                        note_b: cp.note.clone(),
                    });
                }
            } else {
                faults.push(
                    FaultKind::CheckpointOrder,
                    Some(crate::cpstore::CHECKPOINTS_FILE),
                    line,
                    None,
                    format!(
                        "line {n} repeats the checkpoint of size {size} on line {first}: a \
                         writer signs each size once, so the line was copied"
                    ),
                );
            }
            continue;
        }
        if let Some((prev_line, prev_size)) = previous.filter(|(_, s)| size < *s) {
            faults.push(
                FaultKind::CheckpointOrder,
                Some(crate::cpstore::CHECKPOINTS_FILE),
                line,
                None,
                format!(
                    "line {n} has size {size}, below size {prev_size} on line {prev_line}; \
                     expected a size above {prev_size}: a writer appends checkpoints in \
                     increasing size, so lines were moved or inserted"
                ),
            );
        }
        previous = Some((n, size));
        first_line.insert(size, n);
        expected.insert(size, (body.root, cp.note.clone()));
    }
    let mut trusted: Option<(CheckpointBody, String)> = None;
    if let Some(note) = &opts.trusted_checkpoint {
        let key = opts
            .verifier_key
            .as_deref()
            .ok_or(VerifyError::TrustedNeedsKey)?;
        let body = open_checkpoint(note, Some(key))
            .map_err(|e| VerifyError::TrustedCheckpoint(e.message))?;
        summary.trusted_size = Some(body.size);
        trusted = Some((body, note.clone()));
    }
    let witnessed = if opts.witness_keys.is_empty() {
        BTreeMap::new()
    } else {
        let key = opts
            .verifier_key
            .as_deref()
            .ok_or(VerifyError::WitnessNeedsKey)?;
        let witnesses = parse_witness_keys(&opts.witness_keys)?;
        let w = read_cosignatures(dir, key, &witnesses, &expected, &mut faults)?;
        if equivocation.is_none() {
            equivocation = w.equivocation;
        }
        w.checkpoints
    };
    summary.witnessed_size = witnessed.keys().next_back().copied();

    let total_bytes: u64 = segments
        .iter()
        .filter_map(|s| fs::metadata(&s.path).ok())
        .map(|m| m.len())
        .sum();
    let mut done_bytes = 0u64;
    let mut st = ChainState {
        expected_seq: 0,
        expected_prev: GENESIS_PREV,
        records: 0,
        first_seq: None,
        last_seq: None,
        last_ts: [0u8; 27],
        frontier: Frontier::new(),
        epoch: None,
        epoch_first_secs: None,
        secs_cache: ([0u8; 19], 0),
        epoch_count: 0,
        mac_key: opts.mac_root.map(EpochKey::root),
        checkpoint_mismatches: 0,
        trusted: trusted.as_ref().map(|(b, _)| (b.size, b.root)),
        trusted_root_ok: None,
        signed_head: opts.signed_head,
        signed_head_ok: None,
        day_fault_segment: None,
        sealed: None,
        witnessed: witnessed
            .iter()
            .map(|(size, w)| (*size, (w.root, w.witness.clone())))
            .collect(),
        witness_mismatches: 0,
        bad_macs: None,
    };
    // Segments are read one at a time into one buffer. Refilling pages already mapped costs a
    // third of filling new ones (the kernel's page faults), which is more than reading the
    // next segment while this one is checked would save on two cores.
    let mut data = Vec::new();
    for (si, seg) in segments.iter().enumerate() {
        crate::readbuf::read_into(&seg.path, &mut data).map_err(|source| VerifyError::Io {
            path: seg.path.clone(),
            source,
        })?;
        let last = match si + 1 == segments.len() {
            false => Newest::No,
            true if live => Newest::BeingWritten,
            true => Newest::AtRest,
        };
        check_segment(seg, &data, last, &mut st, &expected, &mut faults);
        done_bytes += data.len() as u64;
        if let Some(p) = &opts.progress {
            p(done_bytes, total_bytes);
        }
    }
    if let Some(run) = st.bad_macs.take() {
        run.report(&mut faults);
    }

    let size = st.frontier.size();
    if summary.largest_size > size {
        faults.push(
            FaultKind::Truncated,
            None,
            None,
            Some(size),
            format!(
                "the ledger holds {} but a signed checkpoint covers {}",
                crate::count(size, "record"),
                summary.largest_size
            ),
        );
    }
    if let Some((&wsize, w)) = witnessed.iter().next_back() {
        if wsize > size {
            faults.push(
                FaultKind::Truncated,
                None,
                None,
                Some(size),
                format!(
                    "the ledger holds {} but witness {} cosigned a checkpoint of size \
                     {wsize}: records the witness saw are gone (a rollback)",
                    crate::count(size, "record"),
                    w.witness
                ),
            );
        }
    }
    if let Some((body, note)) = &trusted {
        if body.size > size {
            faults.push(
                FaultKind::Truncated,
                None,
                None,
                Some(size),
                format!(
                    "the ledger holds {} but the trusted checkpoint covers {}",
                    crate::count(size, "record"),
                    body.size
                ),
            );
        } else if let Some((root, own)) = expected.get(&body.size) {
            if *root != body.root {
                faults.push(FaultKind::Forked, None, None, Some(body.size), format!("the trusted checkpoint of size {} disagrees with the ledger's own signed checkpoint", body.size));
                equivocation = Some(Equivocation {
                    origin: body.origin.clone(),
                    size: body.size,
                    note_a: note.clone(),
                    note_b: own.clone(),
                });
            }
        }
        let matched = if body.size == 0 {
            true
        } else {
            st.trusted_root_ok == Some(true)
        };
        if body.size <= size && !matched {
            faults.push(
                FaultKind::Forked,
                None,
                None,
                Some(body.size),
                format!(
                    "the records up to size {} do not have the trusted checkpoint's root",
                    body.size
                ),
            );
        }
    }
    // Said only where the checkpoints in the directory do not say it already.
    if let Some((hsize, _)) = st.signed_head.filter(|(h, _)| !expected.contains_key(h)) {
        if hsize > size {
            faults.push(
                FaultKind::Truncated,
                None,
                None,
                Some(size),
                format!(
                    "the ledger holds {} but its keys signed a checkpoint of size \
                     {hsize} (the keys directory's signed-head): records are gone, or the ledger \
                     was rolled back to an older copy",
                    crate::count(size, "record")
                ),
            );
        } else if hsize > 0 && st.signed_head_ok != Some(true) {
            faults.push(
                FaultKind::Forked,
                None,
                None,
                Some(hsize),
                format!(
                    "the records up to size {hsize} do not have the root its keys signed (the \
                     keys directory's signed-head)"
                ),
            );
        }
    }
    if size > summary.largest_size {
        let largest = summary.largest_size;
        let unsealed = size - largest;
        let msg = format!(
            "{} after the last signed checkpoint (size {largest})",
            crate::count(unsealed, "record")
        );
        let tail_segment = segments.last().map(|s| s.name.as_str());
        let file = crate::cpstore::CHECKPOINTS_FILE;
        // The writer creates the checkpoint file before its first record, and appends and
        // syncs each checkpoint before it records it as the keys directory's signed-head: so
        // a missing file, or a signed-head beyond every checkpoint in it, is never what a
        // crash leaves.
        let signed_beyond = opts.signed_head.map(|(h, _)| h).filter(|h| *h > largest);
        let lost = if checkpoints_missing {
            let head = signed_beyond.map_or(String::new(), |h| {
                format!(
                    "; the keys directory's signed-head shows that a checkpoint of size {h} was \
                     signed"
                )
            });
            Some(format!(
                "{file} is missing{head}. No crash explains this: a writer creates that file \
                 before it writes its first record and never removes it, so it was deleted (or \
                 left behind when the ledger was copied)"
            ))
        } else {
            signed_beyond.map(|h| {
                format!(
                    "the keys directory's signed-head shows that a checkpoint of size {h} was \
                     signed, but {file} holds none beyond size {largest}. No crash explains \
                     this: a writer syncs each checkpoint into that file before it records the \
                     signed-head, so signed checkpoints were removed from it"
                )
            })
        };
        if let Some(why) = lost {
            let msg = format!("{msg}: {why}");
            // The signed-head is the operator's own record, so it counts without --key, as it
            // does for truncation.
            if opts.verifier_key.is_some() || signed_beyond.is_some() {
                faults.push(
                    FaultKind::UnsealedTail,
                    tail_segment,
                    None,
                    Some(largest),
                    msg,
                );
            } else {
                warnings.push(msg);
            }
        } else if live || writer_active(dir) {
            warnings.push(format!(
                "{msg}; a writer holds the ledger, and seals within a second"
            ));
        } else if opts.verifier_key.is_some() {
            let why = if checkpoint_lines == 0 {
                format!(
                    "{file} holds no checkpoint at all. A crash explains this only if every \
                     writer of this ledger stopped before it signed its first checkpoint (about \
                     half a second after it starts, by default); the next writer (`kling-audit \
                     log`, the gateway) then signs them when it opens the ledger. A crash never \
                     removes a checkpoint that was signed: if any was, {file} was emptied"
                )
            } else {
                "no signature covers them yet. After a crash this is expected: the next writer \
                 (`kling-audit log`, the gateway) signs them when it opens the ledger; if none \
                 crashed, records were appended without the keys"
                    .to_owned()
            };
            faults.push(
                FaultKind::UnsealedTail,
                tail_segment,
                None,
                Some(largest),
                format!("{msg}: {why}"),
            );
        } else {
            warnings.push(msg);
        }
    }
    if opts.verifier_key.is_none() {
        warnings.push("checkpoint signatures were not checked: pass the verifier key (--key) to detect rewritten histories".into());
    }
    if opts.mac_root.is_none() {
        warnings.push(
            "record MACs were not checked: pass the MAC root key (--mac-key) to check them".into(),
        );
    }
    if size == 0 && summary.largest_size == 0 {
        if live {
            warnings.push("the ledger holds no records yet; a writer holds it".into());
        } else {
            // An emptied or wiped directory must never pass as an intact ledger. `init` starts
            // every ledger with a record, so an intact one is never empty.
            faults.push(
                FaultKind::Truncated,
                None,
                None,
                None,
                "the directory holds no records and no signed checkpoint: a ledger starts with a \
                 record (`init` writes `ledger.init`), so this one was wiped or never written"
                    .into(),
            );
        }
    }
    Ok(Report {
        intact: faults.total == 0,
        records: st.records,
        segments: segments.len(),
        first_seq: st.first_seq,
        last_seq: st.last_seq,
        head: st.last_seq.map(|_| hex::encode(st.expected_prev)),
        root: hex::encode(st.frontier.root()),
        checkpoints: summary,
        macs_checked: opts.mac_root.is_some(),
        faults: faults.list,
        faults_total: faults.total,
        warnings,
        equivocation,
    })
}

/// Whether a writer holds the ledger's lock right now (a shared lock is refused).
fn writer_active(dir: &Path) -> bool {
    let Ok(file) = fs::File::open(dir.join(crate::lock::LOCK_FILE)) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

struct ChainState {
    expected_seq: u64,
    expected_prev: Hash,
    records: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    last_ts: Ts,
    frontier: Frontier,
    epoch: Option<u64>,
    /// Seconds of the epoch's first record.
    epoch_first_secs: Option<i64>,
    /// The last parsed `YYYY-MM-DDTHH:MM:SS` prefix and its seconds, to parse each second once.
    secs_cache: ([u8; 19], i64),
    epoch_count: u64,
    mac_key: Option<EpochKey>,
    checkpoint_mismatches: u64,
    /// The trusted checkpoint's size and root, and whether the records matched it.
    trusted: Option<(u64, Hash)>,
    trusted_root_ok: Option<bool>,
    /// The keys directory's signed head, and whether the records matched it.
    signed_head: Option<(u64, Hash)>,
    signed_head_ok: Option<bool>,
    /// The last segment whose name's day disagreed with a record.
    day_fault_segment: Option<String>,
    /// The newest epoch whose seal has been seen.
    sealed: Option<u64>,
    /// Roots cosigned by a given witness, by size, with the witness's name.
    witnessed: BTreeMap<u64, (Hash, String)>,
    witness_mismatches: u64,
    /// The run of failing MACs that the last checked record belongs to.
    bad_macs: Option<BadMacRun>,
}

/// Lines of one batch parsed in parallel.
const BATCH: usize = 1 << 16;

/// Whether a segment is the newest, and whether a writer holds the ledger while it is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Newest {
    No,
    AtRest,
    BeingWritten,
}

fn check_segment(
    seg: &SegmentFile,
    data: &[u8],
    newest: Newest,
    st: &mut ChainState,
    expected: &BTreeMap<u64, (Hash, String)>,
    faults: &mut Faults,
) {
    let name = Some(seg.name.as_str());
    let is_last = newest != Newest::No;
    let data = match newest {
        // Only the newest segment may end in the writer's zero-filled reserve.
        Newest::AtRest => crate::segment::without_reserve(data),
        // A live writer fills the reserve while the file is read, front to back, so a stretch
        // read as zeros may be followed by records written after it was read. The snapshot
        // ends at the first zero byte (no record holds one) and at the last whole line: what
        // follows is still being written.
        Newest::BeingWritten => {
            let written = &data[..memchr::memchr(0, data).unwrap_or(data.len())];
            &written[..memchr::memrchr(b'\n', written).map_or(0, |i| i + 1)]
        }
        Newest::No => data,
    };
    if data.is_empty() {
        if !is_last {
            faults.push(
                FaultKind::MissingSegment,
                name,
                None,
                None,
                "segment is empty".into(),
            );
        }
        return;
    }
    let torn = !data.ends_with(b"\n");
    let (lines, tail) = crate::segment::split_lines(data);
    let mut line_no = 0u64;
    let mut first_in_segment = true;
    let chunks: Vec<&[&[u8]]> = lines.chunks(BATCH).collect();
    // Parsing of the next batch (on all cores) overlaps the in-order checks of this one.
    let mut next = chunks.first().map(|c| parse_chunk(c));
    for (ci, chunk) in chunks.iter().enumerate() {
        let Some(parsed) = next.take() else { break };
        let following = chunks.get(ci + 1);
        let (upcoming, ()) = rayon::join(
            || following.map(|c| parse_chunk(c)),
            || {
                check_chunk(
                    chunk,
                    parsed,
                    seg,
                    st,
                    expected,
                    faults,
                    &mut line_no,
                    &mut first_in_segment,
                )
            },
        );
        next = upcoming;
    }
    if torn || (!tail.is_empty()) {
        let kind = if is_last {
            FaultKind::TornTail
        } else {
            FaultKind::MalformedLine
        };
        faults.push(
            kind,
            name,
            Some(line_no + 1),
            None,
            format!(
                "{} without a final newline",
                crate::count(tail.len() as u64, "byte")
            ),
        );
    }
}

fn parse_chunk(chunk: &[&[u8]]) -> Vec<Result<Parsed, String>> {
    chunk.par_iter().map(|l| parse_one(l)).collect()
}

/// Parses one line: the writer's canonical form by position, anything else (malformed lines
/// included) with the reference parser, which also words the fault.
fn parse_one(l: &[u8]) -> Result<Parsed, String> {
    if let Some(f) = crate::fastline::scan(l) {
        let is_seal = f.kind.len() == EPOCH_SEAL_TYPE.len() + 2
            && f.kind[1..].starts_with(EPOCH_SEAL_TYPE.as_bytes());
        return Ok(Parsed {
            seq: f.seq,
            prev: f.prev,
            hash: f.hash,
            leaf: leaf_hash(f.body),
            ts: ts_of(f.ts),
            epoch: f.epoch,
            stored_mac: f.mac,
            mac: None,
            seal: is_seal.then(|| seal_epoch_of(f.details)),
        });
    }
    parse_line(l).map_err(|e| e.to_string()).map(|v| Parsed {
        seq: v.seq,
        prev: v.prev,
        hash: v.hash,
        leaf: v.leaf,
        ts: ts_of(v.ts.as_bytes()),
        epoch: v.epoch,
        stored_mac: v.mac,
        mac: None,
        seal: is_epoch_seal(&v).then(|| seal_epoch(&v)),
    })
}

/// The in-order checks of one batch: links, sequence, time, epochs, checkpoint roots.
#[allow(clippy::too_many_arguments)]
fn check_chunk(
    chunk: &[&[u8]],
    parsed: Vec<Result<Parsed, String>>,
    seg: &SegmentFile,
    st: &mut ChainState,
    expected: &BTreeMap<u64, (Hash, String)>,
    faults: &mut Faults,
    line_no: &mut u64,
    first_in_segment: &mut bool,
) {
    let name = Some(seg.name.as_str());
    let mut parsed = parsed;
    if st.mac_key.is_some() {
        check_macs(chunk, &mut parsed, st, faults, name, *line_no);
    }
    let mut at = Cursor {
        seg,
        expected,
        first_in_segment,
    };
    let base = *line_no;
    let line_of = |i: usize| base + i as u64 + 1;
    let mut i = 0;
    while i < parsed.len() {
        let line = line_of(i);
        let p = match &parsed[i] {
            Ok(p) => p,
            Err(reason) => {
                faults.push(
                    FaultKind::MalformedLine,
                    name,
                    Some(line),
                    None,
                    reason.clone(),
                );
                i += 1;
                continue;
            }
        };
        // Records that only trade places are one finding, and the chain is checked in seq
        // order through them: reading them in file order would report each as a gap.
        if p.seq > st.expected_seq {
            if let Some(window) = swapped_window(&parsed, i, st.expected_seq) {
                faults.push(
                    FaultKind::Reordered,
                    name,
                    Some(line),
                    Some(p.seq),
                    describe_window(&parsed, i, window, base),
                );
                let mut order: Vec<usize> = (i..i + window).collect();
                order.sort_by_key(|&j| parsed[j].as_ref().map_or(u64::MAX, |q| q.seq));
                for j in order {
                    if let Ok(q) = &parsed[j] {
                        line_checks(q, line_of(j), &at, st, faults);
                        settle(q, line_of(j), Place::Next, &mut at, st, faults);
                    }
                }
                i += window;
                continue;
            }
        }
        line_checks(p, line, &at, st, faults);
        let place = place_of(p, &parsed, i, st, base);
        settle(p, line, place, &mut at, st, faults);
        i += 1;
    }
    *line_no = base + parsed.len() as u64;
}

/// What [`settle`] needs to know about the segment being read.
struct Cursor<'a> {
    seg: &'a SegmentFile,
    expected: &'a BTreeMap<u64, (Hash, String)>,
    first_in_segment: &'a mut bool,
}

/// Where a record stands relative to the chain read so far.
enum Place {
    /// Its `seq` is the one expected next (its `prev` is still to be checked).
    Next,
    /// Records are missing before it.
    Gap,
    /// A repeat of the record just before it.
    Repeat,
    /// A line out of place: the line after it continues the chain as if it were not there.
    /// `copy_of` is the line nearby that holds the same record, if one does.
    Stray {
        copy_of: Option<u64>,
    },
    SecondGenesis,
    /// An earlier `seq`, and the chain goes on from it.
    Back,
}

/// How far the verifier looks around a line for the records it trades places with or copies.
const LOOK_AROUND: usize = 1024;

/// The place of `p`, the record on line `i` of the batch.
fn place_of(
    p: &Parsed,
    parsed: &[Result<Parsed, String>],
    i: usize,
    st: &ChainState,
    base: u64,
) -> Place {
    if p.seq == st.expected_seq {
        return Place::Next;
    }
    // A stray line is only recognised within its batch; at a batch's end it is reported as
    // if the chain went on from it, which is still a fault.
    let next_continues = parsed
        .get(i + 1)
        .and_then(|r| r.as_ref().ok())
        .is_some_and(|q| q.seq == st.expected_seq && q.prev == st.expected_prev);
    let same = |j: &usize| {
        parsed[*j]
            .as_ref()
            .is_ok_and(|q| q.seq == p.seq && q.hash == p.hash)
    };
    if p.seq > st.expected_seq {
        if !next_continues {
            return Place::Gap;
        }
        let later = (i + 1..parsed.len().min(i + 1 + LOOK_AROUND)).find(same);
        return Place::Stray {
            copy_of: later.map(|j| base + j as u64 + 1),
        };
    }
    if st.last_seq == Some(p.seq) && p.hash == st.expected_prev {
        return Place::Repeat;
    }
    if next_continues {
        let earlier = (i.saturating_sub(LOOK_AROUND)..i).rev().find(same);
        return Place::Stray {
            copy_of: earlier.map(|j| base + j as u64 + 1),
        };
    }
    if p.seq == 0 && p.prev == GENESIS_PREV {
        return Place::SecondGenesis;
    }
    Place::Back
}

/// The number of lines from `i` that hold exactly the records `expected..expected + n` in
/// another order (the smallest such `n >= 2`), when line `i` holds a later record than the
/// one expected. `None` when those lines also miss, repeat or add a record, or when the line
/// at `i` is a copy of a record that follows them (a copied line, not a reordering).
fn swapped_window(parsed: &[Result<Parsed, String>], i: usize, expected: u64) -> Option<usize> {
    let mut seen = vec![false; LOOK_AROUND];
    let mut filled = 0usize;
    for (n, r) in parsed.iter().skip(i).take(LOOK_AROUND).enumerate() {
        let offset = r.as_ref().ok()?.seq.checked_sub(expected)?;
        let offset = usize::try_from(offset).ok().filter(|o| *o < LOOK_AROUND)?;
        if std::mem::replace(&mut seen[offset], true) {
            return None;
        }
        while filled < LOOK_AROUND && seen[filled] {
            filled += 1;
        }
        let len = n + 1;
        if len >= 2 && filled == len {
            let first = parsed[i].as_ref().ok()?;
            let copied_later = parsed
                .get(i + len)
                .and_then(|r| r.as_ref().ok())
                .is_some_and(|q| q.seq == first.seq && q.hash == first.hash);
            return (!copied_later).then_some(len);
        }
    }
    None
}

/// The message of a [`swapped_window`] finding: which line holds which record.
fn describe_window(parsed: &[Result<Parsed, String>], i: usize, len: usize, base: u64) -> String {
    let seq_at = |j: usize| parsed[j].as_ref().map_or(0, |q| q.seq);
    let line_at = |j: usize| base + j as u64 + 1;
    if len == 2 {
        return format!(
            "seq {} (line {}) and seq {} (line {}) are in swapped order",
            seq_at(i),
            line_at(i),
            seq_at(i + 1),
            line_at(i + 1)
        );
    }
    let first = (i..i + len).map(seq_at).min().unwrap_or(0);
    let misplaced: Vec<String> = (i..i + len)
        .filter(|&j| seq_at(j) != first + (j - i) as u64)
        .map(|j| format!("seq {} at line {}", seq_at(j), line_at(j)))
        .collect();
    const SHOWN: usize = 8;
    let more = match misplaced.len().saturating_sub(SHOWN) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "lines {}..={} hold seqs {}..={} out of order: {}{more}",
        line_at(i),
        line_at(i + len - 1),
        first,
        first + len as u64 - 1,
        misplaced[..misplaced.len().min(SHOWN)].join(", ")
    )
}

/// Checks of one line that do not depend on its place in the chain.
fn line_checks(p: &Parsed, line: u64, at: &Cursor<'_>, st: &mut ChainState, faults: &mut Faults) {
    let seg = at.seg;
    let name = Some(seg.name.as_str());
    let (line, seq) = (Some(line), Some(p.seq));
    if p.hash != p.leaf {
        faults.push(
            FaultKind::AlteredRecord,
            name,
            line,
            seq,
            format!(
                "stored hash {} but the bytes hash to {}",
                short(&p.hash),
                short(&p.leaf)
            ),
        );
    }
    let day_differs = p.ts[..4] != seg.day.as_bytes()[..4]
        || p.ts[5..7] != seg.day.as_bytes()[4..6]
        || p.ts[8..10] != seg.day.as_bytes()[6..8];
    // One finding per segment is enough to name it.
    if day_differs && st.day_fault_segment.as_deref() != Some(seg.name.as_str()) {
        st.day_fault_segment = Some(seg.name.clone());
        faults.push(
            FaultKind::ForeignSegment,
            name,
            line,
            seq,
            format!(
                "the record's day {} is not the day {} in the segment's name",
                &ts_str(&p.ts)[..10],
                seg.day
            ),
        );
    }
}

/// Reports a record's place in the chain and, unless it is a repeat or a stray line, takes
/// it into the chain: links, time, epochs, and the roots of checkpoints.
fn settle(
    p: &Parsed,
    line: u64,
    place: Place,
    at: &mut Cursor<'_>,
    st: &mut ChainState,
    faults: &mut Faults,
) {
    let seg = at.seg;
    let name = Some(seg.name.as_str());
    let (line, seq) = (Some(line), Some(p.seq));
    let previous = st.expected_seq.saturating_sub(1);
    // A repeated or stray line is reported alone and left out of the chain, so the records
    // around it are checked as if it were not there: it causes no gap, no unsealed tail, no
    // second count.
    match place {
        Place::Repeat => {
            let msg = "the previous record is repeated".to_owned();
            faults.push(FaultKind::Duplicate, name, line, seq, msg);
            return;
        }
        Place::Stray { copy_of } => {
            let (kind, what) = match copy_of {
                Some(l) => (
                    FaultKind::Duplicate,
                    format!("a copy of the record at line {l}"),
                ),
                None => (FaultKind::Reordered, "out of place".to_owned()),
            };
            let order = if p.seq > st.expected_seq {
                format!("appears where seq {} belongs", st.expected_seq)
            } else {
                format!("appears after seq {previous}")
            };
            let msg = format!(
                "seq {} {order}, {what}: the next line continues the chain without it",
                p.seq
            );
            faults.push(kind, name, line, seq, msg);
            return;
        }
        _ => {}
    }
    if *at.first_in_segment && p.seq != seg.first_seq {
        faults.push(
            FaultKind::ForeignSegment,
            name,
            line,
            seq,
            format!(
                "the name says the segment starts at seq {} but its first record is seq {}",
                seg.first_seq, p.seq
            ),
        );
    }
    match place {
        Place::Next => {
            if p.prev != st.expected_prev {
                let kind = if *at.first_in_segment && st.records > 0 {
                    FaultKind::ForeignSegment
                } else {
                    FaultKind::BrokenLink
                };
                faults.push(
                    kind,
                    name,
                    line,
                    seq,
                    format!(
                        "prev is {} but the previous record's hash is {}",
                        short(&p.prev),
                        short(&st.expected_prev)
                    ),
                );
            }
        }
        Place::Gap => {
            let kind = if *at.first_in_segment {
                FaultKind::MissingSegment
            } else {
                FaultKind::Gap
            };
            faults.push(
                kind,
                name,
                line,
                seq,
                format!("records {}..={} are missing", st.expected_seq, p.seq - 1),
            );
        }
        Place::SecondGenesis => {
            let msg = "a second chain starts here".to_owned();
            faults.push(FaultKind::SecondGenesis, name, line, seq, msg);
        }
        Place::Back => {
            let msg = format!("seq {} appears after seq {previous}", p.seq);
            faults.push(FaultKind::Reordered, name, line, seq, msg);
        }
        Place::Repeat | Place::Stray { .. } => {}
    }
    if p.ts < st.last_ts {
        faults.push(
            FaultKind::ClockRegression,
            name,
            line,
            seq,
            format!(
                "ts {} is earlier than the previous record's {}",
                ts_str(&p.ts),
                ts_str(&st.last_ts)
            ),
        );
    }
    check_epoch(p, st, faults, name, line);
    *at.first_in_segment = false;
    st.records += 1;
    st.first_seq.get_or_insert(p.seq);
    st.last_seq = Some(p.seq);
    st.expected_seq = p.seq.saturating_add(1);
    st.expected_prev = p.hash;
    st.last_ts = p.ts;
    st.frontier.push(p.leaf);
    let size = st.frontier.size();
    if let Some((tsize, troot)) = st.trusted {
        if tsize == size {
            st.trusted_root_ok = Some(troot == st.frontier.root());
        }
    }
    if let Some((hsize, hroot)) = st.signed_head {
        if hsize == size {
            st.signed_head_ok = Some(hroot == st.frontier.root());
        }
    }
    if let Some((root, _)) = at.expected.get(&size) {
        if *root != st.frontier.root() {
            st.checkpoint_mismatches += 1;
            if st.checkpoint_mismatches == 1 {
                faults.push(FaultKind::CheckpointMismatch, name, line, seq, format!("the records up to seq {} do not have the root of the signed checkpoint of size {size}", p.seq));
            }
        }
    }
    if let Some((root, witness)) = st.witnessed.get(&size) {
        if *root != st.frontier.root() {
            st.witness_mismatches += 1;
            // One finding per ledger: every later cosigned size differs too.
            if st.witness_mismatches == 1 {
                let msg = format!("the records up to seq {} do not have the root witness {witness} cosigned at size {size}: the history was rewritten after the witness saw it", p.seq);
                faults.push(FaultKind::Forked, name, line, seq, msg);
            }
        }
    }
}

/// A checkpoint cosigned by one of the auditor's witness keys.
struct Witnessed {
    root: Hash,
    /// The first witness whose cosignature verified.
    witness: String,
    note: String,
}

/// What the cosignature file proved.
struct WitnessFindings {
    checkpoints: BTreeMap<u64, Witnessed>,
    equivocation: Option<Equivocation>,
}

fn parse_witness_keys(keys: &[String]) -> Result<Vec<CosignatureVerifier>, VerifyError> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            CosignatureVerifier::from_encoded(k.trim()).map_err(|e| VerifyError::WitnessKey {
                index: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Reads [`COSIGNATURES_FILE`] and keeps the checkpoints that the pinned log key signed and a
/// given witness cosigned. Lines the log did not sign, or whose cosignature by a given witness
/// fails, are faults: only the writer's pusher adds lines to this file. Lines cosigned only by
/// witnesses the auditor did not name are skipped.
fn read_cosignatures(
    dir: &Path,
    log_key: &str,
    witnesses: &[CosignatureVerifier],
    expected: &BTreeMap<u64, (Hash, String)>,
    faults: &mut Faults,
) -> Result<WitnessFindings, VerifyError> {
    let path = dir.join(COSIGNATURES_FILE);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(VerifyError::Io { path, source }),
    };
    let file = Some(COSIGNATURES_FILE);
    let mut seen = vec![false; witnesses.len()];
    let mut found = WitnessFindings {
        checkpoints: BTreeMap::new(),
        equivocation: None,
    };
    for (i, raw) in data.split(|b| *b == b'\n').enumerate() {
        let line = Some(i as u64 + 1);
        if raw.is_empty() {
            continue;
        }
        let stored: StoredCosignature = match serde_json::from_slice(raw) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("unreadable cosignature line: {e}");
                faults.push(FaultKind::BadCheckpoint, file, line, None, msg);
                continue;
            }
        };
        let body = match open_checkpoint(&stored.note, Some(log_key)) {
            Ok(b) => b,
            Err(p) => {
                faults.push(p.kind, file, line, None, p.message);
                continue;
            }
        };
        if body.size != stored.size || B64.encode(body.root) != stored.root {
            let msg = format!(
                "line says size {} root {} but the note says size {} root {}",
                stored.size,
                stored.root,
                body.size,
                B64.encode(body.root)
            );
            faults.push(FaultKind::BadCheckpoint, file, line, None, msg);
            continue;
        }
        let Ok((note, _)) = parse_checkpoint_note(&stored.note) else {
            continue; // open_checkpoint parsed it already
        };
        let mut by: Option<&str> = None;
        for sig in note.signatures() {
            for (wi, w) in witnesses.iter().enumerate() {
                if sig.name() != w.name() || sig.key_id() != w.key_id() {
                    continue;
                }
                match w.verify(note.text(), sig) {
                    Ok(_) => {
                        seen[wi] = true;
                        by.get_or_insert(w.name());
                    }
                    Err(e) => faults.push(
                        FaultKind::BadSignature,
                        file,
                        line,
                        None,
                        format!("checkpoint of size {}: {e}", body.size),
                    ),
                }
            }
        }
        let Some(witness) = by else { continue };
        let own = expected.get(&body.size).map(|(r, n)| (r, n));
        let earlier = found
            .checkpoints
            .get(&body.size)
            .map(|w| (&w.root, &w.note));
        if let Some((_, other)) = [earlier, own]
            .into_iter()
            .flatten()
            .find(|(r, _)| **r != body.root)
        {
            let msg = format!(
                "witness {witness} cosigned a checkpoint of size {} whose root differs from \
                 another signed checkpoint of that size",
                body.size
            );
            faults.push(FaultKind::Forked, file, line, None, msg);
            found.equivocation.get_or_insert_with(|| Equivocation {
                origin: body.origin.clone(),
                size: body.size,
                note_a: other.clone(),
                note_b: stored.note.clone(),
            });
        }
        found
            .checkpoints
            .entry(body.size)
            .or_insert_with(|| Witnessed {
                root: body.root,
                witness: witness.to_owned(),
                note: stored.note.clone(),
            });
    }
    for (w, seen) in witnesses.iter().zip(seen) {
        if !seen {
            faults.push(
                FaultKind::Unwitnessed,
                file,
                None,
                None,
                format!(
                    "witness {} has cosigned no checkpoint of this ledger",
                    w.encode()
                ),
            );
        }
    }
    Ok(found)
}

fn check_epoch(
    p: &Parsed,
    st: &mut ChainState,
    faults: &mut Faults,
    name: Option<&str>,
    line: Option<u64>,
) {
    let seq = Some(p.seq);
    let secs = st.secs(&p.ts);
    match st.epoch {
        Some(e) if p.epoch < e => {
            faults.push(
                FaultKind::EpochKeyMismatch,
                name,
                line,
                seq,
                format!("epoch {} after epoch {e}: epochs never go back", p.epoch),
            );
            return;
        }
        Some(e) if p.epoch == e => {
            if st.sealed == Some(e) {
                faults.push(
                    FaultKind::EpochKeyMismatch,
                    name,
                    line,
                    seq,
                    format!("a record of epoch {e} follows that epoch's seal"),
                );
            }
            st.epoch_count += 1;
        }
        prior => {
            // A new epoch starts only right after the seal of the one before it.
            if let Some(e) = prior {
                if st.sealed != Some(e) || p.epoch != e + MAX_EPOCH_JUMP {
                    faults.push(
                        FaultKind::EpochKeyMismatch,
                        name,
                        line,
                        seq,
                        format!(
                            "epoch {} starts, but epoch {e} {}",
                            p.epoch,
                            if st.sealed == Some(e) {
                                "was the last one sealed".to_owned()
                            } else {
                                "ended without its seal".to_owned()
                            }
                        ),
                    );
                }
            }
            st.epoch = Some(p.epoch);
            st.epoch_first_secs = secs;
            st.epoch_count = 1;
        }
    }
    if let Some(named) = p.seal {
        if named != p.epoch {
            faults.push(
                FaultKind::EpochKeyMismatch,
                name,
                line,
                seq,
                format!("a seal of epoch {} claims to close epoch {named}", p.epoch),
            );
        }
        st.sealed = Some(p.epoch);
    }
    if st.epoch_count == MAX_EPOCH_RECORDS + 1 {
        faults.push(
            FaultKind::EpochKeyMismatch,
            name,
            line,
            seq,
            format!(
                "epoch {} holds more than {MAX_EPOCH_RECORDS} records",
                p.epoch
            ),
        );
    }
    // A seal is written when its epoch is closed, which after a crash is the next start: its
    // own time may be later. It carries no content, so it cannot stretch what a key covers.
    if let (Some(a), Some(b), None) = (st.epoch_first_secs, secs, p.seal) {
        if b - a > MAX_EPOCH_SPAN_SECS {
            faults.push(
                FaultKind::EpochKeyMismatch,
                name,
                line,
                seq,
                format!("epoch {} spans more than {MAX_EPOCH_SPAN_SECS} s", p.epoch),
            );
            // Report once per span.
            st.epoch_first_secs = Some(b);
        }
    }
}

impl ChainState {
    /// Unix seconds of a timestamp, parsing each distinct second once.
    fn secs(&mut self, ts: &Ts) -> Option<i64> {
        if ts[..19] == self.secs_cache.0 {
            return Some(self.secs_cache.1);
        }
        let secs = ts_secs(ts_str(ts))?;
        self.secs_cache.0.copy_from_slice(&ts[..19]);
        self.secs_cache.1 = secs;
        Some(secs)
    }
}

/// Checks MACs of a batch in parallel, deriving each epoch key once.
fn check_macs(
    chunk: &[&[u8]],
    parsed: &mut [Result<Parsed, String>],
    st: &mut ChainState,
    faults: &mut Faults,
    name: Option<&str>,
    line_base: u64,
) {
    let started = st.epoch.is_some();
    let Some(key) = st.mac_key.as_mut() else {
        return;
    };
    // HMAC states with the key absorbed: two compressions fewer per record.
    let mut keys: BTreeMap<u64, MacState> = BTreeMap::new();
    for (i, p) in parsed.iter().enumerate() {
        if let Ok(p) = p {
            if keys.contains_key(&p.epoch) {
                continue;
            }
            // Epochs advance by one per seal; a far jump is a forgery, and deriving its key
            // one hash at a time would never end. Only the first record may start far in.
            let limit = if started {
                MAX_KEY_STEPS_BETWEEN_RECORDS
            } else {
                MAX_KEY_STEPS_AT_START
            };
            let reachable = p.epoch >= key.epoch() && p.epoch - key.epoch() <= limit;
            if reachable && key.advance_to(p.epoch) {
                keys.insert(p.epoch, mac_state(key.key()));
            } else if !keys.contains_key(&p.epoch) {
                faults.push(
                    FaultKind::EpochKeyMismatch,
                    name,
                    Some(line_base + i as u64 + 1),
                    Some(p.seq),
                    format!(
                        "record claims epoch {} after epoch {} was used",
                        p.epoch,
                        key.epoch()
                    ),
                );
            }
        }
    }
    let verdicts: Vec<Option<bool>> = chunk
        .par_iter()
        .zip(parsed.par_iter())
        .map(|(l, p)| {
            let p = p.as_ref().ok()?;
            let k = keys.get(&p.epoch)?;
            // A parsed line has the fixed tail, so the MAC input ends at a fixed place.
            let input = l.get(..l.len().checked_sub(RECORD_TAIL_LEN)?)?;
            Some(mac_matches(k, input, &p.stored_mac))
        })
        .collect();
    let seg = name.unwrap_or_default();
    for (i, (p, ok)) in parsed.iter_mut().zip(verdicts).enumerate() {
        let Ok(p) = p else { continue };
        p.mac = ok;
        let line = line_base + i as u64 + 1;
        match (ok, st.bad_macs.as_mut()) {
            (Some(true), _) => {
                if let Some(run) = st.bad_macs.take() {
                    run.report(faults);
                }
            }
            (Some(false), None) => {
                let first_fault = faults.push_at(
                    None,
                    FaultKind::BadMac,
                    name,
                    Some(line),
                    Some(p.seq),
                    format!("MAC does not verify under the key of epoch {}", p.epoch),
                );
                st.bad_macs = Some(BadMacRun {
                    first_fault,
                    first_seq: p.seq,
                    records: 1,
                    second: None,
                    last: (seg.to_owned(), line, p.seq),
                });
            }
            (Some(false), Some(run)) => {
                run.records += 1;
                run.second
                    .get_or_insert_with(|| (seg.to_owned(), line, p.seq));
                if run.last.0 != seg {
                    run.last.0 = seg.to_owned();
                }
                (run.last.1, run.last.2) = (line, p.seq);
            }
            // No key for its epoch (reported as an epoch fault): neither ends nor extends a run.
            (None, _) => {}
        }
    }
}

fn ts_secs(ts: &str) -> Option<i64> {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::PrimitiveDateTime::parse(ts, &fmt)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

fn short(h: &Hash) -> String {
    hex::encode(&h[..6])
}
