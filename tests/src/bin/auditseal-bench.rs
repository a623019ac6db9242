//! auditseal-bench: measures what the log devices reach against baselines taken in the same run
//! on the same machine. Prints figures and ratios; asserts nothing (docs/PERFORMANCE.md).
//!
//! Run with `scripts/bench` (starts a throw-away PostgreSQL and builds in release mode).
//!
//! Sections:
//! 1. the token's raw signing rate: one session, then several sessions on several threads;
//! 2. PostgreSQL's rate for one INSERT + COMMIT per row (the sequential device's write pattern)
//!    into a scratch copy of the table;
//! 3. the bound for the sequential device: sign + INSERT/COMMIT per row, one after the other,
//!    in this process through the real store (no HTTP);
//! 4. the sequential device through HTTP (`auditseal-server`, same token, same database),
//!    and its ratio to [3] (and to 1/(sign + commit) from [1] and [2] measured apart).

use std::sync::Arc;
use std::time::{Duration, Instant};

use auditseal_core::config::{FileConfig, KeyMode, load_keys};
use auditseal_core::token::SharedToken;
use auditseal_e2e::hsm::{MODULE, PIN, SoftHsm};
use auditseal_e2e::load::{self, BatchTimings};
use auditseal_e2e::{Backend, Server, event, new_database};
use sqlx::Connection;

struct Opts {
    signs: usize,
    commits: usize,
    events: usize,
    clients: usize,
    /// Connections of the single-POST figures [c] and [f].
    single_clients: usize,
    /// Events for the batched device's figures (and the COPY baseline).
    bulk: usize,
    /// Events per run of the forwarding figures (without sinks, with three, without again).
    forward: usize,
    /// Only the forwarding figures ([e]).
    forwarding_only: bool,
    /// Every figure but the forwarding ones ([e]).
    no_forwarding: bool,
    /// Only the bulk figures: (a) COPY and (b) the bulk endpoint, this many times in turn
    /// (each pair on a fresh table), to see their spread.
    bulk_only: usize,
    /// Only the growth figures ([g]): this many millions of events through the bulk endpoint.
    growth: usize,
    /// Touch the machine's free memory once before the figures (`warm_memory`).
    warm: bool,
    /// Where the forwarding figures' file sinks and rsyslogd's files go (a fresh directory
    /// inside it); by default inside the run's temporary directory. On a tmpfs (`--sink-dir
    /// /dev/shm`) the figures show what the sinks' disk writes and syncs cost.
    sink_dir: Option<std::path::PathBuf>,
    /// The sinks the forwarding figures' runs with sinks configure (of `SINKS`).
    sinks: Vec<String>,
}

/// The forwarding figures' sinks: syslog over TCP to a local rsyslogd, a JSON Lines file and a
/// Log4j-line file.
const SINKS: [&str; 3] = ["syslog", "jsonl", "log4j"];

fn opts() -> Opts {
    let mut o = Opts {
        signs: 3000,
        commits: 3000,
        events: 3000,
        clients: 16,
        single_clients: 256,
        bulk: 200_000,
        forward: 100_000,
        forwarding_only: false,
        bulk_only: 0,
        no_forwarding: false,
        growth: 0,
        warm: true,
        sink_dir: None,
        sinks: SINKS.iter().map(|s| s.to_string()).collect(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--signs" => o.signs = num("--signs"),
            "--commits" => o.commits = num("--commits"),
            "--events" => o.events = num("--events"),
            "--clients" => o.clients = num("--clients"),
            "--single-clients" => o.single_clients = num("--single-clients"),
            "--bulk" => o.bulk = num("--bulk"),
            "--forward" => o.forward = num("--forward"),
            "--forwarding-only" => o.forwarding_only = true,
            "--bulk-only" => o.bulk_only = num("--bulk-only"),
            "--no-forwarding" => o.no_forwarding = true,
            "--growth" => o.growth = num("--growth"),
            "--no-warm" => o.warm = false,
            "--sinks" => {
                let list = it.next().expect("--sinks needs a list, e.g. syslog,jsonl");
                o.sinks = list.split(',').map(str::to_string).collect();
                for s in &o.sinks {
                    assert!(
                        SINKS.contains(&s.as_str()),
                        "--sinks: {s:?} is not one of {SINKS:?}"
                    );
                }
            }
            "--sink-dir" => {
                o.sink_dir = Some(it.next().expect("--sink-dir needs a directory").into())
            }
            "-h" | "--help" => {
                println!(
                    "auditseal-bench [--signs N] [--commits N] [--events N] [--clients N] [--single-clients N] [--bulk N] \
                     [--forward N] [--forwarding-only] [--no-forwarding] [--bulk-only TIMES] [--growth MILLIONS] [--no-warm] [--sink-dir DIR] [--sinks syslog,jsonl,log4j]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown option {other}; see --help"),
        }
    }
    o
}

fn hsm_token(h: &SoftHsm, label: &str, sessions: usize) -> SharedToken {
    let cfg: FileConfig = toml::from_str(&format!(
        "[[protection.keys]]\nkind = 'pkcs11'\nkeyid = 1\nlibrary = '{MODULE}'\nslot_label = '{}'\nkey_label = '{label}'\npin = '{PIN}'\nsessions = {sessions}\n",
        h.label
    ))
    .expect("config");
    let dir = tempfile::tempdir().expect("tempdir");
    let (setup, _) = load_keys(
        &cfg.protection.unwrap_or_default(),
        dir.path(),
        KeyMode::Server,
    )
    .expect("open the token");
    setup.current.expect("a signing key")
}

/// Writes to every page of the machine's available memory but 3 GiB once, then frees it. On a
/// fresh virtual machine the first touch of a page costs the hypervisor far more than any later
/// one (measured on the standard machine: a 1 GB file written with dd took 1.1 s of system time
/// the first time, 0.23-0.28 s when written again after its deletion freed the pages), and every
/// run of a figure grows PostgreSQL's files and the sinks' files into pages nobody had used:
/// without this, whichever run came first paid for the machine's newness (in four runs of
/// section [e] the first of its two identical runs without sinks was 9-36% slower than the
/// second).
fn warm_memory() {
    let available =
        load::proc_file_kb("/proc/meminfo", "MemAvailable").unwrap_or(0) as usize * 1024;
    const CHUNK: usize = 256 << 20;
    let chunks = available.saturating_sub(3 << 30) / CHUNK;
    let started = Instant::now();
    // vec![1; n] writes every byte (zeroed allocations would not touch the pages).
    let held: Vec<Vec<u8>> = (0..chunks).map(|_| vec![1u8; CHUNK]).collect();
    let touched = held.iter().map(|c| c[CHUNK - 1] as usize).sum::<usize>() * CHUNK;
    drop(held);
    println!(
        "warmed {:.1} GiB of free memory in {:.1} s (--no-warm skips it)",
        touched as f64 / (1u64 << 30) as f64,
        started.elapsed().as_secs_f64()
    );
}

/// Says whether the kernel hands freed memory back to the hypervisor (virtio-balloon free page
/// reporting): then memory freed by one figure (a dropped table's page cache, a stopped server)
/// is taken away from the machine and the next figure to use it pays a fault into the host for
/// each page. On the standard machine it made the COPY baseline run at 30,000-98,000 rows/s
/// with nothing changed (the second round of `--bulk-only` at 0.41-0.61 of the first in five runs of six),
/// and warming free memory took 59.7 s for 19.8 GiB instead of 10.4 s once the pages stayed.
/// `scripts/bench --hold-memory` turns it off for the run.
fn page_reporting() {
    const ORDER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";
    // Free blocks of at least 2^order pages are reported; the buddy allocator's largest is 2^10.
    match std::fs::read_to_string(ORDER).map(|s| s.trim().parse::<u32>()) {
        Ok(Ok(order)) if order <= 10 => println!(
            "free page reporting is ON (order {order}): memory freed during the run goes back to              the host and costs a host fault at its next use; figures spread (scripts/bench              --hold-memory turns it off for the run)"
        ),
        Ok(Ok(order)) => println!("free page reporting is off (order {order})"),
        _ => println!("free page reporting: not in this kernel"),
    }
}

/// Signs `n` protect-string-sized messages on `threads` threads; returns signatures per second.
/// The servers' configuration: the SoftHSM2 key the bench made.
fn server_conf() -> String {
    format!(
        "[[protection.keys]]\nkind = 'pkcs11'\nkeyid = 1\nlibrary = '{MODULE}'\nslot_label = 'bench'\n\
         key_label = 'rsakey'\npin = '{PIN}'\n"
    )
}

fn sign_rate(token: &SharedToken, n: usize, threads: usize) -> f64 {
    let msg = vec![b'x'; 300];
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (token, msg) = (token.clone(), &msg);
            let share = n / threads + usize::from(t < n % threads);
            s.spawn(move || {
                for _ in 0..share {
                    token.sign(msg).expect("sign");
                }
            });
        }
    });
    n as f64 / started.elapsed().as_secs_f64()
}

