//! The batched device through the real server: single events from many connections and bulk
//! requests form signed, chained batches; version 4 rows verify on read and with verifylog;
//! tampering with a row, a statement or the chain, or deleting the newest rows, is reported, and
//! so are the edits the protect string cannot see (a null made "", a moved `<sep/>`); after
//! kill -9 under load every acknowledged event is there. SQLite and PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use auditseal_e2e::{BACKENDS, Backend, Server, cli, event, exec, new_database};
use serde_json::{Value, json};

async fn post(url: &str, path: &str, body: String, ctype: &str) -> (u16, Value) {
    let r = auditseal_e2e::client_for(url)
        .post(format!("{url}{path}"))
        .header("content-type", ctype)
        .body(body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn verifylog(d: &str, url: &str) -> (i32, Value) {
    let (code, out, err) = cli(&[
        "verifylog",
        "--all",
        "--json",
        "--data-dir",
        d,
        "--database-url",
        url,
    ]);
    (
        code,
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}")),
    )
}

#[tokio::test]
async fn batches_from_many_connections_and_bulk_requests_verify_and_tampering_is_caught() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let args = [
            "--data-dir",
            d,
            "--node-id",
            "bn",
            "--database-url",
            &url,
            "--device",
            "batched",
        ];
        // Row 0 is the first admin token's TOKEN_CREATE; the events are 1.. .
        let s = Server::start(&args).unwrap();
        let surl = s.url.clone();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let u = surl.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        let (st, ack) = post(
                            &u,
                            "/api/v1/events",
                            event("PROCESS").to_string(),
                            "application/json",
                        )
                        .await;
                        assert_eq!(st, 201, "{ack}");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // Bulk: a JSON array, then NDJSON; each lands whole with consecutive numbers.
        let mut with_details = event("KEYGEN");
        with_details["additionalDetails"] =
            json!({"KEYALIAS": "k", "name": "Åsa", "raw": "tab\there \\N back\\slash\r\nend"});
        with_details["customId"] = json!("CN=a\tb\\c\nd");
        let arr = json!([event("A"), with_details, event("C")]).to_string();
        let (st, ack) = post(&surl, "/api/v1/events:batch", arr, "application/json").await;
        assert_eq!((st, ack["count"].as_i64()), (201, Some(3)), "{ack}");
        let seqs: Vec<i64> = ack["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["sequenceNumber"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, vec![161, 162, 163]);
        let nd = format!("{}\n{}\n", event("D"), event("E"));
        let (st, ack) = post(&surl, "/api/v1/events:batch", nd, "application/x-ndjson").await;
        assert_eq!((st, ack["count"].as_i64()), (201, Some(2)), "{ack}");
        // All or nothing: one bad item rejects the request, naming it, and writes nothing.
        let mut bad = event("F");
        bad["eventStatus"] = json!("MAYBE");
        let (st, err) = post(
            &surl,
            "/api/v1/events:batch",
            json!([event("F"), bad]).to_string(),
            "application/json",
        )
        .await;
        assert_eq!(st, 400, "{err}");
        assert_eq!(err["invalid"][0]["index"], 1);
        // Verify on read: version 4 rows, valid, details decoded.
        let list: Value = auditseal_e2e::get(format!("{surl}/api/v1/events?limit=200"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["count"], 166);
        for e in list["events"].as_array().unwrap() {
            assert!(
                e["rowProtection"].as_str().unwrap().starts_with("1:4:1:"),
                "{e}"
            );
            assert_eq!(e["verification"]["valid"], true, "{e}");
        }
        s.stop();

        let (code, rep) = verifylog(d, &url);
        assert_eq!(code, 0, "{rep}");
        assert_eq!(rep["rows"], 166);
        assert!(rep["nodes"][0]["batches"].as_i64().unwrap() >= 3);

        // A changed row: its inclusion proof no longer leads to the signed root.
        exec(
            &url,
            "UPDATE auditrecorddata SET authtoken = 'CN=mallory' WHERE sequencenumber = 162",
        )
        .await;
        let (code, rep) = verifylog(d, &url);
        assert_eq!(code, 255);
        let failed = rep["nodes"][0]["failed"].as_array().unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["sequenceNumber"], 162);
        assert!(
            failed[0]["reason"]
                .as_str()
                .unwrap()
                .contains("inclusion proof"),
            "{rep}"
        );
        exec(
            &url,
            "UPDATE auditrecorddata SET authtoken = 'CN=signer,O=Test' WHERE sequencenumber = 162",
        )
        .await;
        assert_eq!(verifylog(d, &url).0, 0, "restored");

        // A changed statement: its signature fails, for the batch and each of its rows.
        exec(&url, "UPDATE auditbatchdata SET \"timestamp\" = \"timestamp\" + 1 WHERE firstsequencenumber = 161").await;
        let (code, rep) = verifylog(d, &url);
        assert_eq!(code, 255);
        let fb = rep["nodes"][0]["failedBatches"].as_array().unwrap();
        assert!(
            fb.iter().any(|b| b["firstSequenceNumber"] == 161
                && b["reason"].as_str().unwrap().contains("does not verify")),
            "{rep}"
        );
        assert_eq!(rep["nodes"][0]["failed"].as_array().unwrap().len(), 3);
        exec(&url, "UPDATE auditbatchdata SET \"timestamp\" = \"timestamp\" - 1 WHERE firstsequencenumber = 161").await;
        assert_eq!(verifylog(d, &url).0, 0, "restored");

        // Deleting the newest rows: CESeCore's blind spot, seen here because the batch claims them.
        exec(
            &url,
            "DELETE FROM auditrecorddata WHERE sequencenumber >= 164",
        )
        .await;
        let (code, rep) = verifylog(d, &url);
        assert_eq!(code, 255, "{rep}");
        let fb = rep["nodes"][0]["failedBatches"].as_array().unwrap();
        assert!(
            fb.iter()
                .any(|b| b["reason"].as_str().unwrap().contains("rows were deleted")),
            "{rep}"
        );

        // Deleting a batch statement in the middle breaks the chain, and strands its rows.
        exec(&url, "DELETE FROM auditbatchdata WHERE firstsequencenumber = (SELECT MAX(firstsequencenumber) FROM auditbatchdata WHERE lastsequencenumber < 161)").await;
        let (code, rep) = verifylog(d, &url);
        assert_eq!(code, 255, "{backend:?} {rep}");
        let fb = rep["nodes"][0]["failedBatches"].as_array().unwrap();
        assert!(
            fb.iter().any(|b| b["firstSequenceNumber"] == 161
                && b["reason"].as_str().unwrap().contains("chain is broken")),
            "{rep}"
        );
        let failed = rep["nodes"][0]["failed"].as_array().unwrap();
        assert!(
            !failed.is_empty()
                && failed
                    .iter()
                    .all(|f| f["reason"].as_str().unwrap().contains("no batch statement")),
            "{rep}"
        );
    }
}

