//! Storing events: one (`POST /api/v1/events`) or a bulk request (`POST /api/v1/events:batch`),
//! exactly once when the client names the rows (docs/API.md "Retries"), counted in the metrics.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use auditseal_core::device::{Appended, DeviceError, NewEvent};
use auditseal_core::record;

use super::validate::{parse_bulk, parse_event};
use crate::auth::Identity;
use crate::body::body_or_error;
use crate::error::ApiError;
use crate::guard::Ingester;
use crate::state::AppState;

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

/// The answer to a bulk request: each event's row, in the request's order (serialized straight
/// from the rows, without a JSON value of 1,000 objects in between).
#[derive(serde::Serialize)]
pub struct BulkAnswer {
    count: usize,
    events: Vec<Appended>,
}

/// `POST /api/v1/events:batch`: all or nothing, in one batch.
pub async fn create_bulk(
    Ingester(who): Ingester,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<BulkAnswer>), ApiError> {
    let started = Instant::now();
    let events = body_or_error(body, state.max_body_bytes * crate::BULK_BODY_FACTOR)
        .and_then(|body| parse_bulk(&body, &who, state.device.wants_details_listings()));
    let done = store(&state, &who, &headers, events, started).await?;
    Ok((
        status_of(&done),
        Json(BulkAnswer {
            count: done.len(),
            events: done,
        }),
    ))
}

/// `POST /api/v1/events`: one event.
pub async fn create(
    Ingester(who): Ingester,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Appended>), ApiError> {
    let started = Instant::now();
    let event = body_or_error(body, state.max_body_bytes).and_then(|body| {
        let keep_listing = state.device.wants_details_listings();
        Ok(vec![parse_event(&body, &who, keep_listing)?])
    });
    let appended = store(&state, &who, &headers, event, started)
        .await?
        .pop()
        .ok_or_else(|| ApiError::from(DeviceError::Stopped("no row was written".into())))?;
    Ok((status_of(std::slice::from_ref(&appended)), Json(appended)))
}

/// What both routes do with a request's parsed events: check their stored sizes, give them
/// their pks, append them (all or none), and count the request and its HSM findings.
async fn store(
    state: &AppState,
    who: &Identity,
    headers: &HeaderMap,
    events: Result<Vec<NewEvent>, ApiError>,
    started: Instant,
) -> Result<Vec<Appended>, ApiError> {
    let done = async {
        let mut events = events?;
        check_stored_sizes(&events, state.max_event_bytes)?;
        apply_pks(headers, who, &mut events)?;
        let findings = hsm_findings(&events);
        let done = state.device.append_all(events).await?;
        let replayed: Vec<bool> = done.iter().map(|a| a.replayed).collect();
        state.metrics.hsm_findings(&findings, &replayed);
        Ok(done)
    }
    .await;
    counted(state, done, started)
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

/// Counts an ingest request's outcome in the metrics, and passes it on.
fn counted(
    state: &AppState,
    outcome: Result<Vec<Appended>, ApiError>,
    started: Instant,
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
