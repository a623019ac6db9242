//! Archiving (docs/FORMAT.md section 8): the verified rows of every node up to a time are
//! written to a segment file with a detached signature; then each node gets an archive marker
//! (a signed checkpoint of kind `archive`) and its archived rows are deleted, so `verifylog`
//! continues after the marker with no gap. `verify_segment` checks a segment offline.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::token::TokenError;
use crate::format::batch::BatchRecord;
use crate::format::checkpoint::Checkpoint;
use crate::format::record::AuditRecord;
use crate::store::StoreError;

mod check;
mod delete;
mod write;

pub use check::{SegmentReport, verify_segment};
pub use delete::{Applied, apply};
pub use write::write_segment;

/// The segment's `format` value.
pub const FORMAT: &str = "auditseal-archive-v1";
/// File names inside an archive directory.
pub const SEGMENT_FILE: &str = "segment.ndjson";
pub const SIGNATURE_FILE: &str = "segment.ndjson.sig";

/// One line of a segment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Line {
    /// The first line.
    #[serde(rename_all = "camelCase")]
    Header {
        format: String,
        /// Rows with a timeStamp before this (epoch ms) were archived.
        before: i64,
        created_at: i64,
    },
    /// Opens a node's rows: where they start and the head hash before the first (the previous
    /// archive marker's, or all zeros).
    #[serde(rename_all = "camelCase")]
    Start {
        node_id: String,
        first_sequence: i64,
        start_head: String,
    },
    /// A batch statement, written before the first row that refers to it.
    Batch(BatchRecord),
    /// A row, every column as stored.
    Row(AuditRecord),
    /// Closes a node's rows.
    Node(NodeSummary),
}

/// What a segment holds of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSummary {
    pub node_id: String,
    pub first_sequence: i64,
    pub last_sequence: i64,
    pub rows: u64,
    /// Head hash before the first row (the previous archive marker's, or all zeros).
    pub start_head: String,
    /// Head hash after the last row; equal to the marker's.
    pub end_head: String,
    /// The archive marker that replaces these rows in the database.
    pub marker: Checkpoint,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot sign: {0}")]
    Token(#[from] TokenError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "node {node}: row {sequence} does not verify ({reason}); nothing was archived: run verifylog and resolve it first"
    )]
    NotVerified {
        node: String,
        sequence: i64,
        reason: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{file} line {line}: {reason}")]
    Format {
        file: PathBuf,
        line: usize,
        reason: String,
    },
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A segment written but not yet applied (nothing deleted).
#[derive(Debug)]
pub struct Written {
    pub dir: PathBuf,
    /// Rows with a timeStamp before this (epoch ms) were written, from each node's start.
    pub before: i64,
    pub nodes: Vec<NodeSummary>,
    pub sha256: String,
    pub bytes: u64,
}

#[cfg(test)]
mod tests;
