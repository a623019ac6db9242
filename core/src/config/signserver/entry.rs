//! One key of a SignServer directory: its `databaseprotection.*.N` properties translated into a
//! key setting (software, PKCS#11 or public key), with the problems found on the way.

use super::*;

/// Key entry `n` as `build_entry` read it before its token class: its properties, the line of
/// its keyid, and the keyid, version and signature algorithm found there.
pub(super) struct CommonProps<'a> {
    n: usize,
    props: &'a EntryProps<'a>,
    keyid_prop: &'a Prop,
    keyid: Option<i32>,
    version: Option<u8>,
    sigalg: Option<(Algorithm, &'a Prop)>,
}

impl<'a> CommonProps<'a> {
    fn get(&self, key: &str) -> Option<&'a Prop> {
        self.props.get(key).copied()
    }

    /// A property the entry needs is missing: said on the line of its keyid.
    fn missing(&self, problems: &mut Problems, field: &str, why: &str) {
        let n = self.n;
        problems.line(
            self.keyid_prop.line,
            &format!("{PREFIX}{field}.{n}"),
            format!("missing; key entry {n} (whose keyid.{n} is on this line) {why}"),
        );
    }
}

pub(super) fn build_entry(
    n: usize,
    e: &EntryProps<'_>,
    keyid_prop: &Prop,
    keyid: Option<i32>,
    problems: &mut Problems,
) -> (Option<KeyEntry>, State) {
    // CESeCore skips an entry whose label is the string "null"; its other keys are not read.
    if e.get("keylabel")
        .is_some_and(|p| p.value.trim().eq_ignore_ascii_case("null"))
    {
        return (None, State::Skipped);
    }
    let before = problems.count();
    let version = e.get("version").map_or(Some(2), |p| match p.value.trim() {
        "1" => Some(1),
        "2" => Some(2),
        _ => {
            problems.at(p, "expected 1 (HMAC) or 2 (signature)");
            None
        }
    });
    let sigalg = e
        .get("sigalg")
        .and_then(|p| parse_sigalg(p, problems).map(|a| (a, *p)));
    let entry = CommonProps {
        n,
        props: e,
        keyid_prop,
        keyid,
        version,
        sigalg,
    };
    let class = match e.get("classname") {
        Some(p) => {
            let name = text(p);
            Some((name.strip_prefix(CLASS_PACKAGE).unwrap_or(name), *p))
        }
        None => {
            entry.missing(problems, "classname", "needs its token class");
            None
        }
    };
    let built = match class {
        // SignServer's P11NG token reads the same entry keys.
        Some(("PKCS11CryptoToken", _))
        | Some(("org.signserver.p11ng.common.cryptotoken.P11NGDatabaseProtectionCryptoToken", _)) => {
            pkcs11_entry(&entry, problems)
        }
        Some(("PublicCryptoToken", _)) => public_entry(&entry, problems),
        Some(("SoftCryptoToken", p)) => {
            problems.at(
                p,
                format!(
                    "SoftCryptoToken (PKCS#12 in data.{n}) is not supported; export the key to \
                     PKCS#8 PEM and use a [[protection.keys]] kind = \"software\" entry"
                ),
            );
            None
        }
        Some((other, p)) => {
            problems.at(
                p,
                format!(
                    "unsupported token class {other:?}; auditseal reads PKCS11CryptoToken and \
                     PublicCryptoToken entries"
                ),
            );
            None
        }
        None => None,
    };
    match built {
        Some(k @ KeyEntry::Public { .. }) if problems.count() == before => (Some(k), State::Public),
        Some(k) if problems.count() == before => (Some(k), State::Signing),
        _ => (None, State::Failed),
    }
}

