//! The checkpoint pusher: sends each checkpoint the ledger writer signs to every configured
//! witness and keeps the cosignatures that come back.
//!
//! [`start`] returns a [`CheckpointHook`] for [`LedgerOptions::on_checkpoint`] and a
//! [`PusherHandle`]. The hook only replaces a value in a watch channel, so the writer thread
//! never waits on the network. A tracker task reads the new records' leaf hashes from the
//! segment files, checks the checkpoint's root against them, and hands the checkpoint to one
//! worker task per witness. Each worker sends `old <size it last cosigned>` with a consistency
//! proof from that size, verifies the returned cosignature under the witness's pinned key, and
//! appends the cosigned note to `<ledger dir>/cosignatures.jsonl` (fsynced) for
//! `kling-audit verify --witness-key`.
//!
//! Checkpoints coalesce: a worker that is busy or backing off only ever pushes the newest one.
//! Transport failures and unexpected answers are retried with exponential backoff; refusals the
//! protocol defines (a fork or rollback seen by the witness, an untrusted key, an unknown origin)
//! are logged as errors and not retried, since repeating the same request cannot succeed. The
//! next checkpoint is tried afresh.
//!
//! The size each witness last cosigned is kept in memory and in `<ledger dir>/witness-state.json`
//! so that a restart sends the right `old` size at once; the file is a cache: when it is missing
//! or wrong, the witness's 409 answer names the right size and the pusher retries with it.
//!
//! [`LedgerOptions::on_checkpoint`]: kling_audit_ledger::LedgerOptions

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kling_audit_ledger::cpstore::read_checkpoints;
use kling_audit_ledger::record::parse_line;
use kling_audit_ledger::segment::{list_segments, sync_dir, write_atomic};
use kling_audit_ledger::sign::parse_checkpoint_note;
use kling_audit_ledger::verify::{StoredCosignature, COSIGNATURES_FILE};
use kling_audit_ledger::{CheckpointHook, SignedCheckpoint};
use kling_audit_merkle::{consistency_proof, root, Frontier, Hash, ProofError};
use kling_audit_note::{CosignatureVerifier, KeyError, Note};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{add_checkpoint, AddCheckpointOutcome};

/// The pusher's record of what each witness last cosigned, beside the segments.
pub const STATE_FILE: &str = "witness-state.json";

const LOG_TARGET: &str = "kling_audit::pusher";
const STATE_VERSION: u32 = 1;
/// One witness request; a witness answers in milliseconds unless it is down.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Consecutive 409 "stale old size" answers followed at once before backing off.
const MAX_IMMEDIATE_RETRIES: u32 = 3;

/// One witness to push to.
#[derive(Clone, Debug)]
pub struct WitnessTarget {
    /// The full `add-checkpoint` URL, `<submission prefix>/add-checkpoint`.
    pub url: String,
    /// The witness's cosigner verifier key; a cosignature is kept only if it verifies here.
    pub verifier: CosignatureVerifier,
}

/// Why a `URL=VKEY` witness specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// No `=` separates the URL from the key.
    #[error("witness must be given as URL=VERIFIER_KEY")]
    MissingSeparator,
    /// The URL part is not an absolute http(s) URL.
    #[error("witness URL {url:?} must start with http:// or https://")]
    BadUrl {
        /// The URL part as given.
        url: String,
    },
    /// The key part is not a cosigner verifier key.
    #[error("witness verifier key: {0}")]
    Key(#[from] KeyError),
}

impl WitnessTarget {
    /// A target from an `add-checkpoint` URL and an encoded cosigner verifier key
    /// (`<name>+<id>+<base64>`, type 0x04 or 0x01).
    pub fn new(url: impl Into<String>, verifier_key: &str) -> Result<Self, TargetError> {
        let url = url.into();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(TargetError::BadUrl { url });
        }
        let verifier = CosignatureVerifier::from_encoded(verifier_key.trim())?;
        Ok(Self { url, verifier })
    }

    /// Parses `URL=VKEY`. A URL may hold `=` in its query and base64 may end in `=` padding,
    /// so every `=` is tried from the left and the first split giving a valid key wins.
    pub fn parse(spec: &str) -> Result<Self, TargetError> {
        let mut first_err = None;
        for (i, _) in spec.match_indices('=') {
            match Self::new(&spec[..i], &spec[i + 1..]) {
                Ok(t) => return Ok(t),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(TargetError::MissingSeparator))
    }

    fn name(&self) -> &str {
        self.verifier.name()
    }
}

