//! The java.util.Properties syntax, as SignServer and CESeCore read their `.properties` files:
//! logical lines (backslash continuations), `key = value` / `key: value` / `key value`,
//! comments, and escapes (`\\uXXXX` included). Nothing here knows what the keys mean.

/// ISO-8859-1, as java.util.Properties reads a `.properties` file, so that every value (a node
/// id above all) is what SignServer sees. Also says whether the bytes look like UTF-8 with
/// characters beyond ASCII: then SignServer read them differently from what their writer meant.
pub(super) fn decode_text(bytes: &[u8]) -> (String, bool) {
    let looks_utf8 = !bytes.is_ascii() && std::str::from_utf8(bytes).is_ok();
    (bytes.iter().map(|b| char::from(*b)).collect(), looks_utf8)
}

/// One `key = value`, unescaped, with the line where its logical line started (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Prop {
    pub(super) key: String,
    pub(super) value: String,
    pub(super) line: usize,
}

/// A syntax problem: the line, the key as far as known, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyntaxError {
    pub(super) line: usize,
    pub(super) key: String,
    pub(super) reason: String,
}

/// The whitespace of java.util.Properties: space, tab, form feed (not newlines).
pub(super) fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

/// Splits on `\n`, `\r\n` and a lone `\r`, as Java does.
pub(super) fn natural_lines(text: &str) -> Vec<&str> {
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

pub(super) fn trailing_backslashes(s: &str) -> usize {
    s.chars().rev().take_while(|c| *c == '\\').count()
}

/// Parses .properties text by the java.util.Properties rules: logical lines (an odd number of
/// trailing backslashes continues on the next line, whose leading whitespace is dropped),
/// `#`/`!` comments, key ending at the first unescaped `=`, `:` or whitespace, escapes. Entries
/// come in file order, duplicates included.
pub(super) fn parse_properties(text: &str) -> (Vec<Prop>, Vec<SyntaxError>) {
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
pub(super) fn split_key_value(line: &str) -> (&str, &str) {
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
pub(super) fn unescape(raw: &str) -> Result<String, String> {
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
