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
mod work;

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{
    ForwardFormat, ForwardSection, ForwardStart, ForwardTransport, SyslogSection, SyslogTransport,
};
use crate::evidence::checkpoint_out::syslog_target;
use crate::evidence::sink::syslog::{self, Header, SyslogSender, UdpSender};
use crate::evidence::sink::{SinkError, Transport, Undelivered};
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

/// Most rows read and handed to a sink at once.
const PAGE: i64 = 1000;
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

/// How a sink reaches its receiver.
enum Output {
    Syslog(SyslogSender),
    Udp(UdpSender),
    File(file::FileSender),
}

/// A checked `[[forward]]` entry, ready to start.
pub struct Plan {
    name: String,
    format: ForwardFormat,
    start: ForwardStart,
    sd_id: String,
    output: Output,
}

impl Plan {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it delivers (`syslog tls://logs:6514`, `file /var/log/auditseal/events.jsonl`).
    pub fn describe(&self) -> String {
        match &self.output {
            Output::Syslog(s) => s.describe(),
            Output::Udp(s) => s.describe(),
            Output::File(s) => s.describe(),
        }
    }
}

/// Checks every `[[forward]]` entry and prepares its sender (TLS files are read now); connects
/// to nothing. `data_dir` resolves paths that are still relative.
pub fn plan(sections: &[ForwardSection], data_dir: &Path) -> Result<Vec<Plan>, ForwardError> {
    let mut names = std::collections::BTreeSet::new();
    sections
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let p = plan_one(i, s, data_dir)?;
            if !names.insert(p.name.clone()) {
                return Err(ForwardError::Config(format!(
                    "forward[{i}]: the name {:?} is taken by an earlier [[forward]]: each sink \
                     needs its own (its position in the database is kept under it)",
                    p.name
                )));
            }
            Ok(p)
        })
        .collect()
}

fn plan_one(i: usize, s: &ForwardSection, data_dir: &Path) -> Result<Plan, ForwardError> {
    let key = format!("forward[{i}]");
    let bad = |m: String| ForwardError::Config(format!("{key}: {m}"));
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 64
        && s.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !name_ok {
        return Err(bad(format!(
            "name {:?}: 1 to 64 of A-Z a-z 0-9 . _ -",
            s.name
        )));
    }
    let sd_id = s
        .sd_id
        .clone()
        .unwrap_or_else(|| message::DEFAULT_SD_ID.into());
    let output = match (&s.address, &s.file) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(bad(
                "give either address (a syslog receiver) or file, not both or neither".into(),
            ));
        }
        (None, Some(path)) => {
            let syslog_only = [
                ("transport", s.transport.is_some()),
                ("ca_file", s.ca_file.is_some()),
                ("cert_file", s.cert_file.is_some()),
                ("key_file", s.key_file.is_some()),
                ("server_name", s.server_name.is_some()),
                ("app_name", s.app_name.is_some()),
                ("sd_id", s.sd_id.is_some()),
            ];
            if let Some((k, _)) = syslog_only.iter().find(|(_, set)| *set) {
                return Err(bad(format!(
                    "{k} is a syslog setting; a file sink (file = ...) does not use it"
                )));
            }
            Output::File(file::FileSender::new(data_dir.join(path)))
        }
        (Some(address), None) => {
            if !valid_sd_id(&sd_id) {
                return Err(bad(format!(
                    "sd_id {sd_id:?}: name@number, e.g. auditseal@32473 (printable ASCII, no \
                     space, =, ] or \", at most 32 characters)"
                )));
            }
            match s.transport.unwrap_or(ForwardTransport::Tcp) {
                ForwardTransport::Udp => {
                    if s.ca_file.is_some() || s.cert_file.is_some() || s.key_file.is_some() {
                        return Err(bad(
                            "ca_file, cert_file and key_file need transport = \"tls\"".into(),
                        ));
                    }
                    let app_name = s.app_name.as_deref().unwrap_or("auditseal");
                    if !syslog::valid_app_name(app_name) {
                        return Err(bad(format!(
                            "app_name {app_name:?}: 1 to 48 printable ASCII characters, no spaces"
                        )));
                    }
                    Output::Udp(
                        UdpSender::new(address, Header::this_process(app_name))
                            .map_err(|e| bad(e.to_string()))?,
                    )
                }
                t => {
                    let section = SyslogSection {
                        address: address.clone(),
                        transport: if t == ForwardTransport::Tls {
                            SyslogTransport::Tls
                        } else {
                            SyslogTransport::Tcp
                        },
                        ca_file: s.ca_file.clone(),
                        cert_file: s.cert_file.clone(),
                        key_file: s.key_file.clone(),
                        server_name: s.server_name.clone(),
                        app_name: s.app_name.clone(),
                    };
                    Output::Syslog(SyslogSender::new(syslog_target(&section, data_dir, &key)?)?)
                }
            }
        }
    };
    Ok(Plan {
        name: s.name.clone(),
        format: s.format.unwrap_or_default(),
        start: s.start.unwrap_or_default(),
        sd_id,
        output,
    })
}