/// The additionalDetails the server writes for an event without details: only the submitter
/// (the benchmark posts with the admin token).
fn submitter_details() -> String {
    let mut m = serde_json::Map::new();
    m.insert("auditseal.submitter".into(), "token:admin".into());
    auditseal_core::details::encode(
        &auditseal_core::details::from_json(&m).expect("details"),
        auditseal_core::details::MapClass::Base64PutHashMap,
        auditseal_core::details::JAVA_VERSION,
    )
}

/// A row of the size the device writes, for the database baselines.
fn bench_record(node: &str, seq: i64) -> auditseal_core::record::AuditRecord {
    auditseal_core::record::AuditRecord {
        pk: auditseal_core::record::new_pk(),
        node_id: node.into(),
        sequence_number: seq,
        time_stamp: auditseal_core::time::now_millis(),
        event_type: "PROCESS".into(),
        event_status: "SUCCESS".into(),
        auth_token: "CN=signer,O=Test".into(),
        service: "SIGNSERVER".into(),
        module: "WORKER".into(),
        custom_id: None,
        search_detail1: None,
        search_detail2: None,
        additional_details: Some(submitter_details()),
        row_version: 0,
        row_protection: None,
    }
}

/// The batched server's log filter: AUDITSEAL_BENCH_SERVER_LOG, default `warn` plus the batched
/// device's per-batch debug lines, which [b], [c] and [f] read for the server's own timings.
fn log_filter() -> std::ffi::OsString {
    std::env::var_os("AUDITSEAL_BENCH_SERVER_LOG")
        .unwrap_or_else(|| "warn,auditseal_core::device::batched=debug".into())
}

/// The server's per-batch timings in `log` (see `log_filter`), as one line.
fn batch_timings(log: &str) -> BatchTimings {
    let t = BatchTimings::from_log(log);
    if t.batches > 0 {
        println!(
            "    server: {} batches, {:.0} rows each; seal + insert + commit per batch: median {:.2} ms, p99 {:.2} ms",
            t.batches,
            t.rows as f64 / t.batches as f64,
            ms(t.median()),
            ms(load::percentile(&t.seal_and_commit, 0.99)),
        );
    }
    t
}

