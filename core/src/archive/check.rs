//! Checking a segment offline (`auditseal-db verify-export DIR`, docs/FORMAT.md section 8): its
//! signature, every row, each node's numbering and head hash, and each archive marker.

use std::io::BufRead;
use std::path::Path;

use serde::Serialize;

use super::{ArchiveError, FORMAT, Line, NodeSummary, SEGMENT_FILE, SIGNATURE_FILE, io};
use crate::crypto::keys::{DetachedError, KeyRing, Scope, VerifyError};
use crate::crypto::protector::HashingReader;
use crate::format::checkpoint::{Head, Heads, KIND_ARCHIVE};
use crate::format::protection::{Layout, RowProtection};
use crate::format::record::AuditRecord;
use crate::verify::{Batches, verify_row};

/// What `verify_segment` found.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentReport {
    pub format: String,
    pub before: i64,
    /// The keyid of the segment signature.
    pub signed_by: i32,
    pub nodes: Vec<NodeSummary>,
    pub rows: u64,
    pub errors: Vec<String>,
}

/// Checks a segment offline with `keys` (public keys suffice for signatures): the detached
/// signature over the file's exact bytes, every row's protection (version 3 rows against the
/// statements in the segment), each node's numbering and head hash, and each archive marker.
pub fn verify_segment(dir: &Path, keys: &KeyRing) -> Result<SegmentReport, ArchiveError> {
    let path = dir.join(SEGMENT_FILE);
    let mut check = SegmentCheck {
        keys,
        path: &path,
        rep: SegmentReport::default(),
        batches: Batches::default(),
        current: None,
    };
    let first_pass = check.signature(&dir.join(SIGNATURE_FILE))?;
    // The lines are read in a second pass, hashed too, so that a file that changes in between
    // is caught.
    let file = std::fs::File::open(&path).map_err(io(&path))?;
    let mut lines = std::io::BufReader::new(HashingReader::new(file));
    for (i, text) in (&mut lines).lines().enumerate() {
        let n = i + 1;
        let text = text.map_err(io(&path))?;
        let line: Line =
            serde_json::from_str(&text).map_err(|e| check.format_error(n, e.to_string()))?;
        check.line(n, line)?;
    }
    let mut rep = check.finish();
    if first_pass.is_some_and(|h| h != lines.into_inner().finish()) {
        rep.errors.push(
            "the file changed while it was being checked: the lines read are not the bytes the \
             signature covers"
                .into(),
        );
    }
    Ok(rep)
}

/// The check of one segment, line by line.
struct SegmentCheck<'a> {
    keys: &'a KeyRing,
    path: &'a Path,
    rep: SegmentReport,
    batches: Batches,
    /// The open node: its id, running head, and rows seen.
    current: Option<(String, Heads, u64)>,
}

