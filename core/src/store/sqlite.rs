//! SQLite driver: the embedded default. WAL with synchronous=FULL, so a commit is durable before
//! the event is acknowledged. The one-writer-per-node rule uses a lock file beside the database.

use std::path::PathBuf;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{NodeLock, Query, StoreError, impl_store};
use crate::batch::BatchRecord;
use crate::record::AuditRecord;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    /// None for an in-memory database.
    file: Option<PathBuf>,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| bad(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            // LIKE is case-sensitive in PostgreSQL; make SQLite agree.
            .pragma("case_sensitive_like", "ON");
        let file = {
            let f = opts.get_filename();
            (!f.as_os_str().is_empty() && f.as_os_str() != ":memory:").then(|| f.to_path_buf())
        };
        if let Some(dir) = file.as_ref().and_then(|f| f.parent())
            && !dir.as_os_str().is_empty()
        {
            crate::files::create_dir_all(dir)
                .map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Created here so that it is private (files.rs); SQLite gives its -wal and -shm files
        // the database file's mode.
        if let Some(f) = &file {
            match crate::files::options().write(true).create_new(true).open(f) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(bad(format!("cannot create {}: {e}", f.display()))),
            }
        }
        // An in-memory database exists per connection: keep exactly one.
        let max = if file.is_some() { 4 } else { 1 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Unavailable(format!("{url}: {e}")))?;
        Ok(SqliteStore { pool, file })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl_store!(SqliteStore, {
    /// The rows one by one inside one transaction (SQLite has no array parameters; inside a
    /// transaction each insert is cheap), then the statement, then one commit.
    async fn insert_batch(
        &self,
        rows: &[AuditRecord],
        batch: Option<&BatchRecord>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for r in rows {
            super::insert_row!(r).execute(&mut *tx).await?;
        }
        if let Some(b) = batch {
            super::insert_statement!(b).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn lock_node(&self, node: &str) -> Result<NodeLock, StoreError> {
        let Some(db) = &self.file else {
            return Ok(NodeLock::permanent(()));
        };
        // File names cannot hold every node id: a readable prefix plus a hash keeps them unique.
        let readable: String = node
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        let hash = hex::encode(&Sha256::digest(node.as_bytes())[..4]);
        let mut name = db.as_os_str().to_owned();
        name.push(format!(".node-{readable}-{hash}.lock"));
        let path = PathBuf::from(name);
        let file = crate::files::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                StoreError::Locked(format!("cannot open lock file {}: {e}", path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => Ok(NodeLock::permanent(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(format!(
                "another auditseal process is already writing as node {node:?} to {} \
                 (lock file {} is held); stop it or give this one another --node-id",
                db.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Locked(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }
});
