//! Checkpoints that leave the database's reach (docs/OPERATIONS.md "Checkpoints"): RFC 5424
//! syslog over TCP and TLS to a real rsyslogd, and an HTTP witness; each keeps every checkpoint,
//! in order, while its receiver is down or refusing, across a restart of the server, and at a
//! clean stop. `auditseal-db` reads what the receiver stored as it is. And the last checkpoint at
//! a clean stop covers every row, also right after a large load.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use auditseal_core::checkpoint::{self, Checkpoint, KIND_CHECKPOINT};
use auditseal_e2e::receivers::{Rsyslog, RsyslogTls, TestCa, Witness, free_port, wait_for_line};
use auditseal_e2e::{Backend, Server, cli, exec, new_database, post_events};
use serde_json::Value;

const SYSLOG_BACKLOG: &str = "checkpoint-backlog-syslog.jsonl";
const WITNESS_BACKLOG: &str = "checkpoint-backlog-witness.jsonl";

/// The node's checkpoints in the database, by sequence number.
async fn stored(url: &str, node: &str) -> Vec<Checkpoint> {
    let store = auditseal_core::store::open(url).await.expect("open store");
    let list = store
        .read_checkpoints(auditseal_core::store::Chunk::new(node, 0, None, 100_000))
        .await
        .expect("read checkpoints");
    list.into_iter()
        .filter(|c| c.kind == KIND_CHECKPOINT)
        .collect()
}

