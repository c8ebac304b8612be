//! The gateway's handle on the audit ledger: appends with timing, fail-open bookkeeping, and
//! recovery after the ledger stops accepting records.
//!
//! After a failed write or sync the ledger refuses every later append (it cannot know what
//! reached the disk). The auditor then closes it and tries to open it again every
//! `audit.reopen_interval`, which runs the ledger's own recovery; once that works, requests
//! are recorded again and, in fail-open mode, a `gateway.unaudited` record says how many
//! requests went through unrecorded and over which span of time. The span is held in memory,
//! so a process that dies before the ledger recovers loses it (the metric and the logs keep
//! the count).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kling_audit_ledger::{
    AppendError, Commitments, Details, Entry, EntryError, Head, Ledger, LedgerOptions, Receipt,
};
use serde_json::json;

use crate::config::FailureMode;
use crate::metrics::Metrics;

/// The actor of the gateway's own records.
pub const GATEWAY_ACTOR: &str = "gateway";

/// Why a record was not written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The entry broke a record rule: a bug in the gateway, or a record made from caller input
    /// too large for one record. The ledger itself is fine, so this is not a ledger failure.
    #[error("audit record of type {kind} is malformed: {source}")]
    Entry {
        /// The record type.
        kind: String,
        /// The rule broken.
        source: Arc<EntryError>,
    },
    /// The ledger refused the append.
    #[error("audit ledger refused the record: {0}")]
    Append(#[from] AppendError),
}

