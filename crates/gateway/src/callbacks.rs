//! Callback interception: the gateway replaces a create's `callback_url` with
//! `<public url>/_gateway/callback/<token>`, records every callback Kling sends there
//! (`callback.received`, with the webhook-signature result), and relays it to the caller's
//! original URL with bounded retries, recording each attempt (`callback.relay`).
//!
//! When a webhook secret is configured, a callback without a valid signature is recorded and
//! refused (401): it neither moves the task's recorded status nor is relayed. Whatever the
//! secret, a callback moves only the status of the task its token's create made, and never a
//! status already final.
//!
//! The token is self-contained: base64url of `{actor, original URL, request id}` followed by
//! a tag, the keyed HMAC of that text under the ledger's commit key. So callbacks for tasks
//! created before a restart still find their way without any state on disk, and nobody
//! without the commit key can forge a token that makes the gateway post somewhere. The
//! original URL is thus visible to Kling inside the token, as it would be without the gateway;
//! it never enters a record (only its host and hash do).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use http::header::{HeaderMap, HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, StatusCode};
use kling_api::clock::{Clock as _, SystemClock};
use kling_api::{codes, webhook};
use kling_audit_ledger::Commitments;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::FailureMode;
use crate::inspect::{self, cap_chars};
use crate::proxy::{self, StatusChange};
use crate::state::AppState;
use crate::tasks::CallbackObserved;

/// Path prefix of the callback endpoint.
pub const CALLBACK_PATH: &str = "/_gateway/callback/";
/// Commitment label of callback tokens (the tag of the earlier, unsealed form, and the sealed
/// form's associated data).
const TOKEN_LABEL: &str = "gateway-callback";
/// Commitment label of the key that seals callback tokens.
const TOKEN_KEY_LABEL: &str = "gateway-callback-key";
/// Largest callback body accepted (task objects are a few KiB).
const MAX_CALLBACK_BYTES: usize = 1024 * 1024;
/// Header telling the caller's receiver which record holds the callback.
pub const HEADER_CALLBACK_RECORD: &str = "x-kling-audit-callback-record";

/// What a callback token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPayload {
    /// The actor that created the task.
    #[serde(rename = "a")]
    pub actor: String,
    /// The caller's original callback URL.
    #[serde(rename = "u")]
    pub url: String,
    /// The gateway request id of the create.
    #[serde(rename = "r")]
    pub request_id: String,
}

/// Makes the token for one create: the payload sealed (XChaCha20-Poly1305, a random nonce,
/// under a key derived from the commit key), so the caller's callback URL, which may carry a
/// secret in its query, cannot be read from the URL the gateway gives Kling, nor from the
/// logs of anything that sees it.
pub fn make_token(commitments: &Commitments, actor: &str, url: &str, request_id: &str) -> String {
    let payload = TokenPayload {
        actor: actor.to_owned(),
        url: url.to_owned(),
        request_id: request_id.to_owned(),
    };
    // Serialising three strings cannot fail.
    let json = serde_json::to_vec(&payload).unwrap_or_default();
    let nonce: [u8; NONCE_BYTES] = rand::random();
    let sealed = token_cipher(commitments)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &json,
                aad: TOKEN_LABEL.as_bytes(),
            },
        )
        // Encryption fails only for messages beyond 256 GiB.
        .unwrap_or_default();
    let mut token = nonce.to_vec();
    token.extend_from_slice(&sealed);
    URL_SAFE_NO_PAD.encode(token)
}

