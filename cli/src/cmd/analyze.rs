//! `auditseal-db analyze`: the report of docs/HSM-LOGS.md "Analyse", over a raw HSM log
//! (`--file`, read and parsed as auditseal-ship would, with the same redaction, stored
//! nowhere) or over the HSM events stored in the database (`--stored`, narrowed by criteria
//! and source).

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::Value;

use auditseal_core::config::Settings;
use auditseal_core::record::AuditRecord;
use auditseal_core::store::query::{Criterion, Cursor, Order, Query};
use auditseal_ship::analyze::{analyze, render_text};
use auditseal_ship::{Format, Record, Status};

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 the report was written; 1 it could not be made.")]
pub struct Args {
    /// The log file to analyse.
    #[arg(
        long,
        value_name = "LOG",
        conflicts_with = "stored",
        required_unless_present = "stored"
    )]
    pub file: Option<PathBuf>,
    /// Its format (as in auditseal-ship's configuration).
    #[arg(long, default_value = "pkcs11-spy")]
    format: String,
    /// Analyse the HSM events stored in the database (service HSM) instead of a file.
    #[arg(long)]
    pub stored: bool,
    /// With --stored: only rows matching `<field> <OP> <value>` (as the API's criteria, e.g.
    /// "timeStamp GE 2026-12-01"); repeatable, ANDed.
    #[arg(long = "criteria", value_name = "CRITERION", requires = "stored")]
    criteria: Vec<String>,
    /// With --stored: only the events of this auditseal-ship source.
    #[arg(long, requires = "stored")]
    source: Option<String>,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
}

/// `--file`: needs no configuration or database.
pub fn run_file(args: Args) -> anyhow::Result<u8> {
    let Some(format) = Format::parse(&args.format) else {
        bail!("unknown format {:?}", args.format);
    };
    let Some(file) = &args.file else {
        bail!("--file or --stored is needed");
    };
    let data = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    print(&auditseal_ship::parse_all(&data, format), args.json)
}

/// `--stored`: the rows of service HSM, oldest first, as records.
pub async fn run_stored(settings: &Settings, args: Args) -> anyhow::Result<u8> {
    let store = auditseal_core::store::open_existing(&settings.database_url)
        .await
        .context("cannot open the database")?;
    let mut criteria: Vec<Criterion> = vec!["service EQ HSM".parse()?];
    for c in &args.criteria {
        criteria.push(c.parse().with_context(|| format!("criterion {c:?}"))?);
    }
    if let Some(source) = &args.source {
        criteria.push(format!("authToken LIKE {}@%", like_escape(source)).parse()?);
    }
    let mut records = Vec::new();
    let mut after = None;
    let mut last_file: Option<(String, String)> = None;
    let mut last_counter: Option<i64> = None;
    loop {
        let page = store
            .query(&Query {
                criteria: criteria.clone(),
                limit: 10_000,
                order: Order::Asc,
                after: after.take(),
            })
            .await
            .context("cannot read the events")?;
        let Some(last) = page.rows.last() else {
            break;
        };
        after = Some(Cursor::after(Order::Asc, last));
        for row in &page.rows {
            let (record, file) = to_record(row);
            // A new file, or a call counter that went back (pkcs11-spy: a new process), starts
            // the session bookkeeping again, as the banner does in the file.
            let counter = record
                .counter
                .as_deref()
                .and_then(|c| c.parse::<i64>().ok());
            let mut record = record;
            record.new_run = last_file.as_ref() != Some(&file)
                || matches!((last_counter, counter), (Some(a), Some(b)) if b <= a);
            last_file = Some(file);
            last_counter = counter;
            records.push(record);
        }
    }
    print(&records, args.json)
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// A stored event as the record it was made from (docs/HSM-LOGS.md "Mapping"), and the
/// (source, file id) it came from.
fn to_record(row: &AuditRecord) -> (Record, (String, String)) {
    let details: serde_json::Map<String, Value> = row
        .additional_details
        .as_deref()
        .and_then(|x| auditseal_core::details::decode(x).ok())
        .map(|d| auditseal_core::details::to_json(&d))
        .unwrap_or_default();
    let text = |k: &str| details.get(k).and_then(Value::as_str).map(str::to_string);
    let mut r = Record::new(
        row.event_type.clone(),
        details.get("offset").and_then(Value::as_u64).unwrap_or(0),
        details.get("line").and_then(Value::as_u64).unwrap_or(0),
    );
    r.status = match row.event_status.as_str() {
        "SUCCESS" => Status::Success,
        "FAILURE" => Status::Failure,
        _ => Status::Void,
    };
    r.rv = row.search_detail2.clone();
    r.session = row.custom_id.clone();
    r.key = row.search_detail1.clone();
    r.time = text("time");
    r.counter = text("counter");
    r.duration_ms = details.get("durationMs").and_then(Value::as_f64);
    if let Some(Value::Object(fields)) = details.get("fields") {
        r.details = fields.clone();
    }
    let file = (
        text("source").unwrap_or_default(),
        text("fileId").unwrap_or_default(),
    );
    (r, file)
}

fn print(records: &[Record], json: bool) -> anyhow::Result<u8> {
    let report = analyze(records);
    if json {
        crate::out::write(format_args!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        crate::out::write(format_args!("{}", render_text(&report)))?;
    }
    Ok(0)
}
