//! Reads an existing SignServer (CESeCore) configuration directory, so operators can bring
//! `databaseprotection.properties` and `cesecore.properties` unchanged (`--signserver-conf DIR`).
//! The keys read are those docs/OPERATIONS.md "A SignServer configuration, unchanged" lists.
//!
//! Decisions:
//! - Every problem found is reported, not just the first: one problem is returned as
//!   [`SignServerConfError::Entry`] or [`SignServerConfError::File`], several as
//!   [`SignServerConfError::Several`] (one per line when displayed); [`SignServerConfError::problems`]
//!   lists them either way.
//! - A key given twice is an error when we read it: java.util.Properties keeps the last value
//!   but CESeCore's Commons Configuration turns it into a list and reads the first, so the
//!   operator must say which one is meant. Duplicates of keys we ignore are not reported.
//! - The syntax is java.util.Properties' (see `parse_properties`); files are read as UTF-8,
//!   or as ISO-8859-1 (Java's default for .properties) when they are not valid UTF-8.
//! - Values we use as text (PIN, key label, library path, slot label) are trimmed at the end
//!   too: CESeCore reads these files with Commons Configuration 1.x, which trims every value,
//!   so a working SignServer configuration never relied on trailing blanks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::config::{KeyEntry, ProtectionSection, SignatureAlgorithm, TokenAlgorithm};
use crate::token::Algorithm;

/// The required file in the configuration directory.
pub const PROTECTION_FILE: &str = "databaseprotection.properties";
/// The optional file that may set `cluster.nodeid`.
pub const CESECORE_FILE: &str = "cesecore.properties";

const PREFIX: &str = "databaseprotection.";
/// The only table auditseal has; its table-specific settings win over the plain ones.
const TABLE: &str = "AuditRecordData";
const CLASS_PACKAGE: &str = "org.cesecore.keys.token.";
/// The per-entry keys, `databaseprotection.<field>.N`.
const FIELDS: [&str; 8] = [
    "keyid",
    "keylabel",
    "classname",
    "properties",
    "data",
    "tokenpin",
    "version",
    "sigalg",
];
/// The global keys that may carry the `.AuditRecordData` suffix.
const TABLE_SETTINGS: [&str; 3] = ["enablesign", "enableverify", "keyid"];
const TOKEN_PROPERTIES: [&str; 6] = [
    "sharedLibrary",
    "slotLabelType",
    "slotLabelValue",
    "slot",
    "slotListIndex",
    "attributesFile",
];

/// What a SignServer configuration directory says, in auditseal's terms.
#[derive(Debug)]
pub struct SignServerConf {
    pub protection: ProtectionSection,
    pub node_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SignServerConfError {
    #[error("{file}:{line}: {key}: {reason}")]
    Entry {
        file: PathBuf,
        line: usize,
        key: String,
        reason: String,
    },
    #[error("{file}: {reason}")]
    File { file: PathBuf, reason: String },
    /// More than one problem; each is an `Entry` or a `File`.
    #[error("{} problems in the SignServer configuration:\n{}", .0.len(), join_lines(.0))]
    Several(Vec<SignServerConfError>),
}

fn join_lines(errors: &[SignServerConfError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl SignServerConfError {
    /// Every single problem (one for `Entry` and `File`).
    pub fn problems(&self) -> &[SignServerConfError] {
        match self {
            SignServerConfError::Several(list) => list,
            one => std::slice::from_ref(one),
        }
    }

    fn from_list(mut list: Vec<SignServerConfError>) -> Option<SignServerConfError> {
        match list.len() {
            0 => None,
            1 => list.pop(),
            _ => Some(SignServerConfError::Several(list)),
        }
    }
}

/// Reads DIR/databaseprotection.properties (required) and DIR/cesecore.properties (optional).
/// Every problem is reported (see [`SignServerConfError::problems`]) with file, line and key.
pub fn load(dir: &Path) -> Result<SignServerConf, SignServerConfError> {
    let path = dir.join(PROTECTION_FILE);
    let properties = std::fs::read(&path).map_err(|e| SignServerConfError::File {
        file: path.clone(),
        reason: format!("cannot read it ({e}); a SignServer configuration directory needs it"),
    })?;
    let path = dir.join(CESECORE_FILE);
    let cesecore = match std::fs::read(&path) {
        Ok(bytes) => Some(decode_text(&bytes)),
        // Optional: without it the node id comes from elsewhere.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(SignServerConfError::File {
                file: path,
                reason: format!("cannot read it: {e}"),
            });
        }
    };
    parse(dir, &decode_text(&properties), cesecore.as_deref())
}

/// The same from text (for tests): `properties` is databaseprotection.properties,
/// `cesecore` is cesecore.properties if any; `dir` is used in messages only.
pub fn parse(
    dir: &Path,
    properties: &str,
    cesecore: Option<&str>,
) -> Result<SignServerConf, SignServerConfError> {
    let mut problems = Problems::new(dir.join(PROTECTION_FILE));
    let props = read_properties(properties, &mut problems, |k| k.starts_with(PREFIX));
    let protection = protection_section(&props, &mut problems);
    let mut all = problems.finish();
    let node_id = cesecore.and_then(|text| {
        let mut problems = Problems::new(dir.join(CESECORE_FILE));
        let id = node_id(text, &mut problems);
        all.extend(problems.finish());
        id
    });
    match SignServerConfError::from_list(all) {
        Some(e) => Err(e),
        None => Ok(SignServerConf {
            protection,
            node_id,
        }),
    }
}

/// UTF-8 when valid (an editor's choice today), else ISO-8859-1 (Java's default for
/// .properties); a UTF-8 byte order mark is dropped.
fn decode_text(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|b| char::from(*b)).collect(),
    }
}

/// Collects problems for one file.
struct Problems {
    file: PathBuf,
    list: Vec<SignServerConfError>,
}

impl Problems {
    fn new(file: PathBuf) -> Self {
        Problems {
            file,
            list: Vec::new(),
        }
    }

    fn line(&mut self, line: usize, key: &str, reason: impl Into<String>) {
        self.list.push(SignServerConfError::Entry {
            file: self.file.clone(),
            line,
            key: key.to_string(),
            reason: reason.into(),
        });
    }

    fn at(&mut self, p: &Prop, reason: impl Into<String>) {
        self.line(p.line, &p.key, reason);
    }

    fn whole(&mut self, reason: impl Into<String>) {
        self.list.push(SignServerConfError::File {
            file: self.file.clone(),
            reason: reason.into(),
        });
    }

    /// The problems in line order; those about the whole file last.
    fn finish(mut self) -> Vec<SignServerConfError> {
        self.list.sort_by_key(|e| match e {
            SignServerConfError::Entry { line, .. } => *line,
            _ => usize::MAX,
        });
        self.list
    }

    fn count(&self) -> usize {
        self.list.len()
    }

    fn warn(&self, p: &Prop, message: &str) {
        tracing::warn!(file = %self.file.display(), line = p.line, key = %p.key, "{message}");
    }
}

// ---------------------------------------------------------------------------------------------
// java.util.Properties syntax

/// One `key = value`, unescaped, with the line where its logical line started (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prop {
    key: String,
    value: String,
    line: usize,
}

/// A syntax problem: the line, the key as far as known, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SyntaxError {
    line: usize,
    key: String,
    reason: String,
}

/// The whitespace of java.util.Properties: space, tab, form feed (not newlines).
fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

