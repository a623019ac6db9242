//! Outages in the log, each said twice: one line when requests start getting 503 for it (with
//! the reason), one when they are served again, with how long it lasted and how many requests
//! were refused meanwhile. Nothing per request in between: a 45 s database outage used to write
//! two lines per refused request (11.7 MB of stderr). The database, the signing key and the
//! batched device's queue each have one.

use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The outage of this process's database, if one is going on.
pub static DATABASE: Outage = Outage::new(
    "the database is unavailable: requests that need it get 503 database_unavailable; logged \
     again once it answers",
    "the database answers again",
    Duration::ZERO,
);

/// The read database (`database_read_url`, a standby) does not answer: reads get 503,
/// ingestion goes on.
pub static READ_DATABASE: Outage = Outage::new(
    "the read database does not answer: queries, exports and verification get 503 \
     read_database_unavailable (ingestion goes on); logged again once it answers",
    "the read database answers again",
    Duration::ZERO,
);

/// The signing key cannot sign (HSM unreachable, session lost, PIN refused).
pub static SIGNING_KEY: Outage = Outage::new(
    "the signing key cannot sign: events get 503 token_unavailable; logged again once it signs",
    "the signing key signs again",
    Duration::ZERO,
);

/// The batched device's queue is full. Ended only a second after its last refusal, so a queue
/// at the edge of full does not log two lines per event.
pub static QUEUE: Outage = Outage::new(
    "the ingestion queue is full: events get 503 queue_full; logged again once it takes events",
    "the ingestion queue takes events again",
    Duration::from_secs(1),
);

pub struct Outage {
    /// Said at the start (an ERROR, with the reason) and at the end (a WARN).
    starts: &'static str,
    ends: &'static str,
    /// An outage ends at a success at least this long after its last refusal.
    quiet: Duration,
    /// Whether `current` is Some: read on every request that reached the database, without the
    /// lock.
    down: AtomicBool,
    current: Mutex<Option<Current>>,
}

struct Current {
    since: Instant,
    refused: u64,
    last_refused: Instant,
}

impl Outage {
    const fn new(starts: &'static str, ends: &'static str, quiet: Duration) -> Self {
        Outage {
            starts,
            ends,
            quiet,
            down: AtomicBool::new(false),
            current: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request was answered 503 for this outage's reason.
    pub fn refused(&self, error: &dyn Display) {
        self.record(error, 1);
    }

    /// Something other than a request (a background re-read) failed for this reason.
    pub fn failed(&self, error: &dyn Display) {
        self.record(error, 0);
    }

    fn record(&self, error: &dyn Display, refused: u64) {
        let mut current = self.lock();
        let now = Instant::now();
        match current.as_mut() {
            Some(c) => {
                c.refused += refused;
                c.last_refused = now;
            }
            None => {
                *current = Some(Current {
                    since: now,
                    refused,
                    last_refused: now,
                });
                self.down.store(true, Ordering::SeqCst);
                tracing::error!(%error, "{}", self.starts);
            }
        }
    }

    /// What was out served a request (or answered a background call).
    pub fn answered(&self) {
        if !self.down.load(Ordering::SeqCst) {
            return;
        }
        let mut current = self.lock();
        match current.as_ref() {
            Some(c) if c.last_refused.elapsed() >= self.quiet => {}
            _ => return,
        }
        let Some(c) = current.take() else { return };
        self.down.store(false, Ordering::SeqCst);
        tracing::warn!(
            "{} after {:.1} s; {} requests were refused with 503 meanwhile",
            self.ends,
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
        let o = Outage::new("down", "up", Duration::ZERO);
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

    #[test]
    fn a_quiet_period_keeps_an_outage_at_the_edge_in_one_piece() {
        let o = Outage::new("down", "up", Duration::from_millis(200));
        o.refused(&"full");
        o.answered();
        assert_eq!(
            o.refused_so_far(),
            Some(1),
            "a success right after a refusal"
        );
        o.refused(&"full");
        std::thread::sleep(Duration::from_millis(250));
        o.answered();
        assert_eq!(o.refused_so_far(), None);
    }
}
