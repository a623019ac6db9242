//! An event as a client sends it: parsed, checked field by field (docs/API.md "Names"), and
//! made into the event the log device appends, with its submitter recorded.

use std::fmt::Display;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use auditseal_core::details::{self, JAVA_VERSION};
use auditseal_core::device::{NewEvent, SYSTEM_SERVICE};
use auditseal_core::record::{self, EVENT_STATUSES};

use crate::auth::{Identity, SUBMITTER_KEY};
use crate::error::ApiError;
use crate::names;

/// additionalDetails keys a client may not send: the server's own (`auditseal.submitter`).
pub const RESERVED_PREFIX: &str = "auditseal.";
/// `RESERVED_PREFIX` without its separator: a key that reads as this followed by any
/// separator (or nothing) is reserved (docs/API.md "Names").
const RESERVED_ROOT: &str = "auditseal";
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
/// `field` is formatted only for an error: most events are valid, and a path built for each
/// additionalDetails key cost allocations on every request.
fn check_text(field: &(impl Display + ?Sized), value: &str) -> Result<(), ApiError> {
    if value.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{field} contains a NUL character, which cannot be stored"
        )));
    }
    Ok(())
}

fn check_required(field: &(impl Display + ?Sized), value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::bad_request(format!("{field} must not be empty")));
    }
    check_text(field, value)
}

/// A name people read (service, eventType, module, a details key): non-empty when `required`,
/// no NUL, and no invisible character (docs/API.md "Names").
fn check_name(field: &(impl Display + ?Sized), value: &str) -> Result<(), ApiError> {
    check_text(field, value)?;
    names::check_visible(field, value).map_err(ApiError::bad_request)
}

fn check_json_text(path: &dyn Display, v: &Value) -> Result<(), ApiError> {
    match v {
        Value::String(s) => check_text(path, s),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_json_text(&format_args!("{path}[{i}]"), x)),
        Value::Object(o) => o.iter().try_for_each(|(k, x)| {
            check_name(&format_args!("the key of {path}.{k}"), k)?;
            check_json_text(&format_args!("{path}.{k}"), x)
        }),
        _ => Ok(()),
    }
}

impl EventIn {
    /// The event to append, with `who` recorded under the reserved key `auditseal.submitter`;
    /// with the listing of its details (`NewEvent::details_listing`) when `keep_listing`.
    fn into_event(self, who: &Identity, keep_listing: bool) -> Result<NewEvent, ApiError> {
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
            let path = format_args!("additionalDetails.{k}");
            check_name(&format_args!("the key of {path}"), k)?;
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
        let class = details::MapClass::Base64PutHashMap;
        let (xml, details_listing) = if keep_listing {
            details::encode_listed(&d, class, JAVA_VERSION)
        } else {
            (details::encode(&d, class, JAVA_VERSION), Default::default())
        };
        Ok(NewEvent {
            event_type: self.event_type,
            event_status: self.event_status,
            auth_token: self.auth_token,
            service: self.service,
            module: self.module,
            custom_id: self.custom_id,
            search_detail1: self.search_detail1,
            search_detail2: self.search_detail2,
            additional_details: Some(xml),
            pk,
            details_listing,
        })
    }
}

/// Parses the body ourselves so that every JSON problem gets a message naming the field.
/// `keep_listing`: make the details' listing with the event
/// (`LogDevice::wants_details_listings`).
pub(super) fn parse_event(
    body: &[u8],
    who: &Identity,
    keep_listing: bool,
) -> Result<NewEvent, ApiError> {
    crate::body::json::<EventIn>(body, "event JSON")?.into_event(who, keep_listing)
}
/// Most events in one bulk request.
pub const MAX_BULK_EVENTS: usize = 10_000;

/// Parses a bulk body: a JSON array of events, or NDJSON (one event per line; blank lines
/// skipped). Every bad item is named with its index; any bad item rejects the whole request.
pub(super) fn parse_bulk(
    body: &[u8],
    who: &Identity,
    keep_listing: bool,
) -> Result<Vec<NewEvent>, ApiError> {
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
        match parse_event(item, who, keep_listing) {
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
