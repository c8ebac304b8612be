//! The `{code, message, request_id, data}` wrapper around every legacy (and new-standard)
//! JSON answer (kling-api.md 7.1). Errors carry no `data`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A Kling response envelope. Missing `message`/`request_id` read as empty and a missing or
/// `null` `data` as `None`, so an error body still parses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Business code; 0 is success.
    pub code: i64,
    /// `"SUCCEED"` on success, else a reason.
    #[serde(default)]
    pub message: String,
    /// Kling's request id (a UUID in 2026).
    #[serde(default)]
    pub request_id: String,
    /// The payload: a task object, an array of them, or account data.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

fn none<T>() -> Option<T> {
    None
}

impl<T> Envelope<T> {
    /// A success envelope around `data`.
    pub fn success(request_id: impl Into<String>, data: T) -> Self {
        Self {
            code: crate::codes::SUCCESS,
            message: crate::codes::default_message(crate::codes::SUCCESS).to_owned(),
            request_id: request_id.into(),
            data: Some(data),
        }
    }

    /// Whether the business code reports success.
    pub fn is_success(&self) -> bool {
        self.code == crate::codes::SUCCESS
    }
}

/// An error body `{code, message, request_id}` without `data`, as Kling sends it.
pub fn error_body(code: i64, message: &str, request_id: &str) -> Value {
    serde_json::json!({ "code": code, "message": message, "request_id": request_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_no_data_and_parses_back() {
        let body = error_body(1303, crate::codes::CONCURRENCY_MESSAGE, "9984d27b");
        assert!(body.get("data").is_none());
        let env: Envelope<Value> = serde_json::from_value(body).unwrap();
        assert_eq!(env.code, 1303);
        assert_eq!(env.message, "parallel task over resource pack limit");
        assert_eq!(env.request_id, "9984d27b");
        assert!(env.data.is_none() && !env.is_success());
    }

    #[test]
    fn null_data_and_missing_fields() {
        let env: Envelope<Value> = serde_json::from_str(r#"{"code":0,"data":null}"#).unwrap();
        assert!(env.data.is_none() && env.is_success() && env.message.is_empty());
        assert!(serde_json::from_str::<Envelope<Value>>(r#"{"message":"x"}"#).is_err());
    }

    #[test]
    fn success_round_trip() {
        let env = Envelope::success("r1", vec![1, 2]);
        let text = serde_json::to_string(&env).unwrap();
        assert_eq!(
            text,
            r#"{"code":0,"message":"SUCCEED","request_id":"r1","data":[1,2]}"#
        );
        assert_eq!(
            serde_json::from_str::<Envelope<Vec<i32>>>(&text).unwrap(),
            env
        );
    }
}
