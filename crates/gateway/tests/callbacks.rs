//! Which callbacks may move a task's recorded status and reach the caller: the gateway in
//! front of a mock upstream that hands out task ids and keeps the callback URLs it was given,
//! so a test can post to the gateway's callback endpoint as anyone who learnt the token could.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

/// What the mock upstream saw: the callback URL of every create, in order.
#[derive(Clone, Default)]
struct Upstream {
    callback_urls: Arc<Mutex<Vec<String>>>,
}

/// Answers every create with a fresh task id (`1001`, `1002`, ...) in status `submitted`.
async fn create(State(u): State<Upstream>, body: Bytes) -> axum::Json<Value> {
    let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut urls = u.callback_urls.lock().unwrap();
    urls.push(sent["callback_url"].as_str().unwrap_or_default().to_owned());
    let task_id = (1000 + urls.len()).to_string();
    axum::Json(json!({"code": 0, "message": "SUCCEED", "request_id": "r",
                      "data": {"task_id": task_id, "task_status": "submitted",
                               "created_at": 1, "updated_at": 1}}))
}

/// The app's webhook endpoint: keeps every body it is given.
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn receive(State(r): State<Receiver>, body: Bytes) -> StatusCode {
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.bodies.lock().unwrap().push(v);
    StatusCode::OK
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn secret() -> String {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(b"a webhook secret of 32 bytes....");
    format!("whsec_{key}")
}

struct Bench {
    env: Env,
    upstream: Upstream,
    receiver: Receiver,
    hook: String,
}

/// A gateway (with `secret` as webhook secret, if any) before the mock upstream, and a
/// receiver for relayed callbacks.
async fn bench(secret: Option<String>) -> Bench {
    bench_with(secret, |_| {}).await
}

/// [`bench`], with the gateway's configuration changed by `tweak`.
async fn bench_with(
    secret: Option<String>,
    tweak: impl FnOnce(&mut kling_audit_gateway::GatewayConfig),
) -> Bench {
    let upstream = Upstream::default();
    let upstream_url = serve(
        axum::Router::new()
            .route("/v1/videos/text2video", axum::routing::post(create))
            .with_state(upstream.clone()),
    )
    .await;
    let receiver = Receiver::default();
    let hook = serve(
        axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone()),
    )
    .await;
    let env = setup(sim_config(), move |cfg| {
        cfg.upstream.url = reqwest::Url::parse(&upstream_url).unwrap();
        cfg.callbacks.webhook_secret = secret.map(kling_api::SecretString::new);
        tweak(cfg);
    })
    .await;
    Bench {
        env,
        upstream,
        receiver,
        hook: format!("{hook}/hook"),
    }
}

impl Bench {
    /// Creates a task for alice with a callback; returns its id and the gateway's callback URL
    /// the upstream was given for it.
    async fn create(&self) -> (String, String) {
        let (status, _, created) = self
            .env
            .post(
                &self.env.alice,
                "/v1/videos/text2video",
                &json!({"prompt": "p", "callback_url": self.hook}),
            )
            .await;
        assert_eq!(status, 200, "{created}");
        let task_id = created["data"]["task_id"].as_str().unwrap().to_owned();
        let url = self.upstream.callback_urls.lock().unwrap().last().cloned();
        let url = url.unwrap();
        assert!(url.contains("/_gateway/callback/"), "{url}");
        (task_id, url)
    }

    /// Posts a callback body to `url` with the given extra headers; returns the answer.
    async fn callback(&self, url: &str, body: &Value, headers: &[(&str, String)]) -> (u16, Value) {
        let mut request = self
            .env
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let (status, _, answer) = split(request.send().await.unwrap()).await;
        (status, answer)
    }
}

impl Bench {
    /// Asserts that no callback was received, moved a task's status or was relayed.
    fn assert_callback_had_no_effect(&self, records: &[Value]) {
        assert!(of_type(records, "callback.received").is_empty());
        assert!(callback_statuses(records).is_empty());
        assert!(
            self.receiver.bodies.lock().unwrap().is_empty(),
            "nothing relayed"
        );
    }
}

