//! SIGHUP reloads the configuration (docs/OPERATIONS.md "Reloading"), on the real server over
//! HTTPS with client certificates: under a steady load of event posts on kept-alive
//! connections, a renewed server certificate and a changed `[[auth.clients]]` take effect for
//! new connections with no request failing; a broken certificate file is refused with an error
//! in the log and the running configuration stays; the process never stops.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use auditseal_e2e::receivers::TestCa;
use auditseal_e2e::{Server, event};

/// HTTPS with client certificates from `ca`; `auditor`'s certificate has the auditor role.
fn config(dir: &Path, ca: &Path, auditor: Option<&str>) {
    let mut text = format!(
        "[server.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n\
         client_ca_file = \"{}\"\n",
        ca.display()
    );
    if let Some(who) = auditor {
        text += &format!("\n[[auth.clients]]\nsubject = \"CN={who}\"\nrole = \"auditor\"\n");
    }
    std::fs::write(dir.join("auditseal.toml"), text).unwrap();
}

/// The server certificate `name` (made by the CA) becomes server.pem / server.key.
fn install(dir: &Path, name: &str) {
    std::fs::copy(dir.join(format!("{name}.key")), dir.join("server.key")).unwrap();
    std::fs::copy(dir.join(format!("{name}.pem")), dir.join("server.pem")).unwrap();
}

fn der(pem: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A client that trusts the test CA, on a connection of its own, presenting `identity`'s
/// certificate if given.
fn client(ca: &Path, dir: &Path, identity: Option<&str>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .tls_info(true);
    if let Some(name) = identity {
        let mut pem = std::fs::read(dir.join(format!("{name}.pem"))).unwrap();
        pem.extend(std::fs::read(dir.join(format!("{name}.key"))).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// The certificate a new connection to `url` is served.
async fn served(ca: &Path, dir: &Path, url: &str) -> Vec<u8> {
    let r = client(ca, dir, None)
        .get(format!("{url}/livez"))
        .send()
        .await
        .unwrap();
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .expect("the TLS peer certificate")
        .to_vec()
}

/// The status `identity`'s certificate gets for a search, on a new connection.
async fn search_as(ca: &Path, dir: &Path, url: &str, identity: &str) -> u16 {
    client(ca, dir, Some(identity))
        .get(format!("{url}/api/v1/events?limit=1"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn hup(s: &Server) {
    let ok = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificate_and_client_roles_under_load_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = TestCa::new(d, "reload");
    for name in ["server1", "server2", "auditor1", "auditor2"] {
        ca.issue(name);
    }
    install(d, "server1");
    let args = [
        "--config",
        &d.join("auditseal.toml").display().to_string(),
        "--data-dir",
        &d.join("data").display().to_string(),
        "--node-id",
        "reload",
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A first start with no client certificates makes the admin token the load posts with.
    config(d, &ca.ca, None);
    Server::start(&args).unwrap().stop();
    config(d, &ca.ca, Some("auditor1"));
    let s = Arc::new(Server::start(&args).unwrap());
    let url = s.url.clone();
    assert_eq!(served(&ca.ca, d, &url).await, der(&d.join("server1.pem")));
    assert_eq!(search_as(&ca.ca, d, &url, "auditor1").await, 200);
    assert_eq!(search_as(&ca.ca, d, &url, "auditor2").await, 401);

    // The load: 4 signers, each on its own kept-alive connection.
    let token = auditseal_e2e::token_for(&url);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let ca_pem = std::fs::read(&ca.ca).unwrap();
        let c = auditseal_e2e::client_builder(&token)
            .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()])
            .build()
            .unwrap();
        let (url, stop) = (url.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            // Bounded; stopped by the test well before.
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match c
                    .post(format!("{url}/api/v1/events"))
                    .json(&event("RELOAD"))
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 201 => ok += 1,
                    Ok(r) => failed.push(format!("{}", r.status())),
                    Err(e) => failed.push(format!("{e:?}")),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A renewed certificate and another auditor, then SIGHUP.
    install(d, "server2");
    config(d, &ca.ca, Some("auditor2"));
    hup(&s);
    let t = Instant::now();
    while served(&ca.ca, d, &url).await != der(&d.join("server2.pem")) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(search_as(&ca.ca, d, &url, "auditor2").await, 200);
    assert_eq!(search_as(&ca.ca, d, &url, "auditor1").await, 401);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A broken certificate file: refused, the running configuration stays.
    std::fs::write(d.join("server.pem"), "not a certificate\n").unwrap();
    hup(&s);
    let t = Instant::now();
    while !s.log().contains("the new configuration is refused") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", s.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served(&ca.ca, d, &url).await, der(&d.join("server2.pem")));
    assert_eq!(search_as(&ca.ca, d, &url, "auditor2").await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed) = (0, Vec::new());
    for w in workers {
        let (o, f) = w.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "requests failed across the reloads: {failed:?}"
    );
    assert!(ok > 20, "{ok} events posted under load");
    let log = s.log();
    assert!(log.contains("SIGHUP: configuration reloaded"), "{log}");
    let refusal = log
        .lines()
        .find(|l| l.contains("the new configuration is refused"))
        .unwrap();
    assert!(
        refusal.contains("server.pem"),
        "the refusal names the file: {refusal}"
    );
    Arc::try_unwrap(s).ok().expect("one owner").stop();
}
