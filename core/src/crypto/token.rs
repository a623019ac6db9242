//! Crypto tokens: what signs new rows. One small trait; the software key and the HMAC secret
//! implement it here, PKCS#11 tokens implement it in their own module.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use aws_lc_rs::{digest, hmac, rsa};

pub use crate::crypto::algorithm::{Algorithm, KeyKind, TokenError, digest_reader, for_each_chunk};
use crate::crypto::keys::VerifyKey;
use crate::format::pem;

/// Something that protects rows with one key. Calls may block (an HSM round trip): callers on an
/// async runtime run them with `spawn_blocking`.
pub trait CryptoToken: Send + Sync {
    fn keyid(&self) -> i32;
    fn algorithm(&self) -> Algorithm;
    /// MAC or signature over `data` (signatures DER-encoded for ECDSA, as Java writes them).
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, TokenError>;
    /// The same MAC or signature as `sign` over everything `data` yields, read in chunks, so a
    /// file of any size (an export, an archive segment) costs constant memory. The default
    /// reads it all into memory and calls `sign`.
    fn sign_reader(&self, data: &mut dyn Read) -> Result<Vec<u8>, TokenError> {
        let mut all = Vec::new();
        data.read_to_end(&mut all).map_err(TokenError::Input)?;
        self.sign(&all)
    }
    /// The key that verifies what this token produces.
    fn verify_key(&self) -> VerifyKey;
    /// Where the key lives, for operators (never contains a secret).
    fn describe(&self) -> String;
    /// The calls this token made to its device, by function and result, since it was opened
    /// (metrics). Software keys make none.
    fn calls(&self) -> Vec<TokenCall> {
        Vec::new()
    }
}

/// How many times a token's device answered one function with one result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCall {
    /// The PKCS#11 function, e.g. `C_Login`, `C_Sign`.
    pub function: String,
    /// `CKR_OK` or the error's return value, e.g. `CKR_PIN_INCORRECT`, `CKR_DEVICE_REMOVED`.
    pub result: String,
    pub count: u64,
}

/// A tally of calls, kept by the tokens that make them.
#[derive(Debug, Default)]
pub struct CallTally(Mutex<BTreeMap<(String, String), u64>>);

impl CallTally {
    pub fn record(&self, function: &str, result: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((function.to_owned(), result.to_owned()))
            .or_insert(0) += 1;
    }

    pub fn snapshot(&self) -> Vec<TokenCall> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .map(|((function, result), count)| TokenCall {
                function: function.clone(),
                result: result.clone(),
                count: *count,
            })
            .collect()
    }
}

/// HMAC-SHA256 with a configured secret (protection version 1).
pub struct HmacToken {
    keyid: i32,
    key: hmac::Key,
}

impl HmacToken {
    pub fn new(keyid: i32, secret: &[u8]) -> Self {
        HmacToken {
            keyid,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }
}

impl CryptoToken for HmacToken {
    fn keyid(&self) -> i32 {
        self.keyid
    }
    fn algorithm(&self) -> Algorithm {
        Algorithm::HmacSha256
    }
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        Ok(hmac::sign(&self.key, data).as_ref().to_vec())
    }
    fn sign_reader(&self, data: &mut dyn Read) -> Result<Vec<u8>, TokenError> {
        let mut ctx = hmac::Context::with_key(&self.key);
        for_each_chunk(data, |c| {
            ctx.update(c);
            Ok(())
        })?;
        Ok(ctx.sign().as_ref().to_vec())
    }
    fn verify_key(&self) -> VerifyKey {
        VerifyKey::Hmac(Box::new(self.key.clone()))
    }
    fn describe(&self) -> String {
        "HMAC-SHA256 secret from configuration".into()
    }
}

enum SoftKey {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private key in a PKCS#8 PEM file (RSA or EC P-256), signing in software with aws-lc-rs.
pub struct SoftwareToken {
    keyid: i32,
    key: SoftKey,
    path: PathBuf,
    rng: SystemRandom,
}

impl SoftwareToken {
    /// Loads the key at `path`; when the file does not exist, generates an RSA-2048 key there
    /// (mode 0600). Returns the token and whether it generated the key.
    pub fn load_or_generate(path: &Path, keyid: i32) -> Result<(Self, bool), TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::from_pem(&text, path, keyid)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rsa::KeyPair::generate(rsa::KeySize::Rsa2048)
                    .map_err(|_| TokenError::InvalidKey("RSA key generation failed".into()))?;
                let der = key
                    .as_der()
                    .map_err(|_| TokenError::InvalidKey("cannot encode the new key".into()))?;
                crate::files::write_private(
                    path,
                    pem::encode("PRIVATE KEY", der.as_ref()).as_bytes(),
                )
                .map_err(io)?;
                Ok((
                    SoftwareToken {
                        keyid,
                        key: SoftKey::Rsa(key),
                        path: path.to_path_buf(),
                        rng: SystemRandom::new(),
                    },
                    true,
                ))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Reads a `-----BEGIN PRIVATE KEY-----` (PKCS#8) RSA or EC P-256 key.
    pub fn from_pem(text: &str, path: &Path, keyid: i32) -> Result<Self, TokenError> {
        let der = pem::decode("PRIVATE KEY", text).ok_or_else(|| {
            TokenError::InvalidKey(format!(
                "{} holds no PKCS#8 '-----BEGIN PRIVATE KEY-----' block",
                path.display()
            ))
        })?;
        let key = if let Ok(k) = RsaKeyPair::from_pkcs8(&der) {
            SoftKey::Rsa(k)
        } else if let Ok(k) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &der)
        {
            SoftKey::Ec(k)
        } else {
            return Err(TokenError::InvalidKey(format!(
                "{} is neither an RSA nor an EC P-256 PKCS#8 key",
                path.display()
            )));
        };
        Ok(SoftwareToken {
            keyid,
            key,
            path: path.to_path_buf(),
            rng: SystemRandom::new(),
        })
    }