/// Issue 12.3 through the real server and CLI: a null column made "" and a `<sep/>` moved
/// between two columns keep the protect string, but not the batched device's version 4 leaves
/// nor the fold 2 head hash of the checkpoint the server writes when it stops.
#[tokio::test]
async fn a_null_made_empty_or_a_moved_separator_fails_rows_and_checkpoint() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let args = [
            "--data-dir",
            d,
            "--node-id",
            "amb",
            "--database-url",
            &url,
            "--device",
            "batched",
        ];
        let s = Server::start(&args).unwrap();
        // Row 0 is the admin token's TOKEN_CREATE; row 1 has a null customId, row 2
        // searchDetail1 `a<sep/>b` and searchDetail2 `c`.
        let mut split = event("PROCESS");
        split["searchDetail1"] = json!("a<sep/>b");
        split["searchDetail2"] = json!("c");
        let arr = json!([event("PROCESS"), split]).to_string();
        let (st, ack) = post(&s.url, "/api/v1/events:batch", arr, "application/json").await;
        assert_eq!(st, 201, "{ack}");
        s.stop();
        let (code, rep) = verifylog(d, &url);
        assert_eq!(code, 0, "{backend:?} {rep}");
        assert_eq!(rep["nodes"][0]["checkpoints"], 1, "{backend:?} {rep}");

        exec(
            &url,
            "UPDATE auditrecorddata SET customid = '' WHERE sequencenumber = 1",
        )
        .await;
        exec(
            &url,
            "UPDATE auditrecorddata SET searchdetail1 = 'a', searchdetail2 = 'b<sep/>c' \
             WHERE sequencenumber = 2",
        )
        .await;
        let (code, rep) = verifylog(d, &url);
        assert_eq!(code, 255, "{backend:?} {rep}");
        let n = &rep["nodes"][0];
        let failed: Vec<i64> = n["failed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["sequenceNumber"].as_i64().unwrap())
            .collect();
        assert_eq!(failed, vec![1, 2], "{backend:?} {rep}");
        let fc = n["failedCheckpoints"].as_array().unwrap();
        assert!(
            fc.len() == 1 && fc[0]["reason"].as_str().unwrap().contains("head hash"),
            "{backend:?} {rep}"
        );
    }
}

