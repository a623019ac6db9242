//! auditseal-query-bench: how many rows the documented searches (docs/API.md "GET
//! /api/v1/events": time range, event type, status, node, who, limit 100) and their counts read,
//! on PostgreSQL (EXPLAIN (ANALYZE, BUFFERS)) and SQLite (EXPLAIN QUERY PLAN and the statement's
//! own counters), before and after the search indexes (migration 20261203140001), in one run.
//!
//!   scripts/bench-query [--rows N (10000000)] [--only postgres|sqlite]
//!
//! The table is filled quickly (COPY on PostgreSQL; multi-row INSERTs in one transaction on
//! SQLite) with rows over 3 nodes whose event type, status, who (authToken), worker and time
//! follow a SignServer-like spread. The rows are NOT validly signed (rowProtection is filler of a
//! batched row's length): a query plan does not look at it. The statements are the ones the
//! store runs (`select_parts`, `Select::bounded` on PostgreSQL, `Select::sizes` then
//! `Select::with_limit` on SQLite, `build_count`), with their values bound. On PostgreSQL it
//! ends with the indexes' cost on ingest: COPY of a tenth more rows with and without them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use auditseal_core::store::READ_BUDGET_BYTES;
use auditseal_core::store::query::{self, Criterion, Cursor, Order, Param, Query};
use sqlx::{Connection, Row};

/// The first migration with the search indexes: "before" is every migration older than it.
const INDEX_MIGRATION: &str = "20261203140001";
const NODES: [&str; 3] = ["node1", "node2", "node3"];
const DAY_MS: i64 = 86_400_000;
/// 2026-09-01T00:00:00Z; the rows span 90 days from there.
const START_MS: i64 = 1_788_220_800_000;
const SPAN_DAYS: i64 = 90;
const LIMIT: i64 = 100;

/// SignServer-like event types and their share per million rows.
const EVENT_TYPES: [(&str, u32); 11] = [
    ("PROCESS", 800_000),
    ("AUTHENTICATION", 100_000),
    ("ACCESS_CONTROL", 50_000),
    ("SET_WORKER_CONFIG", 20_000),
    ("RELOAD_WORKER_CONFIG", 15_000),
    ("KEYTEST", 10_000),
    ("GEN_CSR", 3_000),
    ("CERTINSTALLED", 1_000),
    ("CERTCHAININSTALLED", 900),
    ("KEYGEN", 80),
    ("KEYREMOVE", 20),
];
const CLIENTS: usize = 1000;

struct Opts {
    rows: u64,
    postgres: bool,
    sqlite: bool,
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        rows: 10_000_000,
        postgres: true,
        sqlite: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rows" => o.rows = value()?.replace('_', "").parse().context("--rows N")?,
            "--only" => match value()?.as_str() {
                "postgres" => o.sqlite = false,
                "sqlite" => o.postgres = false,
                other => bail!("--only {other}: postgres or sqlite"),
            },
            "-h" | "--help" => {
                println!("auditseal-query-bench [--rows N (10000000)] [--only postgres|sqlite]");
                std::process::exit(0);
            }
            other => bail!("unknown option {other}; see --help"),
        }
    }
    if o.rows < 10_000 {
        bail!("--rows: at least 10000");
    }
    Ok(o)
}

/// splitmix64: reproducible rows without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct GenRow {
    pk: String,
    node: usize,
    seq: i64,
    ts: i64,
    event_type: &'static str,
    status: &'static str,
    who: String,
    module: &'static str,
    custom_id: String,
    search_detail1: String,
    details: String,
    protection: String,
}

/// Rows in time order over 3 nodes (50/30/20 %), in batches that share a timestamp (as the
/// batched device writes them: 40 % single rows, else 2 to 100), 90 days in all.
struct Gen {
    rng: Rng,
    /// The rows over which the 90 days spread; rows past it (`more`) continue at the same pace.
    scale: u64,
    total: u64,
    made: u64,
    seq: [i64; 3],
    batch_left: u64,
    batch_node: usize,
    batch_ts: i64,
    clients: Vec<f64>,
}

