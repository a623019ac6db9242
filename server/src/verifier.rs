//! Continuous verification (docs/OPERATIONS.md "Continuous verification"): the server verifies
//! the rows written since its last round, every node, every `server.verify_interval_secs`, and
//! the whole log every `server.verify_full_interval_secs`, with the verifier `auditseal-db
//! verifylog` runs. Every run counts in `auditseal_verify_runs_total`; a failure is an ALERT
//! line per finding (node and sequence number) and a signed LOG_VERIFY event with status
//! FAILURE, and so is every full run. A successful incremental round is not an event: its event
//! would be a new row for the next round to verify, one more every round.
//!
//! Its CPU share is bounded: one node at a time, and after a run that took `t` the next starts
//! no sooner than `3 t` later.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, json};

use auditseal_core::access::Role;
use auditseal_core::verify::{LogReport, NodeReport, Selection, VerifyOptions, verify_log};

use crate::auth::Identity;
use crate::state::AppState;

/// Findings of one node logged as ALERT lines, at most (the LOG_VERIFY event has the counts).
const MAX_ALERT_LINES: usize = 20;

/// Which run: the rows since the last round, or the whole log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    Incremental,
    Full,
}

impl Run {
    pub fn name(self) -> &'static str {
        match self {
            Run::Incremental => "incremental",
            Run::Full => "full",
        }
    }
}

/// Starts the rounds (either interval None: that kind is off). Rows already in the log when the
/// server starts are left to the first full run.
pub fn start(state: AppState, incremental: Option<Duration>, full: Option<Duration>) {
    if incremental.is_none() && full.is_none() {
        tracing::warn!(
            "continuous verification is off (server.verify_interval_secs and server.verify_full_interval_secs are 0)"
        );
        return;
    }
    tokio::spawn(async move {
        // Tried again until it succeeds: the database it reads (a standby with
        // database_read_url) may be down while the server starts.
        let mut said = false;
        let mut next: HashMap<String, i64> = loop {
            match initial_positions(&state).await {
                Ok(p) => break p,
                Err(e) => {
                    if !said {
                        tracing::error!(error = %e, "ALERT continuous verification cannot start yet: cannot read where the nodes stand; trying again every 10 s");
                    }
                    said = true;
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
        };
        let now = tokio::time::Instant::now();
        let mut due_incremental = incremental.map(|i| now + i);
        let mut due_full = full.map(|f| now + f);
        loop {
            let wake = match (due_incremental, due_full) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => return,
            };
            tokio::time::sleep_until(wake).await;
            let now = tokio::time::Instant::now();
            let run = if due_full.is_some_and(|f| f <= now) {
                Run::Full
            } else {
                Run::Incremental
            };
            let started = tokio::time::Instant::now();
            round(&state, run, &mut next).await;
            let took = started.elapsed();
            // At most a quarter of the time verifying.
            let rest = took * 3;
            let after = tokio::time::Instant::now();
            if let Some(i) = incremental {
                due_incremental = Some(after + i.max(rest));
            }
            if run == Run::Full
                && let Some(f) = full
            {
                due_full = Some(after + f.max(rest));
            }
        }
    });
}

/// Where each node's log stands now: the first round verifies what comes after.
async fn initial_positions(
    state: &AppState,
) -> Result<HashMap<String, i64>, auditseal_core::store::StoreError> {
    let mut next = HashMap::new();
    for node in state.reader.all_nodes(None).await? {
        let head = state.reader.head(&node).await?;
        next.insert(node, head.next_sequence);
    }
    Ok(next)
}

/// One run; `next` holds, per node, the first sequence number not verified yet.
async fn round(state: &AppState, run: Run, next: &mut HashMap<String, i64>) {
    let selection = match run {
        Run::Full => Selection::All,
        Run::Incremental => {
            let nodes = match state.reader.all_nodes(None).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "continuous verification: cannot list the nodes; trying again next round");
                    return;
                }
            };
            let mut targets = Vec::new();
            for node in nodes {
                let from = next.get(&node).copied().unwrap_or(0);
                match state.reader.head(&node).await {
                    Ok(h) if h.next_sequence > from => targets.push((node, Some(from))),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "continuous verification: cannot read where node {node} stands; trying again next round");
                        return;
                    }
                }
            }
            if targets.is_empty() {
                return;
            }
            Selection::Nodes(targets)
        }
    };
    let opts = VerifyOptions {
        parallel_nodes: 1,
        ..Default::default()
    };
    let report = verify_log(&state.reader, &state.keys, &selection, &opts).await;
    state.metrics.verified(run.name(), report.as_ref().ok());
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(run = run.name(), error = %e, "continuous verification could not complete; trying again next round");
            return;
        }
    };
    for n in &report.nodes {
        if let Some(last) = n.last_sequence {
            let at = next.entry(n.node_id.clone()).or_insert(0);
            *at = (*at).max(last + 1);
        }
        alert(run, n);
    }
    if run == Run::Full || report.errors > 0 {
        log_event(state, run, &report).await;
    } else {
        tracing::debug!(
            rows = report.rows,
            "continuous verification: the new rows verify"
        );
    }
}

