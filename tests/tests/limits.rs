//! Issue 11.6: amplification. One 1 MiB event made of empty JSON arrays was stored as 27.6 MB of
//! XML; now the stored size of an event is limited (`server.max_event_bytes`, checked on the
//! encoded row) and a larger one is refused with 413 naming the limit, nothing written.

use auditseal_e2e::{BACKENDS, Server, all_rows, exec, new_database};
use serde_json::{Value, json};

/// An event whose additionalDetails are `n` empty arrays: a few bytes of JSON each, an XML
/// element each once stored.
fn amplifying(n: usize) -> Value {
    let mut e = auditseal_e2e::event("PROCESS");
    e["additionalDetails"] = json!({ "a": vec![json!([]); n] });
    e
}

#[tokio::test]
async fn events_too_large_as_stored_are_refused_with_the_limit() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let cfg = dir.path().join("auditseal.toml");
        std::fs::write(&cfg, "[server]\nmax_event_bytes = 100000\n").unwrap();
        let s = Server::start(&[
            "--data-dir",
            d,
            "--database-url",
            &url,
            "--config",
            cfg.to_str().unwrap(),
        ])
        .unwrap();
        let before = all_rows(&url).await.len();
        let c = s.client();
        // 20,000 empty arrays: 60 KB of JSON, well under the body limit, far over 100,000 bytes
        // as XML.
        let big = amplifying(20_000);
        assert!(big.to_string().len() < 100_000);
        let r = c
            .post(format!("{}/api/v1/events", s.url))
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 413, "{backend:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "payload_too_large");
        assert!(
            body["message"].as_str().unwrap().contains("at most 100000"),
            "{body}"
        );

        // In a bulk request, the event is named; and many events each under the limit may not
        // together store more than 16 times it.
        let bulk = json!([auditseal_e2e::event("PROCESS"), big]);
        let r = c
            .post(format!("{}/api/v1/events:batch", s.url))
            .json(&bulk)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 413, "{backend:?}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("event 1 takes"),
            "{body}"
        );
        let many = json!(vec![amplifying(1_000); 25]);
        let r = c
            .post(format!("{}/api/v1/events:batch", s.url))
            .json(&many)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 413, "{backend:?}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("at most 1600000 in one request"),
            "{body}"
        );
        assert_eq!(
            all_rows(&url).await.len(),
            before,
            "{backend:?}: nothing written"
        );

        // An event under the limit is stored.
        let r = c
            .post(format!("{}/api/v1/events", s.url))
            .json(&amplifying(1_000))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{backend:?}");
    }
}

/// Peak resident memory (VmHWM) of a running process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024
}

