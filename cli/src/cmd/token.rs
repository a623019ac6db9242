//! `auditseal-db token create|list|revoke`: API tokens (docs/API.md "Authentication and
//! roles"). Only a token's SHA-256 is stored; `create` prints the token once, alone on the last
//! line of its output. Creating and revoking are logged as TOKEN_CREATE / TOKEN_REVOKE events,
//! signed with the key that signs new rows, under node `<node id>-db` (as `archive` logs).

use anyhow::{Context, bail};
use serde_json::{Map, Value};

use auditseal_core::access::{CreateError, Role, create_logged, new_token};
use auditseal_core::config::Settings;
use auditseal_core::store::{self, SharedStore};
use auditseal_core::time::{format_iso8601, now_millis};

use crate::out::outln;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a token and print it (once: it cannot be shown again).
    Create {
        /// A name for whoever will use it, e.g. signer-1 or siem (letters, digits, . _ -).
        #[arg(long)]
        name: String,
        /// ingest (add events), auditor (query, verify, export, follow) or admin (everything).
        #[arg(long)]
        role: Role,
        #[command(flatten)]
        log: EventNode,
    },
    /// List every token (never the tokens themselves), revoked ones included.
    List,
    /// Revoke a token: every server refuses it within 2 seconds.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        log: EventNode,
    },
}

#[derive(Debug, clap::Args)]
pub struct EventNode {
    /// Node id under which the TOKEN_CREATE / TOKEN_REVOKE event is logged
    /// [default: the configured node id with "-db" appended].
    #[arg(long, value_name = "ID")]
    event_node: Option<String>,
}

async fn open(settings: &Settings) -> anyhow::Result<SharedStore> {
    let redacted = store::redact_url(&settings.database_url);
    let store = store::open_existing(&settings.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {redacted} (before the first start, \
                 `auditseal-server --init` creates it and the signing key)"
            )
        })?;
    // Tokens may be made before the first server start: create the tables if need be.
    store
        .migrate()
        .await
        .context("cannot create or upgrade the schema")?;
    Ok(store)
}

/// The device that logs the command's event: opened before anything changes, so a missing key
/// or a busy node stops the command with nothing done.
async fn event_device(
    settings: &Settings,
    store: &SharedStore,
    node: Option<String>,
) -> anyhow::Result<super::EventLog> {
    let keys = super::load_keys(settings).await.context(
        "token changes are logged as signed events, so the signing key must be readable (with \
         the embedded defaults, `auditseal-server --init` or the first start generates it)",
    )?;
    let Some(token) = keys.current.clone() else {
        bail!(
            "token changes are logged as signed events: this needs the key that signs new rows \
             (protection.enable_sign and a key with its private part); without it, manage \
             tokens through the API (POST /api/v1/tokens) with an admin token"
        );
    };
    // A key other than the one its keyid protected with would sign a row nothing verifies.
    auditseal_core::keycheck::check(store.as_ref(), &keys).await?;
    let node = node.unwrap_or_else(|| format!("{}-db", settings.node_id));
    if let Some(warning) = keys.check_writer(&node)? {
        eprintln!("warning: {warning}");
    }
    super::EventLog::open(settings, store, token, node).await
}

pub async fn run(settings: &Settings, cmd: Command) -> anyhow::Result<u8> {
    let store = open(settings).await?;
    match cmd {
        Command::Create { name, role, log } => create(settings, &store, name, role, log).await?,
        Command::List => list(&store).await?,
        Command::Revoke { name, log } => revoke(settings, &store, name, log).await?,
    }
    Ok(0)
}

/// Stores the token's hash and logs TOKEN_CREATE (or takes the token back), then shows it once.
async fn create(
    settings: &Settings,
    store: &SharedStore,
    name: String,
    role: Role,
    log: EventNode,
) -> anyhow::Result<()> {
    let (secret, record) = new_token(&name, role, now_millis())?;
    if store.tokens().await?.iter().any(|t| t.name == name) {
        bail!("a token named {name:?} exists already (revoked names stay taken)");
    }
    let device = event_device(settings, store, log.event_node).await?;
    let mut details = Map::new();
    details.insert("name".into(), Value::from(name.clone()));
    details.insert("role".into(), Value::from(role.as_str()));
    let logged = create_logged(store.as_ref(), &record, async || {
        device.log("TOKEN_CREATE", true, &details).await
    })
    .await;
    match logged {
        Ok(()) => {}
        Err(CreateError::Conflict) => {
            bail!("a token named {name:?} exists already (revoked names stay taken)")
        }
        Err(CreateError::Store(e)) => return Err(e).context("cannot store the token"),
        Err(CreateError::NotLogged(e)) => {
            return Err(e.context(format!(
                "the TOKEN_CREATE event could not be logged, so token {name:?} was \
                 revoked again before it was shown; retry later with another name"
            )));
        }
    }
    // Not quiet on a closed stdout (as other output is): the token exists but nobody
    // saw it, so say what to do about it.
    outln!(
        "created token {name:?} with role {role}; it is shown only now, so keep it \
         safe (send it as \"Authorization: Bearer <token>\"):\n{secret}"
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "token {name:?} was created but could not be shown ({e}): revoke it \
             (auditseal-db token revoke {name}) and create another"
        )
    })?;
    Ok(())
}

async fn list(store: &SharedStore) -> anyhow::Result<()> {
    let tokens = store.tokens().await?;
    if tokens.is_empty() {
        outln!("no tokens")?;
    }
    for t in tokens {
        outln!(
            "{:<24} {:<8} created {} {}",
            t.name,
            t.role,
            format_iso8601(t.created),
            t.revoked
                .map(|r| format!("REVOKED {}", format_iso8601(r)))
                .unwrap_or_else(|| "valid".into())
        )?;
    }
    Ok(())
}

/// Revokes the token, then logs TOKEN_REVOKE.
async fn revoke(
    settings: &Settings,
    store: &SharedStore,
    name: String,
    log: EventNode,
) -> anyhow::Result<()> {
    if !store
        .tokens()
        .await?
        .iter()
        .any(|t| t.name == name && t.revoked.is_none())
    {
        bail!("no valid token is named {name:?} (see auditseal-db token list)");
    }
    let device = event_device(settings, store, log.event_node).await?;
    if !store.revoke_token(&name, now_millis()).await? {
        bail!("no valid token is named {name:?} (see auditseal-db token list)");
    }
    let mut details = Map::new();
    details.insert("name".into(), Value::from(name.clone()));
    // The revocation stands either way: it only takes access away.
    device
        .log("TOKEN_REVOKE", true, &details)
        .await
        .with_context(|| {
            format!("token {name:?} is revoked, but its TOKEN_REVOKE event was not logged")
        })?;
    outln!("revoked token {name:?}; servers refuse it within 2 seconds")?;
    Ok(())
}