/// Splits on `\n`, `\r\n` and a lone `\r`, as Java does.
fn natural_lines(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut lines = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&text[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                lines.push(&text[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < bytes.len() {
        lines.push(&text[start..]);
    }
    lines
}

fn trailing_backslashes(s: &str) -> usize {
    s.chars().rev().take_while(|c| *c == '\\').count()
}

/// Parses .properties text by the java.util.Properties rules: logical lines (an odd number of
/// trailing backslashes continues on the next line, whose leading whitespace is dropped),
/// `#`/`!` comments, key ending at the first unescaped `=`, `:` or whitespace, escapes. Entries
/// come in file order, duplicates included.
fn parse_properties(text: &str) -> (Vec<Prop>, Vec<SyntaxError>) {
    let lines = natural_lines(text);
    let (mut props, mut errors) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < lines.len() {
        let line = i + 1;
        let first = lines[i].trim_start_matches(is_ws);
        i += 1;
        // Only the first natural line of a logical line can be a comment.
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = first.to_string();
        // Counted per natural line: the backslash that joined two lines is gone.
        let mut backslashes = trailing_backslashes(first);
        while backslashes % 2 == 1 {
            logical.pop();
            let Some(next) = lines.get(i) else {
                break; // a continuation at end of file just ends the line
            };
            i += 1;
            let next = next.trim_start_matches(is_ws);
            logical.push_str(next);
            backslashes = trailing_backslashes(next);
        }
        let (raw_key, raw_value) = split_key_value(&logical);
        let key = match unescape(raw_key) {
            Ok(k) => k,
            Err(reason) => {
                errors.push(SyntaxError {
                    line,
                    key: raw_key.to_string(),
                    reason,
                });
                continue;
            }
        };
        match unescape(raw_value) {
            Ok(value) => props.push(Prop { key, value, line }),
            Err(reason) => errors.push(SyntaxError { line, key, reason }),
        }
    }
    (props, errors)
}

/// The raw (still escaped) key and value of a logical line.
fn split_key_value(line: &str) -> (&str, &str) {
    let (mut key_end, mut value_start) = (line.len(), line.len());
    let (mut has_separator, mut escaped) = (false, false);
    for (idx, c) in line.char_indices() {
        if !escaped && (c == '=' || c == ':') {
            (key_end, value_start, has_separator) = (idx, idx + 1, true);
            break;
        }
        if !escaped && is_ws(c) {
            (key_end, value_start) = (idx, idx + c.len_utf8());
            break;
        }
        escaped = c == '\\' && !escaped;
    }
    // Whitespace, then at most one `=`/`:` if the key ended at whitespace, then whitespace.
    let mut value = &line[value_start..];
    while let Some(c) = value.chars().next() {
        if is_ws(c) {
        } else if !has_separator && (c == '=' || c == ':') {
            has_separator = true;
        } else {
            break;
        }
        value = &value[c.len_utf8()..];
    }
    (&line[..key_end], value)
}

/// Resolves `\t \n \r \f \uXXXX` and `\x` -> `x`. `\u` escapes are UTF-16 code units, as in
/// Java, so a surrogate pair written as two escapes makes one character.
fn unescape(raw: &str) -> Result<String, String> {
    let mut units: Vec<u16> = Vec::with_capacity(raw.len());
    let mut buf = [0u16; 2];
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        let c = if c == '\\' {
            match chars.next() {
                None => break, // cannot happen after line joining; dropped as Java does
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let unit = (hex.len() == 4 && hex.chars().all(|h| h.is_ascii_hexdigit()))
                        .then(|| u16::from_str_radix(&hex, 16).ok())
                        .flatten();
                    let Some(unit) = unit else {
                        return Err(format!("malformed \\uXXXX escape \\u{hex}"));
                    };
                    units.push(unit);
                    continue;
                }
                Some('t') => '\t',
                Some('n') => '\n',
                Some('r') => '\r',
                Some('f') => '\x0c',
                Some(other) => other,
            }
        } else {
            c
        };
        units.extend_from_slice(c.encode_utf16(&mut buf));
    }
    String::from_utf16(&units)
        .map_err(|_| "a \\u escape leaves an unpaired UTF-16 surrogate".into())
}

/// Parses a file into a map, reporting syntax errors and duplicates of keys that `matters`.
fn read_properties(
    text: &str,
    problems: &mut Problems,
    matters: impl Fn(&str) -> bool,
) -> BTreeMap<String, Prop> {
    let (props, errors) = parse_properties(text);
    for e in errors {
        problems.line(e.line, &e.key, e.reason);
    }
    let mut map: BTreeMap<String, Prop> = BTreeMap::new();
    for p in props {
        if let Some(earlier) = map.get(&p.key)
            && matters(&p.key)
        {
            let reason = format!(
                "given twice (also on line {}); CESeCore would use the first value, \
                 java.util.Properties the last: keep only the one you mean",
                earlier.line
            );
            problems.at(&p, reason);
        }
        // The last one wins, as in java.util.Properties (only matters if nothing was reported).
        map.insert(p.key.clone(), p);
    }
    map
}

// ---------------------------------------------------------------------------------------------
// databaseprotection.properties

/// What a `databaseprotection.` key is.
enum KeyKind<'a> {
    Global,
    Entry(&'static str, usize),
    OtherTable(&'a str),
    BadIndex,
    Unknown,
}

fn classify(rest: &str) -> KeyKind<'_> {
    if ["enablesign", "enableverify", "keyid", "erroronverifyfail"].contains(&rest) {
        return KeyKind::Global;
    }
    let Some((name, suffix)) = rest.split_once('.') else {
        return KeyKind::Unknown;
    };
    if TABLE_SETTINGS.contains(&name) && suffix == TABLE {
        return KeyKind::Global;
    }
    if let Some(field) = FIELDS.iter().find(|f| **f == name)
        && !suffix.is_empty()
        && suffix.bytes().all(|b| b.is_ascii_digit())
    {
        // CESeCore looks up "keyid." + i, so only the canonical decimal form is ever read.
        return match suffix.parse::<usize>() {
            Ok(n) if n.to_string() == suffix => KeyKind::Entry(field, n),
            _ => KeyKind::BadIndex,
        };
    }
    if TABLE_SETTINGS.contains(&name) && suffix.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return KeyKind::OtherTable(suffix);
    }
    KeyKind::Unknown
}

/// The keys of one entry N, by field name.
type EntryProps<'a> = BTreeMap<&'static str, &'a Prop>;

/// What became of one key entry, for the keyid checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Signing,
    /// A PublicCryptoToken: verify only.
    Public,
    /// `keylabel.N = null`.
    Skipped,
    /// Problems were reported.
    Failed,
}

