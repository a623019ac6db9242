//! `POST /api/v1/events`, `GET /api/v1/events`, `GET /api/v1/events:count`,
//! `GET /api/v1/events/{pk}`.
//! The request and response formats are described in docs/API.md.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use auditseal_core::details;
use auditseal_core::device::{Appended, DeviceError, NewEvent, SYSTEM_SERVICE};
use auditseal_core::record::{self, AuditRecord, EVENT_STATUSES};
use auditseal_core::store::{Criterion, Cursor, Order, Query};
use auditseal_core::verify::{Batches, verify_row};

use crate::auth::{Auditor, Identity, Ingester, SUBMITTER_KEY};
use crate::error::ApiError;
use crate::names;
use crate::state::AppState;

use auditseal_core::details::JAVA_VERSION;

/// additionalDetails keys a client may not send: the server's own (`auditseal.submitter`).
pub const RESERVED_PREFIX: &str = "auditseal.";
/// `RESERVED_PREFIX` without its separator: a key that reads as this followed by any
/// separator (or nothing) is reserved (docs/API.md "Names").
const RESERVED_ROOT: &str = "auditseal";

/// Most rows one query returns.
pub const MAX_LIMIT: i64 = 10_000;
pub const DEFAULT_LIMIT: i64 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EventIn {
    event_type: String,
    event_status: String,
    auth_token: String,
    service: String,
    module: String,
    custom_id: Option<String>,
    search_detail1: Option<String>,
    search_detail2: Option<String>,
    additional_details: Option<Map<String, Value>>,
    /// Exactly-once ingestion: the row's pk, chosen by the client (docs/API.md "Retries").
    pk: Option<String>,
}

/// PostgreSQL TEXT cannot hold NUL; refuse it up front so bad input never reaches the device.
fn check_text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{field} contains a NUL character, which cannot be stored"
        )));
    }
    Ok(())
}

fn check_required(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::bad_request(format!("{field} must not be empty")));
    }
    check_text(field, value)
}

/// A name people read (service, eventType, module, a details key): non-empty when `required`,
/// no NUL, and no invisible character (docs/API.md "Names").
fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    check_text(field, value)?;
    names::check_visible(field, value).map_err(ApiError::bad_request)
}

fn check_json_text(path: &str, v: &Value) -> Result<(), ApiError> {
    match v {
        Value::String(s) => check_text(path, s),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_json_text(&format!("{path}[{i}]"), x)),
        Value::Object(o) => o.iter().try_for_each(|(k, x)| {
            let p = format!("{path}.{k}");
            check_name(&format!("the key of {p}"), k)?;
            check_json_text(&p, x)
        }),
        _ => Ok(()),
    }
}

