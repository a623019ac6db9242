//! `Store` for the SQL databases, written once: [`Store`] is implemented here for every
//! [`Backend`], as ordinary generic code over sqlx's `Database`. The queries whose text is the
//! same for PostgreSQL and SQLite are in this file; what each database does its own way
//! (migrations, the writer lock, multi-row inserts, reads bounded by bytes, a list of keys as one
//! parameter) is its `Backend` implementation, in postgres.rs and sqlite.rs.
//!
//! The `where` clause of the `Store` implementation lists what the generic code needs of a
//! driver (the column types it binds and reads); both drivers meet it, and a query that does not
//! type-check is reported here, once.

use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::archived::{ArchiveRange, PartitionArchive};
use super::export::ExportCursor;
use super::query::Select;
use super::{
    BatchChunk, BelowStart, CheckpointChunk, Criterion, Fence, NodeHead, NodeLock, OpenBatch, Page,
    RowChunk, Span, Store, StoreError, absent,
};
use crate::format::api_token::ApiToken;
use crate::format::batch::BatchRecord;
use crate::format::checkpoint::{Checkpoint, KIND_ARCHIVE};
use crate::format::record::AuditRecord;

pub(crate) mod bind;
mod own;

pub(crate) use bind::{arguments, query};
pub(crate) use own::Own;

/// What a SQL database does its own way; everything else of [`Store`] is shared.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync {
    type DB: Database;
    /// `postgres` or `sqlite`.
    const NAME: &'static str;
    /// The fenced `INSERT` of one row ([`super::fenced_insert!`] with the database's lock).
    const FENCED_INSERT: &'static str;
    /// `Store::open_batches`.
    const OPEN_BATCHES: usize;

    fn pool(&self) -> &Pool<Self::DB>;
    fn rows_affected(done: &<Self::DB as Database>::QueryResult) -> u64;

    /// The database's migrations (`migrations/<database>`).
    fn migrator() -> &'static sqlx::migrate::Migrator;
    async fn take_node_lock(&self, node: &str) -> Result<NodeLock, StoreError>;
    /// Inserts a batch's rows on `conn` (inside the batch's transaction), fenced as a whole:
    /// `Fenced` unless every row was inserted.
    async fn insert_rows(
        conn: &mut <Self::DB as Database>::Connection,
        rows: &[AuditRecord],
        fence: &Fence,
    ) -> Result<(), StoreError>;
    /// A chunk of a node's rows within `READ_BUDGET_BYTES` (see `Store::read_node`).
    async fn read_node_chunk(&self, chunk: RowChunk<'_>) -> Result<Vec<AuditRecord>, StoreError>;
    async fn read_pks(&self, pks: &[String]) -> Result<Vec<AuditRecord>, StoreError>;
    /// A query or export page within `READ_BUDGET_BYTES`.
    async fn read_bounded(&self, sel: Select) -> Result<Page, StoreError>;
    /// `Store::archive_partitioned`: only PostgreSQL partitions its table.
    async fn partitioned_archive(
        &self,
        _ranges: &[ArchiveRange],
        _before: i64,
    ) -> Result<Option<PartitionArchive>, StoreError> {
        Ok(None)
    }
}

/// A batch's transaction left open on a connection of its own (`Store::begin_batch`).
struct Open<DB: Database> {
    own: Own<DB>,
}

#[async_trait::async_trait]
impl<DB: Database> OpenBatch for Open<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let Open { mut own } = *self;
        sqlx::raw_sql("COMMIT").execute(own.conn()).await?;
        own.keep();
        Ok(())
    }
}

/// The highest values of a node's batch statements or checkpoints (three columns).
type Highest = (Option<i64>, Option<i64>, Option<i64>);

