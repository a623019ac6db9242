//! Archiving through the real CLI while servers keep writing: the segment verifies offline and
//! fails when one byte changes; the archived rows are gone, each node continues after its archive
//! marker and verifylog reports no gap; LOG_EXPORT and LOG_DELETE are logged; a second archive
//! continues the first's head hash; a row that does not verify stops the archive before anything
//! is written. SQLite and PostgreSQL, sequential and batched nodes side by side.

use std::time::Duration;

use auditseal_e2e::{BACKENDS, Server, all_rows, cli, exec, new_database, post_events};
use serde_json::Value;

fn run_json(base: &[&str], args: &[&str]) -> (i32, Value, String) {
    let mut all = base.to_vec();
    all.extend(args);
    let (code, out, err) = cli(&all);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v, err)
}

fn now_ms() -> i64 {
    auditseal_core::time::now_millis()
}

#[tokio::test]
async fn archive_exports_verifies_deletes_and_verifylog_continues_without_gap() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let base = ["--data-dir", d, "--database-url", &url];
        let start = |node: &'static str, device: &'static str| {
            let mut a = base.to_vec();
            a.extend(["--node-id", node, "--device", device]);
            Server::start(&a).unwrap()
        };
        // ar-s starts first on the empty database: its row 0 is the first admin token's
        // TOKEN_CREATE, its events 1..
        let seq = start("ar-s", "sequential");
        let bat = start("ar-b", "batched");
        post_events(&seq, 20).await;
        post_events(&bat, 25).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cut = now_ms().to_string();
        tokio::time::sleep(Duration::from_millis(5)).await;
        post_events(&seq, 10).await;
        post_events(&bat, 10).await;

        let out1 = dir.path().join("archive-1");
        let out1s = out1.to_str().unwrap();
        let mut a = base.to_vec();
        a.extend(["archive", "--before", &cut, "--out", out1s]);
        let (code, _, err) = cli(&a);
        assert_eq!(code, 0, "{backend:?}: {err}");
        assert!(err.contains("exported node ar-s rows 0..20"), "{err}");
        assert!(err.contains("exported node ar-b rows 0..24"), "{err}");

        // Offline check of the segment, then of a copy with one byte changed.
        let (code, rep, _) = run_json(&base, &["verify-export", out1s, "--json"]);
        assert_eq!(code, 0, "{rep}");
        assert_eq!(rep["rows"], 46);
        let seg = out1.join("segment.ndjson");
        let bytes = std::fs::read(&seg).unwrap();
        let bad = dir.path().join("archive-bad");
        std::fs::create_dir(&bad).unwrap();
        std::fs::copy(
            out1.join("segment.ndjson.sig"),
            bad.join("segment.ndjson.sig"),
        )
        .unwrap();
        let mut changed = bytes.clone();
        let at = String::from_utf8_lossy(&bytes).find("PROCESS").unwrap();
        changed[at] = b'Q';
        std::fs::write(bad.join("segment.ndjson"), &changed).unwrap();
        let (code, rep, _) = run_json(&base, &["verify-export", bad.to_str().unwrap(), "--json"]);
        assert_eq!(code, 255, "{rep}");
        assert!(rep.to_string().contains("the file was changed"), "{rep}");

        // The database: archived rows gone, the events logged by the CLI's own node.
        let rows = all_rows(&url).await;
        assert!(
            !rows
                .iter()
                .any(|r| r.node_id == "ar-s" && r.sequence_number < 21)
        );
        assert!(
            !rows
                .iter()
                .any(|r| r.node_id == "ar-b" && r.sequence_number < 25)
        );
        let events: Vec<_> = rows
            .iter()
            .filter(|r| r.event_type.starts_with("LOG_"))
            .map(|r| (r.event_type.as_str(), r.service.as_str()))
            .collect();
        assert_eq!(
            events,
            [("LOG_EXPORT", "AUDITSEAL"), ("LOG_DELETE", "AUDITSEAL")],
            "{events:?}"
        );

        // Writing goes on; verifylog starts each node after its marker and finds no gap.
        post_events(&seq, 3).await;
        post_events(&bat, 3).await;
        let (code, rep, _) = run_json(&base, &["verifylog", "--all", "--json"]);
        assert_eq!(code, 0, "{rep}");
        for (node, archived, rows) in [("ar-b", 24, 13), ("ar-s", 20, 13)] {
            let n = rep["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["nodeId"] == node)
                .unwrap();
            assert_eq!(n["archivedUpTo"], archived, "{n}");
            assert_eq!(n["offset"], archived + 1, "{n}");
            assert_eq!(n["rows"], rows, "{n}");
            assert_eq!(n["chainChecked"], true, "{n}");
        }
        // An explicit offset inside the archived range starts at the marker instead.
        let (code, rep, _) = run_json(&base, &["verifylog", "--node", "ar-s:0", "--json"]);
        assert_eq!(code, 0, "{rep}");
        assert!(
            rep["nodes"][0]["notes"][0]
                .as_str()
                .unwrap()
                .contains("archived")
        );

        // A second archive continues where the first ended.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cut2 = now_ms().to_string();
        let out2 = dir.path().join("archive-2");
        let mut a = base.to_vec();
        a.extend([
            "archive",
            "--before",
            &cut2,
            "--out",
            out2.to_str().unwrap(),
        ]);
        let (code, _, err) = cli(&a);
        assert_eq!(code, 0, "{err}");
        let (_, first, _) = run_json(&base, &["verify-export", out1s, "--json"]);
        let (code, second, _) =
            run_json(&base, &["verify-export", out2.to_str().unwrap(), "--json"]);
        assert_eq!(code, 0, "{second}");
        let summary = |rep: &Value, node: &str| {
            rep["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["nodeId"] == node)
                .cloned()
                .unwrap()
        };
        for node in ["ar-s", "ar-b"] {
            assert_eq!(
                summary(&second, node)["startHead"],
                summary(&first, node)["endHead"],
                "{node}"
            );
        }
        let (code, rep, _) = run_json(&base, &["verifylog", "--all", "--json"]);
        assert_eq!(code, 0, "{rep}");
        seq.stop();
        bat.stop();
    }
}

