//! `additionalDetails`: the XML form written by Java's `java.beans.XMLEncoder` for an
//! insertion-ordered map (docs/FORMAT.md section 4).
//!
//! The stored XML string is the protected text and is never re-serialized, so [`encode`] must be
//! byte-identical to XMLEncoder and [`decode`] must accept anything XMLEncoder writes for such a
//! map. Facts below were checked against OpenJDK 17.0.15 (and 25 for number formatting):
//! - `&amp; &lt; &gt; &quot; &apos;` and `&#13;` for CR; tab, LF, DEL, C1 and other non-ASCII raw;
//! - characters XML 1.0 cannot carry (U+0000..U+001F except tab/LF/CR, U+FFFE, U+FFFF, lone
//!   surrogates) become `<char code="#1f"/>` elements inside the `<string>`, the code in lowercase
//!   hexadecimal (`#` is `Integer.decode`'s hex prefix), one element per UTF-16 unit;
//! - empty string `<string></string>`, empty containers `<object class="..."/>`;
//! - numbers use `Integer/Long/Float/Double.toString` of the JVM (see `java_float`);
//! - shared containers and dates are written once with `id="ArrayList0"` and later as
//!   `<object idref="ArrayList0"/>`; the decoder resolves these.

mod decode;
mod java_float;
mod java_number;
mod listing;

pub use decode::decode;
use java_number::{java_decode_integer, java_float_syntax};
pub use listing::{Listing, encode_listed, push_listing};

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// One value in the details map. Mirrors the JSON an API client sends and what Java can write.
#[derive(Debug, Clone, PartialEq)]
pub enum DetailValue {
    Null,
    String(String),
    /// `<int>`
    Int(i32),
    /// `<long>`
    Long(i64),
    /// `<boolean>`
    Bool(bool),
    /// `<float>`
    Float(f32),
    /// `<double>`
    Double(f64),
    /// `<object class="java.util.Date"><long>millis</long></object>`
    Date(i64),
    /// `<class>name</class>`
    Class(String),
    /// `java.util.ArrayList`
    List(Vec<DetailValue>),
    /// Nested `java.util.LinkedHashMap`, insertion order.
    Map(Vec<(String, DetailValue)>),
}

/// A whole details map (top level), insertion-ordered.
pub type Details = Vec<(String, DetailValue)>;

/// Deepest nesting of maps/lists accepted by [`decode`] and [`from_json`] (the top-level map is
/// level 1); bounds recursion on untrusted input.
pub const MAX_DEPTH: usize = 64;

/// Most values [`decode`] will produce, counting copies made for `idref`; stops a small document
/// from expanding exponentially through nested references.
pub const MAX_VALUES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum DetailsError {
    /// Not well-formed XML, or XML that is not a valid XMLEncoder document (bad number, missing
    /// argument, unknown reference, text where none belongs, ...).
    #[error("additionalDetails XML is malformed at byte {position}: {reason}")]
    Malformed { position: u64, reason: String },
    /// Well-formed XMLEncoder output using an element, class or construct this module does not map
    /// to a [`DetailValue`].
    #[error("additionalDetails XML at byte {position} uses {element}, which is not supported")]
    Unsupported { position: u64, element: String },
    /// The document's single value is not a map.
    #[error("additionalDetails XML must hold a map at top level, found {found}")]
    NotAMap { found: String },
    /// Maps and lists nest deeper than [`MAX_DEPTH`].
    #[error("details nest deeper than {limit} levels")]
    TooDeep { limit: usize },
    /// Decoding would produce more than [`MAX_VALUES`] values.
    #[error("details expand to more than {limit} values")]
    TooLarge { limit: usize },
    /// A JSON value that has no details equivalent.
    #[error("details JSON value for key {key:?} cannot be used: {reason}")]
    Json { key: String, reason: String },
}

/// The `java version` attribute our details XML carries (it is protected text; any value is
/// valid, this is the JDK whose XMLEncoder output we reproduce).
pub const JAVA_VERSION: &str = "21.0.5";

/// Which Java map class the top-level map is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MapClass {
    /// `org.cesecore.util.Base64PutHashMap`: applies [`base64_put_rule`] to top-level String
    /// values.
    #[default]
    Base64PutHashMap,
    /// `java.util.LinkedHashMap`: values stored as given.
    LinkedHashMap,
}

impl MapClass {
    /// The Java class name written in `<object class="...">`.
    pub fn java_name(self) -> &'static str {
        match self {
            MapClass::Base64PutHashMap => "org.cesecore.util.Base64PutHashMap",
            MapClass::LinkedHashMap => LINKED_HASH_MAP,
        }
    }
}

