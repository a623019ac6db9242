//! Nothing forged passes (issue 12): an attacker who can write the database adds rows, batch
//! statements and checkpoints where no verifier used to look (below sequence 0, at or below an
//! archive marker, under node ids that have no rows), deletes a node's newest rows, or takes the
//! sequence numbers a writer is about to use. `verifylog` and `POST /api/v1/verify` must report
//! each, naming node and sequence; a server must not acknowledge anything on a node whose log is
//! not what it read, and must say so with a 503 of its own, not "retry later". SQLite and
//! PostgreSQL.

use std::time::Duration;

use auditseal_e2e::{BACKENDS, Server, cli, event, exec, new_database, post_events};
use serde_json::Value;

/// A row nobody signed, as an attacker writes it straight into the table.
fn forged_row(pk: &str, node: &str, seq: i64) -> String {
    format!(
        "INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", eventtype, \
         eventstatus, authtoken, service, module, rowversion, rowprotection) \
         VALUES ('{pk}', '{node}', {seq}, 0, 'FORGED', 'SUCCESS', 'CN=mallory', 'SIGNSERVER', \
         'WORKER', 0, NULL)"
    )
}

/// A batch statement nobody signed.
fn forged_statement(node: &str, first: i64, last: i64) -> String {
    let zeros = "0".repeat(64);
    format!(
        "INSERT INTO auditbatchdata (nodeid, firstsequencenumber, lastsequencenumber, \
         \"timestamp\", merkleroot, previoushash, keyid, statementprotection) \
         VALUES ('{node}', {first}, {last}, 0, '{zeros}', '{zeros}', 1, '1:2:1:00')"
    )
}

/// A checkpoint nobody signed.
fn forged_checkpoint(node: &str, seq: i64) -> String {
    let zeros = "0".repeat(64);
    format!(
        "INSERT INTO auditcheckpointdata (nodeid, sequencenumber, \"timestamp\", headhash, kind, \
         keyid, statementprotection) VALUES ('{node}', {seq}, 0, '{zeros}', 'checkpoint', 1, \
         '1:2:1:00')"
    )
}

fn base<'a>(d: &'a str, url: &'a str) -> [&'a str; 4] {
    ["--data-dir", d, "--database-url", url]
}

fn start(d: &str, url: &str, node: &str, device: &str) -> Server {
    let mut args = base(d, url).to_vec();
    args.extend(["--node-id", node, "--device", device]);
    Server::start(&args).unwrap()
}

/// `verifylog --all`: exit code, the human report, the JSON report.
fn verifylog(d: &str, url: &str) -> (i32, String, Value) {
    let mut args = base(d, url).to_vec();
    args.extend(["verifylog", "--all", "--quiet"]);
    let (code, text, err) = cli(&args);
    args.push("--json");
    let (json_code, out, _) = cli(&args);
    assert_eq!(code, json_code, "{text}");
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, text, v)
}

/// The ERROR lines of a verifylog report that name `node` and contain `needle`.
fn error_lines<'a>(text: &'a str, node: &str, needle: &str) -> Vec<&'a str> {
    let node = format!("node={node} ");
    text.lines()
        .filter(|l| l.contains("ERROR") && l.contains(&node) && l.contains(needle))
        .collect()
}

