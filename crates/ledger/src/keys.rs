//! The keys of one ledger, kept outside the ledger directory.
//!
//! A keys directory holds:
//! - `checkpoint.key`: the Ed25519 checkpoint signer, in Go's `PRIVATE+KEY+...` encoding;
//! - `checkpoint.pub`: its public verifier key, which auditors pin;
//! - `epoch.key`: the current forward-secure MAC epoch and key, replaced on every epoch change;
//! - `commit.key`: the secret for keyed commitments of prompts and key fingerprints;
//! - `mac-root.key`: the epoch-0 MAC key, only when the ledger was created implicitly. `init`
//!   prints it once instead and never stores it, which is what forward security needs.
//!
//! Private files are created with mode 0600 in a 0700 directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rand::RngCore;
use zeroize::Zeroizing;

use crate::epoch::EpochKey;
use crate::segment::write_atomic;
use crate::sign::Signer;

pub const SIGNER_FILE: &str = "checkpoint.key";
pub const VERIFIER_FILE: &str = "checkpoint.pub";
pub const EPOCH_FILE: &str = "epoch.key";
pub const COMMIT_FILE: &str = "commit.key";
pub const MAC_ROOT_FILE: &str = "mac-root.key";
/// The size and root of the newest checkpoint this key set signed.
pub const SIGNED_HEAD_FILE: &str = "signed-head";
const EPOCH_HEADER: &str = "kling-audit epoch key v1";

/// Why keys could not be created or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot access key file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("key file {path} is malformed: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error("keys already exist in {dir}; refusing to overwrite them")]
    Exists { dir: PathBuf },
    #[error(
        "no keys in {dir}: run `kling-audit init`, or pass the keys directory with --keys-dir"
    )]
    Missing { dir: PathBuf },
}

/// What `init` hands to the operator once.
pub struct InitSecrets {
    /// The public checkpoint verifier key, `<name>+<id>+<base64>`.
    pub verifier_key: String,
    /// The epoch-0 MAC key in hex, for the auditor to keep offline.
    pub mac_root_hex: Zeroizing<String>,
    /// Whether the MAC root key was also stored in the keys directory.
    pub mac_root_stored: bool,
}

/// The secret material a writer needs.
pub struct KeySet {
    pub dir: PathBuf,
    pub origin: String,
    pub signer: Signer,
    pub epoch: EpochKey,
    pub commit_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("dir", &self.dir)
            .field("origin", &self.origin)
            .finish()
    }
}

/// Whether `dir` holds a key set.
pub fn exists(dir: &Path) -> bool {
    dir.join(SIGNER_FILE).exists()
}

impl KeySet {
    /// Creates a fresh key set for `origin` in `dir`.
    pub fn create(
        dir: &Path,
        origin: &str,
        store_mac_root: bool,
    ) -> Result<(KeySet, InitSecrets), KeyError> {
        if exists(dir) {
            return Err(KeyError::Exists {
                dir: dir.to_path_buf(),
            });
        }
        create_private_dir(dir)?;
        let signer = Signer::generate(origin).map_err(|e| KeyError::Malformed {
            path: dir.join(SIGNER_FILE),
            detail: e,
        })?;
        let mut root = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *root);
        let mut commit = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *commit);

        let verifier_key = signer.verifier_key();
        write_file(
            &dir.join(VERIFIER_FILE),
            format!("{verifier_key}\n").as_bytes(),
        )?;
        write_private(
            &dir.join(COMMIT_FILE),
            format!("{}\n", hex::encode(*commit)).as_bytes(),
        )?;
        let mac_root_hex = Zeroizing::new(hex::encode(*root));
        if store_mac_root {
            write_private(
                &dir.join(MAC_ROOT_FILE),
                format!("{}\n", &*mac_root_hex).as_bytes(),
            )?;
        }
        let epoch = EpochKey::root(*root);
        store_epoch(dir, &epoch)?;
        // The signer goes last: its file is what marks a complete key set, so a crash midway
        // leaves a directory that the next writer simply fills again.
        write_private(
            &dir.join(SIGNER_FILE),
            format!("{}\n", &*signer.encode()).as_bytes(),
        )?;
        let keys = KeySet {
            dir: dir.to_path_buf(),
            origin: origin.to_owned(),
            signer,
            epoch,
            commit_key: commit,
        };
        Ok((
            keys,
            InitSecrets {
                verifier_key,
                mac_root_hex,
                mac_root_stored: store_mac_root,
            },
        ))
    }

    /// Loads the key set in `dir`.
    pub fn load(dir: &Path) -> Result<KeySet, KeyError> {
        if !exists(dir) {
            return Err(KeyError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        let signer_path = dir.join(SIGNER_FILE);
        let signer_text = Zeroizing::new(read(&signer_path)?);
        let signer =
            Signer::from_encoded(signer_text.trim()).map_err(|detail| KeyError::Malformed {
                path: signer_path,
                detail,
            })?;
        let origin = signer.name().to_owned();
        let epoch = load_epoch(dir)?;
        let commit_path = dir.join(COMMIT_FILE);
        let commit_key = Zeroizing::new(parse_key_hex(&commit_path, &read(&commit_path)?)?);
        Ok(KeySet {
            dir: dir.to_path_buf(),
            origin,
            signer,
            epoch,
            commit_key,
        })
    }

    /// Moves to the next epoch: stores the new key, then wipes the old one from memory.
    pub fn advance_epoch(&mut self) -> Result<(), KeyError> {
        let mut next = EpochKey::at(self.epoch.epoch(), *self.epoch.key());
        next.advance();
        store_epoch(&self.dir, &next)?;
        self.epoch = next;
        Ok(())
    }
}

/// Stores the newest checkpoint this key set signed, so that a writer can later refuse a ledger
/// that was rolled back behind it.
pub fn store_signed_head(dir: &Path, size: u64, root: &[u8; 32]) -> Result<(), KeyError> {
    let text = format!("{size} {}\n", hex::encode(root));
    write_file(&dir.join(SIGNED_HEAD_FILE), text.as_bytes())
}

/// The newest checkpoint this key set signed, if it recorded one.
pub fn load_signed_head(dir: &Path) -> Result<Option<(u64, [u8; 32])>, KeyError> {
    let path = dir.join(SIGNED_HEAD_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(KeyError::Io { path, source }),
    };
    let bad = || KeyError::Malformed {
        path: path.clone(),
        detail: "expected `<size> <hex root>`".into(),
    };
    let (size, root) = text.trim().split_once(' ').ok_or_else(bad)?;
    let size = size.parse().map_err(|_| bad())?;
    Ok(Some((size, parse_key_hex(&path, root)?)))
}

/// Reads the stored MAC root key, if the ledger was created implicitly.
pub fn load_mac_root(dir: &Path) -> Result<Option<[u8; 32]>, KeyError> {
    let path = dir.join(MAC_ROOT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(parse_key_hex(&path, &read(&path)?)?))
}

/// Parses 64 hex digits into a key.
pub fn parse_key_hex(path: &Path, text: &str) -> Result<[u8; 32], KeyError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|e| KeyError::Malformed {
        path: path.to_path_buf(),
        detail: format!("expected 64 hex digits: {e}"),
    })?;
    Ok(out)
}

