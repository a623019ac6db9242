//! OpenSC pkcs11-spy's plaintext call log (docs/HSM-LOGS.md "pkcs11-spy"), in both forms:
//!
//! - what pkcs11-spy.so writes today: a banner per process, then per call `N: C_Name`, a time
//!   stamp, one `[in] name = value` / `[out] name = value` line per argument (buffers as hex
//!   dumps, templates as one `CKA_X value` line per attribute) and `Returned:  rv CKR_NAME`;
//! - the older form of the seed's example: `N: C_Name(arg, arg, {Attributes: ...},` with the
//!   arguments inline, over several lines.
//!
//! Only what is listed here is copied into a record, so PINs, data, signatures and secret
//! attribute values never leave: a PIN argument becomes `[redacted]`, a buffer its length.

use serde_json::{Value, json};

use crate::Parser;
use crate::record::{Record, Status};

/// Attributes whose values are secret whatever form the spy prints them in.
const SECRET_ATTRIBUTES: &[&str] = &[
    "CKA_VALUE",
    "CKA_PRIVATE_EXPONENT",
    "CKA_PRIME_1",
    "CKA_PRIME_2",
    "CKA_EXPONENT_1",
    "CKA_EXPONENT_2",
    "CKA_COEFFICIENT",
    "CKA_OTP_PIN",
];

/// Functions whose PIN arguments are redacted in the inline form, by position (from 0).
fn pin_positions(function: &str) -> &'static [usize] {
    match function {
        "C_Login" => &[2],
        "C_InitToken" | "C_InitPIN" => &[1],
        "C_SetPIN" => &[1, 3],
        _ => &[],
    }
}

/// Functions whose first argument is not a session handle.
fn sessionless(function: &str) -> bool {
    matches!(
        function,
        "C_Initialize"
            | "C_Finalize"
            | "C_GetInfo"
            | "C_GetFunctionList"
            | "C_GetInterface"
            | "C_GetInterfaceList"
            | "C_GetSlotList"
            | "C_GetSlotInfo"
            | "C_GetTokenInfo"
            | "C_GetMechanismList"
            | "C_GetMechanismInfo"
            | "C_InitToken"
            | "C_OpenSession"
            | "C_CloseAllSessions"
            | "C_WaitForSlotEvent"
    )
}

fn is_pin_name(name: &str) -> bool {
    name.to_ascii_lowercase().contains("pin")
}

fn is_secret_attribute(name: &str) -> bool {
    SECRET_ATTRIBUTES.contains(&name)
}

/// What the hex dump lines that follow an argument or attribute are for.
#[derive(Debug)]
enum Dump {
    /// Ignored (data, signatures, PINs: only the length was kept).
    Skip,
    /// Kept as text: a token or object label.
    Text(String),
    /// Kept as hex: CKA_ID.
    Hex(String),
}

#[derive(Debug, Default)]
pub struct Spy {
    current: Option<Record>,
    /// The argument name of the template being listed (`in.pTemplate`).
    template: Option<String>,
    dump: Option<(Dump, Vec<u8>)>,
    /// The inline form: the arguments so far, while the parenthesis is open.
    inline: Option<String>,
    next_new_run: bool,
    /// The last record's end, where the next one may start.
    last_end: u64,
}

impl Spy {
    pub fn new() -> Spy {
        Spy::default()
    }

    fn close(&mut self, out: &mut Vec<Record>) {
        self.flush_dump();
        self.template = None;
        if let Some(args) = self.inline.take()
            && let Some(r) = self.current.as_mut()
        {
            inline_args(r, &args);
        }
        if let Some(r) = self.current.take() {
            self.last_end = r.end;
            out.push(r);
        }
    }

    fn flush_dump(&mut self) {
        let Some((dump, bytes)) = self.dump.take() else {
            return;
        };
        let Some(r) = self.current.as_mut() else {
            return;
        };
        match dump {
            Dump::Skip => {}
            Dump::Text(name) => {
                let text = String::from_utf8_lossy(&bytes)
                    .trim_end_matches([' ', '\0'])
                    .to_string();
                if text.is_empty() {
                    return;
                }
                if name.ends_with("CKA_LABEL") {
                    r.key = Some(text.clone());
                }
                r.details.insert(name, json!(text));
            }
            Dump::Hex(name) => {
                r.details.insert(name, json!(hex::encode(&bytes)));
            }
        }
    }