/// Checks a token and opens it; `None` for anything forged or malformed. Tokens made before
/// they were sealed (`<base64 payload>.<tag>`) are still accepted, for tasks created before an
/// upgrade whose callbacks come after it.
pub fn open_token(commitments: &Commitments, token: &str) -> Option<TokenPayload> {
    if token.contains('.') {
        return open_signed_token(commitments, token);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    if bytes.len() < NONCE_BYTES {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
    let json = token_cipher(commitments)
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: TOKEN_LABEL.as_bytes(),
            },
        )
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// Bytes of a sealed token's nonce.
const NONCE_BYTES: usize = 24;

/// The cipher of callback tokens, keyed by a commitment of its own label under the commit key.
fn token_cipher(commitments: &Commitments) -> XChaCha20Poly1305 {
    let mut key = [0u8; 32];
    // A commitment is 64 hex digits, so this always fills the key.
    let _ = hex::decode_to_slice(commitments.commit(TOKEN_KEY_LABEL, b""), &mut key);
    XChaCha20Poly1305::new(&key.into())
}

/// Opens a token of the earlier, signed but unsealed form.
fn open_signed_token(commitments: &Commitments, token: &str) -> Option<TokenPayload> {
    let (encoded, tag) = token.rsplit_once('.')?;
    let expected = commitments.commit(TOKEN_LABEL, encoded.as_bytes());
    let expected = expected.get(..32)?;
    if tag.len() != expected.len()
        || tag
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    serde_json::from_slice(&json).ok()
}

/// The result of checking a callback's Standard Webhooks signature.
fn signature_result(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> (&'static str, Option<String>) {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (id, ts, sig) = (
        get(webhook::HEADER_ID),
        get(webhook::HEADER_TIMESTAMP),
        get(webhook::HEADER_SIGNATURE),
    );
    let Some(secret) = &state.cfg.callbacks.webhook_secret else {
        let present = sig.is_some();
        return (if present { "not-checked" } else { "absent" }, None);
    };
    let (Some(id), Some(ts), Some(sig)) = (id, ts, sig) else {
        return ("absent", None);
    };
    match webhook::verify(
        secret.expose(),
        id,
        ts,
        sig,
        body,
        SystemClock.now_unix(),
        state.cfg.callbacks.webhook_tolerance_secs,
    ) {
        Ok(()) => ("valid", None),
        Err(e) => {
            let reason = match e {
                webhook::WebhookError::StaleTimestamp { .. } => "stale-timestamp",
                webhook::WebhookError::InvalidTimestamp { .. } => "bad-timestamp",
                webhook::WebhookError::NoSignature => "no-v1-signature",
                webhook::WebhookError::Mismatch { .. } => "mismatch",
                webhook::WebhookError::InvalidSecret => "bad-secret",
            };
            ("invalid", Some(reason.to_owned()))
        }
    }
}

/// Counts a refused callback and answers it, naming `record`, the record of the refusal.
/// Where the refusal of a request that proved no identity is recorded.
enum Rejection {
    /// In a record of its own (`None` when it could not be written).
    Own(Option<u64>),
    /// Counted into a `gateway.denied_summary` record: the source used up its budget of
    /// refusals recorded one by one (see `flood`).
    Summarized,
}

/// Records the refusal of a callback request that proved no identity as `callback.rejected`,
/// within the source's budget of refusals recorded one by one.
async fn record_rejection(
    state: &AppState,
    peer: SocketAddr,
    reason: &'static str,
    details: &Value,
) -> Rejection {
    if !state.denials.admit(peer.ip(), reason) {
        state
            .metrics
            .denials_summarized
            .fetch_add(1, Ordering::Relaxed);
        return Rejection::Summarized;
    }
    let seq = state
        .auditor
        .append(
            "callback.rejected",
            crate::actors::UNAUTHENTICATED_ACTOR,
            details,
        )
        .await
        .ok()
        .map(|r| r.seq);
    Rejection::Own(seq)
}

/// [`refuse`] for a refusal recorded as `rejection` says.
fn refuse_unidentified(
    state: &AppState,
    status: StatusCode,
    body: Value,
    rejection: Rejection,
) -> Response {
    match rejection {
        Rejection::Own(seq) => refuse(state, status, body, seq),
        Rejection::Summarized => {
            let mut response = refuse(state, status, body, None);
            response.headers_mut().insert(
                proxy::HEADER_RECORD,
                HeaderValue::from_static(proxy::SUMMARIZED),
            );
            response
        }
    }
}

fn refuse(state: &AppState, status: StatusCode, body: Value, record: Option<u64>) -> Response {
    state
        .metrics
        .callbacks_rejected
        .fetch_add(1, Ordering::Relaxed);
    plain(status, body, record)
}

/// A JSON answer naming the record written for the callback in `x-kling-audit-record`, or
/// `unrecorded` when none could be.
fn plain(status: StatusCode, body: Value, record: Option<u64>) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        proxy::HEADER_RECORD,
        record.map_or(HeaderValue::from_static("unrecorded"), HeaderValue::from),
    );
    r
}

