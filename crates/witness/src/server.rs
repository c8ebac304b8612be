//! The `add-checkpoint` endpoint: request checks in the order c2sp.org/tlog-witness lists them,
//! the atomic check-and-store, and the cosignature reply.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use kling_audit_merkle::{verify_consistency, Hash};
use kling_audit_note::{
    AddCheckpointRequest, Checkpoint, CosignatureVerifier, CosignerKey, Note, NoteSignature,
    Verifier, MAX_TIMESTAMP,
};

use crate::state::{Cosigned, StateStore};
use crate::{AddCheckpointError, WitnessConfig, WitnessError};

/// Content type of a 409 body that carries the witness's last cosigned size.
pub const TLOG_SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// Bodies above this are refused with 413: 63 proof lines and a note with the 100 signatures
/// a note may carry fit in well under 32 KiB.
const BODY_LIMIT: usize = 64 * 1024;

const LOG_TARGET: &str = "kling_audit::witness";

/// A running witness's shared state; cheap to clone.
#[derive(Clone)]
pub struct Witness {
    inner: Arc<Inner>,
}

struct Inner {
    key: CosignerKey,
    logs: HashMap<String, Vec<Verifier>>,
    prefix: String,
    state: Mutex<StateStore>,
}

impl Witness {
    /// Validates the configuration, locks the state directory and loads the state.
    pub fn open(cfg: WitnessConfig) -> Result<Self, WitnessError> {
        let config_err = |reason: String| WitnessError::Config { reason };
        let prefix_ok =
            cfg.prefix.is_empty() || (cfg.prefix.starts_with('/') && !cfg.prefix.ends_with('/'));
        if !prefix_ok {
            return Err(config_err(format!(
                "prefix {:?} must be empty or start, but not end, with '/'",
                cfg.prefix
            )));
        }
        let mut logs = HashMap::new();
        for log in cfg.logs {
            if log.origin.is_empty() || log.keys.is_empty() {
                return Err(config_err(format!(
                    "log {:?} needs a non-empty origin and at least one key",
                    log.origin
                )));
            }
            // Two keys with one name and ID would make every signature ambiguous, hence 403.
            let mut ids: Vec<(&str, u32)> =
                log.keys.iter().map(|k| (k.name(), k.key_id())).collect();
            ids.sort_unstable();
            if ids.windows(2).any(|w| w[0] == w[1]) {
                return Err(config_err(format!(
                    "log {:?} lists one key twice",
                    log.origin
                )));
            }
            if logs.insert(log.origin.clone(), log.keys).is_some() {
                return Err(config_err(format!("origin {:?} listed twice", log.origin)));
            }
        }
        let state = StateStore::open(&cfg.state_dir)?;
        Ok(Self {
            inner: Arc::new(Inner {
                key: cfg.key,
                logs,
                prefix: cfg.prefix,
                state: Mutex::new(state),
            }),
        })
    }

    /// The public key clients use to check this witness's cosignatures.
    pub fn verifier(&self) -> CosignatureVerifier {
        self.inner.key.verifier()
    }

    /// The size and root last cosigned for `origin`, if any.
    pub fn cosigned(&self, origin: &str) -> Option<(u64, Hash)> {
        let c = self.inner.lock_state().get(origin);
        (c.size > 0).then_some((c.size, c.root))
    }

