//! The batched device's formats (docs/FORMAT.md section 6, protection versions 3 and 4): the
//! batch statement that is signed once per batch, the chain of statements, and the per-row
//! inclusion proof carried in `rowProtection` as `1:<3|4>:<keyid>:<hex payload>`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::protector::protect_statement;
use crate::crypto::token::{CryptoToken, TokenError};
use crate::format::canonical;
use crate::format::merkle::{self, Hash};
use crate::format::protection::{Layout, ProtectionVersion, encode_hex, push_hex};
use crate::format::record::AuditRecord;
use crate::format::statement::{Field, SignedStatement, Signer};

/// First field of every statement of layout 1 (version 3 batches): names the layout, so it can
/// never be mistaken for a row's protect string.
pub const STATEMENT_TAG: &str = "auditseal-batch-v1";
/// The tag of the statements of layout 2 (version 4 batches), in the canonical encoding.
pub const STATEMENT_TAG_CANONICAL: &str = "auditseal-batch-v2";

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
    /// `<layout>:<1|2>:<keyid>:<hex>`: the MAC or signature over `statement()`, in
    /// rowProtection's layout with the statement's layout (1 or 2) first.
    #[sqlx(rename = "statementprotection")]
    pub statement_protection: String,
}

impl BatchRecord {
    /// The layout its statementProtection names.
    pub fn layout(&self) -> Layout {
        Layout::of_statement(&self.statement_protection)
    }

    /// What the node's next statement names as its previous one.
    pub fn statement_hash(&self) -> String {
        encode_hex(&Sha256::digest(self.statement()))
    }

    pub fn size(&self) -> i64 {
        self.last_sequence_number - self.first_sequence_number + 1
    }
}

impl SignedStatement for BatchRecord {
    fn tags(&self) -> (&'static str, &'static str) {
        (STATEMENT_TAG, STATEMENT_TAG_CANONICAL)
    }

    fn fields(&self) -> Vec<Field<'_>> {
        vec![
            Field::Text(&self.node_id),
            Field::Int(self.first_sequence_number),
            Field::Int(self.last_sequence_number),
            Field::Int(self.time_stamp),
            Field::Text(&self.merkle_root),
            Field::Text(&self.previous_hash),
            Field::Int(i64::from(self.key_id)),
        ]
    }

    /// A statement speaks for the last row it covers.
    fn signer(&self) -> Signer<'_> {
        let (protection, key_id) = (&self.statement_protection, self.key_id);
        let (node, seq) = (&self.node_id, self.last_sequence_number);
        Signer {
            protection,
            key_id,
            node,
            seq,
        }
    }
}

/// A version 3 row's leaf hash: SHA-256(0x00 || protect string).
pub fn row_leaf(r: &AuditRecord) -> Hash {
    merkle::leaf_hash(r.protect_string().as_bytes())
}

/// The leaf hash a batch of `version` (3 or 4) takes of a row.
pub fn leaf(version: ProtectionVersion, r: &AuditRecord) -> Hash {
    match version {
        ProtectionVersion::BatchCanonical => canonical::row_leaf(r),
        _ => row_leaf(r),
    }
}

/// The layout of the statement of a batch of `version` (3 or 4).
pub fn statement_layout(version: ProtectionVersion) -> Layout {
    match version {
        ProtectionVersion::BatchCanonical => Layout::Canonical,
        _ => Layout::Text,
    }
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
    #[error("batch payload has {0} bytes; expected 12 + 32 per proof hash")]
    Length(usize),
}

