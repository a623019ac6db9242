//! HTTPS with client certificates: the real server with `[server.tls]` and `[[auth.clients]]`,
//! certificates made by the `openssl` command at test time. A mapped certificate gets its role,
//! an unmapped one 401, one from another CA no connection; tokens still work over HTTPS.

use auditseal_e2e::pki::{client, issue, issue_server, make_ca};
use auditseal_e2e::{Server, event};
use serde_json::Value;

async fn status(r: reqwest::RequestBuilder) -> u16 {
    r.send().await.expect("request").status().as_u16()
}

#[tokio::test]
async fn client_certificates_map_to_roles() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = pki_dir.path();
    make_ca(pki, "ca", "/O=Example/CN=Test Client CA");
    make_ca(pki, "other-ca", "/O=Elsewhere/CN=Untrusted CA");
    let client_ext = "extendedKeyUsage=clientAuth";
    issue_server(pki, "ca");
    issue(
        pki,
        "ca",
        "auditor",
        "/C=SE/O=Example/CN=Auditor One",
        client_ext,
    );
    issue(
        pki,
        "ca",
        "signer",
        "/C=SE/O=Example/CN=Signer One",
        client_ext,
    );
    issue(
        pki,
        "ca",
        "stranger",
        "/C=SE/O=Example/CN=Nobody",
        client_ext,
    );
    issue(
        pki,
        "other-ca",
        "impostor",
        "/C=SE/O=Example/CN=Auditor One",
        client_ext,
    );

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // The server's files relative to the data directory, the CA by absolute path.
    std::fs::copy(pki.join("server.pem"), dir.path().join("server.pem")).unwrap();
    std::fs::copy(pki.join("server.key"), dir.path().join("server.key")).unwrap();
    let tls = format!(
        "[server]\nheader_timeout_secs = 1\n\n[server.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n\
         client_ca_file = {:?}\n",
        pki.join("ca.pem").to_str().unwrap()
    );

    // First without [[auth.clients]]: the server makes an admin token, usable over HTTPS.
    let cfg_path = dir.path().join("auditseal.toml");
    std::fs::write(&cfg_path, &tls).unwrap();
    let cfg = cfg_path.to_str().unwrap();
    let args = ["--data-dir", d, "--config", cfg, "--node-id", "n1"];
    let s = Server::start(&args).unwrap();
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let token = token.trim();
    let events = format!("{}/api/v1/events", s.url);
    let anonymous = client(pki, None);
    assert_eq!(status(anonymous.get(&events).bearer_auth(token)).await, 200);
    // A trusted certificate nobody mapped gives no role.
    assert_eq!(status(client(pki, Some("auditor")).get(&events)).await, 401);
    // Plain HTTP to the HTTPS port is told so, not just dropped.
    {
        use std::io::{Read, Write};
        let addr = s.url.trim_start_matches("https://");
        let mut plain = std::net::TcpStream::connect(addr).unwrap();
        plain
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        plain.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(body.contains("This port speaks HTTPS"), "{answer}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{answer}"
        );
    }
    s.stop();

    // Now with subjects mapped to roles (written in a different spelling than the server's).
    std::fs::write(
        &cfg_path,
        format!(
            "{tls}\n[[auth.clients]]\nsubject = \"cn=Auditor One, o=Example, c=SE\"\n\
             role = \"auditor\"\n\n[[auth.clients]]\nsubject = \"CN=Signer One,O=Example,C=SE\"\n\
             role = \"ingest\"\n"
        ),
    )
    .unwrap();
    let s = Server::start(&args).unwrap();
    let events = format!("{}/api/v1/events", s.url);
    let (auditor, signer) = (client(pki, Some("auditor")), client(pki, Some("signer")));

    assert_eq!(status(auditor.get(&events)).await, 200);
    assert_eq!(
        status(auditor.post(&events).json(&event("PROCESS"))).await,
        403
    );
    let r = signer
        .post(&events)
        .json(&event("PROCESS"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let appended: Value = r.json().await.unwrap();
    assert_eq!(status(signer.get(&events)).await, 403);

    // The row records who sent it.
    let pk = appended["pk"].as_str().expect("pk");
    let row: Value = auditor
        .get(format!("{events}/{pk}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        row["details"]["auditseal.submitter"], "cert:CN=Signer One,O=Example,C=SE",
        "{row}"
    );

    // Trusted but not mapped; nothing at all; a token still works alongside certificates.
    assert_eq!(
        status(client(pki, Some("stranger")).get(&events)).await,
        401
    );
    assert_eq!(status(anonymous.get(&events)).await, 401);
    assert_eq!(status(anonymous.get(&events).bearer_auth(token)).await, 200);
    assert_eq!(
        status(anonymous.get(format!("{}/healthz", s.url))).await,
        200
    );

    // The same subject from another CA: no TLS session, so no request.
    let impostor = client(pki, Some("impostor"));
    assert!(impostor.get(&events).send().await.is_err());
    // Plain HTTP to the HTTPS port gets an HTTP answer that says so (issue 18: it used to be
    // a closed connection with no hint).
    let plain = s.url.replacen("https://", "http://", 1);
    let r = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await
        .expect("an answer in plain HTTP");
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("speaks HTTPS"));
    // A client that never finishes its handshake holds up no one, and is dropped.
    let addr = s.url.trim_start_matches("https://");
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(status(auditor.get(&events)).await, 200);
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stalled, &mut buf),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a stalled handshake was not dropped"
    );
    assert!(
        s.log()
            .contains("serving HTTPS; client certificates accepted"),
        "{}",
        s.log()
    );
    s.stop();

    // A first start with certificate roles configured makes no admin token: it is not open.
    let fresh = tempfile::tempdir().unwrap();
    for f in ["server.pem", "server.key", "auditseal.toml"] {
        std::fs::copy(dir.path().join(f), fresh.path().join(f)).unwrap();
    }
    let cfg = fresh.path().join("auditseal.toml");
    let s = Server::start(&[
        "--data-dir",
        fresh.path().to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ])
    .unwrap();
    assert!(!fresh.path().join("admin.token").exists());
    let events = format!("{}/api/v1/events", s.url);
    assert_eq!(status(anonymous.get(&events)).await, 401);
    assert_eq!(status(client(pki, Some("auditor")).get(&events)).await, 200);
    s.stop();
}
