//! Compatibility proven against an independent implementation: the Java program in tests/java
//! (JDK's Signature, Mac and XMLEncoder) produces protections and XML that our code must accept,
//! and checks what ours produces. Also OpenSSL on a row written by the real server.

use std::path::{Path, PathBuf};
use std::process::Command;

use auditseal_core::details::{self, DetailValue, Details, MapClass};
use auditseal_core::keys::KeyRing;
use auditseal_core::pem;
use auditseal_core::protector::protect;
use auditseal_core::record::AuditRecord;
use auditseal_core::token::{CryptoToken, HmacToken, SoftwareToken};
use auditseal_core::verify::verify_row;
use auditseal_e2e::java::{JVal, JavaCompat, parse_spec, row_line, verify_line, write_spec};
use auditseal_e2e::{Server, event};

fn sample_rows() -> Vec<AuditRecord> {
    let base = AuditRecord {
        pk: "0123456789abcdef0123456789abcdef".into(),
        node_id: "node1".into(),
        sequence_number: 0,
        time_stamp: 1_764_000_000_000,
        event_type: "PROCESS".into(),
        event_status: "SUCCESS".into(),
        auth_token: "CN=Signer, O=Åland".into(),
        service: "SIGNSERVER".into(),
        module: "WORKER".into(),
        custom_id: None,
        search_detail1: None,
        search_detail2: None,
        additional_details: None,
        row_version: 0,
        row_protection: None,
    };
    let mut rows = vec![base.clone()];
    let mut r = base.clone();
    r.sequence_number = 1;
    r.time_stamp = -1;
    r.custom_id = Some(String::new());
    r.search_detail1 = Some("a<sep/>b".into());
    r.search_detail2 = Some("tab\there, newline\nthere, emoji 🙂".into());
    r.additional_details = Some(details::encode(
        &vec![("KEYALIAS".into(), DetailValue::String("signKey".into()))],
        MapClass::Base64PutHashMap,
        "17.0.15",
    ));
    rows.push(r);
    rows
}

fn fields(r: &AuditRecord) -> [Option<String>; 13] {
    auditseal_e2e::record_fields(r)
}

fn refs(f: &[Option<String>; 13]) -> [Option<&str>; 13] {
    std::array::from_fn(|i| f[i].as_deref())
}

fn openssl(args: &[&str]) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A key made by OpenSSL: its PEM file, its PKCS#8 DER file (for Java) and its public key PEM.
fn openssl_files(dir: &Path, name: &str, genpkey: &[&str]) -> (PathBuf, String, String) {
    let pem_path = dir.join(format!("{name}.pem"));
    let der_path = dir.join(format!("{name}.der"));
    let pub_path = dir.join(format!("{name}.pub.pem"));
    let mut args = vec!["genpkey", "-out", pem_path.to_str().unwrap()];
    args.extend_from_slice(genpkey);
    openssl(&args);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        pem_path.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        der_path.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        pem_path.to_str().unwrap(),
        "-pubout",
        "-out",
        pub_path.to_str().unwrap(),
    ]);
    (
        pem_path,
        der_path.to_str().unwrap().into(),
        pub_path.to_str().unwrap().into(),
    )
}

/// An RSA-2048 or EC P-256 key made by OpenSSL, as our token and as a PKCS#8 DER file for Java.
fn openssl_key(dir: &Path, name: &str, genpkey: &[&str]) -> (SoftwareToken, String, String) {
    let (pem_path, der, public) = openssl_files(dir, name, genpkey);
    let token = SoftwareToken::from_pem(&std::fs::read_to_string(&pem_path).unwrap(), &pem_path, 7)
        .unwrap();
    (token, der, public)
}

