//! The fault suite (docs/RELIABILITY.md "Fault suite"; `scripts/faults` runs it alone): each
//! fault is caused under concurrent load of single and bulk requests, on both devices and the
//! databases it applies to. The clients retry every refused or unanswered request with the same
//! body (the same event pks). Afterwards the database is read directly and each case prints one
//! line (acknowledged / stored / lost / duplicated / gaps / recovered_in) and requires: nothing
//! acknowledged lost, no gap in any node's numbers, no event stored twice, `verifylog --all`
//! clean, and, but for kill -9, the same server process taking events again by itself within a
//! bounded time after the fault ends.

use std::ffi::{OsStr, OsString};
use std::time::{Duration, Instant};

use auditseal_e2e::faults::{
    Load, LoadShape, PgCluster, Reckoning, SmallDisk, Steps, Targets, first_ack, reckon,
    recovered_after, signal, verifylog,
};
use auditseal_e2e::hsm::{MODULE, PIN, SoftHsm};
use auditseal_e2e::{Backend, Server, new_database};
use sqlx::Connection;

/// How long the load runs before a fault, and after it ends.
const BEFORE: Duration = Duration::from_millis(1500);
const AFTER: Duration = Duration::from_millis(2000);
/// The longest a server may take to take events again after a fault ends.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

fn db_name(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// Runs blocking work (starting a server, scripts) off the async workers, so the load goes on.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// Server arguments for one node.
fn node_args(data_dir: &str, node: &str, url: &str, device: &str) -> Vec<String> {
    [
        "--data-dir",
        data_dir,
        "--node-id",
        node,
        "--database-url",
        url,
        "--device",
        device,
    ]
    .map(String::from)
    .to_vec()
}

async fn start(args: Vec<String>) -> Server {
    start_env(args, Vec::new()).await
}

async fn start_env(args: Vec<String>, env: Vec<(&'static str, OsString)>) -> Server {
    blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let e: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        Server::start_env(&a, &e).expect("the server starts")
    })
    .await
}

/// Starts a server in place of one just killed: PostgreSQL frees the node lock of a dead
/// client's session once it notices, so a start refused for the lock is tried again (10 s).
async fn restart(args: Vec<String>) -> Server {
    blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Server::start(&a) {
                Ok(s) => return s,
                Err(e) if e.contains("already writing") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("the server does not start again: {e}"),
            }
        }
    })
    .await
}

async fn stop(s: Server) {
    blocking(move || s.stop()).await
}

/// One case: a fault, a database, a device. Its events are marked `<fault>-<db>-<device>:...`.
struct Case {
    fault: &'static str,
    backend: Backend,
    device: &'static str,
    steps: Steps,
}

impl Case {
    fn new(fault: &'static str, backend: Backend, device: &'static str) -> Case {
        let name = format!("{fault}-{}-{device}", db_name(backend));
        Case {
            fault,
            backend,
            device,
            steps: Steps::new(&name),
        }
    }

    /// The marker prefix of the case's events.
    fn run(&self) -> String {
        format!("{}-{}-{}", self.fault, db_name(self.backend), self.device)
    }

    fn mark(&self, what: &str) {
        self.steps.mark(what);
    }

    /// Prints the case's line, checks the log with verifylog (`auditseal-db <verify_args>
    /// verifylog --all`), and asserts the reckoning and the recovery.
    fn conclude(
        &self,
        r: &Reckoning,
        recovered: Option<Duration>,
        verify_args: &[&str],
        verify_env: &[(&str, &OsStr)],
    ) {
        println!(
            "{}",
            r.line(self.fault, db_name(self.backend), self.device, recovered)
        );
        eprintln!("[{}] refused: {:?}", self.run(), r.refused);
        verifylog(verify_args, verify_env);
        r.assert_sound();
        let recovered = recovered
            .unwrap_or_else(|| panic!("{}: no event was acknowledged after the fault", self.run()));
        assert!(
            recovered < RECOVERY_LIMIT,
            "{}: events were taken again only {recovered:?} after the fault ended",
            self.run()
        );
        self.mark("done");
    }
}