const LINKED_HASH_MAP: &str = "java.util.LinkedHashMap";
const ARRAY_LIST: &str = "java.util.ArrayList";
const DATE: &str = "java.util.Date";
const B64_PREFIX: &str = "B64:";

/// Map classes whose XMLEncoder form is `<void method="put">` children.
const MAP_CLASSES: &[&str] = &[
    "org.cesecore.util.Base64PutHashMap",
    LINKED_HASH_MAP,
    "java.util.HashMap",
    "java.util.TreeMap",
    "java.util.Hashtable",
];

/// List classes whose XMLEncoder form is `<void method="add">` children.
const LIST_CLASSES: &[&str] = &[ARRAY_LIST, "java.util.LinkedList", "java.util.Vector"];

/// CESeCore's `Base64PutHashMap.put` rule (`StringTools.putBase64String(s, true)`): a value that
/// is empty, already starts with `B64:` or is only printable ASCII (32..=126) is kept; anything
/// else becomes `B64:` + standard padded base64 of its UTF-8 bytes.
pub fn base64_put_rule(value: &str) -> Cow<'_, str> {
    if value.is_empty()
        || value.starts_with(B64_PREFIX)
        || value.bytes().all(|b| (32..=126).contains(&b))
    {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(format!("{B64_PREFIX}{}", STANDARD.encode(value.as_bytes())))
    }
}

// ------------------------------------------------------------------------------------------------
// Encoding

/// Encodes exactly as XMLEncoder does (byte-identical), with `java version="<java_version>"`.
///
/// With [`MapClass::Base64PutHashMap`] the put rule ([`base64_put_rule`]) applies to top-level
/// String values only; nested maps are `java.util.LinkedHashMap` (no rule). Keys are put in order
/// with Java map semantics: a repeated key keeps its first position and takes the last value.
/// `<double>`/`<float>` digits are those of JDK 19 and later (see `java_float`);
/// `java_version` is written as given and must not contain `"`, `<` or `&`.
pub fn encode(details: &Details, class: MapClass, java_version: &str) -> String {
    encode_puts(&java_puts(details, class), class, java_version)
}

/// A map's entries as Java's map holds them after `entries` are put in order: each key once, at
/// its first place, with its last value; for a Base64PutHashMap, string values through its put
/// rule ([`base64_put_rule`]). This is what [`decode`] returns for the map's XML.
fn java_puts(entries: &[(String, DetailValue)], class: MapClass) -> Vec<Put<'_>> {
    let base64 = class == MapClass::Base64PutHashMap;
    let mut order: Vec<Put<'_>> = Vec::with_capacity(entries.len());
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (key, value) in entries {
        let value = match value {
            DetailValue::String(s) if base64 => match base64_put_rule(s) {
                Cow::Borrowed(_) => Cow::Borrowed(value),
                Cow::Owned(encoded) => Cow::Owned(DetailValue::String(encoded)),
            },
            _ => Cow::Borrowed(value),
        };
        match index.get(key.as_str()) {
            Some(&i) => order[i].1 = value,
            None => {
                index.insert(key, order.len());
                order.push((key, value));
            }
        }
    }
    order
}

/// An entry of a map after Java's puts ([`java_puts`]): its key and the value it holds.
type Put<'a> = (&'a str, Cow<'a, DetailValue>);

