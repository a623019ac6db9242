//! The house rules of docs/ARCHITECTURE.md that a reader can count, checked on every run so they
//! stay true: no production source file over 600 lines, no production function over 80, and no
//! cycle among a crate's modules.
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

/// A production file's module path in its crate (`core/src/verify/row.rs`: `verify::row`;
/// `mod.rs`, `lib.rs` and `main.rs` name their directory's module), and its crate; None for
/// the separate programs under `src/bin/`.
fn module_of(name: &str) -> Option<(String, String)> {
    let (krate, rest) = name.split_once("/src/")?;
    if rest.starts_with("bin/") {
        return None;
    }
    let rest = rest.strip_suffix(".rs")?;
    let mut parts: Vec<&str> = rest.split('/').collect();
    if matches!(parts.last(), Some(&("mod" | "lib" | "main"))) {
        parts.pop();
    }
    Some((krate.to_string(), parts.join("::")))
}

/// The paths `code` names from the crate's root: each `crate::a::b`, and each `super::a` taken
/// from `module`; a `{...}` group gives one path per item.
fn named_paths(code: &str, module: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (start, prefix) in ["crate::", "super::"]
        .iter()
        .flat_map(|p| code.match_indices(p).map(move |(i, _)| (i, *p)))
    {
        // Not the tail of a longer name (`$crate::`, `my_super::`).
        if code[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        {
            continue;
        }
        let base = if prefix == "crate::" {
            String::new()
        } else {
            module.rsplit_once("::").map_or("", |(p, _)| p).to_string()
        };
        group_paths(&code[start + prefix.len()..], &base, &mut found);
    }
    found
}

/// The paths of `text` (what follows a `::`), joined to `base`: `a::b`, or `{a::X, b::{Y, Z}}`.
fn group_paths(text: &str, base: &str, out: &mut Vec<String>) {
    let join = |seg: &str| match base {
        "" => seg.to_string(),
        _ => format!("{base}::{seg}"),
    };
    let path: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let path = path.trim_end_matches(':');
    let rest = &text[path.len()..];
    let here = if path.is_empty() {
        base.to_string()
    } else {
        join(path)
    };
    if let Some(group) = rest.strip_prefix("::{").or(rest.strip_prefix('{')) {
        // The group's items, split at top-level commas.
        let (mut depth, mut item) = (0, String::new());
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    group_paths(item.trim(), &here, out);
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        group_paths(item.trim(), &here, out);
    } else if !here.is_empty() {
        out.push(here);
    }
}

/// `a` is `b` or contains it.
fn is_within(b: &str, a: &str) -> bool {
    a.is_empty() || b == a || b.starts_with(&format!("{a}::"))
}

/// Each crate's module graph: module -> the modules it uses. A path names the longest known
/// module it starts with; a module's use of its own ancestors (`super::X`) is no edge, and a
/// module depends on the modules it declares. A name used through a re-export counts as the
/// re-exporting module's (the text does not say where it is defined), so a loop through a
/// parent's `pub use` goes unseen.
fn module_graphs() -> std::collections::BTreeMap<String, Graph> {
    let files = production_files();
    let mut graphs: std::collections::BTreeMap<String, Graph> = Default::default();
    let mut sources = Vec::new();
    for (name, text) in &files {
        if let Some((krate, module)) = module_of(name) {
            graphs
                .entry(krate.clone())
                .or_default()
                .insert(module.clone(), Default::default());
            sources.push((krate, module, text));
        }
    }
    for (krate, module, text) in sources {
        let graph = graphs.get_mut(&krate).unwrap();
        let known: Vec<String> = graph.keys().cloned().collect();
        let mut in_string = false;
        let code: String = production(text)
            .iter()
            .map(|l| code_of(l, &mut in_string))
            .collect::<Vec<_>>()
            .join("\n");
        let mut uses: std::collections::BTreeSet<String> = named_paths(&code, &module)
            .into_iter()
            .filter_map(|p| {
                known
                    .iter()
                    .filter(|m| is_within(&p, m))
                    .max_by_key(|m| m.len())
                    .cloned()
            })
            .filter(|target| !is_within(&module, target))
            .collect();
        // The modules it declares (children).
        uses.extend(
            known
                .iter()
                .filter(|m| m.rsplit_once("::").map_or("", |(p, _)| p) == module && **m != module)
                .cloned(),
        );
        graph.insert(module, uses);
    }
    graphs
}

type Graph = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

/// The strongly connected components of `g` with more than one module (Tarjan's algorithm).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Walk<'g> {
        g: &'g Graph,
        index: std::collections::HashMap<&'g str, (usize, usize)>,
        stack: Vec<&'g str>,
        on_stack: std::collections::HashSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) -> usize {
            let n = self.index.len();
            self.index.insert(v, (n, n));
            self.stack.push(v);
            self.on_stack.insert(v);
            let mut low = n;
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.g.contains_key(w) {
                    continue;
                }
                match self.index.get(w) {
                    None => low = low.min(self.visit(w)),
                    Some(&(i, _)) if self.on_stack.contains(w) => low = low.min(i),
                    Some(_) => {}
                }
            }
            if low == n {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.found.push(scc);
                }
            }
            self.index.insert(v, (n, low));
            low
        }
    }
    let mut walk = Walk {
        g,
        index: Default::default(),
        stack: Vec::new(),
        on_stack: Default::default(),
        found: Vec::new(),
    };
    for v in g.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
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

#[test]
fn no_module_cycles() {
    let mut found = Vec::new();
    for (krate, g) in module_graphs() {
        assert!(g.len() > 5, "{krate}: only {} modules found", g.len());
        for c in cycles(&g) {
            found.push(format!("{krate}: {}", c.join(", ")));
        }
    }
    assert!(
        found.is_empty(),
        "modules that use each other, directly or round a loop (move what both need below \
         them):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_cycle_finder_reads_paths_and_finds_a_loop() {
    let paths = named_paths(
        "use crate::store::{Store, sql::{A, B}}; let x = super::row::f(); $crate::no::x",
        "verify::node",
    );
    assert_eq!(
        paths,
        [
            "store::Store",
            "store::sql::A",
            "store::sql::B",
            "verify::row::f"
        ]
    );
    let mut g = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")] {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    }
    assert_eq!(cycles(&g), [vec!["a", "b", "c"]]);
}
