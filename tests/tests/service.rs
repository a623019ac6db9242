//! Running as a systemd service (docs/OPERATIONS.md "Running as a service"): the shipped unit
//! conf/systemd/auditseal.service passes `systemd-analyze verify` without a warning and
//! `systemd-analyze security` rates it at most 2.0; the real server speaks the notify protocol
//! on a NOTIFY_SOCKET the test binds (READY=1 once it listens, WATCHDOG=1 at half the asked
//! interval, STOPPING=1 at SIGTERM), as systemd would see it.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use auditseal_e2e::{Server, bin_dir, cli, workspace_root};

/// The shipped unit, its ExecStart pointed at the binary built here (verify checks that the
/// program exists), in a directory of its own.
fn unit_here(dir: &std::path::Path) -> std::path::PathBuf {
    let unit =
        std::fs::read_to_string(workspace_root().join("conf/systemd/auditseal.service")).unwrap();
    let shipped = "ExecStart=/usr/local/bin/auditseal-server ";
    assert!(unit.contains(shipped), "{unit}");
    let here = format!(
        "ExecStart={} ",
        bin_dir().join("auditseal-server").display()
    );
    let path = dir.join("auditseal.service");
    std::fs::write(&path, unit.replace(shipped, &here)).unwrap();
    path
}

fn systemd_analyze(args: &[&str]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/test installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn the_shipped_unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_here(dir.path());
    let unit = unit.to_str().unwrap();
    // verify exits 0 on an unknown key or a bad value (it only warns): any output fails.
    let (ok, said) = systemd_analyze(&["verify", "--man=no", unit]);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // The threshold is in tenths of the exposure level printed (20: 2.0).
    let (ok, said) = systemd_analyze(&["security", "--offline=yes", "--threshold=20", unit]);
    assert!(
        ok,
        "systemd-analyze security rates the unit above 2.0:\n{said}"
    );
    assert!(said.contains("Overall exposure level"), "{said}");
}

/// The next notification, within `wait`.
fn next(sock: &UnixDatagram, wait: Duration) -> Option<String> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn the_server_notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).unwrap();
    let data = dir.path().join("data");
    let s = Server::start_env(
        &["--data-dir", data.to_str().unwrap(), "--node-id", "svc"],
        &[
            ("NOTIFY_SOCKET", socket.as_os_str()),
            // 400 ms: a ping every 200 ms.
            ("WATCHDOG_USEC", std::ffi::OsStr::new("400000")),
        ],
    )
    .unwrap();
    let ready = next(&sock, Duration::from_secs(10)).expect("no notification at all");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let addr = s.url.rsplit_once("//").unwrap().1;
    assert!(
        ready.contains(&format!("STATUS=listening on {addr}, node svc")),
        "{ready:?}"
    );
    // Watchdog pings keep coming while the server runs.
    let t = Instant::now();
    let mut pings = 0;
    while t.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = next(&sock, Duration::from_millis(500)) {
            assert_eq!(m, "WATCHDOG=1\n");
            pings += 1;
        }
    }
    // About 7; a loaded machine may delay or bunch them.
    assert!(
        (2..=15).contains(&pings),
        "{pings} pings in 1.5 s at 200 ms"
    );
    s.stop();
    let mut rest = Vec::new();
    while let Some(m) = next(&sock, Duration::from_millis(200)) {
        rest.push(m);
    }
    assert!(
        rest.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "{rest:?}"
    );
}

/// A stop that comes the moment the server says it listens (systemd may send one as soon as it
/// sees READY=1) still ends cleanly: exit status 0 and the checkpoint of the stop written. The
/// signal handlers were once installed only after that line, and such a SIGTERM killed the
/// process. A few rounds, since the window is short.
#[test]
fn a_stop_right_after_listening_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for round in 0..5 {
        let s = Server::start(&["--data-dir", d, "--node-id", "quick"]).unwrap();
        let status = s.stop_status();
        assert!(
            status.is_some_and(|s| s.success()),
            "round {round}: the server ended with {status:?}"
        );
    }
    // The first start logged the admin token's creation; the stops checkpointed it.
    let file = dir.path().join("cp.jsonl");
    let f = file.to_str().unwrap();
    let (code, _, err) = cli(&["--data-dir", d, "checkpoint", "export", "--out", f]);
    assert_eq!(code, 0, "{err}");
    let out = std::fs::read_to_string(&file).unwrap();
    assert!(out.contains("\"nodeId\":\"quick\""), "{out}");
}
