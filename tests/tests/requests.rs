//! Requests the server must refuse with 400 and a clear message, and not half-read: a body with
//! data after its JSON value.

use auditseal_e2e::{Server, event};
use serde_json::Value;

fn start(backend_url: Option<&str>, dir: &std::path::Path) -> Server {
    let d = dir.to_str().unwrap();
    let mut args = vec!["--data-dir", d, "--node-id", "n1"];
    if let Some(url) = backend_url {
        args.extend(["--database-url", url]);
    }
    Server::start(&args).unwrap()
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