async fn post(s: &Server, body: &Value) -> (u16, Value) {
    let r = s
        .client()
        .post(format!("{}/api/v1/events", s.url))
        .json(body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn verify_api(s: &Server) -> Value {
    let r = s
        .client()
        .post(format!("{}/api/v1/verify", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

async fn healthz(s: &Server) -> (u16, Value) {
    let r = reqwest::get(format!("{}/healthz", s.url)).await.unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Item 1: rows and statements below sequence 0 of a live node, and a node that holds only
/// negative numbers, were never read: verifylog exited 0 (254 for the negative-only node) and
/// the verify API said SUCCESS.
#[tokio::test]
async fn rows_and_statements_below_zero_are_errors() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let s = start(d, &url, "live", "batched");
        post_events(&s, 5).await;
        let (code, text, _) = verifylog(d, &url);
        assert_eq!(code, 0, "{backend:?}: {text}");

        exec(
            &url,
            &forged_row("f0000000000000000000000000000001", "live", -1),
        )
        .await;
        let (code, text, rep) = verifylog(d, &url);
        assert_eq!(code, 255, "{backend:?}: {text}");
        let lines = error_lines(&text, "live", "sequenceNumber -1");
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("1 row"), "{text}");
        assert_eq!(rep["errors"], 1, "{rep}");
        assert!(!text.contains("Last sequences"), "{text}");
        let api = verify_api(&s).await;
        assert_eq!(api["outcome"], "FAILURE", "{backend:?}: {api}");
        assert_eq!(api["exitCode"], 255, "{api}");

        // Junk statements with negative numbers: one wholly below 0, one that reaches into
        // the log from below it.
        exec(&url, "DELETE FROM auditrecorddata WHERE sequencenumber < 0").await;
        exec(&url, &forged_statement("live", -9, -5)).await;
        let (code, text, _) = verifylog(d, &url);
        assert_eq!(code, 255, "{backend:?}: {text}");
        assert_eq!(
            error_lines(&text, "live", "-9..-5").len(),
            1,
            "{backend:?}: {text}"
        );
        exec(
            &url,
            "DELETE FROM auditbatchdata WHERE firstsequencenumber < 0",
        )
        .await;
        exec(&url, &forged_checkpoint("live", -3)).await;
        let (code, text, _) = verifylog(d, &url);
        assert_eq!(code, 255, "{backend:?}: {text}");
        assert_eq!(error_lines(&text, "live", "-3").len(), 1, "{text}");
        exec(
            &url,
            "DELETE FROM auditcheckpointdata WHERE sequencenumber < 0",
        )
        .await;

        // A node that holds only negative numbers: an error, not a warning.
        for seq in [-3, -2, -1] {
            let pk = format!("f00000000000000000000000000000{:02}", -seq);
            exec(&url, &forged_row(&pk, "below", seq)).await;
        }
        let (code, text, _) = verifylog(d, &url);
        assert_eq!(code, 255, "{backend:?}: {text}");
        let lines = error_lines(&text, "below", "sequenceNumber -3..-1");
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("3 rows"), "{text}");
        s.stop();
    }
}

/// Item 1: statements and checkpoints under node ids that have no row were never read.
#[tokio::test]
async fn statements_and_checkpoints_of_nodes_without_rows_are_errors() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let s = start(d, &url, "real", "sequential");
        post_events(&s, 3).await;
        s.stop();
        exec(&url, &forged_statement("ghost-batch", 0, 4)).await;
        exec(&url, &forged_checkpoint("ghost-checkpoint", 7)).await;
        // A statement whose first is above its last claims no row at all.
        exec(&url, &forged_statement("real", 50, 40)).await;
        let (code, text, rep) = verifylog(d, &url);
        assert_eq!(code, 255, "{backend:?}: {text}");
        let nodes: Vec<&str> = rep["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["nodeId"].as_str().unwrap())
            .collect();
        assert!(nodes.contains(&"ghost-batch"), "{rep}");
        assert!(nodes.contains(&"ghost-checkpoint"), "{rep}");
        assert!(
            !error_lines(&text, "ghost-batch", "sequences 0..4").is_empty(),
            "{text}"
        );
        assert!(
            !error_lines(&text, "ghost-checkpoint", "sequenceNumber=7").is_empty(),
            "{text}"
        );
        assert!(
            !error_lines(&text, "real", "sequences 50..40").is_empty(),
            "{text}"
        );
    }
}

/// Item 1: after an archive, rows, statements and checkpoints at or below the archive marker were
/// never read (a node whose rows were all archived was not even listed).
#[tokio::test]
async fn anything_at_or_below_an_archive_marker_is_an_error() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let s = start(d, &url, "arc", "batched");
        post_events(&s, 5).await;
        s.stop();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let cut = auditseal_core::time::now_millis().to_string();
        let out = dir.path().join("segment");
        let mut args = base(d, &url).to_vec();
        args.extend(["archive", "--before", &cut, "--out", out.to_str().unwrap()]);
        let (code, _, err) = cli(&args);
        assert_eq!(code, 0, "{err}");
        // Row 0 (the first admin token's TOKEN_CREATE) and the 5 events: the marker is at 5.
        assert!(err.contains("exported node arc rows 0..5"), "{err}");
        let (code, text, _) = verifylog(d, &url);
        assert_eq!(code, 0, "{backend:?}: {text}");

        exec(
            &url,
            &forged_row("f0000000000000000000000000000005", "arc", 5),
        )
        .await;
        exec(
            &url,
            &forged_row("f0000000000000000000000000000002", "arc", 2),
        )
        .await;
        let (code, text, _) = verifylog(d, &url);
        assert_eq!(code, 255, "{backend:?}: {text}");
        let lines = error_lines(&text, "arc", "sequenceNumber 2..5");
        assert_eq!(lines.len(), 1, "{text}");
        assert!(
            lines[0].contains("2 rows") && lines[0].contains("archive marker at 5"),
            "{text}"
        );
        exec(&url, "DELETE FROM auditrecorddata WHERE nodeid = 'arc'").await;

        exec(&url, &forged_statement("arc", 1, 3)).await;
        exec(&url, &forged_checkpoint("arc", 4)).await;
        let (code, text, _) = verifylog(d, &url);
        assert_eq!(code, 255, "{backend:?}: {text}");
        assert_eq!(error_lines(&text, "arc", "1..3").len(), 1, "{text}");
        assert_eq!(
            error_lines(&text, "arc", "sequenceNumber 4").len(),
            1,
            "{text}"
        );
    }
}

