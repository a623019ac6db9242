//! Event forwarding (`[[forward]]`, docs/FORMAT.md section 12, docs/OPERATIONS.md
//! "Forwarding to a SIEM"): every row this server's node stores is copied to each sink (a syslog
//! receiver over TCP, TLS or UDP, or a file) after its commit, never before: the batched device
//! hands each batch's rows over once they are committed, and other rows are read back from the
//! database (`Pages`). Encoding and file writes run on low-priority workers (`work`).
//!
//! Each sink has a task of its own and a position in the database (`AuditForwardPosition`: the
//! sequence number of the last row it delivered), so ingestion never waits for a sink: a sink
//! that is slow or down falls behind and catches up, from its position, after an outage or a
//! restart. Rows go out in sequence order, at least once (a delivery cut short is sent again
//! whole; a crash between a delivery and its position update sends those rows again): the
//! receiver de-duplicates on node and sequence number.

pub mod file;
pub mod message;
mod pages;
mod plan;
mod sink;
mod work;

use pages::Pages;
use plan::Output;
pub use plan::{Plan, plan};
use sink::{Sink, first_rows};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::ForwardStart;
use crate::evidence::sink::SinkError;
use crate::format::record::AuditRecord;
use crate::store::{SharedStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A `[[forward]]` setting cannot be used.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("forward[{index}] {name:?}: {source}")]
    Store {
        index: usize,
        name: String,
        source: StoreError,
    },
}

/// How often a sink that has delivered everything looks for new rows.
const POLL: Duration = Duration::from_millis(250);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);
/// How long a sink that has sent everything it found lets new rows gather.
const GATHER: Duration = Duration::from_millis(100);
/// How long sequence numbers missing from the table are waited for before the sink goes on
/// past them (with an ALERT, unless an archive removed them).
const GAP_WAIT: Duration = Duration::from_secs(5);

/// What a sink has done, for metrics.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Rows delivered since the start.
    pub forwarded: AtomicU64,
    /// Deliveries (and reads) that failed since the start.
    pub failures: AtomicU64,
    /// The sequence number of the last row delivered.
    pub position: AtomicI64,
    /// The timeStamp (epoch ms) of the oldest stored row not yet delivered; 0 when the sink has
    /// delivered every row it found.
    pub oldest_waiting_ms: AtomicI64,
    /// When the sink last delivered rows or found none to deliver (epoch ms).
    pub last_success_ms: AtomicI64,
}

impl ForwardStats {
    /// Seconds the oldest waiting row has waited (0 when none waits).
    pub fn lag_seconds(&self, now_ms: i64) -> f64 {
        match self.oldest_waiting_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            t => (now_ms - t).max(0) as f64 / 1000.0,
        }
    }
}

/// One running sink.
struct Running {
    name: String,
    description: String,
    stats: Arc<ForwardStats>,
    reopen: Option<Arc<AtomicBool>>,
    task: tokio::task::JoinHandle<()>,
}

/// The running sinks of this server.
pub struct Forwarding {
    sinks: Vec<Running>,
    stop: watch::Sender<bool>,
    pages: Arc<Pages>,
}

/// The file sinks' reopen flags.
#[derive(Clone, Default)]
pub struct FileReopener {
    files: Vec<(String, Arc<AtomicBool>)>,
}

impl FileReopener {
    /// Makes every file sink open its path again at its next delivery (after logrotate moved
    /// the file away). Returns the files.
    pub fn reopen(&self) -> Vec<String> {
        self.files
            .iter()
            .map(|(file, flag)| {
                flag.store(true, Ordering::SeqCst);
                file.clone()
            })
            .collect()
    }
}

/// What a sink task needs besides its sender.
struct Ctx {
    name: String,
    description: String,
    node: String,
    store: SharedStore,
    pages: Arc<Pages>,
    stats: Arc<ForwardStats>,
    stop: watch::Receiver<bool>,
}

impl Forwarding {
    /// Reads (or, for a new sink, records) each sink's position on `node` and starts its task.
    pub async fn start(
        plans: Vec<Plan>,
        node: &str,
        store: SharedStore,
    ) -> Result<Forwarding, ForwardError> {
        let (stop, stopped) = watch::channel(false);
        let mut sinks = Vec::new();
        let log4j = plans
            .iter()
            .any(|p| p.format == crate::config::ForwardFormat::Log4j);
        let pages = Arc::new(Pages::new(store.clone(), node, log4j));
        for (index, plan) in plans.into_iter().enumerate() {
            let position = initial_position(&store, &plan, node)
                .await
                .map_err(|source| ForwardError::Store {
                    index,
                    name: plan.name.clone(),
                    source,
                })?;
            let description = plan.describe();
            let stats = Arc::new(ForwardStats::default());
            stats.position.store(position, Ordering::Relaxed);
            stats
                .last_success_ms
                .store(crate::format::time::now_millis(), Ordering::Relaxed);
            tracing::info!(
                sink = %plan.name,
                to = %description,
                node,
                after = position,
                "forwarding events"
            );
            let ctx = Ctx {
                name: plan.name.clone(),
                description: description.clone(),
                node: node.to_string(),
                store: store.clone(),
                pages: pages.clone(),
                stats: stats.clone(),
                stop: stopped.clone(),
            };
            let reopen = match &plan.output {
                Output::File(f) => Some(f.reopen_flag()),
                Output::Syslog(_) | Output::Udp(_) => None,
            };
            let sink = Arc::new(Sink {
                output: plan.output,
                format: plan.format,
                sd_id: plan.sd_id,
            });
            let task = tokio::spawn(run(ctx, sink, position));
            sinks.push(Running {
                name: plan.name,
                description,
                stats,
                reopen,
                task,
            });
        }
        Ok(Forwarding { sinks, stop, pages })
    }

