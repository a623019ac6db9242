//! The writer of a batched device: gathers requests into batches, settles retries, numbers,
//! hashes and signs each batch, and hands it to the inserter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;

use super::insert::{InFlight, Replays, Reply, Sealed, answer, insert_in_order, lock_set, release};
use super::{BatchedConfig, Job, Observer, WRITE_VERSION};
use crate::crypto::token::SharedToken;
use crate::device::{DeviceError, NewEvent, check_head, number_events, replays_of, stored_by_pk};
use crate::format::batch::{self, BatchRecord, GENESIS_HASH};
use crate::format::details::Listing;
use crate::format::merkle::Hash;
use crate::format::record::AuditRecord;
use crate::store::{NodeLock, SharedStore};

/// Where the node's log and chain stand.
pub(super) struct Head {
    pub(super) next: i64,
    last_time: i64,
    previous_hash: String,
}

pub(super) struct Writer {
    pub(super) node_id: String,
    pub(super) store: SharedStore,
    pub(super) token: Option<SharedToken>,
    pub(super) lock: Arc<NodeLock>,
    pub(super) lock_epoch: u64,
    pub(super) cfg: BatchedConfig,
    /// None after a failure: re-read from the database before the next batch.
    pub(super) head: Option<Head>,
    /// Bumped by the inserter at each failed batch.
    pub(super) failures: Arc<AtomicU64>,
    /// The `failures` value `head` is valid for.
    pub(super) epoch: u64,
    /// Client pks of batches sealed and not yet written (or failed): a retry that arrives
    /// meanwhile is told to retry, not written twice.
    pub(super) in_flight: InFlight,
    pub(super) inconsistent: Arc<OnceLock<String>>,
    pub(super) observer: Observer,
}

impl Writer {
    /// Where the log stands; `Inconsistent` when rows a statement or checkpoint names are gone.
    pub(super) async fn read_head(&self) -> Result<Head, DeviceError> {
        let h = self.store.head(&self.node_id).await?;
        check_head(&self.node_id, &h, &self.inconsistent)?;
        let last = self.store.last_batch(&self.node_id).await?;
        Ok(Head {
            next: h.next_sequence,
            last_time: h.last_time_stamp,
            previous_hash: last.map_or(GENESIS_HASH.to_string(), |b| b.statement_hash()),
        })
    }

