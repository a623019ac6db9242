//! AuditRecordData partitioned by time on PostgreSQL (docs/OPERATIONS.md "Partitioning"), opt
//! in: `auditseal-db partition setup` turns the table into one partitioned by RANGE
//! ("timestamp"), with the same columns, so every writer (SignServer and EJBCA too) inserts into
//! it unchanged; `partition create` makes the partitions ahead of time; archiving drops the
//! partitions whose every row it archived (archive.rs here).
//!
//! PostgreSQL allows a unique index on a partitioned table only if it includes the partition key,
//! so the uniqueness of `pk` and of (nodeid, sequencenumber) is kept by each partition's own
//! primary key and unique index, made with it (docs/FORMAT.md section 1, "Partitioned").

mod archive;
mod setup;

pub use setup::Made;

use super::{PgStore, StoreError};
use crate::format::time::{civil_from_days, days_from_civil};

pub(crate) use archive::archive_partitioned;

const DAY_MS: i64 = 86_400_000;

/// The table that says how the partitions are laid out (created by `partition setup`).
const PLAN_TABLE: &str = "auditpartitioning";

/// How long one partition covers, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    Month,
}

impl Interval {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Interval::Day),
            "month" => Some(Interval::Month),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Month => "month",
        }
    }

    /// The start (epoch ms) of the period that holds `ms`.
    pub fn start_of(self, ms: i64) -> i64 {
        let days = ms.div_euclid(DAY_MS);
        match self {
            Interval::Day => days * DAY_MS,
            Interval::Month => {
                let (y, m, _) = civil_from_days(days);
                days_from_civil(y, m, 1) * DAY_MS
            }
        }
    }

    /// The start of the period after the one that starts at `start`.
    pub fn next(self, start: i64) -> i64 {
        match self {
            Interval::Day => start + DAY_MS,
            Interval::Month => {
                let (y, m, _) = civil_from_days(start.div_euclid(DAY_MS));
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * DAY_MS
            }
        }
    }
}

/// A partition's name: `auditrecorddata_pYYYYMMDD` (UTC) for one that starts a period, and
/// `auditrecorddata_r<from ms>` for a range an operator chose.
fn period_name(start: i64) -> String {
    let (y, m, d) = civil_from_days(start.div_euclid(DAY_MS));
    format!("auditrecorddata_p{y:04}{m:02}{d:02}")
}

/// One partition of AuditRecordData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub name: String,
    /// Its range, [from, to) in epoch ms; None for MINVALUE / MAXVALUE.
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// The DEFAULT partition: rows no range holds.
    pub default: bool,
    /// PostgreSQL's estimate of its rows (`reltuples`; -1 before its first ANALYZE).
    pub rows_estimate: i64,
}

impl PartitionInfo {
    /// Whether its range and [from, to) share a value.
    fn overlaps(&self, from: i64, to: i64) -> bool {
        !self.default && self.from.is_none_or(|f| f < to) && self.to.is_none_or(|t| t > from)
    }
}

/// How the table is partitioned: None when it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The interval of `partition create` (None: partitioned by someone else's hand).
    pub interval: Option<Interval>,
    /// How many periods after the current one `partition create` makes.
    pub ahead: i32,
    pub partitions: Vec<PartitionInfo>,
}

/// A bound of `pg_get_expr(relpartbound)`: `'123'`, `MINVALUE` or `MAXVALUE`.
fn bound_value(text: &str) -> Option<i64> {
    text.trim().trim_matches('\'').parse().ok()
}

/// Reads `FOR VALUES FROM (a) TO (b)` (or `DEFAULT`).
fn parse_bound(text: &str) -> (bool, Option<i64>, Option<i64>) {
    if text.trim() == "DEFAULT" {
        return (true, None, None);
    }
    let inside = |after: &str| {
        let rest = &text[text.find(after)? + after.len()..];
        Some(rest[..rest.find(')')?].to_string())
    };
    let from = inside("FROM (").and_then(|v| bound_value(&v));
    let to = inside("TO (").and_then(|v| bound_value(&v));
    (false, from, to)
}

/// The CREATE TABLE of one partition, with its own primary key on pk and unique index on
/// (nodeid, sequencenumber) (the uniqueness the partitioned table cannot have, module doc).
fn create_partition_sql(name: &str, bound: &str) -> String {
    format!(
        "CREATE TABLE {name} PARTITION OF auditrecorddata (CONSTRAINT {name}_pkey PRIMARY KEY \
         (pk), CONSTRAINT {name}_idx2 UNIQUE (nodeid, sequencenumber)) {bound}"
    )
}

impl PgStore {
    /// How AuditRecordData is partitioned, or None when it is not (or does not exist).
    pub async fn partition_layout(&self) -> Result<Option<Layout>, StoreError> {
        let kind: Option<String> = sqlx::query_scalar(
            "SELECT relkind::text FROM pg_class WHERE oid = to_regclass('auditrecorddata')",
        )
        .fetch_optional(self.pool())
        .await?;
        if kind.as_deref() != Some("p") {
            return Ok(None);
        }
        let plan: Option<(String, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT \"interval\", ahead FROM {PLAN_TABLE} WHERE tablename = 'auditrecorddata'"
        )))
        .fetch_optional(self.pool())
        .await
        .or_else(super::absent)?;
        let found: Vec<(String, String, f32)> = sqlx::query_as(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid), c.reltuples \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'auditrecorddata'::regclass ORDER BY c.relname",
        )
        .fetch_all(self.pool())
        .await?;
        let mut partitions: Vec<PartitionInfo> = found
            .into_iter()
            .map(|(name, bound, tuples)| {
                let (default, from, to) = parse_bound(&bound);
                PartitionInfo {
                    name,
                    from,
                    to,
                    default,
                    rows_estimate: tuples as i64,
                }
            })
            .collect();
        partitions.sort_by_key(|p| (p.default, p.from.unwrap_or(i64::MIN)));
        Ok(Some(Layout {
            interval: plan.as_ref().and_then(|(i, _)| Interval::parse(i)),
            ahead: plan.map_or(0, |(_, a)| a),
            partitions,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_days_and_months() {
        // 2026-12-03T17:10:13Z
        let t = 1_796_317_813_000;
        let day = Interval::Day.start_of(t);
        assert_eq!(period_name(day), "auditrecorddata_p20261203");
        assert_eq!(
            period_name(Interval::Day.next(day)),
            "auditrecorddata_p20261204"
        );
        let month = Interval::Month.start_of(t);
        assert_eq!(period_name(month), "auditrecorddata_p20261201");
        let next = Interval::Month.next(month);
        assert_eq!(period_name(next), "auditrecorddata_p20270101");
        assert_eq!(Interval::Month.start_of(next - 1), month);
    }

    #[test]
    fn bounds_are_read_back() {
        assert_eq!(
            parse_bound("FOR VALUES FROM ('1764547200000') TO ('1767225600000')"),
            (false, Some(1_764_547_200_000), Some(1_767_225_600_000))
        );
        assert_eq!(
            parse_bound("FOR VALUES FROM (MINVALUE) TO ('5')"),
            (false, None, Some(5))
        );
        assert_eq!(parse_bound("DEFAULT"), (true, None, None));
        let p = PartitionInfo {
            name: "x".into(),
            from: None,
            to: Some(5),
            default: false,
            rows_estimate: 0,
        };
        assert!(p.overlaps(4, 10) && !p.overlaps(5, 10));
    }
}
