//! Issue 17, "Past one database": AuditRecordData partitioned by time on PostgreSQL. Through the
//! real CLI and servers: `partition setup` turns the table into a partitioned one; sequential
//! and batched servers, and a SignServer-style plain INSERT, write into it unchanged; `archive`
//! drops each partition that holds only archived rows and deletes the rest row by row; a
//! partition that holds a row newer (by sequence) than its node's archive cut is kept, with that
//! row; verifylog passes afterwards with no gap.

use std::time::Duration;

use auditseal_core::record::AuditRecord;
use auditseal_e2e::{Backend, Server, all_rows, cli, event, exec, new_database, post_events};
use serde_json::{Value, json};
use sqlx::Connection;

fn now_ms() -> i64 {
    auditseal_core::time::now_millis()
}

/// The partitions of auditrecorddata: (name, upper bound; None for DEFAULT or MAXVALUE).
async fn partitions(url: &str) -> Vec<(String, Option<i64>)> {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'auditrecorddata'::regclass ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    found
        .into_iter()
        .map(|(name, bound)| {
            let to = bound
                .split("TO ('")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .and_then(|v| v.parse().ok());
            (name, to)
        })
        .collect()
}

/// The partition a row with this timeStamp goes to.
async fn partition_of(url: &str, pk: &str) -> String {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM auditrecorddata WHERE pk = $1")
        .bind(pk)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// Rows of node "ss" as SignServer writes them: protected with the same key (keyid 1, the
/// server's generated key), inserted by a plain INSERT that names only the table.
async fn insert_signserver_rows(url: &str, key: &std::path::Path, times: &[i64]) -> Vec<String> {
    let (token, _) = auditseal_core::token::SoftwareToken::load_or_generate(key, 1).unwrap();
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let mut pks = Vec::new();
    for (seq, t) in times.iter().enumerate() {
        let mut r = AuditRecord {
            pk: format!("{:032x}", 0x5500 + seq),
            node_id: "ss".into(),
            sequence_number: seq as i64,
            time_stamp: *t,
            event_type: "PROCESS".into(),
            event_status: "SUCCESS".into(),
            auth_token: "CN=signserver".into(),
            service: "SIGNSERVER".into(),
            module: "WORKER".into(),
            custom_id: None,
            search_detail1: None,
            search_detail2: Some(seq.to_string()),
            additional_details: None,
            row_version: 0,
            row_protection: None,
        };
        r.row_protection = Some(auditseal_core::protector::protect(&token, &r).unwrap());
        sqlx::query(
            "INSERT INTO AuditRecordData (pk, additionalDetails, authToken, customId, \
             eventStatus, eventType, module, nodeId, rowProtection, rowVersion, searchDetail1, \
             searchDetail2, sequenceNumber, service, timeStamp) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&r.pk)
        .bind(&r.additional_details)
        .bind(&r.auth_token)
        .bind(&r.custom_id)
        .bind(&r.event_status)
        .bind(&r.event_type)
        .bind(&r.module)
        .bind(&r.node_id)
        .bind(&r.row_protection)
        .bind(r.row_version)
        .bind(&r.search_detail1)
        .bind(&r.search_detail2)
        .bind(r.sequence_number)
        .bind(&r.service)
        .bind(r.time_stamp)
        .execute(&mut c)
        .await
        .unwrap();
        pks.push(r.pk);
    }
    pks
}

async fn wait_past(t: i64) {
    while now_ms() <= t {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post_batch(server: &Server, n: usize) {
    let items: Vec<Value> = (0..n).map(|_| event("PROCESS")).collect();
    let r = server
        .client()
        .post(format!("{}/api/v1/events:batch", server.url))
        .json(&json!(items))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

/// A new PostgreSQL database and data directory, and the CLI on them.
struct Db {
    dir: tempfile::TempDir,
    url: String,
}

impl Db {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = new_database(Backend::Postgres, dir.path()).await;
        Db { dir, url }
    }

    fn base(&self) -> Vec<&str> {
        let d = self.dir.path().to_str().unwrap();
        vec!["--data-dir", d, "--database-url", &self.url]
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut a = self.base();
        a.extend(args);
        cli(&a)
    }

    /// `auditseal-db archive --before CUT --out DIR/archive`.
    fn archive_before(&self, cut: &str) -> (i32, String, String) {
        let out = self.dir.path().join("archive");
        self.run(&["archive", "--before", cut, "--out", out.to_str().unwrap()])
    }
}

#[tokio::test]
async fn archive_drops_wholly_archived_partitions_and_keeps_every_unarchived_row() {
    let t = Db::new().await;
    let (dir, url, base) = (&t.dir, t.url.as_str(), t.base());
    let run = |args: &[&str]| t.run(args);

    let (code, out, err) = run(&["partition", "setup", "--interval", "day", "--ahead", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created auditrecorddata_p"), "{out}");
    // A test cannot wait for days: the day partitions (empty) give way to ranges of 3 seconds,
    // made by the CLI as an operator makes a range of their choice.
    for (name, _) in partitions(url).await {
        if name.starts_with("auditrecorddata_p") {
            exec(url, &format!("DROP TABLE {name}")).await;
        }
    }
    const WIDTH: i64 = 3_000;
    let t0 = now_ms();
    let (from, to) = (t0.to_string(), (t0 + WIDTH).to_string());
    let (code, out, err) = run(&["partition", "create", "--from", &from, "--to", &to]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("created auditrecorddata_r{t0}"));
    // The next ones through the same code, without a process each.
    let store = auditseal_core::store::PgStore::connect(url).await.unwrap();
    for k in 1..40 {
        store
            .partition_create_range(t0 + k * WIDTH, t0 + (k + 1) * WIDTH)
            .await
            .unwrap();
    }
    let (code, listed, _) = run(&["partition", "list"]);
    assert_eq!(code, 0);
    assert!(listed.contains("auditrecorddata_default"), "{listed}");

    let start = |node: &'static str, device: &'static str| {
        let mut a = base.to_vec();
        a.extend(["--node-id", node, "--device", device]);
        Server::start(&a).unwrap()
    };
    let seq = start("pt-s", "sequential");
    let bat = start("pt-b", "batched");
    post_events(&seq, 10).await;
    post_batch(&bat, 20).await;
    post_events(&bat, 5).await;
    // The servers' rows above lie wholly in partitions before SignServer's, below.
    let boundary = |t0: i64| t0 + ((now_ms() - t0) / WIDTH + 1) * WIDTH;
    let first = boundary(t0);
    wait_past(first).await;
    // SignServer's rows 0 and 1 now, 2 an hour ahead (the DEFAULT partition), 3 now again (its
    // clock stepped back): row 3 lies before the cut in time, after it in sequence.
    let now = now_ms();
    let ss = insert_signserver_rows(
        url,
        &dir.path().join("signing-key.pem"),
        &[now, now, now + 3_600_000, now],
    )
    .await;
    let kept = partition_of(url, &ss[3]).await;
    assert_eq!(partition_of(url, &ss[2]).await, "auditrecorddata_default");

    // The cut: the first partition boundary after every row so far.
    let cut = boundary(t0);
    wait_past(cut).await;
    post_events(&seq, 3).await;
    post_batch(&bat, 4).await;
    let before: Vec<(String, Option<i64>)> = partitions(url).await;

    let (code, _, err) = t.archive_before(&cut.to_string());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported node ss rows 0..1 (2 rows)"), "{err}");
    // At least one dropped partition held the servers' archived rows.
    let dropped_rows: u64 = err
        .lines()
        .filter_map(|l| l.strip_prefix("dropped partition "))
        .filter_map(|l| l.split(" (").nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .sum();
    // The servers' 36 archived rows all went with their partitions; SignServer's rows 0 and 1
    // were deleted one by one from the partition that keeps row 3.
    assert_eq!(dropped_rows, 36, "{err}");
    assert!(err.contains("deleted 2 archived rows of node ss"), "{err}");

    // Every partition wholly before the cut is gone, except the one that holds ss row 3.
    let after = partitions(url).await;
    for (name, to) in &before {
        let expect_gone = to.is_some_and(|t| t <= cut) && *name != kept;
        let present = after.iter().any(|(n, _)| n == name);
        assert_eq!(
            present, !expect_gone,
            "{name} (to {to:?}, cut {cut}): {err}"
        );
    }
    let rows = all_rows(url).await;
    let has = |node: &str, s: i64| {
        rows.iter()
            .any(|r| r.node_id == node && r.sequence_number == s)
    };
    assert!(has("ss", 2) && has("ss", 3) && !has("ss", 1) && !has("ss", 0));
    assert!(
        rows.iter()
            .all(|r| r.time_stamp >= cut || r.node_id == "ss")
    );
    assert!(
        has("pt-s", 13) && has("pt-b", 28),
        "the rows after the cut stay"
    );

    // Writing goes on into the partitioned table; verifylog starts each node after its marker.
    post_events(&seq, 2).await;
    post_batch(&bat, 3).await;
    let (code, out, err) = run(&["verifylog", "--all", "--json"]);
    let rep: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(code, 0, "{rep}");
    let node = |id: &str| {
        rep["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["nodeId"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(node("ss")["archivedUpTo"], 1);
    assert_eq!(node("ss")["rows"], 2);
    assert_eq!(node("pt-s")["archivedUpTo"], 10);
    assert_eq!(node("pt-b")["archivedUpTo"], 24);
    seq.stop();
    bat.stop();
}

/// `partition setup` on a table that already holds rows, while a server writes to it: the rows
/// stay, as the partition `auditrecorddata_before`; the server goes on writing through the
/// switch; privileges carry over; verifylog and archive work on the result.
#[tokio::test]
async fn setup_converts_a_table_with_rows_while_a_server_writes() {
    let t = Db::new().await;
    let (url, base) = (t.url.as_str(), t.base());
    let run = |args: &[&str]| t.run(args);
    let mut a = base.to_vec();
    a.extend(["--node-id", "cv", "--device", "batched"]);
    let server = Server::start(&a).unwrap();
    post_events(&server, 5).await;
    exec(
        url,
        "CREATE ROLE partition_reader; GRANT SELECT ON auditrecorddata TO partition_reader",
    )
    .await;

    let (code, out, err) = run(&["partition", "setup", "--interval", "month"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("auditrecorddata_before"), "{out}");
    let (code, _, err) = run(&["partition", "setup", "--interval", "month"]);
    assert_eq!(code, 1, "a second setup is refused");
    assert!(err.contains("already partitioned"), "{err}");
    post_events(&server, 5).await;
    post_batch(&server, 5).await;

    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let (kind, readable): (String, bool) = sqlx::query_as(
        "SELECT relkind::text, has_table_privilege('partition_reader', oid, 'SELECT') \
         FROM pg_class WHERE oid = 'auditrecorddata'::regclass",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!((kind.as_str(), readable), ("p", true));
    let in_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM auditrecorddata_before")
        .fetch_one(&mut c)
        .await
        .unwrap();
    // The admin token's TOKEN_CREATE, and all 15 events (this month's rows go there too).
    assert_eq!(in_before, 16);

    let cut = now_ms().to_string();
    let (code, _, err) = t.archive_before(&cut);
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("dropped partition"),
        "its range is not over: {err}"
    );
    assert!(err.contains("deleted 16 archived rows of node cv"), "{err}");
    post_events(&server, 2).await;
    let (code, out, err) = run(&["verifylog", "--all", "--json"]);
    let rep: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(code, 0, "{rep}");
    server.stop();
}

/// A partition the archive may drop, but whose lock another transaction holds (here a writer's
/// ROW EXCLUSIVE lock, which conflicts with the archive's SHARE lock): after the lock timeout
/// (5 s) the archive does not wait on, it deletes that partition's archived rows one by one,
/// says so, and keeps the (now empty) partition; verifylog passes afterwards.
#[tokio::test]
async fn a_partition_whose_lock_is_not_granted_is_emptied_row_by_row_instead_of_dropped() {
    let t = Db::new().await;
    let (url, base) = (t.url.as_str(), t.base());
    let run = |args: &[&str]| t.run(args);
    let (code, _, err) = run(&["partition", "setup", "--interval", "day", "--ahead", "1"]);
    assert_eq!(code, 0, "{err}");
    for (name, _) in partitions(url).await {
        if name.starts_with("auditrecorddata_p") {
            exec(url, &format!("DROP TABLE {name}")).await;
        }
    }
    // One range for the rows to archive, one after it for the rows that stay.
    const WIDTH: i64 = 3_000;
    let t0 = now_ms();
    let store = auditseal_core::store::PgStore::connect(url).await.unwrap();
    for k in 0..3 {
        store
            .partition_create_range(t0 + k * WIDTH, t0 + (k + 1) * WIDTH)
            .await
            .unwrap();
    }
    let mut a = base.to_vec();
    a.extend(["--node-id", "lk", "--device", "batched"]);
    let server = Server::start(&a).unwrap();
    post_batch(&server, 10).await;
    let busy = partition_of(url, &all_rows(url).await[0].pk).await;
    let cut = t0 + WIDTH;
    assert!(now_ms() < cut, "the rows landed in the first range");
    wait_past(cut).await;
    post_events(&server, 2).await;
    let stored = all_rows(url).await;
    let archived = stored.iter().filter(|r| r.time_stamp < cut).count();
    assert!(archived >= 10, "{archived}");

    // Another transaction holds the partition the archive would drop.
    let mut holder = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; LOCK TABLE {busy} IN ROW EXCLUSIVE MODE"
    )))
    .execute(&mut holder)
    .await
    .unwrap();
    // Blocks this test's only thread; the holder's connection needs nothing meanwhile.
    let (code, _, err) = t.archive_before(&cut.to_string());
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "partition {busy}: its lock was not granted within 5s; its archived rows were \
             deleted one by one"
        )),
        "{err}"
    );
    assert!(
        !err.contains("dropped partition"),
        "nothing else was to drop: {err}"
    );
    assert!(partitions(url).await.iter().any(|(n, _)| *n == busy));
    // The archived rows are gone, every later one is there (and the archive's own events).
    let left = all_rows(url).await;
    assert!(left.iter().all(|r| r.time_stamp >= cut));
    for r in stored.iter().filter(|r| r.time_stamp >= cut) {
        assert!(
            left.iter().any(|l| l.pk == r.pk),
            "{} lost",
            r.sequence_number
        );
    }
    let (code, out, err) = run(&["verifylog", "--all", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    server.stop();
}
