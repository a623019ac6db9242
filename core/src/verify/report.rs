//! What a verification found: per node and in all (`LogReport`), as JSON and as the human
//! report `verifylog` prints.

use std::fmt;

use serde::Serialize;

use crate::store::Span;

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
    pub(super) fn of(table: &'static str, span: Span, reason: String) -> Option<Self> {
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
    let node = &n.node_id;
    let holes = n.holes.iter().map(|h| {
        let last = h
            .last_verified_sequence_number
            .map_or("none".to_string(), |s| s.to_string());
        format!(
            "hole: node={node} lastVerifiedSequenceNumber={last} thisSequenceNumber={} \
             ({} missing)",
            h.this_sequence_number, h.missing
        )
    });
    let duplicates =
        (n.duplicates.iter()).map(|d| format!("duplicate: node={node} sequenceNumber={d}"));
    let rows = n.failed.iter().map(|r| {
        format!(
            "verification failed: node={node} sequenceNumber={} pk={}: {}",
            r.sequence_number, r.pk, r.reason
        )
    });
    let batches = n.failed_batches.iter().map(|b| {
        format!(
            "batch: node={node} sequences {}..{}: {}",
            b.first_sequence_number, b.last_sequence_number, b.reason
        )
    });
    let checkpoints = n.failed_checkpoints.iter().map(|c| {
        format!(
            "checkpoint: node={node} sequenceNumber={} ({}): {}",
            c.sequence_number, c.source, c.reason
        )
    });
    let outside = n.outside.iter().map(|o| {
        let range = if o.first_sequence_number == o.last_sequence_number {
            o.first_sequence_number.to_string()
        } else {
            format!("{}..{}", o.first_sequence_number, o.last_sequence_number)
        };
        format!(
            "outside the log: node={node} {} {} in {} at sequenceNumber {range}: {}",
            o.count,
            o.noun(),
            o.table,
            o.reason
        )
    });
    let errors = holes
        .chain(duplicates)
        .chain(rows)
        .chain(batches)
        .chain(checkpoints)
        .chain(outside);
    for e in errors {
        writeln!(f, "  ERROR {e}")?;
    }
    for w in &n.warnings {
        writeln!(f, "  WARNING node={node}: {w}")?;
    }
    for note in &n.notes {
        writeln!(f, "  note node={node}: {note}")?;
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
