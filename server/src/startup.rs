//! Start-up: from resolved settings to a listening server, in named phases. What can be checked
//! without changing anything (the configuration, HTTPS files, the port) is checked first; then
//! the database, the keys, the log device, the checkpoint writer and the API tokens.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use auditseal_core::batched::BatchedDevice;
use auditseal_core::checkpointer;
use auditseal_core::config::{
    DEFAULT_CHECKPOINT_SECS, DeviceKind, KeyMode, KeySetup, Settings, load_keys,
};
use auditseal_core::device::{LogDevice, SequentialDevice};
use auditseal_core::forward::{FileReopener, Forwarding};
use auditseal_core::store::{self, SharedStore};
use auditseal_core::token::SharedToken;

use crate::auth::Auth;
use crate::config::ServerConfig;
use crate::serve::Limits;
use crate::state::ServerState;
use crate::{AppState, VerifyPolicy};

/// Client certificate subjects (normalised) and their roles.
type CertificateRoles = std::collections::HashMap<String, auditseal_core::access::Role>;

/// The checkpoint writer's stop signal, task and failure count.
type CheckpointTask = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    Arc<checkpointer::CheckpointStats>,
);

/// A server ready to serve: its listener is bound, its state built, its background tasks
/// started.
pub struct Started {
    pub listener: TcpListener,
    /// `server.metrics_bind`'s listener (plain HTTP, no credentials), if configured.
    pub metrics_listener: Option<TcpListener>,
    pub state: AppState,
    pub limits: Limits,
    checkpoints: Option<CheckpointTask>,
    forwarding: Option<Forwarding>,
}

/// Every phase of the start, in order. Fails with the first problem, before anything later.
pub async fn start(settings: &Settings, cfg: &ServerConfig) -> anyhow::Result<Started> {
    let bind = resolve_bind(&cfg.bind, "--bind").await?;
    let certificate_roles = certificate_roles(settings)?;
    // HTTPS set-up errors stop the start before anything is created.
    let limits = Limits::from_config(cfg, settings.file.server.tls.as_ref(), &settings.data_dir)
        .context("cannot set up HTTPS ([server.tls])")?;
    let forward_plans = auditseal_core::forward::plan(&settings.file.forward, &settings.data_dir)
        .context("cannot set up event forwarding ([[forward]])")?;
    let tls_not_after = match &settings.file.server.tls {
        Some(tls) => Some(
            crate::tls::certificate_not_after(tls, &settings.data_dir)
                .context("cannot set up HTTPS ([server.tls])")?,
        ),
        None => None,
    };
    let (listener, metrics_listener) = listen(bind, cfg).await?;
    // Before anything is written: a read URL that cannot be used stops the start.
    let read_database = crate::reads::open(settings).await?;
    let (store, keys) = prepare(settings).await?;
    let device = start_device(settings, cfg, &store, keys.current.clone()).await?;
    let checkpoints =
        start_checkpoints(settings, &store, keys.current.clone(), device.as_ref()).await?;
    let forwarding = start_forwarding(forward_plans, settings, &store, device.as_ref()).await?;
    match &keys.current {
        Some(t) => {
            tracing::info!(keyid = t.keyid(), algorithm = %t.algorithm(), key = %t.describe(), "protecting new rows")
        }
        None => tracing::warn!("protection.enable_sign is false: new rows are NOT protected"),
    }
    let auth = start_auth(settings, &store, device.as_ref(), certificate_roles).await?;
    let mut inner = build_state(cfg, settings, store, device, keys, auth);
    if let Some(db) = read_database {
        inner.reader = db.store.clone();
        inner.read_database = Some(db);
    }
    let state = AppState::from(inner);
    if let Some((_, _, stats)) = &checkpoints {
        let secs = settings.file.checkpoint.interval_secs;
        let secs = secs.unwrap_or(DEFAULT_CHECKPOINT_SECS);
        state
            .metrics
            .checkpoint_writer(stats.clone(), &settings.node_id, secs);
    }
    if let Some(f) = &forwarding {
        state.metrics.forwarding(f.stats());
    }
    if let Some(not_after) = tls_not_after {
        state.metrics.tls_certificate(not_after);
        warn_of_expiry(not_after);
    }
    Ok(Started {
        listener,
        metrics_listener,
        state,
        limits,
        checkpoints,
        forwarding,
    })
}

