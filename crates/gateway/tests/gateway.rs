//! The gateway end to end over real HTTP on 127.0.0.1: the simulator as upstream, a real
//! ledger in a temporary directory, actors signing JWTs as a Kling SDK would.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use kling_api::auth::sign_jwt;
use kling_audit_gateway::config::FailureMode;
use serde_json::{json, Value};

#[tokio::test]
async fn create_poll_succeed_is_recorded_in_order_and_resigned_upstream() {
    let mut env = setup(sim_config(), |_| {}).await;
    let body = json!({
        "model_name": "kling-v1", "prompt": "a lighthouse at dusk", "duration": "5",
        "mode": "std", "external_task_id": "e2e-1",
    });
    let (status, headers, created) = env.post(&env.alice, "/v1/videos/text2video", &body).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["code"], 0);
    let task_id = created["data"]["task_id"].as_str().unwrap().to_owned();
    let request_seq: u64 = record_header(&headers);
    let overhead: u64 = headers["x-kling-audit-overhead-us"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead > 0);

    let done = env
        .poll_until_final(&env.alice, "/v1/videos/text2video", &task_id)
        .await;
    assert_eq!(done["data"]["task_status"], "succeed");

    // The simulator knows only the organisation's key: a create that it accepted was signed
    // with that key, not with alice's (which it would refuse with 1002).
    let stats = env.sim.stats();
    assert_eq!(stats.creates_accepted, 1);
    assert_eq!(stats.route("POST /v1/videos/text2video"), 1);
    assert!(stats.route("GET /v1/videos/text2video/{id}") >= 1);
    let direct = env
        .http
        .get(format!(
            "{}/v1/videos/text2video/{task_id}",
            env.sim.base_url()
        ))
        .bearer_auth(jwt(&env.alice))
        .send()
        .await
        .unwrap();
    let (direct_status, _, direct_body) = split(direct).await;
    assert_eq!(
        (direct_status, direct_body["code"].as_i64()),
        (401, Some(1002))
    );

    let report = env.stop().await;
    assert!(report.sealed);

    let records = records(&env.ledger_dir);
    assert_eq!(records.first().unwrap()["type"], "gateway.start");
    assert_eq!(records.last().unwrap()["type"], "gateway.shutdown");
    assert_eq!(report.shutdown_seq, Some(seq(records.last().unwrap())));

    let request = records.iter().find(|r| seq(r) == request_seq).unwrap();
    assert_eq!(request["type"], "gateway.request");
    assert_eq!(request["actor"], "alice");
    let d = &request["details"];
    assert_eq!(d["operation"], "create");
    assert_eq!(d["family"], "text-to-video");
    assert_eq!(d["route"], "/v1/videos/text2video");
    assert_eq!(d["model"], "kling-v1");
    assert_eq!(d["model_missing"], false);
    assert_eq!(d["params"]["mode"], "std");
    assert_eq!(d["params"]["duration"], "5");
    assert_eq!(d["external_task_id"], "e2e-1");
    assert_eq!(d["prompts"][0]["chars"], 20);
    assert_eq!(d["source_ip"], "127.0.0.1");
    assert_eq!(d["credential"]["verified"], true);
    assert!(d["credential"]["key_fp"]
        .as_str()
        .unwrap()
        .starts_with("kf_"));

    let response = records
        .iter()
        .find(|r| r["type"] == "gateway.response" && r["details"]["request_seq"] == request_seq)
        .unwrap();
    assert!(seq(response) > request_seq);
    assert_eq!(response["details"]["request_id"], d["request_id"]);
    assert_eq!(response["details"]["task_id"], task_id.as_str());
    assert_eq!(response["details"]["code"], 0);
    assert_eq!(response["details"]["http_status"], 200);

    let changes: Vec<&Value> = of_type(&records, "task.status")
        .into_iter()
        .filter(|r| r["details"]["task_id"] == task_id.as_str())
        .collect();
    assert!(!changes.is_empty());
    assert!(changes.iter().all(|c| seq(c) > seq(response)));
    // Only changes are recorded: no two consecutive records with the same status.
    for pair in changes.windows(2) {
        assert_eq!(pair[1]["details"]["from"], pair[0]["details"]["to"]);
        assert_ne!(pair[1]["details"]["to"], pair[0]["details"]["to"]);
    }
    // Each change seen by a poll is written in one group commit with that poll's response,
    // joined to it by the request id.
    for change in &changes {
        let d = &change["details"];
        assert_eq!(d["source"], "poll");
        assert!(d["response_seq"].is_null(), "{change}");
        let its_response = records
            .iter()
            .find(|r| {
                r["type"] == "gateway.response" && r["details"]["request_id"] == d["request_id"]
            })
            .unwrap_or_else(|| panic!("no response record for {change}"));
        assert!(seq(its_response) < seq(change));
        assert_eq!(its_response["details"]["request_seq"], d["request_seq"]);
    }
    let last = changes.last().unwrap();
    assert_eq!(last["details"]["to"], "succeed");
    assert_eq!(last["details"]["final"], true);
    assert_eq!(last["details"]["outputs_count"], 1);
    assert!(last["details"]["units_deducted"].is_string());
    assert_eq!(last["actor"], "alice");
    let polls = records
        .iter()
        .filter(|r| r["type"] == "gateway.request" && r["details"]["operation"] == "query-one")
        .count();
    assert!(
        polls >= changes.len(),
        "polls {polls}, changes {}",
        changes.len()
    );
}

/// A client without credentials cannot fill the ledger: past a burst, its refusals are
/// counted into one `gateway.denied_summary` record, written at the latest at shutdown, so
/// every refusal is in the ledger one way or the other.
#[tokio::test]
async fn a_flood_of_unauthenticated_requests_is_recorded_in_a_summary() {
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    let sent = 80;
    let mut own = 0;
    let mut summarized = 0;
    for _ in 0..sent {
        let answer = env
            .http
            .get(env.url("/v1/videos/text2video"))
            .send()
            .await
            .unwrap();
        let (status, headers, body) = split(answer).await;
        assert_eq!((status, body["code"].as_i64()), (401, Some(1001)));
        match headers["x-kling-audit-record"].to_str().unwrap() {
            "summarized" => summarized += 1,
            seq => {
                seq.parse::<u64>().expect("a record's seq");
                own += 1;
            }
        }
    }
    assert!((20..sent).contains(&own), "{own} recorded one by one");
    assert_eq!(own + summarized, sent);
    env.stop().await;
    env.assert_nothing_forwarded(&before);
    let records = records(&env.ledger_dir);
    let denied = of_type(&records, "gateway.denied");
    assert_eq!(denied.len(), own);
    let summaries = of_type(&records, "gateway.denied_summary");
    assert_eq!(summaries.len(), 1);
    let summary = &summaries[0];
    assert_eq!(summary["actor"], "unauthenticated");
    assert_eq!(summary["details"]["source_ip"], "127.0.0.1");
    assert_eq!(summary["details"]["refusals"], summarized);
    assert_eq!(summary["details"]["reasons"]["bad-header"], summarized);
}

