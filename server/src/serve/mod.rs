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
//!
//! The phases of a connection, one file each: the accept loop and its limits (here), the
//! connections' activity and eviction (activity.rs), the TLS handshake (handshake.rs), serving
//! HTTP on one connection (conn.rs), the request and response bodies that track a request in
//! flight (body.rs), and the guard on stalled writes (stall.rs).

mod activity;
mod body;
mod conn;
mod handshake;
mod stall;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::tls::TlsError;
use activity::Registry;
use conn::Conn;
use stall::StallGuard;

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
