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
