//! HSM logs into the signed log (docs/HSM-LOGS.md): pkcs11-tool runs through OpenSC's
//! pkcs11-spy.so over a SoftHSM2 token (init token, init PIN, login, key generation, sign,
//! three wrong PINs); auditseal-ship ships the spy's real log into a running server. One row
//! per call, every row verifies, no PIN anywhere, a second run adds nothing, and `analyze`
//! counts what the log holds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use auditseal_e2e::hsm::MODULE;
use auditseal_e2e::{BACKENDS, Backend, Server, all_rows, bin_dir, cli, new_database};
use serde_json::Value;

const SPY: &str = "/usr/lib/x86_64-linux-gnu/pkcs11-spy.so";
// PINs no hex dump, time stamp or handle of the log is likely to hold by chance.
const SO_PIN: &str = "46082957";
const USER_PIN: &str = "73915284";
const WRONG_PIN: &str = "62840173";

/// A SoftHSM2 configuration with no token yet (log.level = DEBUG), and pkcs11-tool runs logged
/// by the spy.
struct SpiedHsm {
    dir: tempfile::TempDir,
}

/// SoftHSM2 logs with syslog(3) and no openlog(), and there is no syslog daemon here: this
/// shim, preloaded into pkcs11-tool, takes SoftHSM's own syslog() calls and writes each
/// message as rsyslog's file output would (`Mon dd HH:MM:SS host program[pid]: message`).
/// The messages are SoftHSM's; only the daemon is stood in for.
const SYSLOG_SHIM: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
void vsyslog(int pri, const char *fmt, va_list ap) {
    const char *path = getenv("SYSLOG_SHIM_FILE");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (!f) return;
    char stamp[32], host[256] = "localhost";
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%b %e %H:%M:%S", &tm);
    gethostname(host, sizeof host - 1);
    fprintf(f, "%s %s %s[%d]: ", stamp, host, program_invocation_short_name, (int)getpid());
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    fclose(f);
    (void)pri;
}
void syslog(int pri, const char *fmt, ...) { va_list ap; va_start(ap, fmt); vsyslog(pri, fmt, ap); va_end(ap); }
void __syslog_chk(int pri, int flag, const char *fmt, ...) { va_list ap; va_start(ap, fmt); vsyslog(pri, fmt, ap); va_end(ap); (void)flag; }
"#;

impl SpiedHsm {
    fn new() -> SpiedHsm {
        assert!(
            Path::new(SPY).exists(),
            "{SPY} is missing: run scripts/test (installs opensc-pkcs11)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = DEBUG\nslots.removable = false\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("shim.c"), SYSLOG_SHIM).unwrap();
        let cc = Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(dir.path().join("shim.so"))
            .arg(dir.path().join("shim.c"))
            .output()
            .expect("run cc (the Rust toolchain needs it too)");
        assert!(cc.status.success(), "{cc:?}");
        SpiedHsm { dir }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("spy.log")
    }

    /// SoftHSM2's syslog lines, as a syslog file.
    fn syslog(&self) -> PathBuf {
        self.dir.path().join("syslog")
    }

    /// pkcs11-tool through the spy; returns whether it succeeded.
    fn tool(&self, args: &[&str]) -> bool {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.dir.path().join("softhsm2.conf"))
            .env("PKCS11SPY", MODULE)
            .env("PKCS11SPY_OUTPUT", self.log())
            .env("LD_PRELOAD", self.dir.path().join("shim.so"))
            .env("SYSLOG_SHIM_FILE", self.syslog())
            .args(["--module", SPY])
            .args(args)
            .output()
            .expect("run pkcs11-tool (scripts/test installs opensc)");
        out.status.success()
    }
}

/// The calls the spy logged, in order: its `N: C_Name` lines.
fn spy_calls(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let (n, f) = l.split_once(": ")?;
            (n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() && f.starts_with("C_"))
                .then(|| f.trim().to_string())
        })
        .collect()
}

fn write_config(dir: &Path, server: &str, token: &str, log: &Path) -> PathBuf {
    write_config_with(dir, server, token, log, None)
}

