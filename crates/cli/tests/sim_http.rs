//! `kling-audit sim` over plain HTTP with JWTs built by hand (base64url and HMAC-SHA256, not
//! the project's signing code): a valid token is accepted; an expired one gets 1004, a
//! not-yet-valid one 1003, a bad signature 1002 and a missing header 1001. And what SIGTERM
//! does to kept-alive connections, idle or with a request in progress.

mod sim_process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
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

/// Sends a GET of [`LIST`] on a connection that stays open afterwards.
fn send_list(stream: &mut TcpStream, addr: SocketAddr, authorization: &str) {
    write!(
        stream,
        "GET {LIST} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\n\r\n"
    )
    .unwrap();
}

/// Reads one answer from a kept-alive connection: its status and JSON body.
fn read_answer(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Value)> {
    let mut status = None;
    let (mut length, mut chunked) = (None, false);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if status.is_none() {
            status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
            continue;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok();
        }
        chunked |= lower.starts_with("transfer-encoding: chunked");
    }
    let body = if chunked {
        let mut raw = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..size]);
        }
        raw
    } else {
        let mut raw = vec![0; length.expect("an answer without a length")];
        reader.read_exact(&mut raw)?;
        raw
    };
    Ok((status.unwrap(), serde_json::from_slice(&body).unwrap()))
}

/// Whether the simulator closed the connection within `limit`, and after how long.
fn closed_within(reader: &mut BufReader<TcpStream>, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    reader.get_ref().set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0u8; 1];
    match reader.read(&mut byte) {
        Ok(0) => Some(started.elapsed()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(started.elapsed()),
        _ => None,
    }
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
    let addr = sim.addr;
    let idle: Vec<_> = (0..32)
        .map(|_| {
            let auth = auth.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                send_list(&mut stream, addr, &auth);
                let mut reader = BufReader::new(stream);
                let (status, body) = read_answer(&mut reader).unwrap();
                assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
                reader
            })
        })
        .collect();
    let mut idle: Vec<_> = idle.into_iter().map(|t| t.join().unwrap()).collect();
    // And a few that never sent anything.
    idle.extend((0..4).map(|_| BufReader::new(TcpStream::connect(addr).unwrap())));

    let mut busy = TcpStream::connect(addr).unwrap();
    send_list(&mut busy, addr, &auth);
    let busy = std::thread::spawn(move || {
        let mut reader = BufReader::new(busy);
        let answer = read_answer(&mut reader);
        (answer, Instant::now())
    });
    // The request is inside its delay when the signal comes.
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    sim.terminate();
    for (i, reader) in idle.iter_mut().enumerate() {
        let waited = signalled.elapsed();
        let closed = closed_within(reader, Duration::from_secs(5));
        let after = closed.map(|c| waited + c);
        assert!(
            after.is_some_and(|a| a < DELAY / 2),
            "idle connection {i} closed {after:?} after SIGTERM"
        );
    }
    let (answer, answered) = busy.join().unwrap();
    let (status, body) = answer.expect("the request in progress at SIGTERM got no answer");
    assert_eq!((status, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert!(sim.wait().success());
    let exited = signalled.elapsed();
    assert!(
        exited < answered.duration_since(signalled) + Duration::from_secs(1),
        "exited {exited:?} after SIGTERM, the last answer went at {:?}",
        answered.duration_since(signalled)
    );
}