impl Gen {
    fn new(total: u64) -> Self {
        // Zipf (s = 1) over the clients: a few sign most requests.
        let mut acc = 0.0;
        let mut clients: Vec<f64> = (1..=CLIENTS)
            .map(|k| {
                acc += 1.0 / k as f64;
                acc
            })
            .collect();
        for c in &mut clients {
            *c /= acc;
        }
        Gen {
            rng: Rng(17),
            scale: total,
            total,
            made: 0,
            seq: [0; 3],
            batch_left: 0,
            batch_node: 0,
            batch_ts: 0,
            clients,
        }
    }

    /// `n` rows more than the generator was made for.
    fn more(&mut self, n: u64) {
        self.total += n;
    }

    fn next_row(&mut self) -> Option<GenRow> {
        if self.made == self.total {
            return None;
        }
        if self.batch_left == 0 {
            let r = self.rng.unit();
            self.batch_node = if r < 0.5 {
                0
            } else if r < 0.8 {
                1
            } else {
                2
            };
            self.batch_left = if self.rng.below(10) < 4 {
                1
            } else {
                2 + self.rng.below(99)
            };
            let at = (self.made as i128 * (SPAN_DAYS * DAY_MS) as i128 / self.scale as i128) as i64;
            self.batch_ts = START_MS + at + self.rng.below(50) as i64;
        }
        self.batch_left -= 1;
        self.made += 1;
        let node = self.batch_node;
        self.seq[node] += 1;
        let mut pick = self.rng.below(1_000_000) as u32;
        let mut event_type = EVENT_TYPES[0].0;
        for (t, w) in EVENT_TYPES {
            if pick < w {
                event_type = t;
                break;
            }
            pick -= w;
        }
        let process = event_type == "PROCESS";
        let s = self.rng.below(1000);
        let status = if s == 0 {
            "VOID"
        } else if s <= if process { 30 } else { 10 } {
            "FAILURE"
        } else {
            "SUCCESS"
        };
        let who = if process {
            let u = self.rng.unit();
            let k = self.clients.partition_point(|c| *c < u) + 1;
            format!("CN=client-{k},O=Example Org,C=SE")
        } else {
            format!("CN=Admin {},O=Example Org,C=SE", self.rng.below(5) + 1)
        };
        let worker = self.rng.below(20) + 1;
        let request = self.rng.next();
        let details = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<java version=\"17\" \
             class=\"java.beans.XMLDecoder\">\n <object class=\"java.util.LinkedHashMap\">\n  \
             <void method=\"put\">\n   <string>REQUESTID</string>\n   \
             <string>{request:016x}</string>\n  </void>\n  <void method=\"put\">\n   \
             <string>CLIENT_IP</string>\n   <string>192.0.2.{}</string>\n  </void>\n \
             </object>\n</java>\n",
            request % 250
        );
        let (a, b) = (self.rng.next(), self.rng.next());
        Some(GenRow {
            pk: format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                a >> 32,
                a & 0xffff,
                (a >> 16) & 0xfff,
                b & 0xfff,
                b >> 16
            ),
            node,
            seq: self.seq[node],
            ts: self.batch_ts,
            event_type,
            status,
            who,
            module: if process { "WORKER" } else { "SERVICE" },
            custom_id: worker.to_string(),
            search_detail1: format!("Worker{worker}"),
            details,
            // Filler of a batched row's rowProtection length: these rows are not signed.
            protection: format!("4:1:{a:016x}{b:016x}:{:0>96}", request),
        })
    }
}

/// The searches measured: a name, the criteria, an optional cursor (a deep page).
struct Search {
    name: String,
    criteria: Vec<Criterion>,
    after: Option<Cursor>,
}

fn c(text: &str) -> Criterion {
    text.parse().expect("a valid criterion")
}

