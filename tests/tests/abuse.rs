//! Abuse is harmless: a client that trickles its headers is dropped, a slow body gets 408, a
//! client that stops reading what it is sent is dropped, the number of connections is bounded
//! (more wait until one closes; an idle one is closed to make room), and secrets (a database
//! password, an HMAC secret) appear neither in the log nor in errors. (Oversized bodies,
//! malformed JSON, wrong types and unknown fields: tests/tests/server.rs; unknown query fields
//! and operators: tests/tests/query.rs and follow.rs.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use auditseal_e2e::{Server, cli, event};

fn addr(s: &Server) -> String {
    s.url.trim_start_matches("http://").to_string()
}

fn config(dir: &std::path::Path, text: &str) -> String {
    let p = dir.join("auditseal.toml");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Reads until the peer closes or `wait` passes; returns what came and whether it closed.
fn read_until_closed(c: &mut TcpStream, wait: Duration) -> (String, bool) {
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (String::from_utf8_lossy(&got).into(), true),
        }
    }
    (String::from_utf8_lossy(&got).into(), false)
}

#[test]
fn slow_headers_are_dropped_and_slow_bodies_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cfg = config(
        dir.path(),
        "[server]\nheader_timeout_secs = 1\nrequest_timeout_secs = 2\n",
    );
    let s = Server::start(&["--data-dir", d, "--config", &cfg]).unwrap();

    // Headers that never finish: the connection is closed after the header deadline.
    let mut slow = TcpStream::connect(addr(&s)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let t = Instant::now();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(8));
    assert!(closed, "a trickling client must be dropped");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A body that never arrives: 408 after the request timeout, nothing written.
    let mut body = TcpStream::connect(addr(&s)).unwrap();
    body.write_all(
        format!(
            "POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{{\"eventType\":",
            s.token
        )
        .as_bytes(),
    )
    .unwrap();
    let t = Instant::now();
    let (answer, _) = read_until_closed(&mut body, Duration::from_secs(8));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());

    // The server is unharmed.
    let mut ok = TcpStream::connect(addr(&s)).unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (answer, _) = read_until_closed(&mut ok, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn connections_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cfg = config(
        dir.path(),
        "[server]\nmax_connections = 3\nheader_timeout_secs = 30\nrequest_timeout_secs = 30\n",
    );
    let s = Server::start(&["--data-dir", d, "--config", &cfg]).unwrap();
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // Three connections busy with a request (its body still coming) take every slot.
    let busy: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = TcpStream::connect(addr(&s)).unwrap();
            c.write_all(
                format!(
                    "POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                     Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{{",
                    s.token
                )
                .as_bytes(),
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A fourth connects (the kernel's backlog) but is not served while they stay.
    let mut fourth = TcpStream::connect(addr(&s)).unwrap();
    fourth.write_all(healthz).unwrap();
    let (answer, _) = read_until_closed(&mut fourth, Duration::from_millis(1500));
    assert_eq!(answer, "", "served beyond max_connections");
    // One closes: the waiting one is served.
    drop(busy);
    let (answer, _) = read_until_closed(&mut fourth, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // Connections with no request in flight do not keep a client out: when every slot is
    // taken, the one idle longest is closed to make room.
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let c = TcpStream::connect(addr(&s)).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fifth = TcpStream::connect(addr(&s)).unwrap();
    fifth.write_all(healthz).unwrap();
    let t = Instant::now();
    let (answer, _) = read_until_closed(&mut fifth, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let (_, closed) = read_until_closed(&mut idle[0], Duration::from_secs(2));
    assert!(closed, "the connection idle longest was not the one closed");
    for c in &mut idle[1..] {
        let (_, closed) = read_until_closed(c, Duration::from_millis(300));
        assert!(!closed, "more idle connections closed than needed");
    }
}

/// A live follower that stops reading is dropped after `server.send_timeout_secs`, and its
/// follower place is free again: over HTTP/1.1 (its socket buffers fill, so the server's writes
/// block) and over HTTP/2 (flow control stops the stream without any write blocking, so the
/// response is simply never polled again).
#[tokio::test]
async fn a_follower_that_stops_reading_is_dropped_and_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cfg = config(
        dir.path(),
        "[server]\nsend_timeout_secs = 2\nmax_followers = 1\ndevice = \"batched\"\n",
    );
    let s = Server::start(&["--data-dir", d, "--config", &cfg]).unwrap();
    let stream_url = format!("{}/api/v1/events/stream", s.url);
    let second = async || {
        s.client()
            .get(&stream_url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    // About 8 MB of events a round: more than socket buffers and HTTP/2 windows hold.
    let mut big = event("PROCESS");
    big["additionalDetails"] = serde_json::json!({"PAD": "x".repeat(8000)});
    let body = format!("{big}\n").repeat(100);
    let load = async || {
        for _ in 0..10 {
            let r = s
                .client()
                .post(format!("{}/api/v1/events:batch", s.url))
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
        }
    };
    let place_freed = async |what: &str| {
        let t = Instant::now();
        loop {
            match second().await {
                200 => return,
                429 => assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "{what}: the follower that reads nothing still holds its place"
                ),
                other => panic!("{what}: {other}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };

    // HTTP/1.1, by hand: the request, and then nothing is ever read.
    let mut stalled = TcpStream::connect(addr(&s)).unwrap();
    stalled
        .write_all(
            format!(
                "GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
                s.token
            )
            .as_bytes(),
        )
        .unwrap();
    let t = Instant::now();
    while second().await != 429 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the follow never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load().await;
    place_freed("HTTP/1.1").await;
    // The server closed that connection: what it buffered, then the end.
    let (_, closed) = read_until_closed(&mut stalled, Duration::from_secs(10));
    assert!(closed);

    // HTTP/2 (prior knowledge, as plain-HTTP clients may): the response is held, never read.
    let h2 = auditseal_e2e::client_builder(&s.token)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // (The probe that just got 200 lets go of its place within a poll interval.)
    let t = Instant::now();
    let held = loop {
        let r = h2.get(&stream_url).send().await.unwrap();
        if r.status().as_u16() == 200 {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{}", r.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(held.version(), reqwest::Version::HTTP_2);
    assert_eq!(second().await, 429);
    load().await;
    place_freed("HTTP/2").await;
    drop(held);
}

#[tokio::test]
async fn secrets_never_appear_in_logs_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // A database password in a URL that cannot be reached: a clear error without it.
    let bin_args = [
        "--data-dir",
        d,
        "--database-url",
        "postgres://auditor:S3cretPw0rd@127.0.0.1:1/db",
    ];
    let e = Server::start(&bin_args).err().expect("cannot start");
    assert!(e.contains("cannot open the database"), "{e}");
    assert!(!e.contains("S3cretPw0rd"), "{e}");
    let mut args = bin_args.to_vec();
    args.extend(["verifylog", "--all"]);
    let (code, out, err) = cli(&args);
    assert_eq!(code, 1);
    assert!(
        !out.contains("S3cretPw0rd") && !err.contains("S3cretPw0rd"),
        "{err}"
    );
    assert!(err.contains("***"), "{err}");
    // An HMAC secret in the configuration: never in the log, the key listing or errors.
    let secret = "hm4c-s3cret-value-0123456789";
    let cfg = config(
        dir.path(),
        &format!(
            "[protection]\n[[protection.keys]]\nkind = \"hmac\"\nkeyid = 7\nsecret = \"{secret}\"\n"
        ),
    );
    let s = Server::start(&["--data-dir", d, "--config", &cfg]).unwrap();
    let client = s.client();
    let r = client
        .post(format!("{}/api/v1/events", s.url))
        .json(&event("PROCESS"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    for path in ["/api/v1/keys", "/api/v1/events", "/api/v1/nope"] {
        let body = client
            .get(format!("{}{path}", s.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains(secret), "{path}: {body}");
    }
    let (_, out, err) = cli(&["--data-dir", d, "--config", &cfg, "keys", "list", "--json"]);
    assert!(!out.contains(secret) && !err.contains(secret));
    let log = s.log();
    s.stop();
    assert!(!log.contains(secret), "{log}");
}
