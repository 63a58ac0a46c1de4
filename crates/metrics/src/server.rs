//! The admin HTTP server: `/metrics`, the web UI, its JSON pages and the live work time, on
//! hyper (HTTP/1.1, one request per connection, on a tokio runtime of its own thread).
//!
//! It runs inside the streaming job, so it must not be fragile. hyper parses and answers; a thin
//! admission layer in front of it ([`read_head`]) enforces what hyper has no knob for:
//!
//! * **Bounded input.** The request line may hold [`ServerOptions::max_request_line`] bytes
//!   (414 beyond), the header section [`ServerOptions::max_headers`] lines and
//!   [`ServerOptions::max_header_bytes`] bytes (431 beyond). hyper only knows one buffer size
//!   for the whole head (and 414 past 64 KiB), so the head is read first, into a buffer that
//!   never grows past the limits plus one read: a client sending an endless line costs a few
//!   KiB, not memory until the process dies. The head read is then handed to hyper.
//! * **Bounded time.** A client has [`ServerOptions::read_timeout`] to send its whole request head
//!   (not per read: a client dribbling one byte at a time is cut off too), and each write of the
//!   response may block for [`ServerOptions::write_timeout`].
//! * **Concurrent, with a ceiling.** Every connection is a task, up to
//!   [`ServerOptions::max_connections`] at once; beyond that a connection is answered `503` at
//!   once (without reading it) and closed, so a stalled client neither blinds `/metrics` nor
//!   blocks the accept loop, and a flood cannot take memory without end. Pages are rendered on
//!   tokio's blocking pool, so a slow JSON page does not hold up `/metrics`.
//! * **Host check** (against DNS rebinding: a web page on another origin that resolves its own
//!   name to 127.0.0.1 could otherwise read `/api/dead-letters` through the user's browser).
//!   A request is served when its `Host` names a loopback host (`localhost`, `127.x.x.x`,
//!   `[::1]`), the address the server is bound to or the connection arrived on (a server bound to
//!   `0.0.0.0` accepts each interface's own address, so Prometheus on another machine scraping
//!   `http://10.0.0.5:9249/metrics` is fine), the host name the listen address was given as, or
//!   a name in [`ServerOptions::allowed_hosts`]; ports are not compared. A server bound to a
//!   non-loopback address also accepts dotless names (`iotflow-0:9249`, `publisher:9250`: what
//!   Prometheus sends when it scrapes a container by its service name): a rebinding attack needs
//!   a name the attacker controls in public DNS, which always has a dot, and such a server is
//!   reachable from the network without a browser anyway. Anything else gets `403`. HTTP/1.1
//!   requests without `Host` get `400`; HTTP/1.0 ones are served (browsers always send `Host`,
//!   so its absence is not a rebinding), with an `HTTP/1.1` status line as RFC 9110 section 6.2
//!   asks of a 1.1 server.

use std::convert::Infallible;
use std::future::Future;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::Metrics;

mod head;
mod host;

use head::{read_head, HeadError, Limits};
use host::HostPolicy;

/// A running metrics endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    /// The address it listens on (useful when port 0 was asked for).
    pub addr: SocketAddr,
}

/// Limits and the `Host` allow-list of the endpoint. [`ServerOptions::default`] is what
/// [`serve`] uses.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Longest request line (`GET /path HTTP/1.1`, CR included), bytes. Default 8 KiB; longer
    /// lines are answered `414`.
    pub max_request_line: usize,
    /// Most header lines. Default 64; more are answered `431`.
    pub max_headers: usize,
    /// Most bytes of all header lines together (CR and LF included). Default 32 KiB; more are
    /// answered `431`.
    pub max_header_bytes: usize,
    /// Time a client has from its connection to the end of its request head. Default 10 s;
    /// then it is answered `408` and closed.
    pub read_timeout: Duration,
    /// Longest a single write of the response may block. Default 10 s; then the connection is
    /// closed.
    pub write_timeout: Duration,
    /// Connections served at once. Default 16; a connection beyond that is
    /// answered `503` without being read, and closed.
    pub max_connections: usize,
    /// Host names (or addresses) accepted in `Host` besides loopback hosts and the server's own
    /// addresses, e.g. the DNS name Prometheus scrapes. A port in an entry is ignored;
    /// comparison ignores case. Default empty.
    pub allowed_hosts: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_request_line: 8 << 10,
            max_headers: 64,
            max_header_bytes: 32 << 10,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_connections: 16,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Serves `metrics` on `addr` (`host:port`; port 0 picks a free one) until the process exits,
/// with [`ServerOptions::default`].
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> std::io::Result<MetricsServer> {
    serve_with(addr, metrics, ServerOptions::default())
}

