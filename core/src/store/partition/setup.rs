//! Turning AuditRecordData into a partitioned table, and making its partitions ahead of time.

use sqlx::{Connection, PgConnection};

use super::{Interval, Layout, PLAN_TABLE, PartitionInfo, create_partition_sql, period_name};
use crate::store::{PgStore, StoreError};

/// The partitioned table: CESeCore's columns exactly as migrations/postgres creates them.
const PARENT: &str = "CREATE TABLE auditrecorddata (
    pk TEXT NOT NULL, nodeid TEXT NOT NULL, sequencenumber INT8 NOT NULL,
    \"timestamp\" INT8 NOT NULL, eventtype TEXT NOT NULL, eventstatus TEXT NOT NULL,
    authtoken TEXT NOT NULL, service TEXT NOT NULL, module TEXT NOT NULL, customid TEXT,
    searchdetail1 TEXT, searchdetail2 TEXT, additionaldetails TEXT,
    rowversion INT4 NOT NULL DEFAULT 0, rowprotection TEXT
) PARTITION BY RANGE (\"timestamp\")";

/// The search indexes of migrations/postgres/20261203140001, on the partitioned table (each
/// partition gets its own; an equal index a converted table already has is taken over).
const INDEXES: [(&str, &str); 5] = [
    ("idx4", "(\"timestamp\", nodeid, sequencenumber)"),
    ("idx5", "(nodeid, \"timestamp\", sequencenumber)"),
    ("idx6", "(eventtype, \"timestamp\", nodeid, sequencenumber)"),
    (
        "idx7",
        "(eventstatus, \"timestamp\", nodeid, sequencenumber)",
    ),
    ("idx8", "(authtoken, \"timestamp\", nodeid, sequencenumber)"),
];

/// The existing table's rows become this partition, [MINVALUE, the first period after them).
const LEGACY: &str = "auditrecorddata_before";
/// Rows no range holds.
const DEFAULT: &str = "auditrecorddata_default";

/// What `setup` and `create_ahead` did.
#[derive(Debug, Default)]
pub struct Made {
    /// Partitions created, by name.
    pub created: Vec<String>,
    /// Periods not created, and why.
    pub skipped: Vec<String>,
    /// The rows the table held before (setup): now the partition `auditrecorddata_before`.
    pub legacy_rows: bool,
}

impl PgStore {
    /// Turns AuditRecordData into a table partitioned by RANGE ("timestamp") with a DEFAULT
    /// partition, then makes the partitions of the current period and `ahead` more. The rows it
    /// held stay where they are, as the partition `auditrecorddata_before`. Must be run by the
    /// table's owner; other roles' privileges on it are carried over.
    pub async fn partition_setup(
        &self,
        interval: Interval,
        ahead: i32,
        now: i64,
    ) -> Result<Made, StoreError> {
        if self.partition_layout().await?.is_some() {
            return Err(StoreError::Inconsistent(
                "auditrecorddata is already partitioned; `partition create` makes more \
                 partitions"
                    .into(),
            ));
        }
        let mut conn = self.pool().acquire().await?;
        owner_check(&mut conn).await?;
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(\"timestamp\") FROM auditrecorddata")
            .fetch_one(&mut *conn)
            .await?;
        // The existing rows' partition ends at the first period after all of them: a check
        // constraint validated beforehand (without blocking writers) spares ATTACH its scan.
        let boundary = max.map(|m| interval.next(interval.start_of(m.max(now))));
        if let Some(b) = boundary {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE auditrecorddata DROP CONSTRAINT IF EXISTS auditrecorddata_upto; \
                 ALTER TABLE auditrecorddata ADD CONSTRAINT auditrecorddata_upto \
                 CHECK (\"timestamp\" < {b}) NOT VALID; \
                 ALTER TABLE auditrecorddata VALIDATE CONSTRAINT auditrecorddata_upto"
            )))
            .execute(&mut *conn)
            .await?;
        }
        let mut tx = conn.begin().await?;
        convert(&mut tx, boundary).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE IF NOT EXISTS {PLAN_TABLE} (tablename TEXT NOT NULL PRIMARY KEY, \
             \"interval\" TEXT NOT NULL, ahead INT4 NOT NULL); \
             INSERT INTO {PLAN_TABLE} VALUES ('auditrecorddata', '{}', {ahead}) \
             ON CONFLICT (tablename) DO UPDATE SET \"interval\" = EXCLUDED.\"interval\", \
             ahead = EXCLUDED.ahead",
            interval.name()
        )))
        .execute(&mut *tx)
        .await?;
        let existing: Vec<PartitionInfo> = boundary
            .map(|b| PartitionInfo {
                name: LEGACY.into(),
                from: None,
                to: Some(b),
                default: false,
                rows_estimate: 0,
            })
            .into_iter()
            .collect();
        let mut made = make_periods(&mut tx, interval, ahead, now, &existing).await?;
        tx.commit().await?;
        made.legacy_rows = boundary.is_some();
        Ok(made)
    }

    /// Makes the partitions of the current period and of the `ahead` periods after it (the
    /// setup's number when None) that do not exist yet. Idempotent: run it from cron.
    pub async fn partition_create_ahead(
        &self,
        ahead: Option<i32>,
        now: i64,
    ) -> Result<Made, StoreError> {
        let layout = self.planned_layout().await?;
        let Some(interval) = layout.interval else {
            return Err(StoreError::Inconsistent(
                "auditrecorddata was not partitioned by `auditseal-db partition setup`: \
                 give the range (--from, --to)"
                    .into(),
            ));
        };
        let mut conn = self.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        let ahead = ahead.unwrap_or(layout.ahead);
        let made = make_periods(&mut tx, interval, ahead, now, &layout.partitions).await?;
        tx.commit().await?;
        Ok(made)
    }

    /// Makes one partition for [from, to), named `auditrecorddata_r<from>`.
    pub async fn partition_create_range(&self, from: i64, to: i64) -> Result<String, StoreError> {
        let layout = self.planned_layout().await?;
        if from >= to || from < 0 {
            return Err(StoreError::Inconsistent(format!(
                "the range {from}..{to} is empty or before 1970"
            )));
        }
        if let Some(p) = layout.partitions.iter().find(|p| p.overlaps(from, to)) {
            return Err(StoreError::Inconsistent(format!(
                "the range {from}..{to} overlaps the partition {}",
                p.name
            )));
        }
        let mut conn = self.pool().acquire().await?;
        let name = format!("auditrecorddata_r{from}");
        let mut made = Made::default();
        create_range(&mut conn, &name, from, to, &mut made).await?;
        match made.skipped.pop() {
            Some(why) => Err(StoreError::Inconsistent(why)),
            None => Ok(name),
        }
    }

    async fn planned_layout(&self) -> Result<Layout, StoreError> {
        self.partition_layout().await?.ok_or_else(|| {
            StoreError::Inconsistent(
                "auditrecorddata is not partitioned: run `auditseal-db partition setup` first"
                    .into(),
            )
        })
    }
}

