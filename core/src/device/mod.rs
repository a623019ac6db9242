//! Log devices: what turns an accepted event into a committed, protected row with the node's
//! next sequence number. This file holds the trait and the sequential device.

pub mod batched;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::crypto::protector::protect;
use crate::crypto::token::{SharedToken, TokenError};
use crate::format::record::{AuditRecord, new_pk};
use crate::store::{NodeLock, SharedStore, StoreError};

/// An event as a signer submits it: every column but the ones the device assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_type: String,
    pub event_status: String,
    pub auth_token: String,
    pub service: String,
    pub module: String,
    pub custom_id: Option<String>,
    pub search_detail1: Option<String>,
    pub search_detail2: Option<String>,
    /// Already in its stored XML form (see `details::encode`).
    pub additional_details: Option<String>,
    /// The row's primary key when the client chose it (exactly-once ingestion: a retry of a
    /// stored pk is answered with the stored row and writes nothing); else a new random one.
    pub pk: Option<String>,
}

/// What the signer is told once its row is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Appended {
    pub pk: String,
    pub node_id: String,
    pub sequence_number: i64,
    pub time_stamp: i64,
    /// True when this event's pk was stored before (a retry): nothing was written for it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Nothing was written; the sequence number was given back.
    #[error("the row could not be protected: {0}")]
    Token(#[from] TokenError),
    /// Nothing was acknowledged; the sequence number is re-read from the database before reuse.
    #[error("the row could not be stored: {0}")]
    Store(StoreError),
    #[error("the log device stopped: {0}")]
    Stopped(String),
    /// The device could not start: the node's lock is held elsewhere or the database is down.
    #[error(transparent)]
    Start(StoreError),
    /// The batched device's queue is full: nothing was accepted, retry later.
    #[error("the ingestion queue is full ({0} events waiting); retry later")]
    QueueFull(usize),
    /// A client pk that is stored already with other content: nothing was written.
    #[error(
        "an event with pk {0} is stored already with other content; a retry must send the same \
         event, a new event needs a new pk"
    )]
    PkConflict(String),
    /// An event with this client pk is being written by an earlier request: retry to get its row.
    #[error("an event with pk {0} is being written by an earlier request; retry to get its row")]
    PkPending(String),
    /// A bulk request larger than the device can ever hold at once.
    #[error("{events} events in one request; this server takes at most {limit} at once")]
    TooLarge { events: usize, limit: usize },
    /// This process no longer holds the node's writer lock; nothing is written until it does.
    #[error(
        "this process lost the writer lock of node {0}; writes are refused until it is regained"
    )]
    LockLost(String),
    /// The node's log is not what its writer read (rows named by a statement or checkpoint are
    /// missing, or someone else took the numbers it was writing): nothing was written, and
    /// nothing is until an operator has acted and the process is restarted.
    #[error("{0}")]
    Inconsistent(String),
}

impl From<StoreError> for DeviceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fenced(node) => DeviceError::LockLost(node),
            e => DeviceError::Store(e),
        }
    }
}

/// Appends events to one node's log.
#[async_trait]
pub trait LogDevice: Send + Sync {
    fn node_id(&self) -> &str;
    /// Why the device refuses every event (`DeviceError::Inconsistent`), if it does.
    fn inconsistent(&self) -> Option<String> {
        None
    }
    /// Whether this process holds the node's writer lock now (writes are refused while not).
    fn lock_held(&self) -> bool;
    /// Events waiting in the device's queue, and how many it takes; None when it has no queue.
    fn queue(&self) -> Option<QueueDepth> {
        None
    }
    /// Reports each batch the device seals and commits to `observer` (metrics); devices
    /// without batches ignore it. Only the first observer set is kept.
    fn observe_batches(&self, observer: Arc<dyn BatchObserver>) {
        let _ = observer;
    }
    /// Hands the rows of each commit to `listener` once they are committed (forwarding); the
    /// sequential device does not (its commits are single rows: forwarding reads them back).
    /// Only the first listener set is kept.
    fn listen_to_commits(&self, listener: Arc<dyn CommitListener>) {
        let _ = listener;
    }
    /// Returns only once the row is committed (durable and protected).
    async fn append(&self, event: NewEvent) -> Result<Appended, DeviceError>;
    /// All or nothing: every event is committed (consecutive numbers, one transaction) or none.
    async fn append_all(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, DeviceError>;
}

/// A device's queue: events waiting (queued or being written) and the most it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    pub waiting: usize,
    pub capacity: usize,
}

