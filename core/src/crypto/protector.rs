//! Builds a row's `rowProtection` with a crypto token (docs/FORMAT.md section 3).

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::crypto::token::{CryptoToken, TokenError};
use crate::format::protection::{Layout, RowProtection};
use crate::format::record::AuditRecord;

/// The `rowProtection` value for `record` made with `token`'s key.
pub fn protect(token: &dyn CryptoToken, record: &AuditRecord) -> Result<String, TokenError> {
    protect_bytes(token, record.protect_string().as_bytes())
}

/// A MAC or signature over any bytes (a batch statement), in rowProtection's layout.
pub fn protect_bytes(token: &dyn CryptoToken, data: &[u8]) -> Result<String, TokenError> {
    Ok(layout(token, token.sign(data)?))
}

/// A batch statement's or checkpoint's protection: `protect_bytes` with the statement's layout
/// as the first field (docs/FORMAT.md sections 6.2 and 7.2).
pub fn protect_statement(
    token: &dyn CryptoToken,
    layout: Layout,
    data: &[u8],
) -> Result<String, TokenError> {
    Ok(RowProtection {
        version: token.algorithm().protection_version(),
        keyid: token.keyid(),
        value: token.sign(data)?,
    }
    .to_statement_string(layout))
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
    let mut read = HashingReader::new(data);
    let value = token.sign_reader(&mut read)?;
    Ok(ProtectedStream {
        protection: layout(token, value),
        hash: read.hash,
        len: read.len,
    })
}

/// A reader that hashes (SHA-256) and counts what passes through it. A file checked in two
/// passes (signature, then content) is hashed in both, so that a file that changed between
/// them is caught: the signature then covers bytes other than those the content check read.
pub struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    /// The SHA-256 and length of everything read so far.
    pub fn finish(self) -> ([u8; 32], u64) {
        (self.hash.finalize().into(), self.len)
    }

    /// The hash so far, still open to more bytes, and the length.
    pub fn into_hasher(self) -> (Sha256, u64) {
        (self.hash, self.len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}
