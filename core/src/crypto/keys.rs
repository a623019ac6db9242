//! Verification keys, chosen by the keyid written in each row (never by the current default),
//! so rows from before a key rollover keep verifying.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self, ParsedPublicKey};

use crate::crypto::algorithm::{Algorithm, TokenError};
use crate::format::pem;
use crate::format::protection::ProtectionVersion;

/// Something that can MAC data with a secret it never reveals (an HMAC key in an HSM).
pub trait MacOracle: Send + Sync {
    fn mac(&self, data: &[u8]) -> Result<Vec<u8>, TokenError>;
    /// The MAC of everything `data` yields, read in chunks.
    fn mac_reader(&self, data: &mut dyn Read) -> Result<Vec<u8>, TokenError>;
}

/// A key that checks protections: an HMAC secret, an HMAC key held in a token, or a parsed
/// public key.
#[derive(Clone)]
pub enum VerifyKey {
    Hmac(Box<hmac::Key>),
    TokenHmac(Arc<dyn MacOracle>),
    Public {
        algorithm: Algorithm,
        key: Arc<ParsedPublicKey>,
        spki_der: Arc<Vec<u8>>,
    },
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self {
            VerifyKey::Hmac(_) => f.write_str("VerifyKey::Hmac"),
            VerifyKey::TokenHmac(_) => f.write_str("VerifyKey::TokenHmac"),
            VerifyKey::Public { algorithm, .. } => write!(f, "VerifyKey::Public({algorithm})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a {0} public key (expected a SubjectPublicKeyInfo)")]
    BadPublicKey(Algorithm),
    #[error("an HMAC secret has no public key")]
    NotPublic,
    #[error("{0}")]
    Unreadable(&'static str),
}

/// Why a protection did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the MAC or signature does not match")]
    Mismatch,
    /// The key lives in a token that cannot be reached now: the row is not known to be bad.
    #[error("the verification key is unavailable: {0}")]
    Unavailable(String),
    /// The data to check could not be read (`verify_reader`).
    #[error("the data cannot be read: {0}")]
    Unreadable(String),
}

