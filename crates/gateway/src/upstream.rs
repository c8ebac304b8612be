//! The connection pool to the Kling API.
//!
//! Every forwarded call goes through here, so this is hyper used directly: reqwest, which the
//! gateway uses for callback relays, parses a URL and wraps the request in several layers on
//! each call, which cost about a tenth of the gateway's CPU per call at saturation. The pool is
//! our own over hyper's connection-level HTTP/1 client rather than hyper-util's pooled client,
//! whose per-call work (hashing the pool key, checkout futures, request extensions, formatting
//! the Host header, parsing an absolute URI) cost a few percent more for one fixed upstream.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt;

/// Why no usable answer came from the Kling API.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// No answer within the upstream timeout.
    Timeout,
    /// No connection could be made; nothing was sent.
    Connect,
    /// The answer's declared or actual size is over the limit.
    TooLarge,
    /// The request was sent but the exchange broke; the detail names the stage, never the URL.
    Broken(&'static str),
}

/// An upstream answer, read whole.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connector whose whole connect, TCP and TLS handshake, must finish within `limit`.
/// `HttpConnector`'s own timeout covers only TCP, so a peer that accepts but never completes
/// the handshake would otherwise hold the call for the whole upstream timeout.
#[derive(Clone)]
struct ConnectWithin<C> {
    inner: C,
    limit: Duration,
}

impl<C> tower::Service<Uri> for ConnectWithin<C>
where
    C: tower::Service<Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
            }
        })
    }
}

/// How long an idle pooled connection is kept. A connection the far side closes just as a
/// call reuses it, after the request was written, fails that call unless it is a query (see
/// `Upstream::send`), and a create is not retried since it may have been processed; load
/// balancers commonly close idle connections after 60 s, so the gateway lets go of them first.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often, as a fraction of the idle limit, the pool is swept of connections idle past it,
/// so a connection is closed at most this fraction of the limit late even when no call comes.
const SWEEPS_PER_IDLE_LIMIT: u32 = 4;

/// At most this many idle connections are kept; beyond it the longest idle is closed, so the
/// sockets a burst opened do not all stay open until they idle out.
const MAX_IDLE: usize = 256;

type Sender = SendRequest<Full<Bytes>>;

/// A connection: hyper's handle to send on it, and whether any answer byte has been read on it
/// since the flag was last cleared, which hyper's errors do not tell (an answer cut off in its
/// head is reported as one that never started).
struct Conn {
    sender: Sender,
    answered: Arc<AtomicBool>,
}

/// The connection's byte stream (TLS already undone), noting in `answered` each read that
/// brought bytes.
struct NoteReads<T> {
    io: T,
    answered: Arc<AtomicBool>,
}

impl<T: AsyncRead + Unpin> AsyncRead for NoteReads<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.answered.store(true, Ordering::Relaxed);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for NoteReads<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Whether a request's failure is its connection closing or being reset under it, the way an
/// upstream closing an idle connection looks when the request crossed the close.
fn connection_dropped(error: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    if error.is_incomplete_message() || error.is_closed() {
        return true;
    }
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            )
        })
}

/// Where every call goes, worked out once from the configured URL.
struct Origin {
    /// `scheme://authority/`: what the connector opens.
    connect_to: Uri,
    /// The `Host` header: the host, with the port only when it is not the scheme's default.
    host: HeaderValue,
    /// The URL's path without its trailing `/`; the caller's path and query follow it.
    base_path: String,
}

impl Origin {
    fn parse(base: &str) -> Option<Origin> {
        let uri: Uri = base.parse().ok()?;
        let scheme = uri.scheme()?.clone();
        let authority = uri.authority()?.clone();
        let default_port = match scheme.as_str() {
            "https" => 443,
            _ => 80,
        };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let host = HeaderValue::try_from(host).ok()?;
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let connect_to = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .ok()?;
        Some(Origin {
            connect_to,
            host,
            base_path,
        })
    }

    /// The origin-form request target: the base path, then the caller's path and query.
    fn target(&self, path_and_query: &str) -> Option<Uri> {
        let mut target = String::with_capacity(self.base_path.len() + path_and_query.len() + 1);
        target.push_str(&self.base_path);
        target.push_str(path_and_query);
        if !target.starts_with('/') {
            target.insert(0, '/');
        }
        Uri::try_from(target).ok()
    }
}

thread_local! {
    /// The pool that calls made on this thread use; set once by each serving thread.
    static POOL: Cell<usize> = const { Cell::new(0) };
}