    fn spki_der(&self) -> Vec<u8> {
        let der = match &self.key {
            SoftKey::Rsa(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
            SoftKey::Ec(k) => k.public_key().as_der().map(|d| d.as_ref().to_vec()),
        };
        // Encoding a key we hold in memory cannot fail short of memory exhaustion.
        der.unwrap_or_default()
    }
}

impl CryptoToken for SoftwareToken {
    fn keyid(&self) -> i32 {
        self.keyid
    }
    fn algorithm(&self) -> Algorithm {
        match self.key {
            SoftKey::Rsa(_) => Algorithm::Sha256WithRsa,
            SoftKey::Ec(_) => Algorithm::Sha256WithEcdsa,
        }
    }
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, TokenError> {
        let failed = |_| TokenError::Unavailable("software signing failed".into());
        match &self.key {
            SoftKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, data, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
            SoftKey::Ec(k) => Ok(k.sign(&self.rng, data).map_err(failed)?.as_ref().to_vec()),
        }
    }
    fn sign_reader(&self, data: &mut dyn Read) -> Result<Vec<u8>, TokenError> {
        let failed = |_| TokenError::Unavailable("software signing failed".into());
        let d = digest_reader(&digest::SHA256, data)?;
        match &self.key {
            SoftKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign_digest(&signature::RSA_PKCS1_SHA256, &d, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
            SoftKey::Ec(k) => Ok(k.sign_digest(&d).map_err(failed)?.as_ref().to_vec()),
        }
    }
    fn verify_key(&self) -> VerifyKey {
        VerifyKey::from_spki(self.algorithm(), &self.spki_der())
            .expect("a key we generated or loaded has a valid public key")
    }
    fn describe(&self) -> String {
        format!("software key {}", self.path.display())
    }
}

/// Shared handle to the token that signs new rows.
pub type SharedToken = Arc<dyn CryptoToken>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_private_rsa_key_once_and_reloads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing-key.pem");
        let (t1, generated) = SoftwareToken::load_or_generate(&path, 7).unwrap();
        assert!(generated);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (t2, generated) = SoftwareToken::load_or_generate(&path, 7).unwrap();
        assert!(!generated);
        assert_eq!(t1.algorithm(), Algorithm::Sha256WithRsa);
        let sig = t1.sign(b"hello").unwrap();
        assert_eq!(sig.len(), 256);
        t2.verify_key().verify(b"hello", &sig).unwrap();
        assert!(t2.verify_key().verify(b"hellO", &sig).is_err());
    }

    #[test]
    fn ec_key_signs_der() {
        let rng = SystemRandom::new();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pem_text = pem::encode("PRIVATE KEY", doc.as_ref());
        let t = SoftwareToken::from_pem(&pem_text, Path::new("x.pem"), 3).unwrap();
        assert_eq!(t.algorithm(), Algorithm::Sha256WithEcdsa);
        let sig = t.sign(b"data").unwrap();
        assert_eq!(sig[0], 0x30, "DER SEQUENCE");
        t.verify_key().verify(b"data", &sig).unwrap();
    }

    /// `sign_reader` over a stream read in many chunks makes what `sign` makes over the same
    /// bytes (RSA PKCS#1 v1.5 and HMAC are deterministic; ECDSA is checked by verifying).
    #[test]
    fn signing_a_stream_equals_signing_its_bytes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let (rsa, _) = SoftwareToken::load_or_generate(&dir.path().join("k.pem"), 1).unwrap();
        let rng = SystemRandom::new();
        let doc =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let ec = SoftwareToken::from_pem(
            &pem::encode("PRIVATE KEY", doc.as_ref()),
            Path::new("x.pem"),
            2,
        )
        .unwrap();
        let mac = HmacToken::new(3, b"secret");
        for t in [&rsa as &dyn CryptoToken, &ec, &mac] {
            let streamed = t.sign_reader(&mut &data[..]).unwrap();
            if t.algorithm() != Algorithm::Sha256WithEcdsa {
                assert_eq!(streamed, t.sign(&data).unwrap(), "{}", t.algorithm());
            }
            t.verify_key().verify(&data, &streamed).unwrap();
            t.verify_key()
                .verify_reader(&mut &data[..], &streamed)
                .unwrap();
            let mut changed = data.clone();
            changed[150_000] ^= 1;
            assert!(t.verify_key().verify(&changed, &streamed).is_err());
            assert_eq!(
                t.verify_key().verify_reader(&mut &changed[..], &streamed),
                Err(crate::crypto::keys::VerifyError::Mismatch)
            );
            if t.algorithm() != Algorithm::HmacSha256 {
                let d = digest_reader(t.algorithm().digest(), &mut &data[..]).unwrap();
                t.verify_key().verify_digest(&d, &streamed).unwrap();
            }
        }
        // A read error is an error, not a signature over what was read so far.
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk gone"))
            }
        }
        for t in [&rsa as &dyn CryptoToken, &mac] {
            let e = t.sign_reader(&mut Broken).unwrap_err();
            assert!(matches!(e, TokenError::Input(_)), "{e}");
            let sig = t.sign(b"x").unwrap();
            let e = t.verify_key().verify_reader(&mut Broken, &sig).unwrap_err();
            assert!(
                matches!(&e, crate::crypto::keys::VerifyError::Unreadable(m) if m.contains("disk gone")),
                "{e}"
            );
        }
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let err = SoftwareToken::from_pem("nope", Path::new("k.pem"), 1)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("k.pem"), "{err}");
    }
}
