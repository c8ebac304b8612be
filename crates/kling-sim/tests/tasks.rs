//! Task lifecycle, results, charging, listing and lookups by `external_task_id`.

mod common;

use common::{fast_config, start};
use kling_sim::{PackType, UnknownTaskAnswer, CDN_BASE};
use serde_json::json;

const T2V: &str = "videos/text2video";

#[tokio::test]
async fn create_answers_in_the_legacy_shape() {
    let s = start(fast_config()).await;
    let a = s
        .post(
            "/v1/videos/text2video",
            &json!({"prompt": "a calm sunrise", "duration": "5"}),
        )
        .await;
    assert_eq!((a.status, a.code(), a.message()), (200, 0, "SUCCEED"));
    let data = a.data();
    let id = data["task_id"].as_str().unwrap();
    assert_eq!(id.len(), 18);
    assert!(id.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(data["task_status"], "submitted");
    assert_eq!(data["task_info"], json!({}));
    assert!(
        data["created_at"].as_i64().unwrap() > 1_600_000_000_000,
        "created_at is in ms"
    );
    assert_eq!(data["created_at"], data["updated_at"]);
    assert_eq!(a.body["request_id"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn task_moves_through_processing_to_succeed_with_results_and_units() {
    let s = start(fast_config()).await;
    let before = s.sim.handle().remaining_units(PackType::Video);
    let id = s.create_t2v(json!({"prompt": "a calm sunrise", "duration": "10", "watermark_info": {"enabled": true}})).await;
    let (task, seen) = s.wait_final(T2V, &id).await;

    let order = ["submitted", "processing", "succeed"];
    let positions: Vec<usize> = seen
        .iter()
        .map(|st| order.iter().position(|o| o == st).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "statuses out of order: {seen:?}"
    );
    assert_eq!(task["task_status"], "succeed");
    assert_eq!(task["task_status_msg"], "");
    assert_eq!(task["final_unit_deduction"], "2");
    assert_eq!(task["watermark_info"], json!({"enabled": true}));
    assert!(task["updated_at"].as_i64() > task["created_at"].as_i64());
    let video = &task["task_result"]["videos"][0];
    assert_eq!(video["duration"], "10.1");
    assert!(video["url"].as_str().unwrap().starts_with(CDN_BASE));
    assert!(video["url"].as_str().unwrap().contains(&id));
    assert!(video["watermark_url"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    assert_eq!(video["id"].as_str().unwrap().len(), 18);

    assert_eq!(
        s.sim.handle().remaining_units(PackType::Video),
        before - 2.0
    );
    assert_eq!(s.sim.handle().slots_in_use(PackType::Video), 0);
}

#[tokio::test]
async fn image_task_returns_n_images_and_charges_per_image() {
    let s = start(fast_config()).await;
    let a = s
        .post(
            "/v1/images/generations",
            &json!({"prompt": "a red fox", "n": 3, "model_name": "kling-v2"}),
        )
        .await;
    assert_eq!(a.code(), 0, "{}", a.body);
    let id = a.data()["task_id"].as_str().unwrap().to_owned();
    let (task, _) = s.wait_final("images/generations", &id).await;
    let images = task["task_result"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 3);
    assert_eq!(images[2]["index"], 2);
    assert_eq!(task["final_unit_deduction"], "3");
}

#[tokio::test]
async fn extension_reports_its_parent_video() {
    let s = start(fast_config()).await;
    let id = s.create_t2v(json!({"prompt": "waves"})).await;
    let (task, _) = s.wait_final(T2V, &id).await;
    let video_id = task["task_result"]["videos"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = s
        .post("/v1/videos/video-extend", &json!({"video_id": video_id}))
        .await;
    assert_eq!(a.code(), 0, "{}", a.body);
    let parent = &a.data()["task_info"]["parent_video"];
    assert_eq!(parent["id"], video_id.as_str());
    assert_eq!(parent["url"], task["task_result"]["videos"][0]["url"]);
}

#[tokio::test]
async fn list_is_newest_first_and_paged() {
    let s = start(fast_config()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(s.create_t2v(json!({"prompt": format!("scene {i}")})).await);
    }
    // A task of another family must not appear in this family's list.
    let a = s
        .post("/v1/images/generations", &json!({"prompt": "a fox"}))
        .await;
    assert_eq!(a.code(), 0);

    let page = |n: u32, size: u32| format!("/v1/{T2V}?pageNum={n}&pageSize={size}");
    let listed = |a: &common::Answer| -> Vec<String> {
        a.data()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["task_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = s.get(&format!("/v1/{T2V}")).await;
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(listed(&all), newest_first);
    assert_eq!(listed(&s.get(&page(1, 2)).await), newest_first[0..2]);
    assert_eq!(listed(&s.get(&page(3, 2)).await), newest_first[4..5]);
    assert!(listed(&s.get(&page(4, 2)).await).is_empty());

    let bad = s.get(&page(1, 501)).await;
    assert_eq!((bad.status, bad.code()), (400, 1201));
    assert!(bad.message().contains("pageSize"));
    let bad = s.get(&page(0, 10)).await;
    assert!(bad.message().contains("pageNum"));
}

#[tokio::test]
async fn external_task_id_lookup_in_all_three_forms() {
    let s = start(fast_config()).await;
    let id = s
        .create_t2v(json!({"prompt": "a calm sunrise", "external_task_id": "order-42"}))
        .await;
    let forms = [
        format!("/v1/{T2V}/order-42"),
        format!("/v1/{T2V}?external_task_id=order-42"),
        format!("/v1/{T2V}/order-42?external_task_id=true"),
    ];
    for path in &forms {
        let a = s.get(path).await;
        assert_eq!(a.code(), 0, "{path}: {}", a.body);
        assert_eq!(a.data()["task_id"], id.as_str(), "{path}");
        assert_eq!(a.data()["task_info"]["external_task_id"], "order-42");
    }
    // The own id belongs to its family only.
    let a = s.get("/v1/videos/image2video/order-42").await;
    assert_eq!((a.status, a.code()), (404, 1203));
}

#[tokio::test]
async fn disabled_lookup_forms_are_not_honoured() {
    let mut cfg = fast_config();
    cfg.lookup.by_path = false;
    cfg.lookup.by_query = false;
    let s = start(cfg).await;
    s.create_t2v(json!({"prompt": "x", "external_task_id": "ext-1"}))
        .await;
    assert_eq!(s.get(&format!("/v1/{T2V}/ext-1")).await.code(), 1203);
    // Form 2 disabled: the parameter is ignored and an ordinary page comes back.
    assert!(s
        .get(&format!("/v1/{T2V}?external_task_id=ext-1"))
        .await
        .data()
        .is_array());
    assert_eq!(
        s.get(&format!("/v1/{T2V}/ext-1?external_task_id=true"))
            .await
            .code(),
        0
    );
}

#[tokio::test]
async fn reused_external_task_id_is_refused() {
    let s = start(fast_config()).await;
    s.create_t2v(json!({"prompt": "x", "external_task_id": "dup"}))
        .await;
    let a = s
        .post(
            "/v1/images/generations",
            &json!({"prompt": "y", "external_task_id": "dup"}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, 1201));
    assert!(a.message().contains("external_task_id"));
    assert_eq!(s.sim.stats().creates_accepted, 1);
}

#[tokio::test]
async fn unknown_task_answer_is_configurable() {
    let s = start(fast_config()).await;
    let a = s.get(&format!("/v1/{T2V}/123456789012345678")).await;
    assert_eq!((a.status, a.code()), (404, 1203));
    assert!(a.body.get("data").is_none());

    let mut cfg = fast_config();
    cfg.unknown_task = UnknownTaskAnswer::InvalidParameter;
    let s = start(cfg).await;
    let a = s.get(&format!("/v1/{T2V}/123456789012345678")).await;
    assert_eq!((a.status, a.code()), (400, 1201));
}

#[tokio::test]
async fn stats_count_routes_and_creates() {
    let s = start(fast_config()).await;
    let id = s.create_t2v(json!({"prompt": "x"})).await;
    s.get(&format!("/v1/{T2V}/{id}")).await;
    s.get(&format!("/v1/{T2V}")).await;
    s.get("/v1/nothing/here").await;
    let stats = s.sim.stats();
    assert_eq!(stats.requests_total, 4);
    assert_eq!(stats.creates_accepted, 1);
    assert_eq!(stats.route("POST /v1/videos/text2video"), 1);
    assert_eq!(stats.route("GET /v1/videos/text2video/{id}"), 1);
    assert_eq!(stats.route("GET /v1/videos/text2video"), 1);
    assert_eq!(stats.route("unmatched"), 1);
}
