//! The `[[forward]]` entries checked and their senders prepared, before anything starts.

use std::path::Path;

use crate::config::{
    ForwardFormat, ForwardSection, ForwardStart, ForwardTransport, SyslogSection, SyslogTransport,
};
use crate::evidence::checkpoint_out::syslog_target;
use crate::evidence::sink::Transport;
use crate::evidence::sink::syslog::{self, Header, SyslogSender, UdpSender};

use super::{ForwardError, file, message};

/// How a sink reaches its receiver.
pub(super) enum Output {
    Syslog(SyslogSender),
    Udp(UdpSender),
    File(file::FileSender),
}

/// A checked `[[forward]]` entry, ready to start.
pub struct Plan {
    pub(super) name: String,
    pub(super) format: ForwardFormat,
    pub(super) start: ForwardStart,
    pub(super) sd_id: String,
    pub(super) output: Output,
}

impl Plan {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it delivers (`syslog tls://logs:6514`, `file /var/log/auditseal/events.jsonl`).
    pub fn describe(&self) -> String {
        match &self.output {
            Output::Syslog(s) => s.describe(),
            Output::Udp(s) => s.describe(),
            Output::File(s) => s.describe(),
        }
    }
}

/// Checks every `[[forward]]` entry and prepares its sender (TLS files are read now); connects
/// to nothing. `data_dir` resolves paths that are still relative.
pub fn plan(sections: &[ForwardSection], data_dir: &Path) -> Result<Vec<Plan>, ForwardError> {
    let mut names = std::collections::BTreeSet::new();
    sections
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let p = plan_one(i, s, data_dir)?;
            if !names.insert(p.name.clone()) {
                return Err(ForwardError::Config(format!(
                    "forward[{i}]: the name {:?} is taken by an earlier [[forward]]: each sink \
                     needs its own (its position in the database is kept under it)",
                    p.name
                )));
            }
            Ok(p)
        })
        .collect()
}

fn plan_one(i: usize, s: &ForwardSection, data_dir: &Path) -> Result<Plan, ForwardError> {
    let key = format!("forward[{i}]");
    let bad = |m: String| ForwardError::Config(format!("{key}: {m}"));
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 64
        && s.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !name_ok {
        return Err(bad(format!(
            "name {:?}: 1 to 64 of A-Z a-z 0-9 . _ -",
            s.name
        )));
    }
    let sd_id = s
        .sd_id
        .clone()
        .unwrap_or_else(|| message::DEFAULT_SD_ID.into());
    let output = match (&s.address, &s.file) {
        (Some(_), Some(_)) | (None, None) => Err(bad(
            "give either address (a syslog receiver) or file, not both or neither".into(),
        )),
        (None, Some(path)) => file_output(s, path, data_dir).map_err(bad),
        (Some(address), None) => {
            if valid_sd_id(&sd_id) {
                syslog_output(s, address, data_dir, &key, bad)
            } else {
                Err(bad(format!(
                    "sd_id {sd_id:?}: name@number, e.g. auditseal@32473 (printable ASCII, no \
                     space, =, ] or \", at most 32 characters)"
                )))
            }
        }
    }?;
    Ok(Plan {
        name: s.name.clone(),
        format: s.format.unwrap_or_default(),
        start: s.start.unwrap_or_default(),
        sd_id,
        output,
    })
}

/// A file sink's output; a syslog setting on it is an error.
fn file_output(s: &ForwardSection, path: &Path, data_dir: &Path) -> Result<Output, String> {
    let syslog_only = [
        ("transport", s.transport.is_some()),
        ("ca_file", s.ca_file.is_some()),
        ("cert_file", s.cert_file.is_some()),
        ("key_file", s.key_file.is_some()),
        ("server_name", s.server_name.is_some()),
        ("app_name", s.app_name.is_some()),
        ("sd_id", s.sd_id.is_some()),
    ];
    if let Some((k, _)) = syslog_only.iter().find(|(_, set)| *set) {
        return Err(format!(
            "{k} is a syslog setting; a file sink (file = ...) does not use it"
        ));
    }
    Ok(Output::File(file::FileSender::new(data_dir.join(path))))
}

/// A syslog sink's output: UDP, or TCP/TLS through the checkpoint receivers' settings.
fn syslog_output(
    s: &ForwardSection,
    address: &str,
    data_dir: &Path,
    key: &str,
    bad: impl Fn(String) -> ForwardError,
) -> Result<Output, ForwardError> {
    let t = s.transport.unwrap_or(ForwardTransport::Tcp);
    if t != ForwardTransport::Udp {
        let section = SyslogSection {
            address: address.to_string(),
            transport: if t == ForwardTransport::Tls {
                SyslogTransport::Tls
            } else {
                SyslogTransport::Tcp
            },
            ca_file: s.ca_file.clone(),
            cert_file: s.cert_file.clone(),
            key_file: s.key_file.clone(),
            server_name: s.server_name.clone(),
            app_name: s.app_name.clone(),
        };
        return Ok(Output::Syslog(SyslogSender::new(syslog_target(
            &section, data_dir, key,
        )?)?));
    }
    if s.ca_file.is_some() || s.cert_file.is_some() || s.key_file.is_some() {
        return Err(bad(
            "ca_file, cert_file and key_file need transport = \"tls\"".into(),
        ));
    }
    let app_name = s.app_name.as_deref().unwrap_or("auditseal");
    if !syslog::valid_app_name(app_name) {
        return Err(bad(format!(
            "app_name {app_name:?}: 1 to 48 printable ASCII characters, no spaces"
        )));
    }
    Ok(Output::Udp(
        UdpSender::new(address, Header::this_process(app_name)).map_err(|e| bad(e.to_string()))?,
    ))
}

/// An SD-ID of the form `name@number` (RFC 5424 section 6.3.2).
pub(super) fn valid_sd_id(s: &str) -> bool {
    let Some((name, pen)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 32
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"' | '@'))
        && !pen.is_empty()
        && pen
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}