/// Item 5: a node whose newest rows were deleted while their batch statement (or a checkpoint)
/// stayed. On restart the server starts, refuses events on that node with 503 log_inconsistent,
/// says so on /healthz, and logs an ALERT; verifylog reports the missing rows.
#[tokio::test]
async fn a_deleted_tail_is_found_at_start_and_refused() {
    for backend in BACKENDS {
        for device in ["batched", "sequential"] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().to_str().unwrap();
            let url = new_database(backend, dir.path()).await;
            let s = start(d, &url, "tail", device);
            post_events(&s, 8).await;
            s.stop();
            // Rows 0..=8 and a last checkpoint at 8 (a clean stop writes one).
            exec(
                &url,
                "DELETE FROM auditrecorddata WHERE sequencenumber >= 6",
            )
            .await;
            if device == "batched" {
                // Only the statements claim the deleted rows.
                exec(&url, "DELETE FROM auditcheckpointdata").await;
            }
            let (code, text, _) = verifylog(d, &url);
            assert_eq!(code, 255, "{backend:?} {device}: {text}");
            assert!(
                !error_lines(&text, "tail", "rows were deleted").is_empty(),
                "{backend:?} {device}: {text}"
            );

            let s = start(d, &url, "tail", device);
            let (st, body) = post(&s, &event("PROCESS")).await;
            assert_eq!(st, 503, "{backend:?} {device}: {body}");
            assert_eq!(body["error"], "log_inconsistent", "{body}");
            assert!(body["message"].as_str().unwrap().contains("6..8"), "{body}");
            let (st, body) = healthz(&s).await;
            assert_eq!(st, 503, "{body}");
            assert_eq!(body["error"], "log_inconsistent", "{body}");
            assert!(
                s.log()
                    .lines()
                    .any(|l| l.contains("ALERT") && l.contains("6..8")),
                "{}",
                s.log()
            );
            s.stop();
            let rows = auditseal_e2e::all_rows(&url).await;
            assert_eq!(rows.len(), 6, "nothing written after the hole");
        }
    }
}

/// Item 5: someone else writes the sequence numbers a running server is about to use. A forged
/// statement whose last is below its first used to stall a batched node for ever (every batch
/// collided, 503 database_unavailable, "retry later"); a forged row made the sequential device
/// answer database_unavailable. Now: 503 log_inconsistent, an ALERT, and nothing acknowledged
/// on that node until an operator has looked.
#[tokio::test]
async fn numbers_taken_under_a_running_server_are_log_inconsistent() {
    for backend in BACKENDS {
        for device in ["batched", "sequential"] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().to_str().unwrap();
            let url = new_database(backend, dir.path()).await;
            let s = start(d, &url, "taken", device);
            let (st, ack) = post(&s, &event("PROCESS")).await;
            assert_eq!(st, 201, "{ack}");
            let next = ack["sequenceNumber"].as_i64().unwrap() + 1;
            if device == "batched" {
                exec(&url, &forged_statement("taken", next, next - 1)).await;
            } else {
                exec(
                    &url,
                    &forged_row("f00000000000000000000000000000aa", "taken", next),
                )
                .await;
            }
            for _ in 0..3 {
                let (st, body) = post(&s, &event("PROCESS")).await;
                assert_eq!(st, 503, "{backend:?} {device}: {body}");
                assert_eq!(
                    body["error"], "log_inconsistent",
                    "{backend:?} {device}: {body}"
                );
            }
            let (st, body) = healthz(&s).await;
            assert_eq!(
                (st, &body["error"]),
                (503, &Value::from("log_inconsistent"))
            );
            assert!(s.log().lines().any(|l| l.contains("ALERT")), "{}", s.log());
            s.stop();
        }
    }
}