/// One ALERT line per finding of a node (the first `MAX_ALERT_LINES`).
fn alert(run: Run, n: &NodeReport) {
    let node = &n.node_id;
    let mut lines: Vec<(i64, String)> = Vec::new();
    lines.extend(n.failed.iter().map(|f| {
        (
            f.sequence_number,
            format!("row pk={} failed: {}", f.pk, f.reason),
        )
    }));
    lines.extend(n.holes.iter().map(|h| {
        (
            h.this_sequence_number,
            format!("{} sequence numbers missing before it", h.missing),
        )
    }));
    lines.extend(
        n.duplicates
            .iter()
            .map(|s| (*s, "sequence number used twice".to_string())),
    );
    lines.extend(n.failed_batches.iter().map(|b| {
        (
            b.first_sequence_number,
            format!("batch statement failed: {}", b.reason),
        )
    }));
    lines.extend(n.failed_checkpoints.iter().map(|c| {
        (
            c.sequence_number,
            format!("checkpoint ({}) failed: {}", c.source, c.reason),
        )
    }));
    lines.extend(n.outside.iter().map(|o| {
        (
            o.first_sequence_number,
            format!(
                "{} {} entries stored outside the node's log: {}",
                o.count, o.table, o.reason
            ),
        )
    }));
    let total = lines.len();
    for (seq, what) in lines.into_iter().take(MAX_ALERT_LINES) {
        tracing::error!(run = run.name(), node = %node, sequence = seq, "ALERT verification failed: {what}");
    }
    if total > MAX_ALERT_LINES {
        tracing::error!(run = run.name(), node = %node, more = total - MAX_ALERT_LINES, "ALERT verification failed: more findings (see the LOG_VERIFY event, or run verifylog)");
    }
}

/// The details of a LOG_VERIFY event: the nodes (`NAME:FIRST` for each that was verified from
/// an offset, when `from` is asked for), rows, errors, warnings and elapsedMs.
pub fn log_verify_details(report: &LogReport, from: bool) -> Map<String, serde_json::Value> {
    let nodes: Vec<String> = report
        .nodes
        .iter()
        .map(|n| match n.first_sequence {
            Some(f) if from => format!("{}:{f}", n.node_id),
            _ => n.node_id.clone(),
        })
        .collect();
    let mut details = Map::new();
    details.insert("nodes".into(), json!(nodes.join(",")));
    details.insert("rows".into(), json!(report.rows));
    details.insert("errors".into(), json!(report.errors));
    details.insert("warnings".into(), json!(report.warnings));
    details.insert("elapsedMs".into(), json!(report.elapsed_ms));
    details
}

/// The run as a LOG_VERIFY event of this server, its status the outcome.
async fn log_event(state: &AppState, run: Run, report: &LogReport) {
    let who = Identity {
        name: "server:continuous-verification".into(),
        role: Role::Admin,
    };
    let mut details = log_verify_details(report, run == Run::Incremental);
    details.insert("run".into(), json!(run.name()));
    if let Err(e) = state
        .log_system("LOG_VERIFY", report.errors == 0, &who, &details)
        .await
    {
        tracing::error!(error = %e, "ALERT cannot log the LOG_VERIFY event of a continuous verification");
    }
}
