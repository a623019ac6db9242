//! `auditseal-db`: the database CLI. One file per command under `cmd/`.

mod cmd;
mod out;
mod progress;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use auditseal_core::config::{Overrides, Settings};

/// Exit status when the command itself could not run (bad options, database unreachable);
/// verifylog's own findings use 0 / 254 / 255 as CESeCore's.
const EXIT_FAILURE: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "auditseal-db",
    version = env!("AUDITSEAL_VERSION"),
    about = "auditseal database CLI",
    after_help = "Commands that log events (archive, token) log them as node <node id>-db.",
    // Every option of `Cli` is global (each command takes it): listed under one heading.
    next_help_heading = "Global options"
)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify every row of the audit log and find every hole and duplicate.
    Verifylog(cmd::verifylog::Args),
    /// List, test and export the configured keys.
    #[command(subcommand)]
    Keys(cmd::keys::Command),
    /// Export the verified rows up to a time as a signed segment, then delete them.
    Archive(cmd::archive::Args),
    /// PostgreSQL: partition AuditRecordData by time, so that archive drops whole partitions.
    #[command(subcommand)]
    Partition(cmd::partition::Command),
    /// Check an archive segment (DIR) or a downloaded export (FILE) offline.
    VerifyExport(cmd::verify_export::Args),
    /// Export or list the nodes' newest signed checkpoints, or check a checkpoint log.
    #[command(subcommand)]
    Checkpoint(cmd::checkpoint::Command),
    /// Copy the SQLite database consistently while the server runs.
    Backup(cmd::backup::Args),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(cmd::token::Command),
    /// Report on a raw HSM log file (pkcs11-spy, ...) or on the stored HSM events.
    Analyze(cmd::analyze::Args),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::manual::CompletionsArgs),
    /// Write the man pages (auditseal-db.1 and one per command) into a directory.
    Man(cmd::manual::ManArgs),
}

/// SignServer's CLI spells options with one dash (`verifylog -all`, `-node n:5`); accept both.
fn normalise_args() -> Vec<String> {
    std::env::args()
        .map(|a| match a.as_str() {
            "-all" | "-node" | "-json" => format!("-{a}"),
            _ => a,
        })
        .collect()
}

fn main() -> ExitCode {
    // Before any other thread exists.
    auditseal_core::memory::return_large_blocks();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AUDITSEAL_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse_from(normalise_args());
    // These need no configuration, database or key.
    let cli = match cli.command {
        Command::Completions(args) => {
            return finish(cmd::manual::completions(Cli::command(), args));
        }
        Command::Man(args) => return finish(cmd::manual::man(Cli::command(), args)),
        Command::Analyze(args) if !args.stored => return finish(cmd::analyze::run_file(args)),
        _ => cli,
    };
    // The CLI reads and writes the database --database-url names (verifylog on a standby:
    // give the standby's URL there).
    let settings = match Settings::resolve(cli.overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Verifylog(args) => cmd::verifylog::run(&settings, args).await,
            Command::Keys(c) => cmd::keys::run(&settings, c).await,
            Command::Checkpoint(c) => cmd::checkpoint::run(&settings, c).await,
            Command::Archive(a) => cmd::archive::run(&settings, a).await,
            Command::Partition(c) => cmd::partition::run(&settings, c).await,
            Command::VerifyExport(a) => cmd::verify_export::run(&settings, a).await,
            Command::Token(c) => cmd::token::run(&settings, c).await,
            Command::Backup(a) => cmd::backup::run(&settings, a).await,
            Command::Analyze(a) => cmd::analyze::run_stored(&settings, a).await,
            Command::Completions(_) | Command::Man(_) => unreachable!("handled before"),
        }
    });
    finish(result)
}

/// The exit status of a command's result; an error as one line on stderr.
fn finish(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.downcast_ref::<out::StdoutClosed>().is_some() => {
            ExitCode::from(out::EXIT_STDOUT_CLOSED)
        }
        Err(e) => {
            eprintln!("error: {}", auditseal_core::report::one_line(e.chain()));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
