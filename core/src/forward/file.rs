//! A file sink: events appended one line each, synced before they count as delivered, and the
//! file reopened when asked (SIGHUP, after logrotate moved it away).

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
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

    /// Appends `lines`, each followed by a line feed, and syncs them; blocks. They are written
    /// from where they are (`writev`), not copied into one buffer first. On an error nothing of
    /// them stays in the file (it is cut back to its length before) and the reason names the
    /// file.
    pub fn append<'a>(&self, lines: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        let reopen = self.reopen.swap(false, Ordering::SeqCst);
        let mut slot = self.file.lock().unwrap_or_else(|e| e.into_inner());
        append(&self.path, &mut slot, reopen, lines)
            .map_err(|reason| format!("{}: {reason}", self.path.display()))
    }
}

fn append<'a>(
    path: &PathBuf,
    slot: &mut Option<File>,
    reopen: bool,
    lines: impl IntoIterator<Item = &'a str>,
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
    let mut slices: Vec<IoSlice> = lines
        .into_iter()
        .flat_map(|l| [IoSlice::new(l.as_bytes()), IoSlice::new(b"\n")])
        .collect();
    let written = write_all_vectored(f, &mut slices).and_then(|()| f.sync_data());
    if let Err(e) = written {
        let _ = f.set_len(before);
        *slot = None;
        return Err(format!("cannot write to it: {e}"));
    }
    Ok(())
}

/// Writes every byte of `slices`, as many at a time as the system takes (`Write::write_all`
/// for several buffers).
fn write_all_vectored(f: &mut File, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        match f.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
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
        sink.append(["a", "b"]).unwrap();
        let rotated = dir.path().join("events.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        // Without a reopen the open file (now the rotated one) takes the line.
        sink.append(["c"]).unwrap();
        sink.reopen_flag().store(true, Ordering::SeqCst);
        sink.append(["d"]).unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "a\nb\nc\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "d\n");
    }

    #[test]
    fn appends_more_lines_than_one_system_call_takes() {
        // Linux takes at most 1,024 buffers a call (IOV_MAX): 3,000 lines are 6,000.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let lines: Vec<String> = (0..3000).map(|i| format!("line {i}")).collect();
        FileSender::new(path.clone())
            .append(lines.iter().map(String::as_str))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().collect::<Vec<_>>(), lines);
        assert!(text.ends_with("line 2999\n"));
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("events.jsonl");
        let e = FileSender::new(path.clone()).append(["a"]).unwrap_err();
        assert!(e.contains("no-such-dir"), "{e}");
    }
}
