use super::*;
use crate::crypto::token::Algorithm;

#[test]
fn unknown_keys_are_reported() {
    let e = toml::from_str::<FileConfig>("data_dri = 'x'")
        .unwrap_err()
        .to_string();
    assert!(e.contains("data_dri"), "{e}");
}

#[test]
fn checkpoint_syslog_is_a_socket_path_or_a_table_whose_typos_are_named() {
    let c: FileConfig = toml::from_str("[checkpoint]\nsyslog = '/dev/log'\n").unwrap();
    assert!(
        matches!(c.checkpoint.syslog, Some(SyslogSetting::Socket(p)) if p == Path::new("/dev/log"))
    );
    let c: FileConfig = toml::from_str(
        "[checkpoint.syslog]\naddress = 'logs:6514'\ntransport = 'tls'\nca_file = 'ca.pem'\n\
         [checkpoint.witness]\nurl = 'https://w/x'\n",
    )
    .unwrap();
    match c.checkpoint.syslog {
        Some(SyslogSetting::Remote(s)) => {
            assert_eq!(
                (s.address.as_str(), s.transport),
                ("logs:6514", SyslogTransport::Tls)
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.checkpoint.witness.unwrap().url, "https://w/x");
    let e = toml::from_str::<FileConfig>("[checkpoint.syslog]\naddres = 'logs:514'\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("addres"), "{e}");
    let e = toml::from_str::<FileConfig>(
        "[checkpoint.syslog]\naddress = 'logs:514'\ntransport = 'udp'\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("udp"), "{e}");
}

#[test]
fn default_is_a_generated_software_key_and_hmac_from_env_works() {
    let dir = tempfile::tempdir().unwrap();
    let (setup, generated) =
        load_keys(&ProtectionSection::default(), dir.path(), KeyMode::Server).unwrap();
    assert_eq!(generated.len(), 1);
    assert_eq!(setup.current.as_ref().unwrap().keyid(), 1);
    assert!(setup.listing[0].public_key_pem.is_some());

    let cfg: FileConfig = toml::from_str(
        "[protection]\nkeyid = 5\n[[protection.keys]]\nkind = 'hmac'\nkeyid = 5\nsecret = 'foo123'\n\
         [[protection.keys]]\nkind = 'software'\nkeyid = 1\n",
    )
    .unwrap();
    let (setup, generated) = load_keys(
        &cfg.protection.unwrap_or_default(),
        dir.path(),
        KeyMode::VerifyOnly,
    )
    .unwrap();
    assert!(generated.is_empty());
    let cur = setup.current.unwrap();
    assert_eq!((cur.keyid(), cur.algorithm()), (5, Algorithm::HmacSha256));
    assert!(setup.ring.get(1).is_some());
}

#[test]
fn server_keys_come_from_file_then_environment_then_set() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.toml");
    std::fs::write(
        &file,
        "[server]\nbatch_size = 10\nqueue_capacity = 7\nbind = 'x:1'\n",
    )
    .unwrap();
    let env = || {
        vec![
            ("AUDITSEAL_SERVER_BATCH_SIZE".to_string(), "20".to_string()),
            (
                "AUDITSEAL_SERVER_BIND".to_string(),
                "0.0.0.0:9000".to_string(),
            ),
            ("PATH".to_string(), "/bin".to_string()),
        ]
    };
    let o = |sets: &[&str]| Overrides {
        config: Some(file.clone()),
        data_dir: Some(dir.path().to_path_buf()),
        sets: sets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let s = Settings::resolve_with_env(o(&[]), env()).unwrap();
    let srv = &s.file.server;
    assert_eq!((srv.batch_size, srv.queue_capacity), (Some(20), Some(7)));
    assert_eq!(srv.bind.as_deref(), Some("0.0.0.0:9000"));
    let s = Settings::resolve_with_env(
        o(&[
            "server.batch_size=30",
            "server.device=batched",
            "checkpoint.interval_secs=5",
        ]),
        env(),
    )
    .unwrap();
    assert_eq!(s.file.server.batch_size, Some(30));
    assert_eq!(s.file.server.device, Some(DeviceKind::Batched));
    assert_eq!(s.file.checkpoint.interval_secs, Some(5));
    // A typo is named, wherever it comes from.
    let typo = vec![("AUDITSEAL_SERVER_BATCH_SIZ".to_string(), "1".to_string())];
    let e = Settings::resolve_with_env(o(&[]), typo)
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch_siz") && e.contains("environment"), "{e}");
    let e = Settings::resolve_with_env(o(&["server.batch_size"]), env())
        .unwrap_err()
        .to_string();
    assert!(e.contains("KEY=VALUE"), "{e}");
    let e = Settings::resolve_with_env(o(&["server.batch_size=many"]), env())
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch_size") || e.contains("many"), "{e}");
}

#[test]
fn hmac_secrets_are_bytes_raw_hex_or_base64() {
    let dir = tempfile::tempdir().unwrap();
    // A key with bytes that are not UTF-8 and one ending in a newline, kept as they are.
    let key: Vec<u8> = (0xe0..=0xff).chain([0x00, 0x0a]).collect();
    std::fs::write(dir.path().join("raw.key"), &key).unwrap();
    std::fs::write(
        dir.path().join("hex.key"),
        format!("{}\n", hex::encode(&key)),
    )
    .unwrap();
    let data = b"protect me";
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key),
        data,
    );
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&key);
    for entry in [
        "secret_file = 'raw.key'".to_string(),
        "secret_file = 'hex.key'\nsecret_encoding = 'hex'".to_string(),
        format!("secret = '{b64}'\nsecret_encoding = 'base64'"),
    ] {
        let cfg: FileConfig = toml::from_str(&format!(
            "[[protection.keys]]\nkind = 'hmac'\nkeyid = 7\n{entry}\n"
        ))
        .unwrap();
        let (setup, _) =
            load_keys(&cfg.protection.unwrap(), dir.path(), KeyMode::VerifyOnly).unwrap();
        let k = setup.ring.get(7).unwrap();
        assert_eq!(k.verify(data, mac.as_ref()), Ok(()), "{entry}");
    }
    let cfg: FileConfig = toml::from_str(
        "[[protection.keys]]\nkind = 'hmac'\nkeyid = 7\nsecret = 'zz'\nsecret_encoding = 'hex'\n",
    )
    .unwrap();
    let e = load_keys(&cfg.protection.unwrap(), dir.path(), KeyMode::VerifyOnly)
        .err()
        .unwrap();
    assert!(e.to_string().contains("not hex"), "{e}");
    let cfg: FileConfig = toml::from_str(
        "[[protection.keys]]\nkind = 'hmac'\nkeyid = 7\nsecret = 'a'\nsecret_file = 'raw.key'\n",
    )
    .unwrap();
    let e = load_keys(&cfg.protection.unwrap(), dir.path(), KeyMode::VerifyOnly)
        .err()
        .unwrap();
    assert!(e.to_string().contains("exactly one"), "{e}");
}

#[test]
fn no_key_is_generated_when_signing_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let off = ProtectionSection {
        enable_sign: false,
        ..Default::default()
    };
    let (setup, generated) = load_keys(&off, dir.path(), KeyMode::Server).unwrap();
    assert!(generated.is_empty() && setup.current.is_none() && setup.ring.is_empty());
    assert!(!dir.path().join("signing-key.pem").exists());
    // An existing key still verifies.
    load_keys(&ProtectionSection::default(), dir.path(), KeyMode::Server).unwrap();
    let (setup, _) = load_keys(&off, dir.path(), KeyMode::Server).unwrap();
    assert!(setup.current.is_none() && setup.ring.get(1).is_some());
}

