//! Verification: of one row (verify-on-read) and of whole node logs (`verifylog`, spec
//! section 7): every row's protection, every hole, every duplicate sequence number, and every
//! row, batch statement and checkpoint stored where no node's log is (docs/FORMAT.md section 5,
//! "Where a node's log starts").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};

use crate::crypto::keys::KeyRing;
use crate::format::checkpoint::Checkpoint;
use crate::store::{SharedStore, Store, StoreError};

mod chain;
mod node;
mod report;
mod row;

use node::NodeCheck;
pub use report::{
    EXIT_ERRORS, EXIT_OK, EXIT_WARNINGS, FailedBatch, FailedCheckpoint, FailedRow, Hole, LogReport,
    NodeReport, Outside,
};
pub use row::{Batches, CheckedBatch, Inclusion, Leaves, RowFailure, inclusion, verify_row};

/// Which nodes to check: all, or named nodes, each from where its log starts (after its archive
/// marker) or from an explicit offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Nodes(Vec<(String, Option<i64>)>),
}

/// Parses `NAME` or `NAME:OFFSET` (the offset is after the last ':').
pub fn parse_node_arg(s: &str) -> Result<(String, Option<i64>), String> {
    // No node id holds NUL (PostgreSQL text cannot), and it cannot be looked up there.
    if s.contains('\0') {
        return Err(format!("{s:?}: a node name cannot contain a NUL character"));
    }
    match s.rsplit_once(':') {
        Some((name, off)) if !name.is_empty() => off
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .map(|o| (name.to_string(), Some(o)))
            .ok_or_else(|| format!("{s:?}: the offset after ':' must be a non-negative integer")),
        _ if !s.is_empty() => Ok((s.to_string(), None)),
        _ => Err("empty node name".to_string()),
    }
}

/// Rows read per round trip; memory stays bounded by this whatever the table's size.
pub const CHUNK: i64 = 5000;

/// Nodes checked at once at most: each holds up to two chunks in memory, and its rows are already
/// spread over every core, so more would only add memory.
pub const MAX_PARALLEL_NODES: usize = 4;

/// Told how far each node's check has come (the CLI draws a progress bar from it).
pub trait Progress: Send + Sync {
    /// A node's check starts; `expected` rows (an estimate from its highest sequence number).
    fn start(&self, _node: &str, _expected: u64) {}
    /// `rows` more rows of `node` were checked.
    fn advance(&self, _node: &str, _rows: u64) {}
    fn finish(&self, _node: &str) {}
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// How to verify.
#[derive(Clone)]
pub struct VerifyOptions {
    pub chunk: i64,
    /// Nodes checked at the same time (each also spreads its rows over every core).
    pub parallel_nodes: usize,
    /// Checkpoints saved outside the database (`--checkpoint FILE`), by node.
    pub external: Arc<HashMap<String, Vec<Checkpoint>>>,
    pub progress: Arc<dyn Progress>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            chunk: CHUNK,
            parallel_nodes: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(MAX_PARALLEL_NODES),
            external: Arc::default(),
            progress: Arc::new(Silent),
        }
    }
}

/// Verifies one node: every row from where its log starts (or `offset`), streamed in sequence
/// order; each chunk's rows are checked on every core while the next chunk is read; then the
/// chain of batch statements and every checkpoint.
pub async fn verify_node(
    store: &SharedStore,
    keys: &Arc<KeyRing>,
    node: &str,
    offset: Option<i64>,
    opts: &VerifyOptions,
) -> Result<NodeReport, StoreError> {
    let chunk = opts.chunk.max(1);
    let base = store.archive_base(node).await?;
    let start = base.as_ref().map_or(0, |b| b.sequence_number + 1);
    let from = match offset {
        Some(o) if o > start => o,
        _ => start,
    };
    let mut nc = NodeCheck::begin(keys, node, offset, base.as_ref(), start, from);
    count_outside(store.as_ref(), node, start, base.as_ref(), &mut nc.rep).await?;
    let mut pending = nc.pending(node, start, from, base.as_ref(), opts);
    nc.decide_text_fold(store.as_ref(), &pending, chunk).await?;
    let expected_rows = store
        .head(node)
        .await?
        .next_sequence
        .saturating_sub(from)
        .max(0) as u64;
    opts.progress.start(node, expected_rows);
    nc.stream_rows(store, keys, chunk, &mut pending, opts)
        .await?;
    // Without rows after it, the log ends at the archive marker.
    let end = nc
        .rep
        .last_sequence
        .or(base.as_ref().map(|b| b.sequence_number));
    pending.load_upto(store.as_ref(), i64::MAX, chunk).await?;
    nc.settle_the_rest(&mut pending, end);
    opts.progress.finish(node);
    nc.finish(store.as_ref(), chunk, from).await
}

