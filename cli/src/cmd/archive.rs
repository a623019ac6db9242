//! `auditseal-db archive --before TIME --out DIR`: exports the verified rows of every node up to
//! a time as a signed segment, then deletes them, leaving an archive marker per node so that
//! `verifylog` continues after it with no gap. Logged as LOG_EXPORT and LOG_DELETE events
//! (docs/OPERATIONS.md "Archiving", docs/FORMAT.md section 8).

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use auditseal_core::archive;
use auditseal_core::config::Settings;
use auditseal_core::store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Archive rows with a timeStamp before this: ISO-8601 (2026-01-01T00:00:00Z) or epoch ms.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    before: i64,
    /// A new (or empty) directory for segment.ndjson and segment.ndjson.sig.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Node id under which this command logs its LOG_EXPORT and LOG_DELETE events
    /// [default: the configured node id with "-db" appended, so a running server keeps its own].
    #[arg(long, value_name = "ID")]
    event_node: Option<String>,
    /// Write and sign the segment but delete nothing (and log only LOG_EXPORT).
    #[arg(long)]
    export_only: bool,
}

/// ISO-8601 (as the API accepts) or epoch milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .ok()
        .or_else(|| auditseal_core::time::parse_iso8601_millis(s))
        .ok_or_else(|| format!("{s:?} is neither ISO-8601 (2026-01-01T00:00:00Z) nor epoch ms"))
}

pub async fn run(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let now = auditseal_core::time::now_millis();
    if args.before > now {
        bail!("--before is in the future: only rows already written can be archived");
    }
    let keys = super::load_keys(settings).await?;
    let Some(token) = keys.current.clone() else {
        bail!(
            "archiving signs the segment, the archive markers and its own events: it needs the \
             key that signs new rows (protection.enable_sign and a key with its private part)"
        );
    };
    let redacted = store::redact_url(&settings.database_url);
    let store = store::open_existing(&settings.database_url)
        .await
        .with_context(|| format!("cannot open the database {redacted}"))?;
    store.migrate().await.context("cannot upgrade the schema")?;
    // A key other than the one its keyid protected with would sign what nothing verifies.
    auditseal_core::keycheck::check(store.as_ref(), &keys).await?;
    let event_node = args
        .event_node
        .clone()
        .unwrap_or_else(|| format!("{}-db", settings.node_id));
    if let Some(warning) = keys.check_writer(&event_node)? {
        eprintln!("warning: {warning}");
    }
    // Take the events node first: if it is busy, nothing has been written yet.
    let device = super::EventLog::open(settings, &store, token.clone(), event_node).await?;

    let written = archive::write_segment(
        store.as_ref(),
        &keys.ring,
        token.as_ref(),
        args.before,
        &args.out,
    )
    .await?;
    if written.nodes.is_empty() {
        eprintln!(
            "no rows before {}: nothing to archive",
            auditseal_core::time::format_iso8601(args.before)
        );
        let _ = std::fs::remove_dir_all(&args.out);
        return Ok(0);
    }
    let details = export_details(&args, &written);
    device.log("LOG_EXPORT", true, &details).await?;
    report_written(&args, &written);
    if args.export_only {
        return Ok(0);
    }
    delete_archived(store.as_ref(), &device, &written, details).await
}

/// The LOG_EXPORT event's details: the segment, its hash, the cut-off and each node's range.
fn export_details(args: &Args, written: &archive::Written) -> Map<String, Value> {
    let ranges: Map<String, Value> = written
        .nodes
        .iter()
        .map(|n| {
            (
                n.node_id.clone(),
                json!(format!("{}..{}", n.first_sequence, n.last_sequence)),
            )
        })
        .collect();
    let mut details = Map::new();
    details.insert(
        "segment".into(),
        json!(args.out.join(archive::SEGMENT_FILE).display().to_string()),
    );
    details.insert("sha256".into(), json!(written.sha256));
    details.insert(
        "before".into(),
        json!(auditseal_core::time::format_iso8601(args.before)),
    );
    details.insert("nodes".into(), Value::Object(ranges));
    details
}

fn report_written(args: &Args, written: &archive::Written) {
    for n in &written.nodes {
        eprintln!(
            "exported node {} rows {}..{} ({} rows)",
            n.node_id, n.first_sequence, n.last_sequence, n.rows
        );
    }
    eprintln!(
        "wrote {} ({} bytes, sha256 {}) and {}",
        args.out.join(archive::SEGMENT_FILE).display(),
        written.bytes,
        written.sha256,
        archive::SIGNATURE_FILE
    );
}

/// Deletes what the segment holds (node by node, or on a partitioned table at once, dropping
/// whole partitions), and logs it as LOG_DELETE (as FAILURE, with what was deleted, when it
/// failed part way).
async fn delete_archived(
    store: &dyn auditseal_core::store::Store,
    device: &super::EventLog,
    written: &archive::Written,
    mut details: Map<String, Value>,
) -> anyhow::Result<u8> {
    let applied = archive::apply(store, written).await;
    let total: u64 = applied.deleted.values().sum();
    details.insert("rowsDeleted".into(), json!(total));
    details.insert(
        "nodesDeleted".into(),
        json!(
            applied
                .deleted
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        ),
    );
    if !applied.dropped.is_empty() {
        let names: Vec<&str> = applied.dropped.iter().map(|p| p.name.as_str()).collect();
        details.insert("partitionsDropped".into(), json!(names.join(",")));
    }
    if let Some(e) = &applied.error {
        details.insert("error".into(), json!(e.to_string()));
    }
    device
        .log("LOG_DELETE", applied.error.is_none(), &details)
        .await?;
    for p in &applied.dropped {
        eprintln!("dropped partition {} ({} archived rows)", p.name, p.rows);
    }
    for note in &applied.notes {
        eprintln!("note: {note}");
    }
    for (node, n) in &applied.deleted {
        eprintln!("deleted {n} archived rows of node {node}");
    }
    match applied.error {
        None => Ok(0),
        Some(e) => Err(e).context(
            "deleting stopped part way: the nodes listed above are archived, the others \
             untouched; the segment is complete, run archive again for the rest",
        ),
    }
}
