//! Status callbacks delivered to a small receiver on 127.0.0.1: the bare task object, in
//! status order, with Standard Webhooks signatures that verify when a secret is configured and
//! no signature headers when none is.

mod common;

use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use common::{fast_config, now, start};
use kling_sim::SecretText;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const SECRET: &str = "whsec_a2xpbmctc2ltLXRlc3Qtd2ViaG9vay1zZWNyZXQtMzI=";

struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// Starts a receiver that answers `status` and forwards every callback to the channel.
async fn receiver(status: u16) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Received { headers, body });
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    // The bound only keeps a broken delivery from hanging the run.
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn signed_callbacks_arrive_in_order_and_verify() {
    let mut cfg = fast_config();
    cfg.webhook_secret = Some(SecretText::new(SECRET));
    cfg.callbacks.on_submitted = true;
    let s = start(cfg).await;
    let (url, mut rx) = receiver(200).await;
    let id = s
        .create_t2v(json!({"prompt": "x", "callback_url": url, "external_task_id": "cb-1"}))
        .await;

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let got = next(&mut rx).await;
        assert_eq!(
            got.headers["content-type"],
            "application/json; charset=utf-8"
        );
        let header = |name: &str| got.headers[name].to_str().unwrap().to_owned();
        kling_api::webhook::verify(
            SECRET,
            &header("webhook-id"),
            &header("webhook-timestamp"),
            &header("webhook-signature"),
            &got.body,
            now(),
            300,
        )
        .expect("signature verifies");
        // A flipped body byte must not verify.
        let mut forged = got.body.to_vec();
        forged[0] ^= 1;
        assert!(kling_api::webhook::verify(
            SECRET,
            &header("webhook-id"),
            &header("webhook-timestamp"),
            &header("webhook-signature"),
            &forged,
            now(),
            300
        )
        .is_err());

        let task: Value = serde_json::from_slice(&got.body).unwrap();
        assert!(
            task.get("code").is_none() && task.get("data").is_none(),
            "bare task object"
        );
        assert_eq!(task["task_id"], id.as_str());
        assert_eq!(task["task_info"]["external_task_id"], "cb-1");
        statuses.push(task["task_status"].as_str().unwrap().to_owned());
        if statuses.len() == 3 {
            assert_eq!(task["final_unit_deduction"], "1");
            assert!(task["task_result"]["videos"][0]["url"].is_string());
        }
    }
    assert_eq!(statuses, ["submitted", "processing", "succeed"]);
}

#[tokio::test]
async fn without_a_secret_callbacks_carry_no_signature_headers() {
    let s = start(fast_config()).await;
    let (url, mut rx) = receiver(200).await;
    s.create_t2v(json!({"prompt": "x", "callback_url": url}))
        .await;
    let first = next(&mut rx).await;
    let second = next(&mut rx).await;
    for got in [&first, &second] {
        assert!(got.headers.get("webhook-signature").is_none());
        assert!(got.headers.get("webhook-id").is_none());
    }
    let status =
        |r: &Received| serde_json::from_slice::<Value>(&r.body).unwrap()["task_status"].clone();
    assert_eq!(status(&first), "processing");
    assert_eq!(status(&second), "succeed");
}

#[tokio::test]
async fn a_refusing_receiver_is_retried_then_counted_as_failed() {
    let mut cfg = fast_config();
    cfg.callbacks.attempts = 2;
    cfg.callbacks.retry_delay_ms = 10;
    cfg.callbacks.on_processing = false;
    let s = start(cfg).await;
    let (url, mut rx) = receiver(500).await;
    let id = s
        .create_t2v(json!({"prompt": "x", "callback_url": url}))
        .await;
    let first = next(&mut rx).await;
    let second = next(&mut rx).await;
    assert_eq!(first.body, second.body, "a retry resends the same body");
    // The task itself is unaffected by the failed delivery.
    let (task, _) = s.wait_final("videos/text2video", &id).await;
    assert_eq!(task["task_status"], "succeed");
    for _ in 0..500 {
        if s.sim.stats().callbacks_failed == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the failed callback was never counted");
}
