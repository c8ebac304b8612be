//! Ordered recording of the events one call produces while it runs.
//!
//! Kling calls report attempts and token issuance through synchronous observer callbacks,
//! which cannot wait for the ledger. A [`CallRecorder`] therefore queues those records on an
//! unbounded channel drained by one task per call, which appends them in order as they happen
//! (so a crash mid-call still leaves them). [`CallRecorder::settle`] waits until everything
//! queued so far is durable, before the caller writes the call's closing record.

use std::sync::Arc;

use kling_api::client::{AttemptRecord, CallObserver, TokenIssued};
use kling_audit_ledger::{AppendError, Details, Entry, Ledger};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::events;

enum Msg {
    Record(Entry),
    /// A record could not even be built; reported at the next settle.
    Broken(AppendError),
    Settle(oneshot::Sender<Option<AppendError>>),
}

/// Queues one call's records and appends them in order on a background task.
#[derive(Clone)]
pub(crate) struct CallRecorder {
    corr: Uuid,
    actor: Arc<str>,
    key_fp: Arc<str>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl CallRecorder {
    /// Starts the draining task. Must be called inside a Tokio runtime.
    pub(crate) fn start(ledger: Ledger, corr: Uuid, actor: Arc<str>, key_fp: Arc<str>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drain(ledger, rx));
        Self {
            corr,
            actor,
            key_fp,
            tx,
        }
    }

    /// Queues a record without waiting.
    pub(crate) fn queue(&self, kind: &'static str, details: &Value) {
        let msg = match Details::from_value(details)
            .and_then(|d| Entry::new(kind, self.actor.as_ref(), d))
        {
            Ok(entry) => Msg::Record(entry),
            Err(e) => Msg::Broken(AppendError::from(e)),
        };
        tracing::debug!(corr = %self.corr, event = kind, "audit record queued");
        // The drain task lives as long as a sender does, so sending cannot fail while `self`
        // exists; a failure would surface at `settle` as a closed writer.
        let _ = self.tx.send(msg);
    }

    /// Waits until every record queued so far is durable; returns the first failure.
    pub(crate) async fn settle(&self) -> Result<(), AppendError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Settle(ack))
            .map_err(|_| AppendError::Closed)?;
        match done.await {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(e),
            Err(_) => Err(AppendError::Closed),
        }
    }

    pub(crate) fn corr(&self) -> Uuid {
        self.corr
    }
}

async fn drain(ledger: Ledger, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut failure: Option<AppendError> = None;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Record(entry) => {
                // After one failure later records are dropped: appending them would leave a
                // trail with a hole in the middle, and the caller learns of it at settle.
                if failure.is_none() {
                    if let Err(e) = ledger.append_async(entry).await {
                        tracing::error!(error = %e, "audit record could not be written");
                        failure = Some(e);
                    }
                }
            }
            Msg::Broken(e) => {
                failure.get_or_insert(e);
            }
            Msg::Settle(ack) => {
                let _ = ack.send(failure.clone());
            }
        }
    }
}

impl CallObserver for CallRecorder {
    fn on_token_issued(&self, event: &TokenIssued<'_>) {
        let details = events::credential_use(self.corr, &self.key_fp, event);
        self.queue(events::CREDENTIAL_USE, &details);
    }

    fn on_attempt(&self, record: &AttemptRecord<'_>) {
        if let Some((kind, details)) = events::attempt_event(self.corr, record) {
            self.queue(kind, &details);
        }
    }
}