/// Serves `metrics` on `addr` with `options` until the process exits, on a runtime of its own
/// in a thread named `metrics-http` (callers may or may not run tokio themselves).
pub fn serve_with(
    addr: &str,
    metrics: Arc<Metrics>,
    options: ServerOptions,
) -> std::io::Result<MetricsServer> {
    let (runtime, listener) = crate::http::listen(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for /metrics on {addr}: {e}"),
        )
    })?;
    let local = listener.local_addr()?;
    let hosts = Arc::new(HostPolicy::new(addr, local, &options.allowed_hosts));
    let options = Arc::new(options);
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                crate::history::start(metrics.clone());
                loop {
                    let stream = match listener.accept().await {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of file descriptors and the like: wait a moment rather than spin.
                            tracing::debug!("metrics endpoint: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    let Some(slot) = Slot::take(&active, options.max_connections) else {
                        refuse(stream);
                        continue;
                    };
                    let (metrics, hosts, options) =
                        (metrics.clone(), hosts.clone(), options.clone());
                    tokio::spawn(async move {
                        let _slot = slot;
                        if let Err(e) = connection(stream, metrics, hosts, options).await {
                            tracing::debug!("metrics request failed: {e}");
                        }
                    });
                }
            })
        })?;
    Ok(MetricsServer { addr: local })
}

/// One of the `max_connections` connections; freed when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        let mut current = active.load(Ordering::Relaxed);
        loop {
            if current >= max.max(1) {
                return None;
            }
            match active.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Slot(active.clone())),
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers `503` without reading or waiting: the socket is fresh, so the response fits in its
/// send buffer; if it does not, the client just sees the connection closed.
fn refuse(stream: TcpStream) {
    let body = "busy: too many connections to the metrics endpoint\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
    if let Ok(stream) = stream.into_std() {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
}

/// What the admission layer learned about a connection's one request.
#[derive(Debug, Clone, Copy)]
struct ConnInfo {
    /// The connection's own address (for the Host check on a server bound to `0.0.0.0`).
    local: IpAddr,
    /// The request said `HTTP/1.0` (hyper is handed it as 1.1, see [`as_http11`]).
    http10: bool,
}

/// One connection: reads the head within the limits, answers what breaks them, hands the rest
/// to hyper.
async fn connection(
    mut stream: TcpStream,
    metrics: Arc<Metrics>,
    hosts: Arc<HostPolicy>,
    options: Arc<ServerOptions>,
) -> std::io::Result<()> {
    let local = stream.local_addr()?.ip();
    let deadline = Instant::now() + options.read_timeout;
    let limits = Limits {
        request_line: options.max_request_line,
        headers: options.max_headers,
        header_bytes: options.max_header_bytes,
    };
    let mut buf = Vec::with_capacity(4 << 10);
    let mut chunk = vec![0u8; 4 << 10];
    let head = loop {
        // Parse what has arrived; an incomplete head reads as `Gone` from the buffer. The
        // buffer holds at most the limits plus one read, since a line past its limit is an
        // error before its end arrives.
        let mut rest: &[u8] = &buf;
        match read_head(&mut rest, limits, &mut || Ok(())) {
            Ok(head) => break Ok(head),
            Err(HeadError::Gone) => {}
            Err(e) => break Err(e),
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => break Err(HeadError::TimedOut),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = match head {
        Ok(head) => head,
        Err(e) => return refuse_head(stream, e, options.write_timeout).await,
    };
    let info = ConnInfo {
        local,
        http10: head.http10,
    };
    as_http11(&mut buf);
    let io = Prefixed {
        prefix: buf,
        at: 0,
        stream,
        write_timeout: options.write_timeout,
        stalled: None,
    };
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (metrics, hosts) = (metrics.clone(), hosts.clone());
        async move {
            let method = request.method().clone();
            let host = request
                .headers()
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
            let target = request
                .uri()
                .path_and_query()
                .map_or_else(|| request.uri().path().to_string(), |p| p.to_string());
            let page = tokio::task::spawn_blocking(move || {
                answer(&metrics, &hosts, info, &method, host.as_deref(), &target)
            })
            .await
            .unwrap_or_else(|_| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    "internal error\n".to_string(),
                )
            });
            Ok::<_, Infallible>(response(page))
        }
    });
    hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(options.read_timeout)
        .serve_connection(TokioIo::new(io), service)
        .await
        .map_err(std::io::Error::other)
}

