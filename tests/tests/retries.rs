//! Issue 11.4: exactly-once ingestion. A 408 or a 503 may have committed, so a signer retries
//! with the same pk (in the event, or derived from an `Idempotency-Key` header): a retry of a
//! stored event answers 200 with the stored row (same pk, node, sequence number) and writes
//! nothing, for single and bulk requests, on both devices and both databases; a pk stored with
//! other content is 409; concurrent retries store one row; a bulk request larger than the
//! batched device's queue is 413 naming the limit. Each case counts the rows in the database.

use std::path::Path;

use auditseal_e2e::{BACKENDS, Server, all_rows, cli, event, new_database};
use serde_json::{Value, json};

fn with_pk(pk: &str, n: usize) -> Value {
    let mut e = event("PROCESS");
    e["pk"] = json!(pk);
    e["searchDetail1"] = json!(n.to_string());
    e
}

fn uuid(n: u32) -> String {
    format!("6f0c1a4e-2b3d-4c5e-8f90-{n:012x}")
}

fn simple(pk: &str) -> String {
    pk.replace('-', "")
}

async fn post(s: &Server, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
    let mut r = s.client().post(format!("{}{path}", s.url)).json(body);
    if let Some(k) = key {
        r = r.header("Idempotency-Key", k);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn count(url: &str, node: &str) -> usize {
    all_rows(url)
        .await
        .iter()
        .filter(|r| r.node_id == node)
        .count()
}

fn config(dir: &Path, device: &str) -> String {
    let p = dir.join("auditseal.toml");
    std::fs::write(
        &p,
        format!("[server]\ndevice = \"{device}\"\nqueue_capacity = 500\n"),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

#[tokio::test]
async fn retries_with_the_same_pk_store_each_event_once() {
    for backend in BACKENDS {
        for device in ["sequential", "batched"] {
            let what = format!("{backend:?} {device}");
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().to_str().unwrap();
            let url = new_database(backend, dir.path()).await;
            let cfg = config(dir.path(), device);
            let s = Server::start(&[
                "--data-dir",
                d,
                "--database-url",
                &url,
                "--node-id",
                "r",
                "--config",
                &cfg,
            ])
            .unwrap();
            let before = count(&url, "r").await;

            // One event, sent twice: the second answer is the stored row.
            let (st, first) = post(&s, "/api/v1/events", &with_pk(&uuid(1), 1), None).await;
            assert_eq!(st, 201, "{what}: {first}");
            assert_eq!(first["pk"], simple(&uuid(1)), "{what}");
            assert!(first.get("replayed").is_none(), "{what}: {first}");
            let (st, again) = post(&s, "/api/v1/events", &with_pk(&uuid(1), 1), None).await;
            assert_eq!(st, 200, "{what}: {again}");
            for k in ["pk", "nodeId", "sequenceNumber", "timeStamp"] {
                assert_eq!(again[k], first[k], "{what}: {k}");
            }
            assert_eq!(again["replayed"], true, "{what}");
            // Any textual form of the same UUID names the same row.
            let (st, _) = post(
                &s,
                "/api/v1/events",
                &with_pk(&simple(&uuid(1)).to_uppercase(), 1),
                None,
            )
            .await;
            assert_eq!(st, 200, "{what}");
            assert_eq!(count(&url, "r").await, before + 1, "{what}");

            // The same pk with other content changes nothing.
            let (st, body) = post(&s, "/api/v1/events", &with_pk(&uuid(1), 99), None).await;
            assert_eq!(st, 409, "{what}: {body}");
            assert_eq!(body["error"], "pk_conflict", "{what}");

            // Bulk: three stored first, then all six; then all six again.
            let six: Vec<Value> = (10..16).map(|n| with_pk(&uuid(n), n as usize)).collect();
            let (st, b) = post(&s, "/api/v1/events:batch", &json!(six[..3]), None).await;
            assert_eq!(st, 201, "{what}: {b}");
            let (st, all) = post(&s, "/api/v1/events:batch", &json!(six), None).await;
            assert_eq!(st, 201, "{what}: {all}");
            let ev = all["events"].as_array().unwrap();
            assert_eq!(ev.len(), 6, "{what}");
            for (i, e) in ev.iter().enumerate() {
                assert_eq!(
                    e["pk"],
                    simple(&uuid(10 + i as u32)),
                    "{what}: answers in order"
                );
                assert_eq!(e.get("replayed").is_some(), i < 3, "{what}: {e}");
            }
            for i in 0..3 {
                assert_eq!(
                    ev[i]["sequenceNumber"], b["events"][i]["sequenceNumber"],
                    "{what}"
                );
            }
            let (st, again) = post(&s, "/api/v1/events:batch", &json!(six), None).await;
            assert_eq!(st, 200, "{what}: {again}");
            assert_eq!(again["events"].as_array().unwrap().len(), 6);
            for i in 0..6 {
                assert_eq!(
                    again["events"][i]["sequenceNumber"],
                    ev[i]["sequenceNumber"]
                );
            }
            assert_eq!(count(&url, "r").await, before + 7, "{what}");

            // A request that repeats a pk is refused whole.
            let dup = json!([with_pk(&uuid(20), 20), with_pk(&uuid(20), 20)]);
            let (st, body) = post(&s, "/api/v1/events:batch", &dup, None).await;
            assert_eq!(st, 400, "{what}: {body}");

            // Idempotency-Key: the same key names the same rows; another key, new rows.
            let three = json!([event("PROCESS"), event("PROCESS"), event("PROCESS")]);
            let (st, k1) = post(&s, "/api/v1/events:batch", &three, Some("req-1")).await;
            assert_eq!(st, 201, "{what}: {k1}");
            let (st, k1b) = post(&s, "/api/v1/events:batch", &three, Some("req-1")).await;
            assert_eq!(st, 200, "{what}: {k1b}");
            for i in 0..3 {
                for k in ["pk", "sequenceNumber"] {
                    assert_eq!(k1["events"][i][k], k1b["events"][i][k], "{what}");
                }
            }
            let (st, one) = post(&s, "/api/v1/events", &event("PROCESS"), Some("req-2")).await;
            assert_eq!(st, 201, "{what}: {one}");
            let (st, one_b) = post(&s, "/api/v1/events", &event("PROCESS"), Some("req-2")).await;
            assert_eq!((st, &one_b["pk"]), (200, &one["pk"]), "{what}");
            let (st, body) =
                post(&s, "/api/v1/events", &with_pk(&uuid(30), 30), Some("req-3")).await;
            assert_eq!(st, 400, "{what}: a pk and a key: {body}");
            assert_eq!(count(&url, "r").await, before + 11, "{what}");

            // Eight clients retrying the same event at once: one row, one answer.
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (client, target) = (s.client(), s.url.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..200 {
                        let r = client
                            .post(format!("{target}/api/v1/events"))
                            .json(&with_pk(&uuid(40), 40))
                            .send()
                            .await
                            .unwrap();
                        let st = r.status().as_u16();
                        let body: Value = r.json().await.unwrap();
                        if st == 200 || st == 201 {
                            return body["sequenceNumber"].clone();
                        }
                        assert_eq!(st, 503, "{body}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                    panic!("no answer after 200 tries");
                }));
            }
            let mut seqs = Vec::new();
            for t in tasks {
                seqs.push(t.await.unwrap());
            }
            assert!(seqs.iter().all(|q| *q == seqs[0]), "{what}: {seqs:?}");
            assert_eq!(count(&url, "r").await, before + 12, "{what}");

            if device == "batched" {
                // Larger than the queue can ever hold: 413 naming the limit, not "retry later".
                let many: Vec<Value> = (0..501).map(|_| event("PROCESS")).collect();
                let (st, body) = post(&s, "/api/v1/events:batch", &json!(many), None).await;
                assert_eq!(st, 413, "{what}: {body}");
                assert!(
                    body["message"].as_str().unwrap().contains("at most 500"),
                    "{body}"
                );
            }
            drop(s);
            let (code, out, err) = cli(&[
                "verifylog",
                "--all",
                "--database-url",
                &url,
                "--data-dir",
                d,
            ]);
            assert_eq!(code, 0, "{what}: {out}{err}");
        }
    }
}
