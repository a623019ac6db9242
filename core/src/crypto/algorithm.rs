//! The protection algorithms and what every key's code shares: the token error, and reading
//! data to sign or verify in chunks. Below the tokens and the verification keys, which both use it.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use aws_lc_rs::digest;
use serde::Serialize;

use crate::format::protection::ProtectionVersion;

/// The protection algorithms of CESeCore's versions 1 and 2. Every one verifies; new rows are
/// protected with HmacSHA256, SHA256WithRSA or SHA256WithECDSA by any key, and with the SHA-384
/// and SHA-512 ones by PKCS#11 keys only (docs/FORMAT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Algorithm {
    #[serde(rename = "HmacSHA256")]
    HmacSha256,
    #[serde(rename = "SHA256WithRSA")]
    Sha256WithRsa,
    #[serde(rename = "SHA384WithRSA")]
    Sha384WithRsa,
    #[serde(rename = "SHA512WithRSA")]
    Sha512WithRsa,
    #[serde(rename = "SHA256WithECDSA")]
    Sha256WithEcdsa,
    #[serde(rename = "SHA384WithECDSA")]
    Sha384WithEcdsa,
}

/// The kind of key an algorithm takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Secret,
    Rsa,
    Ec,
}

impl Algorithm {
    pub const ALL: [Algorithm; 6] = [
        Algorithm::HmacSha256,
        Algorithm::Sha256WithRsa,
        Algorithm::Sha384WithRsa,
        Algorithm::Sha512WithRsa,
        Algorithm::Sha256WithEcdsa,
        Algorithm::Sha384WithEcdsa,
    ];

    pub fn protection_version(self) -> ProtectionVersion {
        match self {
            Algorithm::HmacSha256 => ProtectionVersion::Hmac,
            _ => ProtectionVersion::Signature,
        }
    }

    /// The name CESeCore uses (`sigalg.N`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "HmacSHA256",
            Algorithm::Sha256WithRsa => "SHA256WithRSA",
            Algorithm::Sha384WithRsa => "SHA384WithRSA",
            Algorithm::Sha512WithRsa => "SHA512WithRSA",
            Algorithm::Sha256WithEcdsa => "SHA256WithECDSA",
            Algorithm::Sha384WithEcdsa => "SHA384WithECDSA",
        }
    }

    /// By its name, ignoring case as Java's provider lookup does.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    pub fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::HmacSha256 => KeyKind::Secret,
            Algorithm::Sha256WithRsa | Algorithm::Sha384WithRsa | Algorithm::Sha512WithRsa => {
                KeyKind::Rsa
            }
            Algorithm::Sha256WithEcdsa | Algorithm::Sha384WithEcdsa => KeyKind::Ec,
        }
    }

    /// The digest the algorithm signs (and that `sign_reader`/`verify_digest` take).
    pub fn digest(self) -> &'static aws_lc_rs::digest::Algorithm {
        use aws_lc_rs::digest;
        match self {
            Algorithm::HmacSha256 | Algorithm::Sha256WithRsa | Algorithm::Sha256WithEcdsa => {
                &digest::SHA256
            }
            Algorithm::Sha384WithRsa | Algorithm::Sha384WithEcdsa => &digest::SHA384,
            Algorithm::Sha512WithRsa => &digest::SHA512,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token exists but cannot sign right now (HSM gone, session lost): retry later.
    #[error("crypto token unavailable: {0}")]
    Unavailable(String),
    /// The key material is unusable (bad file, wrong type): an operator must act.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// What was to be signed could not be read (`sign_reader`): nothing was signed.
    #[error("cannot read the data to sign: {0}")]
    Input(std::io::Error),
}

/// Calls `f` with each chunk `data` yields (up to 1 MiB: in a PKCS#11 token each is one
/// C_SignUpdate round trip), in order, until its end.
pub fn for_each_chunk(
    data: &mut dyn Read,
    mut f: impl FnMut(&[u8]) -> Result<(), TokenError>,
) -> Result<(), TokenError> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match data.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => f(&buf[..n])?,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TokenError::Input(e)),
        }
    }
}

/// The digest of everything `data` yields.
pub fn digest_reader(
    algorithm: &'static digest::Algorithm,
    data: &mut dyn Read,
) -> Result<digest::Digest, TokenError> {
    let mut ctx = digest::Context::new(algorithm);
    for_each_chunk(data, |c| {
        ctx.update(c);
        Ok(())
    })?;
    Ok(ctx.finish())
}