impl EventIn {
    /// The event to append, with `who` recorded under the reserved key `auditseal.submitter`.
    fn into_event(self, who: &Identity) -> Result<NewEvent, ApiError> {
        check_required("eventType", &self.event_type)?;
        check_required("authToken", &self.auth_token)?;
        check_required("service", &self.service)?;
        check_required("module", &self.module)?;
        for (field, name) in [
            ("eventType", &self.event_type),
            ("service", &self.service),
            ("module", &self.module),
        ] {
            check_name(field, name)?;
        }
        // auditseal's own events (LOG_VERIFY, TOKEN_CREATE, ...) cannot be imitated, however
        // spelled: "Auditseal ", or with a Cyrillic А, reads the same to a person.
        if names::reads_as(&self.service, SYSTEM_SERVICE) {
            return Err(ApiError::bad_request(format!(
                "service {:?} reads as {SYSTEM_SERVICE:?}, which is reserved to the events \
                 auditseal logs itself",
                self.service
            )));
        }
        if !EVENT_STATUSES.contains(&self.event_status.as_str()) {
            return Err(ApiError::bad_request(format!(
                "eventStatus {:?} is not one of {}",
                self.event_status,
                EVENT_STATUSES.join(", ")
            )));
        }
        for (name, v) in [
            ("customId", &self.custom_id),
            ("searchDetail1", &self.search_detail1),
            ("searchDetail2", &self.search_detail2),
        ] {
            if let Some(v) = v {
                check_text(name, v)?;
            }
        }
        let mut map = self.additional_details.unwrap_or_default();
        map.iter().try_for_each(|(k, v)| {
            let path = format!("additionalDetails.{k}");
            check_name(&format!("the key of {path}"), k)?;
            if names::in_namespace(k, RESERVED_ROOT) {
                return Err(ApiError::bad_request(format!(
                    "{path}: the key reads as one starting with {RESERVED_PREFIX:?}, and such \
                     keys are reserved to the server (it records the submitter under \
                     {SUBMITTER_KEY:?})"
                )));
            }
            check_json_text(&path, v)
        })?;
        let pk = self
            .pk
            .as_deref()
            .map(record::client_pk)
            .transpose()
            .map_err(ApiError::bad_request)?;
        map.insert(SUBMITTER_KEY.into(), Value::String(who.name.clone()));
        let d = details::from_json(&map)
            .map_err(|e| ApiError::bad_request(format!("additionalDetails: {e}")))?;
        let additional_details = Some(details::encode(
            &d,
            details::MapClass::Base64PutHashMap,
            JAVA_VERSION,
        ));
        Ok(NewEvent {
            event_type: self.event_type,
            event_status: self.event_status,
            auth_token: self.auth_token,
            service: self.service,
            module: self.module,
            custom_id: self.custom_id,
            search_detail1: self.search_detail1,
            search_detail2: self.search_detail2,
            additional_details,
            pk,
        })
    }
}

/// Parses the body ourselves so that every JSON problem gets a message naming the field.
fn parse_event(body: &[u8], who: &Identity) -> Result<NewEvent, ApiError> {
    crate::body::json::<EventIn>(body, "event JSON")?.into_event(who)
}

/// Most events in one bulk request.
pub const MAX_BULK_EVENTS: usize = 10_000;

/// Parses a bulk body: a JSON array of events, or NDJSON (one event per line; blank lines
/// skipped). Every bad item is named with its index; any bad item rejects the whole request.
fn parse_bulk(body: &[u8], who: &Identity) -> Result<Vec<NewEvent>, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let items: Vec<&[u8]> = if text.trim_start().starts_with('[') {
        let raw: Vec<&serde_json::value::RawValue> = serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON array: {e}")))?;
        raw.into_iter().map(|r| r.get().as_bytes()).collect()
    } else {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::as_bytes)
            .collect()
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("no events in the request"));
    }
    if items.len() > MAX_BULK_EVENTS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "{} events; at most {MAX_BULK_EVENTS} per request",
                items.len()
            ),
        ));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match parse_event(item, who) {
            Ok(e) => events.push(e),
            Err(e) => bad.push(json!({ "index": index, "reason": e.message })),
        }
    }
    if !bad.is_empty() {
        let mut e = ApiError::bad_request(format!(
            "{} of the events are invalid; nothing was written",
            bad.len()
        ));
        e.extra = Some(json!({ "invalid": bad }));
        return Err(e);
    }
    Ok(events)
}

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

/// The request header that makes a request's events exactly-once without a pk in each.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Gives each event the pk its request's `Idempotency-Key` names (docs/API.md "Retries"), and
/// refuses a request that repeats a pk.
fn apply_pks(headers: &HeaderMap, who: &Identity, events: &mut [NewEvent]) -> Result<(), ApiError> {
    if let Some(key) = headers.get(IDEMPOTENCY_KEY) {
        let key = key
            .to_str()
            .ok()
            .filter(|k| !k.trim().is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters")
            })?;
        for (i, e) in events.iter_mut().enumerate() {
            if e.pk.is_some() {
                return Err(ApiError::bad_request(
                    "an event with its own pk in a request with an Idempotency-Key: send one or \
                     the other",
                ));
            }
            e.pk = Some(record::idempotency_pk(&who.name, key, i));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, pk) in events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((i, e.pk.as_ref()?)))
    {
        if !seen.insert(pk) {
            return Err(ApiError::bad_request(format!(
                "event {i} repeats pk {pk} of an earlier event of this request"
            )));
        }
    }
    Ok(())
}

