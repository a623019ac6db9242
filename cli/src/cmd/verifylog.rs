//! `auditseal-db verifylog --all | --node NAME[:OFFSET]... [--checkpoint FILE]`, CESeCore's
//! database CLI command of the same name (docs/OPERATIONS.md "The database CLI").

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use auditseal_core::checkpoint;
use auditseal_core::config::Settings;
use auditseal_core::store;
use auditseal_core::verify::{Selection, Silent, VerifyOptions, parse_node_arg, verify_log};

use crate::out::{out, outln};

#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("which").required(true).args(["all", "node"])),
    after_help = "Exit status: 0 every row verified; 254 warnings only (no error); 255 errors \
                  found (a row, hole, duplicate, statement or checkpoint); 1 the check could not \
                  run; 141 standard output was closed."
)]
pub struct Args {
    /// Verify every node, each from where its log starts (after its archive marker).
    #[arg(long, conflicts_with = "node")]
    all: bool,
    /// Verify the named node (from OFFSET if given); repeatable.
    #[arg(long, value_name = "NAME[:OFFSET]", value_parser = parse_node_arg)]
    node: Vec<(String, Option<i64>)>,
    /// Checkpoints saved outside the database (`checkpoint export`, the server's checkpoint
    /// file, or a syslog receiver's file): prove the log still holds everything each one
    /// covered.
    #[arg(long, value_name = "FILE")]
    checkpoint: Vec<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress display on stderr.
    #[arg(long)]
    quiet: bool,
}

pub async fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let mut external: HashMap<String, Vec<checkpoint::Checkpoint>> = HashMap::new();
    for path in &args.checkpoint {
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot read the checkpoint file {}", path.display()))?;
        let mut found = 0;
        let other = checkpoint::read_log(std::io::BufReader::new(f), |_, c| {
            found += 1;
            external.entry(c.node_id.clone()).or_default().push(c);
        })
        .map_err(|e| anyhow::anyhow!("checkpoint file {}: {e}", path.display()))?;
        if found == 0 {
            anyhow::bail!("checkpoint file {} holds no checkpoint", path.display());
        }
        if other > 0 && !args.quiet {
            eprintln!(
                "checkpoint file {}: {found} checkpoints; {other} lines without one skipped",
                path.display()
            );
        }
    }
    // The database first, as the server does: a log that cannot be read is the first thing to
    // say.
    let redacted = store::redact_url(&settings.database_url);
    let store = open(&settings.database_url, args.quiet)
        .await
        .with_context(|| format!("cannot open the database {redacted}"))?;
    let keys = super::load_keys(settings).await?;
    let selection = if args.all {
        Selection::All
    } else {
        Selection::Nodes(args.node)
    };
    let opts = VerifyOptions {
        external: Arc::new(external),
        progress: if args.quiet {
            Arc::new(Silent)
        } else {
            Arc::new(crate::progress::Bar::stderr())
        },
        ..Default::default()
    };
    let report = verify_log(&store, &Arc::new(keys.ring), &selection, &opts)
        .await
        .with_context(|| format!("reading {redacted} failed"))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        out!("{report}")?;
    }
    Ok(report.exit_code() as u8)
}

/// The database to verify. PostgreSQL is read through read-only sessions (verifylog writes
/// nothing, and so runs on a hot standby too), with reads the standby cancels tried again;
/// on a standby, how far its replay is behind is said first (rows committed on the primary
/// since then are not in this check).
async fn open(url: &str, quiet: bool) -> anyhow::Result<store::SharedStore> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok(store::open_existing(url).await?);
    }
    let db = store::ReadOnlyStore::open(url)?;
    let replay = db.probe().await.map_err(|e| match e {
        // The caller names the database already.
        store::StoreError::ReadUnavailable(m) => {
            let prefix = format!("{}: ", store::redact_url(url));
            anyhow::anyhow!("{}", m.strip_prefix(&prefix).unwrap_or(&m))
        }
        other => other.into(),
    })?;
    if replay.standby && !quiet {
        eprintln!(
            "reading a standby (in recovery), its replay {:.1} s behind the primary",
            replay.lag_seconds
        );
    }
    Ok(Arc::new(db))
}
