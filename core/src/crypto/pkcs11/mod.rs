//! PKCS#11 crypto tokens (HSMs, SoftHSM2) through `cryptoki`, behind the same `CryptoToken`
//! trait as the software key.
//!
//! One PKCS#11 context per module (library) per process; a pool of logged-in sessions per key;
//! every call blocks, so callers run them off the async workers. A lost session, a logged-out or
//! vanished token is handled by dropping the sessions, finding the slot again and logging in
//! again; while that fails, signing answers `TokenError::Unavailable`.

use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::Mechanism;
use sha2::{Digest, Sha256, Sha384};

use crate::crypto::keys::{MacOracle, VerifyKey};
use crate::crypto::token::{
    Algorithm, CallTally, CryptoToken, KeyKind, TokenCall, TokenError, digest_reader,
};
use crate::format::der;

mod module;
mod objects;
mod session;

use module::{Module, lock, return_value_name};
use session::Pool;

/// How a token is found (SignServer's `slotLabelType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotSelector {
    /// SLOT_LABEL: the token label.
    Label(String),
    /// SLOT_NUMBER: the slot id.
    Number(u64),
    /// SLOT_INDEX: the position in the list of slots with a token.
    Index(usize),
}

impl std::fmt::Display for SlotSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotSelector::Label(l) => write!(f, "token label {l:?}"),
            SlotSelector::Number(n) => write!(f, "slot {n}"),
            SlotSelector::Index(i) => write!(f, "slot index {i}"),
        }
    }
}

/// Everything needed to use one key in a token.
#[derive(Clone)]
pub struct Pkcs11Config {
    pub keyid: i32,
    pub library: PathBuf,
    pub slot: SlotSelector,
    pub key_label: String,
    pub key_id: Option<Vec<u8>>,
    pub pin: String,
    /// None: from the key type.
    pub algorithm: Option<Algorithm>,
    /// Most sessions open at once for this key.
    pub sessions: usize,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The PIN is never printed.
        f.debug_struct("Pkcs11Config")
            .field("keyid", &self.keyid)
            .field("library", &self.library)
            .field("slot", &self.slot)
            .field("key_label", &self.key_label)
            .field("algorithm", &self.algorithm)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: Pkcs11Config,
    module: Arc<Module>,
    algorithm: Algorithm,
    pool: Mutex<Pool>,
    returned: Condvar,
    /// The return value with which the token refused the PIN, once it has: the PIN is not
    /// tried again in this process (each try may count towards locking the token).
    pin_refused: Mutex<Option<String>>,
    /// Calls to the module by function and result: every error that reaches `unavailable` or
    /// the login, and the successful logins and signatures.
    calls: CallTally,
}

/// A key in a PKCS#11 token.
pub struct Pkcs11Token {
    inner: Arc<Inner>,
    verify: VerifyKey,
}

impl Pkcs11Token {
    /// Loads the module, finds the token and the key, logs in and reads the public key. A wrong
    /// PIN is `InvalidKey` (retrying with the same PIN would only lock the token).
    pub fn open(cfg: Pkcs11Config) -> Result<Self, TokenError> {
        let module = Module::get(&cfg.library)?;
        let mut inner = Inner {
            algorithm: cfg.algorithm.unwrap_or(Algorithm::Sha256WithRsa),
            cfg,
            module,
            pool: Mutex::new(Pool {
                found: None,
                idle: Vec::new(),
                open: 0,
                generation: 0,
            }),
            returned: Condvar::new(),
            pin_refused: Mutex::new(None),
            calls: CallTally::default(),
        };
        let (held, found, own, spki) = {
            let _calls = inner.module.shared();
            let held = inner.open_session()?;
            let found = inner.find_key(&held.session)?;
            let kind = inner.key_kind(&held.session, found)?;
            // The configured algorithm, of the key's kind; or the SHA-256 one of its kind.
            let own = match inner.cfg.algorithm {
                Some(configured) if configured.key_kind() != kind => {
                    return Err(TokenError::InvalidKey(format!(
                        "{}: it is {} key but {configured} is configured",
                        inner.describe(),
                        match kind {
                            KeyKind::Rsa => "an RSA",
                            KeyKind::Ec => "an EC",
                            KeyKind::Secret => "a secret (HMAC)",
                        }
                    )));
                }
                Some(configured) => configured,
                None => match kind {
                    KeyKind::Rsa => Algorithm::Sha256WithRsa,
                    KeyKind::Ec => Algorithm::Sha256WithEcdsa,
                    KeyKind::Secret => Algorithm::HmacSha256,
                },
            };
            inner.algorithm = own;
            let spki = match kind {
                KeyKind::Secret => None,
                _ => Some(inner.public_key(&held.session, found)?),
            };
            (held, found, own, spki)
        };
        {
            let mut pool = lock(&inner.pool);
            pool.found = Some(found);
            pool.open = 1;
            pool.idle.push(held);
        }
        let inner = Arc::new(inner);
        let verify = match spki {
            Some(spki) => VerifyKey::from_spki(own, &spki)
                .map_err(|e| TokenError::InvalidKey(format!("{}: {e}", inner.describe())))?,
            // An HMAC secret never leaves the token: verifying means MACing again there.
            None => VerifyKey::TokenHmac(inner.clone()),
        };
        Ok(Pkcs11Token { inner, verify })
    }
}

