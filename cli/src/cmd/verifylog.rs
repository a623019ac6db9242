//! `auditseal-db verifylog --all | --node NAME[:OFFSET]...` (spec section 7).

use anyhow::Context;

use auditseal_core::config::Settings;
use auditseal_core::store;
use auditseal_core::verify::{Selection, parse_node_arg, verify_log};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Verify every node from sequence 0.
    #[arg(long, conflicts_with = "node", required_unless_present = "node")]
    all: bool,
    /// Verify the named node from OFFSET (default 0); repeatable.
    #[arg(long, value_name = "NAME[:OFFSET]", value_parser = parse_node_arg)]
    node: Vec<(String, i64)>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let keys = super::load_keys(settings).await?;
    let redacted = store::redact_url(&settings.database_url);
    let store = store::open(&settings.database_url)
        .await
        .with_context(|| format!("cannot open the database {redacted}"))?;
    let selection = if args.all {
        Selection::All
    } else {
        Selection::Nodes(args.node)
    };
    let report = verify_log(store.as_ref(), &keys.ring, &selection)
        .await
        .with_context(|| format!("reading {redacted} failed"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(report.exit_code() as u8)
}