#[derive(Debug, Clone, Copy)]
struct Span {
    count: u64,
    first_ms: u64,
    last_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Appends records and keeps the ledger usable.
pub struct Auditor {
    ledger: RwLock<Ledger>,
    options: LedgerOptions,
    commitments: Commitments,
    mode: FailureMode,
    metrics: Arc<Metrics>,
    unaudited: Mutex<Option<Span>>,
    reopening: AtomicBool,
    reopen_interval: Duration,
    closed: AtomicBool,
    /// API calls being served now (see [`Auditor::enter`]).
    calls: AtomicUsize,
    /// When a refused record was last logged, and how many were not logged since.
    refusal_log: LogGate,
    /// Lines about requests forwarded unrecorded (fail-open), at most one a second.
    unaudited_log: LogGate,
}

/// One API call being served; counted until dropped.
pub struct InFlight(Arc<Auditor>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// Wraps an open ledger. `options` are kept to reopen it after a failure.
    pub fn new(
        ledger: Ledger,
        options: LedgerOptions,
        mode: FailureMode,
        metrics: Arc<Metrics>,
        reopen_interval: Duration,
    ) -> Self {
        let commitments = ledger.commitments().clone();
        Self {
            ledger: RwLock::new(ledger),
            options,
            commitments,
            mode,
            metrics,
            unaudited: Mutex::new(None),
            reopening: AtomicBool::new(false),
            reopen_interval,
            closed: AtomicBool::new(false),
            calls: AtomicUsize::new(0),
            refusal_log: LogGate::default(),
            unaudited_log: LogGate::default(),
        }
    }

    /// Counts an API call until the guard is dropped. While a call is alone, its records may
    /// be written inline on its worker thread (see `audit.inline_appends`); with others in
    /// flight they are queued, so that no other call waits on this worker for a sync.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        self.calls.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// The current ledger handle (cheap clone; the lock is released at once).
    pub fn ledger(&self) -> Ledger {
        self.ledger
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keyed commitments under the deployment's commit key.
    pub fn commitments(&self) -> &Commitments {
        &self.commitments
    }

    /// Fail-closed or fail-open.
    pub fn mode(&self) -> FailureMode {
        self.mode
    }

    /// The ledger's durable state.
    pub fn head(&self) -> Head {
        self.ledger().head()
    }

    /// Whether the ledger takes records now.
    pub fn writable(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && self.head().poisoned.is_none()
    }

    /// Appends one record and waits until it is durable. A refusal starts the reopen loop.
    ///
    /// `details` is serialised straight into the record's text (see
    /// [`Details::from_serialize`]): a `serde_json::Value` object, or a type that serialises
    /// as an object with distinct keys, without a `Value` in between.
    ///
    /// # Errors
    /// [`AuditError`] when the record is not durable.
    pub async fn append<T: serde::Serialize + ?Sized>(
        self: &Arc<Self>,
        kind: &str,
        actor: &str,
        details: &T,
    ) -> Result<Receipt, AuditError> {
        let details = Details::from_serialize(details);
        let entry = details
            .and_then(|d| Entry::new(kind, actor, d))
            .map_err(|e| AuditError::Entry {
                kind: kind.to_owned(),
                source: Arc::new(e),
            })?;
        let started = Instant::now();
        let ledger = self.ledger();
        let result = if self.calls.load(Ordering::Relaxed) <= 1 {
            ledger.append_async(entry).await
        } else {
            ledger.append_async_queued(entry).await
        };
        self.metrics.ledger_append.observe(started.elapsed());
        result.map_err(|e| self.refused(kind, e))
    }

    /// Appends records in this order with one sync and waits until they are durable; one
    /// result per record. A record that breaks a record rule fails alone; a refusal of the
    /// ledger fails the records it covers and starts the reopen loop.
    pub async fn append_group(
        self: &Arc<Self>,
        records: Vec<(&str, &str, Result<Details, EntryError>)>,
    ) -> Vec<Result<Receipt, AuditError>> {
        let mut kinds = Vec::with_capacity(records.len());
        let mut results: Vec<Option<Result<Receipt, AuditError>>> = Vec::new();
        let mut entries = Vec::new();
        for (kind, actor, details) in records {
            kinds.push(kind);
            match details.and_then(|d| Entry::new(kind, actor, d)) {
                Ok(entry) => {
                    entries.push(entry);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(AuditError::Entry {
                    kind: kind.to_owned(),
                    source: Arc::new(e),
                }))),
            }
        }
        let started = Instant::now();
        let ledger = self.ledger();
        let written = if self.calls.load(Ordering::Relaxed) <= 1 {
            ledger.append_group_async(entries).await
        } else {
            ledger.append_group_async_queued(entries).await
        };
        self.metrics.ledger_append.observe(started.elapsed());
        let mut written = written.into_iter();
        kinds
            .into_iter()
            .zip(results)
            .map(|(kind, slot)| match slot {
                Some(refused) => refused,
                None => match written.next() {
                    Some(Ok(receipt)) => Ok(receipt),
                    Some(Err(e)) => Err(self.refused(kind, e)),
                    None => Err(self.refused(kind, AppendError::Closed)),
                },
            })
            .collect()
    }

    /// Counts and logs a record the ledger refused, and starts the reopen loop when the ledger
    /// has stopped taking records. A record the writer found breaking a record rule (too large
    /// once encoded) says nothing of the ledger: it is neither counted nor logged as a ledger
    /// failure, and the caller decides what it means.
    fn refused(self: &Arc<Self>, kind: &str, e: AppendError) -> AuditError {
        if let AppendError::Entry(source) = e {
            return AuditError::Entry {
                kind: kind.to_owned(),
                source,
            };
        }
        self.metrics.ledger_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(not_logged) = self.may_log_refusal() {
            tracing::error!(
                target: "kling_audit_gateway::audit",
                record_type = kind,
                error = %e,
                not_logged,
                "audit record not written"
            );
        }
        if matches!(e, AppendError::Poisoned { .. } | AppendError::Closed) {
            self.start_reopen();
        }
        AuditError::Append(e)
    }

    /// Whether a refused record may be logged now: at most one line a second while the ledger
    /// refuses records (every refusal is still counted in the metrics), so that a gateway under
    /// load does not write thousands of identical lines. Returns how many went unlogged since
    /// the last line.
    pub fn may_log_refusal(&self) -> Option<u64> {
        self.refusal_log.admit()
    }

    /// Whether to log a request forwarded unrecorded (fail-open): at most one line a second,
    /// like [`Auditor::may_log_refusal`]; each one is counted in the metrics and in the
    /// `gateway.unaudited` record anyway.
    pub fn may_log_unaudited(&self) -> Option<u64> {
        self.unaudited_log.admit()
    }

    /// Counts one request forwarded without a request record (fail-open).
    pub fn note_unaudited(&self) {
        self.metrics
            .unaudited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = now_ms();
        let mut span = self
            .unaudited
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match span.as_mut() {
            Some(s) => {
                s.count += 1;
                s.last_ms = now;
            }
            None => {
                *span = Some(Span {
                    count: 1,
                    first_ms: now,
                    last_ms: now,
                })
            }
        }
    }

    /// Requests forwarded unrecorded and not yet reported in a `gateway.unaudited` record.
    pub fn pending_unaudited(&self) -> u64 {
        self.unaudited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(0, |s| s.count)
    }

    /// Writes `gateway.unaudited` for the span collected so far, if any.
    async fn report_unaudited(self: &Arc<Self>) {
        let span = self
            .unaudited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(span) = span else { return };
        let details = json!({
            "count": span.count,
            "first_unix_ms": span.first_ms,
            "last_unix_ms": span.last_ms,
            "mode": "fail-open",
            "reason": "the audit ledger refused records; these requests were forwarded unrecorded",
        });
        if self
            .append("gateway.unaudited", GATEWAY_ACTOR, &details)
            .await
            .is_err()
        {
            // Put the span back (merged with anything counted meanwhile) for the next try.
            let mut guard = self
                .unaudited
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *guard = Some(match *guard {
                Some(newer) => Span {
                    count: span.count + newer.count,
                    first_ms: span.first_ms,
                    last_ms: newer.last_ms,
                },
                None => span,
            });
        }
    }

    fn start_reopen(self: &Arc<Self>) {
        if self.closed.load(Ordering::Relaxed) || self.reopening.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.reopen_loop().await;
            this.reopening.store(false, Ordering::Release);
        });
    }

    async fn reopen_loop(self: &Arc<Self>) {
        loop {
            tokio::time::sleep(self.reopen_interval).await;
            if self.closed.load(Ordering::Relaxed) {
                return;
            }
            // The blocking close joins the old writer thread, which releases the directory
            // lock before the new open tries to take it.
            let old = self.ledger();
            let options = self.options.clone();
            let opened = tokio::task::spawn_blocking(move || {
                let _ = old.close();
                Ledger::open(options)
            })
            .await;
            match opened {
                Ok(Ok((ledger, report))) => {
                    log_open_report(&report);
                    *self.ledger.write().unwrap_or_else(PoisonError::into_inner) = ledger;
                    self.metrics.ledger_reopens.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        target: "kling_audit_gateway::audit",
                        records = report.records,
                        torn_tail = report.torn_tail.is_some(),
                        "audit ledger reopened after a failure"
                    );
                    let details = json!({
                        "records": report.records,
                        "torn_tail_recovered": report.torn_tail.is_some(),
                    });
                    if self
                        .append("gateway.ledger_reopened", GATEWAY_ACTOR, &details)
                        .await
                        .is_ok()
                    {
                        self.report_unaudited().await;
                        return;
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(target: "kling_audit_gateway::audit", error = %e, "audit ledger still unavailable");
                }
                Err(e) => {
                    tracing::warn!(target: "kling_audit_gateway::audit", error = %e, "ledger reopen task failed");
                }
            }
        }
    }

    /// Seals the ledger (sync and final checkpoint) and waits for its writer thread to end, so
    /// the directory lock is free when this returns; later appends fail.
    ///
    /// # Errors
    /// The ledger's refusal, e.g. when it was already poisoned.
    pub async fn close(&self) -> Result<Head, AppendError> {
        self.closed.store(true, Ordering::Relaxed);
        let ledger = self.ledger();
        tokio::task::spawn_blocking(move || ledger.close())
            .await
            .unwrap_or(Err(AppendError::Closed))
    }
}