impl Inner {
    fn describe(&self) -> String {
        format!(
            "PKCS#11 key {:?} in {} of {}",
            self.cfg.key_label,
            self.cfg.slot,
            self.cfg.library.display()
        )
    }

    fn unavailable(&self, what: &str, e: &CkError) -> TokenError {
        self.count(e);
        TokenError::Unavailable(format!("{}: {what}: {e}", self.describe()))
    }

    /// Counts a PKCS#11 error under its function and return value.
    fn count(&self, e: &CkError) {
        if let CkError::Pkcs11(rv, function) = e {
            self.calls
                .record(&format!("C_{function:?}"), &return_value_name(*rv));
        }
    }

    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        match self.algorithm {
            Algorithm::HmacSha256 => self.raw_sign(&Mechanism::Sha256Hmac, data),
            Algorithm::Sha256WithRsa => self.raw_sign(&Mechanism::Sha256RsaPkcs, data),
            Algorithm::Sha384WithRsa => self.raw_sign(&Mechanism::Sha384RsaPkcs, data),
            Algorithm::Sha512WithRsa => self.raw_sign(&Mechanism::Sha512RsaPkcs, data),
            Algorithm::Sha256WithEcdsa => self.sign_ec_digest(&Sha256::digest(data)),
            Algorithm::Sha384WithEcdsa => self.sign_ec_digest(&Sha384::digest(data)),
        }
    }

    /// `sign` over a stream: the MAC or signature, and for signatures the digest of the data
    /// (to check the signature with).
    fn sign_reader(
        &self,
        data: &mut dyn Read,
    ) -> Result<(Vec<u8>, Option<aws_lc_rs::digest::Digest>), TokenError> {
        use aws_lc_rs::digest;
        let rsa = match self.algorithm {
            Algorithm::HmacSha256 => {
                let mac = self.raw_sign_stream(&Mechanism::Sha256Hmac, data, |_| {})?;
                return Ok((mac, None));
            }
            Algorithm::Sha256WithEcdsa | Algorithm::Sha384WithEcdsa => {
                let d = digest_reader(self.algorithm.digest(), data)?;
                return Ok((self.sign_ec_digest(d.as_ref())?, Some(d)));
            }
            Algorithm::Sha256WithRsa => Mechanism::Sha256RsaPkcs,
            Algorithm::Sha384WithRsa => Mechanism::Sha384RsaPkcs,
            Algorithm::Sha512WithRsa => Mechanism::Sha512RsaPkcs,
        };
        let mut h = digest::Context::new(self.algorithm.digest());
        let sig = self.raw_sign_stream(&rsa, data, |c| h.update(c))?;
        Ok((sig, Some(h.finish())))
    }

    /// CKM_ECDSA signs a digest and returns r || s; Java (and CESeCore) store DER.
    fn sign_ec_digest(&self, digest: &[u8]) -> Result<Vec<u8>, TokenError> {
        let raw = self.raw_sign(&Mechanism::Ecdsa, digest)?;
        der::ecdsa_raw_to_der(&raw).ok_or_else(|| {
            TokenError::Unavailable(format!("{}: malformed ECDSA signature", self.describe()))
        })
    }
}

impl MacOracle for Inner {
    fn mac(&self, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        self.sign(data)
    }
    fn mac_reader(&self, data: &mut dyn Read) -> Result<Vec<u8>, TokenError> {
        Ok(self.sign_reader(data)?.0)
    }
}

impl Pkcs11Token {
    fn checked(
        &self,
        verified: Result<(), crate::crypto::keys::VerifyError>,
    ) -> Result<(), TokenError> {
        verified.map_err(|_| {
            TokenError::Unavailable(format!(
                "{}: the token returned a signature that does not verify",
                self.inner.describe()
            ))
        })
    }
}

impl CryptoToken for Pkcs11Token {
    fn keyid(&self) -> i32 {
        self.inner.cfg.keyid
    }

    fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// Signs in the token, then checks the signature with the public key before it is used:
    /// a wrong signature (a confused module, a handle gone stale) never reaches a row.
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        let sig = self.inner.sign(data)?;
        if self.inner.algorithm != Algorithm::HmacSha256 {
            self.checked(self.verify.verify(data, &sig))?;
        }
        Ok(sig)
    }

    /// Checked as `sign` is, against the digest of what was read.
    fn sign_reader(&self, data: &mut dyn Read) -> Result<Vec<u8>, TokenError> {
        let (sig, digest) = self.inner.sign_reader(data)?;
        if let Some(d) = digest {
            self.checked(self.verify.verify_digest(&d, &sig))?;
        }
        Ok(sig)
    }

    fn verify_key(&self) -> VerifyKey {
        self.verify.clone()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn calls(&self) -> Vec<TokenCall> {
        self.inner.calls.snapshot()
    }
}
