//! The agent's configuration file (TOML, docs/HSM-LOGS.md "Configuration"). Unknown keys are
//! errors, not ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::Format;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server's base URL (`https://auditseal.example:8443`).
    pub server: String,
    /// An ingest API token, or a file that holds one (the environment variable
    /// AUDITSEAL_SHIP_TOKEN overrides both).
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), instead of or with a token.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for the server, besides the system's.
    pub ca_cert: Option<PathBuf>,
    /// Where the position file of each source is kept.
    pub state_dir: PathBuf,
    /// The host name written into each event [default: this machine's].
    pub host: Option<String>,
    /// Events per request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How often a followed file is looked at, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    #[serde(rename = "source", default)]
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Names the source in events and its position file: letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// The log file to read; or, for a syslog listener, none.
    pub path: Option<PathBuf>,
    pub format: Format,
    /// Receive syslog on UDP at this address (`0.0.0.0:5514`) instead of reading a file.
    pub listen_udp: Option<SocketAddr>,
    /// Receive syslog on TCP at this address (octet-counted or newline framing).
    pub listen_tcp: Option<SocketAddr>,
    /// A listener's spool takes at most this many MiB; lines beyond it are lost and counted
    /// [default: `DEFAULT_SPOOL_MAX_MB`].
    pub spool_max_mb: Option<u64>,
}

/// A listener's spool at most, in MiB, unless `spool_max_mb` says otherwise: what the agent
/// holds while the server does not answer, before the disk of `state_dir` fills.
pub const DEFAULT_SPOOL_MAX_MB: u64 = 1024;

/// The least `spool_max_mb`: twice the size from which a shipped spool is started anew
/// (`spool::ROTATE_BYTES`), so that a full spool is always one that can be rotated.
pub const MIN_SPOOL_MAX_MB: u64 = 2 * (crate::spool::ROTATE_BYTES >> 20);

impl Source {
    /// Whether the source receives syslog rather than reading a file.
    pub fn listens(&self) -> bool {
        self.listen_udp.is_some() || self.listen_tcp.is_some()
    }

    /// The most bytes a listener's spool takes.
    pub fn spool_max_bytes(&self) -> u64 {
        self.spool_max_mb.unwrap_or(DEFAULT_SPOOL_MAX_MB) << 20
    }

    /// The file the agent reads: the configured one, or a listener's spool in `state_dir`
    /// (docs/HSM-LOGS.md "Receiving syslog").
    pub fn read_path(&self, state_dir: &Path) -> PathBuf {
        match &self.path {
            Some(p) => p.clone(),
            None => crate::spool::path(state_dir, &self.name),
        }
    }
}

fn default_batch_size() -> usize {
    1000
}

fn default_poll_ms() -> u64 {
    200
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        let config: Config =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.sources.is_empty() {
            bail!("no [[source]] is configured");
        }
        if !(1..=10_000).contains(&self.batch_size) {
            bail!("batch_size must be 1 to 10000 (the bulk endpoint's limit)");
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.sources {
            let ok = !s.name.is_empty()
                && s.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && !s.name.starts_with('.');
            if !ok {
                bail!(
                    "source name {:?}: use letters, digits, '.', '_' and '-' (it names a file)",
                    s.name
                );
            }
            if !names.insert(&s.name) {
                bail!("source name {:?} is used twice", s.name);
            }
            match (&s.path, s.listens()) {
                (Some(_), true) => bail!(
                    "source {:?}: give either path or listen_udp/listen_tcp, not both",
                    s.name
                ),
                (None, false) => bail!(
                    "source {:?}: give path (a file) or listen_udp/listen_tcp (a syslog listener)",
                    s.name
                ),
                (None, true) if s.format != Format::Softhsm2Syslog => bail!(
                    "source {:?}: a syslog listener takes format = \"softhsm2-syslog\"",
                    s.name
                ),
                _ => {}
            }
            match s.spool_max_mb {
                Some(_) if !s.listens() => bail!(
                    "source {:?}: spool_max_mb is for a syslog listener (listen_udp/listen_tcp)",
                    s.name
                ),
                Some(mb) if !(MIN_SPOOL_MAX_MB..=1 << 30).contains(&mb) => bail!(
                    "source {:?}: spool_max_mb must be at least {MIN_SPOOL_MAX_MB} (twice the \
                     size from which a shipped spool is started anew)",
                    s.name
                ),
                _ => {}
            }
        }
        Ok(())
    }

    /// The token: AUDITSEAL_SHIP_TOKEN, else `token`, else the first line of `token_file`.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        if let Ok(t) = std::env::var("AUDITSEAL_SHIP_TOKEN") {
            return Ok(Some(t.trim().to_string()));
        }
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_string()));
        }
        if let Some(f) = &self.token_file {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read token_file {}", f.display()))?;
            return Ok(Some(t.trim().to_string()));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_and_unknown_keys() {
        let c: Config = toml::from_str(
            "server = 'http://x'\nstate_dir = '/s'\n[[source]]\nname = 'spy'\npath = '/l'\nformat = 'pkcs11-spy'\n",
        )
        .unwrap();
        c.check().unwrap();
        assert_eq!(c.sources[0].format, Format::Pkcs11Spy);
        assert_eq!(c.batch_size, 1000);
        let err = toml::from_str::<Config>("server = 'x'\nstate_dir = '/s'\ncolour = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        let bad: Config = toml::from_str(
            "server = 'x'\nstate_dir = '/s'\n[[source]]\nname = '../x'\npath = '/l'\nformat = 'pkcs11-spy'\n",
        )
        .unwrap();
        assert!(bad.check().is_err());
        let listener: Config = toml::from_str(
            "server = 'x'\nstate_dir = '/s'\n[[source]]\nname = 'net'\nformat = 'softhsm2-syslog'\n\
             listen_udp = '127.0.0.1:5514'\nlisten_tcp = '127.0.0.1:5514'\n",
        )
        .unwrap();
        listener.check().unwrap();
        assert_eq!(
            listener.sources[0].read_path(Path::new("/s")),
            Path::new("/s/net.spool")
        );
        assert_eq!(listener.sources[0].spool_max_bytes(), 1 << 30);
        for (extra, why) in [
            (
                "path = '/l'\nformat = 'softhsm2-syslog'\nlisten_udp = '127.0.0.1:1'\n",
                "not both",
            ),
            ("format = 'softhsm2-syslog'\n", "give path"),
            (
                "format = 'dinamo'\nlisten_tcp = '127.0.0.1:1'\n",
                "softhsm2-syslog",
            ),
            (
                "path = '/l'\nformat = 'pkcs11-spy'\nspool_max_mb = 64\n",
                "for a syslog listener",
            ),
            (
                "format = 'softhsm2-syslog'\nlisten_udp = '127.0.0.1:1'\nspool_max_mb = 15\n",
                "at least 16",
            ),
        ] {
            let c: Config = toml::from_str(&format!(
                "server = 'x'\nstate_dir = '/s'\n[[source]]\nname = 'n'\n{extra}"
            ))
            .unwrap();
            let err = c.check().unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
        assert!(
            toml::from_str::<Config>(
                "server = 'x'\nstate_dir = '/s'\n[[source]]\nname = 'n'\nformat = 'softhsm2-syslog'\nlisten_udp = 'nowhere'\n"
            )
            .is_err()
        );
    }

    #[test]
    fn the_sample_configuration_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/auditseal-ship.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.sources.len(), 6);
        assert_eq!(c.sources[4].format, Format::RustHsm);
        assert!(c.sources[5].listens());
    }
}
