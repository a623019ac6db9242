//! The configured keys loaded: software keys (generated when missing), public keys, PKCS#11
//! tokens and HMAC secrets, into the key ring and the token that protects new rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{
    ConfigError, KeyEntry, ProtectionSection, SecretEncoding, SignatureAlgorithm, TokenAlgorithm,
};
use crate::crypto::keys::{EvidenceKeys, KeyRing, VerifyKey};
use crate::crypto::pkcs11::{Pkcs11Config, Pkcs11Token, SlotSelector};
use crate::crypto::token::{Algorithm, HmacToken, SharedToken, SoftwareToken};

/// The keys in use: the token that protects new rows (None when signing is off) and every key
/// that verifies.
pub struct KeySetup {
    pub current: Option<SharedToken>,
    pub ring: KeyRing,
    /// Every key, for listing: keyid, algorithm, where it lives, whether it can sign.
    pub listing: Vec<KeyInfo>,
    /// Every key that can sign, by keyid (for key tests).
    pub signers: Vec<SharedToken>,
}

impl KeySetup {
    /// Whether the key that protects new rows may protect rows of `node` under its policy and
    /// `protection.evidence`: checked before anything is written, so a writer never produces
    /// rows that every verifier refuses. Returns a warning when the key is an HMAC key that
    /// the evidence setting lets through.
    pub fn check_writer(&self, node: &str) -> Result<Option<String>, ConfigError> {
        let Some(t) = &self.current else {
            return Ok(None);
        };
        let keyid = t.keyid();
        let err = |reason: String| ConfigError::Key { keyid, reason };
        if let Some(p) = self.ring.policy(keyid) {
            if p.retired_after.is_some() {
                return Err(err(
                    "the key is retired (retired_after is set): it verifies what it protected \
                     before, and cannot protect new rows; set protection.keyid to the new key"
                        .into(),
                ));
            }
            p.allows(keyid, node, 0)
                .map_err(|e| err(format!("{e}: it cannot protect this node's rows")))?;
        }
        if t.algorithm() != Algorithm::HmacSha256 {
            return Ok(None);
        }
        match self.ring.evidence() {
            EvidenceKeys::Asymmetric => Err(err(
                "protection.evidence = \"asymmetric\" refuses batch statements, checkpoints and \
                 exports made with an HMAC key, and this key is an HMAC key: protect new rows \
                 with a signature key (software or pkcs11, RSA or EC)"
                    .into(),
            )),
            EvidenceKeys::Any => Ok(Some(format!(
                "keyid {keyid} is an HMAC key: every verifier holds its secret and could forge \
                 the batch statements, checkpoints and exports it protects (and every row); use \
                 a signature key (RSA or EC) and set protection.evidence = \"asymmetric\""
            ))),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub keyid: i32,
    pub algorithm: Algorithm,
    pub source: String,
    pub can_sign: bool,
    pub current: bool,
    pub public_key_pem: Option<String>,
}

/// Whether a missing software key file may be generated (the server) or not (the CLI, which
/// only verifies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    Server,
    VerifyOnly,
}

/// The keys to load (the configured ones, or the default software key 1) and the current
/// keyid; None when there is nothing to sign with and no key yet (none is generated: it would
/// protect nothing). A current keyid that names no key is an error, found before any key is
/// loaded so a bad configuration generates nothing.
pub(super) fn key_entries(
    protection: &ProtectionSection,
    data_dir: &Path,
) -> Result<Option<(Vec<KeyEntry>, i32)>, ConfigError> {
    let entries = if protection.keys.is_empty() {
        if !protection.enable_sign && !data_dir.join("signing-key.pem").exists() {
            return Ok(None);
        }
        vec![KeyEntry::Software {
            keyid: 1,
            file: None,
            nodes: None,
            retired_after: None,
        }]
    } else {
        protection.keys.clone()
    };
    let current_id = protection.keyid.unwrap_or(entries[0].keyid());
    if protection.enable_sign && !entries.iter().any(|e| e.keyid() == current_id) {
        return Err(ConfigError::Invalid(format!(
            "protection.keyid = {current_id} names no configured key"
        )));
    }
    Ok(Some((entries, current_id)))
}

/// Loads the configured keys; with none configured, the default software key
/// `<data-dir>/signing-key.pem`, keyid 1. Returns the keyid and file of each key generated.
pub fn load_keys(
    protection: &ProtectionSection,
    data_dir: &Path,
    mode: KeyMode,
) -> Result<(KeySetup, Vec<(i32, PathBuf)>), ConfigError> {
    let Some((entries, current_id)) = key_entries(protection, data_dir)? else {
        let setup = KeySetup {
            current: None,
            ring: KeyRing::new(),
            listing: Vec::new(),
            signers: Vec::new(),
        };
        return Ok((setup, Vec::new()));
    };
    let entries = entries.as_slice();
    let policies = entries
        .iter()
        .map(KeyEntry::policy)
        .collect::<Result<Vec<_>, _>>()?;
    let mut ring = KeyRing::new();
    let mut listing = Vec::new();
    let mut current: Option<SharedToken> = None;
    let mut signers = Vec::new();
    let mut generated = Vec::new();
    for (e, policy) in entries.iter().zip(policies) {
        let keyid = e.keyid();
        if ring.get(keyid).is_some() {
            return Err(ConfigError::Key {
                keyid,
                reason: "keyid configured twice".into(),
            });
        }
        let (verify, token, source) = open_key(e, data_dir, mode, &mut generated)?;
        listing.push(KeyInfo {
            keyid,
            algorithm: verify.algorithm(),
            source,
            can_sign: token.is_some(),
            current: keyid == current_id,
            public_key_pem: verify.public_key_pem(),
        });
        if let Some(t) = &token {
            signers.push(t.clone());
        }
        if keyid == current_id {
            current = token;
            // Verifying never needs a signing key: the CLI takes a verify-only current key (as
            // CESeCore's database CLI takes a PublicCryptoToken under the signing keyid).
            if current.is_none() && protection.enable_sign && mode == KeyMode::Server {
                return Err(ConfigError::Key {
                    keyid,
                    reason: "the current keyid is verify-only; it cannot protect new rows".into(),
                });
            }
        }
        ring.insert_with_policy(keyid, verify, policy);
    }
    ring.set_evidence(protection.evidence.into());
    if !protection.enable_sign {
        current = None;
    }
    Ok((
        KeySetup {
            current,
            ring,
            listing,
            signers,
        },
        generated,
    ))
}

/// One configured key: what verifies with it, the token that signs with it (None for a
/// verify-only key) and where it lives (for listings).
pub(super) type OpenedKey = (VerifyKey, Option<SharedToken>, String);

/// Opens one key entry; a software key the server needs and cannot find is generated and its
/// path pushed to `generated`.
pub(super) fn open_key(
    e: &KeyEntry,
    data_dir: &Path,
    mode: KeyMode,
    generated: &mut Vec<(i32, PathBuf)>,
) -> Result<OpenedKey, ConfigError> {
    let keyid = e.keyid();
    let signer = |t: SharedToken| -> OpenedKey { (t.verify_key(), Some(t.clone()), t.describe()) };
    Ok(match e {
        KeyEntry::Software { file, .. } => signer(open_software(
            keyid,
            file.as_deref(),
            data_dir,
            mode,
            generated,
        )?),
        KeyEntry::Hmac {
            secret,
            secret_file,
            secret_env,
            secret_encoding,
            ..
        } => {
            let s = hmac_secret(
                keyid,
                (secret, secret_file, secret_env),
                *secret_encoding,
                data_dir,
            )?;
            signer(Arc::new(HmacToken::new(keyid, &s)))
        }
        KeyEntry::Public {
            algorithm,
            file,
            pem,
            ..
        } => open_public(keyid, *algorithm, file.as_deref(), pem.as_deref(), data_dir)?,
        KeyEntry::Pkcs11 { .. } => signer(open_pkcs11(e, data_dir)?),
    })
}

/// A software key: generated by the server when its file is missing, read by the CLI.
pub(super) fn open_software(
    keyid: i32,
    file: Option<&Path>,
    data_dir: &Path,
    mode: KeyMode,
    generated: &mut Vec<(i32, PathBuf)>,
) -> Result<SharedToken, ConfigError> {
    let path = data_dir.join(file.unwrap_or(Path::new("signing-key.pem")));
    let token = if mode == KeyMode::Server {
        let (t, gen_now) = SoftwareToken::load_or_generate(&path, keyid)
            .map_err(|source| ConfigError::Token { keyid, source })?;
        if gen_now {
            generated.push((keyid, path.clone()));
        }
        t
    } else {
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Key {
            keyid,
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        SoftwareToken::from_pem(&text, &path, keyid)
            .map_err(|source| ConfigError::Token { keyid, source })?
    };
    Ok(Arc::new(token))
}

/// A verify-only public key, from exactly one of a file or inline PEM.
pub(super) fn open_public(
    keyid: i32,
    algorithm: Option<SignatureAlgorithm>,
    file: Option<&Path>,
    pem: Option<&str>,
    data_dir: &Path,
) -> Result<OpenedKey, ConfigError> {
    let err = |reason: String| ConfigError::Key { keyid, reason };
    let (text, source) = match (file, pem) {
        (Some(f), None) => {
            let path = data_dir.join(f);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
            (text, format!("public key {} (verify only)", path.display()))
        }
        (None, Some(p)) => (
            p.to_string(),
            "public key from configuration (verify only)".into(),
        ),
        _ => return Err(err("a public key needs exactly one of file, pem".into())),
    };
    let alg = algorithm.map(SignatureAlgorithm::algorithm);
    let v = VerifyKey::from_public_pem(&text, alg).map_err(|e| err(format!("{source}: {e}")))?;
    Ok((v, None, source))
}

/// A key in a PKCS#11 token: its slot, label, PIN and algorithm from the entry.
pub(super) fn open_pkcs11(e: &KeyEntry, data_dir: &Path) -> Result<SharedToken, ConfigError> {
    let KeyEntry::Pkcs11 {
        keyid,
        library,
        slot_label,
        slot_number,
        slot_index,
        key_label,
        key_id,
        pin,
        pin_env,
        pin_file,
        algorithm,
        sessions,
        ..
    } = e
    else {
        unreachable!("open_key passes pkcs11 entries only");
    };
    let keyid = *keyid;
    let err = |reason: String| ConfigError::Key { keyid, reason };
    let slot = match (slot_label, slot_number, slot_index) {
        (Some(l), None, None) => SlotSelector::Label(l.clone()),
        (None, Some(n), None) => SlotSelector::Number(*n),
        (None, None, Some(i)) => SlotSelector::Index(*i),
        _ => {
            return Err(err(
                "a pkcs11 key needs exactly one of slot_label, slot_number, slot_index".into(),
            ));
        }
    };
    let key_id = match key_id {
        Some(h) => {
            Some(hex::decode(h.trim()).map_err(|_| err(format!("key_id {h:?} is not hex")))?)
        }
        None => None,
    };
    let pin = secret_from(keyid, "PIN", pin, pin_file, pin_env, data_dir)?;
    let token = Pkcs11Token::open(Pkcs11Config {
        keyid,
        library: library.clone(),
        slot,
        key_label: key_label.clone(),
        key_id,
        pin,
        algorithm: algorithm.map(TokenAlgorithm::algorithm),
        sessions: sessions.unwrap_or(4),
    })
    .map_err(|source| ConfigError::Token { keyid, source })?;
    Ok(Arc::new(token))
}

/// An HMAC secret's bytes: from exactly one of the value, a file (every byte, nothing
/// trimmed) or an environment variable, then decoded as `encoding` says.
pub(super) fn hmac_secret(
    keyid: i32,
    (secret, secret_file, secret_env): (&Option<String>, &Option<PathBuf>, &Option<String>),
    encoding: SecretEncoding,
    data_dir: &Path,
) -> Result<Vec<u8>, ConfigError> {
    use base64::Engine;
    let err = |reason: String| ConfigError::Key { keyid, reason };
    let sources = [
        secret.is_some(),
        secret_file.is_some(),
        secret_env.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(err(
            "the HMAC secret needs exactly one of: secret, secret_file, secret_env".into(),
        ));
    }
    let raw: Vec<u8> = match secret_file {
        Some(f) => {
            let path = data_dir.join(f);
            let bytes = std::fs::read(&path).map_err(|e| {
                err(format!(
                    "cannot read the HMAC secret file {}: {e}",
                    path.display()
                ))
            })?;
            if encoding == SecretEncoding::Raw && bytes.ends_with(b"\n") {
                tracing::warn!(
                    keyid,
                    file = %path.display(),
                    "the HMAC secret file ends in a newline, which is part of the secret \
                     (files are read as raw bytes); if it is not, write the file without it \
                     (printf, not echo) or use secret_encoding = \"hex\""
                );
            }
            bytes
        }
        None => {
            secret_from(keyid, "HMAC secret", secret, &None, secret_env, data_dir)?.into_bytes()
        }
    };
    let text = || {
        String::from_utf8(raw.clone())
            .map(|s| s.split_whitespace().collect::<String>())
            .map_err(|_| err(format!("the HMAC secret is not {encoding:?} text")))
    };
    let bytes = match encoding {
        SecretEncoding::Raw => raw.clone(),
        SecretEncoding::Hex => {
            hex::decode(text()?).map_err(|e| err(format!("the HMAC secret is not hex: {e}")))?
        }
        SecretEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text()?)
            .map_err(|e| err(format!("the HMAC secret is not base64: {e}")))?,
    };
    if bytes.is_empty() {
        return Err(err("the HMAC secret is empty".into()));
    }
    Ok(bytes)
}

/// A secret (HMAC key, PIN) from exactly one of: the value, a file (relative: from the
/// configuration file's directory; one trailing newline dropped), an environment variable.
pub(super) fn secret_from(
    keyid: i32,
    what: &str,
    secret: &Option<String>,
    secret_file: &Option<PathBuf>,
    secret_env: &Option<String>,
    data_dir: &Path,
) -> Result<String, ConfigError> {
    let err = |reason: String| ConfigError::Key { keyid, reason };
    let s = match (secret, secret_file, secret_env) {
        (Some(s), None, None) => s.clone(),
        (None, Some(f), None) => {
            let path = data_dir.join(f);
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    err(format!(
                        "cannot read the {what} file {}: {e}",
                        path.display()
                    ))
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string()
        }
        (None, None, Some(var)) => std::env::var(var).map_err(|_| {
            err(format!(
                "environment variable {var} (the {what}) is not set"
            ))
        })?,
        _ => {
            return Err(err(format!(
                "the {what} needs exactly one of: the value, a file, an environment variable \
                 (secret / secret_file / secret_env, or pin / pin_file / pin_env)"
            )));
        }
    };
    if s.is_empty() {
        return Err(err(format!("the {what} is empty")));
    }
    Ok(s)
}
