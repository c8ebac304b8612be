//! The privacy leak test: known secrets go through every path of the audited client (success,
//! each kind of refusal, retries, timeouts, lost connections, callbacks) and none of them, in
//! any common encoding, may appear in any file under the ledger directory or in the tracing
//! output, captured here at TRACE level for every crate in the process.
//!
//! This file holds a single test because it installs the process-wide tracing subscriber.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::{fast_poll, sim_config, Fixture, ACCESS_KEY, SECRET_KEY};
use kling_api::client::PollOptions;
use kling_api::requests::{ImageToVideoRequest, MultiPrompt, TextToVideoRequest};
use kling_api::{webhook, SecretString};
use kling_audit_client::{AuditedClient, CallbackDelivery};
use serde_json::json;
use tracing_subscriber::util::SubscriberInitExt as _;

const PROMPT: &str = "quartz heron dancing beneath violet aurora";
const NEGATIVE: &str = "smudged lantern glare obscuring pines";
const SHOT_PROMPT: &str = "copper kettle whistling at midnight";
const LIP_TEXT: &str = "marigold ferry arrives at noon";
const WRONG_SECRET: &str = "wrong-secret-for-leak-test-5521aa";
const WEBHOOK_SECRET: &str = "whsec_bGVhay10ZXN0LXdlYmhvb2stc2VjcmV0LWJ5dGVz";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A known image: 3000 pseudo-random bytes, sent as base64.
fn image_base64() -> String {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..3000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    STANDARD.encode(bytes)
}

