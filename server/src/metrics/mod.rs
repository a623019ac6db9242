//! The server's Prometheus metrics: the one registry, what feeds it, and its text
//! (docs/OPERATIONS.md "Metrics and health" lists every metric). Counters and histograms are
//! updated where things happen; gauges whose source already exists elsewhere (the device, the
//! database outage, the followers, the authentication counters, the newest checkpoints) are
//! read when `/metrics` is asked for. The families and their help are defined in register.rs,
//! their labels in labels.rs; scrape.rs copies the scrape-time values in and writes the text.

mod labels;
mod register;
mod scrape;
mod seen;

pub use scrape::Sources;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use auditseal_core::checkpointer::CheckpointStats;
use auditseal_core::forward::ForwardStats;
use auditseal_core::verify::LogReport;

use labels::*;

/// The OpenMetrics content type, served when the scraper asks for it.
pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format (what `promtool check metrics` reads), served otherwise.
pub const TEXT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Most distinct `source` labels of `hsm_findings_total`; the findings of further sources are
/// counted under `OTHER_SOURCES`.
const MAX_FINDING_SOURCES: usize = 100;
const OTHER_SOURCES: &str = "(other sources)";

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

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

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
    /// The checkpoints `checkpoint_age` has verified or refused.
    checkpoints_seen: Mutex<seen::CheckpointsSeen>,
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

impl Metrics {
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
}
