//! Verification: of one row (verify-on-read) and of whole node logs (`verifylog`, spec
//! section 7): every row's protection, every hole, every duplicate sequence number, and every
//! row, batch statement and checkpoint stored where no node's log is (docs/FORMAT.md section 5,
//! "Where a node's log starts").

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use rayon::prelude::*;
use serde::Serialize;

use crate::crypto::keys::{KeyRing, PolicyError, Scope, VerifyError};
use crate::format::batch::{self, BatchRecord, GENESIS_HASH, InclusionPayload};
use crate::format::canonical;
use crate::format::checkpoint::{Checkpoint, Head, Heads, KIND_ARCHIVE};
use crate::format::merkle::{self, Hash};
use crate::format::protection::{Layout, ProtectionParseError, ProtectionVersion, RowProtection};
use crate::format::record::AuditRecord;
use crate::store::{SharedStore, Span, Store, StoreError};

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
    #[error("outside its key's policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("batched row: no batch statement starts at sequence {0} for this node")]
    BatchMissing(i64),
    #[error("batched row: the batch statement starting at {first} does not verify: {reason}")]
    BatchStatement { first: i64, reason: String },
    #[error("batched row: {0}")]
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
    let (layout, p) =
        RowProtection::parse_statement(&b.statement_protection).map_err(|e| e.to_string())?;
    if p.keyid != b.key_id {
        return Err(format!(
            "protected with keyid {} but names keyid {}",
            p.keyid, b.key_id
        ));
    }
    keys.verify_detached(
        &p,
        Scope::Node {
            node: &b.node_id,
            seq: b.last_sequence_number,
        },
        &b.statement_in(layout),
    )
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
            let Some(first) = r
                .row_protection
                .as_deref()
                .and_then(RowProtection::batch_first)
            else {
                continue;
            };
            let key = (r.node_id.clone(), first);
            if let std::collections::hash_map::Entry::Vacant(slot) = self.map.entry(key) {
                let (node, first) = slot.key();
                let b = store.get_batch(node, *first).await?;
                slot.insert(b.map(|b| CheckedBatch::check(keys, b)));
            }
        }
        Ok(())
    }

    /// The statement of the batch of `node` starting at `first`, if it was loaded.
    pub fn statement(&self, node: &str, first: i64) -> Option<&BatchRecord> {
        self.map
            .get(&(node.to_string(), first))?
            .as_ref()
            .map(|c| &c.batch)
    }

    /// The statement of the batch of `node` starting at `first`, if it was loaded, and whether
    /// its MAC or signature verifies (the reason when not).
    pub fn checked(&self, node: &str, first: i64) -> Option<(&BatchRecord, Result<(), &str>)> {
        let c = self.map.get(&(node.to_string(), first))?.as_ref()?;
        Some((
            &c.batch,
            c.statement.as_ref().map(|_| ()).map_err(String::as_str),
        ))
    }

    /// Adds (and checks) a statement read from elsewhere (an archive segment).
    pub fn insert(&mut self, keys: &KeyRing, b: BatchRecord) {
        self.map.insert(
            (b.node_id.clone(), b.first_sequence_number),
            Some(CheckedBatch::check(keys, b)),
        );
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

/// Checks a version 3 or 4 row: its inclusion proof against the root of the batch statement it
/// names, and that statement's MAC or signature. `leaf` is the row's leaf of its version.
fn verify_batched(
    batches: &Batches,
    r: &AuditRecord,
    p: &RowProtection,
    leaf: &Hash,
) -> Result<(), RowFailure> {
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
    if b.layout() != batch::statement_layout(p.version) {
        return Err(RowFailure::Inclusion(format!(
            "a version {} row needs a statement of layout {}, its batch's is of layout {}",
            p.version.number(),
            batch::statement_layout(p.version).number(),
            b.layout().number()
        )));
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
        leaf,
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
    let ps = r.protect_string();
    let leaves = Leaves {
        text: merkle::leaf_hash(ps.as_bytes()),
        canonical: canonical::row_leaf(r),
    };
    verify_prepared(keys, batches, r, &ps, &leaves)
}

/// A batched row's inclusion proof as stored, with the root it leads to (docs/FORMAT.md 6.3;
/// the console shows it beside the batch statement: docs/API.md "GET /api/v1/events/{pk}/proof").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inclusion {
    pub first_sequence_number: i64,
    pub tree_size: u32,
    /// The row's place in its batch: its sequenceNumber minus the batch's first.
    pub index: i64,
    /// The row's leaf hash of its protection version (docs/FORMAT.md 6.1).
    pub leaf: Hash,
    /// The audit path, from the leaf's sibling up.
    pub proof: Vec<Hash>,
    /// The root the path leads to from the leaf, or why it leads to none.
    pub root: Result<Hash, String>,
}

/// Reads the inclusion proof of `r`, a version 3 or 4 row whose rowProtection parsed as `p`, and
/// follows it to its root as `verify_row` does (it does not check the statement: see
/// `Batches::checked`).
pub fn inclusion(r: &AuditRecord, p: &RowProtection) -> Result<Inclusion, RowFailure> {
    let payload =
        InclusionPayload::from_bytes(&p.value).map_err(|e| RowFailure::Inclusion(e.to_string()))?;
    let index = r.sequence_number - payload.first_sequence_number;
    let leaf = batch::leaf(p.version, r);
    let root = u64::try_from(index)
        .map_err(|_| {
            format!(
                "sequence {} is before its batch's first, {}",
                r.sequence_number, payload.first_sequence_number
            )
        })
        .and_then(|i| {
            merkle::root_from_inclusion(i, u64::from(payload.tree_size), &leaf, &payload.proof)
                .map_err(|e| e.to_string())
        });
    Ok(Inclusion {
        first_sequence_number: payload.first_sequence_number,
        tree_size: payload.tree_size,
        index,
        leaf,
        proof: payload.proof,
        root,
    })
}

/// A row's two leaf hashes (docs/FORMAT.md 6.1): of its protect string and of its canonical
/// encoding.
#[derive(Debug, Clone, Copy)]
pub struct Leaves {
    pub text: Hash,
    pub canonical: Hash,
}

/// `verify_row` with the row's protect string and leaf hashes already computed.
fn verify_prepared(
    keys: &KeyRing,
    batches: &Batches,
    r: &AuditRecord,
    protect_string: &str,
    leaves: &Leaves,
) -> Result<(), RowFailure> {
    let stored = r
        .row_protection
        .as_deref()
        .ok_or(RowFailure::NullProtection)?;
    let p = RowProtection::parse(stored)?;
    match p.version {
        ProtectionVersion::Batch => return verify_batched(batches, r, &p, &leaves.text),
        ProtectionVersion::BatchCanonical => {
            return verify_batched(batches, r, &p, &leaves.canonical);
        }
        ProtectionVersion::Hmac | ProtectionVersion::Signature => {}
    }
    let key = keys.get(p.keyid).ok_or(RowFailure::UnknownKeyId(p.keyid))?;
    keys.allows(p.keyid, &r.node_id, r.sequence_number)?;
    if key.protection_version() != p.version {
        return Err(RowFailure::VersionMismatch {
            keyid: p.keyid,
            key: key.algorithm().to_string(),
            row: p.version.number(),
        });
    }
    key.verify(protect_string.as_bytes(), &p.value)
        .map_err(|e| match e {
            // Unreadable comes only from a reader, not from bytes in memory.
            VerifyError::Unavailable(why) | VerifyError::Unreadable(why) => {
                RowFailure::KeyUnavailable(why)
            }
            VerifyError::Mismatch => RowFailure::BadProtection(match p.version {
                ProtectionVersion::Hmac => "HMAC",
                _ => "signature",
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
    /// Rows up to this sequence number were archived (the node's archive marker).
    pub archived_up_to: Option<i64>,
    /// Whether the head hash could be recomputed (the check started at sequence 0 or right
    /// after the archive marker); checkpoints are only compared when it could.
    pub chain_checked: bool,
    /// Lower-case hex of the head hash (fold 2) after the last row, when `chain_checked`.
    pub head_hash: Option<String>,
    /// Checkpoints (stored and from a file) that verified and matched.
    pub checkpoints: u64,
    pub failed_checkpoints: Vec<FailedCheckpoint>,
    /// Rows, batch statements and checkpoints stored below where the node's log starts: each
    /// one is an error.
    pub outside: Vec<Outside>,
    pub warnings: Vec<String>,
    /// Facts that are not findings (what could not be checked, and why).
    pub notes: Vec<String>,
}

/// Entries of one table stored below where their node's log starts (below sequence 0, or at or
/// below its archive marker), counted, not listed: an attacker may have written millions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outside {
    /// `AuditRecordData`, `AuditBatchData` or `AuditCheckpointData`.
    pub table: &'static str,
    pub count: u64,
    /// The lowest and highest sequence number among them (statements: the lowest first and the
    /// highest last).
    pub first_sequence_number: i64,
    pub last_sequence_number: i64,
    pub reason: String,
}

impl Outside {
    fn of(table: &'static str, span: Span, reason: String) -> Option<Self> {
        (span.count > 0).then(|| Outside {
            table,
            count: span.count as u64,
            first_sequence_number: span.first.unwrap_or_default(),
            last_sequence_number: span.last.unwrap_or_default(),
            reason,
        })
    }

    fn noun(&self) -> &'static str {
        match (self.table, self.count) {
            ("AuditRecordData", 1) => "row",
            ("AuditRecordData", _) => "rows",
            ("AuditBatchData", 1) => "batch statement",
            ("AuditBatchData", _) => "batch statements",
            (_, 1) => "checkpoint",
            _ => "checkpoints",
        }
    }
}

/// A batch statement that is wrong in itself or in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedBatch {
    pub first_sequence_number: i64,
    pub last_sequence_number: i64,
    pub reason: String,
}

/// A checkpoint that does not verify or that the log no longer matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedCheckpoint {
    pub sequence_number: i64,
    /// `database`, `file` (given with --checkpoint) or `archive` (the node's archive marker).
    pub source: &'static str,
    pub reason: String,
}

impl NodeReport {
    pub fn errors(&self) -> usize {
        self.holes.len()
            + self.duplicates.len()
            + self.failed.len()
            + self.failed_batches.len()
            + self.failed_checkpoints.len()
            + self.outside.iter().map(|o| o.count as usize).sum::<usize>()
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

/// "1 row", "2 rows".
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A node's lines of the human report: what was verified and matched.
fn write_node_summary(f: &mut fmt::Formatter<'_>, n: &NodeReport) -> fmt::Result {
    // Rows that failed are read but not verified.
    let failed = n.failed.len() as u64;
    writeln!(
        f,
        "Node {}: verified {} from offset {}{}{}",
        n.node_id,
        plural(n.rows.saturating_sub(failed), "row", "rows"),
        n.offset,
        match (n.first_sequence, n.last_sequence) {
            (Some(a), Some(b)) => format!(" (sequence {a}..{b})"),
            _ => String::new(),
        },
        if failed > 0 {
            format!(", {} failed", plural(failed, "row", "rows"))
        } else {
            String::new()
        }
    )?;
    if n.checkpoints > 0 || n.archived_up_to.is_some() {
        writeln!(
            f,
            "  {} matched{}",
            plural(n.checkpoints, "checkpoint", "checkpoints"),
            n.archived_up_to
                .map_or(String::new(), |a| format!("; rows up to {a} are archived"))
        )?;
    }
    Ok(())
}

/// A node's ERROR, WARNING and note lines of the human report.
fn write_node_findings(f: &mut fmt::Formatter<'_>, n: &NodeReport) -> fmt::Result {
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
    for c in &n.failed_checkpoints {
        writeln!(
            f,
            "  ERROR checkpoint: node={} sequenceNumber={} ({}): {}",
            n.node_id, c.sequence_number, c.source, c.reason
        )?;
    }
    for o in &n.outside {
        let range = if o.first_sequence_number == o.last_sequence_number {
            o.first_sequence_number.to_string()
        } else {
            format!("{}..{}", o.first_sequence_number, o.last_sequence_number)
        };
        writeln!(
            f,
            "  ERROR outside the log: node={} {} {} in {} at sequenceNumber {}: {}",
            n.node_id,
            o.count,
            o.noun(),
            o.table,
            range,
            o.reason
        )?;
    }
    for w in &n.warnings {
        writeln!(f, "  WARNING node={}: {}", n.node_id, w)?;
    }
    for note in &n.notes {
        writeln!(f, "  note node={}: {}", n.node_id, note)?;
    }
    Ok(())
}

impl fmt::Display for LogReport {
    /// The human report: one line per finding, then the summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for n in &self.nodes {
            write_node_summary(f, n)?;
            write_node_findings(f, n)?;
        }
        let failed: u64 = self.nodes.iter().map(|n| n.failed.len() as u64).sum();
        writeln!(
            f,
            "Summary: {}, {} verified, {}, {}, {} ms",
            plural(self.nodes.len() as u64, "node", "nodes"),
            plural(self.rows.saturating_sub(failed), "row", "rows"),
            plural(self.errors as u64, "error", "errors"),
            plural(self.warnings as u64, "warning", "warnings"),
            self.elapsed_ms
        )?;
        if self.errors == 0 {
            writeln!(f, "Last sequences: {}", self.last_sequences())?;
        }
        Ok(())
    }
}

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
