//! The audit record (one row of `AuditRecordData`) and its protect string.
//! Format: docs/FORMAT.md "The protect string" (= CESeCore spec section 2).

use serde::{Deserialize, Serialize};

/// The separator CESeCore puts between the protected values. Nothing is escaped (spec section 2).
pub const SEPARATOR: &str = "<sep/>";

/// The three event outcomes CESeCore knows.
pub const EVENT_STATUSES: [&str; 3] = ["SUCCESS", "FAILURE", "VOID"];

/// One row of `AuditRecordData`, exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub pk: String,
    #[sqlx(rename = "nodeid")]
    pub node_id: String,
    #[sqlx(rename = "sequencenumber")]
    pub sequence_number: i64,
    #[sqlx(rename = "timestamp")]
    pub time_stamp: i64,
    #[sqlx(rename = "eventtype")]
    pub event_type: String,
    #[sqlx(rename = "eventstatus")]
    pub event_status: String,
    #[sqlx(rename = "authtoken")]
    pub auth_token: String,
    pub service: String,
    pub module: String,
    #[sqlx(rename = "customid")]
    pub custom_id: Option<String>,
    #[sqlx(rename = "searchdetail1")]
    pub search_detail1: Option<String>,
    #[sqlx(rename = "searchdetail2")]
    pub search_detail2: Option<String>,
    #[sqlx(rename = "additionaldetails")]
    pub additional_details: Option<String>,
    #[sqlx(rename = "rowversion")]
    pub row_version: i32,
    #[sqlx(rename = "rowprotection")]
    pub row_protection: Option<String>,
}

impl AuditRecord {
    /// The bytes its columns take, as the store counts them for its read budget
    /// (`store::ROW_BYTES`).
    pub fn stored_bytes(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.pk.len()
            + self.node_id.len()
            + self.event_type.len()
            + self.event_status.len()
            + self.auth_token.len()
            + self.service.len()
            + self.module.len()
            + opt(&self.custom_id)
            + opt(&self.search_detail1)
            + opt(&self.search_detail2)
            + opt(&self.additional_details)
            + opt(&self.row_protection)
    }

    /// The string that is MACed or signed: the 13 protected values joined with `<sep/>`,
    /// nulls as empty strings, integers in plain decimal.
    pub fn protect_string(&self) -> String {
        let seq = self.sequence_number.to_string();
        let ts = self.time_stamp.to_string();
        let parts: [&str; 13] = [
            &self.pk,
            &self.node_id,
            &seq,
            &ts,
            &self.event_type,
            &self.event_status,
            &self.auth_token,
            &self.service,
            &self.module,
            self.custom_id.as_deref().unwrap_or(""),
            self.search_detail1.as_deref().unwrap_or(""),
            self.search_detail2.as_deref().unwrap_or(""),
            self.additional_details.as_deref().unwrap_or(""),
        ];
        parts.join(SEPARATOR)
    }
}

/// A new 32-character lower-case hex primary key: a UUID of version 7 (RFC 9562: 48 bits of
/// Unix milliseconds, then 74 random bits), so that new keys land at the right-hand end of the
/// primary key's index instead of anywhere in it; a random one made every insert touch another
/// page of an index that outgrows memory as the table grows.
pub fn new_pk() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A pk a client chose (exactly-once ingestion), in the form `new_pk` writes: any textual UUID
/// (hyphenated, simple, braced or URN; any case) as 32 lower-case hex digits. The nil and max
/// UUIDs are refused (a client that sends them has not chosen one).
pub fn client_pk(text: &str) -> Result<String, String> {
    let u = uuid::Uuid::try_parse(text.trim())
        .map_err(|e| format!("pk {text:?} is not a UUID: {e}"))?;
    if u.is_nil() || u.is_max() {
        return Err(format!("pk {text:?}: choose a random UUID (version 4)"));
    }
    Ok(u.simple().to_string())
}

