//! The store: where rows live. One small trait; PostgreSQL and SQLite implement it through sqlx.
//! SQL is written in lower-case identifiers so the same text serves both databases.

pub mod export;
mod postgres;
pub mod query;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::batch::BatchRecord;
use crate::checkpoint::Checkpoint;
use crate::record::AuditRecord;
pub use postgres::PgStore;
pub use query::{Criterion, CriterionError, Cursor, CursorError, Field, Op, Order, Query};
pub use sqlite::SqliteStore;

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

pub(crate) const INSERT: &str = "INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \
     \"timestamp\", eventtype, eventstatus, authtoken, service, module, customid, searchdetail1, \
     searchdetail2, additionaldetails, rowversion, rowprotection) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

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
    #[error("database URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("database error: {0}")]
    Database(String),
    #[error("schema migration failed: {0}")]
    Migration(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_string())
            }
            // PostgreSQL classes 08 (connection exception) and 57 (operator intervention:
            // shutdown, crash, not accepting connections yet): the server went away.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57")) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// Where a node's log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHead {
    pub next_sequence: i64,
    pub last_time_stamp: i64,
}

/// Held for as long as this process is the one writer of a node id; dropping it releases it.
/// A lock can be lost while held (PostgreSQL: its session died); writers check `is_held` before
/// each write and re-read their position when `epoch` changes (the lock was taken again).
pub struct NodeLock {
    status: Arc<LockStatus>,
    _held: Box<dyn Send + Sync>,
}

/// Shared between a lock and whatever keeps it alive.
#[derive(Debug)]
pub struct LockStatus {
    held: std::sync::atomic::AtomicBool,
    epoch: std::sync::atomic::AtomicU64,
}

