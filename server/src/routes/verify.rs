//! `POST /api/v1/verify`: runs the verifier `auditseal-db verifylog` runs, on the server, and
//! logs the run as a `LOG_VERIFY` event whose status is its outcome (FAILURE when anything
//! failed; CESeCore always logs SUCCESS). `GET /api/v1/verify`: each node's last sequence
//! number and newest checkpoint, and the progress of the API's current (or last) run on this
//! server (kept in its `AppState`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use auditseal_core::checkpoint::Checkpoint;
use auditseal_core::time::now_millis;
use auditseal_core::verify::{Selection, VerifyOptions, parse_node_arg, verify_log};

use crate::error::ApiError;
use crate::guard::Auditor;
use crate::state::AppState;
use crate::verify_runs::{Finished, Run, Tracker, run_json};

/// Most nodes `GET /api/v1/verify` reports, the first in node id order; `truncated` says when
/// the log has more (a database with any number of node ids must not make the answer, or the
/// per-node reads behind it, unbounded).
pub const MAX_STATUS_NODES: usize = 1_000;

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
    crate::guard::Auditor(who): crate::guard::Auditor,
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
    let runs = state.verify_runs.clone();
    let _running = runs.running.try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "verification_running",
            "a verification is already running on this server; try again when it has finished",
        )
    })?;
    *runs.lock() = Some(Run {
        by: who.name.clone(),
        started_at: now_millis(),
        finished_at: None,
        outcome: None,
        nodes: BTreeMap::new(),
    });
    let _finished = Finished(runs.clone());
    let opts = VerifyOptions {
        external: Arc::new(external),
        progress: Arc::new(Tracker(runs.clone())),
        ..Default::default()
    };
    let report = verify_log(&state.reader, &state.keys, &selection, &opts).await;
    runs.with_run(|r| {
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
/// checkpoint, that checkpoint's age and whether its statement verifies), for at most
/// `MAX_STATUS_NODES` nodes, and the API's current or last run, node by node.
pub async fn status(_: Auditor, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = now_millis();
    // One past the most shown, to know whether there are more.
    let mut all = state.reader.all_nodes(Some(MAX_STATUS_NODES + 1)).await?;
    let truncated = all.len() > MAX_STATUS_NODES;
    all.truncate(MAX_STATUS_NODES);
    let mut nodes = Vec::with_capacity(all.len());
    for node in all {
        // The head, not the last row: a few aggregates that read no row's columns (a row may
        // hold megabytes), the same read the live follow makes per poll.
        let head = state.reader.head(&node).await?;
        let last = (head.next_sequence > 0).then_some(head);
        let newest = state.reader.last_checkpoint(&node).await?;
        // Whoever can write to the database could otherwise show a fresh checkpoint here.
        let checkpoint = newest.as_ref().map(|c| {
            let verified = c.check(&state.keys);
            json!({
                "sequenceNumber": c.sequence_number,
                "timeStamp": c.time_stamp,
                "kind": c.kind,
                "ageMs": now - c.time_stamp,
                "verifies": verified.is_ok(),
                "problem": verified.err(),
            })
        });
        nodes.push(json!({
            "nodeId": node,
            "lastSequenceNumber": last.map(|h| h.next_sequence - 1),
            "lastTimeStamp": last.map(|h| h.last_time_stamp),
            "newestCheckpoint": checkpoint,
        }));
    }
    let run = state.verify_runs.lock().clone();
    let running = run.as_ref().is_some_and(|r| r.finished_at.is_none());
    Ok(Json(json!({
        "now": now,
        "nodes": nodes,
        "truncated": truncated,
        "running": running,
        "run": run.map(run_json),
    })))
}