/// Refuses anyone but the table's owner: the new table, its partitions and the archive's DROP
/// must all belong to the role the server and the CLI connect as.
async fn owner_check(conn: &mut PgConnection) -> Result<(), StoreError> {
    let (owner, me): (String, String) = sqlx::query_as(
        "SELECT pg_get_userbyid(relowner)::text, current_user::text FROM pg_class \
         WHERE oid = 'auditrecorddata'::regclass",
    )
    .fetch_one(&mut *conn)
    .await?;
    if owner != me {
        return Err(StoreError::Inconsistent(format!(
            "auditrecorddata belongs to {owner}: run this as {owner} (connected as {me})"
        )));
    }
    Ok(())
}

/// In the setup's transaction: the old table renamed (its indexes too), the partitioned one
/// created with the same privileges, and the old one attached as its first partition (or
/// dropped when it held no row).
async fn convert(conn: &mut PgConnection, boundary: Option<i64>) -> Result<(), StoreError> {
    let mut sql = format!(
        "LOCK TABLE auditrecorddata IN ACCESS EXCLUSIVE MODE; \
         ALTER TABLE auditrecorddata RENAME TO {LEGACY}; "
    );
    for idx in [
        "pkey", "idx2", "idx3", "idx4", "idx5", "idx6", "idx7", "idx8",
    ] {
        sql += &format!("ALTER INDEX IF EXISTS auditrecorddata_{idx} RENAME TO {LEGACY}_{idx}; ");
    }
    sql += PARENT;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await?;
    let grants: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT format('GRANT %s ON auditrecorddata TO %s', a.privilege_type, \
         CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END) \
         FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a \
         WHERE c.oid = '{LEGACY}'::regclass AND a.grantee <> c.relowner"
    )))
    .fetch_all(&mut *conn)
    .await?;
    let mut sql = grants;
    for (name, columns) in INDEXES {
        sql.push(format!(
            "CREATE INDEX auditrecorddata_{name} ON auditrecorddata {columns}"
        ));
    }
    sql.push(match boundary {
        Some(b) => format!(
            "ALTER TABLE auditrecorddata ATTACH PARTITION {LEGACY} FOR VALUES FROM (MINVALUE) \
             TO ({b}); ALTER TABLE {LEGACY} DROP CONSTRAINT auditrecorddata_upto"
        ),
        None => format!("DROP TABLE {LEGACY}"),
    });
    sql.push(create_partition_sql(DEFAULT, "DEFAULT"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.join("; ")))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The partitions of the current period and the `ahead` after it that no partition covers yet.
async fn make_periods(
    conn: &mut PgConnection,
    interval: Interval,
    ahead: i32,
    now: i64,
    existing: &[PartitionInfo],
) -> Result<Made, StoreError> {
    let mut made = Made::default();
    let mut start = interval.start_of(now);
    for _ in 0..=ahead.max(0) {
        let end = interval.next(start);
        let name = period_name(start);
        match existing.iter().find(|p| p.overlaps(start, end)) {
            Some(p) if p.from == Some(start) && p.to == Some(end) => {}
            Some(p) => made.skipped.push(format!(
                "{name}: its period overlaps the partition {} (its rows go there)",
                p.name
            )),
            None => create_range(conn, &name, start, end, &mut made).await?,
        }
        start = end;
    }
    Ok(made)
}

/// Creates the partition [from, to) unless the DEFAULT partition holds rows of that range
/// (PostgreSQL would refuse it): those rows stay in the DEFAULT partition, and the period is
/// reported as skipped.
async fn create_range(
    conn: &mut PgConnection,
    name: &str,
    from: i64,
    to: i64,
    made: &mut Made,
) -> Result<(), StoreError> {
    let in_default: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM {DEFAULT} WHERE \"timestamp\" >= $1 AND \"timestamp\" < $2)"
    )))
    .bind(from)
    .bind(to)
    .fetch_one(&mut *conn)
    .await
    .or_else(crate::store::absent)?;
    if in_default {
        made.skipped.push(format!(
            "{name}: the DEFAULT partition already holds rows of its range; they stay there"
        ));
        return Ok(());
    }
    let bound = format!("FOR VALUES FROM ({from}) TO ({to})");
    sqlx::raw_sql(sqlx::AssertSqlSafe(create_partition_sql(name, &bound)))
        .execute(&mut *conn)
        .await?;
    made.created.push(name.to_string());
    Ok(())
}
