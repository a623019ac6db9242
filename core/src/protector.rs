//! Builds a row's `rowProtection` with a crypto token (docs/FORMAT.md, spec section 3).

use crate::protection::RowProtection;
use crate::record::AuditRecord;
use crate::token::{CryptoToken, TokenError};

/// The `rowProtection` value for `record` made with `token`'s key.
pub fn protect(token: &dyn CryptoToken, record: &AuditRecord) -> Result<String, TokenError> {
    let value = token.sign(record.protect_string().as_bytes())?;
    Ok(RowProtection {
        version: token.algorithm().protection_version(),
        keyid: token.keyid(),
        value,
    }
    .to_string())
}

/// A MAC or signature over any bytes (a batch statement), in rowProtection's layout.
pub fn protect_bytes(token: &dyn CryptoToken, data: &[u8]) -> Result<String, TokenError> {
    Ok(RowProtection {
        version: token.algorithm().protection_version(),
        keyid: token.keyid(),
        value: token.sign(data)?,
    }
    .to_string())
}
