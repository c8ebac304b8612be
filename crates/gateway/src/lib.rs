//! The kling-audit gateway: an auditing reverse proxy between an organisation's apps and the
//! Kling API. Apps change only their base URL.
//!
//! Every request is attributed to an actor (gateway-issued Kling-style keys, or in pass-through
//! mode the fingerprint of the caller's own key), recorded durably in the audit ledger
//! *before* it is forwarded, re-signed upstream with the organisation's key, and its answer is
//! recorded before it goes back. Tasks are bound to the actor that created them; status
//! changes, callbacks and relays are recorded too. See `docs/gateway.md` and `docs/events.md`.
//!
//! - [`config`]: the TOML/env configuration and its checks.
//! - [`actors`]: the actor store (`kling-audit actors add|list|disable`).
//! - [`run`] / [`spawn`]: serve until a shutdown future resolves, then drain and seal.

pub mod actors;
pub mod audit;
mod body;
pub mod callbacks;
pub mod config;
mod flood;
pub mod inspect;
pub mod metrics;
pub mod proxy;
mod records;
mod serve;
pub mod state;
pub mod tasks;
mod upstream;
pub mod verified;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use kling_api::auth::{TokenCache, TokenPolicy};
use kling_audit_ledger::{Ledger, LedgerOptions};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub use config::GatewayConfig;

use crate::audit::{Auditor, GATEWAY_ACTOR};
use crate::metrics::Metrics;
use crate::state::{Actors, AppState, RelayTracker};
use crate::tasks::TaskBook;

