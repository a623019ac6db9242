//! auditseal-ship: reads HSM logs, parses and redacts each source's format, and sends one event
//! per logged operation to auditseal's bulk endpoint, exactly once (docs/HSM-LOGS.md).
//!
//! The parsers and the analysis do no network I/O; `auditseal-db analyze` uses them too.

pub mod analyze;
pub mod config;
pub mod craton;
pub mod dinamo;
pub mod listen;
pub mod record;
pub mod rusthsm;
pub mod send;
pub mod softhsm;
pub mod spool;
pub mod spy;
pub mod syslog;
pub mod tail;

use std::io::BufRead;

pub use record::{Record, Status};

/// A log format: fed complete lines in order, emits records as they complete.
pub trait Parser: Send {
    /// The event's `module` for this format.
    fn module(&self) -> &'static str;

    /// One complete line without its line end; `offset` is its first byte in the file, `next`
    /// the byte after its line end, `lineno` its number from 1.
    fn line(&mut self, line: &str, offset: u64, next: u64, lineno: u64, out: &mut Vec<Record>);

    /// The input is complete (a whole file analysed): a record still open is emitted as it is.
    /// The agent never calls this: it waits for the rest of the record.
    fn finish(&mut self, _out: &mut Vec<Record>) {}

    /// Continues from a record's `carry` (a chain's last hash, a counter).
    fn resume(&mut self, _carry: Option<&str>) {}
}

/// The formats a source may have (`format` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// OpenSC pkcs11-spy's plaintext call log.
    Pkcs11Spy,
    /// SoftHSM2's lines in a syslog file, or received as syslog messages.
    Softhsm2Syslog,
    /// Dinamo's native event log.
    Dinamo,
    /// Craton HSM's chained JSON Lines audit log.
    Craton,
    /// rust-hsm's observe-core JSON lines.
    RustHsm,
}

impl Format {
    pub fn parser(self) -> Box<dyn Parser> {
        match self {
            Format::Pkcs11Spy => Box::new(spy::Spy::new()),
            Format::Softhsm2Syslog => Box::new(softhsm::SoftHsm),
            Format::Dinamo => Box::new(dinamo::Dinamo::new()),
            Format::Craton => Box::new(craton::Craton::new()),
            Format::RustHsm => Box::new(rusthsm::RustHsm),
        }
    }

    pub fn parse(name: &str) -> Option<Format> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }
}

/// Feeds the complete lines of `reader` (which starts at byte `offset`, line `lineno`) to
/// `parser`, calling `each` with every batch of records that complete, of at most `batch`
/// records; a last line without its line end is left alone (it is still being written).
/// Returns the offset after the last complete line. `each` returning false stops the scan.
pub fn scan<R: BufRead>(
    mut reader: R,
    parser: &mut dyn Parser,
    mut offset: u64,
    mut lineno: u64,
    batch: usize,
    mut each: impl FnMut(Vec<Record>) -> anyhow::Result<bool>,
) -> anyhow::Result<u64> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        let next = offset + n as u64;
        let text = String::from_utf8_lossy(&buf[..n - 1]);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        parser.line(text, offset, next, lineno, &mut out);
        offset = next;
        lineno += 1;
        if out.len() >= batch && !each(std::mem::take(&mut out))? {
            return Ok(offset);
        }
    }
    if !out.is_empty() {
        each(out)?;
    }
    Ok(offset)
}

/// Every record of a whole file (for analysis and tests), the open last one included.
pub fn parse_all(data: &[u8], format: Format) -> Vec<Record> {
    let mut parser = format.parser();
    let mut records = Vec::new();
    let _ = scan(data, parser.as_mut(), 0, 1, usize::MAX, |mut r| {
        records.append(&mut r);
        Ok(true)
    });
    // A last line without its line end counts too when the file is complete.
    let tail_start = data
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    if tail_start < data.len() {
        let text = String::from_utf8_lossy(&data[tail_start..]);
        let lineno = data.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        parser.line(
            &text,
            tail_start as u64,
            data.len() as u64,
            lineno,
            &mut records,
        );
    }
    parser.finish(&mut records);
    records
}