/// Rotating an actor's keys takes effect in the running gateway: the old token is refused as
/// an unknown key, the new keys are served under the same actor name, and an actor disabled
/// then enabled again is served again.
#[tokio::test]
async fn a_rotated_or_re_enabled_actor_is_served_by_its_current_keys_alone() {
    const COSTS: &str = "/account/costs?start_time=0&end_time=1";
    let mut env = setup(sim_config(), |_| {}).await;
    let actors_file = env.keys_dir().join("actors.json");
    let (status, _, _) = env.get(&env.alice, COSTS).await;
    assert_eq!(status, 200);
    let old = env.alice.clone();
    let new = kling_audit_gateway::actors::rotate(&actors_file, "alice").unwrap();
    // The running gateway picks the change up from the file within about a second.
    let eventually = |actor: kling_audit_gateway::actors::NewActor, want: u16| {
        let env = &env;
        async move {
            for _ in 0..100 {
                let (status, _, body) = env.get(&actor, COSTS).await;
                if status == want {
                    return body;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{} never answered {want}", actor.name);
        }
    };
    let refused = eventually(old, 401).await;
    assert_eq!(refused["code"], 1002);
    let (status, _, _) = env.get(&new, COSTS).await;
    assert_eq!(status, 200);
    assert!(kling_audit_gateway::actors::disable(&actors_file, "alice").unwrap());
    eventually(new.clone(), 401).await;
    assert!(kling_audit_gateway::actors::enable(&actors_file, "alice").unwrap());
    eventually(new.clone(), 200).await;
    env.stop().await;
    let records = records(&env.ledger_dir);
    let served = of_type(&records, "gateway.request");
    assert!(served.len() >= 3);
    assert!(
        served.iter().all(|r| r["actor"] == "alice"),
        "one actor throughout"
    );
}

#[tokio::test]
async fn auth_failures_answer_kling_codes_and_forward_nothing() {
    let env = setup(sim_config(), |_| {}).await;
    let path = "/v1/videos/text2video";
    let body = json!({"prompt": "p"});
    let send = |auth: Option<String>| {
        let mut req = env.http.post(env.url(path)).json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { split(req.send().await.unwrap()).await }
    };
    let (status, headers, body) = send(None).await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1001)));
    assert!(headers.contains_key("x-kling-audit-record"));

    let forged = sign_jwt(&env.alice.access_key, "not-alices-secret", now(), 1800).unwrap();
    let (status, _, body) = send(Some(format!("Bearer {forged}"))).await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1002)));

    let unknown = sign_jwt("nobody", "secret", now(), 1800).unwrap();
    let (_, _, body) = send(Some(format!("Bearer {unknown}"))).await;
    assert_eq!(body["code"], 1002);

    let (_, _, body) = send(Some("Bearer opaque-api-key".into())).await;
    assert_eq!(body["code"], 1002);

    let expired = sign_jwt(
        &env.alice.access_key,
        env.alice.secret_key.expose(),
        now() - 4000,
        1800,
    )
    .unwrap();
    let (status, _, body) = send(Some(format!("Bearer {expired}"))).await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1004)));

    let future = sign_jwt(
        &env.alice.access_key,
        env.alice.secret_key.expose(),
        now() + 4000,
        1800,
    )
    .unwrap();
    let (_, _, body) = send(Some(format!("Bearer {future}"))).await;
    assert_eq!(body["code"], 1003);

    // Disable bob; the running gateway picks the change up from the file.
    let (status, _, _) = env
        .post(&env.bob, "/v1/videos/text2video", &json!({"prompt": "ok"}))
        .await;
    assert_eq!(status, 200);
    let actors_file = env.keys_dir().join("actors.json");
    assert!(kling_audit_gateway::actors::disable(&actors_file, "bob").unwrap());
    let mut refused = None;
    for _ in 0..100 {
        let (status, _, body) = env.get(&env.bob, "/v1/videos/text2video").await;
        if status == 401 {
            refused = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("disabled actor still accepted");
    assert_eq!(refused["code"], 1000);

    let stats = env.sim.stats();
    let creates = stats.route("POST /v1/videos/text2video");
    assert_eq!(creates, 1, "only bob's valid create reached the upstream");

    let mut env = env;
    env.stop().await;
    let records = records(&env.ledger_dir);
    let denied = of_type(&records, "gateway.denied");
    let codes: Vec<i64> = denied
        .iter()
        .map(|r| r["details"]["code"].as_i64().unwrap())
        .collect();
    for code in [1001, 1002, 1003, 1004, 1000] {
        assert!(codes.contains(&code), "{code} in {codes:?}");
    }
    let disabled = denied
        .iter()
        .find(|r| r["details"]["code"] == 1000)
        .unwrap();
    assert_eq!(disabled["actor"], "bob");
    assert_eq!(disabled["details"]["reason"], "actor-disabled");
}

#[tokio::test]
async fn a_token_accepted_once_is_refused_when_it_expires() {
    let env = setup(sim_config(), |c| c.auth.leeway_secs = 0).await;
    let token = sign_jwt(
        &env.alice.access_key,
        env.alice.secret_key.expose(),
        now(),
        2,
    )
    .unwrap();
    let send = || {
        env.http
            .get(env.url("/v1/videos/text2video"))
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    let (status, _, _) = split(send().await.unwrap()).await;
    assert_eq!(status, 200, "the fresh token is accepted (and remembered)");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (status, _, body) = split(send().await.unwrap()).await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1004)));
}

/// An upstream that reads ids otherwise than the gateway: every query answers with the one
/// task it created. It stands for a Kling whose reading of some id the gateway did not
/// foresee, which the simulator, reading ids as the gateway does, cannot play.
async fn upstream_answering_one_task() -> String {
    use axum::routing::any;
    let task = json!({"task_id": "T-alice", "task_status": "processing",
                      "created_at": 1, "updated_at": 2});
    let app = axum::Router::new().fallback(any(move || {
        let task = task.clone();
        async move {
            axum::Json(json!({"code": 0, "message": "SUCCEED", "request_id": "r", "data": task}))
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Alice creates her task through [`upstream_answering_one_task`]; bob's GET of `path` must get
/// Kling's not-found answer, without the task, and alice's the task. Returns the records.
async fn only_the_owner_reads_through(
    path: &str,
    configure: impl FnOnce(&mut kling_audit_gateway::config::GatewayConfig),
) -> Vec<Value> {
    let upstream = upstream_answering_one_task().await;
    let mut env = setup(sim_config(), |cfg| {
        cfg.upstream.url = reqwest::Url::parse(&upstream).unwrap();
        configure(cfg);
    })
    .await;
    assert_eq!(env.create_task(&env.alice, "mine").await, "T-alice");
    let (status, _, body) = env.get(&env.bob, path).await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(1203)), "{body}");
    assert!(!body.to_string().contains("T-alice"), "{body}");
    let (status, _, body) = env.get(&env.alice, path).await;
    assert_eq!(
        (status, body["data"]["task_id"].as_str()),
        (200, Some("T-alice"))
    );
    env.stop().await;
    records(&env.ledger_dir)
}

/// The `gateway.response` records that say an answer was withheld.
fn withheld(records: &[Value]) -> Vec<&Value> {
    of_type(records, "gateway.response")
        .into_iter()
        .filter(|r| r["details"]["outcome"] == "withheld")
        .collect()
}

/// A query the gateway lets through as the caller's (an id it does not know, under
/// `tasks.unknown = "forward"`) may still reach another actor's task if Kling reads the id
/// otherwise. The answer is withheld, and recorded so.
#[tokio::test]
async fn an_answer_naming_another_actors_task_is_withheld() {
    let records =
        only_the_owner_reads_through("/v1/videos/text2video/an-id-the-gateway-never-saw", |cfg| {
            cfg.tasks.unknown = kling_audit_gateway::config::UnknownTaskPolicy::Forward;
        })
        .await;
    let withheld = withheld(&records);
    assert_eq!(withheld.len(), 1);
    assert_eq!(withheld[0]["actor"], "bob");
    assert_eq!(withheld[0]["details"]["http_status"], 404);
    assert_eq!(withheld[0]["details"]["task_id"], "T-alice");
    assert!(!of_type(&records, "task.status")
        .iter()
        .any(|r| r["actor"] == "bob"));
}

/// A path the gateway does not recognise is forwarded unchecked, but Kling might read it as a
/// task query (a route with a segment more, say): an answer naming another actor's task is
/// withheld all the same, and recorded so.
#[tokio::test]
async fn an_unknown_path_answering_with_another_actors_task_is_withheld() {
    let records =
        only_the_owner_reads_through("/v1/videos/text2video/T-alice/detail", |_| {}).await;
    let withheld = withheld(&records);
    assert_eq!(withheld.len(), 1);
    assert_eq!(withheld[0]["actor"], "bob");
    assert_eq!(withheld[0]["details"]["task_id"], "T-alice");
    assert_eq!(withheld[0]["details"]["operation"], "unknown");
}

/// The ownership check reads one value of a parameter and Kling might read another: a query
/// naming tasks twice is refused, unforwarded and recorded, even when the first value is the
/// caller's own.
#[tokio::test]
async fn a_query_repeating_a_task_parameter_is_refused_unforwarded() {
    let mut env = setup(sim_config(), |_| {}).await;
    for (actor, ext) in [(&env.alice, "alice-1"), (&env.bob, "bob-1")] {
        let (status, _, _) = env
            .post(
                actor,
                "/v1/videos/text2video",
                &json!({"prompt": "mine", "external_task_id": ext}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let before = env.sim.stats();
    for path in [
        "/v1/videos/text2video?external_task_id=bob-1&external_task_id=alice-1",
        "/v1/videos/text2video?external_task_id=bob-1&pageNum=1&external_task_id=bob-1",
        "/tasks?task_ids=1&task_ids=2",
        "/tasks?external_task_ids=bob-1&external_task_ids=alice-1",
    ] {
        let (status, headers, body) = env.get(&env.bob, path).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(1200)),
            "{path}: {body}"
        );
        assert!(body.get("data").is_none(), "{path}");
        assert!(headers.contains_key("x-kling-audit-record"), "{path}");
    }
    env.assert_nothing_forwarded(&before);
    // Once is fine.
    let (status, _, body) = env
        .get(&env.bob, "/v1/videos/text2video?external_task_id=bob-1")
        .await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    env.stop().await;
    let records = records(&env.ledger_dir);
    assert_denied(&records, 4, "bob", "query-repeats-parameter", None);
    let denied = of_type(&records, "gateway.denied");
    assert_eq!(
        denied[0]["details"]["repeated_parameter"],
        "external_task_id"
    );
    assert_eq!(denied[2]["details"]["repeated_parameter"], "task_ids");
}

#[tokio::test]
async fn another_actors_task_is_not_found_and_never_forwarded() {
    let mut env = setup(sim_config(), |_| {}).await;
    let (_, _, created) = env
        .post(
            &env.alice,
            "/v1/videos/text2video",
            &json!({"prompt": "mine", "external_task_id": "alice-1"}),
        )
        .await;
    let task_id = created["data"]["task_id"].as_str().unwrap().to_owned();
    let bob_task = env.create_task(&env.bob, "bob's").await;
    let before = env.sim.stats();

    for path in [
        format!("/v1/videos/text2video/{task_id}"),
        "/v1/videos/text2video/alice-1".to_owned(),
        "/v1/videos/text2video?external_task_id=alice-1".to_owned(),
        "/v1/videos/text2video/999999999999999999".to_owned(),
    ] {
        let (status, headers, body) = env.get(&env.bob, &path).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (404, Some(1203)),
            "{path}: {body}"
        );
        assert!(body.get("data").is_none());
        assert!(headers.contains_key("x-kling-audit-record"));
    }
    let after = env.sim.stats();
    assert_eq!(
        after.requests_total, before.requests_total,
        "nothing was forwarded"
    );

    // The owner still gets it.
    let (status, _, body) = env
        .get(&env.alice, &format!("/v1/videos/text2video/{task_id}"))
        .await;
    assert_eq!(
        (status, body["data"]["task_id"].as_str()),
        (200, Some(task_id.as_str()))
    );

    // Lists are narrowed to the caller's tasks.
    let (status, _, list) = env
        .get(&env.bob, "/v1/videos/text2video?pageNum=1&pageSize=30")
        .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [bob_task.as_str()]);

    env.stop().await;
    let records = records(&env.ledger_dir);
    let denied = of_type(&records, "gateway.denied");
    assert_eq!(denied.len(), 4);
    assert!(denied
        .iter()
        .all(|r| r["actor"] == "bob" && r["details"]["code"] == 1203));
    assert_eq!(denied[0]["details"]["reason"], "task-of-another-actor");
    assert_eq!(denied[3]["details"]["reason"], "task-unknown-to-gateway");
    let narrowed = of_type(&records, "gateway.response")
        .into_iter()
        .find(|r| r["details"]["operation"] == "query-list")
        .unwrap();
    assert_eq!(narrowed["details"]["narrowed_out"], 1);
    assert_eq!(narrowed["details"]["listed"], 1);
}

#[tokio::test]
async fn an_external_id_the_legacy_api_ignores_does_not_claim_another_actors_task() {
    // A legacy create reads `external_task_id` at the top level only; one tucked into
    // `options` names no task, so it must not bind the id to alice before bob uses it.
    let mut env = setup(sim_config(), |_| {}).await;
    let decoy = json!({"prompt": "a", "options": {"external_task_id": "order-77"}});
    let (status, _, created) = env.post(&env.alice, "/v1/videos/text2video", &decoy).await;
    assert_eq!(status, 200, "{created}");
    let real = json!({"prompt": "b", "external_task_id": "order-77"});
    let (status, _, created) = env.post(&env.bob, "/v1/videos/text2video", &real).await;
    assert_eq!(status, 200, "{created}");
    let bob_task = created["data"]["task_id"].as_str().unwrap().to_owned();

    let lookup = "/v1/videos/text2video?external_task_id=order-77";
    let (status, _, body) = env.get(&env.alice, lookup).await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(1203)), "{body}");
    assert!(body.get("data").is_none(), "{body}");
    let (status, _, body) = env.get(&env.bob, lookup).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["task_id"], bob_task.as_str());

    env.stop().await;
    let records = records(&env.ledger_dir);
    let creates: Vec<&Value> = of_type(&records, "gateway.request")
        .into_iter()
        .filter(|r| r["details"]["operation"] == "create")
        .collect();
    assert_eq!(creates[0]["details"]["external_task_id"], Value::Null);
    assert_eq!(creates[1]["details"]["external_task_id"], "order-77");
}

