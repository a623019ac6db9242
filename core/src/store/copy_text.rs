//! A batch's rows in PostgreSQL's COPY text format: the batched device writes them with one
//! `COPY ... FROM STDIN`, which PostgreSQL stores a page at a time, where an `INSERT` (even
//! of many rows) writes and logs each row on its own.

use crate::format::record::AuditRecord;

/// The COPY of every column of AuditRecordData, in the order `rows` writes them.
pub(crate) const COPY_ROWS: &str = "COPY auditrecorddata (pk, nodeid, sequencenumber, \
     \"timestamp\", eventtype, eventstatus, authtoken, service, module, customid, searchdetail1, \
     searchdetail2, additionaldetails, rowversion, rowprotection) FROM STDIN";

/// `rows` as COPY text: one line per row, columns separated by a tab, NULL as `\N`, and a
/// backslash, tab, newline or carriage return in a value escaped with a backslash (the
/// characters COPY's text format reads specially).
pub(crate) fn rows(rows: &[AuditRecord]) -> Vec<u8> {
    let size: usize = rows.iter().map(|r| 64 + r.stored_bytes()).sum();
    let mut out = Vec::with_capacity(size);
    for r in rows {
        text(&mut out, &r.pk);
        tab_text(&mut out, &r.node_id);
        tab_number(&mut out, r.sequence_number);
        tab_number(&mut out, r.time_stamp);
        for t in [
            &r.event_type,
            &r.event_status,
            &r.auth_token,
            &r.service,
            &r.module,
        ] {
            tab_text(&mut out, t);
        }
        for t in [
            &r.custom_id,
            &r.search_detail1,
            &r.search_detail2,
            &r.additional_details,
        ] {
            tab_maybe(&mut out, t);
        }
        tab_number(&mut out, i64::from(r.row_version));
        tab_maybe(&mut out, &r.row_protection);
        out.push(b'\n');
    }
    out
}

fn tab_text(out: &mut Vec<u8>, s: &str) {
    out.push(b'\t');
    text(out, s);
}

fn tab_maybe(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        Some(s) => tab_text(out, s),
        None => out.extend_from_slice(b"\t\\N"),
    }
}

fn tab_number(out: &mut Vec<u8>, n: i64) {
    use std::io::Write;
    out.push(b'\t');
    let _ = write!(out, "{n}");
}

fn text(out: &mut Vec<u8>, s: &str) {
    let special = |b: &u8| matches!(b, b'\\' | b'\t' | b'\n' | b'\r');
    if !s.as_bytes().iter().any(special) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_nulls_and_escapes() {
        let mut r = AuditRecord::example();
        r.pk = "p\\k".into();
        r.sequence_number = -7;
        r.custom_id = Some("a\tb\nc\rd".into());
        r.search_detail1 = None;
        r.search_detail2 = Some(String::new());
        r.additional_details = Some("<x>\\N</x>".into());
        r.row_version = 3;
        r.row_protection = None;
        let line = String::from_utf8(rows(std::slice::from_ref(&r))).unwrap();
        let want = format!(
            "p\\\\k\t{}\t-7\t{}\t{}\t{}\t{}\t{}\t{}\ta\\tb\\nc\\rd\t\\N\t\t<x>\\\\N</x>\t3\t\\N\n",
            r.node_id,
            r.time_stamp,
            r.event_type,
            r.event_status,
            r.auth_token,
            r.service,
            r.module
        );
        assert_eq!(line, want);
        assert_eq!(line.matches('\t').count(), 14);
    }
}
