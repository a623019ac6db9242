//! Resolving the configuration: the file, then `AUDITSEAL_SERVER_*` from the environment, then
//! `--set`, then the other command-line overrides, into `Settings`.

use std::path::{Path, PathBuf};

use super::{
    ConfigError, FileConfig, ProtectionSection, default_database_url, default_node_id, paths,
};

/// Values from the environment or the command line; each wins over the file. The server and
/// the database CLI take these as their global options, with the same names and variables.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// TOML configuration file (see conf/auditseal.toml).
    #[arg(long, global = true, env = "AUDITSEAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// A SignServer configuration directory: its databaseprotection.properties gives the keys
    /// and policy, its cesecore.properties the node id (cluster.nodeid).
    #[arg(long, global = true, env = "AUDITSEAL_SIGNSERVER_CONF")]
    pub signserver_conf: Option<PathBuf>,
    /// Directory for the embedded database and the generated key [default: ./data].
    #[arg(long, global = true, env = "AUDITSEAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// postgres://... or sqlite:... [default: the SQLite file <data-dir>/auditseal.db].
    #[arg(
        long,
        global = true,
        env = "AUDITSEAL_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Only the server reads from a standby (its own `--database-read-url`); the CLI reads and
    /// writes the database `--database-url` names.
    #[arg(skip)]
    pub database_read_url: Option<String>,
    /// This node's id [default: the configuration's node_id, else the host name].
    #[arg(long, global = true, env = "AUDITSEAL_NODE_ID")]
    pub node_id: Option<String>,
    /// Set a configuration key, by its dotted path, over the file's value and the
    /// AUDITSEAL_SERVER_* environment (e.g. server.batch_size=500); repeatable.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

/// The prefix of environment variables that set `[server]` keys: `AUDITSEAL_SERVER_BATCH_SIZE`
/// sets `server.batch_size`.
pub const SERVER_ENV_PREFIX: &str = "AUDITSEAL_SERVER_";

/// Sets `path` (dotted: `server.batch_size`) in `table` to `value`, read as a TOML value when it
/// is one (`500`, `true`, `"x"`) and as a string otherwise (`0.0.0.0:8080`, `batched`).
fn set_key(table: &mut toml::Table, path: &str, value: &str) -> Result<(), String> {
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts
        .pop()
        .filter(|k| !k.is_empty())
        .ok_or("an empty key")?;
    let mut at = table;
    for p in parts {
        let entry = at
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p} is not a table"))?;
    }
    at.insert(last.to_string(), parsed);
    Ok(())
}

/// The file (or nothing), then `AUDITSEAL_SERVER_*` from `env`, then `sets`.
fn file_with_overrides(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<FileConfig, ConfigError> {
    let source = path.map_or_else(|| PathBuf::from("(no file)"), Path::to_path_buf);
    let err = |reason: String| ConfigError::File {
        path: source.clone(),
        reason,
    };
    let mut table: toml::Table = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| err(e.to_string()))?;
            toml::from_str(&text).map_err(|e| err(e.to_string()))?
        }
        None => toml::Table::new(),
    };
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(SERVER_ENV_PREFIX)?.to_ascii_lowercase();
            Some((format!("server.{key}"), v))
        })
        .collect();
    env.sort();
    for (key, value) in &env {
        set_key(&mut table, key, value).map_err(|e| {
            ConfigError::Invalid(format!("environment {}: {e}", key.to_uppercase()))
        })?;
    }
    for s in sets {
        let (key, value) = s.split_once('=').ok_or_else(|| {
            ConfigError::Invalid(format!(
                "--set {s:?}: expected KEY=VALUE, e.g. server.batch_size=500"
            ))
        })?;
        set_key(&mut table, key.trim(), value.trim())
            .map_err(|e| ConfigError::Invalid(format!("--set {s:?}: {e}")))?;
    }
    table.try_into().map_err(|e: toml::de::Error| {
        let from = if env.is_empty() && sets.is_empty() {
            String::new()
        } else {
            " (with the AUDITSEAL_SERVER_* environment and --set applied)".to_string()
        };
        err(format!("{e}{from}"))
    })
}

/// Where the data lives and which database and node this process uses.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub database_url: String,
    /// Whether `database_url` is the embedded default (the SQLite file in the data directory),
    /// the one database created by itself.
    pub database_is_default: bool,
    /// Where queries, exports and verification read (None: `database_url`).
    pub database_read_url: Option<String>,
    pub node_id: String,
    /// Keys and verification policy: from the TOML file, a SignServer configuration, or the
    /// defaults.
    pub protection: ProtectionSection,
    pub file: FileConfig,
}

impl Settings {
    /// Defaults < file < `AUDITSEAL_SERVER_*` environment < `--set` < the other overrides.
    pub fn resolve(o: Overrides) -> Result<Settings, ConfigError> {
        Self::resolve_with_env(o, std::env::vars())
    }

    /// `resolve` with the given environment (tests).
    pub fn resolve_with_env(
        o: Overrides,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut file = file_with_overrides(o.config.as_deref(), env, &o.sets)?;
        // The file's directory: its relative paths are read from there (config/paths.rs).
        let base = o
            .config
            .as_deref()
            .map(|c| c.parent().unwrap_or(Path::new("")).to_path_buf());
        let data_dir = o
            .data_dir
            .or_else(|| base.as_deref().and_then(|b| paths::data_dir(&file, b)))
            .unwrap_or_else(|| PathBuf::from("./data"));
        if let Some(base) = &base {
            paths::anchor(&mut file, base, &data_dir)?;
        }
        let (protection, signserver_node) = match (&o.signserver_conf, file.protection.take()) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "--signserver-conf and a [protection] section in the configuration file \
                     both configure keys; use one"
                        .into(),
                ));
            }
            (Some(dir), None) => {
                let ss = crate::config::signserver::load(dir)
                    .map_err(|e| ConfigError::Invalid(format!("SignServer configuration: {e}")))?;
                // Never fall back to a generated key behind an operator's SignServer settings.
                if ss.protection.keys.is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "SignServer configuration {}: no key entries (databaseprotection.keyid.0 ...)",
                        dir.display()
                    )));
                }
                (ss.protection, ss.node_id)
            }
            (None, p) => (p.unwrap_or_default(), None),
        };
        let database_url = o
            .database_url
            .or_else(|| file.database_url.clone())
            .unwrap_or_else(|| default_database_url(&data_dir));
        // Empty (e.g. `AUDITSEAL_DATABASE_READ_URL=`) means none: reads go to `database_url`.
        let database_read_url = o
            .database_read_url
            .or_else(|| file.database_read_url.clone())
            .filter(|u| !u.trim().is_empty());
        let node_id = o
            .node_id
            .or_else(|| file.node_id.clone())
            .or(signserver_node)
            .unwrap_or_else(default_node_id);
        if node_id.trim().is_empty() || node_id.contains('\0') {
            return Err(ConfigError::Invalid("the node id must not be empty".into()));
        }
        Ok(Settings {
            database_is_default: database_url == default_database_url(&data_dir),
            data_dir,
            database_url,
            database_read_url,
            node_id,
            protection,
            file,
        })
    }
}
