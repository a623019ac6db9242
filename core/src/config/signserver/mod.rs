//! Reads an existing SignServer (CESeCore) configuration directory, so operators can bring
//! `databaseprotection.properties` and `cesecore.properties` unchanged (`--signserver-conf DIR`).
//! The keys read are those docs/OPERATIONS.md "A SignServer configuration, unchanged" lists.
//!
//! Decisions:
//! - Every problem found is reported, not just the first: one problem is returned as
//!   [`SignServerConfError::Entry`] or [`SignServerConfError::File`], several as
//!   [`SignServerConfError::Several`] (one per line when displayed); `SignServerConfError::problems`
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
use crate::crypto::token::Algorithm;

mod entry;
mod properties;

use entry::*;
use properties::{Prop, decode_text, is_ws, parse_properties};

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
    #[cfg(test)]
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
/// Every problem is reported (each one a `SignServerConfError::Entry` or `File`) with file, line and key.
pub fn load(dir: &Path) -> Result<SignServerConf, SignServerConfError> {
    let path = dir.join(PROTECTION_FILE);
    let properties = std::fs::read(&path).map_err(|e| SignServerConfError::File {
        file: path.clone(),
        reason: format!("cannot read it ({e}); a SignServer configuration directory needs it"),
    })?;
    let warn_utf8 = |file: &Path, looks_utf8: bool| {
        if looks_utf8 {
            tracing::warn!(
                file = %file.display(),
                "the file looks like UTF-8, but Java (and so SignServer) reads .properties files \
                 as ISO-8859-1: non-ASCII characters are read as Java reads them (ö as Ã¶); write \
                 them as \\uXXXX escapes to mean them"
            );
        }
    };
    let (properties, looks_utf8) = decode_text(&properties);
    warn_utf8(&path, looks_utf8);
    let path = dir.join(CESECORE_FILE);
    let cesecore = match std::fs::read(&path) {
        Ok(bytes) => {
            let (text, looks_utf8) = decode_text(&bytes);
            warn_utf8(&path, looks_utf8);
            Some(text)
        }
        // Optional: without it the node id comes from elsewhere.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(SignServerConfError::File {
                file: path,
                reason: format!("cannot read it: {e}"),
            });
        }
    };
    parse(dir, &properties, cesecore.as_deref())
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
    let entries = key_entries(props, problems);
    let enable_sign = table_setting(props, "enablesign", |p| parse_bool(p, problems));
    let enable_verify = table_setting(props, "enableverify", |p| parse_bool(p, problems));
    // CESeCore treats every value but "false" as true here.
    let error_on_verify_fail = props
        .get(&format!("{PREFIX}erroronverifyfail"))
        .map(|p| !p.value.trim().eq_ignore_ascii_case("false"));
    let keyid = table_setting(props, "keyid", |p| parse_i32(p, problems));
    let keyid_given = [format!("{PREFIX}keyid"), format!("{PREFIX}keyid.{TABLE}")]
        .iter()
        .any(|k| props.contains_key(k));
    // Absent, CESeCore does not sign (its default is false), and neither does auditseal.
    let enable_sign = enable_sign.is_some_and(|(v, _)| v);
    let gap = first_gap(&entries, problems);
    let built = build_entries(&entries, gap, problems);
    if enable_sign {
        check_current(keyid, keyid_given, &built, problems);
    }
    ProtectionSection {
        enable_sign,
        enable_verify: enable_verify.is_none_or(|(v, _)| v),
        error_on_verify_fail: error_on_verify_fail.unwrap_or(true),
        keyid: keyid.map(|(id, _)| id),
        evidence: Default::default(),
        keys: built.keys,
    }
}

/// The `databaseprotection.<field>.<N>` settings by entry number N; anything else that is not a
/// global setting is reported.
fn key_entries<'a>(
    props: &'a BTreeMap<String, Prop>,
    problems: &mut Problems,
) -> BTreeMap<usize, EntryProps<'a>> {
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
            // SignServer and EJBCA protect other tables with the same file: not ours to read.
            KeyKind::OtherTable(table) => problems.warn(
                p,
                &format!("applies to table {table}, not to the audit log ({TABLE}); ignored"),
            ),
            KeyKind::BadIndex => problems.at(
                p,
                "CESeCore never reads this key: entry numbers are 0, 1, 2, ... without leading \
                 zeros",
            ),
            KeyKind::Unknown => problems.at(p, "unknown database protection key"),
        }
    }
    entries
}

/// The first entry number without a keyid: CESeCore scans N = 0, 1, 2, ... and stops there, so
/// every entry after it is reported (CESeCore would silently ignore it).
fn first_gap(entries: &BTreeMap<usize, EntryProps<'_>>, problems: &mut Problems) -> usize {
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
    gap
}

/// The key entries CESeCore reads (those before `gap`), translated.
struct Built {
    keys: Vec<KeyEntry>,
    /// keyid -> (entry number, line, outcome), for the checks of the current keyid.
    seen: BTreeMap<i32, (usize, usize, State)>,
    /// An unreadable keyid.N may be the current one: then "no entry has it" would be noise.
    unreadable_keyid: bool,
}

fn build_entries(
    entries: &BTreeMap<usize, EntryProps<'_>>,
    gap: usize,
    problems: &mut Problems,
) -> Built {
    let mut built = Built {
        keys: Vec::new(),
        seen: BTreeMap::new(),
        unreadable_keyid: false,
    };
    for (n, e) in entries.range(..gap) {
        let Some(keyid_prop) = e.get("keyid").copied() else {
            continue; // below the gap every entry has its keyid
        };
        let keyid = parse_i32(keyid_prop, problems);
        built.unreadable_keyid |= keyid.is_none();
        let (outcome, state) = build_entry(*n, e, keyid_prop, keyid, problems);
        if let Some(id) = keyid {
            match built.seen.get(&id) {
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
                    built.seen.insert(id, (*n, keyid_prop.line, state));
                }
            }
        }
        built.keys.extend(outcome);
    }
    built
}

/// With signing enabled, the current keyid must name an enabled entry. A PublicCryptoToken
/// there is allowed: CESeCore's database CLI is set up that way to verify, and a server refuses
/// a verify-only current key when it loads the keys.
fn check_current(
    keyid: Option<(i32, &Prop)>,
    keyid_given: bool,
    built: &Built,
    problems: &mut Problems,
) {
    match keyid {
        None if !keyid_given => problems.whole(
            "databaseprotection.keyid (or databaseprotection.keyid.AuditRecordData) is \
             missing but signing is enabled (enablesign): there is no key to protect new \
             rows with; set it to the keyid of a key entry, or set \
             databaseprotection.enablesign.AuditRecordData = false",
        ),
        None => {} // given but invalid: already reported
        Some((id, p)) => match built.seen.get(&id) {
            None if built.unreadable_keyid => {}
            None => problems.at(p, format!("no key entry has keyid {id}")),
            Some((n, _, State::Skipped)) => problems.at(
                p,
                format!(
                    "keyid {id} is key entry {n}, which is disabled (keylabel.{n} = null); \
                     signing needs an enabled entry"
                ),
            ),
            Some(_) => {}
        },
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

/// `sigalg.N`: by its name, case ignored as Java's provider lookup does.
fn parse_sigalg(p: &Prop, problems: &mut Problems) -> Option<Algorithm> {
    let v = p.value.trim();
    let found = Algorithm::from_name(v);
    if found.is_none() {
        let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        problems.at(
            p,
            format!(
                "unsupported algorithm {v:?}; auditseal supports {} (HmacSHA256 with version 1)",
                names.join(", ")
            ),
        );
    }
    found
}

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
mod tests;