/// Logs what opening the ledger did that the operator must know: keys it created (the ledger
/// had no `init`), a torn tail it cut. The ledger itself does not log these (it reports them to
/// its caller), so these are the operator's lines about them.
pub fn log_open_report(report: &kling_audit_ledger::OpenReport) {
    if let Some(secrets) = &report.created_keys {
        // The verifier key is public; the MAC root key is not logged.
        tracing::warn!(
            target: "kling_audit_gateway::audit",
            keys_dir = %report.keys_dir.display(),
            verifier_key = %secrets.verifier_key,
            "created a new ledger: no keys existed, so the MAC root key is stored beside the \
             other keys; to keep it offline, stop, delete the ledger and keys directories, run \
             `kling-audit init` and start again"
        );
    }
    if let Some(t) = &report.torn_tail {
        tracing::warn!(
            target: "kling_audit_gateway::audit",
            segment = %t.segment, offset = t.offset, len = t.len, quarantine = %t.quarantine,
            "cut a torn tail of the ledger into quarantine (recorded as a ledger.recovery record)"
        );
    }
}

/// Lets one log line through a second and counts the ones held back.
#[derive(Debug, Default)]
struct LogGate(Mutex<(Option<Instant>, u64)>);

impl LogGate {
    /// `Some(held back since the last line)` when a line may be written now.
    fn admit(&self) -> Option<u64> {
        let mut gate = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match gate.0 {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => {
                gate.1 += 1;
                None
            }
            _ => {
                let held_back = std::mem::take(&mut gate.1);
                gate.0 = Some(now);
                Some(held_back)
            }
        }
    }
}

