//! Configuration shared by both binaries: built-in defaults, then a TOML file, then environment
//! variables (`AUDITSEAL_*`), then command-line flags (the binaries apply the last two with clap).
//! `conf/auditseal.toml` is the commented sample; docs/OPERATIONS.md describes every key.

mod keys;
mod paths;
mod protection;
mod resolve;
pub(crate) mod signserver;

pub use keys::{KeyInfo, KeyMode, KeySetup, load_keys};
pub use protection::{
    EvidenceSetting, KeyEntry, ProtectionSection, SecretEncoding, SignatureAlgorithm,
    TokenAlgorithm,
};
pub use resolve::{Overrides, SERVER_ENV_PREFIX, Settings};

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::crypto::token::TokenError;

/// The file form. Unknown keys are errors, not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    /// A read-only PostgreSQL (a hot standby of `database_url`) for the auditors' reads
    /// (docs/OPERATIONS.md "Reads from a standby").
    pub database_read_url: Option<String>,
    pub node_id: Option<String>,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    #[serde(default)]
    pub auth: AuthSection,
    /// `[[forward]]`: every stored event copied to a SIEM (docs/OPERATIONS.md "Forwarding").
    #[serde(default)]
    pub forward: Vec<ForwardSection>,
    /// None: the defaults, or the keys of a SignServer configuration (`--signserver-conf`).
    pub protection: Option<ProtectionSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub bind: Option<String>,
    pub max_body_bytes: Option<usize>,
    /// Most bytes one event may take as stored (its columns, additionalDetails as XML); a bulk
    /// request may store 16 times this in all.
    pub max_event_bytes: Option<usize>,
    /// `sequential` (default) or `batched`.
    pub device: Option<DeviceKind>,
    /// Batched device: most events per batch (default 1000).
    pub batch_size: Option<usize>,
    /// Batched device: longest wait for more events, in milliseconds (default 2).
    pub batch_max_wait_ms: Option<u64>,
    /// Batched device: most events waiting before requests get 503 (default 20000).
    pub queue_capacity: Option<usize>,
    /// Most live followers (`GET /api/v1/events/stream`) at once (default 3).
    pub max_followers: Option<usize>,
    /// Most connections at once (default 512); when full, the one idle longest is closed for a
    /// new client, and when all are busy more wait unaccepted.
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request's headers, and the longest a connection may have
    /// no request in progress (default 10).
    pub header_timeout_secs: Option<u64>,
    /// Seconds a connection may go without the client taking any of the response it is sent
    /// (default 60); then it is dropped.
    pub send_timeout_secs: Option<u64>,
    /// Seconds a request may take, body included (default 30; verify, export and live follow
    /// have their own).
    pub request_timeout_secs: Option<u64>,
    /// Serve HTTPS instead of HTTP (and optionally ask for client certificates).
    pub tls: Option<TlsSection>,
    /// A second, plain-HTTP listener serving only `/metrics`, `/livez` and `/readyz` without
    /// credentials, for Prometheus (default: none).
    pub metrics_bind: Option<String>,
    /// Seconds between rounds of continuous verification of the rows written since the last
    /// round, every node (default 300; 0: off).
    pub verify_interval_secs: Option<u64>,
    /// Seconds between verifications of the whole log, every node from its start (default
    /// 86400; 0: off).
    pub verify_full_interval_secs: Option<u64>,
}

/// HTTPS (rustls). Relative paths: from the configuration file's directory (config/paths.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The server's certificate chain, PEM, its own certificate first.
    pub cert_file: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to. When set, clients may
    /// authenticate with a certificate whose subject `[[auth.clients]]` maps to a role;
    /// clients without one can still use a token.
    pub client_ca_file: Option<PathBuf>,
}

/// Who may use the API besides API tokens (which live in the database).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Client certificate subjects and their roles (needs `server.tls.client_ca_file`).
    #[serde(default)]
    pub clients: Vec<ClientRole>,
}

/// One client certificate subject DN, e.g. `CN=Auditor One,O=Example,C=SE`, and its role.
/// Compared after `access::normalize_dn`, so spacing and the case of attribute names do not
/// matter; the order of the RDNs does (most specific first, as SignServer writes them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRole {
    pub subject: String,
    pub role: crate::format::api_token::Role,
}

/// Signed checkpoints of the node's head hash (docs/FORMAT.md section 7).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Seconds between checkpoints (default 60; 0 turns them off).
    pub interval_secs: Option<u64>,
    /// Also append each checkpoint to this file, one JSON line each (relative: from the
    /// configuration file's directory).
    pub file: Option<PathBuf>,
    /// Also send each checkpoint to a syslog receiver (`[checkpoint.syslog]`), or, written as a
    /// path, to a local syslog socket in the old BSD format.
    pub syslog: Option<SyslogSetting>,
    /// Also POST each checkpoint to an HTTP witness.
    pub witness: Option<WitnessSection>,
    /// Most checkpoints kept for a receiver that does not answer (default 10000); past it the
    /// oldest is dropped with an ALERT.
    pub backlog_max: Option<usize>,
}

