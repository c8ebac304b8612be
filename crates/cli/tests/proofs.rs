//! Evidence bundles: `prove` writes them, `verify-proof` checks them offline against the
//! pinned key, and every tampering is refused.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kling-audit");

fn kling(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("KLING_AUDIT_DIR")
        .output()
        .unwrap()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let out = kling(&dir, &["init", "--origin", "example.test/kling-audit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("verifier key:"))
        .unwrap()
        .trim()
        .to_owned();
    for i in 0..20 {
        let d = format!("{{\"i\":{i}}}");
        assert!(kling(
            &dir,
            &["log", "--type", "t", "--actor", "a", "--details", &d]
        )
        .status
        .success());
    }
    (tmp, dir, key)
}

#[test]
fn inclusion_bundle_verifies_offline_and_tampering_is_refused() {
    let (tmp, dir, key) = setup();
    let bundle = tmp.path().join("b.json");
    let out = kling(
        &dir,
        &["prove", "--seq", "7", "--out", bundle.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Offline: the ledger is gone, only the bundle and the pinned key remain.
    std::fs::rename(&dir, tmp.path().join("elsewhere")).unwrap();
    let ok = kling(
        &dir,
        &["verify-proof", bundle.to_str().unwrap(), "--key", &key],
    );
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("VALID: record seq 7"));
    let size = std::fs::metadata(&bundle).unwrap().len();
    assert!(size < 4096, "bundle of {size} bytes");

    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "edited record",
            Box::new(|b| {
                let r = b["record"]
                    .as_str()
                    .unwrap()
                    .replacen("\"actor\":\"", "\"actor\":\"x", 1);
                b["record"] = r.into();
            }),
        ),
        ("claimed another seq", Box::new(|b| b["seq"] = 8.into())),
        ("bigger tree size", Box::new(|b| b["tree_size"] = 21.into())),
        (
            "proof hash swapped",
            Box::new(|b| {
                let p = b["inclusion_proof"].as_array_mut().unwrap();
                p.swap(0, 1);
            }),
        ),
        (
            "proof hash dropped",
            Box::new(|b| {
                b["inclusion_proof"].as_array_mut().unwrap().pop();
            }),
        ),
        (
            "checkpoint root changed",
            Box::new(|b| {
                let cp = b["checkpoint"].as_str().unwrap();
                let mut lines: Vec<&str> = cp.split('\n').collect();
                let forged = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
                lines[2] = forged;
                b["checkpoint"] = lines.join("\n").into();
            }),
        ),
    ];
    for (what, mutate) in cases {
        let mut b = original.clone();
        mutate(&mut b);
        let path = tmp.path().join("bad.json");
        std::fs::write(&path, serde_json::to_vec(&b).unwrap()).unwrap();
        let out = kling(
            &dir,
            &["verify-proof", path.to_str().unwrap(), "--key", &key],
        );
        assert_eq!(out.status.code(), Some(1), "{what} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("INVALID"),
            "{what}"
        );
    }

    // A bundle signed by someone else's key (carried inside the bundle) is not trusted.
    let other_dir = tmp.path().join("other");
    let out = kling(
        &other_dir,
        &["init", "--origin", "example.test/kling-audit"],
    );
    assert!(out.status.success());
    let out = kling(&other_dir, &["log", "--type", "t", "--actor", "mallory"]);
    assert!(out.status.success());
    let forged = tmp.path().join("forged.json");
    let out = kling(
        &other_dir,
        &["prove", "--seq", "0", "--out", forged.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kling(
        &dir,
        &["verify-proof", forged.to_str().unwrap(), "--key", &key],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn consistency_bundle_between_two_checkpoints_verifies() {
    let (tmp, dir, key) = setup();
    let out = kling(&dir, &["verify", "--format", "json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["intact"], true);
    let cps = std::fs::read_to_string(dir.join("checkpoints.jsonl")).unwrap();
    let sizes: Vec<u64> = cps
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["size"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(sizes.len() >= 2);
    let bundle = tmp.path().join("c.json");
    let old = sizes[0].to_string();
    let out = kling(
        &dir,
        &[
            "prove",
            "--consistency",
            &old,
            "--out",
            bundle.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kling(
        &dir,
        &["verify-proof", bundle.to_str().unwrap(), "--key", &key],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn verify_with_the_pinned_key_and_mac_root_checks_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    let out = kling(&dir, &["init"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (key, mac) = (field("verifier key:"), field("MAC root key:"));
    assert!(
        !tmp.path().join("audit.keys/mac-root.key").exists(),
        "init must not keep the MAC root key"
    );
    for _ in 0..5 {
        assert!(kling(&dir, &["log", "--type", "t", "--actor", "a"])
            .status
            .success());
    }
    let out = kling(
        &dir,
        &[
            "verify",
            "--key",
            &key,
            "--mac-key",
            &mac,
            "--format",
            "json",
        ],
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(r["macs_checked"], true);
    assert_eq!(r["checkpoints"]["signatures_checked"], true);
    let wrong = "11".repeat(32);
    let out = kling(&dir, &["verify", "--key", &key, "--mac-key", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("BAD_MAC"));
}

#[test]
fn proving_a_seq_past_the_end_says_it_does_not_exist() {
    let (_tmp, dir, _) = setup();
    let out = kling(&dir, &["prove", "--seq", "999999"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("error: there is no seq 999999: the ledger's records run from seq 0 to "),
        "{stderr}"
    );
}

#[test]
fn proving_consistency_from_an_unsigned_size_names_where_sizes_are() {
    let (_tmp, dir, _) = setup();
    let out = kling(&dir, &["prove", "--consistency", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().next(),
        Some(
            "error: no signed checkpoint of size 0 in this ledger; the sizes it signed are the \
             `size` fields of its checkpoints.jsonl"
        )
    );
}

/// Writes `bundle` with `mutate` applied to `path` and runs `verify-proof` on it.
fn verify_mutated(
    dir: &std::path::Path,
    key: &str,
    bundle: &serde_json::Value,
    path: &std::path::Path,
    mutate: impl Fn(&mut serde_json::Value),
) -> std::process::Output {
    let mut b = bundle.clone();
    mutate(&mut b);
    std::fs::write(path, serde_json::to_vec(&b).unwrap()).unwrap();
    kling(dir, &["verify-proof", path.to_str().unwrap(), "--key", key])
}

#[test]
fn verify_proof_refuses_a_bundle_whose_origin_or_verifier_key_differs_from_the_signed_ones() {
    let (tmp, dir, key) = setup();
    let other = tmp.path().join("other");
    let out = kling(&other, &["init", "--origin", "example.test/kling-audit"]);
    assert!(out.status.success());
    let other_key = std::fs::read_to_string(tmp.path().join("other.keys/checkpoint.pub"))
        .unwrap()
        .trim()
        .to_owned();
    let inclusion = tmp.path().join("i.json");
    assert!(kling(
        &dir,
        &["prove", "--seq", "3", "--out", inclusion.to_str().unwrap()]
    )
    .status
    .success());
    let consistency = tmp.path().join("c.json");
    let out = kling(
        &dir,
        &[
            "prove",
            "--consistency",
            "1",
            "--out",
            consistency.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = tmp.path().join("bad.json");
    for original in [&inclusion, &consistency] {
        let bundle: serde_json::Value =
            serde_json::from_slice(&std::fs::read(original).unwrap()).unwrap();
        type Mutation<'a> = Box<dyn Fn(&mut serde_json::Value) + 'a>;
        let cases: Vec<(Mutation<'_>, String)> = vec![
            (
                Box::new(|b| b["origin"] = "x/y".into()),
                "INVALID: the bundle's origin \"x/y\" differs from the signed checkpoint's \
                 \"example.test/kling-audit\""
                    .to_owned(),
            ),
            (
                Box::new(|b| b["verifier_key"] = other_key.clone().into()),
                format!(
                    "INVALID: the bundle's verifier_key \"{other_key}\" differs from the pinned \
                     verifier key's \"{key}\""
                ),
            ),
            (
                Box::new(|b| b["verifier_key"] = "garbage".into()),
                format!(
                    "INVALID: the bundle's verifier_key \"garbage\" differs from the pinned \
                     verifier key's \"{key}\""
                ),
            ),
        ];
        for (mutate, expected) in cases {
            let out = verify_mutated(&dir, &key, &bundle, &bad, mutate);
            assert_eq!(out.status.code(), Some(1), "{expected}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            // The consistency bundle's origin is compared with its new checkpoint's.
            let expected = if bundle["format"] == "kling-audit-consistency/1" {
                expected.replace("the signed checkpoint", "the new signed checkpoint")
            } else {
                expected
            };
            assert_eq!(stdout.trim_end(), expected);
        }
        // The same key spelled with an upper-case key ID is the same key.
        let (name, rest) = key.split_once('+').unwrap();
        let (id, b64) = rest.split_once('+').unwrap();
        let respelled = format!("{name}+{}+{b64}", id.to_uppercase());
        let out = verify_mutated(&dir, &key, &bundle, &bad, |b| {
            b["verifier_key"] = respelled.clone().into()
        });
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
