//! The decoder's scalar values: text of string-like elements (with `<char>` children, as
//! UTF-16 so that a split surrogate pair recombines), numbers and booleans as Java's XMLDecoder
//! reads them, and elements that may hold only whitespace.

use quick_xml::events::BytesStart;

use super::super::{DetailValue, DetailsError};
use super::super::{java_decode_integer, java_float_syntax};
use super::{Ev, Parser, element_name};

impl<'a> Parser<'a> {
    /// A `<int>`, `<byte>`, `<short>`, `<long>`, `<boolean>`, `<float>` or `<double>` element's
    /// value, checked as Java's XMLDecoder parses it.
    pub(super) fn number_or_boolean(
        &mut self,
        name: &str,
        empty: bool,
    ) -> Result<DetailValue, DetailsError> {
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
    pub(super) fn text(&mut self, empty: bool, context: &str) -> Result<String, DetailsError> {
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
    pub(super) fn no_content(&mut self, empty: bool, context: &str) -> Result<(), DetailsError> {
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
    pub(super) fn text_content(
        &mut self,
        empty: bool,
        context: &str,
    ) -> Result<Vec<u16>, DetailsError> {
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
    pub(super) fn char_unit(
        &mut self,
        code: Option<String>,
        empty: bool,
    ) -> Result<u16, DetailsError> {
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
}
