//! The Kling HTTP client: authentication, retries where they are safe, typed calls, polling.
//!
//! Retry rules (kling-api.md 11.1): 1302/1303 (and a code-less 429) are retried with
//! exponential back-off and jitter on any call, since the server refused before doing
//! anything; 5xx answers and transport failures are retried only on reads, never on creates,
//! because a create whose answer was lost may still have made (and billed) a task; 1003/1004
//! get one retry with a freshly signed token; every other refusal fails at once.
//!
//! A [`CallObserver`] sees each token issuance and each attempt as it happens, so the audited
//! client can record intent, attempts and transport failures even if the process dies
//! mid-call. [`KlingClient::with_observer`] makes a cheap per-call copy that reports to a
//! given observer, which keeps concurrent calls' records apart.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::account::{AccountCosts, BillingExportPage, BillingExportQuery};
use crate::auth::{TokenCache, TokenPolicy};
use crate::clock::{Clock, SystemClock};
use crate::codes;
use crate::envelope::Envelope;
use crate::error::{ApiError, KlingError, TransportErrorKind};
use crate::requests::{
    encode_component, AccountCostsQuery, AdvancedLipSyncRequest, CreateRequest,
    IdentifyFaceRequest, IdentifyFaceResponse, ImageGenerationRequest, ImageToVideoRequest,
    LipSyncRequest, MultiImageToVideoRequest, NewStandardCreateRequest, TextToVideoRequest,
    VideoEffectsRequest, VideoExtendRequest, VirtualTryOnRequest,
};
use crate::routes::{self, Family, LookupForm, Operation, OperationKind};
use crate::secret::SecretString;
use crate::task::{NewTaskObject, TaskObject, TaskStatus, TaskView, TasksCursorQuery, TasksPage};

/// How far `nbf` moves back after a 1003 (server clock behind ours).
const NOT_BEFORE_WIDENING_SECS: i64 = 60;

/// How the client authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// Access key + secret key: the client signs and caches JWTs (legacy API).
    AccessKey {
        /// The access key (JWT `iss`).
        access_key: String,
        /// The secret key.
        secret_key: SecretString,
    },
    /// A 2026 API key sent as the bearer value.
    ApiKey(SecretString),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the access key (it names the account) nor any secret is printed.
        match self {
            Self::AccessKey { .. } => f.write_str("Credentials::AccessKey(<redacted>)"),
            Self::ApiKey(_) => f.write_str("Credentials::ApiKey(<redacted>)"),
        }
    }
}

/// When and how often to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per call, including the first (at least 1).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_backoff: Duration,
    /// Upper bound of any delay.
    pub max_backoff: Duration,
    /// Growth factor per attempt.
    pub multiplier: f64,
    /// Fraction of each delay that is randomised away (0 = none, 1 = full jitter).
    pub jitter: f64,
    /// Retry reads on 5xx and transport failures.
    pub retry_reads_on_server_error: bool,
    /// Re-sign once after 1003/1004 (JWT credentials only).
    pub resign_on_token_rejection: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Kling advises back-off from at least 1 s for 1303 (11.5).
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            retry_reads_on_server_error: true,
            resign_on_token_rejection: true,
        }
    }
}

