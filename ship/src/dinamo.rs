//! Dinamo HSM's native event log (docs/HSM-LOGS.md "Dinamo"): one event a line,
//! `yyyy/mm/dd HH:MM:SS tttttttt cccccccc iiiiiiii text|client server user` (thread, counter
//! and correlation id in hex; the console writes a space for the `|`). The counter restarts
//! at each HSM start; a jump is a gap. Both become findings of their own.

use serde_json::json;

use crate::Parser;
use crate::record::{Record, Status};

/// Dinamo's algorithm types (`t:`), from its manual.
fn algorithm(t: u32) -> Option<&'static str> {
    Some(match t {
        0 => "INVALID_OBJ_TYPE",
        1 => "ALG_DES",
        2 => "ALG_3DES_112",
        3 => "ALG_3DES_168",
        4 => "ALG_RSA_512",
        5 => "ALG_RSA_1024",
        6 => "ALG_RSA_2048",
        7 => "ALG_AES_128",
        8 => "ALG_AES_192",
        9 => "ALG_AES_256",
        10 => "ALG_ARC4",
        11 => "ALG_RSA_4096",
        12 => "ALG_OBJ_BLOB",
        13 => "ALG_OBJ_BLOB_X509",
        14 => "ALG_OBJ_BLOB_PKCS7",
        15 => "ALG_OBJ_BLOB_CRL",
        16 => "ALG_OBJ_BLOB_HOTP",
        18 => "ALG_ECC_SECP112R1",
        19 => "ALG_ECC_SECP112R2",
        20 => "ALG_ECC_SECP128R1",
        21 => "ALG_ECC_SECP128R2",
        22 => "ALG_ECC_SECP160K1",
        23 => "ALG_ECC_SECP160R1",
        24 => "ALG_ECC_SECP160R2",
        25 => "ALG_ECC_SECP192K1",
        26 => "ALG_ECC_SECP192R1",
        27 => "ALG_ECC_SECP224K1",
        28 => "ALG_ECC_SECP224R1",
        29 => "ALG_ECC_SECP256K1",
        30 => "ALG_ECC_SECP256R1",
        31 => "ALG_ECC_SECP384R1",
        32 => "ALG_ECC_SECP521R1",
        33 => "ALG_ECC_X9_62_PRIME192V2",
        34 => "ALG_ECC_X9_62_PRIME192V3",
        35 => "ALG_ECC_X9_62_PRIME239V1",
        36 => "ALG_ECC_X9_62_PRIME239V2",
        37 => "ALG_ECC_X9_62_PRIME239V3",
        38 => "ALG_ECC_BRAINPOOL_P160R1",
        39 => "ALG_ECC_BRAINPOOL_P160T1",
        40 => "ALG_ECC_BRAINPOOL_P192R1",
        41 => "ALG_ECC_BRAINPOOL_P192T1",
        42 => "ALG_ECC_BRAINPOOL_P224R1",
        43 => "ALG_ECC_BRAINPOOL_P224T1",
        44 => "ALG_ECC_BRAINPOOL_P256R1",
        45 => "ALG_ECC_BRAINPOOL_P256T1",
        46 => "ALG_ECC_BRAINPOOL_P320R1",
        47 => "ALG_ECC_BRAINPOOL_P320T1",
        48 => "ALG_ECC_BRAINPOOL_P384R1",
        49 => "ALG_ECC_BRAINPOOL_P384T1",
        50 => "ALG_ECC_BRAINPOOL_P512R1",
        51 => "ALG_ECC_BRAINPOOL_P512T1",
        90 => "ALG_MAP_2_OBJ",
        91 => "ALG_DESX",
        92 => "ALG_HMAC_MD5",
        93 => "ALG_HMAC_SHA1",
        94 => "ALG_HMAC_SHA2_256",
        95 => "ALG_HMAC_SHA2_384",
        96 => "ALG_HMAC_SHA2_512",
        121 => "ALG_RSA_1152",
        122 => "ALG_RSA_1408",
        123 => "ALG_RSA_1984",
        124 => "ALG_RSA_8192",
        125 => "ALG_EXT_MAP_2_OBJ",
        126 => "ALG_RSA_2304",
        127 => "ALG_RSA_2560",
        128 => "ALG_RSA_2816",
        129 => "ALG_RSA_3072",
        250 => "ALG_CMAC_AES",
        251 => "ALG_CMAC_DES",
        _ => return None,
    })
}

