//! Archiving on a partitioned table (docs/OPERATIONS.md "Partitioning"): in one transaction,
//! every node's archive marker is stored; each partition that lies wholly before the archive's
//! cut and holds only rows this archive wrote to its segment (each row's node and sequence number
//! inside that node's archived range: timestamps and sequence order can disagree, so the rows are
//! looked at, not the partition's range) is dropped; the other archived rows are deleted one by
//! one, as without partitions. Nothing else is ever dropped.

use std::collections::BTreeMap;

use sqlx::{Connection, PgConnection};

use super::PartitionInfo;
use crate::store::archived::{ArchiveRange, DroppedPartition, PartitionArchive};
use crate::store::sql::{Own, bind, query};
use crate::store::{PgStore, StoreError};

/// How long the archive waits for a partition's lock, or for the table's to drop partitions,
/// before it deletes those rows one by one instead: inserts queue behind a waiting DROP.
const LOCK_TIMEOUT: &str = "5s";

/// A partition name as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A lock that was not granted in time (or a deadlock PostgreSQL broke): not an error here.
fn lock_refused(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("55P03" | "40P01")))
}

/// See the module doc; None when the table is not partitioned (then `archive_node` per node).
pub(crate) async fn archive_partitioned(
    store: &PgStore,
    ranges: &[ArchiveRange],
    before: i64,
) -> Result<Option<PartitionArchive>, StoreError> {
    let Some(layout) = store.partition_layout().await? else {
        return Ok(None);
    };
    let mut own = Own::acquire(store.pool()).await?;
    let mut tx = own.conn().begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"
    )))
    .execute(&mut *tx)
    .await?;
    for r in ranges {
        query(crate::store::INSERT_CHECKPOINT, bind::checkpoint(&r.marker))
            .execute(&mut *tx)
            .await?;
    }
    let mut out = PartitionArchive::default();
    let mut whole = Vec::new();
    // Only partitions wholly before the cut: a later one is written to, and its lock would stop
    // the writers until the commit.
    for p in &layout.partitions {
        if !p.default && p.to.is_some_and(|t| t <= before) {
            match archived_whole(&mut tx, p, ranges).await? {
                Whole::Archived(counts) => whole.push((p.name.clone(), counts)),
                Whole::Not => {}
                Whole::Busy => out.notes.push(format!(
                    "partition {}: its lock was not granted within {LOCK_TIMEOUT}; its archived \
                     rows were deleted one by one",
                    p.name
                )),
            }
        }
    }
    let kept: Vec<&PartitionInfo> = layout
        .partitions
        .iter()
        .filter(|p| !whole.iter().any(|(n, _)| *n == p.name))
        .collect();
    let mut removed = BTreeMap::new();
    for r in ranges {
        let mut n = 0;
        for p in &kept {
            n += delete_range(&mut tx, &p.name, r).await?;
        }
        removed.insert(r.marker.node_id.clone(), n);
    }
    for (_, counts) in &whole {
        for (node, c) in counts {
            *removed.entry(node.clone()).or_default() += c;
        }
    }
    check_counts(ranges, &removed)?;
    delete_obsolete(&mut tx, ranges).await?;
    drop_whole(&mut tx, &whole, ranges, &mut out).await?;
    tx.commit().await?;
    own.keep();
    out.deleted = removed;
    Ok(Some(out))
}

/// Whether a partition holds only archived rows.
enum Whole {
    /// Yes: its rows per node.
    Archived(BTreeMap<String, u64>),
    /// A row outside its node's archived range (or of a node not archived).
    Not,
    /// Its lock was not granted in time.
    Busy,
}

