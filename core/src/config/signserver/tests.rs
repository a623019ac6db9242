use super::properties::*;
use super::*;
use base64::engine::general_purpose::STANDARD;

const RSA_CERT: &[u8] = include_bytes!("../../../tests/fixtures/signserver/rsa-cert.der");
const EC_CERT: &[u8] = include_bytes!("../../../tests/fixtures/signserver/ec-cert.der");
const RSA_SPKI: &[u8] = include_bytes!("../../../tests/fixtures/signserver/rsa-spki.der");
const EC_SPKI: &[u8] = include_bytes!("../../../tests/fixtures/signserver/ec-spki.der");
const EC_PEM: &str = include_str!("../../../tests/fixtures/signserver/ec-public.pem");

fn dir() -> &'static Path {
    Path::new("/opt/signserver/conf")
}

fn props(text: &str) -> Vec<(String, String, usize)> {
    let (props, errors) = parse_properties(text);
    assert!(errors.is_empty(), "{errors:?}");
    props
        .into_iter()
        .map(|p| (p.key, p.value, p.line))
        .collect()
}

fn ok(text: &str) -> ProtectionSection {
    match parse(dir(), text, None) {
        Ok(c) => c.protection,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn err(text: &str) -> SignServerConfError {
    match parse(dir(), text, None) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

/// Asserts one problem at `line` naming `key`, whose text contains `words`.
fn has(e: &SignServerConfError, line: usize, key: &str, words: &str) {
    let prefix = format!("/opt/signserver/conf/databaseprotection.properties:{line}: {key}: ");
    assert!(
        e.problems().iter().any(|p| {
            let p = p.to_string();
            p.starts_with(&prefix) && p.contains(words)
        }),
        "no problem {prefix}...{words} in:\n{e}"
    );
}

/// A valid PKCS#11 entry 0 with keyid 1 (lines 1-6), for tests to append to.
const P11: &str = "databaseprotection.keyid = 1\n\
        databaseprotection.keyid.0 = 1\n\
        databaseprotection.keylabel.0 = dbProtKey\n\
        databaseprotection.classname.0 = org.cesecore.keys.token.PKCS11CryptoToken\n\
        databaseprotection.properties.0 = sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, slotLabelType=SLOT_NUMBER, slotLabelValue=3\n\
        databaseprotection.tokenpin.0 = foo123\n";

/// `text` with signing turned on, on a line after all of it (CESeCore's default is off).
fn signing(text: &str) -> String {
    format!("{text}databaseprotection.enablesign = true\n")
}

fn public_entry_text(n: usize, keyid: i32, data: &str) -> String {
    format!(
        "databaseprotection.keyid.{n} = {keyid}\n\
             databaseprotection.keylabel.{n} = old\n\
             databaseprotection.classname.{n} = PublicCryptoToken\n\
             databaseprotection.data.{n} = {data}\n"
    )
}

#[test]
fn properties_syntax() {
    let text = "# comment\n\
            \x20  ! another comment \\\n\
            plain=value\n\
            \tspaced   =   padded value  \n\
            colon:x\n\
            colon2 : y\n\
            white space\n\
            white2   \t  =  z\n\
            twice = = v\n\
            empty\n\
            empty2 =\n\
            cont = one, \\\n\
            \x20   two, \\\n\
            \x20   # not a comment\n\
            even = a\\\\\n\
            next = b\n\
            esc\\ key\\=x\\:y = \\t\\n\\r\\f\\\\\\q\n\
            uni = f\\u00e5r \\uD83D\\uDE00\n\
            crlf = 1\r\n\
            cr = 2\rlast = 3\\";
    assert_eq!(
        props(text),
        [
            ("plain", "value", 3),
            ("spaced", "padded value  ", 4),
            ("colon", "x", 5),
            ("colon2", "y", 6),
            ("white", "space", 7),
            ("white2", "z", 8),
            ("twice", "= v", 9),
            ("empty", "", 10),
            ("empty2", "", 11),
            ("cont", "one, two, # not a comment", 12),
            ("even", "a\\", 15),
            ("next", "b", 16),
            ("esc key=x:y", "\t\n\r\x0c\\q", 17),
            ("uni", "f\u{e5}r \u{1F600}", 18),
            ("crlf", "1", 19),
            ("cr", "2", 20),
            ("last", "3", 21),
        ]
        .map(|(k, v, l)| (k.to_string(), v.to_string(), l))
    );
    // A comment line ending in a backslash does not continue.
    assert_eq!(props("# a \\\nk=v\n"), [("k".into(), "v".into(), 2)]);
    // An empty continuation line ends the logical line.
    assert_eq!(
        props("k = a\\\n\nj = b"),
        [("k".into(), "a".into(), 1), ("j".into(), "b".into(), 3)]
    );
}

#[test]
fn properties_syntax_errors_name_key_and_line() {
    let (props, errors) = parse_properties("a = 1\nbad = x\\u12G4y\nc = \\uD800\n");
    assert_eq!(props.len(), 1);
    assert_eq!(errors.len(), 2);
    assert_eq!((errors[0].line, errors[0].key.as_str()), (2, "bad"));
    assert!(errors[0].reason.contains("\\u12G4"), "{errors:?}");
    assert_eq!((errors[1].line, errors[1].key.as_str()), (3, "c"));
    let e = err(&format!("{P11}databaseprotection.version.0 = \\u00\n"));
    has(&e, 7, "databaseprotection.version.0", "malformed");
}

#[test]
fn realistic_signserver_directory() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/signserver/conf");
    let c = match load(&conf) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.node_id.as_deref(), Some("signserver-node-1"));
    let p = &c.protection;
    assert!(p.enable_sign && p.enable_verify && p.error_on_verify_fail);
    assert_eq!(p.keyid, Some(400));
    assert_eq!(
        p.keys.len(),
        2,
        "the null-label entry is skipped: {:?}",
        p.keys
    );
    match &p.keys[0] {
        KeyEntry::Pkcs11 {
            keyid: 400,
            nodes: None,
            retired_after: None,
            library,
            slot_label: Some(label),
            slot_number: None,
            slot_index: None,
            key_label,
            key_id: None,
            pin: Some(pin),
            pin_env: None,
            pin_file: None,
            algorithm: Some(TokenAlgorithm::SHA256WithRSA),
            sessions: None,
        } => {
            assert_eq!(library, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
            assert_eq!(label, "SignServer audit");
            assert_eq!((key_label.as_str(), pin.as_str()), ("dbProtKey", "foo123"));
        }
        other => panic!("{other:?}"),
    }
    match &p.keys[1] {
        KeyEntry::Public {
            keyid: 300,
            nodes: None,
            retired_after: None,
            algorithm: None,
            file: None,
            pem: Some(pem),
        } => assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}"),
        other => panic!("{other:?}"),
    }
    // And the result is what config::load_keys accepts for verification.
    let public_only = ProtectionSection {
        enable_sign: false,
        keys: vec![p.keys[1].clone()],
        ..ProtectionSection::default()
    };
    let tmp = tempfile::tempdir().map_err(|e| e.to_string());
    let tmp = tmp
        .as_ref()
        .map(|t| t.path())
        .unwrap_or(Path::new("/nonexistent"));
    let loaded = crate::config::load_keys(&public_only, tmp, crate::config::KeyMode::VerifyOnly);
    assert!(loaded.is_ok(), "{:?}", loaded.err());
}

#[test]
fn load_reports_a_missing_file_and_reads_latin1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = load(tmp.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("databaseprotection.properties: cannot read"),
        "{e}"
    );
    // ISO-8859-1 bytes (Java's default encoding for .properties): 0xE5 is å.
    let mut bytes = P11.replace("dbProtKey", "k").into_bytes();
    bytes.extend_from_slice(b"databaseprotection.keylabel.0 = n\xe5got\n");
    let (text, looks_utf8) = decode_text(&bytes);
    assert!(text.contains("n\u{e5}got") && !looks_utf8);
    // UTF-8 bytes are read as Java reads them: ISO-8859-1, so "nöde1" is "nÃ¶de1".
    let (text, looks_utf8) = decode_text("cluster.nodeid=nöde1\n".as_bytes());
    assert_eq!(text, "cluster.nodeid=n\u{c3}\u{b6}de1\n");
    assert!(looks_utf8);
    std::fs::write(tmp.path().join(PROTECTION_FILE), &bytes).expect("write");
    // keylabel.0 now given twice: reported with both lines.
    let e = load(tmp.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains(":7: databaseprotection.keylabel.0: given twice (also on line 3)"),
        "{e}"
    );
}

