//! Fuzzes the checkpoint and signed-note parsers: the ledger's `sign::open_checkpoint` (with and
//! without a pinned verifier key) and kling-audit-note's `Note::parse`, `open`,
//! `Checkpoint::parse`, `AddCheckpointRequest::parse` and key decoders.
//!
//! The first byte picks a mode. Mode 0 feeds the bytes as they are. Mode 1 signs the bytes as a
//! note text with a fixed key first, so that the fuzzer reaches the code behind a valid
//! signature, and checks that the ledger's checkpoint reader accepts exactly what the note
//! crate accepts as a checkpoint signed by the pinned key. Mode 2 feeds key encodings.
#![no_main]

mod fixture;

use std::sync::OnceLock;

use kling_audit_ledger::sign::open_checkpoint;
use kling_audit_note::{
    open, AddCheckpointRequest, Checkpoint, CosignatureVerifier, CosignerKey, Note, Signer,
    Verifier,
};
use libfuzzer_sys::fuzz_target;

use fixture::ORIGIN;

struct Keys {
    signer: Signer,
    verifier: Verifier,
    encoded: String,
    cosigner: CosignatureVerifier,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let signer = fixture::signer();
        let verifier = signer.verifier();
        let encoded = verifier.encode();
        let cosigner = CosignerKey::from_seed("fuzz.example/witness", &[0x43; 32])
            .expect("valid name")
            .verifier();
        Keys {
            signer,
            verifier,
            encoded,
            cosigner,
        }
    })
}

fn raw(data: &[u8]) {
    let k = keys();
    if let Ok(text) = std::str::from_utf8(data) {
        let unchecked = open_checkpoint(text, None);
        if let Ok(body) = open_checkpoint(text, Some(&k.encoded)) {
            let unchecked = unchecked.expect("accepted with a key but not without");
            assert_eq!(body, unchecked);
            assert_eq!(body.origin, ORIGIN);
        }
        if let Ok(cp) = Checkpoint::parse(text) {
            assert_eq!(cp.to_text(), text, "checkpoint text does not round-trip");
        }
    }
    if let Ok(note) = Note::parse(data) {
        assert_eq!(note.to_bytes(), data, "note does not round-trip");
        let _ = Checkpoint::from_note(&note);
        for sig in note.signatures() {
            let _ = k.cosigner.verify(note.text(), sig);
            assert_eq!(
                kling_audit_note::NoteSignature::from_line(sig.to_line().trim_end_matches('\n'))
                    .as_ref(),
                Ok(sig)
            );
        }
    }
    if let Ok(verified) = open(data, std::slice::from_ref(&k.verifier)) {
        assert_eq!(verified.note().to_bytes(), data);
    }
    if let Ok(req) = AddCheckpointRequest::parse(data) {
        assert_eq!(req.to_bytes(), data, "witness body does not round-trip");
    }
}

fn signed(data: &[u8]) {
    let k = keys();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut note) = Note::new(text) else {
        return;
    };
    if note.sign(&k.signer).is_err() {
        return;
    }
    let bytes = note.to_bytes();
    let Ok(note_text) = String::from_utf8(bytes.clone()) else {
        return;
    };
    let by_note = open(&bytes, std::slice::from_ref(&k.verifier))
        .ok()
        .and_then(|v| Checkpoint::parse(v.text()).ok())
        .filter(|cp| cp.origin == ORIGIN);
    let by_ledger = open_checkpoint(&note_text, Some(&k.encoded)).ok();
    match (&by_note, &by_ledger) {
        (Some(cp), Some(body)) => {
            assert_eq!(
                (&cp.origin, cp.size, cp.root),
                (&body.origin, body.size, body.root)
            );
        }
        (None, None) => {}
        _ => panic!(
            "the ledger and the note crate disagree on a signed checkpoint: note crate {:?}, \
             ledger {:?}, text {:?}",
            by_note, by_ledger, text
        ),
    }
}

fn key_encodings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = Verifier::from_encoded(text) {
        assert_eq!(Verifier::from_encoded(&v.encode()).as_ref(), Ok(&v));
    }
    if let Ok(v) = CosignatureVerifier::from_encoded(text) {
        assert_eq!(
            CosignatureVerifier::from_encoded(&v.encode()).as_ref(),
            Ok(&v)
        );
    }
    if let Ok(s) = Signer::from_encoded(text) {
        let again = Signer::from_encoded(&s.encode()).expect("own encoding must decode");
        assert_eq!(again.verifier(), s.verifier());
    }
    let _ = kling_audit_ledger::sign::Signer::from_encoded(text);
    // The ledger reads the pinned key only when a checkpoint is opened with it.
    let note = format!(
        "{ORIGIN}\n1\n{}=\n\n\u{2014} {ORIGIN} AAAA\n",
        "A".repeat(43)
    );
    let _ = open_checkpoint(&note, Some(text));
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => raw(rest),
        1 => signed(rest),
        _ => key_encodings(rest),
    }
});
