//! The checkpoints the metrics scrape has verified or refused, so that each is verified once
//! (`Metrics::checkpoint_ages`).

use std::collections::{BTreeMap, HashSet};

use auditseal_core::checkpoint::Checkpoint;

/// Most refused checkpoints remembered: whoever writes them must not grow this server's memory
/// without bound. Beyond it the set starts again (and those refused before alert again). Each
/// is remembered by a digest of 32 bytes, whatever the size of the row.
const MAX_REFUSED: usize = 1000;

/// What tells a checkpoint from any other: SHA-256 of all its columns (its checkpoint-file
/// line).
fn digest(c: &Checkpoint) -> [u8; 32] {
    <sha2::Sha256 as sha2::Digest>::digest(c.to_json_line().as_bytes()).into()
}

#[derive(Default)]
pub(super) struct CheckpointsSeen {
    /// Each node's checkpoints that verified at the last scrape at which any of its newest did.
    /// Only checkpoints that verify make an entry, so only keys' holders add nodes.
    verified: BTreeMap<String, Vec<Checkpoint>>,
    /// Checkpoints that did not verify (`digest`).
    refused: HashSet<[u8; 32]>,
}

impl CheckpointsSeen {
    /// The time of each node's newest checkpoint that verifies, by node: of `checkpoints` (each
    /// node's newest in the database, as `Store::latest_checkpoints` reads them), or, for a node
    /// none of whose newest verifies or whose checkpoints are no longer in the database, of
    /// those this server verified before. Deleting a node's checkpoints must not make its age
    /// vanish (an absent series fires no alert); nodes it never verified have none.
    pub(super) fn newest_verified(
        &mut self,
        checkpoints: &[Checkpoint],
        check: impl Fn(&Checkpoint) -> Result<(), String>,
        refused: impl Fn(&Checkpoint, &str),
    ) -> Vec<(String, i64)> {
        let mut by_node: BTreeMap<&str, Vec<&Checkpoint>> = BTreeMap::new();
        for c in checkpoints {
            by_node.entry(&c.node_id).or_default().push(c);
        }
        for (node, newest) in by_node {
            self.verify(node, &newest, &check, &refused);
        }
        // Several checkpoints may share a node's highest sequence number: the newest counts.
        (self.verified.iter())
            .filter_map(|(node, cs)| Some((node.clone(), cs.iter().map(|c| c.time_stamp).max()?)))
            .collect()
    }

    /// Of `newest` (a node's newest checkpoints in the database), those that verify, checked
    /// with `check` unless verified or refused before; `refused` is told of each newly refused.
    /// When none verifies: the node's checkpoints that verified before (none if it had none).
    fn verify(
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
            let id = digest(c);
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

    #[test]
    fn a_node_whose_checkpoints_are_deleted_keeps_its_last_verified_age() {
        let mut seen = CheckpointsSeen::default();
        let check = |c: &Checkpoint| match c.statement_protection.as_str() {
            "good" => Ok(()),
            _ => Err("does not verify".to_string()),
        };
        let mut other = checkpoint(7, 3_000, "good");
        other.node_id = "n2".into();
        let both = [checkpoint(10, 1_000, "good"), other];
        let ages = seen.newest_verified(&both, check, |_, _| {});
        assert_eq!(ages, [("n1".to_string(), 1_000), ("n2".to_string(), 3_000)]);
        // n1's checkpoints deleted, a forged one for a node never seen: n1 keeps its time.
        let mut ghost = checkpoint(99, 9_000, "forged");
        ghost.node_id = "ghost".into();
        let ages = seen.newest_verified(&[both[1].clone(), ghost], check, |_, _| {});
        assert_eq!(ages, [("n1".to_string(), 1_000), ("n2".to_string(), 3_000)]);
    }
}