impl RetryPolicy {
    /// No retries at all (one attempt, no re-signing).
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            resign_on_token_rejection: false,
            ..Self::default()
        }
    }

    /// The delay before attempt `next_attempt` (2 for the first retry), before jitter.
    pub fn base_delay(&self, next_attempt: u32) -> Duration {
        let exponent = i32::try_from(next_attempt.saturating_sub(2)).unwrap_or(i32::MAX);
        let factor = self.multiplier.max(1.0).powi(exponent);
        let secs =
            (self.initial_backoff.as_secs_f64() * factor).min(self.max_backoff.as_secs_f64());
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_backoff)
    }

    fn delay(&self, next_attempt: u32, retry_after: Option<Duration>) -> Duration {
        let base = self.base_delay(next_attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let jittered = base.mul_f64(1.0 - jitter * rand::random::<f64>());
        match retry_after {
            Some(hint) => jittered.max(hint).min(self.max_backoff),
            None => jittered,
        }
    }
}

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// E.g. `https://api-singapore.klingai.com`, or a loopback simulator.
    pub base_url: String,
    /// How to authenticate.
    pub credentials: Credentials,
    /// Per-request timeout (npm `kling-api` uses 30 s).
    pub timeout: Duration,
    /// Retry behaviour.
    pub retry: RetryPolicy,
    /// JWT lifetime, renewal point, and the `nbf` clock-skew margin.
    pub token: TokenPolicy,
    /// Clock used to sign tokens and stamp attempts.
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("credentials", &self.credentials)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults around an access/secret key pair: 30 s timeout, default retries and tokens.
    pub fn new(
        base_url: impl Into<String>,
        access_key: impl Into<String>,
        secret_key: SecretString,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            credentials: Credentials::AccessKey {
                access_key: access_key.into(),
                secret_key,
            },
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            token: TokenPolicy::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Defaults around an API key.
    pub fn with_api_key(base_url: impl Into<String>, api_key: SecretString) -> Self {
        Self {
            base_url: base_url.into(),
            credentials: Credentials::ApiKey(api_key),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            token: TokenPolicy::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Why a token was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenIssueReason {
    /// No token was cached yet.
    First,
    /// The cached token was too close to expiry.
    Renewal,
    /// Kling refused the previous token with this code (1003/1004).
    AfterRejection(i64),
}

/// A token issuance, as reported to observers. Contains no secret; `issuer` is the access key,
/// which identifies the account: record a keyed fingerprint of it, not the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenIssued<'a> {
    /// Call it was issued for.
    pub call_id: u64,
    /// The access key (JWT `iss`).
    pub issuer: &'a str,
    /// `iat`.
    pub issued_at: i64,
    /// `nbf`.
    pub not_before: i64,
    /// `exp`.
    pub expires_at: i64,
    /// Why.
    pub reason: TokenIssueReason,
}

/// The credential an attempt carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialUse {
    /// A JWT with these times.
    Jwt {
        /// `iat`.
        issued_at: i64,
        /// `nbf`.
        not_before: i64,
        /// `exp`.
        expires_at: i64,
        /// Whether it was signed for this attempt.
        newly_issued: bool,
    },
    /// An API key.
    ApiKey,
}

/// What one attempt produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome<'a> {
    /// An HTTP answer arrived (success or refusal).
    Response {
        /// HTTP status.
        http_status: u16,
        /// Business code, when the body had one.
        code: Option<i64>,
        /// Kling's message (uncapped; cap it before recording).
        message: Option<&'a str>,
        /// Kling's request id.
        request_id: Option<&'a str>,
    },
    /// No answer: connection, timeout or body failure.
    Transport {
        /// What failed.
        kind: TransportErrorKind,
    },
}

/// One attempt of a call, reported after it completes and before any retry delay.
#[derive(Debug, Clone, Copy)]
pub struct AttemptRecord<'a> {
    /// Groups the attempts of one logical call.
    pub call_id: u64,
    /// 1-based attempt number.
    pub attempt: u32,
    /// HTTP method.
    pub method: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// The request's classification.
    pub operation: &'a Operation,
    /// Credential used.
    pub credential: CredentialUse,
    /// Result.
    pub outcome: AttemptOutcome<'a>,
    /// Wall-clock start, Unix ms.
    pub started_at_ms: i64,
    /// Time from send to answer (or failure).
    pub latency: Duration,
    /// Delay before the next attempt, `None` when this attempt is final.
    pub retry_in: Option<Duration>,
    /// True when the next attempt re-signs after 1003/1004.
    pub resigning: bool,
}

/// Receives events of calls as they happen. All methods default to doing nothing.
pub trait CallObserver: Send + Sync {
    /// A call is about to make its first attempt.
    fn on_call_start(&self, _call_id: u64, _method: &str, _path: &str, _operation: &Operation) {}
    /// A JWT was signed for a call.
    fn on_token_issued(&self, _event: &TokenIssued<'_>) {}
    /// An attempt finished.
    fn on_attempt(&self, _record: &AttemptRecord<'_>) {}
}

/// A successful answer with its audit facts.
#[derive(Debug, Clone, PartialEq)]
pub struct Response<T> {
    /// The decoded `data`.
    pub data: T,
    /// Kling's request id.
    pub request_id: String,
    /// HTTP status (200 in practice).
    pub http_status: u16,
    /// Attempts made, including the successful one.
    pub attempts: u32,
    /// Call id shared with the observer events.
    pub call_id: u64,
}

impl<T> Response<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        Response {
            data: f(self.data),
            request_id: self.request_id,
            http_status: self.http_status,
            attempts: self.attempts,
            call_id: self.call_id,
        }
    }
}

