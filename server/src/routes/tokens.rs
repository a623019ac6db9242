//! `GET /api/v1/tokens`, `POST /api/v1/tokens`, `DELETE /api/v1/tokens/{name}`: API token
//! management for admins (the same as `auditseal-db token list|create|revoke`). A token is
//! shown once, when created; only its hash is stored. Creating and revoking are logged as
//! `TOKEN_CREATE` and `TOKEN_REVOKE` events; a token whose TOKEN_CREATE cannot be logged is
//! revoked at once (a revocation stands even when its event cannot be logged: it only takes
//! access away, and the request fails so the admin knows).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use auditseal_core::access::{Role, new_token};
use auditseal_core::store::StoreError;
use auditseal_core::time::{format_iso8601, now_millis};

use crate::auth::Admin;
use crate::error::ApiError;
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
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let req: NewToken = serde_path_to_error::deserialize(de)
        .map_err(|e| ApiError::bad_request(format!("invalid token request: {e}")))?;
    let role: Role = req.role.parse().map_err(ApiError::bad_request)?;
    let (secret, record) = new_token(&req.name, role, now_millis())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    match state.store.insert_token(&record).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "a token named {:?} exists already (revoked names stay taken)",
                    record.name
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let mut details = Map::new();
    details.insert("name".into(), record.name.clone().into());
    details.insert("role".into(), record.role.clone().into());
    // No token without its event: if the event cannot be logged, the token is revoked again
    // before anyone has seen it.
    if let Err(e) = state.log_system("TOKEN_CREATE", true, &who, &details).await {
        if let Err(r) = state.store.revoke_token(&record.name, now_millis()).await {
            tracing::error!(token = %record.name, error = %r,
                "TOKEN_CREATE could not be logged and the new token could not be revoked");
        }
        return Err(e);
    }
    state.auth.invalidate().await;
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
    state.auth.invalidate().await;
    let mut details = Map::new();
    details.insert("name".into(), name.into());
    state
        .log_system("TOKEN_REVOKE", true, &who, &details)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
