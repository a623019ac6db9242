//! Harness for `tests/java/CesecoreCompat.java`, an independent Java (JDK-only) implementation
//! of CESeCore's protect string, rowProtection and `additionalDetails` XML formats
//! (as docs/FORMAT.md sections 2, 3 and 4 state them).
//!
//! Command-line contract of the Java program (all text UTF-8; "hex" is lower-case hex of the
//! UTF-8 bytes; a null field is `-`, an empty string is an empty field):
//!
//! * `protect (--hmac SECRETHEX | --sign PKCS8DER_FILE --alg SHA256WithRSA|SHA256WithECDSA) --keyid N`:
//!   stdin lines of 13 tab-separated hex fields (see [`row_line`]); prints one rowProtection
//!   `1:<1|2>:<keyid>:<hex>` per line.
//! * `verify (--hmac SECRETHEX | --pubkey PEM_FILE) [--keyid N]`: stdin lines of the 13 fields plus
//!   the rowProtection as plain text (see [`verify_line`]); prints `OK` or `FAIL <reason>` per line
//!   (reasons: `null protection`, `bad layout`, `unsupported version`, `wrong MAC`,
//!   `bad signature`, and with `--keyid`, `unknown keyid`); exit 0 all OK, 1 any FAIL, 2 usage error.
//! * `xml-encode [--linked]`: stdin is a map description (see [`write_spec`]); stdout is exactly
//!   what `java.beans.XMLEncoder` writes for an `org.cesecore.util.Base64PutHashMap` (or a
//!   `java.util.LinkedHashMap` with `--linked`).
//! * `xml-decode`: stdin is XML; stdout the map description of what `XMLDecoder` read.
//!
//! The map description ("spec") format, one item per line, each line ending in `\n`:
//! `map` then pairs of `key <hex>` + value, then `end`. Values: `str <hex>`, `int N`, `long N`,
//! `bool true|false`, `null`, `double <Double.toString>`, `float <Float.toString>`,
//! `date <millis>`, `list` + values + `end`, `map` + pairs + `end`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, anyhow, bail};

const SOURCES: [&str; 2] = [
    "CesecoreCompat.java",
    "org/cesecore/util/Base64PutHashMap.java",
];

/// Compiles tests/java once per process and runs it.
///
/// The classes go to `target/java-compat/<hash of the sources>/`: compiled into a private
/// temporary directory and renamed into place, so parallel test processes never see a
/// half-written directory, and unchanged sources are not recompiled.
pub struct JavaCompat {
    classes: PathBuf,
}

static INSTANCE: OnceLock<JavaCompat> = OnceLock::new();

fn java_tool_present(tool: &str) -> bool {
    match Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) => status.success(),
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => panic!("cannot run `{tool} -version`: {e}"),
    }
}

