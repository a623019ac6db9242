//! Harness for the end-to-end tests: real binaries, a real PostgreSQL (the one `scripts/test`
//! starts, named by AUDITSEAL_TEST_PG_URL), SQLite files, and the JDK.

pub mod faults;
pub mod hsm;
pub mod java;
pub mod load;
pub mod pg_ha;
pub mod pki;
pub mod receivers;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::Connection;

/// Where cargo put the workspace's binaries. From a test (target/<profile>/deps/<test>): the
/// workspace is built once per test process and target/<profile> used; from a program such as
/// auditseal-bench (target/<profile>/<program>): its own directory, built by its caller.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let dir = exe.parent().expect("exe dir");
        if dir.file_name().is_some_and(|n| n == "deps") {
            let status = Command::new(env!("CARGO"))
                // The same selection as `cargo test --workspace`, so features unify alike and
                // nothing is rebuilt.
                .args(["build", "--quiet", "--workspace", "--all-targets"])
                .current_dir(workspace_root())
                .status()
                .expect("cannot run cargo to build the binaries");
            assert!(status.success(), "building the binaries failed");
            dir.parent().expect("target dir").to_path_buf()
        } else {
            dir.to_path_buf()
        }
    })
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A database a test owns: a SQLite file in a temp dir, or a fresh PostgreSQL database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// The PostgreSQL server of the test run. Tests that need it fail (never skip) without it.
pub fn pg_admin_url() -> String {
    std::env::var("AUDITSEAL_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "AUDITSEAL_TEST_PG_URL is not set: run the tests with scripts/test, which starts a \
             PostgreSQL cluster, or point it at a server where the test may create databases"
        )
    })
}

fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// Creates a new database for one test and returns its URL (SQLite: a file the first opener
/// creates, as `?mode=rwc` asks; only the default database is created without it).
pub async fn new_database(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("{}.db", unique_name("t"))).display()
        ),
        Backend::Postgres => {
            let admin = pg_admin_url();
            let name = unique_name("auditseal_test");
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .expect("connect to the test PostgreSQL");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create database");
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b)
                .expect("URL with a database");
            format!("{base}/{name}")
        }
    }
}

/// Runs SQL on a test database (to tamper with it, or to look at it).
pub async fn exec(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url)
            .await
            .expect("sqlite connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .expect(sql);
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.expect("pg connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut c)
            .await
            .expect(sql);
    }
}

/// Runs `auditseal-db` with arguments; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    cli_env(args, &[])
}

/// `cli` with extra environment variables (e.g. SOFTHSM2_CONF).
pub fn cli_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (i32, String, String) {
    let out: Output = Command::new(bin_dir().join("auditseal-db"))
        .args(args)
        .env_remove("AUDITSEAL_DATABASE_URL")
        .envs(env.iter().copied())
        .output()
        .expect("run auditseal-db");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `auditseal-server`, stopped (SIGTERM, then kill) when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    stderr_log: PathBuf,
    /// An admin token this server accepts ("" when none was found).
    pub token: String,
}

/// Admin tokens servers of this test process created (`<data-dir>/admin.token`): a server that
/// shares a database with an earlier one creates none and accepts one of these.
fn known_tokens() -> &'static std::sync::Mutex<Vec<String>> {
    static T: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// The value after `flag` in `args`.
fn arg_value<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1).copied())
}

