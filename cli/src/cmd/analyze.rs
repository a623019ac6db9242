//! `auditseal-db analyze --file LOG`: the report of docs/HSM-LOGS.md "Analyse" over a raw HSM
//! log, read and parsed as auditseal-ship would (the same redaction), without storing it.

use std::path::PathBuf;

use anyhow::{Context, bail};

use auditseal_ship::Format;
use auditseal_ship::analyze::{analyze, render_text};

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 the report was written; 1 the file could not be read.")]
pub struct Args {
    /// The log file to analyse.
    #[arg(long, value_name = "LOG")]
    file: PathBuf,
    /// Its format (as in auditseal-ship's configuration).
    #[arg(long, default_value = "pkcs11-spy")]
    format: String,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let Some(format) = Format::parse(&args.format) else {
        bail!("unknown format {:?}", args.format);
    };
    let data = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let report = analyze(&auditseal_ship::parse_all(&data, format));
    if args.json {
        crate::out::write(format_args!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        crate::out::write(format_args!("{}", render_text(&report)))?;
    }
    Ok(0)
}