fn percent_encode(s: &str, space_as_plus: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' if space_as_plus => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The forms a secret could leak in: as is, URL-encoded (both space styles), and base64 and
/// base64url at each of the three byte alignments it could have inside a longer encoding
/// (only whole 3-byte groups, so padding cannot hide a match).
fn forms(secret: &str) -> Vec<String> {
    let mut out = vec![
        secret.to_owned(),
        percent_encode(secret, false),
        percent_encode(secret, true),
    ];
    let bytes = secret.as_bytes();
    for skip in 0..3 {
        let rest = &bytes[skip.min(bytes.len())..];
        let whole = rest.len() / 3 * 3;
        if whole >= 12 {
            out.push(STANDARD.encode(&rest[..whole]));
            out.push(URL_SAFE_NO_PAD.encode(&rest[..whole]));
        }
    }
    out
}

fn all_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn find(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn t2v(prompt: &str) -> TextToVideoRequest {
    TextToVideoRequest::with_prompt(prompt)
}

fn rich_t2v() -> TextToVideoRequest {
    let mut r = t2v(PROMPT);
    r.negative_prompt = Some(NEGATIVE.into());
    r.model_name = Some("kling-v3".into());
    r.multi_shot = Some(serde_json::from_value(json!(true)).unwrap());
    r.shot_type = Some("customize".into());
    r.multi_prompt = Some(vec![MultiPrompt {
        index: Some(serde_json::from_value(json!(1)).unwrap()),
        prompt: Some(SHOT_PROMPT.into()),
        duration: Some("5".into()),
        extra: Default::default(),
    }]);
    r.duration = Some("5".into());
    r.callback_url = Some(format!("http://127.0.0.1:9/cb?sig={SECRET_KEY}"));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_ledger_or_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .try_init()
        .unwrap();

    let image = image_base64();
    let mut jwts = Vec::new();

    // Success (with every kind of free text, a callback URL carrying a secret, polling).
    let fx = Fixture::start(sim_config()).await;
    let client = fx
        .client()
        .with_webhook_secret(SecretString::new(WEBHOOK_SECRET));
    let (sub, _) = client
        .create_and_wait(&rich_t2v(), fast_poll())
        .await
        .unwrap();
    let mut i2v = ImageToVideoRequest {
        image: Some(image.clone()),
        prompt: Some(PROMPT.into()),
        negative_prompt: Some(NEGATIVE.into()),
        ..ImageToVideoRequest::default()
    };
    client.create_and_wait(&i2v, fast_poll()).await.unwrap();
    // A failed task, a content-policy refusal, a parameter refusal, a lip-sync body.
    client
        .create_and_wait(&t2v(&format!("{PROMPT} sim-fail")), fast_poll())
        .await
        .unwrap();
    client
        .create(&t2v(&format!("{PROMPT} sim-blocked")))
        .await
        .unwrap_err();
    i2v.mode = Some("standard".into());
    client.create(&i2v).await.unwrap_err();
    let lip = json!({"input": {"video_id": "843211632612511839", "mode": "text2video",
        "text": LIP_TEXT, "voice_id": "oversea_male1", "voice_language": "en"}});
    let _ = client
        .create_json(kling_api::routes::Family::LipSync, &lip)
        .await;
    // Callbacks: signed, tampered, unparseable, all carrying secrets in places not recorded.
    let body = json!({"task_id": sub.task_id, "task_status": "succeed", "note": PROMPT,
        "task_result": {"videos": [{"id": "v", "url":
            format!("https://cdn.example.test/v.mp4?k={SECRET_KEY}")}]}})
    .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sig = webhook::sign(WEBHOOK_SECRET, "wh-9", now, body.as_bytes()).unwrap();
    let ts = now.to_string();
    for b in [
        body.clone(),
        body.replace("succeed", "failed"),
        format!("not json {PROMPT} {SECRET_KEY}"),
        json!({"weird": PROMPT, "secret": SECRET_KEY}).to_string(),
    ] {
        client
            .record_callback(CallbackDelivery {
                webhook_id: Some("wh-9"),
                webhook_timestamp: Some(&ts),
                webhook_signature: Some(&sig),
                body: b.as_bytes(),
            })
            .await
            .unwrap();
    }
    // A poll that reaches its deadline.
    let mut slow = sim_config();
    slow.lifecycle.to_processing_ms = 60_000;
    let fx_slow = Fixture::start(slow).await;
    let slow_client =
        AuditedClient::new(fx_slow.config(SECRET_KEY), fx.ledger.clone(), "test:client").unwrap();
    let pending = slow_client.create(&t2v(PROMPT)).await.unwrap();
    let short = PollOptions {
        deadline: Duration::from_millis(100),
        ..fast_poll()
    };
    slow_client.wait(&pending, short).await.unwrap_err();
    jwts.push(slow_client.kling().token_cache().unwrap().token().unwrap());
    fx_slow.close().await;

    // Authentication failure with a wrong secret.
    let wrong =
        AuditedClient::new(fx.config(WRONG_SECRET), fx.ledger.clone(), "test:client").unwrap();
    wrong.create(&t2v(PROMPT)).await.unwrap_err();
    jwts.push(wrong.kling().token_cache().unwrap().token().unwrap());
    jwts.push(client.kling().token_cache().unwrap().token().unwrap());

    // Faults: 5xx answers, HTTP 200 with a non-zero code, lost connections, timeouts, 1303.
    let mut faults = Vec::new();
    for apply in [
        (|c: &mut kling_sim::SimConfig| c.faults.server_error_rate = 1.0) as fn(&mut _),
        |c| c.faults.nonzero_code_rate = 1.0,
        |c| c.faults.drop_after_rate = 1.0,
        |c| c.faults.drop_before_rate = 1.0,
        |c| {
            c.faults.latency_rate = 1.0;
            c.faults.latency_ms = 2000;
        },
        |c| c.concurrency.video = 1,
    ] {
        let mut cfg = sim_config();
        apply(&mut cfg);
        let sim = kling_sim::spawn(cfg).await.unwrap();
        let mut config = fx.config(SECRET_KEY);
        config.base_url = sim.base_url();
        config.timeout = Duration::from_millis(500);
        let c = AuditedClient::new(config, fx.ledger.clone(), "test:client").unwrap();
        let _ = c.create(&rich_t2v()).await;
        let _ = c.create(&i2v).await;
        if let Ok(t) = c.create(&t2v(PROMPT)).await {
            let _ = c.wait(&t, fast_poll()).await;
        }
        jwts.push(c.kling().token_cache().unwrap().token().unwrap());
        faults.push(sim);
    }
    for sim in faults {
        sim.shutdown().await.unwrap();
    }

    let ledger_dir = fx.ledger_dir.clone();
    let record_count = fx.records().len();
    let _kept = fx.close().await;
    assert!(record_count > 40, "only {record_count} records");

    let mut secrets: Vec<String> = vec![
        SECRET_KEY.into(),
        WRONG_SECRET.into(),
        ACCESS_KEY.into(),
        WEBHOOK_SECRET.into(),
        PROMPT.into(),
        NEGATIVE.into(),
        SHOT_PROMPT.into(),
        LIP_TEXT.into(),
        image.clone(),
    ];
    for t in &jwts {
        secrets.push(t.token.expose().to_owned());
        secrets.push(format!("Bearer {}", t.token.expose()));
    }
    let mut files = Vec::new();
    all_files(&ledger_dir, &mut files);
    assert!(!files.is_empty());
    let logs = capture.0.lock().unwrap().clone();
    assert!(
        find(&logs, "audit record durable") && find(&logs, "kling attempt"),
        "the capture must hold this crate's and kling_api's events"
    );
    for secret in &secrets {
        for form in forms(secret) {
            for file in &files {
                let bytes = std::fs::read(file).unwrap();
                assert!(!find(&bytes, &form), "{form:?} found in {}", file.display());
            }
            assert!(!find(&logs, &form), "{form:?} found in the tracing output");
        }
    }
}
