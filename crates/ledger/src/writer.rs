//! The group-commit writer: one thread that turns whatever is queued into one write and one
//! sync. Its state sits behind a lock, which an appender finding the writer idle may take to
//! write and sync its own record (see [`Writer::try_inline`]).
//!
//! Appenders put `(entry, ack)` on a bounded queue, which pushes back when full and never
//! drops. The writer takes everything queued (up to a batch limit), stamps `seq`, `ts`, `prev`,
//! epoch and MAC, writes the batch, syncs it as the durability mode says, and only then
//! advances its in-memory state and acknowledges. If a write or a sync fails, the batch is
//! failed and the writer is poisoned: it refuses every later append, because after a failed
//! sync the kernel may report a later sync as successful while the data is gone. A failed
//! write is cut off the file, so a refused record never turns up in the ledger later; records
//! of the batch made durable before it (by an epoch seal or a segment change) are acknowledged.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kling_audit_merkle::{Frontier, Hash};
use tokio::sync::{mpsc, oneshot};

use crate::checkpointer::Checkpointer;
use crate::error::AppendError;
use crate::keys::KeySet;
use crate::record::{encode, Entry, Stamp};
use crate::segment::{create_segment, day_of, segment_name, RESERVE_STEP};
use crate::syncer::{Done, Job, SyncThread};
use crate::{Clock, Durability, Head, Receipt};

/// Most records in one batch.
const MAX_BATCH: usize = 4096;

/// In `buffered` mode, how long written records may wait for their `fdatasync`.
const BUFFERED_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Appenders write inline only while in-place syncs take less than this on average, so that a
/// slow disk never holds an async runtime's worker thread for long.
const INLINE_MAX_SYNC: f64 = 0.001;

pub(crate) type AckTx = oneshot::Sender<Result<Receipt, AppendError>>;

pub(crate) enum Msg {
    Append(Entry, AckTx),
    /// Records written in this order in one batch, so that they share a sync.
    AppendGroup(Vec<(Entry, AckTx)>),
    Tick,
    /// Sync and sign a checkpoint of everything acknowledged so far.
    Flush(oneshot::Sender<Result<Head, AppendError>>),
    /// Flush, then stop.
    Close(oneshot::Sender<Result<Head, AppendError>>),
}

pub(crate) struct Config {
    pub durability: Durability,
    pub max_segment_bytes: u64,
    pub epoch_max_records: u64,
    pub epoch_max_age: Duration,
    pub checkpoint_interval: Duration,
    pub clock: Clock,
}

pub(crate) struct OpenSegment {
    pub file: File,
    /// The sync thread's own description of the same file, opened with it: the kernel reports
    /// a write-back error once per file description, so a sync by the writer (when it cuts or
    /// closes the segment) cannot take an error that the sync thread must see.
    pub sync_file: Arc<File>,
    pub name: String,
    pub day: String,
    /// Bytes of records; the next batch is written at this offset.
    pub len: u64,
    /// Length of the file: records, then zeros already made durable (the reserve).
    pub reserved: u64,
    /// Writing the reserve failed (a full disk, a file size limit); records are appended
    /// without one until the next segment.
    pub no_reserve: bool,
    /// Zeros being written and synced from `reserved` on; the end offset once durable.
    pub extending: Option<std::thread::JoinHandle<Result<u64, ReserveFailure>>>,
}

/// The process's file size limit (`RLIMIT_FSIZE`), or `u64::MAX` when there is none.
fn file_size_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        lim.rlim_cur
    }
}

/// Starts writeback of `len` bytes at `offset` and waits for it (Linux `sync_file_range`).
/// An error here may be the file's pending write-back error, so it counts as a failed sync.
fn write_back(file: &File, offset: u64, len: usize) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(std::io::Error::other("range out of bounds"));
    };
    // SAFETY: the descriptor belongs to `file`, which outlives the call; no memory is passed.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl OpenSegment {
    /// `fdatasync` of the segment, with its name in the error.
    fn sync(&self) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| format!("fdatasync of segment {}: {e}", self.name))
    }
}

/// Answers appenders whose records cannot be acknowledged.
pub(crate) fn refuse(acks: impl IntoIterator<Item = AckTx>, cause: &str) {
    for ack in acks {
        let _ = ack.send(Err(AppendError::Poisoned {
            cause: cause.to_owned(),
        }));
    }
}

pub(crate) enum ReserveFailure {
    /// The zeros could not be written (a full disk, a file size limit).
    Write(String),
    /// They could not be synced: the file's state is unknown.
    Sync(String),
}

/// Writes zeros over `from..to` of `file` and syncs them; returns `to`.
fn write_zeros(file: &File, from: u64, to: u64) -> Result<u64, ReserveFailure> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)
            .map_err(|e| ReserveFailure::Write(e.to_string()))?;
        // Each chunk goes to the disk before the next is written: an `fdatasync` of records
        // running meanwhile flushes every dirty page of the file, and must never carry
        // megabytes of zeros with it.
        write_back(file, at, n).map_err(|e| ReserveFailure::Sync(e.to_string()))?;
        at += n as u64;
    }
    file.sync_data()
        .map_err(|e| ReserveFailure::Sync(e.to_string()))?;
    Ok(to)
}

