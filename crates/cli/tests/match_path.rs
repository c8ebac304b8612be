//! `kling-audit match-path`: an auditor holding the commit key finds the records of a path the
//! gateway does not know (recorded as route `other`, by its keyed commitment alone), and of a
//! query whose values the records do not all keep (by its commitment too), and nothing for a
//! path or query never requested, nor for a prompt of the same text.

use std::path::Path;

use kling_api::SecretString;
use kling_audit_gateway::GatewayConfig;

mod matching;
use matching::{json_of, kling_audit, the_one_match};

const PATH: &str = "/v1/not-a-kling-route/order-5521";
/// A known route with a query parameter the records keep by name only.
const KNOWN: &str = "/v1/videos/text2video?pageNum=1&token=order-5521";

/// Sends `GET PATH?x=1` and `GET KNOWN` through a gateway with its ledger at `dir` (keys in
/// `dir.keys`), in front of a simulator, and stops the gateway.
fn request_an_unknown_path(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sim = kling_sim::spawn(kling_sim::SimConfig::for_tests())
            .await
            .unwrap();
        let mut cfg = GatewayConfig::new(
            dir,
            reqwest::Url::parse(&sim.base_url()).unwrap(),
            kling_sim::TEST_ACCESS_KEY,
            SecretString::new(kling_sim::TEST_SECRET_KEY),
        );
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        let alice = kling_audit_gateway::actors::add(&cfg.auth.actors_file, "alice").unwrap();
        let gw = kling_audit_gateway::spawn(cfg).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let jwt =
            kling_api::auth::sign_jwt(&alice.access_key, alice.secret_key.expose(), now, 1800)
                .unwrap();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        for target in [format!("{PATH}?x=1"), KNOWN.to_owned()] {
            let resp = http
                .get(format!("{}{target}", gw.base_url()))
                .bearer_auth(&jwt)
                .send()
                .await
                .unwrap();
            assert!(resp.headers().contains_key("x-kling-audit-record"));
        }
        gw.shutdown().await.unwrap();
        sim.shutdown().await.unwrap();
    });
}

#[test]
fn a_requested_unknown_path_is_found_and_another_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    request_an_unknown_path(&dir);

    let out = kling_audit(&dir, &["match-path", "--path", PATH, "--format", "json"]);
    let found = the_one_match(&out, PATH);
    assert_eq!(found["type"], "gateway.request");
    assert_eq!(found["actor"], "alice");
    assert_eq!(found["path"], "path_hmac");

    // Text output names the same record.
    let out = kling_audit(&dir, &["match-path", "--path", PATH]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("type=gateway.request") && text.contains("path=path_hmac"),
        "{text}"
    );

    // Another path, one differing by a character, and the path as a prompt are not found.
    for other in ["/v1/not-a-kling-route/order-5522", "/v1/not-a-kling-route"] {
        let out = kling_audit(&dir, &["match-path", "--path", other, "--format", "json"]);
        assert_eq!(out.status.code(), Some(1), "{other}");
        assert_eq!(json_of(&out)["found"], false);
    }
    let out = kling_audit(&dir, &["match-prompt", "--prompt", PATH]);
    assert_eq!(out.status.code(), Some(1), "a path is not a prompt");

    // An explicit key: the right one finds it, another does not.
    let key_file = format!("@{}", tmp.path().join("audit.keys/commit.key").display());
    let out = kling_audit(
        &dir,
        &["match-path", "--path", PATH, "--commit-key", &key_file],
    );
    assert_eq!(out.status.code(), Some(0));
    let wrong = "11".repeat(32);
    let out = kling_audit(
        &dir,
        &["match-path", "--path", PATH, "--commit-key", &wrong],
    );
    assert_eq!(out.status.code(), Some(1));

    // A whole URL, a fragment, or a query whose values the records keep (so commit nothing of)
    // is a usage problem rather than a "not found".
    for bad in [
        format!("http://127.0.0.1{PATH}"),
        format!("{PATH}#x"),
        format!("{PATH}?pageNum=1"),
    ] {
        let out = kling_audit(&dir, &["match-path", "--path", &bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

#[test]
fn a_requested_query_with_unrecorded_values_is_found_with_its_path_and_no_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("audit");
    request_an_unknown_path(&dir);

    // The path and query as sent: on the unknown path (checked against path_hmac) and on a
    // known route (checked against the route the record names).
    let unknown = format!("{PATH}?x=1");
    for candidate in [unknown.as_str(), KNOWN] {
        let out = kling_audit(
            &dir,
            &["match-path", "--path", candidate, "--format", "json"],
        );
        let found = the_one_match(&out, candidate);
        assert_eq!(found["type"], "gateway.request");
        assert_eq!(found["path"], "query_hmac");
    }

    // Another value, the same query on another path or route, another key: not found.
    for other in [
        format!("{PATH}?x=2"),
        "/v1/not-a-kling-route/order-5522?x=1".to_owned(),
        "/v1/images/generations?pageNum=1&token=order-5521".to_owned(),
        "/v1/videos/text2video?pageNum=1&token=order-5522".to_owned(),
        "/v1/videos/text2video/123?pageNum=1&token=order-5521".to_owned(),
    ] {
        let out = kling_audit(&dir, &["match-path", "--path", &other, "--format", "json"]);
        assert_eq!(out.status.code(), Some(1), "{other}");
        assert_eq!(json_of(&out)["found"], false, "{other}");
    }
    let wrong = "11".repeat(32);
    let out = kling_audit(
        &dir,
        &["match-path", "--path", KNOWN, "--commit-key", &wrong],
    );
    assert_eq!(out.status.code(), Some(1));
    // A query is not a prompt.
    let out = kling_audit(&dir, &["match-prompt", "--prompt", "x=1"]);
    assert_eq!(out.status.code(), Some(1));
}