/// The signature algorithm of a PKCS#11 key: HmacSHA256 for version 1, else the configured
/// one, else CESeCore's default for version 2 (SHA256WithRSA).
fn pkcs11_algorithm(e: &CommonProps<'_>, problems: &mut Problems) -> Option<TokenAlgorithm> {
    let n = e.n;
    match (e.version, e.sigalg) {
        (Some(1), Some((a, p))) if a != Algorithm::HmacSha256 => {
            problems.warn(p, "ignored: version 1 protects with HmacSHA256");
            Some(TokenAlgorithm::HmacSHA256)
        }
        (Some(1), _) => Some(TokenAlgorithm::HmacSHA256),
        (_, Some((Algorithm::HmacSha256, p))) => {
            problems.at(
                p,
                format!("HmacSHA256 needs databaseprotection.version.{n} = 1"),
            );
            None
        }
        (_, Some((a, _))) => Some(TokenAlgorithm::from_algorithm(a)),
        // SHA256WithRSA is CESeCore's default for version 2.
        _ => Some(TokenAlgorithm::SHA256WithRSA),
    }
}

pub(super) fn pkcs11_entry(e: &CommonProps<'_>, problems: &mut Problems) -> Option<KeyEntry> {
    let key_label = match e.get("keylabel").map(|p| (text(p), p)) {
        Some(("", p)) => {
            problems.at(
                p,
                "empty; the key's label (CKA_LABEL) in the token is needed",
            );
            None
        }
        Some((label, _)) => Some(label.to_string()),
        None => {
            e.missing(problems, "keylabel", "needs the key's label in the token");
            None
        }
    };
    let pin = match e.get("tokenpin") {
        Some(p) => token_pin(p, problems),
        None => {
            e.missing(
                problems,
                "tokenpin",
                "is a PKCS#11 key, which needs the token PIN",
            );
            None
        }
    };
    let token = match e.get("properties") {
        Some(p) => token_properties(p, problems),
        None => {
            e.missing(problems, "properties", "needs sharedLibrary and the slot (e.g. sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, \
                 slotLabelType=SLOT_LABEL, slotLabelValue=audit)",
            );
            None
        }
    };
    if let Some(p) = e.get("data").filter(|p| !p.value.trim().is_empty()) {
        problems.warn(p, "data.N is not used for a PKCS11CryptoToken; ignored");
    }
    let algorithm = pkcs11_algorithm(e, problems);
    let (keyid, key_label, pin, (library, slot), algorithm) =
        (e.keyid?, key_label?, pin?, token?, algorithm?);
    Some(KeyEntry::Pkcs11 {
        keyid,
        nodes: None,
        retired_after: None,
        library,
        slot_label: slot.label,
        slot_number: slot.number,
        slot_index: slot.index,
        key_label,
        key_id: None,
        pin: Some(pin),
        pin_env: None,
        pin_file: None,
        algorithm: Some(algorithm),
        sessions: None,
    })
}

/// Checks `tokenpin.N`: clear PINs only, since CESeCore's encryption key is not ours to know.
pub(super) fn token_pin(p: &Prop, problems: &mut Problems) -> Option<String> {
    let pin = text(p);
    if let Some(obf) = pin.strip_prefix("OBF:") {
        let Some(clear) = deobfuscate(obf) else {
            problems.at(p, "an OBF: value that does not decode");
            return None;
        };
        problems.warn(
            p,
            "OBF: is a published, reversible encoding, not protection: whoever reads this file \
             has the PIN; auditseal decodes it. Keep the file readable by the service only",
        );
        return Some(clear);
    }
    let encrypted = pin.split_once(':').is_some_and(|(prefix, _)| {
        prefix
            .to_ascii_lowercase()
            .strip_prefix("enc")
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_alphanumeric()))
    });
    if encrypted {
        problems.at(
            p,
            "encrypted PINs (enc:) are not supported: put the clear PIN here or use \
             auditseal's pin_env / pin_file in a TOML configuration",
        );
        return None;
    }
    if pin.is_empty() {
        problems.at(p, "empty; a PKCS#11 key needs the token PIN");
        return None;
    }
    // CESeCore's older PBE encryption writes bare lowercase hex; a clear PIN can look alike.
    if pin.len() >= 32
        && pin.len().is_multiple_of(2)
        && pin.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        problems.warn(
            p,
            "this PIN looks like a CESeCore-encrypted PIN (long hex); it is used as the clear \
             PIN. If it is encrypted, put the clear PIN here or use auditseal's pin_env / \
             pin_file in a TOML configuration",
        );
    }
    Some(pin.to_string())
}

