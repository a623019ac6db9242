//! `auditseal-server`: accepts audit events over HTTP and stores them as protected rows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use std::time::Duration;

use auditseal_core::batched::{BatchedConfig, BatchedDevice};
use auditseal_core::checkpointer;
use auditseal_core::config::{
    DEFAULT_CHECKPOINT_SECS, DeviceKind, KeyMode, Overrides, Settings, load_keys,
};
use auditseal_core::device::{LogDevice, SequentialDevice};
use auditseal_core::store;
use auditseal_server::{
    AppState, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_FOLLOWERS, VerifyPolicy,
};

#[derive(Debug, Parser)]
#[command(
    name = "auditseal-server",
    version,
    about = "Signed audit log service (CESeCore-compatible rows)"
)]
struct Args {
    /// TOML configuration file (see conf/auditseal.toml).
    #[arg(long, env = "AUDITSEAL_CONFIG")]
    config: Option<PathBuf>,
    /// A SignServer configuration directory: its databaseprotection.properties gives the keys
    /// and policy, its cesecore.properties the node id (cluster.nodeid).
    #[arg(long, env = "AUDITSEAL_SIGNSERVER_CONF")]
    signserver_conf: Option<PathBuf>,
    /// Directory for the embedded database and the generated key [default: ./data].
    #[arg(long, env = "AUDITSEAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// postgres://... or sqlite:... [default: the SQLite file <data-dir>/auditseal.db].
    #[arg(long, env = "AUDITSEAL_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// This node's id [default: the host name].
    #[arg(long, env = "AUDITSEAL_NODE_ID")]
    node_id: Option<String>,
    /// Log device: sequential (one row at a time) or batched (group commit) [default: sequential].
    #[arg(long, env = "AUDITSEAL_DEVICE")]
    device: Option<DeviceKind>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "AUDITSEAL_BIND")]
    bind: Option<String>,
}

