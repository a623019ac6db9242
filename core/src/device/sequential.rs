//! The sequential device: one row at a time, in strict order, each protected on its own
//! (versions 1/2).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{
    Appended, DeviceError, LogDevice, NewEvent, check_head, merge_replays, number_events, refused,
    replays_of, stored_by_pk,
};
use crate::crypto::protector::protect;
use crate::crypto::token::{SharedToken, TokenError};
use crate::format::record::AuditRecord;
use crate::store::{NodeLock, SharedStore, StoreError};

struct State {
    /// The next sequence number; None after a database failure, when it must be re-read
    /// (the failed commit may in fact have landed).
    next: Option<i64>,
    last_time: i64,
    /// The lock epoch `next` was read under.
    lock_epoch: u64,
}

struct Inner {
    node_id: String,
    store: SharedStore,
    /// None when signing is disabled (`enablesign=false`): rows get a null rowProtection.
    token: Option<SharedToken>,
    state: Mutex<State>,
    lock: NodeLock,
    /// Set when the log is found inconsistent: every later request is refused.
    inconsistent: std::sync::OnceLock<String>,
}

/// One row at a time, in strict order: take the next number, build and protect the row, insert,
/// commit, acknowledge. On any failure the number is given back, so there are never gaps.
pub struct SequentialDevice {
    inner: Arc<Inner>,
}

impl SequentialDevice {
    /// Takes the node's writer lock and reads where its log stands.
    pub async fn start(
        store: SharedStore,
        node_id: String,
        token: Option<SharedToken>,
    ) -> Result<Self, DeviceError> {
        let lock = store
            .lock_node(&node_id)
            .await
            .map_err(DeviceError::Start)?;
        let head = store.head(&node_id).await.map_err(DeviceError::Start)?;
        // Started all the same: queries, exports and health answer, and say why (OPERATIONS.md).
        let inconsistent = std::sync::OnceLock::new();
        let _ = check_head(&node_id, &head, &inconsistent);
        tracing::info!(node = %node_id, next_sequence = head.next_sequence, "sequential log device ready");
        Ok(SequentialDevice {
            inner: Arc::new(Inner {
                node_id,
                store,
                token,
                state: Mutex::new(State {
                    next: Some(head.next_sequence),
                    last_time: head.last_time_stamp,
                    lock_epoch: lock.epoch(),
                }),
                lock,
                inconsistent,
            }),
        })
    }
}

impl Inner {
    /// Each row numbered, protected on its own (versions 1/2), all inserted in one transaction.
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, DeviceError> {
        let mut state = self.state.lock().await;
        if let Some(reason) = self.inconsistent.get() {
            return Err(DeviceError::Inconsistent(reason.clone()));
        }
        if !self.lock.is_held() {
            return Err(DeviceError::LockLost(self.node_id.clone()));
        }
        // Under the device's lock: no other request of this node can store these pks meanwhile.
        let stored = stored_by_pk(self.store.as_ref(), events.iter()).await?;
        let replays = replays_of(&stored, &events)?;
        let events: Vec<NewEvent> = events
            .into_iter()
            .zip(&replays)
            .filter(|(_, r)| r.is_none())
            .map(|(e, _)| e)
            .collect();
        if events.is_empty() {
            return Ok(merge_replays(replays, Vec::new()));
        }
        let seq = self.next_sequence(&mut state).await?;
        let events_pks: Vec<Option<String>> = events.iter().map(|e| e.pk.clone()).collect();
        let (mut records, time_stamp) = number_events(events, &self.node_id, seq, state.last_time);
        if let Some(token) = &self.token {
            records = protect_all(token.clone(), records).await?;
        }
        let fence = self.lock.fence();
        let stored = match records.as_slice() {
            [one] => self.store.insert(one, &fence).await,
            many => self.store.insert_batch(many, None, &fence).await,
        };
        if let Err(e) = stored {
            state.next = None;
            let client_pks: Vec<String> = events_pks.into_iter().flatten().collect();
            let span = (seq, seq + records.len() as i64 - 1);
            return Err(self.not_stored(e, span, &client_pks).await);
        }
        state.next = Some(seq + records.len() as i64);
        state.last_time = time_stamp;
        Ok(merge_replays(
            replays,
            records.iter().map(Appended::of).collect(),
        ))
    }

    /// The next sequence number: the one kept in memory, or, when it is unknown (at the start,
    /// after a failed write, or after the node's lock was lost and taken again, when someone
    /// else may have written), the node's head read again and checked.
    async fn next_sequence(&self, state: &mut State) -> Result<i64, DeviceError> {
        if self.lock.epoch() != state.lock_epoch {
            state.next = None;
            state.lock_epoch = self.lock.epoch();
        }
        let seq = match state.next {
            Some(n) => n,
            None => {
                let head = self.store.head(&self.node_id).await?;
                check_head(&self.node_id, &head, &self.inconsistent)?;
                state.last_time = state.last_time.max(head.last_time_stamp);
                head.next_sequence
            }
        };
        state.next = Some(seq);
        Ok(seq)
    }

    /// The error for rows `span` (first, last) that were not stored. A conflict on their
    /// numbers means someone else writes as this node: the log is inconsistent (unless the
    /// conflict was the client's own pks, `refused` tells).
    async fn not_stored(
        &self,
        e: StoreError,
        span: (i64, i64),
        client_pks: &[String],
    ) -> DeviceError {
        let StoreError::Conflict(why) = e else {
            return e.into();
        };
        let (first, last) = span;
        refused(
            self.store.as_ref(),
            &self.node_id,
            client_pks,
            format!(
                "node {}: the database already holds a row at one of the sequence numbers \
                 {first}..{last} this server was writing ({why}): someone else writes as this \
                 node",
                self.node_id
            ),
            &self.inconsistent,
        )
        .await
    }
}

/// Each record's protection (versions 1/2), on a blocking thread: token calls may block on
/// an HSM, and must stay off the runtime's workers.
async fn protect_all(
    token: SharedToken,
    mut records: Vec<AuditRecord>,
) -> Result<Vec<AuditRecord>, DeviceError> {
    tokio::task::spawn_blocking(move || {
        for r in &mut records {
            r.row_protection = Some(protect(token.as_ref(), r)?);
        }
        Ok::<_, TokenError>(records)
    })
    .await
    .map_err(|e| DeviceError::Stopped(format!("signing task failed: {e}")))?
    .map_err(DeviceError::from)
}

#[async_trait]
impl LogDevice for SequentialDevice {
    fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    fn inconsistent(&self) -> Option<String> {
        self.inner.inconsistent.get().cloned()
    }

    fn lock_held(&self) -> bool {
        self.inner.lock.is_held()
    }

    async fn append(&self, event: NewEvent) -> Result<Appended, DeviceError> {
        let mut done = self.append_all(vec![event]).await?;
        done.pop()
            .ok_or_else(|| DeviceError::Stopped("no row was written".into()))
    }

    async fn append_all(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, DeviceError> {
        // Run to completion even if the caller goes away, so the state always matches the
        // database (a dropped future could leave a committed row unaccounted for).
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.append(events).await })
            .await
            .map_err(|e| DeviceError::Stopped(e.to_string()))?
    }
}
