//! Interoperability vectors: Go's `sumdb/note` documentation example, the checkpoint derived
//! from it in integrity.md 4.6, and the cosigner key ID of the same key.

use kling_audit_merkle::{leaf_hash, root};
use kling_audit_note::{
    key_id, open, sign_checkpoint, Checkpoint, CosignatureVerifier, CosignerKey, Note, NoteError,
    Signer, Verifier,
};

const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const SIG_B64: &str =
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=";
const CHECKPOINT_SIG_B64: &str =
    "x08gozdSgLMzAnw63LH1RGViJhUfW60EUGKY7Kmr004fQNOSqfrcd1hIk3BCtdcLWIqvGtX67sL24VN+44uTlxMnbAA=";

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn go_note() -> String {
    format!("{TEXT}\n\u{2014} PeterNeumann {SIG_B64}\n")
}

#[test]
fn go_doc_keys_decode_and_re_encode_byte_for_byte() -> TestResult {
    let signer = Signer::from_encoded(SKEY)?;
    assert_eq!(signer.encode().as_str(), SKEY);
    assert_eq!(signer.verifier().encode(), VKEY);
    let verifier = Verifier::from_encoded(VKEY)?;
    assert_eq!(verifier, signer.verifier());
    assert_eq!(verifier.key_id(), 0xc74f20a3);
    assert_eq!(
        key_id("PeterNeumann", 0x01, verifier.public_key()),
        0xc74f20a3
    );
    Ok(())
}

#[test]
fn go_doc_signature_reproduces_byte_for_byte() -> TestResult {
    let signer = Signer::from_encoded(SKEY)?;
    let mut note = Note::new(TEXT)?;
    note.sign(&signer)?;
    assert_eq!(String::from_utf8(note.to_bytes())?, go_note());
    let verified = open(go_note().as_bytes(), &[Verifier::from_encoded(VKEY)?])?;
    assert_eq!(verified.text(), TEXT);
    assert_eq!(verified.verified_signatures().count(), 1);
    Ok(())
}

