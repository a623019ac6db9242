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
    // Built again when HEAD moves: the file HEAD names, and HEAD itself.
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &r])
    {
        println!("cargo:rerun-if-changed={p}");
    }
}
