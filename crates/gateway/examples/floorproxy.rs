//! A reverse proxy that does as little as a proxy on hyper can, for `bench/gateway.sh`: it
//! measures the floor under the gateway's cost on the same machine, so that the gateway's
//! numbers can be split into what hyper costs, what the ledger's two durable appends per call
//! cost, and what the gateway's own work costs.
//!
//! Each caller connection gets one upstream connection of its own; requests and answers are
//! passed on with their headers, bodies read whole (as the gateway reads them). No checks, no
//! credentials, no inspection. With `--ledger DIR` each call also appends two records to a
//! ledger in `DIR`, shaped and sized like the gateway's request and response records, the first
//! durable before the call is forwarded and the second before the answer goes back: the
//! write-ahead the gateway does, and nothing else.
//!
//! ```text
//! floorproxy --upstream HOST:PORT [--listen 127.0.0.1:0] [--ledger DIR]
//! ```
//!
//! Prints the bound address as its first line; SIGTERM or SIGINT closes the ledger and exits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kling_audit_ledger::{Details, Entry, Ledger, LedgerOptions};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;

// The gateway's binary runs on mimalloc; the floor must run on the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The fields of a `gateway.request` record for a call of the benchmark, with values of the
/// same sizes (what the gateway learns by inspecting the call is fixed here).
#[derive(Serialize)]
struct RequestRecord<'a> {
    auth_mode: &'static str,
    body_bytes: usize,
    body_json: bool,
    credential: Credential,
    external_task_id: Option<&'a str>,
    family: &'static str,
    generation: &'static str,
    method: &'a str,
    operation: &'static str,
    query: Option<&'a str>,
    request_id: String,
    route: &'a str,
    source_ip: String,
    sync: bool,
    user_agent: Option<&'a str>,
    /// For a call with a body, what the gateway records of a create, at the same size.
    #[serde(flatten)]
    create: Option<CreateSummary>,
}

#[derive(Serialize)]
struct CreateSummary {
    media: [(); 0],
    model: &'static str,
    model_missing: bool,
    model_source: &'static str,
    params: Params,
    prompts: [Prompt; 1],
    unknown_fields: [(); 0],
}

#[derive(Serialize)]
struct Params {
    duration: &'static str,
    duration_type: &'static str,
    mode: &'static str,
}

#[derive(Serialize)]
struct Prompt {
    chars: usize,
    field: &'static str,
    hmac: &'static str,
}

#[derive(Serialize)]
struct Credential {
    exp: u64,
    iat: Option<u64>,
    key_fp: &'static str,
    kind: &'static str,
    nbf: u64,
    verified: bool,
}

/// The fields of a `gateway.response` record.
#[derive(Serialize)]
struct ResponseRecord<'a> {
    body_bytes: usize,
    body_json: bool,
    code: i64,
    family: &'static str,
    http_status: u16,
    message: &'static str,
    operation: &'static str,
    outcome: &'static str,
    request_id: &'a str,
    request_seq: u64,
    route: &'a str,
    upstream_ms: f64,
    upstream_request_id: Option<&'a str>,
}

struct Audit {
    ledger: Ledger,
    /// Calls in flight: a lone call may write its records on its own thread, as the gateway's
    /// do.
    calls: AtomicUsize,
}

impl Audit {
    async fn append<T: Serialize>(&self, kind: &str, details: &T) -> Result<u64, String> {
        let details = Details::from_serialize(details).map_err(|e| e.to_string())?;
        let entry = Entry::new(kind, "bench-app", details).map_err(|e| e.to_string())?;
        let receipt = if self.calls.load(Ordering::Relaxed) <= 1 {
            self.ledger.append_async(entry).await
        } else {
            self.ledger.append_async_queued(entry).await
        };
        receipt.map(|r| r.seq).map_err(|e| e.to_string())
    }
}

fn usage() -> ! {
    eprintln!("usage: floorproxy --upstream HOST:PORT [--listen ADDR] [--ledger DIR]");
    std::process::exit(2);
}

fn main() {
    let mut upstream = None;
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut ledger_dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--upstream" => upstream = Some(value),
            "--listen" => listen = value.parse().unwrap_or_else(|_| usage()),
            "--ledger" => ledger_dir = Some(value),
            _ => usage(),
        }
    }
    let upstream = upstream.unwrap_or_else(|| usage());
    let audit = ledger_dir.map(|dir| {
        let (ledger, _) = Ledger::open(LedgerOptions::new(&dir)).unwrap_or_else(|e| {
            eprintln!("floorproxy: cannot open the ledger in {dir}: {e}");
            std::process::exit(1);
        });
        Arc::new(Audit {
            ledger,
            calls: AtomicUsize::new(0),
        })
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("floorproxy: cannot start the runtime: {e}");
            std::process::exit(1);
        });
    runtime.block_on(serve(listen, upstream, audit));
}