/// The API's listener on `bind` and, if `server.metrics_bind` is set, the metrics listener.
async fn listen(
    bind: SocketAddr,
    cfg: &ServerConfig,
) -> anyhow::Result<(TcpListener, Option<TcpListener>)> {
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let metrics_listener = match &cfg.metrics_bind {
        None => None,
        Some(b) => {
            let addr = resolve_bind(b, "server.metrics_bind").await?;
            Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (server.metrics_bind)"))?,
            )
        }
    };
    Ok((listener, metrics_listener))
}

/// The `[[forward]]` sinks' tasks, if any, fed by the device's commits.
async fn start_forwarding(
    plans: Vec<auditseal_core::forward::Plan>,
    settings: &Settings,
    store: &SharedStore,
    device: &dyn LogDevice,
) -> anyhow::Result<Option<Forwarding>> {
    if plans.is_empty() {
        return Ok(None);
    }
    let f = Forwarding::start(plans, &settings.node_id, store.clone())
        .await
        .context("cannot start event forwarding ([[forward]])")?;
    device.listen_to_commits(f.commit_listener());
    Ok(Some(f))
}

/// What a first start creates, and what every start opens: the data directory (for its owner
/// only: it holds the database, the key and the first admin token; an existing directory keeps
/// its mode), the database and its schema, the keys (generated the first time with the embedded
/// defaults), and the check that the key under each keyid is the one its rows were protected
/// with. `auditseal-server --init` runs only this.
pub async fn prepare(settings: &Settings) -> anyhow::Result<(SharedStore, KeySetup)> {
    auditseal_core::files::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create data directory {}",
            settings.data_dir.display()
        )
    })?;
    // The database first: a URL that cannot be used stops the start before a key is generated.
    let store = open_store(settings).await?;
    let keys = open_keys(settings).await?;
    // Before anything is written: a different key under a keyid in use would make every older
    // row of that keyid fail verification.
    auditseal_core::keycheck::check(store.as_ref(), &keys).await?;
    Ok((store, keys))
}

/// How long forwarding may go on delivering at a stop.
const FORWARD_CLOSE: std::time::Duration = std::time::Duration::from_secs(5);

impl Started {
    /// What reopens the file sinks at SIGHUP.
    pub fn file_reopener(&self) -> FileReopener {
        self.forwarding
            .as_ref()
            .map(Forwarding::reopener)
            .unwrap_or_default()
    }

    /// Serves until `shutdown` resolves, then writes the last checkpoint and forwards what is
    /// left (for up to 5 s).
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // The metrics listener stops with the main one.
        let (stop, stopped) = tokio::sync::watch::channel(());
        let metrics = self.metrics_listener.map(|l| {
            let app = crate::metrics_app(self.state.clone());
            let limits = Limits {
                tls: None,
                ..self.limits.clone()
            };
            let mut stopped = stopped.clone();
            tokio::spawn(crate::serve::serve(l, app, limits, async move {
                let _ = stopped.changed().await;
            }))
        });
        let served = crate::run_with(self.listener, self.state, self.limits, async move {
            shutdown.await;
            let _ = stop.send(());
        })
        .await;
        if let Some(task) = metrics {
            match task.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "the metrics listener failed"),
                Err(e) => tracing::warn!(error = %e, "the metrics listener failed"),
                Ok(Ok(())) => {}
            }
        }
        served?;
        if let Some((stop, task, _)) = self.checkpoints {
            let _ = stop.send(());
            let _ = task.await;
        }
        if let Some(f) = self.forwarding {
            f.close(FORWARD_CLOSE).await;
        }
        Ok(())
    }
}

/// The state every route shares (`AppState::from` it), from the parts the start built
/// (in-process tests build it the same way).
pub fn build_state(
    cfg: &ServerConfig,
    settings: &Settings,
    store: SharedStore,
    device: Arc<dyn LogDevice>,
    keys: KeySetup,
    auth: Arc<Auth>,
) -> ServerState {
    let p = &settings.protection;
    let metrics = crate::metrics::Metrics::new(cfg.device, device.as_ref(), cfg.max_followers);
    ServerState {
        metrics: Arc::new(metrics),
        verify_runs: Arc::default(),
        signer: keys.current.clone(),
        followers: Arc::new(tokio::sync::Semaphore::new(cfg.max_followers)),
        max_followers: cfg.max_followers,
        closing: Arc::default(),
        auth,
        request_timeout: cfg.request_timeout,
        send_timeout: cfg.send_timeout,
        reader: store.clone(),
        read_database: None,
        store,
        device,
        keys: Arc::new(keys.ring),
        key_listing: Arc::new(keys.listing),
        policy: VerifyPolicy {
            enable_verify: p.enable_verify,
            error_on_verify_fail: p.error_on_verify_fail,
        },
        max_body_bytes: cfg.max_body_bytes,
        max_event_bytes: cfg.max_event_bytes,
    }
}