/// Refuses, with 413 naming the limit, an event whose stored form is larger than
/// `server.max_event_bytes`, and a request whose events together are larger than
/// `BULK_BODY_FACTOR` times that: the encoding can make an event much larger than its JSON
/// (an empty JSON array becomes an XML element), so the body limit alone does not bound storage.
fn check_stored_sizes(events: &[NewEvent], limit: usize) -> Result<(), ApiError> {
    let too_large =
        |m: String| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m);
    let mut total = 0usize;
    for (i, e) in events.iter().enumerate() {
        let n = e.stored_bytes();
        if n > limit {
            let which = if events.len() == 1 {
                "the event".to_string()
            } else {
                format!("event {i}")
            };
            return Err(too_large(format!(
                "{which} takes {n} bytes as stored (additionalDetails as XML); at most {limit} \
                 (server.max_event_bytes); nothing was written"
            )));
        }
        total += n;
    }
    let bulk_limit = limit.saturating_mul(crate::BULK_BODY_FACTOR);
    if total > bulk_limit {
        return Err(too_large(format!(
            "the events take {total} bytes as stored; at most {bulk_limit} in one request \
             ({} times server.max_event_bytes); nothing was written",
            crate::BULK_BODY_FACTOR
        )));
    }
    Ok(())
}

/// 201 when anything was written, 200 when every event was a retry answered from stored rows.
fn status_of(done: &[Appended]) -> StatusCode {
    if done.iter().all(|a| a.replayed) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// `POST /api/v1/events:batch`: all or nothing, in one batch.
pub async fn create_bulk(
    Ingester(who): Ingester,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let started = std::time::Instant::now();
    let done = async {
        let body = body_or_error(body, state.max_body_bytes * crate::BULK_BODY_FACTOR)?;
        let mut events = parse_bulk(&body, &who)?;
        check_stored_sizes(&events, state.max_event_bytes)?;
        apply_pks(&headers, &who, &mut events)?;
        let findings = hsm_findings(&events);
        let done = state.device.append_all(events).await?;
        let replayed: Vec<bool> = done.iter().map(|a| a.replayed).collect();
        state.metrics.hsm_findings(&findings, &replayed);
        Ok(done)
    }
    .await;
    let done = counted(&state, done, started)?;
    Ok((
        status_of(&done),
        Json(json!({ "count": done.len(), "events": done })),
    ))
}

/// The HSM findings among `events`, by index: (index, authToken, kind).
fn hsm_findings(events: &[NewEvent]) -> Vec<(usize, String, &'static str)> {
    events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            crate::metrics::hsm_finding(&e.service, &e.event_type)
                .map(|kind| (i, e.auth_token.clone(), kind))
        })
        .collect()
}

pub async fn create(
    Ingester(who): Ingester,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Appended>), ApiError> {
    let started = std::time::Instant::now();
    let appended = async {
        let body = body_or_error(body, state.max_body_bytes)?;
        let mut event = [parse_event(&body, &who)?];
        check_stored_sizes(&event, state.max_event_bytes)?;
        apply_pks(&headers, &who, &mut event)?;
        let findings = hsm_findings(&event);
        let [event] = event;
        let appended = state.device.append(event).await?;
        state.metrics.hsm_findings(&findings, &[appended.replayed]);
        Ok(vec![appended])
    }
    .await;
    let appended = counted(&state, appended, started)?
        .pop()
        .ok_or_else(|| ApiError::from(DeviceError::Stopped("no row was written".into())))?;
    Ok((status_of(std::slice::from_ref(&appended)), Json(appended)))
}

