//! A started sink: encodes rows for its output and delivers them.

use std::sync::Arc;

use crate::config::ForwardFormat;
use crate::evidence::sink::Undelivered;
use crate::evidence::sink::syslog;

use super::pages::Rows;
use super::{Output, message, work};

/// About what an event's syslog message takes besides its MSG (framing, header, structured data
/// with a rowProtection), to size the buffer of a delivery.
const MESSAGE_HEAD: usize = 1024;

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
                    // Sized once: grown by doubling, a buffer of a few MiB is copied as often.
                    let texts: usize = (rows.iter())
                        .flat_map(|(page, range)| &page.texts(this.format)[range.clone()])
                        .map(String::len)
                        .sum();
                    let count: usize = rows.iter().map(|(_, range)| range.len()).sum();
                    let mut bytes = Vec::with_capacity(texts + count * MESSAGE_HEAD);
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
                    file.append(rows.iter().flat_map(|(page, range)| {
                        page.texts(this.format)[range.clone()]
                            .iter()
                            .map(String::as_str)
                    }))
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
