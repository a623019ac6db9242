//! `auditseal-db checkpoint export --out FILE | list | verify FILE`: the newest checkpoint of
//! every node, to keep outside the database and give to `verifylog --checkpoint FILE` later; and
//! a check of a checkpoint log on its own (a receiver's file, without the database).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use auditseal_core::checkpoint;
use auditseal_core::config::Settings;
use auditseal_core::store;

use crate::out::{out, outln};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Save the newest checkpoint of every node as JSON lines (docs/FORMAT.md section 7).
    Export {
        /// Where to write ("-" for stdout). An existing file is not overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Overwrite the file `--out` names if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print the newest checkpoint of every node.
    List,
    /// Check a checkpoint log on its own (JSON lines, or a syslog receiver's file): every
    /// signature, and per node a head that only grows. Exit 0 when all is well, 255 otherwise.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The checkpoint log (docs/FORMAT.md section 7.3).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Verify with this public key (PEM) instead of the configured keys; `KEYID=FILE` gives
    /// its keyid. Repeatable.
    #[arg(long = "public-key", value_name = "[KEYID=]FILE")]
    public_keys: Vec<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: &Settings, cmd: Command) -> anyhow::Result<u8> {
    match cmd {
        Command::Verify(args) => verify(settings, args).await,
        cmd => list_or_export(settings, cmd).await,
    }
}

async fn list_or_export(settings: &Settings, cmd: Command) -> anyhow::Result<u8> {
    let redacted = store::redact_url(&settings.database_url);
    let store = store::open_existing(&settings.database_url)
        .await
        .with_context(|| format!("cannot open the database {redacted}"))?;
    let latest = store
        .latest_checkpoints()
        .await
        .with_context(|| format!("reading {redacted} failed"))?;
    match cmd {
        Command::List => {
            if latest.is_empty() {
                outln!("no checkpoints yet")?;
            }
            for c in &latest {
                outln!(
                    "{} sequence {} {} at {} headHash {} keyid {}",
                    c.node_id,
                    c.sequence_number,
                    c.kind,
                    auditseal_core::time::format_iso8601(c.time_stamp),
                    c.head_hash,
                    c.key_id
                )?;
            }
        }
        Command::Export { out, force } => {
            if latest.is_empty() {
                anyhow::bail!(
                    "the database holds no checkpoint yet: the server writes one every \
                     checkpoint.interval_secs (default 60) once its node has rows"
                );
            }
            let text: String = latest
                .iter()
                .map(|c| format!("{}\n", c.to_json_line()))
                .collect();
            if out.as_os_str() == "-" {
                out!("{text}")?;
            } else {
                let mut f = crate::out::create_file(&out, force)?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                eprintln!(
                    "wrote the newest checkpoint of {} node(s) to {}",
                    latest.len(),
                    out.display()
                );
            }
        }
        Command::Verify(_) => {}
    }
    Ok(0)
}

async fn verify(settings: &Settings, args: VerifyArgs) -> anyhow::Result<u8> {
    let open = || {
        std::fs::File::open(&args.file)
            .map(std::io::BufReader::new)
            .with_context(|| format!("cannot read {}", args.file.display()))
    };
    // The keyid a single --public-key stands for: the first checkpoint's.
    let mut first_keyid = None;
    checkpoint::read_log(open()?, |_, c| {
        first_keyid.get_or_insert(c.key_id);
    })
    .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let Some(first_keyid) = first_keyid else {
        anyhow::bail!("{} holds no checkpoint", args.file.display());
    };
    let keys = if args.public_keys.is_empty() {
        super::load_keys(settings).await?.ring
    } else {
        super::verify_export::public_ring(&args.public_keys, Some(first_keyid))?
    };
    let mut check = checkpoint::LogCheck::new(&keys);
    let other = checkpoint::read_log(open()?, |n, c| check.add(n, c))
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let rep = check.finish(other);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&rep)?)?;
    } else {
        outln!(
            "Checkpoint log {}: {} checkpoints, {} other lines skipped",
            args.file.display(),
            rep.checkpoints,
            rep.other_lines
        )?;
        for n in &rep.nodes {
            let keyids: Vec<String> = n.key_ids.iter().map(i32::to_string).collect();
            outln!(
                "  node {}: {} with a valid signature, sequence {} to {}, last headHash {} (line {}), keyid {}",
                n.node_id,
                n.checkpoints,
                n.first_sequence,
                n.last_sequence,
                n.last_head_hash,
                n.last_line,
                keyids.join(",")
            )?;
        }
        for e in &rep.errors {
            outln!(
                "  ERROR line {}: node={} sequenceNumber={}: {}",
                e.line,
                e.node_id,
                e.sequence_number,
                e.reason
            )?;
        }
        outln!(
            "Summary: {} checkpoints of {} nodes, {} errors",
            rep.checkpoints,
            rep.nodes.len(),
            rep.errors.len()
        )?;
    }
    Ok(if rep.errors.is_empty() {
        0
    } else {
        auditseal_core::verify::EXIT_ERRORS as u8
    })
}
