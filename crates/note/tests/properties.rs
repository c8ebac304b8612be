//! Property tests: every format round-trips byte for byte, and every parser is total.

use kling_audit_note::{
    open, AddCheckpointRequest, Checkpoint, CosignatureVerifier, CosignerKey, Note, NoteSignature,
    Signer, Verifier,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(512)
}

/// Note text: lines of any characters but controls, some of them empty, newline-terminated.
fn note_text() -> impl Strategy<Value = String> {
    prop::collection::vec("[^\\x00-\\x1f\\x7f]{0,16}", 1..6).prop_map(|lines| {
        let mut s = lines.join("\n");
        s.push('\n');
        s
    })
}

fn key_name() -> impl Strategy<Value = String> {
    "[^\\s+\\x00-\\x1f\\x7f]{1,12}"
}

fn signature() -> impl Strategy<Value = NoteSignature> {
    (
        key_name(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 1..80),
    )
        .prop_map(|(name, id, sig)| {
            NoteSignature::new(name, id, sig).expect("generated name is valid")
        })
}

fn note() -> impl Strategy<Value = Note> {
    (note_text(), prop::collection::vec(signature(), 1..20)).prop_map(|(text, sigs)| {
        let mut n = Note::new(text).expect("generated text is valid");
        for s in sigs {
            n.add_signature(s).expect("fewer than the cap");
        }
        n
    })
}

fn checkpoint() -> impl Strategy<Value = Checkpoint> {
    (
        "[^\\x00-\\x1f\\x7f]{1,30}",
        any::<u64>(),
        any::<[u8; 32]>(),
        prop::collection::vec("[^\\x00-\\x1f\\x7f]{1,20}", 0..3),
    )
        .prop_map(|(origin, size, root, extensions)| Checkpoint {
            origin,
            size,
            root,
            extensions,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn notes_round_trip_byte_for_byte(n in note()) {
        let bytes = n.to_bytes();
        let parsed = Note::parse(&bytes).expect("formatted note parses");
        prop_assert_eq!(&parsed, &n);
        prop_assert_eq!(parsed.to_bytes(), bytes);
    }

    #[test]
    fn checkpoints_round_trip(cp in checkpoint()) {
        prop_assert_eq!(cp.validate(), Ok(()));
        let text = cp.to_text();
        let parsed = Checkpoint::parse(&text).expect("formatted checkpoint parses");
        prop_assert_eq!(parsed.to_text(), text);
        prop_assert_eq!(parsed, cp);
    }

    #[test]
    fn witness_bodies_round_trip(
        old_size in any::<u64>(),
        proof in prop::collection::vec(any::<[u8; 32]>(), 0..=63),
        checkpoint in prop::collection::vec(any::<u8>(), 1..200),
    ) {
        let req = AddCheckpointRequest { old_size, proof, checkpoint };
        let bytes = req.to_bytes();
        let parsed = AddCheckpointRequest::parse(&bytes).expect("formatted body parses");
        prop_assert_eq!(parsed.to_bytes(), bytes);
        prop_assert_eq!(parsed, req);
    }

    #[test]
    fn cosignatures_verify_for_any_checkpoint_and_time(
        cp in checkpoint(),
        seed in any::<[u8; 32]>(),
        ts in 0u64..=kling_audit_note::MAX_TIMESTAMP,
    ) {
        let key = CosignerKey::from_seed("witness.example", &seed).expect("valid name");
        let sig = key.sign(&cp.to_text(), ts).expect("valid checkpoint and time");
        prop_assert_eq!(key.verifier().verify(&cp.to_text(), &sig), Ok(ts));
        let line = sig.to_line();
        let reparsed = Note::parse(format!("{}\n{line}", cp.to_text()).as_bytes())
            .expect("cosigned note parses");
        prop_assert_eq!(&reparsed.signatures()[0], &sig);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Note::parse(&bytes);
        let _ = AddCheckpointRequest::parse(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = Checkpoint::parse(&text);
        let _ = Verifier::from_encoded(&text);
        let _ = Signer::from_encoded(&text);
        let _ = CosignatureVerifier::from_encoded(&text);
        let _ = CosignerKey::from_encoded(&text);
        let v = Signer::from_seed("k", &[3; 32]).expect("valid name").verifier();
        prop_assert!(open(&bytes, &[v]).is_err());
    }

    #[test]
    fn parsers_never_panic_on_near_valid_input(
        n in note(),
        cut in any::<prop::sample::Index>(),
        junk in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        // Splice junk into a valid note so the parsers see mostly well-formed structure.
        let mut bytes = n.to_bytes();
        let at = cut.index(bytes.len() + 1);
        bytes.splice(at..at, junk);
        let _ = Note::parse(&bytes);
        let _ = Checkpoint::parse(&String::from_utf8_lossy(&bytes));
        let body = [b"old 1\n\n".as_slice(), &bytes].concat();
        let _ = AddCheckpointRequest::parse(&body);
    }
}
