//! `POST /api/v1/events`, `POST /api/v1/events:batch`, `GET /api/v1/events`,
//! `GET /api/v1/events:count`, `GET /api/v1/events/{pk}`.
//! The request and response formats are described in docs/API.md. An event as a client sends
//! it is checked in validate.rs, stored in ingest.rs, and read back in query.rs.

mod ingest;
mod query;
#[cfg(test)]
mod tests;
mod validate;

pub use ingest::{IDEMPOTENCY_KEY, create, create_bulk};
pub use query::{DEFAULT_LIMIT, MAX_LIMIT, count, get_one, list};
pub(crate) use query::{row_json, stored_row, verification_failed};
pub use validate::{MAX_BULK_EVENTS, RESERVED_PREFIX};
