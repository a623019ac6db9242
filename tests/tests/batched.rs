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
