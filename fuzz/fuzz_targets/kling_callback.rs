//! Fuzzes `kling_api::callback::parse_callback` (bodies Kling, or anyone, POSTs to the
//! gateway's callback URL) and `kling_api::webhook::verify` (their signature headers). A parsed
//! task must answer every audit question without panicking and must survive a round trip
//! through its own serialization (up to the last bit of floats, see below); a body signed with
//! the secret must verify.
#![no_main]

use kling_api::callback::parse_callback;
use kling_api::task::{AnyTask, TaskView};
use kling_api::webhook;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SECRET: &str = "whsec_ZnV6ei13ZWJob29rLXNlY3JldA==";
const NOW: i64 = 1_780_000_000;

fn to_value(t: &AnyTask) -> Value {
    match t {
        AnyTask::Legacy(task) => serde_json::to_value(task),
        AnyTask::NewStandard(task) => serde_json::to_value(task),
    }
    .expect("a parsed task converts to JSON")
}

fn same_up_to_float_rounding(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x != y => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                (x - y).abs() <= x.abs().max(y.abs()) * 4.0 * f64::EPSILON
            }
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(x, y)| same_up_to_float_rounding(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_up_to_float_rounding(v, w)))
        }
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(cb) = parse_callback(data) {
        let t = &cb.task;
        let _ = (t.task_id(), t.status(), t.status_message(), t.external_id());
        let _ = (t.updated_at_ms(), t.units_deducted(), t.cash_deducted());
        let _ = (
            t.outcome(),
            t.usable_urls(),
            t.result_anomalies(),
            t.outputs(),
        );
        let json = match t {
            AnyTask::Legacy(task) => serde_json::to_vec(task),
            AnyTask::NewStandard(task) => serde_json::to_vec(task),
        }
        .expect("a parsed task serializes");
        let again = parse_callback(&json).expect("a serialized task parses again");
        assert!(!again.enveloped);
        if again.task != *t {
            // serde_json's default float parsing is not correctly rounded, so a number that
            // only fits a float (a long integer among unknown fields, say) may come back one
            // unit in the last place off. Anything else must be identical.
            let a = to_value(&again.task);
            let b = to_value(t);
            assert!(
                same_up_to_float_rounding(&a, &b),
                "the task changed in a round trip: {a} vs {b}"
            );
        }
    }

    // Headers and body split at the first three 0xff bytes; the webhook id must be UTF-8.
    let mut parts = data.splitn(4, |b| *b == 0xff);
    let (Some(id), Some(ts), Some(sig), Some(body)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let (Ok(id), Ok(ts), Ok(sig)) = (
        std::str::from_utf8(id),
        std::str::from_utf8(ts),
        std::str::from_utf8(sig),
    ) else {
        return;
    };
    let _ = webhook::verify(SECRET, id, ts, sig, body, NOW, 300);
    let _ = webhook::verify(sig, id, ts, sig, body, NOW, 300);
    let good = webhook::sign(SECRET, id, NOW, body).expect("the secret is valid");
    webhook::verify(SECRET, id, &NOW.to_string(), &good, body, NOW, 300)
        .expect("a body signed with the secret must verify");
    let listed = format!("{sig} {good}");
    let _ = webhook::verify(SECRET, id, &NOW.to_string(), &listed, body, NOW, 300);
});
