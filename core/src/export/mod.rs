//! Exports (docs/FORMAT.md section 9): rows as NDJSON, CSV or TSV, with a signature over the
//! exact bytes (NDJSON: in a trailer line; CSV and TSV: a detached `.sig`) that also covers the
//! export's request (criteria, limit, node, time: the request line), and their offline
//! verification.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::crypto::protector::{self, HashingReader};
use crate::crypto::token::{CryptoToken, TokenError};
use crate::format::batch::BatchRecord;
use crate::format::protection::RowProtection;
use crate::format::record::AuditRecord;
use crate::store::Criterion;
use crate::store::query::Param;
use crate::verify::Batches;

mod check;
mod parse;

pub use check::{ExportReport, LoadedExport, load, sig_path, verify};
pub use parse::{next_csv_record, tsv_unescape};

/// The columns of a CSV or TSV export, in the order of CESeCore's own log export (rowVersion is not exported:
/// it is not protected and always 0).
pub const COLUMNS: [&str; 14] = [
    "pk",
    "nodeId",
    "sequenceNumber",
    "timeStamp",
    "eventType",
    "eventStatus",
    "authToken",
    "service",
    "module",
    "customId",
    "searchDetail1",
    "searchDetail2",
    "additionalDetails",
    "rowProtection",
];

/// At most this many messages of each kind in a report; the counts stay exact.
const MAX_MESSAGES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ndjson,
    Csv,
    Tsv,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Tsv => "text/tab-separated-values; charset=utf-8",
        }
    }

    /// The format a file name's extension names (`.ndjson`, `.csv`, `.tsv`, any case).
    pub fn of_path(path: &Path) -> Option<Format> {
        path.extension()?
            .to_str()?
            .to_ascii_lowercase()
            .parse()
            .ok()
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ndjson" => Ok(Format::Ndjson),
            "csv" => Ok(Format::Csv),
            "tsv" => Ok(Format::Tsv),
            other => Err(format!(
                "unknown format {other:?}; formats are: ndjson, csv, tsv"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot sign the export: {0}")]
    Token(#[from] TokenError),
    #[error("{0}")]
    Unsupported(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A temporary file for an export, already unlinked: it disappears when closed, even if the
/// process dies, and nobody else can open it.
pub fn temp_file() -> Result<File, ExportError> {
    let path = std::env::temp_dir().join(format!(
        "auditseal-export-{}",
        uuid::Uuid::new_v4().simple()
    ));
    // Private too (files.rs): whoever opened it before the unlink could read it later.
    let file = crate::files::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io(&path))?;
    std::fs::remove_file(&path).map_err(io(&path))?;
    Ok(file)
}

/// The 14 exported values of a row, nulls as None.
fn values(r: &AuditRecord) -> [Option<Cow<'_, str>>; 14] {
    fn s(v: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(v))
    }
    fn o(v: &Option<String>) -> Option<Cow<'_, str>> {
        v.as_deref().map(Cow::Borrowed)
    }
    [
        s(&r.pk),
        s(&r.node_id),
        Some(Cow::Owned(r.sequence_number.to_string())),
        Some(Cow::Owned(r.time_stamp.to_string())),
        s(&r.event_type),
        s(&r.event_status),
        s(&r.auth_token),
        s(&r.service),
        s(&r.module),
        o(&r.custom_id),
        o(&r.search_detail1),
        o(&r.search_detail2),
        o(&r.additional_details),
        o(&r.row_protection),
    ]
}

/// The columns of a CSV or TSV export that hold integers (sequenceNumber, timeStamp); every
/// other column is text.
const INTEGER_COLUMNS: [usize; 2] = [2, 3];

/// The first characters that make a spreadsheet read a cell as a formula (OWASP "CSV
/// Injection"), and `'`, the mark itself, so that readers can always remove one.
const FORMULA_STARTS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\''];

/// A text value of a version 2 CSV or TSV export with `'` before it when a spreadsheet would run
/// it as a formula (docs/FORMAT.md section 9.5); None when it goes out as it is.
fn neutralised(v: &str) -> Option<String> {
    v.starts_with(FORMULA_STARTS).then(|| format!("'{v}"))
}

/// RFC 4180 field: quoted when empty (so "" is an empty string and nothing is null), when it
/// holds `,` `"` CR or LF, or when `quote` (a neutralised formula); `"` doubled inside quotes.
fn csv_field(out: &mut Vec<u8>, v: Option<&str>, quote: bool) {
    match v {
        None => {}
        Some(s) if quote || s.is_empty() || s.contains([',', '"', '\r', '\n']) => {
            out.push(b'"');
            out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        }
        Some(s) => out.extend_from_slice(s.as_bytes()),
    }
}

/// TSV field: null is `\N`; backslash, tab, LF and CR are escaped as `\\` `\t` `\n` `\r`.
fn tsv_field(out: &mut Vec<u8>, v: Option<&str>) {
    let Some(s) = v else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// A batch statement line of an NDJSON export.
#[derive(Serialize)]
struct BatchLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    batch: &'a BatchRecord,
}

/// The last line of an NDJSON export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trailer {
    #[serde(rename = "type")]
    pub kind: String,
    pub rows: u64,
    pub key_id: i32,
    pub signature: String,
}

