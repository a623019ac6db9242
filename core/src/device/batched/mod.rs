//! The batched log device: group commit with one signature per batch (docs/FORMAT.md section 6,
//! protection version 4).
//!
//! Requests go into a bounded queue (full: a fast `QueueFull`, never unbounded memory). One
//! writer per node takes whole requests until the batch holds `max_batch` events (a request that
//! does not fit starts the next batch; one larger than `max_batch` is a batch of its own) or
//! `max_wait` has passed, and for the batch: numbers the rows consecutively (one timestamp, never older than the node's last),
//! hashes each row as an RFC 6962 leaf, signs one statement over the Merkle root and the previous
//! statement's hash, writes rows and statement in one transaction, and only then answers every
//! request of the batch. On failure nothing is acknowledged and the numbers are used again.
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::crypto::token::SharedToken;
use crate::device::{
    Appended, BatchObserver, CommitListener, DeviceError, LeafListener, LogDevice, NewEvent,
    QueueDepth,
};
use crate::format::protection::ProtectionVersion;
use crate::store::{NodeLock, SharedStore};

mod insert;
mod writer;

use writer::Writer;

/// The version new batches are written in. Version 3 rows already written stay readable.
const WRITE_VERSION: ProtectionVersion = ProtectionVersion::BatchCanonical;
// The leaves handed to the checkpoint writer (`hand_leaves_to`) are the batch's own: they are
// the rows' canonical leaves only in version 4.
const _: () = assert!(matches!(WRITE_VERSION, ProtectionVersion::BatchCanonical));

/// Group-commit settings.
#[derive(Debug, Clone, Copy)]
pub struct BatchedConfig {
    /// Most events in one batch. Requests are never split: a request that does not fit in the
    /// batch being gathered starts the next one, and a single request larger than this is a
    /// batch of its own.
    pub max_batch: usize,
    /// Longest wait for more events once the first of a batch has arrived.
    pub max_wait: Duration,
    /// Most events waiting; beyond it requests are refused at once.
    pub queue: usize,
}

impl Default for BatchedConfig {
    fn default() -> Self {
        BatchedConfig {
            max_batch: 1000,
            max_wait: Duration::from_millis(2),
            queue: 20_000,
        }
    }
}

struct Job {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Appended>, DeviceError>>,
}

pub struct BatchedDevice {
    node_id: String,
    tx: mpsc::Sender<Job>,
    /// Events queued or being written, to bound the queue in events rather than requests.
    waiting: Arc<tokio::sync::Semaphore>,
    capacity: usize,
    /// Set when the node's log is found inconsistent: every later request is refused.
    inconsistent: Arc<OnceLock<String>>,
    /// Shared with the writer, which holds it for as long as it runs.
    lock: Arc<NodeLock>,
    observer: Observer,
}

/// Who the writer reports to, once someone asks: metrics (`observe_batches`) and forwarding
/// (`listen_to_commits`).
#[derive(Default)]
struct Observers {
    batches: OnceLock<Arc<dyn BatchObserver>>,
    commits: OnceLock<Arc<dyn CommitListener>>,
    leaves: OnceLock<Arc<dyn LeafListener>>,
}

type Observer = Arc<Observers>;

impl BatchedDevice {
    /// Takes the node's writer lock, reads where the log and its chain stand, starts the writer.
    pub async fn start(
        store: SharedStore,
        node_id: String,
        token: Option<SharedToken>,
        cfg: BatchedConfig,
    ) -> Result<Self, DeviceError> {
        let lock = store
            .lock_node(&node_id)
            .await
            .map_err(DeviceError::Start)?;
        let lock = Arc::new(lock);
        let observer = Observer::default();
        let mut writer = Writer {
            node_id: node_id.clone(),
            store,
            token,
            lock_epoch: lock.epoch(),
            lock: lock.clone(),
            cfg,
            head: None,
            failures: Arc::new(AtomicU64::new(0)),
            epoch: 0,
            in_flight: Default::default(),
            inconsistent: Default::default(),
            observer: observer.clone(),
        };
        // Started all the same when the log is inconsistent: queries, exports and health answer,
        // and say why (docs/OPERATIONS.md "Log inconsistent").
        let head = match writer.read_head().await {
            Err(DeviceError::Inconsistent(_)) => None,
            other => Some(other?),
        };
        tracing::info!(node = %node_id, next_sequence = head.as_ref().map(|h| h.next),
            max_batch = cfg.max_batch, max_wait_ms = cfg.max_wait.as_millis() as u64,
            "batched log device ready");
        writer.head = head;
        let inconsistent = writer.inconsistent.clone();
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        tokio::spawn(writer.run(rx));
        Ok(BatchedDevice {
            node_id,
            tx,
            waiting: Arc::new(tokio::sync::Semaphore::new(cfg.queue.max(1))),
            capacity: cfg.queue.max(1),
            inconsistent,
            lock,
            observer,
        })
    }
}

#[async_trait]
impl LogDevice for BatchedDevice {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn inconsistent(&self) -> Option<String> {
        self.inconsistent.get().cloned()
    }

    fn lock_held(&self) -> bool {
        self.lock.is_held()
    }

    fn queue(&self) -> Option<QueueDepth> {
        Some(QueueDepth {
            waiting: self.capacity - self.waiting.available_permits().min(self.capacity),
            capacity: self.capacity,
        })
    }

    fn observe_batches(&self, observer: Arc<dyn BatchObserver>) {
        let _ = self.observer.batches.set(observer);
    }

    fn listen_to_commits(&self, listener: Arc<dyn CommitListener>) {
        let _ = self.observer.commits.set(listener);
    }

    fn hand_leaves_to(&self, listener: Arc<dyn LeafListener>) {
        let _ = self.observer.leaves.set(listener);
    }

    fn wants_details_listings(&self) -> bool {
        self.observer
            .commits
            .get()
            .is_some_and(|l| l.wants_details_listings())
    }

    async fn append(&self, event: NewEvent) -> Result<Appended, DeviceError> {
        let mut done = self.append_all(vec![event]).await?;
        done.pop()
            .ok_or_else(|| DeviceError::Stopped("no row was written".into()))
    }

    async fn append_all(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, DeviceError> {
        if let Some(reason) = self.inconsistent.get() {
            return Err(DeviceError::Inconsistent(reason.clone()));
        }
        let n = u32::try_from(events.len().min(self.capacity)).unwrap_or(u32::MAX);
        if events.len() > self.capacity {
            // Never fits, however long the client waits: not a "retry later".
            return Err(DeviceError::TooLarge {
                events: events.len(),
                limit: self.capacity,
            });
        }
        // The permits bound the events waiting; released when the batch is answered.
        let _permits = self
            .waiting
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| DeviceError::QueueFull(self.capacity))?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Job { events, reply })
            .map_err(|_| DeviceError::QueueFull(self.capacity))?;
        // The writer answers even if this caller goes away: the batch's fate never depends on
        // one request.
        answer
            .await
            .map_err(|_| DeviceError::Stopped("the batch writer stopped".into()))?
    }
}
#[cfg(test)]
mod tests;
