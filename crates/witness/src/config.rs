//! What a witness is told to trust and where it keeps its state.

use std::path::PathBuf;

use kling_audit_note::{CosignerKey, Verifier};

/// A log the witness cosigns for.
#[derive(Clone, Debug)]
pub struct TrustedLog {
    /// The checkpoint origin line, exactly as the log writes it.
    pub origin: String,
    /// The log's checkpoint keys; a checkpoint needs a valid signature from at least one.
    pub keys: Vec<Verifier>,
}

/// Everything [`serve`](crate::serve) and [`Witness::open`](crate::Witness::open) need.
#[derive(Clone, Debug)]
pub struct WitnessConfig {
    /// The witness's cosigning key (Ed25519, `cosignature/v1`). Its `Debug` hides the seed.
    pub key: CosignerKey,
    /// The logs this witness cosigns for; origins must be distinct.
    pub logs: Vec<TrustedLog>,
    /// Directory for the state file and its lock; created if missing. One witness process per
    /// directory: a second one fails to open with [`WitnessError::Locked`](crate::WitnessError).
    pub state_dir: PathBuf,
    /// The submission prefix: empty, or a path starting with `/` and not ending with `/`.
    /// The endpoint is `<prefix>/add-checkpoint`.
    pub prefix: String,
}
