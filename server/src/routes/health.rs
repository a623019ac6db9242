//! `GET /healthz`: the process is up, its database answers and its node takes events (no
//! credentials needed). It also counts refused requests since start, for alerting.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

pub async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // A primary-key lookup: cheap whatever the table's size, and it needs a live connection.
    // Any failure means "not healthy": 503, whatever the database said.
    // Anyone may ask: the database's own words (host, user, file) go to the log only.
    state.store.get("healthz").await.map_err(|e| {
        // Logged once per outage (a load balancer asks every few seconds).
        crate::outage::DATABASE.refused(&e);
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database does not answer; the server log says why",
        )
    })?;
    crate::outage::DATABASE.answered();
    // The node refuses every event: a load balancer should send them to another node. The why
    // (sequence numbers) is in the server log's ALERT line, not on this open route.
    if state.device.inconsistent().is_some() {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "log_inconsistent",
            format!(
                "node {} refuses events: its log is inconsistent (see the ALERT in the server log \
                 and docs/OPERATIONS.md \"Log inconsistent\")",
                state.device.node_id()
            ),
        ));
    }
    Ok(Json(json!({
        "status": "ok",
        "nodeId": state.device.node_id(),
        "failedAuthentications": state.auth.failures(),
        "forbiddenRequests": state.auth.forbidden(),
    })))
}

/// `GET /livez`: the process runs and answers (no credentials; nothing is checked).
pub async fn livez() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /readyz`: whether this node should be sent events (no credentials). 200 when every
/// check passes, else 503 listing each failed check with its reason (docs/OPERATIONS.md
/// "Metrics and health"). Nothing is signed: the signing key is judged by what the last event
/// to protect found.
pub async fn readyz(State(state): State<AppState>) -> (axum::http::StatusCode, Json<Value>) {
    let mut failed = Vec::new();
    let mut fail = |check: &str, reason: String| {
        failed.push(json!({ "check": check, "reason": reason }));
    };
    // The same cheap lookup as /healthz; the database's own words go to the log only.
    match state.store.get("healthz").await {
        Ok(_) => crate::outage::DATABASE.answered(),
        Err(e) => {
            crate::outage::DATABASE.refused(&e);
            fail(
                "database",
                "the database does not answer; the server log says why".into(),
            );
        }
    }
    let node = state.device.node_id();
    if !state.device.lock_held() {
        fail(
            "node_lock",
            format!("this process does not hold the writer lock of node {node}"),
        );
    }
    if state.signer.is_some()
        && let Some(reason) = state.metrics.key_refused()
    {
        fail("signing_key", reason);
    }
    if state.device.inconsistent().is_some() {
        fail(
            "log_consistent",
            format!(
                "node {node} refuses events: its log is inconsistent (see the ALERT in the \
                 server log and docs/OPERATIONS.md \"Log inconsistent\")"
            ),
        );
    }
    if let Some(q) = state.device.queue()
        && q.waiting >= q.capacity
    {
        fail(
            "ingest_queue",
            format!("the ingest queue is full ({} events)", q.capacity),
        );
    }
    let (status, mut body) = if failed.is_empty() {
        (
            axum::http::StatusCode::OK,
            json!({ "status": "ready", "nodeId": node }),
        )
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "not_ready", "nodeId": node, "failed": failed }),
        )
    };
    // A standby that does not answer stops reads, not events: said, but the node stays ready.
    if let Some(reason) = state.read_database.as_ref().and_then(|db| db.problem()) {
        body["warnings"] = json!([{ "check": "read_database", "reason": reason }]);
    }
    (status, Json(body))
}