/// The version of the export layout that has a request line (docs/FORMAT.md section 9).
/// Exports without one are version 1.
pub const EXPORT_VERSION: &str = "auditseal-export-v2";

/// One criterion of an export's request, in canonical form: the field's and the operator's
/// names as docs/API.md spells them, the value as a JSON string (text fields), integer
/// (`sequenceNumber`, `timeStamp`: an ISO-8601 date given is its epoch milliseconds) or null
/// (`NULL`, `NOTNULL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestCriterion {
    pub field: String,
    pub op: String,
    pub value: serde_json::Value,
}

impl From<&Criterion> for RequestCriterion {
    fn from(c: &Criterion) -> Self {
        RequestCriterion {
            field: c.field.name().into(),
            op: c.op.name().into(),
            value: match &c.value {
                Some(Param::Text(t)) => serde_json::Value::from(t.as_str()),
                Some(Param::Int(i)) => serde_json::Value::from(*i),
                None => serde_json::Value::Null,
            },
        }
    }
}

/// What an export was asked for, and where and when it was made: its request line, signed
/// with the rows so that an export cannot stand in for another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportRequest {
    /// Always `request`.
    #[serde(rename = "type")]
    pub kind: String,
    /// [`EXPORT_VERSION`].
    pub version: String,
    /// `ndjson`, `csv` or `tsv`.
    pub format: String,
    /// The node that made the export.
    pub node_id: String,
    /// When it started reading rows, epoch milliseconds.
    pub created_at: i64,
    /// ANDed, in the order given.
    pub criteria: Vec<RequestCriterion>,
    /// At most this many rows; null: every matching row.
    pub limit: Option<i64>,
}

impl ExportRequest {
    pub fn new(
        format: Format,
        node_id: &str,
        created_at: i64,
        criteria: &[Criterion],
        limit: Option<i64>,
    ) -> Self {
        ExportRequest {
            kind: "request".into(),
            version: EXPORT_VERSION.into(),
            format: format.name().into(),
            node_id: node_id.into(),
            created_at,
            criteria: criteria.iter().map(RequestCriterion::from).collect(),
            limit,
        }
    }

