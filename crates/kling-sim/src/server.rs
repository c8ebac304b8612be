//! Serving the simulator: the accept loop, the fault layer that can delay a request or drop
//! its connection, and the handles tests and the CLI hold.
//!
//! Connections are served with hyper directly rather than `axum::serve`, because dropping a
//! connection without an answer (a fault a client must survive) needs the service to fail,
//! which `axum::serve` does not allow.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::config::{CredentialSource, KeyPair, SimConfig};
use crate::error::SimError;
use crate::families::PackType;
use crate::faults::DropPoint;
use crate::state::{lock, Shared};
use crate::stats::SimStats;
use crate::{billing, routes};

/// A view of a simulator instance for tests: counters, tasks, packs.
#[derive(Debug, Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl SimHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        lock(&self.shared.stats).clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &SimConfig {
        &self.shared.cfg
    }

    /// The current task object (as a query would return it), by Kling task id.
    pub fn task(&self, task_id: &str) -> Option<Value> {
        lock(&self.shared.store).snapshot(task_id)
    }

    /// Concurrency slots held by unfinished tasks of a pack type, over all pools.
    pub fn slots_in_use(&self, pack: PackType) -> u32 {
        lock(&self.shared.store).slots_in_use(pack)
    }

    /// Units left over all packs of a type.
    pub fn remaining_units(&self, pack: PackType) -> f64 {
        billing::remaining_of(&lock(&self.shared.store).packs, pack).as_f64()
    }
}

/// Builds the router and its handle without serving it. Requests through this router are
/// numbered for fault decisions, but connection drops cannot be injected (use [`serve`]).
///
/// # Errors
/// [`SimError::InvalidConfig`] (and kin) when the configuration is unusable.
pub fn router(cfg: SimConfig) -> Result<(Router, SimHandle), SimError> {
    let shared = Shared::new(cfg)?;
    Ok((routes::router(Arc::clone(&shared)), SimHandle { shared }))
}

/// Serves the simulator on `listener` until the task is dropped.
///
/// # Errors
/// [`SimError::InvalidConfig`] (and kin) when the configuration is unusable.
pub async fn serve(listener: TcpListener, cfg: SimConfig) -> Result<(), SimError> {
    let shared = Shared::new(cfg)?;
    let stop = shared.shutdown_signal();
    accept_loop(listener, shared, stop).await;
    Ok(())
}

/// A simulator serving in the background.
#[derive(Debug)]
pub struct RunningSim {
    addr: SocketAddr,
    handle: SimHandle,
    server: Option<JoinHandle<()>>,
}

impl RunningSim {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the base URL to give a client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn handle(&self) -> &SimHandle {
        &self.handle
    }

    /// Shorthand for `handle().stats()`.
    pub fn stats(&self) -> SimStats {
        self.handle.stats()
    }

    /// Stops accepting and stops task lifecycles and callbacks; idle connections are closed at
    /// once, and requests in progress are answered first (for at most [`SHUTDOWN_GRACE`]).
    ///
    /// # Errors
    /// [`SimError::ServerTask`] when the server task had panicked.
    pub async fn shutdown(mut self) -> Result<(), SimError> {
        self.handle.shared.begin_shutdown();
        match self.server.take() {
            Some(server) => server.await.map_err(SimError::ServerTask),
            None => Ok(()),
        }
    }

    /// Serves until `signal` completes (for the CLI: Ctrl-C), then shuts down.
    ///
    /// # Errors
    /// As [`RunningSim::shutdown`].
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), SimError> {
        signal.await;
        self.shutdown().await
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        // A test that forgets to shut down must not leave a server behind.
        self.handle.shared.begin_shutdown();
    }
}

/// Binds `addr` and serves in the background.
///
/// # Errors
/// [`SimError::Bind`] when the address cannot be bound, or a configuration error.
pub async fn start(addr: SocketAddr, cfg: SimConfig) -> Result<RunningSim, SimError> {
    let shared = Shared::new(cfg)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(SimError::LocalAddr)?;
    let stop = shared.shutdown_signal();
    let server = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop));
    tracing::debug!(target: "kling_sim::server", addr = %bound, "simulator listening");
    Ok(RunningSim {
        addr: bound,
        handle: SimHandle { shared },
        server: Some(server),
    })
}

/// Binds `127.0.0.1:0` and serves in the background: the usual start for tests and the demo.
///
/// # Errors
/// As [`start`].
pub async fn spawn(cfg: SimConfig) -> Result<RunningSim, SimError> {
    start(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
}

/// Everything `kling-audit sim` does except printing: loads the config file (or defaults),
/// fills in credentials when the config names none (`env_pair`, for the CLI the pair from
/// `KLING_ACCESS_KEY`/`KLING_SECRET_KEY`, else the documented test pair), binds and serves.
///
/// # Errors
/// Config read/parse/validation errors, or [`SimError::Bind`].
pub async fn launch(
    listen: SocketAddr,
    config_file: Option<&Path>,
    env_pair: Option<KeyPair>,
) -> Result<(RunningSim, CredentialSource), SimError> {
    let mut cfg = match config_file {
        Some(path) => SimConfig::from_file(path)?,
        None => SimConfig::default(),
    };
    let source = cfg.ensure_credentials(env_pair);
    Ok((start(listen, cfg).await?, source))
}

/// Closed in place of an answer when fault injection drops a connection.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by fault injection")]
struct DroppedByFault;

/// Numbers each request, applies delay and drop faults, and passes the rest to the router.
#[derive(Clone)]
struct FaultLayer {
    shared: Arc<Shared>,
    router: Router,
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response, DroppedByFault>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for FaultLayer {
    type Response = Response;
    type Error = DroppedByFault;
    type Future = ServiceFuture;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let router = self.router.clone();
        Box::pin(async move {
            let fault = shared.admit_request();
            if fault.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
            }
            if fault.drop == Some(DropPoint::BeforeHandling) {
                return Err(DroppedByFault);
            }
            let mut req: Request = req.map(Body::new);
            req.extensions_mut().insert(fault);
            let response = match router.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if fault.drop == Some(DropPoint::AfterHandling) {
                return Err(DroppedByFault);
            }
            Ok(response)
        })
    }
}

/// How long open connections may take, once shutdown starts, to finish the requests they are
/// serving (a delay fault can hold one for a while); the rest are then cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

async fn serve_connection(stream: TcpStream, service: FaultLayer, mut stop: watch::Receiver<bool>) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = crate::state::stopped(&mut stop) => {
            // Ends the connection once the request in progress is answered; an idle
            // keep-alive connection at once.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::trace!(target: "kling_sim::server", error = %e, "connection ended with an error");
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let service = FaultLayer {
        router: routes::router(Arc::clone(&shared)),
        shared,
    };
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = crate::state::stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, service.clone(), stop.clone()));
                }
                Err(e) => {
                    // Usually descriptor exhaustion; pausing lets connections close.
                    tracing::warn!(target: "kling_sim::server", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    // Each connection has seen the signal: idle ones close, busy ones after their answer.
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(target: "kling_sim::server", connections = connections.len(), "shutdown grace period over; cutting the connections still open");
    }
    connections.abort_all();
}
