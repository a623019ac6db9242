//! Configuration shared by both binaries: built-in defaults, then a TOML file, then environment
//! variables (`AUDITSEAL_*`), then command-line flags (the binaries apply the last two with clap).
//! `conf/auditseal.toml` is the commented sample; docs/OPERATIONS.md describes every key.

mod keys;
mod paths;

pub use keys::{KeyInfo, KeyMode, KeySetup, load_keys};
pub(crate) mod signserver;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::crypto::keys::{EvidenceKeys, KeyPolicy, KeyRing, VerifyKey};
use crate::crypto::pkcs11::{Pkcs11Config, Pkcs11Token, SlotSelector};
use crate::crypto::token::{Algorithm, HmacToken, SharedToken, SoftwareToken, TokenError};

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
    pub role: crate::access::Role,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectionSection {
    /// Protect new rows (CESeCore `enablesign`).
    #[serde(default = "yes")]
    pub enable_sign: bool,
    /// Verify rows when they are read (CESeCore `enableverify`).
    #[serde(default = "yes")]
    pub enable_verify: bool,
    /// A failed row fails the whole query (CESeCore `erroronverifyfail`).
    #[serde(default = "yes")]
    pub error_on_verify_fail: bool,
    /// The keyid that protects new rows; default: the first key listed.
    pub keyid: Option<i32>,
    /// Which keys may protect batch statements, checkpoints, archive files and exports:
    /// "any" (default; an HMAC key is reported) or "asymmetric" (signature keys only).
    #[serde(default)]
    pub evidence: EvidenceSetting,
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

fn yes() -> bool {
    true
}

/// `protection.evidence`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceSetting {
    #[default]
    Any,
    Asymmetric,
}

impl From<EvidenceSetting> for EvidenceKeys {
    fn from(e: EvidenceSetting) -> Self {
        match e {
            EvidenceSetting::Any => EvidenceKeys::Any,
            EvidenceSetting::Asymmetric => EvidenceKeys::Asymmetric,
        }
    }
}

impl Default for ProtectionSection {
    fn default() -> Self {
        ProtectionSection {
            enable_sign: true,
            enable_verify: true,
            error_on_verify_fail: true,
            keyid: None,
            evidence: EvidenceSetting::Any,
            keys: Vec::new(),
        }
    }
}

/// One configured key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum KeyEntry {
    /// A PKCS#8 PEM private key file (RSA or EC P-256); generated (RSA-2048) when missing.
    Software {
        keyid: i32,
        /// The nodes this key may protect (exact ids, or a prefix and `*`); default: every node.
        #[serde(default)]
        nodes: Option<Vec<String>>,
        /// A retired key: per node, the last sequence number it protected there.
        #[serde(default)]
        retired_after: Option<BTreeMap<String, i64>>,
        /// Relative: from the configuration file's directory. Default: `signing-key.pem` in
        /// the data directory.
        file: Option<PathBuf>,
    },
    /// An HMAC-SHA256 secret (protection version 1), from exactly one of the three sources.
    Hmac {
        keyid: i32,
        /// The nodes this key may protect (exact ids, or a prefix and `*`); default: every node.
        #[serde(default)]
        nodes: Option<Vec<String>>,
        /// A retired key: per node, the last sequence number it protected there.
        #[serde(default)]
        retired_after: Option<BTreeMap<String, i64>>,
        secret: Option<String>,
        /// Read as raw bytes, nothing trimmed.
        secret_file: Option<PathBuf>,
        secret_env: Option<String>,
        /// How the secret is written: `raw` (its bytes, the default), `hex` or `base64`.
        #[serde(default)]
        secret_encoding: SecretEncoding,
    },
    /// A verify-only public key, e.g. a retired key: a PEM `PUBLIC KEY` (SubjectPublicKeyInfo)
    /// or `CERTIFICATE`, from exactly one of `file` (relative: from the configuration file's
    /// directory) or `pem`.
    Public {
        keyid: i32,
        /// The nodes this key may protect (exact ids, or a prefix and `*`); default: every node.
        #[serde(default)]
        nodes: Option<Vec<String>>,
        /// A retired key: per node, the last sequence number it protected there.
        #[serde(default)]
        retired_after: Option<BTreeMap<String, i64>>,
        /// Default: from the key itself (RSA -> SHA256WithRSA, EC -> SHA256WithECDSA).
        algorithm: Option<SignatureAlgorithm>,
        file: Option<PathBuf>,
        pem: Option<String>,
    },
    /// A key in a PKCS#11 token (an HSM, or SoftHSM2).
    Pkcs11 {
        keyid: i32,
        /// The nodes this key may protect (exact ids, or a prefix and `*`); default: every node.
        #[serde(default)]
        nodes: Option<Vec<String>>,
        /// A retired key: per node, the last sequence number it protected there.
        #[serde(default)]
        retired_after: Option<BTreeMap<String, i64>>,
        /// The PKCS#11 module (shared library), e.g. /usr/lib/softhsm/libsofthsm2.so.
        library: PathBuf,
        /// The token: exactly one of its label, its slot id, or its index in the slot list.
        slot_label: Option<String>,
        slot_number: Option<u64>,
        slot_index: Option<usize>,
        /// The key's CKA_LABEL, and optionally its CKA_ID (hex) when labels are not unique.
        key_label: String,
        key_id: Option<String>,
        /// The user PIN, from exactly one of these.
        pin: Option<String>,
        pin_env: Option<String>,
        pin_file: Option<PathBuf>,
        /// Default: from the key type (RSA, EC, or a generic secret -> HmacSHA256).
        algorithm: Option<TokenAlgorithm>,
        /// Logged-in sessions kept open for signing (default 4).
        sessions: Option<usize>,
    },
}

