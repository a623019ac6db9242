//! `rowProtection`: `<entityProtectVersion>:<protectionVersion>:<keyid>:<hex>`.
//! Format: docs/FORMAT.md "rowProtection" (= CESeCore spec section 3).

use std::fmt;

/// The only entity protect version of AuditRecordData (the layout of the protect string).
pub const ENTITY_PROTECT_VERSION: u32 = 1;

/// What kind of protection a row carries (the second field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtectionVersion {
    /// 1: HMAC-SHA256 with a secret key.
    Hmac,
    /// 2: a public-key signature (SHA256WithRSA or SHA256WithECDSA).
    Signature,
    /// 3 (auditseal): an inclusion proof into a batch whose statement is MACed or signed
    /// (docs/FORMAT.md section 6). Leaves hash the protect string.
    Batch,
    /// 4 (auditseal): as 3, but leaves hash the canonical encoding of the row, and the batch
    /// statement is in the canonical layout (docs/FORMAT.md section 6).
    BatchCanonical,
}

impl ProtectionVersion {
    pub fn number(self) -> u32 {
        match self {
            ProtectionVersion::Hmac => 1,
            ProtectionVersion::Signature => 2,
            ProtectionVersion::Batch => 3,
            ProtectionVersion::BatchCanonical => 4,
        }
    }

    /// Versions 3 and 4: the row's value is an inclusion proof into a signed batch.
    pub fn is_batch(self) -> bool {
        matches!(
            self,
            ProtectionVersion::Batch | ProtectionVersion::BatchCanonical
        )
    }
}

/// Which bytes a statement's protection covers (a batch statement's or a checkpoint's): the
/// first field of its `statementProtection`, where rows have their entity protect version
/// (docs/FORMAT.md sections 6.2 and 7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `1`: the fields joined with `<sep/>` (version 3 batches, checkpoints of fold 1).
    Text,
    /// `2`: the canonical encoding (version 4 batches, checkpoints of fold 2).
    Canonical,
}

impl Layout {
    /// The layout a `statementProtection` names (layout 1 when it does not parse: the
    /// statement then fails verification whatever the bytes).
    pub fn of_statement(protection: &str) -> Layout {
        RowProtection::parse_statement(protection).map_or(Layout::Text, |(l, _)| l)
    }

    pub fn number(self) -> u32 {
        match self {
            Layout::Text => 1,
            Layout::Canonical => 2,
        }
    }
}

/// A parsed `rowProtection` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProtection {
    pub version: ProtectionVersion,
    pub keyid: i32,
    pub value: Vec<u8>,
}

/// Why a `rowProtection` string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtectionParseError {
    #[error("rowProtection is not of the form <entity>:<version>:<keyid>:<hex>")]
    Layout,
    #[error("unknown entity protect version {0} (only 1 exists for AuditRecordData)")]
    EntityVersion(String),
    #[error("unknown protection version {0}")]
    UnknownVersion(String),
    #[error("keyid {0:?} is not a decimal integer")]
    KeyId(String),
    #[error("protection value is not hex")]
    Hex,
}

/// Appends `bytes` to `out` in lower-case hex. A table lookup per byte: every row of a batch
/// carries its inclusion proof in hex (the `hex` crate's char-by-char iterator took 6% of the
/// server's CPU on bulk requests).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
}

/// `bytes` in lower-case hex.
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Hex (either case) to bytes; None unless every character is a hex digit and there is an even
/// number of them. Table-driven: verifying decodes one value per row, so this is on the hot path.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    const INVALID: u8 = 0xff;
    const TABLE: [u8; 256] = {
        let mut t = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    // Without a branch per byte: a digit's value has its high nibble clear, INVALID has it set,
    // so one OR over every looked-up value says whether any character was not a digit.
    let mut out = vec![0u8; b.len() / 2];
    let mut seen = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (TABLE[pair[0] as usize], TABLE[pair[1] as usize]);
        seen |= hi | lo;
        *o = hi << 4 | lo;
    }
    (seen & 0xf0 == 0).then_some(out)
}

impl RowProtection {
    /// For a version 3 value, where its batch starts (the first 8 payload bytes), without
    /// decoding the whole proof; None for anything else or anything malformed.
    pub fn batch_first(s: &str) -> Option<i64> {
        let rest = s.strip_prefix("1:3:").or_else(|| s.strip_prefix("1:4:"))?;
        let (_, value_hex) = rest.split_once(':')?;
        let first = decode_hex(value_hex.get(..16)?)?;
        Some(i64::from_be_bytes(first.try_into().ok()?))
    }

