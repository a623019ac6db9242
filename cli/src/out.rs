//! Standard output for every command. `println!` panics when its reader has gone
//! (`auditseal-db verifylog --all | head`); `outln!` returns the failure instead, as
//! `StdoutClosed` when the pipe was closed, and `main` then exits quietly with status 141, what a
//! shell reports for a program that SIGPIPE stopped (`yes | head`).
//!
//! Not `signal(SIGPIPE, SIG_DFL)`: that kills the process on a write to any closed pipe or
//! socket, and a Unix-socket database connection is written with write(2), not send(2) with
//! MSG_NOSIGNAL, so a dropped connection could end `archive` half-way without a word. Here only
//! stdout stops the command.

use std::io::Write;

/// Status when stdout was closed early: 128 + SIGPIPE (13), as a shell reports `yes | head`.
pub const EXIT_STDOUT_CLOSED: u8 = 141;

/// Whoever read stdout closed it: nothing more can be shown, so the command stops quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes to stdout and flushes, so that a closed pipe is seen here and not at exit.
pub fn write(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => anyhow::Error::new(StdoutClosed),
            _ => anyhow::Error::new(e).context("cannot write to standard output"),
        })
}

/// `print!` that returns `anyhow::Result<()>` (see the module comment).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

/// `println!` that returns `anyhow::Result<()>` (see the module comment).
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Creates the file an `--out FILE` names (mode 0600): an existing one only with `--force`.
pub fn create_file(path: &std::path::Path, force: bool) -> anyhow::Result<std::fs::File> {
    use anyhow::Context;
    let mut opts = auditseal_core::files::options();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    match opts.open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => anyhow::bail!(
            "{} exists; give another path, or --force to overwrite it",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}