    fn header(&mut self, line: &str, offset: u64, lineno: u64, out: &mut Vec<Record>) -> bool {
        let Some((number, rest)) = line.split_once(": ") else {
            return false;
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let function = &rest[..name_end];
        if !function.starts_with("C_") {
            return false;
        }
        // A call that never returned (the process died): it ends where the next one starts.
        self.close(out);
        let mut r = Record::new(function, offset, lineno);
        r.counter = Some(number.to_string());
        r.new_run = std::mem::take(&mut self.next_new_run);
        let after = rest[name_end..].trim_end();
        if let Some(args) = after.strip_prefix('(') {
            self.inline = Some(args.to_string());
        }
        self.current = Some(r);
        true
    }

    fn argument(&mut self, line: &str) {
        let (direction, rest) = if let Some(rest) = line.strip_prefix("[in] ") {
            ("in", rest)
        } else if let Some(rest) = line.strip_prefix("[out] ") {
            ("out", rest)
        } else {
            return;
        };
        let Some(r) = self.current.as_mut() else {
            return;
        };
        // `[in] pTemplate[1]: ` opens a template.
        if let Some(name) = rest.trim_end().strip_suffix(':') {
            let name = name.split('[').next().unwrap_or(name);
            self.template = Some(format!("{direction}.{name}"));
            return;
        }
        self.template = None;
        if let Some((name, value)) = rest.split_once(" = ") {
            let name = name.trim();
            // A value ends at a run of spaces (the spy pads names of constants).
            let value = value.split("  ").next().unwrap_or("").trim();
            let value = if is_pin_name(name) {
                "[redacted]"
            } else {
                value
            };
            let key = format!("{direction}.{name}");
            match name.trim_start_matches('*') {
                "hSession" | "phSession" => r.session = Some(value.to_string()),
                "hKey" | "hObject" | "hBaseKey" | "hWrappingKey" | "hUnwrappingKey" | "phKey"
                | "hPublicKey" | "hPrivateKey" => {
                    r.key.get_or_insert_with(|| value.to_string());
                }
                _ => {}
            }
            r.details.insert(key, json!(truncate(value)));
            return;
        }
        // `[in] pPin[ulPinLen] 00007ffd92f2ca59 / 8`: a buffer, its hex dump follows.
        let name = rest.split([' ', '[']).next().unwrap_or("");
        let len = rest
            .rsplit_once(" / ")
            .map(|(_, n)| n.trim())
            .unwrap_or("?");
        let key = format!("{direction}.{name}");
        if is_pin_name(name) {
            r.details.insert(key, json!("[redacted]"));
            self.dump = Some((Dump::Skip, Vec::new()));
        } else if name == "pLabel" {
            self.dump = Some((Dump::Text(key), Vec::new()));
        } else {
            r.details.insert(key, json!(format!("[{len} bytes]")));
            self.dump = Some((Dump::Skip, Vec::new()));
        }
    }

    fn attribute(&mut self, line: &str) -> bool {
        let Some(template) = self.template.clone() else {
            return false;
        };
        let trimmed = line.trim();
        let Some(name) = trimmed.split_whitespace().next() else {
            return false;
        };
        if !name.starts_with("CKA_") || !line.starts_with("    ") {
            return false;
        }
        self.flush_dump();
        let Some(r) = self.current.as_mut() else {
            return true;
        };
        let value = trimmed[name.len()..].trim();
        let key = format!("{template}.{name}");
        let is_buffer = value.contains(" / ");
        if is_secret_attribute(name) {
            r.details.insert(key, json!("[redacted]"));
            self.dump = Some((Dump::Skip, Vec::new()));
        } else if is_buffer {
            match name {
                "CKA_LABEL" => self.dump = Some((Dump::Text(key), Vec::new())),
                "CKA_ID" => self.dump = Some((Dump::Hex(key), Vec::new())),
                _ => {
                    let len = value.rsplit_once(" / ").map(|(_, n)| n).unwrap_or("?");
                    r.details.insert(key, json!(format!("[{len} bytes]")));
                    self.dump = Some((Dump::Skip, Vec::new()));
                }
            }
        } else {
            r.details.insert(key, json!(truncate(value)));
        }
        true
    }

    /// A hex dump line: `    00000000  38 37 36  ascii`, or the short form `    6B31`.
    fn dump_line(&mut self, line: &str) -> bool {
        let Some((_, bytes)) = self.dump.as_mut() else {
            return false;
        };
        let t = line.trim();
        let mut words = t.split_whitespace();
        let Some(first) = words.next() else {
            return false;
        };
        let hexword =
            |w: &str| w.len().is_multiple_of(2) && w.bytes().all(|b| b.is_ascii_hexdigit());
        if first.len() == 8 && hexword(first) && t.get(8..10) == Some("  ") {
            // Up to 16 two-digit bytes after the offset; the ASCII column follows.
            for w in words.take(16) {
                if w.len() != 2 || !hexword(w) {
                    break;
                }
                bytes.extend(hex::decode(w).unwrap_or_default());
            }
            return true;
        }
        // The short form: groups of up to four bytes (`73686970 6B6579`).
        if t.split(' ')
            .all(|w| w.len() <= 8 && !w.is_empty() && hexword(w))
        {
            for w in t.split(' ') {
                bytes.extend(hex::decode(w).unwrap_or_default());
            }
            return true;
        }
        // The short form's character line (` k 1`) and anything else inside the dump.
        line.starts_with("    ")
    }
}

fn truncate(value: &str) -> String {
    value.chars().take(128).collect()
}

/// The inline form's arguments: PINs at their positions and secret attributes redacted.
fn inline_args(r: &mut Record, args: &str) {
    let args = args.trim_end().strip_suffix(')').unwrap_or(args.trim_end());
    let parts = split_top_level(args);
    let pins = pin_positions(&r.op);
    let mut list = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let part = part.trim();
        if pins.contains(&i) {
            list.push(json!("[redacted]"));
        } else if let Some(inner) = part.strip_prefix('{') {
            list.push(json!(redact_attributes(inner.trim_end_matches('}'))));
        } else {
            list.push(json!(truncate(part)));
        }
    }
    if !sessionless(&r.op)
        && let Some(first) = parts.first()
    {
        r.session.get_or_insert_with(|| first.trim().to_string());
    }
    if r.op.ends_with("Init")
        && parts.len() == 3
        && let Some(key) = parts.get(2)
    {
        r.key.get_or_insert_with(|| key.trim().to_string());
    }
    r.details.insert("args".into(), Value::Array(list));
}

