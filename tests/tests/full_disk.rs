//! Issue 11.2: a full disk under SQLite. The data directory is on a small tmpfs (the fault
//! suite's `SmallDisk`) this test mounts
//! (root only, as CI runs); a filler file takes most of it. Eight clients post (single events
//! and 20-event bulk requests, each with an Idempotency-Key they keep until acknowledged) until
//! the disk is full and past it; then the filler is removed and the same server must take
//! events again within seconds, without a restart. Every acknowledged event must be stored,
//! once, with no gap, and verifylog must pass. Both devices.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use auditseal_e2e::faults::SmallDisk;
use auditseal_e2e::{Server, all_rows, cli, event};
use serde_json::{Value, json};

struct Outcome {
    /// (pk, sequenceNumber) of every acknowledged event.
    acked: Vec<(String, i64)>,
    refused: Vec<(u16, String)>,
}

/// One client: requests of `bulk` events (1: a single event) with a key kept until 2xx.
async fn client(
    s_url: String,
    token: String,
    id: usize,
    bulk: usize,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let c = auditseal_e2e::client_with(&token);
    let mut out = Outcome {
        acked: Vec::new(),
        refused: Vec::new(),
    };
    let mut n = 0;
    let mut key = format!("c{id}-r{n}");
    while !stop.load(Ordering::SeqCst) {
        let (path, body) = if bulk == 1 {
            ("/api/v1/events", event("PROCESS"))
        } else {
            ("/api/v1/events:batch", json!(vec![event("PROCESS"); bulk]))
        };
        let r = c
            .post(format!("{s_url}{path}"))
            .header("Idempotency-Key", &key)
            .json(&body)
            .timeout(Duration::from_secs(40))
            .send()
            .await;
        let Ok(r) = r else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if st == 200 || st == 201 {
            let events = if bulk == 1 {
                vec![v]
            } else {
                v["events"].as_array().cloned().unwrap_or_default()
            };
            for e in events {
                out.acked.push((
                    e["pk"].as_str().unwrap().to_string(),
                    e["sequenceNumber"].as_i64().unwrap(),
                ));
            }
            n += 1;
            key = format!("c{id}-r{n}");
        } else {
            out.refused
                .push((st, v["error"].as_str().unwrap_or("").to_string()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    out
}

#[tokio::test]
async fn a_full_disk_loses_nothing_and_ingestion_recovers_by_itself() {
    for device in ["sequential", "batched"] {
        let fs = SmallDisk::mount("6m");
        let data = fs.path().to_path_buf();
        let d = data.to_str().unwrap();
        let url = format!("sqlite://{d}/auditseal.db");
        let s = Server::start(&["--data-dir", d, "--node-id", "full", "--device", device]).unwrap();
        // Most of the space goes to a filler; the log gets what is left.
        let filler = data.join("filler");
        let free = fs2_free(&data);
        std::fs::write(&filler, vec![0u8; (free - (1 << 20)) as usize]).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for id in 0..8 {
            let bulk = if id % 2 == 0 { 20 } else { 1 };
            tasks.push(tokio::spawn(client(
                s.url.clone(),
                s.token.clone(),
                id,
                bulk,
                stop.clone(),
            )));
        }
        // Until the disk is full (the server refuses with storage_full), then a little longer.
        let started = Instant::now();
        let full_at = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.log().contains("storage_full") || s.log().contains("database or disk is full") {
                break Instant::now();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{device}: the disk never filled: {}",
                s.log()
            );
        };
        println!("{device}: full after {:?}", full_at - started);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Space returns; the same server must take events again within seconds.
        std::fs::remove_file(&filler).unwrap();
        let freed = Instant::now();
        let c = s.client();
        let recovered = loop {
            let r = c
                .post(format!("{}/api/v1/events", s.url))
                .json(&event("PROCESS"))
                .timeout(Duration::from_secs(40))
                .send()
                .await
                .unwrap();
            if r.status().as_u16() == 201 {
                break freed.elapsed();
            }
            if freed.elapsed() > Duration::from_secs(15) {
                let log = s.log();
                let tail: String = log.lines().rev().take(12).collect::<Vec<_>>().join("\n");
                panic!(
                    "{device}: no recovery after space returned: {}; log, newest first:\n{tail}",
                    r.status()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        let stopping = Instant::now();
        let mut acked = Vec::new();
        let mut refused = Vec::new();
        for t in tasks {
            let o = t.await.unwrap();
            acked.extend(o.acked);
            refused.extend(o.refused);
        }
        println!("{device}: clients stopped in {:?}", stopping.elapsed());
        drop(s);

        let rows = all_rows(&url).await;
        let stored: std::collections::HashMap<&str, i64> = rows
            .iter()
            .map(|r| (r.pk.as_str(), r.sequence_number))
            .collect();
        let lost: Vec<_> = acked
            .iter()
            .filter(|(pk, seq)| stored.get(pk.as_str()) != Some(seq))
            .collect();
        let mut seqs: Vec<i64> = rows
            .iter()
            .filter(|r| r.node_id == "full")
            .map(|r| r.sequence_number)
            .collect();
        seqs.sort();
        let gaps = seqs.windows(2).filter(|w| w[1] != w[0] + 1).count();
        let full = refused.iter().filter(|(_, e)| e == "storage_full").count();
        println!(
            "{device}: acknowledged={} stored={} lost={} gaps={gaps} refused={} (storage_full {full}) recovered_in={recovered:?}",
            acked.len(),
            rows.len(),
            lost.len(),
            refused.len()
        );
        assert!(
            lost.is_empty(),
            "{device}: acknowledged but not stored: {:?}",
            &lost[..lost.len().min(5)]
        );
        assert_eq!(gaps, 0, "{device}");
        assert!(
            full > 0,
            "{device}: no request was refused with storage_full: {refused:?}"
        );
        let (code, out, err) = cli(&[
            "verifylog",
            "--all",
            "--database-url",
            &url,
            "--data-dir",
            d,
        ]);
        assert_eq!(code, 0, "{device}: {out}{err}");
        drop(fs);
    }
}

/// Free bytes on the filesystem holding `dir`.
fn fs2_free(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
