//! An export checked offline (`auditseal-db verify-export`): its signature over the exact bytes,
//! its request line, and every row's own protection.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::crypto::keys::{DetachedError, KeyRing, Scope, VerifyError};
use crate::crypto::protector::HashingReader;
use crate::format::batch::BatchRecord;
use crate::format::protection::RowProtection;
use crate::format::record::AuditRecord;
use crate::verify::{Batches, RowFailure, verify_row};

use super::parse::*;
use super::*;

/// An export file opened for verification: read as a stream by `verify`, never whole.
pub struct LoadedExport {
    pub format: Format,
    path: PathBuf,
    /// How many leading bytes the signature covers (all but the NDJSON trailer).
    signed_len: u64,
    /// The signature string, or why it could not be found.
    signature: Result<String, String>,
    trailer: Option<Trailer>,
    /// CSV and TSV of version 2: the request line, the first line of the signature file.
    request_line: Option<String>,
}

impl LoadedExport {
    /// The keyid the signature names, if it can be read.
    pub fn signature_keyid(&self) -> Option<i32> {
        let s = self.signature.as_ref().ok()?;
        RowProtection::parse(s).ok().map(|p| p.keyid)
    }
}

/// The longest last line read as a possible NDJSON trailer (a real one is under 2 KB).
pub(super) const MAX_TRAILER: u64 = 64 * 1024;

