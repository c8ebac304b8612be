//! Authentication answers over real HTTP: each refusal code with HTTP 401 and the docs'
//! message, and acceptance of tokens real clients send (extra claims, lowercase scheme).

mod common;

use common::{fast_config, jwt, now, start, token};
use kling_sim::{SecretText, TEST_ACCESS_KEY, TEST_SECRET_KEY};
use serde_json::json;

const COSTS: &str = "/account/costs?start_time=0&end_time=1";

#[tokio::test]
async fn missing_or_empty_authorization_is_1001() {
    let s = start(fast_config()).await;
    for auth in [None, Some(""), Some("Bearer ")] {
        let a = s.get_as(COSTS, auth).await;
        assert_eq!((a.status, a.code()), (401, 1001), "auth {auth:?}");
        assert_eq!(a.message(), "Authorization is empty");
        assert!(a.body.get("data").is_none());
        assert!(uuid_like(a.body["request_id"].as_str().unwrap()));
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().nth(14) == Some('4')
}

#[tokio::test]
async fn malformed_unknown_or_badly_signed_credentials_are_1002() {
    let s = start(fast_config()).await;
    let t = now();
    let wrong_secret = jwt(
        &json!({"iss": TEST_ACCESS_KEY, "exp": t + 600, "nbf": t - 5}),
        "not-the-secret",
    );
    let unknown_iss = jwt(
        &json!({"iss": "nobody", "exp": t + 600, "nbf": t - 5}),
        TEST_SECRET_KEY,
    );
    let no_exp = jwt(
        &json!({"iss": TEST_ACCESS_KEY, "nbf": t - 5}),
        TEST_SECRET_KEY,
    );
    let mut tampered = token();
    tampered.push('x');
    let cases = [
        "Basic abc".to_owned(),
        "Bearer not-a-configured-key".to_owned(),
        format!("Bearer {wrong_secret}"),
        format!("Bearer {unknown_iss}"),
        format!("Bearer {no_exp}"),
        format!("Bearer {tampered}"),
    ];
    for auth in &cases {
        let a = s.get_as(COSTS, Some(auth)).await;
        assert_eq!((a.status, a.code()), (401, 1002), "case {auth}");
        assert_eq!(a.message(), "Authorization is invalid");
    }
}

#[tokio::test]
async fn future_nbf_is_1003_and_past_exp_is_1004() {
    let s = start(fast_config()).await;
    let t = now();
    let early = jwt(
        &json!({"iss": TEST_ACCESS_KEY, "exp": t + 3600, "nbf": t + 600}),
        TEST_SECRET_KEY,
    );
    let a = s.get_as(COSTS, Some(&format!("Bearer {early}"))).await;
    assert_eq!(
        (a.status, a.code(), a.message()),
        (401, 1003, "Authorization is not yet valid")
    );

    let late = jwt(
        &json!({"iss": TEST_ACCESS_KEY, "exp": t - 600, "nbf": t - 2400}),
        TEST_SECRET_KEY,
    );
    let a = s.get_as(COSTS, Some(&format!("Bearer {late}"))).await;
    assert_eq!(
        (a.status, a.code(), a.message()),
        (401, 1004, "Authorization has expired")
    );
}

#[tokio::test]
async fn skew_within_leeway_is_tolerated() {
    let s = start(fast_config()).await;
    let t = now();
    // 10 s leeway by default; 3 s of skew either way must pass.
    let slightly_early = jwt(
        &json!({"iss": TEST_ACCESS_KEY, "exp": t + 600, "nbf": t + 3}),
        TEST_SECRET_KEY,
    );
    let just_expired = jwt(
        &json!({"iss": TEST_ACCESS_KEY, "exp": t - 3, "nbf": t - 600}),
        TEST_SECRET_KEY,
    );
    for token in [slightly_early, just_expired] {
        let a = s.get_as(COSTS, Some(&format!("Bearer {token}"))).await;
        assert_eq!((a.status, a.code()), (200, 0), "{}", a.body);
    }
}

#[tokio::test]
async fn extra_claims_and_lowercase_scheme_are_accepted() {
    let s = start(fast_config()).await;
    let t = now();
    let with_extras = jwt(
        &json!({"iss": TEST_ACCESS_KEY, "exp": t + 1800, "nbf": t - 5, "iat": t, "jti": "abc", "sub": "x"}),
        TEST_SECRET_KEY,
    );
    let a = s
        .get_as(COSTS, Some(&format!("bearer {with_extras}")))
        .await;
    assert_eq!((a.status, a.code()), (200, 0), "{}", a.body);
    let signed_by_kling_api =
        kling_api::auth::sign_jwt(TEST_ACCESS_KEY, TEST_SECRET_KEY, t, 1800).unwrap();
    let a = s
        .get_as(COSTS, Some(&format!("Bearer {signed_by_kling_api}")))
        .await;
    assert_eq!(a.code(), 0);
}

#[tokio::test]
async fn configured_api_key_is_accepted() {
    let mut cfg = fast_config();
    cfg.api_keys.push(SecretText::new("sim-opaque-api-key"));
    let s = start(cfg).await;
    let a = s.get_as(COSTS, Some("Bearer sim-opaque-api-key")).await;
    assert_eq!((a.status, a.code()), (200, 0));
}

#[tokio::test]
async fn max_lifetime_when_configured_refuses_long_tokens() {
    let mut cfg = fast_config();
    cfg.auth.max_lifetime_secs = Some(1800);
    let s = start(cfg).await;
    let t = now();
    let long = jwt(
        &json!({"iss": TEST_ACCESS_KEY, "exp": t + 86_400, "nbf": t - 5}),
        TEST_SECRET_KEY,
    );
    let a = s.get_as(COSTS, Some(&format!("Bearer {long}"))).await;
    assert_eq!((a.status, a.code()), (401, 1002));
    let a = s.get_as(COSTS, Some(&format!("Bearer {}", token()))).await;
    assert_eq!(a.code(), 0);
}

#[tokio::test]
async fn refused_calls_create_nothing() {
    let s = start(fast_config()).await;
    let a = s
        .post_as("/v1/videos/text2video", &json!({"prompt": "x"}), None)
        .await;
    assert_eq!(a.code(), 1001);
    let stats = s.sim.stats();
    assert_eq!(stats.creates_accepted, 0);
    assert_eq!(stats.route("POST /v1/videos/text2video"), 1);
}
