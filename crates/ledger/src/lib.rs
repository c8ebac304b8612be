//! The kling-audit ledger: an append-only, hash-chained, Merkle-checkpointed audit log.
//!
//! Records are JSON lines in segment files (see [`record`] for the byte-level hash rule). One
//! writer per directory appends them through a group-commit thread ([`Ledger::append`] returns
//! only once the record is durable), MACs each under a forward-secure epoch key, and signs a
//! C2SP checkpoint of the RFC 6962 tree at least every second while records arrive. The
//! [`verify`] module checks a ledger offline. This crate does no networking.

mod checkpointer;
pub mod commit;
pub mod cpstore;
pub mod details;
pub mod epoch;
pub mod error;
mod fastline;
pub mod keys;
pub mod lock;
pub mod open;
pub mod paths;
pub mod proof;
mod readbuf;
pub mod record;
pub mod segment;
pub mod sign;
mod syncer;
pub mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kling_audit_merkle::Hash;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

pub use commit::Commitments;
pub use details::{unfaithful_json, unfaithful_json_within, Details, UnfaithfulJson};
pub use error::{AppendError, EntryError, OpenError};
pub use keys::{InitSecrets, KeySet};
pub use open::TornTail;
pub use record::Entry;

/// How long to wait before an acknowledged record is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge only after `fdatasync` of the batch. A crash, even a power loss, loses no
    /// acknowledged record. The default.
    #[default]
    Sync,
    /// Acknowledge after `write(2)`; sync within about 100 ms. A process crash loses nothing,
    /// a power loss or kernel crash may lose the last fraction of a second of records.
    Buffered,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sync" => Ok(Durability::Sync),
            "buffered" => Ok(Durability::Buffered),
            other => Err(format!(
                "unknown durability mode {other:?}; use `sync` or `buffered`"
            )),
        }
    }
}

/// A source of wall-clock time; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Called after each checkpoint is signed and stored; see [`LedgerOptions::on_checkpoint`].
pub type CheckpointHook = Arc<dyn Fn(&SignedCheckpoint) + Send + Sync>;

/// A checkpoint as the writer signed it.
#[derive(Debug, Clone)]
pub struct SignedCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The C2SP signed note.
    pub note: String,
}

/// How to open a ledger for writing.
#[derive(Clone)]
pub struct LedgerOptions {
    pub dir: PathBuf,
    /// Where the keys are; by default the sibling directory `<dir>.keys`.
    pub keys_dir: Option<PathBuf>,
    /// Create keys (storing the MAC root key beside them) when the keys directory has none.
    pub create_keys: bool,
    /// The origin for created keys; by default `kling-audit/<random>`.
    pub origin: Option<String>,
    pub durability: Durability,
    pub max_segment_bytes: u64,
    pub epoch_max_records: u64,
    pub epoch_max_age: Duration,
    pub checkpoint_interval: Duration,
    pub queue_capacity: usize,
    /// When the writer is idle, [`Ledger::append`] and [`Ledger::append_async`] write and sync
    /// the record on the caller's thread instead of queueing it (on by default). Saves two
    /// thread wake-ups per append at low load; under load records are queued and share syncs.
    pub inline_appends: bool,
    pub clock: Clock,
    /// Called with each checkpoint once it is signed and stored in the checkpoint log and the
    /// signed head, in increasing size, on the ledger's checkpoint thread. A flush or a close
    /// returns only after the hook has run for its checkpoint, and no other checkpoint is
    /// stored while the hook runs, so it must return quickly: hand slow work (a network push)
    /// to another thread or task. A panic in the hook stops the ledger, which then refuses
    /// records with [`AppendError::Poisoned`].
    ///
    /// The writer may be waiting for the hook to return, so a call from the hook into its own
    /// ledger that waits for the writer ([`Ledger::flush`], [`Ledger::close`], the appends
    /// and their async forms) is refused with [`AppendError::InsideCheckpointHook`];
    /// [`Ledger::head`] may be called. The hook must not wait on other threads for such calls
    /// either: that cannot be detected, and hangs both. A hook that keeps a [`Ledger`] handle
    /// keeps the writer running until [`Ledger::close`] is called.
    pub on_checkpoint: Option<CheckpointHook>,
}

/// Default segment size limit: 64 MiB.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

