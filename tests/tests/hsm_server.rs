//! The server and the CLI on real SoftHSM2 tokens, each test with its own token (each process
//! has its own PKCS#11 context): rows verify with verifylog, OpenSSL and Java; a key rollover
//! verifies end to end; an HSM outage gives 503s and recovery with no gap; a wrong PIN is a clear
//! start-up error; a SignServer configuration runs unchanged.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use auditseal_core::format::statement::SignedStatement;
use auditseal_e2e::hsm::{MODULE, PIN, SoftHsm};
use auditseal_e2e::metric;
use auditseal_e2e::{Backend, Server, all_rows, cli_env, event, java_verify, new_database};
use serde_json::Value;

fn pkcs11_toml(dir: &Path, entries: &[(i32, &str)], current: i32, pin_line: &str) -> String {
    let mut t = format!("[protection]\nkeyid = {current}\n");
    for (keyid, label) in entries {
        t += &format!(
            "[[protection.keys]]\nkind = 'pkcs11'\nkeyid = {keyid}\nlibrary = '{MODULE}'\nslot_label = 'audit'\nkey_label = '{label}'\n{pin_line}\n"
        );
    }
    let path = dir.join(format!("auditseal-{current}.toml"));
    std::fs::write(&path, &t).unwrap();
    path.to_str().unwrap().to_string()
}

fn env(h: &SoftHsm) -> [(&'static str, &OsStr); 1] {
    [("SOFTHSM2_CONF", h.conf().into_os_string().leak())]
}

async fn post(s: &Server, body: &Value) -> (u16, Value) {
    let r = s
        .client()
        .post(format!("{}/api/v1/events", s.url))
        .json(body)
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap_or(Value::Null))
}