/// What the server logged after `before` (a copy of its log taken earlier).
fn log_since(server: &Server, before: &str) -> String {
    server
        .log()
        .lines()
        .skip(before.lines().count())
        .map(|l| format!("{l}\n"))
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let o = opts();
    let work = tempfile::tempdir().expect("tempdir");
    println!(
        "auditseal-bench: {} cores, PostgreSQL at {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        auditseal_e2e::pg_admin_url()
    );

    page_reporting();
    if o.warm {
        warm_memory();
    }

    // 1. Raw signing rate of the token (SoftHSM2, RSA-2048).
    let hsm = SoftHsm::new("bench");
    unsafe { std::env::set_var("SOFTHSM2_CONF", hsm.conf()) };
    if o.growth > 0 {
        let conf = batched_conf(&hsm, work.path());
        let url = migrated_database(work.path()).await;
        growth_figures(&o, &hsm, &url, work.path(), &conf).await;
        return;
    }
    if o.bulk_only > 0 {
        let conf = batched_conf(&hsm, work.path());
        for _ in 0..o.bulk_only {
            let url = migrated_database(work.path()).await;
            let data = tempfile::tempdir_in(work.path()).expect("tempdir");
            let copy_rate = copy_figure(&o, &url).await;
            let server = start_batched(
                &hsm,
                &url,
                data.path(),
                &conf,
                "bench-batched",
                Some(&log_filter()),
            );
            bulk_figure(&o, &url, &server, copy_rate).await;
            server.stop();
        }
        return;
    }
    if o.forwarding_only {
        let conf = batched_conf(&hsm, work.path());
        let url = migrated_database(work.path()).await;
        forwarding_figures(&o, &hsm, &url, work.path(), &conf).await;
        return;
    }
    let one = hsm_token(&hsm, "rsakey", 1);
    sign_rate(&one, 100, 1); // warm-up
    let sign1 = sign_rate(&one, o.signs, 1);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let many = hsm_token(&hsm, "rsakey", cores * 2);
    let sign_n = sign_rate(&many, o.signs, cores * 2);
    println!("\n[1] token signing rate (SoftHSM2 RSA-2048, CKM_SHA256_RSA_PKCS)");
    println!(
        "    1 session, 1 thread:          {sign1:>9.0} signatures/s ({:.3} ms each)",
        1000.0 / sign1
    );
    println!(
        "    {} sessions, {} threads:        {sign_n:>9.0} signatures/s ({:.2}x)",
        cores * 2,
        cores * 2,
        sign_n / sign1
    );

    // 2. One INSERT + COMMIT per row, sequentially, into a scratch copy of the table.
    let url = new_database(Backend::Postgres, work.path()).await;
    let store = auditseal_core::store::open(&url).await.expect("open");
    store.migrate().await.expect("migrate");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql("CREATE TABLE scratch (LIKE auditrecorddata INCLUDING ALL)")
        .execute(&mut conn)
        .await
        .expect("scratch");
    let sig_hex = "ab".repeat(256);
    let started = Instant::now();
    for i in 0..o.commits {
        sqlx::query("INSERT INTO scratch (pk, nodeid, sequencenumber, \"timestamp\", eventtype, eventstatus, authtoken, service, module, rowversion, rowprotection) VALUES ($1, 'bench', $2, $3, 'PROCESS', 'SUCCESS', 'CN=signer,O=Test', 'SIGNSERVER', 'WORKER', 0, $4)")
            .bind(format!("{i:032x}"))
            .bind(i as i64)
            .bind(auditseal_core::time::now_millis())
            .bind(format!("1:2:1:{sig_hex}"))
            .execute(&mut conn)
            .await
            .expect("insert");
    }
    let commit = o.commits as f64 / started.elapsed().as_secs_f64();
    println!("\n[2] PostgreSQL, one INSERT + COMMIT per row (autocommit), one connection");
    println!("    {commit:>9.0} rows/s ({:.3} ms each)", 1000.0 / commit);

    // 3. The bound: sign + one INSERT/COMMIT per row, one after the other, in this process
    // through the real store (what the sequential device does, without HTTP).
    let sum_bound = 1.0 / (1.0 / sign1 + 1.0 / commit);
    // The store's writes are fenced by the node's lock, as the device's are.
    let lock = store.lock_node("bound").await.expect("lock node bound");
    let fence = lock.fence();
    let started = Instant::now();
    let (mut in_sign, mut in_insert) = (Duration::ZERO, Duration::ZERO);
    for i in 0..o.commits {
        let t0 = Instant::now();
        let mut r = bench_record("bound", i as i64);
        let token = one.clone();
        let unsigned = r.clone();
        let p = tokio::task::spawn_blocking(move || {
            auditseal_core::protector::protect(token.as_ref(), &unsigned)
        })
        .await
        .expect("join")
        .expect("sign");
        r.row_protection = Some(p);
        let t1 = Instant::now();
        store.insert(&r, &fence).await.expect("insert");
        in_sign += t1 - t0;
        in_insert += t1.elapsed();
    }
    let bound = o.commits as f64 / started.elapsed().as_secs_f64();
    println!(
        "\n[3] bound: sign + INSERT/COMMIT per row, in sequence, in-process ({} rows)",
        o.commits
    );
    println!(
        "    {bound:>9.0} rows/s (sign {:.3} ms + insert {:.3} ms per row)",
        in_sign.as_secs_f64() * 1000.0 / o.commits as f64,
        in_insert.as_secs_f64() * 1000.0 / o.commits as f64
    );
    println!("    (from [1] and [2] measured apart: 1/(sign + commit) = {sum_bound:.0} rows/s)");

    // 4. (= issue 4's (d)) The sequential device through HTTP on the same token and database.
    let conf = work.path().join("bench.toml");
    std::fs::write(&conf, server_conf()).expect("conf");
    let server = Server::start_env(
        &[
            "--config",
            conf.to_str().unwrap(),
            "--data-dir",
            work.path().to_str().unwrap(),
            "--node-id",
            "bench",
            "--database-url",
            &url,
        ],
        &[
            ("SOFTHSM2_CONF", hsm.conf().as_os_str()),
            ("AUDITSEAL_LOG", std::ffi::OsStr::new("warn")),
        ],
    )
    .expect("start the server");
    let client = server.client();
    let body = Arc::new(event("PROCESS"));
    let per_client = o.events / o.clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..o.clients {
        let (client, body, url) = (client.clone(), body.clone(), server.url.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                let r = client
                    .post(format!("{url}/api/v1/events"))
                    .json(&*body)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let device = lat.len() as f64 / elapsed;
    lat.sort();
    println!(
        "\n[4] sequential device through HTTP ({} clients, {} events, same token and database)",
        o.clients,
        lat.len()
    );
    println!(
        "    {device:>9.0} events/s, latency p50 {:.2} ms, p99 {:.2} ms",
        load::percentile(&lat, 0.5).as_secs_f64() * 1000.0,
        load::percentile(&lat, 0.99).as_secs_f64() * 1000.0
    );
    println!(
        "    RATIO device / bound [3]             = {:.2} (target >= 0.80)",
        device / bound
    );
    println!(
        "    ratio device / 1/(sign+commit) apart = {:.2}",
        device / sum_bound
    );
    server.stop();

    batched_figures(&o, &hsm, &url, work.path(), &conf, device).await;
    if !o.no_forwarding {
        forwarding_figures(&o, &hsm, &url, work.path(), &conf).await;
    }
}

/// A new PostgreSQL database with the schema, for one figure; its URL.
async fn migrated_database(dir: &std::path::Path) -> String {
    let url = new_database(Backend::Postgres, dir).await;
    let store = auditseal_core::store::open(&url).await.expect("open");
    store.migrate().await.expect("migrate");
    url
}

/// The SoftHSM2 key the servers sign with, made, and their configuration file in `dir`.
fn batched_conf(hsm: &SoftHsm, dir: &std::path::Path) -> std::path::PathBuf {
    let _ = hsm_token(hsm, "rsakey", 1);
    let conf = dir.join("bench.toml");
    std::fs::write(&conf, server_conf()).expect("conf");
    conf
}

/// Issue 17's growth figure [g]: `o.growth` millions of events through the batched device's bulk
/// endpoint into one table, the rate of each million and the server's RSS after it; the ratio is
/// the last million's rate over the first's.
async fn growth_figures(
    o: &Opts,
    hsm: &SoftHsm,
    url: &str,
    dir: &std::path::Path,
    conf: &std::path::Path,
) {
    let server = start_batched(hsm, url, dir, conf, "bench-growth", None);
    let rss = |field: &str| {
        load::proc_status_kb(server.pid(), field).map_or(f64::NAN, |kb| kb as f64 / 1024.0)
    };
    println!(
        "\n[g] growth: {} x 1,000,000 events through the bulk endpoint (requests of 1,000, 4 connections), one table",
        o.growth
    );
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let mut before = database_work(&mut conn).await;
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let watcher = tokio::spawn(watch_maintenance(url.to_string(), seen.clone()));
    let mut rates = Vec::new();
    for m in 1..=o.growth {
        let rate = bulk(&server, 1000, 1000).await;
        let now = database_work(&mut conn).await;
        println!(
            "    million {m:>2}: {rate:>9.0} events/s; server RSS {:.1} MB (peak {:.1} MB); \
             PostgreSQL meanwhile: {} autovacuum(s) of the table, {} checkpoint(s), {:.0} MB \
             of WAL; table and indexes {:.1} GB",
            rss("VmRSS"),
            rss("VmHWM"),
            now.0 - before.0,
            now.1 - before.1,
            (now.2 - before.2) as f64 / 1e6,
            now.3 as f64 / 1e9
        );
        let workers = std::mem::take(&mut *seen.lock().unwrap());
        if !workers.is_empty() {
            let list: Vec<String> = workers
                .iter()
                .map(|(q, n)| format!("{q} ({n} of the 2 s samples)"))
                .collect();
            println!("        autovacuum workers seen: {}", list.join("; "));
        }
        before = now;
        rates.push(rate);
    }
    watcher.abort();
    if let (Some(first), Some(last)) = (rates.first(), rates.last()) {
        println!(
            "    RATIO last million / first = {:.2} (target >= 0.80)",
            last / first
        );
    }
    server.stop();
}

/// Every 2 s, what PostgreSQL's autovacuum workers are doing (their `pg_stat_activity` query,
/// e.g. "autovacuum: ANALYZE public.auditrecorddata"), counted into `seen` by sample.
async fn watch_maintenance(
    url: String,
    seen: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u32>>>,
) {
    let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else {
        return;
    };
    loop {
        let queries: Vec<String> = sqlx::query_scalar(
            "SELECT query FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
        {
            let mut seen = seen.lock().unwrap();
            for q in queries {
                *seen.entry(q).or_default() += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// What PostgreSQL did so far that slows inserts as a table grows: autovacuum runs on the
/// table, checkpoints, bytes of WAL written, and the table's size with its indexes.
async fn database_work(conn: &mut sqlx::PgConnection) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT COALESCE(SUM(autovacuum_count), 0)::bigint FROM pg_stat_user_tables \
           WHERE relname = 'auditrecorddata'), \
         (SELECT (checkpoints_timed + checkpoints_req)::bigint FROM pg_stat_bgwriter), \
         pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, \
         pg_total_relation_size('auditrecorddata')",
    )
    .fetch_one(conn)
    .await
    .expect("read PostgreSQL's statistics")
}

/// The server's ingest latency histogram (its handler to the acknowledgement) from /metrics:
/// each bucket's upper bound and cumulative count, summed over devices.
async fn ingest_histogram(server: &Server) -> Vec<(f64, f64)> {
    let text = server
        .client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics");
    let mut buckets: std::collections::BTreeMap<u64, f64> = Default::default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("auditseal_ingest_duration_seconds_bucket{"))
    {
        let le = line.split("le=\"").nth(1).and_then(|r| r.split('"').next());
        let count = line.rsplit(' ').next().and_then(|c| c.parse::<f64>().ok());
        let le = match le {
            Some("+Inf") => f64::INFINITY,
            Some(v) => v.parse().unwrap_or(f64::NAN),
            None => continue,
        };
        if let Some(count) = count {
            *buckets.entry(le.to_bits()).or_default() += count;
        }
    }
    let mut list: Vec<(f64, f64)> = buckets
        .into_iter()
        .map(|(le, n)| (f64::from_bits(le), n))
        .collect();
    list.sort_by(|a, b| a.0.total_cmp(&b.0));
    list
}

/// The upper bound of the bucket that holds quantile `q` of what was observed between two
/// readings of the histogram, as text ("n/a" when nothing was).
fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> String {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, m)| *m);
            (*le, n - was)
        })
        .collect();
    let Some(&(_, total)) = delta.last() else {
        return "n/a".into();
    };
    if total <= 0.0 {
        return "n/a".into();
    }
    match delta.iter().find(|(_, n)| *n >= q * total) {
        Some((le, _)) if le.is_finite() => format!("{:.1} ms", le * 1000.0),
        _ => "above the largest bucket".into(),
    }
}

