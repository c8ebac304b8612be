//! Bringing a ledger directory to a state a writer can continue from.
//!
//! Every record is read and checked (framing, hash, `seq`, link to the previous record). Only
//! the end of the newest segment may be cut, and only when nothing valid follows the first bad
//! byte and no signed checkpoint covers it: that is a torn write from a crash. The cut bytes go
//! to `quarantine/` (fsynced) before the segment is shortened; the writer then appends a
//! `ledger.recovery` record describing them. A fault anywhere else is never repaired: opening
//! fails and the operator is sent to `verify`.
//!
//! Zeros at the end of the newest segment are the writer's reserve (see
//! [`crate::segment::RESERVE_STEP`]), not damage: they hold nothing and are neither cut nor
//! recorded. After a power loss, blocks of an unsynced batch may reach the disk out of order,
//! leaving zeros between pieces of records; a record never contains a zero byte, so whatever
//! follows the first zero byte of a torn tail was never acknowledged and is cut with it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use kling_audit_merkle::{Frontier, Hash};
use sha2::{Digest, Sha256};

use crate::error::OpenError;
use crate::record::{parse_line, GENESIS_PREV};
use crate::segment::{list_segments, sync_dir, SegmentFile};

pub const QUARANTINE_DIR: &str = "quarantine";

/// What a torn tail held and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: String,
    pub offset: u64,
    pub len: u64,
    pub sha256: Hash,
    /// The quarantine file, relative to the ledger directory.
    pub quarantine: String,
}

/// The state of a ledger after a full read.
pub struct Scan {
    pub segments: Vec<SegmentFile>,
    pub next_seq: u64,
    pub prev: Hash,
    pub frontier: Frontier,
    pub last_ts: Option<String>,
    pub last_epoch: Option<u64>,
    /// How many records at the end carry `last_epoch`.
    pub last_epoch_records: u64,
    /// Whether the last record is an epoch seal.
    pub last_is_seal: bool,
    /// Length of the newest segment after any cut.
    pub last_segment_len: u64,
    pub torn: Option<TornTail>,
}

struct Defect {
    segment: usize,
    offset: usize,
    reason: String,
}