/// Looks at the partition's rows under a SHARE lock held to the commit (nothing can be written
/// to it or deleted from it meanwhile).
async fn archived_whole(
    tx: &mut PgConnection,
    p: &PartitionInfo,
    ranges: &[ArchiveRange],
) -> Result<Whole, StoreError> {
    let name = ident(&p.name);
    sqlx::raw_sql("SAVEPOINT auditseal_part")
        .execute(&mut *tx)
        .await?;
    let locked = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {name} IN SHARE MODE"
    )))
    .execute(&mut *tx)
    .await;
    match locked {
        Err(e) if lock_refused(&e) => {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT auditseal_part")
                .execute(&mut *tx)
                .await?;
            return Ok(Whole::Busy);
        }
        other => other?,
    };
    // Through its unique index on (nodeid, sequencenumber) only (one probe per node for its
    // bounds, then the index range counted): the rows themselves are not read.
    let nodes: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(crate::store::distinct_nodes(&name)))
            .fetch_all(&mut *tx)
            .await?;
    let mut counts = BTreeMap::new();
    for node in nodes {
        let (min, max): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT MIN(sequencenumber), MAX(sequencenumber) FROM {name} WHERE nodeid = $1"
        )))
        .bind(&node)
        .fetch_one(&mut *tx)
        .await?;
        let Some(r) = ranges.iter().find(|r| {
            r.marker.node_id == node && min >= r.first && max <= r.marker.sequence_number
        }) else {
            return Ok(Whole::Not);
        };
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {name} WHERE nodeid = $1 AND sequencenumber >= $2 \
             AND sequencenumber <= $3"
        )))
        .bind(&node)
        .bind(r.first)
        .bind(r.marker.sequence_number)
        .fetch_one(&mut *tx)
        .await?;
        counts.insert(node, count as u64);
    }
    Ok(Whole::Archived(counts))
}

/// Deletes one node's archived rows from one partition; how many.
async fn delete_range(
    tx: &mut PgConnection,
    partition: &str,
    r: &ArchiveRange,
) -> Result<u64, StoreError> {
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {} WHERE nodeid = $1 AND sequencenumber >= $2 AND sequencenumber <= $3",
        ident(partition)
    )))
    .bind(&r.marker.node_id)
    .bind(r.first)
    .bind(r.marker.sequence_number)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

/// Each node must lose exactly the rows its segment holds (as `Store::archive_node`).
fn check_counts(
    ranges: &[ArchiveRange],
    removed: &BTreeMap<String, u64>,
) -> Result<(), StoreError> {
    for r in ranges {
        let n = removed.get(&r.marker.node_id).copied().unwrap_or(0);
        if n != r.rows {
            // The caller drops the transaction: everything is rolled back.
            return Err(StoreError::Inconsistent(format!(
                "node {}: sequence numbers {}..{} hold {n} rows, the archive wrote and verified \
                 {}; nothing was deleted",
                r.marker.node_id, r.first, r.marker.sequence_number, r.rows
            )));
        }
    }
    Ok(())
}

/// The batch statements and checkpoints the archive makes obsolete (as `archive_node`).
async fn delete_obsolete(tx: &mut PgConnection, ranges: &[ArchiveRange]) -> Result<(), StoreError> {
    for r in ranges {
        let m = &r.marker;
        sqlx::query("DELETE FROM auditbatchdata WHERE nodeid = $1 AND lastsequencenumber <= $2")
            .bind(&m.node_id)
            .bind(m.sequence_number)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM auditcheckpointdata WHERE nodeid = $1 AND sequencenumber < $2")
            .bind(&m.node_id)
            .bind(m.sequence_number)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Drops the wholly archived partitions in one statement, last before the commit (it holds the
/// table's exclusive lock until then). When that lock is not granted in time, their rows are
/// deleted one by one instead.
async fn drop_whole(
    tx: &mut PgConnection,
    whole: &[(String, BTreeMap<String, u64>)],
    ranges: &[ArchiveRange],
    out: &mut PartitionArchive,
) -> Result<(), StoreError> {
    if whole.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = whole.iter().map(|(n, _)| ident(n)).collect();
    sqlx::raw_sql("SAVEPOINT auditseal_drop")
        .execute(&mut *tx)
        .await?;
    let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE {}",
        names.join(", ")
    )))
    .execute(&mut *tx)
    .await;
    match dropped {
        Ok(_) => {
            out.dropped = whole
                .iter()
                .map(|(name, counts)| DroppedPartition {
                    name: name.clone(),
                    rows: counts.values().sum(),
                })
                .collect();
            Ok(())
        }
        Err(e) if lock_refused(&e) => {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT auditseal_drop")
                .execute(&mut *tx)
                .await?;
            for (name, _) in whole {
                for r in ranges {
                    delete_range(tx, name, r).await?;
                }
                out.notes.push(format!(
                    "partition {name}: the table's lock was not granted within {LOCK_TIMEOUT} \
                     (long queries or inserts on it); its rows were deleted one by one and the \
                     empty partition is dropped by the next archive"
                ));
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