/// The smallest reserve step: a short-lived writer (one `log` command) writes little ahead.
const RESERVE_MIN: u64 = 64 << 10;

/// How far ahead to reserve in a segment holding `len` bytes: it grows with the segment, up to
/// [`RESERVE_STEP`]. Once less than one step is left it is topped up to two steps ahead, so the
/// writer, at several hundred MB/s of records, does not catch up with the zeros being written.
fn reserve_step(len: u64) -> u64 {
    len.clamp(RESERVE_MIN, RESERVE_STEP)
}

pub(crate) struct Writer {
    pub dir: PathBuf,
    pub cfg: Config,
    pub keys: KeySet,
    pub seg: Option<OpenSegment>,
    /// The next record's `seq` and `prev`: written, not necessarily durable yet.
    pub next_seq: u64,
    pub prev: Hash,
    /// The durable records only: checkpoints and the published head come from here.
    pub frontier: Frontier,
    pub durable_hash: Hash,
    /// The sync thread, in `sync` mode.
    pub pool: Option<SyncThread>,
    /// Written batches waiting for their sync, oldest first.
    pub pending: VecDeque<Written>,
    pub next_batch: u64,
    /// The current segment holds writes that no sync has been asked for yet.
    pub needs_sync: bool,
    pub last_ts: String,
    pub epoch_started: Instant,
    pub epoch_count: u64,
    /// Signs and stores checkpoints off this lock.
    pub checkpointer: Checkpointer,
    /// Size of the newest checkpoint asked of the checkpointer.
    pub last_cp_size: u64,
    pub last_cp_time: Instant,
    pub poisoned: Option<String>,
    pub unsynced: bool,
    /// When buffered data was last synced.
    pub last_sync: Instant,
    pub shared: Arc<Mutex<Published>>,
    /// Records durable and acknowledged by the sync thread, which may be ahead of what the
    /// writer has published: see [`crate::Ledger::head`].
    pub acked: Arc<std::sync::atomic::AtomicU64>,
    pub buf: Vec<u8>,
    pub ids: IdSource,
    /// HMAC state of the current epoch key.
    pub mac: crate::record::MacState,
    /// The directory lock, released before a close is acknowledged so that a new writer can
    /// open the ledger as soon as `close` returns.
    pub lock: Option<crate::lock::DirLock>,
    /// Set once the writer thread has closed the ledger: no record may be written inline.
    pub closed: bool,
    /// 1 when appends last met each other, decaying towards 0 while they do not.
    pub last_meeting: f64,
    /// Running average of how often appends meet each other, from 0 to 1.
    pub meet_average: f64,
    /// Average seconds of an in-place sync.
    pub sync_ewma: f64,
    /// Entries of the batch being written. Their memory is freed by the sync thread, after the
    /// acknowledgements, rather than by the writer, whose time bounds the rate of appends.
    pub spent: Vec<Entry>,
}

/// A batch handed to the sync thread: its leaves join the tree once it is durable.
pub(crate) struct Written {
    batch: u64,
    leaves: Vec<Hash>,
}

struct Staged {
    entry_seq: u64,
    leaf: Hash,
    id: uuid::Uuid,
    ts: String,
    ack: AckTx,
}

impl Staged {
    /// The record's acknowledgement channel and the receipt it is owed.
    fn into_ack(self) -> (AckTx, Receipt) {
        let receipt = Receipt {
            seq: self.entry_seq,
            hash: self.leaf,
            id: self.id,
            ts: self.ts,
        };
        (self.ack, receipt)
    }
}

impl Writer {
    /// Starts the sync thread and the first epoch, before any record can be written.
    pub(crate) fn start(
        &mut self,
        wake: mpsc::WeakSender<Msg>,
        open_records: u64,
        last_is_seal: bool,
    ) {
        if self.cfg.durability == Durability::Sync {
            match SyncThread::start(wake, Arc::clone(&self.acked)) {
                Ok(pool) => self.pool = Some(pool),
                // Without the sync thread every batch is synced in place.
                Err(e) => tracing::warn!(error = %e, "cannot start the sync thread"),
            }
        }
        if let Err(cause) = self.start_epoch(open_records, last_is_seal) {
            self.poison(cause);
        }
    }

    /// Seals the epoch the previous process left open (if it holds records) and moves to a
    /// new one, so that no two processes ever MAC under the same key.
    fn start_epoch(&mut self, open_records: u64, last_is_seal: bool) -> Result<(), String> {
        if open_records > 0 && !last_is_seal {
            let (prev, last_ts) = (self.prev, self.last_ts.clone());
            let (leaf, _, ts) = self.encode_seal(self.next_seq, &prev, &last_ts, open_records)?;
            let day = day_of(&ts);
            if self.seg.as_ref().is_none_or(|s| s.day != day) {
                let record = std::mem::take(&mut self.buf);
                self.open_new_segment(self.next_seq, &day)?;
                self.buf = record;
            }
            self.write_out(true)?;
            self.frontier.push(leaf);
            self.durable_hash = leaf;
            self.next_seq += 1;
            self.prev = leaf;
            self.last_ts = ts;
        }
        if open_records > 0 || last_is_seal {
            self.advance_key()?;
        }
        self.publish_head();
        Ok(())
    }