/// Reverses the OBF: encoding (Jetty's, which CESeCore uses for PINs): groups of four base-36
/// digits, each a number n giving the byte (n / 256 + n % 256 - 254) / 2, or `U` and four digits
/// giving n / 256 for a byte above 127.
pub(super) fn deobfuscate(s: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let high = rest.starts_with('U');
        if high {
            rest = &rest[1..];
        }
        let group = rest.get(..4)?;
        let n = u32::from_str_radix(group, 36).ok()?;
        rest = &rest[4..];
        let b = if high {
            n >> 8
        } else {
            (n / 256 + n % 256).checked_sub(254)? / 2
        };
        bytes.push(u8::try_from(b & 0xff).ok()?);
    }
    String::from_utf8(bytes).ok()
}

#[derive(Debug, Default)]
pub(super) struct Slot {
    label: Option<String>,
    number: Option<u64>,
    index: Option<usize>,
}

/// `properties.N` of a PKCS11CryptoToken: the library and the slot.
pub(super) fn token_properties(p: &Prop, problems: &mut Problems) -> Option<(PathBuf, Slot)> {
    let before = problems.count();
    let mut items: BTreeMap<&str, &str> = BTreeMap::new();
    // SignServer also writes the list in braces: {sharedLibrary=..., slotLabelType=...}.
    let list = p.value.trim();
    let list = list
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .unwrap_or(list);
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            problems.at(p, format!("token property {item:?} is not k=v"));
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if !TOKEN_PROPERTIES.contains(&k) {
            problems.at(
                p,
                format!(
                    "unknown token property {k:?} (auditseal reads sharedLibrary, slotLabelType, \
                     slotLabelValue, and the older slot / slotListIndex)"
                ),
            );
            continue;
        }
        if items.insert(k, v).is_some() {
            problems.at(p, format!("token property {k} is given twice"));
        }
    }
    if items.contains_key("attributesFile") {
        problems.warn(
            p,
            "attributesFile (SunPKCS11 key attributes) is not needed; ignored",
        );
    }
    let library = match items.get("sharedLibrary") {
        Some(lib) if !lib.is_empty() => Some(PathBuf::from(lib)),
        _ => {
            problems.at(
                p,
                "sharedLibrary is missing: the PKCS#11 module, e.g. \
                 sharedLibrary=/usr/lib/softhsm/libsofthsm2.so",
            );
            None
        }
    };
    let slot = slot(p, &items, problems);
    if problems.count() != before {
        return None;
    }
    Some((library?, slot?))
}

/// Slot indexes may be written `i0` (CESeCore's older `slot=i0` form) as well as `0`.
pub(super) fn slot_index(v: &str) -> Option<usize> {
    v.strip_prefix('i').unwrap_or(v).parse().ok()
}

pub(super) fn slot(
    p: &Prop,
    items: &BTreeMap<&str, &str>,
    problems: &mut Problems,
) -> Option<Slot> {
    let get = |k: &str| items.get(k).copied();
    let mut bad = |reason: String| {
        problems.at(p, reason);
        None
    };
    match (get("slotLabelType"), get("slotLabelValue")) {
        (Some(_), _) | (_, Some(_)) if get("slot").is_some() || get("slotListIndex").is_some() => {
            bad(
                "give either slotLabelType/slotLabelValue or the older slot/slotListIndex, \
                 not both"
                    .into(),
            )
        }
        (Some(kind), Some(value)) if !value.is_empty() => {
            match kind.to_ascii_uppercase().as_str() {
                "SLOT_NUMBER" => match value.parse() {
                    Ok(n) => Some(Slot {
                        number: Some(n),
                        ..Slot::default()
                    }),
                    Err(_) => bad(format!("slotLabelValue {value:?} is not a slot number")),
                },
                "SLOT_INDEX" => match slot_index(value) {
                    Some(i) => Some(Slot {
                        index: Some(i),
                        ..Slot::default()
                    }),
                    None => bad(format!("slotLabelValue {value:?} is not a slot index")),
                },
                "SLOT_LABEL" => Some(Slot {
                    label: Some(value.to_string()),
                    ..Slot::default()
                }),
                _ => bad(format!(
                    "slotLabelType {kind:?} is not supported (SLOT_NUMBER, SLOT_INDEX or \
                     SLOT_LABEL)"
                )),
            }
        }
        (Some(kind), _) => bad(format!("slotLabelType {kind} needs a slotLabelValue")),
        (None, Some(_)) => bad(
            "slotLabelValue needs a slotLabelType (SLOT_NUMBER, SLOT_INDEX or SLOT_LABEL)".into(),
        ),
        (None, None) => match (get("slot"), get("slotListIndex")) {
            (Some(_), Some(_)) => bad("give one of slot and slotListIndex, not both".into()),
            // The older `slot` key took a slot number, or an index when prefixed with `i`.
            (Some(v), None) if v.starts_with('i') => match slot_index(v) {
                Some(i) => Some(Slot {
                    index: Some(i),
                    ..Slot::default()
                }),
                None => bad(format!("slot {v:?} is not a slot index")),
            },
            (Some(v), None) => match v.parse() {
                Ok(n) => Some(Slot {
                    number: Some(n),
                    ..Slot::default()
                }),
                Err(_) => bad(format!("slot {v:?} is not a slot number")),
            },
            (None, Some(v)) => match slot_index(v) {
                Some(i) => Some(Slot {
                    index: Some(i),
                    ..Slot::default()
                }),
                None => bad(format!("slotListIndex {v:?} is not a slot index")),
            },
            (None, None) => bad(
                "the slot is missing: give slotLabelType (SLOT_NUMBER, SLOT_INDEX or SLOT_LABEL) \
                 and slotLabelValue"
                    .into(),
            ),
        },
    }
}

