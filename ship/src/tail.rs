//! Reading one source from where the last acknowledged event ended, across rotations
//! (docs/HSM-LOGS.md "Exactly once"): the position file names the file by its identity (a
//! hash of its head), so a renamed file (rename-and-create) or a copied one (copy-truncate) is
//! found again by its content, and a file that starts anew is read from its beginning.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::record::{Record, file_id};
use crate::{Format, scan};

/// How far a source has been shipped: everything before `offset` of the file `file_id` is
/// acknowledged by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    pub file_id: String,
    /// How many bytes of the file's head `file_id` hashes.
    pub head_len: u64,
    pub offset: u64,
    /// The line number at `offset`.
    pub line: u64,
    pub carry: Option<String>,
}

impl Position {
    pub fn load(path: &Path) -> anyhow::Result<Option<Position>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("the position file {} is damaged", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Written to a new file, synced, renamed over the old one, and the directory synced: a
    /// crash leaves the old position or the new one, never a mix.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("pos.tmp");
        let mut f =
            File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec(self)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// A file to read and where to start.
pub struct Segment {
    pub path: PathBuf,
    pub position: Position,
}

/// Whether the file at `path` starts with the head `pos` names and reaches its offset.
pub fn head_matches(path: &Path, pos: &Position) -> bool {
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let Ok(meta) = f.metadata() else {
        return false;
    };
    if !meta.is_file() || meta.len() < pos.head_len.max(pos.offset) {
        return false;
    }
    let mut head = vec![0u8; pos.head_len as usize];
    f.read_exact(&mut head).is_ok() && file_id(&head) == pos.file_id
}

/// The identity of the file at `path`: the hash of its bytes up to the end of its first
/// complete record; `None` while it has none.
pub fn identify(path: &Path, format: Format) -> anyhow::Result<Option<Position>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let mut parser = format.parser();
    let mut first: Option<Record> = None;
    scan(BufReader::new(&f), parser.as_mut(), 0, 1, 1, |r| {
        first = r.into_iter().next();
        Ok(false)
    })?;
    let Some(first) = first else {
        return Ok(None);
    };
    let mut head = vec![0u8; first.end as usize];
    (&f).seek(SeekFrom::Start(0))?;
    (&f).read_exact(&mut head)?;
    Ok(Some(Position {
        file_id: file_id(&head),
        head_len: first.end,
        offset: 0,
        line: 1,
        carry: None,
    }))
}

/// What to read now, oldest first: the rest of the file the position names (at its path, or
/// renamed or copied beside it), then the file now at `path` if it is another one.
pub fn plan(path: &Path, format: Format, saved: Option<&Position>) -> anyhow::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    if let Some(pos) = saved {
        if head_matches(path, pos) {
            segments.push(Segment {
                path: path.to_path_buf(),
                position: pos.clone(),
            });
            return Ok(segments);
        }
        if let Some(old) = find_rotated(path, pos) {
            segments.push(Segment {
                path: old,
                position: pos.clone(),
            });
        }
    }
    if let Some(fresh) = identify(path, format)? {
        segments.push(Segment {
            path: path.to_path_buf(),
            position: fresh,
        });
    }
    Ok(segments)
}

/// A file beside `path` whose head is the one the position names: the file renamed away, or
/// the copy made before a truncation.
fn find_rotated(path: &Path, pos: &Position) -> Option<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p != path)
        .collect();
    candidates.sort();
    candidates.into_iter().find(|p| head_matches(p, pos))
}

