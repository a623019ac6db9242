//! SQLite driver: the embedded default. WAL with synchronous=FULL, so a commit is durable before
//! the event is acknowledged. The one-writer-per-node rule uses a lock file beside the database.

use std::path::PathBuf;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sql::{Backend, arguments, bind, query};
use super::{Fence, NodeLock, RowChunk, StoreError};
use crate::format::record::AuditRecord;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
    /// None for an in-memory database.
    file: Option<PathBuf>,
}

impl SqliteStore {
    /// Opens the database, creating it (and its directory) when it is missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::open(url, true).await
    }

    /// Opens the database `url` names; a missing file is created only when `create` is true or
    /// the URL asks for it (`?mode=rwc`), else it is an error that says so: a mistyped path
    /// must not start a new, empty log.
    pub async fn open(url: &str, create: bool) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let create = create || url.contains("mode=rwc");
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| bad(e.to_string()))?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            // LIKE is case-sensitive in PostgreSQL; make SQLite agree.
            .pragma("case_sensitive_like", "ON");
        let file = {
            let f = opts.get_filename();
            // sqlx names an in-memory database `file:sqlx-in-memory-<n>`: no file, no lock file.
            let memory = url.contains(":memory:")
                || url.contains("mode=memory")
                || f.to_string_lossy().starts_with("file:sqlx-in-memory");
            (!memory && !f.as_os_str().is_empty()).then(|| f.to_path_buf())
        };
        if let Some(f) = &file
            && !create
            && !f.exists()
        {
            return Err(bad(format!(
                "there is no database at {}: only the server creates one by itself, the \
                 default one in its data directory, on its first start; check the path, or \
                 append ?mode=rwc to the URL to create a new database there",
                f.display()
            )));
        }
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

    /// A consistent copy of the whole database in `dest`, a new file (mode 0600), taken while
    /// writers go on: `VACUUM INTO` reads in one transaction, so the copy is the database as
    /// of one commit, with nothing of a transaction in progress. The copy has no -wal file.
    pub async fn backup_into(&self, dest: &std::path::Path) -> Result<(), StoreError> {
        crate::files::options()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dest.display()))
            })?;
        let name = dest.to_str().ok_or_else(|| {
            StoreError::Unavailable(format!("{} is not a UTF-8 path", dest.display()))
        })?;
        let copied = sqlx::query("VACUUM INTO ?")
            .bind(name)
            .execute(&self.pool)
            .await;
        if let Err(e) = copied {
            let _ = std::fs::remove_file(dest);
            return Err(e.into());
        }
        Ok(())
    }

    /// SQLite's own check of every page and index (`PRAGMA integrity_check`); what it found,
    /// as `Inconsistent`, unless it says ok.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        let found: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await?;
        match found.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            _ => Err(StoreError::Inconsistent(found.join("; "))),
        }
    }

    /// Closes every connection (a WAL database then folds its -wal file back in).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Increments the node's lease epoch (see `Fence`), once its lock file is held.
    async fn take_lease(&self, node: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(super::TAKE_LEASE)
            .bind(node)
            .fetch_one(&self.pool)
            .await?)
    }
}

