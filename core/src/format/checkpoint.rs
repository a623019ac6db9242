//! Checkpoints (docs/FORMAT.md section 7): a signed statement that a node's log held rows
//! 0..=N with a given head hash, where the head hash chains every row's leaf hash in sequence
//! order. A copy kept outside the database lets a verifier prove later that nothing it covered
//! was deleted or rewritten.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::keys::KeyRing;
use crate::crypto::protector;
use crate::crypto::token::{CryptoToken, TokenError};
use crate::format::batch;
use crate::format::canonical;
use crate::format::merkle::Hash;
use crate::format::protection::Layout;
use crate::format::record::AuditRecord;
use crate::format::statement::{Field, SignedStatement, Signer, StatementFailure};

/// First field of every checkpoint statement of fold 1.
pub const STATEMENT_TAG: &str = "auditseal-checkpoint-v1";
/// The tag of the checkpoint statements of fold 2, in the canonical encoding.
pub const STATEMENT_TAG_CANONICAL: &str = "auditseal-checkpoint-v2";

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
    /// Which leaf hash of each row it chains (docs/FORMAT.md 7.1): fold 1 (`Layout::Text`),
    /// the protect string's; fold 2 (`Layout::Canonical`), the canonical encoding's.
    pub fold: Layout,
}

impl Default for Head {
    /// Before a node's first row, in fold 2 (the one written now).
    fn default() -> Self {
        Head {
            sequence_number: -1,
            hash: EMPTY_HEAD,
            fold: Layout::Canonical,
        }
    }
}

impl Head {
    /// Folds in the next row, given its leaf hash.
    pub fn push_leaf(&mut self, sequence_number: i64, leaf: &Hash) {
        self.hash = chain(&self.hash, leaf);
        self.sequence_number = sequence_number;
    }

    /// Folds in the next row, with its leaf hash of this head's fold.
    pub fn push(&mut self, r: &AuditRecord) {
        let leaf = match self.fold {
            Layout::Text => batch::row_leaf(r),
            Layout::Canonical => canonical::row_leaf(r),
        };
        self.push_leaf(r.sequence_number, &leaf);
    }

    /// Where a checkpoint says the chain stood, in the checkpoint's fold.
    pub fn of(c: &Checkpoint) -> Option<Head> {
        let hash = hex::decode(&c.head_hash)
            .ok()
            .and_then(|v| <Hash>::try_from(v.as_slice()).ok())?;
        Some(Head {
            sequence_number: c.sequence_number,
            hash,
            fold: c.layout(),
        })
    }

    /// The same point, folded on in `fold`: rows after an archive marker chain onto its head
    /// hash in either fold, whichever made it (docs/FORMAT.md 7.1).
    pub fn in_fold(self, fold: Layout) -> Head {
        Head { fold, ..self }
    }
}

/// Both folds at once, for a verifier that learns which one a checkpoint uses only when it
/// meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub text: Head,
    pub canonical: Head,
}

impl Heads {
    /// Both folds from one starting point (the node's start or its archive marker).
    pub fn from(start: Head) -> Heads {
        Heads {
            text: start.in_fold(Layout::Text),
            canonical: start.in_fold(Layout::Canonical),
        }
    }

    /// Folds in the next row, given its two leaf hashes.
    pub fn push_leaves(&mut self, sequence_number: i64, text: &Hash, canonical: &Hash) {
        self.text.push_leaf(sequence_number, text);
        self.canonical.push_leaf(sequence_number, canonical);
    }

    pub fn push(&mut self, r: &AuditRecord) {
        self.text.push(r);
        self.canonical.push(r);
    }

    /// The head of `fold`.
    pub fn get(&self, fold: Layout) -> &Head {
        match fold {
            Layout::Text => &self.text,
            Layout::Canonical => &self.canonical,
        }
    }

    /// The last sequence number folded in.
    pub fn sequence_number(&self) -> i64 {
        self.canonical.sequence_number
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
    /// `<fold>:<1|2>:<keyid>:<hex>` over `statement()`: the first field names the fold of
    /// headHash and the layout of the statement (docs/FORMAT.md 7.2).

    #[sqlx(rename = "statementprotection")]
    pub statement_protection: String,
}

impl Checkpoint {
    /// Makes and signs a checkpoint of `head` with `token`, in the head's fold.
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
        c.statement_protection =
            protector::protect_statement(token, head.fold, &c.statement_in(head.fold))?;
        Ok(c)
    }

