//! `GET /api/v1/keys`: every configured keyid with its algorithm and public key, so an auditor can
//! verify rows independently. HMAC secrets are never shown.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn list(_: crate::guard::Auditor, State(state): State<AppState>) -> Json<Value> {
    let keys: Vec<Value> = state
        .key_listing
        .iter()
        .map(|k| {
            json!({
                "keyid": k.keyid,
                "algorithm": k.algorithm,
                "current": k.current,
                "canSign": k.can_sign,
                "publicKeyPem": k.public_key_pem,
            })
        })
        .collect();
    Json(json!({ "keys": keys }))
}