fn searches(day: i64, cursor: Option<Cursor>) -> Vec<Search> {
    let from = format!("timeStamp GE {day}");
    let to = format!("timeStamp LT {}", day + DAY_MS);
    let s = |name: &str, criteria: Vec<Criterion>| Search {
        name: name.into(),
        criteria,
        after: None,
    };
    let mut v = vec![
        s("newest (no criteria)", vec![]),
        s("time range (1 day)", vec![c(&from), c(&to)]),
        s("eventType PROCESS (80%)", vec![c("eventType EQ PROCESS")]),
        s("eventType KEYGEN (0.008%)", vec![c("eventType EQ KEYGEN")]),
        s(
            "eventStatus FAILURE (2.6%)",
            vec![c("eventStatus EQ FAILURE")],
        ),
        s("nodeId node3 (20%)", vec![c("nodeId EQ node3")]),
        s(
            "who client-50 (0.2%)",
            vec![c("authToken EQ CN=client-50,O=Example Org,C=SE")],
        ),
        s(
            "eventType PROCESS + 1 day",
            vec![c("eventType EQ PROCESS"), c(&from), c(&to)],
        ),
        s(
            "eventStatus FAILURE + 1 day",
            vec![c("eventStatus EQ FAILURE"), c(&from), c(&to)],
        ),
        s(
            "nodeId node2 + 1 day",
            vec![c("nodeId EQ node2"), c(&from), c(&to)],
        ),
        s(
            "who client-1 + 1 day",
            vec![
                c("authToken EQ CN=client-1,O=Example Org,C=SE"),
                c(&from),
                c(&to),
            ],
        ),
        s(
            "eventType + eventStatus (not one index)",
            vec![c("eventType EQ PROCESS"), c("eventStatus EQ FAILURE")],
        ),
    ];
    if let Some(cursor) = cursor {
        v.push(Search {
            name: "eventType PROCESS, page at mid-table".into(),
            criteria: vec![c("eventType EQ PROCESS")],
            after: Some(cursor),
        });
    }
    v
}

fn query_of(s: &Search) -> Query {
    Query {
        criteria: s.criteria.clone(),
        limit: LIMIT,
        order: Order::Desc,
        after: s.after.clone(),
    }
}

/// One measurement of one statement.
#[derive(Default, Clone)]
struct Measured {
    returned: u64,
    read: f64,
    ms: f64,
    plan: String,
    /// Extra words: buffers (PostgreSQL), counters (SQLite).
    note: String,
    /// SQLite: the virtual machine steps of the statement (the first of the two, sizes, for
    /// a search), and of the second (rows); `read` starts as the full-scan steps.
    vm: f64,
    vm2: f64,
    fullscan2: f64,
}

fn migration_files(db: &str) -> anyhow::Result<Vec<PathBuf>> {
    let dir = auditseal_e2e::workspace_root().join("migrations").join(db);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    Ok(files)
}

/// The migrations' SQL before (`false`) or from (`true`) the search indexes.
fn migrations(db: &str, indexes: bool) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for f in migration_files(db)? {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if (name >= INDEX_MIGRATION) == indexes {
            out.push(std::fs::read_to_string(&f)?);
        }
    }
    if out.is_empty() {
        bail!("no migration of migrations/{db} on that side of {INDEX_MIGRATION}");
    }
    Ok(out)
}

fn ratio(m: &Measured) -> String {
    if m.returned == 0 {
        format!("{:.0} read, none returned", m.read)
    } else {
        format!("{:.2}", m.read / m.returned as f64)
    }
}

fn report(title: &str, rows: &[Line]) {
    println!("\n{title}");
    println!(
        "{:<40} {:>9} | {:>10} {:>8} {:>9} | {:>10} {:>8} {:>9}",
        "search", "returned", "read", "ratio", "ms", "read", "ratio", "ms"
    );
    println!("{:<40} {:>9} | {:^29} | {:^29}", "", "", "before", "after");
    for (name, b, a) in rows {
        println!(
            "{:<40} {:>9} | {:>10.0} {:>8} {:>9.1} | {:>10.0} {:>8} {:>9.1}",
            name,
            a.returned,
            b.read,
            ratio(b),
            b.ms,
            a.read,
            ratio(a),
            a.ms
        );
    }
    println!("plans (before -> after):");
    for (name, b, a) in rows {
        println!(
            "  {name}:\n    before: {} {}\n    after:  {} {}",
            b.plan, b.note, a.plan, a.note
        );
    }
}

type Line = (String, Measured, Measured);

