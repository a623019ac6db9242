//! Verification: of one row (verify-on-read) and of whole node logs (`verifylog`, spec
//! section 7): every row's protection, every hole, every duplicate sequence number.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use std::collections::HashMap;

use crate::batch::{self, BatchRecord, GENESIS_HASH, InclusionPayload};
use crate::keys::{KeyRing, VerifyError};
use crate::merkle::{self, Hash};
use crate::protection::{ProtectionParseError, ProtectionVersion, RowProtection};
use crate::record::AuditRecord;
use crate::store::{Store, StoreError};

/// Why a row does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowFailure {
    #[error("rowProtection is null")]
    NullProtection,
    #[error("rowProtection is malformed: {0}")]
    Malformed(#[from] ProtectionParseError),
    #[error("no key is configured for keyid {0}")]
    UnknownKeyId(i32),
    #[error("keyid {keyid} is a {key} key but the row claims protection version {row}")]
    VersionMismatch { keyid: i32, key: String, row: u32 },
    #[error("wrong {0}: the row was changed or protected with another key")]
    BadProtection(&'static str),
    #[error("cannot be checked now: {0}")]
    KeyUnavailable(String),
    #[error("version 3: no batch statement starts at sequence {0} for this node")]
    BatchMissing(i64),
    #[error("version 3: the batch statement starting at {first} does not verify: {reason}")]
    BatchStatement { first: i64, reason: String },
    #[error("version 3: {0}")]
    Inclusion(String),
}

/// A batch statement as a verifier saw it: checked once, however many rows it covers.
#[derive(Debug, Clone)]
pub struct CheckedBatch {
    pub batch: BatchRecord,
    root: Option<Hash>,
    /// Whether the statement's MAC or signature verifies (with the key its keyid names).
    statement: Result<(), String>,
}

impl CheckedBatch {
    fn check(keys: &KeyRing, batch: BatchRecord) -> Self {
        let root = hex::decode(&batch.merkle_root)
            .ok()
            .and_then(|v| <Hash>::try_from(v.as_slice()).ok());
        let statement = check_statement(keys, &batch);
        CheckedBatch {
            batch,
            root,
            statement,
        }
    }
}

fn check_statement(keys: &KeyRing, b: &BatchRecord) -> Result<(), String> {
    let p = RowProtection::parse(&b.statement_protection).map_err(|e| e.to_string())?;
    if p.version == ProtectionVersion::Batch {
        return Err("a statement cannot itself be version 3".into());
    }
    if p.keyid != b.key_id {
        return Err(format!(
            "protected with keyid {} but names keyid {}",
            p.keyid, b.key_id
        ));
    }
    let key = keys
        .get(p.keyid)
        .ok_or_else(|| format!("no key is configured for keyid {}", p.keyid))?;
    if key.protection_version() != p.version {
        return Err(format!("keyid {} is a {} key", p.keyid, key.algorithm()));
    }
    key.verify(b.statement().as_bytes(), &p.value)
        .map_err(|e| e.to_string())
}

/// The batch statements version 3 rows refer to, looked up and checked once each.
#[derive(Debug, Default)]
pub struct Batches {
    map: HashMap<(String, i64), Option<CheckedBatch>>,
}

impl Batches {
    /// Looks up (and checks) the statement of every version 3 row in `rows` not seen yet.
    pub async fn load_for(
        &mut self,
        store: &dyn Store,
        keys: &KeyRing,
        rows: &[AuditRecord],
    ) -> Result<(), StoreError> {
        for r in rows {
            let Some(Ok(p)) = r.row_protection.as_deref().map(RowProtection::parse) else {
                continue;
            };
            if p.version != ProtectionVersion::Batch {
                continue;
            }
            let Ok(payload) = InclusionPayload::from_bytes(&p.value) else {
                continue;
            };
            let key = (r.node_id.clone(), payload.first_sequence_number);
            if let std::collections::hash_map::Entry::Vacant(slot) = self.map.entry(key) {
                let (node, first) = slot.key();
                let b = store.get_batch(node, *first).await?;
                slot.insert(b.map(|b| CheckedBatch::check(keys, b)));
            }
        }
        Ok(())
    }

    /// Forgets the batches of `node` that end before `seq` (rows come in order: memory stays
    /// bounded by the batches of one chunk).
    pub fn forget_before(&mut self, node: &str, seq: i64) {
        self.map.retain(|(n, _), b| {
            n != node
                || b.as_ref()
                    .is_none_or(|b| b.batch.last_sequence_number >= seq)
        });
    }
}

/// Checks a version 3 row: its inclusion proof against the root of the batch statement it names,
/// and that statement's MAC or signature.
fn verify_batched(batches: &Batches, r: &AuditRecord, p: &RowProtection) -> Result<(), RowFailure> {
    let payload =
        InclusionPayload::from_bytes(&p.value).map_err(|e| RowFailure::Inclusion(e.to_string()))?;
    let first = payload.first_sequence_number;
    let checked = batches
        .map
        .get(&(r.node_id.clone(), first))
        .and_then(Option::as_ref)
        .ok_or(RowFailure::BatchMissing(first))?;
    let b = &checked.batch;
    if let Err(reason) = &checked.statement {
        return Err(RowFailure::BatchStatement {
            first,
            reason: reason.clone(),
        });
    }
    if p.keyid != b.key_id {
        return Err(RowFailure::Inclusion(format!(
            "row names keyid {} but its batch was signed with keyid {}",
            p.keyid, b.key_id
        )));
    }
    if i64::from(payload.tree_size) != b.size() {
        return Err(RowFailure::Inclusion(format!(
            "row claims a batch of {} rows, the statement covers {}",
            payload.tree_size,
            b.size()
        )));
    }
    let index = r.sequence_number - first;
    if index < 0 || index >= b.size() {
        return Err(RowFailure::Inclusion(format!(
            "sequence {} is outside its batch {}..{}",
            r.sequence_number, first, b.last_sequence_number
        )));
    }
    let root = checked.root.ok_or_else(|| {
        RowFailure::Inclusion("the batch's merkleRoot is not 32 bytes of hex".into())
    })?;
    merkle::verify_inclusion(
        index as u64,
        u64::from(payload.tree_size),
        &batch::row_leaf(r),
        &payload.proof,
        &root,
    )
    .map_err(|_| {
        RowFailure::Inclusion(
            "the inclusion proof does not lead to the batch root: the row was changed".into(),
        )
    })
}

/// Checks one row against the key its rowProtection names (version 3 rows: against their batch,
/// which `batches` must have loaded).
pub fn verify_row(keys: &KeyRing, batches: &Batches, r: &AuditRecord) -> Result<(), RowFailure> {
    let stored = r
        .row_protection
        .as_deref()
        .ok_or(RowFailure::NullProtection)?;
    let p = RowProtection::parse(stored)?;
    if p.version == ProtectionVersion::Batch {
        return verify_batched(batches, r, &p);
    }
    let key = keys.get(p.keyid).ok_or(RowFailure::UnknownKeyId(p.keyid))?;
    if key.protection_version() != p.version {
        return Err(RowFailure::VersionMismatch {
            keyid: p.keyid,
            key: key.algorithm().to_string(),
            row: p.version.number(),
        });
    }
    key.verify(r.protect_string().as_bytes(), &p.value)
        .map_err(|e| match e {
            VerifyError::Unavailable(why) => RowFailure::KeyUnavailable(why),
            VerifyError::Mismatch => RowFailure::BadProtection(match p.version {
                ProtectionVersion::Hmac => "HMAC",
                ProtectionVersion::Signature | ProtectionVersion::Batch => "signature",
            }),
        })
}

/// A run of missing sequence numbers: CESeCore prints it as
/// `lastVerifiedSequenceNumber=A thisSequenceNumber=B`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hole {
    /// The last sequence number seen before the hole (None: the hole starts at the offset).
    pub last_verified_sequence_number: Option<i64>,
    pub this_sequence_number: i64,
    /// How many numbers are missing.
    pub missing: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedRow {
    pub sequence_number: i64,
    pub pk: String,
    pub reason: String,
}

/// What `verifylog` found for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub node_id: String,
    pub offset: i64,
    pub rows: u64,
    pub first_sequence: Option<i64>,
    pub last_sequence: Option<i64>,
    pub holes: Vec<Hole>,
    /// Sequence numbers that occur more than once (each listed once per extra row).
    pub duplicates: Vec<i64>,
    pub failed: Vec<FailedRow>,
    /// Batch statements checked (batched device).
    pub batches: u64,
    pub failed_batches: Vec<FailedBatch>,
    pub warnings: Vec<String>,
}

