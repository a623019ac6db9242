//! What every route shares.

use std::sync::Arc;

use auditseal_core::config::KeyInfo;
use auditseal_core::device::LogDevice;
use auditseal_core::keys::KeyRing;
use auditseal_core::store::SharedStore;
use auditseal_core::token::SharedToken;

/// Verification policy (CESeCore `enableverify` / `erroronverifyfail`).
#[derive(Debug, Clone, Copy)]
pub struct VerifyPolicy {
    pub enable_verify: bool,
    pub error_on_verify_fail: bool,
}

/// What every route shares, behind one `Arc`: each request clones the state a few times (the
/// guard, its extractors, the handler), and a clone is one reference count, not one per field
/// (cloning the fields took 3% of the server's CPU under single POSTs).
#[derive(Clone)]
pub struct AppState(Arc<ServerState>);

impl From<ServerState> for AppState {
    fn from(s: ServerState) -> Self {
        AppState(Arc::new(s))
    }
}

impl std::ops::Deref for AppState {
    type Target = ServerState;
    fn deref(&self) -> &ServerState {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct ServerState {
    /// The database every write goes to (`database_url`): events, tokens, checkpoints, locks.
    pub store: SharedStore,
    /// Where the auditors' reads go (queries, proofs, exports, follow, verification): the
    /// standby of `database_read_url`, else the same store as `store`.
    pub reader: SharedStore,
    /// The standby behind `reader`, probed in the background (None: reads use `store`).
    pub read_database: Option<Arc<crate::reads::ReadDatabase>>,
    pub device: Arc<dyn LogDevice>,
    pub keys: Arc<KeyRing>,
    pub key_listing: Arc<Vec<KeyInfo>>,
    pub policy: VerifyPolicy,
    pub max_body_bytes: usize,
    /// Most bytes one event may take as stored (`server.max_event_bytes`).
    pub max_event_bytes: usize,
    /// The current signing key, which signs exports; None when signing is off.
    pub signer: Option<SharedToken>,
    /// Live followers (`GET /api/v1/events/stream`) still allowed, of `max_followers`.
    pub followers: Arc<tokio::sync::Semaphore>,
    pub max_followers: usize,
    /// Most time a request (body included) may take, except verify, export and live follow.
    pub request_timeout: std::time::Duration,
    /// Most time a client may take none of what it is sent (`server.send_timeout_secs`).
    pub send_timeout: std::time::Duration,
    /// Set when the server is stopping: live follows end so the shutdown can complete.
    pub closing: Arc<std::sync::atomic::AtomicBool>,
    /// API tokens and client certificate roles.
    pub auth: Arc<crate::auth::Auth>,
    /// The Prometheus metrics (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// `POST /api/v1/verify`: one run at a time, and its progress (`GET /api/v1/verify`).
    pub verify_runs: Arc<crate::verify_runs::VerifyRuns>,
}

impl AppState {
    /// What a metrics scrape reads at scrape time.
    pub fn metrics_sources(&self) -> crate::metrics::Sources<'_> {
        crate::metrics::Sources {
            store: self.store.as_ref(),
            device: self.device.as_ref(),
            signer: self.signer.as_deref(),
            auth: &self.auth,
            followers: self
                .max_followers
                .saturating_sub(self.followers.available_permits()),
            read_database: self.read_database.as_deref(),
            keys: &self.keys,
        }
    }

    /// Logs an event of auditseal's own (LOG_VERIFY, LOG_EXPORT, TOKEN_CREATE, ...) made at the
    /// request of `who`, who is both its authToken and its recorded submitter.
    pub async fn log_system(
        &self,
        event_type: &str,
        success: bool,
        who: &crate::auth::Identity,
        details: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<auditseal_core::device::Appended, crate::error::ApiError> {
        let mut details = details.clone();
        details.insert(crate::auth::SUBMITTER_KEY.into(), who.name.clone().into());
        let event =
            auditseal_core::device::NewEvent::system(event_type, success, &who.name, &details)
                .map_err(|e| {
                    tracing::error!(error = %e, event_type, "cannot encode an event's details");
                    crate::error::ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "internal_error",
                        format!("the {event_type} event could not be logged; see the server log"),
                    )
                })?;
        Ok(self.device.append(event).await?)
    }
}
