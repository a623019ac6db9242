//! Verification: of one row (verify-on-read) and of whole node logs (`verifylog`, spec
//! section 7): every row's protection, every hole, every duplicate sequence number.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use crate::keys::{KeyRing, VerifyError};
use crate::protection::{ProtectionParseError, RowProtection};
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
}

/// Checks one row against the key its rowProtection names.
pub fn verify_row(keys: &KeyRing, r: &AuditRecord) -> Result<(), RowFailure> {
    let stored = r
        .row_protection
        .as_deref()
        .ok_or(RowFailure::NullProtection)?;
    let p = RowProtection::parse(stored)?;
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
                crate::protection::ProtectionVersion::Hmac => "HMAC",
                crate::protection::ProtectionVersion::Signature => "signature",
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
    pub warnings: Vec<String>,
}

impl NodeReport {
    pub fn errors(&self) -> usize {
        self.holes.len() + self.duplicates.len() + self.failed.len()
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
    loop {
        let rows = store.read_node(node, offset, after.clone(), chunk).await?;
        let Some(last) = rows.last() else { break };
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
            if let Err(reason) = verify_row(keys, r) {
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
    if rep.rows == 0 {
        rep.warnings
            .push(format!("no rows with sequenceNumber >= {offset}"));
    }
    Ok(rep)
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