/// Told of each batch a batched device seals and commits; called on the device's writer tasks,
/// so it must be quick (an atomic update, not I/O).
pub trait BatchObserver: Send + Sync {
    /// A batch of `rows` was numbered, hashed and signed in `took`.
    fn sealed(&self, rows: usize, took: std::time::Duration);
    /// A batch of `rows` was committed in `took`.
    fn committed(&self, rows: usize, took: std::time::Duration);
}

/// Told the rows of each commit, after the commit.
pub trait CommitListener: Send + Sync {
    /// `rows` (one node's, consecutive numbers) are committed, as stored; they are the
    /// listener's now.
    fn committed(&self, rows: Vec<AuditRecord>);
}

/// The service of the events auditseal logs itself (see `NewEvent::system`).
pub const SYSTEM_SERVICE: &str = "AUDITSEAL";

impl NewEvent {
    /// An event auditseal itself logs (an archive run, a verification) with `details` as
    /// additionalDetails (service `AUDITSEAL`, module `SECURITY_AUDIT`, as CESeCore's log events).
    pub fn system(
        event_type: &str,
        success: bool,
        auth_token: &str,
        details: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<NewEvent, crate::format::details::DetailsError> {
        let d = crate::format::details::from_json(details)?;
        Ok(NewEvent {
            event_type: event_type.into(),
            event_status: if success { "SUCCESS" } else { "FAILURE" }.into(),
            auth_token: auth_token.into(),
            service: SYSTEM_SERVICE.into(),
            module: "SECURITY_AUDIT".into(),
            custom_id: None,
            search_detail1: None,
            search_detail2: None,
            additional_details: Some(crate::format::details::encode(
                &d,
                crate::format::details::MapClass::Base64PutHashMap,
                crate::format::details::JAVA_VERSION,
            )),
            pk: None,
        })
    }

    /// The row for this event at `seq`/`time_stamp`, not yet protected.
    pub fn into_record(self, node_id: &str, seq: i64, time_stamp: i64) -> AuditRecord {
        AuditRecord {
            pk: self.pk.unwrap_or_else(new_pk),
            node_id: node_id.to_string(),
            sequence_number: seq,
            time_stamp,
            event_type: self.event_type,
            event_status: self.event_status,
            auth_token: self.auth_token,
            service: self.service,
            module: self.module,
            custom_id: self.custom_id,
            search_detail1: self.search_detail1,
            search_detail2: self.search_detail2,
            additional_details: self.additional_details,
            row_version: 0,
            row_protection: None,
        }
    }
}

impl Appended {
    pub fn of(r: &AuditRecord) -> Self {
        Appended {
            pk: r.pk.clone(),
            node_id: r.node_id.clone(),
            sequence_number: r.sequence_number,
            time_stamp: r.time_stamp,
            replayed: false,
        }
    }
}

impl NewEvent {
    /// The bytes its columns take as stored (UTF-8, additionalDetails as XML), before the
    /// device's own (node id, numbers, protection).
    pub fn stored_bytes(&self) -> usize {
        [
            Some(&self.event_type),
            Some(&self.event_status),
            Some(&self.auth_token),
            Some(&self.service),
            Some(&self.module),
            self.custom_id.as_ref(),
            self.search_detail1.as_ref(),
            self.search_detail2.as_ref(),
            self.additional_details.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum()
    }

    /// Whether `r` is this event as stored: every column the client gave (the device's own,
    /// node, number, time and protection, aside).
    fn is_stored_as(&self, r: &AuditRecord) -> bool {
        self.event_type == r.event_type
            && self.event_status == r.event_status
            && self.auth_token == r.auth_token
            && self.service == r.service
            && self.module == r.module
            && self.custom_id == r.custom_id
            && self.search_detail1 == r.search_detail1
            && self.search_detail2 == r.search_detail2
            && self.additional_details == r.additional_details
    }
}

/// The stored rows whose pks some of `events` chose (one query; none without client pks).
pub(crate) async fn stored_by_pk<'a>(
    store: &dyn crate::store::Store,
    events: impl Iterator<Item = &'a NewEvent>,
) -> Result<std::collections::HashMap<String, AuditRecord>, StoreError> {
    let pks: Vec<String> = events.filter_map(|e| e.pk.clone()).collect();
    if pks.is_empty() {
        return Ok(Default::default());
    }
    Ok(store
        .get_many(&pks)
        .await?
        .into_iter()
        .map(|r| (r.pk.clone(), r))
        .collect())
}

/// For each event, the stored row its client pk names, if any (exactly-once ingestion); a pk
/// stored with other content is `PkConflict`.
pub(crate) fn replays_of(
    stored: &std::collections::HashMap<String, AuditRecord>,
    events: &[NewEvent],
) -> Result<Vec<Option<Appended>>, DeviceError> {
    events
        .iter()
        .map(|e| match e.pk.as_ref().and_then(|pk| stored.get(pk)) {
            None => Ok(None),
            Some(r) if e.is_stored_as(r) => Ok(Some(Appended {
                replayed: true,
                ..Appended::of(r)
            })),
            Some(r) => Err(DeviceError::PkConflict(r.pk.clone())),
        })
        .collect()
}

/// The answer for a request: its replayed events where they were, the new rows in order in the
/// other places.
pub(crate) fn merge_replays(
    replays: Vec<Option<Appended>>,
    written: Vec<Appended>,
) -> Vec<Appended> {
    let mut written = written.into_iter();
    replays
        .into_iter()
        .filter_map(|r| r.or_else(|| written.next()))
        .collect()
}

/// Marks a node's log inconsistent (once; the first reason stays) and logs the ALERT; returns
/// the error every request of the node gets from now on.
pub(crate) fn mark_inconsistent(
    node: &str,
    flag: &std::sync::OnceLock<String>,
    reason: String,
) -> DeviceError {
    if flag.set(reason).is_ok() {
        tracing::error!(
            node = %node,
            reason = %flag.get().map_or("", String::as_str),
            "ALERT the node's log is inconsistent; its events are refused until an operator has \
             acted and the server is restarted (docs/OPERATIONS.md \"Log inconsistent\")"
        );
    }
    DeviceError::Inconsistent(flag.get().cloned().unwrap_or_default())
}

/// The error for a node whose head shows missing rows (`NodeHead::missing`), if it does.
pub(crate) fn check_head(
    node: &str,
    head: &crate::store::NodeHead,
    flag: &std::sync::OnceLock<String>,
) -> Result<(), DeviceError> {
    match head.missing() {
        None => Ok(()),
        Some((first, last)) => Err(mark_inconsistent(
            node,
            flag,
            format!(
                "node {node}: sequence numbers {first}..{last} are named by a batch statement or \
                 checkpoint, but no row has them (the node's newest rows were deleted, or the \
                 statement or checkpoint was forged)"
            ),
        )),
    }
}

/// What a unique-key refusal (`StoreError::Conflict`) of a node's write means. When one of the
/// write's client pks is stored now, another request stored it meanwhile (two retries of one
/// event that reached two nodes at once): the retry gets its row. Otherwise rows or a batch
/// statement hold numbers this writer was about to use, which only someone writing behind its
/// lock can have done: the log is not what the writer read, and the node stops taking events
/// (retrying would collide again, or write after rows nobody accounts for).
pub(crate) async fn refused(
    store: &dyn crate::store::Store,
    node: &str,
    client_pks: &[String],
    reason: String,
    flag: &std::sync::OnceLock<String>,
) -> DeviceError {
    if !client_pks.is_empty() {
        match store.get_many(client_pks).await {
            Ok(found) => {
                if let Some(r) = found.first() {
                    return DeviceError::PkPending(r.pk.clone());
                }
            }
            // Nothing is known: the database went away after the refusal.
            Err(e) => return DeviceError::Store(e),
        }
    }
    mark_inconsistent(node, flag, reason)
}

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
        // Never decreasing within a node, even if the clock steps back.
        let time_stamp = crate::format::time::now_millis().max(state.last_time);
        let mut records: Vec<AuditRecord> = events
            .into_iter()
            .enumerate()
            .map(|(i, ev)| ev.into_record(&self.node_id, seq + i as i64, time_stamp))
            .collect();
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

/// An event for the devices' unit tests (search_detail1 = n).
#[cfg(test)]
pub(crate) fn test_event(n: usize) -> NewEvent {
    NewEvent {
        event_type: "PROCESS".into(),
        event_status: "SUCCESS".into(),
        auth_token: "test".into(),
        service: "SIGNSERVER".into(),
        module: "WORKER".into(),
        custom_id: None,
        search_detail1: Some(n.to_string()),
        search_detail2: None,
        additional_details: None,
        pk: None,
    }
}

#[cfg(test)]
mod tests {
    use super::test_event as event;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::crypto::keys::{KeyRing, VerifyKey};
    use crate::crypto::token::{Algorithm, CryptoToken, HmacToken};
    use crate::verify::{Selection, verify_log};

