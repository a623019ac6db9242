//! The leaf hashes the batched device hands over at commit (`LeafListener`), waiting for the
//! checkpoint writer to fold them: with them it need not read its node's new rows back.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::device::LeafListener;
use crate::format::checkpoint::Head;
use crate::format::merkle::Hash;
use crate::format::protection::Layout;

/// Most leaves kept waiting (8 MiB of hashes, a few seconds of the fastest ingestion): when the
/// writer falls further behind, the oldest are dropped and it reads those rows back instead.
const MAX_LEAVES: usize = 1 << 18;

/// Runs of consecutive leaves, oldest first: (first sequence number, leaves).
pub(super) struct Handed {
    node: String,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    runs: VecDeque<(i64, Vec<Hash>)>,
    /// The leaves in `runs`, kept as runs come and go.
    leaves: usize,
}

impl Queue {
    fn pop_front(&mut self) -> Option<(i64, Vec<Hash>)> {
        let run = self.runs.pop_front()?;
        self.leaves -= run.1.len();
        Some(run)
    }
}

impl Handed {
    pub(super) fn new(node: &str) -> Handed {
        Handed {
            node: node.to_string(),
            queue: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Folds into `head` the waiting leaves that continue it (the rows right after its
    /// sequence number, from this process's own commits) and drops those it has passed.
    /// Returns how many it folded; leaves after a number nobody handed over wait until the
    /// rows before them are read back. The runs are taken out under the lock and hashed
    /// after it, so the device handing over the next commit never waits for the fold.
    pub(super) fn fold_into(&self, head: &mut Head) -> u64 {
        let taken = {
            let mut queue = self.lock();
            if head.fold != Layout::Canonical {
                *queue = Queue::default();
                return 0;
            }
            let mut next = head.sequence_number + 1;
            let mut taken = Vec::new();
            while queue.runs.front().is_some_and(|(first, _)| *first <= next) {
                if let Some(run) = queue.pop_front() {
                    next = next.max(run.0 + run.1.len() as i64);
                    taken.push(run);
                }
            }
            taken
        };
        let mut folded = 0;
        for (first, leaves) in taken {
            let skip = (head.sequence_number + 1 - first).max(0) as usize;
            for (i, leaf) in leaves.iter().enumerate().skip(skip) {
                head.push_leaf(first + i as i64, leaf);
                folded += 1;
            }
        }
        folded
    }
}

impl LeafListener for Handed {
    fn committed_leaves(&self, first: i64, leaves: Vec<Hash>) {
        let mut queue = self.lock();
        queue.leaves += leaves.len();
        queue.runs.push_back((first, leaves));
        let mut dropped = 0;
        while queue.runs.len() > 1 && queue.leaves > MAX_LEAVES {
            dropped += queue.pop_front().map_or(0, |(_, l)| l.len());
        }
        if dropped > 0 {
            tracing::debug!(node = %self.node, dropped, "checkpoint writer behind: leaves dropped, their rows will be read back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(first: i64, n: i64) -> (i64, Vec<Hash>) {
        (first, (first..first + n).map(|i| [i as u8; 32]).collect())
    }

    /// The head after folding leaves `0..n` of `leaves(0, n)` one by one.
    fn folded(n: i64) -> Head {
        let mut h = Head::default();
        (0..n).for_each(|i| h.push_leaf(i, &[i as u8; 32]));
        h
    }

    #[test]
    fn only_leaves_that_continue_the_head_are_folded_and_passed_ones_dropped() {
        let handed = Handed::new("n");
        let (f, l) = leaves(10, 10);
        handed.committed_leaves(f, l);
        // Rows 5..=9 were never handed over: nothing is folded until they are read back.
        let mut head = folded(5);
        assert_eq!(handed.fold_into(&mut head), 0);
        assert_eq!(head, folded(5));
        // Read back through row 12 meanwhile: the run goes on from 13.
        let mut head = folded(13);
        assert_eq!(handed.fold_into(&mut head), 7);
        assert_eq!(head, folded(20));
        assert!(handed.lock().runs.is_empty());
        // A run the head has passed entirely is dropped, the next one folded.
        let (f, l) = leaves(15, 5);
        handed.committed_leaves(f, l);
        let (f, l) = leaves(20, 3);
        handed.committed_leaves(f, l);
        assert_eq!(handed.fold_into(&mut head), 3);
        assert_eq!(head, folded(23));
    }

    #[test]
    fn at_most_max_leaves_wait_and_the_oldest_go_first() {
        let handed = Handed::new("n");
        let run = 1 << 16;
        for k in 0..5 {
            handed.committed_leaves(k * run, vec![[0; 32]; run as usize]);
        }
        let queue = handed.lock();
        assert_eq!(
            queue.runs.iter().map(|(_, l)| l.len()).sum::<usize>(),
            MAX_LEAVES
        );
        assert_eq!(queue.leaves, MAX_LEAVES);
        assert_eq!(queue.runs.front().map(|(f, _)| *f), Some(run));
    }

    #[test]
    fn a_text_fold_head_takes_no_leaves() {
        let handed = Handed::new("n");
        let (f, l) = leaves(0, 3);
        handed.committed_leaves(f, l);
        let mut head = Head::default().in_fold(Layout::Text);
        assert_eq!(handed.fold_into(&mut head), 0);
        assert_eq!(head.sequence_number, -1);
    }
}
