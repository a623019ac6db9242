//! The store: where rows live. One small trait; PostgreSQL and SQLite implement it through sqlx.
//! SQL is written in lower-case identifiers so the same text serves both databases.

pub mod archived;
mod budget;
mod chunk;
pub mod export;
mod open_batch;
pub mod partition;
mod postgres;
pub mod query;
mod sql;
mod sqlite;
mod standby;

use std::sync::Arc;

use async_trait::async_trait;

use crate::format::batch::BatchRecord;
use crate::format::checkpoint::Checkpoint;
use crate::format::record::AuditRecord;
pub(crate) use budget::{ReadBudget, rows_within};
pub use chunk::{BatchChunk, CheckpointChunk, Chunk, RowChunk};
pub use open_batch::OpenBatch;
pub use postgres::PgStore;
pub use query::{Criterion, CriterionError, Cursor, CursorError, Field, Op, Order, Query};
pub use sqlite::SqliteStore;
pub use standby::{ReadOnlyStore, Replay};

/// About how many bytes of rows one read of a node may hold (`Store::read_node`): a reader's
/// memory stays flat whatever the rows hold, even rows written by others far beyond
/// `server.max_event_bytes`. A single larger row is still read whole.
pub const READ_BUDGET_BYTES: i64 = 8 << 20;

/// The bytes a row's columns take (the SQL expression, in both databases; `octet_length` reads
/// the length without the value, on PostgreSQL without de-TOASTing it).
pub(crate) const ROW_BYTES: &str = "(octet_length(pk) + octet_length(nodeid) \
     + octet_length(eventtype) + octet_length(eventstatus) + octet_length(authtoken) \
     + octet_length(service) + octet_length(module) + COALESCE(octet_length(customid), 0) \
     + COALESCE(octet_length(searchdetail1), 0) + COALESCE(octet_length(searchdetail2), 0) \
     + COALESCE(octet_length(additionaldetails), 0) + COALESCE(octet_length(rowprotection), 0))";

/// The distinct node ids of a table whose index starts with nodeid, by a loose index scan: one
/// lookup per node where DISTINCT reads every row.
pub(crate) fn distinct_nodes(table: &str) -> String {
    first_distinct_nodes(table, None)
}

/// `distinct_nodes`, stopping after the first `limit` node ids (the recursion counts, so no more
/// than `limit` lookups are made).
pub(crate) fn first_distinct_nodes(table: &str, limit: Option<usize>) -> String {
    format!(
        "{} SELECT nodeid FROM n WHERE nodeid IS NOT NULL ORDER BY nodeid",
        nodes_cte(table, limit)
    )
}

/// `WITH RECURSIVE n(nodeid, k)`: the loose index scan of `first_distinct_nodes`, whose last
/// row's nodeid is NULL.
fn nodes_cte(table: &str, limit: Option<usize>) -> String {
    let more = limit.map_or_else(String::new, |l| format!(" AND n.k < {l}"));
    format!(
        "WITH RECURSIVE n(nodeid, k) AS ( \
           SELECT MIN(nodeid), 1 FROM {table} \
           UNION ALL \
           SELECT (SELECT MIN(nodeid) FROM {table} WHERE nodeid > n.nodeid), n.k + 1 \
           FROM n WHERE n.nodeid IS NOT NULL{more})"
    )
}

/// Each node's checkpoint(s) with the highest sequence number: a few index lookups per node.
/// Measured on 1,000,000 checkpoints of 10 nodes: under 1 ms on both databases, where a
/// correlated MAX for every stored checkpoint took 11 s on PostgreSQL and 0.8 s on SQLite (on
/// every metrics scrape).
pub(crate) fn latest_checkpoints() -> String {
    format!(
        "{}, m(node, seq) AS (SELECT nodeid, \
           (SELECT MAX(sequencenumber) FROM auditcheckpointdata d WHERE d.nodeid = n.nodeid) \
           FROM n WHERE nodeid IS NOT NULL) \
         SELECT {CHECKPOINT_COLUMNS} FROM m JOIN auditcheckpointdata \
           ON nodeid = m.node AND sequencenumber = m.seq \
         ORDER BY nodeid, kind",
        nodes_cte("auditcheckpointdata", None)
    )
}

