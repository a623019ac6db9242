//! The read-only database: a PostgreSQL hot standby that serves the auditors' reads (queries,
//! exports, verification) so that they cost the primary nothing (docs/OPERATIONS.md "Reads
//! from a standby"). Every session is read-only; a read the standby cancels because of a
//! conflict with recovery is retried; a standby found down by `probe` fails reads at once
//! instead of holding them for a connection timeout.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::{
    BatchChunk, BelowStart, CheckpointChunk, Criterion, Fence, NodeHead, NodeLock, Page, PgStore,
    Query, RowChunk, Store, StoreError, export::ExportCursor,
};
use crate::format::batch::BatchRecord;
use crate::format::checkpoint::Checkpoint;
use crate::format::record::AuditRecord;

/// Times a cancelled read is tried again (after 50, 200 and 800 ms).
pub const RETRIES: u32 = 3;

/// Longest a probe may take before the database counts as not answering.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the server is in recovery (a standby), and how far its replay is behind: the age
/// of the newest transaction it replayed, or 0 when it has replayed all the WAL it received
/// (an idle primary does not make a standby look late).
const PROBE: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() IS NULL \
          OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 \
     ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) \
     END::float8";

/// What `ReadOnlyStore::probe` found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Replay {
    /// The server is a standby (`pg_is_in_recovery()`); false: a writable server.
    pub standby: bool,
    /// Seconds the standby's replay is behind (0 on a primary, or when it is caught up).
    pub lag_seconds: f64,
}

/// A PostgreSQL database used for reads only (`database_read_url`).
pub struct ReadOnlyStore {
    inner: PgStore,
    options: PgConnectOptions,
    /// The URL without its password, for messages.
    url: String,
    /// The probe's own session, kept between probes.
    probe_conn: tokio::sync::Mutex<Option<PgConnection>>,
    /// Why the last probe failed; None when it succeeded (or there was none yet).
    down: Mutex<Option<String>>,
    /// Reads cancelled by the database and tried again.
    retried: AtomicU64,
}

impl ReadOnlyStore {
    /// Connects nothing yet: a standby that is down when this starts does not stop the caller
    /// (`probe` says so). Only a URL that is not PostgreSQL's, or not a URL, is an error.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::BadUrl {
                url: super::redact_url(url),
                reason: "the read database must be PostgreSQL (postgres://...), a hot standby \
                         of the database the events are written to"
                    .into(),
            });
        }
        let (inner, options) = PgStore::read_only(url)?;
        Ok(ReadOnlyStore {
            inner,
            options,
            url: super::redact_url(url),
            probe_conn: tokio::sync::Mutex::new(None),
            down: Mutex::new(None),
            retried: AtomicU64::new(0),
        })
    }

    /// Asks the database whether it is a standby and how far behind its replay is, on a
    /// session of its own (not the pool's, which reads may all be using). A failure makes
    /// every read fail at once with `ReadUnavailable` until a probe succeeds again.
    pub async fn probe(&self) -> Result<Replay, StoreError> {
        let found = tokio::time::timeout(PROBE_TIMEOUT, self.probe_once())
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::ReadUnavailable(format!(
                    "{}: no answer within {} s",
                    self.url,
                    PROBE_TIMEOUT.as_secs()
                )))
            });
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        *down = found.as_ref().err().map(|e| match e {
            StoreError::ReadUnavailable(m) => m.clone(),
            other => other.to_string(),
        });
        found
    }

    async fn probe_once(&self) -> Result<Replay, StoreError> {
        let unavailable = |e: sqlx::Error| {
            StoreError::ReadUnavailable(format!("{}: {}", self.url, super::describe(&e)))
        };
        let mut slot = self.probe_conn.lock().await;
        // Taken out while in use: after a failure (or a probe given up mid-way) the next
        // probe opens a new session.
        let mut conn = match slot.take() {
            Some(c) => c,
            None => PgConnection::connect_with(&self.options)
                .await
                .map_err(unavailable)?,
        };
        let (standby, lag_seconds): (bool, f64) = sqlx::query_as(PROBE)
            .fetch_one(&mut conn)
            .await
            .map_err(unavailable)?;
        *slot = Some(conn);
        Ok(Replay {
            standby,
            lag_seconds: lag_seconds.max(0.0),
        })
    }

    /// Why the last probe failed (None: it succeeded, or there was none yet).
    pub fn down(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many reads the database cancelled and were tried again, since the start.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Runs one read: at once `ReadUnavailable` while the last probe failed; a cancelled read
    /// (`Cancelled`) is tried again up to `RETRIES` times; a lost connection becomes
    /// `ReadUnavailable`, so that callers tell it from the writers' database.
    async fn read<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut + Send,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        if let Some(reason) = self.down() {
            return Err(StoreError::ReadUnavailable(reason));
        }
        let mut wait = Duration::from_millis(50);
        for _ in 0..RETRIES {
            match f().await {
                Err(StoreError::Cancelled(reason)) => {
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%reason, "the read database cancelled a read; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                }
                other => return self.classify(other),
            }
        }
        match f().await {
            Err(StoreError::Cancelled(reason)) => Err(StoreError::Cancelled(format!(
                "{reason}; tried {} times. On a standby this is a conflict with recovery: set \
                 hot_standby_feedback = on or raise max_standby_streaming_delay there \
                 (docs/OPERATIONS.md \"Reads from a standby\")",
                RETRIES + 1
            ))),
            other => self.classify(other),
        }
    }

    fn classify<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        r.map_err(|e| match e {
            StoreError::Unavailable(m) => StoreError::ReadUnavailable(format!("{}: {m}", self.url)),
            other => other,
        })
    }
}

