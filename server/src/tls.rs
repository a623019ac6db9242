//! HTTPS (rustls, aws-lc-rs) and client certificates: the acceptor `[server.tls]` describes,
//! and the subject DN of a verified client certificate in the form `[[auth.clients]]` uses
//! (docs/OPERATIONS.md "HTTPS and client certificates").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use auditseal_core::config::TlsSection;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;
use x509_parser::asn1_rs::{Tag, ToDer};
use x509_parser::prelude::{AttributeTypeAndValue, FromDer, X509Certificate};

/// Why `[server.tls]` cannot be used; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid PEM: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error("{}: no CERTIFICATE in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no private key in it (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: unusable private key: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("client CA file {}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// Paths in `[server.tls]` are absolute once the configuration is read (config/paths.rs); a
/// relative one (a configuration built without a file) is under the data directory.
fn resolve(data_dir: &Path, p: &Path) -> PathBuf {
    data_dir.join(p)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file, in file order; none is an error.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        e => TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })
}

/// The acceptor `[server.tls]` describes: the server's chain and key, and, with
/// `client_ca_file`, optional client certificates that must chain to one of its CAs (a client
/// without one may still authenticate with a token). ALPN offers h2 and http/1.1.
pub fn acceptor(tls: &TlsSection, data_dir: &Path) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert_path = resolve(data_dir, &tls.cert_file);
    let key_path = resolve(data_dir, &tls.key_file);
    let chain = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;

    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let ca_path = resolve(data_dir, ca);
            let mut roots = RootCertStore::empty();
            for cert in read_certs(&ca_path)? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    path: ca_path.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsError::ClientCa {
                        path: ca_path.clone(),
                        reason: e.to_string(),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert_path.clone(),
            key: key_path.clone(),
        },
        rustls::Error::General(reason) => TlsError::BadKey {
            path: key_path.clone(),
            reason,
        },
        e => TlsError::BadCertificate {
            path: cert_path.clone(),
            reason: e.to_string(),
        },
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// When the server's certificate (the first in `cert_file`) expires, in seconds since the
/// epoch (its notAfter).
pub fn certificate_not_after(tls: &TlsSection, data_dir: &Path) -> Result<i64, TlsError> {
    let path = resolve(data_dir, &tls.cert_file);
    let chain = read_certs(&path)?;
    let (_, cert) = X509Certificate::from_der(&chain[0]).map_err(|e| TlsError::BadCertificate {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(cert.validity().not_after.timestamp())
}

/// A certificate whose subject cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the certificate's subject: {0}")]
pub struct SubjectError(String);

/// The subject DN of a DER certificate in the form `access::normalize_dn` gives: RDNs most
/// specific first (the reverse of their order in the certificate, as SignServer and EJBCA print
/// them), short upper-case attribute names (an unknown one as its dotted OID), the attributes of
/// a multi-valued RDN joined by `+` in certificate order, and `, + " \ < > ;` in values (and a
/// leading `#`, white space at either end) escaped with a backslash. A value that is not text is
/// `#` and the hex of its DER encoding (RFC 4514).
pub fn subject_dn(cert_der: &[u8]) -> Result<String, SubjectError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| SubjectError(e.to_string()))?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter() {
        let attrs = rdn
            .iter()
            .map(|a| Ok(format!("{}={}", attribute_name(a), attribute_value(a)?)))
            .collect::<Result<Vec<_>, SubjectError>>()?;
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// The short names EJBCA prints (serialNumber as `SN`, surname as `SURNAME`); others as the
/// dotted OID.
fn attribute_name(a: &AttributeTypeAndValue) -> String {
    let oid = a.attr_type().to_id_string();
    let name = match oid.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SURNAME",
        "2.5.4.5" => "SN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "T",
        "2.5.4.13" => "DESCRIPTION",
        "2.5.4.15" => "BUSINESSCATEGORY",
        "2.5.4.17" => "POSTALCODE",
        "2.5.4.20" => "TELEPHONENUMBER",
        "2.5.4.41" => "NAME",
        "2.5.4.42" => "GIVENNAME",
        "2.5.4.43" => "INITIALS",
        "2.5.4.44" => "GENERATIONQUALIFIER",
        "2.5.4.46" => "DN",
        "2.5.4.65" => "PSEUDONYM",
        "2.5.4.97" => "ORGANIZATIONIDENTIFIER",
        "1.2.840.113549.1.9.1" => "E",
        "1.2.840.113549.1.9.2" => "UNSTRUCTUREDNAME",
        "1.2.840.113549.1.9.8" => "UNSTRUCTUREDADDRESS",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return oid,
    };
    name.to_string()
}

fn attribute_value(a: &AttributeTypeAndValue) -> Result<String, SubjectError> {
    let any = a.attr_value();
    let data = any.data;
    let text = match any.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_string),
        // Latin-1 is what T61String holds in practice.
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString if data.len() % 2 == 0 => char::decode_utf16(
            data.chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        Tag::UniversalString if data.len() % 4 == 0 => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect::<Option<String>>(),
        _ => None,
    };
    match text {
        Some(t) => Ok(escape(&t)),
        None => {
            let der = any.to_der_vec().map_err(|e| SubjectError(e.to_string()))?;
            Ok(format!("#{}", hex::encode_upper(&der)))
        }
    }
}

