//! Fuzzes `kling_audit_ledger::record::parse_line`, which the verifier runs on every line of
//! every segment. Besides never panicking, an accepted line must obey the documented hash rule
//! (recomputed here without the parser), the writer's encoder must reproduce the parsed
//! fields exactly, and the verifier's positional reader must accept no line `parse_line`
//! refuses.
#![no_main]

use kling_audit_ledger::record::{
    encode, fast_path_agrees, mac_state, parse_line, valid_ts, Stamp, MAX_RECORD_BYTES,
};
use kling_audit_ledger::{Details, Entry};
use kling_audit_merkle::leaf_hash;
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [7; 32];

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    // The verifier reads the writer's form by position and must accept nothing more.
    assert!(fast_path_agrees(data), "the positional reader disagrees with parse_line");
    let Ok(v) = parse_line(data) else { return };
    assert!(data.len() < MAX_RECORD_BYTES);

    // The hash rule of docs/format.md, from the bytes alone.
    let body_end = rfind(data, b",\"hash\":\"").expect("accepted line without a hash field");
    let body = &data[..body_end];
    assert_eq!(v.leaf, leaf_hash(body));
    let tail = format!(",\"hash\":\"{}\"}}", hex::encode(v.hash));
    assert_eq!(&data[body_end..], tail.as_bytes());
    assert_eq!(v.hash_ok(), v.hash == leaf_hash(body));
    let mac_end = rfind(body, b",\"mac\":\"").expect("accepted line without a mac field");
    assert_eq!(v.mac_input, &body[..mac_end]);
    let mac_field = format!(",\"mac\":\"{}\"", hex::encode(v.mac));
    assert_eq!(&body[mac_end..], mac_field.as_bytes());
    assert!(valid_ts(v.ts));
    let _ = v.mac_ok(&KEY);

    // The writer's encoder, given the parsed fields, writes a line that parses back to them.
    let (Ok(kind), Ok(actor)) = (
        serde_json::from_str::<String>(v.kind.get()),
        serde_json::from_str::<String>(v.actor.get()),
    ) else {
        return;
    };
    assert_eq!(v.kind_str(), kind);
    assert_eq!(v.actor_str(), actor);
    let Ok(details) = Details::parse(v.details.get()) else {
        return;
    };
    let Ok(entry) = Entry::new(kind, actor, details) else {
        return;
    };
    let id = uuid::Uuid::try_parse(v.id).expect("accepted line with a bad id");
    let stamp = Stamp {
        seq: v.seq,
        ts: v.ts,
        id: &id,
        prev: &v.prev,
        epoch: v.epoch,
        mac: &mac_state(&KEY),
    };
    let mut out = Vec::new();
    let Ok(leaf) = encode(&mut out, &stamp, &entry) else {
        return;
    };
    assert_eq!(out.last(), Some(&b'\n'));
    let w = parse_line(&out[..out.len() - 1]).expect("the writer's own line must parse");
    assert!(w.hash_ok());
    assert!(w.mac_ok(&KEY));
    assert_eq!(w.leaf, leaf);
    assert_eq!(
        (w.seq, w.ts, w.prev, w.epoch),
        (v.seq, v.ts, v.prev, v.epoch)
    );
    assert_eq!(w.kind_str(), entry.kind);
    assert_eq!(w.actor_str(), entry.actor);
    assert_eq!(w.details.get(), entry.details.as_str());
});