/// Reads the whole ledger and cuts a torn tail if there is one.
/// `signed` is the newest checkpoint the writer's keys signed: the records must reach it and
/// have its root there, or the directory was rolled back or replaced.
///
/// `checkpointed` is the size of the newest checkpoint in the ledger's own log: nothing below
/// it is ever cut.
pub fn scan_and_recover(
    dir: &Path,
    signed: Option<(u64, Hash)>,
    checkpointed: u64,
) -> Result<Scan, OpenError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::Io { path, source }
    };
    let damaged = |detail: String| OpenError::Damaged {
        dir: dir.to_path_buf(),
        detail,
    };
    let (segments, strays) = list_segments(dir).map_err(io(dir))?;
    if let Some(stray) = strays.first() {
        return Err(damaged(format!(
            "{} is not a valid segment name",
            stray.display()
        )));
    }
    let mut scan = Scan {
        segments: segments.clone(),
        next_seq: 0,
        prev: GENESIS_PREV,
        frontier: Frontier::new(),
        last_ts: None,
        last_epoch: None,
        last_epoch_records: 0,
        last_is_seal: false,
        last_segment_len: 0,
        torn: None,
    };
    let mut defect = None;
    let mut last_data = Vec::new();
    for (si, seg) in segments.iter().enumerate() {
        let data = fs::read(&seg.path).map_err(io(&seg.path))?;
        let mut pos = 0;
        if data.is_empty() && si + 1 < segments.len() {
            return Err(damaged(format!(
                "segment {} is empty but is not the newest",
                seg.name
            )));
        }
        while pos < data.len() {
            let Some(nl) = data[pos..].iter().position(|b| *b == b'\n') else {
                defect = Some(Defect {
                    segment: si,
                    offset: pos,
                    reason: "partial last line".into(),
                });
                break;
            };
            let line = &data[pos..pos + nl];
            let problem = match parse_line(line) {
                Err(f) => Some(f.to_string()),
                Ok(v) if !v.hash_ok() => Some(format!("seq {}: hash does not match bytes", v.seq)),
                Ok(v) if v.seq != scan.next_seq => Some(format!(
                    "seq {} where {} was expected",
                    v.seq, scan.next_seq
                )),
                Ok(v) if v.prev != scan.prev => Some(format!("seq {}: broken link", v.seq)),
                Ok(v) => {
                    if pos == 0 && v.seq != seg.first_seq {
                        return Err(damaged(format!(
                            "segment {} starts at seq {} but its name says {}",
                            seg.name, v.seq, seg.first_seq
                        )));
                    }
                    scan.next_seq += 1;
                    scan.prev = v.leaf;
                    scan.frontier.push(v.leaf);
                    if let Some((size, root)) = signed {
                        if size == scan.next_seq && root != scan.frontier.root() {
                            return Err(damaged(format!(
                                "the first {size} records do not have the root of the checkpoint \
                                 these keys signed last: the ledger was replaced or forked"
                            )));
                        }
                    }
                    scan.last_ts = Some(v.ts.to_owned());
                    if scan.last_epoch == Some(v.epoch) {
                        scan.last_epoch_records += 1;
                    } else {
                        scan.last_epoch_records = 1;
                    }
                    scan.last_epoch = Some(v.epoch);
                    scan.last_is_seal = crate::verify::is_epoch_seal(&v);
                    None
                }
            };
            if let Some(reason) = problem {
                defect = Some(Defect {
                    segment: si,
                    offset: pos,
                    reason,
                });
                break;
            }
            pos += nl + 1;
        }
        if let Some(d) = &defect {
            if d.segment + 1 < segments.len() {
                return Err(damaged(format!(
                    "segment {} offset {}: {}",
                    seg.name, d.offset, d.reason
                )));
            }
        }
        if si + 1 == segments.len() {
            last_data = data;
        }
        if defect.is_some() {
            break;
        }
    }
    if let Some((size, _)) = signed {
        if scan.next_seq < size {
            return Err(damaged(format!(
                "it holds {} intact records, but these keys signed a checkpoint of {size}: the \
                 ledger was truncated or rolled back to an older copy",
                scan.next_seq
            )));
        }
    }
    let Some(d) = defect else {
        scan.last_segment_len = last_data.len() as u64;
        return Ok(scan);
    };
    let seg = &segments[d.segment];
    let tail = crate::segment::without_reserve(&last_data[d.offset..]);
    if tail.is_empty() {
        scan.last_segment_len = d.offset as u64;
        return Ok(scan);
    }
    if valid_record_follows(tail) {
        return Err(damaged(format!(
            "segment {} offset {}: {}, and valid records follow",
            seg.name, d.offset, d.reason
        )));
    }
    if checkpointed > scan.next_seq {
        return Err(damaged(format!(
            "segment {} offset {}: {}; a checkpoint covers {} but only {} intact",
            seg.name,
            d.offset,
            d.reason,
            crate::count(checkpointed, "record"),
            if scan.next_seq == 1 {
                "1 is".to_owned()
            } else {
                format!("{} are", scan.next_seq)
            }
        )));
    }
    // Not logged here: the cut is returned in `OpenReport::torn_tail` for the caller to report
    // in its own voice, and recorded as a `ledger.recovery` record. A log line here as well
    // made the CLI say it twice.
    let torn = quarantine(dir, seg, d.offset as u64, tail)?;
    scan.last_segment_len = d.offset as u64;
    scan.torn = Some(torn);
    Ok(scan)
}

/// Whether any complete line after the first one in `tail` is a record with a correct hash.
fn valid_record_follows(tail: &[u8]) -> bool {
    let tail = &tail[..memchr::memchr(0, tail).unwrap_or(tail.len())];
    let mut lines = tail.split(|b| *b == b'\n');
    lines.next();
    let complete: Vec<&[u8]> = lines.collect();
    // The piece after the last newline is incomplete and cannot count.
    let n = complete.len().saturating_sub(1);
    complete[..n]
        .iter()
        .any(|l| parse_line(l).map(|v| v.hash_ok()).unwrap_or(false))
}

fn quarantine(
    dir: &Path,
    seg: &SegmentFile,
    offset: u64,
    tail: &[u8],
) -> Result<TornTail, OpenError> {
    let qdir = dir.join(QUARANTINE_DIR);
    let io = |path: PathBuf| move |source| OpenError::Io { path, source };
    fs::create_dir_all(&qdir).map_err(io(qdir.clone()))?;
    sync_dir(dir).map_err(io(dir.to_path_buf()))?;
    let sha: Hash = Sha256::digest(tail).into();
    let name = format!("{}.{offset}.bin", seg.name);
    let qpath = qdir.join(&name);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&qpath)
            .map_err(io(qpath.clone()))?;
        f.write_all(tail).map_err(io(qpath.clone()))?;
        f.sync_all().map_err(io(qpath.clone()))?;
    }
    sync_dir(&qdir).map_err(io(qdir.clone()))?;
    let f = OpenOptions::new()
        .write(true)
        .open(&seg.path)
        .map_err(io(seg.path.clone()))?;
    f.set_len(offset).map_err(io(seg.path.clone()))?;
    f.sync_all().map_err(io(seg.path.clone()))?;
    Ok(TornTail {
        segment: seg.name.clone(),
        offset,
        len: tail.len() as u64,
        sha256: sha,
        quarantine: format!("{QUARANTINE_DIR}/{name}"),
    })
}
