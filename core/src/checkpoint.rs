//! Checkpoints (docs/FORMAT.md section 7): a signed statement that a node's log held rows
//! 0..=N with a given head hash, where the head hash chains every row's leaf hash in sequence
//! order. A copy kept outside the database lets a verifier prove later that nothing it covered
//! was deleted or rewritten.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::batch;
use crate::keys::KeyRing;
use crate::merkle::Hash;
use crate::protection::RowProtection;
use crate::protector;
use crate::record::{AuditRecord, SEPARATOR};
use crate::token::{CryptoToken, TokenError};

/// First field of every checkpoint statement.
pub const STATEMENT_TAG: &str = "auditseal-checkpoint-v1";

/// The head hash before a node's first row (sequence 0).
pub const EMPTY_HEAD: Hash = [0u8; 32];

/// Kind of a regular checkpoint.
pub const KIND_CHECKPOINT: &str = "checkpoint";
/// Kind of the marker an archive run leaves: rows up to it were exported and deleted, and the
/// node's log (and its verification) continues after it.
pub const KIND_ARCHIVE: &str = "archive";

/// The head hash after one more row: SHA-256(0x02 || previous head || leaf hash of the row).
pub fn chain(head: &Hash, leaf: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x02]);
    h.update(head);
    h.update(leaf);
    h.finalize().into()
}

/// A running head hash over a node's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The last sequence number folded in (-1 before the first row).
    pub sequence_number: i64,
    pub hash: Hash,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            sequence_number: -1,
            hash: EMPTY_HEAD,
        }
    }
}

impl Head {
    /// Folds in the next row, given its leaf hash.
    pub fn push_leaf(&mut self, sequence_number: i64, leaf: &Hash) {
        self.hash = chain(&self.hash, leaf);
        self.sequence_number = sequence_number;
    }

    pub fn push(&mut self, r: &AuditRecord) {
        self.push_leaf(r.sequence_number, &batch::row_leaf(r));
    }

    /// Where a checkpoint says the chain stood.
    pub fn of(c: &Checkpoint) -> Option<Head> {
        let hash = hex::decode(&c.head_hash)
            .ok()
            .and_then(|v| <Hash>::try_from(v.as_slice()).ok())?;
        Some(Head {
            sequence_number: c.sequence_number,
            hash,
        })
    }
}

/// One row of `AuditCheckpointData`, and one line of a checkpoint file (JSON, camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    #[sqlx(rename = "nodeid")]
    pub node_id: String,
    /// The last row the head hash covers.
    #[sqlx(rename = "sequencenumber")]
    pub sequence_number: i64,
    /// When the checkpoint was made, epoch milliseconds.
    #[sqlx(rename = "timestamp")]
    pub time_stamp: i64,
    /// Lower-case hex of the head hash after row `sequence_number`.
    #[sqlx(rename = "headhash")]
    pub head_hash: String,
    /// `checkpoint` or `archive`.
    #[sqlx(rename = "kind")]
    pub kind: String,
    #[sqlx(rename = "keyid")]
    pub key_id: i32,
    /// `1:<1|2>:<keyid>:<hex>` over `statement()`.
    #[sqlx(rename = "statementprotection")]
    pub statement_protection: String,
}

impl Checkpoint {
    /// Makes and signs a checkpoint of `head` with `token`.
    pub fn sign(
        token: &dyn CryptoToken,
        node: &str,
        head: &Head,
        time_stamp: i64,
        kind: &str,
    ) -> Result<Checkpoint, TokenError> {
        let mut c = Checkpoint {
            node_id: node.to_string(),
            sequence_number: head.sequence_number,
            time_stamp,
            head_hash: hex::encode(head.hash),
            kind: kind.to_string(),
            key_id: token.keyid(),
            statement_protection: String::new(),
        };
        c.statement_protection = protector::protect_bytes(token, c.statement().as_bytes())?;
        Ok(c)
    }

    /// The signed bytes: the fields joined with `<sep/>`, UTF-8.
    pub fn statement(&self) -> String {
        [
            STATEMENT_TAG,
            &self.node_id,
            &self.sequence_number.to_string(),
            &self.time_stamp.to_string(),
            &self.head_hash,
            &self.kind,
            &self.key_id.to_string(),
        ]
        .join(SEPARATOR)
    }

    /// Whether the MAC or signature verifies with the key its keyid names.
    pub fn check(&self, keys: &KeyRing) -> Result<(), String> {
        if self.kind != KIND_CHECKPOINT && self.kind != KIND_ARCHIVE {
            return Err(format!("unknown kind {:?}", self.kind));
        }
        let p = RowProtection::parse(&self.statement_protection).map_err(|e| e.to_string())?;
        if p.keyid != self.key_id {
            return Err(format!(
                "protected with keyid {} but names keyid {}",
                p.keyid, self.key_id
            ));
        }
        keys.verify_detached(&p, self.statement().as_bytes())
            .map_err(|e| format!("statement does not verify: {e}"))?;
        Head::of(self)
            .map(|_| ())
            .ok_or_else(|| "headHash is not 32 bytes of lower-case hex".into())
    }

    /// One line of a checkpoint file (no newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Reads a checkpoint file: one JSON object per line (blank lines and `#` comments ignored).
pub fn parse_file(text: &str) -> Result<Vec<Checkpoint>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let c: Checkpoint =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::VerifyKey;
    use crate::token::HmacToken;

    #[test]
    fn chain_is_sha256_of_tag_head_leaf() {
        let leaf = [7u8; 32];
        let mut input = vec![0x02];
        input.extend_from_slice(&EMPTY_HEAD);
        input.extend_from_slice(&leaf);
        let want: Hash = Sha256::digest(&input).into();
        let mut h = Head::default();
        h.push_leaf(0, &leaf);
        assert_eq!(h.hash, want);
        assert_eq!(h.sequence_number, 0);
    }

    #[test]
    fn signed_checkpoint_checks_and_fails_when_changed() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let token = HmacToken::new(5, secret);
        let mut keys = KeyRing::new();
        keys.insert(
            5,
            VerifyKey::Hmac(Box::new(aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                secret,
            ))),
        );
        let mut head = Head::default();
        head.push_leaf(0, &[1u8; 32]);
        let c = Checkpoint::sign(&token, "n1", &head, 1_700_000_000_000, KIND_CHECKPOINT).unwrap();
        assert_eq!(c.check(&keys), Ok(()));
        let line = c.to_json_line();
        assert_eq!(
            parse_file(&format!("# x\n\n{line}\n")).unwrap(),
            vec![c.clone()]
        );
        let mut bad = c.clone();
        bad.sequence_number = 1;
        assert!(bad.check(&keys).is_err());
        let mut bad = c;
        bad.kind = KIND_ARCHIVE.into();
        assert!(bad.check(&keys).is_err());
    }
}