impl InclusionPayload {
    /// The payload as a row's protection carries it (see `push_hex`).
    #[cfg(test)]
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(self.hex_len());
        self.push_hex(&mut out);
        out
    }

    /// How many hex digits `push_hex` appends.
    pub fn hex_len(&self) -> usize {
        2 * (12 + 32 * self.proof.len())
    }

    /// Appends the payload to `out` in lower-case hex: 8 bytes first sequence number
    /// (big-endian, signed) || 4 bytes tree size (big-endian) || the proof hashes, 32 bytes
    /// each.
    pub fn push_hex(&self, out: &mut String) {
        push_hex(out, &self.first_sequence_number.to_be_bytes());
        push_hex(out, &self.tree_size.to_be_bytes());
        for h in &self.proof {
            push_hex(out, h);
        }
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

/// Builds a batch of `version` (3 or 4) over `rows` (consecutive, of one node, one timeStamp):
/// leaf hashes, Merkle root, the signed statement (layout 1 for version 3, 2 for version 4), and
/// each row's `1:<version>:<keyid>:<first || size || proof>`. Returns the statement and the
/// rows' leaf hashes (`leaf(version, row)`, in row order; for version 4 the rows' canonical
/// leaves, which the checkpoint writer folds).
pub fn seal(
    node_id: &str,
    rows: &mut [AuditRecord],
    token: &dyn CryptoToken,
    time_stamp: i64,
    previous_hash: String,
    version: ProtectionVersion,
) -> Result<(BatchRecord, Vec<Hash>), TokenError> {
    let layout = statement_layout(version);
    let leaves: Vec<Hash> = rows.iter().map(|r| leaf(version, r)).collect();
    let root = merkle::root(&leaves);
    let first = rows.first().map_or(0, |r| r.sequence_number);
    let mut b = BatchRecord {
        node_id: node_id.to_string(),
        first_sequence_number: first,
        last_sequence_number: first + rows.len() as i64 - 1,
        time_stamp,
        merkle_root: encode_hex(&root),
        previous_hash,
        key_id: token.keyid(),
        statement_protection: String::new(),
    };
    b.statement_protection = protect_statement(token, layout, &b.statement_in(layout))?;
    let size = rows.len() as u32;
    for (row, proof) in rows.iter_mut().zip(merkle::all_inclusion_proofs(&leaves)) {
        let payload = InclusionPayload {
            first_sequence_number: first,
            tree_size: size,
            proof,
        };
        let mut protection = format!("1:{}:{}:", version.number(), token.keyid());
        protection.reserve(payload.hex_len());
        payload.push_hex(&mut protection);
        row.row_protection = Some(protection);
    }
    Ok((b, leaves))
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
            String::from_utf8(b.statement()).unwrap(),
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
pub(crate) mod worked_example {
    use super::*;
    use crate::crypto::protector::protect_bytes;
    use crate::crypto::token::HmacToken;

    pub(crate) fn rows() -> Vec<AuditRecord> {
        (0..3)
            .map(|i| AuditRecord {
                pk: format!("{:032x}", i + 1),
                sequence_number: i,
                time_stamp: 1_764_072_000_000,
                event_type: "PROCESS".into(),
                event_status: "SUCCESS".into(),
                auth_token: "CN=signer".into(),
                service: "SIGNSERVER".into(),
                module: "WORKER".into(),
                ..AuditRecord::example()
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
        b.statement_protection = protect_bytes(&token, &b.statement()).unwrap();
        let proofs = merkle::all_inclusion_proofs(&leaves);
        for (i, l) in leaves.iter().enumerate() {
            println!("leaf {i}: {}", hex::encode(l));
        }
        println!("root: {}", b.merkle_root);
        println!("statement: {}", String::from_utf8_lossy(&b.statement()));
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

/// The worked example of docs/FORMAT.md section 6.5 for version 4: the same rows and key as
/// version 3's, so the two can be compared.
#[cfg(test)]
mod worked_example_v4 {
    use super::*;
    use crate::crypto::token::HmacToken;

    #[test]
    fn print_and_check() {
        let token = HmacToken::new(1, b"auditseal example key");
        let mut rows = worked_example::rows();
        let leaves: Vec<_> = rows.iter().map(canonical::row_leaf).collect();
        let (b, _) = seal(
            "node1",
            &mut rows,
            &token,
            1_764_072_000_000,
            GENESIS_HASH.into(),
            ProtectionVersion::BatchCanonical,
        )
        .unwrap();
        let e0 = hex::encode(canonical::row(&rows[0]));
        println!("E(row 0): {e0}");
        for (i, l) in leaves.iter().enumerate() {
            println!("leaf {i}: {}", hex::encode(l));
        }
        println!(
            "node(leaf 0, leaf 1): {}",
            hex::encode(merkle::node_hash(&leaves[0], &leaves[1]))
        );
        println!("root: {}", b.merkle_root);
        println!("S: {}", hex::encode(b.statement()));
        println!("statementProtection: {}", b.statement_protection);
        println!("statement hash: {}", b.statement_hash());
        for r in &rows {
            println!(
                "row {}: {}",
                r.sequence_number,
                r.row_protection.as_deref().unwrap()
            );
        }
        assert_eq!(e0, EXPECTED_E0);
        assert_eq!(hex::encode(leaves[0]), EXPECTED_LEAF0);
        assert_eq!(b.merkle_root, EXPECTED_ROOT);
        assert_eq!(hex::encode(b.statement()), EXPECTED_S);
        assert_eq!(b.statement_protection, EXPECTED_STATEMENT_PROTECTION);
        assert_eq!(b.statement_hash(), EXPECTED_STATEMENT_HASH);
        assert_eq!(rows[2].row_protection.as_deref(), Some(EXPECTED_ROW2));
    }

    /// The text of section 6.5 itself: its E(row 0) block and its values are the code's.
    #[test]
    fn the_document_states_these_values() {
        let doc = include_str!("../../../docs/FORMAT.md");
        let at = doc
            .find("**Version 4.**")
            .expect("section 6.5's version 4 example");
        let example = &doc[at..];
        let block = example.split("```").nth(1).expect("the E(row 0) block");
        let block: String = block.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(block, EXPECTED_E0);
        assert!(example.starts_with(&format!(
            "**Version 4.** The same key and rows. E(row 0), {} bytes",
            EXPECTED_E0.len() / 2
        )));
        assert!(example.contains(&format!("S (layout 2), {} bytes", EXPECTED_S.len() / 2)));
        for v in [
            EXPECTED_LEAF0,
            EXPECTED_ROOT,
            EXPECTED_STATEMENT_PROTECTION,
            EXPECTED_STATEMENT_HASH,
            EXPECTED_ROW2,
        ] {
            assert!(example.contains(v), "{v} is not in section 6.5");
        }
    }

    const EXPECTED_E0: &str = "61756469747365616c2d726f772d76340001000000000000002030303030303030303030303030303030303030303030303030303030303030310100000000000000056e6f646531010000000000000000010000019abae28a0001000000000000000750524f4345535301000000000000000753554343455353010000000000000009434e3d7369676e657201000000000000000a5349474e534552564552010000000000000006574f524b455200000000";
    const EXPECTED_LEAF0: &str = "5926cf81b47af0fd350eacf35a45dcf845b13638f43e7feda521163316c37d16";
    const EXPECTED_ROOT: &str = "9ad9cd252ec03d4840b16fd9ba1d740cb10827fb41810c5b21303a40528ec93f";
    const EXPECTED_S: &str = "61756469747365616c2d62617463682d7632000100000000000000056e6f646531010000000000000000010000000000000002010000019abae28a000100000000000000403961643963643235326563303364343834306231366664396261316437343063623130383237666234313831306335623231333033613430353238656339336601000000000000004030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030303030010000000000000001";
    const EXPECTED_STATEMENT_PROTECTION: &str =
        "2:1:1:26c35aac2248b3b63f9388554418ea1e9f098b0a94e5307f3f6d556ebaf92e11";
    const EXPECTED_STATEMENT_HASH: &str =
        "82ae923adcd2830409c48cce8e7ac0f807e745da581af5e930cda1695535edb8";
    const EXPECTED_ROW2: &str = "1:4:1:0000000000000000000000037921a120ccc7131f767121f51717981c8dc67e5ce221fbe1b168f6f45ffd7e8a";
}
