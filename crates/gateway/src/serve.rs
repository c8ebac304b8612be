//! The connection loop: accepts callers' connections under the gateway's limits and drains
//! them, for a bounded time, at shutdown.
//!
//! Written on hyper rather than with `axum::serve` because the gateway needs three things
//! that does not offer: a time limit on reading request headers (which also closes idle
//! keep-alive connections), a cap on open connections, and a shutdown that stops waiting for
//! connections after the grace period. Without them, clients holding half-sent requests can
//! use up the process's file descriptors, and with them the audit ledger's, or keep the
//! gateway from ever shutting down and sealing its ledger.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Semaphore};
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

/// The threads that serve callers' connections, each running a single-threaded runtime.
///
/// A connection is handed to one thread when accepted and stays there: its calls, the
/// upstream connections they use (each thread has its own pool) and their timers. Only the
/// ledger's acknowledgements cross threads. One multi-threaded runtime instead moved tasks
/// between its workers and woke idle workers to steal them; on two shared cores it served
/// about a tenth fewer calls per second, at a tenth more CPU per call (docs/performance.md).
pub(crate) struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` serving threads (at least one).
    pub(crate) fn start(count: usize) -> std::io::Result<Workers> {
        let mut workers = Workers {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            let thread = std::thread::Builder::new()
                .name(format!("gateway-serve-{index}"))
                .spawn(move || {
                    crate::upstream::use_pool(index);
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Whatever is left was cut by the drain; blocking tasks are not awaited.
                    runtime.shutdown_background();
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Stops the threads (their remaining tasks are dropped) and waits for them to end.
    pub(crate) async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// for at most `limits.grace`. Connections are spread over `workers` in turn.
pub(crate) async fn serve(
    listener: TcpListener,
    app: App,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    workers: &Workers,
) -> Served {
    let mut turn = 0usize;
    let mut shutdown = std::pin::pin!(shutdown);
    // HTTP/1.1 only: Kling's clients speak it, and a connection that must first be sniffed for
    // HTTP/2 has no time limit until it has sent enough bytes to tell.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let stop = Arc::new(Stop::default());
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
        // Taken off this thread's reactor, to be registered with the serving thread's.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let app = app.clone();
        let calls = Arc::new(Calls::default());
        let service = hyper::service::service_fn({
            let calls = Arc::clone(&calls);
            move |request: http::Request<Incoming>| {
                let call = InCall::start(&calls);
                // Boxed: the call's future is several kilobytes, which hyper would otherwise
                // copy each time it moves the future into place.
                let response = Box::pin(app.clone().call(request.map(axum::body::Body::new), peer));
                async move {
                    let response = response.await;
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| Answer { body, _call: call }),
                    )
                }
            }
        });
        let builder = builder.clone();
        let stop = Arc::clone(&stop);
        let cut_idle = Arc::clone(&cut_idle);
        let task = async move {
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                return;
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let mut watch = StopWatch::new(&stop);
            let ended = std::future::poll_fn(|cx| match connection.as_mut().poll(cx) {
                Poll::Ready(ended) => Poll::Ready(Some(ended)),
                Poll::Pending if watch.stopping(cx) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            let ended = match ended {
                Some(ended) => Some(ended),
                None => {
                    // Shutdown: hyper ends the connection after the call in progress.
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        ended = connection.as_mut() => Some(ended),
                        () = idle_at_shutdown(&calls) => None,
                    }
                }
            };
            match ended {
                Some(Err(e)) => {
                    tracing::debug!(target: "kling_audit_gateway", error = %e, "connection ended with an error");
                }
                Some(Ok(())) => {}
                None => {
                    cut_idle.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(slot);
        };
        turn = turn.wrapping_add(1);
        connections.spawn_on(task, &workers.handles[turn % workers.handles.len()]);
    }
    drop(listener);
    stop.raise();
    let drain_started = Instant::now();
    let drained = tokio::time::timeout(limits.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    let mut served = Served::default();
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

/// The shutdown signal as connections see it: a flag read on every poll, and the wakers of
/// the connections to wake once it is raised.
///
/// Written by hand because hyper-util's `GracefulShutdown` and a `watch` receiver each
/// register the task's waker anew on every poll of every connection, which cost a measurable
/// share of the gateway's time per call; this registers a connection's waker once.
#[derive(Default)]
struct Stop {
    raised: AtomicBool,
    next_key: AtomicU64,
    wakers: Mutex<HashMap<u64, Waker>>,
}

impl Stop {
    /// Raises the flag and wakes every connection registered so far; later ones see the flag.
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in wakers.into_values() {
            waker.wake();
        }
    }
}

/// One connection's registration with [`Stop`], removed when dropped.
struct StopWatch<'a> {
    stop: &'a Stop,
    key: u64,
    registered: Option<Waker>,
}

impl<'a> StopWatch<'a> {
    fn new(stop: &'a Stop) -> Self {
        Self {
            stop,
            key: stop.next_key.fetch_add(1, Ordering::Relaxed),
            registered: None,
        }
    }

    /// Whether shutdown has started; if not, the task of `cx` is woken when it does.
    fn stopping(&mut self, cx: &Context<'_>) -> bool {
        if self.stop.raised.load(Ordering::Acquire) {
            return true;
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return false;
        }
        let waker = cx.waker().clone();
        self.stop
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.key, waker.clone());
        self.registered = Some(waker);
        // A raise between the first check and the insert took the map before this waker was
        // in it; the flag it set first is visible now.
        self.stop.raised.load(Ordering::Acquire)
    }
}

impl Drop for StopWatch<'_> {
    fn drop(&mut self) {
        if self.registered.is_some() {
            self.stop
                .wakers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.key);
        }
    }
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

/// Resolves once the connection has had no call in progress, and none started, for
/// [`IDLE_AT_SHUTDOWN`]; awaited once shutdown has started. hyper closes a connection idle between requests
/// by itself; this closes one that is part-way through a request's headers.
async fn idle_at_shutdown(calls: &Calls) {
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
