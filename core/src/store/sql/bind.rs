//! Values bound to the statements both databases share: a row's, a batch statement's and a
//! checkpoint's `INSERT`, and a `Select`'s parameters.

use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

use crate::format::batch::BatchRecord;
use crate::format::checkpoint::Checkpoint;
use crate::format::record::AuditRecord;
use crate::store::query::Param;
use crate::store::{Fence, StoreError};

/// The fenced `INSERT` (`sql`) of one row with its 15 values and the fence.
pub(crate) fn insert_row<'q, DB>(
    sql: &'static str,
    r: &'q AuditRecord,
    fence: &'q Fence,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'e> &'e String: Type<DB> + Encode<'e, DB>,
    for<'e> &'e Option<String>: Type<DB> + Encode<'e, DB>,
    for<'e> i64: Type<DB> + Encode<'e, DB>,
    for<'e> i32: Type<DB> + Encode<'e, DB>,
{
    sqlx::query(sql)
        .bind(&r.pk)
        .bind(&r.node_id)
        .bind(r.sequence_number)
        .bind(r.time_stamp)
        .bind(&r.event_type)
        .bind(&r.event_status)
        .bind(&r.auth_token)
        .bind(&r.service)
        .bind(&r.module)
        .bind(&r.custom_id)
        .bind(&r.search_detail1)
        .bind(&r.search_detail2)
        .bind(&r.additional_details)
        .bind(r.row_version)
        .bind(&r.row_protection)
        .bind(&fence.node)
        .bind(fence.epoch)
}

/// The `INSERT` of one batch statement.
pub(crate) fn insert_statement<DB>(b: &BatchRecord) -> Query<'_, DB, DB::Arguments>
where
    DB: Database,
    for<'e> &'e String: Type<DB> + Encode<'e, DB>,
    for<'e> i64: Type<DB> + Encode<'e, DB>,
    for<'e> i32: Type<DB> + Encode<'e, DB>,
{
    sqlx::query(crate::store::INSERT_BATCH)
        .bind(&b.node_id)
        .bind(b.first_sequence_number)
        .bind(b.last_sequence_number)
        .bind(b.time_stamp)
        .bind(&b.merkle_root)
        .bind(&b.previous_hash)
        .bind(b.key_id)
        .bind(&b.statement_protection)
}

/// The `INSERT` of one checkpoint.
pub(crate) fn insert_checkpoint<DB>(c: &Checkpoint) -> Query<'_, DB, DB::Arguments>
where
    DB: Database,
    for<'e> &'e String: Type<DB> + Encode<'e, DB>,
    for<'e> i64: Type<DB> + Encode<'e, DB>,
    for<'e> i32: Type<DB> + Encode<'e, DB>,
{
    sqlx::query(crate::store::INSERT_CHECKPOINT)
        .bind(&c.node_id)
        .bind(c.sequence_number)
        .bind(c.time_stamp)
        .bind(&c.head_hash)
        .bind(&c.kind)
        .bind(c.key_id)
        .bind(&c.statement_protection)
}

/// A `Select`'s parameters as the driver's arguments, in order.
pub(crate) fn arguments<DB>(params: Vec<Param>) -> Result<DB::Arguments, StoreError>
where
    DB: Database,
    for<'e> String: Type<DB> + Encode<'e, DB>,
    for<'e> i64: Type<DB> + Encode<'e, DB>,
{
    use sqlx::Arguments;
    let mut args = DB::Arguments::default();
    for p in params {
        match p {
            Param::Text(t) => args.add(t),
            Param::Int(i) => args.add(i),
        }
        .map_err(|e| StoreError::Database(format!("cannot bind a query parameter: {e}")))?;
    }
    Ok(args)
}
