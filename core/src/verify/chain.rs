//! The chain of a node's batch statements, checked after its rows.

use super::row::check_statement;
use super::{FailedBatch, NodeReport, is_hmac};
use crate::crypto::keys::KeyRing;
use crate::format::batch::{BatchRecord, GENESIS_HASH};
use crate::store::Chunk;
use crate::store::{Store, StoreError};

/// The batch statements of a node that end at or after the offset: each verifies, each names the
/// hash of the one before (the first names 64 zeros when the check starts at sequence 0; after
/// an archive marker or from an offset, the one it names is not read), none overlaps the next,
/// none starts below 0 or ends before it starts, none claims rows after the node's last row, and
/// each covers at least one of the node's rows (the rows themselves were checked in
/// `verify_node`; statements that end below the start were counted there).
pub(super) async fn verify_chain(
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
            .read_batches(Chunk::new(&rep.node_id, rep.offset, after, chunk))
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

/// Whether the rows the node check read (from its offset on) hold any sequence number in
/// `first..=last`, from the first and last row and the holes between them.
pub(super) fn covers_a_row(rep: &NodeReport, first: i64, last: i64) -> bool {
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
