//! Live follow (`GET /api/v1/events/stream`) through the real server: events arrive as they are
//! committed, filtered by criteria; a follower that disconnects and resumes with Last-Event-ID
//! misses nothing and gets nothing twice; the fourth follower gets 429; a stop ends the streams.
//! SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use auditseal_e2e::{BACKENDS, Server, event, new_database};
use serde_json::Value;

/// A minimal SSE reader: (id, event, data) of each event, comments skipped.
struct Follower {
    resp: reqwest::Response,
    buf: String,
}

impl Follower {
    async fn connect(
        url: &str,
        query: &str,
        last_id: Option<&str>,
    ) -> Result<Follower, (u16, Value)> {
        let mut req =
            auditseal_e2e::client_for(url).get(format!("{url}/api/v1/events/stream{query}"));
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        if resp.status().as_u16() != 200 {
            let st = resp.status().as_u16();
            return Err((st, resp.json().await.unwrap_or(Value::Null)));
        }
        Ok(Follower {
            resp,
            buf: String::new(),
        })
    }

    /// The next event, or None after `wait` without one.
    async fn next(&mut self, wait: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut data, mut kind) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim_start().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim_start().to_string();
                    }
                }
                if kind == "audit" {
                    return Some((id, serde_json::from_str(&data).unwrap()));
                }
                continue;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
}

async fn post(url: &str, event_type: &str) -> i64 {
    let r = auditseal_e2e::client_for(url)
        .post(format!("{url}/api/v1/events"))
        .json(&event(event_type))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.json::<Value>().await.unwrap()["sequenceNumber"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn followers_get_every_event_once_and_resume_without_gaps() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let s =
            Server::start(&["--data-dir", d, "--database-url", &url, "--node-id", "f1"]).unwrap();
        // Before anyone follows: not sent. (The node's first rows may be the server's own, such
        // as the first admin token's TOKEN_CREATE: numbers count from this one.)
        let b = post(&s.url, "BEFORE").await;

        let mut all = Follower::connect(&s.url, "", None).await.unwrap();
        let mut only = Follower::connect(&s.url, "?criteria=eventType+EQ+KEEP", None)
            .await
            .unwrap();
        for i in 0..6 {
            post(&s.url, if i % 2 == 0 { "KEEP" } else { "SKIP" }).await;
        }
        let mut seen = Vec::new();
        let mut last_id = String::new();
        for _ in 0..3 {
            let (id, row) = all.next(Duration::from_secs(10)).await.expect("an event");
            assert_eq!(row["verification"]["valid"], true, "{row}");
            seen.push(row["sequenceNumber"].as_i64().unwrap());
            last_id = id;
        }
        assert_eq!(seen, [b + 1, b + 2, b + 3]);
        assert_eq!(last_id, format!("f1={}", b + 3));
        for want in [b + 1, b + 3, b + 5] {
            let (_, row) = only
                .next(Duration::from_secs(10))
                .await
                .expect("a KEEP event");
            assert_eq!(
                (row["eventType"].clone(), row["sequenceNumber"].as_i64()),
                ("KEEP".into(), Some(want))
            );
        }
        assert!(
            only.next(Duration::from_millis(800)).await.is_none(),
            "SKIP rows are filtered"
        );

        // Three followers at most (the default): a fourth gets 429.
        let third = Follower::connect(&s.url, "", None).await.unwrap();
        let (st, body) = Follower::connect(&s.url, "", None)
            .await
            .err()
            .expect("429");
        assert_eq!(
            (st, body["error"].clone()),
            (429, "too_many_followers".into()),
            "{body}"
        );

        // Disconnect after b+3, miss some events, resume: exactly b+4.. arrive.
        drop(all);
        drop(third);
        for _ in 0..4 {
            post(&s.url, "LATER").await;
        }
        let mut again = Follower::connect(&s.url, "", Some(&last_id)).await.unwrap();
        let mut resumed = Vec::new();
        while let Some((_, row)) = again.next(Duration::from_millis(1500)).await {
            resumed.push(row["sequenceNumber"].as_i64().unwrap());
        }
        assert_eq!(resumed, (b + 4..=b + 10).collect::<Vec<_>>());

        // Bad requests are named.
        for (q, id, needle) in [
            ("?limit=5", None, "unknown query parameter"),
            ("?criteria=bogus+EQ+1", None, "bogus"),
            ("", Some("f1=x"), "Last-Event-ID"),
        ] {
            let (st, body) = Follower::connect(&s.url, q, id).await.err().expect("400");
            assert_eq!(st, 400, "{body}");
            assert!(body["message"].as_str().unwrap().contains(needle), "{body}");
        }

        // Stopping the server ends the open streams instead of waiting for them.
        let t = Instant::now();
        s.stop();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "stop took {:?}",
            t.elapsed()
        );
        drop((only, again));
    }
}
