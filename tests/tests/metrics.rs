//! Metrics and health through the real server (docs/OPERATIONS.md "Metrics and health"): the
//! batched device on PostgreSQL with `server.metrics_bind`; `/metrics` on the main listener
//! with an auditor token and on the second listener without one, both accepted by
//! `promtool check metrics` (the `prometheus` package; the test fails without it), with the
//! ingested events counted; `/livez` and `/readyz` without credentials; and a PostgreSQL
//! outage (a private cluster stopped and started again) in `/readyz` and `auditseal_database_up`.

use std::process::{Command, Stdio};

use auditseal_e2e::metric;
use auditseal_e2e::{Backend, Server, event, new_database};
use serde_json::{Value, json};

/// A port nothing listens on now (bound, read, released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `promtool check metrics < text`: exits 0 and says nothing, or the test fails with what it
/// said.
fn promtool_accepts(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}: {said}\n{text}",
        out.status
    );
}

#[tokio::test]
async fn metrics_pass_promtool_and_count_what_was_ingested() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Postgres, dir.path()).await;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let bind = format!("server.metrics_bind={metrics_addr}");
    let s = Server::start(&[
        "--data-dir",
        d,
        "--node-id",
        "mn",
        "--database-url",
        &url,
        "--device",
        "batched",
        "--set",
        &bind,
        "--set",
        "checkpoint.interval_secs=1",
    ])
    .unwrap();
    let admin = s.client();
    let r = admin
        .post(format!("{}/api/v1/tokens", s.url))
        .json(&json!({ "name": "prometheus", "role": "auditor" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let auditor: Value = r.json().await.unwrap();
    let auditor = auditseal_e2e::client_with(auditor["token"].as_str().unwrap());
    let anonymous = reqwest::Client::new();

    // 5 single events and one bulk request of 3.
    auditseal_e2e::post_events(&s, 5).await;
    let bulk: Vec<Value> = (0..3).map(|_| event("BULK")).collect();
    let r = admin
        .post(format!("{}/api/v1/events:batch", s.url))
        .json(&bulk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // Let the checkpoint writer write one.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    // The main listener: credentials needed.
    let main = format!("{}/metrics", s.url);
    assert_eq!(anonymous.get(&main).send().await.unwrap().status(), 401);
    let r = auditor.get(&main).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    promtool_accepts(&text);
    let stored = r#"auditseal_events_ingested_total{device="batched",result="stored"}"#;
    assert_eq!(metric(&text, stored), Some(8.0), "{text}");
    assert_eq!(
        metric(
            &text,
            r#"auditseal_ingest_duration_seconds_count{device="batched"}"#
        ),
        Some(6.0),
        "{text}"
    );
    assert_eq!(metric(&text, "auditseal_database_up"), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "auditseal_node_lock_held"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "auditseal_ingest_queue_events"), Some(0.0));
    assert_eq!(
        metric(&text, "auditseal_ingest_queue_capacity"),
        Some(20000.0)
    );
    // Batches: the first admin token's TOKEN_CREATE, the auditor's, the events: at least 8
    // events in at least 2 batches (server's own events go through the device too).
    let batches = metric(&text, "auditseal_batch_events_count").unwrap();
    let events = metric(&text, "auditseal_batch_events_sum").unwrap();
    assert!(batches >= 2.0 && events >= 8.0, "{text}");
    assert_eq!(
        metric(&text, "auditseal_batch_commit_duration_seconds_count"),
        Some(batches),
        "{text}"
    );
    let age = metric(&text, r#"auditseal_checkpoint_age_seconds{node="mn"}"#)
        .unwrap_or_else(|| panic!("no checkpoint age for mn: {text}"));
    assert!((0.0..60.0).contains(&age), "{text}");
    assert_eq!(
        metric(&text, "auditseal_checkpoint_write_failures_total"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"auditseal_auth_failures_total{reason="no_credentials"}"#
        ),
        Some(1.0),
        "{text}"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!(
            "auditseal_build_info{{version=\"{version}\",commit=\""
        )),
        "{text}"
    );

    // The second listener: no credentials, and the same counts.
    let open = format!("http://{metrics_addr}");
    let r = anonymous
        .get(format!("{open}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    promtool_accepts(&text);
    assert_eq!(metric(&text, stored), Some(8.0), "{text}");
    let r = anonymous
        .get(format!("{open}/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "only metrics and probes there");

    // The probes, on both listeners, without credentials.
    for base in [&s.url, &open] {
        let r = anonymous.get(format!("{base}/livez")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({ "status": "live" })
        );
        let r = anonymous
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "ready", "{v}");
    }

    // The verify status names mn's genuine checkpoint as one that verifies.
    let newest = |v: &Value, node: &str| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["nodeId"] == node)
            .map(|n| n["newestCheckpoint"].clone())
    };
    let status = || async {
        let r = auditor
            .get(format!("{}/api/v1/verify", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.json::<Value>().await.unwrap()
    };
    let v = status().await;
    let mn = newest(&v, "mn").unwrap_or_else(|| panic!("{v}"));
    assert_eq!(
        (&mn["verifies"], &mn["problem"]),
        (&json!(true), &Value::Null),
        "{v}"
    );

    // Checkpoints that do not verify, as whoever owns the database could write them to hide an
    // overdue checkpoint: one above mn's newest, one of a node with no other. Dated a day ahead,
    // either would give an age of 0 if it were used. Each is refused once and counted.
    let store = auditseal_core::store::open(&url).await.unwrap();
    let genuine = store
        .last_checkpoint("mn")
        .await
        .unwrap()
        .expect("mn's checkpoint");
    for node in ["mn", "ghost"] {
        let mut forged = genuine.clone();
        forged.node_id = node.into();
        forged.sequence_number += 1000;
        forged.time_stamp = auditseal_core::time::now_millis() + 86_400_000;
        store.insert_checkpoint(&forged).await.unwrap();
    }
    let refused = r#"auditseal_rows_failed_on_read_total{route="checkpoints"}"#;
    for _ in 0..2 {
        let text = until(&format!("{open}/metrics"), |st, _| st == 200).await;
        let age = metric(&text, r#"auditseal_checkpoint_age_seconds{node="mn"}"#);
        assert!(
            age.is_some_and(|a| a > 0.0),
            "the genuine one's age: {text}"
        );
        assert_eq!(
            metric(&text, r#"auditseal_checkpoint_age_seconds{node="ghost"}"#),
            None,
            "{text}"
        );
        assert_eq!(metric(&text, refused), Some(2.0), "once each: {text}");
    }
    // And the verify status shows both, each said not to verify.
    let v = status().await;
    for node in ["mn", "ghost"] {
        let c = newest(&v, node).unwrap_or_else(|| panic!("{node}: {v}"));
        assert_eq!(c["verifies"], false, "{v}");
        assert!(c["problem"].is_string(), "{v}");
    }
    s.stop();
}

/// GET `url` until `done` accepts its status and body, for at most 30 s; returns the body.
async fn until(url: &str, done: impl Fn(u16, &str) -> bool) -> String {
    let client = reqwest::Client::new();
    let t = std::time::Instant::now();
    loop {
        let r = client.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        if done(status, &body) {
            return body;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "{url}: still {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// With PostgreSQL stopped, /readyz is 503 naming the database (the process is still live) and
/// auditseal_database_up is 0; once it is back, both recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_shows_in_readyz_and_the_metrics() {
    let pg = auditseal_e2e::faults::PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let bind = format!("server.metrics_bind={metrics_addr}");
    let db = pg.url();
    let s = Server::start(&[
        "--data-dir",
        d,
        "--node-id",
        "outage",
        "--database-url",
        &db,
        "--set",
        &bind,
    ])
    .unwrap();
    let open = format!("http://{metrics_addr}");
    let (readyz, metrics) = (format!("{open}/readyz"), format!("{open}/metrics"));
    until(&readyz, |st, _| st == 200).await;

    pg.stop();
    let body = until(&readyz, |st, _| st == 503).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "not_ready", "{v}");
    let database = v["failed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "database")
        .unwrap_or_else(|| panic!("no database check failed: {v}"));
    assert!(
        database["reason"]
            .as_str()
            .unwrap()
            .contains("does not answer"),
        "{v}"
    );
    let r = reqwest::get(format!("{open}/livez")).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = until(&metrics, |_, t| {
        metric(t, "auditseal_database_up") == Some(0.0)
    })
    .await;
    promtool_accepts(&text);

    pg.restart();
    until(&readyz, |st, _| st == 200).await;
    until(&metrics, |_, t| {
        metric(t, "auditseal_database_up") == Some(1.0)
            && metric(t, "auditseal_node_lock_held") == Some(1.0)
    })
    .await;
    s.stop();
}
