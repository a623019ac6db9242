//! `GET /api/v1/export`: the rows matching criteria as NDJSON, CSV or TSV, signed over the exact
//! bytes (docs/API.md; the formats are in docs/FORMAT.md section 9). The export is built in an
//! unlinked temporary file (rows read in keyset pages, so memory does not grow with the rows),
//! signed, logged as `LOG_EXPORT`, and only then sent.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use auditseal_core::export::{self, ExportError, ExportRequest, ExportWriter, Format};
use auditseal_core::record::AuditRecord;
use auditseal_core::store::Criterion;
use auditseal_core::token::TokenError;
use auditseal_core::verify::{Batches, verify_row};

use crate::error::ApiError;
use crate::guard::Auditor;
use crate::routes::events::verification_failed;
use crate::state::AppState;

/// Rows read per page.
const PAGE: i64 = 2000;

struct ExportQuery {
    format: Format,
    criteria: Vec<Criterion>,
    /// The criteria as given, for the LOG_EXPORT event.
    given: Vec<String>,
    limit: Option<i64>,
}

/// `format=ndjson|csv|tsv` (required), `criteria=...` (repeatable, as `GET /api/v1/events`),
/// `limit=N` (optional); anything else is an error.
fn parse_query(raw: Option<&str>) -> Result<ExportQuery, ApiError> {
    let mut format = None;
    let mut q = ExportQuery {
        format: Format::Ndjson,
        criteria: Vec::new(),
        given: Vec::new(),
        limit: None,
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "format" => {
                format = Some(
                    v.parse::<Format>()
                        .map_err(|e| ApiError::bad_request(format!("format: {e}")))?,
                )
            }
            "criteria" => {
                q.criteria.push(
                    v.parse::<Criterion>()
                        .map_err(|e| ApiError::bad_request(format!("criteria {v:?}: {e}")))?,
                );
                q.given.push(v.into_owned());
            }
            "limit" => {
                q.limit = Some(v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ApiError::bad_request(format!("limit must be a positive integer, not {v:?}"))
                })?)
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}; use format, criteria and limit"
                )));
            }
        }
    }
    q.format = format.ok_or_else(|| {
        ApiError::bad_request("format is required: format=ndjson, format=csv or format=tsv")
    })?;
    Ok(q)
}

fn export_failed(e: ExportError) -> ApiError {
    match e {
        ExportError::Token(TokenError::Unavailable(reason)) => {
            tracing::warn!(%reason, "crypto token unavailable for an export");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "token_unavailable",
                "the signing key is unavailable; the export was not made, retry later",
            )
        }
        other => {
            tracing::error!(error = %other, "export failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "export_failed",
                "the export could not be written or signed; see the server log",
            )
        }
    }
}

fn joined(e: tokio::task::JoinError) -> ApiError {
    tracing::error!(error = %e, "export task failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "export_failed",
        "the export task failed; see the server log",
    )
}

/// Reads the batch statements of a page's version 3 rows (for verification, and for an NDJSON
/// export, which carries them) and verifies the rows as read (policy as `GET /api/v1/events`):
/// with `error_on_verify_fail` the first failing row fails the export before anything is sent.
/// Returns the statements and how many rows failed.
async fn check_page(
    state: &AppState,
    rows: &[AuditRecord],
    format: Format,
) -> Result<(Batches, u64), ApiError> {
    let mut batches = Batches::default();
    if !state.policy.enable_verify && format != Format::Ndjson {
        return Ok((batches, 0));
    }
    batches
        .load_for(state.reader.as_ref(), &state.keys, rows)
        .await?;
    let mut failed = 0;
    if state.policy.enable_verify {
        for r in rows {
            if let Err(reason) = verify_row(&state.keys, &batches, r) {
                state.metrics.row_failed_on_read("export");
                tracing::error!(node = %r.node_id, seq = r.sequence_number, pk = %r.pk, %reason,
                    "ALERT row failed verification during an export");
                if state.policy.error_on_verify_fail {
                    return Err(verification_failed(r, &reason, "; nothing was exported"));
                }
                failed += 1;
            }
        }
    }
    Ok((batches, failed))
}

pub async fn export(
    Auditor(who): Auditor,
    State(state): State<AppState>,
    method: Method,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse_query(raw.as_deref())?;
    let signer = state.signer.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "signing_disabled",
            "exports are signed with the server's current key, and signing is off \
             (protection.enable_sign = false); turn it on to export",
        )
    })?;
    let format = q.format;
    // HEAD (which axum routes here) checks the request and answers the headers known before
    // the export is made: nothing is read, signed or logged. Length, rows and signature are
    // only known by making it.
    if method == Method::HEAD {
        let mut resp = StatusCode::OK.into_response();
        content_headers(resp.headers_mut(), format);
        return Ok(resp);
    }
    // What was asked, by which node, when: signed with the rows (docs/FORMAT.md section 9).
    let request = ExportRequest::new(
        format,
        state.device.node_id(),
        auditseal_core::time::now_millis(),
        &q.criteria,
        q.limit,
    );
    let created_at = request.created_at;
    let (done, unverified) = write_export(&state, &q, request, signer).await?;
    // An export that cannot be logged is not delivered.
    let details = log_details(&q, created_at, &done, unverified);
    state.log_system("LOG_EXPORT", true, &who, &details).await?;
    response(done, format)
}