/// The agent's configuration: the spy log, and SoftHSM2's syslog file if given.
fn write_config_with(
    dir: &Path,
    server: &str,
    token: &str,
    log: &Path,
    syslog: Option<&Path>,
) -> PathBuf {
    let path = dir.join("ship.toml");
    let mut text = format!(
        "server = '{server}'\ntoken = '{token}'\nstate_dir = '{}'\nhost = 'hsm-host-1'\n\
         batch_size = 50\npoll_ms = 100\n\
         [[source]]\nname = 'spy'\npath = '{}'\nformat = 'pkcs11-spy'\n",
        dir.join("state").display(),
        log.display()
    );
    if let Some(syslog) = syslog {
        text += &format!(
            "[[source]]\nname = 'softhsm'\npath = '{}'\nformat = 'softhsm2-syslog'\n",
            syslog.display()
        );
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the agent once; returns its stderr (it must succeed).
fn ship(config: &Path) -> String {
    let out = Command::new(bin_dir().join("auditseal-ship"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .expect("run auditseal-ship");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "auditseal-ship failed: {err}");
    err
}

fn hsm_rows(
    rows: &[auditseal_core::record::AuditRecord],
) -> Vec<&auditseal_core::record::AuditRecord> {
    rows.iter().filter(|r| r.module == "PKCS11_SPY").collect()
}

/// Every HSM event as the API shows it, details decoded.
async fn api_events(s: &Server) -> Vec<Value> {
    let r = s
        .client()
        .get(format!(
            "{}/api/v1/events?criteria=service+EQ+HSM&limit=10000&order=asc",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    body["events"].as_array().unwrap().clone()
}

fn create_ingest_token(d: &str, url: &str) -> String {
    let (code, out, err) = cli(&[
        "token",
        "create",
        "--name",
        "hsm-shipper",
        "--role",
        "ingest",
        "--data-dir",
        d,
        "--database-url",
        url,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    out.lines().last().unwrap().trim().to_string()
}

/// Each way a PIN could show: as text, as the spy's hex dump (spaced or not), and the base64
/// of the PIN alone (a details value CESeCore's XML stores as B64).
fn pin_forms(pin: &str) -> Vec<String> {
    use base64_forms::encode;
    let spaced: Vec<String> = pin.bytes().map(|b| format!("{b:02X}")).collect();
    vec![
        pin.to_string(),
        spaced.join(" "),
        spaced.concat(),
        spaced.concat().to_lowercase(),
        encode(pin.as_bytes()),
    ]
}

/// Standard base64 without a crate (the test's dependencies stay as they are).
mod base64_forms {
    pub fn encode(data: &[u8]) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

fn assert_no_pin(what: &str, text: &str) {
    for pin in [SO_PIN, USER_PIN, WRONG_PIN] {
        for form in pin_forms(pin) {
            assert!(
                !text.contains(&form),
                "{what} holds the PIN {pin} (as {form:?})"
            );
        }
    }
}

#[tokio::test]
async fn spy_log_of_pkcs11_tool_is_shipped_once_redacted_verified_and_analysed() {
    // The real log: pkcs11-tool through pkcs11-spy over SoftHSM2.
    let hsm = SpiedHsm::new();
    assert!(hsm.tool(&[
        "--init-token",
        "--slot-index",
        "0",
        "--label",
        "spied",
        "--so-pin",
        SO_PIN
    ]));
    assert!(hsm.tool(&[
        "--token-label",
        "spied",
        "--login",
        "--login-type",
        "so",
        "--so-pin",
        SO_PIN,
        "--init-pin",
        "--pin",
        USER_PIN
    ]));
    assert!(hsm.tool(&[
        "--token-label",
        "spied",
        "--login",
        "--pin",
        USER_PIN,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "shipkey",
        "--id",
        "42"
    ]));
    let data = hsm.dir.path().join("data");
    std::fs::write(&data, b"to be signed").unwrap();
    let sig = hsm.dir.path().join("sig");
    assert!(hsm.tool(&[
        "--token-label",
        "spied",
        "--login",
        "--pin",
        USER_PIN,
        "--sign",
        "--mechanism",
        "ECDSA",
        "--label",
        "shipkey",
        "-i",
        data.to_str().unwrap(),
        "-o",
        sig.to_str().unwrap()
    ]));
    for _ in 0..3 {
        assert!(!hsm.tool(&[
            "--token-label",
            "spied",
            "--login",
            "--pin",
            WRONG_PIN,
            "--list-objects"
        ]));
    }
    let log_text = std::fs::read_to_string(hsm.log()).unwrap();
    let syslog_text = std::fs::read_to_string(hsm.syslog()).unwrap();
    let syslog_lines = syslog_text.lines().count();
    assert!(
        syslog_lines > 10 && syslog_text.contains(".cpp("),
        "{syslog_text}"
    );
    // The spy writes the PINs in clear: the test is worth something.
    assert!(log_text.contains(USER_PIN) && log_text.contains(WRONG_PIN));
    let calls = spy_calls(&log_text);
    let failures = log_text
        .lines()
        .filter(|l| l.starts_with("Returned:") && !l.ends_with(" CKR_OK"))
        .count();
    let pin_incorrect = log_text
        .lines()
        .filter(|l| l.starts_with("Returned:") && l.ends_with(" CKR_PIN_INCORRECT"))
        .count();
    assert_eq!(pin_incorrect, 3, "{log_text}");
    assert!(calls.len() > 50, "{calls:?}");
    for f in [
        "C_InitToken",
        "C_InitPIN",
        "C_Login",
        "C_GenerateKeyPair",
        "C_Sign",
    ] {
        assert!(calls.iter().any(|c| c == f), "{f} not in {calls:?}");
    }

    // analyze over the raw file counts what is there.
    let (code, out, err) = cli(&["analyze", "--file", hsm.log().to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["total"], calls.len(), "{report}");
    assert_eq!(report["failure"], failures, "{report}");
    assert_eq!(report["pinIncorrect"], 3, "{report}");
    assert_eq!(report["errorsByRv"]["CKR_PIN_INCORRECT"], 3, "{report}");
    assert_eq!(report["frequency"]["C_Sign"], 1, "{report}");
    assert_eq!(
        report["frequency"]["C_Login"],
        calls.iter().filter(|c| *c == "C_Login").count(),
        "{report}"
    );
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("repeated CKR_PIN_INCORRECT")),
        "{report}"
    );
    assert_no_pin("analyze's report", &out);
    let (code, text, _) = cli(&["analyze", "--file", hsm.log().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        text.contains(&format!("Total operations: {}", calls.len())),
        "{text}"
    );

    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let url = new_database(backend, dir.path()).await;
        let db_url = if backend == Backend::Postgres {
            url.clone()
        } else {
            format!("sqlite://{d}/auditseal.db")
        };
        let mut args = vec!["--data-dir", d, "--node-id", "hsm"];
        if backend == Backend::Postgres {
            args.extend(["--database-url", &url]);
        }
        let s = Server::start(&args).unwrap();
        let token = create_ingest_token(d, &db_url);
        let config = write_config_with(dir.path(), &s.url, &token, &hsm.log(), Some(&hsm.syslog()));

        let first = ship(&config);
        // SoftHSM2's DEBUG lines: one row each; the wrong PINs' decryption failures among them.
        let softhsm: Vec<_> = all_rows(&db_url)
            .await
            .into_iter()
            .filter(|r| r.module == "SOFTHSM2")
            .collect();
        assert_eq!(softhsm.len(), syslog_lines, "{backend:?}: {first}");
        assert!(
            softhsm
                .iter()
                .filter(|r| r.event_status == "FAILURE")
                .count()
                >= 3,
            "{backend:?}: {softhsm:?}"
        );
        let rows = all_rows(&db_url).await;
        let hsm = hsm_rows(&rows);
        assert_eq!(hsm.len(), calls.len(), "{backend:?}: {first}");
        // One row per call, in the log's order.
        let mut by_seq = hsm.clone();
        by_seq.sort_by_key(|r| r.sequence_number);
        let types: Vec<&str> = by_seq.iter().map(|r| r.event_type.as_str()).collect();
        assert_eq!(types, calls.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            hsm.iter().filter(|r| r.event_status == "FAILURE").count(),
            failures
        );
        let wrong: Vec<_> = hsm
            .iter()
            .filter(|r| r.search_detail2.as_deref() == Some("CKR_PIN_INCORRECT"))
            .collect();
        assert_eq!(wrong.len(), 3);
        assert!(wrong.iter().all(|r| r.event_type == "C_Login"
            && r.event_status == "FAILURE"
            && r.module == "PKCS11_SPY"
            && r.auth_token == "spy@hsm-host-1"));
        let events: Vec<Value> = api_events(&s)
            .await
            .into_iter()
            .filter(|e| e["module"] == "PKCS11_SPY")
            .collect();
        assert_eq!(events.len(), calls.len());
        let keygen = events
            .iter()
            .find(|e| e["eventType"] == "C_GenerateKeyPair")
            .unwrap();
        assert_eq!(keygen["searchDetail1"], "shipkey", "{keygen}");
        assert_eq!(keygen["details"]["source"], "spy", "{keygen}");
        assert_eq!(keygen["details"]["host"], "hsm-host-1", "{keygen}");
        assert!(keygen["details"]["counter"].is_string(), "{keygen}");
        assert!(keygen["details"]["offset"].is_u64(), "{keygen}");
        let login = events
            .iter()
            .find(|e| e["eventType"] == "C_Login" && e["eventStatus"] == "SUCCESS")
            .unwrap();
        assert_eq!(
            login["details"]["fields"]["in.pPin"], "[redacted]",
            "{login}"
        );
        assert!(login["customId"].is_string(), "{login}");

        // A second run ships nothing; without its position file it sends everything again,
        // and the server stores none of it twice.
        let second = ship(&config);
        assert!(!second.contains("events stored"), "{second}");
        std::fs::remove_file(dir.path().join("state/spy.pos")).unwrap();
        std::fs::remove_file(dir.path().join("state/softhsm.pos")).unwrap();
        let third = ship(&config);
        assert!(
            third.contains(&format!("0 events stored, {} already stored", calls.len())),
            "{third}"
        );
        assert!(
            third.contains(&format!("0 events stored, {syslog_lines} already stored")),
            "{third}"
        );
        let all_after = all_rows(&db_url).await;
        assert_eq!(hsm_rows(&all_after).len(), calls.len());
        assert_eq!(
            all_after.iter().filter(|r| r.module == "SOFTHSM2").count(),
            syslog_lines
        );

        let (code, out, err) = cli(&[
            "verifylog",
            "--all",
            "--data-dir",
            d,
            "--database-url",
            &db_url,
        ]);
        assert_eq!(code, 0, "{backend:?}: {out}{err}");

        // analyze over the stored events of the spy source says what it said of the file.
        let (code, out, err) = cli(&[
            "analyze",
            "--stored",
            "--source",
            "spy",
            "--json",
            "--data-dir",
            d,
            "--database-url",
            &db_url,
        ]);
        assert_eq!(code, 0, "{backend:?}: {out}{err}");
        let stored: Value = serde_json::from_str(&out).unwrap();
        for field in [
            "total",
            "success",
            "failure",
            "errorsByRv",
            "frequency",
            "sessions",
            "pinIncorrect",
            "pinLocked",
            "findings",
        ] {
            assert_eq!(
                stored[field], report[field],
                "{backend:?}: {field}: {stored}"
            );
        }

        // No PIN in the rows (as stored, and as the API decodes them), the server's log, the
        // agent's output, or the SQLite file.
        let rows = all_rows(&db_url).await;
        assert_no_pin("the database rows", &format!("{rows:?}"));
        assert_no_pin(
            "the API's events",
            &serde_json::to_string(&api_events(&s).await).unwrap(),
        );
        assert_no_pin("the agent's output", &format!("{first}{second}{third}"));
        assert_no_pin(
            "the position file",
            &std::fs::read_to_string(dir.path().join("state/spy.pos")).unwrap(),
        );
        if backend == Backend::Sqlite {
            let bytes = std::fs::read(dir.path().join("auditseal.db")).unwrap();
            assert_no_pin("the SQLite file", &String::from_utf8_lossy(&bytes));
        }
        assert_no_pin("the server's log", &s.stop_and_log());
    }
}

/// Follow mode: a call the spy writes is a committed row within one second.
#[tokio::test]
async fn follow_ships_new_calls_within_a_second() {
    let hsm = SpiedHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let db_url = format!("sqlite://{d}/auditseal.db");
    let s = Server::start(&["--data-dir", d, "--node-id", "follow"]).unwrap();
    let token = create_ingest_token(d, &db_url);
    let config = write_config(dir.path(), &s.url, &token, &hsm.log());
    let mut agent = Command::new(bin_dir().join("auditseal-ship"))
        .args(["--config", config.to_str().unwrap(), "--follow"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let mut seen = 0;
    for round in 0..3 {
        // pkcs11-tool --show-info: a few calls, written as they happen.
        assert!(hsm.tool(&["--show-info"]));
        let written = Instant::now();
        let calls = spy_calls(&std::fs::read_to_string(hsm.log()).unwrap()).len();
        assert!(calls > seen, "round {round}");
        loop {
            let n = api_events(&s).await.len();
            if n == calls {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(1),
                "round {round}: {n} of {calls} rows after {:?}",
                written.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen = calls;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    // The rows of the three rounds are protected and verify.
    s.stop();
    let (code, out, err) = cli(&[
        "verifylog",
        "--all",
        "--data-dir",
        d,
        "--database-url",
        &db_url,
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// A Craton audit log as its documentation describes it, written here: each line's
/// previous_hash is SHA-256 over the previous entry with sorted keys and no spaces (the
/// entries below are written in that form already). Entry 3 is then changed after the fact.
fn craton_fixture() -> (String, String, String) {
    let bodies = [
        r#"{"key_id":null,"operation":"Login","result":{"Success":null},"session_handle":1,"timestamp":1767000000}"#,
        r#"{"key_id":7,"operation":"GenerateKey","result":{"Success":null},"session_handle":1,"timestamp":1767000001}"#,
        r#"{"key_id":7,"operation":"Sign","result":{"Failure":"CKR_KEY_HANDLE_INVALID"},"session_handle":1,"timestamp":1767000002}"#,
        r#"{"key_id":null,"operation":"Login","result":{"Failure":"CKR_PIN_INCORRECT"},"session_handle":2,"timestamp":1767000003}"#,
    ];
    let mut prev = "0".repeat(64);
    let mut lines = Vec::new();
    for b in bodies {
        let line = format!(r#"{},"previous_hash":"{prev}"}}"#, b.trim_end_matches('}'));
        lines.push(line);
        prev = sha256_hex(b.as_bytes());
    }
    // The failed sign rewritten as a success: line 4 no longer links to line 3.
    let forged = r#"{"key_id":7,"operation":"Sign","result":{"Success":null},"session_handle":1,"timestamp":1767000002}"#;
    lines[2] = lines[2].replace(
        r#"{"Failure":"CKR_KEY_HANDLE_INVALID"}"#,
        r#"{"Success":null}"#,
    );
    let line4_prev = sha256_hex(bodies[2].as_bytes());
    (
        lines.join("\n") + "\n",
        line4_prev,
        sha256_hex(forged.as_bytes()),
    )
}

/// Dinamo's native log: lines of its manual, a counter jump (19B to 19E) and a restart.
const DINAMO: &str = "\
2022/01/11 22:31:54 00000052 00000199 EE4E6C03 172.17.0.1 auth try, c: 21, tls: y, 2|172.17.0.1 172.17.0.2:4433 -
2022/01/11 22:31:54 00000052 0000019A EE4E6C03 master auth init, c: 21|172.17.0.1 172.17.0.2:4433 -
2022/01/11 22:31:54 00000052 0000019B EE4E6C03 master auth ok, 172.17.0.1, 2|172.17.0.1 172.17.0.2:4433 -
2022/01/11 22:32:17 00000052 0000019E EE4E6C03 new key prodkey, t: 6, a: 0, c: 21|172.17.0.1 172.17.0.2:4433 master
2022/01/11 22:32:17 00000052 0000019F EE4E6C03 priv key prodkey created|172.17.0.1 172.17.0.2:4433 master
2022/01/12 08:00:00 00000001 00000001 000A3309 session thread up [1]
";

#[tokio::test]
async fn craton_and_dinamo_fixtures_ship_their_events_and_findings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let db_url = format!("sqlite://{d}/auditseal.db");
    let (craton, line4_prev, forged_hash) = craton_fixture();
    std::fs::write(dir.path().join("craton.jsonl"), &craton).unwrap();
    std::fs::write(dir.path().join("dinamo.log"), DINAMO).unwrap();
    let s = Server::start(&["--data-dir", d, "--node-id", "fixtures"]).unwrap();
    let token = create_ingest_token(d, &db_url);
    let config = dir.path().join("ship.toml");
    std::fs::write(
        &config,
        format!(
            "server = '{}'\ntoken = '{token}'\nstate_dir = '{d}/state'\nhost = 'h'\n\
             [[source]]\nname = 'craton'\npath = '{d}/craton.jsonl'\nformat = 'craton'\n\
             [[source]]\nname = 'dinamo'\npath = '{d}/dinamo.log'\nformat = 'dinamo'\n",
            s.url
        ),
    )
    .unwrap();
    ship(&config);
    let events = api_events(&s).await;
    let by_module =
        |m: &str| -> Vec<&Value> { events.iter().filter(|e| e["module"] == m).collect() };

    let craton_events = by_module("CRATON");
    let types: Vec<&str> = craton_events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["Login", "GenerateKey", "Sign", "HSM_CHAIN_BREAK", "Login"]
    );
    let brk = craton_events[3];
    assert_eq!(brk["eventStatus"], "FAILURE");
    assert_eq!(brk["details"]["fields"]["line"], 4, "{brk}");
    assert_eq!(
        brk["details"]["fields"]["previousHash"],
        line4_prev.as_str(),
        "{brk}"
    );
    assert_eq!(
        brk["details"]["fields"]["computedHash"],
        forged_hash.as_str(),
        "{brk}"
    );
    assert_eq!(craton_events[2]["eventStatus"], "SUCCESS");
    assert_eq!(craton_events[4]["searchDetail2"], "CKR_PIN_INCORRECT");

    let dinamo_events = by_module("DINAMO");
    let types: Vec<&str> = dinamo_events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "DINAMO_AUTH_TRY",
            "DINAMO_AUTH_INIT",
            "DINAMO_AUTH_OK",
            "HSM_COUNTER_GAP",
            "DINAMO_KEY_CREATE",
            "DINAMO_KEY",
            "HSM_COUNTER_RESET",
            "DINAMO_SESSION_THREAD"
        ]
    );
    assert_eq!(dinamo_events[3]["details"]["fields"]["missing"], 2);
    assert_eq!(dinamo_events[4]["searchDetail1"], "prodkey");
    assert_eq!(
        dinamo_events[4]["details"]["fields"]["algorithm"],
        "ALG_RSA_2048"
    );
    assert_eq!(dinamo_events[4]["customId"], "EE4E6C03");

    // Nothing twice, even without the position files.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let again = ship(&config);
    assert!(
        again.contains("0 events stored, 5 already stored"),
        "{again}"
    );
    assert!(
        again.contains("0 events stored, 8 already stored"),
        "{again}"
    );
    assert_eq!(api_events(&s).await.len(), events.len());

    // analyze reports the break and the counter findings.
    let (code, out, err) = cli(&[
        "analyze",
        "--file",
        &format!("{d}/craton.jsonl"),
        "--format",
        "craton",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["total"], 4, "{report}");
    let findings = report["findings"].to_string();
    assert!(
        findings.contains("HSM_CHAIN_BREAK") && findings.contains(&forged_hash),
        "{findings}"
    );
    let (code, out, _) = cli(&[
        "analyze",
        "--file",
        &format!("{d}/dinamo.log"),
        "--format",
        "dinamo",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains("HSM_COUNTER_GAP") && out.contains("HSM_COUNTER_RESET"),
        "{out}"
    );

    s.stop();
    let (code, out, err) = cli(&[
        "verifylog",
        "--all",
        "--data-dir",
        d,
        "--database-url",
        &db_url,
    ]);
    assert_eq!(code, 0, "{out}{err}");
}
