//! Writing a segment (docs/FORMAT.md section 8): every node's verified rows before a time, in
//! sequence, with the batch statements they need, each node closed by its signed archive marker;
//! then the detached signature over the file.

use std::io::{BufWriter, Write};
use std::path::Path;

use sha2::Digest;

use super::{ArchiveError, FORMAT, Line, NodeSummary, SEGMENT_FILE, SIGNATURE_FILE, Written, io};
use crate::crypto::keys::KeyRing;
use crate::crypto::protector;
use crate::crypto::token::CryptoToken;
use crate::format::checkpoint::{Checkpoint, Head, KIND_ARCHIVE};
use crate::format::protection::{Layout, RowProtection};
use crate::format::record::AuditRecord;
use crate::store::Chunk;
use crate::store::Store;
use crate::verify::{Batches, CHUNK, verify_row};

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
        before,
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
        let rows = store
            .read_node(Chunk::new(node, w.first, after.clone(), CHUNK))
            .await?;
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