pub(super) fn public_entry(e: &CommonProps<'_>, problems: &mut Problems) -> Option<KeyEntry> {
    if e.version == Some(1) {
        let p = e.get("version").unwrap_or(e.keyid_prop);
        problems.at(
            p,
            "a PublicCryptoToken holds a public key, which cannot check HMAC (version 1) \
             protections: an HMAC key has no public part",
        );
    }
    let algorithm = match e.sigalg {
        None => None,
        Some((Algorithm::HmacSha256, p)) => {
            problems.at(
                p,
                "HmacSHA256 is not a signature algorithm; a PublicCryptoToken verifies signatures",
            );
            None
        }
        Some((a, _)) => SignatureAlgorithm::from_algorithm(a),
    };
    let pem = match e.get("data").filter(|p| !p.value.trim().is_empty()) {
        Some(p) => match public_pem(&p.value) {
            Ok(pem) => {
                let alg = algorithm.map(SignatureAlgorithm::algorithm);
                match crate::crypto::keys::VerifyKey::from_public_pem(&pem, alg) {
                    Ok(_) => Some(pem),
                    Err(err) => {
                        let with = e.sigalg.map_or(String::new(), |(_, s)| {
                            format!(" (with {} = {})", s.key, s.value.trim())
                        });
                        problems.at(p, format!("not a usable public key{with}: {err}"));
                        None
                    }
                }
            }
            Err(reason) => {
                problems.at(p, reason);
                None
            }
        },
        None => {
            e.missing(
                problems,
                "data",
                "is a PublicCryptoToken, which needs the base64 public key or certificate",
            );
            None
        }
    };
    Some(KeyEntry::Public {
        keyid: e.keyid?,
        nodes: None,
        retired_after: None,
        algorithm,
        file: None,
        pem: Some(pem?),
    })
}

/// `data.N` of a PublicCryptoToken -> PEM: base64 of PEM text, or of a DER certificate or
/// SubjectPublicKeyInfo. PEM written directly (not base64) is accepted too.
pub(super) fn public_pem(value: &str) -> Result<String, String> {
    if value.contains("-----BEGIN") {
        return Ok(value.to_string());
    }
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    // Padding is optional: some tools strip it.
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(compact)
        .map_err(|e| format!("not base64: {e}"))?;
    if let Ok(text) = std::str::from_utf8(&bytes)
        && text.contains("-----BEGIN")
    {
        return Ok(text.to_string());
    }
    // An SPKI never parses as a certificate: its first element has 2 fields, not 6+.
    Ok(if crate::format::der::certificate_spki(&bytes).is_some() {
        crate::format::pem::encode("CERTIFICATE", &bytes)
    } else {
        crate::format::pem::encode("PUBLIC KEY", &bytes)
    })
}

// ---------------------------------------------------------------------------------------------
// cesecore.properties
