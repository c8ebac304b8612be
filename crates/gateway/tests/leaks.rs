//! Secrets and prompts never leave the gateway: known secrets (the organisation's secret key,
//! actor secret keys, JWTs, the webhook secret, the admin token), a prompt and a base64 image
//! are pushed through every path (success, each refusal, an upstream error, a timeout, a
//! callback, a path the gateway does not know with a secret-looking segment, a secret-looking
//! query value on a known route and on an unknown path, a refused callback token, a metrics
//! scrape), and then neither they nor their base64 or URL-encoded forms
//! may appear anywhere under the ledger directories, in the keys directory outside the actor
//! store, or in the captured tracing output (at TRACE level, every crate).

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::*;
use kling_api::auth::sign_jwt;
use serde_json::json;

#[derive(Clone)]
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

fn capture() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
    .clone()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value and the encodings under which it could slip out.
fn forms(secret: &str) -> Vec<String> {
    vec![
        secret.to_owned(),
        STANDARD.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        url_encode(secret),
        secret.replace(' ', "+"),
    ]
}

fn scan(label: &str, haystack: &[u8], needles: &[(String, String)]) {
    let text = String::from_utf8_lossy(haystack);
    for (name, needle) in needles {
        assert!(!text.contains(needle.as_str()), "{name} found in {label}");
    }
}