    /// The fold its statementProtection names.
    pub fn layout(&self) -> Layout {
        Layout::of_statement(&self.statement_protection)
    }

    /// Whether the MAC or signature verifies with the key its keyid names.
    pub fn check(&self, keys: &KeyRing) -> Result<(), String> {
        if self.kind != KIND_CHECKPOINT && self.kind != KIND_ARCHIVE {
            return Err(format!("unknown kind {:?}", self.kind));
        }
        self.verify_protection(keys).map_err(|f| match f {
            StatementFailure::Signature(e) => format!("statement does not verify: {e}"),
            unreadable => unreadable.to_string(),
        })?;
        Head::of(self)
            .map(|_| ())
            .ok_or_else(|| "headHash is not 32 bytes of lower-case hex".into())
    }

    /// One line of a checkpoint file (no newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl SignedStatement for Checkpoint {
    fn tags(&self) -> (&'static str, &'static str) {
        (STATEMENT_TAG, STATEMENT_TAG_CANONICAL)
    }

    fn fields(&self) -> Vec<Field<'_>> {
        vec![
            Field::Text(&self.node_id),
            Field::Int(self.sequence_number),
            Field::Int(self.time_stamp),
            Field::Text(&self.head_hash),
            Field::Text(&self.kind),
            Field::Int(i64::from(self.key_id)),
        ]
    }

    /// A checkpoint speaks for the last row its head hash covers.
    fn signer(&self) -> Signer<'_> {
        let (protection, key_id) = (&self.statement_protection, self.key_id);
        let (node, seq) = (&self.node_id, self.sequence_number);
        Signer {
            protection,
            key_id,
            node,
            seq,
        }
    }
}

/// What precedes the checkpoint's JSON in a syslog message's MSG (section 7.3).
pub const SYSLOG_PREFIX: &str = "auditseal-checkpoint ";

/// What one line of a checkpoint file holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Checkpoint(Box<Checkpoint>),
    /// Blank, or a `#` comment.
    Empty,
    /// Anything else: another message in a syslog receiver's file.
    Other,
}

/// Reads one line of a checkpoint file (section 7.3): a JSON object, or a syslog line as a
/// receiver stored it (any header before `auditseal-checkpoint {JSON}`). A line that looks like
/// a checkpoint but does not parse is an error, never skipped.
pub fn parse_line(line: &str) -> Result<Line, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Empty);
    }
    let json = if line.starts_with('{') {
        line
    } else if let Some(i) = line.find(&format!("{SYSLOG_PREFIX}{{")) {
        &line[i + SYSLOG_PREFIX.len()..]
    } else {
        return Ok(Line::Other);
    };
    serde_json::from_str(json)
        .map(|c| Line::Checkpoint(Box::new(c)))
        .map_err(|e| e.to_string())
}

/// Reads a checkpoint file line by line, handing each checkpoint and its line number (from 1)
/// to `each`; returns how many lines held something else.
pub fn read_log<R: std::io::BufRead>(
    mut r: R,
    mut each: impl FnMut(usize, Checkpoint),
) -> Result<usize, String> {
    let (mut n, mut other) = (0, 0);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf).map_err(|e| e.to_string())? == 0 {
            return Ok(other);
        }
        n += 1;
        match parse_line(&String::from_utf8_lossy(&buf)).map_err(|e| format!("line {n}: {e}"))? {
            Line::Checkpoint(c) => each(n, *c),
            Line::Empty => {}
            Line::Other => other += 1,
        }
    }
}

/// Reads a whole checkpoint file (JSON lines, or a syslog receiver's file).
pub fn parse_file(text: &str) -> Result<Vec<Checkpoint>, String> {
    let mut out = Vec::new();
    read_log(text.as_bytes(), |_, c| out.push(c))?;
    Ok(out)
}

