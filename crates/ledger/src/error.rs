//! Error types of the ledger.
//!
//! Every variant carries what an operator needs to act on it: the path, the segment and byte
//! offset, the sequence number, and the expected and actual values where there are some.

use std::io;
use std::path::PathBuf;

/// Why an entry was refused before anything was written.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("details are not valid JSON: {reason} (line {line}, column {column})")]
    DetailsNotJson {
        reason: String,
        line: usize,
        column: usize,
    },
    #[error("details must be a JSON object, got {found}")]
    DetailsNotObject { found: &'static str },
    #[error("details repeat the key {key:?} in one object; each key may appear once")]
    DuplicateKey { key: String },
    #[error("{field} is empty; give a non-empty value")]
    EmptyField { field: &'static str },
    #[error("{field} is {len} bytes, over the limit of {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} contains the character {ch:?}, which is not allowed ({rule})")]
    BadCharacter {
        field: &'static str,
        ch: char,
        rule: &'static str,
    },
    #[error("the record would be {len} bytes, over the limit of {max} bytes per record")]
    RecordTooLarge { len: usize, max: usize },
}

/// Why a ledger could not be opened for writing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// `path` is the directory or a file in it (a segment, the lock, the quarantine).
    #[error("cannot use {path} of the ledger: {source}{}", access_advice(source))]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{dir} is a file, not a directory; check --dir (or KLING_AUDIT_DIR): it must name the \
         ledger directory"
    )]
    NotADirectory { dir: PathBuf },
    #[error(
        "ledger directory {dir} is locked by another writer{}; stop that process first, \
         or use a different --dir",
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { dir: PathBuf, holder: Option<u32> },
    #[error(
        "ledger {dir} is damaged before its tail ({detail}); nothing was changed. \
         Run `kling-audit verify` to locate every fault"
    )]
    Damaged { dir: PathBuf, detail: String },
    #[error("keys for ledger {dir} are unusable: {detail}")]
    Keys { dir: PathBuf, detail: String },
    /// The ledger holds records but the keys directory has no keys: `init` would refuse it,
    /// and new keys would mix two origins in one ledger.
    #[error(
        "ledger {dir} already holds records, but there are no keys in {keys_dir}: pass the \
         keys directory it was written with via --keys-dir (or KLING_AUDIT_KEYS_DIR). If those \
         keys are lost, the ledger can still be verified with its verifier key but not written \
         any more; start a new ledger with another --dir"
    )]
    NoKeysForLedger { dir: PathBuf, keys_dir: PathBuf },
    #[error(
        "the keys directory {keys_dir} {} the ledger directory {dir}: keys there would be \
         copied and shipped with the ledger, and whoever can change the ledger could sign it \
         anew. Nothing was written; pass a --keys-dir outside the ledger directory (by \
         default the keys go beside it, in {})",
        if *same { "is" } else { "is inside" },
        crate::default_keys_dir(dir).display()
    )]
    KeysInsideLedger {
        dir: PathBuf,
        keys_dir: PathBuf,
        /// The keys directory is the ledger directory itself.
        same: bool,
    },
}

/// What to do about an I/O error that refused access, as the end of a message: a writer
/// needs to create and write files in the ledger directory.
fn access_advice(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            ". Writing needs a ledger directory this user can write: run the command as a user \
             that can, or check the permissions of the directory and its files, their immutable \
             or append-only attributes (lsattr) and whether the file system is mounted read-only"
        }
        _ => "",
    }
}

/// Why an append was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Entry(#[from] std::sync::Arc<EntryError>),
    #[error(
        "the ledger stopped accepting records after a failed write, sync or checkpoint \
         ({cause}); nothing since then was acknowledged. Fix what the cause names (usually \
         the storage), then restart the writer"
    )]
    Poisoned { cause: String },
    #[error("the ledger writer has shut down")]
    Closed,
    /// A call that waits for the writer, made from the ledger's own checkpoint hook. The hook
    /// runs on the thread that stores checkpoints, which the writer may be waiting for (a flush
    /// always is), so the call could never return.
    #[error(
        "{call} was called from the ledger's own checkpoint hook, where it would wait for the \
         writer while the writer waits for the hook to return; nothing was done. Hand the \
         checkpoint to another thread or task from the hook, and {call} there"
    )]
    InsideCheckpointHook { call: &'static str },
}

impl From<EntryError> for AppendError {
    fn from(e: EntryError) -> Self {
        AppendError::Entry(std::sync::Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_access_to_the_ledger_says_what_to_check() {
        for kind in [
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::ReadOnlyFilesystem,
        ] {
            let e = OpenError::Io {
                path: PathBuf::from("audit/LOCK"),
                source: io::Error::from(kind),
            };
            let text = e.to_string();
            assert!(
                text.starts_with("cannot use audit/LOCK of the ledger: ")
                    && text.ends_with(
                        ". Writing needs a ledger directory this user can write: run the \
                         command as a user that can, or check the permissions of the directory \
                         and its files, their immutable or append-only attributes (lsattr) and \
                         whether the file system is mounted read-only"
                    ),
                "{text}"
            );
        }
        // Other failures carry no advice about access.
        let e = OpenError::Io {
            path: PathBuf::from("audit/LOCK"),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(!e.to_string().contains("lsattr"));
    }
}