async fn serve(listen: SocketAddr, upstream: String, audit: Option<Arc<Audit>>) {
    let listener = TcpListener::bind(listen).await.unwrap_or_else(|e| {
        eprintln!("floorproxy: cannot listen on {listen}: {e}");
        std::process::exit(1);
    });
    match listener.local_addr() {
        Ok(addr) => println!("{addr}"),
        Err(e) => {
            eprintln!("floorproxy: {e}");
            std::process::exit(1);
        }
    }
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("floorproxy: cannot catch signals");
        std::process::exit(1);
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((caller, peer)) = accepted else { continue };
                tokio::spawn(connection(caller, peer, upstream.clone(), audit.clone()));
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    if let Some(audit) = audit {
        if let Err(e) = audit.ledger.close_async().await {
            eprintln!("floorproxy: closing the ledger: {e}");
        }
    }
}

/// Serves one caller connection over one upstream connection of its own.
async fn connection(
    caller: TcpStream,
    peer: SocketAddr,
    upstream: String,
    audit: Option<Arc<Audit>>,
) {
    let Ok(up) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = caller.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let Ok((sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(up)).await else {
        return;
    };
    tokio::spawn(conn);
    // One request at a time per caller connection (HTTP/1), so the lock is never contended.
    let sender = Arc::new(Mutex::new(sender));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let sender = Arc::clone(&sender);
        let audit = audit.clone();
        async move {
            if let Some(audit) = &audit {
                audit.calls.fetch_add(1, Ordering::Relaxed);
            }
            let answer = forward(req, peer, &sender, audit.as_deref()).await;
            if let Some(audit) = &audit {
                audit.calls.fetch_sub(1, Ordering::Relaxed);
            }
            Ok::<_, hyper::Error>(answer.unwrap_or_else(|e| {
                let mut r = Response::new(Full::new(Bytes::from(e)));
                *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                r
            }))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(caller), service)
        .await;
}

async fn forward(
    req: Request<Incoming>,
    peer: SocketAddr,
    sender: &Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    audit: Option<&Audit>,
) -> Result<Response<Full<Bytes>>, String> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let request_id = uuid::Uuid::new_v4().to_string();
    let route = parts.uri.path();
    let request_seq = match audit {
        Some(audit) => {
            let record = RequestRecord {
                auth_mode: "actors",
                body_bytes: body.len(),
                body_json: true,
                credential: Credential {
                    exp: 1_796_486_777,
                    iat: None,
                    key_fp: "kf_0000000000000000",
                    kind: "jwt",
                    nbf: 1_796_479_572,
                    verified: true,
                },
                external_task_id: None,
                family: "account-costs",
                generation: "legacy",
                method: parts.method.as_str(),
                operation: "account",
                query: parts.uri.query(),
                request_id: request_id.clone(),
                route,
                source_ip: peer.ip().to_string(),
                sync: true,
                create: (!body.is_empty()).then(|| CreateSummary {
                    media: [],
                    model: "kling-v1",
                    model_missing: false,
                    model_source: "model_name",
                    params: Params {
                        duration: "5",
                        duration_type: "string",
                        mode: "std",
                    },
                    prompts: [Prompt {
                        chars: body.len() / 3,
                        field: "prompt",
                        hmac: "39a8c89de0fdb0907614a128e7573f25f1d313f78c7966f53fd99404dd6e9381",
                    }],
                    unknown_fields: [],
                }),
                user_agent: parts
                    .headers
                    .get(hyper::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
            };
            audit.append("gateway.request", &record).await?
        }
        None => 0,
    };
    let mut upstream_req = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    for (name, value) in &parts.headers {
        upstream_req = upstream_req.header(name, value);
    }
    let upstream_req = upstream_req
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let answer = sender
        .lock()
        .await
        .send_request(upstream_req)
        .await
        .map_err(|e| e.to_string())?;
    let (answer_parts, answer_body) = answer.into_parts();
    let answer_body = answer_body
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if let Some(audit) = audit {
        let record = ResponseRecord {
            body_bytes: answer_body.len(),
            body_json: true,
            code: 0,
            family: "account-costs",
            http_status: answer_parts.status.as_u16(),
            message: "SUCCEED",
            operation: "account",
            outcome: "success",
            request_id: &request_id,
            request_seq,
            route,
            upstream_ms: started.elapsed().as_secs_f64() * 1e3,
            upstream_request_id: answer_parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
        };
        audit.append("gateway.response", &record).await?;
    }
    Ok(Response::from_parts(answer_parts, Full::new(answer_body)))
}