/// The pk of event `index` of a request sent with `Idempotency-Key: key` by `submitter`
/// (docs/API.md "Retries"): a UUID version 8 made of the first 16 bytes of
/// SHA-256("auditseal-idempotency" 0x00 submitter 0x00 key 0x00 index-in-decimal), so a retry of
/// the same request names the same rows, and two submitters' keys never meet.
pub fn idempotency_pk(submitter: &str, key: &str, index: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        "auditseal-idempotency".as_bytes(),
        submitter.as_bytes(),
        key.as_bytes(),
    ] {
        h.update(part);
        h.update([0u8]);
    }
    h.update(index.to_string().as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&h.finalize()[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .simple()
        .to_string()
}

/// The example row of the compatibility rules (docs/FORMAT.md): node1's LOG_VERIFY at sequence 0.
/// Unit tests start from it and change the fields they are about.
#[cfg(test)]
impl AuditRecord {
    pub(crate) fn example() -> AuditRecord {
        AuditRecord {
            pk: "pk1".into(),
            node_id: "node1".into(),
            sequence_number: 0,
            time_stamp: 0,
            event_type: "LOG_VERIFY".into(),
            event_status: "VOID".into(),
            auth_token: String::new(),
            service: "CORE".into(),
            module: "SECURITY_AUDIT".into(),
            custom_id: None,
            search_detail1: None,
            search_detail2: None,
            additional_details: None,
            row_version: 0,
            row_protection: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_pks_are_normalised_and_checked() {
        let simple = "6f0c1a4e2b3d4c5e8f90a1b2c3d4e5f6";
        for form in [
            "6f0c1a4e-2b3d-4c5e-8f90-a1b2c3d4e5f6",
            "6F0C1A4E-2B3D-4C5E-8F90-A1B2C3D4E5F6",
            "{6f0c1a4e-2b3d-4c5e-8f90-a1b2c3d4e5f6}",
            "urn:uuid:6f0c1a4e-2b3d-4c5e-8f90-a1b2c3d4e5f6",
            simple,
        ] {
            assert_eq!(client_pk(form).as_deref(), Ok(simple), "{form}");
        }
        for bad in [
            "",
            "x",
            "00000000-0000-0000-0000-000000000000",
            "6f0c1a4e2b3d",
        ] {
            assert!(client_pk(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn idempotency_pks_depend_on_submitter_key_and_index() {
        let a = idempotency_pk("token:signer-1", "req-42", 0);
        assert_eq!(a, idempotency_pk("token:signer-1", "req-42", 0));
        assert_eq!(a.len(), 32);
        // Version 8, RFC 9562 variant.
        assert_eq!(&a[12..13], "8");
        assert!(matches!(&a[16..17], "8" | "9" | "a" | "b"), "{a}");
        for other in [
            idempotency_pk("token:signer-2", "req-42", 0),
            idempotency_pk("token:signer-1", "req-43", 0),
            idempotency_pk("token:signer-1", "req-42", 1),
            // The separators keep the parts apart.
            idempotency_pk("token:signer-1\0req", "-42", 0),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn protect_string_matches_spec_example() {
        assert_eq!(
            AuditRecord::example().protect_string(),
            "pk1<sep/>node1<sep/>0<sep/>0<sep/>LOG_VERIFY<sep/>VOID<sep/><sep/>CORE<sep/>SECURITY_AUDIT<sep/><sep/><sep/><sep/>"
        );
    }

    #[test]
    fn protect_string_renders_negative_numbers_and_keeps_separators_unescaped() {
        let mut r = AuditRecord::example();
        r.sequence_number = 12;
        r.time_stamp = -5;
        r.custom_id = Some("a<sep/>b".into());
        r.additional_details = Some("x".into());
        assert_eq!(
            r.protect_string(),
            "pk1<sep/>node1<sep/>12<sep/>-5<sep/>LOG_VERIFY<sep/>VOID<sep/><sep/>CORE<sep/>SECURITY_AUDIT<sep/>a<sep/>b<sep/><sep/><sep/>x"
        );
    }

    #[test]
    fn pk_is_32_lower_hex() {
        let pk = new_pk();
        assert_eq!(pk.len(), 32);
        assert!(
            pk.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
    }
}