#[async_trait::async_trait]
impl Backend for SqliteStore {
    type DB = sqlx::Sqlite;
    const NAME: &'static str = "sqlite";
    const FENCED_INSERT: &'static str = super::fenced_insert!("");
    const OPEN_BATCHES: usize = 1;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// The sizes first (SQLite's `octet_length` reads no value), then as many rows as fit.
    async fn read_bounded(&self, sel: super::query::Select) -> Result<super::Page, StoreError> {
        let (sql, params) = sel.sizes();
        let sizes: Vec<i64> =
            sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), arguments::<sqlx::Sqlite>(params)?)
                .fetch_all(&self.pool)
                .await?;
        let n = super::rows_within(&sizes, super::READ_BUDGET_BYTES);
        if n == 0 {
            return Ok(super::Page::default());
        }
        let (sql, params) = sel.with_limit(n as i64);
        let rows =
            sqlx::query_as_with(sqlx::AssertSqlSafe(sql), arguments::<sqlx::Sqlite>(params)?)
                .fetch_all(&self.pool)
                .await?;
        Ok(super::Page {
            rows,
            cut: n < sizes.len(),
        })
    }

    /// The chunk's row sizes first (SQLite's `octet_length` reads no value), then as many rows
    /// as fit in the budget.
    async fn read_node_chunk(&self, chunk: RowChunk<'_>) -> Result<Vec<AuditRecord>, StoreError> {
        let (node, from, after_seq, after_pk, limit) = chunk.binds();
        let sizes: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM auditrecorddata WHERE {} ORDER BY sequencenumber, pk LIMIT $5",
            super::ROW_BYTES,
            super::NODE_CHUNK
        )))
        .bind(node)
        .bind(from)
        .bind(after_seq)
        .bind(&after_pk)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let n = super::rows_within(&sizes, super::READ_BUDGET_BYTES);
        if n == 0 {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM auditrecorddata WHERE {} ORDER BY sequencenumber, pk LIMIT $5",
            super::COLUMNS,
            super::NODE_CHUNK
        )))
        .bind(node)
        .bind(from)
        .bind(after_seq)
        .bind(after_pk)
        .bind(n as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The pks as one JSON array parameter (SQLite has no array parameters).
    async fn read_pks(&self, pks: &[String]) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM auditrecorddata WHERE pk IN (SELECT value FROM json_each($1))",
            super::COLUMNS
        );
        let list = serde_json::to_string(pks).map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(list)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The rows one by one (SQLite has no array parameters; inside a transaction each insert is
    /// cheap), each fenced.
    async fn insert_rows(
        conn: &mut sqlx::SqliteConnection,
        rows: &[AuditRecord],
        fence: &Fence,
    ) -> Result<(), StoreError> {
        for r in rows {
            let done = query(Self::FENCED_INSERT, bind::row(r, fence))
                .execute(&mut *conn)
                .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Fenced(fence.node.clone()));
            }
        }
        Ok(())
    }

    fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    async fn take_node_lock(&self, node: &str) -> Result<NodeLock, StoreError> {
        let Some(db) = &self.file else {
            let lease = self.take_lease(node).await?;
            return Ok(NodeLock::permanent(node, lease, ()));
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
            Ok(()) => {
                let lease = self.take_lease(node).await?;
                Ok(NodeLock::permanent(node, lease, file))
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// An in-memory database made `file:sqlx-in-memory-<n>` and its lock files appear in the
    /// working directory (two were committed by mistake).
    #[tokio::test]
    async fn an_in_memory_database_creates_no_file() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        assert!(store.file.is_none());
        store.migrate().await.unwrap();
        let _lock = store.lock_node("mem").await.unwrap();
        let strays: Vec<_> = std::fs::read_dir(".")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("file:sqlx-in-memory")
            })
            .collect();
        assert!(strays.is_empty(), "{strays:?}");
    }

    /// The documented searches (time range, event type, status, node, who; docs/OPERATIONS.md
    /// "Search indexes") walk one index in the page's order, after a cursor too, and their
    /// counts read that index only: no sort and no scan of the table (the rows they read on
    /// 10,000,000 rows: tests/src/bin/auditseal-query-bench.rs).
    #[tokio::test]
    async fn the_documented_searches_walk_an_index_in_order() {
        use crate::store::query::{
            Criterion, Cursor, Order, Param, Query, build_count, select_parts,
        };
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let plan = |(sql, params): (String, Vec<Param>)| {
            let pool = store.pool.clone();
            async move {
                let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as_with(
                    sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")),
                    arguments::<sqlx::Sqlite>(params).unwrap(),
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; ")
            }
        };
        let range = ["timeStamp GE 2026-11-01", "timeStamp LT 2026-11-02"];
        let mut searches: Vec<(Vec<&str>, &str)> = vec![
            (vec![], "auditrecorddata_idx4"),
            (range.to_vec(), "auditrecorddata_idx4"),
        ];
        for (c, idx) in [
            ("nodeId EQ node1", "auditrecorddata_idx5"),
            ("eventType EQ PROCESS", "auditrecorddata_idx6"),
            ("eventStatus EQ FAILURE", "auditrecorddata_idx7"),
            ("authToken EQ CN=signer,O=Example", "auditrecorddata_idx8"),
        ] {
            searches.push((vec![c], idx));
            searches.push((vec![c, range[0], range[1]], idx));
        }
        for (texts, idx) in searches {
            let criteria: Vec<Criterion> = texts.iter().map(|t| t.parse().unwrap()).collect();
            for order in [Order::Desc, Order::Asc] {
                for after in [None, Some((1_764_072_000_000, "node2", 17))] {
                    let q = Query {
                        criteria: criteria.clone(),
                        limit: 100,
                        order,
                        after: after.map(|(t, n, s): (i64, &str, i64)| Cursor {
                            order,
                            time_stamp: t,
                            node_id: n.into(),
                            sequence_number: s,
                        }),
                    };
                    let sel = select_parts(&q);
                    for p in [plan(sel.sizes()).await, plan(sel.with_limit(100)).await] {
                        assert!(
                            p.contains(&format!("USING INDEX {idx}")) && !p.contains("TEMP B-TREE"),
                            "{texts:?} {order:?} after {after:?}: {p}"
                        );
                    }
                }
            }
            let p = plan(build_count(&criteria)).await;
            let way = if texts.is_empty() { "SCAN" } else { "SEARCH" };
            assert!(
                p.starts_with(way) && p.contains("USING COVERING INDEX"),
                "count {texts:?}: {p}"
            );
        }
    }
}
