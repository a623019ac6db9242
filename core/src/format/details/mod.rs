//! `additionalDetails`: the XML form written by Java's `java.beans.XMLEncoder` for an
//! insertion-ordered map (spec `cesecore-compat.md` section 5).
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

mod java_float;

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

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
    let mut w = XmlWriter {
        out: String::with_capacity(128 + details.len() * 96),
    };
    w.line(0, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    w.line(
        0,
        &format!(r#"<java version="{java_version}" class="java.beans.XMLDecoder">"#),
    );
    let base64 = class == MapClass::Base64PutHashMap;
    w.map(1, class.java_name(), details, base64);
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

    fn map(&mut self, indent: usize, class: &str, entries: &[(String, DetailValue)], base64: bool) {
        // Java map semantics: replay the puts, then write the resulting map.
        let mut order: Vec<(&str, Cow<'_, DetailValue>)> = Vec::with_capacity(entries.len());
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
        if order.is_empty() {
            self.line(indent, &format!(r#"<object class="{class}"/>"#));
            return;
        }
        self.line(indent, &format!(r#"<object class="{class}">"#));
        for (key, value) in &order {
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
            DetailValue::Map(entries) => self.map(indent, LINKED_HASH_MAP, entries, false),
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

/// Decodes anything XMLEncoder writes for a details map: any `java version`, any of the map
/// classes Base64PutHashMap, LinkedHashMap, HashMap, TreeMap, Hashtable (nested too), lists
/// ArrayList/LinkedList/Vector, numeric character references, `<char code="..."/>` inside strings
/// (code as `Integer.decode` reads it: `#1f`, `0x1f`, `31`), `<string/>`, `id`/`idref` sharing,
/// comments. Values are returned as stored (`B64:` values are not decoded; see
/// [`display_string`]). A repeated key keeps its first position and takes the last value, as the
/// Java map would.
///
/// Java values without an exact [`DetailValue`] are widened: `<byte>`/`<short>` become `Int`, a
/// `<char>` value becomes a one-character `String`, `<true/>`/`<false/>` become `Bool`. A lone
/// UTF-16 surrogate (`<char code="#d800"/>`, only possible from a broken Java string) becomes
/// U+FFFD.
///
/// Rejects malformed XML, unknown elements or object classes, non-String map keys, and a
/// document whose single value is not a map.
pub fn decode(xml: &str) -> Result<Details, DetailsError> {
    let mut p = Parser {
        reader: Reader::from_str(xml.strip_prefix('\u{feff}').unwrap_or(xml)),
        ids: HashMap::new(),
        values: 0,
    };
    p.document()
}

/// A simplified event: character data arrives already unescaped and EOL-normalized.
enum Ev<'a> {
    Start(BytesStart<'a>),
    Empty(BytesStart<'a>),
    End,
    Text(Cow<'a, str>),
    Eof,
}

struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    /// Values of elements carrying `id="..."`, for later `idref`.
    ids: HashMap<String, DetailValue>,
    /// Values produced so far (see [`MAX_VALUES`]).
    values: usize,
}

fn element_name(e: &BytesStart<'_>) -> String {
    e.name().as_ref().to_string()
}

/// Java's `ElementHandler.addCharacter`: structural elements may only hold XML whitespace.
fn is_blank(s: &str) -> bool {
    s.chars().all(|c| matches!(c, ' ' | '\n' | '\t' | '\r'))
}

impl<'a> Parser<'a> {
    fn position(&self) -> u64 {
        self.reader.buffer_position()
    }

    fn malformed(&self, reason: impl Into<String>) -> DetailsError {
        DetailsError::Malformed {
            position: self.position(),
            reason: reason.into(),
        }
    }

    fn unsupported(&self, element: impl Into<String>) -> DetailsError {
        DetailsError::Unsupported {
            position: self.position(),
            element: element.into(),
        }
    }

    fn next(&mut self) -> Result<Ev<'a>, DetailsError> {
        loop {
            let event = self
                .reader
                .read_event()
                .map_err(|e| DetailsError::Malformed {
                    position: self.reader.error_position(),
                    reason: e.to_string(),
                })?;
            return Ok(match event {
                Event::Start(e) => Ev::Start(e),
                Event::Empty(e) => Ev::Empty(e),
                Event::End(_) => Ev::End,
                Event::Text(t) => Ev::Text(t.xml10_content()),
                Event::CData(t) => Ev::Text(Cow::Owned(t.xml10_content().into_owned())),
                Event::GeneralRef(r) => {
                    let c = match r.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        Ok(None) => match r.as_ref() {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "quot" => '"',
                            "apos" => '\'',
                            other => {
                                return Err(self.malformed(format!("unknown entity &{other};")));
                            }
                        },
                        Err(e) => return Err(self.malformed(e.to_string())),
                    };
                    Ev::Text(Cow::Owned(c.to_string()))
                }
                Event::DocType(_) => return Err(self.unsupported("a DOCTYPE declaration")),
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
                Event::Eof => Ev::Eof,
            });
        }
    }

    /// Next event that is not blank text; other text is an error (`context` names the parent).
    fn next_structural(&mut self, context: &str) -> Result<Ev<'a>, DetailsError> {
        loop {
            match self.next()? {
                Ev::Text(t) if is_blank(&t) => continue,
                Ev::Text(t) => {
                    return Err(self.malformed(format!("unexpected text {:?} in {context}", t)));
                }
                ev => return Ok(ev),
            }
        }
    }

    fn document(&mut self) -> Result<Details, DetailsError> {
        match self.next_structural("the document")? {
            // <java version=".." class=".."> attributes carry nothing the map needs.
            Ev::Start(e) if e.name().as_ref() == "java" => {}
            Ev::Start(e) | Ev::Empty(e) => {
                let name = element_name(&e);
                return Err(self.malformed(format!("root element is <{name}>, expected <java>")));
            }
            Ev::End | Ev::Text(_) | Ev::Eof => return Err(self.malformed("no root element")),
        }
        let value = match self.next_structural("<java>")? {
            Ev::Start(e) => self.value(e, false, 1)?,
            Ev::Empty(e) => self.value(e, true, 1)?,
            Ev::End | Ev::Text(_) | Ev::Eof => {
                return Err(DetailsError::NotAMap {
                    found: "nothing".into(),
                });
            }
        };
        let details = match value {
            DetailValue::Map(m) => m,
            other => {
                return Err(DetailsError::NotAMap {
                    found: kind_name(&other).into(),
                });
            }
        };
        match self.next_structural("<java>")? {
            Ev::End => {}
            Ev::Start(_) | Ev::Empty(_) => {
                return Err(self.malformed("more than one value under <java>"));
            }
            Ev::Text(_) | Ev::Eof => return Err(self.malformed("missing </java>")),
        }
        match self.next_structural("the document")? {
            Ev::Eof => Ok(details),
            _ => Err(self.malformed("content after </java>")),
        }
    }

    fn count(&mut self, n: usize) -> Result<(), DetailsError> {
        self.values = self.values.saturating_add(n);
        if self.values > MAX_VALUES {
            return Err(DetailsError::TooLarge { limit: MAX_VALUES });
        }
        Ok(())
    }

    /// Attributes as (name, value); unknown names are checked by the caller.
    fn attributes(&self, e: &BytesStart<'_>) -> Result<Vec<(String, String)>, DetailsError> {
        let mut out = Vec::new();
        for attr in e.attributes() {
            let attr = attr.map_err(|err| self.malformed(err.to_string()))?;
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| self.malformed(err.to_string()))?;
            out.push((attr.key.as_ref().to_string(), value.into_owned()));
        }
        Ok(out)
    }

    /// One value element (already read as Start/Empty `e`); consumes through its end tag.
    fn value(
        &mut self,
        e: BytesStart<'a>,
        empty: bool,
        depth: usize,
    ) -> Result<DetailValue, DetailsError> {
        self.count(1)?;
        let name = element_name(&e);
        let attrs = self.attributes(&e)?;
        let mut id = None;
        let mut class = None;
        let mut idref = None;
        let mut code = None;
        for (key, value) in attrs {
            match key.as_str() {
                "id" => id = Some(value),
                "class" if name == "object" => class = Some(value),
                "idref" if name == "object" => idref = Some(value),
                "code" if name == "char" => code = Some(value),
                _ => {
                    return Err(
                        self.unsupported(format!("attribute {key}=\"{value}\" on <{name}>"))
                    );
                }
            }
        }
        let value = match name.as_str() {
            "null" => {
                self.no_content(empty, "<null>")?;
                DetailValue::Null
            }
            "true" | "false" => {
                self.no_content(empty, &format!("<{name}>"))?;
                DetailValue::Bool(name == "true")
            }
            "string" => DetailValue::String(self.text(empty, "<string>")?),
            "char" => {
                DetailValue::String(String::from_utf16_lossy(&[self.char_unit(code, empty)?]))
            }
            "int" | "byte" | "short" | "long" | "boolean" | "float" | "double" => {
                self.number_or_boolean(&name, empty)?
            }
            "class" => {
                let text = self.text(empty, "<class>")?;
                if text.is_empty() {
                    return Err(self.malformed("empty <class>"));
                }
                DetailValue::Class(text)
            }
            "object" => self.object(class, idref, empty, depth)?,
            other => return Err(self.unsupported(format!("element <{other}>"))),
        };
        if let Some(id) = id {
            self.ids.insert(id, value.clone());
        }
        Ok(value)
    }

    /// A `<int>`, `<byte>`, `<short>`, `<long>`, `<boolean>`, `<float>` or `<double>` element's
    /// value, checked as Java's XMLDecoder parses it.
    fn number_or_boolean(&mut self, name: &str, empty: bool) -> Result<DetailValue, DetailsError> {
        Ok(match name {
            "int" | "byte" | "short" => {
                let text = self.text(empty, &format!("<{name}>"))?;
                let (min, max) = match name {
                    "byte" => (i64::from(i8::MIN), i64::from(i8::MAX)),
                    "short" => (i64::from(i16::MIN), i64::from(i16::MAX)),
                    _ => (i64::from(i32::MIN), i64::from(i32::MAX)),
                };
                match java_decode_integer(&text).filter(|v| (min..=max).contains(v)) {
                    Some(v) => DetailValue::Int(v as i32),
                    None => return Err(self.malformed(format!("bad <{name}> value {text:?}"))),
                }
            }
            "long" => {
                let text = self.text(empty, "<long>")?;
                match java_decode_integer(&text) {
                    Some(v) => DetailValue::Long(v),
                    None => return Err(self.malformed(format!("bad <long> value {text:?}"))),
                }
            }
            "boolean" => {
                let text = self.text(empty, "<boolean>")?;
                if text.eq_ignore_ascii_case("true") {
                    DetailValue::Bool(true)
                } else if text.eq_ignore_ascii_case("false") {
                    DetailValue::Bool(false)
                } else {
                    return Err(self.malformed(format!("bad <boolean> value {text:?}")));
                }
            }
            "float" => {
                let text = self.text(empty, "<float>")?;
                match java_float_syntax(&text).and_then(|s| s.parse::<f32>().ok()) {
                    Some(v) => DetailValue::Float(v),
                    None => return Err(self.malformed(format!("bad <float> value {text:?}"))),
                }
            }
            "double" => {
                let text = self.text(empty, "<double>")?;
                match java_float_syntax(&text).and_then(|s| s.parse::<f64>().ok()) {
                    Some(v) => DetailValue::Double(v),
                    None => return Err(self.malformed(format!("bad <double> value {text:?}"))),
                }
            }
            other => return Err(self.unsupported(format!("element <{other}>"))),
        })
    }

    /// Text of a scalar element (Java: every scalar handler is a `StringElementHandler`).
    fn text(&mut self, empty: bool, context: &str) -> Result<String, DetailsError> {
        Ok(String::from_utf16_lossy(
            &self.text_content(empty, context)?,
        ))
    }

    /// Consumes an element that may hold only whitespace.
    fn no_content(&mut self, empty: bool, context: &str) -> Result<(), DetailsError> {
        if empty {
            return Ok(());
        }
        match self.next_structural(context)? {
            Ev::End => Ok(()),
            Ev::Start(e) | Ev::Empty(e) => {
                let name = element_name(&e);
                Err(self.malformed(format!("unexpected <{name}> in {context}")))
            }
            Ev::Text(_) | Ev::Eof => Err(self.malformed(format!("unclosed {context}"))),
        }
    }

    /// Character content of a string-like element as UTF-16, with `<char>` children expanded
    /// (Java's `StringElementHandler`). UTF-16 so that a surrogate pair split over two `<char>`
    /// elements recombines. Inside `<char>` itself no child element is accepted.
    fn text_content(&mut self, empty: bool, context: &str) -> Result<Vec<u16>, DetailsError> {
        let mut units: Vec<u16> = Vec::new();
        if empty {
            return Ok(units);
        }
        loop {
            match self.next()? {
                Ev::Text(t) => units.extend(t.encode_utf16()),
                Ev::End => return Ok(units),
                Ev::Start(e) | Ev::Empty(e)
                    if e.name().as_ref() != "char" || context == "<char>" =>
                {
                    let name = element_name(&e);
                    return Err(self.unsupported(format!("element <{name}> inside {context}")));
                }
                Ev::Start(e) => {
                    let code = self.char_code(&e)?;
                    units.push(self.char_unit(code, false)?);
                }
                Ev::Empty(e) => {
                    let code = self.char_code(&e)?;
                    units.push(self.char_unit(code, true)?);
                }
                Ev::Eof => return Err(self.malformed(format!("unclosed {context}"))),
            }
        }
    }

    /// A `<char>` element's value (`code` attribute and/or body): exactly one UTF-16 unit, as
    /// Java's `CharElementHandler` requires.
    fn char_unit(&mut self, code: Option<String>, empty: bool) -> Result<u16, DetailsError> {
        let mut units = Vec::new();
        if let Some(code) = &code {
            self.push_code(&mut units, code)?;
        }
        units.extend(self.text_content(empty, "<char>")?);
        match units.as_slice() {
            [unit] => Ok(*unit),
            _ => Err(self.malformed(format!(
                "<char> must hold one UTF-16 unit, got {:?}",
                String::from_utf16_lossy(&units)
            ))),
        }
    }

    fn char_code(&self, e: &BytesStart<'_>) -> Result<Option<String>, DetailsError> {
        let mut code = None;
        for (key, value) in self.attributes(e)? {
            match key.as_str() {
                "code" => code = Some(value),
                "id" => {}
                _ => return Err(self.unsupported(format!("attribute {key}=\"{value}\" on <char>"))),
            }
        }
        Ok(code)
    }

    /// `Character.toChars(Integer.decode(code))`.
    fn push_code(&self, units: &mut Vec<u16>, code: &str) -> Result<(), DetailsError> {
        let cp = java_decode_integer(code)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v <= 0x10FFFF)
            .ok_or_else(|| self.malformed(format!("bad <char> code {code:?}")))?;
        if cp <= 0xFFFF {
            units.push(cp as u16);
        } else {
            let v = cp - 0x10000;
            units.push(0xD800 | (v >> 10) as u16);
            units.push(0xDC00 | (v & 0x3FF) as u16);
        }
        Ok(())
    }

    fn object(
        &mut self,
        class: Option<String>,
        idref: Option<String>,
        empty: bool,
        depth: usize,
    ) -> Result<DetailValue, DetailsError> {
        if let Some(idref) = idref {
            if class.is_some() {
                return Err(self.malformed("<object> with both class and idref"));
            }
            self.no_content(empty, "<object idref>")?;
            let value = match self.ids.get(&idref) {
                Some(v) => v.clone(),
                None => {
                    return Err(self.malformed(format!("idref {idref:?} names no earlier object")));
                }
            };
            self.count(value_count(&value))?;
            return Ok(value);
        }
        let Some(class) = class else {
            return Err(self.malformed("<object> without class"));
        };
        let is_map = MAP_CLASSES.contains(&class.as_str());
        if is_map || LIST_CLASSES.contains(&class.as_str()) {
            return self.collection(&class, is_map, empty, depth);
        }
        if class == DATE {
            return self.date(empty, depth);
        }
        Err(self.unsupported(format!("<object class=\"{class}\">")))
    }

    /// A map or list `<object>`: its `put`/`add` calls (a repeated map key keeps its first
    /// place and its last value).
    fn collection(
        &mut self,
        class: &str,
        is_map: bool,
        empty: bool,
        depth: usize,
    ) -> Result<DetailValue, DetailsError> {
        if depth > MAX_DEPTH {
            return Err(DetailsError::TooDeep { limit: MAX_DEPTH });
        }
        let (method, arity) = if is_map { ("put", 2) } else { ("add", 1) };
        let mut entries: Vec<(String, DetailValue)> = Vec::new();
        // Key -> position in `entries`, so repeated keys collapse in O(1) each.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut items: Vec<DetailValue> = Vec::new();
        if !empty {
            let context = format!("<object class=\"{class}\">");
            while let Some(mut args) = self.call(&context, method, arity, depth)? {
                if is_map {
                    let value = args.pop().unwrap_or(DetailValue::Null);
                    let key = match args.pop() {
                        Some(DetailValue::String(k)) => k,
                        other => {
                            let kind = other.as_ref().map_or("nothing", kind_name);
                            return Err(self.unsupported(format!("a map key that is {kind}")));
                        }
                    };
                    match index.get(&key) {
                        Some(&i) => entries[i].1 = value,
                        None => {
                            index.insert(key.clone(), entries.len());
                            entries.push((key, value));
                        }
                    }
                } else {
                    items.extend(args);
                }
            }
        }
        Ok(if is_map {
            DetailValue::Map(entries)
        } else {
            DetailValue::List(items)
        })
    }

    /// A `java.util.Date` `<object>`: its one argument, the epoch milliseconds.
    fn date(&mut self, empty: bool, depth: usize) -> Result<DetailValue, DetailsError> {
        if empty {
            // `new Date()` is "now": not reproducible, never written for a stored value.
            return Err(self.unsupported("<object class=\"java.util.Date\"/> without millis"));
        }
        let millis = match self.next_structural("<object class=\"java.util.Date\">")? {
            Ev::Start(e) => self.value(e, false, depth + 1)?,
            Ev::Empty(e) => self.value(e, true, depth + 1)?,
            _ => return Err(self.malformed("java.util.Date without millis")),
        };
        let millis = match millis {
            DetailValue::Long(v) => v,
            DetailValue::Int(v) => i64::from(v),
            other => {
                let kind = kind_name(&other);
                return Err(self.malformed(format!("java.util.Date argument is {kind}")));
            }
        };
        match self.next_structural("<object class=\"java.util.Date\">")? {
            Ev::End => Ok(DetailValue::Date(millis)),
            Ev::Start(e) | Ev::Empty(e) => {
                let name = element_name(&e);
                Err(self.unsupported(format!("<{name}> inside java.util.Date")))
            }
            Ev::Text(_) | Ev::Eof => Err(self.malformed("unclosed java.util.Date")),
        }
    }

    /// Reads the next `<void method="{method}">` child holding `arity` values, or `None` at the
    /// parent's end tag.
    fn call(
        &mut self,
        context: &str,
        method: &str,
        arity: usize,
        depth: usize,
    ) -> Result<Option<Vec<DetailValue>>, DetailsError> {
        let (e, empty) = match self.next_structural(context)? {
            Ev::End => return Ok(None),
            Ev::Start(e) => (e, false),
            Ev::Empty(e) => (e, true),
            Ev::Text(_) | Ev::Eof => return Err(self.malformed(format!("unclosed {context}"))),
        };
        let name = element_name(&e);
        if name != "void" {
            return Err(self.unsupported(format!("<{name}> inside {context}")));
        }
        let attrs = self.attributes(&e)?;
        if attrs.len() != 1 || attrs[0].0 != "method" || attrs[0].1 != method {
            let shown: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            return Err(self.unsupported(format!("<void {}> inside {context}", shown.join(" "))));
        }
        let mut args = Vec::with_capacity(arity);
        if !empty {
            loop {
                match self.next_structural("<void>")? {
                    Ev::End => break,
                    Ev::Start(e) => args.push(self.value(e, false, depth + 1)?),
                    Ev::Empty(e) => args.push(self.value(e, true, depth + 1)?),
                    Ev::Text(_) | Ev::Eof => return Err(self.malformed("unclosed <void>")),
                }
            }
        }
        if args.len() != arity {
            return Err(self.malformed(format!(
                "<void method=\"{method}\"> needs {arity} argument(s), has {}",
                args.len()
            )));
        }
        Ok(Some(args))
    }
}

fn kind_name(v: &DetailValue) -> &'static str {
    match v {
        DetailValue::Null => "null",
        DetailValue::String(_) => "a string",
        DetailValue::Int(_) => "an int",
        DetailValue::Long(_) => "a long",
        DetailValue::Bool(_) => "a boolean",
        DetailValue::Float(_) => "a float",
        DetailValue::Double(_) => "a double",
        DetailValue::Date(_) => "a date",
        DetailValue::Class(_) => "a class",
        DetailValue::List(_) => "a list",
        DetailValue::Map(_) => "a map",
    }
}

/// Number of values in `v`, itself included.
fn value_count(v: &DetailValue) -> usize {
    match v {
        DetailValue::List(items) => 1 + items.iter().map(value_count).sum::<usize>(),
        DetailValue::Map(entries) => {
            1 + entries
                .iter()
                .map(|(_, v)| 1 + value_count(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// `Long.decode`: optional sign, then `0x`/`0X`/`#` hex, leading `0` octal, or decimal.
fn java_decode_integer(s: &str) -> Option<i64> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) =
        if let Some(h) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
            (16, h)
        } else if let Some(h) = rest.strip_prefix('#') {
            (16, h)
        } else if rest.len() > 1 && rest.starts_with('0') {
            (8, &rest[1..])
        } else {
            (10, rest)
        };
    // from_str_radix would accept a second sign ("0x-5"); Java does not.
    if digits.is_empty() || digits.starts_with(['-', '+']) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// Checks `Double.valueOf` decimal syntax and returns a string Rust parses to the same value:
/// surrounding whitespace (chars <= U+0020) trimmed, `NaN`/`Infinity` spelled as Java does, one
/// optional `f/F/d/D` suffix. Hexadecimal floats (never written by XMLEncoder) are refused.
fn java_float_syntax(s: &str) -> Option<String> {
    let s = s.trim_matches(|c: char| c <= ' ');
    let (sign, body) = match s.as_bytes().first() {
        Some(b'-') => ("-", &s[1..]),
        Some(b'+') => ("", &s[1..]),
        _ => ("", s),
    };
    match body {
        "NaN" => return Some("NaN".into()),
        "Infinity" => return Some(format!("{sign}inf")),
        _ => {}
    }
    let body = body.strip_suffix(['f', 'F', 'd', 'D']).unwrap_or(body);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !all_digits(int_part)
        || !all_digits(frac_part)
    {
        return None;
    }
    if let Some(exp) = exponent {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        if exp.is_empty() || !all_digits(exp) {
            return None;
        }
    }
    Some(format!("{sign}{body}"))
}

// ------------------------------------------------------------------------------------------------
// Display and JSON

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