fn protection_section(
    props: &BTreeMap<String, Prop>,
    problems: &mut Problems,
) -> ProtectionSection {
    let mut entries: BTreeMap<usize, EntryProps<'_>> = BTreeMap::new();
    for (key, p) in props {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            problems.warn(
                p,
                "not a databaseprotection.* key; ignored (auditseal reads only database \
                 protection settings from this file)",
            );
            continue;
        };
        match classify(rest) {
            KeyKind::Global => {}
            KeyKind::Entry(field, n) => {
                entries.entry(n).or_default().insert(field, p);
            }
            KeyKind::OtherTable(table) => problems.at(
                p,
                format!(
                    "applies to table {table}; only {TABLE} settings apply to the audit log \
                     (remove the line, or fix the table name)"
                ),
            ),
            KeyKind::BadIndex => problems.at(
                p,
                "CESeCore never reads this key: entry numbers are 0, 1, 2, ... without leading \
                 zeros",
            ),
            KeyKind::Unknown => problems.at(p, "unknown database protection key"),
        }
    }

    let enable_sign = table_setting(props, "enablesign", |p| parse_bool(p, problems));
    let enable_verify = table_setting(props, "enableverify", |p| parse_bool(p, problems));
    let error_on_verify_fail = props
        .get(&format!("{PREFIX}erroronverifyfail"))
        .and_then(|p| parse_bool(p, problems));
    let keyid = table_setting(props, "keyid", |p| parse_i32(p, problems));
    let keyid_given = [format!("{PREFIX}keyid"), format!("{PREFIX}keyid.{TABLE}")]
        .iter()
        .any(|k| props.contains_key(k));
    let enable_sign = enable_sign.is_none_or(|(v, _)| v);

    // CESeCore scans N = 0, 1, 2, ... and stops at the first missing keyid.N.
    let gap = (0usize..)
        .find(|n| !entries.get(n).is_some_and(|e| e.contains_key("keyid")))
        .unwrap_or(usize::MAX);
    for (n, e) in entries.range(gap..) {
        for p in e.values() {
            problems.at(
                p,
                format!(
                    "key entry {n} is never read: databaseprotection.keyid.{gap} is missing and \
                     CESeCore stops at the first missing keyid.N (it would silently ignore this \
                     entry); add keyid.{gap} or renumber the entries"
                ),
            );
        }
    }

    let mut keys = Vec::new();
    // keyid -> (entry number, line, outcome) of entries < gap, for the checks below.
    let mut seen: BTreeMap<i32, (usize, usize, State)> = BTreeMap::new();
    // An unreadable keyid.N may be the current one: then "no entry has it" would be noise.
    let mut unreadable_keyid = false;
    for (n, e) in entries.range(..gap) {
        let Some(keyid_prop) = e.get("keyid").copied() else {
            continue; // below the gap every entry has its keyid
        };
        let keyid = parse_i32(keyid_prop, problems);
        unreadable_keyid |= keyid.is_none();
        let (outcome, state) = build_entry(*n, e, keyid_prop, keyid, problems);
        if let Some(id) = keyid {
            match seen.get(&id) {
                // A disabled entry takes no keyid; two enabled ones must not share one.
                Some((other, line, prior))
                    if state != State::Skipped && *prior != State::Skipped =>
                {
                    problems.at(
                        keyid_prop,
                        format!("keyid {id} is also the keyid of key entry {other} (line {line})"),
                    );
                }
                Some((_, _, prior)) if *prior != State::Skipped => {}
                _ => {
                    seen.insert(id, (*n, keyid_prop.line, state));
                }
            }
        }
        keys.extend(outcome);
    }

    if enable_sign {
        match keyid {
            None if !keyid_given => problems.whole(
                "databaseprotection.keyid (or databaseprotection.keyid.AuditRecordData) is \
                 missing but signing is enabled (enablesign): there is no key to protect new \
                 rows with; set it to the keyid of a key entry, or set \
                 databaseprotection.enablesign.AuditRecordData = false",
            ),
            None => {} // given but invalid: already reported
            Some((id, p)) => match seen.get(&id) {
                None if unreadable_keyid => {}
                None => problems.at(p, format!("no key entry has keyid {id}")),
                Some((n, _, State::Skipped)) => problems.at(
                    p,
                    format!(
                        "keyid {id} is key entry {n}, which is disabled (keylabel.{n} = null); \
                         signing needs an enabled entry"
                    ),
                ),
                Some((n, _, State::Public)) => problems.at(
                    p,
                    format!(
                        "keyid {id} is key entry {n}, a PublicCryptoToken (verify only); it \
                         cannot protect new rows"
                    ),
                ),
                Some(_) => {}
            },
        }
    }

    ProtectionSection {
        enable_sign,
        enable_verify: enable_verify.is_none_or(|(v, _)| v),
        error_on_verify_fail: error_on_verify_fail.unwrap_or(true),
        keyid: keyid.map(|(id, _)| id),
        evidence: Default::default(),
        keys,
    }
}

/// `databaseprotection.<name>` and `databaseprotection.<name>.AuditRecordData`; both are
/// validated, the table-specific one wins.
fn table_setting<'a, T>(
    props: &'a BTreeMap<String, Prop>,
    name: &str,
    mut parse: impl FnMut(&Prop) -> Option<T>,
) -> Option<(T, &'a Prop)> {
    let mut read = |key: String| props.get(&key).and_then(|p| parse(p).map(|v| (v, p)));
    let plain = read(format!("{PREFIX}{name}"));
    let table = read(format!("{PREFIX}{name}.{TABLE}"));
    table.or(plain)
}

fn parse_bool(p: &Prop, problems: &mut Problems) -> Option<bool> {
    match p.value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => {
            problems.at(p, format!("expected true or false, not {:?}", p.value));
            None
        }
    }
}

fn parse_i32(p: &Prop, problems: &mut Problems) -> Option<i32> {
    let parsed = p.value.trim().parse::<i32>();
    if parsed.is_err() {
        problems.at(
            p,
            format!("expected a decimal integer keyid, not {:?}", p.value),
        );
    }
    parsed.ok()
}

/// A text value: trimmed at both ends, as Commons Configuration does (see the module notes).
fn text(p: &Prop) -> &str {
    p.value.trim_matches(is_ws)
}

/// `sigalg.N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigAlg {
    Rsa,
    Ecdsa,
    Hmac,
}

fn parse_sigalg(p: &Prop, problems: &mut Problems) -> Option<SigAlg> {
    let v = p.value.trim();
    if v.eq_ignore_ascii_case("SHA256WithRSA") {
        Some(SigAlg::Rsa)
    } else if v.eq_ignore_ascii_case("SHA256WithECDSA") {
        Some(SigAlg::Ecdsa)
    } else if v.eq_ignore_ascii_case("HmacSHA256") {
        Some(SigAlg::Hmac)
    } else {
        problems.at(
            p,
            format!(
                "unsupported algorithm {v:?}; auditseal supports SHA256WithRSA and \
                 SHA256WithECDSA (and HmacSHA256 with version 1)"
            ),
        );
        None
    }
}

fn missing(problems: &mut Problems, n: usize, keyid_prop: &Prop, field: &str, why: &str) {
    problems.line(
        keyid_prop.line,
        &format!("{PREFIX}{field}.{n}"),
        format!("missing; key entry {n} (whose keyid.{n} is on this line) {why}"),
    );
}

fn build_entry(
    n: usize,
    e: &EntryProps<'_>,
    keyid_prop: &Prop,
    keyid: Option<i32>,
    problems: &mut Problems,
) -> (Option<KeyEntry>, State) {
    // CESeCore skips an entry whose label is the string "null"; its other keys are not read.
    if e.get("keylabel")
        .is_some_and(|p| p.value.trim().eq_ignore_ascii_case("null"))
    {
        return (None, State::Skipped);
    }
    let before = problems.count();
    let version = e.get("version").map_or(Some(2), |p| match p.value.trim() {
        "1" => Some(1),
        "2" => Some(2),
        _ => {
            problems.at(p, "expected 1 (HMAC) or 2 (signature)");
            None
        }
    });
    let sigalg = e
        .get("sigalg")
        .and_then(|p| parse_sigalg(p, problems).map(|a| (a, *p)));
    let class = match e.get("classname") {
        Some(p) => {
            let name = text(p);
            Some((name.strip_prefix(CLASS_PACKAGE).unwrap_or(name), *p))
        }
        None => {
            missing(
                problems,
                n,
                keyid_prop,
                "classname",
                "needs its token class",
            );
            None
        }
    };
    let built = match class {
        Some(("PKCS11CryptoToken", _)) => {
            pkcs11_entry(n, e, keyid_prop, keyid, version, sigalg, problems)
        }
        Some(("PublicCryptoToken", _)) => {
            public_entry(n, e, keyid_prop, keyid, version, sigalg, problems)
        }
        Some(("SoftCryptoToken", p)) => {
            problems.at(
                p,
                format!(
                    "SoftCryptoToken (PKCS#12 in data.{n}) is not supported; export the key to \
                     PKCS#8 PEM and use a [[protection.keys]] kind = \"software\" entry"
                ),
            );
            None
        }
        Some((other, p)) => {
            problems.at(
                p,
                format!(
                    "unsupported token class {other:?}; auditseal reads PKCS11CryptoToken and \
                     PublicCryptoToken entries"
                ),
            );
            None
        }
        None => None,
    };
    match built {
        Some(k @ KeyEntry::Public { .. }) if problems.count() == before => (Some(k), State::Public),
        Some(k) if problems.count() == before => (Some(k), State::Signing),
        _ => (None, State::Failed),
    }
}

