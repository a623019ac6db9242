//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of every route. It is written by hand
//! in server/openapi.json (prose in docs/API.md); tests/tests/openapi.rs keeps it in step with the
//! router.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, built into the binary.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn openapi(_: crate::guard::Caller) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_is_json() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    }
}
