//! Archiving (docs/FORMAT.md section 8): the verified rows of every node up to a time are
//! written to a segment file with a detached signature; then each node gets an archive marker
//! (a signed checkpoint of kind `archive`) and its archived rows are deleted, so `verifylog`
//! continues after the marker with no gap. `verify_segment` checks a segment offline.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::crypto::keys::{DetachedError, KeyRing, Scope, VerifyError};
use crate::crypto::protector::{self, HashingReader};
use crate::crypto::token::{CryptoToken, TokenError};
use crate::format::batch::BatchRecord;
use crate::format::checkpoint::{Checkpoint, Head, Heads, KIND_ARCHIVE};
use crate::format::protection::{Layout, RowProtection};
use crate::format::record::AuditRecord;
use crate::store::{Store, StoreError};
use crate::verify::{Batches, verify_row};

/// The segment's `format` value.
pub const FORMAT: &str = "auditseal-archive-v1";
/// File names inside an archive directory.
pub const SEGMENT_FILE: &str = "segment.ndjson";
pub const SIGNATURE_FILE: &str = "segment.ndjson.sig";

use crate::verify::CHUNK;

/// One line of a segment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Line {
    /// The first line.
    #[serde(rename_all = "camelCase")]
    Header {
        format: String,
        /// Rows with a timeStamp before this (epoch ms) were archived.
        before: i64,
        created_at: i64,
    },
    /// Opens a node's rows: where they start and the head hash before the first (the previous
    /// archive marker's, or all zeros).
    #[serde(rename_all = "camelCase")]
    Start {
        node_id: String,
        first_sequence: i64,
        start_head: String,
    },
    /// A batch statement, written before the first row that refers to it.
    Batch(BatchRecord),
    /// A row, every column as stored.
    Row(AuditRecord),
    /// Closes a node's rows.
    Node(NodeSummary),
}

/// What a segment holds of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSummary {
    pub node_id: String,
    pub first_sequence: i64,
    pub last_sequence: i64,
    pub rows: u64,
    /// Head hash before the first row (the previous archive marker's, or all zeros).
    pub start_head: String,
    /// Head hash after the last row; equal to the marker's.
    pub end_head: String,
    /// The archive marker that replaces these rows in the database.
    pub marker: Checkpoint,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot sign: {0}")]
    Token(#[from] TokenError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "node {node}: row {sequence} does not verify ({reason}); nothing was archived: run verifylog and resolve it first"
    )]
    NotVerified {
        node: String,
        sequence: i64,
        reason: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{file} line {line}: {reason}")]
    Format {
        file: PathBuf,
        line: usize,
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A segment written but not yet applied (nothing deleted).
#[derive(Debug)]
pub struct Written {
    pub dir: PathBuf,
    pub nodes: Vec<NodeSummary>,
    pub sha256: String,
    pub bytes: u64,
}

/// Writes the segment of every node's rows with a timeStamp before `before` (from where each
/// node's log starts, stopping at its first row at or after `before`), verifying each row and
/// refusing at the first one that fails or at a hole. `dir` must not exist yet or be empty.
pub async fn write_segment(
    store: &dyn Store,
    keys: &KeyRing,
    token: &dyn CryptoToken,
    before: i64,
    dir: &Path,
) -> Result<Written, ArchiveError> {
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(ArchiveError::Refused(format!(
            "{} exists and is not empty; give a new directory",
            dir.display()
        )));
    }
    crate::files::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(SEGMENT_FILE);
    let result = write_lines(store, keys, token, before, &path).await;
    let nodes = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(dir);
            return Err(e);
        }
    };
    let mut file = std::fs::File::open(&path).map_err(io(&path))?;
    let signed = protector::protect_reader(token, &mut file)?;
    let signature = signed.protection;
    let sig_path = dir.join(SIGNATURE_FILE);
    crate::files::options()
        .write(true)
        .create_new(true)
        .open(&sig_path)
        .and_then(|mut f| {
            f.write_all(format!("{signature}\n").as_bytes())?;
            f.sync_all()
        })
        .map_err(io(&sig_path))?;
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))?;
    Ok(Written {
        dir: dir.to_path_buf(),
        nodes,
        sha256: hex::encode(signed.hash.finalize()),
        bytes: signed.len,
    })
}

async fn write_lines(
    store: &dyn Store,
    keys: &KeyRing,
    token: &dyn CryptoToken,
    before: i64,
    path: &Path,
) -> Result<Vec<NodeSummary>, ArchiveError> {
    let file = crate::files::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io(path))?;
    let mut out = SegmentOut {
        out: BufWriter::new(file),
        path,
    };
    out.put(&Line::Header {
        format: FORMAT.into(),
        before,
        created_at: crate::format::time::now_millis(),
    })?;
    let mut summaries = Vec::new();
    for node in store.nodes().await? {
        let head = node_start(store, keys, &node).await?;
        if let Some(summary) = write_node(store, keys, token, before, &node, head, &mut out).await?
        {
            summaries.push(summary);
        }
    }
    let file = out.out.into_inner().map_err(|e| io(path)(e.into_error()))?;
    file.sync_all().map_err(io(path))?;
    Ok(summaries)
}

