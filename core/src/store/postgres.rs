//! PostgreSQL driver. The one-writer-per-node rule uses a session advisory lock, so it holds
//! across machines that share the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use futures::TryStreamExt;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use super::sql::{Backend, arguments};
use super::{Fence, LockStatus, NodeLock, RowChunk, StoreError};
use crate::format::record::AuditRecord;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

pub struct PgStore {
    pool: PgPool,
    url: String,
    /// Bytes per row of the last node chunk read, a quarter more (0: none read yet): the next
    /// chunk asks for no more rows than fit in the read budget at that size, so that the
    /// budget seldom has to stop a read (which costs its connection). Only a hint: the budget
    /// is counted on the rows themselves as they arrive.
    row_bytes_hint: AtomicI64,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // One connection first, so that a refused connection, a wrong password or a missing
        // database is said at once, not after the pool's acquire timeout as "pool timed out".
        PgConnection::connect(url).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "{}: {}",
                super::redact_url(url),
                super::describe(&e)
            ))
        })?;
        let pool = pool_options(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "{}: {}",
                    super::redact_url(url),
                    super::describe(&e)
                ))
            })?;
        Ok(PgStore {
            pool,
            url: url.to_string(),
            row_bytes_hint: AtomicI64::new(0),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A pool for reads only (store/standby.rs): every session is read-only
    /// (`default_transaction_read_only`), named `auditseal-reader` in `pg_stat_activity`, and
    /// nothing connects before the first read, so a database that is down does not stop the
    /// caller. Only the URL itself is checked here.
    pub(crate) fn read_only(url: &str) -> Result<(Self, PgConnectOptions), StoreError> {
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e| StoreError::BadUrl {
                url: super::redact_url(url),
                reason: super::describe(&e),
            })?
            .application_name("auditseal-reader")
            .options([("default_transaction_read_only", "on")]);
        // A shorter wait than the writers': a read that cannot get a connection soon is
        // answered 503 rather than held.
        let pool =
            pool_options(std::time::Duration::from_secs(5)).connect_lazy_with(options.clone());
        Ok((
            PgStore {
                pool,
                url: url.to_string(),
                row_bytes_hint: AtomicI64::new(0),
            },
            options,
        ))
    }
}

/// The pool's settings: 16 connections, `acquire` the longest wait for one.
fn pool_options(acquire: std::time::Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(acquire)
        // A connection keeps the read buffer its largest message needed (a row of 20 MiB
        // leaves 20 MiB or more behind, on each of the pool's connections): give it back
        // when the connection returns to the pool. Cheap when the buffer is small.
        .after_release(|conn, _| {
            Box::pin(async move {
                use sqlx::Connection;
                conn.shrink_buffers();
                Ok(true)
            })
        })
}