/// Posts `requests` NDJSON requests of `per_request` events from 4 connections to the bulk
/// endpoint; the events per second.
async fn bulk(server: &Server, requests: usize, per_request: usize) -> f64 {
    let client = server.client();
    let body: Arc<String> = Arc::new(
        (0..per_request)
            .map(|_| event("PROCESS").to_string() + "\n")
            .collect(),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (client, body, u) = (client.clone(), body.clone(), server.url.clone());
        tasks.push(tokio::spawn(async move {
            for _ in (c..requests).step_by(4) {
                let r = client
                    .post(format!("{u}/api/v1/events:batch"))
                    .header("content-type", "application/x-ndjson")
                    .body((*body).clone())
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
            }
        }));
    }
    for t in tasks {
        t.await.expect("bulk client");
    }
    (requests * per_request) as f64 / started.elapsed().as_secs_f64()
}

/// Issue 14's forwarding cost: the batched device's bulk rate without sinks, with the sinks
/// (`--sinks`, by default all three of `SINKS`), and without again (the database grows between
/// runs; the baseline is the mean of the two runs without), and how long the sinks take after
/// the last acknowledgement to deliver everything; between them, the same sinks with the syslog
/// one sending to a receiver that only reads (`OnlyReads`). Last, a run without sinks beside one CPU loop
/// per core at idle priority: what work that only takes CPU nobody else wants costs ingestion on
/// this machine, the floor of any placement of forwarding's own work.
async fn forwarding_figures(
    o: &Opts,
    hsm: &SoftHsm,
    url: &str,
    dir: &std::path::Path,
    conf: &std::path::Path,
) {
    let requests = o.forward / 1000;
    let sink_home = match &o.sink_dir {
        Some(d) => tempfile::tempdir_in(d).expect("a directory in --sink-dir"),
        None => tempfile::tempdir_in(dir).expect("a directory for the sinks"),
    };
    println!(
        "    sink files and rsyslogd's files in {}",
        sink_home.path().display()
    );
    let port = auditseal_e2e::receivers::free_port();
    let rsyslog =
        auditseal_e2e::receivers::Rsyslog::start_apart(&sink_home.path().join("rsyslog"), port);
    let reader = OnlyReads::start();
    let with_sinks = dir.join("forward.toml");
    let with_reader = dir.join("forward-reader.toml");
    let base = std::fs::read_to_string(conf).expect("conf");
    let (mut forward, mut forward_reader) = (base.clone(), base);
    // A sink's section: syslog to `port`, or a file named after the sink with `prefix`.
    let section = |sink: &str, port: u16, prefix: &str| match sink {
        "syslog" => format!("[[forward]]\nname = 'syslog'\naddress = '127.0.0.1:{port}'\n"),
        _ => format!(
            "[[forward]]\nname = '{sink}'\nfile = '{}'\n{}",
            sink_home
                .path()
                .join(format!("{prefix}{sink}.log"))
                .display(),
            if sink == "log4j" {
                "format = 'log4j'\n"
            } else {
                ""
            }
        ),
    };
    for sink in &o.sinks {
        forward += &section(sink, port, "events-");
        // The same file sinks, in files of their own.
        forward_reader += &section(sink, reader.port, "reader-");
    }
    std::fs::write(&with_sinks, forward).expect("forward conf");
    std::fs::write(&with_reader, forward_reader).expect("forward conf");
    let sinks: &[String] = &o.sinks;
    let run = |node: &'static str, config: std::path::PathBuf| async move {
        let warn = std::ffi::OsStr::new("warn");
        let server = start_batched(hsm, url, dir, &config, node, Some(warn));
        let cpu_before = cpu_seconds(server.pid());
        let pg_before = postgres_cpu_seconds(url);
        let machine_before = machine_busy_seconds();
        let window = Instant::now();
        let rate = bulk(&server, requests, 1000).await;
        let acked = Instant::now();
        // Every process's CPU while the events were posted (the bench's own client, the server,
        // PostgreSQL, the receiver, the kernel), in cores.
        let busy = (machine_busy_seconds() - machine_before) / (acked - window).as_secs_f64();
        let store = auditseal_core::store::open(url).await.expect("open");
        let last = store
            .last_row(node)
            .await
            .expect("last row")
            .map_or(-1, |r| r.sequence_number);
        // With sinks: wait until each has delivered the last row.
        let mut caught_up = None;
        if config != conf {
            loop {
                let text = auditseal_e2e::get(format!("{}/metrics", server.url))
                    .await
                    .expect("metrics")
                    .text()
                    .await
                    .expect("metrics text");
                let done = sinks.iter().all(|s| {
                    auditseal_e2e::metric(
                        &text,
                        &format!("auditseal_forward_position{{sink=\"{s}\"}}"),
                    ) == Some(last as f64)
                });
                if done {
                    caught_up = Some(acked.elapsed());
                    break;
                }
                assert!(
                    acked.elapsed() < Duration::from_secs(600),
                    "the sinks never caught up"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let cpu = cpu_seconds(server.pid()) - cpu_before;
        let peak_mib =
            load::proc_status_kb(server.pid(), "VmHWM").map_or(f64::NAN, |kb| kb as f64 / 1024.0);
        server.stop();
        // Its connections' backends have ended: their CPU is the postmaster's children's now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pg = postgres_cpu_seconds(url) - pg_before;
        (rate, caught_up, (cpu, pg, peak_mib), busy)
    };
    let rsyslogd = rsyslog.pid().expect("rsyslogd runs");
    let (without1, _, cpu1, busy1) = run("bench-fw-a", conf.to_path_buf()).await;
    // First with the receiver competing for these cores at normal priority; then at idle
    // priority (SCHED_IDLE: only CPU nothing else wants), as a SIEM on machines of its own
    // would be: that run is the one the target counts.
    let receiver_before = cpu_seconds(rsyslogd);
    let (with_shared, caught_up_shared, _, _) = run("bench-fw-shared", with_sinks.clone()).await;
    let receiver = cpu_seconds(rsyslogd) - receiver_before;
    let chrt = std::process::Command::new("chrt")
        .args(["--idle", "--all-tasks", "--pid", "0", &rsyslogd.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    // Its own session's scheduling group (autogroup, where the kernel has them) at the lowest
    // share too: else the group competes with PostgreSQL's at full weight, however low its
    // tasks' priority (docs/PERFORMANCE.md, "2026-12-05").
    let group = format!("/proc/{rsyslogd}/autogroup");
    let lowered = !std::path::Path::new(&group).exists() || std::fs::write(&group, "19").is_ok();
    let (with, caught_up, cpu_with, busy_with) = run("bench-fw-sinks", with_sinks.clone()).await;
    // The same sinks, the syslog one to a receiver that only reads and counts (a thread of this
    // bench): what forwarding costs without rsyslogd's CPU on these cores, an estimate of a
    // receiver on a machine of its own. Only when a syslog sink is among them.
    let has_syslog = sinks.iter().any(|s| s == "syslog");
    let reader_run = if has_syslog {
        Some(run("bench-fw-reader", with_reader.clone()).await)
    } else {
        None
    };
    let (without2, _, cpu2, busy2) = run("bench-fw-b", conf.to_path_buf()).await;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut loops = CpuLoops(Vec::new());
    for _ in 0..cores {
        loops.0.push(
            std::process::Command::new("chrt")
                .args(["--idle", "0", "sh", "-c", "while :; do :; done"])
                .spawn()
                .expect("chrt (util-linux)"),
        );
    }
    let (beside_loops, _, _, _) = run("bench-fw-loops", conf.to_path_buf()).await;
    drop(loops);
    let events = (requests * 1000) as f64;
    let per_1000 = |cpu: f64| cpu * 1000.0 / events * 1000.0;
    let ((cpu1, pg1, peak1), (cpu_with, pg_with, peak_with), (cpu2, pg2, peak2)) =
        (cpu1, cpu_with, cpu2);
    let baseline = (without1 + without2) / 2.0;
    let received = std::fs::read_to_string(&rsyslog.out)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    println!(
        "\n[e] forwarding: batched device, bulk endpoint, {} events per run (4 connections)",
        requests * 1000
    );
    println!(
        "    without sinks:              {without1:>9.0} events/s, again after: {without2:>9.0} events/s"
    );
    // The baseline is their mean: when they disagree, so may every ratio against it.
    let spread = (without1 - without2).abs() / without1.max(without2);
    if spread > 0.10 {
        println!(
            "    WARNING: the two runs without sinks differ by {:.0}%: the ratios below are no better than that (run it again; without --no-warm)",
            spread * 100.0
        );
    }
    let after = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    println!(
        "    with sinks {sinks:?}, the receiver on these cores at normal priority: {with_shared:>9.0} events/s, ratio {:.2}, all delivered {:.2} s after the last acknowledgement",
        with_shared / baseline,
        after(caught_up_shared)
    );
    println!(
        "    with sinks, the receiver at idle priority{}: {with:>9.0} events/s",
        match (chrt, lowered) {
            (true, true) => "",
            (false, _) => " (chrt FAILED: at normal priority)",
            (true, false) => " (its autogroup's share could not be lowered)",
        }
    );
    println!(
        "    RATIO with / without = {:.2} (target >= 0.90); all sinks had every event {:.2} s after the last acknowledgement; rsyslogd received {received} messages (of {})",
        with / baseline,
        after(caught_up),
        if has_syslog { 2 * requests * 1000 } else { 0 }
    );
    if let Some((with_reader_rate, caught_up_reader, cpu_reader, _)) = reader_run {
        println!(
            "    with the same sinks, the syslog one to a receiver that only reads (a thread of the bench, not rsyslogd): {with_reader_rate:>9.0} events/s, ratio {:.2}, all delivered {:.2} s after the last acknowledgement, server CPU {:.1} ms per 1000 events, {} messages read (of {})",
            with_reader_rate / baseline,
            after(caught_up_reader),
            per_1000(cpu_reader.0),
            reader.messages(),
            requests * 1000
        );
    }
    println!(
        "    without sinks, beside {cores} CPU loops at idle priority (SCHED_IDLE) in the server's session: {beside_loops:>9.0} events/s, ratio {:.2}; the kernel's scheduling groups by session (autogroup): {}",
        beside_loops / baseline,
        match std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled").as_deref() {
            Ok("1\n") => "on (PostgreSQL, started by pg_ctl, has a group of its own)",
            Ok(_) => "off",
            Err(_) => "not in this kernel",
        }
    );
    println!(
        "    CPU per 1000 events, server (ingestion to catch-up): without {:.1} / {:.1} ms, with sinks {:.1} ms; rsyslogd (the receiver, at normal priority) {:.1} ms",
        per_1000(cpu1),
        per_1000(cpu2),
        per_1000(cpu_with),
        per_1000(receiver)
    );
    println!(
        "    CPU per 1000 events, PostgreSQL (all its processes): without {:.1} / {:.1} ms, with sinks {:.1} ms",
        per_1000(pg1),
        per_1000(pg2),
        per_1000(pg_with),
    );
    println!(
        "    server peak RSS: without {peak1:.0} / {peak2:.0} MiB, with sinks {peak_with:.0} MiB"
    );
    // Whether the target fits in this machine's CPU at all: at 0.90 of the rate without sinks,
    // what the cores leave per event beside ingestion's own CPU (the whole machine's, per event,
    // in the runs without sinks), against what forwarding takes (the server's extra CPU and the
    // receiver's). Fitting is necessary, not enough: work beside ingestion also delays it
    // (caches, wake-ups). Forwarding's work may trail the last acknowledgement, so this bounds
    // no short run's ratio; it is what a run long enough for forwarding to keep up must fit in.
    let ingest = (busy1 / without1 + busy2 / without2) / 2.0 * 1000.0 * 1000.0;
    let room = cores as f64 / (0.9 * baseline) * 1000.0 * 1000.0 - ingest;
    let needs = per_1000(cpu_with) - (per_1000(cpu1) + per_1000(cpu2)) / 2.0 + per_1000(receiver);
    println!(
        "    the machine's CPU while posting: without sinks {busy1:.2} / {busy2:.2} of {cores} cores, with sinks {busy_with:.2}; all of it per 1000 events without sinks {ingest:.1} ms"
    );
    println!(
        "    CPU BUDGET at 0.90 of the rate without sinks: {room:.1} ms per 1000 events left for forwarding and its receiver; they take {needs:.1} ms (server {:.1}, rsyslogd {:.1})",
        needs - per_1000(receiver),
        per_1000(receiver)
    );
    drop(rsyslog);
}

/// A syslog receiver that only reads: every connection's bytes are read and their octet-counted
/// messages (RFC 6587: `LEN SP MSG`) counted once all their bytes are in, nothing else. It trusts
/// the framing (the server's; a message cut short is not counted, so a count below the events
/// sent shows it); its threads end with the process.
struct OnlyReads {
    port: u16,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl OnlyReads {
    fn start() -> OnlyReads {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a reader");
        let port = listener.local_addr().expect("reader's port").port();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let (Ok(mut conn), counted) = (conn, counted.clone()) else {
                    continue;
                };
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 256 << 10];
                    // In a length (digits so far) or inside a message (bytes left of it).
                    let (mut len, mut left) = (0usize, 0usize);
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        let mut at = 0;
                        while at < n {
                            if left > 0 {
                                let take = left.min(n - at);
                                (left, at) = (left - take, at + take);
                                if left == 0 {
                                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                            } else if buf[at] == b' ' {
                                if len == 0 {
                                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                                (left, len, at) = (len, 0, at + 1);
                            } else if buf[at].is_ascii_digit() {
                                // Saturating: an absurd length swallows the rest, not wraps.
                                let digit = usize::from(buf[at] - b'0');
                                (len, at) = (len.saturating_mul(10).saturating_add(digit), at + 1);
                            } else {
                                at += 1; // not octet-counted framing: not counted
                            }
                        }
                    }
                });
            }
        });
        OnlyReads { port, count }
    }

    fn messages(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Endless shell loops, killed when dropped (also when a run beside them panics).
struct CpuLoops(Vec<std::process::Child>);

impl Drop for CpuLoops {
    fn drop(&mut self) {
        for l in &mut self.0 {
            let _ = l.kill();
            let _ = l.wait();
        }
    }
}

/// CPU seconds the PostgreSQL cluster at `url` has used so far: its postmaster (found by the
/// `-p PORT` it was started with), the children it has waited for, and its live children.
fn postgres_cpu_seconds(url: &str) -> f64 {
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or("");
    let procs: Vec<(u32, String, Vec<f64>)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = stat.rsplit_once(')')?.1;
            let f = after
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0.0))
                .collect();
            Some((pid, String::from_utf8_lossy(&cmdline).replace('\0', " "), f))
        })
        .collect();
    let Some(postmaster) = procs
        .iter()
        .find(|(_, cmd, _)| cmd.contains("postgres") && cmd.contains(&format!("-p {port} ")))
    else {
        return 0.0;
    };
    // Fields after the name: ppid is the 2nd; utime, stime, cutime, cstime the 12th to 15th.
    let own: f64 = postmaster.2.get(11..15).map_or(0.0, |t| t.iter().sum());
    let children: f64 = procs
        .iter()
        .filter(|(_, _, f)| f.get(1) == Some(&f64::from(postmaster.0)))
        .map(|(_, _, f)| f.get(11..13).map_or(0.0, |t| t.iter().sum()))
        .sum();
    (own + children) / 100.0
}

