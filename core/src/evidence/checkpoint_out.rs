//! Where each checkpoint goes besides the database (docs/FORMAT.md section 7.3,
//! docs/OPERATIONS.md "Checkpoints"): a syslog receiver and an HTTP witness on other hosts,
//! each through a durable backlog, and on this host a file and the old local syslog socket.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{
    CheckpointSection, DEFAULT_BACKLOG_MAX, SyslogSection, SyslogSetting, SyslogTransport,
};
use crate::evidence::sink::syslog::{self, Header, SyslogSender, Target, TlsTarget};
use crate::evidence::sink::witness::WitnessSender;
use crate::evidence::sink::{Forwarder, SinkError};
use crate::format::checkpoint::{Checkpoint, SYSLOG_PREFIX};

/// The syslog and witness backlogs, in the data directory.
pub const SYSLOG_BACKLOG: &str = "checkpoint-backlog-syslog.jsonl";
pub const WITNESS_BACKLOG: &str = "checkpoint-backlog-witness.jsonl";

/// The APP-NAME when none is configured.
pub const DEFAULT_APP_NAME: &str = "auditseal";

/// Why a checkpoint's copy could not be written or queued.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cannot write the checkpoint copy to {path}: {reason}")]
    Sink { path: PathBuf, reason: String },
    #[error("cannot queue the checkpoint for {receiver}: {reason}")]
    Queue { receiver: String, reason: String },
}

#[derive(Default)]
pub struct Sinks {
    /// Appended one JSON line per checkpoint, fsynced.
    pub file: Option<PathBuf>,
    /// A local syslog datagram socket (usually /dev/log): one RFC 3164 message per checkpoint.
    pub local_syslog: Option<PathBuf>,
    pub syslog: Option<Forwarder<SyslogSender>>,
    pub witness: Option<Forwarder<WitnessSender>>,
}

impl Sinks {
    /// Only the local copies `[checkpoint]` configures (`file`, and `syslog` when it names a
    /// local socket), for a process that must not share the server's backlogs.
    pub fn local(c: &CheckpointSection, data_dir: &Path) -> Sinks {
        Sinks {
            file: c.file.as_ref().map(|f| data_dir.join(f)),
            local_syslog: match &c.syslog {
                Some(SyslogSetting::Socket(p)) => Some(p.clone()),
                _ => None,
            },
            ..Default::default()
        }
    }

    /// The sinks `[checkpoint]` configures; paths from the file are absolute
    /// by now (config/paths.rs), others are under `data_dir`. Backlogs left
    /// by an earlier run start being sent now.
    pub async fn open(c: &CheckpointSection, data_dir: &Path) -> Result<Sinks, SinkError> {
        let max = c.backlog_max.unwrap_or(DEFAULT_BACKLOG_MAX);
        let mut sinks = Sinks {
            file: c.file.as_ref().map(|f| data_dir.join(f)),
            ..Default::default()
        };
        match &c.syslog {
            None => {}
            Some(SyslogSetting::Socket(p)) => sinks.local_syslog = Some(p.clone()),
            Some(SyslogSetting::Remote(s)) => {
                let sender = SyslogSender::new(syslog_target(s, data_dir, "checkpoint.syslog")?)?;
                sinks.syslog =
                    Some(Forwarder::start(sender, data_dir.join(SYSLOG_BACKLOG), max).await?);
            }
        }
        if let Some(w) = &c.witness {
            let ca = w.ca_file.as_ref().map(|f| data_dir.join(f));
            let sender = WitnessSender::new(&w.url, ca.as_ref())?;
            sinks.witness =
                Some(Forwarder::start(sender, data_dir.join(WITNESS_BACKLOG), max).await?);
        }
        for (name, configured) in [
            (SYSLOG_BACKLOG, sinks.syslog.is_some()),
            (WITNESS_BACKLOG, sinks.witness.is_some()),
        ] {
            let path = data_dir.join(name);
            if !configured && path.exists() {
                tracing::warn!(
                    backlog = %path.display(),
                    "checkpoints wait in this backlog for a receiver that is no longer \
                     configured; configure it again to send them, or keep the file"
                );
            }
        }
        Ok(sinks)
    }

    /// Queues `c` durably for the receivers on other hosts (before the database has it, so
    /// that no stored checkpoint is missing from a backlog after a crash).
    pub async fn queue(&self, c: &Checkpoint) -> Result<(), CopyError> {
        let failed = |receiver: &str, reason: String| CopyError::Queue {
            receiver: receiver.to_string(),
            reason,
        };
        if let Some(f) = &self.syslog {
            f.push(syslog_message(c))
                .await
                .map_err(|e| failed(f.name(), e.to_string()))?;
        }
        if let Some(f) = &self.witness {
            let body = serde_json::to_value(c).map_err(|e| failed(f.name(), e.to_string()))?;
            f.push(body)
                .await
                .map_err(|e| failed(f.name(), e.to_string()))?;
        }
        Ok(())
    }

