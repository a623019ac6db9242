//! Where forwarding's CPU work runs: rendering rows as text, encoding messages and writing file
//! sinks happen on two threads of their own whose scheduling priority is lowered (nice +10 on
//! Linux). When the cores are busy, the server's ingestion threads get them first and forwarding
//! falls behind (its lag is a metric and an alert) instead of slowing the requests; when they are
//! not, forwarding runs at full speed. The priority is within this process's scheduling group
//! only: a database on the same machine is in a group of its own (session autogroup, service
//! cgroup), and against it this work counts at the group's full weight (docs/OPERATIONS.md,
//! "Forwarding to a SIEM"; docs/PERFORMANCE.md, "2026-12-05").

use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// How much lower than the server's other threads (in nice steps) the workers run.
const NICE: i32 = 10;
/// Worker threads: one can write a file sink (and wait for its sync) while another encodes.
const THREADS: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

/// The queue the workers take jobs from; started at the first job. It needs no bound of its own:
/// each job comes from a sink's loop (`Sink::deliver`), which waits for its job's result before it
/// reads further, so the queue never holds more than one job per configured sink.
fn queue() -> &'static Mutex<mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("auditseal-forward-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        job();
                    }
                })
                .expect("cannot start a forwarding thread");
        }
        Mutex::new(tx)
    })
}

/// Runs `f` on a forwarding worker and returns its result; a panic in `f` is an error that
/// says so (the worker goes on with the next job).
pub async fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(result.map_err(|_| "a forwarding worker panicked".to_string()));
    });
    queue()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| "the forwarding workers are gone".to_string())?;
    rx.await
        .map_err(|_| "a forwarding worker dropped its job".to_string())?
}

/// Lowers this thread's priority by `NICE` steps (Linux: `setpriority` on a thread id applies
/// to that thread alone). Lowering needs no privilege; a failure leaves the priority as it was.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on this thread's own id, no memory handed over.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if libc::setpriority(libc::PRIO_PROCESS, tid, (now + NICE).min(19)) != 0 {
            tracing::debug!("cannot lower the forwarding threads' priority");
        }
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn runs_jobs_at_a_lower_priority_and_survives_a_panic() {
        let own = std::thread::spawn(|| unsafe {
            libc::getpriority(
                libc::PRIO_PROCESS,
                libc::syscall(libc::SYS_gettid) as libc::id_t,
            )
        })
        .join()
        .unwrap();
        let worker = super::run(|| unsafe {
            libc::getpriority(
                libc::PRIO_PROCESS,
                libc::syscall(libc::SYS_gettid) as libc::id_t,
            )
        })
        .await
        .unwrap();
        assert_eq!(worker, (own + super::NICE).min(19));
        let e = super::run(|| panic!("boom")).await.unwrap_err();
        assert!(e.contains("panicked"), "{e}");
        assert_eq!(super::run(|| 7).await.unwrap(), 7);
    }
}
