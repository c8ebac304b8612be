//! Concurrency limits and resource packs: 429/1303 with Kling's verbatim message, slots freed
//! when tasks end, image tasks holding `n` slots, units going down in `/account/costs`.

mod common;

use common::{fast_config, start};
use kling_sim::{ConcurrencyScope, PackConfig, PackType, SecretText};
use serde_json::json;

#[tokio::test]
async fn over_the_limit_is_429_1303_until_a_task_ends() {
    let mut cfg = fast_config();
    cfg.concurrency.video = 2;
    let s = start(cfg).await;
    let first = s.create_t2v(json!({"prompt": "one"})).await;
    s.create_t2v(json!({"prompt": "two"})).await;

    let a = s
        .post("/v1/videos/text2video", &json!({"prompt": "three"}))
        .await;
    assert_eq!((a.status, a.code()), (429, 1303));
    assert_eq!(a.message(), "parallel task over resource pack limit");
    assert!(a.headers.get("retry-after").is_none());
    // Another pack type has its own pool.
    assert_eq!(
        s.post("/v1/images/generations", &json!({"prompt": "img"}))
            .await
            .code(),
        0
    );

    s.wait_final("videos/text2video", &first).await;
    let a = s
        .post("/v1/videos/text2video", &json!({"prompt": "three"}))
        .await;
    assert_eq!(
        a.code(),
        0,
        "slot should be free after the task ended: {}",
        a.body
    );
}

#[tokio::test]
async fn failed_tasks_free_their_slots_too() {
    let mut cfg = fast_config();
    cfg.concurrency.video = 1;
    cfg.content.fail_words = vec!["doomed".into()];
    let s = start(cfg).await;
    let id = s.create_t2v(json!({"prompt": "doomed"})).await;
    assert_eq!(
        s.post("/v1/videos/text2video", &json!({"prompt": "x"}))
            .await
            .code(),
        1303
    );
    s.wait_final("videos/text2video", &id).await;
    assert_eq!(
        s.post("/v1/videos/text2video", &json!({"prompt": "x"}))
            .await
            .code(),
        0
    );
}

#[tokio::test]
async fn image_tasks_hold_n_slots() {
    let mut cfg = fast_config();
    cfg.concurrency.image = 5;
    let s = start(cfg).await;
    assert_eq!(
        s.post("/v1/images/generations", &json!({"prompt": "a", "n": 4}))
            .await
            .code(),
        0
    );
    assert_eq!(s.sim.handle().slots_in_use(PackType::Image), 4);
    assert_eq!(
        s.post("/v1/images/generations", &json!({"prompt": "b", "n": 2}))
            .await
            .code(),
        1303
    );
    assert_eq!(
        s.post("/v1/images/generations", &json!({"prompt": "c", "n": 1}))
            .await
            .code(),
        0
    );
}

#[tokio::test]
async fn per_key_scope_gives_each_credential_its_own_pool() {
    let mut cfg = fast_config();
    cfg.concurrency.video = 1;
    cfg.concurrency.scope = ConcurrencyScope::Key;
    cfg.api_keys.push(SecretText::new("second-key"));
    let s = start(cfg).await;
    s.create_t2v(json!({"prompt": "jwt caller"})).await;
    let a = s
        .post_as(
            "/v1/videos/text2video",
            &json!({"prompt": "api key caller"}),
            Some("Bearer second-key"),
        )
        .await;
    assert_eq!(a.code(), 0, "{}", a.body);
    let a = s
        .post_as(
            "/v1/videos/text2video",
            &json!({"prompt": "again"}),
            Some("Bearer second-key"),
        )
        .await;
    assert_eq!(a.code(), 1303);
}

#[tokio::test]
async fn account_costs_show_units_going_down() {
    let s = start(fast_config()).await;
    let costs = "/account/costs?start_time=0&end_time=9999999999999";
    let remaining = |a: &common::Answer, name: &str| -> f64 {
        let infos = a.data()["resource_pack_subscribe_infos"]
            .as_array()
            .unwrap();
        let pack = infos
            .iter()
            .find(|p| p["resource_pack_name"] == name)
            .unwrap();
        pack["remaining_quantity"].as_f64().unwrap()
    };
    let before = s.get(costs).await;
    assert_eq!(before.data()["code"], 0);
    let pack = &before.data()["resource_pack_subscribe_infos"][0];
    assert_eq!(pack["resource_pack_id"].as_str().unwrap().len(), 32);
    assert_eq!(pack["status"], "online");
    assert_eq!(remaining(&before, "Simulated video pack"), 1000.0);

    let id = s
        .create_t2v(json!({"prompt": "x", "model_name": "kling-v2-5-turbo", "mode": "std"}))
        .await;
    let (task, _) = s.wait_final("videos/text2video", &id).await;
    assert_eq!(task["final_unit_deduction"], "1.5");
    let after = s.get(costs).await;
    assert_eq!(remaining(&after, "Simulated video pack"), 998.5);
    assert_eq!(remaining(&after, "Simulated image pack"), 1000.0);

    let filtered = s
        .get(&format!(
            "{costs}&resource_pack_name=Simulated%20image%20pack"
        ))
        .await;
    assert_eq!(
        filtered.data()["resource_pack_subscribe_infos"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let missing = s.get("/account/costs?end_time=1").await;
    assert_eq!((missing.status, missing.code()), (400, 1201));
    assert!(missing.message().contains("start_time"));
}

#[tokio::test]
async fn an_empty_pack_refuses_creates_with_1102() {
    let mut cfg = fast_config();
    cfg.account.packs = vec![PackConfig {
        name: "tiny".into(),
        pack_type: PackType::Video,
        total: 1.0,
        remaining: None,
    }];
    let s = start(cfg).await;
    let id = s.create_t2v(json!({"prompt": "x"})).await;
    s.wait_final("videos/text2video", &id).await;
    let a = s
        .post("/v1/videos/text2video", &json!({"prompt": "y"}))
        .await;
    assert_eq!((a.status, a.code()), (429, 1102));
    let costs = s.get("/account/costs?start_time=0&end_time=1").await;
    assert_eq!(
        costs.data()["resource_pack_subscribe_infos"][0]["status"],
        "runOut"
    );
}