/// Polling schedule for [`KlingClient::poll_until_done`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollOptions {
    /// Wait before the second query.
    pub initial_interval: Duration,
    /// Interval growth per query (1.0 = fixed interval).
    pub backoff: f64,
    /// Upper bound of the interval.
    pub max_interval: Duration,
    /// Give up after this long.
    pub deadline: Duration,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(3),
            backoff: 1.5,
            max_interval: Duration::from_secs(30),
            deadline: Duration::from_secs(15 * 60),
        }
    }
}

/// A task status change seen while polling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The task.
    pub task_id: String,
    /// The previous status (`None` on the first observation).
    pub from: Option<TaskStatus>,
    /// The new status.
    pub to: TaskStatus,
    /// Kling's `updated_at`, Unix ms.
    pub updated_at_ms: Option<i64>,
    /// Our clock when we saw it, Unix ms.
    pub observed_at_ms: i64,
    /// Queries made so far.
    pub polls: u32,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    credentials: Credentials,
    tokens: Option<TokenCache>,
    retry: RetryPolicy,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    next_call_id: AtomicU64,
}

/// The Kling API client. Cloning is cheap and shares the connection pool and token cache.
#[derive(Clone)]
pub struct KlingClient {
    inner: Arc<Inner>,
    observer: Option<Arc<dyn CallObserver>>,
}

impl fmt::Debug for KlingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KlingClient")
            .field("base_url", &self.inner.base_url)
            .field("credentials", &self.inner.credentials)
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

enum Step {
    Done(Result<Response<Option<Value>>, KlingError>),
    Retry(Duration),
    Resign(i64),
}

