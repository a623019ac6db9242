//! The server's Prometheus metrics: the one registry, what feeds it, and its text
//! (docs/OPERATIONS.md "Metrics and health" lists every metric). Counters and histograms are
//! updated where things happen; gauges whose source already exists elsewhere (the device, the
//! database outage, the followers, the authentication counters, the newest checkpoints) are
//! read when `/metrics` is asked for.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use auditseal_core::checkpointer::CheckpointStats;
use auditseal_core::config::DeviceKind;
use auditseal_core::device::{BatchObserver, LogDevice};
use auditseal_core::forward::ForwardStats;
use auditseal_core::verify::LogReport;

use crate::state::AppState;

/// The OpenMetrics content type, served when the scraper asks for it.
pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format (what `promtool check metrics` reads), served otherwise.
pub const TEXT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Ingested {
    device: &'static str,
    /// `stored` (new rows) or `replayed` (a retry answered with the row stored before).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refused {
    device: &'static str,
    /// The error code of the answer (docs/API.md "Errors"), e.g. `queue_full`.
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabel {
    device: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerifyLabels {
    outcome: &'static str,
    /// `api` (POST /api/v1/verify), `incremental` or `full` (continuous verification).
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabel {
    receiver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenCallLabels {
    keyid: String,
    function: String,
    result: String,
}

/// Most distinct `source` labels of `hsm_findings_total`; the findings of further sources are
/// counted under `OTHER_SOURCES`.
const MAX_FINDING_SOURCES: usize = 100;
const OTHER_SOURCES: &str = "(other sources)";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabels {
    /// The event's authToken: `<auditseal-ship source>@<host>`.
    source: String,
    /// The finding's eventType, one of [`HSM_FINDINGS`].
    kind: &'static str,
}

/// The event types auditseal-ship writes for what it found wrong in an HSM's own log
/// (docs/HSM-LOGS.md "Findings"); counted by source and kind when stored.
pub const HSM_FINDINGS: [&str; 4] = [
    "HSM_CHAIN_BREAK",
    "HSM_UNREADABLE_ENTRY",
    "HSM_COUNTER_GAP",
    "HSM_COUNTER_RESET",
];

/// The finding an event of `service` and `event_type` is, if it is one.
pub fn hsm_finding(service: &str, event_type: &str) -> Option<&'static str> {
    (service == "HSM")
        .then(|| HSM_FINDINGS.iter().find(|k| **k == event_type).copied())
        .flatten()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of the server, and its registry.
pub struct Metrics {
    registry: Registry,
    device: &'static str,
    ingested: Family<Ingested, Counter>,
    hsm_findings: Family<FindingLabels, Counter>,
    /// The `source` labels in use: at most `MAX_FINDING_SOURCES` (the authToken comes from the
    /// client, which must not be able to grow the metrics without bound).
    finding_sources: std::sync::Mutex<std::collections::HashSet<String>>,
    refused: Family<Refused, Counter>,
    ingest_seconds: Family<DeviceLabel, Histogram, fn() -> Histogram>,
    queue_events: Gauge,
    queue_capacity: Gauge,
    database_up: Gauge,
    lock_held: Gauge,
    checkpoint_age: Family<NodeLabel, FloatGauge>,
    checkpoint_failures: Counter,
    checkpoint_interval: Family<NodeLabel, Gauge>,
    checkpoint_success: Family<NodeLabel, Gauge>,
    checkpoint_waiting: Family<ReceiverLabel, Gauge>,
    /// The checkpoint writer's own counts, its node and interval, set once it has started.
    checkpoint_source: OnceLock<(Arc<CheckpointStats>, String, u64)>,
    forward_events: Family<SinkLabel, Counter>,
    forward_failures: Family<SinkLabel, Counter>,
    forward_lag: Family<SinkLabel, FloatGauge>,
    forward_position: Family<SinkLabel, Gauge>,
    forward_success: Family<SinkLabel, Gauge>,
    /// Each forwarding sink's own counts, set once forwarding has started.
    forward_source: OnceLock<Vec<(String, Arc<ForwardStats>)>>,
    token_calls: Family<TokenCallLabels, Counter>,
    signing_key_ready: Gauge,
    log_consistent: Gauge,
    rows_failed_on_read: Family<RouteLabel, Counter>,
    tls_not_after: Family<ListenerLabel, Gauge>,
    verify_runs: Family<VerifyLabels, Counter>,
    verify_rows: Counter,
    verify_errors: Counter,
    auth_failures: Family<ReasonLabel, Counter>,
    forbidden: Counter,
    followers: Gauge,
    followers_max: Gauge,
    /// The read database (`database_read_url`), if any.
    reads: crate::reads::ReadMetrics,
    /// Why the signing key refused the last event this server tried to protect (cleared by the
    /// next event stored): what `/readyz` knows of the key without signing.
    key_refused: Mutex<Option<String>>,
    /// Held while the scrape-time values are copied in and the text is written, so two scrapes
    /// do not interleave.
    scrape: Mutex<()>,
}

/// The batched device's batches, told by its writer tasks.
struct Batches {
    events: Histogram,
    seal_seconds: Histogram,
    commit_seconds: Histogram,
}

impl BatchObserver for Batches {
    fn sealed(&self, rows: usize, took: Duration) {
        self.events.observe(rows as f64);
        self.seal_seconds.observe(took.as_secs_f64());
    }

    fn committed(&self, _rows: usize, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
    }
}

fn device_name(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Sequential => "sequential",
        DeviceKind::Batched => "batched",
    }
}

impl Metrics {
    /// The registry for a server whose log device is `device` (of `kind`); hooks the batched
    /// device's batches.
    pub fn new(kind: DeviceKind, device: &dyn LogDevice, max_followers: usize) -> Self {
        let mut r = Registry::with_prefix("auditseal");
        let m = Metrics {
            registry: Registry::default(),
            device: device_name(kind),
            ingested: Family::default(),
            hsm_findings: Family::default(),
            finding_sources: Default::default(),
            refused: Family::default(),
            ingest_seconds: Family::new_with_constructor(latency_histogram),
            queue_events: Gauge::default(),
            queue_capacity: Gauge::default(),
            database_up: Gauge::default(),
            lock_held: Gauge::default(),
            checkpoint_age: Family::default(),
            checkpoint_failures: Counter::default(),
            checkpoint_interval: Family::default(),
            checkpoint_success: Family::default(),
            checkpoint_waiting: Family::default(),
            checkpoint_source: OnceLock::new(),
            forward_events: Family::default(),
            forward_failures: Family::default(),
            forward_lag: Family::default(),
            forward_position: Family::default(),
            forward_success: Family::default(),
            forward_source: OnceLock::new(),
            token_calls: Family::default(),
            signing_key_ready: Gauge::default(),
            log_consistent: Gauge::default(),
            rows_failed_on_read: Family::default(),
            tls_not_after: Family::default(),
            verify_runs: Family::default(),
            verify_rows: Counter::default(),
            verify_errors: Counter::default(),
            auth_failures: Family::default(),
            forbidden: Counter::default(),
            followers: Gauge::default(),
            followers_max: Gauge::default(),
            reads: Default::default(),
            key_refused: Mutex::new(None),
            scrape: Mutex::new(()),
        };
        m.register_ingest(&mut r, device);
        m.register_health(&mut r);
        m.register_checkpoints(&mut r);
        m.register_forwarding(&mut r);
        m.register_verification(&mut r);
        m.register_access(&mut r, max_followers);
        m.reads.register(&mut r);
        m.zero_watched_series();
        Metrics { registry: r, ..m }
    }

    /// Ingestion, and the batched device's queue and batches (it keeps the observer).
    fn register_ingest(&self, r: &mut Registry, device: &dyn LogDevice) {
        r.register(
            "events_ingested",
            "Events acknowledged to their submitter (POST /api/v1/events and :batch), by device \
             and result: stored (a new row) or replayed (a retry answered with its stored row)",
            self.ingested.clone(),
        );
        r.register(
            "hsm_findings",
            "HSM log findings stored (auditseal-ship's HSM_CHAIN_BREAK, HSM_UNREADABLE_ENTRY, \
             HSM_COUNTER_GAP, HSM_COUNTER_RESET events), by source (the event's authToken, \
             source@host) and kind",
            self.hsm_findings.clone(),
        );
        r.register(
            "ingest_refused",
            "Ingest requests answered with an error, by device and reason (the error code)",
            self.refused.clone(),
        );
        r.register(
            "ingest_duration_seconds",
            "Time from an ingest request reaching its handler to its acknowledgement (stored \
             requests only)",
            self.ingest_seconds.clone(),
        );
        // Only a device with a queue (the batched one) has these; it keeps the observer.
        if let Some(q) = device.queue() {
            r.register(
                "ingest_queue_events",
                "Events waiting in the log device's queue (queued or being written)",
                self.queue_events.clone(),
            );
            r.register(
                "ingest_queue_capacity",
                "Most events the log device's queue holds (server.queue_capacity)",
                self.queue_capacity.clone(),
            );
            self.queue_capacity.set(q.capacity as i64);
            let b = Arc::new(Batches {
                events: Histogram::new(exponential_buckets(1.0, 2.0, 15)),
                seal_seconds: latency_histogram(),
                commit_seconds: latency_histogram(),
            });
            r.register(
                "batch_events",
                "Events per batch the batched device sealed",
                b.events.clone(),
            );
            r.register(
                "batch_seal_duration_seconds",
                "Time to number, hash and sign one batch",
                b.seal_seconds.clone(),
            );
            r.register(
                "batch_commit_duration_seconds",
                "Time to commit one batch (rows and statement, one transaction)",
                b.commit_seconds.clone(),
            );
            device.observe_batches(b);
        }
    }

    /// What /readyz checks: database, node lock, signing key and its calls, log consistency, rows failing on read, the TLS certificate.
    fn register_health(&self, r: &mut Registry) {
        r.register(
            "database_up",
            "1 when the last call to the database succeeded, 0 during an outage",
            self.database_up.clone(),
        );
        r.register(
            "node_lock_held",
            "1 when this process holds its node's writer lock",
            self.lock_held.clone(),
        );
        r.register(
            "token_calls",
            "Calls the signing key's PKCS#11 token answered, by keyid, function (C_Login, \
             C_Sign, ...) and result (CKR_OK or the return value, e.g. CKR_PIN_INCORRECT)",
            self.token_calls.clone(),
        );
        r.register(
            "signing_key_ready",
            "0 when the last event this server tried to protect was refused because the signing \
             key could not sign; 1 otherwise",
            self.signing_key_ready.clone(),
        );
        r.register(
            "log_consistent",
            "0 when the log device found the log inconsistent and refuses events (docs/OPERATIONS.md \
             \"Log inconsistent\"); 1 otherwise",
            self.log_consistent.clone(),
        );
        r.register(
            "rows_failed_on_read",
            "Rows that failed verification as the API read them, by route (events: searches and \
             single rows; export)",
            self.rows_failed_on_read.clone(),
        );
        r.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate a listener serves expires (its notAfter), in seconds since the \
             epoch",
            self.tls_not_after.clone(),
        );
    }

    /// The checkpoint writer and its receivers.
    fn register_checkpoints(&self, r: &mut Registry) {
        r.register(
            "checkpoint_age_seconds",
            "Seconds since the newest checkpoint of each node in the database was made",
            self.checkpoint_age.clone(),
        );
        r.register(
            "checkpoint_write_failures",
            "Checkpoints this server's checkpoint writer could not write (each an ALERT in the log)",
            self.checkpoint_failures.clone(),
        );
        r.register(
            "checkpoint_interval_seconds",
            "checkpoint.interval_secs of the checkpoint writer of this server's node (absent \
             when checkpoints are off)",
            self.checkpoint_interval.clone(),
        );
        r.register(
            "checkpoint_last_success_timestamp_seconds",
            "When this server's checkpoint writer last did its job (started, wrote a checkpoint, \
             or found no new rows), in seconds since the epoch",
            self.checkpoint_success.clone(),
        );
        r.register(
            "checkpoint_receiver_waiting",
            "Checkpoints waiting in the backlog of each receiver ([checkpoint.syslog], \
             [checkpoint.witness]) for delivery",
            self.checkpoint_waiting.clone(),
        );
    }

    /// Event forwarding (`[[forward]]`), per sink.
    fn register_forwarding(&self, r: &mut Registry) {
        r.register(
            "forward_events",
            "Events each forwarding sink delivered since the server started",
            self.forward_events.clone(),
        );
        r.register(
            "forward_failures",
            "Failed attempts of each forwarding sink to read or deliver events (a failure \
             episode is one ALERT in the log)",
            self.forward_failures.clone(),
        );
        r.register(
            "forward_lag_seconds",
            "How long the oldest stored event a forwarding sink has not yet delivered has \
             waited (0: it delivered every event it found)",
            self.forward_lag.clone(),
        );
        r.register(
            "forward_position",
            "The sequence number of the last event each forwarding sink delivered",
            self.forward_position.clone(),
        );
        r.register(
            "forward_last_success_timestamp_seconds",
            "When each forwarding sink last delivered events or found none waiting, in seconds \
             since the epoch",
            self.forward_success.clone(),
        );
    }

    /// Verification runs, their rows and findings.
    fn register_verification(&self, r: &mut Registry) {
        r.register(
            "verify_runs",
            "Verifications run, by outcome (success, failure: something did not verify, error: \
             the run could not complete) and trigger (api: POST /api/v1/verify; incremental, \
             full: continuous verification)",
            self.verify_runs.clone(),
        );
        r.register(
            "verify_rows",
            "Rows read by completed verifications",
            self.verify_rows.clone(),
        );
        r.register(
            "verify_errors",
            "Errors (findings) reported by completed verifications",
            self.verify_errors.clone(),
        );
    }

    /// Authentication, live followers and the build.
    fn register_access(&self, r: &mut Registry, max_followers: usize) {
        r.register(
            "auth_failures",
            "Requests refused with 401, by reason",
            self.auth_failures.clone(),
        );
        r.register(
            "auth_forbidden",
            "Requests refused with 403: the caller's role does not allow them",
            self.forbidden.clone(),
        );
        r.register(
            "followers",
            "Live followers connected (GET /api/v1/events/stream)",
            self.followers.clone(),
        );
        r.register(
            "followers_max",
            "Most live followers at once (server.max_followers)",
            self.followers_max.clone(),
        );
        self.followers_max.set(max_followers as i64);
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("AUDITSEAL_COMMIT"),
            })
            .set(1);
        // A gauge, not OpenMetrics' info type, which the classic text format does not have.
        r.register(
            "build_info",
            "Always 1; the labels name the version and the commit this server was built from",
            build,
        );
    }

    /// Series an alert watches with increase() exist from the start at 0: a series that
    /// appears with its first count would show no increase.
    fn zero_watched_series(&self) {
        for outcome in ["success", "failure", "error"] {
            for trigger in ["api", "incremental", "full"] {
                let _ = self
                    .verify_runs
                    .get_or_create(&VerifyLabels { outcome, trigger });
            }
        }
        for route in ["events", "export"] {
            let _ = self
                .rows_failed_on_read
                .get_or_create(&RouteLabel { route });
        }
    }

    /// The checkpoint writer of `node`, writing every `interval_secs`, once it has started.
    pub fn checkpoint_writer(&self, stats: Arc<CheckpointStats>, node: &str, interval_secs: u64) {
        let _ = self
            .checkpoint_source
            .set((stats, node.to_owned(), interval_secs));
    }

    /// The forwarding sinks, once they have started.
    pub fn forwarding(&self, sinks: Vec<(String, Arc<ForwardStats>)>) {
        let _ = self.forward_source.set(sinks);
    }

    /// The main listener serves a certificate that expires at `not_after` (seconds since the
    /// epoch).
    pub fn tls_certificate(&self, not_after: i64) {
        self.tls_not_after
            .get_or_create(&ListenerLabel { listener: "main" })
            .set(not_after);
    }

    /// A row failed verification as `route` read it.
    pub fn row_failed_on_read(&self, route: &'static str) {
        self.rows_failed_on_read
            .get_or_create(&RouteLabel { route })
            .inc();
    }

    /// An ingest request's outcome: its acknowledged rows (`replayed` or not), or its error
    /// code; `started` when its handler began.
    pub fn ingest(&self, outcome: Result<&[bool], &'static str>, started: Instant) {
        let device = self.device;
        match outcome {
            Ok(replayed) => {
                let again = replayed.iter().filter(|r| **r).count() as u64;
                let stored = replayed.len() as u64 - again;
                for (result, n) in [("stored", stored), ("replayed", again)] {
                    if n > 0 {
                        self.ingested
                            .get_or_create(&Ingested { device, result })
                            .inc_by(n);
                    }
                }
                self.ingest_seconds
                    .get_or_create(&DeviceLabel { device })
                    .observe(started.elapsed().as_secs_f64());
                *self.key_refused.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            Err(reason) => {
                self.refused
                    .get_or_create(&Refused { device, reason })
                    .inc();
                if reason == "token_unavailable" {
                    *self.key_refused.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some("the signing key refused the last event to protect".into());
                }
            }
        }
    }

    /// Counts the findings among stored events: `findings` names each by its index in
    /// `replayed` (a replayed event was counted when it was stored).
    pub fn hsm_findings(&self, findings: &[(usize, String, &'static str)], replayed: &[bool]) {
        for (i, source, kind) in findings {
            if replayed.get(*i) == Some(&false) {
                let source = {
                    let mut known = self
                        .finding_sources
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if known.contains(source) || known.len() < MAX_FINDING_SOURCES {
                        known.insert(source.clone());
                        source.clone()
                    } else {
                        OTHER_SOURCES.to_string()
                    }
                };
                self.hsm_findings
                    .get_or_create(&FindingLabels { source, kind })
                    .inc();
            }
        }
    }

    /// Why the signing key cannot be counted on, if the last event it was asked to protect
    /// failed there.
    pub fn key_refused(&self) -> Option<String> {
        self.key_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A verification's outcome: its report, or None when it could not complete; `trigger`
    /// says who ran it (`api`, `incremental`, `full`).
    pub fn verified(&self, trigger: &'static str, report: Option<&LogReport>) {
        let outcome = match report {
            None => "error",
            Some(r) => {
                self.verify_rows.inc_by(r.rows);
                self.verify_errors.inc_by(r.errors as u64);
                if r.errors == 0 { "success" } else { "failure" }
            }
        };
        self.verify_runs
            .get_or_create(&VerifyLabels { outcome, trigger })
            .inc();
    }

    /// The metrics as text, OpenMetrics when `openmetrics`, else the classic Prometheus text
    /// format. Reads the newest checkpoints from the database (one query); the rest is memory.
    pub async fn render(&self, state: &AppState, openmetrics: bool) -> String {
        let checkpoints = state.store.latest_checkpoints().await;
        match &checkpoints {
            Ok(_) => crate::outage::DATABASE.answered(),
            Err(e) => crate::outage::DATABASE.failed(e),
        }
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.checkpoint_ages(checkpoints.ok().as_deref().unwrap_or_default());
        self.database_up
            .set(i64::from(!crate::outage::DATABASE.is_down()));
        self.lock_held.set(i64::from(state.device.lock_held()));
        if let Some(q) = state.device.queue() {
            self.queue_events.set(q.waiting as i64);
        }
        self.checkpoint_writer_now();
        self.forwarding_now();
        if let Some(token) = &state.signer {
            self.token_calls_of(token.as_ref());
        }
        self.signing_key_ready
            .set(i64::from(self.key_refused().is_none()));
        self.log_consistent
            .set(i64::from(state.device.inconsistent().is_none()));
        for (reason, n) in state.auth.failures_by_reason() {
            catch_up(
                &self.auth_failures.get_or_create(&ReasonLabel { reason }),
                n,
            );
        }
        catch_up(&self.forbidden, state.auth.forbidden());
        let live = state
            .max_followers
            .saturating_sub(state.followers.available_permits());
        self.followers.set(live as i64);
        self.reads.refresh(state.read_database.as_deref());
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        if openmetrics {
            text
        } else {
            classic_text(&text)
        }
    }

    /// The age of each node's newest checkpoint. A database that does not answer leaves no
    /// stale ages behind (none are given): database_up says why.
    fn checkpoint_ages(&self, checkpoints: &[auditseal_core::checkpoint::Checkpoint]) {
        let now = auditseal_core::time::now_millis();
        self.checkpoint_age.clear();
        // Several checkpoints may share a node's highest sequence number: the newest counts.
        let mut newest = std::collections::BTreeMap::new();
        for c in checkpoints {
            let t = newest.entry(c.node_id.clone()).or_insert(c.time_stamp);
            *t = (*t).max(c.time_stamp);
        }
        for (node, t) in newest {
            let age = (now - t).max(0) as f64 / 1000.0;
            self.checkpoint_age
                .get_or_create(&NodeLabel { node })
                .set(age);
        }
    }

    /// What this server's checkpoint writer counts, once it has started.
    fn checkpoint_writer_now(&self) {
        if let Some((stats, node, interval)) = self.checkpoint_source.get() {
            catch_up(
                &self.checkpoint_failures,
                stats.failures.load(Ordering::Relaxed),
            );
            let node = NodeLabel { node: node.clone() };
            self.checkpoint_interval
                .get_or_create(&node)
                .set(*interval as i64);
            let success = stats.last_success_millis.load(Ordering::Relaxed) / 1000;
            self.checkpoint_success.get_or_create(&node).set(success);
            for (receiver, waiting) in &stats.receivers {
                self.checkpoint_waiting
                    .get_or_create(&ReceiverLabel {
                        receiver: receiver.clone(),
                    })
                    .set(waiting.waiting() as i64);
            }
        }
    }

    /// What the forwarding sinks count.
    fn forwarding_now(&self) {
        let now = auditseal_core::time::now_millis();
        for (sink, stats) in self.forward_source.get().into_iter().flatten() {
            let label = SinkLabel { sink: sink.clone() };
            catch_up(
                &self.forward_events.get_or_create(&label),
                stats.forwarded.load(Ordering::Relaxed),
            );
            catch_up(
                &self.forward_failures.get_or_create(&label),
                stats.failures.load(Ordering::Relaxed),
            );
            self.forward_lag
                .get_or_create(&label)
                .set(stats.lag_seconds(now));
            self.forward_position
                .get_or_create(&label)
                .set(stats.position.load(Ordering::Relaxed));
            self.forward_success
                .get_or_create(&label)
                .set(stats.last_success_ms.load(Ordering::Relaxed) / 1000);
        }
    }

    /// The calls the signing key's token made, by function and result.
    fn token_calls_of(&self, token: &dyn auditseal_core::token::CryptoToken) {
        let keyid = token.keyid().to_string();
        let calls = token.calls();
        // A PKCS#11 token (software keys make no calls): its PIN refusals exist at 0 from the
        // first scrape, since alerts watch them with increase() (`zero_watched_series`).
        if !calls.is_empty() {
            for result in ["CKR_PIN_INCORRECT", "CKR_PIN_LOCKED"] {
                let _ = self.token_calls.get_or_create(&TokenCallLabels {
                    keyid: keyid.clone(),
                    function: "C_Login".into(),
                    result: result.into(),
                });
            }
        }
        for call in calls {
            let labels = TokenCallLabels {
                keyid: keyid.clone(),
                function: call.function,
                result: call.result,
            };
            catch_up(&self.token_calls.get_or_create(&labels), call.count);
        }
    }
}

/// Brings a counter up to a count kept elsewhere (which only grows).
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// OpenMetrics text as the classic Prometheus text format: a counter family is named with its
/// `_total` suffix there (as its samples are), and there is no `# EOF`. Nothing else this
/// registry writes differs (no info, unit or `_created` lines).
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsm_findings_are_the_four_kinds_of_service_hsm() {
        assert_eq!(
            hsm_finding("HSM", "HSM_CHAIN_BREAK"),
            Some("HSM_CHAIN_BREAK")
        );
        assert_eq!(
            hsm_finding("HSM", "HSM_COUNTER_RESET"),
            Some("HSM_COUNTER_RESET")
        );
        assert_eq!(hsm_finding("HSM", "C_Login"), None);
        assert_eq!(hsm_finding("SIGNSERVER", "HSM_CHAIN_BREAK"), None);
    }

    #[test]
    fn counters_take_their_total_name_in_the_classic_format() {
        let om = "# HELP a_events Events.\n# TYPE a_events counter\na_events_total{x=\"1\"} 3\n\
                  # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP a_events_total Events.\n# TYPE a_events_total counter\n\
             a_events_total{x=\"1\"} 3\n# HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n"
        );
    }
}
