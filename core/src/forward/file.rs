//! A file sink: events appended one line each, synced before they count as delivered, and the
//! file reopened when asked (SIGHUP, after logrotate moved it away).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::evidence::sink::{Transport, Undelivered};

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

    /// The flag that makes the next delivery reopen the file.
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }
}

/// Appends `lines` and syncs. A write that fails part way is cut back to where it began, so a
/// retry never leaves half a line in front of the whole one.
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
        // Opened again at the next try: the error may have been the file's (removed, a full
        // disk), not the path's.
        *slot = None;
        return Err(format!("cannot write to it: {e}"));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Transport for FileSender {
    type Item = String;

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn deliver(&self, items: &[String]) -> Result<(), Undelivered> {
        let mut bytes = Vec::with_capacity(items.iter().map(|l| l.len() + 1).sum());
        for l in items {
            bytes.extend_from_slice(l.as_bytes());
            bytes.push(b'\n');
        }
        let (path, file) = (self.path.clone(), self.file.clone());
        let reopen = self.reopen.swap(false, Ordering::SeqCst);
        tokio::task::spawn_blocking(move || {
            let mut slot = file.lock().unwrap_or_else(|e| e.into_inner());
            append(&path, &mut slot, reopen, &bytes)
        })
        .await
        .map_err(|e| Undelivered::none(e.to_string()))?
        .map_err(|reason| Undelivered::none(format!("{}: {reason}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_lines_and_reopens_a_file_moved_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let sink = FileSender::new(path.clone());
        sink.deliver(&["a".into(), "b".into()]).await.unwrap();
        let rotated = dir.path().join("events.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        // Without a reopen the open file (now the rotated one) takes the line.
        sink.deliver(&["c".into()]).await.unwrap();
        sink.reopen_flag().store(true, Ordering::SeqCst);
        sink.deliver(&["d".into()]).await.unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "a\nb\nc\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "d\n");
    }

    #[tokio::test]
    async fn a_path_that_cannot_be_opened_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("events.jsonl");
        let e = FileSender::new(path.clone())
            .deliver(&["a".into()])
            .await
            .unwrap_err();
        assert_eq!(e.delivered, 0);
        assert!(e.reason.contains("no-such-dir"), "{}", e.reason);
    }
}
