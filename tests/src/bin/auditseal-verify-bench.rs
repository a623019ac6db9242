//! auditseal-verify-bench: measures `auditseal-db verifylog` against baselines taken in the same
//! run on the same machine. Prints figures and ratios; asserts nothing (docs/PERFORMANCE.md).
//!
//! Run with `scripts/bench-verify` (release build, throw-away PostgreSQL).
//!
//! For each protection version (v3: the batched device's Merkle proofs; v2: one RSA-2048
//! signature per row) it fills a fresh database with genuine rows spread over `--nodes` node ids,
//! measures the baselines, then runs the real CLI as a child process:
//! - v3 baseline: PostgreSQL's own `COPY (SELECT ... ORDER BY sequencenumber) TO STDOUT` of the
//!   same rows, drained by this process, with the page cache warm;
//! - v2 baseline: aws-lc-rs RSA-2048 verifications of one real row signature, on one thread and
//!   on every core at once;
//! - the verifier: wall clock, its JSON report, its peak RSS (VmHWM sampled while it runs), and the CPU it and
//!   PostgreSQL used while it ran.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use auditseal_core::batched::{BatchedConfig, BatchedDevice};
use auditseal_core::config::{FileConfig, KeyMode, load_keys};
use auditseal_core::details::{self, DetailValue, MapClass};
use auditseal_core::device::{LogDevice, NewEvent};
use auditseal_core::protection::RowProtection;
use auditseal_core::record::AuditRecord;
use auditseal_core::store::SharedStore;
use auditseal_core::token::SharedToken;
use auditseal_e2e::{Backend, new_database};
use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use futures::StreamExt;
use sqlx::Connection;

/// The batched device's batch size for the generated v3 rows (the server's default).
const BATCH: usize = 1000;
/// v2 rows signed and inserted per transaction.
const V2_CHUNK: usize = 2000;
/// How long each RSA verify-rate measurement runs.
const RSA_SECONDS: f64 = 3.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V2,
    V3,
}

struct Opts {
    rows: usize,
    nodes: usize,
    only: Option<Version>,
    /// Wait for a line on stdin before each verifier run (to profile or EXPLAIN it by hand).
    pause: bool,
}

fn opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        rows: 1_000_000,
        nodes: 2,
        only: None,
        pause: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--rows" => o.rows = value()?.replace('_', "").parse().context("--rows N")?,
            "--nodes" => o.nodes = value()?.parse().context("--nodes K")?,
            "--only" => {
                o.only = Some(match value()?.as_str() {
                    "v2" => Version::V2,
                    "v3" => Version::V3,
                    other => bail!("--only {other}: v2 or v3"),
                })
            }
            "--pause" => o.pause = true,
            "-h" | "--help" => {
                println!(
                    "auditseal-verify-bench [--rows N (1000000)] [--nodes K (2)] [--only v2|v3] [--pause]\n  --pause: before each verifier run, print the database URL and the command and wait\n  for Enter (to profile or EXPLAIN the reads by hand)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other}; see --help"),
        }
    }
    if o.nodes == 0 || o.rows < o.nodes {
        bail!("need at least one node and one row per node");
    }
    Ok(o)
}

fn node_name(k: usize) -> String {
    format!("bench-node-{k}")
}

/// Rows of node `k` when `rows` are spread over `nodes`.
fn rows_of(o: &Opts, k: usize) -> usize {
    o.rows / o.nodes + usize::from(k < o.rows % o.nodes)
}

/// A SignServer-like PROCESS event with the details a worker logs (rows of realistic size).
fn event(n: usize) -> NewEvent {
    let details = vec![
        ("WORKER_ID".to_string(), DetailValue::Int(1)),
        (
            "REQUESTID".to_string(),
            DetailValue::String(format!("{:016x}", n as u64 * 0x9e37_79b9_7f4a_7c15)),
        ),
        (
            "CLIENT_IP".to_string(),
            DetailValue::String("192.0.2.17".into()),
        ),
        (
            "FILENAME".to_string(),
            DetailValue::String(format!("invoice-{n}.pdf")),
        ),
        ("PROCESS_SUCCESS".to_string(), DetailValue::Bool(true)),
        (
            "RESPONSE_ENCODED".to_string(),
            DetailValue::String("MIIBszCCARygAwIBAgIUQ0vXk3n1bW8w".into()),
        ),
    ];
    NewEvent {
        event_type: "PROCESS".into(),
        event_status: "SUCCESS".into(),
        auth_token: "CN=signer,O=Test".into(),
        service: "SIGNSERVER".into(),
        module: "WORKER".into(),
        custom_id: Some("1".into()),
        search_detail1: None,
        search_detail2: Some("CN=client,O=Example".into()),
        additional_details: Some(details::encode(
            &details,
            MapClass::Base64PutHashMap,
            details::JAVA_VERSION,
        )),
        pk: None,
        details_listing: Default::default(),
    }
}