    /// What the device hands each commit's rows to (`LogDevice::listen_to_commits`), so sinks
    /// need not read them back.
    pub fn commit_listener(&self) -> Arc<dyn crate::device::CommitListener> {
        self.pages.clone()
    }

    /// Each sink's name and counts, for metrics.
    pub fn stats(&self) -> Vec<(String, Arc<ForwardStats>)> {
        self.sinks
            .iter()
            .map(|s| (s.name.clone(), s.stats.clone()))
            .collect()
    }

    /// What reopens the file sinks (SIGHUP), kept apart so a reload can hold it.
    pub fn reopener(&self) -> FileReopener {
        FileReopener {
            files: self
                .sinks
                .iter()
                .filter_map(|s| Some((s.description.clone(), s.reopen.clone()?)))
                .collect(),
        }
    }

    /// Delivers what is stored, for up to `deadline`, and stops every sink; what is left is
    /// sent after the next start.
    pub async fn close(self, deadline: Duration) {
        let _ = self.stop.send(true);
        let until = tokio::time::Instant::now() + deadline;
        for mut s in self.sinks {
            if tokio::time::timeout_at(until, &mut s.task).await.is_err() {
                s.task.abort();
                tracing::warn!(
                    sink = %s.name,
                    after = s.stats.position.load(Ordering::Relaxed),
                    "stopping with events not yet forwarded; they are sent after the next start"
                );
            }
        }
    }
}

/// The sink's position on `node`; a new sink's is recorded first (`start`: `now` is the
/// node's last stored row, `beginning` is before its first).
async fn initial_position(store: &SharedStore, plan: &Plan, node: &str) -> Result<i64, StoreError> {
    if let Some(p) = store.forward_position(&plan.name, node).await? {
        return Ok(p);
    }
    let p = match plan.start {
        ForwardStart::Now => store.head(node).await?.stored_next - 1,
        ForwardStart::Beginning => -1,
    };
    store
        .set_forward_position(&plan.name, node, p, crate::format::time::now_millis())
        .await?;
    tracing::info!(sink = %plan.name, node, after = p, "a new forwarding sink: its position is recorded");
    Ok(p)
}

impl Ctx {
    /// After a failure: waits `retry` and doubles it (up to `LAST_RETRY`); false when the sink
    /// is stopping instead.
    async fn back_off(&mut self, retry: &mut Duration) -> bool {
        if self.stopping() {
            return false;
        }
        self.wait(*retry).await;
        *retry = (*retry * 2).min(LAST_RETRY);
        true
    }

    /// At the head of the log (the read that found the rows just sent came back short of a
    /// page, and the newest of them, stamped `newest`, is less than a second old): lets a few
    /// more rows come before the next read, so a busy node is forwarded in fewer, larger
    /// deliveries (each one a read, a connection or a file sync). Behind, the next read follows
    /// at once: a sink that waited after every full page too could not forward more than a page
    /// per wait (10,000 rows a second), fell behind a busier node and read its rows back from
    /// the database instead of taking them as they were committed.
    async fn gather_at_head(&mut self, read: usize, newest: i64) {
        if at_head(read, newest, crate::format::time::now_millis()) {
            self.wait(GATHER).await;
        }
    }

    /// Nothing is waiting to be sent.
    fn caught_up(&self) {
        self.stats.oldest_waiting_ms.store(0, Ordering::Relaxed);
        self.stats
            .last_success_ms
            .store(crate::format::time::now_millis(), Ordering::Relaxed);
    }

    /// The first `delivered` of `rows` went out: records the new position and counts; returns
    /// the position.
    async fn delivered(&self, rows: &[&AuditRecord], delivered: usize) -> i64 {
        let position = rows[delivered - 1].sequence_number;
        self.save(position).await;
        let s = &self.stats;
        s.position.store(position, Ordering::Relaxed);
        s.forwarded.fetch_add(delivered as u64, Ordering::Relaxed);
        s.last_success_ms
            .store(crate::format::time::now_millis(), Ordering::Relaxed);
        if let Some(next) = rows.get(delivered) {
            s.oldest_waiting_ms
                .store(next.time_stamp.max(1), Ordering::Relaxed);
        }
        position
    }

