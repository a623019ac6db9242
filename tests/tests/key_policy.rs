//! Keys bound to what they may protect (issue 12 item 2). Before the key policy, any configured
//! key verified any row, statement or checkpoint of any node at any position, so whoever held
//! an HMAC secret (every HMAC verifier does) or a retired private key could rewrite a node and
//! verifylog passed. Here the attacker can write the database and holds that key; they rewrite
//! a node by deleting its rows, statements and checkpoints and running a server of their own
//! with the key, which writes well-formed rows and a checkpoint. verifylog with the operator's
//! configuration (the policy) must report every such row; with the attacker's own (no policy)
//! it passes, which is the attack as it worked before. SQLite and PostgreSQL.

use auditseal_e2e::{BACKENDS, Server, cli, exec, new_database, post_events};
use serde_json::Value;

const SECRET: &str = "an HMAC secret every verifier of the signserver node holds";

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn start(d: &str, url: &str, cfg: &str, node: &str, device: &str) -> Server {
    Server::start(&[
        "--data-dir",
        d,
        "--database-url",
        url,
        "--config",
        cfg,
        "--node-id",
        node,
        "--device",
        device,
    ])
    .unwrap_or_else(|log| panic!("server did not start: {log}"))
}

/// `verifylog --all` with `cfg`: exit code, the human report, the JSON report.
fn verifylog(d: &str, url: &str, cfg: &str) -> (i32, String, Value) {
    let args = [
        "--data-dir",
        d,
        "--database-url",
        url,
        "--config",
        cfg,
        "verifylog",
        "--all",
        "--quiet",
    ];
    let (code, text, err) = cli(&args);
    let mut json = args.to_vec();
    json.push("--json");
    let (_, out, _) = cli(&json);
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, text, v)
}

fn node<'a>(rep: &'a Value, id: &str) -> &'a Value {
    rep["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nodeId"] == id)
        .unwrap_or_else(|| panic!("no node {id}: {rep}"))
}

/// Deletes everything of `node` after sequence `after`, as an attacker who rewrites its tail.
async fn cut_after(url: &str, node: &str, after: i64) {
    for (table, column) in [
        ("auditrecorddata", "sequencenumber"),
        ("auditbatchdata", "lastsequencenumber"),
        ("auditcheckpointdata", "sequencenumber"),
    ] {
        exec(
            url,
            &format!("DELETE FROM {table} WHERE nodeid = '{node}' AND {column} > {after}"),
        )
        .await;
    }
}

/// The holder of an HMAC secret that may protect only a SignServer node rewrites a node
/// protected by the server's RSA key (batched: version 3 rows under signed statements) as
/// version 1 rows with an HMAC checkpoint.
#[tokio::test]
async fn an_hmac_secret_cannot_rewrite_a_node_it_may_not_protect() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let operator = write(
            dir.path(),
            "operator.toml",
            &format!(
                "[protection]\nkeyid = 1\n\
                 [[protection.keys]]\nkind = 'software'\nkeyid = 1\n\
                 [[protection.keys]]\nkind = 'hmac'\nkeyid = 2\nsecret = '{SECRET}'\n\
                 nodes = ['signserver-1']\n"
            ),
        );
        let attacker = write(
            dir.path(),
            "attacker.toml",
            &format!(
                "[protection]\nkeyid = 2\n\
                 [[protection.keys]]\nkind = 'hmac'\nkeyid = 2\nsecret = '{SECRET}'\n"
            ),
        );
        let s = start(d, &url, &operator, "live", "batched");
        post_events(&s, 5).await;
        s.stop();
        let (code, text, _) = verifylog(d, &url, &operator);
        assert_eq!(code, 0, "{backend:?}: {text}");

        cut_after(&url, "live", -1).await;
        let s = start(d, &url, &attacker, "live", "sequential");
        post_events(&s, 5).await;
        s.stop();
        // Without the policy the rewritten node passes: the attack as it worked before.
        let (code, text, rep) = verifylog(d, &url, &attacker);
        assert_eq!(code, 0, "{backend:?}: {text}");
        let notes = node(&rep, "live")["notes"].to_string();
        assert!(notes.contains("HMAC keyid 2"), "{backend:?}: {rep}");

        let (code, text, rep) = verifylog(d, &url, &operator);
        assert_eq!(code, 255, "{backend:?}: {text}");
        let live = node(&rep, "live");
        let failed = live["failed"].as_array().unwrap();
        assert_eq!(failed.len(), 5, "{backend:?}: {live}");
        for f in failed {
            let reason = f["reason"].as_str().unwrap();
            assert!(
                reason.contains("keyid 2 may protect only the nodes signserver-1"),
                "{reason}"
            );
        }
        let checkpoints = live["failedCheckpoints"].as_array().unwrap();
        assert!(!checkpoints.is_empty(), "{backend:?}: {live}");
        assert!(
            checkpoints[0]["reason"]
                .as_str()
                .unwrap()
                .contains("may protect only"),
            "{live}"
        );
        // And a server refuses to protect a node its key may not.
        let refused = Server::start(&[
            "--data-dir",
            d,
            "--database-url",
            &url,
            "--config",
            &write(
                dir.path(),
                "wrong-node.toml",
                &format!(
                    "[protection]\nkeyid = 2\n[[protection.keys]]\nkind = 'hmac'\nkeyid = 2\n\
                     secret = '{SECRET}'\nnodes = ['signserver-1']\n"
                ),
            ),
            "--node-id",
            "live",
        ]);
        let log = refused.err().expect("the server must refuse to start");
        assert!(
            log.contains("keyid 2 may protect only the nodes signserver-1, not node \"live\""),
            "{log}"
        );
    }
}