/// Why the gateway could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    /// The ledger could not be opened.
    #[error("cannot open the audit ledger: {0}")]
    Ledger(#[from] kling_audit_ledger::OpenError),
    /// The actor store could not be loaded.
    #[error("cannot load the actor store: {0}")]
    Actors(#[from] actors::ActorError),
    /// The task book could not be rebuilt from the ledger.
    #[error("cannot rebuild task ownership from the ledger: {0}")]
    Tasks(#[from] tasks::RebuildError),
    /// The listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The organisation's key cannot sign tokens.
    #[error("the organisation's Kling key cannot sign tokens: {0}")]
    OrgKey(#[from] kling_api::auth::AuthError),
    /// An HTTP client could not be built.
    #[error("cannot build the {which} HTTP client: {source}")]
    Client {
        /// Which client.
        which: &'static str,
        /// The builder error.
        source: reqwest::Error,
    },
    /// The serving threads could not be started.
    #[error("cannot start the serving threads: {0}")]
    Threads(std::io::Error),
    /// A blocking start-up task failed to run.
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What a stopped gateway reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Requests handled on the API surface.
    pub requests_served: u64,
    /// Seq of the `gateway.shutdown` record, when it was written.
    pub shutdown_seq: Option<u64>,
    /// Durable records at close.
    pub ledger_size: u64,
    /// Whether the ledger was sealed cleanly.
    pub sealed: bool,
    /// Relays still running when the grace period ended.
    pub relays_abandoned: usize,
}

/// A gateway started with [`spawn`].
#[derive(Debug)]
pub struct RunningGateway {
    /// The bound address.
    pub addr: SocketAddr,
    /// The serving task.
    pub handle: tokio::task::JoinHandle<Result<ShutdownReport, GatewayError>>,
    stop: Option<oneshot::Sender<()>>,
}

impl RunningGateway {
    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts a graceful shutdown and waits for it.
    ///
    /// # Errors
    /// As [`run`]; a panicked serving task is reported as [`GatewayError::Join`].
    pub async fn shutdown(mut self) -> Result<ShutdownReport, GatewayError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.await?
    }
}

/// Binds `cfg.listen` and runs the gateway in a task until [`RunningGateway::shutdown`].
/// Must be called inside a Tokio runtime.
///
/// # Errors
/// [`GatewayError::Listen`] when the address cannot be bound.
pub fn spawn(cfg: GatewayConfig) -> Result<RunningGateway, GatewayError> {
    let listener = bind(cfg.listen)?;
    let addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Listen {
            addr: cfg.listen.to_string(),
            source,
        })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(run(cfg, listener, async move {
        let _ = stopped.await;
    }));
    Ok(RunningGateway {
        addr,
        handle,
        stop: Some(stop),
    })
}

/// Binds a listening socket (port 0 picks a free port). Must be called inside a Tokio runtime.
///
/// # Errors
/// [`GatewayError::Listen`].
pub fn bind(addr: SocketAddr) -> Result<TcpListener, GatewayError> {
    let err = |source| GatewayError::Listen {
        addr: addr.to_string(),
        source,
    };
    let std_listener = std::net::TcpListener::bind(addr).map_err(err)?;
    std_listener.set_nonblocking(true).map_err(err)?;
    TcpListener::from_std(std_listener).map_err(err)
}

fn ledger_options(cfg: &GatewayConfig) -> LedgerOptions {
    let mut opts = LedgerOptions::new(&cfg.audit.dir);
    opts.keys_dir = cfg.audit.keys_dir.clone();
    opts.durability = cfg.audit.durability;
    // A call that writes inline holds its serving thread for a sync; with a single serving
    // thread that would stall every other call, health probes included, for as long as the
    // disk takes.
    opts.inline_appends = cfg.audit.inline_appends && cfg.server.worker_threads() >= 2;
    if let Some(max) = cfg.audit.max_segment_bytes {
        opts.max_segment_bytes = max;
    }
    opts
}

/// Serves the gateway on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish, waits (bounded) for callback relays, writes `gateway.shutdown`
/// and seals the ledger.
///
/// # Errors
/// Start-up failures (configuration, ledger, actor store, clients) and serving errors.
pub async fn run(
    cfg: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ShutdownReport, GatewayError> {
    run_with_ready(cfg, listener, shutdown, |_| {}).await
}

/// [`run`], calling `ready` with the bound address once the ledger is open and the gateway is
/// about to serve, so that a caller announces the address only when requests will be audited.
///
/// # Errors
/// As [`run`].
pub async fn run_with_ready(
    cfg: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr) + Send,
) -> Result<ShutdownReport, GatewayError> {
    cfg.validate()?;
    let started = Instant::now();
    let local = listener
        .local_addr()
        .map_err(|source| GatewayError::Listen {
            addr: cfg.listen.to_string(),
            source,
        })?;
    let mut options = ledger_options(&cfg);
    // Checkpoints go to the configured witnesses; the handle lives as long as the gateway.
    let _witnesses = if cfg.audit.witnesses.is_empty() {
        None
    } else {
        let targets = cfg
            .audit
            .witnesses
            .iter()
            .filter_map(|spec| kling_audit_witness::pusher::WitnessTarget::parse(spec).ok())
            .collect();
        let (hook, handle) = kling_audit_witness::pusher::start(
            cfg.audit.dir.clone(),
            targets,
            tokio::runtime::Handle::current(),
        );
        options.on_checkpoint = Some(hook);
        Some(handle)
    };
    let open_options = options.clone();
    // Opening may append a recovery record with blocking calls, so it runs off the runtime.
    let (ledger, report) =
        tokio::task::spawn_blocking(move || Ledger::open(open_options)).await??;
    audit::log_open_report(&report);
    let dir = cfg.audit.dir.clone();
    let (tasks, rebuilt) = tokio::task::spawn_blocking(move || TaskBook::rebuild(&dir)).await??;
    let actors = Actors::load(cfg.auth.actors_file.clone())?;
    let metrics = Arc::new(Metrics::default());
    let auditor = Arc::new(Auditor::new(
        ledger,
        options,
        cfg.audit.on_failure,
        Arc::clone(&metrics),
        cfg.audit.reopen_interval,
    ));
    let serving_threads = cfg.server.worker_threads();
    let upstream = upstream::Upstream::new(
        cfg.upstream.url.as_str(),
        cfg.upstream.timeout,
        cfg.upstream.connect_timeout,
        serving_threads,
    );
    let relay = reqwest::Client::builder()
        .timeout(cfg.callbacks.relay_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|source| GatewayError::Client {
            which: "callback relay",
            source,
        })?;
    let org_tokens = match &cfg.upstream.credentials {
        Some(c) => Some(TokenCache::new(
            c.access_key.clone(),
            c.secret_key.clone(),
            TokenPolicy::default(),
        )?),
        None => None,
    };
    let public = match &cfg.callbacks.public_url {
        Some(url) => url.as_str().trim_end_matches('/').to_owned(),
        None => {
            let host = if local.ip().is_unspecified() {
                tracing::warn!(target: "kling_audit_gateway", "callbacks.public_url is not set and the gateway listens on all addresses; callbacks will name 127.0.0.1");
                SocketAddr::new([127, 0, 0, 1].into(), local.port())
            } else {
                local
            };
            format!("http://{host}")
        }
    };
    for warning in cfg.warnings() {
        tracing::warn!(target: "kling_audit_gateway", "{warning}");
    }
    let actor_count = actors.index().len();
    if actor_count == 0 && cfg.auth.mode == config::AuthMode::Actors {
        tracing::warn!(
            target: "kling_audit_gateway",
            actors_file = %cfg.auth.actors_file.display(),
            "no actors: every call will be refused (Kling code 1002) until one is added with \
             `kling-audit actors add NAME`"
        );
    }
    let cfg_buffered = cfg.server.buffered_bytes();
    let cfg_max_values = cfg.server.max_body_values;
    let state = Arc::new(AppState {
        callback_base: format!("{public}{}", callbacks::CALLBACK_PATH),
        cfg,
        auditor: Arc::clone(&auditor),
        actors,
        tasks,
        metrics,
        upstream,
        relay,
        org_tokens,
        org_bearer: state::OrgBearer::default(),
        relays: Arc::new(RelayTracker::default()),
        started,
        served: AtomicU64::new(0),
        verified: verified::VerifiedTokens::default(),
        bodies: body::BodyBudget::new(cfg_buffered).with_max_values(cfg_max_values),
        denials: flood::DenialBudget::default(),
    });

    let start_details = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "listen": local.to_string(),
        "upstream_host": state.cfg.upstream.url.host_str(),
        "auth_mode": match state.cfg.auth.mode {
            config::AuthMode::Actors => "actors",
            config::AuthMode::Passthrough => "passthrough",
        },
        "on_failure": match state.cfg.audit.on_failure {
            config::FailureMode::FailClosed => "fail-closed",
            config::FailureMode::FailOpen => "fail-open",
        },
        "actors": actor_count,
        "ledger_records_at_open": report.records,
        "torn_tail_recovered": report.torn_tail.is_some(),
        "tasks_rebuilt": rebuilt.tasks,
        "records_scanned": rebuilt.records,
        "pid": std::process::id(),
    });
    if let Err(e) = auditor
        .append("gateway.start", GATEWAY_ACTOR, &start_details)
        .await
    {
        // Serving still starts: requests are then refused (fail-closed) or counted
        // (fail-open) exactly as for any later ledger failure, and /readyz says why.
        tracing::error!(target: "kling_audit_gateway", error = %e, "gateway.start not recorded");
    }
    tracing::info!(target: "kling_audit_gateway", addr = %local, actors = actor_count, tasks = rebuilt.tasks, "gateway serving");

    let refresher = {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let s = Arc::clone(&state);
                // Reading the store is file I/O; keep it off the request threads.
                let _ = tokio::task::spawn_blocking(move || s.actors.refresh()).await;
            }
        })
    };

    // Stopped by a signal rather than aborted, so that counts it has taken are written.
    let (stop_summaries, summaries_stopped) = oneshot::channel::<()>();
    let summaries = {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let mut stopped = summaries_stopped;
            let mut tick = tokio::time::interval(flood::SUMMARY_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                write_denial_summaries(&state).await;
            }
        })
    };

    let app = App {
        router: router(Arc::clone(&state)),
        state: Arc::clone(&state),
    };
    ready(local);
    let grace = state.cfg.server.shutdown_grace;
    let limits = serve::Limits {
        header_timeout: state.cfg.server.header_timeout,
        max_connections: state.cfg.server.connection_cap(),
        grace,
    };
    let workers = serve::Workers::start(serving_threads).map_err(GatewayError::Threads)?;
    let served = serve::serve(listener, app, limits, shutdown, &workers).await;
    refresher.abort();

    // Requests are done (or cut at the end of the grace period); give relays, which run on
    // the serving threads, what is left.
    let left = grace.saturating_sub(served.drain);
    let _ = tokio::time::timeout(left, state.relays.wait_idle()).await;
    // Counted before the threads stop: stopping drops the relays still running.
    let relays_abandoned = state.relays.running();
    workers.stop().await;
    let _ = stop_summaries.send(());
    let _ = summaries.await;
    write_denial_summaries(&state).await;
    let requests_served = state.served.load(Ordering::Relaxed);
    let shutdown_details = json!({
        "requests_served": requests_served,
        "uptime_ms": started.elapsed().as_millis() as u64,
        "relays_abandoned": relays_abandoned,
        "unaudited_pending": auditor.pending_unaudited(),
        "connections_cut": served.connections_cut,
    });
    let shutdown_seq = auditor
        .append("gateway.shutdown", GATEWAY_ACTOR, &shutdown_details)
        .await
        .ok()
        .map(|r| r.seq);
    let closed = auditor.close().await;
    let (sealed, ledger_size) = match &closed {
        Ok(head) => (true, head.size),
        Err(e) => {
            tracing::error!(target: "kling_audit_gateway", error = %e, "ledger not sealed cleanly");
            (false, auditor.head().size)
        }
    };
    tracing::info!(target: "kling_audit_gateway", requests_served, sealed, "gateway stopped");
    Ok(ShutdownReport {
        requests_served,
        shutdown_seq,
        ledger_size,
        sealed,
        relays_abandoned,
    })
}

