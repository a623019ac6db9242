//! `auditseal-db backup --out FILE`: a consistent copy of the SQLite database, taken while the
//! server runs (docs/OPERATIONS.md "Backup and restore"). PostgreSQL is backed up with its own
//! tools (pg_dump, a base backup). Keys are not in the database: they are backed up apart.

use std::path::PathBuf;

use anyhow::{Context, bail};

use auditseal_core::config::Settings;
use auditseal_core::store::{SqliteStore, redact_url};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 the copy was made and passed SQLite's integrity check; \
                  1 no copy was made."
)]
pub struct Args {
    /// Where to write the copy: a new file (an existing one is never overwritten), mode 0600.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

pub async fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let url = &settings.database_url;
    if !url.starts_with("sqlite:") {
        bail!(
            "auditseal-db backup copies a SQLite database, and {} is not one: back PostgreSQL \
             up with pg_dump or a base backup (docs/OPERATIONS.md \"Backup and restore\")",
            redact_url(url)
        );
    }
    if args.out.exists() {
        bail!(
            "{} exists: backup never overwrites a file",
            args.out.display()
        );
    }
    let store = SqliteStore::open(url, false)
        .await
        .context("cannot open the database")?;
    store
        .backup_into(&args.out)
        .await
        .with_context(|| format!("cannot copy the database into {}", args.out.display()))?;
    store.close().await;
    let copy_url = format!("sqlite://{}", args.out.display());
    let copy = SqliteStore::open(&copy_url, false)
        .await
        .context("cannot open the copy")?;
    let checked = copy.integrity_check().await;
    copy.close().await;
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&args.out);
        bail!("the copy failed SQLite's integrity check and was removed: {e}");
    }
    let bytes = std::fs::metadata(&args.out)?.len();
    println!(
        "backed up {} to {} ({bytes} bytes; integrity check ok); back up the keys apart \
         (docs/OPERATIONS.md \"Backup and restore\")",
        redact_url(url),
        args.out.display()
    );
    Ok(0)
}
