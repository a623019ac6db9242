//! The inserter of a batched device: writes the sealed batches in order and answers their
//! requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::Observer;
use crate::device::{Appended, DeviceError, merge_replays, refused};
use crate::format::batch::BatchRecord;
use crate::format::details::Listing;
use crate::format::merkle::Hash;
use crate::format::record::AuditRecord;
use crate::store::SharedStore;

pub(super) type InFlight = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

pub(super) type Reply = oneshot::Sender<Result<Vec<Appended>, DeviceError>>;
/// For each event of a request, its stored row when it is a retry (None: written in the batch).
pub(super) type Replays = Vec<Option<Appended>>;
type Shares = Vec<(Replays, Reply)>;

pub(super) fn lock_set(
    set: &InFlight,
) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn release(set: &InFlight, pks: &[String]) {
    let mut set = lock_set(set);
    for pk in pks {
        set.remove(pk);
    }
}

/// A batch ready to be written.
pub(super) struct Sealed {
    /// The failure epoch it was sealed in; batches sealed before a failure are not written.
    pub(super) epoch: u64,
    /// The lock it was sealed under, checked by the insert's transaction.
    pub(super) fence: crate::store::Fence,
    pub(super) rows: Vec<AuditRecord>,
    pub(super) batch: Option<BatchRecord>,
    /// The rows' leaf hashes (canonical ones: version 4), for the checkpoint writer; empty when
    /// rows are not protected.
    pub(super) leaves: Vec<Hash>,
    /// The rows' details listings (`NewEvent::details_listing`), in row order, for the commit
    /// listener; empty when there is none.
    pub(super) details_listings: Vec<Listing>,
    pub(super) shares: Shares,
    /// The client pks among the rows, released from `in_flight` once the batch is settled.
    pub(super) client_pks: Vec<String>,
}

/// What a batch's writer shares with the others.
struct Shared {
    store: SharedStore,
    failures: Arc<AtomicU64>,
    node_id: String,
    in_flight: InFlight,
    inconsistent: Arc<OnceLock<String>>,
    observer: Observer,
}

/// Writes sealed batches in order. A failed batch, and every batch sealed after it on the
/// assumption that it would land, is answered with an error; the sealer then reads the head
/// again, so the numbers are used again and no gap appears.
///
/// Up to `Store::open_batches` batches are written at once, each in a transaction of its own:
/// batch k+1's rows are inserted while batch k's are inserted or committed, but a batch is
/// committed only once the batch before it is settled, and only if that one committed or
/// failed in an earlier failure epoch (see `write_one`). So rows become visible in the order of
/// their numbers, and a batch whose predecessor failed is never committed.
pub(super) async fn insert_in_order(
    store: SharedStore,
    mut sealed: mpsc::Receiver<Sealed>,
    failures: Arc<AtomicU64>,
    node_id: String,
    in_flight: InFlight,
    inconsistent: Arc<OnceLock<String>>,
    observer: Observer,
) {
    let open = store.open_batches().max(1);
    let shared = Arc::new(Shared {
        store,
        failures,
        node_id,
        in_flight,
        inconsistent,
        observer,
    });
    // The batches being written, oldest first, and how the newest tells that it is settled.
    let mut writing = std::collections::VecDeque::new();
    let mut settled: Option<oneshot::Receiver<()>> = None;
    while let Some(s) = sealed.recv().await {
        while writing.len() >= open {
            if let Some(oldest) = writing.pop_front() {
                let _ = oldest.await;
            }
        }
        let (done, next) = oneshot::channel();
        let before = settled.replace(next);
        writing.push_back(tokio::spawn(write_one(shared.clone(), s, before, done)));
    }
    for w in writing {
        let _ = w.await;
    }
}

/// Writes one sealed batch (unless an earlier one failed) and answers its requests; `done` is
/// sent once it is settled (committed, failed or refused), after its answers.
async fn write_one(
    w: Arc<Shared>,
    mut s: Sealed,
    before: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
) {
    // Released once settled, written or not (a retry then finds the rows, or writes them), and
    // also if this task panics: else those pks would be answered "pending" for ever.
    let pending = Pending {
        set: w.in_flight.clone(),
        pks: std::mem::take(&mut s.client_pks),
    };
    let outcome = write_after(&w, &s, before).await;
    settle(&w, s, outcome, &pending.pks).await;
    drop(pending);
    let _ = done.send(());
}

/// A batch's client pks in `in_flight`, removed from it when dropped.
struct Pending {
    set: InFlight,
    pks: Vec<String>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        release(&self.set, &self.pks);
    }
}

/// Why a batch sealed in `epoch` must not be written now: the log is inconsistent, or a batch
/// failed since it was sealed.
fn stale(w: &Shared, epoch: u64) -> Option<DeviceError> {
    if let Some(reason) = w.inconsistent.get() {
        return Some(DeviceError::Inconsistent(reason.clone()));
    }
    (epoch != w.failures.load(Ordering::SeqCst)).then(|| {
        DeviceError::Stopped(
            "an earlier batch could not be written; nothing of this one was written".into(),
        )
    })
}