    /// Seals the current epoch once it has held records for its whole age, even when no new
    /// record arrives: an idle writer must not keep a key past its time.
    fn seal_if_aged(&mut self) -> Result<(), String> {
        if self.epoch_count == 0 || self.epoch_started.elapsed() < self.cfg.epoch_max_age {
            return Ok(());
        }
        self.wait_pending();
        if self.poisoned.is_some() {
            return Ok(());
        }
        self.start_epoch(self.epoch_count, false)?;
        self.epoch_started = Instant::now();
        self.epoch_count = 0;
        Ok(())
    }

    /// Stamps the seal of the current epoch as record `seq` into the buffer, MACed with the
    /// epoch's own key. Returns its leaf hash, id and timestamp.
    fn encode_seal(
        &mut self,
        seq: u64,
        prev: &Hash,
        last_ts: &str,
        records: u64,
    ) -> Result<(Hash, uuid::Uuid, String), String> {
        let (ts, millis) = next_ts(&self.cfg.clock, last_ts);
        let id = self.ids.next_id(millis);
        let seal = epoch_seal(self.keys.epoch.epoch(), records);
        let stamp = Stamp {
            seq,
            ts: &ts,
            id: &id,
            prev,
            epoch: self.keys.epoch.epoch(),
            mac: &self.mac,
        };
        let leaf = encode(&mut self.buf, &stamp, &seal)
            .map_err(|e| format!("cannot encode an epoch seal: {e}"))?;
        Ok((leaf, id, ts))
    }

    /// Moves to the next epoch key: stored first, then the old one is wiped.
    fn advance_key(&mut self) -> Result<(), String> {
        self.keys
            .advance_epoch()
            .map_err(|e| format!("cannot store the next epoch key: {e}"))?;
        self.mac = crate::record::mac_state(self.keys.epoch.key());
        Ok(())
    }