/// A batch statement that is wrong in itself or in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedBatch {
    pub first_sequence_number: i64,
    pub last_sequence_number: i64,
    pub reason: String,
}

impl NodeReport {
    pub fn errors(&self) -> usize {
        self.holes.len() + self.duplicates.len() + self.failed.len() + self.failed_batches.len()
    }
}

/// What `verifylog` found for every node it checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogReport {
    pub nodes: Vec<NodeReport>,
    pub rows: u64,
    pub errors: usize,
    pub warnings: usize,
    pub elapsed_ms: u64,
}

/// Process exit codes of `verifylog`, as CESeCore's.
pub const EXIT_OK: i32 = 0;
pub const EXIT_ERRORS: i32 = 255;
pub const EXIT_WARNINGS: i32 = 254;

impl LogReport {
    pub fn exit_code(&self) -> i32 {
        if self.errors > 0 {
            EXIT_ERRORS
        } else if self.warnings > 0 {
            EXIT_WARNINGS
        } else {
            EXIT_OK
        }
    }

    /// `{node1=2, node2=7}`: each node's last sequence number, for the archiving procedure.
    pub fn last_sequences(&self) -> String {
        let parts: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.last_sequence.map(|s| format!("{}={}", n.node_id, s)))
            .collect();
        format!("{{{}}}", parts.join(", "))
    }
}

