//! Every strict parsing rule, one rejection each, and equivocation evidence.

use kling_audit_merkle::{consistency_proof, leaf_hash, root, Hash};
use kling_audit_note::{
    open, sign_checkpoint, AddCheckpointRequest, Checkpoint, CheckpointError, Equivocation,
    EquivocationError, EquivocationKind, Note, NoteError, Signer, WitnessBodyError,
    MAX_PROOF_LINES, MAX_SIGNATURES,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn signer() -> Signer {
    Signer::from_seed("example.com/log", &[42; 32]).expect("valid name")
}

fn signed(text: &str) -> Vec<u8> {
    let mut n = Note::new(text).expect("valid text");
    n.sign(&signer()).expect("one signature fits");
    n.to_bytes()
}

/// A 64-byte signature line for `name`, base64 of a zero key ID and 64 bytes of 0x01.
fn sig_line(name: &str) -> String {
    format!("\u{2014} {name} AAAAAAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n")
}

fn malformed(bytes: &[u8]) -> &'static str {
    match Note::parse(bytes) {
        Err(NoteError::MalformedSignatureLine { reason, .. }) => reason,
        other => panic!("expected a malformed signature line, got {other:?}"),
    }
}

#[test]
fn note_parser_rejects_each_broken_rule() {
    let good = format!("hello\n\n{}", sig_line("k"));
    assert!(Note::parse(good.as_bytes()).is_ok());

    assert_eq!(
        Note::parse(b"he\xffllo\n\n"),
        Err(NoteError::InvalidUtf8 { offset: 2 })
    );
    for bad in [b'\t', b'\r', 0u8, 0x1b, 0x7f] {
        let text = [
            b"he".as_slice(),
            &[bad],
            b"llo\n\n",
            sig_line("k").as_bytes(),
        ]
        .concat();
        assert_eq!(
            Note::parse(&text),
            Err(NoteError::ControlCharacter {
                offset: 2,
                byte: bad
            })
        );
    }
    let no_blank = format!("hello\n{}", sig_line("k"));
    assert_eq!(
        Note::parse(no_blank.as_bytes()),
        Err(NoteError::MissingSignatureBlock)
    );
    assert_eq!(
        Note::parse(b"hello\n\n"),
        Err(NoteError::UnterminatedSignatureBlock)
    );
    let unterminated = good.trim_end_matches('\n');
    assert_eq!(
        Note::parse(unterminated.as_bytes()),
        Err(NoteError::UnterminatedSignatureBlock)
    );

    assert_eq!(
        malformed(good.replace('\u{2014}', "-").as_bytes()),
        "does not start with an em dash and a space"
    );
    assert_eq!(
        malformed(good.replace("\u{2014} ", "\u{2014}").as_bytes()),
        "does not start with an em dash and a space"
    );
    assert_eq!(
        malformed(b"hello\n\n\xe2\x80\x94 nameonly\n"),
        "no space between key name and signature"
    );
    assert_eq!(
        malformed(format!("hello\n\n{}", sig_line("a+b")).as_bytes()),
        "invalid key name"
    );
    assert_eq!(
        malformed(format!("hello\n\n{}", sig_line("a\u{2003}b")).as_bytes()),
        "invalid key name"
    );
    assert_eq!(
        malformed("hello\n\n\u{2014} k \n".as_bytes()),
        "empty signature"
    );
    assert_eq!(
        malformed("hello\n\n\u{2014}  AAAAAAE=\n".as_bytes()),
        "invalid key name"
    );
    // Missing padding, non-zero padding bits, and a space inside the base64.
    for b64 in ["AAAAAAE", "AAAAAAF=", "AAAA AAE="] {
        assert_eq!(
            malformed(format!("hello\n\n\u{2014} k {b64}\n").as_bytes()),
            "signature is not canonical padded base64",
            "{b64}"
        );
    }
    // Four bytes are only a key ID.
    assert_eq!(
        malformed("hello\n\n\u{2014} k AAAAAA==\n".as_bytes()),
        "signature shorter than a key ID and one byte"
    );
    // The text ends at the LAST empty line, so an earlier "signature" becomes text.
    let gap = format!("hello\n\n{}\n{}", sig_line("a"), sig_line("b"));
    let parsed = Note::parse(gap.as_bytes()).expect("well-formed");
    assert_eq!(parsed.text(), format!("hello\n\n{}", sig_line("a")));
    assert_eq!(parsed.signatures().len(), 1);
    assert_eq!(parsed.signatures()[0].name(), "b");
}

#[test]
fn note_parser_caps_signatures_at_the_documented_limit() {
    let at_cap: String = (0..MAX_SIGNATURES)
        .map(|i| sig_line(&format!("k{i}")))
        .collect();
    assert_eq!(
        Note::parse(format!("t\n\n{at_cap}").as_bytes()).map(|n| n.signatures().len()),
        Ok(MAX_SIGNATURES)
    );
    let over = format!("t\n\n{at_cap}{}", sig_line("one-more"));
    assert_eq!(
        Note::parse(over.as_bytes()),
        Err(NoteError::TooManySignatures {
            max: MAX_SIGNATURES
        })
    );
}

