//! The accept loop: axum's router on hyper, with the limits an exposed service needs and
//! `axum::serve` does not set: at most `max_connections` connections at once, and a deadline
//! (`header_timeout`) for every state in which a connection has no request in progress, so a
//! client that sends nothing, or trickles its headers in (slowloris), is dropped instead of
//! holding a connection forever. When every connection is taken, the one idle longest is closed
//! for a new client; only when all are busy does it wait until one closes.
//! A request's body and handling are bounded by the router's request timeout.
//! With `[server.tls]` each connection first does its TLS handshake, in its own task and within
//! the same deadline, and its requests learn the verified client certificate's subject.
//! A connection whose client takes none of what it is sent for `send_timeout` (a live follower
//! gone silent, a stalled download) is dropped, freeing its place.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::ConnectionInfo;
use crate::tls::TlsError;

/// Connection limits (`server.max_connections`, `server.header_timeout_secs`,
/// `server.send_timeout_secs`) and HTTPS (`[server.tls]`).
#[derive(Clone)]
pub struct Limits {
    pub max_connections: usize,
    /// Also bounds the TLS handshake.
    pub header_timeout: Duration,
    /// Longest time a write to the client may stay blocked.
    pub send_timeout: Duration,
    /// None: plain HTTP. Swapped whole by a reload (SIGHUP): each new connection takes the
    /// acceptor in force when it arrives; connections already open keep theirs.
    pub tls: Option<SharedAcceptor>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("send_timeout", &self.send_timeout)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Limits {
    /// The connection limits of `cfg`; reads the TLS files (relative to `data_dir`) when
    /// `[server.tls]` is there.
    pub fn from_config(
        cfg: &crate::config::ServerConfig,
        tls: Option<&auditseal_core::config::TlsSection>,
        data_dir: &Path,
    ) -> Result<Self, TlsError> {
        let section = tls;
        let tls = section
            .map(|t| crate::tls::acceptor(t, data_dir))
            .transpose()?
            .map(|a| Arc::new(std::sync::RwLock::new(a)));
        match section.map(|t| &t.client_ca_file) {
            None => tracing::info!("serving plain HTTP"),
            Some(None) => tracing::info!("serving HTTPS; client certificates not asked for"),
            Some(Some(ca)) => tracing::info!(
                client_ca = %data_dir.join(ca).display(),
                "serving HTTPS; client certificates accepted"
            ),
        }
        Ok(Limits {
            tls,
            ..Limits::plain(cfg)
        })
    }

    /// The connection limits of `cfg`, over plain HTTP.
    pub fn plain(cfg: &crate::config::ServerConfig) -> Self {
        Limits {
            max_connections: cfg.max_connections,
            header_timeout: cfg.header_timeout,
            send_timeout: cfg.send_timeout,
            tls: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::plain(&crate::config::ServerConfig::default())
    }
}

/// The HTTPS acceptor, replaced whole when the configuration is reloaded.
pub type SharedAcceptor = Arc<std::sync::RwLock<TlsAcceptor>>;

/// How long a connection told to close (idle, or evicted to make room) may take to go; past it,
/// it is dropped. It has no request in flight: this only bounds an HTTP/2 peer that does not
/// answer the GOAWAY's ping.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// While no slot is free and a client waits, another idle connection is closed this often
/// (the one closed before may not have gone yet).
const EVICT_RETRY: Duration = Duration::from_millis(100);

/// Serves `app` until `shutdown` resolves, then lets the connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let registry = Arc::new(Registry::default());
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    'accept: loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Every slot taken: a connection with no request in flight makes room for this client
        // (the one idle longest), so idle connections cannot keep clients out. When all are busy
        // the client waits, as it would in the listen backlog.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) => loop {
                registry.evict_idlest();
                tokio::select! {
                    s = slots.clone().acquire_owned() => break s.map_err(std::io::Error::other)?,
                    _ = tokio::time::sleep(EVICT_RETRY) => {}
                    _ = &mut shutdown => break 'accept,
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let tls = limits
            .tls
            .as_ref()
            .map(|t| t.read().unwrap_or_else(|e| e.into_inner()).clone());
        let (activity, registered) = registry.add();
        let conn = Conn {
            app: app.clone(),
            activity,
            header_timeout: limits.header_timeout,
            stopping: stopping.clone(),
        };
        let stream = StallGuard::new(stream, limits.send_timeout);
        tokio::spawn(async move {
            conn.accepted(stream, peer, tls).await;
            drop(registered);
            drop(slot);
        });
    }
    // Each connection closes once its requests are answered (live follows end on `closing`);
    // it holds its slot until it has gone.
    let _ = stop.send(true);
    let _ = slots
        .acquire_many(u32::try_from(max).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// One connection's activity, as its idle deadline and the eviction of idle connections see it.
struct Activity {
    /// Requests whose response has not been sent in full.
    in_flight: AtomicUsize,
    /// When the connection last had nothing in flight (opened, or its last response sent).
    idle_since: Mutex<Instant>,
    /// Set when the accept loop wants this connection closed to make room.
    evict: AtomicBool,
    /// Woken when `in_flight` drops to 0 or `evict` is set.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            evict: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// When the connection became idle, or None while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        (self.in_flight.load(Ordering::SeqCst) == 0).then_some(since)
    }

    /// A request begins; it ends when the guard (held by its response body) is dropped.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `limit`, or is evicted.
    async fn idle_for(&self, limit: Duration) {
        self.quiet_for(limit, true, None).await
    }

    /// Resolves once the connection has had no request in flight for `limit`, counted from
    /// `not_before` at the earliest (a connection told to close: from then), or, with
    /// `or_evicted`, once it is evicted.
    async fn quiet_for(&self, limit: Duration, or_evicted: bool, not_before: Option<Instant>) {
        loop {
            if or_evicted && self.evict.load(Ordering::SeqCst) {
                return;
            }
            match self.idle_since() {
                Some(since) => {
                    let since = not_before.map_or(since, |t| t.max(since));
                    if since.elapsed() >= limit {
                        return;
                    }
                    let deadline = tokio::time::Instant::from_std(since + limit);
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        *a.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        if a.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            a.changed.notify_one();
        }
    }
}

/// The open connections, so that a full server can close the one idle longest.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Activity>>>,
    next: AtomicU64,
}

impl Registry {
    /// A new connection's activity; it leaves the registry when the guard is dropped.
    fn add(self: &Arc<Self>) -> (Arc<Activity>, Registered) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        self.lock().insert(id, activity.clone());
        (activity, Registered(self.clone(), id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the connection idle longest (and not told already) to close; none when every
    /// connection has a request in flight.
    fn evict_idlest(&self) {
        let conns = self.lock();
        let idlest = conns
            .values()
            .filter(|a| !a.evict.load(Ordering::SeqCst))
            .filter_map(|a| a.idle_since().map(|since| (since, a)))
            .min_by_key(|(since, _)| *since);
        if let Some((_, a)) = idlest {
            a.evict.store(true, Ordering::SeqCst);
            a.changed.notify_one();
        }
    }
}

struct Registered(Arc<Registry>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// What a client that speaks plain HTTP to the HTTPS port gets, instead of a closed connection.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
    Content-Length: 65\r\nConnection: close\r\n\r\n\
    This port speaks HTTPS: use an https:// URL (server.tls is set).\n";

/// Reads the request's head (so that closing does not reset the connection and lose the answer),
/// answers `PLAIN_HTTP_ANSWER` and closes the sending side.
async fn answer_plain_http(io: &mut TcpStream) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut buf).await? {
            0 => break,
            n => head.extend_from_slice(&buf[..n]),
        }
    }
    io.write_all(PLAIN_HTTP_ANSWER).await?;
    io.shutdown().await
}

/// The TLS handshake within `timeout`; None (and the connection dropped) when it fails. A client
/// whose first byte is an ASCII capital (an HTTP method: plain HTTP, where TLS starts with 0x16)
/// is told so in plain HTTP first.
async fn handshake(
    acceptor: &TlsAcceptor,
    mut stream: StallGuard<TcpStream>,
    mut info: ConnectionInfo,
    timeout: Duration,
) -> Option<(
    tokio_rustls::server::TlsStream<StallGuard<TcpStream>>,
    ConnectionInfo,
)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first = [0u8; 1];
    if let Ok(Ok(1)) = tokio::time::timeout_at(deadline, stream.io.peek(&mut first)).await
        && first[0].is_ascii_uppercase()
    {
        tracing::debug!(peer = %info.peer, "plain HTTP on the HTTPS port; told so");
        let _ = tokio::time::timeout_at(deadline, answer_plain_http(&mut stream.io)).await;
        return None;
    }
    let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(peer = %info.peer, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(peer = %info.peer, "TLS handshake timed out");
            return None;
        }
    };
    // rustls has verified the chain; the end-entity certificate comes first.
    if let Some(cert) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    {
        match crate::tls::subject_dn(cert) {
            Ok(dn) => info.client_subject = Some(auditseal_core::access::normalize_dn(&dn)),
            // Treated as no certificate: the client can still use a token.
            Err(e) => tracing::warn!(peer = %info.peer, error = %e, "client certificate ignored"),
        }
    }
    Some((stream, info))
}

/// What serving one connection needs.
struct Conn {
    app: Router,
    activity: Arc<Activity>,
    header_timeout: Duration,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Conn {
    /// A connection just accepted: its TLS handshake (here, not in the accept loop, so a slow
    /// client delays no one), then its requests.
    async fn accepted(
        self,
        stream: StallGuard<tokio::net::TcpStream>,
        peer: std::net::SocketAddr,
        tls: Option<TlsAcceptor>,
    ) {
        let info = ConnectionInfo {
            peer,
            client_subject: None,
        };
        match tls {
            None => self.serve(stream, info).await,
            Some(acceptor) => {
                // A connection evicted to make room goes even mid-handshake.
                let shaken = tokio::select! {
                    s = handshake(&acceptor, stream, info, self.header_timeout) => s,
                    _ = self.activity.idle_for(self.header_timeout) => None,
                };
                if let Some((stream, info)) = shaken {
                    self.serve(stream, info).await;
                }
            }
        }
    }
}

impl Conn {
    /// HTTP/1 or HTTP/2 on one connection; each request carries `info`. A connection with no
    /// request in flight for `header_timeout` is closed, whatever its state: no byte sent yet
    /// (hyper's HTTP/1 header timeout only starts once it knows the protocol), between requests,
    /// HTTP/2 with no open stream, or a TLS session that never sent a request.
    async fn serve<I>(self, io: I, info: ConnectionInfo)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            app,
            activity,
            header_timeout,
            mut stopping,
        } = self;
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_flight = requests.begin();
            let (parts, body) = req.into_parts();
            let unread = Arc::new(Mutex::new(None));
            let mut req = Request::from_parts(
                parts,
                axum::body::Body::new(RequestBody {
                    body: Some(body),
                    unread: unread.clone(),
                }),
            );
            req.extensions_mut().insert(info.clone());
            let answer = app.clone().oneshot(req);
            async move {
                let resp = answer.await?;
                Ok::<_, std::convert::Infallible>(resp.map(|body| ResponseBody {
                    body,
                    in_flight: Some(in_flight),
                    unread,
                }))
            }
        });
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let idle = activity.quiet_for(header_timeout, true, None);
        tokio::pin!(idle);
        let (mut closing, mut stop_seen) = (false, false);
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = &mut idle => {
                    if closing {
                        // Told to close and still idle after CLOSE_GRACE: drop it.
                        return;
                    }
                    // HTTP/2 gets a GOAWAY; an idle HTTP/1 connection closes at once.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    // A request that began before the GOAWAY is let finish.
                    idle.set(activity.quiet_for(CLOSE_GRACE, false, Some(Instant::now())));
                }
                r = stopping.wait_for(|s| *s), if !stop_seen => {
                    stop_seen = true;
                    if r.is_ok() && !closing {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}

/// A refused request's unread body is read and discarded, after the response, up to this many
/// bytes, for this long, and while the client keeps sending (no gap longer than `DRAIN_GAP`:
/// a body too slow for the request timeout is not waited for again); what is left then is
/// dropped.
const DRAIN_LIMIT: usize = 32 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);
const DRAIN_GAP: Duration = Duration::from_secs(1);