/// After a rollover the old private key is still around (a backup, a former administrator).
/// Its holder rewrites the rows written since with it.
#[tokio::test]
async fn a_retired_key_cannot_protect_rows_after_its_retirement() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let before = write(
            dir.path(),
            "before.toml",
            "[[protection.keys]]\nkind = 'software'\nkeyid = 1\nfile = 'old.pem'\n",
        );
        let s = start(d, &url, &before, "n", "sequential");
        post_events(&s, 3).await;
        s.stop();
        let (_, _, rep) = verifylog(d, &url, &before);
        let last_old = node(&rep, "n")["lastSequence"].as_i64().unwrap();

        // The rollover: a new current key; the old one verifies only what it protected.
        let after = write(
            dir.path(),
            "after.toml",
            &format!(
                "[protection]\nkeyid = 3\n\
                 [[protection.keys]]\nkind = 'software'\nkeyid = 3\nfile = 'new.pem'\n\
                 [[protection.keys]]\nkind = 'software'\nkeyid = 1\nfile = 'old.pem'\n\
                 retired_after = {{ n = {last_old} }}\n"
            ),
        );
        let s = start(d, &url, &after, "n", "sequential");
        post_events(&s, 3).await;
        s.stop();
        let (code, text, rep) = verifylog(d, &url, &after);
        assert_eq!(code, 0, "{backend:?}: {text}");
        let last_new = node(&rep, "n")["lastSequence"].as_i64().unwrap();
        assert!(last_new > last_old + 2, "{rep}");

        // The attacker rewrites everything after the rollover with the old key.
        cut_after(&url, "n", last_old).await;
        let s = start(d, &url, &before, "n", "sequential");
        post_events(&s, 3).await;
        s.stop();
        let (code, text, _) = verifylog(d, &url, &before);
        assert_eq!(
            code, 0,
            "{backend:?}: the attack without the policy: {text}"
        );

        let (code, text, rep) = verifylog(d, &url, &after);
        assert_eq!(code, 255, "{backend:?}: {text}");
        let n = node(&rep, "n");
        let failed = n["failed"].as_array().unwrap();
        assert!(failed.len() >= 3, "{n}");
        for f in failed {
            assert!(f["sequenceNumber"].as_i64().unwrap() > last_old, "{n}");
            let reason = f["reason"].as_str().unwrap();
            assert!(
                reason.contains(&format!(
                    "keyid 1 was retired on node \"n\" after sequence {last_old}"
                )),
                "{reason}"
            );
        }
        // Its rows up to the rollover still verify.
        assert_eq!(
            n["rows"].as_u64().unwrap() as usize - failed.len(),
            (last_old + 1) as usize
        );

        // A retired key cannot be the current one.
        let refused = Server::start(&[
            "--data-dir",
            d,
            "--database-url",
            &url,
            "--config",
            &write(
                dir.path(),
                "retired-current.toml",
                &format!(
                    "[[protection.keys]]\nkind = 'software'\nkeyid = 1\nfile = 'old.pem'\n\
                     retired_after = {{ n = {last_old} }}\n"
                ),
            ),
            "--node-id",
            "n",
        ]);
        let log = refused.err().expect("the server must refuse to start");
        assert!(log.contains("the key is retired"), "{log}");
    }
}

/// With `protection.evidence = "asymmetric"`, checkpoints and batch statements made with an
/// HMAC key are errors, and a server whose key is an HMAC key does not start.
#[tokio::test]
async fn asymmetric_evidence_refuses_hmac_checkpoints_and_statements() {
    let backend = BACKENDS[0];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(backend, dir.path()).await;
    let hmac = format!("[[protection.keys]]\nkind = 'hmac'\nkeyid = 2\nsecret = '{SECRET}'\n");
    let any = write(dir.path(), "any.toml", &hmac);
    let strict = write(
        dir.path(),
        "strict.toml",
        &format!("[protection]\nevidence = 'asymmetric'\n{hmac}"),
    );
    let s = start(d, &url, &any, "h", "batched");
    post_events(&s, 4).await;
    let log = s.stop_and_log();
    assert!(log.contains("keyid 2 is an HMAC key"), "{log}");
    let (code, text, rep) = verifylog(d, &url, &any);
    assert_eq!(code, 0, "{text}");
    assert!(
        node(&rep, "h")["notes"]
            .to_string()
            .contains("HMAC keyid 2"),
        "{rep}"
    );

    let (code, text, rep) = verifylog(d, &url, &strict);
    assert_eq!(code, 255, "{text}");
    let h = node(&rep, "h");
    assert!(
        h["failedCheckpoints"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("HMAC key, whose secret every verifier holds"),
        "{h}"
    );
    assert!(!h["failedBatches"].as_array().unwrap().is_empty(), "{h}");

    let refused = Server::start(&[
        "--data-dir",
        d,
        "--database-url",
        &url,
        "--config",
        &strict,
        "--node-id",
        "h",
    ]);
    let log = refused.err().expect("the server must refuse to start");
    assert!(
        log.contains("protection.evidence = \"asymmetric\""),
        "{log}"
    );
}
