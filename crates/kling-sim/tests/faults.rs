//! Fault injection over HTTP: the same seed and request order give the same faults; each fault
//! kind shows up to a client the way it should.

mod common;

use common::{fast_config, start};
use kling_sim::{FaultConfig, SimConfig};
use serde_json::json;

/// What a client observed for one request.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Answer { status: u16, code: i64 },
    Dropped,
}

async fn run_sequence(cfg: SimConfig) -> Vec<Seen> {
    let s = start(cfg).await;
    let bearer = format!("Bearer {}", common::token());
    let mut seen = Vec::new();
    for i in 0..40 {
        let req = if i % 2 == 0 {
            s.http
                .post(s.url("/v1/videos/text2video"))
                .json(&json!({"prompt": format!("p{i}")}))
        } else {
            s.http.get(s.url("/v1/videos/text2video"))
        };
        match req.header("Authorization", &bearer).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.json::<serde_json::Value>().await {
                    Ok(body) => seen.push(Seen::Answer {
                        status,
                        code: body["code"].as_i64().unwrap_or(-1),
                    }),
                    Err(_) => seen.push(Seen::Dropped),
                }
            }
            Err(_) => seen.push(Seen::Dropped),
        }
    }
    seen
}

fn noisy(seed: u64) -> SimConfig {
    let mut cfg = fast_config();
    cfg.concurrency.video = 100;
    cfg.faults = FaultConfig {
        seed,
        server_error_rate: 0.2,
        nonzero_code_rate: 0.15,
        drop_before_rate: 0.1,
        ..FaultConfig::default()
    };
    cfg
}

#[tokio::test]
async fn same_seed_gives_the_same_faults_in_the_same_places() {
    let a = run_sequence(noisy(11)).await;
    let b = run_sequence(noisy(11)).await;
    assert_eq!(a, b);
    assert!(a.contains(&Seen::Dropped), "{a:?}");
    assert!(
        a.iter().any(|s| matches!(
            s,
            Seen::Answer {
                status: 200,
                code: 5000
            }
        )),
        "{a:?}"
    );
    assert!(
        a.iter().any(|s| matches!(
            s,
            Seen::Answer {
                status: 500..=504,
                ..
            }
        )),
        "{a:?}"
    );
    assert!(
        a.iter().any(|s| matches!(
            s,
            Seen::Answer {
                status: 200,
                code: 0
            }
        )),
        "{a:?}"
    );
    let c = run_sequence(noisy(12)).await;
    assert_ne!(a, c, "another seed should place faults differently");
}

#[tokio::test]
async fn injected_faults_are_listed_in_stats() {
    let s = start(noisy(11)).await;
    for _ in 0..20 {
        let _ = s.http.get(s.url("/v1/videos/text2video")).send().await;
    }
    let stats = s.sim.stats();
    assert_eq!(stats.requests_total, 20);
    let plan = kling_sim::FaultPlan::new(noisy(11).faults);
    let expected: Vec<u64> = (0..20).filter(|k| !plan.decide(*k).is_clean()).collect();
    let listed: Vec<u64> = stats.faults.iter().map(|f| f.request_no).collect();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn drop_after_handling_still_creates_the_task() {
    let mut cfg = fast_config();
    cfg.faults.drop_after_rate = 1.0;
    let s = start(cfg).await;
    let result = s
        .http
        .post(s.url("/v1/videos/text2video"))
        .header("Authorization", format!("Bearer {}", common::token()))
        .json(&json!({"prompt": "x", "external_task_id": "lost-answer"}))
        .send()
        .await;
    assert!(
        result.is_err(),
        "the connection should close without an answer"
    );
    assert_eq!(s.sim.stats().creates_accepted, 1);
}

#[tokio::test]
async fn success_without_a_usable_url() {
    for (field, check) in [
        ("watermark_only_rate", "watermark_only"),
        ("empty_url_rate", "empty_url"),
        ("empty_outputs_rate", "empty_outputs"),
    ] {
        let mut cfg = fast_config();
        match field {
            "watermark_only_rate" => cfg.faults.watermark_only_rate = 1.0,
            "empty_url_rate" => cfg.faults.empty_url_rate = 1.0,
            _ => cfg.faults.empty_outputs_rate = 1.0,
        }
        let s = start(cfg).await;
        let id = s.create_t2v(json!({"prompt": "x"})).await;
        let (task, _) = s.wait_final("videos/text2video", &id).await;
        assert_eq!(task["task_status"], "succeed", "{check}");
        let videos = task["task_result"]["videos"].as_array().unwrap();
        match check {
            "watermark_only" => {
                assert!(videos[0].get("url").is_none());
                assert!(videos[0]["watermark_url"]
                    .as_str()
                    .unwrap()
                    .starts_with("https://"));
            }
            "empty_url" => assert_eq!(videos[0]["url"], ""),
            _ => assert!(videos.is_empty()),
        }
    }
}

#[tokio::test]
async fn retry_after_header_only_when_configured() {
    let mut cfg = fast_config();
    cfg.concurrency.video = 1;
    cfg.faults.retry_after_secs = Some(3);
    let s = start(cfg).await;
    s.create_t2v(json!({"prompt": "x"})).await;
    let a = s
        .post("/v1/videos/text2video", &json!({"prompt": "y"}))
        .await;
    assert_eq!(a.code(), 1303);
    assert_eq!(a.headers["retry-after"], "3");
}