impl LedgerOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LedgerOptions {
            dir: dir.into(),
            keys_dir: None,
            create_keys: true,
            origin: None,
            durability: Durability::Sync,
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
            epoch_max_records: 100_000,
            epoch_max_age: Duration::from_secs(60),
            checkpoint_interval: Duration::from_millis(500),
            queue_capacity: 65_536,
            inline_appends: true,
            clock: Arc::new(OffsetDateTime::now_utc),
            on_checkpoint: None,
        }
    }

    /// The keys directory in use.
    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir
            .clone()
            .unwrap_or_else(|| default_keys_dir(&self.dir))
    }
}

/// `<dir>.keys`, beside the ledger directory and outside it.
pub fn default_keys_dir(dir: &Path) -> PathBuf {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ledger".into());
    abs.with_file_name(format!("{name}.keys"))
}

/// Refuses a keys directory that is the ledger directory or lies inside it (docs/keys.md),
/// judging both by where they really lead, whether or not they exist yet.
pub fn check_keys_outside(dir: &Path, keys_dir: &Path) -> Result<(), OpenError> {
    if !paths::is_within(dir, keys_dir) {
        return Ok(());
    }
    Err(OpenError::KeysInsideLedger {
        dir: dir.to_path_buf(),
        keys_dir: keys_dir.to_path_buf(),
        same: paths::resolved(dir) == paths::resolved(keys_dir),
    })
}

/// `n` and `word`, with an `s` unless `n` is 1: "1 record", "2 records".
pub(crate) fn count(n: u64, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// A new random origin.
pub fn random_origin() -> String {
    format!(
        "kling-audit/{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}

/// The acknowledgement of a durable record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub hash: Hash,
    pub id: uuid::Uuid,
    pub ts: String,
}

/// The writer's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Number of durable records.
    pub size: u64,
    /// Hash of the newest record (zeros when empty).
    pub hash: Hash,
    /// RFC 6962 root over all records.
    pub root: Hash,
    /// Size of the newest signed checkpoint.
    pub checkpoint_size: u64,
    pub epoch: u64,
    /// Why the writer stopped accepting records, if it did.
    pub poisoned: Option<String>,
}

/// What opening found and did.
#[derive(Debug)]
pub struct OpenReport {
    pub records: u64,
    pub torn_tail: Option<TornTail>,
    /// Set when this open created the keys.
    pub created_keys: Option<InitSecrets>,
    pub keys_dir: PathBuf,
}

impl std::fmt::Debug for InitSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitSecrets")
            .field("verifier_key", &self.verifier_key)
            .finish_non_exhaustive()
    }
}

/// A handle to an open ledger. Cheap to clone; the writer stops when the last handle is
/// dropped or [`Ledger::close`] is called.
///
/// Dropping the last handle seals the ledger as a close does, and waits (up to
/// [`DROP_WAIT`]) until the writer has finished and released the directory lock, so the
/// directory can be opened again at once. A drop cannot report errors: call
/// [`Ledger::close`] to learn whether the final sync and checkpoint succeeded.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tells this ledger's checkpoint thread from others.
    id: u64,
    tx: mpsc::Sender<Msg>,
    /// The writer's state, locked by the writer thread while it works and by an appender
    /// that writes inline.
    writer: Arc<Mutex<writer::Writer>>,
    inline: bool,
    head: Arc<Mutex<writer::Published>>,
    /// Records the sync thread has made durable and acknowledged (see [`Ledger::head`]).
    acked: Arc<AtomicU64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    dir: PathBuf,
    origin: String,
    capacity: usize,
    commitments: Commitments,
}

use writer::Msg;

/// How long dropping the last [`Ledger`] handle waits for the writer to seal the ledger and
/// release its directory lock; past it the writer finishes in the background.
pub const DROP_WAIT: Duration = Duration::from_secs(10);

impl Drop for Inner {
    fn drop(&mut self) {
        // The writer seals the ledger once its queue closes, which needs every sender gone;
        // this one would go only after this function.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, closed));
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(thread) = thread else {
            return;
        };
        if checkpointer::on_checkpoint_thread(self.id) {
            // Dropped by the checkpoint hook: the writer's last checkpoint waits for this
            // thread, so it must not wait for the writer.
            return;
        }
        let deadline = Instant::now() + DROP_WAIT;
        while !thread.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    dir = %self.dir.display(),
                    "the ledger writer is still sealing the ledger after {DROP_WAIT:?}; its \
                     directory lock is released once it finishes"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = thread.join();
    }
}

