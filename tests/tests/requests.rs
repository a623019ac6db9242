//! Requests the server must refuse with 400 and a clear message, and not half-read: a body with
//! data after its JSON value; NUL characters and a dangling LIKE escape in text that reaches the
//! database (the same answer on SQLite and PostgreSQL, not PostgreSQL's 500). `HEAD` on the
//! export answers its headers without making, signing or logging an export.

use auditseal_core::store::{Cursor, Order};
use auditseal_e2e::{BACKENDS, Backend, Server, event, new_database};
use serde_json::{Value, json};

fn start(backend_url: Option<&str>, dir: &std::path::Path) -> Server {
    let d = dir.to_str().unwrap();
    let mut args = vec!["--data-dir", d, "--node-id", "n1"];
    if let Some(url) = backend_url {
        args.extend(["--database-url", url]);
    }
    Server::start(&args).unwrap()
}

/// A server on each backend, with its temp dir kept alive.
async fn servers() -> Vec<(Backend, Server, tempfile::TempDir)> {
    let mut out = Vec::new();
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let url = new_database(backend, dir.path()).await;
        let s = start(Some(&url), dir.path());
        out.push((backend, s, dir));
    }
    out
}

/// Status and JSON body (Null when none) of a request.
async fn answer(r: reqwest::RequestBuilder) -> (u16, Value) {
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn count_all(s: &Server) -> i64 {
    let (st, v) = answer(s.client().get(format!("{}/api/v1/events:count", s.url))).await;
    assert_eq!(st, 200, "{v}");
    v["count"].as_i64().unwrap()
}

#[tokio::test]
async fn a_body_with_data_after_its_json_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(None, dir.path());
    let c = s.client();
    let before = count_all(&s).await;
    let ev = event("PROCESS").to_string();
    let post = |path: &str, body: String, ctype: &str| {
        c.post(format!("{}{path}", s.url))
            .header("content-type", ctype)
            .body(body)
    };
    let json = "application/json";
    for (path, body, ctype) in [
        ("/api/v1/events", format!("{ev}xyz"), json),
        ("/api/v1/events", format!("{ev}{ev}"), json),
        ("/api/v1/events", format!("{ev} 5"), json),
        ("/api/v1/events:batch", format!("[{ev}]x"), json),
        (
            "/api/v1/events:batch",
            format!("{ev}\n{ev}{ev}\n"),
            "application/x-ndjson",
        ),
        (
            "/api/v1/tokens",
            r#"{"name":"late","role":"auditor"}{"name":"other","role":"admin"}"#.into(),
            json,
        ),
        ("/api/v1/verify", "{}garbage".into(), json),
    ] {
        let (st, v) = answer(post(path, body.clone(), ctype)).await;
        assert_eq!(st, 400, "{path} {body:.80}: {v}");
        let text = v.to_string();
        assert!(
            text.contains("after the JSON value") || text.contains("trailing characters"),
            "{path}: {v}"
        );
    }
    // Nothing was written (no event, no token and so no TOKEN_CREATE, no LOG_VERIFY).
    assert_eq!(count_all(&s).await, before);
    // White space after the value is fine.
    let (st, v) = answer(post("/api/v1/events", format!("{ev} \r\n"), json)).await;
    assert_eq!(st, 201, "{v}");
}