#[tokio::test]
async fn a_row_that_does_not_verify_stops_the_archive_before_anything_is_written() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let base = ["--data-dir", d, "--database-url", &url];
        let mut a = base.to_vec();
        a.extend(["--node-id", "bad"]);
        let s = Server::start(&a).unwrap();
        post_events(&s, 5).await;
        s.stop();
        exec(
            &url,
            "UPDATE auditrecorddata SET eventstatus = 'FAILURE' WHERE sequencenumber = 3",
        )
        .await;
        let out = dir.path().join("archive");
        let mut a = base.to_vec();
        let cut = now_ms().to_string();
        a.extend(["archive", "--before", &cut, "--out", out.to_str().unwrap()]);
        let (code, _, err) = cli(&a);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("node bad: row 3 does not verify") && err.contains("nothing was archived"),
            "{err}"
        );
        assert!(!out.exists());
        // The first admin token's TOKEN_CREATE and the 5 events.
        assert_eq!(all_rows(&url).await.len(), 6);
        // And a time in the future is refused.
        let mut a = base.to_vec();
        let future = (now_ms() + 3_600_000).to_string();
        a.extend([
            "archive",
            "--before",
            &future,
            "--out",
            out.to_str().unwrap(),
        ]);
        let (code, _, err) = cli(&a);
        assert_eq!(code, 1);
        assert!(err.contains("in the future"), "{err}");
    }
}