/// How an HMAC secret is written where it is configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretEncoding {
    /// The bytes as they are (a file's every byte; a value's or variable's UTF-8).
    #[default]
    Raw,
    /// Hexadecimal digits (white space ignored): any byte, NUL and newlines included.
    Hex,
    /// Standard base64 with padding (white space ignored).
    Base64,
}

/// The signature algorithms a public key may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SignatureAlgorithm {
    SHA256WithRSA,
    SHA384WithRSA,
    SHA512WithRSA,
    SHA256WithECDSA,
    SHA384WithECDSA,
}

impl SignatureAlgorithm {
    /// None for HmacSHA256, which is not a signature.
    pub fn from_algorithm(a: Algorithm) -> Option<Self> {
        Some(match a {
            Algorithm::HmacSha256 => return None,
            Algorithm::Sha256WithRsa => SignatureAlgorithm::SHA256WithRSA,
            Algorithm::Sha384WithRsa => SignatureAlgorithm::SHA384WithRSA,
            Algorithm::Sha512WithRsa => SignatureAlgorithm::SHA512WithRSA,
            Algorithm::Sha256WithEcdsa => SignatureAlgorithm::SHA256WithECDSA,
            Algorithm::Sha384WithEcdsa => SignatureAlgorithm::SHA384WithECDSA,
        })
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            SignatureAlgorithm::SHA256WithRSA => Algorithm::Sha256WithRsa,
            SignatureAlgorithm::SHA384WithRSA => Algorithm::Sha384WithRsa,
            SignatureAlgorithm::SHA512WithRSA => Algorithm::Sha512WithRsa,
            SignatureAlgorithm::SHA256WithECDSA => Algorithm::Sha256WithEcdsa,
            SignatureAlgorithm::SHA384WithECDSA => Algorithm::Sha384WithEcdsa,
        }
    }
}

/// What a PKCS#11 key may protect rows with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TokenAlgorithm {
    SHA256WithRSA,
    SHA384WithRSA,
    SHA512WithRSA,
    SHA256WithECDSA,
    SHA384WithECDSA,
    HmacSHA256,
}

impl TokenAlgorithm {
    pub fn from_algorithm(a: Algorithm) -> Self {
        SignatureAlgorithm::from_algorithm(a).map_or(TokenAlgorithm::HmacSHA256, |s| match s {
            SignatureAlgorithm::SHA256WithRSA => TokenAlgorithm::SHA256WithRSA,
            SignatureAlgorithm::SHA384WithRSA => TokenAlgorithm::SHA384WithRSA,
            SignatureAlgorithm::SHA512WithRSA => TokenAlgorithm::SHA512WithRSA,
            SignatureAlgorithm::SHA256WithECDSA => TokenAlgorithm::SHA256WithECDSA,
            SignatureAlgorithm::SHA384WithECDSA => TokenAlgorithm::SHA384WithECDSA,
        })
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            TokenAlgorithm::SHA256WithRSA => Algorithm::Sha256WithRsa,
            TokenAlgorithm::SHA384WithRSA => Algorithm::Sha384WithRsa,
            TokenAlgorithm::SHA512WithRSA => Algorithm::Sha512WithRsa,
            TokenAlgorithm::SHA256WithECDSA => Algorithm::Sha256WithEcdsa,
            TokenAlgorithm::SHA384WithECDSA => Algorithm::Sha384WithEcdsa,
            TokenAlgorithm::HmacSHA256 => Algorithm::HmacSha256,
        }
    }
}

