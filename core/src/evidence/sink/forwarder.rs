//! One receiver's sender: items are queued in its durable backlog, then a task delivers them
//! oldest first, and removes each from the backlog only once the transport reports it
//! delivered. While the receiver is down it retries (1 s, doubling up to 60 s) and keeps the
//! items; a backlog left at a stop is sent after the next start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::SinkError;
use super::backlog::Backlog;

/// How a receiver is reached: delivers items, in order.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    type Item: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;

    /// Where the items go, for log lines (`syslog tls://logs.example:6514`).
    fn describe(&self) -> String;

    /// Delivers `items` in order. On an error, says how many of the first ones were delivered
    /// anyway (they are not sent again).
    async fn deliver(&self, items: &[Self::Item]) -> Result<(), Undelivered>;
}

/// Why a delivery stopped, and how many items went through before it did.
#[derive(Debug)]
pub struct Undelivered {
    pub delivered: usize,
    pub reason: String,
}

impl Undelivered {
    pub fn none(reason: impl Into<String>) -> Undelivered {
        Undelivered {
            delivered: 0,
            reason: reason.into(),
        }
    }
}

/// Most items handed to the transport at once.
const BATCH: usize = 100;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// How often an outage that goes on is reported again.
const REALERT: Duration = Duration::from_secs(3600);

struct Shared<T: Transport> {
    transport: T,
    backlog: Mutex<Backlog<T::Item>>,
    /// Something new was queued.
    wake: Notify,
    stop: Notify,
    stopping: AtomicBool,
    name: String,
}

/// How many items wait for a receiver.
pub trait Waiting: Send + Sync {
    fn waiting(&self) -> usize;
}

impl<T: Transport> Waiting for Shared<T> {
    fn waiting(&self) -> usize {
        lock(&self.backlog).len()
    }
}

