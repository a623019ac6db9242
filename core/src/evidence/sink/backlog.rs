//! The durable backlog of one receiver: what waits to be delivered, oldest first, as one JSON
//! value per line in a file of the data directory (mode 0600). Each new item is appended and
//! synced before it counts as queued; delivered items are removed by writing the rest to a temp
//! file and renaming it over the backlog (then syncing the directory), so a crash at any moment
//! leaves either the old or the new list, never a mix.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::SinkError;

pub struct Backlog<T> {
    path: PathBuf,
    items: VecDeque<T>,
    /// Most items kept; a new one past it pushes out the oldest (reported by `push`).
    max: usize,
}

impl<T: Serialize + DeserializeOwned> Backlog<T> {
    /// Opens the backlog at `path`, reading what a previous run left there. A last line cut
    /// short by a crash (no newline at its end) was never reported as queued and is dropped
    /// with a warning; any other unreadable line is an error, as the file was then changed by
    /// someone else.
    pub fn open(path: &Path, max: usize) -> Result<Backlog<T>, SinkError> {
        let err = |reason: String| SinkError::Backlog {
            path: path.to_path_buf(),
            reason,
        };
        let mut items = VecDeque::new();
        match std::fs::File::open(path) {
            Ok(f) => {
                let mut r = BufReader::new(f);
                let mut line = Vec::new();
                let mut n = 0;
                loop {
                    line.clear();
                    let read = r
                        .read_until(b'\n', &mut line)
                        .map_err(|e| err(e.to_string()))?;
                    if read == 0 {
                        break;
                    }
                    n += 1;
                    if line.last() != Some(&b'\n') {
                        tracing::warn!(
                            path = %path.display(),
                            line = n,
                            "the backlog's last line was cut short (a crash while it was \
                             written); it was never queued and is dropped"
                        );
                        break;
                    }
                    let item = serde_json::from_slice(&line[..line.len() - 1])
                        .map_err(|e| err(format!("line {n}: {e}")))?;
                    items.push_back(item);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e.to_string())),
        }
        let mut b = Backlog {
            path: path.to_path_buf(),
            items,
            max: max.max(1),
        };
        // Also rewrites a file whose cut-short line was dropped above.
        if b.items.len() > b.max {
            b.items.drain(..b.items.len() - b.max);
        }
        b.rewrite()?;
        Ok(b)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// The oldest `n` items (fewer when fewer wait).
    pub fn front(&self, n: usize) -> Vec<T>
    where
        T: Clone,
    {
        self.items.iter().take(n).cloned().collect()
    }

    /// Appends `item` and syncs it. When the backlog was full, the oldest item is pushed out
    /// and returned, for the caller to report: it is never dropped silently.
    pub fn push(&mut self, item: T) -> Result<Option<T>, SinkError> {
        let mut line = serde_json::to_vec(&item).map_err(|e| self.error(e.to_string()))?;
        line.push(b'\n');
        if self.items.len() >= self.max {
            let dropped = self.items.pop_front();
            self.items.push_back(item);
            self.rewrite()?;
            return Ok(dropped);
        }
        let mut f = crate::files::options()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.error(e.to_string()))?;
        f.write_all(&line)
            .and_then(|_| f.sync_data())
            .map_err(|e| self.error(e.to_string()))?;
        self.items.push_back(item);
        Ok(None)
    }

    /// Removes the oldest `n` items (they were delivered).
    pub fn remove_front(&mut self, n: usize) -> Result<(), SinkError> {
        if n == 0 {
            return Ok(());
        }
        self.items.drain(..n.min(self.items.len()));
        self.rewrite()
    }

    /// Replaces the file with the items held (an empty backlog leaves no file).
    fn rewrite(&self) -> Result<(), SinkError> {
        if self.items.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(self.error(e.to_string()))
                }
                _ => Ok(()),
            };
        }
        let mut text = Vec::new();
        for i in &self.items {
            serde_json::to_writer(&mut text, i).map_err(|e| self.error(e.to_string()))?;
            text.push(b'\n');
        }
        crate::files::write_private(&self.path, &text)
            .and_then(|_| sync_dir(&self.path))
            .map_err(|e| self.error(e.to_string()))
    }

    fn error(&self, reason: String) -> SinkError {
        SinkError::Backlog {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Makes a rename in the file's directory durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keeps_order_across_reopen_and_reports_what_it_pushes_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.jsonl");
        let mut b: Backlog<u32> = Backlog::open(&path, 3).unwrap();
        assert!(!path.exists(), "no file while empty");
        for i in 0..3 {
            assert_eq!(b.push(i).unwrap(), None);
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            b.push(3).unwrap(),
            Some(0),
            "the oldest goes, and is returned"
        );
        b.remove_front(1).unwrap();
        drop(b);
        let mut b: Backlog<u32> = Backlog::open(&path, 3).unwrap();
        assert_eq!(b.front(10), vec![2, 3]);
        b.remove_front(2).unwrap();
        assert!(b.is_empty() && !path.exists());
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_dropped_and_a_changed_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.jsonl");
        std::fs::write(&path, "1\n2\n3").unwrap();
        let b: Backlog<u32> = Backlog::open(&path, 10).unwrap();
        assert_eq!(b.front(10), vec![1, 2]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n");
        std::fs::write(&path, "1\nx\n").unwrap();
        let e = Backlog::<u32>::open(&path, 10).err().unwrap().to_string();
        assert!(e.contains("b.jsonl") && e.contains("line 2"), "{e}");
    }
}