fn redact_attributes(text: &str) -> String {
    let text = text.trim().trim_start_matches("Attributes:").trim();
    text.split(';')
        .map(|a| {
            let a = a.trim();
            match a.split_once('=') {
                Some((name, _)) if is_secret_attribute(name.trim()) => {
                    format!("{} = [redacted]", name.trim())
                }
                _ => truncate(a),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Splits on commas outside braces and parentheses.
fn split_top_level(s: &str) -> Vec<String> {
    let (mut parts, mut cur, mut depth) = (Vec::new(), String::new(), 0i32);
    for c in s.chars() {
        match c {
            '{' | '(' => depth += 1,
            '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        parts.push(cur);
    }
    parts
}

fn is_time(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() >= 19 && b[4] == b'-' && b[7] == b'-' && b[10] == b' ' && b[13] == b':'
}

impl Parser for Spy {
    fn module(&self) -> &'static str {
        "PKCS11_SPY"
    }

    fn line(&mut self, line: &str, offset: u64, next: u64, lineno: u64, out: &mut Vec<Record>) {
        if line.starts_with("*************** OpenSC PKCS#11 spy") {
            self.close(out);
            self.next_new_run = true;
            return;
        }
        if self.header(line, offset, lineno, out) {
            if let Some(r) = self.current.as_mut() {
                r.end = next;
                r.end_line = lineno + 1;
            }
            return;
        }
        let Some(r) = self.current.as_mut() else {
            return;
        };
        r.end = next;
        r.end_line = lineno + 1;
        if let Some(rest) = line.strip_prefix("Returned:") {
            let mut words = rest.split_whitespace();
            let code = words.next().unwrap_or("");
            let name = words.next().unwrap_or(code).to_string();
            r.status = if code == "0" {
                Status::Success
            } else {
                Status::Failure
            };
            r.rv = Some(name);
            self.close(out);
            return;
        }
        if let Some(args) = self.inline.as_mut() {
            // The inline form: argument lines until the parenthesis closes.
            if args.matches('(').count() + 1 > args.matches(')').count() {
                args.push(' ');
                args.push_str(line.trim());
                return;
            }
        }
        if r.time.is_none() && is_time(line) {
            r.time = Some(line.trim().to_string());
            return;
        }
        if let Some(v) = line.strip_prefix("Session: ") {
            r.session = Some(v.trim().to_string());
            return;
        }
        for prefix in ["Public Key: ", "Private Key: "] {
            if let Some(v) = line.strip_prefix(prefix) {
                r.key.get_or_insert_with(|| v.trim().to_string());
                return;
            }
        }
        if line.starts_with('[') {
            self.flush_dump();
            self.argument(line);
            return;
        }
        if self.attribute(line) || self.dump_line(line) {
            return;
        }
        // Anything else (pInfo listings, slot lists) is not copied.
        self.flush_dump();
        self.template = None;
    }

    fn finish(&mut self, out: &mut Vec<Record>) {
        self.close(out);
    }
}

#[cfg(test)]
mod tests;
