//! One row's verification: its protection (HMAC, signature, or inclusion in a signed batch
//! statement) against the key ring.

use std::cell::OnceCell;
use std::collections::HashMap;

use crate::crypto::keys::{KeyRing, PolicyError, VerifyError};
use crate::format::batch::{self, BatchRecord, InclusionPayload};
use crate::format::canonical;
use crate::format::merkle::{self, Hash, NodeMemo};
use crate::format::protection::{Layout, ProtectionParseError, ProtectionVersion, RowProtection};
use crate::format::record::AuditRecord;
use crate::format::statement::SignedStatement;
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
    /// The layout its statementProtection names (read once: each of its rows compares it).
    layout: Layout,
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
            layout: batch.layout(),
            batch,
            root,
            statement,
        }
    }
}

pub(super) fn check_statement(keys: &KeyRing, b: &BatchRecord) -> Result<(), String> {
    b.verify_protection(keys).map_err(|f| f.to_string())
}

/// The batch statements version 3 and 4 rows refer to, looked up and checked once each, by node
/// and first sequence number (a lookup allocates nothing: it runs once or twice per row).
#[derive(Debug, Default)]
pub struct Batches {
    map: HashMap<String, HashMap<i64, Option<CheckedBatch>>>,
}

impl Batches {
    /// Looks up (and checks) the statement of every version 3 or 4 row in `rows` not seen yet.
    pub async fn load_for(
        &mut self,
        store: &dyn Store,
        keys: &KeyRing,
        rows: &[AuditRecord],
    ) -> Result<(), StoreError> {
        let mut previous: Option<(&str, i64)> = None;
        for r in rows {
            let Some(first) = r
                .row_protection
                .as_deref()
                .and_then(RowProtection::batch_first)
            else {
                continue;
            };
            // Rows of one batch come one after another.
            if previous == Some((r.node_id.as_str(), first)) {
                continue;
            }
            previous = Some((r.node_id.as_str(), first));
            if self.get(&r.node_id, first).is_some() {
                continue;
            }
            let b = store.get_batch(&r.node_id, first).await?;
            self.map
                .entry(r.node_id.clone())
                .or_default()
                .insert(first, b.map(|b| CheckedBatch::check(keys, b)));
        }
        Ok(())
    }

    /// The lookup of the batch of `node` starting at `first`: None when not loaded, Some(None)
    /// when loaded and not there.
    fn get(&self, node: &str, first: i64) -> Option<&Option<CheckedBatch>> {
        self.map.get(node)?.get(&first)
    }

    /// The statement of the batch of `node` starting at `first`, if it was loaded.
    pub fn statement(&self, node: &str, first: i64) -> Option<&BatchRecord> {
        self.get(node, first)?.as_ref().map(|c| &c.batch)
    }

    /// The statement of the batch of `node` starting at `first`, if it was loaded, and whether
    /// its MAC or signature verifies (the reason when not).
    pub fn checked(&self, node: &str, first: i64) -> Option<(&BatchRecord, Result<(), &str>)> {
        let c = self.get(node, first)?.as_ref()?;
        Some((
            &c.batch,
            c.statement.as_ref().map(|_| ()).map_err(String::as_str),
        ))
    }

    /// Adds (and checks) a statement read from elsewhere (an archive segment).
    pub fn insert(&mut self, keys: &KeyRing, b: BatchRecord) {
        self.map
            .entry(b.node_id.clone())
            .or_default()
            .insert(b.first_sequence_number, Some(CheckedBatch::check(keys, b)));
    }

    /// Forgets the batches of `node` that end before `seq` (rows come in order: memory stays
    /// bounded by the batches of one chunk).
    pub fn forget_before(&mut self, node: &str, seq: i64) {
        if let Some(m) = self.map.get_mut(node) {
            m.retain(|_, b| {
                b.as_ref()
                    .is_none_or(|b| b.batch.last_sequence_number >= seq)
            });
        }
    }
}

