//! Errors of the witness server, of one `add-checkpoint` request, and of the client.

use std::path::PathBuf;

use axum::http::StatusCode;

/// Why a witness could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// The configuration is unusable.
    #[error("invalid witness configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// Another witness process holds the state directory.
    #[error("witness state directory {path} is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// Reading, creating or locking the state failed.
    #[error("witness state {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The state file exists but is not valid.
    #[error("witness state file {path} is corrupt: {reason}")]
    CorruptState {
        /// The state file.
        path: PathBuf,
        /// What failed to parse.
        reason: String,
    },
    /// The HTTP server failed.
    #[error("witness server: {0}")]
    Serve(#[source] std::io::Error),
}

/// Why one `add-checkpoint` request was refused; each maps to the status the spec requires.
#[derive(Debug, thiserror::Error)]
pub enum AddCheckpointError {
    /// The body, note or checkpoint is malformed (400).
    #[error("malformed request: {reason}")]
    Malformed {
        /// What failed to parse.
        reason: String,
    },
    /// The old size is larger than the checkpoint's size (400).
    #[error("old size {old_size} is larger than checkpoint size {size}")]
    OldSizeTooLarge {
        /// The request's old size.
        old_size: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// No signature verifies under a key trusted for the origin (403).
    #[error("no valid signature from a key trusted for this origin")]
    Forbidden,
    /// The origin is not a configured log (404).
    #[error("unknown origin")]
    UnknownOrigin,
    /// The old size is not the last size cosigned (409, body is that size).
    #[error("old size {old_size} is not the last cosigned size {cosigned_size}")]
    StaleOldSize {
        /// The request's old size.
        old_size: u64,
        /// The size the witness last cosigned.
        cosigned_size: u64,
    },
    /// The checkpoint repeats the last cosigned size with a different root (409).
    #[error("checkpoint of size {size} has a different root than the one cosigned")]
    ConflictingRoot {
        /// The shared size.
        size: u64,
    },
    /// The consistency proof does not verify (422).
    #[error("consistency proof from {old_size} to {size} fails: {source}")]
    InconsistentProof {
        /// The old size.
        old_size: u64,
        /// The checkpoint's size.
        size: u64,
        /// Why it failed.
        source: kling_audit_merkle::ProofError,
    },
    /// The new state could not be made durable, so nothing was cosigned (500).
    #[error("could not persist witness state: {0}")]
    Storage(#[source] std::io::Error),
    /// The system clock is before 1970 or after 2^63 seconds (500).
    #[error("system clock is unusable for cosignature timestamps")]
    Clock,
}

impl AddCheckpointError {
    /// The HTTP status c2sp.org/tlog-witness assigns to this outcome.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed { .. } | Self::OldSizeTooLarge { .. } => StatusCode::BAD_REQUEST,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::UnknownOrigin => StatusCode::NOT_FOUND,
            Self::StaleOldSize { .. } | Self::ConflictingRoot { .. } => StatusCode::CONFLICT,
            Self::InconsistentProof { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Storage(_) | Self::Clock => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Why the client could not get an answer the protocol defines.
#[derive(Debug, thiserror::Error)]
pub enum WitnessClientError {
    /// The request could not be sent or the response not read.
    #[error("witness request to {url} failed: {source}")]
    Transport {
        /// The endpoint URL.
        url: String,
        /// The underlying error.
        source: reqwest::Error,
    },
    /// A status the protocol does not define.
    #[error("witness at {url} answered with unexpected status {status}")]
    UnexpectedStatus {
        /// The endpoint URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// A defined status with a body that breaks the protocol.
    #[error("witness at {url} sent a malformed {status} response: {reason}")]
    MalformedResponse {
        /// The endpoint URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What was wrong.
        reason: String,
    },
}
