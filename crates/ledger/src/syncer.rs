//! Syncs that overlap: the writer hands each written batch's `fdatasync` to a small pool and
//! goes on stamping and writing the next batch while the disk works.
//!
//! With one sync at a time, a record that arrives just after a sync started waits for that
//! sync and then its own; with two in flight it waits for about one. `fdatasync` makes durable
//! everything written to the file before it was called, so when the sync of batch `n`
//! succeeds, every batch up to `n` is durable, whichever sync finished first.

use std::fs::File;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::writer::Msg;

/// How many syncs may run at once. Two keep the disk busy while the writer fills the next
/// batch; more only queue inside the device.
const WORKERS: usize = 2;

pub(crate) struct Job {
    pub batch: u64,
    pub file: Arc<File>,
    pub segment: String,
}

/// The outcome of one job: the batch number, and the error text if the sync failed.
pub(crate) type Done = (u64, Result<(), String>);

pub(crate) struct SyncPool {
    jobs: Option<std_mpsc::Sender<Job>>,
    done: std_mpsc::Receiver<Done>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl SyncPool {
    /// Starts the workers. Each finished job also sends a `Tick` through `wake`, so a writer
    /// blocked waiting for appends notices it.
    pub(crate) fn start(wake: mpsc::WeakSender<Msg>) -> std::io::Result<SyncPool> {
        let (jobs_tx, jobs_rx) = std_mpsc::channel::<Job>();
        let (done_tx, done) = std_mpsc::channel();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let mut workers = Vec::with_capacity(WORKERS);
        for i in 0..WORKERS {
            let jobs_rx = Arc::clone(&jobs_rx);
            let done_tx = done_tx.clone();
            let wake = wake.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ledger-sync-{i}"))
                .spawn(move || loop {
                    let job = {
                        let rx = jobs_rx.lock().unwrap_or_else(|p| p.into_inner());
                        rx.recv()
                    };
                    let Ok(job) = job else { return };
                    let result = job
                        .file
                        .sync_data()
                        .map_err(|e| format!("fdatasync of segment {}: {e}", job.segment));
                    if done_tx.send((job.batch, result)).is_err() {
                        return;
                    }
                    if let Some(tx) = wake.upgrade() {
                        // A full queue wakes the writer anyway.
                        let _ = tx.try_send(Msg::Tick);
                    }
                })?;
            workers.push(handle);
        }
        Ok(SyncPool {
            jobs: Some(jobs_tx),
            done,
            workers,
        })
    }

    pub(crate) fn submit(&self, job: Job) -> Result<(), String> {
        self.jobs
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or_else(|| "the sync workers stopped".to_owned())
    }

    /// A finished job, if one is waiting.
    pub(crate) fn try_done(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }

    /// Waits for the next finished job.
    pub(crate) fn wait_done(&self) -> Option<Done> {
        self.done.recv().ok()
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
