//! Answers in Kling's legacy envelope: `{code, message: "SUCCEED", request_id, data}` on
//! success, `{code, message, request_id}` without `data` on failure, with the HTTP status that
//! Kling pairs with each business code (reference sections 7.1 and 11.1).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kling_api::codes;
use kling_api::envelope::{error_body, Envelope};
use serde_json::Value;

use crate::validate::Invalid;

/// A refused call: business code and message; the HTTP status follows from the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: i64,
    pub message: String,
}

impl ApiError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An error with the code's documented default message.
    pub fn of(code: i64) -> Self {
        Self::new(code, codes::default_message(code))
    }

    /// 400/1201 with a message naming the field.
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(codes::PARAMETER_ERROR, message)
    }

    /// 429/1303 with Kling's verbatim message.
    pub fn concurrency() -> Self {
        Self::new(codes::CONCURRENCY, codes::CONCURRENCY_MESSAGE)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(codes::http_status_for(self.code))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        Self::invalid_param(invalid.message)
    }
}

/// A success answer around `data`.
pub fn success(request_id: &str, data: Value) -> Response {
    (StatusCode::OK, Json(Envelope::success(request_id, data))).into_response()
}

/// A failure answer; 429s get `Retry-After` only when fault injection asks for it.
pub fn failure(request_id: &str, err: &ApiError, retry_after_secs: Option<u32>) -> Response {
    let status = err.status();
    let mut response =
        (status, Json(error_body(err.code, &err.message, request_id))).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        if let Some(secs) = retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
    response
}

/// An HTTP 200 carrying a non-zero code and no `data` (a fault Kling's clients disagree on).
pub fn ok_with_error_code(request_id: &str, code: i64) -> Response {
    (
        StatusCode::OK,
        Json(error_body(code, codes::default_message(code), request_id)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_code_table() {
        assert_eq!(
            ApiError::of(codes::AUTH_EXPIRED).status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ApiError::concurrency().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ApiError::invalid_param("x").status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError::of(codes::RESOURCE_NOT_FOUND).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::of(codes::SERVER_TIMEOUT).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[test]
    fn retry_after_only_on_429_and_only_when_asked() {
        let r = failure("rid", &ApiError::concurrency(), Some(2));
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "2");
        let r = failure("rid", &ApiError::concurrency(), None);
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        let r = failure("rid", &ApiError::invalid_param("x"), Some(2));
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