impl VerifyKey {
    /// A public key from its DER SubjectPublicKeyInfo: RSA for the RSA algorithms, EC P-256
    /// or P-384 for the ECDSA ones.
    pub fn from_spki(algorithm: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        use crate::format::der::{KeyType, spki_key_type};
        let ec = spki_key_type(der);
        let alg: &'static dyn signature::VerificationAlgorithm = match (algorithm, ec) {
            (Algorithm::HmacSha256, _) => return Err(KeyError::NotPublic),
            (Algorithm::Sha256WithRsa, _) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (Algorithm::Sha384WithRsa, _) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (Algorithm::Sha512WithRsa, _) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (Algorithm::Sha256WithEcdsa, Some(KeyType::EcP384)) => {
                &signature::ECDSA_P384_SHA256_ASN1
            }
            (Algorithm::Sha384WithEcdsa, Some(KeyType::EcP384)) => {
                &signature::ECDSA_P384_SHA384_ASN1
            }
            (Algorithm::Sha256WithEcdsa, _) => &signature::ECDSA_P256_SHA256_ASN1,
            (Algorithm::Sha384WithEcdsa, _) => &signature::ECDSA_P256_SHA384_ASN1,
        };
        let key = ParsedPublicKey::new(alg, der).map_err(|_| KeyError::BadPublicKey(algorithm))?;
        Ok(VerifyKey::Public {
            algorithm,
            key: Arc::new(key),
            spki_der: Arc::new(der.to_vec()),
        })
    }

    /// A public key from a `-----BEGIN PUBLIC KEY-----` PEM block.
    pub fn from_pem(algorithm: Algorithm, text: &str) -> Result<Self, KeyError> {
        let der = pem::decode("PUBLIC KEY", text).ok_or(KeyError::BadPublicKey(algorithm))?;
        Self::from_spki(algorithm, &der)
    }

    /// A public key from PEM text holding a `PUBLIC KEY` or a `CERTIFICATE`; the algorithm is
    /// the given one (of the key's kind), or else the SHA-256 one of the key's kind (RSA:
    /// SHA256WithRSA; EC P-256 or P-384: SHA256WithECDSA).
    pub fn from_public_pem(text: &str, algorithm: Option<Algorithm>) -> Result<Self, KeyError> {
        let cert;
        let spki = if let Some(der) = pem::decode("PUBLIC KEY", text) {
            der
        } else if let Some(der) = pem::decode("CERTIFICATE", text) {
            cert = der;
            crate::format::der::certificate_spki(&cert)
                .ok_or(KeyError::Unreadable("the certificate cannot be read"))?
                .to_vec()
        } else {
            return Err(KeyError::Unreadable(
                "expected a -----BEGIN PUBLIC KEY----- or -----BEGIN CERTIFICATE----- block",
            ));
        };
        let own = match crate::format::der::spki_key_type(&spki) {
            Some(crate::format::der::KeyType::Rsa) => Algorithm::Sha256WithRsa,
            Some(crate::format::der::KeyType::EcP256) => Algorithm::Sha256WithEcdsa,
            Some(crate::format::der::KeyType::EcP384) => Algorithm::Sha256WithEcdsa,
            _ => {
                return Err(KeyError::Unreadable(
                    "only RSA and EC P-256 or P-384 public keys are supported",
                ));
            }
        };
        let algorithm = algorithm.unwrap_or(own);
        if algorithm.key_kind() != own.key_kind() {
            return Err(KeyError::BadPublicKey(algorithm));
        }
        Self::from_spki(algorithm, &spki)
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            VerifyKey::Hmac(_) | VerifyKey::TokenHmac(_) => Algorithm::HmacSha256,
            VerifyKey::Public { algorithm, .. } => *algorithm,
        }
    }

    pub fn protection_version(&self) -> ProtectionVersion {
        self.algorithm().protection_version()
    }

    /// Checks a MAC (constant time) or a signature over `data`.
    pub fn verify(&self, data: &[u8], protection: &[u8]) -> Result<(), VerifyError> {
        match self {
            VerifyKey::Hmac(k) => {
                hmac::verify(k, data, protection).map_err(|_| VerifyError::Mismatch)
            }
            VerifyKey::TokenHmac(oracle) => {
                let mac = oracle
                    .mac(data)
                    .map_err(|e| VerifyError::Unavailable(e.to_string()))?;
                aws_lc_rs::constant_time::verify_slices_are_equal(&mac, protection)
                    .map_err(|_| VerifyError::Mismatch)
            }
            VerifyKey::Public { key, .. } => key
                .verify_sig(data, protection)
                .map_err(|_| VerifyError::Mismatch),
        }
    }

    /// `verify` over everything `data` yields (a file of any size), read once in chunks. A
    /// read error is `VerifyError::Unreadable`: nothing is known about the data.
    pub fn verify_reader(&self, data: &mut dyn Read, protection: &[u8]) -> Result<(), VerifyError> {
        let input = |e: TokenError| match e {
            TokenError::Input(e) => VerifyError::Unreadable(e.to_string()),
            e => VerifyError::Unavailable(e.to_string()),
        };
        match self {
            VerifyKey::Hmac(k) => {
                let mut ctx = hmac::Context::with_key(k);
                crate::crypto::algorithm::for_each_chunk(data, |c| {
                    ctx.update(c);
                    Ok(())
                })
                .map_err(input)?;
                aws_lc_rs::constant_time::verify_slices_are_equal(ctx.sign().as_ref(), protection)
                    .map_err(|_| VerifyError::Mismatch)
            }
            VerifyKey::TokenHmac(oracle) => {
                let mac = oracle.mac_reader(data).map_err(input)?;
                aws_lc_rs::constant_time::verify_slices_are_equal(&mac, protection)
                    .map_err(|_| VerifyError::Mismatch)
            }
            VerifyKey::Public { algorithm, .. } => {
                let digest = crate::crypto::algorithm::digest_reader(algorithm.digest(), data)
                    .map_err(input)?;
                self.verify_digest(&digest, protection)
            }
        }
    }

    /// Checks a signature given the `digest` of the signed data (what `sign_reader` signs, by
    /// the algorithm's digest); a MAC cannot be checked from a digest and is a mismatch.
    pub fn verify_digest(
        &self,
        digest: &aws_lc_rs::digest::Digest,
        protection: &[u8],
    ) -> Result<(), VerifyError> {
        match self {
            VerifyKey::Public { key, .. } => key
                .verify_digest_sig(digest, protection)
                .map_err(|_| VerifyError::Mismatch),
            VerifyKey::Hmac(_) | VerifyKey::TokenHmac(_) => Err(VerifyError::Mismatch),
        }
    }

    /// The public key as PEM, for auditors; None for an HMAC secret.
    pub fn public_key_pem(&self) -> Option<String> {
        match self {
            VerifyKey::Hmac(_) | VerifyKey::TokenHmac(_) => None,
            VerifyKey::Public { spki_der, .. } => Some(pem::encode("PUBLIC KEY", spki_der)),
        }
    }
}

