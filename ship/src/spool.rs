//! A syslog listener's spool (docs/HSM-LOGS.md "Receiving syslog"): the SoftHSM2 lines it
//! received, appended as a syslog file's lines to `<state_dir>/<name>.spool`, which the agent
//! then reads like any log file, position file and pks included. The spool's first line names
//! it uniquely (source, time in nanoseconds, process id), so each spool has a file id of its
//! own and a new spool never repeats an old one's pks.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::tail::{Position, head_matches};

/// A spool is started anew once it holds this much and all of it is shipped.
pub const ROTATE_BYTES: u64 = 8 << 20;

/// Where source `name`'s spool is.
pub fn path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("{name}.spool"))
}

pub struct Spool {
    path: PathBuf,
    name: String,
    file: File,
    len: u64,
    /// The most bytes it takes (`set_max`); none by default.
    max: u64,
    /// Whether the last line offered was refused.
    refusing: bool,
}

/// A line the spool did not take; nothing of it is in the spool.
#[derive(Debug)]
pub struct Refused {
    /// Why: the spool is full, or the write failed (a full disk).
    pub reason: String,
    /// Whether the line before it was taken: the first of a run of refusals, to report once.
    pub first: bool,
}

impl Spool {
    /// Opens source `name`'s spool to append to it, or starts one. A last line without its
    /// line end (the agent stopped within a write) is cut off: it was never shipped.
    pub fn open(state_dir: &Path, name: &str) -> anyhow::Result<Spool> {
        let path = path(state_dir, name);
        let mut file = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Spool::create(&path, name);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        let mut len = file.metadata()?.len();
        // A line is at most a message (64 KiB) and its header.
        let window = len.min(256 * 1024);
        let mut tail = vec![0u8; window as usize];
        file.seek(SeekFrom::Start(len - window))?;
        file.read_exact(&mut tail)?;
        if tail.last() != Some(&b'\n') {
            let keep = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            len = len - window + keep as u64;
            file.set_len(len)
                .with_context(|| format!("cannot cut the partial line of {}", path.display()))?;
            if len == 0 {
                drop(file);
                std::fs::remove_file(&path)?;
                return Spool::create(&path, name);
            }
        }
        Ok(Spool {
            path,
            name: name.to_string(),
            file,
            len,
            max: u64::MAX,
            refusing: false,
        })
    }

    /// A new spool at `path` (replacing what is there), its first line written and synced.
    fn create(path: &Path, name: &str) -> anyhow::Result<Spool> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let header = format!(
            "# auditseal-ship spool of source {name}, begun at {now} ns by process {}\n",
            std::process::id()
        );
        let tmp = path.with_extension("spool.tmp");
        let mut f =
            File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(header.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        Ok(Spool {
            path: path.to_path_buf(),
            name: name.to_string(),
            file,
            len: header.len() as u64,
            max: u64::MAX,
            refusing: false,
        })
    }

    /// From now on the spool takes at most `max` bytes (a spool already larger takes nothing
    /// until it is started anew).
    pub fn set_max(&mut self, max: u64) {
        self.max = max;
    }

    /// Appends one line (without its line end) in one write, so a reader sees it whole or
    /// not yet ended (and waits for it). A line that would take the spool past its most, or
    /// whose write fails, is refused and leaves nothing behind (a failed write's part is cut
    /// off, so the next line does not continue it).
    pub fn append(&mut self, line: &str) -> Result<(), Refused> {
        let result = self.write_line(line);
        let first = !self.refusing;
        self.refusing = result.is_err();
        result.map_err(|reason| Refused { reason, first })
    }

