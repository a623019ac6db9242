//! The inserter of a batched device: writes the sealed batches in order and answers their
//! requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::{Observer, Observers};
use crate::device::{Appended, DeviceError, merge_replays, refused};
use crate::format::batch::BatchRecord;
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
    pub(super) shares: Shares,
    /// The client pks among the rows, released from `in_flight` once the batch is settled.
    pub(super) client_pks: Vec<String>,
}

/// Writes sealed batches in order. A failed batch, and every batch sealed after it on the
/// assumption that it would land, is answered with an error; the sealer then reads the head
/// again, so the numbers are used again and no gap appears.
pub(super) async fn insert_in_order(
    store: SharedStore,
    mut sealed: mpsc::Receiver<Sealed>,
    failures: Arc<AtomicU64>,
    node_id: String,
    in_flight: InFlight,
    inconsistent: Arc<OnceLock<String>>,
    observer: Observer,
) {
    while let Some(mut s) = sealed.recv().await {
        let client_pks = std::mem::take(&mut s.client_pks);
        insert_one(
            store.as_ref(),
            s,
            &failures,
            &node_id,
            &client_pks,
            &inconsistent,
            &observer,
        )
        .await;
        // Settled, written or not: a retry now finds the rows, or writes them.
        release(&in_flight, &client_pks);
    }
}

/// Writes one sealed batch (unless an earlier one failed) and answers its requests.
async fn insert_one(
    store: &dyn crate::store::Store,
    s: Sealed,
    failures: &AtomicU64,
    node_id: &str,
    client_pks: &[String],
    inconsistent: &OnceLock<String>,
    observer: &Observers,
) {
    if let Some(reason) = inconsistent.get() {
        answer(
            node_id,
            s.shares,
            Err(DeviceError::Inconsistent(reason.clone())),
        );
        return;
    }
    if s.epoch != failures.load(Ordering::SeqCst) {
        answer(
            node_id,
            s.shares,
            Err(DeviceError::Stopped(
                "an earlier batch could not be written; nothing of this one was written".into(),
            )),
        );
        return;
    }
    let started = std::time::Instant::now();
    // Nothing is known after a failed commit (it may have landed): the head is read again.
    match store
        .insert_batch(&s.rows, s.batch.as_ref(), &s.fence)
        .await
    {
        Ok(()) => {
            tracing::debug!(
                rows = s.rows.len(),
                insert_us = started.elapsed().as_micros() as u64,
                "batch committed"
            );
            if let Some(o) = observer.batches.get() {
                o.committed(s.rows.len(), started.elapsed());
            }
            let done = s.rows.iter().map(Appended::of).collect();
            // The rows are handed over, not copied: nothing here needs them after this.
            if let Some(l) = observer.commits.get() {
                l.committed(s.rows);
            }
            answer(node_id, s.shares, Ok(done));
        }
        Err(e) => {
            failures.fetch_add(1, Ordering::SeqCst);
            let e = match e {
                crate::store::StoreError::Conflict(why) => {
                    let (first, last) = (
                        s.rows.first().map_or(0, |r| r.sequence_number),
                        s.rows.last().map_or(0, |r| r.sequence_number),
                    );
                    refused(
                        store,
                        node_id,
                        client_pks,
                        format!(
                            "node {node_id}: the database already holds rows or a batch \
                             statement at the sequence numbers {first}..{last} this server was \
                             writing ({why}): someone else writes as this node"
                        ),
                        inconsistent,
                    )
                    .await
                }
                e => e.into(),
            };
            answer(node_id, s.shares, Err(e));
        }
    }
}

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