    /// The request line without its newline: compact JSON, members in the struct's order, every
    /// character outside printable ASCII (0x20..0x7E) as `\uXXXX` (UTF-16, lower-case hex), so
    /// that it can also travel as an HTTP header value.
    pub fn line(&self) -> String {
        use std::fmt::Write as _;
        // Serializing plain data to a string cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        let mut out = String::with_capacity(json.len());
        for c in json.chars() {
            if (' '..='~').contains(&c) {
                out.push(c);
            } else {
                for u in c.encode_utf16(&mut [0u16; 2]) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
        out
    }

    /// Criteria as `field OP value`, for people.
    pub fn criteria_text(&self) -> String {
        if self.criteria.is_empty() {
            return "none (every row)".into();
        }
        self.criteria
            .iter()
            .map(|c| match &c.value {
                serde_json::Value::Null => format!("{} {}", c.field, c.op),
                serde_json::Value::String(v) => format!("{} {} {v}", c.field, c.op),
                other => format!("{} {} {other}", c.field, c.op),
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }
}

/// Writes an export to a file, row by row; `finish` signs it.
pub struct ExportWriter {
    format: Format,
    out: BufWriter<File>,
    rows: u64,
    /// NDJSON: the (node, first) of the batch statement written last; a batch's matching rows
    /// come together, so each statement is written once, before its first row.
    last_batch: Option<(String, i64)>,
    line: Vec<u8>,
    /// The request line (without newline); None only for a version 1 export (tests).
    request: Option<String>,
}

/// A signed export, ready to send.
#[derive(Debug)]
pub struct Finished {
    /// The whole export, positioned at its start.
    pub file: File,
    /// `1:<v>:<keyid>:<hex>` over the signed bytes.
    pub signature: String,
    /// The request line (without newline), which the signature covers.
    pub request: String,
    pub key_id: i32,
    pub rows: u64,
    /// Size and SHA-256 (lower-case hex) of the whole export as delivered.
    pub bytes: u64,
    pub sha256: String,
}

impl ExportWriter {
    /// Starts an export of `request` in `file` (NDJSON: with the request line; CSV and TSV:
    /// with the header line, the request line going into the signature file).
    pub fn new(format: Format, file: File, request: &ExportRequest) -> std::io::Result<Self> {
        Self::with_request(format, file, Some(request.line()))
    }

    /// `new`; without a request, the version 1 layout that older servers wrote.
    fn with_request(format: Format, file: File, request: Option<String>) -> std::io::Result<Self> {
        let mut w = ExportWriter {
            format,
            out: BufWriter::with_capacity(256 * 1024, file),
            rows: 0,
            last_batch: None,
            line: Vec::new(),
            request,
        };
        match format {
            Format::Ndjson => {
                if let Some(r) = &w.request {
                    w.out.write_all(format!("{r}\n").as_bytes())?;
                }
            }
            Format::Csv => w
                .out
                .write_all(format!("{}\r\n", COLUMNS.join(",")).as_bytes())?,
            Format::Tsv => w
                .out
                .write_all(format!("{}\n", COLUMNS.join("\t")).as_bytes())?,
        }
        Ok(w)
    }

    /// Writes rows in order. NDJSON: before the first row of a version 3 batch, its statement
    /// from `statements` if it holds it.
    pub fn write_rows(
        &mut self,
        rows: &[AuditRecord],
        statements: &Batches,
    ) -> std::io::Result<()> {
        for r in rows {
            self.line.clear();
            match self.format {
                Format::Ndjson => {
                    if let Some(first) = r
                        .row_protection
                        .as_deref()
                        .and_then(RowProtection::batch_first)
                    {
                        let key = (r.node_id.clone(), first);
                        if self.last_batch.as_ref() != Some(&key)
                            && let Some(b) = statements.statement(&r.node_id, first)
                        {
                            serde_json::to_writer(
                                &mut self.line,
                                &BatchLine {
                                    kind: "batch",
                                    batch: b,
                                },
                            )?;
                            self.line.push(b'\n');
                            self.last_batch = Some(key);
                        }
                    }
                    serde_json::to_writer(&mut self.line, r)?;
                    self.line.push(b'\n');
                }
                Format::Csv | Format::Tsv => {
                    let (sep, end): (u8, &[u8]) = if self.format == Format::Csv {
                        (b',', b"\r\n")
                    } else {
                        (b'\t', b"\n")
                    };
                    for (i, v) in values(r).iter().enumerate() {
                        if i > 0 {
                            self.line.push(sep);
                        }
                        // Version 2 neutralises formulas in text columns; version 1 (no
                        // request line) wrote every value as stored.
                        let formula = match v.as_deref() {
                            Some(t) if self.request.is_some() && !INTEGER_COLUMNS.contains(&i) => {
                                neutralised(t)
                            }
                            _ => None,
                        };
                        let v = formula.as_deref().or(v.as_deref());
                        if self.format == Format::Csv {
                            csv_field(&mut self.line, v, formula.is_some());
                        } else {
                            tsv_field(&mut self.line, v);
                        }
                    }
                    self.line.extend_from_slice(end);
                }
            }
            self.out.write_all(&self.line)?;
            self.rows += 1;
        }
        Ok(())
    }

    /// Signs everything written with `token` (NDJSON: and appends the trailer; CSV and TSV:
    /// the request line and then the file). The file is read back once, in chunks, to be
    /// signed and hashed.
    pub fn finish(self, token: &dyn CryptoToken) -> Result<Finished, ExportError> {
        let tmp = Path::new("<export temporary file>");
        let mut file = self.out.into_inner().map_err(|e| io(tmp)(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io(tmp))?;
        // CSV and TSV: the request line comes first in the signed bytes, not in the file.
        let prefix = match (&self.request, self.format) {
            (Some(r), Format::Csv | Format::Tsv) => format!("{r}\n"),
            _ => String::new(),
        };
        let mut body = HashingReader::new(&mut file);
        let signature =
            protector::protect_reader(token, &mut prefix.as_bytes().chain(&mut body))?.protection;
        let (mut hash, mut len) = body.into_hasher();
        if self.format == Format::Ndjson {
            let mut trailer = serde_json::to_vec(&Trailer {
                kind: "trailer".into(),
                rows: self.rows,
                key_id: token.keyid(),
                signature: signature.clone(),
            })
            .map_err(|e| io(tmp)(e.into()))?;
            trailer.push(b'\n');
            file.write_all(&trailer).map_err(io(tmp))?;
            hash.update(&trailer);
            len += trailer.len() as u64;
        }
        file.flush()
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .map_err(io(tmp))?;
        Ok(Finished {
            file,
            signature,
            request: self.request.unwrap_or_default(),
            key_id: token.keyid(),
            rows: self.rows,
            bytes: len,
            sha256: hex::encode(hash.finalize()),
        })
    }
}

/// The file's bytes as a stream of chunks, for an HTTP body.
pub fn into_stream(
    file: File,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures::stream::try_unfold(tokio::fs::File::from_std(file), |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((buf, f)))
    })
}

#[cfg(test)]
mod tests {
    use super::check::*;
    use super::parse::*;
    use super::*;
    use crate::crypto::keys::KeyRing;
    use crate::crypto::token::HmacToken;
    use sha2::Sha256;
    use std::io::Read;

    fn row(seq: i64, custom: Option<&str>, details: Option<&str>) -> AuditRecord {
        let mut r = AuditRecord {
            pk: format!("{seq:032x}"),
            node_id: "n1".into(),
            sequence_number: seq,
            time_stamp: 1_764_072_000_000 + seq,
            event_type: "PROCESS".into(),
            event_status: "SUCCESS".into(),
            auth_token: "CN=a, O=\"b\"".into(),
            service: "SIGNSERVER".into(),
            module: "WORKER".into(),
            custom_id: custom.map(Into::into),
            search_detail1: Some(String::new()),
            additional_details: details.map(Into::into),
            ..AuditRecord::example()
        };
        r.row_protection = Some(protector::protect(&token(), &r).unwrap());
        r
    }

    fn token() -> HmacToken {
        HmacToken::new(7, b"export test key")
    }

    fn keys() -> KeyRing {
        let mut k = KeyRing::new();
        k.insert(7, token().verify_key());
        k
    }

    fn request(format: Format) -> ExportRequest {
        let criteria: Vec<Criterion> = ["eventType EQ PROCESS", "timeStamp GE 2025-12-01"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        ExportRequest::new(format, "n1", 1_764_072_999_000, &criteria, Some(10))
    }

    fn export(format: Format, rows: &[AuditRecord]) -> Vec<u8> {
        export_as(format, rows, Some(request(format).line()))
    }

    /// An export with the request line `request` (None: version 1); CSV and TSV: the file,
    /// the marker `\0SIG\0`, then the signature file.
    fn export_as(format: Format, rows: &[AuditRecord], request: Option<String>) -> Vec<u8> {
        let mut w = ExportWriter::with_request(format, temp_file().unwrap(), request).unwrap();
        w.write_rows(rows, &Batches::default()).unwrap();
        let mut f = w.finish(&token()).unwrap();
        let mut bytes = Vec::new();
        f.file.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, f.bytes);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), f.sha256);
        if format != Format::Ndjson {
            f.signature.push('\n');
            bytes.extend_from_slice(b"\0SIG\0");
            if !f.request.is_empty() {
                bytes.extend_from_slice(format!("{}\n", f.request).as_bytes());
            }
            bytes.extend_from_slice(f.signature.as_bytes());
        }
        bytes
    }

    /// `bytes` with the first `from` in the request line (NDJSON: the first line; CSV and
    /// TSV: the signature file's first line) replaced by `to`.
    fn with_request_changed(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let start = text.find("{\"type\":\"request\"").unwrap();
        let end = start + text[start..].find('\n').unwrap();
        assert!(text[start..end].contains(from), "{}", &text[start..end]);
        let line = text[start..end].replacen(from, to, 1);
        format!("{}{line}{}", &text[..start], &text[end..]).into_bytes()
    }

    /// Writes `bytes` (CSV/TSV: file and signature split at the marker) and verifies them.
    fn check(format: Format, bytes: &[u8]) -> ExportReport {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("x.{}", format.name()));
        let marker = b"\0SIG\0";
        match bytes.windows(marker.len()).position(|w| w == marker) {
            Some(i) => {
                std::fs::write(&path, &bytes[..i]).unwrap();
                std::fs::write(sig_path(&path), &bytes[i + marker.len()..]).unwrap();
            }
            None => std::fs::write(&path, bytes).unwrap(),
        }
        verify(&load(&path, None).unwrap(), &keys()).unwrap()
    }