    /// The writer thread's loop. It holds the lock on the writer's state while it handles what
    /// it took off the queue, and never while it waits for the queue, so that an appender
    /// finding the writer idle can write its own record in between ([`Writer::try_inline`]).
    pub(crate) fn run(shared: Arc<Mutex<Writer>>, mut rx: mpsc::Receiver<Msg>) {
        let lock = || shared.lock().unwrap_or_else(|p| p.into_inner());
        let mut closing = None;
        while let Some(first) = rx.blocking_recv() {
            let mut appends = Vec::new();
            let mut flushes = Vec::new();
            // Appenders met when more than one message brought records (a group is one).
            let mut senders = 0usize;
            let mut route = |m: Msg, appends: &mut Vec<(Entry, AckTx)>| match m {
                Msg::Append(e, ack) => {
                    senders += 1;
                    appends.push((e, ack));
                }
                Msg::AppendGroup(group) => {
                    senders += 1;
                    appends.extend(group);
                }
                Msg::Tick => {}
                Msg::Flush(tx) => flushes.push(tx),
                Msg::Close(tx) => closing = Some(tx),
            };
            route(first, &mut appends);
            while appends.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => route(m, &mut appends),
                    Err(_) => break,
                }
            }
            let mut w = lock();
            w.absorb_finished();
            if !appends.is_empty() {
                let quiet = rx.is_empty() && !w.busy();
                w.commit_batch(appends, quiet, senders > 1);
                if quiet {
                    w.note_contention(!rx.is_empty());
                }
            }
            w.absorb_finished();
            let force = !flushes.is_empty() || closing.is_some();
            if force {
                w.wait_pending();
            }
            let kept = w.housekeeping(force);
            if !force {
                continue;
            }
            // The head (with its root) is made only for those who asked for it.
            let result = kept.map(|()| w.head_snapshot());
            for tx in flushes {
                let _ = tx.send(result.clone());
            }
            if let Some(tx) = closing.take() {
                rx.close();
                // Appends that raced with close are refused, never silently dropped.
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Append(_, ack) => {
                            let _ = ack.send(Err(AppendError::Closed));
                        }
                        Msg::AppendGroup(group) => {
                            for (_, ack) in group {
                                let _ = ack.send(Err(AppendError::Closed));
                            }
                        }
                        _ => {}
                    }
                }
                if result.is_ok() {
                    let _ = w.trim_reserve();
                }
                w.checkpointer.stop();
                w.closed = true;
                w.seg = None;
                w.lock = None;
                let _ = tx.send(result);
                return;
            }
        }
        // Every handle is gone: seal what is there, and release the directory lock before the
        // thread ends, which the last handle's drop waits for.
        let mut w = lock();
        w.closed = true;
        w.wait_pending();
        if w.housekeeping(true).is_ok() {
            let _ = w.trim_reserve();
        }
        w.checkpointer.stop();
        w.seg = None;
        w.lock = None;
    }

    /// Appends records on the caller's thread, written and synced in place as one batch, when
    /// the writer is idle: nothing queued (the caller checked), no batch waiting for its sync,
    /// a light load and fast syncs. This spares an append the two thread wake-ups of the queue,
    /// which on a lightly loaded gateway cost about as much as the sync itself. Otherwise hands
    /// the records back, to be queued.
    #[allow(clippy::type_complexity)]
    pub(crate) fn try_inline(
        &mut self,
        group: Vec<(Entry, AckTx)>,
    ) -> Result<(), Vec<(Entry, AckTx)>> {
        self.absorb_finished();
        let idle = !self.closed
            && self.poisoned.is_none()
            && self.cfg.durability == Durability::Sync
            && self.pending.is_empty()
            && !self.crowded()
            && self.sync_ewma < INLINE_MAX_SYNC;
        if !idle {
            return Err(group);
        }
        self.commit_batch(group, true, false);
        Ok(())
    }

    /// Appends often meet each other (batches of several, or records queued during an
    /// in-place sync): batches then go to the sync thread, so that the next batch is stamped
    /// and written while the disk flushes, and appenders stop writing inline.
    fn busy(&self) -> bool {
        self.meet_average > 0.5
    }

    /// Appends met each other lately, so appenders must not write inline: stricter than
    /// [`Writer::busy`], because writing inline while others append holds up a runtime worker
    /// and can halve their rate.
    fn crowded(&self) -> bool {
        self.last_meeting > 0.05
    }

    /// Takes one observation of whether appends met each other. For inline writing a meeting
    /// counts at once, and only about 30 appends in a row that meet nobody end the crowd; for
    /// syncing in place a running average decides.
    pub(crate) fn note_contention(&mut self, met: bool) {
        self.last_meeting = if met { 1.0 } else { 0.9 * self.last_meeting };
        self.meet_average = 0.8 * self.meet_average + if met { 0.2 } else { 0.0 };
    }

    /// Cuts the reserve off the newest segment, so a closed ledger ends with its last record.
    /// A failure leaves the zeros in place, which every reader skips.
    fn trim_reserve(&mut self) -> Result<(), String> {
        self.settle_reserve(true)?;
        let Some(seg) = self.seg.as_mut() else {
            return Ok(());
        };
        if seg.reserved == seg.len {
            return Ok(());
        }
        let result = seg.file.set_len(seg.len).and_then(|()| seg.file.sync_all());
        match result {
            Ok(()) => {
                seg.reserved = seg.len;
                Ok(())
            }
            Err(e) => {
                let cause = format!("cannot cut the reserve of segment {}: {e}", seg.name);
                tracing::warn!(%cause, "the segment keeps its zero-filled reserve");
                Err(cause)
            }
        }
    }

    /// Takes in a finished reserve extension; with `wait`, waits for one in flight.
    /// A failed sync of the zeros is a failed sync of the segment: the writer stops.
    fn settle_reserve(&mut self, wait: bool) -> Result<(), String> {
        let Some(seg) = self.seg.as_mut() else {
            return Ok(());
        };
        if !seg
            .extending
            .as_ref()
            .is_some_and(|h| wait || h.is_finished())
        {
            return Ok(());
        }
        let Some(handle) = seg.extending.take() else {
            return Ok(());
        };
        let outcome = handle
            .join()
            .unwrap_or_else(|_| Err(ReserveFailure::Write("the reserve thread panicked".into())));
        match outcome {
            Ok(end) => seg.reserved = seg.reserved.max(end),
            Err(ReserveFailure::Write(cause)) => {
                // Zeros carry nothing: records are still written and synced, and a failure to
                // write those poisons the writer.
                tracing::warn!(segment = %seg.name, %cause, "cannot reserve space ahead; appending without a reserve");
                seg.no_reserve = true;
                seg.reserved = seg
                    .file
                    .metadata()
                    .map_or(seg.len, |m| m.len())
                    .max(seg.len);
            }
            Err(ReserveFailure::Sync(cause)) => {
                let cause = format!("fdatasync of segment {}: {cause}", seg.name);
                self.poison(cause.clone());
                return Err(cause);
            }
        }
        Ok(())
    }

    /// Starts writing and syncing zeros ahead of the records on a thread of its own, when less
    /// than one [`reserve_step`] is left. The writer never writes past the start
    /// of an extension in flight without waiting for it.
    fn top_up_reserve(&mut self) {
        if let Err(cause) = self.settle_reserve(false) {
            self.fail_pending();
            tracing::debug!(%cause, "reserve sync failed");
            return;
        }
        let max = self.cfg.max_segment_bytes;
        let Some(seg) = self.seg.as_mut() else {
            return;
        };
        let step = reserve_step(seg.len);
        let low = seg.reserved < (seg.len + step).min(max);
        if seg.no_reserve || seg.extending.is_some() || !low {
            return;
        }
        let from = seg.reserved.max(seg.len);
        // Zeros never cross a file size limit (`ulimit -f`): that would fail, or kill the
        // process with SIGXFSZ, long before the records themselves reach it.
        let to = (seg.len + 2 * step).min(max).min(file_size_limit());
        if to <= from {
            return;
        }
        // The reserve thread syncs through a file description of its own. The kernel reports
        // a write-back error once per description: through the writer's, the sync of the
        // records could miss an error that the zeros' sync had taken, and acknowledge records
        // that were lost.
        let file = match OpenOptions::new()
            .write(true)
            .open(self.dir.join(&seg.name))
        {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(segment = %seg.name, error = %e, "cannot open the segment for its reserve; appending without a reserve");
                seg.no_reserve = true;
                return;
            }
        };
        seg.reserved = from;
        let spawned = std::thread::Builder::new()
            .name("ledger-reserve".into())
            .spawn(move || write_zeros(&file, from, to));
        match spawned {
            Ok(handle) => seg.extending = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the reserve thread; appending without a reserve");
                seg.no_reserve = true;
            }
        }
    }

    /// Acknowledges the batches whose syncs have finished, without waiting; stops the writer
    /// once a checkpoint could not be stored.
    pub(crate) fn absorb_finished(&mut self) {
        if self.poisoned.is_none() {
            if let Some(cause) = self.checkpointer.failed() {
                // Batches in flight are still synced and acknowledged: they are durable. What
                // stops is acknowledging anything new.
                self.poison(cause);
            }
        }
        while let Some(done) = self.pool.as_ref().and_then(SyncThread::try_done) {
            self.absorb(done);
        }
    }

    /// Waits until every written batch is synced (or failed).
    fn wait_pending(&mut self) {
        while !self.pending.is_empty() {
            match self.pool.as_ref().and_then(SyncThread::wait_done) {
                Some(done) => self.absorb(done),
                None => {
                    self.poison("the sync thread stopped".to_owned());
                    self.fail_pending();
                }
            }
        }
    }

    fn absorb(&mut self, (batch, result): Done) {
        match result {
            Ok(()) => self.deliver_upto(batch),
            Err(cause) => {
                self.poison(cause);
                self.fail_pending();
            }
        }
    }

    /// Batches up to `batch` are durable (and acknowledged by the sync thread): their leaves
    /// join the tree, in order.
    fn deliver_upto(&mut self, batch: u64) {
        let mut delivered = false;
        while self.pending.front().is_some_and(|w| w.batch <= batch) {
            let Some(written) = self.pending.pop_front() else {
                break;
            };
            for leaf in written.leaves {
                self.frontier.push(leaf);
                self.durable_hash = leaf;
            }
            delivered = true;
        }
        if delivered {
            self.publish_head();
        }
    }

    /// After a failed write or sync no batch still waiting joins the tree; the sync thread
    /// answers their appenders (acknowledging only what it synced before the failure).
    fn fail_pending(&mut self) {
        self.pending.clear();
    }

    fn poison(&mut self, cause: String) {
        tracing::error!(%cause, "ledger write failed; refusing all further appends");
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .head
            .poisoned = Some(cause.clone());
        self.poisoned = Some(cause);
    }

    /// Writes a batch and has it synced. When nothing else is queued and no sync is in flight
    /// (`quiet`), the writer syncs it itself: handing it over would only add a thread wake-up
    /// to the acknowledgement, which on a lightly loaded gateway is most of an append's cost.
    /// `met`: the batch holds records of more than one appender.
    fn commit_batch(&mut self, batch: Vec<(Entry, AckTx)>, quiet: bool, met: bool) {
        self.commit_batch_inner(batch, quiet, met);
        self.spent.clear();
    }

    fn commit_batch_inner(&mut self, batch: Vec<(Entry, AckTx)>, quiet: bool, met: bool) {
        self.note_contention(met);
        if let Some(cause) = &self.poisoned {
            refuse(batch.into_iter().map(|(_, ack)| ack), cause);
            return;
        }
        match self.write_batch(batch) {
            Ok(staged) => {
                if let Some(last) = staged.last() {
                    self.next_seq = last.entry_seq + 1;
                    self.prev = last.leaf;
                    self.last_ts.clone_from(&last.ts);
                }
                let batch = self.next_batch;
                self.next_batch += 1;
                let leaves = staged.iter().map(|s| s.leaf).collect();
                self.pending.push_back(Written { batch, leaves });
                let acks = staged.into_iter().map(Staged::into_ack).collect::<Vec<_>>();
                if self.needs_sync && quiet && self.pending.len() == 1 {
                    self.needs_sync = false;
                    let started = Instant::now();
                    let synced = self.seg.as_ref().map(OpenSegment::sync);
                    self.sync_ewma = 0.8 * self.sync_ewma + 0.2 * started.elapsed().as_secs_f64();
                    if let Some(Err(cause)) = synced {
                        self.poison(cause.clone());
                        self.fail_pending();
                        refuse(acks.into_iter().map(|(ack, _)| ack), &cause);
                        return;
                    }
                }
                if std::mem::take(&mut self.needs_sync) {
                    let spent = std::mem::take(&mut self.spent);
                    let job = self.seg.as_ref().map(|seg| Job {
                        batch,
                        file: Arc::clone(&seg.sync_file),
                        segment: seg.name.clone(),
                        acks,
                        spent,
                    });
                    let submitted = match (&self.pool, job) {
                        (Some(pool), Some(job)) => pool.submit(job),
                        _ => Err("no sync thread for the written batch".to_owned()),
                    };
                    if let Err(cause) = submitted {
                        self.poison(cause);
                        self.fail_pending();
                        return;
                    }
                } else {
                    // Synced in place (or buffered): durable as far as the mode promises.
                    self.deliver_upto(batch);
                    for (ack, receipt) in acks {
                        let _ = ack.send(Ok(receipt));
                    }
                }
                self.top_up_reserve();
            }
            Err(failed) => {
                self.poison(failed.cause.clone());
                self.fail_pending();
                for (ack, receipt) in failed.durable {
                    let _ = ack.send(Ok(receipt));
                }
                refuse(failed.refused, &failed.cause);
            }
        }
    }

    /// Writes and syncs a batch. On error returns the cause and every ack still owed.
    fn write_batch(&mut self, batch: Vec<(Entry, AckTx)>) -> Result<Vec<Staged>, Failed> {
        let mut staged: Vec<Staged> = Vec::with_capacity(batch.len());
        let mut seq = self.next_seq;
        let mut prev = self.prev;
        let mut last_ts = self.last_ts.clone();
        self.buf.clear();
        let mut iter = batch.into_iter();
        // How many staged records are durable already: an epoch seal is written with a sync,
        // and a new segment is opened only once the old one is synced. Those are acknowledged
        // even if a later part of the batch fails, since they stay in the ledger.
        let mut durable = 0usize;
        let mut now: Option<(String, u64, String)> = None;
        let fail = |cause: String,
                    mut staged: Vec<Staged>,
                    durable: usize,
                    rest: std::vec::IntoIter<(Entry, AckTx)>| {
            let refused = staged
                .split_off(durable)
                .into_iter()
                .map(|s| s.ack)
                .chain(rest.map(|(_, a)| a))
                .collect();
            let durable = staged.into_iter().map(Staged::into_ack).collect();
            Failed {
                cause,
                durable,
                refused,
            }
        };
        while let Some((entry, ack)) = iter.next() {
            // An epoch that holds records ends with its seal; an empty one needs no new key.
            if self.epoch_count > 0
                && (self.epoch_count >= self.cfg.epoch_max_records
                    || self.epoch_started.elapsed() >= self.cfg.epoch_max_age)
            {
                let sealed = self.encode_seal(seq, &prev, &last_ts, self.epoch_count);
                let (leaf, id, ts) = match sealed {
                    Ok(sealed) => sealed,
                    Err(cause) => return Err(fail(cause, staged, durable, iter).map_with(ack)),
                };
                // The seal is durable before the old key is wiped, whatever the durability mode.
                if let Err(cause) = self.write_out(true) {
                    return Err(fail(cause, staged, durable, iter).map_with(ack));
                }
                durable = staged.len();
                let (unheard, _) = oneshot::channel();
                staged.push(Staged {
                    entry_seq: seq,
                    leaf,
                    id,
                    ts: ts.clone(),
                    ack: unheard,
                });
                seq += 1;
                prev = leaf;
                last_ts = ts;
                if let Err(cause) = self.advance_key() {
                    return Err(fail(cause, staged, durable, iter).map_with(ack));
                }
                self.epoch_started = Instant::now();
                self.epoch_count = 0;
            }
            // One clock reading serves the whole batch (the records are written together);
            // it is taken again only when a seal in the batch carries a later time.
            if now.as_ref().is_some_and(|n| n.0 < last_ts) {
                now = None;
            }
            let (batch_ts, millis, day) = now.get_or_insert_with(|| {
                let (ts, millis) = next_ts(&self.cfg.clock, &last_ts);
                let day = day_of(&ts);
                (ts, millis, day)
            });
            let ts = batch_ts.clone();
            let id = self.ids.next_id(*millis);
            let start = self.buf.len();
            let stamp = Stamp {
                seq,
                ts: &ts,
                id: &id,
                prev: &prev,
                epoch: self.keys.epoch.epoch(),
                mac: &self.mac,
            };
            let leaf = match encode(&mut self.buf, &stamp, &entry) {
                Ok(leaf) => leaf,
                Err(e) => {
                    let _ = ack.send(Err(e.into()));
                    continue;
                }
            };
            // The entry's strings are freed off this thread (see `Writer::spent`).
            self.spent.push(entry);
            let rec_len = (self.buf.len() - start) as u64;
            let pending = start as u64;
            let rotate = match &self.seg {
                None => true,
                Some(s) => {
                    s.day != *day
                        || (s.len + pending > 0
                            && s.len + pending + rec_len > self.cfg.max_segment_bytes)
                }
            };
            if rotate {
                let record = self.buf.split_off(start);
                if let Err(cause) = self.write_out(false) {
                    return Err(fail(cause, staged, durable, iter).map_with(ack));
                }
                if let Err(cause) = self.open_new_segment(seq, day) {
                    return Err(fail(cause, staged, durable, iter).map_with(ack));
                }
                durable = staged.len();
                self.buf = record;
            }
            if self.epoch_count == 0 {
                // An epoch's age counts from its first record, as the verifier's span does.
                self.epoch_started = Instant::now();
            }
            self.epoch_count += 1;
            if last_ts != ts {
                last_ts.clone_from(&ts);
            }
            staged.push(Staged {
                entry_seq: seq,
                leaf,
                id,
                ts,
                ack,
            });
            seq += 1;
            prev = leaf;
        }
        if let Err(cause) = self.write_out(false) {
            return Err(fail(cause, staged, durable, iter));
        }
        Ok(staged)
    }

    /// Writes the buffer to the current segment and syncs it as configured.
    fn write_out(&mut self, force_sync: bool) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let need = self.seg.as_ref().map_or(0, |s| s.len) + self.buf.len() as u64;
        if self.seg.as_ref().is_some_and(|s| need > s.reserved) {
            // Past the reserve: wait for zeros in flight, or else append to the file's end.
            self.settle_reserve(true)?;
        }
        let Some(seg) = self.seg.as_mut() else {
            return Err("no open segment".to_owned());
        };
        if let Err(e) = seg.file.write_all_at(&self.buf, seg.len) {
            let cause = format!("write to segment {}: {e}", seg.name);
            return Err(self.cut_failed_write(cause));
        }
        seg.len += self.buf.len() as u64;
        seg.reserved = seg.reserved.max(seg.len);
        self.buf.clear();
        let sync_mode = self.cfg.durability == Durability::Sync;
        if force_sync || (sync_mode && self.pool.is_none()) {
            seg.sync()?;
            // Everything written so far is durable, earlier batches included.
            self.needs_sync = false;
        } else if sync_mode {
            self.needs_sync = true;
        } else {
            self.unsynced = true;
        }
        Ok(())
    }

    /// A write that failed may still have put part of the buffer, complete lines included, into
    /// the file. Their appenders are told the records were not written, so that part is cut
    /// off: the next writer's recovery would otherwise keep those lines, and a caller sending
    /// the records again would have them twice. Returns the cause to report.
    fn cut_failed_write(&mut self, cause: String) -> String {
        // Zeros still being written past the records must not land after the cut.
        let _ = self.settle_reserve(true);
        let Some(seg) = self.seg.as_mut() else {
            return cause;
        };
        match seg.file.set_len(seg.len).and_then(|()| seg.file.sync_all()) {
            Ok(()) => {
                seg.reserved = seg.len;
                seg.no_reserve = true;
                cause
            }
            Err(e) => format!(
                "{cause}; cutting the partly written records off failed too ({e}), so some of \
                 them may still be in segment {}",
                seg.name
            ),
        }
    }

    fn open_new_segment(&mut self, first_seq: u64, day: &str) -> Result<(), String> {
        self.settle_reserve(true)?;
        if let Some(old) = self.seg.take() {
            // Only the newest segment may end in a reserve.
            old.file
                .set_len(old.len)
                .and_then(|()| old.file.sync_all())
                .map_err(|e| format!("sync of segment {}: {e}", old.name))?;
            self.unsynced = false;
        }
        let name = segment_name(first_seq, day);
        let path = self.dir.join(&name);
        let (file, sync_file) = create_segment(&self.dir, &name)
            .and_then(|file| Ok((file, OpenOptions::new().write(true).open(&path)?)))
            .map_err(|e| format!("create segment {name}: {e}"))?;
        tracing::info!(segment = %name, "opened a new segment");
        self.seg = Some(OpenSegment {
            file,
            sync_file: Arc::new(sync_file),
            name,
            day: day.to_owned(),
            len: 0,
            reserved: 0,
            no_reserve: false,
            extending: None,
        });
        // A segment boundary is also a checkpoint boundary.
        self.last_cp_time = Instant::now() - self.cfg.checkpoint_interval;
        Ok(())
    }

    /// Syncs buffered data and signs a checkpoint when one is due (or `force`).
    fn housekeeping(&mut self, force: bool) -> Result<(), AppendError> {
        if let Some(cause) = &self.poisoned {
            return Err(AppendError::Poisoned {
                cause: cause.clone(),
            });
        }
        if let Err(cause) = self.seal_if_aged() {
            self.poison(cause.clone());
            return Err(AppendError::Poisoned { cause });
        }
        let due = self.last_cp_time.elapsed() >= self.cfg.checkpoint_interval;
        if self.unsynced && (force || due || self.last_sync.elapsed() >= BUFFERED_SYNC_INTERVAL) {
            if let Some(seg) = &self.seg {
                if let Err(cause) = seg.sync() {
                    self.poison(cause.clone());
                    return Err(AppendError::Poisoned { cause });
                }
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        let size = self.frontier.size();
        let root = || self.frontier.root();
        let asked = if force {
            // Waits for this checkpoint and every one asked before it.
            self.checkpointer.store(size, root())
        } else if size > self.last_cp_size && due {
            self.checkpointer.submit(size, root())
        } else {
            Ok(())
        };
        if let Err(cause) = asked {
            self.poison(cause.clone());
            return Err(AppendError::Poisoned { cause });
        }
        if size > self.last_cp_size && (force || due) {
            self.last_cp_size = size;
            self.last_cp_time = Instant::now();
        }
        Ok(())
    }

    fn head_snapshot(&self) -> Head {
        Head {
            size: self.frontier.size(),
            hash: self.durable_hash,
            root: self.frontier.root(),
            checkpoint_size: self.checkpointer.stored(),
            epoch: self.keys.epoch.epoch(),
            poisoned: self.poisoned.clone(),
        }
    }

    /// Runs after every sync, so it leaves the root to the reader (see [`Published`]).
    fn publish_head(&self) {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let published = &mut *shared;
        let head = &mut published.head;
        head.size = self.frontier.size();
        head.hash = self.durable_hash;
        // The checkpoint thread advances this field on its own; never move it back.
        head.checkpoint_size = head.checkpoint_size.max(self.checkpointer.stored());
        head.epoch = self.keys.epoch.epoch();
        head.poisoned.clone_from(&self.poisoned);
        published.frontier.clone_from(&self.frontier);
    }
}

/// The durable state the writer last published, for [`crate::Ledger::head`]. The root is
/// computed when the head is read, not when it is published: publishing follows every sync,
/// and a root costs one hash per level of the tree, while heads are read rarely (probes,
/// metrics, checkpoints go their own way).
pub(crate) struct Published {
    /// Every field but `root`, which is left as it was at open.
    pub head: Head,
    pub frontier: Frontier,
}

impl Published {
    pub(crate) fn new(head: Head, frontier: Frontier) -> Self {
        Published { head, frontier }
    }

    pub(crate) fn read(&self) -> Head {
        let mut head = self.head.clone();
        head.root = self.frontier.root();
        head
    }
}

/// A batch that could not be written in full.
struct Failed {
    cause: String,
    /// Records that became durable before the failure, with their receipts.
    durable: Vec<(AckTx, Receipt)>,
    /// The acknowledgements of every other record: refused.
    refused: Vec<AckTx>,
}

trait MapWith {
    fn map_with(self, ack: AckTx) -> Self;
}

impl MapWith for Failed {
    fn map_with(mut self, ack: AckTx) -> Self {
        self.refused.push(ack);
        self
    }
}

/// The record that closes an epoch, MACed with that epoch's own key. A verifier holding the
/// root key requires one at every epoch change, so records written before a key was stolen
/// cannot be moved into the stolen key's epoch.
pub(crate) fn epoch_seal(epoch: u64, records: u64) -> Entry {
    let details =
        crate::Details::from_value(&serde_json::json!({"epoch": epoch, "records": records}))
            .expect("a literal object");
    Entry {
        kind: crate::verify::EPOCH_SEAL_TYPE.to_owned(),
        actor: "kling-audit".to_owned(),
        details,
    }
}

/// The timestamp for the next record (text and Unix milliseconds): the clock, never earlier
/// than the previous record's.
fn next_ts(clock: &Clock, last: &str) -> (String, u64) {
    let t = clock();
    let now = crate::format_ts(t);
    if now.as_str() < last {
        tracing::warn!(now = %now, last = %last, "clock went backwards; repeating the last timestamp");
        return (last.to_owned(), crate::ts_unix_millis(last).unwrap_or(0));
    }
    let millis = u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    (now, millis)
}

/// Opens the newest segment for appending.
pub(crate) fn reopen_segment(
    path: &std::path::Path,
    name: &str,
    day: &str,
    len: u64,
) -> std::io::Result<OpenSegment> {
    let file = OpenOptions::new().write(true).open(path)?;
    // Zeros past the last record are a reserve left by the previous writer; the scan has
    // checked that nothing but zeros lies there.
    let reserved = file.metadata()?.len().max(len);
    Ok(OpenSegment {
        file,
        sync_file: Arc::new(OpenOptions::new().write(true).open(path)?),
        name: name.to_owned(),
        day: day.to_owned(),
        len,
        reserved,
        no_reserve: false,
        extending: None,
    })
}

/// UUIDv7 ids from the record's own timestamp and a per-writer CSPRNG, which avoids a
/// `getrandom` system call per record.
pub(crate) struct IdSource {
    rng: rand::rngs::StdRng,
}

impl IdSource {
    pub(crate) fn new() -> Self {
        use rand::SeedableRng;
        IdSource {
            rng: rand::rngs::StdRng::from_entropy(),
        }
    }

    fn next_id(&mut self, millis: u64) -> uuid::Uuid {
        use rand::RngCore;
        let mut random = [0u8; 10];
        self.rng.fill_bytes(&mut random);
        uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
    }
}
