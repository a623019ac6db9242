//! One error type for every route: each failure becomes a status and a JSON body
//! `{"error": "<code>", "message": "<what to do>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use auditseal_core::device::DeviceError;
use auditseal_core::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra fields merged into the body (e.g. the failing row).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.extra, body.as_object_mut())
        {
            obj.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                // Once per outage, not once per request.
                crate::outage::DATABASE.refused(&e);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; retry later with the same pk or \
                     Idempotency-Key (if the failure came during the commit, the event may be \
                     stored: see docs/API.md \"Retries\")",
                )
            }
            // The log devices tell their own unique-key refusals apart (`pk_pending`,
            // `log_inconsistent`); one that reaches here is a key that exists already, which
            // retrying cannot change.
            StoreError::Conflict(_) => {
                tracing::warn!(error = %e, "database refused a duplicate key");
                ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "the database holds an entry with this key already; nothing was written",
                )
            }
            StoreError::ReadUnavailable(_) => {
                // Once per outage; the background probe (reads.rs) ends it.
                crate::outage::READ_DATABASE.refused(&e);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "read_database_unavailable",
                    "the read database (database_read_url, a standby) does not answer: \
                     queries, exports and verification are unavailable, events are still \
                     accepted; retry later",
                )
            }
            StoreError::Cancelled(_) => {
                tracing::warn!(error = %e, "a read was cancelled by the database");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "read_cancelled",
                    "the database cancelled the read, also when it was tried again (on a \
                     standby: a conflict with the replay of the primary's changes); retry \
                     later; see docs/OPERATIONS.md \"Reads from a standby\"",
                )
            }
            StoreError::Full(_) => {
                tracing::warn!(error = %e, "database storage full");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_full",
                    "the database's storage is full; nothing was written, retry later (an \
                     operator must free space)",
                )
            }
            other => {
                tracing::error!(error = %other, "database error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "database_error",
                    "database error; see the server log",
                )
            }
        }
    }
}

impl From<DeviceError> for ApiError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::Store(s) | DeviceError::Start(s) => s.into(),
            DeviceError::Token(e) => {
                // Logged once per outage (with the reason), not per refused event.
                crate::outage::SIGNING_KEY.refused(&e);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "token_unavailable",
                    "the signing key is unavailable; nothing was written, retry later",
                )
            }
            DeviceError::QueueFull(n) => {
                let why = format!("the ingestion queue is full ({n} events)");
                crate::outage::QUEUE.refused(&why);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue_full",
                    format!("{why}; nothing was accepted, retry later"),
                )
            }
            DeviceError::PkConflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "pk_conflict", e.to_string())
            }
            DeviceError::PkPending(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "pk_pending", e.to_string())
            }
            DeviceError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
            DeviceError::Inconsistent(reason) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_inconsistent",
                format!(
                    "{reason}. This node takes no events until an operator has acted and \
                     restarted it (docs/OPERATIONS.md \"Log inconsistent\"); nothing was \
                     written, and retrying does not help until then"
                ),
            ),
            DeviceError::LockLost(node) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "node_lock_lost",
                format!(
                    "this server lost the writer lock of node {node} (database session lost); \
                     nothing was written, retry later"
                ),
            ),
            other => {
                tracing::error!(error = %other, "log device error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "device_error",
                    "the event could not be protected and stored; nothing was written, retry later",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_failures_are_503_with_their_own_codes() {
        for (e, code) in [
            (
                StoreError::ReadUnavailable("postgres://r@standby/db: refused".into()),
                "read_database_unavailable",
            ),
            (
                StoreError::Cancelled("conflict with recovery".into()),
                "read_cancelled",
            ),
        ] {
            let a = ApiError::from(e);
            assert_eq!((a.status, a.code), (StatusCode::SERVICE_UNAVAILABLE, code));
            // The database's own words stay in the log.
            assert!(!a.message.contains("standby/db"), "{}", a.message);
        }
    }
}