fn callback_statuses(records: &[Value]) -> Vec<(String, String)> {
    of_type(records, "task.status")
        .into_iter()
        .filter(|r| r["details"]["source"] == "callback")
        .map(|r| {
            (
                r["details"]["task_id"].as_str().unwrap().to_owned(),
                r["details"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_callback_with_a_forged_signature_neither_moves_the_status_nor_is_relayed() {
    let mut b = bench(Some(secret())).await;
    let (task_id, url) = b.create().await;
    let body = json!({"task_id": task_id, "task_status": "succeed"});
    let forged = kling_api::webhook::sign(
        &format!(
            "whsec_{}",
            "bm90IHRoZSBnYXRld2F5J3Mgc2VjcmV0LCAzMiBieXRlcw=="
        ),
        "msg_1",
        now(),
        body.to_string().as_bytes(),
    )
    .unwrap();
    let headers = [
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", now().to_string()),
        ("webhook-signature", forged),
    ];
    let (status, answer) = b.callback(&url, &body, &headers).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["signature"], "invalid");
    assert_eq!(answer["signature_reason"], "mismatch");

    // The same callback signed with the right secret still goes through.
    let signed =
        kling_api::webhook::sign(&secret(), "msg_2", now(), body.to_string().as_bytes()).unwrap();
    let headers = [
        ("webhook-id", "msg_2".to_owned()),
        ("webhook-timestamp", now().to_string()),
        ("webhook-signature", signed),
    ];
    let (status, answer) = b.callback(&url, &body, &headers).await;
    assert_eq!(status, 200, "{answer}");

    b.env.stop().await;
    let records = records(&b.env.ledger_dir);
    let received = of_type(&records, "callback.received");
    assert_eq!(received.len(), 2);
    assert_eq!(received[0]["details"]["signature"], "invalid");
    assert_eq!(received[0]["details"]["signature_reason"], "mismatch");
    assert_eq!(received[0]["details"]["accepted"], false);
    assert_eq!(received[1]["details"]["signature"], "valid");
    assert_eq!(received[1]["details"]["accepted"], true);
    // Only the genuine callback moved the status and reached the app.
    let changes: Vec<_> = of_type(&records, "task.status")
        .into_iter()
        .filter(|r| r["details"]["source"] == "callback")
        .collect();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["details"]["response_seq"], seq(received[1]));
    let relays = of_type(&records, "callback.relay");
    assert!(relays
        .iter()
        .all(|r| r["details"]["received_seq"] == seq(received[1])));
    assert_eq!(b.receiver.bodies.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_unsigned_callback_is_refused_when_a_webhook_secret_is_configured() {
    let mut b = bench(Some(secret())).await;
    let (task_id, url) = b.create().await;
    let body = json!({"task_id": task_id, "task_status": "succeed"});
    let (status, answer) = b.callback(&url, &body, &[]).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["signature"], "absent");
    // A stale, otherwise well signed callback is refused as well.
    let old = now() - 3600;
    let signed =
        kling_api::webhook::sign(&secret(), "msg_1", old, body.to_string().as_bytes()).unwrap();
    let headers = [
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", old.to_string()),
        ("webhook-signature", signed),
    ];
    let (status, answer) = b.callback(&url, &body, &headers).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["signature_reason"], "stale-timestamp");

    b.env.stop().await;
    let records = records(&b.env.ledger_dir);
    let received = of_type(&records, "callback.received");
    assert_eq!(received.len(), 2, "both are kept as evidence");
    assert_eq!(received[0]["details"]["signature"], "absent");
    assert_eq!(received[0]["details"]["task_id"], task_id.as_str());
    assert!(received.iter().all(|r| r["details"]["accepted"] == false));
    assert!(callback_statuses(&records).is_empty());
    assert!(of_type(&records, "callback.relay").is_empty());
    assert!(b.receiver.bodies.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_callback_after_a_final_status_does_not_move_it() {
    let mut b = bench(None).await;
    let (task_id, url) = b.create().await;
    for status in ["succeed", "processing", "failed", "submitted"] {
        let body = json!({"task_id": task_id, "task_status": status});
        let (code, answer) = b.callback(&url, &body, &[]).await;
        assert_eq!(code, 200, "{answer}");
    }
    b.env.stop().await;
    let records = records(&b.env.ledger_dir);
    let received = of_type(&records, "callback.received");
    assert_eq!(received.len(), 4);
    assert!(received
        .iter()
        .all(|r| r["details"]["signature"] == "absent"));
    assert_eq!(
        callback_statuses(&records),
        [(task_id.clone(), "succeed".to_owned())]
    );
    assert!(received.iter().all(|r| r["details"]["accepted"] == true));
    // Without a secret nothing tells a forged callback from Kling's: all are relayed.
    assert_eq!(b.receiver.bodies.lock().unwrap().len(), 4);
}

/// Relays run on the threads that serve callers, which stop at shutdown; one still waiting
/// for the app's endpoint when the grace period ends is counted as abandoned, in the report
/// and in `gateway.shutdown`.
#[tokio::test]
async fn a_relay_cut_by_shutdown_is_counted_as_abandoned() {
    // An app endpoint that takes the request and never answers.
    let stalled = serve(axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            StatusCode::OK
        }),
    ))
    .await;
    let mut b = bench_with(None, |cfg| {
        cfg.callbacks.relay_timeout = std::time::Duration::from_secs(30);
        cfg.server.shutdown_grace = std::time::Duration::from_millis(300);
    })
    .await;
    b.hook = format!("{stalled}/hook");
    let (task_id, url) = b.create().await;
    let body = json!({"task_id": task_id, "task_status": "succeed"});
    let (code, _) = b.callback(&url, &body, &[]).await;
    assert_eq!(code, 200);
    let report = b.env.stop().await;
    assert_eq!(report.relays_abandoned, 1);
    let records = records(&b.env.ledger_dir);
    let shutdown = of_type(&records, "gateway.shutdown");
    assert_eq!(shutdown.len(), 1);
    assert_eq!(shutdown[0]["details"]["relays_abandoned"], 1);
}

#[tokio::test]
async fn a_callback_token_moves_only_the_task_of_the_create_it_was_issued_for() {
    let mut b = bench(None).await;
    let (first, first_url) = b.create().await;
    let (second, _) = b.create().await;
    let body = json!({"task_id": second, "task_status": "succeed"});
    let (code, _) = b.callback(&first_url, &body, &[]).await;
    assert_eq!(code, 200);
    let body = json!({"task_id": first, "task_status": "processing"});
    let (code, _) = b.callback(&first_url, &body, &[]).await;
    assert_eq!(code, 200);
    b.env.stop().await;
    let records = records(&b.env.ledger_dir);
    assert_eq!(of_type(&records, "callback.received").len(), 2);
    assert_eq!(
        callback_statuses(&records),
        [(first, "processing".to_owned())]
    );
}

#[tokio::test]
async fn a_callback_token_binds_its_create_and_a_final_status_across_a_restart() {
    let mut b = bench(None).await;
    let (first, first_url) = b.create().await;
    let (second, _) = b.create().await;
    let (code, _) = b
        .callback(
            &first_url,
            &json!({"task_id": first, "task_status": "failed"}),
            &[],
        )
        .await;
    assert_eq!(code, 200);
    b.env.stop().await;

    // The book is rebuilt from the ledger: which create made each task, and its last status.
    let upstream = b.env.sim.base_url();
    let (_, token) = first_url.rsplit_once('/').unwrap();
    let mut cfg = kling_audit_gateway::GatewayConfig::new(
        &b.env.ledger_dir,
        reqwest::Url::parse(&upstream).unwrap(),
        ORG_AK,
        kling_api::SecretString::new(ORG_SK),
    );
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    b.env.gw = Some(kling_audit_gateway::spawn(cfg).unwrap());
    let url = b.env.url(&format!("/_gateway/callback/{token}"));
    for (task, status) in [
        (&second, "succeed"),
        (&first, "succeed"),
        (&first, "processing"),
    ] {
        let (code, _) = b
            .callback(&url, &json!({"task_id": task, "task_status": status}), &[])
            .await;
        assert_eq!(code, 200);
    }
    b.env.stop().await;
    let records = records(&b.env.ledger_dir);
    assert_eq!(of_type(&records, "callback.received").len(), 4);
    assert_eq!(callback_statuses(&records), [(first, "failed".to_owned())]);
}

/// A callback refused for its token is answered naming the `callback.rejected` record written
/// for it, as every answer of the gateway names its record.
#[tokio::test]
async fn a_callback_refused_for_its_token_names_its_record() {
    let mut b = bench(None).await;
    let (_, url) = b.create().await;
    let (base, token) = url.rsplit_once('/').unwrap();
    // The same token with the last digit of its tag changed.
    let (body, last) = token.split_at(token.len() - 1);
    let forged = format!("{body}{}", if last == "0" { "1" } else { "0" });
    let resp = b
        .env
        .http
        .post(format!("{base}/{forged}"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let named = record_header(resp.headers());
    b.env.stop().await;
    let records = records(&b.env.ledger_dir);
    let rejected = of_type(&records, "callback.rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(seq(rejected[0]), named);
    assert_eq!(rejected[0]["details"]["reason"], "unknown-token");
    assert!(of_type(&records, "callback.received").is_empty());
}

/// A callback whose token verifies is answered naming its `callback.received` record, whether
/// it is accepted or refused for its signature.
#[tokio::test]
async fn a_callback_answer_names_its_callback_received_record() {
    let mut b = bench(Some(secret())).await;
    let (task_id, url) = b.create().await;
    let body = json!({"task_id": task_id, "task_status": "succeed"});
    let signed =
        kling_api::webhook::sign(&secret(), "msg_1", now(), body.to_string().as_bytes()).unwrap();
    let mut named = Vec::new();
    for headers in [
        vec![],
        vec![
            ("webhook-id", "msg_1".to_owned()),
            ("webhook-timestamp", now().to_string()),
            ("webhook-signature", signed),
        ],
    ] {
        let mut request = b.env.http.post(&url).body(body.to_string());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let resp = request.send().await.unwrap();
        named.push((resp.status().as_u16(), record_header(resp.headers())));
    }
    b.env.stop().await;
    let records = records(&b.env.ledger_dir);
    let received = of_type(&records, "callback.received");
    assert_eq!(received.len(), 2);
    assert_eq!(
        named,
        [(401, seq(received[0])), (200, seq(received[1]))],
        "unsigned, then signed"
    );
}

/// Kling delivers callbacks with POST alone. Any other method on the callback endpoint, with a
/// good token even, is refused with a Kling-style 405 and `Allow: POST`, recorded as
/// `callback.rejected` and named in the answer; it neither moves a status nor is relayed, and
/// nothing of the token enters the record.
#[tokio::test]
async fn other_methods_on_the_callback_endpoint_are_refused_with_a_recorded_405() {
    let mut b = bench(None).await;
    let (task_id, url) = b.create().await;
    let (_, token) = url.rsplit_once('/').unwrap();
    let mut named = Vec::new();
    for method in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "post"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = b
            .env
            .http
            .request(method.clone(), &url)
            .header("content-type", "application/json")
            .body(json!({"task_id": task_id, "task_status": "succeed"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{method}");
        assert_eq!(resp.headers()["allow"], "POST", "{method}");
        named.push((method.clone(), record_header(resp.headers())));
        let (_, headers, body) = split(resp).await;
        let request_id = headers["x-kling-audit-request-id"].to_str().unwrap();
        if method != reqwest::Method::HEAD {
            assert_eq!(body["code"], 1200, "{method}: {body}");
            assert_eq!(body["request_id"], request_id, "{method}: {body}");
            assert!(body["message"].as_str().unwrap().contains("POST"), "{body}");
        }
    }
    b.env.stop().await;
    let records = records(&b.env.ledger_dir);
    let rejected = of_type(&records, "callback.rejected");
    assert_eq!(rejected.len(), named.len(), "{rejected:?}");
    for (record, (method, seq_named)) in rejected.iter().zip(&named) {
        assert_eq!(seq(record), *seq_named, "{record}");
        assert_eq!(record["actor"], "unauthenticated", "{record}");
        let details = &record["details"];
        assert_eq!(details["reason"], "method-not-allowed", "{record}");
        assert_eq!(details["method"], method.as_str(), "{record}");
        assert_eq!(details["http_status"], 405, "{record}");
        assert!(!record.to_string().contains(token), "{record}");
    }
    b.assert_callback_had_no_effect(&records);
}

/// A callback whose body is over the gateway's limit is refused with 413 and recorded as
/// `callback.rejected` under the actor whose create issued the token, named in the answer; it
/// neither moves a status nor is relayed.
#[tokio::test]
async fn a_callback_too_large_to_read_is_refused_and_recorded() {
    let mut b = bench(None).await;
    let (task_id, url) = b.create().await;
    let padding = "x".repeat(1024 * 1024);
    let body = json!({"task_id": task_id, "task_status": "succeed", "padding": padding});
    let resp = b
        .env
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let named = record_header(resp.headers());
    b.env.stop().await;
    let records = records(&b.env.ledger_dir);
    let rejected = of_type(&records, "callback.rejected");
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(seq(rejected[0]), named);
    assert_eq!(rejected[0]["actor"], "alice");
    assert_eq!(rejected[0]["details"]["reason"], "body-too-large");
    assert_eq!(rejected[0]["details"]["http_status"], 413);
    b.assert_callback_had_no_effect(&records);
}

/// A callback of nearly 1 MiB (an external id and a list of outputs as long as the body allows)
/// once made its `callback.received` record too large: in fail-closed mode the callback was
/// answered 503 and lost. Its record keeps capped fields, and the final status is recorded.
#[tokio::test]
async fn a_callback_with_huge_fields_is_still_recorded() {
    let mut b = bench(None).await;
    let (task_id, url) = b.create().await;
    let videos: Vec<Value> = (0..20_000).map(|i| json!({"id": i})).collect();
    let body = json!({"task_id": task_id, "task_status": "succeed",
                      "task_info": {"external_task_id": "E".repeat(600_000)},
                      "task_result": {"videos": videos}});
    let (status, answer) = b.callback(&url, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    b.env.stop().await;
    let records = records(&b.env.ledger_dir);
    let received = of_type(&records, "callback.received");
    assert_eq!(received.len(), 1);
    let id = received[0]["details"]["external_task_id"].as_str().unwrap();
    assert_eq!(id.len(), 128);
    assert_eq!(
        callback_statuses(&records),
        [(task_id, "succeed".to_owned())]
    );
    let status = of_type(&records, "task.status");
    let last = status.last().unwrap();
    assert_eq!(last["details"]["outputs_count"], 20_000);
    assert_eq!(last["details"]["outputs"].as_array().unwrap().len(), 100);
}
