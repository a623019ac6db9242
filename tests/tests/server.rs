//! The real `auditseal-server` binary over HTTP: ingest, read back, verify with the CLI, restart,
//! one writer per node, bad input changes nothing. SQLite (the embedded default) and PostgreSQL.

use auditseal_e2e::{BACKENDS, Backend, Server, cli, event, new_database};
use serde_json::{Value, json};

async fn post(s: &Server, body: &Value) -> (u16, Value) {
    let r = s
        .client()
        .post(format!("{}/api/v1/events", s.url))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = s
        .client()
        .get(format!("{}{}", s.url, path))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn quick_start_defaults_ingest_query_verify_restart() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let mut args = vec!["--data-dir", d, "--node-id", "node1"];
        if backend == Backend::Postgres {
            args.extend(["--database-url", &url]);
        }
        let s = Server::start(&args).unwrap();

        let (st, health) = get(&s, "/healthz").await;
        assert_eq!((st, health["status"].as_str()), (200, Some("ok")));

        // The node's first row is the server's own: the first admin token was made.
        let (_, first) = get(&s, "/api/v1/events").await;
        assert_eq!(first["count"], 1, "{first}");
        let first = &first["events"][0];
        assert_eq!(
            (
                &first["eventType"],
                &first["authToken"],
                &first["sequenceNumber"]
            ),
            (
                &json!("TOKEN_CREATE"),
                &json!("auditseal-server"),
                &json!(0)
            ),
            "{first}"
        );

        let mut with_details = event("PROCESS");
        with_details["customId"] = json!("CN=Admin CA");
        with_details["searchDetail1"] = json!("1a2b");
        with_details["searchDetail2"] = json!("42");
        with_details["additionalDetails"] = json!({
            "KEYALIAS": "signKey", "CLIENT_IP": "127.0.0.1", "NAME": "Åsa <admin> & co",
            "COUNT": 3, "BIG": 10_000_000_000i64, "OK": true, "NOTHING": null,
            "LIST": ["a", 1], "NESTED": {"x": "y"}
        });
        let (st, ack) = post(&s, &with_details).await;
        assert_eq!(st, 201, "{ack}");
        assert_eq!(ack["nodeId"], "node1");
        assert_eq!(ack["sequenceNumber"], 1);
        assert_eq!(ack["pk"].as_str().unwrap().len(), 32);
        for i in 2..6 {
            let (st, ack) = post(&s, &event("KEYGEN")).await;
            assert_eq!(
                (st, ack["sequenceNumber"].as_i64()),
                (201, Some(i)),
                "{ack}"
            );
        }

        // Read back: newest first, verified, details decoded (B64 values shown as text).
        let (st, list) = get(&s, "/api/v1/events?limit=10").await;
        assert_eq!(st, 200, "{list}");
        let events = list["events"].as_array().unwrap();
        assert_eq!(events.len(), 6);
        assert_eq!(events[0]["sequenceNumber"], 5);
        assert!(
            events.iter().all(|e| e["verification"]["valid"] == true),
            "{list}"
        );
        let (st, one) = get(&s, &format!("/api/v1/events/{}", ack_pk(&s).await)).await;
        assert_eq!(st, 200);
        assert_eq!(one["details"]["NAME"], "Åsa <admin> & co");
        assert_eq!(one["details"]["BIG"], 10_000_000_000i64);
        assert_eq!(one["details"]["NESTED"]["x"], "y");
        assert!(
            one["additionalDetails"].as_str().unwrap().contains("B64:"),
            "{one}"
        );
        assert_eq!(
            one["rowProtection"]
                .as_str()
                .unwrap()
                .split(':')
                .take(3)
                .collect::<Vec<_>>(),
            ["1", "2", "1"]
        );

        let (st, q) = get(
            &s,
            "/api/v1/events?criteria=eventType%20EQ%20PROCESS&criteria=searchDetail2+EQ+42",
        )
        .await;
        assert_eq!((st, q["count"].as_i64()), (200, Some(1)), "{q}");
        let (st, q) = get(
            &s,
            "/api/v1/events?criteria=customId+NULL&criteria=sequenceNumber+GE+3",
        )
        .await;
        assert_eq!((st, q["count"].as_i64()), (200, Some(3)), "{q}");
        let (st, q) = get(&s, "/api/v1/events?criteria=eventType+LIKE+KEY%25").await;
        assert_eq!((st, q["count"].as_i64()), (200, Some(4)), "{q}");
        let (st, q) = get(&s, "/api/v1/events?criteria=eventType+EQ+x'%20OR%20'1'='1").await;
        assert_eq!((st, q["count"].as_i64()), (200, Some(0)), "{q}");
        let (st, err) = get(&s, "/api/v1/events?criteria=color+EQ+red").await;
        assert!(
            st == 400 && err["message"].as_str().unwrap().contains("color"),
            "{err}"
        );
        let (st, _) = get(&s, "/api/v1/events/nope").await;
        assert_eq!(st, 404);

        let (st, keys) = get(&s, "/api/v1/keys").await;
        assert_eq!(st, 200);
        assert_eq!(keys["keys"][0]["keyid"], 1);
        assert_eq!(keys["keys"][0]["algorithm"], "SHA256WithRSA");
        assert!(
            keys["keys"][0]["publicKeyPem"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );

        // One writer per node id: a second process is refused with a clear message.
        let second = Server::start(&args);
        let msg = second
            .err()
            .expect("a second writer for node1 must refuse to start");
        assert!(
            msg.contains("node1") && msg.contains("another auditseal process"),
            "{msg}"
        );

        s.stop();
        let db = if backend == Backend::Postgres {
            url.clone()
        } else {
            format!("sqlite://{d}/auditseal.db")
        };
        let (code, out, err) = cli(&["verifylog", "--all", "--data-dir", d, "--database-url", &db]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("Last sequences: {node1=5}"), "{out}");

        // A restart continues at MAX+1 with the same key.
        let s = Server::start(&args).unwrap();
        let (st, ack) = post(&s, &event("PROCESS")).await;
        assert_eq!((st, ack["sequenceNumber"].as_i64()), (201, Some(6)));
        s.stop();
        let (code, out, _) = cli(&["verifylog", "--all", "--data-dir", d, "--database-url", &db]);
        assert!(code == 0 && out.contains("{node1=6}"), "{out}");
    }
}

