//! auditseal's canonical encoding (docs/FORMAT.md section 6.1, "The canonical encoding"): what
//! auditseal hashes or signs of its own, as a tag and then fields that each say whether they are
//! null and how long they are, so no two different sequences of values encode alike. The
//! protect string (CESeCore's) cannot say that: null and "" both render as nothing, and a
//! `<sep/>` inside a value reads as a boundary.

use crate::format::merkle::{self, Hash};
use crate::format::record::AuditRecord;

/// The tag of a row's encoding, whatever its protection version (named after version 4, the
/// first whose leaves use it).
pub const ROW_TAG: &str = "auditseal-row-v4";

const NULL: u8 = 0x00;
const PRESENT: u8 = 0x01;

/// Builds one encoding: the tag and a 0x00 byte, then each field in turn.
pub struct Encoder(Vec<u8>);

impl Encoder {
    pub fn new(tag: &str, capacity: usize) -> Self {
        let mut b = Vec::with_capacity(tag.len() + 1 + capacity);
        b.extend_from_slice(tag.as_bytes());
        b.push(0x00);
        Encoder(b)
    }

    /// A text field: 0x00 for null; else 0x01, the UTF-8 length as 8 bytes big-endian, the bytes.
    pub fn text(mut self, v: Option<&str>) -> Self {
        match v {
            None => self.0.push(NULL),
            Some(s) => {
                self.0.push(PRESENT);
                self.0.extend_from_slice(&(s.len() as u64).to_be_bytes());
                self.0.extend_from_slice(s.as_bytes());
            }
        }
        self
    }

    /// An integer field: 0x00 for null; else 0x01 and 8 bytes, big-endian two's complement.
    pub fn int(mut self, v: Option<i64>) -> Self {
        match v {
            None => self.0.push(NULL),
            Some(n) => {
                self.0.push(PRESENT);
                self.0.extend_from_slice(&n.to_be_bytes());
            }
        }
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// E(r): the row's 13 protected columns, in the protect string's order.
pub fn row(r: &AuditRecord) -> Vec<u8> {
    let text_len: usize = [
        r.pk.len(),
        r.node_id.len(),
        r.event_type.len(),
        r.event_status.len(),
        r.auth_token.len(),
        r.service.len(),
        r.module.len(),
        r.custom_id.as_deref().map_or(0, str::len),
        r.search_detail1.as_deref().map_or(0, str::len),
        r.search_detail2.as_deref().map_or(0, str::len),
        r.additional_details.as_deref().map_or(0, str::len),
    ]
    .iter()
    .sum();
    Encoder::new(ROW_TAG, text_len + 13 * 9)
        .text(Some(&r.pk))
        .text(Some(&r.node_id))
        .int(Some(r.sequence_number))
        .int(Some(r.time_stamp))
        .text(Some(&r.event_type))
        .text(Some(&r.event_status))
        .text(Some(&r.auth_token))
        .text(Some(&r.service))
        .text(Some(&r.module))
        .text(r.custom_id.as_deref())
        .text(r.search_detail1.as_deref())
        .text(r.search_detail2.as_deref())
        .text(r.additional_details.as_deref())
        .finish()
}

/// A row's canonical leaf hash: SHA-256(0x00 || E(r)).
pub fn row_leaf(r: &AuditRecord) -> Hash {
    merkle::leaf_hash(&row(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12.3: edits that keep the protect string keep the v3 leaf, never the canonical one.
    #[test]
    fn null_and_empty_and_moved_separators_encode_apart() {
        let r = AuditRecord::example();
        let mut empty = r.clone();
        empty.custom_id = Some(String::new());
        assert_eq!(r.protect_string(), empty.protect_string());
        assert_ne!(row(&r), row(&empty));

        let mut a = r.clone();
        a.custom_id = Some("x<sep/>y".into());
        a.search_detail1 = Some("z".into());
        let mut b = r.clone();
        b.custom_id = Some("x".into());
        b.search_detail1 = Some("y<sep/>z".into());
        assert_eq!(a.protect_string(), b.protect_string());
        assert_ne!(row(&a), row(&b));
        assert_ne!(row_leaf(&a), row_leaf(&b));
    }

    #[test]
    fn fields_are_flag_length_bytes() {
        let e = row(&AuditRecord::example());
        let mut want = b"auditseal-row-v4\0".to_vec();
        let text = |w: &mut Vec<u8>, s: &str| {
            w.push(1);
            w.extend_from_slice(&(s.len() as u64).to_be_bytes());
            w.extend_from_slice(s.as_bytes());
        };
        text(&mut want, "pk1");
        text(&mut want, "node1");
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0]);
        for s in ["LOG_VERIFY", "VOID", "", "CORE", "SECURITY_AUDIT"] {
            text(&mut want, s);
        }
        want.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(hex::encode(e), hex::encode(want));
    }
}