/// Checks a version 3 or 4 row: its inclusion proof against the root of the batch statement it
/// names, and that statement's MAC or signature. `leaf` is the row's leaf of its version.
fn verify_batched(
    batches: &Batches,
    r: &AuditRecord,
    p: &RowProtection,
    leaf: &Hash,
    memo: &mut NodeMemo,
) -> Result<(), RowFailure> {
    let payload =
        InclusionPayload::from_bytes(&p.value).map_err(|e| RowFailure::Inclusion(e.to_string()))?;
    let first = payload.first_sequence_number;
    let checked = batches
        .get(&r.node_id, first)
        .and_then(Option::as_ref)
        .ok_or(RowFailure::BatchMissing(first))?;
    let b = &checked.batch;
    if let Err(reason) = &checked.statement {
        return Err(RowFailure::BatchStatement {
            first,
            reason: reason.clone(),
        });
    }
    if checked.layout != batch::statement_layout(p.version) {
        return Err(RowFailure::Inclusion(format!(
            "a version {} row needs a statement of layout {}, its batch's is of layout {}",
            p.version.number(),
            batch::statement_layout(p.version).number(),
            checked.layout.number()
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
    merkle::verify_inclusion_memo(
        index as u64,
        u64::from(payload.tree_size),
        leaf,
        &payload.proof,
        &root,
        memo,
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
    verify_prepared(keys, batches, &Prepared::new(r), &mut NodeMemo::default())
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

/// A row's leaf hashes (docs/FORMAT.md 6.1): of its canonical encoding, and of its protect
/// string when the head hash of fold 1 is kept.
#[derive(Debug, Clone, Copy)]
pub struct Leaves {
    pub text: Option<Hash>,
    pub canonical: Hash,
}

/// A row and what its checks may need, each computed at most once and only when asked for: its
/// protect string and its two leaf hashes. A version 4 row needs neither the protect string nor
/// its hash unless a checkpoint of fold 1 is to be compared.
pub(super) struct Prepared<'r> {
    pub row: &'r AuditRecord,
    protect_string: OnceCell<String>,
    text: OnceCell<Hash>,
    canonical: OnceCell<Hash>,
}

impl<'r> Prepared<'r> {
    pub fn new(row: &'r AuditRecord) -> Self {
        Prepared {
            row,
            protect_string: OnceCell::new(),
            text: OnceCell::new(),
            canonical: OnceCell::new(),
        }
    }

    pub fn protect_string(&self) -> &str {
        self.protect_string
            .get_or_init(|| self.row.protect_string())
    }

    /// The leaf of the protect string (versions 3, and fold 1).
    pub fn text_leaf(&self) -> &Hash {
        self.text
            .get_or_init(|| merkle::leaf_hash(self.protect_string().as_bytes()))
    }

    /// The leaf of the canonical encoding (version 4, and fold 2).
    pub fn canonical_leaf(&self) -> &Hash {
        self.canonical.get_or_init(|| canonical::row_leaf(self.row))
    }
}

/// `verify_row` on a row whose protect string and leaf hashes may already be computed; `memo`
/// holds the interior nodes of the inclusion proofs followed before (rows in order share them).
pub(super) fn verify_prepared(
    keys: &KeyRing,
    batches: &Batches,
    prepared: &Prepared,
    memo: &mut NodeMemo,
) -> Result<(), RowFailure> {
    let r = prepared.row;
    let stored = r
        .row_protection
        .as_deref()
        .ok_or(RowFailure::NullProtection)?;
    let p = RowProtection::parse(stored)?;
    match p.version {
        ProtectionVersion::Batch => {
            return verify_batched(batches, r, &p, prepared.text_leaf(), memo);
        }
        ProtectionVersion::BatchCanonical => {
            return verify_batched(batches, r, &p, prepared.canonical_leaf(), memo);
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
    key.verify(prepared.protect_string().as_bytes(), &p.value)
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