impl JavaCompat {
    /// Compiles on first use. Panics with a clear message if javac/java is missing.
    pub fn get() -> &'static JavaCompat {
        INSTANCE.get_or_init(|| {
            for tool in ["javac", "java"] {
                assert!(
                    java_tool_present(tool),
                    "`{tool}` not found: the Java compatibility tests need a JDK 17+ \
                     (install default-jdk-headless or run scripts/test)"
                );
            }
            match Self::compile() {
                Ok(classes) => JavaCompat { classes },
                Err(e) => panic!("compiling tests/java failed: {e:#}"),
            }
        })
    }

    fn source_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("java")
    }

    fn compile() -> anyhow::Result<PathBuf> {
        let src = Self::source_dir();
        let mut hasher = DefaultHasher::new();
        for rel in SOURCES {
            let path = src.join(rel);
            let text =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            rel.hash(&mut hasher);
            text.hash(&mut hasher);
        }
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/java-compat");
        let dest = base.join(format!("{:016x}", hasher.finish()));
        if dest.join("CesecoreCompat.class").is_file() {
            return Ok(dest);
        }
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix("tmp-")
            .tempdir_in(&base)
            .context("creating a temporary class directory")?;
        let output = Command::new("javac")
            .arg("-encoding")
            .arg("UTF-8")
            .arg("-d")
            .arg(tmp.path())
            .args(SOURCES.iter().map(|rel| src.join(rel)))
            .output()
            .context("running javac")?;
        if !output.status.success() {
            bail!(
                "javac exited with {}:\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let tmp = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp, &dest) {
            // Another process won the race: use its (identical) classes.
            let _ = std::fs::remove_dir_all(&tmp);
            if !dest.join("CesecoreCompat.class").is_file() {
                return Err(e).with_context(|| format!("moving classes to {}", dest.display()));
            }
        }
        Ok(dest)
    }

    /// The directory holding the compiled classes.
    pub fn classes(&self) -> &Path {
        &self.classes
    }

    /// Runs `java -cp classes CesecoreCompat <args>` with `stdin` as input; returns
    /// (exit code, stdout, stderr). The exit code is -1 if java was killed by a signal.
    pub fn run(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut child = Command::new("java")
            // Quick start-up: these are short runs, often several in parallel on few cores.
            .args([
                "-XX:TieredStopAtLevel=1",
                "-XX:+UseSerialGC",
                "-Xshare:auto",
            ])
            .arg("-cp")
            .arg(&self.classes)
            .arg("CesecoreCompat")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning java");
        let mut pipe = child.stdin.take().expect("java stdin");
        let input = stdin.as_bytes().to_vec();
        // Write from a thread so a large input cannot deadlock against a full stdout pipe.
        let writer = std::thread::spawn(move || {
            // java may exit early (usage error) and close its stdin: ignore broken pipes.
            let _ = pipe.write_all(&input);
        });
        let output = child.wait_with_output().expect("waiting for java");
        writer.join().expect("stdin writer thread");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8(output.stdout).expect("java stdout is not UTF-8"),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Like [`run`](Self::run) but panics (showing stderr) unless java exits with status 0;
    /// returns stdout.
    pub fn run_ok(&self, args: &[&str], stdin: &str) -> String {
        let (code, stdout, stderr) = self.run(args, stdin);
        assert_eq!(
            code, 0,
            "java CesecoreCompat {args:?} exited with {code}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        stdout
    }
}

/// One field of a row line: hex of the UTF-8 bytes, or `-` for null.
pub fn field(value: Option<&str>) -> String {
    match value {
        Some(s) => hex::encode(s.as_bytes()),
        None => "-".to_string(),
    }
}

/// The 13 protected fields (pk, nodeId, sequenceNumber, timeStamp, eventType, eventStatus,
/// authToken, service, module, customId, searchDetail1, searchDetail2, additionalDetails) as a
/// tab-separated line for `protect`, without a trailing newline.
pub fn row_line(fields: &[Option<&str>; 13]) -> String {
    fields
        .iter()
        .map(|f| field(*f))
        .collect::<Vec<_>>()
        .join("\t")
}

/// A line for `verify`: the 13 fields plus the rowProtection as plain text (`-` for null),
/// without a trailing newline.
pub fn verify_line(fields: &[Option<&str>; 13], row_protection: Option<&str>) -> String {
    format!("{}\t{}", row_line(fields), row_protection.unwrap_or("-"))
}

/// A value in the map description exchanged with `xml-encode` / `xml-decode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JVal {
    Null,
    Str(String),
    Int(i32),
    Long(i64),
    Bool(bool),
    /// Java's `Double.toString` text, e.g. `1.5E10`.
    Double(String),
    /// Java's `Float.toString` text, e.g. `0.1`.
    Float(String),
    /// `java.util.Date` as epoch milliseconds.
    Date(i64),
    List(Vec<JVal>),
    Map(Vec<(String, JVal)>),
}

/// Writes a top-level map as a map description (ends with `end\n`).
pub fn write_spec(map: &[(String, JVal)]) -> String {
    let mut out = String::new();
    write_map(&mut out, map);
    out
}

fn write_map(out: &mut String, map: &[(String, JVal)]) {
    out.push_str("map\n");
    for (key, value) in map {
        out.push_str("key ");
        out.push_str(&hex::encode(key.as_bytes()));
        out.push('\n');
        write_value(out, value);
    }
    out.push_str("end\n");
}

fn write_value(out: &mut String, value: &JVal) {
    let line = match value {
        JVal::Null => "null".to_string(),
        JVal::Str(s) => format!("str {}", hex::encode(s.as_bytes())),
        JVal::Int(n) => format!("int {n}"),
        JVal::Long(n) => format!("long {n}"),
        JVal::Bool(b) => format!("bool {b}"),
        JVal::Double(t) => format!("double {t}"),
        JVal::Float(t) => format!("float {t}"),
        JVal::Date(ms) => format!("date {ms}"),
        JVal::List(items) => {
            out.push_str("list\n");
            items.iter().for_each(|item| write_value(out, item));
            out.push_str("end\n");
            return;
        }
        JVal::Map(map) => return write_map(out, map),
    };
    out.push_str(&line);
    out.push('\n');
}

/// Parses a map description (the output of `xml-decode`) into the top-level map's entries.
pub fn parse_spec(text: &str) -> anyhow::Result<Vec<(String, JVal)>> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.is_empty());
    let map = match lines.next() {
        Some((_, "map")) => parse_map_body(&mut lines)?,
        Some((n, l)) => bail!("line {}: expected `map`, got {l:?}", n + 1),
        None => bail!("empty map description"),
    };
    if let Some((n, l)) = lines.next() {
        bail!(
            "line {}: trailing content after the top-level map: {l:?}",
            n + 1
        );
    }
    Ok(map)
}

