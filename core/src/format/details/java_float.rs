//! Java's `Double.toString` / `Float.toString`, byte for byte.
//!
//! XMLEncoder writes `<double>` and `<float>` with them. This is the JDK 19+ behaviour
//! (JDK-4511638): the shortest decimal that rounds back, closest to the exact value, with at
//! least two digits considered when one would do (`4.9E-324`, not `5.0E-324`). JDK 18 and older
//! print a few values with extra digits (`1.0E23` as `9.999999999999999E22`); we do not
//! reproduce that, which only matters for re-encoding such a value, and stored XML is never
//! re-encoded (it is read, and verified, as stored).

/// `Double.toString(x)` as the chosen JDK writes it.
pub(crate) fn double_to_string(x: f64) -> String {
    to_java_string(x)
}

/// `Float.toString(x)` as the chosen JDK writes it.
pub(crate) fn float_to_string(x: f32) -> String {
    to_java_string(x)
}

/// Either type: `F` widens to f64 exactly, so NaN, the infinities, the sign, zero and equality
/// are read there; the digits come from `F`'s own formatting (its shortest round-trip digits).
fn to_java_string<F>(x: F) -> String
where
    F: Copy + Into<f64> + std::fmt::LowerExp + std::str::FromStr,
{
    let wide: f64 = x.into();
    if let Some(s) = special(wide.is_nan(), wide.is_infinite(), wide.is_sign_negative()) {
        return s.to_string();
    }
    let negative = wide.is_sign_negative();
    if wide == 0.0 {
        return java_chars(negative, b"0", 0);
    }
    // Formatted with its sign, which `split_exp` drops; compared by magnitude.
    let (digits, dec_exponent) = shortest(
        &format!("{x:e}"),
        |precision| format!("{:.*e}", precision, x),
        |s| s.parse::<F>().ok().map(|v| Into::<f64>::into(v).abs()) == Some(wide.abs()),
    );
    java_chars(negative, &digits, dec_exponent)
}

fn special(nan: bool, infinite: bool, negative: bool) -> Option<&'static str> {
    match (nan, infinite, negative) {
        (true, _, _) => Some("NaN"),
        (false, true, false) => Some("Infinity"),
        (false, true, true) => Some("-Infinity"),
        _ => None,
    }
}

/// Splits Rust's `{:e}` output (`1.2345e-7`) into ASCII digits and Java's `decExponent`
/// (value = 0.d1d2d3... * 10^decExponent).
fn split_exp(s: &str) -> (Vec<u8>, i32) {
    let (mantissa, exp) = s.split_once('e').unwrap_or((s, "0"));
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    (digits, exp + 1)
}

/// JDK 19+ selection. Rust's `{:e}` gives the shortest round-trip digits, closest to the exact
/// value; two corrections make it Java's choice:
/// - when one digit would do, the closest two-digit decimal wins if it rounds back (`4.9E-324`);
/// - on an exact tie between two shortest candidates Java takes the even last digit, Rust the
///   upper one (`1628080.25f` is `1628080.2` in Java).
///
/// `exact(precision)` formats the value with `precision` digits after the point (`{:.*e}`).
fn shortest(
    shortest: &str,
    exact: impl Fn(usize) -> String,
    rounds_back: impl Fn(&str) -> bool,
) -> (Vec<u8>, i32) {
    let (mut digits, mut dec_exponent) = split_exp(shortest);
    if digits.len() == 1 {
        let two = exact(1);
        if rounds_back(&two) {
            (digits, dec_exponent) = split_exp(&two);
        }
    } else if digits.last().is_some_and(|d| d & 1 != 0) {
        let p = digits.len();
        let (next, next_exponent) = split_exp(&exact(p));
        if next.last() == Some(&b'5') {
            // 800 digits after the point print any f64/f32 exactly.
            let (mut full, _) = split_exp(&exact(800));
            while full.last() == Some(&b'0') {
                full.pop();
            }
            if full == next {
                // A tie: the candidates are the truncation and the truncation plus one unit.
                let mut alt = next[..p].to_vec();
                let mut alt_exponent = next_exponent;
                if alt == digits {
                    increment(&mut alt, &mut alt_exponent);
                }
                let text = format!(
                    "{}.{}e{}",
                    char::from(alt[0]),
                    String::from_utf8_lossy(&alt[1..]),
                    alt_exponent - 1
                );
                if alt != digits && rounds_back(&text) {
                    (digits, dec_exponent) = (alt, alt_exponent);
                }
            }
        }
    }
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    (digits, dec_exponent)
}

/// Adds one unit in the last place to a decimal digit string (`199` -> `200`; `999` -> `100`
/// with the exponent one higher).
fn increment(digits: &mut [u8], dec_exponent: &mut i32) {
    for d in digits.iter_mut().rev() {
        if *d == b'9' {
            *d = b'0';
        } else {
            *d += 1;
            return;
        }
    }
    if let Some(first) = digits.first_mut() {
        *first = b'1';
        *dec_exponent += 1;
    }
}

