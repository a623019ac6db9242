//! The server's checkpoint writer: every interval it folds the node's newly committed rows into
//! the head hash, signs a checkpoint (checkpoint.rs) and stores it, and, when configured, appends
//! a copy to a file and sends one to syslog, so that a copy lives outside the database.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::checkpoint::{Checkpoint, Head, KIND_CHECKPOINT};
use crate::store::{SharedStore, StoreError};
use crate::token::{SharedToken, TokenError};

use crate::verify::CHUNK;

/// Where copies of each checkpoint go besides the database.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// Appended one JSON line per checkpoint, fsynced.
    pub file: Option<PathBuf>,
    /// A syslog datagram socket (usually /dev/log): one message per checkpoint.
    pub syslog: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot sign the checkpoint: {0}")]
    Token(#[from] TokenError),
    #[error("the node's newest checkpoint (sequence {0}) has a malformed headHash")]
    Malformed(i64),
    #[error("cannot write the checkpoint copy to {path}: {reason}")]
    Sink { path: PathBuf, reason: String },
}

pub struct Checkpointer {
    store: SharedStore,
    token: SharedToken,
    node: String,
    head: Head,
    sinks: Sinks,
}

impl Checkpointer {
    /// Continues from the node's newest checkpoint (or the start of its log).
    pub async fn start(
        store: SharedStore,
        token: SharedToken,
        node: String,
        sinks: Sinks,
    ) -> Result<Self, CheckpointError> {
        let head = match store.last_checkpoint(&node).await? {
            Some(c) => Head::of(&c).ok_or(CheckpointError::Malformed(c.sequence_number))?,
            None => Head::default(),
        };
        Ok(Checkpointer {
            store,
            token,
            node,
            head,
            sinks,
        })
    }

