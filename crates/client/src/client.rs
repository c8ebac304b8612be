//! [`AuditedClient`]: the Kling client whose every call leaves a trail in the ledger.
//!
//! A create first makes its `kling.intent` durable and only then sends the request, so no
//! request can leave without a record (the client fails closed when the ledger refuses).
//! Attempts, retries and token issuance are recorded while the call runs, through a
//! [`CallRecorder`] observing the Kling client; the closing record (`kling.accepted`, the final
//! `kling.rejected`, `kling.outcome`, ...) is written after those, under the same `corr`.
//! The client remembers the last status it recorded for each task it created, so polls and
//! single queries record a `kling.status` only when the status changes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use kling_api::callback::{parse_callback, CallbackError};
use kling_api::client::{ClientConfig, Credentials, PollOptions, StatusChange};
use kling_api::requests::CreateRequest;
use kling_api::routes::{classify, Family};
use kling_api::task::{AnyTask, TaskObject, TaskView};
use kling_api::{webhook, KlingClient, KlingError, SecretString};
use kling_audit_ledger::{Details, Entry, Ledger, Receipt};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::ClientError;
use crate::events;
use crate::recorder::CallRecorder;
use crate::summary::{self, sha256_hex};

/// How many tasks the client remembers for status de-duplication and callback correlation.
const TRACKED_TASKS: usize = 4096;

/// A task this client created.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// Correlation id shared by every record of this task.
    pub corr: Uuid,
    /// The family it was created in.
    pub family: Family,
    /// Kling's task id.
    pub task_id: String,
    /// Kling's request id of the create.
    pub request_id: String,
    /// The caller's id, when one was sent.
    pub external_task_id: Option<String>,
    /// Attempts the create took (more than 1 after 1302/1303 retries).
    pub attempts: u32,
    /// The task as the create answered it.
    pub task: TaskObject,
}

/// The headers and body of a callback as received.
#[derive(Debug, Clone, Copy)]
pub struct CallbackDelivery<'a> {
    /// `webhook-id`.
    pub webhook_id: Option<&'a str>,
    /// `webhook-timestamp`.
    pub webhook_timestamp: Option<&'a str>,
    /// `webhook-signature`.
    pub webhook_signature: Option<&'a str>,
    /// The raw body.
    pub body: &'a [u8],
}

/// The result of checking a callback's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// A signature matched under the configured secret.
    Valid,
    /// Signature headers were present but did not verify; the reason is recorded.
    Invalid(String),
    /// A secret is configured but the callback carried no signature headers.
    Absent,
    /// No webhook secret is configured, so nothing was checked.
    Unchecked,
}

impl SignatureCheck {
    fn as_str(&self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid(_) => "invalid",
            Self::Absent => "absent",
            Self::Unchecked => "unchecked",
        }
    }
}

/// What [`AuditedClient::record_callback`] found and recorded.
#[derive(Debug, Clone)]
pub struct CallbackReport {
    /// The correlation id of the task, when this client created it.
    pub corr: Option<Uuid>,
    /// The parsed task, when the body parsed.
    pub task: Option<AnyTask>,
    /// The signature check.
    pub signature: SignatureCheck,
    /// The `kling.callback` record.
    pub receipt: Receipt,
}

#[derive(Debug, Clone)]
struct Track {
    corr: Uuid,
    last_status: Option<String>,
    outcome_recorded: bool,
}

/// Tasks created by this client, oldest first evicted beyond [`TRACKED_TASKS`].
#[derive(Debug, Default)]
struct TaskTable {
    tasks: HashMap<String, Track>,
    order: VecDeque<String>,
}

impl TaskTable {
    fn insert(&mut self, task_id: &str, track: Track) {
        if self.tasks.insert(task_id.to_owned(), track).is_none() {
            self.order.push_back(task_id.to_owned());
            while self.order.len() > TRACKED_TASKS {
                if let Some(old) = self.order.pop_front() {
                    self.tasks.remove(&old);
                }
            }
        }
    }

    /// Records `status` as the task's latest; returns the previous status when it changed.
    fn change(&mut self, task_id: &str, corr: Uuid, status: &str) -> Option<Option<String>> {
        if !self.tasks.contains_key(task_id) {
            self.insert(
                task_id,
                Track {
                    corr,
                    last_status: None,
                    outcome_recorded: false,
                },
            );
        }
        let track = self.tasks.get_mut(task_id)?;
        if track.last_status.as_deref() == Some(status) {
            return None;
        }
        Some(track.last_status.replace(status.to_owned()))
    }

