//! `GET /api/v1/tokens`, `POST /api/v1/tokens`, `DELETE /api/v1/tokens/{name}`: API token
//! management for admins (the same as `auditseal-db token list|create|revoke`). A token is
//! shown once, when created; only its hash is stored. Creating and revoking are logged as
//! `TOKEN_CREATE` and `TOKEN_REVOKE` events; a token whose TOKEN_CREATE cannot be logged is
//! revoked again before it is shown (a revocation stands even when its event cannot be logged:
//! it only takes access away; the answer says so).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use auditseal_core::access::{AccessError, CreateError, Role, create_logged, new_token};
use auditseal_core::time::{format_iso8601, now_millis};

use crate::error::ApiError;
use crate::guard::Admin;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
}

fn token_json(t: &auditseal_core::access::ApiToken) -> Value {
    json!({
        "name": t.name,
        "role": t.role,
        "created": format_iso8601(t.created),
        "revoked": t.revoked.map(format_iso8601),
    })
}

pub async fn list(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let tokens = state.store.tokens().await?;
    Ok(Json(json!({
        "tokens": tokens.iter().map(token_json).collect::<Vec<_>>()
    })))
}

pub async fn create(
    Admin(who): Admin,
    State(state): State<AppState>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = crate::body::body_or_error(body, state.max_body_bytes)?;
    let req: NewToken = crate::body::json(&body, "token request")?;
    let role: Role = req.role.parse().map_err(ApiError::bad_request)?;
    let (secret, record) = new_token(&req.name, role, now_millis()).map_err(|e| match e {
        AccessError::BadName(_) => ApiError::bad_request(e.to_string()),
        AccessError::Random(_) => {
            tracing::error!(error = %e, "cannot make a token");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "cannot make a token; see the server log",
            )
        }
    })?;
    let mut details = Map::new();
    details.insert("name".into(), record.name.clone().into());
    details.insert("role".into(), record.role.clone().into());
    let logged = create_logged(state.store.as_ref(), &record, async || {
        state
            .log_system("TOKEN_CREATE", true, &who, &details)
            .await
            .map(|_| ())
    })
    .await;
    match logged {
        Ok(()) => {}
        Err(CreateError::Conflict) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "a token named {:?} exists already (revoked names stay taken)",
                    record.name
                ),
            ));
        }
        Err(CreateError::Store(e)) => return Err(e.into()),
        Err(CreateError::NotLogged(e)) => {
            return Err(ApiError::new(
                e.status,
                "event_not_logged",
                format!(
                    "the TOKEN_CREATE event could not be logged ({}), so the new token was \
                     revoked again before it was shown; retry later with another name",
                    e.message
                ),
            ));
        }
    }
    state.auth.refresh().await;
    let mut body = token_json(&record);
    body["token"] = secret.into();
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn revoke(
    Admin(who): Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.revoke_token(&name, now_millis()).await? {
        return Err(ApiError::not_found(format!(
            "no valid token is named {name:?}"
        )));
    }
    state.auth.refresh().await;
    let mut details = Map::new();
    details.insert("name".into(), name.clone().into());
    // The revocation stands either way: it only takes access away.
    if let Err(e) = state.log_system("TOKEN_REVOKE", true, &who, &details).await {
        tracing::error!(token = %name, error = %e.message,
            "token revoked, but its TOKEN_REVOKE event could not be logged");
        return Err(ApiError::new(
            e.status,
            "event_not_logged",
            format!(
                "token {name:?} is revoked, but its TOKEN_REVOKE event could not be logged ({}); \
                 the server log names it",
                e.message
            ),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}
