//! Continuous verification (docs/OPERATIONS.md "Continuous verification") on the real server:
//! the rows written since the last round are verified every `server.verify_interval_secs`, the
//! whole log every `server.verify_full_interval_secs`, each run counted by trigger in the
//! metrics; every full run is a signed LOG_VERIFY event and a successful incremental round is
//! not; a row changed in the database is found by the next full run (an old row) or the next
//! incremental round (a row added after the newest), with an ALERT line naming node and sequence number and a
//! LOG_VERIFY event with status FAILURE (when the node can still take one).

use std::time::{Duration, Instant};

use auditseal_e2e::{Backend, Server, event, exec, new_database};
use serde_json::Value;

fn sample(text: &str, series: &str) -> f64 {
    auditseal_e2e::metric(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn runs(outcome: &str, trigger: &str) -> String {
    format!(r#"auditseal_verify_runs_total{{outcome="{outcome}",trigger="{trigger}"}}"#)
}

/// Scrapes `metrics` until `series` is at least `at`, for at most 30 s.
async fn until_at_least(metrics: &str, series: &str, at: f64) {
    let t = Instant::now();
    loop {
        let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
        if sample(&text, series) >= at {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{series} < {at}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The server's log once `done` holds for it (the metrics count a run before its ALERT lines
/// and event are written), within 30 s.
async fn log_when(s: &Server, done: impl Fn(&str) -> bool) -> String {
    let t = Instant::now();
    loop {
        let log = s.log();
        if done(&log) {
            return log;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The LOG_VERIFY events once at least one of them passes `wanted`, within 30 s (the metrics
/// count a run before its event is written).
async fn log_verify_events_when(s: &Server, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let t = Instant::now();
    loop {
        let events = log_verify_events(s).await;
        if events.iter().any(&wanted) {
            return events;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no such LOG_VERIFY event in 30 s: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log_verify_events(s: &Server) -> Vec<Value> {
    let v: Value = s
        .client()
        .get(format!(
            "{}/api/v1/events?criteria=eventType%20EQ%20LOG_VERIFY&limit=1000",
            s.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone()
}

async fn post(s: &Server) -> i64 {
    let r: Value = s
        .client()
        .post(format!("{}/api/v1/events", s.url))
        .json(&event("WATCHED"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["sequenceNumber"]
        .as_i64()
        .unwrap_or_else(|| panic!("{r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_verifies_new_rows_and_the_whole_log_and_alerts_on_changed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = new_database(Backend::Sqlite, dir.path()).await;
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let s = Server::start(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        &url,
        "--node-id",
        "cv",
        "--set",
        "server.verify_interval_secs=1",
        "--set",
        "server.verify_full_interval_secs=4",
        "--set",
        &format!("server.metrics_bind={metrics_addr}"),
    ])
    .unwrap();
    let metrics = format!("http://{metrics_addr}/metrics");
    for _ in 0..5 {
        post(&s).await;
    }
    until_at_least(&metrics, &runs("success", "incremental"), 1.0).await;
    until_at_least(&metrics, &runs("success", "full"), 1.0).await;
    // A full run is an event.
    let events = log_verify_events_when(&s, |_| true).await;
    for e in &events {
        assert_eq!(e["details"]["run"], "full", "{e}");
        assert_eq!(e["eventStatus"], "SUCCESS", "{e}");
        assert_eq!(e["verification"]["valid"], true, "{e}");
    }

    // An old row changed: the next full run finds it.
    exec(
        &url,
        "UPDATE AuditRecordData SET eventType = 'FORGED' WHERE nodeId = 'cv' AND sequenceNumber = 2",
    )
    .await;
    until_at_least(&metrics, &runs("failure", "full"), 1.0).await;
    log_when(&s, |log| {
        log.lines().any(|l| {
            l.contains("ALERT verification failed")
                && l.contains("node=cv")
                && l.contains("sequence=2")
                && l.contains("run=\"full\"")
        })
    })
    .await;

    // A new row written into the table by someone else (no valid protection): the next
    // incremental round finds it.
    let seq = post(&s).await + 1;
    exec(
        &url,
        &format!(
            "INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", eventtype, \
             eventstatus, authtoken, service, module, rowversion, rowprotection) VALUES \
             ('forged{seq}', 'cv', {seq}, 1700000000000, 'FORGED', 'SUCCESS', 'x', 'SIGNSERVER', \
             'WORKER', 0, '1:2:1:00')"
        ),
    )
    .await;
    until_at_least(&metrics, &runs("failure", "incremental"), 1.0).await;
    log_when(&s, |log| {
        log.lines().any(|l| {
            l.contains("ALERT verification failed")
                && l.contains(&format!("sequence={seq}"))
                && l.contains("run=\"incremental\"")
        }) && log.contains("the node's log is inconsistent")
    })
    .await;
    // The failing full run is an event. The failing incremental round's event cannot be: the
    // forged row took the number the server was to write next, so the node's log is
    // inconsistent and takes nothing more (both said in the log).
    log_verify_events_when(&s, |e| {
        e["eventStatus"] == "FAILURE" && e["details"]["run"] == "full"
    })
    .await;
    s.stop();
}