/// The address to listen on: `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` (its first address), or
/// `:PORT` (every interface, IPv4).
/// `setting` names it in errors (`--bind`, `server.metrics_bind`).
pub(crate) async fn resolve_bind(bind: &str, setting: &str) -> anyhow::Result<SocketAddr> {
    let bind = bind.trim();
    if let Ok(a) = bind.parse() {
        return Ok(a);
    }
    let refused = || {
        format!(
            "{setting} {bind:?} is not an address like 127.0.0.1:8080, [::1]:8080, localhost:8080 \
             or :8080 (every interface)"
        )
    };
    if let Some(port) = bind.strip_prefix(':') {
        let port: u16 = port.parse().with_context(refused)?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    let (host, port) = bind.rsplit_once(':').with_context(refused)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        anyhow::bail!(refused());
    }
    tokio::net::lookup_host(bind)
        .await
        .with_context(|| format!("{setting} {bind:?}: cannot resolve {host:?}"))?
        .next()
        .with_context(|| format!("{setting} {bind:?}: {host:?} has no address"))
}

/// Client certificate subjects and their roles; a mapping that no certificate could ever use
/// is an error.
pub(crate) fn certificate_roles(settings: &Settings) -> anyhow::Result<CertificateRoles> {
    let clients = &settings.file.auth.clients;
    let client_ca = settings
        .file
        .server
        .tls
        .as_ref()
        .and_then(|t| t.client_ca_file.as_ref());
    if !clients.is_empty() && client_ca.is_none() {
        anyhow::bail!(
            "[[auth.clients]] maps client certificates to roles, but server.tls.client_ca_file \
             is not set, so no client certificate can be verified and nobody could log in: set \
             [server.tls] with client_ca_file, or remove [[auth.clients]]"
        );
    }
    auditseal_core::access::certificate_roles(clients.iter().map(|c| (c.subject.clone(), c.role)))
        .map_err(anyhow::Error::msg)
}

/// Opens (or, the first time, generates) the keys, and checks that the current one may protect
/// this node's rows. Opening keys may talk to an HSM: off the async workers.
async fn open_keys(settings: &Settings) -> anyhow::Result<KeySetup> {
    let (protection, data_dir) = (settings.protection.clone(), settings.data_dir.clone());
    let (keys, generated) =
        tokio::task::spawn_blocking(move || load_keys(&protection, &data_dir, KeyMode::Server))
            .await??;
    for (keyid, path) in generated {
        tracing::warn!(path = %path.display(), "generated a new RSA-2048 signing key (keyid {keyid}); back it up");
    }
    if let Some(warning) = keys.check_writer(&settings.node_id)? {
        tracing::warn!("{warning}");
    }
    Ok(keys)
}

async fn open_store(settings: &Settings) -> anyhow::Result<SharedStore> {
    let redacted = store::redact_url(&settings.database_url);
    let store = if settings.database_is_default {
        store::open(&settings.database_url).await
    } else {
        store::open_existing(&settings.database_url).await
    };
    let store = store.with_context(|| format!("cannot open the database {redacted}"))?;
    store
        .migrate()
        .await
        .context("cannot create or upgrade the schema")?;
    Ok(store)
}

async fn start_device(
    settings: &Settings,
    cfg: &ServerConfig,
    store: &SharedStore,
    token: Option<SharedToken>,
) -> anyhow::Result<Arc<dyn LogDevice>> {
    let node = settings.node_id.clone();
    Ok(match cfg.device {
        DeviceKind::Sequential => Arc::new(
            SequentialDevice::start(store.clone(), node, token)
                .await
                .context("cannot start the log device")?,
        ),
        DeviceKind::Batched => Arc::new(
            BatchedDevice::start(store.clone(), node, token, cfg.batched())
                .await
                .context("cannot start the log device")?,
        ),
    })
}