    /// Parses a stored value. The protection is everything after the last `:` (as CESeCore
    /// does); hex has no `:`, so the value is well formed only with exactly three, and splitting
    /// from the front (cheaper on long values) finds the same fields.
    pub fn parse(s: &str) -> Result<Self, ProtectionParseError> {
        let mut fields = s.splitn(4, ':');
        let (Some(entity), Some(version), Some(keyid), Some(value_hex)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(ProtectionParseError::Layout);
        };
        if entity != "1" {
            return Err(ProtectionParseError::EntityVersion(entity.to_string()));
        }
        let version = match version {
            "1" => ProtectionVersion::Hmac,
            "2" => ProtectionVersion::Signature,
            "3" => ProtectionVersion::Batch,
            "4" => ProtectionVersion::BatchCanonical,
            other => return Err(ProtectionParseError::UnknownVersion(other.to_string())),
        };
        let keyid = keyid
            .parse::<i32>()
            .map_err(|_| ProtectionParseError::KeyId(keyid.to_string()))?;
        let value = decode_hex(value_hex).ok_or(ProtectionParseError::Hex)?;
        Ok(RowProtection {
            version,
            keyid,
            value,
        })
    }
}

impl RowProtection {
    /// Parses a statement's protection: a rowProtection whose first field names the layout of
    /// the statement (1 or 2) instead of an entity version.
    pub fn parse_statement(s: &str) -> Result<(Layout, Self), ProtectionParseError> {
        match s.strip_prefix("2:") {
            Some(rest) => Ok((Layout::Canonical, Self::parse(&format!("1:{rest}"))?)),
            None => Ok((Layout::Text, Self::parse(s)?)),
        }
    }

    /// The statement protection in `layout`: this value with its first field set to the layout.
    pub fn to_statement_string(&self, layout: Layout) -> String {
        format!(
            "{}:{}:{}:{}",
            layout.number(),
            self.version.number(),
            self.keyid,
            encode_hex(&self.value)
        )
    }
}

impl fmt::Display for RowProtection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            ENTITY_PROTECT_VERSION,
            self.version.number(),
            self.keyid,
            encode_hex(&self.value)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_hex_agrees_with_the_hex_crate(s in "[0-9a-fA-FxG ]{0,40}") {
            prop_assert_eq!(decode_hex(&s), hex::decode(&s).ok());
        }

        #[test]
        fn encode_hex_agrees_with_the_hex_crate(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(encode_hex(&b), hex::encode(&b));
        }
    }

    #[test]
    fn batch_first_reads_only_the_start() {
        let v = format!("1:3:7:{}{}", hex::encode(42i64.to_be_bytes()), "00000004");
        assert_eq!(RowProtection::batch_first(&v), Some(42));
        assert_eq!(RowProtection::batch_first("1:2:7:00"), None);
        assert_eq!(RowProtection::batch_first("1:3:7:00zz"), None);
        let neg = format!("1:3:7:{}", hex::encode((-5i64).to_be_bytes()));
        assert_eq!(RowProtection::batch_first(&neg), Some(-5));
        let v4 = format!("1:4:7:{}{}", hex::encode(42i64.to_be_bytes()), "00000004");
        assert_eq!(RowProtection::batch_first(&v4), Some(42));
    }

    #[test]
    fn statement_protection_names_its_layout() {
        let (layout, p) = RowProtection::parse_statement("2:1:7:abcd").unwrap();
        assert_eq!(layout, Layout::Canonical);
        assert_eq!((p.version, p.keyid), (ProtectionVersion::Hmac, 7));
        assert_eq!(p.to_statement_string(layout), "2:1:7:abcd");
        let (layout, p) = RowProtection::parse_statement("1:2:7:abcd").unwrap();
        assert_eq!(layout, Layout::Text);
        assert_eq!(p.to_statement_string(layout), "1:2:7:abcd");
        assert!(RowProtection::parse_statement("3:1:7:abcd").is_err());
    }

    #[test]
    fn round_trip() {
        let p = RowProtection {
            version: ProtectionVersion::Signature,
            keyid: 400,
            value: vec![0xde, 0xad, 0xbe, 0xef],
        };
        assert_eq!(p.to_string(), "1:2:400:deadbeef");
        assert_eq!(RowProtection::parse("1:2:400:deadbeef").unwrap(), p);
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(
            RowProtection::parse("junk"),
            Err(ProtectionParseError::Layout)
        );
        assert_eq!(
            RowProtection::parse("1:2:ab"),
            Err(ProtectionParseError::Layout)
        );
        assert!(matches!(
            RowProtection::parse("2:2:1:00"),
            Err(ProtectionParseError::EntityVersion(_))
        ));
        assert!(matches!(
            RowProtection::parse("1:5:1:00"),
            Err(ProtectionParseError::UnknownVersion(_))
        ));
        assert!(matches!(
            RowProtection::parse("1:2:x:00"),
            Err(ProtectionParseError::KeyId(_))
        ));
        assert_eq!(
            RowProtection::parse("1:2:1:zz"),
            Err(ProtectionParseError::Hex)
        );
        assert_eq!(
            RowProtection::parse("1:2:1:DEADBEEF").unwrap().value,
            vec![0xde, 0xad, 0xbe, 0xef]
        );
    }
}