/// Where the file's last line starts (after its last newline, a final one aside) and, when it
/// is short enough to be a trailer, that line with its final newline if it has one. Reads the
/// file backwards in chunks.
pub(super) fn last_line(file: &mut File, len: u64) -> std::io::Result<(u64, Option<Vec<u8>>)> {
    let mut last = [0u8; 1];
    let mut end = len;
    if len > 0 {
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] == b'\n' {
            end -= 1;
        }
    }
    let start = loop {
        if end == 0 {
            break 0;
        }
        let from = end.saturating_sub(MAX_TRAILER);
        let mut buf = vec![0u8; (end - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut buf)?;
        if let Some(i) = buf.iter().rposition(|c| *c == b'\n') {
            break from + i as u64 + 1;
        }
        end = from;
    };
    if len - start > MAX_TRAILER {
        return Ok((start, None));
    }
    let mut tail = vec![0u8; (len - start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut tail)?;
    Ok((start, Some(tail)))
}

/// The companion signature file of a CSV or TSV export: `FILE.sig`.
pub fn sig_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// Opens an export (format from the extension) and reads its signature: the NDJSON trailer
/// (the last line, read from the end of the file), or for CSV and TSV `sig` (default
/// `FILE.sig`). Only what stops the check is an error (a file that cannot be read, an unknown
/// extension); a damaged file is reported by `verify`.
pub fn load(path: &Path, sig: Option<&Path>) -> Result<LoadedExport, ExportError> {
    let format = Format::of_path(path).ok_or_else(|| {
        ExportError::Unsupported(format!(
            "{}: the file name must end in .ndjson, .csv or .tsv (the export's format)",
            path.display()
        ))
    })?;
    let mut file = File::open(path).map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    let mut loaded = LoadedExport {
        format,
        path: path.to_path_buf(),
        signed_len: len,
        signature: Err(String::new()),
        trailer: None,
        request_line: None,
    };
    if format == Format::Ndjson {
        let (start, tail) = last_line(&mut file, len).map_err(io(path))?;
        loaded.signed_len = start;
        let trailer = tail.as_deref().and_then(|t| {
            let line = t.strip_suffix(b"\n")?;
            serde_json::from_slice::<Trailer>(line)
                .ok()
                .filter(|t| t.kind == "trailer")
        });
        match trailer {
            Some(t) => {
                loaded.signature = Ok(t.signature.clone());
                loaded.trailer = Some(t);
            }
            None => {
                loaded.signature = Err(
                    "the last line is not a trailer {\"type\":\"trailer\",...} ending in a newline \
                     (truncated or changed file)"
                        .into(),
                );
            }
        }
    } else {
        let sp = sig.map_or_else(|| sig_path(path), Path::to_path_buf);
        let text = std::fs::read_to_string(&sp).map_err(io(&sp))?;
        // Version 2: the request line, then the signature; version 1: the signature alone.
        let mut lines: Vec<&str> = text
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        while lines.last() == Some(&"") {
            lines.pop();
        }
        match lines[..] {
            [signature] => loaded.signature = Ok(signature.to_string()),
            [request, signature] => {
                loaded.request_line = Some(request.to_string());
                loaded.signature = Ok(signature.to_string());
            }
            _ => {
                loaded.signature = Err(format!(
                    "{} must hold the request line and the signature line (or, for an export \
                     of version 1, the signature line alone), not {} lines",
                    sp.display(),
                    lines.len()
                ))
            }
        }
    }
    Ok(loaded)
}

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportReport {
    pub format: String,
    /// 2: the export has a request line; 1: it has none (written before version 2).
    pub version: u8,
    /// The request line of a version 2 export: under the signature when `signature_valid`.
    pub request: Option<ExportRequest>,
    /// The keyid of the export signature (None if it cannot be read).
    pub signed_by: Option<i32>,
    pub signature_valid: bool,
    pub rows: u64,
    /// Rows whose own protection verified.
    pub rows_verified: u64,
    /// Rows whose protection cannot be checked from the export with the keys given (no key
    /// for their keyid; version 3 rows of a CSV or TSV export, which carries no statements).
    pub rows_not_checkable: u64,
    pub notes: Vec<String>,
    pub error_count: u64,
    pub errors: Vec<String>,
}

impl ExportReport {
    pub(super) fn error(&mut self, e: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_MESSAGES {
            self.errors.push(e);
        }
    }

    pub(super) fn not_checkable(&mut self, e: String) {
        self.rows_not_checkable += 1;
        if self.notes.len() < MAX_MESSAGES {
            self.notes.push(e);
        }
    }
}

/// Checks an export with `keys`: the signature over the exact bytes, then each row's own
/// protection (version 3 rows of NDJSON exports against the statements in the file). The file
/// is read twice as a stream (signature, then rows): memory holds one line or record at a
/// time. Only a read failure is an error; everything found is in the report.
pub fn verify(loaded: &LoadedExport, keys: &KeyRing) -> Result<ExportReport, ExportError> {
    let path = loaded.path.as_path();
    verify_reads(loaded, keys, &|| File::open(path))
}

/// `verify`, with each of its two reads of the file opened by `open`.
pub(super) fn verify_reads<R: Read>(
    loaded: &LoadedExport,
    keys: &KeyRing,
    open: &dyn Fn() -> std::io::Result<R>,
) -> Result<ExportReport, ExportError> {
    let path = loaded.path.as_path();
    let signed =
        || -> Result<_, ExportError> { Ok(open().map_err(io(path))?.take(loaded.signed_len)) };
    let mut rep = ExportReport {
        format: loaded.format.name().into(),
        version: 1,
        ..ExportReport::default()
    };
    // The hash of the bytes the valid signature covers, to compare with the second pass's.
    let first_pass = check_signature(loaded, keys, signed()?, &mut rep)?;
    if let Some(line) = &loaded.request_line {
        rep.version = 2;
        match serde_json::from_str::<ExportRequest>(line) {
            Ok(r) => rep.request = Some(r),
            Err(e) => rep.error(format!(
                "the request line (the signature file's first line) cannot be read: {e}"
            )),
        }
    }
    let mut rows = RowCheck {
        keys,
        format: loaded.format,
        batches: Batches::default(),
    };
    let mut lines = Lines::new(HashingReader::new(signed()?));
    let mut body = Body {
        lines: &mut lines,
        rows: &mut rows,
        rep: &mut rep,
        path,
        neutral: loaded.request_line.is_some(),
    };
    match loaded.format {
        Format::Ndjson => body.ndjson()?,
        Format::Csv => body.csv()?,
        Format::Tsv => body.tsv()?,
    }
    if loaded.format == Format::Ndjson
        && let Some(t) = &loaded.trailer
        && t.rows != rep.rows
    {
        rep.error(format!(
            "the trailer says {} rows, the file has {}",
            t.rows, rep.rows
        ));
    }
    check_request(loaded, &mut rep);
    let second_pass = lines.finish().map_err(io(path))?.finish();
    if first_pass.is_some_and(|h| h != second_pass) {
        rep.error(
            "the file changed while it was being checked: the rows read are not the bytes the \
             signature covers"
                .into(),
        );
    }
    if rep.rows_not_checkable > rep.notes.len() as u64 {
        let more = rep.rows_not_checkable - rep.notes.len() as u64;
        rep.notes
            .push(format!("... and {more} more rows not checkable"));
    }
    Ok(rep)
}

/// The export's signature over its bytes (CSV and TSV: the request line, a newline, then the
/// file), read once in chunks. Returns the hash of what a valid signature covered.
pub(super) fn check_signature<R: Read>(
    loaded: &LoadedExport,
    keys: &KeyRing,
    signed: R,
    rep: &mut ExportReport,
) -> Result<Option<([u8; 32], u64)>, ExportError> {
    let prefix = loaded
        .request_line
        .as_ref()
        .map(|r| format!("{r}\n"))
        .unwrap_or_default();
    let p = match loaded.signature.as_deref().map(RowProtection::parse) {
        Err(e) => {
            rep.error(e.to_string());
            return Ok(None);
        }
        Ok(Err(e)) => {
            rep.error(format!("the export signature cannot be read: {e}"));
            return Ok(None);
        }
        Ok(Ok(p)) => p,
    };
    rep.signed_by = Some(p.keyid);
    if let Some(t) = &loaded.trailer
        && t.key_id != p.keyid
    {
        rep.error(format!(
            "the trailer names keyId {} but its signature keyid {}",
            t.key_id, p.keyid
        ));
    }
    let mut read = HashingReader::new(signed);
    match keys.verify_detached_reader(&p, Scope::File, &mut prefix.as_bytes().chain(&mut read)) {
        Ok(()) => {
            rep.signature_valid = true;
            return Ok(Some(read.finish()));
        }
        Err(DetachedError::Verify(VerifyError::Unreadable(e))) => {
            return Err(io(&loaded.path)(std::io::Error::other(e)));
        }
        Err(DetachedError::Verify(e)) => rep.error(format!(
            "the export signature does not verify ({e}): the file was changed"
        )),
        Err(DetachedError::NoKey(id)) => rep.error(format!(
            "no key is given for the signature's keyid {id}: give the server's public key \
                 with --public-key {id}=FILE (GET /api/v1/keys publishes it)"
        )),
        Err(other) => rep.error(format!("the export signature cannot be checked: {other}")),
    }
    Ok(None)
}

/// Checks each row read back from an export: its own protection, with the batch statements the
/// file carried so far.
pub(super) struct RowCheck<'a> {
    keys: &'a KeyRing,
    format: Format,
    batches: Batches,
}

