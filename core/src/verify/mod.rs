//! Verification: of one row (verify-on-read) and of whole node logs (`verifylog`, spec
//! section 7): every row's protection, every hole, every duplicate sequence number, and every
//! row, batch statement and checkpoint stored where no node's log is (docs/FORMAT.md section 5,
//! "Where a node's log starts").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use rayon::prelude::*;

use crate::crypto::keys::KeyRing;
use crate::format::batch::{BatchRecord, GENESIS_HASH};
use crate::format::canonical;
use crate::format::checkpoint::{Checkpoint, Head, Heads, KIND_ARCHIVE};
use crate::format::merkle::{self};
use crate::format::protection::Layout;
use crate::format::record::AuditRecord;
use crate::store::{SharedStore, Store, StoreError};

mod report;
mod row;

pub use report::{
    EXIT_ERRORS, EXIT_OK, EXIT_WARNINGS, FailedBatch, FailedCheckpoint, FailedRow, Hole, LogReport,
    NodeReport, Outside,
};
pub use row::{Batches, CheckedBatch, Inclusion, Leaves, RowFailure, inclusion, verify_row};
use row::{check_statement, verify_prepared};

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

/// What the parallel pass computes for each row.
struct RowCheck {
    leaves: Leaves,
    result: Result<(), RowFailure>,
}

/// The CPU-heavy part of a chunk, spread over every core: each row's protect string, leaf hash
/// and protection check.
fn check_rows(keys: &KeyRing, batches: &Batches, rows: &[AuditRecord]) -> Vec<RowCheck> {
    rows.par_iter()
        .with_min_len(64)
        .map(|r| {
            let ps = r.protect_string();
            let leaves = Leaves {
                text: merkle::leaf_hash(ps.as_bytes()),
                canonical: canonical::row_leaf(r),
            };
            let result = verify_prepared(keys, batches, r, &ps, &leaves);
            RowCheck { leaves, result }
        })
        .collect()
}

/// Where a checkpoint to compare comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Database,
    File,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Database => "database",
            Source::File => "file",
        }
    }
}

/// The checkpoints of one node waiting to be compared, in sequence order: the stored ones read
/// chunk by chunk as the rows advance (memory stays bounded), the external ones all at once.
struct Pending {
    node: String,
    from: i64,
    /// The archive marker the check starts from: it is the base, not a checkpoint to compare.
    base: Option<i64>,
    after: Option<(i64, String)>,
    stored_done: bool,
    queue: Vec<(Source, Checkpoint)>,
}

impl Pending {
    /// Makes sure every stored checkpoint up to `seq` is queued.
    async fn load_upto(
        &mut self,
        store: &dyn Store,
        seq: i64,
        chunk: i64,
    ) -> Result<(), StoreError> {
        while !self.stored_done && self.after.as_ref().is_none_or(|(s, _)| *s <= seq) {
            let list = store
                .read_checkpoints(&self.node, self.from, self.after.clone(), chunk)
                .await?;
            self.stored_done = (list.len() as i64) < chunk;
            if let Some(last) = list.last() {
                self.after = Some((last.sequence_number, last.kind.clone()));
            }
            let base = self.base;
            self.queue.extend(
                list.into_iter()
                    .filter(|c| !(Some(c.sequence_number) == base && c.kind == KIND_ARCHIVE))
                    .map(|c| (Source::Database, c)),
            );
            self.queue
                .sort_by_key(|(_, c)| std::cmp::Reverse(c.sequence_number));
        }
        Ok(())
    }

    /// Removes and returns the next checkpoint if it covers a sequence number below `seq`.
    fn pop_below(&mut self, seq: i64) -> Option<(Source, Checkpoint)> {
        if self
            .queue
            .last()
            .is_some_and(|(_, c)| c.sequence_number < seq)
        {
            self.queue.pop()
        } else {
            None
        }
    }
}

