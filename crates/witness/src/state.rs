//! The witness's durable memory: per origin, the size and root it last cosigned.
//!
//! The whole map lives in one small JSON file, replaced atomically on every change: write a
//! temporary file, fsync it, rename it over the old one, fsync the directory so the rename
//! itself survives a crash. A lock file keeps a second witness process off the directory,
//! since two processes would each hold their own copy and could roll each other back.

use std::collections::BTreeMap;
use std::fs::{self, File, TryLockError};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kling_audit_merkle::{empty_root, Hash};
use serde::{Deserialize, Serialize};

use crate::WitnessError;

const STATE_FILE: &str = "witness-state.json";
const TEMP_FILE: &str = "witness-state.json.tmp";
const LOCK_FILE: &str = "witness.lock";
const FORMAT_VERSION: u32 = 1;

/// What the witness last cosigned for one origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cosigned {
    pub(crate) size: u64,
    pub(crate) root: Hash,
}

impl Cosigned {
    /// The state of an origin never cosigned: the empty tree.
    fn empty() -> Self {
        Self {
            size: 0,
            root: empty_root(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    logs: Vec<LogEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogEntry {
    origin: String,
    size: u64,
    root: String,
}

/// The loaded state plus the lock that makes this process its only writer.
pub(crate) struct StateStore {
    dir: PathBuf,
    logs: BTreeMap<String, Cosigned>,
    /// Held for the life of the store; the OS lock is released when it closes.
    _lock: File,
}

impl StateStore {
    /// Creates the directory if needed, takes the lock and loads the state file if present.
    pub(crate) fn open(dir: &Path) -> Result<Self, WitnessError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WitnessError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(WitnessError::Locked { path: lock_path }),
            Err(TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let path = dir.join(STATE_FILE);
        let logs = match fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|reason| WitnessError::CorruptState {
                path: path.clone(),
                reason,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            logs,
            _lock: lock,
        })
    }

    /// What was last cosigned for `origin`, or the empty tree.
    pub(crate) fn get(&self, origin: &str) -> Cosigned {
        self.logs
            .get(origin)
            .copied()
            .unwrap_or_else(Cosigned::empty)
    }

    /// Makes `new` the state of `origin` on disk, then in memory.
    ///
    /// If writing fails, memory keeps the old state, so memory never claims more than disk.
    pub(crate) fn commit(&mut self, origin: &str, new: Cosigned) -> io::Result<()> {
        let mut next = self.logs.clone();
        next.insert(origin.to_string(), new);
        self.write(&next)?;
        self.logs = next;
        Ok(())
    }

    fn write(&self, logs: &BTreeMap<String, Cosigned>) -> io::Result<()> {
        let file = StateFile {
            version: FORMAT_VERSION,
            logs: logs
                .iter()
                .map(|(origin, c)| LogEntry {
                    origin: origin.clone(),
                    size: c.size,
                    root: STANDARD.encode(c.root),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        let temp = self.dir.join(TEMP_FILE);
        let mut f = File::create(&temp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&temp, self.dir.join(STATE_FILE))?;
        sync_dir(&self.dir)
    }
}

/// IMPORTANT: without this the rename may be lost in a crash even though the file was synced.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file; NTFS journals the rename itself.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<BTreeMap<String, Cosigned>, String> {
    let file: StateFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != FORMAT_VERSION {
        return Err(format!("unsupported version {}", file.version));
    }
    let mut logs = BTreeMap::new();
    for entry in file.logs {
        let root: Hash = STANDARD
            .decode(&entry.root)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| format!("root of {:?} is not base64 of 32 bytes", entry.origin))?;
        if entry.size == 0 && root != empty_root() {
            return Err(format!(
                "size 0 of {:?} with a non-empty root",
                entry.origin
            ));
        }
        let cosigned = Cosigned {
            size: entry.size,
            root,
        };
        if logs.insert(entry.origin.clone(), cosigned).is_some() {
            return Err(format!("origin {:?} listed twice", entry.origin));
        }
    }
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_survives_reopen_and_lock_excludes_second_store(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut store = StateStore::open(dir.path())?;
        assert_eq!(store.get("a"), Cosigned::empty());
        store.commit(
            "a",
            Cosigned {
                size: 7,
                root: [1; 32],
            },
        )?;
        assert!(matches!(
            StateStore::open(dir.path()),
            Err(WitnessError::Locked { .. })
        ));
        drop(store);
        let store = StateStore::open(dir.path())?;
        assert_eq!(
            store.get("a"),
            Cosigned {
                size: 7,
                root: [1; 32]
            }
        );
        assert!(!dir.path().join(TEMP_FILE).exists());
        Ok(())
    }

    #[test]
    fn corrupt_state_is_refused_not_reset() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        for bad in [
            "not json",
            r#"{"version":2,"logs":[]}"#,
            r#"{"version":1,"logs":[{"origin":"a","size":1,"root":"AAAA"}]}"#,
            r#"{"version":1,"logs":[],"extra":1}"#,
        ] {
            fs::write(dir.path().join(STATE_FILE), bad)?;
            assert!(
                matches!(
                    StateStore::open(dir.path()),
                    Err(WitnessError::CorruptState { .. })
                ),
                "{bad}"
            );
        }
        Ok(())
    }
}