/// The next ledger's id.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl Ledger {
    /// Opens (or creates) the ledger in `opts.dir` for writing.
    pub fn open(opts: LedgerOptions) -> Result<(Ledger, OpenReport), OpenError> {
        let dir = opts.dir.clone();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        // Before anything is created: a refused open leaves no directory behind.
        check_keys_outside(&dir, &opts.keys_dir())?;
        if dir.exists() && !dir.is_dir() {
            return Err(OpenError::NotADirectory { dir });
        }
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            if let Some(parent) = std::path::absolute(&dir)
                .ok()
                .and_then(|d| d.parent().map(Path::to_path_buf))
            {
                segment::sync_dir(&parent).map_err(io(&parent))?;
            }
        }
        let lock = lock::DirLock::acquire(&dir)?;
        let keys_dir = opts.keys_dir();
        let key_err = |e: keys::KeyError| OpenError::Keys {
            dir: dir.clone(),
            detail: e.to_string(),
        };
        let (keys, created) = if keys::exists(&keys_dir) {
            (KeySet::load(&keys_dir).map_err(key_err)?, None)
        } else if !segment::list_segments(&dir).map_err(io(&dir))?.0.is_empty() {
            return Err(OpenError::NoKeysForLedger {
                dir: dir.clone(),
                keys_dir: keys_dir.clone(),
            });
        } else if opts.create_keys {
            let origin = opts.origin.clone().unwrap_or_else(random_origin);
            let (k, s) = KeySet::create(&keys_dir, &origin, true).map_err(key_err)?;
            (k, Some(s))
        } else {
            return Err(key_err(keys::KeyError::Missing {
                dir: keys_dir.clone(),
            }));
        };
        let signed = keys::load_signed_head(&keys_dir).map_err(key_err)?;
        let (cplog, checkpointed) = cpstore::CheckpointLog::open(&dir).map_err(io(&dir))?;
        let scan = open::scan_and_recover(&dir, signed, checkpointed)?;
        let last_cp_size = checkpointed.min(scan.frontier.size());
        let seg = match scan.segments.last() {
            Some(s) => Some(
                writer::reopen_segment(&s.path, &s.name, &s.day, scan.last_segment_len)
                    .map_err(io(&s.path))?,
            ),
            None => None,
        };
        // A new process never reuses the epoch of an earlier one: the writer thread seals the
        // epoch left open (if it holds records) and moves on before its first append.
        let (open_records, last_is_seal) = if scan.last_epoch == Some(keys.epoch.epoch()) {
            (scan.last_epoch_records, scan.last_is_seal)
        } else {
            (0, false)
        };
        let records = scan.next_seq;
        let head = Head {
            size: records,
            hash: scan.prev,
            root: scan.frontier.root(),
            checkpoint_size: last_cp_size,
            epoch: keys.epoch.epoch(),
            poisoned: None,
        };
        let acked = Arc::new(AtomicU64::new(scan.next_seq));
        let shared = Arc::new(Mutex::new(writer::Published::new(
            head,
            scan.frontier.clone(),
        )));
        let origin = keys.origin.clone();
        let commitments = Commitments::new(*keys.commit_key);
        let mac = record::mac_state(keys.epoch.key());
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let checkpointer = checkpointer::Checkpointer::start(
            checkpointer::Store {
                ledger: id,
                signer: keys.signer.clone(),
                log: cplog,
                keys_dir: keys.dir.clone(),
                hook: opts.on_checkpoint.clone(),
                head: Arc::clone(&shared),
            },
            last_cp_size,
        )
        .map_err(io(&dir))?;
        let mut w = writer::Writer {
            dir: dir.clone(),
            cfg: writer::Config {
                durability: opts.durability,
                max_segment_bytes: opts.max_segment_bytes,
                epoch_max_records: opts.epoch_max_records.max(1),
                epoch_max_age: opts.epoch_max_age,
                checkpoint_interval: opts.checkpoint_interval,
                clock: opts.clock.clone(),
            },
            keys,
            seg,
            next_seq: scan.next_seq,
            prev: scan.prev,
            frontier: scan.frontier,
            durable_hash: scan.prev,
            pool: None,
            pending: std::collections::VecDeque::new(),
            next_batch: 0,
            needs_sync: false,
            last_ts: scan.last_ts.unwrap_or_default(),
            epoch_started: Instant::now(),
            epoch_count: 0,
            checkpointer,
            last_cp_size,
            last_cp_time: Instant::now(),
            poisoned: None,
            unsynced: false,
            last_sync: Instant::now(),
            shared: shared.clone(),
            acked: Arc::clone(&acked),
            buf: Vec::with_capacity(1 << 20),
            ids: writer::IdSource::new(),
            mac,
            lock: Some(lock),
            closed: false,
            last_meeting: 0.0,
            meet_average: 0.0,
            sync_ewma: 0.0,
            spent: Vec::new(),
        };
        let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
        w.start(tx.downgrade(), open_records, last_is_seal);
        let w = Arc::new(Mutex::new(w));
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn({
                let w = Arc::clone(&w);
                move || writer::Writer::run(w, rx)
            })
            .map_err(io(&dir))?;
        spawn_ticker(tx.downgrade());
        let ledger = Ledger {
            inner: Arc::new(Inner {
                id,
                tx,
                writer: w,
                inline: opts.inline_appends,
                head: shared,
                acked,
                thread: Mutex::new(Some(thread)),
                dir: dir.clone(),
                origin,
                capacity: opts.queue_capacity.max(1),
                commitments,
            }),
        };
        if let Some(t) = &scan.torn {
            let details = serde_json::json!({
                "segment": t.segment,
                "offset": t.offset,
                "length": t.len,
                "sha256": hex::encode(t.sha256),
                "quarantine": t.quarantine,
                "reason": "torn tail after a crash",
            });
            let recorded = Details::from_value(&details)
                .and_then(|d| Entry::new("ledger.recovery", "kling-audit", d))
                .map_err(AppendError::from)
                .and_then(|entry| ledger.append(entry));
            recorded.map_err(|e| OpenError::Damaged {
                dir: dir.clone(),
                detail: format!("could not record the recovery: {e}"),
            })?;
        }
        let report = OpenReport {
            records,
            torn_tail: scan.torn,
            created_keys: created,
            keys_dir,
        };
        Ok((ledger, report))
    }

    /// Appends one record and returns once it is durable. Must not be called from inside an
    /// async runtime; use [`Ledger::append_async`] there.
    pub fn append(&self, entry: Entry) -> Result<Receipt, AppendError> {
        self.outside_hook("append")?;
        let (ack, rx) = oneshot::channel();
        if let Some(mut back) = self.try_inline(vec![(entry, ack)]) {
            if let Some((entry, ack)) = back.pop() {
                self.inner
                    .tx
                    .blocking_send(Msg::Append(entry, ack))
                    .map_err(|_| AppendError::Closed)?;
            }
        }
        rx.blocking_recv().map_err(|_| AppendError::Closed)?
    }

    /// Queues one record without waiting; [`PendingAppend::wait`] returns once it is durable.
    /// Lets one thread keep many appends in flight, so they share syncs.
    pub fn submit(&self, entry: Entry) -> Result<PendingAppend, AppendError> {
        self.outside_hook("submit")?;
        let (ack, rx) = oneshot::channel();
        self.inner
            .tx
            .blocking_send(Msg::Append(entry, ack))
            .map_err(|_| AppendError::Closed)?;
        Ok(PendingAppend(rx))
    }

    /// Appends one record and resolves once it is durable.
    ///
    /// When the writer is idle the record is written and synced on the calling thread (see
    /// [`LedgerOptions::inline_appends`]): the task then holds its runtime worker for one sync.
    pub async fn append_async(&self, entry: Entry) -> Result<Receipt, AppendError> {
        self.outside_hook("append_async")?;
        let (ack, rx) = oneshot::channel();
        if let Some(mut back) = self.try_inline(vec![(entry, ack)]) {
            if let Some((entry, ack)) = back.pop() {
                self.queue_async(Msg::Append(entry, ack)).await?;
            }
        }
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// Appends one record and resolves once it is durable, always through the writer thread's
    /// queue: for a caller whose runtime has other work that must not wait for a sync.
    pub async fn append_async_queued(&self, entry: Entry) -> Result<Receipt, AppendError> {
        self.outside_hook("append_async_queued")?;
        let (ack, rx) = oneshot::channel();
        self.queue_async(Msg::Append(entry, ack)).await?;
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// Appends records in this order, in one batch with one sync, and resolves once they are
    /// durable, with one result per entry. The records get increasing seqs, though not
    /// necessarily adjacent ones (an epoch seal may fall between them). Written inline when
    /// the writer is idle, as [`Ledger::append_async`] does.
    pub async fn append_group_async(
        &self,
        entries: Vec<Entry>,
    ) -> Vec<Result<Receipt, AppendError>> {
        self.append_group(entries, true).await
    }

    /// [`Ledger::append_group_async`], always through the writer thread's queue.
    pub async fn append_group_async_queued(
        &self,
        entries: Vec<Entry>,
    ) -> Vec<Result<Receipt, AppendError>> {
        self.append_group(entries, false).await
    }

    async fn append_group(
        &self,
        entries: Vec<Entry>,
        inline: bool,
    ) -> Vec<Result<Receipt, AppendError>> {
        if entries.is_empty() {
            return Vec::new();
        }
        let call = if inline {
            "append_group_async"
        } else {
            "append_group_async_queued"
        };
        if let Err(e) = self.outside_hook(call) {
            return entries.iter().map(|_| Err(e.clone())).collect();
        }
        let (group, receivers): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .map(|entry| {
                let (ack, rx) = oneshot::channel();
                ((entry, ack), rx)
            })
            .unzip();
        let back = if inline {
            self.try_inline(group)
        } else {
            Some(group)
        };
        if let Some(group) = back.filter(|g| !g.is_empty()) {
            // A refused send drops the acks, so every receiver below reports `Closed`.
            let _ = self.queue_async(Msg::AppendGroup(group)).await;
        }
        let mut results = Vec::with_capacity(receivers.len());
        for rx in receivers {
            results.push(rx.await.unwrap_or(Err(AppendError::Closed)));
        }
        results
    }

    /// Refuses a call that waits for the writer when it comes from this ledger's checkpoint
    /// hook: the writer may be waiting for the hook (see [`LedgerOptions::on_checkpoint`]).
    fn outside_hook(&self, call: &'static str) -> Result<(), AppendError> {
        if checkpointer::on_checkpoint_thread(self.inner.id) {
            return Err(AppendError::InsideCheckpointHook { call });
        }
        Ok(())
    }

    async fn queue_async(&self, msg: Msg) -> Result<(), AppendError> {
        self.inner
            .tx
            .send(msg)
            .await
            .map_err(|_| AppendError::Closed)
    }

    /// Writes the records on this thread if the writer is idle and nothing is queued; otherwise
    /// hands them back to be queued. A busy writer's lock is never waited for.
    #[allow(clippy::type_complexity)]
    fn try_inline(
        &self,
        group: Vec<(Entry, writer::AckTx)>,
    ) -> Option<Vec<(Entry, writer::AckTx)>> {
        if !self.inner.inline || self.inner.tx.capacity() < self.inner.capacity {
            return Some(group);
        }
        let Ok(mut w) = self.inner.writer.try_lock() else {
            return Some(group);
        };
        let back = w.try_inline(group).err();
        if back.is_none() {
            w.note_contention(self.inner.tx.capacity() < self.inner.capacity);
        }
        back
    }

    /// Syncs and signs a checkpoint of everything acknowledged so far.
    pub fn flush(&self) -> Result<Head, AppendError> {
        self.outside_hook("flush")?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .blocking_send(Msg::Flush(tx))
            .map_err(|_| AppendError::Closed)?;
        rx.blocking_recv().map_err(|_| AppendError::Closed)?
    }

    /// Async form of [`Ledger::flush`].
    pub async fn flush_async(&self) -> Result<Head, AppendError> {
        self.outside_hook("flush_async")?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Flush(tx))
            .await
            .map_err(|_| AppendError::Closed)?;
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// Seals the ledger (sync and final checkpoint) and stops the writer. Later appends fail
    /// with [`AppendError::Closed`].
    pub fn close(&self) -> Result<Head, AppendError> {
        self.outside_hook("close")?;
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.blocking_send(Msg::Close(tx)).is_err() {
            return Err(AppendError::Closed);
        }
        let result = rx.blocking_recv().map_err(|_| AppendError::Closed)?;
        if let Some(t) = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = t.join();
        }
        result
    }

    /// Async form of [`Ledger::close`].
    pub async fn close_async(&self) -> Result<Head, AppendError> {
        self.outside_hook("close_async")?;
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Close(tx)).await.is_err() {
            return Err(AppendError::Closed);
        }
        rx.await.map_err(|_| AppendError::Closed)?
    }

    /// The durable state, covering at least every record acknowledged before the call. Syncs
    /// that finished are taken in here; when the writer is busy and one of them has already
    /// answered its appenders, this waits for the writer to finish the batch it is writing.
    pub fn head(&self) -> Head {
        let read = || {
            self.inner
                .head
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .read()
        };
        // A successful sync does not wake the writer (that cost a wake-up per batch under
        // load), so an idle writer would otherwise publish it only at its next tick.
        if let Ok(mut w) = self.inner.writer.try_lock() {
            w.absorb_finished();
        }
        let head = read();
        if head.size >= self.inner.acked.load(Ordering::Acquire) {
            return head;
        }
        // The sync thread answered appenders of a sync that the busy writer has not taken in
        // yet (it is told before any appender is answered): wait for the writer's lock, held
        // only while it writes a batch, and take it in. A flush or close that holds the lock
        // while it waits for checkpoints has taken in every sync first, so it never gets here.
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .absorb_finished();
        read()
    }

    /// Appends waiting in the queue.
    pub fn queue_depth(&self) -> usize {
        self.inner.capacity - self.inner.tx.capacity()
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Keyed commitments under this deployment's commit key.
    pub fn commitments(&self) -> &Commitments {
        &self.inner.commitments
    }
}