/// The event type from the event text's words.
fn event_type(text: &str) -> &'static str {
    const TYPES: &[(&str, &str)] = &[
        ("auth try", "DINAMO_AUTH_TRY"),
        ("auth init", "DINAMO_AUTH_INIT"),
        ("auth ok", "DINAMO_AUTH_OK"),
        ("auth fail", "DINAMO_AUTH_FAIL"),
        ("log truncated", "DINAMO_LOG_CLEAR"),
        ("truncated log", "DINAMO_LOG_CLEAR"),
        ("new key", "DINAMO_KEY_CREATE"),
        ("key ", "DINAMO_KEY"),
        ("probe", "DINAMO_PROBE"),
        ("session thread", "DINAMO_SESSION_THREAD"),
        ("rsa ", "DINAMO_RSA"),
    ];
    TYPES
        .iter()
        .find(|(w, _)| text.contains(w))
        .map(|(_, t)| *t)
        .unwrap_or("DINAMO_EVENT")
}

fn failed(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    ["fail", "error", "denied", "invalid"]
        .iter()
        .any(|w| t.contains(w))
}

#[derive(Debug, Default)]
pub struct Dinamo {
    /// The counter of the previous line.
    last: Option<u64>,
}

impl Dinamo {
    pub fn new() -> Dinamo {
        Dinamo::default()
    }
}

/// The header's five fields and the rest, if `line` is a Dinamo log line.
fn split(line: &str) -> Option<([&str; 5], std::borrow::Cow<'_, str>)> {
    let mut it = line.splitn(6, ' ');
    let f: [&str; 5] = [it.next()?, it.next()?, it.next()?, it.next()?, it.next()?];
    let hex8 = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let date = f[0].len() == 10 && f[0].as_bytes()[4] == b'/' && f[0].as_bytes()[7] == b'/';
    let time = f[1].len() == 8 && f[1].as_bytes()[2] == b':';
    // The manual's form runs the cid into the text with a `|`; the console's has a space.
    let (cid, glued) = f[4].split_once('|').unwrap_or((f[4], ""));
    if !(date && time && hex8(f[2]) && hex8(f[3]) && hex8(cid)) {
        return None;
    }
    let tail = it.next();
    let rest = match (glued.is_empty(), tail) {
        (true, t) => std::borrow::Cow::Borrowed(t.unwrap_or("")),
        (false, Some(t)) => std::borrow::Cow::Owned(format!("{glued} {t}")),
        (false, None) => std::borrow::Cow::Borrowed(glued),
    };
    Some(([f[0], f[1], f[2], f[3], cid], rest))
}

impl Dinamo {
    /// A counter that went back (the HSM restarted) or jumped (lines missing) since the
    /// previous line: a finding record of its own.
    fn counter_finding(&self, n: u64, offset: u64, lineno: u64, time: &str) -> Option<Record> {
        let last = self.last?;
        let (op, status) = if n <= last {
            ("HSM_COUNTER_RESET", Status::Void)
        } else if n > last + 1 {
            ("HSM_COUNTER_GAP", Status::Failure)
        } else {
            return None;
        };
        let mut f = Record::new(op, offset, lineno);
        f.sub = 1;
        // Ends where the line starts: a restart there finds it again.
        f.end_line = lineno;
        f.status = status;
        f.time = Some(time.to_string());
        f.counter = Some(format!("{n}"));
        f.details.insert("previousCounter".into(), json!(last));
        f.details.insert("counter".into(), json!(n));
        if op == "HSM_COUNTER_GAP" {
            f.details.insert("missing".into(), json!(n - last - 1));
        }
        f.carry = Some(last.to_string());
        Some(f)
    }
}

