//! Names a client chooses and people read: `service`, `eventType`, `module` and the
//! additionalDetails keys. A name with an invisible character, or one that reads as a name
//! reserved to the server, is refused (the rule is stated in docs/API.md "Names").
//! Names are stored as sent and protected as sent, so they cannot be cleaned up here: refusing
//! them keeps what a person reads equal to what is stored.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters that render
/// as nothing. Most are also format characters (Cf); the rest (variation selectors, the
/// combining grapheme joiner, Hangul fillers, ...) are why the list is needed at all.
const DEFAULT_IGNORABLE: [(char, char); 17] = [
    ('\u{00AD}', '\u{00AD}'),
    ('\u{034F}', '\u{034F}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{206F}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF0}', '\u{FFF8}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0000}', '\u{E0FFF}'),
];

/// A character no name may hold: a control (Cc), a format character (Cf: zero-width
/// characters, bidi controls, soft hyphen, BOM, ...), a line or paragraph separator, or any
/// other default-ignorable code point.
pub fn is_invisible(c: char) -> bool {
    // ASCII (nearly every name): only its controls; no other category or ignorable is ASCII.
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    ) || DEFAULT_IGNORABLE
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&c))
}

/// `field: ...` naming the first invisible character of `name`, if it has one.
/// `field` is formatted only when there is one.
pub fn check_visible(field: &(impl std::fmt::Display + ?Sized), name: &str) -> Result<(), String> {
    match name.chars().find(|c| is_invisible(*c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{field} contains U+{:04X}, a control, format or invisible character; names \
             (service, eventType, module, additionalDetails keys) may not hold one",
            c as u32
        )),
    }
}

/// Cyrillic and Greek letters that look like a Latin letter, with that letter (lower case).
/// Letters of other scripts, and fullwidth or mathematical forms, reach Latin through NFKC.
const LOOKALIKES: &[(char, char)] = &[
    // Cyrillic
    ('А', 'a'),
    ('а', 'a'),
    ('В', 'b'),
    ('С', 'c'),
    ('с', 'c'),
    ('Ԁ', 'd'),
    ('ԁ', 'd'),
    ('Е', 'e'),
    ('е', 'e'),
    ('Н', 'h'),
    ('Һ', 'h'),
    ('һ', 'h'),
    ('І', 'i'),
    ('і', 'i'),
    ('Ӏ', 'i'),
    ('ӏ', 'i'),
    ('Ј', 'j'),
    ('ј', 'j'),
    ('К', 'k'),
    ('М', 'm'),
    ('О', 'o'),
    ('о', 'o'),
    ('Р', 'p'),
    ('р', 'p'),
    ('Ԛ', 'q'),
    ('ԛ', 'q'),
    ('Ѕ', 's'),
    ('ѕ', 's'),
    ('Т', 't'),
    ('Ԝ', 'w'),
    ('ԝ', 'w'),
    ('Х', 'x'),
    ('х', 'x'),
    ('У', 'y'),
    ('у', 'y'),
    ('Ү', 'y'),
    ('ү', 'y'),
    // Greek
    ('Α', 'a'),
    ('α', 'a'),
    ('Β', 'b'),
    ('Ϲ', 'c'),
    ('ϲ', 'c'),
    ('Ε', 'e'),
    ('Η', 'h'),
    ('Ι', 'i'),
    ('ι', 'i'),
    ('Ϳ', 'j'),
    ('ϳ', 'j'),
    ('Κ', 'k'),
    ('Μ', 'm'),
    ('Ν', 'n'),
    ('ν', 'v'),
    ('Ο', 'o'),
    ('ο', 'o'),
    ('Ρ', 'p'),
    ('ρ', 'p'),
    ('Τ', 't'),
    ('υ', 'u'),
    ('Υ', 'y'),
    ('Χ', 'x'),
    ('Ζ', 'z'),
];

/// What a name reads as, for comparing it with reserved names: NFKC, white space removed,
/// Cyrillic and Greek look-alikes replaced by their Latin letter, lower-cased, and `1`, `l`,
/// `|` taken as `i` (the same stroke in many fonts).
pub fn skeleton(name: &str) -> String {
    // ASCII is its own NFKC form and holds no look-alike: only the case and white space.
    if name.is_ascii() {
        return name
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| same_stroke(c.to_ascii_lowercase()))
            .collect();
    }
    unicode_skeleton(name)
}

