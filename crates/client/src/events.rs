//! The record vocabulary of the audited client: event type names and the builders of their
//! `details` objects. docs/events.md ("Audited client events") documents every field.
//!
//! Builders take only values that are safe to store: ids, codes, counts, hashes and keyed
//! commitments. Kling's own free text (error messages, `task_status_msg`) is cut to
//! [`MAX_MESSAGE_CHARS`], because it can echo parts of a request.

use kling_api::client::{
    AttemptOutcome, AttemptRecord, StatusChange, TokenIssueReason, TokenIssued,
};
use kling_api::codes;
use kling_api::error::TransportErrorKind;
use kling_api::routes::OperationKind;
use kling_api::task::{OutputKind, ResultAnomaly, TaskObject, TaskOutcome, TaskView};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::summary::sha256_hex;

/// The intent to call Kling, durable before the request leaves.
pub const INTENT: &str = "kling.intent";
/// A create Kling accepted: the task id it made.
pub const ACCEPTED: &str = "kling.accepted";
/// An answer refusing a call (any HTTP status or business code other than success).
pub const REJECTED: &str = "kling.rejected";
/// No answer: connection or body failure.
pub const TRANSPORT_ERROR: &str = "kling.transport_error";
/// No answer in time, or a poll that reached its deadline.
pub const TIMEOUT: &str = "kling.timeout";
/// An answer that arrived but could not be used (undecodable body, missing `data`).
pub const PROTOCOL_ERROR: &str = "kling.protocol_error";
/// A change of task status seen by this client.
pub const STATUS: &str = "kling.status";
/// The final state of a task: success or failure, results, units.
pub const OUTCOME: &str = "kling.outcome";
/// A callback received for a task.
pub const CALLBACK: &str = "kling.callback";
/// A JWT signed for calls (one record per token, never the token).
pub const CREDENTIAL_USE: &str = "credential.use";

/// Every event type the audited client writes.
pub const ALL: [&str; 10] = [
    INTENT,
    ACCEPTED,
    REJECTED,
    TRANSPORT_ERROR,
    TIMEOUT,
    PROTOCOL_ERROR,
    STATUS,
    OUTCOME,
    CALLBACK,
    CREDENTIAL_USE,
];

/// Longest piece of Kling's free text kept in a record, in characters.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// Kling's free text, cut to [`MAX_MESSAGE_CHARS`], with its full length and a cut flag.
pub fn capped(text: &str) -> Value {
    let chars = text.chars().count();
    json!({
        "text": text.chars().take(MAX_MESSAGE_CHARS).collect::<String>(),
        "chars": chars,
        "truncated": chars > MAX_MESSAGE_CHARS,
    })
}

/// The operation label of an [`OperationKind`] as recorded in `op`.
pub fn op_label(kind: &OperationKind) -> &'static str {
    kind.as_str()
}

/// `credential.use`: a token was signed. Carries the key fingerprint and the token's times.
pub fn credential_use(corr: Uuid, key_fp: &str, event: &TokenIssued<'_>) -> Value {
    let (reason, after_code) = match event.reason {
        TokenIssueReason::First => ("first", None),
        TokenIssueReason::Renewal => ("renewal", None),
        TokenIssueReason::AfterRejection(code) => ("after_rejection", Some(code)),
    };
    json!({
        "corr": corr.to_string(),
        "key_fp": key_fp,
        "credential": "jwt",
        "iat": event.issued_at,
        "nbf": event.not_before,
        "exp": event.expires_at,
        "reason": reason,
        "after_code": after_code,
    })
}