/// Each search's (and, without a cursor, its count's) before and after, for `report`.
fn side_by_side(
    list: &[Search],
    before: &[(Measured, Measured)],
    after: &[(Measured, Measured)],
) -> (Vec<Line>, Vec<Line>) {
    let mut rows = Vec::new();
    let mut counts = Vec::new();
    for (i, s) in list.iter().enumerate() {
        rows.push((s.name.clone(), before[i].0.clone(), after[i].0.clone()));
        if s.after.is_none() {
            counts.push((s.name.clone(), before[i].1.clone(), after[i].1.clone()));
        }
    }
    (rows, counts)
}

/// A statement with the builder's values bound, on either database.
fn bind<'q, DB: sqlx::Database>(
    mut q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    params: &[Param],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for p in params {
        q = match p {
            Param::Text(t) => q.bind(t.clone()),
            Param::Int(i) => q.bind(*i),
        };
    }
    q
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = opts()?;
    println!(
        "auditseal-query-bench: {} rows over {} nodes, {} days; limit {LIMIT}; rows NOT signed \
         (filler rowProtection)",
        o.rows,
        NODES.len(),
        SPAN_DAYS
    );
    if o.postgres {
        postgres(&o).await?;
    }
    if o.sqlite {
        sqlite(&o).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

fn copy_line(out: &mut String, r: &GenRow) {
    fn field(out: &mut String, v: &str) {
        for ch in v.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                _ => out.push(ch),
            }
        }
    }
    let _ = write!(out, "{}\t{}\t{}\t{}\t", r.pk, NODES[r.node], r.seq, r.ts);
    for v in [
        r.event_type,
        r.status,
        &r.who,
        "SIGNSERVER",
        r.module,
        &r.custom_id,
        &r.search_detail1,
    ] {
        field(out, v);
        out.push('\t');
    }
    out.push_str("\\N\t");
    field(out, &r.details);
    out.push_str("\t0\t");
    field(out, &r.protection);
    out.push('\n');
}

const FILL_COLUMNS: &str = "pk, nodeid, sequencenumber, \"timestamp\", eventtype, eventstatus, \
     authtoken, service, module, customid, searchdetail1, searchdetail2, additionaldetails, \
     rowversion, rowprotection";