    fn rows() -> Vec<AuditRecord> {
        vec![
            row(0, None, None),
            row(1, Some("a,b\"c\td\\N"), Some("<x>\n line\r\n\t</x>")),
            row(2, Some(""), Some("\\")),
        ]
    }

    #[test]
    fn every_format_round_trips_and_verifies() {
        for format in [Format::Ndjson, Format::Csv, Format::Tsv] {
            let bytes = export(format, &rows());
            let rep = check(format, &bytes);
            assert!(rep.errors.is_empty(), "{format:?}: {:?}", rep.errors);
            assert!(rep.signature_valid);
            assert_eq!((rep.rows, rep.rows_verified), (3, 3), "{format:?}");
        }
    }

    #[test]
    fn exact_layouts() {
        let r = row(1, Some("a,\"b\""), None);
        let csv = String::from_utf8(export(Format::Csv, std::slice::from_ref(&r))).unwrap();
        let line = csv.split("\r\n").nth(1).unwrap();
        assert!(
            line.starts_with(&format!(
                "{},n1,1,1764072000001,PROCESS,SUCCESS,\"CN=a, O=\"\"b\"\"\",SIGNSERVER,WORKER,\"a,\"\"b\"\"\",\"\",,,1:1:7:",
                r.pk
            )),
            "{line}"
        );
        assert!(csv.starts_with("pk,nodeId,sequenceNumber,timeStamp,"));
        let tsv = String::from_utf8(export(Format::Tsv, &[row(1, Some("a\tb\\"), Some("x\ny"))]))
            .unwrap();
        let line = tsv.lines().nth(1).unwrap();
        assert!(line.contains("\ta\\tb\\\\\t\t\\N\tx\\ny\t1:1:7:"), "{line}");
        let nd = String::from_utf8(export(Format::Ndjson, &[r])).unwrap();
        let last = nd.lines().last().unwrap();
        assert!(
            last.starts_with("{\"type\":\"trailer\",\"rows\":1,\"keyId\":7,\"signature\":\"1:1:7:"),
            "{last}"
        );
        assert!(
            nd.starts_with(
                "{\"type\":\"request\",\"version\":\"auditseal-export-v2\",\"format\":\"ndjson\",\
                 \"nodeId\":\"n1\",\"createdAt\":1764072999000,\"criteria\":[{\"field\":\"eventType\",\
                 \"op\":\"EQ\",\"value\":\"PROCESS\"},{\"field\":\"timeStamp\",\"op\":\"GE\",\
                 \"value\":1764547200000}],\"limit\":10}\n{\"pk\":"
            ),
            "{nd}"
        );
        // CSV and TSV: the request line is the signature file's first line.
        let csv = String::from_utf8(export(Format::Csv, &rows())).unwrap();
        let sig = csv.split("\0SIG\0").nth(1).unwrap();
        assert_eq!(
            sig.split('\n').next().unwrap(),
            request(Format::Csv).line(),
            "{sig}"
        );
        assert!(sig.split('\n').nth(1).unwrap().starts_with("1:1:7:"));
    }