#[tokio::test]
async fn kill_9_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Postgres, dir.path()).await;
    let args = [
        "--data-dir",
        d,
        "--node-id",
        "crash",
        "--database-url",
        &url,
        "--device",
        "batched",
    ];
    let s = Server::start(&args).unwrap();
    let pid = s.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (u, stop) = (s.url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = auditseal_e2e::client_for(&u);
                let mut acked = Vec::new();
                // Bounded: stops at the kill, or after 5000 requests.
                for _ in 0..5000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match client
                        .post(format!("{u}/api/v1/events"))
                        .json(&event("PROCESS"))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 201 => {
                            let v: Value = r.json().await.unwrap();
                            acked.push(v["pk"].as_str().unwrap().to_string());
                        }
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for w in workers {
        acked.extend(w.await.unwrap());
    }
    drop(s);
    assert!(acked.len() > 50, "load ran: {}", acked.len());
    // Restart: the node continues, and everything acknowledged is there. A commit the killed
    // process had already sent may still be landing when the new one reads the head: its first
    // batch then collides (503, nothing written) and the next one re-reads the head.
    let s = Server::start(&args).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (st, body) = post(
            &s.url,
            "/api/v1/events",
            event("AFTER").to_string(),
            "application/json",
        )
        .await;
        statuses.push(st);
        if st == 201 {
            break;
        }
        assert_eq!(st, 503, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        statuses.last(),
        Some(&201),
        "the restarted node accepts events: {statuses:?}"
    );
    s.stop();
    let rows = auditseal_e2e::all_rows(&url).await;
    let pks: std::collections::HashSet<_> = rows.iter().map(|r| r.pk.as_str()).collect();
    let missing = acked.iter().filter(|pk| !pks.contains(pk.as_str())).count();
    assert_eq!(missing, 0, "acknowledged events lost");
    let (code, rep) = verifylog(d, &url);
    assert_eq!(code, 0, "{rep}");
}