async fn postgres(o: &Opts) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = auditseal_e2e::new_database(auditseal_e2e::Backend::Postgres, dir.path()).await;
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    for sql in migrations("postgres", false)? {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    let t = Instant::now();
    let mut g = Gen::new(o.rows);
    let mut left = o.rows;
    while left > 0 {
        let n = left.min(1_000_000);
        pg_copy(&mut conn, chunk(&mut g, n)).await?;
        left -= n;
    }
    let fill = t.elapsed().as_secs_f64();
    println!(
        "\nPostgreSQL: {} rows by COPY (idx2, idx3) in {fill:.1} s ({:.0} rows/s)",
        o.rows,
        o.rows as f64 / fill
    );
    let t = Instant::now();
    sqlx::raw_sql("VACUUM (ANALYZE) auditrecorddata")
        .execute(&mut conn)
        .await?;
    println!("VACUUM (ANALYZE): {:.1} s", t.elapsed().as_secs_f64());
    let size: String = sqlx::query_scalar(
        "SELECT pg_size_pretty(pg_table_size('auditrecorddata')) || ' table, ' || \
         pg_size_pretty(pg_indexes_size('auditrecorddata')) || ' indexes'",
    )
    .fetch_one(&mut conn)
    .await?;
    println!("size before: {size}");

    let day = START_MS + SPAN_DAYS / 2 * DAY_MS;
    let cursor = pg_cursor(&mut conn).await?;
    let list = searches(day, cursor);
    let before = pg_measure_all(&mut conn, &list).await?;

    let t = Instant::now();
    sqlx::raw_sql("SET maintenance_work_mem = '256MB'")
        .execute(&mut conn)
        .await?;
    for sql in migrations("postgres", true)? {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    println!(
        "\nsearch indexes (migration {INDEX_MIGRATION}) built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    sqlx::raw_sql("ANALYZE auditrecorddata")
        .execute(&mut conn)
        .await?;
    let size: String = sqlx::query_scalar(
        "SELECT pg_size_pretty(pg_table_size('auditrecorddata')) || ' table, ' || \
         pg_size_pretty(pg_indexes_size('auditrecorddata')) || ' indexes'",
    )
    .fetch_one(&mut conn)
    .await?;
    println!("size after: {size}");
    let after = pg_measure_all(&mut conn, &list).await?;

    let (rows, counts) = side_by_side(&list, &before, &after);
    report(
        "PostgreSQL searches (the store's SELECT, EXPLAIN (ANALYZE, BUFFERS)): rows read = the \
         scans' rows plus the rows their filters removed",
        &rows,
    );
    report(
        "PostgreSQL counts (build_count): returned = the count; read = rows the scans produced \
         or removed (index-only: entries read, heap fetches in the plan)",
        &counts,
    );
    // The indexes' cost on ingest: COPY of the same number of new rows (made before the clock
    // starts) with all the indexes, then with the migration's undone (idx3 back), at the same
    // table size.
    let n = o.rows / 10;
    g.more(2 * n);
    let with = pg_copy(&mut conn, chunk(&mut g, n)).await?;
    sqlx::raw_sql(
        "DROP INDEX auditrecorddata_idx4, auditrecorddata_idx5, auditrecorddata_idx6, \
         auditrecorddata_idx7, auditrecorddata_idx8; \
         CREATE INDEX auditrecorddata_idx3 ON auditrecorddata (\"timestamp\")",
    )
    .execute(&mut conn)
    .await?;
    let without = pg_copy(&mut conn, chunk(&mut g, n)).await?;
    println!(
        "\nPostgreSQL ingest: COPY of {n} more rows with the search indexes {:.0} rows/s, \
         without them (idx2, idx3) {:.0} rows/s: ratio {:.2}",
        n as f64 / with,
        n as f64 / without,
        without / with
    );
    drop(conn);
    Ok(())
}

/// `n` rows of `g` as COPY text.
fn chunk(g: &mut Gen, n: u64) -> Vec<u8> {
    let mut buf = String::new();
    for _ in 0..n {
        if let Some(r) = g.next_row() {
            copy_line(&mut buf, &r);
        }
    }
    buf.into_bytes()
}

/// One COPY of `data`; returns its seconds.
async fn pg_copy(conn: &mut sqlx::PgConnection, data: Vec<u8>) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut copy = conn
        .copy_in_raw(&format!("COPY auditrecorddata ({FILL_COLUMNS}) FROM STDIN"))
        .await?;
    for part in data.chunks(1 << 20) {
        copy.send(part).await?;
    }
    copy.finish().await?;
    Ok(t.elapsed().as_secs_f64())
}

/// The key of a PROCESS row at the middle of the table: a cursor for a deep page.
async fn pg_cursor(conn: &mut sqlx::PgConnection) -> anyhow::Result<Option<Cursor>> {
    let r = sqlx::query(
        "SELECT \"timestamp\", nodeid, sequencenumber FROM auditrecorddata \
         WHERE eventtype = 'PROCESS' AND \"timestamp\" >= $1 ORDER BY \"timestamp\" LIMIT 1",
    )
    .bind(START_MS + SPAN_DAYS * DAY_MS / 2)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(r.map(|r| Cursor {
        order: Order::Desc,
        time_stamp: r.get(0),
        node_id: r.get(1),
        sequence_number: r.get(2),
    }))
}

async fn pg_measure_all(
    conn: &mut sqlx::PgConnection,
    list: &[Search],
) -> anyhow::Result<Vec<(Measured, Measured)>> {
    let mut out = Vec::new();
    for s in list {
        let (sql, params) = query::select_parts(&query_of(s)).bounded(READ_BUDGET_BYTES);
        let q = pg_explain(conn, &sql, &params).await?;
        let (sql, params) = query::build_count(&s.criteria);
        let n = pg_explain(conn, &sql, &params).await?;
        let count: i64 = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), &params)
            .fetch_one(&mut *conn)
            .await?
            .get(0);
        out.push((
            q,
            Measured {
                returned: count as u64,
                ..n
            },
        ));
    }
    Ok(out)
}

