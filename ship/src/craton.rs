//! Craton HSM's audit log (docs/HSM-LOGS.md "Craton"): JSON Lines, each entry's
//! `previous_hash` the SHA-256 of the previous entry's canonical form, checked as Craton's
//! reference verifier does: the entry without `previous_hash`, keys sorted, `,` and `:` as
//! separators, non-ASCII escaped as `\uXXXX` (Python's `json.dumps(sort_keys=True,
//! separators=(",", ":"))`); the first entry's is 64 zeros. A break is a finding of its own,
//! with the line and both hashes, and the chain goes on from the entry that broke it.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Parser;
use crate::record::{Record, Status};

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug)]
pub struct Craton {
    /// The hash the next entry's previous_hash must be.
    expected: String,
}

impl Default for Craton {
    fn default() -> Craton {
        Craton {
            expected: ZERO.to_string(),
        }
    }
}

impl Craton {
    pub fn new() -> Craton {
        Craton::default()
    }
}

/// Python's json.dumps(v, sort_keys=True, separators=(",", ":")) with ensure_ascii.
pub fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                        let mut units = [0u16; 2];
                        for u in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{u:04x}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(&Value::String(k.clone()), out);
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
    }
}

/// The hash the entry after `entry` must carry.
pub fn entry_hash(entry: &Value) -> String {
    let mut body = entry.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("previous_hash");
    }
    let mut text = String::new();
    canonical(&body, &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl Parser for Craton {
    fn module(&self) -> &'static str {
        "CRATON"
    }

    fn line(&mut self, line: &str, offset: u64, next: u64, lineno: u64, out: &mut Vec<Record>) {
        if line.trim().is_empty() {
            return;
        }
        let entry: Value = match serde_json::from_str(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                // Not an entry: the chain cannot be checked past it; say so once, here.
                let mut r = Record::new("HSM_UNREADABLE_ENTRY", offset, lineno);
                r.end = next;
                r.end_line = lineno + 1;
                r.status = Status::Failure;
                r.carry = Some(self.expected.clone());
                out.push(r);
                return;
            }
        };
        let previous = entry["previous_hash"].as_str().unwrap_or("").to_string();
        if previous != self.expected {
            let mut f = Record::new("HSM_CHAIN_BREAK", offset, lineno);
            f.sub = 1;
            f.end_line = lineno;
            f.status = Status::Failure;
            f.details.insert("line".into(), json!(lineno));
            f.details.insert("previousHash".into(), json!(previous));
            f.details
                .insert("computedHash".into(), json!(self.expected));
            f.carry = Some(self.expected.clone());
            out.push(f);
        }
        self.expected = entry_hash(&entry);
        let op = entry["operation"].as_str().unwrap_or("UNKNOWN");
        let mut r = Record::new(op, offset, lineno);
        r.end = next;
        r.end_line = lineno + 1;
        match &entry["result"] {
            Value::Object(m) if m.contains_key("Success") => r.status = Status::Success,
            Value::Object(m) => {
                r.status = Status::Failure;
                r.rv = m.get("Failure").and_then(scalar);
            }
            _ => {}
        }
        if r.status == Status::Success {
            r.rv = Some("CKR_OK".into());
        }
        r.time = scalar(&entry["timestamp"]);
        r.session = scalar(&entry["session_handle"]);
        r.key = scalar(&entry["key_id"]);
        r.counter = Some(previous);
        r.carry = Some(self.expected.clone());
        out.push(r);
    }

    fn resume(&mut self, carry: Option<&str>) {
        self.expected = carry.unwrap_or(ZERO).to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, parse_all};

    /// A log written as Craton writes it: each entry chained to the one before.
    fn chained(entries: &[Value]) -> String {
        let mut prev = ZERO.to_string();
        let mut text = String::new();
        for e in entries {
            let mut e = e.clone();
            e["previous_hash"] = json!(prev);
            prev = entry_hash(&e);
            text += &serde_json::to_string(&e).unwrap();
            text.push('\n');
        }
        text
    }

    fn entries() -> Vec<Value> {
        vec![
            json!({"timestamp": 1767000000, "session_handle": 1, "operation": "Login", "key_id": null, "result": {"Success": null}}),
            json!({"timestamp": 1767000001, "session_handle": 1, "operation": "GenerateKey", "key_id": 7, "result": {"Success": null}}),
            json!({"timestamp": 1767000002, "session_handle": 1, "operation": "Sign", "key_id": 7, "result": {"Failure": "CKR_KEY_HANDLE_INVALID"}}),
            json!({"timestamp": 1767000003, "session_handle": 2, "operation": "Login", "key_id": null, "result": {"Failure": "CKR_PIN_INCORRECT"}}),
        ]
    }

    #[test]
    fn canonical_form_is_pythons() {
        let mut s = String::new();
        canonical(
            &json!({"b": 1, "a": {"z": null, "y": "é\n\"x\""}, "c": [true, 1.5]}),
            &mut s,
        );
        assert_eq!(
            s,
            r#"{"a":{"y":"\u00e9\n\"x\"","z":null},"b":1,"c":[true,1.5]}"#
        );
        // Computed with the seed's verifier's json.dumps in Python 3 (non-BMP: a surrogate pair).
        assert_eq!(
            entry_hash(
                &json!({"timestamp": 1767000000, "session_handle": 1, "operation": "Login",
                "key_id": null, "result": {"Success": null}, "note": "é€😀"})
            ),
            "852f5f7b75d4ccde09743c9e02b8041538e7a0c22a7020d30daa3b368b9d84c9"
        );
        // The first link of the chain, as the seed's Python verifier computes it:
        // hashlib.sha256(json.dumps({"operation":"Login","result":{"Success":None}},
        //   sort_keys=True, separators=(",",":")).encode()).hexdigest()
        assert_eq!(
            entry_hash(
                &json!({"operation": "Login", "result": {"Success": null}, "previous_hash": "x"})
            ),
            hex::encode(Sha256::digest(
                br#"{"operation":"Login","result":{"Success":null}}"#
            ))
        );
    }

    #[test]
    fn an_intact_chain_gives_one_event_per_entry() {
        let log = chained(&entries());
        let r = parse_all(log.as_bytes(), Format::Craton);
        let ops: Vec<&str> = r.iter().map(|r| r.op.as_str()).collect();
        assert_eq!(ops, ["Login", "GenerateKey", "Sign", "Login"]);
        assert_eq!(r[1].key.as_deref(), Some("7"));
        assert_eq!(r[2].status, Status::Failure);
        assert_eq!(r[2].rv.as_deref(), Some("CKR_KEY_HANDLE_INVALID"));
        assert_eq!(r[3].rv.as_deref(), Some("CKR_PIN_INCORRECT"));
        assert_eq!(r[0].counter.as_deref(), Some(ZERO));
    }

    #[test]
    fn a_changed_entry_is_a_break_with_line_and_both_hashes() {
        let log = chained(&entries());
        // Someone turns the failed sign into a success after the fact.
        let tampered = log.replacen(
            r#"{"Failure":"CKR_KEY_HANDLE_INVALID"}"#,
            r#"{"Success":null}"#,
            1,
        );
        assert_ne!(tampered, log);
        let r = parse_all(tampered.as_bytes(), Format::Craton);
        let breaks: Vec<&Record> = r.iter().filter(|r| r.op == "HSM_CHAIN_BREAK").collect();
        assert_eq!(breaks.len(), 1, "{r:?}");
        let b = breaks[0];
        // The entry after the changed one no longer links to it.
        assert_eq!(b.details["line"], 4);
        let line4: Value = serde_json::from_str(tampered.lines().nth(3).unwrap()).unwrap();
        assert_eq!(b.details["previousHash"], line4["previous_hash"]);
        let line3: Value = serde_json::from_str(tampered.lines().nth(2).unwrap()).unwrap();
        assert_eq!(b.details["computedHash"], json!(entry_hash(&line3)));
        assert_ne!(b.details["previousHash"], b.details["computedHash"]);
        // A removed entry breaks the chain too.
        let mut lines: Vec<&str> = log.lines().collect();
        lines.remove(1);
        let cut = lines.join("\n") + "\n";
        let r = parse_all(cut.as_bytes(), Format::Craton);
        assert_eq!(r.iter().filter(|r| r.op == "HSM_CHAIN_BREAK").count(), 1);
    }
}
