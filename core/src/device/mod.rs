//! Log devices: what turns an accepted event into a committed, protected row with the node's
//! next sequence number. This file holds the trait and what both devices share; the devices
//! are in sequential.rs and batched/.

pub mod batched;
mod sequential;

pub use sequential::SequentialDevice;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::crypto::token::TokenError;
use crate::format::details::Listing;
use crate::format::record::{AuditRecord, new_pk};
use crate::store::StoreError;

/// An event as a signer submits it: every column but the ones the device assigns.
#[derive(Debug, Clone)]
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
    /// The listing (`key: value; ...`) of the map `additional_details` was encoded from, made
    /// with it (`details::encode_listed`) when forwarding asked for it: the Log4j lines of rows
    /// handed over at commit carry it instead of decoding the XML again. `Listing::default()` when
    /// there is none.
    pub details_listing: Listing,
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
    /// Hands the canonical leaf hashes of each commit's rows to `listener` once they are
    /// committed (the checkpoint writer, which then need not read the rows back); the
    /// sequential device does not. Only the first listener set is kept.
    fn hand_leaves_to(&self, listener: Arc<dyn LeafListener>) {
        let _ = listener;
    }
    /// Whether events should carry the listing of their additionalDetails
    /// (`NewEvent::details_listing`): only when the commit listener uses it (a Log4j sink).
    fn wants_details_listings(&self) -> bool {
        false
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
    /// listener's now. `details_listings` holds each row's details listing
    /// (`NewEvent::details_listing`), in row order, or is empty.
    fn committed(&self, rows: Vec<AuditRecord>, details_listings: Vec<Listing>);

    /// Whether the listener uses the rows' details listings; when not, events are made without
    /// them (`LogDevice::wants_details_listings`): a listing costs ingestion its making.
    fn wants_details_listings(&self) -> bool {
        false
    }
}

/// Told the canonical leaf hashes (`format::canonical::row_leaf`, docs/FORMAT.md 6.1) of each
/// commit's rows, after the commit, in commit order; called on the device's writer tasks, so it
/// must be quick.
pub trait LeafListener: Send + Sync {
    /// The rows numbered `first`, `first + 1`, ... of the listener's node, one leaf each, are
    /// committed.
    fn committed_leaves(&self, first: i64, leaves: Vec<crate::format::merkle::Hash>);
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
        use crate::format::details;
        // Without a listing (`details_listing`): these events are rare, their lines decode.
        let xml = details::encode(
            &details::from_json(details)?,
            details::MapClass::Base64PutHashMap,
            details::JAVA_VERSION,
        );
        Ok(NewEvent {
            event_type: event_type.into(),
            event_status: if success { "SUCCESS" } else { "FAILURE" }.into(),
            auth_token: auth_token.into(),
            service: SYSTEM_SERVICE.into(),
            module: "SECURITY_AUDIT".into(),
            custom_id: None,
            search_detail1: None,
            search_detail2: None,
            additional_details: Some(xml),
            pk: None,
            details_listing: Listing::default(),
        })
    }

    /// The row for this event at `seq`/`time_stamp`, not yet protected (see `number_events`).
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

/// The rows of `events`, numbered from `first` at one timestamp that is never before
/// `last_time`: within a node time never decreases, even if the clock steps back.
pub(crate) fn number_events(
    events: Vec<NewEvent>,
    node_id: &str,
    first: i64,
    last_time: i64,
) -> (Vec<AuditRecord>, i64) {
    let time_stamp = crate::format::time::now_millis().max(last_time);
    let rows = events
        .into_iter()
        .enumerate()
        .map(|(i, ev)| ev.into_record(node_id, first + i as i64, time_stamp))
        .collect();
    (rows, time_stamp)
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

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::{sqlite_store, test_event};