/// Prints a line at each tenth of `total` that `done` (before + n) crosses.
fn progress(what: &str, before: usize, n: usize, total: usize, started: Instant) {
    let after = before + n;
    if before * 10 / total != after * 10 / total {
        let s = started.elapsed().as_secs_f64();
        println!(
            "    {what}: {after}/{total} rows, {:.0} s, {} rows/s",
            s,
            thousands(after as f64 / s)
        );
    }
}

/// v3: the real batched device, one per node, each with a few `append_all` of `BATCH` events in
/// flight so sealing batch k+1 overlaps writing batch k (as under a steady bulk load).
async fn generate_v3(o: &Opts, store: &SharedStore, token: &SharedToken) -> anyhow::Result<()> {
    const IN_FLIGHT: usize = 3;
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..o.nodes {
        let device = Arc::new(
            BatchedDevice::start(
                store.clone(),
                node_name(k),
                Some(token.clone()),
                BatchedConfig {
                    max_batch: BATCH,
                    ..BatchedConfig::default()
                },
            )
            .await
            .context("start the batched device")?,
        );
        let total_k = rows_of(o, k);
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..IN_FLIGHT {
            let (device, next, done) = (device.clone(), next.clone(), done.clone());
            let total = o.rows;
            tasks.spawn(async move {
                loop {
                    let first = next.fetch_add(BATCH, Ordering::Relaxed);
                    if first >= total_k {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let n = BATCH.min(total_k - first);
                    let events = (first..first + n).map(event).collect();
                    device.append_all(events).await.context("append_all")?;
                    progress(
                        "v3",
                        done.fetch_add(n, Ordering::Relaxed),
                        n,
                        total,
                        started,
                    );
                }
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.context("generator task")??;
    }
    Ok(())
}

/// v2: rows numbered per node, signed on every core (`protect`, RSA-2048 per row), inserted by
/// one task in transactions of `V2_CHUNK` rows while the signing goes on.
async fn generate_v2(o: &Opts, store: &SharedStore, token: &SharedToken) -> anyhow::Result<()> {
    // (node, first sequence number, rows), the nodes interleaved so they fill alike.
    let mut chunks = Vec::new();
    let per_node: Vec<usize> = (0..o.nodes).map(|k| rows_of(o, k)).collect();
    let mut start = 0;
    while start < per_node[0] {
        for (k, &total_k) in per_node.iter().enumerate() {
            if start < total_k {
                chunks.push((k, start, V2_CHUNK.min(total_k - start)));
            }
        }
        start += V2_CHUNK;
    }
    let threads = cores();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<AuditRecord>>(threads * 2);
    // Writes are fenced by each node's lock, as the devices' are.
    let mut locks = std::collections::HashMap::new();
    for k in 0..o.nodes {
        let node = node_name(k);
        let lock = store.lock_node(&node).await.context("lock node")?;
        locks.insert(node, lock);
    }
    let inserter = {
        let store = store.clone();
        tokio::spawn(async move {
            while let Some(rows) = rx.recv().await {
                let Some(lock) = rows.first().and_then(|r| locks.get(&r.node_id)) else {
                    continue;
                };
                store
                    .insert_batch(&rows, None, &lock.fence())
                    .await
                    .context("insert")?;
            }
            Ok::<_, anyhow::Error>(())
        })
    };
    let base_time = auditseal_core::time::now_millis();
    let total = o.rows;
    let token = token.clone();
    let signers = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (next, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (chunks, next, done, tx, token) = (&chunks, &next, &done, &tx, &token);
                    s.spawn(move || -> anyhow::Result<()> {
                        while let Some(&(k, first, n)) =
                            chunks.get(next.fetch_add(1, Ordering::Relaxed))
                        {
                            let node = node_name(k);
                            let mut rows = Vec::with_capacity(n);
                            for seq in first..first + n {
                                // Never decreasing within a node, as the devices write them.
                                let ts = base_time + (seq / 1000) as i64;
                                let mut r = event(seq).into_record(&node, seq as i64, ts);
                                r.row_protection =
                                    Some(auditseal_core::protector::protect(token.as_ref(), &r)?);
                                rows.push(r);
                            }
                            tx.blocking_send(rows)
                                .map_err(|_| anyhow::anyhow!("the inserter stopped"))?;
                            progress(
                                "v2",
                                done.fetch_add(n, Ordering::Relaxed),
                                n,
                                total,
                                started,
                            );
                        }
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("signer panicked"))?)
        })
    });
    // The signers' closure owned `tx`: once it returns, the inserter drains what is left and ends.
    let signed = signers.await.context("signers");
    let inserted = inserter.await.context("inserter")?;
    signed??;
    inserted
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// After a bulk load: hint bits and visibility map set, statistics for the planner, dirty pages
/// written, so no autovacuum or checkpoint falls into a measurement.
async fn settle(url: &str) -> anyhow::Result<()> {
    let mut c = sqlx::PgConnection::connect(url).await?;
    // One statement per call: VACUUM refuses to run inside a multi-statement query.
    for sql in [
        "VACUUM (FREEZE, ANALYZE) auditrecorddata",
        "VACUUM (ANALYZE) auditbatchdata",
        "CHECKPOINT",
    ] {
        sqlx::raw_sql(sql).execute(&mut c).await.context(sql)?;
    }
    Ok(())
}

/// Loads the tables and their indexes into the OS page cache (pg_prewarm 'read'), so the COPY
/// runs and the verifier all read from memory whatever plan they use.
async fn prewarm(url: &str) -> anyhow::Result<()> {
    let mut c = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .execute(&mut c)
        .await
        .context("pg_prewarm (postgresql-contrib)")?;
    sqlx::raw_sql(
        "SELECT pg_prewarm(oid::regclass, 'read') FROM pg_class \
         WHERE relname LIKE 'audit%' AND relkind IN ('r', 'i')",
    )
    .execute(&mut c)
    .await
    .context("pg_prewarm")?;
    Ok(())
}

/// CPU seconds (user + system) used so far by this cluster's processes: the postmaster, its
/// live children, and (its cutime/cstime) the children it has already reaped.
fn pg_cpu(postmaster: u32) -> f64 {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut ticks = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return f64::NAN;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid ... (utime is field 14).
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid: u32 = f.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if pid == postmaster || ppid == postmaster {
            ticks += f[11..15]
                .iter()
                .filter_map(|s| s.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    ticks as f64 / tick
}

/// The postmaster of the server `url` names: the parent of one of its backends.
async fn postmaster_pid(url: &str) -> anyhow::Result<u32> {
    let mut c = sqlx::PgConnection::connect(url).await?;
    let (backend,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut c)
        .await?;
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat"))
        .context("PostgreSQL must run on this machine (its CPU is read from /proc)")?;
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        .context("parse /proc/<backend>/stat")
}

/// This process's CPU seconds so far (user + system, all threads).
fn self_cpu() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// The machine's busy CPU seconds (all cores, /proc/stat: user nice system irq softirq) and the
/// seconds the hypervisor stole.
fn machine_cpu() -> (f64, f64) {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    ((at(0) + at(1) + at(2) + at(5) + at(6)) / tick, at(7) / tick)
}

/// CPU use over one measurement, to tell how much of the machine it had: the other engineers'
/// builds and tests share these cores, and a run is only comparable when `other` is small.
struct Meter {
    postmaster: u32,
    started: Instant,
    pg: f64,
    me: f64,
    busy: f64,
    steal: f64,
}

struct Used {
    wall: f64,
    pg: f64,
    me: f64,
    /// Every other process on the machine (minus `child`, CPU a reaped child of ours used).
    other: f64,
    steal: f64,
}

impl Meter {
    fn start(postmaster: u32) -> Meter {
        let (busy, steal) = machine_cpu();
        Meter {
            postmaster,
            pg: pg_cpu(postmaster),
            me: self_cpu(),
            busy,
            steal,
            started: Instant::now(),
        }
    }

    fn stop(&self, child: f64) -> Used {
        let wall = self.started.elapsed().as_secs_f64();
        let (busy, steal) = machine_cpu();
        let (pg, me) = (pg_cpu(self.postmaster) - self.pg, self_cpu() - self.me);
        Used {
            wall,
            pg,
            me,
            other: (busy - self.busy - pg - me - child).max(0.0),
            steal: steal - self.steal,
        }
    }
}

impl std::fmt::Display for Used {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "other processes {:.2} CPU s of {:.2} available",
            self.other,
            self.wall * cores() as f64
        )?;
        if self.steal > 0.05 {
            write!(f, ", stolen by the hypervisor {:.2} s", self.steal)?;
        }
        Ok(())
    }
}

struct CopyRun {
    rate: f64,
    bytes: usize,
    used: Used,
}

/// Drains `COPY (SELECT <all columns> ... WHERE nodeid = ... ORDER BY sequencenumber) TO STDOUT`
/// for every node: on one connection at a time, or on one connection per node at once.
/// In this process through sqlx rather than `psql`: the client's only work is taking the
/// CopyData messages off the socket and dropping them, where psql would also format and write
/// every row to a pipe; a cheaper client leaves more CPU to PostgreSQL, so a higher baseline.
async fn copy_run(
    o: &Opts,
    url: &str,
    postmaster: u32,
    concurrent: bool,
) -> anyhow::Result<CopyRun> {
    async fn drain(url: String, nodes: Vec<String>) -> anyhow::Result<(usize, usize)> {
        let mut c = sqlx::PgConnection::connect(&url).await?;
        let (mut rows, mut bytes) = (0, 0);
        for node in nodes {
            let sql = format!(
                "COPY (SELECT pk, nodeid, sequencenumber, \"timestamp\", eventtype, eventstatus, \
                 authtoken, service, module, customid, searchdetail1, searchdetail2, \
                 additionaldetails, rowversion, rowprotection FROM auditrecorddata \
                 WHERE nodeid = '{}' ORDER BY sequencenumber) TO STDOUT",
                node.replace('\'', "''")
            );
            let mut out = c.copy_out_raw(&sql).await.context("COPY TO")?;
            // PostgreSQL sends one CopyData message per row.
            while let Some(data) = out.next().await {
                bytes += data?.len();
                rows += 1;
            }
        }
        Ok((rows, bytes))
    }
    let nodes: Vec<String> = (0..o.nodes).map(node_name).collect();
    let meter = Meter::start(postmaster);
    let parts: Vec<(usize, usize)> = if concurrent {
        let mut set = tokio::task::JoinSet::new();
        for n in nodes {
            set.spawn(drain(url.to_string(), vec![n]));
        }
        let mut v = Vec::new();
        while let Some(r) = set.join_next().await {
            v.push(r??);
        }
        v
    } else {
        vec![drain(url.to_string(), nodes).await?]
    };
    let used = meter.stop(0.0);
    let (rows, bytes) = parts
        .iter()
        .fold((0, 0), |(r, b), (pr, pb)| (r + pr, b + pb));
    if rows != o.rows {
        println!("    !! COPY returned {rows} rows, expected {}", o.rows);
    }
    Ok(CopyRun {
        rate: rows as f64 / used.wall,
        bytes,
        used,
    })
}

/// Best of two runs in each mode (the first warms what prewarm did not); prints each.
/// The best COPY rate on one connection and on one per node, and the least PostgreSQL CPU per row
/// any of the runs cost (its cost of reading a row, for the bound of the v2 ratio).
async fn copy_baseline(o: &Opts, url: &str, postmaster: u32) -> anyhow::Result<(f64, f64, f64)> {
    let mut best = [0.0f64; 2];
    let mut pg_per_row = f64::INFINITY;
    for (i, concurrent) in [false, true].into_iter().enumerate() {
        for _ in 0..2 {
            let r = copy_run(o, url, postmaster, concurrent).await?;
            println!(
                "    COPY TO, {}: {} rows/s ({:.2} s, {:.0} MB, {:.0} bytes/row)\n        CPU s: PostgreSQL {:.2}, this client {:.2}, {}",
                if concurrent {
                    format!("{} connections at once", o.nodes)
                } else {
                    "1 connection, node after node".to_string()
                },
                thousands(r.rate),
                r.used.wall,
                r.bytes as f64 / 1e6,
                r.bytes as f64 / o.rows as f64,
                r.used.pg,
                r.used.me,
                r.used
            );
            best[i] = best[i].max(r.rate);
            pg_per_row = pg_per_row.min(r.used.pg / o.rows as f64);
        }
    }
    Ok((best[0], best[1], pg_per_row))
}

/// RSA-2048 verifications of one (message, signature) per second, on `threads` threads at once
/// for RSA_SECONDS, summed over the threads.
fn rsa_rate(
    key: &ParsedPublicKey,
    msg: &[u8],
    sig: &[u8],
    threads: usize,
    postmaster: u32,
) -> (f64, Used) {
    let meter = Meter::start(postmaster);
    let started = Instant::now();
    let limit = Duration::from_secs_f64(RSA_SECONDS);
    let total: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let mut n = 0usize;
                    while started.elapsed() < limit {
                        for _ in 0..32 {
                            // Checked once before; a failure here would be a library fault.
                            let ok = key.verify_sig(msg, sig).is_ok();
                            n += usize::from(ok);
                        }
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    let used = meter.stop(0.0);
    (total as f64 / used.wall, used)
}

struct VerifierRun {
    wall: f64,
    rows: u64,
    errors: u64,
    elapsed_ms: u64,
    exit: i32,
    maxrss_mb: f64,
    cli_cpu: f64,
    used: Used,
    nodes: String,
    ok: bool,
}

/// Waits for `child` with wait4, for its own CPU time; returns (exit status, rusage, peak RSS in
/// MB, sampled by `load::peak_rss`, not wait4's ru_maxrss). The child is reaped here; std's
/// handle is only dropped.
fn reap(child: Child) -> anyhow::Result<(i32, libc::rusage, f64)> {
    let pid = child.id() as libc::pid_t;
    let sampler = auditseal_e2e::load::peak_rss(child.id());
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    // Reaped: the sampler sees /proc/<pid> gone and returns.
    let peak_mb = sampler.join().map_or(f64::NAN, |kb| kb as f64 / 1024.0);
    drop(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Ok((code, usage, peak_mb))
}

/// Runs `auditseal-db verifylog --all --json` on `url` and reads its report.
async fn run_verifier(
    o: &Opts,
    dir: &Path,
    config: &Path,
    url: &str,
    postmaster: u32,
) -> anyhow::Result<VerifierRun> {
    if o.pause {
        println!(
            "    paused: {} --config {} --database-url {url} verifylog --all --json\n    press Enter to run it",
            auditseal_e2e::bin_dir().join("auditseal-db").display(),
            config.display()
        );
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    let out = dir.join("verifylog.json");
    let err = dir.join("verifylog.stderr");
    let meter = Meter::start(postmaster);
    let started = Instant::now();
    let child = Command::new(auditseal_e2e::bin_dir().join("auditseal-db"))
        .arg("--config")
        .arg(config)
        .args(["--database-url", url, "verifylog", "--all", "--json"])
        .env_remove("AUDITSEAL_DATABASE_URL")
        .env_remove("AUDITSEAL_LOG")
        .stdin(Stdio::null())
        .stdout(File::create(&out)?)
        .stderr(File::create(&err)?)
        .spawn()
        .context("run auditseal-db (built by scripts/bench-verify)")?;
    let (exit, usage, maxrss_mb) = tokio::task::spawn_blocking(move || reap(child)).await??;
    let wall = started.elapsed().as_secs_f64();
    let cli_cpu = secs(usage.ru_utime) + secs(usage.ru_stime);
    let used = meter.stop(cli_cpu);
    let text = std::fs::read_to_string(&out)?;
    let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| {
        println!(
            "    !! no JSON report; stderr: {}",
            std::fs::read_to_string(&err).unwrap_or_default().trim()
        );
        serde_json::Value::Null
    });
    let num = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let nodes = report
        .get("nodes")
        .and_then(|n| n.as_array())
        .map(|list| {
            list.iter()
                .map(|n| {
                    format!(
                        "{}: {} rows, {} batches",
                        n.get("nodeId").and_then(|x| x.as_str()).unwrap_or("?"),
                        num(n, "rows"),
                        num(n, "batches")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let (rows, errors) = (num(&report, "rows"), num(&report, "errors"));
    let ok = !report.is_null() && errors == 0 && rows == o.rows as u64 && exit == 0;
    Ok(VerifierRun {
        wall,
        rows,
        errors,
        elapsed_ms: num(&report, "elapsedMs"),
        exit,
        maxrss_mb,
        cli_cpu,
        used,
        nodes,
        ok,
    })
}

fn print_verifier(label: &str, v: &VerifierRun, expected: usize) {
    println!(
        "    verifier: {} rows/s ({} rows in {:.2} s wall, elapsedMs {}), peak RSS {:.1} MB",
        thousands(v.rows as f64 / v.wall),
        v.rows,
        v.wall,
        v.elapsed_ms,
        v.maxrss_mb
    );
    println!(
        "    CPU s while it ran: auditseal-db {:.2}, PostgreSQL {:.2}, {}",
        v.cli_cpu, v.used.pg, v.used
    );
    println!("    nodes: {}", v.nodes);
    if !v.ok {
        println!(
            "    !!!!!!!! FAILED ({label}): exit {}, rows {}, errors {} (expected exit 0, rows {}, errors 0) !!!!!!!!",
            v.exit, v.rows, v.errors, expected
        );
    }
}

fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A fresh database with the schema.
async fn fresh(dir: &Path) -> anyhow::Result<(String, SharedStore)> {
    let url = new_database(Backend::Postgres, dir).await;
    let store = auditseal_core::store::open(&url).await?;
    store.migrate().await?;
    Ok((url, store))
}

#[derive(Default)]
struct Figures {
    generation: Option<f64>,
    copy_seq: f64,
    copy_par: f64,
    /// PostgreSQL's CPU seconds per row read, the least of the COPY runs.
    pg_read: f64,
    rsa1: f64,
    rsa_n: f64,
    /// CPU seconds other processes used during the all-cores RSA run, and what was available.
    rsa_noise: (f64, f64),
    verifier: Option<VerifierRun>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = opts()?;
    let admin = auditseal_e2e::pg_admin_url();
    let work = tempfile::tempdir()?;
    let postmaster = postmaster_pid(&admin).await?;
    let mut c = sqlx::PgConnection::connect(&admin).await?;
    let (pg_version,): (String,) = sqlx::query_as("SHOW server_version")
        .fetch_one(&mut c)
        .await?;
    drop(c);
    println!(
        "auditseal-verify-bench: {} rows over {} nodes; {} cores; load average {}; PostgreSQL {pg_version} at {admin}",
        o.rows,
        o.nodes,
        cores(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    // The key: a software RSA-2048 key generated into a PEM file, and the CLI's configuration
    // listing it (the CLI loads it verify-only).
    let key_file: PathBuf = work.path().join("signing-key.pem");
    let config_text = format!(
        "[protection]\n\n[[protection.keys]]\nkind = \"software\"\nkeyid = 1\nfile = {:?}\n",
        key_file.display().to_string()
    );
    let config = work.path().join("auditseal.toml");
    std::fs::write(&config, &config_text)?;
    let file_cfg = FileConfig::load(&config)?;
    let (setup, _) = load_keys(
        &file_cfg.protection.unwrap_or_default(),
        work.path(),
        KeyMode::Server,
    )?;
    let token = setup.current.context("a signing key")?;

    let (mut v3, mut v2) = (Figures::default(), Figures::default());

    if o.only != Some(Version::V2) {
        println!(
            "\n[v3] batched device rows (Merkle inclusion proofs, one signed statement per {BATCH} rows)"
        );
        let (url, store) = fresh(work.path()).await?;
        let t = Instant::now();
        generate_v3(&o, &store, &token).await?;
        let gen_s = t.elapsed().as_secs_f64();
        let t2 = Instant::now();
        settle(&url).await?;
        println!(
            "    generated in {gen_s:.1} s ({} rows/s), then VACUUM/ANALYZE/CHECKPOINT {:.1} s (in no ratio)",
            thousands(o.rows as f64 / gen_s),
            t2.elapsed().as_secs_f64()
        );
        v3.generation = Some(gen_s);
        drop(store);
        prewarm(&url).await?;
        (v3.copy_seq, v3.copy_par, v3.pg_read) = copy_baseline(&o, &url, postmaster).await?;
        prewarm(&url).await?;
        let v = run_verifier(&o, work.path(), &config, &url, postmaster).await?;
        print_verifier("v3", &v, o.rows);
        v3.verifier = Some(v);
    }

    if o.only != Some(Version::V3) {
        println!(
            "\n[v2] per-row RSA-2048 signatures, signed on {} threads",
            cores()
        );
        let (url, store) = fresh(work.path()).await?;
        let t = Instant::now();
        generate_v2(&o, &store, &token).await?;
        let gen_s = t.elapsed().as_secs_f64();
        let t2 = Instant::now();
        settle(&url).await?;
        println!(
            "    generated in {gen_s:.1} s ({} rows/s), then VACUUM/ANALYZE/CHECKPOINT {:.1} s (in no ratio)",
            thousands(o.rows as f64 / gen_s),
            t2.elapsed().as_secs_f64()
        );
        v2.generation = Some(gen_s);

        // One real row and its signature for the RSA baseline.
        let row = store
            .read_node(auditseal_core::store::Chunk::new(&node_name(0), 0, None, 1))
            .await?
            .pop()
            .context("no row")?;
        drop(store);
        let sig = RowProtection::parse(row.row_protection.as_deref().unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("row protection: {e}"))?
            .value;
        let spki = match token.verify_key() {
            auditseal_core::keys::VerifyKey::Public { spki_der, .. } => spki_der,
            other => bail!("expected a public key, got {other:?}"),
        };
        let key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki.as_slice())
            .map_err(|e| anyhow::anyhow!("public key: {e}"))?;
        let msg = row.protect_string();
        key.verify_sig(msg.as_bytes(), &sig)
            .map_err(|_| anyhow::anyhow!("the row's signature does not verify"))?;
        // Best of three of each: the machine is shared, and a run that lost a core to another
        // process would understate the rate (each run's other CPU use is printed).
        println!(
            "    RSA-2048 verify (aws-lc-rs ParsedPublicKey, one real row: {}-byte protect string)",
            msg.len()
        );
        for threads in [1, cores()] {
            let mut best = 0.0;
            for _ in 0..3 {
                let (rate, used) = rsa_rate(&key, msg.as_bytes(), &sig, threads, postmaster);
                println!(
                    "      {threads} thread(s) at once: {}/s summed, {}/s per thread; {used}",
                    thousands(rate),
                    thousands(rate / threads as f64)
                );
                if rate > best {
                    best = rate;
                    if threads == 1 {
                        v2.rsa1 = rate;
                    } else {
                        v2.rsa_n = rate;
                        v2.rsa_noise = (used.other, used.wall * cores() as f64);
                    }
                }
            }
        }
        prewarm(&url).await?;
        (v2.copy_seq, v2.copy_par, v2.pg_read) = copy_baseline(&o, &url, postmaster).await?;
        prewarm(&url).await?;
        let v = run_verifier(&o, work.path(), &config, &url, postmaster).await?;
        print_verifier("v2", &v, o.rows);
        v2.verifier = Some(v);
    }

    table(&o, &v3, &v2);
    Ok(())
}

/// What the cores could verify if they did nothing but the RSA verification of each row and
/// PostgreSQL's reading of it: each row costs the CPU time of one verification at the
/// all-cores rate (cores / summed rate, so cores that slow each other down count as they are)
/// plus the PostgreSQL CPU a COPY of the rows cost per row, spread over every core.
fn read_bound(f: &Figures) -> f64 {
    let cores = cores() as f64;
    cores / (cores / f.rsa_n + f.pg_read)
}

/// The summary, as a Markdown table for docs/PERFORMANCE.md.
fn table(o: &Opts, v3: &Figures, v2: &Figures) {
    let rate = |f: &Figures| {
        f.verifier
            .as_ref()
            .map_or(f64::NAN, |v| v.rows as f64 / v.wall)
    };
    let per_s = |x: f64| format!("{}/s", thousands(x));
    let ratio = |x: f64| format!("**{x:.2}**");
    let copy_best = |f: &Figures| f.copy_seq.max(f.copy_par);
    let verifier = |f: &Figures, show: &dyn Fn(&VerifierRun) -> String| {
        f.verifier.as_ref().map(show).unwrap_or_default()
    };
    let lines: Vec<(String, [String; 2], &str)> = vec![
        (
            "rows".into(),
            [thousands(o.rows as f64), thousands(o.rows as f64)],
            "",
        ),
        (
            "generation (in no ratio)".into(),
            [v3, v2].map(|f| {
                f.generation
                    .map(|g| format!("{g:.1} s"))
                    .unwrap_or_default()
            }),
            "",
        ),
        (
            "COPY TO, 1 connection, node after node (best of 2)".into(),
            [v3, v2].map(|f| per_s(f.copy_seq)),
            "",
        ),
        (
            format!("COPY TO, {} connections at once (best of 2)", o.nodes),
            [v3, v2].map(|f| per_s(f.copy_par)),
            "",
        ),
        (
            "RSA-2048 verify, 1 thread (best of 3)".into(),
            [String::new(), per_s(v2.rsa1)],
            "",
        ),
        (
            format!(
                "RSA-2048 verify, {} threads at once, summed (best of 3)",
                cores()
            ),
            [
                String::new(),
                format!(
                    "{} (other processes: {:.1} of {:.1} CPU s)",
                    per_s(v2.rsa_n),
                    v2.rsa_noise.0,
                    v2.rsa_noise.1
                ),
            ],
            "",
        ),
        (
            "verifier rows/s (rows / wall clock of the CLI)".into(),
            [v3, v2].map(|f| per_s(rate(f))),
            "",
        ),
        (
            "verifier elapsedMs (its own report)".into(),
            [v3, v2].map(|f| verifier(f, &|v| v.elapsed_ms.to_string())),
            "",
        ),
        (
            "**RATIO verifier / best COPY**".into(),
            [
                ratio(rate(v3) / copy_best(v3)),
                format!("({:.2})", rate(v2) / copy_best(v2)),
            ],
            ">= 0.80 (v3)",
        ),
        (
            "ratio verifier / COPY on 1 connection".into(),
            [v3, v2].map(|f| format!("{:.2}", rate(f) / f.copy_seq)),
            "",
        ),
        (
            "ratio verifier / RSA verify on all cores".into(),
            [String::new(), format!("{:.2}", rate(v2) / v2.rsa_n)],
            "",
        ),
        (
            "PostgreSQL CPU per row read (least of the COPY runs)".into(),
            [v3, v2].map(|f| format!("{:.2} µs", f.pg_read * 1e6)),
            "",
        ),
        (
            format!(
                "bound: {} cores / (RSA verify CPU per row at the all-cores rate + PostgreSQL read CPU per row)",
                cores()
            ),
            [String::new(), per_s(read_bound(v2))],
            "",
        ),
        (
            "**RATIO verifier / bound with reading**".into(),
            [String::new(), ratio(rate(v2) / read_bound(v2))],
            ">= 0.80 (v2)",
        ),
        (
            "verifier peak RSS".into(),
            [v3, v2].map(|f| verifier(f, &|v| format!("{:.1} MB", v.maxrss_mb))),
            "< 100 MB",
        ),
        (
            "CPU s while verifying: auditseal-db / PostgreSQL".into(),
            [v3, v2].map(|f| verifier(f, &|v| format!("{:.1} / {:.1}", v.cli_cpu, v.used.pg))),
            "",
        ),
        (
            "CPU s other processes used meanwhile (noise)".into(),
            [v3, v2].map(|f| {
                verifier(f, &|v| {
                    format!("{:.1} of {:.1}", v.used.other, v.wall * cores() as f64)
                })
            }),
            "",
        ),
        (
            "verifier result".into(),
            [v3, v2].map(|f| {
                verifier(f, &|v| {
                    if v.ok {
                        "ok, 0 errors".to_string()
                    } else {
                        format!("**FAILED** ({} errors, {} rows)", v.errors, v.rows)
                    }
                })
            }),
            "",
        ),
    ];
    println!(
        "\nSummary: {} rows over {} nodes, {} cores\n",
        thousands(o.rows as f64),
        o.nodes,
        cores()
    );
    println!("| figure | v3 (batched) | v2 (RSA per row) | target |");
    println!("|---|---|---|---|");
    let ran = [v3.generation.is_some(), v2.generation.is_some()];
    for (name, cells, target) in lines {
        let [a, b] = [0, 1].map(|i| {
            if ran[i] {
                cells[i].clone()
            } else {
                "not run".to_string()
            }
        });
        println!("| {name} | {a} | {b} | {target} |");
    }
}
