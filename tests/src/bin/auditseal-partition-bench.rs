//! auditseal-partition-bench: the archive's deletion on PostgreSQL, by whole partitions
//! (AuditRecordData partitioned by day, docs/OPERATIONS.md "Partitioning") against row by row
//! (today's table, and the partitioned one through its parent), on the same rows, in one run.
//!
//!   scripts/bench-partitions [--rows N (1000000)] [--days D (10)]
//!
//! Each method gets a database of its own, filled by COPY with the same N rows over 3 nodes,
//! spread evenly over D days before today (about 1 KB each, as SignServer's RSA-signed rows),
//! then VACUUM ANALYZE and CHECKPOINT. The archive's deletion of the first half of the days is
//! timed as the archive runs it: `Store::archive_node` per node (row by row) and
//! `Store::archive_partitioned` (the same transaction that drops whole partitions). The rows are
//! not validly signed: deletion does not look at them. Markers are stored as the archive stores
//! them. Each database is dropped after its method.

use std::time::Instant;

use anyhow::{Context, bail};
use auditseal_core::checkpoint::Checkpoint;
use auditseal_core::store::archived::ArchiveRange;
use auditseal_core::store::partition::Interval;
use auditseal_core::store::{PgStore, Store};
use sqlx::Connection;

const NODES: u64 = 3;
const DAY_MS: i64 = 86_400_000;

struct Opts {
    rows: u64,
    days: i64,
    /// One method alone (no ratio): to look at it.
    only: Option<String>,
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        rows: 1_000_000,
        days: 10,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rows" => o.rows = value()?.replace('_', "").parse().context("--rows N")?,
            "--days" => o.days = value()?.parse().context("--days D")?,
            "--only" => o.only = Some(value()?),
            "-h" | "--help" => {
                println!(
                    "auditseal-partition-bench [--rows N (1000000)] [--days D (10)] \
                     [--only rows|rows-partitioned|drop]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other}; see --help"),
        }
    }
    if o.rows < 1000 || o.days < 2 {
        bail!("--rows at least 1000, --days at least 2");
    }
    Ok(o)
}

#[derive(Clone, Copy, PartialEq)]
enum Method {
    /// Today's table, `archive_node` per node.
    Rows,
    /// The partitioned table, `archive_node` per node (DELETE through the parent).
    RowsPartitioned,
    /// The partitioned table, `archive_partitioned`.
    Drop,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Rows => "rows",
            Method::RowsPartitioned => "rows-partitioned",
            Method::Drop => "drop",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Method::Rows => "row by row, table not partitioned",
            Method::RowsPartitioned => "row by row, partitioned table",
            Method::Drop => "partitions dropped, partitioned table",
        }
    }
}

/// The rows: row i belongs to node i % 3, numbered i / 3, at a time rising evenly from `start`.
struct Data {
    rows: u64,
    start: i64,
    step: f64,
}

impl Data {
    fn time(&self, i: u64) -> i64 {
        self.start + (i as f64 * self.step) as i64
    }

    /// COPY text of rows `from..to`.
    fn copy_text(&self, from: u64, to: u64) -> Vec<u8> {
        let details = "x".repeat(240);
        let protection = format!("1:2:1:{}", "ab".repeat(256));
        let mut out = String::new();
        for i in from..to {
            out.push_str(&format!(
                "{i:032x}\tnode{}\t{}\t{}\tPROCESS\tSUCCESS\tCN=client{},O=Example\tSIGNSERVER\t\
                 WORKER\t\\N\tworker{}\t{i}\t<map>{details}</map>\t0\t{protection}\n",
                i % NODES,
                i / NODES,
                self.time(i),
                i % 1000,
                i % 20,
            ));
        }
        out.into_bytes()
    }

    /// Each node's archived range: its rows with a time before `before` (all from 0).
    fn ranges(&self, before: i64, now: i64) -> Vec<ArchiveRange> {
        let archived = (0..self.rows)
            .take_while(|i| self.time(*i) < before)
            .count() as u64;
        (0..NODES)
            .filter_map(|n| {
                let rows = archived / NODES + u64::from(n < archived % NODES);
                (rows > 0).then(|| ArchiveRange {
                    marker: Checkpoint {
                        node_id: format!("node{n}"),
                        sequence_number: rows as i64 - 1,
                        time_stamp: now,
                        head_hash: "00".repeat(32),
                        kind: "archive".into(),
                        key_id: 1,
                        statement_protection: "2:1:1:00".into(),
                    },
                    first: 0,
                    rows,
                })
            })
            .collect()
    }
}

struct Measured {
    seconds: f64,
    /// The VACUUM that makes the deleted rows' space reusable (nothing to do after a drop).
    vacuum: f64,
    deleted: u64,
    dropped: usize,
    size_before: i64,
    size_after: i64,
}

