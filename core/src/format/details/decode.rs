//! Reading the XML back (`decode`): what XMLDecoder accepts for such a map, nothing more.

use std::collections::HashMap;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use super::*;

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
        let qname = e.name();
        let name: &str = qname.as_ref();
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
        let value = match name {
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
                self.number_or_boolean(name, empty)?
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

    /// Text of a scalar element (Java: every scalar handler is a `StringElementHandler`): the
    /// character content as it is, or, once a `<char>` child comes, as `text_content` reads it.
    fn text(&mut self, empty: bool, context: &str) -> Result<String, DetailsError> {
        let mut text = String::new();
        if empty {
            return Ok(text);
        }
        loop {
            match self.next()? {
                Ev::Text(t) if text.is_empty() => text = t.into_owned(),
                Ev::Text(t) => text.push_str(&t),
                Ev::End => return Ok(text),
                Ev::Eof => return Err(self.malformed(format!("unclosed {context}"))),
                child @ (Ev::Start(_) | Ev::Empty(_)) => {
                    // UTF-16 from here on: the text so far is whole characters, and a
                    // surrogate pair may be split over two `<char>` children.
                    let mut units: Vec<u16> = text.encode_utf16().collect();
                    self.units_after(&mut units, Some(child), context)?;
                    return Ok(String::from_utf16_lossy(&units));
                }
            }
        }
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
        if !empty {
            self.units_after(&mut units, None, context)?;
        }
        Ok(units)
    }

    /// `text_content`'s reading through the end tag, appending to `units`; `first` is an event
    /// already read.
    fn units_after(
        &mut self,
        units: &mut Vec<u16>,
        mut first: Option<Ev<'a>>,
        context: &str,
    ) -> Result<(), DetailsError> {
        loop {
            let event = match first.take() {
                Some(event) => event,
                None => self.next()?,
            };
            match event {
                Ev::Text(t) => units.extend(t.encode_utf16()),
                Ev::End => return Ok(()),
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
        let qname = e.name();
        let name: &str = qname.as_ref();
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
