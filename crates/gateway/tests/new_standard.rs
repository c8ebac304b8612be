//! The new-standard API (kling-api.md section 8) through the gateway, with the simulator as
//! upstream: creates by model version in the path, `GET /tasks`, the cursor listing
//! `POST /tasks`, and the organisation's API key used upstream (these routes take no JWT).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use kling_api::SecretString;
use kling_audit_gateway::actors::NewActor;
use kling_sim::SecretText;
use serde_json::{json, Value};

const ORG_API_KEY: &str = "org-api-key-5f0e9c2a";
const PROMPT: &str = "a lighthouse keeper's secret plan";

async fn env() -> Env {
    let mut sim = sim_config();
    sim.api_keys.push(SecretText::new(ORG_API_KEY));
    setup(sim, |cfg| {
        if let Some(creds) = cfg.upstream.credentials.as_mut() {
            creds.api_key = Some(SecretString::new(ORG_API_KEY));
        }
    })
    .await
}

/// Creates a new-standard text-to-video task as `actor`; returns its id.
async fn create(env: &Env, actor: &NewActor, external_id: &str) -> String {
    let body = json!({
        "prompt": PROMPT,
        "settings": {"duration": 5, "resolution": "1080p"},
        "options": {"external_task_id": external_id},
    });
    let (status, _, created) = env.post(actor, "/text-to-video/kling-3.0", &body).await;
    assert_eq!(
        (status, created["code"].as_i64()),
        (200, Some(0)),
        "{created}"
    );
    created["data"]["id"].as_str().unwrap().to_owned()
}