async fn pg_explain(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    params: &[Param],
) -> anyhow::Result<Measured> {
    let explain = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}");
    let row = bind(sqlx::query(sqlx::AssertSqlSafe(explain)), params)
        .fetch_one(&mut *conn)
        .await?;
    // The json column's text (its binary form is the text too).
    let text: String = row.try_get_unchecked(0)?;
    let v: serde_json::Value = serde_json::from_str(&text).context("EXPLAIN JSON")?;
    let top = &v[0];
    let plan = &top["Plan"];
    let mut m = Measured {
        returned: plan["Actual Rows"].as_f64().unwrap_or(0.0) as u64,
        ms: top["Execution Time"].as_f64().unwrap_or(0.0),
        ..Measured::default()
    };
    let mut nodes = Vec::new();
    walk(plan, &mut m.read, &mut nodes);
    m.plan = nodes.join(" > ");
    let blocks = |k: &str| plan[k].as_f64().unwrap_or(0.0);
    m.note = format!(
        "[buffers hit {} read {}]",
        blocks("Shared Hit Blocks"),
        blocks("Shared Read Blocks")
    );
    Ok(m)
}

/// Sums the rows the scans produced and removed; names the plan's nodes.
fn walk(p: &serde_json::Value, read: &mut f64, nodes: &mut Vec<String>) {
    let kind = p["Node Type"].as_str().unwrap_or("?");
    let mut name = kind.to_string();
    if let Some(i) = p["Index Name"].as_str() {
        let back = if p["Scan Direction"] == "Backward" {
            " Backward"
        } else {
            ""
        };
        name = format!("{kind}{back} {i}");
    }
    if let Some(h) = p["Heap Fetches"].as_f64() {
        name.push_str(&format!(" (heap fetches {h})"));
    }
    if let Some(w) = p["Workers Launched"].as_f64() {
        name.push_str(&format!(" ({w} workers)"));
    }
    nodes.push(name);
    // Rows read from the table or an index (a bitmap index scan's rows are read again by its
    // heap scan: counted once; a subquery scan reads rows already counted). Entries an index
    // scan skips by an index condition on a later column are not in EXPLAIN's figures: the
    // buffers show them.
    if matches!(
        kind,
        "Seq Scan" | "Index Scan" | "Index Only Scan" | "Bitmap Heap Scan"
    ) {
        let f = |k: &str| p[k].as_f64().unwrap_or(0.0);
        *read +=
            (f("Actual Rows") + f("Rows Removed by Filter") + f("Rows Removed by Index Recheck"))
                * f("Actual Loops").max(1.0);
    }
    if let Some(children) = p["Plans"].as_array() {
        for c in children {
            walk(c, read, nodes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

async fn sqlite(o: &Opts) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await?;
    for sql in migrations("sqlite", false)? {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    // The store's LIKE setting; a throw-away file: no journal, no fsync while filling.
    sqlx::raw_sql(
        "PRAGMA case_sensitive_like = ON; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
         PRAGMA cache_size = -262144",
    )
    .execute(&mut conn)
    .await?;
    let t = Instant::now();
    const PER: usize = 100;
    let one = format!("({})", vec!["?"; 15].join(", "));
    let insert = format!(
        "INSERT INTO auditrecorddata ({FILL_COLUMNS}) VALUES {}",
        vec![one.as_str(); PER].join(", ")
    );
    let mut g = Gen::new(o.rows);
    let mut tx = conn.begin().await?;
    let mut batch = Vec::with_capacity(PER);
    loop {
        let r = g.next_row();
        let done = r.is_none();
        if let Some(r) = r {
            batch.push(r);
        }
        if batch.len() == PER || (done && !batch.is_empty()) {
            let sql = if batch.len() == PER {
                insert.clone()
            } else {
                format!(
                    "INSERT INTO auditrecorddata ({FILL_COLUMNS}) VALUES {}",
                    vec![one.as_str(); batch.len()].join(", ")
                )
            };
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in batch.drain(..) {
                q = q
                    .bind(r.pk)
                    .bind(NODES[r.node])
                    .bind(r.seq)
                    .bind(r.ts)
                    .bind(r.event_type)
                    .bind(r.status)
                    .bind(r.who)
                    .bind("SIGNSERVER")
                    .bind(r.module)
                    .bind(r.custom_id)
                    .bind(r.search_detail1)
                    .bind(None::<String>)
                    .bind(r.details)
                    .bind(0i64)
                    .bind(r.protection);
            }
            q.execute(&mut *tx).await?;
        }
        if done {
            break;
        }
    }
    tx.commit().await?;
    let fill = t.elapsed().as_secs_f64();
    println!(
        "\nSQLite: {} rows by multi-row INSERTs in one transaction (idx2, idx3) in {fill:.1} s \
         ({:.0} rows/s); file {}",
        o.rows,
        o.rows as f64 / fill,
        file_size(&path)
    );
    let t = Instant::now();
    sqlx::raw_sql("ANALYZE").execute(&mut conn).await?;
    println!("ANALYZE: {:.1} s", t.elapsed().as_secs_f64());

    let day = START_MS + SPAN_DAYS / 2 * DAY_MS;
    let cursor: Option<(i64, String, i64)> = sqlx::query_as(
        "SELECT timeStamp, nodeId, sequenceNumber FROM auditrecorddata \
         WHERE eventType = 'PROCESS' AND timeStamp >= $1 ORDER BY timeStamp LIMIT 1",
    )
    .bind(day)
    .fetch_optional(&mut conn)
    .await?;
    let list = searches(
        day,
        cursor.map(|(t, n, s)| Cursor {
            order: Order::Desc,
            time_stamp: t,
            node_id: n,
            sequence_number: s,
        }),
    );
    let before = lite_measure_all(&mut conn, &list).await?;
    let t = Instant::now();
    for sql in migrations("sqlite", true)? {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
    }
    println!(
        "\nsearch indexes (migration {INDEX_MIGRATION}) built in {:.1} s; file {}",
        t.elapsed().as_secs_f64(),
        file_size(&path)
    );
    sqlx::raw_sql("ANALYZE").execute(&mut conn).await?;
    let mut after = lite_measure_all(&mut conn, &list).await?;
    let mut before = before;
    // SQLite counts no rows read in an index SEARCH: estimate them as VM steps over the steps
    // of one row, measured on statements that read exactly their rows: the newest page with
    // the order index (100 rows), for each of the store's two statements; a count over one
    // day of the time index (its entries).
    let newest = &after[0].0;
    let per_sizes = newest.vm / newest.returned.max(1) as f64;
    let per_rows = newest.vm2 / newest.returned.max(1) as f64;
    let day_count = &after[1].1;
    let per_entry = day_count.vm / day_count.returned.max(1) as f64;
    println!(
        "\nSQLite read estimate: {per_sizes:.1} VM steps per row of the sizes statement, \
         {per_rows:.1} of the rows statement, {per_entry:.1} per entry of a count"
    );
    for side in [&mut before, &mut after] {
        for (q, n) in side.iter_mut() {
            // The sizes statement walks the range; the rows statement walks it again for at
            // most as many rows: the larger of the two is reported.
            q.read = q
                .read
                .max(q.vm / per_sizes)
                .max(q.fullscan2)
                .max(q.vm2 / per_rows);
            // A count of every row with no condition is SQLite's b-tree count (a few VM steps
            // that visit every leaf page): every entry is read.
            n.read = if n.plan.starts_with("SCAN") && n.vm < 100.0 {
                n.returned as f64
            } else {
                n.read.max(n.vm / per_entry)
            };
        }
    }
    let (rows, counts) = side_by_side(&list, &before, &after);
    report(
        "SQLite searches (the store's two SELECTs, sizes then rows, over the same range): read = \
         full-scan steps, or for an index SEARCH VM steps / VM steps per row (an estimate, \
         see above); ms = both statements",
        &rows,
    );
    report("SQLite counts (build_count): returned = the count", &counts);
    drop(conn);
    Ok(())
}

fn file_size(p: &Path) -> String {
    let b = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    format!("{:.2} GB", b as f64 / 1e9)
}

async fn lite_measure_all(
    conn: &mut sqlx::SqliteConnection,
    list: &[Search],
) -> anyhow::Result<Vec<(Measured, Measured)>> {
    let mut out = Vec::new();
    for s in list {
        let sel = query::select_parts(&query_of(s));
        let (sizes_sql, params) = sel.sizes();
        let a = lite_run(conn, &sizes_sql, &params).await?;
        let (rows_sql, params) = sel.with_limit(a.returned as i64);
        let b = if a.returned > 0 {
            lite_run(conn, &rows_sql, &params).await?
        } else {
            Measured::default()
        };
        let q = Measured {
            returned: b.returned,
            read: a.read,
            ms: a.ms + b.ms,
            plan: a.plan,
            note: format!("{} then {}", a.note, b.note),
            vm: a.vm,
            vm2: b.vm,
            fullscan2: b.read,
        };
        let (sql, params) = query::build_count(&s.criteria);
        let mut n = lite_run(conn, &sql, &params).await?;
        let count: i64 = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), &params)
            .fetch_one(&mut *conn)
            .await?
            .get(0);
        n.returned = count as u64;
        out.push((q, n));
    }
    Ok(out)
}

/// Runs one statement through sqlx and reads its counters (sqlite3_stmt_status) from the
/// statement sqlx prepared and cached. SQLite does not count the rows a statement reads (that
/// needs SQLITE_ENABLE_STMT_SCANSTATUS, which libsqlite3-sys does not build): it counts
/// full-scan steps (rows stepped by a SCAN), sorts, and virtual machine steps. `read` here is
/// the full-scan steps, or, for an index SEARCH, its VM steps over the steps one returned row
/// costs (`VM_STEPS_PER_ROW`, measured on the newest-rows page, which reads exactly its rows).
async fn lite_run(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    params: &[Param],
) -> anyhow::Result<Measured> {
    let plan = lite_plan(conn, sql, params).await?;
    stmt_status(conn, sql, true).await?;
    let t = Instant::now();
    let rows = bind(sqlx::query(sqlx::AssertSqlSafe(sql.to_string())), params)
        .fetch_all(&mut *conn)
        .await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let [fullscan, sort, vm] = stmt_status(conn, sql, false).await?;
    let returned = rows.len() as u64;
    Ok(Measured {
        returned,
        read: fullscan as f64,
        ms,
        plan,
        note: format!("[fullscan steps {fullscan}, sorts {sort}, vm steps {vm}]"),
        vm: vm as f64,
        ..Measured::default()
    })
}

/// EXPLAIN QUERY PLAN's details, joined.
async fn lite_plan(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    params: &[Param],
) -> anyhow::Result<String> {
    let rows = bind(
        sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}"))),
        params,
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get::<String, _>("detail").unwrap_or_default())
        .collect::<Vec<_>>()
        .join("; "))
}