/// Makes calls on this thread use pool `index` (modulo the number of pools).
pub(crate) fn use_pool(index: usize) {
    POOL.with(|pool| pool.set(index));
}

/// A connection waiting in the pool, and since when.
struct Idle {
    conn: Conn,
    since: Instant,
}

/// The connection pool and the base URL every call is forwarded to.
pub(crate) struct Upstream {
    connector: ConnectWithin<HttpsConnector<HttpConnector>>,
    /// `None` when the configured URL does not parse as a URI; every call then fails as it
    /// would have at its own parse.
    origin: Option<Origin>,
    /// Idle connections, one pool per serving thread (see [`use_pool`]), the longest idle at
    /// the front; calls take from the back. A connection is used only by the thread that
    /// opened it, so its driver task runs where its calls do.
    pools: Box<[Arc<Mutex<VecDeque<Idle>>>]>,
    pool_idle: Duration,
    timeout: Duration,
}

impl Upstream {
    /// A client for `base`, with a connect timeout, a timeout on each whole exchange, and
    /// `pools` connection pools (one per serving thread). Must be called within a tokio
    /// runtime, where the pools' idle sweeps run.
    pub(crate) fn new(
        base: &str,
        timeout: Duration,
        connect_timeout: Duration,
        pools: usize,
    ) -> Upstream {
        Upstream::with_pool_idle(base, timeout, connect_timeout, POOL_IDLE_TIMEOUT, pools)
    }

    fn with_pool_idle(
        base: &str,
        timeout: Duration,
        connect_timeout: Duration,
        pool_idle: Duration,
        pools: usize,
    ) -> Upstream {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let pools: Box<[_]> = (0..pools.max(1))
            .map(|_| Arc::new(Mutex::new(VecDeque::new())))
            .collect();
        for pool in &pools {
            tokio::spawn(sweep_idle(Arc::downgrade(pool), pool_idle));
        }
        Upstream {
            connector: ConnectWithin {
                inner: https,
                limit: connect_timeout,
            },
            origin: Origin::parse(base),
            pools,
            pool_idle,
            timeout,
        }
    }