    /// The requests of one batch: `first`, then what arrives within `max_wait` while the batch
    /// has room (a request that does not fit is left in `carried`), and their event count.
    async fn gather(
        &self,
        first: Job,
        rx: &mut mpsc::Receiver<Job>,
        carried: &mut Option<Job>,
    ) -> (Vec<Job>, usize) {
        let mut size = first.events.len();
        let mut jobs = vec![first];
        let deadline = tokio::time::Instant::now() + self.cfg.max_wait;
        while size < self.cfg.max_batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) if size + job.events.len() > self.cfg.max_batch => {
                    *carried = Some(job);
                    break;
                }
                Ok(Some(job)) => {
                    size += job.events.len();
                    jobs.push(job);
                }
                _ => break,
            }
        }
        (jobs, size)
    }

    /// Gathers and seals batches; a second task inserts them in order, so batch k+1 is hashed
    /// and signed while batch k is being written.
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let (to_insert, sealed) = mpsc::channel::<Sealed>(1);
        tokio::spawn(insert_in_order(
            self.store.clone(),
            sealed,
            self.failures.clone(),
            self.node_id.clone(),
            self.in_flight.clone(),
            self.inconsistent.clone(),
            self.observer.clone(),
        ));
        // A request that did not fit in the previous batch: the first of the next.
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match rx.recv().await {
                    Some(job) => job,
                    None => break,
                },
            };
            let (jobs, size) = self.gather(first, &mut rx, &mut carried).await;
            if let Some(reason) = self.inconsistent.get() {
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(DeviceError::Inconsistent(reason.clone())));
                }
                continue;
            }
            let mut events = Vec::with_capacity(size);
            let mut shares = Vec::with_capacity(jobs.len());
            for (job_events, replays, reply) in self.settle_replays(jobs).await {
                shares.push((replays, reply));
                events.extend(job_events);
            }
            if events.is_empty() {
                // Every request was answered from stored rows (or refused).
                answer(&self.node_id, shares, Ok(Vec::new()));
                continue;
            }
            let client_pks: Vec<String> = events.iter().filter_map(|e| e.pk.clone()).collect();
            // Taken for the commit listener only, one per row (events are numbered in order).
            let details_listings: Vec<Listing> = match self.observer.commits.get() {
                Some(l) if l.wants_details_listings() => events
                    .iter_mut()
                    .map(|e| std::mem::take(&mut e.details_listing))
                    .collect(),
                _ => Vec::new(),
            };
            match self.seal_batch(events).await {
                Ok((rows, batch, leaves)) => {
                    lock_set(&self.in_flight).extend(client_pks.iter().cloned());
                    let s = Sealed {
                        epoch: self.epoch,
                        fence: self.lock.fence(),
                        rows,
                        batch,
                        leaves,
                        details_listings,
                        shares,
                        client_pks,
                    };
                    if let Err(mpsc::error::SendError(s)) = to_insert.send(s).await {
                        release(&self.in_flight, &s.client_pks);
                        answer(
                            &self.node_id,
                            s.shares,
                            Err(DeviceError::Stopped("the batch inserter stopped".into())),
                        );
                    }
                }
                Err(e) => answer(&self.node_id, shares, Err(e)),
            }
        }
    }

    /// Answers the requests whose events are all stored already (retries) or that cannot be
    /// written (a pk stored with other content, or in a batch not yet written); returns the
    /// others with the events still to write and the replayed rows to merge into their answer.
    async fn settle_replays(&self, jobs: Vec<Job>) -> Vec<(Vec<NewEvent>, Replays, Reply)> {
        if jobs.iter().all(|j| j.events.iter().all(|e| e.pk.is_none())) {
            return jobs
                .into_iter()
                .map(|j| (vec![None; j.events.len()], j))
                .map(|(r, j)| (j.events, r, j.reply))
                .collect();
        }
        let all = jobs.iter().flat_map(|j| j.events.iter());
        let stored = match stored_by_pk(self.store.as_ref(), all).await {
            Ok(s) => s,
            Err(e) => {
                let shares = jobs
                    .into_iter()
                    .map(|j| (vec![None; j.events.len()], j.reply));
                answer(&self.node_id, shares.collect(), Err(e.into()));
                return Vec::new();
            }
        };
        let in_flight = lock_set(&self.in_flight).clone();
        let mut taken = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let replays = match replays_of(&stored, &job.events) {
                Ok(r) => r,
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            };
            let events: Vec<NewEvent> = job
                .events
                .into_iter()
                .zip(&replays)
                .filter(|(_, r)| r.is_none())
                .map(|(e, _)| e)
                .collect();
            let pending = events
                .iter()
                .filter_map(|e| e.pk.as_ref())
                .find(|pk| in_flight.contains(*pk) || taken.contains(*pk));
            if let Some(pk) = pending {
                let _ = job.reply.send(Err(DeviceError::PkPending(pk.clone())));
                continue;
            }
            taken.extend(events.iter().filter_map(|e| e.pk.clone()));
            out.push((events, replays, job.reply));
        }
        out
    }

    /// Numbers, hashes and signs a batch, and moves the head past it (optimistically: if its
    /// insert fails, the inserter bumps `failures` and the head is read again).
    async fn seal_batch(
        &mut self,
        events: Vec<NewEvent>,
    ) -> Result<(Vec<AuditRecord>, Option<BatchRecord>, Vec<Hash>), DeviceError> {
        if !self.lock.is_held() {
            return Err(DeviceError::LockLost(self.node_id.clone()));
        }
        let failures = self.failures.load(Ordering::SeqCst);
        if self.lock.epoch() != self.lock_epoch || failures != self.epoch {
            self.head = None;
            self.lock_epoch = self.lock.epoch();
            self.epoch = failures;
        }
        let head = match self.head.take() {
            Some(h) => h,
            None => self.read_head().await?,
        };
        let first = head.next;
        let (mut rows, time_stamp) = number_events(events, &self.node_id, first, head.last_time);
        let last = first + rows.len() as i64 - 1;
        let started = std::time::Instant::now();
        let (batch, leaves) = match &self.token {
            None => (None, Vec::new()),
            Some(token) => {
                let (token, previous_hash) = (token.clone(), head.previous_hash.clone());
                let node_id = self.node_id.clone();
                // Hashing and signing are CPU or HSM work: off the async workers.
                let signed = tokio::task::spawn_blocking(move || {
                    batch::seal(
                        &node_id,
                        &mut rows,
                        token.as_ref(),
                        time_stamp,
                        previous_hash,
                        WRITE_VERSION,
                    )
                    .map(|b| (rows, b))
                })
                .await
                .map_err(|e| DeviceError::Stopped(format!("signing task failed: {e}")));
                match signed {
                    Ok(Ok((sealed, (b, leaves)))) => {
                        rows = sealed;
                        (Some(b), leaves)
                    }
                    Ok(Err(e)) => {
                        self.head = Some(head);
                        return Err(e.into());
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        tracing::debug!(
            rows = rows.len(),
            seal_us = started.elapsed().as_micros() as u64,
            "batch sealed"
        );
        if let Some(o) = self.observer.batches.get() {
            o.sealed(rows.len(), started.elapsed());
        }
        self.head = Some(Head {
            next: last + 1,
            last_time: time_stamp,
            previous_hash: batch
                .as_ref()
                .map_or(head.previous_hash, |b| b.statement_hash()),
        });
        Ok((rows, batch, leaves))
    }
}