/// Reads `segment` from its position, handing each batch of complete records to `ship`,
/// which returns once the server acknowledged them; then the position moves past them.
pub fn read_segment(
    segment: &Segment,
    format: Format,
    batch: usize,
    mut ship: impl FnMut(&[Record], &Position) -> anyhow::Result<()>,
    mut saved: impl FnMut(&Position) -> anyhow::Result<()>,
) -> anyhow::Result<Position> {
    let mut f = File::open(&segment.path)
        .with_context(|| format!("cannot open {}", segment.path.display()))?;
    f.seek(SeekFrom::Start(segment.position.offset))?;
    let mut parser = format.parser();
    parser.resume(segment.position.carry.as_deref());
    let mut pos = segment.position.clone();
    scan(
        BufReader::with_capacity(1 << 16, f),
        parser.as_mut(),
        pos.offset,
        pos.line,
        batch,
        |records| {
            ship(&records, &pos)?;
            if let Some(last) = records.last() {
                pos.offset = last.end;
                pos.line = last.end_line;
                pos.carry = last.carry.clone();
                saved(&pos)?;
            }
            Ok(true)
        },
    )?;
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: u32, time: &str) -> String {
        format!(
            "{n}: C_Initialize\n2026-12-03 11:17:{time}\n[in] pInitArgs = (nil)\nReturned:  0 CKR_OK\n\n"
        )
    }

    /// Reads what `plan` says, like the agent, collecting (file id, offset, op) of each record.
    fn pass(path: &Path, pos_file: &Path, got: &mut Vec<(String, u64)>) {
        let saved = Position::load(pos_file).unwrap();
        for seg in plan(path, Format::Pkcs11Spy, saved.as_ref()).unwrap() {
            read_segment(
                &seg,
                Format::Pkcs11Spy,
                2,
                |records, pos| {
                    got.extend(records.iter().map(|r| (pos.file_id.clone(), r.offset)));
                    Ok(())
                },
                |pos| pos.save(pos_file),
            )
            .unwrap();
        }
    }

    #[test]
    fn resumes_waits_for_partial_records_and_follows_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("spy.log");
        let pos = dir.path().join("state.pos");
        let mut got = Vec::new();

        // Nothing yet, then a banner alone: nothing to ship, no position.
        pass(&log, &pos, &mut got);
        std::fs::write(
            &log,
            "*************** OpenSC PKCS#11 spy *****************\n",
        )
        .unwrap();
        pass(&log, &pos, &mut got);
        assert!(got.is_empty() && !pos.exists());

        // Three calls and half of a fourth: three shipped, the fourth waits.
        let mut text = std::fs::read_to_string(&log).unwrap();
        for (n, t) in [(0, "43.000"), (1, "43.001"), (2, "43.002")] {
            text += &call(n, t);
        }
        let partial = "3: C_Finalize\n2026-12-03 11:17:43.003\nReturn";
        std::fs::write(&log, format!("{text}{partial}")).unwrap();
        pass(&log, &pos, &mut got);
        assert_eq!(got.len(), 3);
        let first_id = got[0].0.clone();
        // Again: nothing new.
        pass(&log, &pos, &mut got);
        assert_eq!(got.len(), 3);
        // The rest of the line arrives.
        text += "3: C_Finalize\n2026-12-03 11:17:43.003\nReturned:  0 CKR_OK\n";
        std::fs::write(&log, &text).unwrap();
        pass(&log, &pos, &mut got);
        assert_eq!(got.len(), 4);
        assert_eq!(got[3].1, text.find("3: C_Finalize").unwrap() as u64);

        // Rename-and-create: a call added to the renamed file before the switch is shipped
        // from the old file, then the new file from its start.
        let old_text = text.clone() + &call(4, "43.004");
        std::fs::write(&log, &old_text).unwrap();
        std::fs::rename(&log, dir.path().join("spy.log.1")).unwrap();
        std::fs::write(&log, call(0, "50.000")).unwrap();
        pass(&log, &pos, &mut got);
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[4].0, first_id);
        assert_ne!(got[5].0, first_id);
        assert_eq!(got[5].1, 0);

        // Copy-truncate: the copy holds the last call written before the truncation.
        let second_id = got[5].0.clone();
        let before = call(0, "50.000") + &call(1, "50.001");
        std::fs::write(&log, &before).unwrap();
        std::fs::copy(&log, dir.path().join("spy.log.2")).unwrap();
        std::fs::write(&log, call(0, "55.000")).unwrap();
        pass(&log, &pos, &mut got);
        assert_eq!(got.len(), 8, "{got:?}");
        assert_eq!(got[6].0, second_id);
        assert_ne!(got[7].0, second_id);

        // No record was ever read twice.
        let unique: std::collections::HashSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len());
    }
}