impl KeyEntry {
    pub fn keyid(&self) -> i32 {
        match self {
            KeyEntry::Software { keyid, .. }
            | KeyEntry::Hmac { keyid, .. }
            | KeyEntry::Public { keyid, .. }
            | KeyEntry::Pkcs11 { keyid, .. } => *keyid,
        }
    }

    /// What the key may protect (docs/FORMAT.md section 11), checked: node patterns are not
    /// empty and have `*` only at the end; retired limits are not below -1.
    pub fn policy(&self) -> Result<KeyPolicy, ConfigError> {
        let (nodes, retired_after) = match self {
            KeyEntry::Software {
                nodes,
                retired_after,
                ..
            }
            | KeyEntry::Hmac {
                nodes,
                retired_after,
                ..
            }
            | KeyEntry::Public {
                nodes,
                retired_after,
                ..
            }
            | KeyEntry::Pkcs11 {
                nodes,
                retired_after,
                ..
            } => (nodes, retired_after),
        };
        let err = |reason: String| ConfigError::Key {
            keyid: self.keyid(),
            reason,
        };
        for n in nodes.iter().flatten() {
            let body = n.strip_suffix('*').unwrap_or(n);
            if n.is_empty() || body.contains('*') {
                return Err(err(format!(
                    "nodes: {n:?} is neither a node id nor a prefix followed by one `*`"
                )));
            }
        }
        if let Some(nodes) = nodes
            && nodes.is_empty()
        {
            return Err(err(
                "nodes = [] lets the key protect nothing: list its nodes, or leave nodes out for \
                 every node"
                    .into(),
            ));
        }
        for (node, seq) in retired_after.iter().flatten() {
            if *seq < -1 {
                return Err(err(format!(
                    "retired_after: node {node:?} at {seq}: a sequence number, or -1 for nothing"
                )));
            }
        }
        Ok(KeyPolicy {
            nodes: nodes.clone(),
            retired_after: retired_after.clone(),
        })
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
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_reported() {
        let e = toml::from_str::<FileConfig>("data_dri = 'x'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("data_dri"), "{e}");
    }

    #[test]
    fn checkpoint_syslog_is_a_socket_path_or_a_table_whose_typos_are_named() {
        let c: FileConfig = toml::from_str("[checkpoint]\nsyslog = '/dev/log'\n").unwrap();
        assert!(
            matches!(c.checkpoint.syslog, Some(SyslogSetting::Socket(p)) if p == Path::new("/dev/log"))
        );
        let c: FileConfig = toml::from_str(
            "[checkpoint.syslog]\naddress = 'logs:6514'\ntransport = 'tls'\nca_file = 'ca.pem'\n\
             [checkpoint.witness]\nurl = 'https://w/x'\n",
        )
        .unwrap();
        match c.checkpoint.syslog {
            Some(SyslogSetting::Remote(s)) => {
                assert_eq!(
                    (s.address.as_str(), s.transport),
                    ("logs:6514", SyslogTransport::Tls)
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.checkpoint.witness.unwrap().url, "https://w/x");
        let e = toml::from_str::<FileConfig>("[checkpoint.syslog]\naddres = 'logs:514'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("addres"), "{e}");
        let e = toml::from_str::<FileConfig>(
            "[checkpoint.syslog]\naddress = 'logs:514'\ntransport = 'udp'\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("udp"), "{e}");
    }

    #[test]
    fn default_is_a_generated_software_key_and_hmac_from_env_works() {
        let dir = tempfile::tempdir().unwrap();
        let (setup, generated) =
            load_keys(&ProtectionSection::default(), dir.path(), KeyMode::Server).unwrap();
        assert_eq!(generated.len(), 1);
        assert_eq!(setup.current.as_ref().unwrap().keyid(), 1);
        assert!(setup.listing[0].public_key_pem.is_some());

        let cfg: FileConfig = toml::from_str(
            "[protection]\nkeyid = 5\n[[protection.keys]]\nkind = 'hmac'\nkeyid = 5\nsecret = 'foo123'\n\
             [[protection.keys]]\nkind = 'software'\nkeyid = 1\n",
        )
        .unwrap();
        let (setup, generated) = load_keys(
            &cfg.protection.unwrap_or_default(),
            dir.path(),
            KeyMode::VerifyOnly,
        )
        .unwrap();
        assert!(generated.is_empty());
        let cur = setup.current.unwrap();
        assert_eq!((cur.keyid(), cur.algorithm()), (5, Algorithm::HmacSha256));
        assert!(setup.ring.get(1).is_some());
    }

    #[test]
    fn server_keys_come_from_file_then_environment_then_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(
            &file,
            "[server]\nbatch_size = 10\nqueue_capacity = 7\nbind = 'x:1'\n",
        )
        .unwrap();
        let env = || {
            vec![
                ("AUDITSEAL_SERVER_BATCH_SIZE".to_string(), "20".to_string()),
                (
                    "AUDITSEAL_SERVER_BIND".to_string(),
                    "0.0.0.0:9000".to_string(),
                ),
                ("PATH".to_string(), "/bin".to_string()),
            ]
        };
        let o = |sets: &[&str]| Overrides {
            config: Some(file.clone()),
            data_dir: Some(dir.path().to_path_buf()),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let s = Settings::resolve_with_env(o(&[]), env()).unwrap();
        let srv = &s.file.server;
        assert_eq!((srv.batch_size, srv.queue_capacity), (Some(20), Some(7)));
        assert_eq!(srv.bind.as_deref(), Some("0.0.0.0:9000"));
        let s = Settings::resolve_with_env(
            o(&[
                "server.batch_size=30",
                "server.device=batched",
                "checkpoint.interval_secs=5",
            ]),
            env(),
        )
        .unwrap();
        assert_eq!(s.file.server.batch_size, Some(30));
        assert_eq!(s.file.server.device, Some(DeviceKind::Batched));
        assert_eq!(s.file.checkpoint.interval_secs, Some(5));
        // A typo is named, wherever it comes from.
        let typo = vec![("AUDITSEAL_SERVER_BATCH_SIZ".to_string(), "1".to_string())];
        let e = Settings::resolve_with_env(o(&[]), typo)
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_siz") && e.contains("environment"), "{e}");
        let e = Settings::resolve_with_env(o(&["server.batch_size"]), env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("KEY=VALUE"), "{e}");
        let e = Settings::resolve_with_env(o(&["server.batch_size=many"]), env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_size") || e.contains("many"), "{e}");
    }

    #[test]
    fn hmac_secrets_are_bytes_raw_hex_or_base64() {
        let dir = tempfile::tempdir().unwrap();
        // A key with bytes that are not UTF-8 and one ending in a newline, kept as they are.
        let key: Vec<u8> = (0xe0..=0xff).chain([0x00, 0x0a]).collect();
        std::fs::write(dir.path().join("raw.key"), &key).unwrap();
        std::fs::write(
            dir.path().join("hex.key"),
            format!("{}\n", hex::encode(&key)),
        )
        .unwrap();
        let data = b"protect me";
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
            data,
        );
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&key);
        for entry in [
            "secret_file = 'raw.key'".to_string(),
            "secret_file = 'hex.key'\nsecret_encoding = 'hex'".to_string(),
            format!("secret = '{b64}'\nsecret_encoding = 'base64'"),
        ] {
            let cfg: FileConfig = toml::from_str(&format!(
                "[[protection.keys]]\nkind = 'hmac'\nkeyid = 7\n{entry}\n"
            ))
            .unwrap();
            let (setup, _) =
                load_keys(&cfg.protection.unwrap(), dir.path(), KeyMode::VerifyOnly).unwrap();
            let k = setup.ring.get(7).unwrap();
            assert_eq!(k.verify(data, mac.as_ref()), Ok(()), "{entry}");
        }
        let cfg: FileConfig = toml::from_str(
            "[[protection.keys]]\nkind = 'hmac'\nkeyid = 7\nsecret = 'zz'\nsecret_encoding = 'hex'\n",
        )
        .unwrap();
        let e = load_keys(&cfg.protection.unwrap(), dir.path(), KeyMode::VerifyOnly)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not hex"), "{e}");
        let cfg: FileConfig = toml::from_str(
            "[[protection.keys]]\nkind = 'hmac'\nkeyid = 7\nsecret = 'a'\nsecret_file = 'raw.key'\n",
        )
        .unwrap();
        let e = load_keys(&cfg.protection.unwrap(), dir.path(), KeyMode::VerifyOnly)
            .err()
            .unwrap();
        assert!(e.to_string().contains("exactly one"), "{e}");
    }

    #[test]
    fn no_key_is_generated_when_signing_is_off() {
        let dir = tempfile::tempdir().unwrap();
        let off = ProtectionSection {
            enable_sign: false,
            ..Default::default()
        };
        let (setup, generated) = load_keys(&off, dir.path(), KeyMode::Server).unwrap();
        assert!(generated.is_empty() && setup.current.is_none() && setup.ring.is_empty());
        assert!(!dir.path().join("signing-key.pem").exists());
        // An existing key still verifies.
        load_keys(&ProtectionSection::default(), dir.path(), KeyMode::Server).unwrap();
        let (setup, _) = load_keys(&off, dir.path(), KeyMode::Server).unwrap();
        assert!(setup.current.is_none() && setup.ring.get(1).is_some());
    }

    #[test]
    fn verifying_needs_no_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        let (setup, generated) =
            load_keys(&ProtectionSection::default(), dir.path(), KeyMode::Server).unwrap();
        assert_eq!(generated[0].0, 1);
        let pem = setup.listing[0].public_key_pem.clone().unwrap();
        std::fs::write(dir.path().join("pub.pem"), pem).unwrap();
        // As CESeCore's database CLI is set up: the signing keyid, as a public key.
        let cfg: FileConfig =
            toml::from_str("[[protection.keys]]\nkind = 'public'\nkeyid = 1\nfile = 'pub.pem'\n")
                .unwrap();
        let p = cfg.protection.unwrap();
        let (setup, _) = load_keys(&p, dir.path(), KeyMode::VerifyOnly).unwrap();
        assert!(setup.current.is_none());
        assert!(setup.ring.get(1).is_some());
        let e = load_keys(&p, dir.path(), KeyMode::Server).err().unwrap();
        assert!(e.to_string().contains("verify-only"), "{e}");
    }

    #[test]
    fn bad_key_config_is_clear() {
        let dir = tempfile::tempdir().unwrap();
        let cfg: FileConfig =
            toml::from_str("[[protection.keys]]\nkind = 'hmac'\nkeyid = 2\n").unwrap();
        let e = load_keys(
            &cfg.protection.unwrap_or_default(),
            dir.path(),
            KeyMode::Server,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("keyid=2") && e.contains("exactly one"), "{e}");
        assert!(e.contains("HMAC secret"), "{e}");
        let cfg: FileConfig = toml::from_str("[protection]\nkeyid = 9\n").unwrap();
        let e = load_keys(
            &cfg.protection.unwrap_or_default(),
            dir.path(),
            KeyMode::Server,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains('9'), "{e}");
        assert!(
            !dir.path().join("signing-key.pem").exists(),
            "nothing generated on error"
        );
        // The CLI never generates keys.
        let e = load_keys(
            &ProtectionSection::default(),
            dir.path(),
            KeyMode::VerifyOnly,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("signing-key.pem"), "{e}");
    }
}

/// Values from the environment or the command line; each wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    /// A SignServer configuration directory (databaseprotection.properties, cesecore.properties).
    pub signserver_conf: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub database_read_url: Option<String>,
    pub node_id: Option<String>,
    /// `--set KEY=VALUE`: any key of the file, by its dotted path (`server.batch_size=500`),
    /// applied after the file and the environment, in order.
    pub sets: Vec<String>,
}

/// The prefix of environment variables that set `[server]` keys: `AUDITSEAL_SERVER_BATCH_SIZE`
/// sets `server.batch_size`.
pub const SERVER_ENV_PREFIX: &str = "AUDITSEAL_SERVER_";

/// Sets `path` (dotted: `server.batch_size`) in `table` to `value`, read as a TOML value when it
/// is one (`500`, `true`, `"x"`) and as a string otherwise (`0.0.0.0:8080`, `batched`).
fn set_key(table: &mut toml::Table, path: &str, value: &str) -> Result<(), String> {
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts
        .pop()
        .filter(|k| !k.is_empty())
        .ok_or("an empty key")?;
    let mut at = table;
    for p in parts {
        let entry = at
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p} is not a table"))?;
    }
    at.insert(last.to_string(), parsed);
    Ok(())
}

/// The file (or nothing), then `AUDITSEAL_SERVER_*` from `env`, then `sets`.
fn file_with_overrides(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<FileConfig, ConfigError> {
    let source = path.map_or_else(|| PathBuf::from("(no file)"), Path::to_path_buf);
    let err = |reason: String| ConfigError::File {
        path: source.clone(),
        reason,
    };
    let mut table: toml::Table = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| err(e.to_string()))?;
            toml::from_str(&text).map_err(|e| err(e.to_string()))?
        }
        None => toml::Table::new(),
    };
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(SERVER_ENV_PREFIX)?.to_ascii_lowercase();
            Some((format!("server.{key}"), v))
        })
        .collect();
    env.sort();
    for (key, value) in &env {
        set_key(&mut table, key, value).map_err(|e| {
            ConfigError::Invalid(format!("environment {}: {e}", key.to_uppercase()))
        })?;
    }
    for s in sets {
        let (key, value) = s.split_once('=').ok_or_else(|| {
            ConfigError::Invalid(format!(
                "--set {s:?}: expected KEY=VALUE, e.g. server.batch_size=500"
            ))
        })?;
        set_key(&mut table, key.trim(), value.trim())
            .map_err(|e| ConfigError::Invalid(format!("--set {s:?}: {e}")))?;
    }
    table.try_into().map_err(|e: toml::de::Error| {
        let from = if env.is_empty() && sets.is_empty() {
            String::new()
        } else {
            " (with the AUDITSEAL_SERVER_* environment and --set applied)".to_string()
        };
        err(format!("{e}{from}"))
    })
}

