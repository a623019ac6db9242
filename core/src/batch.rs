//! The batched device's formats (docs/FORMAT.md, "Protection version 3"): the batch statement
//! that is signed once per batch, the chain of statements, and the per-row inclusion proof
//! carried in `rowProtection` as `1:3:<keyid>:<hex payload>`.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::merkle::{self, Hash};
use crate::record::{AuditRecord, SEPARATOR};

/// First field of every statement: names the layout, so it can never be mistaken for a row's
/// protect string.
pub const STATEMENT_TAG: &str = "auditseal-batch-v1";

/// The previous-statement hash of a node's first batch.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One row of `AuditBatchData`: a signed statement about rows first..=last of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct BatchRecord {
    #[sqlx(rename = "nodeid")]
    pub node_id: String,
    #[sqlx(rename = "firstsequencenumber")]
    pub first_sequence_number: i64,
    #[sqlx(rename = "lastsequencenumber")]
    pub last_sequence_number: i64,
    #[sqlx(rename = "timestamp")]
    pub time_stamp: i64,
    /// Lower-case hex of the RFC 6962 Merkle Tree Hash of the rows' leaf hashes.
    #[sqlx(rename = "merkleroot")]
    pub merkle_root: String,
    /// Lower-case hex SHA-256 of the node's previous statement (GENESIS_HASH for the first).
    #[sqlx(rename = "previoushash")]
    pub previous_hash: String,
    #[sqlx(rename = "keyid")]
    pub key_id: i32,
    /// `1:<1|2>:<keyid>:<hex>`: the MAC or signature over `statement()`, in rowProtection's layout.
    #[sqlx(rename = "statementprotection")]
    pub statement_protection: String,
}

impl BatchRecord {
    /// The signed bytes: the fields joined with `<sep/>`, UTF-8.
    pub fn statement(&self) -> String {
        [
            STATEMENT_TAG,
            &self.node_id,
            &self.first_sequence_number.to_string(),
            &self.last_sequence_number.to_string(),
            &self.time_stamp.to_string(),
            &self.merkle_root,
            &self.previous_hash,
            &self.key_id.to_string(),
        ]
        .join(SEPARATOR)
    }

    /// What the node's next statement names as its previous one.
    pub fn statement_hash(&self) -> String {
        hex::encode(Sha256::digest(self.statement().as_bytes()))
    }

    pub fn size(&self) -> i64 {
        self.last_sequence_number - self.first_sequence_number + 1
    }
}

/// A row's leaf hash: SHA-256(0x00 || protect string).
pub fn row_leaf(r: &AuditRecord) -> Hash {
    merkle::leaf_hash(r.protect_string().as_bytes())
}

/// What a version 3 row carries after its keyid: where its batch starts, the batch's size and
/// the row's inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionPayload {
    pub first_sequence_number: i64,
    pub tree_size: u32,
    pub proof: Vec<Hash>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("version 3 payload is not hex")]
    Hex,
    #[error("version 3 payload has {0} bytes; expected 12 + 32 per proof hash")]
    Length(usize),
}

impl InclusionPayload {
    /// 8 bytes first sequence number (big-endian, signed) || 4 bytes tree size (big-endian)
    /// || the proof hashes, 32 bytes each; lower-case hex.
    pub fn to_hex(&self) -> String {
        let mut bytes = Vec::with_capacity(12 + 32 * self.proof.len());
        bytes.extend_from_slice(&self.first_sequence_number.to_be_bytes());
        bytes.extend_from_slice(&self.tree_size.to_be_bytes());
        for h in &self.proof {
            bytes.extend_from_slice(h);
        }
        hex::encode(bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PayloadError> {
        if bytes.len() < 12 || !(bytes.len() - 12).is_multiple_of(32) {
            return Err(PayloadError::Length(bytes.len()));
        }
        let mut first = [0u8; 8];
        first.copy_from_slice(&bytes[..8]);
        let mut size = [0u8; 4];
        size.copy_from_slice(&bytes[8..12]);
        let proof = bytes[12..]
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        Ok(InclusionPayload {
            first_sequence_number: i64::from_be_bytes(first),
            tree_size: u32::from_be_bytes(size),
            proof,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_layout() {
        let p = InclusionPayload {
            first_sequence_number: 258,
            tree_size: 3,
            proof: vec![[0xab; 32]],
        };
        let h = p.to_hex();
        assert!(h.starts_with("0000000000000102" /* 258 */));
        assert_eq!(&h[16..24], "00000003");
        assert_eq!(
            InclusionPayload::from_bytes(&hex::decode(&h).unwrap()).unwrap(),
            p
        );
        assert_eq!(
            InclusionPayload::from_bytes(&[0; 13]),
            Err(PayloadError::Length(13))
        );
    }

    #[test]
    fn statement_layout() {
        let b = BatchRecord {
            node_id: "node1".into(),
            first_sequence_number: 0,
            last_sequence_number: 2,
            time_stamp: 1000,
            merkle_root: "aa".repeat(32),
            previous_hash: GENESIS_HASH.into(),
            key_id: 1,
            statement_protection: String::new(),
        };
        assert_eq!(
            b.statement(),
            format!(
                "auditseal-batch-v1<sep/>node1<sep/>0<sep/>2<sep/>1000<sep/>{}<sep/>{}<sep/>1",
                "aa".repeat(32),
                GENESIS_HASH
            )
        );
        assert_eq!(b.size(), 3);
        assert_eq!(b.statement_hash().len(), 64);
    }
}
