//! Errors of the HTTP client, classified from the HTTP status **and** the business code,
//! because 429 alone is ambiguous (kling-api.md 11.1) and an HTTP 200 may carry a non-zero
//! code (11.4). Every API variant keeps status, code, message and request id for the audit.

use std::fmt;
use std::time::Duration;

use crate::auth::AuthError;
use crate::codes;
use crate::task::TaskStatus;

/// What Kling said when it refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the answer.
    pub http_status: u16,
    /// Business code, when the body had one.
    pub code: Option<i64>,
    /// Kling's message (may be empty); never contains our credentials.
    pub message: String,
    /// Kling's request id, when the body had one.
    pub request_id: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.http_status)?;
        if let Some(code) = self.code {
            write!(f, ", code {code}")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (request {id})")?;
        }
        Ok(())
    }
}

/// How a request failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportErrorKind {
    /// The connection could not be made.
    Connect,
    /// The request timed out.
    Timeout,
    /// The answer's body could not be read.
    Body,
    /// Anything else reqwest reports.
    Other,
}

impl TransportErrorKind {
    /// A stable name for records.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Body => "body",
            Self::Other => "other",
        }
    }

    pub(crate) fn of(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            Self::Timeout
        } else if error.is_connect() {
            Self::Connect
        } else if error.is_body() || error.is_decode() {
            Self::Body
        } else {
            Self::Other
        }
    }
}

