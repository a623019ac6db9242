//! PostgreSQL driver. The one-writer-per-node rule uses a session advisory lock, so it holds
//! across machines that share the database.

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use super::{NodeLock, Query, StoreError, impl_store};
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

impl_store!(PgStore, {
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
        // A dedicated connection outside the pool: the lock lives as long as this session.
        let mut conn = PgConnection::connect(&self.url).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(node))
            .fetch_one(&mut conn)
            .await?;
        if !got {
            return Err(StoreError::Locked(format!(
                "another auditseal process is already writing as node {node:?} to this \
                 PostgreSQL database (advisory lock {} is held); give each process its own \
                 --node-id",
                lock_key(node)
            )));
        }
        Ok(NodeLock::new(tokio::sync::Mutex::new(conn)))
    }
});
