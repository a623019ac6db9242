//! The server's checkpoint writer: it keeps folding the node's newly committed rows into the
//! head hash, every interval signs a checkpoint (checkpoint.rs) of it and stores it, and hands
//! it to the configured sinks (checkpoint_out.rs), so that a copy lives outside the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::crypto::token::{SharedToken, TokenError};
use crate::device::LeafListener;
pub use crate::evidence::checkpoint_out::{CopyError, Sinks};
pub use crate::evidence::sink::Waiting;
use crate::format::checkpoint::{Checkpoint, Head, KIND_CHECKPOINT};
use crate::format::protection::Layout;
use crate::store::Chunk;
use crate::store::{SharedStore, StoreError};

use crate::verify::CHUNK;
use handed::Handed;

mod handed;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot sign the checkpoint: {0}")]
    Token(#[from] TokenError),
    #[error("the node's newest checkpoint (sequence {0}) has a malformed headHash")]
    Malformed(i64),
    #[error(transparent)]
    Copy(#[from] CopyError),
}

pub struct Checkpointer {
    store: SharedStore,
    token: SharedToken,
    node: String,
    head: Head,
    /// The last sequence number a checkpoint was written for (-1: none yet).
    signed: i64,
    sinks: Sinks,
    stats: Arc<CheckpointStats>,
    /// Leaves of the rows the device committed, handed over so they need not be read back.
    handed: Arc<Handed>,
    /// Rows folded from the database (read back) and from handed-over leaves.
    pub(crate) folded_rows: FoldedRows,
}

/// How many rows a writer folded, by where it took them from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FoldedRows {
    pub(crate) read_back: u64,
    pub(crate) handed: u64,
}

/// What the checkpoint writer tells the metrics.
pub struct CheckpointStats {
    /// Checkpoints `run` could not write (each an ALERT in the log).
    pub failures: AtomicU64,
    /// When (milliseconds since the epoch) the writer last did its job: it started, wrote a
    /// checkpoint, or found nothing new to write.
    pub last_success_millis: AtomicI64,
    /// Each receiver (`[checkpoint.syslog]`, `[checkpoint.witness]`) by name, and how many
    /// checkpoints wait in its backlog.
    pub receivers: Vec<(String, Arc<dyn Waiting>)>,
}

/// Where a `fold` stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folded {
    /// At the end of the node's log.
    End,
    /// Before a missing or repeated sequence number (reported as an ALERT).
    Hole,
}

impl Checkpointer {
    /// Continues from the node's newest checkpoint (or the start of its log).
    pub async fn start(
        store: SharedStore,
        token: SharedToken,
        node: String,
        sinks: Sinks,
    ) -> Result<Self, CheckpointError> {
        let (head, signed) = match store.last_checkpoint(&node).await? {
            Some(c) if c.layout() == Layout::Canonical => {
                let head = Head::of(&c).ok_or(CheckpointError::Malformed(c.sequence_number))?;
                (head, c.sequence_number)
            }
            // Fold 1, an older release's: fold the rows again from the node's start in fold 2
            // (docs/FORMAT.md 7.1).
            Some(c) => {
                let start = match store.archive_base(&node).await? {
                    Some(m) => Head::of(&m)
                        .ok_or(CheckpointError::Malformed(m.sequence_number))?
                        .in_fold(Layout::Canonical),
                    None => Head::default(),
                };
                (start, c.sequence_number)
            }
            None => (Head::default(), -1),
        };
        let receivers = [
            sinks
                .syslog
                .as_ref()
                .map(|f| (f.name().to_owned(), f.watch())),
            sinks
                .witness
                .as_ref()
                .map(|f| (f.name().to_owned(), f.watch())),
        ];
        let stats = Arc::new(CheckpointStats {
            failures: AtomicU64::new(0),
            last_success_millis: AtomicI64::new(crate::format::time::now_millis()),
            receivers: receivers.into_iter().flatten().collect(),
        });
        Ok(Checkpointer {
            handed: Arc::new(Handed::new(&node)),
            store,
            token,
            node,
            signed,
            head,
            sinks,
            stats,
            folded_rows: FoldedRows::default(),
        })
    }

