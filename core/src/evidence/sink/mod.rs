//! Copies that leave the database's reach: messages for a receiver on another host (RFC 5424
//! syslog over TCP, TLS or UDP, an HTTP witness). The checkpointer (checkpoint_out.rs) queues
//! them in a durable backlog (`Forwarder`) that keeps them, in order, until the receiver has
//! them; event forwarding (crate::forward) uses the same transports with the database as its
//! backlog. Nothing here knows what the messages are.

mod backlog;
mod forwarder;
pub mod syslog;
pub mod witness;

use std::path::PathBuf;

pub use forwarder::{Forwarder, Transport, Undelivered, Waiting};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A setting cannot be used (a bad address, an unreadable CA file): fix the configuration.
    #[error("{0}")]
    Config(String),
    /// The backlog file cannot be read or written: what waits may not survive a restart.
    #[error("backlog {}: {reason}", path.display())]
    Backlog { path: PathBuf, reason: String },
    #[error("sink task failed: {0}")]
    Task(String),
}