/// Inserts the batch's rows at once, but decides to commit only once `before` (the batch before
/// it) is settled: by then every earlier batch has committed or failed, and a failure among
/// them of this batch's epoch has bumped `failures`, so this batch is rolled back. A failure of
/// this batch is reported (and bumps `failures`, in `settle`) only after that wait too, so the
/// sealer never reads the head while an earlier batch may still commit. Ok: the time spent
/// inserting and committing, without the wait.
async fn write_after(
    w: &Shared,
    s: &Sealed,
    before: Option<oneshot::Receiver<()>>,
) -> Result<std::time::Duration, NotWritten> {
    let started = std::time::Instant::now();
    let opened = match stale(w, s.epoch) {
        Some(refusal) => Err(refusal),
        None => Ok(w
            .store
            .begin_batch(&s.rows, s.batch.as_ref(), &s.fence)
            .await),
    };
    let inserted = started.elapsed();
    if let Some(before) = before
        && before.await.is_err()
    {
        // The batch before ended without settling (its task panicked): whether it committed
        // is unknown, so this one must not commit; as a failure, the head is read again.
        return Err(Failure(crate::store::StoreError::Database(
            "the batch before this one ended without settling".into(),
        )));
    }
    match (opened, stale(w, s.epoch)) {
        (Err(refusal), _) | (Ok(_), Some(refusal)) => Err(Refusal(refusal)),
        (Ok(Err(e)), None) => Err(Failure(e)),
        (Ok(Ok(open)), None) => {
            let committing = std::time::Instant::now();
            // Nothing is known after a failed commit (it may have landed): the head is read
            // again.
            match open.commit().await {
                Ok(()) => Ok(inserted + committing.elapsed()),
                Err(e) => Err(Failure(e)),
            }
        }
    }
}

/// Answers the batch's requests after its outcome; a failure bumps `failures`, so the sealer
/// reads the head again.
async fn settle(
    w: &Shared,
    s: Sealed,
    outcome: Result<std::time::Duration, NotWritten>,
    client_pks: &[String],
) {
    match outcome {
        Ok(took) => {
            tracing::debug!(
                rows = s.rows.len(),
                insert_us = took.as_micros() as u64,
                "batch committed"
            );
            if let Some(o) = w.observer.batches.get() {
                o.committed(s.rows.len(), took);
            }
            if let (Some(l), Some(first)) = (w.observer.leaves.get(), s.rows.first())
                && !s.leaves.is_empty()
            {
                l.committed_leaves(first.sequence_number, s.leaves);
            }
            let written = s.rows.iter().map(Appended::of).collect();
            // The rows are handed over, not copied: nothing here needs them after this.
            if let Some(l) = w.observer.commits.get() {
                l.committed(s.rows, s.details_listings);
            }
            answer(&w.node_id, s.shares, Ok(written));
        }
        Err(Refusal(e)) => answer(&w.node_id, s.shares, Err(e)),
        Err(Failure(e)) => {
            w.failures.fetch_add(1, Ordering::SeqCst);
            let e = match e {
                crate::store::StoreError::Conflict(why) => {
                    let (first, last) = (
                        s.rows.first().map_or(0, |r| r.sequence_number),
                        s.rows.last().map_or(0, |r| r.sequence_number),
                    );
                    let node_id = &w.node_id;
                    refused(
                        w.store.as_ref(),
                        node_id,
                        client_pks,
                        format!(
                            "node {node_id}: the database already holds rows or a batch \
                             statement at the sequence numbers {first}..{last} this server was \
                             writing ({why}): someone else writes as this node"
                        ),
                        &w.inconsistent,
                    )
                    .await
                }
                e => e.into(),
            };
            answer(&w.node_id, s.shares, Err(e));
        }
    }
}

/// Why a batch was not written: refused before its commit was tried (an earlier batch failed,
/// or the log is inconsistent), or failed itself.
enum NotWritten {
    Refusal(DeviceError),
    Failure(crate::store::StoreError),
}
use NotWritten::{Failure, Refusal};

/// Gives each request its part of the batch's result: its replayed rows, and the batch's new
/// rows in order for the rest.
pub(super) fn answer(node_id: &str, shares: Shares, result: Result<Vec<Appended>, DeviceError>) {
    match result {
        Ok(done) => {
            let mut done = done.into_iter();
            for (replays, reply) in shares {
                let n = replays.iter().filter(|r| r.is_none()).count();
                let written: Vec<Appended> = done.by_ref().take(n).collect();
                let _ = reply.send(Ok(merge_replays(replays, written)));
            }
        }
        Err(e) => {
            let events: usize = shares
                .iter()
                .map(|(r, _)| r.iter().filter(|r| r.is_none()).count())
                .sum();
            tracing::warn!(node = %node_id, error = %e, events, "batch not written; its requests get 503");
            let msg = e.to_string();
            let mut first = Some(e);
            for (_, reply) in shares {
                let err = first
                    .take()
                    .unwrap_or_else(|| DeviceError::Stopped(msg.clone()));
                let _ = reply.send(Err(err));
            }
        }
    }
}