    /// What the log device hands each commit's leaves to (`LogDevice::hand_leaves_to`), so that
    /// this writer folds them without reading the rows back. Rows it is not handed (another
    /// process's, the sequential device's, or leaves dropped while it was far behind) it reads
    /// from the database as before.
    pub fn leaf_listener(&self) -> Arc<dyn LeafListener> {
        self.handed.clone()
    }

    /// What this writer does, for metrics (take it before handing the writer to `run`).
    pub fn stats(&self) -> Arc<CheckpointStats> {
        self.stats.clone()
    }

    /// Folds in the rows committed since the last call and, if the head moved since the last
    /// checkpoint, writes one. Writes nothing when the rows from the node's start through the
    /// new checkpoint are not exactly one per number (a row below the newest checkpoint was
    /// deleted or added): a checkpoint never vouches for a log with a hole (docs/FORMAT.md
    /// section 7.2).
    pub async fn run_once(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
        self.fold().await?;
        self.write_if_advanced().await
    }

    /// Folds the rows committed since the last call into the head, without signing: the leaves
    /// handed over at commit that continue the head, and the rows after it read from the
    /// database. Stops at the first missing or repeated sequence number it reads: a checkpoint
    /// never vouches for a log with a hole (`write_if_advanced` also counts the rows below).
    /// The head moves row by row, so a call cut short keeps what it folded.
    pub async fn fold(&mut self) -> Result<Folded, CheckpointError> {
        'read: loop {
            self.folded_rows.handed += self.handed.fold_into(&mut self.head);
            let from = self.head.sequence_number + 1;
            let rows = self
                .store
                .read_node(Chunk::new(&self.node, from, None, CHUNK))
                .await?;
            // A short chunk may only have met the read budget: the end is an empty one.
            let full = !rows.is_empty();
            for r in &rows {
                let expected = self.head.sequence_number + 1;
                if r.sequence_number != expected {
                    // `auditseal-db archive` may have deleted rows this writer had not folded in
                    // yet: its marker carries the head hash after them, so go on from there.
                    if let Some(marker) = self.store.archive_base(&self.node).await?
                        && marker.sequence_number >= expected
                    {
                        self.head = Head::of(&marker)
                            .ok_or(CheckpointError::Malformed(marker.sequence_number))?
                            .in_fold(Layout::Canonical);
                        continue 'read;
                    }
                    tracing::error!(
                        node = %self.node,
                        expected,
                        found = r.sequence_number,
                        "ALERT the node's log has a hole or a duplicate; checkpoints stop before it"
                    );
                    return Ok(Folded::Hole);
                }
                self.head.push(r);
                self.folded_rows.read_back += 1;
            }
            if !full {
                break;
            }
        }
        Ok(Folded::End)
    }

    /// Signs a checkpoint of the head if it moved since the last one, queues it for the
    /// receivers on other hosts, stores it, and writes the local copies.
    pub async fn write_if_advanced(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
        if self.head.sequence_number == self.signed {
            return Ok(None);
        }
        // The rows read this time were consecutive; those before were read by earlier runs, or
        // archived. One count over the index range shows whether they are all still there.
        let last = self.head.sequence_number;
        let (first, count) = self.store.count_from_start(&self.node, last).await?;
        if count != last - first + 1 {
            tracing::error!(
                node = %self.node,
                first,
                last,
                rows = count,
                expected = last - first + 1,
                "ALERT the node's log does not hold one row per sequence number from its start \
                 through the next checkpoint (a row below the newest checkpoint was deleted or \
                 added); no checkpoint is written"
            );
            return Ok(None);
        }
        let (token, node, head) = (self.token.clone(), self.node.clone(), self.head);
        let c = tokio::task::spawn_blocking(move || {
            Checkpoint::sign(
                token.as_ref(),
                &node,
                &head,
                crate::format::time::now_millis(),
                KIND_CHECKPOINT,
            )
        })
        .await
        .map_err(|e| TokenError::Unavailable(format!("signing task failed: {e}")))??;
        // Queued first: after a crash the receivers may get a checkpoint the database lacks
        // (one that is signed and true), never miss one it holds.
        let queued = self.sinks.queue(&c).await;
        match self.store.insert_checkpoint(&c).await {
            // An earlier try that seemed to fail had stored one for this sequence number.
            Err(StoreError::Conflict(_)) => {}
            r => r?,
        }
        self.signed = c.sequence_number;
        queued?;
        self.sinks.copy_local(&c)?;
        Ok(Some(c))
    }
}