/// A request's body. If the handler drops it unread (a refusal: 401, 403, 413), the rest is
/// kept for `ResponseBody` to drain once the response has been sent: dropped before that, the
/// HTTP/2 stream is reset with CANCEL while the client still sends, and clients report a
/// stream error instead of the response.
struct RequestBody {
    body: Option<Incoming>,
    unread: Arc<Mutex<Option<Incoming>>>,
}

impl hyper::body::Body for RequestBody {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        match self.body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(body) = self.body.take().filter(|b| !b.is_end_stream()) {
            *self.unread.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
        }
    }
}

/// A response's body; while it lives, its request is in flight. hyper drops it once the
/// response has been sent in full; then the request body's unread rest, if any, is drained,
/// so the client can finish sending and read its answer (a client that sends more than
/// `DRAIN_LIMIT` gets, on HTTP/2, a reset with NO_ERROR: RFC 9113 section 8.1).
struct ResponseBody {
    body: axum::body::Body,
    in_flight: Option<InFlight>,
    unread: Arc<Mutex<Option<Incoming>>>,
}

impl hyper::body::Body for ResponseBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let unread = self.unread.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (Some(mut body), in_flight) = (unread, self.in_flight.take()) else {
            return;
        };
        // Still in flight while draining: the idle deadline must not cut the upload short.
        tokio::spawn(async move {
            let drain = async {
                let mut read = 0;
                while read <= DRAIN_LIMIT {
                    let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
                    match tokio::time::timeout(DRAIN_GAP, next).await {
                        Ok(Some(Ok(frame))) => {
                            read += frame.data_ref().map_or(0, |d| d.len());
                        }
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            drop(in_flight);
        });
    }
}

/// A connection whose writes fail with `TimedOut` once one (or a flush) has stayed blocked for
/// `limit`: the client is taking nothing of what it is sent. hyper then drops the connection.
/// Reads are passed through untouched (the header and request timeouts bound those).
struct StallGuard<I> {
    io: I,
    limit: Duration,
    /// Since when the current write has been blocked.
    blocked: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> StallGuard<I> {
    fn new(io: I, limit: Duration) -> Self {
        StallGuard {
            io,
            limit,
            blocked: None,
        }
    }

    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.blocked = None;
            return r;
        }
        let limit = self.limit;
        let deadline = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if deadline.as_mut().poll(cx).is_ready() {
            self.blocked = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took nothing of its response for {} s (server.send_timeout_secs)",
                    limit.as_secs()
                ),
            )));
        }
        Poll::Pending
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for StallGuard<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for StallGuard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, r)
    }
}
