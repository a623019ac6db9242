//! `POST /api/v1/verify` through the real server: the same report as `verifylog`, logged as a
//! LOG_VERIFY event whose status is the outcome (FAILURE when anything failed); node selection
//! with offsets; checkpoints given in the request; bad requests named. SQLite and PostgreSQL.

use auditseal_e2e::{BACKENDS, Server, all_rows, cli, exec, new_database, post_events};
use serde_json::{Value, json};

async fn verify(url: &str, body: &str) -> (u16, Value) {
    let r = auditseal_e2e::client_for(url)
        .post(format!("{url}/api/v1/verify"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn verify_endpoint_reports_and_logs_its_outcome() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let s =
            Server::start(&["--data-dir", d, "--database-url", &url, "--node-id", "v1"]).unwrap();
        post_events(&s, 5).await;

        let (st, body) = verify(&s.url, "").await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["outcome"], "SUCCESS", "{body}");
        assert_eq!(body["exitCode"], 0);
        // The 5 events after the first admin token's TOKEN_CREATE (row 0).
        assert_eq!(body["report"]["rows"], 6);
        assert_eq!(body["event"]["sequenceNumber"], 6);

        // The same verifier as the CLI: the same findings.
        exec(
            &url,
            "UPDATE auditrecorddata SET eventtype = 'X' WHERE sequencenumber = 2",
        )
        .await;
        let (st, body) = verify(&s.url, r#"{"nodes": ["v1"]}"#).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["outcome"], "FAILURE", "{body}");
        assert_eq!(body["exitCode"], 255);
        let failed = &body["report"]["nodes"][0]["failed"];
        assert_eq!(failed[0]["sequenceNumber"], 2, "{body}");
        let (code, out, _) = cli(&[
            "--data-dir",
            d,
            "--database-url",
            &url,
            "verifylog",
            "--all",
            "--json",
        ]);
        assert_eq!(code, 255);
        let cli_report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(cli_report["nodes"][0]["failed"], *failed);

        // Each run is a protected LOG_VERIFY row with its outcome.
        let logged: Vec<(String, String)> = all_rows(&url)
            .await
            .into_iter()
            .filter(|r| r.event_type == "LOG_VERIFY")
            .map(|r| (r.event_status, r.service))
            .collect();
        assert_eq!(
            logged,
            [
                ("SUCCESS".to_string(), "AUDITSEAL".to_string()),
                ("FAILURE".to_string(), "AUDITSEAL".to_string())
            ]
        );

        // From an offset past the changed row: clean again.
        let (st, body) = verify(&s.url, r#"{"nodes": ["v1:3"]}"#).await;
        assert_eq!(
            (st, body["outcome"].clone()),
            (200, json!("SUCCESS")),
            "{body}"
        );
        assert_eq!(body["report"]["nodes"][0]["offset"], 3);

        // Bad requests change nothing and name what is wrong.
        for (req, needle) in [
            (r#"{"nodez": []}"#, "nodez"),
            (r#"{"nodes": ["v1:x"]}"#, "offset"),
            (r#"{"nodes": 5}"#, "nodes"),
            ("not json", "invalid verify request"),
        ] {
            let (st, body) = verify(&s.url, req).await;
            assert_eq!(st, 400, "{req}: {body}");
            assert!(
                body["message"].as_str().unwrap().contains(needle),
                "{req}: {body}"
            );
        }
        let runs = all_rows(&url)
            .await
            .iter()
            .filter(|r| r.event_type == "LOG_VERIFY")
            .count();
        assert_eq!(runs, 3);
        s.stop();
    }
}
