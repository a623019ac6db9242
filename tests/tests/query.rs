//! `GET /api/v1/events` and `GET /api/v1/events:count` on the real server (docs/API.md): keyset
//! pages in both orders stay exact while rows are being added, counts, times as ISO-8601 or
//! epoch millis, verification per row, and no way to reach the SQL. SQLite and PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use auditseal_core::store::{Cursor, Order};
use auditseal_core::time::format_iso8601;
use auditseal_e2e::{BACKENDS, Server, event, new_database};
use serde_json::{Value, json};

async fn post(base: &str, body: &Value) -> u16 {
    auditseal_e2e::client_for(base)
        .post(format!("{base}/api/v1/events"))
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn get(base: &str, path_and_query: &str) -> (u16, Value) {
    let r = auditseal_e2e::get(format!("{base}{path_and_query}"))
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `GET /api/v1/events:count` with these query parameters; panics unless 200.
async fn count(base: &str, query: &str) -> i64 {
    let (st, v) = get(base, &format!("/api/v1/events:count?{query}")).await;
    assert_eq!(st, 200, "{query}: {v}");
    v["count"].as_i64().unwrap()
}

/// A 400 whose message names `needle`.
async fn bad_request(base: &str, path_and_query: &str, needle: &str) {
    let (st, v) = get(base, path_and_query).await;
    assert_eq!(st, 400, "{path_and_query}: {v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "{path_and_query}: {msg} lacks {needle}"
    );
}

/// The order key and pk of a row as the API returns it.
type Key = (i64, String, i64, String);

fn key(e: &Value) -> Key {
    (
        e["timeStamp"].as_i64().unwrap(),
        e["nodeId"].as_str().unwrap().to_string(),
        e["sequenceNumber"].as_i64().unwrap(),
        e["pk"].as_str().unwrap().to_string(),
    )
}

/// Pages through `criteria` (already URL-encoded, `&`-joined, may be empty) in `order`, `limit`
/// rows at a time, checking that pages continue strictly in order; returns every row seen.
async fn page_through(base: &str, criteria: &str, order: &str, limit: usize) -> Vec<Key> {
    let mut seen: Vec<Key> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let mut q = format!("/api/v1/events?order={order}&limit={limit}");
        if !criteria.is_empty() {
            q.push('&');
            q.push_str(criteria);
        }
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let (st, page) = get(base, &q).await;
        assert_eq!(st, 200, "{q}: {page}");
        let events = page["events"].as_array().unwrap();
        assert_eq!(page["count"].as_u64(), Some(events.len() as u64));
        assert!(
            events.iter().all(|e| e["verification"]["valid"] == true),
            "{page}"
        );
        seen.extend(events.iter().map(key));
        match page["nextCursor"].as_str() {
            Some(c) => {
                assert_eq!(events.len(), limit, "a cursor only after a full page");
                cursor = Some(c.to_string());
            }
            None => {
                assert!(events.len() < limit, "a full page must carry a cursor");
                break;
            }
        }
        assert!(cursor.is_some());
    }
    for w in seen.windows(2) {
        let (a, b) = ((&w[0].0, &w[0].1, w[0].2), (&w[1].0, &w[1].1, w[1].2));
        match order {
            "asc" => assert!(a < b, "asc out of order: {w:?}"),
            _ => assert!(a > b, "desc out of order: {w:?}"),
        }
    }
    seen
}

/// Starts a server for `node` on `url` (with extra arguments).
fn start(dir: &str, url: &str, node: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--data-dir", dir, "--database-url", url, "--node-id", node];
    args.extend(extra);
    Server::start(&args).unwrap()
}

async fn bulk(base: &str, events: &[Value]) {
    let r = auditseal_e2e::client_for(base)
        .post(format!("{base}/api/v1/events:batch"))
        .json(events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

#[tokio::test]
async fn keyset_pages_stay_exact_while_rows_are_added() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        // Two nodes writing to one database: rows of both interleave, some with equal times.
        let a = start(d, &url, "qa", &[]);
        let b = start(d, &url, "qb", &[]);
        for s in [&a, &b] {
            bulk(&s.url, &vec![event("OLD"); 12]).await;
            for _ in 0..8 {
                assert_eq!(post(&s.url, &event("OLD")).await, 201);
            }
        }

        // Writers keep adding rows to both nodes for as long as the pages are read.
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = [a.url.clone(), b.url.clone()]
            .into_iter()
            .map(|base| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) && n < 400 {
                        assert_eq!(post(&base, &event("NEW")).await, 201);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        while count(&a.url, "criteria=eventType+EQ+NEW").await < 4 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }

        let new_before = count(&a.url, "criteria=eventType+EQ+NEW").await;
        for (order, criteria, limit) in [
            ("asc", "", 7),
            ("desc", "", 5),
            ("desc", "criteria=eventType+EQ+OLD", 3),
            (
                "asc",
                "criteria=eventType%20NEQ%20NEW&criteria=customId+NULL",
                4,
            ),
        ] {
            // Every row that exists before paging starts...
            let (st, snap) = get(
                &a.url,
                &format!("/api/v1/events?limit=10000&order={order}&{criteria}"),
            )
            .await;
            assert_eq!(st, 200, "{snap}");
            assert_eq!(snap["nextCursor"], Value::Null, "not a full page");
            let before: BTreeSet<String> = snap["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| key(e).3)
                .collect();
            // ...is seen exactly once, and no row twice.
            let seen = page_through(&a.url, criteria, order, limit).await;
            let mut times: BTreeMap<&str, usize> = BTreeMap::new();
            for k in &seen {
                *times.entry(k.3.as_str()).or_default() += 1;
            }
            assert!(
                times.values().all(|n| *n == 1),
                "{backend:?} {order} {criteria}: a row came twice"
            );
            let missing: Vec<_> = before
                .iter()
                .filter(|pk| !times.contains_key(pk.as_str()))
                .collect();
            assert!(
                missing.is_empty(),
                "{backend:?} {order} {criteria}: rows missed: {missing:?}"
            );
            if criteria.contains("OLD") {
                assert_eq!(seen.len(), 40, "only the OLD rows, all of them");
            }
        }
        let new_after = count(&a.url, "criteria=eventType+EQ+NEW").await;
        assert!(
            new_after > new_before,
            "rows were added while paging ({new_before} -> {new_after})"
        );
        stop.store(true, Ordering::SeqCst);
        let mut written = 0;
        for w in writers {
            written += w.await.unwrap();
        }
        assert!(written >= 4, "the writers ran while paging");

        // Quiet now: the count, a full page-through and one big page agree.
        // Plus the first admin token's TOKEN_CREATE, logged by the first server.
        let total = count(&a.url, "").await;
        assert_eq!(total, 40 + written + 1);
        assert_eq!(page_through(&b.url, "", "asc", 9).await.len() as i64, total);
        assert_eq!(count(&b.url, "criteria=eventType+EQ+OLD").await, 40);
        assert_eq!(
            count(&b.url, "criteria=eventType+EQ+OLD&criteria=nodeId+EQ+qb").await,
            20
        );
        // A page exactly as long as what is left still carries a cursor; the next page is
        // empty and ends it.
        let (_, p) = get(
            &a.url,
            "/api/v1/events?criteria=eventType+EQ+OLD&criteria=nodeId+EQ+qa&limit=20",
        )
        .await;
        let c = p["nextCursor"].as_str().expect("a full page has a cursor");
        let (st, p) = get(
            &a.url,
            &format!(
                "/api/v1/events?criteria=eventType+EQ+OLD&criteria=nodeId+EQ+qa&limit=20&cursor={c}"
            ),
        )
        .await;
        assert_eq!((st, p["count"].as_i64()), (200, Some(0)), "{p}");
        assert_eq!(p["nextCursor"], Value::Null);

        // Cursors are checked: another order, or anything that does not decode, is a 400.
        bad_request(
            &a.url,
            &format!("/api/v1/events?order=asc&cursor={c}"),
            "cursor",
        )
        .await;
        bad_request(&a.url, "/api/v1/events?cursor=abc", "cursor").await;
        bad_request(&a.url, "/api/v1/events?order=up", "order").await;
        a.stop();
        b.stop();
    }
}

#[tokio::test]
async fn times_iso_8601_or_epoch_millis() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let s = start(d, &url, "qt", &[]);
        for _ in 0..6 {
            assert_eq!(post(&s.url, &event("T")).await, 201);
            tokio::time::sleep(std::time::Duration::from_millis(7)).await;
        }
        let (_, all) = get(&s.url, "/api/v1/events?order=asc&criteria=eventType+EQ+T").await;
        let times: Vec<i64> = all["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["timeStamp"].as_i64().unwrap())
            .collect();
        assert_eq!(times.len(), 6);
        let t = times[3];
        let ge = |v: &str| format!("criteria=eventType+EQ+T&criteria=timeStamp+GE+{v}");
        let enc = |v: &str| v.replace('+', "%2B").replace(':', "%3A");

        // With millis: the same boundary as the epoch millis.
        let iso = format_iso8601(t);
        assert_eq!(count(&s.url, &ge(&t.to_string())).await, 3);
        assert_eq!(count(&s.url, &ge(&enc(&iso))).await, 3, "{iso}");
        // Without millis, and with offsets: the whole second, however it is written.
        let second = t - t.rem_euclid(1000);
        let expect = times.iter().filter(|x| **x >= second).count() as i64;
        let z = format_iso8601(second).replace(".000Z", "Z");
        let plus = format_iso8601(second + 3_600_000).replace(".000Z", "+01:00");
        let minus = format_iso8601(second - 19_800_000).replace(".000Z", "-05:30");
        for v in [second.to_string(), z, plus, minus] {
            assert_eq!(count(&s.url, &ge(&enc(&v))).await, expect, "{v}");
            let (st, page) = get(&s.url, &format!("/api/v1/events?{}", ge(&enc(&v)))).await;
            assert_eq!((st, page["count"].as_i64()), (200, Some(expect)), "{v}");
        }
        // A date alone is its midnight UTC.
        let day = &format_iso8601(t)[..10];
        assert_eq!(count(&s.url, &ge(day)).await, 6);
        assert_eq!(
            count(&s.url, &format!("criteria=timeStamp+LT+{day}")).await,
            0
        );

        // A bad time is a 400 naming it, on both endpoints.
        for bad in [
            "2026-13-01",
            "yesterday",
            "2026-11-25T25%3A00%3A00Z",
            "12abc",
        ] {
            let shown = bad.replace("%3A", ":");
            for path in ["/api/v1/events", "/api/v1/events:count"] {
                bad_request(
                    &s.url,
                    &format!("{path}?criteria=timeStamp+GE+{bad}"),
                    &shown,
                )
                .await;
            }
        }
        s.stop();
    }
}

#[tokio::test]
async fn hostile_order_cursor_and_count_values_are_bound_or_rejected() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let s = start(d, &url, "qi", &[]);
        for _ in 0..5 {
            assert_eq!(post(&s.url, &event("I")).await, 201);
        }
        let total = count(&s.url, "").await;
        assert!(total >= 5);

        // Rejected, naming what is wrong.
        let drop = "%3B%20DROP%20TABLE%20auditrecorddata%3B--";
        for (path, needle) in [
            (format!("/api/v1/events?order=asc{drop}"), "order"),
            (format!("/api/v1/events?limit=1{drop}"), "limit"),
            (format!("/api/v1/events?cursor=%27{drop}"), "cursor"),
            (format!("/api/v1/events?sort=timestamp{drop}"), "sort"),
            (format!("/api/v1/events:count?order=asc{drop}"), "order"),
            ("/api/v1/events:count?limit=5".to_string(), "limit"),
            ("/api/v1/events:count?cursor=x".to_string(), "cursor"),
            (
                format!("/api/v1/events:count?criteria=eventType{drop}+EQ+x"),
                "unknown field",
            ),
            (
                "/api/v1/events:count?criteria=eventType+OR+1%3D1".to_string(),
                "unknown operator",
            ),
            (
                format!("/api/v1/events:count?criteria=sequenceNumber+GT+0{drop}"),
                "sequenceNumber",
            ),
        ] {
            bad_request(&s.url, &path, needle).await;
        }

        // Bound: the hostile text is just a value that matches nothing.
        for v in [
            "x'%20OR%20'1'%3D'1",
            "x%27%29%3B%20DELETE%20FROM%20auditrecorddata%3B--",
            "%25'%20OR%20nodeid%20LIKE%20'%25",
        ] {
            assert_eq!(
                count(&s.url, &format!("criteria=eventType+EQ+{v}")).await,
                0
            );
            assert_eq!(count(&s.url, &format!("criteria=nodeId+LIKE+{v}")).await, 0);
        }
        // A well-formed cursor carrying SQL in its node id: bound like any value. In desc
        // order every row of node `qi` sorts before ("qi" < "x..."), at the same time or not.
        for (order, node) in [
            ("desc", "x'); DELETE FROM auditrecorddata; --"),
            ("asc", "' OR 1=1 --"),
        ] {
            let c = Cursor {
                order: if order == "asc" {
                    Order::Asc
                } else {
                    Order::Desc
                },
                time_stamp: i64::MAX,
                node_id: node.into(),
                sequence_number: 0,
            }
            .encode();
            let (st, p) = get(
                &s.url,
                &format!("/api/v1/events?order={order}&cursor={c}&limit=100"),
            )
            .await;
            let expect = if order == "desc" { total } else { 0 };
            assert_eq!((st, p["count"].as_i64()), (200, Some(expect)), "{p}");
        }

        // The table is intact, and still verifies.
        assert_eq!(count(&s.url, "").await, total);
        let (st, p) = get(&s.url, "/api/v1/events?limit=100").await;
        assert_eq!((st, p["count"].as_i64()), (200, Some(total)), "{p}");
        assert!(
            p["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["verification"]["valid"] == true)
        );
        s.stop();
    }
}