    /// An HMAC token that can be switched off, as an HSM that goes away.
    struct Flaky {
        inner: HmacToken,
        down: AtomicBool,
    }

    impl CryptoToken for Flaky {
        fn keyid(&self) -> i32 {
            self.inner.keyid()
        }
        fn algorithm(&self) -> Algorithm {
            self.inner.algorithm()
        }
        fn sign(&self, data: &[u8]) -> Result<Vec<u8>, TokenError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(TokenError::Unavailable(
                    "token switched off by the test".into(),
                ));
            }
            self.inner.sign(data)
        }
        fn verify_key(&self) -> VerifyKey {
            self.inner.verify_key()
        }
        fn describe(&self) -> String {
            "flaky test token".into()
        }
    }

    #[tokio::test]
    async fn signing_and_database_failures_give_the_number_back() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let token = Arc::new(Flaky {
            inner: HmacToken::new(3, b"secret"),
            down: AtomicBool::new(false),
        });
        let device = SequentialDevice::start(store.clone(), "n1".into(), Some(token.clone()))
            .await
            .unwrap();
        assert_eq!(device.append(event(0)).await.unwrap().sequence_number, 0);

        token.down.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            let e = device.append(event(99)).await.unwrap_err();
            assert!(
                matches!(e, DeviceError::Token(TokenError::Unavailable(_))),
                "{e}"
            );
        }
        token.down.store(false, Ordering::SeqCst);
        assert_eq!(device.append(event(1)).await.unwrap().sequence_number, 1);

        // A row the database refuses (a trigger stands in for a failing database).
        crate::store::SqliteStore::connect(&url)
            .await
            .unwrap()
            .pool()
            .execute_raw(
                "CREATE TRIGGER refuse BEFORE INSERT ON auditrecorddata \
                 BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
            )
            .await;
        assert!(matches!(
            device.append(event(98)).await,
            Err(DeviceError::Store(_))
        ));
        crate::store::SqliteStore::connect(&url)
            .await
            .unwrap()
            .pool()
            .execute_raw("DROP TRIGGER refuse")
            .await;
        assert_eq!(device.append(event(2)).await.unwrap().sequence_number, 2);

        let mut ring = KeyRing::new();
        ring.insert(3, token.verify_key());
        let report = verify_log(
            &store,
            &std::sync::Arc::new(ring.clone()),
            &Selection::All,
            &Default::default(),
        )
        .await
        .unwrap();
        assert_eq!((report.rows, report.errors), (3, 0), "{report}");
    }

    async fn sqlite_store(dir: &tempfile::TempDir) -> (String, crate::store::SharedStore) {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        (url, store)
    }

    /// Issue 11.1: once an archive removed every row of a node, its numbering goes on after the
    /// archive marker (it restarted at 0, reusing numbers the next archive deleted unread).
    #[tokio::test]
    async fn a_head_never_goes_back_after_an_archive_removed_every_row() {
        use crate::format::checkpoint::{Checkpoint, Head, KIND_ARCHIVE};
        let dir = tempfile::tempdir().unwrap();
        let (_, store) = sqlite_store(&dir).await;
        let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
        let device = SequentialDevice::start(store.clone(), "idle".into(), Some(token.clone()))
            .await
            .unwrap();
        for i in 0..5 {
            device.append(event(i)).await.unwrap();
        }
        drop(device);
        let rows = store.read_node("idle", 0, None, 100).await.unwrap();
        let mut head = Head::default();
        rows.iter().for_each(|r| head.push(r));
        let marker = Checkpoint::sign(token.as_ref(), "idle", &head, 1, KIND_ARCHIVE).unwrap();

        // A count that is not the rows' changes nothing.
        let e = store.archive_node(&marker, 0, 4).await.unwrap_err();
        assert!(
            matches!(e, crate::store::StoreError::Inconsistent(_)),
            "{e}"
        );
        assert_eq!(
            store.read_node("idle", 0, None, 100).await.unwrap().len(),
            5
        );
        assert!(store.archive_base("idle").await.unwrap().is_none());

        assert_eq!(store.archive_node(&marker, 0, 5).await.unwrap(), 5);
        assert!(
            store
                .read_node("idle", 0, None, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.head("idle").await.unwrap().next_sequence, 5);
        let device = SequentialDevice::start(store.clone(), "idle".into(), Some(token))
            .await
            .unwrap();
        assert_eq!(device.append(event(5)).await.unwrap().sequence_number, 5);
    }

    /// Issue 11.3: a writer whose lock was taken over commits nothing, even before it notices.
    #[tokio::test]
    async fn a_writer_whose_lease_was_taken_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (url, store) = sqlite_store(&dir).await;
        let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
        let device = SequentialDevice::start(store.clone(), "n".into(), Some(token))
            .await
            .unwrap();
        device.append(event(0)).await.unwrap();
        // What another process does when it takes the node over.
        crate::store::SqliteStore::connect(&url)
            .await
            .unwrap()
            .pool()
            .execute_raw("UPDATE auditnodelease SET epoch = epoch + 1 WHERE nodeid = 'n'")
            .await;
        for events in [vec![event(1)], vec![event(2), event(3)]] {
            let e = device.append_all(events).await.unwrap_err();
            assert!(matches!(e, DeviceError::LockLost(_)), "{e}");
        }
        assert_eq!(store.read_node("n", 0, None, 100).await.unwrap().len(), 1);
    }

    /// A client pk that another node stores between this device's look-up and its insert (two
    /// retries of one event reaching two nodes at once) is not the node's log gone wrong: the
    /// retry gets the stored row. Numbers someone else took are: the node refuses events.
    #[tokio::test]
    async fn a_pk_race_is_pending_and_taken_numbers_are_inconsistent() {
        let dir = tempfile::tempdir().unwrap();
        let (url, store) = sqlite_store(&dir).await;
        let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
        let device = SequentialDevice::start(store.clone(), "n".into(), Some(token))
            .await
            .unwrap();
        device.append(event(0)).await.unwrap();
        let pk = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_string();
        let other = NewEvent {
            pk: Some(pk.clone()),
            ..event(1)
        }
        .into_record("other", 0, 0);
        store
            .insert_batch(
                &[other],
                None,
                &store.lock_node("other").await.unwrap().fence(),
            )
            .await
            .unwrap();
        let flag = std::sync::OnceLock::new();
        let e = refused(
            store.as_ref(),
            "n",
            std::slice::from_ref(&pk),
            "x".into(),
            &flag,
        )
        .await;
        assert!(matches!(&e, DeviceError::PkPending(p) if *p == pk), "{e}");
        assert!(flag.get().is_none());
        let e = refused(store.as_ref(), "n", &[], "x".into(), &flag).await;
        assert!(matches!(&e, DeviceError::Inconsistent(_)), "{e}");
        assert!(flag.get().is_some());

        // Through the device: someone writes row 1 of this node behind its back.
        crate::store::SqliteStore::connect(&url)
            .await
            .unwrap()
            .pool()
            .execute_raw(
                "INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", \
                 eventtype, eventstatus, authtoken, service, module, rowversion) \
                 VALUES ('bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 'n', 1, 0, 'FORGED', 'SUCCESS', \
                 'x', 'x', 'x', 0)",
            )
            .await;
        for n in 2..4 {
            let e = device.append(event(n)).await.unwrap_err();
            assert!(matches!(e, DeviceError::Inconsistent(_)), "{e}");
        }
        assert!(device.inconsistent().is_some());
        assert_eq!(store.read_node("n", 0, None, 100).await.unwrap().len(), 2);
    }

    /// Test-only shorthand for running DDL on a pool.
    trait ExecRaw {
        async fn execute_raw(&self, sql: &'static str);
    }

    impl ExecRaw for sqlx::SqlitePool {
        async fn execute_raw(&self, sql: &'static str) {
            sqlx::raw_sql(sql).execute(self).await.unwrap();
        }
    }
}