/// Whether an attempt record deserves a record of its own, and which: refusals, transport
/// failures and timeouts do; a successful answer is recorded by the caller, which has the data.
pub fn attempt_event(corr: Uuid, record: &AttemptRecord<'_>) -> Option<(&'static str, Value)> {
    let op = op_label(&record.operation.kind);
    let is_create = record.operation.kind == OperationKind::Create;
    let common = |m: &mut Map<String, Value>| {
        m.insert("corr".into(), json!(corr.to_string()));
        m.insert("op".into(), json!(op));
        m.insert(
            "family".into(),
            json!(record.operation.family.map(|f| f.as_str())),
        );
        m.insert("method".into(), json!(record.method));
        m.insert(
            "path_template".into(),
            json!(record.operation.path_template),
        );
        m.insert("attempt".into(), json!(record.attempt));
        m.insert("final".into(), json!(record.retry_in.is_none()));
        m.insert(
            "retry_in_ms".into(),
            json!(record
                .retry_in
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        );
        m.insert(
            "latency_ms".into(),
            json!(u64::try_from(record.latency.as_millis()).unwrap_or(u64::MAX)),
        );
        m.insert("started_at_ms".into(), json!(record.started_at_ms));
    };
    match record.outcome {
        AttemptOutcome::Response {
            http_status,
            code,
            message,
            request_id,
        } => {
            let ok = (200..300).contains(&http_status) && code == Some(codes::SUCCESS);
            if ok {
                return None;
            }
            let mut m = Map::new();
            common(&mut m);
            m.insert("http_status".into(), json!(http_status));
            m.insert("code".into(), json!(code));
            m.insert("request_id".into(), json!(request_id));
            m.insert("message".into(), capped(message.unwrap_or_default()));
            m.insert("resigning".into(), json!(record.resigning));
            // A 5xx on a create does not prove that no task was made (11.1).
            let unknown = is_create && http_status >= 500;
            m.insert("task_may_exist".into(), json!(unknown));
            Some((REJECTED, Value::Object(m)))
        }
        AttemptOutcome::Transport { kind } => {
            let mut m = Map::new();
            common(&mut m);
            m.insert("kind".into(), json!(kind.as_str()));
            // The request may have reached Kling before the answer was lost.
            m.insert("task_may_exist".into(), json!(is_create));
            let event = if kind == TransportErrorKind::Timeout {
                TIMEOUT
            } else {
                TRANSPORT_ERROR
            };
            m.insert("phase".into(), json!("request"));
            Some((event, Value::Object(m)))
        }
    }
}

/// `kling.status`: a status change seen while polling (or by a single query).
pub fn status(corr: Uuid, change: &StatusChange, from: Option<&str>) -> Value {
    json!({
        "corr": corr.to_string(),
        "task_id": change.task_id,
        "from": from,
        "to": change.to.as_str(),
        "kling_updated_at_ms": change.updated_at_ms,
        "observed_at_ms": change.observed_at_ms,
        "polls": change.polls,
    })
}

fn kind_name(kind: OutputKind) -> &'static str {
    match kind {
        OutputKind::Video => "video",
        OutputKind::Image => "image",
        OutputKind::Audio => "audio",
        OutputKind::Other => "other",
    }
}

