//! Each connection's activity (requests in flight, idle since when) and the registry of open
//! connections, from which a full server evicts the one idle longest.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One connection's activity, as its idle deadline and the eviction of idle connections see it.
pub(super) struct Activity {
    /// Requests whose response has not been sent in full.
    in_flight: AtomicUsize,
    /// When the connection last had nothing in flight (opened, or its last response sent).
    idle_since: Mutex<Instant>,
    /// Set when the accept loop wants this connection closed to make room.
    evict: AtomicBool,
    /// Woken when `in_flight` drops to 0 or `evict` is set.
    changed: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            evict: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// When the connection became idle, or None while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        (self.in_flight.load(Ordering::SeqCst) == 0).then_some(since)
    }

    /// A request begins; it ends when the guard (held by its response body) is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `limit`, or is evicted.
    pub(super) async fn idle_for(&self, limit: Duration) {
        self.quiet_for(limit, true, None).await
    }

    /// Resolves once the connection has had no request in flight for `limit`, counted from
    /// `not_before` at the earliest (a connection told to close: from then), or, with
    /// `or_evicted`, once it is evicted.
    pub(super) async fn quiet_for(
        &self,
        limit: Duration,
        or_evicted: bool,
        not_before: Option<Instant>,
    ) {
        loop {
            if or_evicted && self.evict.load(Ordering::SeqCst) {
                return;
            }
            match self.idle_since() {
                Some(since) => {
                    let since = not_before.map_or(since, |t| t.max(since));
                    if since.elapsed() >= limit {
                        return;
                    }
                    let deadline = tokio::time::Instant::from_std(since + limit);
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        *a.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        if a.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            a.changed.notify_one();
        }
    }
}

/// The open connections, so that a full server can close the one idle longest.
#[derive(Default)]
pub(super) struct Registry {
    conns: Mutex<HashMap<u64, Arc<Activity>>>,
    next: AtomicU64,
}

impl Registry {
    /// A new connection's activity; it leaves the registry when the guard is dropped.
    pub(super) fn add(self: &Arc<Self>) -> (Arc<Activity>, Registered) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        self.lock().insert(id, activity.clone());
        (activity, Registered(self.clone(), id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the connection idle longest (and not told already) to close; none when every
    /// connection has a request in flight.
    pub(super) fn evict_idlest(&self) {
        let conns = self.lock();
        let idlest = conns
            .values()
            .filter(|a| !a.evict.load(Ordering::SeqCst))
            .filter_map(|a| a.idle_since().map(|since| (since, a)))
            .min_by_key(|(since, _)| *since);
        if let Some((_, a)) = idlest {
            a.evict.store(true, Ordering::SeqCst);
            a.changed.notify_one();
        }
    }
}

pub(super) struct Registered(Arc<Registry>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}
