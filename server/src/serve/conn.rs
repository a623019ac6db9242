//! One connection: its handshake (with HTTPS), then HTTP/1 or HTTP/2 until it is idle too long,
//! evicted, or the server stops.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::activity::Activity;
use super::body::{RequestBody, ResponseBody};
use super::handshake::handshake;
use super::stall::StallGuard;
use crate::auth::ConnectionInfo;

/// How long a connection told to close (idle, or evicted to make room) may take to go; past it,
/// it is dropped. It has no request in flight: this only bounds an HTTP/2 peer that does not
/// answer the GOAWAY's ping.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What serving one connection needs.
pub(super) struct Conn {
    pub(super) app: Router,
    pub(super) activity: Arc<Activity>,
    pub(super) header_timeout: Duration,
    pub(super) stopping: tokio::sync::watch::Receiver<bool>,
}

impl Conn {
    /// A connection just accepted: its TLS handshake (here, not in the accept loop, so a slow
    /// client delays no one), then its requests.
    pub(super) async fn accepted(
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