    fn write_line(&mut self, line: &str) -> Result<(), String> {
        let n = line.len() as u64 + 1;
        if self.len + n > self.max {
            return Err(format!(
                "{} is full ({} MiB, spool_max_mb): lines are lost until the server takes \
                 what it holds",
                self.path.display(),
                self.max >> 20
            ));
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        if let Err(e) = self.file.write_all(&buf) {
            let cut = self.file.set_len(self.len);
            return Err(match cut {
                Ok(()) => format!("cannot append to {}: {e}", self.path.display()),
                Err(c) => format!(
                    "cannot append to {}: {e}; nor cut off the part written: {c}",
                    self.path.display()
                ),
            });
        }
        self.len += n;
        Ok(())
    }

    /// Flushes what was appended to the disk (a power cut then loses none of it).
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts a new spool when this one holds more than `limit` bytes and `shipped` (the
    /// source's position) is at its end: everything in it is acknowledged, so nothing is lost.
    /// Returns whether it did.
    pub fn rotate_if_shipped(
        &mut self,
        shipped: Option<&Position>,
        limit: u64,
    ) -> anyhow::Result<bool> {
        let Some(pos) = shipped else {
            return Ok(false);
        };
        if self.len <= limit || pos.offset != self.len || !head_matches(&self.path, pos) {
            return Ok(false);
        }
        let max = self.max;
        *self = Spool::create(&self.path, &self.name)?;
        self.max = max;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;
    use crate::tail::{plan, read_segment};

    /// Ships what `plan` says into `got` (line numbers and file ids), as the agent does.
    fn pass(spool: &Path, pos_file: &Path, got: &mut Vec<(String, u64)>) {
        let saved = Position::load(pos_file).unwrap();
        for seg in plan(spool, Format::Softhsm2Syslog, saved.as_ref()).unwrap() {
            read_segment(
                &seg,
                Format::Softhsm2Syslog,
                10,
                |records, pos| {
                    got.extend(records.iter().map(|r| (pos.file_id.clone(), r.offset)));
                    Ok(())
                },
                |pos| pos.save(pos_file),
            )
            .unwrap();
        }
    }

    const LINE: &str = "Dec  3 11:55:01 h pkcs11-tool: OSToken.cpp(64): Opened token";

    #[test]
    fn survives_a_restart_cuts_a_partial_line_and_rotates_once_shipped() {
        let dir = tempfile::tempdir().unwrap();
        let pos_file = dir.path().join("net.pos");
        let mut got = Vec::new();
        let mut s = Spool::open(dir.path(), "net").unwrap();
        pass(&s.path, &pos_file, &mut got);
        assert!(got.is_empty());
        s.append(LINE).unwrap();
        s.append(LINE).unwrap();
        pass(&s.path, &pos_file, &mut got);
        assert_eq!(got.len(), 2);
        // The same line twice is two records: two offsets, two pks.
        assert_ne!(got[0].1, got[1].1);

        // A restart within a write: the partial line goes, the rest stays.
        drop(s);
        let p = path(dir.path(), "net");
        let before = std::fs::read(&p).unwrap();
        std::fs::write(
            &p,
            [before.as_slice(), b"Dec  3 11:55:02 h pkcs11-to"].concat(),
        )
        .unwrap();
        let mut s = Spool::open(dir.path(), "net").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), before);
        assert_eq!(s.len(), before.len() as u64);
        s.append(LINE).unwrap();
        pass(&s.path, &pos_file, &mut got);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].0, got[0].0);

        // Not rotated while a line is unshipped, or while under the limit.
        s.append(LINE).unwrap();
        let pos = Position::load(&pos_file).unwrap();
        assert!(!s.rotate_if_shipped(pos.as_ref(), 10).unwrap());
        pass(&s.path, &pos_file, &mut got);
        let pos = Position::load(&pos_file).unwrap();
        assert!(!s.rotate_if_shipped(pos.as_ref(), 1 << 20).unwrap());
        assert!(s.rotate_if_shipped(pos.as_ref(), 10).unwrap());
        // The new spool is another file: its records get new pks, from its start.
        s.append(LINE).unwrap();
        pass(&s.path, &pos_file, &mut got);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_ne!(got[4].0, got[0].0);
        let unique: std::collections::HashSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len());
    }

    #[test]
    fn a_full_spool_refuses_lines_whole_reports_once_and_takes_again_once_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let pos_file = dir.path().join("net.pos");
        let mut got = Vec::new();
        let mut s = Spool::open(dir.path(), "net").unwrap();
        let room = 3 * (LINE.len() as u64 + 1);
        s.set_max(s.len() + room);
        for _ in 0..3 {
            s.append(LINE).unwrap();
        }
        let full = std::fs::read(&s.path).unwrap();
        let first = s.append(LINE).unwrap_err();
        assert!(first.first && first.reason.contains("is full"), "{first:?}");
        let again = s.append("x").unwrap_err();
        assert!(!again.first, "reported once per run of refusals");
        assert_eq!(
            std::fs::read(&s.path).unwrap(),
            full,
            "nothing of them written"
        );
        // Shipped, it is started anew (with the same most) and takes lines again.
        pass(&s.path, &pos_file, &mut got);
        assert_eq!(got.len(), 3);
        let pos = Position::load(&pos_file).unwrap();
        let max = s.max;
        assert!(s.rotate_if_shipped(pos.as_ref(), 0).unwrap());
        assert_eq!(s.max, max, "the most is kept");
        s.append(LINE).unwrap();
        pass(&s.path, &pos_file, &mut got);
        assert_eq!(got.len(), 4);
    }
}
