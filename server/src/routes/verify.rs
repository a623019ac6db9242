//! `POST /api/v1/verify`: runs the verifier `auditseal-db verifylog` runs, on the server, and
//! logs the run as a `LOG_VERIFY` event whose status is its outcome (FAILURE when anything
//! failed; CESeCore always logs SUCCESS).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use auditseal_core::checkpoint::Checkpoint;
use auditseal_core::verify::{Selection, VerifyOptions, parse_node_arg, verify_log};

use crate::error::ApiError;
use crate::state::AppState;

/// One verification at a time per server: each already uses every core.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

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
    let body = super::events::body_or_error(body, state.max_body_bytes)?;
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
    let opts = VerifyOptions {
        external: Arc::new(external),
        ..Default::default()
    };
    let report = verify_log(&state.store, &state.keys, &selection, &opts).await;
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
