//! `auditseal-db verify-export DIR`: checks an archive segment offline, with the configured keys
//! (public keys are enough for signatures; see `keys export`).

use std::path::PathBuf;

use anyhow::Context;

use auditseal_core::archive;
use auditseal_core::config::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory `archive --out` wrote.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let keys = super::load_keys(settings).await?;
    let dir = args.dir.clone();
    let rep = tokio::task::spawn_blocking(move || archive::verify_segment(&dir, &keys.ring))
        .await?
        .with_context(|| format!("cannot check the segment in {}", args.dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        for n in &rep.nodes {
            println!(
                "Node {}: rows {}..{} ({} rows), archive marker keyid {}",
                n.node_id, n.first_sequence, n.last_sequence, n.rows, n.marker.key_id
            );
        }
        for e in &rep.errors {
            println!("  ERROR {e}");
        }
        println!(
            "Summary: {} nodes, {} rows, signed by keyid {}, {} errors",
            rep.nodes.len(),
            rep.rows,
            rep.signed_by,
            rep.errors.len()
        );
    }
    Ok(if rep.errors.is_empty() {
        0
    } else {
        auditseal_core::verify::EXIT_ERRORS as u8
    })
}
