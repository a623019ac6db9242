//! Request bodies, for every route that takes one: the bytes within the limit, and JSON where
//! each problem becomes a 400 naming the field at fault, the body holding exactly one value.

use axum::body::Bytes;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Reads `body` as one `T`; `what` names it in errors ("invalid {what}: ..."). White space may
/// follow the value, nothing else: `{...}xyz` or `{...}{...}` is refused rather than read up to
/// the first value with the rest dropped unseen.
pub(crate) fn json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad_request(format!("invalid {what}: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid {what}: {path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(format!(
            "invalid {what}: data after the JSON value (line {}, column {}); send exactly one \
             JSON value",
            e.line(),
            e.column()
        ))
    })?;
    Ok(value)
}

/// The body axum read, or the error a client can act on: 413 naming `limit` when the body
/// exceeds it, 400 for anything else axum refused.
pub(crate) fn body_or_error(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "payload_too_large",
                format!("the request body exceeds {limit} bytes"),
            )
        } else {
            ApiError::new(status, "bad_request", e.body_text())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct T {
        #[allow(dead_code)]
        a: i32,
    }

    #[test]
    fn exactly_one_value() {
        assert!(json::<T>(br#"{"a":1}"#, "t").is_ok());
        assert!(json::<T>(b" {\"a\":1} \r\n\t", "t").is_ok());
        for body in [&br#"{"a":1}xyz"#[..], br#"{"a":1}{"a":2}"#, br#"{"a":1} 7"#] {
            let e = json::<T>(body, "thing").unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(
                e.message
                    .starts_with("invalid thing: data after the JSON value"),
                "{}",
                e.message
            );
        }
        let e = json::<T>(br#"{"a":"x"}"#, "thing").unwrap_err();
        assert!(
            e.message.starts_with("invalid thing: a: invalid type"),
            "{}",
            e.message
        );
    }
}
