//! The checkpoint thread: signs each checkpoint the writer asks for, appends it to the
//! checkpoint log, syncs it and records the signed head, in the order asked.
//!
//! This is done off the writer's lock because it takes several syncs (the log grows, and the
//! signed head is replaced through a renamed file), a few milliseconds in all, twice a second:
//! on the writer, every append arriving meanwhile would wait for them. A checkpoint covers
//! records that are already durable, so nothing that was acknowledged waits for it; a flush
//! or a close waits until every checkpoint asked for before it is stored.
//!
//! The checkpoint hook runs on this thread. A flush waits for this thread while holding the
//! writer, so a call from the hook that waits for the writer could never return: the ledger
//! refuses such calls on this thread (see [`on_checkpoint_thread`]).

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use kling_audit_merkle::Hash;

use crate::cpstore::CheckpointLog;
use crate::sign::Signer;
use crate::writer::Published;
use crate::{CheckpointHook, SignedCheckpoint};

thread_local! {
    /// On a checkpoint thread, the id of the ledger it stores checkpoints for.
    static CHECKPOINT_THREAD_OF: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Whether the calling thread is the checkpoint thread of the ledger with this id, where the
/// checkpoint hook runs.
pub(crate) fn on_checkpoint_thread(ledger: u64) -> bool {
    CHECKPOINT_THREAD_OF.with(|t| t.get() == Some(ledger))
}

struct Job {
    size: u64,
    root: Hash,
    /// Told once this checkpoint (or a later one already stored) is durable.
    reply: Option<std_mpsc::SyncSender<Result<(), String>>>,
}

/// What the thread has done, read by the writer.
#[derive(Debug, Default)]
struct Progress {
    /// Size of the newest checkpoint stored.
    stored: u64,
    /// Why storing a checkpoint failed; every later one fails with it.
    failed: Option<String>,
}

/// Everything the thread needs to store a checkpoint.
pub(crate) struct Store {
    /// Which ledger this is, for [`on_checkpoint_thread`].
    pub ledger: u64,
    pub signer: Signer,
    pub log: CheckpointLog,
    pub keys_dir: PathBuf,
    pub hook: Option<CheckpointHook>,
    /// The published head, whose `checkpoint_size` the thread advances.
    pub head: Arc<Mutex<Published>>,
}

pub(crate) struct Checkpointer {
    jobs: Option<std_mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    progress: Arc<Mutex<Progress>>,
}

impl Checkpointer {
    /// Starts the thread; `stored` is the size of the newest checkpoint already in the log.
    pub(crate) fn start(store: Store, stored: u64) -> std::io::Result<Checkpointer> {
        let progress = Arc::new(Mutex::new(Progress {
            stored,
            failed: None,
        }));
        let (tx, rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn({
                let progress = Arc::clone(&progress);
                move || run(store, &rx, &progress)
            })?;
        Ok(Checkpointer {
            jobs: Some(tx),
            thread: Some(thread),
            progress,
        })
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Size of the newest checkpoint stored.
    pub(crate) fn stored(&self) -> u64 {
        self.progress().stored
    }

    /// Why a checkpoint could not be stored, once one could not.
    pub(crate) fn failed(&self) -> Option<String> {
        self.progress().failed.clone()
    }

    /// Asks for a checkpoint of `size` records with this root, without waiting.
    pub(crate) fn submit(&self, size: u64, root: Hash) -> Result<(), String> {
        self.send(Job {
            size,
            root,
            reply: None,
        })
    }

    /// Asks for a checkpoint of `size` records (none if one as large is stored already) and
    /// waits until it and every one asked for before it are stored.
    pub(crate) fn store(&self, size: u64, root: Hash) -> Result<(), String> {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.send(Job {
            size,
            root,
            reply: Some(tx),
        })?;
        rx.recv()
            .unwrap_or_else(|_| Err("the checkpoint thread stopped".to_owned()))
    }

    fn send(&self, job: Job) -> Result<(), String> {
        let stopped = || "the checkpoint thread stopped".to_owned();
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())
    }

    /// Lets the thread finish what it was asked and waits for it.
    pub(crate) fn stop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(mut store: Store, jobs: &std_mpsc::Receiver<Job>, progress: &Mutex<Progress>) {
    CHECKPOINT_THREAD_OF.with(|t| t.set(Some(store.ledger)));
    let lock = || progress.lock().unwrap_or_else(PoisonError::into_inner);
    while let Ok(first) = jobs.recv() {
        // Only the newest of the checkpoints queued meanwhile is signed: it covers the others.
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let newest = batch
            .iter()
            .max_by_key(|j| j.size)
            .map(|j| (j.size, j.root));
        let (failed, stored) = {
            let p = lock();
            (p.failed.clone(), p.stored)
        };
        let result = match (failed, newest) {
            (Some(cause), _) => Err(cause),
            (None, Some((size, root))) if size > stored => store_one(&mut store, size, &root),
            _ => Ok(()),
        };
        {
            let mut p = lock();
            match &result {
                Ok(()) => {
                    if let Some((size, _)) = newest {
                        p.stored = p.stored.max(size);
                    }
                }
                Err(cause) => {
                    p.failed.get_or_insert_with(|| cause.clone());
                }
            }
        }
        for job in batch {
            if let Some(reply) = job.reply {
                let _ = reply.send(result.clone());
            }
        }
    }
}

/// Signs, appends and syncs one checkpoint, then records the signed head.
fn store_one(store: &mut Store, size: u64, root: &Hash) -> Result<(), String> {
    let note = store.signer.sign_checkpoint(size, root)?;
    store
        .log
        .append(size, &note)
        .map_err(|e| format!("append to {}: {e}", store.log.path().display()))?;
    crate::keys::store_signed_head(&store.keys_dir, size, root)
        .map_err(|e| format!("cannot record the signed head: {e}"))?;
    {
        let mut published = store.head.lock().unwrap_or_else(PoisonError::into_inner);
        let head = &mut published.head;
        head.checkpoint_size = head.checkpoint_size.max(size);
    }
    if let Some(hook) = &store.hook {
        let cp = SignedCheckpoint {
            size,
            root: *root,
            note,
        };
        // Uncaught, a panic would end this thread unnoticed until the next checkpoint is asked
        // for, and the writer would then say only that the thread stopped.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&cp)))
            .map_err(|p| format!("the checkpoint hook panicked: {}", panic_message(&*p)))?;
    }
    Ok(())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}