/// The segment file being written, one JSON line at a time.
struct SegmentOut<'a> {
    out: BufWriter<std::fs::File>,
    path: &'a Path,
}

impl SegmentOut<'_> {
    fn put(&mut self, line: &Line) -> Result<(), ArchiveError> {
        let text = serde_json::to_string(line).map_err(|e| ArchiveError::Refused(e.to_string()))?;
        self.out
            .write_all(text.as_bytes())
            .and_then(|_| self.out.write_all(b"\n"))
            .map_err(io(self.path))
    }
}

/// The head a node's next segment starts from: its archive marker's (checked), or the start.
async fn node_start(store: &dyn Store, keys: &KeyRing, node: &str) -> Result<Head, ArchiveError> {
    let Some(base) = store.archive_base(node).await? else {
        return Ok(Head::default());
    };
    base.check(keys).map_err(|reason| {
        ArchiveError::Refused(format!(
            "node {node}: its archive marker at {} does not verify: {reason}",
            base.sequence_number
        ))
    })?;
    Head::of(&base)
        .map(|h| h.in_fold(Layout::Canonical))
        .ok_or_else(|| {
            ArchiveError::Refused(format!("node {node}: its archive marker is malformed"))
        })
}

/// Writes the node's rows from `head` on that are older than `before`, each verified and in
/// sequence, with the batch statements they need, then its summary and signed archive marker.
/// None when it has no such row.
async fn write_node(
    store: &dyn Store,
    keys: &KeyRing,
    token: &dyn CryptoToken,
    before: i64,
    node: &str,
    head: Head,
    out: &mut SegmentOut<'_>,
) -> Result<Option<NodeSummary>, ArchiveError> {
    let mut w = NodeOut {
        node,
        first: head.sequence_number + 1,
        start_head: hex::encode(head.hash),
        head,
        batches: Batches::default(),
        written_batches: std::collections::HashSet::new(),
        rows: 0,
    };
    let mut after = None;
    'node: loop {
        let rows = store.read_node(node, w.first, after.clone(), CHUNK).await?;
        // A short chunk may only have met the read budget: the end is an empty one.
        let full = !rows.is_empty();
        if let Some(f) = rows.first() {
            w.batches.forget_before(node, f.sequence_number);
        }
        w.batches.load_for(store, keys, &rows).await?;
        for r in &rows {
            if r.time_stamp >= before {
                break 'node;
            }
            w.row(keys, token, r, out)?;
        }
        after = rows.last().map(|r| (r.sequence_number, r.pk.clone()));
        if !full {
            break;
        }
    }
    w.close(token, out)
}

/// One node's part of a segment, as it is written.
struct NodeOut<'a> {
    node: &'a str,
    first: i64,
    start_head: String,
    head: Head,
    batches: Batches,
    /// The batch statements already written (by their first sequence number).
    written_batches: std::collections::HashSet<i64>,
    rows: u64,
}

impl NodeOut<'_> {
    /// Verifies the row, in sequence, and writes it (after the node's start line before its
    /// first row, and its batch statement before the statement's first row).
    fn row(
        &mut self,
        keys: &KeyRing,
        token: &dyn CryptoToken,
        r: &AuditRecord,
        out: &mut SegmentOut<'_>,
    ) -> Result<(), ArchiveError> {
        let node = self.node;
        let not_verified = |reason: String| ArchiveError::NotVerified {
            node: node.to_string(),
            sequence: r.sequence_number,
            reason,
        };
        if r.sequence_number != self.head.sequence_number + 1 {
            return Err(not_verified(format!(
                "expected sequence {} here (a hole or a duplicate)",
                self.head.sequence_number + 1
            )));
        }
        verify_row(keys, &self.batches, r).map_err(|e| not_verified(e.to_string()))?;
        if self.rows == 0 {
            // The node's archive marker will be signed with this key: one that its policy keeps
            // off the node would make a marker every verifier refuses.
            keys.allows(token.keyid(), node, r.sequence_number)
                .map_err(|e| {
                    ArchiveError::Refused(format!(
                        "node {node}: its archive marker cannot be signed: {e}"
                    ))
                })?;
            out.put(&Line::Start {
                node_id: node.to_string(),
                first_sequence: self.first,
                start_head: self.start_head.clone(),
            })?;
        }
        if let Some(b) = batch_of(r)
            && self.written_batches.insert(b)
        {
            // Loaded (and checked) with the chunk's rows.
            let stmt = self
                .batches
                .statement(node, b)
                .ok_or_else(|| not_verified(format!("its batch statement at {b} is missing")))?;
            out.put(&Line::Batch(stmt.clone()))?;
        }
        out.put(&Line::Row(r.clone()))?;
        self.head.push(r);
        self.rows += 1;
        Ok(())
    }

    /// The node's summary line with its signed archive marker; None when no row was written.
    fn close(
        self,
        token: &dyn CryptoToken,
        out: &mut SegmentOut<'_>,
    ) -> Result<Option<NodeSummary>, ArchiveError> {
        if self.rows == 0 {
            return Ok(None);
        }
        let marker = Checkpoint::sign(
            token,
            self.node,
            &self.head,
            crate::format::time::now_millis(),
            KIND_ARCHIVE,
        )?;
        let summary = NodeSummary {
            node_id: self.node.to_string(),
            first_sequence: self.first,
            last_sequence: self.head.sequence_number,
            rows: self.rows,
            start_head: self.start_head,
            end_head: hex::encode(self.head.hash),
            marker,
        };
        out.put(&Line::Node(summary.clone()))?;
        Ok(Some(summary))
    }
}

