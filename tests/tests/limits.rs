//! Issue 11.6: amplification. One 1 MiB event made of empty JSON arrays was stored as 27.6 MB of
//! XML; now the stored size of an event is limited (`server.max_event_bytes`, checked on the
//! encoded row) and a larger one is refused with 413 naming the limit, nothing written.

use auditseal_e2e::{BACKENDS, Server, all_rows, new_database};
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
