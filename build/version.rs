//! Build script of both binaries: `--version` names the commit they were built from
//! (`0.1.0 (commit 0123456789ab)`), or says it is unknown outside a git checkout.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    let version = env!("CARGO_PKG_VERSION");
    let full = match &commit {
        Some(c) => format!("{version} (commit {c})"),
        None => format!("{version} (commit unknown)"),
    };
    println!("cargo:rustc-env=AUDITSEAL_VERSION={full}");
    // Apart, for the metrics' auditseal_build_info{version,commit}.
    println!(
        "cargo:rustc-env=AUDITSEAL_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    // Built again when HEAD moves: the file HEAD names, and HEAD itself. Only files that exist:
    // cargo takes a missing one as changed on every build, so a checkout without packed-refs (a
    // worktree, a fetch of one branch) rebuilt both binaries at every cargo command (each e2e
    // test binary runs `cargo build` once).
    let mut watched = Vec::new();
    for path in ["HEAD", "packed-refs"] {
        watched.extend(git(&["rev-parse", "--git-path", path]));
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(&["rev-parse", "--git-path", &r]));
    }
    for p in watched {
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
