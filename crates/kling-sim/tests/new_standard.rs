//! The new-standard API of 2026 (reference section 8): creates by model version in the path,
//! `GET /tasks` by ids, the cursor listing `POST /tasks`, API keys only, and callbacks in the
//! new task object shape.

mod common;

use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post as route_post;
use axum::Router;
use common::{fast_config, now, start, token, Answer, Sim};
use kling_sim::{SecretText, SimConfig};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const API_KEY: &str = "sk-sim-new-standard-test";
const SECRET: &str = "whsec_a2xpbmctc2ltLXRlc3Qtd2ViaG9vay1zZWNyZXQtMzI=";

fn config() -> SimConfig {
    let mut cfg = fast_config();
    cfg.api_keys.push(SecretText::new(API_KEY));
    cfg
}

fn key() -> String {
    format!("Bearer {API_KEY}")
}

async fn post(s: &Sim, path: &str, body: &Value) -> Answer {
    s.post_as(path, body, Some(&key())).await
}

async fn get(s: &Sim, path: &str) -> Answer {
    s.get_as(path, Some(&key())).await
}

/// Creates a task and returns its id.
async fn create(s: &Sim, path: &str, body: Value) -> String {
    let a = post(s, path, &body).await;
    assert_eq!((a.status, a.code()), (200, 0), "create failed: {}", a.body);
    a.data()["id"].as_str().unwrap().to_owned()
}