impl Parser for Dinamo {
    fn module(&self) -> &'static str {
        "DINAMO"
    }

    fn line(&mut self, line: &str, offset: u64, next: u64, lineno: u64, out: &mut Vec<Record>) {
        let Some(([date, time, thread, counter, cid], rest)) = split(line) else {
            return;
        };
        let Ok(n) = u64::from_str_radix(counter, 16) else {
            return;
        };
        if let Some(f) = self.counter_finding(n, offset, lineno, &format!("{date} {time}")) {
            out.push(f);
        }
        self.last = Some(n);
        // The event text, then after `|` where it came from: client, server, user.
        let (text, context) = match rest.split_once('|') {
            Some((t, c)) => (t.trim(), Some(c.trim())),
            None => (rest.trim(), None),
        };
        let mut r = Record::new(event_type(text), offset, lineno);
        r.end = next;
        r.end_line = lineno + 1;
        r.status = if failed(text) {
            Status::Failure
        } else {
            Status::Success
        };
        r.time = Some(format!("{date} {time}"));
        r.session = Some(cid.to_string());
        r.counter = Some(n.to_string());
        r.carry = Some(n.to_string());
        r.details.insert("thread".into(), json!(thread));
        r.details.insert("text".into(), json!(truncate(text)));
        if let Some(c) = context {
            let mut parts = c.split_whitespace();
            for name in ["client", "server", "user"] {
                if let Some(v) = parts.next() {
                    r.details.insert(name.into(), json!(v));
                }
            }
        }
        // `t: 6, a: 0, c: 21`
        for attr in text.split(',').map(str::trim) {
            if let Some((k @ ("t" | "a" | "c"), v)) = attr.split_once(':') {
                let v = v.trim();
                r.details.insert(k.into(), json!(v));
                if k == "t"
                    && let Some(name) = v.parse().ok().and_then(algorithm)
                {
                    r.details.insert("algorithm".into(), json!(name));
                }
            }
        }
        // The key named by `new key NAME`, `priv key NAME created`, `rsa NAME!hash`.
        let words: Vec<&str> = text.split([' ', ',', '!']).collect();
        if let Some(i) = words.iter().position(|w| *w == "key")
            && let Some(name) = words.get(i + 1).filter(|w| !w.is_empty())
        {
            r.key = Some(name.to_string());
        } else if words.first() == Some(&"rsa") {
            r.key = words.get(1).map(|s| s.to_string());
        }
        out.push(r);
    }

    fn resume(&mut self, carry: Option<&str>) {
        self.last = carry.and_then(|c| c.parse().ok());
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(512).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, parse_all};

    /// Lines of the manual, then a jump from 1A6 to 1A9 and an HSM restart (counter 1).
    const LOG: &str = "\
2022/01/11 22:31:54 00000052 00000198 000A3309 session thread up [2]
2022/01/11 22:31:54 00000052 00000199 EE4E6C03 172.17.0.1 auth try, c: 21, tls: y, 2|172.17.0.1 172.17.0.2:4433 -
2022/01/11 22:31:54 00000052 0000019B EE4E6C03 master auth ok, 172.17.0.1, 2|172.17.0.1 172.17.0.2:4433 -
2022/01/11 22:32:17 00000052 0000019C EE4E6C03 new key prodkey, t: 6, a: 0, c: 21|172.17.0.1 172.17.0.2:4433 master
2022/01/11 22:32:32 00000052 0000019D EE4E6C03 rsa prodkey!9FcLP5AfWsa/Xp+AXsMMpN7V8FSYfOpHk1+7hbW4OKM=, c: 21|172.17.0.1 172.17.0.2:4433 master
2022/01/12 08:00:00 00000001 00000001 00000000 session thread up [1]
2022/01/12 08:00:01 00000001 00000002 A575C340|master auth fail, 172.17.0.9 172.17.0.2:4433 -
";

    #[test]
    fn events_attributes_gaps_and_restarts() {
        let r = parse_all(LOG.as_bytes(), Format::Dinamo);
        let ops: Vec<&str> = r.iter().map(|r| r.op.as_str()).collect();
        assert_eq!(
            ops,
            [
                "DINAMO_SESSION_THREAD",
                "DINAMO_AUTH_TRY",
                "HSM_COUNTER_GAP",
                "DINAMO_AUTH_OK",
                "DINAMO_KEY_CREATE",
                "DINAMO_RSA",
                "HSM_COUNTER_RESET",
                "DINAMO_SESSION_THREAD",
                "DINAMO_AUTH_FAIL"
            ]
        );
        let gap = &r[2];
        assert_eq!(gap.details["previousCounter"], 0x199);
        assert_eq!(gap.details["missing"], 1);
        assert_eq!((gap.offset, gap.sub), (r[3].offset, 1));
        assert_eq!(gap.end, r[3].offset);
        let key = &r[4];
        assert_eq!(key.key.as_deref(), Some("prodkey"));
        assert_eq!(key.details["algorithm"], "ALG_RSA_2048");
        assert_eq!(key.details["a"], "0");
        assert_eq!(key.details["c"], "21");
        assert_eq!(key.details["user"], "master");
        assert_eq!(key.session.as_deref(), Some("EE4E6C03"));
        assert_eq!(key.counter.as_deref(), Some("412"));
        assert_eq!(r[5].key.as_deref(), Some("prodkey"));
        assert_eq!(r[6].details["previousCounter"], 0x19D);
        let fail = &r[8];
        assert_eq!(fail.status, Status::Failure);
        assert_eq!(fail.session.as_deref(), Some("A575C340"));
        assert!(
            fail.details["text"]
                .as_str()
                .unwrap()
                .starts_with("master auth fail")
        );
    }

    #[test]
    fn a_restart_mid_file_continues_the_counter() {
        let start = LOG.find("2022/01/11 22:32:17").unwrap();
        let mut p = Dinamo::new();
        p.resume(Some("411"));
        let mut out = Vec::new();
        let line = LOG[start..].lines().next().unwrap();
        p.line(line, start as u64, 0, 4, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        p.resume(Some("400"));
        out.clear();
        p.line(line, start as u64, 0, 4, &mut out);
        assert_eq!(out[0].op, "HSM_COUNTER_GAP");
    }
}