impl AuditError {
    /// `(encoded size, limit)` when the record was refused for its size alone.
    pub fn record_too_large(&self) -> Option<(usize, usize)> {
        match self {
            AuditError::Entry { source, .. } => match **source {
                EntryError::RecordTooLarge { len, max } => Some((len, max)),
                _ => None,
            },
            AuditError::Append(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auditor(dir: &std::path::Path) -> Arc<Auditor> {
        let mut options = LedgerOptions::new(dir.join("audit"));
        options.keys_dir = Some(dir.join("keys"));
        let (ledger, _) = Ledger::open(options.clone()).unwrap();
        Arc::new(Auditor::new(
            ledger,
            options,
            FailureMode::FailClosed,
            Arc::new(Metrics::default()),
            Duration::from_secs(5),
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_in_flight_are_counted_and_records_stay_in_one_chain_either_way() {
        let tmp = tempfile::tempdir().unwrap();
        let a = auditor(tmp.path());
        let details = serde_json::json!({"route": "test"});
        let mut seqs = Vec::new();
        {
            let _one = a.enter();
            assert_eq!(a.calls.load(Ordering::Relaxed), 1);
            // Alone: the record may be written inline.
            seqs.push(a.append("t.alone", "actor", &details).await.unwrap().seq);
            let _two = a.enter();
            assert_eq!(a.calls.load(Ordering::Relaxed), 2);
            // Not alone: queued for the writer thread.
            seqs.push(a.append("t.crowded", "actor", &details).await.unwrap().seq);
        }
        assert_eq!(a.calls.load(Ordering::Relaxed), 0, "guards uncount on drop");
        seqs.push(a.append("t.after", "actor", &details).await.unwrap().seq);
        let first = seqs[0];
        assert_eq!(seqs, vec![first, first + 1, first + 2]);
        let head = a.ledger().close_async().await.unwrap();
        assert_eq!(head.size, first + 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_records_are_logged_at_most_once_a_second_and_all_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let a = auditor(tmp.path());
        a.ledger().close_async().await.unwrap();
        let details = serde_json::json!({"route": "test"});
        for _ in 0..50 {
            assert!(a.append("t.refused", "actor", &details).await.is_err());
        }
        assert_eq!(a.metrics.ledger_failures.load(Ordering::Relaxed), 50);
        // The first refusal took the second's line; the other 49 wait for the next one.
        assert_eq!(a.may_log_refusal(), None);
        assert_eq!(
            a.refusal_log.0.lock().unwrap().1,
            50,
            "49 refusals and this call unlogged"
        );
        a.refusal_log.0.lock().unwrap().0 = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(a.may_log_refusal(), Some(50));
        assert_eq!(a.may_log_refusal(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_too_large_is_refused_without_counting_a_ledger_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let a = auditor(tmp.path());
        let details =
            serde_json::json!({"x": "y".repeat(kling_audit_ledger::record::MAX_RECORD_BYTES)});
        let e = a.append("t.huge", "actor", &details).await.unwrap_err();
        let (len, max) = e.record_too_large().expect("refused for its size");
        assert!(len > max, "{len} {max}");
        assert_eq!(a.metrics.ledger_failures.load(Ordering::Relaxed), 0);
        assert!(a.writable());
        let small = serde_json::json!({"x": "y"});
        a.append("t.small", "actor", &small).await.unwrap();
    }

    #[test]
    fn unrecorded_forwards_are_logged_at_most_once_a_second() {
        let gate = LogGate::default();
        assert_eq!(gate.admit(), Some(0));
        for _ in 0..10 {
            assert_eq!(gate.admit(), None);
        }
        gate.0.lock().unwrap().0 = Some(Instant::now() - Duration::from_secs(2));
        assert_eq!(gate.admit(), Some(10));
    }
}