/// `1`, `l` and `|` read as `i` (the same stroke in many fonts).
fn same_stroke(c: char) -> char {
    if matches!(c, '1' | 'l' | '|') { 'i' } else { c }
}

/// `skeleton` of any text: NFKC first, then the look-alikes.
fn unicode_skeleton(name: &str) -> String {
    name.nfkc()
        .filter(|c| !c.is_whitespace())
        .map(|c| {
            LOOKALIKES
                .iter()
                .find(|(from, _)| *from == c)
                .map_or(c, |(_, to)| *to)
        })
        .flat_map(char::to_lowercase)
        .map(same_stroke)
        .collect()
}

/// Whether `name` reads as `reserved` (compared by skeleton).
pub fn reads_as(name: &str, reserved: &str) -> bool {
    skeleton(name) == skeleton(reserved)
}

/// Whether `key` reads as `root` followed by nothing or by anything but an ASCII letter or
/// digit: for root `auditseal`, `auditseal.x`, `auditseal_x` and `auditseal·x` (a dot
/// look-alike) all do, `auditsealing` does not.
pub fn in_namespace(key: &str, root: &str) -> bool {
    let (k, ns) = (skeleton(key), skeleton(root));
    k.strip_prefix(&ns)
        .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_are_found() {
        for c in [
            '\u{0}',
            '\t',
            '\u{7F}',
            '\u{85}',
            '\u{AD}',
            '\u{34F}',
            '\u{180E}',
            '\u{200B}',
            '\u{200D}',
            '\u{200E}',
            '\u{202E}',
            '\u{2028}',
            '\u{2060}',
            '\u{2066}',
            '\u{2069}',
            '\u{3164}',
            '\u{FE0F}',
            '\u{FEFF}',
            '\u{E0041}',
            '\u{E0100}',
        ] {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
        }
        for c in ['A', ' ', 'å', 'А', '\u{A0}', '\u{301}', '中'] {
            assert!(!is_invisible(c), "U+{:04X}", c as u32);
        }
        assert!(check_visible("service", "AUDITSEAL\u{200B}").is_err());
        assert!(check_visible("service", "SIGNSERVER").is_ok());
    }

    #[test]
    fn the_ascii_skeleton_is_the_unicode_one() {
        let all: String = (0u8..128).map(char::from).collect();
        for name in [all.as_str(), " Audit\u{0B}Seal\t1|l ", "AUDITSEAL", ""] {
            assert_eq!(skeleton(name), unicode_skeleton(name), "{name:?}");
        }
        for c in (0u8..128).map(char::from) {
            let general = matches!(c.general_category(), GeneralCategory::Control);
            assert_eq!(is_invisible(c), general, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn look_alikes_read_as_the_reserved_name() {
        for name in [
            "AUDITSEAL",
            "auditseal",
            " Audit Seal ",
            "\u{410}UDITSEAL",         // Cyrillic А
            "AUD\u{399}TSE\u{391}L",   // Greek Ι and Α
            "AUDITSE\u{410}\u{4C0}",   // Cyrillic А and palochka
            "\u{FF21}\u{FF35}DITSEAL", // fullwidth ＡＵ
            "\u{1D400}UDITSEAL",       // mathematical bold A
            "AUDlTSEAL",               // lower-case L for I
            "AUD1TSEAL",               // digit one for I
            "AUDITSEA\u{217C}",        // small roman numeral fifty (NFKC: l)
        ] {
            assert!(
                reads_as(name, "AUDITSEAL"),
                "{name:?} -> {}",
                skeleton(name)
            );
        }
        for name in ["SIGNSERVER", "AUDITSEALS", "AUDITSEAM", "AUDIT-SEAL"] {
            assert!(!reads_as(name, "AUDITSEAL"), "{name:?}");
        }
    }

    #[test]
    fn the_reserved_key_namespace() {
        for key in [
            "auditseal.submitter",
            "AUDITSEAL.SUBMITTER",
            " Auditseal.submitter",
            "auditseal",
            "auditseal_submitter",
            "\u{430}uditseal.submitter",  // Cyrillic а
            "auditseal\u{FF0E}submitter", // fullwidth full stop
            "auditseal\u{B7}submitter",   // middle dot
            "auditseaI.submitter",        // capital I for l
        ] {
            assert!(in_namespace(key, "auditseal"), "{key:?}");
        }
        for key in ["auditsealing", "auditseal2", "my.auditseal.x", "KEYALIAS"] {
            assert!(!in_namespace(key, "auditseal"), "{key:?}");
        }
    }
}
