//! Client behaviour against a scripted loopback server: which failures are retried and which
//! are not, token caching and re-signing, lookups, polling.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use kling_api::auth::{self, TokenPolicy};
use kling_api::client::{
    AttemptOutcome, AttemptRecord, CallObserver, ClientConfig, Credentials, KlingClient,
    PollOptions, RetryPolicy, StatusChange, TokenIssueReason, TokenIssued,
};
use kling_api::clock::ManualClock;
use kling_api::error::{KlingError, TransportErrorKind};
use kling_api::requests::{AccountCostsQuery, TextToVideoRequest};
use kling_api::routes::{Family, LookupForm, OperationKind};
use kling_api::task::{TaskOutcome, TaskStatus, TaskView};
use kling_api::SecretString;

const AK: &str = "ak-test";
const SK: &str = "sk-test-secret";
const T0: i64 = 1_774_711_071;

/// One scripted answer.
#[derive(Clone)]
enum Reply {
    Json(u16, Value),
    Text(u16, &'static str),
    Sleep(Duration),
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Script {
    fn new(replies: Vec<Reply>) -> Self {
        Self {
            replies: Arc::new(Mutex::new(replies.into())),
            seen: Arc::default(),
        }
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn task(status: &str) -> Value {
    json!({"task_id": "866889456698785798", "task_status": status, "task_status_msg": "",
           "task_info": {}, "created_at": 1774711071284_i64, "updated_at": 1774711071284_i64})
}

fn ok(data: Value) -> Reply {
    Reply::Json(
        200,
        json!({"code": 0, "message": "SUCCEED", "request_id": "req-ok", "data": data}),
    )
}

fn err(status: u16, code: i64, message: &str) -> Reply {
    Reply::Json(
        status,
        json!({"code": code, "message": message, "request_id": format!("req-{code}")}),
    )
}

async fn handler(
    State(script): State<Script>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    script.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        uri: uri.to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: body.to_vec(),
    });
    let reply = script.replies.lock().unwrap().pop_front();
    match reply.unwrap_or_else(|| ok(task("submitted"))) {
        Reply::Sleep(d) => {
            tokio::time::sleep(d).await;
            respond(ok(task("submitted")))
        }
        other => respond(other),
    }
}

fn respond(reply: Reply) -> Response {
    match reply {
        Reply::Json(status, body) => {
            (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
        }
        Reply::Text(status, text) => (StatusCode::from_u16(status).unwrap(), text).into_response(),
        Reply::Sleep(_) => StatusCode::OK.into_response(),
    }
}

async fn serve(script: Script) -> SocketAddr {
    let app = Router::new().fallback(handler).with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
        multiplier: 2.0,
        jitter: 0.0,
        ..RetryPolicy::default()
    }
}

fn config(addr: SocketAddr, clock: Arc<ManualClock>) -> ClientConfig {
    ClientConfig {
        retry: fast_retry(),
        clock,
        timeout: Duration::from_secs(5),
        ..ClientConfig::new(format!("http://{addr}"), AK, SecretString::new(SK))
    }
}

/// (attempt, HTTP status, code, retry delay, re-signing, operation kind) of one attempt.
type AttemptRow = (
    u32,
    Option<u16>,
    Option<i64>,
    Option<Duration>,
    bool,
    OperationKind,
);

#[derive(Default)]
struct Recorder {
    attempts: Mutex<Vec<AttemptRow>>,
    transports: Mutex<Vec<TransportErrorKind>>,
    tokens: Mutex<Vec<(TokenIssueReason, i64, i64)>>,
    starts: Mutex<u32>,
}

impl CallObserver for Recorder {
    fn on_call_start(&self, _: u64, _: &str, _: &str, _: &kling_api::routes::Operation) {
        *self.starts.lock().unwrap() += 1;
    }
    fn on_token_issued(&self, e: &TokenIssued<'_>) {
        assert_eq!(e.issuer, AK);
        self.tokens
            .lock()
            .unwrap()
            .push((e.reason, e.issued_at, e.expires_at));
    }
    fn on_attempt(&self, r: &AttemptRecord<'_>) {
        let (status, code) = match r.outcome {
            AttemptOutcome::Response {
                http_status, code, ..
            } => (Some(http_status), code),
            AttemptOutcome::Transport { kind } => {
                self.transports.lock().unwrap().push(kind);
                (None, None)
            }
        };
        self.attempts.lock().unwrap().push((
            r.attempt,
            status,
            code,
            r.retry_in,
            r.resigning,
            r.operation.kind.clone(),
        ));
    }
}

async fn setup(replies: Vec<Reply>) -> (Script, KlingClient, Arc<Recorder>, Arc<ManualClock>) {
    let script = Script::new(replies);
    let addr = serve(script.clone()).await;
    let clock = Arc::new(ManualClock::new(T0));
    let client = KlingClient::new(config(addr, clock.clone())).unwrap();
    let recorder = Arc::new(Recorder::default());
    let observed = client.with_observer(recorder.clone());
    (script, observed, recorder, clock)
}

fn prompt() -> TextToVideoRequest {
    TextToVideoRequest {
        model_name: Some("kling-v1".into()),
        external_task_id: Some("order-42".into()),
        ..TextToVideoRequest::with_prompt("A calm sunrise over the ocean")
    }
}

#[tokio::test]
async fn create_sends_signed_jwt_and_decodes_the_task() {
    let (script, client, rec, _) = setup(vec![ok(task("submitted"))]).await;
    let res = client.create_text_to_video(&prompt()).await.unwrap();
    assert_eq!(res.data.task_id.as_deref(), Some("866889456698785798"));
    assert_eq!((res.request_id.as_str(), res.attempts), ("req-ok", 1));
    let seen = script.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("POST", "/v1/videos/text2video")
    );
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["external_task_id"], "order-42");
    let bearer = auth::bearer_token(seen[0].authorization.as_deref()).unwrap();
    let claims = auth::verify_jwt(bearer, SK, T0, 0, Some(1800)).unwrap();
    assert_eq!(
        (claims.iss.as_str(), claims.exp, claims.nbf),
        (AK, Some(T0 + 1800), Some(T0 - 5))
    );
    assert_eq!(*rec.starts.lock().unwrap(), 1);
    assert_eq!(rec.tokens.lock().unwrap()[0].0, TokenIssueReason::First);
}