impl KlingClient {
    /// Builds a client.
    ///
    /// # Errors
    /// [`KlingError::Config`] for a base URL that is not http(s) or an HTTP client that cannot
    /// be built; [`KlingError::Token`] for empty keys.
    pub fn new(config: ClientConfig) -> Result<Self, KlingError> {
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(KlingError::Config {
                reason: format!("base URL must start with http:// or https://, got {base_url:?}"),
            });
        }
        let tokens = match &config.credentials {
            Credentials::AccessKey {
                access_key,
                secret_key,
            } => Some(TokenCache::with_clock(
                access_key.clone(),
                secret_key.clone(),
                config.token,
                config.clock.clone(),
            )?),
            Credentials::ApiKey(key) if key.is_empty() => {
                return Err(KlingError::Config {
                    reason: "API key is empty".into(),
                })
            }
            Credentials::ApiKey(_) => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| KlingError::Config {
                reason: format!("HTTP client: {e}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base_url,
                credentials: config.credentials,
                tokens,
                retry: config.retry,
                timeout: config.timeout,
                clock: config.clock,
                next_call_id: AtomicU64::new(1),
            }),
            observer: None,
        })
    }

    /// A copy of this client that reports to `observer` (sharing pool and tokens).
    pub fn with_observer(&self, observer: Arc<dyn CallObserver>) -> Self {
        Self {
            inner: self.inner.clone(),
            observer: Some(observer),
        }
    }

    /// The base URL in use (without trailing slash).
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The token cache, when the client signs JWTs.
    pub fn token_cache(&self) -> Option<&TokenCache> {
        self.inner.tokens.as_ref()
    }

    // ----- typed legacy creates -----

    /// Creates a task of `R`'s family.
    ///
    /// # Errors
    /// Any [`KlingError`]; see the module doc for which are retried.
    pub async fn create<R: CreateRequest>(
        &self,
        request: &R,
    ) -> Result<Response<TaskObject>, KlingError> {
        let path = create_path(R::FAMILY)?;
        self.send_json(Method::POST, path, Some(request)).await
    }

    /// `POST /v1/videos/text2video`.
    ///
    /// # Errors
    /// As [`KlingClient::create`].
    pub async fn create_text_to_video(
        &self,
        r: &TextToVideoRequest,
    ) -> Result<Response<TaskObject>, KlingError> {
        self.create(r).await
    }

    /// `POST /v1/videos/image2video`.
    ///
    /// # Errors
    /// As [`KlingClient::create`].
    pub async fn create_image_to_video(
        &self,
        r: &ImageToVideoRequest,
    ) -> Result<Response<TaskObject>, KlingError> {
        self.create(r).await
    }

    /// `POST /v1/videos/multi-image2video`.
    ///
    /// # Errors
    /// As [`KlingClient::create`].
    pub async fn create_multi_image_to_video(
        &self,
        r: &MultiImageToVideoRequest,
    ) -> Result<Response<TaskObject>, KlingError> {
        self.create(r).await
    }

    /// `POST /v1/videos/video-extend`.
    ///
    /// # Errors
    /// As [`KlingClient::create`].
    pub async fn create_video_extend(
        &self,
        r: &VideoExtendRequest,
    ) -> Result<Response<TaskObject>, KlingError> {
        self.create(r).await
    }

    /// `POST /v1/videos/lip-sync`.
    ///
    /// # Errors
    /// As [`KlingClient::create`].
    pub async fn create_lip_sync(
        &self,
        r: &LipSyncRequest,
    ) -> Result<Response<TaskObject>, KlingError> {
        self.create(r).await
    }

    /// `POST /v1/videos/advanced-lip-sync`.
    ///
    /// # Errors
    /// As [`KlingClient::create`].
    pub async fn create_advanced_lip_sync(
        &self,
        r: &AdvancedLipSyncRequest,
    ) -> Result<Response<TaskObject>, KlingError> {
        self.create(r).await
    }

    /// `POST /v1/videos/effects`.
    ///
    /// # Errors
    /// As [`KlingClient::create`].
    pub async fn create_video_effects(
        &self,
        r: &VideoEffectsRequest,
    ) -> Result<Response<TaskObject>, KlingError> {
        self.create(r).await
    }

    /// `POST /v1/images/generations`.
    ///
    /// # Errors
    /// As [`KlingClient::create`].
    pub async fn create_image_generation(
        &self,
        r: &ImageGenerationRequest,
    ) -> Result<Response<TaskObject>, KlingError> {
        self.create(r).await
    }

    /// `POST /v1/images/kolors-virtual-try-on`.
    ///
    /// # Errors
    /// As [`KlingClient::create`].
    pub async fn create_virtual_try_on(
        &self,
        r: &VirtualTryOnRequest,
    ) -> Result<Response<TaskObject>, KlingError> {
        self.create(r).await
    }

    /// `POST /v1/videos/identify-face` (synchronous face scan).
    ///
    /// # Errors
    /// As [`KlingClient::create`].
    pub async fn identify_face(
        &self,
        r: &IdentifyFaceRequest,
    ) -> Result<Response<IdentifyFaceResponse>, KlingError> {
        self.send_json(Method::POST, "/v1/videos/identify-face", Some(r))
            .await
    }

    // ----- legacy queries -----

    /// `GET /v1/<family>/{task_id}`.
    ///
    /// # Errors
    /// Any [`KlingError`]; 5xx and transport failures are retried.
    pub async fn query_task(
        &self,
        family: Family,
        task_id: &str,
    ) -> Result<Response<TaskObject>, KlingError> {
        let path = format!("{}/{}", query_path(family)?, encode_component(task_id));
        self.send_json::<(), _>(Method::GET, &path, None).await
    }

    /// `GET /v1/<family>?pageNum=&pageSize=`: a bare array of tasks.
    ///
    /// # Errors
    /// As [`KlingClient::query_task`].
    pub async fn list_tasks(
        &self,
        family: Family,
        page_num: u32,
        page_size: u32,
    ) -> Result<Response<Vec<TaskObject>>, KlingError> {
        let path = format!(
            "{}?pageNum={page_num}&pageSize={page_size}",
            query_path(family)?
        );
        self.send_json::<(), _>(Method::GET, &path, None).await
    }

    /// Looks a task up by the caller's id, in the chosen form of kling-api.md 5.3.
    ///
    /// # Errors
    /// As [`KlingClient::query_task`].
    pub async fn query_by_external_id(
        &self,
        family: Family,
        external_task_id: &str,
        form: LookupForm,
    ) -> Result<Response<TaskObject>, KlingError> {
        let base = query_path(family)?;
        let id = encode_component(external_task_id);
        let path = match form {
            LookupForm::PathSlot => format!("{base}/{id}"),
            LookupForm::QueryParam => format!("{base}?external_task_id={id}"),
            LookupForm::PathWithFlag => format!("{base}/{id}?external_task_id=true"),
        };
        self.send_json::<(), _>(Method::GET, &path, None).await
    }

    // ----- account -----

    /// `GET /account/costs`.
    ///
    /// # Errors
    /// As [`KlingClient::query_task`].
    pub async fn account_costs(
        &self,
        query: &AccountCostsQuery,
    ) -> Result<Response<AccountCosts>, KlingError> {
        let path = format!("/account/costs?{}", query.to_query());
        self.send_json::<(), _>(Method::GET, &path, None).await
    }

    /// `POST /account/billing/package` (unit deductions; a read, so retried like one).
    ///
    /// # Errors
    /// As [`KlingClient::query_task`].
    pub async fn billing_package(
        &self,
        q: &BillingExportQuery,
    ) -> Result<Response<BillingExportPage>, KlingError> {
        self.send_json(Method::POST, "/account/billing/package", Some(q))
            .await
    }

    /// `POST /account/billing/balance` (cash deductions).
    ///
    /// # Errors
    /// As [`KlingClient::query_task`].
    pub async fn billing_balance(
        &self,
        q: &BillingExportQuery,
    ) -> Result<Response<BillingExportPage>, KlingError> {
        self.send_json(Method::POST, "/account/billing/balance", Some(q))
            .await
    }

    // ----- new standard -----

    /// `POST /<capability>/<model>` (e.g. `text-to-video`, `kling-3.0`).
    ///
    /// # Errors
    /// As [`KlingClient::create`]; [`KlingError::Config`] for path segments with `/`.
    pub async fn create_new_standard(
        &self,
        capability: &str,
        model: &str,
        request: &NewStandardCreateRequest,
    ) -> Result<Response<NewTaskObject>, KlingError> {
        if capability.is_empty()
            || capability.contains('/')
            || model.is_empty()
            || model.contains('/')
        {
            return Err(KlingError::Config {
                reason: "capability and model must be single path segments".into(),
            });
        }
        let path = format!("/{capability}/{model}");
        self.send_json(Method::POST, &path, Some(request)).await
    }

    /// `GET /tasks?task_ids=..` (or `external_task_ids` when `by_external_id`).
    ///
    /// # Errors
    /// As [`KlingClient::query_task`].
    pub async fn query_tasks(
        &self,
        ids: &[&str],
        by_external_id: bool,
    ) -> Result<Response<Vec<NewTaskObject>>, KlingError> {
        let name = if by_external_id {
            "external_task_ids"
        } else {
            "task_ids"
        };
        let list: Vec<String> = ids.iter().map(|id| encode_component(id)).collect();
        let path = format!("/tasks?{name}={}", list.join(","));
        self.send_json::<(), _>(Method::GET, &path, None).await
    }

    /// `POST /tasks` cursor listing.
    ///
    /// # Errors
    /// As [`KlingClient::query_task`].
    pub async fn list_tasks_cursor(
        &self,
        q: &TasksCursorQuery,
    ) -> Result<Response<TasksPage>, KlingError> {
        self.send_json(Method::POST, "/tasks", Some(q)).await
    }

    // ----- generic -----

    /// Sends any request. `path` may carry a query string; `data` of the answer is returned
    /// undecoded. Retry rules follow the path's classification (creates are never retried
    /// on 5xx or transport failures).
    ///
    /// # Errors
    /// Any [`KlingError`].
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response<Option<Value>>, KlingError> {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).map_err(|_| {
            KlingError::Config {
                reason: format!("invalid HTTP method {method:?}"),
            }
        })?;
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(KlingError::Encode)?;
        self.execute(method, path, body).await
    }

    /// Polls a legacy task until `succeed`/`failed` (or the deadline), reporting each status
    /// change (not each poll) to `on_change`. The returned task may be a failure: check
    /// [`TaskView::outcome`].
    ///
    /// # Errors
    /// [`KlingError::PollTimeout`] at the deadline; any query error that survives retries.
    pub async fn poll_until_done(
        &self,
        family: Family,
        task_id: &str,
        options: PollOptions,
        on_change: &mut (dyn FnMut(&StatusChange) + Send),
    ) -> Result<TaskObject, KlingError> {
        let started = Instant::now();
        let mut interval = options.initial_interval;
        let mut last: Option<TaskStatus> = None;
        let mut polls = 0u32;
        loop {
            let task = self.query_task(family, task_id).await?.data;
            polls = polls.saturating_add(1);
            if let Some(status) = task.status().cloned() {
                if last.as_ref() != Some(&status) {
                    on_change(&StatusChange {
                        task_id: task_id.to_owned(),
                        from: last.clone(),
                        to: status.clone(),
                        updated_at_ms: task.updated_at_ms(),
                        observed_at_ms: self.inner.clock.now_unix_ms(),
                        polls,
                    });
                    last = Some(status.clone());
                }
                if status.is_terminal() {
                    return Ok(task);
                }
            }
            let waited = started.elapsed();
            if waited >= options.deadline {
                return Err(KlingError::PollTimeout {
                    task_id: task_id.to_owned(),
                    last_status: last,
                    waited,
                });
            }
            let remaining = options.deadline.saturating_sub(waited);
            tokio::time::sleep(interval.min(remaining)).await;
            interval = interval
                .mul_f64(options.backoff.max(1.0))
                .min(options.max_interval);
        }
    }

    // ----- core -----

    async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Response<T>, KlingError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(KlingError::Encode)?;
        let response = self.execute(method, path, body).await?;
        let (http_status, request_id) = (response.http_status, response.request_id.clone());
        let Some(data) = response.data.clone() else {
            return Err(KlingError::MissingData {
                http_status,
                request_id: Some(request_id),
            });
        };
        let decoded = serde_json::from_value::<T>(data).map_err(|source| KlingError::Decode {
            http_status,
            request_id: Some(request_id),
            expected: std::any::type_name::<T>(),
            source,
        })?;
        Ok(response.map(|_| decoded))
    }

    async fn execute(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Option<Value>>, KlingError> {
        if !path_and_query.starts_with('/') {
            return Err(KlingError::Config {
                reason: format!("path must start with '/': {path_and_query:?}"),
            });
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let operation = routes::classify(method.as_str(), path, query);
        let is_read = match operation.kind {
            OperationKind::Create => false,
            OperationKind::Unknown => method == Method::GET,
            _ => true,
        };
        let url = format!("{}{}", self.inner.base_url, path_and_query);
        let call_id = self.inner.next_call_id.fetch_add(1, Ordering::Relaxed);
        if let Some(obs) = &self.observer {
            obs.on_call_start(call_id, method.as_str(), path, &operation);
        }
        let policy = self.inner.retry;
        let mut attempt = 0u32;
        let mut resigned = false;
        let mut rejection: Option<i64> = None;
        loop {
            attempt += 1;
            let (header, credential) = self.credential(call_id, rejection.take())?;
            let started_at_ms = self.inner.clock.now_unix_ms();
            let started = Instant::now();
            let mut request = self
                .inner
                .http
                .request(method.clone(), &url)
                .header(reqwest::header::AUTHORIZATION, header.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let sent = send_and_read(request).await;
            let latency = started.elapsed();

            let can_retry = attempt < policy.max_attempts.max(1);
            let (step, outcome_for_observer);
            let envelope_holder: Option<Envelope<Value>>;
            match sent {
                Err(error) => {
                    let kind = TransportErrorKind::of(&error);
                    let err = if kind == TransportErrorKind::Timeout {
                        KlingError::Timeout {
                            method: method.to_string(),
                            path: path.to_owned(),
                            timeout: self.inner.timeout,
                        }
                    } else {
                        KlingError::Transport {
                            method: method.to_string(),
                            path: path.to_owned(),
                            kind,
                            source: error,
                        }
                    };
                    outcome_for_observer = AttemptOutcome::Transport { kind };
                    step = if is_read && policy.retry_reads_on_server_error && can_retry {
                        Step::Retry(policy.delay(attempt + 1, None))
                    } else {
                        Step::Done(Err(err))
                    };
                }
                Ok((status, retry_after, bytes)) => {
                    envelope_holder = serde_json::from_slice::<Envelope<Value>>(&bytes).ok();
                    let env = envelope_holder.as_ref();
                    outcome_for_observer = AttemptOutcome::Response {
                        http_status: status,
                        code: env.map(|e| e.code),
                        message: env.map(|e| e.message.as_str()),
                        request_id: env.map(|e| e.request_id.as_str()).filter(|s| !s.is_empty()),
                    };
                    step = self.decide(
                        status,
                        retry_after,
                        env,
                        &bytes,
                        is_read,
                        can_retry,
                        attempt,
                        credential,
                        &mut resigned,
                    );
                }
            }
            let (retry_in, resigning) = match &step {
                Step::Retry(d) => (Some(*d), false),
                Step::Resign(_) => (Some(Duration::ZERO), true),
                Step::Done(_) => (None, false),
            };
            tracing::debug!(
                call_id,
                attempt,
                method = %method,
                path_template = %operation.path_template,
                outcome = ?outcome_for_observer,
                latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
                retry_in_ms = retry_in.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                "kling attempt"
            );
            if let Some(obs) = &self.observer {
                obs.on_attempt(&AttemptRecord {
                    call_id,
                    attempt,
                    method: method.as_str(),
                    path,
                    operation: &operation,
                    credential,
                    outcome: outcome_for_observer,
                    started_at_ms,
                    latency,
                    retry_in,
                    resigning,
                });
            }
            match step {
                Step::Done(result) => {
                    return result.map(|mut r| {
                        r.attempts = attempt;
                        r.call_id = call_id;
                        r
                    })
                }
                Step::Retry(delay) => tokio::time::sleep(delay).await,
                Step::Resign(code) => {
                    if let Some(tokens) = &self.inner.tokens {
                        if code == codes::AUTH_NOT_YET_VALID {
                            tokens.widen_not_before(NOT_BEFORE_WIDENING_SECS);
                        } else {
                            tokens.invalidate();
                        }
                    }
                    rejection = Some(code);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        status: u16,
        retry_after: Option<Duration>,
        envelope: Option<&Envelope<Value>>,
        bytes: &[u8],
        is_read: bool,
        can_retry: bool,
        attempt: u32,
        credential: CredentialUse,
        resigned: &mut bool,
    ) -> Step {
        let policy = &self.inner.retry;
        let ok_status = (200..300).contains(&status);
        if let Some(env) = envelope {
            if ok_status && env.code == codes::SUCCESS {
                return Step::Done(Ok(Response {
                    data: env.data.clone(),
                    request_id: env.request_id.clone(),
                    http_status: status,
                    attempts: attempt,
                    call_id: 0,
                }));
            }
        } else if ok_status {
            let source = match serde_json::from_slice::<Envelope<Value>>(bytes) {
                Err(e) => e,
                Ok(_) => {
                    return Step::Done(Err(KlingError::MissingData {
                        http_status: status,
                        request_id: None,
                    }))
                }
            };
            return Step::Done(Err(KlingError::Decode {
                http_status: status,
                request_id: None,
                expected: "Kling envelope",
                source,
            }));
        }
        // A refusal (non-2xx status, or a non-zero code).
        let code = envelope.map(|e| e.code).filter(|c| *c != codes::SUCCESS);
        let error = KlingError::from_api(ApiError {
            http_status: status,
            code,
            message: envelope.map(|e| e.message.clone()).unwrap_or_default(),
            request_id: envelope
                .map(|e| e.request_id.clone())
                .filter(|s| !s.is_empty()),
        });
        if let (Some(code), Some(tokens)) = (code, &self.inner.tokens) {
            // A fresh token only differs from the rejected one if the clock moved since it was
            // signed (1004) or its `nbf` margin widens (1003); otherwise re-signing is futile.
            let futile = match credential {
                CredentialUse::Jwt { issued_at, .. } => {
                    code == codes::AUTH_EXPIRED && issued_at >= tokens.now_unix()
                }
                CredentialUse::ApiKey => true,
            };
            if codes::is_resign_retryable(code)
                && policy.resign_on_token_rejection
                && !futile
                && !*resigned
            {
                *resigned = true;
                return Step::Resign(code);
            }
        }
        let limited = matches!(
            error,
            KlingError::RateLimited(_) | KlingError::Concurrency(_)
        );
        let server = matches!(error, KlingError::Server(_));
        if can_retry && (limited || (server && is_read && policy.retry_reads_on_server_error)) {
            return Step::Retry(policy.delay(attempt + 1, retry_after));
        }
        Step::Done(Err(error))
    }

    fn credential(
        &self,
        call_id: u64,
        after_rejection: Option<i64>,
    ) -> Result<(SecretString, CredentialUse), KlingError> {
        match (&self.inner.credentials, &self.inner.tokens) {
            (Credentials::AccessKey { .. }, Some(tokens)) => {
                let had_token = tokens.issued_count() > 0;
                let issued = tokens.token()?;
                if issued.newly_issued {
                    let reason = match after_rejection {
                        Some(code) => TokenIssueReason::AfterRejection(code),
                        None if had_token => TokenIssueReason::Renewal,
                        None => TokenIssueReason::First,
                    };
                    if let Some(obs) = &self.observer {
                        obs.on_token_issued(&TokenIssued {
                            call_id,
                            issuer: tokens.access_key(),
                            issued_at: issued.issued_at,
                            not_before: issued.not_before,
                            expires_at: issued.expires_at,
                            reason,
                        });
                    }
                }
                let header = SecretString::new(format!("Bearer {}", issued.token.expose()));
                Ok((
                    header,
                    CredentialUse::Jwt {
                        issued_at: issued.issued_at,
                        not_before: issued.not_before,
                        expires_at: issued.expires_at,
                        newly_issued: issued.newly_issued,
                    },
                ))
            }
            (Credentials::ApiKey(key), _) => Ok((
                SecretString::new(format!("Bearer {}", key.expose())),
                CredentialUse::ApiKey,
            )),
            (Credentials::AccessKey { .. }, None) => Err(KlingError::Config {
                reason: "access-key credentials without a token cache".into(),
            }),
        }
    }
}

/// Sends a request and reads the whole answer: status, `Retry-After` seconds, body bytes.
async fn send_and_read(
    request: reqwest::RequestBuilder,
) -> Result<(u16, Option<Duration>, Vec<u8>), reqwest::Error> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = response.bytes().await?;
    Ok((status, retry_after, bytes.to_vec()))
}

fn create_path(family: Family) -> Result<&'static str, KlingError> {
    family
        .route()
        .filter(|r| r.method == "POST")
        .map(|r| r.path)
        .ok_or_else(|| KlingError::Config {
            reason: format!("{} has no create route", family.as_str()),
        })
}

fn query_path(family: Family) -> Result<&'static str, KlingError> {
    family
        .route()
        .filter(|r| r.is_async())
        .map(|r| r.path)
        .ok_or_else(|| KlingError::Config {
            reason: format!("{} has no task queries", family.as_str()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let delays: Vec<u64> = (2..7).map(|n| p.base_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 5, 5]);
        assert_eq!(
            p.delay(2, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            p.delay(2, Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
        let jittered = RetryPolicy { jitter: 1.0, ..p };
        for _ in 0..50 {
            assert!(jittered.delay(3, None) <= Duration::from_secs(2));
        }
        assert_eq!(p.base_delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn config_debug_hides_credentials() {
        let cfg = ClientConfig::new(
            "https://api.invalid",
            "ak-visible?",
            SecretString::new("sk-hidden"),
        );
        let text = format!("{cfg:?}");
        assert!(!text.contains("sk-hidden") && !text.contains("ak-visible?"));
        let client = KlingClient::new(cfg).unwrap();
        assert!(!format!("{client:?}").contains("sk-hidden"));
    }

    #[test]
    fn bad_configs_are_refused() {
        let cfg = ClientConfig::new("ftp://x", "ak", SecretString::new("sk"));
        assert!(matches!(
            KlingClient::new(cfg),
            Err(KlingError::Config { .. })
        ));
        let cfg = ClientConfig::new("http://x", "", SecretString::new("sk"));
        assert!(matches!(KlingClient::new(cfg), Err(KlingError::Token(_))));
        let cfg = ClientConfig::with_api_key("http://x", SecretString::new(""));
        assert!(matches!(
            KlingClient::new(cfg),
            Err(KlingError::Config { .. })
        ));
        assert!(create_path(Family::IdentifyFace).is_ok());
        assert!(query_path(Family::IdentifyFace).is_err());
        assert!(create_path(Family::PresetVoices).is_err());
    }
}