/// Polls `GET /tasks?task_ids=<id>` until the task is final; returns it and the statuses seen.
async fn wait_final(s: &Sim, id: &str) -> (Value, Vec<String>) {
    let mut seen: Vec<String> = Vec::new();
    // The bound only stops a broken simulator from hanging the run.
    for _ in 0..1000 {
        let a = get(s, &format!("/tasks?task_ids={id}")).await;
        assert_eq!(a.code(), 0, "query failed: {}", a.body);
        let task = a.data()[0].clone();
        let status = task["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == "succeeded" || status == "failed" {
            return (task, seen);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("task {id} never finished; saw {seen:?}");
}

#[tokio::test]
async fn new_standard_create_runs_to_succeeded_with_outputs_and_billing() {
    let s = start(config()).await;
    let a = post(
        &s,
        "/text-to-video/kling-3.0",
        &json!({"prompt": "a red fox", "settings": {"duration": 8, "resolution": "1080p"},
                "options": {"external_task_id": "ns-1", "watermark_info": {"enabled": true}}}),
    )
    .await;
    assert_eq!((a.status, a.code()), (200, 0), "{}", a.body);
    let data = a.data();
    let id = data["id"].as_str().unwrap();
    assert_eq!(id.len(), 18);
    assert_eq!(data["status"], "submitted");
    assert_eq!(data["external_id"], "ns-1");
    assert!(data["create_time"].as_i64().unwrap() > 0);
    assert_eq!(data["create_time"], data["update_time"]);
    assert!(data.get("task_id").is_none(), "legacy field in {data}");

    let (task, seen) = wait_final(&s, id).await;
    assert_eq!(seen.last().map(String::as_str), Some("succeeded"));
    assert_eq!(task["id"], id);
    assert_eq!(task["external_id"], "ns-1");
    assert_eq!(task["message"], "");
    let outputs = task["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1);
    let video = &outputs[0];
    assert_eq!(video["type"], "video");
    assert_eq!(video["id"].as_str().unwrap().len(), 18);
    assert!(video["url"]
        .as_str()
        .unwrap()
        .starts_with(kling_sim::CDN_BASE));
    assert!(video["watermark_url"]
        .as_str()
        .unwrap()
        .starts_with(kling_sim::CDN_BASE));
    assert_eq!(video["duration"], "8.1");
    // 8 s at the default 0.2 units a second, from the video pack.
    assert_eq!(
        task["billing"],
        json!([{"charge_type": "unit", "amount": "1.6", "package_type": "video"}])
    );
    assert_eq!(s.sim.stats().route("POST /text-to-video/kling-3.0"), 1);
    // The same object as the simulator holds; legacy queries do not see the task.
    assert_eq!(s.sim.handle().task(id).unwrap(), task);
    let legacy = s.get(&format!("/v1/videos/text2video/{id}")).await;
    assert_eq!(legacy.status, 404, "{}", legacy.body);
}

#[tokio::test]
async fn unfinished_tasks_have_no_outputs_or_billing() {
    let mut cfg = config();
    cfg.lifecycle.to_processing_ms = 60_000;
    let s = start(cfg).await;
    let id = create(
        &s,
        "/image-to-video/kling-3.0-turbo",
        json!({"prompt": "p"}),
    )
    .await;
    let a = get(&s, &format!("/tasks?task_ids={id}")).await;
    let task = &a.data()[0];
    assert_eq!(task["status"], "submitted");
    assert_eq!(task["outputs"], json!([]));
    assert_eq!(task["billing"], json!([]));
    assert!(task.get("external_id").is_none());
}

#[tokio::test]
async fn tasks_are_found_by_external_ids_in_the_order_asked() {
    let s = start(config()).await;
    let a = create(
        &s,
        "/text-to-video/kling-2.6",
        json!({"prompt": "a", "options": {"external_task_id": "ext-a"}}),
    )
    .await;
    let b = create(
        &s,
        "/text-to-video/kling-3.0-turbo",
        json!({"prompt": "b", "options": {"external_task_id": "ext-b"}}),
    )
    .await;
    let got = get(&s, "/tasks?external_task_ids=ext-b,nope,ext-a").await;
    assert_eq!(got.code(), 0, "{}", got.body);
    let ids: Vec<&str> = got
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [b.as_str(), a.as_str()]);
    let got = get(&s, &format!("/tasks?task_ids={a},{b}")).await;
    assert_eq!(got.data().as_array().unwrap().len(), 2);
    // 3.0 Turbo has its published rate: 0.8 units a second at 720p.
    let (turbo, _) = wait_final(&s, &b).await;
    assert_eq!(turbo["billing"][0]["amount"], "4");
    let none = get(&s, "/tasks?task_ids=123456789012345678").await;
    assert_eq!((none.code(), none.data()), (0, &json!([])));

    // external_task_id is unique per account, across both APIs.
    let dup = post(
        &s,
        "/text-to-video/kling-3.0",
        &json!({"prompt": "c", "options": {"external_task_id": "ext-a"}}),
    )
    .await;
    assert_eq!((dup.status, dup.code()), (400, 1201), "{}", dup.body);
    let dup = s
        .post(
            "/v1/videos/text2video",
            &json!({"prompt": "c", "external_task_id": "ext-b"}),
        )
        .await;
    assert_eq!((dup.status, dup.code()), (400, 1201), "{}", dup.body);
}

#[tokio::test]
async fn task_query_takes_exactly_one_id_list() {
    let s = start(config()).await;
    let both = get(&s, "/tasks?task_ids=1&external_task_ids=e").await;
    assert_eq!((both.status, both.code()), (400, 1201), "{}", both.body);
    assert!(both.message().contains("task_ids"), "{}", both.body);
    let neither = get(&s, "/tasks").await;
    assert_eq!((neither.status, neither.code()), (400, 1201));
    let empty = get(&s, "/tasks?task_ids=,,").await;
    assert_eq!((empty.status, empty.code()), (400, 1201));
}

/// Ids of a listing page, and its `next_cursor` and `has_more`.
fn page(a: &Answer) -> (Vec<String>, String, bool) {
    assert_eq!(a.code(), 0, "{}", a.body);
    let d = a.data();
    let ids: Vec<String> = d["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(d["count"].as_u64().unwrap() as usize, ids.len());
    (
        ids,
        d["next_cursor"].as_str().unwrap().to_owned(),
        d["has_more"].as_bool().unwrap(),
    )
}

#[tokio::test]
async fn listing_pages_by_cursor_newest_first_and_filters() {
    let mut cfg = config();
    cfg.content.fail_words = vec!["doomed".into()];
    let s = start(cfg).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let prompt = if i == 1 { "doomed" } else { "fine" };
        made.push(create(&s, "/text-to-video/kling-3.0", json!({ "prompt": prompt })).await);
    }
    // A legacy image task is listed too, in the new shape.
    let image = s
        .post(
            "/v1/images/generations",
            &json!({"prompt": "an image", "model_name": "kling-v1"}),
        )
        .await;
    assert_eq!(image.code(), 0, "{}", image.body);
    let image_id = image.data()["task_id"].as_str().unwrap().to_owned();
    for id in &made {
        wait_final(&s, id).await;
    }

    let first = post(&s, "/tasks", &json!({"limit": 4})).await;
    let (ids, cursor, more) = page(&first);
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(ids[0], image_id);
    assert_eq!(ids[1..], newest_first[..3]);
    assert!(more);
    assert!(!cursor.is_empty());
    // The cursor overrides the times, which would otherwise exclude everything.
    let second = post(
        &s,
        "/tasks",
        &json!({"limit": 4, "cursor": cursor, "start_time": 1, "end_time": 2}),
    )
    .await;
    let (ids, cursor, more) = page(&second);
    assert_eq!(ids, newest_first[3..]);
    assert!(!more);
    assert_eq!(cursor, "");

    let failed = post(
        &s,
        "/tasks",
        &json!({"filters": [{"key": "status", "values": ["failed"]}]}),
    )
    .await;
    let (ids, _, _) = page(&failed);
    assert_eq!(ids, [made[1].clone()]);
    assert_eq!(failed.data()["result"][0]["billing"], json!([]));
    let images = post(
        &s,
        "/tasks",
        &json!({"filters": [{"key": "product_type", "values": ["image"]}]}),
    )
    .await;
    let (ids, _, _) = page(&images);
    assert_eq!(ids, [image_id]);
    // Keys are AND-ed: no image failed.
    let none = post(
        &s,
        "/tasks",
        &json!({"filters": [{"key": "product_type", "values": ["image"]},
                            {"key": "status", "values": ["failed"]}]}),
    )
    .await;
    assert_eq!(page(&none).0.len(), 0);

    // Times as strings (the 2.6 page's typing) and a window that excludes everything.
    let later = (now() + 3600) * 1000;
    let empty = post(
        &s,
        "/tasks",
        &json!({"start_time": later.to_string(), "end_time": (later + 1).to_string()}),
    )
    .await;
    assert_eq!(page(&empty), (vec![], String::new(), false));
    // An empty body lists with every default.
    let all = s
        .http
        .post(s.url("/tasks"))
        .header("Authorization", key())
        .send()
        .await
        .unwrap();
    let all: Value = all.json().await.unwrap();
    assert_eq!(all["data"]["count"], 6);

    for bad in [
        json!({"limit": 501}),
        json!({"limit": 0}),
        json!({"cursor": "garbage"}),
        json!({"start_time": 10, "end_time": 5}),
        json!({"filters": [{"key": "model", "values": ["x"]}]}),
    ] {
        let a = post(&s, "/tasks", &bad).await;
        assert_eq!((a.status, a.code()), (400, 1201), "{bad}: {}", a.body);
    }
}

#[tokio::test]
async fn new_standard_create_validation_errors_name_the_field() {
    let s = start(config()).await;
    let cases = [
        ("/text-to-video/kling-3.0", json!({}), "prompt"),
        (
            "/text-to-video/kling-3.0",
            json!({"prompt": "p", "settings": {"duration": 16}}),
            "settings.duration",
        ),
        (
            "/text-to-video/kling-2.6",
            json!({"prompt": "p", "settings": {"duration": 7}}),
            "settings.duration",
        ),
        (
            "/text-to-video/kling-3.0",
            json!({"prompt": "p", "settings": {"duration": "five"}}),
            "settings.duration",
        ),
        (
            "/text-to-video/kling-2.6",
            json!({"prompt": "x".repeat(2501)}),
            "prompt",
        ),
        (
            "/text-to-video/kling-3.0",
            json!({"prompt": "p", "settings": {"aspect_ratio": "4:3"}}),
            "settings.aspect_ratio",
        ),
        (
            "/text-to-video/kling-3.0",
            json!({"prompt": "p", "options": {"callback_url": "ftp://x"}}),
            "options.callback_url",
        ),
    ];
    for (path, body, field) in cases {
        let a = post(&s, path, &body).await;
        assert_eq!(
            (a.status, a.code()),
            (400, 1201),
            "{path} {body}: {}",
            a.body
        );
        assert!(a.message().contains(field), "{field}: {}", a.message());
    }
    assert_eq!(s.sim.stats().creates_accepted, 0);

    let unknown_model = post(&s, "/text-to-video/kling-9.9", &json!({"prompt": "p"})).await;
    assert_eq!((unknown_model.status, unknown_model.code()), (404, 1203));
    let unknown_capability = post(&s, "/text-to-song/kling-3.0", &json!({"prompt": "p"})).await;
    assert_eq!(
        (unknown_capability.status, unknown_capability.code()),
        (404, 1202)
    );
}

#[tokio::test]
async fn new_standard_creates_obey_content_policy_and_concurrency() {
    let mut cfg = config();
    cfg.content.blocked_words = vec!["forbidden".into()];
    cfg.lifecycle.to_processing_ms = 60_000;
    let s = start(cfg).await;
    let blocked = post(
        &s,
        "/text-to-video/kling-3.0",
        &json!({"prompt": "FORBIDDEN"}),
    )
    .await;
    assert_eq!((blocked.status, blocked.code()), (400, 1301));
    let capacity = s
        .sim
        .handle()
        .config()
        .concurrency
        .capacity(kling_sim::PackType::Video);
    for _ in 0..capacity {
        create(&s, "/text-to-video/kling-3.0", json!({"prompt": "p"})).await;
    }
    let over = post(&s, "/text-to-video/kling-3.0", &json!({"prompt": "p"})).await;
    assert_eq!((over.status, over.code()), (429, 1303), "{}", over.body);
}

#[tokio::test]
async fn new_standard_routes_refuse_jwts() {
    let s = start(config()).await;
    let jwt = format!("Bearer {}", token());
    let create = s
        .post_as(
            "/text-to-video/kling-3.0",
            &json!({"prompt": "p"}),
            Some(&jwt),
        )
        .await;
    assert_eq!(
        (create.status, create.code()),
        (401, 1002),
        "{}",
        create.body
    );
    let query = s.get_as("/tasks?task_ids=1", Some(&jwt)).await;
    assert_eq!((query.status, query.code()), (401, 1002));
    let list = s.post_as("/tasks", &json!({}), Some(&jwt)).await;
    assert_eq!((list.status, list.code()), (401, 1002));
    let missing = s.post_as("/tasks", &json!({}), None).await;
    assert_eq!((missing.status, missing.code()), (401, 1001));
    assert_eq!(s.sim.stats().creates_accepted, 0);
    // The same JWT still works on the legacy API.
    assert_eq!(s.get("/v1/videos/text2video").await.code(), 0);
}

struct Received {
    headers: HeaderMap,
    body: Bytes,
}

async fn receiver() -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hook",
        route_post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Received { headers, body });
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

#[tokio::test]
async fn new_standard_callbacks_carry_the_new_task_object_signed() {
    let mut cfg = config();
    cfg.webhook_secret = Some(SecretText::new(SECRET));
    let s = start(cfg).await;
    let (url, mut rx) = receiver().await;
    let id = create(
        &s,
        "/text-to-video/kling-3.0",
        json!({"prompt": "p", "options": {"callback_url": url, "external_task_id": "cb-new"}}),
    )
    .await;
    let mut statuses = Vec::new();
    let mut last = Value::Null;
    while statuses.last().map(String::as_str) != Some("succeeded") {
        // The bound only keeps a broken delivery from hanging the run.
        let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
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
        let body: Value = serde_json::from_slice(&got.body).unwrap();
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "billing",
                "create_time",
                "external_id",
                "id",
                "message",
                "outputs",
                "status",
                "update_time"
            ]
        );
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["external_id"], "cb-new");
        statuses.push(body["status"].as_str().unwrap().to_owned());
        last = body;
    }
    assert_eq!(statuses, ["processing", "succeeded"]);
    assert_eq!(last["outputs"][0]["type"], "video");
    assert_eq!(last["billing"][0]["charge_type"], "unit");
}