    /// A row whose text values all start with a character a spreadsheet takes for a formula
    /// (or with the mark `'`), and whose integers are negative.
    fn formulas() -> AuditRecord {
        let mut r = row(0, Some("=1+2"), Some("@SUM(A1)"));
        r.sequence_number = -1;
        r.time_stamp = -5;
        r.pk = "-pk".into();
        r.node_id = "+node".into();
        r.event_type = "=cmd|' /C calc'!A0".into();
        r.event_status = "'quoted".into();
        r.auth_token = "@evil \"x\"".into();
        r.service = "\tTAB".into();
        r.module = "\rCR".into();
        r.search_detail1 = Some("-2+3".into());
        r.search_detail2 = Some("+\"q\", r".into());
        r.row_protection = Some(protector::protect(&token(), &r).unwrap());
        r
    }

    #[test]
    fn csv_and_tsv_cells_cannot_start_a_formula() {
        let r = formulas();
        let csv = String::from_utf8(export(Format::Csv, std::slice::from_ref(&r))).unwrap();
        let (file, _) = csv.split_once("\0SIG\0").unwrap();
        let line = file.split("\r\n").nth(1).unwrap();
        assert_eq!(
            &line[..line.find(",1:1:7:").unwrap()],
            "\"'-pk\",\"'+node\",-1,-5,\"'=cmd|' /C calc'!A0\",\"''quoted\",\"'@evil \"\"x\"\"\",\
             \"'\tTAB\",\"'\rCR\",\"'=1+2\",\"'-2+3\",\"'+\"\"q\"\", r\",\"'@SUM(A1)\"",
            "{line}"
        );
        let mut pos = 0;
        let fields = next_csv_record(&format!("{line}\r\n"), &mut pos)
            .unwrap()
            .unwrap();
        for (i, f) in fields.iter().enumerate() {
            let f = f.as_deref().unwrap();
            if INTEGER_COLUMNS.contains(&i) {
                assert!(f == "-1" || f == "-5", "column {i} is a number: {f:?}");
            } else {
                assert!(
                    !f.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "column {i}: {f:?}"
                );
            }
        }
        let tsv = String::from_utf8(export(Format::Tsv, std::slice::from_ref(&r))).unwrap();
        let line = tsv.split("\0SIG\0").next().unwrap().lines().nth(1).unwrap();
        assert!(
            line.starts_with(
                "'-pk\t'+node\t-1\t-5\t'=cmd|' /C calc'!A0\t''quoted\t'@evil \"x\"\t'\\tTAB\t'\\rCR\t\
                 '=1+2\t'-2+3\t'+\"q\", r\t'@SUM(A1)\t1:1:7:"
            ),
            "{line}"
        );
        // The neutralised values read back as stored: every row verifies.
        for format in [Format::Csv, Format::Tsv] {
            let rep = check(
                format,
                &export(format, &[r.clone(), row(1, Some("ok"), None)]),
            );
            assert!(rep.errors.is_empty(), "{format:?}: {:?}", rep.errors);
            assert_eq!((rep.rows, rep.rows_verified), (2, 2), "{format:?}");
        }
        // Version 1 wrote values as stored, and its readers remove nothing.
        let v1 = export_as(Format::Csv, std::slice::from_ref(&r), None);
        assert!(String::from_utf8_lossy(&v1).contains(",-1,-5,=cmd|"));
        assert_eq!(check(Format::Csv, &v1).rows_verified, 1);
    }

