//! The metric definitions: each family's name and help, registered once when the server
//! starts, and the series alerts watch created at 0.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use auditseal_core::config::DeviceKind;
use auditseal_core::device::{BatchObserver, LogDevice};

use super::Metrics;
use super::labels::*;

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
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
            checkpoints_seen: Default::default(),
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
}
