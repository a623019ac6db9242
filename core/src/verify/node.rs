//! One node's check as its rows stream by: each chunk's rows checked on every core, folded into
//! the head hash in order, and every checkpoint settled as the rows reach it.

use std::sync::Arc;

use rayon::prelude::*;

use super::chain::verify_chain;
use super::row::{Batches, Leaves, Prepared, RowFailure, verify_prepared};
use super::{FailedCheckpoint, FailedRow, Hole, NodeReport, VerifyOptions, is_hmac};
use crate::crypto::keys::KeyRing;
use crate::format::checkpoint::{Checkpoint, Head, Heads, KIND_ARCHIVE};
use crate::format::merkle::NodeMemo;
use crate::format::protection::Layout;
use crate::format::record::AuditRecord;
use crate::store::Chunk;
use crate::store::{SharedStore, Store, StoreError};

/// What the parallel pass computes for each row.
struct RowCheck {
    leaves: Leaves,
    result: Result<(), RowFailure>,
}

/// The CPU-heavy part of a chunk, spread over every core: each row's protection check and leaf
/// hashes (the protect string's only with `text_fold`, or when the row's version needs it).
fn check_rows(
    keys: &KeyRing,
    batches: &Batches,
    rows: &[AuditRecord],
    text_fold: bool,
) -> Vec<RowCheck> {
    // Each piece of the chunk is checked in order with one memo of Merkle interior nodes.
    rows.par_iter()
        .with_min_len(64)
        .map_init(NodeMemo::default, |memo, r| {
            let prepared = Prepared::new(r);
            let result = verify_prepared(keys, batches, &prepared, memo);
            let leaves = Leaves {
                text: text_fold.then(|| *prepared.text_leaf()),
                canonical: *prepared.canonical_leaf(),
            };
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
pub(super) struct Pending {
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
    pub(super) async fn load_upto(
        &mut self,
        store: &dyn Store,
        seq: i64,
        chunk: i64,
    ) -> Result<(), StoreError> {
        while !self.stored_done && self.after.as_ref().is_none_or(|(s, _)| *s <= seq) {
            let list = store
                .read_checkpoints(Chunk::new(&self.node, self.from, self.after.clone(), chunk))
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
pub(super) struct NodeCheck<'a> {
    keys: &'a KeyRing,
    pub(super) rep: NodeReport,
    expected: i64,
    /// Both folds of the head hash; None when the check did not start where the chain can be
    /// recomputed. Fold 1 moves only with `text_fold`.
    head: Option<Heads>,
    /// Whether fold 1 is computed: only when a checkpoint or the archive marker of the node is
    /// of fold 1 (`decide_text_fold`), as it costs a protect string and a hash per row.
    text_fold: bool,
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
        if c.layout() == Layout::Text && !self.text_fold {
            // Not there when the check began (`decide_text_fold`): written during the check.
            return self.fail_checkpoint(
                source,
                c,
                "a checkpoint of fold 1 that appeared during the check: it was not compared \
                 (run the check again)"
                    .into(),
            );
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
            match &check.leaves.text {
                Some(text) => h.push_leaves(seq, text, &check.leaves.canonical),
                None => h.canonical.push_leaf(seq, &check.leaves.canonical),
            }
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

impl<'a> NodeCheck<'a> {
    /// Reads the node's rows from its offset chunk by chunk, checks each chunk on every core while the
    /// next is read, and folds them in order, settling each checkpoint as the rows reach it.
    pub(super) async fn stream_rows(
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
        let mut rows = store.read_node(Chunk::new(node, from, None, chunk)).await?;
        while let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            batches.forget_before(node, first.sequence_number);
            batches.load_for(store.as_ref(), keys, &rows).await?;
            let last_seq = last.sequence_number;
            let after = (last_seq, last.pk.clone());
            let ring = keys.clone();
            let text_fold = self.text_fold;
            let checking = tokio::task::spawn_blocking(move || {
                let checks = check_rows(&ring, &batches, &rows, text_fold);
                (rows, batches, checks)
            });
            // A short chunk may only have met the read budget (`READ_BUDGET_BYTES`): the node
            // ends at the first empty one.
            let reading = store.read_node(Chunk::new(node, from, Some(after), chunk));
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
    pub(super) fn begin(
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
            text_fold: true,
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
    pub(super) fn pending(
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

    /// Decides whether fold 1 is computed: yes when the archive marker the check starts from, a
    /// checkpoint from a file, or a stored checkpoint the check will compare is of fold 1. The
    /// stored ones are read once more for this, page by page (a few per hour of log). One of
    /// fold 1 stored after this read is reported as not compared, never passed.
    pub(super) async fn decide_text_fold(
        &mut self,
        store: &dyn Store,
        pending: &Pending,
        chunk: i64,
    ) -> Result<(), StoreError> {
        if self.head.is_none() {
            // No head hash to compare with: no fold is needed.
            self.text_fold = false;
            return Ok(());
        }
        self.text_fold = self.base.is_some_and(|(_, fold)| fold == Layout::Text)
            || pending
                .queue
                .iter()
                .any(|(_, c)| c.layout() == Layout::Text);
        let mut after = None;
        while !self.text_fold {
            let list = store
                .read_checkpoints(Chunk::new(&pending.node, pending.from, after, chunk))
                .await?;
            self.text_fold = list.iter().any(|c| c.layout() == Layout::Text);
            match list.last() {
                Some(last) if (list.len() as i64) == chunk => {
                    after = Some((last.sequence_number, last.kind.clone()));
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// After the last row: the checkpoints up to `end` are compared; those after it cover rows
    /// the log no longer has.
    pub(super) fn settle_the_rest(&mut self, pending: &mut Pending, end: Option<i64>) {
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
    pub(super) async fn finish(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::token::HmacToken;
    use crate::format::checkpoint::KIND_CHECKPOINT;

    /// A checkpoint of fold 1 that `decide_text_fold` did not see (one stored during the check)
    /// fails as not compared: without fold 1 computed, it must not pass or be skipped.
    #[test]
    fn a_fold_1_checkpoint_unseen_at_the_start_fails() {
        let token = HmacToken::new(1, b"secret");
        let mut ring = KeyRing::new();
        ring.insert(1, crate::crypto::token::CryptoToken::verify_key(&token));
        let row = AuditRecord {
            sequence_number: 0,
            ..AuditRecord::example()
        };
        let mut text = Head::default().in_fold(Layout::Text);
        text.push(&row);
        let c = Checkpoint::sign(&token, &row.node_id, &text, 1, KIND_CHECKPOINT).unwrap();
        for (text_fold, passes) in [(true, true), (false, false)] {
            let mut nc = NodeCheck::begin(&ring, &row.node_id, None, None, 0, 0);
            nc.text_fold = text_fold;
            let canonical = *Prepared::new(&row).canonical_leaf();
            let leaves = Leaves {
                text: text_fold.then(|| *Prepared::new(&row).text_leaf()),
                canonical,
            };
            nc.row(
                &row,
                RowCheck {
                    leaves,
                    result: Ok(()),
                },
            );
            nc.settle(Source::Database, &c);
            let failed = &nc.rep.failed_checkpoints;
            assert_eq!(failed.is_empty(), passes, "{failed:?}");
            assert_eq!(nc.rep.checkpoints, u64::from(passes));
            if !passes {
                assert!(failed[0].reason.contains("not compared"), "{failed:?}");
            }
        }
    }
}