impl RowCheck<'_> {
    pub(super) fn check(&self, rep: &mut ExportReport, r: AuditRecord) {
        rep.rows += 1;
        let name = format!("node {} row {} (pk {})", r.node_id, r.sequence_number, r.pk);
        let batched = r
            .row_protection
            .as_deref()
            .is_some_and(|p| RowProtection::batch_first(p).is_some());
        if batched && self.format != Format::Ndjson {
            rep.not_checkable(format!(
                "{name}: batched rows (versions 3 and 4) need their batch statement, which only \
                 NDJSON exports carry"
            ));
            return;
        }
        match verify_row(self.keys, &self.batches, &r) {
            Ok(()) => rep.rows_verified += 1,
            // Unverified is not verified: an error, as in verifylog and for archive segments.
            Err(RowFailure::UnknownKeyId(k)) => rep.error(format!(
                "{name}: no key is given for its keyid {k} (give it with --public-key {k}=FILE, \
                 or configure it)"
            )),
            Err(e) => rep.error(format!("{name}: {e}")),
        }
    }
}

/// The body of an export being checked: where its lines come from, and where the rows and
/// findings go.
struct Body<'b, 'k, R> {
    lines: &'b mut Lines<R>,
    rows: &'b mut RowCheck<'k>,
    rep: &'b mut ExportReport,
    path: &'b Path,
    /// Version 2 CSV and TSV text fields carry a `'` before a formula (section 9.5).
    neutral: bool,
}

