//! Machinery of the fault suite (tests/tests/faults.rs, docs/RELIABILITY.md "Fault suite"):
//! concurrent clients that post single events and bulk requests and retry every request that was
//! refused or not answered with the same body (the same event pks); a reckoning of what was
//! acknowledged against what the database holds; a private PostgreSQL cluster a test may stop,
//! freeze and restart; a small tmpfs a test may fill.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{all_rows, cli_env, event};

/// Where the clients send their requests: one server, or several that a client moves between
/// (to the next one after each refused or unanswered request). The test repoints them: a
/// restarted server listens on a new port; a second server comes to take over a node.
#[derive(Clone)]
pub struct Targets(Arc<RwLock<Vec<(String, String)>>>);

impl Targets {
    /// Requests go to `url` with `token` as the bearer token.
    pub fn new(url: &str, token: &str) -> Self {
        Targets(Arc::new(RwLock::new(vec![(
            url.to_string(),
            token.to_string(),
        )])))
    }

    /// From now on requests go to `url` only.
    pub fn set(&self, url: &str, token: &str) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) =
            vec![(url.to_string(), token.to_string())];
    }

    /// One more server to move to.
    pub fn add(&self, url: &str, token: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((url.to_string(), token.to_string()));
    }

    fn get(&self, i: usize) -> (String, String) {
        let t = self.0.read().unwrap_or_else(|e| e.into_inner());
        t[i % t.len()].clone()
    }
}

/// One acknowledged event, as its client was told.
#[derive(Debug, Clone)]
pub struct Ack {
    pub marker: String,
    pub pk: String,
    pub node: String,
    pub seq: i64,
    /// The URL of the server that acknowledged it.
    pub server: String,
    /// When the request that was acknowledged was sent, and when the answer came.
    pub sent: Instant,
    pub acked: Instant,
}

/// What one client saw.
#[derive(Debug, Default)]
pub struct ClientLog {
    pub acked: Vec<Ack>,
    /// Refused requests (all retried) by status and error code, e.g. "503 database_unavailable".
    pub refused: BTreeMap<String, usize>,
    /// Requests without an answer (connection refused or broken, client timeout); retried.
    pub unanswered: usize,
    /// Answers a client must never get (a 4xx but 408, a 2xx that does not match the request).
    pub unexpected: Vec<String>,
    /// Requests given up after the load stopped without an acknowledgement.
    pub abandoned: usize,
    /// Events sent (each once, however often retried).
    pub events_sent: usize,
}

/// How much load: clients, requests per client (an upper bound; the test stops the load), and
/// the bulk requests among them.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    pub clients: usize,
    pub max_requests: usize,
    /// Every `bulk_every`-th request of a client is a bulk request of `bulk_size` events.
    pub bulk_every: usize,
    pub bulk_size: usize,
}

impl Default for LoadShape {
    fn default() -> Self {
        LoadShape {
            clients: 8,
            max_requests: 5000,
            bulk_every: 5,
            bulk_size: 10,
        }
    }
}

/// How long a client waits for one answer (longer than the servers' request timeout, so that
/// their 408 is seen), and how long a request may go on being retried after the load stopped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
const DRAIN: Duration = Duration::from_secs(30);
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Concurrent clients posting to `Targets` until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<ClientLog>>,
}

