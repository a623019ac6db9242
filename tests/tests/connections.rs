//! Connections that send nothing are closed, whatever state they stop in, and cannot keep a
//! client out; a refusal over HTTP/2 reaches the client as its status, not as a stream error.
//! (Slow headers and bodies, stalled readers and the connection bound: tests/tests/abuse.rs.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use auditseal_e2e::Server;

/// What the tests set `server.header_timeout_secs` to: every idle deadline.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Time allowed on top of a deadline (a loaded machine, the 1 s grace for HTTP/2 peers).
const MARGIN: Duration = Duration::from_secs(3);

fn addr(s: &Server) -> String {
    s.url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_string()
}

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("auditseal.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn start(dir: &Path, config: &str) -> Server {
    let cfg = write_config(dir, config);
    Server::start(&["--data-dir", dir.to_str().unwrap(), "--config", &cfg]).unwrap()
}

/// Whether the peer closed `c` within `wait` (reading and discarding what it sends).
fn closed_within(c: &mut TcpStream, wait: Duration) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// An HTTP/2 connection without TLS (prior knowledge): the preface and empty SETTINGS, then
/// nothing.
fn h2c_preface_only(addr: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    c
}

/// The types of the HTTP/2 frames the server sends on `c` until it closes it (None if it has
/// not within `wait`).
fn h2_frames_until_closed(c: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        if Instant::now() >= deadline {
            break false;
        }
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break true,
        }
    };
    let mut types = Vec::new();
    let mut rest = &got[..];
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        types.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    closed.then_some(types)
}

const GOAWAY: u8 = 0x7;

/// `GET /healthz` on a new connection: the status line, or "" when nothing came within `wait`.
fn healthz(addr: &str, wait: Duration) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// 600 connections that never send a byte (more than `max_connections`, 512 by default) keep a
/// new client waiting for less than `header_timeout_secs`, and each of them is closed by then.
#[test]
fn idle_connections_cannot_keep_a_client_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        &format!(
            "[server]\nheader_timeout_secs = {}\n",
            HEADER_TIMEOUT.as_secs()
        ),
    );
    let a = addr(&s);
    let mut idle: Vec<TcpStream> = (0..600).map(|_| TcpStream::connect(&a).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let status = healthz(&a, HEADER_TIMEOUT + MARGIN);
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    assert!(t.elapsed() < HEADER_TIMEOUT, "waited {:?}", t.elapsed());
    // Each idle one is gone after its deadline (or was closed to make room).
    let deadline = t + HEADER_TIMEOUT + MARGIN;
    for (i, c) in idle.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            closed_within(c, left.max(Duration::from_millis(100))),
            "idle connection {i} is still open"
        );
    }
}

/// Every state a connection can sit in without a request in flight has a deadline: nothing
/// sent, between requests (HTTP/1 keep-alive), HTTP/2 after the preface with no stream open.
#[test]
fn every_idle_connection_state_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        &format!(
            "[server]\nheader_timeout_secs = {}\n",
            HEADER_TIMEOUT.as_secs()
        ),
    );
    let a = addr(&s);
    let wait = HEADER_TIMEOUT + MARGIN;

    let mut silent = TcpStream::connect(&a).unwrap();
    let t = Instant::now();
    assert!(closed_within(&mut silent, wait), "silent connection open");
    assert!(t.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(300));

    // HTTP/1.1 keep-alive: one request answered, then nothing.
    let mut kept = TcpStream::connect(&a).unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_within(&mut kept, wait), "keep-alive connection open");

    // HTTP/2 without TLS, no stream ever opened: told GOAWAY, then closed.
    let mut h2c = h2c_preface_only(&a);
    let t = Instant::now();
    let frames = h2_frames_until_closed(&mut h2c, wait).expect("h2c connection open");
    assert!(frames.contains(&GOAWAY), "no GOAWAY: {frames:?}");
    assert!(t.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(300));

    // The server is unharmed.
    assert!(healthz(&a, wait).starts_with("HTTP/1.1 200"));
}

/// A connection closed to make room is closed as gracefully as an idle one: HTTP/2 gets its
/// GOAWAY before the connection goes.
#[test]
fn an_evicted_http2_connection_is_told_goaway() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        "[server]\nmax_connections = 2\nheader_timeout_secs = 30\n",
    );
    let a = addr(&s);
    let mut oldest = h2c_preface_only(&a);
    std::thread::sleep(Duration::from_millis(100));
    let _newer = h2c_preface_only(&a);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    assert!(healthz(&a, Duration::from_secs(10)).starts_with("HTTP/1.1 200"));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let frames = h2_frames_until_closed(&mut oldest, Duration::from_secs(5))
        .expect("the oldest idle connection was not closed");
    assert!(frames.contains(&GOAWAY), "no GOAWAY: {frames:?}");
}