/// Issue 11.6: readers are bounded by bytes as well as rows. Rows far beyond any limit, written
/// straight into the table (as a SignServer or a database administrator could), are read a few
/// at a time: verifylog, and the server with its checkpointer, a paged query, an export and a
/// live follow of them, stay under 150 MiB of peak resident memory. 20 rows of 8 MiB here (a reader that took
/// its chunks of 5,000 rows whole would hold 160 MiB of them at once);
/// AUDITSEAL_TEST_HUGE_ROWS=100x20 gives the 100 rows of 20 MiB.
#[tokio::test]
async fn readers_stay_flat_over_rows_far_beyond_the_limit() {
    let (n, mib) = std::env::var("AUDITSEAL_TEST_HUGE_ROWS")
        .ok()
        .and_then(|v| {
            let (a, b) = v.split_once('x')?;
            Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?))
        })
        .unwrap_or((20, 8));
    let bytes = mib << 20;
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        // The schema first (a server creates it), then the rows, straight into the table.
        let s = Server::start(&[
            "--data-dir",
            d,
            "--database-url",
            &url,
            "--node-id",
            "small",
        ])
        .unwrap();
        drop(s);
        let fill = match backend {
            auditseal_e2e::Backend::Postgres => format!(
                "INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", eventtype, \
                 eventstatus, authtoken, service, module, additionaldetails, rowversion) \
                 SELECT md5(i::text), 'big', i, 1700000000000 + i, 'PROCESS', 'SUCCESS', 'x', \
                 'SIGNSERVER', 'WORKER', repeat('x', {bytes}), 0 FROM generate_series(0, {}) i",
                n - 1
            ),
            auditseal_e2e::Backend::Sqlite => format!(
                "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < {}) \
                 INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", eventtype, \
                 eventstatus, authtoken, service, module, additionaldetails, rowversion) \
                 SELECT printf('%032d', n), 'big', n, 1700000000000 + n, 'PROCESS', 'SUCCESS', \
                 'x', 'SIGNSERVER', 'WORKER', hex(zeroblob({})), 0 FROM i",
                n - 1,
                bytes / 2
            ),
        };
        exec(&url, &fill).await;

        // verifylog reads every row (they are unsigned, so it reports each).
        let out = std::process::Command::new("/usr/bin/time")
            .args(["-f", "maxrss_kb=%M"])
            .arg(auditseal_e2e::bin_dir().join("auditseal-db"))
            .args([
                "verifylog",
                "--node",
                "big",
                "--quiet",
                "--database-url",
                &url,
                "--data-dir",
                d,
            ])
            .output()
            .expect("run /usr/bin/time (Debian package time)");
        let err = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // Every row was read (none is protected: written straight into the table).
        assert!(
            stdout.contains(&format!(
                "verified 0 rows from offset 0 (sequence 0..{}), {n} rows failed",
                n - 1
            )),
            "{backend:?}: {stdout}{err}"
        );
        let verify_mib = err
            .lines()
            .find_map(|l| l.strip_prefix("maxrss_kb="))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
            / 1024;

        // The checkpointer of a server writing as that node folds every row into its head.
        let cfg = dir.path().join("cp.toml");
        // The rows are unsigned: queries flag them instead of failing.
        std::fs::write(
            &cfg,
            "[checkpoint]\ninterval_secs = 1\n\n[protection]\nerror_on_verify_fail = false\n\
             [[protection.keys]]\nkind = \"software\"\nkeyid = 1\n",
        )
        .unwrap();
        let s = Server::start(&[
            "--data-dir",
            d,
            "--database-url",
            &url,
            "--node-id",
            "big",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let (_, list, _) = auditseal_e2e::cli(&[
                "checkpoint",
                "list",
                "--database-url",
                &url,
                "--data-dir",
                d,
            ]);
            if list.contains("big") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{backend:?}: no checkpoint: {}",
                s.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        // Queries and an export of those rows, page by page.
        let c = s.client();
        let mut cursor: Option<String> = None;
        let mut seen = 0;
        let mut pages = 0;
        loop {
            let mut url = format!(
                "{}/api/v1/events?criteria=nodeId%20EQ%20big&order=asc&limit=1000",
                s.url
            );
            if let Some(k) = &cursor {
                url.push_str(&format!("&cursor={k}"));
            }
            let page: Value = c.get(url).send().await.unwrap().json().await.unwrap();
            seen += page["count"].as_i64().unwrap_or_else(|| panic!("{page}"));
            pages += 1;
            match page["nextCursor"].as_str() {
                Some(k) => cursor = Some(k.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, n, "{backend:?}: every row, in {pages} pages");
        assert!(
            pages > 1,
            "{backend:?}: the read budget splits the rows into pages"
        );
        let export = c
            .get(format!(
                "{}/api/v1/export?criteria=nodeId%20EQ%20big&format=ndjson",
                s.url
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(export.status().as_u16(), 200, "{backend:?}");
        let mut exported = 0usize;
        let mut export = export;
        while let Some(chunk) = export.chunk().await.unwrap() {
            exported += chunk.iter().filter(|b| **b == b'\n').count();
        }
        assert!(
            exported as i64 > n,
            "{backend:?}: {exported} lines exported"
        );
        // A live follow from the start of the node (its id names another node, so every row
        // of this one comes), until it has sent them all.
        let mut follow = c
            .get(format!(
                "{}/api/v1/events/stream?criteria=nodeId%20EQ%20big",
                s.url
            ))
            .header("Last-Event-ID", "another-node=0")
            .send()
            .await
            .unwrap();
        assert_eq!(follow.status().as_u16(), 200, "{backend:?}");
        // Counts whole "event: audit" lines. Of the line in progress only its first bytes are
        // kept (enough to compare): a data line is a whole row of JSON, and keeping (or
        // rescanning) it for every chunk made this loop quadratic in the row's size.
        const EVENT_LINE: &[u8] = b"event: audit";
        let (mut followed, mut line) = (0i64, Vec::with_capacity(EVENT_LINE.len() + 1));
        while followed < n {
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(120), follow.chunk())
                .await
                .unwrap_or_else(|_| panic!("{backend:?}: the follow stalled at {followed} rows"))
                .unwrap()
                .unwrap_or_else(|| panic!("{backend:?}: the follow ended at {followed} rows"));
            let mut parts = chunk.split(|b| *b == b'\n').peekable();
            while let Some(part) = parts.next() {
                let room = (EVENT_LINE.len() + 1).saturating_sub(line.len());
                line.extend_from_slice(&part[..part.len().min(room)]);
                if parts.peek().is_some() {
                    // The line ended within this chunk.
                    followed += i64::from(line == EVENT_LINE);
                    line.clear();
                }
            }
        }
        drop(follow);
        let server_mib = peak_rss_mib(s.pid());
        println!(
            "{backend:?}: {n} rows of {mib} MiB: verifylog peak {verify_mib} MiB, server with \
             its checkpointer, queries, an export and a follow peak {server_mib} MiB"
        );
        assert!(
            verify_mib < 150,
            "{backend:?}: verifylog peak {verify_mib} MiB"
        );
        assert!(
            server_mib < 150,
            "{backend:?}: server peak {server_mib} MiB"
        );
    }
}

/// `Store::read_node` keeps every chunk within the read budget (a single larger row excepted)
/// and loses or repeats no row, on both databases, also where the rows grow from one chunk to
/// the next: on PostgreSQL the rows are counted as they arrive, and a read whose LIMIT (sized
/// from the rows before) would overrun the budget is stopped and its connection closed; the
/// reads after it still work.
#[tokio::test]
async fn node_chunks_keep_the_read_budget_and_every_row_as_rows_grow() {
    use auditseal_core::store::{Chunk, READ_BUDGET_BYTES};
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let url = new_database(backend, dir.path()).await;
        let store = auditseal_core::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        // 60 rows of 1 KiB, 60 of 400 KiB, 60 of 1 KiB: the first read fits 20 large rows
        // after the small ones, the ones after it start from a hint the rows then outgrow.
        let size = |i: i64| {
            if (60..120).contains(&i) {
                400 << 10
            } else {
                1 << 10
            }
        };
        for i in 0..180i64 {
            exec(
                &url,
                &format!(
                    "INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", \
                     eventtype, eventstatus, authtoken, service, module, additionaldetails, \
                     rowversion) VALUES ('pk-{i:04}', 'grow', {i}, {}, 'PROCESS', 'SUCCESS', \
                     'x', 'SIGNSERVER', 'WORKER', '{}', 0)",
                    1_700_000_000_000i64 + i,
                    "x".repeat(size(i))
                ),
            )
            .await;
        }
        let (mut seen, mut after, mut chunks) = (Vec::new(), None, 0);
        loop {
            let rows = store
                .read_node(Chunk::new("grow", 0, after.clone(), 5000))
                .await
                .unwrap();
            let Some(last) = rows.last() else { break };
            chunks += 1;
            let bytes: usize = rows.iter().map(|r| r.stored_bytes()).sum();
            assert!(
                rows.len() == 1 || bytes as i64 <= READ_BUDGET_BYTES,
                "{backend:?}: chunk {chunks} holds {} rows, {bytes} bytes",
                rows.len()
            );
            after = Some((last.sequence_number, last.pk.clone()));
            seen.extend(rows.iter().map(|r| r.sequence_number));
        }
        assert_eq!(
            seen,
            (0..180).collect::<Vec<_>>(),
            "{backend:?}: every row once, in order"
        );
        assert!(
            chunks >= 3,
            "{backend:?}: 24 MiB of rows in {chunks} chunks"
        );
        // The store answers as before after any read it stopped.
        assert_eq!(
            store
                .read_node(Chunk::new("grow", 0, None, 1))
                .await
                .unwrap()[0]
                .pk,
            "pk-0000",
            "{backend:?}"
        );
    }
}

/// A node's chunks step over gaps wider than a chunk (rows archived or deleted): on PostgreSQL
/// each read covers a bounded range of sequence numbers, and a range without rows must not look
/// like the end of the node while rows follow it. Every row comes once, in order, and only the
/// read after the last row is empty, also when the first read starts inside a gap.
#[tokio::test]
async fn node_chunks_step_over_gaps_wider_than_a_chunk() {
    use auditseal_core::store::Chunk;
    let numbers: Vec<i64> = (0..5)
        .chain(1000..1004)
        .chain([100_000, 100_001, i64::MAX - 1, i64::MAX])
        .collect();
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let url = new_database(backend, dir.path()).await;
        let store = auditseal_core::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        for i in &numbers {
            exec(
                &url,
                &format!(
                    "INSERT INTO auditrecorddata (pk, nodeid, sequencenumber, \"timestamp\", \
                     eventtype, eventstatus, authtoken, service, module, rowversion) VALUES \
                     ('pk-{i}', 'gaps', {i}, 1700000000000, 'PROCESS', 'SUCCESS', 'x', \
                     'SIGNSERVER', 'WORKER', 0)"
                ),
            )
            .await;
        }
        for (from, limit) in [(0, 3), (10, 3), (0, 1), (5, 100)] {
            let (mut seen, mut after) = (Vec::new(), None);
            loop {
                let rows = store
                    .read_node(Chunk::new("gaps", from, after.clone(), limit))
                    .await
                    .unwrap();
                let Some(last) = rows.last() else { break };
                assert!(rows.len() as i64 <= limit, "{backend:?}");
                after = Some((last.sequence_number, last.pk.clone()));
                seen.extend(rows.iter().map(|r| r.sequence_number));
            }
            let expected: Vec<i64> = numbers.iter().copied().filter(|n| *n >= from).collect();
            assert_eq!(
                seen, expected,
                "{backend:?}: from {from}, chunks of {limit}"
            );
        }
    }
}
