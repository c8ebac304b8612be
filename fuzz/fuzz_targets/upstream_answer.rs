//! Fuzzes the gateway's reading of Kling API answers (`inspect::parse_answer`), bytes that come
//! from the network. Reading only the business fields must give the same fields as reading the
//! whole answer, and every question the gateway asks of a parsed answer must be answered
//! without panicking.
#![no_main]

use kling_audit_gateway::inspect::{
    data_tasks, parse_answer, result_fields, task_view, units_deducted, Answer,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse_answer(data, 64, true);
    let head = parse_answer(data, 64, false);
    let same = Answer {
        body: None,
        ..whole.clone()
    };
    // The one documented difference: a number beyond a double's range where nothing reads it
    // is JSON to the check of the business fields, but no value can be built of the body.
    if head != same {
        assert!(head.json && !whole.json, "{head:?} vs {whole:?}");
        let text = std::str::from_utf8(data).expect("the business fields were read from UTF-8");
        assert!(
            text.contains(['e', 'E']) || text.len() > 308,
            "only a huge number explains this: {text}"
        );
    }
    assert_eq!(whole.json, whole.body.is_some());
    if let Some(body) = &whole.body {
        let _ = (data_tasks(body), result_fields(body, 64), units_deducted(body));
        if let Some(inner) = body.get("data") {
            let _ = (task_view(inner), data_tasks(inner));
        }
    }
});
