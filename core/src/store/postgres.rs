//! PostgreSQL driver. The one-writer-per-node rule uses a session advisory lock, so it holds
//! across machines that share the database.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use super::{LockStatus, NodeLock, Query, StoreError, impl_store};
use crate::batch::BatchRecord;
use crate::record::AuditRecord;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

pub struct PgStore {
    pool: PgPool,
    url: String,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", super::redact_url(url))))?;
        Ok(PgStore {
            pool,
            url: url.to_string(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
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
async fn try_lock(url: &str, node: &str) -> Result<Option<PgConnection>, StoreError> {
    let mut conn = PgConnection::connect(url).await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock_key(node))
        .fetch_one(&mut conn)
        .await?;
    Ok(got.then_some(conn))
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
                Ok(Some(c)) => {
                    conn = c;
                    status.regained();
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

impl_store!(PgStore, {
    /// One multi-row INSERT ... SELECT FROM UNNEST (arrays bound as parameters) for the rows,
    /// one INSERT for the statement, one commit.
    async fn insert_batch(
        &self,
        rows: &[AuditRecord],
        batch: Option<&BatchRecord>,
    ) -> Result<(), StoreError> {
        let col = |f: fn(&AuditRecord) -> String| rows.iter().map(f).collect::<Vec<_>>();
        let opt = |f: fn(&AuditRecord) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", eventtype, \
             eventstatus, authtoken, service, module, customid, searchdetail1, searchdetail2, \
             additionaldetails, rowversion, rowprotection) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
             $12::text[], $13::text[], $14::int4[], $15::text[])",
        )
        .bind(col(|r| r.pk.clone()))
        .bind(col(|r| r.node_id.clone()))
        .bind(rows.iter().map(|r| r.sequence_number).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.time_stamp).collect::<Vec<_>>())
        .bind(col(|r| r.event_type.clone()))
        .bind(col(|r| r.event_status.clone()))
        .bind(col(|r| r.auth_token.clone()))
        .bind(col(|r| r.service.clone()))
        .bind(col(|r| r.module.clone()))
        .bind(opt(|r| r.custom_id.clone()))
        .bind(opt(|r| r.search_detail1.clone()))
        .bind(opt(|r| r.search_detail2.clone()))
        .bind(opt(|r| r.additional_details.clone()))
        .bind(rows.iter().map(|r| r.row_version).collect::<Vec<_>>())
        .bind(opt(|r| r.row_protection.clone()))
        .execute(&mut *tx)
        .await?;
        if let Some(b) = batch {
            super::insert_statement!(b).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn lock_node(&self, node: &str) -> Result<NodeLock, StoreError> {
        let Some(conn) = try_lock(&self.url, node).await? else {
            return Err(StoreError::Locked(format!(
                "another auditseal process is already writing as node {node:?} to this \
                 PostgreSQL database (advisory lock {} is held); give each process its own \
                 --node-id",
                lock_key(node)
            )));
        };
        let status = LockStatus::new();
        let watcher = tokio::spawn(watch_lock(
            conn,
            self.url.clone(),
            node.to_string(),
            status.clone(),
        ));
        Ok(NodeLock::new(status, AbortOnDrop(watcher)))
    }
});
