//! PKCS#11 tokens on a real SoftHSM2 token, in this process. PKCS#11 allows one context per
//! module per process and SoftHSM reads SOFTHSM2_CONF once, so every test here shares one token
//! (`hsm()`); tests that need their own token start server processes instead (tests/hsm_server.rs).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use auditseal_core::config::{FileConfig, KeyMode, load_keys};
use auditseal_core::keys::KeyRing;
use auditseal_core::protector::protect;
use auditseal_core::record::AuditRecord;
use auditseal_core::token::{Algorithm, SharedToken};
use auditseal_core::verify::verify_row;
use auditseal_e2e::hsm::{MODULE, PIN, SoftHsm};

fn hsm() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let h = SoftHsm::new("audit");
        // SAFETY-free but process-global: set before the first PKCS#11 call of this process.
        unsafe { std::env::set_var("SOFTHSM2_CONF", h.conf()) };
        h
    })
}

fn token_toml(keyid: i32, slot: &str, label: &str, extra: &str) -> String {
    format!(
        "[protection]\nkeyid = {keyid}\n[[protection.keys]]\nkind = 'pkcs11'\nkeyid = {keyid}\nlibrary = '{MODULE}'\n{slot}\nkey_label = '{label}'\n{extra}\n"
    )
}

fn open(toml_text: &str) -> Result<(SharedToken, KeyRing), String> {
    let cfg: FileConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().unwrap();
    let (setup, _) = load_keys(
        &cfg.protection.unwrap_or_default(),
        dir.path(),
        KeyMode::Server,
    )
    .map_err(|e| e.to_string())?;
    Ok((setup.current.unwrap(), setup.ring))
}

fn record(n: i64) -> AuditRecord {
    AuditRecord {
        pk: format!("{n:032x}"),
        node_id: "hsm-node".into(),
        sequence_number: n,
        time_stamp: 1_764_000_000_000 + n,
        event_type: "PROCESS".into(),
        event_status: "SUCCESS".into(),
        auth_token: "CN=Signer".into(),
        service: "SIGNSERVER".into(),
        module: "WORKER".into(),
        custom_id: None,
        search_detail1: Some("åäö".into()),
        search_detail2: None,
        additional_details: None,
        row_version: 0,
        row_protection: None,
    }
}

fn openssl_verify(pubkey: &Path, data: &[u8], sig: &[u8]) -> bool {
    openssl_verify_with("-sha256", pubkey, data, sig)
}

/// `openssl dgst DIGEST -verify`: DIGEST is -sha256, -sha384 or -sha512.
fn openssl_verify_with(digest: &str, pubkey: &Path, data: &[u8], sig: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d"), data).unwrap();
    std::fs::write(dir.path().join("s"), sig).unwrap();
    Command::new("openssl")
        .args([
            "dgst",
            digest,
            "-verify",
            pubkey.to_str().unwrap(),
            "-signature",
        ])
        .arg(dir.path().join("s"))
        .arg(dir.path().join("d"))
        .output()
        .unwrap()
        .status
        .success()
}

/// The token's RSA, EC and HMAC keys, opened as keyids `first`, `first + 1` and `first + 2`:
/// (keyid, label, algorithm, token, key ring).
fn the_three_keys(first: i32) -> Vec<(i32, &'static str, Algorithm, SharedToken, KeyRing)> {
    [
        ("rsakey", Algorithm::Sha256WithRsa),
        ("eckey", Algorithm::Sha256WithEcdsa),
        ("hmackey", Algorithm::HmacSha256),
    ]
    .into_iter()
    .zip(first..)
    .map(|((label, alg), keyid)| {
        let (token, ring) = open(&token_toml(
            keyid,
            "slot_label = 'audit'",
            label,
            &format!("pin = '{PIN}'"),
        ))
        .unwrap();
        assert_eq!(token.algorithm(), alg, "{label}");
        (keyid, label, alg, token, ring)
    })
    .collect()
}

/// The HMAC of a file by key `hmackey`, computed by pkcs11-tool.
fn tool_hmac(h: &SoftHsm, file: &Path) -> Vec<u8> {
    let mac = file.with_extension("mac");
    h.tool(&[
        "--sign",
        "--mechanism",
        "SHA256-HMAC",
        "--label",
        "hmackey",
        "-i",
        file.to_str().unwrap(),
        "-o",
        mac.to_str().unwrap(),
    ]);
    std::fs::read(&mac).unwrap()
}

