//! Authentication and roles (docs/API.md "Authentication and roles").

use std::net::SocketAddr;

/// What the accept loop knows of a connection, put into each of its requests' extensions.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    /// The subject DN of the client certificate the TLS handshake verified, normalised by
    /// `auditseal_core::access::normalize_dn`; None over plain HTTP or without a certificate.
    pub client_subject: Option<String>,
}