/// What the pusher knows about one witness; see [`PusherHandle::statuses`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessStatus {
    /// The witness's key name.
    pub name: String,
    /// The `add-checkpoint` URL.
    pub url: String,
    /// The largest checkpoint size whose cosignature this pusher verified and stored (or found
    /// recorded with the same root in the state file); 0 if none.
    pub cosigned_size: u64,
    /// The size the witness last cosigned as far as the pusher knows: the next `old` size.
    pub witness_size: u64,
    /// The largest checkpoint size the witness refused for good (fork, rollback, untrusted
    /// key, unknown origin); 0 if none.
    pub refused_size: u64,
    /// The newest failure, for operators; cleared by a success.
    pub last_error: Option<String>,
}

/// [`PusherHandle::wait_cosigned`] ended without every witness cosigning.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", describe_refusals(.witnesses))]
pub struct PushRefused {
    /// The status of every witness when waiting ended.
    pub witnesses: Vec<WitnessStatus>,
}

fn describe_refusals(ws: &[WitnessStatus]) -> String {
    let parts: Vec<String> = ws
        .iter()
        .filter(|w| w.last_error.is_some())
        .map(|w| {
            format!(
                "witness {} ({}): {}",
                w.name,
                w.url,
                w.last_error.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if parts.is_empty() {
        "the pusher stopped before every witness cosigned".into()
    } else {
        parts.join("; ")
    }
}

/// Queries and waits on a running pusher. Cheap to clone.
#[derive(Clone)]
pub struct PusherHandle {
    shared: Arc<Shared>,
}

impl PusherHandle {
    /// Every witness's status, in the order the targets were given.
    pub fn statuses(&self) -> Vec<WitnessStatus> {
        self.shared.status.borrow().clone()
    }

    /// The largest size the named witness cosigned, as [`WitnessStatus::cosigned_size`].
    pub fn cosigned_size(&self, witness_name: &str) -> Option<u64> {
        self.shared
            .status
            .borrow()
            .iter()
            .filter(|w| w.name == witness_name)
            .map(|w| w.cosigned_size)
            .max()
    }

    /// The largest checkpoint size handed to the witnesses so far; 0 before the first.
    pub fn latest_size(&self) -> u64 {
        self.shared.latest.load(Ordering::Acquire)
    }

    /// A receiver that sees every status change (for metrics or custom waits).
    pub fn subscribe(&self) -> watch::Receiver<Vec<WitnessStatus>> {
        self.shared.status.subscribe()
    }

    /// Resolves once every witness has cosigned at least `size`, or with an error as soon as
    /// one of them refused a checkpoint of at least `size` for good. Retries of transport
    /// failures continue meanwhile, so bound the wait with a timeout where that matters.
    pub async fn wait_cosigned(&self, size: u64) -> Result<(), PushRefused> {
        let mut rx = self.shared.status.subscribe();
        let done = |v: &Vec<WitnessStatus>| {
            v.iter().all(|w| w.cosigned_size >= size)
                || v.iter()
                    .any(|w| w.cosigned_size < size && w.refused_size >= size)
        };
        let result = rx.wait_for(done).await.map(|v| v.clone());
        match result {
            Ok(v) if v.iter().all(|w| w.cosigned_size >= size) => Ok(()),
            Ok(v) => Err(PushRefused { witnesses: v }),
            Err(_) => Err(PushRefused {
                witnesses: self.statuses(),
            }),
        }
    }
}

/// Starts pushing to `targets` on `runtime`. Put the hook in `LedgerOptions::on_checkpoint`
/// of the ledger in `ledger_dir`; the pusher stops once every clone of the hook is dropped
/// (the ledger closed) and each witness has been sent the last checkpoint.
///
/// On start it also pushes the newest checkpoint already in `checkpoints.jsonl`, so a restart
/// catches up on a checkpoint that was signed but not cosigned. Problems with the state file
/// are logged and cost at most one extra round trip per witness.
pub fn start(
    ledger_dir: PathBuf,
    targets: Vec<WitnessTarget>,
    runtime: tokio::runtime::Handle,
) -> (CheckpointHook, PusherHandle) {
    let state = load_state(&ledger_dir);
    repair_cosignature_tail(&ledger_dir);
    let statuses = targets
        .iter()
        .map(|t| {
            let known = state.get(&t.verifier.encode());
            WitnessStatus {
                name: t.name().to_owned(),
                url: t.url.clone(),
                cosigned_size: 0,
                witness_size: known.map_or(0, |k| k.size),
                refused_size: 0,
                last_error: None,
            }
        })
        .collect();
    let (status, _) = watch::channel(statuses);
    let shared = Arc::new(Shared {
        dir: ledger_dir,
        targets,
        leaves: Mutex::new(LeafTail::default()),
        state: Mutex::new(state),
        append: Mutex::new(()),
        status,
        latest: AtomicU64::new(0),
    });
    let (hook_tx, hook_rx) = watch::channel::<Option<Arc<SignedCheckpoint>>>(None);
    let mut worker_txs = Vec::with_capacity(shared.targets.len());
    for idx in 0..shared.targets.len() {
        let (tx, rx) = watch::channel(None);
        worker_txs.push(tx);
        runtime.spawn(run_worker(Arc::clone(&shared), idx, rx));
    }
    runtime.spawn(run_tracker(Arc::clone(&shared), hook_rx, worker_txs));
    let hook: CheckpointHook = Arc::new(move |cp: &SignedCheckpoint| {
        // Never blocks: the tracker sees the newest value whenever it gets to it.
        hook_tx.send_replace(Some(Arc::new(cp.clone())));
    });
    (hook, PusherHandle { shared })
}

struct Shared {
    dir: PathBuf,
    targets: Vec<WitnessTarget>,
    leaves: Mutex<LeafTail>,
    /// The state file's content, by encoded verifier key; written whole on each change.
    state: Mutex<BTreeMap<String, StateEntry>>,
    /// Serializes appends to the cosignature file.
    append: Mutex<()>,
    status: watch::Sender<Vec<WitnessStatus>>,
    latest: AtomicU64,
}

type Pending = Option<Arc<SignedCheckpoint>>;

/// What one push attempt leaves the worker to do.
enum Step {
    /// The checkpoint is cosigned and stored.
    Done,
    /// A refusal that repeating cannot change; wait for a newer checkpoint.
    GiveUp,
    /// The witness named the right old size; send again now.
    Again,
    /// A transient failure; send again after a backoff.
    Retry,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent before anything that could panic.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn run_tracker(
    shared: Arc<Shared>,
    mut rx: watch::Receiver<Pending>,
    workers: Vec<watch::Sender<Pending>>,
) {
    let mut dispatched = 0u64;
    let dir = shared.dir.clone();
    let seed = tokio::task::spawn_blocking(move || newest_stored_checkpoint(&dir))
        .await
        .ok()
        .flatten();
    if let Some(cp) = seed {
        dispatch(&shared, cp, &workers, &mut dispatched).await;
    }
    while rx.changed().await.is_ok() {
        let next = rx.borrow_and_update().clone();
        if let Some(cp) = next {
            dispatch(&shared, cp, &workers, &mut dispatched).await;
        }
    }
}

/// Reads the leaves up to the checkpoint, checks its root, and hands it to every worker.
async fn dispatch(
    shared: &Arc<Shared>,
    cp: Arc<SignedCheckpoint>,
    workers: &[watch::Sender<Pending>],
    dispatched: &mut u64,
) {
    if cp.size <= *dispatched {
        return;
    }
    let s = Arc::clone(shared);
    let (size, root) = (cp.size, cp.root);
    let prepared = tokio::task::spawn_blocking(move || lock(&s.leaves).prepare(&s.dir, size, root))
        .await
        .unwrap_or_else(|e| Err(TailError::Task(e.to_string())));
    if let Err(e) = prepared {
        tracing::error!(
            target: LOG_TARGET,
            size,
            error = %e,
            "checkpoint not pushed: its records could not be read back",
        );
        return;
    }
    *dispatched = size;
    shared.latest.fetch_max(size, Ordering::AcqRel);
    for w in workers {
        w.send_replace(Some(Arc::clone(&cp)));
    }
}

async fn run_worker(shared: Arc<Shared>, idx: usize, mut rx: watch::Receiver<Pending>) {
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(target: LOG_TARGET, error = %e, "cannot build the HTTP client");
            return;
        }
    };
    let mut closed = false;
    while !closed {
        if rx.changed().await.is_err() {
            return;
        }
        let mut backoff = FIRST_RETRY;
        let mut immediate = 0u32;
        loop {
            let Some(cp) = rx.borrow_and_update().clone() else {
                break;
            };
            match shared.push_once(idx, &client, &cp).await {
                Step::Done | Step::GiveUp => break,
                Step::Again if immediate < MAX_IMMEDIATE_RETRIES => {
                    immediate += 1;
                    continue;
                }
                Step::Again | Step::Retry => {}
            }
            immediate = 0;
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                changed = rx.changed(), if !closed => match changed {
                    // A newer checkpoint replaces the failing one; try it at once.
                    Ok(()) => {
                        backoff = FIRST_RETRY;
                        continue;
                    }
                    // The ledger closed: keep retrying its last checkpoint.
                    Err(_) => {
                        closed = true;
                        tokio::time::sleep(backoff).await;
                    }
                },
            }
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }
}

impl Shared {
    async fn push_once(
        self: &Arc<Self>,
        idx: usize,
        client: &reqwest::Client,
        cp: &SignedCheckpoint,
    ) -> Step {
        let target = &self.targets[idx];
        let key = target.verifier.encode();
        let known = lock(&self.state).get(&key).cloned().unwrap_or_default();
        let old = known.size;
        if old > cp.size {
            self.refuse(
                idx,
                cp.size,
                format!(
                    "the witness last cosigned size {old}, more than this checkpoint's {}: \
                     the ledger holds less than the witness saw (rolled back?)",
                    cp.size
                ),
            );
            return Step::GiveUp;
        }
        if old == cp.size && known.root.as_deref() == Some(&*STANDARD.encode(cp.root)) {
            self.update(idx, |w| {
                w.cosigned_size = w.cosigned_size.max(cp.size);
                w.last_error = None;
            });
            return Step::Done;
        }

        let s = Arc::clone(self);
        let new = cp.size;
        let proof = tokio::task::spawn_blocking(move || {
            let tail = lock(&s.leaves);
            consistency_proof(old, new, &tail.leaves[..]).map_err(TailError::Proof)
        })
        .await
        .unwrap_or_else(|e| Err(TailError::Task(e.to_string())));
        let proof = match proof {
            Ok(p) => p,
            Err(e) => {
                self.refuse(idx, cp.size, format!("no consistency proof: {e}"));
                return Step::GiveUp;
            }
        };

        let outcome = add_checkpoint(client, &target.url, old, &proof, cp.note.as_bytes()).await;
        match outcome {
            Ok(AddCheckpointOutcome::Cosigned(sigs)) => self.keep(idx, cp, sigs).await,
            Ok(AddCheckpointOutcome::StaleOldSize { witness_size }) => {
                self.learn(idx, witness_size).await;
                if witness_size > cp.size {
                    self.refuse(
                        idx,
                        cp.size,
                        format!(
                            "the witness has cosigned size {witness_size}, more than this \
                             checkpoint's {}: the ledger holds less than the witness saw \
                             (rolled back?)",
                            cp.size
                        ),
                    );
                    return Step::GiveUp;
                }
                if witness_size == old {
                    self.fail(
                        idx,
                        format!("the witness calls old size {old} stale yet names it"),
                    );
                    return Step::Retry;
                }
                tracing::info!(
                    target: LOG_TARGET,
                    witness = target.name(),
                    old,
                    witness_size,
                    "witness named its last cosigned size; sending again from it",
                );
                Step::Again
            }
            Ok(AddCheckpointOutcome::ConflictingRoot { message }) => {
                self.refuse(
                    idx,
                    cp.size,
                    format!(
                        "the witness cosigned another root at size {}: this ledger's history \
                         differs from what the witness saw (forked?); witness says: {message}",
                        cp.size
                    ),
                );
                Step::GiveUp
            }
            Ok(AddCheckpointOutcome::InconsistentProof) => {
                self.refuse(
                    idx,
                    cp.size,
                    format!(
                        "the witness found size {} inconsistent with size {old} it cosigned: \
                         this ledger's history differs from what the witness saw (forked?)",
                        cp.size
                    ),
                );
                Step::GiveUp
            }
            Ok(AddCheckpointOutcome::Forbidden) => {
                let msg = "the witness does not trust this ledger's checkpoint key";
                self.refuse(idx, cp.size, msg.into());
                Step::GiveUp
            }
            Ok(AddCheckpointOutcome::UnknownOrigin) => {
                let msg = "the witness is not configured for this ledger's origin";
                self.refuse(idx, cp.size, msg.into());
                Step::GiveUp
            }
            Ok(AddCheckpointOutcome::BadRequest { message }) => {
                self.refuse(
                    idx,
                    cp.size,
                    format!("the witness refused the request: {message}"),
                );
                Step::GiveUp
            }
            Err(e) => {
                self.fail(idx, e.to_string());
                Step::Retry
            }
        }
    }

    /// Verifies the returned cosignature and stores the cosigned note before counting it.
    async fn keep(
        self: &Arc<Self>,
        idx: usize,
        cp: &SignedCheckpoint,
        sigs: Vec<kling_audit_note::NoteSignature>,
    ) -> Step {
        let target = &self.targets[idx];
        let mut note = match Note::parse(cp.note.as_bytes()) {
            Ok(n) => n,
            Err(e) => {
                self.refuse(
                    idx,
                    cp.size,
                    format!("our checkpoint note is unreadable: {e}"),
                );
                return Step::GiveUp;
            }
        };
        let Some(sig) = sigs
            .into_iter()
            .find(|s| target.verifier.verify(note.text(), s).is_ok())
        else {
            self.fail(
                idx,
                "the witness answered 200 but no cosignature verifies under its pinned key".into(),
            );
            return Step::Retry;
        };
        if let Err(e) = note.add_signature(sig) {
            self.fail(idx, format!("cannot add the cosignature line: {e}"));
            return Step::Retry;
        }
        let line = StoredCosignature {
            witness: target.name().to_owned(),
            size: cp.size,
            root: STANDARD.encode(cp.root),
            note: String::from_utf8_lossy(&note.to_bytes()).into_owned(),
        };
        let s = Arc::clone(self);
        let entry = StateEntry {
            size: cp.size,
            root: Some(line.root.clone()),
            url: target.url.clone(),
        };
        let key = target.verifier.encode();
        let stored = tokio::task::spawn_blocking(move || {
            {
                let _one_writer = lock(&s.append);
                append_cosignature(&s.dir, &line)?;
            }
            s.save_state(key, entry)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        if let Err(e) = stored {
            // The witness has moved on; the next attempt learns its size from a 409 and gets
            // the same checkpoint cosigned again.
            self.fail(idx, format!("cannot store the cosignature: {e}"));
            return Step::Retry;
        }
        tracing::info!(
            target: LOG_TARGET,
            witness = target.name(),
            size = cp.size,
            "checkpoint cosigned",
        );
        self.update(idx, |w| {
            w.cosigned_size = w.cosigned_size.max(cp.size);
            w.witness_size = cp.size;
            w.last_error = None;
        });
        Step::Done
    }

    /// Records the size a witness says it last cosigned (root unknown).
    async fn learn(self: &Arc<Self>, idx: usize, size: u64) {
        let target = &self.targets[idx];
        let entry = StateEntry {
            size,
            root: None,
            url: target.url.clone(),
        };
        let (s, key) = (Arc::clone(self), target.verifier.encode());
        let saved = tokio::task::spawn_blocking(move || s.save_state(key, entry))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        if let Err(e) = saved {
            // Memory was updated before the write; only a restart would repeat the 409.
            tracing::warn!(target: LOG_TARGET, error = %e, "cannot save {STATE_FILE}");
        }
        self.update(idx, |w| w.witness_size = size);
    }

    /// Updates the in-memory state, then writes the whole file atomically.
    fn save_state(&self, key: String, entry: StateEntry) -> io::Result<()> {
        let mut state = lock(&self.state);
        state.insert(key, entry);
        let file = StateFile {
            version: STATE_VERSION,
            witnesses: state
                .iter()
                .map(|(k, e)| StateLine {
                    key: k.clone(),
                    url: e.url.clone(),
                    size: e.size,
                    root: e.root.clone(),
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        bytes.push(b'\n');
        write_atomic(&self.dir.join(STATE_FILE), &bytes)
    }

    fn update(&self, idx: usize, f: impl FnOnce(&mut WitnessStatus)) {
        self.status.send_modify(|v| {
            if let Some(w) = v.get_mut(idx) {
                f(w);
            }
        });
    }

    /// A transient failure: logged as a warning and retried.
    fn fail(&self, idx: usize, msg: String) {
        let t = &self.targets[idx];
        tracing::warn!(
            target: LOG_TARGET,
            witness = t.name(),
            url = %t.url,
            error = %msg,
            "witness push failed; will retry",
        );
        self.update(idx, |w| w.last_error = Some(msg));
    }

    /// A refusal for good: logged as an error; the checkpoint is not retried.
    fn refuse(&self, idx: usize, size: u64, msg: String) {
        let t = &self.targets[idx];
        tracing::error!(
            target: LOG_TARGET,
            witness = t.name(),
            url = %t.url,
            size,
            error = %msg,
            "witness refused the checkpoint",
        );
        self.update(idx, |w| {
            w.refused_size = w.refused_size.max(size);
            w.last_error = Some(msg);
        });
    }
}

/// Why the leaves of a checkpoint could not be produced.
#[derive(Debug, thiserror::Error)]
enum TailError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{segment} at byte {offset}: {reason}")]
    Record {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("no segment holds record {seq}, needed for checkpoint size {size}")]
    Missing { seq: u64, size: u64 },
    #[error("the records' root at size {size} is not the checkpoint's root")]
    RootMismatch { size: u64 },
    #[error("consistency proof: {0}")]
    Proof(ProofError),
    #[error("background task failed: {0}")]
    Task(String),
}

/// The leaf hashes of every record read so far, tailed from the segment files.
///
/// Known limit: all leaf hashes stay in memory (32 bytes per record, 320 MB for ten million
/// records) and each proof rehashes subtrees from leaves, O(n) per push; a tile or node cache
/// would bound both.
#[derive(Default)]
struct LeafTail {
    leaves: Vec<Hash>,
    /// The segment being read and the offset just after its last complete line read.
    current: Option<(PathBuf, u64)>,
    /// Advanced to each checkpoint's size to check its root without rehashing everything.
    checked: Frontier,
}

impl LeafTail {
    /// Reads records until `size` leaves are known, then checks the root at `size`.
    fn prepare(&mut self, dir: &Path, size: u64, expected: Hash) -> Result<(), TailError> {
        self.extend_to(dir, size)?;
        let actual = if self.checked.size() <= size {
            while self.checked.size() < size {
                self.checked.push(self.leaves[self.checked.size() as usize]);
            }
            self.checked.root()
        } else {
            root(&self.leaves[..size as usize])
        };
        if actual != expected {
            return Err(TailError::RootMismatch { size });
        }
        Ok(())
    }

    fn extend_to(&mut self, dir: &Path, size: u64) -> Result<(), TailError> {
        while (self.leaves.len() as u64) < size {
            let read = match self.current.clone() {
                Some((path, offset)) => self.read_from(&path, offset)?,
                None => 0,
            };
            if read > 0 {
                continue;
            }
            // The current segment has nothing more: the next one starts at the next seq.
            let next = self.leaves.len() as u64;
            let (segments, _) = list_segments(dir).map_err(|source| TailError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let current = self.current.as_ref().map(|(p, _)| p);
            let seg = segments
                .into_iter()
                .find(|s| s.first_seq == next && Some(&s.path) != current)
                .ok_or(TailError::Missing { seq: next, size })?;
            self.current = Some((seg.path, 0));
        }
        Ok(())
    }

    /// Parses the complete lines after `offset`; returns how many records were added.
    fn read_from(&mut self, path: &Path, offset: u64) -> Result<usize, TailError> {
        let io_err = |source| TailError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(io_err)?;
        // The newest segment ends in zeros that the writer overwrites with records, and a read
        // racing a write can see zeros followed by bytes written after them: what was read
        // ends at the first zero byte (no record holds one). A line still being written has
        // no newline yet. Both are read next time.
        let written = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let complete = buf[..written]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let (mut taken, mut added) = (0usize, 0usize);
        let mut failure = None;
        for line in buf[..complete].split_inclusive(|&b| b == b'\n') {
            match self.leaf_of(line, path, offset + taken as u64) {
                Ok(leaf) => {
                    self.leaves.push(leaf);
                    taken += line.len();
                    added += 1;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Lines taken stay taken even when a later one fails: read again, their seqs would
        // repeat and every later checkpoint would fail on them.
        self.current = Some((path.to_path_buf(), offset + taken as u64));
        match failure {
            Some(e) => Err(e),
            None => Ok(added),
        }
    }

    /// The leaf of the next record, from its line (newline included) at `offset` in `path`.
    fn leaf_of(&self, line: &[u8], path: &Path, offset: u64) -> Result<Hash, TailError> {
        let bad = |reason: String| TailError::Record {
            segment: path.to_path_buf(),
            offset,
            reason,
        };
        let body = &line[..line.len() - 1];
        let rec = parse_line(body).map_err(|e| bad(e.to_string()))?;
        let want = self.leaves.len() as u64;
        if rec.seq != want {
            return Err(bad(format!("seq {} where {want} was expected", rec.seq)));
        }
        if !rec.hash_ok() {
            return Err(bad(format!("record {want} does not match its stored hash")));
        }
        Ok(rec.leaf)
    }
}

/// The newest checkpoint in `checkpoints.jsonl`, if it reads as one.
fn newest_stored_checkpoint(dir: &Path) -> Option<Arc<SignedCheckpoint>> {
    let (stored, _) = read_checkpoints(dir).ok()?;
    let newest = stored.into_iter().max_by_key(|c| c.size)?;
    let (_, body) = parse_checkpoint_note(&newest.note).ok()?;
    (body.size == newest.size && body.size > 0).then(|| {
        Arc::new(SignedCheckpoint {
            size: body.size,
            root: body.root,
            note: newest.note,
        })
    })
}

/// Appends one line to the cosignature file and syncs it.
fn append_cosignature(dir: &Path, line: &StoredCosignature) -> io::Result<()> {
    let path = dir.join(COSIGNATURES_FILE);
    let existed = path.exists();
    let mut bytes = serde_json::to_vec(line).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    file.write_all(&bytes)?;
    file.sync_data()?;
    if !existed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Cuts a torn last line (a crash during an append), so the next line starts cleanly.
fn repair_cosignature_tail(dir: &Path) {
    let path = dir.join(COSIGNATURES_FILE);
    let Ok(data) = fs::read(&path) else {
        return;
    };
    if data.is_empty() || data.ends_with(b"\n") {
        return;
    }
    let keep = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let cut = OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(keep as u64).and_then(|()| f.sync_all()));
    match cut {
        Ok(()) => tracing::warn!(
            target: LOG_TARGET,
            path = %path.display(),
            cut = data.len() - keep,
            "cut a torn cosignature line",
        ),
        Err(e) => tracing::error!(
            target: LOG_TARGET,
            path = %path.display(),
            error = %e,
            "cannot cut a torn cosignature line",
        ),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct StateEntry {
    size: u64,
    /// Base64 root when the pusher verified a cosignature at `size`; `None` when the size was
    /// learned from a 409 answer.
    root: Option<String>,
    url: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    witnesses: Vec<StateLine>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateLine {
    /// The witness's encoded cosigner verifier key: its identity.
    key: String,
    url: String,
    size: u64,
    root: Option<String>,
}

/// Loads the state file; anything unreadable is logged and treated as empty.
fn load_state(dir: &Path) -> BTreeMap<String, StateEntry> {
    let path = dir.join(STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!(target: LOG_TARGET, path = %path.display(), error = %e, "cannot read the witness state; witnesses will name their sizes");
            return BTreeMap::new();
        }
    };
    match serde_json::from_slice::<StateFile>(&bytes) {
        Ok(f) if f.version == STATE_VERSION => f
            .witnesses
            .into_iter()
            .map(|l| {
                let entry = StateEntry {
                    size: l.size,
                    root: l.root,
                    url: l.url,
                };
                (l.key, entry)
            })
            .collect(),
        Ok(f) => {
            tracing::warn!(target: LOG_TARGET, path = %path.display(), version = f.version, "unknown witness state version; ignored");
            BTreeMap::new()
        }
        Err(e) => {
            tracing::warn!(target: LOG_TARGET, path = %path.display(), error = %e, "corrupt witness state; ignored");
            BTreeMap::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kling_audit_note::CosignerKey;

    #[test]
    fn witness_specs_split_at_the_first_workable_equals_sign() -> Result<(), TargetError> {
        let key = CosignerKey::from_seed("witness.example", &[3; 32])?
            .verifier()
            .encode();
        let t = WitnessTarget::parse(&format!("http://127.0.0.1:9/a?x=1={key}"))?;
        assert_eq!(t.url, "http://127.0.0.1:9/a?x=1");
        assert_eq!(t.verifier.encode(), key);
        assert_eq!(
            WitnessTarget::parse("http://127.0.0.1:9/a").map(|_| ()),
            Err(TargetError::MissingSeparator)
        );
        assert!(matches!(
            WitnessTarget::parse(&format!("127.0.0.1:9={key}")),
            Err(TargetError::BadUrl { .. })
        ));
        assert!(matches!(
            WitnessTarget::parse("http://127.0.0.1:9=notakey"),
            Err(TargetError::Key(_))
        ));
        Ok(())
    }

    #[test]
    fn state_file_round_trips_and_bad_files_read_as_empty() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        assert!(load_state(dir.path()).is_empty());
        let shared = Shared {
            dir: dir.path().to_path_buf(),
            targets: Vec::new(),
            leaves: Mutex::new(LeafTail::default()),
            state: Mutex::new(BTreeMap::new()),
            append: Mutex::new(()),
            status: watch::channel(Vec::new()).0,
            latest: AtomicU64::new(0),
        };
        let entry = StateEntry {
            size: 9,
            root: Some("r".into()),
            url: "http://127.0.0.1:1/add-checkpoint".into(),
        };
        shared.save_state("k".into(), entry.clone())?;
        assert_eq!(load_state(dir.path()).get("k"), Some(&entry));
        for bad in ["{", r#"{"version":2,"witnesses":[]}"#, r#"{"version":1}"#] {
            fs::write(dir.path().join(STATE_FILE), bad)?;
            assert!(load_state(dir.path()).is_empty(), "{bad}");
        }
        Ok(())
    }

    /// What a read racing the writer can see: a record's first bytes still as the zeros of the
    /// reserve, its last bytes already written. The tail takes the records before it, and once
    /// the record is whole, reads on from there (it used to read the taken records again,
    /// which failed every later checkpoint on a repeated seq).
    #[test]
    fn a_record_read_half_as_zeros_is_read_again_once_written(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("ledger");
        let mut opts = kling_audit_ledger::LedgerOptions::new(&dir);
        opts.keys_dir = Some(tmp.path().join("keys"));
        let (ledger, _) = kling_audit_ledger::Ledger::open(opts)?;
        for i in 0..3 {
            let details = kling_audit_ledger::Details::from_value(&serde_json::json!({ "i": i }))?;
            ledger.append(kling_audit_ledger::Entry::new("t", "a", details)?)?;
        }
        ledger.close()?;
        let (segments, _) = list_segments(&dir)?;
        let path = &segments[0].path;
        let whole = fs::read(path)?;
        let lines: Vec<&[u8]> = whole.split_inclusive(|&b| b == b'\n').collect();
        let leaves: Vec<Hash> = lines
            .iter()
            .map(|l| parse_line(&l[..l.len() - 1]).map(|r| r.leaf))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let n = leaves.len() as u64;
        // The last record's first 20 bytes read as zeros.
        let start = whole.len() - lines[lines.len() - 1].len();
        let mut racing = whole.clone();
        racing[start..start + 20].fill(0);
        fs::write(path, &racing)?;
        let mut tail = LeafTail::default();
        tail.prepare(&dir, n - 1, root(&leaves[..leaves.len() - 1]))?;
        fs::write(path, &whole)?;
        tail.prepare(&dir, n, root(&leaves))?;
        Ok(())
    }

    #[test]
    fn torn_cosignature_tail_is_cut_to_the_last_newline() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(COSIGNATURES_FILE);
        fs::write(&path, b"{\"a\":1}\n{\"b\"")?;
        repair_cosignature_tail(dir.path());
        assert_eq!(fs::read(&path)?, b"{\"a\":1}\n");
        repair_cosignature_tail(dir.path());
        assert_eq!(fs::read(&path)?, b"{\"a\":1}\n");
        Ok(())
    }
}