impl Load {
    /// Starts `shape.clients` clients. Each event carries its own pk (the same on every retry:
    /// exactly-once ingestion, docs/API.md) and a marker in searchDetail1,
    /// `<run>:<client>:<request>:<index>`, that finds it again should it be stored under another.
    pub fn start(run: &str, targets: &Targets, shape: LoadShape) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..shape.clients)
            .map(|i| {
                let c = Client {
                    id: i,
                    run: run.to_string(),
                    targets: targets.clone(),
                    stop: stop.clone(),
                    shape,
                };
                tokio::spawn(c.run())
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops sending new requests; each client finishes (retries) the one it is on, then the
    /// logs of every client.
    pub async fn finish(self) -> Vec<ClientLog> {
        self.stop.store(true, Ordering::SeqCst);
        let mut logs = Vec::new();
        for c in self.clients {
            logs.push(c.await.expect("a load client panicked"));
        }
        logs
    }
}

struct Client {
    id: usize,
    run: String,
    targets: Targets,
    stop: Arc<AtomicBool>,
    shape: LoadShape,
}

/// One request's events: (marker, pk), and its body.
struct Request {
    events: Vec<(String, String)>,
    bulk: bool,
    body: Value,
}

impl Client {
    fn request(&self, n: usize) -> Request {
        let bulk =
            self.shape.bulk_every > 0 && n % self.shape.bulk_every == self.shape.bulk_every - 1;
        let count = if bulk { self.shape.bulk_size } else { 1 };
        let mut events = Vec::with_capacity(count);
        let mut bodies = Vec::with_capacity(count);
        for k in 0..count {
            let marker = format!("{}:{}:{}:{}", self.run, self.id, n, k);
            let mut e = event("FAULT_LOAD");
            e["searchDetail1"] = json!(marker);
            let pk = uuid::Uuid::new_v4().simple().to_string();
            e["pk"] = json!(pk);
            events.push((marker, pk));
            bodies.push(e);
        }
        let body = if bulk {
            Value::Array(bodies)
        } else {
            bodies.pop().unwrap_or(Value::Null)
        };
        Request { events, bulk, body }
    }

    async fn run(self) -> ClientLog {
        let mut log = ClientLog::default();
        let mut http: HashMap<String, reqwest::Client> = HashMap::new();
        // Which of the targets this client sends to; the next one after a failure.
        let mut at = self.id;
        for n in 0..self.shape.max_requests {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let req = self.request(n);
            log.events_sent += req.events.len();
            let mut drain_until: Option<Instant> = None;
            loop {
                let (url, token) = self.targets.get(at);
                let client = http.entry(token.clone()).or_insert_with(|| {
                    crate::client_builder(&token)
                        .timeout(CLIENT_TIMEOUT)
                        .build()
                        .expect("HTTP client")
                });
                let path = if req.bulk { "events:batch" } else { "events" };
                let sent = Instant::now();
                let answer = client
                    .post(format!("{url}/api/v1/{path}"))
                    .json(&req.body)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => {
                        let status = r.status();
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        match acks(&req, &v, &url, sent) {
                            Ok(a) => log.acked.extend(a),
                            Err(e) => log.unexpected.push(format!("{status} {e}: {v}")),
                        }
                        break;
                    }
                    Ok(r) if r.status().as_u16() == 408 || r.status().is_server_error() => {
                        let status = r.status().as_u16();
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        let code = v["error"].as_str().unwrap_or("-");
                        *log.refused.entry(format!("{status} {code}")).or_default() += 1;
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        log.unexpected.push(format!("{status} {text}"));
                        break;
                    }
                    Err(_) => log.unanswered += 1,
                }
                at += 1;
                if self.stop.load(Ordering::SeqCst) {
                    let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
                    if Instant::now() > until {
                        log.abandoned += 1;
                        break;
                    }
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        log
    }
}

/// The acknowledgements in a 2xx answer to `req`, checked against it.
fn acks(req: &Request, v: &Value, server: &str, sent: Instant) -> Result<Vec<Ack>, String> {
    let answered: Vec<&Value> = if req.bulk {
        let events = v["events"].as_array().ok_or("no events array")?;
        if events.len() != req.events.len() || v["count"].as_u64() != Some(events.len() as u64) {
            return Err(format!(
                "{} events sent, {} acknowledged",
                req.events.len(),
                events.len()
            ));
        }
        events.iter().collect()
    } else {
        vec![v]
    };
    let acked = Instant::now();
    req.events
        .iter()
        .zip(answered)
        .map(|((marker, pk_sent), a)| {
            let (Some(pk), Some(node), Some(seq)) = (
                a["pk"].as_str(),
                a["nodeId"].as_str(),
                a["sequenceNumber"].as_i64(),
            ) else {
                return Err("an acknowledgement without pk, nodeId or sequenceNumber".to_string());
            };
            if !same_pk(pk_sent, pk) {
                return Err(format!("sent pk {pk_sent}, acknowledged as {pk}"));
            }
            Ok(Ack {
                marker: marker.clone(),
                pk: pk.to_string(),
                node: node.to_string(),
                seq,
                server: server.to_string(),
                sent,
                acked,
            })
        })
        .collect()
}

/// UUIDs compare without case or hyphens.
fn same_pk(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace('-', "").to_ascii_lowercase();
    norm(a) == norm(b)
}

/// What the database holds against what the clients were told.
#[derive(Debug, Default)]
pub struct Reckoning {
    /// Client events acknowledged.
    pub acknowledged: usize,
    /// Client events stored (rows carrying a client marker).
    pub stored: usize,
    /// Acknowledged events not stored with the pk, node and number they were acknowledged with.
    pub lost: usize,
    /// Extra rows of a client event stored more than once (same marker or same pk).
    pub duplicated: usize,
    /// Missing sequence numbers, per node from its first row to its last, summed.
    pub gaps: usize,
    /// Client events stored that no client was told about (their answer was lost).
    pub unacknowledged_stored: usize,
    /// The longest time without any acknowledgement while the load ran (the outage as the
    /// clients saw it).
    pub longest_pause: Duration,
    pub refused: BTreeMap<String, usize>,
    pub unanswered: usize,
    pub abandoned: usize,
    pub unexpected: Vec<String>,
    pub examples: Vec<String>,
    /// Each node's rows and sequence range.
    pub nodes: BTreeMap<String, (usize, i64, i64)>,
}

/// Reads every row of `db_url` and reckons the clients' logs against it.
pub async fn reckon(db_url: &str, run: &str, logs: &[ClientLog]) -> Reckoning {
    let rows = all_rows(db_url).await;
    let mut r = Reckoning::default();
    let prefix = format!("{run}:");
    let mut by_marker: HashMap<&str, Vec<(&str, &str, i64)>> = HashMap::new();
    let mut pks: HashMap<&str, usize> = HashMap::new();
    for row in &rows {
        *pks.entry(row.pk.as_str()).or_default() += 1;
        if let Some(m) = row
            .search_detail1
            .as_deref()
            .filter(|m| m.starts_with(&prefix))
        {
            r.stored += 1;
            by_marker.entry(m).or_default().push((
                row.pk.as_str(),
                row.node_id.as_str(),
                row.sequence_number,
            ));
        }
    }
    let dup_markers: usize = by_marker.values().map(|v| v.len() - 1).sum();
    let dup_pks: usize = pks.values().map(|n| n - 1).sum();
    r.duplicated = dup_markers.max(dup_pks);
    for (m, v) in by_marker.iter().filter(|(_, v)| v.len() > 1).take(3) {
        r.examples.push(format!("duplicated: {m} stored as {v:?}"));
    }

    let mut acked: HashMap<&str, &Ack> = HashMap::new();
    for log in logs {
        for a in &log.acked {
            if let Some(first) = acked.insert(a.marker.as_str(), a) {
                r.unexpected.push(format!(
                    "{} acknowledged twice: {first:?} and {a:?}",
                    a.marker
                ));
            }
        }
        for (k, n) in &log.refused {
            *r.refused.entry(k.clone()).or_default() += n;
        }
        r.unanswered += log.unanswered;
        r.abandoned += log.abandoned;
        r.unexpected.extend(log.unexpected.iter().cloned());
    }
    r.acknowledged = acked.len();
    let mut times: Vec<Instant> = acked.values().map(|a| a.acked).collect();
    times.sort_unstable();
    r.longest_pause = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    for (m, a) in &acked {
        let found = by_marker.get(m).is_some_and(|v| {
            v.iter()
                .any(|(pk, node, seq)| same_pk(pk, &a.pk) && *node == a.node && *seq == a.seq)
        });
        if !found {
            r.lost += 1;
            if r.examples.len() < 6 {
                r.examples
                    .push(format!("lost: {a:?}, stored as {:?}", by_marker.get(m)));
            }
        }
    }
    r.unacknowledged_stored = by_marker.keys().filter(|m| !acked.contains_key(*m)).count();

    let mut seqs: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for row in &rows {
        seqs.entry(row.node_id.as_str())
            .or_default()
            .push(row.sequence_number);
    }
    for (node, mut s) in seqs {
        s.sort_unstable();
        s.dedup();
        let (first, last) = (s[0], s[s.len() - 1]);
        let missing = (last - first + 1) as usize - s.len();
        r.gaps += missing;
        if missing > 0 && r.examples.len() < 8 {
            let holes: Vec<i64> = s
                .windows(2)
                .filter(|w| w[1] != w[0] + 1)
                .map(|w| w[0] + 1)
                .take(5)
                .collect();
            r.examples.push(format!(
                "gaps in node {node}: {missing}, first after {holes:?}"
            ));
        }
        r.nodes.insert(node.to_string(), (s.len(), first, last));
    }
    r
}

impl Reckoning {
    /// The figures of a case, one line (docs/RELIABILITY.md quotes them).
    pub fn line(
        &self,
        fault: &str,
        db: &str,
        device: &str,
        recovered_in: Option<Duration>,
    ) -> String {
        let refused: usize = self.refused.values().sum();
        format!(
            "fault={fault} db={db} device={device} acknowledged={} stored={} lost={} \
             duplicated={} gaps={} recovered_in={} longest_pause={}ms unacknowledged_stored={} \
             refused={refused} unanswered={} abandoned={}",
            self.acknowledged,
            self.stored,
            self.lost,
            self.duplicated,
            self.gaps,
            recovered_in.map_or("none".to_string(), |d| format!("{}ms", d.as_millis())),
            self.longest_pause.as_millis(),
            self.unacknowledged_stored,
            self.unanswered,
            self.abandoned,
        )
    }

    /// Nothing acknowledged is lost, no event stored twice, no gap, nothing unexpected.
    pub fn assert_sound(&self) {
        let details = format!(
            "refused {:?}; nodes (rows, first, last) {:?}; {:?}",
            self.refused, self.nodes, self.examples
        );
        assert!(
            self.unexpected.is_empty(),
            "unexpected answers: {:?}",
            &self.unexpected[..self.unexpected.len().min(5)]
        );
        assert!(self.acknowledged > 0, "the load ran: {details}");
        assert_eq!(self.lost, 0, "acknowledged events lost: {details}");
        assert_eq!(self.gaps, 0, "sequence gaps: {details}");
        assert_eq!(self.duplicated, 0, "events stored twice: {details}");
    }
}

/// The first acknowledgement of a request sent at or after `since`: how long after `since` the
/// server took events again.
pub fn recovered_after(logs: &[ClientLog], since: Instant) -> Option<Duration> {
    first_ack(logs, since, None)
}

/// `recovered_after`, counting only the server at `url` (or any server).
pub fn first_ack(logs: &[ClientLog], since: Instant, url: Option<&str>) -> Option<Duration> {
    logs.iter()
        .flat_map(|l| &l.acked)
        .filter(|a| a.sent >= since && url.is_none_or(|u| a.server == u))
        .map(|a| a.acked - since)
        .min()
}

/// `auditseal-db <globals> verifylog --all`; panics unless it exits 0.
pub fn verifylog(globals: &[&str], env: &[(&str, &std::ffi::OsStr)]) {
    let mut args = globals.to_vec();
    args.extend(["verifylog", "--all"]);
    let (code, out, err) = cli_env(&args, env);
    assert_eq!(code, 0, "verifylog {globals:?}:\n{out}{err}");
}

/// Timestamps a case's steps on stderr, to see where its time goes.
pub struct Steps {
    case: String,
    t0: Instant,
}

impl Steps {
    pub fn new(case: &str) -> Steps {
        Steps {
            case: case.to_string(),
            t0: Instant::now(),
        }
    }

    pub fn mark(&self, what: &str) {
        eprintln!(
            "[{} +{:.2}s] {what}",
            self.case,
            self.t0.elapsed().as_secs_f64()
        );
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this test started (or found as a child of one) and a signal.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// A private PostgreSQL cluster (as scripts/pg-cluster makes one) that a test may stop, freeze
/// and restart; stopped and removed on drop. It listens on a unix socket in its own directory
/// only, never on a TCP port: while one is stopped another test's cluster could take its port,
/// and its server would then reconnect to the wrong cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    /// The data directory: in `dir`, or on a disk the test gave (`start_on`).
    data: PathBuf,
    bin: PathBuf,
    frozen: Vec<u32>,
}

/// The port number names the socket file (`.s.PGSQL.5432`) in the cluster's socket directory.
const SOCKET_PORT: u16 = 5432;

fn pg_bin() -> PathBuf {
    let mut bins: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    bins.sort();
    bins.pop().map(|(_, b)| b).expect(
        "no PostgreSQL server under /usr/lib/postgresql/*/bin: run scripts/test (installs it)",
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl PgCluster {
    pub fn start() -> PgCluster {
        Self::start_in(None)
    }

    /// A cluster whose data directory (all of it, WAL included) is `disk`/pgdata; its socket and
    /// server log stay elsewhere, so that PostgreSQL can say what happened when `disk` is full.
    pub fn start_on(disk: &Path) -> PgCluster {
        Self::start_in(Some(disk))
    }

    fn start_in(disk: Option<&Path>) -> PgCluster {
        let dir = tempfile::Builder::new()
            .prefix("auditseal-faults-pg.")
            .tempdir()
            .expect("tempdir");
        let data = disk.map_or_else(|| dir.path().join("data"), |d| d.join("pgdata"));
        let c = PgCluster {
            dir,
            data,
            bin: pg_bin(),
            frozen: Vec::new(),
        };
        std::fs::create_dir(c.dir.path().join("sock")).expect("sock dir");
        if is_root() {
            // initdb runs as postgres: the cluster's files must be its own.
            use std::os::unix::fs::PermissionsExt;
            for d in [Some(c.dir.path()), disk].into_iter().flatten() {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
                run(Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(d));
            }
        }
        let data = c.data();
        run(c.as_owner("initdb").arg("-D").arg(&data).args([
            "--auth=trust",
            "-U",
            "postgres",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]));
        assert!(c.pg_ctl_start(), "PostgreSQL did not start: {}", c.log());
        c
    }

    fn data(&self) -> PathBuf {
        self.data.clone()
    }

    /// PostgreSQL's server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A PostgreSQL program run as the cluster's owner (initdb refuses root).
    fn as_owner(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn pg_ctl_start(&self) -> bool {
        let out = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-c listen_addresses='' -p {SOCKET_PORT} -k {}",
                self.dir.path().join("sock").display()
            ))
            .arg("start")
            .output()
            .expect("run pg_ctl");
        out.status.success()
    }

    /// The URL of the cluster's `postgres` database, through its socket.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost:{SOCKET_PORT}/postgres?host={}",
            self.dir.path().join("sock").display()
        )
    }

    /// Stops the server (fast: sessions are ended, as by an administrator's restart).
    pub fn stop(&self) {
        run(self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]));
    }

    /// Starts it again.
    pub fn restart(&self) {
        assert!(
            self.pg_ctl_start(),
            "PostgreSQL did not start again: {}",
            self.log()
        );
    }

    fn postmaster(&self) -> u32 {
        self.postmaster_pid().expect("postmaster.pid")
    }

    fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
    }

    /// Whether the postmaster runs: its pid file is there (it removes it as it exits) and names
    /// a live process (not a zombie nobody reaped).
    pub fn running(&self) -> bool {
        self.postmaster_pid().is_some_and(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
                .unwrap_or(false)
        })
    }

    /// SIGSTOP to the postmaster, then to every process it started.
    pub fn freeze(&mut self) {
        let pm = self.postmaster();
        signal(pm, libc::SIGSTOP);
        self.frozen = vec![pm];
        for child in children(pm) {
            signal(child, libc::SIGSTOP);
            self.frozen.push(child);
        }
    }

    /// SIGCONT to whatever `freeze` stopped, children first.
    pub fn thaw(&mut self) {
        for pid in self.frozen.drain(..).rev() {
            // SAFETY: kill(2) on a pid `freeze` stopped; it may have exited since.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.thaw();
        let _ = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .output();
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
            let ppid: u32 = stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tmpfs of `size` mounted on a fresh directory (needs root), unmounted on drop.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("auditseal-faults-disk.")
            .tempdir()
            .expect("tempdir");
        // Needs root (CI runs scripts/test as root); without it the case fails, saying why.
        run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path()));
        SmallDisk { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with `filler` until no byte more fits.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        let mut n = chunk.len();
        while n > 0 {
            match f.write(&chunk[..n]) {
                Ok(w) if w > 0 => {}
                _ => n /= 2,
            }
        }
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