fn anomaly_name(a: &ResultAnomaly) -> String {
    match a {
        ResultAnomaly::NoOutputs => "no-outputs".to_owned(),
        ResultAnomaly::EmptyUrl { index } => format!("empty-url:{index}"),
        ResultAnomaly::OnlyWatermarkUrl { index } => format!("only-watermark-url:{index}"),
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}

/// The result part of an outcome: outputs with hashed URLs, anomalies, units. Used for
/// outcomes and for what a callback reports.
pub fn task_result(task: &dyn TaskView) -> Map<String, Value> {
    let outputs: Vec<Value> = task
        .outputs()
        .iter()
        .enumerate()
        .map(|(i, o)| {
            json!({
                "kind": kind_name(o.kind),
                "index": o.index.unwrap_or(i),
                "id": o.id,
                "duration": o.duration,
                "url_sha256": non_empty(o.url).map(|u| sha256_hex(u.as_bytes())),
                "watermark_url_sha256":
                    non_empty(o.watermark_url).map(|u| sha256_hex(u.as_bytes())),
            })
        })
        .collect();
    let anomalies: Vec<String> = task.result_anomalies().iter().map(anomaly_name).collect();
    let usable = task.usable_urls().len();
    let (result, reason) = match task.outcome() {
        TaskOutcome::Succeeded => ("success", None),
        TaskOutcome::Failed { reason } => ("failure", Some(reason)),
        TaskOutcome::Pending(_) => ("pending", None),
        TaskOutcome::Unknown { .. } => ("unknown", None),
    };
    let mut m = Map::new();
    m.insert("result".into(), json!(result));
    m.insert("task_id".into(), json!(task.task_id()));
    m.insert(
        "task_status".into(),
        json!(task.status().map(|s| s.as_str())),
    );
    m.insert(
        "task_status_msg".into(),
        capped(
            reason
                .as_deref()
                .or(task.status_message())
                .unwrap_or_default(),
        ),
    );
    m.insert("external_task_id".into(), json!(task.external_id()));
    m.insert("kling_updated_at_ms".into(), json!(task.updated_at_ms()));
    m.insert("output_count".into(), json!(outputs.len()));
    m.insert("usable_url_count".into(), json!(usable));
    m.insert("outputs".into(), Value::Array(outputs));
    // A success nobody can fetch is the anomaly auditors look for (7.2).
    m.insert(
        "anomaly".into(),
        json!(result == "success" && (usable == 0 || !anomalies.is_empty())),
    );
    m.insert("anomalies".into(), json!(anomalies));
    m.insert("units_deducted".into(), json!(task.units_deducted()));
    m.insert("cash_deducted".into(), json!(task.cash_deducted()));
    m
}

/// The charge fields of a legacy task exactly as received (strings), for reconciliation with
/// the billing export (12.3).
pub fn legacy_charges(task: &TaskObject) -> Value {
    json!({
        "final_unit_deduction": task.final_unit_deduction.as_ref().map(|n| n.text.clone()),
        "final_balance_deduction": task.final_balance_deduction.as_ref().map(|b| json!({
            "quota": b.quota.as_ref().map(|n| n.text.clone()),
            "list_price": b.list_price.as_ref().map(|n| n.text.clone()),
        })),
    })
}

/// `kling.outcome` for a legacy task.
pub fn outcome(corr: Uuid, family: &str, task: &TaskObject, polls: Option<u32>) -> Value {
    let mut m = task_result(task);
    m.insert("corr".into(), json!(corr.to_string()));
    m.insert("family".into(), json!(family));
    m.insert("charges".into(), legacy_charges(task));
    m.insert(
        "parent_video_id".into(),
        json!(task
            .task_info
            .as_ref()
            .and_then(|i| i.parent_video.as_ref())
            .and_then(|p| p.id.clone())),
    );
    m.insert("polls".into(), json!(polls));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(v: Value) -> TaskObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn success_with_only_watermark_is_an_anomaly() {
        let t = task(
            json!({"task_id": "1", "task_status": "succeed", "task_status_msg": "",
            "task_result": {"videos": [{"id": "v", "watermark_url": "https://cdn.test/w.mp4",
            "duration": "5.1"}]}, "final_unit_deduction": "2"}),
        );
        let o = outcome(Uuid::nil(), "text-to-video", &t, Some(3));
        assert_eq!(o["result"], "success");
        assert_eq!(o["anomaly"], true);
        assert_eq!(o["anomalies"], json!(["only-watermark-url:0"]));
        assert_eq!(o["units_deducted"], 2.0);
        assert_eq!(o["charges"]["final_unit_deduction"], "2");
        assert_eq!(
            o["outputs"][0]["watermark_url_sha256"],
            sha256_hex(b"https://cdn.test/w.mp4")
        );
        assert!(!o.to_string().contains("cdn.test"));
    }

    #[test]
    fn clean_success_and_failure() {
        let t = task(json!({"task_id": "1", "task_status": "succeed",
            "task_result": {"videos": [{"id": "v", "url": "https://cdn.test/a.mp4"}]}}));
        let o = outcome(Uuid::nil(), "text-to-video", &t, None);
        assert_eq!(
            (o["anomaly"].as_bool(), o["usable_url_count"].as_u64()),
            (Some(false), Some(1))
        );
        let t = task(json!({"task_id": "1", "task_status": "failed",
            "task_status_msg": "x".repeat(500)}));
        let o = outcome(Uuid::nil(), "text-to-video", &t, None);
        assert_eq!(o["result"], "failure");
        assert_eq!(o["anomaly"], false);
        assert_eq!(o["task_status_msg"]["chars"], 500);
        assert_eq!(o["task_status_msg"]["truncated"], true);
        assert_eq!(
            o["task_status_msg"]["text"].as_str().unwrap().len(),
            MAX_MESSAGE_CHARS
        );
    }

    #[test]
    fn capping_counts_characters_not_bytes() {
        let c = capped(&"é".repeat(MAX_MESSAGE_CHARS + 1));
        assert_eq!(c["chars"], MAX_MESSAGE_CHARS + 1);
        assert_eq!(
            c["text"].as_str().unwrap().chars().count(),
            MAX_MESSAGE_CHARS
        );
        assert_eq!(capped("ok")["truncated"], false);
    }
}
