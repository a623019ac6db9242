//! `[protection]`: whether rows are protected and verified, and the keys (each key's kind, where
//! its secret is, the nodes it may protect).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::crypto::keys::{EvidenceKeys, KeyPolicy};
use crate::crypto::token::Algorithm;

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
