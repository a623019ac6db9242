//! Values bound to the statements both databases share: a row's, a batch statement's and a
//! checkpoint's `INSERT`, and a `Select`'s parameters.

use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

use crate::format::batch::BatchRecord;
use crate::format::checkpoint::Checkpoint;
use crate::format::record::AuditRecord;
use crate::store::query::Param;
use crate::store::{Fence, StoreError};

/// One value bound to a shared `INSERT`, borrowed from what is inserted.
pub(crate) enum Value<'q> {
    Text(&'q String),
    MaybeText(&'q Option<String>),
    Long(i64),
    Int(i32),
}

/// `sql` with `values` bound to `$1`, `$2`, ... in order.
pub(crate) fn query<'q, DB, const N: usize>(
    sql: &'static str,
    values: [Value<'q>; N],
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    for<'e> &'e String: Type<DB> + Encode<'e, DB>,
    for<'e> &'e Option<String>: Type<DB> + Encode<'e, DB>,
    for<'e> i64: Type<DB> + Encode<'e, DB>,
    for<'e> i32: Type<DB> + Encode<'e, DB>,
{
    values
        .into_iter()
        .fold(sqlx::query(sql), |q, value| match value {
            Value::Text(t) => q.bind(t),
            Value::MaybeText(t) => q.bind(t),
            Value::Long(i) => q.bind(i),
            Value::Int(i) => q.bind(i),
        })
}

/// The values of the fenced `INSERT` of one row: its 15 columns, then the fence.
pub(crate) fn row<'q>(r: &'q AuditRecord, fence: &'q Fence) -> [Value<'q>; 17] {
    use Value::{Int, Long, MaybeText, Text};
    [
        Text(&r.pk),
        Text(&r.node_id),
        Long(r.sequence_number),
        Long(r.time_stamp),
        Text(&r.event_type),
        Text(&r.event_status),
        Text(&r.auth_token),
        Text(&r.service),
        Text(&r.module),
        MaybeText(&r.custom_id),
        MaybeText(&r.search_detail1),
        MaybeText(&r.search_detail2),
        MaybeText(&r.additional_details),
        Int(r.row_version),
        MaybeText(&r.row_protection),
        Text(&fence.node),
        Long(fence.epoch),
    ]
}

/// The values of `INSERT_BATCH`: one batch statement.
pub(crate) fn statement(b: &BatchRecord) -> [Value<'_>; 8] {
    use Value::{Int, Long, Text};
    [
        Text(&b.node_id),
        Long(b.first_sequence_number),
        Long(b.last_sequence_number),
        Long(b.time_stamp),
        Text(&b.merkle_root),
        Text(&b.previous_hash),
        Int(b.key_id),
        Text(&b.statement_protection),
    ]
}

/// The values of `INSERT_CHECKPOINT`: one checkpoint.
pub(crate) fn checkpoint(c: &Checkpoint) -> [Value<'_>; 7] {
    use Value::{Int, Long, Text};
    [
        Text(&c.node_id),
        Long(c.sequence_number),
        Long(c.time_stamp),
        Text(&c.head_hash),
        Text(&c.kind),
        Int(c.key_id),
        Text(&c.statement_protection),
    ]
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