async fn ack_pk(s: &Server) -> String {
    let (_, list) = get(s, "/api/v1/events?criteria=eventType+EQ+PROCESS").await;
    list["events"][0]["pk"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let s = Server::start(&["--data-dir", d, "--node-id", "n"]).unwrap();
    let mut unknown = event("PROCESS");
    unknown["colour"] = json!("red");
    let mut wrong_type = event("PROCESS");
    wrong_type["module"] = json!(7);
    let mut bad_status = event("PROCESS");
    bad_status["eventStatus"] = json!("MAYBE");
    let mut bad_details = event("PROCESS");
    bad_details["additionalDetails"] = json!(["not", "an", "object"]);
    let cases = [
        (json!({"eventType": "PROCESS"}), "missing field"),
        (unknown, "colour"),
        (wrong_type, "invalid type"),
        (bad_status, "MAYBE"),
        (bad_details, "additionalDetails"),
    ];
    for (body, needle) in cases {
        let (st, err) = post(&s, &body).await;
        assert_eq!(st, 400, "{body} -> {err}");
        assert!(err["message"].as_str().unwrap().contains(needle), "{err}");
        assert_eq!(err["error"], "bad_request");
    }
    let r = s
        .client()
        .post(format!("{}/api/v1/events", s.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let big = json!({"eventType": "P", "eventStatus": "VOID", "authToken": "a", "service": "s", "module": "m",
        "additionalDetails": {"blob": "x".repeat(2 * 1024 * 1024)}});
    let (st, err) = post(&s, &big).await;
    assert_eq!(st, 413, "{err}");
    // Only the server's own first row (the first admin token's TOKEN_CREATE) is there.
    let (_, list) = get(&s, "/api/v1/events").await;
    assert_eq!(list["count"], 1, "no row may have been written: {list}");
    // The next good event gets sequence 1: nothing was consumed.
    let (st, ack) = post(&s, &event("PROCESS")).await;
    assert_eq!((st, ack["sequenceNumber"].as_i64()), (201, Some(1)));
}

#[tokio::test]
async fn database_failures_answer_503_lose_nothing_and_leave_no_gap() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Postgres, dir.path()).await;
    let s = Server::start(&[
        "--data-dir",
        d,
        "--node-id",
        "pgfail",
        "--database-url",
        &url,
    ])
    .unwrap();
    let mut acked = Vec::new();
    for _ in 0..3 {
        let (st, ack) = post(&s, &event("PROCESS")).await;
        assert_eq!(st, 201);
        acked.push(ack["pk"].as_str().unwrap().to_string());
    }
    // The database refuses inserts (as a full disk or a revoked grant would).
    auditseal_e2e::exec(
        &url,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by test'; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT ON auditrecorddata FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .await;
    for _ in 0..3 {
        let (st, err) = post(&s, &event("LOST")).await;
        assert!(st >= 500, "{st} {err}");
    }
    auditseal_e2e::exec(&url, "DROP TRIGGER refuse ON auditrecorddata").await;
    // Every connection of the server is killed: the pool reconnects.
    let dbname = url.rsplit('/').next().unwrap();
    auditseal_e2e::exec(
        &auditseal_e2e::pg_admin_url(),
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"),
    )
    .await;
    // Sequence 0 is the first admin token's TOKEN_CREATE, 1..=3 the events above.
    let mut next = 4;
    for _ in 0..20 {
        let (st, ack) = post(&s, &event("PROCESS")).await;
        if st == 201 {
            assert_eq!(
                ack["sequenceNumber"], next,
                "no number may be skipped: {ack}"
            );
            acked.push(ack["pk"].as_str().unwrap().to_string());
            next += 1;
        } else {
            assert_eq!(st, 503, "{ack}");
        }
        if next == 7 {
            break;
        }
    }
    assert_eq!(next, 7, "the server recovered");
    // The writer lock's session was killed too: the server notices, takes the lock again, and
    // still keeps a second writer out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !s.log().contains("took the node's advisory lock again") {
        assert!(
            std::time::Instant::now() < deadline,
            "lock not regained: {}",
            s.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(s.log().contains("lost the node's PostgreSQL advisory lock"));
    let second = Server::start(&[
        "--data-dir",
        d,
        "--node-id",
        "pgfail",
        "--database-url",
        &url,
    ]);
    assert!(
        second.is_err(),
        "the regained lock must keep a second writer out"
    );
    let (st, ack) = post(&s, &event("PROCESS")).await;
    assert_eq!(
        (st, ack["sequenceNumber"].as_i64()),
        (201, Some(7)),
        "{ack}"
    );
    acked.push(ack["pk"].as_str().unwrap().to_string());
    let (_, lost) = get(&s, "/api/v1/events?criteria=eventType+EQ+LOST").await;
    assert_eq!(lost["count"], 0);
    for pk in &acked {
        let (st, _) = get(&s, &format!("/api/v1/events/{pk}")).await;
        assert_eq!(st, 200, "acknowledged event {pk} must be there");
    }
    s.stop();
    let (code, out, _) = cli(&[
        "verifylog",
        "--all",
        "--data-dir",
        d,
        "--database-url",
        &url,
    ]);
    assert!(code == 0 && out.contains("{pgfail=7}"), "{out}");
}

/// Everything auditseal creates is private: a new data directory is 0700, and the SQLite
/// database (with its -wal and -shm files), the generated key, the first admin token, the node
/// lock files and the checkpoint file are 0600; so are the files the CLI writes (an archive
/// segment in its new 0700 directory, `checkpoint export --out`, `keys export --out`) and the
/// directories it creates for a new database.
#[tokio::test]
async fn a_new_data_directory_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let locks = |d: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".lock"))
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new/data");
    let d = data.to_str().unwrap();
    let cfg = dir.path().join("auditseal.toml");
    std::fs::write(&cfg, "[checkpoint]\nfile = 'checkpoints.jsonl'\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let s = Server::start(&["--data-dir", d, "--config", cfg, "--node-id", "n"]).unwrap();
    let (st, _) = post(&s, &event("PROCESS")).await;
    assert_eq!(st, 201);
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    // While the server runs: SQLite removes -wal and -shm when its last connection closes.
    let server_locks = locks(&data);
    assert_eq!(server_locks.len(), 1, "{server_locks:?}");
    for f in [
        "auditseal.db",
        "auditseal.db-wal",
        "auditseal.db-shm",
        "signing-key.pem",
        "admin.token",
        &server_locks[0],
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    // The checkpoint file is written when the server stops, beside the configuration file that
    // names it.
    s.stop();
    assert_eq!(mode(&dir.path().join("checkpoints.jsonl")), 0o600);
    assert!(!data.join("checkpoints.jsonl").exists());

    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let before = (auditseal_core::time::now_millis() + 1).to_string();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let base = ["--data-dir", d, "--config", cfg, "--node-id", "n"];
    // A database elsewhere than the default is created only when the URL asks for it.
    let newdb = format!("sqlite://{}?mode=rwc", out("db/new/audit.db"));
    for args in [
        &[
            "archive",
            "--before",
            &before,
            "--export-only",
            "--out",
            &out("seg"),
        ][..],
        &["checkpoint", "export", "--out", &out("cp.jsonl")],
        &["keys", "export", "--keyid", "1", "--out", &out("key.pem")],
        &["--database-url", &newdb, "token", "list"],
    ] {
        let (code, _, err) = cli(&[&base[..], args].concat());
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    // The archive's event node n-db has its own lock file.
    let all_locks = locks(&data);
    assert_eq!(all_locks.len(), 2, "{all_locks:?}");
    for f in &all_locks {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    for d in ["seg", "db", "db/new"] {
        assert_eq!(mode(&dir.path().join(d)), 0o700, "{d}");
    }
    for f in [
        "seg/segment.ndjson",
        "seg/segment.ndjson.sig",
        "cp.jsonl",
        "key.pem",
        "db/new/audit.db",
    ] {
        assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
    }
    // Without it, a mistyped path is refused, by the CLI and by the server, and nothing is
    // created: not a new empty log.
    let typo = format!("sqlite://{}", out("typo/dir/audit.db"));
    let (code, _, err) = cli(&[&base[..], &["--database-url", &typo, "token", "list"]].concat());
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("there is no database at"), "{err}");
    let (status, log) = refused_start(&["--data-dir", d, "--config", cfg, "--database-url", &typo]);
    assert_ne!(status, Some(0), "{log}");
    assert!(log.contains("there is no database at"), "{log}");
    assert!(!dir.path().join("typo").exists());
}

/// Runs `auditseal-server` and expects it to refuse to start: its exit status and stderr.
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new(auditseal_e2e::bin_dir().join("auditseal-server"))
        .args(args)
        .args(["--bind", "127.0.0.1:0"])
        .env_remove("AUDITSEAL_DATABASE_URL")
        // A start-up error is one line, even where Rust would add a backtrace.
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the server started: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The start-up error of a key that is not the one its keyid protected with: one line that
/// names the keyid and says what to do.
fn assert_wrong_key(code: Option<i32>, err: &str) {
    assert_eq!(code, Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("auditseal-server: error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains("keyid 1 is not the key that protected the existing rows")
            && line.contains("configure the key keyid 1 had, or give this key a new keyid"),
        "{err}"
    );
}

/// A different key under a keyid that already protected rows (a new signing-key.pem, a fresh
/// data directory on an existing database) is refused at start, before anything is written;
/// the right key starts, also when the newest row was changed (that is verifylog's to report).
#[tokio::test]
async fn a_different_key_under_a_used_keyid_is_refused_at_start() {
    use auditseal_core::token::SoftwareToken;
    use auditseal_e2e::{all_rows, exec, post_events};
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let (d1, d2) = (dir.path().join("d1"), dir.path().join("d2"));
        let (d1s, d2s) = (d1.to_str().unwrap(), d2.to_str().unwrap());
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{d1s}/auditseal.db"),
            Backend::Postgres => new_database(backend, dir.path()).await,
        };
        // SQLite: rows of the sequential device speak for the key; PostgreSQL: the batch
        // statements of the batched device.
        let device = match backend {
            Backend::Sqlite => "sequential",
            Backend::Postgres => "batched",
        };
        let args = |d: &'static str, data: &str| -> Vec<String> {
            ["--data-dir", data, "--database-url", &url, "--node-id", d]
                .into_iter()
                .chain(["--device", device])
                .map(String::from)
                .collect()
        };
        let start = |a: &[String]| Server::start(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let refused =
            |a: &[String]| refused_start(&a.iter().map(String::as_str).collect::<Vec<_>>());

        let s = start(&args("k", d1s)).unwrap();
        post_events(&s, 3).await;
        s.stop();
        // Only the rows (or batch statements) are left to tell the key by.
        exec(&url, "DELETE FROM auditcheckpointdata").await;
        let rows = all_rows(&url).await.len();

        let key = d1.join("signing-key.pem");
        let old_key = std::fs::read(&key).unwrap();
        std::fs::remove_file(&key).unwrap();
        SoftwareToken::load_or_generate(&key, 1).unwrap();
        let (code, err) = refused(&args("k", d1s));
        assert_wrong_key(code, &err);
        // A fresh data directory generates a new key: refused as well, under any node id.
        for node in ["k", "other"] {
            let (code, err) = refused(&args(node, d2s));
            assert_wrong_key(code, &err);
        }
        // The CLI commands that sign (and log what they do) refuse it too.
        let db = ["--data-dir", d1s, "--database-url", &url, "--node-id", "k"];
        let now = auditseal_core::time::now_millis().to_string();
        let seg = dir.path().join("seg");
        for c in [
            &["token", "create", "--name", "t", "--role", "auditor"][..],
            &["archive", "--before", &now, "--out", seg.to_str().unwrap()],
        ] {
            let (code, _, err) = cli(&[&db[..], c].concat());
            assert_eq!(code, 1, "{c:?}: {err}");
            assert!(
                err.contains("keyid 1 is not the key that protected the existing rows"),
                "{c:?}: {err}"
            );
        }
        assert_eq!(all_rows(&url).await.len(), rows, "{backend:?}");

        // The right key starts; so does the fresh data directory given a copy of it.
        std::fs::write(&key, &old_key).unwrap();
        std::fs::write(d2.join("signing-key.pem"), &old_key).unwrap();
        let s = start(&args("other", d2s)).unwrap();
        post_events(&s, 1).await;
        s.stop();
        let s = start(&args("k", d1s)).unwrap();
        post_events(&s, 1).await;
        s.stop();
        if backend == Backend::Sqlite {
            // A changed newest row is not a wrong key: the checkpoint written at the stop
            // still verifies.
            exec(
                &url,
                "UPDATE auditrecorddata SET eventtype = 'CHANGED' WHERE nodeid = 'k' \
                 AND sequencenumber = (SELECT MAX(sequencenumber) FROM auditrecorddata \
                 WHERE nodeid = 'k')",
            )
            .await;
            start(&args("k", d1s)).unwrap().stop();
        } else {
            // Version 3 rows without their statements: the checkpoints (written at each stop)
            // speak for the key.
            exec(&url, "DELETE FROM auditbatchdata").await;
            std::fs::remove_file(d2.join("signing-key.pem")).unwrap();
            SoftwareToken::load_or_generate(&d2.join("signing-key.pem"), 1).unwrap();
            let (code, err) = refused(&args("k", d2s));
            assert_wrong_key(code, &err);
            assert!(err.contains("checkpoint at row"), "{err}");
        }
    }
}

/// A failed start says why in one line (no "Caused by" list, no backtrace, no cause twice), with
/// a non-zero exit status; the CLI likewise.
#[test]
fn start_up_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let cfg = dir.path().join("pin.toml");
    std::fs::write(
        &cfg,
        "[[protection.keys]]\nkind = 'hmac'\nkeyid = 2\nsecret_file = 'no-such-secret'\n",
    )
    .unwrap();
    for config in [&missing, &cfg] {
        let config = config.to_str().unwrap();
        let (code, err) = refused_start(&["--data-dir", d, "--config", config]);
        assert_eq!(code, Some(1), "{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = lines.last().copied().unwrap_or_default();
        assert!(last.starts_with("auditseal-server: error: "), "{err}");
        assert_eq!(last.matches("(os error 2)").count(), 1, "{err}");
        assert!(
            !err.contains("Caused by") && !err.contains("backtrace"),
            "{err}"
        );
        // Nothing but log lines before it.
        for l in &lines[..lines.len() - 1] {
            assert!(l.contains(" INFO ") || l.contains(" WARN "), "{err}");
        }
        let (code, _, err) = cli(&["--data-dir", d, "--config", config, "keys", "list"]);
        assert_ne!(code, 0, "{err}");
        let line = err.trim();
        assert!(line.starts_with("error: ") && !line.contains('\n'), "{err}");
        assert_eq!(line.matches("(os error 2)").count(), 1, "{err}");
    }
}

/// A start that fails leaves the data directory as it was: with the port taken nothing is
/// created at all; with a database that cannot be used no key is generated; with signing off
/// no key is generated even when the server runs.
#[test]
fn a_failed_start_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    // refused_start adds its own --bind: the taken port comes from the configuration file.
    let cfg = dir.path().join("taken.toml");
    std::fs::write(&cfg, format!("[server]\nbind = '{port}'\n")).unwrap();
    let (code, err) = auditseal_start(&["--data-dir", d, "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
    assert!(!data.exists(), "{err}");

    let (code, err) = refused_start(&[
        "--data-dir",
        d,
        "--database-url",
        "postgres://auditseal@127.0.0.1:1/auditseal",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert!(!data.join("signing-key.pem").exists(), "{err}");
    assert!(!data.join("admin.token").exists(), "{err}");
}

/// `refused_start` without its own --bind.
fn auditseal_start(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(auditseal_e2e::bin_dir().join("auditseal-server"))
        .args(args)
        .env_remove("AUDITSEAL_DATABASE_URL")
        .env_remove("AUDITSEAL_BIND")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Tokens before the first start: `token create` on a new installation says to run
/// `auditseal-server --init` and creates nothing; `--init` makes the database and the key and
/// listens nowhere; then the token is made, and the first start uses it (no admin token of its
/// own) with the key `--init` generated.
#[tokio::test]
async fn tokens_can_be_made_before_the_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let create = [
        "--data-dir",
        d,
        "token",
        "create",
        "--name",
        "ops",
        "--role",
        "admin",
    ];
    let (code, _, err) = cli(&create);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("auditseal-server --init"), "{err}");
    assert!(!data.exists(), "{err}");

    let out = std::process::Command::new(auditseal_e2e::bin_dir().join("auditseal-server"))
        .args(["--data-dir", d, "--init"])
        .env_remove("AUDITSEAL_DATABASE_URL")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("ready"), "{stdout}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains("generated a new RSA-2048 signing key"),
        "{stderr}"
    );
    assert!(data.join("signing-key.pem").exists());
    assert!(!data.join("admin.token").exists());
    let key = std::fs::read(data.join("signing-key.pem")).unwrap();

    let (code, stdout, err) = cli(&create);
    assert_eq!(code, 0, "{err}");
    let token = stdout.lines().last().unwrap().trim().to_string();
    let s = Server::start(&["--data-dir", d]).unwrap();
    assert!(!data.join("admin.token").exists(), "{}", s.log());
    assert_eq!(std::fs::read(data.join("signing-key.pem")).unwrap(), key);
    let c = auditseal_e2e::client_with(&token);
    let r = c
        .get(format!("{}/api/v1/tokens", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("\"ops\""), "{body}");
}

/// `--log-format json`: every line the server writes to stderr is one JSON object with
/// timestamp, level and message and the event's fields at the top level, through a run and
/// its stop; a start that fails ends with an ERROR object carrying the one-line error.
#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let s = Server::start(&["--data-dir", d, "--node-id", "js", "--log-format", "json"]).unwrap();
    assert_eq!(post(&s, &event("JSON")).await.0, 201);
    let log = s.stop_and_log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{log}")))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    for l in &lines {
        for key in ["timestamp", "level", "message"] {
            assert!(l[key].is_string(), "{key} missing: {l}");
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "auditseal-server started" && l["node"] == "js"),
        "{log}"
    );

    let (code, err) = refused_start(&[
        "--data-dir",
        d,
        "--log-format",
        "json",
        "--config",
        dir.path().join("nowhere.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    let last: Value = serde_json::from_str(err.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["error"].as_str().unwrap().contains("nowhere.toml"),
        "{last}"
    );
}

/// `auditseal-server ARGS` run to its end: (exit code, stdout, stderr).
fn server_run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(auditseal_e2e::bin_dir().join("auditseal-server"))
        .args(args)
        .env_remove("AUDITSEAL_DATABASE_URL")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `check-config` checks as a start would and creates nothing: on a fresh data directory it
/// passes and says what the first start will create (and the directory is still not there);
/// beside a running server it names the port in use, reaches the database and opens the key;
/// a missing certificate file is named; a secret in the configuration is never printed.
#[tokio::test]
async fn check_config_checks_without_side_effects_and_names_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (code, out, err) = server_run(&["check-config", "--data-dir", d, "--bind", "127.0.0.1:0"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("configuration OK"), "{out}");
    assert!(out.contains("the first start creates it"), "{out}");
    assert!(out.contains("the first start generates it"), "{out}");
    assert!(!data.exists(), "check-config created {d}");

    let s = Server::start(&["--data-dir", d, "--node-id", "cc"]).unwrap();
    let port = s.url.rsplit_once(':').unwrap().1;
    let taken = format!("127.0.0.1:{port}");
    let (code, out, err) = server_run(&["check-config", "--data-dir", d, "--bind", &taken]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(&format!("listen: ERROR cannot listen on {taken}")),
        "{out}"
    );
    assert!(out.contains("(reachable; 1 valid API tokens)"), "{out}");
    assert!(out.contains("keyid 1 SHA256WithRSA"), "{out}");
    assert!(out.contains("1 problem(s)"), "{out}");

    const SECRET: &str = "checkconfig-secret-0123456789abcdef";
    let cfg = dir.path().join("auditseal.toml");
    std::fs::write(
        &cfg,
        format!(
            "[protection]\nkeyid = 1\n[[protection.keys]]\nkind = \"software\"\nkeyid = 1\n\
             [[protection.keys]]\nkind = \"hmac\"\nkeyid = 2\nsecret = \"{SECRET}\"\n\
             [server.tls]\ncert_file = \"missing.pem\"\nkey_file = \"missing.key\"\n"
        ),
    )
    .unwrap();
    let (code, out, err) = server_run(&[
        "check-config",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        d,
        "--bind",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("HTTPS: ERROR") && out.contains("missing.pem"),
        "{out}"
    );
    assert!(out.contains("keyid 2 HmacSHA256"), "{out}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{out}{err}");
    s.stop();
}