    #[test]
    fn the_request_is_signed_and_shown() {
        for format in [Format::Ndjson, Format::Csv, Format::Tsv] {
            let bytes = export(format, &rows());
            let rep = check(format, &bytes);
            assert!(rep.errors.is_empty(), "{format:?}: {:?}", rep.errors);
            assert_eq!(rep.version, 2);
            assert_eq!(rep.request.as_ref(), Some(&request(format)), "{format:?}");
            // Another criterion, a narrower limit, another time or node: the signature fails.
            for (from, to) in [
                ("PROCESS", "KEYGEN"),
                ("\"op\":\"GE\"", "\"op\":\"LE\""),
                ("\"limit\":10", "\"limit\":3"),
                ("1764072999000", "1764072999001"),
                ("\"nodeId\":\"n1\"", "\"nodeId\":\"n2\""),
            ] {
                let rep = check(format, &with_request_changed(&bytes, from, to));
                assert!(!rep.signature_valid, "{format:?} {to}");
                assert!(
                    rep.errors
                        .iter()
                        .any(|e| e.contains("the file was changed")),
                    "{format:?} {to}: {:?}",
                    rep.errors
                );
            }
            // The request line of another genuine export (every row, made earlier) does not
            // fit these rows' signature.
            let broader = ExportRequest::new(format, "n1", 1_764_000_000_000, &[], None).line();
            let mine = request(format).line();
            let swapped = with_request_changed(&bytes, &mine, &broader);
            let rep = check(format, &swapped);
            assert!(!rep.signature_valid, "{format:?}");
            assert_eq!(rep.request.map(|r| r.limit), Some(None));
        }
    }

    #[test]
    fn version_1_exports_still_verify_and_say_they_carry_no_request() {
        for format in [Format::Ndjson, Format::Csv, Format::Tsv] {
            let bytes = export_as(format, &rows(), None);
            let rep = check(format, &bytes);
            assert!(rep.errors.is_empty(), "{format:?}: {:?}", rep.errors);
            assert!(rep.signature_valid);
            assert_eq!((rep.version, rep.request.as_ref()), (1, None));
            assert_eq!(rep.rows_verified, 3);
        }
        // A version 2 export cannot pass for version 1: without its request line the
        // signature no longer fits.
        let bytes = export(Format::Ndjson, &rows());
        let text = String::from_utf8(bytes).unwrap();
        let rep = check(Format::Ndjson, text.split_once('\n').unwrap().1.as_bytes());
        assert!(!rep.signature_valid, "{:?}", rep.errors);
        let bytes = export(Format::Csv, &rows());
        let (file, sig) = bytes.split_at(bytes.windows(5).position(|w| w == b"\0SIG\0").unwrap());
        let sig = String::from_utf8(sig[5..].to_vec()).unwrap();
        let mut v1 = file.to_vec();
        v1.extend_from_slice(b"\0SIG\0");
        v1.extend_from_slice(sig.split_once('\n').unwrap().1.as_bytes());
        assert!(!check(Format::Csv, &v1).signature_valid);
    }