/// The WHERE clause of a node's chunk: the lower bound is the later of the offset and the
/// previous chunk's last row, so each chunk is one index range scan starting where the last one
/// ended (not at the offset: that made reading a node quadratic). $1 node, $2 from, $3 and $4
/// the previous chunk's last (sequenceNumber, pk).
pub(crate) const NODE_CHUNK: &str = "nodeid = $1 AND sequencenumber >= $2 \
     AND (sequencenumber > $3 OR pk > $4)";

/// The columns in the order `AuditRecord` reads them (aliases keep the names lower-case in both
/// databases).
pub(crate) const COLUMNS: &str = "pk AS pk, nodeid AS nodeid, sequencenumber AS sequencenumber, \
     \"timestamp\" AS \"timestamp\", eventtype AS eventtype, eventstatus AS eventstatus, \
     authtoken AS authtoken, service AS service, module AS module, customid AS customid, \
     searchdetail1 AS searchdetail1, searchdetail2 AS searchdetail2, \
     additionaldetails AS additionaldetails, rowversion AS rowversion, rowprotection AS rowprotection";

pub(crate) const BATCH_COLUMNS: &str = "nodeid AS nodeid, firstsequencenumber AS firstsequencenumber, \
     lastsequencenumber AS lastsequencenumber, \"timestamp\" AS \"timestamp\", merkleroot AS merkleroot, \
     previoushash AS previoushash, keyid AS keyid, statementprotection AS statementprotection";

pub(crate) const CHECKPOINT_COLUMNS: &str = "nodeid AS nodeid, sequencenumber AS sequencenumber, \
     \"timestamp\" AS \"timestamp\", headhash AS headhash, kind AS kind, keyid AS keyid, \
     statementprotection AS statementprotection";

pub(crate) const INSERT_CHECKPOINT: &str = "INSERT INTO auditcheckpointdata (nodeid, \
     sequencenumber, \"timestamp\", headhash, kind, keyid, statementprotection) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub(crate) const INSERT_BATCH: &str = "INSERT INTO auditbatchdata (nodeid, firstsequencenumber, \
     lastsequencenumber, \"timestamp\", merkleroot, previoushash, keyid, statementprotection) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// One row, written only if the writer's fence holds ($16 node, $17 epoch; see `Fence`);
/// `{lock}` is `FOR SHARE` on PostgreSQL, nothing on SQLite (whose writes are serialised).
macro_rules! fenced_insert {
    ($lock:literal) => {
        concat!(
            "INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", eventtype, \
             eventstatus, authtoken, service, module, customid, searchdetail1, searchdetail2, \
             additionaldetails, rowversion, rowprotection) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 \
             WHERE EXISTS (SELECT 1 FROM auditnodelease WHERE nodeid = $16 AND epoch = $17 ",
            $lock,
            ")"
        )
    };
}
pub(crate) use fenced_insert;

/// What went wrong in the store, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or timed out: retry later, nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A row with this (nodeId, sequenceNumber) or pk exists already.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Another process holds the writer lock of this node id.
    #[error("{0}")]
    Locked(String),
    /// The write was refused inside its transaction: another process took the node's lock
    /// since this writer took it (see `Fence`). Nothing was written.
    #[error("node {0}: another process took this node's writer lock; nothing was written")]
    Fenced(String),
    #[error("database URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("database error: {0}")]
    Database(String),
    #[error("schema migration failed: {0}")]
    Migration(String),
    /// The database's disk is full (SQLite SQLITE_FULL, PostgreSQL 53100 disk_full): nothing was
    /// written; writes succeed again once space is freed.
    #[error("the database's storage is full: {0}")]
    Full(String),
    /// The tables do not hold what the caller read from them a moment ago; nothing was changed.
    #[error("{0}")]
    Inconsistent(String),
    /// The database cancelled a statement and says a retry may succeed (SQLSTATE 40001 or
    /// 40P01; on a hot standby: a conflict with the replay of the primary's changes). Nothing
    /// was written.
    #[error("the database cancelled the statement: {0}")]
    Cancelled(String),
    /// The read-only database (`database_read_url`) cannot be reached: reads fail, writes
    /// (which go to `database_url`) are not concerned.
    #[error("the read database is unavailable: {0}")]
    ReadUnavailable(String),
}

