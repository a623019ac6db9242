//! One logged operation of any source, and how it becomes an auditseal event
//! (docs/HSM-LOGS.md "Mapping").

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The outcome of an operation, as the source logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Failure,
    /// No outcome was logged (the call never returned, or the line is a finding).
    Void,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::Failure => "FAILURE",
            Status::Void => "VOID",
        }
    }
}

/// One operation (or one finding, such as a chain break) read from a source. Everything in
/// it has been redacted already: parsers copy only what docs/HSM-LOGS.md lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Byte offset of the record's first line in its file.
    pub offset: u64,
    /// Byte offset just after its last line.
    pub end: u64,
    /// Line number (from 1) of its first line.
    pub line: u64,
    /// Line number of the line after its last.
    pub end_line: u64,
    /// The operation (`C_Sign`), or the finding (`HSM_CHAIN_BREAK`).
    pub op: String,
    pub status: Status,
    /// The return value's name (`CKR_PIN_INCORRECT`) or the source's error code.
    pub rv: Option<String>,
    /// The source's own time stamp, as written.
    pub time: Option<String>,
    pub session: Option<String>,
    /// Key handle or label.
    pub key: Option<String>,
    pub duration_ms: Option<f64>,
    /// The source's own counter (call number, event counter) or hash.
    pub counter: Option<String>,
    /// The first record after a process (re)started writing (pkcs11-spy's banner, Dinamo's
    /// counter restart): analysis starts its session bookkeeping again.
    pub new_run: bool,
    /// Further (redacted) values.
    pub details: Map<String, Value>,
    /// 0 for the record of a line; 1 for a finding about that line (a chain break, a counter
    /// gap), which gets a pk of its own.
    pub sub: u32,
    /// The parser's state after this record, kept in the position file so that a restart
    /// continues a chain or a counter (`None`: the parser has none).
    pub carry: Option<String>,
}

impl Record {
    pub fn new(op: impl Into<String>, offset: u64, line: u64) -> Record {
        Record {
            offset,
            end: offset,
            line,
            end_line: line + 1,
            op: op.into(),
            status: Status::Void,
            rv: None,
            time: None,
            session: None,
            key: None,
            duration_ms: None,
            counter: None,
            new_run: false,
            details: Map::new(),
            sub: 0,
            carry: None,
        }
    }
}

/// Where a record came from: what the event names besides the record itself.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The source's name in the configuration.
    pub source: &'a str,
    /// The module name of the format (`PKCS11_SPY`).
    pub module: &'a str,
    pub host: &'a str,
    /// The configured path (stable across rotations, unlike the rotated file's name).
    pub file: &'a str,
    /// The file's identity (docs/HSM-LOGS.md "Exactly once").
    pub file_id: &'a str,
}

/// The event's pk: a UUID version 8 from SHA-256(`auditseal-ship` 0x00 source 0x00 file id
/// 0x00 offset), the offset in decimal ASCII followed by `.sub` for a finding, so the same
/// record read again, by any run, names the same row.
pub fn pk(source: &str, file_id: &str, offset: u64, sub: u32) -> String {
    let mut h = Sha256::new();
    for part in [
        b"auditseal-ship".as_slice(),
        source.as_bytes(),
        file_id.as_bytes(),
    ] {
        h.update(part);
        h.update([0u8]);
    }
    h.update(offset.to_string().as_bytes());
    if sub > 0 {
        h.update(format!(".{sub}").as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    hex::encode(b)
}

/// The file identity: SHA-256 over the file's first bytes up to the end of its first record
/// (which holds the source's first time stamp), 32 hex digits. A renamed or copied file keeps
/// it; a truncated or new one gets another.
pub fn file_id(head: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"auditseal-ship-file\0");
    h.update(head);
    hex::encode(&h.finalize()[..16])
}

/// The event object of docs/API.md for `record`. Deterministic: the same record from the same
/// origin gives the same JSON, so a re-send is answered as a replay.
pub fn to_event(record: &Record, origin: &Origin) -> Value {
    let mut details = Map::new();
    details.insert("source".into(), json!(origin.source));
    details.insert("host".into(), json!(origin.host));
    details.insert("file".into(), json!(origin.file));
    details.insert("fileId".into(), json!(origin.file_id));
    details.insert("offset".into(), json!(record.offset));
    details.insert("line".into(), json!(record.line));
    let optional = [
        ("counter", &record.counter),
        ("time", &record.time),
        ("rv", &record.rv),
        ("session", &record.session),
        ("key", &record.key),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            details.insert(name.into(), json!(v));
        }
    }
    if let Some(d) = record.duration_ms {
        details.insert("durationMs".into(), json!(d));
    }
    if !record.details.is_empty() {
        details.insert("fields".into(), Value::Object(record.details.clone()));
    }
    json!({
        "pk": pk(origin.source, origin.file_id, record.offset, record.sub),
        "eventType": record.op,
        "eventStatus": record.status.as_str(),
        "authToken": format!("{}@{}", origin.source, origin.host),
        "service": "HSM",
        "module": origin.module,
        "customId": record.session,
        "searchDetail1": record.key,
        "searchDetail2": record.rv,
        "additionalDetails": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pk_is_a_version_8_uuid_that_depends_on_each_part() {
        let a = pk("spy", "f1", 10, 0);
        assert_eq!(a.len(), 32);
        assert_eq!(&a[12..13], "8");
        assert!(matches!(&a[16..17], "8" | "9" | "a" | "b"), "{a}");
        assert_eq!(a, pk("spy", "f1", 10, 0));
        for other in [
            pk("spy2", "f1", 10, 0),
            pk("spy", "f2", 10, 0),
            pk("spy", "f1", 11, 0),
            pk("spy", "f1", 10, 1),
        ] {
            assert_ne!(a, other);
        }
        // The separators keep the parts apart.
        assert_ne!(pk("ab", "c", 1, 0), pk("a", "bc", 1, 0));
    }

    #[test]
    fn event_carries_the_mapping() {
        let mut r = Record::new("C_Login", 120, 7);
        r.status = Status::Failure;
        r.rv = Some("CKR_PIN_INCORRECT".into());
        r.session = Some("0x1".into());
        r.counter = Some("7".into());
        let origin = Origin {
            source: "spy",
            module: "PKCS11_SPY",
            host: "h",
            file: "/var/log/spy.log",
            file_id: "ff",
        };
        let e = to_event(&r, &origin);
        assert_eq!(e["eventType"], "C_Login");
        assert_eq!(e["eventStatus"], "FAILURE");
        assert_eq!(e["service"], "HSM");
        assert_eq!(e["customId"], "0x1");
        assert_eq!(e["searchDetail2"], "CKR_PIN_INCORRECT");
        assert_eq!(e["additionalDetails"]["counter"], "7");
        assert_eq!(e["additionalDetails"]["offset"], 120);
        assert_eq!(e["pk"], pk("spy", "ff", 120, 0));
        assert_eq!(e, to_event(&r, &origin));
    }
}
