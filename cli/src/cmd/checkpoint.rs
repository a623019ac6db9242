//! `auditseal-db checkpoint export --out FILE | list`: the newest checkpoint of every node, to
//! keep outside the database and give to `verifylog --checkpoint FILE` later.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

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
    },
    /// Print the newest checkpoint of every node.
    List,
}

pub async fn run(settings: &Settings, cmd: Command) -> anyhow::Result<u8> {
    let redacted = store::redact_url(&settings.database_url);
    let store = store::open(&settings.database_url)
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
        Command::Export { out } => {
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
                let mut f = auditseal_core::files::options()
                    .write(true)
                    .create_new(true)
                    .open(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?;
                f.write_all(text.as_bytes())?;
                f.sync_all()?;
                eprintln!(
                    "wrote the newest checkpoint of {} node(s) to {}",
                    latest.len(),
                    out.display()
                );
            }
        }
    }
    Ok(0)
}