/// Where the data lives and which database and node this process uses.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    /// Whether `database_url` is the embedded default (the SQLite file in the data directory),
    /// the one database created by itself.
    pub database_is_default: bool,
    /// Where queries, exports and verification read (None: `database_url`).
    pub database_read_url: Option<String>,
    pub node_id: String,
    /// Keys and verification policy: from the TOML file, a SignServer configuration, or the
    /// defaults.
    pub protection: ProtectionSection,
    pub file: FileConfig,
}

impl Settings {
    /// Defaults < file < `AUDITSEAL_SERVER_*` environment < `--set` < the other overrides.
    pub fn resolve(o: Overrides) -> Result<Settings, ConfigError> {
        Self::resolve_with_env(o, std::env::vars())
    }

    /// `resolve` with the given environment (tests).
    pub fn resolve_with_env(
        o: Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut file = file_with_overrides(o.config.as_deref(), env, &o.sets)?;
        // The file's directory: its relative paths are read from there (config/paths.rs).
        let base = o
            .config
            .as_deref()
            .map(|c| c.parent().unwrap_or(Path::new("")).to_path_buf());
        let data_dir = o
            .data_dir
            .or_else(|| base.as_deref().and_then(|b| paths::data_dir(&file, b)))
            .unwrap_or_else(|| PathBuf::from("./data"));
        if let Some(base) = &base {
            paths::anchor(&mut file, base, &data_dir)?;
        }
        let (protection, signserver_node) = match (&o.signserver_conf, file.protection.take()) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "--signserver-conf and a [protection] section in the configuration file \
                     both configure keys; use one"
                        .into(),
                ));
            }
            (Some(dir), None) => {
                let ss = crate::config::signserver::load(dir)
                    .map_err(|e| ConfigError::Invalid(format!("SignServer configuration: {e}")))?;
                // Never fall back to a generated key behind an operator's SignServer settings.
                if ss.protection.keys.is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "SignServer configuration {}: no key entries (databaseprotection.keyid.0 ...)",
                        dir.display()
                    )));
                }
                (ss.protection, ss.node_id)
            }
            (None, p) => (p.unwrap_or_default(), None),
        };
        let database_url = o
            .database_url
            .or_else(|| file.database_url.clone())
            .unwrap_or_else(|| default_database_url(&data_dir));
        // Empty (e.g. `AUDITSEAL_DATABASE_READ_URL=`) means none: reads go to `database_url`.
        let database_read_url = o
            .database_read_url
            .or_else(|| file.database_read_url.clone())
            .filter(|u| !u.trim().is_empty());
        let node_id = o
            .node_id
            .or_else(|| file.node_id.clone())
            .or(signserver_node)
            .unwrap_or_else(default_node_id);
        if node_id.trim().is_empty() || node_id.contains('\0') {
            return Err(ConfigError::Invalid("the node id must not be empty".into()));
        }
        Ok(Settings {
            database_is_default: database_url == default_database_url(&data_dir),
            data_dir,
            database_url,
            database_read_url,
            node_id,
            protection,
            file,
        })
    }
}