#[tokio::test]
async fn ownership_survives_a_restart() {
    let mut env = setup(sim_config(), |_| {}).await;
    let (_, _, created) = env
        .post(&env.alice, "/v1/videos/text2video", &json!({"prompt": "x"}))
        .await;
    let task_id = created["data"]["task_id"].as_str().unwrap().to_owned();
    env.stop().await;

    let upstream = reqwest::Url::parse(&env.sim.base_url()).unwrap();
    let mut cfg = kling_audit_gateway::GatewayConfig::new(
        &env.ledger_dir,
        upstream,
        ORG_AK,
        kling_api::SecretString::new(ORG_SK),
    );
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    env.gw = Some(kling_audit_gateway::spawn(cfg).unwrap());
    let (status, _, _) = env
        .get(&env.bob, &format!("/v1/videos/text2video/{task_id}"))
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = env
        .get(&env.alice, &format!("/v1/videos/text2video/{task_id}"))
        .await;
    assert_eq!(status, 200);
    env.stop().await;
    let records = records(&env.ledger_dir);
    let starts = of_type(&records, "gateway.start");
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1]["details"]["tasks_rebuilt"], 1);
}

/// A receiver standing in for the app's webhook endpoint: fails the first `fail_first`
/// deliveries with 500, then accepts.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    fail_first: usize,
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut seen = r.seen.lock().unwrap();
    seen.push((headers, body));
    if seen.len() <= r.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