/// An error as an operator should read it: a database's own message with its SQLSTATE (not the
/// line of the server's source file sqlx appends to it), anything else as sqlx says it.
pub(crate) fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        },
        other => other.to_string(),
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_string())
            }
            // SQLite's SQLITE_FULL (13; sqlx gives the extended code, whose low byte is the
            // primary one) and PostgreSQL's disk_full (53100).
            sqlx::Error::Database(db)
                if db.code().is_some_and(|c| {
                    // A PostgreSQL SQLSTATE has five characters; SQLite's codes fewer digits.
                    c == "53100" || (c.len() < 5 && c.parse::<i64>().is_ok_and(|n| n & 0xff == 13))
                }) =>
            {
                StoreError::Full(db.message().to_string())
            }
            // serialization_failure and deadlock_detected: on a hot standby, "canceling
            // statement due to conflict with recovery" (40P01 when the statement waited for a
            // lock the replay holds); store/standby.rs tries it again.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("40001") | Some("40P01")) =>
            {
                StoreError::Cancelled(describe(&e))
            }
            // PostgreSQL classes 08 (connection exception) and 57 (operator intervention:
            // shutdown, crash, not accepting connections yet): the server went away.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57")) =>
            {
                StoreError::Unavailable(describe(&e))
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(describe(&e)),
            _ => StoreError::Database(describe(&e)),
        }
    }
}

/// Where a node's log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHead {
    /// One past the highest sequence number recorded for the node anywhere (docs/FORMAT.md
    /// section 5, "The head never goes back"); 0 for a new node.
    pub next_sequence: i64,
    pub last_time_stamp: i64,
    /// One past the highest sequence number that has a row or was archived (its archive
    /// marker); 0 for none. Below `next_sequence` when a batch statement or checkpoint names
    /// rows that are not there: the node's newest rows were deleted (see `missing`).
    pub stored_next: i64,
}

impl NodeHead {
    /// From the highest numbers found: `stored` where rows are or were (rows, the archive
    /// marker), `claimed` where only a statement or checkpoint says rows were, and the newest
    /// time stamp of each. Never below 0: numbering starts at 0 even when a table holds negative
    /// numbers.
    fn from_highest(
        stored: impl IntoIterator<Item = Option<i64>>,
        claimed: impl IntoIterator<Item = Option<i64>>,
        times: impl IntoIterator<Item = Option<i64>>,
    ) -> Self {
        let next = |found: &mut dyn Iterator<Item = Option<i64>>| {
            found
                .flatten()
                .fold(0, |n: i64, s| n.max(s.saturating_add(1)))
        };
        let stored_next = next(&mut stored.into_iter());
        NodeHead {
            next_sequence: stored_next.max(next(&mut claimed.into_iter())),
            last_time_stamp: times.into_iter().flatten().fold(0, i64::max),
            stored_next,
        }
    }

    /// The sequence numbers a batch statement or checkpoint names but no row has (and no archive
    /// covers): the node's newest rows were deleted, or the claim was forged.
    pub fn missing(&self) -> Option<(i64, i64)> {
        (self.next_sequence > self.stored_next).then(|| (self.stored_next, self.next_sequence - 1))
    }
}

/// How many of a node's entries of one table lie below where its log starts, and the lowest and
/// highest sequence number among them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Span {
    pub count: i64,
    pub first: Option<i64>,
    pub last: Option<i64>,
}

/// What a node's tables hold below where its log starts (docs/FORMAT.md section 5, "Where a
/// node's log starts"): nothing belongs there, so every entry is an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BelowStart {
    /// Rows with sequenceNumber < start.
    pub rows: Span,
    /// Batch statements with lastSequenceNumber < start (`first` is the lowest first number).
    pub batches: Span,
    /// Checkpoints and archive markers with sequenceNumber < the given bound.
    pub checkpoints: Span,
}

