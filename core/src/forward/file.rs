//! A file sink: events appended one line each, synced before they count as delivered, and the
//! file reopened when asked (SIGHUP, after logrotate moved it away).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Where a file sink writes. Cloning shares the open file.
#[derive(Clone)]
pub struct FileSender {
    path: PathBuf,
    file: Arc<Mutex<Option<File>>>,
    /// Set by a reload: the next delivery opens the path again.
    reopen: Arc<AtomicBool>,
}

impl FileSender {
    pub fn new(path: PathBuf) -> FileSender {
        FileSender {
            path,
            file: Arc::default(),
            reopen: Arc::default(),
        }
    }

    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }

    pub fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    /// Appends `lines` (whole lines, each ending in a line feed) and syncs them; blocks. On an
    /// error nothing of them stays in the file (it is cut back to its length before) and the
    /// reason names the file.
    pub fn append(&self, lines: &[u8]) -> Result<(), String> {
        let reopen = self.reopen.swap(false, Ordering::SeqCst);
        let mut slot = self.file.lock().unwrap_or_else(|e| e.into_inner());
        append(&self.path, &mut slot, reopen, lines)
            .map_err(|reason| format!("{}: {reason}", self.path.display()))
    }
}

fn append(
    path: &PathBuf,
    slot: &mut Option<File>,
    reopen: bool,
    lines: &[u8],
) -> Result<(), String> {
    if reopen || slot.is_none() {
        *slot = None;
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| format!("cannot open it: {e}"))?;
        *slot = Some(f);
    }
    let f = slot.as_mut().expect("opened above");
    let before = f
        .metadata()
        .map_err(|e| format!("cannot read its length: {e}"))?
        .len();
    let written = f.write_all(lines).and_then(|()| f.sync_data());
    if let Err(e) = written {
        let _ = f.set_len(before);
        *slot = None;
        return Err(format!("cannot write to it: {e}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines_and_reopens_a_file_moved_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let sink = FileSender::new(path.clone());
        sink.append(b"a\nb\n").unwrap();
        let rotated = dir.path().join("events.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        // Without a reopen the open file (now the rotated one) takes the line.
        sink.append(b"c\n").unwrap();
        sink.reopen_flag().store(true, Ordering::SeqCst);
        sink.append(b"d\n").unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "a\nb\nc\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "d\n");
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("events.jsonl");
        let e = FileSender::new(path.clone()).append(b"a\n").unwrap_err();
        assert!(e.contains("no-such-dir"), "{e}");
    }
}