/// The newest checkpoint of `node` as `checkpoint list` shows it (`NODE sequence S checkpoint`).
fn newest_checkpoint(d: &str, url: &str, node: &str) -> Option<i64> {
    let mut args = base(d, url).to_vec();
    args.extend(["checkpoint", "list"]);
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "{err}");
    out.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(&format!("{node} "))?;
        rest.strip_prefix("sequence ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Item 7: a row deleted below the newest checkpoint went unseen by the checkpointer (it reads
/// only the rows after that checkpoint), and the next checkpoint vouched for the log.
#[tokio::test]
async fn no_checkpoint_over_a_row_deleted_below_the_newest_one() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let config = dir.path().join("auditseal.toml");
        std::fs::write(&config, "[checkpoint]\ninterval_secs = 1\n").unwrap();
        let mut args = base(d, &url).to_vec();
        args.extend(["--config", config.to_str().unwrap(), "--node-id", "cp"]);
        let s = Server::start(&args).unwrap();
        post_events(&s, 5).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while newest_checkpoint(d, &url, "cp") != Some(5) {
            assert!(std::time::Instant::now() < deadline, "no checkpoint at 5");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        exec(&url, "DELETE FROM auditrecorddata WHERE sequencenumber = 2").await;
        post_events(&s, 3).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(newest_checkpoint(d, &url, "cp"), Some(5), "{backend:?}");
        assert!(
            s.log()
                .lines()
                .any(|l| l.contains("ALERT") && l.contains("one row per sequence number")),
            "{}",
            s.log()
        );
        // Nor at a clean stop.
        s.stop();
        assert_eq!(newest_checkpoint(d, &url, "cp"), Some(5), "{backend:?}");
    }
}

/// Item 4: the CLI's own events (token, archive) go to `<node id>-db`, which no server
/// checkpoints: its newest rows could be deleted without trace, even against a checkpoint
/// export taken before. Each event the CLI logs is now followed by a checkpoint of that node.
#[tokio::test]
async fn the_clis_own_node_is_checkpointed() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        start(d, &url, "n", "sequential").stop();
        for name in ["first", "second"] {
            let mut args = base(d, &url).to_vec();
            args.extend(["--node-id", "n", "token", "create", "--name", name]);
            args.extend(["--role", "auditor"]);
            let (code, _, err) = cli(&args);
            assert_eq!(code, 0, "{backend:?}: {err}");
            assert!(err.contains("signed a checkpoint of node n-db"), "{err}");
        }
        assert_eq!(newest_checkpoint(d, &url, "n-db"), Some(1), "{backend:?}");
        let saved = dir.path().join("checkpoints.jsonl");
        let mut args = base(d, &url).to_vec();
        args.extend(["checkpoint", "export", "--out", saved.to_str().unwrap()]);
        let (code, _, err) = cli(&args);
        assert_eq!(code, 0, "{err}");

        // The attacker deletes the newest TOKEN_CREATE and the stored checkpoints of n-db.
        exec(
            &url,
            "DELETE FROM auditrecorddata WHERE nodeid = 'n-db' AND sequencenumber = 1",
        )
        .await;
        exec(
            &url,
            "DELETE FROM auditcheckpointdata WHERE nodeid = 'n-db'",
        )
        .await;
        let (code, text, _) = verifylog(d, &url);
        assert_eq!(
            code, 0,
            "{backend:?}: without the copy it is invisible: {text}"
        );
        let mut args = base(d, &url).to_vec();
        args.extend(["verifylog", "--all", "--quiet"]);
        args.extend(["--checkpoint", saved.to_str().unwrap()]);
        let (code, text, _) = cli(&args);
        assert_eq!(code, 255, "{backend:?}: {text}");
        let lines = error_lines(&text, "n-db", "rows were deleted after it");
        assert_eq!(lines.len(), 1, "{backend:?}: {text}");
    }
}