#[test]
fn rsa_ec_and_hmac_keys_protect_rows_that_verify_independently() {
    let h = hsm();
    let out = tempfile::tempdir().unwrap();
    for (keyid, label, alg, token, ring) in the_three_keys(10) {
        let mut r = record(keyid as i64);
        let p = protect(token.as_ref(), &r).unwrap();
        assert!(
            p.starts_with(&format!(
                "1:{}:{keyid}:",
                if alg == Algorithm::HmacSha256 { 1 } else { 2 }
            )),
            "{p}"
        );
        r.row_protection = Some(p.clone());
        verify_row(&ring, &Default::default(), &r).unwrap_or_else(|e| panic!("{label}: {e}"));
        let value = hex::decode(p.rsplit_once(':').unwrap().1).unwrap();
        let data = r.protect_string();
        match alg {
            Algorithm::HmacSha256 => {
                // pkcs11-tool computes the same MAC with the same key.
                let d = out.path().join("data");
                std::fs::write(&d, &data).unwrap();
                assert_eq!(tool_hmac(h, &d), value);
            }
            _ => {
                let pem = h.public_key_pem(label, out.path());
                assert!(
                    openssl_verify(&pem, data.as_bytes(), &value),
                    "{label}: OpenSSL rejects the signature"
                );
                // The public key we publish is the token's, byte for byte.
                let ours = token.verify_key().public_key_pem().unwrap();
                assert_eq!(
                    ours.trim(),
                    std::fs::read_to_string(&pem).unwrap().trim(),
                    "{label}"
                );
                if alg == Algorithm::Sha256WithEcdsa {
                    assert_eq!(value[0], 0x30, "ECDSA stored as DER, as Java writes it");
                }
            }
        }
        r.event_status = "FAILURE".into();
        assert!(verify_row(&ring, &Default::default(), &r).is_err());
    }
}

/// SignServer's other signature algorithms, configured on the token's RSA and EC keys: rows and
/// streams are signed in the token with that digest, verify with our key ring, and OpenSSL
/// accepts them with the same digest (and not with SHA-256).
#[test]
fn sha384_and_sha512_keys_sign_rows_and_streams_openssl_accepts() {
    let h = hsm();
    let out = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..300_007u32).map(|i| (i ^ (i >> 7)) as u8).collect();
    for (keyid, label, alg, digest) in [
        (30, "rsakey", Algorithm::Sha384WithRsa, "-sha384"),
        (31, "rsakey", Algorithm::Sha512WithRsa, "-sha512"),
        (32, "eckey", Algorithm::Sha384WithEcdsa, "-sha384"),
    ] {
        let (token, ring) = open(&token_toml(
            keyid,
            "slot_label = 'audit'",
            label,
            &format!("algorithm = '{}'\npin = '{PIN}'", alg.name()),
        ))
        .unwrap();
        assert_eq!(token.algorithm(), alg);
        let pem = h.public_key_pem(label, out.path());
        let mut r = record(keyid as i64);
        let p = protect(token.as_ref(), &r).unwrap();
        r.row_protection = Some(p.clone());
        verify_row(&ring, &Default::default(), &r).unwrap_or_else(|e| panic!("{alg}: {e}"));
        let value = hex::decode(p.rsplit_once(':').unwrap().1).unwrap();
        let row = r.protect_string();
        assert!(
            openssl_verify_with(digest, &pem, row.as_bytes(), &value),
            "{alg}"
        );
        assert!(!openssl_verify(&pem, row.as_bytes(), &value), "{alg}");
        r.event_status = "FAILURE".into();
        assert!(verify_row(&ring, &Default::default(), &r).is_err(), "{alg}");

        let streamed = token.sign_reader(&mut &data[..]).unwrap();
        assert!(openssl_verify_with(digest, &pem, &data, &streamed), "{alg}");
        let key = ring.get(keyid).unwrap();
        key.verify_reader(&mut &data[..], &streamed)
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        let mut changed = data.clone();
        changed[12_345] ^= 1;
        assert!(key.verify_reader(&mut &changed[..], &streamed).is_err());
    }
}

