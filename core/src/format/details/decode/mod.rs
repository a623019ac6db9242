//! Reading the XML back (`decode`): what XMLDecoder accepts for such a map, nothing more.

use std::collections::HashMap;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use super::*;

mod scalars;

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