    /// Folds in the rows committed since the last run and, if there were any, writes a
    /// checkpoint. Stops at the first missing or repeated sequence number among them, and writes
    /// nothing when the rows from the node's start through the new checkpoint are not exactly
    /// one per number (a row below the newest checkpoint was deleted or added): a checkpoint
    /// never vouches for a log with a hole (docs/FORMAT.md section 7.2).
    pub async fn run_once(&mut self) -> Result<Option<Checkpoint>, CheckpointError> {
        let start = self.head.sequence_number;
        'read: loop {
            let from = self.head.sequence_number + 1;
            let rows = self.store.read_node(&self.node, from, None, CHUNK).await?;
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
                            .ok_or(CheckpointError::Malformed(marker.sequence_number))?;
                        continue 'read;
                    }
                    tracing::error!(
                        node = %self.node,
                        expected,
                        found = r.sequence_number,
                        "ALERT the node's log has a hole or a duplicate; checkpoints stop before it"
                    );
                    return self.write_if_advanced(start).await;
                }
                self.head.push(r);
            }
            if !full {
                break;
            }
        }
        self.write_if_advanced(start).await
    }

    async fn write_if_advanced(
        &mut self,
        start: i64,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        if self.head.sequence_number == start {
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
                crate::time::now_millis(),
                KIND_CHECKPOINT,
            )
        })
        .await
        .map_err(|e| TokenError::Unavailable(format!("signing task failed: {e}")))??;
        self.store.insert_checkpoint(&c).await?;
        self.copy_out(&c)?;
        Ok(Some(c))
    }

    fn copy_out(&self, c: &Checkpoint) -> Result<(), CheckpointError> {
        let line = c.to_json_line();
        if let Some(path) = &self.sinks.file {
            append_line(path, &line).map_err(|e| CheckpointError::Sink {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        if let Some(path) = &self.sinks.syslog {
            send_syslog(path, &line).map_err(|e| CheckpointError::Sink {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

fn append_line(path: &PathBuf, line: &str) -> std::io::Result<()> {
    let mut f = crate::files::options()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

/// RFC 3164 style, facility authpriv (10), severity notice (5): `<85>auditseal[PID]: ...`.
fn send_syslog(path: &PathBuf, line: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let msg = format!(
        "<85>auditseal[{}]: auditseal-checkpoint {line}",
        std::process::id()
    );
    sock.send_to(msg.as_bytes(), path)?;
    Ok(())
}

/// How long the last checkpoint at shutdown may take (a database that is down must not hold up
/// the stop).
const FINAL_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs `run_once` every `interval` until `stop` resolves, then once more (a final checkpoint
/// on a clean shutdown). Failures are logged and retried at the next interval.
pub async fn run(mut cp: Checkpointer, interval: Duration, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = &mut stop => true,
        };
        let result = if stopping {
            tokio::time::timeout(FINAL_TIMEOUT, cp.run_once())
                .await
                .unwrap_or_else(|_| {
                    Err(CheckpointError::Store(StoreError::Unavailable(
                        "no answer in time for the last checkpoint".into(),
                    )))
                })
        } else {
            cp.run_once().await
        };
        match result {
            Ok(Some(c)) => tracing::info!(
                node = %c.node_id,
                sequence = c.sequence_number,
                head = %c.head_hash,
                "checkpoint written"
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(node = %cp.node, error = %e, "ALERT cannot write a checkpoint")
            }
        }
        if stopping {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::KIND_ARCHIVE;
    use crate::device::{LogDevice, SequentialDevice, test_event};
    use crate::token::HmacToken;

    /// Issue 12.7: a row deleted below the newest checkpoint was never seen again (only the
    /// rows after that checkpoint are read), and the next checkpoint vouched for the log.
    #[tokio::test]
    async fn no_checkpoint_after_a_row_below_the_newest_one_was_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
        let device = SequentialDevice::start(store.clone(), "n".into(), Some(token.clone()))
            .await
            .unwrap();
        for i in 0..5 {
            device.append(test_event(i)).await.unwrap();
        }
        let mut cp =
            Checkpointer::start(store.clone(), token.clone(), "n".into(), Sinks::default())
                .await
                .unwrap();
        assert_eq!(cp.run_once().await.unwrap().unwrap().sequence_number, 4);
        let side = crate::store::SqliteStore::connect(&url).await.unwrap();
        sqlx::raw_sql("DELETE FROM auditrecorddata WHERE sequencenumber = 2")
            .execute(side.pool())
            .await
            .unwrap();
        for i in 5..8 {
            device.append(test_event(i)).await.unwrap();
        }
        assert_eq!(cp.run_once().await.unwrap(), None);
        assert_eq!(
            store
                .last_checkpoint("n")
                .await
                .unwrap()
                .unwrap()
                .sequence_number,
            4
        );
    }

    #[tokio::test]
    async fn goes_on_after_an_archive_deleted_rows_it_had_not_folded_in() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let token: SharedToken = Arc::new(HmacToken::new(3, b"secret"));
        let device = SequentialDevice::start(store.clone(), "n".into(), Some(token.clone()))
            .await
            .unwrap();
        for i in 0..5 {
            device.append(test_event(i)).await.unwrap();
        }
        let mut cp =
            Checkpointer::start(store.clone(), token.clone(), "n".into(), Sinks::default())
                .await
                .unwrap();
        assert_eq!(cp.run_once().await.unwrap().unwrap().sequence_number, 4);
        for i in 5..10 {
            device.append(test_event(i)).await.unwrap();
        }
        // Rows 0..=7 archived (as `auditseal-db archive` does: marker, then deletion).
        let rows = store.read_node("n", 0, None, 100).await.unwrap();
        let mut head = Head::default();
        rows[..8].iter().for_each(|r| head.push(r));
        let marker = Checkpoint::sign(token.as_ref(), "n", &head, 1, KIND_ARCHIVE).unwrap();
        store.archive_node(&marker, 0, 8).await.unwrap();

        let c = cp
            .run_once()
            .await
            .unwrap()
            .expect("a checkpoint after the archive");
        let mut all = Head::default();
        rows.iter().for_each(|r| all.push(r));
        assert_eq!(c.sequence_number, 9);
        assert_eq!(c.head_hash, hex::encode(all.hash));
    }
}