    #[test]
    fn the_request_must_fit_the_file() {
        // Signed, but naming a smaller limit than the rows, or another format: both reported.
        let mut r = request(Format::Csv);
        r.limit = Some(2);
        let rep = check(
            Format::Tsv,
            &export_as(Format::Tsv, &rows(), Some(r.line())),
        );
        assert!(rep.signature_valid);
        assert_eq!(rep.error_count, 2, "{:?}", rep.errors);
        assert!(
            rep.errors.iter().any(|e| e.contains("limit 2")),
            "{:?}",
            rep.errors
        );
        assert!(
            rep.errors.iter().any(|e| e.contains("format \"csv\"")),
            "{:?}",
            rep.errors
        );
        // A request line anywhere but first is an error.
        let nd = String::from_utf8(export(Format::Ndjson, &rows())).unwrap();
        let (first, rest) = nd.split_once('\n').unwrap();
        let (row, rest) = rest.split_once('\n').unwrap();
        let moved = format!("{row}\n{first}\n{rest}");
        let rep = check(Format::Ndjson, moved.as_bytes());
        assert!(
            rep.errors
                .iter()
                .any(|e| e.contains("may only be the first line")),
            "{:?}",
            rep.errors
        );
    }

    #[test]
    fn the_request_line_is_ascii_and_reads_back() {
        let c: Criterion = "customId LIKE å\u{7f}\u{1F600}\"\\%".parse().unwrap();
        let r = ExportRequest::new(Format::Csv, "nöde", 5, &[c], None);
        let line = r.line();
        assert!(line.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{line}");
        assert!(
            line.contains("n\\u00f6de") && line.contains("\\ud83d\\ude00"),
            "{line}"
        );
        assert!(line.ends_with(",\"limit\":null}"), "{line}");
        assert_eq!(serde_json::from_str::<ExportRequest>(&line).unwrap(), r);
        assert_eq!(r.criteria_text(), "customId LIKE å\u{7f}\u{1F600}\"\\%");
    }

    #[test]
    fn one_changed_byte_fails() {
        for format in [Format::Ndjson, Format::Csv, Format::Tsv] {
            let bytes = export(format, &rows());
            // Every byte of the signed part (and of the NDJSON trailer) matters; CSV and TSV:
            // the file and the request line of the signature file.
            let end = match format {
                Format::Ndjson => bytes.len(),
                _ => {
                    let sig = bytes.windows(5).position(|w| w == b"\0SIG\0").unwrap() + 5;
                    sig + bytes[sig..].iter().position(|b| *b == b'\n').unwrap()
                }
            };
            let marker = bytes.windows(5).position(|w| w == b"\0SIG\0");
            for at in (0..end)
                .step_by(7)
                .filter(|at| marker.is_none_or(|m| !(m..m + 5).contains(at)))
            {
                let mut b = bytes.clone();
                b[at] ^= 0x01;
                let rep = check(format, &b);
                assert!(
                    !rep.errors.is_empty(),
                    "{format:?}: byte {at} changed and nothing was found"
                );
            }
        }
    }

    #[test]
    fn a_signature_without_its_key_says_how_to_give_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ndjson");
        std::fs::write(&path, export(Format::Ndjson, &rows())).unwrap();
        let rep = verify(&load(&path, None).unwrap(), &KeyRing::new()).unwrap();
        assert!(!rep.signature_valid);
        assert!(
            rep.errors
                .iter()
                .any(|e| e.contains("--public-key") && e.contains("/api/v1/keys")),
            "{:?}",
            rep.errors
        );
    }

    #[test]
    fn rows_with_unknown_keys_are_errors_and_v3_in_csv_is_noted() {
        let mut rs = rows();
        rs[0].row_protection = Some("1:2:99:00".into());
        rs[1].row_protection = Some(format!("1:3:7:{}", "00".repeat(12)));
        let rep = check(Format::Csv, &export(Format::Csv, &rs));
        assert_eq!(rep.errors.len(), 1, "{:?}", rep.errors);
        assert!(rep.errors[0].contains("keyid 99"), "{:?}", rep.errors);
        assert_eq!(
            (rep.rows, rep.rows_verified, rep.rows_not_checkable),
            (3, 1, 1)
        );
    }

