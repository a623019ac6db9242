//! The server's settings, resolved: the one home of every `[server]` default. The file's
//! `[server]` table is read by core (`auditseal_core::config::ServerSection`, where the
//! environment and `--set` have already been applied: docs/OPERATIONS.md "Configuration");
//! this turns it into values with nothing left to default.

use std::time::Duration;

use auditseal_core::batched::BatchedConfig;
use auditseal_core::config::{DeviceKind, ServerSection};

/// Every `[server]` setting with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `server.bind` / `--bind`.
    pub bind: String,
    /// `server.device` / `--device`.
    pub device: DeviceKind,
    /// Largest request body; a bulk request may be `BULK_BODY_FACTOR` times this.
    pub max_body_bytes: usize,
    /// Most bytes one event may take as stored.
    pub max_event_bytes: usize,
    /// The batched device's batch size, longest wait and queue.
    pub batch_size: usize,
    pub batch_max_wait: Duration,
    pub queue_capacity: usize,
    /// Live followers at once.
    pub max_followers: usize,
    /// Connections at once.
    pub max_connections: usize,
    /// Time to send a request's headers, and the longest a connection may sit idle.
    pub header_timeout: Duration,
    /// Longest a client may go without taking any of what it is sent.
    pub send_timeout: Duration,
    /// Longest a request may take (verify, export and live follow excepted).
    pub request_timeout: Duration,
    /// `server.metrics_bind`: where the credential-free metrics and health listener listens;
    /// None: no such listener (`/metrics` is then on the main listener only, for auditors).
    pub metrics_bind: Option<String>,
    /// Continuous verification: rows written since the last round, and the whole log (None:
    /// off).
    pub verify_interval: Option<Duration>,
    pub verify_full_interval: Option<Duration>,
}

/// A bulk request may be this many times the single-event body limit.
pub const BULK_BODY_FACTOR: usize = 16;

/// How long `POST /api/v1/verify` and `GET /api/v1/export` may run.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(600);

impl Default for ServerConfig {
    fn default() -> Self {
        let batched = BatchedConfig::default();
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            device: DeviceKind::Sequential,
            max_body_bytes: 1024 * 1024,
            // Twice the default body, so no event the default body limit lets in is refused
            // unless its encoding grows it (docs/API.md "Limits").
            max_event_bytes: 2 * 1024 * 1024,
            batch_size: batched.max_batch,
            batch_max_wait: batched.max_wait,
            queue_capacity: batched.queue,
            max_followers: 3,
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            metrics_bind: None,
            verify_interval: Some(Duration::from_secs(300)),
            verify_full_interval: Some(Duration::from_secs(86_400)),
        }
    }
}

/// An interval in seconds where 0 turns the thing off.
fn every(v: Option<u64>, d: Option<Duration>) -> Option<Duration> {
    match v {
        Some(0) => None,
        Some(s) => Some(Duration::from_secs(s)),
        None => d,
    }
}

impl ServerConfig {
    /// The file's `[server]` (with the environment and `--set` applied), defaults for what it
    /// leaves out. Counts and times are at least 1.
    pub fn from_section(s: &ServerSection) -> Self {
        let d = ServerConfig::default();
        let secs = |v: Option<u64>, d: Duration| v.map_or(d, |s| Duration::from_secs(s.max(1)));
        ServerConfig {
            bind: s.bind.clone().unwrap_or(d.bind),
            device: s.device.unwrap_or(d.device),
            max_body_bytes: s.max_body_bytes.unwrap_or(d.max_body_bytes).max(1),
            max_event_bytes: s.max_event_bytes.unwrap_or(d.max_event_bytes).max(1),
            batch_size: s.batch_size.unwrap_or(d.batch_size).max(1),
            batch_max_wait: s
                .batch_max_wait_ms
                .map_or(d.batch_max_wait, Duration::from_millis),
            queue_capacity: s.queue_capacity.unwrap_or(d.queue_capacity).max(1),
            max_followers: s.max_followers.unwrap_or(d.max_followers),
            max_connections: s.max_connections.unwrap_or(d.max_connections).max(1),
            header_timeout: secs(s.header_timeout_secs, d.header_timeout),
            send_timeout: secs(s.send_timeout_secs, d.send_timeout),
            request_timeout: secs(s.request_timeout_secs, d.request_timeout),
            metrics_bind: s.metrics_bind.clone().or(d.metrics_bind),
            verify_interval: every(s.verify_interval_secs, d.verify_interval),
            verify_full_interval: every(s.verify_full_interval_secs, d.verify_full_interval),
        }
    }

    /// The batched device's settings.
    pub fn batched(&self) -> BatchedConfig {
        BatchedConfig {
            max_batch: self.batch_size,
            max_wait: self.batch_max_wait,
            queue: self.queue_capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_is_the_default_and_zero_counts_become_one() {
        assert_eq!(
            ServerConfig::from_section(&ServerSection::default()),
            ServerConfig::default()
        );
        let s = ServerSection {
            batch_size: Some(0),
            queue_capacity: Some(0),
            request_timeout_secs: Some(0),
            bind: Some(":9000".into()),
            ..Default::default()
        };
        let c = ServerConfig::from_section(&s);
        assert_eq!((c.batch_size, c.queue_capacity), (1, 1));
        assert_eq!(c.request_timeout, Duration::from_secs(1));
        assert_eq!(c.bind, ":9000");
    }
}