/// Writes a `gateway.denied_summary` record for each source whose refusals were counted
/// rather than recorded one by one since the last call.
async fn write_denial_summaries(state: &AppState) {
    for summary in state.denials.take_summaries() {
        if let Err(e) = state
            .auditor
            .append(
                "gateway.denied_summary",
                actors::UNAUTHENTICATED_ACTOR,
                &summary,
            )
            .await
        {
            tracing::error!(target: "kling_audit_gateway", error = %e, "gateway.denied_summary not recorded");
        }
    }
}

/// Serves each request: the gateway's own routes through the router, and every other path
/// (the Kling API) straight to the proxy. The router would reach the proxy too, as its
/// fallback, but only after matching the path, boxing the request into its extension map and
/// running its extractors: work on every API call for nothing.
#[derive(Clone)]
pub(crate) struct App {
    router: Router,
    state: Arc<AppState>,
}

impl App {
    pub(crate) async fn call(
        self,
        mut request: http::Request<axum::body::Body>,
        peer: SocketAddr,
    ) -> Response {
        if owned_by_gateway(request.uri().path()) {
            use tower::ServiceExt;
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            match self.router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        } else {
            proxy::handle(State(self.state), axum::extract::ConnectInfo(peer), request).await
        }
    }
}

/// Paths the router may answer itself; everything else is the proxy's, as the router's
/// fallback too.
fn owned_by_gateway(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics") || path.starts_with("/_gateway/")
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .route(
            "/_gateway/callback/{token}",
            post(callbacks::handle).fallback(callbacks::method_not_allowed),
        )
        .fallback(proxy::handle)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let head = state.auditor.head();
    match (&head.poisoned, state.auditor.writable()) {
        (None, true) => (
            StatusCode::OK,
            axum::Json(json!({ "ready": true, "ledger_records": head.size })),
        )
            .into_response(),
        (cause, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "ready": false,
                "reason": "audit ledger not writable",
                "detail": cause.as_deref().unwrap_or("closed"),
            })),
        )
            .into_response(),
    }
}

