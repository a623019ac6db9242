//! auditseal HTTP service: routes, configuration, start-up and shutdown.
//! `app` builds the router from its state; `run` serves it on a listener the caller owns.

pub mod auth;
mod body;
pub mod check;
pub mod config;
pub mod error;
pub mod guard;
pub mod metrics;
mod names;
pub mod notify;
mod outage;
pub mod reads;
pub mod reload;
pub mod routes;
pub mod serve;
pub mod startup;
pub mod state;
pub mod tls;
pub mod verifier;
pub mod verify_runs;

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use config::{BULK_BODY_FACTOR, ServerConfig, VERIFY_TIMEOUT};
pub use state::{AppState, VerifyPolicy};

pub fn app(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    let timeout = |d| TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, d);
    // Verification and export read the whole log (or much of it): their own, longer timeout.
    let long = Router::new()
        .route(
            "/api/v1/verify",
            post(routes::verify::verify).get(routes::verify::status),
        )
        .route("/api/v1/export", get(routes::export::export))
        .layer(timeout(VERIFY_TIMEOUT));
    // Live follow lasts as long as the client stays: no timeout (it ends when the server stops).
    let live = Router::new().route("/api/v1/events/stream", get(routes::stream::stream));
    // Every route here needs credentials (401 without); each handler's extractor checks the
    // role (403). The fallback too: nothing but /healthz, /livez, /readyz and the web
    // console's static files answers an anonymous caller.
    let protected = Router::new()
        .route(
            "/api/v1/events",
            get(routes::events::list).post(routes::events::create),
        )
        .route(
            "/api/v1/events:batch",
            post(routes::events::create_bulk)
                .layer(DefaultBodyLimit::max(limit * BULK_BODY_FACTOR)),
        )
        .route("/api/v1/events:count", get(routes::events::count))
        .route("/api/v1/events/{pk}", get(routes::events::get_one))
        .route("/api/v1/events/{pk}/proof", get(routes::proof::proof))
        .route("/api/v1/keys", get(routes::keys::list))
        .route("/api/v1/whoami", get(routes::whoami::whoami))
        .route(
            "/api/v1/tokens",
            get(routes::tokens::list).post(routes::tokens::create),
        )
        .route("/api/v1/tokens/{name}", delete(routes::tokens::revoke))
        .route("/api/v1/openapi.json", get(routes::openapi::openapi))
        .route("/metrics", get(routes::metrics::metrics))
        .fallback(|_: guard::Caller| async {
            error::ApiError::not_found("no such endpoint; see docs/API.md")
        })
        .layer(timeout(state.request_timeout))
        .merge(long)
        .merge(live)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::authenticate,
        ));
    Router::new()
        .merge(health(&state))
        .merge(console())
        .merge(protected)
        .layer(DefaultBodyLimit::max(limit))
        // A 5xx is logged where its cause is known (error.rs, outage.rs), once per cause:
        // not once more per response here.
        .layer(
            TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ),
        )
        .with_state(state)
}

/// The routes that need no credentials: the health probes.
fn health(state: &AppState) -> Router<AppState> {
    with_probes(
        Router::new().route("/healthz", get(routes::health::healthz)),
        state,
    )
}

/// `router` with `/livez` and `/readyz`, all within the request timeout.
fn with_probes(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router
        .route("/livez", get(routes::health::livez))
        .route("/readyz", get(routes::health::readyz))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            state.request_timeout,
        ))
}

/// The web console's static files (docs/UI.md): no credentials, as the sign-in page must load
/// before the user has given any; they hold no data.
fn console() -> Router<AppState> {
    Router::new()
        .route("/ui", get(routes::ui::redirect))
        .route("/ui/", get(routes::ui::index))
        .route("/ui/{file}", get(routes::ui::file))
}

/// The router of `server.metrics_bind`: `/metrics`, `/livez` and `/readyz`, without
/// credentials, and nothing else.
pub fn metrics_app(state: AppState) -> Router {
    with_probes(
        Router::new().route("/metrics", get(routes::metrics::open_metrics)),
        &state,
    )
    .with_state(state)
}

/// Serves until `shutdown` resolves, then ends live follows and finishes the requests in
/// flight; with the default connection limits.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with(listener, state, serve::Limits::default(), shutdown).await
}

/// `run` with the given connection limits (`server.max_connections`,
/// `server.header_timeout_secs`).
pub async fn run_with(
    listener: TcpListener,
    state: AppState,
    limits: serve::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = state.closing.clone();
    serve::serve(listener, app(state), limits, async move {
        shutdown.await;
        closing.store(true, std::sync::atomic::Ordering::SeqCst);
    })
    .await
}
