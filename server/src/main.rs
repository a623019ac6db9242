//! `auditseal-server`: accepts audit events over HTTP and stores them as protected rows.

use anyhow::Context;
use clap::Parser;

use auditseal_core::config::{DeviceKind, Overrides, Settings};
use auditseal_core::store;
use auditseal_server::{ServerConfig, check, notify, reload, startup, verifier};

#[derive(Debug, Parser)]
#[command(
    name = "auditseal-server",
    version = env!("AUDITSEAL_VERSION"),
    about = "Signed audit log service (CESeCore-compatible rows)"
)]
struct Args {
    #[command(flatten)]
    overrides: Overrides,
    /// A PostgreSQL hot standby of the database: queries, exports and verification read there,
    /// events and tokens are still written to --database-url [default: none, reads use
    /// --database-url].
    #[arg(
        long,
        global = true,
        env = "AUDITSEAL_DATABASE_READ_URL",
        hide_env_values = true
    )]
    database_read_url: Option<String>,
    /// Log device: sequential (one row at a time) or batched (group commit) [default: sequential].
    #[arg(long, global = true, env = "AUDITSEAL_DEVICE")]
    device: Option<DeviceKind>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, global = true, env = "AUDITSEAL_BIND")]
    bind: Option<String>,
    /// Log lines as text, or as one JSON object per line (for a log collector).
    #[arg(long, env = "AUDITSEAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Print this program's man page (roff) and exit.
    #[arg(long)]
    man: bool,
    /// Prepare the data directory as a first start does (the database and its schema, the
    /// signing key) and exit without listening, so that `auditseal-db token create` can issue
    /// the first tokens before the first start.
    #[arg(long)]
    init: bool,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Check the configuration as a start would (keys open, database reachable, ports free,
    /// HTTPS files usable) without creating anything, and print the resolved settings without
    /// secrets. Exit status 0: the server would start; 1: it would not (each problem named).
    CheckConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    // Before the runtime's threads exist.
    auditseal_core::memory::return_large_blocks();
    let args = Args::parse();
    let format = args.log_format;
    init_logging(format);
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(serve(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the causes: no "Caused by" list, no backtrace.
            let line = auditseal_core::report::one_line(e.chain());
            match format {
                LogFormat::Text => eprintln!("auditseal-server: error: {line}"),
                LogFormat::Json => tracing::error!(error = %line, "auditseal-server stops"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by AUDITSEAL_LOG; as JSON, each line is one object with
/// `timestamp`, `level`, `target`, `message` and the event's fields.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUDITSEAL_LOG")
        .unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn".into());
    let text = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => text
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => text
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    // From here on a SIGHUP reloads (once the server runs) instead of stopping the process.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    if args.man {
        return print_man();
    }
    let overrides = Overrides {
        database_read_url: args.database_read_url,
        ..args.overrides
    };
    let mut settings = Settings::resolve(overrides.clone())?;
    let srv = &mut settings.file.server;
    srv.bind = args.bind.or(srv.bind.take());
    srv.device = args.device.or(srv.device);
    let cfg = ServerConfig::from_section(srv);
    if let Some(Sub::CheckConfig) = args.command {
        if check::check_config(&settings, &cfg).await? {
            return Ok(());
        }
        std::process::exit(1);
    }
    if args.init {
        let (_, keys) = startup::prepare(&settings).await?;
        println!(
            "auditseal-server: ready: database {}, {}",
            store::redact_url(&settings.database_url),
            keys.current.as_ref().map_or_else(
                || "no signing key (protection.enable_sign is false)".to_string(),
                |t| format!("signing key {} (keyid {})", t.describe(), t.keyid())
            )
        );
        return Ok(());
    }
    let started = startup::start(&settings, &cfg).await?;
    // SIGTERM and SIGINT are handled before the server says it listens: a stop that comes right
    // after must still end cleanly, with the last checkpoint (the default action would kill it).
    let shutdown = shutdown_signal()?;
    let local = started.listener.local_addr()?;
    tracing::info!(
        node = %settings.node_id,
        database = %store::redact_url(&settings.database_url),
        data_dir = %settings.data_dir.display(),
        "auditseal-server started"
    );
    let scheme = started.limits.tls.as_ref().map_or("http", |_| "https");
    // Tests and scripts read this line to learn the port when binding to :0.
    println!("auditseal-server listening on {scheme}://{local}");
    if let Some(m) = &started.metrics_listener {
        println!("auditseal-server metrics on http://{}", m.local_addr()?);
    }
    notify::ready(&format!("listening on {local}, node {}", settings.node_id));
    notify::start_watchdog();
    verifier::start(
        started.state.clone(),
        cfg.verify_interval,
        cfg.verify_full_interval,
    );
    reload::Reloader {
        overrides,
        tls: started.limits.tls.clone(),
        auth: started.state.auth.clone(),
        metrics: started.state.metrics.clone(),
        files: started.file_reopener(),
    }
    .on_sighup(hup);
    started.serve(shutdown).await?;
    tracing::info!("auditseal-server stopped");
    Ok(())
}

/// `--man`: the man page on stdout.
fn print_man() -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut page = Vec::new();
    clap_mangen::Man::new(Args::command())
        .render(&mut page)
        .context("cannot render the man page")?;
    std::io::Write::write_all(&mut std::io::stdout(), &page)?;
    Ok(())
}

/// Registers the stop signals now (a signal before registration would kill the process) and
/// returns the future that resolves on the first of SIGTERM and SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        notify::stopping();
    })
}
