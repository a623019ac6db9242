//! The house rules of docs/ARCHITECTURE.md that a reader can count, checked on every run so they
//! stay true: no production source file over 600 lines and no production function over 80.
//!
//! "Production" is what ships: the crates' `src/` trees without their test modules (a file's
//! lines from a trailing `#[cfg(test)] mod tests` on, and files named `tests.rs`), without
//! benchmark and test-helper binaries. The count reads text, not Rust's syntax: a function runs
//! from its `fn` line to the line where its braces balance, with braces inside string and
//! character literals ignored.

use std::path::{Path, PathBuf};

use auditseal_e2e::workspace_root;

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;
/// The crates whose `src/` is production code.
const CRATES: [&str; 4] = ["core", "server", "cli", "ship"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The production lines of a file: up to its trailing test module, if any.
fn production(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod tests"))
        .unwrap_or(lines.len());
    lines[..end].to_vec()
}

/// `line` without its string and character literals and its `//` comment, so that the braces
/// left are code's. `in_string` carries a string literal over line ends.
fn code_of(line: &str, in_string: &mut bool) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if *in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => *in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => *in_string = true,
            '/' if chars.peek() == Some(&'/') => break,
            // A character literal ('{', '\'', '\u{7b}'); a lifetime ('a) has no closing quote.
            '\'' => {
                let rest: String = chars.clone().take(12).collect();
                if let Some(end) = rest.get(1..).and_then(|r| r.find('\'')) {
                    let literal = &rest[..end + 1];
                    if !literal.contains(' ') || literal == " " {
                        for _ in 0..end + 2 {
                            chars.next();
                        }
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn is_fn_start(line: &str) -> bool {
    let mut t = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        if let Some(rest) = t.strip_prefix(prefix) {
            t = rest;
        }
    }
    t.strip_prefix("fn ")
        .is_some_and(|r| r.starts_with(|c: char| c.is_alphabetic() || c == '_'))
}

/// Every function of `lines` longer than `MAX_FN_LINES`: (first line, length, its `fn` line).
fn long_functions(lines: &[&str]) -> Vec<(usize, usize, String)> {
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !is_fn_start(line) {
            continue;
        }
        let (mut depth, mut opened, mut in_string) = (0i64, false, false);
        for (j, l) in lines.iter().enumerate().skip(i) {
            let code = code_of(l, &mut in_string);
            if !opened && code.trim_end().ends_with(';') && !code.contains('{') {
                break; // a declaration without a body
            }
            depth += code.matches('{').count() as i64 - code.matches('}').count() as i64;
            opened |= code.contains('{');
            if opened && depth <= 0 {
                let n = j - i + 1;
                if n > MAX_FN_LINES {
                    found.push((i + 1, n, line.trim().chars().take(70).collect()));
                }
                break;
            }
        }
    }
    found
}

fn production_files() -> Vec<(String, String)> {
    let root = workspace_root();
    let mut files = Vec::new();
    for krate in CRATES {
        rust_files(&root.join(krate).join("src"), &mut files);
    }
    files.sort();
    assert!(files.len() > 50, "found only {} files", files.len());
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.strip_prefix(&root).unwrap().display().to_string();
            (name, text)
        })
        .collect()
}

#[test]
fn no_production_file_is_over_600_lines() {
    let over: Vec<String> = production_files()
        .iter()
        .filter_map(|(name, text)| {
            let n = production(text).len();
            (n > MAX_FILE_LINES).then(|| format!("{name}: {n} lines"))
        })
        .collect();
    assert!(
        over.is_empty(),
        "production files over {MAX_FILE_LINES} lines (split them by meaning; tests go to a sibling tests.rs):\n{}",
        over.join("\n")
    );
}

#[test]
fn no_production_function_is_over_80_lines() {
    let mut over = Vec::new();
    for (name, text) in production_files() {
        for (line, n, head) in long_functions(&production(&text)) {
            over.push(format!("{name}:{line}: {n} lines: {head}"));
        }
    }
    assert!(
        over.is_empty(),
        "production functions over {MAX_FN_LINES} lines (split them into named steps):\n{}",
        over.join("\n")
    );
}

#[test]
fn the_counter_sees_through_literals_and_finds_a_long_function() {
    let mut body = vec![
        "pub async fn long() {",
        "    let s = \"}}}\";",
        "    let c = '{';",
    ];
    body.extend(std::iter::repeat_n("    step();", MAX_FN_LINES));
    body.push("}");
    body.push("fn short() -> usize { 1 }");
    let found = long_functions(&body);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, 1);
    assert_eq!(found[0].1, MAX_FN_LINES + 4);
    let lines = ["fn a() {}", "#[cfg(test)]", "mod tests {", "fn t() {}", "}"];
    assert_eq!(production(&lines.join("\n")).len(), 1);
}