/// `auditseal-db checkpoint verify`: a checkpoint log checked on its own (no database). Every
/// statement must verify, and per node the head may only grow: a later line never has a smaller
/// sequence number, and one with the same sequence number has the same head hash.
pub struct LogCheck<'a> {
    keys: &'a KeyRing,
    nodes: std::collections::BTreeMap<String, NodeLog>,
    report: LogReport,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLog {
    pub node_id: String,
    /// Checkpoints whose statement verified (whether or not their head grew).
    pub checkpoints: usize,
    pub first_sequence: i64,
    pub last_sequence: i64,
    pub last_head_hash: String,
    /// The line of the newest checkpoint.
    pub last_line: usize,
    pub key_ids: std::collections::BTreeSet<i32>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogError {
    pub line: usize,
    pub node_id: String,
    pub sequence_number: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogReport {
    /// Checkpoints read (verified or not).
    pub checkpoints: usize,
    /// Lines that held something else (other messages in a syslog file).
    pub other_lines: usize,
    pub nodes: Vec<NodeLog>,
    pub errors: Vec<LogError>,
}

impl<'a> LogCheck<'a> {
    pub fn new(keys: &'a KeyRing) -> LogCheck<'a> {
        LogCheck {
            keys,
            nodes: Default::default(),
            report: LogReport::default(),
        }
    }

    /// Checks the checkpoint on `line` against the key ring and the node's earlier lines.
    pub fn add(&mut self, line: usize, c: Checkpoint) {
        self.report.checkpoints += 1;
        let mut fail = |reason: String| {
            self.report.errors.push(LogError {
                line,
                node_id: c.node_id.clone(),
                sequence_number: c.sequence_number,
                reason,
            })
        };
        if let Err(e) = c.check(self.keys) {
            // Not taken as the node's head: nothing it says can be trusted.
            fail(e);
            return;
        }
        match self.nodes.get_mut(&c.node_id) {
            None => {
                self.nodes.insert(
                    c.node_id.clone(),
                    NodeLog {
                        node_id: c.node_id.clone(),
                        checkpoints: 1,
                        first_sequence: c.sequence_number,
                        last_sequence: c.sequence_number,
                        last_head_hash: c.head_hash.clone(),
                        last_line: line,
                        key_ids: [c.key_id].into(),
                    },
                );
            }
            Some(n) => {
                n.checkpoints += 1;
                n.key_ids.insert(c.key_id);
                if c.sequence_number < n.last_sequence {
                    fail(format!(
                        "the head went back: sequence {} after sequence {} on line {}",
                        c.sequence_number, n.last_sequence, n.last_line
                    ));
                    return;
                }
                if c.sequence_number == n.last_sequence && c.head_hash != n.last_head_hash {
                    fail(format!(
                        "headHash {} differs from {} on line {} for the same sequence",
                        c.head_hash, n.last_head_hash, n.last_line
                    ));
                    return;
                }
                n.last_sequence = c.sequence_number;
                n.last_head_hash = c.head_hash;
                n.last_line = line;
            }
        }
    }

    pub fn finish(mut self, other_lines: usize) -> LogReport {
        self.report.other_lines = other_lines;
        self.report.nodes = self.nodes.into_values().collect();
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::VerifyKey;
    use crate::crypto::token::HmacToken;

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

    fn hmac_keys(secret: &[u8]) -> (HmacToken, KeyRing) {
        let mut keys = KeyRing::new();
        keys.insert(
            5,
            VerifyKey::Hmac(Box::new(aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                secret,
            ))),
        );
        (HmacToken::new(5, secret), keys)
    }

    #[test]
    fn reads_json_lines_and_syslog_lines_and_rejects_a_broken_one() {
        let (token, _) = hmac_keys(b"k");
        let mut head = Head::default();
        head.push_leaf(0, &[1u8; 32]);
        let c = Checkpoint::sign(&token, "n1", &head, 1_700_000_000_000, KIND_CHECKPOINT).unwrap();
        let json = c.to_json_line();
        let text = format!(
            "{json}\n\n# note\n\
             2026-12-02T17:29:00.123456+00:00 host1 auditseal[42]: {SYSLOG_PREFIX}{json}\n\
             <85>1 2026-12-02T17:29:00.123Z host1 auditseal 42 checkpoint [origin software=\"auditseal\"] {SYSLOG_PREFIX}{json}  \n\
             Dec  2 17:29:00 host1 sshd[7]: Accepted publickey\n"
        );
        let mut got = Vec::new();
        let other = read_log(text.as_bytes(), |n, c| got.push((n, c))).unwrap();
        assert_eq!(other, 1);
        assert_eq!(
            got.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![1, 4, 5]
        );
        assert!(got.iter().all(|(_, g)| *g == c));
        let cut = format!("x: {SYSLOG_PREFIX}{}\n", &json[..json.len() - 3]);
        let e = read_log(format!("{json}\n{cut}").as_bytes(), |_, _| {}).unwrap_err();
        assert!(e.starts_with("line 2: "), "{e}");
    }

    #[test]
    fn a_log_check_wants_valid_statements_and_heads_that_only_grow() {
        let (token, keys) = hmac_keys(b"k");
        let sign = |node: &str, seq: i64, leaf: u8| {
            let mut head = Head::default();
            head.push_leaf(seq, &[leaf; 32]);
            Checkpoint::sign(&token, node, &head, 1, KIND_CHECKPOINT).unwrap()
        };
        let mut check = LogCheck::new(&keys);
        check.add(1, sign("a", 5, 1));
        check.add(2, sign("b", 9, 1));
        check.add(3, sign("a", 5, 1)); // the same again: fine
        check.add(4, sign("a", 7, 2));
        check.add(5, sign("a", 6, 3)); // went back
        check.add(6, sign("a", 7, 4)); // same sequence, other head
        let mut forged = sign("b", 10, 1);
        forged.sequence_number = 11;
        check.add(7, forged);
        let rep = check.finish(2);
        assert_eq!((rep.checkpoints, rep.other_lines), (7, 2));
        let errs: Vec<_> = rep
            .errors
            .iter()
            .map(|e| (e.line, e.reason.clone()))
            .collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].0 == 5 && errs[0].1.contains("went back"),
            "{errs:?}"
        );
        assert!(errs[1].0 == 6 && errs[1].1.contains("differs"), "{errs:?}");
        assert!(
            errs[2].0 == 7 && errs[2].1.contains("does not verify"),
            "{errs:?}"
        );
        let a = &rep.nodes[0];
        assert_eq!(
            (
                a.node_id.as_str(),
                a.first_sequence,
                a.last_sequence,
                a.last_line
            ),
            ("a", 5, 7, 4)
        );
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

/// The worked example of docs/FORMAT.md 7.1: the rows of section 6.5, both folds, and a
/// checkpoint of fold 2; the values are the document's.
#[cfg(test)]
mod worked_example {
    use super::*;
    use crate::crypto::token::HmacToken;

    const H2: [&str; 3] = [
        "fbca15158a96df0aaab1f1fb01268136bce213a91767f155e7b4c967e0015bf3",
        "c3b0f86405438a28ff38934d8ee0824b770faece77e2e312601e41570866f3f9",
        "da8b651e4d4ae6170da526ccf8995c9a7b01342a2ac9fbef3eee5368ef68984d",
    ];
    const H1_2: &str = "038f2a61d10051fd74c0244d3088a83c217f43d2e987afe3959d10aae7379828";
    const C: &str = "61756469747365616c2d636865636b706f696e742d7632000100000000000000056e6f646531010000000000000002010000019abae374600100000000000000406461386236353165346434616536313730646135323663636638393935633961376230313334326132616339666265663365656535333638656636383938346401000000000000000a636865636b706f696e74010000000000000001";
    const PROTECTION: &str =
        "2:1:1:1d404482345d49e9323b2f336903c29d0f11369d3f6611567979576f1c1d2331";

    #[test]
    fn folds_and_checkpoint_match_the_document() {
        let rows = crate::format::batch::worked_example::rows();
        let mut heads = Heads::from(Head::default());
        for (r, want) in rows.iter().zip(H2) {
            heads.push(r);
            assert_eq!(hex::encode(heads.canonical.hash), want);
        }
        assert_eq!(hex::encode(heads.text.hash), H1_2);
        let token = HmacToken::new(1, b"auditseal example key");
        let c = Checkpoint::sign(
            &token,
            "node1",
            &heads.canonical,
            1_764_072_060_000,
            KIND_CHECKPOINT,
        )
        .unwrap();
        assert_eq!(hex::encode(c.statement()), C);
        assert_eq!(c.statement_protection, PROTECTION);

        let doc = include_str!("../../../docs/FORMAT.md");
        let at = doc.find("### 7.1 The head hash").expect("section 7.1");
        let section = &doc[at..doc[at..].find("### 7.2").map_or(doc.len(), |e| at + e)];
        let flat: String = section.split_whitespace().collect::<Vec<_>>().join(" ");
        for v in H2.iter().chain(&[H1_2, C, PROTECTION]) {
            assert!(flat.contains(v), "{v} is not in section 7.1");
        }
        assert!(flat.contains(&format!("C ({} bytes)", C.len() / 2)));
    }
}