fn size8_root() -> kling_audit_merkle::Hash {
    let inputs: [&[u8]; 8] = [
        b"",
        &[0x00],
        &[0x10],
        &[0x20, 0x21],
        &[0x30, 0x31],
        &[0x40, 0x41, 0x42, 0x43],
        &[0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
        &[
            0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
            0x6e, 0x6f,
        ],
    ];
    let leaves: Vec<_> = inputs.iter().map(|d| leaf_hash(d)).collect();
    root(&leaves)
}

#[test]
fn derived_checkpoint_vector_reproduces() -> TestResult {
    let signer = Signer::from_encoded(SKEY)?;
    let cp = Checkpoint::new("PeterNeumann", 8, size8_root())?;
    assert_eq!(
        cp.to_text(),
        "PeterNeumann\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    );
    let note = sign_checkpoint(&cp, &signer)?;
    let expected = format!(
        "{}\n\u{2014} PeterNeumann {CHECKPOINT_SIG_B64}\n",
        cp.to_text()
    );
    assert_eq!(String::from_utf8(note.to_bytes())?, expected);
    let verified = open(expected.as_bytes(), &[signer.verifier()])?;
    assert_eq!(Checkpoint::parse(verified.text())?, cp);
    Ok(())
}

#[test]
fn peter_neumann_cosigner_key_id_is_18b9780b() -> TestResult {
    let signer = Signer::from_encoded(SKEY)?;
    let as_cosigner = CosignatureVerifier::from_encoded(VKEY)?;
    assert_eq!(as_cosigner.key_id(), 0x18b9780b);
    assert_eq!(
        key_id("PeterNeumann", 0x04, signer.verifier().public_key()),
        0x18b9780b
    );
    let cosigner = CosignerKey::from_encoded(SKEY)?;
    assert_eq!(cosigner.key_id(), 0x18b9780b);
    // Our own encodings carry type 0x04 and its ID, and read back as the same key.
    let vkey04 = cosigner.verifier().encode();
    assert!(vkey04.starts_with("PeterNeumann+18b9780b+B"), "{vkey04}");
    assert_eq!(CosignatureVerifier::from_encoded(&vkey04)?, as_cosigner);
    assert_eq!(
        CosignerKey::from_encoded(&cosigner.encode())?.key_id(),
        0x18b9780b
    );
    Ok(())
}

#[test]
fn cosignature_verifies_and_is_bound_to_time_and_text() -> TestResult {
    let cosigner = CosignerKey::from_encoded(SKEY)?;
    let log = Signer::from_encoded(SKEY)?;
    let cp = Checkpoint::new("PeterNeumann", 8, size8_root())?;
    let text = cp.to_text();
    let sig = cosigner.sign(&text, 1_679_315_147)?;
    assert_eq!(sig.signature().len(), 72);
    assert_eq!(&sig.signature()[..8], &1_679_315_147u64.to_be_bytes());
    let v = cosigner.verifier();
    assert_eq!(v.verify(&text, &sig)?, 1_679_315_147);

    // A cosignature and a log signature by the same key coexist on one note and are told
    // apart by key ID.
    let mut note = sign_checkpoint(&cp, &log)?;
    note.add_signature(sig.clone())?;
    let bytes = note.to_bytes();
    let as_log = open(&bytes, &[log.verifier()])?;
    assert_eq!(as_log.verified_signatures().count(), 1);
    let as_witness = open(&bytes, &[&v])?;
    assert_eq!(
        as_witness.verified_signatures().next().map(|s| s.key_id()),
        Some(0x18b9780b)
    );

    // Changing the timestamp or the text breaks it.
    let mut forged = sig.signature().to_vec();
    forged[7] ^= 1;
    let forged = kling_audit_note::NoteSignature::new("PeterNeumann", 0x18b9780b, forged)?;
    assert!(v.verify(&text, &forged).is_err());
    let other = Checkpoint::new("PeterNeumann", 9, size8_root())?.to_text();
    assert!(v.verify(&other, &sig).is_err());
    // Only checkpoints are cosigned.
    assert!(cosigner.sign("not a checkpoint\n", 1).is_err());
    assert!(cosigner.sign(&text, u64::MAX).is_err());
    Ok(())
}

#[test]
fn cosignature_message_matches_spec_example_layout() {
    let text =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    assert_eq!(
        kling_audit_note::cosignature_message(text, 1_679_315_147),
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n\
          CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    );
}

#[test]
fn open_rejects_bad_known_signature_and_ignores_partial_matches() -> TestResult {
    let v = Verifier::from_encoded(VKEY)?;
    let other = Signer::from_seed("other", &[9; 32])?;

    // A corrupted signature from the trusted key rejects the note.
    let mut bad = go_note().into_bytes();
    let at = bad.len() - 10;
    bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
    assert!(matches!(
        open(&bad, &[&v]),
        Err(NoteError::InvalidSignature {
            key_id: 0xc74f20a3,
            ..
        })
    ));

    // Name matches but ID does not, or ID matches but name does not: ignored, so the note has
    // no trusted signature rather than a bad one.
    let mut note = Note::new(TEXT)?;
    note.add_signature(kling_audit_note::NoteSignature::new(
        "PeterNeumann",
        0xdeadbeef,
        vec![1; 64],
    )?)?;
    note.add_signature(kling_audit_note::NoteSignature::new(
        "Impostor",
        0xc74f20a3,
        vec![1; 64],
    )?)?;
    assert_eq!(
        open(&note.to_bytes(), &[&v]),
        Err(NoteError::NoTrustedSignature { signatures: 2 })
    );
    // Adding a genuine signature makes it verify; the partial matches stay unverified.
    note.sign(&Signer::from_encoded(SKEY)?)?;
    let ok = open(&note.to_bytes(), &[&v])?;
    assert_eq!(ok.verified_signatures().count(), 1);
    assert_eq!(ok.unverified_signatures().count(), 2);

    // A note signed only by an unknown key is rejected.
    let mut unknown = Note::new(TEXT)?;
    unknown.sign(&other)?;
    assert!(matches!(
        open(&unknown.to_bytes(), &[&v]),
        Err(NoteError::NoTrustedSignature { signatures: 1 })
    ));
    // Two trusted keys with one name and ID cannot be told apart.
    assert!(matches!(
        open(go_note().as_bytes(), &[v.clone(), v]),
        Err(NoteError::AmbiguousVerifier { .. })
    ));
    Ok(())
}

#[test]
fn open_accepts_at_least_16_signatures() -> TestResult {
    let signers: Vec<Signer> = (0..20u8)
        .map(|i| Signer::from_seed(&format!("k{i}"), &[i; 32]))
        .collect::<Result<_, _>>()?;
    let mut note = Note::new(TEXT)?;
    for s in &signers {
        note.sign(s)?;
    }
    let verifiers: Vec<Verifier> = signers.iter().map(Signer::verifier).collect();
    let opened = open(&note.to_bytes(), &verifiers)?;
    assert_eq!(opened.verified_signatures().count(), 20);
    Ok(())
}