async fn db_size(store: &PgStore) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(store.pool())
            .await?,
    )
}

/// A new database, laid out for `method` and filled with `data`.
async fn prepare(admin: &str, name: &str, method: Method, data: &Data) -> anyhow::Result<PgStore> {
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    let url = format!("{}/{name}", admin.rsplit_once('/').context("URL")?.0);
    let store = PgStore::connect(&url).await?;
    store.migrate().await?;
    let now = auditseal_core::time::now_millis();
    if method != Method::Rows {
        store.partition_setup(Interval::Day, 0, now).await?;
        let days = (data.time(data.rows - 1) - data.start) / DAY_MS + 1;
        for d in 0..days {
            let from = data.start + d * DAY_MS;
            store.partition_create_range(from, from + DAY_MS).await?;
        }
    }
    let t = Instant::now();
    let mut c = store.pool().acquire().await?;
    let step = 100_000;
    for from in (0..data.rows).step_by(step) {
        let text = data.copy_text(from, (from + step as u64).min(data.rows));
        let mut copy = c
            .copy_in_raw(
                "COPY auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", eventtype, \
                 eventstatus, authtoken, service, module, customid, searchdetail1, \
                 searchdetail2, additionaldetails, rowversion, rowprotection) FROM STDIN",
            )
            .await?;
        copy.send(text.as_slice()).await?;
        copy.finish().await?;
    }
    for sql in ["VACUUM ANALYZE auditrecorddata", "CHECKPOINT"] {
        sqlx::raw_sql(sql).execute(&mut *c).await?;
    }
    println!(
        "  {}: filled {} rows in {:.1} s",
        method.label(),
        data.rows,
        t.elapsed().as_secs_f64()
    );
    Ok(store)
}

/// Archives the rows before `before` from a database laid out for `method`, timed.
async fn measure(
    admin: &str,
    method: Method,
    data: &Data,
    before: i64,
) -> anyhow::Result<Measured> {
    let name = format!("partition_bench_{}", std::process::id());
    let store = prepare(admin, &name, method, data).await?;
    let ranges = data.ranges(before, auditseal_core::time::now_millis());
    let size_before = db_size(&store).await?;
    let t = Instant::now();
    let (deleted, dropped) = match method {
        Method::Drop => {
            let done = store
                .archive_partitioned(&ranges, before)
                .await?
                .context("the table is not partitioned")?;
            (done.deleted.values().sum(), done.dropped.len())
        }
        _ => {
            let mut n = 0;
            for r in &ranges {
                n += store.archive_node(&r.marker, r.first, r.rows).await?;
            }
            (n, 0)
        }
    };
    let seconds = t.elapsed().as_secs_f64();
    let size_after = db_size(&store).await?;
    let t = Instant::now();
    sqlx::raw_sql("VACUUM auditrecorddata")
        .execute(store.pool())
        .await?;
    let vacuum = t.elapsed().as_secs_f64();
    drop(store);
    let mut conn = sqlx::PgConnection::connect(admin).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    Ok(Measured {
        seconds,
        vacuum,
        deleted,
        dropped,
        size_before,
        size_after,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = opts()?;
    let admin = std::env::var("AUDITSEAL_TEST_PG_URL")
        .context("AUDITSEAL_TEST_PG_URL: run it with scripts/bench-partitions")?;
    let today = Interval::Day.start_of(auditseal_core::time::now_millis());
    let data = Data {
        rows: o.rows,
        start: today - o.days * DAY_MS,
        step: (o.days * DAY_MS) as f64 / o.rows as f64,
    };
    let before = data.start + o.days / 2 * DAY_MS;
    println!(
        "Archiving the first {} of {} days: {} rows over {NODES} nodes, PostgreSQL",
        o.days / 2,
        o.days,
        o.rows
    );
    let mut results = Vec::new();
    for method in [Method::Rows, Method::RowsPartitioned, Method::Drop] {
        if o.only.as_ref().is_some_and(|n| n != method.name()) {
            continue;
        }
        let m = measure(&admin, method, &data, before).await?;
        results.push((method, m));
    }
    let drop_s = results
        .iter()
        .find(|(m, _)| *m == Method::Drop)
        .map_or(f64::NAN, |(_, r)| r.seconds);
    println!();
    for (method, m) in &results {
        println!(
            "{:<40} {:>9.3} s ({:>5.2}x the drop's)  {:>9} rows removed  {:>2} partitions \
             dropped  database {} -> {} MB  then VACUUM {:.3} s",
            method.label(),
            m.seconds,
            m.seconds / drop_s,
            m.deleted,
            m.dropped,
            m.size_before >> 20,
            m.size_after >> 20,
            m.vacuum
        );
    }
    Ok(())
}