async fn metrics_handler(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.cfg.admin_token {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| kling_api::auth::bearer_token(Some(v)).ok())
            .unwrap_or("");
        let expected = token.expose();
        let same = presented.len() == expected.len()
            && presented
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return (StatusCode::UNAUTHORIZED, "admin token required\n").into_response();
        }
    }
    let ledger = state.auditor.ledger();
    let head = ledger.head();
    let text = state.metrics.render(&metrics::Gauges {
        queue_depth: ledger.queue_depth(),
        ledger_size: head.size,
        ledger_ok: state.auditor.writable(),
        body_bytes_held: state.bodies.held(),
    });
    (
        StatusCode::OK,
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GatewayConfig {
        GatewayConfig::new(
            "ledger",
            "http://127.0.0.1:9".parse().expect("a URL"),
            "ak",
            kling_api::secret::SecretString::new("sk"),
        )
    }

    #[test]
    fn records_are_never_written_inline_when_one_thread_serves_http() {
        let serving = |threads| {
            let mut cfg = config();
            cfg.server.worker_threads = Some(threads);
            cfg
        };
        assert!(!ledger_options(&serving(1)).inline_appends);
        assert!(ledger_options(&serving(2)).inline_appends);
        let mut off = serving(2);
        off.audit.inline_appends = false;
        assert!(!ledger_options(&off).inline_appends);
    }
}