fn openssl_verifies(pubkey: &Path, data: &[u8], sig: &[u8], dir: &Path) -> bool {
    std::fs::write(dir.join("d"), data).unwrap();
    std::fs::write(dir.join("s"), sig).unwrap();
    Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            pubkey.to_str().unwrap(),
            "-signature",
        ])
        .arg(dir.join("s"))
        .arg(dir.join("d"))
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn hsm_signed_rows_verify_with_three_verifiers_and_across_a_rollover() {
    let h = SoftHsm::new("audit");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Postgres, dir.path()).await;
    let pin = "pin_env = 'AUDIT_PIN'".to_string();
    let mut e = env(&h).to_vec();
    e.push(("AUDIT_PIN", OsStr::new(PIN)));

    // Keyid 1: RSA in the HSM.
    let conf1 = pkcs11_toml(dir.path(), &[(1, "rsakey")], 1, &pin);
    let s = Server::start_env(
        &[
            "--config",
            &conf1,
            "--data-dir",
            d,
            "--node-id",
            "hsm1",
            "--database-url",
            &url,
        ],
        &e,
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(post(&s, &event("PROCESS")).await.0, 201);
    }
    let keys: Value = auditseal_e2e::get(format!("{}/api/v1/keys", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rsa_pem = dir.path().join("rsa.pem");
    std::fs::write(&rsa_pem, keys["keys"][0]["publicKeyPem"].as_str().unwrap()).unwrap();
    assert!(!s.log().contains(PIN), "the PIN must never be logged");
    s.stop();

    // Rollover: keyid 2 (EC in the HSM) protects new rows; keyid 1 stays for verification.
    let conf2 = pkcs11_toml(dir.path(), &[(2, "eckey"), (1, "rsakey")], 2, &pin);
    let s = Server::start_env(
        &[
            "--config",
            &conf2,
            "--data-dir",
            d,
            "--node-id",
            "hsm1",
            "--database-url",
            &url,
        ],
        &e,
    )
    .unwrap();
    for _ in 0..3 {
        let (st, ack) = post(&s, &event("KEYGEN")).await;
        assert_eq!(st, 201, "{ack}");
    }
    let keys: Value = auditseal_e2e::get(format!("{}/api/v1/keys", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ec_pem = dir.path().join("ec.pem");
    let ec = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["keyid"] == 2)
        .unwrap();
    assert_eq!(ec["algorithm"], "SHA256WithECDSA");
    std::fs::write(&ec_pem, ec["publicKeyPem"].as_str().unwrap()).unwrap();
    s.stop();

    // 1. verifylog across the rollover.
    let (code, out, err) = cli_env(
        &[
            "--config",
            &conf2,
            "--data-dir",
            d,
            "--database-url",
            &url,
            "verifylog",
            "--all",
        ],
        &e,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("{hsm1=6}"), "{out}");

    // 2. OpenSSL and 3. Java, each row with the key its keyid names (row 0 is the first admin
    // token's TOKEN_CREATE, signed with keyid 1 like the next three).
    let rows = all_rows(&url).await;
    assert_eq!(rows.len(), 7);
    for r in &rows {
        let p = r.row_protection.as_deref().unwrap();
        let (head, sig) = p.rsplit_once(':').unwrap();
        let pem = if head == "1:2:1" {
            &rsa_pem
        } else {
            assert_eq!(head, "1:2:2");
            &ec_pem
        };
        assert!(
            openssl_verifies(
                pem,
                r.protect_string().as_bytes(),
                &hex::decode(sig).unwrap(),
                dir.path()
            ),
            "row {}",
            r.sequence_number
        );
    }
    assert_eq!(java_verify(&rows[..4], &rsa_pem), "OK\nOK\nOK\nOK\n");
    assert_eq!(java_verify(&rows[4..], &ec_pem), "OK\nOK\nOK\n");

    // An auditor without the HSM: keyid 1 and 2 as exported public keys only.
    let (code, _, err) = cli_env(
        &[
            "--config",
            &conf2,
            "--data-dir",
            d,
            "keys",
            "export",
            "--keyid",
            "1",
            "--out",
            dir.path().join("k1.pem").to_str().unwrap(),
        ],
        &e,
    );
    assert_eq!(code, 0, "{err}");
    let auditor = dir.path().join("auditor.toml");
    std::fs::write(
        &auditor,
        "[protection]\nenable_sign = false\n[[protection.keys]]\nkind = 'public'\nkeyid = 1\nfile = 'k1.pem'\n[[protection.keys]]\nkind = 'public'\nkeyid = 2\nfile = 'ec.pem'\n",
    )
    .unwrap();
    let (code, out, _) = auditseal_e2e::cli(&[
        "--config",
        auditor.to_str().unwrap(),
        "--data-dir",
        d,
        "--database-url",
        &url,
        "verifylog",
        "--all",
    ]);
    assert_eq!(code, 0, "{out}");
    // Without the retired key, its rows fail, named by keyid.
    std::fs::write(&auditor, "[protection]\nenable_sign = false\n[[protection.keys]]\nkind = 'public'\nkeyid = 2\nfile = 'ec.pem'\n").unwrap();
    let (code, out, _) = auditseal_e2e::cli(&[
        "--config",
        auditor.to_str().unwrap(),
        "--data-dir",
        d,
        "--database-url",
        &url,
        "verifylog",
        "--all",
    ]);
    assert_eq!(code, 255, "{out}");
    let rows_failed = out
        .lines()
        .filter(|l| {
            l.contains("ERROR verification failed")
                && l.contains("no key is configured for keyid 1")
        })
        .count();
    // The three events and the first admin token's TOKEN_CREATE were signed with keyid 1.
    assert_eq!(rows_failed, 4, "{out}");
    // A checkpoint the old key signed (the server writes one when it stops) is named too.
    assert!(
        out.lines()
            .filter(|l| l.contains("ERROR checkpoint"))
            .all(|l| l.contains("no key is configured for keyid 1")),
        "{out}"
    );

    // keys list / test on the HSM configuration.
    let (code, out, _) = cli_env(&["--config", &conf2, "--data-dir", d, "keys", "test"], &e);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.matches(": OK (signed and verified a probe)").count(),
        2,
        "{out}"
    );
    let (_, out, _) = cli_env(&["--config", &conf2, "--data-dir", d, "keys", "list"], &e);
    assert!(
        out.contains("SHA256WithECDSA") && out.contains("eckey") && out.contains("rsakey"),
        "{out}"
    );
}

#[tokio::test]
async fn hmac_key_in_the_hsm_protects_and_verifies_version_1_rows() {
    let h = SoftHsm::new("audit");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let conf = pkcs11_toml(dir.path(), &[(7, "hmackey")], 7, &format!("pin = '{PIN}'"));
    let e = env(&h);
    let s = Server::start_env(
        &["--config", &conf, "--data-dir", d, "--node-id", "mac"],
        &e,
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(post(&s, &event("PROCESS")).await.0, 201);
    }
    let list: Value = auditseal_e2e::get(format!("{}/api/v1/events", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for ev in list["events"].as_array().unwrap() {
        assert!(
            ev["rowProtection"].as_str().unwrap().starts_with("1:1:7:"),
            "{ev}"
        );
        assert_eq!(ev["verification"]["valid"], true);
    }
    s.stop();
    let (code, out, _) = cli_env(
        &["--config", &conf, "--data-dir", d, "verifylog", "--all"],
        &e,
    );
    // Row 0 is the first admin token's TOKEN_CREATE.
    assert!(code == 0 && out.contains("{mac=3}"), "{out}");
}

#[tokio::test]
async fn a_wrong_pin_is_a_clear_start_up_error_that_never_shows_the_pin() {
    let h = SoftHsm::new("audit");
    let dir = tempfile::tempdir().unwrap();
    let conf = pkcs11_toml(dir.path(), &[(1, "rsakey")], 1, "pin = '31337999'");
    let err = Server::start_env(
        &[
            "--config",
            &conf,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &env(&h),
    )
    .err()
    .expect("a wrong PIN must stop the start");
    assert!(err.contains("refused the PIN"), "{err}");
    assert!(err.contains("ALERT"), "PIN refusals are an alert: {err}");
    assert!(
        !err.contains("31337999"),
        "the PIN must never be shown: {err}"
    );
}

#[tokio::test]
async fn hsm_outage_gives_503s_then_recovery_with_nothing_lost_and_no_gap() {
    let h = SoftHsm::new("audit");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Postgres, dir.path()).await;
    let conf = pkcs11_toml(dir.path(), &[(1, "rsakey")], 1, &format!("pin = '{PIN}'"));
    let s = Arc::new(
        Server::start_env(
            &[
                "--config",
                &conf,
                "--data-dir",
                d,
                "--node-id",
                "outage",
                "--database-url",
                &url,
            ],
            &env(&h),
        )
        .unwrap(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (s, stop) = (s.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), 0u32);
            // Bounded: at most 3000 requests per worker, stopped by the test well before that.
            for _ in 0..3000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (st, body) = post(&s, &event("PROCESS")).await;
                match st {
                    201 => acked.push(body["pk"].as_str().unwrap().to_string()),
                    503 => {
                        assert_eq!(body["error"], "token_unavailable", "{body}");
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("unexpected {other}: {body}"),
                }
            }
            (acked, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let away = h.dir.path().join("tokens-away");
    std::fs::rename(h.tokens_dir(), &away).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::rename(&away, h.tokens_dir()).unwrap();
    let restored_at = auditseal_core::time::now_millis();
    // Recovery: the server finds the token again by itself.
    tokio::time::sleep(Duration::from_millis(5000)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut acked, mut refused) = (Vec::new(), 0);
    for w in workers {
        let (a, r) = w.await.unwrap();
        acked.extend(a);
        refused += r;
    }
    assert!(refused > 0, "the outage must have been seen as 503s");
    let rows = all_rows(&url).await;
    let log = s.log();
    assert!(log.contains("re-initialised the PKCS#11 module"), "{log}");
    // The key's outage is logged at its start and its end, not once per refused event.
    let starts = log.matches("the signing key cannot sign").count();
    assert!(
        (1..=3).contains(&starts) && u64::from(refused) > 3 * starts as u64,
        "{starts} starts for {refused} refusals: {log}"
    );
    assert!(log.contains("the signing key signs again after"), "{log}");
    assert!(
        rows.iter().any(|r| r.time_stamp > restored_at),
        "events are accepted again after the token came back, without a restart"
    );
    // Besides the first admin token's TOKEN_CREATE (row 0), the server's own.
    assert_eq!(
        rows.len(),
        acked.len() + 1,
        "every row is an acknowledged event, and every acknowledged event is a row"
    );
    let pks: std::collections::HashSet<_> = rows.iter().map(|r| r.pk.clone()).collect();
    assert!(acked.iter().all(|pk| pks.contains(pk)));
    drop(s);
    let (code, out, err) = cli_env(
        &[
            "--config",
            &conf,
            "--data-dir",
            d,
            "--database-url",
            &url,
            "verifylog",
            "--all",
        ],
        &env(&h),
    );
    assert_eq!(code, 0, "no gap, no bad row: {out}{err}");
    assert!(
        out.contains(&format!("{{outage={}}}", rows.len() - 1)),
        "{out}"
    );
}

#[tokio::test]
async fn a_signserver_configuration_runs_server_and_cli_unchanged() {
    let h = SoftHsm::new("SignServer audit");
    h.tool(&[
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--label",
        "dbProtKey",
        "--id",
        "04",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let conf = dir.path().join("signserver-conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("databaseprotection.properties"),
        format!(
            "# as SignServer ships it, with our values\n\
             databaseprotection.enablesign = true\n\
             databaseprotection.enableverify = true\n\
             databaseprotection.erroronverifyfail = true\n\
             databaseprotection.keyid = 400\n\
             databaseprotection.keyid.0 = 400\n\
             databaseprotection.keylabel.0 = dbProtKey\n\
             databaseprotection.classname.0 = org.cesecore.keys.token.PKCS11CryptoToken\n\
             databaseprotection.properties.0 = sharedLibrary={MODULE}, slotLabelType=SLOT_LABEL, \\\n    slotLabelValue=SignServer audit\n\
             databaseprotection.data.0 =\n\
             databaseprotection.tokenpin.0 = {PIN}\n\
             databaseprotection.version.0 = 2\n\
             databaseprotection.sigalg.0 = SHA256WithRSA\n"
        ),
    )
    .unwrap();
    std::fs::write(
        conf.join("cesecore.properties"),
        "cluster.nodeid=signserver-node-7\n",
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    let s = Server::start_env(&["--signserver-conf", c, "--data-dir", d], &env(&h)).unwrap();
    let (st, ack) = post(&s, &event("PROCESS")).await;
    assert_eq!(st, 201, "{ack}");
    assert_eq!(ack["nodeId"], "signserver-node-7");
    let one: Value = auditseal_e2e::get(format!(
        "{}/api/v1/events/{}",
        s.url,
        ack["pk"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(
        one["rowProtection"]
            .as_str()
            .unwrap()
            .starts_with("1:2:400:"),
        "{one}"
    );
    s.stop();
    // The CLI reads the same directory, before or after the subcommand.
    let (code, out, err) = cli_env(
        &[
            "verifylog",
            "--all",
            "--signserver-conf",
            c,
            "--data-dir",
            d,
        ],
        &env(&h),
    );
    assert_eq!(code, 0, "{out}{err}");
    // Row 0 is the first admin token's TOKEN_CREATE, row 1 the event.
    assert!(out.contains("{signserver-node-7=1}"), "{out}");
    let (code, out, _) = cli_env(
        &["--signserver-conf", c, "--data-dir", d, "keys", "list"],
        &env(&h),
    );
    assert!(
        code == 0 && out.contains("400") && out.contains("dbProtKey"),
        "{out}"
    );
    // A malformed entry is reported with its key and line.
    std::fs::write(
        conf.join("databaseprotection.properties"),
        "databaseprotection.keyid = 1\ndatabaseprotection.keyid.0 = one\n",
    )
    .unwrap();
    let (code, _, err) = cli_env(
        &["--signserver-conf", c, "--data-dir", d, "keys", "list"],
        &env(&h),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("databaseprotection.keyid.0") && err.contains(":2"),
        "{err}"
    );
}

#[tokio::test]
async fn batched_device_on_an_hsm_key_signs_statements_that_openssl_verifies() {
    let h = SoftHsm::new("audit");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Postgres, dir.path()).await;
    let conf = pkcs11_toml(dir.path(), &[(5, "rsakey")], 5, &format!("pin = '{PIN}'"));
    let e = env(&h);
    let s = Server::start_env(
        &[
            "--config",
            &conf,
            "--data-dir",
            d,
            "--node-id",
            "hb",
            "--database-url",
            &url,
            "--device",
            "batched",
        ],
        &e,
    )
    .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let u = s.url.clone();
            tokio::spawn(async move {
                let c = auditseal_e2e::client_for(&u);
                for _ in 0..10 {
                    let r = c
                        .post(format!("{u}/api/v1/events"))
                        .json(&event("PROCESS"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 201);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let keys: Value = auditseal_e2e::get(format!("{}/api/v1/keys", s.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pem = dir.path().join("k.pem");
    std::fs::write(&pem, keys["keys"][0]["publicKeyPem"].as_str().unwrap()).unwrap();
    s.stop();
    let (code, out, err) = cli_env(
        &[
            "--config",
            &conf,
            "--data-dir",
            d,
            "--database-url",
            &url,
            "verifylog",
            "--all",
        ],
        &e,
    );
    // 80 events after the first admin token's TOKEN_CREATE (row 0).
    assert!(code == 0 && out.contains("{hb=80}"), "{out}{err}");
    // Each batch statement's signature checks with OpenSSL and the published key.
    let store = auditseal_core::store::open(&url).await.unwrap();
    let batches = store
        .read_batches(auditseal_core::store::Chunk::new("hb", 0, None, 1000))
        .await
        .unwrap();
    assert!(!batches.is_empty());
    for b in &batches {
        let sig = hex::decode(b.statement_protection.rsplit_once(':').unwrap().1).unwrap();
        assert!(b.statement_protection.starts_with("2:2:5:"));
        assert!(
            openssl_verifies(&pem, &b.statement(), &sig, dir.path()),
            "batch {}",
            b.first_sequence_number
        );
    }
}

/// The user PIN changed on the token while the server runs: once the server has to log in
/// again (the token went away and came back), the token refuses its PIN. The refusal is an
/// ALERT and a count of C_Login CKR_PIN_INCORRECT in the metrics (what the PIN alert reads);
/// the PIN is not tried again (each try could count towards locking the token), so more events
/// add no refusal; events are refused 503 token_unavailable, the signing key is not ready, the
/// PINs never appear in the log; with the PIN changed back, a restarted server stores events.
#[tokio::test]
async fn a_refused_pin_is_counted_by_return_value_and_never_tried_again() {
    const NEW_PIN: &str = "86420975";
    let h = SoftHsm::new("audit");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let url = new_database(Backend::Sqlite, dir.path()).await;
    let conf = pkcs11_toml(dir.path(), &[(1, "rsakey")], 1, &format!("pin = '{PIN}'"));
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let bind = format!("server.metrics_bind={metrics_addr}");
    let args = [
        "--config",
        &conf,
        "--data-dir",
        d,
        "--node-id",
        "pin",
        "--database-url",
        &url,
        "--set",
        &bind,
    ];
    let s = Server::start_env(&args, &env(&h)).unwrap();
    let metrics = format!("http://{metrics_addr}/metrics");
    let scrape = || async { reqwest::get(&metrics).await.unwrap().text().await.unwrap() };
    let login = |result: &str| {
        format!(r#"auditseal_token_calls_total{{keyid="1",function="C_Login",result="{result}"}}"#)
    };
    assert_eq!(post(&s, &event("BEFORE")).await.0, 201);
    let text = scrape().await;
    assert!(metric(&text, &login("CKR_OK")) >= Some(1.0), "{text}");
    assert_eq!(
        metric(&text, &login("CKR_PIN_INCORRECT")),
        Some(0.0),
        "{text}"
    );
    let signed = r#"auditseal_token_calls_total{keyid="1",function="C_Sign",result="CKR_OK"}"#;
    assert!(metric(&text, signed) >= Some(1.0), "{text}");

    h.tool(&["--change-pin", "--new-pin", NEW_PIN]);
    // The server's sessions stay logged in until the token goes away and comes back.
    let away = h.dir.path().join("tokens-away");
    std::fs::rename(h.tokens_dir(), &away).unwrap();
    let t = std::time::Instant::now();
    while post(&s, &event("AWAY")).await.0 != 503 {
        assert!(
            t.elapsed().as_secs() < 10,
            "the token going away was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::rename(&away, h.tokens_dir()).unwrap();

    let t = std::time::Instant::now();
    let refusals = loop {
        let (st, body) = post(&s, &event("REFUSED")).await;
        assert_ne!(st, 201, "the old PIN must not work: {body}");
        assert_eq!(body["error"], "token_unavailable", "{body}");
        let text = scrape().await;
        if let Some(n) = metric(&text, &login("CKR_PIN_INCORRECT")).filter(|n| *n >= 1.0) {
            break n;
        }
        assert!(t.elapsed().as_secs() < 30, "no PIN refusal counted: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // More events, more than 2 s apart (the module may look for the token again): the PIN is
    // not offered to the token again.
    for _ in 0..5 {
        let (st, body) = post(&s, &event("REFUSED")).await;
        assert_eq!(
            (st, &body["error"]),
            (503, &Value::from("token_unavailable")),
            "{body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = scrape().await;
    assert_eq!(
        metric(&text, &login("CKR_PIN_INCORRECT")),
        Some(refusals),
        "{text}"
    );
    assert_eq!(
        metric(&text, "auditseal_signing_key_ready"),
        Some(0.0),
        "{text}"
    );
    let log = s.stop_and_log();
    assert!(
        log.contains("ALERT: the token refused the PIN (CKR_PIN_INCORRECT)"),
        "{log}"
    );
    assert!(!log.contains(NEW_PIN), "the PIN must never be shown: {log}");

    // The PIN back as configured: a restarted server stores events.
    let back = h
        .cmd("pkcs11-tool")
        .args([
            "--module",
            MODULE,
            "--token-label",
            "audit",
            "--login",
            "--pin",
            NEW_PIN,
        ])
        .args(["--change-pin", "--new-pin", PIN])
        .output()
        .unwrap();
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    let s = Server::start_env(&args, &env(&h)).unwrap();
    assert_eq!(post(&s, &event("AFTER")).await.0, 201);
    s.stop();
}
