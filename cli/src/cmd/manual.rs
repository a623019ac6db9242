//! `auditseal-db completions SHELL` and `auditseal-db man --out DIR`: shell completions and man
//! pages, generated from the same clap definitions as `--help`, so they never drift from it.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::out::outln;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory to write `auditseal-db.1` and one page per command into (created if
    /// missing), e.g. /usr/local/share/man/man1.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Prints the completion script for `shell` on stdout.
pub fn completions(mut command: clap::Command, args: CompletionsArgs) -> anyhow::Result<u8> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "auditseal-db", &mut script);
    crate::out::write(format_args!("{}", String::from_utf8_lossy(&script)))?;
    Ok(0)
}

/// Writes the man pages of `command` and of each of its subcommands into `args.out`.
pub fn man(command: clap::Command, args: ManArgs) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let written = write_pages(&command.name("auditseal-db"), &args.out, "auditseal-db")?;
    outln!("wrote {written} man pages to {}", args.out.display())?;
    Ok(0)
}

/// The page of `command` as `<name>.1`, then those of its subcommands as `<name>-<sub>.1`.
fn write_pages(command: &clap::Command, dir: &Path, name: &str) -> anyhow::Result<usize> {
    let command = command.clone().name(name.to_string());
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .context("cannot render a man page")?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = 1;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        written += write_pages(sub, dir, &format!("{name}-{}", sub.get_name()))?;
    }
    Ok(written)
}
