//! `kling-audit match-prompt`: an auditor holding the commit key finds the records of a prompt
//! the audited client submitted, and nothing for a prompt that was never sent.

use std::path::Path;
use std::time::Duration;

use kling_api::client::{ClientConfig, PollOptions};
use kling_api::requests::TextToVideoRequest;
use kling_api::SecretString;
use kling_audit_client::AuditedClient;
use kling_audit_ledger::{Ledger, LedgerOptions};

mod matching;
use matching::{json_of, kling_audit, the_one_match};

const PROMPT: &str = "an orchard of glass apples under moonlight";
const NEGATIVE: &str = "fog, grain";

/// Submits one task through the audited client into a ledger at `dir` (keys in `dir.keys`).
fn record_a_task(dir: &Path) -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut cfg = kling_sim::SimConfig::for_tests();
        cfg.lifecycle.to_processing_ms = 20;
        cfg.lifecycle.to_final_ms = 60;
        let sim = kling_sim::spawn(cfg).await.unwrap();
        let (ledger, _) = Ledger::open(LedgerOptions::new(dir)).unwrap();
        let config = ClientConfig::new(
            sim.base_url(),
            kling_sim::TEST_ACCESS_KEY,
            SecretString::new(kling_sim::TEST_SECRET_KEY),
        );
        let client = AuditedClient::new(config, ledger.clone(), "auditor-test").unwrap();
        let mut request = TextToVideoRequest::with_prompt(PROMPT);
        request.negative_prompt = Some(NEGATIVE.into());
        let poll = PollOptions {
            initial_interval: Duration::from_millis(20),
            backoff: 1.0,
            max_interval: Duration::from_millis(20),
            deadline: Duration::from_secs(30),
        };
        let (sub, _) = client.create_and_wait(&request, poll).await.unwrap();
        ledger.close_async().await.unwrap();
        sim.shutdown().await.unwrap();
        sub.corr.to_string()
    })
}

#[test]
fn a_submitted_prompt_is_found_and_another_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    record_a_task(&dir);

    let out = kling_audit(
        &dir,
        &["match-prompt", "--prompt", PROMPT, "--format", "json"],
    );
    let found = the_one_match(&out, PROMPT);
    assert_eq!(found["type"], "kling.intent");
    assert_eq!(found["actor"], "auditor-test");
    assert_eq!(found["field"], "prompt");
    assert_eq!(found["path"], "request.text[0].commitment");
    assert!(found["seq"].as_u64().is_some());

    // Text output names the same record.
    let out = kling_audit(&dir, &["match-prompt", "--prompt", PROMPT]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("type=kling.intent") && text.contains("field=prompt"),
        "{text}"
    );

    // A prompt never submitted, and one differing by a single character, are not found.
    for other in ["a completely different prompt", &PROMPT[..PROMPT.len() - 1]] {
        let out = kling_audit(
            &dir,
            &["match-prompt", "--prompt", other, "--format", "json"],
        );
        assert_eq!(out.status.code(), Some(1), "{other}");
        let doc = json_of(&out);
        assert_eq!(doc["found"], false);
        assert!(doc["records_scanned"].as_u64().unwrap() > 3);
    }

    // The negative prompt, read from a file with a trailing newline, matches its own field.
    let file = tmp.path().join("negative.txt");
    std::fs::write(&file, format!("{NEGATIVE}\n")).unwrap();
    let out = kling_audit(
        &dir,
        &[
            "match-prompt",
            "--prompt-file",
            file.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_of(&out)["matches"][0]["field"], "negative_prompt");

    // An explicit key: the right one from a file finds it, another key does not.
    let key_file = format!("@{}", tmp.path().join("audit.keys/commit.key").display());
    let out = kling_audit(
        &dir,
        &[
            "match-prompt",
            "--prompt",
            PROMPT,
            "--commit-key",
            &key_file,
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let wrong = "11".repeat(32);
    let out = kling_audit(
        &dir,
        &["match-prompt", "--prompt", PROMPT, "--commit-key", &wrong],
    );
    assert_eq!(out.status.code(), Some(1));

    // A malformed key is a usage problem, not a "not found".
    let out = kling_audit(
        &dir,
        &["match-prompt", "--prompt", PROMPT, "--commit-key", "xyz"],
    );
    assert_eq!(out.status.code(), Some(2));
}