/// Counts an ingest request's outcome in the metrics, and passes it on.
fn counted(
    state: &AppState,
    outcome: Result<Vec<Appended>, ApiError>,
    started: std::time::Instant,
) -> Result<Vec<Appended>, ApiError> {
    match &outcome {
        Ok(done) => {
            let replayed: Vec<bool> = done.iter().map(|a| a.replayed).collect();
            state.metrics.ingest(Ok(&replayed), started);
            // Stored (and signed): an outage of either is over.
            crate::outage::SIGNING_KEY.answered();
            crate::outage::QUEUE.answered();
        }
        Err(e) => state.metrics.ingest(Err(e.code), started),
    }
    outcome
}

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
fn parse_query(raw: Option<&str>) -> Result<Query, ApiError> {
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
fn parse_count(raw: Option<&str>) -> Result<Vec<Criterion>, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Identity {
        Identity {
            name: "token:signer-1".into(),
            role: auditseal_core::access::Role::Ingest,
        }
    }

    #[test]
    fn the_submitter_is_recorded_and_cannot_be_claimed() {
        let plain =
            br#"{"eventType":"P","eventStatus":"VOID","authToken":"a","service":"s","module":"m"}"#;
        let with = br#"{"eventType":"P","eventStatus":"VOID","authToken":"a","service":"s","module":"m","additionalDetails":{"k":"v"}}"#;
        for body in [&plain[..], &with[..]] {
            let e = parse_event(body, &who()).unwrap();
            let d = details::decode(e.additional_details.as_deref().unwrap()).unwrap();
            let json = details::to_json(&d);
            assert_eq!(json[SUBMITTER_KEY], "token:signer-1");
        }
        for service in ["AUDITSEAL", "auditseal", " Auditseal "] {
            let system = format!(
                r#"{{"eventType":"TOKEN_CREATE","eventStatus":"SUCCESS","authToken":"a","service":"{service}","module":"SECURITY_AUDIT"}}"#
            );
            let e = parse_event(system.as_bytes(), &who()).unwrap_err();
            assert!(e.message.contains("reserved"), "{service:?}: {}", e.message);
        }
        for key in [
            SUBMITTER_KEY,
            "auditseal.other",
            "AUDITSEAL.SUBMITTER",
            " Auditseal.submitter",
        ] {
            let body = format!(
                r#"{{"eventType":"P","eventStatus":"VOID","authToken":"a","service":"s","module":"m","additionalDetails":{{"{key}":"token:admin"}}}}"#
            );
            let e = parse_event(body.as_bytes(), &who()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("reserved"), "{}", e.message);
        }
    }

    fn body_with(service: &str, event_type: &str, module: &str, details: &str) -> String {
        json!({
            "eventType": event_type, "eventStatus": "SUCCESS", "authToken": "a",
            "service": service, "module": module,
            "additionalDetails": serde_json::from_str::<Value>(details).unwrap(),
        })
        .to_string()
    }

    #[test]
    fn look_alike_reserved_names_and_invisible_characters_are_refused() {
        // Seen in the wild: the reserved service with a zero-width space or a Cyrillic А, and
        // a zero-width space before the submitter key beside the real one.
        for (service, event_type, module, details, needle) in [
            (
                "AUDITSEAL\u{200B}",
                "LOG_VERIFY",
                "SECURITY_AUDIT",
                "{}",
                "U+200B",
            ),
            (
                "\u{410}UDITSEAL",
                "TOKEN_CREATE",
                "SECURITY_AUDIT",
                "{}",
                "reserved",
            ),
            (
                "AUD\u{399}TSEAL",
                "LOG_VERIFY",
                "SECURITY_AUDIT",
                "{}",
                "reserved",
            ),
            (
                "\u{FF21}UDITSEAL",
                "LOG_VERIFY",
                "SECURITY_AUDIT",
                "{}",
                "reserved",
            ),
            (
                "AUDlTSEAL",
                "LOG_VERIFY",
                "SECURITY_AUDIT",
                "{}",
                "reserved",
            ),
            (
                "\u{202E}LAESTIDUA",
                "LOG_VERIFY",
                "SECURITY_AUDIT",
                "{}",
                "U+202E",
            ),
            (
                "SIGNSERVER",
                "LOG_VERIFY\u{2060}",
                "SECURITY_AUDIT",
                "{}",
                "eventType",
            ),
            ("SIGNSERVER", "PROCESS", "WORKER\u{FE0F}", "{}", "module"),
            ("SIGNSERVER", "PROCESS", "WORKER\t", "{}", "U+0009"),
            (
                "SIGNSERVER",
                "PROCESS",
                "WORKER",
                r#"{"\u200bauditseal.submitter": "token:admin"}"#,
                "U+200B",
            ),
            (
                "SIGNSERVER",
                "PROCESS",
                "WORKER",
                r#"{"\u0430uditseal.submitter": "token:admin"}"#,
                "reserved",
            ),
            (
                "SIGNSERVER",
                "PROCESS",
                "WORKER",
                r#"{"auditseal\uff0esubmitter": "token:admin"}"#,
                "reserved",
            ),
            (
                "SIGNSERVER",
                "PROCESS",
                "WORKER",
                r#"{"auditseal_submitter": "token:admin"}"#,
                "reserved",
            ),
            (
                "SIGNSERVER",
                "PROCESS",
                "WORKER",
                r#"{"outer": {"in\u2066ner": 1}}"#,
                "U+2066",
            ),
        ] {
            let body = body_with(service, event_type, module, details);
            let e = parse_event(body.as_bytes(), &who()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
        // Not names: values may hold anything but NUL; and other scripts are fine in names.
        for (service, details) in [
            ("SIGNSERVER", r#"{"NOTE": "a\u200bb\u202e"}"#),
            (
                "СЕРВИС",
                r#"{"ÅÄÖ": "x", "auditsealing": 1, "my.auditseal.x": 2}"#,
            ),
        ] {
            let body = body_with(service, "PROCESS", "WORKER", details);
            parse_event(body.as_bytes(), &who()).unwrap_or_else(|e| panic!("{body}: {e:?}"));
        }
    }

    #[test]
    fn details_are_shown_as_cesecore_shows_them() {
        // What the query, get and live-follow answers show in `details`: top-level `B64:`
        // values decoded (prefix in any case), nested ones and undecodable ones as stored.
        let body = body_with(
            "SIGNSERVER",
            "PROCESS",
            "WORKER",
            r#"{"a": "b64:dG9rZW46YWRtaW4=", "b": "B64:", "c": "B64:%%%%", "d": "åäö",
                "list": ["B64:w6XDpMO2"], "map": {"x": "B64:w6XDpMO2"}}"#,
        );
        let row = parse_event(body.as_bytes(), &who())
            .unwrap()
            .into_record("n", 0, 0);
        let shown = row_json(row, Value::Null);
        assert_eq!(
            shown["details"],
            json!({"a": "token:admin", "b": "B64:", "c": "B64:%%%%", "d": "åäö",
                   "list": ["B64:w6XDpMO2"], "map": {"x": "B64:w6XDpMO2"},
                   SUBMITTER_KEY: "token:signer-1"}),
            "{shown}"
        );
    }

    #[test]
    fn rejects_bad_events_with_field_names() {
        let ok = br#"{"eventType":"PROCESS","eventStatus":"SUCCESS","authToken":"CLI User","service":"SIGNSERVER","module":"WORKER"}"#;
        assert!(parse_event(ok, &who()).is_ok());
        for (body, needle) in [
            (&br#"{"eventType":"PROCESS"}"#[..], "missing field"),
            (br#"{"eventType":"PROCESS","eventStatus":"SUCCESS","authToken":"a","service":"s","module":"m","bogus":1}"#, "bogus"),
            (br#"{"eventType":5,"eventStatus":"SUCCESS","authToken":"a","service":"s","module":"m"}"#, "invalid type"),
            (br#"{"eventType":"P","eventStatus":"MAYBE","authToken":"a","service":"s","module":"m"}"#, "MAYBE"),
            (br#"{"eventType":"","eventStatus":"VOID","authToken":"a","service":"s","module":"m"}"#, "eventType"),
            (br#"{"eventType":"P","eventStatus":"VOID","authToken":"a","service":"s","module":"m","customId":"a\u0000b"}"#, "NUL"),
            (br#"not json"#, "invalid event JSON"),
        ] {
            let e = parse_event(body, &who()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
        }
    }

    #[test]
    fn bulk_bodies_array_ndjson_and_all_or_nothing() {
        let good =
            r#"{"eventType":"P","eventStatus":"VOID","authToken":"a","service":"s","module":"m"}"#;
        assert_eq!(
            parse_bulk(format!("[{good},{good}]").as_bytes(), &who())
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse_bulk(format!("{good}\n\n{good}\n{good}\n").as_bytes(), &who())
                .unwrap()
                .len(),
            3
        );
        let bad =
            r#"{"eventType":"P","eventStatus":"NOPE","authToken":"a","service":"s","module":"m"}"#;
        let e = parse_bulk(format!("[{good},{bad},{good},{{}}]").as_bytes(), &who()).unwrap_err();
        let extra = e.extra.unwrap();
        let invalid = extra["invalid"].as_array().unwrap();
        assert_eq!(invalid.len(), 2);
        assert_eq!(
            (invalid[0]["index"].as_i64(), invalid[1]["index"].as_i64()),
            (Some(1), Some(3))
        );
        assert!(invalid[0]["reason"].as_str().unwrap().contains("NOPE"));
        assert!(parse_bulk(b"[]", &who()).is_err());
        assert!(parse_bulk(b"[1,", &who()).is_err());
    }

    #[test]
    fn query_parameters() {
        let q = parse_query(Some(
            "criteria=eventType+EQ+PROCESS&criteria=customId%20NULL&limit=5",
        ))
        .unwrap();
        assert_eq!((q.criteria.len(), q.limit), (2, 5));
        assert!(parse_query(Some("limit=0")).is_err());
        assert_eq!(parse_query(Some("order=asc")).unwrap().order, Order::Asc);
        assert_eq!(parse_query(None).unwrap().order, Order::Desc);
        assert!(
            parse_query(Some("order=sideways"))
                .unwrap_err()
                .message
                .contains("order")
        );
        assert!(
            parse_query(Some("sort=asc"))
                .unwrap_err()
                .message
                .contains("sort")
        );
        assert!(
            parse_query(Some("criteria=nope+EQ+1"))
                .unwrap_err()
                .message
                .contains("nope")
        );
    }

    #[test]
    fn cursor_parameter_must_decode_and_match_the_order() {
        let c = Cursor {
            order: Order::Asc,
            time_stamp: 10,
            node_id: "node1".into(),
            sequence_number: 3,
        }
        .encode();
        let q = parse_query(Some(&format!("order=asc&cursor={c}&limit=2"))).unwrap();
        assert_eq!(q.after.map(|a| a.sequence_number), Some(3));
        // The order may come after the cursor in the query string.
        assert!(parse_query(Some(&format!("cursor={c}&order=asc"))).is_ok());
        for bad in [
            format!("cursor={c}"),
            format!("order=desc&cursor={c}"),
            "cursor=not-a-cursor".to_string(),
            "cursor=%27%3B%20DROP%20TABLE%20auditrecorddata%3B--".to_string(),
        ] {
            let e = parse_query(Some(&bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("cursor"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn count_parameters() {
        assert_eq!(
            parse_count(Some("criteria=eventType+EQ+A&criteria=customId+NULL"))
                .unwrap()
                .len(),
            2
        );
        assert!(parse_count(None).unwrap().is_empty());
        for (bad, needle) in [
            ("limit=5", "limit"),
            ("order=asc", "order"),
            ("criteria=colour+EQ+red", "colour"),
            ("criteria=eventType+ABOUT+x", "ABOUT"),
            ("criteria=timeStamp+GE+yesterday", "yesterday"),
        ] {
            let e = parse_count(Some(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(needle), "{bad}: {}", e.message);
        }
    }
}
