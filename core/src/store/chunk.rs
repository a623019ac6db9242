//! Which chunk of one node's rows, batch statements or checkpoints to read: keyset paging in
//! the node's order, so that a reader walks millions of rows in bounded memory.

/// Up to `limit` items of `node` from sequence number `from_seq` on, in the node's order,
/// starting after `after`, the last key of the previous chunk (None: from the start). The key
/// is what orders the table: (sequenceNumber, pk) for rows, firstSequenceNumber for batch
/// statements, (sequenceNumber, kind) for checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a, K> {
    pub node: &'a str,
    pub from_seq: i64,
    pub after: Option<K>,
    pub limit: i64,
}

/// A chunk of rows: after the last (sequenceNumber, pk) read.
pub type RowChunk<'a> = Chunk<'a, (i64, String)>;
/// A chunk of batch statements: after the statement that starts at this sequence number.
pub type BatchChunk<'a> = Chunk<'a, i64>;
/// A chunk of checkpoints: after the last (sequenceNumber, kind) read.
pub type CheckpointChunk<'a> = Chunk<'a, (i64, String)>;

impl<'a, K> Chunk<'a, K> {
    pub fn new(node: &'a str, from_seq: i64, after: Option<K>, limit: i64) -> Self {
        Chunk {
            node,
            from_seq,
            after,
            limit,
        }
    }
}

impl<'a> Chunk<'a, (i64, String)> {
    /// The binds of a keyset query over (sequenceNumber, text key), in order: the node, where
    /// the chunk starts (never before the key read last), the last sequence number and text key
    /// read before it, and the most items.
    pub(crate) fn binds(self) -> (&'a str, i64, i64, String, i64) {
        let (after_seq, after_key) = self.after.unwrap_or((i64::MIN, String::new()));
        let from = self.from_seq.max(after_seq);
        (self.node, from, after_seq, after_key, self.limit)
    }
}