/// Counts what the node's tables hold below where its log starts (below 0, or at or below the
/// archive marker): nothing belongs there. Archiving deletes the rows up to its marker, the
/// statements that end there and the checkpoints below it (a checkpoint at the marker's sequence
/// number stays, and is compared with the marker).
async fn count_outside(
    store: &dyn Store,
    node: &str,
    start: i64,
    base: Option<&Checkpoint>,
    rep: &mut NodeReport,
) -> Result<(), StoreError> {
    let below = store
        .below_start(node, start, base.map_or(0, |b| b.sequence_number))
        .await?;
    let (rows_why, batches_why, checkpoints_why) = match base {
        None => {
            let why = "below 0, where every node's log starts: no row, statement or checkpoint \
                       belongs there";
            (why.to_string(), why.to_string(), why.to_string())
        }
        Some(b) => {
            let l = b.sequence_number;
            (
                format!(
                    "at or below the archive marker at {l}; the node's log starts at {} \
                     (archiving deleted the rows up to the marker)",
                    l.saturating_add(1)
                ),
                format!(
                    "ending at or below the archive marker at {l} (archiving deleted the \
                     statements that end there)"
                ),
                format!(
                    "below the archive marker at {l} (archiving deleted the checkpoints below \
                     it)"
                ),
            )
        }
    };
    rep.outside.extend(
        [
            Outside::of("AuditRecordData", below.rows, rows_why),
            Outside::of("AuditBatchData", below.batches, batches_why),
            Outside::of("AuditCheckpointData", below.checkpoints, checkpoints_why),
        ]
        .into_iter()
        .flatten(),
    );
    Ok(())
}

fn is_hmac(keys: &KeyRing, keyid: i32) -> bool {
    keys.get(keyid)
        .is_some_and(|k| k.algorithm() == crate::crypto::token::Algorithm::HmacSha256)
}

/// A spawned task that is aborted when its handle is dropped: when the caller of `verify_log`
/// gives up (a request timeout, a node's error), no node goes on reading the log unseen.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Verifies the selected nodes, several at a time, and sums the findings (nodes in name order).
/// With `Selection::All`, every node id found in any of the log's tables (rows, batch statements,
/// checkpoints, archive markers) is checked, and so are nodes that only an external checkpoint
/// names: their rows are all gone.
pub async fn verify_log(
    store: &SharedStore,
    keys: &Arc<KeyRing>,
    selection: &Selection,
    opts: &VerifyOptions,
) -> Result<LogReport, StoreError> {
    let started = Instant::now();
    let targets: Vec<(String, Option<i64>)> = match selection {
        Selection::All => {
            let mut nodes = store.all_nodes(None).await?;
            for n in opts.external.keys() {
                if !nodes.contains(n) {
                    nodes.push(n.clone());
                }
            }
            nodes.sort();
            nodes.into_iter().map(|n| (n, None)).collect()
        }
        Selection::Nodes(list) => list.clone(),
    };
    // Each node is its own task, so reading and decoding its rows runs on its own worker thread.
    let mut reports: Vec<NodeReport> = futures::stream::iter(targets)
        .map(|(node, offset)| {
            let (store, keys, opts) = (store.clone(), keys.clone(), opts.clone());
            AbortOnDrop(tokio::spawn(async move {
                verify_node(&store, &keys, &node, offset, &opts).await
            }))
        })
        .buffered(opts.parallel_nodes.max(1))
        .map(|joined| {
            joined.unwrap_or_else(|e| {
                Err(StoreError::Database(format!(
                    "verification task failed: {e}"
                )))
            })
        })
        .try_collect()
        .await?;
    reports.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let mut report = LogReport::default();
    for n in reports {
        report.rows += n.rows;
        report.errors += n.errors();
        report.warnings += n.warnings.len();
        report.nodes.push(n);
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

#[cfg(test)]
mod tests;