/// An append in flight.
pub struct PendingAppend(oneshot::Receiver<Result<Receipt, AppendError>>);

impl PendingAppend {
    /// Blocks until the record is durable or refused.
    pub fn wait(self) -> Result<Receipt, AppendError> {
        self.0.blocking_recv().map_err(|_| AppendError::Closed)?
    }
}

/// Wakes the writer regularly so checkpoints and buffered syncs happen while idle.
fn spawn_ticker(tx: mpsc::WeakSender<Msg>) {
    let _ = std::thread::Builder::new()
        .name("ledger-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            let Some(tx) = tx.upgrade() else { return };
            let _ = tx.try_send(Msg::Tick);
        });
}

/// Unix milliseconds of a record timestamp.
pub(crate) fn ts_unix_millis(ts: &str) -> Option<u64> {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    let t = time::PrimitiveDateTime::parse(ts, &fmt).ok()?.assume_utc();
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats a time as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_ts(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let (year, month, day) = t.to_calendar_date();
    let (hour, minute, second, micro) = t.to_hms_micro();
    let year = match u32::try_from(year) {
        Ok(y) if y <= 9999 => y,
        _ => return format_ts_slow(t),
    };
    // Digits by hand: this runs once per record on the writer thread, where `format!` was a
    // visible share of its time.
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut b[0..4], year);
    put_digits(&mut b[5..7], u32::from(u8::from(month)));
    put_digits(&mut b[8..10], u32::from(day));
    put_digits(&mut b[11..13], u32::from(hour));
    put_digits(&mut b[14..16], u32::from(minute));
    put_digits(&mut b[17..19], u32::from(second));
    put_digits(&mut b[20..26], micro);
    b.iter().map(|&c| char::from(c)).collect()
}

/// Writes `v` in decimal, zero-padded to the width of `dst`.
fn put_digits(dst: &mut [u8], mut v: u32) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// [`format_ts`] for years outside 0000-9999.
fn format_ts_slow(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_formatted_by_hand_match_the_formatting_machinery() {
        let mut t = time::macros::datetime!(1969-12-31 23:59:59.999999 UTC);
        // A walk over many dates and times, with uneven steps so every field varies.
        for i in 0..20_000u32 {
            assert_eq!(format_ts(t), format_ts_slow(t), "at {t}");
            let nanos = (u64::from(i) * 7_919_001 % 1_000_000_000) as i32;
            t += time::Duration::new(i64::from(i % 97) * 8_641 + 3_601, nanos);
        }
        for edge in [
            time::macros::datetime!(0000-01-01 00:00:00 UTC),
            time::macros::datetime!(9999-12-31 23:59:59.999999 UTC),
            time::macros::datetime!(2026-12-04 00:00:00.000001 UTC),
        ] {
            assert_eq!(format_ts(edge), format_ts_slow(edge));
        }
        assert_eq!(
            format_ts(time::macros::datetime!(2026-12-04 09:05:03.000042 +02:00)),
            "2026-12-04T07:05:03.000042Z"
        );
    }
}