/// Where a version 3 row's batch starts.
fn batch_of(r: &AuditRecord) -> Option<i64> {
    RowProtection::batch_first(r.row_protection.as_deref()?)
}

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

/// Applies a written segment: for each node, in one transaction, stores its archive marker and
/// deletes the archived rows (and the statements and checkpoints they make obsolete). Returns
/// how many rows each node lost, and the error that stopped it if one did: the nodes before it
/// stay applied, so the caller can still log what was deleted.
pub async fn apply(
    store: &dyn Store,
    written: &Written,
) -> (BTreeMap<String, u64>, Option<ArchiveError>) {
    let mut deleted = BTreeMap::new();
    for s in &written.nodes {
        match store
            .archive_node(&s.marker, s.first_sequence, s.rows)
            .await
        {
            Ok(n) => {
                deleted.insert(s.node_id.clone(), n);
            }
            Err(e) => return (deleted, Some(e.into())),
        }
    }
    (deleted, None)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crypto::token::{HmacToken, SharedToken};
    use crate::device::{LogDevice, SequentialDevice, test_event};
    use crate::format::protection::Layout;

    /// Rewrites a segment as an older release wrote it: each node's endHead and marker in
    /// fold 1, the file signed again.
    fn as_fold_1(dir: &Path, token: &dyn CryptoToken) {
        let path = dir.join(SEGMENT_FILE);
        let mut out = String::new();
        let mut head = Head::default();
        for text in std::fs::read_to_string(&path).unwrap().lines() {
            let mut line: Line = serde_json::from_str(text).unwrap();
            match &mut line {
                Line::Start {
                    first_sequence,
                    start_head,
                    ..
                } => {
                    head = Head {
                        sequence_number: *first_sequence - 1,
                        hash: hex::decode(start_head).unwrap().try_into().unwrap(),
                        fold: Layout::Text,
                    }
                }
                Line::Row(r) => head.push(r),
                Line::Node(s) => {
                    s.end_head = hex::encode(head.hash);
                    let m = &s.marker;
                    s.marker =
                        Checkpoint::sign(token, &m.node_id, &head, m.time_stamp, KIND_ARCHIVE)
                            .unwrap();
                }
                _ => {}
            }
            out.push_str(&serde_json::to_string(&line).unwrap());
            out.push('\n');
        }
        std::fs::write(&path, &out).unwrap();
        let sig = protector::protect_bytes(token, out.as_bytes()).unwrap();
        std::fs::write(dir.join(SIGNATURE_FILE), format!("{sig}\n")).unwrap();
    }

    /// Segments are written in fold 2; an older release's segment (fold 1) still verifies, and
    /// each is checked in the fold its markers name.
    #[tokio::test]
    async fn segments_of_either_fold_verify_in_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
        let mut keys = KeyRing::new();
        keys.insert(3, token.verify_key());
        let device = SequentialDevice::start(store.clone(), "n".into(), Some(token.clone()))
            .await
            .unwrap();
        for i in 0..4 {
            device.append(test_event(i)).await.unwrap();
        }
        let seg = dir.path().join("seg");
        let w = write_segment(store.as_ref(), &keys, token.as_ref(), i64::MAX, &seg)
            .await
            .unwrap();
        assert_eq!(w.nodes[0].marker.layout(), Layout::Canonical);
        let rep = verify_segment(&seg, &keys).unwrap();
        assert_eq!((rep.rows, rep.errors.len()), (4, 0), "{:?}", rep.errors);

        as_fold_1(&seg, token.as_ref());
        let rep = verify_segment(&seg, &keys).unwrap();
        assert_eq!(rep.nodes[0].marker.layout(), Layout::Text);
        assert_eq!((rep.rows, rep.errors.len()), (4, 0), "{:?}", rep.errors);
    }
}