/// What one key may protect: which nodes, and up to where (docs/FORMAT.md section 11). The
/// rows stay as CESeCore writes them; the policy lives around them, in the configuration of
/// every verifier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The nodes whose rows, batch statements and checkpoints the key may protect: exact node
    /// ids, or a prefix followed by `*`. None: every node.
    pub nodes: Option<Vec<String>>,
    /// A retired key: for each node, the last sequence number it protected there. It may
    /// protect nothing after that, and nothing at all on a node not listed. None: not retired.
    pub retired_after: Option<BTreeMap<String, i64>>,
}

impl KeyPolicy {
    /// Whether the key may protect what ends at sequence `seq` of `node`.
    pub fn allows(&self, keyid: i32, node: &str, seq: i64) -> Result<(), PolicyError> {
        if let Some(nodes) = &self.nodes
            && !nodes.iter().any(|p| node_matches(p, node))
        {
            return Err(PolicyError::Node {
                keyid,
                node: node.to_string(),
                allowed: nodes.join(", "),
            });
        }
        if let Some(retired) = &self.retired_after {
            match retired.get(node) {
                None => {
                    return Err(PolicyError::RetiredElsewhere {
                        keyid,
                        node: node.to_string(),
                    });
                }
                Some(&after) if seq > after => {
                    return Err(PolicyError::Retired {
                        keyid,
                        node: node.to_string(),
                        after,
                        seq,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Whether `node` matches a policy's node pattern: equal, or starting with what comes before a
/// final `*`.
pub fn node_matches(pattern: &str, node: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => node.starts_with(prefix),
        None => pattern == node,
    }
}

/// Which keys may protect what auditseal defines itself, beyond the rows: batch statements
/// (and so version 3 rows), checkpoints, archive markers, archive segments and exports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EvidenceKeys {
    /// Any key; an HMAC key is reported, since every verifier holds its secret.
    #[default]
    Any,
    /// Only signature keys (RSA, ECDSA): what an HMAC key protected there is an error.
    Asymmetric,
}

/// Why a key may not have protected something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("keyid {keyid} may protect only the nodes {allowed}, not node {node:?}")]
    Node {
        keyid: i32,
        node: String,
        allowed: String,
    },
    #[error(
        "keyid {keyid} was retired on node {node:?} after sequence {after}: it may not protect \
         sequence {seq}"
    )]
    Retired {
        keyid: i32,
        node: String,
        after: i64,
        seq: i64,
    },
    #[error("keyid {keyid} is retired and protected nothing on node {node:?}")]
    RetiredElsewhere { keyid: i32, node: String },
    #[error(
        "keyid {keyid} is an HMAC key, whose secret every verifier holds: anyone of them could \
         have made this (protection.evidence = \"asymmetric\")"
    )]
    Symmetric { keyid: i32 },
}