/// What a write on the read database says (the server never sends it one).
fn no_writes(what: &str) -> StoreError {
    StoreError::Database(format!(
        "the read database (database_read_url) takes no writes ({what}); writes go to \
         database_url"
    ))
}

#[async_trait]
impl Store for ReadOnlyStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn migrate(&self) -> Result<(), StoreError> {
        Err(no_writes("schema migration"))
    }
    async fn lock_node(&self, _node: &str) -> Result<NodeLock, StoreError> {
        Err(no_writes("a node's writer lock"))
    }
    async fn head(&self, node: &str) -> Result<NodeHead, StoreError> {
        self.read(|| self.inner.head(node)).await
    }
    async fn insert(&self, _record: &AuditRecord, _fence: &Fence) -> Result<(), StoreError> {
        Err(no_writes("an event"))
    }
    async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        self.read(|| self.inner.nodes()).await
    }
    async fn all_nodes(&self, limit: Option<usize>) -> Result<Vec<String>, StoreError> {
        self.read(|| self.inner.all_nodes(limit)).await
    }
    async fn below_start(
        &self,
        node: &str,
        start: i64,
        checkpoints_below: i64,
    ) -> Result<BelowStart, StoreError> {
        self.read(|| self.inner.below_start(node, start, checkpoints_below))
            .await
    }
    async fn count_from_start(&self, node: &str, last: i64) -> Result<(i64, i64), StoreError> {
        self.read(|| self.inner.count_from_start(node, last)).await
    }
    async fn read_node(&self, chunk: RowChunk<'_>) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(|| self.inner.read_node(chunk.clone())).await
    }
    async fn get(&self, pk: &str) -> Result<Option<AuditRecord>, StoreError> {
        self.read(|| self.inner.get(pk)).await
    }
    async fn get_many(&self, pks: &[String]) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(|| self.inner.get_many(pks)).await
    }
    async fn last_row(&self, node: &str) -> Result<Option<AuditRecord>, StoreError> {
        self.read(|| self.inner.last_row(node)).await
    }
    async fn begin_batch(
        &self,
        _rows: &[AuditRecord],
        _batch: Option<&BatchRecord>,
        _fence: &Fence,
    ) -> Result<Box<dyn super::OpenBatch>, StoreError> {
        Err(no_writes("a batch of events"))
    }
    fn open_batches(&self) -> usize {
        1
    }
    async fn last_batch(&self, node: &str) -> Result<Option<BatchRecord>, StoreError> {
        self.read(|| self.inner.last_batch(node)).await
    }
    async fn get_batch(&self, node: &str, first: i64) -> Result<Option<BatchRecord>, StoreError> {
        self.read(|| self.inner.get_batch(node, first)).await
    }
    async fn read_batches(&self, chunk: BatchChunk<'_>) -> Result<Vec<BatchRecord>, StoreError> {
        self.read(|| self.inner.read_batches(chunk.clone())).await
    }
    async fn insert_checkpoint(&self, _c: &Checkpoint) -> Result<(), StoreError> {
        Err(no_writes("a checkpoint"))
    }
    async fn last_checkpoint(&self, node: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.read(|| self.inner.last_checkpoint(node)).await
    }
    async fn archive_base(&self, node: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.read(|| self.inner.archive_base(node)).await
    }
    async fn read_checkpoints(
        &self,
        chunk: CheckpointChunk<'_>,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        self.read(|| self.inner.read_checkpoints(chunk.clone()))
            .await
    }
    async fn latest_checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.read(|| self.inner.latest_checkpoints()).await
    }
    async fn archive_node(
        &self,
        _marker: &Checkpoint,
        _first: i64,
        _rows: u64,
    ) -> Result<u64, StoreError> {
        Err(no_writes("an archive"))
    }
    async fn archive_partitioned(
        &self,
        _ranges: &[super::archived::ArchiveRange],
        _before: i64,
    ) -> Result<Option<super::archived::PartitionArchive>, StoreError> {
        Err(no_writes("an archive"))
    }
    async fn query(&self, query: &Query) -> Result<Page, StoreError> {
        self.read(|| self.inner.query(query)).await
    }
    async fn count(&self, criteria: &[Criterion]) -> Result<i64, StoreError> {
        self.read(|| self.inner.count(criteria)).await
    }
    async fn insert_token(
        &self,
        _token: &crate::format::api_token::ApiToken,
    ) -> Result<(), StoreError> {
        Err(no_writes("an API token"))
    }
    async fn tokens(&self) -> Result<Vec<crate::format::api_token::ApiToken>, StoreError> {
        self.read(|| self.inner.tokens()).await
    }
    async fn revoke_token(&self, _name: &str, _at: i64) -> Result<bool, StoreError> {
        Err(no_writes("revoking an API token"))
    }
    async fn forward_position(&self, sink: &str, node: &str) -> Result<Option<i64>, StoreError> {
        self.read(|| self.inner.forward_position(sink, node)).await
    }
    async fn set_forward_position(
        &self,
        _sink: &str,
        _node: &str,
        _seq: i64,
        _at: i64,
    ) -> Result<(), StoreError> {
        Err(no_writes("a forwarding position"))
    }
    async fn export_page(
        &self,
        criteria: &[Criterion],
        after: Option<ExportCursor>,
        limit: i64,
    ) -> Result<Page, StoreError> {
        self.read(|| self.inner.export_page(criteria, after.clone(), limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test]
    async fn a_cancelled_read_is_tried_again_and_then_named_with_the_remedy() {
        // Nothing connects: the reads below are the test's own.
        let s = ReadOnlyStore::open("postgres://reader@127.0.0.1:1/auditseal").unwrap();
        let conflict = "canceling statement due to conflict with recovery (SQLSTATE 40001)";
        let calls = &AtomicU32::new(0);
        let got = s
            .read(move || async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(StoreError::Cancelled(conflict.into()))
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!((got, calls.load(Ordering::SeqCst), s.retried()), (7, 3, 2));
        let e = s
            .read(|| async { Err::<(), _>(StoreError::Cancelled(conflict.into())) })
            .await
            .unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, StoreError::Cancelled(_)), "{m}");
        assert!(
            m.contains(conflict)
                && m.contains("tried 4 times")
                && m.contains("hot_standby_feedback"),
            "{m}"
        );
        assert_eq!(s.retried(), 5);
        // A lost connection is the read database's, named, and not tried again.
        let e = s
            .read(|| async { Err::<(), _>(StoreError::Unavailable("connection reset".into())) })
            .await
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::ReadUnavailable(m) if m == "postgres://reader@127.0.0.1:1/auditseal: connection reset"),
            "{e}"
        );
        assert_eq!(s.retried(), 5);
    }

    #[tokio::test]
    async fn only_postgresql_and_a_standby_that_is_down_fails_reads_at_once() {
        let e = ReadOnlyStore::open("sqlite://x.db")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("must be PostgreSQL"), "{e}");
        // Nothing listens on port 1: opening succeeds (nothing connects), the probe says why,
        // and from then on reads fail at once, naming the read database, not after a timeout.
        let s = ReadOnlyStore::open("postgres://auditseal:secret@127.0.0.1:1/auditseal").unwrap();
        assert_eq!(s.down(), None);
        let e = s.probe().await.unwrap_err();
        assert!(matches!(e, StoreError::ReadUnavailable(_)), "{e}");
        let reason = s.down().unwrap();
        assert!(
            reason.contains("127.0.0.1:1") && !reason.contains("secret"),
            "{reason}"
        );
        let started = std::time::Instant::now();
        let e = s.nodes().await.unwrap_err();
        // Not the pool's 5 s wait for a connection.
        assert!(started.elapsed() < Duration::from_secs(3), "{e}");
        assert!(
            e.to_string()
                .starts_with("the read database is unavailable"),
            "{e}"
        );
        assert!(matches!(
            s.revoke_token("t", 0).await,
            Err(StoreError::Database(m)) if m.contains("takes no writes")
        ));
    }
}
