//! Load generators for the benchmark programs: single POSTs from many connections, each waiting
//! for its answer (closed loop), and at a constant arrival rate (open loop), where a request's
//! latency is counted from the moment it was due, not from when a connection was free to send
//! it, so a slow server cannot hide its queueing (no coordinated omission).

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Latencies of one run, sorted, and how long it took.
pub struct Run {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Run {
    fn new(mut latencies: Vec<Duration>, elapsed: Duration) -> Run {
        latencies.sort();
        Run { latencies, elapsed }
    }

    /// Answered requests per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile (0.0-1.0) of the latencies, nearest rank.
    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// The `p` quantile (0.0-1.0) of `sorted`, nearest rank; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn milliseconds(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} events/s, latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.rate(),
            milliseconds(self.percentile(0.5)),
            milliseconds(self.percentile(0.99)),
            milliseconds(self.percentile(0.999)),
            milliseconds(self.latencies.last().copied().unwrap_or_default()),
        )
    }
}

/// A client for `connections` connections at once to one server: every request on a
/// connection of its own pool, none opened and closed per request.
pub fn client(token: &str, connections: usize) -> reqwest::Client {
    crate::client_builder(token)
        .pool_max_idle_per_host(connections)
        .build()
        .expect("HTTP client")
}

async fn post(client: &reqwest::Client, url: &str, body: &[u8]) {
    let r = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("post");
    let status = r.status().as_u16();
    assert_eq!(status, 201, "{:?}", r.text().await);
}

/// `connections` clients each POSTing `body` to `url` and waiting for the answer before the
/// next, `per_connection` times.
pub async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    connections: usize,
    per_connection: usize,
) -> Run {
    let body: Arc<[u8]> = body.into();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, body) = (client.clone(), url.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_connection);
            for _ in 0..per_connection {
                let t = Instant::now();
                post(&client, &url, &body).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client"));
    }
    Run::new(lat, started.elapsed())
}

/// `total` POSTs of `body` to `url` due at a constant `rate` per second, at most
/// `connections` in flight. Each latency runs from the request's due time to its answer: a
/// request that had to wait for a free connection counts its wait.
pub async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    rate: f64,
    total: usize,
    connections: usize,
) -> OpenLoop {
    let body: Arc<[u8]> = body.into();
    let slots = Arc::new(tokio::sync::Semaphore::new(connections));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let slot = slots.clone().acquire_owned().await.expect("semaphore");
        let (client, url, body) = (client.clone(), url.to_string(), body.clone());
        tasks.push(tokio::spawn(async move {
            // How late the request starts: the client's own share of its latency (a free
            // connection slot, a core for this task).
            let lag = due.elapsed();
            post(&client, &url, &body).await;
            drop(slot);
            (due.elapsed(), lag)
        }));
    }
    let (mut lat, mut lags) = (Vec::with_capacity(total), Vec::with_capacity(total));
    for t in tasks {
        let (l, lag) = t.await.expect("request");
        lat.push(l);
        lags.push(lag);
    }
    let elapsed = started.elapsed();
    OpenLoop {
        run: Run::new(lat, elapsed),
        start_lag: Run::new(lags, elapsed),
    }
}

/// An open-loop run: each request's latency from its due time, and how late after its due time
/// it began to be sent (the part spent in the client before any byte went out).
pub struct OpenLoop {
    pub run: Run,
    pub start_lag: Run,
}

/// The batched device's own timings, from its per-batch debug lines ("batch sealed ...
/// seal_us=N", "batch committed ... rows=N insert_us=N"; the server's log filter must enable
/// `auditseal_core::device::batched=debug`). Batches are committed in the order they are
/// sealed, so the k-th of each kind belong together.
#[derive(Debug, Default)]
pub struct BatchTimings {
    pub batches: usize,
    pub rows: usize,
    /// Seal (hash and sign) plus insert and commit of each batch, sorted.
    pub seal_and_commit: Vec<Duration>,
}

impl BatchTimings {
    pub fn from_log(log: &str) -> BatchTimings {
        let field = |line: &str, name: &str| -> Option<u64> {
            let start = line.find(&format!("{name}="))? + name.len() + 1;
            line[start..].split_whitespace().next()?.parse().ok()
        };
        let (mut seals, mut commits, mut rows) = (Vec::new(), Vec::new(), 0);
        for line in log.lines() {
            if line.contains("batch sealed") {
                seals.push(field(line, "seal_us").unwrap_or(0));
            } else if line.contains("batch committed") {
                commits.push(field(line, "insert_us").unwrap_or(0));
                rows += field(line, "rows").unwrap_or(0) as usize;
            }
        }
        let mut seal_and_commit: Vec<Duration> = seals
            .iter()
            .zip(&commits)
            .map(|(s, c)| Duration::from_micros(s + c))
            .collect();
        seal_and_commit.sort();
        BatchTimings {
            batches: commits.len(),
            rows,
            seal_and_commit,
        }
    }

    /// The median batch's seal + insert + commit time.
    pub fn median(&self) -> Duration {
        percentile(&self.seal_and_commit, 0.5)
    }
}

/// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM); None when the process or field is gone.
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    proc_file_kb(&format!("/proc/{pid}/status"), field)
}

/// A `Field:   N kB` line of a /proc file (`/proc/PID/status`, `/proc/meminfo`), in KiB.
pub fn proc_file_kb(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The peak RSS (VmHWM, KiB) of a running process, sampled every 20 ms until it is reaped. Unlike
/// wait4's ru_maxrss, it is the child's own: Linux carries a process's peak over exec, so a
/// spawned child's ru_maxrss is at least its parent's RSS at the spawn.
pub fn peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            if let Some(kb) = proc_status_kb(pid, "VmHWM") {
                peak = peak.max(kb);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_timings_pair_each_seal_with_its_commit() {
        let log = "x batch sealed rows=3 seal_us=1000\n\
                   x batch sealed rows=2 seal_us=3000\n\
                   x batch committed rows=3 insert_us=500\n\
                   x batch sealed rows=1 seal_us=100\n\
                   x batch committed rows=2 insert_us=4000\n\
                   x batch committed rows=1 insert_us=50\n";
        let t = BatchTimings::from_log(log);
        assert_eq!((t.batches, t.rows), (3, 6));
        assert_eq!(t.median(), Duration::from_micros(1500));
        assert_eq!(t.seal_and_commit.last(), Some(&Duration::from_micros(7000)));
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let run = Run::new(v, Duration::from_secs(2));
        assert_eq!(run.percentile(0.5), Duration::from_millis(501));
        assert_eq!(run.percentile(0.999), Duration::from_millis(999));
        assert_eq!(run.rate(), 500.0);
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
