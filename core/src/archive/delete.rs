//! Applying a written segment: the archive markers stored and the archived rows removed, node by
//! node, or on a table partitioned by time all at once, whole partitions dropped
//! (store/partition, docs/OPERATIONS.md "Partitioning").

use std::collections::BTreeMap;

use super::{ArchiveError, Written};
use crate::store::Store;
use crate::store::archived::{ArchiveRange, DroppedPartition};

/// What `apply` did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Archived rows removed per node (dropped with their partition, or deleted).
    pub deleted: BTreeMap<String, u64>,
    /// Partitions dropped whole (a partitioned table only).
    pub dropped: Vec<DroppedPartition>,
    /// What could have been dropped and was deleted row by row instead, and why.
    pub notes: Vec<String>,
    /// The error that stopped it, if one did.
    pub error: Option<ArchiveError>,
}

/// Applies a written segment. Without partitions: for each node, in one transaction, stores its
/// archive marker and deletes the archived rows (and the statements and checkpoints they make
/// obsolete); an error stops it there, and the nodes before it stay applied, so the caller can
/// still log what was deleted. On a partitioned table: all nodes in one transaction, each
/// partition before `written.before` that holds only rows of this segment dropped whole; an
/// error leaves everything as it was.
pub async fn apply(store: &dyn Store, written: &Written) -> Applied {
    let ranges: Vec<ArchiveRange> = written
        .nodes
        .iter()
        .map(|s| ArchiveRange {
            marker: s.marker.clone(),
            first: s.first_sequence,
            rows: s.rows,
        })
        .collect();
    let mut applied = Applied::default();
    match store.archive_partitioned(&ranges, written.before).await {
        Ok(Some(done)) => {
            applied.deleted = done.deleted;
            applied.dropped = done.dropped;
            applied.notes = done.notes;
            return applied;
        }
        Ok(None) => {}
        Err(e) => {
            applied.error = Some(e.into());
            return applied;
        }
    }
    for r in &ranges {
        match store.archive_node(&r.marker, r.first, r.rows).await {
            Ok(n) => {
                applied.deleted.insert(r.marker.node_id.clone(), n);
            }
            Err(e) => {
                applied.error = Some(e.into());
                break;
            }
        }
    }
    applied
}