/// An SD-ID of the form `name@number` (RFC 5424 section 6.3.2).
fn valid_sd_id(s: &str) -> bool {
    let Some((name, pen)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 32
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"' | '@'))
        && !pen.is_empty()
        && pen
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
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

/// How long a page read for one sink is handed to the others that ask for the same rows.
const PAGE_REUSE: Duration = Duration::from_millis(500);

/// A page of rows as read for the sinks, with each row's text in the formats sinks asked for,
/// made once for all of them.
struct Page {
    /// The bytes its rows take as stored.
    bytes: usize,
    /// When it was read.
    at: tokio::time::Instant,
    rows: Vec<AuditRecord>,
    json: OnceLock<Vec<String>>,
    log4j: OnceLock<Vec<String>>,
}

impl Page {
    fn new(rows: Vec<AuditRecord>) -> Page {
        Page {
            bytes: rows.iter().map(AuditRecord::stored_bytes).sum(),
            at: tokio::time::Instant::now(),
            rows,
            json: OnceLock::new(),
            log4j: OnceLock::new(),
        }
    }

    /// Where the row numbered `n` is (rows are in (sequenceNumber, pk) order).
    fn find(&self, n: i64) -> Option<usize> {
        let i = self.rows.partition_point(|r| r.sequence_number < n);
        self.rows
            .get(i)
            .is_some_and(|r| r.sequence_number == n)
            .then_some(i)
    }

    /// Each row's text in `format` (`message::text`); made at the first call, on a forwarding
    /// worker.
    fn texts(&self, format: ForwardFormat) -> &[String] {
        let cell = match format {
            ForwardFormat::Json => &self.json,
            ForwardFormat::Log4j => &self.log4j,
        };
        cell.get_or_init(|| self.rows.iter().map(|r| message::text(format, r)).collect())
    }
}

/// Most bytes of rows the recent pages keep (each page is within `READ_BUDGET_BYTES` already):
/// huge rows must not make the cache hold many pages of them.
const PAGES_MAX_BYTES: usize = 2 * crate::store::READ_BUDGET_BYTES as usize;

/// Most bytes of rows the pages handed over at commit keep: about a second of the batched
/// device's fastest ingestion; a sink further behind reads from the database.
const COMMITTED_MAX_BYTES: usize = 4 * crate::store::READ_BUDGET_BYTES as usize;

/// Consecutive rows for a sink: parts of pages, in sequence order.
type Rows = Vec<(Arc<Page>, Range<usize>)>;

/// The node's rows as the sinks read them, shared. The batched device hands each commit's rows
/// over once they are committed (`CommitListener`); rows that are not among those (the
/// sequential device's, rows of another process, a sink behind by more than
/// `COMMITTED_MAX_BYTES`) are read back from the database, and sinks at the same position get
/// one read between them. Either way a sink sees only committed rows.
struct Pages {
    store: SharedStore,
    node: String,
    /// Pages read from the database recently, for reuse.
    recent: tokio::sync::Mutex<std::collections::VecDeque<Arc<Page>>>,
    /// Pages handed over at commit, oldest first.
    committed: std::sync::Mutex<std::collections::VecDeque<Arc<Page>>>,
}

impl crate::device::CommitListener for Pages {
    fn committed(&self, rows: &[AuditRecord]) {
        if rows.first().is_none_or(|r| r.node_id != self.node) {
            return;
        }
        let page = Arc::new(Page::new(rows.to_vec()));
        let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        committed.push_back(page);
        let mut bytes: usize = committed.iter().map(|p| p.bytes).sum();
        while committed.len() > 1 && bytes > COMMITTED_MAX_BYTES {
            bytes -= committed.pop_front().map_or(0, |p| p.bytes);
        }
    }
}

impl Pages {
    /// Up to `PAGE` rows from `from` on (see `Store::read_node`): from the pages handed over at
    /// commit when they hold `from` (with the consecutive pages after it), else from a page
    /// read for another sink in the last `PAGE_REUSE` that holds `from`, else from the
    /// database.
    async fn read(&self, from: i64) -> Result<Rows, StoreError> {
        if let Some(rows) = self.handed_over(from) {
            return Ok(rows);
        }
        // Held across the read: a sink asking for the same rows waits for them instead of
        // reading them again.
        let mut recent = self.recent.lock().await;
        recent.retain(|p| p.at.elapsed() < PAGE_REUSE);
        for page in recent.iter().rev() {
            if let Some(i) = page.find(from) {
                return Ok(vec![(page.clone(), i..page.rows.len())]);
            }
        }
        let page = Arc::new(Page::new(
            self.store.read_node(&self.node, from, None, PAGE).await?,
        ));
        // An empty page is not kept: the rows may be there at the next look.
        if !page.rows.is_empty() {
            recent.push_back(page.clone());
            while recent.len() > 1
                && recent.iter().map(|p| p.bytes).sum::<usize>() > PAGES_MAX_BYTES
            {
                recent.pop_front();
            }
        }
        let all = 0..page.rows.len();
        Ok(vec![(page, all)])
    }

    /// The handed-over rows from `from` on, up to `PAGE` of them, if a page holds `from`.
    fn handed_over(&self, from: i64) -> Option<Rows> {
        let committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        let at = committed.iter().position(|p| p.find(from).is_some())?;
        let mut rows: Rows = Vec::new();
        let (mut next, mut count) = (from, 0);
        for page in committed.iter().skip(at) {
            let Some(i) = page.find(next) else { break };
            let end = page.rows.len().min(i + (PAGE as usize - count));
            rows.push((page.clone(), i..end));
            count += end - i;
            next = page.rows[end - 1].sequence_number + 1;
            if count >= PAGE as usize {
                break;
            }
        }
        Some(rows)
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
        let pages = Arc::new(Pages {
            store: store.clone(),
            node: node.to_string(),
            recent: Default::default(),
            committed: Default::default(),
        });
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

/// A started sink: where it delivers and how it writes an event.
struct Sink {
    output: Output,
    format: ForwardFormat,
    sd_id: String,
}

impl Sink {
    /// Delivers `rows`: all of them, or (UDP) the first `delivered`. The encoding, and a file's
    /// writing, run on the forwarding workers (`work`).
    async fn deliver(self: &Arc<Self>, rows: &Rows) -> Result<(), Undelivered> {
        let (this, rows) = (self.clone(), rows.clone());
        let on_worker = |e: String| Undelivered::none(e);
        match &self.output {
            Output::Syslog(sender) => {
                let bytes = work::run(move || {
                    let mut bytes = Vec::new();
                    this.each_message(&rows, |line| syslog::frame_into(&mut bytes, line));
                    bytes
                })
                .await
                .map_err(on_worker)?;
                sender.send(&bytes).await.map_err(Undelivered::none)
            }
            Output::Udp(sender) => {
                let lines = work::run(move || {
                    let mut lines = Vec::new();
                    this.each_message(&rows, |line| lines.push(line.to_string()));
                    lines
                })
                .await
                .map_err(on_worker)?;
                sender.send_lines(&lines).await
            }
            Output::File(file) => {
                let file = file.clone();
                work::run(move || {
                    let mut bytes = Vec::new();
                    for (page, range) in &rows {
                        for t in &page.texts(this.format)[range.clone()] {
                            bytes.extend_from_slice(t.as_bytes());
                            bytes.push(b'\n');
                        }
                    }
                    file.append(&bytes)
                })
                .await
                .map_err(on_worker)?
                .map_err(Undelivered::none)
            }
        }
    }

    /// Each row's RFC 5424 message in turn (`message::write_syslog`), for the syslog outputs.
    fn each_message(&self, rows: &Rows, mut each: impl FnMut(&str)) {
        let header = match &self.output {
            Output::Syslog(s) => s.header(),
            Output::Udp(s) => s.header(),
            Output::File(_) => return,
        };
        let mut line = String::new();
        for (page, range) in rows {
            let texts = &page.texts(self.format)[range.clone()];
            for (r, text) in page.rows[range.clone()].iter().zip(texts) {
                line.clear();
                message::write_syslog(&mut line, header, &self.sd_id, r, text);
                each(&line);
            }
        }
    }
}

/// The first `n` rows of `rows`.
fn first_rows(rows: &Rows, mut n: usize) -> Rows {
    let mut out = Vec::new();
    for (page, range) in rows {
        if n == 0 {
            break;
        }
        let take = range.len().min(n);
        out.push((page.clone(), range.start..range.start + take));
        n -= take;
    }
    out
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
                if ctx.stopping() {
                    return;
                }
                ctx.wait(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
                continue;
            }
        };
        let rows: Vec<&AuditRecord> = parts
            .iter()
            .flat_map(|(page, range)| page.rows[range.clone()].iter())
            .collect();
        let Some(first) = rows.first().map(|r| r.sequence_number) else {
            ctx.stats.oldest_waiting_ms.store(0, Ordering::Relaxed);
            ctx.stats
                .last_success_ms
                .store(crate::format::time::now_millis(), Ordering::Relaxed);
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
        // In order and without repeats: the rows up to the first number out of sequence (the
        // next read starts there).
        let n = rows
            .iter()
            .zip(first..)
            .take_while(|(r, s)| r.sequence_number == *s)
            .count();
        let rows = &rows[..n];
        let (delivered, error) = match sink.deliver(&first_rows(&parts, n)).await {
            Ok(()) => (n, None),
            Err(u) => (u.delivered.min(n), Some(u.reason)),
        };
        if delivered > 0 {
            position = rows[delivered - 1].sequence_number;
            ctx.save(position).await;
            let s = &ctx.stats;
            s.position.store(position, Ordering::Relaxed);
            s.forwarded.fetch_add(delivered as u64, Ordering::Relaxed);
            s.last_success_ms
                .store(crate::format::time::now_millis(), Ordering::Relaxed);
            if let Some(next) = rows.get(delivered) {
                s.oldest_waiting_ms
                    .store(next.time_stamp.max(1), Ordering::Relaxed);
            }
        }
        match error {
            None => {
                if failing.take().is_some() {
                    tracing::warn!(sink = %ctx.name, to = %ctx.description, "forwarding again");
                }
                retry = FIRST_RETRY;
                // At the head of the log (the rows just sent are less than a second old): let a
                // few more rows come before the next read, so a busy node is forwarded in
                // fewer, larger deliveries (each one a read, a connection or a file sync).
                // Behind, the next read follows at once.
                let newest = rows[n - 1].time_stamp;
                if crate::format::time::now_millis() - newest < 1000 {
                    ctx.wait(GATHER).await;
                }
            }
            Some(reason) => {
                ctx.failed(&mut failing, reason);
                if ctx.stopping() {
                    return;
                }
                ctx.wait(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests;