/// SignServer may protect with SHA384WithRSA, SHA512WithRSA or SHA384WithECDSA, on EC P-256 or
/// P-384 keys: rows Java signs so verify with the public key configured with that algorithm;
/// they fail under the SHA-256 algorithm of the same key, and a changed row fails.
#[test]
fn java_rows_signed_with_sha384_and_sha512_verify() {
    use auditseal_core::keys::VerifyKey;
    use auditseal_core::token::Algorithm;
    let java = JavaCompat::get();
    let dir = tempfile::tempdir().unwrap();
    let ec = |curve: &str| ["-algorithm", "EC", "-pkeyopt", curve].map(String::from);
    let rsa = openssl_files(
        dir.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let p256 = openssl_files(
        dir.path(),
        "p256",
        &ec("ec_paramgen_curve:P-256").each_ref().map(String::as_str),
    );
    let p384 = openssl_files(
        dir.path(),
        "p384",
        &ec("ec_paramgen_curve:P-384").each_ref().map(String::as_str),
    );
    let rows = sample_rows();
    let input: String = rows
        .iter()
        .map(|r| row_line(&refs(&fields(r))) + "\n")
        .collect();
    for (key, alg, other) in [
        (&rsa, Algorithm::Sha384WithRsa, Algorithm::Sha256WithRsa),
        (&rsa, Algorithm::Sha512WithRsa, Algorithm::Sha384WithRsa),
        (
            &p256,
            Algorithm::Sha384WithEcdsa,
            Algorithm::Sha256WithEcdsa,
        ),
        (
            &p384,
            Algorithm::Sha384WithEcdsa,
            Algorithm::Sha256WithEcdsa,
        ),
        (
            &p384,
            Algorithm::Sha256WithEcdsa,
            Algorithm::Sha384WithEcdsa,
        ),
    ] {
        let out = java.run_ok(
            &[
                "protect",
                "--sign",
                &key.1,
                "--alg",
                alg.name(),
                "--keyid",
                "7",
            ],
            &input,
        );
        let public = std::fs::read_to_string(&key.2).unwrap();
        let ring = |a: Algorithm| {
            let mut ring = KeyRing::new();
            ring.insert(7, VerifyKey::from_public_pem(&public, Some(a)).unwrap());
            ring
        };
        let (right, wrong) = (ring(alg), ring(other));
        let protections: Vec<&str> = out.lines().collect();
        assert_eq!(protections.len(), rows.len());
        for (r, p) in rows.iter().zip(&protections) {
            let mut row = r.clone();
            row.row_protection = Some(p.to_string());
            verify_row(&right, &Default::default(), &row)
                .unwrap_or_else(|e| panic!("{alg} ({}): Java's {p} rejected: {e}", key.2));
            assert!(
                verify_row(&wrong, &Default::default(), &row).is_err(),
                "{alg} row accepted as {other}"
            );
            row.event_status = "FAILURE".into();
            assert!(verify_row(&right, &Default::default(), &row).is_err());
        }
    }
}

#[test]
fn java_and_rust_protections_verify_each_other() {
    let java = JavaCompat::get();
    let dir = tempfile::tempdir().unwrap();
    let rsa = openssl_key(
        dir.path(),
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let ec = openssl_key(
        dir.path(),
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let secret = "a shared HMAC secret";
    let hmac = HmacToken::new(7, secret.as_bytes());
    let rows = sample_rows();
    let input: String = rows
        .iter()
        .map(|r| row_line(&refs(&fields(r))) + "\n")
        .collect();

    let cases: Vec<(&dyn CryptoToken, Vec<String>, Vec<String>)> = vec![
        (
            &hmac,
            vec!["--hmac".into(), hex::encode(secret)],
            vec!["--hmac".into(), hex::encode(secret)],
        ),
        (
            &rsa.0,
            vec![
                "--sign".into(),
                rsa.1.clone(),
                "--alg".into(),
                "SHA256WithRSA".into(),
            ],
            vec!["--pubkey".into(), rsa.2.clone()],
        ),
        (
            &ec.0,
            vec![
                "--sign".into(),
                ec.1.clone(),
                "--alg".into(),
                "SHA256WithECDSA".into(),
            ],
            vec!["--pubkey".into(), ec.2.clone()],
        ),
    ];
    for (token, sign_args, verify_args) in cases {
        let mut ring = KeyRing::new();
        ring.insert(7, token.verify_key());

        // Java protects, we verify; a changed byte fails.
        let mut args = vec!["protect"];
        args.extend(sign_args.iter().map(String::as_str));
        args.extend(["--keyid", "7"]);
        let out = java.run_ok(&args, &input);
        let protections: Vec<&str> = out.lines().collect();
        assert_eq!(protections.len(), rows.len());
        for (r, p) in rows.iter().zip(&protections) {
            let mut row = r.clone();
            row.row_protection = Some(p.to_string());
            verify_row(&ring, &Default::default(), &row)
                .unwrap_or_else(|e| panic!("{}: Java's {p} rejected: {e}", token.algorithm()));
            row.event_status = "FAILURE".into();
            assert!(verify_row(&ring, &Default::default(), &row).is_err());
        }

        // We protect, Java verifies; a changed byte fails there too.
        let mut lines = String::new();
        for r in &rows {
            let p = protect(token, r).unwrap();
            lines += &(verify_line(&refs(&fields(r)), Some(&p)) + "\n");
            let mut tampered = fields(r);
            tampered[4] = Some("KEYGEN".into());
            lines += &(verify_line(&refs(&tampered), Some(&p)) + "\n");
        }
        let mut args = vec!["verify"];
        args.extend(verify_args.iter().map(String::as_str));
        let (code, out, err) = java.run(&args, &lines);
        let verdicts: Vec<&str> = out.lines().collect();
        assert_eq!(verdicts.len(), rows.len() * 2, "{out}{err}");
        for (i, v) in verdicts.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(
                    *v,
                    "OK",
                    "{}: Java rejected our row {i}: {err}",
                    token.algorithm()
                );
            } else {
                assert!(
                    v.starts_with("FAIL"),
                    "{}: Java accepted a tampered row",
                    token.algorithm()
                );
            }
        }
        assert_eq!(code, 1, "exit 1 because the tampered rows fail");
    }
}

fn to_jval(v: &DetailValue) -> JVal {
    match v {
        DetailValue::Null => JVal::Null,
        DetailValue::String(s) => JVal::Str(s.clone()),
        DetailValue::Int(i) => JVal::Int(*i),
        DetailValue::Long(l) => JVal::Long(*l),
        DetailValue::Bool(b) => JVal::Bool(*b),
        DetailValue::Double(d) => JVal::Double(format!("{d:?}")),
        DetailValue::Float(f) => JVal::Float(format!("{f:?}")),
        DetailValue::Date(ms) => JVal::Date(*ms),
        DetailValue::Class(c) => panic!("no class values in these tests: {c}"),
        DetailValue::List(l) => JVal::List(l.iter().map(to_jval).collect()),
        DetailValue::Map(m) => JVal::Map(m.iter().map(|(k, v)| (k.clone(), to_jval(v))).collect()),
    }
}

fn sample_details() -> Vec<Details> {
    use DetailValue::*;
    vec![
        vec![("KEYALIAS".into(), String("signKey".into()))],
        vec![],
        vec![
            ("LOG_ID".into(), String("4f1c".into())),
            ("ascii specials".into(), String("a&b<c>d\"e'f".into())),
            ("non-ascii".into(), String("åäö".into())),
            ("control".into(), String("line1\r\nline2\u{1}x\ttab".into())),
            ("empty".into(), String(std::string::String::new())),
            ("already".into(), String("B64:aGVsbG8=".into())),
            ("sep".into(), String("x<sep/>y".into())),
            ("int".into(), Int(-42)),
            ("long".into(), Long(10_000_000_000)),
            ("bool".into(), Bool(false)),
            ("null".into(), Null),
            ("double".into(), Double(1.5)),
            ("date".into(), Date(1_764_000_000_000)),
            (
                "list".into(),
                List(vec![String("a".into()), Int(1), Null, String("ü\r".into())]),
            ),
            (
                "nested".into(),
                Map(vec![
                    ("inner åäö".into(), String("stays raw: ö&\r".into())),
                    ("n".into(), Long(5)),
                ]),
            ),
            ("key with åäö & <tags>".into(), String("v".into())),
        ],
    ]
}

/// What a Base64PutHashMap holds after `put`: top-level non-printable strings become B64:.
fn after_put_rule(d: &Details) -> Details {
    use base64_rule::apply;
    d.iter().map(|(k, v)| (k.clone(), apply(v))).collect()
}

mod base64_rule {
    use auditseal_core::details::DetailValue;
    pub fn apply(v: &DetailValue) -> DetailValue {
        match v {
            DetailValue::String(s)
                if !(s.is_empty()
                    || s.starts_with("B64:")
                    || s.bytes().all(|b| (32..=126).contains(&b))) =>
            {
                DetailValue::String(format!("B64:{}", b64(s.as_bytes())))
            }
            other => other.clone(),
        }
    }
    fn b64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

fn java_version_of(xml: &str) -> String {
    let start = xml.find("<java version=\"").expect("java element") + 15;
    xml[start..start + xml[start..].find('"').unwrap()].to_string()
}

#[test]
fn details_xml_is_byte_identical_to_xmlencoder_both_ways() {
    let java = JavaCompat::get();
    for d in sample_details() {
        let spec_in: Vec<(String, JVal)> = d.iter().map(|(k, v)| (k.clone(), to_jval(v))).collect();
        for (class, flag) in [
            (MapClass::Base64PutHashMap, None),
            (MapClass::LinkedHashMap, Some("--linked")),
        ] {
            let mut args = vec!["xml-encode"];
            args.extend(flag);
            let java_xml = java.run_ok(&args, &write_spec(&spec_in));
            // Ours, with the same java version attribute, must be the same bytes.
            let ours = details::encode(&d, class, &java_version_of(&java_xml));
            assert_eq!(ours, java_xml, "encoding differs from XMLEncoder for {d:?}");
            // Java's XML decodes to what the map held.
            let expected = if flag.is_none() {
                after_put_rule(&d)
            } else {
                d.clone()
            };
            assert_eq!(details::decode(&java_xml).unwrap(), expected);
            // Java decodes ours to the same map.
            let back = parse_spec(&java.run_ok(&["xml-decode"], &ours)).unwrap();
            let expected_spec: Vec<(String, JVal)> = expected
                .iter()
                .map(|(k, v)| (k.clone(), to_jval(v)))
                .collect();
            assert_eq!(back, expected_spec);
        }
    }
}

#[tokio::test]
async fn server_rows_verify_with_java_and_openssl_using_the_published_key() {
    let java = JavaCompat::get();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let s = Server::start(&["--data-dir", d, "--node-id", "java-node"]).unwrap();
    let http = s.client();
    for i in 0..3 {
        let mut e = event("PROCESS");
        e["additionalDetails"] = serde_json::json!({"REQUEST_DIGEST": format!("ab{i}"), "WORKER_NAME": "Påls signer", "n": i});
        let r = http
            .post(format!("{}/api/v1/events", s.url))
            .json(&e)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let keys: serde_json::Value = http
        .get(format!("{}/api/v1/keys", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pem_text = keys["keys"][0]["publicKeyPem"].as_str().unwrap();
    let pub_path = dir.path().join("published.pem");
    std::fs::write(&pub_path, pem_text).unwrap();
    assert!(pem::decode("PUBLIC KEY", pem_text).is_some());
    let list: serde_json::Value = http
        .get(format!("{}/api/v1/events", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows: Vec<AuditRecord> = list["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_value(e.clone()).unwrap())
        .collect();
    // The three events and the first admin token's TOKEN_CREATE, the server's own.
    assert_eq!(rows.len(), 4);

    let lines: String = rows
        .iter()
        .map(|r| verify_line(&refs(&fields(r)), r.row_protection.as_deref()) + "\n")
        .collect();
    let out = java.run_ok(&["verify", "--pubkey", pub_path.to_str().unwrap()], &lines);
    assert_eq!(out, "OK\nOK\nOK\nOK\n");

    // OpenSSL: the protect string is the data, the hex after the last ':' the signature.
    let r = &rows[0];
    let data = dir.path().join("data");
    let sig = dir.path().join("sig");
    std::fs::write(&data, r.protect_string()).unwrap();
    let prot = r.row_protection.as_deref().unwrap();
    std::fs::write(&sig, hex::decode(prot.rsplit_once(':').unwrap().1).unwrap()).unwrap();
    let out = openssl(&[
        "dgst",
        "-sha256",
        "-verify",
        pub_path.to_str().unwrap(),
        "-signature",
        sig.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Verified OK");
    std::fs::write(&data, r.protect_string().replace("PROCESS", "PROCESs")).unwrap();
    let bad = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            pub_path.to_str().unwrap(),
            "-signature",
            sig.to_str().unwrap(),
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