/// Java's layout of digits and exponent.
fn java_chars(negative: bool, digits: &[u8], dec_exponent: i32) -> String {
    let mut out = String::with_capacity(26);
    if negative {
        out.push('-');
    }
    let push = |out: &mut String, d: &[u8]| out.extend(d.iter().map(|&b| char::from(b)));
    let n = digits.len();
    if dec_exponent > 0 && dec_exponent < 8 {
        let exp = dec_exponent as usize;
        let int_len = n.min(exp);
        push(&mut out, &digits[..int_len]);
        if int_len < exp {
            out.extend(std::iter::repeat_n('0', exp - int_len));
            out.push_str(".0");
        } else {
            out.push('.');
            if int_len < n {
                push(&mut out, &digits[int_len..]);
            } else {
                out.push('0');
            }
        }
    } else if dec_exponent <= 0 && dec_exponent > -3 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-dec_exponent) as usize));
        push(&mut out, digits);
    } else {
        push(&mut out, &digits[..n.min(1)]);
        out.push('.');
        if n > 1 {
            push(&mut out, &digits[1..]);
        } else {
            out.push('0');
        }
        out.push('E');
        let e = if dec_exponent <= 0 {
            out.push('-');
            -dec_exponent + 1
        } else {
            dec_exponent - 1
        };
        out.push_str(&e.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (double bits, JDK 17 `Double.toString`, JDK 25 `Double.toString`), observed outputs.
    const DOUBLES: &[(u64, &str, &str)] = &[
        (0x44b52d02c7e14af6, "9.999999999999999E22", "1.0E23"),
        (0x44c52d02c7e14af6, "1.9999999999999998E23", "2.0E23"),
        (0x447c7e83209e90b2, "8.409999999999999E21", "8.41E21"),
        (
            0x438f67ea69ed3795,
            "2.82879384806159008E17",
            "2.82879384806159E17",
        ),
        (
            0x0000004000000000,
            "1.358077306218E-312",
            "1.35807730622E-312",
        ),
        (0x0000000000000014, "1.0E-322", "9.9E-323"),
        (0x0000000000000800, "1.0118E-320", "1.012E-320"),
        (
            0x4300aa000ae1528a,
            "5.863145983289132E14",
            "5.863145983289132E14",
        ),
        (0x0000000000000001, "4.9E-324", "4.9E-324"),
        (
            0x7fefffffffffffff,
            "1.7976931348623157E308",
            "1.7976931348623157E308",
        ),
        (
            0x0010000000000000,
            "2.2250738585072014E-308",
            "2.2250738585072014E-308",
        ),
        (0x3fb999999999999a, "0.1", "0.1"),
        (0x416312d000000000, "1.0E7", "1.0E7"),
        (0x416312cffff7ced9, "9999999.999", "9999999.999"),
        (0x3f50624dd2f1a9fc, "0.001", "0.001"),
        (0x3f506243162a38e4, "9.9999E-4", "9.9999E-4"),
        (0x419d6f3454000000, "1.23456789E8", "1.23456789E8"),
        (0x8000000000000000, "-0.0", "-0.0"),
        (0x0000000000000000, "0.0", "0.0"),
        (0x7ff8000000000000, "NaN", "NaN"),
        (0xfff0000000000000, "-Infinity", "-Infinity"),
    ];

    /// (float bits, JDK 17 `Float.toString`, JDK 25 `Float.toString`), observed outputs.
    const FLOATS: &[(u32, &str, &str)] = &[
        (0x5e7ebf2c, "4.58910975E18", "4.5891097E18"),
        (0xcd5132bc, "-2.19360192E8", "-2.193602E8"),
        (0x4c379f38, "4.8135392E7", "4.813539E7"),
        (0x4ceb79a3, "1.23456792E8", "1.2345679E8"),
        (0xc9c6bd82, "-1628080.2", "-1628080.2"),
        (0x48cc7d34, "418793.62", "418793.62"),
        (0x3dcccccd, "0.1", "0.1"),
        (0x00000001, "1.4E-45", "1.4E-45"),
        (0x7f800000, "Infinity", "Infinity"),
    ];

    #[test]
    fn doubles_match_observed_jdk_output() {
        for &(bits, jdk17, jdk25) in DOUBLES {
            let x = f64::from_bits(bits);
            let _ = jdk17; // JDK <= 18 output, kept to show where it differs
            assert_eq!(double_to_string(x), jdk25, "{bits:#x}");
        }
    }

    #[test]
    fn floats_match_observed_jdk_output() {
        for &(bits, jdk17, jdk25) in FLOATS {
            let x = f32::from_bits(bits);
            let _ = jdk17;
            assert_eq!(float_to_string(x), jdk25, "{bits:#x}");
        }
    }

    proptest! {
        #[test]
        fn output_parses_back(bits in any::<u64>(), fbits in any::<u32>()) {
            let x = f64::from_bits(bits);
            let f = f32::from_bits(fbits);
            {
                let text = double_to_string(x);
                let back: f64 = text.replace("Infinity", "inf").parse().unwrap_or(f64::NAN);
                prop_assert!(back.to_bits() == x.to_bits() || (x.is_nan() && back.is_nan()), "{} {}", x, text);
                let text = float_to_string(f);
                let back: f32 = text.replace("Infinity", "inf").parse().unwrap_or(f32::NAN);
                prop_assert!(back.to_bits() == f.to_bits() || (f.is_nan() && back.is_nan()), "{} {}", f, text);
            }
        }
    }
}