/// Where a detached MAC or signature belongs: to a position in a node's log (a batch statement,
/// a checkpoint, an archive marker: the last sequence number it covers), or to a file (an export,
/// an archive segment).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Node { node: &'a str, seq: i64 },
    File,
}

/// Every key a verifier knows, by keyid, with what each may protect.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<i32, VerifyKey>,
    policies: BTreeMap<i32, KeyPolicy>,
    evidence: EvidenceKeys,
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key that may protect anything; a second key with the same keyid replaces the
    /// first.
    pub fn insert(&mut self, keyid: i32, key: VerifyKey) {
        self.insert_with_policy(keyid, key, KeyPolicy::default());
    }

    /// Adds a key limited by `policy`.
    pub fn insert_with_policy(&mut self, keyid: i32, key: VerifyKey, policy: KeyPolicy) {
        self.keys.insert(keyid, key);
        self.policies.insert(keyid, policy);
    }

    pub fn set_evidence(&mut self, evidence: EvidenceKeys) {
        self.evidence = evidence;
    }

    pub fn evidence(&self) -> EvidenceKeys {
        self.evidence
    }

    pub fn policy(&self, keyid: i32) -> Option<&KeyPolicy> {
        self.policies.get(&keyid)
    }

    /// Whether keyid may protect what ends at sequence `seq` of `node` (its policy; a keyid
    /// with no key is not this check's concern).
    pub fn allows(&self, keyid: i32, node: &str, seq: i64) -> Result<(), PolicyError> {
        self.policies
            .get(&keyid)
            .map_or(Ok(()), |p| p.allows(keyid, node, seq))
    }

    pub fn get(&self, keyid: i32) -> Option<&VerifyKey> {
        self.keys.get(&keyid)
    }

    pub fn iter(&self) -> impl Iterator<Item = (i32, &VerifyKey)> {
        self.keys.iter().map(|(k, v)| (*k, v))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a detached MAC or signature in rowProtection's layout (a batch statement, a
    /// checkpoint, an export or archive file) over `data`, with the key its keyid names.
    pub fn verify_detached(
        &self,
        p: &crate::format::protection::RowProtection,
        scope: Scope<'_>,
        data: &[u8],
    ) -> Result<(), DetachedError> {
        self.detached_key(p, scope)?
            .verify(data, &p.value)
            .map_err(DetachedError::Verify)
    }

    /// `verify_detached` over everything `data` yields (a file of any size), read once in
    /// chunks.
    pub fn verify_detached_reader(
        &self,
        p: &crate::format::protection::RowProtection,
        scope: Scope<'_>,
        data: &mut dyn Read,
    ) -> Result<(), DetachedError> {
        self.detached_key(p, scope)?
            .verify_reader(data, &p.value)
            .map_err(DetachedError::Verify)
    }

    /// The key that checks a detached protection: the one its keyid names, of its kind, if its
    /// policy and the evidence setting let it protect what `scope` says.
    fn detached_key(
        &self,
        p: &crate::format::protection::RowProtection,
        scope: Scope<'_>,
    ) -> Result<&VerifyKey, DetachedError> {
        if p.version.is_batch() {
            return Err(DetachedError::Batch);
        }
        let key = self.get(p.keyid).ok_or(DetachedError::NoKey(p.keyid))?;
        if key.protection_version() != p.version {
            return Err(DetachedError::WrongKind {
                claimed: p.version.number(),
                keyid: p.keyid,
                algorithm: key.algorithm(),
            });
        }
        if self.evidence == EvidenceKeys::Asymmetric && key.algorithm() == Algorithm::HmacSha256 {
            return Err(DetachedError::Policy(PolicyError::Symmetric {
                keyid: p.keyid,
            }));
        }
        if let Scope::Node { node, seq } = scope {
            self.allows(p.keyid, node, seq)
                .map_err(DetachedError::Policy)?;
        }
        Ok(key)
    }
}