/// The advisory-lock key of a node: the first 8 bytes of SHA-256("auditseal-node:" || node).
fn lock_key(node: &str) -> i64 {
    let digest = Sha256::digest(format!("auditseal-node:{node}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Takes the node's advisory lock on a dedicated connection (outside the pool: the lock lives
/// as long as that session). None when another session holds it.
/// With the lock, the node's lease epoch is incremented (on the same session, after the lock:
/// see `Fence`); returned with the connection.
async fn try_lock(url: &str, node: &str) -> Result<Option<(PgConnection, i64)>, StoreError> {
    let mut conn = PgConnection::connect(url).await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock_key(node))
        .fetch_one(&mut conn)
        .await?;
    if !got {
        return Ok(None);
    }
    let lease: i64 = sqlx::query_scalar(super::TAKE_LEASE)
        .bind(node)
        .fetch_one(&mut conn)
        .await?;
    Ok(Some((conn, lease)))
}

/// How often the lock's session is checked.
const LOCK_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps the lock's session alive and notices when it dies (server restart, a killed backend):
/// then the lock is lost, writes stop, and it is taken again as soon as it is free.
async fn watch_lock(mut conn: PgConnection, url: String, node: String, status: Arc<LockStatus>) {
    loop {
        tokio::time::sleep(LOCK_CHECK).await;
        if conn.ping().await.is_ok() {
            continue;
        }
        status.lost();
        tracing::error!(node = %node, "lost the node's PostgreSQL advisory lock; writes are refused until it is taken again");
        // Each kind of failure is logged when it starts, not at every attempt (every
        // LOCK_CHECK for as long as the database is away). Some(true): held by another
        // process; Some(false): the database could not be asked.
        let mut held_elsewhere: Option<bool> = None;
        loop {
            tokio::time::sleep(LOCK_CHECK).await;
            match try_lock(&url, &node).await {
                Ok(Some((c, lease))) => {
                    conn = c;
                    status.regained(lease);
                    tracing::warn!(node = %node, "took the node's advisory lock again");
                    break;
                }
                Ok(None) => {
                    if held_elsewhere != Some(true) {
                        tracing::error!(node = %node, "another process now holds this node's lock");
                    }
                    held_elsewhere = Some(true);
                }
                Err(e) => {
                    if held_elsewhere != Some(false) {
                        tracing::warn!(node = %node, error = %e, "cannot take the node's lock yet; trying again");
                    }
                    held_elsewhere = Some(false);
                }
            }
        }
    }
}

/// Stops the watcher (and so closes the lock's session) when the lock is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait::async_trait]
impl Backend for PgStore {
    type DB = sqlx::Postgres;
    const NAME: &'static str = "postgres";
    const FENCED_INSERT: &'static str = super::fenced_insert!("FOR SHARE");
    const OPEN_BATCHES: usize = 2;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }

    /// One query: a running sum of the rows' sizes (a window over the result, which reads no
    /// value) keeps the rows that start within the budget.
    async fn read_bounded(&self, sel: super::query::Select) -> Result<super::Page, StoreError> {
        use sqlx::{FromRow, Row};
        let (sql, params) = sel.bounded(super::READ_BUDGET_BYTES);
        let found = sqlx::query_with(
            sqlx::AssertSqlSafe(sql),
            arguments::<sqlx::Postgres>(params)?,
        )
        .fetch_all(&self.pool)
        .await?;
        let in_limit: i64 = match found.first() {
            Some(r) => r.try_get("rows_in_limit")?,
            None => 0,
        };
        let rows = found
            .iter()
            .map(AuditRecord::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let cut = (rows.len() as i64) < in_limit;
        Ok(super::Page { rows, cut })
    }

    /// One plain index range scan, its rows counted against the budget as they arrive
    /// (`ReadBudget`). A running sum in SQL (a window over the chunk) cost PostgreSQL more
    /// than half again the scan's own time; here, when the budget is spent before the LIMIT, the
    /// connection is closed instead of drained, so the backend stops sending.
    ///
    /// The scan is also bounded above, to the `limit + 1` sequence numbers from its start
    /// (`seq_range`): near the head of a growing table the statistics know nothing of the newest
    /// rows, and PostgreSQL then planned an unbounded read as a bitmap scan of every row from
    /// the start to the head, sorted, for a LIMIT of 1,000 (a forwarding sink 30,000 rows
    /// behind read all of them for each page). A range without a row, but with rows after it
    /// (a gap: rows archived or deleted), is skipped by asking where the next row is.
    async fn read_node_chunk(&self, chunk: RowChunk<'_>) -> Result<Vec<AuditRecord>, StoreError> {
        let (node, mut from, after_seq, after_pk, limit) = chunk.binds();
        let budget = super::READ_BUDGET_BYTES;
        let hint = self.row_bytes_hint.load(Ordering::Relaxed);
        let limit = if hint > 0 {
            limit.min((budget / hint).max(1))
        } else {
            limit
        };
        let sql = format!(
            "SELECT {cols} FROM auditrecorddata WHERE {chunk} AND sequencenumber <= $6 \
             ORDER BY sequencenumber, pk LIMIT $5",
            cols = super::COLUMNS,
            chunk = super::NODE_CHUNK,
        );
        let mut conn = self.pool.acquire().await?;
        let (mut rows, mut within, mut spent) = (Vec::new(), super::ReadBudget::new(budget), false);
        loop {
            let last = seq_range(from, limit);
            {
                let mut stream = sqlx::query_as::<_, AuditRecord>(sqlx::AssertSqlSafe(&*sql))
                    .bind(node)
                    .bind(from)
                    .bind(after_seq)
                    .bind(&after_pk)
                    .bind(limit)
                    .bind(last)
                    .fetch(&mut *conn);
                while let Some(row) = stream.try_next().await? {
                    if !within.admit(i64::try_from(row.stored_bytes()).unwrap_or(i64::MAX)) {
                        spent = true;
                        break;
                    }
                    rows.push(row);
                }
            }
            if !rows.is_empty() || spent || last == i64::MAX {
                break;
            }
            let next: Option<i64> = sqlx::query_scalar(
                "SELECT min(sequencenumber) FROM auditrecorddata \
                 WHERE nodeid = $1 AND sequencenumber > $2",
            )
            .bind(node)
            .bind(last)
            .fetch_one(&mut *conn)
            .await?;
            match next {
                Some(next) => from = next,
                None => break,
            }
        }
        if spent {
            conn.close_on_drop();
        }
        if let Ok(n) = i64::try_from(rows.len())
            && n > 0
        {
            let per_row = (within.total() / n).max(1);
            self.row_bytes_hint
                .store(per_row.saturating_add(per_row / 4), Ordering::Relaxed);
        }
        Ok(rows)
    }

    async fn read_pks(&self, pks: &[String]) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM auditrecorddata WHERE pk = ANY($1::text[])",
            super::COLUMNS
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(pks)
            .fetch_all(&self.pool)
            .await?)
    }

    /// One multi-row INSERT ... SELECT FROM UNNEST (arrays bound as parameters), fenced as a
    /// whole.
    async fn insert_rows(
        conn: &mut PgConnection,
        rows: &[AuditRecord],
        fence: &Fence,
    ) -> Result<(), StoreError> {
        // Borrowed: the arrays are encoded straight from the rows (cloning every value of a
        // batch took 8% of the server's CPU on bulk requests).
        let col = |f: fn(&AuditRecord) -> &str| rows.iter().map(f).collect::<Vec<_>>();
        let opt = |f: fn(&AuditRecord) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
        let done = sqlx::query(
            "INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", eventtype, \
             eventstatus, authtoken, service, module, customid, searchdetail1, searchdetail2, \
             additionaldetails, rowversion, rowprotection) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
             $12::text[], $13::text[], $14::int4[], $15::text[]) \
             WHERE EXISTS (SELECT 1 FROM auditnodelease WHERE nodeid = $16 AND epoch = $17 \
             FOR SHARE)",
        )
        .bind(col(|r| &r.pk))
        .bind(col(|r| &r.node_id))
        .bind(rows.iter().map(|r| r.sequence_number).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.time_stamp).collect::<Vec<_>>())
        .bind(col(|r| &r.event_type))
        .bind(col(|r| &r.event_status))
        .bind(col(|r| &r.auth_token))
        .bind(col(|r| &r.service))
        .bind(col(|r| &r.module))
        .bind(opt(|r| r.custom_id.as_deref()))
        .bind(opt(|r| r.search_detail1.as_deref()))
        .bind(opt(|r| r.search_detail2.as_deref()))
        .bind(opt(|r| r.additional_details.as_deref()))
        .bind(rows.iter().map(|r| r.row_version).collect::<Vec<_>>())
        .bind(opt(|r| r.row_protection.as_deref()))
        .bind(&fence.node)
        .bind(fence.epoch)
        .execute(conn)
        .await?;
        if done.rows_affected() != rows.len() as u64 {
            return Err(StoreError::Fenced(fence.node.clone()));
        }
        Ok(())
    }

    async fn partitioned_archive(
        &self,
        ranges: &[super::archived::ArchiveRange],
        before: i64,
    ) -> Result<Option<super::archived::PartitionArchive>, StoreError> {
        super::partition::archive_partitioned(self, ranges, before).await
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    async fn take_node_lock(&self, node: &str) -> Result<NodeLock, StoreError> {
        let Some((conn, lease)) = try_lock(&self.url, node).await? else {
            return Err(StoreError::Locked(format!(
                "another auditseal process is already writing as node {node:?} to this \
                 PostgreSQL database (advisory lock {} is held); give each process its own \
                 --node-id",
                lock_key(node)
            )));
        };
        let status = LockStatus::new(lease);
        let watcher = tokio::spawn(watch_lock(
            conn,
            self.url.clone(),
            node.to_string(),
            status.clone(),
        ));
        Ok(NodeLock::new(node, status, AbortOnDrop(watcher)))
    }
}

/// The last sequence number a chunk of at most `limit` rows from `from` on reads
/// (`read_node_chunk`): `limit + 1` numbers, one more than the rows, since the first may be the
/// previous chunk's last (read again only for a row of the same number after it).
fn seq_range(from: i64, limit: i64) -> i64 {
    from.saturating_add(limit.max(1))
}