    /// Sends one request and reads its answer whole, up to `max_answer` bytes, all within the
    /// upstream timeout. If that timeout passes before the request was handed to a connection
    /// (the connect timeout may be the longer), it is a connect failure: nothing was sent.
    pub(crate) async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Bytes,
        max_answer: usize,
    ) -> Result<Answer, ExchangeError> {
        let origin = self
            .origin
            .as_ref()
            .ok_or(ExchangeError::Broken("request"))?;
        let uri = origin
            .target(path_and_query)
            .ok_or(ExchangeError::Broken("request"))?;
        if !headers.contains_key(HOST) {
            headers.insert(HOST, origin.host.clone());
        }
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let mut handed = false;
        let exchange = async {
            let (conn, response) = self
                .send(origin, path_and_query, request, &mut handed)
                .await?;
            let (parts, mut incoming) = response.into_parts();
            // hyper passes a 101 through (other 1xx are skipped); the gateway never asks for an
            // upgrade, and relaying it would hand the caller a switch to no protocol.
            if parts.status.is_informational() {
                return Err(ExchangeError::Broken("status"));
            }
            if crate::body::declared_length(&parts.headers).is_some_and(|n| n > max_answer as u64) {
                return Err(ExchangeError::TooLarge);
            }
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut len = 0usize;
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|_| ExchangeError::Broken("body"))?;
                if let Ok(chunk) = frame.into_data() {
                    len += chunk.len();
                    if len > max_answer {
                        return Err(ExchangeError::TooLarge);
                    }
                    chunks.push(chunk);
                }
            }
            // Only a connection whose answer was read to the end can carry another call; on
            // every early return above it is dropped, which closes it.
            self.check_in(conn);
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body: crate::body::join(chunks),
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) if handed => Err(ExchangeError::Timeout),
            Err(_) => Err(ExchangeError::Connect),
        }
    }

    /// Sends `request` on the most recently used live pooled connection, or on a new one.
    ///
    /// A pooled connection the upstream closed as it was taken makes hyper hand the request
    /// back unwritten; it is then sent once more, on a new connection. A request hyper does not
    /// hand back may have reached the upstream, and is sent again only if it is a GET or HEAD
    /// whose pooled connection was closed or reset before any byte of an answer came: the
    /// upstream closing an idle connection as the request crossed it. That is safe because
    /// GET and HEAD are idempotent (in the Kling API they are queries, which change nothing),
    /// and no partial answer is thrown away. It is sent at most once more, on a new
    /// connection, within the same upstream timeout; anything else is never sent twice.
    ///
    /// `handed` is set once hyper holds the request, which it may then write, and cleared only
    /// when hyper hands it back unwritten.
    async fn send(
        &self,
        origin: &Origin,
        path_and_query: &str,
        request: Request<Full<Bytes>>,
        handed: &mut bool,
    ) -> Result<(Conn, Response<Incoming>), ExchangeError> {
        let request = match self.checkout().await {
            Some(mut conn) => {
                *handed = true;
                // What a resend needs that hyper does not give back, kept for GET and HEAD only:
                // the method (no allocation for these), the headers, and the body (a reference
                // count). The target is rebuilt only if it comes to a resend.
                let resend = matches!(*request.method(), Method::GET | Method::HEAD).then(|| {
                    (
                        request.method().clone(),
                        request.headers().clone(),
                        request.body().clone(),
                    )
                });
                // The previous answer on this connection was read whole, so any byte read from
                // here on belongs to this request's answer.
                conn.answered.store(false, Ordering::Relaxed);
                match conn.sender.try_send_request(request).await {
                    Ok(response) => return Ok((conn, response)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => {
                            *handed = false;
                            tracing::debug!(
                                error = %e.into_error(),
                                "pooled upstream connection closed before the request was written; \
                                 sending it on a new connection"
                            );
                            unsent
                        }
                        None => match resend {
                            // Relaxed is enough: the channel that brought the error orders
                            // the driver's store before this load.
                            Some((method, headers, body))
                                if !conn.answered.load(Ordering::Relaxed)
                                    && connection_dropped(e.error()) =>
                            {
                                tracing::debug!(
                                    error = %e.into_error(),
                                    "pooled upstream connection closed before answering a query; \
                                     sending it once more on a new connection"
                                );
                                let uri = origin
                                    .target(path_and_query)
                                    .ok_or(ExchangeError::Broken("request"))?;
                                let mut request = Request::new(body);
                                *request.method_mut() = method;
                                *request.uri_mut() = uri;
                                *request.headers_mut() = headers;
                                request
                            }
                            _ => return Err(ExchangeError::Broken("request")),
                        },
                    },
                }
            }
            None => request,
        };
        // Once sent, a request whose second connection cannot be made failed after it may
        // have reached the upstream, not with nothing sent.
        let sent = *handed;
        let mut conn = self.connect(origin).await.map_err(|e| {
            if sent {
                ExchangeError::Broken("request")
            } else {
                e
            }
        })?;
        *handed = true;
        match conn.sender.send_request(request).await {
            Ok(response) => Ok((conn, response)),
            Err(_) => Err(ExchangeError::Broken("request")),
        }
    }

    /// The most recently used pooled connection that is still open and idle for less than the
    /// pool limit.
    async fn checkout(&self) -> Option<Conn> {
        loop {
            let mut conn = {
                let mut idle = self.pool().lock().unwrap_or_else(PoisonError::into_inner);
                let conn = idle.pop_back()?;
                if conn.since.elapsed() > self.pool_idle {
                    // Everything still pooled has been idle longer.
                    idle.clear();
                    return None;
                }
                conn.conn
            };
            // Pooled connections were ready when pooled (see `check_in`); `ready` fails if one
            // has closed since.
            if conn.sender.ready().await.is_ok() {
                return Some(conn);
            }
        }
    }

    /// Pools a connection whose answer was read whole, once hyper is ready to send another
    /// request on it, unless it has closed.
    fn check_in(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        if conn.sender.is_ready() {
            pool_idle_connection(self.pool(), self.pool_idle, conn);
            return;
        }
        // An upstream may answer before it has read the whole request body; hyper then goes
        // on writing it. Pooled now, the connection would hold the next call, unsent, in
        // `checkout` until that call's timeout, reported as possibly processed; and one whose
        // upstream never reads the rest would never be ready. So it joins the pool only once
        // ready, and is dropped if that takes longer than a connection may idle.
        let idle = Arc::clone(self.pool());
        let pool_idle = self.pool_idle;
        tokio::spawn(async move {
            let mut conn = conn;
            if let Ok(Ok(())) = tokio::time::timeout(pool_idle, conn.sender.ready()).await {
                pool_idle_connection(&idle, pool_idle, conn);
            }
        });
    }

    /// The pool of the serving thread this runs on.
    fn pool(&self) -> &Arc<Mutex<VecDeque<Idle>>> {
        &self.pools[POOL.with(Cell::get) % self.pools.len()]
    }

    /// Opens a connection (TCP, and TLS for https) and starts its HTTP/1 driver.
    async fn connect(&self, origin: &Origin) -> Result<Conn, ExchangeError> {
        let io = self
            .connector
            .clone()
            .oneshot(origin.connect_to.clone())
            .await
            .map_err(|_| ExchangeError::Connect)?;
        let answered = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(NoteReads {
            io: TokioIo::new(io),
            answered: Arc::clone(&answered),
        });
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|_| ExchangeError::Connect)?;
        tokio::spawn(async move {
            // hyper's errors name the failure (an I/O error, a malformed answer), never the
            // request.
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection failed");
            }
        });
        Ok(Conn { sender, answered })
    }
}

