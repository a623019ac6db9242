//! The accept loop: axum's router on hyper, with the limits an exposed service needs and
//! `axum::serve` does not set: at most `max_connections` connections at once (further ones
//! wait in the listen backlog until one closes), and a deadline for a request's headers, so a
//! client that trickles them in (slowloris) is dropped instead of holding a connection forever.
//! A request's body and handling are bounded by the router's request timeout.
//! With `[server.tls]` each connection first does its TLS handshake, in its own task and within
//! the same deadline, and its requests learn the verified client certificate's subject.
//! A connection whose client takes none of what it is sent for `send_timeout` (a live follower
//! gone silent, a stalled download) is dropped, freeing its place.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
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
    /// None: plain HTTP.
    pub tls: Option<TlsAcceptor>,
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
    /// What `[server]` sets, defaults for what it leaves out; reads the TLS files (relative to
    /// `data_dir`) when `[server.tls]` is there.
    pub fn from_config(
        srv: &auditseal_core::config::ServerSection,
        data_dir: &Path,
    ) -> Result<Self, TlsError> {
        let d = Limits::default();
        let tls = srv
            .tls
            .as_ref()
            .map(|t| crate::tls::acceptor(t, data_dir))
            .transpose()?;
        match srv.tls.as_ref().map(|t| &t.client_ca_file) {
            None => tracing::info!("serving plain HTTP"),
            Some(None) => tracing::info!("serving HTTPS; client certificates not asked for"),
            Some(Some(ca)) => tracing::info!(
                client_ca = %data_dir.join(ca).display(),
                "serving HTTPS; client certificates accepted"
            ),
        }
        Ok(Limits {
            max_connections: srv.max_connections.unwrap_or(d.max_connections).max(1),
            header_timeout: srv
                .header_timeout_secs
                .map_or(d.header_timeout, |s| Duration::from_secs(s.max(1))),
            send_timeout: srv
                .send_timeout_secs
                .map_or(d.send_timeout, |s| Duration::from_secs(s.max(1))),
            tls,
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// Serves `app` until `shutdown` resolves, then lets the connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Take a slot before accepting: when all are in use, new connections wait unaccepted.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.map_err(std::io::Error::other)?,
            _ = &mut shutdown => break,
        };
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
        let _ = stream.set_nodelay(true);
        let (app, tls, watcher) = (app.clone(), limits.tls.clone(), graceful.watcher());
        let header_timeout = limits.header_timeout;
        let stream = StallGuard::new(stream, limits.send_timeout);
        // The handshake happens here, not in the accept loop, so a slow client delays no one.
        tokio::spawn(async move {
            let info = ConnectionInfo {
                peer,
                client_subject: None,
            };
            match tls {
                None => serve_connection(stream, info, app, header_timeout, watcher).await,
                Some(acceptor) => {
                    if let Some((stream, info)) =
                        handshake(&acceptor, stream, info, header_timeout).await
                    {
                        serve_connection(stream, info, app, header_timeout, watcher).await;
                    }
                }
            }
            drop(slot);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

/// The TLS handshake within `timeout`; None (and the connection dropped) when it fails.
async fn handshake(
    acceptor: &TlsAcceptor,
    stream: StallGuard<TcpStream>,
    mut info: ConnectionInfo,
    timeout: Duration,
) -> Option<(
    tokio_rustls::server::TlsStream<StallGuard<TcpStream>>,
    ConnectionInfo,
)> {
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
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

/// HTTP/1 or HTTP/2 on one connection; each request carries `info`.
async fn serve_connection<I>(
    io: I,
    info: ConnectionInfo,
    app: Router,
    header_timeout: Duration,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app.map_request(move |req: Request<Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(info.clone());
        req
    }));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
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