impl SegmentCheck<'_> {
    fn format_error(&self, line: usize, reason: String) -> ArchiveError {
        ArchiveError::Format {
            file: self.path.to_path_buf(),
            line,
            reason,
        }
    }

    /// Checks the signature over the segment's bytes as they are on disk, read once in chunks:
    /// their hash when it verifies (to compare with the second pass), None (and an error in the
    /// report) when it does not.
    fn signature(&mut self, sig_path: &Path) -> Result<Option<([u8; 32], u64)>, ArchiveError> {
        let sig = std::fs::read_to_string(sig_path).map_err(io(sig_path))?;
        let p = RowProtection::parse(sig.trim()).map_err(|e| ArchiveError::Format {
            file: sig_path.to_path_buf(),
            line: 1,
            reason: e.to_string(),
        })?;
        self.rep.signed_by = p.keyid;
        let file = std::fs::File::open(self.path).map_err(io(self.path))?;
        let mut read = HashingReader::new(file);
        match self.keys.verify_detached_reader(&p, Scope::File, &mut read) {
            Ok(()) => Ok(Some(read.finish())),
            Err(DetachedError::Verify(VerifyError::Unreadable(e))) => {
                Err(io(self.path)(std::io::Error::other(e)))
            }
            Err(e) => {
                self.rep.errors.push(match e {
                    DetachedError::Verify(e) => {
                        format!("the segment signature does not verify ({e}): the file was changed")
                    }
                    other => format!("the segment signature cannot be checked: {other}"),
                });
                Ok(None)
            }
        }
    }

    /// Line `n` (from 1).
    fn line(&mut self, n: usize, line: Line) -> Result<(), ArchiveError> {
        match line {
            Line::Header { format, before, .. } => {
                if n != 1 || format != FORMAT {
                    return Err(self.format_error(n, format!("unexpected header {format:?}")));
                }
                self.rep.format = format;
                self.rep.before = before;
            }
            _ if n == 1 => {
                return Err(self.format_error(1, "the first line is not the header".into()));
            }
            Line::Start {
                node_id,
                first_sequence,
                start_head,
            } => self.start(n, node_id, first_sequence, &start_head)?,
            Line::Batch(b) => self.batches.insert(self.keys, b),
            Line::Row(r) => self.row(n, &r)?,
            Line::Node(s) => self.close(n, s)?,
        }
        Ok(())
    }

    fn start(
        &mut self,
        n: usize,
        node_id: String,
        first_sequence: i64,
        start_head: &str,
    ) -> Result<(), ArchiveError> {
        if let Some((open, ..)) = &self.current {
            return Err(self.format_error(n, format!("node {open} is not closed")));
        }
        let hash = hex::decode(start_head)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .ok_or_else(|| self.format_error(n, "startHead is not 32 bytes of hex".into()))?;
        let head = Heads::from(Head {
            sequence_number: first_sequence - 1,
            hash,
            fold: Layout::Canonical,
        });
        self.current = Some((node_id, head, 0));
        Ok(())
    }

    fn row(&mut self, n: usize, r: &AuditRecord) -> Result<(), ArchiveError> {
        let Some((node, head, rows)) = self.current.as_mut() else {
            return Err(self.format_error(n, "a row before its node's start line".into()));
        };
        if *node != r.node_id {
            let reason = format!("row of node {} inside node {node}", r.node_id);
            return Err(self.format_error(n, reason));
        }
        let errors = &mut self.rep.errors;
        if r.sequence_number != head.sequence_number() + 1 {
            errors.push(format!(
                "node {node}: sequence {} follows {}",
                r.sequence_number,
                head.sequence_number()
            ));
        }
        head.push(r);
        *rows += 1;
        if let Err(e) = verify_row(self.keys, &self.batches, r) {
            errors.push(format!(
                "node {node} row {} (pk {}): {e}",
                r.sequence_number, r.pk
            ));
        }
        self.rep.rows += 1;
        Ok(())
    }

    /// A node's summary line: its rows, head and archive marker against what was read.
    fn close(&mut self, n: usize, s: NodeSummary) -> Result<(), ArchiveError> {
        let Some((node, heads, rows)) = self.current.take() else {
            return Err(self.format_error(n, "a node summary without its start line".into()));
        };
        // endHead is in the fold the marker names.
        let head = heads.get(s.marker.layout());
        let e = &mut self.rep.errors;
        if s.node_id != node || s.last_sequence != head.sequence_number || s.rows != rows {
            e.push(format!(
                "node {node}: the summary says {} rows {}..{}, the segment has {rows} rows up to {}",
                s.rows, s.first_sequence, s.last_sequence, head.sequence_number
            ));
        }
        if hex::encode(head.hash) != s.end_head {
            e.push(format!(
                "node {node}: the rows' head hash differs from endHead"
            ));
        }
        let m = &s.marker;
        if m.kind != KIND_ARCHIVE
            || m.node_id != node
            || m.sequence_number != s.last_sequence
            || m.head_hash != s.end_head
        {
            e.push(format!(
                "node {node}: the archive marker does not match the rows"
            ));
        }
        if let Err(reason) = m.check(self.keys) {
            e.push(format!(
                "node {node}: the archive marker does not verify: {reason}"
            ));
        }
        self.rep.nodes.push(s);
        Ok(())
    }

    fn finish(mut self) -> SegmentReport {
        if let Some((node, ..)) = self.current {
            self.rep.errors.push(format!(
                "node {node}: rows without a closing summary (truncated file)"
            ));
        }
        if self.rep.format.is_empty() {
            self.rep.errors.push("the segment is empty".into());
        }
        self.rep
    }
}
