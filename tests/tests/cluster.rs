//! Three `auditseal-server` nodes on one PostgreSQL (docs/CLUSTER.md): node-a and node-b share
//! one RSA key in a SoftHSM2 token, node-c signs with its own EC key. All three are loaded
//! concurrently; every node's rows are numbered without gaps, a query on any node sees (and
//! verifies) every node's rows, a second writer for a running node id is refused, and
//! `verifylog --all` with public keys only verifies the whole log, then reports tampering with
//! each node's rows under that node and no other.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use auditseal_e2e::hsm::{MODULE, PIN, SoftHsm};
use auditseal_e2e::{Backend, Server, all_rows, cli, cli_env, event, exec, new_database};
use serde_json::{Value, json};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// Client tasks per node, and events each task sends.
const TASKS: usize = 4;
const PER_TASK: usize = 75;
const PER_NODE: usize = TASKS * PER_TASK;

/// keyid of the RSA key node-a and node-b share in the HSM, and of node-c's own EC key.
const SHARED_KEYID: i32 = 1;
const OWN_KEYID: i32 = 2;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn pkcs11_key(keyid: i32) -> String {
    format!(
        "[[protection.keys]]\nkind = 'pkcs11'\nkeyid = {keyid}\nlibrary = '{MODULE}'\n\
         slot_label = 'cluster'\nkey_label = 'rsakey'\npin_env = 'CLUSTER_PIN'\n"
    )
}

fn software_key(keyid: i32, file: &str) -> String {
    format!("[[protection.keys]]\nkind = 'software'\nkeyid = {keyid}\nfile = '{file}'\n")
}

/// A verify-only entry with the PEM inline, so that one file serves any data directory.
fn public_key(keyid: i32, pem: &str) -> String {
    format!("[[protection.keys]]\nkind = 'public'\nkeyid = {keyid}\npem = '''\n{pem}'''\n")
}

/// `auditseal-db keys export` of one key, from a configuration that holds it.
fn export(conf: &str, data_dir: &Path, keyid: i32, env: &[(&str, &OsStr)]) -> String {
    let (code, pem, err) = cli_env(
        &[
            "--config",
            conf,
            "--data-dir",
            data_dir.to_str().unwrap(),
            "keys",
            "export",
            "--keyid",
            &keyid.to_string(),
        ],
        env,
    );
    assert_eq!(code, 0, "keys export --keyid {keyid}: {err}");
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    pem
}

/// `verifylog --all` as JSON and as the human report, with the auditor's public keys only.
fn verifylog(auditor: &str, data_dir: &Path, url: &str) -> (i32, Value, String) {
    let base = [
        "--config",
        auditor,
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--database-url",
        url,
        "verifylog",
        "--all",
    ];
    let (code, out, err) = cli(&[&base[..], &["--json"]].concat());
    let report: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("verifylog --json: {e}: {out}{err}"));
    let (text_code, text, _) = cli(&base);
    assert_eq!(text_code, code, "JSON and text runs disagree: {text}");
    (code, report, text)
}

/// The report of one node, by id.
fn node<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nodeId"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {report}"))
}

/// A node's findings by kind: holes, duplicates and every `failed*` list (rows, batch
/// statements, and any kind the verifier reports besides); warnings are not findings.
fn findings(n: &Value) -> BTreeMap<String, usize> {
    n.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k == "holes" || *k == "duplicates" || k.starts_with("failed"))
        .map(|(k, v)| (k.clone(), v.as_array().map_or(usize::MAX, Vec::len)))
        .collect()
}

/// Each node's findings: `tampered` nodes have exactly the listed row findings (holes,
/// duplicates, failed rows, failed batches; other kinds of their own, such as a checkpoint the
/// change breaks, may come with them), every other node has none, and the report's error count
/// is the sum over the nodes: no error is reported outside a node.
fn assert_findings(report: &Value, tampered: &[(&str, &str, usize)]) {
    let mut total = 0;
    for id in NODES {
        let n = node(report, id);
        let found = findings(n);
        total += found.values().sum::<usize>();
        if !tampered.iter().any(|t| t.0 == id) {
            assert!(
                found.values().all(|c| *c == 0),
                "{id} was not tampered with, yet: {n}"
            );
            continue;
        }
        for kind in ["holes", "duplicates", "failed", "failedBatches"] {
            let expected: usize = tampered
                .iter()
                .filter(|t| t.0 == id && t.1 == kind)
                .map(|t| t.2)
                .sum();
            assert_eq!(found.get(kind), Some(&expected), "{id} {kind}: {n}");
        }
    }
    assert_eq!(report["errors"], total, "{report}");
}

