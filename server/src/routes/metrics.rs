//! `GET /metrics`: the Prometheus metrics (server/src/metrics/). On the main listener it
//! needs the auditor or admin role; the listener of `server.metrics_bind` serves it without
//! credentials.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::guard::Auditor;
use crate::metrics::{OPENMETRICS_TYPE, TEXT_TYPE};
use crate::state::AppState;

/// On the main listener: for auditors and admins.
pub async fn metrics(_: Auditor, state: State<AppState>, headers: HeaderMap) -> Response {
    open_metrics(state, headers).await
}

/// On the metrics listener: for whoever can reach it. OpenMetrics when the scraper accepts it
/// (Prometheus does), else the classic text format.
pub async fn open_metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = state
        .metrics
        .render(&state.metrics_sources(), openmetrics)
        .await;
    let content_type = if openmetrics {
        OPENMETRICS_TYPE
    } else {
        TEXT_TYPE
    };
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}