fn unhex(n: usize, hex_text: &str) -> anyhow::Result<String> {
    let bytes =
        hex::decode(hex_text).with_context(|| format!("line {}: bad hex {hex_text:?}", n + 1))?;
    String::from_utf8(bytes).with_context(|| format!("line {}: not UTF-8", n + 1))
}

fn parse_map_body<'a>(
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
) -> anyhow::Result<Vec<(String, JVal)>> {
    let mut map = Vec::new();
    loop {
        let (n, line) = lines
            .next()
            .ok_or_else(|| anyhow!("unexpected end inside a map"))?;
        if line == "end" {
            return Ok(map);
        }
        let key = if line == "key" {
            String::new()
        } else if let Some(hex_text) = line.strip_prefix("key ") {
            unhex(n, hex_text)?
        } else {
            bail!(
                "line {}: expected `key <hex>` or `end`, got {line:?}",
                n + 1
            )
        };
        let (n, line) = lines
            .next()
            .ok_or_else(|| anyhow!("unexpected end after a key"))?;
        map.push((key, parse_value(n, line, lines)?));
    }
}

fn parse_value<'a>(
    n: usize,
    line: &str,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
) -> anyhow::Result<JVal> {
    let (tag, arg) = line.split_once(' ').unwrap_or((line, ""));
    let bad = |what: &str| anyhow!("line {}: bad {what} in {line:?}", n + 1);
    Ok(match tag {
        "null" => JVal::Null,
        "str" => JVal::Str(unhex(n, arg)?),
        "int" => JVal::Int(arg.parse().map_err(|_| bad("int"))?),
        "long" => JVal::Long(arg.parse().map_err(|_| bad("long"))?),
        "bool" => match arg {
            "true" => JVal::Bool(true),
            "false" => JVal::Bool(false),
            _ => return Err(bad("bool")),
        },
        "double" if !arg.is_empty() => JVal::Double(arg.to_string()),
        "float" if !arg.is_empty() => JVal::Float(arg.to_string()),
        "date" => JVal::Date(arg.parse().map_err(|_| bad("date"))?),
        "list" => {
            let mut items = Vec::new();
            loop {
                let (n, line) = lines
                    .next()
                    .ok_or_else(|| anyhow!("unexpected end inside a list"))?;
                if line == "end" {
                    break JVal::List(items);
                }
                items.push(parse_value(n, line, lines)?);
            }
        }
        "map" => JVal::Map(parse_map_body(lines)?),
        _ => return Err(bad("value")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> JVal {
        JVal::Str(v.to_string())
    }

    fn sample() -> Vec<(String, JVal)> {
        vec![
            ("KEYALIAS".into(), s("signKey")),
            ("SWEDISH".into(), s("åäö")),
            ("CR".into(), s("a\rb")),
            ("CTRL".into(), s("x\u{1}y")),
            ("SEP".into(), s("a<sep/>b")),
            ("ESC".into(), s("&<>\"'")),
            ("TABNL".into(), s("t\tn\nx")),
            ("".into(), s("")),
            ("INT".into(), JVal::Int(-7)),
            ("LONG".into(), JVal::Long(i64::MIN)),
            ("BOOL".into(), JVal::Bool(false)),
            ("NULL".into(), JVal::Null),
            ("DBL".into(), JVal::Double("1.5E10".into())),
            ("FLT".into(), JVal::Float("0.1".into())),
            ("DATE".into(), JVal::Date(1_700_000_000_000)),
            (
                "LIST".into(),
                JVal::List(vec![s("åäö"), JVal::Null, JVal::Int(5), JVal::List(vec![])]),
            ),
            (
                "MAP".into(),
                JVal::Map(vec![
                    ("ü".into(), s("ü<&")),
                    ("e".into(), JVal::Map(vec![])),
                ]),
            ),
        ]
    }

    #[test]
    fn spec_round_trip() {
        let map = sample();
        let text = write_spec(&map);
        assert!(text.starts_with("map\nkey 4b4559414c494153\nstr 7369676e4b6579\n"));
        assert!(text.contains("key \nstr \n"), "empty key and value: {text}");
        assert!(text.ends_with("end\nend\n"));
        assert_eq!(parse_spec(&text).unwrap(), map);
        // `str` / `key` alone mean the empty string.
        assert_eq!(
            parse_spec("map\nkey\nstr\nend\n").unwrap(),
            vec![(String::new(), s(""))]
        );
        assert!(parse_spec("map\nkey 61\nend\n").is_err());
        assert!(parse_spec("map\nkey 61\nint x\nend\n").is_err());
        assert!(parse_spec("map\nend\nmap\n").is_err());
        assert!(parse_spec("list\nend\n").is_err());
    }

    #[test]
    fn row_lines() {
        let mut fields: [Option<&str>; 13] = [None; 13];
        fields[0] = Some("pk1");
        fields[1] = Some("");
        let line = row_line(&fields);
        assert_eq!(line, format!("706b31\t\t{}", ["-"; 11].join("\t")));
        assert_eq!(verify_line(&fields, None), format!("{line}\t-"));
        assert_eq!(
            verify_line(&fields, Some("1:1:0:ab")),
            format!("{line}\t1:1:0:ab")
        );
    }

    #[test]
    fn java_xml_round_trip() {
        let java = JavaCompat::get();
        let map = sample();
        let spec = write_spec(&map);

        // LinkedHashMap keeps every string as it is: exact round trip.
        let xml = java.run_ok(&["xml-encode", "--linked"], &spec);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<java version=\""));
        assert!(xml.contains("\n <object class=\"java.util.LinkedHashMap\">\n"));
        assert!(xml.contains("<string>a&#13;b</string>"), "{xml}");
        assert!(
            xml.contains("<string>x<char code=\"#1\"/>y</string>"),
            "{xml}"
        );
        assert!(
            xml.contains("<string>&amp;&lt;&gt;&quot;&apos;</string>"),
            "{xml}"
        );
        assert!(xml.contains("<string>åäö</string>"), "{xml}");
        assert!(xml.ends_with("</java>\n"));
        assert_eq!(
            parse_spec(&java.run_ok(&["xml-decode"], &xml)).unwrap(),
            map
        );

        // Base64PutHashMap applies the B64 rule to the top-level string values only.
        let xml = java.run_ok(&["xml-encode"], &spec);
        assert!(xml.contains("\n <object class=\"org.cesecore.util.Base64PutHashMap\">\n"));
        let decoded = parse_spec(&java.run_ok(&["xml-decode"], &xml)).unwrap();
        let get = |k: &str| {
            decoded
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("SWEDISH"), Some(s("B64:w6XDpMO2")));
        assert_eq!(get("CR"), Some(s("B64:YQ1i")));
        assert_eq!(get("SEP"), Some(s("a<sep/>b")));
        assert_eq!(get(""), Some(s("")));
        assert_eq!(
            get("LIST"),
            map.iter()
                .find(|(k, _)| k == "LIST")
                .map(|(_, v)| v.clone())
        );
        assert_eq!(decoded.len(), map.len());

        // Usage errors exit with 2.
        let (code, _, stderr) = java.run(&["xml-decode"], "not xml");
        assert_eq!(code, 2, "{stderr}");
    }

    #[test]
    fn java_hmac_protect_verify() {
        let java = JavaCompat::get();
        let row: [Option<&str>; 13] = [
            Some("pk1"),
            Some("node1"),
            Some("0"),
            Some("0"),
            Some("LOG_VERIFY"),
            Some("VOID"),
            None,
            Some("CORE"),
            Some("SECURITY_AUDIT"),
            None,
            None,
            None,
            None,
        ];
        // HMAC-SHA256("00112233" as key bytes, docs/FORMAT.md section 2's example), cross-checked
        // with `openssl dgst -sha256 -mac HMAC -macopt hexkey:00112233`.
        let expected = "1:1:5:3c602731c9c17b2468992ab2a321ab65944428c539ac9576b25e96d7ed7b781a";
        let out = java.run_ok(
            &["protect", "--hmac", "00112233", "--keyid", "5"],
            &format!("{}\n", row_line(&row)),
        );
        assert_eq!(out, format!("{expected}\n"));
        let lines = [
            verify_line(&row, Some(expected)),
            verify_line(&row, None),
            verify_line(&row, Some("1:1:5")),
            verify_line(&row, Some("1:1:5:00")),
        ];
        let (code, out, err) = java.run(
            &["verify", "--hmac", "00112233"],
            &(lines.join("\n") + "\n"),
        );
        assert_eq!(code, 1, "{err}");
        assert_eq!(
            out,
            "OK\nFAIL null protection\nFAIL bad layout\nFAIL wrong MAC\n"
        );
    }
}