/// The (sequenceNumber, reason) of each failed row of a node.
fn failed(report: &Value, id: &str) -> Vec<(i64, String)> {
    node(report, id)["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["sequenceNumber"].as_i64().unwrap(),
                f["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The sequence number of a node's first posted event: node-a, started first on the empty
/// database, logged the first admin token's TOKEN_CREATE as its row 0.
fn first_event(id: &str) -> i64 {
    i64::from(id == "node-a")
}

async fn get(client: &reqwest::Client, s: &Server, path_and_query: &str) -> Value {
    let r = client
        .get(format!("{}{path_and_query}", s.url))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "GET {path_and_query} on {}: {body}", s.url);
    body
}

#[tokio::test]
async fn three_nodes_share_one_postgresql_and_verify_as_one_log() {
    // Build the binaries before the clock starts (the first call to bin_dir builds them).
    auditseal_e2e::bin_dir();
    let started = std::time::Instant::now();
    let hsm = SoftHsm::new("cluster");
    let dir = tempfile::tempdir().unwrap();
    let url = new_database(Backend::Postgres, dir.path()).await;
    let env: [(&str, &OsStr); 2] = [
        ("SOFTHSM2_CONF", hsm.conf().into_os_string().leak()),
        ("CLUSTER_PIN", OsStr::new(PIN)),
    ];
    let data = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    // One data directory per node, as on separate machines.
    let (a_dir, b_dir, c_dir) = (data("node-a"), data("node-b"), data("node-c"));
    let auditor_dir = data("auditor");

    // node-c's own key: an EC P-256 PKCS#8 PEM, as an operator would make it.
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .arg("-out")
        .arg(c_dir.join("node-c-key.pem"))
        .status()
        .unwrap();
    assert!(status.success(), "openssl genpkey");

    // Each key's public part, exported with the CLI from a configuration holding only that key.
    let shared_pem = export(
        &write(dir.path(), "hsm-only.toml", &pkcs11_key(SHARED_KEYID)),
        &a_dir,
        SHARED_KEYID,
        &env,
    );
    // Absolute: a relative path in a configuration file is read from the file's directory.
    let c_key_path = c_dir.join("node-c-key.pem");
    let c_key = c_key_path.to_str().unwrap();
    let own_pem = export(
        &write(dir.path(), "c-only.toml", &software_key(OWN_KEYID, c_key)),
        &c_dir,
        OWN_KEYID,
        &env,
    );

    // Every node lists the key it signs with and the other keys as public keys, so that a query
    // on it verifies every node's rows; the auditor lists only public keys.
    let shared_conf = write(
        dir.path(),
        "shared-hsm.toml",
        &format!(
            "[protection]\nkeyid = {SHARED_KEYID}\n{}{}",
            pkcs11_key(SHARED_KEYID),
            public_key(OWN_KEYID, &own_pem)
        ),
    );
    let c_conf = write(
        dir.path(),
        "node-c.toml",
        &format!(
            "node_id = 'node-c'\n[protection]\nkeyid = {OWN_KEYID}\n{}{}",
            software_key(OWN_KEYID, c_key),
            public_key(SHARED_KEYID, &shared_pem)
        ),
    );
    // The auditor's configuration exactly as docs/CLUSTER.md shows it: public key files beside
    // it, named relative to it.
    std::fs::write(dir.path().join("shared.pub.pem"), &shared_pem).unwrap();
    std::fs::write(dir.path().join("node-c.pub.pem"), &own_pem).unwrap();
    let cluster_md =
        std::fs::read_to_string(auditseal_e2e::workspace_root().join("docs/CLUSTER.md")).unwrap();
    let example = cluster_md
        .split("```toml\n")
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("shared.pub.pem"))
        .expect("docs/CLUSTER.md shows the auditor's configuration");
    assert_eq!(
        (SHARED_KEYID, OWN_KEYID),
        (1, 2),
        "the keyids of the example"
    );
    let auditor = write(dir.path(), "auditor.toml", example);

    // node-a and node-b: one configuration file, one HSM key, the node id from the flag;
    // node-c: its node id from its configuration file.
    let (a_d, b_d, c_d) = (
        a_dir.to_str().unwrap(),
        b_dir.to_str().unwrap(),
        c_dir.to_str().unwrap(),
    );
    let node_b_args = [
        "--config",
        &shared_conf,
        "--data-dir",
        b_d,
        "--database-url",
        &url,
        "--node-id",
        "node-b",
        "--device",
        "batched",
    ];
    let servers = [
        Server::start_env(
            &[
                "--config",
                &shared_conf,
                "--data-dir",
                a_d,
                "--database-url",
                &url,
                "--node-id",
                "node-a",
                "--device",
                "sequential",
            ],
            &env,
        )
        .unwrap(),
        Server::start_env(&node_b_args, &env).unwrap(),
        Server::start_env(
            &[
                "--config",
                &c_conf,
                "--data-dir",
                c_d,
                "--database-url",
                &url,
            ],
            &env,
        )
        .unwrap(),
    ];
    let client = servers[0].client();
    for (s, id) in servers.iter().zip(NODES) {
        let health = get(&client, s, "/healthz").await;
        assert_eq!(health["nodeId"], id, "{health}");
    }

    // One writer per node id across processes: a second node-b is refused at start-up while
    // node-b runs, and node-b carries on (the load below goes through it).
    let msg = Server::start_env(&node_b_args, &env)
        .err()
        .expect("a second writer as node-b must refuse to start");
    assert!(
        msg.contains("another auditseal process is already writing as node \"node-b\""),
        "{msg}"
    );

    // Load: TASKS clients per node, all nodes at once; keep every acknowledgement.
    let mut tasks = Vec::new();
    for (s, id) in servers.iter().zip(NODES) {
        for t in 0..TASKS {
            let (client, url) = (client.clone(), s.url.clone());
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::with_capacity(PER_TASK);
                for i in 0..PER_TASK {
                    let mut body = event("PROCESS");
                    body["searchDetail2"] = json!(id);
                    body["additionalDetails"] = json!({"TASK": t, "N": i, "CLIENT_IP": "10.0.0.7"});
                    let r = client
                        .post(format!("{url}/api/v1/events"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let ack: Value = r.json().await.unwrap_or(Value::Null);
                    assert_eq!(status, 201, "{id}: {ack}");
                    assert_eq!(ack["nodeId"], id, "{ack}");
                    acks.push((
                        ack["sequenceNumber"].as_i64().unwrap(),
                        ack["pk"].as_str().unwrap().to_string(),
                    ));
                }
                (id, acks)
            }));
        }
    }
    let mut acked: BTreeMap<&str, Vec<(i64, String)>> = BTreeMap::new();
    for t in tasks {
        let (id, acks) = t.await.unwrap();
        acked.entry(id).or_default().extend(acks);
    }
    let load_done = started.elapsed();

    // node-a started first on the empty database: its row 0 is the first admin token's
    // TOKEN_CREATE, and the other nodes made none.
    let rows = all_rows(&url).await;
    assert_eq!(rows.len(), 3 * PER_NODE + 1);
    let first = rows
        .iter()
        .find(|r| r.node_id == "node-a" && r.sequence_number == 0)
        .unwrap();
    assert_eq!(
        (first.event_type.as_str(), first.auth_token.as_str()),
        ("TOKEN_CREATE", "auditseal-server")
    );
    // Each node: acknowledged numbers and stored rows are exactly first..first+n-1, the same
    // pks, each row protected by its node's key (node-b's rows are version 4: batched).
    for (id, prefix) in NODES.iter().zip(["1:2:1:", "1:4:1:", "1:2:2:"]) {
        let base = first_event(id);
        let acks = acked.get_mut(id).unwrap();
        acks.sort();
        let seqs: Vec<i64> = acks.iter().map(|a| a.0).collect();
        assert_eq!(
            seqs,
            (base..base + PER_NODE as i64).collect::<Vec<_>>(),
            "{id} acks"
        );
        let mine: Vec<_> = rows
            .iter()
            .filter(|r| r.node_id == *id && r.sequence_number >= base)
            .collect();
        let stored: Vec<(i64, String)> = mine
            .iter()
            .map(|r| (r.sequence_number, r.pk.clone()))
            .collect();
        assert_eq!(
            &stored, acks,
            "{id}: the rows are exactly the acknowledged events"
        );
        for r in mine {
            let p = r.row_protection.as_deref().unwrap_or("");
            assert!(p.starts_with(prefix), "{id} {}: {p}", r.sequence_number);
        }
    }

    // Queries on any node see every node's rows: all of them on node-a, and on every node each
    // node's newest rows, verified with the keys that node lists (a row it cannot verify would
    // fail the query).
    let all = get(&client, &servers[0], "/api/v1/events?limit=10000").await;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for e in all["events"].as_array().unwrap() {
        assert_eq!(e["verification"]["valid"], true, "{e}");
        *per_node.entry(e["nodeId"].as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(
        per_node,
        NODES
            .map(|id| (id, PER_NODE + first_event(id) as usize))
            .into()
    );
    for s in &servers {
        for id in NODES {
            let q = get(
                &client,
                s,
                &format!("/api/v1/events?criteria=nodeId+EQ+{id}&limit=20"),
            )
            .await;
            let events = q["events"].as_array().unwrap();
            assert_eq!(events.len(), 20, "{id} seen from {}", s.url);
            for e in events {
                assert_eq!(e["nodeId"], id);
                assert_eq!(e["verification"]["valid"], true, "from {}: {e}", s.url);
            }
        }
    }

    for s in servers {
        s.stop();
    }

    // One log, three nodes, verified by an auditor with public keys only.
    let (code, report, text) = verifylog(&auditor, &auditor_dir, &url);
    assert_eq!(code, 0, "{text}");
    assert_eq!(report["nodes"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(report["rows"], 3 * PER_NODE + 1);
    assert_findings(&report, &[]);
    let last = |id| PER_NODE as i64 - 1 + first_event(id);
    for id in NODES {
        let n = node(&report, id);
        assert_eq!(
            (&n["rows"], &n["firstSequence"], &n["lastSequence"]),
            (&json!(last(id) + 1), &json!(0), &json!(last(id))),
            "{n}"
        );
    }
    assert!(node(&report, "node-b")["batches"].as_u64().unwrap() > 0);
    assert!(
        text.contains(&format!(
            "Last sequences: {{node-a={}, node-b={}, node-c={}}}",
            last("node-a"),
            last("node-b"),
            last("node-c")
        )),
        "{text}"
    );

    // Tamper with node-a only: the finding is node-a's, the other nodes stay clean.
    let row = |id: &str, seq: usize| format!("nodeid = '{id}' AND sequencenumber = {seq}");
    exec(
        &url,
        &format!(
            "UPDATE auditrecorddata SET eventtype = 'KEYGEN' WHERE {}",
            row("node-a", 10)
        ),
    )
    .await;
    let (code, report, text) = verifylog(&auditor, &auditor_dir, &url);
    assert_eq!(code, 255, "{text}");
    assert_findings(&report, &[("node-a", "failed", 1)]);
    let a = failed(&report, "node-a");
    assert!(
        a.len() == 1 && a[0].0 == 10 && a[0].1.contains("wrong signature"),
        "{a:?}"
    );

    // Then a middle row of node-b (batched) deleted and node-c's details changed. The row is
    // the first of a batch of two or more near the middle: a row alone in its batch would also
    // leave a statement that covers no row (another finding; how rows fall into batches
    // depends on timing).
    let mid = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let batches: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT firstsequencenumber, lastsequencenumber FROM auditbatchdata \
             WHERE nodeid = 'node-b' AND lastsequencenumber > firstsequencenumber",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let half = (PER_NODE / 2) as i64;
        let (first, _) = batches
            .iter()
            .min_by_key(|(f, _)| (f - half).abs())
            .copied()
            .expect("node-b has a batch of two rows or more");
        first as usize
    };
    exec(
        &url,
        &format!("DELETE FROM auditrecorddata WHERE {}", row("node-b", mid)),
    )
    .await;
    exec(
        &url,
        &format!(
            "UPDATE auditrecorddata SET additionaldetails = \
             replace(additionaldetails, '10.0.0.7', '10.6.6.6') WHERE {}",
            row("node-c", 20)
        ),
    )
    .await;
    let (code, report, text) = verifylog(&auditor, &auditor_dir, &url);
    assert_eq!(code, 255, "{text}");
    assert_eq!(failed(&report, "node-a").len(), 1, "{report}");
    assert_eq!(failed(&report, "node-a")[0].0, 10);
    let b = node(&report, "node-b");
    assert_eq!(
        b["holes"],
        json!([{"lastVerifiedSequenceNumber": mid - 1, "thisSequenceNumber": mid + 1, "missing": 1}]),
        "{b}"
    );
    let c = failed(&report, "node-c");
    assert!(
        c.len() == 1 && c[0].0 == 20 && c[0].1.contains("wrong signature"),
        "{c:?}"
    );
    // Nothing else anywhere: each finding under its own node.
    assert_findings(
        &report,
        &[
            ("node-a", "failed", 1),
            ("node-b", "holes", 1),
            ("node-c", "failed", 1),
        ],
    );
    assert_eq!(report["rows"], 3 * PER_NODE);
    for line in [
        "Node node-a: verified".to_string(),
        "Node node-b: verified".to_string(),
        "Node node-c: verified".to_string(),
        "ERROR verification failed: node=node-a sequenceNumber=10 ".to_string(),
        format!(
            "ERROR hole: node=node-b lastVerifiedSequenceNumber={} thisSequenceNumber={} (1 missing)",
            mid - 1,
            mid + 1
        ),
        "ERROR verification failed: node=node-c sequenceNumber=20 ".to_string(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("Last sequences"), "{text}");

    eprintln!("{text}");
    eprintln!("{}", serde_json::to_string(&report).unwrap());
    eprintln!(
        "cluster: servers up and loaded after {load_done:?}, whole test {:?}",
        started.elapsed()
    );
}