#[test]
fn note_builder_rejects_bad_text() {
    assert_eq!(Note::new(""), Err(NoteError::TextNotNewlineTerminated));
    assert_eq!(
        Note::new("no newline"),
        Err(NoteError::TextNotNewlineTerminated)
    );
    assert!(matches!(
        Note::new("tab\there\n"),
        Err(NoteError::ControlCharacter { byte: b'\t', .. })
    ));
}

const ROOT_B64: &str = "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=";

#[test]
fn checkpoint_parser_rejects_each_broken_rule() {
    let good = format!("example.com/log\n8\n{ROOT_B64}\n");
    assert!(Checkpoint::parse(&good).is_ok());
    let with_ext = format!("example.com/log\n8\n{ROOT_B64}\next one\n");
    assert_eq!(
        Checkpoint::parse(&with_ext).map(|c| c.extensions),
        Ok(vec!["ext one".to_string()])
    );
    let cases: Vec<(String, CheckpointError)> = vec![
        (
            format!("example.com/log\n8\n{ROOT_B64}"),
            CheckpointError::NotNewlineTerminated,
        ),
        (String::new(), CheckpointError::NotNewlineTerminated),
        (
            "example.com/log\n8\n".into(),
            CheckpointError::TooFewLines { lines: 2 },
        ),
        (format!("\n8\n{ROOT_B64}\n"), CheckpointError::EmptyOrigin),
        (
            format!("example.com/log\n08\n{ROOT_B64}\n"),
            CheckpointError::InvalidSize {
                reason: "leading zero",
            },
        ),
        (
            format!("example.com/log\n+8\n{ROOT_B64}\n"),
            CheckpointError::InvalidSize {
                reason: "not all ASCII digits",
            },
        ),
        (
            format!("example.com/log\n\n{ROOT_B64}\n"),
            CheckpointError::InvalidSize { reason: "empty" },
        ),
        (
            format!("example.com/log\n18446744073709551616\n{ROOT_B64}\n"),
            CheckpointError::InvalidSize {
                reason: "does not fit in 64 bits",
            },
        ),
        (
            "example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQw==\n".into(),
            CheckpointError::InvalidRoot,
        ),
        (
            // Same root with non-zero padding bits.
            "example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyh=\n".into(),
            CheckpointError::InvalidRoot,
        ),
        (
            "example.com/log\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg\n".into(),
            CheckpointError::InvalidRoot,
        ),
        (
            format!("example.com/log\n8\n{ROOT_B64}\n\n"),
            CheckpointError::EmptyExtension { line: 4 },
        ),
        (
            format!("example.com/log\r\n8\n{ROOT_B64}\n"),
            CheckpointError::ControlCharacter { line: 1 },
        ),
        (
            format!("example.com/log\n8\n{ROOT_B64}\next\x7f\n"),
            CheckpointError::ControlCharacter { line: 4 },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(Checkpoint::parse(&text), Err(expected), "{text:?}");
    }
}

#[test]
fn witness_body_parser_rejects_each_broken_rule() -> TestResult {
    let note = signed(&format!("example.com/log\n8\n{ROOT_B64}\n"));
    let good = AddCheckpointRequest {
        old_size: 5,
        proof: vec![[1; 32], [2; 32]],
        checkpoint: note.clone(),
    };
    let bytes = good.to_bytes();
    assert!(bytes.starts_with(b"old 5\nAQEB"));
    assert_eq!(AddCheckpointRequest::parse(&bytes)?, good);

    let body = |head: &str| [head.as_bytes(), &note].concat();
    let cases: Vec<(Vec<u8>, WitnessBodyError)> = vec![
        (body(""), WitnessBodyError::MissingOldLine),
        (body("new 5\n\n"), WitnessBodyError::MissingOldLine),
        (body("old 05\n\n"), WitnessBodyError::InvalidOldSize),
        (body("old -1\n\n"), WitnessBodyError::InvalidOldSize),
        (body("old  5\n\n"), WitnessBodyError::InvalidOldSize),
        (
            body("old 5\nnot base64\n\n"),
            WitnessBodyError::InvalidProofLine { line: 1 },
        ),
        (
            body(&format!("old 5\n{ROOT_B64}\nAQID\n\n")),
            WitnessBodyError::InvalidProofLine { line: 2 },
        ),
        (b"old 5\n".to_vec(), WitnessBodyError::MissingSeparator),
        (
            format!("old 5\n{ROOT_B64}").into_bytes(),
            WitnessBodyError::MissingSeparator,
        ),
        (b"old 5\n\n".to_vec(), WitnessBodyError::MissingCheckpoint),
    ];
    for (input, expected) in cases {
        assert_eq!(
            AddCheckpointRequest::parse(&input),
            Err(expected),
            "{}",
            String::from_utf8_lossy(&input)
        );
    }
    let max: String = (0..MAX_PROOF_LINES)
        .map(|_| format!("{ROOT_B64}\n"))
        .collect();
    assert_eq!(
        AddCheckpointRequest::parse(&body(&format!("old 5\n{max}\n")))?
            .proof
            .len(),
        MAX_PROOF_LINES
    );
    assert_eq!(
        AddCheckpointRequest::parse(&body(&format!("old 5\n{max}{ROOT_B64}\n\n"))),
        Err(WitnessBodyError::TooManyProofLines {
            max: MAX_PROOF_LINES
        })
    );
    Ok(())
}

fn leaves(n: u64, fork_at: Option<u64>) -> Vec<Hash> {
    (0..n)
        .map(|i| {
            let forked = fork_at.is_some_and(|f| i >= f);
            leaf_hash(format!("{i}{}", if forked { "'" } else { "" }).as_bytes())
        })
        .collect()
}

fn checkpoint_note(origin: &str, size: u64, root: Hash, signer: &Signer) -> Vec<u8> {
    let cp = Checkpoint::new(origin, size, root).expect("valid origin");
    sign_checkpoint(&cp, signer)
        .expect("valid checkpoint")
        .to_bytes()
}

#[test]
fn equivocation_same_size_is_detected_and_serialized() -> TestResult {
    let s = signer();
    let known = [s.verifier()];
    let honest = leaves(8, None);
    let forked = leaves(8, Some(3));
    let a = checkpoint_note("example.com/log", 8, root(&honest), &s);
    let b = checkpoint_note("example.com/log", 8, root(&forked), &s);
    let ev = Equivocation::same_size(&a, &b, &known)?;
    assert_eq!(ev.kind(), &EquivocationKind::SameSizeDifferentRoot);

    let json: serde_json::Value = serde_json::from_str(&ev.to_json_string())?;
    assert_eq!(json["type"], "kling-audit/equivocation/v1");
    assert_eq!(json["origin"], "example.com/log");
    assert_eq!(json["kind"], "same_size_different_root");
    assert_eq!(json["first"]["size"], 8);
    assert_eq!(
        json["first"]["note"].as_str().map(str::as_bytes),
        Some(a.as_slice())
    );
    assert_eq!(
        json["second"]["note"].as_str().map(str::as_bytes),
        Some(b.as_slice())
    );
    assert!(json.get("proof").is_none());

    // Not evidence: identical checkpoints, other origins, unsigned or untrusted notes.
    assert!(matches!(
        Equivocation::same_size(&a, &a, &known),
        Err(EquivocationError::Consistent { .. })
    ));
    let other = checkpoint_note("example.com/other", 8, root(&forked), &s);
    assert_eq!(
        Equivocation::same_size(&a, &other, &known),
        Err(EquivocationError::DifferentOrigins)
    );
    let stranger = Signer::from_seed("example.com/log", &[1; 32])?;
    let untrusted = checkpoint_note("example.com/log", 8, root(&forked), &stranger);
    assert!(matches!(
        Equivocation::same_size(&a, &untrusted, &known),
        Err(EquivocationError::Note {
            which: "second",
            ..
        })
    ));
    let smaller = checkpoint_note("example.com/log", 7, root(&forked[..7]), &s);
    assert!(matches!(
        Equivocation::same_size(&a, &smaller, &known),
        Err(EquivocationError::SizeMismatch { .. })
    ));
    Ok(())
}

#[test]
fn equivocation_by_failed_consistency_proof() -> TestResult {
    let s = signer();
    let known = [s.verifier()];
    let honest = leaves(8, None);
    let forked = leaves(8, Some(3));
    let old = checkpoint_note("example.com/log", 5, root(&honest[..5]), &s);
    let new_forked = checkpoint_note("example.com/log", 8, root(&forked), &s);
    let new_honest = checkpoint_note("example.com/log", 8, root(&honest), &s);

    // The forked log's own proof cannot link the honest size-5 checkpoint.
    let proof = consistency_proof(5, 8, &forked)?;
    let ev = Equivocation::inconsistent(&old, &new_forked, proof.clone(), &known)?;
    assert_eq!(ev.kind(), &EquivocationKind::InconsistentProof { proof });
    let json: serde_json::Value = serde_json::from_str(&ev.to_json_string())?;
    assert_eq!(json["kind"], "inconsistent_proof");
    assert_eq!(json["proof"].as_array().map(Vec::len), Some(4));

    // An honest extension with its proof is not evidence.
    let good = consistency_proof(5, 8, &honest)?;
    assert!(matches!(
        Equivocation::inconsistent(&old, &new_honest, good, &known),
        Err(EquivocationError::Consistent {
            first_size: 5,
            second_size: 8
        })
    ));
    assert!(matches!(
        Equivocation::inconsistent(&new_honest, &old, vec![], &known),
        Err(EquivocationError::SizeMismatch { .. })
    ));
    Ok(())
}

#[test]
fn opened_checkpoint_rejects_tampering_anywhere() -> TestResult {
    let s = signer();
    let bytes = signed(&format!("example.com/log\n8\n{ROOT_B64}\n"));
    assert!(open(&bytes, &[s.verifier()]).is_ok());
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut m = bytes.clone();
            m[i] ^= 1 << bit;
            assert!(
                open(&m, &[s.verifier()]).is_err(),
                "flipping bit {bit} of byte {i} still opens"
            );
        }
    }
    Ok(())
}
