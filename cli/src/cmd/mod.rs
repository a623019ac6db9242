//! One file per command.

pub mod analyze;
pub mod archive;
pub mod backup;
pub mod checkpoint;
pub mod keys;
pub mod manual;
pub mod partition;
pub mod token;
pub mod verify_export;
pub mod verifylog;

use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Map, Value};

use auditseal_core::checkpoint::Checkpoint;
use auditseal_core::checkpointer::{CheckpointError, Checkpointer, Sinks};
use auditseal_core::config::{KeyMode, KeySetup, Settings};
use auditseal_core::device::{LogDevice, NewEvent, SequentialDevice};
use auditseal_core::store::SharedStore;
use auditseal_core::token::SharedToken;

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

/// The node the CLI logs its own events to (`<node id>-db` unless told otherwise), with the
/// key that protects them and the local checkpoint copies the configuration asks for.
pub struct EventLog {
    device: SequentialDevice,
    store: SharedStore,
    token: SharedToken,
    node: String,
    /// `checkpoint.file` and a local `checkpoint.syslog` socket.
    local_copies: (Option<PathBuf>, Option<PathBuf>),
}

impl EventLog {
    /// Takes the node (a running writer of the same node makes this fail, before anything is
    /// written).
    pub async fn open(
        settings: &Settings,
        store: &SharedStore,
        token: SharedToken,
        node: String,
    ) -> anyhow::Result<EventLog> {
        let device = SequentialDevice::start(store.clone(), node.clone(), Some(token.clone()))
            .await
            .with_context(|| format!("cannot log as node {node:?} (use --event-node)"))?;
        Ok(EventLog {
            device,
            store: store.clone(),
            token,
            node,
            local_copies: {
                let s = Sinks::local(&settings.file.checkpoint, &settings.data_dir);
                (s.file, s.local_syslog)
            },
        })
    }

    /// Logs one of the CLI's own events (LOG_EXPORT, LOG_DELETE, TOKEN_CREATE, ...), then signs
    /// a checkpoint of the node, so that its newest rows cannot go without trace (no server
    /// checkpoints this node); says both on stderr. A checkpoint that cannot be written is a
    /// warning: the event stands.
    pub async fn log(
        &self,
        event_type: &str,
        success: bool,
        details: &Map<String, Value>,
    ) -> anyhow::Result<()> {
        let event = NewEvent::system(event_type, success, &operator(), details)?;
        let a = self
            .device
            .append(event)
            .await
            .with_context(|| format!("cannot log the {event_type} event"))?;
        eprintln!(
            "logged {event_type} as node {} sequence {}",
            a.node_id, a.sequence_number
        );
        match self.checkpoint().await {
            Ok(Some(c)) => eprintln!(
                "signed a checkpoint of node {} at sequence {}",
                c.node_id, c.sequence_number
            ),
            Ok(None) => eprintln!(
                "warning: no checkpoint of node {} was written (see the ALERT above)",
                self.node
            ),
            Err(e) => eprintln!(
                "warning: no checkpoint of node {} was written: {e}",
                self.node
            ),
        }
        Ok(())
    }

    /// Signs and stores a checkpoint of the node's rows up to the newest, with the local
    /// copies (`checkpoint.file`, a local syslog socket) but not the receivers on other hosts,
    /// whose backlogs belong to the server.
    async fn checkpoint(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let sinks = Sinks {
            file: self.local_copies.0.clone(),
            local_syslog: self.local_copies.1.clone(),
            ..Default::default()
        };
        let mut cp = Checkpointer::start(
            self.store.clone(),
            self.token.clone(),
            self.node.clone(),
            sinks,
        )
        .await?;
        cp.run_once().await
    }
}
