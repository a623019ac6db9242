//! The API's verification runs on this server (`POST /api/v1/verify`): one at a time, and the
//! current or last run's progress, node by node, for `GET /api/v1/verify`. Held in `AppState`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};

use auditseal_core::time::now_millis;
use auditseal_core::verify::Progress;

/// The API's verification runs on one server (its `AppState`): one at a time, as each already
/// uses every core, and the current or last run's progress for `GET /api/v1/verify`
/// (continuous verification is not shown here).
#[derive(Debug)]
pub struct VerifyRuns {
    pub(crate) running: tokio::sync::Semaphore,
    run: Mutex<Option<Run>>,
}

impl Default for VerifyRuns {
    fn default() -> Self {
        VerifyRuns {
            running: tokio::sync::Semaphore::new(1),
            run: Mutex::new(None),
        }
    }
}

impl VerifyRuns {
    pub(crate) fn with_run(&self, f: impl FnOnce(&mut Run)) {
        if let Some(run) = self.lock().as_mut() {
            f(run);
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Option<Run>> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Run {
    pub(crate) by: String,
    pub(crate) started_at: i64,
    pub(crate) finished_at: Option<i64>,
    /// "SUCCESS" or "FAILURE" once finished; null while running or when the run failed to run.
    pub(crate) outcome: Option<&'static str>,
    pub(crate) nodes: BTreeMap<String, NodeProgress>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeProgress {
    /// The verifier's estimate, from the node's highest sequence number.
    pub(crate) expected_rows: u64,
    pub(crate) verified_rows: u64,
    pub(crate) done: bool,
}

/// Marks the run finished however its request ends (a dropped connection, the route's timeout).
pub(crate) struct Finished(pub(crate) Arc<VerifyRuns>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.with_run(|r| {
            r.finished_at.get_or_insert_with(now_millis);
        });
    }
}

/// Feeds the run's progress from the verifier.
pub(crate) struct Tracker(pub(crate) Arc<VerifyRuns>);

impl Progress for Tracker {
    fn start(&self, node: &str, expected: u64) {
        self.0.with_run(|r| {
            r.nodes.entry(node.to_string()).or_default().expected_rows = expected;
        });
    }
    fn advance(&self, node: &str, rows: u64) {
        self.0
            .with_run(|r| r.nodes.entry(node.to_string()).or_default().verified_rows += rows);
    }
    fn finish(&self, node: &str) {
        self.0
            .with_run(|r| r.nodes.entry(node.to_string()).or_default().done = true);
    }
}

/// A run as `GET /api/v1/verify` shows it: its nodes as a list, each naming itself.
pub(crate) fn run_json(r: Run) -> Value {
    let mut v = json!(r);
    v["nodes"] = r
        .nodes
        .into_iter()
        .map(|(id, p)| {
            let mut n = json!(p);
            n["nodeId"] = json!(id);
            n
        })
        .collect();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verifier's reports become each node's progress; a run whose request ends unfinished
    /// is marked finished, with no outcome.
    #[test]
    fn the_tracker_counts_each_nodes_rows_and_a_dropped_run_ends() {
        let runs = Arc::new(VerifyRuns::default());
        *runs.lock() = Some(Run {
            by: "token:t".into(),
            started_at: 1,
            finished_at: None,
            outcome: None,
            nodes: BTreeMap::new(),
        });
        let finished = Finished(runs.clone());
        let tracker = Tracker(runs.clone());
        tracker.start("a", 10);
        tracker.advance("a", 4);
        tracker.advance("a", 6);
        tracker.finish("a");
        tracker.start("b", 3);
        tracker.advance("b", 1);
        let run = runs.lock().clone().unwrap();
        let got: Vec<_> = run
            .nodes
            .iter()
            .map(|(n, p)| (n.as_str(), p.expected_rows, p.verified_rows, p.done))
            .collect();
        assert_eq!(got, [("a", 10, 10, true), ("b", 3, 1, false)]);
        assert_eq!(run.finished_at, None);
        drop(finished);
        let run = runs.lock().clone().unwrap();
        assert!(run.finished_at.is_some() && run.outcome.is_none());
    }
}