/// Writes every matching row, page by page, into a temporary file, checking each page's rows,
/// and signs it: the finished export and how many rows failed verification.
async fn write_export(
    state: &AppState,
    q: &ExportQuery,
    request: ExportRequest,
    signer: auditseal_core::token::SharedToken,
) -> Result<(export::Finished, u64), ApiError> {
    let format = q.format;
    let mut writer = tokio::task::spawn_blocking(move || {
        ExportWriter::new(format, export::temp_file()?, &request).map_err(|source| {
            ExportError::Io {
                path: std::env::temp_dir(),
                source,
            }
        })
    })
    .await
    .map_err(joined)?
    .map_err(export_failed)?;
    let mut after = None;
    let mut remaining = q.limit.unwrap_or(i64::MAX);
    let mut unverified = 0;
    while remaining > 0 {
        let want = PAGE.min(remaining);
        let page = state
            .reader
            .export_page(&q.criteria, after.take(), want)
            .await?;
        let (rows, cut) = (page.rows, page.cut);
        let n = rows.len() as i64;
        let (stmts, failed) = check_page(state, &rows, format).await?;
        unverified += failed;
        after = rows
            .last()
            .map(|r| (r.node_id.clone(), r.sequence_number, r.pk.clone()));
        writer =
            tokio::task::spawn_blocking(move || writer.write_rows(&rows, &stmts).map(|_| writer))
                .await
                .map_err(joined)?
                .map_err(|source| {
                    export_failed(ExportError::Io {
                        path: std::env::temp_dir(),
                        source,
                    })
                })?;
        remaining -= n;
        // A short page is the end, unless the read budget cut it (very large rows).
        if n < want && !cut {
            break;
        }
    }
    let done = tokio::task::spawn_blocking(move || writer.finish(&*signer))
        .await
        .map_err(joined)?
        .map_err(export_failed)?;
    Ok((done, unverified))
}

/// The LOG_EXPORT event's details: what was asked and what was delivered.
fn log_details(
    q: &ExportQuery,
    created_at: i64,
    done: &export::Finished,
    unverified: u64,
) -> Map<String, Value> {
    let mut details = Map::new();
    details.insert("format".into(), q.format.name().into());
    details.insert(
        "criteria".into(),
        Value::Array(q.given.iter().map(|c| Value::from(c.as_str())).collect()),
    );
    if let Some(l) = q.limit {
        details.insert("limit".into(), l.into());
    }
    details.insert("createdAt".into(), created_at.into());
    details.insert("rows".into(), done.rows.into());
    details.insert("bytes".into(), done.bytes.into());
    details.insert("sha256".into(), done.sha256.clone().into());
    details.insert("keyId".into(), done.key_id.into());
    if unverified > 0 {
        details.insert("rowsFailingVerification".into(), unverified.into());
    }
    details
}

/// The signed export as the response: its file as the body, its signature and request in
/// headers.
fn response(done: export::Finished, format: Format) -> Result<Response, ApiError> {
    let value = |v: String| {
        HeaderValue::from_str(&v).map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "export_failed",
                "a response header could not be built",
            )
        })
    };
    let mut resp = Body::from_stream(export::into_stream(done.file)).into_response();
    let h = resp.headers_mut();
    content_headers(h, format);
    h.insert(header::CONTENT_LENGTH, value(done.bytes.to_string())?);
    h.insert("x-auditseal-signature", value(done.signature)?);
    h.insert("x-auditseal-request", value(done.request)?);
    h.insert("x-auditseal-rows", value(done.rows.to_string())?);
    h.insert("x-auditseal-sha256", value(done.sha256)?);
    Ok(resp)
}

/// The headers an export in `format` has whatever its content (GET and HEAD).
fn content_headers(h: &mut HeaderMap, format: Format) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    // Always valid: the format names are plain ASCII.
    let name = format!(
        "attachment; filename=\"auditseal-export.{}\"",
        format.name()
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters() {
        let q = parse_query(Some(
            "format=csv&criteria=eventType+EQ+PROCESS&criteria=customId%20NULL&limit=5",
        ))
        .unwrap();
        assert_eq!(
            (q.format, q.criteria.len(), q.limit),
            (Format::Csv, 2, Some(5))
        );
        assert_eq!(q.given, ["eventType EQ PROCESS", "customId NULL"]);
        for (raw, needle) in [
            ("format=xml", "xml"),
            ("criteria=eventType+EQ+X", "format is required"),
            ("format=tsv&criteria=bogus+EQ+1", "bogus"),
            ("format=tsv&criteria=eventType+ABOUT+1", "ABOUT"),
            ("format=tsv&limit=0", "limit"),
            ("format=tsv&order=asc", "order"),
        ] {
            let e = parse_query(Some(raw)).err().unwrap();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(needle), "{raw}: {}", e.message);
        }
    }
}
