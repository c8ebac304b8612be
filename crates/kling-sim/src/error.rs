//! The simulator's own failures: configuration that cannot be read or makes no sense, and
//! sockets that cannot be bound. Failures of simulated Kling calls are not errors here; they
//! are answers (see `reply`).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Failures while configuring, starting or running the simulator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The configuration file could not be read.
    #[error("cannot read simulator config {path}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The configuration text is not valid TOML for [`crate::SimConfig`]. Only the parser's
    /// message and the line are kept: the parser's own error quotes the offending line, which
    /// may hold a secret key.
    #[error("cannot parse simulator config {origin}, line {line}: {message}")]
    ParseConfig {
        origin: String,
        line: usize,
        message: String,
    },
    /// A configuration value is out of range or contradicts another one.
    #[error("invalid simulator config: {field}: {reason}")]
    InvalidConfig { field: String, reason: String },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The bound socket's address could not be read back.
    #[error("cannot read the simulator's bound address")]
    LocalAddr(#[source] io::Error),
    /// The HTTP client used for callbacks could not be built.
    #[error("cannot build the callback HTTP client")]
    CallbackClient(#[source] reqwest::Error),
    /// The server task ended abnormally (it panicked or was cancelled).
    #[error("simulator server task ended abnormally")]
    ServerTask(#[source] tokio::task::JoinError),
}

impl SimError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