/// A stream (an export, an archive segment) signed in the token part by part (C_SignUpdate)
/// gives the signature of its bytes: RSA equal to signing them whole (PKCS#1 v1.5 is
/// deterministic) and accepted by OpenSSL, ECDSA accepted by OpenSSL, HMAC equal to
/// pkcs11-tool's MAC of the whole file. A read error signs nothing.
#[test]
fn streams_are_signed_in_parts_as_their_bytes_are_whole() {
    let h = hsm();
    let out = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..1_000_003u32).map(|i| (i ^ (i >> 9)) as u8).collect();
    let file = out.path().join("stream");
    std::fs::write(&file, &data).unwrap();
    for (keyid, label, alg, token, ring) in the_three_keys(20) {
        let streamed = token
            .sign_reader(&mut std::fs::File::open(&file).unwrap())
            .unwrap();
        // Checked as a stream too (HMAC: MACed again in the token, part by part).
        let key = ring.get(keyid).unwrap();
        key.verify_reader(&mut std::fs::File::open(&file).unwrap(), &streamed)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let mut flipped = data.clone();
        flipped[3] ^= 1;
        assert!(
            key.verify_reader(&mut &flipped[..], &streamed).is_err(),
            "{label}"
        );
        match alg {
            Algorithm::HmacSha256 => {
                assert_eq!(tool_hmac(h, &file), streamed);
            }
            _ => {
                if alg == Algorithm::Sha256WithRsa {
                    assert_eq!(streamed, token.sign(&data).unwrap());
                }
                let pem = h.public_key_pem(label, out.path());
                assert!(openssl_verify(&pem, &data, &streamed), "{label}");
                let mut changed = data.clone();
                changed[777_777] ^= 0x40;
                assert!(!openssl_verify(&pem, &changed, &streamed), "{label}");
            }
        }
        struct Broken(usize);
        impl std::io::Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("disk gone"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let e = token.sign_reader(&mut Broken(3)).unwrap_err();
        assert!(e.to_string().contains("disk gone"), "{label}: {e}");
        // The session the failed stream used is fine for the next signature.
        let again = token.sign_reader(&mut &data[..]).unwrap();
        if alg != Algorithm::Sha256WithEcdsa {
            assert_eq!(again, streamed, "{label}");
        }
    }
}

#[test]
fn slots_by_label_number_and_index_and_clear_errors() {
    let h = hsm();
    let slot = h.slot_id();
    for sel in [
        format!("slot_number = {slot}"),
        "slot_index = 0".to_string(),
        "slot_label = 'audit'".into(),
    ] {
        let (token, _) = open(&token_toml(20, &sel, "rsakey", &format!("pin = '{PIN}'"))).unwrap();
        assert_eq!(token.algorithm(), Algorithm::Sha256WithRsa, "{sel}");
    }
    let e = open(&token_toml(
        21,
        "slot_label = 'nope'",
        "rsakey",
        "pin = '1234'",
    ))
    .err()
    .unwrap();
    assert!(e.contains("nope") && e.contains("no such token"), "{e}");
    let e = open(&token_toml(
        22,
        "slot_label = 'audit'",
        "missing",
        "pin = '1234'",
    ))
    .err()
    .unwrap();
    assert!(
        e.contains("missing") && e.contains("no private or secret key"),
        "{e}"
    );
    let e = open(&token_toml(
        23,
        "slot_label = 'audit'",
        "rsakey",
        "algorithm = 'SHA256WithECDSA'\npin = '1234'",
    ))
    .err()
    .unwrap();
    assert!(e.contains("it is an RSA key but SHA256WithECDSA"), "{e}");
    let e = open(&token_toml(
        24,
        "slot_label = 'audit'",
        "rsakey",
        "pin_env = 'AUDITSEAL_TEST_UNSET_PIN'",
    ))
    .err()
    .unwrap();
    assert!(e.contains("AUDITSEAL_TEST_UNSET_PIN"), "{e}");
}

#[test]
fn many_threads_share_the_session_pool() {
    hsm();
    let (token, ring) = open(&token_toml(
        40,
        "slot_label = 'audit'",
        "eckey",
        &format!("pin = '{PIN}'\nsessions = 3"),
    ))
    .unwrap();
    let handles: Vec<_> = (0..6)
        .map(|t| {
            let token = token.clone();
            let ring = ring.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let mut r = record(t * 1000 + i);
                    r.row_protection = Some(protect(token.as_ref(), &r).unwrap());
                    verify_row(&ring, &Default::default(), &r).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