#[tokio::test]
async fn server_error_on_create_is_not_retried() {
    let (script, client, rec, _) =
        setup(vec![err(500, 5000, "internal"), ok(task("submitted"))]).await;
    let e = client.create_text_to_video(&prompt()).await.unwrap_err();
    assert!(matches!(e, KlingError::Server(_)), "{e:?}");
    assert_eq!((e.http_status(), e.code()), (Some(500), Some(5000)));
    assert!(
        e.outcome_unknown(),
        "a lost create may still have made a task"
    );
    assert_eq!(script.seen().len(), 1);
    let attempts = rec.attempts.lock().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].3, None, "final attempt announces no retry");
}

#[tokio::test]
async fn concurrency_limit_is_retried_with_growing_backoff() {
    let limit = || err(429, 1303, "parallel task over resource pack limit");
    let (script, client, rec, _) =
        setup(vec![limit(), limit(), limit(), ok(task("submitted"))]).await;
    let res = client.create_text_to_video(&prompt()).await.unwrap();
    assert_eq!(res.attempts, 4);
    assert_eq!(script.seen().len(), 4);
    let delays: Vec<Option<Duration>> = rec.attempts.lock().unwrap().iter().map(|a| a.3).collect();
    assert_eq!(
        delays,
        vec![
            Some(Duration::from_millis(5)),
            Some(Duration::from_millis(10)),
            Some(Duration::from_millis(20)),
            None
        ]
    );
    // Every attempt reused the first token.
    let auths: Vec<_> = script.seen().into_iter().map(|s| s.authorization).collect();
    assert!(auths.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(rec.tokens.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn rate_limit_gives_up_after_max_attempts() {
    let limit = || err(429, 1302, "too frequent");
    let (script, client, _, _) = setup(vec![limit(), limit(), limit(), limit(), limit()]).await;
    let e = client.create_text_to_video(&prompt()).await.unwrap_err();
    assert!(matches!(e, KlingError::RateLimited(_)));
    assert_eq!(script.seen().len(), 4);
}

#[tokio::test]
async fn content_policy_fails_fast_with_code_and_message() {
    let (script, client, _, _) = setup(vec![
        err(400, 1301, "content security policy triggered"),
        ok(task("submitted")),
    ])
    .await;
    let e = client.create_text_to_video(&prompt()).await.unwrap_err();
    let KlingError::ContentPolicy(api) = &e else {
        panic!("{e:?}")
    };
    assert_eq!(api.code, Some(1301));
    assert_eq!(api.message, "content security policy triggered");
    assert_eq!(api.request_id.as_deref(), Some("req-1301"));
    assert_eq!(script.seen().len(), 1);
}

#[tokio::test]
async fn account_states_on_429_are_not_retried() {
    let (script, client, _, _) = setup(vec![err(429, 1102, "Account balance not enough")]).await;
    let e = client.create_text_to_video(&prompt()).await.unwrap_err();
    assert!(matches!(e, KlingError::Account(_)));
    assert_eq!(script.seen().len(), 1);
}

#[tokio::test]
async fn http_200_with_error_code_is_an_error() {
    let (_, client, _, _) = setup(vec![err(200, 1201, "image can not be null")]).await;
    let e = client.create_text_to_video(&prompt()).await.unwrap_err();
    assert!(matches!(e, KlingError::Parameter(_)));
    assert_eq!((e.http_status(), e.code()), (Some(200), Some(1201)));
}

#[tokio::test]
async fn server_errors_on_reads_are_retried() {
    let (script, client, rec, _) = setup(vec![
        err(503, 5001, "maintenance"),
        Reply::Text(502, "<html>bad gateway</html>"),
        ok(task("processing")),
    ])
    .await;
    let res = client
        .query_task(Family::TextToVideo, "866889456698785798")
        .await
        .unwrap();
    assert_eq!(res.attempts, 3);
    assert_eq!(res.data.task_status, Some(TaskStatus::Processing));
    assert_eq!(
        script.seen()[0].uri,
        "/v1/videos/text2video/866889456698785798"
    );
    // GET requests carry Content-Type too (some clients do; servers must not mind).
    assert_eq!(
        script.seen()[0].content_type.as_deref(),
        Some("application/json")
    );
    let attempts = rec.attempts.lock().unwrap();
    assert_eq!(attempts[1].1, Some(502));
    assert_eq!(attempts[1].2, None, "a non-JSON body has no code");
    assert!(matches!(attempts[0].5, OperationKind::QueryOne { .. }));
}

#[tokio::test]
async fn reads_give_up_after_max_attempts() {
    let e500 = || err(500, 5000, "internal");
    let (script, client, _, _) = setup(vec![e500(), e500(), e500(), e500(), e500()]).await;
    let e = client
        .query_task(Family::TextToVideo, "1")
        .await
        .unwrap_err();
    assert!(matches!(e, KlingError::Server(_)));
    assert_eq!(script.seen().len(), 4);
}

#[tokio::test]
async fn expired_token_is_resigned_once() {
    let (script, client, rec, clock) = setup(vec![
        ok(task("submitted")),
        err(401, 1004, "Authorization has expired"),
        ok(task("submitted")),
    ])
    .await;
    client.query_task(Family::TextToVideo, "1").await.unwrap();
    clock.advance(100); // the cached token is reused, and the server calls it expired
    let res = client.create_text_to_video(&prompt()).await.unwrap();
    assert_eq!(res.attempts, 2);
    let seen = script.seen();
    assert_eq!(seen[0].authorization, seen[1].authorization);
    assert_ne!(
        seen[1].authorization, seen[2].authorization,
        "a new token was signed"
    );
    let tokens = rec.tokens.lock().unwrap();
    assert_eq!(tokens[0].0, TokenIssueReason::First);
    assert_eq!(
        tokens[1],
        (TokenIssueReason::AfterRejection(1004), T0 + 100, T0 + 1900)
    );
    let attempts = rec.attempts.lock().unwrap();
    assert!(attempts[1].4, "the rejected attempt announces the re-sign");
}

#[tokio::test]
async fn not_yet_valid_token_is_resigned_with_a_wider_margin() {
    let (script, client, rec, _) = setup(vec![
        err(401, 1003, "Authorization is not yet valid"),
        ok(task("submitted")),
    ])
    .await;
    client.create_text_to_video(&prompt()).await.unwrap();
    let seen = script.seen();
    let nbf = |i: usize| {
        let bearer = auth::bearer_token(seen[i].authorization.as_deref()).unwrap();
        auth::verify_jwt(bearer, SK, T0, 0, None).unwrap().nbf
    };
    assert_eq!((nbf(0), nbf(1)), (Some(T0 - 5), Some(T0 - 65)));
    assert_eq!(
        rec.tokens.lock().unwrap()[1].0,
        TokenIssueReason::AfterRejection(1003)
    );
}

#[tokio::test]
async fn resigning_a_token_signed_this_second_is_skipped() {
    // Same clock second: a new token would be byte-identical, so 1004 fails at once.
    let (script, client, _, _) = setup(vec![err(401, 1004, "Authorization has expired")]).await;
    let e = client.create_text_to_video(&prompt()).await.unwrap_err();
    assert_eq!(e.code(), Some(1004));
    assert_eq!(script.seen().len(), 1);
}

#[tokio::test]
async fn second_token_rejection_and_other_auth_errors_fail() {
    let exp = || err(401, 1003, "Authorization is not yet valid");
    let (script, client, _, _) = setup(vec![exp(), exp(), ok(task("submitted"))]).await;
    let e = client.create_text_to_video(&prompt()).await.unwrap_err();
    assert!(matches!(e, KlingError::Auth(_)));
    assert_eq!(script.seen().len(), 2, "only one re-sign per call");

    let (script, client, _, _) = setup(vec![err(401, 1002, "Authorization is invalid")]).await;
    let e = client
        .query_task(Family::TextToVideo, "1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(1002));
    assert_eq!(script.seen().len(), 1);
}

#[tokio::test]
async fn token_is_cached_and_renewed_with_the_clock() {
    let (script, client, rec, clock) = setup(vec![]).await;
    client.query_task(Family::TextToVideo, "1").await.unwrap();
    clock.advance(1000);
    client.query_task(Family::TextToVideo, "1").await.unwrap();
    clock.advance(600); // 200 s of life left: under the 300 s renewal point
    client.query_task(Family::TextToVideo, "1").await.unwrap();
    let seen = script.seen();
    assert_eq!(seen[0].authorization, seen[1].authorization);
    assert_ne!(seen[1].authorization, seen[2].authorization);
    let tokens = rec.tokens.lock().unwrap();
    assert_eq!(
        *tokens,
        vec![
            (TokenIssueReason::First, T0, T0 + 1800),
            (TokenIssueReason::Renewal, T0 + 1600, T0 + 3400)
        ]
    );
    let bearer = auth::bearer_token(seen[2].authorization.as_deref()).unwrap();
    assert!(auth::verify_jwt(bearer, SK, T0 + 1600, 0, None).is_ok());
}

#[tokio::test]
async fn api_key_is_sent_as_is() {
    let script = Script::new(vec![]);
    let addr = serve(script.clone()).await;
    let cfg = ClientConfig {
        credentials: Credentials::ApiKey(SecretString::new("opaque-api-key")),
        ..config(addr, Arc::new(ManualClock::new(T0)))
    };
    let client = KlingClient::new(cfg).unwrap();
    assert!(client.token_cache().is_none());
    client
        .query_task(Family::ImageGeneration, "1")
        .await
        .unwrap();
    assert_eq!(
        script.seen()[0].authorization.as_deref(),
        Some("Bearer opaque-api-key")
    );
}

#[tokio::test]
async fn transport_failures_retry_reads_but_not_creates() {
    // Bind and drop a listener to get a port nobody answers on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let recorder = Arc::new(Recorder::default());
    let client = KlingClient::new(config(addr, Arc::new(ManualClock::new(T0))))
        .unwrap()
        .with_observer(recorder.clone());
    let e = client.create_text_to_video(&prompt()).await.unwrap_err();
    assert!(
        matches!(
            e,
            KlingError::Transport {
                kind: TransportErrorKind::Connect,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.outcome_unknown());
    assert_eq!(recorder.transports.lock().unwrap().len(), 1);
    let e = client
        .query_task(Family::TextToVideo, "1")
        .await
        .unwrap_err();
    assert!(matches!(e, KlingError::Transport { .. }));
    assert_eq!(recorder.transports.lock().unwrap().len(), 1 + 4);
}

#[tokio::test]
async fn slow_answers_time_out() {
    let script = Script::new(vec![
        Reply::Sleep(Duration::from_secs(3)),
        Reply::Sleep(Duration::from_secs(3)),
    ]);
    let addr = serve(script.clone()).await;
    let cfg = ClientConfig {
        timeout: Duration::from_millis(100),
        retry: RetryPolicy {
            max_attempts: 2,
            ..fast_retry()
        },
        ..config(addr, Arc::new(ManualClock::new(T0)))
    };
    let client = KlingClient::new(cfg).unwrap();
    let e = client
        .query_task(Family::TextToVideo, "1")
        .await
        .unwrap_err();
    assert!(matches!(e, KlingError::Timeout { .. }), "{e:?}");
    assert_eq!(script.seen().len(), 2, "reads are retried after a timeout");
}

#[tokio::test]
async fn undecodable_success_is_a_decode_error() {
    let (_, client, _, _) = setup(vec![Reply::Text(200, "not json")]).await;
    let e = client
        .query_task(Family::TextToVideo, "1")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            KlingError::Decode {
                http_status: 200,
                ..
            }
        ),
        "{e:?}"
    );
    let (_, client, _, _) = setup(vec![ok(json!({"task_status": 7}))]).await;
    let e = client
        .query_task(Family::TextToVideo, "1")
        .await
        .unwrap_err();
    assert!(matches!(e, KlingError::Decode { .. }), "{e:?}");
    let (_, client, _, _) = setup(vec![Reply::Json(
        200,
        json!({"code": 0, "message": "SUCCEED", "request_id": "r"}),
    )])
    .await;
    let e = client
        .query_task(Family::TextToVideo, "1")
        .await
        .unwrap_err();
    assert!(matches!(e, KlingError::MissingData { .. }), "{e:?}");
}

#[tokio::test]
async fn lookup_forms_and_lists_use_documented_urls() {
    let (script, client, rec, _) = setup(vec![]).await;
    for form in [
        LookupForm::PathSlot,
        LookupForm::QueryParam,
        LookupForm::PathWithFlag,
    ] {
        client
            .query_by_external_id(Family::ImageToVideo, "order 42", form)
            .await
            .unwrap();
    }
    script
        .replies
        .lock()
        .unwrap()
        .push_back(ok(json!([task("succeed"), task("failed")])));
    let list = client
        .list_tasks(Family::ImageToVideo, 1, 30)
        .await
        .unwrap();
    assert_eq!(list.data.len(), 2);
    let uris: Vec<String> = script.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        uris,
        vec![
            "/v1/videos/image2video/order%2042",
            "/v1/videos/image2video?external_task_id=order%2042",
            "/v1/videos/image2video/order%2042?external_task_id=true",
            "/v1/videos/image2video?pageNum=1&pageSize=30",
        ]
    );
    let kinds: Vec<OperationKind> = rec
        .attempts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.5.clone())
        .collect();
    assert!(matches!(
        kinds[0],
        OperationKind::LookupByExternalId {
            form: LookupForm::PathSlot,
            ..
        }
    ));
    assert!(matches!(
        kinds[1],
        OperationKind::LookupByExternalId {
            form: LookupForm::QueryParam,
            ..
        }
    ));
    assert!(matches!(
        kinds[2],
        OperationKind::LookupByExternalId {
            form: LookupForm::PathWithFlag,
            ..
        }
    ));
    assert_eq!(kinds[3], OperationKind::QueryList);
}

#[tokio::test]
async fn account_costs_and_send_raw() {
    let (script, client, _, _) = setup(vec![
        ok(
            json!({"code": 0, "msg": "success", "resource_pack_subscribe_infos": [
            {"resource_pack_name": "p", "remaining_quantity": 12.5, "status": "online"}]}),
        ),
        ok(json!({"anything": true})),
    ])
    .await;
    let q = AccountCostsQuery {
        start_time: 1,
        end_time: 2,
        resource_pack_name: None,
    };
    let costs = client.account_costs(&q).await.unwrap();
    assert_eq!(costs.data.remaining_online(), 12.5);
    let raw = client
        .send_raw(
            "post",
            "/v1/images/generations",
            Some(&json!({"prompt": "x"})),
        )
        .await
        .unwrap();
    assert_eq!(raw.data, Some(json!({"anything": true})));
    let seen = script.seen();
    assert_eq!(seen[0].uri, "/account/costs?start_time=1&end_time=2");
    assert_eq!(
        (seen[1].method.as_str(), seen[1].body.as_slice()),
        ("POST", br#"{"prompt":"x"}"#.as_slice())
    );
    assert!(matches!(
        client.send_raw("GET", "no-slash", None).await,
        Err(KlingError::Config { .. })
    ));
}

#[tokio::test]
async fn polling_reports_changes_not_polls() {
    let (script, client, _, _) = setup(vec![
        ok(task("submitted")),
        ok(task("submitted")),
        ok(task("processing")),
        ok(task("processing")),
        ok(json!({"task_id": "866889456698785798", "task_status": "succeed",
                  "task_result": {"videos": [{"id": "v", "url": "", "watermark_url": "https://w/v.mp4"}]}})),
    ])
    .await;
    let mut changes: Vec<StatusChange> = Vec::new();
    let opts = PollOptions {
        initial_interval: Duration::from_millis(1),
        backoff: 2.0,
        max_interval: Duration::from_millis(4),
        deadline: Duration::from_secs(30),
    };
    let done = client
        .poll_until_done(Family::TextToVideo, "866889456698785798", opts, &mut |c| {
            changes.push(c.clone())
        })
        .await
        .unwrap();
    assert_eq!(script.seen().len(), 5);
    let path: Vec<(Option<TaskStatus>, TaskStatus, u32)> = changes
        .iter()
        .map(|c| (c.from.clone(), c.to.clone(), c.polls))
        .collect();
    assert_eq!(
        path,
        vec![
            (None, TaskStatus::Submitted, 1),
            (Some(TaskStatus::Submitted), TaskStatus::Processing, 3),
            (Some(TaskStatus::Processing), TaskStatus::Succeed, 5),
        ]
    );
    assert_eq!(done.outcome(), TaskOutcome::Succeeded);
    assert!(done.usable_urls()[0].watermarked);
}

#[tokio::test]
async fn polling_returns_failed_tasks_and_times_out() {
    let (_, client, _, _) = setup(vec![ok(json!({"task_id": "1", "task_status": "failed",
        "task_status_msg": "content risk control"}))])
    .await;
    let opts = PollOptions {
        initial_interval: Duration::from_millis(1),
        backoff: 1.0,
        max_interval: Duration::from_millis(1),
        deadline: Duration::from_secs(30),
    };
    let done = client
        .poll_until_done(Family::TextToVideo, "1", opts, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        done.outcome(),
        TaskOutcome::Failed {
            reason: "content risk control".into()
        }
    );

    let processing: Vec<Reply> = (0..500).map(|_| ok(task("processing"))).collect();
    let (_, client, _, _) = setup(processing).await;
    let opts = PollOptions {
        deadline: Duration::from_millis(30),
        ..opts
    };
    let e = client
        .poll_until_done(Family::TextToVideo, "1", opts, &mut |_| {})
        .await
        .unwrap_err();
    let KlingError::PollTimeout { last_status, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(last_status, Some(TaskStatus::Processing));
}

#[tokio::test]
async fn token_policy_margin_is_applied() {
    let script = Script::new(vec![]);
    let addr = serve(script.clone()).await;
    let cfg = ClientConfig {
        token: TokenPolicy {
            not_before_margin_secs: 60,
            ..TokenPolicy::default()
        },
        ..config(addr, Arc::new(ManualClock::new(T0)))
    };
    KlingClient::new(cfg)
        .unwrap()
        .query_task(Family::TextToVideo, "1")
        .await
        .unwrap();
    let seen = script.seen();
    let claims = auth::verify_jwt(
        auth::bearer_token(seen[0].authorization.as_deref()).unwrap(),
        SK,
        T0,
        0,
        None,
    )
    .unwrap();
    assert_eq!(claims.nbf, Some(T0 - 60));
}