/// Per-node state while its rows stream by.
struct NodeCheck<'a> {
    keys: &'a KeyRing,
    rep: NodeReport,
    expected: i64,
    /// Both folds of the head hash; None when the check did not start where the chain can be
    /// recomputed.
    head: Option<Heads>,
    /// Checkpoints verified but not compared with the rows (no head hash to compare with).
    /// How many, and the lowest and highest sequence number among them.
    uncompared: (usize, i64, i64),
    /// HMAC keyids that protected checkpoints or batch statements of the node.
    hmac_evidence: std::collections::BTreeSet<i32>,
    /// The archive marker the check starts from: its sequence number and fold.
    base: Option<(i64, Layout)>,
}

impl NodeCheck<'_> {
    fn fail_checkpoint(&mut self, source: Source, c: &Checkpoint, reason: String) {
        self.rep.failed_checkpoints.push(FailedCheckpoint {
            sequence_number: c.sequence_number,
            source: source.name(),
            reason,
        });
    }

    /// Compares a checkpoint with the head hash the rows gave up to its sequence number (the
    /// rows up to it have all been folded in, and none after it).
    fn settle(&mut self, source: Source, c: &Checkpoint) {
        if let Err(reason) = c.check(self.keys) {
            return self.fail_checkpoint(source, c, reason);
        }
        if is_hmac(self.keys, c.key_id) {
            self.hmac_evidence.insert(c.key_id);
        }
        let Some(heads) = self.head else {
            // One note for them all at the end: a year of checkpoints is half a million.
            let (n, lo, hi) = self.uncompared;
            self.uncompared = if n == 0 {
                (1, c.sequence_number, c.sequence_number)
            } else {
                (n + 1, lo.min(c.sequence_number), hi.max(c.sequence_number))
            };
            return;
        };
        if let Some((at, fold)) = self.base
            && c.sequence_number == at
            && c.layout() != fold
        {
            // At the marker only the marker's fold is known: the rows are archived.
            self.rep.notes.push(format!(
                "the {source} checkpoint at sequence {at} is of fold {}, the archive marker \
                 there of fold {}: it verified but cannot be compared (its rows are archived; \
                 docs/FORMAT.md 7.4)",
                c.layout().number(),
                fold.number(),
                source = source.name(),
            ));
            return;
        }
        // The fold the checkpoint names (docs/FORMAT.md 7.1).
        let head = heads.get(c.layout());
        if head.sequence_number != c.sequence_number {
            return self.fail_checkpoint(
                source,
                c,
                format!(
                    "covers sequence {} but the log has no row {} (the last row before it is {})",
                    c.sequence_number, c.sequence_number, head.sequence_number
                ),
            );
        }
        if hex::encode(head.hash) != c.head_hash {
            return self.fail_checkpoint(
                source,
                c,
                "the head hash of the rows up to it differs: a covered row was changed, \
                 removed or added"
                    .into(),
            );
        }
        self.rep.checkpoints += 1;
    }

    fn row(&mut self, r: &AuditRecord, check: RowCheck) {
        let seq = r.sequence_number;
        let rep = &mut self.rep;
        if rep.last_sequence == Some(seq) {
            rep.duplicates.push(seq);
        } else if seq > self.expected {
            rep.holes.push(Hole {
                last_verified_sequence_number: rep.last_sequence,
                this_sequence_number: seq,
                missing: seq - self.expected,
            });
        }
        if rep.first_sequence.is_none() {
            rep.first_sequence = Some(seq);
        }
        rep.last_sequence = Some(seq);
        self.expected = seq + 1;
        rep.rows += 1;
        if let Some(h) = &mut self.head {
            h.push_leaves(seq, &check.leaves.text, &check.leaves.canonical);
        }
        if let Err(reason) = check.result {
            rep.failed.push(FailedRow {
                sequence_number: seq,
                pk: r.pk.clone(),
                reason: reason.to_string(),
            });
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

impl<'a> NodeCheck<'a> {
    /// Reads the node's rows from its offset chunk by chunk, checks each chunk on every core while the
    /// next is read, and folds them in order, settling each checkpoint as the rows reach it.
    async fn stream_rows(
        &mut self,
        store: &SharedStore,
        keys: &Arc<KeyRing>,
        chunk: i64,
        pending: &mut Pending,
        opts: &VerifyOptions,
    ) -> Result<(), StoreError> {
        let (node, from) = (self.rep.node_id.clone(), self.rep.offset);
        let node = node.as_str();
        let mut batches = Batches::default();
        let mut rows = store.read_node(node, from, None, chunk).await?;
        while let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            batches.forget_before(node, first.sequence_number);
            batches.load_for(store.as_ref(), keys, &rows).await?;
            let last_seq = last.sequence_number;
            let after = (last_seq, last.pk.clone());
            let ring = keys.clone();
            let checking = tokio::task::spawn_blocking(move || {
                let checks = check_rows(&ring, &batches, &rows);
                (rows, batches, checks)
            });
            // A short chunk may only have met the read budget (`READ_BUDGET_BYTES`): the node
            // ends at the first empty one.
            let reading = store.read_node(node, from, Some(after), chunk);
            let (checked, next) = tokio::join!(checking, reading);
            let (done, b, checks) = checked
                .map_err(|e| StoreError::Database(format!("verification task failed: {e}")))?;
            batches = b;
            pending.load_upto(store.as_ref(), last_seq, chunk).await?;
            let n = done.len() as u64;
            for (r, check) in done.iter().zip(checks) {
                while let Some((src, c)) = pending.pop_below(r.sequence_number) {
                    self.settle(src, &c);
                }
                self.row(r, check);
            }
            opts.progress.advance(node, n);
            rows = next?;
        }
        Ok(())
    }

    /// The check of `node` from `from`: its archive marker (if any) checked, and the head hash
    /// to fold from when the check starts where the chain can be recomputed.
    fn begin(
        keys: &'a KeyRing,
        node: &str,
        offset: Option<i64>,
        base: Option<&Checkpoint>,
        start: i64,
        from: i64,
    ) -> Self {
        let mut nc = NodeCheck {
            keys,
            rep: NodeReport {
                node_id: node.to_string(),
                offset: from,
                archived_up_to: base.map(|b| b.sequence_number),
                ..Default::default()
            },
            expected: from,
            head: None,
            uncompared: (0, 0, 0),
            hmac_evidence: Default::default(),
            base: base.map(|b| (b.sequence_number, b.layout())),
        };
        if let Some(o) = offset
            && o < start
        {
            nc.rep.notes.push(format!(
                "rows up to {} are archived: the check starts at {start}, not {o}",
                start - 1
            ));
        }
        if from == start {
            nc.head = match base {
                None => Some(Heads::from(Head::default())),
                Some(b) => Head::of(b).map(Heads::from),
            };
        }
        if let Some(b) = base
            && let Err(reason) = b.check(keys)
        {
            nc.rep.failed_checkpoints.push(FailedCheckpoint {
                sequence_number: b.sequence_number,
                source: "archive",
                reason: format!("the archive marker does not verify: {reason}"),
            });
            nc.head = None;
        }
        nc.rep.chain_checked = nc.head.is_some();
        nc
    }

    /// The checkpoints to compare as the rows stream by: the stored ones (read as the rows
    /// advance) and the external ones at or after `from`; external ones before it can only be
    /// compared with the archive marker, or are noted.
    fn pending(
        &mut self,
        node: &str,
        start: i64,
        from: i64,
        base: Option<&Checkpoint>,
        opts: &VerifyOptions,
    ) -> Pending {
        let mut pending = Pending {
            node: node.to_string(),
            // From the marker's sequence number when the check starts at the marker: a
            // checkpoint there is compared with the marker's head hash.
            from: match base {
                Some(b) if from == start => b.sequence_number,
                _ => from,
            },
            base: base.map(|b| b.sequence_number),
            after: None,
            stored_done: false,
            queue: Vec::new(),
        };
        for c in opts.external.get(node).into_iter().flatten() {
            if c.sequence_number >= from {
                pending.queue.push((Source::File, c.clone()));
            } else if let Some(b) = base
                && self.head.is_some()
                && c.sequence_number == b.sequence_number
            {
                // No row folded in yet: the head is still the archive marker's, at its sequence.
                self.settle(Source::File, c);
            } else if let Err(reason) = c.check(self.keys) {
                self.fail_checkpoint(Source::File, c, reason);
            } else {
                self.rep.notes.push(format!(
                    "file checkpoint at sequence {} is in the archived range (up to {}): check \
                     it against the archive segment with verify-export",
                    c.sequence_number,
                    start - 1
                ));
            }
        }
        pending
            .queue
            .sort_by_key(|(_, c)| std::cmp::Reverse(c.sequence_number));
        pending
    }

    /// After the last row: the checkpoints up to `end` are compared; those after it cover rows
    /// the log no longer has.
    fn settle_the_rest(&mut self, pending: &mut Pending, end: Option<i64>) {
        while let Some((src, c)) = pending.pop_below(end.map_or(i64::MIN, |l| l + 1)) {
            self.settle(src, &c);
        }
        while let Some((src, c)) = pending.pop_below(i64::MAX) {
            if let Err(reason) = c.check(self.keys) {
                self.fail_checkpoint(src, &c, reason);
                continue;
            }
            let reason = format!(
                "covers rows up to {} but the node's log ends at {}: rows were deleted after it",
                c.sequence_number,
                end.map_or("nothing".to_string(), |l| l.to_string())
            );
            self.fail_checkpoint(src, &c, reason);
        }
    }

    /// The node's report: its notes, head hash, the chain of its batch statements.
    async fn finish(
        self,
        store: &dyn Store,
        chunk: i64,
        from: i64,
    ) -> Result<NodeReport, StoreError> {
        let NodeCheck {
            keys,
            mut rep,
            head,
            uncompared,
            mut hmac_evidence,
            ..
        } = self;
        if let (n @ 1.., first, last) = uncompared {
            rep.notes.push(format!(
                "{n} checkpoint(s) at sequence {first}..{last} verified but not compared: the \
                 check did not start at the node's first row"
            ));
        }
        rep.head_hash = head
            .filter(|_| rep.rows > 0)
            .map(|h| hex::encode(h.canonical.hash));
        verify_chain(store, keys, &mut rep, chunk, &mut hmac_evidence).await?;
        if !hmac_evidence.is_empty() {
            let ids: Vec<String> = hmac_evidence.iter().map(i32::to_string).collect();
            rep.notes.push(format!(
                "checkpoints or batch statements of this node are protected with HMAC keyid {}: \
                 every verifier holds that secret and could have made them; sign them with an \
                 RSA or EC key and set protection.evidence = \"asymmetric\" (docs/FORMAT.md \
                 section 11)",
                ids.join(", ")
            ));
        }
        if rep.rows == 0 && rep.archived_up_to.is_none() {
            rep.warnings
                .push(format!("no rows with sequenceNumber >= {from}"));
        }
        Ok(rep)
    }
}

/// The batch statements of a node that end at or after the offset: each verifies, each names the
/// hash of the one before (the first names 64 zeros when the check starts at sequence 0; after
/// an archive marker or from an offset, the one it names is not read), none overlaps the next,
/// none starts below 0 or ends before it starts, none claims rows after the node's last row, and
/// each covers at least one of the node's rows (the rows themselves were checked in
/// `verify_node`; statements that end below the start were counted there).
async fn verify_chain(
    store: &dyn Store,
    keys: &KeyRing,
    rep: &mut NodeReport,
    chunk: i64,
    hmac_evidence: &mut std::collections::BTreeSet<i32>,
) -> Result<(), StoreError> {
    let mut previous: Option<BatchRecord> = None;
    let mut after = None;
    loop {
        let list = store
            .read_batches(&rep.node_id, rep.offset, after, chunk)
            .await?;
        let Some(last) = list.last() else { break };
        after = Some(last.first_sequence_number);
        let full = list.len() as i64 == chunk;
        for b in list {
            rep.batches += 1;
            let covered = covers_a_row(rep, b.first_sequence_number, b.last_sequence_number);
            let mut fail = |reason: String| {
                rep.failed_batches.push(FailedBatch {
                    first_sequence_number: b.first_sequence_number,
                    last_sequence_number: b.last_sequence_number,
                    reason,
                })
            };
            if b.last_sequence_number < b.first_sequence_number {
                fail("lastSequenceNumber is below firstSequenceNumber: it covers no row".into());
            } else if b.first_sequence_number < 0 {
                fail("starts below 0, where every node's log starts".into());
            }
            if let Err(reason) = check_statement(keys, &b) {
                fail(format!("statement does not verify: {reason}"));
            } else if is_hmac(keys, b.key_id) {
                hmac_evidence.insert(b.key_id);
            }
            match &previous {
                Some(p) if b.previous_hash != p.statement_hash() => fail(format!(
                    "previousHash does not match the statement of batch {}..{}: the chain is broken",
                    p.first_sequence_number, p.last_sequence_number
                )),
                Some(p) if b.first_sequence_number <= p.last_sequence_number => fail(format!(
                    "overlaps batch {}..{}",
                    p.first_sequence_number, p.last_sequence_number
                )),
                None if rep.offset == 0 && b.previous_hash != GENESIS_HASH => fail(
                    "the node's first batch names a previous statement that is not there".into(),
                ),
                _ => {}
            }
            if b.last_sequence_number < b.first_sequence_number {
                // Reported above.
            } else if rep.last_sequence.is_none_or(|l| b.last_sequence_number > l) {
                fail(format!(
                    "claims rows up to {} but the node's log ends at {}: rows were deleted",
                    b.last_sequence_number,
                    rep.last_sequence
                        .map_or("nothing".to_string(), |l| l.to_string())
                ));
            } else if !covered {
                fail(format!(
                    "covers no row of the node's log: sequence {}..{} are all missing",
                    b.first_sequence_number.max(rep.offset),
                    b.last_sequence_number
                ));
            }
            previous = Some(b);
        }
        if !full {
            break;
        }
    }
    Ok(())
}

fn is_hmac(keys: &KeyRing, keyid: i32) -> bool {
    keys.get(keyid)
        .is_some_and(|k| k.algorithm() == crate::crypto::token::Algorithm::HmacSha256)
}

/// Whether the rows the node check read (from its offset on) hold any sequence number in
/// `first..=last`, from the first and last row and the holes between them.
fn covers_a_row(rep: &NodeReport, first: i64, last: i64) -> bool {
    let (Some(lowest), Some(highest)) = (rep.first_sequence, rep.last_sequence) else {
        return false;
    };
    let (lo, hi) = (first.max(lowest).max(rep.offset), last.min(highest));
    if lo > hi {
        return false;
    }
    // Within the rows' span, lo..=hi holds no row only if one hole spans all of it: the first
    // hole that ends after hi, when the row before it is below lo.
    let i = rep.holes.partition_point(|h| h.this_sequence_number <= hi);
    match rep.holes.get(i) {
        Some(h) => h.last_verified_sequence_number.is_some_and(|l| l >= lo),
        None => true,
    }
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
            let mut nodes = store.all_nodes().await?;
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
mod tests {
    use crate::format::batch;
    use crate::format::protection::{ProtectionVersion, RowProtection};

    #[tokio::test]
    async fn a_dropped_node_task_stops() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let finished = std::sync::Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        let task = super::AbortOnDrop(tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            f.store(true, Ordering::SeqCst);
        }));
        drop(task);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!finished.load(Ordering::SeqCst), "the task ran on");
    }

    use super::*;

    #[test]
    fn the_report_counts_verified_rows_without_the_failed_ones_and_says_1_checkpoint() {
        let node = NodeReport {
            node_id: "n".into(),
            rows: 3,
            first_sequence: Some(0),
            last_sequence: Some(2),
            checkpoints: 1,
            failed: vec![FailedRow {
                sequence_number: 1,
                pk: "p".into(),
                reason: "wrong signature".into(),
            }],
            ..Default::default()
        };
        let report = LogReport {
            nodes: vec![node],
            rows: 3,
            errors: 1,
            warnings: 0,
            elapsed_ms: 1,
        };
        let text = report.to_string();
        assert!(
            text.contains("Node n: verified 2 rows from offset 0 (sequence 0..2), 1 row failed"),
            "{text}"
        );
        assert!(text.contains("  1 checkpoint matched\n"), "{text}");
        assert!(
            text.contains("Summary: 1 node, 2 rows verified, 1 error, 0 warnings"),
            "{text}"
        );
    }

    /// `inclusion` follows each row's stored proof to its batch's root, for both batch versions;
    /// a changed row's proof leads elsewhere.
    #[test]
    fn a_batched_rows_inclusion_leads_to_its_statements_root() {
        let token = crate::crypto::token::HmacToken::new(1, b"inclusion secret");
        for v in [ProtectionVersion::Batch, ProtectionVersion::BatchCanonical] {
            let mut rows: Vec<AuditRecord> = attack_events()
                .into_iter()
                .enumerate()
                .map(|(i, e)| e.into_record("n", 10 + i as i64, 1_764_072_000_000))
                .collect();
            let b = batch::seal("n", &mut rows, &token, 1, GENESIS_HASH.into(), v).unwrap();
            for (i, r) in rows.iter().enumerate() {
                let p = RowProtection::parse(r.row_protection.as_deref().unwrap()).unwrap();
                let inc = inclusion(r, &p).unwrap();
                assert_eq!((inc.first_sequence_number, inc.tree_size), (10, 3));
                assert_eq!((inc.index, inc.leaf), (i as i64, batch::leaf(v, r)));
                assert_eq!(inc.root.map(hex::encode), Ok(b.merkle_root.clone()));
            }
            let mut changed = rows[1].clone();
            changed.event_status = "FAILURE".into();
            let p = RowProtection::parse(changed.row_protection.as_deref().unwrap()).unwrap();
            let root = inclusion(&changed, &p).unwrap().root.unwrap();
            assert_ne!(hex::encode(root), b.merkle_root);
        }
    }

    /// The rows of issue 12.3's attack: row 0 has a null customId, row 1 searchDetail1
    /// `a<sep/>b` and searchDetail2 `c`.
    fn attack_events() -> Vec<crate::device::NewEvent> {
        (0..3)
            .map(|i| {
                let mut e = crate::device::test_event(i);
                if i == 1 {
                    e.search_detail1 = Some("a<sep/>b".into());
                    e.search_detail2 = Some("c".into());
                }
                e
            })
            .collect()
    }

    /// Writes `attack_events` as node `node` in one batch of `version` with the old code path
    /// (version 3) or the batched device (what it writes now).
    async fn write_attack_rows(
        store: &SharedStore,
        token: &crate::crypto::token::SharedToken,
        node: &str,
        version: Option<ProtectionVersion>,
    ) {
        match version {
            None => {
                let cfg = crate::device::batched::BatchedConfig {
                    max_batch: 10,
                    max_wait: std::time::Duration::from_millis(50),
                    queue: 100,
                };
                let d = crate::device::batched::BatchedDevice::start(
                    store.clone(),
                    node.into(),
                    Some(token.clone()),
                    cfg,
                )
                .await
                .unwrap();
                use crate::device::LogDevice;
                d.append_all(attack_events()).await.unwrap();
            }
            Some(v) => {
                let lock = store.lock_node(node).await.unwrap();
                let mut rows: Vec<AuditRecord> = attack_events()
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| e.into_record(node, i as i64, 1_764_072_000_000))
                    .collect();
                let b = batch::seal(
                    node,
                    &mut rows,
                    token.as_ref(),
                    1_764_072_000_000,
                    GENESIS_HASH.into(),
                    v,
                )
                .unwrap();
                store
                    .insert_batch(&rows, Some(&b), &lock.fence())
                    .await
                    .unwrap();
            }
        }
    }

    /// Issue 12.3: with the protect string as the leaf, a null column changed to "" and a
    /// `<sep/>` moved between two adjacent columns leave every leaf as it was. The batched
    /// device's rows (version 4) catch both; version 3 rows, already written, do not (the known
    /// limitation of version 3, docs/FORMAT.md 6.6).
    #[tokio::test]
    async fn batched_rows_catch_a_null_made_empty_and_a_moved_separator_v3_rows_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let token: crate::crypto::token::SharedToken =
            Arc::new(crate::crypto::token::HmacToken::new(1, b"attack secret"));
        let mut ring = KeyRing::new();
        ring.insert(1, token.verify_key());
        let keys = Arc::new(ring);
        write_attack_rows(&store, &token, "v3", Some(ProtectionVersion::Batch)).await;
        write_attack_rows(&store, &token, "now", None).await;
        let verify = || async {
            verify_log(&store, &keys, &Selection::All, &Default::default())
                .await
                .unwrap()
        };
        let rep = verify().await;
        assert_eq!((rep.rows, rep.errors), (6, 0), "{rep}");

        let side = crate::store::SqliteStore::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "UPDATE auditrecorddata SET customid = '' WHERE sequencenumber = 0;
             UPDATE auditrecorddata SET searchdetail1 = 'a', searchdetail2 = 'b<sep/>c'
               WHERE sequencenumber = 1",
        )
        .execute(side.pool())
        .await
        .unwrap();
        let rep = verify().await;
        let node = |id: &str| rep.nodes.iter().find(|n| n.node_id == id).unwrap();
        let failed: Vec<i64> = node("now")
            .failed
            .iter()
            .map(|f| f.sequence_number)
            .collect();
        assert_eq!(failed, vec![0, 1], "{rep}");
        assert!(
            node("now").failed[0].reason.contains("the row was changed"),
            "{rep}"
        );
        // The known limitation of version 3: the same edits pass.
        assert_eq!(node("v3").errors(), 0, "{rep}");
    }

    /// Issue 12.3, the head hash: a checkpoint kept outside the database catches both edits on
    /// rows of every protection version when it is of fold 2 (canonical leaves); one of fold 1
    /// (the protect string's leaves, older releases) does not, whatever the rows' version.
    #[tokio::test]
    async fn fold_2_checkpoints_catch_the_edits_on_rows_of_every_version_fold_1_does_not() {
        use crate::device::LogDevice;
        use crate::format::checkpoint::KIND_CHECKPOINT;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let token: crate::crypto::token::SharedToken =
            Arc::new(crate::crypto::token::HmacToken::new(1, b"attack secret"));
        let mut ring = KeyRing::new();
        ring.insert(1, token.verify_key());
        let keys = Arc::new(ring);
        write_attack_rows(&store, &token, "v3", Some(ProtectionVersion::Batch)).await;
        write_attack_rows(&store, &token, "v4", None).await;
        let d =
            crate::device::SequentialDevice::start(store.clone(), "v1".into(), Some(token.clone()))
                .await
                .unwrap();
        for e in attack_events() {
            d.append(e).await.unwrap();
        }
        let mut external = HashMap::new();
        for node in ["v1", "v3", "v4"] {
            let rows = store.read_node(node, 0, None, 100).await.unwrap();
            let mut heads = Heads::from(Head::default());
            rows.iter().for_each(|r| heads.push(r));
            let sign =
                |h: &Head| Checkpoint::sign(token.as_ref(), node, h, 1, KIND_CHECKPOINT).unwrap();
            external.insert(
                node.to_string(),
                vec![sign(&heads.text), sign(&heads.canonical)],
            );
        }
        let opts = VerifyOptions {
            external: Arc::new(external),
            ..Default::default()
        };
        let verify = || async {
            verify_log(&store, &keys, &Selection::All, &opts)
                .await
                .unwrap()
        };
        let rep = verify().await;
        assert_eq!((rep.rows, rep.errors), (9, 0), "{rep}");
        assert!(rep.nodes.iter().all(|n| n.checkpoints == 2), "{rep:?}");

        let side = crate::store::SqliteStore::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "UPDATE auditrecorddata SET customid = '' WHERE sequencenumber = 0;
             UPDATE auditrecorddata SET searchdetail1 = 'a', searchdetail2 = 'b<sep/>c'
               WHERE sequencenumber = 1",
        )
        .execute(side.pool())
        .await
        .unwrap();
        let rep = verify().await;
        for n in &rep.nodes {
            // Fold 1 still matches; fold 2 does not.
            assert_eq!(n.checkpoints, 1, "{rep}");
            assert_eq!(n.failed_checkpoints.len(), 1, "{rep}");
            assert!(
                n.failed_checkpoints[0].reason.contains("head hash"),
                "{rep}"
            );
            let failed_rows = if n.node_id == "v4" { 2 } else { 0 };
            assert_eq!(n.failed.len(), failed_rows, "{rep}");
        }
    }

    /// An idle node with an older release's checkpoint (fold 1) at its last row, archived whole
    /// by this release (a marker of fold 2 at the same sequence): archiving keeps the
    /// checkpoint, and its head hash, of the other fold, is not the marker's. It cannot be
    /// compared any more (its rows are in the segment), which is a note, not an error.
    #[tokio::test]
    async fn a_fold_1_checkpoint_at_a_fold_2_archive_marker_is_noted_not_failed() {
        use crate::device::LogDevice;
        use crate::format::checkpoint::{KIND_ARCHIVE, KIND_CHECKPOINT};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let token: crate::crypto::token::SharedToken =
            Arc::new(crate::crypto::token::HmacToken::new(1, b"secret"));
        let mut ring = KeyRing::new();
        ring.insert(1, token.verify_key());
        let keys = Arc::new(ring);
        let d = crate::device::SequentialDevice::start(
            store.clone(),
            "idle".into(),
            Some(token.clone()),
        )
        .await
        .unwrap();
        for e in attack_events() {
            d.append(e).await.unwrap();
        }
        let rows = store.read_node("idle", 0, None, 100).await.unwrap();
        let mut heads = Heads::from(Head::default());
        rows.iter().for_each(|r| heads.push(r));
        let old = Checkpoint::sign(token.as_ref(), "idle", &heads.text, 1, KIND_CHECKPOINT);
        store.insert_checkpoint(&old.unwrap()).await.unwrap();
        let marker =
            Checkpoint::sign(token.as_ref(), "idle", &heads.canonical, 2, KIND_ARCHIVE).unwrap();
        assert_eq!(marker.layout(), Layout::Canonical);
        assert_eq!(store.archive_node(&marker, 0, 3).await.unwrap(), 3);
        let rep = verify_log(&store, &keys, &Selection::All, &Default::default())
            .await
            .unwrap();
        assert_eq!(rep.errors, 0, "{rep}");
        assert!(
            rep.nodes[0].notes.iter().any(|n| n.contains("fold 1")),
            "{rep:?}"
        );
    }

    #[test]
    fn a_statement_covers_a_row_unless_a_hole_or_the_ends_hold_all_of_it() {
        // Rows 10..=12, 15, 20..=21 of a check from 10: holes 13..=14 and 16..=19.
        let rep = NodeReport {
            offset: 10,
            first_sequence: Some(10),
            last_sequence: Some(21),
            holes: vec![
                Hole {
                    last_verified_sequence_number: Some(12),
                    this_sequence_number: 15,
                    missing: 2,
                },
                Hole {
                    last_verified_sequence_number: Some(15),
                    this_sequence_number: 20,
                    missing: 4,
                },
            ],
            ..Default::default()
        };
        for (first, last, covers) in [
            (10, 10, true),
            (12, 13, true),
            (13, 14, false),
            (13, 15, true),
            (16, 19, false),
            (14, 17, true),
            (19, 25, true),
            (0, 9, false),
            (22, 30, false),
            (5, 10, true),
        ] {
            assert_eq!(covers_a_row(&rep, first, last), covers, "{first}..{last}");
        }
        // A hole right at the offset: rows start at 13.
        let rep = NodeReport {
            offset: 10,
            first_sequence: Some(13),
            last_sequence: Some(13),
            holes: vec![Hole {
                last_verified_sequence_number: None,
                this_sequence_number: 13,
                missing: 3,
            }],
            ..Default::default()
        };
        assert!(!covers_a_row(&rep, 10, 12));
        assert!(covers_a_row(&rep, 10, 13));
        assert!(!covers_a_row(&NodeReport::default(), 0, 5));
    }

    #[test]
    fn node_args() {
        assert_eq!(parse_node_arg("node1"), Ok(("node1".into(), None)));
        assert_eq!(parse_node_arg("node1:42"), Ok(("node1".into(), Some(42))));
        assert_eq!(parse_node_arg("a:b:7"), Ok(("a:b".into(), Some(7))));
        assert!(parse_node_arg("node1:x").is_err());
        assert!(parse_node_arg("node1:-1").is_err());
        assert!(parse_node_arg("").is_err());
        assert!(parse_node_arg("a\0b").is_err());
    }
}