#[test]
fn verifying_needs_no_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    let (setup, generated) =
        load_keys(&ProtectionSection::default(), dir.path(), KeyMode::Server).unwrap();
    assert_eq!(generated[0].0, 1);
    let pem = setup.listing[0].public_key_pem.clone().unwrap();
    std::fs::write(dir.path().join("pub.pem"), pem).unwrap();
    // As CESeCore's database CLI is set up: the signing keyid, as a public key.
    let cfg: FileConfig =
        toml::from_str("[[protection.keys]]\nkind = 'public'\nkeyid = 1\nfile = 'pub.pem'\n")
            .unwrap();
    let p = cfg.protection.unwrap();
    let (setup, _) = load_keys(&p, dir.path(), KeyMode::VerifyOnly).unwrap();
    assert!(setup.current.is_none());
    assert!(setup.ring.get(1).is_some());
    let e = load_keys(&p, dir.path(), KeyMode::Server).err().unwrap();
    assert!(e.to_string().contains("verify-only"), "{e}");
}

#[test]
fn bad_key_config_is_clear() {
    let dir = tempfile::tempdir().unwrap();
    let cfg: FileConfig =
        toml::from_str("[[protection.keys]]\nkind = 'hmac'\nkeyid = 2\n").unwrap();
    let e = load_keys(
        &cfg.protection.unwrap_or_default(),
        dir.path(),
        KeyMode::Server,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("keyid=2") && e.contains("exactly one"), "{e}");
    assert!(e.contains("HMAC secret"), "{e}");
    let cfg: FileConfig = toml::from_str("[protection]\nkeyid = 9\n").unwrap();
    let e = load_keys(
        &cfg.protection.unwrap_or_default(),
        dir.path(),
        KeyMode::Server,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains('9'), "{e}");
    assert!(
        !dir.path().join("signing-key.pem").exists(),
        "nothing generated on error"
    );
    // The CLI never generates keys.
    let e = load_keys(
        &ProtectionSection::default(),
        dir.path(),
        KeyMode::VerifyOnly,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("signing-key.pem"), "{e}");
}