    /// Files larger than every read buffer verify line by line; a last line longer than any
    /// trailer (found by reading backwards over several chunks) is no trailer, and the rows
    /// before it are still read.
    #[test]
    fn large_files_are_read_as_streams() {
        let big: Vec<AuditRecord> = (0..1500)
            .map(|i| {
                row(
                    i,
                    Some("c,\"q\""),
                    Some(&format!("<x>{}\r\n</x>", "é".repeat(400))),
                )
            })
            .collect();
        for format in [Format::Ndjson, Format::Csv, Format::Tsv] {
            let every = ExportRequest::new(format, "n1", 1, &[], None).line();
            let bytes = export_as(format, &big, Some(every));
            assert!(bytes.len() > 1_000_000, "{}", bytes.len());
            let rep = check(format, &bytes);
            assert!(rep.errors.is_empty(), "{format:?}: {:?}", rep.errors);
            assert_eq!((rep.rows, rep.rows_verified), (1500, 1500), "{format:?}");
        }
        let mut bytes = export(Format::Ndjson, &rows());
        bytes.extend_from_slice(&vec![b'x'; 3 * MAX_TRAILER as usize]);
        bytes.push(b'\n');
        let rep = check(Format::Ndjson, &bytes);
        assert!(!rep.signature_valid);
        assert!(
            rep.errors[0].contains("the last line is not a trailer"),
            "{:?}",
            rep.errors
        );
        // The rows and the real trailer above the long line are read (the trailer as a line
        // of an unexpected type).
        assert_eq!(rep.rows_verified, 3, "{:?}", rep.errors);
        assert!(
            rep.errors
                .iter()
                .any(|e| e.contains("unexpected line type")),
            "{:?}",
            rep.errors
        );
    }

    /// The signature and the rows are read in two passes; a file that changes in between (on
    /// storage an attacker controls) is caught even when every row it shows verifies: here the
    /// second read of a CSV export (which carries no row count) lacks a row.
    #[test]
    fn a_file_that_changes_between_the_two_reads_fails() {
        let bytes = export(Format::Csv, &rows());
        let cut = bytes.windows(5).position(|w| w == b"\0SIG\0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, &bytes[..cut]).unwrap();
        std::fs::write(sig_path(&path), &bytes[cut + 5..]).unwrap();
        let loaded = load(&path, None).unwrap();
        let text = String::from_utf8(bytes[..cut].to_vec()).unwrap();
        let last_row = text[..text.len() - 2].rfind("\r\n").unwrap() + 2;
        let shorter = text.as_bytes()[..last_row].to_vec();
        let reads = std::cell::Cell::new(0);
        let open = || {
            reads.set(reads.get() + 1);
            Ok(std::io::Cursor::new(if reads.get() == 1 {
                bytes[..cut].to_vec()
            } else {
                shorter.clone()
            }))
        };
        let rep = verify_reads(&loaded, &keys(), &open).unwrap();
        assert_eq!(reads.get(), 2);
        assert!(rep.signature_valid);
        assert_eq!((rep.rows, rep.rows_verified), (2, 2));
        assert_eq!(rep.error_count, 1, "{:?}", rep.errors);
        assert!(rep.errors[0].contains("changed while it was being checked"));
        // Read the same both times, the same file passes.
        let rep = verify_reads(&loaded, &keys(), &|| {
            Ok(std::io::Cursor::new(bytes[..cut].to_vec()))
        })
        .unwrap();
        assert_eq!((rep.rows, rep.error_count), (3, 0), "{:?}", rep.errors);
    }

    #[test]
    fn csv_and_tsv_fields_parse_back() {
        let mut pos = 0;
        let rec = next_csv_record("a,,\"\",\"x\"\"\r\ny\"\r\n", &mut pos)
            .unwrap()
            .unwrap();
        assert_eq!(
            rec,
            [
                Some("a".to_string()),
                None,
                Some(String::new()),
                Some("x\"\r\ny".to_string())
            ]
        );
        assert!(next_csv_record("a,b\n", &mut 0).is_err());
        assert_eq!(tsv_unescape("\\N"), Ok(None));
        assert_eq!(tsv_unescape("a\\\\N\\t"), Ok(Some("a\\N\t".into())));
        assert!(tsv_unescape("\\x").is_err());
    }
}
