//! Who may call what: the middleware that finds each request's caller (a bearer token, else a
//! client certificate mapped to a role) and the extractors that check a handler's role.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use auditseal_core::access::Role;

use crate::auth::{ConnectionInfo, Identity};
use crate::error::ApiError;
use crate::state::AppState;

/// Middleware on every route but `/healthz`: finds the caller's identity (a bearer token
/// first, else a client certificate) and puts it into the request, or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let conn = req.extensions().get::<ConnectionInfo>().cloned();
    let bearer = req.headers().get(header::AUTHORIZATION).map(|v| {
        v.to_str()
            .ok()
            .and_then(|s| s.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string())
    });
    // Err: the index of the reason in FAILURE_REASONS, and the reason in words.
    let outcome: Result<Identity, (usize, &'static str)> = match bearer {
        Some(Some(token)) => match state.auth.token(&token).await {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err((2, "unknown or revoked token")),
            Err(e) => return ApiError::from(e).into_response(),
        },
        Some(None) => Err((1, "Authorization header is not \"Bearer <token>\"")),
        None => match conn.as_ref().and_then(|c| c.client_subject.as_deref()) {
            Some(subject) => state
                .auth
                .certificate(subject)
                .ok_or((3, "client certificate subject is not mapped to a role")),
            None => Err((0, "no credentials")),
        },
    };
    match outcome {
        Ok(id) => {
            req.extensions_mut().insert(id);
            next.run(req).await
        }
        Err((which, reason)) => {
            let total = state.auth.count_failure(which);
            // Never the token itself: the reason, the peer, and the certificate subject if any.
            tracing::warn!(
                peer = ?conn.as_ref().map(|c| c.peer),
                subject = conn.as_ref().and_then(|c| c.client_subject.as_deref()),
                method = %req.method(),
                path = req.uri().path(),
                reason,
                failed_authentications = total,
                "authentication failed"
            );
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!(
                    "{reason}: send \"Authorization: Bearer <token>\" (auditseal-db token \
                     create) or a client certificate mapped in [[auth.clients]]"
                ),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

/// The role a handler needs, checked by its extractor (`Ingester`, `Auditor`, `Admin`,
/// `Caller`): 403 when the caller's role does not grant it.
fn require(parts: &Parts, state: &AppState, needed: Option<Role>) -> Result<Identity, ApiError> {
    let id = parts.extensions.get::<Identity>().cloned().ok_or_else(|| {
        // Only if a route were mounted outside `authenticate`: refuse rather than serve.
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no credentials: send \"Authorization: Bearer <token>\"",
        )
    })?;
    match needed {
        Some(role) if !id.role.grants(role) => {
            let total = state.auth.count_forbidden();
            tracing::warn!(
                identity = %id.name,
                role = %id.role,
                needed = %role,
                method = %parts.method,
                path = parts.uri.path(),
                forbidden_requests = total,
                "request refused: role does not allow it"
            );
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this request needs the {role} role (or admin); {} has the {} role",
                    id.name, id.role
                ),
            ))
        }
        _ => Ok(id),
    }
}

macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $needed:expr) => {
        $(#[$doc])*
        pub struct $name(pub Identity);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;
            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                require(parts, state, $needed).map($name)
            }
        }
    };
}

role_extractor!(
    /// A caller that may add events: `ingest` or `admin`.
    Ingester,
    Some(Role::Ingest)
);
role_extractor!(
    /// A caller that may read the log: `auditor` or `admin`.
    Auditor,
    Some(Role::Auditor)
);
role_extractor!(
    /// A caller that may manage tokens: `admin`.
    Admin,
    Some(Role::Admin)
);
role_extractor!(
    /// Any authenticated caller.
    Caller,
    None
);
