//! Backup and restore (docs/OPERATIONS.md "Backup and restore"), the drill: `auditseal-db
//! backup` copies the SQLite database while the server writes; writing goes on; the older copy
//! is restored. The restored log verifies on its own, and verifylog with the checkpoints the
//! server kept outside the database (`checkpoint.file`) reports the lost tail. backup never
//! overwrites a file and refuses PostgreSQL with what to use instead.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use auditseal_e2e::{Backend, Server, cli, new_database, post_events};
use serde_json::Value;

fn verifylog(data: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![
        "--data-dir",
        data,
        "verifylog",
        "--all",
        "--json",
        "--quiet",
    ];
    args.extend(extra);
    let (code, out, err) = cli(&args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v)
}

/// The highest sequence number the checkpoint file holds a checkpoint of.
fn newest_copied(file: &Path) -> i64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|c| c["sequenceNumber"].as_i64())
        .max()
        .unwrap_or(-1)
}

fn wait_copied(file: &Path, seq: i64) {
    let t = Instant::now();
    while newest_copied(file) < seq {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no checkpoint at {seq} in {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_drill_restored_log_verifies_and_the_outside_copy_shows_the_lost_tail() {
    let dir = tempfile::tempdir().unwrap();
    let data_path = dir.path().join("data");
    let data = data_path.to_str().unwrap();
    let copies = data_path.join("checkpoints.jsonl");
    let s = Server::start(&[
        "--data-dir",
        data,
        "--node-id",
        "bk",
        "--set",
        "checkpoint.interval_secs=1",
        "--set",
        "checkpoint.file=checkpoints.jsonl",
    ])
    .unwrap();
    // Row 0 is the first admin token's TOKEN_CREATE; 10 events are 1..10.
    post_events(&s, 10).await;
    wait_copied(&copies, 10);

    // The copy is taken while 4 signers keep posting.
    let backup = dir.path().join("backup.db");
    let posting: Vec<_> = (0..4)
        .map(|_| {
            let c = s.client();
            let url = s.url.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    let r = c
                        .post(format!("{url}/api/v1/events"))
                        .json(&auditseal_e2e::event("DURING"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 201);
                }
            })
        })
        .collect();
    let (code, out, err) = cli(&[
        "--data-dir",
        data,
        "backup",
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("integrity check ok"), "{out}");
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy is private");
    for p in posting {
        p.await.unwrap();
    }
    // Writing goes on after the copy: 1 + 10 + 40 + 10 rows, the newest is 60.
    post_events(&s, 10).await;
    wait_copied(&copies, 60);
    s.stop();

    // Never over a file.
    let (code, _, err) = cli(&[
        "--data-dir",
        data,
        "backup",
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("exists"), "{err}");
    // The live log verifies, with the outside copies too.
    let copies_arg = copies.to_str().unwrap();
    let (code, rep) = verifylog(data, &["--checkpoint", copies_arg]);
    assert_eq!(code, 0, "{rep}");

    // Restore the older copy, as an operator would with the server stopped.
    let db = data_path.join("auditseal.db");
    for side in ["auditseal.db-wal", "auditseal.db-shm"] {
        let _ = std::fs::remove_file(data_path.join(side));
    }
    std::fs::copy(&backup, &db).unwrap();
    let (code, rep) = verifylog(data, &[]);
    assert_eq!(code, 0, "the restored log verifies on its own: {rep}");
    let restored_rows = rep["nodes"][0]["rows"].as_i64().unwrap_or(-1);
    assert!(
        (11..61).contains(&restored_rows),
        "the copy holds the first rows, not the newest: {rep}"
    );
    let (code, rep) = verifylog(data, &["--checkpoint", copies_arg]);
    assert_eq!(code, 255, "{rep}");
    let failed = rep["nodes"][0]["failedCheckpoints"].as_array().unwrap();
    assert!(
        failed.iter().any(|f| f["source"] == "file"
            && f["sequenceNumber"] == 60
            && f["reason"]
                .as_str()
                .unwrap()
                .contains("rows were deleted after it")),
        "the lost tail shows: {rep}"
    );
}

#[tokio::test]
async fn backup_refuses_postgresql_with_what_to_use() {
    let dir = tempfile::tempdir().unwrap();
    let url = new_database(Backend::Postgres, dir.path()).await;
    let out = dir.path().join("pg.db");
    let (code, _, err) = cli(&[
        "--database-url",
        &url,
        "backup",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!out.exists());
}