fn escape(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && c == '#')
            // Any white space at either end, not only ' ': normalize_dn trims what is not
            // escaped, and "CN=a\u{a0}" must not become "CN=a".
            || (c.is_whitespace() && (i == 0 || i == last));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditseal_core::access::normalize_dn;

    // openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    //   -subj "/C=SE/O=Example/CN=Auditor One"
    const SIMPLE: &str = "-----BEGIN CERTIFICATE-----
MIIBwjCCAWegAwIBAgIUStUxZKXb9Dzl/dO1genAyhUVJFYwCgYIKoZIzj0EAwIw
NTELMAkGA1UEBhMCU0UxEDAOBgNVBAoMB0V4YW1wbGUxFDASBgNVBAMMC0F1ZGl0
b3IgT25lMCAXDTI2MTEyNTE3MjA0OVoYDzIxMjYxMTAxMTcyMDQ5WjA1MQswCQYD
VQQGEwJTRTEQMA4GA1UECgwHRXhhbXBsZTEUMBIGA1UEAwwLQXVkaXRvciBPbmUw
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARaagQwi0kdX3fkdKSCvI16jw5h+RVy
KSnAFT/XyKJt/zxNseoI5cKllp9+TAlmb6VIerkydRAOb9IThm2OF2/eo1MwUTAd
BgNVHQ4EFgQU2QVTHGwznewRN3uFIM22Xk2/Q0cwHwYDVR0jBBgwFoAU2QVTHGwz
newRN3uFIM22Xk2/Q0cwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBG
AiEAhtlyxq8dMMKxYJJCPt6qInk2NXV3ZU/WJ9IdJD6rWT4CIQD+BMhedq6Sn31/
qyIXi1g1WBmtvKLQwr70Ovn5whCeLg==
-----END CERTIFICATE-----
";

    // The same with -multivalue-rdn -utf8, an extra OID 1.2.3.4 named oddAttr in the config, and
    // -subj "/DC=org/DC=example/O=A\, B \"q\" <x>;y/OU=Ops+UID=u42/CN=back\\slash=eq/
    //   emailAddress=ops@example.org/serialNumber=123/ST=Skåne/L=Malmö/oddAttr=odd"
    const AWKWARD: &str = "-----BEGIN CERTIFICATE-----
