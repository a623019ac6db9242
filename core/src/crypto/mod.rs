//! Keys: the crypto token trait and its software, HMAC and PKCS#11 implementations, the
//! verification keys and their policy, protecting a row, and checking a key against what its
//! keyid protected before.

pub mod algorithm;
pub mod keycheck;
pub mod keys;
pub(crate) mod pkcs11;
pub mod protector;
pub mod token;