#[tokio::test]
async fn callbacks_are_recorded_verified_and_relayed_with_retries() {
    let secret = format!(
        "whsec_{}",
        base64_encode(b"a webhook secret of 32 bytes....")
    );
    let mut sim_cfg = sim_config();
    sim_cfg.webhook_secret = Some(kling_sim::SecretText::new(secret.clone()));
    let gw_secret = secret.clone();
    let mut env = setup(sim_cfg, move |cfg| {
        cfg.callbacks.webhook_secret = Some(kling_api::SecretString::new(gw_secret));
        cfg.callbacks.relay_attempts = 3;
    })
    .await;

    let receiver = Receiver {
        fail_first: 2,
        ..Receiver::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let recv_addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let callback_url = format!("http://{recv_addr}/hook?token=app-secret-token");
    let (status, _, created) = env
        .post(
            &env.alice,
            "/v1/videos/text2video",
            &json!({"prompt": "with callback", "callback_url": callback_url}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let task_id = created["data"]["task_id"].as_str().unwrap().to_owned();

    // The simulator sends `processing` and the final state; the first needs three attempts.
    let mut delivered = Vec::new();
    for _ in 0..400 {
        delivered = receiver
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, b)| serde_json::from_slice::<Value>(b).ok())
            .map(|v| v["task_status"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>();
        if delivered.iter().any(|s| s == "succeed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(delivered.iter().any(|s| s == "succeed"), "{delivered:?}");
    {
        let seen = receiver.seen.lock().unwrap();
        let (headers, body) = seen.last().unwrap();
        // The body arrives unchanged, still verifiable with Kling's signature.
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["task_id"], task_id.as_str());
        assert!(headers.contains_key("webhook-signature"));
        assert!(headers.contains_key("x-kling-audit-callback-record"));
    }
    // The upstream was given the gateway's endpoint, never the app's URL.
    let sim_task = env.sim.handle().task(&task_id).unwrap();
    assert!(!sim_task.to_string().contains("app-secret-token"));
    assert!(env.sim.stats().callbacks_delivered >= 2);

    env.stop().await;
    server.abort();
    let records = records(&env.ledger_dir);
    let received = of_type(&records, "callback.received");
    assert!(received.len() >= 2);
    assert!(
        received
            .iter()
            .all(|r| r["details"]["signature"] == "valid"),
        "{received:?}"
    );
    assert!(received.iter().all(|r| r["actor"] == "alice"));
    assert_eq!(received[0]["details"]["task_id"], task_id.as_str());
    assert_eq!(received[0]["details"]["relay_host"], "127.0.0.1");

    let relays = of_type(&records, "callback.relay");
    let first: Vec<&&Value> = relays
        .iter()
        .filter(|r| r["details"]["received_seq"] == seq(received[0]))
        .collect();
    let outcomes: Vec<(u64, &str)> = first
        .iter()
        .map(|r| {
            (
                r["details"]["attempt"].as_u64().unwrap(),
                r["details"]["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(outcomes, [(1, "refused"), (2, "refused"), (3, "delivered")]);
    assert_eq!(first[0]["details"]["http_status"], 500);
    assert!(first.iter().all(|r| seq(r) > seq(received[0])));
    let request = of_type(&records, "gateway.request")
        .into_iter()
        .find(|r| r["details"]["operation"] == "create")
        .unwrap();
    assert_eq!(request["details"]["callback"]["host"], "127.0.0.1");
    assert_eq!(request["details"]["callback"]["relayed"], true);
    assert!(!records
        .iter()
        .any(|r| r.to_string().contains("app-secret-token")));
    // A callback also moves the task's recorded status, marked as coming from a callback.
    assert!(of_type(&records, "task.status")
        .iter()
        .any(|r| r["details"]["source"] == "callback"));
}

#[tokio::test]
async fn forged_callback_tokens_are_refused_and_recorded() {
    let mut env = setup(sim_config(), |_| {}).await;
    let resp = env
        .http
        .post(env.url("/_gateway/callback/eyJhIjoibWFsbG9yeSJ9.00000000000000000000000000000000"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    env.stop().await;
    let records = records(&env.ledger_dir);
    assert_eq!(of_type(&records, "callback.rejected").len(), 1);
    assert!(of_type(&records, "callback.relay").is_empty());
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let token = "admin-token-for-tests-0001";
    let mut env = setup(sim_config(), |cfg| {
        cfg.admin_token = Some(kling_api::SecretString::new(token));
    })
    .await;
    let get = |path: &str| env.http.get(env.url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(get("/metrics").await.unwrap().status(), 401);

    env.post(&env.alice, "/v1/videos/text2video", &json!({"prompt": "m"}))
        .await;
    let text = env
        .http
        .get(env.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "kling_gateway_requests_total{route=\"/v1/videos/text2video\",outcome=\"ok\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("kling_gateway_upstream_latency_seconds_count 1"));
    assert!(text.contains("kling_gateway_overhead_seconds_count 1"));
    assert!(text.contains("kling_gateway_ledger_append_seconds_bucket"));
    assert!(text.contains("kling_gateway_ledger_queue_depth "));
    assert!(text.contains("kling_gateway_unaudited_requests_total 0"));
    env.stop().await;
}

#[tokio::test]
async fn unknown_routes_pass_through_and_are_recorded() {
    let mut env = setup(sim_config(), |_| {}).await;
    let (status, _, body) = env
        .get(&env.alice, "/v1/not-a-kling-route/x?secret=abc")
        .await;
    assert!(status >= 400, "the simulator's own answer: {body}");
    assert_eq!(env.sim.stats().route("unmatched"), 1);
    env.stop().await;
    let records = records(&env.ledger_dir);
    let req = of_type(&records, "gateway.request")
        .into_iter()
        .find(|r| r["details"]["operation"] == "unknown")
        .unwrap();
    assert_eq!(req["details"]["route"], "other");
    assert_eq!(req["details"]["query_other_names"], json!(["secret"]));
    assert!(!req.to_string().contains("abc\""));
}

/// A path the gateway does not know is recorded as route `other`, and by its keyed commitment
/// alone: an auditor holding the commit key can tell which path was asked for, while the path,
/// which may carry caller data, stays out of the ledger. Refusals of such a path carry it too.
#[tokio::test]
async fn an_unknown_path_is_recorded_by_its_keyed_commitment_not_its_text() {
    let mut env = setup(sim_config(), |_| {}).await;
    let path = "/v1/not-a-kling-route/UNLISTEDPATH-7d41";
    let (status, headers, body) = env.get(&env.alice, &format!("{path}?q=1")).await;
    assert!(status >= 400, "the simulator's own answer: {body}");
    let forwarded = record_header(&headers);
    // Refused before it is forwarded: unauthenticated, and a method the gateway does not serve.
    let before = env.sim.stats();
    let resp = env.http.get(env.url(path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let unauthenticated = record_header(resp.headers());
    let resp = env
        .http
        .delete(env.url(path))
        .bearer_auth(jwt(&env.alice))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let method = record_header(resp.headers());
    env.assert_nothing_forwarded(&before);
    // A known route is recorded by its template, without a commitment.
    env.get(&env.alice, "/v1/videos/text2video?pageNum=1").await;
    env.stop().await;

    let key = std::fs::read_to_string(env.keys_dir().join("commit.key")).unwrap();
    let key = kling_audit_ledger::keys::parse_key_hex(&env.keys_dir(), &key).unwrap();
    let expected = kling_audit_ledger::Commitments::new(key).path(path);
    let records = records(&env.ledger_dir);
    for (seq_named, kind, reason) in [
        (forwarded, "gateway.request", None),
        (unauthenticated, "gateway.denied", Some("bad-header")),
        (method, "gateway.denied", Some("method-not-allowed")),
    ] {
        let record = records.iter().find(|r| seq(r) == seq_named).unwrap();
        assert_eq!(record["type"], kind, "{record}");
        if let Some(reason) = reason {
            assert_eq!(record["details"]["reason"], reason, "{record}");
        }
        assert_eq!(record["details"]["route"], "other", "{record}");
        assert_eq!(
            record["details"]["path_hmac"],
            expected.as_str(),
            "{record}"
        );
    }
    let text: String = records.iter().map(|r| r.to_string()).collect();
    assert!(!text.contains("UNLISTEDPATH"), "the path is not recorded");
    assert!(of_type(&records, "gateway.request")
        .iter()
        .filter(|r| r["details"]["route"] != "other")
        .all(|r| r["details"].get("path_hmac").is_none()));
}

/// A prompt sent to a route the gateway does not list is committed like a known route's, so
/// that an auditor matching a prompt finds the call; the text itself is never recorded.
#[tokio::test]
async fn a_prompt_sent_to_an_unknown_route_is_committed_not_lost() {
    let mut env = setup(sim_config(), |_| {}).await;
    let prompt = "UNLISTEDPROMPT a heron over a frozen lake";
    let (status, _, body) = env
        .post(
            &env.alice,
            "/v1/videos/not-yet-listed",
            &json!({"prompt": prompt, "negative_prompt": "blur", "model_name": "kling-v9"}),
        )
        .await;
    assert!(status >= 400, "the simulator's own answer: {body}");
    env.stop().await;
    let records = records(&env.ledger_dir);
    let req = of_type(&records, "gateway.request")
        .into_iter()
        .find(|r| r["details"]["operation"] == "unknown")
        .unwrap();
    let prompts = req["details"]["prompts"].as_array().unwrap();
    let fields: Vec<_> = prompts
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["negative_prompt", "prompt"], "{req}");
    let committed = prompts.iter().find(|p| p["field"] == "prompt").unwrap();
    assert_eq!(committed["chars"], prompt.chars().count());
    assert_eq!(committed["hmac"].as_str().unwrap().len(), 64);
    assert!(!records
        .iter()
        .any(|r| r.to_string().contains("UNLISTEDPROMPT")));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn passthrough_forwards_the_callers_own_key_and_records_its_fingerprint() {
    let mut env = setup(sim_config(), |cfg| {
        cfg.auth.mode = kling_audit_gateway::config::AuthMode::Passthrough;
        cfg.upstream.credentials = None;
    })
    .await;
    // The caller holds the organisation's real key; the gateway cannot verify it and does not
    // need to: the upstream does.
    let token = sign_jwt(ORG_AK, ORG_SK, now(), 1800).unwrap();
    let resp = env
        .http
        .post(env.url("/v1/videos/text2video"))
        .bearer_auth(&token)
        .json(&json!({"prompt": "passthrough"}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = split(resp).await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    // A key the upstream does not know is refused by the upstream, not by the gateway.
    let stranger = sign_jwt("stranger", "stranger-secret", now(), 1800).unwrap();
    let resp = env
        .http
        .post(env.url("/v1/videos/text2video"))
        .bearer_auth(&stranger)
        .json(&json!({"prompt": "passthrough"}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = split(resp).await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(1002)));
    assert_eq!(env.sim.stats().route("POST /v1/videos/text2video"), 2);
    env.stop().await;
    let records = records(&env.ledger_dir);
    let requests = of_type(&records, "gateway.request");
    assert_eq!(requests.len(), 2);
    let actor = requests[0]["actor"].as_str().unwrap();
    assert!(actor.starts_with("kf_") && actor.len() == 19, "{actor}");
    assert_ne!(requests[1]["actor"], requests[0]["actor"]);
    assert_eq!(requests[0]["details"]["credential"]["verified"], false);
    assert!(!records.iter().any(|r| r.to_string().contains(ORG_AK)));
}

/// A body whose sender stops halfway holds its bytes of the buffer budget; a second body that
/// does not fit is refused at once, unforwarded and recorded, and the first still goes through.
#[tokio::test]
async fn bodies_beyond_the_buffer_budget_are_refused_with_429_and_recorded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut env = setup(sim_config(), |cfg| {
        cfg.server.max_body_bytes = 4096;
        cfg.server.max_buffered_bytes = Some(4096);
    })
    .await;
    let before = env.sim.stats();
    let prompt = "y".repeat(2400);
    let slow_body = json!({
        "model_name": "kling-v1",
        "prompt": prompt,
        "negative_prompt": "n".repeat(1100),
    })
    .to_string();
    let mut slow = partial_create(&env, slow_body.len(), &slow_body.as_bytes()[..3000]).await;
    // Wait until the gateway holds the first part.
    let mut held = 0;
    for _ in 0..200 {
        let metrics = env.http.get(env.url("/metrics")).send().await.unwrap();
        let text = metrics.text().await.unwrap();
        held = text
            .lines()
            .find_map(|l| l.strip_prefix("kling_gateway_body_bytes_held "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if held >= 3000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(held >= 3000, "the gateway holds {held} bytes");

    let body = json!({"model_name": "kling-v1", "prompt": "z".repeat(2000)});
    let (status, headers, answer) = env.post(&env.bob, "/v1/videos/text2video", &body).await;
    assert_eq!(
        (status, answer["code"].as_i64()),
        (429, Some(1302)),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("max_buffered_bytes"),
        "{answer}"
    );
    let refused: u64 = record_header(&headers);
    env.assert_nothing_forwarded(&before);

    slow.write_all(&slow_body.as_bytes()[3000..]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("task_id") {
        let n = slow.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    drop(slow);
    env.stop().await;
    let records = records(&env.ledger_dir);
    let denied = records.iter().find(|r| seq(r) == refused).unwrap();
    assert_eq!(denied["type"], "gateway.denied");
    assert_eq!(denied["actor"], "bob");
    assert_eq!(denied["details"]["reason"], "body-budget-spent");
    assert_eq!(denied["details"]["http_status"], 429);
    let requests = of_type(&records, "gateway.request");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["actor"], "alice");
    assert!(!records.iter().any(|r| r.to_string().contains(&prompt)));
}

/// A caller that cuts its body short is answered 400 and recorded, and nothing is forwarded.
#[tokio::test]
async fn a_body_cut_short_is_recorded_as_unreadable() {
    use tokio::io::AsyncWriteExt;
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    let mut conn = partial_create(&env, 500, br#"{"model_name":"#).await;
    conn.shutdown().await.unwrap();
    drop(conn);
    // The live ledger ends in its zero-filled reserve; wait for the refusal through metrics.
    let mut counted = false;
    for _ in 0..200 {
        let metrics = env.http.get(env.url("/metrics")).send().await.unwrap();
        if metrics
            .text()
            .await
            .unwrap()
            .contains("outcome=\"bad_request\"} 1")
        {
            counted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(counted, "the refusal was not counted");
    env.assert_nothing_forwarded(&before);
    env.stop().await;
    let recs = records(&env.ledger_dir);
    let denied = of_type(&recs, "gateway.denied");
    assert_eq!(denied.len(), 1);
    let denied = denied[0];
    assert_eq!(denied["actor"], "alice");
    assert_eq!(denied["details"]["reason"], "body-unreadable");
    assert_eq!(denied["details"]["http_status"], 400);
}

/// Reads from `conn` until the peer closes it; the bytes read.
async fn read_to_close(conn: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let _ = conn.read_to_end(&mut got).await;
    got
}

/// Opens a connection and sends an authenticated create from alice declaring `len` body bytes,
/// with only `start` of the body.
async fn partial_create(env: &Env, len: usize, start: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = env.gw.as_ref().unwrap().addr;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/videos/text2video HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
        jwt(&env.alice),
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(start).await.unwrap();
    conn.flush().await.unwrap();
    conn
}

/// Sends the start of a request and never finishes its headers.
async fn half_sent_request(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    conn
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let mut env = setup(sim_config(), |cfg| {
        cfg.server.header_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let mut conn = half_sent_request(env.gw.as_ref().unwrap().addr).await;
    let closed =
        tokio::time::timeout(std::time::Duration::from_secs(10), read_to_close(&mut conn)).await;
    assert!(closed.is_ok(), "the connection is still open after 10 s");
    env.stop().await;
}

#[tokio::test]
async fn shutdown_closes_connections_still_open_after_the_grace_period() {
    let mut env = setup(sim_config(), |cfg| {
        cfg.server.header_timeout = std::time::Duration::from_secs(600);
        cfg.server.shutdown_grace = std::time::Duration::from_millis(300);
    })
    .await;
    let _conn = half_sent_request(env.gw.as_ref().unwrap().addr).await;
    // Let the gateway take the connection in.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(20), env.stop()).await;
    assert!(stopped.is_ok(), "shutdown waited on a half-sent request");
    let records = records(&env.ledger_dir);
    let shutdown = of_type(&records, "gateway.shutdown");
    assert_eq!(shutdown.len(), 1);
    assert_eq!(shutdown[0]["details"]["connections_cut"], 1);
}

#[tokio::test]
async fn trace_and_connect_are_refused_and_never_reach_the_upstream() {
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    for method in ["TRACE", "CONNECT"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = env
            .http
            .request(method.clone(), env.url("/v1/videos/text2video"))
            .bearer_auth(jwt(&env.alice))
            .send()
            .await
            .unwrap();
        let (status, headers, body) = split(resp).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (405, Some(1200)),
            "{method}: {body}"
        );
        assert!(headers.contains_key("x-kling-audit-record"), "{method}");
    }
    env.assert_nothing_forwarded(&before);
    env.stop().await;
    let records = records(&env.ledger_dir);
    assert_denied(&records, 2, "alice", "method-not-allowed", None);
}

/// How many API calls the metrics count with `outcome`, over every route.
async fn counted(env: &Env, outcome: &str) -> u64 {
    let metrics = env.http.get(env.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    let label = format!("outcome=\"{outcome}\"}} ");
    text.lines()
        .filter(|line| line.starts_with("kling_gateway_requests_total{"))
        .filter_map(|line| line.split_once(&label))
        .map(|(_, n)| n.parse::<u64>().unwrap())
        .sum()
}

/// Sends `line` by hand and asserts the gateway refused it: 400, Kling code 1200, and an
/// answer that says `hint`.
async fn assert_raw_refused(env: &Env, line: &str, hint: &str) {
    let (status, answer) = raw_request(env, line).await;
    assert_eq!(status, 400, "{line}: {answer}");
    assert!(answer.contains("\"code\":1200"), "{line}: {answer}");
    assert!(answer.contains(hint), "{line}: {answer}");
}

/// Sends `request_line` as written, with alice's credential, on a new connection; the answer's
/// status and the whole answer as text.
async fn raw_request(env: &Env, request_line: &str) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let addr = env.gw.as_ref().unwrap().addr;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{request_line}\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        jwt(&env.alice),
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut conn))
        .await
        .expect("the gateway did not close the connection");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"));
    (status, answer)
}

#[tokio::test]
async fn repeated_authorization_headers_are_refused_and_never_reach_the_upstream() {
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    // Another actor's token second, or the same one twice: either way one header is too many.
    for second in [&env.bob, &env.alice] {
        let resp = env
            .http
            .post(env.url("/v1/videos/text2video"))
            .header("authorization", format!("Bearer {}", jwt(&env.alice)))
            .header("authorization", format!("Bearer {}", jwt(second)))
            .json(&json!({"prompt": "signed twice"}))
            .send()
            .await
            .unwrap();
        let (status, headers, body) = split(resp).await;
        assert_eq!((status, body["code"].as_i64()), (401, Some(1002)), "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("more than one Authorization"), "{message}");
        assert!(headers.contains_key("x-kling-audit-record"));
    }
    env.assert_nothing_forwarded(&before);
    assert_eq!(counted(&env, "auth_failed").await, 2);
    env.stop().await;
    let records = records(&env.ledger_dir);
    assert!(of_type(&records, "gateway.request").is_empty());
    assert_denied(
        &records,
        2,
        "unauthenticated",
        "repeated-authorization",
        Some(401),
    );
}

/// The Kling API uses GET and POST alone; every other method, a HEAD or a lower-case `get`
/// too, is refused with 405 and recorded rather than forwarded under the organisation's key.
#[tokio::test]
async fn methods_other_than_get_and_post_are_refused_and_never_reach_the_upstream() {
    let mut env = setup(sim_config(), |_| {}).await;
    let bob_task = format!(
        "/v1/videos/text2video/{}",
        env.create_task(&env.bob, "bob's").await
    );
    let before = env.sim.stats();
    let cases = [
        // A HEAD escaped the ownership check: its status alone tells whether the task exists.
        ("HEAD", bob_task.as_str()),
        ("get", bob_task.as_str()),
        ("FOO", "/v1/videos/text2video"),
        ("PUT", "/v1/videos/text2video"),
        ("DELETE", bob_task.as_str()),
        ("PATCH", "/v1/videos/text2video"),
        ("OPTIONS", "/v1/videos/text2video"),
    ];
    for (method, path) in cases {
        let resp = env
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                env.url(path),
            )
            .bearer_auth(jwt(&env.alice))
            .send()
            .await
            .unwrap();
        let (status, headers, body) = split(resp).await;
        assert_eq!(status, 405, "{method}: {body}");
        assert_eq!(headers["allow"], "GET, POST", "{method}");
        assert!(headers.contains_key("x-kling-audit-record"), "{method}");
        // A HEAD answer has no body.
        if method != "HEAD" {
            assert_eq!(body["code"], 1200, "{method}: {body}");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("only GET and POST"), "{method}: {message}");
        }
    }
    // `OPTIONS *`, the asterisk form, can only be sent by hand.
    let (status, answer) = raw_request(&env, "OPTIONS * HTTP/1.1").await;
    assert_eq!(status, 405, "{answer}");
    env.assert_nothing_forwarded(&before);
    assert_eq!(counted(&env, "bad_request").await, cases.len() as u64 + 1);
    env.stop().await;
    let records = records(&env.ledger_dir);
    assert_denied(
        &records,
        cases.len() + 1,
        "alice",
        "method-not-allowed",
        Some(405),
    );
}

/// A method is whatever token the caller sends; the record keeps only its first characters, so
/// that no caller, not even an unauthenticated one, writes a record as long as its request.
#[tokio::test]
async fn a_long_method_is_recorded_capped_whoever_sends_it() {
    use tokio::io::AsyncWriteExt;
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    let method = "M".repeat(100_000);
    // With alice's credential: refused as a method (405).
    let (status, answer) =
        raw_request(&env, &format!("{method} /v1/videos/text2video HTTP/1.1")).await;
    assert_eq!(status, 405, "{}", &answer[..answer.len().min(300)]);
    assert!(answer.len() < 2_000, "the answer repeats the method whole");
    // Without a credential: refused as unauthenticated (401).
    let addr = env.gw.as_ref().unwrap().addr;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} /v1/videos/text2video HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_to_close(&mut conn))
        .await
        .expect("the gateway did not close the connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    env.assert_nothing_forwarded(&before);
    env.stop().await;
    let records = records(&env.ledger_dir);
    let denied = of_type(&records, "gateway.denied");
    assert_eq!(denied.len(), 2);
    for record in denied {
        let recorded = record["details"]["method"].as_str().unwrap();
        assert!(method.starts_with(recorded), "{recorded}");
        assert!(
            (1..=32).contains(&recorded.len()),
            "method of {} characters recorded",
            recorded.len()
        );
    }
}

/// Only a path is a Kling request target: an asterisk-form or absolute-form target (as sent to
/// a forward proxy, naming some other host) is refused, not forwarded to Kling.
#[tokio::test]
async fn a_target_other_than_a_path_is_refused_and_never_reaches_the_upstream() {
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    for line in [
        "GET * HTTP/1.1",
        "POST http://example.invalid/v1/videos/text2video HTTP/1.1",
        "GET http://example.invalid/v1/videos/text2video HTTP/1.1",
    ] {
        assert_raw_refused(&env, line, "not a forward proxy").await;
    }
    env.assert_nothing_forwarded(&before);
    assert_eq!(counted(&env, "bad_request").await, 3);
    env.stop().await;
    let records = records(&env.ledger_dir);
    assert_denied(&records, 3, "alice", "target-not-origin-form", None);
}

/// A percent escape in the path is refused rather than decoded: the gateway would check one
/// reading of it and Kling could act on another.
#[tokio::test]
async fn percent_encoded_paths_are_refused_and_never_reach_the_upstream() {
    let mut env = setup(sim_config(), |_| {}).await;
    let (_, _, created) = env
        .post(
            &env.alice,
            "/v1/videos/text2video",
            &json!({"prompt": "mine"}),
        )
        .await;
    let task_id = created["data"]["task_id"].as_str().unwrap().to_owned();
    // `%38…` for `8…`: the same id to a server that decodes the path.
    let encoded_id = format!("%{:02X}{}", task_id.as_bytes()[0], &task_id[1..]);
    let before = env.sim.stats();
    let cases = [
        // An encoded route segment made the path unknown to the gateway, so unchecked.
        (&env.bob, format!("/v1/videos/text2vide%6F/{task_id}")),
        (&env.bob, format!("/v1/videos/text2video/{encoded_id}")),
        // The owner's own query, refused with a reason rather than as an unknown task.
        (&env.alice, format!("/v1/videos/text2video/{encoded_id}")),
    ];
    for (actor, path) in &cases {
        let (status, headers, body) = env.get(actor, path).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(1200)),
            "{path}: {body}"
        );
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("percent-encoded"), "{path}: {message}");
        assert!(headers.contains_key("x-kling-audit-record"), "{path}");
    }
    env.assert_nothing_forwarded(&before);
    assert_eq!(counted(&env, "bad_request").await, 3);
    // Unencoded, the owner's query goes through.
    let (status, _, body) = env
        .get(&env.alice, &format!("/v1/videos/text2video/{task_id}"))
        .await;
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    env.stop().await;
    let records = records(&env.ledger_dir);
    let denied = of_type(&records, "gateway.denied");
    assert_eq!(denied.len(), 3);
    assert!(denied
        .iter()
        .all(|r| r["details"]["reason"] == "path-percent-encoded"));
    assert_eq!(
        denied
            .iter()
            .map(|r| r["actor"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["bob", "bob", "alice"]
    );
}

/// A path with an empty, `.` or `..` segment names a task query once normalised, which the
/// gateway took for an unknown path and so never checked: it is refused.
#[tokio::test]
async fn paths_with_empty_or_dot_segments_are_refused_and_never_reach_the_upstream() {
    let mut env = setup(sim_config(), |_| {}).await;
    let task_id = env.create_task(&env.bob, "bob's").await;
    let before = env.sim.stats();
    // Written by hand: an HTTP client resolves dot segments before sending.
    let lines = [
        format!("GET /v1/videos/text2video/x/../{task_id} HTTP/1.1"),
        format!("GET /v1/videos/text2video/./{task_id} HTTP/1.1"),
        format!("GET /v1/videos/text2video//{task_id} HTTP/1.1"),
        "GET /v1/videos/text2video/ HTTP/1.1".to_owned(),
        "POST //v1/videos/text2video HTTP/1.1".to_owned(),
    ];
    for line in &lines {
        assert_raw_refused(&env, line, "segment").await;
    }
    env.assert_nothing_forwarded(&before);
    assert_eq!(counted(&env, "bad_request").await, lines.len() as u64);
    env.stop().await;
    let records = records(&env.ledger_dir);
    assert_denied(&records, lines.len(), "alice", "path-not-normalized", None);
}

#[tokio::test]
async fn shutdown_does_not_wait_out_the_header_timeout_of_a_half_sent_request() {
    let mut env = setup(sim_config(), |cfg| {
        cfg.server.header_timeout = std::time::Duration::from_secs(600);
        cfg.server.shutdown_grace = std::time::Duration::from_secs(60);
    })
    .await;
    let _conn = half_sent_request(env.gw.as_ref().unwrap().addr).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    env.stop().await;
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "shutdown took {took:?} with a half-sent request open"
    );
    let records = records(&env.ledger_dir);
    let shutdown = of_type(&records, "gateway.shutdown");
    assert_eq!(shutdown.len(), 1);
    assert_eq!(shutdown[0]["details"]["connections_cut"], 1);
}

#[tokio::test]
async fn a_caller_beyond_the_connection_limit_waits_for_a_free_slot() {
    let mut env = setup(sim_config(), |cfg| cfg.server.max_connections = 1).await;
    let addr = env.gw.as_ref().unwrap().addr;
    let first = half_sent_request(addr).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = env.url("/healthz");
    let waiting = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a second connection was served beside the first"
    );
    drop(first);
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the waiting caller is served once the slot frees")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    env.stop().await;
}

/// Posts `body` as alice's create, which must be refused 400 / 1200; returns the seq of the
/// record of the refusal.
async fn refused_as_invalid(env: &Env, body: String) -> u64 {
    let (status, headers, answer) = env
        .post_raw(&env.alice, "/v1/videos/text2video", body)
        .await;
    assert_eq!(
        (status, answer["code"].as_i64()),
        (400, Some(1200)),
        "{answer}"
    );
    record_header(&headers)
}

/// Kling could take either of two values for one key, while the record commits one of them:
/// such a body is refused, and a key that is not an identifier stays out of the ledger.
#[tokio::test]
async fn a_body_repeating_a_key_is_refused_unforwarded_and_recorded() {
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    let secret_key = "a cat walking on the moon";
    let mut refused = Vec::new();
    for body in [
        r#"{"model_name":"kling-v1","prompt":"x","prompt":"a dog on mars"}"#.to_owned(),
        format!(r#"{{"prompt":"x","options":{{"{secret_key}":1,"{secret_key}":2}}}}"#),
    ] {
        refused.push(refused_as_invalid(&env, body).await);
    }
    env.assert_nothing_forwarded(&before);
    env.stop().await;
    let records = records(&env.ledger_dir);
    let denied: Vec<_> = refused
        .iter()
        .map(|s| records.iter().find(|r| seq(r) == *s).unwrap())
        .collect();
    assert_eq!(denied[0]["details"]["reason"], "body-repeats-key");
    assert_eq!(denied[0]["details"]["repeated_key"], "prompt");
    assert_eq!(denied[1]["details"]["repeated_key"], "(not an identifier)");
    let text: String = records.iter().map(|r| r.to_string()).collect();
    assert!(!text.contains("a dog on mars") && !text.contains(secret_key));
}

/// JSON nested deeper than the record's parser reads could carry a prompt the record never
/// commits: refused, unforwarded and recorded.
#[tokio::test]
async fn a_body_nested_too_deep_to_record_is_refused_unforwarded() {
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    let body = format!(
        r#"{{"model_name":"kling-v1","prompt":"hidden moon cat","j":{}{}}}"#,
        "[".repeat(130),
        "]".repeat(130)
    );
    let refused = refused_as_invalid(&env, body).await;
    env.assert_nothing_forwarded(&before);
    env.stop().await;
    let records = records(&env.ledger_dir);
    let denied = records.iter().find(|r| seq(r) == refused).unwrap();
    assert_eq!(denied["details"]["reason"], "body-too-deep");
    assert!(!records
        .iter()
        .any(|r| r.to_string().contains("hidden moon cat")));
}

/// A body of many small values costs the gateway many times its size once parsed: one over
/// `server.max_body_values` is refused from the first pass, unforwarded and recorded, while a
/// body just within the limit, and one carrying a long string, go through.
#[tokio::test]
async fn a_body_of_more_json_values_than_allowed_is_refused_unforwarded() {
    let mut env = setup(sim_config(), |cfg| cfg.server.max_body_values = 1000).await;
    let before = env.sim.stats();
    // The object, two strings and the array: four values, plus the array's items.
    let body = |items: usize| {
        format!(
            r#"{{"model_name":"kling-v2-6","prompt":"p","zz":[{}]}}"#,
            vec!["1"; items].join(",")
        )
    };
    let (status, headers, answer) = env
        .post_raw(&env.alice, "/v1/videos/text2video", body(997))
        .await;
    assert_eq!(
        (status, answer["code"].as_i64()),
        (400, Some(1200)),
        "{answer}"
    );
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("1000") && message.contains("server.max_body_values"),
        "{message}"
    );
    let refused = record_header(&headers);
    env.assert_nothing_forwarded(&before);
    let (status, _, answer) = env
        .post_raw(&env.alice, "/v1/videos/text2video", body(996))
        .await;
    assert_eq!(status, 200, "{answer}");
    let image = "A".repeat(400_000);
    let (status, _, answer) = env
        .post(
            &env.alice,
            "/v1/videos/image2video",
            &serde_json::json!({"model_name": "kling-v2-6", "image": image}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    env.stop().await;
    let records = records(&env.ledger_dir);
    let denied = records.iter().find(|r| seq(r) == refused).unwrap();
    assert_eq!(denied["type"], "gateway.denied");
    assert_eq!(denied["details"]["reason"], "body-too-many-values");
    assert_eq!(denied["details"]["max_body_values"], 1000);
}

/// A lone surrogate escape, bytes that are not UTF-8 or a number beyond a double's range stop
/// the record's parser, while many receivers read past them: the keys after them (here a
/// repeated prompt) never reach the record. Such a body is refused, unforwarded and recorded,
/// not forwarded as "not JSON".
#[tokio::test]
async fn a_body_the_records_parser_stops_in_but_others_read_is_refused_unforwarded() {
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    let mut refused = Vec::new();
    for body in [
        br#"{"x":"\ud800","prompt":"x","prompt":"hidden moon cat"}"#.to_vec(),
        b"{\"x\":\"\xff\",\"prompt\":\"hidden moon cat\"}".to_vec(),
        br#"{"x":1e400,"prompt":"x","prompt":"hidden moon cat"}"#.to_vec(),
    ] {
        let resp = env
            .http
            .post(env.url("/v1/videos/text2video"))
            .bearer_auth(jwt(&env.alice))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, headers, answer) = split(resp).await;
        assert_eq!(
            (status, answer["code"].as_i64()),
            (400, Some(1200)),
            "{answer}"
        );
        refused.push(record_header(&headers));
    }
    env.assert_nothing_forwarded(&before);
    env.stop().await;
    let records = records(&env.ledger_dir);
    let reasons = [
        "body-not-unicode",
        "body-not-unicode",
        "body-number-out-of-range",
    ];
    for (s, reason) in refused.into_iter().zip(reasons) {
        let denied = records.iter().find(|r| seq(r) == s).unwrap();
        assert_eq!(denied["type"], "gateway.denied");
        assert_eq!(denied["details"]["reason"], reason);
    }
    assert!(!records
        .iter()
        .any(|r| r.to_string().contains("hidden moon cat")));
}

/// A body that stops arriving is answered 408 and recorded once `server.body_timeout_ms`
/// has passed, so that slow senders cannot hold connections.
#[tokio::test]
async fn a_body_that_stops_arriving_times_out_and_is_recorded() {
    let mut env = setup(sim_config(), |cfg| {
        cfg.server.body_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let mut conn = partial_create(&env, 500, br#"{"prompt":"#).await;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), read_to_close(&mut conn))
        .await
        .expect("answered and closed within 10 s");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    env.stop().await;
    let records = records(&env.ledger_dir);
    let denied = of_type(&records, "gateway.denied");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["details"]["reason"], "body-timeout");
    assert_eq!(denied[0]["details"]["http_status"], 408);
}

/// A create whose upstream connect is still under way when the upstream timeout passes (the
/// connect timeout being the longer) was never sent: it is answered and recorded as a connect
/// failure, not as a timeout that may have been processed.
#[tokio::test]
async fn a_create_still_connecting_when_the_upstream_timeout_passes_is_answered_as_not_sent() {
    // Accepts TCP and never speaks TLS, so an https connect never completes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut env = setup(sim_config(), |cfg| {
        cfg.upstream.url = reqwest::Url::parse(&format!("https://{addr}")).unwrap();
        cfg.upstream.timeout = Duration::from_millis(300);
        cfg.upstream.connect_timeout = Duration::from_secs(20);
    })
    .await;
    let body = json!({"prompt": "a lighthouse at dusk", "duration": "5"});
    let (status, _, answer) = env.post(&env.alice, "/v1/videos/text2video", &body).await;
    assert_eq!(
        (status, answer["code"].as_i64()),
        (502, Some(5000)),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing was processed")),
        "{answer}"
    );
    env.stop().await;
    holder.abort();
    let records = records(&env.ledger_dir);
    let responses = of_type(&records, "gateway.response");
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0]["details"]["outcome"], "upstream-connect");
}

#[tokio::test]
async fn an_oversized_body_is_refused_unforwarded_and_recorded() {
    let mut env = setup(sim_config(), |cfg| cfg.server.max_body_bytes = 1024).await;
    let before = env.sim.stats();
    let body = json!({"model_name": "kling-v1", "prompt": "x".repeat(4096)});
    let (status, headers, answer) = env.post(&env.alice, "/v1/videos/text2video", &body).await;
    assert_eq!(
        (status, answer["code"].as_i64()),
        (413, Some(1201)),
        "{answer}"
    );
    env.assert_nothing_forwarded(&before);
    let record: u64 = record_header(&headers);
    env.stop().await;
    let records = records(&env.ledger_dir);
    let denied = records.iter().find(|r| seq(r) == record).unwrap();
    assert_eq!(denied["type"], "gateway.denied");
    assert_eq!(denied["actor"], "alice");
    assert_eq!(denied["details"]["reason"], "body-too-large");
    assert_eq!(denied["details"]["http_status"], 413);
    assert_eq!(denied["details"]["max_body_bytes"], 1024);
    // The prompt never reaches the ledger, not even in part.
    assert!(!std::fs::read_dir(&env.ledger_dir)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("xxxxxxxx"))));
}

/// A create body the gateway cannot read as a JSON object would go out without its prompt
/// commitments, model or callback swap, to a server that might read it all the same (many
/// JSON parsers skip a byte-order mark or read UTF-16). It is refused and recorded instead.
#[tokio::test]
async fn a_create_body_that_is_not_a_json_object_is_refused_and_never_reaches_the_upstream() {
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    let object = br#"{"prompt":"HIDDENPROMPT","model_name":"kling-v1"}"#.to_vec();
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(&object);
    let utf16: Vec<u8> = String::from_utf8(object.clone())
        .unwrap()
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let cases: [(&str, Vec<u8>); 5] = [
        ("application/json", with_bom),
        ("application/json", utf16),
        (
            "application/x-www-form-urlencoded",
            b"prompt=HIDDENPROMPT".to_vec(),
        ),
        ("application/json", br#"["HIDDENPROMPT"]"#.to_vec()),
        ("application/json", Vec::new()),
    ];
    for (content_type, body) in &cases {
        let resp = env
            .http
            .post(env.url("/v1/videos/text2video"))
            .bearer_auth(jwt(&env.alice))
            .header("content-type", *content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let (status, headers, answer) = split(resp).await;
        assert_eq!(
            (status, answer["code"].as_i64()),
            (400, Some(1200)),
            "{answer}"
        );
        assert!(answer["message"].as_str().unwrap().contains("JSON object"));
        assert!(headers.contains_key("x-kling-audit-record"));
    }
    env.assert_nothing_forwarded(&before);
    env.stop().await;
    let records = records(&env.ledger_dir);
    assert_denied(
        &records,
        cases.len(),
        "alice",
        "create-body-not-json-object",
        Some(400),
    );
    let text = std::fs::read_dir(&env.ledger_dir)
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect::<String>();
    assert!(
        text.contains("create-body-not-json-object"),
        "the segments were read"
    );
    assert!(
        !text.contains("HIDDENPROMPT"),
        "a raw prompt reached the ledger"
    );
}

/// Paths some servers would route as a task query that the gateway took for unknown paths,
/// forwarded unchecked: path parameters (stripped by some servers) and a known route in other
/// letters (matched without regard to case by others). Both are refused and recorded.
#[tokio::test]
async fn paths_with_parameters_or_in_other_letters_are_refused_and_never_reach_the_upstream() {
    let mut env = setup(sim_config(), |_| {}).await;
    let task_id = env.create_task(&env.bob, "bob's").await;
    let before = env.sim.stats();
    let cases = [
        (
            format!("/v1/videos/text2video;x/{task_id}"),
            "path-has-parameters",
        ),
        (
            format!("/v1/videos/text2video/{task_id};v=1"),
            "path-has-parameters",
        ),
        (
            format!("/V1/videos/text2video/{task_id}"),
            "path-case-differs",
        ),
        ("/v1/Videos/Text2Video".to_owned(), "path-case-differs"),
        ("/ACCOUNT/COSTS".to_owned(), "path-case-differs"),
    ];
    for (path, _) in &cases {
        let (status, _, body) = env.get(&env.alice, path).await;
        assert_eq!(
            (status, body["code"].as_i64()),
            (400, Some(1200)),
            "{path}: {body}"
        );
    }
    env.assert_nothing_forwarded(&before);
    // A path the gateway does not know in any letters still passes, recorded as `other`.
    let (status, _, _) = env.get(&env.alice, "/v1/Unheard/Of").await;
    assert_ne!(status, 400);
    env.stop().await;
    let records = records(&env.ledger_dir);
    let denied = of_type(&records, "gateway.denied");
    assert_eq!(denied.len(), cases.len());
    for (record, (path, reason)) in denied.iter().zip(&cases) {
        assert_eq!(record["details"]["reason"], *reason, "{path}");
        assert_eq!(record["actor"], "alice");
    }
}

/// The keyed commitments of the gateway's ledger, for checking `path_hmac` and `query_hmac`.
fn commitments(env: &Env) -> kling_audit_ledger::Commitments {
    let key = std::fs::read_to_string(env.keys_dir().join("commit.key")).unwrap();
    let key = kling_audit_ledger::keys::parse_key_hex(&env.keys_dir(), &key).unwrap();
    kling_audit_ledger::Commitments::new(key)
}

/// A path under the gateway's own prefix that is none of its endpoints (an empty or nested
/// callback token, a mistyped endpoint) is the gateway's to answer, whatever the method: 404
/// with a Kling-style body, recorded as `gateway.denied`, and never forwarded to Kling under
/// the organisation's key. Without credentials it is refused 401 first, like any call.
#[tokio::test]
async fn paths_under_the_gateway_prefix_that_are_no_endpoint_are_refused_and_never_forwarded() {
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    let paths = [
        "/_gateway/callback/",
        "/_gateway/callback/a/b",
        "/_gateway/callback",
        "/_gateway/foo",
        "/_gateway",
    ];
    let mut refused = Vec::new();
    for path in paths {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::POST,
            reqwest::Method::DELETE,
        ] {
            let resp = env
                .http
                .request(method.clone(), env.url(path))
                .bearer_auth(jwt(&env.alice))
                .json(&json!({"prompt": "x"}))
                .send()
                .await
                .unwrap();
            let (status, headers, body) = split(resp).await;
            assert_eq!(
                (status, body["code"].as_i64()),
                (404, Some(1203)),
                "{method} {path}: {body}"
            );
            assert!(body["message"].as_str().unwrap().contains("/_gateway/"));
            assert_eq!(
                body["request_id"].as_str().unwrap(),
                headers["x-kling-audit-request-id"].to_str().unwrap()
            );
            refused.push((path, record_header(&headers)));
        }
    }
    env.assert_nothing_forwarded(&before);
    assert_eq!(counted(&env, "bad_request").await, refused.len() as u64);
    // Without credentials: refused as every unauthenticated call is, before the path is looked at.
    let resp = env.http.get(env.url("/_gateway/foo")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let unauthenticated = record_header(resp.headers());
    env.assert_nothing_forwarded(&before);
    env.stop().await;

    let commitments = commitments(&env);
    let records = records(&env.ledger_dir);
    let alices: Vec<Value> = records
        .iter()
        .filter(|r| r["actor"] == "alice")
        .cloned()
        .collect();
    assert_denied(
        &alices,
        refused.len(),
        "alice",
        "gateway-path-unknown",
        Some(404),
    );
    for (path, seq_named) in refused {
        let record = records.iter().find(|r| seq(r) == seq_named).unwrap();
        let details = &record["details"];
        assert_eq!(details["code"], 1203, "{record}");
        assert_eq!(details["route"], "other", "{record}");
        assert_eq!(details["path_hmac"], commitments.path(path), "{record}");
        assert_eq!(details["credential"]["verified"], true, "{record}");
    }
    let record = records.iter().find(|r| seq(r) == unauthenticated).unwrap();
    assert_eq!(record["type"], "gateway.denied");
    assert_eq!(record["actor"], "unauthenticated");
    assert_eq!(record["details"]["reason"], "bad-header");
    assert_eq!(
        record["details"]["path_hmac"],
        commitments.path("/_gateway/foo")
    );
    assert!(of_type(&records, "gateway.request").is_empty());
}

/// A query whose values the record does not all keep (a parameter kept by name only, a kept
/// parameter given twice) is committed whole, as sent, on any route, so an auditor holding a
/// suspected query can check it; the values themselves stay out of the ledger. A query whose
/// values are all kept, and a call without a query, carry no commitment.
#[tokio::test]
async fn a_query_with_unrecorded_values_is_recorded_by_its_keyed_commitment() {
    let mut env = setup(sim_config(), |_| {}).await;
    // path, query, whether the record commits the query
    let cases = [
        (
            "/v1/videos/text2video",
            Some("pageNum=1&token=QUERYSECRET-91c2"),
            true,
        ),
        ("/v1/not-a-kling-route/x", Some("a=QUERYSECRET%2D5&b"), true),
        ("/v1/videos/text2video", Some("pageNum=1&pageNum=2"), true),
        ("/v1/videos/text2video", Some("pageNum=1&pageSize=5"), false),
        ("/v1/videos/text2video", None, false),
    ];
    let mut sent = Vec::new();
    for (path, query, _) in &cases {
        let target = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let (_, headers, _) = env.get(&env.alice, &target).await;
        sent.push(record_header(&headers));
    }
    env.stop().await;

    let commitments = commitments(&env);
    let records = records(&env.ledger_dir);
    for ((path, query, committed), seq_named) in cases.iter().zip(sent) {
        let record = records.iter().find(|r| seq(r) == seq_named).unwrap();
        assert_eq!(record["type"], "gateway.request", "{record}");
        let hmac = &record["details"]["query_hmac"];
        if *committed {
            assert_eq!(
                *hmac,
                commitments.query(query.unwrap()),
                "{path}?{query:?}: {record}"
            );
            assert_ne!(*hmac, commitments.text(query.unwrap()));
        } else {
            assert!(hmac.is_null(), "{path}?{query:?}: {record}");
        }
    }
    let text: String = records.iter().map(|r| r.to_string()).collect();
    assert!(
        !text.contains("QUERYSECRET"),
        "query values are not recorded"
    );
}

/// The text of `/metrics` (served openly when no admin token is set).
/// Asserts that the gateway counted no ledger failure and let no request through unrecorded.
async fn assert_no_ledger_failure_counted(env: &Env) {
    let metrics = metrics_text(env).await;
    for counter in [
        "kling_gateway_ledger_failures_total 0",
        "kling_gateway_unaudited_requests_total 0",
    ] {
        assert!(metrics.contains(counter), "{counter}: {metrics}");
    }
}

async fn metrics_text(env: &Env) -> String {
    let resp = env.http.get(env.url("/metrics")).send().await.unwrap();
    resp.text().await.unwrap()
}

/// An `external_task_id` longer than a record keeps once let a caller skip the write-ahead
/// record (forwarded unrecorded in fail-open, a false 503 and ledger alarm in fail-closed).
/// It is the caller's input: refused in both modes, never forwarded, recorded without the id,
/// and no ledger failure.
#[tokio::test]
async fn an_overlong_external_task_id_is_refused_and_recorded_in_either_mode() {
    for mode in [FailureMode::FailClosed, FailureMode::FailOpen] {
        let mut env = setup(sim_config(), |cfg| cfg.audit.on_failure = mode).await;
        let before = env.sim.stats();
        let (status, headers, answer) = env
            .post(
                &env.alice,
                "/v1/videos/text2video",
                &json!({"model_name": "kling-v2-6", "prompt": "p",
                        "external_task_id": "E".repeat(1_100_000)}),
            )
            .await;
        assert_eq!(
            (status, answer["code"].as_i64()),
            (400, Some(1200)),
            "{mode:?} {answer}"
        );
        let refused = record_header(&headers);
        env.assert_nothing_forwarded(&before);
        // One character fewer than the cap's limit passes, and is recorded whole.
        let id = "e".repeat(128);
        let (status, headers, answer) = env
            .post(
                &env.alice,
                "/v1/videos/text2video",
                &json!({"model_name": "kling-v2-6", "prompt": "p", "external_task_id": id}),
            )
            .await;
        assert_eq!(status, 200, "{mode:?} {answer}");
        let recorded = record_header(&headers);
        assert_no_ledger_failure_counted(&env).await;
        env.stop().await;
        let records = records(&env.ledger_dir);
        let denied = records.iter().find(|r| seq(r) == refused).unwrap();
        assert_eq!(denied["type"], "gateway.denied");
        assert_eq!(denied["details"]["reason"], "external-task-id-too-long");
        assert_eq!(denied["details"]["external_task_id_chars"], 1_100_000);
        assert!(denied.to_string().len() < 4096, "the denial stays small");
        let request = records.iter().find(|r| seq(r) == recorded).unwrap();
        assert_eq!(request["details"]["external_task_id"], id.as_str());
    }
}

/// Thousands of prompts once made a request record over the ledger's 1 MiB (forwarded
/// unrecorded in fail-open, 503 in fail-closed): the record keeps the first hundred
/// commitments and counts the rest, and the call goes through recorded.
#[tokio::test]
async fn a_body_of_thousands_of_prompts_is_recorded_with_the_first_hundred() {
    let mut env = setup(sim_config(), |_| {}).await;
    let before = env.sim.stats();
    let items: Vec<_> = (0..12_000)
        .map(|i| json!({"index": i, "prompt": format!("shot {i}"), "duration": "1"}))
        .collect();
    let (status, headers, answer) = env
        .post(
            &env.alice,
            "/v1/videos/text2video",
            &json!({"model_name": "kling-v2-6", "multi_shot": true, "multi_prompt": items,
                    "voice_list": (0..500).map(|i| json!({"voice_id": format!("v{i}")}))
                        .collect::<Vec<_>>()}),
        )
        .await;
    // What Kling (here the simulator) makes of so many shots does not matter: the call went
    // out, recorded first.
    assert_ne!(status, 503, "{answer}");
    assert_eq!(
        env.sim.stats().requests_total,
        before.requests_total + 1,
        "forwarded"
    );
    let recorded = record_header(&headers);
    env.stop().await;
    let records = records(&env.ledger_dir);
    let request = records.iter().find(|r| seq(r) == recorded).unwrap();
    assert_eq!(request["type"], "gateway.request");
    let details = &request["details"];
    assert_eq!(details["prompts"].as_array().unwrap().len(), 100);
    assert_eq!(details["prompts_omitted"], 11_900);
    assert_eq!(details["params"]["multi_prompt_items"], 12_000);
    let voices = &details["params"]["voice_list[].voice_id"];
    assert_eq!(voices.as_array().unwrap().len(), 100);
    assert_eq!(details["params"]["voice_list[].voice_id_omitted"], 400);
}

/// A request whose record would still break the ledger's size limit (here an image URL whose
/// host is far longer than DNS allows) is refused 413 in both modes, never forwarded, with a
/// small `gateway.denied` naming the sizes; it is no ledger failure and `/readyz` stays ready.
#[tokio::test]
async fn a_request_whose_record_would_be_too_large_is_refused_and_recorded_in_either_mode() {
    for mode in [FailureMode::FailClosed, FailureMode::FailOpen] {
        let mut env = setup(sim_config(), |cfg| cfg.audit.on_failure = mode).await;
        let before = env.sim.stats();
        let url = format!("https://{}.example/cat.png", "a".repeat(1_100_000));
        let (status, headers, answer) = env
            .post(
                &env.alice,
                "/v1/videos/image2video",
                &json!({"model_name": "kling-v2-6", "image": url}),
            )
            .await;
        assert_eq!(
            (status, answer["code"].as_i64()),
            (413, Some(1201)),
            "{mode:?} {answer}"
        );
        let refused = record_header(&headers);
        env.assert_nothing_forwarded(&before);
        let ready = env.http.get(env.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        assert_no_ledger_failure_counted(&env).await;
        env.stop().await;
        let records = records(&env.ledger_dir);
        assert_denied(&records, 1, "alice", "request-record-too-large", Some(413));
        let denied = records.iter().find(|r| seq(r) == refused).unwrap();
        let max = denied["details"]["max_record_bytes"].as_u64().unwrap();
        assert!(denied["details"]["record_bytes"].as_u64().unwrap() > max);
        assert!(denied.to_string().len() < 4096, "the denial stays small");
        assert!(of_type(&records, "gateway.request").is_empty());
    }
}