    /// Waits `d`, or less if the server is stopping.
    async fn wait(&mut self, d: Duration) {
        if *self.stop.borrow() {
            return;
        }
        let _ = tokio::time::timeout(d, self.stop.changed()).await;
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Reports a failure: once per reason (an outage is one ALERT, not one a try).
    fn failed(&self, failing: &mut Option<String>, reason: String) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        if failing.as_deref() == Some(reason.as_str()) {
            tracing::debug!(sink = %self.name, error = %reason, "still cannot forward");
            return;
        }
        tracing::error!(
            sink = %self.name,
            to = %self.description,
            node = %self.node,
            after = self.stats.position.load(Ordering::Relaxed),
            error = %reason,
            "ALERT cannot forward events; they wait in the database and are sent when the \
             receiver answers"
        );
        *failing = Some(reason);
    }

    /// Rows `from..=to` are not in the table: an archive removed them before they were
    /// forwarded, or they are missing from the log.
    async fn skipped(&self, from: i64, to: i64) {
        let archived = match self.store.archive_base(&self.node).await {
            Ok(base) => base.is_some_and(|b| b.sequence_number >= to),
            Err(_) => false,
        };
        if archived {
            tracing::warn!(
                sink = %self.name,
                node = %self.node,
                first = from,
                last = to,
                "rows were archived before this sink forwarded them; it goes on after them"
            );
        } else {
            tracing::error!(
                sink = %self.name,
                node = %self.node,
                first = from,
                last = to,
                "ALERT rows are missing from the node's log (deleted?); this sink goes on after \
                 them: run auditseal-db verifylog"
            );
        }
    }

    async fn save(&self, position: i64) {
        let now = crate::format::time::now_millis();
        if let Err(e) = self
            .store
            .set_forward_position(&self.name, &self.node, position, now)
            .await
        {
            // The rows are delivered: at worst they are sent again after a restart.
            tracing::warn!(sink = %self.name, error = %e, "cannot record the forwarding position");
        }
    }
}

/// Whether a sink whose last read found `read` rows, the newest stamped `newest`, is at the head
/// of the log at `now` (`Ctx::gather_at_head`).
fn at_head(read: usize, newest: i64, now: i64) -> bool {
    read < pages::PAGE as usize && now - newest < 1000
}

/// How many of `rows` are in order without repeats from `first` on: up to the first number out
/// of sequence (the next read starts there).
fn in_sequence(rows: &[&AuditRecord], first: i64) -> usize {
    rows.iter()
        .zip(first..)
        .take_while(|(r, s)| r.sequence_number == *s)
        .count()
}

/// The sink's loop: read the rows after `position`, deliver them, record the new position.
async fn run(mut ctx: Ctx, sink: Arc<Sink>, mut position: i64) {
    let mut retry = FIRST_RETRY;
    let mut failing: Option<String> = None;
    let mut gap_since: Option<tokio::time::Instant> = None;
    loop {
        let parts = match ctx.pages.read(position + 1).await {
            Ok(r) => r,
            Err(e) => {
                ctx.failed(&mut failing, format!("cannot read the rows: {e}"));
                if !ctx.back_off(&mut retry).await {
                    return;
                }
                continue;
            }
        };
        let rows: Vec<&AuditRecord> = parts
            .iter()
            .flat_map(|(page, range)| page.rows[range.clone()].iter())
            .collect();
        let read = rows.len();
        let Some(first) = rows.first().map(|r| r.sequence_number) else {
            ctx.caught_up();
            if ctx.stopping() {
                return;
            }
            ctx.wait(POLL).await;
            continue;
        };
        ctx.stats
            .oldest_waiting_ms
            .store(rows[0].time_stamp.max(1), Ordering::Relaxed);
        if first > position + 1 {
            match gap_since {
                Some(t) if t.elapsed() >= GAP_WAIT || ctx.stopping() => {
                    ctx.skipped(position + 1, first - 1).await;
                }
                Some(_) => {
                    ctx.wait(POLL).await;
                    continue;
                }
                None => {
                    gap_since = Some(tokio::time::Instant::now());
                    continue;
                }
            }
        }
        gap_since = None;
        let n = in_sequence(&rows, first);
        let rows = &rows[..n];
        let (delivered, error) = match sink.deliver(&first_rows(&parts, n)).await {
            Ok(()) => (n, None),
            Err(u) => (u.delivered.min(n), Some(u.reason)),
        };
        if delivered > 0 {
            position = ctx.delivered(rows, delivered).await;
        }
        match error {
            None => {
                if failing.take().is_some() {
                    tracing::warn!(sink = %ctx.name, to = %ctx.description, "forwarding again");
                }
                retry = FIRST_RETRY;
                ctx.gather_at_head(read, rows[n - 1].time_stamp).await;
            }
            Some(reason) => {
                ctx.failed(&mut failing, reason);
                if !ctx.back_off(&mut retry).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
