//! Request checking over HTTP: parameter errors naming the field, body errors, content rules,
//! unknown routes and wrong methods.

mod common;

use common::{fast_config, start};
use serde_json::json;

#[tokio::test]
async fn parameter_errors_are_400_1201_naming_the_field() {
    let s = start(fast_config()).await;
    let cases = [
        (
            "/v1/videos/text2video",
            json!({"prompt": "x", "mode": "standard"}),
            "mode",
        ),
        (
            "/v1/videos/text2video",
            json!({"prompt": "x", "duration": 5.5}),
            "duration",
        ),
        (
            "/v1/videos/text2video",
            json!({"negative_prompt": "x"}),
            "prompt",
        ),
        ("/v1/videos/image2video", json!({"prompt": "x"}), "image"),
        (
            "/v1/videos/image2video",
            json!({"image": "data:image/png;base64,iVBORw0KGgo="}),
            "image",
        ),
        (
            "/v1/images/generations",
            json!({"prompt": "x", "n": 0}),
            "n",
        ),
        (
            "/v1/images/kolors-virtual-try-on",
            json!({"cloth_image": "https://i.example.test/c.png"}),
            "human_image",
        ),
    ];
    for (path, body, field) in cases {
        let a = s.post(path, &body).await;
        assert_eq!(
            (a.status, a.code()),
            (400, 1201),
            "{path} {body}: {}",
            a.body
        );
        assert!(
            a.message().contains(field),
            "{path}: message {:?} should name {field}",
            a.message()
        );
    }
    assert_eq!(s.sim.stats().creates_accepted, 0);
}

#[tokio::test]
async fn lenient_by_default_strict_when_configured() {
    let body = json!({"prompt": "x", "duration": 5, "cfg_scale": "0.5", "image_tail": null, "extra": {"a": 1}});
    let s = start(fast_config()).await;
    let a = s.post("/v1/videos/text2video", &body).await;
    assert_eq!(a.code(), 0, "{}", a.body);

    let mut cfg = fast_config();
    cfg.strict = true;
    let s = start(cfg).await;
    let a = s.post("/v1/videos/text2video", &body).await;
    assert_eq!((a.status, a.code()), (400, 1201));
    assert!(a.message().contains("duration"));
}

#[tokio::test]
async fn malformed_bodies_are_400_1200() {
    let s = start(fast_config()).await;
    let bearer = format!("Bearer {}", common::token());
    for raw in ["{not json", "[1, 2]", ""] {
        let resp = s
            .http
            .post(s.url("/v1/videos/text2video"))
            .header("Authorization", &bearer)
            .header("Content-Type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 1200, "{raw:?}");
    }
}

#[tokio::test]
async fn blocked_word_is_refused_with_1301_and_makes_no_task() {
    let mut cfg = fast_config();
    cfg.content.blocked_words = vec!["forbidden-thing".into()];
    let s = start(cfg).await;
    let a = s
        .post(
            "/v1/videos/text2video",
            &json!({"prompt": "show a FORBIDDEN-THING here"}),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, 1301));
    let a = s
        .post(
            "/v1/images/generations",
            &json!({"prompt": "ok", "negative_prompt": "forbidden-thing"}),
        )
        .await;
    assert_eq!(a.code(), 1301);
    assert_eq!(s.sim.stats().creates_accepted, 0);
    let list = s.get("/v1/videos/text2video").await;
    assert_eq!(list.data(), &json!([]));
}

#[tokio::test]
async fn fail_word_task_is_accepted_then_fails_with_a_reason_and_no_charge() {
    let mut cfg = fast_config();
    cfg.content.fail_words = vec!["doomed".into()];
    let s = start(cfg).await;
    let id = s.create_t2v(json!({"prompt": "a doomed voyage"})).await;
    let (task, _) = s.wait_final("videos/text2video", &id).await;
    assert_eq!(task["task_status"], "failed");
    assert!(!task["task_status_msg"].as_str().unwrap().is_empty());
    assert_eq!(task["final_unit_deduction"], "0");
    assert!(task.get("task_result").is_none());
    assert_eq!(
        s.sim.handle().remaining_units(kling_sim::PackType::Video),
        1000.0
    );
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_404_1202_in_the_envelope() {
    let s = start(fast_config()).await;
    let a = s.get("/v1/videos/does-not-exist").await;
    assert_eq!((a.status, a.code()), (404, 1202));
    assert!(a.body["request_id"].is_string());
    let a = s.post("/v1/videos/text2video/123", &json!({})).await;
    assert_eq!((a.status, a.code()), (404, 1202));
    let a = s.get("/").await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn identify_face_is_synchronous_and_opens_a_lip_sync_session() {
    let s = start(fast_config()).await;
    let a = s
        .post(
            "/v1/videos/Identify-face",
            &json!({"video_url": "https://v.example.test/a.mp4"}),
        )
        .await;
    assert_eq!(a.code(), 0, "{}", a.body);
    let session = a.data()["session_id"].as_str().unwrap().to_owned();
    assert_eq!(a.data()["face_data"][0]["face_id"], "0");
    assert!(a.data()["final_unit_deduction"].is_string());

    let face = json!([{"face_id": "0", "audio_id": "a1", "sound_start_time": 0, "sound_end_time": 3000, "sound_insert_time": 0}]);
    let ok = s
        .post(
            "/v1/videos/advanced-lip-sync",
            &json!({"session_id": session, "face_choose": face}),
        )
        .await;
    assert_eq!(ok.code(), 0, "{}", ok.body);
    let bad = s
        .post(
            "/v1/videos/advanced-lip-sync",
            &json!({"session_id": "nope", "face_choose": face}),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (400, 1201));
    assert!(bad.message().contains("session_id"));
}
