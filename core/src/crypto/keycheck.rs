//! Before a server writes: is each configured key the one its keyid protected with so far? A
//! different key under a keyid in use (a new `signing-key.pem`, a fresh data directory pointed
//! at an existing database) would protect new rows that verify while every older row of that
//! keyid fails verification.
//!
//! The evidence is what each node protected last: its newest row (versions 1 and 2), its newest
//! batch statement (version 3 rows) and its newest checkpoint, each one index lookup, so the cost
//! grows with the number of nodes, not of rows. A keyid passes when its key verifies any of
//! these that name it: nothing but the key that made a protection verifies it, so a failure
//! beside a success is a changed row (verifylog's to report), not a wrong key. It fails when
//! its key verifies none of them; a keyid nothing names yet passes.

use std::collections::BTreeMap;

use crate::config::KeySetup;
use crate::crypto::keys::{DetachedError, KeyRing, Scope, VerifyError};
use crate::format::protection::RowProtection;
use crate::format::statement::SignedStatement;
use crate::store::{Store, StoreError};
use crate::verify::{Batches, RowFailure, verify_row};

#[derive(Debug, thiserror::Error)]
pub enum KeyCheckError {
    #[error("cannot check the keys against the rows they protected: {0}")]
    Store(#[from] StoreError),
    /// The configured key verifies nothing its keyid protected.
    #[error(
        "keyid {keyid} is not the key that protected the existing rows: {key} does not verify \
         {what} ({reason}); configure the key keyid {keyid} had, or give this key a new keyid \
         (and keep the old key under keyid {keyid}, as a public key if need be; see \
         docs/OPERATIONS.md \"Key rollover\")"
    )]
    WrongKey {
        keyid: i32,
        /// Where the configured key lives (`keys list`'s SOURCE).
        key: String,
        /// What it failed to verify, e.g. `node n1 row 41`.
        what: String,
        reason: String,
    },
}

/// What one keyid's evidence showed.
#[derive(Default)]
struct Verdict {
    verified: bool,
    /// The first protection its key did not verify, and why.
    failed: Option<(String, String)>,
}

impl Verdict {
    fn record(&mut self, what: impl FnOnce() -> String, outcome: Outcome) {
        match outcome {
            Outcome::Verified => self.verified = true,
            Outcome::WrongKey(reason) => {
                self.failed.get_or_insert_with(|| (what(), reason));
            }
            Outcome::NotEvidence => {}
        }
    }
}

enum Outcome {
    Verified,
    WrongKey(String),
    /// Says nothing about the key: no key for the keyid, a malformed value, an unreachable
    /// token.
    NotEvidence,
}

fn row_outcome(keys: &KeyRing, r: &crate::format::record::AuditRecord) -> Outcome {
    match verify_row(keys, &Batches::default(), r) {
        Ok(()) => Outcome::Verified,
        Err(e @ (RowFailure::BadProtection(_) | RowFailure::VersionMismatch { .. })) => {
            Outcome::WrongKey(e.to_string())
        }
        Err(_) => Outcome::NotEvidence,
    }
}

fn detached_outcome(keys: &KeyRing, p: &RowProtection, data: &[u8]) -> Outcome {
    match keys.verify_detached(p, Scope::File, data) {
        Ok(()) => Outcome::Verified,
        Err(
            e @ (DetachedError::Verify(VerifyError::Mismatch) | DetachedError::WrongKind { .. }),
        ) => Outcome::WrongKey(e.to_string()),
        Err(_) => Outcome::NotEvidence,
    }
}

/// Weighs a batch statement or checkpoint as evidence for the key its keyid names, when its
/// protection names the statement's own keyid and that keyid still wants evidence.
fn weigh_statement(
    ring: &KeyRing,
    verdicts: &mut BTreeMap<i32, Verdict>,
    wanted: impl Fn(&BTreeMap<i32, Verdict>, i32) -> bool,
    s: &dyn SignedStatement,
    what: impl FnOnce() -> String,
) {
    let signer = s.signer();
    if let Ok((_, p)) = RowProtection::parse_statement(signer.protection)
        && p.keyid == signer.key_id
        && wanted(verdicts, p.keyid)
    {
        let outcome = detached_outcome(ring, &p, &s.statement());
        verdicts.entry(p.keyid).or_default().record(what, outcome);
    }
}

/// Checks every configured key against what its keyid protected last on each node (see the
/// module comment); `WrongKey` names the first keyid whose key verifies none of it.
pub async fn check(store: &dyn Store, keys: &KeySetup) -> Result<(), KeyCheckError> {
    let ring = &keys.ring;
    let mut verdicts: BTreeMap<i32, Verdict> = BTreeMap::new();
    // Once a keyid verified something, nothing more is needed for it.
    let wanted = |verdicts: &BTreeMap<i32, Verdict>, keyid: i32| {
        ring.get(keyid).is_some() && !verdicts.get(&keyid).is_some_and(|v| v.verified)
    };
    for node in store.nodes().await? {
        if let Some(r) = store.last_row(&node).await?
            && let Some(Ok(p)) = r.row_protection.as_deref().map(RowProtection::parse)
            // Version 3 and 4 rows are vouched for by their batch statement, checked below.
            && !p.version.is_batch()
            && wanted(&verdicts, p.keyid)
        {
            let outcome = row_outcome(ring, &r);
            verdicts.entry(p.keyid).or_default().record(
                || format!("node {node} row {} (pk {})", r.sequence_number, r.pk),
                outcome,
            );
        }
        if let Some(b) = store.last_batch(&node).await? {
            let what = || {
                format!(
                    "node {node}'s batch statement of rows {}..{}",
                    b.first_sequence_number, b.last_sequence_number
                )
            };
            weigh_statement(ring, &mut verdicts, wanted, &b, what);
        }
        if let Some(c) = store.last_checkpoint(&node).await? {
            let what = || format!("node {node}'s {} at row {}", c.kind, c.sequence_number);
            weigh_statement(ring, &mut verdicts, wanted, &c, what);
        }
    }
    for (keyid, v) in verdicts {
        if let (false, Some((what, reason))) = (v.verified, v.failed) {
            let key = keys
                .listing
                .iter()
                .find(|k| k.keyid == keyid)
                .map_or_else(|| format!("the key of keyid {keyid}"), |k| k.source.clone());
            return Err(KeyCheckError::WrongKey {
                keyid,
                key,
                what,
                reason,
            });
        }
    }
    Ok(())
}
