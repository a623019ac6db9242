//! Authentication and roles on the real server over real HTTP: every operation of the OpenAPI
//! document against every kind of caller (none, ingest, auditor, admin), tokens made with
//! `auditseal-db token create`, revocation, the first-start admin token, the submitter recorded
//! inside the protected row, and failed authentications counted and logged without the secret.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use auditseal_e2e::{BACKENDS, Backend, Server, all_rows, cli, client_with, event, new_database};
use serde_json::{Value, json};

/// The roles the issue gives each operation, written down independently of the server and of
/// its OpenAPI document: ingest adds events; auditor queries, verifies, exports and follows;
/// admin does everything; `/healthz` needs nothing. A new operation must be added here.
const EXPECTED: &[(&str, &[&str])] = &[
    ("healthz", &[]),
    ("livez", &[]),
    ("readyz", &[]),
    ("metrics", &["auditor", "admin"]),
    ("createEvent", &["ingest", "admin"]),
    ("createEvents", &["ingest", "admin"]),
    ("listEvents", &["auditor", "admin"]),
    ("countEvents", &["auditor", "admin"]),
    ("getEvent", &["auditor", "admin"]),
    ("getEventProof", &["auditor", "admin"]),
    ("followEvents", &["auditor", "admin"]),
    ("exportEvents", &["auditor", "admin"]),
    ("verifyStatus", &["auditor", "admin"]),
    ("verifyLog", &["auditor", "admin"]),
    ("listKeys", &["auditor", "admin"]),
    ("openapi", &["ingest", "auditor", "admin"]),
    ("whoami", &["ingest", "auditor", "admin"]),
    // The web console's static files: no data, so no credentials (docs/UI.md).
    ("console", &[]),
    ("consoleRedirect", &[]),
    ("consoleFile", &[]),
    ("listTokens", &["admin"]),
    ("createToken", &["admin"]),
    ("revokeToken", &["admin"]),
];

/// Creates a token with the CLI and returns it: the last line of the output, alone.
fn create_token(db_args: &[&str], name: &str, role: &str) -> String {
    let mut args = vec!["token", "create", "--name", name, "--role", role];
    args.extend_from_slice(db_args);
    let (code, out, err) = cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    let last = out.lines().last().expect("output").to_string();
    assert!(
        last.starts_with("ast_") && last.len() == 47 && !last.contains(' '),
        "{out}"
    );
    last
}

struct Caller {
    label: &'static str,
    client: reqwest::Client,
}

