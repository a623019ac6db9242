//! Files and directories auditseal creates. They hold audit rows, keys, tokens or what vouches
//! for them, so each is its owner's only from the moment it exists (files 0600, directories
//! 0700), whatever the umask; an existing one keeps the mode it has.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// `OpenOptions` whose files are created with mode 0600; the caller says how to open.
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(0o600);
    o
}

/// `create_dir_all`, each directory it creates with mode 0700.
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Writes a whole file readable only by its owner (never briefly readable, whatever was there
/// before), atomically (temp file + rename), and syncs it.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    // A leftover temp file may have another mode: start afresh.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = options().write(true).create_new(true).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
