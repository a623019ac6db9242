//! Event forwarding to a SIEM (`[[forward]]`, docs/OPERATIONS.md "Forwarding to a SIEM"):
//! every stored event reaches a real rsyslogd over TCP and over TLS, a JSON Lines file and a
//! Log4j-line file, in order per node, while the receivers are stopped and restarted twice under
//! load and across a restart of the server; a file moved away by logrotate is reopened at
//! SIGHUP; the lag is a metric.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use auditseal_core::record::AuditRecord;
use auditseal_e2e::receivers::{Rsyslog, RsyslogTls, TestCa, free_port};
use auditseal_e2e::{Backend, Server, all_rows, event, metric, new_database};

const NODE: &str = "fw";

/// Posts bulk requests of 20 events until `stop`, counting the events acknowledged.
fn load(
    server: &Server,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let client = server.client();
    let url = format!("{}/api/v1/events:batch", server.url);
    tokio::spawn(async move {
        let batch: Vec<_> = (0..20).map(|_| event("PROCESS")).collect();
        while !stop.load(Ordering::SeqCst) {
            let r = client.post(&url).json(&batch).send().await.expect("POST");
            assert_eq!(
                r.status().as_u16(),
                201,
                "{}",
                r.text().await.unwrap_or_default()
            );
            sent.fetch_add(20, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// The (node, sequence number) of each event a receiver's line names, in file order:
/// rsyslog's RFC 5424 lines by their structured data, the JSON Lines file by its objects, the
/// Log4j lines by their `auditseal.` keys.
fn numbers(path: &Path) -> Vec<(String, i64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            if let Some(sd) = l.split("[auditseal@32473 ").nth(1) {
                let node = between(sd, "node=\"", "\"");
                let seq = between(sd, "seq=\"", "\"");
                (node.to_string(), seq.parse().unwrap())
            } else if l.starts_with('{') {
                let r: AuditRecord = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                (r.node_id, r.sequence_number)
            } else {
                let node = between(l, "auditseal.nodeId: ", ";");
                let seq = between(l, "auditseal.sequenceNumber: ", ";");
                (node.to_string(), seq.parse().unwrap())
            }
        })
        .collect()
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let from = s
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in {s}"))
        + start.len();
    let len = s[from..]
        .find(end)
        .unwrap_or_else(|| panic!("no end {end:?} in {s}"));
    &s[from..from + len]
}

/// Waits until `path` names every number in `want`; then checks the order: ignoring repeats
/// (a delivery sent again whole), the numbers first seen are increasing.
fn all_arrive(path: &Path, want: &BTreeSet<i64>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = numbers(path);
        let seen: BTreeSet<i64> = got.iter().map(|(_, s)| *s).collect();
        if want.is_subset(&seen) {
            assert!(got.iter().all(|(n, _)| n == NODE), "{}", path.display());
            let mut first_seen = Vec::new();
            let mut dup = BTreeSet::new();
            for (_, s) in &got {
                if dup.insert(*s) {
                    first_seen.push(*s);
                }
            }
            assert!(
                first_seen.windows(2).all(|w| w[0] < w[1]),
                "{}: out of order: {first_seen:?}",
                path.display()
            );
            assert_eq!(&seen, want, "{}: numbers no row has", path.display());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {} of {} events arrived; missing e.g. {:?}",
            path.display(),
            seen.intersection(want).count(),
            want.len(),
            want.difference(&seen).take(5).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_log(server: &Server, what: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.log().matches(what).count() < times {
        assert!(
            Instant::now() < deadline,
            "never logged {what:?} {times} times:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sink_of(port: u16, tcp_port: u16) -> &'static str {
    if port == tcp_port {
        "siem-tcp"
    } else {
        "siem-tls"
    }
}

/// Waits until the server has logged `what` for `sink` at least `n` times; false if it does
/// not within 40 s.
fn wait_count(server: &Server, sink: &str, what: &str, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(40);
    let count = || {
        server
            .log()
            .lines()
            .filter(|l| l.contains(what) && l.contains(&format!("sink={sink} ")))
            .count()
    };
    while count() < n {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// The server's arguments: data directory, database, configuration file, node `NODE`.
fn server_args<'a>(data_dir: &'a str, url: &'a str, config: &'a Path) -> [&'a str; 8] {
    [
        "--data-dir",
        data_dir,
        "--database-url",
        url,
        "--config",
        config.to_str().unwrap(),
        "--node-id",
        NODE,
    ]
}

fn sighup(server: &Server) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test]
async fn every_event_reaches_rsyslog_and_files_while_receivers_and_the_server_restart() {
    let dir = tempfile::tempdir().unwrap();

    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Postgres, dir.path()).await;
    let ca = TestCa::new(dir.path(), "receiver");
    let (rs_cert, rs_key) = ca.issue("rsyslog");
    let (client_cert, client_key) = ca.issue("auditseal");
    let (tcp_port, tls_port) = (free_port(), free_port());
    let mut tcp = Rsyslog::start(&dir.path().join("rs-tcp"), tcp_port, None);
    let tls_setup = RsyslogTls {
        ca: ca.ca.clone(),
        cert: rs_cert,
        key: rs_key,
    };
    let mut tls = Rsyslog::start(&dir.path().join("rs-tls"), tls_port, Some(&tls_setup));
    let jsonl = dir.path().join("events.jsonl");
    let log4j = dir.path().join("events-log4j.log");
    let config = dir.path().join("auditseal.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndevice = \"batched\"\n\
             [[forward]]\nname = \"siem-tcp\"\naddress = \"127.0.0.1:{tcp_port}\"\n\
             [[forward]]\nname = \"siem-tls\"\naddress = \"127.0.0.1:{tls_port}\"\n\
             transport = \"tls\"\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n\
             [[forward]]\nname = \"jsonl\"\nfile = \"events.jsonl\"\n\
             [[forward]]\nname = \"log4j\"\nfile = \"events-log4j.log\"\nformat = \"log4j\"\n",
            ca.ca, client_cert, client_key
        ),
    )
    .unwrap();
    let args = server_args(d, &url, &config);
    let s = Server::start(&args).unwrap();

    // Under load, each receiver goes away twice and comes back; the server is never told.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let loader = load(&s, stop.clone(), sent.clone());
    for round in 1..=2 {
        for rs in [&mut tcp, &mut tls] {
            // Each outage is noticed (one ALERT per outage and reason) before it ends.
            tokio::time::sleep(Duration::from_millis(400)).await;
            rs.stop();
            let before = sent.load(Ordering::SeqCst);
            while sent.load(Ordering::SeqCst) < before + 100 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let sink = sink_of(rs.port, tcp_port);
            if !wait_count(&s, sink, "ALERT cannot forward events", round) {
                panic!(
                    "{sink}: fewer than {round} ALERTs:\n{}\nrsyslogd:\n{}",
                    s.log(),
                    rs.log()
                );
            }
            rs.restart();
            // And its end: the sink delivers again (its retries back off up to 30 s).
            assert!(
                wait_count(&s, sink, "forwarding again", round),
                "{sink} does not forward again:\n{}",
                s.log()
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    loader.await.unwrap();
    assert!(sent.load(Ordering::SeqCst) >= 400);

    // The TCP receiver is down while the server stops: what it did not get is sent after the
    // next start, from the sink's position in the database.
    tcp.stop();
    auditseal_e2e::post_events(&s, 5).await;
    let log = s.stop_and_log();
    assert!(
        log.contains("forwarding again"),
        "the sinks recovered after each outage:\n{log}"
    );
    let s = Server::start(&args).unwrap();
    tcp.restart();
    auditseal_e2e::post_events(&s, 5).await;

    let rows = all_rows(&url).await;
    let want: BTreeSet<i64> = rows.iter().map(|r| r.sequence_number).collect();
    assert!(want.len() >= 410, "{}", want.len());
    for path in [&tcp.out, &tls.out, &jsonl, &log4j] {
        all_arrive(path, &want);
    }

    // What each carries: the row itself, as stored (rsyslog's RFC 5424 line: the MSG after
    // the structured data; the JSON Lines file: each line).
    let by_pk: BTreeMap<&str, &AuditRecord> = rows.iter().map(|r| (r.pk.as_str(), r)).collect();
    let text = std::fs::read_to_string(&tls.out).unwrap();
    for line in text.lines() {
        let msg = &line[line.find(" {\"pk\":").expect(line) + 1..];
        let got: AuditRecord = serde_json::from_str(msg).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(by_pk[got.pk.as_str()], &got);
        let protection = got.row_protection.as_deref().unwrap();
        assert!(
            line.contains(&format!("rowProtection=\"{protection}\"")),
            "{line}"
        );
        assert!(
            line.starts_with("<85>1 ") || line.starts_with("<84>1 "),
            "{line}"
        );
    }
    for line in std::fs::read_to_string(&jsonl).unwrap().lines() {
        let got: AuditRecord = serde_json::from_str(line).unwrap();
        assert_eq!(by_pk[got.pk.as_str()], &got);
    }
    let first = std::fs::read_to_string(&log4j).unwrap();
    let first = first
        .lines()
        .find(|l| l.contains("EVENT: PROCESS"))
        .unwrap();
    assert!(
        first.contains(
            " INFO  [org.signserver.server.log.SignServerLog4jDevice] EVENT: PROCESS; \
                        MODULE: WORKER; CUSTOM_ID: null; "
        ) && first.contains("; REPLY_TIME:"),
        "{first}"
    );

    // Caught up: no lag; every sink counted what it sent in this run.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = auditseal_e2e::get(format!("{}/metrics", s.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lags: Vec<f64> = ["siem-tcp", "siem-tls", "jsonl", "log4j"]
            .iter()
            .map(|sink| {
                metric(
                    &text,
                    &format!("auditseal_forward_lag_seconds{{sink=\"{sink}\"}}"),
                )
                .unwrap_or_else(|| panic!("no lag of {sink}:\n{text}"))
            })
            .collect();
        let last = *want.last().unwrap() as f64;
        let positions_done = ["siem-tcp", "siem-tls", "jsonl", "log4j"]
            .iter()
            .all(|sink| {
                metric(
                    &text,
                    &format!("auditseal_forward_position{{sink=\"{sink}\"}}"),
                ) == Some(last)
            });
        if lags.iter().all(|l| *l == 0.0) && positions_done {
            assert!(
                metric(&text, "auditseal_forward_events_total{sink=\"siem-tcp\"}").unwrap() >= 10.0,
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not caught up: {lags:?}\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.stop();
}

#[tokio::test]
async fn a_file_sink_moved_away_by_logrotate_is_reopened_at_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Sqlite, dir.path()).await;
    let logs = dir.path().join("log");
    std::fs::create_dir(&logs).unwrap();
    let file = logs.join("events.jsonl");
    let config = dir.path().join("auditseal.toml");
    std::fs::write(
        &config,
        format!(
            "[[forward]]\nname = \"file\"\nfile = {:?}\nstart = \"beginning\"\n",
            file
        ),
    )
    .unwrap();
    let args = server_args(d, &url, &config);
    let s = Server::start(&args).unwrap();
    auditseal_e2e::post_events(&s, 3).await;
    let stored: BTreeSet<i64> = all_rows(&url)
        .await
        .iter()
        .map(|r| r.sequence_number)
        .collect();
    all_arrive(&file, &stored);

    // The shipped logrotate configuration, pointed at this test's directory and server.
    let shipped =
        std::fs::read_to_string(auditseal_e2e::workspace_root().join("conf/logrotate/auditseal"))
            .unwrap();
    assert!(
        shipped.contains("systemctl reload auditseal.service"),
        "{shipped}"
    );
    let conf = shipped
        .replace("/var/log/auditseal/", &format!("{}/", logs.display()))
        .replace(
            "systemctl reload auditseal.service",
            &format!("kill -HUP {}", s.pid()),
        );
    let conf_path = dir.path().join("logrotate.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let out = std::process::Command::new("/usr/sbin/logrotate")
        .arg("--force")
        .arg("--state")
        .arg(dir.path().join("logrotate.state"))
        .arg(&conf_path)
        .output()
        .expect("logrotate (apt-get install logrotate; scripts/test does)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_log(&s, "the forwarding file is reopened", 1);
    let rotated = logs.join("events.jsonl.1");
    assert!(rotated.exists(), "logrotate moved the file away");
    auditseal_e2e::post_events(&s, 2).await;
    let all: BTreeSet<i64> = all_rows(&url)
        .await
        .iter()
        .map(|r| r.sequence_number)
        .collect();
    let new: BTreeSet<i64> = all.difference(&stored).copied().collect();
    all_arrive(&file, &new);
    assert_eq!(
        numbers(&rotated)
            .into_iter()
            .map(|(_, s)| s)
            .collect::<BTreeSet<_>>(),
        stored
    );

    // A SIGHUP with a broken configuration still reopens the file, and keeps the running one.
    std::fs::rename(&file, logs.join("events.jsonl.2")).unwrap();
    std::fs::write(&config, "[[forward]]\nname = 1\n").unwrap();
    sighup(&s);
    wait_log(&s, "the forwarding file is reopened", 2);
    wait_log(&s, "the new configuration is refused", 1);
    auditseal_e2e::post_events(&s, 1).await;
    let last = all_rows(&url)
        .await
        .iter()
        .map(|r| r.sequence_number)
        .max()
        .unwrap();
    all_arrive(&file, &BTreeSet::from([last]));
    s.stop();
}

#[test]
fn a_bad_sink_stops_the_start_and_check_config_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let config = dir.path().join("auditseal.toml");
    std::fs::write(
        &config,
        "[[forward]]\nname = \"siem\"\naddress = \"logs:6514\"\ntransport = \"tls\"\n",
    )
    .unwrap();
    let url = format!("sqlite://{}/a.db", d);
    let args = [
        "--data-dir",
        d,
        "--database-url",
        &url,
        "--config",
        config.to_str().unwrap(),
    ];
    let err = Server::start(&args).err().expect("refused");
    assert!(
        err.contains("cannot set up event forwarding ([[forward]])")
            && err.contains("forward[0]: transport = \"tls\" needs ca_file"),
        "{err}"
    );
    assert!(!dir.path().join("a.db").exists(), "nothing was created");
    let mut check = vec!["check-config", "--bind", "127.0.0.1:0"];
    check.extend(args);
    let out = std::process::Command::new(auditseal_e2e::bin_dir().join("auditseal-server"))
        .args(&check)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains(
            "event forwarding: ERROR [[forward]]: forward[0]: transport = \"tls\" needs ca_file"
        ),
        "{text}"
    );
}
