//! What batch statements and checkpoints share: bytes signed by a node's key and stored beside
//! its rows, written from one list of fields in either layout, whose `statementProtection` names
//! the layout first (docs/FORMAT.md sections 6.2 and 7.2).

use crate::crypto::keys::{DetachedError, KeyRing, Scope};
use crate::format::canonical::Encoder;
use crate::format::protection::{Layout, RowProtection};
use crate::format::record::SEPARATOR;

/// One field of a statement: text, or an integer (written in decimal in layout 1).
pub enum Field<'a> {
    Text(&'a str),
    Int(i64),
}

/// Who signed a statement and for what: its protection, the keyid it names, and the node and
/// sequence number it speaks for (the key's policy must allow them).
pub struct Signer<'a> {
    pub protection: &'a str,
    pub key_id: i32,
    pub node: &'a str,
    pub seq: i64,
}

/// A batch statement or a checkpoint.
pub trait SignedStatement {
    /// The first field of layout 1 and the tag of layout 2.
    fn tags(&self) -> (&'static str, &'static str);
    /// The signed fields after the tag, in order.
    fn fields(&self) -> Vec<Field<'_>>;
    fn signer(&self) -> Signer<'_>;

    /// The signed bytes in `layout`: the tag and the fields joined with `<sep/>` (layout 1), or
    /// their canonical encoding (layout 2).
    fn statement_in(&self, layout: Layout) -> Vec<u8> {
        let (text_tag, canonical_tag) = self.tags();
        let fields = self.fields();
        match layout {
            Layout::Text => {
                let mut parts = vec![text_tag.to_string()];
                parts.extend(fields.iter().map(|f| match f {
                    Field::Text(s) => s.to_string(),
                    Field::Int(i) => i.to_string(),
                }));
                parts.join(SEPARATOR).into_bytes()
            }
            Layout::Canonical => fields
                .iter()
                .fold(Encoder::new(canonical_tag, 200), |e, f| match f {
                    Field::Text(s) => e.text(Some(s)),
                    Field::Int(i) => e.int(Some(*i)),
                })
                .finish(),
        }
    }

    /// The signed bytes, in the layout its protection names.
    fn statement(&self) -> Vec<u8> {
        self.statement_in(Layout::of_statement(self.signer().protection))
    }

    /// Whether the MAC or signature verifies with the key its keyid names, a key that may
    /// protect the statement's node there.
    fn verify_protection(&self, keys: &KeyRing) -> Result<(), StatementFailure> {
        let s = self.signer();
        let (layout, p) = RowProtection::parse_statement(s.protection)
            .map_err(|e| StatementFailure::Unreadable(e.to_string()))?;
        if p.keyid != s.key_id {
            return Err(StatementFailure::Unreadable(format!(
                "protected with keyid {} but names keyid {}",
                p.keyid, s.key_id
            )));
        }
        let scope = Scope::Node {
            node: s.node,
            seq: s.seq,
        };
        keys.verify_detached(&p, scope, &self.statement_in(layout))
            .map_err(StatementFailure::Signature)
    }
}

/// Why a statement's protection does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementFailure {
    /// The protection does not parse, or names another keyid than the statement.
    #[error("{0}")]
    Unreadable(String),
    /// The MAC or signature does not verify with that key, or the key may not protect it.
    #[error("{0}")]
    Signature(DetachedError),
}