    /// Handles one `add-checkpoint` body and returns the cosignature lines.
    pub async fn add_checkpoint(
        &self,
        body: &[u8],
    ) -> Result<Vec<NoteSignature>, AddCheckpointError> {
        let malformed = |e: &dyn std::fmt::Display| AddCheckpointError::Malformed {
            reason: e.to_string(),
        };
        let req = AddCheckpointRequest::parse(body).map_err(|e| malformed(&e))?;
        let note = Note::parse(&req.checkpoint).map_err(|e| malformed(&e))?;
        let cp = Checkpoint::parse(note.text()).map_err(|e| malformed(&e))?;
        let keys = self
            .inner
            .logs
            .get(&cp.origin)
            .ok_or(AddCheckpointError::UnknownOrigin)?;
        // Every failure here (a trusted key's bad signature, or none trusted) is a 403: the
        // spec has one status for "not signed by this log".
        let note = note
            .verify(keys)
            .map_err(|_| AddCheckpointError::Forbidden)?;
        if req.old_size > cp.size {
            return Err(AddCheckpointError::OldSizeTooLarge {
                old_size: req.old_size,
                size: cp.size,
            });
        }

        let inner = Arc::clone(&self.inner);
        let (origin, old_size, proof) = (cp.origin.clone(), req.old_size, req.proof);
        let new = Cosigned {
            size: cp.size,
            root: cp.root,
        };
        tokio::task::spawn_blocking(move || inner.check_and_store(&origin, old_size, &proof, new))
            .await
            .map_err(|e| AddCheckpointError::Storage(std::io::Error::other(e)))??;

        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
            .filter(|&t| t <= MAX_TIMESTAMP)
            .ok_or(AddCheckpointError::Clock)?;
        let sig = self
            .inner
            .key
            .sign(note.text(), timestamp)
            .map_err(|_| AddCheckpointError::Clock)?;
        tracing::debug!(
            target: LOG_TARGET,
            origin = ?cp.origin,
            old_size,
            size = cp.size,
            timestamp,
            "checkpoint cosigned",
        );
        Ok(vec![sig])
    }
}

impl Inner {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, StateStore> {
        // A panic inside `commit` leaves memory at the last durable state (it updates memory
        // only after the disk write), so a poisoned lock still guards consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The atomic step: compare the caller's old size with the stored one, verify the proof
    /// against the stored root, and make the new state durable, all under one lock.
    fn check_and_store(
        &self,
        origin: &str,
        old_size: u64,
        proof: &[Hash],
        new: Cosigned,
    ) -> Result<(), AddCheckpointError> {
        let mut state = self.lock_state();
        let current = state.get(origin);
        if old_size != current.size {
            return Err(AddCheckpointError::StaleOldSize {
                old_size,
                cosigned_size: current.size,
            });
        }
        if new.size == current.size && new.root != current.root {
            return Err(AddCheckpointError::ConflictingRoot { size: new.size });
        }
        verify_consistency(old_size, new.size, &current.root, &new.root, proof).map_err(
            |source| AddCheckpointError::InconsistentProof {
                old_size,
                size: new.size,
                source,
            },
        )?;
        if new == current {
            return Ok(());
        }
        state
            .commit(origin, new)
            .map_err(AddCheckpointError::Storage)
    }
}

/// The witness's routes: `POST <prefix>/add-checkpoint`.
pub fn router(witness: Witness) -> Router {
    let path = format!("{}/add-checkpoint", witness.inner.prefix);
    Router::new()
        .route(&path, post(handle_add_checkpoint))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(witness)
}

async fn handle_add_checkpoint(State(witness): State<Witness>, body: Bytes) -> Response {
    match witness.add_checkpoint(&body).await {
        Ok(sigs) => {
            let lines: String = sigs.iter().map(NoteSignature::to_line).collect();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                lines,
            )
                .into_response()
        }
        Err(e) => {
            let status = e.status();
            tracing::debug!(
                target: LOG_TARGET,
                status = status.as_u16(),
                error = %e,
                "add-checkpoint refused",
            );
            if let AddCheckpointError::StaleOldSize { cosigned_size, .. } = e {
                return (
                    status,
                    [(header::CONTENT_TYPE, TLOG_SIZE_CONTENT_TYPE)],
                    format!("{cosigned_size}\n"),
                )
                    .into_response();
            }
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{e}\n"),
            )
                .into_response()
        }
    }
}

/// Opens the witness and serves it on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: WitnessConfig,
) -> Result<(), WitnessError> {
    serve_with_shutdown(listener, cfg, std::future::pending()).await
}

/// Like [`serve`], returning once `shutdown` completes and in-flight requests finish.
pub async fn serve_with_shutdown(
    listener: tokio::net::TcpListener,
    cfg: WitnessConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WitnessError> {
    let witness = tokio::task::spawn_blocking(move || Witness::open(cfg))
        .await
        .map_err(|e| WitnessError::Serve(std::io::Error::other(e)))??;
    tracing::debug!(
        target: LOG_TARGET,
        addr = ?listener.local_addr().ok(),
        cosigner = %witness.verifier().encode(),
        "witness listening",
    );
    axum::serve(listener, router(witness))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(WitnessError::Serve)
}
