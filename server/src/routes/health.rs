//! `GET /healthz`: the process is up and its database answers (no credentials needed). It also
//! counts refused requests since start, for alerting.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

pub async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // A primary-key lookup: cheap whatever the table's size, and it needs a live connection.
    // Any failure means "not healthy": 503, whatever the database said.
    state.store.get("healthz").await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            format!("the database does not answer: {e}"),
        )
    })?;
    Ok(Json(json!({
        "status": "ok",
        "nodeId": state.device.node_id(),
        "failedAuthentications": state.auth.failures(),
        "forbiddenRequests": state.auth.forbidden(),
    })))
}
