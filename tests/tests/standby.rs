//! Reads from a standby (docs/OPERATIONS.md "Reads from a standby"), end to end: a server writes
//! to the primary of `scripts/pg-ha` with `--database-read-url` at its standby. The events it
//! acknowledges are found through the query API once the standby has replayed them; queries,
//! an export, `POST /api/v1/verify` and `auditseal-db verifylog` against the standby read
//! AuditRecordData there and not on the primary, as PostgreSQL's own statistics
//! (`pg_stat_user_tables`, kept per server) show; with the standby stopped, events are still
//! accepted while the read API answers 503 `read_database_unavailable` and `/readyz` names it.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

use auditseal_e2e::pg_ha::{Pair, pg_ha};
use auditseal_e2e::{Server, bin_dir, cli, event, metric};

/// How many events are written before the reads.
const EVENTS: i64 = 400;

/// AuditRecordData's read counters on one server: scans started and rows they returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reads {
    scans: i64,
    rows: i64,
}

async fn reads(url: &str) -> Reads {
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    let (scans, rows): (i64, i64) = sqlx::query_as(
        "SELECT (COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0))::int8, \
         (COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0))::int8 \
         FROM pg_stat_user_tables WHERE relname = 'auditrecorddata'",
    )
    .fetch_one(&mut c)
    .await
    .expect("pg_stat_user_tables");
    Reads { scans, rows }
}

/// Waits until no other client session is left on the server at `url`: a backend reports
/// its counters when it exits, so after this every read made so far is counted.
async fn quiet(url: &str) {
    wait_for("the server's sessions to end", || async {
        let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut c)
        .await
        .expect("pg_stat_activity");
        let _ = c.close().await;
        (others == 0).then_some(())
    })
    .await;
}

/// Runs SQL statements one at a time (ALTER SYSTEM refuses a transaction block).
async fn sql(url: &str, statements: &[&str]) {
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    for s in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(s.to_string()))
            .execute(&mut c)
            .await
            .expect(s);
    }
}