/// Waits until the database holds a checkpoint of `node` at `seq`.
async fn wait_stored(url: &str, node: &str, seq: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stored(url, node)
        .await
        .iter()
        .any(|c| c.sequence_number == seq)
    {
        assert!(
            Instant::now() < deadline,
            "no checkpoint of {node} at {seq}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `server`'s log contains `what`.
fn wait_log(server: &Server, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = server.log();
        if log.contains(what) {
            return log;
        }
        assert!(Instant::now() < deadline, "never logged {what:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn seq_marker(seq: i64) -> String {
    format!("\"sequenceNumber\":{seq},")
}

/// The checkpoints `text` holds, in file order.
fn parsed(text: &str) -> Vec<Checkpoint> {
    checkpoint::parse_file(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

/// Every stored checkpoint is in `got`, and `got` never goes back.
fn assert_complete_and_in_order(stored: &[Checkpoint], got: &[Checkpoint]) {
    assert!(!stored.is_empty());
    for w in got.windows(2) {
        assert!(
            w[0].sequence_number <= w[1].sequence_number,
            "out of order: {} then {}",
            w[0].sequence_number,
            w[1].sequence_number
        );
    }
    for c in stored {
        assert!(
            got.contains(c),
            "checkpoint {} missing from the receiver: {:?}",
            c.sequence_number,
            got.iter().map(|c| c.sequence_number).collect::<Vec<_>>()
        );
    }
}

/// Whether a backlog file holds the checkpoint at `seq` (a syslog backlog holds messages whose
/// `msg` carries the checkpoint; a witness backlog the checkpoints themselves).
fn backlog_holds(path: &Path, seq: i64) -> bool {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().any(|l| {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let c = v["msg"]
            .as_str()
            .map_or_else(|| v.to_string(), str::to_string);
        c.contains(&seq_marker(seq))
    })
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn verifylog(base: &[&str], extra: &[&str]) -> (i32, Value) {
    let mut args = base.to_vec();
    args.extend(["verifylog", "--all", "--json", "--quiet"]);
    args.extend(extra);
    let (code, out, err) = cli(&args);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    (code, v)
}

fn checkpoint_verify(base: &[&str], file: &Path) -> (i32, String) {
    let mut args = base.to_vec();
    args.extend(["checkpoint", "verify", file.to_str().unwrap()]);
    let (code, out, err) = cli(&args);
    (code, format!("{out}{err}"))
}

#[tokio::test]
async fn syslog_over_tcp_reaches_rsyslog_in_order_while_it_goes_down_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Sqlite, dir.path()).await;
    let port = free_port();
    let config = dir.path().join("auditseal.toml");
    std::fs::write(
        &config,
        format!(
            "[checkpoint]\ninterval_secs = 1\n[checkpoint.syslog]\naddress = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let base = ["--data-dir", d, "--database-url", &url];
    let mut args = base.to_vec();
    args.extend(["--config", config.to_str().unwrap(), "--node-id", "rs"]);
    let backlog = dir.path().join(SYSLOG_BACKLOG);

    // No receiver yet: the checkpoint waits in the backlog (0600), across a restart.
    let s = Server::start(&args).unwrap();
    post_events(&s, 5).await;
    wait_stored(&url, "rs", 5).await;
    wait_log(&s, "ALERT cannot deliver to the receiver");
    s.stop();
    assert!(backlog_holds(&backlog, 5));
    assert_eq!(mode(&backlog), 0o600);

    // rsyslogd starts: the restarted server sends the backlog, then each new checkpoint.
    let mut rs = Rsyslog::start(&dir.path().join("rsyslog"), port, None);
    let s = Server::start(&args).unwrap();
    wait_for_line(&rs.out, "checkpoint 5", |l| l.contains(&seq_marker(5)));
    post_events(&s, 5).await;
    wait_for_line(&rs.out, "checkpoint 10", |l| l.contains(&seq_marker(10)));

    // rsyslogd goes away while the server runs, and comes back.
    rs.stop();
    post_events(&s, 5).await;
    wait_stored(&url, "rs", 15).await;
    wait_log(&s, "ALERT cannot deliver to the receiver");
    let text = std::fs::read_to_string(&rs.out).unwrap();
    assert!(!text.contains(&seq_marker(15)), "{text}");
    rs.restart();
    wait_for_line(&rs.out, "checkpoint 15", |l| l.contains(&seq_marker(15)));
    wait_log(&s, "the receiver answers again");

    // The checkpoint of a clean stop is delivered before the server exits.
    post_events(&s, 5).await;
    s.stop();
    wait_for_line(&rs.out, "checkpoint 20", |l| l.contains(&seq_marker(20)));
    rs.stop();
    assert!(!backlog.exists(), "everything was delivered");

    let stored = stored(&url, "rs").await;
    assert_eq!(stored.last().unwrap().sequence_number, 20);
    let text = std::fs::read_to_string(&rs.out).unwrap();
    for line in text.lines() {
        // RFC 5424 as rsyslog stored it: PRI 85 (authpriv.notice), version 1, APP-NAME,
        // PROCID, MSGID, the origin element, then the checkpoint.
        assert!(line.starts_with("<85>1 "), "{line}");
        assert!(
            line.contains(" auditseal ")
                && line.contains(" checkpoint [origin software=\"auditseal\" swVersion=\"")
                && line.contains("] auditseal-checkpoint {\"nodeId\":\"rs\""),
            "{line}"
        );
    }
    assert_complete_and_in_order(&stored, &parsed(&text));
    let traditional = std::fs::read_to_string(&rs.out_traditional).unwrap();
    assert_complete_and_in_order(&stored, &parsed(&traditional));

    // The CLI reads the receiver's files as they are.
    let (code, out) = checkpoint_verify(&base, &rs.out);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("node rs: ") && out.contains("sequence 5 to 20") && out.contains("0 errors"),
        "{out}"
    );
    for file in [&rs.out, &rs.out_traditional] {
        let (code, rep) = verifylog(&base, &["--checkpoint", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{rep}");
    }

    // Deleting the newest rows with their stored checkpoints: only the receiver's copy shows it.
    exec(
        &url,
        "DELETE FROM auditrecorddata WHERE sequencenumber > 10",
    )
    .await;
    exec(
        &url,
        "DELETE FROM auditcheckpointdata WHERE sequencenumber > 10",
    )
    .await;
    let (code, rep) = verifylog(&base, &[]);
    assert_eq!(code, 0, "the blind spot without a copy: {rep}");
    let (code, rep) = verifylog(&base, &["--checkpoint", rs.out.to_str().unwrap()]);
    assert_eq!(code, 255, "{rep}");
    let failed = rep["nodes"][0]["failedCheckpoints"].as_array().unwrap();
    assert!(
        failed.iter().any(|f| f["sequenceNumber"] == 20
            && f["reason"]
                .as_str()
                .unwrap()
                .contains("rows were deleted after it")),
        "{rep}"
    );

    // A changed or reordered receiver file fails `checkpoint verify`, naming the line.
    let lines: Vec<&str> = text.lines().collect();
    let forged = dir.path().join("forged.log");
    std::fs::write(&forged, text.replacen(&seq_marker(15), &seq_marker(16), 1)).unwrap();
    let (code, out) = checkpoint_verify(&base, &forged);
    assert_eq!(code, 255, "{out}");
    assert!(
        out.contains("ERROR line") && out.contains("does not verify"),
        "{out}"
    );
    let reordered = dir.path().join("reordered.log");
    let mut rev = lines.clone();
    rev.reverse();
    std::fs::write(&reordered, rev.join("\n")).unwrap();
    let (code, out) = checkpoint_verify(&base, &reordered);
    assert_eq!(code, 255, "{out}");
    assert!(out.contains("the head went back"), "{out}");
}

#[tokio::test]
async fn syslog_over_tls_with_a_client_certificate_reaches_rsyslog_and_a_bad_setup_is_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "receiver");
    let (rs_cert, rs_key) = ca.issue("rsyslog");
    let (client_cert, client_key) = ca.issue("auditseal");
    let other = TestCa::new(dir.path(), "other");
    let port = free_port();
    let rs = Rsyslog::start(
        &dir.path().join("rsyslog"),
        port,
        Some(&RsyslogTls {
            ca: ca.ca.clone(),
            cert: rs_cert,
            key: rs_key,
        }),
    );
    let p = |p: &Path| p.to_str().unwrap().to_string();
    // (node, ca_file, client certificate, delivered?, what the ALERT says if not)
    let cases = [
        ("tls", p(&ca.ca), true, true, &[][..]),
        ("wrongca", p(&other.ca), true, false, &["UnknownIssuer"][..]),
        // The receiver just drops the connection, while or after it is written to.
        (
            "nocert",
            p(&ca.ca),
            false,
            false,
            &["writing: ", "waiting for the receiver to close: "][..],
        ),
    ];
    for (node, ca_file, with_cert, delivered, reason) in cases {
        let data = dir.path().join(node);
        let d = data.to_str().unwrap();
        let url = new_database(Backend::Sqlite, dir.path()).await;
        let mut conf = format!(
            "[checkpoint]\ninterval_secs = 1\n[checkpoint.syslog]\naddress = \"127.0.0.1:{port}\"\n\
             transport = \"tls\"\nca_file = {ca_file:?}\napp_name = \"auditseal-test\"\n"
        );
        if with_cert {
            conf.push_str(&format!(
                "cert_file = {:?}\nkey_file = {:?}\n",
                p(&client_cert),
                p(&client_key)
            ));
        }
        let config = dir.path().join(format!("{node}.toml"));
        std::fs::write(&config, conf).unwrap();
        let base = ["--data-dir", d, "--database-url", &url];
        let mut args = base.to_vec();
        args.extend(["--config", config.to_str().unwrap(), "--node-id", node]);
        let s = Server::start(&args).unwrap();
        post_events(&s, 3).await;
        wait_stored(&url, node, 3).await;
        let from_node = format!("{{\"nodeId\":\"{node}\"");
        if delivered {
            wait_for_line(&rs.out, "the TLS checkpoint", |l| {
                l.contains(&from_node) && l.contains(&seq_marker(3))
            });
            s.stop();
            let text = std::fs::read_to_string(&rs.out).unwrap();
            assert!(text.contains(" auditseal-test "), "{text}");
            assert_complete_and_in_order(&stored(&url, node).await, &parsed(&text));
            let (code, out) = checkpoint_verify(&base, &rs.out);
            assert_eq!(code, 0, "{out}");
            assert!(!data.join(SYSLOG_BACKLOG).exists());
        } else {
            let log = wait_log(&s, "ALERT cannot deliver to the receiver");
            s.stop();
            let alert = log
                .lines()
                .find(|l| l.contains("ALERT cannot deliver"))
                .unwrap_or_default();
            eprintln!("{node}: {alert}");
            assert!(alert.contains("syslog tls://127.0.0.1:"), "{alert}");
            assert!(reason.iter().any(|r| alert.contains(r)), "{alert}");
            let text = std::fs::read_to_string(&rs.out).unwrap_or_default();
            assert!(!text.contains(&from_node), "{node}: {text}");
            assert!(backlog_holds(&data.join(SYSLOG_BACKLOG), 3), "{node}");
        }
    }
}

#[tokio::test]
async fn an_http_witness_gets_every_checkpoint_in_order_while_down_refusing_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Sqlite, dir.path()).await;
    let mut w = Witness::new(free_port());
    let config = dir.path().join("auditseal.toml");
    std::fs::write(
        &config,
        format!(
            "[checkpoint]\ninterval_secs = 1\n[checkpoint.witness]\nurl = {:?}\n",
            w.url()
        ),
    )
    .unwrap();
    let base = ["--data-dir", d, "--database-url", &url];
    let mut args = base.to_vec();
    args.extend(["--config", config.to_str().unwrap(), "--node-id", "wn"]);
    let backlog = dir.path().join(WITNESS_BACKLOG);

    // Nothing listens: kept in the backlog across a restart.
    let s = Server::start(&args).unwrap();
    post_events(&s, 3).await;
    wait_stored(&url, "wn", 3).await;
    wait_log(&s, "ALERT cannot deliver to the receiver");
    s.stop();
    assert!(
        std::fs::read_to_string(&backlog)
            .unwrap()
            .contains(&seq_marker(3))
    );
    assert_eq!(mode(&backlog), 0o600);

    // The witness answers 503: nothing counts as delivered.
    w.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    w.start();
    let s = Server::start(&args).unwrap();
    post_events(&s, 3).await;
    wait_stored(&url, "wn", 6).await;
    let log = wait_log(&s, "503 Service Unavailable");
    assert!(log.contains("witness http://127.0.0.1:"), "{log}");
    assert!(*w.refused.lock().unwrap() >= 1);
    assert!(w.bodies().is_empty());
    let waiting = std::fs::read_to_string(&backlog).unwrap();
    assert!(
        waiting.contains(&seq_marker(3)) && waiting.contains(&seq_marker(6)),
        "{waiting}"
    );

    // It takes them again: the backlog first, in order, then each new one.
    w.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    post_events(&s, 3).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !w.bodies().iter().any(|r| r.body.contains(&seq_marker(9))) {
        assert!(Instant::now() < deadline, "{:?}", w.bodies());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The checkpoint of a clean stop reaches the witness before the server exits.
    post_events(&s, 3).await;
    s.stop();
    assert!(!backlog.exists());
    let bodies = w.bodies();
    assert!(bodies.iter().any(|r| r.body.contains(&seq_marker(12))));
    for r in &bodies {
        assert_eq!(r.path, "/witness/checkpoints");
        assert_eq!(r.content_type, "application/json");
    }
    let got: Vec<Checkpoint> = bodies
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_complete_and_in_order(&stored(&url, "wn").await, &got);
    let file = dir.path().join("witness.jsonl");
    let text: String = bodies.iter().map(|r| format!("{}\n", r.body)).collect();
    std::fs::write(&file, text).unwrap();
    let (code, out) = checkpoint_verify(&base, &file);
    assert_eq!(code, 0, "{out}");
    w.stop();
}

/// An event of about 800 bytes as stored, as in scripts/export-memory.
fn padded_event() -> Value {
    serde_json::json!({
        "eventType": "PROCESS", "eventStatus": "SUCCESS", "authToken": "CN=signer",
        "service": "SIGNSERVER", "module": "WORKER", "searchDetail2": "42",
        "additionalDetails": {"KEYALIAS": "signKey", "PAD": "x".repeat(600)},
    })
}

#[tokio::test]
async fn the_checkpoint_of_a_clean_stop_covers_every_row_right_after_a_large_load() {
    let rows: usize = std::env::var("AUDITSEAL_TEST_STOP_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Sqlite, dir.path()).await;
    let config = dir.path().join("auditseal.toml");
    // The default interval: no regular checkpoint comes during the load.
    std::fs::write(&config, "[checkpoint]\ninterval_secs = 60\n").unwrap();
    let mut args = vec!["--data-dir", d, "--database-url", &url];
    args.extend(["--config", config.to_str().unwrap(), "--node-id", "big"]);
    args.extend(["--device", "batched"]);
    let s = Server::start(&args).unwrap();
    let client = s.client();
    let line = format!("{}\n", padded_event());
    let body = line.repeat(1000);
    let t = Instant::now();
    for _ in 0..rows / 1000 {
        let r = client
            .post(format!("{}/api/v1/events:batch", s.url))
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    }
    let loaded = t.elapsed();
    let t = Instant::now();
    let log = s.stop_and_log();
    let stopped = t.elapsed();
    let last = stored(&url, "big").await;
    let c = last
        .last()
        .unwrap_or_else(|| panic!("no checkpoint at all:\n{log}"));
    // Row 0 is the first admin token's TOKEN_CREATE.
    assert_eq!(c.sequence_number, (rows / 1000 * 1000) as i64, "{log}");
    let written = log
        .lines()
        .find(|l| l.contains("checkpoint written") && l.contains("last=true"))
        .unwrap_or_else(|| panic!("{log}"));
    eprintln!(
        "{rows} rows loaded in {:.1} s; stopped {:.2} s after SIGTERM; {written}",
        loaded.as_secs_f64(),
        stopped.as_secs_f64()
    );
}