impl<R: Read> Body<'_, '_, R> {
    /// NDJSON: the request line (first), batch statements and rows.
    fn ndjson(&mut self) -> Result<(), ExportError> {
        while let Some((n, line)) = self.lines.next_line().map_err(io(self.path))? {
            let line = match line {
                Ok(l) => l.strip_suffix('\n').unwrap_or(l),
                Err(e) => {
                    self.rep.error(format!("line {n}: {e}"));
                    continue;
                }
            };
            let mut v: serde_json::Value = match serde_json::from_str(line) {
                Ok(v) => v,
                Err(e) => {
                    self.rep.error(format!("line {n}: {e}"));
                    continue;
                }
            };
            if v.get("type").and_then(serde_json::Value::as_str) == Some("request") {
                if n == 1 {
                    self.rep.version = 2;
                    match serde_json::from_value::<ExportRequest>(v) {
                        Ok(r) => self.rep.request = Some(r),
                        Err(e) => self.rep.error(format!("line 1: request line: {e}")),
                    }
                } else {
                    self.rep.error(format!(
                        "line {n}: a request line may only be the first line"
                    ));
                }
                continue;
            }
            if v.get("type").is_some() {
                let kind = v
                    .as_object_mut()
                    .and_then(|o| o.remove("type"))
                    .unwrap_or_default();
                if kind != "batch" {
                    self.rep
                        .error(format!("line {n}: unexpected line type {kind}"));
                    continue;
                }
                match serde_json::from_value::<BatchRecord>(v) {
                    Ok(b) => self.rows.batches.insert(self.rows.keys, b),
                    Err(e) => self.rep.error(format!("line {n}: batch statement: {e}")),
                }
                continue;
            }
            match serde_json::from_value::<AuditRecord>(v) {
                Ok(r) => self.rows.check(self.rep, r),
                Err(e) => self.rep.error(format!("line {n}: {e}")),
            }
        }
        Ok(())
    }

    /// CSV: the header record, then one record per row (RFC 4180).
    fn csv(&mut self) -> Result<(), ExportError> {
        while let Some((n, record)) = self.lines.next_csv().map_err(io(self.path))? {
            let parsed = record.and_then(|text| {
                let mut pos = 0;
                match next_csv_record(text, &mut pos) {
                    Ok(Some(fields)) if pos == text.len() => Ok(fields),
                    Ok(_) => Err("a field is followed by something other than , or CRLF".into()),
                    Err(e) => Err(e),
                }
            });
            match parsed {
                Ok(fields) => self.take_fields((n, "record", ","), fields),
                Err(e) => {
                    self.rep
                        .error(format!("record {n}: {e}; the rest is not read"));
                    break;
                }
            }
        }
        Ok(())
    }

    /// TSV: the header line, then one line per row.
    fn tsv(&mut self) -> Result<(), ExportError> {
        while let Some((n, line)) = self.lines.next_line().map_err(io(self.path))? {
            let line = match line {
                Ok(l) => match l.strip_suffix('\n') {
                    Some(l) => l,
                    None => {
                        self.rep
                            .error("the last line does not end with a newline".into());
                        l
                    }
                },
                Err(e) => {
                    self.rep.error(format!("line {n}: {e}"));
                    continue;
                }
            };
            let fields: Result<Vec<Option<String>>, String> =
                line.split('\t').map(tsv_unescape).collect();
            match fields {
                Ok(f) => self.take_fields((n, "line", "\\t"), f),
                Err(e) => self.rep.error(format!("line {n}: {e}")),
            }
        }
        Ok(())
    }

    /// The fields of CSV record or TSV line `n` (with what it is called and the separator as the
    /// header is quoted): the first must be the header, the others are rows.
    fn take_fields(
        &mut self,
        (n, unit, separator): (usize, &str, &str),
        fields: Vec<Option<String>>,
    ) {
        if n == 1 {
            if !is_header(&fields) {
                self.rep.error(format!(
                    "{unit} 1 is not the header {}",
                    COLUMNS.join(separator)
                ));
            }
            return;
        }
        match row_of(fields, self.neutral) {
            Ok(r) => self.rows.check(self.rep, r),
            Err(e) => self.rep.error(format!("{unit} {n}: {e}")),
        }
    }
}

/// The signed request must fit the file: its type, version, format and limit.
pub(super) fn check_request(loaded: &LoadedExport, rep: &mut ExportReport) {
    let Some(r) = &rep.request else { return };
    let mut found = Vec::new();
    if r.kind != "request" {
        found.push(format!(
            "the request line's type is {:?}, not \"request\"",
            r.kind
        ));
    }
    if r.version != EXPORT_VERSION {
        found.push(format!(
            "the request line names version {:?}; this verifier reads {EXPORT_VERSION:?}",
            r.version
        ));
    }
    if r.format != loaded.format.name() {
        found.push(format!(
            "the request line names format {:?}, but the file is {}",
            r.format,
            loaded.format.name()
        ));
    }
    if let Some(limit) = r.limit
        && rep.rows > limit.max(0) as u64
    {
        found.push(format!(
            "the request line has limit {limit}, but the file has {} rows",
            rep.rows
        ));
    }
    for e in found {
        rep.error(e);
    }
}