#[test]
fn null_label_skips_the_entry_without_validating_it() {
    let text = format!(
        "{P11}databaseprotection.keyid.1 = 7\n\
             databaseprotection.keylabel.1 = NULL\n\
             databaseprotection.classname.1 = SoftCryptoToken\n\
             databaseprotection.version.1 = 9\n\
             databaseprotection.sigalg.1 = MD5WithRSA\n\
             databaseprotection.keyid.2 = 8\n\
             databaseprotection.keylabel.2 = null\n"
    );
    let p = ok(&text);
    assert_eq!(p.keys.len(), 1);
    assert_eq!(p.keys[0].keyid(), 1);
    // A skipped entry cannot be the signing key.
    let e = err(&signing(&text.replace(
        "databaseprotection.keyid = 1",
        "databaseprotection.keyid = 7",
    )));
    has(
        &e,
        1,
        "databaseprotection.keyid",
        "disabled (keylabel.1 = null)",
    );
}

#[test]
fn table_suffix_wins_and_defaults_apply() {
    // Absent, enablesign is false, as in CESeCore; the other two default to true.
    let p = ok(P11);
    assert!(!p.enable_sign && p.enable_verify && p.error_on_verify_fail);
    assert!(ok(&signing(P11)).enable_sign);
    let p = ok(&format!(
        "{P11}databaseprotection.enablesign = true\n\
             databaseprotection.enablesign.AuditRecordData = FALSE \n\
             databaseprotection.enableverify.AuditRecordData = true\n\
             databaseprotection.enableverify = false\n\
             databaseprotection.erroronverifyfail = false\n\
             databaseprotection.keyid.AuditRecordData = 5\n"
    ));
    assert!(!p.enable_sign && p.enable_verify && !p.error_on_verify_fail);
    assert_eq!(p.keyid, Some(5));
    // The unused plain value is still validated.
    let e = err(&format!(
        "{P11}databaseprotection.enablesign = yes\n\
             databaseprotection.enablesign.AuditRecordData = true\n"
    ));
    has(
        &e,
        7,
        "databaseprotection.enablesign",
        "expected true or false",
    );
}