/// kill -9 of the server mid-load, then a restart on the same database: every acknowledged event
/// is there; events whose answer the kill swallowed are retried against the new process.
async fn kill9(backend: Backend, device: &'static str) {
    let case = Case::new("kill9", backend, device);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let url = new_database(backend, dir.path()).await;
    let args = node_args(&d, "n1", &url, device);
    let s = start(args.clone()).await;
    let targets = Targets::new(&s.url, &s.token);
    let run = case.run();
    let load = Load::start(&run, &targets, LoadShape::default());
    case.mark("load on");
    tokio::time::sleep(BEFORE).await;

    let fault = Instant::now();
    signal(s.pid(), libc::SIGKILL);
    case.mark("server killed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s2 = restart(args).await;
    targets.set(&s2.url, &s2.token);
    case.mark("server restarted");
    tokio::time::sleep(AFTER).await;
    let logs = load.finish().await;
    drop(s);
    stop(s2).await;

    let r = reckon(&url, &run, &logs).await;
    case.conclude(
        &r,
        recovered_after(&logs, fault),
        &["--data-dir", &d, "--database-url", &url],
        &[],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_sqlite_sequential() {
    kill9(Backend::Sqlite, "sequential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_sqlite_batched() {
    kill9(Backend::Sqlite, "batched").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_postgres_sequential() {
    kill9(Backend::Postgres, "sequential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_postgres_batched() {
    kill9(Backend::Postgres, "batched").await;
}

/// How long PostgreSQL stays stopped.
const PG_DOWN: Duration = Duration::from_secs(2);

/// PostgreSQL stopped mid-load (fast shutdown: every session is ended), down for a while, then
/// started again: the same server process takes events again by itself.
async fn pg_restart(device: &'static str) {
    let case = Case::new("pgrestart", Backend::Postgres, device);
    let pg = blocking(PgCluster::start).await;
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let s = start(node_args(&d, "n1", &url, device)).await;
    let targets = Targets::new(&s.url, &s.token);
    let run = case.run();
    let load = Load::start(&run, &targets, LoadShape::default());
    case.mark("load on");
    tokio::time::sleep(BEFORE).await;

    let pg = blocking(move || {
        pg.stop();
        pg
    })
    .await;
    case.mark("PostgreSQL stopped");
    tokio::time::sleep(PG_DOWN).await;
    let pg = blocking(move || {
        pg.restart();
        pg
    })
    .await;
    let fault_end = Instant::now();
    case.mark("PostgreSQL started again");
    tokio::time::sleep(AFTER + Duration::from_secs(2)).await;
    let logs = load.finish().await;
    stop(s).await;

    let r = reckon(&url, &run, &logs).await;
    assert!(
        r.longest_pause >= PG_DOWN / 2,
        "the clients saw the outage: longest pause {:?}",
        r.longest_pause
    );
    case.conclude(
        &r,
        recovered_after(&logs, fault_end),
        &["--data-dir", &d, "--database-url", &url],
        &[],
    );
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_restart_sequential() {
    pg_restart("sequential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_restart_batched() {
    pg_restart("batched").await;
}

/// The server's request timeout in the freeze case, and how long PostgreSQL stays frozen.
const REQUEST_TIMEOUT_SECS: u64 = 2;
const FROZEN: Duration = Duration::from_secs(5);

/// PostgreSQL frozen (SIGSTOP to the postmaster and every backend) for longer than the server's
/// request timeout, then thawed (SIGCONT): requests caught in it get 408 or 503, and the same
/// server process takes events again by itself.
async fn pg_freeze(device: &'static str) {
    let case = Case::new("pgfreeze", Backend::Postgres, device);
    let mut pg = blocking(PgCluster::start).await;
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let conf = dir.path().join("auditseal.toml");
    std::fs::write(
        &conf,
        format!("[server]\nrequest_timeout_secs = {REQUEST_TIMEOUT_SECS}\n"),
    )
    .unwrap();
    let mut args = node_args(&d, "n1", &url, device);
    args.extend(["--config".to_string(), conf.to_str().unwrap().to_string()]);
    let s = start(args).await;
    let targets = Targets::new(&s.url, &s.token);
    let run = case.run();
    let load = Load::start(&run, &targets, LoadShape::default());
    case.mark("load on");
    tokio::time::sleep(BEFORE).await;

    pg.freeze();
    case.mark("PostgreSQL frozen");
    tokio::time::sleep(FROZEN).await;
    pg.thaw();
    let fault_end = Instant::now();
    case.mark("PostgreSQL thawed");
    tokio::time::sleep(AFTER + Duration::from_secs(2)).await;
    let logs = load.finish().await;
    stop(s).await;

    let r = reckon(&url, &run, &logs).await;
    assert!(
        r.refused.keys().any(|k| k.starts_with("408")),
        "requests outlived the request timeout during the freeze: {:?}",
        r.refused
    );
    case.conclude(
        &r,
        recovered_after(&logs, fault_end),
        &["--data-dir", &d, "--database-url", &url],
        &[],
    );
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_freeze_sequential() {
    pg_freeze("sequential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_freeze_batched() {
    pg_freeze("batched").await;
}

/// Ends the session holding the node lock of `node` in the database at `url`: the advisory lock
/// whose key is the first 8 bytes of SHA-256("auditseal-node:" || node)
/// (core/src/store/postgres.rs), not any other (a starting server's migration holds one too).
/// Returns how many sessions were ended.
async fn terminate_lock_session(url: &str, node: &str) -> usize {
    let mut c = sqlx::PgConnection::connect(url).await.expect("pg connect");
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND objsubid = 1 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND ((classid::int8 << 32) | objid::int8) = \
             ('x' || substr(encode(sha256(convert_to($1, 'UTF8')), 'hex'), 1, 16))::bit(64)::int8",
    )
    .bind(format!("auditseal-node:{node}"))
    .fetch_all(&mut c)
    .await
    .expect("pg_terminate_backend");
    ended.iter().filter(|e| **e).count()
}

/// The lock session of a node killed (pg_terminate_backend) while a second server with the same
/// node id waits to take over: the second takes the node and the clients move to it; nothing
/// acknowledged by either is lost, no number is used twice or skipped.
async fn lock_killed(device: &'static str) {
    let case = Case::new("lockkill", Backend::Postgres, device);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (da, db) = (
        dir_a.path().to_str().unwrap().to_string(),
        dir_b.path().to_str().unwrap().to_string(),
    );
    let url = new_database(Backend::Postgres, dir_a.path()).await;
    let a = start(node_args(&da, "n1", &url, device)).await;
    // One key for both, as for the nodes of docs/HA.md.
    std::fs::copy(
        dir_a.path().join("signing-key.pem"),
        dir_b.path().join("signing-key.pem"),
    )
    .unwrap();
    let targets = Targets::new(&a.url, &a.token);
    let run = case.run();
    let load = Load::start(&run, &targets, LoadShape::default());
    case.mark("load on");
    tokio::time::sleep(BEFORE).await;

    // The second writer: starts as n1 again and again until it gets the node's lock.
    let b_args = node_args(&db, "n1", &url, device);
    let waiter = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = b_args.iter().map(String::as_str).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut refused = 0;
        loop {
            match Server::start(&a) {
                Ok(s) => return (s, refused),
                Err(e) if Instant::now() < deadline => {
                    assert!(e.contains("already writing"), "{e}");
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("the second server never got the node: {e}"),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let fault = Instant::now();
    assert_eq!(
        terminate_lock_session(&url, "n1").await,
        1,
        "one lock session"
    );
    case.mark("lock session terminated");
    let (b, refused_starts) = waiter.await.unwrap();
    assert!(refused_starts > 0, "the second server waited for the lock");
    // The clients move to it as the first refuses them.
    targets.add(&b.url, &b.token);
    case.mark("second server started");
    tokio::time::sleep(AFTER).await;
    let logs = load.finish().await;
    let a_log = a.log();
    let (a_url, b_url) = (a.url.clone(), b.url.clone());
    stop(a).await;
    stop(b).await;

    let r = reckon(&url, &run, &logs).await;
    // The first server learns of the loss at its next check of the lock's session (every 2 s);
    // whatever it acknowledges after the second server's first acknowledgement was written by
    // two processes as one node at once.
    let took_over = first_ack(&logs, fault, Some(&b_url));
    let overlap = took_over.map_or(0, |t| {
        logs.iter()
            .flat_map(|l| &l.acked)
            .filter(|x| x.server == a_url && x.acked > fault + t)
            .count()
    });
    eprintln!(
        "[{run}] the second server acknowledged its first event {took_over:?} after the kill; \
         the first acknowledged {overlap} events after that (it noticed the loss: {})",
        a_log.contains("lost the node's PostgreSQL advisory lock"),
    );
    case.conclude(
        &r,
        took_over,
        &["--data-dir", &da, "--database-url", &url],
        &[],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_killed_sequential() {
    lock_killed("sequential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_killed_batched() {
    lock_killed("batched").await;
}

/// How long the HSM token stays away.
const TOKEN_AWAY: Duration = Duration::from_secs(2);

/// The HSM token removed mid-load (SoftHSM2's token directory moved away), then put back: 503
/// `token_unavailable` meanwhile, and the same server process signs again by itself.
async fn hsm_removed(backend: Backend, device: &'static str) {
    let case = Case::new("hsm", backend, device);
    let h = blocking(|| SoftHsm::new("audit")).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let url = new_database(backend, dir.path()).await;
    let conf = dir.path().join("auditseal.toml");
    std::fs::write(
        &conf,
        format!(
            "[protection]\nkeyid = 1\n[[protection.keys]]\nkind = 'pkcs11'\nkeyid = 1\n\
             library = '{MODULE}'\nslot_label = 'audit'\nkey_label = 'rsakey'\npin = '{PIN}'\n"
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap().to_string();
    let mut args = node_args(&d, "n1", &url, device);
    args.extend(["--config".to_string(), conf.clone()]);
    let env = vec![("SOFTHSM2_CONF", h.conf().into_os_string())];
    let s = start_env(args, env.clone()).await;
    let targets = Targets::new(&s.url, &s.token);
    let run = case.run();
    let load = Load::start(&run, &targets, LoadShape::default());
    case.mark("load on");
    tokio::time::sleep(BEFORE).await;

    let away = h.dir.path().join("tokens-away");
    std::fs::rename(h.tokens_dir(), &away).unwrap();
    case.mark("token removed");
    tokio::time::sleep(TOKEN_AWAY).await;
    std::fs::rename(&away, h.tokens_dir()).unwrap();
    let fault_end = Instant::now();
    case.mark("token restored");
    tokio::time::sleep(AFTER + Duration::from_secs(2)).await;
    let logs = load.finish().await;
    stop(s).await;

    let r = reckon(&url, &run, &logs).await;
    assert!(
        r.refused.keys().any(|k| k.contains("token_unavailable")),
        "the token's absence was seen: {:?}",
        r.refused
    );
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    case.conclude(
        &r,
        recovered_after(&logs, fault_end),
        &["--config", &conf, "--data-dir", &d, "--database-url", &url],
        &env,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hsm_removed_sqlite_sequential() {
    hsm_removed(Backend::Sqlite, "sequential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hsm_removed_sqlite_batched() {
    hsm_removed(Backend::Sqlite, "batched").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hsm_removed_postgres_sequential() {
    hsm_removed(Backend::Postgres, "sequential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hsm_removed_postgres_batched() {
    hsm_removed(Backend::Postgres, "batched").await;
}

/// How long the disk stays full.
const DISK_FULL: Duration = Duration::from_secs(2);
/// The tmpfs of the PostgreSQL case: an initdb'd cluster takes 39 MB (its first 16 MB WAL
/// segment included); the load adds rows and WAL segments.
const PG_DISK: &str = "128m";

/// Whether a connection of its own can take the SQLite database's write lock at once, and the
/// newest committed sequenceNumber it sees.
async fn sqlite_write_lock(url: &str) -> String {
    let mut c = sqlx::SqliteConnection::connect(url)
        .await
        .expect("sqlite connect");
    let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(sequencenumber) FROM auditrecorddata")
        .fetch_one(&mut c)
        .await
        .expect("max");
    sqlx::raw_sql("PRAGMA busy_timeout = 0")
        .execute(&mut c)
        .await
        .expect("pragma");
    let lock = match sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut c).await {
        Ok(_) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut c).await;
            "free".to_string()
        }
        Err(e) => format!("held ({e})"),
    };
    format!("{lock}; newest committed sequenceNumber {newest:?}")
}

/// The SQLite database's file system (a small tmpfs) filled mid-load, then freed: requests
/// caught in it are refused, and the same server process takes events again by itself.
async fn disk_full(device: &'static str) {
    let case = Case::new("diskfull", Backend::Sqlite, device);
    let disk = blocking(|| SmallDisk::mount("32m")).await;
    let url = format!(
        "sqlite://{}?mode=rwc",
        disk.path().join("auditseal.db").display()
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let s = start(node_args(&d, "n1", &url, device)).await;
    let targets = Targets::new(&s.url, &s.token);
    let run = case.run();
    let load = Load::start(&run, &targets, LoadShape::default());
    case.mark("load on");
    tokio::time::sleep(BEFORE).await;

    let disk = blocking(move || {
        let filler = disk.fill();
        (disk, filler)
    })
    .await;
    case.mark("disk full");
    tokio::time::sleep(DISK_FULL).await;
    std::fs::remove_file(&disk.1).unwrap();
    let fault_end = Instant::now();
    case.mark("disk freed");
    tokio::time::sleep(AFTER + Duration::from_secs(2)).await;
    let logs = load.finish().await;
    // Seen from outside while the server still runs: whether some connection holds the write
    // lock (an open transaction), and the newest committed number against the newest
    // acknowledged one.
    let lock = sqlite_write_lock(&url).await;
    let newest_acked = logs.iter().flat_map(|l| &l.acked).map(|a| a.seq).max();
    eprintln!(
        "[{run}] after the load, before the server stops: write lock {lock}; newest \
         acknowledged sequenceNumber {newest_acked:?}"
    );
    let log = s.log();
    stop(s).await;

    let r = reckon(&url, &run, &logs).await;
    for l in log.lines().filter(|l| l.contains("ERROR")).take(3) {
        eprintln!("[{run}] server logged: {l}");
    }
    assert!(
        r.refused.keys().any(|k| k.contains("storage_full")),
        "the full disk was seen: {:?}",
        r.refused
    );
    case.conclude(
        &r,
        recovered_after(&logs, fault_end),
        &["--data-dir", &d, "--database-url", &url],
        &[],
    );
    drop(disk);
}

// Named after the case, so that `diskfull` selects it on both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn diskfull_sqlite_sequential() {
    disk_full("sequential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn diskfull_sqlite_batched() {
    disk_full("batched").await;
}

/// What PostgreSQL's log tells about the full disk: errors, PANICs, crash restarts and
/// recoveries, each distinct message once (the first line that says it) with how often it came.
fn pg_story(log: &str) -> Vec<(String, usize)> {
    const TOLD: [&str; 10] = [
        "PANIC",
        "No space left",
        "terminated by signal",
        "terminating any other",
        "reinitializing",
        "startup process",
        "database system was",
        "ready to accept",
        "shut down",
        "shutting down",
    ];
    let mut story: Vec<(String, usize)> = Vec::new();
    for l in log.lines().filter(|l| TOLD.iter().any(|t| l.contains(t))) {
        // "<date> <time> UTC [pid] LEVEL:  message": the same message from another backend is
        // the same story.
        let message = l.split_once("] ").map_or(l, |(_, m)| m);
        match story
            .iter_mut()
            .find(|(first, _)| first.split_once("] ").is_some_and(|(_, m)| m == message))
        {
            Some((_, n)) => *n += 1,
            None => story.push((l.to_string(), 1)),
        }
    }
    story
}

/// How many lines of `story` say `what`.
fn count(story: &[(String, usize)], what: &str) -> usize {
    story
        .iter()
        .filter(|(l, _)| l.contains(what))
        .map(|(_, n)| n)
        .sum()
}

/// Waits until PostgreSQL takes connections again (crash recovery included); if its postmaster
/// has exited instead, starts it again, as an operator would. Returns whether it was started.
async fn pg_back(mut pg: PgCluster, url: &str) -> (PgCluster, bool) {
    let deadline = Instant::now() + RECOVERY_LIMIT;
    let mut started = false;
    loop {
        if !pg.running() {
            assert!(!started, "PostgreSQL exited again: {}", pg.log());
            pg = blocking(move || {
                pg.restart();
                pg
            })
            .await;
            started = true;
        } else if sqlx::PgConnection::connect(url).await.is_ok() {
            return (pg, started);
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL takes no connection {RECOVERY_LIMIT:?} after the disk was freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The PostgreSQL cluster's data directory, WAL included, on a small tmpfs filled mid-load, then
/// freed: the same server process takes events again by itself. PostgreSQL PANICs when it cannot
/// create a WAL segment, and crash recovery fails too while the disk is still full, so its
/// postmaster exits: the case then starts PostgreSQL again (not the auditseal server) and says so
/// (docs/RELIABILITY.md "The cases").
async fn disk_full_pg(device: &'static str) {
    let case = Case::new("diskfull", Backend::Postgres, device);
    let disk = blocking(|| SmallDisk::mount(PG_DISK)).await;
    let (disk, pg) = blocking(move || {
        let pg = PgCluster::start_on(disk.path());
        (disk, pg)
    })
    .await;
    let url = pg.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let s = start(node_args(&d, "n1", &url, device)).await;
    let targets = Targets::new(&s.url, &s.token);
    let run = case.run();
    let load = Load::start(&run, &targets, LoadShape::default());
    case.mark("load on");
    tokio::time::sleep(BEFORE).await;

    // Not moved into a blocking task: `disk` must outlive `pg`, whose drop stops PostgreSQL
    // through the data directory on it, also when the case fails.
    let filler = tokio::task::block_in_place(|| disk.fill());
    let full_at = Instant::now();
    case.mark("disk full");
    // The load alone hardly moves the WAL once rows no longer fit (a failed insert writes
    // none), so PostgreSQL would not need a new WAL segment while the disk is full; a switch
    // makes it need one, as a busier database would.
    tokio::time::sleep(DISK_FULL / 4).await;
    let switch = match sqlx::PgConnection::connect(&url).await {
        Ok(mut c) => sqlx::query_scalar::<_, String>("SELECT pg_switch_wal()::text")
            .fetch_one(&mut c)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    case.mark(&format!("pg_switch_wal(): {switch:?}"));
    tokio::time::sleep((full_at + DISK_FULL).saturating_duration_since(Instant::now())).await;
    std::fs::remove_file(&filler).unwrap();
    let fault_end = Instant::now();
    case.mark("disk freed");
    let (pg, pg_started) = pg_back(pg, &url).await;
    let pg_back_in = fault_end.elapsed();
    if pg_started {
        case.mark("PostgreSQL's postmaster had exited: the test started it again (not auditseal)");
    } else {
        case.mark("PostgreSQL takes connections again (nobody restarted it)");
    }
    tokio::time::sleep(AFTER + Duration::from_secs(2)).await;
    let logs = load.finish().await;
    let log = s.log();
    stop(s).await;

    let r = reckon(&url, &run, &logs).await;
    for l in log.lines().filter(|l| l.contains("ERROR")).take(3) {
        eprintln!("[{run}] server logged: {l}");
    }
    let pg_log = pg.log();
    let story = pg_story(&pg_log);
    for (l, n) in story.iter().take(30) {
        eprintln!("[{run}] PostgreSQL logged ({n}x): {l}");
    }
    let acked_while_full = logs
        .iter()
        .flat_map(|l| &l.acked)
        .filter(|a| a.acked > full_at && a.acked < fault_end)
        .count();
    println!(
        "[{run}] PostgreSQL: {} PANIC, {} crash restarts, took connections {}ms after the disk \
         was freed, restarted by the test: {pg_started}; events acknowledged while the disk was full: \
         {acked_while_full}",
        count(&story, "PANIC"),
        count(&story, "reinitializing"),
        pg_back_in.as_millis(),
    );
    assert!(
        r.refused.keys().any(|k| k.contains("storage_full")),
        "the full disk was seen: {:?}",
        r.refused
    );
    case.conclude(
        &r,
        recovered_after(&logs, fault_end),
        &["--data-dir", &d, "--database-url", &url],
        &[],
    );
    drop(pg);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn diskfull_postgres_sequential() {
    disk_full_pg("sequential").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn diskfull_postgres_batched() {
    disk_full_pg("batched").await;
}