/// The HTTP status of `GET path` with `token`, by hand so the harness stays synchronous.
fn status_with_token(url: &str, path: &str, token: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let addr = url.strip_prefix("http://")?;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The admin token of a server that just started: the one it wrote into its data directory,
/// or else one an earlier server of this process wrote that it accepts.
fn find_token(url: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> String {
    let dir = arg_value(args, "--data-dir")
        .map(PathBuf::from)
        .or_else(|| {
            env.iter()
                .find(|(k, _)| *k == "AUDITSEAL_DATA_DIR")
                .map(|(_, v)| PathBuf::from(v))
        });
    let mut known = known_tokens().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = dir
        .and_then(|d| std::fs::read_to_string(d.join("admin.token")).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
    {
        if !known.contains(&t) {
            known.push(t.clone());
        }
        return t;
    }
    known
        .iter()
        .rev()
        .find(|t| status_with_token(url, "/api/v1/openapi.json", t) == Some(200))
        .cloned()
        .unwrap_or_default()
}

/// Each started server's URL and the admin token it accepts, for `client_for`.
fn server_tokens() -> &'static std::sync::Mutex<Vec<(String, String)>> {
    static T: OnceLock<std::sync::Mutex<Vec<(String, String)>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// A client builder whose requests send `token` as `Authorization: Bearer`.
pub fn client_builder(token: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder().default_headers(headers)
}

/// An HTTP client that sends `token` as `Authorization: Bearer` with every request.
pub fn client_with(token: &str) -> reqwest::Client {
    client_builder(token).build().expect("HTTP client")
}

/// An admin client for the server at `url` (a URL a `Server` of this process was started at).
pub fn client_for(url: &str) -> reqwest::Client {
    client_with(&token_for(url))
}

/// The admin token of the server at `url` (a URL a `Server` of this process was started at).
pub fn token_for(url: &str) -> String {
    server_tokens()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .rev()
        .find(|(u, _)| url.starts_with(u.as_str()))
        .map(|(_, t)| t.clone())
        .unwrap_or_else(|| panic!("no server of this test was started at {url}"))
}

impl Server {
    /// Starts the server with `args` (plus `--bind 127.0.0.1:0`) and waits until it listens.
    pub fn start(args: &[&str]) -> Result<Server, String> {
        Self::start_env(args, &[])
    }

    /// `start` with extra environment variables (e.g. SOFTHSM2_CONF).
    pub fn start_env(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Result<Server, String> {
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("auditseal-server")));
        let mut child = Command::new(bin_dir().join("auditseal-server"))
            .args(args)
            .args(["--bind", "127.0.0.1:0"])
            .env_remove("AUDITSEAL_DATABASE_URL")
            .env_remove("AUDITSEAL_DATABASE_READ_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(u) = line.strip_prefix("auditseal-server listening on ") {
                    let _ = tx.send(u.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => {
                let token = find_token(&url, args, env);
                server_tokens()
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((url.clone(), token.clone()));
                Ok(Server {
                    token,
                    child,
                    url,
                    stderr_log: log,
                })
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::fs::read_to_string(&log).unwrap_or_default())
            }
        }
    }

    /// A client that authenticates as admin to this server.
    pub fn client(&self) -> reqwest::Client {
        client_with(&self.token)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Stops the server gracefully and waits for it.
    pub fn stop(mut self) {
        self.terminate();
    }

    /// `stop`, then everything the server wrote to stderr.
    pub fn stop_and_log(mut self) -> String {
        self.terminate();
        self.log()
    }

    /// `stop`, then how the server ended (`None` if it had to be killed after 10 s).
    pub fn stop_status(mut self) -> Option<std::process::ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A minimal valid event body.
pub fn event(event_type: &str) -> serde_json::Value {
    serde_json::json!({
        "eventType": event_type,
        "eventStatus": "SUCCESS",
        "authToken": "CN=signer,O=Test",
        "service": "SIGNSERVER",
        "module": "WORKER",
    })
}

/// The 13 protected values of a row, as the Java program's `verify` wants them.
pub fn record_fields(r: &auditseal_core::record::AuditRecord) -> [Option<String>; 13] {
    [
        Some(r.pk.clone()),
        Some(r.node_id.clone()),
        Some(r.sequence_number.to_string()),
        Some(r.time_stamp.to_string()),
        Some(r.event_type.clone()),
        Some(r.event_status.clone()),
        Some(r.auth_token.clone()),
        Some(r.service.clone()),
        Some(r.module.clone()),
        r.custom_id.clone(),
        r.search_detail1.clone(),
        r.search_detail2.clone(),
        r.additional_details.clone(),
    ]
}

/// Verifies rows with the independent Java program and a PEM public key; returns its verdicts.
pub fn java_verify(rows: &[auditseal_core::record::AuditRecord], pubkey_pem: &Path) -> String {
    let lines: String = rows
        .iter()
        .map(|r| {
            let f = record_fields(r);
            let refs: [Option<&str>; 13] = std::array::from_fn(|i| f[i].as_deref());
            java::verify_line(&refs, r.row_protection.as_deref()) + "\n"
        })
        .collect();
    java::JavaCompat::get().run_ok(
        &[
            "verify",
            "--pubkey",
            pubkey_pem.to_str().expect("utf-8 path"),
        ],
        &lines,
    )
}

/// Reads every row of the database, oldest first per node (for independent checks).
pub async fn all_rows(url: &str) -> Vec<auditseal_core::record::AuditRecord> {
    let store = auditseal_core::store::open(url).await.expect("open store");
    let mut rows = Vec::new();
    for node in store.nodes().await.expect("nodes") {
        // A chunk holds at most READ_BUDGET_BYTES of rows: only an empty one is the end.
        let mut after = None;
        loop {
            let chunk = store
                .read_node(auditseal_core::store::Chunk::new(&node, 0, after, i64::MAX))
                .await
                .expect("read");
            let Some(last) = chunk.last() else { break };
            after = Some((last.sequence_number, last.pk.clone()));
            rows.extend(chunk);
        }
    }
    rows
}

/// Posts `n` PROCESS events to a server, one request each, and requires 201 for each.
pub async fn post_events(server: &Server, n: usize) {
    let client = server.client();
    for _ in 0..n {
        let r = client
            .post(format!("{}/api/v1/events", server.url))
            .json(&event("PROCESS"))
            .send()
            .await
            .expect("POST /api/v1/events");
        assert_eq!(r.status().as_u16(), 201);
    }
}

/// `GET url` as the admin of the server it names (see `client_for`).
pub async fn get(url: String) -> reqwest::Result<reqwest::Response> {
    client_for(&url).get(url).send().await
}

/// The value of the sample `series` (name and labels exactly as written) in Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