fn pkcs11_entry(
    n: usize,
    e: &EntryProps<'_>,
    keyid_prop: &Prop,
    keyid: Option<i32>,
    version: Option<u8>,
    sigalg: Option<(SigAlg, &Prop)>,
    problems: &mut Problems,
) -> Option<KeyEntry> {
    let key_label = match e.get("keylabel").map(|p| (text(p), *p)) {
        Some(("", p)) => {
            problems.at(
                p,
                "empty; the key's label (CKA_LABEL) in the token is needed",
            );
            None
        }
        Some((label, _)) => Some(label.to_string()),
        None => {
            missing(
                problems,
                n,
                keyid_prop,
                "keylabel",
                "needs the key's label in the token",
            );
            None
        }
    };
    let pin = match e.get("tokenpin") {
        Some(p) => token_pin(p, problems),
        None => {
            missing(
                problems,
                n,
                keyid_prop,
                "tokenpin",
                "is a PKCS#11 key, which needs the token PIN",
            );
            None
        }
    };
    let token = match e.get("properties") {
        Some(p) => token_properties(p, problems),
        None => {
            missing(
                problems,
                n,
                keyid_prop,
                "properties",
                "needs sharedLibrary and the slot (e.g. sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, \
                 slotLabelType=SLOT_LABEL, slotLabelValue=audit)",
            );
            None
        }
    };
    if let Some(p) = e.get("data").filter(|p| !p.value.trim().is_empty()) {
        problems.warn(p, "data.N is not used for a PKCS11CryptoToken; ignored");
    }
    let algorithm = match (version, sigalg) {
        (Some(1), Some((SigAlg::Rsa | SigAlg::Ecdsa, p))) => {
            problems.warn(p, "ignored: version 1 protects with HmacSHA256");
            Some(TokenAlgorithm::HmacSHA256)
        }
        (Some(1), _) => Some(TokenAlgorithm::HmacSHA256),
        (_, Some((SigAlg::Hmac, p))) => {
            problems.at(
                p,
                format!("HmacSHA256 needs databaseprotection.version.{n} = 1"),
            );
            None
        }
        (_, Some((SigAlg::Ecdsa, _))) => Some(TokenAlgorithm::SHA256WithECDSA),
        // SHA256WithRSA is CESeCore's default for version 2.
        _ => Some(TokenAlgorithm::SHA256WithRSA),
    };
    let (keyid, key_label, pin, (library, slot), algorithm) =
        (keyid?, key_label?, pin?, token?, algorithm?);
    Some(KeyEntry::Pkcs11 {
        keyid,
        nodes: None,
        retired_after: None,
        library,
        slot_label: slot.label,
        slot_number: slot.number,
        slot_index: slot.index,
        key_label,
        key_id: None,
        pin: Some(pin),
        pin_env: None,
        pin_file: None,
        algorithm: Some(algorithm),
        sessions: None,
    })
}

/// Checks `tokenpin.N`: clear PINs only, since CESeCore's encryption key is not ours to know.
fn token_pin(p: &Prop, problems: &mut Problems) -> Option<String> {
    let pin = text(p);
    let encrypted = pin.split_once(':').is_some_and(|(prefix, _)| {
        let prefix = prefix.to_ascii_lowercase();
        prefix == "obf"
            || prefix
                .strip_prefix("enc")
                .is_some_and(|v| v.chars().all(|c| c.is_ascii_alphanumeric()))
    });
    if encrypted {
        problems.at(
            p,
            "encrypted/obfuscated PINs are not supported: put the clear PIN here or use \
             auditseal's pin_env / pin_file in a TOML configuration",
        );
        return None;
    }
    if pin.is_empty() {
        problems.at(p, "empty; a PKCS#11 key needs the token PIN");
        return None;
    }
    // CESeCore's older PBE encryption writes bare lowercase hex; a clear PIN can look alike.
    if pin.len() >= 32
        && pin.len().is_multiple_of(2)
        && pin.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        problems.warn(
            p,
            "this PIN looks like a CESeCore-encrypted PIN (long hex); it is used as the clear \
             PIN. If it is encrypted, put the clear PIN here or use auditseal's pin_env / \
             pin_file in a TOML configuration",
        );
    }
    Some(pin.to_string())
}

#[derive(Debug, Default)]
struct Slot {
    label: Option<String>,
    number: Option<u64>,
    index: Option<usize>,
}

/// `properties.N` of a PKCS11CryptoToken: the library and the slot.
fn token_properties(p: &Prop, problems: &mut Problems) -> Option<(PathBuf, Slot)> {
    let before = problems.count();
    let mut items: BTreeMap<&str, &str> = BTreeMap::new();
    for item in p.value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            problems.at(p, format!("token property {item:?} is not k=v"));
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if !TOKEN_PROPERTIES.contains(&k) {
            problems.at(
                p,
                format!(
                    "unknown token property {k:?} (auditseal reads sharedLibrary, slotLabelType, \
                     slotLabelValue, and the older slot / slotListIndex)"
                ),
            );
            continue;
        }
        if items.insert(k, v).is_some() {
            problems.at(p, format!("token property {k} is given twice"));
        }
    }
    if items.contains_key("attributesFile") {
        problems.warn(
            p,
            "attributesFile (SunPKCS11 key attributes) is not needed; ignored",
        );
    }
    let library = match items.get("sharedLibrary") {
        Some(lib) if !lib.is_empty() => Some(PathBuf::from(lib)),
        _ => {
            problems.at(
                p,
                "sharedLibrary is missing: the PKCS#11 module, e.g. \
                 sharedLibrary=/usr/lib/softhsm/libsofthsm2.so",
            );
            None
        }
    };
    let slot = slot(p, &items, problems);
    if problems.count() != before {
        return None;
    }
    Some((library?, slot?))
}

/// Slot indexes may be written `i0` (CESeCore's older `slot=i0` form) as well as `0`.
fn slot_index(v: &str) -> Option<usize> {
    v.strip_prefix('i').unwrap_or(v).parse().ok()
}

