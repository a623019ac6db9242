//! Reads from a standby (`database_read_url`; docs/OPERATIONS.md "Reads from a standby"): the
//! auditors' reads go to a PostgreSQL hot standby, every write to `database_url`. Opened at the
//! start whether or not the standby answers; probed every 2 s in the background for its replay
//! lag and whether it answers (while it does not, reads get 503 at once and ingestion goes
//! on); what `/readyz` and `/metrics` say of it.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use auditseal_core::config::Settings;
use auditseal_core::store::{self, ReadOnlyStore, Replay, StoreError};

/// How often the standby is probed.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The read database and what its last probe found.
pub struct ReadDatabase {
    pub store: Arc<ReadOnlyStore>,
    /// Its URL without the password.
    pub url: String,
    last: Mutex<Option<Replay>>,
    /// Whether "this is not a standby" was said (once per process).
    said_writable: AtomicBool,
}

/// The read database of `settings`, if one is configured: opened (nothing connects yet),
/// probed once (what it found is logged), then probed every 2 s. A URL that cannot be used
/// stops the start; a standby that does not answer does not.
pub async fn open(settings: &Settings) -> anyhow::Result<Option<Arc<ReadDatabase>>> {
    let Some(url) = settings.database_read_url.as_deref() else {
        return Ok(None);
    };
    let redacted = store::redact_url(url);
    if !(settings.database_url.starts_with("postgres://")
        || settings.database_url.starts_with("postgresql://"))
    {
        anyhow::bail!(
            "database_read_url {redacted} is set, but database_url is not PostgreSQL: a read \
             database is a hot standby of a PostgreSQL primary; remove database_read_url"
        );
    }
    let store = ReadOnlyStore::open(url).context("cannot use database_read_url")?;
    let db = Arc::new(ReadDatabase {
        store: Arc::new(store),
        url: redacted,
        last: Mutex::new(None),
        said_writable: AtomicBool::new(false),
    });
    // A failure, or a writable server, is said by the probe; the server starts all the same.
    if let Ok(r) = db.probe().await
        && r.standby
    {
        tracing::info!(
            database = %db.url,
            lag_seconds = r.lag_seconds,
            "queries, exports and verification read from the standby (database_read_url)"
        );
    }
    let probed = db.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let _ = probed.probe().await;
        }
    });
    Ok(Some(db))
}

impl ReadDatabase {
    /// Probes the standby; logs the start and end of an outage once each, and once that it
    /// is not a standby.
    async fn probe(&self) -> Result<Replay, StoreError> {
        let found = self.store.probe().await;
        match &found {
            Ok(r) => {
                crate::outage::READ_DATABASE.answered();
                if !r.standby && !self.said_writable.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        database = %self.url,
                        "database_read_url names a writable PostgreSQL, not a standby \
                         (pg_is_in_recovery() is false): reads go there; if it is the primary \
                         itself, no load moves off it"
                    );
                }
            }
            Err(e) => crate::outage::READ_DATABASE.failed(e),
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = found.as_ref().ok().copied();
        found
    }

    /// Why reads fail now (for `/readyz`), or None.
    pub fn problem(&self) -> Option<String> {
        self.store.down().map(|_| {
            format!(
                "the read database (database_read_url {}) does not answer: queries, exports \
                 and verification get 503; events are still accepted (the server log says why)",
                self.url
            )
        })
    }

    /// What the last probe found (None: it failed).
    pub fn replay(&self) -> Option<Replay> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabel {
    /// The read database's URL, without its password.
    database: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The read database's metrics: one series each with `database_read_url`, none without.
#[derive(Default)]
pub struct ReadMetrics {
    up: Family<DatabaseLabel, Gauge>,
    lag: Family<DatabaseLabel, FloatGauge>,
    retried: Family<DatabaseLabel, Counter>,
}

impl ReadMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "read_database_up",
            "1 when the last probe of the read database (database_read_url) succeeded, 0 when \
             it does not answer (reads get 503, ingestion goes on)",
            self.up.clone(),
        );
        r.register(
            "read_database_replay_lag_seconds",
            "How far the read database's replay is behind: the age of the newest transaction it \
             replayed, 0 when it has replayed all the WAL it received (last probe)",
            self.lag.clone(),
        );
        r.register(
            "read_database_retries",
            "Reads the read database cancelled (a conflict with recovery) that were tried again",
            self.retried.clone(),
        );
    }

    /// Copies in what the last probe found.
    pub fn refresh(&self, db: Option<&ReadDatabase>) {
        let Some(db) = db else { return };
        let label = DatabaseLabel {
            database: db.url.clone(),
        };
        let replay = db.replay();
        self.up
            .get_or_create(&label)
            .set(i64::from(replay.is_some()));
        if let Some(r) = replay {
            self.lag.get_or_create(&label).set(r.lag_seconds);
        }
        let counter = self.retried.get_or_create(&label);
        let (total, now) = (db.store.retried(), counter.get());
        if total > now {
            counter.inc_by(total - now);
        }
    }
}
