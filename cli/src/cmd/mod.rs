//! One file per command.

pub mod archive;
pub mod checkpoint;
pub mod keys;
pub mod verify_export;
pub mod verifylog;

use anyhow::Context;

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