#[async_trait::async_trait]
impl<B> Store for B
where
    B: Backend,
    for<'c> &'c mut <B::DB as Database>::Connection: Executor<'c, Database = B::DB>,
    <B::DB as Database>::Connection: sqlx::migrate::Migrate,
    <B::DB as Database>::Arguments: IntoArguments<B::DB>,
    for<'e> i64: Type<B::DB> + Encode<'e, B::DB> + Decode<'e, B::DB>,
    for<'e> i32: Type<B::DB> + Encode<'e, B::DB>,
    for<'e> Option<i64>: Type<B::DB> + Encode<'e, B::DB>,
    for<'e> &'e str: Type<B::DB> + Encode<'e, B::DB>,
    for<'e> String: Type<B::DB> + Encode<'e, B::DB> + Decode<'e, B::DB>,
    for<'e> &'e String: Type<B::DB> + Encode<'e, B::DB>,
    for<'e> &'e Option<String>: Type<B::DB> + Encode<'e, B::DB>,
    for<'r> AuditRecord: FromRow<'r, <B::DB as Database>::Row>,
    for<'r> BatchRecord: FromRow<'r, <B::DB as Database>::Row>,
    for<'r> Checkpoint: FromRow<'r, <B::DB as Database>::Row>,
    for<'r> ApiToken: FromRow<'r, <B::DB as Database>::Row>,
    for<'r> Span: FromRow<'r, <B::DB as Database>::Row>,
    for<'r> (Option<i64>, Option<i64>): FromRow<'r, <B::DB as Database>::Row>,
    for<'r> Highest: FromRow<'r, <B::DB as Database>::Row>,
    for<'r> (i64, i64): FromRow<'r, <B::DB as Database>::Row>,
    for<'r> (i64,): FromRow<'r, <B::DB as Database>::Row>,
    for<'r> (String,): FromRow<'r, <B::DB as Database>::Row>,
{
    fn backend(&self) -> &'static str {
        B::NAME
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        B::migrator()
            .run(self.pool())
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn lock_node(&self, node: &str) -> Result<NodeLock, StoreError> {
        Backend::take_node_lock(self, node).await
    }

    async fn head(&self, node: &str) -> Result<NodeHead, StoreError> {
        // One past the highest number the node ever used, wherever it is still recorded: its
        // rows, its batch statements (first and last: a statement whose last is below its first
        // must not stall the node), its checkpoints and archive markers. Rows alone are not
        // enough: an archive may have removed all of them. Rows are read first: an archive that
        // runs meanwhile deletes rows and stores its marker in one transaction, so the later
        // queries see its marker if the rows were gone.
        let rows: (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT MAX(sequencenumber), MAX(\"timestamp\") FROM auditrecorddata WHERE nodeid = $1",
        )
        .bind(node)
        .fetch_one(self.pool())
        .await?;
        let batches: Option<Highest> = sqlx::query_as(
            "SELECT MAX(lastsequencenumber), MAX(firstsequencenumber), MAX(\"timestamp\") \
             FROM auditbatchdata WHERE nodeid = $1",
        )
        .bind(node)
        .fetch_optional(self.pool())
        .await
        .or_else(absent)?;
        let checkpoints: Option<Highest> = sqlx::query_as(
            "SELECT MAX(CASE WHEN kind = $2 THEN NULL ELSE sequencenumber END), \
             MAX(CASE WHEN kind = $2 THEN sequencenumber ELSE NULL END), \
             MAX(\"timestamp\") FROM auditcheckpointdata WHERE nodeid = $1",
        )
        .bind(node)
        .bind(KIND_ARCHIVE)
        .fetch_optional(self.pool())
        .await
        .or_else(absent)?;
        let (b_last, b_first, b_time) = batches.unwrap_or_default();
        let (c_seq, marker, c_time) = checkpoints.unwrap_or_default();
        Ok(NodeHead::from_highest(
            [rows.0, marker],
            [b_last, b_first, c_seq],
            [rows.1, b_time, c_time],
        ))
    }

    async fn insert(&self, r: &AuditRecord, fence: &Fence) -> Result<(), StoreError> {
        let mut own = Own::acquire(self.pool()).await?;
        let done = query(B::FENCED_INSERT, bind::row(r, fence))
            .execute(own.conn())
            .await?;
        if B::rows_affected(&done) != 1 {
            return Err(StoreError::Fenced(fence.node.clone()));
        }
        own.keep();
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        // A loose index scan: one lookup in (nodeid, sequencenumber) per node, where DISTINCT
        // reads every row; live followers ask for the nodes several times a second.
        Ok(
            sqlx::query_scalar(sqlx::AssertSqlSafe(super::distinct_nodes(
                "auditrecorddata",
            )))
            .fetch_all(self.pool())
            .await?,
        )
    }

    async fn all_nodes(&self, limit: Option<usize>) -> Result<Vec<String>, StoreError> {
        // One loose scan per table (each key starts with nodeid); the first `limit` of the
        // union are among the first `limit` of each. Only the rows' table must exist.
        let mut all = std::collections::BTreeSet::new();
        for table in ["auditrecorddata", "auditbatchdata", "auditcheckpointdata"] {
            let sql = super::first_distinct_nodes(table, limit);
            let found = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(self.pool());
            let found: Vec<String> = match table {
                "auditrecorddata" => found.await?,
                _ => found.await.or_else(absent)?,
            };
            all.extend(found);
        }
        Ok(all.into_iter().take(limit.unwrap_or(usize::MAX)).collect())
    }

    async fn below_start(
        &self,
        node: &str,
        start: i64,
        checkpoints_below: i64,
    ) -> Result<BelowStart, StoreError> {
        // (table, its first and last sequence number columns, the bound).
        let span = |(table, first, last, below): (&str, &str, &str, i64)| {
            let sql = format!(
                "SELECT COUNT(*) AS count, MIN({first}) AS first, MAX({last}) AS last \
                 FROM {table} WHERE nodeid = $1 AND {last} < $2"
            );
            async move {
                sqlx::query_as::<_, Span>(sqlx::AssertSqlSafe(sql))
                    .bind(node)
                    .bind(below)
                    .fetch_one(self.pool())
                    .await
            }
        };
        let rows = span(("auditrecorddata", "sequencenumber", "sequencenumber", start)).await?;
        // The statements and checkpoints tables may be absent in a CESeCore database.
        let batches = span((
            "auditbatchdata",
            "firstsequencenumber",
            "lastsequencenumber",
            start,
        ))
        .await
        .map(Some)
        .or_else(absent)?;
        let checkpoints = span((
            "auditcheckpointdata",
            "sequencenumber",
            "sequencenumber",
            checkpoints_below,
        ))
        .await
        .map(Some)
        .or_else(absent)?;
        Ok(BelowStart {
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
        .bind(KIND_ARCHIVE)
        .fetch_one(self.pool())
        .await?)
    }

    async fn read_node(&self, chunk: RowChunk<'_>) -> Result<Vec<AuditRecord>, StoreError> {
        Backend::read_node_chunk(self, chunk).await
    }

    async fn get(&self, pk: &str) -> Result<Option<AuditRecord>, StoreError> {
        // No stored text holds NUL, and PostgreSQL refuses to compare with it.
        if pk.contains('\0') {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {} FROM auditrecorddata WHERE pk = $1",
            super::COLUMNS
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(pk)
            .fetch_optional(self.pool())
            .await?)
    }

    async fn get_many(&self, pks: &[String]) -> Result<Vec<AuditRecord>, StoreError> {
        Backend::read_pks(self, pks).await
    }

    async fn last_row(&self, node: &str) -> Result<Option<AuditRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM auditrecorddata WHERE nodeid = $1 \
             ORDER BY sequencenumber DESC, pk DESC LIMIT 1",
            super::COLUMNS
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(node)
            .fetch_optional(self.pool())
            .await?)
    }

    async fn begin_batch(
        &self,
        rows: &[AuditRecord],
        batch: Option<&BatchRecord>,
        fence: &Fence,
    ) -> Result<Box<dyn OpenBatch>, StoreError> {
        // On an error `own` is dropped: its connection, and the transaction with it, is closed.
        let mut own = Own::acquire(self.pool()).await?;
        sqlx::raw_sql("BEGIN").execute(own.conn()).await?;
        B::insert_rows(own.conn(), rows, fence).await?;
        if let Some(b) = batch {
            query(super::INSERT_BATCH, bind::statement(b))
                .execute(own.conn())
                .await?;
        }
        Ok(Box::new(Open { own }))
    }

    fn open_batches(&self) -> usize {
        B::OPEN_BATCHES
    }

    async fn last_batch(&self, node: &str) -> Result<Option<BatchRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM auditbatchdata WHERE nodeid = $1 \
             ORDER BY firstsequencenumber DESC LIMIT 1",
            super::BATCH_COLUMNS
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(node)
            .fetch_optional(self.pool())
            .await
            .or_else(absent)?)
    }

    async fn get_batch(&self, node: &str, first: i64) -> Result<Option<BatchRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM auditbatchdata WHERE nodeid = $1 AND firstsequencenumber = $2",
            super::BATCH_COLUMNS
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(node)
            .bind(first)
            .fetch_optional(self.pool())
            .await
            .or_else(absent)?)
    }

    async fn read_batches(&self, chunk: BatchChunk<'_>) -> Result<Vec<BatchRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM auditbatchdata WHERE nodeid = $1 AND lastsequencenumber >= $2 \
             AND firstsequencenumber > $3 ORDER BY firstsequencenumber LIMIT $4",
            super::BATCH_COLUMNS
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(chunk.node)
            .bind(chunk.from_seq)
            .bind(chunk.after.unwrap_or(i64::MIN))
            .bind(chunk.limit)
            .fetch_all(self.pool())
            .await
            .or_else(absent)?)
    }

    async fn insert_checkpoint(&self, c: &Checkpoint) -> Result<(), StoreError> {
        let mut own = Own::acquire(self.pool()).await?;
        query(super::INSERT_CHECKPOINT, bind::checkpoint(c))
            .execute(own.conn())
            .await?;
        own.keep();
        Ok(())
    }

    async fn last_checkpoint(&self, node: &str) -> Result<Option<Checkpoint>, StoreError> {
        let sql = format!(
            "SELECT {} FROM auditcheckpointdata WHERE nodeid = $1 \
             ORDER BY sequencenumber DESC, kind LIMIT 1",
            super::CHECKPOINT_COLUMNS
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(node)
            .fetch_optional(self.pool())
            .await
            .or_else(absent)?)
    }

    async fn archive_base(&self, node: &str) -> Result<Option<Checkpoint>, StoreError> {
        let sql = format!(
            "SELECT {} FROM auditcheckpointdata WHERE nodeid = $1 AND kind = $2 \
             ORDER BY sequencenumber DESC LIMIT 1",
            super::CHECKPOINT_COLUMNS
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(node)
            .bind(KIND_ARCHIVE)
            .fetch_optional(self.pool())
            .await
            .or_else(absent)?)
    }

    async fn read_checkpoints(
        &self,
        chunk: CheckpointChunk<'_>,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        let sql = format!(
            "SELECT {} FROM auditcheckpointdata WHERE nodeid = $1 AND sequencenumber >= $2 \
             AND (sequencenumber > $3 OR kind > $4) \
             ORDER BY sequencenumber, kind LIMIT $5",
            super::CHECKPOINT_COLUMNS
        );
        let (node, from, after_seq, after_kind, limit) = chunk.binds();
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(node)
            .bind(from)
            .bind(after_seq)
            .bind(after_kind)
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .or_else(absent)?)
    }

    async fn latest_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let sql = super::latest_checkpoints();
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await
            .or_else(absent)?)
    }

    async fn archive_node(
        &self,
        marker: &Checkpoint,
        first: i64,
        expected: u64,
    ) -> Result<u64, StoreError> {
        let mut own = Own::acquire(self.pool()).await?;
        let mut tx = sqlx::Connection::begin(own.conn()).await?;
        query(super::INSERT_CHECKPOINT, bind::checkpoint(marker))
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(
            "DELETE FROM auditrecorddata WHERE nodeid = $1 AND sequencenumber >= $2 \
             AND sequencenumber <= $3",
        )
        .bind(&marker.node_id)
        .bind(first)
        .bind(marker.sequence_number)
        .execute(&mut *tx)
        .await?;
        let rows = B::rows_affected(&done);
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
        sqlx::query("DELETE FROM auditcheckpointdata WHERE nodeid = $1 AND sequencenumber < $2")
            .bind(&marker.node_id)
            .bind(marker.sequence_number)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        own.keep();
        Ok(rows)
    }

    async fn archive_partitioned(
        &self,
        ranges: &[ArchiveRange],
        before: i64,
    ) -> Result<Option<PartitionArchive>, StoreError> {
        self.partitioned_archive(ranges, before).await
    }

    async fn query(&self, q: &super::Query) -> Result<Page, StoreError> {
        self.read_bounded(super::query::select_parts(q)).await
    }

    async fn count(&self, criteria: &[Criterion]) -> Result<i64, StoreError> {
        let (sql, params) = super::query::build_count(criteria);
        let args = arguments::<B::DB>(params)?;
        Ok(sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), args)
            .fetch_one(self.pool())
            .await?)
    }

    async fn insert_token(&self, t: &ApiToken) -> Result<(), StoreError> {
        let mut own = Own::acquire(self.pool()).await?;
        sqlx::query(
            "INSERT INTO auditapitokendata (name, role, tokenhash, createtime, revoketime) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.token_hash)
        .bind(t.created)
        .bind(t.revoked)
        .execute(own.conn())
        .await?;
        own.keep();
        Ok(())
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name AS name, role AS role, tokenhash AS tokenhash, \
             createtime AS createtime, revoketime AS revoketime \
             FROM auditapitokendata ORDER BY name",
        )
        .fetch_all(self.pool())
        .await
        .or_else(absent)?)
    }

    async fn revoke_token(&self, name: &str, at: i64) -> Result<bool, StoreError> {
        // As in `get`: no token is named with a NUL.
        if name.contains('\0') {
            return Ok(false);
        }
        let mut own = Own::acquire(self.pool()).await?;
        let done = sqlx::query(
            "UPDATE auditapitokendata SET revoketime = $2 \
             WHERE name = $1 AND revoketime IS NULL",
        )
        .bind(name)
        .bind(at)
        .execute(own.conn())
        .await?;
        own.keep();
        Ok(B::rows_affected(&done) == 1)
    }

    async fn forward_position(&self, sink: &str, node: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT sequencenumber FROM auditforwardposition WHERE sinkname = $1 AND nodeid = $2",
        )
        .bind(sink)
        .bind(node)
        .fetch_optional(self.pool())
        .await?)
    }

    async fn set_forward_position(
        &self,
        sink: &str,
        node: &str,
        seq: i64,
        at: i64,
    ) -> Result<(), StoreError> {
        let mut own = Own::acquire(self.pool()).await?;
        sqlx::query(
            "INSERT INTO auditforwardposition (sinkname, nodeid, sequencenumber, updatetime) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (sinkname, nodeid) \
             DO UPDATE SET sequencenumber = excluded.sequencenumber, updatetime = excluded.updatetime",
        )
        .bind(sink)
        .bind(node)
        .bind(seq)
        .bind(at)
        .execute(own.conn())
        .await?;
        own.keep();
        Ok(())
    }

    async fn export_page(
        &self,
        criteria: &[Criterion],
        after: Option<ExportCursor>,
        limit: i64,
    ) -> Result<Page, StoreError> {
        self.read_bounded(super::export::page_parts(criteria, after.as_ref(), limit))
            .await
    }
}
