//! One file per command.

pub mod archive;
pub mod checkpoint;
pub mod keys;
pub mod token;
pub mod verify_export;
pub mod verifylog;

use anyhow::Context;
use serde_json::{Map, Value};

use auditseal_core::device::{LogDevice, NewEvent, SequentialDevice};

use auditseal_core::config::{KeyMode, KeySetup, Settings};

/// The configured keys, for verifying (the CLI never generates one). Opening tokens may block on
/// an HSM, so it runs off the async workers.
pub async fn load_keys(settings: &Settings) -> anyhow::Result<KeySetup> {
    let (protection, dir) = (settings.protection.clone(), settings.data_dir.clone());
    let (setup, _) = tokio::task::spawn_blocking(move || {
        auditseal_core::config::load_keys(&protection, &dir, KeyMode::VerifyOnly)
    })
    .await?
    .context("cannot load the verification keys")?;
    Ok(setup)
}

/// Who runs the command, as the authToken of the events it logs: `auditseal-db:user@host`.
pub fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "auditseal-db:{user}@{}",
        auditseal_core::config::default_node_id()
    )
}

/// Logs one of the CLI's own events (LOG_EXPORT, LOG_DELETE, TOKEN_CREATE, ...) and says so on
/// stderr.
pub async fn log(
    device: &SequentialDevice,
    event_type: &str,
    success: bool,
    details: &Map<String, Value>,
) -> anyhow::Result<()> {
    let event = NewEvent::system(event_type, success, &operator(), details)?;
    let a = device
        .append(event)
        .await
        .with_context(|| format!("cannot log the {event_type} event"))?;
    eprintln!(
        "logged {event_type} as node {} sequence {}",
        a.node_id, a.sequence_number
    );
    Ok(())
}