fn scan_tree(dir: &Path, skip: &[&str], needles: &[(String, String)]) -> usize {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        if path.is_dir() {
            files += scan_tree(&path, skip, needles);
        } else {
            scan(
                &path.display().to_string(),
                &std::fs::read(&path).unwrap(),
                needles,
            );
            files += 1;
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_prompt_reaches_ledger_keys_or_logs() {
    let logs = capture();
    let webhook_secret = format!(
        "whsec_{}",
        STANDARD.encode(b"webhook secret bytes for leaks!!")
    );
    let admin_token = "admin-token-leak-check-5f2c9b";
    let path_secret = "leakcheck-path-segment-secret-2e8d41";
    let query_secret = "leakcheck-query-value-secret-6a1f93";
    let callback_token = "leakcheck-callback-token-b7c03a.0123456789abcdef0123456789abcdef";
    let prompt = "leakcheck prompt: a purple giraffe riding a unicycle through Zurich 7f3a9";
    let mut image_bytes = vec![0x89, b'P', b'N', b'G'];
    image_bytes.extend((0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let image_b64 = STANDARD.encode(&image_bytes);

    let mut sim_cfg = sim_config();
    sim_cfg.webhook_secret = Some(kling_sim::SecretText::new(webhook_secret.clone()));
    let (ws, at) = (webhook_secret.clone(), admin_token.to_owned());
    let mut env = setup(sim_cfg, move |cfg| {
        cfg.callbacks.webhook_secret = Some(kling_api::SecretString::new(ws));
        cfg.admin_token = Some(kling_api::SecretString::new(at));
    })
    .await;
    let carol =
        kling_audit_gateway::actors::add(&env.keys_dir().join("actors.json"), "carol").unwrap();
    let mut jwts = Vec::new();

    // A receiver for relayed callbacks.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let recv_addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(0usize));
    let got2 = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let got = got2.clone();
            async move {
                *got.lock().unwrap() += 1;
                "ok"
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Success with a callback, then polls to the end.
    let token = jwt(&env.alice);
    jwts.push(token.clone());
    let created = env
        .http
        .post(env.url("/v1/videos/text2video"))
        .bearer_auth(&token)
        .json(&json!({"prompt": prompt, "negative_prompt": prompt,
                      "callback_url": format!("http://{recv_addr}/hook")}))
        .send()
        .await
        .unwrap();
    let (status, _, created) = split(created).await;
    assert_eq!(status, 200, "{created}");
    let task_id = created["data"]["task_id"].as_str().unwrap().to_owned();
    env.poll_until_final(&env.alice, "/v1/videos/text2video", &task_id)
        .await;
    // Image to video with the base64 image.
    let (status, _, body) = env
        .post(
            &env.alice,
            "/v1/videos/image2video",
            &json!({"prompt": prompt, "image": image_b64}),
        )
        .await;
    assert!(status == 200 || status == 400, "{body}");
    // Refusals: missing, forged, expired, disabled, another actor's task, content policy.
    let _ = env
        .http
        .post(env.url("/v1/videos/text2video"))
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .unwrap();
    let forged = sign_jwt(&env.alice.access_key, "wrong-secret-leak", now(), 1800).unwrap();
    let expired = sign_jwt(
        &env.alice.access_key,
        env.alice.secret_key.expose(),
        now() - 5000,
        1800,
    )
    .unwrap();
    for bad in [&forged, &expired] {
        jwts.push(bad.clone());
        let resp = env
            .http
            .post(env.url("/v1/videos/text2video"))
            .bearer_auth(bad)
            .json(&json!({"prompt": prompt}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
    kling_audit_gateway::actors::disable(&env.keys_dir().join("actors.json"), "bob").unwrap();
    let mut status = 0;
    for _ in 0..100 {
        status = env.get(&env.bob, "/v1/videos/text2video?pageNum=1").await.0;
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 401, "bob disabled");
    let (status, _, _) = env
        .post(
            &env.bob,
            "/v1/videos/text2video",
            &json!({"prompt": prompt}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _, _) = env
        .get(&carol, &format!("/v1/videos/text2video/{task_id}"))
        .await;
    assert_eq!(status, 404);
    let (status, _, body) = env
        .post(
            &env.alice,
            "/v1/videos/text2video",
            &json!({"prompt": format!("{prompt} sim-blocked")}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(1301)));
    // Body refusals: a repeated key (once with the prompt as the key), a body cut short.
    for body in [
        format!(r#"{{"prompt":"x","prompt":"{prompt}"}}"#),
        format!(r#"{{"prompt":"x","o":{{"{prompt}":1,"{prompt}":2}}}}"#),
    ] {
        let resp = env
            .http
            .post(env.url("/v1/videos/text2video"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
    }
    {
        use tokio::io::AsyncWriteExt;
        let addr = env.gw.as_ref().unwrap().addr;
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/videos/text2video HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer \
             {token}\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n\
             {{\"prompt\":\"{prompt}"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
    }
    // A path the gateway does not know, with a secret-looking segment: forwarded for a caller,
    // refused without credentials. Callback tokens that look secret, posted and sent with a
    // method the endpoint does not serve.
    let secret_path = format!("/v1/unlisted/{path_secret}/x");
    let (status, _, _) = env.get(&env.alice, &secret_path).await;
    assert!(status >= 400, "the simulator does not know the path");
    let resp = env.http.get(env.url(&secret_path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // A secret-looking query value, which records keep by name only (or, for a paging
    // parameter given twice, not at all): on a known route, on the unknown path, and refused
    // without credentials.
    for target in [
        format!("/v1/videos/text2video?pageNum=1&signature={query_secret}"),
        format!("/v1/videos/text2video?pageNum={query_secret}&pageNum=1"),
        format!("{secret_path}?token={query_secret}"),
    ] {
        let (status, headers, _) = env.get(&env.alice, &target).await;
        assert_ne!(status, 401, "{target}");
        assert!(headers.contains_key("x-kling-audit-record"), "{target}");
        let resp = env.http.get(env.url(&target)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
    let callback_url = env.url(&format!("/_gateway/callback/{callback_token}"));
    let resp = env
        .http
        .post(&callback_url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let resp = env.http.get(&callback_url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    // Metrics with the admin token.
    let metrics = env
        .http
        .get(env.url("/metrics"))
        .bearer_auth(admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    // Wait for the callbacks to be relayed.
    for _ in 0..200 {
        if *got.lock().unwrap() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(*got.lock().unwrap() >= 2, "callbacks relayed");
    env.stop().await;
    server.abort();

    // A timeout: a second gateway in front of a simulator that answers too late.
    let mut slow_cfg = sim_config();
    slow_cfg.faults.latency_rate = 1.0;
    slow_cfg.faults.latency_ms = 1500;
    let mut slow = setup(slow_cfg, |cfg| {
        cfg.upstream.timeout = Duration::from_millis(200);
    })
    .await;
    let token = jwt(&slow.alice);
    jwts.push(token.clone());
    let resp = slow
        .http
        .post(slow.url("/v1/videos/text2video"))
        .bearer_auth(&token)
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = split(resp).await;
    assert_eq!((status, body["code"].as_i64()), (504, Some(5002)));
    slow.stop().await;

    let mut needles = Vec::new();
    let mut add = |name: &str, value: &str| {
        for f in forms(value) {
            needles.push((name.to_owned(), f));
        }
    };
    add("org secret key", ORG_SK);
    add("webhook secret", &webhook_secret);
    add("admin token", admin_token);
    add("path segment", path_secret);
    add("query value", query_secret);
    add("callback token", callback_token);
    add("prompt", prompt);
    add("base64 image", &image_b64);
    add("base64 image chunk", &image_b64[1000..1064]);
    for (i, j) in jwts.iter().enumerate() {
        add(&format!("jwt {i}"), j);
    }
    let mut actor_secrets = Vec::new();
    for a in [&env.alice, &env.bob, &carol, &slow.alice, &slow.bob] {
        for f in forms(a.secret_key.expose()) {
            actor_secrets.push(("actor secret key".to_owned(), f));
        }
    }
    let everything: Vec<(String, String)> = needles
        .iter()
        .cloned()
        .chain(actor_secrets.iter().cloned())
        .collect();

    // The ledger directories: nothing at all.
    let n = scan_tree(&env.ledger_dir, &[], &everything)
        + scan_tree(&slow.ledger_dir, &[], &everything);
    assert!(n >= 2, "scanned {n} ledger files");
    // The keys directories: the actor store must hold actor secrets, nothing else may.
    for keys in [env.keys_dir(), slow.keys_dir()] {
        scan_tree(&keys, &["actors.json"], &everything);
        scan(
            "actors.json",
            &std::fs::read(keys.join("actors.json")).unwrap(),
            &needles,
        );
    }
    // The logs, which must have been written (the capture works).
    let logs = logs.lock().unwrap().clone();
    assert!(String::from_utf8_lossy(&logs).contains("request done"));
    scan("tracing output", &logs, &everything);

    // And the records do describe what happened, so the scan looked at real content.
    let records = records(&env.ledger_dir);
    let kinds: std::collections::BTreeSet<&str> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    for k in [
        "gateway.request",
        "gateway.response",
        "gateway.denied",
        "task.status",
        "callback.received",
        "callback.relay",
        "callback.rejected",
    ] {
        assert!(kinds.contains(k), "{k} in {kinds:?}");
    }
    let i2v = records
        .iter()
        .find(|r| r["type"] == "gateway.request" && r["details"]["family"] == "image-to-video")
        .unwrap();
    assert_eq!(i2v["details"]["media"][0]["bytes"], image_bytes.len());
    // The secret-looking path was recorded, by its commitment.
    let unknown = records
        .iter()
        .filter(|r| r["details"]["route"] == "other" && r["details"]["path_hmac"].is_string())
        .count();
    assert!(unknown >= 2, "{unknown} records of the unknown path");
    // The secret-looking query values were recorded, by the commitment of their query.
    let committed = records
        .iter()
        .filter(|r| r["type"] == "gateway.request" && r["details"]["query_hmac"].is_string())
        .count();
    assert_eq!(committed, 3, "records committing a query");
}
