//! verifylog's progress on stderr: on a terminal one line per node, redrawn in place (bar, rows,
//! rows/s); otherwise a plain line per node every few seconds and when it finishes.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use auditseal_core::verify::Progress;

/// How often the display is updated.
const TERMINAL_EVERY: Duration = Duration::from_millis(200);
const PLAIN_EVERY: Duration = Duration::from_secs(5);

struct NodeState {
    expected: u64,
    rows: u64,
    started: Instant,
    /// When the node finished: its rate stays what it was, not one that decays towards 0.
    finished: Option<Instant>,
}

pub struct Bar {
    terminal: bool,
    state: Mutex<State>,
}

struct State {
    nodes: BTreeMap<String, NodeState>,
    drawn_lines: usize,
    last_draw: Option<Instant>,
}

impl Bar {
    pub fn stderr() -> Self {
        Bar {
            terminal: std::io::stderr().is_terminal(),
            state: Mutex::new(State {
                nodes: BTreeMap::new(),
                drawn_lines: 0,
                last_draw: None,
            }),
        }
    }

    /// One node's line at `now`: bar, rows of the total, rate, and the time left (or "done").
    fn line(node: &str, n: &NodeState, now: Instant) -> String {
        let end = n.finished.unwrap_or(now);
        let secs = end.duration_since(n.started).as_secs_f64().max(1e-3);
        let rate = n.rows as f64 / secs;
        let fraction = if n.expected == 0 {
            1.0
        } else {
            (n.rows as f64 / n.expected as f64).min(1.0)
        };
        let filled = (fraction * 24.0) as usize;
        let tail = match n.finished {
            Some(_) => "  done".to_string(),
            None if rate >= 1.0 && n.expected > n.rows => {
                let left = ((n.expected - n.rows) as f64 / rate) as u64;
                format!("  ETA {}:{:02}", left / 60, left % 60)
            }
            None => String::new(),
        };
        format!(
            "{node:<20} [{}{}] {:>3}% {:>10}/{} rows {:>8} rows/s{tail}",
            "#".repeat(filled),
            "-".repeat(24 - filled),
            (fraction * 100.0) as u32,
            n.rows,
            n.expected,
            rate as u64,
        )
    }

    fn draw(&self, st: &mut State, force: bool) {
        let every = if self.terminal {
            TERMINAL_EVERY
        } else {
            PLAIN_EVERY
        };
        if !force && st.last_draw.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        st.last_draw = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        if self.terminal {
            // Move up over what was drawn before and draw every node again.
            if st.drawn_lines > 0 {
                let _ = write!(err, "\x1b[{}A", st.drawn_lines);
            }
            let now = Instant::now();
            for (node, n) in &st.nodes {
                let _ = writeln!(err, "\x1b[2K{}", Self::line(node, n, now));
            }
            st.drawn_lines = st.nodes.len();
        } else {
            let now = Instant::now();
            for (node, n) in st.nodes.iter().filter(|(_, n)| n.finished.is_none()) {
                let _ = writeln!(err, "progress: {}", Self::line(node, n, now));
            }
        }
    }
}

impl Progress for Bar {
    fn start(&self, node: &str, expected: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.nodes.insert(
            node.to_string(),
            NodeState {
                expected,
                rows: 0,
                started: Instant::now(),
                finished: None,
            },
        );
        self.draw(&mut st, self.terminal);
    }

    fn advance(&self, node: &str, rows: u64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = st.nodes.get_mut(node) {
            n.rows += rows;
        }
        self.draw(&mut st, false);
    }

    fn finish(&self, node: &str) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(n) = st.nodes.get_mut(node) else {
            return;
        };
        let now = Instant::now();
        n.finished = Some(now);
        if self.terminal {
            self.draw(&mut st, true);
        } else if let Some(n) = st.nodes.get(node) {
            // As in `draw`: a closed stderr (`verifylog --all 2>&1 | head`) must not panic.
            let _ = writeln!(std::io::stderr(), "progress: {}", Self::line(node, n, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_total_rate_and_time_left_and_a_finished_rate_stays() {
        let started = Instant::now();
        let at = |secs: u64| started + Duration::from_secs(secs);
        let mut n = NodeState {
            expected: 1000,
            rows: 250,
            started,
            finished: None,
        };
        let line = Bar::line("node1", &n, at(5));
        assert!(
            line.contains(" 25%") && line.contains("250/1000 rows"),
            "{line}"
        );
        assert!(
            line.contains("50 rows/s") && line.contains("ETA 0:15"),
            "{line}"
        );
        n.rows = 1000;
        n.finished = Some(at(20));
        // Long after the node finished, its rate is still the one it had.
        let line = Bar::line("node1", &n, at(3600));
        assert!(
            line.contains("50 rows/s") && line.ends_with("done"),
            "{line}"
        );
    }
}
