//! A database outage is logged once when it starts and once when it ends, with how long it
//! lasted and how many requests were refused: not once or twice per refused request (a 45 s
//! PostgreSQL outage wrote 11.7 MB of stderr). The server reaches PostgreSQL through a TCP proxy
//! the test cuts (every connection dropped, new ones refused) and restores.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use auditseal_e2e::{Backend, Server, event, new_database};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to `target` on a port of its own; `cut` drops every connection through it and
/// closes new ones at once, `restore` lets them through again.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(std::sync::Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { port, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// The lines of `log` after the first `skip` ones.
fn lines_after(log: &str, skip: usize) -> Vec<String> {
    log.lines().skip(skip).map(str::to_string).collect()
}

// Several threads: the proxy keeps running while the test blocks (starting the server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let direct = new_database(Backend::Postgres, dir.path()).await;
    // postgres://user@host:port/db -> the same through the proxy.
    let (head, db) = direct.rsplit_once('/').unwrap();
    let (creds, hostport) = head.rsplit_once('@').unwrap();
    let proxy = Proxy::start(hostport.to_string()).await;
    let url = format!("{creds}@127.0.0.1:{}/{db}", proxy.port);
    let s = Server::start(&["--data-dir", d, "--node-id", "o1", "--database-url", &url]).unwrap();
    let c = s.client();
    let events = format!("{}/api/v1/events", s.url);
    let healthz = format!("{}/healthz", s.url);
    let r = c.post(&events).json(&event("BEFORE")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let before = s.log().lines().count();

    proxy.cut();
    let t = Instant::now();
    // 60 requests that need the database; the ones refused for it are counted.
    let mut unavailable = 0;
    for i in 0..60 {
        let r = match i % 3 {
            0 => c.post(&events).json(&event("LOST")),
            1 => c.get(format!("{events}?limit=5")),
            _ => c.get(&healthz),
        }
        .send()
        .await
        .unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert!(status >= 500, "{i}: {status} {body}");
        if body["error"] == "database_unavailable" {
            unavailable += 1;
        }
    }
    assert!(
        unavailable >= 40,
        "{unavailable} of 60 were database_unavailable"
    );
    // Long enough for the background re-reads (tokens, the writer lock) to fail a few times.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(t.elapsed())).await;
    let during = lines_after(&s.log(), before);
    // The start of the outage, the writer lock's loss and first failed retake, and at most a
    // few lines about connections breaking: nothing per request.
    assert!(during.len() <= 6, "{} lines: {during:#?}", during.len());
    let started: Vec<_> = during
        .iter()
        .filter(|l| l.contains("the database is unavailable"))
        .collect();
    assert_eq!(started.len(), 1, "{during:#?}");

    proxy.restore();
    let t = Instant::now();
    let ended = loop {
        let log = lines_after(&s.log(), before);
        if let Some(l) = log
            .iter()
            .find(|l| l.contains("the database answers again"))
        {
            break l.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no end of the outage logged: {log:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // "... after 5.3 s; 57 requests were refused with 503 meanwhile"
    let refused: u64 = ended
        .split("; ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {ended:?}"));
    assert_eq!(refused, unavailable, "{ended}");
    assert!(ended.contains(" after "), "{ended}");

    // The server recovers (the writer lock is taken again within a few seconds).
    let t = Instant::now();
    loop {
        let r = c.post(&events).json(&event("AFTER")).send().await.unwrap();
        if r.status().as_u16() == 201 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{}", r.status());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all = lines_after(&s.log(), before);
    assert_eq!(
        all.iter()
            .filter(|l| l.contains("the database is unavailable"))
            .count(),
        1,
        "{all:#?}"
    );
    assert!(all.len() <= 10, "{} lines: {all:#?}", all.len());
}