/// Rewrites an `HTTP/1.0` request line to `HTTP/1.1` (same length), so that hyper answers with
/// an `HTTP/1.1` status line, as RFC 9110 section 6.2 asks; the real version travels in
/// [`ConnInfo`]. One request per connection, so nothing else depends on the version.
fn as_http11(head: &mut [u8]) {
    let start = match head {
        [b'\r', b'\n', ..] => 2,
        [b'\n', ..] => 1,
        _ => 0,
    };
    let Some(len) = head[start..].iter().position(|&b| b == b'\n') else {
        return;
    };
    let line = &mut head[start..start + len];
    let line = match line {
        [l @ .., b'\r'] => l,
        l => l,
    };
    if let Some(version) = line.len().checked_sub(8).map(|at| &mut line[at..]) {
        if version == b"HTTP/1.0" {
            version.copy_from_slice(b"HTTP/1.1");
        }
    }
}

/// Answers a head that broke a limit or is malformed, then lingers and closes.
async fn refuse_head(
    mut stream: TcpStream,
    error: HeadError,
    write_timeout: Duration,
) -> std::io::Result<()> {
    let (status, why) = match error {
        HeadError::LineTooLong => ("414 URI Too Long", "request line too long"),
        HeadError::HeadersTooLarge => (
            "431 Request Header Fields Too Large",
            "too many or too large headers",
        ),
        HeadError::TimedOut => ("408 Request Timeout", "request not received in time"),
        HeadError::Malformed(why) => ("400 Bad Request", why),
        HeadError::Gone => return Ok(()),
    };
    tracing::debug!("metrics endpoint: {status}: {why}");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{why}\n",
        why.len() + 1
    );
    let written = tokio::time::timeout(write_timeout, async {
        stream.write_all(response.as_bytes()).await?;
        // FIN after the response, so the client reads it to the end before the socket closes.
        stream.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(ErrorKind::TimedOut.into()));
    linger(&mut stream).await;
    written
}

/// After an error response to a request that was not read to its end: read and drop a little
/// more of what the client sends (at most 64 KiB, for at most a second) before closing, so the
/// close does not turn into a reset that could destroy the response before the client read it.
async fn linger(stream: &mut TcpStream) {
    let until = Instant::now() + Duration::from_secs(1);
    let mut budget = 64usize << 10;
    let mut sink = [0u8; 4096];
    while budget > 0 {
        match tokio::time::timeout_at(until, stream.read(&mut sink[..budget.min(4096)])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(n)) => budget -= n,
        }
    }
}

/// A page: status, content type, body.
type Page = (StatusCode, &'static str, String);

/// The method and Host checks and the routes. Runs on the blocking pool (routes may be slow).
fn answer(
    metrics: &Metrics,
    hosts: &HostPolicy,
    info: ConnInfo,
    method: &Method,
    host: Option<&str>,
    target: &str,
) -> Page {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET and HEAD\n".into(),
        );
    }
    match host {
        None if !info.http10 => {
            return (
                StatusCode::BAD_REQUEST,
                TEXT,
                "HTTP/1.1 needs a Host header\n".into(),
            )
        }
        Some(host) if !hosts.allows(host, info.local) => {
            tracing::debug!(host = ?host, "metrics endpoint: refused a request for another host");
            return (
                StatusCode::FORBIDDEN,
                TEXT,
                "this Host is not served here (see docs/metrics.md, the Host check)\n".into(),
            );
        }
        _ => {}
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Some(json) = metrics.route(path, query) {
        return (StatusCode::OK, "application/json", json);
    }
    match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/" | "/ui" => (
            StatusCode::OK,
            "text/html; charset=utf-8",
            crate::UI_HTML.to_string(),
        ),
        "/api/dead-letters" => (
            StatusCode::OK,
            "application/json",
            metrics.recent_dead_letters().json(),
        ),
        "/healthz" => {
            let (_, why) = metrics.readiness();
            (StatusCode::OK, TEXT, format!("alive: {why}\n"))
        }
        "/readyz" => match metrics.readiness() {
            (true, why) => (StatusCode::OK, TEXT, format!("ready: {why}\n")),
            (false, why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not ready: {why}\n"),
            ),
        },
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".to_string()),
    }
}

/// The hyper response of a page (hyper leaves the body out for `HEAD`).
fn response((status, ctype, body): Page) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The connection as hyper sees it: first the head already read, then the socket; every write
/// may block for at most `write_timeout`.
struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    stream: TcpStream,
    write_timeout: Duration,
    /// Running while a write waits for the socket.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Prefixed {
    /// `Pending` while a blocked write is within its time, an error once it is over.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let timeout = self.write_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "a write of the response timed out",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => this.check_stall(cx).map(|r| r.map(|()| 0)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
