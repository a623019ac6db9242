//! The TLS handshake of a connection, and the answer to a client that speaks plain HTTP to the
//! HTTPS port.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::stall::StallGuard;
use crate::auth::ConnectionInfo;

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
pub(super) async fn handshake(
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