/// CPU seconds the whole machine has spent busy so far (every core, every process and the
/// kernel): /proc/stat's first line, all but idle and iowait, in clock ticks (100 a second).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = (stat.lines().next().unwrap_or_default().split_whitespace())
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq; steal (the hypervisor's) and guest (inside user
    // already) are left out.
    let busy: f64 =
        f.iter().take(7).sum::<f64>() - f.get(3).unwrap_or(&0.0) - f.get(4).unwrap_or(&0.0);
    busy / 100.0
}

/// User + system CPU seconds a process has used so far (0 when it cannot be read).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (in parentheses): utime and stime are the 12th and
    // 13th of them, in clock ticks (100 a second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    if f.len() < 13 {
        return 0.0;
    }
    (f[11] + f[12]) / 100.0
}

/// A PostgreSQL checkpoint, so that the figure measured next does not pay for writing out
/// the pages the one before dirtied (nor start in a checkpoint that then logs a full image of
/// every page it first touches): (a) and (b) start from the same state.
async fn settle(url: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::raw_sql("CHECKPOINT")
        .execute(&mut conn)
        .await
        .expect("CHECKPOINT");
}

/// (a): PostgreSQL's COPY of `o.bulk` rows of the same sizes as the batched device's into a
/// scratch copy of the table; the rate.
async fn copy_figure(o: &Opts, url: &str) -> f64 {
    // (a) COPY rows of the same sizes as the batched device's (a 1000-row batch has 10-hash proofs).
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let protection = format!("1:3:1:{}", "ab".repeat(12 + 32 * 10));
    // COPY's text format: backslash, newline, carriage return and tab escaped.
    let details = submitter_details()
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t");
    let mut data = Vec::with_capacity(o.bulk * (900 + details.len()));
    for i in 0..o.bulk {
        use std::io::Write;
        let _ = writeln!(
            data,
            "{}\tbench-copy\t{i}\t{}\tPROCESS\tSUCCESS\tCN=signer,O=Test\tSIGNSERVER\tWORKER\t\\N\t\\N\t\\N\t{details}\t0\t{protection}",
            auditseal_core::record::new_pk(),
            auditseal_core::time::now_millis()
        );
    }
    // Once untimed into a table dropped after: on a new cluster PostgreSQL creates its WAL
    // segment files as they fill, later it recycles them, and the bulk endpoint's figure after
    // this one finds them recycled; the timed COPY then starts from the same state (`settle`).
    let mut elapsed = Duration::ZERO;
    for table in ["scratch_warm", "scratch_copy"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (LIKE auditrecorddata INCLUDING ALL)"
        )))
        .execute(&mut conn)
        .await
        .expect("scratch");
        settle(url).await;
        let started = Instant::now();
        let mut copy = conn
            .copy_in_raw(&format!("COPY {table} (pk, nodeid, sequencenumber, \"timestamp\", eventtype, eventstatus, authtoken, service, module, customid, searchdetail1, searchdetail2, additionaldetails, rowversion, rowprotection) FROM STDIN"))
            .await
            .expect("copy");
        copy.send(data.as_slice()).await.expect("copy send");
        copy.finish().await.expect("copy finish");
        elapsed = started.elapsed();
    }
    sqlx::raw_sql("DROP TABLE scratch_warm")
        .execute(&mut conn)
        .await
        .expect("drop");
    let copy_rate = o.bulk as f64 / elapsed.as_secs_f64();
    println!(
        "\n[a] PostgreSQL COPY of {} equivalent rows into a scratch copy of the table",
        o.bulk
    );
    println!("    {copy_rate:>9.0} rows/s");

    copy_rate
}

