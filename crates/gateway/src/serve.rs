//! The connection loop: accepts callers' connections under the gateway's limits and drains
//! them, for a bounded time, at shutdown.
//!
//! Written on hyper rather than with `axum::serve` because the gateway needs three things
//! that does not offer: a time limit on reading request headers (which also closes idle
//! keep-alive connections), a cap on open connections, and a shutdown that stops waiting for
//! connections after the grace period. Without them, clients holding half-sent requests can
//! use up the process's file descriptors, and with them the audit ledger's, or keep the
//! gateway from ever shutting down and sealing its ledger.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::App;

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest wait for a request's headers, and for the next request on an idle connection.
    pub header_timeout: Duration,
    /// Connections open at once; further callers wait in the listen backlog.
    pub max_connections: usize,
    /// Longest wait for open connections once shutdown starts.
    pub grace: Duration,
}

/// How the loop ended.
#[derive(Debug, Default)]
pub(crate) struct Served {
    /// Connections still open when the grace period ran out, then closed.
    pub connections_cut: usize,
    /// Time from the shutdown signal to the last connection's end.
    pub drain: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// for at most `limits.grace`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: App,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Served {
    let mut shutdown = std::pin::pin!(shutdown);
    // HTTP/1.1 only: Kling's clients speak it, and a connection that must first be sniffed for
    // HTTP/2 has no time limit until it has sent enough bytes to tell.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut last_full_warning: Option<Instant> = None;
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        while connections.try_join_next().is_some() {}
        if slots.available_permits() == 0 && due(&mut last_full_warning) {
            tracing::warn!(target: "kling_audit_gateway", max = limits.max_connections, "connection limit reached (server.max_connections); new callers wait");
        }
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                if due(&mut last_accept_warning) {
                    tracing::warn!(target: "kling_audit_gateway", error = %e, "cannot accept a connection");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Answers are written whole; waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let response = app.clone().call(request.map(axum::body::Body::new), peer);
            async move { Ok::<_, std::convert::Infallible>(response.await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(target: "kling_audit_gateway", error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    let drain_started = Instant::now();
    let drained = tokio::time::timeout(limits.grace, graceful.shutdown()).await;
    let mut served = Served::default();
    while connections.try_join_next().is_some() {}
    if drained.is_err() {
        served.connections_cut = connections.len();
        tracing::warn!(target: "kling_audit_gateway", connections = served.connections_cut, "grace period over; closing the connections still open");
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
    served.drain = drain_started.elapsed();
    served
}

/// True at most once a second, so a flood of one condition logs one line a second.
fn due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
        return false;
    }
    *last = Some(now);
    true
}
