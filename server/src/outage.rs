//! Database outages in the log: one line when the database stops answering, one when it answers
//! again, with how long it was away and how many requests were refused with 503 meanwhile.
//! Nothing per request in between: a 45 s outage used to write two lines per refused request
//! (11.7 MB of stderr).

use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The outage of this process's database, if one is going on.
pub static DATABASE: Outage = Outage::new();

pub struct Outage {
    /// Whether `current` is Some: read on every request that reached the database, without the
    /// lock.
    down: AtomicBool,
    current: Mutex<Option<Current>>,
}

struct Current {
    since: Instant,
    refused: u64,
}

impl Outage {
    const fn new() -> Self {
        Outage {
            down: AtomicBool::new(false),
            current: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request was answered 503 because the database is unavailable.
    pub fn refused(&self, error: &dyn Display) {
        self.record(error, 1);
    }

    /// Something other than a request (a background re-read) could not reach the database.
    pub fn failed(&self, error: &dyn Display) {
        self.record(error, 0);
    }

    fn record(&self, error: &dyn Display, refused: u64) {
        let mut current = self.lock();
        match current.as_mut() {
            Some(c) => c.refused += refused,
            None => {
                *current = Some(Current {
                    since: Instant::now(),
                    refused,
                });
                self.down.store(true, Ordering::SeqCst);
                tracing::error!(%error, "the database is unavailable: requests that need it get \
                    503 database_unavailable; logged again once it answers");
            }
        }
    }

    /// The database answered.
    pub fn answered(&self) {
        if !self.down.load(Ordering::SeqCst) {
            return;
        }
        let Some(c) = self.lock().take() else { return };
        self.down.store(false, Ordering::SeqCst);
        tracing::warn!(
            "the database answers again after {:.1} s; {} requests were refused with 503 \
             meanwhile",
            c.since.elapsed().as_secs_f64(),
            c.refused
        );
    }

    /// Whether the last call to the database failed (an outage is going on).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Requests refused in the outage going on (None: no outage).
    #[cfg(test)]
    fn refused_so_far(&self) -> Option<u64> {
        self.lock().as_ref().map(|c| c.refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_refusals_between_start_and_end() {
        let o = Outage::new();
        assert_eq!(o.refused_so_far(), None);
        o.answered();
        o.failed(&"connection refused");
        assert_eq!(o.refused_so_far(), Some(0));
        for _ in 0..50 {
            o.refused(&"connection refused");
        }
        assert_eq!(o.refused_so_far(), Some(50));
        o.answered();
        assert_eq!(o.refused_so_far(), None);
        o.refused(&"again");
        assert_eq!(o.refused_so_far(), Some(1));
    }
}