/// Every way a Kling call can fail.
#[derive(Debug, thiserror::Error)]
pub enum KlingError {
    /// 1000-1004: credentials refused.
    #[error("authentication refused: {0}")]
    Auth(ApiError),
    /// 1200, 1201, 1202: the request itself is wrong; do not retry.
    #[error("invalid request: {0}")]
    Parameter(ApiError),
    /// 1300, 1301: platform or content policy; change the input.
    #[error("policy refused the request: {0}")]
    ContentPolicy(ApiError),
    /// 1302: too many requests.
    #[error("rate limited: {0}")]
    RateLimited(ApiError),
    /// 1303: concurrency over the resource pack limit.
    #[error("concurrency limit reached: {0}")]
    Concurrency(ApiError),
    /// 1100-1102: account abnormal, in arrears, or out of units.
    #[error("account problem: {0}")]
    Account(ApiError),
    /// 1103, 1304: no access to this API or model, or IP not allowed.
    #[error("access denied: {0}")]
    Permission(ApiError),
    /// 1203 (or HTTP 404): no such task or model.
    #[error("not found: {0}")]
    NotFound(ApiError),
    /// 5000-5002 or HTTP 5xx.
    #[error("server error: {0}")]
    Server(ApiError),
    /// A refusal whose code and status fit none of the above.
    #[error("unexpected answer: {0}")]
    Unexpected(ApiError),
    /// The request did not complete at the transport level.
    #[error("{method} {path}: transport failure ({})", kind.as_str())]
    Transport {
        /// HTTP method.
        method: String,
        /// Path without query.
        path: String,
        /// What failed.
        kind: TransportErrorKind,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The request timed out (after any retries the policy allows).
    #[error("{method} {path}: timed out after {timeout:?}")]
    Timeout {
        /// HTTP method.
        method: String,
        /// Path without query.
        path: String,
        /// The configured per-request timeout.
        timeout: Duration,
    },
    /// A successful answer whose body or `data` did not parse.
    #[error(
        "could not decode the answer (HTTP {http_status}, request {request_id:?}) as {expected}"
    )]
    Decode {
        /// HTTP status.
        http_status: u16,
        /// Kling's request id, if the envelope parsed.
        request_id: Option<String>,
        /// What we tried to decode.
        expected: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A success envelope without the `data` the call needs.
    #[error("answer has no data (HTTP {http_status}, request {request_id:?})")]
    MissingData {
        /// HTTP status.
        http_status: u16,
        /// Kling's request id.
        request_id: Option<String>,
    },
    /// A poll reached its deadline before the task finished.
    #[error("task {task_id} not finished after {waited:?} (last status {last_status:?})")]
    PollTimeout {
        /// The task polled.
        task_id: String,
        /// The last status seen, if any.
        last_status: Option<TaskStatus>,
        /// Time spent.
        waited: Duration,
    },
    /// Signing a token failed.
    #[error("could not sign a token")]
    Token(#[from] AuthError),
    /// The client configuration or a call's arguments are unusable.
    #[error("invalid configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A request body could not be serialized.
    #[error("could not serialize the request body")]
    Encode(#[source] serde_json::Error),
}

impl KlingError {
    /// Classifies a refusal by business code first, HTTP status second.
    pub fn from_api(error: ApiError) -> Self {
        match error.code {
            Some(codes::AUTH_FAILED..=codes::AUTH_EXPIRED) => Self::Auth(error),
            Some(codes::ACCOUNT_ABNORMAL..=codes::RESOURCE_EXHAUSTED) => Self::Account(error),
            Some(codes::NO_PERMISSION | codes::IP_POLICY) => Self::Permission(error),
            Some(codes::PARAMETER_INVALID | codes::PARAMETER_ERROR | codes::METHOD_INVALID) => {
                Self::Parameter(error)
            }
            Some(codes::RESOURCE_NOT_FOUND) => Self::NotFound(error),
            Some(codes::PLATFORM_POLICY | codes::CONTENT_POLICY) => Self::ContentPolicy(error),
            Some(codes::RATE_LIMITED) => Self::RateLimited(error),
            Some(codes::CONCURRENCY) => Self::Concurrency(error),
            Some(codes::SERVER_ERROR..=codes::SERVER_TIMEOUT) => Self::Server(error),
            _ => match error.http_status {
                401 => Self::Auth(error),
                403 => Self::Permission(error),
                404 => Self::NotFound(error),
                // A 429 without a known code is most likely a plain rate limit.
                429 => Self::RateLimited(error),
                400 | 422 => Self::Parameter(error),
                500..=599 => Self::Server(error),
                _ => Self::Unexpected(error),
            },
        }
    }

    /// The API refusal inside, for the variants that have one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Auth(e)
            | Self::Parameter(e)
            | Self::ContentPolicy(e)
            | Self::RateLimited(e)
            | Self::Concurrency(e)
            | Self::Account(e)
            | Self::Permission(e)
            | Self::NotFound(e)
            | Self::Server(e)
            | Self::Unexpected(e) => Some(e),
            _ => None,
        }
    }

    /// HTTP status, when an answer arrived.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Decode { http_status, .. } | Self::MissingData { http_status, .. } => {
                Some(*http_status)
            }
            other => other.api().map(|e| e.http_status),
        }
    }

    /// Business code, when the answer had one.
    pub fn code(&self) -> Option<i64> {
        self.api().and_then(|e| e.code)
    }

    /// Kling's request id, when the answer had one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Decode { request_id, .. } | Self::MissingData { request_id, .. } => {
                request_id.as_deref()
            }
            other => other.api().and_then(|e| e.request_id.as_deref()),
        }
    }

    /// Whether the call may have reached Kling and created something even though it failed:
    /// transport failures, timeouts and 5xx on creates (11.1). Look the task up by
    /// `external_task_id` before resending.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Self::Transport { .. } | Self::Timeout { .. } | Self::Server(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(http_status: u16, code: Option<i64>) -> ApiError {
        ApiError {
            http_status,
            code,
            message: "m".into(),
            request_id: Some("r".into()),
        }
    }

    #[test]
    fn classification_prefers_code_over_status() {
        assert!(matches!(
            KlingError::from_api(api(429, Some(1303))),
            KlingError::Concurrency(_)
        ));
        assert!(matches!(
            KlingError::from_api(api(429, Some(1102))),
            KlingError::Account(_)
        ));
        assert!(matches!(
            KlingError::from_api(api(429, Some(1304))),
            KlingError::Permission(_)
        ));
        assert!(matches!(
            KlingError::from_api(api(200, Some(1301))),
            KlingError::ContentPolicy(_)
        ));
        assert!(matches!(
            KlingError::from_api(api(401, Some(1004))),
            KlingError::Auth(_)
        ));
        assert!(matches!(
            KlingError::from_api(api(404, Some(1203))),
            KlingError::NotFound(_)
        ));
        assert!(matches!(
            KlingError::from_api(api(503, Some(5001))),
            KlingError::Server(_)
        ));
        assert!(matches!(
            KlingError::from_api(api(502, None)),
            KlingError::Server(_)
        ));
        assert!(matches!(
            KlingError::from_api(api(429, None)),
            KlingError::RateLimited(_)
        ));
        assert!(matches!(
            KlingError::from_api(api(418, Some(7777))),
            KlingError::Unexpected(_)
        ));
    }

    #[test]
    fn accessors_keep_every_field() {
        let e = KlingError::from_api(api(400, Some(1301)));
        assert_eq!(
            (e.http_status(), e.code(), e.request_id()),
            (Some(400), Some(1301), Some("r"))
        );
        assert!(!e.outcome_unknown());
        assert!(KlingError::from_api(api(500, Some(5000))).outcome_unknown());
        let text = e.to_string();
        assert!(text.contains("1301") && text.contains("400") && text.contains("request r"));
    }
}