fn main() -> anyhow::Result<()> {
    // Before the runtime's threads exist.
    auditseal_core::memory::return_large_blocks();
    tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AUDITSEAL_LOG")
                .unwrap_or_else(|_| "info,tower_http=warn,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let settings = Settings::resolve(Overrides {
        config: args.config,
        signserver_conf: args.signserver_conf,
        data_dir: args.data_dir,
        database_url: args.database_url,
        node_id: args.node_id,
    })?;
    let bind = args
        .bind
        .or_else(|| settings.file.server.bind.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let bind: SocketAddr = bind
        .parse()
        .with_context(|| format!("--bind {bind:?} is not an address like 127.0.0.1:8080"))?;

    // Created for its owner only (it holds the database, the key and the first admin token);
    // an existing directory keeps its mode.
    auditseal_core::files::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create data directory {}",
            settings.data_dir.display()
        )
    })?;
    // Opening keys may talk to an HSM (log in, read keys): keep it off the async workers.
    let (protection, data_dir) = (settings.protection.clone(), settings.data_dir.clone());
    let (keys, generated) =
        tokio::task::spawn_blocking(move || load_keys(&protection, &data_dir, KeyMode::Server))
            .await??;
    for path in generated {
        tracing::warn!(path = %path.display(), "generated a new RSA-2048 signing key (keyid 1); back it up");
    }
    if let Some(warning) = keys.check_writer(&settings.node_id)? {
        tracing::warn!("{warning}");
    }
    let redacted = store::redact_url(&settings.database_url);
    let store = store::open(&settings.database_url)
        .await
        .with_context(|| format!("cannot open the database {redacted}"))?;
    store
        .migrate()
        .await
        .context("cannot create or upgrade the schema")?;
    // Before anything is written: a different key under a keyid in use would make every older
    // row of that keyid fail verification.
    auditseal_core::keycheck::check(store.as_ref(), &keys).await?;
    let srv = &settings.file.server;
    let device: Arc<dyn LogDevice> =
        match args.device.or(srv.device).unwrap_or(DeviceKind::Sequential) {
            DeviceKind::Sequential => Arc::new(
                SequentialDevice::start(
                    store.clone(),
                    settings.node_id.clone(),
                    keys.current.clone(),
                )
                .await
                .context("cannot start the log device")?,
            ),
            DeviceKind::Batched => {
                let d = BatchedConfig::default();
                let cfg = BatchedConfig {
                    max_batch: srv.batch_size.unwrap_or(d.max_batch).max(1),
                    max_wait: srv
                        .batch_max_wait_ms
                        .map_or(d.max_wait, Duration::from_millis),
                    queue: srv.queue_capacity.unwrap_or(d.queue).max(1),
                };
                Arc::new(
                    BatchedDevice::start(
                        store.clone(),
                        settings.node_id.clone(),
                        keys.current.clone(),
                        cfg,
                    )
                    .await
                    .context("cannot start the log device")?,
                )
            }
        };
    let checkpoints = start_checkpoints(&settings, &store, keys.current.clone()).await?;
    match &keys.current {
        Some(t) => {
            tracing::info!(keyid = t.keyid(), algorithm = %t.algorithm(), key = %t.describe(), "protecting new rows")
        }
        None => tracing::warn!("protection.enable_sign is false: new rows are NOT protected"),
    }
    let clients = &settings.file.auth.clients;
    if !clients.is_empty()
        && srv
            .tls
            .as_ref()
            .and_then(|t| t.client_ca_file.as_ref())
            .is_none()
    {
        anyhow::bail!(
            "[[auth.clients]] maps client certificates to roles, but server.tls.client_ca_file \
             is not set, so no client certificate can be verified and nobody could log in: set \
             [server.tls] with client_ca_file, or remove [[auth.clients]]"
        );
    }
    let certificate_roles = auditseal_core::access::certificate_roles(
        clients.iter().map(|c| (c.subject.clone(), c.role)),
    )
    .map_err(anyhow::Error::msg)?;
    // HTTPS set-up errors stop the start before anything is created.
    let limits = auditseal_server::serve::Limits::from_config(srv, &settings.data_dir)
        .context("cannot set up HTTPS ([server.tls])")?;
    if let Some((name, path)) = auditseal_server::auth::bootstrap_admin_token(
        &store,
        device.as_ref(),
        &settings.data_dir,
        !clients.is_empty(),
    )
    .await
    .context("cannot create the first admin token")?
    {
        tracing::warn!(
            token = %name,
            file = %path.display(),
            "no API token or client certificate was configured: created an admin token and \
             saved it in this file (mode 0600); send it as \"Authorization: Bearer <token>\", \
             and create tokens for signers and auditors with `auditseal-db token create`"
        );
    }
    let auth = auditseal_server::auth::Auth::start(store.clone(), certificate_roles)
        .await
        .context("cannot read the API tokens")?;
    let p = &settings.protection;
    let max_followers = srv.max_followers.unwrap_or(DEFAULT_MAX_FOLLOWERS);
    let state = AppState {
        signer: keys.current.clone(),
        followers: Arc::new(tokio::sync::Semaphore::new(max_followers)),
        max_followers,
        closing: Arc::default(),
        auth,
        request_timeout: Duration::from_secs(srv.request_timeout_secs.unwrap_or(30).max(1)),
        send_timeout: limits.send_timeout,
        store,
        device,
        keys: Arc::new(keys.ring),
        key_listing: Arc::new(keys.listing),
        policy: VerifyPolicy {
            enable_verify: p.enable_verify,
            error_on_verify_fail: p.error_on_verify_fail,
        },
        max_body_bytes: settings
            .file
            .server
            .max_body_bytes
            .unwrap_or(DEFAULT_MAX_BODY_BYTES),
        max_event_bytes: settings
            .file
            .server
            .max_event_bytes
            .unwrap_or(DEFAULT_MAX_EVENT_BYTES)
            .max(1),
    };
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let local = listener.local_addr()?;
    tracing::info!(node = %settings.node_id, database = %redacted, data_dir = %settings.data_dir.display(), "auditseal-server started");
    let scheme = limits.tls.as_ref().map_or("http", |_| "https");
    // Tests and scripts read this line to learn the port when binding to :0.
    println!("auditseal-server listening on {scheme}://{local}");
    auditseal_server::run_with(listener, state, limits, shutdown_signal()).await?;
    if let Some((stop, task)) = checkpoints {
        let _ = stop.send(());
        let _ = task.await;
    }
    tracing::info!("auditseal-server stopped");
    Ok(())
}

/// Starts the checkpoint writer (unless turned off or rows are not protected); it writes a last
/// checkpoint when told to stop.
async fn start_checkpoints(
    settings: &Settings,
    store: &store::SharedStore,
    token: Option<auditseal_core::token::SharedToken>,
) -> anyhow::Result<
    Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
> {
    let c = &settings.file.checkpoint;
    let secs = c.interval_secs.unwrap_or(DEFAULT_CHECKPOINT_SECS);
    let Some(token) = token.filter(|_| secs > 0) else {
        tracing::warn!("checkpoints are off (checkpoint.interval_secs = 0 or signing is off)");
        return Ok(None);
    };
    let sinks = checkpointer::Sinks::open(c, &settings.data_dir)
        .await
        .context("cannot set up the checkpoint receivers ([checkpoint])")?;
    let cp =
        checkpointer::Checkpointer::start(store.clone(), token, settings.node_id.clone(), sinks)
            .await
            .context("cannot start the checkpoint writer")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(checkpointer::run(
        cp,
        Duration::from_secs(secs),
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(Some((stop, task)))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