    /// Writes the copies on this host.
    pub fn copy_local(&self, c: &Checkpoint) -> Result<(), CopyError> {
        let line = c.to_json_line();
        if let Some(path) = &self.file {
            append_line(path, &line).map_err(|e| CopyError::Sink {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        if let Some(path) = &self.local_syslog {
            send_local_syslog(path, &line).map_err(|e| CopyError::Sink {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Gives the receivers up to `deadline` (together) to take what waits for them; the rest
    /// stays in the backlogs for the next start.
    pub async fn close(self, deadline: Duration) {
        let syslog = async {
            if let Some(f) = self.syslog {
                f.close(deadline).await;
            }
        };
        let witness = async {
            if let Some(f) = self.witness {
                f.close(deadline).await;
            }
        };
        tokio::join!(syslog, witness);
    }
}

/// The receiver `s` describes; `key` names its settings in errors (`checkpoint.syslog`,
/// `forward[0]`).
pub(crate) fn syslog_target(
    s: &SyslogSection,
    data_dir: &Path,
    key: &str,
) -> Result<Target, SinkError> {
    let app_name = s.app_name.as_deref().unwrap_or(DEFAULT_APP_NAME);
    if !syslog::valid_app_name(app_name) {
        return Err(SinkError::Config(format!(
            "{key}.app_name {app_name:?}: 1 to 48 printable ASCII characters, no spaces"
        )));
    }
    if syslog::host_of(&s.address).is_none() {
        return Err(SinkError::Config(format!(
            "{key}.address {:?} is not host:port",
            s.address
        )));
    }
    let tls = match s.transport {
        SyslogTransport::Tcp => {
            if s.ca_file.is_some() || s.cert_file.is_some() || s.key_file.is_some() {
                return Err(SinkError::Config(format!(
                    "{key}: ca_file, cert_file and key_file need transport = \"tls\""
                )));
            }
            None
        }
        SyslogTransport::Tls => {
            let ca_file = s.ca_file.as_ref().ok_or_else(|| {
                SinkError::Config(format!(
                    "{key}: transport = \"tls\" needs ca_file (the CAs the receiver's \
                     certificate chains to)"
                ))
            })?;
            let client_cert = match (&s.cert_file, &s.key_file) {
                (None, None) => None,
                (Some(c), Some(k)) => Some((data_dir.join(c), data_dir.join(k))),
                _ => {
                    return Err(SinkError::Config(format!(
                        "{key}: a client certificate needs both cert_file and key_file"
                    )));
                }
            };
            Some(TlsTarget {
                ca_file: data_dir.join(ca_file),
                client_cert,
                server_name: s.server_name.clone(),
            })
        }
    };
    Ok(Target {
        address: s.address.clone(),
        tls,
        header: Header::this_process(app_name),
    })
}

/// The RFC 5424 message of a checkpoint (docs/FORMAT.md section 7.3): authpriv.notice, MSGID
/// `checkpoint`, the `origin` element, and `auditseal-checkpoint {JSON}` as MSG.
pub fn syslog_message(c: &Checkpoint) -> syslog::Message {
    syslog::Message {
        facility: syslog::FACILITY_AUTHPRIV,
        severity: syslog::SEVERITY_NOTICE,
        time_ms: c.time_stamp,
        msgid: Some("checkpoint".into()),
        structured_data: vec![syslog::origin()],
        msg: format!("{SYSLOG_PREFIX}{}", c.to_json_line()),
    }
}

fn append_line(path: &PathBuf, line: &str) -> std::io::Result<()> {
    let mut f = crate::files::options()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

/// RFC 3164 style, facility authpriv (10), severity notice (5): `<85>auditseal[PID]: ...`.
fn send_local_syslog(path: &PathBuf, line: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let msg = format!(
        "<85>auditseal[{}]: {SYSLOG_PREFIX}{line}",
        std::process::id()
    );
    sock.send_to(msg.as_bytes(), path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(toml_text: &str) -> Result<Sinks, String> {
        let dir = tempfile::tempdir().unwrap();
        let cfg: crate::config::FileConfig = toml::from_str(toml_text).unwrap();
        Sinks::open(&cfg.checkpoint, dir.path())
            .await
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_receiver_setting_that_cannot_work_stops_the_start_with_a_clear_reason() {
        for (conf, want) in [
            (
                "[checkpoint.syslog]\naddress = 'logs:6514'\ntransport = 'tls'\n",
                "needs ca_file",
            ),
            (
                "[checkpoint.syslog]\naddress = 'logs'\n",
                "is not host:port",
            ),
            (
                "[checkpoint.syslog]\naddress = 'logs:514'\nca_file = 'ca.pem'\n",
                "need transport = \"tls\"",
            ),
            (
                "[checkpoint.syslog]\naddress = 'logs:514'\napp_name = 'audit seal'\n",
                "app_name",
            ),
            (
                "[checkpoint.syslog]\naddress = 'logs:6514'\ntransport = 'tls'\nca_file = 'none.pem'\n",
                "none.pem: cannot read it",
            ),
            (
                "[checkpoint.syslog]\naddress = 'logs:6514'\ntransport = 'tls'\nca_file = 'none.pem'\ncert_file = 'c.pem'\n",
                "both cert_file and key_file",
            ),
            (
                "[checkpoint.witness]\nurl = 'ftp://w/x'\n",
                "http:// or https://",
            ),
        ] {
            let e = open(conf).await.err().unwrap_or_else(|| panic!("{conf}"));
            assert!(e.contains(want), "{conf}: {e}");
        }
        let s = open("[checkpoint.syslog]\naddress = '127.0.0.1:9'\n[checkpoint.witness]\nurl = 'http://127.0.0.1:9/w'\n")
            .await
            .unwrap();
        assert_eq!(
            s.syslog.as_ref().unwrap().name(),
            "syslog tcp://127.0.0.1:9"
        );
        assert_eq!(
            s.witness.as_ref().unwrap().name(),
            "witness http://127.0.0.1:9/w"
        );
        s.close(Duration::from_millis(100)).await;
    }
}