impl fmt::Display for LogReport {
    /// The human report: one line per finding, then the summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for n in &self.nodes {
            writeln!(
                f,
                "Node {}: verified {} rows from offset {}{}",
                n.node_id,
                n.rows,
                n.offset,
                match (n.first_sequence, n.last_sequence) {
                    (Some(a), Some(b)) => format!(" (sequence {a}..{b})"),
                    _ => String::new(),
                }
            )?;
            for h in &n.holes {
                let last = h
                    .last_verified_sequence_number
                    .map_or("none".to_string(), |s| s.to_string());
                writeln!(
                    f,
                    "  ERROR hole: node={} lastVerifiedSequenceNumber={} thisSequenceNumber={} ({} missing)",
                    n.node_id, last, h.this_sequence_number, h.missing
                )?;
            }
            for d in &n.duplicates {
                writeln!(
                    f,
                    "  ERROR duplicate: node={} sequenceNumber={}",
                    n.node_id, d
                )?;
            }
            for r in &n.failed {
                writeln!(
                    f,
                    "  ERROR verification failed: node={} sequenceNumber={} pk={}: {}",
                    n.node_id, r.sequence_number, r.pk, r.reason
                )?;
            }
            for b in &n.failed_batches {
                writeln!(
                    f,
                    "  ERROR batch: node={} sequences {}..{}: {}",
                    n.node_id, b.first_sequence_number, b.last_sequence_number, b.reason
                )?;
            }
            for w in &n.warnings {
                writeln!(f, "  WARNING node={}: {}", n.node_id, w)?;
            }
        }
        writeln!(
            f,
            "Summary: {} nodes, {} rows verified, {} errors, {} warnings, {} ms",
            self.nodes.len(),
            self.rows,
            self.errors,
            self.warnings,
            self.elapsed_ms
        )?;
        if self.errors == 0 {
            writeln!(f, "Last sequences: {}", self.last_sequences())?;
        }
        Ok(())
    }
}

/// Which nodes to check: all from 0, or named nodes from offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Nodes(Vec<(String, i64)>),
}

/// Parses `NAME` or `NAME:OFFSET` (the offset is after the last ':').
pub fn parse_node_arg(s: &str) -> Result<(String, i64), String> {
    match s.rsplit_once(':') {
        Some((name, off)) if !name.is_empty() => off
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .map(|o| (name.to_string(), o))
            .ok_or_else(|| format!("{s:?}: the offset after ':' must be a non-negative integer")),
        _ if !s.is_empty() => Ok((s.to_string(), 0)),
        _ => Err("empty node name".to_string()),
    }
}