MIICuzCCAmECFAeSjZDZa3ACnEwEevksVLIiFq0JMAoGCCqGSM49BAMCMIHeMRMw
EQYKCZImiZPyLGQBGRYDb3JnMRcwFQYKCZImiZPyLGQBGRYHZXhhbXBsZTEXMBUG
A1UECgwOQSwgQiAicSIgPHg+O3kxHzAKBgNVBAsMA09wczARBgoJkiaJk/IsZAEB
DAN1NDIxFjAUBgNVBAMMDWJhY2tcc2xhc2g9ZXExHjAcBgkqhkiG9w0BCQEWD29w
c0BleGFtcGxlLm9yZzEMMAoGA1UEBRMDMTIzMQ8wDQYDVQQIDAZTa8OlbmUxDzAN
BgNVBAcMBk1hbG3DtjEMMAoGAyoDBAwDb2RkMCAXDTI2MTEyNTE3MjA1NFoYDzIx
MjYxMTAxMTcyMDU0WjCB3jETMBEGCgmSJomT8ixkARkWA29yZzEXMBUGCgmSJomT
8ixkARkWB2V4YW1wbGUxFzAVBgNVBAoMDkEsIEIgInEiIDx4Pjt5MR8wCgYDVQQL
DANPcHMwEQYKCZImiZPyLGQBAQwDdTQyMRYwFAYDVQQDDA1iYWNrXHNsYXNoPWVx
MR4wHAYJKoZIhvcNAQkBFg9vcHNAZXhhbXBsZS5vcmcxDDAKBgNVBAUTAzEyMzEP
MA0GA1UECAwGU2vDpW5lMQ8wDQYDVQQHDAZNYWxtw7YxDDAKBgMqAwQMA29kZDBZ
MBMGByqGSM49AgEGCCqGSM49AwEHA0IABMObKj4MyxBL/MoS7mbto9yflRWvOAle
YcArFyG2meLDOzOU93bnAxXckVNZa1KlZhXAeCY52UEXClWe4jZ5dkAwCgYIKoZI
zj0EAwIDSAAwRQIgZ7NMmnfC+4OLrvZ9q3v1oTioL+UIMfLCkhiIB7YWCsUCIQDq
4GViXQ+tyyFOc6yOrMtDllDt0Dq0xK+rJXEKhEz2hQ==
-----END CERTIFICATE-----
";

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn subject_is_most_specific_first() {
        let dn = subject_dn(&der(SIMPLE)).unwrap();
        assert_eq!(dn, "CN=Auditor One,O=Example,C=SE");
        assert_eq!(normalize_dn(&dn), dn);
        assert_eq!(normalize_dn("cn=Auditor One, o=Example, c=SE"), dn);
    }

    #[test]
    fn awkward_subject_names_escapes_and_multi_valued_rdns() {
        let dn = subject_dn(&der(AWKWARD)).unwrap();
        assert_eq!(
            dn,
            "1.2.3.4=odd,L=Malmö,ST=Skåne,SN=123,E=ops@example.org,\
             CN=back\\\\slash=eq,OU=Ops+UID=u42,O=A\\, B \\\"q\\\" \\<x\\>\\;y,\
             DC=example,DC=org"
        );
        // What an operator writes in [[auth.clients]] survives normalisation unchanged.
        assert_eq!(normalize_dn(&dn), dn);
    }

    #[test]
    fn values_escape_edges() {
        assert_eq!(escape("#a "), "\\#a\\ ");
        assert_eq!(escape(" a#b"), "\\ a#b");
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape(""), "");
        // White space of any kind at either end is kept, so it cannot be normalised away and
        // make this subject equal to "CN=ops-admin".
        assert_eq!(escape("ops-admin\u{a0}"), "ops-admin\\\u{a0}");
        assert_eq!(escape("\tops-admin"), "\\\tops-admin");
        for v in ["ops-admin\u{a0}", "\tops-admin", "ops-admin\u{2003}"] {
            assert_ne!(
                normalize_dn(&format!("CN={}", escape(v))),
                normalize_dn("CN=ops-admin"),
                "{v:?}"
            );
        }
    }

    #[test]
    fn not_a_certificate() {
        assert!(subject_dn(b"not DER").is_err());
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl {args:?}");
    }

    fn self_signed(dir: &Path, name: &str) {
        let cmd = format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=test \
             -keyout {name}.key -out {name}.pem"
        );
        openssl(dir, &cmd.split_whitespace().collect::<Vec<_>>());
    }

    fn section(cert: &str, key: &str, ca: Option<&str>) -> TlsSection {
        TlsSection {
            cert_file: cert.into(),
            key_file: key.into(),
            client_ca_file: ca.map(PathBuf::from),
        }
    }

    fn fails(tls: TlsSection, dir: &Path) -> TlsError {
        match acceptor(&tls, dir) {
            Ok(_) => panic!("{tls:?} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_certificate_expiry_is_its_not_after() {
        let dir = tempfile::tempdir().unwrap();
        self_signed(dir.path(), "a");
        let t = certificate_not_after(&section("a.pem", "a.key", None), dir.path()).unwrap();
        // Made now for 2 days (openssl -days 2).
        let expected = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 2 * 86_400;
        assert!((t - expected).abs() < 120, "{t} vs {expected}");
        let e = certificate_not_after(&section("none.pem", "a.key", None), dir.path());
        assert!(matches!(e, Err(TlsError::Read { .. })));
    }

    #[test]
    fn acceptor_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        self_signed(d, "a");
        self_signed(d, "b");
        std::fs::write(d.join("empty.pem"), "nothing here\n").unwrap();

        assert!(acceptor(&section("a.pem", "a.key", None), d).is_ok());
        assert!(acceptor(&section("a.pem", "a.key", Some("b.pem")), d).is_ok());

        let e = fails(section("missing.pem", "a.key", None), d);
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let e = fails(section("empty.pem", "a.key", None), d);
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");

        let e = fails(section("a.pem", "a.pem", None), d);
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");

        let e = fails(section("a.pem", "b.key", None), d);
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        assert!(e.to_string().contains("b.key") && e.to_string().contains("a.pem"));

        let e = fails(section("a.pem", "a.key", Some("empty.pem")), d);
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
    }
}
