//! `auditseal-db keys list | test | export`: the configured keys, a signing self-test of each
//! (as CESeCore's crypto token test does), and a key's public part as PEM.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};

use auditseal_core::config::{KeySetup, Settings};

use crate::out::{out, outln};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Every configured key: keyid, algorithm, where it lives, whether it signs new rows.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign a probe with every key that can sign and verify it; exit 1 if any key fails.
    Test,
    /// Print (or write) a key's public key as PEM.
    Export {
        /// The key's keyid (as `keys list` shows it and rows name it).
        #[arg(long)]
        keyid: i32,
        /// Write to FILE instead of standard output. An existing file is not overwritten.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Overwrite the file `--out` names if it exists.
        #[arg(long, requires = "out")]
        force: bool,
    },
}

pub async fn run(settings: &Settings, command: Command) -> anyhow::Result<u8> {
    let setup = super::load_keys(settings).await?;
    match command {
        Command::List { json } => list(&setup, json),
        Command::Test => test(&setup).await,
        Command::Export { keyid, out, force } => export(&setup, keyid, out, force),
    }
}

fn list(setup: &KeySetup, json: bool) -> anyhow::Result<u8> {
    if json {
        outln!("{}", serde_json::to_string_pretty(&setup.listing)?)?;
    } else {
        outln!(
            "{:<8} {:<8} {:<16} {:<9} SOURCE",
            "KEYID",
            "CURRENT",
            "ALGORITHM",
            "CAN SIGN"
        )?;
        for k in &setup.listing {
            outln!(
                "{:<8} {:<8} {:<16} {:<9} {}",
                k.keyid,
                if k.current { "yes" } else { "" },
                k.algorithm.name(),
                if k.can_sign { "yes" } else { "no" },
                k.source
            )?;
        }
    }
    Ok(0)
}

/// Signs a probe with every key that can sign and verifies it with the key ring.
async fn test(setup: &KeySetup) -> anyhow::Result<u8> {
    let signers = setup.signers.clone();
    let ring = setup.ring.clone();
    let results = tokio::task::spawn_blocking(move || {
        let probe = format!("auditseal key test {}", auditseal_core::time::now_millis());
        signers
            .iter()
            .map(|t| {
                let outcome = t
                    .sign(probe.as_bytes())
                    .map_err(|e| e.to_string())
                    .and_then(|sig| match ring.get(t.keyid()) {
                        Some(k) => k.verify(probe.as_bytes(), &sig).map_err(|e| e.to_string()),
                        None => Err("no verification key".into()),
                    });
                (t.keyid(), t.describe(), outcome)
            })
            .collect::<Vec<_>>()
    })
    .await?;
    let mut failed = 0;
    for (keyid, source, outcome) in results {
        match outcome {
            Ok(()) => outln!("keyid {keyid}: OK (signed and verified a probe) - {source}")?,
            Err(e) => {
                failed += 1;
                outln!("keyid {keyid}: FAILED: {e}")?;
            }
        }
    }
    for k in setup.listing.iter().filter(|k| !k.can_sign) {
        outln!("keyid {}: verify only, not tested - {}", k.keyid, k.source)?;
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

fn export(setup: &KeySetup, keyid: i32, out: Option<PathBuf>, force: bool) -> anyhow::Result<u8> {
    let Some(key) = setup.ring.get(keyid) else {
        bail!("no key with keyid {keyid} is configured");
    };
    let Some(pem) = key.public_key_pem() else {
        bail!("keyid {keyid} is an HMAC key: it has no public part");
    };
    match out {
        Some(path) => crate::out::create_file(&path, force)?
            .write_all(pem.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => out!("{pem}")?,
    }
    Ok(0)
}
