//! auditseal core: the CESeCore-compatible audit record and everything that protects, stores and
//! verifies it. Formats are specified in `docs/FORMAT.md`; this crate follows that text.

pub mod access;
pub mod archive;
pub mod batch;
pub mod batched;
pub mod canonical;
pub mod checkpoint;
pub mod checkpoint_out;
pub mod checkpointer;
pub mod config;
pub mod der;
pub mod details;
pub mod device;
pub mod export;
pub mod files;
pub mod keycheck;
pub mod keys;
pub mod memory;
pub mod merkle;
pub mod pem;
pub mod pkcs11;
pub mod protection;
pub mod protector;
pub mod record;
pub mod signserver;
pub mod sink;
pub mod store;
pub mod time;
pub mod token;
pub mod verify;