pub struct Forwarder<T: Transport> {
    shared: Arc<Shared<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Transport> Forwarder<T> {
    /// Opens the backlog (a file in the data directory) and starts sending what it holds.
    pub async fn start(
        transport: T,
        backlog: std::path::PathBuf,
        max: usize,
    ) -> Result<Forwarder<T>, SinkError> {
        let backlog = tokio::task::spawn_blocking(move || Backlog::open(&backlog, max))
            .await
            .map_err(|e| SinkError::Task(e.to_string()))??;
        let name = transport.describe();
        if !backlog.is_empty() {
            tracing::warn!(
                receiver = %name,
                waiting = backlog.len(),
                backlog = %backlog.path().display(),
                "sending what an earlier run could not deliver"
            );
        }
        let shared = Arc::new(Shared {
            transport,
            backlog: Mutex::new(backlog),
            wake: Notify::new(),
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
            name,
        });
        let task = tokio::spawn(send_loop(shared.clone()));
        Ok(Forwarder { shared, task })
    }

    /// Where this forwarder delivers.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Queues `item` durably (appended and synced) for delivery. Past the backlog's limit the
    /// oldest waiting item is dropped with an ALERT naming it.
    pub async fn push(&self, item: T::Item) -> Result<(), SinkError> {
        let shared = self.shared.clone();
        let (dropped, len, max) = tokio::task::spawn_blocking(move || {
            let mut b = lock(&shared.backlog);
            let dropped = b.push(item)?;
            Ok::<_, SinkError>((dropped, b.len(), b.max()))
        })
        .await
        .map_err(|e| SinkError::Task(e.to_string()))??;
        if let Some(d) = dropped {
            let text = serde_json::to_string(&d).unwrap_or_default();
            tracing::error!(
                receiver = %self.shared.name,
                limit = max,
                dropped = %shorten(&text),
                "ALERT the backlog for a receiver that has not answered is full: the oldest \
                 waiting item was dropped (it is in this line); start the receiver or raise \
                 checkpoint.backlog_max"
            );
        } else if len == max.div_ceil(2) && max > 1 {
            tracing::warn!(
                receiver = %self.shared.name,
                waiting = len,
                limit = max,
                "the backlog for a receiver that has not answered is half full"
            );
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// How many items wait.
    pub fn waiting(&self) -> usize {
        lock(&self.shared.backlog).len()
    }

    /// A handle that tells how many items wait, for as long as it is kept (metrics).
    pub fn watch(&self) -> Arc<dyn Waiting> {
        self.shared.clone()
    }

    /// Makes one more attempt at once and waits up to `deadline` for what is queued to be
    /// delivered; what is left stays in the backlog for the next start.
    pub async fn close(self, deadline: Duration) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        self.shared.stop.notify_one();
        let mut task = self.task;
        if tokio::time::timeout(deadline, &mut task).await.is_err() {
            task.abort();
        }
        let b = lock(&self.shared.backlog);
        if !b.is_empty() {
            tracing::warn!(
                receiver = %self.shared.name,
                waiting = b.len(),
                backlog = %b.path().display(),
                "stopping with items not yet delivered; they are sent after the next start"
            );
        }
    }
}

fn lock<U>(m: &Mutex<U>) -> std::sync::MutexGuard<'_, U> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn shorten(s: &str) -> &str {
    match s.char_indices().nth(2000) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

async fn send_loop<T: Transport>(shared: Arc<Shared<T>>) {
    let mut retry = FIRST_RETRY;
    // The failure in progress and when it was last reported: an outage is one ALERT an hour
    // (or one more when its reason changes), not one a try.
    let mut failing: Option<(String, tokio::time::Instant)> = None;
    loop {
        let stopping = shared.stopping.load(Ordering::SeqCst);
        let batch = lock(&shared.backlog).front(BATCH);
        if batch.is_empty() {
            if stopping {
                return;
            }
            shared.wake.notified().await;
            continue;
        }
        let result = shared.transport.deliver(&batch).await;
        let (delivered, error) = match result {
            Ok(()) => (batch.len(), None),
            Err(u) => (u.delivered.min(batch.len()), Some(u.reason)),
        };
        if delivered > 0 {
            let s = shared.clone();
            let removed =
                tokio::task::spawn_blocking(move || lock(&s.backlog).remove_front(delivered))
                    .await
                    .map_err(|e| SinkError::Task(e.to_string()))
                    .and_then(|r| r);
            if let Err(e) = removed {
                // Sent again later: a receiver may see an item twice, never miss one.
                tracing::error!(receiver = %shared.name, error = %e, "ALERT cannot update the backlog");
            }
        }
        match error {
            None => {
                if failing.take().is_some() {
                    tracing::warn!(receiver = %shared.name, "the receiver answers again; delivered what waited");
                }
                retry = FIRST_RETRY;
                continue;
            }
            Some(reason) => {
                let waiting = lock(&shared.backlog).len();
                match &failing {
                    Some((r, at)) if *r == reason && at.elapsed() < REALERT => {
                        tracing::debug!(receiver = %shared.name, error = %reason, waiting, "still cannot deliver");
                    }
                    _ => {
                        tracing::error!(
                            receiver = %shared.name,
                            error = %reason,
                            waiting,
                            "ALERT cannot deliver to the receiver; kept in the backlog, retrying"
                        );
                        failing = Some((reason, tokio::time::Instant::now()));
                    }
                }
                if stopping {
                    return;
                }
                // A new item (a receiver may be back) or the stop cut the wait short.
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = shared.wake.notified() => {}
                    _ = shared.stop.notified() => {}
                }
                retry = (retry * 2).min(LAST_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Delivers while `up`, recording what it got.
    #[derive(Default)]
    struct Fake {
        up: AtomicBool,
        got: Mutex<Vec<u32>>,
        tries: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Transport for Arc<Fake> {
        type Item = u32;
        fn describe(&self) -> String {
            "fake".into()
        }
        async fn deliver(&self, items: &[u32]) -> Result<(), Undelivered> {
            self.tries.fetch_add(1, Ordering::SeqCst);
            if !self.up.load(Ordering::SeqCst) {
                return Err(Undelivered::none("down"));
            }
            lock(&self.got).extend_from_slice(items);
            Ok(())
        }
    }

    async fn wait_for(fake: &Fake, n: usize) {
        for _ in 0..200 {
            if lock(&fake.got).len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("got {:?}", lock(&fake.got));
    }

    #[tokio::test]
    async fn keeps_items_while_down_and_sends_them_in_order_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backlog.jsonl");
        let fake = Arc::new(Fake::default());
        let f = Forwarder::start(fake.clone(), path.clone(), 100)
            .await
            .unwrap();
        for i in 0..3 {
            f.push(i).await.unwrap();
        }
        f.close(Duration::from_millis(200)).await;
        assert!(fake.tries.load(Ordering::SeqCst) >= 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n1\n2\n");

        fake.up.store(true, Ordering::SeqCst);
        let f = Forwarder::start(fake.clone(), path.clone(), 100)
            .await
            .unwrap();
        f.push(3).await.unwrap();
        wait_for(&fake, 4).await;
        f.close(Duration::from_secs(1)).await;
        assert_eq!(*lock(&fake.got), vec![0, 1, 2, 3]);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_full_backlog_keeps_the_newest_items() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let fake = Arc::new(Fake::default());
        let f = Forwarder::start(fake.clone(), path.clone(), 2)
            .await
            .unwrap();
        for i in 0..3 {
            f.push(i).await.unwrap();
        }
        assert_eq!(f.waiting(), 2);
        f.close(Duration::from_millis(100)).await;
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n");
    }

    #[tokio::test]
    async fn a_receiver_that_comes_back_gets_everything_queued_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(Fake::default());
        let f = Forwarder::start(fake.clone(), dir.path().join("b"), 100)
            .await
            .unwrap();
        for i in 0..5 {
            f.push(i).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(f.waiting(), 5);
        fake.up.store(true, Ordering::SeqCst);
        f.push(5).await.unwrap();
        wait_for(&fake, 6).await;
        assert_eq!(*lock(&fake.got), vec![0, 1, 2, 3, 4, 5]);
        f.close(Duration::from_secs(1)).await;
    }
}
