//! High availability (docs/HA.md), once end to end: a PostgreSQL primary with a synchronous
//! streaming-replication standby (scripts/pg-ha), two nodes sharing one software key (one on the
//! batched device, one on the sequential), concurrent load; the primary is killed mid-load, the
//! standby promoted, the nodes restarted against it (each on the other device). Every
//! acknowledged event is on the standby with the number it was acknowledged with, no row is
//! unprotected, `verifylog --all` is clean; requests caught by the failover fail (5xx or no
//! answer) and none of them is acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use auditseal_e2e::pg_ha::{Pair, pg_ha};
use auditseal_e2e::{Server, all_rows, cli, event};
use serde_json::Value;

/// What one client saw: the acknowledged events, and the requests that failed.
#[derive(Default)]
struct Tally {
    /// (pk, nodeId, sequenceNumber) of every 2xx answer.
    acked: Vec<(String, String, i64)>,
    /// How many requests failed with each 5xx status.
    failed_5xx: BTreeMap<u16, usize>,
    failed_no_answer: usize,
    /// Anything else (a 4xx, a 2xx without a pk): must not happen.
    unexpected: Vec<String>,
}

/// Posts events to `url` until `stop`, keeping every acknowledgement; retries failures as a
/// client of a log that is failing over should.
async fn load(url: String, stop: Arc<AtomicBool>) -> Tally {
    let client = auditseal_e2e::client_builder(&auditseal_e2e::token_for(&url))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut t = Tally::default();
    while !stop.load(Ordering::SeqCst) {
        match client
            .post(format!("{url}/api/v1/events"))
            .json(&event("LOAD"))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let status = r.status();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                match (
                    v["pk"].as_str(),
                    v["nodeId"].as_str(),
                    v["sequenceNumber"].as_i64(),
                ) {
                    (Some(pk), Some(node), Some(seq)) => {
                        t.acked.push((pk.to_string(), node.to_string(), seq))
                    }
                    _ => t.unexpected.push(format!("{status} {v}")),
                }
            }
            Ok(r) if r.status().is_server_error() => {
                *t.failed_5xx.entry(r.status().as_u16()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(r) => {
                let status = r.status();
                t.unexpected
                    .push(format!("{status} {}", r.text().await.unwrap_or_default()));
            }
            Err(_) => {
                t.failed_no_answer += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    t
}

/// Posts one event, retrying 503s (a client's duty during a failover) a few times.
async fn post_after(url: &str) -> (String, String, i64) {
    let client = auditseal_e2e::client_for(url);
    for _ in 0..20 {
        let r = client
            .post(format!("{url}/api/v1/events"))
            .json(&event("AFTER"))
            .send()
            .await
            .expect("the restarted node answers");
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status == 201 {
            return (
                v["pk"].as_str().unwrap().to_string(),
                v["nodeId"].as_str().unwrap().to_string(),
                v["sequenceNumber"].as_i64().unwrap(),
            );
        }
        assert_eq!(status, 503, "{v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the restarted node does not accept events");
}

/// Runs blocking work (scripts, process stops) off the async workers, so the load goes on.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Stops a node (SIGTERM) and says how long it took; after 15 s it is killed.
fn stop_node(s: Server) -> Duration {
    let t = Instant::now();
    let pid = s.pid();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    // Exited (a zombie until `s` is dropped and reaps it) or gone.
    let exited = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|st| {
                st.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true)
    };
    while !exited() && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    let log = s.log();
    // A 500 during the failover: show why (the API reserves 500 for rows the database refuses).
    for l in log.lines().filter(|l| l.contains("database error")).take(3) {
        eprintln!("node {pid} logged: {l}");
    }
    if took > Duration::from_secs(2) {
        let tail: Vec<_> = log.lines().rev().take(3).collect();
        eprintln!("node {pid} took {took:?} to stop; its log ends:");
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    drop(s);
    took
}

fn node_args<'a>(d: &'a str, node: &'a str, url: &'a str, device: &'a str) -> [&'a str; 8] {
    [
        "--data-dir",
        d,
        "--node-id",
        node,
        "--database-url",
        url,
        "--device",
        device,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn primary_lost_under_load_standby_promoted_nothing_acknowledged_is_lost() {
    let t0 = Instant::now();
    let pair = blocking(Pair::start).await;
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (d1, d2) = (
        dir1.path().to_str().unwrap().to_string(),
        dir2.path().to_str().unwrap().to_string(),
    );

    // Two nodes on the primary. The first generates the software key; the second gets a copy,
    // so one key protects (and verifies) both nodes' rows.
    let n1 = Server::start(&node_args(&d1, "ha1", &pair.primary_url, "batched")).unwrap();
    std::fs::copy(
        dir1.path().join("signing-key.pem"),
        dir2.path().join("signing-key.pem"),
    )
    .unwrap();
    let n2 = Server::start(&node_args(&d2, "ha2", &pair.primary_url, "sequential")).unwrap();
    eprintln!("[{:?}] pair and nodes started", t0.elapsed());

    // 8 clients, 4 per node.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let url = if i % 2 == 0 { &n1.url } else { &n2.url };
            tokio::spawn(load(url.clone(), stop.clone()))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The primary is lost mid-load; the clients keep sending (and failing) during the failover.
    let p = pair.dir.clone();
    let t_kill = Instant::now();
    blocking(move || pg_ha(&["kill-primary", &p])).await;
    eprintln!("[{:?}] primary killed", t0.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = pair.dir.clone();
    blocking(move || pg_ha(&["promote", &p])).await;
    let failover = t_kill.elapsed();
    eprintln!("[{:?}] standby promoted", t0.elapsed());
    stop.store(true, Ordering::SeqCst);
    let mut tally = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        tally.acked.extend(t.acked);
        for (status, n) in t.failed_5xx {
            *tally.failed_5xx.entry(status).or_default() += n;
        }
        tally.failed_no_answer += t.failed_no_answer;
        tally.unexpected.extend(t.unexpected);
    }
    eprintln!(
        "[{:?}] load: {} acknowledged, failed: {:?} (status: count), {} without answer, {} unexpected; kill to \
         promoted: {failover:?}",
        t0.elapsed(),
        tally.acked.len(),
        tally.failed_5xx,
        tally.failed_no_answer,
        tally.unexpected.len()
    );
    assert!(
        tally.unexpected.is_empty(),
        "a request may succeed or fail (5xx, no answer), nothing else: {:?}",
        tally.unexpected
    );
    for node in ["ha1", "ha2"] {
        let n = tally.acked.iter().filter(|a| a.1 == node).count();
        assert!(n > 20, "the load ran on {node}: {n} acknowledged");
    }
    assert!(
        !tally.failed_5xx.is_empty() || tally.failed_no_answer > 0,
        "the failover happened under load"
    );

    // Stop the nodes, repoint them at the promoted standby, each on the other device.
    let (s1, s2) = tokio::join!(
        blocking(move || stop_node(n1)),
        blocking(move || stop_node(n2)),
    );
    eprintln!("[{:?}] nodes stopped ({s1:?}, {s2:?})", t0.elapsed());
    eprint!("{}", pg_ha(&["status", &pair.dir]));
    let n1 = Server::start(&node_args(&d1, "ha1", &pair.standby_url, "sequential")).unwrap();
    let n2 = Server::start(&node_args(&d2, "ha2", &pair.standby_url, "batched")).unwrap();
    let mut after = Vec::new();
    for _ in 0..5 {
        after.push(post_after(&n1.url).await);
        after.push(post_after(&n2.url).await);
    }
    tokio::join!(
        blocking(move || stop_node(n1)),
        blocking(move || stop_node(n2)),
    );
    eprintln!("[{:?}] restarted nodes done", t0.elapsed());
    // Every acknowledged event is on the standby, with the node and number it was given.
    let rows = all_rows(&pair.standby_url).await;
    let by_pk: HashMap<&str, (&str, i64)> = rows
        .iter()
        .map(|r| (r.pk.as_str(), (r.node_id.as_str(), r.sequence_number)))
        .collect();
    let acked: Vec<_> = tally.acked.iter().chain(&after).collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(pk, node, seq)| by_pk.get(pk.as_str()) != Some(&(node.as_str(), *seq)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events are missing or changed on the promoted standby, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let unprotected: Vec<_> = rows
        .iter()
        .filter(|r| r.row_protection.as_deref().is_none_or(str::is_empty))
        .map(|r| (&r.node_id, r.sequence_number))
        .collect();
    assert!(unprotected.is_empty(), "unprotected rows: {unprotected:?}");
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *per_node.entry(r.node_id.as_str()).or_default() += 1;
    }
    // Rows nobody was told about: commits whose answer was lost in the failover (503 or no
    // answer). They are allowed: the client retried those events.
    let acked_pks: std::collections::HashSet<&str> = acked.iter().map(|a| a.0.as_str()).collect();
    let unacked: Vec<_> = rows
        .iter()
        .filter(|r| !acked_pks.contains(r.pk.as_str()))
        .map(|r| format!("{}:{}", r.node_id, r.sequence_number))
        .collect();
    eprintln!(
        "standby: {} rows {per_node:?}; {} acknowledged, all there; {} committed without an \
         acknowledgement {unacked:?}",
        rows.len(),
        acked.len(),
        unacked.len()
    );

    // The log verifies whole across the failover and the device switches.
    let (code, out, err) = cli(&[
        "verifylog",
        "--all",
        "--data-dir",
        &d1,
        "--database-url",
        &pair.standby_url,
    ]);
    eprint!("{out}");
    assert_eq!(code, 0, "verifylog: {out}{err}");
    drop(pair);
    eprintln!("failover test: {:?}", t0.elapsed());
}