/// How often new rows are folded into the head between two checkpoints, so that the one at a
/// clean stop has at most this much of the log left to read.
const FOLD_EVERY: Duration = Duration::from_secs(1);

/// At a stop, how long the database or the token may go without answering before the last
/// checkpoint is given up (a database that is down must not hold up the stop). It bounds
/// silence, not work: the last checkpoint waits as long as rows keep coming.
const FINAL_NO_ANSWER: Duration = Duration::from_secs(5);

/// At a stop, how long the receivers on other hosts get to take what waits for them (the rest
/// stays in their backlogs for the next start).
const FINAL_SEND: Duration = Duration::from_secs(5);

/// Folds new rows every second and writes a checkpoint every `interval` until `stop` resolves,
/// then writes a last one (a clean shutdown) and lets the sinks deliver. Failures are logged and
/// retried at the next interval.
pub async fn run(mut cp: Checkpointer, interval: Duration, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut due = Instant::now() + interval;
    // After a hole, fold only when a checkpoint is due (once an interval, as its ALERT).
    let mut at_hole = false;
    loop {
        let wake = if at_hole {
            due
        } else {
            due.min(Instant::now() + FOLD_EVERY)
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = &mut stop => break,
        }
        if Instant::now() >= due {
            due = Instant::now() + interval;
            at_hole = false;
            let result = cp.run_once().await;
            report(&cp, result, None);
        } else {
            match cp.fold().await {
                Ok(f) => at_hole = f == Folded::Hole,
                // Reported when the checkpoint is due.
                Err(e) => tracing::debug!(node = %cp.node, error = %e, "cannot fold new rows yet"),
            }
        }
    }
    let started = Instant::now();
    let result = final_checkpoint(&mut cp).await;
    report(&cp, result, Some(started.elapsed()));
    cp.sinks.close(FINAL_SEND).await;
}

/// The checkpoint at a stop: folds whatever is left while the database keeps answering, then
/// signs, queues and stores it, each step capped by `FINAL_NO_ANSWER`. When the database fails,
/// what was folded before is still signed and queued for the receivers.
async fn final_checkpoint(cp: &mut Checkpointer) -> Result<Option<Checkpoint>, CheckpointError> {
    loop {
        let before = cp.head.sequence_number;
        let cut_short = match tokio::time::timeout(FINAL_NO_ANSWER, cp.fold()).await {
            Ok(Ok(_)) => break,
            Ok(Err(e)) => e.to_string(),
            // Rows are still coming: go on from where the fold got to.
            Err(_) if cp.head.sequence_number > before => continue,
            Err(_) => format!("no answer in {}s", FINAL_NO_ANSWER.as_secs()),
        };
        tracing::error!(
            node = %cp.node,
            error = %cut_short,
            covers = cp.head.sequence_number,
            "ALERT cannot read the newest rows for the checkpoint of the stop; it covers the rows \
             read before"
        );
        break;
    }
    tokio::time::timeout(FINAL_NO_ANSWER, cp.write_if_advanced())
        .await
        .unwrap_or_else(|_| {
            Err(CheckpointError::Store(StoreError::Unavailable(format!(
                "no answer in {}s for the checkpoint of the stop",
                FINAL_NO_ANSWER.as_secs()
            ))))
        })
}

fn report(
    cp: &Checkpointer,
    result: Result<Option<Checkpoint>, CheckpointError>,
    last: Option<Duration>,
) {
    if result.is_ok() {
        cp.stats
            .last_success_millis
            .store(crate::format::time::now_millis(), Ordering::Relaxed);
    }
    match result {
        Ok(Some(c)) => tracing::info!(
            node = %c.node_id,
            sequence = c.sequence_number,
            head = %c.head_hash,
            last = last.is_some(),
            took_ms = last.map(|d| d.as_millis() as u64),
            "checkpoint written"
        ),
        Ok(None) => {}
        Err(e) => {
            cp.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(node = %cp.node, error = %e, "ALERT cannot write a checkpoint")
        }
    }
}

#[cfg(test)]
mod tests;
