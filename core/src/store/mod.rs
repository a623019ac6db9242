//! The store: where rows live. One small trait; PostgreSQL and SQLite implement it through sqlx.
//! SQL is written in lower-case identifiers so the same text serves both databases.

pub mod export;
mod postgres;
pub mod query;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::format::batch::BatchRecord;
use crate::format::checkpoint::Checkpoint;
use crate::format::record::AuditRecord;
pub use postgres::PgStore;
pub use query::{Criterion, CriterionError, Cursor, CursorError, Field, Op, Order, Query};
pub use sqlite::SqliteStore;

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
    format!(
        "WITH RECURSIVE n(nodeid) AS ( \
           SELECT MIN(nodeid) FROM {table} \
           UNION ALL \
           SELECT (SELECT MIN(nodeid) FROM {table} WHERE nodeid > n.nodeid) \
           FROM n WHERE n.nodeid IS NOT NULL) \
         SELECT nodeid FROM n WHERE nodeid IS NOT NULL ORDER BY nodeid"
    )
}

/// Binds a `Select`'s parameters in order.
macro_rules! bind_all {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                crate::store::query::Param::Text(t) => q.bind(t),
                crate::store::query::Param::Int(i) => q.bind(i),
            };
        }
        q
    }};
}
pub(crate) use bind_all;

