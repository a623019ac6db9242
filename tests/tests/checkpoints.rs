//! Checkpoints through the real server and CLI: the server writes signed checkpoints to the
//! database, to a file and to a syslog socket; `checkpoint export` saves them; with that copy,
//! `verifylog --checkpoint` reports deleting a node's newest rows (with their batch statements
//! and the stored checkpoints: undetectable without the copy) and rewriting a covered row.
//! Both devices, SQLite and PostgreSQL.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use auditseal_e2e::{BACKENDS, Server, cli, exec, new_database, post_events};
use serde_json::Value;

fn verifylog(base: &[&str], extra: &[&str]) -> (i32, Value, String) {
    let mut args = base.to_vec();
    args.extend(["verifylog", "--all", "--json"]);
    args.extend(extra);
    let (code, out, err) = cli(&args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v, err)
}

/// Waits until the database holds a checkpoint of `node` at `seq`.
fn wait_for_checkpoint(base: &[&str], node: &str, seq: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = format!("{node} sequence {seq} checkpoint");
    loop {
        let mut args = base.to_vec();
        args.extend(["checkpoint", "list"]);
        let (code, out, err) = cli(&args);
        assert_eq!(code, 0, "{err}");
        if out.contains(&want) {
            return;
        }
        assert!(Instant::now() < deadline, "no checkpoint at {seq}: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn deleting_the_newest_rows_after_a_checkpoint_is_reported_with_its_copy() {
    for backend in BACKENDS {
        for device in ["sequential", "batched"] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().to_str().unwrap();
            let url = new_database(backend, dir.path()).await;
            let syslog_path = dir.path().join("syslog.sock");
            let syslog = UnixDatagram::bind(&syslog_path).unwrap();
            syslog
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let config = dir.path().join("auditseal.toml");
            std::fs::write(
                &config,
                format!(
                    "[checkpoint]\ninterval_secs = 1\nfile = \"checkpoints.jsonl\"\nsyslog = {:?}\n",
                    syslog_path.to_str().unwrap()
                ),
            )
            .unwrap();
            let cfg = config.to_str().unwrap();
            let base = ["--data-dir", d, "--database-url", &url];
            let mut args = base.to_vec();
            args.extend(["--config", cfg, "--node-id", "cp", "--device", device]);
            let s = Server::start(&args).unwrap();
            post_events(&s, 30).await;
            wait_for_checkpoint(&base, "cp", 30);
            let mut buf = [0u8; 4096];
            let n = syslog.recv(&mut buf).unwrap();
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(
                msg.starts_with("<85>auditseal[") && msg.contains("\"nodeId\":\"cp\""),
                "{msg}"
            );
            post_events(&s, 10).await;
            s.stop();
            // A clean stop writes a last checkpoint.
            wait_for_checkpoint(&base, "cp", 40);
            let saved = dir.path().join("saved.jsonl");
            let mut export = base.to_vec();
            let saved_s = saved.to_str().unwrap();
            export.extend(["checkpoint", "export", "--out", saved_s]);
            let (code, _, err) = cli(&export);
            assert_eq!(code, 0, "{err}");
            let (code, _, err) = cli(&export);
            assert_eq!(code, 1, "never overwrites: {err}");
            assert!(err.contains("exists") && err.contains("--force"), "{err}");

            let (code, rep, _) = verifylog(&base, &["--checkpoint", saved_s]);
            assert_eq!(code, 0, "{backend:?} {device}: {rep}");
            let node = &rep["nodes"][0];
            assert_eq!(node["chainChecked"], true);
            // Stored checkpoints at 30 and 40 plus the saved copy of 40.
            assert!(node["checkpoints"].as_u64().unwrap() >= 3, "{rep}");

            // The attacker removes the newest rows, their statements and the newer stored
            // checkpoints: without the saved copy nothing shows.
            exec(
                &url,
                "DELETE FROM auditrecorddata WHERE sequencenumber >= 31",
            )
            .await;
            exec(
                &url,
                "DELETE FROM auditbatchdata WHERE lastsequencenumber >= 31",
            )
            .await;
            exec(
                &url,
                "DELETE FROM auditcheckpointdata WHERE sequencenumber >= 31",
            )
            .await;
            if device == "batched" {
                // Batches may straddle 31: keep only statements that end before it, and drop
                // the rows after the last of them, as a careful attacker would.
                exec(&url, "DELETE FROM auditrecorddata WHERE sequencenumber > (SELECT COALESCE(MAX(lastsequencenumber), -1) FROM auditbatchdata)").await;
                exec(&url, "DELETE FROM auditcheckpointdata WHERE sequencenumber > (SELECT COALESCE(MAX(lastsequencenumber), -1) FROM auditbatchdata)").await;
            }
            let (code, rep, _) = verifylog(&base, &[]);
            assert_eq!(code, 0, "the blind spot without a copy: {rep}");
            for copy in [
                saved_s,
                dir.path().join("checkpoints.jsonl").to_str().unwrap(),
            ] {
                let (code, rep, _) = verifylog(&base, &["--checkpoint", copy]);
                assert_eq!(code, 255, "{rep}");
                let failed = rep["nodes"][0]["failedCheckpoints"].as_array().unwrap();
                assert!(
                    failed.iter().any(|f| f["source"] == "file"
                        && f["sequenceNumber"] == 40
                        && f["reason"]
                            .as_str()
                            .unwrap()
                            .contains("rows were deleted after it")),
                    "{rep}"
                );
            }

            // Rewriting a covered row (even one whose protection the attacker could redo) breaks
            // the head hash of every checkpoint after it.
            exec(
                &url,
                "UPDATE auditrecorddata SET searchdetail1 = 'x' WHERE sequencenumber = 5",
            )
            .await;
            let (code, rep, _) = verifylog(&base, &["--checkpoint", saved_s]);
            assert_eq!(code, 255);
            let failed = rep["nodes"][0]["failedCheckpoints"].as_array().unwrap();
            assert!(
                failed.iter().any(|f| f["source"] == "database"
                    && f["reason"].as_str().unwrap().contains("head hash")),
                "{rep}"
            );
            // A saved copy that was itself changed does not verify.
            let forged = std::fs::read_to_string(&saved)
                .unwrap()
                .replace("\"sequenceNumber\":40", "\"sequenceNumber\":39");
            let forged_path = dir.path().join("forged.jsonl");
            std::fs::write(&forged_path, forged).unwrap();
            let (code, rep, _) = verifylog(&base, &["--checkpoint", forged_path.to_str().unwrap()]);
            assert_eq!(code, 255);
            assert!(
                rep.to_string().contains("statement does not verify"),
                "{rep}"
            );
            drop(syslog);
            let _ = std::fs::remove_file(&syslog_path);
        }
    }
}

#[tokio::test]
async fn a_bad_checkpoint_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = format!("sqlite://{}?mode=rwc", Path::new(d).join("x.db").display());
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"nodeId\": 1}\n").unwrap();
    let (code, _, err) = cli(&[
        "--data-dir",
        d,
        "--database-url",
        &url,
        "verifylog",
        "--all",
        "--checkpoint",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("bad.jsonl: line 1"), "{err}");
}

#[tokio::test]
async fn a_database_without_auditseals_own_tables_verifies() {
    // As SignServer leaves it: AuditRecordData only (no batch statements, no checkpoints).
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let base = ["--data-dir", d, "--database-url", &url];
        let mut args = base.to_vec();
        args.extend(["--node-id", "ss"]);
        let s = Server::start(&args).unwrap();
        post_events(&s, 3).await;
        s.stop();
        for table in [
            "auditbatchdata",
            "auditcheckpointdata",
            "auditapitokendata",
            "_sqlx_migrations",
        ] {
            exec(&url, &format!("DROP TABLE {table}")).await;
        }
        let (code, rep, err) = verifylog(&base, &[]);
        assert_eq!(code, 0, "{backend:?}: {rep} {err}");
        // The 3 events and the first admin token's TOKEN_CREATE.
        assert_eq!(rep["rows"], 4);
        let mut list = base.to_vec();
        list.extend(["checkpoint", "list"]);
        let (code, out, err) = cli(&list);
        assert_eq!((code, out.trim()), (0, "no checkpoints yet"), "{err}");
    }
}
