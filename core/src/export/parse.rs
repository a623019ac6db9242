//! Reading an export's rows back: NDJSON lines, CSV records and TSV fields.

use std::io::{BufRead, Read};

use crate::format::record::AuditRecord;

use super::*;

/// A line or record's number (from 1) and its text, or why it is not UTF-8.
pub(super) type Numbered<'a> = (usize, Result<&'a str, String>);

/// The lines (or CSV records) of a stream, one at a time, numbered from 1.
pub(super) struct Lines<R> {
    input: std::io::BufReader<R>,
    buf: Vec<u8>,
    n: usize,
}

impl<R: Read> Lines<R> {
    pub(super) fn new(input: R) -> Self {
        Lines {
            input: std::io::BufReader::with_capacity(256 * 1024, input),
            buf: Vec::new(),
            n: 0,
        }
    }

    /// Reads what is left unread (a check that stopped early) and returns the input.
    pub(super) fn finish(mut self) -> std::io::Result<R> {
        std::io::copy(&mut self.input, &mut std::io::sink())?;
        Ok(self.input.into_inner())
    }

    /// The next line with its newline if it has one (the last may not), or why it is not
    /// UTF-8; None at the end.
    pub(super) fn next_line(&mut self) -> std::io::Result<Option<Numbered<'_>>> {
        self.buf.clear();
        if self.input.read_until(b'\n', &mut self.buf)? == 0 {
            return Ok(None);
        }
        self.n += 1;
        Ok(Some((self.n, utf8(&self.buf))))
    }

    /// The next CSV record: lines up to one that leaves no quoted field open (a quoted field
    /// may hold line breaks), with its line ends; None at the end.
    pub(super) fn next_csv(&mut self) -> std::io::Result<Option<Numbered<'_>>> {
        self.buf.clear();
        let mut quotes = 0;
        loop {
            let from = self.buf.len();
            if self.input.read_until(b'\n', &mut self.buf)? == 0 {
                break;
            }
            quotes += self.buf[from..].iter().filter(|c| **c == b'"').count();
            if quotes % 2 == 0 {
                break;
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.n += 1;
        Ok(Some((self.n, utf8(&self.buf))))
    }
}

pub(super) fn utf8(b: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(b).map_err(|e| format!("not UTF-8: {e}"))
}

pub(super) fn is_header(fields: &[Option<String>]) -> bool {
    fields.len() == COLUMNS.len()
        && fields
            .iter()
            .zip(COLUMNS)
            .all(|(f, c)| f.as_deref() == Some(c))
}

/// A row from the 14 exported values (rowVersion 0: it is not exported). `neutral`: a version 2
/// export, whose text fields lose one leading `'` (docs/FORMAT.md section 9.5).
pub(super) fn row_of(mut f: Vec<Option<String>>, neutral: bool) -> Result<AuditRecord, String> {
    if neutral {
        for (i, v) in f.iter_mut().enumerate() {
            if let Some(t) = v
                && !INTEGER_COLUMNS.contains(&i)
                && t.starts_with('\'')
            {
                t.remove(0);
            }
        }
    }
    let f: [Option<String>; 14] = f
        .try_into()
        .map_err(|f: Vec<_>| format!("{} fields, expected 14", f.len()))?;
    let [
        pk,
        node_id,
        seq,
        ts,
        event_type,
        event_status,
        auth_token,
        service,
        module,
        custom_id,
        search_detail1,
        search_detail2,
        additional_details,
        row_protection,
    ] = f;
    let req = |v: Option<String>, i: usize| v.ok_or_else(|| format!("{} is null", COLUMNS[i]));
    let int = |v: Option<String>, i: usize| {
        req(v, i)?
            .parse::<i64>()
            .map_err(|_| format!("{} is not an integer", COLUMNS[i]))
    };
    Ok(AuditRecord {
        pk: req(pk, 0)?,
        node_id: req(node_id, 1)?,
        sequence_number: int(seq, 2)?,
        time_stamp: int(ts, 3)?,
        event_type: req(event_type, 4)?,
        event_status: req(event_status, 5)?,
        auth_token: req(auth_token, 6)?,
        service: req(service, 7)?,
        module: req(module, 8)?,
        custom_id,
        search_detail1,
        search_detail2,
        additional_details,
        row_version: 0,
        row_protection,
    })
}

/// One RFC 4180 record from `pos` (which moves past its CRLF); None at the end. An empty
/// unquoted field is null, a quoted one a string.
pub fn next_csv_record(s: &str, pos: &mut usize) -> Result<Option<Vec<Option<String>>>, String> {
    let b = s.as_bytes();
    if *pos >= b.len() {
        return Ok(None);
    }
    let mut fields = Vec::new();
    loop {
        if b.get(*pos) == Some(&b'"') {
            let mut v = String::new();
            *pos += 1;
            loop {
                let i = s[*pos..].find('"').ok_or("a quoted field is not closed")?;
                v.push_str(&s[*pos..*pos + i]);
                *pos += i + 1;
                if b.get(*pos) == Some(&b'"') {
                    v.push('"');
                    *pos += 1;
                } else {
                    break;
                }
            }
            fields.push(Some(v));
        } else {
            let end = s[*pos..]
                .find([',', '\r', '\n'])
                .map_or(b.len(), |i| *pos + i);
            let raw = &s[*pos..end];
            if raw.contains('"') {
                return Err("a quote inside an unquoted field".into());
            }
            fields.push((!raw.is_empty()).then(|| raw.to_string()));
            *pos = end;
        }
        match (b.get(*pos), b.get(*pos + 1)) {
            (Some(b','), _) => *pos += 1,
            (Some(b'\r'), Some(b'\n')) => {
                *pos += 2;
                return Ok(Some(fields));
            }
            (None, _) => return Err("the last record does not end with CRLF".into()),
            _ => return Err("a field is followed by something other than , or CRLF".into()),
        }
    }
}

/// One TSV field: `\N` is null; `\\` `\t` `\n` `\r` are unescaped; any other `\` is an error.
pub fn tsv_unescape(f: &str) -> Result<Option<String>, String> {
    if f == "\\N" {
        return Ok(None);
    }
    let mut out = String::with_capacity(f.len());
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('\\') => '\\',
            Some('t') => '\t',
            Some('n') => '\n',
            Some('r') => '\r',
            other => return Err(format!("unknown escape \\{}", other.unwrap_or(' '))),
        });
    }
    Ok(Some(out))
}