/// Default `checkpoint.backlog_max`: about a week of checkpoints at the default interval.
pub const DEFAULT_BACKLOG_MAX: usize = 10_000;

/// `checkpoint.syslog`: a table for a remote receiver, or (the older form) a socket path.
#[derive(Debug, Clone)]
pub enum SyslogSetting {
    /// `syslog = "/dev/log"`: a local datagram socket, RFC 3164 format (kept for existing
    /// configurations; the copy stays on this host).
    Socket(PathBuf),
    Remote(SyslogSection),
}

impl<'de> Deserialize<'de> for SyslogSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SyslogSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a table [checkpoint.syslog] with address = \"host:port\", or a socket path",
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SyslogSetting, E> {
                Ok(SyslogSetting::Socket(PathBuf::from(s)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<SyslogSetting, A::Error> {
                // Through serde's own map deserializer, so unknown keys are still named.
                SyslogSection::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(SyslogSetting::Remote)
            }
        }
        d.deserialize_any(V)
    }
}

/// A syslog receiver: RFC 5424 over TCP or TLS, octet-counted (docs/FORMAT.md section 7.3).
/// Relative paths: from the configuration file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSection {
    /// `host:port` of the receiver.
    pub address: String,
    /// `tcp` (default) or `tls`.
    #[serde(default)]
    pub transport: SyslogTransport,
    /// TLS: CA certificates (PEM) the receiver's certificate must chain to (required).
    pub ca_file: Option<PathBuf>,
    /// TLS: this server's client certificate chain and key (PEM), for a receiver that asks.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// TLS: the name the receiver's certificate must carry [default: the address's host].
    pub server_name: Option<String>,
    /// The messages' APP-NAME [default: auditseal].
    pub app_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyslogTransport {
    #[default]
    Tcp,
    Tls,
}

/// An HTTP witness that stores each checkpoint POSTed to it (docs/FORMAT.md section 7.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessSection {
    /// `http://` or `https://` URL each checkpoint is POSTed to.
    pub url: String,
    /// https: CA certificates (PEM) the witness's certificate must chain to, instead of the
    /// system's (relative: from the configuration file's directory).
    pub ca_file: Option<PathBuf>,
}

/// One `[[forward]]` sink: where every event this server's node stores is copied after its
/// commit (docs/FORMAT.md section 12). A syslog receiver (`address`) or a file (`file`), never
/// both. Relative paths: from the configuration file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSection {
    /// The sink's name (1 to 64 of `A-Z a-z 0-9 . _ -`), unique: its position in the database
    /// is kept under it, so renaming a sink starts it afresh.
    pub name: String,
    /// Syslog: `host:port` of the receiver.
    pub address: Option<String>,
    /// Syslog: `tcp` (default), `tls` or `udp`.
    pub transport: Option<ForwardTransport>,
    /// Syslog over TLS: CA certificates (PEM) the receiver's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Syslog over TLS: a client certificate chain and key (PEM), for a receiver that asks.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Syslog over TLS: the name the receiver's certificate must carry [default: the host].
    pub server_name: Option<String>,
    /// Syslog: the messages' APP-NAME [default: auditseal].
    pub app_name: Option<String>,
    /// Syslog: the SD-ID of the element carrying node, sequence number, pk and rowProtection
    /// [default: auditseal@32473].
    pub sd_id: Option<String>,
    /// A file the events are appended to, one line each (reopened at SIGHUP, for logrotate).
    pub file: Option<PathBuf>,
    /// `json` (default: the row as a JSON object) or `log4j` (SignServer's Log4j device line).
    pub format: Option<ForwardFormat>,
    /// A new sink (no position in the database yet) starts with the events stored from `now`
    /// on (default), or from the `beginning` of the node's log.
    pub start: Option<ForwardStart>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardTransport {
    Tcp,
    Tls,
    Udp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardFormat {
    #[default]
    Json,
    Log4j,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardStart {
    #[default]
    Now,
    Beginning,
}

/// Default seconds between checkpoints.
pub const DEFAULT_CHECKPOINT_SECS: u64 = 60;

/// Which log device writes the node's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Sequential,
    Batched,
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sequential" => Ok(DeviceKind::Sequential),
            "batched" => Ok(DeviceKind::Batched),
            other => Err(format!("unknown device {other:?}: sequential or batched")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("key keyid={keyid}: {reason}")]
    Key { keyid: i32, reason: String },
    #[error("key keyid={keyid}: {source}")]
    Token { keyid: i32, source: TokenError },
    #[error("{0}")]
    Invalid(String),
}

impl FileConfig {
    /// Reads a TOML file; a missing file is an error (it was named explicitly).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// The node id when none is configured: the host name, as CESeCore's `cluster.nodeid` default.
pub fn default_node_id() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The embedded default database: a SQLite file in the data directory.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("auditseal.db").display())
}
#[cfg(test)]
mod tests;
