//! rust-hsm's observe-core structured log (docs/HSM-LOGS.md "rust-hsm"): one JSON object a
//! line with `ts`, `func`, `rv`, `rv_name`, `dur_ms`, `session`, `op_id` and per-call fields.
//! Fields whose names speak of a PIN, a secret or a value are not copied.

use serde_json::{Value, json};

use crate::Parser;
use crate::record::{Record, Status};

/// Fields mapped onto the event itself, not copied into the details again.
const MAPPED: &[&str] = &["ts", "func", "rv", "rv_name", "dur_ms", "session"];

fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["pin", "secret", "password", "value", "private_exponent"]
        .iter()
        .any(|w| n.contains(w))
}

/// `v` without the members whose names are secret, at any depth.
fn redact(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    if secret_name(k) {
                        (k.clone(), json!("[redacted]"))
                    } else {
                        (k.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        other => other.clone(),
    }
}

#[derive(Debug, Default)]
pub struct RustHsm;

impl Parser for RustHsm {
    fn module(&self) -> &'static str {
        "RUST_HSM"
    }

    fn line(&mut self, line: &str, offset: u64, next: u64, lineno: u64, out: &mut Vec<Record>) {
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let Some(func) = m.get("func").and_then(Value::as_str) else {
            return;
        };
        let mut r = Record::new(func, offset, lineno);
        r.end = next;
        r.end_line = lineno + 1;
        let rv = m.get("rv").and_then(Value::as_u64);
        r.status = match rv {
            Some(0) => Status::Success,
            Some(_) => Status::Failure,
            None => Status::Void,
        };
        r.rv = m
            .get("rv_name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(rv.map(|v| format!("0x{v:x}")));
        r.time = m.get("ts").and_then(Value::as_str).map(str::to_string);
        r.duration_ms = m.get("dur_ms").and_then(Value::as_f64);
        r.session = m
            .get("session")
            .map(|s| s.to_string().trim_matches('"').to_string());
        r.counter = m.get("op_id").and_then(Value::as_str).map(str::to_string);
        r.key = [
            "private_key_handle",
            "key_handle",
            "key_label",
            "public_key_handle",
        ]
        .iter()
        .find_map(|k| m.get(*k))
        .map(|v| v.to_string().trim_matches('"').to_string());
        for (k, v) in &m {
            if !MAPPED.contains(&k.as_str()) {
                let v = if secret_name(k) {
                    json!("[redacted]")
                } else {
                    redact(v)
                };
                r.details.insert(k.clone(), v);
            }
        }
        out.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, parse_all};

    #[test]
    fn seed_lines_and_redaction() {
        let log = r#"{"ts":"2026-01-06T10:30:45.387Z","pid":1234,"tid":5678,"module":"rust-hsm-cli","func":"C_Login","rv":0,"rv_name":"CKR_OK","dur_ms":12.4,"session":6,"user_type":"User","op_id":"session_001","user_pin":"123456"}
{"ts":"2026-01-06T10:30:45.756Z","pid":1234,"tid":5678,"module":"rust-hsm-cli","func":"C_GenerateKeyPair","rv":0,"rv_name":"CKR_OK","dur_ms":368.9,"session":6,"mech":"CKM_RSA_PKCS_KEY_PAIR_GEN","template_summary":{"public":{"CKA_CLASS":"CKO_PUBLIC_KEY","CKA_MODULUS_BITS":2048},"private":{"CKA_SIGN":true,"CKA_VALUE":"00ff"}},"public_key_handle":4,"private_key_handle":3,"op_id":"keygen_001"}
{"ts":"2026-01-06T10:30:46.000Z","func":"C_Login","rv":160,"rv_name":"CKR_PIN_INCORRECT","dur_ms":2.0,"session":7}
"#;
        let r = parse_all(log.as_bytes(), Format::RustHsm);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].op, "C_Login");
        assert_eq!(r[0].duration_ms, Some(12.4));
        assert_eq!(r[0].session.as_deref(), Some("6"));
        assert_eq!(r[0].counter.as_deref(), Some("session_001"));
        assert_eq!(r[0].details["user_pin"], "[redacted]");
        assert_eq!(r[1].key.as_deref(), Some("3"));
        assert_eq!(
            r[1].details["template_summary"]["private"]["CKA_VALUE"],
            "[redacted]"
        );
        assert_eq!(
            r[1].details["template_summary"]["public"]["CKA_MODULUS_BITS"],
            2048
        );
        assert_eq!(r[2].status, Status::Failure);
        assert_eq!(r[2].rv.as_deref(), Some("CKR_PIN_INCORRECT"));
        let all = format!("{r:?}");
        assert!(!all.contains("123456") && !all.contains("00ff"), "{all}");
    }
}
