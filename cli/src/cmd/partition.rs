//! `auditseal-db partition setup|create|list`: AuditRecordData partitioned by time on PostgreSQL
//! (docs/OPERATIONS.md "Partitioning"), so that `archive` drops whole partitions instead of
//! deleting rows one by one.

use anyhow::{Context, bail};

use auditseal_core::config::Settings;
use auditseal_core::store::partition::{Interval, Made};
use auditseal_core::store::{self, PgStore, Store};
use auditseal_core::time::{format_iso8601, now_millis};

use crate::out::outln;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Turn AuditRecordData into a table partitioned by time (its rows stay, as one partition),
    /// with a DEFAULT partition, and make the partitions of now and the next ones.
    Setup {
        /// How long each partition covers, in UTC.
        #[arg(long, value_parser = ["day", "month"])]
        interval: String,
        /// How many periods after the current one `partition create` keeps made.
        #[arg(long, default_value_t = 3)]
        ahead: i32,
    },
    /// Make the partitions of the current period and of the next ones that do not exist yet
    /// (run it daily from cron), or one partition for a range of your choice.
    Create {
        /// Periods after the current one [default: setup's --ahead].
        #[arg(long, conflicts_with_all = ["from", "to"])]
        ahead: Option<i32>,
        /// Start of a range (ISO-8601 or epoch ms), with --to.
        #[arg(long, requires = "to", value_parser = super::archive::parse_time)]
        from: Option<i64>,
        /// End of the range (exclusive).
        #[arg(long, requires = "from", value_parser = super::archive::parse_time)]
        to: Option<i64>,
    },
    /// List the partitions, their ranges and PostgreSQL's estimate of their rows.
    List,
}

async fn open(settings: &Settings) -> anyhow::Result<PgStore> {
    let url = &settings.database_url;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("partitions are a PostgreSQL feature: give a postgres:// --database-url");
    }
    let store = PgStore::connect(url)
        .await
        .with_context(|| format!("cannot open the database {}", store::redact_url(url)))?;
    store
        .migrate()
        .await
        .context("cannot create or upgrade the schema")?;
    Ok(store)
}

pub async fn run(settings: &Settings, cmd: Command) -> anyhow::Result<u8> {
    let store = open(settings).await?;
    let now = now_millis();
    match cmd {
        Command::Setup { interval, ahead } => {
            let interval = Interval::parse(&interval).context("interval")?;
            let made = store.partition_setup(interval, ahead, now).await?;
            if made.legacy_rows {
                outln!(
                    "the rows already there are now the partition auditrecorddata_before; \
                     archive drops it once every one of them is archived"
                )?;
            }
            report(&made)?;
        }
        Command::Create {
            from: Some(from),
            to: Some(to),
            ..
        } => {
            let name = store.partition_create_range(from, to).await?;
            outln!("created {name}")?;
        }
        Command::Create { ahead, .. } => {
            let made = store.partition_create_ahead(ahead, now).await?;
            report(&made)?;
        }
        Command::List => list(&store).await?,
    }
    Ok(0)
}

fn report(made: &Made) -> anyhow::Result<()> {
    for name in &made.created {
        outln!("created {name}")?;
    }
    for why in &made.skipped {
        outln!("not created: {why}")?;
    }
    if made.created.is_empty() && made.skipped.is_empty() {
        outln!("every partition exists already")?;
    }
    Ok(())
}

async fn list(store: &PgStore) -> anyhow::Result<()> {
    let Some(layout) = store.partition_layout().await? else {
        outln!("auditrecorddata is not partitioned")?;
        return Ok(());
    };
    let bound = |b: Option<i64>, none: &str| b.map_or(none.to_string(), format_iso8601);
    outln!(
        "auditrecorddata partitioned by \"timestamp\", {} ({} ahead)",
        layout.interval.map_or("by hand", |i| i.name()),
        layout.ahead
    )?;
    for p in &layout.partitions {
        let range = if p.default {
            "DEFAULT".to_string()
        } else {
            format!(
                "{} .. {}",
                bound(p.from, "MINVALUE"),
                bound(p.to, "MAXVALUE")
            )
        };
        outln!(
            "{:<36} {:<52} about {} rows",
            p.name,
            range,
            p.rows_estimate.max(0)
        )?;
    }
    Ok(())
}
