//! auditseal core: the CESeCore-compatible audit record and everything that protects, stores and
//! verifies it. Formats are specified in `docs/FORMAT.md`; this crate follows that text.
//!
//! The folders are the layers (docs/ARCHITECTURE.md), lowest first: `format` (no I/O),
//! `crypto`, `config`, `store`, `device`, `evidence`, `verify`, then `archive` and `export`.
//! The modules other crates use are re-exported here by their short names.

pub mod access;
pub mod archive;
pub mod config;
pub mod crypto;
pub mod device;
pub mod evidence;
pub mod export;
pub mod files;
pub mod format;
pub mod forward;
pub mod memory;
pub mod report;
pub mod store;
pub mod verify;

pub use crypto::{keycheck, keys, protector, token};
pub use device::batched;
pub use evidence::checkpointer;
pub use format::{checkpoint, details, pem, protection, record, time};