/// How many of rows of these sizes (in order) fit in `budget`: at least one, if there is one.
pub(crate) fn rows_within(sizes: &[i64], budget: i64) -> usize {
    let mut total = 0i64;
    let n = sizes
        .iter()
        .take_while(|s| {
            total = total.saturating_add(**s);
            total <= budget
        })
        .count();
    n.max(sizes.len().min(1))
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
    /// and archive markers (a verifier must read them all, whatever has rows).
    async fn all_nodes(&self) -> Result<Vec<String>, StoreError>;
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
    async fn read_node(
        &self,
        node: &str,
        from_seq: i64,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError>;
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
    ) -> Result<(), StoreError>;
    /// The node's newest batch statement (the head of its chain).
    async fn last_batch(&self, node: &str) -> Result<Option<BatchRecord>, StoreError>;
    /// The statement of the node's batch that starts at `first`.
    async fn get_batch(&self, node: &str, first: i64) -> Result<Option<BatchRecord>, StoreError>;
    /// Up to `limit` statements of `node` that end at or after `from_seq`, in order, starting
    /// after the batch that starts at `after_first`.
    async fn read_batches(
        &self,
        node: &str,
        from_seq: i64,
        after_first: Option<i64>,
        limit: i64,
    ) -> Result<Vec<BatchRecord>, StoreError>;
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
        node: &str,
        from_seq: i64,
        after: Option<(i64, String)>,
        limit: i64,
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
    /// Up to `query.limit` rows matching every criterion, in `query.order`, after
    /// `query.after` if given.
    /// Like `read_node`, no more rows than fit in `READ_BUDGET_BYTES` (always the first):
    /// `Page::cut` says the budget, not the limit or the end, stopped it.
    async fn query(&self, query: &Query) -> Result<Page, StoreError>;
    /// How many rows match every criterion.
    async fn count(&self, criteria: &[Criterion]) -> Result<i64, StoreError>;
    /// Stores a new API token; `Conflict` when its name is taken (revoked names stay taken).
    async fn insert_token(&self, token: &crate::access::ApiToken) -> Result<(), StoreError>;
    /// Every API token, revoked ones included, by name.
    async fn tokens(&self) -> Result<Vec<crate::access::ApiToken>, StoreError>;
    /// Revokes a token at `at` (epoch ms); false when no valid token has this name.
    async fn revoke_token(&self, name: &str, at: i64) -> Result<bool, StoreError>;
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

/// The fenced `INSERT` (`$sql`) of one row with its 15 values and the fence bound.
macro_rules! insert_row {
    ($sql:expr, $r:expr, $fence:expr) => {{
        let r: &AuditRecord = $r;
        let fence: &crate::store::Fence = $fence;
        sqlx::query($sql)
            .bind(&r.pk)
            .bind(&r.node_id)
            .bind(r.sequence_number)
            .bind(r.time_stamp)
            .bind(&r.event_type)
            .bind(&r.event_status)
            .bind(&r.auth_token)
            .bind(&r.service)
            .bind(&r.module)
            .bind(&r.custom_id)
            .bind(&r.search_detail1)
            .bind(&r.search_detail2)
            .bind(&r.additional_details)
            .bind(r.row_version)
            .bind(&r.row_protection)
            .bind(&fence.node)
            .bind(fence.epoch)
    }};
}
pub(crate) use insert_row;

/// Runs one write (`$body`, with `$conn` a `&mut` connection of its own) and closes that
/// connection if the write failed, so it is never handed out again: after SQLITE_FULL or an I/O
/// error inside a transaction, SQLite may have rolled the transaction back by itself or kept it
/// open, and the driver's idea of it can be wrong; a later statement on that connection could
/// then run inside a transaction nobody commits (answered, never stored), or hold the database
/// locked for every other connection. A new connection replaces it.
macro_rules! on_own_connection {
    ($pool:expr, |$conn:ident| $body:block) => {{
        let mut own = $pool.acquire().await?;
        let result: Result<_, StoreError> = async {
            let $conn = &mut *own;
            $body
        }
        .await;
        if result.is_err() {
            drop(own.detach());
        }
        result
    }};
}
pub(crate) use on_own_connection;

/// `INSERT` of one batch statement, for either driver.
macro_rules! insert_statement {
    ($b:expr) => {{
        let b: &BatchRecord = $b;
        sqlx::query(crate::store::INSERT_BATCH)
            .bind(&b.node_id)
            .bind(b.first_sequence_number)
            .bind(b.last_sequence_number)
            .bind(b.time_stamp)
            .bind(&b.merkle_root)
            .bind(&b.previous_hash)
            .bind(b.key_id)
            .bind(&b.statement_protection)
    }};
}
pub(crate) use insert_statement;

/// `INSERT` of one checkpoint, for either driver.
macro_rules! insert_checkpoint {
    ($c:expr) => {{
        let c: &crate::format::checkpoint::Checkpoint = $c;
        sqlx::query(crate::store::INSERT_CHECKPOINT)
            .bind(&c.node_id)
            .bind(c.sequence_number)
            .bind(c.time_stamp)
            .bind(&c.head_hash)
            .bind(&c.kind)
            .bind(c.key_id)
            .bind(&c.statement_protection)
    }};
}
pub(crate) use insert_checkpoint;

/// Implements `Store` for a driver: its own methods (`$own`) plus those whose SQL is the same for
/// both databases, written once here and compiled for each driver's types.
macro_rules! impl_store {
    ($ty:ty, { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $ty {
        $($own)*
        async fn head(&self, node: &str) -> Result<crate::store::NodeHead, StoreError> {
            // One past the highest number the node ever used, wherever it is still recorded:
            // its rows, its batch statements (first and last: a statement whose last is below
            // its first must not stall the node), its checkpoints and archive markers. Rows
            // alone are not enough: an archive may have removed all of them. Rows are read
            // first: an archive that runs meanwhile deletes rows and stores its marker in one
            // transaction, so the later queries see its marker if the rows were gone.
            let rows: (Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT MAX(sequencenumber), MAX(\"timestamp\") FROM auditrecorddata WHERE nodeid = $1",
            )
            .bind(node)
            .fetch_one(&self.pool)
            .await?;
            let batches: Option<(Option<i64>, Option<i64>, Option<i64>)> = sqlx::query_as(
                "SELECT MAX(lastsequencenumber), MAX(firstsequencenumber), MAX(\"timestamp\") \
                 FROM auditbatchdata WHERE nodeid = $1",
            )
            .bind(node)
            .fetch_optional(&self.pool)
            .await
            .or_else(crate::store::absent)?;
            let checkpoints: Option<(Option<i64>, Option<i64>, Option<i64>)> = sqlx::query_as(
                "SELECT MAX(CASE WHEN kind = $2 THEN NULL ELSE sequencenumber END), \
                 MAX(CASE WHEN kind = $2 THEN sequencenumber ELSE NULL END), \
                 MAX(\"timestamp\") FROM auditcheckpointdata WHERE nodeid = $1",
            )
            .bind(node)
            .bind(crate::format::checkpoint::KIND_ARCHIVE)
            .fetch_optional(&self.pool)
            .await
            .or_else(crate::store::absent)?;
            let (b_last, b_first, b_time) = batches.unwrap_or_default();
            let (c_seq, marker, c_time) = checkpoints.unwrap_or_default();
            Ok(crate::store::NodeHead::from_highest(
                [rows.0, marker],
                [b_last, b_first, c_seq],
                [rows.1, b_time, c_time],
            ))
        }

        async fn nodes(&self) -> Result<Vec<String>, StoreError> {
            // A loose index scan: one lookup in (nodeid, sequencenumber) per node, where
            // DISTINCT reads every row; live followers ask for the nodes several times a second.
            Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(crate::store::distinct_nodes(
                "auditrecorddata",
            )))
            .fetch_all(&self.pool)
            .await?)
        }

        async fn all_nodes(&self) -> Result<Vec<String>, StoreError> {
            let mut all: std::collections::BTreeSet<String> =
                self.nodes().await?.into_iter().collect();
            // Both tables' primary keys start with nodeid: the same loose scan.
            for table in ["auditbatchdata", "auditcheckpointdata"] {
                let found: Vec<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(crate::store::distinct_nodes(table)))
                        .fetch_all(&self.pool)
                        .await
                        .or_else(crate::store::absent)?;
                all.extend(found);
            }
            Ok(all.into_iter().collect())
        }

        async fn below_start(
            &self,
            node: &str,
            start: i64,
            checkpoints_below: i64,
        ) -> Result<crate::store::BelowStart, StoreError> {
            let rows: crate::store::Span = sqlx::query_as(
                "SELECT COUNT(*) AS count, MIN(sequencenumber) AS first, \
                 MAX(sequencenumber) AS last FROM auditrecorddata \
                 WHERE nodeid = $1 AND sequencenumber < $2",
            )
            .bind(node)
            .bind(start)
            .fetch_one(&self.pool)
            .await?;
            let batches: Option<crate::store::Span> = sqlx::query_as(
                "SELECT COUNT(*) AS count, MIN(firstsequencenumber) AS first, \
                 MAX(lastsequencenumber) AS last FROM auditbatchdata \
                 WHERE nodeid = $1 AND lastsequencenumber < $2",
            )
            .bind(node)
            .bind(start)
            .fetch_optional(&self.pool)
            .await
            .or_else(crate::store::absent)?;
            let checkpoints: Option<crate::store::Span> = sqlx::query_as(
                "SELECT COUNT(*) AS count, MIN(sequencenumber) AS first, \
                 MAX(sequencenumber) AS last FROM auditcheckpointdata \
                 WHERE nodeid = $1 AND sequencenumber < $2",
            )
            .bind(node)
            .bind(checkpoints_below)
            .fetch_optional(&self.pool)
            .await
            .or_else(crate::store::absent)?;
            Ok(crate::store::BelowStart {
                rows,
                batches: batches.unwrap_or_default(),
                checkpoints: checkpoints.unwrap_or_default(),
            })
        }

        async fn count_from_start(&self, node: &str, last: i64) -> Result<(i64, i64), StoreError> {
            Ok(sqlx::query_as(
                "SELECT s.start, (SELECT COUNT(*) FROM auditrecorddata \
                 WHERE nodeid = $1 AND sequencenumber >= s.start AND sequencenumber <= $2) \
                 FROM (SELECT COALESCE((SELECT MAX(sequencenumber) FROM auditcheckpointdata \
                 WHERE nodeid = $1 AND kind = $3) + 1, 0) AS start) s",
            )
            .bind(node)
            .bind(last)
            .bind(crate::format::checkpoint::KIND_ARCHIVE)
            .fetch_one(&self.pool)
            .await?)
        }

        async fn get(&self, pk: &str) -> Result<Option<AuditRecord>, StoreError> {
            // No stored text holds NUL, and PostgreSQL refuses to compare with it.
            if pk.contains('\0') {
                return Ok(None);
            }
            let sql = format!(
                "SELECT {} FROM auditrecorddata WHERE pk = $1",
                crate::store::COLUMNS
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(pk)
                .fetch_optional(&self.pool)
                .await?)
        }

        async fn last_row(&self, node: &str) -> Result<Option<AuditRecord>, StoreError> {
            let sql = format!(
                "SELECT {} FROM auditrecorddata WHERE nodeid = $1 \
                 ORDER BY sequencenumber DESC, pk DESC LIMIT 1",
                crate::store::COLUMNS
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(node)
                .fetch_optional(&self.pool)
                .await?)
        }

        async fn last_batch(
            &self,
            node: &str,
        ) -> Result<Option<crate::format::batch::BatchRecord>, StoreError> {
            let sql = format!(
                "SELECT {} FROM auditbatchdata WHERE nodeid = $1 \
                 ORDER BY firstsequencenumber DESC LIMIT 1",
                crate::store::BATCH_COLUMNS
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(node)
                .fetch_optional(&self.pool)
                .await
                .or_else(crate::store::absent)?)
        }

        async fn get_batch(
            &self,
            node: &str,
            first: i64,
        ) -> Result<Option<crate::format::batch::BatchRecord>, StoreError> {
            let sql = format!(
                "SELECT {} FROM auditbatchdata WHERE nodeid = $1 AND firstsequencenumber = $2",
                crate::store::BATCH_COLUMNS
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(node)
                .bind(first)
                .fetch_optional(&self.pool)
                .await
                .or_else(crate::store::absent)?)
        }

        async fn read_batches(
            &self,
            node: &str,
            from_seq: i64,
            after_first: Option<i64>,
            limit: i64,
        ) -> Result<Vec<crate::format::batch::BatchRecord>, StoreError> {
            let sql = format!(
                "SELECT {} FROM auditbatchdata WHERE nodeid = $1 AND lastsequencenumber >= $2 \
                 AND firstsequencenumber > $3 ORDER BY firstsequencenumber LIMIT $4",
                crate::store::BATCH_COLUMNS
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(node)
                .bind(from_seq)
                .bind(after_first.unwrap_or(i64::MIN))
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .or_else(crate::store::absent)?)
        }

        async fn insert_checkpoint(
            &self,
            c: &crate::format::checkpoint::Checkpoint,
        ) -> Result<(), StoreError> {
            crate::store::on_own_connection!(self.pool, |conn| {
                crate::store::insert_checkpoint!(c).execute(&mut *conn).await?;
                Ok(())
            })
        }

        async fn last_checkpoint(
            &self,
            node: &str,
        ) -> Result<Option<crate::format::checkpoint::Checkpoint>, StoreError> {
            let sql = format!(
                "SELECT {} FROM auditcheckpointdata WHERE nodeid = $1 \
                 ORDER BY sequencenumber DESC, kind LIMIT 1",
                crate::store::CHECKPOINT_COLUMNS
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(node)
                .fetch_optional(&self.pool)
                .await
                .or_else(crate::store::absent)?)
        }

        async fn archive_base(
            &self,
            node: &str,
        ) -> Result<Option<crate::format::checkpoint::Checkpoint>, StoreError> {
            let sql = format!(
                "SELECT {} FROM auditcheckpointdata WHERE nodeid = $1 AND kind = $2 \
                 ORDER BY sequencenumber DESC LIMIT 1",
                crate::store::CHECKPOINT_COLUMNS
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(node)
                .bind(crate::format::checkpoint::KIND_ARCHIVE)
                .fetch_optional(&self.pool)
                .await
                .or_else(crate::store::absent)?)
        }

        async fn read_checkpoints(
            &self,
            node: &str,
            from_seq: i64,
            after: Option<(i64, String)>,
            limit: i64,
        ) -> Result<Vec<crate::format::checkpoint::Checkpoint>, StoreError> {
            let sql = format!(
                "SELECT {} FROM auditcheckpointdata WHERE nodeid = $1 AND sequencenumber >= $2 \
                 AND (sequencenumber > $3 OR kind > $4) \
                 ORDER BY sequencenumber, kind LIMIT $5",
                crate::store::CHECKPOINT_COLUMNS
            );
            let (after_seq, after_kind) = after.unwrap_or((i64::MIN, String::new()));
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(node)
                .bind(from_seq.max(after_seq))
                .bind(after_seq)
                .bind(after_kind)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .or_else(crate::store::absent)?)
        }

        async fn latest_checkpoints(
            &self,
        ) -> Result<Vec<crate::format::checkpoint::Checkpoint>, StoreError> {
            let sql = format!(
                "SELECT {} FROM auditcheckpointdata c WHERE sequencenumber = \
                 (SELECT MAX(sequencenumber) FROM auditcheckpointdata d WHERE d.nodeid = c.nodeid) \
                 ORDER BY nodeid, kind",
                crate::store::CHECKPOINT_COLUMNS
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await
                .or_else(crate::store::absent)?)
        }

        async fn archive_node(
            &self,
            marker: &crate::format::checkpoint::Checkpoint,
            first: i64,
            expected: u64,
        ) -> Result<u64, StoreError> {
            crate::store::on_own_connection!(self.pool, |conn| {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            crate::store::insert_checkpoint!(marker).execute(&mut *tx).await?;
            let rows = sqlx::query(
                "DELETE FROM auditrecorddata WHERE nodeid = $1 AND sequencenumber >= $2 \
                 AND sequencenumber <= $3",
            )
            .bind(&marker.node_id)
            .bind(first)
            .bind(marker.sequence_number)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if rows != expected {
                // Dropping the transaction rolls it back: marker and deletion alike.
                return Err(StoreError::Inconsistent(format!(
                    "node {}: sequence numbers {first}..{} hold {rows} rows, the archive wrote \
                     and verified {expected}; nothing was deleted",
                    marker.node_id, marker.sequence_number
                )));
            }
            sqlx::query("DELETE FROM auditbatchdata WHERE nodeid = $1 AND lastsequencenumber <= $2")
                .bind(&marker.node_id)
                .bind(marker.sequence_number)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM auditcheckpointdata WHERE nodeid = $1 AND sequencenumber < $2",
            )
            .bind(&marker.node_id)
            .bind(marker.sequence_number)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(rows)
            })
        }

        async fn insert_token(
            &self,
            t: &crate::access::ApiToken,
        ) -> Result<(), StoreError> {
            let q = sqlx::query(
                "INSERT INTO auditapitokendata (name, role, tokenhash, createtime, revoketime) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&t.name)
            .bind(&t.role)
            .bind(&t.token_hash)
            .bind(t.created)
            .bind(t.revoked);
            crate::store::on_own_connection!(self.pool, |conn| {
                q.execute(&mut *conn).await?;
                Ok(())
            })
        }

        async fn tokens(&self) -> Result<Vec<crate::access::ApiToken>, StoreError> {
            Ok(sqlx::query_as(
                "SELECT name AS name, role AS role, tokenhash AS tokenhash, \
                 createtime AS createtime, revoketime AS revoketime \
                 FROM auditapitokendata ORDER BY name",
            )
            .fetch_all(&self.pool)
            .await
            .or_else(crate::store::absent)?)
        }

        async fn revoke_token(&self, name: &str, at: i64) -> Result<bool, StoreError> {
            // As in `get`: no token is named with a NUL.
            if name.contains('\0') {
                return Ok(false);
            }
            let q = sqlx::query(
                "UPDATE auditapitokendata SET revoketime = $2 \
                 WHERE name = $1 AND revoketime IS NULL",
            )
            .bind(name)
            .bind(at);
            crate::store::on_own_connection!(self.pool, |conn| {
                Ok(q.execute(&mut *conn).await?.rows_affected() == 1)
            })
        }

        async fn query(&self, q: &Query) -> Result<crate::store::Page, StoreError> {
            self.read_bounded(crate::store::query::select_parts(q)).await
        }

        async fn count(&self, criteria: &[crate::store::Criterion]) -> Result<i64, StoreError> {
            let (sql, params) = crate::store::query::build_count(criteria);
            let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
            for p in params {
                query = match p {
                    crate::store::query::Param::Text(t) => query.bind(t),
                    crate::store::query::Param::Int(i) => query.bind(i),
                };
            }
            Ok(query.fetch_one(&self.pool).await?)
        }

        async fn export_page(
            &self,
            criteria: &[crate::store::Criterion],
            after: Option<crate::store::export::ExportCursor>,
            limit: i64,
        ) -> Result<crate::store::Page, StoreError> {
            self.read_bounded(crate::store::export::page_parts(criteria, after.as_ref(), limit))
                .await
        }
        }
    };
}
pub(crate) use impl_store;

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

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact_url("sqlite:data/a.db"), "sqlite:data/a.db");
    }
}