/// Adds a ready connection to the pool, dropping those idle too long, and the longest idle
/// when the pool is full.
fn pool_idle_connection(idle: &Mutex<VecDeque<Idle>>, pool_idle: Duration, conn: Conn) {
    let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    drop_expired(&mut idle, now, pool_idle);
    if idle.len() >= MAX_IDLE {
        idle.pop_front();
    }
    idle.push_back(Idle { conn, since: now });
}

/// Drops (and so closes) the pooled connections idle longer than `pool_idle`.
fn drop_expired(idle: &mut VecDeque<Idle>, now: Instant, pool_idle: Duration) {
    let expired = idle.partition_point(|c| now.duration_since(c.since) > pool_idle);
    idle.drain(..expired);
}

/// Closes pooled connections that idled past the limit even when no call comes to do it, so
/// the sockets a burst opened are not held open until the next call. It holds the pool only
/// weakly and ends once the `Upstream` is gone.
async fn sweep_idle(idle: Weak<Mutex<VecDeque<Idle>>>, pool_idle: Duration) {
    let period = (pool_idle / SWEEPS_PER_IDLE_LIMIT).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(idle) = idle.upgrade() else {
            return;
        };
        let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
        drop_expired(&mut idle, Instant::now(), pool_idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-shot HTTP server: reads one request head, answers with `reply`, and hands back
    /// the head it read.
    async fn serve_once(reply: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            socket.write_all(reply).await.unwrap();
            let _ = socket.shutdown().await;
            String::from_utf8_lossy(&head).into_owned()
        });
        (format!("http://{addr}"), task)
    }

    /// A GET of `/` with no headers or body, reading at most 64 bytes of answer.
    async fn get_root(upstream: &Upstream) -> Result<Answer, ExchangeError> {
        upstream
            .exchange(Method::GET, "/", HeaderMap::new(), Bytes::new(), 64)
            .await
    }

    /// How a GET of `/` fails against a server that answers `reply`.
    async fn failure_of(reply: &'static [u8]) -> Option<ExchangeError> {
        let (base, _server) = serve_once(reply).await;
        get_root(&client(&base, 5000)).await.err()
    }

    /// A server that accepts one connection and then says nothing for 30 s.
    async fn silent_server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(socket);
        });
        addr
    }

    fn client(base: &str, timeout_ms: u64) -> Upstream {
        Upstream::new(
            base,
            Duration::from_millis(timeout_ms),
            Duration::from_millis(timeout_ms),
            1,
        )
    }

    #[tokio::test]
    async fn the_callers_path_follows_the_base_path_and_the_answer_is_read_whole() {
        let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"code\":0}\n";
        let (base, server) = serve_once(reply).await;
        let answer = client(&format!("{base}/prefix/"), 5000)
            .exchange(
                Method::GET,
                "/v1/videos/text2video?x=1",
                HeaderMap::new(),
                Bytes::new(),
                64,
            )
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], b"{\"code\":0}\n");
        let head = server.await.unwrap();
        assert!(
            head.starts_with("GET /prefix/v1/videos/text2video?x=1 HTTP/1.1\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn an_answer_declared_or_sent_over_the_limit_is_refused() {
        let declared = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n";
        let err = failure_of(declared).await;
        assert!(matches!(err, Some(ExchangeError::TooLarge)), "{err:?}");

        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n28\r\n0123456789012345678901234567890123456789\r\n28\r\n0123456789012345678901234567890123456789\r\n0\r\n\r\n";
        let err = failure_of(chunked).await;
        assert!(matches!(err, Some(ExchangeError::TooLarge)), "{err:?}");
    }

    /// A loopback server that counts the connections it accepts and serves each one with
    /// `serve` on a task of its own.
    async fn counting_server<F, Fut>(
        serve: F,
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    )
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(serve(socket));
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_pool_limit_is_not_reused() {
        let (addr, accepted) = counting_server(|mut socket| async move {
            let mut buf = [0u8; 4096];
            // Keep-alive: answer every request head on this connection.
            while let Ok(n) = socket.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if socket.write_all(KEEP_ALIVE_OK).await.is_err() {
                    break;
                }
            }
        })
        .await;
        let upstream = Upstream::with_pool_idle(
            &format!("http://{addr}"),
            Duration::from_secs(5),
            Duration::from_secs(5),
            Duration::from_millis(200),
            1,
        );
        let call = || get_root(&upstream);
        call().await.unwrap();
        call().await.unwrap();
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "reused"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        call().await.unwrap();
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_serving_thread_reuses_only_the_connections_of_its_own_pool() {
        let (addr, accepted) = counting_server(|mut socket| async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = socket.read(&mut buf).await {
                if n == 0 || socket.write_all(KEEP_ALIVE_OK).await.is_err() {
                    break;
                }
            }
        })
        .await;
        let upstream = std::sync::Arc::new(Upstream::new(
            &format!("http://{addr}"),
            Duration::from_secs(5),
            Duration::from_secs(5),
            2,
        ));
        let accepted_now = || accepted.load(std::sync::atomic::Ordering::SeqCst);
        // Calls in turn, as the serving threads make them: each thread on its own runtime.
        let call_on = |pool: usize| {
            let upstream = std::sync::Arc::clone(&upstream);
            std::thread::spawn(move || {
                use_pool(pool);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    get_root(&upstream).await.unwrap();
                    get_root(&upstream).await.unwrap();
                });
                // Kept until the other thread's calls are made: its pooled connection stays
                // open, so only the pools' separation makes the other thread connect anew.
                runtime
            })
            .join()
            .unwrap()
        };
        let first = call_on(0);
        assert_eq!(
            accepted_now(),
            1,
            "two calls of one thread share a connection"
        );
        let second = call_on(1);
        assert_eq!(accepted_now(), 2, "another thread's calls open their own");
        first.shutdown_background();
        second.shutdown_background();
    }

    #[tokio::test]
    async fn connections_idle_past_the_pool_limit_are_closed_without_a_further_call() {
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&closed);
        let (addr, accepted) = counting_server(move |mut socket| {
            let closed = std::sync::Arc::clone(&counter);
            async move {
                let mut buf = [0u8; 4096];
                // Keep-alive: answer every request head until the gateway closes the socket.
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(KEEP_ALIVE_OK).await.is_err() {
                        break;
                    }
                }
                closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .await;
        let upstream = Upstream::with_pool_idle(
            &format!("http://{addr}"),
            Duration::from_secs(5),
            Duration::from_secs(5),
            Duration::from_millis(200),
            1,
        );
        // Two calls at once: two connections, both pooled afterwards.
        let (first, second) = tokio::join!(get_root(&upstream), get_root(&upstream));
        first.unwrap();
        second.unwrap();
        let opened = accepted.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(opened, 2);
        assert_eq!(closed.load(std::sync::atomic::Ordering::SeqCst), 0);
        // No further call; the idle limit and a sweep pass.
        let deadline = Instant::now() + Duration::from_secs(3);
        while closed.load(std::sync::atomic::Ordering::SeqCst) < opened && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(closed.load(std::sync::atomic::Ordering::SeqCst), opened);
        drop(upstream);
    }

    #[tokio::test]
    async fn the_idle_sweep_ends_with_its_upstream() {
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks();
        let upstream = Upstream::with_pool_idle(
            "http://127.0.0.1:9",
            Duration::from_secs(5),
            Duration::from_secs(5),
            Duration::from_millis(40),
            1,
        );
        assert_eq!(tasks(), before + 1);
        drop(upstream);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(tasks(), before);
    }

    /// Reads one request head from a blocking socket.
    fn read_head(socket: &mut std::net::TcpStream) -> String {
        use std::io::Read;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    const KEEP_ALIVE_OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";

    #[tokio::test]
    async fn a_pooled_connection_the_upstream_closed_is_replaced_and_the_call_succeeds() {
        // Answers one request per connection, with keep-alive, then closes the socket.
        let (addr, accepted) = counting_server(|mut socket| async move {
            let mut buf = [0u8; 4096];
            if socket.read(&mut buf).await.unwrap_or(0) > 0 {
                let _ = socket.write_all(KEEP_ALIVE_OK).await;
            }
        })
        .await;
        second_get_goes_through_on_a_second_connection(addr, &accepted).await;
    }

    /// A server whose every connection answers its first request with keep-alive, reads the
    /// head of the next one, then does `then` with the socket (which closes it when dropped):
    /// an upstream closing an idle connection just as a call reuses it.
    async fn drops_the_second_request<F, Fut>(
        then: F,
    ) -> (
        std::net::SocketAddr,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    )
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + Copy + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        counting_server(move |socket| async move {
            let mut socket = socket.into_std().unwrap();
            socket.set_nonblocking(false).unwrap();
            let socket = tokio::task::spawn_blocking(move || {
                use std::io::Write;
                read_head(&mut socket);
                socket.write_all(KEEP_ALIVE_OK).unwrap();
                read_head(&mut socket);
                socket.set_nonblocking(true).unwrap();
                socket
            })
            .await
            .unwrap();
            then(tokio::net::TcpStream::from_std(socket).unwrap()).await;
        })
        .await
    }

    /// Two GETs through one client to `addr`, where the second finds its pooled connection
    /// closed unanswered: both succeed, the second on a second accepted connection.
    async fn second_get_goes_through_on_a_second_connection(
        addr: std::net::SocketAddr,
        accepted: &std::sync::atomic::AtomicUsize,
    ) {
        let upstream = client(&format!("http://{addr}"), 5000);
        get_root(&upstream).await.unwrap();
        let again = get_root(&upstream).await;
        assert!(again.is_ok(), "{:?}", again.err());
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_get_on_a_pooled_connection_closed_unanswered_is_sent_once_more_on_a_new_one() {
        let (addr, accepted) = drops_the_second_request(|socket| async move { drop(socket) }).await;
        second_get_goes_through_on_a_second_connection(addr, &accepted).await;
    }

    #[tokio::test]
    async fn a_get_on_a_pooled_connection_reset_unanswered_is_sent_once_more_on_a_new_one() {
        let (addr, accepted) = drops_the_second_request(|socket| async move {
            // Linger 0: closing sends a reset rather than an orderly close, without blocking,
            // which is what the deprecation warns of.
            #[allow(deprecated)]
            socket.set_linger(Some(Duration::ZERO)).unwrap();
            drop(socket);
        })
        .await;
        second_get_goes_through_on_a_second_connection(addr, &accepted).await;
    }

    #[tokio::test]
    async fn a_get_is_sent_once_more_at_most_and_never_again_from_a_new_connection() {
        // The first connection answers one request and then closes on the next unanswered;
        // every later one closes on its first request unanswered.
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (addr, accepted) = counting_server(move |socket| {
            let first = opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                let mut socket = socket.into_std().unwrap();
                socket.set_nonblocking(false).unwrap();
                tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    read_head(&mut socket);
                    if first {
                        socket.write_all(KEEP_ALIVE_OK).unwrap();
                        read_head(&mut socket);
                    }
                })
                .await
                .unwrap();
            }
        })
        .await;
        let upstream = client(&format!("http://{addr}"), 5000);
        get_root(&upstream).await.unwrap();
        let again = get_root(&upstream).await.err();
        broken_after_connections(again, &accepted, 2).await;
        // A GET on a new connection is not sent again either.
        let fresh = get_root(&upstream).await.err();
        broken_after_connections(fresh, &accepted, 3).await;
    }

    /// Asserts that a call failed after its request may have reached the upstream, and that
    /// the upstream has accepted `connections` connections in all.
    async fn broken_after_connections(
        err: Option<ExchangeError>,
        accepted: &std::sync::atomic::AtomicUsize,
        connections: usize,
    ) {
        assert!(
            matches!(err, Some(ExchangeError::Broken("request"))),
            "{err:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            connections
        );
    }

    #[tokio::test]
    async fn a_post_on_a_pooled_connection_closed_unanswered_is_not_sent_again() {
        let (addr, accepted) = drops_the_second_request(|socket| async move { drop(socket) }).await;
        let upstream = client(&format!("http://{addr}"), 5000);
        let post = || {
            upstream.exchange(
                Method::POST,
                "/",
                HeaderMap::new(),
                Bytes::from_static(b"{}"),
                64,
            )
        };
        post().await.unwrap();
        let again = post().await.err();
        broken_after_connections(again, &accepted, 1).await;
    }

    #[tokio::test]
    async fn a_get_whose_answer_was_cut_off_after_its_first_bytes_is_not_sent_again() {
        // Cut off in the head, which hyper reports as it reports a close before any answer, and
        // cut off in the body.
        for (cut, stage) in [
            (&b"HTTP/1.1 200 OK\r\ncontent-"[..], "request"),
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{\"co"[..],
                "body",
            ),
        ] {
            let (addr, accepted) = drops_the_second_request(move |mut socket| async move {
                socket.write_all(cut).await.unwrap();
            })
            .await;
            let upstream = client(&format!("http://{addr}"), 5000);
            get_root(&upstream).await.unwrap();
            let again = get_root(&upstream).await.err();
            assert!(
                matches!(again, Some(ExchangeError::Broken(s)) if s == stage),
                "{again:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn a_connection_still_sending_a_body_the_upstream_answered_early_does_not_hold_the_next_call(
    ) {
        // The first connection answers as soon as it has the request head and never reads the
        // body; later ones answer every request, with keep-alive.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let mut first = true;
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let early = std::mem::replace(&mut first, false);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 || socket.write_all(KEEP_ALIVE_OK).await.is_err() {
                            break;
                        }
                        if early {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            break;
                        }
                    }
                });
            }
        });
        let upstream = client(&format!("http://{addr}"), 2000);
        // Larger than the loopback socket buffers, so hyper is still writing it.
        let body = Bytes::from(vec![b'a'; 64 << 20]);
        upstream
            .exchange(Method::POST, "/", HeaderMap::new(), body, 64)
            .await
            .unwrap();
        let next = get_root(&upstream).await;
        assert!(next.is_ok(), "{:?}", next.err());
    }

    /// Everything logged on this thread while the guard lives.
    fn capture_logs() -> (
        std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        tracing::subscriber::DefaultGuard,
    ) {
        #[derive(Clone)]
        struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Capture(std::sync::Arc::clone(&logs));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    #[tokio::test]
    async fn a_request_handed_back_unsent_by_a_closed_pooled_connection_is_sent_on_a_new_one() {
        // The race this covers: the upstream closes an idle connection just as a call takes it
        // from the pool, so the gateway learns of the close only after queueing the request.
        // The server thread closes the pooled connection while this test holds the runtime's
        // only thread, and writes to a signal socket just before closing it, so that at its
        // next poll the runtime wakes this test first and the connection's driver second.
        let (logs, _guard) = capture_logs();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let signal_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let signal_addr = signal_listener.local_addr().unwrap();
        let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            use std::io::Write;
            let (mut signal, _) = signal_listener.accept().unwrap();
            let (mut first, _) = listener.accept().unwrap();
            read_head(&mut first);
            first.write_all(KEEP_ALIVE_OK).unwrap();
            close_rx.recv().unwrap();
            signal.write_all(b"!").unwrap();
            drop(first);
            closed_tx.send(()).unwrap();
            let (mut second, _) = listener.accept().unwrap();
            let head = read_head(&mut second);
            second.write_all(KEEP_ALIVE_OK).unwrap();
            // No third connection: the request was sent once more, not retried again.
            listener.set_nonblocking(true).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            (head, listener.accept().is_ok())
        });
        let mut signal = tokio::net::TcpStream::connect(signal_addr).await.unwrap();
        let upstream = client(&format!("http://{addr}"), 5000);
        get_root(&upstream).await.unwrap();
        // Let the connection go idle in the pool, its driver waiting for the socket.
        tokio::time::sleep(Duration::from_millis(50)).await;
        close_tx.send(()).unwrap();
        closed_rx.recv().unwrap();
        let mut byte = [0u8; 1];
        signal.read_exact(&mut byte).await.unwrap();
        let again = get_root(&upstream).await;
        assert!(again.is_ok(), "{:?}", again.err());
        let (head, third) = tokio::task::spawn_blocking(move || server.join().unwrap())
            .await
            .unwrap();
        assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
        assert!(!third, "a third connection was opened");
        let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        assert!(
            logs.contains("closed before the request was written"),
            "the request was not handed back unsent: {logs}"
        );
    }

    #[tokio::test]
    async fn the_host_header_names_the_base_authority_unless_the_caller_sent_one() {
        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let (base, server) = serve_once(reply).await;
        get_root(&client(&base, 5000)).await.unwrap();
        let head = server.await.unwrap().to_ascii_lowercase();
        let authority = base.trim_start_matches("http://");
        assert!(
            head.contains(&format!("\r\nhost: {authority}\r\n")),
            "{head}"
        );

        let (base, server) = serve_once(reply).await;
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("api.example"));
        client(&base, 5000)
            .exchange(Method::GET, "/", headers, Bytes::new(), 64)
            .await
            .unwrap();
        let head = server.await.unwrap().to_ascii_lowercase();
        assert_eq!(head.matches("\r\nhost: ").count(), 1, "{head}");
        assert!(head.contains("\r\nhost: api.example\r\n"), "{head}");
    }

    #[test]
    fn the_host_header_leaves_out_only_the_schemes_default_port() {
        let host = |base: &str| Origin::parse(base).unwrap().host;
        assert_eq!(host("https://api.example:443/v"), "api.example");
        assert_eq!(host("http://api.example:80"), "api.example");
        assert_eq!(host("http://api.example:443"), "api.example:443");
        assert_eq!(host("https://api.example:8443/"), "api.example:8443");
        assert_eq!(host("http://[::1]:8080"), "[::1]:8080");
        assert_eq!(host("https://api.example"), "api.example");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_failure() {
        // Bind and drop: the port is then (almost certainly) closed.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let err = get_root(&client(&format!("http://{addr}"), 5000))
            .await
            .err();
        assert!(matches!(err, Some(ExchangeError::Connect)), "{err:?}");
    }

    #[tokio::test]
    async fn an_upstream_that_never_answers_times_out() {
        let addr = silent_server().await;
        let err = get_root(&client(&format!("http://{addr}"), 200))
            .await
            .err();
        assert!(matches!(err, Some(ExchangeError::Timeout)), "{err:?}");
    }

    #[tokio::test]
    async fn a_tls_handshake_that_never_completes_is_a_connect_failure_within_the_connect_timeout()
    {
        // Accepts TCP but never speaks TLS, like a plain service behind an https:// URL.
        let addr = silent_server().await;
        fails_to_connect_quickly(
            &format!("https://{addr}"),
            Duration::from_secs(20),
            Duration::from_millis(200),
        )
        .await;
    }

    /// Asserts that a call to `base` with these timeouts fails as a connect failure (nothing
    /// sent), long before the 20 s the tests give the step that never completes.
    async fn fails_to_connect_quickly(base: &str, timeout: Duration, connect_timeout: Duration) {
        let upstream = Upstream::new(base, timeout, connect_timeout, 1);
        let started = std::time::Instant::now();
        let err = get_root(&upstream).await.err();
        assert!(matches!(err, Some(ExchangeError::Connect)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    /// A loopback listener that never accepts, with its accept queue full, so that a further
    /// connect's TCP handshake never completes (Linux drops a SYN to a full accept queue). The
    /// listener and the connections filling its queue live as long as the returned guard.
    async fn unaccepting_server() -> (
        std::net::SocketAddr,
        (tokio::net::TcpListener, Vec<tokio::net::TcpStream>),
    ) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        loop {
            assert!(queued.len() < 64, "the accept queue never filled");
            match tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(stream) => queued.push(stream.unwrap()),
                Err(_) => break,
            }
        }
        (addr, (listener, queued))
    }

    #[tokio::test]
    async fn a_connect_still_pending_when_the_upstream_timeout_passes_is_a_connect_failure() {
        let (addr, _guard) = unaccepting_server().await;
        // The connect timeout is the longer: the upstream timeout cuts the connect short.
        fails_to_connect_quickly(
            &format!("http://{addr}"),
            Duration::from_millis(200),
            Duration::from_secs(20),
        )
        .await;
    }

    #[tokio::test]
    async fn a_tls_handshake_cut_short_by_the_upstream_timeout_is_a_connect_failure() {
        let addr = silent_server().await;
        fails_to_connect_quickly(
            &format!("https://{addr}"),
            Duration::from_millis(200),
            Duration::from_secs(20),
        )
        .await;
    }

    #[tokio::test]
    async fn an_unrequested_switching_protocols_answer_is_a_broken_exchange() {
        let switch =
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: foo\r\n\r\n";
        let err = failure_of(switch).await;
        assert!(
            matches!(err, Some(ExchangeError::Broken("status"))),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_answer_cut_short_is_a_broken_exchange() {
        let cut = b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{\"code\":";
        let err = failure_of(cut).await;
        assert!(
            matches!(err, Some(ExchangeError::Broken("body"))),
            "{err:?}"
        );
    }
}
