//! Fuzzes `kling_audit_ledger::Details::parse`, which takes callers' JSON objects. An accepted
//! object must minify idempotently, mean the same JSON as the input, and survive a trip through
//! a record line byte for byte. Also `unfaithful_json`, the gateway's check of request bodies:
//! it must agree with `Details::parse` on repeated keys.
#![no_main]

use kling_audit_ledger::record::{encode, mac_state, parse_line, Stamp, GENESIS_PREV};
use kling_audit_ledger::{unfaithful_json, Details, Entry, EntryError, UnfaithfulJson};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body_verdict = unfaithful_json(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let details = match Details::parse(text) {
        Ok(details) => details,
        Err(EntryError::DuplicateKey { key }) => {
            assert_eq!(body_verdict, Some(UnfaithfulJson::RepeatedKey(key)));
            return;
        }
        Err(_) => return,
    };
    assert_eq!(body_verdict, None, "accepted details are faithful JSON");
    let again = Details::parse(details.as_str()).expect("minified details must parse again");
    assert_eq!(again.as_str(), details.as_str());
    assert!(details.as_str().starts_with('{'));
    assert!(!details.as_str().contains('\n'));
    if let (Ok(a), Ok(b)) = (
        serde_json::from_str::<serde_json::Value>(text),
        serde_json::from_str::<serde_json::Value>(details.as_str()),
    ) {
        assert_eq!(a, b, "minifying changed the meaning");
    }

    let entry = Entry::new("fuzz.details", "fuzzer", details).expect("valid type and actor");
    let id = uuid::Uuid::nil();
    let stamp = Stamp {
        seq: 0,
        ts: "2026-01-01T00:00:00.000000Z",
        id: &id,
        prev: &GENESIS_PREV,
        epoch: 0,
        mac: &mac_state(&[1; 32]),
    };
    let mut out = Vec::new();
    if encode(&mut out, &stamp, &entry).is_err() {
        return;
    }
    let v = parse_line(&out[..out.len() - 1]).expect("a written record must parse");
    assert!(v.hash_ok());
    assert_eq!(v.details.get(), entry.details.as_str());
});
