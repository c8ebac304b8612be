//! Property tests: every parser of untrusted input is total (never panics) and the signing
//! schemes round-trip.

use proptest::prelude::*;

use kling_api::auth;
use kling_api::callback::parse_callback;
use kling_api::routes::{self, OperationKind};
use kling_api::task::{NewTaskObject, TaskObject, TaskView};
use kling_api::webhook;

proptest! {
    #[test]
    fn bearer_and_jwt_helpers_never_panic(header in ".{0,80}", token in "[A-Za-z0-9_.=+/ -]{0,120}") {
        let _ = auth::bearer_token(Some(&header));
        let _ = auth::looks_like_jwt(&token);
        let _ = auth::peek_issuer(&token);
        prop_assert!(auth::verify_jwt(&token, "secret", 1_700_000_000, 10, Some(1800)).is_err());
    }

    #[test]
    fn jwt_round_trips_for_any_keys(
        ak in "[ -~]{1,40}",
        sk in "[ -~]{1,40}",
        now in 0i64..4_000_000_000,
        ttl in 1i64..100_000,
    ) {
        let token = auth::sign_jwt(&ak, &sk, now, ttl).unwrap();
        prop_assert!(auth::looks_like_jwt(&token));
        prop_assert_eq!(auth::peek_issuer(&token).unwrap(), ak.clone());
        let claims = auth::verify_jwt(&token, &sk, now, 0, None).unwrap();
        prop_assert_eq!(claims.exp, Some(now + ttl));
        let header = format!("Bearer {token}");
        prop_assert_eq!(auth::bearer_token(Some(&header)).unwrap(), token.as_str());
        let wrong = format!("{sk}x");
        prop_assert!(auth::verify_jwt(&token, &wrong, now, 0, None).is_err());
    }

    #[test]
    fn webhook_round_trips_and_rejects_any_other_body(
        key in proptest::collection::vec(any::<u8>(), 1..64),
        id in "[0-9]{1,20}",
        ts in 0i64..4_000_000_000,
        body in proptest::collection::vec(any::<u8>(), 0..256),
        flip in any::<usize>(),
    ) {
        use base64::Engine as _;
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key));
        let sig = webhook::sign(&secret, &id, ts, &body).unwrap();
        let ts_text = ts.to_string();
        prop_assert!(webhook::verify(&secret, &id, &ts_text, &sig, &body, ts, 300).is_ok());
        let mut other = body.clone();
        if other.is_empty() {
            other.push(0);
        } else {
            let i = flip % other.len();
            other[i] ^= 0x01;
        }
        prop_assert!(webhook::verify(&secret, &id, &ts_text, &sig, &other, ts, 300).is_err());
    }

    #[test]
    fn webhook_verify_never_panics(
        secret in ".{0,40}", id in ".{0,20}", ts in ".{0,20}", sig in ".{0,120}",
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = webhook::verify(&secret, &id, &ts, &sig, &body, 1_700_000_000, 300);
    }

    #[test]
    fn classify_is_total(method in "[A-Za-z]{0,7}", path in "(/[a-zA-Z0-9%._~-]{0,12}){0,5}", query in proptest::option::of(".{0,60}")) {
        let op = routes::classify(&method, &path, query.as_deref());
        // Only Unknown operations lack a template derived from the table.
        if op.kind != OperationKind::Unknown {
            prop_assert!(op.generation.is_some());
        }
        let _ = routes::query_pairs(query.as_deref());
    }

    #[test]
    fn legacy_query_paths_round_trip(id in "[A-Za-z0-9_-]{1,30}") {
        for route in routes::ROUTES.iter().filter(|r| r.is_async()) {
            let path = format!("{}/{id}", route.path);
            let op = routes::classify("GET", &path, None);
            match op.kind {
                OperationKind::QueryOne { task_id } => prop_assert_eq!(task_id, id.clone()),
                OperationKind::LookupByExternalId { external_task_id, .. } => {
                    prop_assert_eq!(external_task_id, id.clone())
                }
                other => prop_assert!(false, "unexpected {other:?} for {path}"),
            }
            prop_assert_eq!(op.family, Some(route.family));
        }
    }

    #[test]
    fn task_parsers_are_total(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_callback(&body);
        if let Ok(t) = serde_json::from_slice::<TaskObject>(&body) {
            let _ = (t.outcome(), t.usable_urls(), t.result_anomalies(), t.units_deducted());
        }
        if let Ok(t) = serde_json::from_slice::<NewTaskObject>(&body) {
            let _ = (t.outcome(), t.usable_urls(), t.result_anomalies(), t.units_deducted());
        }
    }

    #[test]
    fn task_views_never_panic_on_arbitrary_json_values(
        status in prop_oneof![Just("succeed".to_owned()), Just("succeeded".to_owned()), Just("failed".to_owned()), "[a-z]{0,8}"],
        url in proptest::option::of("[ a-z:/.]{0,12}"),
        wm in proptest::option::of("[ a-z:/.]{0,12}"),
        units in proptest::option::of("[0-9.a-z-]{0,6}"),
    ) {
        let v = serde_json::json!({
            "task_status": status, "final_unit_deduction": units,
            "task_result": {"videos": [{"url": url, "watermark_url": wm}]}
        });
        let t: TaskObject = serde_json::from_value(v).unwrap();
        let usable = t.usable_urls();
        prop_assert!(usable.iter().all(|u| !u.url.trim().is_empty()));
        if t.outcome() == kling_api::task::TaskOutcome::Succeeded {
            prop_assert_eq!(usable.len() + t.result_anomalies().iter()
                .filter(|a| matches!(a, kling_api::task::ResultAnomaly::EmptyUrl { .. })).count(), 1);
        }
    }
}