#[test]
fn gap_rule() {
    let text = format!(
        "{P11}databaseprotection.keyid.2 = 9\n\
             databaseprotection.classname.2 = PublicCryptoToken\n\
             databaseprotection.keylabel.1 = orphan\n"
    );
    let e = err(&text);
    assert_eq!(e.problems().len(), 3, "{e}");
    has(&e, 7, "databaseprotection.keyid.2", "keyid.1 is missing");
    has(&e, 8, "databaseprotection.classname.2", "silently ignore");
    has(
        &e,
        9,
        "databaseprotection.keylabel.1",
        "key entry 1 is never read",
    );
    assert!(
        e.to_string()
            .starts_with("3 problems in the SignServer configuration:\n")
    );
}

#[test]
fn pkcs11_slots_and_algorithms() {
    let slot = |props: &str| {
        let p = ok(&P11.replace(
                "sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, slotLabelType=SLOT_NUMBER, slotLabelValue=3",
                props,
            ));
        match &p.keys[0] {
            KeyEntry::Pkcs11 {
                slot_label,
                slot_number,
                slot_index,
                ..
            } => (slot_label.clone(), *slot_number, *slot_index),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        slot("sharedLibrary=/l.so,slotLabelType=SLOT_NUMBER,slotLabelValue=3"),
        (None, Some(3), None)
    );
    assert_eq!(
        slot(" slotLabelType = SLOT_INDEX , slotLabelValue=i0, sharedLibrary=/l.so, "),
        (None, None, Some(0))
    );
    assert_eq!(
        slot("sharedLibrary=/l.so, slotLabelType=SLOT_INDEX, slotLabelValue=2"),
        (None, None, Some(2))
    );
    assert_eq!(
        slot("sharedLibrary=/l.so, slotLabelType=SLOT_LABEL, slotLabelValue=my token"),
        (Some("my token".into()), None, None)
    );
    assert_eq!(slot("sharedLibrary=/l.so, slot=5"), (None, Some(5), None));
    assert_eq!(slot("sharedLibrary=/l.so, slot=i1"), (None, None, Some(1)));
    assert_eq!(
        slot("sharedLibrary=/l.so, slotListIndex=4, attributesFile=/etc/a.cfg"),
        (None, None, Some(4))
    );

    let alg = |extra: &str| match &ok(&format!("{P11}{extra}")).keys[0] {
        KeyEntry::Pkcs11 { algorithm, .. } => *algorithm,
        other => panic!("{other:?}"),
    };
    assert_eq!(alg(""), Some(TokenAlgorithm::SHA256WithRSA));
    assert_eq!(
        alg("databaseprotection.sigalg.0 = sha256withecdsa\n"),
        Some(TokenAlgorithm::SHA256WithECDSA)
    );
    for (name, expected) in [
        ("SHA384WithRSA", TokenAlgorithm::SHA384WithRSA),
        ("SHA512withRSA", TokenAlgorithm::SHA512WithRSA),
        ("SHA384WithECDSA", TokenAlgorithm::SHA384WithECDSA),
    ] {
        let line = format!("databaseprotection.sigalg.0 = {name}\n");
        assert_eq!(alg(&line), Some(expected), "{name}");
    }
    assert_eq!(
        alg("databaseprotection.version.0 = 1\n"),
        Some(TokenAlgorithm::HmacSHA256)
    );
    assert_eq!(
        alg("databaseprotection.version.0 = 1\ndatabaseprotection.sigalg.0 = HmacSHA256\n"),
        Some(TokenAlgorithm::HmacSHA256)
    );
    // A clear PIN that looks like hex is used (with a warning), trailing blanks trimmed.
    let hex = "0123456789abcdef0123456789abcdef";
    match &ok(&P11.replace("foo123", &format!("{hex}  "))).keys[0] {
        KeyEntry::Pkcs11 { pin, .. } => assert_eq!(pin.as_deref(), Some(hex)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn pkcs11_errors() {
    let with = |from: &str, to: &str| err(&P11.replace(from, to));
    let key = "databaseprotection.properties.0";
    has(
        &with(
            "sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, ",
            "colour=blue, ",
        ),
        5,
        key,
        "unknown token property \"colour\"",
    );
    has(
        &with("sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, ", ""),
        5,
        key,
        "sharedLibrary is missing",
    );
    has(
        &with(", slotLabelType=SLOT_NUMBER, slotLabelValue=3", ""),
        5,
        key,
        "the slot is missing",
    );
    has(
        &with("slotLabelValue=3", "slotLabelValue=x"),
        5,
        key,
        "not a slot number",
    );
    has(
        &with("SLOT_NUMBER", "SUN_FILE"),
        5,
        key,
        "\"SUN_FILE\" is not supported",
    );
    has(
        &with("slotLabelValue=3", "slotLabelValue=3, slot=4"),
        5,
        key,
        "not both",
    );
    has(
        &with("slotLabelValue=3", "junk"),
        5,
        key,
        "\"junk\" is not k=v",
    );
    has(
        &with("databaseprotection.tokenpin.0 = foo123\n", ""),
        2,
        "databaseprotection.tokenpin.0",
        "missing; key entry 0",
    );
    for pin in ["encv1:abc:100:ff", "enc:00ff"] {
        has(
            &with("foo123", pin),
            6,
            "databaseprotection.tokenpin.0",
            "encrypted PINs (enc:) are not supported",
        );
    }
    // OBF: is Jetty's reversible encoding ("password" below, as Jetty's documentation gives
    // it): decoded, with a warning; a value that does not decode is an error.
    let p = ok(&P11.replace("foo123", "OBF:1v2j1uum1xtv1zej1zer1xtn1uvk1v1v"));
    assert!(matches!(&p.keys[0], KeyEntry::Pkcs11 { pin: Some(pin), .. } if pin == "password"));
    has(
        &with("foo123", "OBF:1v2j1uu"),
        6,
        "databaseprotection.tokenpin.0",
        "does not decode",
    );
    has(
        &with("databaseprotection.keylabel.0 = dbProtKey\n", ""),
        2,
        "databaseprotection.keylabel.0",
        "missing",
    );
    has(
        &with(
            "databaseprotection.classname.0 = org.cesecore.keys.token.PKCS11CryptoToken\n",
            "",
        ),
        2,
        "databaseprotection.classname.0",
        "missing",
    );
    let e = err(&format!("{P11}databaseprotection.sigalg.0 = HmacSHA256\n"));
    has(
        &e,
        7,
        "databaseprotection.sigalg.0",
        "needs databaseprotection.version.0 = 1",
    );
    let e = err(&format!("{P11}databaseprotection.sigalg.0 = SHA1WithRSA\n"));
    has(
        &e,
        7,
        "databaseprotection.sigalg.0",
        "unsupported algorithm \"SHA1WithRSA\"",
    );
    let e = err(&format!("{P11}databaseprotection.version.0 = 3\n"));
    has(
        &e,
        7,
        "databaseprotection.version.0",
        "expected 1 (HMAC) or 2",
    );
    let e = err(&P11.replace("keyid.0 = 1", "keyid.0 = one"));
    has(&e, 2, "databaseprotection.keyid.0", "decimal integer");
    // No second "no key entry has keyid 1" for the same mistake.
    assert_eq!(e.problems().len(), 1, "{e}");
}

#[test]
fn token_class_errors() {
    let e = err(&P11.replace(
        "org.cesecore.keys.token.PKCS11CryptoToken",
        "SoftCryptoToken",
    ));
    has(
        &e,
        4,
        "databaseprotection.classname.0",
        "SoftCryptoToken (PKCS#12 in data.0) is not supported; export the key to PKCS#8 PEM",
    );
    let e = err(&P11.replace("PKCS11CryptoToken", "AzureCryptoToken"));
    has(
        &e,
        4,
        "databaseprotection.classname.0",
        "unsupported token class \"AzureCryptoToken\"",
    );
}

#[test]
fn global_key_errors() {
    let e = err(&format!(
        "{P11}databaseprotection.enablesing = true\n\
             databaseprotection.enableverify.CertificateData = false\n\
             databaseprotection.keyid.01 = 3\n\
             databaseprotection.enablesign = maybe\n\
             databaseprotection.keyid.AuditRecordData = x\n\
             other.setting = ignored\n\
             databaseprotection.keyid = 1\n"
    ));
    has(
        &e,
        7,
        "databaseprotection.enablesing",
        "unknown database protection key",
    );
    // Another table's setting (SignServer and EJBCA share the file) is ignored, not refused.
    assert!(!e.to_string().contains("CertificateData"), "{e}");
    has(
        &e,
        9,
        "databaseprotection.keyid.01",
        "without leading zeros",
    );
    has(
        &e,
        10,
        "databaseprotection.enablesign",
        "expected true or false",
    );
    has(
        &e,
        11,
        "databaseprotection.keyid.AuditRecordData",
        "decimal integer",
    );
    has(
        &e,
        13,
        "databaseprotection.keyid",
        "given twice (also on line 1)",
    );
    assert_eq!(e.problems().len(), 5, "{e}");
    // erroronverifyfail: CESeCore takes every value but "false" as true.
    let p = ok(&format!(
        "{P11}databaseprotection.erroronverifyfail = yes\n"
    ));
    assert!(p.error_on_verify_fail);
    let p = ok(&format!(
        "{P11}databaseprotection.erroronverifyfail = FALSE\n"
    ));
    assert!(!p.error_on_verify_fail);
}

#[test]
fn current_keyid_checks() {
    let no_keyid = P11.replace("databaseprotection.keyid = 1\n", "");
    let e = err(&signing(&no_keyid));
    assert_eq!(e.problems().len(), 1);
    assert!(
        e.to_string().starts_with(
            "/opt/signserver/conf/databaseprotection.properties: databaseprotection.keyid"
        ),
        "{e}"
    );
    // Without signing, no current key is needed.
    let p = ok(&format!(
        "{no_keyid}databaseprotection.enablesign = false\n"
    ));
    assert_eq!((p.enable_sign, p.keyid), (false, None));
    let e = err(&signing(&P11.replace("keyid = 1", "keyid = 2")));
    has(
        &e,
        1,
        "databaseprotection.keyid",
        "no key entry has keyid 2",
    );
    let text = format!(
        "{P11}{}",
        public_entry_text(1, 2, &STANDARD.encode(RSA_SPKI))
    );
    // CESeCore's database CLI recipe: the signing keyid as a PublicCryptoToken. It is read;
    // a server refuses it when it loads the keys (config::load_keys), the CLI verifies with it.
    let p = ok(&text.replace("keyid = 1", "keyid = 2"));
    assert_eq!(p.keyid, Some(2));
    assert!(matches!(p.keys[1], KeyEntry::Public { keyid: 2, .. }));
    let e = err(&format!(
        "{P11}{}",
        public_entry_text(1, 1, &STANDARD.encode(RSA_SPKI))
    ));
    has(
        &e,
        7,
        "databaseprotection.keyid.1",
        "keyid 1 is also the keyid of key entry 0 (line 2)",
    );
}

#[test]
fn public_data_forms() {
    let public = |data: &str, extra: &str| {
        let p = ok(&format!("{P11}{}{extra}", public_entry_text(1, 2, data)));
        match &p.keys[1] {
            KeyEntry::Public {
                keyid: 2,
                nodes: None,
                retired_after: None,
                algorithm,
                file: None,
                pem: Some(pem),
            } => (*algorithm, pem.clone()),
            other => panic!("{other:?}"),
        }
    };
    // base64 of PEM text, wrapped over lines.
    let b64 = STANDARD.encode(EC_PEM);
    let (alg, pem) = public(&format!("{} \\\n   {}", &b64[..40], &b64[40..]), "");
    assert_eq!((alg, pem.as_str()), (None, EC_PEM));
    // DER certificates and SubjectPublicKeyInfos.
    for (der, label) in [
        (RSA_CERT, "CERTIFICATE"),
        (EC_CERT, "CERTIFICATE"),
        (RSA_SPKI, "PUBLIC KEY"),
        (EC_SPKI, "PUBLIC KEY"),
    ] {
        let (_, pem) = public(&STANDARD.encode(der), "");
        assert_eq!(pem, crate::format::pem::encode(label, der));
    }
    // Unpadded base64 is accepted; an explicit sigalg is kept.
    let (alg, _) = public(
        STANDARD.encode(EC_CERT).trim_end_matches('='),
        "databaseprotection.sigalg.1 = SHA256withECDSA\n",
    );
    assert_eq!(alg, Some(SignatureAlgorithm::SHA256WithECDSA));
    // SHA-384 and SHA-512 signatures, SignServer's other choices, are kept too.
    for (cert, name, expected) in [
        (
            EC_CERT,
            "SHA384WithECDSA",
            SignatureAlgorithm::SHA384WithECDSA,
        ),
        (RSA_CERT, "SHA384WithRSA", SignatureAlgorithm::SHA384WithRSA),
        (RSA_CERT, "SHA512WithRSA", SignatureAlgorithm::SHA512WithRSA),
    ] {
        let line = format!("databaseprotection.sigalg.1 = {name}\n");
        let (alg, _) = public(&STANDARD.encode(cert), &line);
        assert_eq!(alg, Some(expected), "{name}");
    }
}

#[test]
fn public_errors() {
    let entry =
        |data: &str, extra: &str| err(&format!("{P11}{}{extra}", public_entry_text(1, 2, data)));
    let data = "databaseprotection.data.1";
    has(&entry("not*base64", ""), 10, data, "not base64");
    has(
        &entry(&STANDARD.encode(b"hello"), ""),
        10,
        data,
        "not a usable public key",
    );
    let e = entry(
        &STANDARD.encode(EC_CERT),
        "databaseprotection.sigalg.1 = SHA256WithRSA\n",
    );
    has(
        &e,
        10,
        data,
        "with databaseprotection.sigalg.1 = SHA256WithRSA",
    );
    let e = entry(
        &STANDARD.encode(RSA_CERT),
        "databaseprotection.version.1 = 1\n",
    );
    has(
        &e,
        11,
        "databaseprotection.version.1",
        "an HMAC key has no public part",
    );
    let e = entry(
        &STANDARD.encode(RSA_CERT),
        "databaseprotection.sigalg.1 = HmacSHA256\n",
    );
    has(
        &e,
        11,
        "databaseprotection.sigalg.1",
        "not a signature algorithm",
    );
    let e = err(&format!(
        "{P11}{}",
        public_entry_text(1, 2, "").replace("databaseprotection.data.1 = \n", "")
    ));
    has(&e, 7, data, "needs the base64 public key or certificate");
}

#[test]
fn cesecore_node_id() {
    let node = |text: &str| parse(dir(), P11, Some(text)).map(|c| c.node_id);
    assert_eq!(
        node("cluster.nodeid = node-7 \nother=1\nother=2\n")
            .ok()
            .flatten()
            .as_deref(),
        Some("node-7")
    );
    assert_eq!(node("cluster.nodeid=${hostname}").ok(), Some(None));
    assert_eq!(node("cluster.nodeid = Undefined").ok(), Some(None));
    assert_eq!(node("cluster.nodeid =").ok(), Some(None));
    assert_eq!(node("# nothing\n").ok(), Some(None));
    assert_eq!(parse(dir(), P11, None).ok().map(|c| c.node_id), Some(None));
    let e = node("cluster.nodeid = ${env:NODE}")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.starts_with(
            "/opt/signserver/conf/cesecore.properties:1: cluster.nodeid: variable substitution"
        ),
        "{e}"
    );
    let e = node("cluster.nodeid = a\ncluster.nodeid = b\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("cesecore.properties:2: cluster.nodeid: given twice"),
        "{e}"
    );
}

#[test]
fn signservers_other_spellings_are_read() {
    // The P11NG token class and a brace-wrapped properties list, as SignServer writes them.
    let text = P11
        .replace(
            "org.cesecore.keys.token.PKCS11CryptoToken",
            "org.signserver.p11ng.common.cryptotoken.P11NGDatabaseProtectionCryptoToken",
        )
        .replace(
            "sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, slotLabelType=SLOT_NUMBER, slotLabelValue=3",
            "{sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, slotLabelType=SLOT_NUMBER, slotLabelValue=3}",
        );
    let p = ok(&text);
    match &p.keys[0] {
        KeyEntry::Pkcs11 {
            library,
            slot_number,
            ..
        } => {
            assert_eq!(library, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
            assert_eq!(*slot_number, Some(3));
        }
        other => panic!("{other:?}"),
    }
}
