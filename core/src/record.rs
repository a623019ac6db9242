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

/// A new 32-character lower-case hex primary key, as CESeCore writes them.
pub fn new_pk() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_example() -> AuditRecord {
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

    #[test]
    fn protect_string_matches_spec_example() {
        assert_eq!(
            spec_example().protect_string(),
            "pk1<sep/>node1<sep/>0<sep/>0<sep/>LOG_VERIFY<sep/>VOID<sep/><sep/>CORE<sep/>SECURITY_AUDIT<sep/><sep/><sep/><sep/>"
        );
    }

    #[test]
    fn protect_string_renders_negative_numbers_and_keeps_separators_unescaped() {
        let mut r = spec_example();
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
