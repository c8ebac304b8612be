//! The audited client against the simulator, with a real ledger: which records each kind of
//! call leaves, in which order, under one correlation id.

mod common;

use std::time::Duration;

use common::{fast_poll, kinds, of_corr, sim_config, Fixture, ACCESS_KEY};
use kling_api::requests::TextToVideoRequest;
use kling_api::task::TaskView;
use kling_api::{webhook, KlingError, SecretString};
use kling_audit_client::{events, CallbackDelivery, ClientError, SignatureCheck};
use serde_json::{json, Value};
use uuid::Uuid;

fn t2v(prompt: &str) -> TextToVideoRequest {
    TextToVideoRequest::with_prompt(prompt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_leaves_the_full_trail_under_one_corr() {
    let fx = Fixture::start(sim_config()).await;
    let client = fx.client();
    let mut request = t2v("a lighthouse in the fog");
    request.external_task_id = Some("order-1".into());
    let (sub, done) = client.create_and_wait(&request, fast_poll()).await.unwrap();
    assert_eq!(done.status().map(|s| s.as_str()), Some("succeed"));

    let records = fx.records();
    let corr = sub.corr.to_string();
    assert_eq!(Uuid::parse_str(&corr).unwrap().get_version_num(), 7);
    let trail = of_corr(&records, &corr);
    // Every record of this ledger belongs to the one task.
    assert_eq!(trail.len(), records.len());
    let k = kinds(&trail);
    assert_eq!(
        k[..3],
        [events::INTENT, events::CREDENTIAL_USE, events::ACCEPTED]
    );
    assert_eq!(k.last(), Some(&events::OUTCOME));
    assert!(k[3..k.len() - 1].iter().all(|k| *k == events::STATUS));
    assert!(trail.iter().all(|r| r.actor == "test:client"));

    let intent = &trail[0].details;
    assert_eq!(intent["op"], "create");
    assert_eq!(intent["family"], "text-to-video");
    assert_eq!(intent["request"]["model"]["name"], "kling-v1");
    assert_eq!(intent["request"]["external_task_id"], "order-1");
    assert_eq!(intent["request"]["text"][0]["chars"], 23);
    assert_eq!(
        intent["request"]["text"][0]["commitment"],
        fx.ledger.commitments().text("a lighthouse in the fog")
    );
    assert_eq!(
        intent["key_fp"],
        fx.ledger.commitments().key_fingerprint(ACCESS_KEY)
    );

    let cred = &trail[1].details;
    assert_eq!(cred["reason"], "first");
    assert!(cred["nbf"].as_i64().unwrap() <= cred["iat"].as_i64().unwrap());
    assert!(cred["exp"].as_i64().unwrap() > cred["iat"].as_i64().unwrap());

    let accepted = &trail[2].details;
    assert_eq!(accepted["task_id"], sub.task_id);
    assert_eq!(accepted["request_id"], sub.request_id);
    assert_eq!(accepted["attempts"], 1);
    assert_eq!(accepted["task_status"], "submitted");
    assert_eq!(accepted["external_task_id"], "order-1");

    // Status records chain: each starts where the previous ended, none repeats.
    let statuses: Vec<&Value> = trail
        .iter()
        .filter(|r| r.kind == events::STATUS)
        .map(|r| &r.details)
        .collect();
    let mut previous = Value::from("submitted");
    for s in &statuses {
        assert_eq!(s["from"], previous);
        assert_ne!(s["to"], previous);
        assert_eq!(s["task_id"], sub.task_id);
        previous = s["to"].clone();
    }
    assert_eq!(previous, "succeed");
    let polls = fx.sim.stats().route("GET /v1/videos/text2video/{id}");
    assert!(polls >= statuses.len() as u64);

    let outcome = &trail.last().unwrap().details;
    assert_eq!(outcome["result"], "success");
    assert_eq!(outcome["anomaly"], false);
    assert_eq!(outcome["output_count"], 1);
    let url = done.usable_urls()[0].url.clone();
    assert_eq!(
        outcome["outputs"][0]["url_sha256"],
        kling_audit_client::summary::sha256_hex(url.as_bytes())
    );
    assert_eq!(
        outcome["charges"]["final_unit_deduction"],
        json!(done.final_unit_deduction.as_ref().map(|n| n.text.clone()))
    );
    assert!(outcome["units_deducted"].as_f64().is_some());
    fx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_in_a_success_envelope_is_a_failure_outcome() {
    let fx = Fixture::start(sim_config()).await;
    let client = fx.client();
    let (sub, done) = client
        .create_and_wait(&t2v("please sim-fail this one"), fast_poll())
        .await
        .unwrap();
    assert_eq!(done.status().map(|s| s.as_str()), Some("failed"));
    let trail = of_corr(&fx.records(), &sub.corr.to_string());
    assert!(!kinds(&trail).contains(&events::REJECTED));
    let outcome = &trail.last().unwrap().details;
    assert_eq!(trail.last().unwrap().kind, events::OUTCOME);
    assert_eq!(outcome["result"], "failure");
    assert_eq!(outcome["task_status"], "failed");
    let reason = &fx.sim.handle().config().content.fail_message;
    assert_eq!(outcome["task_status_msg"]["text"], reason.as_str());
    assert_eq!(outcome["anomaly"], false);
    fx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_policy_refusal_is_recorded_as_rejected() {
    let fx = Fixture::start(sim_config()).await;
    let client = fx.client();
    let err = client.create(&t2v("sim-blocked scene")).await.unwrap_err();
    assert!(matches!(
        err.kling(),
        Some(KlingError::ContentPolicy(e)) if e.code == Some(1301)
    ));
    let corr = err.corr().unwrap().to_string();
    let trail = of_corr(&fx.records(), &corr);
    assert_eq!(
        kinds(&trail),
        [events::INTENT, events::CREDENTIAL_USE, events::REJECTED]
    );
    let r = &trail[2].details;
    assert_eq!(
        (r["http_status"].as_u64(), r["code"].as_i64()),
        (Some(400), Some(1301))
    );
    assert_eq!(r["final"], true);
    assert_eq!(r["attempt"], 1);
    assert_eq!(r["task_may_exist"], false);
    assert!(r["message"]["chars"].as_u64().unwrap() > 0);
    assert_eq!(fx.sim.stats().creates_accepted, 0);
    fx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_refusals_are_retried_and_each_attempt_is_recorded() {
    let mut cfg = sim_config();
    cfg.concurrency.video = 1;
    // The first task holds the only slot for about two seconds.
    cfg.lifecycle.to_processing_ms = 1000;
    cfg.lifecycle.to_final_ms = 1000;
    let fx = Fixture::start(cfg).await;
    let mut config = fx.config(common::SECRET_KEY);
    config.retry.max_attempts = 40;
    config.retry.initial_backoff = Duration::from_millis(200);
    config.retry.max_backoff = Duration::from_millis(300);
    let client =
        kling_audit_client::AuditedClient::new(config, fx.ledger.clone(), "test:client").unwrap();

    client.create(&t2v("first holds the slot")).await.unwrap();
    let second = client.create(&t2v("second must wait")).await.unwrap();
    assert!(second.attempts >= 2, "attempts {}", second.attempts);

    let trail = of_corr(&fx.records(), &second.corr.to_string());
    let k = kinds(&trail);
    assert_eq!(k[0], events::INTENT);
    assert_eq!(k.last(), Some(&events::ACCEPTED));
    let refusals: Vec<&Value> = trail
        .iter()
        .filter(|r| r.kind == events::REJECTED)
        .map(|r| &r.details)
        .collect();
    assert_eq!(refusals.len() as u32, second.attempts - 1);
    for (i, r) in refusals.iter().enumerate() {
        assert_eq!(r["code"], 1303);
        assert_eq!(r["http_status"], 429);
        assert_eq!(r["attempt"], i + 1);
        assert_eq!(r["final"], false);
        assert!(r["retry_in_ms"].as_u64().is_some());
    }
    assert_eq!(trail.last().unwrap().details["attempts"], second.attempts);
    // One create for the first task plus every attempt of the second reached the server.
    let posts = fx.sim.stats().route("POST /v1/videos/text2video");
    assert_eq!(posts, 1 + u64::from(second.attempts));
    fx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_rejected_with_1002_and_not_retried() {
    let fx = Fixture::start(sim_config()).await;
    let client = kling_audit_client::AuditedClient::new(
        fx.config("not-the-right-secret"),
        fx.ledger.clone(),
        "test:client",
    )
    .unwrap();
    let err = client.create(&t2v("anything")).await.unwrap_err();
    assert!(matches!(err.kling(), Some(KlingError::Auth(e)) if e.code == Some(1002)));
    let trail = of_corr(&fx.records(), &err.corr().unwrap().to_string());
    assert_eq!(
        kinds(&trail),
        [events::INTENT, events::CREDENTIAL_USE, events::REJECTED]
    );
    let r = &trail[2].details;
    assert_eq!(
        (r["http_status"].as_u64(), r["code"].as_i64()),
        (Some(401), Some(1002))
    );
    assert_eq!(
        (r["attempt"].as_u64(), r["final"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(fx.sim.stats().route("POST /v1/videos/text2video"), 1);
    fx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_times_out_says_a_task_may_exist() {
    let mut cfg = sim_config();
    cfg.faults.latency_rate = 1.0;
    cfg.faults.latency_ms = 3000;
    let fx = Fixture::start(cfg).await;
    let mut config = fx.config(common::SECRET_KEY);
    config.timeout = Duration::from_millis(300);
    let client =
        kling_audit_client::AuditedClient::new(config, fx.ledger.clone(), "test:client").unwrap();
    let err = client.create(&t2v("slow server")).await.unwrap_err();
    assert!(matches!(err.kling(), Some(KlingError::Timeout { .. })));
    let trail = of_corr(&fx.records(), &err.corr().unwrap().to_string());
    assert_eq!(
        kinds(&trail),
        [events::INTENT, events::CREDENTIAL_USE, events::TIMEOUT]
    );
    let t = &trail[2].details;
    assert_eq!(t["op"], "create");
    assert_eq!(t["phase"], "request");
    assert_eq!(t["kind"], "timeout");
    assert_eq!(t["task_may_exist"], true);
    assert_eq!(t["final"], true);
    fx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_a_transport_error() {
    let mut cfg = sim_config();
    cfg.faults.drop_after_rate = 1.0;
    let fx = Fixture::start(cfg).await;
    let client = fx.client();
    let err = client.create(&t2v("answer lost")).await.unwrap_err();
    assert!(matches!(err.kling(), Some(KlingError::Transport { .. })));
    let trail = of_corr(&fx.records(), &err.corr().unwrap().to_string());
    assert_eq!(trail.last().unwrap().kind, events::TRANSPORT_ERROR);
    assert_eq!(trail.last().unwrap().details["task_may_exist"], true);
    // The simulator did make the task: the record's warning is the truth.
    assert_eq!(fx.sim.stats().creates_accepted, 1);
    fx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_queries_record_a_status_only_when_it_changes() {
    let mut cfg = sim_config();
    // The task stays `submitted` for the whole test.
    cfg.lifecycle.to_processing_ms = 60_000;
    let fx = Fixture::start(cfg).await;
    let client = fx.client();
    let sub = client.create(&t2v("patience")).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let t = client.query(&sub).await.unwrap();
        seen.push(t.status().map(|s| s.as_str().to_owned()).unwrap());
    }
    assert!(seen.iter().all(|s| s == "submitted"));
    assert_eq!(fx.sim.stats().route("GET /v1/videos/text2video/{id}"), 5);
    let trail = of_corr(&fx.records(), &sub.corr.to_string());
    assert_eq!(
        kinds(&trail),
        [events::INTENT, events::CREDENTIAL_USE, events::ACCEPTED]
    );
    fx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_after_the_end_add_no_records() {
    let fx = Fixture::start(sim_config()).await;
    let client = fx.client();
    let (sub, _) = client
        .create_and_wait(&t2v("done once"), fast_poll())
        .await
        .unwrap();
    let before = fx.records().len();
    client.query(&sub).await.unwrap();
    client.wait(&sub, fast_poll()).await.unwrap();
    assert_eq!(fx.records().len(), before);
    fx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_credential_record_per_token_not_per_request() {
    let fx = Fixture::start(sim_config()).await;
    let client = fx.client();
    for prompt in ["one", "two", "three"] {
        client
            .create_and_wait(&t2v(prompt), fast_poll())
            .await
            .unwrap();
    }
    let records = fx.records();
    let creds: Vec<_> = records
        .iter()
        .filter(|r| r.kind == events::CREDENTIAL_USE)
        .collect();
    let issued = client.kling().token_cache().unwrap().issued_count();
    assert_eq!(creds.len() as u64, issued);
    assert_eq!(issued, 1);
    assert!(fx.sim.stats().requests_total > 3);
    fx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_recorded_with_their_signature_check() {
    let fx = Fixture::start(sim_config()).await;
    let secret = "whsec_dGVzdC13ZWJob29rLXNlY3JldC1ieXRlcw==";
    let client = fx.client().with_webhook_secret(SecretString::new(secret));
    let sub = client.create(&t2v("callback me")).await.unwrap();
    let body = json!({"task_id": sub.task_id, "task_status": "succeed",
        "task_result": {"videos": [{"id": "v1", "url": "https://cdn.example.test/v.mp4"}]}})
    .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ts = now.to_string();
    let sig = webhook::sign(secret, "wh-1", now, body.as_bytes()).unwrap();

    let good = client
        .record_callback(CallbackDelivery {
            webhook_id: Some("wh-1"),
            webhook_timestamp: Some(&ts),
            webhook_signature: Some(&sig),
            body: body.as_bytes(),
        })
        .await
        .unwrap();
    assert_eq!(good.signature, SignatureCheck::Valid);
    assert_eq!(good.corr, Some(sub.corr));

    let tampered = body.replace("succeed", "failed");
    let bad = client
        .record_callback(CallbackDelivery {
            webhook_id: Some("wh-1"),
            webhook_timestamp: Some(&ts),
            webhook_signature: Some(&sig),
            body: tampered.as_bytes(),
        })
        .await
        .unwrap();
    assert!(matches!(bad.signature, SignatureCheck::Invalid(_)));

    let garbage = client
        .record_callback(CallbackDelivery {
            webhook_id: None,
            webhook_timestamp: None,
            webhook_signature: None,
            body: b"not json",
        })
        .await
        .unwrap();
    assert_eq!(garbage.signature, SignatureCheck::Absent);
    assert!(garbage.corr.is_none());

    let records = fx.records();
    let cbs: Vec<&Value> = records
        .iter()
        .filter(|r| r.kind == events::CALLBACK)
        .map(|r| &r.details)
        .collect();
    assert_eq!(cbs.len(), 3);
    assert_eq!(cbs[0]["corr"], sub.corr.to_string());
    assert_eq!(cbs[0]["signature"], "valid");
    assert_eq!(cbs[0]["reported"]["task_status"], "succeed");
    assert_eq!(cbs[0]["shape"], "legacy");
    assert_eq!(
        cbs[0]["body_sha256"],
        kling_audit_client::summary::sha256_hex(body.as_bytes())
    );
    assert_eq!(cbs[1]["signature"], "invalid");
    assert_eq!(cbs[2]["parse_error"], "not-json");
    assert_eq!(cbs[2]["known_task"], false);
    assert!(!records
        .iter()
        .any(|r| r.details.to_string().contains("cdn.example.test")));
    fx.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_ledger_stops_the_request_from_leaving() {
    let fx = Fixture::start(sim_config()).await;
    let client = fx.client();
    fx.ledger.close_async().await.unwrap();
    let err = client.create(&t2v("must not be sent")).await.unwrap_err();
    assert!(matches!(
        err,
        ClientError::Record {
            event: events::INTENT,
            ..
        }
    ));
    assert_eq!(fx.sim.stats().requests_total, 0);
    fx.sim.shutdown().await.unwrap();
}