fn store_epoch(dir: &Path, key: &EpochKey) -> Result<(), KeyError> {
    let text = Zeroizing::new(format!(
        "{EPOCH_HEADER}\n{}\n{}\n",
        key.epoch(),
        hex::encode(key.key())
    ));
    let path = dir.join(EPOCH_FILE);
    write_atomic_private(&path, text.as_bytes())
}

fn load_epoch(dir: &Path) -> Result<EpochKey, KeyError> {
    let path = dir.join(EPOCH_FILE);
    let text = Zeroizing::new(read(&path)?);
    let mut lines = text.lines();
    let bad = |detail: &str| KeyError::Malformed {
        path: path.clone(),
        detail: detail.to_owned(),
    };
    if lines.next() != Some(EPOCH_HEADER) {
        return Err(bad("missing header line"));
    }
    let epoch = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| bad("bad epoch number"))?;
    let key = parse_key_hex(&path, lines.next().unwrap_or_default())?;
    Ok(EpochKey::at(epoch, key))
}

fn read(path: &Path) -> Result<String, KeyError> {
    fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |source| KeyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    write_atomic(path, bytes).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    write_atomic_private(path, bytes)
}

fn write_atomic_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        // Never leave a partial copy of a secret key behind.
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    fs::rename(&tmp, path).map_err(io)?;
    crate::segment::sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_keys_load_back_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("k");
        let (made, secrets) = KeySet::create(&keys, "example.test/log", false).unwrap();
        assert!(secrets.verifier_key.starts_with("example.test/log+"));
        assert!(!keys.join(MAC_ROOT_FILE).exists());
        let loaded = KeySet::load(&keys).unwrap();
        assert_eq!(loaded.origin, "example.test/log");
        assert_eq!(loaded.epoch.key(), made.epoch.key());
        let mode = fs::metadata(keys.join(SIGNER_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            KeySet::create(&keys, "x", false),
            Err(KeyError::Exists { .. })
        ));
    }

    #[test]
    fn advancing_replaces_the_stored_key() {
        let dir = tempfile::tempdir().unwrap();
        let (mut keys, secrets) = KeySet::create(dir.path(), "o", false).unwrap();
        let root = parse_key_hex(dir.path(), &secrets.mac_root_hex).unwrap();
        keys.advance_epoch().unwrap();
        let stored = fs::read_to_string(dir.path().join(EPOCH_FILE)).unwrap();
        assert!(
            !stored.contains(&*secrets.mac_root_hex),
            "the old key must leave the disk"
        );
        let mut expect = EpochKey::root(root);
        expect.advance();
        assert_eq!(KeySet::load(dir.path()).unwrap().epoch.key(), expect.key());
    }
}
