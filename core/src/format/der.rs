//! The little DER (X.690) this project needs: read a certificate's SubjectPublicKeyInfo and its
//! algorithm, build SPKIs from PKCS#11 key attributes, and turn a raw ECDSA r||s into DER.

/// OID 1.2.840.113549.1.1.1 rsaEncryption (content octets).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// OID 1.2.840.10045.2.1 id-ecPublicKey.
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// OID 1.2.840.10045.3.1.7 prime256v1 (P-256).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// OID 1.3.132.0.34 secp384r1 (P-384).
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;

/// One TLV: (tag, content, rest of the input). Only definite lengths (DER).
fn read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The whole TLV (header included) at the start of `input`, and what follows it.
fn read_raw(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, content, rest) = read(input)?;
    let total = input.len() - rest.len();
    debug_assert!(total >= content.len());
    Some((&input[..total], rest))
}

/// The key type of a SubjectPublicKeyInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    /// EC on P-256 (prime256v1): signs and verifies.
    EcP256,
    /// EC on P-384 (secp384r1): verifies (SignServer's SHA384WithECDSA keys).
    EcP384,
    Other,
}

impl KeyType {
    /// The curve's OID (content octets), for EC key types.
    fn curve_oid(self) -> Option<&'static [u8]> {
        match self {
            KeyType::EcP256 => Some(OID_P256),
            KeyType::EcP384 => Some(OID_P384),
            KeyType::Rsa | KeyType::Other => None,
        }
    }

    /// The EC key type of a named curve given as a DER OID (PKCS#11's CKA_EC_PARAMS).
    pub fn from_ec_params(params: &[u8]) -> Option<KeyType> {
        match read(params)? {
            (OID, oid, []) if oid == OID_P256 => Some(KeyType::EcP256),
            (OID, oid, []) if oid == OID_P384 => Some(KeyType::EcP384),
            _ => None,
        }
    }
}

/// Reads the algorithm of a DER SubjectPublicKeyInfo.
pub fn spki_key_type(spki: &[u8]) -> Option<KeyType> {
    let (SEQUENCE, body, _) = read(spki)? else {
        return None;
    };
    let (SEQUENCE, alg, _) = read(body)? else {
        return None;
    };
    let (OID, oid, params) = read(alg)? else {
        return None;
    };
    Some(if oid == OID_RSA {
        KeyType::Rsa
    } else if oid == OID_EC {
        match read(params) {
            Some((OID, curve, _)) if curve == OID_P256 => KeyType::EcP256,
            Some((OID, curve, _)) if curve == OID_P384 => KeyType::EcP384,
            _ => KeyType::Other,
        }
    } else {
        KeyType::Other
    })
}

/// The SubjectPublicKeyInfo (DER) inside an X.509 certificate (DER).
pub fn certificate_spki(cert: &[u8]) -> Option<&[u8]> {
    let (SEQUENCE, body, _) = read(cert)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = read(body)? else {
        return None;
    };
    // version [0] EXPLICIT is optional
    if tbs.first() == Some(&0xa0) {
        tbs = read(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..5 {
        tbs = read(tbs)?.2;
    }
    Some(read_raw(tbs)?.0)
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER from big-endian magnitude bytes (minimal, sign-safe).
fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = {
        let skip = magnitude.iter().take_while(|b| **b == 0).count();
        &magnitude[skip.min(magnitude.len().saturating_sub(1))..]
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    tlv(INTEGER, &content)
}

fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut c = vec![0u8];
    c.extend_from_slice(content);
    tlv(BIT_STRING, &c)
}

/// SubjectPublicKeyInfo of an RSA key from its modulus and public exponent (big-endian).
pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let alg = tlv(SEQUENCE, &[tlv(OID, OID_RSA), tlv(NULL, &[])].concat());
    let key = tlv(
        SEQUENCE,
        &[unsigned_integer(modulus), unsigned_integer(exponent)].concat(),
    );
    tlv(SEQUENCE, &[alg, bit_string(&key)].concat())
}

/// SubjectPublicKeyInfo of an EC key (P-256 or P-384) from its uncompressed point
/// (0x04 || x || y). PKCS#11's CKA_EC_POINT may wrap the point in an OCTET STRING; both forms
/// are accepted.
pub fn ec_spki(key: KeyType, point: &[u8]) -> Option<Vec<u8>> {
    let curve = key.curve_oid()?;
    let len = match key {
        KeyType::EcP256 => 65,
        _ => 97,
    };
    let point = match read(point) {
        Some((OCTET_STRING, inner, rest)) if rest.is_empty() && inner.first() == Some(&4) => inner,
        _ => point,
    };
    if point.len() != len || point[0] != 4 {
        return None;
    }
    let alg = tlv(SEQUENCE, &[tlv(OID, OID_EC), tlv(OID, curve)].concat());
    Some(tlv(SEQUENCE, &[alg, bit_string(point)].concat()))
}

/// An ECDSA signature as PKCS#11 returns it (r || s, equal halves) in Java's DER form
/// `SEQUENCE { INTEGER r, INTEGER s }`.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(tlv(
        SEQUENCE,
        &[unsigned_integer(r), unsigned_integer(s)].concat(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{self, KeyPair};

    #[test]
    fn rebuilt_rsa_spki_is_what_aws_lc_writes() {
        let k = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = k.public_key().as_der().unwrap();
        assert_eq!(spki_key_type(der.as_ref()), Some(KeyType::Rsa));
        // Take n and e back out of the SPKI and rebuild it.
        let (_, body, _) = read(der.as_ref()).unwrap();
        let (_, bits, _) = read(read(body).unwrap().2).unwrap();
        let (_, key, _) = read(&bits[1..]).unwrap();
        let (_, n, rest) = read(key).unwrap();
        let (_, e, _) = read(rest).unwrap();
        assert_eq!(rsa_spki(n, e), der.as_ref());
    }

    #[test]
    fn ec_spki_and_raw_signatures() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        for (key, signing, verifying) in [
            (
                KeyType::EcP256,
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &signature::ECDSA_P256_SHA256_ASN1,
            ),
            (
                KeyType::EcP384,
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                &signature::ECDSA_P384_SHA384_ASN1,
            ),
        ] {
            let doc = signature::EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap();
            let fixed = signature::EcdsaKeyPair::from_pkcs8(signing, doc.as_ref()).unwrap();
            let point = fixed.public_key().as_ref().to_vec();
            let spki = ec_spki(key, &point).unwrap();
            assert_eq!(spki_key_type(&spki), Some(key));
            assert_eq!(ec_spki(key, &tlv(OCTET_STRING, &point)).unwrap(), spki);
            let params = tlv(OID, key.curve_oid().unwrap());
            assert_eq!(KeyType::from_ec_params(&params), Some(key));
            let raw = fixed.sign(&rng, b"msg").unwrap();
            let der = ecdsa_raw_to_der(raw.as_ref()).unwrap();
            signature::UnparsedPublicKey::new(verifying, &spki)
                .verify(b"msg", &der)
                .unwrap();
        }
        // A point of the other curve's length is refused.
        assert!(ec_spki(KeyType::EcP384, &[4; 65]).is_none());
        assert!(ec_spki(KeyType::Rsa, &[4; 65]).is_none());
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_none());
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(unsigned_integer(&[0, 0, 5]), vec![2, 1, 5]);
        assert_eq!(unsigned_integer(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(unsigned_integer(&[0, 0]), vec![2, 1, 0]);
        assert_eq!(unsigned_integer(&[]), vec![2, 1, 0]);
    }
}