fn slot(p: &Prop, items: &BTreeMap<&str, &str>, problems: &mut Problems) -> Option<Slot> {
    let get = |k: &str| items.get(k).copied();
    let mut bad = |reason: String| {
        problems.at(p, reason);
        None
    };
    match (get("slotLabelType"), get("slotLabelValue")) {
        (Some(_), _) | (_, Some(_)) if get("slot").is_some() || get("slotListIndex").is_some() => {
            bad(
                "give either slotLabelType/slotLabelValue or the older slot/slotListIndex, \
                 not both"
                    .into(),
            )
        }
        (Some(kind), Some(value)) if !value.is_empty() => {
            match kind.to_ascii_uppercase().as_str() {
                "SLOT_NUMBER" => match value.parse() {
                    Ok(n) => Some(Slot {
                        number: Some(n),
                        ..Slot::default()
                    }),
                    Err(_) => bad(format!("slotLabelValue {value:?} is not a slot number")),
                },
                "SLOT_INDEX" => match slot_index(value) {
                    Some(i) => Some(Slot {
                        index: Some(i),
                        ..Slot::default()
                    }),
                    None => bad(format!("slotLabelValue {value:?} is not a slot index")),
                },
                "SLOT_LABEL" => Some(Slot {
                    label: Some(value.to_string()),
                    ..Slot::default()
                }),
                _ => bad(format!(
                    "slotLabelType {kind:?} is not supported (SLOT_NUMBER, SLOT_INDEX or \
                     SLOT_LABEL)"
                )),
            }
        }
        (Some(kind), _) => bad(format!("slotLabelType {kind} needs a slotLabelValue")),
        (None, Some(_)) => bad(
            "slotLabelValue needs a slotLabelType (SLOT_NUMBER, SLOT_INDEX or SLOT_LABEL)".into(),
        ),
        (None, None) => match (get("slot"), get("slotListIndex")) {
            (Some(_), Some(_)) => bad("give one of slot and slotListIndex, not both".into()),
            // The older `slot` key took a slot number, or an index when prefixed with `i`.
            (Some(v), None) if v.starts_with('i') => match slot_index(v) {
                Some(i) => Some(Slot {
                    index: Some(i),
                    ..Slot::default()
                }),
                None => bad(format!("slot {v:?} is not a slot index")),
            },
            (Some(v), None) => match v.parse() {
                Ok(n) => Some(Slot {
                    number: Some(n),
                    ..Slot::default()
                }),
                Err(_) => bad(format!("slot {v:?} is not a slot number")),
            },
            (None, Some(v)) => match slot_index(v) {
                Some(i) => Some(Slot {
                    index: Some(i),
                    ..Slot::default()
                }),
                None => bad(format!("slotListIndex {v:?} is not a slot index")),
            },
            (None, None) => bad(
                "the slot is missing: give slotLabelType (SLOT_NUMBER, SLOT_INDEX or SLOT_LABEL) \
                 and slotLabelValue"
                    .into(),
            ),
        },
    }
}

fn public_entry(
    n: usize,
    e: &EntryProps<'_>,
    keyid_prop: &Prop,
    keyid: Option<i32>,
    version: Option<u8>,
    sigalg: Option<(SigAlg, &Prop)>,
    problems: &mut Problems,
) -> Option<KeyEntry> {
    if version == Some(1) {
        let p = e.get("version").copied().unwrap_or(keyid_prop);
        problems.at(
            p,
            "a PublicCryptoToken holds a public key, which cannot check HMAC (version 1) \
             protections: an HMAC key has no public part",
        );
    }
    let algorithm = match sigalg {
        None => None,
        Some((SigAlg::Rsa, _)) => Some(SignatureAlgorithm::SHA256WithRSA),
        Some((SigAlg::Ecdsa, _)) => Some(SignatureAlgorithm::SHA256WithECDSA),
        Some((SigAlg::Hmac, p)) => {
            problems.at(
                p,
                "HmacSHA256 is not a signature algorithm; a PublicCryptoToken verifies signatures",
            );
            None
        }
    };
    let pem = match e.get("data").filter(|p| !p.value.trim().is_empty()) {
        Some(p) => match public_pem(&p.value) {
            Ok(pem) => {
                let alg = algorithm.map(|a| match a {
                    SignatureAlgorithm::SHA256WithRSA => Algorithm::Sha256WithRsa,
                    SignatureAlgorithm::SHA256WithECDSA => Algorithm::Sha256WithEcdsa,
                });
                match crate::keys::VerifyKey::from_public_pem(&pem, alg) {
                    Ok(_) => Some(pem),
                    Err(err) => {
                        let with = sigalg.map_or(String::new(), |(_, s)| {
                            format!(" (with {} = {})", s.key, s.value.trim())
                        });
                        problems.at(p, format!("not a usable public key{with}: {err}"));
                        None
                    }
                }
            }
            Err(reason) => {
                problems.at(p, reason);
                None
            }
        },
        None => {
            missing(
                problems,
                n,
                keyid_prop,
                "data",
                "is a PublicCryptoToken, which needs the base64 public key or certificate",
            );
            None
        }
    };
    Some(KeyEntry::Public {
        keyid: keyid?,
        nodes: None,
        retired_after: None,
        algorithm,
        file: None,
        pem: Some(pem?),
    })
}

/// `data.N` of a PublicCryptoToken -> PEM: base64 of PEM text, or of a DER certificate or
/// SubjectPublicKeyInfo. PEM written directly (not base64) is accepted too.
fn public_pem(value: &str) -> Result<String, String> {
    if value.contains("-----BEGIN") {
        return Ok(value.to_string());
    }
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    // Padding is optional: some tools strip it.
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let bytes = engine
        .decode(compact)
        .map_err(|e| format!("not base64: {e}"))?;
    if let Ok(text) = std::str::from_utf8(&bytes)
        && text.contains("-----BEGIN")
    {
        return Ok(text.to_string());
    }
    // An SPKI never parses as a certificate: its first element has 2 fields, not 6+.
    Ok(if crate::der::certificate_spki(&bytes).is_some() {
        crate::pem::encode("CERTIFICATE", &bytes)
    } else {
        crate::pem::encode("PUBLIC KEY", &bytes)
    })
}

// ---------------------------------------------------------------------------------------------
// cesecore.properties