/// Polls `GET /tasks?task_ids=<id>` through the gateway until the task is final.
async fn poll_until_final(env: &Env, actor: &NewActor, id: &str) -> Value {
    // The bound only stops a broken set-up from hanging the run.
    for _ in 0..400 {
        let (status, _, body) = env.get(actor, &format!("/tasks?task_ids={id}")).await;
        assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
        let task = body["data"][0].clone();
        if matches!(task["status"].as_str(), Some("succeeded" | "failed")) {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("task {id} never finished");
}

fn listed_ids(body: &Value) -> Vec<String> {
    body["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result in {body}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn new_standard_create_poll_and_listing_are_recorded_per_actor() {
    let mut env = env().await;
    let task_id = create(&env, &env.alice, "ns-alice-1").await;
    let bob_task = create(&env, &env.bob, "ns-bob-1").await;
    // The simulator takes API keys only here: the creates reached it with the org's key.
    assert_eq!(env.sim.stats().creates_accepted, 2);

    let done = poll_until_final(&env, &env.alice, &task_id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["outputs"][0]["type"], "video");

    // Each actor's cursor listing shows its own task only.
    let (status, _, bob_list) = env.post(&env.bob, "/tasks", &json!({"limit": 50})).await;
    assert_eq!(status, 200, "{bob_list}");
    assert_eq!(listed_ids(&bob_list), [bob_task.as_str()]);
    assert_eq!(bob_list["data"]["count"], 1);
    let (_, _, alice_list) = env.post(&env.alice, "/tasks", &json!({})).await;
    assert_eq!(listed_ids(&alice_list), [task_id.as_str()]);
    // Whatever the answer's code, bob never sees alice's task by naming it (the ignored test
    // below asks for more: 404/1203 without forwarding).
    for path in [
        format!("/tasks?task_ids={task_id}"),
        "/tasks?external_task_ids=ns-alice-1".to_owned(),
    ] {
        let (_, _, answer) = env.get(&env.bob, &path).await;
        assert!(!answer.to_string().contains(&task_id), "{path}: {answer}");
    }

    env.stop().await;
    let records = records(&env.ledger_dir);
    let ledger_text = serde_json::to_string(&records).unwrap();
    assert!(!ledger_text.contains(PROMPT), "raw prompt in the ledger");
    assert!(!ledger_text.contains(ORG_API_KEY), "API key in the ledger");

    let create_record = of_type(&records, "gateway.request")
        .into_iter()
        .find(|r| r["actor"] == "alice" && r["details"]["operation"] == "create")
        .unwrap();
    let d = &create_record["details"];
    assert_eq!(d["family"], "text-to-video");
    assert_eq!(d["model"], "kling-3.0");
    assert_eq!(d["model_source"], "path");
    assert_eq!(d["route"], "/text-to-video/{model}");
    assert_eq!(d["external_task_id"], "ns-alice-1");
    assert_eq!(d["params"]["settings.duration"], 5);
    assert_eq!(d["prompts"][0]["field"], "prompt");
    assert_eq!(d["prompts"][0]["chars"], PROMPT.chars().count());
    assert!(d["prompts"][0]["hmac"].is_string());
    let create_response = of_type(&records, "gateway.response")
        .into_iter()
        .find(|r| r["details"]["request_seq"] == seq(create_record))
        .unwrap();
    assert_eq!(create_response["details"]["task_id"], task_id.as_str());

    let changes: Vec<&Value> = of_type(&records, "task.status")
        .into_iter()
        .filter(|r| r["details"]["task_id"] == task_id.as_str())
        .collect();
    let last = changes.last().expect("status changes recorded");
    assert_eq!(last["actor"], "alice");
    assert_eq!(last["details"]["to"], "succeeded");
    assert_eq!(last["details"]["final"], true);
    assert_eq!(last["details"]["outputs_count"], 1);
    assert_eq!(last["details"]["units_deducted"], "1");
    assert!(changes.iter().all(|c| seq(c) > seq(create_response)));
    // Bob's listing was narrowed, and recorded as such.
    let narrowed = of_type(&records, "gateway.response")
        .into_iter()
        .find(|r| r["actor"] == "bob" && r["details"]["operation"] == "query-list")
        .unwrap();
    assert_eq!(narrowed["details"]["narrowed_out"], 1);
    assert_eq!(narrowed["details"]["listed"], 1);
}

#[tokio::test]
async fn another_actors_new_standard_task_is_not_found_and_never_forwarded() {
    let env = env().await;
    let task_id = create(&env, &env.alice, "ns-alice-2").await;
    let bob_task = create(&env, &env.bob, "ns-bob-2").await;
    let before = env.sim.stats();
    // Alone, or hidden in a list after one of bob's own ids, alice's task is refused.
    for path in [
        format!("/tasks?task_ids={task_id}"),
        format!("/tasks?task_ids={bob_task},{task_id}"),
        "/tasks?external_task_ids=ns-alice-2".to_owned(),
        "/tasks?external_task_ids=ns-bob-2,ns-alice-2".to_owned(),
    ] {
        let (status, headers, body) = env.get(&env.bob, &path).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (404, Some(1203)),
            "{path}: {body}"
        );
        assert!(body.get("data").is_none(), "{body}");
        assert!(headers.contains_key("x-kling-audit-record"));
    }
    assert_eq!(
        env.sim.stats().requests_total,
        before.requests_total,
        "nothing was forwarded"
    );
    // The owner gets it.
    let (status, _, body) = env
        .get(&env.alice, &format!("/tasks?task_ids={task_id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["id"], task_id.as_str());
}

#[tokio::test]
async fn a_top_level_external_id_the_new_api_ignores_does_not_claim_another_actors_task() {
    // New-standard creates read `options.external_task_id`; a top-level one names no task.
    let mut env = env().await;
    let decoy = json!({
        "prompt": PROMPT,
        "external_task_id": "ns-order-88",
        "options": {"external_task_id": "ns-alice-own"},
    });
    let (status, _, created) = env
        .post(&env.alice, "/text-to-video/kling-3.0", &decoy)
        .await;
    assert_eq!(status, 200, "{created}");
    let bob_task = create(&env, &env.bob, "ns-order-88").await;

    let (status, _, body) = env
        .get(&env.bob, "/tasks?external_task_ids=ns-order-88")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["id"], bob_task.as_str());
    let (status, _, body) = env
        .get(&env.alice, "/tasks?external_task_ids=ns-order-88")
        .await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(1203)), "{body}");
    let (status, _, body) = env
        .get(&env.alice, "/tasks?external_task_ids=ns-alice-own")
        .await;
    assert_eq!(status, 200, "{body}");

    env.stop().await;
    let records = records(&env.ledger_dir);
    let alice_create = of_type(&records, "gateway.request")
        .into_iter()
        .find(|r| r["actor"] == "alice" && r["details"]["operation"] == "create")
        .unwrap();
    assert_eq!(alice_create["details"]["external_task_id"], "ns-alice-own");
}

type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn receive(State(seen): State<Seen>, headers: HeaderMap, body: Bytes) -> StatusCode {
    seen.lock().unwrap().push((headers, body));
    StatusCode::OK
}

#[tokio::test]
async fn new_standard_callbacks_are_verified_recorded_and_relayed() {
    let secret = "whsec_bmV3LXN0YW5kYXJkIHdlYmhvb2sgc2VjcmV0IDMyISE=";
    let mut sim = sim_config();
    sim.api_keys.push(SecretText::new(ORG_API_KEY));
    sim.webhook_secret = Some(SecretText::new(secret));
    let mut env = setup(sim, |cfg| {
        if let Some(creds) = cfg.upstream.credentials.as_mut() {
            creds.api_key = Some(SecretString::new(ORG_API_KEY));
        }
        cfg.callbacks.webhook_secret = Some(SecretString::new(secret));
    })
    .await;
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(Arc::clone(&seen));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let body = json!({
        "prompt": PROMPT,
        "options": {"callback_url": format!("http://{addr}/hook?token=app-secret-token")},
    });
    let (status, _, created) = env
        .post(&env.alice, "/text-to-video/kling-3.0", &body)
        .await;
    assert_eq!(status, 200, "{created}");
    let task_id = created["data"]["id"].as_str().unwrap().to_owned();

    let statuses = || -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            .filter_map(|(_, b)| serde_json::from_slice::<Value>(b).ok())
            .map(|v| v["status"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    // The bound only stops a broken set-up from hanging the run.
    for _ in 0..400 {
        if statuses().iter().any(|s| s == "succeeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(statuses(), ["processing", "succeeded"]);
    {
        let seen = seen.lock().unwrap();
        let (headers, body) = seen.last().unwrap();
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["id"], task_id.as_str());
        assert!(headers.contains_key("webhook-signature"));
        assert!(headers.contains_key("x-kling-audit-callback-record"));
    }

    env.stop().await;
    server.abort();
    let records = records(&env.ledger_dir);
    let received = of_type(&records, "callback.received");
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(received.iter().all(|r| r["actor"] == "alice"
        && r["details"]["signature"] == "valid"
        && r["details"]["task_id"] == task_id.as_str()));
    let request = of_type(&records, "gateway.request")
        .into_iter()
        .find(|r| r["details"]["operation"] == "create")
        .unwrap();
    assert_eq!(request["details"]["callback"]["relayed"], true);
    let from_callback: Vec<&Value> = of_type(&records, "task.status")
        .into_iter()
        .filter(|r| r["details"]["source"] == "callback")
        .collect();
    let last = from_callback
        .last()
        .expect("a status change from a callback");
    assert_eq!(last["details"]["to"], "succeeded");
    assert_eq!(last["details"]["units_deducted"], "1");
    assert!(!records
        .iter()
        .any(|r| r.to_string().contains("app-secret-token")));
}

#[tokio::test]
async fn a_decoy_top_level_callback_url_does_not_let_new_standard_callbacks_bypass_the_gateway() {
    // Kling calls the new standard's `options.callback_url`; a top-level one beside it must not
    // be the only URL replaced, or the callbacks go straight to the app, unrecorded.
    let mut env = env().await;
    let seen = Seen::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/decoy", axum::routing::post(receive))
        .route("/direct", axum::routing::post(receive))
        .with_state(Arc::clone(&seen));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let body = json!({
        "prompt": PROMPT,
        "callback_url": format!("http://{addr}/decoy"),
        "options": {"callback_url": format!("http://{addr}/direct")},
    });
    let (status, _, created) = env
        .post(&env.alice, "/text-to-video/kling-3.0", &body)
        .await;
    assert_eq!(status, 200, "{created}");
    let task_id = created["data"]["id"].as_str().unwrap().to_owned();
    poll_until_final(&env, &env.alice, &task_id).await;
    // The bound only stops a broken set-up from hanging the run.
    for _ in 0..400 {
        if seen.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "one callback on processing, one at the end");
        assert!(
            seen.iter()
                .all(|(h, _)| h.contains_key("x-kling-audit-callback-record")),
            "every callback came through the gateway"
        );
    }

    env.stop().await;
    server.abort();
    let records = records(&env.ledger_dir);
    assert_eq!(of_type(&records, "callback.received").len(), 2);
    let request = of_type(&records, "gateway.request")
        .into_iter()
        .find(|r| r["details"]["operation"] == "create")
        .unwrap();
    // The summary is of the URL Kling calls.
    let direct = format!("http://{addr}/direct");
    assert_eq!(request["details"]["callback"]["len"], direct.len());
}

#[tokio::test]
async fn without_an_organisation_api_key_new_standard_calls_fail_here_not_as_the_callers_401() {
    // Kling takes only API keys on these routes; a signed JWT would come back as 401, which
    // the caller would read as its own credential being wrong.
    let mut sim = sim_config();
    sim.api_keys.push(SecretText::new(ORG_API_KEY));
    let env = setup(sim, |cfg| {
        if let Some(creds) = cfg.upstream.credentials.as_mut() {
            creds.api_key = None;
        }
    })
    .await;
    let before = env.sim.stats();
    let body = json!({"prompt": PROMPT, "settings": {"duration": 5}});
    let (status, _, answer) = env
        .post(&env.alice, "/text-to-video/kling-3.0", &body)
        .await;
    assert_eq!(
        (status, answer["code"].as_i64()),
        (500, Some(5000)),
        "{answer}"
    );
    assert_eq!(
        env.sim.stats().requests_total,
        before.requests_total,
        "nothing was forwarded"
    );
}

#[tokio::test]
async fn a_callback_url_only_where_the_new_api_does_not_look_is_not_recorded_as_relayed() {
    // The new standard reads `options.callback_url`; a top-level one alone brings no callback,
    // so the record must not promise a relay for it.
    let mut env = env().await;
    let body = json!({"prompt": PROMPT, "callback_url": "http://127.0.0.1:9/ignored"});
    let (status, _, created) = env
        .post(&env.alice, "/text-to-video/kling-3.0", &body)
        .await;
    assert_eq!(status, 200, "{created}");
    env.stop().await;
    let records = records(&env.ledger_dir);
    let request = of_type(&records, "gateway.request")
        .into_iter()
        .find(|r| r["details"]["operation"] == "create")
        .unwrap();
    assert!(
        request["details"].get("callback").is_none(),
        "{}",
        request["details"]
    );
}
