//! `auditseal-db` writing to a pipe whose reader has gone (`auditseal-db verifylog --all | head`):
//! every command that prints stops quietly with status 141, never with a panic.

use std::io::Read;
use std::process::{Command, Output, Stdio};

use auditseal_e2e::{Server, bin_dir, cli, event, exec};

/// Status of a command whose stdout was closed early (128 + SIGPIPE, as a shell reports it).
const STDOUT_CLOSED: i32 = 141;

fn auditseal_db(args: &[&str]) -> Command {
    let mut c = Command::new(bin_dir().join("auditseal-db"));
    c.args(args).env_remove("AUDITSEAL_DATABASE_URL");
    c
}

/// Runs `auditseal-db` with stdout a pipe whose reading end is closed before it starts, so its
/// first write fails, however short the output.
fn with_closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    auditseal_db(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap()
}

#[tokio::test]
async fn commands_stop_quietly_when_stdout_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let s = Server::start(&["--data-dir", d, "--node-id", "pipe"]).unwrap();
    // 3000 rows, each reported once changed below: a report far larger than a pipe holds.
    let events: Vec<_> = (0..3000).map(|_| event("PROCESS")).collect();
    let r = s
        .client()
        .post(format!("{}/api/v1/events:batch", s.url))
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    s.stop();
    let segment = dir.path().join("segment");
    let before = (auditseal_core::time::now_millis() + 1).to_string();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let (code, _, err) = cli(&[
        "--data-dir",
        d,
        "--node-id",
        "pipe",
        "archive",
        "--before",
        &before,
        "--export-only",
        "--out",
        segment.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let url = format!("sqlite://{d}/auditseal.db");
    exec(&url, "UPDATE auditrecorddata SET eventtype = 'CHANGED'").await;

    let report = ["--data-dir", d, "verifylog", "--all", "--quiet"];
    let (code, full, _) = cli(&report);
    assert_eq!(code, 255);
    assert!(full.len() > 256 * 1024, "{} bytes", full.len());

    // As `| head`: read the first part, then close the pipe while verifylog is still writing.
    let mut child = auditseal_db(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut head = [0u8; 4096];
    stdout.read_exact(&mut head).unwrap();
    assert!(full.as_bytes().starts_with(&head));
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(STDOUT_CLOSED), "{err}");
    assert!(err.trim().is_empty(), "{err}");

    let seg = segment.to_str().unwrap();
    let commands: [&[&str]; 10] = [
        &["verifylog", "--all", "--quiet", "--json"],
        &["verifylog", "--all"],
        &["keys", "list"],
        &["keys", "list", "--json"],
        &["keys", "test"],
        &["keys", "export", "--keyid", "1"],
        &["checkpoint", "list"],
        &["checkpoint", "export", "--out", "-"],
        &["token", "list"],
        &["verify-export", seg],
    ];
    for c in commands {
        let mut args = vec!["--data-dir", d];
        args.extend(c);
        let out = with_closed_stdout(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(STDOUT_CLOSED), "{c:?}: {err}");
        assert!(!err.contains("panicked"), "{c:?}: {err}");
    }

    // A new token that cannot be shown is not a quiet matter: it exists, so say what to do.
    let out = with_closed_stdout(&[
        "--data-dir",
        d,
        "--node-id",
        "pipe",
        "token",
        "create",
        "--name",
        "unseen",
        "--role",
        "auditor",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        !err.contains("panicked") && err.contains("auditseal-db token revoke unseen"),
        "{err}"
    );
}

/// `--out` never overwrites without `--force` (keys export and checkpoint export alike);
/// `verifylog` without a choice names both; its help gives the exit statuses.
#[test]
fn outputs_are_not_overwritten_and_help_says_what_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    Server::start(&["--data-dir", d, "--node-id", "out"])
        .unwrap()
        .stop();
    let key = dir.path().join("key.pem");
    let cps = dir.path().join("cp.jsonl");
    for out in [&key, &cps] {
        std::fs::write(out, "keep me\n").unwrap();
    }
    let key_s = key.to_str().unwrap();
    let cps_s = cps.to_str().unwrap();
    let export_key = [
        "--data-dir",
        d,
        "keys",
        "export",
        "--keyid",
        "1",
        "--out",
        key_s,
    ];
    let export_cps = ["--data-dir", d, "checkpoint", "export", "--out", cps_s];
    for args in [&export_key[..], &export_cps[..]] {
        let (code, _, err) = cli(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("exists") && err.contains("--force"), "{err}");
        let (code, _, err) = cli(&[args, &["--force"]].concat());
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("PUBLIC KEY")
    );
    assert!(
        std::fs::read_to_string(&cps)
            .unwrap()
            .contains("\"nodeId\"")
    );

    let (code, _, err) = cli(&["--data-dir", d, "verifylog"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--all") && err.contains("--node"), "{err}");
    let (_, help, _) = cli(&["verifylog", "--help"]);
    assert!(
        help.contains("Exit status: 0") && help.contains("255"),
        "{help}"
    );
    assert!(help.contains("Global options:"), "{help}");
}

/// Shell completions and man pages come from the same definitions as `--help`.
#[test]
fn completions_and_man_pages_are_generated() {
    let (code, script, err) = cli(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        script.contains("auditseal-db") && script.contains("verifylog"),
        "{script}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let (code, _, err) = cli(&["man", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(out.join("auditseal-db-verifylog.1")).unwrap();
    assert!(page.contains(".TH auditseal-db-verifylog 1"), "{page}");
    assert!(page.contains("\\-\\-all"), "{page}");
    assert!(out.join("auditseal-db.1").exists());
    let server = Command::new(bin_dir().join("auditseal-server"))
        .arg("--man")
        .output()
        .unwrap();
    assert!(server.status.success());
    let page = String::from_utf8_lossy(&server.stdout);
    assert!(
        page.contains(".TH auditseal-server 1") && page.contains("\\-\\-bind"),
        "{page}"
    );
    // --version names the commit built (the tests run in a git checkout).
    let (_, version, _) = cli(&["--version"]);
    let commit = version
        .trim()
        .strip_prefix(&format!(
            "auditseal-db {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{version}"
    );
}