/// PostgreSQL takes two batches of one writer at once (`Store::open_batches`): a batch's rows
/// are inserted while the batch before it commits, in a transaction of their own. When that
/// commit fails, the later batch is never committed: both batches' requests are refused, nothing
/// of either is stored, and the next batch takes their numbers again (no gap, the chain
/// verifies). A batch whose insert fails while the one before it is still committing waits for
/// that commit before the writer reads the head again, so no batch takes numbers still being
/// committed.
#[tokio::test]
async fn a_batch_inserted_while_the_one_before_commits_is_rolled_back_when_that_commit_fails() {
    use auditseal_core::batched::{BatchedConfig, BatchedDevice};
    use auditseal_core::device::{LogDevice, NewEvent};
    use auditseal_core::token::{HmacToken, SharedToken};

    let dir = tempfile::tempdir().unwrap();
    let url = new_database(Backend::Postgres, dir.path()).await;
    let store = auditseal_core::store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.open_batches(), 2);
    let token: SharedToken = Arc::new(HmacToken::new(9, b"pipeline secret"));
    let cfg = BatchedConfig {
        max_batch: 10,
        max_wait: Duration::from_millis(1),
        queue: 1000,
    };
    let device = Arc::new(
        BatchedDevice::start(store.clone(), "pl".into(), Some(token.clone()), cfg)
            .await
            .unwrap(),
    );
    let events = |mark: &str| -> Vec<NewEvent> {
        (0..10)
            .map(|i| NewEvent {
                event_type: "PROCESS".into(),
                event_status: "SUCCESS".into(),
                auth_token: "CN=pipeline".into(),
                service: "SIGNSERVER".into(),
                module: "TEST".into(),
                custom_id: None,
                search_detail1: Some(format!("{mark}:{i}")),
                search_detail2: None,
                additional_details: None,
                pk: None,
                details_listing: Default::default(),
            })
            .collect()
    };
    let first = device.append_all(events("warm")).await.unwrap();
    assert_eq!(first[0].sequence_number, 0);
    // The batch statement that starts at 10 makes its COMMIT wait, then fail.
    exec(
        &url,
        "CREATE FUNCTION slow_refusal() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep(1.5); RAISE EXCEPTION 'commit refused by the test'; END $$; \
         CREATE CONSTRAINT TRIGGER slow_refusal AFTER INSERT ON auditbatchdata \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.firstsequencenumber = 10) \
         EXECUTE FUNCTION slow_refusal()",
    )
    .await;
    let (d1, e1) = (device.clone(), events("failed"));
    let failed = tokio::spawn(async move { d1.append_all(e1).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (d2, e2) = (device.clone(), events("after"));
    let after = tokio::spawn(async move { d2.append_all(e2).await });
    // While the first commit waits, the second batch's rows are in an open transaction.
    let side = auditseal_core::store::PgStore::connect(&url).await.unwrap();
    let mut open_seen = false;
    for _ in 0..40 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'idle in transaction'",
        )
        .fetch_one(side.pool())
        .await
        .unwrap();
        if n > 0 {
            open_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        open_seen,
        "the second batch was not inserted while the first committed"
    );
    let failed = failed.await.unwrap();
    let after = after.await.unwrap();
    assert!(failed.is_err(), "{failed:?}");
    assert!(after.is_err(), "{after:?}");
    exec(&url, "DROP TRIGGER slow_refusal ON auditbatchdata").await;
    let again = device.append_all(events("again")).await.unwrap();
    assert_eq!(again[0].sequence_number, 10);

    // A batch whose insert fails while the batch before it still commits (slowly, and then
    // successfully): its failure must not make the writer read the head before that commit
    // lands, or the next batch would take the committing batch's numbers (a conflict, then
    // "someone else writes as this node").
    exec(
        &url,
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON auditbatchdata \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.firstsequencenumber = 20) \
         EXECUTE FUNCTION slow_commit(); \
         CREATE FUNCTION refusal() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'insert refused by the test'; END $$; \
         CREATE TRIGGER refusal BEFORE INSERT ON auditbatchdata \
         FOR EACH ROW WHEN (NEW.firstsequencenumber = 30) EXECUTE FUNCTION refusal()",
    )
    .await;
    let (d, e) = (device.clone(), events("slow"));
    let slow = tokio::spawn(async move { d.append_all(e).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (d, e) = (device.clone(), events("refused"));
    let refused = tokio::spawn(async move { d.append_all(e).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Sent while the slow batch commits and after the refused one's insert failed.
    let (d, e) = (device.clone(), events("meanwhile"));
    let meanwhile = tokio::spawn(async move { d.append_all(e).await });
    let slow = slow.await.unwrap().expect("the slow batch commits");
    assert_eq!(slow[0].sequence_number, 20);
    assert!(refused.await.unwrap().is_err());
    let meanwhile = meanwhile.await.unwrap();
    exec(
        &url,
        "DROP TRIGGER slow_commit ON auditbatchdata; DROP TRIGGER refusal ON auditbatchdata",
    )
    .await;
    let next = device.append_all(events("next")).await;
    assert_eq!(device.inconsistent(), None, "{meanwhile:?}");
    let next = next.expect("the log goes on after the refused batch");
    let expected_next = match &meanwhile {
        Ok(m) => {
            assert_eq!(m[0].sequence_number, 30);
            40
        }
        Err(_) => 30,
    };
    assert_eq!(next[0].sequence_number, expected_next);
    let kept = if meanwhile.is_ok() { 50 } else { 40 };

    let rows = auditseal_e2e::all_rows(&url).await;
    let mut seqs: Vec<i64> = rows.iter().map(|r| r.sequence_number).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..kept).collect::<Vec<_>>());
    assert!(
        rows.iter().all(|r| {
            let m = r.search_detail1.as_deref().unwrap_or("");
            !m.starts_with("failed:") && !m.starts_with("after:") && !m.starts_with("refused:")
        }),
        "a refused batch's row is stored"
    );
    let mut ring = auditseal_core::keys::KeyRing::new();
    ring.insert(9, token.verify_key());
    let report = auditseal_core::verify::verify_log(
        &store,
        &Arc::new(ring),
        &auditseal_core::verify::Selection::All,
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!((report.rows, report.errors), (kept as u64, 0), "{report}");
}