/// FULLSCAN_STEP, SORT and VM_STEP of the connection's prepared statement whose text is `sql`
/// (sqlx keeps each statement prepared), reset to 0 when `reset`.
async fn stmt_status(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    reset: bool,
) -> anyhow::Result<[i64; 3]> {
    use libsqlite3_sys as ffi;
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    let want = sql.trim();
    let mut out = [0i64; 3];
    let mut found = false;
    // SAFETY: the connection is locked for this scope; the statements are the connection's own
    // and none is finalized while we walk them; sqlite3_sql's text lives as long as its statement.
    unsafe {
        let mut stmt = ffi::sqlite3_next_stmt(db, std::ptr::null_mut());
        while !stmt.is_null() {
            let text = ffi::sqlite3_sql(stmt);
            if !text.is_null() && std::ffi::CStr::from_ptr(text).to_str().map(str::trim) == Ok(want)
            {
                found = true;
                for (i, op) in [
                    ffi::SQLITE_STMTSTATUS_FULLSCAN_STEP,
                    ffi::SQLITE_STMTSTATUS_SORT,
                    ffi::SQLITE_STMTSTATUS_VM_STEP,
                ]
                .into_iter()
                .enumerate()
                {
                    out[i] += i64::from(ffi::sqlite3_stmt_status(stmt, op, i32::from(reset)));
                }
            }
            stmt = ffi::sqlite3_next_stmt(db, stmt);
        }
    }
    if !found && !reset {
        bail!("the statement sqlx prepared was not found among the connection's: {sql}");
    }
    Ok(out)
}
