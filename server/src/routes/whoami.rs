//! `GET /api/v1/whoami`: who the credentials of the request are and what their role may do, so
//! a client (the web console, docs/UI.md) can offer only what the caller is allowed.

use axum::Json;
use serde_json::{Value, json};

use auditseal_core::access::Role;

use crate::guard::Caller;

pub async fn whoami(Caller(id): Caller) -> Json<Value> {
    Json(json!({
        "name": id.name,
        "role": id.role.as_str(),
        "canIngest": id.role.grants(Role::Ingest),
        "canAudit": id.role.grants(Role::Auditor),
        "canAdmin": id.role.grants(Role::Admin),
    }))
}