/// Says so at the start when the server's certificate has expired (an ERROR: clients will not
/// connect) or expires within 14 days (a warning).
pub(crate) fn warn_of_expiry(not_after: i64) {
    let left = not_after - auditseal_core::time::now_millis() / 1000;
    let at = auditseal_core::time::format_iso8601(not_after.saturating_mul(1000));
    if left <= 0 {
        tracing::error!(not_after = %at, "ALERT the server's TLS certificate has expired: clients will refuse it");
    } else if left < 14 * 86_400 {
        tracing::warn!(not_after = %at, days = left / 86_400, "the server's TLS certificate expires within 14 days");
    }
}

/// Starts the checkpoint writer (unless turned off or rows are not protected), fed the leaves
/// of the device's commits; it writes a last checkpoint when told to stop.
async fn start_checkpoints(
    settings: &Settings,
    store: &SharedStore,
    token: Option<SharedToken>,
    device: &dyn LogDevice,
) -> anyhow::Result<Option<CheckpointTask>> {
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
    device.hand_leaves_to(cp.leaf_listener());
    let stats = cp.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(checkpointer::run(
        cp,
        std::time::Duration::from_secs(secs),
        async move {
            let _ = stopped.await;
        },
    ));
    Ok(Some((stop, task, stats)))
}

/// Creates the first admin token when nobody could log in otherwise, then reads the API tokens.
async fn start_auth(
    settings: &Settings,
    store: &SharedStore,
    device: &dyn LogDevice,
    certificate_roles: CertificateRoles,
) -> anyhow::Result<Arc<Auth>> {
    let has_clients = !settings.file.auth.clients.is_empty();
    if let Some((name, path)) =
        crate::auth::bootstrap_admin_token(store, device, &settings.data_dir, has_clients)
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
    let tokens = store.tokens().await.context("cannot read the API tokens")?;
    if let Some(warning) = nobody_is_admin(&tokens, &certificate_roles) {
        tracing::warn!("{warning}");
    }
    Auth::start(store.clone(), certificate_roles)
        .await
        .context("cannot read the API tokens")
}

/// A warning when no valid API token and no mapped client certificate has the admin role:
/// nobody can manage tokens through the API.
fn nobody_is_admin(
    tokens: &[auditseal_core::access::ApiToken],
    certificate_roles: &CertificateRoles,
) -> Option<String> {
    use auditseal_core::access::Role;
    let token = tokens
        .iter()
        .any(|t| t.revoked.is_none() && t.role() == Some(Role::Admin));
    let certificate = certificate_roles.values().any(|r| *r == Role::Admin);
    (!token && !certificate).then(|| {
        "no valid API token and no client certificate ([[auth.clients]]) has the admin role: \
         nobody can manage API tokens through the API; map an administrator's certificate to \
         role = \"admin\", or create a token with `auditseal-db token create --role admin`"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_up_without_any_admin_is_warned_about() {
        use auditseal_core::access::{ApiToken, Role};
        let token = |role: &str, revoked: Option<i64>| ApiToken {
            name: "t".into(),
            role: role.into(),
            token_hash: "h".into(),
            created: 0,
            revoked,
        };
        let auditor_cert: CertificateRoles = [("CN=A".to_string(), Role::Auditor)].into();
        let admin_cert: CertificateRoles = [("CN=B".to_string(), Role::Admin)].into();
        assert!(nobody_is_admin(&[], &auditor_cert).is_some());
        assert!(nobody_is_admin(&[token("admin", Some(5))], &auditor_cert).is_some());
        assert!(nobody_is_admin(&[token("auditor", None)], &CertificateRoles::new()).is_some());
        assert!(nobody_is_admin(&[token("admin", None)], &auditor_cert).is_none());
        assert!(nobody_is_admin(&[], &admin_cert).is_none());
    }

    #[tokio::test]
    async fn bind_takes_addresses_host_names_and_a_bare_port() {
        let ok =
            |s: &'static str| async move { resolve_bind(s, "--bind").await.unwrap().to_string() };
        assert_eq!(ok("127.0.0.1:8080").await, "127.0.0.1:8080");
        assert_eq!(ok("[::1]:8443").await, "[::1]:8443");
        assert_eq!(ok(":9000").await, "0.0.0.0:9000");
        let local = resolve_bind("localhost:8080", "--bind").await.unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8080, "{local}");
        for bad in ["8080", "localhost", ":http", "host:99999", ""] {
            let e = resolve_bind(bad, "--bind").await.unwrap_err().to_string();
            assert!(e.contains("--bind"), "{bad}: {e}");
        }
        let e = resolve_bind("9464", "server.metrics_bind")
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with("server.metrics_bind \"9464\""),
            "{e}"
        );
    }
}
