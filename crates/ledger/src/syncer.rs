//! The sync thread: the writer hands it each written batch and goes on stamping and writing
//! the next one while the disk flushes.
//!
//! Jobs that queue up while a sync runs are folded into one sync of the newest: `fdatasync`
//! makes durable everything written to the file before it was called, and a segment is fully
//! synced before the next one is created. The sync thread tells the writer which batches are
//! durable, so that checkpoints and the head can cover them, and then acknowledges the records
//! itself, in order, which saves a hand-off back to the writer. After one failed sync it fails
//! every later job: the kernel may report a later sync as successful while the earlier data is
//! gone.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::AppendError;
use crate::writer::{refuse, AckTx, Msg};
use crate::Receipt;

pub(crate) struct Job {
    pub batch: u64,
    pub file: Arc<File>,
    pub segment: String,
    pub acks: Vec<(AckTx, Receipt)>,
    /// The batch's entries, dropped here once the appenders are answered.
    pub spent: Vec<crate::Entry>,
}

/// The newest batch a sync covered, and the error text if it failed.
pub(crate) type Done = (u64, Result<(), String>);

pub(crate) struct SyncThread {
    jobs: Option<std_mpsc::Sender<Job>>,
    done: std_mpsc::Receiver<Done>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SyncThread {
    /// Starts the thread. A failed sync also sends a `Tick` through `wake`, so that a writer
    /// blocked waiting for appends notices it and stops. `acked` is raised to the number of
    /// records durable and acknowledged, before their appenders are answered.
    pub(crate) fn start(
        wake: mpsc::WeakSender<Msg>,
        acked: Arc<AtomicU64>,
    ) -> std::io::Result<SyncThread> {
        let (jobs_tx, jobs) = std_mpsc::channel::<Job>();
        let (done_tx, done) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ledger-sync".into())
            .spawn(move || run(&jobs, &done_tx, &wake, &acked))?;
        Ok(SyncThread {
            jobs: Some(jobs_tx),
            done,
            thread: Some(thread),
        })
    }

    /// Queues a job; if the thread is gone, fails its acknowledgements and says why.
    pub(crate) fn submit(&self, job: Job) -> Result<(), String> {
        let Some(tx) = &self.jobs else {
            return Err(fail_job(job, "the sync thread stopped"));
        };
        tx.send(job)
            .map_err(|e| fail_job(e.0, "the sync thread stopped"))
    }

    /// A finished sync, if one is waiting.
    pub(crate) fn try_done(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }

    /// Waits for the next finished sync.
    pub(crate) fn wait_done(&self) -> Option<Done> {
        self.done.recv().ok()
    }
}

impl Drop for SyncThread {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fail_job(job: Job, cause: &str) -> String {
    refuse(job.acks.into_iter().map(|(ack, _)| ack), cause);
    cause.to_owned()
}

fn run(
    jobs: &std_mpsc::Receiver<Job>,
    done: &std_mpsc::Sender<Done>,
    wake: &mpsc::WeakSender<Msg>,
    acked: &AtomicU64,
) {
    let mut failed: Option<String> = None;
    while let Ok(first) = jobs.recv() {
        let mut batch: Vec<Job> = vec![first];
        batch.extend(jobs.try_iter());
        let Some(newest) = batch.last() else { continue };
        let covered = newest.batch;
        let result = match &failed {
            Some(cause) => Err(cause.clone()),
            None => newest
                .file
                .sync_data()
                .map_err(|e| format!("fdatasync of segment {}: {e}", newest.segment)),
        };
        if let Err(cause) = &result {
            failed.get_or_insert_with(|| cause.clone());
        }
        // The writer is told before any appender is answered, so that a head read once an
        // append is acknowledged can take the sync in (see `Ledger::head`).
        let failed_now = result.is_err();
        let told = done.send((covered, result.clone())).is_ok();
        if result.is_ok() {
            let newest_seq = batch.iter().rev().find_map(|job| job.acks.last());
            if let Some((_, receipt)) = newest_seq {
                acked.fetch_max(receipt.seq + 1, Ordering::Release);
            }
        }
        for job in batch {
            for (ack, receipt) in job.acks {
                let answer = match &result {
                    Ok(()) => Ok(receipt),
                    Err(cause) => Err(AppendError::Poisoned {
                        cause: cause.clone(),
                    }),
                };
                let _ = ack.send(answer);
            }
            drop(job.spent);
        }
        if !told {
            return;
        }
        // A success needs no wake-up: the writer takes it in before its next batch, and the
        // ticker wakes an idle writer for checkpoints. Waking it after every sync cost a
        // context switch per batch under load. A failure must stop acknowledgements at once.
        if failed_now {
            if let Some(tx) = wake.upgrade() {
                // A full queue wakes the writer anyway.
                let _ = tx.try_send(Msg::Tick);
            }
        }
    }
}
