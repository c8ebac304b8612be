//! `kling-audit sim` over plain HTTP with JWTs built by hand (base64url and HMAC-SHA256, not
//! the project's signing code): a valid token is accepted; an expired one gets 1004, a
//! not-yet-valid one 1003, a bad signature 1002 and a missing header 1001. And what SIGTERM
//! does to kept-alive connections, idle or with a request in progress.

mod keep_alive;
mod sim_process;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use keep_alive::{exited_right_after, hold_connections};
use serde_json::{json, Value};
use sim_process::SimProcess;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `base64url(header) . base64url(claims) . base64url(HMAC-SHA256(secret, first two parts))`.
fn jwt(claims: &Value, secret: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// One HTTP/1.1 request over a raw socket; returns the status and the JSON body.
fn get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, serde_json::from_str(&body).unwrap())
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
}

const LIST: &str = "/v1/videos/text2video?pageNum=1&pageSize=10";

#[test]
fn hand_built_tokens_get_the_documented_codes() {
    let sim = SimProcess::start(&[]);
    sim.stderr_containing("the documented test pair");
    let (ak, sk) = (kling_sim::TEST_ACCESS_KEY, kling_sim::TEST_SECRET_KEY);
    let t = now();

    let valid = jwt(
        &json!({"iss": ak, "exp": t + 1800, "nbf": t - 5, "iat": t}),
        sk,
    );
    let (status, body) = get(sim.addr, LIST, Some(&format!("Bearer {valid}")));
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert!(body["data"].is_array());

    let cases = [
        (
            "expired",
            jwt(&json!({"iss": ak, "exp": t - 3600, "nbf": t - 7200}), sk),
            1004,
        ),
        (
            "not yet valid",
            jwt(&json!({"iss": ak, "exp": t + 7200, "nbf": t + 3600}), sk),
            1003,
        ),
        (
            "bad signature",
            jwt(
                &json!({"iss": ak, "exp": t + 1800, "nbf": t - 5}),
                "not-the-secret",
            ),
            1002,
        ),
    ];
    for (name, token, code) in cases {
        let (status, body) = get(sim.addr, LIST, Some(&format!("Bearer {token}")));
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["code"], code, "{name}: {body}");
        assert!(body.get("data").is_none(), "{name}: {body}");
        assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    }

    let (status, body) = get(sim.addr, LIST, None);
    assert_eq!((status, body["code"].as_i64()), (401, Some(1001)), "{body}");

    assert!(sim.stop().success());
}

/// At SIGTERM the simulator used to cut every connection at once, so a request in progress got
/// no answer. Now idle keep-alive connections (here many, each after a call, and a few that
/// never sent a request) are closed at once, a request in progress is still answered, and the process exits right after it.
#[test]
fn sigterm_closes_idle_keep_alive_connections_at_once_and_answers_the_request_in_progress() {
    const DELAY: Duration = Duration::from_millis(1500);
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("sim.toml");
    std::fs::write(
        &config,
        format!(
            "[faults]\nlatency_rate = 1.0\nlatency_ms = {}\n",
            DELAY.as_millis()
        ),
    )
    .unwrap();
    let sim = SimProcess::start_with_args(&["--config", config.to_str().unwrap()], &[]);
    let (ak, sk) = (kling_sim::TEST_ACCESS_KEY, kling_sim::TEST_SECRET_KEY);
    let t = now();
    let auth = format!(
        "Bearer {}",
        jwt(
            &json!({"iss": ak, "exp": t + 1800, "nbf": t - 5, "iat": t}),
            sk
        )
    );
    let held = hold_connections(sim.addr, LIST, &auth);
    let signalled = Instant::now();
    sim.terminate();
    let answered = held.check_after_sigterm(signalled, DELAY);
    assert!(sim.wait().success());
    exited_right_after(signalled.elapsed(), answered);
}
