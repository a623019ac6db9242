//! The batched device's formats (docs/FORMAT.md, "Protection version 3"): the batch statement
//! that is signed once per batch, the chain of statements, and the per-row inclusion proof
//! carried in `rowProtection` as `1:3:<keyid>:<hex payload>`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{self, Hash};
use crate::record::{AuditRecord, SEPARATOR};

/// First field of every statement: names the layout, so it can never be mistaken for a row's
/// protect string.
pub const STATEMENT_TAG: &str = "auditseal-batch-v1";

/// The previous-statement hash of a node's first batch.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One row of `AuditBatchData`: a signed statement about rows first..=last of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
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

/// The worked example of docs/FORMAT.md ("Protection version 3"): the values there are checked
/// here, so the document cannot drift from the code.
#[cfg(test)]
mod worked_example {
    use super::*;
    use crate::protector::protect_bytes;
    use crate::token::HmacToken;

    fn rows() -> Vec<AuditRecord> {
        (0..3)
            .map(|i| AuditRecord {
                pk: format!("{:032x}", i + 1),
                node_id: "node1".into(),
                sequence_number: i,
                time_stamp: 1_764_072_000_000,
                event_type: "PROCESS".into(),
                event_status: "SUCCESS".into(),
                auth_token: "CN=signer".into(),
                service: "SIGNSERVER".into(),
                module: "WORKER".into(),
                custom_id: None,
                search_detail1: None,
                search_detail2: None,
                additional_details: None,
                row_version: 0,
                row_protection: None,
            })
            .collect()
    }

    #[test]
    fn print_and_check() {
        let token = HmacToken::new(1, b"auditseal example key");
        let rows = rows();
        let leaves: Vec<_> = rows.iter().map(row_leaf).collect();
        let root = merkle::root(&leaves);
        let mut b = BatchRecord {
            node_id: "node1".into(),
            first_sequence_number: 0,
            last_sequence_number: 2,
            time_stamp: 1_764_072_000_000,
            merkle_root: hex::encode(root),
            previous_hash: GENESIS_HASH.into(),
            key_id: 1,
            statement_protection: String::new(),
        };
        b.statement_protection = protect_bytes(&token, b.statement().as_bytes()).unwrap();
        let proofs = merkle::all_inclusion_proofs(&leaves);
        for (i, l) in leaves.iter().enumerate() {
            println!("leaf {i}: {}", hex::encode(l));
        }
        println!("root: {}", b.merkle_root);
        println!("statement: {}", b.statement());
        println!("statementProtection: {}", b.statement_protection);
        println!("statement hash: {}", b.statement_hash());
        for (i, p) in proofs.iter().enumerate() {
            let payload = InclusionPayload {
                first_sequence_number: 0,
                tree_size: 3,
                proof: p.clone(),
            };
            println!("row {i}: 1:3:1:{}", payload.to_hex());
        }
        assert_eq!(b.merkle_root, EXPECTED_ROOT);
        assert_eq!(b.statement_protection, EXPECTED_STATEMENT_PROTECTION);
        let p2 = InclusionPayload {
            first_sequence_number: 0,
            tree_size: 3,
            proof: proofs[2].clone(),
        };
        assert_eq!(format!("1:3:1:{}", p2.to_hex()), EXPECTED_ROW2);
    }

    const EXPECTED_ROOT: &str = "f3fb7e502d2a248c1968aafd22b2993c37eaabb73cea60212ff03fe75bcb8afe";
    const EXPECTED_STATEMENT_PROTECTION: &str =
        "1:1:1:ccfee02d0226bf2f5ebb56d04681805062d39a3f21fb22cbf90c220aae1667fd";
    const EXPECTED_ROW2: &str = "1:3:1:000000000000000000000003ed4f30f88c3476bdb04798c6b5563186c1ab1ec4dcd3b87f89354a6fba43d75b";
}
