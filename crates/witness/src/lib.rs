//! A C2SP tlog-witness (c2sp.org/tlog-witness): the `add-checkpoint` endpoint, and the client
//! the ledger and gateway use to push checkpoints to any witness that speaks the protocol.
//!
//! A witness cosigns a log's checkpoint only if it extends, by a verified consistency proof,
//! the last checkpoint it cosigned for that origin. Third parties that demand a cosignature
//! therefore see one append-only history per log: a fork or a rollback needs the witness's
//! cooperation (integrity.md threats 7 and 9).
//!
//! The one subtle requirement is atomicity: checking the caller's `old` size against the stored
//! size and storing the new checkpoint happen under one lock, and the new state reaches disk
//! (temporary file, fsync, rename, directory fsync) before the reply. Without that, a request
//! for size N checked before, but stored after, a request for N+K would roll the witness back.
//!
//! The [`pusher`] module is the ledger writer's side: it sends every new checkpoint to the
//! configured witnesses and stores the cosignatures they return.

mod client;
mod config;
mod error;
pub mod pusher;
mod server;
mod state;

pub use client::{add_checkpoint, AddCheckpointOutcome};
pub use config::{TrustedLog, WitnessConfig};
pub use error::{AddCheckpointError, WitnessClientError, WitnessError};
pub use server::{router, serve, serve_with_shutdown, Witness, TLOG_SIZE_CONTENT_TYPE};