/// Rows read per round trip; memory stays bounded by this whatever the table's size.
pub const CHUNK: i64 = 5000;

/// Verifies one node's rows from `offset`, in sequence order, reading `chunk` rows at a time.
pub async fn verify_node(
    store: &dyn Store,
    keys: &KeyRing,
    node: &str,
    offset: i64,
    chunk: i64,
) -> Result<NodeReport, StoreError> {
    let mut rep = NodeReport {
        node_id: node.to_string(),
        offset,
        ..Default::default()
    };
    let mut after: Option<(i64, String)> = None;
    let mut expected = offset;
    let mut batches = Batches::default();
    loop {
        let rows = store.read_node(node, offset, after.clone(), chunk).await?;
        let Some(last) = rows.last() else { break };
        if let Some(first) = rows.first() {
            batches.forget_before(node, first.sequence_number);
        }
        batches.load_for(store, keys, &rows).await?;
        after = Some((last.sequence_number, last.pk.clone()));
        let full = rows.len() as i64 == chunk;
        for r in &rows {
            let seq = r.sequence_number;
            if rep.last_sequence == Some(seq) {
                rep.duplicates.push(seq);
            } else if seq > expected {
                rep.holes.push(Hole {
                    last_verified_sequence_number: rep.last_sequence,
                    this_sequence_number: seq,
                    missing: seq - expected,
                });
            }
            if rep.first_sequence.is_none() {
                rep.first_sequence = Some(seq);
            }
            rep.last_sequence = Some(seq);
            expected = seq + 1;
            rep.rows += 1;
            if let Err(reason) = verify_row(keys, &batches, r) {
                rep.failed.push(FailedRow {
                    sequence_number: seq,
                    pk: r.pk.clone(),
                    reason: reason.to_string(),
                });
            }
        }
        if !full {
            break;
        }
    }
    verify_chain(store, keys, &mut rep, chunk).await?;
    if rep.rows == 0 {
        rep.warnings
            .push(format!("no rows with sequenceNumber >= {offset}"));
    }
    Ok(rep)
}

/// The batch statements of a node from the offset on: each verifies, each names the hash of the
/// one before (the first from sequence 0 names none), none overlaps the next, and none claims
/// rows after the node's last row (the rows themselves were checked in `verify_node`).
async fn verify_chain(
    store: &dyn Store,
    keys: &KeyRing,
    rep: &mut NodeReport,
    chunk: i64,
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
            let mut fail = |reason: String| {
                rep.failed_batches.push(FailedBatch {
                    first_sequence_number: b.first_sequence_number,
                    last_sequence_number: b.last_sequence_number,
                    reason,
                })
            };
            if let Err(reason) = check_statement(keys, &b) {
                fail(format!("statement does not verify: {reason}"));
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
            if rep.last_sequence.is_none_or(|l| b.last_sequence_number > l) {
                fail(format!(
                    "claims rows up to {} but the node's log ends at {}: rows were deleted",
                    b.last_sequence_number,
                    rep.last_sequence
                        .map_or("nothing".to_string(), |l| l.to_string())
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

/// Verifies the selected nodes and sums the findings.
pub async fn verify_log(
    store: &dyn Store,
    keys: &KeyRing,
    selection: &Selection,
) -> Result<LogReport, StoreError> {
    let started = Instant::now();
    let targets = match selection {
        Selection::All => store.nodes().await?.into_iter().map(|n| (n, 0)).collect(),
        Selection::Nodes(list) => list.clone(),
    };
    let mut report = LogReport::default();
    for (node, offset) in targets {
        let n = verify_node(store, keys, &node, offset, CHUNK).await?;
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
    use super::*;

    #[test]
    fn node_args() {
        assert_eq!(parse_node_arg("node1"), Ok(("node1".into(), 0)));
        assert_eq!(parse_node_arg("node1:42"), Ok(("node1".into(), 42)));
        assert_eq!(parse_node_arg("a:b:7"), Ok(("a:b".into(), 7)));
        assert!(parse_node_arg("node1:x").is_err());
        assert!(parse_node_arg("node1:-1").is_err());
        assert!(parse_node_arg("").is_err());
    }
}
