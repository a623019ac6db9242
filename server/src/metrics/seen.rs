//! The checkpoints the metrics scrape has verified or refused, so that each is verified once
//! (`Metrics::checkpoint_ages`).

use std::collections::{HashMap, HashSet};

use auditseal_core::checkpoint::Checkpoint;

/// Most refused checkpoints remembered: whoever writes them must not grow this server's memory
/// without bound. Beyond it the set starts again (and those refused before alert again).
const MAX_REFUSED: usize = 1000;

#[derive(Default)]
pub(super) struct CheckpointsSeen {
    /// Each node's checkpoints that verified at the last scrape at which any of its newest did.
    verified: HashMap<String, Vec<Checkpoint>>,
    /// Checkpoints that did not verify.
    refused: HashSet<String>,
}

/// What tells a checkpoint from any other: every column.
fn identity(c: &Checkpoint) -> String {
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n{}",
        c.node_id,
        c.sequence_number,
        c.time_stamp,
        c.head_hash,
        c.kind,
        c.key_id,
        c.statement_protection
    )
}

impl CheckpointsSeen {
    /// Of `newest` (a node's newest checkpoints in the database), those that verify, checked
    /// with `check` unless verified or refused before; `refused` is told of each newly refused.
    /// When none verifies: the node's checkpoints that verified before (none if it had none).
    pub(super) fn verify(
        &mut self,
        node: &str,
        newest: &[&Checkpoint],
        check: impl Fn(&Checkpoint) -> Result<(), String>,
        refused: impl Fn(&Checkpoint, &str),
    ) -> &[Checkpoint] {
        let before = self.verified.get(node).map_or(&[][..], Vec::as_slice);
        let mut good = Vec::new();
        for &c in newest {
            if before.contains(c) {
                good.push(c.clone());
                continue;
            }
            let id = identity(c);
            if self.refused.contains(&id) {
                continue;
            }
            match check(c) {
                Ok(()) => good.push(c.clone()),
                Err(reason) => {
                    if self.refused.len() >= MAX_REFUSED {
                        self.refused.clear();
                    }
                    self.refused.insert(id);
                    refused(c, &reason);
                }
            }
        }
        if !good.is_empty() {
            self.verified.insert(node.to_string(), good);
        }
        self.verified.get(node).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn checkpoint(seq: i64, time: i64, protection: &str) -> Checkpoint {
        Checkpoint {
            node_id: "n1".into(),
            sequence_number: seq,
            time_stamp: time,
            head_hash: "00".repeat(32),
            kind: "checkpoint".into(),
            key_id: 1,
            statement_protection: protection.into(),
        }
    }

    #[test]
    fn verifies_each_checkpoint_once_and_keeps_the_last_good_ones_over_forged_ones() {
        let mut seen = CheckpointsSeen::default();
        let (checks, alerts) = (Cell::new(0), Cell::new(0));
        let check = |c: &Checkpoint| {
            checks.set(checks.get() + 1);
            if c.statement_protection == "good" {
                Ok(())
            } else {
                Err("does not verify".to_string())
            }
        };
        let alert = |_: &Checkpoint, _: &str| alerts.set(alerts.get() + 1);
        let genuine = checkpoint(10, 1_000, "good");
        let times = |v: &[Checkpoint]| v.iter().map(|c| c.time_stamp).collect::<Vec<_>>();
        assert_eq!(times(seen.verify("n1", &[&genuine], check, alert)), [1_000]);
        assert_eq!(times(seen.verify("n1", &[&genuine], check, alert)), [1_000]);
        assert_eq!((checks.get(), alerts.get()), (1, 0), "verified once");
        // A forged newer checkpoint: refused once, and the genuine one's time stays.
        let forged = checkpoint(20, 9_000, "forged");
        for _ in 0..3 {
            assert_eq!(times(seen.verify("n1", &[&forged], check, alert)), [1_000]);
        }
        assert_eq!(
            (checks.get(), alerts.get()),
            (2, 1),
            "refused once, alerted once"
        );
        // A genuine newer one replaces it; a node never verified has nothing.
        let next = checkpoint(30, 5_000, "good");
        assert_eq!(times(seen.verify("n1", &[&next], check, alert)), [5_000]);
        assert!(seen.verify("n2", &[&forged], check, alert).is_empty());
    }
}
