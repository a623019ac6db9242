//! `GET /healthz`: the process is up and its database answers.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

pub async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // A primary-key lookup: cheap whatever the table's size, and it needs a live connection.
    state.store.get("healthz").await?;
    Ok(Json(
        json!({ "status": "ok", "nodeId": state.device.node_id() }),
    ))
}
