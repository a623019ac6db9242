//! The shipped Prometheus alert rules (conf/prometheus/auditseal-alerts.yml, docs/OPERATIONS.md
//! "Alerts"): `promtool check rules` accepts them and their unit tests pass (`promtool test
//! rules`, the `prometheus` package; the test fails without it); every metric they read is
//! served by a real server (HTTPS, batched device, checkpoints), with the values the rules
//! compare: the certificate's notAfter, the checkpoint writer's interval and last round, and a
//! row tampered in the database counted as failed on read.

use std::path::Path;
use std::process::{Command, Stdio};

use auditseal_e2e::metric;
use auditseal_e2e::{Backend, Server, event, new_database, workspace_root};

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now_secs() -> f64 {
    auditseal_core::time::now_millis() as f64 / 1000.0
}

#[test]
fn the_shipped_rules_pass_promtool_and_their_unit_tests() {
    let conf = workspace_root().join("conf/prometheus");
    promtool(&["check", "rules", "auditseal-alerts.yml"], &conf);
    promtool(&["test", "rules", "auditseal-alerts.test.yml"], &conf);
}

/// Every `auditseal_...` name in the rules.
fn metrics_the_rules_read() -> Vec<String> {
    let rules =
        std::fs::read_to_string(workspace_root().join("conf/prometheus/auditseal-alerts.yml"))
            .unwrap();
    let mut names: Vec<String> = Vec::new();
    for expr in rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
        let mut rest = expr;
        while let Some(at) = rest.find("auditseal_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_read_is_served_with_the_values_they_compare() {
    let names = metrics_the_rules_read();
    assert!(names.len() >= 12, "{names:?}");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A server certificate valid for 10 days: inside the 14 days the rules and the start warn of.
    let made_after = now_secs().floor();
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "10",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.pem",
        ])
        .current_dir(d)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl made the server certificate");
    let made_before = now_secs().ceil();
    let config = d.join("auditseal.toml");
    // A checkpoint witness and a forwarding sink where nothing listens: the checkpoints wait in
    // the backlog, the events in the database.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        &config,
        format!(
            "[server.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n\
             [checkpoint.witness]\nurl = \"http://{dead}/checkpoints\"\n\
             [[forward]]\nname = \"siem\"\naddress = \"{dead}\"\n"
        ),
    )
    .unwrap();
    let url = new_database(Backend::Sqlite, d).await;
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let s = Server::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        d.join("data").to_str().unwrap(),
        "--node-id",
        "al",
        "--database-url",
        &url,
        "--device",
        "batched",
        "--set",
        &format!("server.metrics_bind={metrics_addr}"),
        "--set",
        "checkpoint.interval_secs=1",
    ])
    .unwrap();
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let admin = auditseal_e2e::client_builder(&auditseal_e2e::token_for(&s.url))
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = admin
            .post(format!("{}/api/v1/events", s.url))
            .json(&event("ALERTS"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    // A finding of an HSM log, as auditseal-ship sends it: its counter gets a series.
    let mut finding = event("HSM_CHAIN_BREAK");
    finding["service"] = "HSM".into();
    finding["authToken"] = "craton@hsm-1".into();
    let r = admin
        .post(format!("{}/api/v1/events", s.url))
        .json(&finding)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // A checkpoint round.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;

    let metrics = format!("http://{metrics_addr}/metrics");
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    // A family is served once it has a series. The token's calls are counted for PKCS#11 keys
    // only: hsm_server.rs (a_pin_changed_under_the_server_...) reads them from a real token.
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| *n != "auditseal_token_calls_total")
        .filter(|n| !text.contains(&format!("# HELP {n} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "the rules read {missing:?}, which the server does not serve:\n{text}"
    );
    let expiry = metric(
        &text,
        r#"auditseal_tls_certificate_expiry_timestamp_seconds{listener="main"}"#,
    )
    .unwrap_or_else(|| panic!("{text}"));
    let ten_days = 10.0 * 86_400.0;
    assert!(
        (made_after + ten_days..=made_before + ten_days).contains(&expiry),
        "{expiry}: the certificate was made between {made_after} and {made_before}"
    );
    assert!(
        s.log().contains("expires within 14 days"),
        "the start warns of the certificate: {}",
        s.log()
    );
    assert_eq!(
        metric(&text, r#"auditseal_checkpoint_interval_seconds{node="al"}"#),
        Some(1.0),
        "{text}"
    );
    let round = metric(
        &text,
        r#"auditseal_checkpoint_last_success_timestamp_seconds{node="al"}"#,
    )
    .unwrap_or_else(|| panic!("{text}"));
    assert!(now_secs() - round < 5.0, "{round}: {text}");
    let waiting: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("auditseal_checkpoint_receiver_waiting{receiver=")?
                .rsplit_once(' ')?
                .1
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(waiting >= 1.0, "{text}");
    let lag = metric(&text, r#"auditseal_forward_lag_seconds{sink="siem"}"#);
    assert!(lag.is_some_and(|l| l > 0.0), "{text}");
    let tries = metric(&text, r#"auditseal_forward_failures_total{sink="siem"}"#);
    assert!(tries.is_some_and(|n| n >= 1.0), "{text}");
    for series in ["auditseal_signing_key_ready", "auditseal_log_consistent"] {
        assert_eq!(metric(&text, series), Some(1.0), "{series}: {text}");
    }
    let failed = r#"auditseal_rows_failed_on_read_total{route="events"}"#;
    assert_eq!(metric(&text, failed), Some(0.0), "{text}");
    assert_eq!(
        metric(
            &text,
            r#"auditseal_verify_runs_total{outcome="failure",trigger="api"}"#
        ),
        Some(0.0),
        "{text}"
    );

    // A row changed in the database fails as the API reads it: counted, and an ALERT.
    auditseal_e2e::exec(
        &url,
        "UPDATE AuditRecordData SET eventType = 'FORGED' WHERE nodeId = 'al' AND sequenceNumber = 2",
    )
    .await;
    let r = admin
        .get(format!("{}/api/v1/events", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 500, "error_on_verify_fail is on");
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, failed), Some(1.0), "{text}");
    let log = s.stop_and_log();
    assert!(
        log.contains("ALERT row failed verification on read"),
        "{log}"
    );
}
