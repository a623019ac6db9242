//! A PostgreSQL primary with a synchronous streaming-replication standby, from
//! `scripts/pg-ha` (docs/HA.md), for the tests that need one (failover, standby reads).

use std::collections::HashMap;
use std::process::Command;

use crate::workspace_root;

/// A primary + synchronous standby started by `scripts/pg-ha start`, stopped and removed on drop.
pub struct Pair {
    pub dir: String,
    pub primary_url: String,
    pub standby_url: String,
}

impl Pair {
    pub fn start() -> Pair {
        let out = pg_ha(&["start"]);
        let vars: HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
        let var = |k: &str| {
            vars.get(k)
                .unwrap_or_else(|| panic!("scripts/pg-ha start printed no {k}: {out}"))
                .to_string()
        };
        Pair {
            dir: var("PG_HA_DIR"),
            primary_url: var("PG_HA_PRIMARY_URL"),
            standby_url: var("PG_HA_STANDBY_URL"),
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new(workspace_root().join("scripts/pg-ha"))
            .args(["stop", &self.dir])
            .status();
    }
}

/// Runs scripts/pg-ha; its stdout, or a panic with what it said (e.g. that the PostgreSQL
/// binaries are missing: the test needs them, as scripts/test installs them, and never skips).
pub fn pg_ha(args: &[&str]) -> String {
    let out = Command::new(workspace_root().join("scripts/pg-ha"))
        .args(args)
        .output()
        .expect("cannot run scripts/pg-ha");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/pg-ha {args:?} failed:\n{stderr}"
    );
    eprint!("{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
