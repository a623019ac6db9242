//! `POST /api/v1/verify`: runs the verifier `auditseal-db verifylog` runs, on the server, and
//! logs the run as a `LOG_VERIFY` event whose status is its outcome (FAILURE when anything
//! failed; CESeCore always logs SUCCESS). `GET /api/v1/verify`: each node's last sequence
//! number and newest checkpoint, and the progress of the API's current (or last) run.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use auditseal_core::checkpoint::Checkpoint;
use auditseal_core::time::now_millis;
use auditseal_core::verify::{Progress, Selection, VerifyOptions, parse_node_arg, verify_log};

use crate::auth::Auditor;
use crate::error::ApiError;
use crate::state::AppState;

/// One verification at a time per server: each already uses every core.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// The API's current run, or its last one (continuous verification is not shown here).
static RUN: Mutex<Option<Run>> = Mutex::new(None);

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Run {
    by: String,
    started_at: i64,
    finished_at: Option<i64>,
    /// "SUCCESS" or "FAILURE" once finished; null while running or when the run failed to run.
    outcome: Option<&'static str>,
    nodes: BTreeMap<String, NodeProgress>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeProgress {
    /// The verifier's estimate, from the node's highest sequence number.
    expected_rows: u64,
    verified_rows: u64,
    done: bool,
}

fn with_run(f: impl FnOnce(&mut Run)) {
    if let Some(run) = RUN.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        f(run);
    }
}

/// Marks the run finished however its request ends (a dropped connection, the route's timeout).
struct Finished;

impl Drop for Finished {
    fn drop(&mut self) {
        with_run(|r| {
            r.finished_at.get_or_insert_with(now_millis);
        });
    }
}

/// Feeds `RUN` from the verifier.
struct Tracker;

impl Progress for Tracker {
    fn start(&self, node: &str, expected: u64) {
        with_run(|r| {
            r.nodes.entry(node.to_string()).or_default().expected_rows = expected;
        });
    }
    fn advance(&self, node: &str, rows: u64) {
        with_run(|r| r.nodes.entry(node.to_string()).or_default().verified_rows += rows);
    }
    fn finish(&self, node: &str) {
        with_run(|r| r.nodes.entry(node.to_string()).or_default().done = true);
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerifyRequest {
    /// `NAME` or `NAME:OFFSET`; empty or absent: every node, each from its start.
    #[serde(default)]
    nodes: Vec<String>,
    /// Checkpoints kept outside the database (docs/FORMAT.md section 7.3), as objects.
    #[serde(default)]
    checkpoints: Vec<Checkpoint>,
}

pub async fn verify(
    crate::auth::Auditor(who): crate::auth::Auditor,
    State(state): State<AppState>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = crate::body::body_or_error(body, state.max_body_bytes)?;
    let req: VerifyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        VerifyRequest::default()
    } else {
        crate::body::json(&body, "verify request")?
    };
    let selection = if req.nodes.is_empty() {
        Selection::All
    } else {
        Selection::Nodes(
            req.nodes
                .iter()
                .map(|n| {
                    parse_node_arg(n).map_err(|e| ApiError::bad_request(format!("nodes: {e}")))
                })
                .collect::<Result<_, _>>()?,
        )
    };
    let mut external: HashMap<String, Vec<Checkpoint>> = HashMap::new();
    for c in req.checkpoints {
        external.entry(c.node_id.clone()).or_default().push(c);
    }
    let _running = RUNNING.try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "verification_running",
            "a verification is already running on this server; try again when it has finished",
        )
    })?;
    *RUN.lock().unwrap_or_else(|p| p.into_inner()) = Some(Run {
        by: who.name.clone(),
        started_at: now_millis(),
        finished_at: None,
        outcome: None,
        nodes: BTreeMap::new(),
    });
    let _finished = Finished;
    let opts = VerifyOptions {
        external: Arc::new(external),
        progress: Arc::new(Tracker),
        ..Default::default()
    };
    let report = verify_log(&state.store, &state.keys, &selection, &opts).await;
    with_run(|r| {
        r.finished_at = Some(now_millis());
        r.outcome = report.as_ref().ok().map(|rep| {
            if rep.errors == 0 {
                "SUCCESS"
            } else {
                "FAILURE"
            }
        });
    });
    state.metrics.verified("api", report.as_ref().ok());
    let report = report?;
    let success = report.errors == 0;
    let details = crate::verifier::log_verify_details(&report, false);
    let logged = state
        .log_system("LOG_VERIFY", success, &who, &details)
        .await?;
    Ok((
        StatusCode::OK,
        Json(json!({
            "outcome": if success { "SUCCESS" } else { "FAILURE" },
            "exitCode": report.exit_code(),
            "report": report,
            "event": logged,
        })),
    ))
}

/// `GET /api/v1/verify`: where each node's log stands (its last sequence number, its newest
/// checkpoint and that checkpoint's age) and the API's current or last run, node by node.
pub async fn status(_: Auditor, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = now_millis();
    let mut newest: HashMap<String, Checkpoint> = HashMap::new();
    for c in state.store.latest_checkpoints().await? {
        newest.insert(c.node_id.clone(), c);
    }
    let mut nodes = Vec::new();
    for node in state.store.all_nodes().await? {
        let last = state.store.last_row(&node).await?;
        let checkpoint = newest.get(&node).map(|c| {
            json!({
                "sequenceNumber": c.sequence_number,
                "timeStamp": c.time_stamp,
                "kind": c.kind,
                "ageMs": now - c.time_stamp,
            })
        });
        nodes.push(json!({
            "nodeId": node,
            "lastSequenceNumber": last.as_ref().map(|r| r.sequence_number),
            "lastTimeStamp": last.as_ref().map(|r| r.time_stamp),
            "newestCheckpoint": checkpoint,
        }));
    }
    let run = RUN.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let running = run.as_ref().is_some_and(|r| r.finished_at.is_none());
    let run = run.map(|r| {
        let mut v = json!(r);
        v["nodes"] = r
            .nodes
            .into_iter()
            .map(|(id, p)| {
                let mut n = json!(p);
                n["nodeId"] = json!(id);
                n
            })
            .collect();
        v
    });
    Ok(Json(
        json!({ "now": now, "nodes": nodes, "running": running, "run": run }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verifier's reports become each node's progress; a run whose request ends unfinished
    /// is marked finished, with no outcome.
    #[test]
    fn the_tracker_counts_each_nodes_rows_and_a_dropped_run_ends() {
        *RUN.lock().unwrap() = Some(Run {
            by: "token:t".into(),
            started_at: 1,
            finished_at: None,
            outcome: None,
            nodes: BTreeMap::new(),
        });
        let finished = Finished;
        Tracker.start("a", 10);
        Tracker.advance("a", 4);
        Tracker.advance("a", 6);
        Tracker.finish("a");
        Tracker.start("b", 3);
        Tracker.advance("b", 1);
        let run = RUN.lock().unwrap().clone().unwrap();
        let got: Vec<_> = run
            .nodes
            .iter()
            .map(|(n, p)| (n.as_str(), p.expected_rows, p.verified_rows, p.done))
            .collect();
        assert_eq!(got, [("a", 10, 10, true), ("b", 3, 1, false)]);
        assert_eq!(run.finished_at, None);
        drop(finished);
        let run = RUN.lock().unwrap().clone().unwrap();
        assert!(run.finished_at.is_some() && run.outcome.is_none());
    }
}
