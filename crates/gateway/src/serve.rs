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
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
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

/// How long a connection must stay without a call in progress, once shutdown has started,
/// before it is closed: time for an answer hyper holds to reach the caller. A connection
/// still receiving a request's headers would otherwise hold shutdown for the header timeout.
const IDLE_AT_SHUTDOWN: Duration = Duration::from_secs(1);

/// How the loop ended.
#[derive(Debug, Default)]
pub(crate) struct Served {
    /// Connections closed at shutdown without a call in progress (part-way through a request's
    /// headers, most likely), or still open when the grace period ran out.
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
    let (stopping, stop_seen) = watch::channel(false);
    let cut_idle = Arc::new(AtomicUsize::new(0));
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
        let calls = Arc::new(Calls::default());
        let service = hyper::service::service_fn({
            let calls = Arc::clone(&calls);
            move |request: http::Request<Incoming>| {
                let call = InCall::start(&calls);
                let response = app.clone().call(request.map(axum::body::Body::new), peer);
                async move {
                    let response = response.await;
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| Answer { body, _call: call }),
                    )
                }
            }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let mut stop_seen = stop_seen.clone();
        let cut_idle = Arc::clone(&cut_idle);
        connections.spawn(async move {
            tokio::select! {
                ended = connection => {
                    if let Err(e) = ended {
                        tracing::debug!(target: "kling_audit_gateway", error = %e, "connection ended with an error");
                    }
                }
                () = idle_at_shutdown(&mut stop_seen, &calls) => {
                    cut_idle.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
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
    served.connections_cut += cut_idle.load(Ordering::Relaxed);
    served.drain = drain_started.elapsed();
    served
}

/// Calls of one connection: started, and finished (answer handed over whole to hyper).
#[derive(Default)]
struct Calls {
    started: AtomicU64,
    finished: AtomicU64,
}

/// One call in progress, from the request reaching the service until hyper has taken the
/// whole answer.
struct InCall(Arc<Calls>);

impl InCall {
    fn start(calls: &Arc<Calls>) -> InCall {
        calls.started.fetch_add(1, Ordering::AcqRel);
        InCall(Arc::clone(calls))
    }
}

impl Drop for InCall {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
    }
}

/// An answer's body, which ends its call when hyper drops it.
struct Answer {
    body: axum::body::Body,
    _call: InCall,
}

impl hyper::body::Body for Answer {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Resolves once shutdown has started and the connection has had no call in progress, and
/// none started, for [`IDLE_AT_SHUTDOWN`]. hyper closes a connection idle between requests
/// by itself; this closes one that is part-way through a request's headers.
async fn idle_at_shutdown(stop_seen: &mut watch::Receiver<bool>, calls: &Calls) {
    if stop_seen.wait_for(|stopping| *stopping).await.is_err() {
        return std::future::pending().await;
    }
    loop {
        let started = calls.started.load(Ordering::Acquire);
        let idle = calls.finished.load(Ordering::Acquire) == started;
        tokio::time::sleep(IDLE_AT_SHUTDOWN).await;
        if idle && calls.started.load(Ordering::Acquire) == started {
            return;
        }
    }
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