/// NUL in any text criterion, cursor, node name or key that would reach SQL, and a LIKE pattern
/// ending in a lone backslash: 400 naming the problem on both databases (PostgreSQL answered
/// 500 `database_error`), or 404 for a key no row can have. `\` escapes in LIKE on both.
#[tokio::test]
async fn nul_and_a_dangling_like_escape_are_400_on_both_databases() {
    for (backend, s, _dir) in servers().await {
        let c = s.client();
        for id in ["100%", "1000", "a\\b"] {
            let mut e = event("PROCESS");
            e["customId"] = json!(id);
            let (st, v) = answer(c.post(format!("{}/api/v1/events", s.url)).json(&e)).await;
            assert_eq!(st, 201, "{backend:?}: {v}");
        }
        let get = |path: String| c.get(format!("{}{path}", s.url));
        let nul_cursor = Cursor {
            order: Order::Desc,
            time_stamp: 1,
            node_id: "n1\0".into(),
            sequence_number: 1,
        }
        .encode();
        for (path, needle) in [
            (
                "/api/v1/events?criteria=customId+EQ+a%00b".to_string(),
                "NUL",
            ),
            ("/api/v1/events:count?criteria=module+NEQ+%00".into(), "NUL"),
            (
                "/api/v1/export?format=csv&criteria=customId+LIKE+%25%00".into(),
                "NUL",
            ),
            (
                "/api/v1/events/stream?criteria=service+EQ+%00".into(),
                "NUL",
            ),
            (
                "/api/v1/events?criteria=customId+LIKE+abc%5C".into(),
                "backslash",
            ),
            (
                "/api/v1/events:count?criteria=customId+LIKE+%5C%5C%5C".into(),
                "backslash",
            ),
            (
                "/api/v1/export?format=tsv&criteria=customId+LIKE+a%5C".into(),
                "backslash",
            ),
            (format!("/api/v1/events?cursor={nul_cursor}"), "cursor"),
        ] {
            let (st, v) = answer(get(path.clone())).await;
            assert_eq!(st, 400, "{backend:?} {path}: {v}");
            let msg = v["message"].as_str().unwrap_or_default();
            assert!(msg.contains(needle), "{backend:?} {path}: {msg}");
        }
        // A follower resuming from a position naming a node with NUL.
        let (st, v) =
            answer(get("/api/v1/events/stream".into()).header("last-event-id", "n1%00=3")).await;
        assert_eq!(st, 400, "{backend:?}: {v}");
        let (st, v) = answer(
            c.post(format!("{}/api/v1/verify", s.url))
                .json(&json!({"nodes": ["n1\u{0}"]})),
        )
        .await;
        assert_eq!(st, 400, "{backend:?}: {v}");
        assert!(v["message"].as_str().unwrap().contains("NUL"), "{v}");
        // Keys no row or token can have.
        let (st, v) = answer(get("/api/v1/events/a%00b".into())).await;
        assert_eq!(st, 404, "{backend:?}: {v}");
        let (st, v) = answer(c.delete(format!("{}/api/v1/tokens/x%00", s.url))).await;
        assert_eq!(st, 404, "{backend:?}: {v}");

        // `\` escapes the next character in LIKE, alike on both databases.
        let count = async |criteria: &str| {
            let (st, v) = answer(get(format!("/api/v1/events:count?criteria={criteria}"))).await;
            assert_eq!(st, 200, "{backend:?} {criteria}: {v}");
            v["count"].as_i64().unwrap()
        };
        assert_eq!(count("customId+LIKE+100%25").await, 2, "{backend:?}");
        assert_eq!(count("customId+LIKE+100%5C%25").await, 1, "{backend:?}");
        assert_eq!(count("customId+LIKE+a%5C%5Cb").await, 1, "{backend:?}");
        assert_eq!(count("customId+EQ+a%5Cb").await, 1, "{backend:?}");
    }
}

/// `HEAD /api/v1/export` answers the export's headers and makes nothing: no LOG_EXPORT row.
#[tokio::test]
async fn head_on_the_export_makes_and_logs_nothing() {
    for (backend, s, _dir) in servers().await {
        let c = s.client();
        let logged = async || {
            let (st, v) = answer(c.get(format!(
                "{}/api/v1/events:count?criteria=eventType+EQ+LOG_EXPORT",
                s.url
            )))
            .await;
            assert_eq!(st, 200, "{v}");
            v["count"].as_i64().unwrap()
        };
        let before = count_all(&s).await;
        let r = c
            .head(format!("{}/api/v1/export?format=csv", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{backend:?}");
        assert_eq!(
            r.headers()["content-type"],
            "text/csv; charset=utf-8; header=present"
        );
        assert!(r.headers().get("x-auditseal-signature").is_none());
        assert!(r.bytes().await.unwrap().is_empty());
        // Bad parameters are refused as on GET.
        let r = c
            .head(format!("{}/api/v1/export?format=xml", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{backend:?}");
        assert_eq!(logged().await, 0, "{backend:?}: HEAD logged an export");
        assert_eq!(count_all(&s).await, before, "{backend:?}");
        // GET still makes, signs and logs one.
        let r = c
            .get(format!("{}/api/v1/export?format=csv", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{backend:?}");
        assert!(r.headers().get("x-auditseal-signature").is_some());
        assert_eq!(logged().await, 1, "{backend:?}");
    }
}
