//! The formats, with no I/O: the row and its protect string, additionalDetails, rowProtection,
//! the canonical encoding, Merkle trees, batch statements, checkpoints and head hashes, and the
//! rows of the API token table, and the DER/PEM/time helpers they need. docs/FORMAT.md states
//! each exactly.

pub mod api_token;
pub(crate) mod batch;
pub(crate) mod canonical;
pub mod checkpoint;
pub(crate) mod der;
pub mod details;
pub(crate) mod merkle;
pub mod pem;
pub mod protection;
pub mod record;
pub mod statement;
pub mod time;
