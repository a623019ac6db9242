//! A started sink: encodes rows for its output and delivers them.

use std::sync::Arc;

use crate::config::ForwardFormat;
use crate::evidence::sink::Undelivered;
use crate::evidence::sink::syslog;

use super::pages::Rows;
use super::{Output, message, work};

/// A started sink: where it delivers and how it writes an event.
pub(super) struct Sink {
    pub(super) output: Output,
    pub(super) format: ForwardFormat,
    pub(super) sd_id: String,
}

impl Sink {
    /// Delivers `rows`: all of them, or (UDP) the first `delivered`. The encoding, and a file's
    /// writing, run on the forwarding workers (`work`).
    pub(super) async fn deliver(self: &Arc<Self>, rows: &Rows) -> Result<(), Undelivered> {
        let (this, rows) = (self.clone(), rows.clone());
        let on_worker = |e: String| Undelivered::none(e);
        match &self.output {
            Output::Syslog(sender) => {
                let bytes = work::run(move || {
                    let mut bytes = Vec::new();
                    this.each_message(&rows, |line| syslog::frame_into(&mut bytes, line));
                    bytes
                })
                .await
                .map_err(on_worker)?;
                sender.send(&bytes).await.map_err(Undelivered::none)
            }
            Output::Udp(sender) => {
                let lines = work::run(move || {
                    let mut lines = Vec::new();
                    this.each_message(&rows, |line| lines.push(line.to_string()));
                    lines
                })
                .await
                .map_err(on_worker)?;
                sender.send_lines(&lines).await
            }
            Output::File(file) => {
                let file = file.clone();
                work::run(move || {
                    let mut bytes = Vec::new();
                    for (page, range) in &rows {
                        for t in &page.texts(this.format)[range.clone()] {
                            bytes.extend_from_slice(t.as_bytes());
                            bytes.push(b'\n');
                        }
                    }
                    file.append(&bytes)
                })
                .await
                .map_err(on_worker)?
                .map_err(Undelivered::none)
            }
        }
    }

    /// Each row's RFC 5424 message in turn (`message::write_syslog`), for the syslog outputs.
    fn each_message(&self, rows: &Rows, mut each: impl FnMut(&str)) {
        let header = match &self.output {
            Output::Syslog(s) => s.header(),
            Output::Udp(s) => s.header(),
            Output::File(_) => return,
        };
        let mut line = String::new();
        for (page, range) in rows {
            let texts = &page.texts(self.format)[range.clone()];
            for (r, text) in page.rows[range.clone()].iter().zip(texts) {
                line.clear();
                message::write_syslog(&mut line, header, &self.sd_id, r, text);
                each(&line);
            }
        }
    }
}

/// The first `n` rows of `rows`.
pub(super) fn first_rows(rows: &Rows, mut n: usize) -> Rows {
    let mut out = Vec::new();
    for (page, range) in rows {
        if n == 0 {
            break;
        }
        let take = range.len().min(n);
        out.push((page.clone(), range.start..range.start + take));
        n -= take;
    }
    out
}