/// Waits (up to 60 s, for a loaded machine) until `check` returns Some.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waited 60 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let r = client.get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn server_args<'a>(d: &'a str, pair: &'a Pair) -> [&'a str; 8] {
    [
        "--data-dir",
        d,
        "--node-id",
        "standby1",
        "--database-url",
        &pair.primary_url,
        "--database-read-url",
        &pair.standby_url,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_verification_move_to_the_standby_and_ingestion_outlives_it() {
    let t0 = Instant::now();
    let pair = tokio::task::spawn_blocking(Pair::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let s = Server::start(&server_args(d, &pair)).unwrap();
    let client = s.client();
    // check-config names the read database and what it is; the primary given as the read
    // database by mistake (here in the variable) is no error, but is said.
    let text = check_config(&server_args(d, &pair), None);
    assert!(
        text.contains(&format!("read database: {} (a standby", pair.standby_url)),
        "{text}"
    );
    let text = check_config(&server_args(d, &pair)[..6], Some(&pair.primary_url));
    assert!(
        text.contains(&format!(
            "read database: {} (WARNING a writable server",
            pair.primary_url
        )),
        "{text}"
    );

    // Events through the primary.
    let batch: Vec<Value> = (0..EVENTS).map(|_| event("STANDBY")).collect();
    let r = client
        .post(format!("{}/api/v1/events:batch", s.url))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let acked: Value = r.json().await.unwrap();
    let pks: Vec<String> = acked["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pk"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pks.len() as i64, EVENTS);

    // They show through the read API once the standby has replayed them (synchronous_commit
    // = on waits for the standby's flush, not its replay).
    let count_url = format!(
        "{}/api/v1/events:count?criteria=eventType+EQ+STANDBY",
        s.url
    );
    wait_for("the standby to replay the events", || async {
        let (status, v) = get(&client, count_url.clone()).await;
        assert_eq!(status, 200, "{v}");
        (v["count"].as_i64() == Some(EVENTS)).then_some(())
    })
    .await;
    eprintln!("[{:?}] {EVENTS} events written and replayed", t0.elapsed());
    let text = s.log();
    assert!(
        text.contains("read from the standby (database_read_url)"),
        "{text}"
    );

    // As after any bulk load (docs/OPERATIONS.md "Counts and VACUUM"): the checkpoint writer's
    // count of the node's rows (on the primary, at the stop) then reads the index, not every
    // row, and the counters below tell reading rows from counting them.
    sql(&pair.primary_url, &["VACUUM auditrecorddata"]).await;

    // Counters before the reads. They are only complete once the sessions that read have
    // ended (a backend reports its counts when idle, at most once a second, and always when it
    // exits): the server is stopped around each snapshot.
    s.stop();
    quiet(&pair.primary_url).await;
    quiet(&pair.standby_url).await;
    let (primary_before, standby_before) = (
        reads(&pair.primary_url).await,
        reads(&pair.standby_url).await,
    );
    let s = Server::start(&server_args(d, &pair)).unwrap();
    let client = s.client();

    // The reads: pages, counts, single events, proofs, an export, a verification through the
    // API, and verifylog against the standby.
    let mut cursor: Option<String> = None;
    let mut listed = 0;
    loop {
        let mut url = format!(
            "{}/api/v1/events?criteria=eventType+EQ+STANDBY&limit=100&order=asc",
            s.url
        );
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, v) = get(&client, url).await;
        assert_eq!(status, 200, "{v}");
        for e in v["events"].as_array().unwrap() {
            assert_eq!(e["verification"]["valid"], true, "{e}");
            listed += 1;
        }
        match v["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(listed, EVENTS);
    for pk in pks.iter().step_by(40) {
        let (status, v) = get(&client, format!("{}/api/v1/events/{pk}", s.url)).await;
        assert_eq!((status, v["pk"].as_str()), (200, Some(pk.as_str())), "{v}");
        let (status, v) = get(&client, format!("{}/api/v1/events/{pk}/proof", s.url)).await;
        assert_eq!(status, 200, "{v}");
    }
    let r = client
        .get(format!("{}/api/v1/export?format=ndjson", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let lines = r.text().await.unwrap().lines().count() as i64;
    assert!(lines >= EVENTS, "{lines} export lines");
    let r = client
        .post(format!("{}/api/v1/verify", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["outcome"], "SUCCESS", "{v}");
    let verified_by_api = v["report"]["rows"].as_i64().unwrap();
    assert!(verified_by_api >= EVENTS, "{v}");
    // verifylog on the standby: it only reads (a write there would fail), and says it reads a
    // standby.
    let (code, out, err) = verifylog(d, &pair.standby_url);
    assert_eq!(code, 0, "verifylog on the standby: {out}{err}");
    assert!(err.contains("reading a standby"), "{err}");
    eprintln!("[{:?}] reads done", t0.elapsed());

    // The standby counted the reads; the primary did not read the rows.
    s.stop();
    quiet(&pair.primary_url).await;
    quiet(&pair.standby_url).await;
    let (primary_after, standby_after) = (
        reads(&pair.primary_url).await,
        reads(&pair.standby_url).await,
    );
    let primary_rows = primary_after.rows - primary_before.rows;
    let standby_rows = standby_after.rows - standby_before.rows;
    eprintln!(
        "AuditRecordData rows read during the reads: primary {primary_rows} ({} scans), standby \
         {standby_rows} ({} scans)",
        primary_after.scans - primary_before.scans,
        standby_after.scans - standby_before.scans
    );
    // Listing, export and two verifications read every row on the standby at least three
    // times; the primary read only what writing the LOG_EXPORT and LOG_VERIFY events and the
    // start-up need, a handful of rows, never one verification's worth.
    assert!(
        standby_rows >= 3 * EVENTS,
        "the standby read {standby_rows} rows of AuditRecordData during the reads"
    );
    assert!(
        primary_rows < EVENTS / 10,
        "the primary read {primary_rows} rows of AuditRecordData during the reads"
    );

    // The standby stops. The pair is synchronous, so the primary's commits would wait for it
    // (docs/HA.md "When the standby is down"): switch it to asynchronous first, as an operator
    // does.
    sql(
        &pair.primary_url,
        &[
            "ALTER SYSTEM SET synchronous_standby_names = ''",
            "SELECT pg_reload_conf()",
        ],
    )
    .await;
    let s = Server::start(&server_args(d, &pair)).unwrap();
    let client = s.client();
    let up = format!(
        "auditseal_read_database_up{{database=\"{}\"}}",
        pair.standby_url
    );
    let (status, text) = metrics(&client, &s.url).await;
    assert_eq!((status, metric(&text, &up)), (200, Some(1.0)), "{text}");
    assert!(
        text.contains("auditseal_read_database_replay_lag_seconds{"),
        "{text}"
    );
    let p = pair.dir.clone();
    tokio::task::spawn_blocking(move || pg_ha(&["stop-standby", &p]))
        .await
        .unwrap();
    eprintln!("[{:?}] standby stopped", t0.elapsed());
    assert_eq!(
        post_after(&client, &s.url).await,
        201,
        "events are still accepted"
    );
    // The probe (every 2 s) notices; the node stays ready for events and says why reads fail.
    let readyz = format!("{}/readyz", s.url);
    let (status, v) = wait_for("/readyz to name the read database", || async {
        let (status, v) = get(&client, readyz.clone()).await;
        (v["warnings"][0]["check"] == "read_database").then_some((status, v))
    })
    .await;
    assert_eq!(status, 200, "the node still takes events: {v}");
    // From then on reads fail at once (not after the pool's wait for a connection), and say
    // why.
    let started = Instant::now();
    let (status, v) = get(&client, format!("{}/api/v1/events?limit=5", s.url)).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"], "read_database_unavailable", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("events are still accepted"),
        "{v}"
    );
    eprintln!(
        "a read with the standby known down: 503 after {:?}",
        started.elapsed()
    );
    let (status, v) = get(&client, format!("{}/api/v1/verify", s.url)).await;
    assert_eq!(
        (status, &v["error"]),
        (503, &Value::from("read_database_unavailable")),
        "{v}"
    );
    let (_, text) = metrics(&client, &s.url).await;
    assert_eq!(metric(&text, &up), Some(0.0), "{text}");
    assert_eq!(
        post_after(&client, &s.url).await,
        201,
        "events are still accepted"
    );
    let text = s.stop_and_log();
    assert!(text.contains("the read database does not answer"), "{text}");
    // Both events are on the primary, and the log verifies whole there.
    let mut c = sqlx::PgConnection::connect(&pair.primary_url)
        .await
        .unwrap();
    let after: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM auditrecorddata WHERE eventtype = 'AFTER'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(after, 2);
    let (code, out, err) = verifylog(d, &pair.primary_url);
    assert_eq!(code, 0, "verifylog on the primary: {out}{err}");
    drop(pair);
    eprintln!("standby test: {:?}", t0.elapsed());
}

/// `auditseal-server check-config` with `args` (and AUDITSEAL_DATABASE_READ_URL=`read_url`):
/// what it printed; it must find no problem.
fn check_config(args: &[&str], read_url: Option<&str>) -> String {
    let mut cmd = std::process::Command::new(bin_dir().join("auditseal-server"));
    cmd.args(args)
        .args(["--bind", "127.0.0.1:0", "check-config"])
        .env_remove("AUDITSEAL_DATABASE_URL")
        .env_remove("AUDITSEAL_DATABASE_READ_URL");
    if let Some(u) = read_url {
        cmd.env("AUDITSEAL_DATABASE_READ_URL", u);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

/// `auditseal-db verifylog --all` on the database at `url`: (exit code, stdout, stderr).
fn verifylog(data_dir: &str, url: &str) -> (i32, String, String) {
    cli(&[
        "verifylog",
        "--all",
        "--data-dir",
        data_dir,
        "--database-url",
        url,
    ])
}

async fn post_after(client: &reqwest::Client, url: &str) -> u16 {
    let r = client
        .post(format!("{url}/api/v1/events"))
        .json(&event("AFTER"))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

async fn metrics(client: &reqwest::Client, url: &str) -> (u16, String) {
    let r = client.get(format!("{url}/metrics")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}
