//! Parsing callback bodies Kling POSTs to a `callback_url` (kling-api.md 10.2, 10.3).
//!
//! Legacy callbacks carry the bare legacy task object and new-standard callbacks the bare new
//! task object, both without an envelope. The shape is told apart by its keys. A body wrapped
//! in an envelope anyway is unwrapped and reported, since the docs say it should not happen.
//! A callback only reports a status: confirm the final state with a query before trusting it.

use serde_json::{Map, Value};

use crate::task::{AnyTask, NewTaskObject, TaskObject};

/// Why a callback body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The body is not JSON.
    #[error("callback body is not valid JSON")]
    Json(#[source] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("callback body is a JSON {found}, not an object")]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// Neither `task_id`/`task_status` nor `id`/`status` is present.
    #[error("callback body has neither legacy nor new-standard task keys (keys: {keys:?})")]
    UnknownShape {
        /// Up to 16 top-level keys, for diagnosis.
        keys: Vec<String>,
    },
    /// The shape was recognised but a field has the wrong type.
    #[error("callback body looks like a {shape} task but does not parse")]
    Shape {
        /// `legacy` or `new-standard`.
        shape: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// A parsed callback.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    /// The task it reports.
    pub task: AnyTask,
    /// True when the body came wrapped in a `{code, data}` envelope.
    pub enveloped: bool,
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses a callback body of either generation.
///
/// # Errors
/// [`CallbackError`] when the body is not JSON, not an object, of no known shape, or has
/// fields of the wrong type.
pub fn parse_callback(body: &[u8]) -> Result<Callback, CallbackError> {
    let value: Value = serde_json::from_slice(body).map_err(CallbackError::Json)?;
    let Value::Object(mut object) = value else {
        return Err(CallbackError::NotAnObject {
            found: json_type(&value),
        });
    };
    let mut enveloped = false;
    if object.contains_key("code") && matches!(object.get("data"), Some(Value::Object(_))) {
        if let Some(Value::Object(inner)) = object.remove("data") {
            object = inner;
            enveloped = true;
        }
    }
    let task = classify_object(object)?;
    Ok(Callback { task, enveloped })
}

fn classify_object(object: Map<String, Value>) -> Result<AnyTask, CallbackError> {
    let legacy = object.contains_key("task_id") || object.contains_key("task_status");
    let new = object.contains_key("id") || object.contains_key("status");
    if legacy {
        serde_json::from_value::<TaskObject>(Value::Object(object))
            .map(|t| AnyTask::Legacy(Box::new(t)))
            .map_err(|source| CallbackError::Shape {
                shape: "legacy",
                source,
            })
    } else if new {
        serde_json::from_value::<NewTaskObject>(Value::Object(object))
            .map(AnyTask::NewStandard)
            .map_err(|source| CallbackError::Shape {
                shape: "new-standard",
                source,
            })
    } else {
        Err(CallbackError::UnknownShape {
            keys: object.keys().take(16).cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{TaskOutcome, TaskView};

    #[test]
    fn legacy_bare_callback() {
        let body = br#"{"task_id":"1","task_status":"succeed","task_status_msg":"",
            "created_at":1722769557708,"updated_at":1722769557708,"final_unit_deduction":"2",
            "final_balance_deduction":{"quota":"0.1","list_price":"0.2"},
            "task_info":{"parent_video":{"id":"p","url":"u","duration":"5"},"external_task_id":"e"},
            "task_result":{"images":[{"index":0,"url":"https://i"}],"videos":[{"id":"v","url":"https://v","duration":"5"}]}}"#;
        let cb = parse_callback(body).unwrap();
        assert!(!cb.enveloped);
        assert!(matches!(cb.task, AnyTask::Legacy(_)));
        assert_eq!(cb.task.outcome(), TaskOutcome::Succeeded);
        assert_eq!(cb.task.external_id(), Some("e"));
        assert_eq!(cb.task.units_deducted(), Some(2.0));
        assert_eq!(cb.task.usable_urls().len(), 2);
    }

    #[test]
    fn new_standard_test_callback() {
        let body = br#"{"id":"913827032734642185","status":"submitted","outputs":[],"message":"","create_time":1785901861504,"update_time":1785901861504}"#;
        let cb = parse_callback(body).unwrap();
        assert!(matches!(cb.task, AnyTask::NewStandard(_)));
        assert_eq!(cb.task.task_id(), Some("913827032734642185"));
        assert_eq!(cb.task.updated_at_ms(), Some(1785901861504));
    }

    #[test]
    fn enveloped_callback_is_unwrapped_and_flagged() {
        let body = br#"{"code":0,"message":"SUCCEED","data":{"task_id":"1","task_status":"failed","task_status_msg":"no face"}}"#;
        let cb = parse_callback(body).unwrap();
        assert!(cb.enveloped);
        assert_eq!(
            cb.task.outcome(),
            TaskOutcome::Failed {
                reason: "no face".into()
            }
        );
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(matches!(
            parse_callback(b"not json"),
            Err(CallbackError::Json(_))
        ));
        assert!(matches!(
            parse_callback(b"[1]"),
            Err(CallbackError::NotAnObject { found: "array" })
        ));
        assert!(matches!(
            parse_callback(b"{}"),
            Err(CallbackError::UnknownShape { .. })
        ));
        assert!(matches!(
            parse_callback(br#"{"event":"video.completed"}"#),
            Err(CallbackError::UnknownShape { .. })
        ));
        assert!(matches!(
            parse_callback(br#"{"task_id":"1","task_status":5}"#),
            Err(CallbackError::Shape {
                shape: "legacy",
                ..
            })
        ));
    }
}