/// A server on HTTPS with a certificate for 127.0.0.1 issued by a test CA (`ca.pem` in `dir`),
/// and `extra` in `[server]`.
fn start_tls(dir: &Path, extra: &str) -> Server {
    auditseal_e2e::pki::make_ca(dir, "ca", "/CN=Test CA");
    auditseal_e2e::pki::issue_server(dir, "ca");
    let s = start(
        dir,
        &format!(
            "[server]\n{extra}\n[server.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n"
        ),
    );
    assert!(s.url.starts_with("https://"), "{}", s.url);
    s
}

/// A TLS session whose handshake completed (with ALPN h2 or http/1.1) and that then sends
/// nothing is closed after `header_timeout_secs`.
#[test]
fn a_tls_session_that_sends_no_request_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_tls(
        dir.path(),
        &format!("header_timeout_secs = {}", HEADER_TIMEOUT.as_secs()),
    );
    for alpn in ["h2", "http/1.1"] {
        // s_client stays connected until the server closes (stdin is kept open).
        let mut client = Command::new("openssl")
            .args(["s_client", "-connect", &addr(&s), "-alpn", alpn])
            .args(["-CAfile", dir.path().join("ca.pem").to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run openssl s_client");
        let mut out = client.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let t = Instant::now();
        let exited = loop {
            if client.try_wait().unwrap().is_some() {
                break true;
            }
            if t.elapsed() > HEADER_TIMEOUT * 2 + MARGIN * 2 {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if !exited {
            let _ = client.kill();
            let _ = client.wait();
        }
        let text = reader.join().unwrap();
        assert!(
            text.contains(&format!("ALPN protocol: {alpn}")),
            "{alpn}: no handshake: {text}"
        );
        assert!(exited, "{alpn}: the TLS session is still open");
        // The handshake may take part of the deadline; the whole is bounded by two of them.
        assert!(
            t.elapsed() < HEADER_TIMEOUT * 2 + MARGIN,
            "{alpn}: {:?}",
            t.elapsed()
        );
    }
}

/// With every slot of an HTTPS server taken by clients that never finish (or start) their
/// handshake, a new client is served at once: one of them is closed to make room, handshake or
/// not, rather than after `header_timeout_secs`.
#[test]
fn a_full_https_server_makes_room_during_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_tls(dir.path(), "max_connections = 3\nheader_timeout_secs = 20");
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = TcpStream::connect(addr(&s)).unwrap();
            // The start of a ClientHello record, never finished.
            c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let (code, out) = curl_h2(
        &dir.path().join("ca.pem"),
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
            &format!("{}/healthz", s.url),
        ],
    );
    assert_eq!((code, out.as_str()), (0, "200"));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(stalled);
}

/// `curl --http2` (nghttp2, as signers' scripts use it) with `args`; the exit code and what
/// `-w` wrote.
fn curl_h2(ca: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--cacert", ca.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl (scripts/test installs it)");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Over HTTPS with HTTP/2, POSTs refused before their body is read (401 without credentials,
/// 403 for the wrong role, 413 too large) all reach the client as their status. Dropping the
/// unread body reset the stream with CANCEL while curl was still sending: it reported
/// "Stream error in the HTTP/2 framing layer" (exit 92) instead of the answer.
#[test]
fn http2_refusals_reach_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_tls(dir.path(), "max_body_bytes = 65536");
    let ca = dir.path().join("ca.pem");
    let admin = format!("Authorization: Bearer {}", s.token);
    let (code, out) = curl_h2(
        &ca,
        &[
            "-H",
            &admin,
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"name":"reader","role":"auditor"}"#,
            &format!("{}/api/v1/tokens", s.url),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let created: serde_json::Value = serde_json::from_str(&out).expect(&out);
    let auditor = format!(
        "Authorization: Bearer {}",
        created["token"].as_str().unwrap()
    );
    // Larger than HTTP/2's flow-control windows: the client is still sending when refused.
    let body = dir.path().join("body.json");
    std::fs::write(
        &body,
        format!("{{\"pad\":\"{}\"}}", "x".repeat(4 * 1024 * 1024)),
    )
    .unwrap();
    let body_arg = format!("@{}", body.display());
    let events = format!("{}/api/v1/events", s.url);
    let mut wrong = Vec::new();
    for i in 0..40 {
        let (auth, want) = match i % 3 {
            0 => ("X-None: none", "401"),
            1 => (auditor.as_str(), "403"),
            _ => (admin.as_str(), "413"),
        };
        let (code, out) = curl_h2(
            &ca,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} HTTP/%{http_version}",
                "-H",
                auth,
                "-H",
                "content-type: application/json",
                "--data-binary",
                &body_arg,
                &events,
            ],
        );
        if code != 0 || out != format!("{want} HTTP/2") {
            wrong.push(format!("{i}: want {want}, curl exit {code}: {out}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 40 refusals lost:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
