//! The syntax Java's XMLDecoder accepts for integer and floating-point values.

/// `Long.decode`: optional sign, then `0x`/`0X`/`#` hex, leading `0` octal, or decimal.
pub(super) fn java_decode_integer(s: &str) -> Option<i64> {
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
pub(super) fn java_float_syntax(s: &str) -> Option<String> {
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
