//! What the store is told to archive and what an archive on a partitioned table did: the types
//! of `Store::archive_partitioned`, shared by the drivers and the partitioning code.

use std::collections::BTreeMap;

use crate::format::checkpoint::Checkpoint;

/// One node's archived rows: `first` to the marker's sequence number, `rows` of them.
#[derive(Debug, Clone)]
pub struct ArchiveRange {
    pub marker: Checkpoint,
    pub first: i64,
    pub rows: u64,
}

/// A partition the archive dropped, and how many (archived) rows it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedPartition {
    pub name: String,
    pub rows: u64,
}

/// What an archive did on a partitioned table.
#[derive(Debug, Default)]
pub struct PartitionArchive {
    /// Archived rows removed per node, dropped or deleted.
    pub deleted: BTreeMap<String, u64>,
    pub dropped: Vec<DroppedPartition>,
    /// Partitions that could have been dropped and were not, and why.
    pub notes: Vec<String>,
}