    /// Marks the outcome recorded; true the first time.
    fn claim_outcome(&mut self, task_id: &str) -> bool {
        match self.tasks.get_mut(task_id) {
            Some(t) if !t.outcome_recorded => {
                t.outcome_recorded = true;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    fn corr_of(&self, task_id: &str) -> Option<Uuid> {
        self.tasks.get(task_id).map(|t| t.corr)
    }
}

/// A Kling client that records every operation in the ledger. Cheap to clone.
#[derive(Clone)]
pub struct AuditedClient {
    kling: KlingClient,
    ledger: Ledger,
    actor: Arc<str>,
    key_fp: Arc<str>,
    credential_kind: &'static str,
    base_host: Option<String>,
    webhook_secret: Option<Arc<SecretString>>,
    tasks: Arc<Mutex<TaskTable>>,
}

impl std::fmt::Debug for AuditedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditedClient")
            .field("actor", &self.actor)
            .field("key_fp", &self.key_fp)
            .field("kling", &self.kling)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl AuditedClient {
    /// Builds the Kling client from `config` and records its calls in `ledger` as `actor`.
    ///
    /// # Errors
    /// [`ClientError::Actor`] for an actor name records cannot carry, [`ClientError::Client`]
    /// when the Kling client cannot be built.
    pub fn new(
        config: ClientConfig,
        ledger: Ledger,
        actor: impl Into<String>,
    ) -> Result<Self, ClientError> {
        let actor = actor.into();
        Entry::new(events::INTENT, actor.as_str(), Details::empty()).map_err(ClientError::Actor)?;
        let commitments = ledger.commitments();
        // Only a keyed fingerprint of the credential identifier is ever recorded.
        let (key_fp, credential_kind) = match &config.credentials {
            Credentials::AccessKey { access_key, .. } => {
                (commitments.key_fingerprint(access_key), "jwt")
            }
            Credentials::ApiKey(key) => (commitments.key_fingerprint(key.expose()), "api-key"),
        };
        let base_host = summary::url_host(&config.base_url);
        let kling = KlingClient::new(config).map_err(ClientError::Client)?;
        Ok(Self {
            kling,
            ledger,
            actor: Arc::from(actor),
            key_fp: Arc::from(key_fp),
            credential_kind,
            base_host,
            webhook_secret: None,
            tasks: Arc::new(Mutex::new(TaskTable::default())),
        })
    }

    /// Checks callback signatures against this Webhook Secret (`whsec_...`).
    #[must_use]
    pub fn with_webhook_secret(mut self, secret: SecretString) -> Self {
        self.webhook_secret = Some(Arc::new(secret));
        self
    }

    /// The underlying Kling client, unobserved: calls made through it are not recorded.
    pub fn kling(&self) -> &KlingClient {
        &self.kling
    }

    /// The ledger records go to.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The keyed fingerprint of the credential in use (`kf_...`).
    pub fn key_fingerprint(&self) -> &str {
        &self.key_fp
    }

    fn table(&self) -> std::sync::MutexGuard<'_, TaskTable> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn recorder(&self, corr: Uuid) -> CallRecorder {
        CallRecorder::start(
            self.ledger.clone(),
            corr,
            Arc::clone(&self.actor),
            Arc::clone(&self.key_fp),
        )
    }

    async fn append(
        &self,
        event: &'static str,
        corr: Uuid,
        details: &Value,
    ) -> Result<Receipt, ClientError> {
        let record = |source| ClientError::Record {
            event,
            corr,
            source,
        };
        let details = Details::from_value(details).map_err(|e| record(e.into()))?;
        let entry =
            Entry::new(event, self.actor.as_ref(), details).map_err(|e| record(e.into()))?;
        let receipt = self.ledger.append_async(entry).await.map_err(record)?;
        tracing::debug!(corr = %corr, event, seq = receipt.seq, "audit record durable");
        Ok(receipt)
    }

    async fn settle(&self, rec: &CallRecorder, event: &'static str) -> Result<(), ClientError> {
        rec.settle().await.map_err(|source| ClientError::Record {
            event,
            corr: rec.corr(),
            source,
        })
    }

    /// Creates a task from a typed request.
    ///
    /// # Errors
    /// As [`AuditedClient::create_json`].
    pub async fn create<R: CreateRequest>(&self, request: &R) -> Result<Submitted, ClientError> {
        let body = serde_json::to_value(request).map_err(|source| ClientError::Encode {
            family: R::FAMILY.as_str(),
            source,
        })?;
        self.create_json(R::FAMILY, &body).await
    }

    /// Creates a task of `family` from a JSON body: records the intent (durable), sends the
    /// create, and records acceptance or refusal.
    ///
    /// # Errors
    /// [`ClientError::Record`] when a record fails (for the intent: nothing was sent),
    /// [`ClientError::Kling`] when Kling refused or the call failed, [`ClientError::Config`]
    /// for a family without an asynchronous create route.
    pub async fn create_json(
        &self,
        family: Family,
        body: &Value,
    ) -> Result<Submitted, ClientError> {
        let route = family
            .route()
            .filter(|r| r.method == "POST" && r.is_async())
            .ok_or_else(|| ClientError::Config {
                reason: format!("{} has no asynchronous create route", family.as_str()),
            })?;
        let corr = Uuid::now_v7();
        let operation = classify("POST", route.path, None);
        let request = summary::summarize_request(&operation, body, self.ledger.commitments());
        let intent = json!({
            "corr": corr.to_string(),
            "op": "create",
            "family": family.as_str(),
            "method": "POST",
            "path": route.path,
            "base_host": self.base_host,
            "key_fp": self.key_fp.as_ref(),
            "credential": self.credential_kind,
            "request": request,
        });
        self.append(events::INTENT, corr, &intent).await?;

        let rec = self.recorder(corr);
        let result = self
            .kling
            .with_observer(Arc::new(rec.clone()))
            .send_raw("POST", route.path, Some(body))
            .await;
        self.settle(&rec, events::ACCEPTED).await?;
        let response = match result {
            Ok(r) => r,
            Err(source) => return Err(self.close_failed(corr, "create", family, source).await),
        };
        let (http_status, request_id) = (response.http_status, response.request_id.clone());
        let decoded = match response.data {
            Some(data) => {
                serde_json::from_value::<TaskObject>(data).map_err(|source| KlingError::Decode {
                    http_status,
                    request_id: Some(request_id.clone()),
                    expected: "task object",
                    source,
                })
            }
            None => Err(KlingError::MissingData {
                http_status,
                request_id: Some(request_id.clone()),
            }),
        };
        let task = match decoded {
            Ok(task) => task,
            Err(source) => return Err(self.close_failed(corr, "create", family, source).await),
        };
        let Some(task_id) = task.task_id.clone().filter(|id| !id.is_empty()) else {
            let source = KlingError::MissingData {
                http_status,
                request_id: Some(request_id),
            };
            return Err(self.close_failed(corr, "create", family, source).await);
        };
        let status = task.task_status.as_ref().map(|s| s.as_str().to_owned());
        let external = task.external_id().map(str::to_owned).or_else(|| {
            body.get("external_task_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let accepted = json!({
            "corr": corr.to_string(),
            "op": "create",
            "family": family.as_str(),
            "task_id": task_id,
            "request_id": request_id,
            "http_status": http_status,
            "attempts": response.attempts,
            "task_status": status,
            "external_task_id": external,
            "kling_created_at_ms": task.created_at,
        });
        self.table().insert(
            &task_id,
            Track {
                corr,
                last_status: status,
                outcome_recorded: false,
            },
        );
        self.append(events::ACCEPTED, corr, &accepted).await?;
        Ok(Submitted {
            corr,
            family,
            task_id,
            request_id,
            external_task_id: external,
            attempts: response.attempts,
            task,
        })
    }

    /// Records the end of a call that failed in a way the attempt records do not already
    /// cover, and wraps the error.
    async fn close_failed(
        &self,
        corr: Uuid,
        op: &'static str,
        family: Family,
        source: KlingError,
    ) -> ClientError {
        let is_create = op == "create";
        let details = match &source {
            KlingError::Decode {
                http_status,
                request_id,
                expected,
                ..
            } => Some((
                events::PROTOCOL_ERROR,
                json!({
                    "corr": corr.to_string(), "op": op, "family": family.as_str(),
                    "reason": "undecodable answer", "expected": expected,
                    "http_status": http_status, "request_id": request_id,
                    "task_may_exist": is_create,
                }),
            )),
            KlingError::MissingData {
                http_status,
                request_id,
            } => Some((
                events::PROTOCOL_ERROR,
                json!({
                    "corr": corr.to_string(), "op": op, "family": family.as_str(),
                    "reason": "success answer without a task", "http_status": http_status,
                    "request_id": request_id, "task_may_exist": is_create,
                }),
            )),
            KlingError::PollTimeout {
                task_id,
                last_status,
                waited,
            } => Some((
                events::TIMEOUT,
                json!({
                    "corr": corr.to_string(), "op": op, "family": family.as_str(),
                    "phase": "poll", "task_id": task_id,
                    "last_status": last_status.as_ref().map(|s| s.as_str()),
                    "waited_ms": u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                    "final": true, "task_may_exist": true,
                }),
            )),
            KlingError::Token(_) | KlingError::Config { .. } | KlingError::Encode(_) => Some((
                events::PROTOCOL_ERROR,
                json!({
                    "corr": corr.to_string(), "op": op, "family": family.as_str(),
                    "reason": "request not sent: local failure", "sent": false,
                    "task_may_exist": false,
                }),
            )),
            // Refusals, transport failures and timeouts were recorded attempt by attempt.
            _ => None,
        };
        if let Some((event, details)) = details {
            if let Err(e) = self.append(event, corr, &details).await {
                return e;
            }
        }
        ClientError::Kling { corr, source }
    }

    fn status_change(&self, corr: Uuid, change: &StatusChange) -> Option<Value> {
        let previous = self
            .table()
            .change(&change.task_id, corr, change.to.as_str())?;
        Some(events::status(corr, change, previous.as_deref()))
    }

    /// Records the outcome of a finished task once; later calls for the same task do nothing.
    async fn record_outcome(
        &self,
        corr: Uuid,
        family: Family,
        task: &TaskObject,
        polls: Option<u32>,
    ) -> Result<(), ClientError> {
        let finished = task.status().is_some_and(|s| s.is_terminal());
        let task_id = task.task_id().unwrap_or_default();
        if finished && self.table().claim_outcome(task_id) {
            let details = events::outcome(corr, family.as_str(), task, polls);
            self.append(events::OUTCOME, corr, &details).await?;
        }
        Ok(())
    }

    /// Queries a task once. Records `kling.status` if its status changed since the last
    /// record, and `kling.outcome` the first time it is seen finished.
    ///
    /// # Errors
    /// [`ClientError::Kling`] when the query fails, [`ClientError::Record`] when a record does.
    pub async fn query(&self, task: &Submitted) -> Result<TaskObject, ClientError> {
        let corr = task.corr;
        let rec = self.recorder(corr);
        let result = self
            .kling
            .with_observer(Arc::new(rec.clone()))
            .query_task(task.family, &task.task_id)
            .await;
        self.settle(&rec, events::STATUS).await?;
        let current = match result {
            Ok(r) => r.data,
            Err(source) => return Err(self.close_failed(corr, "query", task.family, source).await),
        };
        if let Some(status) = current.status() {
            let change = StatusChange {
                task_id: task.task_id.clone(),
                from: None,
                to: status.clone(),
                updated_at_ms: current.updated_at_ms(),
                observed_at_ms: kling_api::clock::Clock::now_unix_ms(
                    &kling_api::clock::SystemClock,
                ),
                polls: 1,
            };
            if let Some(details) = self.status_change(corr, &change) {
                self.append(events::STATUS, corr, &details).await?;
            }
        }
        self.record_outcome(corr, task.family, &current, None)
            .await?;
        Ok(current)
    }

    /// Polls a task until it succeeds or fails (or the deadline passes), recording each
    /// status change and then the outcome. A failed task is returned as `Ok`: its outcome is
    /// in the task and in the `kling.outcome` record.
    ///
    /// # Errors
    /// [`ClientError::Kling`] with [`KlingError::PollTimeout`] at the deadline (recorded as
    /// `kling.timeout`), or any query failure; [`ClientError::Record`] when a record fails.
    pub async fn wait(
        &self,
        task: &Submitted,
        options: PollOptions,
    ) -> Result<TaskObject, ClientError> {
        let corr = task.corr;
        let rec = self.recorder(corr);
        let mut polls = None;
        let result = {
            let rec = rec.clone();
            let mut on_change = |change: &StatusChange| {
                polls = Some(change.polls);
                if let Some(details) = self.status_change(corr, change) {
                    rec.queue(events::STATUS, &details);
                }
            };
            self.kling
                .with_observer(Arc::new(rec.clone()))
                .poll_until_done(task.family, &task.task_id, options, &mut on_change)
                .await
        };
        self.settle(&rec, events::OUTCOME).await?;
        match result {
            Ok(done) => {
                self.record_outcome(corr, task.family, &done, polls).await?;
                Ok(done)
            }
            Err(source) => Err(self.close_failed(corr, "poll", task.family, source).await),
        }
    }

    /// [`AuditedClient::create`] then [`AuditedClient::wait`].
    ///
    /// # Errors
    /// As the two calls.
    pub async fn create_and_wait<R: CreateRequest>(
        &self,
        request: &R,
        options: PollOptions,
    ) -> Result<(Submitted, TaskObject), ClientError> {
        let submitted = self.create(request).await?;
        let done = self.wait(&submitted, options).await?;
        Ok((submitted, done))
    }

    /// Records a callback Kling posted: signature result, body hash, the status it reports
    /// and hashed result URLs. The body itself is never stored. A callback only reports a
    /// status; confirm the final state with [`AuditedClient::query`] before trusting it.
    ///
    /// # Errors
    /// [`ClientError::Record`] when the record cannot be written.
    pub async fn record_callback(
        &self,
        delivery: CallbackDelivery<'_>,
    ) -> Result<CallbackReport, ClientError> {
        let signature = self.check_signature(&delivery);
        let parsed = parse_callback(delivery.body);
        let (task, shape, enveloped, parse_error) = match parsed {
            Ok(cb) => {
                let shape = match cb.task {
                    AnyTask::Legacy(_) => "legacy",
                    AnyTask::NewStandard(_) => "new-standard",
                };
                (Some(cb.task), shape, cb.enveloped, None)
            }
            Err(e) => {
                let kind = match e {
                    CallbackError::Json(_) => "not-json",
                    CallbackError::NotAnObject { .. } => "not-an-object",
                    CallbackError::UnknownShape { .. } => "unknown-shape",
                    CallbackError::Shape { .. } => "bad-field-types",
                };
                (None, "unparsed", false, Some(kind))
            }
        };
        let task_id = task.as_ref().and_then(|t| t.task_id().map(str::to_owned));
        let known = task_id.as_deref().and_then(|id| self.table().corr_of(id));
        // A callback for a task we did not create still gets a correlation id of its own.
        let corr = known.unwrap_or_else(Uuid::now_v7);
        let short = |s: Option<&str>, n: usize| s.map(|s| s.chars().take(n).collect::<String>());
        let details = json!({
            "corr": corr.to_string(),
            "known_task": known.is_some(),
            "task_id": task_id,
            "webhook_id": short(delivery.webhook_id, 128),
            "webhook_timestamp": short(delivery.webhook_timestamp, 32),
            "signature": signature.as_str(),
            "signature_error": match &signature { SignatureCheck::Invalid(r) => Some(r), _ => None },
            "body_sha256": sha256_hex(delivery.body),
            "body_bytes": delivery.body.len(),
            "shape": shape,
            "enveloped": enveloped,
            "parse_error": parse_error,
            "reported": task.as_ref().map(|t| Value::Object(events::task_result(t))),
        });
        let receipt = self.append(events::CALLBACK, corr, &details).await?;
        Ok(CallbackReport {
            corr: known,
            task,
            signature,
            receipt,
        })
    }

    fn check_signature(&self, d: &CallbackDelivery<'_>) -> SignatureCheck {
        let Some(secret) = &self.webhook_secret else {
            return SignatureCheck::Unchecked;
        };
        let (Some(id), Some(ts), Some(sig)) =
            (d.webhook_id, d.webhook_timestamp, d.webhook_signature)
        else {
            return SignatureCheck::Absent;
        };
        match webhook::verify(
            secret.expose(),
            id,
            ts,
            sig,
            d.body,
            unix_now(),
            webhook::DEFAULT_TOLERANCE_SECS,
        ) {
            Ok(()) => SignatureCheck::Valid,
            Err(e) => SignatureCheck::Invalid(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_table_reports_only_changes_and_one_outcome() {
        let mut t = TaskTable::default();
        let corr = Uuid::now_v7();
        t.insert(
            "1",
            Track {
                corr,
                last_status: Some("submitted".into()),
                outcome_recorded: false,
            },
        );
        assert_eq!(t.change("1", corr, "submitted"), None);
        assert_eq!(
            t.change("1", corr, "processing"),
            Some(Some("submitted".into()))
        );
        assert_eq!(t.change("1", corr, "processing"), None);
        assert_eq!(t.change("2", corr, "succeed"), Some(None));
        assert!(t.claim_outcome("1"));
        assert!(!t.claim_outcome("1"));
        assert_eq!(t.corr_of("1"), Some(corr));
    }

    #[test]
    fn task_table_forgets_the_oldest_beyond_its_bound() {
        let mut t = TaskTable::default();
        for i in 0..=TRACKED_TASKS {
            t.insert(
                &i.to_string(),
                Track {
                    corr: Uuid::nil(),
                    last_status: None,
                    outcome_recorded: false,
                },
            );
        }
        assert_eq!(t.tasks.len(), TRACKED_TASKS);
        assert!(t.corr_of("0").is_none());
        assert!(t.corr_of(&TRACKED_TASKS.to_string()).is_some());
    }
}
