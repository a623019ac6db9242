//! Relative paths written in a configuration file resolve against that file's directory, so a
//! file and the keys and certificates beside it can be moved together and read from anywhere.
//! Paths the file does not write (the default key `signing-key.pem`, the database, the admin
//! token) stay in the data directory; `--data-dir` and the other command-line paths resolve
//! against the working directory, as every command's do.
//!
//! Before this rule, paths in the file resolved against the data directory. A relative path
//! whose file is missing beside the configuration file but present in the data directory is
//! refused with both places named: taken silently, it could make the server generate a new key
//! or start a second checkpoint file.

use std::path::{Path, PathBuf};

use super::{ConfigError, FileConfig, KeyEntry, SyslogSetting};

/// Every path a configuration file can hold, with its key for messages.
fn paths_mut(file: &mut FileConfig) -> Vec<(String, &mut PathBuf)> {
    let mut out: Vec<(String, &mut PathBuf)> = Vec::new();
    if let Some(tls) = &mut file.server.tls {
        out.push(("server.tls.cert_file".into(), &mut tls.cert_file));
        out.push(("server.tls.key_file".into(), &mut tls.key_file));
        if let Some(p) = &mut tls.client_ca_file {
            out.push(("server.tls.client_ca_file".into(), p));
        }
    }
    let c = &mut file.checkpoint;
    if let Some(p) = &mut c.file {
        out.push(("checkpoint.file".into(), p));
    }
    match &mut c.syslog {
        Some(SyslogSetting::Socket(p)) => out.push(("checkpoint.syslog".into(), p)),
        Some(SyslogSetting::Remote(s)) => {
            for (key, p) in [
                ("ca_file", &mut s.ca_file),
                ("cert_file", &mut s.cert_file),
                ("key_file", &mut s.key_file),
            ] {
                if let Some(p) = p {
                    out.push((format!("checkpoint.syslog.{key}"), p));
                }
            }
        }
        None => {}
    }
    if let Some(p) = c.witness.as_mut().and_then(|w| w.ca_file.as_mut()) {
        out.push(("checkpoint.witness.ca_file".into(), p));
    }
    for (i, f) in file.forward.iter_mut().enumerate() {
        for (key, p) in [
            ("file", &mut f.file),
            ("ca_file", &mut f.ca_file),
            ("cert_file", &mut f.cert_file),
            ("key_file", &mut f.key_file),
        ] {
            if let Some(p) = p {
                out.push((format!("forward[{i}].{key}"), p));
            }
        }
    }
    if let Some(protection) = &mut file.protection {
        for (i, key) in protection.keys.iter_mut().enumerate() {
            let name = |field: &str| format!("protection.keys[{i}].{field}");
            match key {
                KeyEntry::Software { file: Some(p), .. }
                | KeyEntry::Public { file: Some(p), .. } => out.push((name("file"), p)),
                KeyEntry::Hmac {
                    secret_file: Some(p),
                    ..
                } => out.push((name("secret_file"), p)),
                KeyEntry::Pkcs11 {
                    pin_file, library, ..
                } => {
                    if let Some(p) = pin_file {
                        out.push((name("pin_file"), p));
                    }
                    // A bare file name is left to the system's library search, as dlopen does.
                    if library.components().count() > 1 {
                        out.push((name("library"), library));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// `data_dir` as the file writes it, resolved against `base` (the file's directory).
pub(super) fn data_dir(file: &FileConfig, base: &Path) -> Option<PathBuf> {
    file.data_dir.as_ref().map(|d| base.join(d))
}

/// Resolves every relative path of `file` against `base`, the configuration file's directory;
/// refuses one that is missing there but exists under `data_dir`, where it used to be read.
pub(super) fn anchor(
    file: &mut FileConfig,
    base: &Path,
    data_dir: &Path,
) -> Result<(), ConfigError> {
    for (key, path) in paths_mut(file) {
        if path.is_absolute() {
            continue;
        }
        let anchored = base.join(&*path);
        let old = data_dir.join(&*path);
        if !anchored.exists() && old.exists() && anchored != old {
            return Err(ConfigError::Invalid(format!(
                "{key} = {:?}: relative paths in a configuration file are read from the file's \
                 directory, and {} does not exist, but {} does (it used to be read from the \
                 data directory): write that path in the file, or move the file beside it",
                path.display(),
                anchored.display(),
                old.display()
            )));
        }
        *path = anchored;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{KeyEntry, Overrides, Settings, SyslogSetting};
    use std::path::{Path, PathBuf};

    fn resolve(config: &Path, data_dir: Option<&Path>) -> Result<Settings, String> {
        Settings::resolve_with_env(
            Overrides {
                config: Some(config.to_path_buf()),
                data_dir: data_dir.map(Path::to_path_buf),
                ..Default::default()
            },
            Vec::new(),
        )
        .map_err(|e| e.to_string())
    }

    fn key_file(s: &Settings, i: usize) -> PathBuf {
        match &s.protection.keys[i] {
            KeyEntry::Software { file: Some(f), .. } | KeyEntry::Public { file: Some(f), .. } => {
                f.clone()
            }
            KeyEntry::Pkcs11 { library, .. } => library.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_in_a_file_are_read_from_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let cfg = etc.join("auditseal.toml");
        std::fs::write(
            &cfg,
            "data_dir = 'data'\n\
             [checkpoint]\nfile = 'cp/checkpoints.jsonl'\nsyslog = '/dev/log'\n\
             [[protection.keys]]\nkind = 'software'\nkeyid = 1\nfile = 'keys/k.pem'\n\
             [[protection.keys]]\nkind = 'public'\nkeyid = 2\nfile = '/abs/p.pem'\n\
             [[protection.keys]]\nkind = 'pkcs11'\nkeyid = 3\nlibrary = 'libsofthsm2.so'\n\
             slot_index = 0\nkey_label = 'k'\npin = '1'\n\
             [[protection.keys]]\nkind = 'pkcs11'\nkeyid = 4\nlibrary = 'lib/p11.so'\n\
             slot_index = 0\nkey_label = 'k'\npin = '1'\n",
        )
        .unwrap();
        let s = resolve(&cfg, None).unwrap();
        assert_eq!(s.data_dir, etc.join("data"));
        assert_eq!(
            s.file.checkpoint.file,
            Some(etc.join("cp/checkpoints.jsonl"))
        );
        assert!(
            matches!(&s.file.checkpoint.syslog, Some(SyslogSetting::Socket(p)) if p == Path::new("/dev/log"))
        );
        assert_eq!(key_file(&s, 0), etc.join("keys/k.pem"));
        assert_eq!(key_file(&s, 1), PathBuf::from("/abs/p.pem"));
        // A bare library name is left to the system's search; a path is the file's.
        assert_eq!(key_file(&s, 2), PathBuf::from("libsofthsm2.so"));
        assert_eq!(key_file(&s, 3), etc.join("lib/p11.so"));
        // --data-dir is the command line's: from the working directory.
        let s = resolve(&cfg, Some(Path::new("elsewhere"))).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("elsewhere"));
        assert_eq!(key_file(&s, 0), etc.join("keys/k.pem"));
    }

    #[test]
    fn a_file_where_it_used_to_be_read_is_named_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("old.pem"), "x").unwrap();
        let cfg = dir.path().join("a.toml");
        std::fs::write(
            &cfg,
            "[[protection.keys]]\nkind = 'software'\nkeyid = 1\nfile = 'old.pem'\n",
        )
        .unwrap();
        let e = resolve(&cfg, Some(&data)).unwrap_err();
        assert!(e.contains("protection.keys[0].file"), "{e}");
        assert!(
            e.contains(&dir.path().join("old.pem").display().to_string()),
            "{e}"
        );
        assert!(
            e.contains(&data.join("old.pem").display().to_string()),
            "{e}"
        );
        // Once the file is beside the configuration, that one is read.
        std::fs::write(dir.path().join("old.pem"), "y").unwrap();
        let s = resolve(&cfg, Some(&data)).unwrap();
        assert_eq!(key_file(&s, 0), dir.path().join("old.pem"));
    }
}
