//! Builds a row's `rowProtection` with a crypto token (docs/FORMAT.md, spec section 3).

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::protection::RowProtection;
use crate::record::AuditRecord;
use crate::token::{CryptoToken, TokenError};

/// The `rowProtection` value for `record` made with `token`'s key.
pub fn protect(token: &dyn CryptoToken, record: &AuditRecord) -> Result<String, TokenError> {
    protect_bytes(token, record.protect_string().as_bytes())
}

/// A MAC or signature over any bytes (a batch statement), in rowProtection's layout.
pub fn protect_bytes(token: &dyn CryptoToken, data: &[u8]) -> Result<String, TokenError> {
    Ok(layout(token, token.sign(data)?))
}

fn layout(token: &dyn CryptoToken, value: Vec<u8>) -> String {
    RowProtection {
        version: token.algorithm().protection_version(),
        keyid: token.keyid(),
        value,
    }
    .to_string()
}

/// What `protect_reader` read and made.
pub struct ProtectedStream {
    /// The MAC or signature in rowProtection's layout.
    pub protection: String,
    /// SHA-256 of what was read, open for more (an export's trailer).
    pub hash: Sha256,
    /// How many bytes were read.
    pub len: u64,
}

/// `protect_bytes` over everything `data` yields (an export, an archive segment), read once in
/// chunks: memory stays constant whatever the size.
pub fn protect_reader(
    token: &dyn CryptoToken,
    data: &mut dyn Read,
) -> Result<ProtectedStream, TokenError> {
    /// Hashes and counts what passes through.
    struct Tee<'a> {
        inner: &'a mut dyn Read,
        hash: Sha256,
        len: u64,
    }
    impl Read for Tee<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.hash.update(&buf[..n]);
            self.len += n as u64;
            Ok(n)
        }
    }
    let mut tee = Tee {
        inner: data,
        hash: Sha256::new(),
        len: 0,
    };
    let value = token.sign_reader(&mut tee)?;
    Ok(ProtectedStream {
        protection: layout(token, value),
        hash: tee.hash,
        len: tee.len,
    })
}