/// A server with the batched device on `url` as `node`, with the log filter `log` (None: the
/// server's default).
fn start_batched(
    hsm: &SoftHsm,
    url: &str,
    dir: &std::path::Path,
    conf: &std::path::Path,
    node: &str,
    log: Option<&std::ffi::OsStr>,
) -> Server {
    let args = [
        "--config",
        conf.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
        "--node-id",
        node,
        "--database-url",
        url,
        "--device",
        "batched",
    ];
    let softhsm = hsm.conf();
    let mut env = vec![("SOFTHSM2_CONF", softhsm.as_os_str())];
    env.extend(log.map(|l| ("AUDITSEAL_LOG", l)));
    Server::start_env(&args, &env).expect("start the batched server")
}

/// (b): `o.bulk` events through the bulk endpoint; the rate, against (a)'s.
async fn bulk_figure(o: &Opts, url: &str, server: &Server, copy_rate: f64) -> f64 {
    settle(url).await;
    // (b) bulk endpoint: NDJSON requests of 1000 events from 4 connections.
    let per_request = 1000;
    let requests = o.bulk / per_request;
    let bulk_rate = bulk(server, requests, per_request).await;
    println!(
        "\n[b] batched device through the bulk endpoint ({requests} requests of {per_request} events, 4 connections)"
    );
    println!(
        "    {bulk_rate:>9.0} events/s   RATIO (b)/(a) = {:.2} (target >= 0.85, issue 17)",
        bulk_rate / copy_rate
    );
    batch_timings(&server.log());
    bulk_rate
}