async fn send(
    c: &reqwest::Client,
    method: &str,
    url: String,
    body: Option<Value>,
) -> reqwest::Response {
    let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = c.request(m, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn health(s: &Server) -> Value {
    reqwest::get(format!("{}/healthz", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_operation_answers_exactly_the_roles_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let s = Server::start(&["--data-dir", d, "--node-id", "r1"]).unwrap();

    // The first start made an admin token only its owner can read, and said where.
    let file = dir.path().join("admin.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), s.token);
    assert!(
        s.log().contains(file.to_str().unwrap()),
        "the log must name {}: {}",
        file.display(),
        s.log()
    );

    let db = ["--data-dir", d];
    let ingest = create_token(&db, "signer-1", "ingest");
    let auditor = create_token(&db, "auditor-1", "auditor");
    let callers = [
        Caller {
            label: "none",
            client: reqwest::Client::new(),
        },
        Caller {
            label: "ingest",
            client: client_with(&ingest),
        },
        Caller {
            label: "auditor",
            client: client_with(&auditor),
        },
        Caller {
            label: "admin",
            client: s.client(),
        },
    ];
    let admin = &callers[3].client;

    // An event to fetch by pk.
    let r = send(
        admin,
        "post",
        format!("{}/api/v1/events", s.url),
        Some(event("PROCESS")),
    )
    .await;
    assert_eq!(r.status().as_u16(), 201);
    let pk = r.json::<Value>().await.unwrap()["pk"]
        .as_str()
        .unwrap()
        .to_string();

    let doc: Value = send(admin, "get", format!("{}/api/v1/openapi.json", s.url), None)
        .await
        .json()
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut revocable = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            seen.push(id.to_string());
            let (_, allowed) = EXPECTED
                .iter()
                .find(|(e, _)| *e == id)
                .unwrap_or_else(|| panic!("{id}: add it to EXPECTED with the roles it needs"));
            // The document states the same roles; an open route (no roles) needs no credentials.
            if allowed.is_empty() {
                assert_eq!(op["security"], json!([]), "{id}");
            } else {
                assert_eq!(op["x-auditseal-roles"], json!(allowed), "{id}");
            }
            for caller in &callers {
                let mut url = format!(
                    "{}{}",
                    s.url,
                    path.replace("{pk}", &pk).replace("{file}", "app.js")
                );
                if path.contains("{name}") {
                    // Each permitted call revokes a token of its own.
                    revocable += 1;
                    let name = format!("spare-{revocable}");
                    create_token(&db, &name, "ingest");
                    url = url.replace("{name}", &name);
                }
                if id == "exportEvents" {
                    url.push_str("?format=ndjson");
                }
                let body = match id {
                    "createEvent" => Some(event("PROCESS")),
                    "createEvents" => Some(json!([event("PROCESS"), event("PROCESS")])),
                    "verifyLog" => Some(json!({})),
                    "createToken" => {
                        revocable += 1;
                        Some(json!({"name": format!("made-{revocable}"), "role": "auditor"}))
                    }
                    _ => None,
                };
                let resp = send(&caller.client, method, url.clone(), body).await;
                let status = resp.status().as_u16();
                let www = resp.headers().get("www-authenticate").cloned();
                let text = if id == "followEvents" && status == 200 {
                    String::new() // the stream never ends: its status is the answer
                } else {
                    resp.text().await.unwrap_or_default()
                };
                let what = format!("{} {method} {path} ({id}): {status} {text}", caller.label);
                if allowed.is_empty() {
                    assert_eq!(status, 200, "{what}");
                } else if caller.label == "none" {
                    assert_eq!(status, 401, "{what}");
                    assert_eq!(www.as_ref().and_then(|v| v.to_str().ok()), Some("Bearer"));
                    assert!(text.contains("\"unauthorized\""), "{what}");
                } else if allowed.contains(&caller.label) {
                    assert!((200..300).contains(&status), "{what}");
                } else {
                    assert_eq!(status, 403, "{what}");
                    assert!(text.contains("\"forbidden\""), "{what}");
                }
            }
        }
    }
    let mut expected: Vec<_> = EXPECTED.iter().map(|(e, _)| e.to_string()).collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "the document's operations");

    // What is not an endpoint needs credentials too.
    assert_eq!(
        send(&callers[0].client, "get", format!("{}/nope", s.url), None)
            .await
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        send(admin, "get", format!("{}/nope", s.url), None)
            .await
            .status()
            .as_u16(),
        404
    );

    // The server's own events name whoever asked for them.
    let page: Value = send(
        admin,
        "get",
        format!(
            "{}/api/v1/events?limit=1000&criteria=service%20EQ%20AUDITSEAL",
            s.url
        ),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let own: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["nodeId"] == "r1")
        .collect();
    // The first admin token's creation, by the server itself at its first start.
    let first: Vec<_> = own
        .iter()
        .filter(|e| e["authToken"] == "auditseal-server")
        .collect();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["eventType"], "TOKEN_CREATE");
    assert_eq!(first[0]["details"]["name"], "admin");
    let mut who: Vec<(String, String)> = own
        .into_iter()
        .filter(|e| e["authToken"] != "auditseal-server")
        .map(|e| {
            assert_eq!(e["details"]["auditseal.submitter"], e["authToken"], "{e}");
            (
                e["eventType"].as_str().unwrap().to_string(),
                e["authToken"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    who.sort();
    who.dedup();
    for t in ["LOG_VERIFY", "LOG_EXPORT"] {
        let by: Vec<_> = who.iter().filter(|(e, _)| e == t).map(|(_, a)| a).collect();
        assert_eq!(by, ["token:admin", "token:auditor-1"], "{t}: {who:?}");
    }
    for t in ["TOKEN_CREATE", "TOKEN_REVOKE"] {
        let by: Vec<_> = who.iter().filter(|(e, _)| e == t).map(|(_, a)| a).collect();
        assert_eq!(by, ["token:admin"], "{t}: {who:?}");
    }

    // Each refusal was counted.
    let h = health(&s).await;
    // The operations that need credentials (open ones need none, so refuse nobody).
    let closed = || EXPECTED.iter().filter(|(_, a)| !a.is_empty());
    let ops = closed().count() as u64;
    assert_eq!(h["failedAuthentications"], json!(ops + 1), "{h}");
    let forbidden: usize = closed()
        .map(|(_, a)| 2 - a.iter().filter(|r| **r != "admin").count())
        .sum();
    assert_eq!(h["forbiddenRequests"], json!(forbidden), "{h}");
    s.stop();
}

#[tokio::test]
async fn tokens_are_hashed_revocable_recorded_and_never_logged() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let db = ["--data-dir", d, "--database-url", &url];
        let server_args = ["--data-dir", d, "--database-url", &url, "--node-id", "t1"];
        let s = Server::start(&server_args).unwrap();
        let admin_token = s.token.clone();
        assert!(!admin_token.is_empty(), "{backend:?}: no admin.token");
        let signer = create_token(&db, "signer-1", "ingest");
        let signer_c = client_with(&signer);
        let events = format!("{}/api/v1/events", s.url);

        // The submitter is recorded inside the protected row, and cannot be claimed.
        let r = send(&signer_c, "post", events.clone(), Some(event("PROCESS"))).await;
        assert_eq!(r.status().as_u16(), 201);
        let pk = r.json::<Value>().await.unwrap()["pk"]
            .as_str()
            .unwrap()
            .to_string();
        let mut forged = event("PROCESS");
        forged["additionalDetails"] = json!({"auditseal.submitter": "token:admin"});
        let r = send(&signer_c, "post", events.clone(), Some(forged)).await;
        assert_eq!(r.status().as_u16(), 400);
        // Nor by a look-alike: a zero-width space before the key, the reserved service with a
        // Cyrillic А (docs/API.md "Names"). Nothing is written for them.
        let mut hidden = event("PROCESS");
        hidden["additionalDetails"] = json!({"\u{200B}auditseal.submitter": "token:admin"});
        let mut cyrillic = event("TOKEN_CREATE");
        cyrillic["service"] = json!("\u{410}UDITSEAL");
        let before = all_rows(&url).await.len();
        for forged in [hidden, cyrillic] {
            let r = send(&signer_c, "post", events.clone(), Some(forged.clone())).await;
            assert_eq!(r.status().as_u16(), 400, "{forged}");
        }
        assert_eq!(all_rows(&url).await.len(), before, "{backend:?}");
        let bulk = send(
            &signer_c,
            "post",
            format!("{}/api/v1/events:batch", s.url),
            Some(json!([event("BULK")])),
        )
        .await;
        assert_eq!(bulk.status().as_u16(), 201);
        let row: Value = s
            .client()
            .get(format!("{events}/{pk}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(row["details"]["auditseal.submitter"], "token:signer-1");
        assert_eq!(row["verification"]["valid"], true, "{row}");
        let bulk_rows: Value = s
            .client()
            .get(format!("{events}?criteria=eventType%20EQ%20BULK"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            bulk_rows["events"][0]["details"]["auditseal.submitter"],
            "token:signer-1"
        );
        let mut out = vec!["verifylog", "--all", "--quiet"];
        out.extend_from_slice(&db);
        let (code, o, e) = cli(&out);
        assert_eq!(code, 0, "{o}{e}");

        // Bad credentials: each is refused, counted, and logged without the secret.
        let garbage = "ast_thisisnotatokenthisisnotatokenthisisnotato";
        let before = health(&s).await["failedAuthentications"].as_u64().unwrap();
        for (header, why) in [
            (format!("Bearer {garbage}"), "unknown or revoked token"),
            (format!("Basic {signer}"), "is not \\\"Bearer <token>\\\""),
            (format!("Bearer{signer}"), "is not \\\"Bearer <token>\\\""),
        ] {
            let r = reqwest::Client::new()
                .post(&events)
                .header("authorization", header)
                .json(&event("PROCESS"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 401);
            let text = r.text().await.unwrap();
            assert!(text.contains(why), "{text}");
        }

        // Revoked with the CLI: refused within the refresh interval (2 s).
        let mut revoke = vec!["token", "revoke", "signer-1"];
        revoke.extend_from_slice(&db);
        let (code, o, e) = cli(&revoke);
        assert_eq!(code, 0, "{o}{e}");
        let t = Instant::now();
        loop {
            let st = send(&signer_c, "post", events.clone(), Some(event("LATE")))
                .await
                .status()
                .as_u16();
            if st == 401 {
                break;
            }
            assert_eq!(st, 201);
            assert!(t.elapsed() < Duration::from_secs(4), "still accepted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let after = health(&s).await["failedAuthentications"].as_u64().unwrap();
        assert_eq!(after, before + 4, "{backend:?}");
        let log = s.log();
        assert!(log.contains("authentication failed"), "{log}");
        for secret in [&signer, &admin_token, &garbage.to_string()] {
            assert!(
                !log.contains(secret.trim_start_matches("ast_")),
                "a token is in the log"
            );
        }

        // A live follower whose token is revoked is cut off (API revocation this time).
        let r = send(
            &s.client(),
            "post",
            format!("{}/api/v1/tokens", s.url),
            Some(json!({"name": "siem", "role": "auditor"})),
        )
        .await;
        assert_eq!(r.status().as_u16(), 201);
        let siem = r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let follow = client_with(&siem)
            .get(format!("{}/api/v1/events/stream", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(follow.status().as_u16(), 200);
        let r = send(
            &s.client(),
            "delete",
            format!("{}/api/v1/tokens/siem", s.url),
            None,
        )
        .await;
        assert_eq!(r.status().as_u16(), 204);
        let ended = tokio::time::timeout(Duration::from_secs(5), follow.bytes()).await;
        assert!(ended.is_ok(), "the revoked follower's stream did not end");

        // Only the hash is stored.
        let stored = auditseal_core::store::open(&url)
            .await
            .unwrap()
            .tokens()
            .await
            .unwrap();
        let names: Vec<_> = stored.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["admin", "siem", "signer-1"]);
        assert_eq!(
            stored[2].token_hash,
            auditseal_core::access::token_hash(&signer)
        );
        assert!(stored[2].revoked.is_some() && stored[0].revoked.is_none());
        if backend == Backend::Sqlite {
            let bytes: Vec<u8> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.file_name().unwrap() != "admin.token")
                .flat_map(|p| std::fs::read(p).unwrap_or_default())
                .collect();
            for secret in [&signer, &admin_token] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "a token is stored in the clear"
                );
            }
        }

        // A restart with a valid token in the database makes no new admin token.
        s.stop();
        let s = Server::start(&server_args).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("admin.token"))
                .unwrap()
                .trim(),
            admin_token
        );
        assert!(!s.log().contains("created an admin token"));
        s.stop();
    }
}

#[tokio::test]
async fn certificate_roles_without_a_client_ca_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[[auth.clients]]\nsubject = \"CN=Admin,O=Example\"\nrole = \"admin\"\n",
    )
    .unwrap();
    let err = Server::start(&["--data-dir", d, "--config", cfg.to_str().unwrap()])
        .err()
        .expect("must not start: nobody could log in");
    assert!(err.contains("client_ca_file"), "{err}");
    assert!(!dir.path().join("admin.token").exists());
}