/// Any method but POST on `/_gateway/callback/{token}`. Kling delivers callbacks with POST
/// alone; anything else is refused as the API surface refuses a method it does not serve, and
/// recorded, since a request that reaches the gateway leaves a record. The token is not read:
/// nothing of it is recorded.
pub async fn method_not_allowed(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
) -> Response {
    let mut id_text = uuid::Uuid::encode_buffer();
    let request_id: &str = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id_text);
    let shown = cap_chars(method.as_str(), inspect::METHOD_MAX_CHARS);
    let details = json!({
        "reason": "method-not-allowed",
        "method": shown,
        "code": codes::PARAMETER_INVALID,
        "http_status": StatusCode::METHOD_NOT_ALLOWED.as_u16(),
        "request_id": request_id,
        "source_ip": peer.ip().to_string(),
    });
    let rejection = record_rejection(&state, peer, "method-not-allowed", &details).await;
    tracing::info!(target: "kling_audit_gateway::callbacks", %request_id, method = %shown, "callback method refused");
    let message = format!(
        "the callback endpoint takes only POST, the method Kling delivers callbacks with; \
         {shown} is not served (method names are case-sensitive)"
    );
    let body = kling_api::envelope::error_body(codes::PARAMETER_INVALID, &message, request_id);
    let mut response = refuse_unidentified(&state, StatusCode::METHOD_NOT_ALLOWED, body, rejection);
    let headers = response.headers_mut();
    // A 405 names the methods that would be served (RFC 9110, 15.5.6).
    headers.insert(ALLOW, HeaderValue::from_static("POST"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(proxy::HEADER_REQUEST_ID, v);
    }
    response
}

/// `POST /_gateway/callback/{token}`.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let commitments = state.auditor.commitments();
    let Some(payload) = open_token(commitments, &token) else {
        let details = json!({ "reason": "unknown-token", "source_ip": peer.ip().to_string() });
        let rejection = record_rejection(&state, peer, "unknown-token", &details).await;
        return refuse_unidentified(
            &state,
            StatusCode::NOT_FOUND,
            json!({ "error": "unknown callback" }),
            rejection,
        );
    };
    let body = match axum::body::to_bytes(body, MAX_CALLBACK_BYTES).await {
        Ok(body) => body,
        Err(e) => {
            let too_large = e
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let (reason, status, error) = if too_large {
                (
                    "body-too-large",
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "callback too large",
                )
            } else {
                (
                    "body-unreadable",
                    StatusCode::BAD_REQUEST,
                    "callback body could not be read to its end",
                )
            };
            // Kept as evidence that a callback for this create came, though nothing of it
            // could be read.
            let details = json!({
                "reason": reason,
                "http_status": status.as_u16(),
                "max_body_bytes": MAX_CALLBACK_BYTES,
                "source_ip": peer.ip().to_string(),
            });
            let seq = state
                .auditor
                .append("callback.rejected", &payload.actor, &details)
                .await
                .ok()
                .map(|r| r.seq);
            return refuse(&state, status, json!({ "error": error }), seq);
        }
    };
    state
        .metrics
        .callbacks_received
        .fetch_add(1, Ordering::Relaxed);
    let (signature, signature_reason) = signature_result(&state, &headers, &body);
    // With a secret configured only a callback signed with it is Kling's: anything else is
    // kept as evidence that it came, but moves no status and reaches no caller. Without one
    // nothing can be told apart, so every callback counts.
    let accepted = state.cfg.callbacks.webhook_secret.is_none() || signature == "valid";
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let view = parsed.as_ref().and_then(inspect::task_view);
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| cap_chars(s, 64))
    };
    let original = inspect::url_summary(&payload.url);
    let mut details = Map::new();
    details.insert("request_id".into(), json!(payload.request_id));
    details.insert(
        "task_id".into(),
        json!(view.as_ref().map(|v| v.task_id.clone())),
    );
    details.insert(
        "status".into(),
        json!(view.as_ref().and_then(|v| v.status.clone())),
    );
    details.insert(
        "external_task_id".into(),
        json!(view
            .as_ref()
            .and_then(|v| v.external_task_id.as_deref())
            .map(|id| cap_chars(id, inspect::EXTERNAL_ID_MAX_CHARS))),
    );
    details.insert("signature".into(), json!(signature));
    details.insert("signature_reason".into(), json!(signature_reason));
    details.insert("accepted".into(), json!(accepted));
    details.insert("webhook_id".into(), json!(header_text(webhook::HEADER_ID)));
    details.insert(
        "webhook_timestamp".into(),
        json!(header_text(webhook::HEADER_TIMESTAMP)),
    );
    details.insert("body_sha256".into(), json!(inspect::sha256_hex(&body)));
    details.insert("body_bytes".into(), json!(body.len()));
    details.insert("body_json".into(), json!(parsed.is_some()));
    details.insert("relay_host".into(), original["host"].clone());
    details.insert("relay_url_sha256".into(), original["sha256"].clone());
    details.insert("source_ip".into(), json!(peer.ip().to_string()));

    let received_seq = match state
        .auditor
        .append("callback.received", &payload.actor, &Value::Object(details))
        .await
    {
        Ok(r) => Some(r.seq),
        Err(_) => match state.auditor.mode() {
            FailureMode::FailClosed => {
                // Kling may deliver again later; relaying unrecorded would break the trail.
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "error": "audit ledger unavailable" }),
                    None,
                );
            }
            FailureMode::FailOpen => {
                state.auditor.note_unaudited();
                None
            }
        },
    };

    if !accepted {
        return refuse(
            &state,
            StatusCode::UNAUTHORIZED,
            json!({
                "error": "callback signature not valid",
                "signature": signature,
                "signature_reason": signature_reason,
            }),
            received_seq,
        );
    }

    if let Some(view) = &view {
        if let Some(status) = &view.status {
            if let CallbackObserved::Changed { entry } = state.tasks.observe_callback(
                &view.task_id,
                &payload.actor,
                &payload.request_id,
                status,
            ) {
                let change = StatusChange {
                    task_id: view.task_id.clone(),
                    owner: entry.owner,
                    family: entry.family,
                    from: entry.status,
                    to: status.clone(),
                    task: view.raw.clone(),
                };
                proxy::record_status_change(
                    &state,
                    change,
                    &payload.request_id,
                    None,
                    received_seq,
                    "callback",
                )
                .await;
            }
        }
    }

    let guard = state.relays.start();
    let relay_state = Arc::clone(&state);
    let task_id = view.map(|v| v.task_id);
    tokio::spawn(async move {
        relay(
            &relay_state,
            &payload,
            &headers,
            body,
            task_id,
            received_seq,
        )
        .await;
        drop(guard);
    });
    plain(
        StatusCode::OK,
        json!({ "code": 0, "message": "SUCCEED" }),
        received_seq,
    )
}

