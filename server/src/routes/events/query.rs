//! Reading rows back: a page of a search (`GET /api/v1/events`), a count, one row by pk; each
//! row verified as it is read when `protection.enable_verify` is set.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use auditseal_core::details;
use auditseal_core::record::AuditRecord;
use auditseal_core::store::{Criterion, Cursor, Order, Query};
use auditseal_core::verify::{Batches, verify_row};

use crate::error::ApiError;
use crate::guard::Auditor;
use crate::state::AppState;

/// Most rows one query returns.
pub const MAX_LIMIT: i64 = 10_000;
pub const DEFAULT_LIMIT: i64 = 100;
/// A row as the API shows it: every column as stored, the details decoded, and the row's
/// verification result. Takes the row by value: its columns move into the answer (a row of
/// 20 MiB is not copied once more).
pub(crate) fn row_json(r: AuditRecord, verification: Value) -> Value {
    let (decoded, details_error) = match r.additional_details.as_deref() {
        None => (Value::Null, None),
        Some(xml) => match details::decode(xml) {
            Ok(d) => (Value::Object(details::to_json(&d)), None),
            Err(e) => (Value::Null, Some(e.to_string())),
        },
    };
    let mut v = json!({
        "pk": r.pk,
        "nodeId": r.node_id,
        "sequenceNumber": r.sequence_number,
        "timeStamp": r.time_stamp,
        "eventType": r.event_type,
        "eventStatus": r.event_status,
        "authToken": r.auth_token,
        "service": r.service,
        "module": r.module,
        "customId": r.custom_id,
        "searchDetail1": r.search_detail1,
        "searchDetail2": r.search_detail2,
        "additionalDetails": r.additional_details,
        "rowVersion": r.row_version,
        "rowProtection": r.row_protection,
        "details": decoded,
        "verification": verification,
    });
    if let (Some(err), Some(obj)) = (details_error, v.as_object_mut()) {
        obj.insert("detailsError".into(), Value::String(err));
    }
    v
}

/// The answer when `error_on_verify_fail` is set and row `r` fails: 500 `verification_failed`
/// naming the row (`then` is appended to the message).
pub(crate) fn verification_failed(
    r: &AuditRecord,
    reason: &impl std::fmt::Display,
    then: &str,
) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "verification_failed",
        format!(
            "row pk={} node={} sequenceNumber={} failed verification: {reason}{then}",
            r.pk, r.node_id, r.sequence_number
        ),
    );
    e.extra = Some(json!({
        "pk": r.pk, "nodeId": r.node_id,
        "sequenceNumber": r.sequence_number, "reason": reason.to_string()
    }));
    e
}

/// Verifies rows as read; with `error_on_verify_fail` the first failing row fails the request.
async fn rows_with_verification(
    state: &AppState,
    rows: Vec<AuditRecord>,
) -> Result<Vec<Value>, ApiError> {
    let mut batches = Batches::default();
    if state.policy.enable_verify {
        batches
            .load_for(state.reader.as_ref(), &state.keys, &rows)
            .await?;
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let verification = if state.policy.enable_verify {
            match verify_row(&state.keys, &batches, &r) {
                Ok(()) => json!({ "valid": true }),
                Err(reason) => {
                    state.metrics.row_failed_on_read("events");
                    tracing::error!(node = %r.node_id, seq = r.sequence_number, pk = %r.pk, %reason,
                        "ALERT row failed verification on read");
                    if state.policy.error_on_verify_fail {
                        return Err(verification_failed(&r, &reason, ""));
                    }
                    json!({ "valid": false, "reason": reason.to_string() })
                }
            }
        } else {
            Value::Null
        };
        out.push(row_json(r, verification));
    }
    Ok(out)
}

fn parse_criterion(v: &str) -> Result<Criterion, ApiError> {
    v.parse::<Criterion>()
        .map_err(|e| ApiError::bad_request(format!("criteria {v:?}: {e}")))
}

/// Reads `criteria=<field> <OP> <value>` (repeatable), `limit=N`, `order=desc|asc` and
/// `cursor=C` (a previous page's `nextCursor`); anything else is an error.
pub(super) fn parse_query(raw: Option<&str>) -> Result<Query, ApiError> {
    let mut q = Query {
        criteria: Vec::new(),
        limit: DEFAULT_LIMIT,
        order: Order::Desc,
        after: None,
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "criteria" => q.criteria.push(parse_criterion(&v)?),
            "limit" => {
                q.limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit must be an integer from 1 to {MAX_LIMIT}, not {v:?}"
                        ))
                    })?
            }
            "order" => {
                q.order = v.parse().map_err(|()| {
                    ApiError::bad_request(format!("order must be desc or asc, not {v:?}"))
                })?
            }
            "cursor" => {
                q.after = Some(Cursor::decode(&v).map_err(|e| {
                    ApiError::bad_request(format!(
                        "{e}; pass the nextCursor of the previous page unchanged"
                    ))
                })?)
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}; use criteria, limit, order and cursor"
                )));
            }
        }
    }
    if let Some(c) = &q.after
        && c.order != q.order
    {
        return Err(ApiError::bad_request(format!(
            "cursor was issued for order={}, but this request has order={}; \
             pass the same order (and criteria) on every page",
            c.order.name(),
            q.order.name()
        )));
    }
    Ok(q)
}

/// Reads `criteria=...` (repeatable) only: the parameters of `GET /api/v1/events:count`.
pub(super) fn parse_count(raw: Option<&str>) -> Result<Vec<Criterion>, ApiError> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| match k.as_ref() {
            "criteria" => parse_criterion(&v),
            other => Err(ApiError::bad_request(format!(
                "unknown query parameter {other:?}; use criteria"
            ))),
        })
        .collect()
}

/// A page of rows; `nextCursor` is null when nothing more matched. A page may hold fewer rows
/// than its limit and still have a cursor: the store reads at most `READ_BUDGET_BYTES` at once.
pub async fn list(
    _: Auditor,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw.as_deref())?;
    let page = state.reader.query(&q).await?;
    let rows = page.rows;
    let next = match rows.last() {
        // Full, or cut short by the server's read budget (rows far larger than usual).
        Some(last) if rows.len() as i64 == q.limit || page.cut => {
            Value::String(Cursor::after(q.order, last).encode())
        }
        _ => Value::Null,
    };
    let events = rows_with_verification(&state, rows).await?;
    Ok(Json(
        json!({ "count": events.len(), "events": events, "nextCursor": next }),
    ))
}

/// `GET /api/v1/events:count`: how many rows match, counted in the database.
pub async fn count(
    _: Auditor,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let criteria = parse_count(raw.as_deref())?;
    let n = state.reader.count(&criteria).await?;
    Ok(Json(json!({ "count": n })))
}

/// The row `pk`, or 404.
pub(crate) async fn stored_row(state: &AppState, pk: &str) -> Result<AuditRecord, ApiError> {
    state
        .reader
        .get(pk)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no event with pk {pk:?}")))
}

pub async fn get_one(
    _: Auditor,
    State(state): State<AppState>,
    Path(pk): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = stored_row(&state, &pk).await?;
    let mut rows = rows_with_verification(&state, vec![row]).await?;
    Ok(Json(rows.remove(0)))
}
