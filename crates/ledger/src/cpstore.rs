//! The checkpoint log: every signed checkpoint the writer made, append-only, beside the segments.
//!
//! `checkpoints.jsonl` holds one JSON object per line, `{"size":N,"note":"<signed note>"}`.
//! The note is the C2SP signed note exactly as signed; JSON only escapes its newlines. A torn
//! last line (a crash during an append) is cut when a writer opens the ledger; any other bad
//! line is left for the verifier to report.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";

/// One line of the checkpoint log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub note: String,
}

/// A line of the checkpoint log that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCheckpointLine {
    pub line: usize,
    pub reason: String,
}

/// Appends checkpoints durably.
pub struct CheckpointLog {
    file: File,
    path: PathBuf,
    /// Bytes of whole lines: where a failed append is cut back to.
    len: u64,
}

impl CheckpointLog {
    /// Opens the log for appending, cutting a torn last line; also returns the size of the
    /// newest checkpoint in it, read from the same bytes.
    pub fn open(dir: &Path) -> io::Result<(CheckpointLog, u64)> {
        let path = dir.join(CHECKPOINTS_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        if !existed {
            crate::segment::sync_dir(dir)?;
        }
        let data = fs::read(&path)?;
        let keep = data.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        if keep < data.len() {
            file.set_len(keep as u64)?;
            file.sync_all()?;
            tracing::warn!(path = %path.display(), cut = data.len() - keep, "cut a torn checkpoint line");
        }
        let (checkpoints, _) = parse_lines(&data[..keep]);
        let newest = checkpoints.iter().map(|c| c.size).max().unwrap_or(0);
        let log = CheckpointLog {
            file,
            path,
            len: keep as u64,
        };
        Ok((log, newest))
    }

    /// Appends one checkpoint and syncs it. A write that fails part way (a full disk, a file
    /// size limit) is cut off again: a partial line would read as a damaged checkpoint until
    /// the next writer opens the ledger.
    pub fn append(&mut self, size: u64, note: &str) -> io::Result<()> {
        let mut line = serde_json::to_vec(&StoredCheckpoint {
            size,
            note: note.to_owned(),
        })
        .map_err(io::Error::other)?;
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            return Err(match self.file.set_len(self.len) {
                Ok(()) => e,
                Err(cut) => io::Error::new(
                    e.kind(),
                    format!("{e}; cutting the partly written line off failed too ({cut})"),
                ),
            });
        }
        self.len += line.len() as u64;
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every checkpoint line of `dir`; a missing file reads as empty.
pub fn read_checkpoints(dir: &Path) -> io::Result<(Vec<StoredCheckpoint>, Vec<BadCheckpointLine>)> {
    Ok(parse_lines(&read_log(dir)?))
}

/// The bytes of the checkpoint log of `dir`; a missing file reads as empty.
pub fn read_log(dir: &Path) -> io::Result<Vec<u8>> {
    match fs::read(dir.join(CHECKPOINTS_FILE)) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Parses checkpoint lines; unreadable ones are returned with their line numbers.
pub fn parse_lines(data: &[u8]) -> (Vec<StoredCheckpoint>, Vec<BadCheckpointLine>) {
    let (good, bad) = parse_numbered_lines(data);
    (good.into_iter().map(|(_, cp)| cp).collect(), bad)
}

/// [`parse_lines`], with the 1-based line number of each readable checkpoint.
pub fn parse_numbered_lines(
    data: &[u8],
) -> (Vec<(usize, StoredCheckpoint)>, Vec<BadCheckpointLine>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<StoredCheckpoint>(line) {
            Ok(cp) => good.push((i + 1, cp)),
            Err(e) => bad.push(BadCheckpointLine {
                line: i + 1,
                reason: e.to_string(),
            }),
        }
    }
    (good, bad)
}