/// Posts one event and returns its sequence number, retrying 503s (a server that has just lost
/// its database connections answers some) for up to 20 s.
async fn post_one(server: &Server) -> i64 {
    let client = server.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = client
            .post(format!("{}/api/v1/events", server.url))
            .json(&auditseal_e2e::event("PROCESS"))
            .send()
            .await
            .expect("POST /api/v1/events");
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        if status == 201 {
            return body["sequenceNumber"].as_i64().unwrap();
        }
        assert_eq!(status, 503, "{body}");
        assert!(std::time::Instant::now() < deadline, "still 503: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 11.1: an archive that removes every row of an idle node. Numbering used to restart at 0
/// (after a restart, or after any database error in a running server); verifylog never saw the
/// reused numbers and the next archive deleted them without writing them to its segment. Now the
/// node goes on after its archive marker, and a second archive keeps and deletes exactly those.
#[tokio::test]
async fn an_idle_node_archived_whole_keeps_numbering_after_its_marker() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let base = ["--data-dir", d, "--database-url", &url];
        let start = |node: &'static str, device: &'static str| {
            let mut a = base.to_vec();
            a.extend(["--node-id", node, "--device", device]);
            Server::start(&a).unwrap()
        };
        let seq = start("idle-s", "sequential");
        let bat = start("idle-b", "batched");
        post_events(&seq, 4).await;
        post_events(&bat, 5).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cut = now_ms().to_string();
        let out1 = dir.path().join("archive-1");
        let mut a = base.to_vec();
        a.extend(["archive", "--before", &cut, "--out", out1.to_str().unwrap()]);
        let (code, _, err) = cli(&a);
        assert_eq!(code, 0, "{backend:?}: {err}");
        assert!(err.contains("exported node idle-s rows 0..4"), "{err}");
        assert!(err.contains("exported node idle-b rows 0..4"), "{err}");
        let rows = all_rows(&url).await;
        assert!(
            !rows
                .iter()
                .any(|r| r.node_id.starts_with("idle-") && !r.node_id.ends_with("-db")),
            "every row of both nodes archived"
        );

        // In the running servers, after a database error (PostgreSQL: their connections
        // terminated; the devices then read their heads again).
        if backend == auditseal_e2e::Backend::Postgres {
            let db = url.rsplit('/').next().unwrap();
            exec(
                &auditseal_e2e::pg_admin_url(),
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = '{db}' AND pid <> pg_backend_pid()"
                ),
            )
            .await;
        }
        assert_eq!(post_one(&seq).await, 5, "{backend:?} sequential, running");
        assert_eq!(post_one(&bat).await, 5, "{backend:?} batched, running");
        // After a restart.
        drop(seq);
        drop(bat);
        let seq = start("idle-s", "sequential");
        let bat = start("idle-b", "batched");
        assert_eq!(post_one(&seq).await, 6, "{backend:?} sequential, restarted");
        assert_eq!(post_one(&bat).await, 6, "{backend:?} batched, restarted");

        let (code, rep, _) = run_json(&base, &["verifylog", "--all", "--json"]);
        assert_eq!(code, 0, "{backend:?}: {rep}");
        // A second archive takes exactly the new rows, and deletes what it wrote.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cut = now_ms().to_string();
        let out2 = dir.path().join("archive-2");
        let mut a = base.to_vec();
        a.extend(["archive", "--before", &cut, "--out", out2.to_str().unwrap()]);
        let (code, _, err) = cli(&a);
        assert_eq!(code, 0, "{backend:?}: {err}");
        assert!(
            err.contains("exported node idle-s rows 5..6 (2 rows)"),
            "{err}"
        );
        assert!(
            err.contains("exported node idle-b rows 5..6 (2 rows)"),
            "{err}"
        );
        assert!(
            err.contains("deleted 2 archived rows of node idle-s"),
            "{err}"
        );
        assert!(!err.contains("different number"), "{err}");
        post_events(&seq, 1).await;
        let (code, rep, _) = run_json(&base, &["verifylog", "--all", "--json"]);
        assert_eq!(code, 0, "{backend:?}: {rep}");
    }
}