/// The XML of a top-level map of class `class` holding `top` (already put, [`java_puts`]).
fn encode_puts(top: &[Put<'_>], class: MapClass, java_version: &str) -> String {
    let mut w = XmlWriter {
        out: String::with_capacity(128 + top.len() * 96),
    };
    w.line(0, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    w.line(
        0,
        &format!(r#"<java version="{java_version}" class="java.beans.XMLDecoder">"#),
    );
    w.map_of_puts(1, class.java_name(), top);
    w.line(0, "</java>");
    w.out
}

struct XmlWriter {
    out: String,
}

impl XmlWriter {
    fn line(&mut self, indent: usize, text: &str) {
        self.out.extend(std::iter::repeat_n(' ', indent));
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// A map of class `class` holding `order` (already put, [`java_puts`]).
    fn map_of_puts(&mut self, indent: usize, class: &str, order: &[Put<'_>]) {
        if order.is_empty() {
            self.line(indent, &format!(r#"<object class="{class}"/>"#));
            return;
        }
        self.line(indent, &format!(r#"<object class="{class}">"#));
        for (key, value) in order {
            self.line(indent + 1, r#"<void method="put">"#);
            self.line(indent + 2, &java_string(key));
            self.value(indent + 2, value);
            self.line(indent + 1, "</void>");
        }
        self.line(indent, "</object>");
    }

    fn value(&mut self, indent: usize, value: &DetailValue) {
        match value {
            DetailValue::Null => self.line(indent, "<null/>"),
            DetailValue::String(s) => self.line(indent, &java_string(s)),
            DetailValue::Int(i) => self.line(indent, &format!("<int>{i}</int>")),
            DetailValue::Long(l) => self.line(indent, &format!("<long>{l}</long>")),
            DetailValue::Bool(b) => self.line(indent, &format!("<boolean>{b}</boolean>")),
            DetailValue::Float(f) => {
                let text = java_float::float_to_string(*f);
                self.line(indent, &format!("<float>{text}</float>"));
            }
            DetailValue::Double(d) => {
                let text = java_float::double_to_string(*d);
                self.line(indent, &format!("<double>{text}</double>"));
            }
            DetailValue::Date(millis) => {
                self.line(indent, &format!(r#"<object class="{DATE}">"#));
                self.line(indent + 1, &format!("<long>{millis}</long>"));
                self.line(indent, "</object>");
            }
            DetailValue::Class(name) => {
                // Java writes Class.getName() unescaped; real class names contain nothing that
                // needs escaping, so escaping keeps identical bytes and always-valid XML.
                let mut text = String::from("<class>");
                escape_into(&mut text, name);
                text.push_str("</class>");
                self.line(indent, &text);
            }
            DetailValue::List(items) if items.is_empty() => {
                self.line(indent, &format!(r#"<object class="{ARRAY_LIST}"/>"#));
            }
            DetailValue::List(items) => {
                self.line(indent, &format!(r#"<object class="{ARRAY_LIST}">"#));
                for item in items {
                    self.line(indent + 1, r#"<void method="add">"#);
                    self.value(indent + 2, item);
                    self.line(indent + 1, "</void>");
                }
                self.line(indent, "</object>");
            }
            // Nested maps are LinkedHashMaps: their puts without the Base64PutHashMap rule.
            DetailValue::Map(entries) => self.map_of_puts(
                indent,
                LINKED_HASH_MAP,
                &java_puts(entries, MapClass::LinkedHashMap),
            ),
        }
    }
}

/// `XMLEncoder.createString`: `<string>` with Java's escaping.
fn java_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 17);
    out.push_str("<string>");
    escape_into(&mut out, s);
    out.push_str("</string>");
    out
}

/// Java's `isValidCharCode`: the XML 1.0 `Char` production.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            // Only BMP code points reach here (a Rust char is never a surrogate).
            c => out.push_str(&format!(r##"<char code="#{:x}"/>"##, u32::from(c))),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Decoding

/// For display, exactly as CESeCore shows a top-level value (`Base64GetHashMap.get`, that is
/// `StringTools.getBase64String`; docs/FORMAT.md section 4): a value that starts with `B64:`, the
/// prefix in any case, and has something after it is base64-decoded with Bouncy Castle's rules
/// ([`lenient_base64`]) and the bytes read as UTF-8, each invalid sequence becoming U+FFFD (as
/// Java's `new String(bytes, UTF_8)` does). A value that does not decode, `B64:` alone, or one
/// without the prefix is shown as stored.
pub fn display_string(s: &str) -> Cow<'_, str> {
    let data = match s.get(..B64_PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(B64_PREFIX) => &s[B64_PREFIX.len()..],
        _ => return Cow::Borrowed(s),
    };
    if data.is_empty() {
        return Cow::Borrowed(s);
    }
    match lenient_base64(data) {
        Some(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        None => Cow::Borrowed(s),
    }
}

/// Base64 as Bouncy Castle's `Base64.decode` (which CESeCore uses) reads it: space, tab, CR and
/// LF anywhere are skipped; what is left must be whole groups of 4 characters of the standard
/// alphabet, `=` only as the padding of the last group (`xx==`, `xxx=`); bits after the last
/// whole byte are ignored. Nothing left decodes to no bytes. None when it does not decode.
fn lenient_base64(data: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let chars: Vec<u8> = data
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .collect();
    if !chars.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let groups = chars.len() / 4;
    for (i, g) in chars.chunks_exact(4).enumerate() {
        let padding = match (g[2], g[3]) {
            (b'=', b'=') => 2,
            (b'=', _) => return None,
            (_, b'=') => 1,
            _ => 0,
        };
        if padding > 0 && i + 1 != groups {
            return None;
        }
        let mut n = 0u32;
        for &c in &g[..4 - padding] {
            n = n << 6 | sextet(c)?;
        }
        n <<= 6 * padding as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - padding]);
    }
    Some(out)
}

/// JSON object from an API client -> [`Details`]. Strings -> `String`; integers that fit i32 ->
/// `Int`, other integers that fit i64 -> `Long`; integers above `i64::MAX` and all other numbers
/// -> `Double` (u64 values above 2^53 lose precision); bool; null; arrays -> `List`; objects ->
/// `Map`. Errors only when nesting exceeds [`MAX_DEPTH`].
pub fn from_json(
    obj: &serde_json::Map<String, serde_json::Value>,
) -> Result<Details, DetailsError> {
    json_object(obj, 1)
}

fn json_object(
    obj: &serde_json::Map<String, serde_json::Value>,
    depth: usize,
) -> Result<Details, DetailsError> {
    if depth > MAX_DEPTH {
        return Err(DetailsError::TooDeep { limit: MAX_DEPTH });
    }
    obj.iter()
        .map(|(k, v)| Ok((k.clone(), json_value(k, v, depth)?)))
        .collect()
}

fn json_value(key: &str, v: &serde_json::Value, depth: usize) -> Result<DetailValue, DetailsError> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => DetailValue::Null,
        Value::Bool(b) => DetailValue::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i32::try_from(i).map_or(DetailValue::Long(i), DetailValue::Int)
            } else if let Some(f) = n.as_f64() {
                DetailValue::Double(f)
            } else {
                return Err(DetailsError::Json {
                    key: key.to_string(),
                    reason: format!("number {n} is not representable"),
                });
            }
        }
        Value::String(s) => DetailValue::String(s.clone()),
        Value::Array(items) => {
            if depth + 1 > MAX_DEPTH {
                return Err(DetailsError::TooDeep { limit: MAX_DEPTH });
            }
            DetailValue::List(
                items
                    .iter()
                    .map(|item| json_value(key, item, depth + 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        Value::Object(obj) => DetailValue::Map(json_object(obj, depth + 1)?),
    })
}

/// [`Details`] -> JSON object for the query API: top-level String values through
/// [`display_string`], as CESeCore's `Base64GetHashMap.get` shows them; strings inside lists and
/// nested maps as stored (CESeCore never decodes those, and the put rule never encodes them);
/// `Int`/`Long`/`Date` (millis) -> number; `Float`/`Double` -> number, or the string `"NaN"`,
/// `"Infinity"`, `"-Infinity"`; `Class` -> string; `Null` -> null; `List` -> array; `Map` ->
/// object (a repeated key keeps its first position and the last value).
pub fn to_json(details: &Details) -> serde_json::Map<String, serde_json::Value> {
    map_to_json(details, true)
}

fn map_to_json(details: &Details, top: bool) -> serde_json::Map<String, serde_json::Value> {
    details
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v, top)))
        .collect()
}

/// A top-level value as text, as [`to_json`] shows it: a string (through [`display_string`])
/// or a class name as it is, and any other value as its JSON (`null`, `true`, `17`, `[1,2]`;
/// a float that JSON cannot hold as the string `to_json` gives, e.g. `NaN`).
pub fn top_value_text(v: &DetailValue) -> Cow<'_, str> {
    match v {
        // The common case, without a copy when it is not `B64:`.
        DetailValue::String(s) => display_string(s),
        other => match value_to_json(other, true) {
            serde_json::Value::String(s) => Cow::Owned(s),
            json => Cow::Owned(json.to_string()),
        },
    }
}

/// `top`: a top-level value of the map, the only kind CESeCore decodes from `B64:`.
fn value_to_json(v: &DetailValue, top: bool) -> serde_json::Value {
    use serde_json::Value;
    let number = |f: f64| {
        serde_json::Number::from_f64(f).map_or_else(
            || Value::String(java_float::double_to_string(f)),
            Value::Number,
        )
    };
    match v {
        DetailValue::Null => Value::Null,
        DetailValue::String(s) if top => Value::String(display_string(s).into_owned()),
        DetailValue::String(s) => Value::String(s.clone()),
        DetailValue::Int(i) => Value::from(*i),
        DetailValue::Long(l) | DetailValue::Date(l) => Value::from(*l),
        DetailValue::Bool(b) => Value::Bool(*b),
        // Via the shortest decimal, so 0.1f shows as 0.1 rather than 0.10000000149011612.
        DetailValue::Float(f) => number(f.to_string().parse().unwrap_or(f64::from(*f))),
        DetailValue::Double(d) => number(*d),
        DetailValue::Class(c) => Value::String(c.clone()),
        DetailValue::List(items) => {
            Value::Array(items.iter().map(|v| value_to_json(v, false)).collect())
        }
        DetailValue::Map(entries) => Value::Object(map_to_json(entries, false)),
    }
}

#[cfg(test)]
mod tests;