/// Posts the callback body to the caller's URL, retrying with doubling pauses, and records
/// every attempt.
async fn relay(
    state: &Arc<AppState>,
    payload: &TokenPayload,
    headers: &HeaderMap,
    body: Bytes,
    task_id: Option<String>,
    received_seq: Option<u64>,
) {
    let attempts = state.cfg.callbacks.relay_attempts;
    let summary = inspect::url_summary(&payload.url);
    let mut pause = state.cfg.callbacks.relay_backoff;
    for attempt in 1..=attempts {
        let started = Instant::now();
        let mut request = state.relay.post(&payload.url).body(body.clone());
        for name in [
            CONTENT_TYPE.as_str(),
            webhook::HEADER_ID,
            webhook::HEADER_TIMESTAMP,
            webhook::HEADER_SIGNATURE,
        ] {
            if let Some(v) = headers.get(name) {
                request = request.header(name, v);
            }
        }
        if let Some(seq) = received_seq {
            request = request.header(HEADER_CALLBACK_RECORD, seq.to_string());
        }
        let result = request.send().await;
        let latency = started.elapsed();
        let (outcome, http_status, error) = match &result {
            Ok(r) if r.status().is_success() => ("delivered", Some(r.status().as_u16()), None),
            Ok(r) => ("refused", Some(r.status().as_u16()), None),
            Err(e) if e.is_timeout() => ("error", None, Some("timeout")),
            Err(e) if e.is_connect() => ("error", None, Some("connect")),
            Err(_) => ("error", None, Some("other")),
        };
        let delivered = outcome == "delivered";
        let counter = if delivered {
            &state.metrics.relay_delivered
        } else {
            &state.metrics.relay_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let details = json!({
            "request_id": payload.request_id,
            "task_id": task_id,
            "received_seq": received_seq,
            "attempt": attempt,
            "max_attempts": attempts,
            "outcome": outcome,
            "http_status": http_status,
            "error": error,
            "latency_ms": latency.as_secs_f64() * 1000.0,
            "host": summary["host"],
            "url_sha256": summary["sha256"],
            "final": delivered || attempt == attempts,
        });
        let _ = state
            .auditor
            .append("callback.relay", &payload.actor, &details)
            .await;
        if delivered {
            return;
        }
        tracing::info!(target: "kling_audit_gateway::callbacks", attempt, outcome, "callback relay attempt failed");
        if attempt < attempts {
            tokio::time::sleep(pause).await;
            pause = pause.saturating_mul(2).min(Duration::from_secs(60));
        }
    }
    tracing::warn!(target: "kling_audit_gateway::callbacks", attempts, "callback relay given up");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The token of the earlier form: the payload in base64 and a tag, readable by anyone.
    fn signed_token(c: &Commitments, actor: &str, url: &str, request_id: &str) -> String {
        let payload = TokenPayload {
            actor: actor.to_owned(),
            url: url.to_owned(),
            request_id: request_id.to_owned(),
        };
        let encoded = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
        let tag = c.commit(TOKEN_LABEL, encoded.as_bytes());
        format!("{encoded}.{}", &tag[..32])
    }

    #[test]
    fn tokens_round_trip_and_resist_forgery() {
        let c = Commitments::new([3; 32]);
        let token = make_token(&c, "alice", "http://127.0.0.1:9/cb?x=1", "req-1");
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
        let payload = open_token(&c, &token).unwrap();
        assert_eq!(payload.actor, "alice");
        assert_eq!(payload.url, "http://127.0.0.1:9/cb?x=1");
        assert_eq!(payload.request_id, "req-1");

        let other = Commitments::new([4; 32]);
        assert!(open_token(&other, &token).is_none(), "another key");
        // Any change to a sealed token, or a token sealed under another key, fails to open.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in [0, NONCE_BYTES, bytes.len() - 1] {
            bytes[i] ^= 1;
            assert!(
                open_token(&c, &URL_SAFE_NO_PAD.encode(&bytes)).is_none(),
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        let forged = make_token(&other, "mallory", "http://evil/", "r");
        assert!(open_token(&c, &forged).is_none());
        assert!(open_token(&c, &token[..token.len() - 2]).is_none());
        assert!(open_token(&c, "").is_none());
        assert!(open_token(&c, "....").is_none());
    }

    #[test]
    fn a_token_does_not_show_the_callers_url() {
        let c = Commitments::new([3; 32]);
        let url = "https://app.example/hooks/kling?signature=s3cr3t-value";
        let token = make_token(&c, "alice", url, "req-1");
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for needle in ["s3cr3t", "app.example", "alice"] {
            assert!(!token.contains(needle), "{needle} in {token}");
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} readable in the token"
            );
        }
        // Two tokens of one create differ: nothing links them but the key.
        assert_ne!(token, make_token(&c, "alice", url, "req-1"));
        assert_eq!(open_token(&c, &token).unwrap().url, url);
    }

    #[test]
    fn a_token_of_the_earlier_signed_form_still_opens_and_is_still_checked() {
        let c = Commitments::new([3; 32]);
        let token = signed_token(&c, "alice", "http://127.0.0.1:9/cb", "req-1");
        let payload = open_token(&c, &token).unwrap();
        assert_eq!(payload.actor, "alice");
        assert_eq!(payload.url, "http://127.0.0.1:9/cb");
        let (encoded, tag) = token.rsplit_once('.').unwrap();
        let forged = signed_token(&Commitments::new([4; 32]), "mallory", "http://evil/", "r");
        let (forged_encoded, _) = forged.rsplit_once('.').unwrap();
        assert!(open_token(&c, &format!("{forged_encoded}.{tag}")).is_none());
        assert!(open_token(&c, &format!("{encoded}.")).is_none());
    }

    proptest::proptest! {
        #[test]
        fn open_token_is_total(token in ".{0,200}") {
            let c = Commitments::new([5; 32]);
            let _ = open_token(&c, &token);
        }

        #[test]
        fn any_payload_round_trips(actor in "[a-z@._-]{1,20}", url in ".{0,100}", rid in ".{0,40}") {
            let c = Commitments::new([6; 32]);
            let token = make_token(&c, &actor, &url, &rid);
            let p = open_token(&c, &token).unwrap();
            proptest::prop_assert_eq!((p.actor, p.url, p.request_id), (actor, url, rid));
        }
    }
}
