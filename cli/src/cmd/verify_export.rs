//! `auditseal-db verify-export PATH`: checks offline an export file (`GET /api/v1/export`:
//! .ndjson, .csv or .tsv; docs/FORMAT.md section 9) or an archive segment directory (section 8),
//! with the configured keys or with public keys given on the command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use auditseal_core::archive;
use auditseal_core::config::Settings;
use auditseal_core::export;
use auditseal_core::keys::{KeyRing, VerifyKey};
use auditseal_core::protection::RowProtection;

use crate::out::outln;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An export file (.ndjson, .csv, .tsv) or the directory `archive --out` wrote.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// The signature of a CSV or TSV export [default: PATH.sig].
    #[arg(long, value_name = "FILE")]
    sig: Option<PathBuf>,
    /// Verify with this public key (PEM: PUBLIC KEY or CERTIFICATE) instead of the configured
    /// keys. `KEYID=FILE` gives its keyid; one key given without a keyid takes the keyid the
    /// signature names. Repeatable.
    #[arg(long = "public-key", value_name = "[KEYID=]FILE")]
    public_keys: Vec<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// The keys from `--public-key`; `signature_keyid` is the keyid for a key given without one.
pub(crate) fn public_ring(
    given: &[String],
    signature_keyid: Option<i32>,
) -> anyhow::Result<KeyRing> {
    let mut ring = KeyRing::new();
    for g in given {
        let (keyid, file) = match g.split_once('=') {
            Some((k, f)) if k.parse::<i32>().is_ok() => (k.parse::<i32>().ok(), f),
            _ => (None, g.as_str()),
        };
        let keyid = match keyid {
            Some(k) => k,
            None if given.len() == 1 => signature_keyid.with_context(|| {
                format!(
                    "--public-key {g}: the signature names no readable keyid; give KEYID={file}"
                )
            })?,
            None => bail!("--public-key {g}: with several keys, give each as KEYID=FILE"),
        };
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
        let key = VerifyKey::from_public_pem(&text, None)
            .map_err(|e| anyhow::anyhow!("--public-key {file}: {e}"))?;
        ring.insert(keyid, key);
    }
    Ok(ring)
}

async fn ring(
    settings: &Settings,
    args: &Args,
    signature_keyid: Option<i32>,
) -> anyhow::Result<KeyRing> {
    if args.public_keys.is_empty() {
        Ok(super::load_keys(settings).await?.ring)
    } else {
        public_ring(&args.public_keys, signature_keyid)
    }
}

pub async fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    if args.path.is_dir() {
        return segment(settings, args).await;
    }
    let (path, sig) = (args.path.clone(), args.sig.clone());
    let loaded = tokio::task::spawn_blocking(move || export::load(&path, sig.as_deref()))
        .await?
        .with_context(|| format!("cannot read the export {}", args.path.display()))?;
    let keys = ring(settings, &args, loaded.signature_keyid()).await?;
    let rep = tokio::task::spawn_blocking(move || export::verify(&loaded, &keys))
        .await?
        .with_context(|| format!("cannot read the export {}", args.path.display()))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&rep)?)?;
    } else {
        let signed_by = rep
            .signed_by
            .map_or_else(|| "unreadable".to_string(), |k| format!("keyid {k}"));
        outln!(
            "Export {} ({}): signature {signed_by}: {}",
            args.path.display(),
            rep.format,
            if rep.signature_valid {
                "valid"
            } else {
                "NOT VALID"
            }
        )?;
        match &rep.request {
            Some(r) => {
                let under = if rep.signature_valid {
                    "signed"
                } else {
                    "NOT under a valid signature"
                };
                outln!(
                    "  Request ({under}): made by node {} at {} ({} ms); format {}; criteria: {}; \
                     limit: {}",
                    r.node_id,
                    auditseal_core::time::format_iso8601(r.created_at),
                    r.created_at,
                    r.format,
                    r.criteria_text(),
                    r.limit
                        .map_or_else(|| "none".to_string(), |l| l.to_string())
                )?;
            }
            None if rep.version == 1 => outln!(
                "  NOTE an export of version 1: it has no request line, so its criteria, limit \
                 and time are not under its signature"
            )?,
            None => {}
        }
        for n in &rep.notes {
            outln!("  NOTE {n}")?;
        }
        for e in &rep.errors {
            outln!("  ERROR {e}")?;
        }
        outln!(
            "Summary: {} rows, {} verified, {} not checkable offline, {} errors",
            rep.rows,
            rep.rows_verified,
            rep.rows_not_checkable,
            rep.error_count
        )?;
    }
    Ok(if rep.error_count == 0 {
        0
    } else {
        auditseal_core::verify::EXIT_ERRORS as u8
    })
}

/// The keyid of an archive segment's signature, if it can be read.
fn segment_keyid(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join(archive::SIGNATURE_FILE)).ok()?;
    RowProtection::parse(text.trim()).ok().map(|p| p.keyid)
}

async fn segment(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    if args.sig.is_some() {
        bail!("--sig applies to CSV and TSV exports, not to an archive directory");
    }
    let keys = ring(settings, &args, segment_keyid(&args.path)).await?;
    let dir = args.path.clone();
    let rep = tokio::task::spawn_blocking(move || archive::verify_segment(&dir, &keys))
        .await?
        .with_context(|| format!("cannot check the segment in {}", args.path.display()))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&rep)?)?;
    } else {
        for n in &rep.nodes {
            outln!(
                "Node {}: rows {}..{} ({} rows), archive marker keyid {}",
                n.node_id,
                n.first_sequence,
                n.last_sequence,
                n.rows,
                n.marker.key_id
            )?;
        }
        for e in &rep.errors {
            outln!("  ERROR {e}")?;
        }
        outln!(
            "Summary: {} nodes, {} rows, signed by keyid {}, {} errors",
            rep.nodes.len(),
            rep.rows,
            rep.signed_by,
            rep.errors.len()
        )?;
    }
    Ok(if rep.errors.is_empty() {
        0
    } else {
        auditseal_core::verify::EXIT_ERRORS as u8
    })
}