/// Issue 4's figures: (a) COPY of equivalent rows, (b) the batched device through the bulk
/// endpoint, (c) through single POSTs from `--single-clients` connections, against (d) the
/// sequential device measured above, (f) single POSTs in an open loop at half of (c)'s rate;
/// and the server's peak RSS.
async fn batched_figures(
    o: &Opts,
    hsm: &SoftHsm,
    url: &str,
    dir: &std::path::Path,
    conf: &std::path::Path,
    sequential: f64,
) {
    let copy_rate = copy_figure(o, url).await;
    let server = start_batched(hsm, url, dir, conf, "bench-batched", Some(&log_filter()));
    let bulk_rate = bulk_figure(o, url, &server, copy_rate).await;
    let log_b = server.log();

    // (c) single POSTs from many connections, each waiting for its answer.
    let clients = o.single_clients;
    let body = serde_json::to_vec(&event("PROCESS")).expect("event");
    let posts = load::client(&auditseal_e2e::token_for(&server.url), clients);
    let events_url = format!("{}/api/v1/events", server.url);
    let per_client = (o.bulk / 4 / clients).max(1);
    let single = load::closed_loop(&posts, &events_url, &body, clients, per_client).await;
    println!(
        "\n[c] batched device through single POSTs ({clients} connections, {} events, each waiting for its answer)",
        single.latencies.len()
    );
    println!("    {single}");
    println!(
        "    RATIO (c)/(b) = {:.2} (target >= 0.5; (b) = the bulk endpoint above)",
        single.rate() / bulk_rate
    );
    println!(
        "    RATIO (c)/(d) = {:.1} (target >= 20; (d) = the sequential device [4], {sequential:.0}/s)",
        single.rate() / sequential
    );
    let log_c = log_since(&server, &log_b);
    batch_timings(&log_c);

    // (f) open loop: a constant arrival rate at half of (c)'s peak, latency from each due time.
    let rate = single.rate() / 2.0;
    let total = ((rate * 10.0) as usize).clamp(1000, o.bulk / 2);
    let histogram_before = ingest_histogram(&server).await;
    let load::OpenLoop {
        run: open,
        start_lag,
    } = load::open_loop(&posts, &events_url, &body, rate, total, clients).await;
    let histogram_after = ingest_histogram(&server).await;
    let log_f = log_since(&server, &format!("{log_b}{log_c}"));
    println!(
        "\n[f] open loop: {total} single POSTs due at {rate:.0}/s (half of (c)), at most {clients} in flight; latency from each due time"
    );
    println!("    {open}");
    println!(
        "    of which before the request was sent (client: a free slot, a core): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(start_lag.percentile(0.5)),
        ms(start_lag.percentile(0.99)),
        ms(start_lag.latencies.last().copied().unwrap_or_default())
    );
    let quantile = |q| histogram_quantile(&histogram_before, &histogram_after, q);
    println!(
        "    server, handler to acknowledgement (auditseal_ingest_duration_seconds, bucket bounds): p50 <= {}, p99 <= {}",
        quantile(0.5),
        quantile(0.99)
    );
    let timings = batch_timings(&log_f);
    if timings.batches > 0 {
        println!(
            "    RATIO p99 / median batch seal + commit = {:.2} (target <= 2)",
            open.percentile(0.99).as_secs_f64() / timings.median().as_secs_f64()
        );
    }
    let peak =
        load::proc_status_kb(server.pid(), "VmHWM").map_or(f64::NAN, |kb| kb as f64 / 1024.0);
    println!("\n    server peak RSS: {peak:.1} MB (target < 150 MB)");
    server.stop();
}