#[tokio::test]
async fn failed_rows_fail_the_query_or_are_flagged() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let s = start(d, &url, "qv", &[]);
        for i in 0..6 {
            assert_eq!(post(&s.url, &event(&format!("V{i}"))).await, 201);
        }
        auditseal_e2e::exec(
            &url,
            "UPDATE auditrecorddata SET eventstatus = 'FAILURE' \
             WHERE eventtype IN ('V2', 'V4')",
        )
        .await;
        let seq_of = |t: &str| {
            let t = t.to_string();
            let url = url.clone();
            async move {
                auditseal_e2e::all_rows(&url)
                    .await
                    .into_iter()
                    .find(|r| r.event_type == t)
                    .unwrap()
                    .sequence_number
            }
        };
        let (s2, s4) = (seq_of("V2").await, seq_of("V4").await);

        // erroronverifyfail (the default): the first failing row in the order read is named.
        for (order, first) in [("desc", s4), ("asc", s2)] {
            let (st, e) = get(
                &s.url,
                &format!("/api/v1/events?order={order}&criteria=eventType+LIKE+V%25"),
            )
            .await;
            assert_eq!(st, 500, "{e}");
            assert_eq!(
                (e["error"].as_str(), e["sequenceNumber"].as_i64()),
                (Some("verification_failed"), Some(first)),
                "{e}"
            );
            assert_eq!(e["nodeId"], "qv");
        }
        // Rows that do not include a failing one still come back.
        let (st, p) = get(&s.url, "/api/v1/events?criteria=eventType+EQ+V3").await;
        assert_eq!((st, p["count"].as_i64()), (200, Some(1)), "{p}");
        // Counting does not read the rows: it still answers.
        assert_eq!(count(&s.url, "criteria=eventType+LIKE+V%25").await, 6);
        s.stop();

        // Without it, the rows come back and the bad ones are flagged, on every page.
        let config = dir.path().join("lenient.toml");
        std::fs::write(&config, "[protection]\nerror_on_verify_fail = false\n").unwrap();
        let s = start(d, &url, "qv", &["--config", config.to_str().unwrap()]);
        let mut flagged = Vec::new();
        let mut cursor = String::new();
        loop {
            let (st, p) = get(
                &s.url,
                &format!("/api/v1/events?order=asc&limit=4&criteria=eventType+LIKE+V%25{cursor}"),
            )
            .await;
            assert_eq!(st, 200, "{p}");
            for e in p["events"].as_array().unwrap() {
                let v = &e["verification"];
                if v["valid"] == false {
                    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{e}");
                    flagged.push(e["sequenceNumber"].as_i64().unwrap());
                } else {
                    assert_eq!(v, &json!({"valid": true}), "{e}");
                }
            }
            match p["nextCursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(flagged, [s2, s4]);
        s.stop();
    }
}