impl LockStatus {
    fn new() -> Arc<Self> {
        Arc::new(LockStatus {
            held: std::sync::atomic::AtomicBool::new(true),
            epoch: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn lost(&self) {
        self.held.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn regained(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl NodeLock {
    fn new(status: Arc<LockStatus>, held: impl Send + Sync + 'static) -> Self {
        NodeLock {
            status,
            _held: Box::new(held),
        }
    }

    /// A lock nothing can take away (a file lock, an in-memory database).
    fn permanent(held: impl Send + Sync + 'static) -> Self {
        Self::new(LockStatus::new(), held)
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
    /// Where the node's log stands: MAX(sequenceNumber)+1 (0 for a new node) and the newest
    /// timeStamp (new rows never get an older one).
    async fn head(&self, node: &str) -> Result<NodeHead, StoreError>;
    /// Inserts and commits one row.
    async fn insert(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// Every node id that has rows.
    async fn nodes(&self) -> Result<Vec<String>, StoreError>;
    /// Up to `limit` rows of `node` with sequenceNumber >= `from_seq`, ordered by
    /// (sequenceNumber, pk), starting after `after` (the last (seq, pk) of the previous chunk).
    async fn read_node(
        &self,
        node: &str,
        from_seq: i64,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    async fn get(&self, pk: &str) -> Result<Option<AuditRecord>, StoreError>;
    /// Inserts rows, and the statement of their batch if any, in one transaction.
    async fn insert_batch(
        &self,
        rows: &[AuditRecord],
        batch: Option<&BatchRecord>,
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
    /// In one transaction: stores the archive `marker` and deletes the node's rows up to its
    /// sequence number, the batch statements that end there or before, and the older
    /// checkpoints. Returns how many rows were deleted.
    async fn archive_node(&self, marker: &Checkpoint) -> Result<u64, StoreError>;
    /// Up to `query.limit` rows matching every criterion, in `query.order`, after
    /// `query.after` if given.
    async fn query(&self, query: &Query) -> Result<Vec<AuditRecord>, StoreError>;
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
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

pub type SharedStore = Arc<dyn Store>;

/// Opens the store a URL names: `postgres://...` / `postgresql://...` or `sqlite:...`.
pub async fn open(url: &str) -> Result<SharedStore, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
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

/// `INSERT` of one row with its 15 values bound, for either driver.
macro_rules! insert_row {
    ($r:expr) => {{
        let r: &AuditRecord = $r;
        sqlx::query(crate::store::INSERT)
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
    }};
}
pub(crate) use insert_row;

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
        let c: &crate::checkpoint::Checkpoint = $c;
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
            let (max, time): (Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT MAX(sequencenumber), MAX(\"timestamp\") FROM auditrecorddata WHERE nodeid = $1",
            )
            .bind(node)
            .fetch_one(&self.pool)
            .await?;
            Ok(crate::store::NodeHead {
                next_sequence: max.map_or(0, |m| m + 1),
                last_time_stamp: time.unwrap_or(0),
            })
        }

        async fn insert(&self, r: &AuditRecord) -> Result<(), StoreError> {
            crate::store::insert_row!(r)
                .execute(&self.pool)
                .await?;
            Ok(())
        }

        async fn nodes(&self) -> Result<Vec<String>, StoreError> {
            // A loose index scan: one lookup in (nodeid, sequencenumber) per node, where
            // DISTINCT reads every row; live followers ask for the nodes several times a second.
            Ok(sqlx::query_scalar(
                "WITH RECURSIVE n(nodeid) AS ( \
                   SELECT MIN(nodeid) FROM auditrecorddata \
                   UNION ALL \
                   SELECT (SELECT MIN(nodeid) FROM auditrecorddata WHERE nodeid > n.nodeid) \
                   FROM n WHERE n.nodeid IS NOT NULL) \
                 SELECT nodeid FROM n WHERE nodeid IS NOT NULL ORDER BY nodeid",
            )
            .fetch_all(&self.pool)
            .await?)
        }

        async fn read_node(
            &self,
            node: &str,
            from_seq: i64,
            after: Option<(i64, String)>,
            limit: i64,
        ) -> Result<Vec<AuditRecord>, StoreError> {
            // The lower bound is the later of the offset and the previous chunk's last row, so
            // each chunk is one index range scan starting where the last one ended (not at the
            // offset: that made reading a node quadratic).
            let sql = format!(
                "SELECT {} FROM auditrecorddata WHERE nodeid = $1 AND sequencenumber >= $2 \
                 AND (sequencenumber > $3 OR pk > $4) \
                 ORDER BY sequencenumber, pk LIMIT $5",
                crate::store::COLUMNS
            );
            let (after_seq, after_pk) = after.unwrap_or((i64::MIN, String::new()));
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(node)
                .bind(from_seq.max(after_seq))
                .bind(after_seq)
                .bind(after_pk)
                .bind(limit)
                .fetch_all(&self.pool)
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

        async fn last_batch(
            &self,
            node: &str,
        ) -> Result<Option<crate::batch::BatchRecord>, StoreError> {
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
        ) -> Result<Option<crate::batch::BatchRecord>, StoreError> {
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
        ) -> Result<Vec<crate::batch::BatchRecord>, StoreError> {
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
            c: &crate::checkpoint::Checkpoint,
        ) -> Result<(), StoreError> {
            crate::store::insert_checkpoint!(c).execute(&self.pool).await?;
            Ok(())
        }

        async fn last_checkpoint(
            &self,
            node: &str,
        ) -> Result<Option<crate::checkpoint::Checkpoint>, StoreError> {
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
        ) -> Result<Option<crate::checkpoint::Checkpoint>, StoreError> {
            let sql = format!(
                "SELECT {} FROM auditcheckpointdata WHERE nodeid = $1 AND kind = $2 \
                 ORDER BY sequencenumber DESC LIMIT 1",
                crate::store::CHECKPOINT_COLUMNS
            );
            Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(node)
                .bind(crate::checkpoint::KIND_ARCHIVE)
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
        ) -> Result<Vec<crate::checkpoint::Checkpoint>, StoreError> {
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
        ) -> Result<Vec<crate::checkpoint::Checkpoint>, StoreError> {
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
            marker: &crate::checkpoint::Checkpoint,
        ) -> Result<u64, StoreError> {
            let mut tx = self.pool.begin().await?;
            crate::store::insert_checkpoint!(marker).execute(&mut *tx).await?;
            let rows = sqlx::query(
                "DELETE FROM auditrecorddata WHERE nodeid = $1 AND sequencenumber <= $2",
            )
            .bind(&marker.node_id)
            .bind(marker.sequence_number)
            .execute(&mut *tx)
            .await?
            .rows_affected();
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
        }

        async fn insert_token(
            &self,
            t: &crate::access::ApiToken,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO auditapitokendata (name, role, tokenhash, createtime, revoketime) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&t.name)
            .bind(&t.role)
            .bind(&t.token_hash)
            .bind(t.created)
            .bind(t.revoked)
            .execute(&self.pool)
            .await?;
            Ok(())
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
            let n = sqlx::query(
                "UPDATE auditapitokendata SET revoketime = $2 \
                 WHERE name = $1 AND revoketime IS NULL",
            )
            .bind(name)
            .bind(at)
            .execute(&self.pool)
            .await?
            .rows_affected();
            Ok(n == 1)
        }

        async fn query(&self, q: &Query) -> Result<Vec<AuditRecord>, StoreError> {
            let (sql, params) = crate::store::query::build_select(q);
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for p in params {
                query = match p {
                    crate::store::query::Param::Text(t) => query.bind(t),
                    crate::store::query::Param::Int(i) => query.bind(i),
                };
            }
            Ok(query.fetch_all(&self.pool).await?)
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
        ) -> Result<Vec<AuditRecord>, StoreError> {
            let (sql, params) = crate::store::export::page_sql(criteria, after.as_ref(), limit);
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for p in params {
                query = match p {
                    crate::store::query::Param::Text(t) => query.bind(t),
                    crate::store::query::Param::Int(i) => query.bind(i),
                };
            }
            Ok(query.fetch_all(&self.pool).await?)
        }
        }
    };
}
pub(crate) use impl_store;

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact_url("sqlite:data/a.db"), "sqlite:data/a.db");
    }
}
