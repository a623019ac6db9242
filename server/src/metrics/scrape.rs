//! Collection and rendering: at each scrape the values kept elsewhere (the device, the
//! database, the checkpoint writer, the forwarding sinks, the signing key's token, the
//! authentication counters) are copied in, and the registry is written as text.

use std::sync::atomic::Ordering;

use prometheus_client::metrics::counter::Counter;

use auditseal_core::checkpoint::Checkpoint;
use auditseal_core::device::LogDevice;
use auditseal_core::keys::KeyRing;
use auditseal_core::store::Store;
use auditseal_core::token::CryptoToken;

use super::Metrics;
use super::labels::*;

/// Where the scrape-time values are kept (the server's state lends them).
pub struct Sources<'a> {
    pub store: &'a dyn Store,
    pub device: &'a dyn LogDevice,
    pub signer: Option<&'a dyn CryptoToken>,
    pub auth: &'a crate::auth::Auth,
    /// Live followers (`GET /api/v1/events:follow`) now.
    pub followers: usize,
    pub read_database: Option<&'a crate::reads::ReadDatabase>,
    /// What checkpoints are verified with before their age is given.
    pub keys: &'a KeyRing,
}

impl Metrics {
    /// The metrics as text, OpenMetrics when `openmetrics`, else the classic Prometheus text
    /// format. Reads the newest checkpoints from the database (one query); the rest is memory.
    pub async fn render(&self, state: &Sources<'_>, openmetrics: bool) -> String {
        let checkpoints = state.store.latest_checkpoints().await;
        match &checkpoints {
            Ok(_) => crate::outage::DATABASE.answered(),
            Err(e) => crate::outage::DATABASE.failed(e),
        }
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.checkpoint_ages(checkpoints.ok().as_deref(), state.keys);
        self.database_up
            .set(i64::from(!crate::outage::DATABASE.is_down()));
        self.lock_held.set(i64::from(state.device.lock_held()));
        if let Some(q) = state.device.queue() {
            self.queue_events.set(q.waiting as i64);
        }
        self.checkpoint_writer_now();
        self.forwarding_now();
        if let Some(token) = state.signer {
            self.token_calls_of(token);
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
        self.followers.set(state.followers as i64);
        self.reads.refresh(state.read_database);
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

    /// The age of each node's newest checkpoint whose statement verifies with `keys`
    /// (`CheckpointsSeen::newest_verified`). Whoever can write to the database could otherwise
    /// hide an overdue checkpoint behind a row of their own, or by deleting the node's
    /// checkpoints: a checkpoint that does not verify is an ALERT line and a row failed on read
    /// (`route="checkpoints"`), once each, and is not used; a node none of whose newest
    /// checkpoints verifies, or whose checkpoints are gone, keeps the age of those this server
    /// verified before. A database that does not answer (`None`) leaves no stale ages behind
    /// (none are given): database_up says why.
    fn checkpoint_ages(&self, checkpoints: Option<&[Checkpoint]>, keys: &KeyRing) {
        self.checkpoint_age.clear();
        let Some(checkpoints) = checkpoints else {
            return;
        };
        let now = auditseal_core::time::now_millis();
        let mut seen = self
            .checkpoints_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let newest = seen.newest_verified(
            checkpoints,
            |c| c.check(keys),
            |c, reason| {
                self.row_failed_on_read("checkpoints");
                tracing::error!(
                    node = %c.node_id,
                    sequence = c.sequence_number,
                    error = %reason,
                    "ALERT a checkpoint in the database does not verify (forged or altered?); \
                     it is not used for auditseal_checkpoint_age_seconds: run auditseal-db \
                     verifylog"
                );
            },
        );
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
pub(super) fn classic_text(openmetrics: &str) -> String {
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