/// Held for as long as this process is the one writer of a node id; dropping it releases it.
/// A lock can be lost while held (PostgreSQL: its session died); writers check `is_held` before
/// each write and re-read their position when `epoch` changes (the lock was taken again).
pub struct NodeLock {
    node: String,
    status: Arc<LockStatus>,
    _held: Box<dyn Send + Sync>,
}

/// Shared between a lock and whatever keeps it alive.
#[derive(Debug)]
pub struct LockStatus {
    held: std::sync::atomic::AtomicBool,
    epoch: std::sync::atomic::AtomicU64,
    /// The node's lease epoch in `auditnodelease` taken with the lock (see `Fence`).
    lease: std::sync::atomic::AtomicI64,
}

impl LockStatus {
    fn new(lease: i64) -> Arc<Self> {
        Arc::new(LockStatus {
            held: std::sync::atomic::AtomicBool::new(true),
            epoch: std::sync::atomic::AtomicU64::new(0),
            lease: std::sync::atomic::AtomicI64::new(lease),
        })
    }

    fn lost(&self) {
        self.held.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn regained(&self, lease: i64) {
        self.lease.store(lease, std::sync::atomic::Ordering::SeqCst);
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What a write transaction checks, inside itself, before it commits anything: that the node's
/// lease epoch in `auditnodelease` is still the one its writer took with the lock. Whoever takes
/// a node's lock increments the epoch first, so a writer that lost its lock (its PostgreSQL
/// session died, another process took over) commits nothing, even before it notices the loss.
/// On PostgreSQL the check locks the lease row (`FOR SHARE`): a takeover waits for the
/// transactions in flight, and every later one of the old writer sees the new epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub node: String,
    pub epoch: i64,
}

/// Increments (or creates) a node's lease epoch and returns the new value.
pub(crate) const TAKE_LEASE: &str = "INSERT INTO auditnodelease (nodeid, epoch) VALUES ($1, 1) \
     ON CONFLICT (nodeid) DO UPDATE SET epoch = auditnodelease.epoch + 1 RETURNING epoch";

impl NodeLock {
    fn new(node: &str, status: Arc<LockStatus>, held: impl Send + Sync + 'static) -> Self {
        NodeLock {
            node: node.to_string(),
            status,
            _held: Box::new(held),
        }
    }

    /// A lock nothing takes away but another process's takeover (a file lock, an in-memory
    /// database), with the lease epoch taken with it.
    fn permanent(node: &str, lease: i64, held: impl Send + Sync + 'static) -> Self {
        Self::new(node, LockStatus::new(lease), held)
    }

    /// What this writer's transactions must check (see `Fence`).
    pub fn fence(&self) -> Fence {
        Fence {
            node: self.node.clone(),
            epoch: self.status.lease.load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    pub fn is_held(&self) -> bool {
        self.status.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Changes each time the lock is taken again after a loss.
    pub fn epoch(&self) -> u64 {
        self.status.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Where rows are kept. Audit rows are write-once: there is no update (only API tokens are
/// updated, when revoked).
#[async_trait]
pub trait Store: Send + Sync {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;
    /// Creates or upgrades the schema.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Makes this process the only writer of `node` until the lock is dropped, or says who has it.
    async fn lock_node(&self, node: &str) -> Result<NodeLock, StoreError>;
    /// Where the node's log stands: one past the highest sequence number among its rows, its
    /// batch statements (first and last), its checkpoints and its archive markers (0 for a new
    /// node), so a head never goes back, even when an archive removed every row; one past the
    /// highest that has a row or was archived (`NodeHead::missing` tells the difference); and
    /// the newest timeStamp among them (new rows never get an older one).
    async fn head(&self, node: &str) -> Result<NodeHead, StoreError>;
    /// Inserts and commits one row, if `fence` still holds (else `Fenced`, nothing written).
    async fn insert(&self, record: &AuditRecord, fence: &Fence) -> Result<(), StoreError>;
    /// Every node id that has rows.
    async fn nodes(&self) -> Result<Vec<String>, StoreError>;
    /// Every node id that occurs in any of the log's tables: rows, batch statements, checkpoints
    /// and archive markers (a verifier must read them all, whatever has rows); with `limit`, the
    /// first `limit` of them in node id order, read without looking at the others.
    async fn all_nodes(&self, limit: Option<usize>) -> Result<Vec<String>, StoreError>;
    /// Counts what the node's tables hold below where its log starts: rows with a sequence
    /// number below `start`, batch statements that end below `start`, checkpoints below
    /// `checkpoints_below`. Three index range scans; nothing is read into memory.
    async fn below_start(
        &self,
        node: &str,
        start: i64,
        checkpoints_below: i64,
    ) -> Result<BelowStart, StoreError>;
    /// Where the node's log starts (0, or one past its newest archive marker) and how many rows
    /// it holds from there through `last`, in one statement: an archive that runs meanwhile is
    /// seen whole or not at all. A count over an index range.
    async fn count_from_start(&self, node: &str, last: i64) -> Result<(i64, i64), StoreError>;
    /// Up to `limit` rows of `node` with sequenceNumber >= `from_seq`, ordered by
    /// (sequenceNumber, pk), starting after `after` (the last (seq, pk) of the previous chunk),
    /// and no more of them than fit in `READ_BUDGET_BYTES` (but always the first): a short
    /// chunk does not mean the end, only an empty one does.
    async fn read_node(&self, chunk: RowChunk<'_>) -> Result<Vec<AuditRecord>, StoreError>;
    async fn get(&self, pk: &str) -> Result<Option<AuditRecord>, StoreError>;
    /// The rows of these pks that exist, in no particular order.
    async fn get_many(&self, pks: &[String]) -> Result<Vec<AuditRecord>, StoreError>;
    /// The node's row with the highest sequence number (one index lookup).
    async fn last_row(&self, node: &str) -> Result<Option<AuditRecord>, StoreError>;
    /// Inserts rows, and the statement of their batch if any, in one transaction, if `fence`
    /// still holds (else `Fenced`, nothing written).
    async fn insert_batch(
        &self,
        rows: &[AuditRecord],
        batch: Option<&BatchRecord>,
        fence: &Fence,
    ) -> Result<(), StoreError> {
        self.begin_batch(rows, batch, fence).await?.commit().await
    }
    /// `insert_batch` without its commit: a transaction left open, invisible to everyone else
    /// until [`OpenBatch::commit`]; dropped uncommitted, nothing of it is written.
    async fn begin_batch(
        &self,
        rows: &[AuditRecord],
        batch: Option<&BatchRecord>,
        fence: &Fence,
    ) -> Result<Box<dyn OpenBatch>, StoreError>;
    /// How many batches a writer may hold open at once: 1 on SQLite (one writing transaction at
    /// a time), 2 on PostgreSQL, whose backends insert concurrently (`Backend::OPEN_BATCHES`).
    fn open_batches(&self) -> usize;
    /// The node's newest batch statement (the head of its chain).
    async fn last_batch(&self, node: &str) -> Result<Option<BatchRecord>, StoreError>;
    /// The statement of the node's batch that starts at `first`.
    async fn get_batch(&self, node: &str, first: i64) -> Result<Option<BatchRecord>, StoreError>;
    /// Up to `limit` statements of `node` that end at or after `from_seq`, in order, starting
    /// after the batch that starts at `after_first`.
    async fn read_batches(&self, chunk: BatchChunk<'_>) -> Result<Vec<BatchRecord>, StoreError>;
    /// Stores a checkpoint (checkpoint.rs).
    async fn insert_checkpoint(&self, c: &Checkpoint) -> Result<(), StoreError>;
    /// The node's checkpoint with the highest sequence number, of either kind.
    async fn last_checkpoint(&self, node: &str) -> Result<Option<Checkpoint>, StoreError>;
    /// The node's newest archive marker: its log starts after it.
    async fn archive_base(&self, node: &str) -> Result<Option<Checkpoint>, StoreError>;
    /// Up to `limit` checkpoints of `node` (both kinds) with sequenceNumber >= `from_seq`,
    /// ordered by (sequenceNumber, kind), starting after `after`.
    async fn read_checkpoints(
        &self,
        chunk: CheckpointChunk<'_>,
    ) -> Result<Vec<Checkpoint>, StoreError>;
    /// Each node's checkpoint(s) with the highest sequence number.
    async fn latest_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;
    /// In one transaction: stores the archive `marker`, deletes the node's rows `first` to the
    /// marker's sequence number, the batch statements that end there or before, and the older
    /// checkpoints. The rows deleted must be exactly the `rows` archived: any other count rolls
    /// everything back with `Inconsistent` (something wrote or removed rows in the range since
    /// they were read). Returns how many rows were deleted.
    async fn archive_node(
        &self,
        marker: &Checkpoint,
        first: i64,
        rows: u64,
    ) -> Result<u64, StoreError>;
    /// On PostgreSQL with AuditRecordData partitioned by time (store/partition): what
    /// `archive_node` does, for every range at once in one transaction, with each partition
    /// wholly before `before` whose rows all lie in the ranges dropped instead of emptied row by
    /// row. None (nothing done) when the table is not partitioned.
    async fn archive_partitioned(
        &self,
        ranges: &[archived::ArchiveRange],
        before: i64,
    ) -> Result<Option<archived::PartitionArchive>, StoreError>;
    /// Up to `query.limit` rows matching every criterion, in `query.order`, after
    /// `query.after` if given.
    /// Like `read_node`, no more rows than fit in `READ_BUDGET_BYTES` (always the first):
    /// `Page::cut` says the budget, not the limit or the end, stopped it.
    async fn query(&self, query: &Query) -> Result<Page, StoreError>;
    /// How many rows match every criterion.
    async fn count(&self, criteria: &[Criterion]) -> Result<i64, StoreError>;
    /// Stores a new API token; `Conflict` when its name is taken (revoked names stay taken).
    async fn insert_token(
        &self,
        token: &crate::format::api_token::ApiToken,
    ) -> Result<(), StoreError>;
    /// Every API token, revoked ones included, by name.
    async fn tokens(&self) -> Result<Vec<crate::format::api_token::ApiToken>, StoreError>;
    /// Revokes a token at `at` (epoch ms); false when no valid token has this name.
    async fn revoke_token(&self, name: &str, at: i64) -> Result<bool, StoreError>;
    /// Where forwarding sink `sink` stands on `node`: the sequence number of the last row it
    /// delivered, or None for a sink not yet started there (table `AuditForwardPosition`).
    async fn forward_position(&self, sink: &str, node: &str) -> Result<Option<i64>, StoreError>;
    /// Records that `sink` delivered `node`'s rows through `seq`, at `at` (epoch ms).
    async fn set_forward_position(
        &self,
        sink: &str,
        node: &str,
        seq: i64,
        at: i64,
    ) -> Result<(), StoreError>;
    /// Up to `limit` rows matching every criterion, ordered by (nodeId, sequenceNumber, pk),
    /// starting after `after` (the previous page's last row): an export (store/export.rs).
    async fn export_page(
        &self,
        criteria: &[Criterion],
        after: Option<export::ExportCursor>,
        limit: i64,
    ) -> Result<Page, StoreError>;
}

/// Rows of a query or an export page, read within `READ_BUDGET_BYTES`.
#[derive(Debug, Default)]
pub struct Page {
    pub rows: Vec<AuditRecord>,
    /// True when the byte budget ended the page before its row limit: more rows may match.
    pub cut: bool,
}

pub type SharedStore = Arc<dyn Store>;

/// Opens the store a URL names: `postgres://...` / `postgresql://...` or `sqlite:...`; a SQLite
/// database that does not exist is created.
pub async fn open(url: &str) -> Result<SharedStore, StoreError> {
    open_with(url, true).await
}

/// `open`, but a SQLite file that does not exist is an error unless the URL says `?mode=rwc`:
/// what the CLI and a server with a configured database use.
pub async fn open_existing(url: &str) -> Result<SharedStore, StoreError> {
    open_with(url, false).await
}

async fn open_with(url: &str, create: bool) -> Result<SharedStore, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, create).await?))
    } else {
        Err(StoreError::BadUrl {
            url: redact_url(url),
            reason: "expected postgres://, postgresql:// or sqlite:".into(),
        })
    }
}

/// The URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A query on one of auditseal's own tables (batch statements, checkpoints) in a database that
/// does not have it, such as one only SignServer has written to: nothing is there.
pub(crate) fn absent<T: Default>(e: sqlx::Error) -> Result<T, sqlx::Error> {
    let missing = match &e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("42P01") || db.message().contains("no such table")
        }
        _ => false,
    };
    if missing { Ok(T::default()) } else { Err(e) }
}

#[cfg(test)]
mod tests {
    use super::{NodeHead, open};

    #[tokio::test]
    async fn an_unreachable_postgresql_is_said_at_once() {
        // Nothing listens on port 1: the cause, at once, not "pool timed out" after 10 s.
        let started = std::time::Instant::now();
        let e = open("postgres://auditseal@127.0.0.1:1/auditseal")
            .await
            .err()
            .expect("no server there")
            .to_string();
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{e}");
        assert!(e.to_lowercase().contains("refused"), "{e}");
        assert!(!e.contains("timed out"), "{e}");
    }

    #[test]
    fn a_head_tells_claimed_numbers_from_stored_ones() {
        let h = NodeHead::from_highest([Some(5), None], [Some(8), Some(6), None], [Some(1)]);
        assert_eq!((h.next_sequence, h.stored_next), (9, 6));
        assert_eq!(h.missing(), Some((6, 8)));
        // An archive marker above the last row stores the numbers up to it.
        let h = NodeHead::from_highest([Some(5), Some(8)], [Some(8)], [None]);
        assert_eq!(h.missing(), None);
        // A statement whose last is below its first still moves the head past its first.
        let h = NodeHead::from_highest([Some(5)], [Some(4), Some(6)], [None]);
        assert_eq!((h.next_sequence, h.missing()), (7, Some((6, 6))));
        // Only negative numbers: the log starts at 0.
        let h = NodeHead::from_highest([Some(-3)], [Some(-1)], [None]);
        assert_eq!((h.next_sequence, h.stored_next, h.missing()), (0, 0, None));
    }

    /// The highest checkpoint of each node, both kinds on a tie, ordered by node and kind.
    #[tokio::test]
    async fn latest_checkpoints_are_each_nodes_highest() {
        use crate::format::checkpoint::{Checkpoint, KIND_ARCHIVE, KIND_CHECKPOINT};
        let store = open("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        assert!(store.latest_checkpoints().await.unwrap().is_empty());
        let at = |node: &str, seq: i64, kind: &str| Checkpoint {
            node_id: node.into(),
            sequence_number: seq,
            time_stamp: seq,
            head_hash: "00".repeat(32),
            kind: kind.into(),
            key_id: 1,
            statement_protection: "x".into(),
        };
        let stored = [
            at("b", 9, KIND_CHECKPOINT),
            at("b", 4, KIND_CHECKPOINT),
            at("a", 3, KIND_CHECKPOINT),
            at("a", 7, KIND_CHECKPOINT),
            at("a", 7, KIND_ARCHIVE),
            at("a", 5, KIND_ARCHIVE),
            at("c", 1, KIND_ARCHIVE),
        ];
        for c in &stored {
            store.insert_checkpoint(c).await.unwrap();
        }
        let latest: Vec<(String, i64, String)> = (store.latest_checkpoints().await.unwrap())
            .into_iter()
            .map(|c| (c.node_id, c.sequence_number, c.kind))
            .collect();
        let mut want = vec![
            ("a".to_string(), 7, KIND_ARCHIVE.to_string()),
            ("a".into(), 7, KIND_CHECKPOINT.into()),
            ("b".into(), 9, KIND_CHECKPOINT.into()),
            ("c".into(), 1, KIND_ARCHIVE.into()),
        ];
        want.sort();
        assert_eq!(latest, want);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact_url("sqlite:data/a.db"), "sqlite:data/a.db");
    }
}