fn node_id(text: &str, problems: &mut Problems) -> Option<String> {
    let props = read_properties(text, problems, |k| k == "cluster.nodeid");
    for p in props.values().filter(|p| p.key.starts_with(PREFIX)) {
        problems.warn(
            p,
            "database protection settings are read from databaseprotection.properties only; \
             ignored here",
        );
    }
    let p = props.get("cluster.nodeid")?;
    let v = p.value.trim();
    // CESeCore's sample default; it means "the host name", which is auditseal's default too.
    if v.is_empty() || v == "${hostname}" || v.eq_ignore_ascii_case("undefined") {
        return None;
    }
    if v.contains("${") {
        problems.at(
            p,
            "variable substitution is not supported here; write the node id itself",
        );
        return None;
    }
    Some(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    const RSA_CERT: &[u8] = include_bytes!("../tests/fixtures/signserver/rsa-cert.der");
    const EC_CERT: &[u8] = include_bytes!("../tests/fixtures/signserver/ec-cert.der");
    const RSA_SPKI: &[u8] = include_bytes!("../tests/fixtures/signserver/rsa-spki.der");
    const EC_SPKI: &[u8] = include_bytes!("../tests/fixtures/signserver/ec-spki.der");
    const EC_PEM: &str = include_str!("../tests/fixtures/signserver/ec-public.pem");

    fn dir() -> &'static Path {
        Path::new("/opt/signserver/conf")
    }

    fn props(text: &str) -> Vec<(String, String, usize)> {
        let (props, errors) = parse_properties(text);
        assert!(errors.is_empty(), "{errors:?}");
        props
            .into_iter()
            .map(|p| (p.key, p.value, p.line))
            .collect()
    }

    fn ok(text: &str) -> ProtectionSection {
        match parse(dir(), text, None) {
            Ok(c) => c.protection,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn err(text: &str) -> SignServerConfError {
        match parse(dir(), text, None) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    /// Asserts one problem at `line` naming `key`, whose text contains `words`.
    fn has(e: &SignServerConfError, line: usize, key: &str, words: &str) {
        let prefix = format!("/opt/signserver/conf/databaseprotection.properties:{line}: {key}: ");
        assert!(
            e.problems().iter().any(|p| {
                let p = p.to_string();
                p.starts_with(&prefix) && p.contains(words)
            }),
            "no problem {prefix}...{words} in:\n{e}"
        );
    }

    /// A valid PKCS#11 entry 0 with keyid 1 (lines 1-6), for tests to append to.
    const P11: &str = "databaseprotection.keyid = 1\n\
        databaseprotection.keyid.0 = 1\n\
        databaseprotection.keylabel.0 = dbProtKey\n\
        databaseprotection.classname.0 = org.cesecore.keys.token.PKCS11CryptoToken\n\
        databaseprotection.properties.0 = sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, slotLabelType=SLOT_NUMBER, slotLabelValue=3\n\
        databaseprotection.tokenpin.0 = foo123\n";

    fn public_entry_text(n: usize, keyid: i32, data: &str) -> String {
        format!(
            "databaseprotection.keyid.{n} = {keyid}\n\
             databaseprotection.keylabel.{n} = old\n\
             databaseprotection.classname.{n} = PublicCryptoToken\n\
             databaseprotection.data.{n} = {data}\n"
        )
    }

    #[test]
    fn properties_syntax() {
        let text = "# comment\n\
            \x20  ! another comment \\\n\
            plain=value\n\
            \tspaced   =   padded value  \n\
            colon:x\n\
            colon2 : y\n\
            white space\n\
            white2   \t  =  z\n\
            twice = = v\n\
            empty\n\
            empty2 =\n\
            cont = one, \\\n\
            \x20   two, \\\n\
            \x20   # not a comment\n\
            even = a\\\\\n\
            next = b\n\
            esc\\ key\\=x\\:y = \\t\\n\\r\\f\\\\\\q\n\
            uni = f\\u00e5r \\uD83D\\uDE00\n\
            crlf = 1\r\n\
            cr = 2\rlast = 3\\";
        assert_eq!(
            props(text),
            [
                ("plain", "value", 3),
                ("spaced", "padded value  ", 4),
                ("colon", "x", 5),
                ("colon2", "y", 6),
                ("white", "space", 7),
                ("white2", "z", 8),
                ("twice", "= v", 9),
                ("empty", "", 10),
                ("empty2", "", 11),
                ("cont", "one, two, # not a comment", 12),
                ("even", "a\\", 15),
                ("next", "b", 16),
                ("esc key=x:y", "\t\n\r\x0c\\q", 17),
                ("uni", "f\u{e5}r \u{1F600}", 18),
                ("crlf", "1", 19),
                ("cr", "2", 20),
                ("last", "3", 21),
            ]
            .map(|(k, v, l)| (k.to_string(), v.to_string(), l))
        );
        // A comment line ending in a backslash does not continue.
        assert_eq!(props("# a \\\nk=v\n"), [("k".into(), "v".into(), 2)]);
        // An empty continuation line ends the logical line.
        assert_eq!(
            props("k = a\\\n\nj = b"),
            [("k".into(), "a".into(), 1), ("j".into(), "b".into(), 3)]
        );
    }

    #[test]
    fn properties_syntax_errors_name_key_and_line() {
        let (props, errors) = parse_properties("a = 1\nbad = x\\u12G4y\nc = \\uD800\n");
        assert_eq!(props.len(), 1);
        assert_eq!(errors.len(), 2);
        assert_eq!((errors[0].line, errors[0].key.as_str()), (2, "bad"));
        assert!(errors[0].reason.contains("\\u12G4"), "{errors:?}");
        assert_eq!((errors[1].line, errors[1].key.as_str()), (3, "c"));
        let e = err(&format!("{P11}databaseprotection.version.0 = \\u00\n"));
        has(&e, 7, "databaseprotection.version.0", "malformed");
    }

    #[test]
    fn realistic_signserver_directory() {
        let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/signserver/conf");
        let c = match load(&conf) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.node_id.as_deref(), Some("signserver-node-1"));
        let p = &c.protection;
        assert!(p.enable_sign && p.enable_verify && p.error_on_verify_fail);
        assert_eq!(p.keyid, Some(400));
        assert_eq!(
            p.keys.len(),
            2,
            "the null-label entry is skipped: {:?}",
            p.keys
        );
        match &p.keys[0] {
            KeyEntry::Pkcs11 {
                keyid: 400,
                nodes: None,
                retired_after: None,
                library,
                slot_label: Some(label),
                slot_number: None,
                slot_index: None,
                key_label,
                key_id: None,
                pin: Some(pin),
                pin_env: None,
                pin_file: None,
                algorithm: Some(TokenAlgorithm::SHA256WithRSA),
                sessions: None,
            } => {
                assert_eq!(library, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
                assert_eq!(label, "SignServer audit");
                assert_eq!((key_label.as_str(), pin.as_str()), ("dbProtKey", "foo123"));
            }
            other => panic!("{other:?}"),
        }
        match &p.keys[1] {
            KeyEntry::Public {
                keyid: 300,
                nodes: None,
                retired_after: None,
                algorithm: None,
                file: None,
                pem: Some(pem),
            } => assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}"),
            other => panic!("{other:?}"),
        }
        // And the result is what config::load_keys accepts for verification.
        let public_only = ProtectionSection {
            enable_sign: false,
            keys: vec![p.keys[1].clone()],
            ..ProtectionSection::default()
        };
        let tmp = tempfile::tempdir().map_err(|e| e.to_string());
        let tmp = tmp
            .as_ref()
            .map(|t| t.path())
            .unwrap_or(Path::new("/nonexistent"));
        let loaded =
            crate::config::load_keys(&public_only, tmp, crate::config::KeyMode::VerifyOnly);
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    }

    #[test]
    fn load_reports_a_missing_file_and_reads_latin1() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let e = load(tmp.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("databaseprotection.properties: cannot read"),
            "{e}"
        );
        // ISO-8859-1 bytes (Java's default encoding for .properties): 0xE5 is å.
        let mut bytes = P11.replace("dbProtKey", "k").into_bytes();
        bytes.extend_from_slice(b"databaseprotection.keylabel.0 = n\xe5got\n");
        let text = decode_text(&bytes);
        assert!(text.contains("n\u{e5}got"));
        std::fs::write(tmp.path().join(PROTECTION_FILE), &bytes).expect("write");
        // keylabel.0 now given twice: reported with both lines.
        let e = load(tmp.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains(":7: databaseprotection.keylabel.0: given twice (also on line 3)"),
            "{e}"
        );
    }

    #[test]
    fn null_label_skips_the_entry_without_validating_it() {
        let text = format!(
            "{P11}databaseprotection.keyid.1 = 7\n\
             databaseprotection.keylabel.1 = NULL\n\
             databaseprotection.classname.1 = SoftCryptoToken\n\
             databaseprotection.version.1 = 9\n\
             databaseprotection.sigalg.1 = MD5WithRSA\n\
             databaseprotection.keyid.2 = 8\n\
             databaseprotection.keylabel.2 = null\n"
        );
        let p = ok(&text);
        assert_eq!(p.keys.len(), 1);
        assert_eq!(p.keys[0].keyid(), 1);
        // A skipped entry cannot be the signing key.
        let e = err(&text.replace(
            "databaseprotection.keyid = 1",
            "databaseprotection.keyid = 7",
        ));
        has(
            &e,
            1,
            "databaseprotection.keyid",
            "disabled (keylabel.1 = null)",
        );
    }

    #[test]
    fn table_suffix_wins_and_defaults_apply() {
        let p = ok(P11);
        assert!(p.enable_sign && p.enable_verify && p.error_on_verify_fail);
        let p = ok(&format!(
            "{P11}databaseprotection.enablesign = true\n\
             databaseprotection.enablesign.AuditRecordData = FALSE \n\
             databaseprotection.enableverify.AuditRecordData = true\n\
             databaseprotection.enableverify = false\n\
             databaseprotection.erroronverifyfail = false\n\
             databaseprotection.keyid.AuditRecordData = 5\n"
        ));
        assert!(!p.enable_sign && p.enable_verify && !p.error_on_verify_fail);
        assert_eq!(p.keyid, Some(5));
        // The unused plain value is still validated.
        let e = err(&format!(
            "{P11}databaseprotection.enablesign = yes\n\
             databaseprotection.enablesign.AuditRecordData = true\n"
        ));
        has(
            &e,
            7,
            "databaseprotection.enablesign",
            "expected true or false",
        );
    }

    #[test]
    fn gap_rule() {
        let text = format!(
            "{P11}databaseprotection.keyid.2 = 9\n\
             databaseprotection.classname.2 = PublicCryptoToken\n\
             databaseprotection.keylabel.1 = orphan\n"
        );
        let e = err(&text);
        assert_eq!(e.problems().len(), 3, "{e}");
        has(&e, 7, "databaseprotection.keyid.2", "keyid.1 is missing");
        has(&e, 8, "databaseprotection.classname.2", "silently ignore");
        has(
            &e,
            9,
            "databaseprotection.keylabel.1",
            "key entry 1 is never read",
        );
        assert!(
            e.to_string()
                .starts_with("3 problems in the SignServer configuration:\n")
        );
    }

    #[test]
    fn pkcs11_slots_and_algorithms() {
        let slot = |props: &str| {
            let p = ok(&P11.replace(
                "sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, slotLabelType=SLOT_NUMBER, slotLabelValue=3",
                props,
            ));
            match &p.keys[0] {
                KeyEntry::Pkcs11 {
                    slot_label,
                    slot_number,
                    slot_index,
                    ..
                } => (slot_label.clone(), *slot_number, *slot_index),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            slot("sharedLibrary=/l.so,slotLabelType=SLOT_NUMBER,slotLabelValue=3"),
            (None, Some(3), None)
        );
        assert_eq!(
            slot(" slotLabelType = SLOT_INDEX , slotLabelValue=i0, sharedLibrary=/l.so, "),
            (None, None, Some(0))
        );
        assert_eq!(
            slot("sharedLibrary=/l.so, slotLabelType=SLOT_INDEX, slotLabelValue=2"),
            (None, None, Some(2))
        );
        assert_eq!(
            slot("sharedLibrary=/l.so, slotLabelType=SLOT_LABEL, slotLabelValue=my token"),
            (Some("my token".into()), None, None)
        );
        assert_eq!(slot("sharedLibrary=/l.so, slot=5"), (None, Some(5), None));
        assert_eq!(slot("sharedLibrary=/l.so, slot=i1"), (None, None, Some(1)));
        assert_eq!(
            slot("sharedLibrary=/l.so, slotListIndex=4, attributesFile=/etc/a.cfg"),
            (None, None, Some(4))
        );

        let alg = |extra: &str| match &ok(&format!("{P11}{extra}")).keys[0] {
            KeyEntry::Pkcs11 { algorithm, .. } => *algorithm,
            other => panic!("{other:?}"),
        };
        assert_eq!(alg(""), Some(TokenAlgorithm::SHA256WithRSA));
        assert_eq!(
            alg("databaseprotection.sigalg.0 = sha256withecdsa\n"),
            Some(TokenAlgorithm::SHA256WithECDSA)
        );
        assert_eq!(
            alg("databaseprotection.version.0 = 1\n"),
            Some(TokenAlgorithm::HmacSHA256)
        );
        assert_eq!(
            alg("databaseprotection.version.0 = 1\ndatabaseprotection.sigalg.0 = HmacSHA256\n"),
            Some(TokenAlgorithm::HmacSHA256)
        );
        // A clear PIN that looks like hex is used (with a warning), trailing blanks trimmed.
        let hex = "0123456789abcdef0123456789abcdef";
        match &ok(&P11.replace("foo123", &format!("{hex}  "))).keys[0] {
            KeyEntry::Pkcs11 { pin, .. } => assert_eq!(pin.as_deref(), Some(hex)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pkcs11_errors() {
        let with = |from: &str, to: &str| err(&P11.replace(from, to));
        let key = "databaseprotection.properties.0";
        has(
            &with(
                "sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, ",
                "colour=blue, ",
            ),
            5,
            key,
            "unknown token property \"colour\"",
        );
        has(
            &with("sharedLibrary=/usr/lib/softhsm/libsofthsm2.so, ", ""),
            5,
            key,
            "sharedLibrary is missing",
        );
        has(
            &with(", slotLabelType=SLOT_NUMBER, slotLabelValue=3", ""),
            5,
            key,
            "the slot is missing",
        );
        has(
            &with("slotLabelValue=3", "slotLabelValue=x"),
            5,
            key,
            "not a slot number",
        );
        has(
            &with("SLOT_NUMBER", "SUN_FILE"),
            5,
            key,
            "\"SUN_FILE\" is not supported",
        );
        has(
            &with("slotLabelValue=3", "slotLabelValue=3, slot=4"),
            5,
            key,
            "not both",
        );
        has(
            &with("slotLabelValue=3", "junk"),
            5,
            key,
            "\"junk\" is not k=v",
        );
        has(
            &with("databaseprotection.tokenpin.0 = foo123\n", ""),
            2,
            "databaseprotection.tokenpin.0",
            "missing; key entry 0",
        );
        for pin in ["OBF:1v2j1uum1xtv", "encv1:abc:100:ff", "enc:00ff"] {
            has(
                &with("foo123", pin),
                6,
                "databaseprotection.tokenpin.0",
                "encrypted/obfuscated PINs are not supported",
            );
        }
        has(
            &with("databaseprotection.keylabel.0 = dbProtKey\n", ""),
            2,
            "databaseprotection.keylabel.0",
            "missing",
        );
        has(
            &with(
                "databaseprotection.classname.0 = org.cesecore.keys.token.PKCS11CryptoToken\n",
                "",
            ),
            2,
            "databaseprotection.classname.0",
            "missing",
        );
        let e = err(&format!("{P11}databaseprotection.sigalg.0 = HmacSHA256\n"));
        has(
            &e,
            7,
            "databaseprotection.sigalg.0",
            "needs databaseprotection.version.0 = 1",
        );
        let e = err(&format!("{P11}databaseprotection.sigalg.0 = SHA1WithRSA\n"));
        has(
            &e,
            7,
            "databaseprotection.sigalg.0",
            "unsupported algorithm \"SHA1WithRSA\"",
        );
        let e = err(&format!("{P11}databaseprotection.version.0 = 3\n"));
        has(
            &e,
            7,
            "databaseprotection.version.0",
            "expected 1 (HMAC) or 2",
        );
        let e = err(&P11.replace("keyid.0 = 1", "keyid.0 = one"));
        has(&e, 2, "databaseprotection.keyid.0", "decimal integer");
        // No second "no key entry has keyid 1" for the same mistake.
        assert_eq!(e.problems().len(), 1, "{e}");
    }

    #[test]
    fn token_class_errors() {
        let e = err(&P11.replace(
            "org.cesecore.keys.token.PKCS11CryptoToken",
            "SoftCryptoToken",
        ));
        has(
            &e,
            4,
            "databaseprotection.classname.0",
            "SoftCryptoToken (PKCS#12 in data.0) is not supported; export the key to PKCS#8 PEM",
        );
        let e = err(&P11.replace("PKCS11CryptoToken", "AzureCryptoToken"));
        has(
            &e,
            4,
            "databaseprotection.classname.0",
            "unsupported token class \"AzureCryptoToken\"",
        );
    }

    #[test]
    fn global_key_errors() {
        let e = err(&format!(
            "{P11}databaseprotection.enablesing = true\n\
             databaseprotection.enableverify.CertificateData = false\n\
             databaseprotection.keyid.01 = 3\n\
             databaseprotection.erroronverifyfail = maybe\n\
             databaseprotection.keyid.AuditRecordData = x\n\
             other.setting = ignored\n\
             databaseprotection.keyid = 1\n"
        ));
        has(
            &e,
            7,
            "databaseprotection.enablesing",
            "unknown database protection key",
        );
        has(
            &e,
            8,
            "databaseprotection.enableverify.CertificateData",
            "applies to table CertificateData",
        );
        has(
            &e,
            9,
            "databaseprotection.keyid.01",
            "without leading zeros",
        );
        has(
            &e,
            10,
            "databaseprotection.erroronverifyfail",
            "expected true or false",
        );
        has(
            &e,
            11,
            "databaseprotection.keyid.AuditRecordData",
            "decimal integer",
        );
        has(
            &e,
            13,
            "databaseprotection.keyid",
            "given twice (also on line 1)",
        );
        assert_eq!(e.problems().len(), 6, "{e}");
    }

    #[test]
    fn current_keyid_checks() {
        let no_keyid = P11.replace("databaseprotection.keyid = 1\n", "");
        let e = err(&no_keyid);
        assert_eq!(e.problems().len(), 1);
        assert!(
            e.to_string().starts_with(
                "/opt/signserver/conf/databaseprotection.properties: databaseprotection.keyid"
            ),
            "{e}"
        );
        // Without signing, no current key is needed.
        let p = ok(&format!(
            "{no_keyid}databaseprotection.enablesign = false\n"
        ));
        assert_eq!((p.enable_sign, p.keyid), (false, None));
        let e = err(&P11.replace("keyid = 1", "keyid = 2"));
        has(
            &e,
            1,
            "databaseprotection.keyid",
            "no key entry has keyid 2",
        );
        let text = format!(
            "{P11}{}",
            public_entry_text(1, 2, &STANDARD.encode(RSA_SPKI))
        );
        let e = err(&text.replace("keyid = 1", "keyid = 2"));
        has(
            &e,
            1,
            "databaseprotection.keyid",
            "PublicCryptoToken (verify only)",
        );
        let e = err(&format!(
            "{P11}{}",
            public_entry_text(1, 1, &STANDARD.encode(RSA_SPKI))
        ));
        has(
            &e,
            7,
            "databaseprotection.keyid.1",
            "keyid 1 is also the keyid of key entry 0 (line 2)",
        );
    }

    #[test]
    fn public_data_forms() {
        let public = |data: &str, extra: &str| {
            let p = ok(&format!("{P11}{}{extra}", public_entry_text(1, 2, data)));
            match &p.keys[1] {
                KeyEntry::Public {
                    keyid: 2,
                    nodes: None,
                    retired_after: None,
                    algorithm,
                    file: None,
                    pem: Some(pem),
                } => (*algorithm, pem.clone()),
                other => panic!("{other:?}"),
            }
        };
        // base64 of PEM text, wrapped over lines.
        let b64 = STANDARD.encode(EC_PEM);
        let (alg, pem) = public(&format!("{} \\\n   {}", &b64[..40], &b64[40..]), "");
        assert_eq!((alg, pem.as_str()), (None, EC_PEM));
        // DER certificates and SubjectPublicKeyInfos.
        for (der, label) in [
            (RSA_CERT, "CERTIFICATE"),
            (EC_CERT, "CERTIFICATE"),
            (RSA_SPKI, "PUBLIC KEY"),
            (EC_SPKI, "PUBLIC KEY"),
        ] {
            let (_, pem) = public(&STANDARD.encode(der), "");
            assert_eq!(pem, crate::pem::encode(label, der));
        }
        // Unpadded base64 is accepted; an explicit sigalg is kept.
        let (alg, _) = public(
            STANDARD.encode(EC_CERT).trim_end_matches('='),
            "databaseprotection.sigalg.1 = SHA256withECDSA\n",
        );
        assert_eq!(alg, Some(SignatureAlgorithm::SHA256WithECDSA));
    }

    #[test]
    fn public_errors() {
        let entry = |data: &str, extra: &str| {
            err(&format!("{P11}{}{extra}", public_entry_text(1, 2, data)))
        };
        let data = "databaseprotection.data.1";
        has(&entry("not*base64", ""), 10, data, "not base64");
        has(
            &entry(&STANDARD.encode(b"hello"), ""),
            10,
            data,
            "not a usable public key",
        );
        let e = entry(
            &STANDARD.encode(EC_CERT),
            "databaseprotection.sigalg.1 = SHA256WithRSA\n",
        );
        has(
            &e,
            10,
            data,
            "with databaseprotection.sigalg.1 = SHA256WithRSA",
        );
        let e = entry(
            &STANDARD.encode(RSA_CERT),
            "databaseprotection.version.1 = 1\n",
        );
        has(
            &e,
            11,
            "databaseprotection.version.1",
            "an HMAC key has no public part",
        );
        let e = entry(
            &STANDARD.encode(RSA_CERT),
            "databaseprotection.sigalg.1 = HmacSHA256\n",
        );
        has(
            &e,
            11,
            "databaseprotection.sigalg.1",
            "not a signature algorithm",
        );
        let e = err(&format!(
            "{P11}{}",
            public_entry_text(1, 2, "").replace("databaseprotection.data.1 = \n", "")
        ));
        has(&e, 7, data, "needs the base64 public key or certificate");
    }

    #[test]
    fn cesecore_node_id() {
        let node = |text: &str| parse(dir(), P11, Some(text)).map(|c| c.node_id);
        assert_eq!(
            node("cluster.nodeid = node-7 \nother=1\nother=2\n")
                .ok()
                .flatten()
                .as_deref(),
            Some("node-7")
        );
        assert_eq!(node("cluster.nodeid=${hostname}").ok(), Some(None));
        assert_eq!(node("cluster.nodeid = Undefined").ok(), Some(None));
        assert_eq!(node("cluster.nodeid =").ok(), Some(None));
        assert_eq!(node("# nothing\n").ok(), Some(None));
        assert_eq!(parse(dir(), P11, None).ok().map(|c| c.node_id), Some(None));
        let e = node("cluster.nodeid = ${env:NODE}")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with(
                "/opt/signserver/conf/cesecore.properties:1: cluster.nodeid: variable substitution"
            ),
            "{e}"
        );
        let e = node("cluster.nodeid = a\ncluster.nodeid = b\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("cesecore.properties:2: cluster.nodeid: given twice"),
            "{e}"
        );
    }
}
