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
    /// (docs/FORMAT.md, "Protection version 3").
    Batch,
}

impl ProtectionVersion {
    pub fn number(self) -> u32 {
        match self {
            ProtectionVersion::Hmac => 1,
            ProtectionVersion::Signature => 2,
            ProtectionVersion::Batch => 3,
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

impl RowProtection {
    /// Parses a stored value. The protection is everything after the last `:` (as CESeCore does).
    pub fn parse(s: &str) -> Result<Self, ProtectionParseError> {
        let (head, value_hex) = s.rsplit_once(':').ok_or(ProtectionParseError::Layout)?;
        let mut fields = head.splitn(3, ':');
        let (Some(entity), Some(version), Some(keyid)) =
            (fields.next(), fields.next(), fields.next())
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
            other => return Err(ProtectionParseError::UnknownVersion(other.to_string())),
        };
        let keyid = keyid
            .parse::<i32>()
            .map_err(|_| ProtectionParseError::KeyId(keyid.to_string()))?;
        let value = hex::decode(value_hex).map_err(|_| ProtectionParseError::Hex)?;
        Ok(RowProtection {
            version,
            keyid,
            value,
        })
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
            hex::encode(&self.value)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            RowProtection::parse("1:4:1:00"),
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
