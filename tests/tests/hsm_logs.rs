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

/// SoftHSM2 logs with syslog(3) and no openlog(), and there is no syslog daemon on /dev/log
/// here: this shim, preloaded into pkcs11-tool, takes SoftHSM's own syslog() calls. With
/// SYSLOG_SHIM_FILE it appends each message as rsyslog's file output would (`Mon dd HH:MM:SS
/// host program[pid]: message`); with SYSLOG_SHIM_SOCKET it sends it as glibc's syslog() sends
/// to /dev/log (`<PRI>Mon dd HH:MM:SS program: message`, no pid without LOG_PID, facility
/// user) to that Unix socket, where a test's rsyslogd listens. The messages are SoftHSM's;
/// only the daemon's socket is stood in for.
const SYSLOG_SHIM: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
void vsyslog(int pri, const char *fmt, va_list ap) {
    char stamp[32], host[256] = "localhost", msg[8192];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%b %e %H:%M:%S", &tm);
    gethostname(host, sizeof host - 1);
    vsnprintf(msg, sizeof msg, fmt, ap);
    const char *path = getenv("SYSLOG_SHIM_FILE");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (f) {
        fprintf(f, "%s %s %s[%d]: %s\n", stamp, host, program_invocation_short_name, (int)getpid(), msg);
        fclose(f);
    }
    const char *sock = getenv("SYSLOG_SHIM_SOCKET");
    if (sock) {
        char dgram[8448];
        if ((pri & LOG_FACMASK) == 0) pri |= LOG_USER;
        int n = snprintf(dgram, sizeof dgram, "<%d>%s %s: %s", pri, stamp, program_invocation_short_name, msg);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        strncpy(a.sun_path, sock, sizeof a.sun_path - 1);
        int s = socket(AF_UNIX, SOCK_DGRAM, 0);
        if (s >= 0) {
            sendto(s, dgram, n < (int)sizeof dgram ? n : (int)sizeof dgram - 1, 0, (struct sockaddr *)&a, sizeof a);
            close(s);
        }
    }
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
        self.tool_with(args, &[])
    }

    /// A token labelled `label`, its SO PIN and user PIN set.
    fn init_token(&self, label: &str, env: &[(&str, &Path)]) {
        assert!(self.tool_with(
            &[
                "--init-token",
                "--slot-index",
                "0",
                "--label",
                label,
                "--so-pin",
                SO_PIN
            ],
            env
        ));
        assert!(self.tool_with(
            &[
                "--token-label",
                label,
                "--login",
                "--login-type",
                "so",
                "--so-pin",
                SO_PIN,
                "--init-pin",
                "--pin",
                USER_PIN
            ],
            env
        ));
    }

    /// pkcs11-tool through the spy, with more environment (SYSLOG_SHIM_SOCKET).
    fn tool_with(&self, args: &[&str], env: &[(&str, &Path)]) -> bool {
        let out = Command::new("pkcs11-tool")
            .envs(env.iter().copied())
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
    hsm.init_token("spied", &[]);
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

/// A server on SQLite in a temporary directory, and an ingest token for the agent: (the
/// directory, its path, the database URL, the server, the token).
fn stage(node: &str) -> (tempfile::TempDir, String, String, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let db_url = format!("sqlite://{d}/auditseal.db");
    let s = Server::start(&["--data-dir", &d, "--node-id", node]).unwrap();
    let token = create_ingest_token(&d, &db_url);
    (dir, d, db_url, s, token)
}

/// `auditseal-db verifylog --all` finds every row intact.
fn verify_all(d: &str, db_url: &str) {
    let (code, out, err) = cli(&[
        "verifylog",
        "--all",
        "--data-dir",
        d,
        "--database-url",
        db_url,
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Follow mode: a call the spy writes is a committed row within one second.
#[tokio::test]
async fn follow_ships_new_calls_within_a_second() {
    let hsm = SpiedHsm::new();
    let (dir, d, db_url, s, token) = stage("follow");
    let d = d.as_str();
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
    verify_all(d, &db_url);
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

/// `auditseal_hsm_findings_total` of the fixtures' chain break, counter gap and counter reset.
async fn findings_metrics(s: &Server) -> [Option<f64>; 3] {
    let text = s
        .client()
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    [
        ("craton@h", "HSM_CHAIN_BREAK"),
        ("dinamo@h", "HSM_COUNTER_GAP"),
        ("dinamo@h", "HSM_COUNTER_RESET"),
    ]
    .map(|(source, kind)| {
        auditseal_e2e::metric(
            &text,
            &format!(r#"auditseal_hsm_findings_total{{source="{source}",kind="{kind}"}}"#),
        )
    })
}

#[tokio::test]
async fn craton_and_dinamo_fixtures_ship_their_events_and_findings() {
    let (dir, d, db_url, s, token) = stage("fixtures");
    let d = d.as_str();
    let (craton, line4_prev, forged_hash) = craton_fixture();
    std::fs::write(dir.path().join("craton.jsonl"), &craton).unwrap();
    std::fs::write(dir.path().join("dinamo.log"), DINAMO).unwrap();
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
    let findings_before = findings_metrics(&s).await;
    assert_eq!(findings_before, [None, None, None], "no finding yet");
    ship(&config);
    // The server counts each finding stored, by source and kind.
    assert_eq!(
        findings_metrics(&s).await,
        [Some(1.0), Some(1.0), Some(1.0)]
    );
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
    // Replays are not counted again.
    assert_eq!(
        findings_metrics(&s).await,
        [Some(1.0), Some(1.0), Some(1.0)]
    );

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
    verify_all(d, &db_url);
}

/// The agent's stderr so far.
fn agent_output(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the agent's stderr (in `path`) holds a line containing each of `what`.
fn wait_for_output(path: &Path, what: &[String]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = agent_output(path);
        if what
            .iter()
            .all(|w| text.lines().any(|l| l.contains(w.as_str())))
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never wrote {what:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SoftHSM2's DEBUG syslog lines, sent by syslog(3) to a real rsyslogd, forwarded by it to the
/// agent's listeners three ways (UDP with rsyslog's default RFC 3164 form; TCP octet-counted
/// RFC 5424; TCP one message a line, RFC 3164): every line is a row on each, the rows verify,
/// a restart and a re-read store nothing twice, another program's message is counted and
/// dropped, and the PIN is nowhere.
#[tokio::test]
async fn softhsm_syslog_forwarded_by_rsyslog_to_the_listener_is_shipped() {
    use auditseal_e2e::receivers::{Rsyslog, free_port};
    let hsm = SpiedHsm::new();
    let (dir, d, db_url, s, token) = stage("net");
    let d = d.as_str();
    let (udp, tcp, lf) = (free_port(), free_port(), free_port());
    let config = dir.path().join("ship.toml");
    std::fs::write(
        &config,
        format!(
            "server = '{}'\ntoken = '{token}'\nstate_dir = '{d}/state'\nhost = 'hsm-host-1'\n\
             poll_ms = 100\n\
             [[source]]\nname = 'net-udp'\nformat = 'softhsm2-syslog'\nlisten_udp = '127.0.0.1:{udp}'\n\
             [[source]]\nname = 'net-tcp'\nformat = 'softhsm2-syslog'\nlisten_tcp = '127.0.0.1:{tcp}'\n\
             [[source]]\nname = 'net-lf'\nformat = 'softhsm2-syslog'\nlisten_tcp = '127.0.0.1:{lf}'\n",
            s.url
        ),
    )
    .unwrap();
    let agent_log = dir.path().join("agent.stderr");
    let start_agent = || {
        Command::new(bin_dir().join("auditseal-ship"))
            .args(["--config", config.to_str().unwrap(), "--follow"])
            .stderr(std::fs::File::create(&agent_log).unwrap())
            .spawn()
            .unwrap()
    };
    let mut agent = start_agent();
    wait_for_output(
        &agent_log,
        &[
            format!("net-udp: listening on udp 127.0.0.1:{udp}"),
            format!("net-tcp: listening on tcp 127.0.0.1:{tcp}"),
            format!("net-lf: listening on tcp 127.0.0.1:{lf}"),
        ],
    );

    // rsyslogd takes messages on a Unix socket as on /dev/log and forwards them as an
    // rsyslog relay would; its own messages stay in its default ruleset.
    let rdir = dir.path().join("rsyslog");
    let socket = rdir.join("log");
    let conf = format!(
        "global(workDirectory=\"{r}\")\n\
         module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
         input(type=\"imuxsock\" Socket=\"{sock}\" RateLimit.Interval=\"0\" Ruleset=\"fwd\")\n\
         ruleset(name=\"fwd\") {{\n\
         \x20 action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{udp}\" protocol=\"udp\")\n\
         \x20 action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{tcp}\" protocol=\"tcp\" \
         TCP_Framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\")\n\
         \x20 action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{lf}\" protocol=\"tcp\")\n\
         \x20 action(type=\"omfile\" file=\"{r}/all.log\")\n\
         }}\n",
        r = rdir.display(),
        sock = socket.display(),
    );
    let rsyslog = Rsyslog::start_with_socket(&rdir, &conf, &socket);

    // Another program's message first: counted, dropped.
    let logger = Command::new("logger")
        .arg("-u")
        .arg(&socket)
        .args(["-t", "cron", "(root) CMD (true)"])
        .output()
        .expect("logger (bsdutils)");
    assert!(logger.status.success(), "{logger:?}");
    // SoftHSM2 at DEBUG: a token, a login with its PIN, a key, three wrong PINs.
    let env = [("SYSLOG_SHIM_SOCKET", socket.as_path())];
    hsm.init_token("net", &env);
    for _ in 0..3 {
        assert!(!hsm.tool_with(
            &[
                "--token-label",
                "net",
                "--login",
                "--pin",
                WRONG_PIN,
                "--list-objects"
            ],
            &env
        ));
    }
    // What SoftHSM sent (the shim writes the file too).
    let sent = std::fs::read_to_string(hsm.syslog()).unwrap();
    let n = sent.lines().count();
    assert!(n > 10 && sent.contains(".cpp("), "{sent}");

    // Every line arrives on each listener, and the other program's message is counted.
    let counted: Vec<String> = ["net-udp", "net-tcp", "net-lf"]
        .iter()
        .map(|name| {
            format!(
                "{name}: received {n} SoftHSM2 lines, 1 messages of other programs (dropped), \
                 0 unreadable, 0 lost"
            )
        })
        .collect();
    wait_for_output(&agent_log, &counted);
    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events = api_events(&s).await;
        if events.len() >= 3 * n {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} rows:\n{}",
            events.len(),
            3 * n,
            agent_output(&agent_log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(events.len(), 3 * n);
    let messages_of = |source: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["authToken"] == format!("{source}@hsm-host-1"))
            .map(|e| {
                assert_eq!(e["module"], "SOFTHSM2", "{e}");
                assert_eq!(e["details"]["fields"]["program"], "pkcs11-tool", "{e}");
                e["details"]["fields"]["message"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    // The same messages, in SoftHSM's order, on each way.
    let want: Vec<String> = sent
        .lines()
        .map(|l| {
            let m = l.split_once("]: ").unwrap().1;
            m.split_once(' ').unwrap().1.trim().to_string()
        })
        .collect();
    for source in ["net-udp", "net-tcp", "net-lf"] {
        assert_eq!(messages_of(source), want, "{source}");
    }
    let failures = events
        .iter()
        .filter(|e| e["eventStatus"] == "FAILURE")
        .count();
    assert!(failures >= 9, "{failures} failures");
    let tcp_event = events
        .iter()
        .find(|e| e["authToken"] == "net-tcp@hsm-host-1")
        .unwrap();
    assert!(
        tcp_event["details"]["file"]
            .as_str()
            .unwrap()
            .ends_with("state/net-tcp.spool"),
        "{tcp_event}"
    );
    // RFC 5424's time stamp is kept as the source's time.
    assert!(
        tcp_event["details"]["time"].as_str().unwrap().contains('T'),
        "{tcp_event}"
    );

    // A restart (SIGKILL) stores nothing twice; without the position files, a one-shot run
    // sends every spooled line again and each is answered as a replay.
    let _ = agent.kill();
    let _ = agent.wait();
    let first_output = agent_output(&agent_log);
    agent = start_agent();
    wait_for_output(
        &agent_log,
        &[format!("net-lf: listening on tcp 127.0.0.1:{lf}")],
    );
    let _ = agent.kill();
    let _ = agent.wait();
    let restarted_output = agent_output(&agent_log);
    assert!(
        !restarted_output.contains("events stored"),
        "{restarted_output}"
    );
    for name in ["net-udp", "net-tcp", "net-lf"] {
        std::fs::remove_file(dir.path().join(format!("state/{name}.pos"))).unwrap();
    }
    let again = ship(&config);
    for name in ["net-udp", "net-tcp", "net-lf"] {
        assert!(
            again.contains(&format!("{name}: 0 events stored, {n} already stored")),
            "{again}"
        );
    }
    assert_eq!(api_events(&s).await.len(), 3 * n);
    drop(rsyslog);

    // No PIN in the rows, the API's events, the spools, the agent's output or the server's log.
    let rows = all_rows(&db_url).await;
    assert_no_pin("the database rows", &format!("{rows:?}"));
    assert_no_pin(
        "the API's events",
        &serde_json::to_string(&api_events(&s).await).unwrap(),
    );
    for name in ["net-udp", "net-tcp", "net-lf"] {
        let spool = std::fs::read_to_string(dir.path().join(format!("state/{name}.spool")));
        assert_no_pin("a spool", &spool.unwrap());
    }
    assert_no_pin(
        "the agent's output",
        &format!("{first_output}{restarted_output}{again}"),
    );
    assert_no_pin("the server's log", &s.stop_and_log());
    verify_all(d, &db_url);
}

/// A rust-hsm call line.
fn rust_hsm_line(func: &str, op_id: u32) -> String {
    format!(
        r#"{{"ts":"2026-12-03T11:00:0{op_id}Z","func":"{func}","rv":0,"rv_name":"CKR_OK","dur_ms":1.5,"session":1,"op_id":{op_id}}}"#
    ) + "\n"
}

/// A batch the server rejects for good (a call whose name holds a NUL, which a row cannot
/// store: 400): following, the agent writes one ERROR naming the source, the file and the
/// record's position, ships nothing more of that source, goes on with the others, and exits
/// with status 1 once every source is stopped.
#[tokio::test]
async fn a_rejected_batch_stops_its_source_with_an_error_naming_the_position() {
    let (dir, d, _, s, token) = stage("rejected");
    let d = d.as_str();
    let bad = dir.path().join("bad.json");
    let first = rust_hsm_line("C_Initialize", 1);
    std::fs::write(
        &bad,
        format!(
            "{first}{}{}",
            rust_hsm_line("C_Sign\\u0000", 2),
            rust_hsm_line("C_Finalize", 3)
        ),
    )
    .unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, rust_hsm_line("C_Initialize", 1)).unwrap();
    let config_for = |name: &str, sources: &[(&str, &Path)]| {
        let mut text = format!(
            "server = '{}'\ntoken = '{token}'\nstate_dir = '{d}/state'\nhost = 'h'\n\
             batch_size = 1\npoll_ms = 100\n",
            s.url
        );
        for (source, path) in sources {
            text += &format!(
                "[[source]]\nname = '{source}'\npath = '{}'\nformat = 'rust-hsm'\n",
                path.display()
            );
        }
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let config = config_for("ship.toml", &[("bad", &bad), ("good", &good)]);
    let agent_log = dir.path().join("agent.stderr");
    let mut agent = Command::new(bin_dir().join("auditseal-ship"))
        .args(["--config", config.to_str().unwrap(), "--follow"])
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .spawn()
        .unwrap();
    let error = format!(
        "auditseal-ship: ERROR: source bad: the server rejected the batch with the record at {} \
         offset {} (line 2): 400 ",
        bad.display(),
        first.len()
    );
    wait_for_output(&agent_log, std::slice::from_ref(&error));

    // The other source goes on: a line added to it is shipped.
    let count = |events: &[Value], source: &str| {
        events
            .iter()
            .filter(|e| e["authToken"] == format!("{source}@h"))
            .count()
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&good)
        .unwrap();
    std::io::Write::write_all(&mut f, rust_hsm_line("C_Finalize", 2).as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = api_events(&s).await;
        if count(&events, "good") == 2 {
            // The stopped source: its first call only, never what follows the rejected one.
            assert_eq!(count(&events, "bad"), 1);
            break;
        }
        assert!(Instant::now() < deadline, "{}", agent_output(&agent_log));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several passes later, still one ERROR: the batch was not sent again.
    let output = agent_output(&agent_log);
    assert_eq!(output.matches(&error).count(), 1, "{output}");
    assert!(output.contains("NUL"), "the server's reason: {output}");
    assert!(agent.try_wait().unwrap().is_none(), "{output}");
    let _ = agent.kill();
    let _ = agent.wait();

    // With no source left, the agent stops: status 1.
    let config = config_for("bad-only.toml", &[("bad", &bad)]);
    let mut agent = Command::new(bin_dir().join("auditseal-ship"))
        .args(["--config", config.to_str().unwrap(), "--follow"])
        .stderr(std::fs::File::create(&agent_log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "{}", agent_output(&agent_log));
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = agent_output(&agent_log);
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(output.contains(&error), "{output}");
    assert!(output.contains("every source is stopped"), "{output}");
    assert_eq!(count(&api_events(&s).await, "bad"), 1);
}
