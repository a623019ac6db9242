//! auditseal-ship-bench: how fast auditseal-ship ships a large pkcs11-spy log into the batched
//! device, against the bulk endpoint's rate for the same events posted directly, measured in
//! the same run on the same server; and the agent's peak RSS. Prints figures; asserts nothing
//! (docs/HSM-LOGS.md "Performance").
//!
//!   cargo build --release --workspace --bins
//!   scripts/pg-cluster target/release/auditseal-ship-bench [--lines N]
//!
//! With AUDITSEAL_TEST_PG_URL set (scripts/pg-cluster) the server uses a fresh PostgreSQL
//! database; without it, SQLite.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use auditseal_e2e::{Backend, Server, bin_dir, new_database};
use auditseal_ship::record::{Origin, to_event};
use auditseal_ship::{Format, parse_all};

/// Calls in the form pkcs11-spy.so writes them (OpenSC 0.26), cycled to fill the file.
fn write_log(path: &Path, lines: usize) -> usize {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("log"));
    let mut written = 0;
    let mut n = 0u64;
    let _ = writeln!(
        f,
        "\n\n*************** OpenSC PKCS#11 spy *****************\nLoaded: \"/usr/lib/softhsm/libsofthsm2.so\"\n"
    );
    written += 5;
    while written < lines {
        let ms = n % 1000;
        let block = match n % 3 {
            0 => format!(
                "{n}: C_SignInit\n2026-12-03 11:17:44.{ms:03}\n[in] hSession = 0x1\n[in] pMechanism->type = CKM_ECDSA                    \n[in] hKey = 0x2\nReturned:  0 CKR_OK\n\n"
            ),
            1 => format!(
                "{n}: C_Sign\n2026-12-03 11:17:44.{ms:03}\n[in] hSession = 0x1\n[in] pData[ulDataLen] 00007ffe95ea2570 / 6\n    00000000  68 65 6C 6C 6F 0A                                hello.          \n[out] pSignature[*pulSignatureLen] 00007ffe95ea2370 / 16\n    00000000  56 30 99 2C 36 FC 5C 69 4F 6E B6 4B CF 9C 73 D6  V0.,6.\\iOn.K..s.\nReturned:  0 CKR_OK\n\n"
            ),
            _ => format!(
                "{n}: C_Login\n2026-12-03 11:17:44.{ms:03}\n[in] hSession = 0x1\n[in] userType = CKU_USER\n[in] pPin[ulPinLen] 00007ffc9203ca4a / 8\n    00000000  31 31 31 31 31 31 31 31                          11111111        \nReturned:  160 CKR_PIN_INCORRECT\n\n"
            ),
        };
        written += block.matches('\n').count();
        f.write_all(block.as_bytes()).expect("write");
        n += 1;
    }
    f.flush().expect("flush");
    written
}

#[tokio::main]
async fn main() {
    let mut lines = 1_000_000;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n] = args.as_slice()
        && flag == "--lines"
    {
        lines = n.parse().expect("--lines N");
    }
    let work = tempfile::tempdir().expect("tempdir");
    let d = work.path().to_str().expect("utf-8");
    let log = work.path().join("spy.log");
    let lines = write_log(&log, lines);
    let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);

    let backend = if std::env::var("AUDITSEAL_TEST_PG_URL").is_ok() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    let mut args = vec![
        "--data-dir",
        d,
        "--node-id",
        "ship-bench",
        "--device",
        "batched",
    ];
    let url = new_database(backend, work.path()).await;
    if backend == Backend::Postgres {
        args.extend(["--database-url", &url]);
    }
    let server = Server::start(&args).expect("start the batched server");
    println!(
        "auditseal-ship-bench: {lines} lines ({:.1} MB) of pkcs11-spy log, batched device on {backend:?}",
        size as f64 / 1e6
    );

    // (a) The same events posted directly: parsed in this process (not timed), then NDJSON
    // requests of 1000 from one connection, as the agent sends them.
    let data = std::fs::read(&log).expect("read log");
    let records = parse_all(&data, Format::Pkcs11Spy);
    drop(data);
    let origin = Origin {
        source: "direct",
        module: "PKCS11_SPY",
        host: "bench",
        file: "spy.log",
        file_id: "bench",
    };
    let bodies: Vec<String> = records
        .chunks(1000)
        .map(|c| {
            c.iter()
                .map(|r| to_event(r, &origin).to_string() + "\n")
                .collect()
        })
        .collect();
    let events = records.len();
    drop(records);
    let client = server.client();
    let started = Instant::now();
    for body in bodies {
        let r = client
            .post(format!("{}/api/v1/events:batch", server.url))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    }
    let direct = events as f64 / started.elapsed().as_secs_f64();
    println!("\n[a] the bulk endpoint, {events} events in requests of 1000, one connection");
    println!("    {direct:>9.0} events/s");

    // (b) auditseal-ship over the file: read, parse, redact, send, keep its position.
    let config = work.path().join("ship.toml");
    std::fs::write(
        &config,
        format!(
            "server = '{}'\ntoken = '{}'\nstate_dir = '{d}/state'\nhost = 'bench'\n\
             [[source]]\nname = 'spy'\npath = '{}'\nformat = 'pkcs11-spy'\n",
            server.url,
            server.token,
            log.display()
        ),
    )
    .expect("config");
    let started = Instant::now();
    let child = Command::new(bin_dir().join("auditseal-ship"))
        .args(["--config", config.to_str().expect("utf-8")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run auditseal-ship");
    let peak = auditseal_e2e::load::peak_rss(child.id());
    let out = child.wait_with_output().expect("auditseal-ship");
    let elapsed = started.elapsed();
    let peak_kb = peak.join().unwrap_or(0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "auditseal-ship failed: {err}");
    assert!(
        err.contains(&format!("{events} events stored")),
        "auditseal-ship: {err}"
    );
    let shipped = events as f64 / elapsed.as_secs_f64();
    println!("\n[b] auditseal-ship over the file ({events} events, batches of 1000)");
    println!(
        "    {shipped:>9.0} events/s   RATIO (b)/(a) = {:.2} (target >= 0.80)",
        shipped / direct
    );
    println!(
        "    agent peak RSS {:.1} MB (target < 50 MB)",
        peak_kb as f64 / 1024.0
    );
    server.stop();
}