/// Why a detached MAC or signature does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetachedError {
    #[error("version 3 cannot protect a statement or a file")]
    Batch,
    #[error("no key is configured for keyid {0}")]
    NoKey(i32),
    #[error("it claims protection version {claimed} but keyid {keyid} is a {algorithm} key")]
    WrongKind {
        claimed: u32,
        keyid: i32,
        algorithm: Algorithm,
    },
    #[error("{0}")]
    Verify(VerifyError),
    #[error("{0}")]
    Policy(PolicyError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(nodes: Option<&[&str]>, retired: Option<&[(&str, i64)]>) -> KeyPolicy {
        KeyPolicy {
            nodes: nodes.map(|n| n.iter().map(|s| s.to_string()).collect()),
            retired_after: retired.map(|r| r.iter().map(|(n, s)| (n.to_string(), *s)).collect()),
        }
    }

    #[test]
    fn nodes_limit_where_a_key_may_protect() {
        let p = policy(Some(&["signserver-1", "node*"]), None);
        assert_eq!(p.allows(2, "signserver-1", 5), Ok(()));
        assert_eq!(p.allows(2, "node7-db", 5), Ok(()));
        let e = p.allows(2, "signserver-2", 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "keyid 2 may protect only the nodes signserver-1, node*, not node \"signserver-2\""
        );
        assert!(p.allows(2, "nod", 0).is_err());
        assert_eq!(KeyPolicy::default().allows(2, "anything", i64::MAX), Ok(()));
    }

    #[test]
    fn a_retired_key_protects_nothing_after_its_limit() {
        let p = policy(None, Some(&[("a", 41), ("b", -1)]));
        assert_eq!(p.allows(0, "a", 41), Ok(()));
        assert_eq!(
            p.allows(0, "a", 42).unwrap_err().to_string(),
            "keyid 0 was retired on node \"a\" after sequence 41: it may not protect sequence 42"
        );
        assert!(p.allows(0, "b", 0).is_err());
        assert!(matches!(
            p.allows(0, "c", 0),
            Err(PolicyError::RetiredElsewhere { .. })
        ));
    }

    #[test]
    fn asymmetric_evidence_refuses_hmac_keys_for_detached_protections() {
        use crate::format::protection::RowProtection;
        let secret = b"0123456789abcdef0123456789abcdef";
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let data = b"statement";
        let mac = hmac::sign(&key, data);
        let p = RowProtection::parse(&format!("1:1:2:{}", hex::encode(mac.as_ref()))).unwrap();
        let mut ring = KeyRing::new();
        ring.insert(2, VerifyKey::Hmac(Box::new(key)));
        let at = Scope::Node { node: "a", seq: 3 };
        assert_eq!(ring.verify_detached(&p, at, data), Ok(()));
        ring.set_evidence(EvidenceKeys::Asymmetric);
        assert_eq!(
            ring.verify_detached(&p, at, data),
            Err(DetachedError::Policy(PolicyError::Symmetric { keyid: 2 }))
        );
        // The policy of the key applies to what sits in a node's log, not to files.
        ring.set_evidence(EvidenceKeys::Any);
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        ring.insert_with_policy(
            2,
            VerifyKey::Hmac(Box::new(key)),
            policy(Some(&["b"]), None),
        );
        assert!(matches!(
            ring.verify_detached(&p, at, data),
            Err(DetachedError::Policy(PolicyError::Node { .. }))
        ));
        assert_eq!(ring.verify_detached(&p, Scope::File, data), Ok(()));
    }
}
